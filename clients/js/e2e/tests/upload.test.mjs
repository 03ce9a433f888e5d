// The SDK's client.upload() in Chromium against real edges: pause/resume
// (the edge's offset holds still while paused) and a page reload mid-upload
// (the same File resumes the remembered upload: HEAD, not POST).
// Run alone: node --test tests/upload.test.mjs
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Stack, headOffset, sleep } from '../harness.mjs';

const KiB = 1024;
const MiB = 1024 * KiB;
const SUB = 'upload-user';
let stack;
let edge;
let token;

const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');

async function contentSha(id) {
  const r = await fetch(`${edge.url}/v2/uploads/${id}/content`, {
    headers: { Authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(30_000),
  });
  const bytes = Buffer.from(await r.arrayBuffer());
  assert.equal(r.status, 200, bytes.toString('utf8', 0, 300));
  return { sha: sha256(bytes), size: bytes.length };
}

/** Defines window.__mkFile(size): a deterministic %PDF- File (same name, size, lastModified). */
async function installFileMaker(page) {
  await page.evaluate(() => {
    window.__mkFile = (size) => {
      const bytes = new Uint8Array(size);
      let x = 0x9e3779b9;
      for (let i = 0; i < size; i++) {
        x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
        bytes[i] = x & 0xff;
      }
      bytes.set(new TextEncoder().encode('%PDF-1.7\n'));
      return new File([bytes], 'report.pdf', { type: 'application/pdf', lastModified: 1_700_000_000_000 });
    };
    window.__sha = async (file) => [...new Uint8Array(await crypto.subtle.digest('SHA-256', await file.arrayBuffer()))].map((b) => b.toString(16).padStart(2, '0')).join('');
  });
}

async function openPage(ctx) {
  const page = await stack.openTab(ctx, { sub: SUB, urls: [edge.url] });
  await installFileMaker(page);
  return page;
}

async function waitFor(page, fn, arg, timeout = 30_000) {
  await page.waitForFunction(fn, arg, { timeout, polling: 20 });
}

describe('SDK uploads in Chromium against real edges', { concurrency: false }, () => {
  before(async () => {
    stack = await new Stack().start({ edges: 1 });
    [edge] = stack.edges;
    token = stack.token({ sub: SUB });
  });

  after(async () => {
    if (stack) await stack.stop();
  });

  it('1. pause() holds the edge offset still, resume() finishes, same SHA-256', { timeout: 120_000 }, async () => {
    const ctx = await stack.newContext();
    try {
      const page = await openPage(ctx);
      const size = 2 * MiB + 4321;
      const sha = await page.evaluate(async (size) => {
        const file = window.__mkFile(size);
        window.__u1 = window.T.client.upload(file, { metadata: { filename: 'report.pdf', filetype: 'application/pdf' }, chunkSize: 64 * 1024 });
        window.__u1.done.then((r) => (window.__r1 = r), (e) => (window.__e1 = String(e?.code ?? e)));
        return window.__sha(file);
      }, size);
      await waitFor(page, () => window.__u1.progress().bytesSent >= 256 * 1024 || window.__e1);
      const paused = await page.evaluate(() => {
        window.__u1.pause();
        return { state: window.__u1.state(), sent: window.__u1.progress().bytesSent };
      });
      assert.equal(paused.state, 'paused');
      assert.ok(paused.sent < size, `paused at ${paused.sent}`);
      // The upload URL: from the remembered entry in localStorage.
      const uploadUrl = await page.evaluate(() => {
        for (let i = 0; i < localStorage.length; i++) {
          const k = localStorage.key(i);
          if (k.includes(':upload:')) return JSON.parse(localStorage.getItem(k)).url;
        }
        return null;
      });
      assert.ok(uploadUrl, 'the upload is remembered');
      await sleep(300); // a PATCH in flight when paused may still land
      const o1 = await headOffset(uploadUrl, token);
      await sleep(1500);
      const o2 = await headOffset(uploadUrl, token);
      assert.equal(o2, o1, 'the offset did not grow while paused');
      assert.ok(o1 < size);
      assert.equal(await page.evaluate(() => window.__u1.state()), 'paused');

      await page.evaluate(() => window.__u1.resume());
      await waitFor(page, () => window.__r1 || window.__e1, null, 60_000);
      const r = await page.evaluate(() => ({ r: window.__r1 ?? null, e: window.__e1 ?? null, state: window.__u1.state() }));
      assert.equal(r.e, null);
      assert.equal(r.state, 'done');
      assert.equal(r.r.size, size);
      assert.equal(r.r.uploadUrl, uploadUrl);
      const got = await contentSha(r.r.id);
      assert.deepEqual(got, { sha, size });
      stack.figure?.('upload 1', `paused at ${o1} B (held for 1.5 s), resumed, ${size} B SHA-256 matches`);
    } finally {
      await stack.closeContext(ctx);
    }
  });

  it('2. a reload mid-upload: the same File resumes (HEAD first, same id), same SHA-256', { timeout: 120_000 }, async () => {
    const ctx = await stack.newContext();
    try {
      const page = await openPage(ctx);
      const size = 3 * MiB + 999;
      const opts = { metadata: { filename: 'report.pdf', filetype: 'application/pdf' }, chunkSize: 64 * 1024 };
      const sha = await page.evaluate(async ({ size, opts }) => {
        const file = window.__mkFile(size);
        window.__u2 = window.T.client.upload(file, opts);
        window.__u2.done.catch(() => {});
        return window.__sha(file);
      }, { size, opts });
      await waitFor(page, (size) => window.__u2.progress().bytesSent > size / 4, size);
      const before = await page.evaluate(() => {
        for (let i = 0; i < localStorage.length; i++) {
          const k = localStorage.key(i);
          if (k.includes(':upload:')) return { key: k, url: JSON.parse(localStorage.getItem(k)).url, sent: window.__u2.progress().bytesSent };
        }
        return null;
      });
      assert.ok(before, 'the upload is remembered before the reload');
      const idBefore = new URL(before.url).pathname.split('/').pop();

      await page.reload();
      await page.waitForFunction(() => window.T && window.T.ready === true, null, { timeout: 15_000 });
      const reqs = [];
      page.on('request', (req) => {
        if (req.url().includes('/v2/uploads') && req.method() !== 'OPTIONS') reqs.push({ method: req.method(), url: req.url() });
      });
      await page.evaluate((o) => window.T.start(o), { sub: SUB, urls: [edge.url] });
      await installFileMaker(page);
      const atResume = await headOffset(before.url, token);
      assert.ok(atResume > size / 4 && atResume < size, `edge offset ${atResume} at the reload`);
      const r = await page.evaluate(async ({ size, opts }) => {
        const u = window.T.client.upload(window.__mkFile(size), opts);
        try {
          return { r: await Promise.race([u.done, new Promise((_, rej) => setTimeout(() => rej(new Error('no end in 60 s')), 60_000))]) };
        } catch (e) {
          return { e: String(e?.code ?? e) };
        }
      }, { size, opts });
      assert.equal(r.e, undefined, `resumed upload failed: ${r.e}`);
      assert.ok(reqs.length > 0);
      assert.equal(reqs[0].method, 'HEAD', `first request after the reload: ${JSON.stringify(reqs.slice(0, 3))}`);
      assert.equal(reqs[0].url, before.url);
      assert.equal(reqs.filter((q) => q.method === 'POST').length, 0, 'nothing created anew');
      assert.equal(r.r.id, idBefore, 'the same upload id');
      assert.equal(r.r.size, size);
      const got = await contentSha(r.r.id);
      assert.deepEqual(got, { sha, size });
      stack.figure?.('upload 2', `reloaded at ${atResume} B of ${size}, resumed ${idBefore} with HEAD then ${reqs.length - 1} PATCHes, SHA-256 matches`);
    } finally {
      await stack.closeContext(ctx);
    }
  });
});
