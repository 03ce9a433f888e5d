import { QueryClient } from '@tanstack/query-core';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { watchState } from '../src/client.js';
import { createQueryCachePatcher, createUploadController, type QueryClientLike, type QueryKey } from '../src/react/index.js';
import type {
  HeraldEvent,
  RealtimeClient,
  UploadError,
  UploadProgress,
  UploadResult,
  UploadState,
} from '../src/types.js';
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

describe('createUploadController (useUpload)', () => {
  class FakeUpload {
    st: UploadState = 'uploading';
    prog: UploadProgress = { bytesSent: 0, bytesTotal: 10 };
    err: UploadError | null = null;
    res: UploadResult | null = null;
    done = new Promise<UploadResult>(() => {});
    pcb = new Set<(p: UploadProgress) => void>();
    scb = new Set<(s: UploadState) => void>();
    state = () => this.st;
    progress = () => this.prog;
    error = () => this.err;
    result = () => this.res;
    set(s: UploadState) {
      this.st = s;
      for (const cb of this.scb) cb(s);
    }
    pause = () => this.set('paused');
    resume = () => this.set('uploading');
    abort = () => {
      this.set('aborted');
      return Promise.resolve();
    };
    send(n: number) {
      this.prog = { bytesSent: n, bytesTotal: 10 };
      for (const cb of this.pcb) cb(this.prog);
    }
    onProgress = (cb: (p: UploadProgress) => void) => (this.pcb.add(cb), () => this.pcb.delete(cb));
    onStateChange = (cb: (s: UploadState) => void) => (this.scb.add(cb), () => this.scb.delete(cb));
  }

  it('follows the upload: idle → uploading → progress → paused → done; aborted reads as idle', () => {
    const uploads: FakeUpload[] = [];
    const client = { upload: () => (uploads.push(new FakeUpload()), uploads.at(-1)) } as unknown as RealtimeClient;
    const ctl = createUploadController(() => client);
    const seen = vi.fn();
    ctl.subscribe(seen);
    expect(ctl.snapshot()).toMatchObject({ state: 'idle', progress: { sent: 0, total: 0 }, error: null, result: null });

    ctl.start(new Blob(['x']));
    const u = uploads[0] as FakeUpload;
    expect(ctl.snapshot()).toMatchObject({ state: 'uploading', progress: { sent: 0, total: 10 } });
    const before = ctl.snapshot();
    expect(ctl.snapshot()).toBe(before); // stable for useSyncExternalStore
    u.send(4);
    expect(ctl.snapshot().progress).toEqual({ sent: 4, total: 10 });
    ctl.pause();
    expect(ctl.snapshot().state).toBe('paused');
    ctl.resume();
    u.send(10);
    u.res = { id: 'a', size: 10, url: 'u/content', uploadUrl: 'u', filename: 'f', filetype: 't' };
    u.set('done');
    expect(ctl.snapshot()).toMatchObject({ state: 'done', result: { id: 'a' } });
    expect(seen).toHaveBeenCalled();

    ctl.start(new Blob(['y']));
    void ctl.abort();
    expect(ctl.snapshot()).toMatchObject({ state: 'idle', progress: { sent: 0, total: 0 }, error: null });
    u.set('error'); // the first upload no longer reports
    expect(ctl.snapshot().state).toBe('idle');
  });
});
