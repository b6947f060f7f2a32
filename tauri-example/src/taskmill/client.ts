// The typed Taskmill client: JSON-RPC 2.0 over newline-delimited stdio (PROTOCOL.md), with a
// supervisor (queue until `sidecar.ready`, timeouts, restart with backoff, graceful close)
// and host executors. No Tauri or Node imports here: the transport is injected.

import { LineDecoder } from './framing.js';
import type {
  EventName,
  Events,
  ExecuteParams,
  ExecutorCancelParams,
  ExecutorProgressParams,
  Method,
  MethodParams,
  MethodResult,
  ReadyParams,
  TaskInfo,
} from './generated.js';

export type * from './generated.js';
export { ERROR_CODES, EVENT_NAMES, METHOD_NAMES, PROTOCOL_VERSION } from './generated.js';

// --- transport -----------------------------------------------------------------------------

/** How the sidecar process ended. */
export interface ExitInfo {
  code: number | null;
  signal: string | number | null;
  /** Set when the process could not be started or its pipes failed. */
  error?: string;
}

/**
 * One sidecar process at a time. `start` may be called again after the process ended (the
 * client restarts it that way); callbacks of an earlier process must not fire after its exit.
 */
export interface Transport {
  /**
   * Spawns the sidecar. `onLine` receives stdout text: whole lines, parts of lines or several
   * lines, with `\n` or `\r\n` terminators; the client re-frames it. `onStderr` likewise for
   * stderr. `onExit` is called once, after the last stdout text.
   * `onError` (optional to call) reports trouble that is not an exit, e.g. an undecodable line.
   * A rejected promise (or a throw) means the process did not start.
   */
  start(
    onLine: (text: string) => void,
    onStderr: (text: string) => void,
    onExit: (info: ExitInfo) => void,
    onError?: (error: Error) => void,
  ): void | Promise<void>;
  /** Writes one message line; the transport appends `\n`. */
  write(line: string): void | Promise<void>;
  /** Kills the process now (no grace). */
  kill(): void | Promise<void>;
}

// --- errors ----------------------------------------------------------------------------------

/** Client-side error codes (outside the sidecar's own codes). */
export const CLIENT_ERROR_CODES = {
  /** No answer within the call's timeout. */
  timeout: -32090,
  /** The sidecar exited while the call was in flight. */
  sidecarExited: -32091,
  /** The client was closed (or is closing). */
  closed: -32092,
  /** The sidecar cannot be (re)started. */
  sidecarFailed: -32093,
  /** The caller's AbortSignal fired. */
  aborted: -32094,
} as const;

/** An error answer from the sidecar, or a client-side failure (see `CLIENT_ERROR_CODES`). */
export class TaskmillError extends Error {
  override readonly name = 'TaskmillError';
  readonly code: number;
  readonly data: unknown;
  /** `data.kind` of a sidecar error (`taskNotFound`, ...) or the client-side kind. */
  readonly kind: string;
  readonly method: string | undefined;

  constructor(code: number, message: string, data?: unknown, method?: string) {
    super(method ? `${method}: ${message}` : message);
    this.code = code;
    this.data = data;
    this.method = method;
    const k = isObject(data) && typeof data.kind === 'string' ? data.kind : undefined;
    this.kind = k ?? clientKind(code) ?? 'error';
  }
}

