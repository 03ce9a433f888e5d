import { describe, expect, it } from 'vitest';
import { advanceCursor, EMPTY_CURSOR, mergeCursor, parseCursor } from '../src/cursor.js';

describe('cursor', () => {
  it('within an epoch the highest lastSeq wins', () => {
    const a = { lastSeq: 10, epoch: 'E', at: 5 };
    const b = { lastSeq: 12, epoch: 'E', at: 1 };
    expect(mergeCursor(a, b).lastSeq).toBe(12);
    expect(mergeCursor(b, a).lastSeq).toBe(12);
  });

  it('across epochs the most recent one wins, even with a lower seq', () => {
    const old = { lastSeq: 900, epoch: 'E1', at: 1 };
    const fresh = { lastSeq: 3, epoch: 'E2', at: 2 };
    expect(mergeCursor(old, fresh)).toEqual(fresh);
    expect(mergeCursor(fresh, old)).toEqual(fresh);
  });

  it('an empty cursor never wins', () => {
    const a = { lastSeq: 10, epoch: 'E', at: 5 };
    expect(mergeCursor(a, EMPTY_CURSOR)).toBe(a);
    expect(mergeCursor(EMPTY_CURSOR, a)).toBe(a);
  });

  it('advances forward only, and follows a new epoch', () => {
    let c = advanceCursor(EMPTY_CURSOR, 5, 'E', 1);
    expect(c).toEqual({ lastSeq: 5, epoch: 'E', at: 1 });
    expect(advanceCursor(c, 4, 'E', 2)).toBe(c);
    c = advanceCursor(c, 9, null, 3);
    expect(c).toEqual({ lastSeq: 9, epoch: 'E', at: 3 });
    expect(advanceCursor(c, 2, 'F', 4)).toEqual({ lastSeq: 2, epoch: 'F', at: 4 });
  });

  it('parses what it persisted and rejects junk', () => {
    expect(parseCursor(JSON.stringify({ lastSeq: 7, epoch: 'E', at: 3 }))).toEqual({ lastSeq: 7, epoch: 'E', at: 3 });
    expect(parseCursor('{')).toEqual(EMPTY_CURSOR);
    expect(parseCursor(JSON.stringify({ lastSeq: -1 }))).toEqual(EMPTY_CURSOR);
    expect(parseCursor(null)).toEqual(EMPTY_CURSOR);
  });
});
