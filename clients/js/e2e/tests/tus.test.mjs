// tus-js-client, as published on npm and unmodified, uploads to real edges
// (contract §7, protocol §13): in Node (a Buffer, then a file on disk that
// is resumed on the other edge) and in Chromium from a page of another
// origin (CORS preflights and exposed headers). Refusals reach its onError
// with their status. Run alone: node --test tests/tus.test.mjs
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as tus from 'tus-js-client';
import { ORG, Stack, freePort } from '../harness.mjs';

const require = createRequire(import.meta.url);
const TUS_BROWSER_BUNDLE = require.resolve('tus-js-client/dist/tus.min.js');
const TUS_VERSION = JSON.parse(fs.readFileSync(require.resolve('tus-js-client/package.json'), 'utf8')).version;

const MiB = 1024 * 1024;
const PROPERTY = 'lisbon';
/** The HERALD_UPLOAD_MAX_BYTES of the third edge (scenario 4). */
const SMALL_MAX = MiB;

let stack;
let edgeA;
let edgeB;
let token;

const sha256 = (bytes) => crypto.createHash('sha256').update(bytes).digest('hex');

/** `size` random bytes behind `prefix` (a file signature the edge sniffs). */
function fileLike(prefix, size) {
  const buf = crypto.randomBytes(size);
  Buffer.from(prefix, 'latin1').copy(buf);
  return buf;
}
const pdfLike = (size) => fileLike('%PDF-1.7\n%\xe2\xe3\xcf\xd3\n', size);

const idOf = (uploadUrl) => new URL(uploadUrl).pathname.split('/').pop();

/**
 * Runs one tus.Upload to its end: resolves { upload, requests, progress,
 * chunks } on onSuccess, rejects with the error given to onError (or after
 * timeoutMs, aborting the upload). `requests` lists every request
 * tus-js-client made ({method, url, offset, status, answerOffset}).
 * `prepare(upload)` runs before start (findPreviousUploads and such);
 * `abortAt`: upload.abort() in the onChunkComplete that reports at least
 * that many bytes accepted, and resolve with `aborted` set.
 */
function runUpload(file, options, { timeoutMs = 60_000, prepare, abortAt } = {}) {
  const rec = { requests: [], progress: [], chunks: [] };
  return new Promise((resolve, reject) => {
    let timer;
    const upload = new tus.Upload(file, {
      retryDelays: null, // every refusal surfaces: nothing is papered over by a retry
      ...options,
      onBeforeRequest: (req) => {
        rec.requests.push({ method: req.getMethod(), url: req.getURL(), offset: req.getHeader('Upload-Offset') ?? null });
      },
      onAfterResponse: (req, res) => {
        const r = rec.requests.findLast((x) => x.url === req.getURL() && x.method === req.getMethod() && x.status === undefined);
        if (r) {
          r.status = res.getStatus();
          r.answerOffset = res.getHeader('Upload-Offset') ?? null;
        }
      },
      onProgress: (sent) => {
        rec.progress.push(sent);
      },
      onChunkComplete: (chunkSize, accepted) => {
        rec.chunks.push({ chunkSize, accepted });
        if (abortAt !== undefined && accepted >= abortAt) {
          upload.abort(); // no further handler runs
          clearTimeout(timer);
          resolve({ upload, aborted: accepted, ...rec });
        }
      },
      onSuccess: () => {
        clearTimeout(timer);
        resolve({ upload, ...rec });
      },
      onError: (err) => {
        clearTimeout(timer);
        err.requests = rec.requests;
        reject(err);
      },
    });
    timer = setTimeout(() => {
      upload.abort();
      reject(new Error(`tus upload did not finish in ${timeoutMs} ms; requests: ${JSON.stringify(rec.requests)}`));
    }, timeoutMs);
    Promise.resolve(prepare?.(upload))
      .then(() => upload.start())
      .catch((err) => {
        clearTimeout(timer);
        reject(err);
      });
  });
}

