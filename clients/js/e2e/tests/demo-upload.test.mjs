// The demo page's upload panel (section #upload) and Documents list, driven in
// Chromium as a user would, in one browser profile with two tabs of the demo
// (tab A the leader holding the connection, tab B a follower):
//   1. a PDF chosen on the file input of tab A: the progress bar advances,
//      Pause holds it (and the edge's offset, HEAD) still, Resume finishes it;
//      the file shows in the Documents list of both tabs (upload.completed
//      reached every tab), and its link serves the same bytes (SHA-256);
//   2. a PNG chosen in the follower tab B: uploaded straight from there, and
//      listed in both tabs too;
//   3. Abort mid-upload: the panel says aborted, the edge forgets the upload
//      (HEAD 404), nothing is listed;
//   4. tab A reloaded mid-upload and the same file (from disk) chosen again:
//      it continues the remembered upload (HEAD first, no POST) and is listed
//      in both tabs.
// Tab A's uploads are slowed with DevTools network throttling (upload
// throughput only), so that progress and Pause can be seen on loopback.
// Run alone: node --test tests/demo-upload.test.mjs
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Stack, headOffset, sleep, waitFor } from '../harness.mjs';

const KiB = 1024;
const MiB = 1024 * KiB;
const UPLOAD_BYTES_PER_S = 1.5 * MiB; // tab A's throttled upload throughput
let stack;
let ctx;
let tabA;
let tabB;
let sub; // the demo's user (a guest name kept in the profile's localStorage)

const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');

/** `size` deterministic pseudo-random bytes starting with `head`. */
function fileBytes(size, head, seed) {
  const bytes = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    bytes[i] = x & 0xff;
  }
  head.copy(bytes, 0);
  return bytes;
}

/** Slows `page`'s uploads (DevTools network throttling); returns the way back. */
async function throttleUploads(page, bytesPerS) {
  const cdp = await ctx.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: bytesPerS });
  return async () => {
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 }).catch(() => {});
    await cdp.detach().catch(() => {});
  };
}

/** Records `page`'s upload requests (not preflights) until the returned stop() is called. */
function recordUploadRequests(page) {
  const reqs = [];
  const on = (req) => {
    if (req.url().includes('/v2/uploads') && req.method() !== 'OPTIONS') reqs.push({ method: req.method(), url: req.url() });
  };
  page.on('request', on);
  return { reqs, stop: () => page.off('request', on) };
}

/** Waits until the bar of `page` shows more than `min` bytes (and less than the whole). */
async function waitBarAbove(page, min, what) {
  return waitFor(async () => {
    const b = await bar(page);
    return b.value > min ? b : false;
  }, { timeout: 30_000, interval: 20, what });
}

const bar = (page) => page.$eval('#up-bar', (b) => ({ value: b.value, max: b.max }));
const status = (page) => page.textContent('#up-status');
const disabled = (page, id) => page.$eval(`#${id}`, (b) => b.disabled);
const docNames = (page) => page.$$eval('#docs li a', (as) => as.map((a) => a.textContent));

/** The remembered upload's URL in this profile's localStorage (the SDK's resume entry). */
const rememberedUploadUrl = (page) =>
  page.evaluate(() => {
    for (let i = 0; i < localStorage.length; i++) {
      const k = localStorage.key(i);
      if (k.includes(':upload:')) return JSON.parse(localStorage.getItem(k)).url;
    }
    return null;
  });


async function openDemoTab() {
  const page = await ctx.newPage();
  await page.goto(stack.demo.url);
  await waitFor(async () => (await page.textContent('#st-status')) === 'live', { timeout: 20_000, what: 'the demo tab live' });
  return page;
}

/** Waits until `page`'s Documents list shows `name`; returns that entry's meta line. */
async function waitListed(page, name, label) {
  const a = page.locator('#docs li a', { hasText: name });
  await a.waitFor({ timeout: 20_000 }).catch(async (e) => {
    throw new Error(`${label}: ${name} not in the Documents list (it has ${JSON.stringify(await docNames(page))}): ${e.message}`);
  });
  return page.locator('#docs li', { has: page.locator('a', { hasText: name }) }).locator('.meta').textContent({ timeout: 5_000 });
}

/**
 * Clicks the Documents link of `name` in `page`: the demo fetches the content
 * with its token and opens the file as a blob URL. Returns the content
 * answer's status and type, the SHA-256 and size of the blob the page made
 * (URL.createObjectURL is watched), and the URL of the tab it opened, if any.
 */
