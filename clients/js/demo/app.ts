// The demo page's script, bundled by server.mjs with esbuild straight from the
// SDK's sources (../src/index.ts).
//
// URL parameters (all optional), handy for trying things out:
//   ?transports=longpoll,sse   restrict the transports, in order of preference
//   ?services=finance,tasks    subscribe to fewer services
//   ?property=lisbon           start with a property filter
//   ?sub=alice                 the user id of the minted token (default: a
//                              guest name kept per browser profile, so tabs
//                              share a user and other browsers are others)
//   ?rooms=0                   no chat panels
import { createRealtimeClient } from '../src/index';
import type { ChatMessage, HeraldEvent, RealtimeClient, Room, TransportKind as Transport, Upload } from '../src/index';

interface DemoConfig {
  edges: string[];
  org: string;
  services: string[];
  properties: string[];
}

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);
const FEED_MAX = 40;

function log(msg: string) {
  const el = $('log');
  const line = `${new Date().toLocaleTimeString()}  ${msg}\n`;
  el.textContent = (line + (el.textContent ?? '')).slice(0, 6000);
}

function list(s: string | null): string[] {
  return (s ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
}

function fmtMs(ms: number | null | undefined): string {
  if (ms == null || !Number.isFinite(ms)) return '–';
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

function el(tag: string, cls?: string, text?: string): HTMLElement {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

/** The demo's user: ?sub=, else a guest name remembered by this browser profile. */
function demoUser(): string {
  const fromUrl = params.get('sub');
  if (fromUrl) return fromUrl;
  try {
    let name = localStorage.getItem('herald-demo-sub');
    if (!name) {
      name = `guest-${Math.random().toString(36).slice(2, 6)}`;
      localStorage.setItem('herald-demo-sub', name);
    }
    return name;
  } catch {
    return 'demo-user';
  }
}

/**
 * A chat panel for one room: members with presence dots, the messages with
 * read marks (who has read up to each), a typing line and an input. The room
 * is marked read while the tab is visible.
 */
function chatPanel(client: RealtimeClient, roomId: string, me: string): HTMLElement {
  const room: Room = client.room(roomId);
  const card = el('section', 'card chat');
  card.dataset.room = roomId;
  const h = el('h2', undefined, `room ${roomId}`);
  const joined = el('span', 'count', 'joining…');
  h.append(joined);
  const members = el('div', 'members');
  const list = document.createElement('ol');
  list.className = 'messages';
  const typing = el('div', 'typing muted', '\u00a0');
  const form = document.createElement('form');
  const input = document.createElement('input');
  input.placeholder = `message as ${me}`;
  input.maxLength = 1000;
  const send = el('button', undefined, 'Send') as HTMLButtonElement;
  form.append(input, send);
  card.append(h, members, list, typing, form);

  const renderMembers = () => {
    joined.textContent = room.joined() ? 'joined' : 'not joined';
    members.replaceChildren(
      ...Object.entries(room.members())
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([user, state]) => {
          const m = el('span', `member ${state}`, user === me ? `${user} (you)` : user);
          m.title = state;
          return m;
        }),
    );
  };
  const renderMessages = () => {
    const receipts = room.receipts();
    const msgs = room.messages();
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 20;
    list.replaceChildren(
      ...msgs.map((m: ChatMessage) => {
        const li = el('li', `msg ${m.status}${m.userId === me ? ' own' : ''}`);
        if (m.seq !== null) li.dataset.seq = String(m.seq);
        li.append(el('span', 'who', m.userId || me), el('span', 'text', m.text));
        const meta = m.status === 'sent' ? `seq ${m.seq}` : m.status === 'pending' ? 'sending…' : `failed: ${m.error?.code ?? ''}`;
        li.append(el('div', 'meta', meta));
        // Read marks: each other user at the last message they have read.
        if (m.seq !== null) {
          const next = msgs.find((x) => x.seq !== null && x.seq > (m.seq as number));
          const readers = Object.entries(receipts)
            .filter(([u, seq]) => u !== me && seq >= (m.seq as number) && (next === undefined || seq < (next.seq as number)))
            .map(([u]) => u);
          if (readers.length) li.append(el('div', 'reads', `✓ read by ${readers.join(', ')}`));
        }
        return li;
      }),
    );
    if (atBottom) list.scrollTop = list.scrollHeight;
    markRead();
  };
  const renderTyping = () => {
    const users = room.typingUsers();
    typing.textContent = users.length === 0 ? '\u00a0' : `${users.join(', ')} ${users.length === 1 ? 'is' : 'are'} typing…`;
  };
  const markRead = () => {
    if (document.visibilityState === 'hidden') return;
    let last = 0;
    for (const m of room.messages()) if (m.seq !== null && m.seq > last) last = m.seq;
    if (last > 0) room.read(last);
  };

  room.onPresence(renderMembers);
  room.onMessages(renderMessages);
  room.onReceipts(renderMessages);
  room.onTyping(renderTyping);
  room.onError((e) => log(`room ${roomId}: ${e.code}: ${e.message}`));
  document.addEventListener('visibilitychange', markRead);
  input.addEventListener('input', () => room.typing());
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = '';
    room.say(text).catch((err: Error) => log(`room ${roomId}: not sent: ${err.message}`));
  });
  renderMembers();
  renderMessages();
  return card;
}

