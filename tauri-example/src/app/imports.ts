// Large imports as one line each. With `events.configure {batchSubmitted: true}` a
// `task.submitBatch` of 10,000 tasks arrives as one `task.batchSubmitted {ids, count}` instead
// of 10,000 task records: this page does not parse or hold them, it counts them. An import
// submitted as several batches (`submitInBatches`) is one line whose total grows with each
// batch, and whose done/failed counts grow as its tasks finish. The tasks of a large batch are
// not rows of the task table (the running ones are: `scheduler.status` lists them), and the
// store does not fetch them one by one when their events arrive; a small batch (up to
// SHOW_TASKS_UP_TO) is fetched and shown task by task as well.
import type { TaskmillClient, TaskSpec } from '@taskmill/client';

/** The largest `task.submitBatch` (PROTOCOL: at most 10,000 entries). */
export const BATCH_LIMIT = 10_000;
/** A batch up to this size is also shown task by task (the store fetches its tasks). */
export const SHOW_TASKS_UP_TO = 50;
/** Finished import lines kept on screen (the newest). */
const KEEP_LINES = 5;

export interface ImportLine {
  readonly key: number;
  label: string;
  /** Tasks announced so far (grows batch by batch). */
  total: number;
  done: number;
  failed: number;
  /** Still submitting more batches. */
  submitting: boolean;
}

export class Imports {
  readonly lines: ImportLine[] = [];
  /** The line each announced, unfinished task counts toward. */
  private readonly owner = new Map<number, ImportLine>();
  private nextKey = 1;

  /** A `task.batchSubmitted` nobody here claimed yet (another window's batch, or one whose
   * event came before its answer): a line of its own until an import claims its ids. */
  announced(ids: readonly number[]): void {
    if (ids.length === 0 || ids.every((id) => this.owner.has(id))) return;
    const line = this.open(`${ids.length.toLocaleString('en-US')} tasks submitted`, false);
    for (const id of ids) this.take(id, line);
  }

  /** The tasks of an answered batch belong to `line` (moved from an anonymous line). */
  claim(line: ImportLine, ids: readonly number[]): void {
    for (const id of ids) this.take(id, line);
    this.trim();
  }

  /** Counts a final task; true if it belongs to an import (then it is no row of its own). */
  finished(id: number, ok: boolean): boolean {
    const line = this.owner.get(id);
    if (!line) return false;
    this.owner.delete(id);
    if (ok) line.done++;
    else line.failed++;
    this.trim();
    return true;
  }

  /** True for a task an import line counts (the store need not fetch it). */
  owns(id: number): boolean {
    return this.owner.has(id);
  }

  open(label: string, submitting: boolean): ImportLine {
    const line: ImportLine = { key: this.nextKey++, label, total: 0, done: 0, failed: 0, submitting };
    this.lines.unshift(line);
    return line;
  }

  private take(id: number, line: ImportLine): void {
    const before = this.owner.get(id);
    if (before === line) return;
    if (before) before.total--;
    this.owner.set(id, line);
    line.total++;
    if (before && before.total <= 0) this.lines.splice(this.lines.indexOf(before), 1);
  }

  /** Drops the oldest finished lines beyond KEEP_LINES (nothing grows without bound). */
  private trim(): void {
    let finished = 0;
    for (let i = 0; i < this.lines.length; i++) {
      const l = this.lines[i]!;
      if (l.submitting || l.done + l.failed < l.total) continue;
      if (++finished > KEEP_LINES) this.lines.splice(i--, 1);
    }
  }
}

/**
 * Submits `tasks` as batches of at most BATCH_LIMIT, one after the other, as one import line
 * (`onChange` after each batch). Needs `events.configure {batchSubmitted: true}` in force for
 * the one-line view; without it every task still arrives as its own `task.submitted`.
 */
export async function submitInBatches(
  client: TaskmillClient, imports: Imports, label: string, tasks: TaskSpec[], onChange: () => void,
): Promise<ImportLine> {
  const line = imports.open(label, true);
  try {
    for (let at = 0; at < tasks.length; at += BATCH_LIMIT) {
      const r = await client.invoke('task.submitBatch', { tasks: tasks.slice(at, at + BATCH_LIMIT) });
      // Only inserted and superseding entries are new tasks (those task.batchSubmitted names).
      imports.claim(line, r.results.filter((x) => x.outcome === 'inserted' || x.outcome === 'superseded').map((x) => x.id));
      onChange();
    }
  } finally {
    line.submitting = false;
    onChange();
  }
  return line;
}
