// The client over the Node transport against the REAL sidecar process.
import { afterEach, describe, expect, it } from 'vitest';
import {
  TaskCancelledError,
  TaskError,
  TaskmillError,
  type ClientEventName,
  type Progress,
  type RestartedEvent,
} from '../../src/client.js';
import { startSidecar, type Harness } from '../helpers/sidecar.js';

const harnesses: Harness[] = [];
function sidecar(...args: Parameters<typeof startSidecar>): Harness {
  const h = startSidecar(...args);
  harnesses.push(h);
  return h;
}

afterEach(async () => {
  const hs = harnesses.splice(0);
  await Promise.all(hs.map((h) => h.dispose()));
  for (const h of hs) expect(h.errors, 'stdout carried a line that is not JSON-RPC').toEqual([]);
});

/** Records every event; `about(id)` gives the names of those about one task, in order. */
function recordEvents(h: Harness) {
  const all: { event: string; params: any }[] = [];
  h.client.on('*', (params, event) => all.push({ event, params }));
  return {
    about: (id: number) =>
      all
        .filter(({ params: p }) => p?.id === id || p?.task?.id === id)
        .map(({ event }) => event),
  };
}

describe('the real sidecar', { timeout: 30_000 }, () => {
  it('starts, queues calls until ready, answers typed results', async () => {
    const h = sidecar();
    const ping = h.client.invoke('ping'); // before ready: queued
    const ready = await h.client.start();
    expect(ready.serverInfo.name).toBe('taskmill-sidecar');
    expect(ready.protocolVersion).toBe(1);
    expect(ready.executors).toContain('sleep');
    expect(typeof (await ping).now).toBe('number');
    const init = await h.client.invoke('initialize', { client: { name: 'ts-tests', version: '1' } });
    expect(init.capabilities.events).toContain('task.progress');
    const err = await h.client.invoke('task.get', { id: 424242 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TaskmillError);
    expect(err).toMatchObject({ code: -32001, kind: 'taskNotFound', method: 'task.get' });
    expect(h.stderr.length).toBeGreaterThan(0); // structlog lines reached the logger
  });

  it('submit streams submitted → started → progress → completed', async () => {
    const h = sidecar();
    const events = recordEvents(h);
    let id: number | undefined;
    const progress: Progress[] = [];
    h.client.on('task.progress', (p) => {
      if (p.id === id) progress.push(p.progress);
    });
    const done = h.client.waitFor('task.completed', (e) => e.id === id, 20_000);
    const r = await h.client.invoke('task.submit', {
      type: 'sleep',
      payload: { ms: 600, steps: 3, result: { ok: true } },
      label: 'three steps',
    });
    id = r.id;
    expect(r.outcome).toBe('inserted');
    const completed = await done;
    expect(completed.result).toEqual({ ok: true });
    expect(completed.durationMs).toBeGreaterThanOrEqual(600);
    const names = events.about(r.id);
    expect(names[0]).toBe('task.submitted');
    expect(names[1]).toBe('task.started');
    expect(names[names.length - 1]).toBe('task.completed');
    expect(names.slice(2, -1).every((n) => n === 'task.progress')).toBe(true);
    expect(progress.length).toBeGreaterThan(0);
    const fractions = progress.map((p) => p.fraction);
    expect([...fractions].sort((a, b) => a - b)).toEqual(fractions); // never decreases
    const info = await h.client.invoke('task.get', { id: r.id });
    expect(info.state).toBe('completed');
    expect(info.label).toBe('three steps');
  });

  it('cancels a running task', async () => {
    const h = sidecar();
    const r = await h.client.invoke('task.submit', { type: 'sleep', payload: { ms: 60_000 } });
    const cancelled = h.client.waitFor('task.cancelled', (e) => e.id === r.id);
    await waitUntilState(h, r.id, 'running');
    expect(await h.client.invoke('task.cancel', { id: r.id })).toEqual({ id: r.id, state: 'cancelled' });
    await cancelled;
    const again = await h.client.invoke('task.cancel', { id: r.id }).catch((e: unknown) => e);
    expect(again).toMatchObject({ code: -32002, kind: 'invalidState' });
  });

  it('pauses and resumes a task, and the scheduler per group', async () => {
    const h = sidecar();
    await h.client.invoke('scheduler.pause', { group: 'media' });
    const r = await h.client.invoke('task.submit', {
      type: 'sleep',
      payload: { ms: 50 },
      group: 'media',
    });
    const status = await h.client.invoke('scheduler.status');
    expect(status.pausedGroups).toEqual(['media']);
    expect((await h.client.invoke('task.pause', { id: r.id })).state).toBe('paused');
    expect((await h.client.invoke('task.resume', { id: r.id })).state).toBe('pending');
    const done = h.client.waitFor('task.completed', (e) => e.id === r.id);
    await h.client.invoke('scheduler.resume', { group: 'media' });
    await done;

    // pausing a running task interrupts it; resuming runs it again
    const long = await h.client.invoke('task.submit', { type: 'sleep', payload: { ms: 60_000 } });
    await waitUntilState(h, long.id, 'running');
    expect((await h.client.invoke('task.pause', { id: long.id })).state).toBe('paused');
    const started = h.client.waitFor('task.started', (e) => e.id === long.id);
    expect((await h.client.invoke('task.resume', { id: long.id })).state).toMatch(/pending|running/);
    await started;
    await h.client.invoke('task.cancel', { id: long.id });
  });

  it('runs a host executor: progress, checkpoint, result, errors', async () => {
    const h = sidecar();
    const seen: { checkpoint: unknown; payload: unknown }[] = [];
    await h.client.onTask('host.thumb', async (task, ctx) => {
      seen.push({ checkpoint: ctx.checkpoint, payload: task.payload });
      const { path } = task.payload as { path: string };
      if (path === 'corrupt.jpg') throw new TaskError('corrupt image', { retryable: false });
      ctx.saveCheckpoint({ step: 1 });
      ctx.progress({ fraction: 0.5, message: 'half way' });
      await new Promise((r) => setTimeout(r, 400)); // let the progress event through
      return { thumb: path.replace('.jpg', '.png') };
    });
    const progress = h.client.waitFor('task.progress', (e) => e.type === 'host.thumb', 10_000);
    const ok = await h.client.invoke('task.submit', { type: 'host.thumb', payload: { path: 'a.jpg' } });
    const completed = await h.client.waitFor('task.completed', (e) => e.id === ok.id);
    expect(completed.result).toEqual({ thumb: 'a.png' });
    const p = await progress;
    expect(p.progress).toMatchObject({ fraction: 0.5, estimated: false, message: 'half way' });

    const bad = await h.client.invoke('task.submit', {
      type: 'host.thumb',
      payload: { path: 'corrupt.jpg' },
    });
    const failed = await h.client.waitFor('task.failed', (e) => e.id === bad.id);
    expect(failed).toMatchObject({ willRetry: false, state: 'failed', error: { message: 'corrupt image' } });
    expect(seen.map((s) => s.checkpoint)).toEqual([undefined, undefined]);
  });

  it('host executor: cancel reaches the handler as an aborted AbortSignal', async () => {
    const h = sidecar();
    const aborted: TaskCancelledError[] = [];
    const running = new Set<number>();
    await h.client.onTask('host.wait', (task, { signal, saveCheckpoint }) => {
      running.add(task.id);
      saveCheckpoint({ offset: 42 });
      return new Promise((_, reject) => {
        signal.addEventListener('abort', () => {
          aborted.push(signal.reason as TaskCancelledError);
          reject(signal.reason);
        });
      });
    });
    const r = await h.client.invoke('task.submit', { type: 'host.wait' });
    await until(() => running.has(r.id));
    // pause: the run stops (reason "paused"), the checkpoint is kept for the next run
    await h.client.invoke('task.pause', { id: r.id });
    await until(() => aborted.length === 1);
    expect(aborted[0]!.reason).toBe('paused');
    const checkpoints: unknown[] = [];
    const unregister = await h.client.onTask('host.wait', (_task, ctx) => {
      checkpoints.push(ctx.checkpoint);
      return new Promise((_, reject) =>
        ctx.signal.addEventListener('abort', () => {
          aborted.push(ctx.signal.reason as TaskCancelledError);
          reject(ctx.signal.reason);
        }),
      );
    });
    await h.client.invoke('task.resume', { id: r.id });
    await until(() => checkpoints.length === 1);
    expect(checkpoints[0]).toEqual({ offset: 42 });
    const cancelled = h.client.waitFor('task.cancelled', (e) => e.id === r.id);
    await h.client.invoke('task.cancel', { id: r.id });
    await cancelled;
    await until(() => aborted.length === 2);
    expect(aborted[1]).toBeInstanceOf(TaskCancelledError);
    expect(aborted[1]!.reason).toBe('cancelled');
    await unregister();
  });

  it('SIGKILL: the client restarts the sidecar, re-registers host executors, tasks resume', async () => {
    const h = sidecar(['--max-concurrency=2']);
    const ran: number[] = [];
    await h.client.onTask('host.job', async (task) => {
      ran.push(task.id);
      return { ran: task.id };
    });
    // host.job tasks wait behind a global pause (persisted: it survives the crash)
    const ready = await h.client.start();
    const sleeps = await h.client.invoke('task.submitBatch', {
      tasks: [1, 2, 3].map(() => ({ type: 'sleep', payload: { ms: 1500 } })),
    });
    const sleepIds = sleeps.results.map((e) => e.id);
    await until(async () => (await h.client.invoke('scheduler.status')).running.length === 2);
    await h.client.invoke('scheduler.pause', { type: 'host.job' });
    const job = await h.client.invoke('task.submit', { type: 'host.job', payload: { n: 1 } });

    const completed = new Set<number>();
    h.client.on('task.completed', (e) => completed.add(e.id));
    const restarted = h.client.waitFor('restarted', () => true, 20_000);
    const exits: ClientEventName[] = [];
    h.client.on('exited', () => exits.push('exited'));
    const inflight = h.client.invoke('task.list', {}).catch((e: unknown) => e);
    process.kill(ready.pid, 'SIGKILL');
    const settled = await inflight;
    // the list call either made it before the kill or was rejected clearly
    if (settled instanceof TaskmillError) expect(settled.kind).toBe('sidecarExited');

    const r: RestartedEvent = await restarted;
    expect(exits).toEqual(['exited']);
    expect(r.restarts).toBe(1);
    expect(r.ready.pid).not.toBe(ready.pid);
    expect(r.ready.recovered.requeued).toBe(2); // the two running sleeps went back to pending
    expect(h.client.restartCount).toBe(1);

    // the db survived: everything is still there and resumes
    for (const id of [...sleepIds, job.id]) {
      const t = await h.client.invoke('task.get', { id });
      expect(t.attempt).toBe(0);
    }
    await h.client.invoke('scheduler.resume', { type: 'host.job' });
    await until(() => sleepIds.every((id) => completed.has(id)) && completed.has(job.id), 20_000);
    expect(ran).toEqual([job.id]);
    expect((await h.client.invoke('task.get', { id: job.id })).result).toEqual({ ran: job.id });
  });

  it('close() shuts the sidecar down gracefully (exit 0, no restart)', async () => {
    const h = sidecar();
    await h.client.start();
    const exiting = h.client.waitFor('sidecar.exiting');
    const exited = h.client.waitFor('exited');
    await h.client.close({ graceMs: 200 });
    expect(await exiting).toEqual({ reason: 'shutdown' });
    expect(await exited).toMatchObject({ code: 0, willRestart: false });
    await expect(h.client.invoke('ping')).rejects.toMatchObject({ kind: 'closed' });
  });
});

async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function waitUntilState(h: Harness, id: number, state: string): Promise<void> {
  await until(async () => (await h.client.invoke('task.get', { id })).state === state);
}