async function clickDownload(page, name, id) {
  await page.evaluate(() => {
    if (window.__blobWatch) return;
    window.__blobWatch = true;
    const create = URL.createObjectURL.bind(URL);
    URL.createObjectURL = (obj) => {
      window.__lastBlob = obj;
      return create(obj);
    };
  });
  await page.evaluate(() => (window.__lastBlob = null));
  const resp = page.waitForResponse((r) => r.url().includes(`/v2/uploads/${id}/content`) && r.request().method() === 'GET', { timeout: 20_000 });
  const popup = ctx.waitForEvent('page', { timeout: 10_000 }).catch(() => null);
  await page.locator('#docs li a', { hasText: name }).click();
  const r = await resp;
  const blob = await waitFor(
    () =>
      page.evaluate(async () => {
        const b = window.__lastBlob;
        if (!b) return null;
        const d = await crypto.subtle.digest('SHA-256', await b.arrayBuffer());
        return { size: b.size, type: b.type, sha: [...new Uint8Array(d)].map((x) => x.toString(16).padStart(2, '0')).join('') };
      }),
    { timeout: 20_000, what: 'the blob the link made' },
  );
  const opened = await popup;
  let openedUrl = null;
  if (opened) {
    await opened.waitForLoadState('load', { timeout: 10_000 }).catch(() => {});
    openedUrl = opened.url();
    await opened.close().catch(() => {});
  }
  return { status: r.status(), type: r.headers()['content-type'], blob, openedUrl };
}

