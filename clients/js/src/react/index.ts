// React bindings (`@herald/client/react`): a provider for the client, hooks
// for events, status and rooms, and a TanStack Query cache patcher. A thin layer: all
// behaviour lives in the core; React is an optional peer dependency and
// TanStack Query is typed structurally, not imported.

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useLayoutEffect,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactElement,
  type ReactNode,
} from 'react';
import { watchState } from '../client.js';
import type {
  ChatMessage,
  HeraldEvent,
  PresenceState,
  RealtimeClient,
  RealtimeState,
  Room,
  Upload,
  UploadError,
  UploadOptions,
  UploadResult,
} from '../types.js';

const RealtimeContext = createContext<RealtimeClient | null>(null);

export interface RealtimeProviderProps {
  client: RealtimeClient;
  children?: ReactNode;
}

/** Makes `client` available to the hooks below. Create the client once, outside render. */
export function RealtimeProvider({ client, children }: RealtimeProviderProps): ReactElement {
  return createElement(RealtimeContext.Provider, { value: client }, children);
}

/** The client of the nearest {@link RealtimeProvider}. */
export function useRealtimeClient(): RealtimeClient {
  const client = useContext(RealtimeContext);
  if (client === null) throw new Error('herald: wrap the tree in <RealtimeProvider client={…}>');
  return client;
}

// useLayoutEffect warns during server rendering; nothing runs there anyway.
const useIsomorphicLayoutEffect = typeof document !== 'undefined' ? useLayoutEffect : useEffect;

/**
 * Calls `handler` for every event of `service` while the component is
 * mounted. The latest `handler` is always used, without resubscribing, so an
 * inline arrow function is fine.
 */
export function useRealtimeService(service: string, handler: (e: HeraldEvent) => void): void {
  const client = useRealtimeClient();
  const latest = useRef(handler);
  useIsomorphicLayoutEffect(() => {
    latest.current = handler;
  });
  useEffect(() => client.subscribe(service, (e) => latest.current(e)), [client, service]);
}

/** The client's state; re-renders when it changes. */
export function useRealtimeStatus(): RealtimeState {
  const client = useRealtimeClient();
  const subscribe = useCallback((onChange: () => void) => watchState(client, onChange), [client]);
  // state() returns the same object until something changes, as useSyncExternalStore requires.
  const get = useCallback(() => client.state(), [client]);
  return useSyncExternalStore(subscribe, get, get);
}

// ---- rooms ------------------------------------------------------------------

/**
 * Holds room `id` while the component is mounted (`null`: none) and returns
 * its handle, or null until the effect ran. Components using the same room
 * share its state; the tab leaves it once the last one unmounts.
 */
export function useRoom(id: string | null): Room | null {
  const client = useRealtimeClient();
  const [room, setRoom] = useState<Room | null>(null);
  useEffect(() => {
    if (id === null) {
      setRoom(null);
      return undefined;
    }
    const r = client.room(id);
    setRoom(r);
    return () => {
      void r.leave();
    };
  }, [client, id]);
  return room !== null && room.id === id ? room : null;
}

const NO_MESSAGES: readonly ChatMessage[] = Object.freeze([]);
const NO_MEMBERS: Readonly<Record<string, PresenceState>> = Object.freeze({});
const NO_USERS: readonly string[] = Object.freeze([]);
const noop = () => () => {};

/** One aspect of a room (or a fixed empty value without a room) as React state. */
function useRoomAspect<T>(room: Room | null | undefined, on: (r: Room) => (cb: () => void) => () => void, get: (r: Room) => T, empty: T): T {
  const subscribe = useCallback((cb: () => void) => (room == null ? noop() : on(room)(cb)), [room, on]);
  const snapshot = useCallback(() => (room == null ? empty : get(room)), [room, get, empty]);
  return useSyncExternalStore(subscribe, snapshot, snapshot);
}

const onMessages = (r: Room) => r.onMessages;
const getMessages = (r: Room) => r.messages();
const onPresence = (r: Room) => r.onPresence;
const getMembers = (r: Room) => r.members();
const onTyping = (r: Room) => r.onTyping;
const getTyping = (r: Room) => r.typingUsers();

