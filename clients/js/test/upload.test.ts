// Uploads against an in-memory tus server (tus-server.ts): chunks and
// offsets, checksums and 460, 409 resync, lost answers, pause/resume/abort,
// the remembered upload URL, tokens, final errors, and the metadata header.
import { describe, expect, it, vi } from 'vitest';
import type { StorageLike } from '../src/env.js';
import { planUpload, UploadTask, type UploadHost } from '../src/upload.js';
import { fingerprint, UploadStore } from '../src/upload/store.js';
import { classify, encodeMetadata } from '../src/upload/tus.js';
import type { UploadOptions, UploadProgress } from '../src/types.js';
import { jwt } from './fakes.js';
import { FakeTusServer, type SeenRequest } from './tus-server.js';

const EDGE = 'http://edge.test:8080';
const TOKEN = jwt({ sub: 'u1', org: 'acme', exp: 4_000_000_000 });
const KIB = 1024;

/** A File of `size` bytes, each byte a function of its position (so misplaced bytes show). */
function file(size: number, name = 'report.pdf', type = 'application/pdf', lastModified = 1_700_000_000_000): File {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + (i >> 8)) & 0xff;
  return new File([bytes], name, { type, lastModified });
}

async function bytesOf(f: Blob): Promise<Uint8Array> {
  return new Uint8Array(await f.arrayBuffer());
}

function memoryStorage(): StorageLike & { data: Map<string, string> } {
  const data = new Map<string, string>();
  return {
    data,
    getItem: (k) => data.get(k) ?? null,
    setItem: (k, v) => void data.set(k, v),
    removeItem: (k) => void data.delete(k),
  };
}

/** Lets promise chains (crypto, Blob reads, fake fetch) run until `cond` holds. */
async function until(cond: () => boolean, what = 'condition'): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 0));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function setup(opts: { tokens?: string[]; storage?: ReturnType<typeof memoryStorage>; token?: UploadHost['token'] } = {}) {
  const server = new FakeTusServer(opts.tokens ?? [TOKEN]);
  const storage = opts.storage ?? memoryStorage();
  const sleeps: number[] = [];
  const token = vi.fn(opts.token ?? (async () => TOKEN));
  const host: UploadHost = {
    fetch: server.fetch,
    token,
    store: new UploadStore(storage, 'herald:upload:', () => 1_700_000_000_000),
    digest: (data) => crypto.subtle.digest('SHA-256', data),
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    now: () => 1_700_000_000_000,
    random: () => 0.5,
  };
  const start = (f: Blob, options: UploadOptions = {}) => {
    const task = new UploadTask(host, planUpload(f, options, EDGE));
    const progress: UploadProgress[] = [];
    const states: string[] = [];
    task.onProgress((p) => progress.push(p));
    task.onStateChange((s) => states.push(s));
    task.start();
    return { task, progress, states };
  };
  return { server, storage, sleeps, token, host, start };
}

const patchOffsets = (reqs: SeenRequest[]) => reqs.filter((r) => r.method === 'PATCH').map((r) => Number(r.headers['Upload-Offset']));
const onlyFile = (server: FakeTusServer) => {
  expect(server.files.size).toBe(1);
  return [...server.files.values()][0]!;
};

