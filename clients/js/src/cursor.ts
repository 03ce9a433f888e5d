// The resume point shared by every tab: `lastSeq` and the `epoch` it belongs
// to. The leader advances it, announces it on the bus and persists it in
// localStorage, so a new leader (or a reloaded tab) resumes where the last one
// stopped. Sequences of different epochs are not comparable: within one epoch
// the highest `lastSeq` wins, across epochs the most recently written one.

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
