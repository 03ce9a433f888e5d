// The public types of the SDK: options, delivered events, state and the client
// handle. Everything here is re-exported by index.ts; nothing here does I/O.

/** A transport, in the order the client prefers them by default. */
export type TransportKind = 'websocket' | 'sse' | 'longpoll';

/**
 * Why the server asked the app to refetch its state. `dropped`: a slow
 * connection's quarantine skipped some events of a few services; only those
 * services' state must be refetched (they are passed to `onReset`).
 */
export type ResetReason = 'history_gone' | 'epoch_changed' | 'dropped';

/** Options of {@link createRealtimeClient}. */
export interface RealtimeOptions {
  /** Edge base URLs, e.g. `["http://127.0.0.1:8080","http://127.0.0.1:8081"]`, tried in turn. */
  urls: string[];
  /**
   * Returns a token for the edge. Called for the initial token and whenever a
   * fresh one is needed (server `refresh`, 401/4001, a JWT close to its `exp`).
   * Only the leader tab calls it; followers receive the result over the tab bus.
   */
  getToken: () => Promise<string>;
  /** Services to subscribe to from the start (union with `subscribe()` calls). */
  services?: string[];
  /** Only events of this property (plus org-wide events); `null` = every property. */
  propertyId?: string | null;
  /** Transports to use, in order of preference. Default `['websocket','sse','longpoll']`. */
  transports?: TransportKind[];
  /** Scope of leader election and of the tab bus (one per browser profile and app). Default `'herald'`. */
  channelName?: string;
  /** When true, `window.__realtimeState()` returns `client.state()`. */
  debug?: boolean;
  /**
   * The server could not deliver every event since the last one seen: refetch.
   * Called in every tab. `services` is set (reason `dropped`) when only those
   * services' events were skipped; absent means every service.
   */
  onReset?: (reason: ResetReason, services?: string[]) => void;
  /** No working connection for longer than `staleAfterMs`: refetch. Once per outage. */
  onStale?: () => void;
  /** Called (at most once per task) whenever `state()` changes. */
  onStateChange?: (s: RealtimeState) => void;
  /** Outage length after which `onStale` fires. Default 60 000 ms. */
  staleAfterMs?: number;
  /** Injectable clock (ms since the epoch), for tests. Default `Date.now`. */
  now?: () => number;
  /**
   * Client telemetry sent to the edge (`POST /v2/telemetry/client`): reconnects,
   * leader changes, fast-empty polls, delivery latency, refused subscriptions.
   * Sampled per session: by default 2 % of sessions report.
   */
  telemetry?: TelemetryOptions;
}

/** The `telemetry` option. */
export interface TelemetryOptions {
  /** `false` turns telemetry off. Default `true`. */
  enabled?: boolean;
  /** Share of sessions (tabs) that report, 0–1; 0 disables. Default 0.02. */
  sampleRate?: number;
  /** Absolute URL to report to. Default `<the connected edge>/v2/telemetry/client`. */
  endpoint?: string;
}

/** One delivered event (contract §2). */
export interface HeraldEvent {
  seq: number;
  orgId: string;
  service: string;
  propertyId: string | null;
  eventId: string;
  eventType: string;
  timestamp: number;
  entityType?: string;
  entityId?: string;
  payload: unknown;
}

/** Delivery figures of one service, as seen by this tab. */
export interface ServiceHealth {
  /** Events handed to this tab's handlers. */
  delivered: number;
  /** Events dropped because this tab had already seen them. */
  suppressedDuplicates: number;
  /** 95th percentile of `now - event.timestamp` over recent events, ms. */
  p95LatencyMs: number | null;
  /** When this tab last received an event of the service (client clock, ms). */
  lastEventAt: number | null;
  /** How often the connection carrying this service was re-established. */
  reconnects: number;
}

/** A snapshot of the client. */
export interface RealtimeState {
  status: 'connecting' | 'live' | 'degraded' | 'offline' | 'stopped';
  role: 'leader' | 'follower' | 'unknown';
  transport: TransportKind | null;
  url: string | null;
  lastSeq: number | null;
  epoch: string | null;
  connectionId: string | null;
  services: Record<string, ServiceHealth>;
}

