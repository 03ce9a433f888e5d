// What the tabs of one profile say to each other about rooms, on their own
// bus (`<channelName>:rooms`). Every tab announces the rooms it holds; the
// leader's hub joins their union on its connection and fans every room frame
// out; followers hand their requests (say, typing, read) to the hub, which
// answers only failures (a stored message reaches every tab as a frame).
// Invariant: only what `acceptRoomBus` validated is acted upon; a room frame
// on the bus is checked like one from the edge.

import { isRoomId, parseRoomFrame, type RoomFrame } from './wire.js';

/** A request of a tab to the hub. */
export type RoomRequest =
  | { op: 'say'; room: string; text: string; clientMsgId: string }
  | { op: 'typing'; room: string }
  | { op: 'read'; room: string; seq: number };

export type RoomBusMessage =
  /** The rooms a tab holds (on change, every few seconds, and when a hub starts). */
  | { type: 'hold'; from: string; rooms: string[] }
  /** A tab went away. */
  | { type: 'bye'; from: string }
  /** A leader's hub started: every tab announces its rooms and repeats its unsettled requests. */
  | { type: 'hub'; from: string }
  /** The hub's connection is gone: rooms are not joined until the next `joined`. */
  | { type: 'down'; from: string }
  /** A request for the hub. `id` is unique per tab. */
  | { type: 'req'; from: string; id: string; req: RoomRequest }
  /** The hub's answer to a failed request of tab `to`. */
  | { type: 'fail'; from: string; to: string; id: string; room: string; code: string; message: string }
  /** A room frame from the edge; `asked` is the history size of the join a `joined` answers. */
  | { type: 'frame'; from: string; frame: RoomFrame; asked: number };

const isStr = (v: unknown): v is string => typeof v === 'string';

function asRequest(raw: unknown): RoomRequest | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const r = raw as Record<string, unknown>;
  if (!isRoomId(r.room)) return null;
  switch (r.op) {
    case 'say':
      return isStr(r.text) && isStr(r.clientMsgId) ? { op: 'say', room: r.room, text: r.text, clientMsgId: r.clientMsgId } : null;
    case 'typing':
      return { op: 'typing', room: r.room };
    case 'read':
      return typeof r.seq === 'number' && Number.isFinite(r.seq) ? { op: 'read', room: r.room, seq: r.seq } : null;
    default:
      return null;
  }
}

/** Validates a message of the rooms bus. */
export function acceptRoomBus(raw: unknown): RoomBusMessage | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const m = raw as Record<string, unknown>;
  const from = m.from;
  if (!isStr(from)) return null;
  switch (m.type) {
    case 'hold':
      return Array.isArray(m.rooms) && m.rooms.every(isRoomId) ? { type: 'hold', from, rooms: m.rooms } : null;
    case 'bye':
    case 'hub':
    case 'down':
      return { type: m.type, from };
    case 'req': {
      const req = asRequest(m.req);
      return req !== null && isStr(m.id) ? { type: 'req', from, id: m.id, req } : null;
    }
    case 'fail':
      return isStr(m.to) && isStr(m.id) && isRoomId(m.room) && isStr(m.code) && isStr(m.message)
        ? { type: 'fail', from, to: m.to, id: m.id, room: m.room, code: m.code, message: m.message }
        : null;
    case 'frame': {
      const frame = parseRoomFrame(m.frame);
      return frame !== null ? { type: 'frame', from, frame, asked: typeof m.asked === 'number' ? m.asked : 0 } : null;
    }
    default:
      return null;
  }
}
