// Uploads (contract §7, protocol §13): a small tus 1.0.0 client of our own.
// We do not wrap tus-js-client: it does not implement the tus checksum
// extension, which Herald's edge uses to refuse a damaged chunk (460) before
// appending it, and it would be the SDK's first runtime dependency, larger
// than everything below. What we need of tus is small: creation, HEAD,
// PATCH with `Upload-Checksum: sha256`, DELETE.
//   upload/tus.ts    the wire: headers, metadata, what each status means
//   upload/store.ts  fingerprints and the localStorage entry of an unfinished upload
// This file runs one upload: create (or take up a remembered one) → PATCH
// chunk after chunk → done. Uploads go straight from the calling tab over
// fetch, not through the leader tab: a file is in this tab's memory, and any
// edge answers for any upload.
// Invariants: the offset sent is always one the edge confirmed (a PATCH or
// HEAD answer); after anything uncertain (a network failure, a pause, a
// 409) the upload asks with HEAD before sending again. At most one request
// of an upload is in flight.

import { Backoff } from './backoff.js';
import { jwtOrg } from './auth.js';
import type { Env } from './env.js';
import { endpoint as edgeEndpoint, retryAfterMs } from './transport/types.js';
import { fingerprint, parseExpires, UploadStore, type FileLike } from './upload/store.js';
import {
  base64,
  baseHeaders,
  classify,
  encodeMetadata,
  errorMessage,
  OFFSET_OCTET_STREAM,
  parseOffset,
  type UploadFetch,
  type UploadResponse,
  type Verdict,
} from './upload/tus.js';
import {
  UploadError,
  type Upload,
  type UploadMetadata,
  type UploadOptions,
  type UploadProgress,
  type UploadResult,
  type UploadState,
} from './types.js';

/** The default PATCH size, the protocol's advice for checksummed PATCHes. */
export const DEFAULT_CHUNK_SIZE = 64 * 1024;
/** The edge reads a checksummed PATCH whole, and refuses one over this. */
export const MAX_CHUNK_SIZE = 8 * 1024 * 1024;
/** A chunk refused this many times for its checksum fails the upload. */
export const MAX_CHECKSUM_RETRIES = 3;
/** 409s in a row (another tab uploading the same file?) before backing off like a failure. */
const MAX_CONFLICTS = 3;
const DEFAULT_MAX_RETRIES = 10;

/** What an upload needs from its surroundings (injectable for tests). */
export interface UploadHost {
  fetch: UploadFetch;
  /** A usable token; `force` asks for a fresh one (after a 401). Null: none could be had. */
  token(force: boolean): Promise<string | null>;
  store: UploadStore;
  /** SHA-256 of a chunk; null where Web Crypto is missing (an insecure page): chunks go without a checksum. */
  digest: ((data: ArrayBuffer) => Promise<ArrayBuffer>) | null;
  /** Waits `ms`, or less when `signal` aborts. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
  now(): number;
  random(): number;
}

/** A passing failure: wait, then ask for the offset and go on. */
class Transient extends Error {
  constructor(
    detail: string,
    readonly retryAfter: string | null = null,
  ) {
    super(detail);
  }
}

/** Checked options of one upload. */
interface Plan {
  file: Blob;
  metadata: Required<Pick<UploadMetadata, 'filename' | 'filetype'>> & UploadMetadata;
  metadataHeader: string;
  chunkSize: number;
  /** `<endpoint>/v2/uploads`, absolute. */
  createUrl: string;
  endpoint: string;
  resume: boolean;
  maxRetries: number;
}

/**
 * Checks an upload's arguments (a TypeError, before any request) and fills in
 * the defaults. `pageHref` resolves a relative endpoint.
 */
export function planUpload(file: Blob, options: UploadOptions, defaultEndpoint: string, pageHref?: string): Plan {
  if (typeof Blob === 'undefined' || !(file instanceof Blob)) throw new TypeError('herald upload: `file` must be a Blob or File');
  if (file.size < 1) throw new TypeError('herald upload: the file is empty (the edge needs 1 byte or more)');
  const f = file as Blob & FileLike;
  const metadata = {
    ...options.metadata,
    filename: options.metadata?.filename ?? f.name ?? '',
    filetype: options.metadata?.filetype ?? (file.type || ''),
  };
  const metadataHeader = encodeMetadata(metadata);
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > MAX_CHUNK_SIZE) {
    throw new TypeError(`herald upload: \`chunkSize\` must be a whole number from 1 to ${MAX_CHUNK_SIZE}`);
  }
  const maxRetries = options.maxRetries ?? DEFAULT_MAX_RETRIES;
  if (!Number.isInteger(maxRetries) || maxRetries < 0) throw new TypeError('herald upload: `maxRetries` must be a whole number');
  const base = options.endpoint ?? defaultEndpoint;
  let createUrl: string;
  try {
    createUrl = edgeEndpoint(base, '/v2/uploads', {}, { pageHref });
  } catch {
    throw new TypeError(`herald upload: bad endpoint ${JSON.stringify(base)}`);
  }
  return {
    file,
    metadata,
    metadataHeader,
    chunkSize,
    createUrl,
    endpoint: new URL(base, pageHref).toString(),
    resume: options.resume ?? true,
    maxRetries,
  };
}

