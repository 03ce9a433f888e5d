// Real-browser end-to-end tests of the Herald browser SDK: a real nats-server,
// real herald-edge nodes, the demo server and headless Chromium. Scenarios run
// in order on one stack; each prints its figures ([e2e] lines) and a summary
// is printed at the end.
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { ORG, SERVICES, Stack, T, checkDelivery, findLeader, freePort, quantile, sleep, waitFor, waitSettled } from '../harness.mjs';
import { captureDemo } from '../demo-shot.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..', '..', '..');

let stack;

const ms = (x) => (Number.isFinite(x) ? `${Math.round(x)} ms` : 'n/a');

/** Publishes one event every `everyMs` until stop() is called; returns the published list. */
function publishLoop(stack, { run, everyMs = 40, edge = null, services = SERVICES } = {}) {
  const published = [];
  const errors = [];
  let stopped = false;
  let n = 0;
  const done = (async () => {
    while (!stopped) {
      const service = services[n % services.length];
      const eventId = `${run}-${n}`;
      n++;
      try {
        const target = typeof edge === 'function' ? edge() : edge;
        published.push(await stack.publish({ service, propertyId: n % 3 ? 'lisbon' : null, eventType: 'item.created', eventId, payload: { run }, edge: target ?? undefined }));
      } catch (err) {
        // a publish to an edge that was just killed: retry the same eventId elsewhere
        errors.push(String(err.message));
        try {
          const live = stack.edges.filter((e) => e.child.running);
          published.push(await stack.publish({ service, propertyId: n % 3 ? 'lisbon' : null, eventType: 'item.created', eventId, payload: { run }, edge: live[live.length - 1] }));
        } catch (err2) {
          errors.push(String(err2.message));
        }
      }
      await sleep(everyMs);
    }
  })();
  return {
    published,
    errors,
    async stop() {
      stopped = true;
      await done;
      // a retried publish may have answered duplicate: keep one entry per seq
      const seen = new Set();
      return published.filter((p) => (seen.has(p.seq) ? false : (seen.add(p.seq), true)));
    },
  };
}

async function waitAllDelivered(pages, run, published, { timeout = 15_000 } = {}) {
  const want = new Set(published.map((p) => p.seq));
  await waitFor(
    async () => {
      for (const p of pages) {
        const evs = await T.events(p, run);
        const got = new Set(evs.map((e) => e.seq));
        for (const s of want) if (!got.has(s)) return false;
      }
      return true;
    },
    { timeout, what: `${published.length} events of ${run} in ${pages.length} tab(s)` },
  );
  await sleep(300); // let any duplicate show up before checking
  const problems = [];
  for (const [i, p] of pages.entries()) {
    const evs = await T.events(p, run);
    const pb = checkDelivery(published, evs, `tab ${i}`);
    if (pb) problems.push(pb);
  }
  return problems;
}

function pageRequests(ctx, pages, since = 0) {
  const set = new Set(pages);
  return ctx.__rec.requests.filter((r) => r.t >= since && r.page && set.has(r.page));
}

