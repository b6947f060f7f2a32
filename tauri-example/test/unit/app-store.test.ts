// The example app's model of the scheduler (src/app/store.ts), over the real client, its Tauri
// plugin transport and a stand-in for the plugin's Rust side: snapshots from answers must never
// undo newer events.
import { afterEach, describe, expect, it } from 'vitest';
import { Store } from '../../src/app/store.js';
import { TaskmillClient, type TaskInfo } from '@taskmill/client';
import { TauriPluginTransport } from '@taskmill/client/tauri';
import { FakePlugin, flush } from '../helpers/fake-plugin.js';

const COPY: TaskInfo = {
  id: 35,
  type: 'fs.copy',
  state: 'running',
  priority: 192,
  payload: { src: 'a', dst: 'b' },
  tags: {},
  ioCost: {},
  attempt: 0,
  maxRetries: 3,
  createdAt: 1,
  progress: { fraction: 1, estimated: false, bytesDone: 704, bytesTotal: 704 },
};

const STATUS = {
  paused: false,
  pausedGroups: [],
  pausedTypes: [],
  counts: {},
  running: [] as TaskInfo[],
  io: {},
};

let store: Store | undefined;
afterEach(() => store?.stop());

async function started() {
  const fake = new FakePlugin();
  const transport = new TauriPluginTransport({ invoke: fake.invoke, listen: fake.listen });
  const client = new TaskmillClient({ transport });
  store = new Store(client);
  const starting = store.start();
  fake.ready();
  await starting;
  await flush();
  for (const r of fake.requests('task.list')) fake.reply(r.id, { tasks: [] });
  await flush();
  for (const r of fake.requests('scheduler.status')) fake.reply(r.id, STATUS);
  await flush();
  return { fake, store };
}

describe('the app store', () => {
  it('keeps a task completed when a status snapshot from before its completion is read in the same batch', async () => {
    const { fake, store } = await started();
    fake.event('task.submitted', { task: { ...COPY, state: 'pending', progress: undefined } });
    fake.event('task.started', { id: 35, type: 'fs.copy', attempt: 0, priority: 192, startedAt: 2 });
    expect(store.tasks.get(35)?.state).toBe('running');

    const refresh = store.refreshStatus();
    await flush();
    const request = fake.last('scheduler.status');
    // The answer (made while the copy ran) and the copy's task.completed arrive back to back:
    // the event is handled at once, the answer's continuation only afterwards.
    fake.deliver(
      { jsonrpc: '2.0', id: request.id, result: { ...STATUS, running: [COPY] } },
      { jsonrpc: '2.0', method: 'task.completed', params: { id: 35, type: 'fs.copy', attempt: 0, durationMs: 12, result: {} } },
    );
    await refresh;
    expect(store.tasks.get(35)?.state).toBe('completed');
  });

  it('adopts an answer\'s task only when it is new: events about the same change are newer', async () => {
    const { fake, store } = await started();
    store.adopt({ ...COPY, id: 36, state: 'pending' }); // a submit's answer, before any event
    expect(store.tasks.get(36)?.state).toBe('pending');
    fake.event('task.started', { id: 36, type: 'fs.copy', attempt: 0, priority: 192, startedAt: 2 });
    store.adopt({ ...COPY, id: 36, state: 'pending' }); // the same answer, applied late
    expect(store.tasks.get(36)?.state).toBe('running');
  });

  it('adds a running task it had not heard of from a status snapshot', async () => {
    const { fake, store } = await started();
    const refresh = store.refreshStatus();
    await flush();
    fake.reply(fake.last('scheduler.status').id, { ...STATUS, running: [COPY] });
    await refresh;
    expect(store.tasks.get(35)?.state).toBe('running');
  });
});
