// What each tab wants and what the leader asks the server for. The leader
// subscribes to the union of every tab's services; when the tabs disagree on
// the property filter it asks for every property and each tab filters for
// itself. Every tab keeps the registry (needs travel on the bus), so a new
// leader already knows the union and never starts with a narrower subscription
// (the WebSocket `update` does not replay events for added services).

import type { HeraldEvent } from './types.js';

/** One tab's subscription. */
export interface TabNeed {
  services: string[];
  propertyId: string | null;
  /** Whether the tab is visible; the leader polls slower only when none is. */
  visible: boolean;
}

/** What the leader asks the server for. `services` is sorted and unique. */
export interface Subscription {
  services: string[];
  propertyId: string | null;
}

/** The union of the tabs' needs. */
export function unionSubscription(needs: Iterable<TabNeed>): Subscription {
  const services = new Set<string>();
  let propertyId: string | null | undefined;
  let mixed = false;
  for (const need of needs) {
    if (need.services.length === 0) continue; // a tab with no services has no say
    for (const s of need.services) services.add(s);
    if (propertyId === undefined) propertyId = need.propertyId;
    else if (propertyId !== need.propertyId) mixed = true;
  }
  return {
    services: [...services].sort(),
    propertyId: mixed || propertyId === undefined ? null : propertyId,
  };
}

export function sameSubscription(a: Subscription | null, b: Subscription | null): boolean {
  if (a === null || b === null) return a === b;
  return (
    a.propertyId === b.propertyId &&
    a.services.length === b.services.length &&
    a.services.every((s, i) => s === b.services[i])
  );
}

/** Whether an event belongs to a tab's subscription (org-wide events pass every property filter). */
export function matchesNeed(
  e: Pick<HeraldEvent, 'service' | 'propertyId'>,
  need: Pick<TabNeed, 'services' | 'propertyId'>,
): boolean {
  if (!need.services.includes(e.service)) return false;
  return need.propertyId === null || e.propertyId === null || e.propertyId === need.propertyId;
}

/**
 * Needs of all live tabs, by tab id. Followers re-announce theirs
 * periodically; entries not heard from within `maxAgeMs` are dropped so a
 * crashed tab's services do not stay subscribed forever.
 */
export class NeedsRegistry {
  private readonly needs = new Map<string, { need: TabNeed; at: number }>();

  set(tabId: string, need: TabNeed, now: number): void {
    this.needs.set(tabId, { need, at: now });
  }

  has(tabId: string): boolean {
    return this.needs.has(tabId);
  }

  remove(tabId: string): boolean {
    return this.needs.delete(tabId);
  }

  /** Drops entries older than `maxAgeMs`, except `keep` (the own tab). Returns whether any went. */
  prune(now: number, maxAgeMs: number, keep: string): boolean {
    let changed = false;
    for (const [id, entry] of this.needs) {
      if (id !== keep && now - entry.at > maxAgeMs) {
        this.needs.delete(id);
        changed = true;
      }
    }
    return changed;
  }

  union(): Subscription {
    return unionSubscription([...this.needs.values()].map((e) => e.need));
  }

  anyVisible(): boolean {
    for (const { need } of this.needs.values()) if (need.visible) return true;
    return false;
  }

  size(): number {
    return this.needs.size;
  }
}
