// Runs in the page before the app (bundled to an IIFE and added with `addInitScript`): Tauri's
// own `mockIPC`, with its event mocking, stands in for the Rust side of tauri-plugin-taskmill
// and routes to a real sidecar process that the Node side runs (functions exposed with
// `page.exposeFunction`):
//
//   plugin:taskmill|send   {message}  → __tmSend(message): written to the sidecar's stdin
//   plugin:taskmill|state             → __tmState()
//   example_folder                    → __tmFolder() (the app's own command)
//
// The sidecar's stdout lines come back through `__tmDeliver(lines)` as the plugin sends them:
// one `taskmill://message` event (a string payload) per line; its state changes through
// `__tmEmitState(state)` as `taskmill://state`. Anything else (the shell plugin above all) is
// refused, as the app's capability refuses it.
import { emit } from '@tauri-apps/api/event';
import { mockIPC, mockWindows } from '@tauri-apps/api/mocks';

interface Bridge {
  __tmSend(message: string): Promise<void>;
  __tmState(): Promise<unknown>;
  __tmFolder(): Promise<string>;
}

declare global {
  interface Window {
    __tmDeliver(lines: string[]): Promise<void>;
    __tmEmitState(state: unknown): Promise<void>;
    __tmIpcLog: string[];
    __tmDeliverErrors: string[];
  }
}

const w = window as unknown as Window & Bridge;

w.__tmIpcLog = [];
w.__tmDeliverErrors = [];
w.__tmDeliver = async (lines) => {
  for (const line of lines) {
    try {
      await emit('taskmill://message', line);
    } catch (err) {
      w.__tmDeliverErrors.push(`${String(err)} on ${line.slice(0, 300)}`);
    }
  }
};
w.__tmEmitState = (state) => emit('taskmill://state', state);

mockWindows('main');
mockIPC(
  async (cmd, payload) => {
    const args = (payload ?? {}) as Record<string, any>;
    w.__tmIpcLog.push(cmd);
    switch (cmd) {
      case 'plugin:taskmill|send':
        return w.__tmSend(String(args.message));
      case 'plugin:taskmill|state':
        return w.__tmState();
      case 'example_folder':
        return w.__tmFolder();
      default:
        throw new Error(`${cmd} not allowed. Command not found`);
    }
  },
  { shouldMockEvents: true },
);
