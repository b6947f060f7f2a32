// Host executors (PROTOCOL.md "Host executors"), the client's side of the sidecar's
// `hostexec.py`: task types this process runs itself. `onTask` sends `executor.register` (and
// again to every new process); the sidecar's `task.execute` runs the handler with a context
// whose progress and checkpoints go back as notifications, and the handler's result or thrown
// error becomes the answer. `executor.cancel`, or the end of the process, aborts the run's
// signal; answers of a run whose process is gone are dropped.

import type { ReportError } from './errors.js';
import type {
  ChildCounts,
  ExecuteParams,
  ExecutorCancelParams,
  ExecutorProgressParams,
  MethodParams,
  TaskInfo,
} from './generated.js';
import type { ResponseBody } from './jsonrpc.js';

export type ProgressUpdate = number | Omit<ExecutorProgressParams, 'id'>;
export type CancelReason = ExecutorCancelParams['reason'] | 'sidecarExited' | 'closed';

/** Passed to `onTask` handlers. */
export interface TaskContext {
  /** Aborted on `executor.cancel` (cancel, pause, preemption, shutdown, timeout) or when the
   * sidecar goes away; `signal.reason` is a `TaskCancelledError`. */
  signal: AbortSignal;
  /** State saved with `saveCheckpoint` by an earlier run, or `undefined`. */
  checkpoint: unknown;
  task: TaskInfo;
  /** `'run'`, or `'finalize'` for the finalize phase of a parent submitted with
   * `finalize: true` (after all its direct children are final; its result is the task's). */
  phase: 'run' | 'finalize';
  /** In the finalize phase: the direct children by final state; otherwise `undefined`. */
  children: ChildCounts | undefined;
  /** Reports progress (`executor.progress`): a fraction 0..1, or the fields. */
  progress(update: ProgressUpdate): void;
  /** Stores resumable state (`executor.checkpoint`); handed back on the next run. */
  saveCheckpoint(state: unknown): void;
}

export type TaskHandler = (task: TaskInfo, ctx: TaskContext) => unknown;

/** `signal.reason` of an aborted host run. */
export class TaskCancelledError extends Error {
  override readonly name = 'TaskCancelledError';
  constructor(readonly reason: CancelReason) {
    super(`task run stopped: ${reason}`);
  }
}

/**
 * Throw this from an `onTask` handler to control how the sidecar treats the failure:
 * `retryable: false` fails the task permanently, `retryAfterMs` overrides the backoff.
 * Any other thrown error is a retryable failure.
 */
export class TaskError extends Error {
  override readonly name = 'TaskError';
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;
  readonly kind: string | undefined;
  readonly code: number;

  constructor(
    message: string,
    opts: { retryable?: boolean; retryAfterMs?: number; kind?: string; code?: number } = {},
  ) {
    super(message);
    this.retryable = opts.retryable ?? true;
    this.retryAfterMs = opts.retryAfterMs;
    this.kind = opts.kind;
    this.code = opts.code ?? 1;
  }
}

/** What host executors need from the rest of the client. */
export interface ExecutorHost {
  /** A call to the sidecar, made like `invoke` (queued until ready). */
  request(method: 'executor.register' | 'executor.unregister', params: unknown): Promise<unknown>;
  /** Starts the sidecar; resolves at `sidecar.ready` (after `registerAll`). */
  start(): Promise<unknown>;
  isReady(): boolean;
  /** Which process is current; a run belongs to the one it started in. */
  generation(): number;
  respond(requestId: unknown, body: ResponseBody): void;
  /** Sends a notification; dropped when no process is listening. */
  notify(method: string, params: unknown): void;
  reportError: ReportError;
}

interface Registration {
  handler: TaskHandler;
  concurrency?: number;
  /** The `executor.register` call sent to the current process. */
  registration?: Promise<unknown>;
}

export class HostExecutors {
  private readonly executors = new Map<string, Registration>();
  /** Runs in progress: their abort controllers, by task id. */
  private readonly runs = new Map<number, AbortController>();

  constructor(private readonly host: ExecutorHost) {}

