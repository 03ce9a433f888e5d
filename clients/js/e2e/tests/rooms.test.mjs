// Rooms in real browsers against real edges (contract §6): one profile with
// two tabs (user alice, one leader and one follower) and a second profile
// (user bob, connected to the other edge first) chat in one room: messages
// reach every tab once, typing shows and expires, receipts arrive, presence
// goes away when every tab of a profile is hidden, back online, and offline
// when the profile closes; an error frame rejects a message and leaves the
// connection alone; a reconnect re-joins and merges without doubles.
// Run alone: node --test tests/rooms.test.mjs
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Stack, T, findLeader, sleep, waitFor, waitSettled } from '../harness.mjs';

let stack;
let ctxA;
let ctxB;
let a1;
let a2;
let b1;
const ROOM = `lobby-${Date.now().toString(36)}`;

const room = (page) => page.evaluate((id) => window.T.roomState(id), ROOM);
const say = (page, text) => page.evaluate(([id, t]) => window.T.roomSay(id, t), [ROOM, text]);
const log = (page) => page.evaluate((id) => window.T.roomLog[id], ROOM);

/** Waits until every page holds each text once (as stored messages); returns their seqs. */
async function waitMessages(pages, texts, what) {
  return waitFor(
    async () => {
      const states = await Promise.all(pages.map(room));
      for (const s of states) {
        for (const text of texts) {
          const hits = s.messages.filter((m) => m.text === text && m.status === 'sent');
          if (hits.length !== 1) return false;
        }
      }
      return states;
    },
    { timeout: 10_000, what },
  );
}

