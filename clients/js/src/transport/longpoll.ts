// The long-poll transport (protocol §4): a chain of `GET /v1/realtime/poll`
// requests through fetch, each passing the cursor of the previous answer,
// token in `Authorization: Bearer` (never an empty one), the token's org in
// `org=` (for the load balancer). RTT-aware: an empty
// answer that came back fast means the server could not hold the poll (a
// drain, a proxy cutting idle requests), so the next poll waits 2–5 s instead
// of spinning; when no tab of the profile is visible it polls slower still.

import { bearerHeader, jwtOrg } from '../auth.js';
import { jitter, type Random } from '../backoff.js';
import { TimerGroup, type ResponseLike } from '../env.js';
import { sameSubscription, type Subscription } from '../routing.js';
import { asEvent, endpoint, retryAfterMs, type CloseReason, type Transport, type TransportContext } from './types.js';

export const POLL_PATH = '/v1/realtime/poll';
/** Seconds the server holds a poll. */
export const POLL_TIMEOUT_S = 25;
/** Added to the hold before the client gives up on an answer. */
const CLIENT_GRACE_MS = 10_000;
/** An empty answer faster than this is "fast-empty". */
export const FAST_EMPTY_MS = 1_500;

export interface PollOutcome {
  /** How long the request took, ms. */
  elapsedMs: number;
  /** Events in the answer. */
  eventCount: number;
  /** Whether the server was asked to hold the poll (false for the first, `timeout=0`, poll). */
  held: boolean;
  /** No tab of the profile is visible. */
  hidden: boolean;
}

/**
 * The pause before the next poll, ms.
 * - visible: events or a held-then-empty answer → at once; fast-empty → 2–5 s;
 * - hidden: events or held-then-empty → 3–5 s; fast-empty → 5–10 s.
 */
export function nextPollDelay(o: PollOutcome, random: Random = Math.random): number {
  if (!o.held) return 0;
  const fastEmpty = o.eventCount === 0 && o.elapsedMs < FAST_EMPTY_MS;
  if (o.hidden) return fastEmpty ? jitter(5_000, 10_000, random) : jitter(3_000, 5_000, random);
  return fastEmpty ? jitter(2_000, 5_000, random) : 0;
}

/** What an HTTP error status means for the connection loop. */
export function closeReasonForStatus(status: number, retryAfter: number | null): CloseReason {
  const detail = `HTTP ${status}`;
  if (status === 401) return { kind: 'auth', detail };
  if (status === 403) return { kind: 'forbidden', detail };
  if (status === 400) return { kind: 'forbidden', detail: `${detail} (bad subscription)` };
  if (status === 429 || status === 503) return { kind: 'throttled', detail, retryAfterMs: retryAfter };
  return { kind: 'retry', detail };
}

interface PollBody {
  events?: unknown;
  lastSeq?: unknown;
  epoch?: unknown;
  reset?: unknown;
}

export class LongPollTransport implements Transport {
  readonly kind = 'longpoll' as const;
  private readonly timers: TimerGroup;
  private controller: AbortController | null = null;
  /** The subscription of the poll in flight. */
  private inflightSub: Subscription | null = null;
  private opened = false;
  private done = false;
  private polls = 0;

  constructor(private readonly ctx: TransportContext) {
    this.timers = new TimerGroup(ctx.env);
  }

  start(): void {
    void this.poll();
  }

