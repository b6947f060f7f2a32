// The example app's UI: plain DOM, rendered once per animation frame from the Store. Rows are
// keyed by task id and updated in place, so buttons stay put while progress streams in.
import type { TaskInfo, TaskmillClient, TaskSpec } from '@taskmill/client';
import { PolicyPanel } from './policy.js';
import {
  ACTIVE_STATES, FINAL_STATES, STATE_LABELS, basename, etaMs, formatBytes, formatDuration, formatRate,
  isActive, joinPath, priorityBand, raisedPriority, relativeParts, taskTitle, type State,
} from './format.js';
import { submitInBatches } from './imports.js';
import { SchedulesView } from './schedules.js';
import { collapseFamilies, familyText, type Family } from './families.js';
import type { Store } from './store.js';

/** Groups the app submits to (per-group pause/resume). */
export const GROUPS = [
  { id: 'demo', label: 'Simulated work' },
  { id: 'library', label: 'Scan & hash' },
  { id: 'backup', label: 'Backup copies' },
] as const;

const MAX_ROWS = 200;
type Filter = 'all' | 'active' | 'finished';

export interface AppOptions {
  /** The folder offered for scanning (the sidecar's `--allow-path`). */
  folder: string;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K, attrs: Record<string, string> = {}, ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

function setText(e: Element, text: string): void {
  if (e.textContent !== text) e.textContent = text;
}

interface Row {
  tr: HTMLTableRowElement;
  key: string;
}

export class App {
  private filter: Filter = 'all';
  private frame = 0;
  private readonly rows = new Map<number, Row>();
  /** Parents standing for their children (families.ts), from the last render. */
  private families = new Map<number, Family>();
  private readonly $: Record<string, HTMLElement> = {};
  private simCounter = 0;

  constructor(
    private readonly root: HTMLElement,
    private readonly client: TaskmillClient,
    private readonly store: Store,
    private readonly options: AppOptions,
  ) {
    this.build();
    new SchedulesView(this.root.querySelector('#schedules-card')!, client, () => this.folder(), (t, tone) => store.log(t, tone));
    store.subscribe(() => this.schedule());
    // ETAs and elapsed times move even without events.
    setInterval(() => this.schedule(), 1000);
    this.schedule();
  }

  // --- layout --------------------------------------------------------------------------------