describe('upload: the happy path', () => {
  it('creates the upload, then PATCHes 64 KiB chunks at the offsets the edge confirmed', async () => {
    const { server, start, storage } = setup();
    const f = file(150 * KIB);
    const { task, progress, states } = start(f, { metadata: { propertyId: 'lisbon' } });
    const result = await task.done;

    const [create, ...rest] = server.requests;
    expect(create!.method).toBe('POST');
    expect(create!.url).toBe(`${EDGE}/v2/uploads`);
    expect(create!.headers['Upload-Length']).toBe(String(150 * KIB));
    expect(rest.map((r) => r.method)).toEqual(['PATCH', 'PATCH', 'PATCH']);
    expect(patchOffsets(rest)).toEqual([0, 64 * KIB, 128 * KIB]);
    expect(rest.map((r) => r.body?.length)).toEqual([64 * KIB, 64 * KIB, 22 * KIB]);
    for (const r of server.requests) {
      expect(r.headers['Tus-Resumable']).toBe('1.0.0');
      expect(r.headers.Authorization).toBe(`Bearer ${TOKEN}`);
    }
    for (const r of rest) {
      expect(r.headers['Content-Type']).toBe('application/offset+octet-stream');
      expect(r.headers['Upload-Checksum']).toMatch(/^sha256 [A-Za-z0-9+/]{43}=$/);
    }
    // The relative Location is resolved against the endpoint.
    const id = [...server.files.keys()][0]!;
    expect(rest[0]!.url).toBe(`${EDGE}/v2/uploads/${id}`);
    expect(await bytesOf(new Blob([onlyFile(server).bytes as BlobPart]))).toEqual(await bytesOf(f));

    expect(result).toEqual({
      id,
      size: 150 * KIB,
      url: `${EDGE}/v2/uploads/${id}/content`,
      uploadUrl: `${EDGE}/v2/uploads/${id}`,
      filename: 'report.pdf',
      filetype: 'application/pdf',
    });
    expect(progress.map((p) => p.bytesSent)).toEqual([64 * KIB, 128 * KIB, 150 * KIB]);
    expect(progress.every((p) => p.bytesTotal === 150 * KIB)).toBe(true);
    expect(states).toEqual(['done']);
    expect(task.state()).toBe('done');
    expect(task.result()).toBe(result);
    // Finished: nothing is remembered.
    expect(storage.data.size).toBe(0);
  });

  it('checksums each chunk over exactly its bytes', async () => {
    const { server, start } = setup();
    const f = file(100 * KIB);
    await start(f, { chunkSize: 40 * KIB }).task.done;
    const all = await bytesOf(f);
    const patches = server.seen('PATCH');
    expect(patches).toHaveLength(3);
    for (const p of patches) {
      const off = Number(p.headers['Upload-Offset']);
      const chunk = all.slice(off, Math.min(all.length, off + 40 * KIB));
      const d = new Uint8Array(await crypto.subtle.digest('SHA-256', chunk));
      expect(p.headers['Upload-Checksum']).toBe(`sha256 ${btoa(String.fromCharCode(...d))}`);
    }
  });
});

