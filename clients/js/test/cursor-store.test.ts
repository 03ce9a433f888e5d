import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CursorStore, PERSIST_EVERY_MS, PERSIST_REFRESH_MS } from '../src/cursor.js';
import type { StorageLike } from '../src/env.js';

const T0 = 1_700_000_000_000;
const KEY = 'herald:cursor';
const MAX_AGE = 60_000;

/** A CursorStore on vitest's fake clock and an in-memory localStorage. */
function store(opts: { storage?: boolean } = {}) {
  const data = new Map<string, string>();
  const writes: string[] = [];
  const storage: StorageLike = {
    getItem: (k) => data.get(k) ?? null,
    setItem: (k, v) => {
      writes.push(v);
      data.set(k, v);
    },
    removeItem: (k) => {
      data.delete(k);
    },
  };
  const onChange = vi.fn();
  const env = {
    now: () => Date.now(),
    setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
    clearTimeout: (h: unknown) => clearTimeout(h as ReturnType<typeof setTimeout>),
    storage: opts.storage === false ? null : storage,
  };
  const cursor = new CursorStore(env, KEY, MAX_AGE, onChange);
  const persisted = () => JSON.parse(data.get(KEY) ?? 'null') as unknown;
  return { cursor, data, writes, onChange, persisted };
}

describe('CursorStore', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(T0);
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('loads a persisted cursor only while its stamp is at most staleAfterMs old', () => {
    const s = store();
    s.data.set(KEY, JSON.stringify({ lastSeq: 77, epoch: 'E', at: T0 - MAX_AGE }));
    s.cursor.load();
    expect(s.cursor.current()).toEqual({ lastSeq: 77, epoch: 'E', at: T0 - MAX_AGE });
    s.data.set(KEY, JSON.stringify({ lastSeq: 78, epoch: 'E', at: T0 - MAX_AGE - 1 }));
    s.cursor.load();
    expect(s.cursor.current()).toEqual({ lastSeq: null, epoch: null, at: 0 });
    expect(s.onChange).not.toHaveBeenCalled();
  });

  it('a new leader adopts the persisted cursor when it is ahead, and keeps its own when not', () => {
    const s = store();
    s.cursor.advance(10, 'E');
    s.data.set(KEY, JSON.stringify({ lastSeq: 12, epoch: 'E', at: T0 - 1_000 }));
    s.cursor.adoptStored();
    expect(s.cursor.current().lastSeq).toBe(12);
    s.data.set(KEY, JSON.stringify({ lastSeq: 3, epoch: 'E', at: T0 }));
    s.cursor.adoptStored();
    expect(s.cursor.current().lastSeq).toBe(12);
  });

  it('advance and merge report a change, never a step backwards within the epoch', () => {
    const s = store();
    s.cursor.advance(5, 'E');
    expect(s.cursor.current()).toEqual({ lastSeq: 5, epoch: 'E', at: T0 });
    expect(s.onChange).toHaveBeenCalledTimes(1);
    s.cursor.advance(4, 'E');
    s.cursor.merge(3, 'E');
    s.cursor.merge(null, 'F');
    expect(s.cursor.current().lastSeq).toBe(5);
    expect(s.onChange).toHaveBeenCalledTimes(1);
    s.cursor.merge(9, 'E');
    expect(s.cursor.current().lastSeq).toBe(9);
    expect(s.onChange).toHaveBeenCalledTimes(2);
  });

  it('a server reset replaces the cursor, even backwards', () => {
    const s = store();
    s.cursor.advance(500, 'E');
    vi.advanceTimersByTime(10);
    s.cursor.reset(3, 'F');
    expect(s.cursor.current()).toEqual({ lastSeq: 3, epoch: 'F', at: T0 + 10 });
    expect(s.onChange).toHaveBeenCalledTimes(2);
  });

  it('persists at most every PERSIST_EVERY_MS, the trailing write carrying the latest cursor', () => {
    const s = store();
    s.cursor.advance(1, 'E');
    s.cursor.persist(false); // first write: at once
    expect(s.writes).toHaveLength(1);
    expect(s.persisted()).toEqual({ lastSeq: 1, epoch: 'E', at: T0 });

    vi.advanceTimersByTime(100);
    s.cursor.advance(2, 'E');
    s.cursor.persist(false);
    s.cursor.advance(3, 'E');
    s.cursor.persist(false);
    expect(s.writes).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(1); // one trailing write, not one per call

    vi.advanceTimersByTime(PERSIST_EVERY_MS - 101);
    expect(s.writes).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(s.writes).toHaveLength(2);
    // Stamped with the time of writing, not of the last advance.
    expect(s.persisted()).toEqual({ lastSeq: 3, epoch: 'E', at: T0 + PERSIST_EVERY_MS });
  });

  it('persist(true) writes at once and cancels a pending write', () => {
    const s = store();
    s.cursor.advance(1, 'E');
    s.cursor.persist(false);
    vi.advanceTimersByTime(50);
    s.cursor.advance(2, 'E');
    s.cursor.persist(false);
    expect(vi.getTimerCount()).toBe(1);
    s.cursor.persist(true);
    expect(s.writes).toHaveLength(2);
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(PERSIST_EVERY_MS);
    expect(s.writes).toHaveLength(2);
  });

  it('refresh() re-stamps a quiet cursor every PERSIST_REFRESH_MS', () => {
    const s = store();
    s.cursor.advance(7, 'E');
    s.cursor.persist(true);
    vi.advanceTimersByTime(PERSIST_REFRESH_MS - 1);
    s.cursor.refresh();
    expect(s.writes).toHaveLength(1);
    vi.advanceTimersByTime(1);
    s.cursor.refresh();
    expect(s.writes).toHaveLength(2);
    expect(s.persisted()).toEqual({ lastSeq: 7, epoch: 'E', at: T0 + PERSIST_REFRESH_MS });
  });

  it('writes nothing without a position or without storage', () => {
    const s = store();
    s.cursor.persist(true);
    s.cursor.refresh();
    expect(s.writes).toEqual([]);
    const none = store({ storage: false });
    none.cursor.advance(1, 'E');
    none.cursor.persist(true);
    none.cursor.forget();
    expect(none.cursor.current().lastSeq).toBe(1);
  });

  it('close() cancels a pending write and writes no more; forget() removes the persisted cursor', () => {
    const s = store();
    s.cursor.advance(1, 'E');
    s.cursor.persist(false);
    s.cursor.advance(2, 'E');
    s.cursor.persist(false);
    expect(vi.getTimerCount()).toBe(1);
    s.cursor.close();
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(PERSIST_EVERY_MS);
    s.cursor.persist(false);
    s.cursor.persist(true);
    expect(vi.getTimerCount()).toBe(0);
    expect(s.writes).toHaveLength(1);
    expect(s.persisted()).toEqual({ lastSeq: 1, epoch: 'E', at: T0 });
    s.cursor.forget();
    expect(s.data.has(KEY)).toBe(false);
  });
});