describe('demo page: upload panel and Documents list in two tabs', { concurrency: false }, () => {
  before(async () => {
    stack = await new Stack().start({ edges: 2 });
    ctx = await stack.newContext();
    tabA = await openDemoTab();
    tabB = await openDemoTab();
    const roles = [await tabA.textContent('#role-pill'), await tabB.textContent('#role-pill')];
    assert.deepEqual(roles, ['leader', 'follower'], 'tab A leads, tab B follows');
    sub = await tabA.evaluate(() => localStorage.getItem('herald-demo-sub'));
    assert.ok(sub, 'the demo user');
    assert.match(await status(tabA), /choose a file/);
  });

  after(async () => {
    if (stack) await stack.stop();
  });

  it('1. PDF in the leader tab: progress, Pause holds, Resume finishes, listed in both tabs, link serves the same bytes', { timeout: 180_000 }, async () => {
    const name = 'quarterly-report.pdf';
    const size = 6 * MiB + 12_345;
    const bytes = fileBytes(size, Buffer.from('%PDF-1.7\n'), 0x9e3779b9);
    const sha = sha256(bytes);
    const token = stack.token({ sub });

    const unthrottle = await throttleUploads(tabA, UPLOAD_BYTES_PER_S);

    const t0 = Date.now();
    await tabA.setInputFiles('#up-file', { name, mimeType: 'application/pdf', buffer: bytes });
    // The bar advances: a first value above 0, then a larger one.
    const p1 = await waitFor(async () => {
      const b = await bar(tabA);
      return b.value > 0 ? b : false;
    }, { timeout: 30_000, interval: 20, what: 'the progress bar above 0' });
    assert.equal(p1.max, size, 'the bar runs to the file size');
    const p2 = await waitFor(async () => {
      const b = await bar(tabA);
      return b.value > p1.value ? b : false;
    }, { timeout: 30_000, interval: 20, what: 'the progress bar advancing' });
    assert.ok(p2.value < size, `still uploading at ${p2.value} of ${size} (throttling in effect)`);
    assert.match(await status(tabA), /^uploading · /);
    assert.equal(await disabled(tabA, 'up-pause'), false, 'Pause enabled while uploading');
    assert.equal(await disabled(tabA, 'up-resume'), true, 'Resume disabled while uploading');

    await tabA.click('#up-pause');
    await waitFor(async () => /^paused · /.test(await status(tabA)), { timeout: 5_000, what: 'the panel saying paused' });
    assert.equal(await disabled(tabA, 'up-pause'), true, 'Pause disabled while paused');
    assert.equal(await disabled(tabA, 'up-resume'), false, 'Resume enabled while paused');
    const uploadUrl = await rememberedUploadUrl(tabA);
    assert.ok(uploadUrl, 'the upload is remembered in the profile');
    const id = new URL(uploadUrl).pathname.split('/').pop();
    await sleep(300); // a PATCH in flight when paused may still land
    const o1 = await headOffset(uploadUrl, token);
    const b1 = await bar(tabA);
    await sleep(1500);
    const o2 = await headOffset(uploadUrl, token);
    const b2 = await bar(tabA);
    assert.equal(o2, o1, 'the edge offset held still while paused');
    assert.equal(b2.value, b1.value, 'the progress bar held still while paused');
    assert.ok(o1 < size, `paused at ${o1} of ${size}`);
    assert.ok(b1.value <= o1, `the bar (${b1.value}) shows no more than the edge has (${o1})`);
    assert.match(await status(tabA), /^paused · /);

    await tabA.click('#up-resume');
    await waitFor(async () => /^uploading · |^done · /.test(await status(tabA)), { timeout: 5_000, what: 'the panel uploading again' });
    await waitFor(async () => /^done · /.test(await status(tabA)), { timeout: 90_000, interval: 100, what: 'the upload done' });
    const tDone = Date.now();
    const bEnd = await bar(tabA);
    assert.deepEqual(bEnd, { value: size, max: size }, 'the bar is full');
    for (const b of ['up-pause', 'up-resume', 'up-abort']) assert.equal(await disabled(tabA, b), true, `${b} disabled once done`);
    await unthrottle();
    assert.equal(await rememberedUploadUrl(tabA), null, 'the finished upload is forgotten');

    // upload.completed reached both tabs: the leader through its connection,
    // the follower over the tab bus.
    const metaA = await waitListed(tabA, name, 'tab A (leader)');
    const metaB = await waitListed(tabB, name, 'tab B (follower)');
    const tListed = Date.now();
    for (const [label, page, meta] of [['tab A', tabA, metaA], ['tab B', tabB, metaB]]) {
      assert.match(meta, /^application\/pdf · 6\.0 MiB · sha256 ([0-9a-f]{12})…$/, `${label} meta line`);
      assert.equal(meta.match(/sha256 ([0-9a-f]{12})/)[1], sha.slice(0, 12), `${label}: the SHA-256 shown is the file's`);
      assert.deepEqual(await docNames(page), [name], `${label}: listed once`);
      assert.equal(await page.textContent('#docs-count'), '1', `${label}: count`);
    }
    assert.equal(
      ctx.__rec.websockets.filter((w) => w.page === tabB).length,
      0,
      'the follower tab opened no WebSocket (the leader holds the connection)',
    );

    // The link serves the same bytes, in both tabs (the page's own fetch with its token) ...
    const dlA = await clickDownload(tabA, name, id);
    assert.equal(dlA.status, 200);
    assert.equal(dlA.type, 'application/pdf');
    assert.deepEqual(dlA.blob, { size, type: 'application/pdf', sha }, 'tab A link: the same bytes');
    const dlB = await clickDownload(tabB, name, id);
    assert.equal(dlB.status, 200);
    assert.deepEqual(dlB.blob, { size, type: 'application/pdf', sha }, 'tab B link: the same bytes');
    for (const dl of [dlA, dlB]) assert.match(dl.openedUrl ?? '', new RegExp(`^blob:${stack.origin}/`), 'the link opens the file in a new tab');
    // ... and from Node, through the other edge.
    const r = await fetch(`${stack.edges[1].url}/v2/uploads/${id}/content`, {
      headers: { Authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(30_000),
    });
    const viaNode = Buffer.from(await r.arrayBuffer());
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('etag'), `"${sha}"`);
    assert.equal(sha256(viaNode), sha, 'GET content from Node: same SHA-256');

    stack.figure(
      'demo upload 1',
      `${name} ${size} B from the leader tab at ${(UPLOAD_BYTES_PER_S / MiB).toFixed(1)} MiB/s: bar ${p1.value} → ${p2.value}, paused at ${o1} B (edge and bar held for 1.5 s), ` +
        `resumed, done in ${tDone - t0} ms; listed in both tabs ${tListed - tDone} ms later; link in each tab and GET from Node: same SHA-256 ` +
        `(link opened ${dlA.openedUrl ? dlA.openedUrl.replace(/[0-9a-f-]{36}$/, '…') : 'no tab'})`,
    );
  });

  it('2. PNG in the follower tab: uploaded from there, listed in both tabs', { timeout: 120_000 }, async () => {
    const name = 'floor-plan.png';
    const size = 300 * KiB + 7;
    const bytes = fileBytes(size, Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex'), 0x1234567);
    const sha = sha256(bytes);
    const uploads = [];
    const onReq = (page) => (req) => {
      if (req.url().includes('/v2/uploads') && req.method() !== 'OPTIONS') uploads.push({ page, method: req.method() });
    };
    const offA = onReq('A');
    const offB = onReq('B');
    tabA.on('request', offA);
    tabB.on('request', offB);
    try {
      await tabB.setInputFiles('#up-file', { name, mimeType: 'image/png', buffer: bytes });
      await waitFor(async () => /^done · |^error · /.test(await status(tabB)), { timeout: 60_000, interval: 100, what: 'the upload in tab B done' });
      assert.match(await status(tabB), /^done · /);
    } finally {
      tabA.off('request', offA);
      tabB.off('request', offB);
    }
    assert.ok(uploads.length > 0 && uploads.every((u) => u.page === 'B'), `upload requests come from tab B only: ${JSON.stringify(uploads.slice(0, 5))}`);
    // Tab A's panel still shows its own (finished) upload.
    assert.match(await status(tabA), /^done · 6\.0 MiB of 6\.0 MiB$/);
    for (const [label, page] of [['tab A (leader)', tabA], ['tab B (follower)', tabB]]) {
      const meta = await waitListed(page, name, label);
      assert.match(meta, /^image\/png · 300\.0 KiB · sha256 [0-9a-f]{12}…$/, `${label} meta line`);
      assert.equal(meta.match(/sha256 ([0-9a-f]{12})/)[1], sha.slice(0, 12));
      assert.deepEqual(await docNames(page), [name, 'quarterly-report.pdf'], `${label}: newest first, each once`);
      assert.equal(await page.textContent('#docs-count'), '2');
    }
    stack.figure('demo upload 2', `${name} ${size} B from the follower tab (${uploads.length} upload requests, all from it); listed in both tabs`);
  });

  it('3. Abort mid-upload: aborted in the panel, gone on the edge, not listed', { timeout: 120_000 }, async () => {
    const name = 'draft-contract.pdf';
    const size = 4 * MiB + 1;
    const bytes = fileBytes(size, Buffer.from('%PDF-1.4\n'), 0xabcdef);
    const token = stack.token({ sub });
    const unthrottle = await throttleUploads(tabA, UPLOAD_BYTES_PER_S);
    const rec = recordUploadRequests(tabA);
    let uploadUrl;
    try {
      await tabA.setInputFiles('#up-file', { name, mimeType: 'application/pdf', buffer: bytes });
      const b = await waitBarAbove(tabA, 0, 'the progress bar above 0');
      assert.equal(b.max, size);
      uploadUrl = await rememberedUploadUrl(tabA);
      assert.ok(uploadUrl, 'the upload is remembered');
      assert.equal(await disabled(tabA, 'up-abort'), false, 'Abort enabled while uploading');
      await tabA.click('#up-abort');
      await waitFor(async () => /^aborted · /.test(await status(tabA)), { timeout: 5_000, what: 'the panel saying aborted' });
      for (const id of ['up-pause', 'up-resume', 'up-abort']) assert.equal(await disabled(tabA, id), true, `${id} disabled once aborted`);
      await waitFor(() => rec.reqs.some((q) => q.method === 'DELETE' && q.url === uploadUrl), { timeout: 10_000, what: 'the DELETE of the upload' });
    } finally {
      rec.stop();
      await unthrottle();
    }
    assert.equal(await rememberedUploadUrl(tabA), null, 'the aborted upload is forgotten in the profile');
    const r = await waitFor(async () => {
      const res = await fetch(uploadUrl, { method: 'HEAD', headers: { Authorization: `Bearer ${token}`, 'Tus-Resumable': '1.0.0' } });
      return res.status === 404 ? res : false;
    }, { timeout: 10_000, what: 'HEAD of the aborted upload answering 404' });
    assert.equal(r.status, 404);
    await sleep(500);
    for (const page of [tabA, tabB]) {
      assert.deepEqual(await docNames(page), ['floor-plan.png', 'quarterly-report.pdf'], 'the aborted file is not listed');
    }
    stack.figure('demo upload 3', `${name}: aborted at ${rec.reqs.filter((q) => q.method === 'PATCH').length} PATCHes, DELETE sent, HEAD 404, not listed`);
  });

  it('4. reload mid-upload, the same file chosen again: continues (HEAD, no POST), listed in both tabs', { timeout: 180_000 }, async () => {
    // From disk, so that the File keeps its lastModified across the reload
    // (the SDK's fingerprint: name, size, lastModified, type).
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-demo-upload-'));
    try {
      const name = 'signed-contract.pdf';
      const size = 5 * MiB + 77;
      const bytes = fileBytes(size, Buffer.from('%PDF-1.7\n'), 0x5eed);
      const sha = sha256(bytes);
      const file = path.join(dir, name);
      fs.writeFileSync(file, bytes);
      const token = stack.token({ sub });

      let unthrottle = await throttleUploads(tabA, UPLOAD_BYTES_PER_S);
      await tabA.setInputFiles('#up-file', file);
      const b = await waitBarAbove(tabA, 256 * KiB, 'the progress bar past 256 KiB');
      assert.ok(b.value < size);
      const uploadUrl = await rememberedUploadUrl(tabA);
      assert.ok(uploadUrl, 'the upload is remembered');
      await unthrottle();

      await tabA.reload();
      await waitFor(async () => (await tabA.textContent('#st-status')) === 'live', { timeout: 20_000, what: 'tab A live after the reload' });
      assert.match(await status(tabA), /choose a file/, 'a fresh panel after the reload');
      const atReload = await headOffset(uploadUrl, token);
      assert.ok(atReload > 0 && atReload < size, `edge offset ${atReload} at the reload`);
      assert.equal(await rememberedUploadUrl(tabA), uploadUrl, 'still remembered after the reload');

      const rec = recordUploadRequests(tabA);
      unthrottle = await throttleUploads(tabA, 4 * UPLOAD_BYTES_PER_S);
      try {
        await tabA.setInputFiles('#up-file', file);
        // The bar starts where the edge stopped, not at 0.
        const first = await waitBarAbove(tabA, 0, 'the progress bar after choosing the file again');
        assert.ok(first.value >= atReload, `the bar resumed at ${first.value} (edge had ${atReload})`);
        await waitFor(async () => /^done · |^error · /.test(await status(tabA)), { timeout: 90_000, interval: 100, what: 'the resumed upload done' });
        assert.match(await status(tabA), /^done · /);
      } finally {
        rec.stop();
        await unthrottle();
      }
      assert.equal(rec.reqs[0]?.method, 'HEAD', `first request after choosing the file again: ${JSON.stringify(rec.reqs.slice(0, 3))}`);
      assert.equal(rec.reqs[0].url, uploadUrl);
      assert.equal(rec.reqs.filter((q) => q.method === 'POST').length, 0, 'nothing created anew');
      const id = new URL(uploadUrl).pathname.split('/').pop();

      const metaA = await waitListed(tabA, name, 'tab A (reloaded)');
      const metaB = await waitListed(tabB, name, 'tab B');
      for (const meta of [metaA, metaB]) assert.equal(meta.match(/sha256 ([0-9a-f]{12})/)?.[1], sha.slice(0, 12));
      // Tab A's list starts empty after the reload: it shows what completed since.
      assert.deepEqual(await docNames(tabA), [name]);
      assert.deepEqual(await docNames(tabB), [name, 'floor-plan.png', 'quarterly-report.pdf']);
      const r = await fetch(`${stack.edges[1].url}/v2/uploads/${id}/content`, { headers: { Authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(30_000) });
      const got = Buffer.from(await r.arrayBuffer());
      assert.equal(r.status, 200);
      assert.equal(sha256(got), sha, 'the resumed file reads back whole');
      const roles = [await tabA.textContent('#role-pill'), await tabB.textContent('#role-pill')];
      stack.figure(
        'demo upload 4',
        `${name} ${size} B: reloaded at ${atReload} B, chosen again: HEAD then ${rec.reqs.length - 1} PATCHes, same id, SHA-256 matches; listed in both tabs (roles now A ${roles[0]}, B ${roles[1]})`,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('no page error or console error in the demo tabs, no bad Authorization', () => {
    const rec = ctx.__rec;
    const errors = rec.console.filter((l) => l.startsWith('error:'));
    assert.deepEqual(rec.pageErrors, [], 'page errors');
    assert.deepEqual(errors, [], 'console errors');
    assert.deepEqual(stack.violations, []);
  });
});