/** One upload: the handle the app holds and the loop that sends it. */
export class UploadTask implements Upload {
  readonly done: Promise<UploadResult>;
  private st: UploadState = 'uploading';
  private prog: UploadProgress;
  private err: UploadError | null = null;
  private res: UploadResult | null = null;
  private settle!: { resolve(r: UploadResult): void; reject(e: UploadError): void };
  private readonly progressCbs = new Set<(p: UploadProgress) => void>();
  private readonly stateCbs = new Set<(s: UploadState) => void>();

  /** The absolute upload URL, once created or taken up. */
  private uploadUrl: string | null = null;
  /** Whether it was taken up from the store and nothing was confirmed since (a 404 then starts afresh). */
  private remembered = false;
  /** The edge's offset, when `known`. */
  private offset = 0;
  private known = false;
  private fp: string | null = null;
  /** The running loop's controller; aborting it stops the loop and its request. */
  private run: AbortController | null = null;
  private readonly backoff: Backoff;
  private failures = 0;
  private conflicts = 0;
  private checksumFailures = 0;

  constructor(
    private readonly host: UploadHost,
    private readonly plan: Plan,
  ) {
    this.prog = { bytesSent: 0, bytesTotal: plan.file.size };
    this.backoff = new Backoff({ baseMs: 500, capMs: 30_000, random: host.random });
    this.done = new Promise<UploadResult>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    // The app may never look at `done`: its rejection must not be reported as unhandled.
    this.done.catch(() => {});
  }

  /** Starts sending (once, right after construction). */
  start(): void {
    void this.loop();
  }

  // ---- the handle ------------------------------------------------------------

  state(): UploadState {
    return this.st;
  }

  progress(): UploadProgress {
    return this.prog;
  }

  error(): UploadError | null {
    return this.err;
  }

  result(): UploadResult | null {
    return this.res;
  }

  pause(): void {
    if (this.st !== 'uploading') return;
    this.stopLoop();
    this.setState('paused');
  }

  resume(): void {
    if (this.st !== 'paused') return;
    this.setState('uploading');
    // Whatever the cancelled request did, the edge knows the offset.
    this.known = false;
    void this.loop();
  }

  async abort(): Promise<void> {
    if (this.st === 'done' || this.st === 'error' || this.st === 'aborted') return;
    this.stopLoop();
    const url = this.uploadUrl;
    if (this.fp !== null) this.host.store.remove(this.fp);
    this.finishWith('aborted', new UploadError('aborted', 'the upload was aborted'));
    if (url === null) return;
    // Best effort: an upload left behind expires on the edge anyway.
    try {
      await this.send(url, 'DELETE', {}, undefined, 204, new AbortController().signal);
    } catch {
      // Gone already, or unreachable: nothing more to do.
    }
  }

  onProgress(cb: (p: UploadProgress) => void): () => void {
    this.progressCbs.add(cb);
    return () => this.progressCbs.delete(cb);
  }

  onStateChange(cb: (s: UploadState) => void): () => void {
    this.stateCbs.add(cb);
    return () => this.stateCbs.delete(cb);
  }

