// `@taskmill/client/tauri`: the transport of a Tauri v2 app whose Rust side owns the sidecar
// (the `taskmill` plugin, crate `tauri-plugin-taskmill`). The page never spawns, signals or names
// a process; it reaches the one sidecar of the app through two plugin commands and two events:
//
//   plugin:taskmill|send  {message}  one JSON-RPC message to the sidecar's stdin (resolves null)
//   plugin:taskmill|state            {state, restarts, lastExitCode, ready}
//   taskmill://message               one JSON-RPC message from the sidecar (a string)
//   taskmill://state                 the `state` answer, on every change
//
// Several windows share the sidecar: the Rust side gives each window the answers to its own
// requests (`emit_to` that window) and every window the notifications, so this transport is
// "shared": `close()` detaches (no `shutdown`), and restarts are the Rust side's (the client
// re-attaches). It listens on its own window only (`getCurrentWebviewWindow().listen`): Tauri
// hands an event sent to one window to every listener registered for any target, which is what
// `listen` from `@tauri-apps/api/event` registers, so that one would also hear the answers meant
// for the other windows.

import { invoke as tauriInvoke } from '@tauri-apps/api/core';
import { getCurrentWebviewWindow } from '@tauri-apps/api/webviewWindow';
import type { ReadyParams } from './generated.js';
import type { ExitInfo, Transport } from './transport.js';

/** The plugin's command names (the `taskmill:default` permission grants exactly these). */
export const PLUGIN_COMMANDS = {
  send: 'plugin:taskmill|send',
  state: 'plugin:taskmill|state',
} as const;

/** The events the plugin emits to every window. */
export const PLUGIN_EVENTS = {
  message: 'taskmill://message',
  state: 'taskmill://state',
} as const;

/** What the Rust side says of its sidecar (`plugin:taskmill|state`, `taskmill://state`). */
export interface PluginState {
  state: 'starting' | 'running' | 'restarting' | 'stopped';
  /** Restarts so far. */
  restarts: number;
  /** Exit code of the last process that ended, if any. */
  lastExitCode: number | null;
  /** Params of the last `sidecar.ready` (so a window that loads late still learns them). */
  ready: ReadyParams | null;
}

/** Tauri's `invoke`, or a stand-in (tests). */
export type InvokeFn = (command: string, args?: Record<string, unknown>) => Promise<unknown>;
/**
 * Tauri's `listen` of the current window (it hands an `Event` and resolves with the unlisten
 * function), or a stand-in.
 */
export type ListenFn = (
  event: string,
  handler: (event: { payload: unknown }) => void,
) => Promise<() => void>;

export interface TauriPluginTransportOptions {
  /** Default: `invoke` from `@tauri-apps/api/core`. */
  invoke?: InvokeFn;
  /** Default: `getCurrentWebviewWindow().listen` (this window's events and the app-wide ones). */
  listen?: ListenFn;
  /** Called with every state the Rust side reports (e.g. to show "restarting..."). */
  onState?: (state: PluginState) => void;
}

const DETACHED: ExitInfo = {
  code: null,
  signal: null,
  error: 'detached from the sidecar',
  willRestart: false,
};

/** Messages kept between a restart and the client's re-attachment (more are dropped). */
const MAX_HELD = 10_000;

/** One attachment: the client's callbacks for one sidecar process. */
interface Sink {
  onLine: (text: string) => void;
  onExit: (info: ExitInfo) => void;
  onError: ((error: Error) => void) | undefined;
  /** The pid of the `sidecar.ready` delivered to it (no second one for the same process). */
  readyPid: number | null;
}

export class TauriPluginTransport implements Transport {
  readonly sharedProcess = true;
  private readonly invokeFn: InvokeFn;
  private readonly listenFn: ListenFn;
  private readonly onState: ((state: PluginState) => void) | undefined;
  /** The two event subscriptions, from the first `start` to `kill` (kept across restarts). */
  private unlisteners: (() => void)[] | null = null;
  private sink: Sink | null = null;
  /** Messages that came while no attachment was current (during a restart). */
  private held: string[] = [];
  private _state: PluginState | null = null;

  constructor(options: TauriPluginTransportOptions = {}) {
    this.invokeFn = options.invoke ?? ((cmd, args) => tauriInvoke(cmd, args));
    this.listenFn =
      options.listen ?? ((event, handler) => getCurrentWebviewWindow().listen(event, handler));
    this.onState = options.onState;
  }

  /** The last state the Rust side reported, or null before the first. */
  get state(): PluginState | null {
    return this._state;
  }

