import { afterEach, beforeEach, describe, expect, expectTypeOf, it, vi } from 'vitest';
import {
  CLIENT_ERROR_CODES,
  TaskCancelledError,
  TaskError,
  TaskmillClient,
  TaskmillError,
  type ClientOptions,
  type RestartedEvent,
  type SubmitResult,
  type TaskContext,
  type TaskInfo,
  type TaskProgress,
} from '../../src/client.js';
import { FakeTransport, READY_PARAMS, flush } from '../helpers/fake-transport.js';

const TASK: TaskInfo = {
  id: 7,
  type: 'host.thumb',
  state: 'running',
  priority: 128,
  payload: { path: 'a.jpg' },
  tags: {},
  ioCost: {},
  attempt: 0,
  maxRetries: 3,
  createdAt: 1,
};

function setup(options: Partial<ClientOptions> = {}) {
  const fake = new FakeTransport();
  const errors: { error: Error; line?: string }[] = [];
  const logs: { line: string; parsed: unknown }[] = [];
  const client = new TaskmillClient({
    transport: fake,
    onError: (error, detail) => errors.push({ error, line: detail?.line }),
    logger: (line, parsed) => logs.push({ line, parsed }),
    restart: { initialDelayMs: 100, maxDelayMs: 1000, multiplier: 2 },
    ...options,
  });
  return { fake, client, errors, logs };
}

async function started(options: Partial<ClientOptions> = {}) {
  const s = setup(options);
  const ready = s.client.start();
  s.fake.ready();
  await ready;
  return s;
}

describe('requests', () => {
  it('queues calls made before sidecar.ready and sends them after it, in order', async () => {
    const { fake, client } = setup();
    const a = client.invoke('ping');
    const b = client.invoke('task.get', { id: 3 });
    await flush();
    expect(fake.starts).toBe(1); // invoke started the sidecar
    expect(fake.written).toEqual([]);
    fake.ready();
    expect(fake.requests().map((m) => m.method)).toEqual(['ping', 'task.get']);
    const [p, g] = fake.requests();
    expect(p).toEqual({ jsonrpc: '2.0', id: p!.id, method: 'ping', params: {} });
    expect(g!.params).toEqual({ id: 3 });
    fake.reply(g!.id, { ...TASK, id: 3 });
    fake.reply(p!.id, { now: 5 });
    await expect(a).resolves.toEqual({ now: 5 });
    await expect(b).resolves.toMatchObject({ id: 3 });
    expect(client.readyInfo).toEqual(READY_PARAMS);
  });

  it('matches answers to calls by id, whatever their order', async () => {
    const { fake, client } = await started();
    const calls = [1, 2, 3].map((id) => client.invoke('task.get', { id }));
    const reqs = fake.requests('task.get');
    expect(new Set(reqs.map((r) => r.id)).size).toBe(3);
    for (const r of [...reqs].reverse()) fake.reply(r.id, { ...TASK, id: r.params.id });
    const got = await Promise.all(calls);
    expect(got.map((t) => t.id)).toEqual([1, 2, 3]);
  });

  it('turns an error answer into a TaskmillError with code, message, data and kind', async () => {
    const { fake, client } = await started();
    const p = client.invoke('task.cancel', { id: 9 });
    fake.replyError(fake.last('task.cancel').id, -32002, 'task 9 is completed', {
      kind: 'invalidState',
      state: 'completed',
    });
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TaskmillError);
    expect(err).toMatchObject({
      code: -32002,
      kind: 'invalidState',
      data: { kind: 'invalidState', state: 'completed' },
      method: 'task.cancel',
    });
    expect((err as Error).message).toContain('task 9 is completed');
  });

  it('is typed by the generated method map', async () => {
    const { fake, client } = await started();
    const p = client.invoke('task.submit', { type: 'noop', priority: 'high' });
    expectTypeOf(p).toEqualTypeOf<Promise<SubmitResult>>();
    // @ts-expect-error: task.get needs {id}
    void client.invoke('task.get').catch(() => {});
    // @ts-expect-error: unknown method
    void client.invoke('task.nope', {}).catch(() => {});
    fake.reply(fake.last('task.submit').id, { id: 1, outcome: 'inserted' });
    await expect(p).resolves.toEqual({ id: 1, outcome: 'inserted' });
  });
});

