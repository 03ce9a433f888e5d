// The leader's side of rooms: one hub per profile, on the leader tab's
// WebSocket. It joins the union of the rooms every tab holds (again after
// each reconnect, with the largest history, so tabs can merge what they
// missed), leaves a room once no tab holds it, sends the tabs' requests,
// tells the edge `away` while every tab is hidden, and sorts the edge's room
// frames into fan-out and failed requests.
// Invariants:
// - A message waits in the outbox until the edge stored it (a `message` with
//   its clientMsgId), refused it (an error frame) or OUTBOX_MAX_AGE_MS passed;
//   it is (re)sent with the same clientMsgId on every connection once its room
//   is joined there, so the edge's 2-minute dedup stores it once.
// - Error frames carry no request id, and a refusal can overtake the stored
//   copy of an earlier message (storing takes a round trip to JetStream). So
//   a room has at most one message in flight: the next is sent once the
//   previous was answered (or after SAY_STALL_MS without an answer), which
//   also keeps a room's messages in the order they were said. An error of
//   room R belongs to the oldest request of R still awaiting an answer that
//   can fail that way. `typing` and `read` have no answer when they succeed,
//   so they stop waiting at the next answer in their room or after QUIET_OK_MS.
// - At most one typing frame per room per TYPING_INTERVAL_MS, and a read only
//   when it is above every read sent for the room.

import type { RoomError } from '../types.js';
import type { RoomRequest } from './bus.js';
import { Throttle } from './typing.js';
import { JOIN_HISTORY, MAX_HISTORY, type RoomFrame } from './wire.js';

/** A tab not heard from for this long no longer holds rooms. */
export const HOLD_MAX_AGE_MS = 35_000;
/** Outbox entries older than this are dropped (the tab gave up at 100 s; the edge dedups for 120 s). */
export const OUTBOX_MAX_AGE_MS = 110_000;
/** A typing or read not refused within this long succeeded. */
const QUIET_OK_MS = 5_000;
/** A message unanswered this long no longer holds back the next one of its room. */
export const SAY_STALL_MS = 5_000;

type Kind = 'join' | 'leave' | 'say' | 'typing' | 'read';

/** Which requests an error code can answer. */
const CAN_FAIL: Record<string, readonly Kind[]> = {
  too_large: ['say'],
  rate_limited: ['say'],
  unavailable: ['say', 'join', 'read'],
  forbidden: ['join', 'say', 'typing', 'read'],
};

interface Waiting {
  room: string;
  kind: Kind;
  at: number;
  /** The requesting tab and its request id (say, typing, read). */
  from?: string;
  id?: string;
  clientMsgId?: string;
}

interface Outgoing {
  from: string;
  id: string;
  room: string;
  text: string;
  clientMsgId: string;
  at: number;
  /** The connection it was last sent on. */
  sentOn: string | null;
}

export interface HubHost {
  now(): number;
  /** Sends a frame on the leader's WebSocket; false when none is open. */
  send(frame: Record<string, unknown>): boolean;
  /** A room frame for every tab, this one included. */
  fanout(frame: RoomFrame, asked: number): void;
  /** A failed request, for the tab that made it. */
  fail(to: string, id: string, room: string, error: RoomError): void;
  /** The connection is gone: rooms are not joined until the next `joined`. */
  down(): void;
}

export class RoomHub {
  private readonly holders = new Map<string, { rooms: Set<string>; at: number }>();
  /** Rooms of the current connection, with the history their pending join asked for. */
  private readonly rooms = new Map<string, { joined: boolean; asked: number }>();
  private readonly outbox = new Map<string, Outgoing>();
  /** The message of each room sent and not answered yet, and when it was sent. */
  private readonly inflight = new Map<string, { clientMsgId: string; at: number }>();
  private readonly waiting: Waiting[] = [];
  private readonly typingThrottles = new Map<string, Throttle>();
  private readonly readSent = new Map<string, number>();
  private readonly readQueued = new Map<string, { seq: number; from: string; id: string }>();
  /** The open connection's id, or null. */
  private conn: string | null = null;
  /** Rooms seen joined on an earlier connection: a rejoin asks for the most history. */
  private readonly everJoined = new Set<string>();
  private away = false;
  private awaySent = false;

  constructor(private readonly host: HubHost) {}

  // ---- what the tabs hold ---------------------------------------------------

  /** The rooms tab `tab` holds now. */
  hold(tab: string, rooms: readonly string[]): void {
    const before = this.holders.get(tab)?.rooms ?? new Set<string>();
    const now = new Set(rooms);
    this.holders.set(tab, { rooms: now, at: this.host.now() });
    for (const r of now) {
      // A tab new to the room needs its history, members and receipts: join
      // again (the edge answers a fresh `joined`, which every tab merges).
      if (!before.has(r) && this.rooms.get(r)?.joined !== false) this.join(r);
    }
    for (const r of before) if (!now.has(r)) this.maybeLeave(r);
  }

  /** Tab `tab` went away. */
  forget(tab: string): void {
    const h = this.holders.get(tab);
    if (h === undefined) return;
    this.holders.delete(tab);
    for (const r of h.rooms) this.maybeLeave(r);
  }

