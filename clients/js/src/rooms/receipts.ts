// Read receipts of a room (contract §6): the last seq each user read.
// Invariant: a user's receipt only moves forward; an older or equal value
// (a stale snapshot, a repeated frame) changes nothing. `get()` returns the
// same object until a receipt moves.

export class Receipts {
  private readonly seqs = new Map<string, number>();
  private cached: Readonly<Record<string, number>> = {};

  /** A receipt frame. Returns whether it moved `userId` forward. */
  set(userId: string, seq: number): boolean {
    const was = this.seqs.get(userId);
    if (was !== undefined && seq <= was) return false;
    this.seqs.set(userId, seq);
    this.cached = Object.freeze(Object.fromEntries(this.seqs));
    return true;
  }

  /** A `joined` snapshot: each entry moves forward or is ignored. Returns whether any moved. */
  merge(receipts: Readonly<Record<string, number>>): boolean {
    let changed = false;
    for (const [u, s] of Object.entries(receipts)) changed = this.set(u, s) || changed;
    return changed;
  }

  of(userId: string): number | null {
    return this.seqs.get(userId) ?? null;
  }

  get(): Readonly<Record<string, number>> {
    return this.cached;
  }
}
