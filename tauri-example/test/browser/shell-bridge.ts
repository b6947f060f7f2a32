// Runs in the page before the app (bundled to an IIFE and added with `addInitScript`): Tauri's
// own `mockIPC` answers the app's IPC, and routes the shell plugin's commands to a real sidecar
// process that the Node side runs (functions exposed with `page.exposeFunction`):
//
//   plugin:shell|spawn        {program, args, options, onEvent: Channel} → pid
//   plugin:shell|stdin_write  {pid, buffer}
//   plugin:shell|kill         {cmd: 'killChild', pid}
//   sidecar_args, register_sidecar_pid   the app's own Rust commands (src-tauri/src/main.rs)
//
// The process's output comes back through `__tmDeliver(pid, events)` as the messages the
// plugin's Rust side sends over the Channel: {event: 'Stdout' | 'Stderr', payload: line},
// {event: 'Error', payload: message}, {event: 'Terminated', payload: {code, signal}}, each
// wrapped as {index, message} (the Channel's ordering envelope).
import { mockIPC, mockWindows } from '@tauri-apps/api/mocks';

export type ShellEvent =
  | { event: 'Stdout' | 'Stderr' | 'Error'; payload: string }
  | { event: 'Terminated'; payload: { code: number | null; signal: number | null } };

interface Bridge {
  __tmSidecarArgs(): Promise<string[]>;
  __tmRegisterPid(pid: number | null): Promise<void>;
  __tmSpawn(program: string, args: string[], options: unknown): Promise<number>;
  __tmWrite(pid: number, data: string | number[]): Promise<void>;
  __tmKill(pid: number): Promise<void>;
}

interface Internals {
  runCallback(id: number, data: unknown): void;
}

declare global {
  interface Window {
    __tmDeliver(pid: number, events: ShellEvent[]): void;
    __tmIpcLog: string[];
    __tmDeliverErrors: string[];
  }
}

const w = window as unknown as Window & Bridge & { __TAURI_INTERNALS__: Internals };

/** Per child: the Channel's callback id and the next message index; events held until spawn returned. */
const channels = new Map<number, { id: number; index: number }>();
const early = new Map<number, ShellEvent[]>();

function deliver(pid: number, events: ShellEvent[]): void {
  const ch = channels.get(pid);
  if (!ch) {
    early.set(pid, [...(early.get(pid) ?? []), ...events]);
    return;
  }
  for (const message of events) {
    try {
      w.__TAURI_INTERNALS__.runCallback(ch.id, { index: ch.index++, message });
    } catch (err) {
      // An exception out of the Channel's handler stalls the Channel for good (its next index
      // never advances): record it, for the test to show.
      w.__tmDeliverErrors.push(`${String(err)} ${(err as Error)?.stack ?? ''} on ${JSON.stringify(message).slice(0, 300)}`);
    }
  }
}

w.__tmDeliver = deliver;
w.__tmIpcLog = [];
w.__tmDeliverErrors = [];

mockWindows('main');
mockIPC(async (cmd, payload) => {
  const args = (payload ?? {}) as Record<string, any>;
  w.__tmIpcLog.push(cmd);
  switch (cmd) {
    case 'sidecar_args':
      return w.__tmSidecarArgs();
    case 'register_sidecar_pid':
      return w.__tmRegisterPid(typeof args.pid === 'number' ? args.pid : null);
    case 'plugin:shell|spawn': {
      const pid = await w.__tmSpawn(args.program, args.args, args.options);
      channels.set(pid, { id: args.onEvent.id, index: 0 });
      const held = early.get(pid);
      early.delete(pid);
      if (held) deliver(pid, held);
      return pid;
    }
    case 'plugin:shell|stdin_write':
      return w.__tmWrite(args.pid, args.buffer);
    case 'plugin:shell|kill':
      return w.__tmKill(args.pid);
    default:
      throw new Error(`command ${cmd} not allowed`);
  }
});
