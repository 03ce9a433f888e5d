// The Server-Sent Events transport (protocol §6): `/v2/realtime/sse` through
// EventSource, token in `?token=`, its org in `?org=` (for the load balancer;
// a reopen with a renewed token sends that token's org). EventSource would reconnect by itself with
// `Last-Event-ID`, but with the token of the first request, which may have
// expired; so on any error this transport closes it and lets the connection
// loop reopen with a fresh token and the current `lastSeq`. Subscription
// changes and token renewal reopen the stream in place (new request, same
// cursor), since SSE has no in-band update.

import { jwtOrg } from '../auth.js';
import { TimerGroup, type EventSourceLike } from '../env.js';
import { sameSubscription, type Subscription } from '../routing.js';
import { asEvent, endpoint, type CloseReason, type Transport, type TransportContext } from './types.js';

export const SSE_PATH = '/v2/realtime/sse';
/** From opening to the `ack` event. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Reopen with a fresh token this long before the token expires (the server ends the stream at expiry). */
const RENEW_BEFORE_MS = 60_000;
/** The longest delay setTimeout honours (about 24.8 days). */
const MAX_TIMER_MS = 2_147_483_647;

function parse(data: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(data);
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

export class SseTransport implements Transport {
  readonly kind = 'sse' as const;
  private source: EventSourceLike | null = null;
  private readonly timers: TimerGroup;
  /** The current EventSource got its ack. */
  private acked = false;
  /** Some EventSource of this transport got an ack (it counts as opened). */
  private everOpened = false;
  private done = false;
  private sub: Subscription | null = null;
  private generation = 0;

  constructor(private readonly ctx: TransportContext) {
    this.timers = new TimerGroup(ctx.env);
  }

  start(): void {
    this.open(this.ctx.token);
  }

  private open(token: string): void {
    const { env } = this.ctx;
    if (env.openEventSource === null) {
      this.timers.set(() => this.finish({ kind: 'retry', detail: 'EventSource unavailable' }), 0);
      return;
    }
    const gen = ++this.generation;
    const sub = this.ctx.subscription();
    const { lastSeq, epoch } = this.ctx.cursor();
    const url = endpoint(
      this.ctx.url,
      SSE_PATH,
      { org: jwtOrg(token), services: sub.services.join(','), propertyId: sub.propertyId, lastSeq, epoch, token },
      { pageHref: env.baseHref() },
    );
    let es: EventSourceLike;
    try {
      es = env.openEventSource(url);
    } catch (err) {
      this.timers.set(() => this.finish({ kind: 'retry', detail: `EventSource refused: ${String(err)}` }), 0);
      return;
    }
    this.source = es;
    this.sub = sub;
    this.acked = false;
    const live = () => !this.done && gen === this.generation;
    const h = this.ctx.handlers;
    this.timers.set(() => {
      if (live() && !this.acked) this.finish({ kind: 'retry', detail: 'no ack within the handshake timeout' });
    }, HANDSHAKE_TIMEOUT_MS);

    es.addEventListener('ack', (ev) => {
      if (!live() || this.acked) return;
      const ack = parse(ev.data);
      if (ack === null) return;
      this.acked = true;
      this.everOpened = true;
      const expiresAt = typeof ack.expiresAt === 'number' ? ack.expiresAt : null;
      h.onOpen({
        connectionId: typeof ack.connectionId === 'string' ? ack.connectionId : null,
        epoch: typeof ack.epoch === 'string' ? ack.epoch : null,
        seq: typeof ack.seq === 'number' ? ack.seq : null,
        expiresAt,
      });
      if (expiresAt !== null) {
        const wait = expiresAt - env.now() - RENEW_BEFORE_MS;
        // A token that expires sooner than that is renewed when the stream
        // ends. setTimeout fires at once beyond 2^31-1 ms: cap the wait.
        if (wait > 0) this.timers.set(() => live() && this.reopen(true), Math.min(wait, MAX_TIMER_MS));
      }
      // The subscription may have changed while connecting.
      if (!sameSubscription(this.ctx.subscription(), this.sub)) this.reopen(false);
    });
    for (const service of sub.services) {
      es.addEventListener(service, (ev) => {
        if (!live()) return;
        const e = asEvent(parse(ev.data));
        if (e !== null) h.onEvents([e], e.seq);
      });
    }
    es.addEventListener('reset', (ev) => {
      if (!live()) return;
      const r = parse(ev.data);
      if (r !== null && (r.reason === 'history_gone' || r.reason === 'epoch_changed')) {
        h.onReset(r.reason, typeof r.seq === 'number' ? r.seq : null, null);
      }
    });
    es.addEventListener('updated', (ev) => {
      if (!live()) return;
      const u = parse(ev.data);
      if (u === null) return;
      const services = Array.isArray(u.services) ? u.services.filter((s): s is string => typeof s === 'string') : [];
      const filters = u.filters as { propertyId?: unknown } | undefined;
      h.onUpdated({ services, propertyId: typeof filters?.propertyId === 'string' ? filters.propertyId : null });
    });
    es.onerror = () => {
      if (!live()) return;
      // Stop EventSource's own reconnect (stale token); the loop reopens.
      this.finish({ kind: 'retry', detail: this.acked ? 'stream ended' : 'could not open the stream' });
    };
  }

  /** Replaces the EventSource with a new request from the current cursor. */
  private reopen(freshToken: boolean): void {
    if (this.done) return;
    this.detach();
    void this.ctx.getToken(freshToken).then((token) => {
      if (this.done) return;
      if (token === null) this.finish({ kind: 'auth', detail: 'no usable token to reopen the stream' });
      else this.open(token);
    });
  }

  update(): void {
    if (this.done || this.source === null || !this.acked) return; // the ack handler checks again
    if (!sameSubscription(this.ctx.subscription(), this.sub)) this.reopen(false);
  }

  private detach(): void {
    this.generation += 1; // silences every listener of the old source
    const es = this.source;
    this.source = null;
    this.acked = false;
    this.timers.clearAll();
    if (es !== null) {
      es.onerror = null;
      try {
        es.close();
      } catch {
        // Already closed.
      }
    }
  }

  private finish(reason: CloseReason): void {
    if (this.done) return;
    this.detach();
    this.done = true;
    this.ctx.handlers.onClose(reason, this.everOpened);
  }

  close(): void {
    if (this.done) return;
    this.detach();
    this.done = true;
  }
}

export const createSseTransport = (ctx: TransportContext): Transport => new SseTransport(ctx);