/** The status tus-js-client saw in a refusal (DetailedError.originalResponse). */
const statusOf = (err) => err?.originalResponse?.getStatus?.() ?? null;

/** Runs an upload that must fail; resolves the DetailedError it failed with. */
async function expectRefusal(file, options) {
  try {
    const { requests } = await runUpload(file, options, { timeoutMs: 30_000 });
    throw new assert.AssertionError({ message: `the upload succeeded: ${JSON.stringify(requests)}` });
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    return err;
  }
}

function tusOptions(edge, { filename, filetype, ...rest } = {}) {
  return {
    endpoint: `${edge.url}/v2/uploads`,
    headers: { Authorization: `Bearer ${token}` },
    metadata: { filename, filetype, propertyId: PROPERTY },
    ...rest,
  };
}

async function head(uploadUrl) {
  const r = await fetch(uploadUrl, {
    method: 'HEAD',
    headers: { Authorization: `Bearer ${token}`, 'Tus-Resumable': '1.0.0' },
    signal: AbortSignal.timeout(10_000),
  });
  return { status: r.status, offset: Number(r.headers.get('upload-offset')), length: Number(r.headers.get('upload-length')) };
}

async function content(edge, id) {
  const r = await fetch(`${edge.url}/v2/uploads/${id}/content`, {
    headers: { Authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(30_000),
  });
  const bytes = Buffer.from(await r.arrayBuffer());
  return { status: r.status, headers: r.headers, bytes };
}

/**
 * A long-poll subscription (protocol §4) of one service on one edge: open()
 * takes the cursor, next(pred) holds polls from there until an event
 * matches.
 */
class Poll {
  constructor(edge, service, pollToken) {
    this.edge = edge;
    this.service = service;
    this.token = pollToken;
  }

  async #poll(timeoutSec) {
    const q = new URLSearchParams({ org: ORG, services: this.service, timeout: String(timeoutSec) });
    if (this.lastSeq !== undefined) q.set('lastSeq', String(this.lastSeq));
    if (this.epoch !== undefined) q.set('epoch', this.epoch);
    const r = await fetch(`${this.edge.url}/v1/realtime/poll?${q}`, {
      headers: { Authorization: `Bearer ${this.token}` },
      signal: AbortSignal.timeout((timeoutSec + 10) * 1000),
    });
    const text = await r.text();
    assert.equal(r.status, 200, `poll on ${this.edge.name}: ${r.status} ${text}`);
    const body = JSON.parse(text);
    assert.equal(body.reset, null, `poll reset: ${text}`);
    this.lastSeq = body.lastSeq;
    this.epoch = body.epoch;
    return body.events;
  }

  async open() {
    await this.#poll(0);
    return this;
  }

  async next(pred, { timeoutMs = 20_000, what = 'an event' } = {}) {
    const deadline = Date.now() + timeoutMs;
    const seen = [];
    while (Date.now() < deadline) {
      const left = Math.max(1, Math.min(5, Math.floor((deadline - Date.now()) / 1000)));
      for (const e of await this.#poll(left)) {
        seen.push(e);
        if (pred(e)) return e;
      }
    }
    throw new Error(`no ${what} on ${this.edge.name} within ${timeoutMs} ms; saw ${JSON.stringify(seen).slice(0, 2000)}`);
  }
}

