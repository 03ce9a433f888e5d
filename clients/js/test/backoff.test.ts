import { describe, expect, it } from 'vitest';
import { Backoff, jitter } from '../src/backoff.js';

describe('Backoff (full jitter)', () => {
  it('doubles the ceiling from 1 s and caps it at 30 s', () => {
    const b = new Backoff({ random: () => 0.5 });
    const ceilings: number[] = [];
    for (let i = 0; i < 8; i++) {
      ceilings.push(b.ceiling());
      b.next();
    }
    expect(ceilings).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });

  it('draws each delay uniformly in [0, ceiling)', () => {
    const low = new Backoff({ random: () => 0 });
    const high = new Backoff({ random: () => 0.999999 });
    for (let i = 0; i < 10; i++) {
      const ceiling = high.ceiling();
      expect(low.next()).toBe(0);
      const d = high.next();
      expect(d).toBeLessThan(ceiling);
      expect(d).toBeGreaterThanOrEqual(ceiling - 1);
    }
  });

  it('stays within bounds with a real random source', () => {
    const b = new Backoff();
    for (let i = 0; i < 200; i++) {
      const ceiling = b.ceiling();
      const d = b.next();
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThan(ceiling);
      expect(d).toBeLessThan(30_000);
    }
  });

  it('starts over after reset', () => {
    const b = new Backoff({ random: () => 0.5 });
    b.next();
    b.next();
    b.next();
    expect(b.attempts()).toBe(3);
    b.reset();
    expect(b.attempts()).toBe(0);
    expect(b.ceiling()).toBe(1000);
    expect(b.next()).toBe(500);
  });

  it('jitter(min, max) covers both ends', () => {
    expect(jitter(2000, 5000, () => 0)).toBe(2000);
    expect(jitter(2000, 5000, () => 0.9999999)).toBe(5000);
  });
});
