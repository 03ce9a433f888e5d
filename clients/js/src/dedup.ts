// Duplicate suppression. The same event can reach a tab twice: a new leader
// resumes from a slightly older cursor, a transport fallback replays a little,
// a publisher retried. Events are keyed by `service:eventId` (the publisher's
// idempotency key), falling back to the stream `seq` when there is no eventId,
// and remembered in a bounded, insertion-ordered set per org.

import type { HeraldEvent } from './types.js';

/** Keys remembered per org. */
export const DEDUP_CAPACITY = 1000;
/** Orgs remembered at once (a tab normally sees one). */
const MAX_ORGS = 8;

/** The dedup key of an event: `service:eventId`, or `service#seq` without an eventId. */
export function dedupKey(e: Pick<HeraldEvent, 'service' | 'eventId' | 'seq'>): string {
  if (typeof e.eventId === 'string' && e.eventId.length > 0) return `${e.service}:${e.eventId}`;
  return `${e.service}#${e.seq}`;
}

/**
 * Remembers the last {@link DEDUP_CAPACITY} keys of each org. A Map keeps
 * insertion order, so evicting the oldest key is `keys().next()`: O(1).
 */
export class Deduper {
  private readonly orgs = new Map<string, Map<string, true>>();

  constructor(private readonly capacity: number = DEDUP_CAPACITY) {}

  /** True when the event was seen before; otherwise remembers it and returns false. */
  seen(e: Pick<HeraldEvent, 'orgId' | 'service' | 'eventId' | 'seq'>): boolean {
    const key = dedupKey(e);
    let keys = this.orgs.get(e.orgId);
    if (keys === undefined) {
      keys = new Map();
      this.orgs.set(e.orgId, keys);
      if (this.orgs.size > MAX_ORGS) {
        const oldest = this.orgs.keys().next().value;
        if (oldest !== undefined) this.orgs.delete(oldest);
      }
    }
    if (keys.has(key)) return true;
    keys.set(key, true);
    if (keys.size > this.capacity) {
      const oldest = keys.keys().next().value;
      if (oldest !== undefined) keys.delete(oldest);
    }
    return false;
  }

  /** Keys remembered for an org (for tests and diagnostics). */
  size(orgId: string): number {
    return this.orgs.get(orgId)?.size ?? 0;
  }

  clear(): void {
    this.orgs.clear();
  }
}
