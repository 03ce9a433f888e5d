// The room frames of the WebSocket stream (contract §6): the server's frames,
// validated into typed values, and the limits the SDK checks before sending.
// Invariant: what `parseRoomFrame` returns is well-formed (a valid room id,
// numbers where numbers belong); anything else is null and ignored, whether
// it came from the edge or from another tab over the bus.

import type { PresenceState, RoomMessage } from '../types.js';

/** Room ids: 1–64 characters of `[A-Za-z0-9_-]`. */
const ROOM_ID = /^[A-Za-z0-9_-]{1,64}$/;
/** Longest text, in bytes of UTF-8. */
export const MAX_TEXT_BYTES = 4096;
/** Most history messages a join or page returns. */
export const MAX_HISTORY = 100;
/** History asked for with a first join. */
export const JOIN_HISTORY = 50;

export function isRoomId(id: unknown): id is string {
  return typeof id === 'string' && ROOM_ID.test(id);
}

/** Bytes of `text` in UTF-8. */
export function utf8Length(text: string): number {
  return new TextEncoder().encode(text).length;
}

/** A server frame about a room. */
export type RoomFrame =
  | {
      type: 'joined';
      room: string;
      members: Array<{ userId: string; state: PresenceState }>;
      history: RoomMessage[];
      receipts: Record<string, number>;
    }
  | { type: 'left'; room: string }
  | ({ type: 'message' } & RoomMessage)
  | { type: 'typing'; room: string; userId: string }
  | { type: 'receipt'; room: string; userId: string; seq: number }
  | { type: 'presence'; room: string; userId: string; state: PresenceState }
  /** `room` is null for a refused `status`. */
  | { type: 'error'; room: string | null; code: string; message: string };

/** The `type` values of room frames. */
export const ROOM_FRAME_TYPES: ReadonlySet<string> = new Set(['joined', 'left', 'message', 'typing', 'receipt', 'presence', 'error']);

const isStr = (v: unknown): v is string => typeof v === 'string';
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isState = (v: unknown): v is PresenceState => v === 'online' || v === 'away' || v === 'offline';

/** A history item or live message, or null. `room` fills in for an item without one. */
export function asRoomMessage(raw: unknown, room?: string): RoomMessage | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const m = raw as Record<string, unknown>;
  const r = m.room ?? room;
  if (!isRoomId(r) || !isNum(m.seq) || !isStr(m.userId) || !isStr(m.text)) return null;
  const out: RoomMessage = { room: r, seq: m.seq, userId: m.userId, text: m.text, ts: isNum(m.ts) ? m.ts : 0 };
  if (isStr(m.clientMsgId)) out.clientMsgId = m.clientMsgId;
  return out;
}

/** Parses a room frame, or null when it is not a well-formed one. */
export function parseRoomFrame(raw: unknown): RoomFrame | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const f = raw as Record<string, unknown>;
  const room = f.room;
  switch (f.type) {
    case 'joined': {
      if (!isRoomId(room)) return null;
      const members = Array.isArray(f.members)
        ? f.members.flatMap((m: unknown) => {
            const x = m as Record<string, unknown> | null;
            return x !== null && typeof x === 'object' && isStr(x.userId) && isState(x.state) ? [{ userId: x.userId, state: x.state }] : [];
          })
        : [];
      const history = Array.isArray(f.history) ? f.history.flatMap((m: unknown) => asRoomMessage(m, room) ?? []) : [];
      const receipts: Record<string, number> = {};
      if (typeof f.receipts === 'object' && f.receipts !== null) {
        for (const [u, s] of Object.entries(f.receipts as Record<string, unknown>)) if (isNum(s)) receipts[u] = s;
      }
      return { type: 'joined', room, members, history, receipts };
    }
    case 'left':
      return isRoomId(room) ? { type: 'left', room } : null;
    case 'message': {
      const m = asRoomMessage(f);
      return m === null ? null : { type: 'message', ...m };
    }
    case 'typing':
      return isRoomId(room) && isStr(f.userId) ? { type: 'typing', room, userId: f.userId } : null;
    case 'receipt':
      return isRoomId(room) && isStr(f.userId) && isNum(f.seq) ? { type: 'receipt', room, userId: f.userId, seq: f.seq } : null;
    case 'presence':
      return isRoomId(room) && isStr(f.userId) && isState(f.state) ? { type: 'presence', room, userId: f.userId, state: f.state } : null;
    case 'error':
      if (!isStr(f.code)) return null;
      return { type: 'error', room: isRoomId(room) ? room : null, code: f.code, message: isStr(f.message) ? f.message : f.code };
    default:
      return null;
  }
}