  private build(): void {
    const q = (sel: string) => this.root.querySelector<HTMLElement>(sel)!;
    this.root.innerHTML = `
      <header class="topbar">
        <div class="brand"><span class="logo" aria-hidden="true"></span>Taskmill <small>media tasks</small></div>
        <div class="sidecar" data-testid="sidecar-status"><span class="dot"></span><span class="text">Starting sidecar…</span></div>
        <div class="spacer"></div>
        <button class="btn" id="btn-pause-all" data-testid="pause-all">Pause all</button>
      </header>
      <aside class="side">
        <section class="card">
          <h2>Add work</h2>
          <label class="field"><span>Folder</span><input id="folder" spellcheck="false" /></label>
          <button class="btn primary wide" id="btn-scan">Scan &amp; hash folder</button>
          <label class="field"><span>Back up to</span><input id="backup" spellcheck="false" /></label>
          <button class="btn wide" id="btn-copy">Copy files</button>
          <div class="sim">
            <label class="field small"><span>Tasks</span><input id="sim-count" type="number" min="1" max="20" value="3" /></label>
            <label class="field small"><span>Seconds</span><input id="sim-seconds" type="number" min="1" max="600" value="8" /></label>
            <button class="btn" id="btn-simulate">Simulated work</button>
          </div>
        </section>
        <section class="card">
          <h2>Groups</h2>
          <ul class="groups" id="groups"></ul>
        </section>
        <section class="card" id="schedules-card"></section>
        <section class="card">
          <h2>IO pressure</h2>
          <div class="io-wrap">
            <div class="gauge" id="io-gauge" data-testid="io-gauge">
              <svg viewBox="0 0 120 66" aria-hidden="true">
                <path class="track" d="M10 60 A50 50 0 0 1 110 60" />
                <path class="value" d="M10 60 A50 50 0 0 1 110 60" pathLength="100" />
              </svg>
              <div class="gauge-label"><strong class="pct">0%</strong><span class="state">idle</span></div>
            </div>
            <dl class="io">
              <dt>Disk read</dt><dd class="io-read">0 B/s</dd>
              <dt>Disk write</dt><dd class="io-write">0 B/s</dd>
              <dt>Network</dt><dd class="io-net">0 B/s</dd>
              <dt>Held back</dt><dd class="io-deferred">0 tasks</dd>
            </dl>
          </div>
        </section>
        <section id="policy-card"></section>
      </aside>
      <main class="main">
        <div class="counts" id="counts"></div>
        <div class="toolbar">
          <div class="tabs" role="tablist">
            <button class="tab active" data-filter="all">All</button>
            <button class="tab" data-filter="active">Active</button>
            <button class="tab" data-filter="finished">Finished</button>
          </div>
          <div class="summary" id="summary"></div>
        </div>
        <ol class="imports" id="imports" aria-label="Imports"></ol>
        <div class="table-wrap">
          <table class="tasks">
            <thead><tr><th class="c-id">#</th><th>Task</th><th class="c-prio">Priority</th><th class="c-state">State</th><th class="c-progress">Progress</th><th class="c-actions"></th></tr></thead>
            <tbody id="tasks"></tbody>
          </table>
          <div class="empty" id="empty">No tasks yet: add some work on the left.</div>
        </div>
        <ol class="activity" id="activity" aria-label="Activity"></ol>
      </main>`;
    for (const id of ['folder', 'backup', 'sim-count', 'sim-seconds', 'groups', 'counts', 'tasks', 'empty', 'summary', 'activity', 'imports', 'io-gauge', 'btn-pause-all']) {
      this.$[id] = q(`#${id}`);
    }
    this.$.sidecar = q('.sidecar');
    (this.$.folder as HTMLInputElement).value = this.options.folder;
    (this.$.backup as HTMLInputElement).value = joinPath(this.options.folder, 'taskmill-backup');

    for (const s of [...ACTIVE_STATES, ...FINAL_STATES]) {
      this.$.counts!.append(
        el('div', { class: `count s-${s}`, 'data-count': s }, el('span', { class: 'n' }, '0'), el('span', { class: 'l' }, STATE_LABELS[s])),
      );
    }
    for (const g of GROUPS) {
      this.$.groups!.append(
        el('li', { 'data-group': g.id, title: `group "${g.id}"` },
          el('span', { class: 'g-name' }, g.label),
          el('span', { class: 'g-state' }, ''),
          el('button', { class: 'btn small', 'data-group-toggle': g.id }, 'Pause')),
      );
    }

    new PolicyPanel(q('#policy-card'), this.client, (what, err) =>
      this.store.log(`${what}: ${err instanceof Error ? err.message : String(err)}`, 'error'));
    q('#btn-scan').addEventListener('click', () => void this.guard('Scan', () => this.scan()));
    q('#btn-copy').addEventListener('click', () => void this.guard('Copy', () => this.copy()));
    q('#btn-simulate').addEventListener('click', () => void this.guard('Simulated work', () => this.simulate()));
    this.$['btn-pause-all']!.addEventListener('click', () =>
      void this.guard('Pause', () =>
        this.client.invoke(this.store.status?.paused ? 'scheduler.resume' : 'scheduler.pause', {}).then(() => this.store.refreshStatus())),
    );
    this.$.groups!.addEventListener('click', (ev) => {
      const b = (ev.target as HTMLElement).closest<HTMLElement>('[data-group-toggle]');
      if (!b) return;
      const group = b.dataset.groupToggle!;
      const paused = this.store.status?.pausedGroups.includes(group);
      void this.guard('Group', () =>
        this.client.invoke(paused ? 'scheduler.resume' : 'scheduler.pause', { group }).then(() => this.store.refreshStatus()));
    });
    this.root.querySelector('.tabs')!.addEventListener('click', (ev) => {
      const b = (ev.target as HTMLElement).closest<HTMLElement>('[data-filter]');
      if (!b) return;
      this.filter = b.dataset.filter as Filter;
      for (const t of this.root.querySelectorAll('.tab')) t.classList.toggle('active', t === b);
      this.schedule();
    });
    this.$.tasks!.addEventListener('click', (ev) => {
      const b = (ev.target as HTMLElement).closest<HTMLButtonElement>('button[data-action]');
      const tr = b?.closest<HTMLElement>('tr[data-task-id]');
      if (!b || !tr || b.disabled) return;
      void this.taskAction(Number(tr.dataset.taskId), b.dataset.action!);
    });
  }

