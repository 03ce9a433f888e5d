import { describe, expect, it } from 'vitest';
import { closeReasonForStatus, FAST_EMPTY_MS, LongPollTransport, nextPollDelay } from '../src/transport/longpoll.js';
import { ev, flush, jwt } from './fakes.js';
import { transportContext } from './helpers.js';

const seq = (n: number) => Array.from({ length: n }, (_, i) => i / n);

describe('nextPollDelay (RTT-aware cadence)', () => {
  const visible = { held: true, hidden: false };

  it('polls again at once after events', () => {
    expect(nextPollDelay({ ...visible, elapsedMs: 100, eventCount: 3 }, () => 0.7)).toBe(0);
  });

  it('polls again at once after a held poll ran out empty', () => {
    expect(nextPollDelay({ ...visible, elapsedMs: 25_000, eventCount: 0 }, () => 0.7)).toBe(0);
  });

  it('waits 2–5 s (jittered) after a fast empty answer', () => {
    const delays = seq(50).map((r) => nextPollDelay({ ...visible, elapsedMs: FAST_EMPTY_MS - 1, eventCount: 0 }, () => r));
    expect(Math.min(...delays)).toBe(2_000);
    expect(Math.max(...delays)).toBeLessThanOrEqual(5_000);
    expect(new Set(delays).size).toBeGreaterThan(10);
  });

  it('polls slower when no tab is visible', () => {
    for (const r of seq(20)) {
      const fast = { elapsedMs: 200, eventCount: 0, held: true };
      expect(nextPollDelay({ ...fast, hidden: true }, () => r)).toBeGreaterThanOrEqual(5_000);
      expect(nextPollDelay({ ...fast, hidden: true }, () => r)).toBeLessThanOrEqual(10_000);
      expect(nextPollDelay({ ...fast, hidden: true }, () => r)).toBeGreaterThan(nextPollDelay({ ...fast, hidden: false }, () => r));
      const held = { elapsedMs: 25_000, eventCount: 0, held: true, hidden: true };
      expect(nextPollDelay(held, () => r)).toBeGreaterThanOrEqual(3_000);
      expect(nextPollDelay(held, () => r)).toBeLessThanOrEqual(5_000);
    }
  });

  it('does not wait after the immediate first poll', () => {
    expect(nextPollDelay({ elapsedMs: 5, eventCount: 0, held: false, hidden: true }, () => 0.5)).toBe(0);
  });
});

describe('closeReasonForStatus', () => {
  it('maps HTTP errors', () => {
    expect(closeReasonForStatus(401, null).kind).toBe('auth');
    expect(closeReasonForStatus(403, null).kind).toBe('forbidden');
    expect(closeReasonForStatus(400, null).kind).toBe('forbidden');
    expect(closeReasonForStatus(503, 5000)).toEqual({ kind: 'throttled', detail: 'HTTP 503', retryAfterMs: 5000 });
    expect(closeReasonForStatus(429, null).kind).toBe('throttled');
    expect(closeReasonForStatus(500, null).kind).toBe('retry');
  });
});

