// Families: a parent and its children shown as one row. A fan-out (a scan and its hashes, a
// multipart upload and its parts) can be hundreds of tasks; the table shows the parent once,
// with one progress bar combining its own run and every descendant's, and a line counting the
// children by how they ended. Pure functions of the store's tasks, tested without a DOM.
import type { TaskInfo } from '@taskmill/client';
import { isActive } from './format.js';

export interface Family {
  /** The parent's id: the row that stands for the family. */
  id: number;
  /** Descendants of the parent known to the store (children, grandchildren...). */
  members: number;
  /** Descendants that are final, and of those the ones that did not complete. */
  finished: number;
  failed: number;
  /** Combined progress 0..1: the parent's own run and each descendant count as one part. */
  fraction: number;
}

export interface Collapsed {
  /** Ids of tasks shown inside an ancestor's row instead of their own. */
  hidden: Set<number>;
  /** The families, by the id of the parent that stands for them. */
  families: Map<number, Family>;
}

const NOT_COMPLETED = new Set(['failed', 'deadLetter', 'cancelled', 'superseded', 'expired']);

/** How far one task is, 0..1: final = 1; a parent past its own run (waiting, or pending for
 * its finalize phase) = 1 for its own part; otherwise its reported progress. */
export function ownFraction(t: TaskInfo): number {
  if (!isActive(t.state) || t.state === 'waiting' || t.phase === 'finalize') return 1;
  return Math.max(0, Math.min(1, t.progress?.fraction ?? 0));
}

/** Groups every task whose parent the store knows under its topmost known ancestor. */
export function collapseFamilies(tasks: Iterable<TaskInfo>): Collapsed {
  const byId = new Map<number, TaskInfo>();
  for (const t of tasks) byId.set(t.id, t);
  const rootOf = (t: TaskInfo): number => {
    let cur = t;
    for (let depth = 0; depth < 64 && cur.parentId != null; depth++) {
      const up = byId.get(cur.parentId);
      if (!up) break;
      cur = up;
    }
    return cur.id;
  };
  const hidden = new Set<number>();
  const sums = new Map<number, { members: number; finished: number; failed: number; done: number }>();
  for (const t of byId.values()) {
    if (t.parentId == null || !byId.has(t.parentId)) continue;
    const root = rootOf(t);
    hidden.add(t.id);
    const s = sums.get(root) ?? { members: 0, finished: 0, failed: 0, done: 0 };
    s.members += 1;
    if (!isActive(t.state)) s.finished += 1;
    if (NOT_COMPLETED.has(t.state)) s.failed += 1;
    s.done += ownFraction(t);
    sums.set(root, s);
  }
  const families = new Map<number, Family>();
  for (const [id, s] of sums) {
    const parent = byId.get(id)!;
    const fraction = parent.state === 'completed' ? 1 : (ownFraction(parent) + s.done) / (s.members + 1);
    families.set(id, { id, members: s.members, finished: s.finished, failed: s.failed, fraction });
  }
  return { hidden, families };
}

/** The family's line under the progress bar, e.g. "3 of 8 parts done · 1 failed". */
export function familyText(f: Family, parent: TaskInfo): string {
  const parts = `${f.finished} of ${f.members} part${f.members === 1 ? '' : 's'} done`;
  const failed = f.failed ? ` · ${f.failed} did not complete` : '';
  const phase = parent.phase === 'finalize' && isActive(parent.state) ? ' · finalizing' : '';
  return `${parts}${failed}${phase}`;
}
