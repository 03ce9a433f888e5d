// Leader election between the tabs of one browser profile: only the leader
// touches the network. With Web Locks a tab requests an exclusive lock and
// holds it for its whole life; the browser frees it when the tab closes or
// crashes and grants it to the next waiting tab at once. Without Web Locks a
// localStorage lease stands in: 10 s long, renewed every 5 s, claimed by a
// follower once it expired (claim, then confirm after a short pause, so two
// tabs claiming together settle on one).

import { TimerGroup, type Env, type LocksLike, type StorageEventLike, type StorageLike } from './env.js';

export type Role = 'leader' | 'follower';

export interface Elector {
  readonly kind: 'locks' | 'lease' | 'solo';
  /** Starts competing for leadership; `onRole` reports every change. */
  start(): void;
  /** Stops competing and releases leadership if held. Synchronous: the lock is released on return. */
  stop(): void;
}

/** Web Locks election: leader once the lock is granted, until `stop()` or the tab dies. */
export class LockElector implements Elector {
  readonly kind = 'locks';
  private running = false;
  private abort: AbortController | null = null;
  private release: (() => void) | null = null;
  private leader = false;

  constructor(
    private readonly locks: LocksLike,
    private readonly name: string,
    private readonly onRole: (role: Role) => void,
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.request();
  }

  private request(): void {
    const abort = new AbortController();
    this.abort = abort;
    const held = new Promise<void>((resolve) => {
      this.release = resolve;
    });
    this.locks
      .request(this.name, { mode: 'exclusive', signal: abort.signal }, async () => {
        if (!this.running || abort.signal.aborted) return; // granted just as we stopped
        this.leader = true;
        this.onRole('leader');
        await held; // hold the lock until stop() (or the tab goes away)
      })
      .catch(() => {
        // AbortError from stop(), or the lock was stolen: handled below.
      })
      .finally(() => {
        if (this.abort !== abort) return; // a newer request owns the state
        const wasLeader = this.leader;
        this.leader = false;
        if (this.running) {
          // Lost the lock without stop() (another context stole it): compete again.
          if (wasLeader) this.onRole('follower');
          this.request();
        }
      });
  }

  stop(): void {
    if (!this.running) return;
    this.running = false;
    this.abort?.abort(); // cancels a pending request
    this.release?.(); // releases a granted lock
    this.abort = null;
    this.release = null;
    if (this.leader) {
      this.leader = false;
      this.onRole('follower');
    }
  }
}

/** A lease in localStorage. */
export interface Lease {
  owner: string;
  expiresAt: number;
}

export interface LeaseTiming {
  leaseMs: number;
  renewMs: number;
  checkMs: number;
  confirmMs: number;
}

export const DEFAULT_LEASE_TIMING: LeaseTiming = { leaseMs: 10_000, renewMs: 5_000, checkMs: 1_000, confirmMs: 150 };

export function parseLease(raw: string | null): Lease | null {
  if (raw === null) return null;
  try {
    const v = JSON.parse(raw) as Partial<Lease>;
    return typeof v.owner === 'string' && typeof v.expiresAt === 'number' ? { owner: v.owner, expiresAt: v.expiresAt } : null;
  } catch {
    return null;
  }
}

/** The localStorage lease election (no Web Locks). */
export class LeaseElector implements Elector {
  readonly kind = 'lease';
  private readonly timers: TimerGroup;
  private running = false;
  private leader = false;
  private claiming = false;
  private lastRenew = -Infinity;
  private offStorage: () => void = () => {};

  constructor(
    private readonly storage: StorageLike,
    private readonly key: string,
    private readonly tabId: string,
    private readonly env: Pick<Env, 'now' | 'setTimeout' | 'clearTimeout' | 'on'>,
    private readonly onRole: (role: Role) => void,
    private readonly timing: LeaseTiming = DEFAULT_LEASE_TIMING,
  ) {
    this.timers = new TimerGroup(env);
  }

  isLeader(): boolean {
    return this.leader;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    // A lease removed by a leaving leader: claim at once rather than at the next check.
    this.offStorage = this.env.on('storage', (ev) => {
      const e = ev as StorageEventLike;
      if (e.key === this.key && e.newValue === null) this.tick();
    });
    this.loop();
  }

  private loop(): void {
    if (!this.running) return;
    this.tick();
    this.timers.set(() => this.loop(), this.timing.checkMs);
  }

  private read(): Lease | null {
    return parseLease(this.storage.getItem(this.key));
  }

  private write(now: number): void {
    this.storage.setItem(this.key, JSON.stringify({ owner: this.tabId, expiresAt: now + this.timing.leaseMs }));
  }

  /** One step of the election; public for tests. */
  tick(): void {
    if (!this.running || this.claiming) return;
    const now = this.env.now();
    const lease = this.read();
    if (this.leader) {
      if (lease !== null && lease.owner !== this.tabId && lease.expiresAt > now) {
        // Someone claimed while we were frozen: step down.
        this.setLeader(false);
        return;
      }
      if (lease === null || lease.owner !== this.tabId || now - this.lastRenew >= this.timing.renewMs) {
        this.write(now);
        this.lastRenew = now;
      }
      return;
    }
    if (lease === null || lease.expiresAt <= now || lease.owner === this.tabId) {
      this.write(now);
      this.claiming = true;
      this.timers.set(() => this.confirm(now), this.timing.confirmMs);
    }
  }

  private confirm(claimedAt: number): void {
    this.claiming = false;
    if (!this.running) return;
    const lease = this.read();
    if (lease !== null && lease.owner === this.tabId) {
      this.lastRenew = claimedAt;
      this.setLeader(true);
    }
  }

  private setLeader(leader: boolean): void {
    if (this.leader === leader) return;
    this.leader = leader;
    this.onRole(leader ? 'leader' : 'follower');
  }

  stop(): void {
    if (!this.running) return;
    this.running = false;
    this.claiming = false;
    this.timers.clearAll();
    this.offStorage();
    const lease = this.read();
    // Remove our lease (or our pending claim) so a follower takes over now, not in 10 s.
    if (lease !== null && lease.owner === this.tabId) this.storage.removeItem(this.key);
    this.setLeader(false);
  }
}

/** No way to coordinate (no Web Locks, no storage): every tab leads itself. */
export class SoloElector implements Elector {
  readonly kind = 'solo';
  private leader = false;
  constructor(private readonly onRole: (role: Role) => void) {}
  start(): void {
    if (this.leader) return;
    this.leader = true;
    this.onRole('leader');
  }
  stop(): void {
    if (!this.leader) return;
    this.leader = false;
    this.onRole('follower');
  }
}

/** The best elector the browser allows. */
export function createElector(
  env: Env,
  channelName: string,
  tabId: string,
  onRole: (role: Role) => void,
): Elector {
  if (env.locks !== null) return new LockElector(env.locks, `${channelName}:leader`, onRole);
  if (env.storage !== null) return new LeaseElector(env.storage, `${channelName}:leader-lease`, tabId, env, onRole);
  return new SoloElector(onRole);
}
