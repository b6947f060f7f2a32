// Starts the REAL sidecar through the Node transport.
//   TASKMILL_SIDECAR_CMD  a command line (e.g. the frozen binary); `--db PATH` is appended
//   TASKMILL_PYTHON       the interpreter for `python -m sidecar` (default ../.venv/bin/python)
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { TaskmillClient, type ClientOptions } from '../../src/client.js';
import { NodeTransport } from '../../src/node.js';

export const REPO_ROOT = resolve(import.meta.dirname, '..', '..', '..', '..');

/** Splits a shell-style command line (quotes and backslash escapes; no expansions). */
export function splitCommand(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quote: '"' | "'" | null = null;
  let any = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === quote) quote = null;
      else if (c === '\\' && quote === '"' && i + 1 < line.length) cur += line[++i];
      else cur += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      any = true;
    } else if (c === '\\' && i + 1 < line.length) {
      cur += line[++i];
      any = true;
    } else if (/\s/.test(c)) {
      if (any || cur) out.push(cur);
      cur = '';
      any = false;
    } else {
      cur += c;
    }
  }
  if (any || cur) out.push(cur);
  return out;
}

export function sidecarArgv(db: string, extra: string[] = []): string[] {
  const cmd = process.env.TASKMILL_SIDECAR_CMD;
  if (cmd) return [...splitCommand(cmd), '--db', db, ...extra];
  const python =
    process.env.TASKMILL_PYTHON ??
    (process.platform === 'win32'
      ? join(REPO_ROOT, '.venv', 'Scripts', 'python.exe')
      : join(REPO_ROOT, '.venv', 'bin', 'python'));
  if (!existsSync(python)) {
    throw new Error(
      `no Python for the sidecar at ${python}: run \`python3 dev.py test\` or set TASKMILL_PYTHON`,
    );
  }
  return [python, '-m', 'sidecar', '--db', db, ...extra];
}

export interface Harness {
  client: TaskmillClient;
  transport: NodeTransport;
  dir: string;
  db: string;
  errors: Error[];
  stderr: string[];
  dispose(): Promise<void>;
}

export function startSidecar(
  extraArgs: string[] = [],
  options: Partial<Omit<ClientOptions, 'transport'>> = {},
): Harness {
  const dir = mkdtempSync(join(tmpdir(), 'taskmill-ts-'));
  const db = join(dir, 'tasks.db');
  const [command, ...args] = sidecarArgv(db, extraArgs);
  const transport = new NodeTransport({ command: command!, args, cwd: REPO_ROOT });
  const errors: Error[] = [];
  const stderr: string[] = [];
  const client = new TaskmillClient({
    transport,
    timeoutMs: 15_000,
    restart: { initialDelayMs: 100, maxDelayMs: 2000 },
    onError: (e, d) => errors.push(d?.line ? new Error(`${e.message}: ${d.line}`) : e),
    logger: (line) => stderr.push(line),
    ...options,
  });
  return {
    client,
    transport,
    dir,
    db,
    errors,
    stderr,
    async dispose() {
      await client.close({ graceMs: 500 });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
