// Large imports as one growing line (src/app/imports.ts and its hook in the store), over the
// real client and a fake transport.
import { afterEach, describe, expect, it } from 'vitest';
import { Imports, submitInBatches } from '../../src/app/imports.js';
import { Store } from '../../src/app/store.js';
import { TaskmillClient, type TaskSpec } from '@taskmill/client';
import { FakeTransport, flush } from '../../../clients/typescript/test/helpers/fake-transport.js';

let store: Store | undefined;
afterEach(() => store?.stop());

async function started() {
  const fake = new FakeTransport();
  const client = new TaskmillClient({ transport: fake });
  store = new Store(client);
  const starting = store.start();
  fake.ready();
  await starting;
  await flush();
  for (const r of fake.requests('task.list')) fake.reply(r.id, { tasks: [] });
  for (const r of fake.requests('events.configure')) fake.reply(r.id, {});
  await flush();
  return { fake, client, store };
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

describe('imports', () => {
  it('asks for task.batchSubmitted when the store starts', async () => {
    const { fake } = await started();
    expect(fake.last('events.configure').params).toEqual({ batchSubmitted: true });
  });

  it('shows an import of several batches as one line that grows, and counts its tasks as they end', async () => {
    const { fake, client, store } = await started();
    const tasks: TaskSpec[] = range(0, 25_000).map((i) => ({ type: 'fs.copy', payload: { i } }));
    const importing = submitInBatches(client, store.imports, 'Copy to backup', tasks, () => {});
    for (const [first, size] of [[1, 10_000], [10_001, 10_000], [20_001, 5_000]] as const) {
      await flush();
      const req = fake.last('task.submitBatch');
      expect(req.params.tasks).toHaveLength(size);
      // The event may come before the answer: its ids are then claimed by the import.
      fake.event('task.batchSubmitted', { ids: range(first, size), count: size });
      fake.reply(req.id, { results: range(first, size).map((id) => ({ id, outcome: 'inserted' })) });
      await flush();
      expect(store.imports.lines).toHaveLength(1);
      expect(store.imports.lines[0]).toMatchObject({ label: 'Copy to backup', total: first - 1 + size });
    }
    await importing;
    expect(store.imports.lines[0]!.submitting).toBe(false);

    fake.event('task.started', { id: 7, type: 'fs.copy', attempt: 0, priority: 128, startedAt: 1 });
    fake.event('task.completed', { id: 7, type: 'fs.copy', result: null, durationMs: 3 });
    fake.event('task.failed', { id: 8, type: 'fs.copy', state: 'failed', attempt: 0, willRetry: false, error: { message: 'x', kind: 'io', retryable: false } });
    fake.event('task.failed', { id: 9, type: 'fs.copy', state: 'pending', attempt: 0, willRetry: true, error: { message: 'x', kind: 'io', retryable: true } });
    await flush();
    expect(store.imports.lines[0]).toMatchObject({ total: 25_000, done: 1, failed: 1 });
    // Neither the announcement nor the events made the page fetch or hold the tasks.
    expect(fake.requests('task.get')).toHaveLength(0);
    expect(store.tasks.size).toBe(0);
  });

  it('fetches the tasks of a small batch, to show them as rows too', async () => {
    const { fake } = await started();
    fake.event('task.batchSubmitted', { ids: [41, 42, 43], count: 3 });
    await flush();
    expect(fake.requests('task.get').map((r) => r.params.id)).toEqual([41, 42, 43]);
  });

  it('keeps only a few finished lines', () => {
    const imports = new Imports();
    for (let k = 0; k < 20; k++) {
      imports.announced([k * 10 + 1, k * 10 + 2]);
      imports.finished(k * 10 + 1, true);
      imports.finished(k * 10 + 2, false);
    }
    expect(imports.lines.length).toBeLessThanOrEqual(5);
    expect(imports.lines[0]).toMatchObject({ total: 2, done: 1, failed: 1 });
    expect(imports.owns(191)).toBe(false);
  });
});