/** The handle returned by {@link createRealtimeClient}. */
export interface RealtimeClient {
  /** Calls `handler` for every event of `service` this tab may see. Returns the unsubscribe function. */
  subscribe(service: string, handler: (e: HeraldEvent) => void): () => void;
  /** In-place `update` on WebSocket (never a reconnect); SSE and long-poll apply it on the next request. */
  setPropertyFilter(propertyId: string | null): void;
  /** Logs every tab out: aborts requests, closes sockets, releases leadership; state becomes `stopped`. */
  logout(): void;
  /** Stops this tab's client (other tabs keep running; another tab takes over leadership). */
  close(): void;
  /** The current state; the same object until something changes. */
  state(): RealtimeState;
  /**
   * Joins a chat room (contract §6) through the leader tab's WebSocket and
   * returns a handle; the tab holds the room until every handle of it left.
   * Throws on a room id that is not 1–64 characters of `[A-Za-z0-9_-]`.
   */
  room(id: string): Room;
  /**
   * Uploads a file to the edge over tus (contract §7), straight from this tab,
   * in checksummed chunks, resumable after failures and page reloads.
   * Throws a TypeError at once on an empty file or metadata the edge would
   * refuse.
   */
  upload(file: Blob, options?: UploadOptions): Upload;
}

// ---- rooms (contract §6) ----------------------------------------------------

/** A stored chat message of a room, as every member sees it. */
export interface RoomMessage {
  room: string;
  /** The message's stream sequence: increasing within a room, not contiguous. */
  seq: number;
  userId: string;
  text: string;
  /** When the edge stored it, ms since the epoch. */
  ts: number;
  /** The sender's id for it (every message sent through the SDK has one). */
  clientMsgId?: string;
}

/**
 * A message in a room's list: a stored one (`status: 'sent'`), or one of this
 * user's own `say()` calls not confirmed yet (`'pending'`, `seq` null) or
 * given up on (`'failed'`, with `error`).
 */
export interface ChatMessage {
  room: string;
  seq: number | null;
  userId: string;
  text: string;
  ts: number;
  clientMsgId?: string;
  status: 'sent' | 'pending' | 'failed';
  error?: RoomError;
}

/** A member's presence in a room. */
export type PresenceState = 'online' | 'away' | 'offline';

/**
 * Why a room request failed: the server's codes (`forbidden`, `not_joined`,
 * `rate_limited`, `too_large`, `bad_request`, `unavailable`), or the SDK's own
 * `timeout` (no edge confirmed a message in time) and `left` (the room was
 * left while the request waited).
 */
export interface RoomError {
  code: string;
  message: string;
}

/** The error a rejected room promise carries. */
export class RoomRequestError extends Error implements RoomError {
  constructor(
    readonly code: string,
    message: string,
    readonly room: string,
  ) {
    super(`herald room ${room}: ${code}: ${message}`);
    this.name = 'RoomRequestError';
  }
}

/** One room, as this tab sees it. Every getter returns the same object until that part changes. */
export interface Room {
  readonly id: string;
  /**
   * Sends a message. It shows at once as `pending` in `messages()`; it is
   * retried across reconnects and leader changes with the same `clientMsgId`,
   * so the edge stores it once. Resolves with the stored message; rejects with
   * a {@link RoomRequestError} on an error frame or after 100 s without a
   * confirmation (`timeout`).
   */
  say(text: string): Promise<RoomMessage>;
  /** The user is typing: call it on every keystroke, at most one frame per 2 s is sent. */
  typing(): void;
  /** Marks the room read up to `seq` (receipts only move forward; lower values are ignored). */
  read(seq: number): void;
  /** Lets go of this handle; the connection leaves the room when no handle of any tab holds it. */
  leave(): Promise<void>;
  /** Up to `limit` (default 50, at most 100) messages older than `before` (absent: the newest), oldest first. */
  history(before?: number, limit?: number): Promise<RoomMessage[]>;
  /** Stored messages in `seq` order, then this user's pending and failed ones. */
  messages(): readonly ChatMessage[];
  /** Presence by user id: online or away while in the room, offline after leaving. */
  members(): Readonly<Record<string, PresenceState>>;
  /** Users typing now (other than this user): until 5 s after their last typing frame. */
  typingUsers(): readonly string[];
  /** The last seq each user has read, by user id. */
  receipts(): Readonly<Record<string, number>>;
  /** True once the edge answered `joined` (and until the connection drops). */
  joined(): boolean;
  /** The last room-level error (a refused join, a refused typing or read), or null. */
  lastError(): RoomError | null;
  /** Calls `cb` after `messages()` changed. Returns the unsubscribe function. */
  onMessages(cb: () => void): () => void;
  /** Calls `cb` after `typingUsers()` changed (also when an entry expires). */
  onTyping(cb: () => void): () => void;
  /** Calls `cb` after `members()` or `joined()` changed. */
  onPresence(cb: () => void): () => void;
  /** Calls `cb` after `receipts()` changed. */
  onReceipts(cb: () => void): () => void;
  /** Calls `cb` with each room-level error. */
  onError(cb: (e: RoomError) => void): () => void;
}

