// The real app, end to end: the compiled example (src-tauri, with the frontend embedded) under
// Xvfb, driven by tauri-driver + WebKitWebDriver over plain W3C WebDriver. The app's Rust side
// spawns the real frozen sidecar through the shell plugin; the page has no shell permission.
//
//   TASKMILL_APP_BIN   the built app (cargo build --features custom-protocol)
//   TAURI_DRIVER       tauri-driver (default ~/.cargo/bin/tauri-driver)
//   TASKMILL_ADMIN     the admin CLI, to read the database after the app exited
//                      (default <repo>/.venv/bin/taskmill)
//   TASKMILL_SCREENSHOT where the window's screenshot goes (default screenshots/app.png)
//
// Run by .ci/tauri.sh (`npm run test:app` inside xvfb-run); needs a DISPLAY.
import { spawn, execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Session, sleep, waitReady } from './webdriver.js';

const PKG = resolve(import.meta.dirname, '..', '..');
const REPO = resolve(PKG, '..');
const APP = process.env.TASKMILL_APP_BIN ?? '';
const DRIVER = process.env.TAURI_DRIVER ?? join(homedir(), '.cargo', 'bin', 'tauri-driver');
const ADMIN = process.env.TASKMILL_ADMIN ?? join(REPO, '.venv', 'bin', 'taskmill');
const SCREENSHOT = process.env.TASKMILL_SCREENSHOT ?? join(PKG, 'screenshots', 'app.png');
const IDENTIFIER = 'dev.taskmill.example';
const SAMPLE_FILES = 12;

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });
}

/** A process that exists and is not a zombie. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function ppid(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

function cmdline(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
}

function argAfter(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

async function until(what: string, check: () => boolean, timeoutMs: number): Promise<number> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
  return Date.now() - start;
}

function sampleLibrary(root: string): string[] {
  const files: string[] = [];
  for (let i = 0; i < SAMPLE_FILES; i++) {
    const dir = join(root, i % 2 === 0 ? '' : '2025');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `photo-${String(i).padStart(3, '0')}.jpg`);
    writeFileSync(file, randomBytes(64 * 1024 + i * 32 * 1024));
    files.push(file);
  }
  return files;
}

/** A fresh home for the app: its data, its logs and the folder it allows. */
function appEnv(home: string): Record<string, string> {
  return {
    HOME: home,
    XDG_DATA_HOME: join(home, '.local', 'share'),
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_CACHE_HOME: join(home, '.cache'),
    // The example app opens a second window on the same sidecar.
    TASKMILL_EXAMPLE_SECOND_WINDOW: '1',
  };
}

interface PluginState {
  state: string;
  restarts: number;
  lastExitCode: number | null;
  ready: { pid: number; protocolVersion: number; db: string } | null;
}

/** Calls a Tauri command from the page, as any page script could. */
const INVOKE = `
  const done = arguments[arguments.length - 1];
  window.__TAURI_INTERNALS__.invoke(arguments[0], arguments[1]).then(
    (value) => done({ ok: true, value }),
    (error) => done({ ok: false, why: String(error && error.message ? error.message : error) }));`;

