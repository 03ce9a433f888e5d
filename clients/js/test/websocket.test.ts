import { describe, expect, it } from 'vitest';
import { closeReasonForCode, WebSocketTransport, WS_SUBPROTOCOL } from '../src/transport/websocket.js';
import { ev, flush, jwt } from './fakes.js';
import { transportContext } from './helpers.js';

function started(opts: Parameters<typeof transportContext>[0] = {}) {
  const t = transportContext(opts);
  const transport = new WebSocketTransport(t.ctx);
  transport.start();
  const socket = t.tab.lastSocket();
  return { ...t, transport, socket };
}

const ack = { type: 'ack', connectionId: 'n1-7', nodeId: 'n1', epoch: 'E', seq: 41, expiresAt: 1_900_000_000_000 };

describe('WebSocket transport: handshake', () => {
  it('connects to /v2/realtime/stream with the subprotocol and no token in the URL', () => {
    const { socket } = started({ url: 'https://edge.test/herald/' });
    const u = new URL(socket.url);
    expect(u.protocol).toBe('wss:');
    expect(u.pathname).toBe('/herald/v2/realtime/stream');
    expect(u.searchParams.has('token')).toBe(false);
    expect(socket.url).not.toContain('tok-1');
    expect(socket.protocol).toBe(WS_SUBPROTOCOL);
  });

  it("puts the token's org in the URL, the token itself only in hello", () => {
    const token = jwt({ sub: 'u1', org: 'acme' });
    const { socket } = started({ url: 'https://edge.test/herald/', token });
    const u = new URL(socket.url);
    expect(u.pathname).toBe('/herald/v2/realtime/stream');
    expect(Object.fromEntries(u.searchParams)).toEqual({ org: 'acme' });
    expect(socket.url).not.toContain(token);
    socket.open();
    expect(socket.sent[0]).toMatchObject({ type: 'hello', token });
  });

  it('sends no org when the token cannot be decoded', () => {
    const { socket } = started({ token: 'opaque-token' });
    expect(new URL(socket.url).search).toBe('');
  });

  it('sends hello with the token, services, filters, lastSeq and epoch on open', () => {
    const { socket } = started();
    socket.open();
    expect(socket.sent).toEqual([
      { type: 'hello', version: 1, services: ['finance', 'tasks'], token: 'tok-1', filters: { propertyId: 'p1' }, lastSeq: 41, epoch: 'E' },
    ]);
  });

  it('omits what it does not know', () => {
    const { socket } = started({ sub: { services: ['finance'], propertyId: null }, cursor: { lastSeq: null, epoch: null } });
    socket.open();
    expect(socket.sent).toEqual([{ type: 'hello', version: 1, services: ['finance'], token: 'tok-1' }]);
  });

  it('reports open on ack', () => {
    const { socket, rec } = started();
    socket.open();
    socket.receive(ack);
    expect(rec.opened).toEqual([{ connectionId: 'n1-7', epoch: 'E', seq: 41, expiresAt: 1_900_000_000_000 }]);
  });
});

