import { describe, expect, it } from 'vitest';
import { matchesNeed, NeedsRegistry, unionSubscription } from '../src/routing.js';

const need = (services: string[], propertyId: string | null, visible = true) => ({ services, propertyId, visible });

describe('unionSubscription', () => {
  it('subscribes to the union of services, sorted and unique', () => {
    const u = unionSubscription([need(['tasks', 'finance'], null), need(['finance', 'guest'], null)]);
    expect(u.services).toEqual(['finance', 'guest', 'tasks']);
  });

  it('keeps a property filter all tabs share', () => {
    expect(unionSubscription([need(['a'], 'p1'), need(['b'], 'p1')]).propertyId).toBe('p1');
  });

  it('asks for every property when the tabs disagree or one wants all', () => {
    expect(unionSubscription([need(['a'], 'p1'), need(['b'], 'p2')]).propertyId).toBeNull();
    expect(unionSubscription([need(['a'], 'p1'), need(['b'], null)]).propertyId).toBeNull();
  });

  it('ignores tabs without services', () => {
    expect(unionSubscription([need(['a'], 'p1'), need([], null)])).toEqual({ services: ['a'], propertyId: 'p1' });
    expect(unionSubscription([])).toEqual({ services: [], propertyId: null });
  });
});

describe('matchesNeed (per-tab filtering)', () => {
  const tab = { services: ['finance'], propertyId: 'p1' };
  it('passes own services and property', () => {
    expect(matchesNeed({ service: 'finance', propertyId: 'p1' }, tab)).toBe(true);
  });
  it('passes org-wide events through a property filter', () => {
    expect(matchesNeed({ service: 'finance', propertyId: null }, tab)).toBe(true);
  });
  it('drops other services and other properties', () => {
    expect(matchesNeed({ service: 'tasks', propertyId: 'p1' }, tab)).toBe(false);
    expect(matchesNeed({ service: 'finance', propertyId: 'p2' }, tab)).toBe(false);
  });
  it('passes every property without a filter', () => {
    expect(matchesNeed({ service: 'finance', propertyId: 'p9' }, { services: ['finance'], propertyId: null })).toBe(true);
  });
});

describe('NeedsRegistry', () => {
  it('forgets tabs not heard from, but never the own tab', () => {
    const r = new NeedsRegistry();
    r.set('me', need(['a'], null, false), 0);
    r.set('other', need(['b'], null, true), 0);
    expect(r.union().services).toEqual(['a', 'b']);
    expect(r.anyVisible()).toBe(true);
    expect(r.prune(10_000, 35_000, 'me')).toBe(false);
    expect(r.prune(40_000, 35_000, 'me')).toBe(true);
    expect(r.union().services).toEqual(['a']);
    expect(r.anyVisible()).toBe(false);
  });
});