describe('upload: failures the upload recovers from', () => {
  it('sends a chunk again after a 460, and nothing else', async () => {
    const { server, start } = setup();
    let refusals = 1;
    server.hooks.push((req) => (req.method === 'PATCH' && req.headers['Upload-Offset'] === String(64 * KIB) && refusals-- > 0 ? { status: 460 } : undefined));
    const f = file(130 * KIB);
    await start(f).task.done;
    expect(patchOffsets(server.requests)).toEqual([0, 64 * KIB, 64 * KIB, 128 * KIB]);
    expect(server.seen('HEAD')).toHaveLength(0);
    expect(onlyFile(server).bytes).toEqual(await bytesOf(f));
  });

  it('gives up with `checksum` when one chunk keeps being refused', async () => {
    const { server, start, storage } = setup();
    server.hooks.push((req) => (req.method === 'PATCH' ? { status: 460 } : undefined));
    const { task } = start(file(10 * KIB));
    await expect(task.done).rejects.toMatchObject({ code: 'checksum', status: 460 });
    expect(server.seen('PATCH')).toHaveLength(4); // the first try and three more
    expect(task.state()).toBe('error');
    expect(storage.data.size).toBe(0);
  });

  it('on a 409 asks HEAD for the offset and goes on from the edge’s offset', async () => {
    const { server, start } = setup();
    const f = file(200 * KIB);
    const all = await bytesOf(f);
    let raced = false;
    // Another writer stores the second chunk just before our PATCH of it arrives.
    server.hooks.push((req, s) => {
      if (!raced && req.method === 'PATCH' && req.headers['Upload-Offset'] === String(64 * KIB)) {
        raced = true;
        s.append([...s.files.keys()][0]!, all.slice(64 * KIB, 128 * KIB));
      }
      return undefined;
    });
    await start(f).task.done;
    expect(server.requests.map((r) => r.method)).toEqual(['POST', 'PATCH', 'PATCH', 'HEAD', 'PATCH', 'PATCH']);
    expect(patchOffsets(server.requests)).toEqual([0, 64 * KIB, 128 * KIB, 192 * KIB]);
    expect(onlyFile(server).bytes).toEqual(all);
  });

  it('after a lost answer (network failure) backs off, asks HEAD and continues without resending', async () => {
    const { server, start, sleeps } = setup();
    let lost = false;
    server.hooks.push((req) => {
      if (!lost && req.method === 'PATCH' && req.headers['Upload-Offset'] === String(64 * KIB)) {
        lost = true;
        return 'lose'; // the edge stored the chunk, the browser never heard
      }
      return undefined;
    });
    const f = file(150 * KIB);
    const { task, progress } = start(f);
    await task.done;
    expect(server.requests.map((r) => r.method)).toEqual(['POST', 'PATCH', 'PATCH', 'HEAD', 'PATCH']);
    expect(patchOffsets(server.requests)).toEqual([0, 64 * KIB, 128 * KIB]);
    expect(sleeps).toHaveLength(1);
    expect(sleeps[0]).toBeGreaterThanOrEqual(0);
    expect(sleeps[0]).toBeLessThan(500); // the first backoff step: [0, 500 ms)
    expect(progress.map((p) => p.bytesSent)).toEqual([64 * KIB, 128 * KIB, 150 * KIB]);
    expect(onlyFile(server).bytes).toEqual(await bytesOf(f));
  });

  it('backs off longer at each failure in a row, honours Retry-After, and gives up after maxRetries', async () => {
    const { server, start, sleeps, storage } = setup();
    server.hooks.push((req) => (req.method === 'PATCH' ? { status: 503, headers: { 'Retry-After': '3' } } : undefined));
    const { task } = start(file(10 * KIB), { maxRetries: 3 });
    await expect(task.done).rejects.toMatchObject({ code: 'network' });
    expect(sleeps).toEqual([3000, 3000, 3000]);
    // Between the tries the upload asked where the edge stood.
    expect(server.requests.map((r) => r.method)).toEqual(['POST', 'PATCH', 'HEAD', 'PATCH', 'HEAD', 'PATCH', 'HEAD', 'PATCH']);
    // A passing failure keeps the upload remembered: the same file resumes later.
    expect(storage.data.size).toBe(1);
  });

  it('without Retry-After, waits grow with the failures (full jitter under a doubling ceiling)', async () => {
    const { server, start, sleeps } = setup();
    let failures = 4;
    server.hooks.push((req) => (req.method === 'PATCH' && failures-- > 0 ? { status: 502 } : undefined));
    await start(file(10 * KIB)).task.done;
    // random() = 0.5: half of 500, 1000, 2000, 4000 ms.
    expect(sleeps).toEqual([250, 500, 1000, 2000]);
  });

  it('on a 401 fetches a fresh token and repeats the request once', async () => {
    const fresh = jwt({ sub: 'u1', org: 'acme', exp: 4_000_000_001 });
    const { server, start, token } = setup({ tokens: [fresh], token: async (force) => (force ? fresh : TOKEN) });
    const { task } = start(file(10 * KIB));
    await task.done;
    expect(server.requests.map((r) => [r.method, r.headers.Authorization])).toEqual([
      ['POST', `Bearer ${TOKEN}`],
      ['POST', `Bearer ${fresh}`],
      ['PATCH', `Bearer ${TOKEN}`],
      ['PATCH', `Bearer ${fresh}`],
    ]);
    expect(token.mock.calls.map((c) => c[0])).toContain(true);
  });

  it('fails with `unauthorized` when the fresh token is refused too', async () => {
    const { server, start, token, storage } = setup({ tokens: [] });
    const { task } = start(file(10 * KIB));
    await expect(task.done).rejects.toMatchObject({ code: 'unauthorized', status: 401 });
    expect(server.requests).toHaveLength(2);
    expect(token.mock.calls.map((c) => c[0])).toEqual([false, false, true]);
    expect(storage.data.size).toBe(0); // never created
  });
});

