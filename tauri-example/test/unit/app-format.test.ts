import { describe, expect, it } from 'vitest';
import {
  etaMs, formatBytes, formatDuration, joinPath, priorityBand, raisedPriority, relativeParts, taskTitle,
} from '../../src/app/format.js';
import type { TaskInfo } from '@taskmill/client';

const task = (fields: Partial<TaskInfo>): TaskInfo => ({
  id: 1, type: 'sleep', state: 'running', priority: 128, payload: {}, tags: {}, ioCost: {},
  attempt: 0, maxRetries: 3, createdAt: 0, ...fields,
});

describe('app helpers', () => {
  it('raises a priority to the next named level, and stops at realtime', () => {
    expect([255, 200, 192, 128, 100, 64, 1, 0].map(raisedPriority)).toEqual([192, 192, 128, 64, 64, 0, 0, null]);
    expect([0, 63, 64, 128, 192, 255].map(priorityBand)).toEqual(['realtime', 'realtime', 'high', 'normal', 'background', 'idle']);
  });

  it('maps scanned files into the backup folder on POSIX and Windows paths', () => {
    expect(relativeParts('/pics', '/pics/2024/a.jpg')).toEqual(['2024', 'a.jpg']);
    expect(relativeParts('/pics/', '/pics/a.jpg')).toEqual(['a.jpg']);
    expect(relativeParts('/pics', '/pictures/a.jpg')).toBeNull();
    expect(relativeParts('/pics', '/pics')).toBeNull();
    expect(joinPath('/pics/backup', '2024', 'a.jpg')).toBe('/pics/backup/2024/a.jpg');
    expect(joinPath('C:\\Users\\ann\\Pictures\\', 'backup', 'a.jpg')).toBe('C:\\Users\\ann\\Pictures\\backup\\a.jpg');
    expect(relativeParts('C:\\Users\\ann\\Pictures', 'C:\\Users\\ann\\Pictures\\x\\a.jpg')).toEqual(['x', 'a.jpg']);
  });

  it('takes the ETA from the sidecar, else extrapolates from the run so far', () => {
    expect(etaMs(task({ progress: { fraction: 0.5, estimated: false, etaMs: 1234 } }), 0)).toBe(1234);
    expect(etaMs(task({ startedAt: 1000, progress: { fraction: 0.25, estimated: true } }), 3000)).toBe(6000);
    expect(etaMs(task({ state: 'paused', progress: { fraction: 0.5, estimated: false, etaMs: 9 } }), 0)).toBeNull();
    expect(etaMs(task({}), 0)).toBeNull();
  });

  it('formats sizes, durations and titles', () => {
    expect([0, 512, 1536, 5 * 1024 ** 2].map(formatBytes)).toEqual(['0 B', '512 B', '1.5 KB', '5.0 MB']);
    expect([400, 9_600, 125_000, 7_260_000].map(formatDuration)).toEqual(['0s', '10s', '2m 05s', '2h 01m']);
    expect(taskTitle(task({ label: 'Backup' }))).toBe('Backup');
    expect(taskTitle(task({ type: 'fs.hash', payload: { path: '/pics/2024/a.jpg' } }))).toBe('a.jpg');
    expect(taskTitle(task({ type: 'noop', payload: null }))).toBe('noop');
  });
});
