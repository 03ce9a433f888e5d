import { describe, expect, it } from 'vitest';
import { LeaseElector, LockElector, type Role } from '../src/leader.js';
import { flush, World } from './fakes.js';

const KEY = 'herald:leader-lease';

function leaseTab(world: World, id: string) {
  const tab = world.addTab({ locks: false });
  const roles: Role[] = [];
  const storage = tab.env.storage;
  if (storage === null) throw new Error('storage');
  const elector = new LeaseElector(storage, KEY, id, tab.env, (r) => roles.push(r));
  return { tab, roles, elector, leader: () => elector.isLeader() };
}

describe('LeaseElector (localStorage fallback)', () => {
  it('the first tab becomes leader after confirming its claim; a second stays follower', async () => {
    const world = new World();
    const a = leaseTab(world, 'a');
    const b = leaseTab(world, 'b');
    a.elector.start();
    await world.clock.advance(200);
    expect(a.leader()).toBe(true);
    b.elector.start();
    await world.clock.advance(5_000);
    expect(b.leader()).toBe(false);
    expect(b.roles).toEqual([]);
  });

  it('renews the lease every 5 s so it never lapses while the leader lives', async () => {
    const world = new World();
    const a = leaseTab(world, 'a');
    const b = leaseTab(world, 'b');
    a.elector.start();
    await world.clock.advance(200);
    b.elector.start();
    await world.clock.advance(60_000);
    expect(a.leader()).toBe(true);
    expect(b.leader()).toBe(false);
    const lease = JSON.parse(world.data.get(KEY) ?? '{}') as { owner: string; expiresAt: number };
    expect(lease.owner).toBe('a');
    expect(lease.expiresAt - world.clock.now).toBeGreaterThan(4_000);
  });

  it('a follower takes over once a crashed leader’s lease expires (10 s)', async () => {
    const world = new World();
    const a = leaseTab(world, 'a');
    const b = leaseTab(world, 'b');
    a.elector.start();
    await world.clock.advance(200);
    b.elector.start();
    await world.clock.advance(1_000);
    // Crash: a's timers stop, nothing is cleaned up.
    (a.elector as unknown as { running: boolean }).running = false;
    await world.clock.advance(8_000);
    expect(b.leader()).toBe(false); // lease still valid
    await world.clock.advance(3_500);
    expect(b.leader()).toBe(true);
    expect(b.roles).toEqual(['leader']);
  });

  it('a graceful stop hands over at once (the lease is removed)', async () => {
    const world = new World();
    const a = leaseTab(world, 'a');
    const b = leaseTab(world, 'b');
    a.elector.start();
    await world.clock.advance(200);
    b.elector.start();
    await world.clock.advance(2_000);
    a.elector.stop();
    expect(a.roles).toEqual(['leader', 'follower']);
    await world.clock.advance(200); // the storage event triggers b's claim; 150 ms to confirm
    expect(b.leader()).toBe(true);
  });

  it('two tabs claiming at the same moment settle on one leader', async () => {
    const world = new World();
    const a = leaseTab(world, 'a');
    const b = leaseTab(world, 'b');
    a.elector.start(); // claims
    // b read the storage before a's claim landed (another process): it claims too, last.
    world.data.delete(KEY);
    b.elector.start();
    await world.clock.advance(300);
    expect([a.leader(), b.leader()].filter(Boolean)).toHaveLength(1);
    expect(b.leader()).toBe(true);
  });

  it('a leader that finds another owner (it was frozen) steps down', async () => {
    const world = new World();
    const a = leaseTab(world, 'a');
    a.elector.start();
    await world.clock.advance(200);
    world.data.set(KEY, JSON.stringify({ owner: 'z', expiresAt: world.clock.now + 10_000 }));
    await world.clock.advance(1_000);
    expect(a.leader()).toBe(false);
  });
});

describe('LockElector (Web Locks)', () => {
  it('leads once granted, holds the lock until stop(), then the next tab leads', async () => {
    const world = new World();
    const rolesA: Role[] = [];
    const rolesB: Role[] = [];
    const a = new LockElector(world.locks, 'herald:leader', (r) => rolesA.push(r));
    const b = new LockElector(world.locks, 'herald:leader', (r) => rolesB.push(r));
    a.start();
    await flush();
    b.start();
    await flush();
    expect(rolesA).toEqual(['leader']);
    expect(rolesB).toEqual([]);
    a.stop();
    await flush();
    expect(rolesA).toEqual(['leader', 'follower']);
    expect(rolesB).toEqual(['leader']);
    b.stop();
    await flush();
    expect(world.locks.isHeld('herald:leader')).toBe(false);
  });

  it('a stop() while waiting cancels the request', async () => {
    const world = new World();
    const rolesB: Role[] = [];
    const a = new LockElector(world.locks, 'L', () => {});
    const b = new LockElector(world.locks, 'L', (r) => rolesB.push(r));
    a.start();
    b.start();
    await flush();
    b.stop();
    a.stop();
    await flush();
    expect(rolesB).toEqual([]);
    expect(world.locks.isHeld('L')).toBe(false);
  });
});
