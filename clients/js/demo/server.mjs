#!/usr/bin/env node
// Herald demo page and dev server (plain node:http, no framework).
//
//   GET /                 the demo page (index.html + app.js)
//   GET /app.js           the page script: demo/app.ts bundled by esbuild
//                         straight from ../src/index.ts (no SDK dist needed),
//                         rebuilt incrementally on every request
//   GET /api/config       {"edges":[…],"org":"…","services":[…],"properties":[…]}
//   GET /api/token?role=user|publisher&sub=…[&ttl=seconds][&props=a,b][&svcs=a,b][&rooms=a,b]
//                         an HS256 JWT signed with HERALD_JWT_SECRET
//
// DEVELOPMENT ONLY. /api/token hands a signed token, publisher tokens
// included, to anybody who can reach this server: that is what makes the demo
// page self-contained, and exactly what a real deployment must never do (there
// tokens come from your own backend after it authenticated the user). The
// server listens on loopback by default; do not expose it.
//
// Environment:
//   HERALD_DEMO_LISTEN      host:port to listen on (default 127.0.0.1:8090; port 0 = any free port)
//   HERALD_DEMO_EDGES       comma-separated edge base URLs (default http://127.0.0.1:8080,http://127.0.0.1:8081)
//   HERALD_DEMO_ORG         org of the minted tokens (default acme-hotels)
//   HERALD_DEMO_PROPERTIES  property ids offered by the selector (default lisbon,porto,seville,
//                           the demo publisher's first three)
//   HERALD_JWT_SECRET       HS256 secret shared with the edges (required, at least 16 bytes)
//
// The module also exports startDemoServer() and mintToken() for the e2e tests,
// which add their own test page through the `entries` option.

import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));

export const DEFAULT_SERVICES = ['finance', 'guest', 'tasks', 'staff'];
export const DEFAULT_PROPERTIES = ['lisbon', 'porto', 'seville'];
const MAX_TTL_SECONDS = 7 * 24 * 3600;
const TOKEN_RE = /^[A-Za-z0-9_-]{1,64}$/;

function b64url(data) {
  return Buffer.from(data).toString('base64url');
}

/**
 * An HS256 JWT, signed with node:crypto (dev only, see the header comment).
 * `claims` must carry sub and org; exp defaults to now + ttlSeconds.
 */
export function mintToken(secret, claims, ttlSeconds = 24 * 3600) {
  const now = Math.floor(Date.now() / 1000);
  const body = { iat: now, exp: now + ttlSeconds, ...claims };
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify(body));
  const sig = crypto.createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${sig}`;
}

function parseListen(listen) {
  const m = /^(.*):(\d+)$/.exec(listen);
  if (!m) throw new Error(`HERALD_DEMO_LISTEN must be host:port, got '${listen}'`);
  return { host: m[1].replace(/^\[|\]$/g, '') || '127.0.0.1', port: Number(m[2]) };
}

function splitList(s) {
  return String(s ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
}

function send(res, status, type, body, extra = {}) {
  res.writeHead(status, {
    'Content-Type': type,
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    ...extra,
  });
  res.end(body);
}

function sendJson(res, status, obj) {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(obj));
}

function htmlShell(title, script) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><div id="root"></div><script type="module" src="${script}"></script></body></html>
`;
}

/**
 * Starts the demo server. Options:
 *   listen      'host:port' (port 0 = ephemeral)
 *   edges       edge base URLs
 *   org         org of minted tokens
 *   secret      HS256 secret
 *   properties  property ids for the selector
 *   entries     extra { name: absolute .ts path } bundles, served as /<name>.js
 *               with a bare HTML shell at /<name>.html
 *   quiet       no request log
 * Resolves to { url, origin, port, close() }.
 */
