import { describe, expect, it } from 'vitest';
import { SseTransport } from '../src/transport/sse.js';
import { ev, flush, jwt } from './fakes.js';
import { transportContext } from './helpers.js';

function started(opts: Parameters<typeof transportContext>[0] = {}) {
  const t = transportContext(opts);
  const transport = new SseTransport(t.ctx);
  transport.start();
  return { ...t, transport };
}

describe('SSE transport', () => {
  it('opens /v2/realtime/sse with services, propertyId, lastSeq, epoch and token', () => {
    const { tab } = started();
    const es = tab.lastSource();
    expect(new URL(es.url).pathname).toBe('/v2/realtime/sse');
    expect(Object.fromEntries(es.params())).toEqual({
      services: 'finance,tasks',
      propertyId: 'p1',
      lastSeq: '41',
      epoch: 'E',
      token: 'tok-1',
    });
  });

  it("carries the token's org, and none when the token cannot be decoded", () => {
    const token = jwt({ sub: 'u1', org: 'acme' });
    const withOrg = started({ token }).tab.lastSource();
    expect(withOrg.params().get('org')).toBe('acme');
    expect(withOrg.params().get('token')).toBe(token);
    // The existing parameters are unchanged beside it.
    expect(withOrg.params().get('services')).toBe('finance,tasks');
    expect(started({ token: 'opaque-token' }).tab.lastSource().params().has('org')).toBe(false);
    expect(started({ token: jwt({ sub: 'u1', org: '*' }) }).tab.lastSource().params().has('org')).toBe(false);
  });

  it("reopening with a renewed token sends that token's org", async () => {
    const { tab, world } = started({
      token: jwt({ sub: 'u1', org: 'acme' }),
      freshToken: jwt({ sub: 'u1', org: 'globex' }),
    });
    const first = tab.lastSource();
    expect(first.params().get('org')).toBe('acme');
    first.emit('ack', { epoch: 'E', seq: 41, expiresAt: world.clock.now + 2 * 60_000 });
    await world.clock.advance(60_001);
    expect(tab.sources).toHaveLength(2);
    expect(tab.lastSource().params().get('org')).toBe('globex');
  });

  it('reports ack, service events, reset and updated', () => {
    const { tab, rec } = started();
    const es = tab.lastSource();
    es.emit('ack', { connectionId: 'n1-1', nodeId: 'n1', epoch: 'E', seq: 41, expiresAt: 0 });
    es.emit('finance', ev(42), '42');
    es.emit('tasks', ev(43, 'tasks'), '43');
    es.emit('reset', { reason: 'epoch_changed', seq: 5 }, '5');
    es.emit('updated', { services: ['finance'], filters: { propertyId: null } });
    expect(rec.opened).toEqual([{ connectionId: 'n1-1', epoch: 'E', seq: 41, expiresAt: 0 }]);
    expect(rec.events.map((b) => [b.events[0]?.service, b.cursor])).toEqual([
      ['finance', 42],
      ['tasks', 43],
    ]);
    expect(rec.resets).toEqual([{ reason: 'epoch_changed', seq: 5, epoch: null }]);
    expect(rec.updated).toEqual([{ services: ['finance'], propertyId: null }]);
  });

  it('closes the EventSource on error instead of letting it retry with a stale token', () => {
    const { tab, rec } = started();
    const es = tab.lastSource();
    es.emit('ack', { epoch: 'E', seq: 41 });
    es.fail();
    expect(es.closed).toBe(true);
    expect(rec.closed).toEqual([{ reason: { kind: 'retry', detail: 'stream ended' }, opened: true }]);
    expect(tab.sources).toHaveLength(1); // the loop, not EventSource, reconnects
  });

  it('an error before the ack is a failed connect', () => {
    const { tab, rec } = started();
    tab.lastSource().fail();
    expect(rec.closed[0]?.opened).toBe(false);
  });

  it('a subscription change reopens the stream from the current cursor', async () => {
    const { tab, rec, transport, state } = started();
    const first = tab.lastSource();
    first.emit('ack', { epoch: 'E', seq: 41 });
    first.emit('finance', ev(50), '50');
    state.sub = { services: ['guest'], propertyId: null };
    transport.update();
    await flush();
    expect(first.closed).toBe(true);
    const second = tab.lastSource();
    expect(second).not.toBe(first);
    expect(second.params().get('services')).toBe('guest');
    expect(second.params().get('propertyId')).toBeNull();
    expect(second.params().get('lastSeq')).toBe('50');
    first.emit('finance', ev(51), '51'); // the old stream is silenced
    expect(rec.events).toHaveLength(1);
    expect(rec.closed).toEqual([]);
  });

  it('reopens with a fresh token a minute before the token expires', async () => {
    const { tab, world, state } = started();
    const first = tab.lastSource();
    first.emit('ack', { epoch: 'E', seq: 41, expiresAt: world.clock.now + 5 * 60_000 });
    await world.clock.advance(4 * 60_000 - 1);
    expect(tab.sources).toHaveLength(1);
    await world.clock.advance(2);
    expect(state.tokenCalls).toEqual([true]);
    expect(tab.sources).toHaveLength(2);
    expect(tab.lastSource().params().get('token')).toBe('tok-2');
  });
});