describe('framing over the client', () => {
  it('reads \\r\\n, split lines and several messages per chunk', async () => {
    const { fake, client } = await started();
    const a = client.invoke('ping');
    const b = client.invoke('ping');
    const [ra, rb] = fake.requests('ping');
    const text =
      JSON.stringify({ jsonrpc: '2.0', id: ra!.id, result: { now: 1 } }) +
      '\r\n' +
      JSON.stringify({ jsonrpc: '2.0', id: rb!.id, result: { now: 2 } }) +
      '\r\n';
    fake.stdout(text.slice(0, 7));
    fake.stdout(text.slice(7, 50));
    fake.stdout(text.slice(50));
    await expect(a).resolves.toEqual({ now: 1 });
    await expect(b).resolves.toEqual({ now: 2 });
  });

  it('reports a line that is not JSON (or not JSON-RPC) to the error hook and goes on', async () => {
    const { fake, client, errors } = await started();
    const p = client.invoke('ping');
    expect(() => fake.stdout('this is not json\n{"no":"jsonrpc"}\n')).not.toThrow();
    fake.error('invalid utf-8 sequence');
    fake.reply(fake.last('ping').id, { now: 1 });
    await expect(p).resolves.toEqual({ now: 1 });
    expect(errors.map((e) => e.line)).toEqual(['this is not json', '{"no":"jsonrpc"}', undefined]);
    expect(errors[2]!.error.message).toContain('invalid utf-8');
  });

  it('reports answers for unknown ids and id:null errors, without throwing', async () => {
    const { fake, errors } = await started();
    fake.reply(999, {});
    fake.replyError(null, -32700, 'Parse error', { kind: 'parseError' });
    expect(errors).toHaveLength(2);
  });

  it('forwards stderr lines to the logger, parsed when JSON', async () => {
    const { fake, logs } = await started();
    fake.stderr('{"event":"started","level":"info"}\r\nplain te');
    fake.stderr('xt\n');
    expect(logs).toEqual([
      { line: '{"event":"started","level":"info"}', parsed: { event: 'started', level: 'info' } },
      { line: 'plain text', parsed: undefined },
    ]);
  });
});

describe('timeouts', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('rejects a call after its own timeout and ignores the late answer', async () => {
    const { fake, client, errors } = await started({ timeoutMs: 0 });
    const p = client.invoke('ping', {}, { timeoutMs: 500 });
    const caught = p.catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(499);
    expect(await Promise.race([caught, Promise.resolve('pending')])).toBe('pending');
    await vi.advanceTimersByTimeAsync(1);
    const err = (await caught) as TaskmillError;
    expect(err).toBeInstanceOf(TaskmillError);
    expect(err.kind).toBe('timeout');
    expect(err.code).toBe(CLIENT_ERROR_CODES.timeout);
    expect(err.message).toMatch(/ping: no answer within 500 ms/);
    fake.reply(fake.last('ping').id, { now: 1 });
    expect(errors).toEqual([]);
  });

  it('applies the default timeout, counting the time queued before ready', async () => {
    const { client } = setup({ timeoutMs: 1000 });
    const p = client.invoke('ping').catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(1000);
    expect(await p).toMatchObject({ kind: 'timeout' });
  });

  it('rejects when the caller aborts', async () => {
    const { client } = await started();
    const ac = new AbortController();
    const p = client.invoke('ping', {}, { signal: ac.signal }).catch((e: unknown) => e);
    ac.abort();
    expect(await p).toMatchObject({ kind: 'aborted' });
  });

  it('kills a sidecar that does not announce ready in time, then restarts it', async () => {
    const { fake, client } = setup({ readyTimeoutMs: 2000, timeoutMs: 0 });
    const p = client.invoke('ping');
    await vi.advanceTimersByTimeAsync(2000);
    expect(fake.kills).toBe(1);
    await vi.advanceTimersByTimeAsync(100);
    expect(fake.starts).toBe(2);
    fake.ready();
    fake.reply(fake.last('ping').id, { now: 1 });
    await expect(p).resolves.toEqual({ now: 1 });
  });
});