describe('upload: final answers', () => {
  it.each([
    [403, 'forbidden'],
    [413, 'too_large'],
    [415, 'unsupported_type'],
    [400, 'bad_request'],
    [412, 'unsupported_protocol'],
  ])('a %i to the creation fails with %s at once', async (status, code) => {
    const { server, start, sleeps } = setup();
    server.hooks.push(() => ({ status, body: { error: { code: 'x', message: `edge says ${status}` } } }));
    const { task } = start(file(10 * KIB));
    const err = await task.done.catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'UploadError', code, status });
    expect((err as Error).message).toContain(`edge says ${status}`);
    expect(server.requests).toHaveLength(1);
    expect(sleeps).toHaveLength(0);
  });

  it.each([
    [404, 'not_found'],
    [410, 'expired'],
    [415, 'unsupported_type'],
    [413, 'too_large'],
  ])('a %i to a PATCH fails with %s and forgets the upload', async (status, code) => {
    const { server, start, storage } = setup();
    server.hooks.push((req) => (req.method === 'PATCH' && req.headers['Upload-Offset'] !== '0' ? { status } : undefined));
    const { task, states } = start(file(100 * KIB));
    await expect(task.done).rejects.toMatchObject({ code, status });
    expect(server.seen('PATCH')).toHaveLength(2);
    expect(states).toEqual(['error']);
    expect(task.error()?.code).toBe(code);
    expect(storage.data.size).toBe(0);
  });

  it('sorts statuses in one place', () => {
    expect(classify(204, 204)).toEqual({ kind: 'ok' });
    expect(classify(401, 204).kind).toBe('auth');
    expect(classify(409, 204).kind).toBe('conflict');
    expect(classify(460, 204).kind).toBe('checksum');
    expect(classify(503, 204, '7')).toEqual({ kind: 'retry', retryAfter: '7' });
    expect(classify(408, 204).kind).toBe('retry');
    expect(classify(429, 204).kind).toBe('retry');
    expect(classify(418, 204)).toMatchObject({ kind: 'final', code: 'http_418' });
  });
});

describe('upload: pause, resume, abort', () => {
  it('pause cancels the PATCH in flight and sends nothing until resume, which asks HEAD first', async () => {
    const { server, start } = setup();
    let hold = true;
    let release!: () => void;
    server.hooks.push((req) =>
      hold && req.method === 'PATCH' && req.headers['Upload-Offset'] === String(64 * KIB)
        ? new Promise((r) => {
            release = () => r(undefined);
          })
        : undefined,
    );
    const f = file(150 * KIB);
    const { task, states } = start(f);
    await until(() => server.seen('PATCH').length === 2, 'the second PATCH');
    task.pause();
    expect(task.state()).toBe('paused');
    hold = false;
    release();
    const before = server.requests.length;
    await new Promise((r) => setTimeout(r, 20));
    expect(server.requests.length).toBe(before);
    expect(task.progress().bytesSent).toBe(64 * KIB);

    task.resume();
    await task.done;
    expect(server.requests.slice(before).map((r) => r.method)).toEqual(['HEAD', 'PATCH', 'PATCH']);
    expect(patchOffsets(server.requests.slice(before))).toEqual([64 * KIB, 128 * KIB]);
    expect(states).toEqual(['paused', 'uploading', 'done']);
    expect(onlyFile(server).bytes).toEqual(await bytesOf(f));
  });

  it('pause and resume are ignored in the wrong state', async () => {
    const { start } = setup();
    const { task, states } = start(file(1 * KIB));
    task.resume(); // not paused
    await task.done;
    task.pause(); // finished
    task.resume();
    expect(states).toEqual(['done']);
  });

  it('abort deletes the upload on the edge (tus DELETE), forgets it, and rejects `done`', async () => {
    const { server, start, storage } = setup();
    let release!: () => void;
    server.hooks.push((req) =>
      req.method === 'PATCH' && req.headers['Upload-Offset'] === String(64 * KIB)
        ? new Promise((r) => {
            release = () => r(undefined);
          })
        : undefined,
    );
    const { task, states } = start(file(150 * KIB));
    await until(() => server.seen('PATCH').length === 2, 'the second PATCH');
    expect(storage.data.size).toBe(1);
    await task.abort();
    release();
    await expect(task.done).rejects.toMatchObject({ code: 'aborted' });
    const del = server.seen('DELETE');
    expect(del).toHaveLength(1);
    expect(del[0]!.headers['Tus-Resumable']).toBe('1.0.0');
    expect(del[0]!.url).toBe(server.seen('PATCH')[0]!.url);
    expect(server.files.size).toBe(0);
    expect(storage.data.size).toBe(0);
    expect(states).toEqual(['aborted']);
    await new Promise((r) => setTimeout(r, 20));
    expect(server.seen('PATCH')).toHaveLength(2); // nothing after the abort
  });
});

