// Rooms through the whole client on fake tabs: the leader's WebSocket frames,
// the follower's requests over the bus, retries across reconnects and leader
// changes, errors, typing and away status.
import { afterEach, describe, expect, it } from 'vitest';
import { createClientInternal } from '../src/client.js';
import { RoomRequestError, type RealtimeClient, type RealtimeOptions, type Room } from '../src/types.js';
import { flush, jwt, World, type FakeSocket, type Tab } from './fakes.js';

const clients: RealtimeClient[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

const ME = 'me';
const token = jwt({ sub: ME, org: 'acme', exp: 4_000_000_000 });

function client(tab: Tab, options: Partial<RealtimeOptions> = {}): RealtimeClient {
  const c = createClientInternal(
    { urls: ['http://edge-a.test'], getToken: async () => token, services: ['finance'], ...options },
    { env: tab.env },
  );
  clients.push(c);
  return c;
}

let acks = 0;
async function open(socket: FakeSocket): Promise<void> {
  socket.open();
  socket.receive({ type: 'ack', connectionId: `conn-${++acks}`, nodeId: 'a', epoch: 'E', seq: 1, expiresAt: 0 });
  await flush();
}

async function liveLeader(world: World) {
  const tab = world.addTab();
  const c = client(tab);
  await flush();
  await open(tab.lastSocket());
  return { tab, c, socket: () => tab.lastSocket() };
}

const joined = (room: string, history: unknown[] = [], extra: Record<string, unknown> = {}) => ({
  type: 'joined',
  room,
  members: [{ userId: ME, state: 'online' }],
  history,
  receipts: {},
  ...extra,
});
const message = (seq: number, text: string, extra: Record<string, unknown> = {}) => ({
  type: 'message',
  room: 'r1',
  seq,
  userId: 'bob',
  text,
  ts: 1_700_000_000_000 + seq,
  ...extra,
});
const roomFrames = (s: FakeSocket) => s.sent.filter((f) => f.type !== 'hello' && f.type !== 'pong' && f.type !== 'update');

describe('rooms: the leader tab', () => {
  it('joins on the WebSocket and builds the room from joined and live frames', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    const room = c.room('r1');
    await flush();
    expect(roomFrames(socket())).toEqual([{ type: 'join', room: 'r1', history: 50 }]);
    let messageCalls = 0;
    room.onMessages(() => messageCalls++);
    socket().receive(
      joined('r1', [{ room: 'r1', seq: 3, userId: 'bob', text: 'hi', ts: 5 }], {
        members: [
          { userId: ME, state: 'online' },
          { userId: 'bob', state: 'away' },
        ],
        receipts: { bob: 3 },
      }),
    );
    expect(room.joined()).toBe(true);
    expect(room.messages().map((m) => m.text)).toEqual(['hi']);
    expect(room.members()).toEqual({ me: 'online', bob: 'away' });
    expect(room.receipts()).toEqual({ bob: 3 });
    socket().receive(message(7, 'there'));
    socket().receive(message(7, 'there')); // a repeat: shown once
    socket().receive({ type: 'presence', room: 'r1', userId: 'bob', state: 'online' });
    socket().receive({ type: 'receipt', room: 'r1', userId: 'bob', seq: 7 });
    expect(room.messages().map((m) => m.seq)).toEqual([3, 7]);
    expect(messageCalls).toBe(2);
    expect(room.members().bob).toBe('online');
    expect(room.receipts()).toEqual({ bob: 7 });
  });

  it('says optimistically and resolves with the stored message', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    const room = c.room('r1');
    await flush();
    socket().receive(joined('r1'));
    const said = room.say('hello');
    expect(room.messages()).toMatchObject([{ text: 'hello', status: 'pending', seq: null, userId: ME }]);
    const frame = socket().sentOfType('say')[0];
    expect(frame).toMatchObject({ type: 'say', room: 'r1', text: 'hello' });
    const clientMsgId = frame?.clientMsgId as string;
    expect(clientMsgId).toMatch(/^c-/);
    socket().receive(message(9, 'hello', { userId: ME, clientMsgId }));
    await expect(said).resolves.toMatchObject({ seq: 9, text: 'hello', clientMsgId });
    expect(room.messages()).toMatchObject([{ seq: 9, status: 'sent' }]);
  });

  it('retries a message across a reconnect with the same clientMsgId, and merges the rejoin without doubles', async () => {
    const world = new World();
    const { tab, c, socket } = await liveLeader(world);
    const room = c.room('r1');
    await flush();
    const first = socket();
    first.receive(joined('r1', [{ room: 'r1', seq: 3, userId: 'bob', text: 'old', ts: 1 }]));
    const said = room.say('survives');
    const id = first.sentOfType('say')[0]?.clientMsgId;
    first.serverClose(1006); // lost before the edge answered
    expect(room.joined()).toBe(false);
    await world.clock.advance(40_000);
    expect(tab.sockets.length).toBeGreaterThan(1);
    const second = socket();
    await open(second);
    // Rooms seen before are joined again with the most history.
    expect(roomFrames(second)).toEqual([{ type: 'join', room: 'r1', history: 100 }]);
    // The edge had stored it: the rejoin history has it, and the repeat brings it again.
    const stored = { room: 'r1', seq: 4, userId: ME, text: 'survives', ts: 2, clientMsgId: id };
    second.receive(joined('r1', [{ room: 'r1', seq: 3, userId: 'bob', text: 'old', ts: 1 }, stored]));
    await expect(said).resolves.toMatchObject({ seq: 4 });
    // The outbox was settled by the history: nothing sent again (the edge would dedup it anyway).
    expect(second.sentOfType('say')).toEqual([]);
    second.receive({ type: 'message', ...stored });
    expect(room.messages().map((m) => `${m.seq}:${m.status}`)).toEqual(['3:sent', '4:sent']);
  });

  it('sends a message not stored before the drop again, with the same clientMsgId', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    const room = c.room('r1');
    await flush();
    socket().receive(joined('r1'));
    const said = room.say('again');
    const id = socket().sentOfType('say')[0]?.clientMsgId;
    socket().serverClose(1006);
    await world.clock.advance(40_000);
    await open(socket());
    expect(socket().sentOfType('say')).toEqual([]); // not before the room is joined again
    socket().receive(joined('r1'));
    expect(socket().sentOfType('say')).toEqual([{ type: 'say', room: 'r1', text: 'again', clientMsgId: id }]);
    socket().receive(message(11, 'again', { userId: ME, clientMsgId: id }));
    await expect(said).resolves.toMatchObject({ seq: 11 });
  });

  it('an error frame rejects the pending message and keeps the connection', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    const room = c.room('r1');
    await flush();
    socket().receive(joined('r1'));
    room.typing(); // awaits nothing: the error belongs to the say
    const said = room.say('too fast');
    socket().receive({ type: 'error', room: 'r1', code: 'rate_limited', message: 'at most 10 messages/s' });
    const err = await said.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RoomRequestError);
    expect(err).toMatchObject({ code: 'rate_limited', room: 'r1' });
    expect(room.messages()).toMatchObject([{ status: 'failed', error: { code: 'rate_limited' } }]);
    expect(socket().closedByClient).toBeNull();
    expect(c.state().status).toBe('live');
  });

  it('keeps one message per room in flight, so an error frame answers the right one', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    const room = c.room('r1');
    await flush();
    socket().receive(joined('r1'));
    const first = room.say('one');
    const second = room.say('two');
    const third = room.say('three');
    expect(socket().sentOfType('say').map((f) => f.text)).toEqual(['one']);
    const id1 = socket().sentOfType('say')[0]?.clientMsgId;
    socket().receive(message(20, 'one', { userId: ME, clientMsgId: id1 }));
    expect(socket().sentOfType('say').map((f) => f.text)).toEqual(['one', 'two']);
    socket().receive({ type: 'error', room: 'r1', code: 'rate_limited', message: 'slow down' });
    await expect(second).rejects.toMatchObject({ code: 'rate_limited' });
    expect(socket().sentOfType('say').map((f) => f.text)).toEqual(['one', 'two', 'three']);
    const id3 = socket().sentOfType('say')[2]?.clientMsgId;
    socket().receive(message(22, 'three', { userId: ME, clientMsgId: id3 }));
    await expect(first).resolves.toMatchObject({ seq: 20 });
    await expect(third).resolves.toMatchObject({ seq: 22 });
    expect(room.messages().map((m) => `${m.text}:${m.status}`)).toEqual(['one:sent', 'three:sent', 'two:failed']);
  });

  it('a message unanswered for 5 s lets the next one of its room go', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    const room = c.room('r1');
    await flush();
    socket().receive(joined('r1'));
    void room.say('slow');
    void room.say('next');
    await world.clock.advance(4_000);
    expect(socket().sentOfType('say')).toHaveLength(1);
    await world.clock.advance(2_000);
    expect(socket().sentOfType('say').map((f) => f.text)).toEqual(['slow', 'next']);
  });

  it('rejects what the edge would refuse without sending it', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    const room = c.room('r1');
    await flush();
    await expect(room.say('')).rejects.toMatchObject({ code: 'bad_request' });
    await expect(room.say('é'.repeat(2049))).rejects.toMatchObject({ code: 'too_large' });
    expect(socket().sentOfType('say')).toEqual([]);
    expect(() => c.room('no spaces')).toThrow();
  });

  it('a refused join reaches the room as an error', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    const room = c.room('secret');
    const errors: string[] = [];
    room.onError((e) => errors.push(e.code));
    await flush();
    const said = room.say('x');
    socket().receive({ type: 'error', room: 'secret', code: 'forbidden', message: 'outside the rooms claim' });
    expect(errors).toEqual(['forbidden']);
    expect(room.lastError()).toMatchObject({ code: 'forbidden' });
    await expect(said).rejects.toMatchObject({ code: 'forbidden' });
  });

  it('sends at most one typing frame per 2 s', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    const room = c.room('r1');
    await flush();
    socket().receive(joined('r1'));
    for (let i = 0; i < 5; i++) {
      room.typing();
      await world.clock.advance(300);
    }
    expect(socket().sentOfType('typing')).toHaveLength(1);
    await world.clock.advance(600);
    room.typing();
    expect(socket().sentOfType('typing')).toHaveLength(2);
  });

  it('shows another user typing until 5 s after their last frame', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    const room = c.room('r1');
    await flush();
    socket().receive(joined('r1'));
    let calls = 0;
    room.onTyping(() => calls++);
    socket().receive({ type: 'typing', room: 'r1', userId: 'bob' });
    expect(room.typingUsers()).toEqual(['bob']);
    await world.clock.advance(3_000);
    socket().receive({ type: 'typing', room: 'r1', userId: 'bob' });
    await world.clock.advance(4_900);
    expect(room.typingUsers()).toEqual(['bob']);
    await world.clock.advance(200);
    expect(room.typingUsers()).toEqual([]);
    expect(calls).toBe(2); // shown, then expired
  });

  it('sends reads only forward', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    const room = c.room('r1');
    await flush();
    room.read(5); // queued until joined
    expect(socket().sentOfType('read')).toEqual([]);
    socket().receive(joined('r1', [], { receipts: { me: 2 } }));
    expect(socket().sentOfType('read')).toEqual([{ type: 'read', room: 'r1', seq: 5 }]);
    socket().receive({ type: 'receipt', room: 'r1', userId: ME, seq: 5 });
    room.read(4);
    room.read(5);
    room.read(0);
    expect(socket().sentOfType('read')).toHaveLength(1);
    room.read(8);
    expect(socket().sentOfType('read')).toEqual([
      { type: 'read', room: 'r1', seq: 5 },
      { type: 'read', room: 'r1', seq: 8 },
    ]);
  });

  it('leaves on the edge once the last handle left', async () => {
    const world = new World();
    const { c, socket } = await liveLeader(world);
    const a = c.room('r1');
    const b = c.room('r1');
    await flush();
    socket().receive(joined('r1'));
    await a.leave();
    expect(socket().sentOfType('leave')).toEqual([]);
    await expect(a.say('x')).rejects.toMatchObject({ code: 'not_joined' });
    await b.leave();
    expect(socket().sentOfType('leave')).toEqual([{ type: 'leave', room: 'r1' }]);
  });

  it('answers history from the joined history when it holds it, else over HTTP', async () => {
    const world = new World();
    const { tab, c, socket } = await liveLeader(world);
    const room = c.room('r1');
    await flush();
    const history = Array.from({ length: 50 }, (_, i) => ({ room: 'r1', seq: 10 + i, userId: 'bob', text: `m${i}`, ts: i }));
    socket().receive(joined('r1', history));
    expect((await room.history(undefined, 20)).map((m) => m.seq)).toEqual(history.slice(30).map((m) => m.seq));
    expect(tab.http.requests).toHaveLength(0);
    const older = room.history(10, 2);
    await flush();
    const req = tab.http.last();
    const url = new URL(req.url);
    expect(url.pathname).toBe('/v2/rooms/r1/messages');
    expect(Object.fromEntries(url.searchParams)).toEqual({ before: '10', limit: '2', org: 'acme' });
    expect(req.init.headers).toEqual({ Authorization: `Bearer ${token}` });
    req.respond(200, { messages: [{ room: 'r1', seq: 4, userId: 'ann', text: 'a', ts: 1 }, { room: 'r1', seq: 8, userId: 'ann', text: 'b', ts: 2 }] });
    expect((await older).map((m) => m.seq)).toEqual([4, 8]);
    expect(room.messages()[0]?.seq).toBe(4);
  });
});