export async function startDemoServer(opts = {}) {
  const listen = opts.listen ?? '127.0.0.1:8090';
  const edges = opts.edges ?? ['http://127.0.0.1:8080', 'http://127.0.0.1:8081'];
  const org = opts.org ?? 'acme-hotels';
  const secret = opts.secret;
  const properties = opts.properties ?? DEFAULT_PROPERTIES;
  if (!secret || Buffer.byteLength(secret) < 16) {
    throw new Error('HERALD_JWT_SECRET must be set (at least 16 bytes, the same as the edges use)');
  }
  if (!TOKEN_RE.test(org)) throw new Error(`bad org '${org}'`);
  if (!edges.length) throw new Error('no edges configured (HERALD_DEMO_EDGES)');

  const entryPoints = { app: path.join(here, 'app.ts'), ...(opts.entries ?? {}) };
  const bundles = new Map();
  for (const [name, file] of Object.entries(entryPoints)) {
    const ctx = await esbuild.context({
      entryPoints: [file],
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'browser',
      target: ['es2020'],
      sourcemap: 'inline',
      logLevel: 'silent',
      // SDK dependencies, if any, resolve from clients/js/node_modules.
      nodePaths: [path.join(here, '..', 'node_modules')],
    });
    bundles.set(name, { ctx, pending: null });
  }

  async function bundle(name) {
    const b = bundles.get(name);
    // One rebuild at a time per bundle; concurrent requests share it.
    if (!b.pending) {
      b.pending = b.ctx
        .rebuild()
        .then((r) => ({ ok: true, code: r.outputFiles[0].text }))
        .catch((err) => ({ ok: false, err }))
        .finally(() => {
          b.pending = null;
        });
    }
    return b.pending;
  }

  const server = http.createServer(async (req, res) => {
    try {
      const u = new URL(req.url, 'http://demo.local');
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        return sendJson(res, 405, { error: { code: 'method_not_allowed', message: 'GET only' } });
      }
      if (u.pathname === '/' || u.pathname === '/index.html') {
        const html = await fs.readFile(path.join(here, 'index.html'));
        return send(res, 200, 'text/html; charset=utf-8', html);
      }
      if (u.pathname === '/favicon.ico') return send(res, 204, 'image/x-icon', '');
      const js = /^\/([A-Za-z0-9_-]+)\.js$/.exec(u.pathname);
      if (js && bundles.has(js[1])) {
        const out = await bundle(js[1]);
        if (out.ok) return send(res, 200, 'text/javascript; charset=utf-8', out.code);
        const msg = String(out.err?.message ?? out.err);
        console.error(`demo: bundling ${js[1]} failed: ${msg}`);
        return send(
          res,
          500,
          'text/javascript; charset=utf-8',
          `document.body.innerHTML = '<pre style="color:#b00">' + ${JSON.stringify(
            'bundle failed:\n' + msg,
          )}.replace(/</g,'&lt;') + '</pre>';`,
        );
      }
      const page = /^\/([A-Za-z0-9_-]+)\.html$/.exec(u.pathname);
      if (page && page[1] !== 'app' && bundles.has(page[1])) {
        return send(res, 200, 'text/html; charset=utf-8', htmlShell(page[1], `/${page[1]}.js`));
      }
      if (u.pathname === '/api/config') {
        return sendJson(res, 200, { edges, org, services: DEFAULT_SERVICES, properties });
      }
      if (u.pathname === '/api/token') {
        const role = u.searchParams.get('role') ?? 'user';
        const sub = u.searchParams.get('sub') ?? (role === 'publisher' ? 'demo-publisher' : 'demo-user');
        const ttl = Number(u.searchParams.get('ttl') ?? 24 * 3600);
        if (!['user', 'publisher'].includes(role)) {
          return sendJson(res, 400, { error: { code: 'bad_parameter', message: 'role must be user or publisher' } });
        }
        if (!sub || sub.length > 128) {
          return sendJson(res, 400, { error: { code: 'bad_parameter', message: 'sub must be 1-128 characters' } });
        }
        if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TTL_SECONDS) {
          return sendJson(res, 400, { error: { code: 'bad_parameter', message: `ttl must be 1-${MAX_TTL_SECONDS} seconds` } });
        }
        const claims = { sub, org };
        if (role === 'publisher') claims.role = 'publisher';
        for (const key of ['props', 'svcs', 'rooms']) {
          if (u.searchParams.has(key)) {
            const list = splitList(u.searchParams.get(key));
            if (!list.every((x) => TOKEN_RE.test(x))) {
              return sendJson(res, 400, { error: { code: 'bad_parameter', message: `bad ${key}` } });
            }
            claims[key] = list;
          }
        }
        const token = mintToken(secret, claims, ttl);
        const exp = Math.floor(Date.now() / 1000) + ttl;
        return sendJson(res, 200, { token, exp: exp * 1000, sub, org, role });
      }
      return sendJson(res, 404, { error: { code: 'not_found', message: 'unknown path' } });
    } catch (err) {
      console.error('demo: request failed:', err);
      if (!res.headersSent) sendJson(res, 500, { error: { code: 'internal', message: 'internal error' } });
      else res.destroy();
    }
  });
  if (!opts.quiet) {
    server.on('request', (req, res) => {
      res.on('finish', () => {
        if (!req.url.startsWith('/api/token')) return;
        console.log(`demo: ${req.method} ${req.url.replace(/[?].*/, '')} ${res.statusCode}`);
      });
    });
  }

  const { host, port } = parseListen(listen);
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  const hostForUrl = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const origin = `http://${hostForUrl}:${addr.port}`;

  // Warm the bundles so the first page load is quick and errors show at startup.
  for (const name of bundles.keys()) {
    const out = await bundle(name);
    if (!out.ok) console.error(`demo: warning: bundling ${name} failed: ${out.err?.message ?? out.err}`);
  }

  return {
    url: `${origin}/`,
    origin,
    port: addr.port,
    server,
    async close() {
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(() => resolve()));
      for (const b of bundles.values()) await b.ctx.dispose();
    },
  };
}

async function main() {
  const secret = process.env.HERALD_JWT_SECRET;
  const demo = await startDemoServer({
    listen: process.env.HERALD_DEMO_LISTEN || '127.0.0.1:8090',
    edges: splitList(process.env.HERALD_DEMO_EDGES || 'http://127.0.0.1:8080,http://127.0.0.1:8081').map((e) =>
      e.replace(/\/+$/, ''),
    ),
    org: process.env.HERALD_DEMO_ORG || 'acme-hotels',
    properties: process.env.HERALD_DEMO_PROPERTIES ? splitList(process.env.HERALD_DEMO_PROPERTIES) : undefined,
    secret,
  });
  console.log(`demo: Herald demo page on ${demo.url} (development only: it mints tokens for anyone)`);
  let stopping = false;
  const stop = async (sig) => {
    if (stopping) return;
    stopping = true;
    console.log(`demo: ${sig}, stopping`);
    const t = setTimeout(() => process.exit(0), 3000);
    t.unref();
    await demo.close();
    process.exit(0);
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main().catch((err) => {
    console.error(`demo: error: ${err.message}`);
    process.exit(1);
  });
}
