import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { StaleWatch } from '../src/stale.js';

const AFTER = 10_000;

describe('StaleWatch', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(1_700_000_000_000);
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });

  /** Checks once a second, like the client's tick, for `ms`. */
  function run(w: StaleWatch, ms: number, connected: () => boolean) {
    const timer = setInterval(() => w.check(connected()), 1_000);
    vi.advanceTimersByTime(ms);
    clearInterval(timer);
  }

  it('fires once an outage is longer than afterMs, not at afterMs', () => {
    const onStale = vi.fn();
    const w = new StaleWatch(() => Date.now(), AFTER, onStale);
    run(w, AFTER, () => false);
    expect(onStale).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    w.check(false);
    expect(onStale).toHaveBeenCalledTimes(1);
  });

  it('fires once per outage, however long it lasts', () => {
    const onStale = vi.fn();
    const w = new StaleWatch(() => Date.now(), AFTER, onStale);
    run(w, 120_000, () => false);
    expect(onStale).toHaveBeenCalledTimes(1);
  });

  it('a healthy moment ends the outage and re-arms it', () => {
    const onStale = vi.fn();
    const w = new StaleWatch(() => Date.now(), AFTER, onStale);
    run(w, 15_000, () => false);
    expect(onStale).toHaveBeenCalledTimes(1);
    w.check(true);
    run(w, AFTER, () => false);
    expect(onStale).toHaveBeenCalledTimes(1);
    run(w, 1_000, () => false);
    expect(onStale).toHaveBeenCalledTimes(2);
  });

  it('healthy() (a leader heartbeat, an open connection) pushes the deadline back', () => {
    const onStale = vi.fn();
    const w = new StaleWatch(() => Date.now(), AFTER, onStale);
    run(w, 8_000, () => false);
    w.healthy();
    run(w, 8_000, () => false);
    expect(onStale).not.toHaveBeenCalled();
    run(w, 3_000, () => false);
    expect(onStale).toHaveBeenCalledTimes(1);
  });

  it('a connection that keeps working never fires', () => {
    const onStale = vi.fn();
    const w = new StaleWatch(() => Date.now(), AFTER, onStale);
    run(w, 60_000, () => true);
    expect(onStale).not.toHaveBeenCalled();
  });

  it('reports an onStale that throws and still counts the outage as notified', () => {
    const reportError = vi.fn();
    vi.stubGlobal('reportError', reportError);
    const err = new Error('refetch failed');
    const onStale = vi.fn(() => {
      throw err;
    });
    const w = new StaleWatch(() => Date.now(), AFTER, onStale);
    run(w, 20_000, () => false);
    expect(onStale).toHaveBeenCalledTimes(1);
    expect(reportError).toHaveBeenCalledWith(err);
  });
});