describe('rooms: several tabs', () => {
  async function twoTabs() {
    const world = new World();
    const a = await liveLeader(world);
    const tabB = world.addTab();
    const b = client(tabB);
    await flush();
    await world.clock.advance(1_500);
    return { world, a, tabB, b };
  }

  it('a follower joins through the leader and gets every frame', async () => {
    const { a, tabB, b } = await twoTabs();
    const room = b.room('r1');
    await flush();
    expect(tabB.sockets).toHaveLength(0);
    expect(roomFrames(a.socket())).toEqual([{ type: 'join', room: 'r1', history: 50 }]);
    a.socket().receive(joined('r1', [{ room: 'r1', seq: 2, userId: 'bob', text: 'x', ts: 1 }]));
    await flush();
    expect(room.joined()).toBe(true);
    expect(room.messages().map((m) => m.seq)).toEqual([2]);
    a.socket().receive({ type: 'typing', room: 'r1', userId: 'bob' });
    await flush();
    expect(room.typingUsers()).toEqual(['bob']);
  });

  it("a second tab opening the room asks for a fresh joined; the first tab merges it without doubles", async () => {
    const { a, b } = await twoTabs();
    const ra = a.c.room('r1');
    await flush();
    a.socket().receive(joined('r1', [{ room: 'r1', seq: 2, userId: 'bob', text: 'x', ts: 1 }]));
    const rb = b.room('r1');
    await flush();
    expect(a.socket().sentOfType('join')).toHaveLength(2);
    a.socket().receive(joined('r1', [{ room: 'r1', seq: 2, userId: 'bob', text: 'x', ts: 1 }]));
    await flush();
    expect(ra.messages().map((m) => m.seq)).toEqual([2]);
    expect(rb.messages().map((m) => m.seq)).toEqual([2]);
  });

  it("a follower's say, typing and read go through the leader; its say resolves from the fanned-out message", async () => {
    const { a, b } = await twoTabs();
    const room = b.room('r1');
    await flush();
    a.socket().receive(joined('r1'));
    await flush();
    const said = room.say('from b');
    room.typing();
    room.read(3);
    await flush();
    const say = a.socket().sentOfType('say')[0];
    expect(say).toMatchObject({ room: 'r1', text: 'from b' });
    expect(a.socket().sentOfType('typing')).toEqual([{ type: 'typing', room: 'r1' }]);
    expect(a.socket().sentOfType('read')).toEqual([{ type: 'read', room: 'r1', seq: 3 }]);
    a.socket().receive(message(5, 'from b', { userId: ME, clientMsgId: say?.clientMsgId }));
    await expect(said).resolves.toMatchObject({ seq: 5 });
  });

  it("an error answering a follower's say rejects it in that tab", async () => {
    const { a, b } = await twoTabs();
    const room = b.room('r1');
    await flush();
    a.socket().receive(joined('r1'));
    await flush();
    const said = room.say('x'.repeat(100));
    await flush();
    a.socket().receive({ type: 'error', room: 'r1', code: 'too_large', message: 'over 4096 bytes' });
    await expect(said).rejects.toMatchObject({ code: 'too_large' });
    expect(a.socket().closedByClient).toBeNull();
  });

  it("a follower's pending message is handed to the next leader with the same clientMsgId", async () => {
    const { world, a, tabB, b } = await twoTabs();
    const room = b.room('r1');
    await flush();
    a.socket().receive(joined('r1'));
    await flush();
    const said = room.say('outlives the leader');
    await flush();
    const id = a.socket().sentOfType('say')[0]?.clientMsgId;
    expect(id).toBeDefined();
    expect(room.joined()).toBe(true);
    a.c.close(); // the leader goes before the edge answered
    await world.clock.advance(100);
    expect(b.state().role).toBe('leader');
    expect(room.joined()).toBe(false); // until the new leader's connection joined it
    const s = tabB.lastSocket();
    await open(s);
    expect(s.sentOfType('join')).toEqual([{ type: 'join', room: 'r1', history: 50 }]);
    s.receive(joined('r1'));
    expect(s.sentOfType('say')).toEqual([{ type: 'say', room: 'r1', text: 'outlives the leader', clientMsgId: id }]);
    s.receive(message(6, 'outlives the leader', { userId: ME, clientMsgId: id }));
    await expect(said).resolves.toMatchObject({ seq: 6 });
  });

  it('tells the edge away when every tab is hidden, online when one shows again', async () => {
    const { a, tabB, b } = await twoTabs();
    b.room('r1');
    await flush();
    a.socket().receive(joined('r1'));
    await flush();
    a.tab.visible = false;
    a.tab.emit('visibilitychange', {});
    await flush();
    expect(a.socket().sentOfType('status')).toEqual([]); // tab B is still visible
    tabB.visible = false;
    tabB.emit('visibilitychange', {});
    await flush();
    await flush();
    expect(a.socket().sentOfType('status')).toEqual([{ type: 'status', state: 'away' }]);
    tabB.visible = true;
    tabB.emit('visibilitychange', {});
    await flush();
    await flush();
    expect(a.socket().sentOfType('status')).toEqual([
      { type: 'status', state: 'away' },
      { type: 'status', state: 'online' },
    ]);
  });
});

// The handle type is what the README documents.
const _typecheck: (r: Room) => Promise<unknown> = (r) => r.say('x');
void _typecheck;