  /** Forgets tabs not heard from within HOLD_MAX_AGE_MS (except `keep`, this tab). */
  prune(keep: string): void {
    const now = this.host.now();
    for (const [tab, h] of this.holders) if (tab !== keep && now - h.at > HOLD_MAX_AGE_MS) this.forget(tab);
    for (const [key, o] of this.outbox) if (now - o.at > OUTBOX_MAX_AGE_MS) this.outbox.delete(key);
  }

  private held(room: string): boolean {
    for (const h of this.holders.values()) if (h.rooms.has(room)) return true;
    return false;
  }

  /** Sorted: what the hub joins. */
  heldRooms(): string[] {
    const all = new Set<string>();
    for (const h of this.holders.values()) for (const r of h.rooms) all.add(r);
    return [...all].sort();
  }

  private join(room: string): void {
    if (this.conn === null) return;
    const asked = this.everJoined.has(room) ? MAX_HISTORY : JOIN_HISTORY;
    if (this.host.send({ type: 'join', room, history: asked })) {
      this.rooms.set(room, { joined: this.rooms.get(room)?.joined === true, asked });
      this.expect({ room, kind: 'join' });
    }
  }

  private maybeLeave(room: string): void {
    if (this.held(room)) return;
    const had = this.rooms.delete(room);
    this.everJoined.delete(room);
    this.readQueued.delete(room);
    for (const [key, o] of this.outbox) {
      if (o.room === room) {
        this.outbox.delete(key);
        this.host.fail(o.from, o.id, room, { code: 'left', message: 'the room was left before the message was sent' });
      }
    }
    if (had && this.conn !== null && this.host.send({ type: 'leave', room })) this.expect({ room, kind: 'leave' });
  }

  // ---- the connection -------------------------------------------------------

  /** The leader's WebSocket opened (`connectionId`) or closed (null). */
  connection(connectionId: string | null): void {
    if (connectionId === this.conn) return;
    const wasUp = this.conn !== null;
    this.conn = connectionId;
    this.rooms.clear();
    this.inflight.clear();
    this.waiting.length = 0;
    this.awaySent = false;
    if (wasUp) this.host.down();
    if (connectionId === null) return;
    for (const room of this.heldRooms()) this.join(room);
    // A fresh connection is online in the edge's eyes.
    if (this.away) this.sendStatus();
  }

  /** Whether any tab of the profile is visible: the edge hears `away` when none is. */
  visibility(anyVisible: boolean): void {
    const away = !anyVisible;
    if (away === this.away) return;
    this.away = away;
    this.sendStatus();
  }

  private sendStatus(): void {
    if (this.conn === null) return;
    if (this.awaySent === this.away) return;
    if (this.host.send({ type: 'status', state: this.away ? 'away' : 'online' })) this.awaySent = this.away;
  }

  // ---- requests ---------------------------------------------------------------

  /** A request of tab `from` (this tab's own, or one from the bus). */
  request(from: string, id: string, req: RoomRequest): void {
    switch (req.op) {
      case 'say': {
        if (this.outbox.has(req.clientMsgId)) return; // a repeat (leader change, resend): already queued
        const o: Outgoing = { from, id, room: req.room, text: req.text, clientMsgId: req.clientMsgId, at: this.host.now(), sentOn: null };
        this.outbox.set(req.clientMsgId, o);
        this.pump(req.room);
        return;
      }
      case 'typing': {
        if (this.rooms.get(req.room)?.joined !== true) return; // ephemeral: not worth queueing
        let t = this.typingThrottles.get(req.room);
        if (t === undefined) {
          t = new Throttle();
          this.typingThrottles.set(req.room, t);
        }
        if (!t.take(this.host.now())) return;
        if (this.host.send({ type: 'typing', room: req.room })) this.expect({ room: req.room, kind: 'typing', from, id });
        return;
      }
      case 'read': {
        if (req.seq <= (this.readSent.get(req.room) ?? 0)) return;
        const queued = this.readQueued.get(req.room);
        if (queued !== undefined && queued.seq >= req.seq) return;
        this.readQueued.set(req.room, { seq: req.seq, from, id });
        if (this.rooms.get(req.room)?.joined === true) this.flushRead(req.room);
        return;
      }
    }
  }

  /** Sends the room's next message unless one is in flight (see the invariants). */
  private pump(room: string): void {
    if (this.conn === null || this.rooms.get(room)?.joined !== true) return;
    const now = this.host.now();
    const busy = this.inflight.get(room);
    if (busy !== undefined && this.outbox.has(busy.clientMsgId) && now - busy.at < SAY_STALL_MS) return;
    for (const o of this.outbox.values()) {
      if (o.room !== room || o.sentOn === this.conn) continue;
      if (this.host.send({ type: 'say', room: o.room, text: o.text, clientMsgId: o.clientMsgId })) {
        o.sentOn = this.conn;
        this.inflight.set(room, { clientMsgId: o.clientMsgId, at: now });
        this.expect({ room: o.room, kind: 'say', from: o.from, id: o.id, clientMsgId: o.clientMsgId });
      }
      return;
    }
    this.inflight.delete(room);
  }

