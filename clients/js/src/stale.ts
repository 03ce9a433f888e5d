// Outage detection behind `onStale`: how long this tab has been without a
// working connection (its own as leader, the leader's as follower).
// Invariant: `onStale` fires at most once per outage, and only once no check
// has seen a working connection for longer than `afterMs`; any healthy moment
// ends the outage and re-arms it.

import { reportHandlerError } from './delivery.js';

export class StaleWatch {
  private lastHealthyAt: number;
  private fired = false;

  constructor(
    private readonly now: () => number,
    private readonly afterMs: number,
    private readonly onStale: (() => void) | undefined,
  ) {
    this.lastHealthyAt = now();
  }

  /** A working connection was seen just now. */
  healthy(): void {
    this.lastHealthyAt = this.now();
    this.fired = false;
  }

  /** The periodic check: `connected` is whether a connection works at this moment. */
  check(connected: boolean): void {
    if (connected) {
      this.healthy();
      return;
    }
    if (!this.fired && this.now() - this.lastHealthyAt > this.afterMs) {
      this.fired = true;
      try {
        this.onStale?.();
      } catch (err) {
        reportHandlerError(err);
      }
    }
  }
}
