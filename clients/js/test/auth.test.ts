import { describe, expect, it, vi } from 'vitest';
import { bearerHeader, isUsableToken, jwtExpiry, jwtOrg, TokenManager } from '../src/auth.js';
import { FakeClock, flush, jwt } from './fakes.js';

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('token checks', () => {
  it('never builds an Authorization header from an empty or malformed token', () => {
    for (const bad of ['', ' ', 'undefined', 'null', 'a b', 'tok\n', 'é', undefined, null, 42]) {
      expect(isUsableToken(bad)).toBe(false);
      expect(bearerHeader(bad)).toBeNull();
    }
    expect(bearerHeader('abc.def.ghi')).toEqual({ Authorization: 'Bearer abc.def.ghi' });
  });

  it('reads a JWT exp and ignores opaque tokens', () => {
    expect(jwtExpiry(jwt({ sub: 'u', exp: 2000 }))).toBe(2_000_000);
    expect(jwtExpiry('opaque-token')).toBeNull();
    expect(jwtExpiry('a.%%%.c')).toBeNull();
  });

  it('reads a JWT org only when it is an org id the edge accepts', () => {
    expect(jwtOrg(jwt({ sub: 'u', org: 'acme', exp: 2000 }))).toBe('acme');
    expect(jwtOrg(jwt({ org: 'Org_9-x' }))).toBe('Org_9-x');
    expect(jwtOrg(jwt({ org: 'o'.repeat(64) }))).toBe('o'.repeat(64));
    // base64url, unpadded: this payload holds both '-' and '_'.
    const urlSafe = jwt({ sub: 'a???~~~', org: 'acme' });
    expect(urlSafe.split('.')[1]).toMatch(/-.*_|_.*-/);
    expect(jwtOrg(urlSafe)).toBe('acme');
    // Not decodable, no org, or no org id (a cross-org token's '*'): none.
    for (const t of [
      'opaque-token',
      'a.%%%.c',
      'a.b',
      `x.${btoa('[1]')}.y`,
      jwt({ sub: 'u' }),
      jwt({ org: '' }),
      jwt({ org: '*' }),
      jwt({ org: 'ac.me' }),
      jwt({ org: 'ac me' }),
      jwt({ org: 'o'.repeat(65) }),
      jwt({ org: 42 }),
    ]) {
      expect(jwtOrg(t), t).toBeNull();
    }
  });
});

describe('TokenManager', () => {
  const setup = (fetchToken: () => Promise<string>) => {
    const clock = new FakeClock();
    const fresh: string[] = [];
    const tm = new TokenManager(fetchToken, clock.env(), (t) => fresh.push(t));
    return { clock, tm, fresh };
  };

  it('is single-flight: concurrent callers share one getToken() call', async () => {
    const d = deferred<string>();
    const getToken = vi.fn(() => d.promise);
    const { tm, fresh } = setup(getToken);
    const a = tm.get();
    const b = tm.get();
    const c = tm.get(true);
    await flush();
    expect(getToken).toHaveBeenCalledTimes(1);
    d.resolve('tok-1');
    expect(await Promise.all([a, b, c])).toEqual(['tok-1', 'tok-1', 'tok-1']);
    expect(fresh).toEqual(['tok-1']); // broadcast once
  });

  it('answers from the cache until forced', async () => {
    let n = 0;
    const getToken = vi.fn(async () => `tok-${++n}`);
    const { tm } = setup(getToken);
    expect(await tm.get()).toBe('tok-1');
    expect(await tm.get()).toBe('tok-1');
    expect(getToken).toHaveBeenCalledTimes(1);
    expect(await tm.get(true)).toBe('tok-2');
    expect(getToken).toHaveBeenCalledTimes(2);
  });

  it('refreshes a JWT that is about to expire', async () => {
    const clock = new FakeClock();
    const nowS = Math.floor(clock.now / 1000);
    const tokens = [jwt({ exp: nowS + 120 }), jwt({ exp: nowS + 3600 })];
    const getToken = vi.fn(async () => tokens.shift() ?? 'x');
    const tm = new TokenManager(getToken, clock.env());
    const first = await tm.get();
    expect(await tm.get()).toBe(first);
    await clock.advance(90_000); // 30 s left: under the 60 s margin
    const second = await tm.get();
    expect(second).not.toBe(first);
    expect(getToken).toHaveBeenCalledTimes(2);
  });

  it('answers null (and sends nothing) when getToken fails or returns junk', async () => {
    const { tm: failing } = setup(async () => {
      throw new Error('logged out');
    });
    expect(await failing.get()).toBeNull();
    const { tm: empty } = setup(async () => '');
    expect(await empty.get()).toBeNull();
    expect(empty.peek()).toBeNull();
  });

  it('adopts tokens from the leader without calling getToken', async () => {
    const getToken = vi.fn(async () => 'own');
    const { tm } = setup(getToken);
    tm.adopt('from-leader');
    expect(await tm.get()).toBe('from-leader');
    tm.adopt(''); // ignored
    expect(tm.peek()).toBe('from-leader');
    expect(getToken).not.toHaveBeenCalled();
  });

  it('stops calling getToken once disposed', async () => {
    const getToken = vi.fn(async () => 'tok');
    const { tm } = setup(getToken);
    tm.dispose();
    expect(await tm.get(true)).toBeNull();
    await flush();
    expect(getToken).not.toHaveBeenCalled();
  });
});
