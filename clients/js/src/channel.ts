// The tab bus: messages between the tabs of one browser profile and app.
// BroadcastChannel when the browser has it, else `storage` events on a
// localStorage key (every write fires the event in the *other* tabs; a nonce
// makes repeated identical messages distinct). Neither delivers a message back
// to its sender. Generic over the message type: the client's protocol is in
// tabs.ts, the logout channel in auth.ts.
// Invariant: only what `accept` validated is handed on; a bus never delivers
// its own messages back, and nothing is sent or received after `close()`.

import type { Env, StorageEventLike } from './env.js';

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
