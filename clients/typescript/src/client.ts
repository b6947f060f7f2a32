// The typed Taskmill client: `TaskmillClient` and every public name of the shim. It wires three
// parts, layered like the sidecar itself: the JSON-RPC core (`jsonrpc.ts`: ids, pending calls,
// answers, the sidecar's notifications and requests), the supervisor (`supervisor.ts`: spawn,
// `sidecar.ready`, restart with backoff, graceful close) and host executors (`hostexec.ts`:
// `onTask` and `task.execute`), with `events.ts` delivering events and `errors.ts` holding the
// errors. No Tauri or Node imports here: the transport is injected.

import { errorReporter, forMethod, type ReportError } from './errors.js';
import {
  EventHub,
  type AnyEventHandler,
  type ClientEventName,
  type ClientEvents,
  type EventHandler,
  type Unsubscribe,
} from './events.js';
import {
  PROTOCOL_VERSION,
  type EventsConfigureParams,
  type ExecutorCancelParams,
  type Method,
  type MethodParams,
  type MethodResult,
  type ReadyParams,
  type MetricsReport,
  type Schedule,
  type ScheduleSpec,
  type TaskInfo,
} from './generated.js';
import { HostExecutors, type TaskHandler } from './hostexec.js';
import { JsonRpcPeer, type InvokeOptions } from './jsonrpc.js';
import { Supervisor, type RestartOptions } from './supervisor.js';
import type { Transport } from './transport.js';

export type * from './generated.js';
export { ERROR_CODES, EVENT_NAMES, METHOD_NAMES, PROTOCOL_VERSION } from './generated.js';
export type { ExitInfo, Transport } from './transport.js';
export { CLIENT_ERROR_CODES, TaskmillError } from './errors.js';
export type {
  AnyEventHandler,
  ClientEventName,
  ClientEvents,
  EventHandler,
  ExitedEvent,
  RestartedEvent,
  Unsubscribe,
} from './events.js';
export {
  TaskCancelledError,
  TaskError,
  type CancelReason,
  type ProgressUpdate,
  type TaskContext,
  type TaskHandler,
} from './hostexec.js';
export type { InvokeOptions } from './jsonrpc.js';
export type { RestartOptions } from './supervisor.js';

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

type ParamsArgs<M extends Method> = {} extends MethodParams<M>
  ? [params?: MethodParams<M>, options?: InvokeOptions]
  : [params: MethodParams<M>, options?: InvokeOptions];

export class TaskmillClient {
  private readonly timeoutMs: number;
  private readonly events: EventHub;
  private readonly rpc: JsonRpcPeer;
  private readonly executors: HostExecutors;
  private readonly supervisor: Supervisor;
  /** The selection `configureEvents` keeps for every process (null: never called). */
  private eventSelection: EventsConfigureParams | null = null;
  /** Pressure sources `setPressure` set: level and when each lapses (ms, this clock). */
  private readonly pressure = new Map<string, { level: number; until: number }>();
  private readonly reportError: ReportError;

  constructor(options: ClientOptions) {
    const transport = options.transport;
    const reportError = errorReporter(options.onError);
    this.reportError = reportError;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.events = new EventHub(reportError);
    this.rpc = new JsonRpcPeer(
      {
        write: (line) => transport.write(line),
        canSend: () => this.supervisor.isReady,
        onNotification: (method, params) => this.handleNotification(method, params),
        requestHandlers: new Map([
          ['task.execute', (requestId, params) => this.executors.execute(requestId, params)],
        ]),
        reportError,
      },
      this.timeoutMs,
    );
    this.executors = new HostExecutors({
      request: (method, params) => this.request(method, params),
      start: () => this.supervisor.start(),
      isReady: () => this.supervisor.isReady,
      generation: () => this.supervisor.generation,
      respond: (requestId, body) => this.rpc.respond(requestId, body),
      notify: (method, params) => {
        if (this.supervisor.acceptsNotifications) this.rpc.notify(method, params);
      },
      reportError,
    });
    this.supervisor = new Supervisor(transport, options, {
      rpc: this.rpc,
      events: this.events,
      executors: this.executors,
      onReady: () => {
        this.resendEventSelection();
        this.resendPressure();
      },
      reportError,
    });
  }