describe('events', () => {
  it('delivers typed events to listeners until unlisten, and to the * wildcard', async () => {
    const { fake, client } = await started();
    const progress: TaskProgress[] = [];
    const all: string[] = [];
    const off = client.on('task.progress', (p) => {
      expectTypeOf(p).toEqualTypeOf<TaskProgress>();
      progress.push(p);
    });
    client.on('*', (_p, name) => all.push(name));
    const params = { id: 1, type: 'sleep', progress: { fraction: 0.5, estimated: false } };
    fake.event('task.progress', params);
    off();
    fake.event('task.progress', params);
    fake.event('task.completed', { id: 1, type: 'sleep', attempt: 0, durationMs: 3 });
    expect(progress).toEqual([params]);
    expect(all).toEqual(['task.progress', 'task.progress', 'task.completed']);
  });

  it('isolates a throwing listener', async () => {
    const { fake, client, errors } = await started();
    const seen: number[] = [];
    client.on('task.cancelled', () => {
      throw new Error('boom');
    });
    client.on('task.cancelled', (p) => seen.push(p.id));
    fake.event('task.cancelled', { id: 4, type: 'noop' });
    expect(seen).toEqual([4]);
    expect(errors.map((e) => e.error.message)).toEqual(['boom']);
  });

  it('waitFor resolves with the first matching event', async () => {
    const { fake, client } = await started();
    const p = client.waitFor('task.completed', (e) => e.id === 2);
    fake.event('task.completed', { id: 1, type: 'noop', attempt: 0, durationMs: 1 });
    fake.event('task.completed', { id: 2, type: 'noop', attempt: 0, durationMs: 1 });
    await expect(p).resolves.toMatchObject({ id: 2 });
  });
});

