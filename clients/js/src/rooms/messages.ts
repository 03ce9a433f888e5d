// A room's message list: stored messages merged from every source (the
// `joined` history, live frames, HTTP pages, a rejoin after a reconnect) and
// this user's own messages not confirmed yet.
// Invariant: a stored message shows once, in `seq` order: a seq seen before
// is dropped, and so is a second stored copy of a (userId, clientMsgId) that
// is already there (a retry the edge's 2-minute dedup window no longer
// caught). A pending message disappears when its stored copy arrives (same
// clientMsgId). At most `capacity` stored messages are kept (the oldest go).
// `list()` returns the same array until something changes.

import type { ChatMessage, RoomError, RoomMessage } from '../types.js';

/** Stored messages kept per room. */
export const MESSAGES_CAPACITY = 2_000;

export class MessageLog {
  /** Stored messages, ascending seq. */
  private stored: RoomMessage[] = [];
  private readonly seqs = new Set<number>();
  /** `${userId}\n${clientMsgId}` of stored messages. */
  private readonly ids = new Set<string>();
  /** This user's unconfirmed messages, in the order they were said. */
  private pending: ChatMessage[] = [];
  private cached: readonly ChatMessage[] | null = null;
  /**
   * Every stored message with seq >= this is here (no gap up to the newest);
   * 0 when the whole room is here; Infinity when nothing is known.
   */
  private completeFrom = Infinity;
  /** The contiguous run known before a rejoin left a gap above it. */
  private older: { from: number; to: number } | null = null;

  constructor(private readonly capacity: number = MESSAGES_CAPACITY) {}

  /** Merges stored messages (any order). Returns whether the list changed. */
  add(messages: readonly RoomMessage[]): boolean {
    let changed = false;
    let unsorted = false;
    for (const m of messages) {
      if (m.clientMsgId !== undefined) {
        // A pending message shows under this user's id, '' while the token is unknown.
        const i = this.pending.findIndex((p) => p.clientMsgId === m.clientMsgId && (p.userId === m.userId || p.userId === ''));
        if (i >= 0) {
          this.pending.splice(i, 1);
          changed = true;
        }
      }
      if (this.seqs.has(m.seq)) continue;
      const id = m.clientMsgId === undefined ? null : `${m.userId}\n${m.clientMsgId}`;
      if (id !== null && this.ids.has(id)) continue;
      const last = this.stored[this.stored.length - 1];
      if (last !== undefined && m.seq < last.seq) unsorted = true;
      this.stored.push(m);
      this.seqs.add(m.seq);
      if (id !== null) this.ids.add(id);
      changed = true;
    }
    if (unsorted) this.stored.sort((a, b) => a.seq - b.seq);
    while (this.stored.length > this.capacity) {
      const old = this.stored.shift();
      if (old === undefined) break;
      this.seqs.delete(old.seq);
      if (old.clientMsgId !== undefined) this.ids.delete(`${old.userId}\n${old.clientMsgId}`);
      const next = this.stored[0];
      if (next !== undefined && this.completeFrom < next.seq) this.completeFrom = next.seq;
      if (this.older !== null && next !== undefined && this.older.to < next.seq) this.older = null;
    }
    if (changed) this.cached = null;
    return changed;
  }

  /**
   * Merges the history of a `joined` (the newest messages, oldest first, with
   * no gap before the live ones that follow). `asked` is how many were asked
   * for: fewer means the room holds no more. Returns whether the list changed.
   * When what was known before ends below the history's first message, the
   * messages between may be missing: `gapBefore()` says where to fetch.
   */
  joined(history: readonly RoomMessage[], asked: number): boolean {
    const first = history[0];
    const newestBefore = this.newestSeq();
    const completeBefore = this.completeFrom;
    const changed = this.add(history);
    if (history.length < asked) {
      this.completeFrom = 0;
      this.older = null;
    } else if (first !== undefined) {
      if (newestBefore !== null && first.seq <= newestBefore) {
        this.completeFrom = Math.min(completeBefore, first.seq);
      } else {
        if (newestBefore !== null) this.older = { from: completeBefore, to: newestBefore };
        this.completeFrom = first.seq;
      }
    }
    return changed;
  }