  private async poll(): Promise<void> {
    if (this.done) return;
    const { env, handlers: h } = this.ctx;
    if (env.fetch === null) {
      this.finish({ kind: 'retry', detail: 'fetch unavailable' });
      return;
    }
    const token = this.polls === 0 ? this.ctx.token : await this.ctx.getToken(false);
    if (this.done) return;
    const headers = bearerHeader(token);
    if (headers === null || token === null) {
      // Never send an empty or malformed Authorization header: back off instead.
      this.finish({ kind: 'auth', detail: 'no usable token' });
      return;
    }
    // The first poll of a chain asks for an immediate answer so the transport
    // is known to work (and the cursor is known) without waiting 25 s.
    const held = this.polls > 0;
    this.polls += 1;
    const sub = this.ctx.subscription();
    const { lastSeq, epoch } = this.ctx.cursor();
    const timeout = held ? POLL_TIMEOUT_S : 0;
    const url = endpoint(
      this.ctx.url,
      POLL_PATH,
      // `org` from this poll's token: a refreshed token names its own.
      { org: jwtOrg(token), services: sub.services.join(','), propertyId: sub.propertyId, lastSeq, epoch, timeout },
      { pageHref: env.baseHref() },
    );
    const controller = new AbortController();
    this.controller = controller;
    this.inflightSub = sub;
    const deadline = this.timers.set(() => controller.abort(), timeout * 1000 + CLIENT_GRACE_MS);
    const started = env.now();
    let res: ResponseLike;
    let body: PollBody | null = null;
    try {
      res = await env.fetch(url, { method: 'GET', headers, signal: controller.signal, cache: 'no-store' });
      try {
        body = (await res.json()) as PollBody;
      } catch {
        body = null;
      }
    } catch (err) {
      this.timers.clear(deadline);
      if (this.done || this.controller !== controller) return; // closed, or superseded by update()
      const timedOut = controller.signal.aborted;
      this.finish({ kind: 'retry', detail: timedOut ? 'poll timed out' : `network error: ${String(err)}` });
      return;
    }
    this.timers.clear(deadline);
    // Closed meanwhile, or update() restarted the chain: the cursor did not
    // move, so the next poll asks for these events again.
    if (this.done || this.controller !== controller) return;
    this.controller = null;

    if (res.status !== 200 || body === null || typeof body !== 'object') {
      const status = res.status === 200 ? 502 : res.status;
      this.finish(closeReasonForStatus(status, retryAfterMs(res.headers.get('Retry-After'), env.now())));
      return;
    }
    const nextSeq = typeof body.lastSeq === 'number' ? body.lastSeq : null;
    const nextEpoch = typeof body.epoch === 'string' ? body.epoch : null;
    if (!this.opened) {
      this.opened = true;
      h.onOpen({ connectionId: null, epoch: nextEpoch, seq: nextSeq, expiresAt: null });
      if (this.done) return;
    }
    const reset = body.reset as { reason?: unknown } | null | undefined;
    if (reset && (reset.reason === 'history_gone' || reset.reason === 'epoch_changed')) {
      h.onReset(reset.reason, nextSeq, nextEpoch);
    }
    const events = Array.isArray(body.events) ? body.events.map(asEvent).filter((e) => e !== null) : [];
    if (events.length > 0) h.onEvents(events, null);
    if (nextSeq !== null) h.onCursor(nextSeq, nextEpoch);
    if (this.done) return;

    const elapsedMs = env.now() - started;
    // Counted where it is acted on: the server could not hold the poll.
    if (held && events.length === 0 && elapsedMs < FAST_EMPTY_MS) {
      this.ctx.report?.('fast_empty', elapsedMs, { transport: 'longpoll' });
    }
    const delay = nextPollDelay(
      { elapsedMs, eventCount: events.length, held, hidden: this.ctx.hidden() },
      () => env.random(),
    );
    if (delay === 0) void this.poll();
    else this.timers.set(() => void this.poll(), delay);
  }

  /** Re-polls at once with the new subscription, instead of after the held poll ends. */
  update(): void {
    if (this.done || this.controller === null) return; // between polls: the next one reads it
    if (sameSubscription(this.ctx.subscription(), this.inflightSub)) return;
    const c = this.controller;
    this.controller = null;
    c.abort();
    this.timers.clearAll();
    void this.poll();
  }

  private finish(reason: CloseReason): void {
    if (this.done) return;
    this.close();
    this.ctx.handlers.onClose(reason, this.opened);
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.timers.clearAll();
    const c = this.controller;
    this.controller = null;
    c?.abort();
  }
}

export const createLongPollTransport = (ctx: TransportContext): Transport => new LongPollTransport(ctx);
