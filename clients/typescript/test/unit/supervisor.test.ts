// The supervisor alone (src/supervisor.ts): a fake transport and stub parts that
// record what it asks of the JSON-RPC core, the events and the host executors, in order.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Supervisor, type SupervisedParts } from '../../src/supervisor.js';
import { FakeTransport, READY_PARAMS } from '../helpers/fake-transport.js';

function supervised() {
  const fake = new FakeTransport();
  const log: string[] = [];
  let sup!: Supervisor;
  const parts: SupervisedParts = {
    rpc: {
      receive: (line) => {
        const msg = JSON.parse(line);
        log.push(`receive ${msg.method}`);
        if (msg.method === 'sidecar.ready') sup.handleReady(msg.params);
      },
      sendQueued: () => void log.push('sendQueued'),
      rejectCalls: (which, err) => void log.push(`reject ${which} ${err.kind}`),
      requestIgnoringAnswer: (method) => void log.push(`request ${method}`),
    },
    events: { emit: (event, params) => void log.push(`emit ${event} ${JSON.stringify(params)}`) },
    executors: {
      registerAll: () => void log.push('registerAll'),
      abortRuns: (reason) => void log.push(`abortRuns ${reason}`),
    },
    reportError: (err) => void log.push(`error ${err.message}`),
  };
  sup = new Supervisor(fake, { restart: { initialDelayMs: 100 } }, parts);
  return { fake, sup, log };
}

describe('Supervisor', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('at ready registers host executors before sending the queue; at exit aborts runs before failing calls', async () => {
    const { fake, sup, log } = supervised();
    const ready = sup.start();
    expect(sup.generation).toBe(1);
    fake.ready();
    await expect(ready).resolves.toEqual(READY_PARAMS);
    expect(sup.isReady).toBe(true);
    fake.exit({ code: 1, signal: null });
    expect(log).toEqual([
      'receive sidecar.ready',
      'registerAll',
      'sendQueued',
      'abortRuns sidecarExited',
      'reject sent sidecarExited',
      'emit exited {"code":1,"signal":null,"willRestart":true,"delayMs":100}',
    ]);
    log.length = 0;
    await vi.advanceTimersByTimeAsync(100);
    expect([fake.starts, sup.generation, sup.restartCount]).toEqual([2, 2, 1]);
    fake.ready();
    expect(log.at(-1)).toMatch(/^emit restarted \{"restarts":1,"exit":\{"code":1/);
  });

  it('close: drops the queue, asks for shutdown, and on exit aborts runs as closed', async () => {
    const { fake, sup, log } = supervised();
    const ready = sup.start();
    fake.ready();
    await ready;
    log.length = 0;
    const closing = sup.close({ graceMs: 50 });
    expect(sup.acceptsNotifications).toBe(true);
    expect(sup.refusal()).toMatchObject({ kind: 'closed' });
    fake.exit({ code: 0, signal: null });
    await closing;
    expect(log).toEqual([
      'reject queued closed',
      'request shutdown',
      'abortRuns closed',
      'reject sent closed',
      'emit exited {"code":0,"signal":null,"willRestart":false}',
    ]);
    expect(sup.acceptsNotifications).toBe(false);
  });
});