describe('restart', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('configureEvents sends events.configure, keeps it, and re-sends it after a restart first', async () => {
    const { fake, client } = await started({ timeoutMs: 0 });
    // typed through the generated maps
    expectTypeOf(client.invoke<'events.configure'>)
      .parameter(1)
      .toEqualTypeOf<{ exclude?: string[]; batchSubmitted?: boolean } | undefined>();
    const batches: { ids: number[]; count: number }[] = [];
    client.on('task.batchSubmitted', (e) => batches.push(e));

    const selection = { exclude: ['task.progress'], batchSubmitted: true };
    const configured = client.configureEvents(selection);
    expect(fake.last('events.configure').params).toEqual(selection);
    fake.reply(fake.last('events.configure').id, {});
    await expect(configured).resolves.toBeUndefined();
    fake.event('task.batchSubmitted', { ids: [4, 5], count: 2 });
    expect(batches).toEqual([{ ids: [4, 5], count: 2 }]);

    // A refused selection rejects and is not kept.
    const refused = client.configureEvents({ exclude: ['sidecar.ready'] }).catch((e: unknown) => e);
    fake.replyError(fake.last('events.configure').id, -32602, 'Invalid params', {
      kind: 'invalidParams',
      path: '$.exclude[0]',
      index: 0,
    });
    expect(((await refused) as TaskmillError).code).toBe(-32602);

    fake.exit({ code: null, signal: 'SIGKILL' });
    const queued = client.invoke('ping');
    await vi.advanceTimersByTimeAsync(100);
    fake.ready();
    const sent = fake.requests().map((m) => m.method);
    expect(sent.slice(-2)).toEqual(['events.configure', 'ping']); // before the queued call
    expect(fake.last('events.configure').params).toEqual(selection);
    fake.reply(fake.last('ping').id, { now: 1 });
    await expect(queued).resolves.toEqual({ now: 1 });
  });

  it('setPressure re-sends the sources still live, with the time they have left, after a restart', async () => {
    const { fake, client } = await started({ timeoutMs: 0 });
    const battery = client.setPressure('battery', 0.5, 10_000);
    expect(fake.last('scheduler.setPressure').params).toEqual({ source: 'battery', level: 0.5, ttlMs: 10_000 });
    fake.reply(fake.last('scheduler.setPressure').id, {});
    await battery;
    const game = client.setPressure('game', 0.9, 1_000);
    fake.reply(fake.last('scheduler.setPressure').id, {});
    await game;
    const metered = client.setPressure('metered', 0.7);
    fake.reply(fake.last('scheduler.setPressure').id, {});
    await metered;
    const gone = client.setPressure('metered', 0); // removed: not re-sent
    fake.reply(fake.last('scheduler.setPressure').id, {});
    await gone;

    await vi.advanceTimersByTimeAsync(2_000); // game lapsed
    fake.exit({ code: null, signal: 'SIGKILL' });
    await vi.advanceTimersByTimeAsync(100);
    const before = fake.requests().length;
    fake.ready();
    const resent = fake.requests().slice(before);
    expect(resent.map((m) => m.params)).toEqual([{ source: 'battery', level: 0.5, ttlMs: 7_900 }]);
  });

  it('rejects in-flight calls clearly, restarts with backoff, resends queued calls', async () => {
    const { fake, client } = await started({ timeoutMs: 0 });
    const exited: unknown[] = [];
    const restarted: RestartedEvent[] = [];
    client.on('exited', (e) => exited.push(e));
    client.on('restarted', (e) => restarted.push(e));

    const inflight = client.invoke('task.get', { id: 1 }).catch((e: unknown) => e);
    fake.exit({ code: null, signal: 'SIGKILL' });
    const err = (await inflight) as TaskmillError;
    expect(err.kind).toBe('sidecarExited');
    expect(err.message).toBe(
      'task.get: the sidecar exited before answering (killed by signal SIGKILL)',
    );
    expect(exited).toEqual([{ code: null, signal: 'SIGKILL', willRestart: true, delayMs: 100 }]);

    // a call made while it is down waits for the next process
    const queued = client.invoke('ping');
    await vi.advanceTimersByTimeAsync(99);
    expect(fake.starts).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(fake.starts).toBe(2);
    // the new process dies before ready: the delay doubles
    fake.exit({ code: 1, signal: null });
    await vi.advanceTimersByTimeAsync(199);
    expect(fake.starts).toBe(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(fake.starts).toBe(3);
    expect(fake.requests('ping')).toHaveLength(0);
    fake.ready({ pid: 5151, recovered: { requeued: 2 } });
    fake.reply(fake.last('ping').id, { now: 9 });
    await expect(queued).resolves.toEqual({ now: 9 });
    expect(restarted).toHaveLength(1);
    expect(restarted[0]).toMatchObject({
      restarts: 2,
      exit: { code: 1 },
      ready: { pid: 5151, recovered: { requeued: 2 } },
    });
    expect(client.restartCount).toBe(2);
  });

  it('caps the delay and resets the backoff after a stable run', async () => {
    const { fake, client } = await started({
      restart: { initialDelayMs: 100, maxDelayMs: 300, multiplier: 2, stableAfterMs: 5000 },
    });
    const delays: (number | undefined)[] = [];
    client.on('exited', (e) => delays.push(e.delayMs));
    for (let i = 0; i < 4; i++) {
      fake.exit({ code: 1, signal: null });
      await vi.advanceTimersByTimeAsync(1000);
    }
    fake.ready();
    await vi.advanceTimersByTimeAsync(5000);
    fake.exit({ code: 1, signal: null });
    expect(delays).toEqual([100, 200, 300, 300, 100]);
  });

  it('gives up on a fatal exit code and names the reason', async () => {
    const { fake, client } = setup();
    const ready = client.start().catch((e: unknown) => e);
    const p = client.invoke('ping').catch((e: unknown) => e);
    fake.stderr('taskmill-sidecar: bad command line: --max-concurrency: not an integer\n');
    fake.exit({ code: 2, signal: null });
    const err = (await p) as TaskmillError;
    expect(err.kind).toBe('sidecarFailed');
    expect(err.message).toContain('exit code 2: taskmill-sidecar: bad command line');
    expect(await ready).toBeInstanceOf(TaskmillError);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(fake.starts).toBe(1);
    await expect(client.invoke('ping')).rejects.toMatchObject({ kind: 'sidecarFailed' });
  });

  it('stops after maxAttempts consecutive failures; start() tries again', async () => {
    const { fake, client } = setup({ restart: { initialDelayMs: 10, maxAttempts: 2 } });
    const ready = client.start().catch((e: unknown) => e);
    for (let i = 0; i < 3; i++) {
      fake.exit({ code: 1, signal: null });
      await vi.advanceTimersByTimeAsync(100);
    }
    expect(fake.starts).toBe(3);
    expect(await ready).toMatchObject({ kind: 'sidecarFailed' });
    const again = client.start();
    expect(fake.starts).toBe(4);
    fake.ready();
    await expect(again).resolves.toMatchObject({ pid: 4242 });
  });

  it('does not restart when disabled', async () => {
    const { fake, client } = await started({ restart: { enabled: false } });
    fake.exit({ code: 0, signal: null });
    await vi.advanceTimersByTimeAsync(10_000);
    expect(fake.starts).toBe(1);
    await expect(client.invoke('ping')).rejects.toMatchObject({ kind: 'sidecarFailed' });
  });

  it('treats a transport that cannot start like an exit', async () => {
    const fake = new FakeTransport();
    let n = 0;
    const transport = {
      start: (...args: Parameters<FakeTransport['start']>) => {
        if (++n === 1) return Promise.reject(new Error('spawn ENOENT'));
        return fake.start(...args);
      },
      write: (l: string) => fake.write(l),
      kill: () => fake.kill(),
    };
    const client = new TaskmillClient({ transport, restart: { initialDelayMs: 50 } });
    const exits: unknown[] = [];
    client.on('exited', (e) => exits.push(e));
    const p = client.invoke('ping');
    await vi.advanceTimersByTimeAsync(50);
    expect(exits).toMatchObject([{ error: 'cannot start the sidecar: Error: spawn ENOENT' }]);
    fake.ready();
    fake.reply(fake.last('ping').id, { now: 1 });
    await expect(p).resolves.toEqual({ now: 1 });
  });
});

