// The Tauri plugin transport over Tauri's own `invoke`/`listen` (from @tauri-apps/api), their IPC
// answered by Tauri's `mockIPC` with event mocking: a stand-in for the Rust side of the
// `taskmill` plugin that records `send`, answers `state` and emits `taskmill://message` and
// `taskmill://state` the way the plugin contract says.
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import type { PluginState } from '../../src/tauri.js';
import { READY_PARAMS, flush } from '../helpers/fake-transport.js';

// @tauri-apps/api talks to `window.__TAURI_INTERNALS__`; Node has no window.
(globalThis as { window?: unknown }).window ??= globalThis;

const { mockIPC, mockWindows, clearMocks } = await import('@tauri-apps/api/mocks');
const { emit } = await import('@tauri-apps/api/event');
const { TauriPluginTransport, PLUGIN_COMMANDS, PLUGIN_EVENTS } = await import('../../src/tauri.js');
const { TaskmillClient } = await import('../../src/client.js');

/** The Rust side, as the page sees it through IPC. */
class FakePlugin {
  sent: Record<string, any>[] = [];
  commands: string[] = [];
  state: PluginState = { state: 'starting', restarts: 0, lastExitCode: null, ready: null };
  /** When set, `send` is rejected with this string (as Tauri rejects a command's Err). */
  sendError: string | null = null;
  onSend: ((msg: Record<string, any>) => void) | null = null;

  install(): void {
    mockIPC(
      (cmd, args) => {
        this.commands.push(cmd);
        if (cmd === PLUGIN_COMMANDS.state) return this.state;
        if (cmd === PLUGIN_COMMANDS.send) {
          if (this.sendError) throw this.sendError;
          const message = (args as { message: string }).message;
          const msg = JSON.parse(message) as Record<string, any>;
          this.sent.push(msg);
          this.onSend?.(msg);
          return null;
        }
        throw new Error(`unexpected command ${cmd}`);
      },
      { shouldMockEvents: true },
    );
  }

  async message(msg: unknown): Promise<void> {
    await emit(PLUGIN_EVENTS.message, JSON.stringify(msg));
  }

  async setState(patch: Partial<PluginState>): Promise<void> {
    this.state = { ...this.state, ...patch };
    await emit(PLUGIN_EVENTS.state, this.state);
  }

  /** The sidecar started and announced itself: `sidecar.ready` to every window, then the state. */
  async ready(params: Partial<typeof READY_PARAMS> = {}): Promise<void> {
    const ready = { ...READY_PARAMS, ...params };
    await this.message({ jsonrpc: '2.0', method: 'sidecar.ready', params: ready });
    await this.setState({ state: 'running', ready });
  }

  requests(method: string) {
    return this.sent.filter((m) => m.method === method && 'id' in m);
  }
}

let plugin: FakePlugin;
beforeAll(() => {
  // mockIPC needs crypto.getRandomValues (Node has it on globalThis.crypto).
  expect(typeof globalThis.crypto.getRandomValues).toBe('function');
});
beforeEach(() => {
  mockWindows('main');
  plugin = new FakePlugin();
  plugin.install();
});
afterEach(() => {
  clearMocks();
});

function client(options: { onState?: (s: PluginState) => void } = {}) {
  const errors: Error[] = [];
  const transport = new TauriPluginTransport(options);
  const c = new TaskmillClient({ transport, onError: (e) => errors.push(e), timeoutMs: 5000 });
  return { client: c, transport, errors };
}

