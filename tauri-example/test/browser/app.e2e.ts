// The built frontend in headless Chromium, over a REAL sidecar, with Tauri's IPC mocked.
//
//   npm run test:browser     (needs /usr/bin/chromium, or CHROMIUM_PATH; no browser download)
//
// Vite builds dist/, a small HTTP server serves it on 127.0.0.1, playwright-core drives
// Debian's chromium. Before the app's script runs, shell-bridge.ts installs Tauri's `mockIPC`
// in place of tauri-plugin-taskmill's Rust side: the Node side starts `TASKMILL_SIDECAR_CMD` or
// `TASKMILL_PYTHON -m sidecar` (default ../.venv/bin/python) with the arguments the Rust side
// would compute, `plugin:taskmill|send` writes to its stdin and its stdout lines come back as
// `taskmill://message` events. The compiled app itself is tested by test/app/app.e2e.ts.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { build } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, sidecarArgv } from '../helpers/sidecar.js';

const PKG = resolve(import.meta.dirname, '..', '..');
const DIST = join(PKG, 'dist');
/** Where the screenshot goes (the committed screenshots/app.png is the real app's, test/app). */
const SCREENSHOT = process.env.TASKMILL_SCREENSHOT ?? join(tmpdir(), 'taskmill-browser-app.png');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SAMPLE_FILES = 18;
const SIM_SECONDS = 12;

/** The sidecar command without its arguments (the app supplies those, as in Tauri). */
function sidecarCommand(): string[] {
  // sidecarArgv appends `--db <db>`; drop it, the page passes its own `--db`.
  return sidecarArgv('').slice(0, -2);
}

/** What tauri-plugin-taskmill's Rust side does, for one window: one sidecar, its lines as events. */
class PluginBridge {
  child: ChildProcessWithoutNullStreams | null = null;
  /** How many times a sidecar was started. */
  starts = 0;
  readonly stderr: string[] = [];
  readonly deliveryFailures: string[] = [];
  /** The sidecar's stdout lines as they left the process (the last 20,000). */
  readonly stdout: string[] = [];
  private state: { state: string; restarts: number; lastExitCode: number | null; ready: unknown } = {
    state: 'starting', restarts: 0, lastExitCode: null, ready: null,
  };
  private chain: Promise<unknown> = Promise.resolve();
  private queue: string[] = [];
  private flushing = false;

  constructor(private readonly page: Page, private readonly args: string[], private readonly folder: string) {}

  async install(): Promise<void> {
    const p = this.page;
    await p.exposeFunction('__tmSend', (message: string) => this.send(message));
    await p.exposeFunction('__tmState', () => this.state);
    await p.exposeFunction('__tmFolder', () => this.folder);
  }

