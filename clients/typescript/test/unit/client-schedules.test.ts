import { describe, expect, it } from 'vitest';
import { TaskmillClient, type Schedule } from '../../src/client.js';
import { FakeTransport, flush } from '../helpers/fake-transport.js';

const SCHEDULE: Schedule = { id: 4, name: 'backup', task: { type: 'fs.copy' }, everyMs: 60_000, runs: 0, paused: false };

async function started() {
  const fake = new FakeTransport();
  const client = new TaskmillClient({ transport: fake, onError: () => undefined });
  const ready = client.start();
  fake.ready();
  await ready;
  return { fake, client };
}

describe('schedule methods', () => {
  it('send schedule.* requests, by id for a number and by name for a string', async () => {
    const { fake, client } = await started();
    const created = client.createSchedule({ task: { type: 'fs.copy' }, everyMs: 60_000, name: 'backup' });
    await flush();
    expect(fake.last('schedule.create').params).toEqual({ task: { type: 'fs.copy' }, everyMs: 60_000, name: 'backup' });
    fake.reply(fake.last('schedule.create').id, SCHEDULE);
    await expect(created).resolves.toEqual(SCHEDULE);

    const paused = client.pauseSchedule(4);
    await flush();
    expect(fake.last('schedule.pause').params).toEqual({ id: 4 });
    fake.reply(fake.last('schedule.pause').id, { ...SCHEDULE, paused: true });
    await expect(paused).resolves.toMatchObject({ paused: true });

    const resumed = client.resumeSchedule('backup');
    await flush();
    expect(fake.last('schedule.resume').params).toEqual({ name: 'backup' });
    fake.reply(fake.last('schedule.resume').id, SCHEDULE);
    await resumed;

    const listed = client.listSchedules();
    await flush();
    fake.reply(fake.last('schedule.list').id, { schedules: [SCHEDULE] });
    await expect(listed).resolves.toEqual([SCHEDULE]);

    const deleted = client.deleteSchedule('backup');
    await flush();
    expect(fake.last('schedule.delete').params).toEqual({ name: 'backup' });
    fake.reply(fake.last('schedule.delete').id, {});
    await expect(deleted).resolves.toBeUndefined();
  });

  it('rejects with the sidecar error for an unknown schedule', async () => {
    const { fake, client } = await started();
    const got = client.getSchedule(99);
    await flush();
    fake.replyError(fake.last('schedule.get').id, -32008, 'no schedule with id 99', { kind: 'scheduleNotFound', id: 99 });
    await expect(got).rejects.toMatchObject({ code: -32008, kind: 'scheduleNotFound' });
  });
});
