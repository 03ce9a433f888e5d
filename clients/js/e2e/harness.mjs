// Test harness of the real-browser e2e tests: a real nats-server, real
// herald-edge processes, the demo server (with the e2e test page added) and
// Chromium through playwright-core, all on ephemeral loopback ports.
//
// Environment:
//   HERALD_EDGE_BIN        herald-edge binary (default ../../../target/debug/herald-edge)
//   HERALD_NATS_SERVER     nats-server binary (default ../../../.tools/bin/nats-server)
//   HERALD_CHROMIUM        Chromium binary (default /usr/bin/chromium)
//   HERALD_E2E_KEEP_LOGS   keep the temp dir with the process logs
//   HERALD_E2E_VERBOSE     print every child's log lines
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { mintToken, startDemoServer } from '../demo/server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..', '..');

export const ORG = 'acme-e2e';
/** The SDK's transport endpoints: each URL carries `org` for the load balancer. */
const TRANSPORT_PATHS = ['/v1/realtime/poll', '/v2/realtime/sse', '/v2/realtime/stream'];
export const SECRET = 'herald-e2e-secret-0123456789abcdef';
export const SERVICES = ['finance', 'guest', 'tasks', 'staff'];
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  // Background tabs must keep their timers: every tab of a context is a
  // background tab for Chromium's purposes except the last one opened.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The stored offset of a tus upload: `HEAD uploadUrl`, which must answer 200. */
export async function headOffset(uploadUrl, token) {
  const r = await fetch(uploadUrl, {
    method: 'HEAD',
    headers: { Authorization: `Bearer ${token}`, 'Tus-Resumable': '1.0.0' },
    signal: AbortSignal.timeout(10_000),
  });
  if (r.status !== 200) throw new Error(`HEAD ${uploadUrl}: ${r.status}`);
  return Number(r.headers.get('upload-offset'));
}