function clientKind(code: number): string | undefined {
  for (const [kind, c] of Object.entries(CLIENT_ERROR_CODES)) if (c === code) return kind;
  return undefined;
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

// --- events ----------------------------------------------------------------------------------

/** Emitted after the sidecar died and a new one announced `sidecar.ready`. */
export interface RestartedEvent {
  /** Restarts so far (1 for the first). */
  restarts: number;
  /** How the previous process ended. */
  exit: ExitInfo;
  ready: ReadyParams;
}

/** Emitted when the sidecar process ends (before any restart). */
export interface ExitedEvent extends ExitInfo {
  /** A restart is scheduled. */
  willRestart: boolean;
  /** Delay before that restart. */
  delayMs?: number;
}

/** Everything `listen` can subscribe to: the sidecar's events plus the client's own. */
export interface ClientEvents extends Events {
  restarted: RestartedEvent;
  exited: ExitedEvent;
}
export type ClientEventName = keyof ClientEvents;
export type EventHandler<E extends ClientEventName> = (params: ClientEvents[E], event: E) => void;
export type AnyEventHandler = (
  params: ClientEvents[ClientEventName],
  event: ClientEventName,
) => void;
export type Unlisten = () => void;

// --- host executors --------------------------------------------------------------------------

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

// --- options ---------------------------------------------------------------------------------

export interface RestartOptions {
  /** Restart the sidecar when it dies (default true). */
  enabled?: boolean;
  /** First delay (default 250 ms). */
  initialDelayMs?: number;
  /** Cap (default 10 000 ms). */
  maxDelayMs?: number;
  /** Growth per consecutive failure (default 2). */
  multiplier?: number;
  /** Consecutive failed starts before giving up (default Infinity). */
  maxAttempts?: number;
  /** A process that ran this long after `sidecar.ready` resets the backoff (default 10 000). */
  stableAfterMs?: number;
  /** Exit codes that are not worth a restart (default [2, 4]: bad command line, bad db). */
  fatalExitCodes?: number[];
}

export interface ClientOptions {
  transport: Transport;
  /** Per-call timeout unless `invoke(..., {timeoutMs})` says otherwise; 0 = none (default 30 000). */
  timeoutMs?: number;
  /** A started process that does not announce `sidecar.ready` in time is killed (default 30 000). */
  readyTimeoutMs?: number;
  restart?: RestartOptions;
  /** `close()`: the `graceMs` sent with `shutdown` (default 5000). */
  closeGraceMs?: number;
  /** `close()`: extra wait for the exit beyond `closeGraceMs` before `kill()` (default 2000). */
  closeExtraMs?: number;
  /** Each stderr line (the sidecar logs one JSON object a line; `parsed` is it, if JSON). */
  logger?: (line: string, parsed?: unknown) => void;
  /** Stdout lines that are not JSON-RPC, handler exceptions, unexpected answers. Never throws. */
  onError?: (error: Error, detail?: { line?: string }) => void;
}

export interface InvokeOptions {
  /** Overrides `ClientOptions.timeoutMs` for this call; 0 = none. */
  timeoutMs?: number;
  /** Rejects the call (kind `aborted`) when it fires; the sidecar may still act on it. */
  signal?: AbortSignal;
}

type State = 'idle' | 'starting' | 'ready' | 'backoff' | 'closing' | 'closed' | 'failed';

type ParamsArgs<M extends Method> = {} extends MethodParams<M>
  ? [params?: MethodParams<M>, options?: InvokeOptions]
  : [params: MethodParams<M>, options?: InvokeOptions];

interface Call {
  id: number;
  method: string;
  line: string;
  sent: boolean;
  generation: number;
  resolve: (value: unknown) => void;
  reject: (err: TaskmillError) => void;
  timer?: ReturnType<typeof setTimeout>;
  cleanup?: () => void;
}

interface HostRun {
  requestId: unknown;
  controller: AbortController;
  generation: number;
}

interface HostExecutor {
  handler: TaskHandler;
  concurrency?: number;
  /** The `executor.register` call sent to the current process. */
  registration?: Promise<unknown>;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // unobserved rejections are fine: callers may not await
  return { promise, resolve, reject };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describeExit(info: ExitInfo): string {
  if (info.error) return info.error;
  if (info.signal !== null && info.signal !== undefined) return `killed by signal ${info.signal}`;
  return `exit code ${info.code}`;
}

// --- the client ------------------------------------------------------------------------------

export class TaskmillClient {
  private readonly transport: Transport;
  private readonly opts: Required<
    Pick<ClientOptions, 'timeoutMs' | 'readyTimeoutMs' | 'closeGraceMs' | 'closeExtraMs'>
  >;
  private readonly restartOpts: Required<RestartOptions>;
  private readonly logger: ClientOptions['logger'];
  private readonly errorHook: ClientOptions['onError'];

  private state: State = 'idle';
  private generation = 0;
  private nextId = 1;
  private readonly calls = new Map<number, Call>();
  private readonly abandoned = new Set<number>();
  private readonly listeners = new Map<string, Set<(p: never, e: never) => void>>();
  private readonly executors = new Map<string, HostExecutor>();
  private readonly runs = new Map<number, HostRun>();
  private stdout = new LineDecoder();
  private stderr = new LineDecoder();
  private readyDeferred = deferred<ReadyParams>();
  private exitDeferred: Deferred<ExitInfo> | null = null;
  private readyTimer: ReturnType<typeof setTimeout> | undefined;
  private backoffTimer: ReturnType<typeof setTimeout> | undefined;
  private readyAt = 0;
  private failures = 0;
  private restarts = 0;
  private lastExit: ExitInfo | null = null;
  private lastStderr = '';
  private closePromise: Promise<void> | null = null;
  private _ready: ReadyParams | null = null;

  constructor(options: ClientOptions) {
    this.transport = options.transport;
    this.opts = {
      timeoutMs: options.timeoutMs ?? 30_000,
      readyTimeoutMs: options.readyTimeoutMs ?? 30_000,
      closeGraceMs: options.closeGraceMs ?? 5000,
      closeExtraMs: options.closeExtraMs ?? 2000,
    };
    const r = options.restart ?? {};
    this.restartOpts = {
      enabled: r.enabled ?? true,
      initialDelayMs: r.initialDelayMs ?? 250,
      maxDelayMs: r.maxDelayMs ?? 10_000,
      multiplier: r.multiplier ?? 2,
      maxAttempts: r.maxAttempts ?? Number.POSITIVE_INFINITY,
      stableAfterMs: r.stableAfterMs ?? 10_000,
      fatalExitCodes: r.fatalExitCodes ?? [2, 4],
    };
    this.logger = options.logger;
    this.errorHook = options.onError;
  }

  // --- public API ----------------------------------------------------------------------------

  /** The latest `sidecar.ready` params, or null before the first one. */
  get readyInfo(): ReadyParams | null {
    return this._ready;
  }

  /** True between `sidecar.ready` and the process's exit. */
  get isReady(): boolean {
    return this.state === 'ready';
  }

  /** How many times the sidecar was restarted. */
  get restartCount(): number {
    return this.restarts;
  }

  /**
   * Starts the sidecar (once; `invoke` calls it for you) and resolves with `sidecar.ready`.
   * After a restart the promise of the current process is returned.
   */
  start(): Promise<ReadyParams> {
    if (this.state === 'failed') {
      // Try again from scratch (the caller decided to).
      this.failures = 0;
      this.readyDeferred = deferred<ReadyParams>();
      this.state = 'idle';
    }
    if (this.state === 'idle') this.spawn();
    else if (this.state === 'closed' || this.state === 'closing')
      return Promise.reject(this.localError('closed', 'the client is closed'));
    return this.readyDeferred.promise;
  }

  /** Calls a sidecar method. Calls made before `sidecar.ready` are queued and sent after it. */
  invoke<M extends Method>(method: M, ...args: ParamsArgs<M>): Promise<MethodResult<M>> {
    const [params, options] = args as [MethodParams<M> | undefined, InvokeOptions | undefined];
    return this.request(method, params ?? {}, options) as Promise<MethodResult<M>>;
  }

  /**
   * Subscribes to an event (`task.progress`, ..., the client's own `restarted` and `exited`,
   * or `'*'` for all of them). Returns the unlisten function.
   */
  listen<E extends ClientEventName>(event: E, handler: EventHandler<E>): Unlisten;
  listen(event: '*', handler: AnyEventHandler): Unlisten;
  listen(event: string, handler: (params: never, event: never) => void): Unlisten {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(handler);
    return () => {
      set.delete(handler);
    };
  }

  /** Resolves with the next `event` whose params satisfy `predicate` (rejects on timeout). */
  waitFor<E extends ClientEventName>(
    event: E,
    predicate: (params: ClientEvents[E]) => boolean = () => true,
    timeoutMs = this.opts.timeoutMs,
  ): Promise<ClientEvents[E]> {
    return new Promise((resolve, reject) => {
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              off();
              reject(this.localError('timeout', `no ${event} within ${timeoutMs} ms`));
            }, timeoutMs)
          : undefined;
      const off = this.listen(event, (params) => {
        if (!predicate(params)) return;
        off();
        if (timer !== undefined) clearTimeout(timer);
        resolve(params);
      });
    });
  }

  /**
   * Runs tasks of `type` in this process (a host executor): sends `executor.register` now and
   * after every restart, and answers the sidecar's `task.execute` with the handler's result.
   * Resolves when registered; the returned function unregisters.
   */
  async onTask(
    type: string,
    handler: TaskHandler,
    options: { concurrency?: number } = {},
  ): Promise<() => Promise<void>> {
    const entry: HostExecutor = { handler, concurrency: options.concurrency };
    this.executors.set(type, entry);
    try {
      if (this.state === 'ready') {
        entry.registration = this.request('executor.register', this.registerParams(type, entry));
      } else {
        // Registered by handleReady, together with every other host executor.
        await this.start();
      }
      await entry.registration;
    } catch (err) {
      if (this.executors.get(type) === entry) this.executors.delete(type);
      throw err;
    }
    return async () => {
      if (this.executors.get(type) !== entry) return;
      this.executors.delete(type);
      if (this.state === 'ready') await this.invoke('executor.unregister', { type });
    };
  }

  /**
   * Stops the sidecar: sends `shutdown {graceMs}`, waits for the exit up to the grace period
   * (plus `closeExtraMs`), then kills it. Pending calls are rejected (kind `closed`).
   */
  close(options: { graceMs?: number } = {}): Promise<void> {
    if (this.closePromise) return this.closePromise;
    this.closePromise = this.doClose(options.graceMs ?? this.opts.closeGraceMs);
    return this.closePromise;
  }

  // --- requests ------------------------------------------------------------------------------

  private request(method: string, params: unknown, options: InvokeOptions = {}): Promise<unknown> {
    if (this.state === 'closed' || this.state === 'closing' || this.state === 'failed') {
      const err =
        this.state === 'failed'
          ? this.localError('sidecarFailed', `the sidecar cannot be started (${this.failedWhy()})`)
          : this.localError('closed', 'the client is closed');
      return Promise.reject(new TaskmillError(err.code, err.message, err.data, method));
    }
    if (this.state === 'idle') this.spawn();
    const id = this.nextId++;
    const line = JSON.stringify({ jsonrpc: '2.0', id, method, params });
    return new Promise((resolve, reject) => {
      const call: Call = {
        id,
        method,
        line,
        sent: false,
        generation: this.generation,
        resolve,
        reject,
      };
      const timeoutMs = options.timeoutMs ?? this.opts.timeoutMs;
      if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
        call.timer = setTimeout(() => {
          this.settle(id, undefined, this.localError('timeout', `no answer within ${timeoutMs} ms`));
          this.abandoned.add(id);
        }, timeoutMs);
      }
      const signal = options.signal;
      if (signal) {
        if (signal.aborted) {
          reject(new TaskmillError(CLIENT_ERROR_CODES.aborted, 'aborted', { kind: 'aborted' }, method));
          if (call.timer) clearTimeout(call.timer);
          return;
        }
        const onAbort = () => {
          this.settle(id, undefined, this.localError('aborted', 'aborted by the caller'));
          this.abandoned.add(id);
        };
        signal.addEventListener('abort', onAbort, { once: true });
        call.cleanup = () => signal.removeEventListener('abort', onAbort);
      }
      this.calls.set(id, call);
      if (this.state === 'ready') this.send(call);
    });
  }

  private send(call: Call): void {
    call.sent = true;
    call.generation = this.generation;
    this.writeLine(call.line, (err) =>
      this.settle(call.id, undefined, this.localError('sidecarExited', `write failed: ${err}`)),
    );
  }

  private writeLine(line: string, onFail?: (err: unknown) => void): void {
    try {
      const r = this.transport.write(line);
      if (r && typeof (r as Promise<void>).then === 'function') {
        (r as Promise<void>).then(undefined, (err: unknown) => {
          if (onFail) onFail(err);
          else this.reportError(new Error(`write failed: ${String(err)}`));
        });
      }
    } catch (err) {
      if (onFail) onFail(err);
      else this.reportError(new Error(`write failed: ${String(err)}`));
    }
  }

  private notify(method: string, params: unknown): void {
    if (this.state !== 'ready' && this.state !== 'closing') return;
    this.writeLine(JSON.stringify({ jsonrpc: '2.0', method, params }));
  }

  /** Resolves or rejects a call once; `err` gets the method name added. */
  private settle(id: number, result: unknown, err?: TaskmillError): void {
    const call = this.calls.get(id);
    if (!call) return;
    this.calls.delete(id);
    if (call.timer) clearTimeout(call.timer);
    call.cleanup?.();
    if (err) call.reject(new TaskmillError(err.code, err.message, err.data, call.method));
    else call.resolve(result);
  }

  private localError(kind: keyof typeof CLIENT_ERROR_CODES, message: string): TaskmillError {
    return new TaskmillError(CLIENT_ERROR_CODES[kind], message, { kind });
  }

  // --- process lifecycle ---------------------------------------------------------------------

  private spawn(): void {
    const gen = ++this.generation;
    this.state = 'starting';
    this.stdout = new LineDecoder(64 * 1024 * 1024, (n) =>
      this.reportError(new Error(`dropped a stdout line of more than ${n} chars`)),
    );
    this.stderr = new LineDecoder();
    this.exitDeferred = deferred<ExitInfo>();
    this.lastStderr = '';
    let exited = false;
    const onExit = (info: ExitInfo) => {
      if (exited || gen !== this.generation) return;
      exited = true;
      this.handleExit(info);
    };
    if (this.opts.readyTimeoutMs > 0) {
      this.readyTimer = setTimeout(() => {
        if (gen !== this.generation || this.state !== 'starting') return;
        this.reportError(new Error(`no sidecar.ready within ${this.opts.readyTimeoutMs} ms; killing it`));
        void this.killTransport();
      }, this.opts.readyTimeoutMs);
    }
    try {
      const r = this.transport.start(
        (text) => {
          if (gen === this.generation && !exited) this.onStdout(text);
        },
        (text) => {
          if (gen === this.generation && !exited) this.onStderrText(text);
        },
        onExit,
        (error) => {
          if (gen === this.generation && !exited) this.reportError(error);
        },
      );
      if (r && typeof (r as Promise<void>).then === 'function') {
        (r as Promise<void>).then(undefined, (err: unknown) =>
          onExit({ code: null, signal: null, error: `cannot start the sidecar: ${String(err)}` }),
        );
      }
    } catch (err) {
      onExit({ code: null, signal: null, error: `cannot start the sidecar: ${String(err)}` });
    }
  }

  private onStdout(text: string): void {
    for (const line of this.stdout.push(text)) this.handleLine(line);
  }

  private onStderrText(text: string): void {
    for (const line of this.stderr.push(text)) this.logLine(line);
  }

  private logLine(line: string): void {
    this.lastStderr = line;
    if (!this.logger) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      parsed = undefined;
    }
    try {
      this.logger(line, parsed);
    } catch (err) {
      this.reportError(asError(err));
    }
  }

  private handleExit(info: ExitInfo): void {
    for (const line of this.stdout.flush()) this.handleLine(line);
    for (const line of this.stderr.flush()) this.logLine(line);
    if (this.readyTimer !== undefined) clearTimeout(this.readyTimer);
    const wasReady = this.state === 'ready';
    const uptime = wasReady ? Date.now() - this.readyAt : 0;
    this.lastExit = info;
    this.exitDeferred?.resolve(info);

    // Every host run of that process is over.
    for (const [, run] of this.runs) {
      run.controller.abort(new TaskCancelledError(this.state === 'closing' ? 'closed' : 'sidecarExited'));
    }
    this.runs.clear();

    const why = describeExit(info);
    const closing = this.state === 'closing';
    // In-flight calls cannot be answered any more.
    for (const call of [...this.calls.values()]) {
      if (!call.sent) continue;
      this.settle(
        call.id,
        undefined,
        closing
          ? this.localError('closed', `the client closed before an answer (sidecar ${why})`)
          : this.localError('sidecarExited', `the sidecar exited before answering (${why})`),
      );
    }
    if (closing) {
      this.state = 'closed';
      this.emit('exited', { ...info, willRestart: false });
      return;
    }

    if (wasReady && uptime >= this.restartOpts.stableAfterMs) this.failures = 0;
    this.failures += 1;
    const fatal = info.code !== null && this.restartOpts.fatalExitCodes.includes(info.code);
    const canRestart =
      this.restartOpts.enabled && !fatal && this.failures <= this.restartOpts.maxAttempts;
    if (!canRestart) {
      this.state = 'failed';
      const err = this.localError('sidecarFailed', `the sidecar is gone (${this.failedWhy()})`);
      for (const call of [...this.calls.values()]) this.settle(call.id, undefined, err);
      if (!wasReady) this.readyDeferred.reject(err);
      this.emit('exited', { ...info, willRestart: false });
      return;
    }
    const delayMs = Math.min(
      this.restartOpts.maxDelayMs,
      this.restartOpts.initialDelayMs * this.restartOpts.multiplier ** (this.failures - 1),
    );
    this.state = 'backoff';
    if (wasReady) this.readyDeferred = deferred<ReadyParams>();
    this.emit('exited', { ...info, willRestart: true, delayMs });
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = undefined;
      if (this.state !== 'backoff') return;
      this.restarts += 1;
      this.spawn();
    }, delayMs);
  }

  private failedWhy(): string {
    const exit = this.lastExit ? describeExit(this.lastExit) : 'not started';
    return this.lastStderr ? `${exit}: ${this.lastStderr}` : exit;
  }

  private handleReady(params: ReadyParams): void {
    if (this.state !== 'starting') {
      this._ready = params;
      return;
    }
    if (this.readyTimer !== undefined) clearTimeout(this.readyTimer);
    this.state = 'ready';
    this.readyAt = Date.now();
    this._ready = params;
    // Host executors first, so their tasks can be dispatched; then the queue, in call order.
    for (const [type, entry] of this.executors) {
      entry.registration = this.request('executor.register', this.registerParams(type, entry));
      entry.registration.catch((err: unknown) =>
        this.reportError(new Error(`registering host executor ${type} failed: ${String(err)}`)),
      );
    }
    for (const call of [...this.calls.values()]) {
      if (!call.sent) this.send(call);
    }
    this.readyDeferred.resolve(params);
    if (this.generation > 1 && this.lastExit) {
      this.emit('restarted', { restarts: this.restarts, exit: this.lastExit, ready: params });
    }
  }

  private registerParams(type: string, entry: HostExecutor): MethodParams<'executor.register'> {
    return entry.concurrency !== undefined ? { type, concurrency: entry.concurrency } : { type };
  }

  private async killTransport(): Promise<void> {
    try {
      await this.transport.kill();
    } catch (err) {
      this.reportError(new Error(`kill failed: ${String(err)}`));
    }
  }

  private async doClose(graceMs: number): Promise<void> {
    const prev = this.state;
    if (this.backoffTimer !== undefined) clearTimeout(this.backoffTimer);
    this.backoffTimer = undefined;
    this.state = 'closing';
    const closedErr = this.localError('closed', 'the client was closed');
    // Queued calls will never be sent.
    for (const call of [...this.calls.values()]) if (!call.sent) this.settle(call.id, undefined, closedErr);
    if (prev !== 'starting' && prev !== 'ready') {
      this.state = 'closed';
      this.readyDeferred.reject(closedErr);
      return;
    }
    const exit = this.exitDeferred!.promise;
    const shutdownId = this.nextId++;
    this.abandoned.add(shutdownId); // its answer needs no handling
    const shutdownLine = JSON.stringify({
      jsonrpc: '2.0',
      id: shutdownId,
      method: 'shutdown',
      params: { graceMs },
    });
    this.writeLine(shutdownLine, () => {});
    const timedOut = Symbol('timeout');
    let timer: ReturnType<typeof setTimeout> | undefined;
    const waited = await Promise.race([
      exit,
      new Promise<typeof timedOut>((res) => {
        timer = setTimeout(() => res(timedOut), graceMs + this.opts.closeExtraMs);
      }),
    ]);
    if (timer !== undefined) clearTimeout(timer);
    if (waited === timedOut) {
      await this.killTransport();
      let t2: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([exit, new Promise((res) => (t2 = setTimeout(res, 2000)))]);
      if (t2 !== undefined) clearTimeout(t2);
    }
    if (this.state === 'closing') {
      // The transport never reported the exit: finish anyway.
      this.handleExit({ code: null, signal: null, error: 'no exit reported after kill()' });
    }
    if (prev === 'starting') this.readyDeferred.reject(closedErr);
  }

  // --- incoming ------------------------------------------------------------------------------

  private handleLine(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      this.reportError(new Error('the sidecar wrote a line that is not JSON'), { line });
      return;
    }
    const messages = Array.isArray(msg) ? msg : [msg];
    for (const m of messages) {
      try {
        this.handleMessage(m, line);
      } catch (err) {
        this.reportError(asError(err), { line });
      }
    }
  }

  private handleMessage(msg: unknown, line: string): void {
    if (!isObject(msg) || msg.jsonrpc !== '2.0') {
      this.reportError(new Error('the sidecar wrote something that is not JSON-RPC 2.0'), { line });
      return;
    }
    if (typeof msg.method === 'string') {
      if ('id' in msg) this.handleServerRequest(msg.id, msg.method, msg.params);
      else this.handleNotification(msg.method, msg.params);
      return;
    }
    if ('result' in msg || 'error' in msg) {
      const id = msg.id;
      if (typeof id === 'number' && this.calls.has(id)) {
        if ('error' in msg) {
          const e = isObject(msg.error) ? msg.error : {};
          const code = typeof e.code === 'number' ? e.code : -32603;
          const message = typeof e.message === 'string' ? e.message : 'error';
          this.settle(id, undefined, new TaskmillError(code, message, e.data));
        } else {
          this.settle(id, msg.result);
        }
      } else if (typeof id === 'number' && this.abandoned.has(id)) {
        this.abandoned.delete(id); // a late answer to a call that timed out
      } else if (id === null && 'error' in msg) {
        this.reportError(new Error(`the sidecar rejected a message: ${JSON.stringify(msg.error)}`), { line });
      } else {
        this.reportError(new Error(`an answer for an unknown id ${JSON.stringify(id)}`), { line });
      }
      if (this.abandoned.size > 10_000) this.abandoned.clear();
      return;
    }
    this.reportError(new Error('an unrecognised JSON-RPC message'), { line });
  }

  private handleNotification(method: string, params: unknown): void {
    if (method === 'sidecar.ready') this.handleReady(params as ReadyParams);
    else if (method === 'executor.cancel') this.handleCancel(params as ExecutorCancelParams);
    this.emit(method as ClientEventName, params as never);
  }

  private emit<E extends ClientEventName>(event: E, params: ClientEvents[E]): void {
    for (const key of [event, '*']) {
      const set = this.listeners.get(key);
      if (!set) continue;
      for (const h of [...set]) {
        try {
          (h as (p: unknown, e: string) => void)(params, event);
        } catch (err) {
          this.reportError(asError(err));
        }
      }
    }
  }

  private reportError(err: Error, detail?: { line?: string }): void {
    if (!this.errorHook) return;
    try {
      this.errorHook(err, detail);
    } catch {
      // the hook must never break the client
    }
  }

  // --- host executors ------------------------------------------------------------------------

  private respond(requestId: unknown, body: { result: unknown } | { error: unknown }): void {
    this.writeLine(JSON.stringify({ jsonrpc: '2.0', id: requestId, ...body }));
  }

  private handleServerRequest(requestId: unknown, method: string, params: unknown): void {
    if (method !== 'task.execute') {
      this.respond(requestId, {
        error: { code: -32601, message: `method not found: ${method}`, data: { kind: 'methodNotFound' } },
      });
      return;
    }
    const p = params as ExecuteParams;
    const task = p?.task;
    const entry = task ? this.executors.get(task.type) : undefined;
    if (!task || !entry) {
      this.respond(requestId, {
        error: {
          code: -32601,
          message: `no host executor for ${task?.type ?? '?'} in this client`,
          data: { kind: 'noExecutor', retryable: true },
        },
      });
      return;
    }
    const gen = this.generation;
    const controller = new AbortController();
    const run: HostRun = { requestId, controller, generation: gen };
    this.runs.set(task.id, run);
    let finished = false;
    const live = () => !finished && gen === this.generation;
    const ctx: TaskContext = {
      signal: controller.signal,
      checkpoint: p.checkpoint ?? undefined,
      task,
      progress: (update) => {
        if (!live()) return;
        const fields = typeof update === 'number' ? { fraction: update } : update;
        this.notify('executor.progress', { ...fields, id: task.id });
      },
      saveCheckpoint: (state) => {
        if (!live()) return;
        this.notify('executor.checkpoint', { id: task.id, state });
      },
    };
    const done = (body: { result: unknown } | { error: unknown }) => {
      if (finished) return;
      const current = live();
      finished = true;
      if (this.runs.get(task.id) === run) this.runs.delete(task.id);
      if (current) this.respond(requestId, body);
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

  private handleCancel(params: ExecutorCancelParams): void {
    const run = params && this.runs.get(params.id);
    if (run) run.controller.abort(new TaskCancelledError(params.reason));
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

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