  /**
   * Attaches to the app's sidecar (the Rust side started it; it may be starting still). After
   * a restart the client attaches again; the messages of the gap are delivered then.
   */
  async start(
    onLine: (text: string) => void,
    _onStderr: (text: string) => void,
    onExit: (info: ExitInfo) => void,
    onError?: (error: Error) => void,
  ): Promise<void> {
    const sink: Sink = { onLine, onExit, onError, readyPid: null };
    this.sink = sink;
    try {
      if (this.unlisteners === null) {
        const offs: (() => void)[] = [];
        this.unlisteners = offs;
        offs.push(await this.listenFn(PLUGIN_EVENTS.message, (e) => this.onMessage(e.payload)));
        offs.push(await this.listenFn(PLUGIN_EVENTS.state, (e) => this.onStateChange(e.payload)));
        if (this.unlisteners !== offs) {
          // kill() came while subscribing
          for (const off of offs) off();
          return;
        }
      }
      for (const line of this.held.splice(0)) this.onMessage(line);
      const state = await this.invokeFn(PLUGIN_COMMANDS.state);
      if (this.sink === sink) this.onStateChange(state);
    } catch (err) {
      if (this.sink === sink) this.sink = null;
      throw err;
    }
  }

  /** Sends one message (no newline: the Rust side writes the line). */
  async write(line: string): Promise<void> {
    if (this.sink === null) throw new Error('not attached to the sidecar');
    try {
      await this.invokeFn(PLUGIN_COMMANDS.send, { message: line });
    } catch (err) {
      // Tauri rejects a command with the Rust side's error string.
      throw err instanceof Error ? err : new Error(String(err));
    }
  }

  /** Detaches this window (the sidecar goes on serving the others; the Rust side stops it). */
  kill(): void {
    const offs = this.unlisteners ?? [];
    this.unlisteners = null;
    this.held = [];
    for (const off of offs) off();
    this.end(DETACHED);
  }

  /** Ends the current attachment (the client sees the process's exit). */
  private end(info: ExitInfo): void {
    const sink = this.sink;
    if (sink === null) return;
    this.sink = null;
    sink.onExit(info);
  }

  private onMessage(payload: unknown): void {
    if (this.unlisteners === null) return;
    const sink = this.sink;
    if (typeof payload !== 'string') {
      sink?.onError?.(new Error(`${PLUGIN_EVENTS.message}: payload is not a string`));
      return;
    }
    if (sink === null) {
      // Between two processes: keep the notifications (and requests) of the next one. Answers
      // can only be the Rust side failing the previous process's calls, which the client
      // already failed when that process ended.
      if (this.held.length < MAX_HELD && !isResponse(payload)) this.held.push(payload);
      return;
    }
    const ready = readyIn(payload);
    if (ready) this.deliverReady(sink, ready);
    else sink.onLine(payload + '\n');
  }

  private deliverReady(sink: Sink, ready: ReadyParams): void {
    if (sink.readyPid === ready.pid) return;
    sink.readyPid = ready.pid;
    sink.onLine(JSON.stringify({ jsonrpc: '2.0', method: 'sidecar.ready', params: ready }) + '\n');
  }

  private onStateChange(payload: unknown): void {
    if (this.unlisteners === null) return;
    const st = payload as PluginState;
    this._state = st;
    const sink = this.sink;
    try {
      this.onState?.(st);
    } catch (err) {
      sink?.onError?.(err instanceof Error ? err : new Error(String(err)));
    }
    if (sink === null) return;
    if (st.state === 'running') {
      if (st.ready) this.deliverReady(sink, st.ready);
    } else if (st.state === 'stopped') {
      this.end({ code: st.lastExitCode, signal: null, willRestart: false });
    } else if (sink.readyPid !== null) {
      // The process this window used is gone and the Rust side starts another.
      this.end({ code: st.lastExitCode, signal: null, willRestart: true });
    }
  }
}

/** The params of a `sidecar.ready` notification, or null for any other message. */
function readyIn(line: string): ReadyParams | null {
  if (!line.includes('"sidecar.ready"')) return null;
  try {
    const msg = JSON.parse(line) as { method?: unknown; params?: unknown };
    if (msg.method === 'sidecar.ready' && typeof msg.params === 'object' && msg.params !== null) {
      return msg.params as ReadyParams;
    }
  } catch {
    // not JSON: the client's framing reports it
  }
  return null;
}

/** True for a JSON-RPC response (an object with `id` and no `method`). */
function isResponse(line: string): boolean {
  try {
    const msg = JSON.parse(line) as unknown;
    return typeof msg === 'object' && msg !== null && !('method' in msg) && 'id' in msg;
  } catch {
    return false;
  }
}