function fmtBytes(n: number): string {
  return n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * The document upload panel: a file input, a progress bar and Pause / Resume
 * / Abort for `client.upload()`, and a "Documents" list filled from
 * `upload.completed` events (service `uploads`), so a finished upload shows
 * in every tab. A link fetches the file with the token and opens a blob URL.
 */
function uploadPanel(client: RealtimeClient, edge: string, getToken: () => Promise<string>): void {
  const input = $<HTMLInputElement>('up-file');
  const bar = $<HTMLProgressElement>('up-bar');
  const status = $('up-status');
  const pause = $<HTMLButtonElement>('up-pause');
  const resume = $<HTMLButtonElement>('up-resume');
  const abort = $<HTMLButtonElement>('up-abort');
  const docs = $('docs');
  const count = $('docs-count');
  let current: Upload | null = null;

  const render = () => {
    const s = current?.state() ?? 'idle';
    const p = current?.progress() ?? { bytesSent: 0, bytesTotal: 0 };
    bar.max = Math.max(1, p.bytesTotal);
    bar.value = p.bytesSent;
    const err = current?.error();
    status.textContent =
      s === 'idle' ? 'choose a file (PDF, image, CSV, XLS/XLSX)' : `${s} · ${fmtBytes(p.bytesSent)} of ${fmtBytes(p.bytesTotal)}${s === 'error' && err ? ` · ${err.code}` : ''}`;
    pause.disabled = s !== 'uploading';
    resume.disabled = s !== 'paused';
    abort.disabled = s !== 'uploading' && s !== 'paused';
  };

  input.addEventListener('change', () => {
    const file = input.files?.[0];
    if (!file) return;
    if (current?.state() === 'uploading') current.pause();
    try {
      // Continues an unfinished upload of the same file remembered in this browser.
      const u = client.upload(file);
      current = u;
      u.onProgress(() => current === u && render());
      u.onStateChange(() => current === u && render());
      u.done.then(
        (r) => log(`upload ${r.filename}: done (${r.id})`),
        (e: Error) => log(`upload ${file.name}: ${e.message}`),
      );
    } catch (e) {
      log(`upload ${file.name}: ${(e as Error).message}`);
    }
    input.value = '';
    render();
  });
  pause.addEventListener('click', () => current?.pause());
  resume.addEventListener('click', () => current?.resume());
  abort.addEventListener('click', () => void current?.abort());

  async function open(id: string, a: HTMLAnchorElement) {
    try {
      const r = await fetch(`${edge}/v2/uploads/${encodeURIComponent(id)}/content`, {
        headers: { Authorization: `Bearer ${await getToken()}` },
      });
      if (!r.ok) throw new Error(`${r.status}`);
      const url = URL.createObjectURL(await r.blob());
      window.open(url, '_blank', 'noopener');
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (e) {
      a.title = `could not fetch it: ${(e as Error).message}`;
      log(`document ${id}: could not fetch it: ${(e as Error).message}`);
    }
  }

  const seen = new Set<string>();
  client.subscribe('uploads', (ev: HeraldEvent) => {
    if (ev.eventType !== 'upload.completed') return;
    const d = ev.payload as { id: string; filename: string; filetype: string; size: number; sha256: string };
    if (!d || typeof d.id !== 'string' || seen.has(d.id)) return;
    seen.add(d.id);
    const li = el('li', 'fresh');
    const a = el('a', undefined, d.filename) as HTMLAnchorElement;
    a.href = '#';
    a.addEventListener('click', (e) => {
      e.preventDefault();
      void open(d.id, a);
    });
    li.append(a, el('div', 'meta', `${d.filetype} · ${fmtBytes(d.size)} · sha256 ${String(d.sha256).slice(0, 12)}…`));
    docs.prepend(li);
    count.textContent = String(seen.size);
  });
  render();
}

async function main() {
  const config: DemoConfig = await (await fetch('/api/config')).json();
  const sub = demoUser();
  const services = list(params.get('services')).length ? list(params.get('services')) : config.services;
  const transports = list(params.get('transports')) as Transport[];
  const initialProperty = params.get('property') || null;

  $('org').textContent = `org ${config.org} · user ${sub} · edges ${config.edges.join(', ')}`;

  // --- selectors ---------------------------------------------------------
  const propSel = $<HTMLSelectElement>('property');
  const pubProp = $<HTMLSelectElement>('pub-property');
  for (const p of config.properties) {
    propSel.append(new Option(p, p));
    pubProp.append(new Option(p, p));
  }
  if (initialProperty) {
    if (![...propSel.options].some((o) => o.value === initialProperty)) propSel.append(new Option(initialProperty, initialProperty));
    propSel.value = initialProperty;
  }
  pubProp.value = config.properties[0] ?? '';
  const pubSvc = $<HTMLSelectElement>('pub-service');
  for (const s of services) pubSvc.append(new Option(s, s));

  // --- feeds -------------------------------------------------------------
  const feeds = new Map<string, { list: HTMLOListElement; count: HTMLElement; n: number }>();
  for (const s of services) {
    const card = el('section', 'card feed');
    card.dataset.service = s;
    const h = el('h2', undefined, s);
    const count = el('span', 'count', '0');
    h.append(count);
    const ol = document.createElement('ol');
    card.append(h, ol);
    $('feeds').append(card);
    feeds.set(s, { list: ol, count, n: 0 });
  }

  // --- latency of our own test events ------------------------------------
  const pending = new Map<string, number>(); // eventId -> performance.now() at click
  const clickLatencies: number[] = [];

  function showEvent(service: string, ev: HeraldEvent) {
    const feed = feeds.get(service);
    if (!feed) return;
    const started = pending.get(ev.eventId);
    let mine = '';
    if (started != null) {
      pending.delete(ev.eventId);
      const ms = performance.now() - started;
      clickLatencies.push(ms);
      const sorted = [...clickLatencies].sort((a, b) => a - b);
      $('lat-last').textContent = fmtMs(ms);
      $('lat-summary').textContent =
        `${sorted.length} test event(s): p50 ${fmtMs(quantile(sorted, 0.5))}, p95 ${fmtMs(quantile(sorted, 0.95))}, max ${fmtMs(sorted[sorted.length - 1])}`;
      mine = ` · publish→shown ${fmtMs(ms)}`;
    }
    const li = el('li', 'fresh' + (mine ? ' mine' : ''));
    li.dataset.seq = String(ev.seq);
    li.append(el('span', 'etype', ev.eventType));
    const entity = ev.entityType ? ` ${ev.entityType}${ev.entityId ? '#' + ev.entityId : ''}` : '';
    const at = Number.isFinite(ev.timestamp) ? new Date(ev.timestamp).toLocaleTimeString() : '';
    li.append(el('div', 'meta', `${at} · seq ${ev.seq} · ${ev.propertyId ?? 'org-wide'}${entity}${mine}`));
    let payload = '';
    try {
      payload = ev.payload == null ? '' : JSON.stringify(ev.payload);
    } catch {
      payload = String(ev.payload);
    }
    if (payload) li.append(el('div', 'meta', payload.length > 120 ? payload.slice(0, 117) + '…' : payload));
    feed.list.prepend(li);
    while (feed.list.children.length > FEED_MAX) feed.list.lastElementChild?.remove();
    feed.n += 1;
    feed.count.textContent = String(feed.n);
  }

  // --- the client ----------------------------------------------------------
  async function getToken(): Promise<string> {
    const r = await fetch(`/api/token?role=user&sub=${encodeURIComponent(sub)}`);
    if (!r.ok) throw new Error(`token endpoint answered ${r.status}`);
    return (await r.json()).token;
  }

  const client = createRealtimeClient({
    urls: config.edges,
    getToken,
    // `uploads` too, for the Documents list (upload.completed events).
    services: services.includes('uploads') ? services : [...services, 'uploads'],
    propertyId: initialProperty,
    ...(transports.length ? { transports } : {}),
    debug: true,
    onStateChange: () => render(),
    onReset: (reason: unknown) => log(`reset: ${JSON.stringify(reason)} (a real app refetches its state here)`),
    onStale: () => log('stale: no sign of life from the connection for a while'),
  });
  (window as any).__demoClient = client;

  for (const s of services) {
    client.subscribe(s, (ev: HeraldEvent) => showEvent(s, ev));
  }

  uploadPanel(client, config.edges[0], getToken);

  // --- chat: one room per property -------------------------------------------
  if (params.get('rooms') !== '0') {
    for (const p of config.properties) $('chats').append(chatPanel(client, p, sub));
  } else {
    $('chats').remove();
  }

  propSel.addEventListener('change', () => {
    const id = propSel.value || null;
    client.setPropertyFilter(id);
    log(`property filter: ${id ?? 'all properties'}`);
  });

  $('logout').addEventListener('click', () => {
    client.logout();
    log('logged out: every tab of this browser profile stops');
  });

  // --- publishing ------------------------------------------------------------
  let pubToken: { token: string; exp: number } | null = null;
  let edgeTurn = 0;
  $('publish').addEventListener('click', async () => {
    const btn = $<HTMLButtonElement>('publish');
    btn.disabled = true;
    const service = pubSvc.value;
    const propertyId = pubProp.value || null;
    const verb = $<HTMLSelectElement>('pub-type').value;
    const eventId = `demo-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    const started = performance.now();
    pending.set(eventId, started);
    try {
      if (!pubToken || pubToken.exp - Date.now() < 60_000) {
        const r = await fetch('/api/token?role=publisher&sub=demo-publisher');
        pubToken = await r.json();
      }
      const edge = config.edges[edgeTurn++ % config.edges.length];
      const entityType = { finance: 'expense', guest: 'guest', tasks: 'task', staff: 'shift' }[service] ?? 'item';
      const r = await fetch(`${edge}/v2/realtime/publish`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${pubToken!.token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({
          service,
          propertyId,
          eventType: `${entityType}.${verb}`,
          eventId,
          entityType,
          entityId: String(1 + Math.floor(Math.random() * 99)),
          payload: { source: 'demo page', clickedAt: Date.now() },
        }),
      });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(`${r.status} ${body?.error?.message ?? ''}`);
      $('pub-result').textContent = `published ${eventId} via ${edge}: seq ${body.seq} (${fmtMs(performance.now() - started)} to ack)`;
    } catch (err) {
      pending.delete(eventId);
      $('pub-result').textContent = `publish failed: ${(err as Error).message}`;
    } finally {
      btn.disabled = false;
    }
  });

  // --- state panel -----------------------------------------------------------
  function render() {
    const s = client.state();
    const pill = $('status-pill');
    pill.textContent = s.status;
    pill.className = `pill ${s.status}`;
    const role = $('role-pill');
    role.textContent = s.role;
    role.className = `pill ${s.role}`;
    $('st-status').textContent = s.status;
    $('st-role').textContent = s.role === 'leader' ? 'leader (holds the connection)' : s.role === 'follower' ? 'follower (events from the leader tab)' : s.role;
    $('st-transport').textContent = s.transport ?? '–';
    $('st-url').textContent = s.url ?? '–';
    $('st-conn').textContent = s.connectionId ?? '–';
    $('st-seq').textContent = `${s.lastSeq ?? '–'} / ${s.epoch ?? '–'}`;
    const rows: string[] = [];
    for (const name of services) {
      const m = s.services?.[name];
      rows.push(
        `<tr><td>${name}</td><td>${m?.delivered ?? 0}</td><td>${m?.suppressedDuplicates ?? 0}</td>` +
          `<td>${fmtMs(m?.p95LatencyMs)}</td><td>${m?.reconnects ?? 0}</td></tr>`,
      );
    }
    $('svc-stats').innerHTML = rows.join('');
  }
  render();
  setInterval(render, 500);
  log(`client started: services ${services.join(', ')}${transports.length ? `, transports ${transports.join(', ')}` : ''}`);
}

main().catch((err) => {
  log(`error: ${(err as Error).message}`);
  console.error(err);
});