  /** The latest `sidecar.ready` params, or null before the first one. */
  get readyInfo(): ReadyParams | null {
    return this.supervisor.readyInfo;
  }

  /** True between `sidecar.ready` and the process's exit. */
  get isReady(): boolean {
    return this.supervisor.isReady;
  }

  /** How many times the sidecar was restarted. */
  get restartCount(): number {
    return this.supervisor.restartCount;
  }

  /**
   * Starts the sidecar (once; `invoke` calls it for you) and resolves with `sidecar.ready`.
   * After a restart the promise of the current process is returned.
   */
  start(): Promise<ReadyParams> {
    return this.supervisor.start();
  }

  /** Calls a sidecar method. Calls made before `sidecar.ready` are queued and sent after it. */
  invoke<M extends Method>(method: M, ...args: ParamsArgs<M>): Promise<MethodResult<M>> {
    const [params, options] = args as [MethodParams<M> | undefined, InvokeOptions | undefined];
    return this.request(method, params ?? {}, options) as Promise<MethodResult<M>>;
  }

  /**
   * Subscribes to an event (`task.progress`, ..., the client's own `restarted` and `exited`,
   * or `'*'` for all of them). The handler gets the event's params (typed by the event's name)
   * and the name; it is called synchronously as the message is read, and an exception out of it
   * goes to `onError`. Returns the unsubscribe function (no promise, unlike Tauri's `listen`).
   */
  on<E extends ClientEventName>(event: E, handler: EventHandler<E>): Unsubscribe;
  on(event: '*', handler: AnyEventHandler): Unsubscribe;
  on(event: string, handler: (params: never, event: never) => void): Unsubscribe {
    return this.events.on(event, handler);
  }

  /** Resolves with the next `event` whose params satisfy `predicate` (rejects on timeout). */
  waitFor<E extends ClientEventName>(
    event: E,
    predicate: (params: ClientEvents[E]) => boolean = () => true,
    timeoutMs = this.timeoutMs,
  ): Promise<ClientEvents[E]> {
    return this.events.waitFor(event, predicate, timeoutMs);
  }

  /**
   * Chooses the events this client receives (`events.configure`): `exclude` names events not to
   * send (not `sidecar.*`, and only names in `capabilities.events`), `batchSubmitted: true` turns
   * each `task.submitBatch`'s `task.submitted` events into one `task.batchSubmitted {ids, count}`.
   * Each call replaces the whole selection (`configureEvents()` sends everything again). Unlike
   * `invoke('events.configure', ...)`, the selection is kept and sent again to a restarted
   * sidecar (a sidecar forgets it when it exits) before the calls queued for it.
   */
  async configureEvents(selection: EventsConfigureParams = {}): Promise<void> {
    await this.request('events.configure', selection);
    this.eventSelection = selection; // (a refused selection is not kept)
  }

  // --- recurring schedules (feature "schedules") ---------------------------------------------

  /** Creates a recurring schedule (`schedule.create`): `everyMs` or `cron`, exactly one. */
  createSchedule(spec: ScheduleSpec): Promise<Schedule> {
    return this.invoke('schedule.create', spec);
  }

  /** Every schedule, by id (`schedule.list`). */
  async listSchedules(): Promise<Schedule[]> {
    return (await this.invoke('schedule.list', {})).schedules;
  }

  /** One schedule by id (a number) or name (a string); rejects with `scheduleNotFound`. */
  getSchedule(ref: number | string): Promise<Schedule> {
    return this.invoke('schedule.get', scheduleRef(ref));
  }

  /** Stops a schedule firing until resumed (`nextAt` absent meanwhile). */
  pauseSchedule(ref: number | string): Promise<Schedule> {
    return this.invoke('schedule.pause', scheduleRef(ref));
  }

  /** Fires again from the first time after now; nothing fires for the paused time. */
  resumeSchedule(ref: number | string): Promise<Schedule> {
    return this.invoke('schedule.resume', scheduleRef(ref));
  }

  /** Removes a schedule; the tasks it submitted stay. */
  async deleteSchedule(ref: number | string): Promise<void> {
    await this.invoke('schedule.delete', scheduleRef(ref));
  }