describe('Herald browser SDK in Chromium', { concurrency: false }, () => {
  before(async () => {
    stack = new Stack(); // assigned first: `after` stops whatever started, even when start() fails
    await stack.start({ edges: 2 });
  });

  after(async () => {
    if (!stack) return;
    console.log('\n[e2e] ===== figures =====');
    for (const f of stack.figures) console.log(`[e2e] ${f}`);
    console.log('[e2e] ===================');
    await stack.stop();
  });

  it('1. five tabs in one profile: one server connection, every tab gets every event', { timeout: 60_000 }, async () => {
    const ctx = await stack.newContext();
    try {
      const t0 = Date.now();
      const pages = [];
      for (let i = 0; i < 5; i++) pages.push(await stack.openTab(ctx, { sub: 's1-user' }));
      await waitSettled(pages);
      const settledMs = Date.now() - t0;
      const conns = await waitFor(
        async () => {
          const c = await stack.connections();
          return c.websocket === 1 && c.sse === 0 && c.longpoll === 0 ? c : false;
        },
        { timeout: 5000, what: 'exactly one WebSocket across both edges' },
      );
      await sleep(1000);
      const again = await stack.connections();
      assert.equal(again.websocket, 1, `one WebSocket across both edges after 1 s, got ${JSON.stringify(again)}`);
      assert.equal(ctx.__rec.websockets.length, 1, 'the browser opened exactly one WebSocket');
      const leader = await findLeader(pages);
      assert.equal(ctx.__rec.websockets[0].page, leader, 'the WebSocket belongs to the leader tab');
      const followers = pages.filter((p) => p !== leader);
      const edgeHosts = new Set(stack.edgeUrls.map((u) => new URL(u).host));
      const followerEdgeRequests = pageRequests(ctx, followers).filter((r) => edgeHosts.has(new URL(r.url).host));
      assert.deepEqual(followerEdgeRequests.map((r) => r.url), [], 'followers send nothing to the edges');

      const run = 's1';
      const published = [];
      for (let k = 0; k < 20; k++) {
        published.push(await stack.publish({ service: SERVICES[k % 4], propertyId: k % 3 ? 'lisbon' : null, eventType: 'item.created', payload: { run } }));
      }
      const problems = await waitAllDelivered(pages, run, published);
      assert.deepEqual(problems, []);
      const lat = [];
      for (const p of pages) for (const e of await T.events(p, run)) lat.push(e.t - e.sentAt);
      stack.figure(
        '1 five tabs',
        `5 tabs live with one leader in ${ms(settledMs)}; WebSockets at the server ${again.websocket} (${JSON.stringify(conns.perEdge)}), ` +
          `opened by the browser ${ctx.__rec.websockets.length}, edge requests from the 4 followers ${followerEdgeRequests.length}; ` +
          `20/20 events in each of 5 tabs; publish→tab p50 ${ms(quantile(lat, 0.5))}, p95 ${ms(quantile(lat, 0.95))}, max ${ms(Math.max(...lat))}`,
      );
    } finally {
      await stack.closeContext(ctx);
    }
  });

  it('2. leader closed, then leader crashed: new leader within 3 s, nothing lost or doubled', { timeout: 90_000 }, async () => {
    const ctx = await stack.newContext();
    try {
      const pages = [];
      for (let i = 0; i < 4; i++) pages.push(await stack.openTab(ctx, { sub: 's2-user' }));
      await waitSettled(pages);

      async function handover(label, kill) {
        const run = `s2-${label}`;
        const leader = await findLeader(pages);
        assert.ok(leader, 'a leader');
        const oldConn = (await T.state(leader)).connectionId;
        const rest = pages.filter((p) => p !== leader);
        const loop = publishLoop(stack, { run, everyMs: 40 });
        await sleep(700);
        const tKill = Date.now();
        const how = await kill(leader);
        pages.splice(pages.indexOf(leader), 1);
        // new leader: the first 'leader' entry after tKill in a remaining tab's state log
        const newLeader = await waitFor(() => findLeader(rest), { timeout: 5000, interval: 20, what: 'a new leader' });
        const log = await T.log(newLeader);
        const became = log.find((e) => e.t >= tKill && e.role === 'leader');
        const leaderMs = (became?.t ?? Date.now()) - tKill;
        await waitFor(
          async () => {
            const s = await T.state(newLeader);
            return s.status === 'live' && s.connectionId && s.connectionId !== oldConn ? s : false;
          },
          { timeout: 10_000, interval: 20, what: 'the new leader live on a new connection' },
        );
        const liveMs = Date.now() - tKill;
        await sleep(1000);
        const published = await loop.stop();
        const problems = await waitAllDelivered(rest, run, published);
        assert.deepEqual(problems, [], `${label}: delivery in the remaining tabs`);
        assert.ok(leaderMs <= 3000, `${label}: new leader after ${leaderMs} ms (limit 3000)`);
        stack.figure(
          `2 handover (${label})`,
          `${how}; new leader after ${ms(leaderMs)}, its connection live after ${ms(liveMs)}; ${published.length} events published during the handover, ` +
            `all received once and in order by the ${rest.length} remaining tabs`,
        );
      }

      await handover('closed', async (leader) => {
        await leader.close({ runBeforeUnload: false });
        return 'leader tab closed (page.close, no beforeunload)';
      });

      await handover('crashed', async (leader) => {
        // A renderer crash through CDP when the leader has a renderer of its
        // own; otherwise freeze its event loop and then close it.
        const cdp = await ctx.newCDPSession(leader);
        const others = pages.filter((p) => p !== leader);
        const crashed = new Promise((r) => leader.once('crash', () => r(true)));
        cdp.send('Page.crash').catch(() => {});
        const ok = await Promise.race([crashed, sleep(3000).then(() => false)]);
        // every other tab must still be alive (not sharing the crashed renderer)
        for (const p of others) await p.evaluate(() => 1);
        if (ok) {
          await sleep(200);
          await leader.close({ runBeforeUnload: false }).catch(() => {});
          return 'leader renderer crashed (CDP Page.crash), tab closed 200 ms later';
        }
        leader.evaluate(() => {
          for (;;);
        }).catch(() => {});
        await sleep(500);
        await leader.close({ runBeforeUnload: false });
        return 'leader frozen (busy loop) 500 ms, then closed';
      });
    } finally {
      await stack.closeContext(ctx);
    }
  });

  it('3. create/update/delete reach another tab; latency publish → follower', { timeout: 60_000 }, async () => {
    const ctx = await stack.newContext();
    try {
      const pages = [await stack.openTab(ctx, { sub: 's3-user' }), await stack.openTab(ctx, { sub: 's3-user' })];
      await waitSettled(pages);
      const leader = await findLeader(pages);
      const follower = pages.find((p) => p !== leader);
      const run = 's3';
      const published = [];
      for (let i = 0; i < 30; i++) {
        for (const verb of ['created', 'updated', 'deleted']) {
          published.push(
            await stack.publish({
              service: 'tasks',
              propertyId: 'lisbon',
              eventType: `task.${verb}`,
              entityType: 'task',
              entityId: `t-${i}`,
              payload: { run, title: `task ${i}`, verb },
            }),
          );
          await sleep(25);
        }
      }
      const problems = await waitAllDelivered(pages, run, published);
      assert.deepEqual(problems, []);
      const fev = await T.events(follower, run);
      const lev = await T.events(leader, run);
      // per entity: created, updated, deleted in that order
      for (let i = 0; i < 30; i++) {
        const types = fev.filter((e) => e.entityId === `t-${i}`).map((e) => e.eventType);
        assert.deepEqual(types, ['task.created', 'task.updated', 'task.deleted'], `entity t-${i} in the follower`);
      }
      const fl = fev.map((e) => e.t - e.sentAt);
      const ll = lev.map((e) => e.t - e.sentAt);
      const st = await T.state(follower);
      stack.figure(
        '3 create/update/delete',
        `${published.length} events (30 entities × created/updated/deleted) in order in both tabs; publish→follower tab p50 ${ms(quantile(fl, 0.5))}, ` +
          `p95 ${ms(quantile(fl, 0.95))}, max ${ms(Math.max(...fl))}; publish→leader tab p50 ${ms(quantile(ll, 0.5))}, p95 ${ms(quantile(ll, 0.95))}; ` +
          `SDK p95 (tasks, follower) ${ms(st.services?.tasks?.p95LatencyMs)}`,
      );
    } finally {
      await stack.closeContext(ctx);
    }
  });

  it('4. property filter, and changing it without a reconnect', { timeout: 60_000 }, async () => {
    const ctx = await stack.newContext();
    try {
      const page = await stack.openTab(ctx, { sub: 's4-user', propertyId: 'lisbon' });
      const [st0] = await waitSettled([page]);
      const c0 = await waitFor(
        async () => {
          const c = await stack.connections();
          return c.websocket === 1 ? c : false;
        },
        { timeout: 5000, what: 'one WebSocket at the server' },
      );
      const ws0 = ctx.__rec.websockets.length;
      const run = 's4';
      const pub = (propertyId, tag) => stack.publish({ service: 'finance', propertyId, eventType: 'expense.created', eventId: `${run}-${tag}-${Date.now()}`, payload: { run, tag } });
      const tags = async () => (await T.events(page, run)).map((e) => e.eventId.split('-')[1]);

      async function round(filter, sends, expect) {
        const before = (await T.events(page, run)).length;
        let t0 = Date.now();
        if (filter !== undefined) {
          const framesBefore = ctx.__rec.websockets.at(-1).received.length;
          t0 = Date.now();
          await page.evaluate((f) => window.T.setPropertyFilter(f), filter);
          // the server confirms the in-place update with an `updated` frame
          await waitFor(() => ctx.__rec.websockets.at(-1).received.slice(framesBefore).some((f) => f.payload.includes('"updated"')), {
            timeout: 5000,
            what: 'the `updated` answer',
          });
        }
        const updatedMs = Date.now() - t0;
        for (const [prop, tag] of sends) await pub(prop, tag);
        await waitFor(async () => (await T.events(page, run)).length >= before + expect.length, { timeout: 5000, what: `events ${expect}` });
        await sleep(500);
        const got = (await tags()).slice(before);
        assert.deepEqual(got, expect, `filter ${filter}: received`);
        return updatedMs;
      }

      await round(undefined, [['lisbon', 'A1'], ['porto', 'B1'], [null, 'O1']], ['A1', 'O1']);
      const u1 = await round('porto', [['lisbon', 'A2'], ['porto', 'B2'], [null, 'O2']], ['B2', 'O2']);
      const u2 = await round(null, [['lisbon', 'A3'], ['porto', 'B3'], [null, 'O3']], ['A3', 'B3', 'O3']);

      const st1 = await T.state(page);
      const c1 = await stack.connections();
      assert.equal(st1.connectionId, st0.connectionId, 'same connectionId');
      assert.equal(ctx.__rec.websockets.length, ws0, 'no new WebSocket');
      assert.equal(c1.websocket, c0.websocket, 'same server connection count');
      stack.figure(
        '4 property filter',
        `lisbon → porto → all: received exactly the matching events (plus org-wide) each time; filter change acknowledged (updated) in ${ms(u1)} and ${ms(u2)}; ` +
          `connectionId unchanged (${st1.connectionId}), WebSockets opened ${ctx.__rec.websockets.length}, server connections ${c1.websocket}`,
      );
    } finally {
      await stack.closeContext(ctx);
    }
  });

  it('5. logout in one tab stops every tab within 200 ms; no bad Authorization ever', { timeout: 60_000 }, async () => {
    const ctx = await stack.newContext();
    try {
      const pages = [];
      for (let i = 0; i < 4; i++) pages.push(await stack.openTab(ctx, { sub: 's5-user' }));
      await waitSettled(pages);
      // a few events first, so requests and frames are flowing
      const run = 's5';
      const published = [];
      for (let k = 0; k < 4; k++) published.push(await stack.publish({ service: SERVICES[k], eventType: 'item.created', payload: { run } }));
      assert.deepEqual(await waitAllDelivered(pages, run, published), []);

      const leader = await findLeader(pages);
      const from = pages.find((p) => p !== leader); // log out from a follower tab
      const others = pages.filter((p) => p !== from);
      const wsOpenAtLogout = ctx.__rec.websockets.filter((w) => !w.closed).length;
      const tLogout = await from.evaluate(() => window.T.logout());
      await waitFor(async () => (await Promise.all(others.map((p) => T.state(p)))).every((s) => s.status === 'stopped'), {
        timeout: 2000,
        interval: 10,
        what: 'every other tab stopped',
      });
      const delays = [];
      for (const p of others) {
        const log = await T.log(p);
        const stopped = log.find((e) => e.t >= tLogout - 5 && e.status === 'stopped');
        delays.push(stopped.t - tLogout);
      }
      const tStopped = tLogout + Math.max(...delays);
      await sleep(3000);
      const late = pageRequests(ctx, pages, tStopped + 20);
      const lateWs = ctx.__rec.websockets.filter((w) => w.t > tLogout);
      const stillOpen = ctx.__rec.websockets.filter((w) => !w.closed);
      const conns = await waitFor(
        async () => {
          const c = await stack.connections();
          return c.websocket + c.sse + c.longpoll === 0 ? c : false;
        },
        { timeout: 5000, what: 'no connection left at the server' },
      );
      const selfState = await T.state(from);
      assert.equal(selfState.status, 'stopped', 'the tab that logged out is stopped');
      assert.ok(Math.max(...delays) <= 200, `every other tab stopped within 200 ms: ${JSON.stringify(delays)}`);
      assert.deepEqual(late.map((r) => `${r.method} ${r.url}`), [], 'no request after the stop');
      assert.equal(lateWs.length, 0, 'no WebSocket opened after the logout');
      assert.equal(stillOpen.length, 0, 'no WebSocket left open');
      const inspected = ctx.__rec.requests.length + ctx.__rec.websockets.length;
      assert.deepEqual(stack.violations, [], 'no request with an empty or malformed Authorization header or token parameter');
      stack.figure(
        '5 logout',
        `logout from a follower: other tabs stopped after ${delays.map(ms).join(', ')} (max ${ms(Math.max(...delays))}); ` +
          `WebSockets open at logout ${wsOpenAtLogout}, after ${stillOpen.length}; requests in the 3 s after ${late.length}; server connections after ${conns.websocket + conns.sse + conns.longpoll}; ` +
          `${inspected} requests in this profile inspected, bad Authorization/token seen so far: ${stack.violations.length}`,
      );
    } finally {
      await stack.closeContext(ctx);
    }
  });

  it('6. long-poll: waits 2–5 s after a fast empty answer', { timeout: 60_000 }, async () => {
    const ctx = await stack.newContext();
    try {
      // The edge holds a poll for the client's `timeout`; rewrite a held poll's
      // timeout to 1 s so that every empty answer is a fast one (< 1.5 s), as
      // from an edge or proxy that cannot hold polls. (The first poll of a
      // chain asks for timeout=0, an immediate answer, and is left alone.)
      const polls = [];
      await ctx.route('**/v1/realtime/poll**', async (route) => {
        const u = new URL(route.request().url());
        const entry = { t: Date.now(), timeoutAsked: u.searchParams.get('timeout'), lastSeq: u.searchParams.get('lastSeq') };
        polls.push(entry);
        entry.held = Number(entry.timeoutAsked ?? 25) > 0;
        if (entry.held) u.searchParams.set('timeout', '1');
        try {
          const resp = await route.fetch({ url: u.toString(), timeout: 30_000 });
          const body = await resp.text();
          entry.done = Date.now();
          entry.status = resp.status();
          try {
            entry.events = JSON.parse(body).events?.length ?? null;
          } catch {
            entry.events = null;
          }
          await route.fulfill({ response: resp, body });
        } catch (err) {
          entry.done = Date.now();
          entry.error = String(err.message);
          await route.abort().catch(() => {});
        }
      });
      const page = await stack.openTab(ctx, { sub: 's6-user', transports: ['longpoll'] });
      await waitSettled([page], { timeout: 20_000 });
      const st = await T.state(page);
      assert.equal(st.transport, 'longpoll');
      const winStart = Date.now();
      await sleep(16_000);
      const inWindow = polls.filter((p) => p.t >= winStart && p.t < winStart + 16_000);
      const gaps = [];
      for (let i = 1; i < polls.length; i++) {
        const prev = polls[i - 1];
        if (polls[i].t < winStart - 6000) continue;
        if (prev.held && prev.status === 200 && prev.events === 0 && prev.done - prev.t < 1500) gaps.push(polls[i].t - prev.done);
      }
      assert.ok(gaps.length >= 2, `at least two fast empty answers observed, got ${gaps.length}: ${JSON.stringify(polls)}`);
      for (const g of gaps) assert.ok(g >= 1900 && g <= 5600, `wait after a fast empty answer ${g} ms, want 2–5 s; gaps ${JSON.stringify(gaps)}`);
      assert.ok(inWindow.length <= 8, `${inWindow.length} polls in 16 s (an unthrottled client would make ~16)`);

      // events still arrive on this chain
      const run = 's6';
      const published = [await stack.publish({ service: 'guest', propertyId: 'porto', eventType: 'guest.checked_in', payload: { run } })];
      const tPub = Date.now();
      assert.deepEqual(await waitAllDelivered([page], run, published, { timeout: 10_000 }), []);
      const evLatency = (await T.events(page, run))[0].t - tPub;
      stack.figure(
        '6 long-poll backoff',
        `${inWindow.length} polls in a 16 s window with 1 s server holds; waits after fast empty answers ${gaps.map(ms).join(', ')} ` +
          `(client asked timeout=${polls.map((p) => p.timeoutAsked).join(',')}); an event published mid-wait arrived after ${ms(evLatency)}`,
      );
    } finally {
      await stack.closeContext(ctx);
    }
  });

  it('7. offline then online: resumes with nothing lost', { timeout: 60_000 }, async () => {
    const ctx = await stack.newContext();
    try {
      const pages = [await stack.openTab(ctx, { sub: 's7-user' }), await stack.openTab(ctx, { sub: 's7-user' })];
      await waitSettled(pages);
      const leader = await findLeader(pages);
      const before = await T.state(leader);
      const run = 's7';
      const published = [];
      for (let k = 0; k < 3; k++) published.push(await stack.publish({ service: SERVICES[k], eventType: 'item.created', payload: { run } }));
      await waitAllDelivered(pages, run, published);
      const tOff = Date.now();
      await ctx.setOffline(true);
      let offlineSeen = null;
      try {
        offlineSeen = await waitFor(
          async () => {
            const s = await T.state(leader);
            return s.status !== 'live' ? s.status : false;
          },
          { timeout: 8000, interval: 20, what: 'the leader to notice' },
        );
      } catch {
        offlineSeen = null;
      }
      const noticeMs = Date.now() - tOff;
      for (let k = 0; k < 10; k++) {
        published.push(await stack.publish({ service: SERVICES[k % 4], propertyId: 'seville', eventType: 'item.updated', payload: { run, k } }));
        await sleep(100);
      }
      await sleep(1500);
      const tOn = Date.now();
      await ctx.setOffline(false);
      const problems = await waitAllDelivered(pages, run, published, { timeout: 30_000 });
      const allMs = Date.now() - tOn;
      assert.deepEqual(problems, []);
      const after = await waitSettled(pages);
      const leaderAfter = after.find((s) => s.role === 'leader');
      stack.figure(
        '7 offline/online',
        `offline noticed as '${offlineSeen ?? 'no change'}' after ${offlineSeen ? ms(noticeMs) : 'n/a'}; 10 events published while offline; ` +
          `all 13 received once and in order by both tabs ${ms(allMs)} after going online; connection ${before.connectionId} → ${leaderAfter.connectionId} (${leaderAfter.transport})`,
      );
    } finally {
      await ctx.setOffline(false).catch(() => {});
      await stack.closeContext(ctx);
    }
  });

  it('8a. WebSocket blocked in the browser: falls back and events flow', { timeout: 60_000 }, async () => {
    const ctx = await stack.newContext();
    try {
      // A network that kills every WebSocket handshake: the socket errors and
      // closes with 1006 before it opens.
      await ctx.addInitScript(() => {
        class BlockedWebSocket extends EventTarget {
          static CONNECTING = 0;
          static OPEN = 1;
          static CLOSING = 2;
          static CLOSED = 3;
          readyState = 0;
          protocol = '';
          extensions = '';
          bufferedAmount = 0;
          binaryType = 'blob';
          onopen = null;
          onmessage = null;
          onerror = null;
          onclose = null;
          constructor(url) {
            super();
            this.url = String(url);
            window.__blockedWebSockets = (window.__blockedWebSockets ?? 0) + 1;
            setTimeout(() => {
              this.readyState = 3;
              const err = new Event('error');
              this.onerror?.(err);
              this.dispatchEvent(err);
              const close = new CloseEvent('close', { code: 1006, reason: '', wasClean: false });
              this.onclose?.(close);
              this.dispatchEvent(close);
            }, 20);
          }
          send() {
            throw new DOMException('not open', 'InvalidStateError');
          }
          close() {}
        }
        window.WebSocket = BlockedWebSocket;
      });
      const t0 = Date.now();
      const page = await stack.openTab(ctx, { sub: 's8-user' });
      const [st] = await waitSettled([page], { timeout: 30_000 });
      const liveMs = Date.now() - t0;
      assert.notEqual(st.transport, 'websocket');
      const run = 's8a';
      const published = [];
      for (let k = 0; k < 5; k++) published.push(await stack.publish({ service: SERVICES[k % 4], eventType: 'item.created', payload: { run } }));
      assert.deepEqual(await waitAllDelivered([page], run, published), []);
      const attempts = await page.evaluate(() => window.__blockedWebSockets ?? 0);
      const conns = await stack.connections();
      stack.figure(
        '8a WebSocket blocked',
        `${attempts} WebSocket attempt(s) failed, live on ${st.transport} after ${ms(liveMs)}; 5/5 events delivered; server connections ${JSON.stringify({ ws: conns.websocket, sse: conns.sse, longpoll: conns.longpoll })}`,
      );
    } finally {
      await stack.closeContext(ctx);
    }
  });

  it('8b. edge with the kill switch (HERALD_DISABLED, close 4503): falls back and events flow', { timeout: 60_000 }, async () => {
    const ctx = await stack.newContext();
    const port = await freePort();
    const disabled = await stack.startEdge('edge-disabled', port, { HERALD_DISABLED: 'true' });
    try {
      const t0 = Date.now();
      const page = await stack.openTab(ctx, { sub: 's8b-user', urls: [disabled.url] });
      // long-poll as a fallback counts as 'degraded' in the SDK
      const [st] = await waitSettled([page], { timeout: 30_000, statuses: ['live', 'degraded'] });
      const liveMs = Date.now() - t0;
      assert.notEqual(st.transport, 'websocket');
      const run = 's8b';
      const published = [];
      for (let k = 0; k < 5; k++) published.push(await stack.publish({ service: SERVICES[k % 4], eventType: 'item.created', payload: { run } }));
      assert.deepEqual(await waitAllDelivered([page], run, published, { timeout: 20_000 }), []);
      const log = await T.log(page);
      const transports = [...new Set(log.map((e) => e.transport).filter(Boolean))];
      const sse = ctx.__rec.requests.filter((r) => r.url.includes('/v2/realtime/sse')).length;
      const polls = ctx.__rec.requests.filter((r) => r.url.includes('/v1/realtime/poll')).length;
      stack.figure(
        '8b kill switch',
        `WebSocket attempts ${ctx.__rec.websockets.length} (closed 4503), SSE requests ${sse}, polls ${polls}; transports seen ${transports.join(' → ')}; ` +
          `${st.status} on ${st.transport} after ${ms(liveMs)}; 5/5 events delivered`,
      );
    } finally {
      await stack.closeContext(ctx);
      await disabled.child.stop('SIGKILL');
      stack.edges.splice(stack.edges.indexOf(disabled), 1);
    }
  });

  it('9. the edge serving the leader is killed (SIGKILL): resume on the other, nothing lost', { timeout: 90_000 }, async () => {
    const ctx = await stack.newContext();
    let killed = null;
    try {
      const pages = [await stack.openTab(ctx, { sub: 's9-user' }), await stack.openTab(ctx, { sub: 's9-user' })];
      await waitSettled(pages);
      const leader = await findLeader(pages);
      const st0 = await T.state(leader);
      killed = stack.edgeByUrl(st0.url);
      assert.ok(killed, `the leader's url ${st0.url} is one of the edges`);
      const other = stack.edges.find((e) => e !== killed && e.child.running);
      const run = 's9';
      const loop = publishLoop(stack, { run, everyMs: 50, edge: other });
      await sleep(600);
      const tKill = Date.now();
      await killed.child.stop('SIGKILL');
      const st1 = await waitFor(
        async () => {
          const s = await T.state(leader);
          return s.status === 'live' && s.connectionId !== st0.connectionId ? s : false;
        },
        { timeout: 20_000, interval: 20, what: 'the leader live again' },
      );
      const resumeMs = Date.now() - tKill;
      await sleep(1000);
      const published = await loop.stop();
      const problems = await waitAllDelivered(pages, run, published);
      assert.deepEqual(problems, []);
      assert.equal(stack.edgeByUrl(st1.url), other, 'reconnected to the other edge');
      stack.figure(
        '9 edge killed',
        `${killed.name} (serving the leader) SIGKILLed; live again on ${other.name} (${st1.transport}) after ${ms(resumeMs)}; ` +
          `${published.length} events published meanwhile, all received once and in order by both tabs`,
      );
    } finally {
      await stack.closeContext(ctx);
      if (killed && !killed.child.running) await stack.startEdge(killed.name, killed.port);
    }
  });

  it('10. token refresh on a short-lived token keeps the connection', { timeout: 60_000 }, async () => {
    const ctx = await stack.newContext();
    try {
      // first token lives 62 s: the edge asks for a refresh at once (< 60 s left)
      const page = await stack.openTab(ctx, { sub: 's10-user', tokenTtls: [62, 3600] });
      const [st0] = await waitSettled([page]);
      const calls = await waitFor(
        async () => {
          const c = await T.tokenCalls(page);
          return c.length >= 2 ? c : false;
        },
        { timeout: 15_000, what: 'a second getToken call' },
      );
      const ws = ctx.__rec.websockets[0];
      const refresh = await waitFor(() => ws.received.find((f) => f.payload.includes('"refresh"')), { timeout: 5000, what: 'a refresh frame' });
      const auth = await waitFor(() => ws.sent.find((f) => f.payload.includes('"auth"')), { timeout: 5000, what: 'an auth frame' });
      await sleep(1500);
      const st1 = await T.state(page);
      assert.equal(st1.connectionId, st0.connectionId, 'same connection after the refresh');
      assert.equal(ctx.__rec.websockets.length, 1, 'no new WebSocket');
      assert.equal(ws.closed, null, 'the WebSocket is still open');
      const run = 's10';
      const published = [await stack.publish({ service: 'staff', propertyId: 'lisbon', eventType: 'shift.updated', payload: { run } })];
      assert.deepEqual(await waitAllDelivered([page], run, published), []);
      stack.figure(
        '10 token refresh',
        `token 1 (62 s) → server refresh after ${ms(refresh.t - ws.t)} from connect → getToken #2 → auth sent ${ms(auth.t - refresh.t)} after the refresh; ` +
          `getToken calls ${calls.length}; same connectionId (${st1.connectionId}); event after refresh delivered`,
      );
    } finally {
      await stack.closeContext(ctx);
    }
  });

  it('demo page: live events in the leader and a follower tab, screenshot', { timeout: 60_000 }, async () => {
    // The committed docs/demo.png comes from `npm run screenshot`; the suite
    // writes its own copy here so that a test run changes no tracked file.
    const out = process.env.HERALD_E2E_SCREENSHOT || path.join(here, '..', 'artifacts', 'demo.png');
    const f = await captureDemo(stack, out);
    assert.ok(f.shown >= 31 && f.followerShown >= 31, `events shown: leader tab ${f.shown}, follower tab ${f.followerShown}`);
    stack.figure(
      'demo page',
      `${f.shown} events shown in the leader tab, ${f.followerShown} in the follower tab; publish click → shown ${f.clickLatencies.map(ms).join(', ')}; screenshot ${path.relative(repo, out)}`,
    );
  });

  it('never an empty or malformed Authorization header or token parameter, always the org', () => {
    const i = stack.inspected;
    assert.ok(i.transportUrls > 0, 'transport URLs were inspected');
    stack.figure(
      'auth headers',
      `${i.requests} requests and ${i.websockets} WebSockets inspected over all scenarios (${i.withAuthorization} with Authorization, ${i.withTokenParam} with a token parameter, ${i.transportUrls} poll/SSE/stream URLs, each to carry org=${ORG}): ${stack.violations.length} empty, malformed or without the org`,
    );
    assert.deepEqual(stack.violations, []);
  });
});
