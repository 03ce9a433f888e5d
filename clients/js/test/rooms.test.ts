import { describe, expect, it } from 'vitest';
import { MessageLog } from '../src/rooms/messages.js';
import { Members } from '../src/rooms/presence.js';
import { Receipts } from '../src/rooms/receipts.js';
import { Throttle, TypingTracker, TYPING_EXPIRY_MS } from '../src/rooms/typing.js';
import { parseRoomFrame } from '../src/rooms/wire.js';
import type { ChatMessage, RoomMessage } from '../src/types.js';

const msg = (seq: number, extra: Partial<RoomMessage> = {}): RoomMessage => ({ room: 'r1', seq, userId: 'u1', text: `m${seq}`, ts: seq, ...extra });
const seqs = (log: MessageLog) => log.list().map((m) => m.seq);
const pending = (clientMsgId: string, userId = 'me'): ChatMessage => ({
  room: 'r1',
  seq: null,
  userId,
  text: 'hello',
  ts: 0,
  clientMsgId,
  status: 'pending',
});

describe('typing expiry', () => {
  it('shows a user until 5 s after their last typing frame', () => {
    const t = new TypingTracker();
    expect(t.saw('bob', 1_000)).toBe(true);
    expect(t.users()).toEqual(['bob']);
    expect(t.nextExpiry()).toBe(1_000 + TYPING_EXPIRY_MS);
    // A later frame extends it and is not a change of the list.
    expect(t.saw('bob', 4_000)).toBe(false);
    expect(t.expire(5_999)).toBe(false);
    expect(t.expire(6_000)).toBe(false); // 5 s after the first frame, 2 s after the last
    expect(t.users()).toEqual(['bob']);
    expect(t.expire(8_999)).toBe(false);
    expect(t.expire(9_000)).toBe(true);
    expect(t.users()).toEqual([]);
    expect(t.nextExpiry()).toBeNull();
  });

  it('expires each user on their own clock and keeps the array stable between changes', () => {
    const t = new TypingTracker();
    t.saw('bob', 0);
    t.saw('ann', 3_000);
    const a = t.users();
    expect(a).toEqual(['ann', 'bob']);
    expect(t.users()).toBe(a);
    expect(t.nextExpiry()).toBe(5_000);
    expect(t.expire(5_000)).toBe(true);
    expect(t.users()).toEqual(['ann']);
    expect(t.nextExpiry()).toBe(8_000);
    expect(t.remove('ann')).toBe(true);
    expect(t.users()).toEqual([]);
  });
});

describe('throttle', () => {
  it('lets at most one action through per 2 s', () => {
    const th = new Throttle(2_000);
    const let_ = [0, 500, 1_999, 2_000, 2_100, 3_999, 4_000, 10_000].filter((t) => th.take(t));
    expect(let_).toEqual([0, 2_000, 4_000, 10_000]);
  });
});

describe('message merge', () => {
  it('keeps seq order and drops a seq seen before', () => {
    const log = new MessageLog();
    expect(log.add([msg(5), msg(9)])).toBe(true);
    expect(log.add([msg(7), msg(5)])).toBe(true);
    expect(log.add([msg(9), msg(7)])).toBe(false);
    expect(seqs(log)).toEqual([5, 7, 9]);
    const a = log.list();
    expect(log.list()).toBe(a); // stable until a change
  });

  it('replaces a pending message by its stored copy (same clientMsgId)', () => {
    const log = new MessageLog();
    log.add([msg(3)]);
    log.addPending(pending('c-1'));
    expect(log.list().map((m) => [m.seq, m.status])).toEqual([
      [3, 'sent'],
      [null, 'pending'],
    ]);
    log.add([msg(4, { userId: 'me', clientMsgId: 'c-1', text: 'hello' })]);
    expect(log.list().map((m) => [m.seq, m.status])).toEqual([
      [3, 'sent'],
      [4, 'sent'],
    ]);
    expect(log.storedById('c-1', 'me')?.seq).toBe(4);
    expect(log.storedById('c-1', 'other')).toBeNull();
  });

  it('shows a second stored copy of the same (user, clientMsgId) once', () => {
    const log = new MessageLog();
    log.add([msg(10, { clientMsgId: 'c-9' })]);
    expect(log.add([msg(12, { clientMsgId: 'c-9' })])).toBe(false);
    // The same clientMsgId from another user is another message.
    expect(log.add([msg(13, { clientMsgId: 'c-9', userId: 'u2' })])).toBe(true);
    expect(seqs(log)).toEqual([10, 13]);
  });

  it('a pending message under an unknown user id is matched by clientMsgId alone', () => {
    const log = new MessageLog();
    log.addPending(pending('c-2', ''));
    log.add([msg(1, { clientMsgId: 'c-2' })]);
    expect(log.list().map((m) => m.status)).toEqual(['sent']);
  });

  it('marks a pending message failed, and drops it on discard', () => {
    const log = new MessageLog();
    log.addPending(pending('c-3'));
    expect(log.fail('c-3', { code: 'too_large', message: 'x' })).toBe(true);
    expect(log.list()[0]).toMatchObject({ status: 'failed', error: { code: 'too_large' } });
    expect(log.fail('c-3', { code: 'x', message: 'x' })).toBe(false);
    expect(log.discard('c-3')).toBe(true);
    expect(log.list()).toEqual([]);
  });

  it('merges a rejoin history into what it had, once each', () => {
    const log = new MessageLog();
    log.joined([msg(1), msg(2), msg(3)], 3);
    // Reconnected: the history overlaps what we had and brings two new ones.
    log.joined([msg(2), msg(3), msg(4), msg(5)], 4);
    expect(seqs(log)).toEqual([1, 2, 3, 4, 5]);
    expect(log.gapBefore()).toBeNull();
    expect(log.fromMemory(undefined, 3)?.map((m) => m.seq)).toEqual([3, 4, 5]);
  });

  it('a rejoin history that starts above what it had leaves a gap, closed by a page', () => {
    const log = new MessageLog();
    log.joined([msg(1), msg(2)], 2); // a full history: older ones may exist
    log.joined([msg(20), msg(21)], 2);
    expect(log.gapBefore()).toBe(20);
    expect(log.fromMemory(undefined, 2)).toBeNull(); // not trusted while a gap is open
    log.page([msg(2), msg(5), msg(9)], 20, 3);
    expect(log.gapBefore()).toBeNull();
    expect(seqs(log)).toEqual([1, 2, 5, 9, 20, 21]);
    expect(log.fromMemory(21, 4)?.map((m) => m.seq)).toEqual([2, 5, 9, 20]);
  });

  it('knows the whole room once a history or page came back short', () => {
    const log = new MessageLog();
    log.joined([msg(4), msg(6)], 50);
    expect(log.fromMemory(undefined, 50)?.map((m) => m.seq)).toEqual([4, 6]);
    expect(log.fromMemory(6, 10)?.map((m) => m.seq)).toEqual([4]);
    const other = new MessageLog();
    other.joined([msg(4), msg(6)], 2);
    expect(other.fromMemory(undefined, 2)?.map((m) => m.seq)).toEqual([4, 6]);
    expect(other.fromMemory(4, 2)).toBeNull(); // older ones are only at the edge
  });

  it('keeps at most its capacity of stored messages, the newest', () => {
    const log = new MessageLog(3);
    log.add([msg(1), msg(2), msg(3), msg(4)]);
    expect(seqs(log)).toEqual([2, 3, 4]);
    expect(log.add([msg(1)])).toBe(true); // forgotten, so new again, and trimmed at once
    expect(seqs(log)).toEqual([2, 3, 4]);
  });
});