  /**
   * Merges an HTTP page of messages older than `before` (absent: the newest),
   * oldest first, of at most `limit`. Returns whether the list changed.
   */
  page(messages: readonly RoomMessage[], before: number | undefined, limit: number): boolean {
    const changed = this.add(messages);
    // The page holds every message in [its lowest, before); it extends the
    // contiguous tail when it reaches it (the newest page always does).
    const joins = before === undefined || (this.completeFrom !== Infinity && before >= this.completeFrom);
    if (!joins) return changed;
    const lowest = messages[0];
    if (messages.length < limit) {
      this.completeFrom = 0;
      this.older = null;
      return changed;
    }
    if (lowest !== undefined) this.completeFrom = Math.min(this.completeFrom, lowest.seq);
    // Reached the messages known before a gap: the gap is closed.
    if (this.older !== null && this.completeFrom <= this.older.to) {
      this.completeFrom = Math.min(this.completeFrom, this.older.from);
      this.older = null;
    }
    return changed;
  }

  /**
   * Up to `limit` stored messages older than `before`, oldest first, when
   * memory holds them all (no gap), else null (ask the edge).
   */
  fromMemory(before: number | undefined, limit: number): RoomMessage[] | null {
    if (this.completeFrom === Infinity || this.older !== null) return null;
    const below = before === undefined ? this.stored : this.stored.filter((m) => m.seq < before);
    const known = below.filter((m) => m.seq >= this.completeFrom);
    if (known.length >= limit) return known.slice(known.length - limit);
    return this.completeFrom === 0 ? known : null;
  }

  /**
   * Where messages may be missing after a rejoin (what was known before ends
   * below the rejoin's history): fetch a page before the returned seq. Null
   * when there is no such gap.
   */
  gapBefore(): number | null {
    return this.older === null ? null : this.completeFrom;
  }

  /** Adds one of this user's messages before the edge confirmed it. */
  addPending(m: ChatMessage): void {
    this.pending.push(m);
    this.cached = null;
  }

  /** Marks a pending message failed. Returns whether it was pending. */
  fail(clientMsgId: string, error: RoomError): boolean {
    const i = this.pending.findIndex((p) => p.clientMsgId === clientMsgId && p.status === 'pending');
    const p = this.pending[i];
    if (p === undefined) return false;
    this.pending[i] = { ...p, status: 'failed', error };
    this.cached = null;
    return true;
  }

  /** Drops a pending or failed message (the app gave up on it). */
  discard(clientMsgId: string): boolean {
    const before = this.pending.length;
    this.pending = this.pending.filter((p) => p.clientMsgId !== clientMsgId);
    if (this.pending.length === before) return false;
    this.cached = null;
    return true;
  }

  /** The stored message with this clientMsgId (of `userId` when known), if any. */
  storedById(clientMsgId: string, userId: string | null): RoomMessage | null {
    if (userId !== null && !this.ids.has(`${userId}\n${clientMsgId}`)) return null;
    for (let i = this.stored.length - 1; i >= 0; i--) {
      const m = this.stored[i];
      if (m !== undefined && m.clientMsgId === clientMsgId && (userId === null || m.userId === userId)) return m;
    }
    return null;
  }

  newestSeq(): number | null {
    return this.stored[this.stored.length - 1]?.seq ?? null;
  }

  /** Stored messages in seq order, then pending and failed ones. */
  list(): readonly ChatMessage[] {
    if (this.cached === null) {
      this.cached = Object.freeze([
        ...this.stored.map((m): ChatMessage => ({ ...m, status: 'sent' })),
        ...this.pending,
      ]);
    }
    return this.cached;
  }
}
