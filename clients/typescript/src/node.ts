// A Transport over Node's child_process: for tests, scripts and CLI tools.

import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import type { ExitInfo, Transport } from './transport.js';

export interface NodeTransportOptions {
  /** The program: the frozen `taskmill-sidecar` binary, or a Python interpreter. */
  command: string;
  /** Its arguments, e.g. `['-m', 'sidecar', '--db', path]`; a function is called at each start. */
  args?: string[] | (() => string[]);
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export class NodeTransport implements Transport {
  private child: ChildProcessWithoutNullStreams | null = null;

  constructor(private readonly options: NodeTransportOptions) {}

  /** The pid of the running process, if any. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  start(
    onLine: (text: string) => void,
    onStderr: (text: string) => void,
    onExit: (info: ExitInfo) => void,
  ): Promise<void> {
    const { command, args = [], cwd, env } = this.options;
    const argv = typeof args === 'function' ? args() : args;
    const child = spawn(command, argv, {
      cwd,
      env: env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      windowsHide: true,
    });
    this.child = child;
    let done = false;
    const finish = (info: ExitInfo) => {
      if (done) return;
      done = true;
      if (this.child === child) this.child = null;
      onExit(info);
    };
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (text: string) => {
      if (!done) onLine(text);
    });
    child.stderr.on('data', (text: string) => {
      if (!done) onStderr(text);
    });
    child.stdin.on('error', () => {
      // EPIPE after the process died: the exit is reported by 'close'.
    });
    // 'close' comes after stdout/stderr ended, so every answer is read before the exit.
    child.on('close', (code, signal) => finish({ code, signal }));
    return new Promise((resolve) => {
      child.once('spawn', () => resolve());
      child.once('error', (err) => {
        // Spawn failure (ENOENT...) or a failed kill: report it as the end of this process.
        if (child.pid === undefined) finish({ code: null, signal: null, error: String(err) });
        resolve();
      });
    });
  }

  write(line: string): Promise<void> {
    const child = this.child;
    if (!child || !child.stdin.writable) {
      return Promise.reject(new Error('the sidecar is not running'));
    }
    return new Promise((resolve, reject) => {
      child.stdin.write(line + '\n', (err) => (err ? reject(err) : resolve()));
    });
  }

  kill(): void {
    this.child?.kill('SIGKILL');
  }

  /** Closes stdin (the sidecar shuts down gracefully on EOF). */
  endInput(): void {
    this.child?.stdin.end();
  }
}