describe('rooms in Chromium', { concurrency: false }, () => {
  before(async () => {
    stack = new Stack();
    await stack.start({ edges: 2 });
    ctxA = await stack.newContext();
    ctxB = await stack.newContext();
    a1 = await stack.openTab(ctxA, { sub: 'alice' });
    a2 = await stack.openTab(ctxA, { sub: 'alice' });
    // Bob's profile prefers the other edge: presence and messages cross nodes.
    b1 = await stack.openTab(ctxB, { sub: 'bob', urls: [...stack.edgeUrls].reverse() });
    await waitSettled([a1, a2]);
    await waitSettled([b1]);
  });

  after(async () => {
    if (!stack) return;
    console.log('\n[e2e] ===== rooms figures =====');
    for (const f of stack.figures) console.log(`[e2e] ${f}`);
    await stack.stop();
  });

  it('1. three tabs of two users join; members are online everywhere', { timeout: 30_000 }, async () => {
    const t0 = Date.now();
    for (const p of [a1, a2, b1]) await p.evaluate((id) => window.T.roomJoin(id), ROOM);
    const states = await waitFor(
      async () => {
        const s = await Promise.all([a1, a2, b1].map(room));
        return s.every((x) => x.joined && x.members.alice === 'online' && x.members.bob === 'online') ? s : false;
      },
      { timeout: 10_000, what: 'joined, alice and bob online in every tab' },
    );
    stack.figure('rooms 1', `joined with both users online in 3 tabs in ${Date.now() - t0} ms`);
    assert.equal(states.length, 3);
    // One WebSocket per profile: the follower tab has none.
    const leaderA = await findLeader([a1, a2]);
    assert.ok(leaderA, 'profile A has a leader');
    const follower = leaderA === a1 ? a2 : a1;
    assert.equal(ctxA.__rec.websockets.filter((w) => w.page === follower).length, 0, 'the follower tab opened no WebSocket');
    const joins = ctxA.__rec.websockets.flatMap((w) => w.sent).filter((f) => f.payload.includes('"type":"join"'));
    assert.ok(joins.length >= 1, 'the leader sent join');
  });

  it('2. messages from a follower tab and from the other user reach every tab once', { timeout: 30_000 }, async () => {
    const leaderA = await findLeader([a1, a2]);
    const follower = leaderA === a1 ? a2 : a1;
    const t0 = Date.now();
    const [fromA, fromB] = await Promise.all([say(follower, 'hello from alice'), say(b1, 'hi from bob')]);
    assert.equal(fromA.ok, true, `alice's say: ${JSON.stringify(fromA)}`);
    assert.equal(fromB.ok, true, `bob's say: ${JSON.stringify(fromB)}`);
    const states = await waitMessages([a1, a2, b1], ['hello from alice', 'hi from bob'], 'both messages in every tab');
    stack.figure('rooms 2', `two messages in 3 tabs in ${Date.now() - t0} ms`);
    for (const s of states) {
      const a = s.messages.find((m) => m.text === 'hello from alice');
      const b = s.messages.find((m) => m.text === 'hi from bob');
      assert.equal(a.seq, fromA.seq);
      assert.equal(a.userId, 'alice');
      assert.equal(a.clientMsgId, fromA.clientMsgId);
      assert.equal(b.seq, fromB.seq);
      assert.equal(b.userId, 'bob');
      const seqs = s.messages.filter((m) => m.seq !== null).map((m) => m.seq);
      assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), 'messages in seq order');
      assert.equal(s.messages.filter((m) => m.status !== 'sent').length, 0, 'nothing left pending');
    }
    // history() answers from the joined history here; the edge's GET /v2/rooms/<room>/messages agrees.
    const hist = await a1.evaluate(([id]) => window.T.roomHistory(id, undefined, 10), [ROOM]);
    assert.ok(Array.isArray(hist) && hist.includes(fromA.seq) && hist.includes(fromB.seq), `history ${JSON.stringify(hist)}`);
    const r = await fetch(`${stack.edgeUrls[1]}/v2/rooms/${ROOM}/messages?limit=10`, {
      headers: { Authorization: `Bearer ${stack.token({ sub: 'alice' })}` },
    });
    const body = await r.text();
    assert.equal(r.status, 200, `GET /v2/rooms/${ROOM}/messages: ${r.status} ${body}`);
    assert.deepEqual(JSON.parse(body).messages.map((m) => m.seq), hist, 'the edge\'s history is the SDK\'s');
  });

  it('3. typing shows in the other user\'s tabs and expires about 5 s after the last frame', { timeout: 30_000 }, async () => {
    const sentAt = await b1.evaluate((id) => window.T.roomTyping(id), ROOM);
    for (const p of [a1, a2]) {
      await waitFor(async () => (await room(p)).typing.includes('bob'), { timeout: 5_000, what: 'bob typing in an alice tab' });
    }
    const shownMs = Date.now() - sentAt;
    // Bob's own tab never shows himself (the edge sends typing to other users only).
    assert.deepEqual((await room(b1)).typing, []);
    await waitFor(async () => (await room(a1)).typing.length === 0 && (await room(a2)).typing.length === 0, {
      timeout: 10_000,
      what: 'typing expired',
    });
    const logA = await log(a1);
    const on = logA.typing.find((e) => e.users.includes('bob'));
    const off = logA.typing.find((e) => e.t > on.t && !e.users.includes('bob'));
    const lasted = off.t - on.t;
    stack.figure('rooms 3', `typing shown ${shownMs} ms after typing(), for ${lasted} ms`);
    assert.ok(lasted >= 4_500 && lasted <= 6_500, `typing shown for ${lasted} ms, want about 5000`);
    // Typing repeatedly for 3 s sends at most two frames (one per 2 s).
    const before = ctxB.__rec.websockets.flatMap((w) => w.sent).filter((f) => f.payload.includes('"type":"typing"')).length;
    for (let i = 0; i < 15; i++) {
      await b1.evaluate((id) => window.T.roomTyping(id), ROOM);
      await sleep(200);
    }
    const frames = ctxB.__rec.websockets.flatMap((w) => w.sent).filter((f) => f.payload.includes('"type":"typing"')).length - before;
    assert.ok(frames >= 1 && frames <= 2, `${frames} typing frames for 3 s of typing`);
  });

  it('4. a read receipt reaches the other user and the reader\'s other tab', { timeout: 30_000 }, async () => {
    const s = await room(a2);
    const seq = Math.max(...s.messages.map((m) => m.seq ?? 0));
    await a2.evaluate(([id, q]) => window.T.roomRead(id, q), [ROOM, seq]);
    for (const p of [a1, a2, b1]) {
      await waitFor(async () => (await room(p)).receipts.alice === seq, { timeout: 5_000, what: `alice's receipt ${seq}` });
    }
    // Receipts only move forward: an older read sends nothing and changes nothing.
    await a1.evaluate(([id, q]) => window.T.roomRead(id, q), [ROOM, seq - 1]);
    await sleep(500);
    assert.equal((await room(b1)).receipts.alice, seq);
  });

  it('5. presence: away when every tab of a profile is hidden, online when one shows', { timeout: 30_000 }, async () => {
    await a1.evaluate(() => window.T.hide());
    await sleep(700);
    assert.equal((await room(b1)).members.alice, 'online', 'one alice tab is still visible');
    const t0 = Date.now();
    await a2.evaluate(() => window.T.hide());
    await waitFor(async () => (await room(b1)).members.alice === 'away', { timeout: 5_000, what: 'alice away in bob\'s tab' });
    const awayMs = Date.now() - t0;
    // Alice's own tabs see herself away too.
    await waitFor(async () => (await room(a1)).members.alice === 'away', { timeout: 5_000, what: 'alice away in her own tab' });
    const sent = ctxA.__rec.websockets.flatMap((w) => w.sent).map((f) => f.payload);
    assert.ok(sent.some((p) => p.includes('"type":"status"') && p.includes('"away"')), 'the leader sent status away');
    const t1 = Date.now();
    await a2.evaluate(() => window.T.show());
    await waitFor(async () => (await room(b1)).members.alice === 'online', { timeout: 5_000, what: 'alice online again' });
    stack.figure('rooms 5', `away seen ${awayMs} ms after the last tab hid, online ${Date.now() - t1} ms after one showed`);
    await a1.evaluate(() => window.T.show());
  });

  it('6. an error frame rejects the message it answers; the connection stays', { timeout: 30_000 }, async () => {
    const leader = await findLeader([a1, a2]);
    const before = await T.state(leader);
    // Use up alice's 10 messages a second on the leader's edge over HTTP (the same budget as `say`).
    const edge = stack.edgeByUrl(before.url);
    const token = stack.token({ sub: 'alice' });
    const posts = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        fetch(`${edge.url}/v2/rooms/${ROOM}/messages`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ text: `posted ${i}`, clientMsgId: `post-${ROOM}-${i}` }),
        }).then((r) => r.status),
      ),
    );
    assert.ok(posts.includes(429), `the HTTP burst hit the rate limit: ${JSON.stringify(posts)}`);
    const results = await leader.evaluate(async (id) => Promise.all([window.T.roomSay(id, 'over the limit 0'), window.T.roomSay(id, 'over the limit 1')]), ROOM);
    stack.figure('rooms 6', `HTTP burst ${JSON.stringify(posts)}; says right after: ${JSON.stringify(results.map((r) => (r.ok ? r.seq : r.code)))}`);
    assert.equal(results[0].ok, false, `the first say after the burst: ${JSON.stringify(results[0])}`);
    assert.equal(results[0].code, 'rate_limited');
    const s = await T.state(leader);
    assert.equal(s.connectionId, before.connectionId, 'same connection');
    assert.equal(s.status, 'live');
    const mine = await room(leader);
    assert.equal(mine.messages.find((m) => m.text === 'over the limit 0')?.status, 'failed');
    await sleep(1_100);
    const after = await say(leader, 'after the burst');
    assert.equal(after.ok, true, `a message after the burst is stored: ${JSON.stringify(after)}`);
    const stored = posts.flatMap((st, i) => (st === 200 ? [`posted ${i}`] : []));
    await waitMessages([a1, a2, b1], [...stored, 'after the burst'], 'the posted messages and the one after the burst in every tab');
  });

  it('6b. a join outside the token\'s rooms claim is refused by an error frame; its say is rejected; the connection stays', { timeout: 30_000 }, async () => {
    const ctxC = await stack.newContext();
    try {
      const c1 = await stack.openTab(ctxC, { sub: 'carol', rooms: ['elsewhere'] });
      await waitSettled([c1]);
      const conn = (await T.state(c1)).connectionId;
      const said = c1.evaluate(([id]) => (window.T.roomJoin(id), window.T.roomSay(id, 'not allowed')), [ROOM]);
      const res = await said;
      assert.deepEqual({ ok: res.ok, code: res.code }, { ok: false, code: 'forbidden' });
      const s = await c1.evaluate((id) => window.T.roomState(id), ROOM);
      assert.equal(s.joined, false);
      assert.equal(s.lastError?.code, 'forbidden');
      assert.equal(s.messages.find((m) => m.text === 'not allowed')?.status, 'failed');
      const state = await T.state(c1);
      assert.equal(state.connectionId, conn, 'same connection');
      assert.equal(state.status, 'live');
      // Nobody in the room saw carol or her message.
      await sleep(300);
      const a = await room(a1);
      assert.equal(a.members.carol, undefined);
      assert.equal(a.messages.some((m) => m.text === 'not allowed'), false);
    } finally {
      await stack.closeContext(ctxC);
    }
  });

  it('7. after a reconnect the leader re-joins and every tab merges what it missed, once', { timeout: 60_000 }, async () => {
    await ctxA.setOffline(true);
    await waitFor(async () => !(await room(a1)).joined, { timeout: 10_000, what: 'room not joined while offline' });
    const missed = [];
    for (let i = 0; i < 3; i++) missed.push((await say(b1, `while alice was away ${i}`)).seq);
    // A message said while offline is sent after the reconnect, stored once.
    const pending = a1.evaluate((id) => window.T.roomSay(id, 'said offline'), ROOM);
    await sleep(500);
    assert.equal((await room(a1)).messages.find((m) => m.text === 'said offline')?.status, 'pending');
    const t0 = Date.now();
    await ctxA.setOffline(false);
    const res = await pending;
    assert.equal(res.ok, true, `the offline say: ${JSON.stringify(res)}`);
    const states = await waitMessages([a1, a2, b1], ['while alice was away 0', 'while alice was away 1', 'while alice was away 2', 'said offline'], 'missed messages merged');
    stack.figure('rooms 7', `re-joined and merged 3 missed messages ${Date.now() - t0} ms after going online`);
    for (const s of states) {
      const seqs = s.messages.filter((m) => m.seq !== null).map((m) => m.seq);
      assert.equal(new Set(seqs).size, seqs.length, 'no seq twice');
      for (const q of missed) assert.ok(seqs.includes(q));
    }
    const hist = await b1.evaluate(([id]) => window.T.roomHistory(id, undefined, 100), [ROOM]);
    const offline = (await room(b1)).messages.filter((m) => m.text === 'said offline');
    assert.equal(offline.length, 1);
    assert.ok(hist.includes(offline[0].seq));
  });

  it('7b. the leader tab closes: the other tab leads, re-joins, and keeps chatting; alice stays online', { timeout: 30_000 }, async () => {
    const leader = await findLeader([a1, a2]);
    const survivor = leader === a1 ? a2 : a1;
    const t0 = Date.now();
    await leader.close();
    await waitFor(async () => (await T.state(survivor)).role === 'leader' && (await room(survivor)).joined, {
      timeout: 10_000,
      what: 'the other alice tab leads and has the room joined',
    });
    const tookMs = Date.now() - t0;
    const [fromA, fromB] = await Promise.all([say(survivor, 'after the hand-over'), say(b1, 'bob after the hand-over')]);
    assert.equal(fromA.ok, true, JSON.stringify(fromA));
    assert.equal(fromB.ok, true, JSON.stringify(fromB));
    await waitMessages([survivor, b1], ['after the hand-over', 'bob after the hand-over'], 'messages after the hand-over');
    // Alice never went offline for bob for long: she is online now.
    await waitFor(async () => (await room(b1)).members.alice === 'online', { timeout: 5_000, what: 'alice online after the hand-over' });
    const seqs = (await room(survivor)).messages.map((m) => m.seq);
    assert.equal(new Set(seqs).size, seqs.length, 'no seq twice after the rejoin');
    stack.figure('rooms 7b', `new leader with the room joined ${tookMs} ms after the leader tab closed`);
    if (leader === a1) a1 = survivor;
    a2 = survivor;
  });

  it('8. offline when the other profile closes', { timeout: 30_000 }, async () => {
    const t0 = Date.now();
    await stack.closeContext(ctxB);
    ctxB = null;
    await waitFor(async () => (await room(a1)).members.bob === 'offline' && (await room(a2)).members.bob === 'offline', {
      timeout: 10_000,
      what: 'bob offline in alice\'s tabs',
    });
    stack.figure('rooms 8', `bob offline ${Date.now() - t0} ms after his profile closed`);
    const errs = [...(await a1.evaluate(() => window.T.errors)), ...(await a2.evaluate(() => window.T.errors))];
    assert.deepEqual(errs, [], 'no page errors');
    assert.deepEqual(stack.violations, [], 'no bad Authorization or token anywhere');
  });

  it('9. the demo page: two users chat in a property room with presence dots, typing line and read marks', { timeout: 60_000 }, async () => {
    const ctxAnn = await stack.newContext();
    const ctxBen = await stack.newContext();
    try {
      const ann = await ctxAnn.newPage();
      const ben = await ctxBen.newPage();
      await ann.goto(`${stack.origin}/?sub=ann`);
      await ben.goto(`${stack.origin}/?sub=ben`);
      const panel = (page) => page.locator('section.chat[data-room="lisbon"]');
      for (const [page, other] of [
        [ann, 'ben'],
        [ben, 'ann'],
      ]) {
        await waitFor(async () => (await panel(page).locator('.count').textContent()) === 'joined', { timeout: 20_000, what: 'demo room joined' });
        await waitFor(async () => (await panel(page).locator('.member.online').allTextContents()).some((t) => t.startsWith(other)), {
          timeout: 10_000,
          what: `${other} online in the demo panel`,
        });
      }
      await panel(ann).locator('input').pressSequentially('hello ben', { delay: 20 });
      await waitFor(async () => /ann is typing/.test((await panel(ben).locator('.typing').textContent()) ?? ''), { timeout: 5_000, what: 'typing line' });
      await panel(ann).locator('input').press('Enter');
      await waitFor(async () => (await panel(ben).locator('.msg.sent .text').allTextContents()).includes('hello ben'), { timeout: 10_000, what: 'message in ben\'s panel' });
      // Ben's visible page marks it read; ann sees the read mark.
      await waitFor(async () => (await panel(ann).locator('.msg.own .reads').allTextContents()).some((t) => t.includes('ben')), {
        timeout: 10_000,
        what: 'read mark by ben in ann\'s panel',
      });
      await ben.evaluate(() => {
        Object.defineProperty(document, 'visibilityState', { value: 'hidden', configurable: true });
        document.dispatchEvent(new Event('visibilitychange'));
      });
      await waitFor(async () => (await panel(ann).locator('.member.away').allTextContents()).some((t) => t.startsWith('ben')), { timeout: 5_000, what: 'ben away' });
      await ann.screenshot({ path: new URL('../artifacts/rooms-demo.png', import.meta.url).pathname });
    } finally {
      await stack.closeContext(ctxAnn);
      await stack.closeContext(ctxBen);
    }
  });
});