  /** `TaskmillClient.onTask`: registers now if ready, else at the next `sidecar.ready`. */
  async onTask(
    type: string,
    handler: TaskHandler,
    options: { concurrency?: number } = {},
  ): Promise<() => Promise<void>> {
    const entry: Registration = { handler, concurrency: options.concurrency };
    this.executors.set(type, entry);
    try {
      if (this.host.isReady()) {
        entry.registration = this.host.request('executor.register', registerParams(type, entry));
      } else {
        // Registered by registerAll at sidecar.ready, together with every other host executor.
        await this.host.start();
      }
      await entry.registration;
    } catch (err) {
      if (this.executors.get(type) === entry) this.executors.delete(type);
      throw err;
    }
    return async () => {
      if (this.executors.get(type) !== entry) return;
      this.executors.delete(type);
      if (this.host.isReady()) await this.host.request('executor.unregister', { type });
    };
  }

  /** At `sidecar.ready`: registers every host executor with the new process. */
  registerAll(): void {
    for (const [type, entry] of this.executors) {
      entry.registration = this.host.request('executor.register', registerParams(type, entry));
      entry.registration.catch((err: unknown) =>
        this.host.reportError(new Error(`registering host executor ${type} failed: ${String(err)}`)),
      );
    }
  }

  /** The process ended: every run of it is over. */
  abortRuns(reason: 'closed' | 'sidecarExited'): void {
    for (const [, run] of this.runs) run.abort(new TaskCancelledError(reason));
    this.runs.clear();
  }

  /** `executor.cancel {id, reason}`: aborts that run's signal; its handler answers. */
  cancel(params: ExecutorCancelParams): void {
    const run = params && this.runs.get(params.id);
    if (run) run.abort(new TaskCancelledError(params.reason));
  }

  /** The sidecar's `task.execute` request: runs the handler and answers with its outcome. */
  execute(requestId: unknown, params: unknown): void {
    const p = params as ExecuteParams;
    const task = p?.task;
    const entry = task ? this.executors.get(task.type) : undefined;
    if (!task || !entry) {
      this.host.respond(requestId, {
        error: {
          code: -32601,
          message: `no host executor for ${task?.type ?? '?'} in this client`,
          data: { kind: 'noExecutor', retryable: true },
        },
      });
      return;
    }
    const gen = this.host.generation();
    const controller = new AbortController();
    this.runs.set(task.id, controller);
    let finished = false;
    const live = () => !finished && gen === this.host.generation();
    const ctx: TaskContext = {
      signal: controller.signal,
      checkpoint: p.checkpoint ?? undefined,
      task,
      // (a sidecar without workflows sends no phase: every run is a first run)
      phase: p.phase === 'finalize' ? 'finalize' : 'run',
      children: p.children ?? undefined,
      progress: (update) => {
        if (!live()) return;
        const fields = typeof update === 'number' ? { fraction: update } : update;
        this.host.notify('executor.progress', { ...fields, id: task.id });
      },
      saveCheckpoint: (state) => {
        if (!live()) return;
        this.host.notify('executor.checkpoint', { id: task.id, state });
      },
    };
    const done = (body: ResponseBody) => {
      if (finished) return;
      const current = live();
      finished = true;
      if (this.runs.get(task.id) === controller) this.runs.delete(task.id);
      if (current) this.host.respond(requestId, body);
    };
    let out: unknown;
    try {
      out = entry.handler(task, ctx);
    } catch (err) {
      done({ error: taskErrorBody(err, controller.signal) });
      return;
    }
    Promise.resolve(out).then(
      (result) => done({ result: result === undefined ? {} : { result } }),
      (err: unknown) => done({ error: taskErrorBody(err, controller.signal) }),
    );
  }
}

function registerParams(type: string, entry: Registration): MethodParams<'executor.register'> {
  return entry.concurrency !== undefined ? { type, concurrency: entry.concurrency } : { type };
}

/** The JSON-RPC error of a failed run: a `TaskError`'s fields, a cancellation, or any throw. */
function taskErrorBody(err: unknown, signal: AbortSignal): unknown {
  if (err instanceof TaskError) {
    const data: Record<string, unknown> = { retryable: err.retryable };
    if (err.retryAfterMs !== undefined) data.retryAfterMs = err.retryAfterMs;
    if (err.kind !== undefined) data.kind = err.kind;
    return { code: err.code, message: err.message, data };
  }
  if (signal.aborted) {
    const reason = signal.reason instanceof TaskCancelledError ? signal.reason.reason : 'cancelled';
    return { code: 2, message: `stopped: ${reason}`, data: { retryable: true, kind: 'cancelled' } };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { code: 1, message: message || 'host executor failed', data: { retryable: true } };
}
