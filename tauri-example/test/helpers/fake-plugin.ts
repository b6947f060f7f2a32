// The Rust side of the `taskmill` Tauri plugin, as a page sees it: `invoke` and `listen`
// functions to hand to `TauriPluginTransport` (the way an app's own tests can run its page
// code without Tauri). It records what the page sends and lets the test play the sidecar.
import type { ReadyParams } from '@taskmill/client';
import type { InvokeFn, ListenFn, PluginState } from '@taskmill/client/tauri';

export type Message = Record<string, any>;

export const READY: ReadyParams = {
  serverInfo: { name: 'taskmill-sidecar', version: '0.1.0' },
  protocolVersion: 1,
  pid: 4242,
  db: '/tmp/fake.db',
  recovered: { requeued: 0 },
  executors: ['noop', 'sleep'],
};

export class FakePlugin {
  /** What the page sent through `plugin:taskmill|send`, parsed. */
  sent: Message[] = [];
  state: PluginState = { state: 'starting', restarts: 0, lastExitCode: null, ready: null };
  private handlers = new Map<string, Set<(e: { payload: unknown }) => void>>();

  readonly invoke: InvokeFn = async (cmd, args) => {
    if (cmd === 'plugin:taskmill|state') return this.state;
    if (cmd === 'plugin:taskmill|send') {
      this.sent.push(JSON.parse((args as { message: string }).message) as Message);
      return null;
    }
    throw `unknown command ${cmd}`;
  };

  readonly listen: ListenFn = async (event, handler) => {
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  };

  /** Emits `taskmill://message` for each message, synchronously, in order. */
  deliver(...messages: unknown[]): void {
    for (const m of messages) {
      for (const h of this.handlers.get('taskmill://message') ?? []) h({ payload: JSON.stringify(m) });
    }
  }

  ready(params: Partial<ReadyParams> = {}): void {
    const ready = { ...READY, ...params };
    this.deliver({ jsonrpc: '2.0', method: 'sidecar.ready', params: ready });
    this.state = { ...this.state, state: 'running', ready };
    for (const h of this.handlers.get('taskmill://state') ?? []) h({ payload: this.state });
  }

  event(method: string, params: unknown): void {
    this.deliver({ jsonrpc: '2.0', method, params });
  }

  reply(id: unknown, result: unknown): void {
    this.deliver({ jsonrpc: '2.0', id, result });
  }

  requests(method: string): Message[] {
    return this.sent.filter((m) => 'id' in m && m.method === method);
  }

  last(method: string): Message {
    const all = this.requests(method);
    if (all.length === 0) throw new Error(`no ${method} request sent`);
    return all[all.length - 1]!;
  }
}

/** Lets pending promise callbacks run. */
export async function flush(times = 5): Promise<void> {
  for (let i = 0; i < times; i++) await Promise.resolve();
  await new Promise((r) => setImmediate(r));
}
