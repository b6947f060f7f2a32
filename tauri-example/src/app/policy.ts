// The policy panel: a pretend "battery saver" (host pressure through scheduler.setPressure)
// and a rate limit on the simulated work, with its token bucket shown live.
import type { TaskmillClient } from '@taskmill/client';

/** The task type the panel rate-limits (the "Simulated work" button submits it). */
export const LIMITED_TYPE = 'sleep';
/** The pressure source the slider sets. */
export const PRESSURE_SOURCE = 'batterySaver';
const TTL_MS = 60_000; // the slider's level is sent again well before it lapses
const RATE = { perSecond: 1, burst: 2 };

/** What the default throttle tiers hold back at a pressure level. */
export function heldBack(level: number): string {
  if (level >= 0.75) return 'normal and background work wait';
  if (level >= 0.5) return 'background work waits';
  return 'nothing is held back';
}

export class PolicyPanel {
  private level = 0;
  private keepAlive: ReturnType<typeof setInterval> | undefined;
  private poll: ReturnType<typeof setInterval> | undefined;
  private readonly slider: HTMLInputElement;
  private readonly levelText: HTMLElement;
  private readonly limitBox: HTMLInputElement;
  private readonly bucketText: HTMLElement;

  constructor(
    private readonly card: HTMLElement,
    private readonly client: TaskmillClient,
    private readonly onError: (what: string, err: unknown) => void = () => {},
  ) {
    card.classList.add('card', 'policy');
    card.dataset.testid = 'policy-panel';
    card.innerHTML = `
      <h2>Policy</h2>
      <label class="field"><span>Battery saver</span>
        <input id="pressure" type="range" min="0" max="100" step="5" value="0" data-testid="pressure-slider" />
      </label>
      <div class="policy-note" id="pressure-text">0% — nothing is held back</div>
      <label class="check"><input type="checkbox" id="rate-limit" data-testid="rate-limit" />
        <span>Limit simulated work to ${RATE.perSecond} start/s (burst ${RATE.burst})</span></label>
      <div class="policy-note" id="bucket-text" data-testid="rate-bucket">no limit</div>`;
    this.slider = card.querySelector<HTMLInputElement>('#pressure')!;
    this.levelText = card.querySelector<HTMLElement>('#pressure-text')!;
    this.limitBox = card.querySelector<HTMLInputElement>('#rate-limit')!;
    this.bucketText = card.querySelector<HTMLElement>('#bucket-text')!;
    this.slider.addEventListener('change', () => void this.setLevel(Number(this.slider.value) / 100));
    this.slider.addEventListener('input', () => this.showLevel(Number(this.slider.value) / 100));
    this.limitBox.addEventListener('change', () => void this.setLimit(this.limitBox.checked));
    client.on('scheduler.pressure', (p) => this.showLevel(p.sources[PRESSURE_SOURCE] ?? 0));
    client.on('sidecar.ready', () => void this.readLimit());
  }

  private showLevel(level: number): void {
    this.levelText.textContent = `${Math.round(level * 100)}% — ${heldBack(level)}`;
  }

  async setLevel(level: number): Promise<void> {
    this.level = level;
    this.showLevel(level);
    clearInterval(this.keepAlive);
    try {
      await this.client.setPressure(PRESSURE_SOURCE, level, TTL_MS);
    } catch (err) {
      this.onError('Battery saver', err);
    }
    if (level > 0) {
      // A source lapses ttlMs after it was last set: keep it live while the slider says so.
      this.keepAlive = setInterval(() => {
        this.client.setPressure(PRESSURE_SOURCE, this.level, TTL_MS).catch((err: unknown) => this.onError('Battery saver', err));
      }, TTL_MS / 2);
    }
  }

  async setLimit(on: boolean): Promise<void> {
    try {
      const cfg = await this.client.invoke('scheduler.configure', {
        rateLimits: on ? { types: { [LIMITED_TYPE]: RATE } } : null,
      });
      this.limitBox.checked = cfg.rateLimits?.types?.[LIMITED_TYPE] !== undefined;
    } catch (err) {
      this.onError('Rate limit', err);
    }
    this.watchBucket();
  }

  /** The setting is persisted: show what the sidecar has. */
  private async readLimit(): Promise<void> {
    try {
      const cfg = await this.client.invoke('scheduler.configure', {});
      this.limitBox.checked = cfg.rateLimits?.types?.[LIMITED_TYPE] !== undefined;
      this.watchBucket();
    } catch (err) {
      this.onError('Rate limit', err);
    }
  }

  private watchBucket(): void {
    clearInterval(this.poll);
    if (!this.limitBox.checked) {
      this.bucketText.textContent = 'no limit';
      return;
    }
    const show = async () => {
      const status = await this.client.invoke('scheduler.status');
      const b = status.rateBuckets?.types?.[LIMITED_TYPE];
      if (!b) {
        this.bucketText.textContent = 'no limit';
        return;
      }
      const next = b.nextTokenAt ? ` · next in ${Math.max(0, b.nextTokenAt - Date.now())} ms` : '';
      this.bucketText.textContent = `${b.tokens.toFixed(1)} of ${RATE.burst} tokens${next}`;
    };
    void show().catch(() => {});
    this.poll = setInterval(() => void show().catch(() => {}), 500);
  }
}
