// Who is in a room (contract §6): a member map from user id to online, away or
// offline. Invariant: a `joined` snapshot is the whole truth at that moment
// (users it does not list and we knew are offline); later presence frames
// change one user each. `get()` returns the same object until a state changes.

import type { PresenceState } from '../types.js';

export class Members {
  private readonly states = new Map<string, PresenceState>();
  private cached: Readonly<Record<string, PresenceState>> = {};

  /** Applies a `joined` member list. Returns whether anything changed. */
  snapshot(members: ReadonlyArray<{ userId: string; state: PresenceState }>): boolean {
    const present = new Map(members.map((m) => [m.userId, m.state] as const));
    let changed = false;
    for (const u of [...this.states.keys()]) {
      if (!present.has(u)) changed = this.set(u, 'offline') || changed;
    }
    for (const [u, s] of present) changed = this.set(u, s) || changed;
    return changed;
  }

  /** A presence frame. Returns whether the state changed. */
  set(userId: string, state: PresenceState): boolean {
    if (this.states.get(userId) === state) return false;
    this.states.set(userId, state);
    this.cached = Object.freeze(Object.fromEntries(this.states));
    return true;
  }

  /** Everyone offline (this tab left the room or lost the connection). */
  allOffline(): boolean {
    let changed = false;
    for (const u of this.states.keys()) changed = this.set(u, 'offline') || changed;
    return changed;
  }

  state(userId: string): PresenceState {
    return this.states.get(userId) ?? 'offline';
  }

  get(): Readonly<Record<string, PresenceState>> {
    return this.cached;
  }
}
