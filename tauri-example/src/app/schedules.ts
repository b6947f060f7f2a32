// The schedules card: every recurring schedule with its cadence, next run, last run and a
// pause/resume button, plus one button that creates an hourly rescan of the folder. The list is
// read with `schedule.list` at start and after each restart of the sidecar, and patched from
// `schedule.fired` / `schedule.skipped` (which carry the next time); relative times are redrawn
// once a second. A sidecar without the "schedules" feature shows a note instead.
import type { Schedule, TaskmillClient } from '@taskmill/client';
import { formatDuration } from './format.js';

export type Log = (text: string, tone?: 'info' | 'ok' | 'error') => void;

/** How often a schedule fires, in words: `every 15m 00s`, `cron 0 2 * * * (Europe/Berlin)`. */
export function cadence(s: Schedule): string {
  if (s.everyMs != null) return `every ${formatDuration(s.everyMs)}`;
  return `cron ${s.cron ?? '?'}${s.timezone ? ` (${s.timezone})` : ''}`;
}

/** The next run relative to `now`: `in 4m 10s`, `due`, `paused`, or `ended` (maxRuns reached). */
export function nextText(s: Schedule, now: number): string {
  if (s.paused) return 'paused';
  if (s.nextAt == null) return 'ended';
  return s.nextAt <= now ? 'due' : `in ${formatDuration(s.nextAt - now)}`;
}

/** The last run relative to `now`: `2m 05s ago`, or `never`. */
export function lastText(s: Schedule, now: number): string {
  return s.lastAt == null ? 'never' : `${formatDuration(Math.max(0, now - s.lastAt))} ago`;
}

/** A schedule's display name: its name, else its task's type and id. */
export const scheduleTitle = (s: Schedule): string => s.name ?? `${s.task.type} #${s.id}`;

export class SchedulesView {
  private readonly schedules = new Map<number, Schedule>();
  private readonly list: HTMLUListElement;
  private readonly note: HTMLElement;
  private supported = true;

  constructor(
    private readonly card: HTMLElement,
    private readonly client: TaskmillClient,
    private readonly folder: () => string,
    private readonly log: Log,
  ) {
    card.innerHTML = `
      <h2>Schedules</h2>
      <ul class="schedules" data-testid="schedules"></ul>
      <p class="schedules-note"></p>
      <button class="btn wide" data-schedule-add>Rescan folder every hour</button>`;
    this.list = card.querySelector('ul')!;
    this.note = card.querySelector('.schedules-note')!;
    card.querySelector('[data-schedule-add]')!.addEventListener('click', () => void this.addRescan());
    this.list.addEventListener('click', (ev) => {
      const b = (ev.target as HTMLElement).closest<HTMLButtonElement>('button[data-schedule-id]');
      if (b) void this.toggle(Number(b.dataset.scheduleId));
    });
    client.on('sidecar.ready', () => void this.refresh());
    client.on('schedule.fired', (e) => this.patch(e.id, e.nextAt));
    client.on('schedule.skipped', (e) => this.patch(e.id, e.nextAt));
    setInterval(() => this.render(), 1000);
  }

  /** Reads every schedule again (at start and after a restart of the sidecar). */
  async refresh(): Promise<void> {
    try {
      const all = await this.client.listSchedules();
      this.schedules.clear();
      for (const s of all) this.schedules.set(s.id, s);
      this.supported = true;
    } catch (err) {
      this.supported = false;
      this.log(`Schedules: ${err instanceof Error ? err.message : String(err)}`, 'error');
    }
    this.render();
  }

  /** A firing moved `nextAt`; `runs`, `lastAt` come with a fresh read of that schedule. */
  private patch(id: number, nextAt: number | null | undefined): void {
    const s = this.schedules.get(id);
    if (s) this.schedules.set(id, { ...s, nextAt: nextAt ?? null });
    this.client.getSchedule(id).then(
      (fresh) => {
        this.schedules.set(id, fresh);
        this.render();
      },
      () => this.schedules.delete(id),
    );
    this.render();
  }

  private async toggle(id: number): Promise<void> {
    const s = this.schedules.get(id);
    if (!s) return;
    try {
      const next = s.paused ? await this.client.resumeSchedule(id) : await this.client.pauseSchedule(id);
      this.schedules.set(id, next);
      this.log(`${s.paused ? 'Resumed' : 'Paused'} schedule ${scheduleTitle(s)}`, 'ok');
    } catch (err) {
      this.log(`Schedule: ${err instanceof Error ? err.message : String(err)}`, 'error');
    }
    this.render();
  }

  private async addRescan(): Promise<void> {
    const root = this.folder();
    try {
      const s = await this.client.createSchedule({
        name: `rescan ${root}`,
        everyMs: 3_600_000,
        task: { type: 'fs.scan', priority: 'background', group: 'library', label: `hourly rescan of ${root}`,
                payload: { root, glob: '*', childType: 'fs.hash', childPriority: 200 } },
      });
      this.schedules.set(s.id, s);
      this.log(`Scheduled an hourly rescan of ${root}`, 'ok');
    } catch (err) {
      this.log(`Schedule: ${err instanceof Error ? err.message : String(err)}`, 'error');
    }
    this.render();
  }

  private render(): void {
    const now = Date.now();
    this.note.textContent = !this.supported
      ? 'This sidecar has no schedules.'
      : this.schedules.size === 0 ? 'No schedules yet.' : '';
    const rows = [...this.schedules.values()].sort((a, b) => a.id - b.id);
    const seen = new Set<string>();
    for (const s of rows) {
      const key = String(s.id);
      seen.add(key);
      let li = this.list.querySelector<HTMLLIElement>(`li[data-schedule="${key}"]`);
      if (!li) {
        li = document.createElement('li');
        li.dataset.schedule = key;
        li.innerHTML = `<div class="s-main"><span class="s-name"></span><small class="s-cadence"></small></div>
          <div class="s-times"><span class="s-next"></span><small class="s-last"></small></div>
          <button class="btn small" data-schedule-id="${key}"></button>`;
        this.list.append(li);
      }
      li.classList.toggle('paused', s.paused);
      li.querySelector('.s-name')!.textContent = scheduleTitle(s);
      li.querySelector('.s-cadence')!.textContent = `${cadence(s)} · ${s.runs} runs`;
      li.querySelector('.s-next')!.textContent = `next: ${nextText(s, now)}`;
      li.querySelector('.s-last')!.textContent = `last: ${lastText(s, now)}`;
      li.querySelector('button')!.textContent = s.paused ? 'Resume' : 'Pause';
    }
    for (const li of this.list.querySelectorAll<HTMLLIElement>('li[data-schedule]')) {
      if (!seen.has(li.dataset.schedule!)) li.remove();
    }
  }
}
