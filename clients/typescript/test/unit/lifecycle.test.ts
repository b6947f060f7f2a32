// The client's refusals and subscriptions: a sidecar of another protocol version is refused
// (kind `protocolMismatch`) and stopped, never restarted; the exit codes that mean "restarting
// cannot help" (2, 3, 4) are not restarted; `on` hands the params and unsubscribes at once.
import { afterEach, beforeEach, describe, expect, expectTypeOf, it, vi } from 'vitest';
import {
  CLIENT_ERROR_CODES,
  PROTOCOL_VERSION,
  TaskmillClient,
  TaskmillError,
  type ClientOptions,
  type ExitedEvent,
  type TaskProgress,
} from '../../src/client.js';
import { FakeTransport, flush } from '../helpers/fake-transport.js';

function setup(options: Partial<ClientOptions> = {}) {
  const fake = new FakeTransport();
  const errors: Error[] = [];
  const client = new TaskmillClient({
    transport: fake,
    onError: (error) => errors.push(error),
    restart: { initialDelayMs: 100 },
    closeGraceMs: 1000,
    closeExtraMs: 500,
    ...options,
  });
  return { fake, client, errors };
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('protocol version', () => {
  it('refuses a sidecar.ready of another version: queued calls fail, the sidecar is shut down and not restarted', async () => {
    const { fake, client, errors } = setup();
    const ready = client.start().catch((e: unknown) => e);
    const call = client.invoke('ping').catch((e: unknown) => e);
    const exits: ExitedEvent[] = [];
    client.on('exited', (e) => exits.push(e));
    fake.ready({ protocolVersion: PROTOCOL_VERSION + 1 });

    const err = (await call) as TaskmillError;
    expect(err).toBeInstanceOf(TaskmillError);
    expect(err.kind).toBe('protocolMismatch');
    expect(err.code).toBe(CLIENT_ERROR_CODES.protocolMismatch);
    expect(err.data).toMatchObject({ expected: PROTOCOL_VERSION, actual: PROTOCOL_VERSION + 1 });
    expect(err.message).toContain(`protocol version ${PROTOCOL_VERSION + 1}`);
    expect(await ready).toMatchObject({ kind: 'protocolMismatch' });
    expect(errors.map((e) => (e as TaskmillError).kind)).toEqual(['protocolMismatch']);
    // the queued ping was never written; the sidecar is asked to shut down gracefully
    expect(fake.requests('ping')).toHaveLength(0);
    expect(fake.last('shutdown').params).toEqual({ graceMs: 1000 });
    expect(client.isReady).toBe(false);

    fake.exit({ code: 0, signal: null });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(fake.starts).toBe(1);
    expect(fake.kills).toBe(0);
    expect(exits).toEqual([{ code: 0, signal: null, willRestart: false }]);
    await expect(client.invoke('ping')).rejects.toMatchObject({ kind: 'protocolMismatch' });
    await expect(client.start()).rejects.toMatchObject({ kind: 'protocolMismatch' });
    expect(fake.starts).toBe(1);
  });

  it('kills a refused sidecar that ignores shutdown', async () => {
    const { fake, client } = setup();
    const ready = client.start().catch((e: unknown) => e);
    fake.ready({ protocolVersion: 0 });
    expect(await ready).toMatchObject({ kind: 'protocolMismatch' });
    await vi.advanceTimersByTimeAsync(1499);
    expect(fake.kills).toBe(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(fake.kills).toBe(1);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(fake.starts).toBe(1);
  });

  it('accepts its own version', async () => {
    const { fake, client } = setup();
    const ready = client.start();
    fake.ready({ protocolVersion: PROTOCOL_VERSION });
    await expect(ready).resolves.toMatchObject({ protocolVersion: PROTOCOL_VERSION });
    expect(client.isReady).toBe(true);
  });

  it('refuses an initialize answer of another version', async () => {
    const { fake, client } = setup();
    const ready = client.start();
    fake.ready();
    await ready;
    const init = client.invoke('initialize', { client: { name: 't', version: '1' } });
    const other = client.invoke('ping').catch((e: unknown) => e);
    await flush();
    fake.reply(fake.last('initialize').id, {
      serverInfo: { name: 'taskmill-sidecar', version: '9' },
      protocolVersion: PROTOCOL_VERSION + 1,
      executors: [],
      capabilities: {},
    });
    await expect(init).rejects.toMatchObject({
      kind: 'protocolMismatch',
      method: 'initialize',
      data: { expected: PROTOCOL_VERSION, actual: PROTOCOL_VERSION + 1 },
    });
    expect(await other).toMatchObject({ kind: 'protocolMismatch' });
    expect(fake.requests('shutdown')).toHaveLength(1);
    await expect(client.invoke('ping')).rejects.toMatchObject({ kind: 'protocolMismatch' });
  });
});

describe('exit codes', () => {
  it.each([
    [2, 'bad command line'],
    [3, 'database held by another sidecar'],
    [4, 'database unreadable'],
  ])('does not restart after exit code %i (%s)', async (code, sentence) => {
    const { fake, client } = setup();
    const ready = client.start().catch((e: unknown) => e);
    const exits: ExitedEvent[] = [];
    client.on('exited', (e) => exits.push(e));
    fake.stderr(`taskmill-sidecar: ${sentence}\n`);
    fake.exit({ code, signal: null });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(fake.starts).toBe(1);
    expect(exits).toEqual([{ code, signal: null, willRestart: false }]);
    const err = (await ready) as TaskmillError;
    expect(err.kind).toBe('sidecarFailed');
    expect(err.message).toContain(`exit code ${code}: taskmill-sidecar: ${sentence}`);
  });

  it('restarts after exit code 1 (a crash)', async () => {
    const { fake, client } = setup();
    void client.start();
    fake.exit({ code: 1, signal: null });
    await vi.advanceTimersByTimeAsync(100);
    expect(fake.starts).toBe(2);
  });
});

describe('on()', () => {
  it('hands the typed params themselves, returns the unsubscribe function synchronously', async () => {
    const { fake, client } = setup();
    const ready = client.start();
    fake.ready();
    await ready;
    const got: unknown[] = [];
    const off = client.on('task.progress', (params, event) => {
      expectTypeOf(params).toEqualTypeOf<TaskProgress>();
      got.push([event, params]);
    });
    expect(typeof off).toBe('function');
    expect(off).not.toHaveProperty('then');
    const params = { id: 1, type: 'sleep', progress: { fraction: 0.25, estimated: false } };
    fake.event('task.progress', params);
    expect(got).toEqual([['task.progress', params]]); // no {event, id, payload} wrapper
    expect(off()).toBeUndefined();
    off(); // twice is harmless
    fake.event('task.progress', params);
    expect(got).toHaveLength(1);
  });

  it('has no listen alias', () => {
    const { client } = setup();
    expect('listen' in client).toBe(false);
  });
});
