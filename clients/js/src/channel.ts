// The tab bus: messages between the tabs of one browser profile and app.
// BroadcastChannel when the browser has it, else `storage` events on a
// localStorage key (every write fires the event in the *other* tabs; a nonce
// makes repeated identical messages distinct). Neither delivers a message back
// to its sender. Also defines the messages the client exchanges.

import type { Env, StorageEventLike } from './env.js';
import type { HeraldEvent, RealtimeState, ResetReason } from './types.js';

/** The leader's view of the connection, mirrored by followers. */
export interface LeaderStatus {
  status: RealtimeState['status'];
  transport: RealtimeState['transport'];
  url: string | null;
  connectionId: string | null;
  /** True while a transport is connected (the stale timer's notion of health). */
  connected: boolean;
  /** Reconnect counts per service. */
  reconnects: Record<string, number>;
}

/** Messages on the client's bus (`channelName`). */
export type BusMessage =
  /** A tab became leader; followers re-announce their needs. */
  | { type: 'leader'; from: string }
  /** The leader is alive (every second), with its connection status and cursor. */
  | { type: 'heartbeat'; from: string; status: LeaderStatus; lastSeq: number | null; epoch: string | null }
  /** A follower missed heartbeats (its own timers ran, the leader's may be throttled): answer now. */
  | { type: 'status?'; from: string }
  /** A tab's subscription. */
  | { type: 'need'; from: string; services: string[]; propertyId: string | null; visible: boolean }
  /** A tab went away. */
  | { type: 'bye'; from: string }
  /** New events (already deduplicated by the leader) and the cursor after them. */
  | { type: 'events'; from: string; events: HeraldEvent[]; lastSeq: number | null; epoch: string | null }
  /** The server reset the cursor: every tab must refetch. */
  | { type: 'reset'; from: string; reason: ResetReason; lastSeq: number | null; epoch: string | null; services?: string[] }
  /** A fresh token from the leader's `getToken()`. */
  | { type: 'token'; from: string; token: string };

/** A bus for one kind of message. */
export interface Bus<T> {
  /** 'broadcast', 'storage', or 'none' when neither works (single-tab mode). */
  readonly kind: 'broadcast' | 'storage' | 'none';
  post(msg: T): void;
  close(): void;
}

/**
 * Opens a bus named `name`. `accept` validates what arrives (other code of the
 * same origin may share the channel name) and returns null to ignore it.
 * `extraStorageKeys` are further localStorage keys whose changes are passed to
 * `accept` as `{type: key}` (for legacy logout keys).
 */
export function openBus<T>(
  env: Env,
  name: string,
  onMessage: (msg: T) => void,
  accept: (raw: unknown) => T | null,
  options: { storageKey?: string; alsoStorage?: boolean; extraStorageKeys?: string[] } = {},
): Bus<T> {
  const storageKey = options.storageKey ?? `${name}:bus`;
  const deliver = (raw: unknown) => {
    const msg = accept(raw);
    if (msg !== null) onMessage(msg);
  };

  let port = null as ReturnType<NonNullable<Env['openBroadcast']>> | null;
  if (env.openBroadcast !== null) {
    try {
      port = env.openBroadcast(name);
      port.onmessage = (ev) => deliver(ev.data);
    } catch {
      port = null;
    }
  }
  // The storage path: the only path without BroadcastChannel, a second one when asked.
  const useStorage = env.storage !== null && (port === null || options.alsoStorage === true);
  const extra = new Set(options.extraStorageKeys ?? []);
  const off = useStorage
    ? env.on('storage', (ev) => {
        const e = ev as StorageEventLike;
        if (e.newValue === null) return;
        if (e.key === storageKey) {
          try {
            const wrapped = JSON.parse(e.newValue) as { m?: unknown };
            deliver(wrapped.m);
          } catch {
            // Not ours.
          }
        } else if (e.key !== null && extra.has(e.key)) {
          deliver({ type: e.key });
        }
      })
    : () => {};

  let closed = false;
  return {
    kind: port !== null ? 'broadcast' : useStorage ? 'storage' : 'none',
    post(msg) {
      if (closed) return;
      if (port !== null) {
        try {
          port.postMessage(msg);
        } catch {
          // A message that cannot be cloned is a bug in the caller; never throw into it.
        }
      }
      if (useStorage && env.storage !== null) {
        env.storage.setItem(storageKey, JSON.stringify({ m: msg, n: `${env.now()}-${env.random()}` }));
      }
    },
    close() {
      if (closed) return;
      closed = true;
      off();
      if (port !== null) {
        port.onmessage = null;
        try {
          port.close();
        } catch {
          // Already closed.
        }
      }
    },
  };
}

const isStr = (v: unknown): v is string => typeof v === 'string';
const isSeq = (v: unknown): v is number | null => v === null || (typeof v === 'number' && Number.isFinite(v));
const isStrOrNull = (v: unknown): v is string | null => v === null || typeof v === 'string';

/** Validates a message of the client's bus. */
export function acceptBusMessage(raw: unknown): BusMessage | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const m = raw as Record<string, unknown>;
  if (!isStr(m.from)) return null;
  switch (m.type) {
    case 'leader':
    case 'bye':
    case 'status?':
      return m as unknown as BusMessage;
    case 'heartbeat':
      return typeof m.status === 'object' && m.status !== null && isSeq(m.lastSeq) && isStrOrNull(m.epoch)
        ? (m as unknown as BusMessage)
        : null;
    case 'need':
      return Array.isArray(m.services) && m.services.every(isStr) && isStrOrNull(m.propertyId)
        ? (m as unknown as BusMessage)
        : null;
    case 'events':
      return Array.isArray(m.events) && isSeq(m.lastSeq) && isStrOrNull(m.epoch) ? (m as unknown as BusMessage) : null;
    case 'reset':
      return (m.reason === 'history_gone' ||
        m.reason === 'epoch_changed' ||
        (m.reason === 'dropped' && Array.isArray(m.services) && m.services.every(isStr))) &&
        isSeq(m.lastSeq)
        ? (m as unknown as BusMessage)
        : null;
    case 'token':
      return isStr(m.token) ? (m as unknown as BusMessage) : null;
    default:
      return null;
  }
}
