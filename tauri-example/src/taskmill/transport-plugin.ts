// A Transport over the Taskmill Tauri plugin (tauri-plugin-taskmill, ../../taskmill-tauri): the
// Rust side runs the sidecar; this page only sends messages (`plugin:taskmill|send`) and hears
// its lines (`taskmill://message`, scoped to this window) and its state (`taskmill://state`).
// The page needs the `taskmill:default` permission and nothing of the shell plugin.
//
// The Rust side restarts the sidecar itself; for the client, a sidecar that ends is an exit
// (it then calls `start` again, which attaches to the restarted sidecar). `kill` cannot end
// the sidecar from the page: it detaches this client.

import { invoke } from '@tauri-apps/api/core';
import type { Event, UnlistenFn } from '@tauri-apps/api/event';
import { getCurrentWebviewWindow } from '@tauri-apps/api/webviewWindow';
import type { ExitInfo, Transport } from './transport.js';

/** The answer of `plugin:taskmill|state` and the payload of `taskmill://state`. */
export interface PluginState {
  state: 'starting' | 'running' | 'restarting' | 'stopped';
  restarts: number;
  lastExitCode: number | null;
  ready: Record<string, unknown> | null;
}

export class PluginTransport implements Transport {
  private detach: (() => void) | null = null;

  async start(
    onLine: (text: string) => void,
    _onStderr: (text: string) => void,
    onExit: (info: ExitInfo) => void,
  ): Promise<void> {
    this.detach?.();
    const unlisten: UnlistenFn[] = [];
    let done = false;
    let live = false;
    const finish = (info: ExitInfo) => {
      if (done) return;
      done = true;
      for (const stop of unlisten) stop();
      if (this.detach === detach) this.detach = null;
      onExit(info);
    };
    const detach = () => finish({ code: null, signal: null, error: 'detached from the sidecar' });
    this.detach = detach;
    const onState = (s: PluginState) => {
      if (s.state === 'starting' || s.state === 'running') live = true;
      else if (live || s.state === 'stopped') finish({ code: s.lastExitCode, signal: null });
    };
    // Responses come only to the window that asked: listen on this window, not on any target.
    const win = getCurrentWebviewWindow();
    unlisten.push(
      await win.listen<string>('taskmill://message', (e: Event<string>) => {
        if (!done) onLine(e.payload + '\n');
      }),
    );
    unlisten.push(await win.listen<PluginState>('taskmill://state', (e: Event<PluginState>) => onState(e.payload)));
    if (done) return;
    const now = await invoke<PluginState>('plugin:taskmill|state');
    onState(now);
    // A page that loads after `sidecar.ready` (a second window, a reload) learns it here.
    if (!done && now.state === 'running' && now.ready) {
      onLine(JSON.stringify({ jsonrpc: '2.0', method: 'sidecar.ready', params: now.ready }) + '\n');
    }
  }

  async write(line: string): Promise<void> {
    await invoke('plugin:taskmill|send', { message: line });
  }

  kill(): void {
    this.detach?.();
  }
}
