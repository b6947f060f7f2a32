// The supervisor: the sidecar process's lifecycle, the client's twin of the sidecar's
// `server.py`. It starts the process through the transport, frames its stdout for the JSON-RPC
// core and its stderr for the logger, waits for `sidecar.ready` (killing a process that does
// not announce it in time), restarts a dead process with exponential backoff (not on a fatal
// exit code, not past `maxAttempts`) and closes it gracefully: `shutdown {graceMs}`, a bounded
// wait, then `kill()`. It refuses a sidecar of another protocol version (kind
// `protocolMismatch`). With a transport whose process is owned elsewhere (`sharedProcess`: the
// Rust side of the Tauri plugin) it attaches and detaches instead, and the owner restarts.
// Each process has a generation number; callbacks of an older one are ignored.

import { LineDecoder } from './framing.js';
import { asError, clientError, type ReportError, type TaskmillError } from './errors.js';
import type { EventHub } from './events.js';
import { PROTOCOL_VERSION, type ReadyParams } from './generated.js';
import type { HostExecutors } from './hostexec.js';
import type { JsonRpcPeer } from './jsonrpc.js';
import type { ExitInfo, Transport } from './transport.js';

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
  /**
   * Exit codes that are not worth a restart (default [2, 3, 4]: bad command line, database
   * held by another sidecar, database unreadable).
   */
  fatalExitCodes?: number[];
}

/** The `ClientOptions` the supervisor reads (documented there). */
export interface SupervisorOptions {
  readyTimeoutMs?: number;
  restart?: RestartOptions;
  closeGraceMs?: number;
  closeExtraMs?: number;
  logger?: (line: string, parsed?: unknown) => void;
}

/** What the supervisor drives as processes come and go. */
export interface SupervisedParts {
  rpc: Pick<JsonRpcPeer, 'receive' | 'sendQueued' | 'rejectCalls' | 'requestIgnoringAnswer'>;
  events: Pick<EventHub, 'emit'>;
  executors: Pick<HostExecutors, 'registerAll' | 'abortRuns'>;
  /** At each `sidecar.ready`, after the host executors and before the queued calls. */
  onReady?: () => void;
  reportError: ReportError;
}

type State = 'idle' | 'starting' | 'ready' | 'backoff' | 'closing' | 'closed' | 'failed';

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

function describeExit(info: ExitInfo): string {
  if (info.error) return info.error;
  if (info.signal !== null && info.signal !== undefined) return `killed by signal ${info.signal}`;
  return `exit code ${info.code}`;
}

export class Supervisor {
  private readonly readyTimeoutMs: number;
  private readonly closeGraceMs: number;
  private readonly closeExtraMs: number;
  private readonly restartOpts: Required<RestartOptions>;
  private readonly logger: SupervisorOptions['logger'];
  private readonly rpc: SupervisedParts['rpc'];
  private readonly events: SupervisedParts['events'];
  private readonly executors: SupervisedParts['executors'];
  private readonly reportError: ReportError;
  private readonly onReady: SupervisedParts['onReady'];

  private state: State = 'idle';
  private _generation = 0;
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
  /** Ends the current process once (its guarded `onExit`), for exits the client decides. */
  private endProcess: ((info: ExitInfo) => void) | null = null;
  /** Why this sidecar is refused for good (a protocol mismatch), or null. */
  private refused: TaskmillError | null = null;

  constructor(
    private readonly transport: Transport,
    options: SupervisorOptions,
    parts: SupervisedParts,
  ) {
    this.readyTimeoutMs = options.readyTimeoutMs ?? 30_000;
    this.closeGraceMs = options.closeGraceMs ?? 5000;
    this.closeExtraMs = options.closeExtraMs ?? 2000;
    const r = options.restart ?? {};
    this.restartOpts = {
      enabled: r.enabled ?? true,
      initialDelayMs: r.initialDelayMs ?? 250,
      maxDelayMs: r.maxDelayMs ?? 10_000,
      multiplier: r.multiplier ?? 2,
      maxAttempts: r.maxAttempts ?? Number.POSITIVE_INFINITY,
      stableAfterMs: r.stableAfterMs ?? 10_000,
      fatalExitCodes: r.fatalExitCodes ?? [2, 3, 4],
    };
    this.logger = options.logger;
    this.rpc = parts.rpc;
    this.events = parts.events;
    this.executors = parts.executors;
    this.reportError = parts.reportError;
    this.onReady = parts.onReady;
  }

  // --- what the rest of the client asks ------------------------------------------------------

  /** The latest `sidecar.ready` params, or null before the first one. */
  get readyInfo(): ReadyParams | null {
    return this._ready;
  }

  /** True between `sidecar.ready` and the process's exit. */
  get isReady(): boolean {
    return this.state === 'ready';
  }