  // --- actions -------------------------------------------------------------------------------

  private async guard(what: string, fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.store.log(`${what}: ${err instanceof Error ? err.message : String(err)}`, 'error');
    }
  }

  private folder(): string {
    return (this.$.folder as HTMLInputElement).value.trim();
  }

  private async scan(): Promise<void> {
    const root = this.folder();
    const r = await this.client.invoke('task.submit', {
      type: 'fs.scan',
      payload: { root, childType: 'fs.hash' },
      group: 'library',
      label: `Scan & hash ${basename(root)}`,
      dedupKey: true,
    });
    if (r.task) this.store.adopt(r.task);
    this.store.log(r.outcome === 'inserted' ? `Scanning ${root}` : `A scan of ${root} is already queued`, 'info');
  }

  /** Copies every file a finished hash saw under the folder into the backup folder. */
  private async copy(): Promise<void> {
    const root = this.folder();
    const backup = (this.$.backup as HTMLInputElement).value.trim();
    const tasks: TaskSpec[] = [];
    let cursor: string | undefined;
    const seen = new Set<string>();
    for (let page = 0; page < 20; page++) {
      const r = await this.client.invoke('task.list', { type: 'fs.hash', state: 'completed', limit: 1000, ...(cursor ? { cursor } : {}) });
      for (const t of r.tasks) {
        const src = (t.payload as { path?: unknown } | null)?.path;
        if (typeof src !== 'string' || seen.has(src)) continue;
        const rel = relativeParts(root, src);
        if (!rel || relativeParts(backup, src)) continue;
        seen.add(src);
        tasks.push({
          type: 'fs.copy',
          payload: { src, dst: joinPath(backup, ...rel), overwrite: true },
          group: 'backup',
          priority: 'background',
          dedupKey: true,
          label: `Copy ${rel.join('/')}`,
        });
      }
      if (!r.nextCursor) break;
      cursor = r.nextCursor;
    }
    if (tasks.length === 0) {
      this.store.log(`Nothing hashed under ${root} yet: scan it first`, 'warn');
      return;
    }
    // One line for the whole copy however many files (task.batchSubmitted; imports.ts).
    this.store.log(`Copying ${tasks.length} files to ${backup}`, 'info');
    await submitInBatches(this.client, this.store.imports, `Copy to ${basename(backup)}`, tasks, () => this.schedule());
  }

  private async simulate(): Promise<void> {
    const count = Math.max(1, Math.min(20, Number((this.$['sim-count'] as HTMLInputElement).value) || 1));
    const seconds = Math.max(1, Math.min(600, Number((this.$['sim-seconds'] as HTMLInputElement).value) || 8));
    const priorities = ['normal', 'background', 'high'] as const;
    const tasks = Array.from({ length: count }, (_, i) => ({
      type: 'sleep',
      payload: { ms: seconds * 1000, steps: Math.max(4, seconds * 4) },
      group: 'demo',
      priority: priorities[i % priorities.length],
      label: `Simulated work ${++this.simCounter}`,
    }));
    // A few tasks, each shown as its row: one task.submit each (pipelined), not a batch, which
    // this page has announced as one task.batchSubmitted.
    for (const r of await Promise.all(tasks.map((t) => this.client.invoke('task.submit', t)))) {
      if (r.task) this.store.adopt(r.task);
    }
    this.store.log(`Submitted ${count} simulated tasks of ${seconds}s`, 'info');
  }

