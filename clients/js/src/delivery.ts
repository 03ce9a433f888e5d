// Delivery: this tab's event handlers and the app callbacks events and resets
// reach. Handlers are registered per service; events are deduplicated, then
// filtered by this tab's own need (its services and property filter).
// Invariant: an event reaches this tab's handlers at most once (by its dedup
// key), in arrival order, and only if it matches the tab's need; app code that
// throws is reported and never keeps the other handlers, or the client, from
// running.

import { Deduper } from './dedup.js';
import type { HealthTracker } from './health.js';
import { checkService } from './options.js';
import { matchesNeed, type TabNeed } from './routing.js';
import type { HeraldEvent, RealtimeOptions, ResetReason } from './types.js';

export type Handler = (e: HeraldEvent) => void;

/** Reports an exception thrown by app code (a handler, a callback) without rethrowing it. */
export function reportHandlerError(err: unknown): void {
  const g = globalThis as { reportError?: (e: unknown) => void };
  if (typeof g.reportError === 'function') g.reportError(err);
  else console.error('herald: an event handler threw', err);
}

export interface DeliveryOptions {
  /** Services subscribed to from the start, with or without handlers. */
  initialServices: Iterable<string>;
  health: HealthTracker;
  onReset?: RealtimeOptions['onReset'];
  /** False once the client stopped (a handler may log out mid-batch). */
  active: () => boolean;
}

export class Delivery {
  private readonly handlers = new Map<string, Set<Handler>>();
  private readonly dedup = new Deduper();
  private readonly initialServices: ReadonlySet<string>;

  constructor(private readonly o: DeliveryOptions) {
    this.initialServices = new Set(o.initialServices);
  }

  /**
   * Registers `handler` for `service`. The returned function removes this
   * registration and returns true the first time, false after (the same
   * function may be registered twice and is then removed once per call).
   */
  add(service: string, handler: Handler): () => boolean {
    checkService(service);
    if (typeof handler !== 'function') throw new TypeError('herald: handler must be a function');
    let set = this.handlers.get(service);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(service, set);
    }
    // Wrapped so the same function can be subscribed twice and removed once per call.
    const entry: Handler = (e) => handler(e);
    set.add(entry);
    let done = false;
    return () => {
      if (done) return false;
      done = true;
      const s = this.handlers.get(service);
      s?.delete(entry);
      if (s !== undefined && s.size === 0) this.handlers.delete(service);
      return true;
    };
  }

  /** This tab's services: the initial ones plus those with handlers, sorted and unique. */
  services(): string[] {
    const s = new Set(this.initialServices);
    for (const k of this.handlers.keys()) s.add(k);
    return [...s].sort();
  }

  /** The events not seen before, in order; each one seen before is counted as a suppressed duplicate. */
  fresh(events: readonly HeraldEvent[]): HeraldEvent[] {
    const out: HeraldEvent[] = [];
    for (const e of events) {
      if (this.dedup.seen(e)) this.o.health.suppressed(e.service);
      else out.push(e);
    }
    return out;
  }

  /** A new epoch: sequences (and eventIds defaulted from them) start over. */
  forgetSeen(): void {
    this.dedup.clear();
  }

  /** Hands fresh events to the handlers, filtered by `need` (this tab's own). */
  deliver(events: readonly HeraldEvent[], need: Pick<TabNeed, 'services' | 'propertyId'>): void {
    for (const e of events) {
      if (!this.o.active()) return; // a handler may have logged out
      if (!matchesNeed(e, need)) continue;
      this.o.health.delivered(e.service, e.timestamp);
      const set = this.handlers.get(e.service);
      if (set === undefined) continue;
      for (const h of [...set]) {
        try {
          h(e);
        } catch (err) {
          reportHandlerError(err);
        }
      }
    }
  }

  /** Tells the app to refetch (`services`: only those; absent: everything). */
  reset(reason: ResetReason, services?: string[]): void {
    try {
      if (services === undefined) this.o.onReset?.(reason);
      else this.o.onReset?.(reason, services);
    } catch (err) {
      reportHandlerError(err);
    }
  }
}
