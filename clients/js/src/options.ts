// The client's configuration: what the app passed to createRealtimeClient,
// checked and completed with defaults once, before anything starts.
// Invariant: a ClientConfig is always usable: at least one edge URL, at least
// one known transport (unique, in the app's order) and only service names the
// edge accepts; a bad option throws a TypeError and nothing is opened.

import { DEFAULT_SAMPLE_RATE, type TelemetryConfig } from './telemetry.js';
import type { RealtimeOptions, TransportKind } from './types.js';

export const DEFAULT_TRANSPORTS: readonly TransportKind[] = ['websocket', 'sse', 'longpoll'];
const ALL_TRANSPORTS = new Set<TransportKind>(DEFAULT_TRANSPORTS);
/** Default scope of leader election and of the tab bus. */
export const DEFAULT_CHANNEL = 'herald';
/** Default outage length after which `onStale` fires. */
export const DEFAULT_STALE_AFTER_MS = 60_000;
/** Service names the edge accepts (contract §1). */
const SERVICE_RE = /^[A-Za-z0-9_-]{1,64}$/;

export interface ClientConfig {
  urls: string[];
  /** Transports to use, in order of preference; the first is the preferred one. */
  transports: TransportKind[];
  channelName: string;
  staleAfterMs: number;
  /** Services subscribed to from the start. */
  services: string[];
  telemetry: TelemetryConfig;
}

/** Throws a TypeError unless `service` is a service name the edge accepts. */
export function checkService(service: string): void {
  if (typeof service !== 'string' || !SERVICE_RE.test(service)) {
    throw new TypeError(`herald: invalid service name ${JSON.stringify(service)} (1–64 of [A-Za-z0-9_-])`);
  }
}

/** Checks the options and fills in defaults. */
export function resolveOptions(o: RealtimeOptions): ClientConfig {
  if (!Array.isArray(o.urls) || o.urls.length === 0 || !o.urls.every((u) => typeof u === 'string' && u.length > 0)) {
    throw new TypeError('herald: `urls` must be a non-empty array of edge base URLs');
  }
  if (typeof o.getToken !== 'function') throw new TypeError('herald: `getToken` must be a function');
  const transports = [...new Set(o.transports ?? DEFAULT_TRANSPORTS)].filter((t) => ALL_TRANSPORTS.has(t));
  if (transports.length === 0) throw new TypeError("herald: `transports` must name 'websocket', 'sse' or 'longpoll'");
  const services = [...(o.services ?? [])];
  for (const s of services) checkService(s);
  return {
    urls: [...o.urls],
    transports,
    channelName: o.channelName ?? DEFAULT_CHANNEL,
    staleAfterMs: o.staleAfterMs ?? DEFAULT_STALE_AFTER_MS,
    services,
    telemetry: resolveTelemetry(o.telemetry),
  };
}

/** The `telemetry` option: off when `enabled: false`, else the rate (0–1) and endpoint checked. */
function resolveTelemetry(t: RealtimeOptions['telemetry']): TelemetryConfig {
  if (t === undefined) return { sampleRate: DEFAULT_SAMPLE_RATE, endpoint: null };
  if (typeof t !== 'object' || t === null) throw new TypeError('herald: `telemetry` must be an object');
  const rate = t.sampleRate ?? DEFAULT_SAMPLE_RATE;
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate < 0 || rate > 1) {
    throw new TypeError('herald: `telemetry.sampleRate` must be a number from 0 to 1');
  }
  if (t.endpoint !== undefined && (typeof t.endpoint !== 'string' || t.endpoint.length === 0)) {
    throw new TypeError('herald: `telemetry.endpoint` must be a non-empty URL');
  }
  return { sampleRate: t.enabled === false ? 0 : rate, endpoint: t.endpoint ?? null };
}
