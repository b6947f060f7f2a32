// TauriTransport against a stand-in for @tauri-apps/plugin-shell (no Tauri runtime here).
import { describe, expect, it, vi } from 'vitest';

type Listener = (arg: any) => void;
class Emitter {
  private ls = new Map<string, Listener[]>();
  on(ev: string, l: Listener) {
    this.ls.set(ev, [...(this.ls.get(ev) ?? []), l]);
    return this;
  }
  emit(ev: string, arg: unknown) {
    for (const l of this.ls.get(ev) ?? []) l(arg);
  }
}

const shell = vi.hoisted(() => ({
  commands: [] as any[],
  writes: [] as unknown[],
  kills: 0,
}));

vi.mock('@tauri-apps/plugin-shell', () => {
  class Command extends Emitter {
    stdout = new Emitter();
    stderr = new Emitter();
    constructor(
      readonly program: string,
      readonly args: string[],
      readonly options: unknown,
    ) {
      super();
    }
    static sidecar(program: string, args: string[], options?: unknown) {
      const c = new Command(program, args, options);
      shell.commands.push(c);
      return c;
    }
    async spawn() {
      return {
        pid: 77,
        write: async (data: unknown) => {
          shell.writes.push(data);
        },
        kill: async () => {
          shell.kills += 1;
          this.emit('close', { code: null, signal: 9 });
        },
      };
    }
  }
  return { Command };
});

const { TauriTransport } = await import('../../src/tauri-shell.js');
const { TaskmillClient } = await import('../../src/client.js');

describe('TauriTransport', () => {
  it('spawns the sidecar, reassembles Tauri lines, writes lines, reports errors and exit', async () => {
    const errors: string[] = [];
    const logs: string[] = [];
    const transport = new TauriTransport({ args: async () => ['--db', '/data/tasks.db'] });
    const client = new TaskmillClient({
      transport,
      onError: (e) => errors.push(e.message),
      logger: (l) => logs.push(l),
      restart: { enabled: false },
    });
    const ready = client.start();
    await vi.waitFor(() => expect(shell.commands).toHaveLength(1));
    const cmd = shell.commands[0];
    expect(cmd.program).toBe('binaries/taskmill-sidecar');
    expect(cmd.args).toEqual(['--db', '/data/tasks.db']);
    await vi.waitFor(() => expect(transport.pid).toBe(77));

    // Tauri's line mode: one event per line, '\n' stripped, maybe '\r' left, maybe split
    const readyLine = JSON.stringify({
      jsonrpc: '2.0',
      method: 'sidecar.ready',
      params: { serverInfo: { name: 'taskmill-sidecar', version: '0' }, protocolVersion: 1, pid: 1, db: 'x', recovered: { requeued: 0 }, executors: [] },
    });
    cmd.stdout.emit('data', readyLine.slice(0, 20));
    cmd.stdout.emit('data', readyLine.slice(20) + '\r');
    await ready;
    cmd.stderr.emit('data', '{"event":"hello"}');
    expect(logs).toEqual(['{"event":"hello"}']);

    const ping = client.invoke('ping');
    await vi.waitFor(() => expect(shell.writes).toHaveLength(1));
    const sent = JSON.parse(String(shell.writes[0]));
    expect(String(shell.writes[0]).endsWith('\n')).toBe(true);
    cmd.stdout.emit('data', JSON.stringify({ jsonrpc: '2.0', id: sent.id, result: { now: 3 } }));
    await expect(ping).resolves.toEqual({ now: 3 });

    cmd.emit('error', 'invalid utf-8 sequence of 1 bytes from index 0');
    expect(errors).toEqual(['sidecar output error: invalid utf-8 sequence of 1 bytes from index 0']);

    const exited = client.waitFor('exited');
    await transport.kill();
    expect(shell.kills).toBe(1);
    expect(await exited).toMatchObject({ code: null, signal: 9, willRestart: false });
  });
});