  /** Once a second: a stalled message lets the next one of its room go. */
  tick(): void {
    for (const room of [...this.inflight.keys()]) this.pump(room);
  }

  private flushRead(room: string): void {
    const q = this.readQueued.get(room);
    if (q === undefined) return;
    if (this.host.send({ type: 'read', room, seq: q.seq })) {
      this.readQueued.delete(room);
      this.readSent.set(room, q.seq);
      this.expect({ room, kind: 'read', from: q.from, id: q.id });
    }
  }

  // ---- what the edge says -------------------------------------------------------

  /** A room frame from the leader's WebSocket. */
  frame(frame: RoomFrame): void {
    switch (frame.type) {
      case 'joined': {
        const r = this.rooms.get(frame.room);
        const asked = r?.asked ?? JOIN_HISTORY;
        this.answered(frame.room, 'join');
        if (!this.held(frame.room)) return; // left meanwhile
        this.rooms.set(frame.room, { joined: true, asked });
        this.everJoined.add(frame.room);
        // A message the history holds was stored before the connection dropped.
        for (const m of frame.history) if (m.clientMsgId !== undefined && this.outbox.get(m.clientMsgId)?.room === frame.room) this.outbox.delete(m.clientMsgId);
        this.host.fanout(frame, asked);
        this.pump(frame.room);
        this.flushRead(frame.room);
        // `status` applies to the rooms the connection is in: repeat it for this one.
        if (this.away) {
          this.awaySent = false;
          this.sendStatus();
        }
        return;
      }
      case 'left':
        this.answered(frame.room, 'leave');
        this.host.fanout(frame, 0);
        return;
      case 'message':
        if (frame.clientMsgId !== undefined) {
          const o = this.outbox.get(frame.clientMsgId);
          if (o !== undefined && o.room === frame.room) {
            this.outbox.delete(frame.clientMsgId);
            this.answered(frame.room, 'say', frame.clientMsgId);
          }
        }
        this.host.fanout(frame, 0);
        this.pump(frame.room);
        return;
      case 'error':
        this.error(frame);
        return;
      default:
        this.host.fanout(frame, 0);
    }
  }

  private error(frame: Extract<RoomFrame, { type: 'error' }>): void {
    const room = frame.room;
    if (room === null) {
      // A refused `status`: nothing waits on it.
      console.warn(`herald: the edge refused a room request: ${frame.code}: ${frame.message}`);
      return;
    }
    const w = this.attribute(room, frame.code);
    const error: RoomError = { code: frame.code, message: frame.message };
    if (w === null || w.kind === 'join' || w.kind === 'leave') {
      // A refused join concerns every tab holding the room; so does an error nothing waits for.
      if (w?.kind === 'join') {
        this.rooms.delete(room);
        for (const [key, o] of this.outbox) {
          if (o.room === room) {
            this.outbox.delete(key);
            this.host.fail(o.from, o.id, room, error);
          }
        }
      }
      this.host.fanout(frame, 0);
      return;
    }
    if (w.kind === 'say' && w.clientMsgId !== undefined) {
      this.outbox.delete(w.clientMsgId);
      this.pump(room);
    }
    if (w.kind === 'read') this.readSent.delete(room);
    if (w.from !== undefined && w.id !== undefined) this.host.fail(w.from, w.id, room, error);
  }

  private expect(w: Omit<Waiting, 'at'>): void {
    this.waiting.push({ ...w, at: this.host.now() });
  }

  /**
   * A positive answer in `room` (to a join, leave or say): that request stops
   * waiting, and so does every typing and read of the room sent before it.
   */
  private answered(room: string, kind: Kind, clientMsgId?: string): void {
    const i = this.waiting.findIndex((w) => w.room === room && w.kind === kind && (clientMsgId === undefined || w.clientMsgId === clientMsgId));
    if (i < 0) return;
    this.waiting.splice(i, 1);
    for (let j = i - 1; j >= 0; j--) {
      const w = this.waiting[j];
      if (w !== undefined && w.room === room && (w.kind === 'typing' || w.kind === 'read')) this.waiting.splice(j, 1);
    }
  }

  /** The request an error of `room` answers (removed from the waiting list), or null. */
  private attribute(room: string, code: string): Waiting | null {
    const now = this.host.now();
    for (let j = this.waiting.length - 1; j >= 0; j--) {
      const w = this.waiting[j];
      if (w !== undefined && (w.kind === 'typing' || w.kind === 'read') && now - w.at > QUIET_OK_MS) this.waiting.splice(j, 1);
    }
    const kinds = CAN_FAIL[code];
    const i = this.waiting.findIndex((w) => w.room === room && (kinds === undefined || kinds.includes(w.kind)));
    if (i < 0) return null;
    const [w] = this.waiting.splice(i, 1);
    return w ?? null;
  }

  /** Messages waiting to be stored (tests, diagnostics). */
  outboxSize(): number {
    return this.outbox.size;
  }
}
