// The WebSocket transport (protocol §5): `/v2/realtime/stream` with the
// `herald.v1.json` subprotocol. A browser cannot set headers on a WebSocket,
// and a token in the URL would end up in proxy and access logs, so the token
// rides in `hello` (the upgrade carries none; its URL carries only the
// token's org, `?org=`, for the load balancer). Sends `hello` with the token,
// subscription and cursor, answers `ping` with `pong` and `refresh` with `auth`, changes the
// subscription in place with `update`, carries the room frames of contract §6
// both ways (rooms.ts), and maps close codes to what the connection loop
// should do next.

import { jwtOrg } from '../auth.js';
import { TimerGroup, type SocketLike } from '../env.js';
import { sameSubscription, type Subscription } from '../routing.js';
import { ROOM_FRAME_TYPES } from '../rooms/wire.js';
import type { ResetReason } from '../types.js';
import { asEvent, endpoint, type CloseReason, type Transport, type TransportContext } from './types.js';

export const WS_PATH = '/v2/realtime/stream';
export const WS_SUBPROTOCOL = 'herald.v1.json';
/** From construction to `ack`. The server allows 5 s for our hello; the rest is connect time. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** The server pings every 30 s; this long without any frame means the socket is dead. */
const SILENCE_TIMEOUT_MS = 75_000;

/** What a close code means for the next step (protocol §5, close codes). */
export function closeReasonForCode(code: number, reason: string, acked: boolean): CloseReason {
  const detail = `close ${code}${reason ? ` ${reason}` : ''}`;
  switch (code) {
    case 4001:
      return { kind: 'auth', detail };
    case 4003:
      return { kind: 'forbidden', detail };
    case 4503:
      return { kind: 'disabled', detail };
    case 4029:
      return { kind: 'throttled', detail, retryAfterMs: null };
    case 1012:
      return { kind: 'draining', detail };
    case 4000:
      // At the handshake our hello was refused (a malformed service name):
      // repeating it cannot help. Later it is "no pong for two pings" (a
      // frozen tab), which a reconnect fixes.
      return acked ? { kind: 'retry', detail } : { kind: 'forbidden', detail };
    default:
      // 1006 (network), 4008 (slow consumer), 1013 (stream unreachable), 1001, 1009, …
      return { kind: 'retry', detail };
  }
}

type Frame = { type?: unknown } & Record<string, unknown>;

export class WebSocketTransport implements Transport {
  readonly kind = 'websocket' as const;
  private socket: SocketLike | null = null;
  private readonly timers: TimerGroup;
  private silence: unknown = null;
  private acked = false;
  private done = false;
  /** The subscription the server has (sent in hello or the last update). */
  private sent: Subscription | null = null;

  constructor(private readonly ctx: TransportContext) {
    this.timers = new TimerGroup(ctx.env);
  }

  start(): void {
    const { env } = this.ctx;
    if (env.openSocket === null) {
      this.fail({ kind: 'retry', detail: 'WebSocket unavailable' });
      return;
    }
    // The org, unlike the token, may be in the URL: a load balancer hashes on
    // it. It is the org of the token `hello` carries.
    const url = endpoint(this.ctx.url, WS_PATH, { org: jwtOrg(this.ctx.token) }, { websocket: true, pageHref: env.baseHref() });
    let socket: SocketLike;
    try {
      socket = env.openSocket(url, WS_SUBPROTOCOL);
    } catch (err) {
      this.fail({ kind: 'retry', detail: `WebSocket refused: ${String(err)}` });
      return;
    }
    this.socket = socket;
    this.timers.set(() => {
      if (!this.acked) this.finish({ kind: 'retry', detail: 'no ack within the handshake timeout' });
    }, HANDSHAKE_TIMEOUT_MS);
    socket.onopen = () => this.hello();
    socket.onmessage = (ev) => this.receive(ev.data);
    socket.onerror = () => {}; // a close event follows with the code
    socket.onclose = (ev) => this.finish(closeReasonForCode(ev.code, ev.reason, this.acked));
  }

  private write(frame: Record<string, unknown>): boolean {
    if (this.done || this.socket === null) return false;
    try {
      this.socket.send(JSON.stringify(frame));
      return true;
    } catch {
      // The socket is closing; its close event reports the loss.
      return false;
    }
  }

  /** A room frame; only after `ack` (the server reads nothing but `hello` before). */
  send(frame: Record<string, unknown>): boolean {
    return this.acked && this.write(frame);
  }

