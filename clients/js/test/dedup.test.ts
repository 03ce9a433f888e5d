import { describe, expect, it } from 'vitest';
import { DEDUP_CAPACITY, Deduper, dedupKey } from '../src/dedup.js';

const e = (service: string, eventId: string, seq: number, orgId = 'acme') => ({ orgId, service, eventId, seq });

describe('Deduper', () => {
  it('suppresses a second event with the same service and eventId', () => {
    const d = new Deduper();
    expect(d.seen(e('finance', 'a', 1))).toBe(false);
    expect(d.seen(e('finance', 'a', 7))).toBe(true); // a replay under another seq is still a duplicate
  });

  it('keys by service: the same eventId of another service is a different event', () => {
    const d = new Deduper();
    expect(d.seen(e('finance', 'a', 1))).toBe(false);
    expect(d.seen(e('tasks', 'a', 2))).toBe(false);
  });

  it('falls back to seq when there is no eventId', () => {
    expect(dedupKey(e('finance', '', 42))).toBe('finance#42');
    const d = new Deduper();
    expect(d.seen(e('finance', '', 42))).toBe(false);
    expect(d.seen(e('finance', '', 42))).toBe(true);
    expect(d.seen(e('finance', '', 43))).toBe(false);
  });

  it('remembers at most 1000 keys per org, forgetting the oldest first', () => {
    const d = new Deduper();
    expect(DEDUP_CAPACITY).toBe(1000);
    for (let i = 0; i < 1500; i++) d.seen(e('finance', `id-${i}`, i));
    expect(d.size('acme')).toBe(1000);
    // The newest 1000 are remembered…
    expect(d.seen(e('finance', 'id-1499', 1499))).toBe(true);
    expect(d.seen(e('finance', 'id-500', 500))).toBe(true);
    // …the oldest were forgotten.
    expect(d.seen(e('finance', 'id-0', 0))).toBe(false);
  });

  it('bounds each org separately', () => {
    const d = new Deduper(10);
    for (let i = 0; i < 10; i++) d.seen(e('finance', `x${i}`, i, 'acme'));
    for (let i = 0; i < 10; i++) d.seen(e('finance', `y${i}`, i, 'globex'));
    expect(d.size('acme')).toBe(10);
    expect(d.size('globex')).toBe(10);
    expect(d.seen(e('finance', 'x0', 0, 'acme'))).toBe(true);
    expect(d.seen(e('finance', 'x0', 0, 'globex'))).toBe(false);
  });
});
