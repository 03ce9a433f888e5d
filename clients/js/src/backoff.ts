// Reconnect delays: exponential backoff with full jitter (1 s → 30 s), so that
// many browsers dropped by the same edge do not come back in lockstep.

/** Random source in [0, 1), injectable for tests. */
export type Random = () => number;

export interface BackoffOptions {
  /** First ceiling, ms. Default 1000. */
  baseMs?: number;
  /** Largest ceiling, ms. Default 30 000. */
  capMs?: number;
  random?: Random;
}

/**
 * Full-jitter backoff: attempt n waits a uniform random time in
 * [0, min(cap, base · 2ⁿ)). `reset()` after a connection succeeded.
 */
export class Backoff {
  private readonly baseMs: number;
  private readonly capMs: number;
  private readonly random: Random;
  private attempt = 0;

  constructor(options: BackoffOptions = {}) {
    this.baseMs = options.baseMs ?? 1000;
    this.capMs = options.capMs ?? 30_000;
    this.random = options.random ?? Math.random;
  }

  /** The ceiling of the next delay, ms. */
  ceiling(): number {
    // 2^attempt overflows nothing here: the cap is reached long before.
    return Math.min(this.capMs, this.baseMs * 2 ** Math.min(this.attempt, 30));
  }

  /** The next delay, ms, and one step further up the ladder. */
  next(): number {
    const delay = Math.floor(this.random() * this.ceiling());
    this.attempt += 1;
    return delay;
  }

  /** Attempts since the last reset. */
  attempts(): number {
    return this.attempt;
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** A uniform random integer in [min, max]. */
export function jitter(min: number, max: number, random: Random = Math.random): number {
  return Math.floor(min + random() * (max - min + 1));
}