  private async taskAction(id: number, action: string): Promise<void> {
    const task = this.store.tasks.get(id);
    if (!task) return;
    await this.guard(`#${id}`, async () => {
      switch (action) {
        case 'pause':
          this.store.adopt(await this.client.invoke('task.pause', { id }));
          break;
        case 'resume':
          this.store.adopt(await this.client.invoke('task.resume', { id }));
          break;
        case 'cancel':
          await this.client.invoke('task.cancel', { id });
          break;
        case 'raise': {
          const priority = raisedPriority(task.priority);
          if (priority !== null) this.store.adopt(await this.client.invoke('task.setPriority', { id, priority }));
          break;
        }
      }
    });
  }

  // --- rendering -----------------------------------------------------------------------------

  private schedule(): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  private render(): void {
    const { store } = this;
    const status = store.status;
    const now = Date.now();

    // Sidecar and global pause.
    const sc = store.sidecar;
    this.$.sidecar!.dataset.state = sc.kind;
    setText(this.$.sidecar!.querySelector('.text')!,
      sc.kind === 'ready' ? `Sidecar ${sc.version} · pid ${sc.pid}${sc.restarts ? ` · restarted ${sc.restarts}×` : ''}`
        : sc.kind === 'down' ? `Sidecar down: ${sc.why}${sc.willRestart ? ' · restarting…' : ''}` : 'Starting sidecar…');
    const pauseAll = this.$['btn-pause-all']!;
    setText(pauseAll, status?.paused ? 'Resume all' : 'Pause all');
    pauseAll.classList.toggle('warn', !!status?.paused);
    this.root.classList.toggle('paused', !!status?.paused);

    // Counts.
    for (const s of [...ACTIVE_STATES, ...FINAL_STATES]) {
      const n = status?.counts[s] ?? 0;
      const box = this.$.counts!.querySelector<HTMLElement>(`[data-count="${s}"]`)!;
      setText(box.querySelector('.n')!, String(n));
      box.classList.toggle('zero', n === 0);
    }

    // Groups.
    for (const li of this.$.groups!.querySelectorAll<HTMLElement>('li[data-group]')) {
      const g = li.dataset.group!;
      const paused = !!status?.pausedGroups.includes(g);
      const active = [...store.tasks.values()].filter((t) => t.group === g && isActive(t.state)).length;
      li.classList.toggle('paused', paused);
      setText(li.querySelector('.g-state')!, paused ? 'paused' : active ? `${active} active` : '');
      setText(li.querySelector('button')!, paused ? 'Resume' : 'Pause');
    }

    this.renderIo();
    this.renderTasks(now);
    this.renderImports();
    this.renderActivity();
  }

  private renderIo(): void {
    const io = this.store.io;
    const util = Object.values(io?.utilization ?? {});
    const pct = util.length ? Math.min(100, Math.round(Math.max(...util) * 100)) : 0;
    const gauge = this.$['io-gauge']!;
    gauge.dataset.level = io?.throttling ? 'high' : pct >= 60 ? 'mid' : 'low';
    gauge.dataset.utilization = String(pct);
    const arc = gauge.querySelector<SVGPathElement>('path.value')!;
    arc.style.strokeDasharray = `${pct} 100`;
    arc.style.strokeOpacity = pct > 0 ? '1' : '0';
    setText(gauge.querySelector('.pct')!, util.length ? `${pct}%` : '—');
    setText(gauge.querySelector('.state')!, io?.throttling ? 'throttling' : util.length ? 'of capacity' : 'learning…');
    const side = this.root.querySelector('dl.io')!;
    setText(side.querySelector('.io-read')!, formatRate(io?.diskReadBps));
    setText(side.querySelector('.io-write')!, formatRate(io?.diskWriteBps));
    setText(side.querySelector('.io-net')!, formatRate((io?.netRxBps ?? 0) + (io?.netTxBps ?? 0)));
    const d = io?.deferred ?? 0;
    setText(side.querySelector('.io-deferred')!, `${d} task${d === 1 ? '' : 's'}`);
  }