  /** The client stopped: the upload fails with `stopped`; after a logout it is forgotten too. */
  stop(forget: boolean): void {
    if (this.st === 'done' || this.st === 'error' || this.st === 'aborted') return;
    this.stopLoop();
    if (forget && this.fp !== null) this.host.store.remove(this.fp);
    this.finishWith('error', new UploadError('stopped', 'the client was closed'));
  }

  // ---- the loop ----------------------------------------------------------------

  private stopLoop(): void {
    this.run?.abort();
    this.run = null;
  }

  private async loop(): Promise<void> {
    const ctl = new AbortController();
    this.run = ctl;
    const live = () => this.run === ctl && this.st === 'uploading';
    while (live()) {
      try {
        if (await this.step(ctl.signal)) return;
      } catch (e) {
        if (!live()) return; // paused or aborted meanwhile: the error is the cancelled request's
        if (e instanceof Transient) {
          this.failures += 1;
          if (this.failures > this.plan.maxRetries) {
            this.fail(new UploadError('network', `gave up after ${this.failures} failures in a row (${e.message})`));
            return;
          }
          const hinted = retryAfterMs(e.retryAfter, this.host.now()) ?? 0;
          this.known = false;
          await this.host.sleep(Math.max(hinted, this.backoff.next()), ctl.signal);
        } else {
          const err = e instanceof UploadError ? e : new UploadError('internal', String(e));
          this.fail(err);
          return;
        }
      }
    }
  }

  /** One request's worth of progress. True when the upload is finished. */
  private async step(signal: AbortSignal): Promise<boolean> {
    const { file } = this.plan;
    if (this.fp === null) {
      const token = await this.host.token(false);
      if (token === null) throw new Transient('no token');
      this.fp = fingerprint(file as Blob & FileLike, jwtOrg(token), this.plan.endpoint);
    }
    if (this.uploadUrl === null) {
      const stored = this.plan.resume ? this.host.store.get(this.fp) : null;
      if (stored !== null && stored.size === file.size) {
        this.uploadUrl = stored.url;
        this.remembered = true;
        this.known = false;
      } else {
        await this.create(signal);
      }
      return false;
    }
    if (!this.known) {
      await this.head(signal);
      return false;
    }
    if (this.offset >= file.size) {
      this.finish();
      return true;
    }
    await this.patch(signal);
    return false;
  }

  private async create(signal: AbortSignal): Promise<void> {
    const { file, createUrl, metadataHeader } = this.plan;
    const headers = { 'Upload-Length': String(file.size), 'Upload-Metadata': metadataHeader };
    const { res, verdict } = await this.send(createUrl, 'POST', headers, undefined, 201, signal);
    if (verdict.kind !== 'ok') throw await this.unexpected(res, verdict);
    const location = res.headers.get('Location');
    if (location === null || location === '') throw new UploadError('protocol', 'the creation answer has no Location', res.status);
    // Location is relative (`/v2/uploads/<id>`): resolve it against the request.
    this.uploadUrl = new URL(location, createUrl).toString();
    this.remembered = false;
    this.setOffset(0);
    this.known = true;
    this.host.store.set(this.fp as string, {
      url: this.uploadUrl,
      size: file.size,
      expiresAt: parseExpires(res.headers.get('Upload-Expires')),
    });
    this.progressed();
  }

  private async head(signal: AbortSignal): Promise<void> {
    const url = this.uploadUrl as string;
    const { res, verdict } = await this.send(url, 'HEAD', {}, undefined, 200, signal);
    if (verdict.kind === 'gone' && this.remembered) {
      // The remembered upload expired or was removed: start afresh.
      this.startAfresh();
      return;
    }
    if (verdict.kind !== 'ok') throw await this.unexpected(res, verdict);
    const length = parseOffset(res.headers.get('Upload-Length'));
    const offset = parseOffset(res.headers.get('Upload-Offset'));
    if (length !== this.plan.file.size && this.remembered) {
      this.startAfresh();
      return;
    }
    if (length !== this.plan.file.size || offset === null || offset > this.plan.file.size) {
      throw new UploadError('protocol', `HEAD answered offset ${String(offset)} of length ${String(length)} for a file of ${this.plan.file.size} bytes`, res.status);
    }
    this.setOffset(offset);
    // Not progress: a HEAD that answers between failures must not reset the backoff.
    this.known = true;
  }