  /** Starts the sidecar, as the plugin does at the app's setup (before the page loads). */
  start(): void {
    const [command, ...prefix] = sidecarCommand();
    const child = spawn(command!, [...prefix, ...this.args], { cwd: REPO_ROOT, stdio: 'pipe' });
    this.child = child;
    this.starts += 1;
    const lines = (stream: NodeJS.ReadableStream, onLine: (line: string) => void) => {
      let rest = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        const parts = (rest + chunk).split('\n');
        rest = parts.pop()!;
        for (const line of parts) if (line.trim()) onLine(line);
      });
    };
    lines(child.stdout, (line) => {
      if (this.stdout.push(line) > 20_000) this.stdout.splice(0, 10_000);
      if (line.includes('"method":"sidecar.ready"')) {
        this.setState({ state: 'running', ready: JSON.parse(line).params });
      }
      this.deliver(line);
    });
    lines(child.stderr, (line) => void this.stderr.push(line));
    child.on('close', (code) => this.setState({ state: 'stopped', lastExitCode: code, ready: null }));
  }

  private send(message: string): Promise<void> {
    const value: unknown = JSON.parse(message); // the plugin refuses anything but JSON
    if (typeof value !== 'object' || value === null) return Promise.reject(new Error('not a JSON-RPC message'));
    const child = this.child;
    if (!child || child.exitCode !== null) return Promise.reject(new Error('the Taskmill sidecar is not running'));
    return new Promise((res, rej) => child.stdin.write(message + '\n', (err) => (err ? rej(err) : res())));
  }

  private setState(change: Partial<PluginBridge['state']>): void {
    this.state = { ...this.state, ...change };
    const state = this.state;
    this.chain = this.chain
      .then(() => this.page.evaluate((s) => window.__tmEmitState(s), state))
      .catch((err: unknown) => void this.deliveryFailures.push(String(err)));
  }

  /** Queues lines and hands them to the page in order, a batch per evaluate. */
  private deliver(line: string): void {
    this.queue.push(line);
    if (this.flushing) return;
    this.flushing = true;
    setImmediate(() => {
      this.flushing = false;
      const batch = this.queue;
      this.queue = [];
      this.chain = this.chain
        .then(() => this.page.evaluate((l) => window.__tmDeliver(l), batch))
        .catch((err: unknown) => void this.deliveryFailures.push(String(err))); // e.g. no page yet
    });
  }

  /** Ends the sidecar: stdin EOF (its graceful shutdown), then SIGKILL after 8 s. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((res) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 8000);
      child.once('close', () => {
        clearTimeout(timer);
        res();
      });
      child.stdin.end();
    });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function serve(dir: string): Promise<Server> {
  const types: Record<string, string> = {
    '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.png': 'image/png',
  };
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = resolve(dir, '.' + (path === '/' ? '/index.html' : path));
    if (!file.startsWith(dir + sep) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    createReadStream(file).pipe(res);
  });
  return new Promise((res) => server.listen(0, '127.0.0.1', () => res(server)));
}

async function bundleBridge(): Promise<string> {
  const out = await build({
    configFile: false,
    logLevel: 'warn',
    build: {
      write: false,
      minify: false,
      lib: { entry: join(import.meta.dirname, 'shell-bridge.ts'), formats: ['iife'], name: 'TaskmillShellBridge' },
    },
  });
  const outputs = (Array.isArray(out) ? out : [out]) as { output: { type: string; code?: string }[] }[];
  const chunk = outputs[0]!.output.find((o) => o.type === 'chunk');
  return chunk!.code!;
}

function sampleLibrary(root: string): string[] {
  const files: string[] = [];
  for (let i = 0; i < SAMPLE_FILES; i++) {
    const dir = join(root, i % 3 === 0 ? '' : i % 3 === 1 ? '2024' : join('2025', 'trip'));
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `photo-${String(i).padStart(3, '0')}.jpg`);
    writeFileSync(file, randomBytes(64 * 1024 + i * 40 * 1024));
    files.push(file);
  }
  return files;
}

describe('the example app in Chromium, over a real sidecar', () => {
  let base: string;
  let library: string;
  let files: string[];
  let server: Server;
  let context: BrowserContext;
  let page: Page;
  let bridge: PluginBridge;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
    await build({ root: PKG, logLevel: 'warn' });
    base = mkdtempSync(join(tmpdir(), 'taskmill-browser-'));
    library = join(base, 'library');
    files = sampleLibrary(library);
    mkdirSync(join(base, 'data'));
    server = await serve(DIST);
    const args = ['--parent-pid', String(process.pid), '--db', join(base, 'data', 'tasks.db'), '--allow-path', library, '--log-level', 'info',
      '--log-file', join(base, 'logs', 'sidecar.log')];
    context = await chromium.launchPersistentContext(join(base, 'chromium-profile'), {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 800 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (err) => pageErrors.push(String(err)));
    page.on('console', (msg) => {
      if (msg.type() === 'error') pageErrors.push(msg.text());
    });
    bridge = new PluginBridge(page, args, library);
    await bridge.install();
    bridge.start();
    await page.addInitScript({ content: await bundleBridge() });
    const { port } = server.address() as AddressInfo;
    await page.goto(`http://127.0.0.1:${port}/`);
  }, 90_000);

  afterAll(async () => {
    await context?.close().catch(() => undefined);
    await bridge?.stop();
    server?.close();
    if (bridge) {
      const pid = bridge.child?.pid;
      if (pid !== undefined) expect(alive(pid), `sidecar ${pid} still running`).toBe(false);
    }
    if (base) rmSync(base, { recursive: true, force: true });
  }, 30_000);

  const row = (id: number) => page.locator(`tr[data-task-id="${id}"]`);
  const count = async (state: string) => Number(await page.locator(`[data-count="${state}"] .n`).textContent());
  const waitState = (id: number, state: string, timeout = 20_000) =>
    page.waitForSelector(`tr[data-task-id="${id}"][data-state="${state}"]`, { timeout });
  const progressOf = async (id: number) => Number(await row(id).locator('.fill').getAttribute('data-progress'));
  const rowIds = (selector: string) =>
    page.$$eval(selector, (trs) => trs.map((tr) => Number((tr as HTMLElement).dataset.taskId)));

  it('drives real work: submit → progress → pause → resume → cancel, scan + hash + copy', async () => {
    // The app asked Rust for its args and spawned the sidecar with them; the scope allowed it.
    await page.waitForSelector('[data-testid="sidecar-status"][data-state="ready"]', { timeout: 30_000 });
    expect(bridge.starts).toBe(1);
    expect(await page.locator('#folder').inputValue()).toBe(library);

    // Simulated work: three sleep tasks (normal, background, high) start and move.
    await page.fill('#sim-count', '3');
    await page.fill('#sim-seconds', String(SIM_SECONDS));
    await page.click('#btn-simulate');
    await page.waitForFunction(() => document.querySelectorAll('tr[data-state="running"]').length === 3, null, { timeout: 20_000 });
    const [a, b, c] = (await rowIds('tr[data-state="running"]')).sort((x, y) => x - y) as [number, number, number];
    await page.waitForFunction((id) => Number(document.querySelector(`tr[data-task-id="${id}"] .fill`)?.getAttribute('data-progress')) > 0, a, { timeout: 15_000 });
    const before = await progressOf(a);
    await page.waitForFunction(
      ([id, p]) => Number(document.querySelector(`tr[data-task-id="${id}"] .fill`)?.getAttribute('data-progress')) > p,
      [a, before] as const, { timeout: 15_000 });
    expect(await progressOf(a)).toBeGreaterThan(before);
    expect(await row(a).locator('.meta').textContent()).toMatch(/% · .*(left|elapsed)/);

    // Pause task a: it shows paused, with a Resume button, and the count says so.
    await row(a).locator('button[data-action="pause"]').click();
    await waitState(a, 'paused');
    expect(await row(a).locator('.pill').textContent()).toBe('Paused');
    await expect.poll(() => count('paused'), { timeout: 5000 }).toBe(1);

    // Scan & hash the sample folder: one scan, one hash per file, all completed.
    await page.click('#btn-scan');
    await page.waitForFunction(
      (n) => [...document.querySelectorAll('tr[data-state="completed"] .c-task .sub')].filter((e) => e.textContent!.startsWith('fs.hash')).length === n,
      SAMPLE_FILES, { timeout: 40_000 });
    await page.waitForSelector('tr[data-state="completed"] >> text=Scan & hash library', { timeout: 20_000 });

    // Copy files: every scanned file lands in the backup folder.
    await page.click('#btn-copy');
    try {
      await page.waitForFunction(
        (n) => [...document.querySelectorAll('tr[data-state="completed"] .c-task .sub')].filter((e) => e.textContent!.startsWith('fs.copy')).length === n,
        SAMPLE_FILES, { timeout: 90_000 });
    } catch (e) {
      // Seen once in CI and not reproduced since: say what the app showed, for the next look.
      console.log('copy step timed out; rows:\n' + await page.evaluate(() =>
        [...document.querySelectorAll('tr[data-task-id]')].map((r) =>
          `${r.getAttribute('data-task-id')} ${r.getAttribute('data-state')} ${r.querySelector('.c-task .sub')?.textContent} ${r.querySelector('.meta')?.textContent}`).join('\n')));
      console.log('page text tail:\n' + await page.evaluate(() => document.body.innerText.slice(-1500)));
      console.log('delivery failures: ' + JSON.stringify(bridge.deliveryFailures) + '\nevent handler errors: '
        + JSON.stringify(await page.evaluate(() => window.__tmDeliverErrors)));
      // What the sidecar wrote about each task the page still shows as running: did its
      // task.completed leave the process?
      const stuck = await rowIds('tr[data-state="running"]');
      for (const id of stuck) {
        console.log(`stdout lines about task ${id}:\n` + bridge.stdout
          .filter((l) => l.includes(`"id":${id},`) || l.includes(`"id":${id}}`))
          .map((l) => l.slice(0, 200)).join('\n'));
      }
      // Ask the sidecar where its tasks wait (SIGUSR1: a state dump and every task's await
      // chain on stderr), then show that.
      const seen = bridge.stderr.length;
      bridge.child?.kill('SIGUSR1');
      await new Promise((r) => setTimeout(r, 1000));
      console.log('sidecar state dump:\n' + bridge.stderr.slice(seen)
        .filter((l) => l.includes('state dump') || (l.includes('task stack') && !l.includes('_run_coro"]')))
        .join('\n'));
      throw e;
    }
    const backup = join(library, 'taskmill-backup');
    for (const f of files) {
      const copy = join(backup, f.slice(library.length + 1));
      expect(existsSync(copy), copy).toBe(true);
      expect(statSync(copy).size).toBe(statSync(f).size);
    }

    // Resume a; cancel b; raise c (background → high).
    await row(a).locator('button[data-action="resume"]').click();
    await page.waitForSelector(`tr[data-task-id="${a}"]:is([data-state="running"],[data-state="pending"],[data-state="completed"])`, { timeout: 10_000 });
    await expect.poll(() => count('paused'), { timeout: 5000 }).toBe(0);
    await row(b).locator('button[data-action="cancel"]').click();
    await waitState(b, 'cancelled');
    expect(await row(b).locator('.pill').textContent()).toBe('Cancelled');
    const cPrio = await row(c).locator('.badge').textContent();
    if ((await row(c).getAttribute('data-state')) === 'running') {
      await row(c).locator('button[data-action="raise"]').click();
      await page.waitForFunction(
        ([id, old]) => document.querySelector(`tr[data-task-id="${id}"] .badge`)?.textContent !== old, [c, cPrio] as const);
    }

    // Group and global pause toggle the scheduler's filters.
    await page.click('li[data-group="demo"] button');
    await page.waitForSelector('li[data-group="demo"].paused');
    await page.click('li[data-group="demo"] button');
    await page.waitForSelector('li[data-group="demo"]:not(.paused)');
    await page.click('#btn-pause-all');
    await page.waitForFunction(() => document.querySelector('#btn-pause-all')?.textContent === 'Resume all');
    await page.click('#btn-pause-all');
    await page.waitForFunction(() => document.querySelector('#btn-pause-all')?.textContent === 'Pause all');

    // Counts agree with the work done.
    await expect.poll(() => count('cancelled'), { timeout: 5000 }).toBe(1);
    expect(await count('completed')).toBeGreaterThanOrEqual(2 * SAMPLE_FILES + 1);
    expect(await count('failed')).toBe(0);
    expect(await count('paused')).toBe(0);

    // More work in flight for the picture, then the screenshot at 1280×800.
    await page.fill('#sim-count', '4');
    await page.click('#btn-simulate');
    await page.waitForFunction(() => document.querySelectorAll('tr[data-state="running"] .fill[data-progress]:not([data-progress="0.0000"])').length >= 3, null, { timeout: 20_000 });
    const p = await page.waitForFunction(() => {
      const fill = [...document.querySelectorAll<HTMLElement>('tr[data-state="running"] .fill')]
        .find((f) => Number(f.dataset.progress) >= 0.2);
      return fill ? Number(fill.closest<HTMLElement>('tr')!.dataset.taskId) : 0;
    }, null, { timeout: 20_000 });
    const pid = (await p.jsonValue()) as number;
    await row(pid).locator('button[data-action="pause"]').click();
    await waitState(pid, 'paused');
    expect(await row(pid).locator('.meta').textContent()).toMatch(/^Paused at [1-9]\d?%$/);
    await page.waitForTimeout(600); // let the bars' width transition settle
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT });

    expect(bridge.starts).toBe(1); // no restart happened
    expect(pageErrors).toEqual([]);
  }, 110_000);
});
