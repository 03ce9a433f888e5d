// An in-memory tus server as a fake fetch, following protocol §13 as far as
// an upload client can tell: creation with a relative Location, HEAD,
// PATCH with offset and sha256 checks (409, 460, 415), DELETE, bearer
// tokens (401) and Tus-Resumable (412). Tests steer it with hooks that
// answer, hold or lose a request.

import type { UploadFetch, UploadRequest, UploadResponse } from '../src/upload/tus.js';

export interface SeenRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: Uint8Array | null;
}

export interface StoredFile {
  length: number;
  offset: number;
  bytes: Uint8Array;
  metadata: string;
}

/**
 * What a hook may do with a request: answer it instead of the server
 * (`{ status, headers }`), let the server handle it and then fail the
 * request as if the answer were lost (`'lose'`), or pass (`undefined`). A
 * promise holds the request until it settles (an aborted request rejects
 * meanwhile).
 */
export type HookResult = { status: number; headers?: Record<string, string>; body?: unknown } | 'lose' | undefined;
export type Hook = (req: SeenRequest, server: FakeTusServer) => HookResult | Promise<HookResult>;

function response(status: number, headers: Record<string, string> = {}, body: unknown = null): UploadResponse {
  const h = new Map(Object.entries({ 'Tus-Resumable': '1.0.0', ...headers }).map(([k, v]) => [k.toLowerCase(), v]));
  return {
    status,
    headers: { get: (n: string) => h.get(n.toLowerCase()) ?? null },
    json: async () => {
      if (body === null) throw new SyntaxError('no body');
      return body;
    },
  };
}

async function sha256b64(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
  return btoa(String.fromCharCode(...d));
}

export class FakeTusServer {
  readonly files = new Map<string, StoredFile>();
  readonly requests: SeenRequest[] = [];
  /** Bearer tokens the server accepts. */
  tokens = new Set<string>();
  /** Tried in order on every request; the first that does not pass decides. */
  hooks: Hook[] = [];
  private nextId = 1;

  constructor(tokens: string[]) {
    for (const t of tokens) this.tokens.add(t);
  }

  /** Requests of one method. */
  seen(method: string): SeenRequest[] {
    return this.requests.filter((r) => r.method === method);
  }

  fetch: UploadFetch = async (url: string, init: UploadRequest) => {
    const req: SeenRequest = {
      method: init.method,
      url,
      headers: { ...init.headers },
      body: init.body === undefined ? null : new Uint8Array(init.body.slice(0)),
    };
    this.requests.push(req);
    const aborted = () => Object.assign(new Error('The operation was aborted'), { name: 'AbortError' });
    if (init.signal?.aborted) throw aborted();
    for (const hook of this.hooks) {
      const pending = hook(req, this);
      let r: HookResult;
      if (pending instanceof Promise) {
        r = await new Promise<HookResult>((resolve, reject) => {
          init.signal?.addEventListener('abort', () => reject(aborted()));
          pending.then(resolve, reject);
        });
      } else {
        r = pending;
      }
      if (r === 'lose') {
        await this.handle(req);
        throw new TypeError('Failed to fetch');
      }
      if (r !== undefined) return response(r.status, r.headers, r.body ?? null);
    }
    if (init.signal?.aborted) throw aborted();
    return this.handle(req);
  };

  /** The server's own answer. */
  async handle(req: SeenRequest): Promise<UploadResponse> {
    const h = req.headers;
    if (h['Tus-Resumable'] !== '1.0.0') return response(412, { 'Tus-Version': '1.0.0' });
    const auth = /^Bearer (.+)$/.exec(h.Authorization ?? '');
    if (auth === null || !this.tokens.has(auth[1] as string)) return response(401, {}, { error: { code: 'unauthorized', message: 'bad token' } });
    const path = new URL(req.url).pathname;
    if (req.method === 'POST' && path.endsWith('/v2/uploads')) {
      const length = Number(h['Upload-Length']);
      const id = `up${String(this.nextId++).padStart(24, '0')}`;
      this.files.set(id, { length, offset: 0, bytes: new Uint8Array(length), metadata: h['Upload-Metadata'] ?? '' });
      return response(201, { Location: `/v2/uploads/${id}`, 'Upload-Expires': 'Wed, 02 Dec 2026 22:00:00 GMT' });
    }
    const m = /\/v2\/uploads\/([a-z0-9]+)$/.exec(path);
    const file = m === null ? undefined : this.files.get(m[1] as string);
    if (m === null || file === undefined) return response(404, {}, { error: { code: 'not_found', message: 'no such upload' } });
    switch (req.method) {
      case 'HEAD':
        return response(200, { 'Upload-Offset': String(file.offset), 'Upload-Length': String(file.length), 'Cache-Control': 'no-store' });
      case 'DELETE':
        this.files.delete(m[1] as string);
        return response(204);
      case 'PATCH': {
        if (h['Content-Type'] !== 'application/offset+octet-stream') return response(415);
        if (Number(h['Upload-Offset']) !== file.offset) return response(409, { 'Upload-Offset': String(file.offset) });
        const body = req.body ?? new Uint8Array(0);
        const sum = h['Upload-Checksum'];
        if (sum !== undefined && sum !== `sha256 ${await sha256b64(body)}`) return response(460);
        if (file.offset + body.length > file.length) return response(413);
        file.bytes.set(body, file.offset);
        file.offset += body.length;
        return response(204, { 'Upload-Offset': String(file.offset) });
      }
      default:
        return response(405);
    }
  }

  /** Appends bytes as another writer would. */
  append(id: string, bytes: Uint8Array): void {
    const f = this.files.get(id);
    if (f === undefined) throw new Error(`no upload ${id}`);
    f.bytes.set(bytes, f.offset);
    f.offset += bytes.length;
  }
}
