// What every transport shares: the context it runs in (where to connect, the
// token, the subscription and cursor it reads at each (re)request) and what
// it reports back. A transport instance is one connection attempt; it ends
// with exactly one `onClose` (unless the client closed it), and the
// connection loop (connection.ts) decides what comes next.

import type { Env } from '../env.js';
import type { Subscription } from '../routing.js';
import type { Report } from '../telemetry.js';
import type { HeraldEvent, ResetReason, TransportKind } from '../types.js';

/** Reported once the server accepted the connection (ack, or the first poll answer). */
export interface OpenInfo {
  connectionId: string | null;
  epoch: string | null;
  /** The cursor the server starts from. */
  seq: number | null;
  /** Token expiry (ms since the epoch) when the server told it. */
  expiresAt: number | null;
}

/**
 * Why a transport ended. `opened` tells whether it had been accepted before;
 * a transport that fails before that counts towards falling back.
 */
export type CloseReason =
  /** A transient loss (network, 1006, 4008 slow consumer, 1013, 5xx): reconnect with backoff and resume. */
  | { kind: 'retry'; detail: string }
  /** The token was refused (401, 4001): fetch a fresh one, then reconnect. */
  | { kind: 'auth'; detail: string }
  /** The subscription was refused (403/4003, 400/4000 at handshake): do not retry it. */
  | { kind: 'forbidden'; detail: string }
  /** Realtime streams are switched off (4503, SSE 503): fall back to long-poll. */
  | { kind: 'disabled'; detail: string }
  /** Too many connections or overloaded (4029, 429, 503): back off at least `retryAfterMs`. */
  | { kind: 'throttled'; detail: string; retryAfterMs: number | null }
  /** The node drains (1012): reconnect to another URL at once. */
  | { kind: 'draining'; detail: string };

export interface TransportHandlers {
  onOpen(info: OpenInfo): void;
  /** Events in `seq` order; `cursor` (when known) is the resume point after them. */
  onEvents(events: HeraldEvent[], cursor: number | null): void;
  /** The resume point moved without events (ping, quiet poll). */
  onCursor(seq: number, epoch: string | null): void;
  /** `services`: only these services' events were skipped (`dropped`); absent = all. */
  onReset(reason: ResetReason, seq: number | null, epoch: string | null, services?: string[]): void;
  /** The server confirmed an in-place update. */
  onUpdated(sub: { services: string[]; propertyId: string | null }): void;
  /** A room frame (contract §6; WebSocket only), unparsed. */
  onRoom?(frame: Record<string, unknown>): void;
  onClose(reason: CloseReason, opened: boolean): void;
}

export interface TransportContext {
  /** Edge base URL. */
  url: string;
  /** A usable token (checked before the transport was created). */
  token: string;
  env: Env;
  handlers: TransportHandlers;
  /** The current subscription (read at every (re)request). */
  subscription(): Subscription;
  /** The current resume point. */
  cursor(): { lastSeq: number | null; epoch: string | null };
  /** A token for renewal (WebSocket `refresh`, each poll); null when none could be had. */
  getToken(force: boolean): Promise<string | null>;
  /** True when no tab of the profile is visible (long-poll slows down). */
  hidden(): boolean;
  /** Client telemetry (absent: not reported). */
  report?: Report;
}

export interface Transport {
  readonly kind: TransportKind;
  start(): void;
  /** The subscription changed: WebSocket sends `update`, the others re-request. */
  update(): void;
  /** Stops without reporting: no handler is called afterwards. */
  close(): void;
  /**
   * Sends a room frame (WebSocket only, once accepted). False when it could
   * not be sent; the caller sends it again on the next connection.
   */
  send?(frame: Record<string, unknown>): boolean;
}

export type TransportFactory = (ctx: TransportContext) => Transport;

/**
 * `base` + `path` with query parameters; `http(s)` becomes `ws(s)` when asked.
 * `base` may carry a path prefix (`https://edge.example.com/herald`) or be
 * relative to the page.
 */
export function endpoint(
  base: string,
  path: string,
  params: Record<string, string | number | null | undefined>,
  options: { websocket?: boolean; pageHref?: string | undefined } = {},
): string {
  const u = new URL(base, options.pageHref);
  const prefix = u.pathname.endsWith('/') ? u.pathname.slice(0, -1) : u.pathname;
  u.pathname = prefix + path;
  u.search = '';
  u.hash = '';
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== '') u.searchParams.set(k, String(v));
  }
  if (options.websocket === true) {
    if (u.protocol === 'http:') u.protocol = 'ws:';
    else if (u.protocol === 'https:') u.protocol = 'wss:';
  }
  return u.toString();
}

/** `Retry-After` (seconds or an HTTP date) in ms, or null. */
export function retryAfterMs(value: string | null, now: number): number | null {
  if (value === null) return null;
  const secs = Number(value);
  if (Number.isFinite(secs) && secs >= 0) return secs * 1000;
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(0, at - now) : null;
}

/** Parses an event off the wire, or null when it is not one. */
export function asEvent(raw: unknown): HeraldEvent | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const e = raw as Record<string, unknown>;
  if (typeof e.seq !== 'number' || typeof e.service !== 'string' || typeof e.orgId !== 'string') return null;
  const out: HeraldEvent = {
    seq: e.seq,
    orgId: e.orgId,
    service: e.service,
    propertyId: typeof e.propertyId === 'string' ? e.propertyId : null,
    eventId: typeof e.eventId === 'string' ? e.eventId : String(e.seq),
    eventType: typeof e.eventType === 'string' ? e.eventType : '',
    timestamp: typeof e.timestamp === 'number' ? e.timestamp : 0,
    payload: e.payload === undefined ? null : e.payload,
  };
  if (typeof e.entityType === 'string') out.entityType = e.entityType;
  if (typeof e.entityId === 'string') out.entityId = e.entityId;
  return out;
}
