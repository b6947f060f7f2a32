// Runs in the page before the app (bundled to an IIFE and added with `addInitScript`): Tauri's
// own `mockIPC` (with its event mocking) answers the app's IPC the way the `taskmill` plugin's
// Rust side does, relaying to a real sidecar process that the Node side runs (functions exposed
// with `page.exposeFunction`):
//
//   plugin:taskmill|send   {message}   → one line to the sidecar's stdin
//   plugin:taskmill|state              → {state, restarts, lastExitCode, ready}
//   example_folder                     → the sample library (the app's own command: the folder
//                                        the Rust side allows the sidecar to touch)
//
// The sidecar's stdout lines and its state changes come back through `__tmDeliver(items)`,
// each emitted as the `taskmill://message` or `taskmill://state` event. Any other command (the
// shell plugin's spawn, a command taking a pid) is refused, as the app's capability does.
import { emit } from '@tauri-apps/api/event';
import { mockIPC, mockWindows } from '@tauri-apps/api/mocks';

export type Delivery = { event: 'taskmill://message'; payload: string } | { event: 'taskmill://state'; payload: unknown };

interface Bridge {
  __tmSend(message: string): Promise<void>;
  __tmState(): Promise<unknown>;
  __tmFolder(): Promise<string>;
}

declare global {
  interface Window {
    __tmDeliver(items: Delivery[]): void;
    __tmIpcLog: string[];
    __tmDeliverErrors: string[];
  }
}

const w = window as unknown as Window & Bridge;

w.__tmDeliver = (items) => {
  for (const { event, payload } of items) {
    // Synchronous up to the listeners (mockIPC handles `plugin:event|emit` in the call), so the
    // order of the sidecar's lines is kept.
    emit(event, payload).catch((err: unknown) => w.__tmDeliverErrors.push(`${String(err)} on ${event}`));
  }
};
w.__tmIpcLog = [];
w.__tmDeliverErrors = [];

mockWindows('main');
mockIPC(
  async (cmd, payload) => {
    const args = (payload ?? {}) as Record<string, any>;
    w.__tmIpcLog.push(cmd);
    switch (cmd) {
      case 'plugin:taskmill|send':
        if (typeof args.message !== 'string') throw 'message must be a string';
        await w.__tmSend(args.message);
        return null;
      case 'plugin:taskmill|state':
        return w.__tmState();
      case 'example_folder':
        return w.__tmFolder();
      default:
        throw `${cmd} not allowed. Command not found`;
    }
  },
  { shouldMockEvents: true },
);
