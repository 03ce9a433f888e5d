// Typing indicators (contract §6): who is typing, and how often we say so.
// Invariant: a user is typing from a typing frame until TYPING_EXPIRY_MS
// after their latest one; a Throttle lets at most one action through per
// interval. Both take the time as an argument, so they are pure.

/** Members show a user as typing until this long after the last frame. */
export const TYPING_EXPIRY_MS = 5_000;
/** A client sends at most one typing frame this often (the server drops more). */
export const TYPING_INTERVAL_MS = 2_000;

/** Users typing in one room. */
export class TypingTracker {
  private readonly last = new Map<string, number>();
  private cached: string[] = [];

  constructor(private readonly expiryMs: number = TYPING_EXPIRY_MS) {}

  /** A typing frame of `userId` at `now`. Returns whether the list of typing users changed. */
  saw(userId: string, now: number): boolean {
    const was = this.last.has(userId);
    this.last.set(userId, now);
    return this.expire(now) || !was;
  }

  /** Drops users whose last frame is `expiryMs` old. Returns whether any went. */
  expire(now: number): boolean {
    let changed = false;
    for (const [u, at] of this.last) {
      if (now - at >= this.expiryMs) {
        this.last.delete(u);
        changed = true;
      }
    }
    return changed;
  }

  /** Forgets `userId` (they left the room). */
  remove(userId: string): boolean {
    return this.last.delete(userId);
  }

  clear(): boolean {
    const had = this.last.size > 0;
    this.last.clear();
    return had;
  }

  /** The users typing, sorted; the same array until it changes. Call `expire(now)` first. */
  users(): string[] {
    const next = [...this.last.keys()].sort();
    if (next.length !== this.cached.length || next.some((u, i) => u !== this.cached[i])) this.cached = next;
    return this.cached;
  }

  /** When the next entry expires, or null when nobody is typing. */
  nextExpiry(): number | null {
    let min: number | null = null;
    for (const at of this.last.values()) if (min === null || at < min) min = at;
    return min === null ? null : min + this.expiryMs;
  }
}

/** Lets one action through per `intervalMs`. */
export class Throttle {
  private lastAt = -Infinity;

  constructor(private readonly intervalMs: number = TYPING_INTERVAL_MS) {}

  /** True (and counts it) when at least `intervalMs` passed since the last action let through. */
  take(now: number): boolean {
    if (now - this.lastAt < this.intervalMs) return false;
    this.lastAt = now;
    return true;
  }
}
