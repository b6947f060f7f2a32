import type { ExitInfo, Transport } from '../../src/client.js';

export type Message = Record<string, any>;

export const READY_PARAMS = {
  serverInfo: { name: 'taskmill-sidecar', version: '0.1.0' },
  protocolVersion: 1,
  pid: 4242,
  db: '/tmp/fake.db',
  recovered: { requeued: 0 },
  executors: ['noop', 'sleep'],
};

/** An in-memory sidecar: records what the client writes, lets the test write stdout/stderr. */
export class FakeTransport implements Transport {
  starts = 0;
  kills = 0;
  alive = false;
  /** Raw lines the client wrote, over all processes. */
  written: string[] = [];
  /** Parsed messages the client wrote, over all processes. */
  sent: Message[] = [];
  /** Called for each parsed message written (e.g. to auto-answer). */
  onMessage: ((msg: Message) => void) | null = null;
  /** Called at each start (e.g. to announce ready). */
  onStart: ((fake: FakeTransport) => void) | null = null;
  /** When set, `kill()` does not report the exit (a hung process). */
  ignoreKill = false;
  private cb: {
    onLine: (t: string) => void;
    onStderr: (t: string) => void;
    onExit: (i: ExitInfo) => void;
    onError?: (e: Error) => void;
  } | null = null;

  start(
    onLine: (t: string) => void,
    onStderr: (t: string) => void,
    onExit: (i: ExitInfo) => void,
    onError?: (e: Error) => void,
  ): void {
    this.starts += 1;
    this.alive = true;
    this.cb = { onLine, onStderr, onExit, onError };
    this.onStart?.(this);
  }

  write(line: string): void {
    if (!this.alive) throw new Error('not running');
    this.written.push(line);
    const msg = JSON.parse(line) as Message;
    this.sent.push(msg);
    this.onMessage?.(msg);
  }

  kill(): void {
    this.kills += 1;
    if (!this.ignoreKill) this.exit({ code: null, signal: 'SIGKILL' });
  }

  // --- the sidecar's side ---

  stdout(text: string): void {
    this.cb?.onLine(text);
  }

  stderr(text: string): void {
    this.cb?.onStderr(text);
  }

  error(message: string): void {
    this.cb?.onError?.(new Error(message));
  }

  send(msg: unknown): void {
    this.stdout(JSON.stringify(msg) + '\n');
  }

  ready(params: Partial<typeof READY_PARAMS> = {}): void {
    this.send({ jsonrpc: '2.0', method: 'sidecar.ready', params: { ...READY_PARAMS, ...params } });
  }

  event(method: string, params: unknown): void {
    this.send({ jsonrpc: '2.0', method, params });
  }

  reply(id: unknown, result: unknown): void {
    this.send({ jsonrpc: '2.0', id, result });
  }

  replyError(id: unknown, code: number, message: string, data?: unknown): void {
    this.send({ jsonrpc: '2.0', id, error: { code, message, data } });
  }

  exit(info: ExitInfo = { code: 0, signal: null }): void {
    if (!this.alive) return;
    this.alive = false;
    const cb = this.cb;
    this.cb = null;
    cb?.onExit(info);
  }

  /** Requests (with an id) the client wrote, optionally of one method. */
  requests(method?: string): Message[] {
    return this.sent.filter((m) => 'id' in m && 'method' in m && (!method || m.method === method));
  }

  notifications(method?: string): Message[] {
    return this.sent.filter((m) => !('id' in m) && 'method' in m && (!method || m.method === method));
  }

  responses(): Message[] {
    return this.sent.filter((m) => !('method' in m));
  }

  last(method: string): Message {
    const all = this.requests(method);
    if (all.length === 0) throw new Error(`no ${method} request written`);
    return all[all.length - 1]!;
  }
}

/** Lets pending promise callbacks run. */
export async function flush(times = 5): Promise<void> {
  for (let i = 0; i < times; i++) await Promise.resolve();
  await new Promise((r) => setImmediate(r));
}