describe('TauriPluginTransport', () => {
  it('waits for the sidecar the Rust side starts, then sends calls through plugin:taskmill|send', async () => {
    plugin.onSend = (msg) => {
      if (msg.method === 'ping') void plugin.message({ jsonrpc: '2.0', id: msg.id, result: { now: 5 } });
    };
    const { client: c } = client();
    const answer = c.invoke('ping');
    await flush();
    // (mockIPC consumes the two `plugin:event|listen` itself)
    expect(plugin.commands).toEqual([PLUGIN_COMMANDS.state]);
    expect(plugin.sent).toEqual([]); // queued until sidecar.ready
    await plugin.ready();
    await expect(answer).resolves.toEqual({ now: 5 });
    expect(plugin.requests('ping')).toHaveLength(1);
    expect(c.readyInfo).toMatchObject({ pid: READY_PARAMS.pid });
  });

  it('a window that loads after sidecar.ready learns it from plugin:taskmill|state', async () => {
    plugin.state = { state: 'running', restarts: 0, lastExitCode: null, ready: { ...READY_PARAMS, pid: 99 } };
    const seen: number[] = [];
    const { client: c } = client();
    c.on('sidecar.ready', (r) => seen.push(r.pid));
    await expect(c.start()).resolves.toMatchObject({ pid: 99 });
    // the same ready arriving live as well is not delivered twice
    await plugin.ready({ pid: 99 });
    expect(seen).toEqual([99]);
  });

  it('delivers the sidecar notifications to on() as typed params', async () => {
    const { client: c } = client();
    const started = c.start();
    await flush();
    await plugin.ready();
    await started;
    const progress: unknown[] = [];
    c.on('task.progress', (p) => progress.push(p));
    const params = { id: 3, type: 'copy', progress: { fraction: 0.5, estimated: false } };
    await plugin.message({ jsonrpc: '2.0', method: 'task.progress', params });
    expect(progress).toEqual([params]);
  });

  it('follows the Rust side through a restart: exited, then restarted with the new ready', async () => {
    const states: string[] = [];
    const { client: c } = client({ onState: (s) => states.push(s.state) });
    const events: string[] = [];
    c.on('exited', (e) => events.push(`exited ${e.code} ${e.willRestart}`));
    c.on('restarted', (e) => events.push(`restarted ${e.ready.pid}`));
    const started = c.start();
    await flush();
    await plugin.ready({ pid: 1 });
    await started;
    const inflight = c.invoke('task.get', { id: 1 }).catch((e: unknown) => e);
    await flush();
    await plugin.setState({ state: 'restarting', restarts: 1, lastExitCode: 1, ready: null });
    expect(await inflight).toMatchObject({ kind: 'sidecarExited' });
    await flush();
    await plugin.setState({ state: 'starting' });
    await plugin.ready({ pid: 2 });
    await vi.waitFor(() => expect(events).toEqual(['exited 1 true', 'restarted 2']));
    expect(c.isReady).toBe(true);
    expect(states).toContain('restarting');
  });

  it('gives up when the Rust side stopped the sidecar for good (exit code 3)', async () => {
    plugin.state = { state: 'stopped', restarts: 0, lastExitCode: 3, ready: null };
    const { client: c } = client();
    await expect(c.start()).rejects.toMatchObject({ kind: 'sidecarFailed' });
    await expect(c.invoke('ping')).rejects.toMatchObject({ kind: 'sidecarFailed' });
    expect(plugin.sent).toEqual([]);
  });

  it('close() detaches: no shutdown is sent (other windows share the sidecar)', async () => {
    const { client: c } = client();
    const started = c.start();
    await flush();
    await plugin.ready();
    await started;
    await c.close();
    expect(plugin.sent.filter((m) => m.method === 'shutdown')).toEqual([]);
    // events after close reach no handler and are not an error
    const progress: unknown[] = [];
    c.on('task.progress', (p) => progress.push(p));
    await plugin.message({ jsonrpc: '2.0', method: 'task.progress', params: { id: 1 } });
    expect(progress).toEqual([]);
    await expect(c.invoke('ping')).rejects.toMatchObject({ kind: 'closed' });
  });

  it('refuses a sidecar of another protocol version and detaches without shutdown', async () => {
    const { client: c, errors } = client();
    const started = c.start().catch((e: unknown) => e);
    await flush();
    await plugin.ready({ protocolVersion: 999 });
    expect(await started).toMatchObject({ kind: 'protocolMismatch' });
    await flush();
    expect(plugin.sent).toEqual([]);
    expect(errors.map((e) => e.message).join()).toContain('protocol version 999');
  });

  it('a rejected send fails the call with the Rust side\'s message', async () => {
    const { client: c } = client();
    const started = c.start();
    await flush();
    await plugin.ready();
    await started;
    plugin.sendError = 'no sidecar is running';
    await expect(c.invoke('ping')).rejects.toThrow('no sidecar is running');
  });

  it('answers a host executor request through send, unchanged', async () => {
    const { client: c } = client();
    const started = c.start();
    await flush();
    await plugin.ready();
    await started;
    plugin.onSend = (msg) => {
      if (msg.method === 'executor.register') void plugin.message({ jsonrpc: '2.0', id: msg.id, result: {} });
    };
    await c.onTask('host.echo', async (ctx) => ({ echoed: ctx.payload }));
    expect(plugin.requests('executor.register')[0]!.params).toMatchObject({ type: 'host.echo' });
    const task = {
      id: 7, type: 'host.echo', state: 'running', priority: 128, payload: { a: 1 }, tags: {},
      ioCost: {}, attempt: 0, maxRetries: 0, createdAt: 1,
    };
    await plugin.message({ jsonrpc: '2.0', id: 'x-1', method: 'task.execute', params: { task } });
    await vi.waitFor(() => expect(plugin.sent.some((m) => m.id === 'x-1')).toBe(true));
    expect(plugin.sent.find((m) => m.id === 'x-1')).toEqual({
      jsonrpc: '2.0',
      id: 'x-1',
      result: { result: { echoed: { a: 1 } } },
    });
  });

  it('can run on injected invoke/listen functions instead of @tauri-apps/api', async () => {
    const handlers = new Map<string, (e: { payload: unknown }) => void>();
    const calls: [string, unknown][] = [];
    const transport = new TauriPluginTransport({
      invoke: async (cmd, args) => {
        calls.push([cmd, args]);
        return cmd === PLUGIN_COMMANDS.state
          ? { state: 'running', restarts: 0, lastExitCode: null, ready: READY_PARAMS }
          : null;
      },
      listen: async (event, handler) => {
        handlers.set(event, handler);
        return () => handlers.delete(event);
      },
    });
    const c = new TaskmillClient({ transport });
    await c.start();
    const ping = c.invoke('ping');
    await flush();
    const sent = calls.find(([cmd]) => cmd === PLUGIN_COMMANDS.send)![1] as { message: string };
    expect(sent.message.endsWith('\n')).toBe(false);
    const id = JSON.parse(sent.message).id;
    handlers.get(PLUGIN_EVENTS.message)!({ payload: JSON.stringify({ jsonrpc: '2.0', id, result: { now: 1 } }) });
    await expect(ping).resolves.toEqual({ now: 1 });
    await c.close();
    expect(handlers.size).toBe(0); // unlistened
  });

  it('keeps what the Rust side sends between a restart and the re-attachment', async () => {
    const handlers = new Map<string, (e: { payload: unknown }) => void>();
    let state: PluginState = { state: 'running', restarts: 0, lastExitCode: null, ready: { ...READY_PARAMS, pid: 1 } };
    const transport = new TauriPluginTransport({
      invoke: async (cmd) => (cmd === PLUGIN_COMMANDS.state ? state : null),
      listen: async (event, handler) => {
        handlers.set(event, handler);
        return () => handlers.delete(event);
      },
    });
    const errors: Error[] = [];
    const c = new TaskmillClient({ transport, onError: (e) => errors.push(e) });
    await c.start();
    const progress: number[] = [];
    c.on('task.progress', (p) => progress.push(p.id));
    const setState = (s: PluginState) => handlers.get(PLUGIN_EVENTS.state)!({ payload: (state = s) });
    const message = (m: unknown) => handlers.get(PLUGIN_EVENTS.message)!({ payload: JSON.stringify(m) });
    // All in one go, before the client's re-attachment (a timer) can run:
    setState({ state: 'restarting', restarts: 1, lastExitCode: 1, ready: null });
    // the Rust side fails the calls the previous process left (the client failed them already)
    message({ jsonrpc: '2.0', id: 1, error: { code: -32603, message: 'the sidecar ended' } });
    const ready2 = { ...READY_PARAMS, pid: 2 };
    message({ jsonrpc: '2.0', method: 'sidecar.ready', params: ready2 });
    setState({ state: 'running', restarts: 1, lastExitCode: 1, ready: ready2 });
    message({ jsonrpc: '2.0', method: 'task.progress', params: { id: 8, type: 't', progress: {} } });
    expect(c.isReady).toBe(false);
    await vi.waitFor(() => expect(c.isReady).toBe(true));
    expect(c.readyInfo?.pid).toBe(2);
    expect(progress).toEqual([8]);
    expect(c.restartCount).toBe(1);
    expect(errors).toEqual([]); // the stale answer was dropped, not reported as unexpected
  });

  it('waits for a slow start of the Rust side without giving up (no ready timeout)', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const handlers = new Map<string, (e: { payload: unknown }) => void>();
      const transport = new TauriPluginTransport({
        invoke: async () => ({ state: 'starting', restarts: 0, lastExitCode: null, ready: null }),
        listen: async (event, handler) => {
          handlers.set(event, handler);
          return () => handlers.delete(event);
        },
      });
      const c = new TaskmillClient({ transport, readyTimeoutMs: 1000, timeoutMs: 0 });
      const started = c.start();
      await vi.advanceTimersByTimeAsync(60_000);
      handlers.get(PLUGIN_EVENTS.state)!({
        payload: { state: 'running', restarts: 0, lastExitCode: null, ready: READY_PARAMS },
      });
      await expect(started).resolves.toMatchObject({ pid: READY_PARAMS.pid });
    } finally {
      vi.useRealTimers();
    }
  });

  it('close() while the Rust side restarts the sidecar stops listening too', async () => {
    const handlers = new Map<string, (e: { payload: unknown }) => void>();
    const transport = new TauriPluginTransport({
      invoke: async () => ({ state: 'running', restarts: 0, lastExitCode: null, ready: READY_PARAMS }),
      listen: async (event, handler) => {
        handlers.set(event, handler);
        return () => handlers.delete(event);
      },
    });
    const c = new TaskmillClient({ transport });
    await c.start();
    handlers.get(PLUGIN_EVENTS.state)!({
      payload: { state: 'restarting', restarts: 1, lastExitCode: 1, ready: null },
    });
    await c.close(); // before the client re-attached
    expect(handlers.size).toBe(0);
  });

  it('listens with its own window as the target (Tauri then withholds the answers meant for other windows)', async () => {
    clearMocks();
    mockWindows('second', 'main');
    const targets: unknown[] = [];
    mockIPC((cmd, args) => {
      if (cmd === 'plugin:event|listen') {
        const a = args as { event: string; target: unknown };
        targets.push([a.event, a.target]);
        return targets.length;
      }
      if (cmd === PLUGIN_COMMANDS.state) return { state: 'starting', restarts: 0, lastExitCode: null, ready: null };
      return null;
    });
    const transport = new TauriPluginTransport();
    await transport.start(() => {}, () => {}, () => {});
    const own = { kind: 'WebviewWindow', label: 'second' };
    expect(targets).toEqual([
      [PLUGIN_EVENTS.message, own],
      [PLUGIN_EVENTS.state, own],
    ]);
  });
});
