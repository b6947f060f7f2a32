import { describe, expect, it } from 'vitest';
import { cadence, lastText, nextText, scheduleTitle } from '../../src/app/schedules.js';
import type { Schedule } from '@taskmill/client';

const schedule = (fields: Partial<Schedule>): Schedule => ({
  id: 3, task: { type: 'fs.scan' }, runs: 0, paused: false, ...fields,
});

describe('schedules card helpers', () => {
  it('describes the cadence of fixed-rate and cron schedules', () => {
    expect(cadence(schedule({ everyMs: 900_000 }))).toBe('every 15m 00s');
    expect(cadence(schedule({ cron: '0 2 * * *', timezone: 'Europe/Berlin' }))).toBe('cron 0 2 * * * (Europe/Berlin)');
  });

  it('shows the next run relative to now, paused and ended schedules by their state', () => {
    expect(nextText(schedule({ nextAt: 70_000 }), 10_000)).toBe('in 1m 00s');
    expect(nextText(schedule({ nextAt: 10_000 }), 10_000)).toBe('due');
    expect(nextText(schedule({ paused: true }), 10_000)).toBe('paused');
    expect(nextText(schedule({ runs: 5, maxRuns: 5 }), 10_000)).toBe('ended');
  });

  it('shows the last run, or never', () => {
    expect(lastText(schedule({ lastAt: 5_000 }), 65_000)).toBe('1m 00s ago');
    expect(lastText(schedule({}), 65_000)).toBe('never');
  });

  it('names a schedule by its name, else by its task type and id', () => {
    expect(scheduleTitle(schedule({ name: 'nightly backup' }))).toBe('nightly backup');
    expect(scheduleTitle(schedule({}))).toBe('fs.scan #3');
  });
});
