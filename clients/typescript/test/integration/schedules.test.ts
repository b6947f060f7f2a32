// Schedules through the TypeScript client over the Node transport against the REAL sidecar.
import { afterEach, describe, expect, it } from 'vitest';
import { TaskmillError } from '../../src/client.js';
import { startSidecar, type Harness } from '../helpers/sidecar.js';

const harnesses: Harness[] = [];
afterEach(async () => {
  const hs = harnesses.splice(0);
  await Promise.all(hs.map((h) => h.dispose()));
  for (const h of hs) expect(h.errors, 'stdout carried a line that is not JSON-RPC').toEqual([]);
});

describe('schedules on the real sidecar', { timeout: 30_000 }, () => {
  it('creates a schedule, sees it fire after its task, pauses, resumes and deletes it', async () => {
    const h = startSidecar();
    harnesses.push(h);
    const { now } = await h.client.invoke('ping');
    const order: string[] = [];
    h.client.on('task.submitted', ({ task }) => {
      if (task.tags.schedule) order.push(`submitted ${task.id}`);
    });
    const fired = h.client.waitFor('schedule.fired');
    h.client.on('schedule.fired', (e) => order.push(`fired ${e.taskId}`));
    const s = await h.client.createSchedule({ name: 'backup', everyMs: 1000, startAt: now + 100, task: { type: 'noop' } });
    expect(s).toMatchObject({ name: 'backup', everyMs: 1000, runs: 0, paused: false, nextAt: now + 100 });
    const e = await fired;
    expect(e.id).toBe(s.id);
    expect(order.slice(0, 2)).toEqual([`submitted ${e.taskId}`, `fired ${e.taskId}`]);

    const paused = await h.client.pauseSchedule('backup');
    expect(paused.paused).toBe(true);
    expect(paused.nextAt ?? null).toBeNull();
    expect((await h.client.resumeSchedule(s.id)).paused).toBe(false);
    expect((await h.client.listSchedules()).map((x) => x.id)).toEqual([s.id]);
    await h.client.deleteSchedule('backup');
    const err = await h.client.getSchedule('backup').catch((x: unknown) => x);
    expect(err).toBeInstanceOf(TaskmillError);
    expect(err).toMatchObject({ code: -32008, kind: 'scheduleNotFound' });
  });
});