const started = Date.now();
/** Marks the test's progress in its output (a hang then names its step). */
function step(name: string): void {
  console.log(`step ${name} at ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

type Invoked = { ok: true; value: unknown } | { ok: false; why: string };

describe('the real Tauri app under Xvfb (tauri-driver + WebKitWebDriver)', () => {
  let home: string;
  let library: string;
  let files: string[];
  let driver: ChildProcessWithoutNullStreams;
  let base: string;
  let log = '';
  const sessions: Session[] = [];

  const dataDir = () => join(home, '.local', 'share', IDENTIFIER);
  const db = () => join(dataDir(), 'tasks.db');

  beforeAll(async () => {
    if (!APP || !existsSync(APP)) throw new Error(`set TASKMILL_APP_BIN to the built app (got ${JSON.stringify(APP)})`);
    if (!existsSync(DRIVER)) throw new Error(`no tauri-driver at ${DRIVER}: cargo install tauri-driver --locked`);
    if (!process.env.DISPLAY) throw new Error('no DISPLAY: run under xvfb-run');
    home = mkdtempSync(join(tmpdir(), 'taskmill-app-'));
    library = join(home, 'library');
    files = sampleLibrary(library);
    const port = await freePort();
    const nativePort = await freePort();
    base = `http://127.0.0.1:${port}`;
    // A fresh home: the app's data, logs and the folder it allows (no XDG Pictures folder
    // there, so the scan root is this home).
    driver = spawn(DRIVER, ['--port', String(port), '--native-port', String(nativePort)], {
      env: { ...process.env, ...appEnv(home) },
      stdio: 'pipe',
    });
    const keep = (chunk: Buffer) => {
      log += chunk.toString('utf8');
      if (log.length > 2_000_000) log = log.slice(-1_000_000);
    };
    driver.stdout.on('data', keep);
    driver.stderr.on('data', keep);
    await waitReady(base);
  }, 60_000);

  afterAll(async () => {
    for (const s of sessions) await s.delete();
    // The app's and the drivers' output (the plugin's lifecycle lines, the sidecar's logs).
    writeFileSync(join(tmpdir(), 'taskmill-app-e2e.log'), log);
    console.log('the plugin said:\n' + log.split('\n').filter((l) => l.startsWith('taskmill:')).join('\n'));
    if (driver && driver.exitCode === null) {
      driver.kill('SIGTERM');
      await new Promise((r) => driver.once('close', r));
    }
    if (home) rmSync(home, { recursive: true, force: true });
  }, 30_000);

  /** Starts the app (a WebDriver session) and waits for its page to have a ready sidecar. */
  async function launch(): Promise<{ s: Session; state: PluginState; app: number; sidecar: number[] }> {
    const s = await Session.create(base, APP);
    sessions.push(s);
    await s.switchToLabel('main');
    await s.waitFor('the sidecar ready in the page', `return !!document.querySelector('[data-testid="sidecar-status"][data-state="ready"]')`, [], 60_000);
    const answer = await s.executeAsync<Invoked>(INVOKE, ['plugin:taskmill|state', {}]);
    if (!answer.ok) throw new Error(answer.why);
    const state = answer.value as PluginState;
    expect(state.state).toBe('running');
    const pid = state.ready!.pid;
    const args = cmdline(pid);
    const app = Number(argAfter(args, '--parent-pid'));
    // The onefile sidecar is a bootloader and the Python process it started.
    const sidecar = ppid(pid) === app ? [pid] : [pid, ppid(pid)];
    expect(ppid(sidecar.at(-1)!)).toBe(app);
    return { s, state, app, sidecar };
  }

  it('runs, refuses the shell from the page, shuts the sidecar down gracefully, resumes, leaves no orphan', async () => {
    const t0 = Date.now();
    // 1. The app starts and its Rust side spawns the real frozen sidecar with arguments it
    // computed: --parent-pid is the app, --db in its data dir, --allow-path the chosen root.
    step('1');
    const first = await launch();
    const { s } = first;
    expect(realpathSync(`/proc/${first.app}/exe`)).toBe(realpathSync(APP));
    const args = cmdline(first.state.ready!.pid);
    expect(argAfter(args, '--db')).toBe(db());
    expect(argAfter(args, '--allow-path')).toBe(home);
    expect(argAfter(args, '--log-file')).toBe(join(dataDir(), 'logs', 'sidecar.log'));
    expect(first.state.ready!.protocolVersion).toBe(1);
    expect(await s.execute<string>(`return document.getElementById('folder').value`)).toBe(home);

    // 2. A page script cannot reach the shell plugin or name a pid: Tauri refuses it.
    step('2');
    const sidecarPid = first.state.ready!.pid;
    const spawnTry = await s.executeAsync<Invoked>(INVOKE, ['plugin:shell|spawn', {
      program: 'binaries/taskmill-sidecar', args: ['--db', '/tmp/x.db'], options: { sidecar: true }, onEvent: '__CHANNEL__:1',
    }]);
    expect(spawnTry.ok).toBe(false);
    expect((spawnTry as { why: string }).why).toMatch(/not allowed/i);
    const killTry = await s.executeAsync<Invoked>(INVOKE, ['plugin:shell|kill', { cmd: 'killChild', pid: sidecarPid }]);
    expect(killTry.ok).toBe(false);
    expect((killTry as { why: string }).why).toMatch(/not allowed/i);
    const writeTry = await s.executeAsync<Invoked>(INVOKE, ['plugin:shell|stdin_write', { pid: sidecarPid, buffer: 'x' }]);
    expect(writeTry.ok).toBe(false);
    const oldCommand = await s.executeAsync<Invoked>(INVOKE, ['register_sidecar_pid', { pid: 1 }]);
    expect(oldCommand.ok).toBe(false);
    // `send` takes one JSON-RPC message and nothing else.
    const junk = await s.executeAsync<Invoked>(INVOKE, ['plugin:taskmill|send', { message: 'rm -rf /' }]);
    expect(junk.ok).toBe(false);
    expect(running(sidecarPid)).toBe(true);

    // 3. The page submits a scan and a copy and sees progress and completion.
    step('3');
    await s.execute(`const f = document.getElementById('folder'); f.value = arguments[0]; f.dispatchEvent(new Event('input'));
      const b = document.getElementById('backup'); b.value = arguments[1]; b.dispatchEvent(new Event('input'));`,
      [library, join(library, 'taskmill-backup')]);
    await s.execute(`document.getElementById('btn-scan').click()`);
    const doneOf = (type: string) => `return [...document.querySelectorAll('tr[data-state="completed"] .c-task .sub')]
      .filter((e) => e.textContent.startsWith('${type}')).length >= arguments[0]`;
    // The hashes are the scan's children: they collapse into its row ("n of n parts done").
    await s.waitFor('every file hashed', `return [...document.querySelectorAll('tr[data-state="completed"]')]
      .some((r) => r.querySelector('.c-task .title')?.textContent?.includes('Scan & hash library') &&
        r.querySelector('.meta')?.textContent === arguments[0] + ' of ' + arguments[0] + ' parts done')`,
    [SAMPLE_FILES], 60_000);
    await s.execute(`document.getElementById('btn-copy').click()`);
    const runningOrAny = await s.execute<number>(`return Number(document.querySelector('tr[data-task-id]').dataset.taskId)`);
    await s.waitFor('every file copied', doneOf('fs.copy'), [SAMPLE_FILES], 90_000);
    for (const f of files) {
      const copy = join(library, 'taskmill-backup', f.slice(library.length + 1));
      expect(existsSync(copy), copy).toBe(true);
      expect(statSync(copy).size).toBe(statSync(f).size);
    }
    // Two windows, one sidecar: the second window shows the same sidecar and, since
    // notifications go to every window, the work the first one submitted. An answer goes only
    // to the window that asked, under its own id.
    step('3: second window');
    await s.switchToLabel('second');
    await s.waitFor('the second window on the same sidecar', `return document.querySelector(
      '[data-testid="sidecar-status"][data-state="ready"]')?.textContent.includes(String(arguments[0]))`, [sidecarPid], 30_000);
    await s.waitFor('the copies seen in the second window', doneOf('fs.copy'), [SAMPLE_FILES], 30_000);
    const LISTEN = `
      const [label, name] = arguments;
      const internals = window.__TAURI_INTERNALS__;
      window[name] = [];
      const handler = internals.transformCallback((e) => window[name].push(JSON.parse(e.payload)));
      return internals.invoke('plugin:event|listen', {
        event: 'taskmill://message', target: { kind: 'WebviewWindow', label }, handler }).then(() => true);`;
    await s.execute(LISTEN, ['second', '__probe']);
    await s.switchToLabel('main');
    await s.execute(LISTEN, ['main', '__probe']);
    await s.switchToLabel('second');
    const probe = { jsonrpc: '2.0', id: 1, method: 'task.get', params: { id: runningOrAny } };
    const sent = await s.executeAsync<Invoked>(INVOKE, ['plugin:taskmill|send', { message: JSON.stringify(probe) }]);
    expect(sent).toEqual({ ok: true, value: null });
    const answer = await s.waitFor<{ id: unknown; result: { id: number } }>('the answer in the second window',
      `return window.__probe.find((m) => m.id === 1 && m.result && m.result.id === arguments[0])`, [runningOrAny], 10_000);
    expect(answer.id).toBe(1); // its own id, restored
    await s.switchToLabel('main');
    await sleep(300);
    const mainSaw = await s.execute<{ id: unknown; result?: { id: number } }[]>(`return window.__probe`);
    expect(mainSaw.filter((m) => m.id === 1)).toEqual([]); // (main's own client is far past id 1)

    step('3: long work');
    // Long work in flight: its progress moves.
    await s.execute(`document.getElementById('sim-count').value = '3'; document.getElementById('sim-seconds').value = '40';
      document.getElementById('btn-simulate').click()`);
    await s.waitFor('three simulated tasks running with progress', `return [...document.querySelectorAll(
      'tr[data-state="running"] .fill[data-progress]')].filter((f) => Number(f.dataset.progress) >= 0.05).length >= 3`, [], 30_000);
    const runningIds = await s.execute<number[]>(`return [...document.querySelectorAll('tr[data-state="running"]')]
      .map((tr) => Number(tr.dataset.taskId))`);
    expect(runningIds.length).toBeGreaterThanOrEqual(3);
    await sleep(600); // let the bars' width transition settle
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    writeFileSync(SCREENSHOT, await s.screenshot());

    // 4. The window closes: the Rust side sends `shutdown`, the sidecar exits 0, the app exits
    // after it; running work is back to pending.
    step('4');
    const closedAt = Date.now();
    // As a user's click on the close button does (WebDriver's "close window" would make
    // WebKitWebDriver end the app's process itself).
    execFileSync('python3', [join(import.meta.dirname, 'close-window.py'), String(first.app)], { stdio: 'inherit' });
    await until('the app to exit', () => !running(first.app), 30_000);
    for (const pid of first.sidecar) expect(running(pid), `sidecar ${pid}`).toBe(false);
    console.log(`app closed in ${Date.now() - closedAt} ms`);
    expect(log).toMatch(/taskmill: asked the sidecar to shut down/);
    // The sidecar's own log line (its stderr, relayed by the plugin): the request reached it.
    expect(log).toMatch(/\[taskmill-sidecar\] \{[^\n]*"reason": "shutdown"[^\n]*"event": "shutting down"/);
    expect(log).toMatch(/taskmill: the sidecar exited \(code Some\(0\)/);
    expect(log).not.toMatch(/did not exit in time/);
    const listed = JSON.parse(execFileSync(ADMIN, ['list', '--db', db(), '--json', '--type', 'sleep', '--limit', '100'], { encoding: 'utf8' }));
    const tasks: { id: number; state: string }[] = listed.tasks ?? listed;
    const states = new Map(tasks.map((t) => [Number(t.id), t.state]));
    for (const id of runningIds) expect(states.get(id), `task ${id}`).toBe('pending');

    // 5. The next launch resumes that work.
    step('5');
    await s.delete(); // WebKitWebDriver serves one session at a time
    const second = await launch();
    await second.s.waitFor('the interrupted tasks running again', `return arguments[0].every((id) =>
      document.querySelector('tr[data-task-id="' + id + '"][data-state="running"]'))`, [runningIds], 30_000);

    // 6. The sidecar dies (SIGKILL to its process group): the Rust side starts a new one and
    // the page carries on with it.
    step('6');
    process.kill(-second.sidecar.at(-1)!, 'SIGKILL');
    await until('the killed sidecar to be gone', () => second.sidecar.every((pid) => !running(pid)), 5000);
    const restarted = await second.s.waitFor<PluginState>('a restarted sidecar', `
      return window.__TAURI_INTERNALS__.invoke('plugin:taskmill|state').then((s) =>
        s.state === 'running' && s.restarts === 1 ? s : null)`, [], 30_000);
    expect(restarted.lastExitCode).toBeNull(); // killed by a signal
    expect(restarted.ready!.pid).not.toBe(second.state.ready!.pid);
    const third = restarted.ready!.pid;
    const thirdGroup = ppid(third) === second.app ? [third] : [third, ppid(third)];
    await second.s.waitFor('the page ready on the new sidecar', `return document.querySelector(
      '[data-testid="sidecar-status"][data-state="ready"]')?.textContent.includes(String(arguments[0]))`, [third], 30_000);

    // 7. A second instance of the app finds the database held: its sidecar exits 3, which a
    // restart cannot cure, so it is not restarted.
    step('7');
    const other = spawn(APP, [], { env: { ...process.env, ...appEnv(home) }, stdio: ['ignore', 'ignore', 'pipe'] });
    let otherLog = '';
    other.stderr.on('data', (chunk: Buffer) => (otherLog += chunk.toString('utf8')));
    try {
      await until('the second instance\'s sidecar to exit 3', () => /the sidecar exited \(code Some\(3\)/.test(otherLog), 30_000);
      await sleep(1500);
      expect(otherLog).not.toMatch(/restarting the sidecar/);
      expect(otherLog.match(/taskmill: started the sidecar/g)).toHaveLength(1);
    } finally {
      other.kill('SIGKILL');
    }

    // 8. The app killed outright: no sidecar left within 2 s (its --parent-pid watch).
    step('8');
    process.kill(second.app, 'SIGKILL');
    const gone = await until('the sidecar to exit after the app was killed',
      () => thirdGroup.every((pid) => !running(pid)), 2000);
    console.log(`sidecar gone ${gone} ms after SIGKILL of the app; whole test ${Date.now() - t0} ms`);
  }, 300_000);
});