  /**
   * The task of `type` with this dedup key (`task.lookup`): the active one, else the final one
   * that finished last — "was this file already uploaded?". Rejects with `TaskmillError` of
   * code -32001 (`taskNotFound`) when there is none.
   */
  lookup(type: string, dedupKey: string, options?: InvokeOptions): Promise<TaskInfo> {
    return this.invoke('task.lookup', { type, dedupKey }, options);
  }

  /** Counters since the sidecar started and gauges now (`scheduler.metrics`). */
  metrics(options?: InvokeOptions): Promise<MetricsReport> {
    return this.invoke('scheduler.metrics', {}, options);
  }

  /**
   * Reports host pressure from `source` (`scheduler.setPressure`): `level` 0..1 (0 removes the
   * source), live for `ttlMs` (default 60 s) unless set again. While the level reaches a
   * throttle tier, less urgent work waits. Unlike `invoke('scheduler.setPressure', ...)`, a
   * source still live is sent again, with the time it has left, to a restarted sidecar (a
   * sidecar does not persist pressure).
   */
  async setPressure(source: string, level: number, ttlMs = 60_000): Promise<void> {
    await this.request('scheduler.setPressure', { source, level, ttlMs });
    if (level > 0) this.pressure.set(source, { level, until: Date.now() + ttlMs });
    else this.pressure.delete(source);
  }

  /**
   * Runs tasks of `type` in this process (a host executor): sends `executor.register` now and
   * after every restart, and answers the sidecar's `task.execute` with the handler's result.
   * Resolves when registered; the returned function unregisters.
   */
  onTask(
    type: string,
    handler: TaskHandler,
    options: { concurrency?: number } = {},
  ): Promise<() => Promise<void>> {
    return this.executors.onTask(type, handler, options);
  }

  /**
   * Stops the sidecar: sends `shutdown {graceMs}`, waits for the exit up to the grace period
   * (plus `closeExtraMs`), then kills it. Pending calls are rejected (kind `closed`).
   */
  close(options: { graceMs?: number } = {}): Promise<void> {
    return this.supervisor.close(options);
  }

  /** At `sidecar.ready` of a restarted process: the kept event selection, before queued calls. */
  private resendEventSelection(): void {
    const selection = this.eventSelection;
    if (selection === null || this.supervisor.generation < 2) return;
    this.rpc
      .request('events.configure', selection)
      .catch((err: unknown) =>
        this.reportError(new Error(`re-sending events.configure failed: ${String(err)}`)),
      );
  }

  /** At `sidecar.ready` of a restarted process: the pressure sources still live. */
  private resendPressure(): void {
    if (this.supervisor.generation < 2) return;
    const now = Date.now();
    for (const [source, { level, until }] of this.pressure) {
      if (until <= now) {
        this.pressure.delete(source);
        continue;
      }
      this.rpc
        .request('scheduler.setPressure', { source, level, ttlMs: until - now })
        .catch((err: unknown) =>
          this.reportError(new Error(`re-sending scheduler.setPressure failed: ${String(err)}`)),
        );
    }
  }

  /** Every call (`invoke`, host executor registration) goes through here. */
  private request(method: string, params: unknown, options: InvokeOptions = {}): Promise<unknown> {
    const refused = this.supervisor.refusal();
    if (refused) return Promise.reject(forMethod(refused, method));
    this.supervisor.startIfIdle();
    const answer = this.rpc.request(method, params, options);
    if (method !== 'initialize') return answer;
    return answer.then((result) => {
      const version = (result as { protocolVersion?: unknown }).protocolVersion;
      if (version !== PROTOCOL_VERSION) {
        throw forMethod(this.supervisor.refuseProtocol(version, 'initialize'), method);
      }
      return result;
    });
  }

  /** A notification concerns the supervisor or host executors first, then the listeners. */
  private handleNotification(method: string, params: unknown): void {
    if (method === 'sidecar.ready') this.supervisor.handleReady(params as ReadyParams);
    else if (method === 'executor.cancel') this.executors.cancel(params as ExecutorCancelParams);
    this.events.emit(method as ClientEventName, params as never);
  }
}

/** `{id}` for a number, `{name}` for a string (the params of `schedule.get` and its siblings). */
function scheduleRef(ref: number | string): { id: number } | { name: string } {
  return typeof ref === 'number' ? { id: ref } : { name: ref };
}