  /** True while a process reads notifications: ready, or closing (until it exits). */
  get acceptsNotifications(): boolean {
    return this.state === 'ready' || this.state === 'closing';
  }

  /** How many times the sidecar was restarted. */
  get restartCount(): number {
    return this.restarts;
  }

  /** The current process's number (1 for the first). */
  get generation(): number {
    return this._generation;
  }

  /** Why no call can be made now (closed, or gave up), or `undefined`. */
  refusal(): TaskmillError | undefined {
    if (this.refused) return this.refused;
    if (this.state === 'failed') {
      return clientError('sidecarFailed', `the sidecar cannot be started (${this.failedWhy()})`);
    }
    if (this.state === 'closed' || this.state === 'closing') {
      return clientError('closed', 'the client is closed');
    }
    return undefined;
  }

  /** Starts the first process when none was started yet (a call needs one). */
  startIfIdle(): void {
    if (this.state === 'idle') this.spawn();
  }

  /** `TaskmillClient.start`: starts (or, after giving up, retries) and awaits `sidecar.ready`. */
  start(): Promise<ReadyParams> {
    if (this.refused) return Promise.reject(this.refused);
    if (this.state === 'failed') {
      // Try again from scratch (the caller decided to).
      this.failures = 0;
      this.readyDeferred = deferred<ReadyParams>();
      this.state = 'idle';
    }
    if (this.state === 'idle') this.spawn();
    else if (this.state === 'closed' || this.state === 'closing')
      return Promise.reject(clientError('closed', 'the client is closed'));
    return this.readyDeferred.promise;
  }

  /** `TaskmillClient.close`: once; later calls get the same promise. */
  close(options: { graceMs?: number } = {}): Promise<void> {
    if (this.closePromise) return this.closePromise;
    this.closePromise = this.doClose(options.graceMs ?? this.closeGraceMs);
    return this.closePromise;
  }

  /** A `sidecar.ready` notification: the starting process is ready (else only recorded). */
  handleReady(params: ReadyParams): void {
    if (this.state !== 'starting') {
      this._ready = params;
      return;
    }
    if (this.readyTimer !== undefined) clearTimeout(this.readyTimer);
    if (params.protocolVersion !== PROTOCOL_VERSION) {
      this.refuseProtocol(params.protocolVersion, 'sidecar.ready');
      this._ready = params;
      return;
    }
    this.state = 'ready';
    this.readyAt = Date.now();
    this._ready = params;
    // Host executors first, so their tasks can be dispatched; then the queue, in call order.
    this.executors.registerAll();
    this.onReady?.();
    this.rpc.sendQueued();
    this.readyDeferred.resolve(params);
    if (this._generation > 1 && this.lastExit) {
      this.events.emit('restarted', { restarts: this.restarts, exit: this.lastExit, ready: params });
    }
  }

  /**
   * The sidecar speaks protocol `actual` (from `source`: `sidecar.ready` or `initialize`): every
   * call is refused (kind `protocolMismatch`), the process is stopped (a shared one is detached
   * from) and never restarted.
   */
  refuseProtocol(actual: unknown, source: string): TaskmillError {
    if (this.refused) return this.refused;
    const err = clientError(
      'protocolMismatch',
      `the sidecar speaks protocol version ${String(actual)} (${source}), this client ` +
        `${PROTOCOL_VERSION}: install matching versions of the sidecar and @taskmill/client`,
      { expected: PROTOCOL_VERSION, actual },
    );
    this.refused = err;
    const prev = this.state;
    this.state = 'failed';
    if (this.backoffTimer !== undefined) clearTimeout(this.backoffTimer);
    this.reportError(err);
    this.rpc.rejectCalls('all', err);
    this.readyDeferred.reject(err);
    if (prev === 'starting' || prev === 'ready') {
      if (this.transport.sharedProcess) {
        void this.killTransport().then(() =>
          this.endProcess?.({ code: null, signal: null, error: 'detached' }),
        );
      } else {
        // Stop it the way close() does: it may already run recovered work.
        this.rpc.requestIgnoringAnswer('shutdown', { graceMs: this.closeGraceMs });
        const timer = setTimeout(
          () => void this.killTransport(),
          this.closeGraceMs + this.closeExtraMs,
        );
        void this.exitDeferred?.promise.then(() => clearTimeout(timer));
      }
    }
    return err;
  }

  // --- one process ---------------------------------------------------------------------------