describe('WebSocket transport: frames', () => {
  const live = () => {
    const s = started();
    s.socket.open();
    s.socket.receive(ack);
    return s;
  };

  it('events → onEvents with the batch cursor', () => {
    const { socket, rec } = live();
    socket.receive({ type: 'events', service: 'finance', events: [ev(42), ev(43)], seq: 43 });
    expect(rec.events).toHaveLength(1);
    expect(rec.events[0]?.events.map((e) => e.seq)).toEqual([42, 43]);
    expect(rec.events[0]?.cursor).toBe(43);
  });

  it('reset → onReset with the head', () => {
    const { socket, rec } = live();
    socket.receive({ type: 'reset', reason: 'history_gone', seq: 97 });
    expect(rec.resets).toEqual([{ reason: 'history_gone', seq: 97, epoch: null }]);
  });

  it('dropped → onReset scoped to its services, the cursor untouched', () => {
    const { socket, rec } = live();
    socket.receive({ type: 'dropped', services: ['analytics'], fromSeq: 50, toSeq: 60 });
    expect(rec.resets).toEqual([{ reason: 'dropped', seq: null, epoch: null, services: ['analytics'] }]);
    expect(rec.cursors).toEqual([]);
    socket.receive({ type: 'dropped', services: [], fromSeq: 1, toSeq: 2 });
    expect(rec.resets).toHaveLength(1);
  });

  it('ping → pong, and the quiet cursor advances', () => {
    const { socket, rec } = live();
    socket.receive({ type: 'ping', seq: 120 });
    expect(socket.sentOfType('pong')).toHaveLength(1);
    expect(rec.cursors).toEqual([{ seq: 120, epoch: null }]);
  });

  it('refresh → a forced getToken, then {type:"auth"}', async () => {
    const { socket, state } = live();
    socket.receive({ type: 'refresh', expiresAt: 123 });
    await flush();
    expect(state.tokenCalls).toEqual([true]);
    expect(socket.sentOfType('auth')).toEqual([{ type: 'auth', token: 'tok-2' }]);
  });

  it('refresh without a usable token sends nothing (the server will close 4001)', async () => {
    const s = started({ freshToken: null });
    s.socket.open();
    s.socket.receive(ack);
    s.socket.receive({ type: 'refresh', expiresAt: 123 });
    await flush();
    expect(s.socket.sentOfType('auth')).toEqual([]);
  });

  it('updated → onUpdated', () => {
    const { socket, rec } = live();
    socket.receive({ type: 'updated', services: ['tasks'], filters: { propertyId: null } });
    expect(rec.updated).toEqual([{ services: ['tasks'], propertyId: null }]);
  });

  it('ignores unknown frames, non-JSON and binary data', () => {
    const { socket, rec } = live();
    socket.receive({ type: 'future-thing' });
    socket.onmessage?.({ data: 'not json' });
    socket.onmessage?.({ data: new ArrayBuffer(4) });
    expect(rec.events).toEqual([]);
    expect(rec.closed).toEqual([]);
  });

  it('update() changes the subscription in place, only when it changed', () => {
    const { socket, transport, state } = live();
    transport.update();
    expect(socket.sentOfType('update')).toEqual([]);
    state.sub = { services: ['finance'], propertyId: null };
    transport.update();
    expect(socket.sentOfType('update')).toEqual([{ type: 'update', services: ['finance'], filters: { propertyId: null } }]);
    expect(socket.closedByClient).toBeNull(); // never a reconnect
  });

  it('a change before the ack is sent right after it', () => {
    const s = started();
    s.socket.open();
    s.state.sub = { services: ['guest'], propertyId: 'p2' };
    s.transport.update(); // not acked yet: nothing
    expect(s.socket.sentOfType('update')).toEqual([]);
    s.socket.receive(ack);
    expect(s.socket.sentOfType('update')).toEqual([{ type: 'update', services: ['guest'], filters: { propertyId: 'p2' } }]);
  });
});

describe('WebSocket transport: closing', () => {
  it('maps close codes to the next step', () => {
    expect(closeReasonForCode(4001, '', true).kind).toBe('auth');
    expect(closeReasonForCode(4003, '', true).kind).toBe('forbidden');
    expect(closeReasonForCode(4503, '', false).kind).toBe('disabled');
    expect(closeReasonForCode(4029, '', false).kind).toBe('throttled');
    expect(closeReasonForCode(1012, '', true).kind).toBe('draining');
    for (const code of [4008, 1013, 1006, 1001]) expect(closeReasonForCode(code, '', true).kind).toBe('retry');
    expect(closeReasonForCode(4000, '', true).kind).toBe('retry'); // no pong
    expect(closeReasonForCode(4000, '', false).kind).toBe('forbidden'); // hello refused
  });

  it('a close before the ack reports a failed connect', () => {
    const { socket, rec } = started();
    socket.serverClose(1006);
    expect(rec.closed).toEqual([{ reason: { kind: 'retry', detail: 'close 1006' }, opened: false }]);
  });

  it('a close after the ack reports a drop, once', () => {
    const { socket, rec } = started();
    socket.open();
    socket.receive(ack);
    socket.serverClose(4008, 'slow consumer');
    socket.serverClose(4008, 'again');
    expect(rec.closed).toEqual([{ reason: { kind: 'retry', detail: 'close 4008 slow consumer' }, opened: true }]);
  });

  it('close() closes the socket and reports nothing', () => {
    const { socket, rec, transport } = started();
    socket.open();
    transport.close();
    expect(socket.closedByClient).toBe(1000);
    socket.serverClose(1000);
    expect(rec.closed).toEqual([]);
  });

  it('gives up when no ack arrives within 10 s', async () => {
    const { socket, rec, world } = started();
    socket.open();
    await world.clock.advance(10_001);
    expect(rec.closed).toHaveLength(1);
    expect(rec.closed[0]?.opened).toBe(false);
    expect(socket.closedByClient).toBe(1000);
  });

  it('treats 75 s of silence as a dead socket', async () => {
    const { socket, rec, world } = started();
    socket.open();
    socket.receive(ack);
    await world.clock.advance(60_000);
    socket.receive({ type: 'ping', seq: 1 });
    await world.clock.advance(60_000);
    expect(rec.closed).toEqual([]);
    await world.clock.advance(20_000);
    expect(rec.closed[0]?.reason.kind).toBe('retry');
    expect(rec.closed[0]?.opened).toBe(true);
  });
});