describe('upload: remembered across page loads', () => {
  it('fingerprints by name, size, lastModified, type, org and endpoint', () => {
    const base = fingerprint(file(10), 'acme', EDGE);
    expect(fingerprint(file(10), 'acme', EDGE)).toBe(base);
    for (const other of [
      fingerprint(file(10, 'other.pdf'), 'acme', EDGE),
      fingerprint(file(11), 'acme', EDGE),
      fingerprint(file(10, 'report.pdf', 'application/pdf', 1), 'acme', EDGE),
      fingerprint(file(10, 'report.pdf', 'image/png'), 'acme', EDGE),
      fingerprint(file(10), 'globex', EDGE),
      fingerprint(file(10), 'acme', 'http://edge-2.test'),
    ]) {
      expect(other).not.toBe(base);
    }
  });

  it('the same file after a reload continues the remembered upload from the edge’s offset', async () => {
    const storage = memoryStorage();
    const first = setup({ storage });
    // The first page stops after one chunk: every later request fails.
    first.server.hooks.push((req) => (req.method === 'PATCH' && req.headers['Upload-Offset'] !== '0' ? { status: 503 } : undefined));
    const f = file(150 * KIB);
    await expect(first.start(f, { maxRetries: 0 }).task.done).rejects.toMatchObject({ code: 'network' });
    const stored = [...storage.data.entries()];
    expect(stored).toHaveLength(1);
    expect(stored[0]![0]).toBe(`herald:upload:${fingerprint(f, 'acme', `${EDGE}/`)}`);
    const uploadUrl = JSON.parse(stored[0]![1]).url as string;

    // The reloaded page: a new task (same storage, same edge) for a new File object of the same file.
    first.server.hooks = [];
    const seen = first.server.requests.length;
    const { task, progress } = first.start(file(150 * KIB));
    const result = await task.done;
    const later = first.server.requests.slice(seen);
    expect(later.map((r) => r.method)).toEqual(['HEAD', 'PATCH', 'PATCH']);
    expect(later[0]!.url).toBe(uploadUrl);
    expect(patchOffsets(later)).toEqual([64 * KIB, 128 * KIB]);
    expect(progress.map((p) => p.bytesSent)).toEqual([64 * KIB, 128 * KIB, 150 * KIB]);
    expect(result.uploadUrl).toBe(uploadUrl);
    expect(onlyFile(first.server).bytes).toEqual(await bytesOf(f));
    expect(storage.data.size).toBe(0);
  });

  it('a remembered upload the edge no longer knows (404) is started afresh', async () => {
    const { server, start, storage } = setup();
    const f = file(10 * KIB);
    const fp = fingerprint(f, 'acme', `${EDGE}/`);
    storage.setItem(`herald:upload:${fp}`, JSON.stringify({ url: `${EDGE}/v2/uploads/gone`, size: f.size, expiresAt: null }));
    await start(f).task.done;
    expect(server.requests.map((r) => r.method)).toEqual(['HEAD', 'POST', 'PATCH']);
    expect(storage.data.size).toBe(0);
  });

  it('an expired entry is not even asked about, and resume: false ignores a remembered one', async () => {
    const { server, start, storage } = setup();
    const f = file(10 * KIB);
    const key = `herald:upload:${fingerprint(f, 'acme', `${EDGE}/`)}`;
    storage.setItem(key, JSON.stringify({ url: `${EDGE}/v2/uploads/old`, size: f.size, expiresAt: 1_600_000_000_000 }));
    await start(f).task.done;
    storage.setItem(key, JSON.stringify({ url: `${EDGE}/v2/uploads/other`, size: f.size, expiresAt: null }));
    await start(f, { resume: false }).task.done;
    expect(server.requests.map((r) => r.method)).toEqual(['POST', 'PATCH', 'POST', 'PATCH']);
  });

  it('another org’s token does not take up the upload remembered for the first org', async () => {
    const storage = memoryStorage();
    const globex = jwt({ sub: 'u2', org: 'globex', exp: 4_000_000_000 });
    const f = file(10 * KIB);
    storage.setItem(`herald:upload:${fingerprint(f, 'acme', `${EDGE}/`)}`, JSON.stringify({ url: `${EDGE}/v2/uploads/acme1`, size: f.size, expiresAt: null }));
    const { server, start } = setup({ storage, tokens: [globex], token: async () => globex });
    await start(f).task.done;
    expect(server.requests.map((r) => r.method)).toEqual(['POST', 'PATCH']);
    expect(storage.data.size).toBe(1); // acme's entry is left alone
  });
});