describe('close()', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('sends shutdown and resolves when the sidecar exits; no restart', async () => {
    const { fake, client, errors } = await started({ timeoutMs: 0 });
    const inflight = client.invoke('task.list', {}).catch((e: unknown) => e);
    const closing = client.close({ graceMs: 1500 });
    const shutdown = fake.last('shutdown');
    expect(shutdown.params).toEqual({ graceMs: 1500 });
    fake.reply(shutdown.id, {});
    fake.event('sidecar.exiting', { reason: 'shutdown' });
    fake.exit({ code: 0, signal: null });
    await closing;
    expect(fake.kills).toBe(0);
    expect(await inflight).toMatchObject({ kind: 'closed' });
    await expect(client.invoke('ping')).rejects.toMatchObject({ kind: 'closed' });
    await vi.advanceTimersByTimeAsync(20_000);
    expect(fake.starts).toBe(1);
    expect(errors).toEqual([]);
  });

  it('kills the sidecar when it does not exit within the grace period', async () => {
    const { fake, client } = await started({ closeExtraMs: 500 });
    const closing = client.close({ graceMs: 1000 });
    await vi.advanceTimersByTimeAsync(1499);
    expect(fake.kills).toBe(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(fake.kills).toBe(1);
    await closing;
    expect(fake.alive).toBe(false);
  });

  it('finishes even when the transport never reports the exit', async () => {
    const { fake, client } = await started({ closeExtraMs: 0 });
    fake.ignoreKill = true;
    const closing = client.close({ graceMs: 100 });
    await vi.advanceTimersByTimeAsync(100 + 2000);
    await closing;
    expect(fake.kills).toBe(1);
  });

  it('cancels a pending restart and rejects queued calls', async () => {
    const { fake, client } = await started({ timeoutMs: 0 });
    fake.exit({ code: 1, signal: null });
    const queued = client.invoke('ping').catch((e: unknown) => e);
    await client.close();
    expect(await queued).toMatchObject({ kind: 'closed' });
    await vi.advanceTimersByTimeAsync(10_000);
    expect(fake.starts).toBe(1);
  });

  it('resolves at once when never started', async () => {
    const { fake, client } = setup();
    await client.close();
    expect(fake.starts).toBe(0);
  });
});

