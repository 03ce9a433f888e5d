// The state reported to the app: `client.state()`, `onStateChange` and the
// watchers of the React entry. A leader derives its status from its own
// connection; a follower mirrors the status the leader last heartbeated.
// Invariant: `state()` returns the same object until something changes; after
// a change it is rebuilt on demand, and listeners are called once per task,
// always with the current snapshot.

import type { ConnectionStatus } from './connection.js';
import { reportHandlerError } from './delivery.js';
import type { LeaderStatus } from './tabs.js';
import type { RealtimeState, ServiceHealth, TransportKind } from './types.js';

/** Whether a connection is usable (open, or idle with nothing to subscribe to). */
export function isConnected(c: Readonly<ConnectionStatus> | undefined): boolean {
  return c !== undefined && (c.phase === 'open' || c.phase === 'idle');
}

/** The status the app sees for the leader's connection; `preferred` is the first configured transport. */
export function statusFromConnection(
  c: Readonly<ConnectionStatus> | undefined,
  preferred: TransportKind | undefined,
): RealtimeState['status'] {
  if (c === undefined) return 'connecting';
  switch (c.phase) {
    case 'open':
      // Long-poll as a fallback works, but with more latency and load: degraded.
      return c.transport === 'longpoll' && preferred !== 'longpoll' ? 'degraded' : 'live';
    case 'offline':
    case 'refused':
      return 'offline';
    case 'stopped':
      return 'stopped';
    case 'idle':
      return 'connecting';
    case 'connecting':
    case 'waiting':
      return c.everOpened ? 'degraded' : 'connecting';
  }
}

/** What the leader heartbeats to followers, who mirror it. */
export function summarizeConnection(
  c: Readonly<ConnectionStatus> | undefined,
  preferred: TransportKind | undefined,
  reconnects: Record<string, number>,
): LeaderStatus {
  return {
    status: statusFromConnection(c, preferred),
    transport: c?.transport ?? null,
    url: c?.url ?? null,
    connectionId: c?.connectionId ?? null,
    connected: isConnected(c),
    reconnects,
  };
}

/** Everything a snapshot is made of. */
export interface StateInputs {
  stopped: boolean;
  role: RealtimeState['role'];
  online: boolean;
  lastSeq: number | null;
  epoch: string | null;
  services: Record<string, ServiceHealth>;
  preferred: TransportKind | undefined;
  /** The leader's own connection (null unless this tab leads). */
  connection: Readonly<ConnectionStatus> | null;
  /** The status of a leader heard from recently (null when none). */
  mirrored: LeaderStatus | null;
}

/** Builds a snapshot: stopped wins, then the own connection, then the mirrored one; offline overrides. */
export function buildState(i: StateInputs): RealtimeState {
  const base = { lastSeq: i.lastSeq, epoch: i.epoch, services: i.services };
  if (i.stopped) {
    return { status: 'stopped', role: 'unknown', transport: null, url: null, connectionId: null, ...base };
  }
  let status: RealtimeState['status'];
  let link: Pick<RealtimeState, 'transport' | 'url' | 'connectionId'> = { transport: null, url: null, connectionId: null };
  if (i.role === 'leader' && i.connection !== null) {
    const c = i.connection;
    status = statusFromConnection(c, i.preferred);
    link = { transport: c.transport, url: c.url, connectionId: c.connectionId };
  } else if (i.mirrored !== null) {
    status = i.mirrored.status;
    link = { transport: i.mirrored.transport, url: i.mirrored.url, connectionId: i.mirrored.connectionId };
  } else {
    status = 'connecting';
  }
  if (!i.online && status !== 'stopped') status = 'offline';
  return { status, role: i.role, ...link, ...base };
}

/** The cached snapshot and its listeners. */
export class StateView {
  private snapshot: RealtimeState | null = null;
  private stale = true;
  private notifyPending = false;
  private readonly listeners = new Set<(s: RealtimeState) => void>();

  constructor(
    private readonly build: () => RealtimeState,
    private readonly onStateChange?: (s: RealtimeState) => void,
  ) {}

  /** The current snapshot; the same object until {@link changed} is called. */
  get(): RealtimeState {
    if (this.snapshot === null || this.stale) {
      this.snapshot = this.build();
      this.stale = false;
    }
    return this.snapshot;
  }

  /** Something in the state changed: drop the snapshot, notify once per task. */
  changed(): void {
    this.stale = true;
    if (this.notifyPending) return;
    this.notifyPending = true;
    queueMicrotask(() => {
      this.notifyPending = false;
      const s = this.get();
      try {
        this.onStateChange?.(s);
      } catch (err) {
        reportHandlerError(err);
      }
      for (const cb of [...this.listeners]) {
        try {
          cb(s);
        } catch (err) {
          reportHandlerError(err);
        }
      }
    });
  }

  /** Calls `cb` on every notification until the returned function is called. */
  watch(cb: (s: RealtimeState) => void): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }
}