/** The room's messages (stored ones in seq order, then this user's pending and failed ones). */
export function useRoomMessages(room: Room | null | undefined): readonly ChatMessage[] {
  return useRoomAspect(room, onMessages, getMessages, NO_MESSAGES);
}

/** The room's members by user id: online, away or offline. */
export function usePresence(room: Room | null | undefined): Readonly<Record<string, PresenceState>> {
  return useRoomAspect(room, onPresence, getMembers, NO_MEMBERS);
}

/** Other users typing in the room now (each until 5 s after their last typing frame). */
export function useTyping(room: Room | null | undefined): readonly string[] {
  return useRoomAspect(room, onTyping, getTyping, NO_USERS);
}

// ---- uploads ------------------------------------------------------------------

/** An upload's state as the hook shows it: `aborted` reads as `idle`. */
export type UploadHookState = 'idle' | 'uploading' | 'paused' | 'done' | 'error';

/** What {@link useUpload} renders from. The same object until something changes. */
export interface UploadSnapshot {
  state: UploadHookState;
  progress: { sent: number; total: number };
  error: UploadError | null;
  result: UploadResult | null;
}

/** The hook's store, outside React (exported for tests and non-React code). */
export interface UploadController {
  subscribe(cb: () => void): () => void;
  snapshot(): UploadSnapshot;
  /** Starts an upload, replacing (and pausing) the one before. Returns its handle. */
  start(file: Blob, options?: UploadOptions): Upload;
  pause(): void;
  resume(): void;
  abort(): Promise<void>;
  /** Stops listening to the current upload (it goes on). */
  dispose(): void;
}

const IDLE: UploadSnapshot = Object.freeze({
  state: 'idle',
  progress: Object.freeze({ sent: 0, total: 0 }),
  error: null,
  result: null,
}) as UploadSnapshot;

/** Backs {@link useUpload}: follows the latest upload started through it. */
export function createUploadController(getClient: () => RealtimeClient): UploadController {
  const listeners = new Set<() => void>();
  let current: Upload | null = null;
  let unlisten: (() => void) | null = null;
  let snap = IDLE;

  const read = (u: Upload): UploadSnapshot => {
    const s = u.state();
    const p = u.progress();
    return {
      state: s === 'aborted' ? 'idle' : s,
      progress: s === 'aborted' ? IDLE.progress : { sent: p.bytesSent, total: p.bytesTotal },
      error: s === 'aborted' ? null : u.error(),
      result: u.result(),
    };
  };
  const update = () => {
    if (current === null) return;
    const next = read(current);
    if (
      next.state === snap.state &&
      next.progress.sent === snap.progress.sent &&
      next.progress.total === snap.progress.total &&
      next.error === snap.error &&
      next.result === snap.result
    ) {
      return;
    }
    snap = next;
    for (const cb of [...listeners]) cb();
  };
  const detach = () => {
    unlisten?.();
    unlisten = null;
  };

  return {
    subscribe(cb) {
      listeners.add(cb);
      return () => listeners.delete(cb);
    },
    snapshot: () => snap,
    start(file, options) {
      const u = getClient().upload(file, options);
      detach();
      if (current !== null && current.state() === 'uploading') current.pause();
      current = u;
      const offP = u.onProgress(update);
      const offS = u.onStateChange(update);
      unlisten = () => {
        offP();
        offS();
      };
      // The rejection is shown through `error`; keep it from being unhandled.
      u.done.catch(() => {});
      update();
      return u;
    },
    pause: () => current?.pause(),
    resume: () => current?.resume(),
    abort: () => (current === null ? Promise.resolve() : current.abort()),
    dispose: detach,
  };
}

/**
 * One upload at a time as React state: `start(file, options)` begins it (a
 * new start replaces the one before), `progress` counts bytes the edge
 * confirmed, `state` is `idle` before a start and after `abort()`. `client`
 * defaults to the {@link RealtimeProvider}'s. A new `start` pauses an upload
 * still running; unmounting does not stop one.
 */
