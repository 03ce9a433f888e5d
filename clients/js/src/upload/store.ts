// Where an unfinished upload is remembered, so that a page reload (or the
// same file chosen again) continues it instead of starting over. One
// localStorage entry per file fingerprint: the file's name, size,
// lastModified and type, plus the org and the endpoint, because an upload
// URL is only good for the org that created it on that cluster.
// Invariant: an entry is written once the edge created the upload and removed
// when it finished, was aborted, or turned out gone (404/410) or expired.

import type { StorageLike } from '../env.js';

/** What identifies a file across page loads (a File's fields; a plain Blob has only size and type). */
export interface FileLike {
  readonly size: number;
  readonly type: string;
  readonly name?: string;
  readonly lastModified?: number;
}

/** A remembered upload. */
export interface StoredUpload {
  /** The absolute upload URL (Location resolved against the endpoint). */
  url: string;
  size: number;
  /** When the edge expires it (ms since the epoch), if it said. */
  expiresAt: number | null;
}

/** The fingerprint of `file` for `org` at `endpoint`. */
export function fingerprint(file: FileLike, org: string | null, endpoint: string): string {
  return JSON.stringify([org ?? '', endpoint, file.name ?? '', file.size, file.lastModified ?? 0, file.type]);
}

export class UploadStore {
  constructor(
    private readonly storage: StorageLike | null,
    /** Key prefix, `<channelName>:upload:`. */
    private readonly prefix: string,
    private readonly now: () => number,
  ) {}

  /** The remembered upload of `fp`, unless absent, unreadable or expired. */
  get(fp: string): StoredUpload | null {
    const raw = this.storage?.getItem(this.prefix + fp) ?? null;
    if (raw === null) return null;
    try {
      const v = JSON.parse(raw) as Partial<StoredUpload>;
      if (typeof v.url !== 'string' || typeof v.size !== 'number') throw new Error('bad entry');
      const expiresAt = typeof v.expiresAt === 'number' ? v.expiresAt : null;
      if (expiresAt !== null && expiresAt <= this.now()) throw new Error('expired');
      return { url: v.url, size: v.size, expiresAt };
    } catch {
      this.remove(fp);
      return null;
    }
  }

  set(fp: string, upload: StoredUpload): void {
    this.storage?.setItem(this.prefix + fp, JSON.stringify(upload));
  }

  remove(fp: string): void {
    this.storage?.removeItem(this.prefix + fp);
  }
}

/** `Upload-Expires` (an HTTP date) in ms since the epoch, or null. */
export function parseExpires(value: string | null): number | null {
  if (value === null) return null;
  const t = Date.parse(value);
  return Number.isFinite(t) ? t : null;
}
