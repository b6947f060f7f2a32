// Small pure helpers for the task view: names, numbers, durations, paths.
import type { TaskInfo } from '@taskmill/client';

export type State = TaskInfo['state'];

export const ACTIVE_STATES: readonly State[] = ['running', 'pending', 'paused', 'waiting', 'blocked'];
export const FINAL_STATES: readonly State[] = [
  'completed', 'failed', 'deadLetter', 'cancelled', 'superseded', 'expired',
];
export const isActive = (s: State): boolean => ACTIVE_STATES.includes(s);

/** PROTOCOL.md priority names, most urgent first. */
export const PRIORITY_LEVELS = [
  { name: 'realtime', value: 0 },
  { name: 'high', value: 64 },
  { name: 'normal', value: 128 },
  { name: 'background', value: 192 },
  { name: 'idle', value: 255 },
] as const;

/** The band a priority falls in (0–63 realtime, 64–127 high, … 255 idle). */
export function priorityBand(p: number): (typeof PRIORITY_LEVELS)[number]['name'] {
  if (p >= 255) return 'idle';
  if (p >= 192) return 'background';
  if (p >= 128) return 'normal';
  if (p >= 64) return 'high';
  return 'realtime';
}

/** The next named level that is strictly more urgent, or null at 0. */
export function raisedPriority(p: number): number | null {
  const up = [...PRIORITY_LEVELS].reverse().find((l) => l.value < p);
  return up ? up.value : null;
}

export const STATE_LABELS: Record<State, string> = {
  running: 'Running', pending: 'Pending', paused: 'Paused', waiting: 'Waiting', blocked: 'Blocked',
  completed: 'Completed', failed: 'Failed', deadLetter: 'Dead letter', cancelled: 'Cancelled',
  superseded: 'Superseded', expired: 'Expired',
};

export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 1) return '0 B';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1024)));
  const v = n / 1024 ** i;
  return `${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

export const formatRate = (bps: number | undefined): string => `${formatBytes(bps ?? 0)}/s`;

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

/** The remaining time of a running task: the sidecar's `etaMs`, else extrapolated from its run. */
export function etaMs(task: TaskInfo, now: number): number | null {
  const p = task.progress;
  if (!p || task.state !== 'running') return null;
  if (typeof p.etaMs === 'number') return p.etaMs;
  if (p.fraction > 0.01 && task.startedAt) {
    return ((now - task.startedAt) * (1 - p.fraction)) / p.fraction;
  }
  return null;
}

export const basename = (path: string): string => path.split(/[\\/]/).filter(Boolean).pop() ?? path;

export const separatorOf = (path: string): string => (path.includes('\\') && !path.includes('/') ? '\\' : '/');

export function joinPath(dir: string, ...parts: string[]): string {
  const sep = separatorOf(dir);
  return [dir.replace(/[\\/]+$/, ''), ...parts].join(sep);
}

/** `path` relative to `root` as parts, or null when it is not under it. */
export function relativeParts(root: string, path: string): string[] | null {
  const r = root.replace(/[\\/]+$/, '').split(/[\\/]/);
  const p = path.split(/[\\/]/);
  if (p.length <= r.length) return null;
  for (let i = 0; i < r.length; i++) if (r[i] !== p[i]) return null;
  return p.slice(r.length);
}

/** What the row says about a task: its label, else the file it works on, else its type. */
export function taskTitle(task: TaskInfo): string {
  if (task.label) return task.label;
  const payload = task.payload as Record<string, unknown> | null;
  for (const key of ['path', 'src', 'root', 'url']) {
    const v = payload?.[key];
    if (typeof v === 'string') return basename(v);
  }
  return task.type;
}
