// The app's model of the scheduler: tasks kept current from the sidecar's events (with
// `task.get` for ids first seen in an event), and `scheduler.status` (counts, pauses, IO)
// refreshed after lifecycle events and once a second.
import type { IoStatus, SchedulerStatus, TaskInfo, TaskmillClient } from '@taskmill/client';
import { isActive } from './format.js';
import { Imports, SHOW_TASKS_UP_TO } from './imports.js';

export type SidecarState =
  | { kind: 'starting' }
  | { kind: 'ready'; version: string; pid: number; restarts: number }
  | { kind: 'down'; why: string; willRestart: boolean };

export interface ActivityEntry {
  at: number;
  text: string;
  tone: 'info' | 'ok' | 'warn' | 'error';
}

/** How many finished tasks stay in memory (the newest ones). */
const KEEP_FINISHED = 300;

export class Store {
  readonly tasks = new Map<number, TaskInfo>();
  status: SchedulerStatus | null = null;
  io: IoStatus | null = null;
  sidecar: SidecarState = { kind: 'starting' };
  readonly activity: ActivityEntry[] = [];
  /** Batches announced with `task.batchSubmitted`, one line per import (imports.ts). */
  readonly imports = new Imports();

  private readonly subscribers = new Set<() => void>();
  private readonly fetching = new Set<number>();
  private statusTimer: ReturnType<typeof setTimeout> | undefined;
  private statusInFlight = false;
  private interval: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly client: TaskmillClient) {}

  subscribe(fn: () => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  private changed(): void {
    for (const fn of this.subscribers) fn();
  }

  log(text: string, tone: ActivityEntry['tone'] = 'info'): void {
    this.activity.unshift({ at: Date.now(), text, tone });
    this.activity.length = Math.min(this.activity.length, 40);
    this.changed();
  }

  /** Wires the events, loads the current tasks and starts the status refresh. */
  async start(): Promise<void> {
    const c = this.client;
    c.on('sidecar.ready', (r) => {
      this.sidecar = { kind: 'ready', version: r.serverInfo.version, pid: r.pid, restarts: c.restartCount };
      this.log(`Sidecar ready (pid ${r.pid}${r.recovered.requeued ? `, ${r.recovered.requeued} tasks recovered` : ''})`, 'ok');
      void this.reload();
    });
    c.on('exited', (e) => {
      const why = e.error ?? (e.signal !== null ? `signal ${e.signal}` : `exit code ${e.code}`);
      this.sidecar = { kind: 'down', why, willRestart: e.willRestart };
      this.log(`Sidecar exited (${why})${e.willRestart ? ', restarting' : ''}`, 'error');
    });
    c.on('task.submitted', ({ task }) => this.put(task));
    c.on('task.batchSubmitted', ({ ids }) => {
      this.imports.announced(ids);
      if (ids.length <= SHOW_TASKS_UP_TO) for (const id of ids) this.fetch(id);
      this.refreshStatusSoon();
      this.changed();
    });
    c.on('task.updated', ({ task }) => this.put(task));
    c.on('task.started', (e) =>
      this.patch(e.id, { state: 'running', startedAt: e.startedAt, attempt: e.attempt, priority: e.priority, progress: null }),
    );
    c.on('task.progress', (e) => this.patch(e.id, { progress: e.progress }, false));
    // (A task an import line counts is counted after its patch: patch() fetches only tasks that
    // are neither rows nor counted.)
    c.on('task.completed', (e) => {
      const t = this.tasks.get(e.id);
      const progress = { ...(t?.progress ?? { estimated: false }), fraction: 1, etaMs: null };
      this.patch(e.id, { state: 'completed', durationMs: e.durationMs, result: e.result, progress, finishedAt: Date.now() });
      this.imports.finished(e.id, true);
    });
    c.on('task.failed', (e) => {
      this.patch(e.id, { state: e.state as TaskInfo['state'], error: e.error, attempt: e.attempt });
      if (!e.willRetry) this.imports.finished(e.id, false);
      if (!e.willRetry) this.log(`#${e.id} ${e.type} failed: ${e.error.message}`, 'error');
    });
    for (const state of ['cancelled', 'superseded', 'expired'] as const) {
      c.on(`task.${state}`, (e) => {
        this.patch(e.id, { state, finishedAt: Date.now() });
        this.imports.finished(e.id, false);
      });
    }
    c.on('task.preempted', (e) => {
      this.patch(e.id, { state: 'pending' });
      this.log(`#${e.id} preempted by #${e.by}`, 'warn');
    });
    c.on('scheduler.paused', (e) => {
      this.log(e.group ? `Group “${e.group}” paused` : e.type ? `Type ${e.type} paused` : 'All work paused', 'warn');
      this.refreshStatusSoon();
    });
    c.on('scheduler.resumed', (e) => {
      this.log(e.group ? `Group “${e.group}” resumed` : e.type ? `Type ${e.type} resumed` : 'All work resumed', 'ok');
      this.refreshStatusSoon();
    });
    c.on('io.pressure', (io) => {
      this.io = io;
      this.changed();
    });
    this.interval = setInterval(() => void this.refreshStatus(), 1000);
    await c.start();
    // A large batch arrives as one task.batchSubmitted, not as a task record each (kept by the
    // client for a restarted sidecar too). Sent before any batch this page submits.
    c.configureEvents({ batchSubmitted: true }).catch((err: unknown) =>
      this.log(`Choosing events failed: ${String(err)}`, 'error'));
  }

  stop(): void {
    clearInterval(this.interval);
    clearTimeout(this.statusTimer);
  }

  /** Replaces the task list with the newest tasks (after a (re)start). */
  async reload(): Promise<void> {
    try {
      const [active, recent] = await Promise.all([
        this.client.invoke('task.list', { state: ['running', 'pending', 'paused', 'waiting', 'blocked'], limit: 500 }),
        this.client.invoke('task.list', { limit: 200 }),
      ]);
      // The lists replace what this page knew, except that a task an event has meanwhile
      // reported final stays final (a snapshot can be older than that event).
      const known = new Map(this.tasks);
      this.tasks.clear();
      for (const t of [...recent.tasks, ...active.tasks]) {
        const now = known.get(t.id);
        this.tasks.set(t.id, now && !isActive(now.state) && isActive(t.state) ? now : t);
      }
      this.changed();
      await this.refreshStatus();
    } catch (err) {
      this.log(`Loading tasks failed: ${String(err)}`, 'error');
    }
  }

  /**
   * A task from an answer (submit, pause, resume, set priority): a snapshot that the events
   * about the same change (`task.submitted`, `task.updated`) also carry, in order. It only
   * adds a task this page has not heard of yet: applied later it could undo a newer event.
   */
  adopt(task: TaskInfo): void {
    if (!this.tasks.has(task.id)) this.put(task);
  }

  put(task: TaskInfo): void {
    const old = this.tasks.get(task.id);
    // A TaskInfo snapshot carries no live progress: keep what the events said while the task
    // runs, and what it had reached when it was paused.
    const keep =
      old && (old.state === 'running' || old.state === 'paused') && !task.progress &&
      (task.state === 'running' || task.state === 'paused')
        ? { progress: old.progress }
        : {};
    this.tasks.set(task.id, { ...task, ...keep });
    this.prune();
    this.refreshStatusSoon();
    this.changed();
  }

  private patch(id: number, fields: Partial<TaskInfo>, lifecycle = true): void {
    const t = this.tasks.get(id);
    if (t) {
      this.tasks.set(id, { ...t, ...fields });
    } else if (!this.imports.owns(id)) {
      // First heard of in an event (submitted before this page loaded): fetch it once. (A task
      // of a large import is counted on its line instead.)
      this.fetch(id);
    }
    if (lifecycle) this.refreshStatusSoon();
    this.changed();
  }

  private fetch(id: number): void {
    if (!this.fetching.has(id)) {
      this.fetching.add(id);
      this.client.invoke('task.get', { id }).then(
        (task) => {
          this.fetching.delete(id);
          this.adopt(task);
        },
        () => this.fetching.delete(id),
      );
    }
  }

  private prune(): void {
    const finished = [...this.tasks.values()].filter((t) => !isActive(t.state));
    if (finished.length <= KEEP_FINISHED) return;
    finished.sort((a, b) => b.id - a.id);
    for (const t of finished.slice(KEEP_FINISHED)) this.tasks.delete(t.id);
  }

  refreshStatusSoon(): void {
    if (this.statusTimer !== undefined) return;
    this.statusTimer = setTimeout(() => {
      this.statusTimer = undefined;
      void this.refreshStatus();
    }, 150);
  }

  async refreshStatus(): Promise<void> {
    if (!this.client.isReady || this.statusInFlight) return;
    this.statusInFlight = true;
    try {
      const status = await this.client.invoke('scheduler.status', {}, { timeoutMs: 5000 });
      this.status = status;
      this.io = status.io;
      // Only tasks this page has not heard of: for the others the events are newer than this
      // snapshot (a task.completed read in the same batch as this answer is applied first, and
      // the snapshot would put the task back to running for good).
      for (const t of status.running) {
        this.adopt(t);
      }
      this.changed();
    } catch {
      // The sidecar is restarting or busy; the next tick tries again.
    } finally {
      this.statusInFlight = false;
    }
  }
}
