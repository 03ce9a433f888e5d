// Per-service delivery figures of one tab: counts, duplicate suppressions,
// p95 latency (publish timestamp to delivery) over a window of recent events,
// last event time and reconnects. Feeds `state().services`.

import type { ServiceHealth } from './types.js';

/** Latency samples kept per service for the p95. */
const WINDOW = 256;

class ServiceStats {
  delivered = 0;
  suppressedDuplicates = 0;
  lastEventAt: number | null = null;
  reconnects = 0;
  // A ring of the last WINDOW latencies; `filled` counts valid entries.
  private readonly samples = new Float64Array(WINDOW);
  private next = 0;
  private filled = 0;

  addLatency(ms: number): void {
    this.samples[this.next] = ms;
    this.next = (this.next + 1) % WINDOW;
    if (this.filled < WINDOW) this.filled += 1;
  }

  p95(): number | null {
    if (this.filled === 0) return null;
    const sorted = Array.from(this.samples.subarray(0, this.filled)).sort((a, b) => a - b);
    // Nearest-rank percentile.
    const rank = Math.max(0, Math.ceil(0.95 * sorted.length) - 1);
    return sorted[rank] ?? null;
  }
}

export class HealthTracker {
  private readonly stats = new Map<string, ServiceStats>();

  constructor(private readonly now: () => number) {}

  private get(service: string): ServiceStats {
    let s = this.stats.get(service);
    if (s === undefined) {
      s = new ServiceStats();
      this.stats.set(service, s);
    }
    return s;
  }

  /** An event handed to this tab; `timestamp` is the event's publish time (ms). */
  delivered(service: string, timestamp: number): void {
    const s = this.get(service);
    const now = this.now();
    s.delivered += 1;
    s.lastEventAt = now;
    if (Number.isFinite(timestamp) && timestamp > 0) {
      // Clocks differ between publisher and browser; never report negative latency.
      s.addLatency(Math.max(0, now - timestamp));
    }
  }

  suppressed(service: string): void {
    this.get(service).suppressedDuplicates += 1;
  }

  reconnected(services: Iterable<string>): void {
    for (const service of services) this.get(service).reconnects += 1;
  }

  /** Raises the reconnect count to at least `count` (followers mirror the leader's figure). */
  mirrorReconnects(service: string, count: number): boolean {
    const s = this.get(service);
    if (count > s.reconnects) {
      s.reconnects = count;
      return true;
    }
    return false;
  }

  reconnects(service: string): number {
    return this.stats.get(service)?.reconnects ?? 0;
  }

  /** The health of the given services (zeros for ones never seen). */
  snapshot(services: Iterable<string>): Record<string, ServiceHealth> {
    const out: Record<string, ServiceHealth> = {};
    for (const service of services) {
      const s = this.get(service);
      out[service] = {
        delivered: s.delivered,
        suppressedDuplicates: s.suppressedDuplicates,
        p95LatencyMs: s.p95(),
        lastEventAt: s.lastEventAt,
        reconnects: s.reconnects,
      };
    }
    return out;
  }
}