  private visibleTasks(): TaskInfo[] {
    const rank = (s: State) => (s === 'running' ? 0 : s === 'paused' ? 1 : isActive(s) ? 2 : 3);
    const collapsed = collapseFamilies(this.store.tasks.values());
    this.families = collapsed.families;
    let list = [...this.store.tasks.values()].filter((t) => !collapsed.hidden.has(t.id));
    if (this.filter === 'active') list = list.filter((t) => isActive(t.state));
    if (this.filter === 'finished') list = list.filter((t) => !isActive(t.state));
    list.sort((a, b) => {
      const ra = rank(a.state);
      const rb = rank(b.state);
      if (ra !== rb) return ra - rb;
      if (ra === 2 && a.priority !== b.priority) return a.priority - b.priority;
      return ra === 3 ? b.id - a.id : a.id - b.id;
    });
    return list;
  }

  private renderTasks(now: number): void {
    const all = this.visibleTasks();
    const list = all.slice(0, MAX_ROWS);
    const tbody = this.$.tasks as HTMLTableSectionElement;
    const wanted = new Set(list.map((t) => t.id));
    for (const [id, row] of this.rows) {
      if (!wanted.has(id)) {
        row.tr.remove();
        this.rows.delete(id);
      }
    }
    let prev: Element | null = null;
    for (const t of list) {
      let row = this.rows.get(t.id);
      if (!row) {
        row = { tr: this.createRow(t), key: '' };
        this.rows.set(t.id, row);
      }
      this.updateRow(row, t, now);
      const expected: Element | null = prev ? prev.nextElementSibling : tbody.firstElementChild;
      if (expected !== row.tr) {
        if (prev) prev.after(row.tr);
        else tbody.prepend(row.tr);
      }
      prev = row.tr;
    }
    this.$.empty!.hidden = list.length > 0;
    const active = all.filter((t) => isActive(t.state)).length;
    setText(this.$.summary!, `${all.length} shown${all.length > MAX_ROWS ? ` (first ${MAX_ROWS})` : ''} · ${active} active`);
  }

