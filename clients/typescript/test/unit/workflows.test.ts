// Workflows in the client: `lookup` and `metrics` are typed calls, and a host executor's
// context says which phase it runs and, for a finalize phase, the children's final states.
import { describe, expect, it } from 'vitest';
import { TaskmillClient, type TaskContext, type TaskInfo } from '../../src/client.js';
import { FakeTransport, flush } from '../helpers/fake-transport.js';

const TASK: TaskInfo = {
  id: 9,
  type: 'host.upload',
  state: 'running',
  priority: 128,
  payload: {},
  tags: {},
  ioCost: {},
  attempt: 0,
  maxRetries: 3,
  createdAt: 1,
};
const CHILDREN = { completed: 2, failed: 1, deadLetter: 0, cancelled: 0, superseded: 0, expired: 0 };

async function started() {
  const fake = new FakeTransport();
  const client = new TaskmillClient({ transport: fake, onError: () => {} });
  const ready = client.start();
  fake.ready();
  await ready;
  return { fake, client };
}

describe('workflows', () => {
  it('lookup sends task.lookup {type, dedupKey} and resolves with the task', async () => {
    const { fake, client } = await started();
    const found = client.lookup('host.upload', 'a.jpg');
    const req = fake.last('task.lookup');
    expect(req.params).toEqual({ type: 'host.upload', dedupKey: 'a.jpg' });
    fake.reply(req.id, { ...TASK, state: 'completed' });
    await expect(found).resolves.toMatchObject({ id: 9, state: 'completed' });
  });

  it('metrics sends scheduler.metrics {}', async () => {
    const { fake, client } = await started();
    const m = client.metrics();
    const req = fake.last('scheduler.metrics');
    expect(req.params).toEqual({});
    const report = {
      sinceAt: 5,
      counters: { submitted: 1 },
      gauges: { pending: 1, running: 0, waiting: 0, blocked: 0, paused: 0 },
    };
    fake.reply(req.id, report);
    await expect(m).resolves.toEqual(report);
  });

  it('hands the handler the phase and, in a finalize phase, the children', async () => {
    const { fake, client } = await started();
    const seen: { phase: string; children: TaskContext['children'] }[] = [];
    const registered = client.onTask('host.upload', (_task, ctx) => {
      seen.push({ phase: ctx.phase, children: ctx.children });
      return ctx.phase === 'finalize' ? { committed: ctx.children?.completed } : { parts: 3 };
    });
    await flush();
    fake.reply(fake.last('executor.register').id, {});
    await registered;
    fake.send({ jsonrpc: '2.0', id: 1, method: 'task.execute', params: { task: TASK, phase: 'run' } });
    fake.send({
      jsonrpc: '2.0',
      id: 2,
      method: 'task.execute',
      params: { task: { ...TASK, phase: 'finalize' }, phase: 'finalize', children: CHILDREN },
    });
    fake.send({ jsonrpc: '2.0', id: 3, method: 'task.execute', params: { task: TASK } });
    await flush();
    expect(seen).toEqual([
      { phase: 'run', children: undefined },
      { phase: 'finalize', children: CHILDREN },
      { phase: 'run', children: undefined }, // an older sidecar sends no phase
    ]);
    expect(fake.responses()).toEqual([
      { jsonrpc: '2.0', id: 1, result: { result: { parts: 3 } } },
      { jsonrpc: '2.0', id: 2, result: { result: { committed: 2 } } },
      { jsonrpc: '2.0', id: 3, result: { result: { parts: 3 } } },
    ]);
  });
});