  private hello(): void {
    const sub = this.ctx.subscription();
    const { lastSeq, epoch } = this.ctx.cursor();
    const frame: Record<string, unknown> = { type: 'hello', version: 1, services: sub.services, token: this.ctx.token };
    if (sub.propertyId !== null) frame.filters = { propertyId: sub.propertyId };
    if (lastSeq !== null) frame.lastSeq = lastSeq;
    if (epoch !== null) frame.epoch = epoch;
    this.sent = sub;
    this.write(frame);
  }

  /** Frames are JSON text; anything else is ignored. */
  private receive(data: unknown): void {
    if (this.done || typeof data !== 'string') return;
    this.alive();
    let frame: Frame;
    try {
      const parsed: unknown = JSON.parse(data);
      if (typeof parsed !== 'object' || parsed === null) return;
      frame = parsed as Frame;
    } catch {
      return;
    }
    this.handle(frame);
  }

  /** One server frame. Public for the protocol tests. */
  handle(frame: Frame): void {
    const h = this.ctx.handlers;
    const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
    const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
    switch (frame.type) {
      case 'ack': {
        if (this.acked) return;
        this.acked = true;
        h.onOpen({
          connectionId: str(frame.connectionId),
          epoch: str(frame.epoch),
          seq: num(frame.seq),
          expiresAt: num(frame.expiresAt),
        });
        // The subscription may have changed between hello and ack.
        this.update();
        return;
      }
      case 'events': {
        if (!Array.isArray(frame.events)) return;
        const events = frame.events.map(asEvent).filter((e) => e !== null);
        h.onEvents(events, num(frame.seq));
        return;
      }
      case 'reset': {
        const reason = frame.reason;
        if (reason === 'history_gone' || reason === 'epoch_changed') {
          h.onReset(reason as ResetReason, num(frame.seq), null);
        }
        return;
      }
      case 'dropped': {
        // A quarantine skipped these services' events in [fromSeq, toSeq]:
        // their state must be refetched. The cursor does not move (later
        // frames carry it), so nothing else is lost.
        const services = Array.isArray(frame.services) ? frame.services.filter((s): s is string => typeof s === 'string') : [];
        if (services.length > 0) h.onReset('dropped', null, null, services);
        return;
      }
      case 'ping': {
        this.write({ type: 'pong' });
        const seq = num(frame.seq);
        if (seq !== null) h.onCursor(seq, null);
        return;
      }
      case 'refresh': {
        // The server closes with 4001 at `exp` unless a new token arrives first.
        void this.ctx.getToken(true).then((token) => {
          if (token !== null) this.write({ type: 'auth', token });
        });
        return;
      }
      case 'updated': {
        const services = Array.isArray(frame.services) ? frame.services.filter((s): s is string => typeof s === 'string') : [];
        const filters = frame.filters as { propertyId?: unknown } | undefined;
        h.onUpdated({ services, propertyId: str(filters?.propertyId) });
        return;
      }
      default:
        if (typeof frame.type === 'string' && ROOM_FRAME_TYPES.has(frame.type)) h.onRoom?.(frame);
        return; // unknown frames are ignored (forward compatibility)
    }
  }

  /** Sends `update` when the wanted subscription differs from the server's. */
  update(): void {
    if (!this.acked || this.done) return;
    const sub = this.ctx.subscription();
    if (sameSubscription(sub, this.sent)) return;
    this.sent = sub;
    this.write({ type: 'update', services: sub.services, filters: { propertyId: sub.propertyId } });
  }

  /** Any frame proves the socket alive; silence for too long means it is not. */
  private alive(): void {
    this.timers.clear(this.silence);
    this.silence = this.timers.set(() => this.finish({ kind: 'retry', detail: 'no frame for 75 s' }), SILENCE_TIMEOUT_MS);
  }

  private fail(reason: CloseReason): void {
    // Report asynchronously: the caller of start() must not be re-entered.
    this.timers.set(() => this.finish(reason), 0);
  }

  private finish(reason: CloseReason): void {
    if (this.done) return;
    const opened = this.acked;
    this.teardown();
    this.ctx.handlers.onClose(reason, opened);
  }

  private teardown(): void {
    this.done = true;
    this.timers.clearAll();
    const socket = this.socket;
    this.socket = null;
    if (socket !== null) {
      socket.onopen = null;
      socket.onmessage = null;
      socket.onclose = null;
      socket.onerror = null;
      try {
        socket.close(1000);
      } catch {
        // Already closed.
      }
    }
  }

  close(): void {
    if (this.done) return;
    this.teardown();
  }
}

export const createWebSocketTransport = (ctx: TransportContext): Transport => new WebSocketTransport(ctx);
