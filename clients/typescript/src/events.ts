// Event subscription: what `on` and `waitFor` can subscribe to (the sidecar's
// notifications, typed by the generated `Events`, plus the client's own `exited` and
// `restarted`) and the hub that delivers each one to its listeners and to `'*'`.

import { asError, clientError, type ReportError } from './errors.js';
import type { Events, ReadyParams } from './generated.js';
import type { ExitInfo } from './transport.js';

/** Emitted after the sidecar died and a new one announced `sidecar.ready`. */
export interface RestartedEvent {
  /** Restarts so far (1 for the first). */
  restarts: number;
  /** How the previous process ended. */
  exit: ExitInfo;
  ready: ReadyParams;
}

/** Emitted when the sidecar process ends (before any restart). */
export interface ExitedEvent extends ExitInfo {
  /** A restart is scheduled. */
  willRestart: boolean;
  /** Delay before that restart. */
  delayMs?: number;
}

/** Everything `on` can subscribe to: the sidecar's events plus the client's own. */
export interface ClientEvents extends Events {
  restarted: RestartedEvent;
  exited: ExitedEvent;
}
export type ClientEventName = keyof ClientEvents;
export type EventHandler<E extends ClientEventName> = (params: ClientEvents[E], event: E) => void;
export type AnyEventHandler = (
  params: ClientEvents[ClientEventName],
  event: ClientEventName,
) => void;
/** Removes the handler `on` added (calling it again does nothing). */
export type Unsubscribe = () => void;

/** Listeners by event name (`'*'` for all); a throwing listener is reported, not propagated. */
export class EventHub {
  private readonly listeners = new Map<string, Set<(p: never, e: never) => void>>();

  constructor(private readonly reportError: ReportError) {}

  on(event: string, handler: (params: never, event: never) => void): Unsubscribe {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(handler);
    return () => {
      set.delete(handler);
    };
  }

  emit<E extends ClientEventName>(event: E, params: ClientEvents[E]): void {
    for (const key of [event, '*']) {
      const set = this.listeners.get(key);
      if (!set) continue;
      for (const h of [...set]) {
        try {
          (h as (p: unknown, e: string) => void)(params, event);
        } catch (err) {
          this.reportError(asError(err));
        }
      }
    }
  }

  /** The next `event` whose params satisfy `predicate`; rejects (kind `timeout`) after
   * `timeoutMs` unless that is 0. */
  waitFor<E extends ClientEventName>(
    event: E,
    predicate: (params: ClientEvents[E]) => boolean,
    timeoutMs: number,
  ): Promise<ClientEvents[E]> {
    return new Promise((resolve, reject) => {
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              off();
              reject(clientError('timeout', `no ${event} within ${timeoutMs} ms`));
            }, timeoutMs)
          : undefined;
      const off = this.on(event, ((params: ClientEvents[E]) => {
        if (!predicate(params)) return;
        off();
        if (timer !== undefined) clearTimeout(timer);
        resolve(params);
      }) as (params: never, event: never) => void);
    });
  }
}
