// The e2e test page's script: served by the demo server as /e2e.js (bundled
// by esbuild from the SDK's sources), with a bare page at /e2e.html. The tests
// drive it through window.T (rooms through T.room*, see the rooms section).
import { createRealtimeClient } from '../src/index';
import type { Room } from '../src/index';

type Transport = 'websocket' | 'sse' | 'longpoll';

interface StartOptions {
  urls: string[];
  services?: string[];
  propertyId?: string | null;
  transports?: Transport[];
  sub?: string;
  /** The token's `rooms` claim (absent: every room). */
  rooms?: string[];
  /** Lifetimes in seconds of the tokens getToken hands out, call by call (the last one repeats). */
  tokenTtls?: number[];
  staleAfterMs?: number;
  channelName?: string;
  telemetry?: { enabled?: boolean; sampleRate?: number; endpoint?: string };
}

interface Received {
  t: number;
  service: string;
  seq: number;
  eventId: string;
  eventType: string;
  propertyId: string | null;
  entityId?: string;
  sentAt?: number;
  run?: string;
}

const T: any = {
  ready: false,
  client: null as any,
  events: [] as Received[],
  stateLog: [] as Array<{ t: number; status: string; role: string; transport: string | null; connectionId: string | null; url: string | null }>,
  resets: [] as Array<{ t: number; reason: unknown }>,
  stales: [] as number[],
  tokenCalls: [] as Array<{ t: number; ttl: number; exp: number }>,
  errors: [] as string[],

  start(opts: StartOptions) {
    const services = opts.services ?? ['finance', 'guest', 'tasks', 'staff'];
    const ttls = opts.tokenTtls?.length ? opts.tokenTtls : [3600];
    const sub = opts.sub ?? 'e2e-user';
    const getToken = async (): Promise<string> => {
      const ttl = ttls[Math.min(T.tokenCalls.length, ttls.length - 1)];
      const rooms = opts.rooms ? `&rooms=${encodeURIComponent(opts.rooms.join(','))}` : '';
      const r = await fetch(`/api/token?role=user&sub=${encodeURIComponent(sub)}&ttl=${ttl}${rooms}`);
      if (!r.ok) throw new Error(`token endpoint: ${r.status}`);
      const body = await r.json();
      T.tokenCalls.push({ t: Date.now(), ttl, exp: body.exp });
      return body.token;
    };
    const record = () => {
      const s = T.client?.state?.();
      if (!s) return;
      const last = T.stateLog[T.stateLog.length - 1];
      const entry = { t: Date.now(), status: s.status, role: s.role, transport: s.transport, connectionId: s.connectionId, url: s.url };
      if (
        !last ||
        last.status !== entry.status ||
        last.role !== entry.role ||
        last.transport !== entry.transport ||
        last.connectionId !== entry.connectionId ||
        last.url !== entry.url
      ) {
        T.stateLog.push(entry);
      }
    };
    const options: any = {
      urls: opts.urls,
      getToken,
      services,
      propertyId: opts.propertyId ?? null,
      debug: true,
      onStateChange: () => queueMicrotask(record),
      onReset: (reason: unknown) => T.resets.push({ t: Date.now(), reason }),
      onStale: () => T.stales.push(Date.now()),
    };
    if (opts.transports) options.transports = opts.transports;
    if (opts.staleAfterMs) options.staleAfterMs = opts.staleAfterMs;
    if (opts.channelName) options.channelName = opts.channelName;
    if (opts.telemetry) options.telemetry = opts.telemetry;
    T.client = createRealtimeClient(options);
    for (const service of services) {
      T.client.subscribe(service, (ev: any) => {
        T.events.push({
          t: Date.now(),
          service,
          seq: ev?.seq,
          eventId: ev?.eventId,
          eventType: ev?.eventType,
          propertyId: ev?.propertyId ?? null,
          entityId: ev?.entityId,
          sentAt: ev?.payload?.sentAt,
          run: ev?.payload?.run,
        });
      });
    }
    // onStateChange may not fire for every field; sample as well.
    setInterval(record, 20);
    record();
    return true;
  },

  state() {
    return T.client ? T.client.state() : null;
  },

  /** Events, optionally only those whose payload.run equals `run`. */
  eventsFor(run: string | null) {
    return run ? T.events.filter((e: Received) => e.run === run) : T.events;
  },

  setPropertyFilter(id: string | null) {
    T.client.setPropertyFilter(id);
  },

  logout() {
    const t = Date.now();
    T.client.logout();
    return t;
  },

  close() {
    T.client.close();
  },

  // ---- rooms ----------------------------------------------------------

  rooms: new Map<string, Room>(),
  /** Per room: every change of the typing users and of the members, with its time. */
  roomLog: {} as Record<string, { typing: Array<{ t: number; users: string[] }>; presence: Array<{ t: number; members: Record<string, string> }>; errors: Array<{ t: number; code: string }> }>,

  roomJoin(id: string) {
    if (T.rooms.has(id)) return true;
    const room: Room = T.client.room(id);
    T.rooms.set(id, room);
    const log: any = (T.roomLog[id] = { typing: [], presence: [], errors: [] });
    room.onTyping(() => log.typing.push({ t: Date.now(), users: [...room.typingUsers()] }));
    room.onPresence(() => log.presence.push({ t: Date.now(), members: { ...room.members() } }));
    room.onError((e) => log.errors.push({ t: Date.now(), code: e.code }));
    return true;
  },

  /** Resolves with {ok, seq, clientMsgId} or {ok: false, code}. */
  async roomSay(id: string, text: string) {
    try {
      const m = await T.rooms.get(id).say(text);
      return { ok: true, seq: m.seq, clientMsgId: m.clientMsgId, t: Date.now() };
    } catch (e: any) {
      return { ok: false, code: e?.code ?? String(e), t: Date.now() };
    }
  },

  roomTyping(id: string) {
    T.rooms.get(id).typing();
    return Date.now();
  },

  roomRead(id: string, seq: number) {
    T.rooms.get(id).read(seq);
  },

  async roomLeave(id: string) {
    const r = T.rooms.get(id);
    T.rooms.delete(id);
    await r?.leave();
  },

  async roomHistory(id: string, before?: number, limit?: number) {
    try {
      return (await T.rooms.get(id).history(before, limit)).map((m: any) => m.seq);
    } catch (e: any) {
      return { code: e?.code ?? String(e) };
    }
  },

  roomState(id: string) {
    const r: Room | undefined = T.rooms.get(id);
    if (!r) return null;
    return {
      joined: r.joined(),
      messages: r.messages().map((m) => ({ seq: m.seq, text: m.text, userId: m.userId, status: m.status, clientMsgId: m.clientMsgId ?? null })),
      members: { ...r.members() },
      typing: [...r.typingUsers()],
      receipts: { ...r.receipts() },
      lastError: r.lastError(),
    };
  },

  /**
   * Makes the page report itself hidden and fires `visibilitychange`, as a
   * switch to another browser tab would (headless pages never become hidden).
   */
  hide() {
    Object.defineProperty(document, 'visibilityState', { value: 'hidden', configurable: true });
    Object.defineProperty(document, 'hidden', { value: true, configurable: true });
    document.dispatchEvent(new Event('visibilitychange'));
  },

  /** Undoes hide(). */
  show() {
    delete (document as any).visibilityState;
    delete (document as any).hidden;
    document.dispatchEvent(new Event('visibilitychange'));
  },
};

window.addEventListener('error', (e) => T.errors.push(String(e.message)));
window.addEventListener('unhandledrejection', (e) => T.errors.push(String((e as PromiseRejectionEvent).reason)));
(window as any).T = T;
T.ready = true;