describe('LongPollTransport', () => {
  function started(opts: Parameters<typeof transportContext>[0] = {}) {
    const t = transportContext(opts);
    const transport = new LongPollTransport(t.ctx);
    transport.start();
    return { ...t, transport };
  }

  it('polls with a Bearer header and carries services, propertyId, lastSeq and epoch', async () => {
    const { tab } = started();
    await flush();
    const r = tab.http.last();
    const u = new URL(r.url);
    expect(u.pathname).toBe('/v1/realtime/poll');
    expect(Object.fromEntries(u.searchParams)).toEqual({
      services: 'finance,tasks',
      propertyId: 'p1',
      lastSeq: '41',
      epoch: 'E',
      timeout: '0', // the first poll answers at once
    });
    expect(r.init.headers).toEqual({ Authorization: 'Bearer tok-1' });
  });

  it("carries the token's org on every poll, and a refreshed token's org after it", async () => {
    const first = jwt({ sub: 'u1', org: 'acme' });
    const { tab } = started({ token: first, freshToken: jwt({ sub: 'u1', org: 'globex' }) });
    await flush();
    const r = tab.http.last();
    expect(new URL(r.url).searchParams.get('org')).toBe('acme');
    expect(r.init.headers).toEqual({ Authorization: `Bearer ${first}` });
    tab.http.last().respond(200, { events: [], lastSeq: 41, epoch: 'E', reset: null });
    await flush();
    // The next poll asks for a token again (getToken answers the refreshed one).
    expect(new URL(tab.http.last().url).searchParams.get('org')).toBe('globex');
  });

  it('sends no org when the token cannot be decoded', async () => {
    const { tab } = started({ token: 'opaque-token' });
    await flush();
    expect(new URL(tab.http.last().url).searchParams.has('org')).toBe(false);
  });

  it('opens on the first answer, delivers events, moves the cursor, then holds polls for 25 s', async () => {
    const { tab, rec } = started();
    await flush();
    tab.http.last().respond(200, { events: [ev(42), ev(43)], lastSeq: 43, epoch: 'E', reset: null });
    await flush();
    expect(rec.opened).toEqual([{ connectionId: null, epoch: 'E', seq: 43, expiresAt: null }]);
    expect(rec.events[0]?.events.map((e) => e.seq)).toEqual([42, 43]);
    expect(rec.cursors).toEqual([{ seq: 43, epoch: 'E' }]);
    const next = new URL(tab.http.last().url).searchParams;
    expect(next.get('lastSeq')).toBe('43');
    expect(next.get('timeout')).toBe('25');
  });

  it('waits 2–5 s after a fast empty held poll', async () => {
    const { tab, world } = started();
    await flush();
    tab.http.last().respond(200, { events: [], lastSeq: 41, epoch: 'E', reset: null });
    await flush();
    tab.http.last().respond(200, { events: [], lastSeq: 41, epoch: 'E', reset: null }); // held poll, answered fast
    await flush();
    expect(tab.http.requests).toHaveLength(2);
    await world.clock.advance(1_999);
    expect(tab.http.requests).toHaveLength(2);
    await world.clock.advance(3_001);
    expect(tab.http.requests).toHaveLength(3);
  });

  it('reports a fast empty held poll to telemetry, not the immediate first poll', async () => {
    const { tab, ctx } = started();
    const reports: Array<[string, number, unknown]> = [];
    ctx.report = (name, value, attrs) => reports.push([name, value, attrs]);
    await flush();
    tab.http.last().respond(200, { events: [], lastSeq: 41, epoch: 'E', reset: null }); // first poll, timeout=0
    await flush();
    expect(reports).toEqual([]);
    tab.http.last().respond(200, { events: [], lastSeq: 41, epoch: 'E', reset: null }); // held, answered at once
    await flush();
    expect(reports).toEqual([['fast_empty', 0, { transport: 'longpoll' }]]);
  });

  it('reports a reset with the new head', async () => {
    const { tab, rec } = started();
    await flush();
    tab.http.last().respond(200, { events: [], lastSeq: 900, epoch: 'F', reset: { reason: 'epoch_changed' } });
    await flush();
    expect(rec.resets).toEqual([{ reason: 'epoch_changed', seq: 900, epoch: 'F' }]);
  });

  it('never sends an unusable token: no request, an auth failure instead', async () => {
    const { tab, rec } = started({ token: '' });
    await flush();
    expect(tab.http.requests).toHaveLength(0);
    expect(rec.closed[0]?.reason.kind).toBe('auth');
  });

  it('maps HTTP and network failures', async () => {
    const a = started();
    await flush();
    a.tab.http.last().respond(401, { error: { code: 'unauthorized' } });
    await flush();
    expect(a.rec.closed).toEqual([{ reason: { kind: 'auth', detail: 'HTTP 401' }, opened: false }]);

    const b = started();
    await flush();
    b.tab.http.last().respond(503, {}, { 'Retry-After': '5' });
    await flush();
    expect(b.rec.closed[0]?.reason).toEqual({ kind: 'throttled', detail: 'HTTP 503', retryAfterMs: 5000 });

    const c = started();
    await flush();
    c.tab.http.last().fail();
    await flush();
    expect(c.rec.closed[0]?.reason.kind).toBe('retry');
    expect(c.rec.closed[0]?.opened).toBe(false);
  });

  it('update() aborts the held poll and re-polls with the new subscription at once', async () => {
    const { tab, transport, state } = started();
    await flush();
    tab.http.last().respond(200, { events: [], lastSeq: 41, epoch: 'E', reset: null });
    await flush();
    const held = tab.http.last();
    transport.update(); // same subscription: nothing happens
    expect(held.aborted()).toBe(false);
    state.sub = { services: ['guest'], propertyId: 'p2' };
    transport.update();
    await flush();
    expect(held.aborted()).toBe(true);
    const u = new URL(tab.http.last().url).searchParams;
    expect(u.get('services')).toBe('guest');
    expect(u.get('propertyId')).toBe('p2');
    expect(tab.http.requests).toHaveLength(3);
  });

  it('close() aborts the request in flight and reports nothing', async () => {
    const { tab, transport, rec } = started();
    await flush();
    const r = tab.http.last();
    transport.close();
    expect(r.aborted()).toBe(true);
    await flush();
    expect(rec.closed).toEqual([]);
  });
});