describe(`tus-js-client ${TUS_VERSION} against real edges`, { concurrency: false }, () => {
  before(async () => {
    stack = await new Stack().start({ edges: 2 });
    [edgeA, edgeB] = stack.edges;
    token = stack.token({ sub: 'tus-user', props: [PROPERTY] });
  });

  after(async () => {
    if (!stack) return;
    console.log('\n[e2e] ===== tus figures =====');
    for (const f of stack.figures) console.log(`[e2e] ${f}`);
    await stack.stop();
  });

  it('1. Node, a 3 MiB PDF in 1 MiB chunks: onSuccess, same bytes back, upload.completed', { timeout: 90_000 }, async () => {
    const file = pdfLike(3 * MiB + 12_345);
    const digest = sha256(file);
    const poll = await new Poll(edgeB, 'uploads', stack.token({ sub: 'tus-watcher' })).open();

    const t0 = Date.now();
    const { upload, requests, chunks } = await runUpload(
      file,
      tusOptions(edgeA, { filename: 'lease agreement.pdf', filetype: 'application/pdf', chunkSize: MiB }),
    );
    const ms = Date.now() - t0;
    const id = idOf(upload.url);
    assert.match(id, /^[a-z0-9]{26}$/, `upload URL ${upload.url}`);
    assert.equal(new URL(upload.url).origin, edgeA.url, 'Location resolved against the endpoint');
    assert.deepEqual(
      requests.map((r) => `${r.method} ${r.offset ?? '-'} ${r.status}`),
      ['POST - 201', 'PATCH 0 204', `PATCH ${MiB} 204`, `PATCH ${2 * MiB} 204`, `PATCH ${3 * MiB} 204`],
    );
    assert.deepEqual(
      chunks.map((c) => c.accepted),
      [MiB, 2 * MiB, 3 * MiB, file.length],
    );

    // Served by the other edge: every node answers for every upload.
    const got = await content(edgeB, id);
    assert.equal(got.status, 200, got.bytes.toString('utf8', 0, 300));
    assert.equal(got.headers.get('content-type'), 'application/pdf');
    assert.equal(got.headers.get('content-length'), String(file.length));
    assert.equal(got.headers.get('etag'), `"${digest}"`);
    assert.equal(got.headers.get('content-disposition'), "attachment; filename*=UTF-8''lease%20agreement.pdf");
    assert.equal(sha256(got.bytes), digest, 'the content is the uploaded file');

    const ev = await poll.next((e) => e.eventType === 'upload.completed' && e.entityId === id, { what: `upload.completed for ${id}` });
    assert.equal(ev.service, 'uploads');
    assert.equal(ev.propertyId, PROPERTY);
    assert.equal(ev.entityType, 'upload');
    assert.equal(ev.eventId, `upload-${id}`);
    assert.deepEqual(ev.payload, {
      id,
      filename: 'lease agreement.pdf',
      filetype: 'application/pdf',
      size: file.length,
      sha256: digest,
      propertyId: PROPERTY,
    });
    stack.figure('tus 1', `${(file.length / MiB).toFixed(2)} MiB in ${requests.length} requests in ${ms} ms on ${edgeA.name}; content and upload.completed (seq ${ev.seq}) on ${edgeB.name}`);
  });

  it('2. Node, a file on disk: aborted after two chunks on edge A, resumed on edge B from the stored offset', { timeout: 90_000 }, async () => {
    const file = pdfLike(3 * MiB + MiB / 2);
    const digest = sha256(file);
    const filePath = path.join(stack.tmp, 'resume.pdf');
    fs.writeFileSync(filePath, file);

    // tus-js-client's own resume bookkeeping: a URL storage shared by both runs.
    const stored = new Map();
    const urlStorage = {
      findAllUploads: async () => [...stored.values()],
      findUploadsByFingerprint: async (fp) => [...stored.values()].filter((u) => u.urlStorageKey.startsWith(`${fp}::`)),
      removeUpload: async (key) => void stored.delete(key),
      addUpload: async (fp, upload) => {
        const key = `${fp}::${crypto.randomUUID()}`;
        stored.set(key, { ...upload, urlStorageKey: key });
        return key;
      },
    };
    const options = tusOptions(edgeA, { filename: 'resume.pdf', filetype: 'application/pdf', chunkSize: MiB, urlStorage, removeFingerprintOnSuccess: true });

    // First run: stopped by upload.abort() once two chunks are acknowledged.
    const aborted = await runUpload(fs.createReadStream(filePath), options, { timeoutMs: 30_000, abortAt: 2 * MiB });
    const first = aborted.upload;
    assert.equal(aborted.aborted, 2 * MiB);
    assert.deepEqual(
      aborted.requests.map((r) => `${r.method} ${r.offset ?? '-'} ${r.status}`),
      ['POST - 201', 'PATCH 0 204', `PATCH ${MiB} 204`],
    );
    assert.equal(new URL(first.url).origin, edgeA.url);
    const id = idOf(first.url);
    const urlOnB = `${edgeB.url}${new URL(first.url).pathname}`;

    // Edge B knows the offset edge A stored.
    assert.deepEqual(await head(urlOnB), { status: 200, offset: 2 * MiB, length: file.length });

    // Second run, a new tus.Upload of the same file: findPreviousUploads
    // finds the first run's URL; it continues on edge B.
    const t0 = Date.now();
    const second = await runUpload(fs.createReadStream(filePath), options, {
      prepare: async (upload) => {
        const found = await upload.findPreviousUploads();
        assert.equal(found.length, 1, `previous uploads: ${JSON.stringify(found)}`);
        assert.equal(found[0].uploadUrl, first.url);
        upload.resumeFromPreviousUpload({ ...found[0], uploadUrl: urlOnB });
      },
    });
    const ms = Date.now() - t0;
    assert.equal(second.upload.url, urlOnB);
    assert.deepEqual(
      second.requests.map((r) => `${r.method} ${new URL(r.url).port} ${r.offset ?? '-'} ${r.status}`),
      [`HEAD ${edgeB.port} - 200`, `PATCH ${edgeB.port} ${2 * MiB} 204`, `PATCH ${edgeB.port} ${3 * MiB} 204`],
      'resumed on edge B at the stored offset, nothing created anew',
    );
    assert.ok(Math.min(...second.progress) >= 2 * MiB, `progress restarted below the stored offset: ${second.progress}`);
    assert.deepEqual(second.chunks.map((c) => c.chunkSize), [MiB, MiB / 2]);
    assert.equal(stored.size, 0, 'removeFingerprintOnSuccess cleared the stored URL');

    const got = await content(edgeA, id);
    assert.equal(got.status, 200);
    assert.equal(sha256(got.bytes), digest, 'the resumed upload is the file');
    stack.figure('tus 2', `aborted at ${aborted.aborted} B on ${edgeA.name}, resumed on ${edgeB.name} in ${ms} ms (${second.requests.length} requests), SHA-256 matches`);
  });

  it('3. Chromium, a page of another origin: a PNG File uploads, preflights pass, answers are readable', { timeout: 90_000 }, async () => {
    const pageOrigin = stack.origin; // the demo server's origin: in HERALD_CORS_ORIGINS, not the edges'
    assert.notEqual(new URL(pageOrigin).port, String(edgeA.port));

    // The preflight tus-js-client's PATCH needs, as the browser sends it.
    const pre = await fetch(`${edgeA.url}/v2/uploads/${'a'.repeat(26)}`, {
      method: 'OPTIONS',
      headers: {
        Origin: pageOrigin,
        'Access-Control-Request-Method': 'PATCH',
        'Access-Control-Request-Headers': 'authorization,content-type,tus-resumable,upload-offset',
      },
      signal: AbortSignal.timeout(10_000),
    });
    assert.ok(pre.status === 200 || pre.status === 204, `preflight ${pre.status}`);
    assert.equal(pre.headers.get('access-control-allow-origin'), pageOrigin);
    const allowed = (pre.headers.get('access-control-allow-methods') ?? '').toUpperCase();
    for (const m of ['PATCH', 'HEAD', 'DELETE']) assert.ok(allowed.includes(m), `allow-methods ${allowed}`);
    const allowedHeaders = (pre.headers.get('access-control-allow-headers') ?? '').toLowerCase();
    for (const h of ['authorization', 'content-type', 'tus-resumable', 'upload-offset', 'upload-length', 'upload-metadata']) {
      assert.ok(allowedHeaders.includes(h), `allow-headers lacks ${h}: ${allowedHeaders}`);
    }

    const ctx = await stack.newContext();
    try {
      // A page the demo server really serves (the e2e page, its client left
      // unstarted), tus-js-client's browser bundle added to it. Not a page
      // made up by ctx.route: Chromium would count it as from the public
      // address space and refuse its requests to the loopback edges (Local
      // Network Access) before any CORS check.
      const page = await ctx.newPage();
      await page.goto(`${pageOrigin}/e2e.html`);
      await page.waitForFunction(() => window.T && window.T.ready === true, null, { timeout: 15_000 });
      await page.addScriptTag({ path: TUS_BROWSER_BUNDLE });
      assert.equal(await page.evaluate(() => typeof window.tus?.Upload === 'function' && window.tus.isSupported), true);

      const result = await page.evaluate(
        async ({ endpoint, token: bearer, size, property }) => {
          const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');
          const bytes = new Uint8Array(size);
          for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(size, i + 65536)));
          bytes.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
          const sha = hex(await crypto.subtle.digest('SHA-256', bytes));
          const upload = (file, filetype) =>
            new Promise((resolve) => {
              const timer = setTimeout(() => resolve({ ok: false, message: 'no answer in 30 s' }), 30_000);
              const u = new window.tus.Upload(file, {
                endpoint,
                chunkSize: 512 * 1024,
                retryDelays: null,
                headers: { Authorization: `Bearer ${bearer}` },
                metadata: { filename: file.name, filetype, propertyId: property },
                onSuccess: () => {
                  clearTimeout(timer);
                  resolve({ ok: true, url: u.url });
                },
                onError: (err) => {
                  clearTimeout(timer);
                  resolve({ ok: false, message: String(err), status: err.originalResponse ? err.originalResponse.getStatus() : null });
                },
              });
              u.start();
            });
          const png = await upload(new File([bytes], 'floor plan.png', { type: 'image/png' }), 'image/png');
          let exposed = null;
          let download = null;
          if (png.ok) {
            // What the page may read of the edge's answers (exposed headers).
            const h = await fetch(png.url, { method: 'HEAD', headers: { Authorization: `Bearer ${bearer}`, 'Tus-Resumable': '1.0.0' } });
            exposed = {
              status: h.status,
              'upload-offset': h.headers.get('upload-offset'),
              'upload-length': h.headers.get('upload-length'),
              'tus-resumable': h.headers.get('tus-resumable'),
            };
            const g = await fetch(`${png.url}/content`, { headers: { Authorization: `Bearer ${bearer}` } });
            const body = await g.arrayBuffer();
            download = { status: g.status, type: g.headers.get('content-type'), size: body.byteLength, sha: hex(await crypto.subtle.digest('SHA-256', body)) };
          }
          // A refusal must reach onError with its status, not as a network error.
          const exe = await upload(new File([new Uint8Array([0x4d, 0x5a, 0x90, 0, 3])], 'setup.exe'), 'application/x-msdownload');
          return { sha, png, exposed, download, exe, origin: location.origin };
        },
        { endpoint: `${edgeB.url}/v2/uploads`, token, size: 2 * MiB + 777, property: PROPERTY },
      );
      assert.equal(result.origin, pageOrigin);
      assert.equal(result.png.ok, true, `browser upload: ${JSON.stringify(result.png)}`);
      assert.equal(new URL(result.png.url).origin, edgeB.url);
      assert.deepEqual(result.exposed, {
        status: 200,
        'upload-offset': String(2 * MiB + 777),
        'upload-length': String(2 * MiB + 777),
        'tus-resumable': '1.0.0',
      });
      assert.deepEqual(result.download, { status: 200, type: 'image/png', size: 2 * MiB + 777, sha: result.sha });
      assert.equal(result.exe.ok, false);
      assert.equal(result.exe.status, 415, `the refused type: ${JSON.stringify(result.exe)}`);

      // And from Node, on the other edge: the same bytes.
      const got = await content(edgeA, idOf(result.png.url));
      assert.equal(got.status, 200);
      assert.equal(sha256(got.bytes), result.sha);

      // Every request the page made went to the edges with a well-formed Bearer token.
      const toEdges = ctx.__rec.requests.filter((r) => r.url.startsWith(edgeB.url));
      const methods = [...new Set(toEdges.map((r) => r.method))].sort();
      assert.deepEqual(methods, ['GET', 'HEAD', 'PATCH', 'POST']);
      assert.equal(stack.violations.length, 0, stack.violations.join('\n'));
      assert.equal(ctx.__rec.pageErrors.length, 0, ctx.__rec.pageErrors.join('\n'));
      stack.figure('tus 3', `Chromium page at ${pageOrigin} uploaded ${2 * MiB + 777} B to ${edgeB.url} in ${toEdges.filter((r) => r.method === 'PATCH').length} PATCHes; .exe refused 415 in onError`);
    } finally {
      await stack.closeContext(ctx);
    }
  });

  it('4. refusals reach onError with their status: 415 for a type, 415 for content, 413 over the size cap', { timeout: 90_000 }, async () => {
    const exe = await expectRefusal(fileLike('MZ\x90\x00', 4096), tusOptions(edgeA, { filename: 'setup.exe', filetype: 'application/x-msdownload' }));
    assert.equal(statusOf(exe), 415, `type: ${exe.message}`);
    assert.deepEqual(exe.requests.map((r) => `${r.method} ${r.status}`), ['POST 415']);

    // Declared a PDF, starts like a PNG: the first PATCH is refused and the upload ended.
    const fake = await expectRefusal(fileLike('\x89PNG\r\n\x1a\n', 64 * 1024), tusOptions(edgeA, { filename: 'fake.pdf', filetype: 'application/pdf' }));
    assert.equal(statusOf(fake), 415, `content: ${fake.message}`);
    assert.deepEqual(fake.requests.map((r) => `${r.method} ${r.status}`), ['POST 201', 'PATCH 415']);
    assert.equal((await head(fake.requests[1].url)).status, 404, 'the refused upload is ended');

    // A third edge with a 1 MiB cap: its exact cap passes, one byte more is 413.
    const small = await stack.startEdge('edge-small', await freePort(), { HERALD_UPLOAD_MAX_BYTES: String(SMALL_MAX) });
    // tus discovery, on an edge with CORS on (a plain OPTIONS is no preflight).
    const opts = await fetch(`${small.url}/v2/uploads`, { method: 'OPTIONS', signal: AbortSignal.timeout(10_000) });
    assert.equal(opts.status, 204);
    assert.equal(opts.headers.get('tus-version'), '1.0.0');
    assert.equal(opts.headers.get('tus-max-size'), String(SMALL_MAX));
    const big = await expectRefusal(pdfLike(SMALL_MAX + 1), tusOptions(small, { filename: 'big.pdf', filetype: 'application/pdf' }));
    assert.equal(statusOf(big), 413, `size: ${big.message}`);
    assert.deepEqual(big.requests.map((r) => `${r.method} ${r.status}`), ['POST 413']);
    const exact = pdfLike(SMALL_MAX);
    const ok = await runUpload(exact, tusOptions(small, { filename: 'exact.pdf', filetype: 'application/pdf' }));
    const got = await content(small, idOf(ok.upload.url));
    assert.equal(sha256(got.bytes), sha256(exact));
    stack.figure('tus 4', `onError statuses: type ${statusOf(exe)}, content ${statusOf(fake)}, over ${SMALL_MAX} B ${statusOf(big)}; exactly ${SMALL_MAX} B accepted`);
  });
});
