// The tus 1.0.0 wire of Herald's uploads (protocol §13), without I/O: the
// requests' headers, `Upload-Metadata` encoding (checked against the edge's
// rules before anything is sent), header parsing, and the one place where an
// answer's status is sorted into what the upload does next.

import type { UploadMetadata } from '../types.js';

/** The tus version every request carries. */
export const TUS_VERSION = '1.0.0';
/** The PATCH body type tus requires. */
export const OFFSET_OCTET_STREAM = 'application/offset+octet-stream';
/** The edge's nonstandard answer to a checksum mismatch (tus checksum extension). */
export const CHECKSUM_MISMATCH = 460;

/** The part of a fetch Response an upload reads. */
export interface UploadResponse {
  readonly status: number;
  readonly headers: { get(name: string): string | null };
  json(): Promise<unknown>;
}

export interface UploadRequest {
  method: 'POST' | 'HEAD' | 'PATCH' | 'DELETE';
  headers: Record<string, string>;
  body?: ArrayBuffer;
  signal?: AbortSignal;
}

/** `fetch` as uploads use it (injectable for tests). */
export type UploadFetch = (url: string, init: UploadRequest) => Promise<UploadResponse>;

/** Metadata keys the edge keeps; any other key is refused (400). */
const METADATA_KEYS = ['filename', 'filetype', 'documentType', 'propertyId', 'guestId'] as const;
/** The edge refuses a longer `Upload-Metadata` header. */
const MAX_METADATA_BYTES = 4096;
const SUBJECT_TOKEN = /^[A-Za-z0-9_-]{1,64}$/;
const MIME_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** UTF-8 bytes of `s`. */
export function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

/** Standard base64 (with padding) of bytes. */
export function base64(bytes: Uint8Array): string {
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

/**
 * Checks the metadata against the edge's creation rules and encodes it as
 * tus `Upload-Metadata` (`key base64(utf8 value)`, comma-separated, in a fixed
 * key order). Throws a TypeError naming the problem: a refusal here costs no
 * request and says more than the edge's 400.
 */
export function encodeMetadata(m: UploadMetadata): string {
  for (const key of Object.keys(m)) {
    if (!(METADATA_KEYS as readonly string[]).includes(key)) {
      throw new TypeError(`herald upload: unknown metadata key ${JSON.stringify(key)} (allowed: ${METADATA_KEYS.join(', ')})`);
    }
  }
  const name = m.filename;
  const nameBytes = typeof name === 'string' ? utf8(name).length : 0;
  if (typeof name !== 'string' || nameBytes < 1 || nameBytes > 255 || CONTROL.test(name) || /[/\\]/.test(name)) {
    throw new TypeError('herald upload: `filename` must be 1–255 bytes of UTF-8 without control characters, / or \\');
  }
  if (typeof m.filetype !== 'string' || !MIME_TYPE.test(m.filetype)) {
    throw new TypeError(`herald upload: \`filetype\` must be a MIME type such as application/pdf, got ${JSON.stringify(m.filetype)}`);
  }
  if (m.propertyId !== undefined && (typeof m.propertyId !== 'string' || !SUBJECT_TOKEN.test(m.propertyId))) {
    throw new TypeError('herald upload: `propertyId` must be 1–64 characters of [A-Za-z0-9_-]');
  }
  if (m.guestId !== undefined && (typeof m.guestId !== 'string' || m.guestId.length < 1 || m.guestId.length > 128)) {
    throw new TypeError('herald upload: `guestId` must be 1–128 characters');
  }
  if (m.documentType !== undefined && typeof m.documentType !== 'string') {
    throw new TypeError('herald upload: `documentType` must be a string');
  }
  const pairs: string[] = [];
  for (const key of METADATA_KEYS) {
    const v = m[key];
    if (v !== undefined) pairs.push(v === '' ? key : `${key} ${base64(utf8(v))}`);
  }
  const header = pairs.join(',');
  if (header.length > MAX_METADATA_BYTES) throw new TypeError('herald upload: metadata over 4 KiB');
  return header;
}

/** A tus offset or length header: a whole number, or null when absent or malformed. */
export function parseOffset(value: string | null): number | null {
  if (value === null || !/^\d{1,16}$/.test(value.trim())) return null;
  return Number(value.trim());
}

/** The headers every request carries. */
export function baseHeaders(token: string): Record<string, string> {
  return { 'Tus-Resumable': TUS_VERSION, Authorization: `Bearer ${token}` };
}

/** What an answer means for the upload. */
export type Verdict =
  /** Done as asked. */
  | { kind: 'ok' }
  /** The token was refused: fetch a fresh one and repeat the request once. */
  | { kind: 'auth' }
  /** The offset was wrong (409): ask the edge for its offset and go on from there. */
  | { kind: 'conflict' }
  /** The chunk arrived damaged (460): send it again. */
  | { kind: 'checksum' }
  /** The upload is unknown or gone (404, 410): a remembered one is started afresh. */
  | { kind: 'gone'; code: 'not_found' | 'expired'; message: string }
  /** A passing failure (408, 423, 429, 5xx): wait, ask for the offset, go on. */
  | { kind: 'retry'; retryAfter: string | null }
  /** Retrying cannot help: the upload fails with `code`. */
  | { kind: 'final'; code: string; message: string };

/**
 * Sorts an answer (`expected` is the success status of the request). The
 * one place that decides between going on, retrying and giving up.
 */
export function classify(status: number, expected: number, retryAfter: string | null = null): Verdict {
  if (status === expected) return { kind: 'ok' };
  switch (status) {
    case 401:
      return { kind: 'auth' };
    case 409:
      return { kind: 'conflict' };
    case CHECKSUM_MISMATCH:
      return { kind: 'checksum' };
    case 404:
      return { kind: 'gone', code: 'not_found', message: 'the upload does not exist (or belongs to another org, or was ended by a content check)' };
    case 410:
      return { kind: 'gone', code: 'expired', message: 'the upload expired before it was finished' };
    case 403:
      return { kind: 'final', code: 'forbidden', message: 'the token may not upload here (another org, or a cross-org token)' };
    case 413:
      return { kind: 'final', code: 'too_large', message: 'the file is larger than the edge accepts' };
    case 415:
      return { kind: 'final', code: 'unsupported_type', message: 'the file type is not accepted, or the content does not match it' };
    case 400:
      return { kind: 'final', code: 'bad_request', message: 'the edge refused the request' };
    case 412:
      return { kind: 'final', code: 'unsupported_protocol', message: 'the edge does not speak tus 1.0.0' };
    case 408:
    case 423:
    case 429:
      return { kind: 'retry', retryAfter };
    default:
      if (status >= 500) return { kind: 'retry', retryAfter };
      return { kind: 'final', code: `http_${status}`, message: `unexpected answer ${status}` };
  }
}

/** The `{"error":{"message"}}` of an error answer, if there is one. */
export async function errorMessage(res: UploadResponse): Promise<string | null> {
  try {
    const body = (await res.json()) as { error?: { message?: unknown } } | null;
    const m = body?.error?.message;
    return typeof m === 'string' && m.length > 0 ? m : null;
  } catch {
    return null;
  }
}