  private createRow(t: TaskInfo): HTMLTableRowElement {
    const tr = el('tr', { 'data-task-id': String(t.id) },
      el('td', { class: 'c-id' }, `${t.id}`),
      el('td', { class: 'c-task' }, el('div', { class: 'title' }), el('div', { class: 'sub' })),
      el('td', { class: 'c-prio' }, el('span', { class: 'badge' })),
      el('td', { class: 'c-state' }, el('span', { class: 'pill' })),
      el('td', { class: 'c-progress' },
        el('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100' }, el('div', { class: 'fill' })),
        el('div', { class: 'meta' })),
      el('td', { class: 'c-actions' },
        el('button', { class: 'btn small', 'data-action': 'pause' }, 'Pause'),
        el('button', { class: 'btn small', 'data-action': 'raise', title: 'Raise priority' }, '↑ Raise'),
        el('button', { class: 'btn small danger', 'data-action': 'cancel' }, 'Cancel')),
    );
    return tr;
  }

  private updateRow(row: Row, t: TaskInfo, now: number): void {
    const tr = row.tr;
    const family = this.families.get(t.id);
    const fraction = family ? family.fraction
      : t.state === 'completed' ? 1 : Math.max(0, Math.min(1, t.progress?.fraction ?? 0));
    const eta = etaMs(t, now);
    const meta = family ? familyText(family, t) : this.progressText(t, fraction, eta, now);
    const key = JSON.stringify([t.state, t.priority, fraction, meta, t.label, t.group, t.error?.message]);
    if (key === row.key) return;
    row.key = key;
    tr.dataset.state = t.state;
    const c = tr.children;
    setText(c[1]!.querySelector('.title')!, taskTitle(t));
    const sub = [t.type, t.group ? `group ${t.group}` : '', t.attempt ? `retry ${t.attempt}` : '', t.error ? t.error.message : '']
      .filter(Boolean).join(' · ');
    setText(c[1]!.querySelector('.sub')!, sub);
    c[1]!.setAttribute('title', JSON.stringify(t.payload));
    const badge = c[2]!.querySelector<HTMLElement>('.badge')!;
    const band = priorityBand(t.priority);
    badge.className = `badge p-${band}`;
    setText(badge, [0, 64, 128, 192, 255].includes(t.priority) ? band : `${band} ${t.priority}`);
    const pill = c[3]!.querySelector<HTMLElement>('.pill')!;
    pill.className = `pill s-${t.state}`;
    setText(pill, STATE_LABELS[t.state]);
    const bar = c[4]!.querySelector<HTMLElement>('.bar')!;
    const fill = bar.querySelector<HTMLElement>('.fill')!;
    fill.style.width = `${(fraction * 100).toFixed(1)}%`;
    fill.dataset.progress = fraction.toFixed(4);
    bar.classList.toggle('estimated', !!t.progress?.estimated);
    bar.setAttribute('aria-valuenow', String(Math.round(fraction * 100)));
    setText(c[4]!.querySelector('.meta')!, meta);
    const [pause, raise, cancel] = [...c[5]!.querySelectorAll<HTMLButtonElement>('button')];
    const active = isActive(t.state);
    pause!.dataset.action = t.state === 'paused' ? 'resume' : 'pause';
    setText(pause!, t.state === 'paused' ? 'Resume' : 'Pause');
    pause!.disabled = !(t.state === 'paused' || t.state === 'pending' || t.state === 'running');
    raise!.disabled = !active || raisedPriority(t.priority) === null;
    cancel!.disabled = !active;
  }

  private progressText(t: TaskInfo, fraction: number, eta: number | null, now: number): string {
    const pct = `${t.progress?.estimated ? '~' : ''}${Math.floor(fraction * 100)}%`;
    const bytes = t.progress?.bytesTotal ? ` · ${formatBytes(t.progress.bytesDone ?? 0)} of ${formatBytes(t.progress.bytesTotal)}` : '';
    switch (t.state) {
      case 'running': {
        const left = eta !== null ? ` · ${formatDuration(eta)} left` : t.startedAt ? ` · ${formatDuration(now - t.startedAt)} elapsed` : '';
        return `${pct}${bytes}${left}`;
      }
      case 'completed':
        return t.durationMs != null ? `Done in ${formatDuration(t.durationMs)}` : 'Done';
      case 'paused':
        return `Paused at ${pct}`;
      case 'pending': {
        const s = this.store.status;
        if (s?.paused) return 'Held: all work paused';
        if (t.group && s?.pausedGroups.includes(t.group)) return `Held: group ${t.group} paused`;
        if (t.runAt && t.runAt > now) return `Retry in ${formatDuration(t.runAt - now)}`;
        return fraction > 0 ? `Queued at ${pct}` : 'Queued';
      }
      case 'waiting':
        return 'Waiting for its children';
      case 'blocked':
        return 'Waiting for dependencies';
      default:
        return t.error?.message ?? STATE_LABELS[t.state];
    }
  }

  private renderImports(): void {
    const ol = this.$.imports!;
    const lines = this.store.imports.lines;
    const key = lines.map((l) => `${l.key}:${l.total}:${l.done}:${l.failed}:${l.submitting}`).join('|');
    if (ol.dataset.key === key) return;
    ol.dataset.key = key;
    const n = (x: number) => x.toLocaleString('en-US');
    ol.replaceChildren(...lines.map((l) => {
      const ended = l.done + l.failed;
      const bar = el('span', { class: 'bar' });
      bar.style.width = `${l.total ? (100 * ended) / l.total : 0}%`;
      return el('li', { 'data-import': String(l.key), 'data-total': String(l.total), 'data-done': String(l.done) },
        el('span', { class: 'i-label' }, l.label),
        el('span', { class: 'i-count' },
          `${n(ended)} of ${n(l.total)} done${l.failed ? ` (${n(l.failed)} failed or cancelled)` : ''}${l.submitting ? ', adding…' : ''}`),
        el('span', { class: 'i-track' }, bar));
    }));
  }

  private renderActivity(): void {
    const ol = this.$.activity!;
    const items = this.store.activity.slice(0, 4);
    const key = items.map((a) => a.at + a.text).join('|');
    if (ol.dataset.key === key) return;
    ol.dataset.key = key;
    ol.replaceChildren(...items.map((a) =>
      el('li', { class: a.tone }, el('time', {}, new Date(a.at).toLocaleTimeString()), a.text)));
  }
}