describe('upload: arguments', () => {
  it('encodes metadata the tus way: key, space, base64 of the UTF-8 value; comma-separated', () => {
    const header = encodeMetadata({ filename: 'Fätura n.º 7.pdf', filetype: 'application/pdf', propertyId: 'lisbon', guestId: 'g-1', documentType: 'invoice' });
    const pairs = header.split(',').map((p) => p.split(' '));
    expect(pairs.map((p) => p[0])).toEqual(['filename', 'filetype', 'documentType', 'propertyId', 'guestId']);
    const decode = (b64: string) => new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
    expect(pairs.map((p) => decode(p[1]!))).toEqual(['Fätura n.º 7.pdf', 'application/pdf', 'invoice', 'lisbon', 'g-1']);
  });

  it('refuses metadata the edge would refuse, before any request', () => {
    const ok = { filename: 'a.pdf', filetype: 'application/pdf' };
    expect(() => encodeMetadata({ ...ok, colour: 'red' } as never)).toThrow(/unknown metadata key "colour"/);
    expect(() => encodeMetadata({ ...ok, filename: '' })).toThrow(/filename/);
    expect(() => encodeMetadata({ ...ok, filename: 'a/b.pdf' })).toThrow(/filename/);
    expect(() => encodeMetadata({ ...ok, filename: 'a\\b.pdf' })).toThrow(/filename/);
    expect(() => encodeMetadata({ ...ok, filename: 'a\nb.pdf' })).toThrow(/filename/);
    expect(() => encodeMetadata({ ...ok, filename: 'é'.repeat(128) })).toThrow(/filename/); // 256 bytes
    expect(() => encodeMetadata({ ...ok, filename: 'é'.repeat(127) })).not.toThrow();
    expect(() => encodeMetadata({ ...ok, filetype: '' })).toThrow(/filetype/);
    expect(() => encodeMetadata({ ...ok, filetype: 'pdf' })).toThrow(/filetype/);
    expect(() => encodeMetadata({ ...ok, propertyId: 'lis bon' })).toThrow(/propertyId/);
    expect(() => encodeMetadata({ ...ok, guestId: 'g'.repeat(129) })).toThrow(/guestId/);
    expect(() => encodeMetadata({ ...ok, documentType: 'x'.repeat(4000) })).toThrow(/4 KiB/);
  });

  it('takes filename and filetype from the File, and checks the rest of the options', () => {
    const p = planUpload(file(5, 'scan.png', 'image/png'), {}, EDGE);
    expect(p.metadataHeader).toBe(`filename ${btoa('scan.png')},filetype ${btoa('image/png')}`);
    expect(p.createUrl).toBe(`${EDGE}/v2/uploads`);
    expect(planUpload(file(5), {}, 'https://h.test/herald/').createUrl).toBe('https://h.test/herald/v2/uploads');
    expect(planUpload(file(5), { endpoint: '/edge' }, EDGE, 'https://app.test/page').createUrl).toBe('https://app.test/edge/v2/uploads');
    expect(() => planUpload(new Blob([new Uint8Array(5)]), {}, EDGE)).toThrow(/filename/);
    expect(planUpload(new Blob([new Uint8Array(5)], { type: 'text/csv' }), { metadata: { filename: 'x.csv' } }, EDGE).metadata.filetype).toBe('text/csv');
    expect(() => planUpload(file(0), {}, EDGE)).toThrow(/empty/);
    expect(() => planUpload(file(5), { chunkSize: 0 }, EDGE)).toThrow(/chunkSize/);
    expect(() => planUpload(file(5), { chunkSize: 8 * 1024 * 1024 + 1 }, EDGE)).toThrow(/chunkSize/);
    expect(() => planUpload('text' as never, {}, EDGE)).toThrow(/Blob/);
  });
});