  private async patch(signal: AbortSignal): Promise<void> {
    const { file, chunkSize } = this.plan;
    const url = this.uploadUrl as string;
    const start = this.offset;
    const end = Math.min(file.size, start + chunkSize);
    const body = await file.slice(start, end).arrayBuffer();
    const headers: Record<string, string> = { 'Upload-Offset': String(start), 'Content-Type': OFFSET_OCTET_STREAM };
    if (this.host.digest !== null) {
      headers['Upload-Checksum'] = `sha256 ${base64(new Uint8Array(await this.host.digest(body)))}`;
    }
    const { res, verdict } = await this.send(url, 'PATCH', headers, body, 204, signal);
    switch (verdict.kind) {
      case 'ok': {
        const next = parseOffset(res.headers.get('Upload-Offset'));
        if (next === null || next <= start || next > file.size) throw new Transient(`PATCH answered offset ${String(next)}`);
        this.setOffset(next);
        this.checksumFailures = 0;
        this.conflicts = 0;
        this.progressed();
        return;
      }
      case 'checksum':
        // Nothing was appended: the same chunk goes again, read afresh.
        this.checksumFailures += 1;
        if (this.checksumFailures > MAX_CHECKSUM_RETRIES) {
          throw new UploadError('checksum', `the edge refused the chunk at ${start} for its checksum ${this.checksumFailures} times`, res.status);
        }
        return;
      case 'conflict':
        // The edge has another offset (an earlier PATCH landed after all, or another tab sends this file).
        this.known = false;
        this.conflicts += 1;
        if (this.conflicts > MAX_CONFLICTS) throw new Transient('offset conflicts');
        return;
      default:
        throw await this.unexpected(res, verdict);
    }
  }

  /**
   * One request with the current token; a 401 fetches a fresh token and
   * repeats it once. A network failure or a passing status is Transient.
   */
  private async send(
    url: string,
    method: 'POST' | 'HEAD' | 'PATCH' | 'DELETE',
    headers: Record<string, string>,
    body: ArrayBuffer | undefined,
    expected: number,
    signal: AbortSignal,
  ): Promise<{ res: UploadResponse; verdict: Verdict }> {
    for (let force = false; ; force = true) {
      const token = await this.host.token(force);
      if (signal.aborted) throw new Transient('cancelled');
      if (token === null) throw new Transient('no token');
      let res: UploadResponse;
      try {
        res = await this.host.fetch(url, {
          method,
          headers: { ...baseHeaders(token), ...headers },
          ...(body === undefined ? {} : { body }),
          signal,
        });
      } catch (e) {
        throw new Transient(`network: ${e instanceof Error ? e.message : String(e)}`);
      }
      // Paused or aborted while the answer came: the loop is over, nothing of it may be recorded.
      if (signal.aborted) throw new Transient('cancelled');
      const verdict = classify(res.status, expected, res.headers.get('Retry-After'));
      if (verdict.kind === 'auth') {
        if (!force) continue;
        throw new UploadError('unauthorized', 'the edge refused a fresh token', 401);
      }
      if (verdict.kind === 'retry') throw new Transient(`HTTP ${res.status}`, verdict.retryAfter);
      return { res, verdict };
    }
  }

  /** The error for an answer the current request cannot go on from. */
  private async unexpected(res: UploadResponse, verdict: Verdict): Promise<UploadError> {
    const detail = await errorMessage(res);
    if (verdict.kind === 'final' || verdict.kind === 'gone') {
      return new UploadError(verdict.code, detail ?? verdict.message, res.status);
    }
    return new UploadError(`http_${res.status}`, detail ?? `unexpected answer ${res.status}`, res.status);
  }

  private startAfresh(): void {
    if (this.fp !== null) this.host.store.remove(this.fp);
    this.uploadUrl = null;
    this.remembered = false;
    this.known = false;
    this.plan.resume = false;
  }

  // ---- outcomes -------------------------------------------------------------------

  private setOffset(offset: number): void {
    this.offset = offset;
    if (this.prog.bytesSent === offset) return;
    this.prog = { bytesSent: offset, bytesTotal: this.plan.file.size };
    for (const cb of [...this.progressCbs]) cb(this.prog);
  }