// ---- uploads (contract §7) ----------------------------------------------------

/** Metadata the edge keeps with an upload (protocol §13); no other key is accepted. */
export interface UploadMetadata {
  /** 1–255 bytes, no control characters, `/` or `\`. Default: the File's `name`. */
  filename?: string;
  /** A MIME type the edge accepts (HERALD_UPLOAD_TYPES). Default: the Blob's `type`. */
  filetype?: string;
  documentType?: string;
  /** 1–64 characters of `[A-Za-z0-9_-]`: the `upload.completed` event goes to this property. */
  propertyId?: string;
  /** 1–128 characters. */
  guestId?: string;
}

/** Options of {@link RealtimeClient.upload}. */
export interface UploadOptions {
  metadata?: UploadMetadata;
  /** Bytes per PATCH, 1 B to 8 MiB (the edge's checksummed PATCH limit). Default 64 KiB. */
  chunkSize?: number;
  /** Edge base URL to upload to. Default: the client's first URL. */
  endpoint?: string;
  /** Continue an unfinished upload of the same file remembered in this browser. Default true. */
  resume?: boolean;
  /** Transient failures in a row (network, 5xx, 429) before the upload fails with `network`. Default 10. */
  maxRetries?: number;
}

/** `uploading` → `paused` ⇄ `uploading` → `done`, `error` or `aborted` (the last three are final). */
export type UploadState = 'uploading' | 'paused' | 'done' | 'error' | 'aborted';

/** Bytes the edge confirmed, of the file's total. */
export interface UploadProgress {
  bytesSent: number;
  bytesTotal: number;
}

/** A finished upload. */
export interface UploadResult {
  /** The upload's id (26 characters of `[a-z0-9]`). */
  id: string;
  size: number;
  /** `GET` it with the token in `Authorization` for the file: `…/v2/uploads/<id>/content`. */
  url: string;
  /** The tus upload URL (`…/v2/uploads/<id>`). */
  uploadUrl: string;
  filename: string;
  filetype: string;
}

/**
 * Why an upload failed. `code`: `too_large` (413), `unsupported_type` (415),
 * `forbidden` (403), `not_found` (404), `expired` (410), `bad_request` (400),
 * `unsupported_protocol` (412), `unauthorized` (401 after a fresh token),
 * `checksum` (460 three times over for one chunk), `network` (`maxRetries`
 * transient failures in a row), `protocol` (an answer tus does not allow),
 * `aborted` (`abort()`), `stopped` (the client was closed or logged out),
 * `http_<status>` (any other answer).
 */
export class UploadError extends Error {
  constructor(
    readonly code: string,
    message: string,
    /** The HTTP status behind it, if any. */
    readonly status: number | null = null,
  ) {
    super(`herald upload: ${code}: ${message}`);
    this.name = 'UploadError';
  }
}

/** One upload, started by {@link RealtimeClient.upload}. */
export interface Upload {
  /** Resolves when the edge stored the last byte; rejects with an {@link UploadError}. */
  readonly done: Promise<UploadResult>;
  state(): UploadState;
  /** The same object until the offset moves. */
  progress(): UploadProgress;
  error(): UploadError | null;
  result(): UploadResult | null;
  /** Stops sending (the request in flight is cancelled); the edge keeps what it has. */
  pause(): void;
  /** Asks the edge for its offset and goes on from there. */
  resume(): void;
  /** Stops, forgets the upload in this browser and deletes it on the edge (tus DELETE). */
  abort(): Promise<void>;
  /** Calls `cb` whenever `progress()` changed. Returns the unsubscribe function. */
  onProgress(cb: (p: UploadProgress) => void): () => void;
  /** Calls `cb` whenever `state()` changed. Returns the unsubscribe function. */
  onStateChange(cb: (s: UploadState) => void): () => void;
}