describe('host executors', () => {
  it('registers after ready, runs task.execute and answers {result}', async () => {
    const { fake, client } = setup();
    let ctxSeen: TaskContext | undefined;
    const registered = client.onTask('host.thumb', async (task, ctx) => {
      ctxSeen = ctx;
      ctx.progress(0.25);
      ctx.progress({ fraction: 0.5, bytesDone: 10, bytesTotal: 20, message: 'half' });
      ctx.saveCheckpoint({ offset: 10 });
      return { thumb: `${(task.payload as { path: string }).path}.png` };
    }, { concurrency: 2 });
    fake.ready();
    const reg = fake.last('executor.register');
    expect(reg.params).toEqual({ type: 'host.thumb', concurrency: 2 });
    fake.reply(reg.id, {});
    const unregister = await registered;

    fake.send({ jsonrpc: '2.0', id: 1, method: 'task.execute', params: { task: TASK, checkpoint: { offset: 3 } } });
    await flush();
    expect(ctxSeen!.checkpoint).toEqual({ offset: 3 });
    expect(ctxSeen!.task.id).toBe(7);
    expect(fake.notifications()).toEqual([
      { jsonrpc: '2.0', method: 'executor.progress', params: { fraction: 0.25, id: 7 } },
      {
        jsonrpc: '2.0',
        method: 'executor.progress',
        params: { fraction: 0.5, bytesDone: 10, bytesTotal: 20, message: 'half', id: 7 },
      },
      { jsonrpc: '2.0', method: 'executor.checkpoint', params: { id: 7, state: { offset: 10 } } },
    ]);
    expect(fake.responses()).toEqual([{ jsonrpc: '2.0', id: 1, result: { result: { thumb: 'a.jpg.png' } } }]);

    const off = unregister();
    fake.reply(fake.last('executor.unregister').id, {});
    await off;
    expect(fake.last('executor.unregister').params).toEqual({ type: 'host.thumb' });
  });

  it('answers errors with retryable/retryAfterMs in data', async () => {
    const { fake, client } = await started();
    const reg = client.onTask('host.x', (task) => {
      if (task.id === 1) throw new TaskError('corrupt image', { retryable: false });
      if (task.id === 2) throw new TaskError('busy', { retryAfterMs: 5000, kind: 'busy' });
      return Promise.reject(new Error('disk on fire'));
    });
    fake.reply(fake.last('executor.register').id, {});
    await reg;
    for (const id of [1, 2, 3]) {
      fake.send({ jsonrpc: '2.0', id: 100 + id, method: 'task.execute', params: { task: { ...TASK, id, type: 'host.x' } } });
    }
    await flush();
    expect(fake.responses()).toEqual([
      { jsonrpc: '2.0', id: 101, error: { code: 1, message: 'corrupt image', data: { retryable: false } } },
      {
        jsonrpc: '2.0',
        id: 102,
        error: { code: 1, message: 'busy', data: { retryable: true, retryAfterMs: 5000, kind: 'busy' } },
      },
      { jsonrpc: '2.0', id: 103, error: { code: 1, message: 'disk on fire', data: { retryable: true } } },
    ]);
  });

  it('aborts the signal on executor.cancel with the reason', async () => {
    const { fake, client } = await started();
    let reason: unknown;
    const reg = client.onTask('host.thumb', (_task, { signal }) =>
      new Promise((_, reject) => {
        signal.addEventListener('abort', () => {
          reason = signal.reason;
          reject(signal.reason);
        });
      }),
    );
    fake.reply(fake.last('executor.register').id, {});
    await reg;
    fake.send({ jsonrpc: '2.0', id: 5, method: 'task.execute', params: { task: TASK } });
    await flush();
    expect(fake.responses()).toEqual([]);
    fake.event('executor.cancel', { id: 7, reason: 'paused' });
    await flush();
    expect(reason).toBeInstanceOf(TaskCancelledError);
    expect((reason as TaskCancelledError).reason).toBe('paused');
    expect(fake.responses()).toEqual([
      { jsonrpc: '2.0', id: 5, error: { code: 2, message: 'stopped: paused', data: { retryable: true, kind: 'cancelled' } } },
    ]);
  });

  it('refuses task.execute for a type it does not run, and unknown requests', async () => {
    const { fake } = await started();
    fake.send({ jsonrpc: '2.0', id: 8, method: 'task.execute', params: { task: TASK } });
    fake.send({ jsonrpc: '2.0', id: 9, method: 'client.what', params: {} });
    expect(fake.responses()).toMatchObject([
      { id: 8, error: { code: -32601, data: { kind: 'noExecutor', retryable: true } } },
      { id: 9, error: { code: -32601, data: { kind: 'methodNotFound' } } },
    ]);
  });

  it('rejects onTask when the sidecar refuses the registration', async () => {
    const { fake, client } = await started();
    const reg = client.onTask('noop', () => ({}));
    fake.replyError(fake.last('executor.register').id, -32007, 'built-in', { kind: 'forbidden' });
    await expect(reg).rejects.toMatchObject({ code: -32007, kind: 'forbidden' });
    fake.send({ jsonrpc: '2.0', id: 3, method: 'task.execute', params: { task: { ...TASK, type: 'noop' } } });
    expect(fake.responses()).toMatchObject([{ id: 3, error: { data: { kind: 'noExecutor' } } }]);
  });

  it('re-registers after a restart, aborts runs of the dead process and drops their answers', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    try {
      const { fake, client } = await started();
      let finish!: (v: unknown) => void;
      let aborted: unknown;
      const reg = client.onTask('host.thumb', (_t, { signal }) => {
        signal.addEventListener('abort', () => (aborted = signal.reason));
        return new Promise((res) => (finish = res));
      });
      fake.reply(fake.last('executor.register').id, {});
      await reg;
      fake.send({ jsonrpc: '2.0', id: 1, method: 'task.execute', params: { task: TASK } });
      fake.exit({ code: null, signal: 'SIGKILL' });
      expect((aborted as TaskCancelledError).reason).toBe('sidecarExited');
      await vi.advanceTimersByTimeAsync(100);
      fake.ready();
      expect(fake.requests('executor.register')).toHaveLength(2);
      finish({ late: true });
      await flush();
      expect(fake.responses()).toEqual([]);
    } finally {
      vi.useRealTimers();
    }
  });
});
