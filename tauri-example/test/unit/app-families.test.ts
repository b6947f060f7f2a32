// A parent and its children collapse into one row with a combined progress (src/app/families.ts).
import { describe, expect, it } from 'vitest';
import { collapseFamilies, familyText } from '../../src/app/families.js';
import type { TaskInfo } from '@taskmill/client';

function task(id: number, fields: Partial<TaskInfo> = {}): TaskInfo {
  return {
    id, type: 'sleep', state: 'pending', priority: 128, payload: null, tags: {}, ioCost: {},
    attempt: 0, maxRetries: 3, createdAt: 1, ...fields,
  };
}

describe('families', () => {
  it('hides the children of a known parent and combines their progress with its run', () => {
    const upload = task(1, { state: 'waiting', finalize: true });
    const parts = [
      task(2, { parentId: 1, state: 'completed' }),
      task(3, { parentId: 1, state: 'running', progress: { fraction: 0.5, estimated: false } }),
      task(4, { parentId: 1, state: 'failed' }),
      task(5, { parentId: 1 }),
    ];
    const other = task(6);
    const { hidden, families } = collapseFamilies([upload, ...parts, other]);
    expect([...hidden].sort()).toEqual([2, 3, 4, 5]);
    const f = families.get(1)!;
    // the parent's own run (done: it waits) + 1 + 0.5 + 1 + 0, over 5 parts
    expect(f).toEqual({ id: 1, members: 4, finished: 2, failed: 1, fraction: 3.5 / 5 });
    expect(familyText(f, upload)).toBe('2 of 4 parts done · 1 did not complete');
    expect(families.has(6)).toBe(false);
  });

  it('rolls grandchildren up to the topmost parent shown, and leaves orphans alone', () => {
    const tasks = [
      task(1, { state: 'running', progress: { fraction: 0.2, estimated: false } }),
      task(2, { parentId: 1, state: 'waiting' }),
      task(3, { parentId: 2, state: 'completed' }),
      task(9, { parentId: 99 }), // its parent was pruned from the page
    ];
    const { hidden, families } = collapseFamilies(tasks);
    expect([...hidden].sort()).toEqual([2, 3]);
    expect(families.get(1)).toMatchObject({ members: 2, finished: 1, fraction: (0.2 + 1 + 1) / 3 });
    expect(families.has(2)).toBe(false);
  });

  it('shows a completed family as done and a finalizing one as finalizing', () => {
    const done = collapseFamilies([task(1, { state: 'completed' }), task(2, { parentId: 1, state: 'cancelled' })]);
    expect(done.families.get(1)!.fraction).toBe(1);
    const parent = task(1, { state: 'running', phase: 'finalize' });
    const fin = collapseFamilies([parent, task(2, { parentId: 1, state: 'completed' })]);
    expect(fin.families.get(1)!.fraction).toBe(1);
    expect(familyText(fin.families.get(1)!, parent)).toBe('1 of 1 part done · finalizing');
  });
});