describe('presence map', () => {
  it('takes a joined snapshot as the whole truth and presence frames one by one', () => {
    const m = new Members();
    expect(m.snapshot([
      { userId: 'ann', state: 'online' },
      { userId: 'bob', state: 'away' },
    ])).toBe(true);
    expect(m.get()).toEqual({ ann: 'online', bob: 'away' });
    const a = m.get();
    expect(m.set('ann', 'online')).toBe(false);
    expect(m.get()).toBe(a);
    expect(m.set('bob', 'online')).toBe(true);
    expect(m.set('cid', 'online')).toBe(true);
    // A later snapshot without cid: cid went offline meanwhile.
    expect(m.snapshot([
      { userId: 'ann', state: 'online' },
      { userId: 'bob', state: 'online' },
    ])).toBe(true);
    expect(m.get()).toEqual({ ann: 'online', bob: 'online', cid: 'offline' });
    expect(m.allOffline()).toBe(true);
    expect(m.get()).toEqual({ ann: 'offline', bob: 'offline', cid: 'offline' });
    expect(m.state('nobody')).toBe('offline');
  });
});

describe('receipts', () => {
  it('only move forward', () => {
    const r = new Receipts();
    expect(r.set('ann', 5)).toBe(true);
    expect(r.set('ann', 5)).toBe(false);
    expect(r.set('ann', 3)).toBe(false);
    expect(r.of('ann')).toBe(5);
    expect(r.merge({ ann: 4, bob: 2 })).toBe(true); // bob is new; ann's older value is ignored
    expect(r.get()).toEqual({ ann: 5, bob: 2 });
    expect(r.merge({ ann: 5, bob: 1 })).toBe(false);
    expect(r.set('bob', 9)).toBe(true);
    expect(r.get()).toEqual({ ann: 5, bob: 9 });
  });
});

describe('room frames', () => {
  it('parses the contract shapes and rejects malformed ones', () => {
    expect(parseRoomFrame({ type: 'joined', room: 'r1', members: [{ userId: 'u', state: 'online' }, { userId: 1 }], history: [{ seq: 1, userId: 'u', text: 'a', ts: 5 }], receipts: { u: 1, v: 'x' } })).toEqual({
      type: 'joined',
      room: 'r1',
      members: [{ userId: 'u', state: 'online' }],
      history: [{ room: 'r1', seq: 1, userId: 'u', text: 'a', ts: 5 }],
      receipts: { u: 1 },
    });
    expect(parseRoomFrame({ type: 'message', room: 'r1', seq: 2, userId: 'u', text: 'b', ts: 6, clientMsgId: 'c' })).toMatchObject({ seq: 2, clientMsgId: 'c' });
    expect(parseRoomFrame({ type: 'message', room: 'r 1', seq: 2, userId: 'u', text: 'b' })).toBeNull();
    expect(parseRoomFrame({ type: 'presence', room: 'r1', userId: 'u', state: 'gone' })).toBeNull();
    expect(parseRoomFrame({ type: 'error', code: 'bad_request', message: 'm' })).toEqual({ type: 'error', room: null, code: 'bad_request', message: 'm' });
    expect(parseRoomFrame({ type: 'events' })).toBeNull();
  });
});