  private spawn(): void {
    const gen = ++this._generation;
    this.state = 'starting';
    this.stdout = new LineDecoder(64 * 1024 * 1024, (n) =>
      this.reportError(new Error(`dropped a stdout line of more than ${n} chars`)),
    );
    this.stderr = new LineDecoder();
    this.exitDeferred = deferred<ExitInfo>();
    this.lastStderr = '';
    let exited = false;
    const onExit = (info: ExitInfo) => {
      if (exited || gen !== this._generation) return;
      exited = true;
      this.endProcess = null;
      this.handleExit(info);
    };
    this.endProcess = onExit;
    // A shared process is supervised by its owner: waiting for it is not a reason to give up.
    if (this.readyTimeoutMs > 0 && !this.transport.sharedProcess) {
      this.readyTimer = setTimeout(() => {
        if (gen !== this._generation || this.state !== 'starting') return;
        this.reportError(new Error(`no sidecar.ready within ${this.readyTimeoutMs} ms; killing it`));
        void this.killTransport();
      }, this.readyTimeoutMs);
    }
    try {
      const r = this.transport.start(
        (text) => {
          if (gen === this._generation && !exited) this.onStdout(text);
        },
        (text) => {
          if (gen === this._generation && !exited) this.onStderrText(text);
        },
        onExit,
        (error) => {
          if (gen === this._generation && !exited) this.reportError(error);
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
    for (const line of this.stdout.push(text)) this.rpc.receive(line);
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
    for (const line of this.stdout.flush()) this.rpc.receive(line);
    for (const line of this.stderr.flush()) this.logLine(line);
    if (this.readyTimer !== undefined) clearTimeout(this.readyTimer);
    const wasReady = this.state === 'ready';
    const uptime = wasReady ? Date.now() - this.readyAt : 0;
    this.lastExit = info;
    this.exitDeferred?.resolve(info);

    // Every host run of that process is over.
    this.executors.abortRuns(this.state === 'closing' ? 'closed' : 'sidecarExited');

    const why = describeExit(info);
    if (this.state === 'failed') {
      // Refused (protocol mismatch): the calls were failed then; nothing restarts.
      this.events.emit('exited', { ...info, willRestart: false });
      return;
    }
    const closing = this.state === 'closing';
    // In-flight calls cannot be answered any more.
    this.rpc.rejectCalls(
      'sent',
      closing
        ? clientError('closed', `the client closed before an answer (sidecar ${why})`)
        : clientError('sidecarExited', `the sidecar exited before answering (${why})`),
    );
    if (closing) {
      this.state = 'closed';
      this.events.emit('exited', { ...info, willRestart: false });
      return;
    }

    if (wasReady && uptime >= this.restartOpts.stableAfterMs) this.failures = 0;
    this.failures += 1;
    const fatal = info.code !== null && this.restartOpts.fatalExitCodes.includes(info.code);
    // A shared process is restarted by its owner, which says whether it will (then the client
    // re-attaches at once); otherwise the client's own policy decides.
    const owned = info.willRestart !== undefined;
    const canRestart = owned
      ? info.willRestart === true
      : this.restartOpts.enabled && !fatal && this.failures <= this.restartOpts.maxAttempts;
    if (!canRestart) {
      this.state = 'failed';
      const err = clientError('sidecarFailed', `the sidecar is gone (${this.failedWhy()})`);
      this.rpc.rejectCalls('all', err);
      if (!wasReady) this.readyDeferred.reject(err);
      this.events.emit('exited', { ...info, willRestart: false });
      return;
    }
    const delayMs = owned
      ? 0
      : Math.min(
          this.restartOpts.maxDelayMs,
          this.restartOpts.initialDelayMs * this.restartOpts.multiplier ** (this.failures - 1),
        );
    this.state = 'backoff';
    if (wasReady) this.readyDeferred = deferred<ReadyParams>();
    this.events.emit('exited', { ...info, willRestart: true, delayMs });
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
    const closedErr = clientError('closed', 'the client was closed');
    // Queued calls will never be sent.
    this.rpc.rejectCalls('queued', closedErr);
    if (prev !== 'starting' && prev !== 'ready') {
      this.state = 'closed';
      this.readyDeferred.reject(closedErr);
      // Between two processes of a shared sidecar the transport still listens: detach.
      if (this.transport.sharedProcess && prev !== 'idle') await this.killTransport();
      return;
    }
    const exit = this.exitDeferred!.promise;
    if (this.transport.sharedProcess) {
      // Not ours to stop (other windows use it): detach.
      await this.killTransport();
      this.endProcess?.({ code: null, signal: null, error: 'detached' });
      if (prev === 'starting') this.readyDeferred.reject(closedErr);
      return;
    }
    this.rpc.requestIgnoringAnswer('shutdown', { graceMs });
    const timedOut = Symbol('timeout');
    let timer: ReturnType<typeof setTimeout> | undefined;
    const waited = await Promise.race([
      exit,
      new Promise<typeof timedOut>((res) => {
        timer = setTimeout(() => res(timedOut), graceMs + this.closeExtraMs);
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
      this.endProcess?.({ code: null, signal: null, error: 'no exit reported after kill()' });
    }
    if (prev === 'starting') this.readyDeferred.reject(closedErr);
  }
}
