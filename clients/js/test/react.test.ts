import { QueryClient } from '@tanstack/query-core';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { watchState } from '../src/client.js';
import { createQueryCachePatcher, type QueryClientLike, type QueryKey } from '../src/react/index.js';
import type { HeraldEvent, RealtimeClient } from '../src/types.js';
import { ev } from './fakes.js';

class FakeQueryClient implements QueryClientLike {
  data = new Map<string, unknown>();
  invalidated: QueryKey[] = [];
  setQueryData(queryKey: QueryKey, updater: (old: unknown) => unknown): unknown {
    const k = JSON.stringify(queryKey);
    const next = updater(this.data.get(k));
    this.data.set(k, next);
    return next;
  }
  invalidateQueries(filters: { queryKey: QueryKey }): Promise<void> {
    this.invalidated.push(filters.queryKey);
    return Promise.resolve();
  }
}

const event = (seq: number, extra: Record<string, unknown> = {}) => ev(seq, 'finance', extra) as HeraldEvent;

describe('createQueryCachePatcher', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('patches rows in place through the user map', () => {
    const qc = new FakeQueryClient();
    qc.data.set(JSON.stringify(['expenses']), [{ id: 1, amount: 5 }]);
    const patch = createQueryCachePatcher(qc, {
      patch: (e) =>
        e.eventType === 'thing.happened'
          ? { queryKey: ['expenses'], update: (old) => [...((old as unknown[] | undefined) ?? []), e.payload] }
          : null,
    });
    patch(event(1));
    expect(qc.data.get(JSON.stringify(['expenses']))).toEqual([{ id: 1, amount: 5 }, { n: 1 }]);
    expect(qc.invalidated).toEqual([]); // patched: no default invalidation
  });

  it('debounces aggregate invalidations per key (default 250 ms)', () => {
    const qc = new FakeQueryClient();
    const patch = createQueryCachePatcher(qc, {
      invalidate: () => [['finance', 'summary'], ['finance', 'stats']],
    });
    for (let i = 0; i < 20; i++) {
      patch(event(i));
      vi.advanceTimersByTime(20);
    }
    expect(qc.invalidated).toEqual([]);
    vi.advanceTimersByTime(250);
    expect(qc.invalidated).toEqual([
      ['finance', 'summary'],
      ['finance', 'stats'],
    ]);
  });

  it('invalidates [service] when nothing was patched and no invalidate map is given', () => {
    const qc = new FakeQueryClient();
    const patch = createQueryCachePatcher(qc, { debounceMs: 100, patch: () => null });
    patch(event(1));
    vi.advanceTimersByTime(100);
    expect(qc.invalidated).toEqual([['finance']]);
  });

  it('still refetches during a steady stream (max wait)', () => {
    const qc = new FakeQueryClient();
    const patch = createQueryCachePatcher(qc, { debounceMs: 250, invalidate: () => [['agg']] });
    for (let i = 0; i < 60; i++) {
      patch(event(i));
      vi.advanceTimersByTime(100); // 6 s of events every 100 ms
    }
    expect(qc.invalidated.length).toBeGreaterThanOrEqual(5);
    expect(qc.invalidated.length).toBeLessThanOrEqual(7);
  });

  it('flush() and dispose()', () => {
    const qc = new FakeQueryClient();
    const patch = createQueryCachePatcher(qc, { invalidate: () => [['a']] });
    patch(event(1));
    patch.flush();
    expect(qc.invalidated).toEqual([['a']]);
    patch(event(2));
    patch.dispose();
    vi.advanceTimersByTime(10_000);
    expect(qc.invalidated).toEqual([['a']]);
  });

  it('accepts a real TanStack QueryClient', () => {
    const qc = new QueryClient();
    const patch = createQueryCachePatcher(qc, {
      patch: (e) => ({ queryKey: ['row', e.eventId], update: () => e.payload }),
    });
    patch(event(7));
    expect(qc.getQueryData(['row', 'e-7'])).toEqual({ n: 7 });
  });
});

describe('watchState', () => {
  it('is a no-op for objects that are not clients', () => {
    const off = watchState({} as RealtimeClient, () => {});
    expect(typeof off).toBe('function');
    off();
  });
});