  /** The edge confirmed something: the failure counters start over. */
  private progressed(): void {
    this.remembered = false;
    this.failures = 0;
    this.backoff.reset();
  }

  private finish(): void {
    const url = this.uploadUrl as string;
    if (this.fp !== null) this.host.store.remove(this.fp);
    const id = new URL(url).pathname.split('/').filter(Boolean).pop() ?? '';
    this.res = {
      id,
      size: this.plan.file.size,
      url: `${url.replace(/\/+$/, '')}/content`,
      uploadUrl: url,
      filename: this.plan.metadata.filename,
      filetype: this.plan.metadata.filetype,
    };
    this.run = null;
    this.setState('done');
    this.settle.resolve(this.res);
  }

  private fail(err: UploadError): void {
    // An upload the edge will never take again is forgotten; one that failed for
    // passing reasons (network, token) is kept, so the same file resumes later.
    const keep = err.code === 'network' || err.code === 'unauthorized' || err.code === 'stopped';
    if (!keep && this.fp !== null) this.host.store.remove(this.fp);
    this.run = null;
    this.finishWith('error', err);
  }

  private finishWith(state: 'error' | 'aborted', err: UploadError): void {
    this.err = err;
    this.setState(state);
    this.settle.reject(err);
  }

  private setState(s: UploadState): void {
    if (this.st === s) return;
    this.st = s;
    for (const cb of [...this.stateCbs]) cb(s);
  }
}

// ---- the client's side ------------------------------------------------------------

export interface UploadsHost {
  env: Env;
  channelName: string;
  /** The default endpoint (the client's first URL). */
  endpoint: string;
  token(force: boolean): Promise<string | null>;
  /** Overrides for tests. */
  fetch?: UploadFetch;
  digest?: ((data: ArrayBuffer) => Promise<ArrayBuffer>) | null;
}

/** The real fetch, or one that fails every request where there is none. */
function browserFetch(): UploadFetch {
  const f = (globalThis as { fetch?: typeof fetch }).fetch;
  if (typeof f !== 'function') return () => Promise.reject(new TypeError('fetch is not available'));
  // Called through a closure: fetch invoked as a method of another object throws "Illegal invocation".
  return (url, init) => f(url, { ...init, cache: 'no-store' });
}

/** SHA-256 with Web Crypto, or null where it is missing (insecure contexts). */
function browserDigest(): ((data: ArrayBuffer) => Promise<ArrayBuffer>) | null {
  const subtle = (globalThis as { crypto?: { subtle?: SubtleCrypto } }).crypto?.subtle;
  return subtle === undefined ? null : (data) => subtle.digest('SHA-256', data);
}

/** This tab's uploads: it starts them and stops them with the client. */
export class Uploads {
  private readonly running = new Set<UploadTask>();
  private readonly store: UploadStore;
  private stopped = false;

  constructor(private readonly host: UploadsHost) {
    this.store = new UploadStore(host.env.storage, `${host.channelName}:upload:`, () => host.env.now());
  }

  upload(file: Blob, options: UploadOptions = {}): Upload {
    const plan = planUpload(file, options, this.host.endpoint, this.host.env.baseHref());
    if (this.stopped) throw new Error('herald: the client is stopped');
    const env = this.host.env;
    const task = new UploadTask(
      {
        fetch: this.host.fetch ?? browserFetch(),
        token: this.host.token,
        store: this.store,
        digest: this.host.digest !== undefined ? this.host.digest : browserDigest(),
        sleep: (ms, signal) => sleep(env, ms, signal),
        now: () => env.now(),
        random: () => env.random(),
      },
      plan,
    );
    this.running.add(task);
    task.onStateChange((s) => {
      if (s === 'done' || s === 'error' || s === 'aborted') this.running.delete(task);
    });
    task.start();
    return task;
  }

  /** Stops every running upload; after a logout they are forgotten too (the next user must not continue them). */
  close(logout: boolean): void {
    this.stopped = true;
    for (const t of [...this.running]) t.stop(logout);
    this.running.clear();
  }
}

/** Waits `ms` on the env's clock, or until `signal` aborts. */
function sleep(env: Pick<Env, 'setTimeout' | 'clearTimeout'>, ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      env.clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = env.setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}
