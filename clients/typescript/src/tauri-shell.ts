// `@taskmill/client/tauri-shell`: a Transport over the Tauri v2 shell plugin (`Command.sidecar`),
// for apps whose page spawns the sidecar itself (most apps want `@taskmill/client/tauri`, where
// the Rust side owns it). The app's capability must allow `shell:allow-spawn` for the sidecar,
// best with every argument pinned as a fixed string (README.md shows one),
// `shell:allow-stdin-write` and `shell:allow-kill`.

import { Command, type Child, type SpawnOptions } from '@tauri-apps/plugin-shell';
import type { ExitInfo, Transport } from './transport.js';
import { TauriLineJoiner } from './framing.js';

export interface TauriTransportOptions {
  /** The `externalBin` entry, as in tauri.conf.json (default `binaries/taskmill-sidecar`). */
  program?: string;
  /**
   * Arguments (e.g. `['--db', path, '--parent-pid', pid]`); a function is called at every
   * (re)start and may be async (to look up the app data dir).
   */
  args?: string[] | (() => string[] | Promise<string[]>);
  spawnOptions?: SpawnOptions;
}

export class TauriTransport implements Transport {
  private child: Child | null = null;

  constructor(private readonly options: TauriTransportOptions = {}) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(
    onLine: (text: string) => void,
    onStderr: (text: string) => void,
    onExit: (info: ExitInfo) => void,
    onError?: (error: Error) => void,
  ): Promise<void> {
    const { program = 'binaries/taskmill-sidecar', args = [], spawnOptions } = this.options;
    const argv = typeof args === 'function' ? await args() : args;
    const command = Command.sidecar(program, argv, spawnOptions);
    let done = false;
    let child: Child | null = null;
    const stdout = new TauriLineJoiner((text) => {
      if (!done) onLine(text);
    });
    command.stdout.on('data', (line: string) => stdout.push(line));
    // Tauri strips the '\n' of each line; put it back for the client's framing.
    command.stderr.on('data', (line: string) => {
      if (!done) onStderr(line.endsWith('\n') ? line : line + '\n');
    });
    // Tauri reports a line it cannot decode as UTF-8 (and pipe failures) as 'error'; the
    // process goes on, so this is not an exit.
    command.on('error', (message: string) => {
      if (!done) onError?.(new Error(`sidecar output error: ${message}`));
    });
    command.on('close', ({ code, signal }) => {
      if (done) return;
      stdout.flush();
      done = true;
      if (child !== null && this.child === child) this.child = null;
      onExit({ code, signal });
    });
    child = await command.spawn();
    if (!done) this.child = child;
  }

  async write(line: string): Promise<void> {
    if (!this.child) throw new Error('the sidecar is not running');
    await this.child.write(line + '\n');
  }

  async kill(): Promise<void> {
    await this.child?.kill();
  }
}