export function useUpload(client?: RealtimeClient): UploadSnapshot & {
  start(file: Blob, options?: UploadOptions): Upload;
  pause(): void;
  resume(): void;
  abort(): Promise<void>;
} {
  const fromContext = useContext(RealtimeContext);
  const latest = useRef<RealtimeClient | null | undefined>(client ?? fromContext);
  latest.current = client ?? fromContext;
  const ctlRef = useRef<UploadController | null>(null);
  if (ctlRef.current === null) {
    ctlRef.current = createUploadController(() => {
      const c = latest.current;
      if (c == null) throw new Error('herald: pass a client to useUpload or wrap the tree in <RealtimeProvider client={…}>');
      return c;
    });
  }
  const ctl = ctlRef.current;
  const snap = useSyncExternalStore(ctl.subscribe, ctl.snapshot, ctl.snapshot);
  return { ...snap, start: ctl.start, pause: ctl.pause, resume: ctl.resume, abort: ctl.abort };
}

// ---- TanStack Query cache patching ---------------------------------------

/** A query key, as TanStack Query has them. */
export type QueryKey = readonly unknown[];

/** The part of TanStack Query's QueryClient the patcher uses. */
export interface QueryClientLike {
  // `any` so that QueryClient's generic signatures are assignable.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  setQueryData(queryKey: QueryKey, updater: (old: any) => any): unknown;
  invalidateQueries(filters: { queryKey: QueryKey }): unknown;
}

/** A row-level patch: `update` gets the cached data (undefined when absent) and returns the new data. */
export interface CachePatch {
  queryKey: QueryKey;
  update(old: unknown): unknown;
}

export interface QueryCachePatcherOptions {
  /** Trailing debounce of aggregate invalidations, per key. Default 250 ms. */
  debounceMs?: number;
  /** Maps an event to the cache entries it patches in place, or null when it patches none. */
  patch?: (event: HeraldEvent) => CachePatch | CachePatch[] | null | undefined;
  /**
   * Aggregate keys to invalidate (debounced) for an event. Default: nothing
   * when `patch` patched something, else `[event.service]`.
   */
  invalidate?: (event: HeraldEvent) => QueryKey[] | null | undefined;
}

/** An event handler (pass it to `useRealtimeService` or `client.subscribe`). */
export interface QueryCachePatcher {
  (event: HeraldEvent): void;
  /** Runs pending invalidations now. */
  flush(): void;
  /** Drops pending invalidations. */
  dispose(): void;
}

/**
 * Turns events into TanStack Query cache updates: rows are patched at once
 * with `setQueryData`, aggregates (totals, counts, lists the event cannot
 * patch) are invalidated with `invalidateQueries`, debounced so a burst of
 * events costs one refetch. A steady stream still refetches at least every
 * `max(1 s, 4 × debounceMs)`.
 */
export function createQueryCachePatcher(
  queryClient: QueryClientLike,
  options: QueryCachePatcherOptions = {},
): QueryCachePatcher {
  const debounceMs = options.debounceMs ?? 250;
  const maxWaitMs = Math.max(1_000, 4 * debounceMs);
  const pending = new Map<string, { key: QueryKey; timer: ReturnType<typeof setTimeout>; first: number }>();

  const fire = (hash: string) => {
    const p = pending.get(hash);
    if (p === undefined) return;
    clearTimeout(p.timer);
    pending.delete(hash);
    void Promise.resolve(queryClient.invalidateQueries({ queryKey: p.key })).catch(() => {});
  };

  const schedule = (key: QueryKey) => {
    const hash = JSON.stringify(key);
    const now = Date.now();
    const p = pending.get(hash);
    const first = p?.first ?? now;
    if (p !== undefined) clearTimeout(p.timer);
    const wait = Math.max(0, Math.min(debounceMs, first + maxWaitMs - now));
    pending.set(hash, { key, first, timer: setTimeout(() => fire(hash), wait) });
  };

  const patcher = ((event: HeraldEvent) => {
    const result = options.patch?.(event);
    const patches = result == null ? [] : Array.isArray(result) ? result : [result];
    for (const p of patches) queryClient.setQueryData(p.queryKey, (old: unknown) => p.update(old));
    const keys = options.invalidate !== undefined ? options.invalidate(event) : patches.length === 0 ? [[event.service]] : [];
    for (const key of keys ?? []) schedule(key);
  }) as QueryCachePatcher;
  patcher.flush = () => {
    for (const hash of [...pending.keys()]) fire(hash);
  };
  patcher.dispose = () => {
    for (const p of pending.values()) clearTimeout(p.timer);
    pending.clear();
  };
  return patcher;
}
