// The resume point shared by every tab: `lastSeq` and the `epoch` it belongs
// to. The leader advances it, announces it on the bus and persists it in
// localStorage, so a new leader (or a reloaded tab) resumes where the last one
// stopped.
// Invariant: sequences of different epochs are not comparable: within one
// epoch the cursor never moves backwards (the highest `lastSeq` wins, only a
// server reset sets it back), across epochs the most recently written one
// wins. A persisted cursor is stamped with the time of writing and trusted
// only while that stamp is younger than `staleAfterMs`.

import { TimerGroup, type Env, type TimerHandle } from './env.js';

/** A resume point; `at` is when it was last advanced (client clock). */
export interface Cursor {
  lastSeq: number | null;
  epoch: string | null;
  at: number;
}

export const EMPTY_CURSOR: Cursor = { lastSeq: null, epoch: null, at: 0 };

/** The better of two cursors to resume from (see the file comment). */
export function mergeCursor(a: Cursor, b: Cursor): Cursor {
  if (b.lastSeq === null) return a;
  if (a.lastSeq === null) return b;
  if (a.epoch === null || b.epoch === null || a.epoch === b.epoch) {
    const hi = a.lastSeq >= b.lastSeq ? a : b;
    return { lastSeq: hi.lastSeq, epoch: a.epoch ?? b.epoch, at: Math.max(a.at, b.at) };
  }
  return a.at >= b.at ? a : b;
}

/**
 * The cursor after the server reported `seq` in `epoch` (an ack, a batch, a
 * ping, a poll answer). The server is authoritative about the epoch: another
 * epoch replaces the cursor; within one epoch it never moves backwards.
 */
export function advanceCursor(c: Cursor, seq: number, epoch: string | null, now: number): Cursor {
  if (epoch !== null && c.epoch !== null && epoch !== c.epoch) {
    return { lastSeq: seq, epoch, at: now };
  }
  if (c.lastSeq !== null && seq <= c.lastSeq) {
    return epoch !== null && c.epoch === null ? { ...c, epoch } : c;
  }
  return { lastSeq: seq, epoch: epoch ?? c.epoch, at: now };
}

/** Parses a persisted cursor; anything malformed is the empty cursor. */
export function parseCursor(raw: string | null): Cursor {
  if (raw === null) return EMPTY_CURSOR;
  try {
    const v: unknown = JSON.parse(raw);
    if (typeof v !== 'object' || v === null) return EMPTY_CURSOR;
    const o = v as Record<string, unknown>;
    const lastSeq = typeof o.lastSeq === 'number' && Number.isSafeInteger(o.lastSeq) && o.lastSeq >= 0 ? o.lastSeq : null;
    const epoch = typeof o.epoch === 'string' ? o.epoch : null;
    const at = typeof o.at === 'number' && Number.isFinite(o.at) ? o.at : 0;
    return lastSeq === null ? EMPTY_CURSOR : { lastSeq, epoch, at };
  } catch {
    return EMPTY_CURSOR;
  }
}

/** The leader persists the cursor at most this often (and on leaving)… */
export const PERSIST_EVERY_MS = 500;
/** …and at least this often, so its stamp shows it is current. */
export const PERSIST_REFRESH_MS = 5_000;

/**
 * This tab's cursor and its persisted copy (`key` in localStorage). Every
 * change of `lastSeq` or `epoch` is reported through `onChange`.
 */
export class CursorStore {
  private cursor: Cursor = EMPTY_CURSOR;
  private persistedAt = -Infinity;
  private persistTimer: TimerHandle | null = null;
  private closed = false;
  private readonly timers: TimerGroup;

  constructor(
    private readonly env: Pick<Env, 'now' | 'setTimeout' | 'clearTimeout' | 'storage'>,
    private readonly key: string,
    /** A persisted cursor older than this belongs to an earlier visit. */
    private readonly maxAgeMs: number,
    private readonly onChange: () => void,
  ) {
    this.timers = new TimerGroup(env);
  }

  current(): Cursor {
    return this.cursor;
  }

  /**
   * The persisted cursor, if a leader confirmed it recently. An older one
   * belongs to an earlier visit: the app has fetched fresh state since, and
   * replaying hours of events onto it would do harm, so start at the head.
   */
  stored(): Cursor {
    const c = parseCursor(this.env.storage?.getItem(this.key) ?? null);
    return this.env.now() - c.at <= this.maxAgeMs ? c : EMPTY_CURSOR;
  }

  /** Starts from the persisted cursor (a new tab). */
  load(): void {
    this.cursor = this.stored();
  }

  /** Takes the better of this cursor and the persisted one (a new leader resumes from the best any tab left). */
  adoptStored(): void {
    this.cursor = mergeCursor(this.cursor, this.stored());
  }

  /** The server reported `seq` in `epoch` (see {@link advanceCursor}). */
  advance(seq: number, epoch: string | null): void {
    const next = advanceCursor(this.cursor, seq, epoch, this.env.now());
    if (next !== this.cursor) {
      this.cursor = next;
      this.onChange();
    }
  }

  /** Another tab reported its cursor (see {@link mergeCursor}). */
  merge(lastSeq: number | null, epoch: string | null): void {
    if (lastSeq === null) return;
    const next = mergeCursor(this.cursor, { lastSeq, epoch, at: this.env.now() });
    if (next.lastSeq !== this.cursor.lastSeq || next.epoch !== this.cursor.epoch) {
      this.cursor = next;
      this.onChange();
    }
  }

  /** The server reset the stream: the cursor is replaced, even backwards. */
  reset(lastSeq: number | null, epoch: string | null): void {
    this.cursor = { lastSeq, epoch, at: this.env.now() };
    this.onChange();
  }

  /**
   * Writes the cursor, stamped with the time of writing (a leader confirms it
   * is current): at once when `now`, else at most every {@link PERSIST_EVERY_MS}.
   */
  persist(now: boolean): void {
    const storage = this.env.storage;
    if (storage === null || this.closed || this.cursor.lastSeq === null) return;
    const write = () => {
      this.persistTimer = null;
      this.persistedAt = this.env.now();
      storage.setItem(this.key, JSON.stringify({ ...this.cursor, at: this.persistedAt }));
    };
    if (now || this.env.now() - this.persistedAt >= PERSIST_EVERY_MS) {
      this.timers.clear(this.persistTimer);
      this.persistTimer = null;
      write();
    } else if (this.persistTimer === null) {
      this.persistTimer = this.timers.set(write, PERSIST_EVERY_MS - (this.env.now() - this.persistedAt));
    }
  }

  /** Keeps the persisted stamp fresh while the stream is quiet (the leader, once a second). */
  refresh(): void {
    if (this.env.now() - this.persistedAt >= PERSIST_REFRESH_MS) this.persist(true);
  }

  /** Cancels a pending write; a closed store writes nothing more (`forget()` still works). */
  close(): void {
    this.closed = true;
    this.timers.clearAll();
    this.persistTimer = null;
  }

  /** Forgets the persisted cursor: the next user of this browser must not resume this one's stream. */
  forget(): void {
    this.env.storage?.removeItem(this.key);
  }
}