/** Polls fn until it returns a truthy value; throws with `what` after timeoutMs. */
export async function waitFor(fn, { timeout = 10_000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const detail = last instanceof Error ? `: ${last.message}` : last !== undefined ? ` (last: ${JSON.stringify(last)})` : '';
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${detail}`);
    }
    await sleep(interval);
  }
}

export function quantile(values, q) {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------
// child processes

const children = new Set();
function killAllSync() {
  for (const c of children) {
    try {
      process.kill(c.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}
process.once('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    killAllSync();
    process.exit(130);
  });
}

class Child {
  constructor(name, bin, args, env, logDir) {
    this.name = name;
    this.logFile = path.join(logDir, `${name}.log`);
    const out = fs.openSync(this.logFile, 'a');
    this.proc = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', out, out] });
    fs.closeSync(out);
    this.pid = this.proc.pid;
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', (code, signal) => {
        children.delete(this);
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
      this.proc.once('error', (err) => {
        children.delete(this);
        this.exitInfo = { error: err.message };
        resolve(this.exitInfo);
      });
    });
    children.add(this);
  }
  get running() {
    return !this.exitInfo;
  }
  tail(n = 30) {
    try {
      return fs.readFileSync(this.logFile, 'utf8').split('\n').slice(-n).join('\n');
    } catch {
      return '';
    }
  }
  /** SIGTERM (or `signal`), then SIGKILL after graceMs. */
  async stop(signal = 'SIGTERM', graceMs = 5000) {
    if (!this.running) return this.exitInfo;
    try {
      this.proc.kill(signal);
    } catch {
      /* gone */
    }
    const t = setTimeout(() => {
      try {
        this.proc.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }, graceMs);
    const info = await this.exited;
    clearTimeout(t);
    return info;
  }
}

async function httpOk(url) {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
    return r.status === 200;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// the stack

export class Stack {
  constructor() {
    this.edges = [];
    this.contexts = new Set();
    this.violations = []; // bad Authorization headers / token params / missing org params seen anywhere
    this.inspected = { requests: 0, websockets: 0, withAuthorization: 0, withTokenParam: 0, transportUrls: 0 };
    this.figures = []; // printed at the end
  }

  log(msg) {
    console.log(`[e2e] ${msg}`);
  }

  figure(scenario, text) {
    this.figures.push(`${scenario}: ${text}`);
    this.log(`${scenario}: ${text}`);
  }

  async start({ edges = 2 } = {}) {
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-e2e-'));
    this.edgeBin = path.resolve(process.env.HERALD_EDGE_BIN || path.join(repo, 'target', 'debug', 'herald-edge'));
    this.natsBin = path.resolve(process.env.HERALD_NATS_SERVER || path.join(repo, '.tools', 'bin', 'nats-server'));
    this.chromiumBin = process.env.HERALD_CHROMIUM || '/usr/bin/chromium';
    for (const [what, p, hint] of [
      ['herald-edge', this.edgeBin, 'cargo build -p herald-edge'],
      ['nats-server', this.natsBin, 'scripts/setup.sh'],
      ['chromium', this.chromiumBin, 'apt-get install -y chromium'],
    ]) {
      if (!fs.existsSync(p)) throw new Error(`${what} not found at ${p} (${hint})`);
    }
    const t0 = Date.now();

    // nats-server with JetStream in its own store dir
    this.natsPort = await freePort();
    const natsMon = await freePort();
    this.natsUrl = `nats://127.0.0.1:${this.natsPort}`;
    this.nats = new Child(
      'nats',
      this.natsBin,
      ['-js', '-a', '127.0.0.1', '-p', String(this.natsPort), '-m', String(natsMon), '-sd', path.join(this.tmp, 'jetstream')],
      {},
      this.tmp,
    );
    await waitFor(() => (this.nats.running ? httpOk(`http://127.0.0.1:${natsMon}/healthz`) : Promise.reject(new Error(`nats exited: ${this.nats.tail()}`))), {
      timeout: 20_000,
      what: 'nats-server /healthz',
    });

    // the demo server (and the e2e page) on an ephemeral port; the edges need
    // its origin for CORS, the demo needs the edges' URLs: pick ports first.
    const demoPort = await freePort();
    this.origin = `http://127.0.0.1:${demoPort}`;
    const edgePorts = [];
    for (let i = 0; i < edges; i++) edgePorts.push(await freePort());
    this.edgeUrls = edgePorts.map((p) => `http://127.0.0.1:${p}`);

    await Promise.all(edgePorts.map((port, i) => this.startEdge(`edge-${i + 1}`, port)));

    this.demo = await startDemoServer({
      listen: `127.0.0.1:${demoPort}`,
      edges: this.edgeUrls,
      org: ORG,
      secret: SECRET,
      entries: { e2e: path.join(here, 'page.ts') },
      quiet: true,
    });

    this.browser = await chromium.launch({
      executablePath: this.chromiumBin,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 60_000,
    });
    this.log(
      `stack up in ${Date.now() - t0} ms: nats ${this.natsUrl}, edges ${this.edgeUrls.join(' ')}, demo ${this.origin}, chromium ${this.browser.version()} (logs in ${this.tmp})`,
    );
    return this;
  }

  edgeEnv(name, port, extra = {}) {
    return {
      HERALD_LISTEN: `127.0.0.1:${port}`,
      HERALD_NATS_URL: this.natsUrl,
      HERALD_JWT_SECRET: SECRET,
      HERALD_NODE_ID: name,
      HERALD_METRICS_PUBLIC: 'true',
      HERALD_CORS_ORIGINS: `${this.origin},http://localhost:${new URL(this.origin).port}`,
      HERALD_PING_INTERVAL: '3s',
      HERALD_AUDIT_INTERVAL: '2s',
      HERALD_DRAIN_TIMEOUT: '2s',
      RUST_LOG: process.env.RUST_LOG || 'info',
      NO_COLOR: '1',
      ...extra,
    };
  }

  /** Starts (or restarts, on the same port) an edge node and waits for /readyz. */
  async startEdge(name, port, extraEnv = {}) {
    const child = new Child(name, this.edgeBin, [], this.edgeEnv(name, port, extraEnv), this.tmp);
    const edge = { name, port, url: `http://127.0.0.1:${port}`, child };
    const idx = this.edges.findIndex((e) => e.name === name);
    if (idx >= 0) this.edges[idx] = edge;
    else this.edges.push(edge);
    await waitFor(
      async () => {
        if (!child.running) throw new Error(`${name} exited ${JSON.stringify(child.exitInfo)}:\n${child.tail()}`);
        return httpOk(`${edge.url}/readyz`);
      },
      { timeout: 30_000, what: `${name} /readyz` },
    );
    return edge;
  }

  edge(name) {
    return this.edges.find((e) => e.name === name);
  }

  edgeByUrl(url) {
    if (!url) return undefined;
    const u = new URL(url);
    return this.edges.find((e) => String(e.port) === u.port);
  }

  token(claims = {}, ttl = 3600) {
    return mintToken(SECRET, { sub: 'e2e-user', org: ORG, ...claims }, ttl);
  }

  get publisherToken() {
    this._pub ??= this.token({ sub: 'e2e-publisher', role: 'publisher' }, 24 * 3600);
    return this._pub;
  }

  /**
   * Publishes one event through POST /v2/realtime/publish on a live edge
   * (round robin, skipping stopped ones). payload.sentAt is set to the
   * publish time, for latency measurements (unless stamp is false). Returns {seq, duplicate, eventId, sentAt}.
   */
  async publish({ service = 'finance', propertyId = null, eventType = 'item.created', eventId, payload = {}, entityType, entityId, edge, stamp = true } = {}) {
    const live = this.edges.filter((e) => e.child.running);
    this._rr = ((this._rr ?? -1) + 1) % live.length;
    const target = edge ?? live[this._rr];
    eventId ??= `e2e-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
    const sentAt = Date.now();
    const body = { service, propertyId, eventType, eventId, payload: stamp ? { ...payload, sentAt } : payload };
    if (entityType) body.entityType = entityType;
    if (entityId) body.entityId = entityId;
    const r = await fetch(`${target.url}/v2/realtime/publish`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${this.publisherToken}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(20_000),
    });
    const text = await r.text();
    if (r.status !== 200) throw new Error(`publish on ${target.name} answered ${r.status}: ${text}`);
    const res = JSON.parse(text);
    return { ...res, eventId, sentAt, service, propertyId, eventType };
  }

  /** Sum of /v2/realtime/metrics connections over the running edges. */
  async connections(edges = this.edges) {
    const sum = { websocket: 0, sse: 0, longpoll: 0, perEdge: {} };
    for (const e of edges) {
      if (!e.child.running) continue;
      const r = await fetch(`${e.url}/v2/realtime/metrics`, { signal: AbortSignal.timeout(5000) });
      const m = await r.json();
      const c = m.connections ?? {};
      sum.websocket += c.websocket ?? 0;
      sum.sse += c.sse ?? 0;
      sum.longpoll += c.longpoll ?? 0;
      sum.perEdge[e.name] = { websocket: c.websocket ?? 0, sse: c.sse ?? 0, longpoll: c.longpoll ?? 0 };
    }
    return sum;
  }

  /**
   * A fresh browser context (= one browser profile) whose every request and
   * WebSocket is recorded and checked: an Authorization header must be
   * "Bearer <jwt>", a token query parameter must be a non-empty JWT, and a
   * poll, SSE or stream URL must carry org=<the tokens' org> (org-affine
   * routing).
   */
  async newContext() {
    const context = await this.browser.newContext();
    const rec = { requests: [], websockets: [], pageErrors: [], console: [] };
    context.__rec = rec;
    this.contexts.add(context);
    const check = (kind, url, headers) => {
      this.inspected[kind === 'websocket' ? 'websockets' : 'requests'] += 1;
      const auth = headers?.authorization;
      if (auth !== undefined) this.inspected.withAuthorization += 1;
      if (auth !== undefined && !/^Bearer [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(auth)) {
        this.violations.push(`${kind} ${url}: Authorization ${JSON.stringify(auth)}`);
      }
      let u;
      try {
        u = new URL(url);
      } catch {
        return;
      }
      if (TRANSPORT_PATHS.some((p) => u.pathname.endsWith(p))) {
        this.inspected.transportUrls += 1;
        if (u.searchParams.get('org') !== ORG) {
          this.violations.push(`${kind} ${url}: org ${JSON.stringify(u.searchParams.get('org'))}, not ${ORG}`);
        }
      }
      if (u.searchParams.has('token')) {
        this.inspected.withTokenParam += 1;
        const t = u.searchParams.get('token');
        if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(t)) {
          this.violations.push(`${kind} ${url}: token query ${JSON.stringify(t)}`);
        }
      }
    };
    context.on('request', (req) => {
      const entry = { t: Date.now(), url: req.url(), method: req.method(), page: null };
      try {
        entry.page = req.frame()?.page() ?? null;
      } catch {
        entry.page = null; // service-worker or detached
      }
      rec.requests.push(entry);
      req
        .allHeaders()
        .then((h) => {
          entry.headers = h;
          check('request', entry.url, h);
        })
        .catch(() => check('request', entry.url, req.headers()));
    });
    context.on('requestfinished', (req) => {
      const e = rec.requests.findLast?.((x) => x.url === req.url() && !x.done) ?? null;
      if (e) {
        e.done = Date.now();
      }
    });
    context.on('page', (page) => this.instrumentPage(page, rec, check));
    return context;
  }

  instrumentPage(page, rec, check) {
    page.on('websocket', (ws) => {
      const entry = { t: Date.now(), url: ws.url(), page, sent: [], received: [], closed: null };
      rec.websockets.push(entry);
      check('websocket', entry.url, {});
      ws.on('framesent', (f) => entry.sent.push({ t: Date.now(), payload: typeof f.payload === 'string' ? f.payload : '<binary>' }));
      ws.on('framereceived', (f) =>
        entry.received.push({ t: Date.now(), payload: typeof f.payload === 'string' ? f.payload : '<binary>' }),
      );
      ws.on('close', () => (entry.closed = Date.now()));
    });
    page.on('pageerror', (err) => rec.pageErrors.push(String(err?.stack ?? err)));
    page.on('console', (msg) => {
      if (rec.console.length < 2000) rec.console.push(`${msg.type()}: ${msg.text()}`);
    });
  }

  /**
   * Opens a tab on the e2e page in `context` and starts a client there.
   * opts go to window.T.start (see page.ts).
   */
  async openTab(context, opts = {}) {
    const page = await context.newPage();
    await page.goto(`${this.origin}/e2e.html`);
    await page.waitForFunction(() => window.T && window.T.ready === true, null, { timeout: 15_000 });
    await page.evaluate((o) => window.T.start(o), { urls: this.edgeUrls, ...opts });
    return page;
  }

  async closeContext(context) {
    if (!context) return;
    this.contexts.delete(context);
    await context.close().catch(() => {});
  }

  async stop() {
    const errors = [];
    for (const c of [...this.contexts]) await this.closeContext(c);
    if (this.browser) await this.browser.close().catch((e) => errors.push(e));
    if (this.demo) await this.demo.close().catch((e) => errors.push(e));
    await Promise.all(this.edges.map((e) => e.child.stop('SIGTERM', 4000)));
    if (this.nats) await this.nats.stop('SIGTERM', 4000);
    killAllSync();
    if (this.tmp && !process.env.HERALD_E2E_KEEP_LOGS) fs.rmSync(this.tmp, { recursive: true, force: true });
    else if (this.tmp) this.log(`logs kept in ${this.tmp}`);
    if (errors.length) this.log(`errors while stopping: ${errors.join('; ')}`);
  }
}

// ---------------------------------------------------------------------------
// helpers on pages (window.T lives in page.ts)

export const T = {
  state: (page) => page.evaluate(() => window.T.state()),
  events: (page, filter) => page.evaluate((f) => window.T.eventsFor(f), filter ?? null),
  log: (page) => page.evaluate(() => window.T.stateLog),
  tokenCalls: (page) => page.evaluate(() => window.T.tokenCalls),
};

/** The first page of `pages` whose client says it is the leader. */
export async function findLeader(pages) {
  for (const p of pages) {
    if (p.isClosed()) continue;
    try {
      const s = await T.state(p);
      if (s.role === 'leader') return p;
    } catch {
      /* closing or frozen */
    }
  }
  return null;
}

/** Exactly one leader among pages, every page in one of `statuses` (default: live). */
export async function waitSettled(pages, { timeout = 15_000, statuses = ['live'] } = {}) {
  return waitFor(
    async () => {
      const states = await Promise.all(pages.map((p) => T.state(p)));
      const leaders = states.filter((s) => s.role === 'leader');
      const live = states.every((s) => statuses.includes(s.status));
      return leaders.length === 1 && live ? states : false;
    },
    { timeout, what: `${pages.length} tab(s) live with one leader` },
  );
}

/**
 * Checks that `received` (events of one tab) holds every published seq exactly
 * once and in increasing order. Returns a description of what is wrong, or null.
 */
export function checkDelivery(published, received, label) {
  const want = published.map((p) => p.seq);
  const wantSet = new Set(want);
  const got = received.filter((e) => wantSet.has(e.seq)).map((e) => e.seq);
  const seen = new Map();
  for (const s of got) seen.set(s, (seen.get(s) ?? 0) + 1);
  const missing = want.filter((s) => !seen.has(s));
  const doubled = [...seen].filter(([, n]) => n > 1).map(([s]) => s);
  let outOfOrder = 0;
  for (let i = 1; i < got.length; i++) if (got[i] <= got[i - 1]) outOfOrder++;
  if (!missing.length && !doubled.length && !outOfOrder) return null;
  return `${label}: ${missing.length} missing ${JSON.stringify(missing.slice(0, 20))}, ${doubled.length} doubled ${JSON.stringify(
    doubled.slice(0, 20),
  )}, ${outOfOrder} out of order (of ${want.length} published)`;
}
