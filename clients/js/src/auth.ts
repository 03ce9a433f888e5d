// Tokens and logout. A token is only ever sent when it is usable (non-empty,
// header-safe, not the string "undefined"), so the edge never sees an empty or
// malformed Authorization header. `getToken()` runs single-flight, and only in
// the leader; the result is broadcast so followers never need the network.
// Logout travels on the `auth-control` channel (BroadcastChannel plus a
// storage-event fallback) so every tab stops at once.

import { openBus, type Bus } from './channel.js';
import { randomId, type Env } from './env.js';

/** Refresh a JWT this long before its `exp`. */
const RENEW_BEFORE_MS = 60_000;
/** A token fetched this recently is used even if it looks expired (the browser clock may be off). */
const MIN_REFRESH_INTERVAL_MS = 10_000;
/** Longest wait for `getToken()`. */
const GET_TOKEN_TIMEOUT_MS = 15_000;

/** Whether `t` can be put in an `Authorization: Bearer` header or a `token` parameter. */
export function isUsableToken(t: unknown): t is string {
  if (typeof t !== 'string' || t.length === 0 || t.length > 16_384) return false;
  if (t === 'undefined' || t === 'null') return false; // the classic `${token}` bug
  return /^[\x21-\x7e]+$/.test(t); // visible ASCII, no spaces: what a header value may hold
}

/** The `Authorization` header for a token, or null when the token must not be sent. */
export function bearerHeader(token: unknown): { Authorization: string } | null {
  return isUsableToken(token) ? { Authorization: `Bearer ${token}` } : null;
}

/**
 * The claims of a JWT, decoded but not verified (the edge verifies), or null
 * when the token is not a JWT we can read: such a token is treated as opaque.
 */
function jwtClaims(token: string): Record<string, unknown> | null {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[1] === undefined) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
    const claims: unknown = JSON.parse(atob(padded));
    if (typeof claims === 'object' && claims !== null && !Array.isArray(claims)) {
      return claims as Record<string, unknown>;
    }
  } catch {
    // Not base64url JSON.
  }
  return null;
}

/** The `exp` of a JWT in ms since the epoch, or null (not a JWT, no exp). */
export function jwtExpiry(token: string): number | null {
  const exp = jwtClaims(token)?.exp;
  return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : null;
}

/** What the edge accepts as an org id: 1–64 characters of `[A-Za-z0-9_-]`. */
const ORG_ID = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * The `org` claim of a JWT, or null (not a JWT, no org, or not an org id,
 * such as a cross-org token's `*`). Transports send it as `org=` on every
 * request so that a load balancer can route an org's users to the same
 * nodes (protocol §4, org-affine routing); without it they send none and
 * any node serves them all the same.
 */
export function jwtOrg(token: string): string | null {
  const org = jwtClaims(token)?.org;
  return typeof org === 'string' && ORG_ID.test(org) ? org : null;
}

/** The `sub` claim (user id) of a JWT, or null. Rooms show a user's own unsent messages under it. */
export function jwtSub(token: string): string | null {
  const sub = jwtClaims(token)?.sub;
  return typeof sub === 'string' && sub.length > 0 ? sub : null;
}

/**
 * The tab's token. `get()` answers the cached token while it is usable and
 * not about to expire, else calls `getToken()` once for all concurrent
 * callers. Followers `adopt()` the tokens the leader broadcasts.
 */
export class TokenManager {
  private token: string | null = null;
  private fetchedAt = -Infinity;
  private inflight: Promise<string | null> | null = null;
  private disposed = false;

  constructor(
    private readonly fetchToken: () => Promise<string>,
    private readonly env: Pick<Env, 'now' | 'setTimeout' | 'clearTimeout'>,
    /** Called with each fresh token from `getToken()` (the leader broadcasts it). */
    private readonly onFresh: (token: string) => void = () => {},
  ) {}

  /** The cached token, if usable. */
  peek(): string | null {
    return this.token;
  }

  /** Whether the cached token should be replaced before use. */
  private stale(): boolean {
    if (this.token === null) return true;
    const now = this.env.now();
    const exp = jwtExpiry(this.token);
    return exp !== null && exp - now < RENEW_BEFORE_MS && now - this.fetchedAt > MIN_REFRESH_INTERVAL_MS;
  }

  /** A usable token, or null when none could be had (the caller backs off). */
  get(force = false): Promise<string | null> {
    if (this.disposed) return Promise.resolve(null);
    if (!force && !this.stale()) return Promise.resolve(this.token);
    if (this.inflight !== null) return this.inflight;
    this.inflight = this.fetch().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  private async fetch(): Promise<string | null> {
    let timer: unknown;
    try {
      const timeout = new Promise<null>((resolve) => {
        timer = this.env.setTimeout(() => resolve(null), GET_TOKEN_TIMEOUT_MS);
      });
      const token = await Promise.race([Promise.resolve().then(this.fetchToken), timeout]);
      if (this.disposed || !isUsableToken(token)) return null;
      this.token = token;
      this.fetchedAt = this.env.now();
      this.onFresh(token);
      return token;
    } catch {
      return null;
    } finally {
      this.env.clearTimeout(timer);
    }
  }

  /** A token another tab fetched. */
  adopt(token: string): void {
    if (this.disposed || !isUsableToken(token)) return;
    this.token = token;
    this.fetchedAt = this.env.now();
  }

  /** Forgets the token and refuses to fetch another (logout, close). */
  dispose(): void {
    this.disposed = true;
    this.token = null;
  }
}

/** The logout channel shared by every tab of the origin. */
export const AUTH_CONTROL = 'auth-control';
/** A localStorage key older apps write on logout; a change to it also logs out. */
const LEGACY_LOGOUT_KEY = 'auth-logout';

export interface AuthControl {
  /** Tells every other tab to log out. */
  broadcastLogout(): void;
  close(): void;
}

/** Listens for `{type:'logout'}` on `auth-control` (BroadcastChannel and storage events). */
export function openAuthControl(env: Env, onLogout: () => void): AuthControl {
  const bus: Bus<{ type: 'logout' }> = openBus(
    env,
    AUTH_CONTROL,
    () => onLogout(),
    (raw) => {
      if (typeof raw !== 'object' || raw === null) return null;
      const type = (raw as { type?: unknown }).type;
      return type === 'logout' || type === LEGACY_LOGOUT_KEY ? { type: 'logout' } : null;
    },
    // Both paths always: a tab without BroadcastChannel must hear a tab with it.
    { storageKey: AUTH_CONTROL, alsoStorage: true, extraStorageKeys: [LEGACY_LOGOUT_KEY] },
  );
  return {
    broadcastLogout() {
      bus.post({ type: 'logout', id: randomId(env.random), ts: env.now() } as { type: 'logout' });
    },
    close: () => bus.close(),
  };
}
