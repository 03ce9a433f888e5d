import { afterEach, describe, expect, it, vi } from 'vitest';
import { Delivery, reportHandlerError } from '../src/delivery.js';
import { HealthTracker } from '../src/health.js';
import type { HeraldEvent } from '../src/types.js';
import { ev } from './fakes.js';

const NOW = 1_700_000_000_000;
const event = (seq: number, service = 'finance', extra: Record<string, unknown> = {}) => ev(seq, service, extra) as HeraldEvent;
const all = { services: ['finance', 'tasks'], propertyId: null };

function delivery(opts: { initial?: string[]; onReset?: (...a: unknown[]) => void } = {}) {
  const health = new HealthTracker(() => NOW);
  const state = { active: true };
  const d = new Delivery({
    initialServices: opts.initial ?? [],
    health,
    ...(opts.onReset === undefined ? {} : { onReset: opts.onReset }),
    active: () => state.active,
  });
  return { d, health, state };
}

afterEach(() => {
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
});

describe('Delivery: handlers', () => {
  it('rejects invalid service names and non-function handlers', () => {
    const { d } = delivery();
    expect(() => d.add('no spaces', () => {})).toThrow(TypeError);
    expect(() => d.add('finance', 'nope' as unknown as () => void)).toThrow('herald: handler must be a function');
    expect(d.services()).toEqual([]);
  });

  it('services() is the sorted union of the initial services and those with handlers', () => {
    const { d } = delivery({ initial: ['tasks', 'finance'] });
    const offGuest = d.add('guest', () => {});
    d.add('finance', () => {});
    expect(d.services()).toEqual(['finance', 'guest', 'tasks']);
    offGuest();
    expect(d.services()).toEqual(['finance', 'tasks']);
  });

  it('a function subscribed twice is called twice and removed once per remover; a remover works once', () => {
    const { d } = delivery();
    const got: number[] = [];
    const h = (e: HeraldEvent) => got.push(e.seq);
    const off1 = d.add('finance', h);
    const off2 = d.add('finance', h);
    d.deliver([event(1)], all);
    expect(got).toEqual([1, 1]);
    expect(off1()).toBe(true);
    expect(off1()).toBe(false);
    d.deliver([event(2)], all);
    expect(got).toEqual([1, 1, 2]);
    expect(off2()).toBe(true);
    expect(d.services()).toEqual([]);
    d.deliver([event(3)], all);
    expect(got).toEqual([1, 1, 2]);
  });
});

describe('Delivery: dedup', () => {
  it('fresh() keeps first sightings in order and counts each duplicate per service', () => {
    const { d, health } = delivery();
    expect(d.fresh([event(1), event(2), event(1, 'tasks')]).map((e) => `${e.service}:${e.seq}`)).toEqual([
      'finance:1',
      'finance:2',
      'tasks:1',
    ]);
    expect(d.fresh([event(2), event(3), event(1), event(1, 'tasks')]).map((e) => e.seq)).toEqual([3]);
    const h = health.snapshot(['finance', 'tasks']);
    expect(h.finance?.suppressedDuplicates).toBe(2);
    expect(h.tasks?.suppressedDuplicates).toBe(1);
  });

  it('after forgetSeen() (a new epoch) the same keys are fresh again', () => {
    const { d } = delivery();
    d.fresh([event(1)]);
    expect(d.fresh([event(1)])).toEqual([]);
    d.forgetSeen();
    expect(d.fresh([event(1)]).map((e) => e.seq)).toEqual([1]);
  });
});

describe('Delivery: dispatch', () => {
  it('delivers only what matches the need: its services, its property or org-wide', () => {
    const { d, health } = delivery();
    const got: string[] = [];
    d.add('finance', (e) => got.push(`finance:${e.seq}:${e.propertyId}`));
    d.add('tasks', (e) => got.push(`tasks:${e.seq}`));
    d.deliver(
      [
        event(1, 'finance', { propertyId: 'p1' }),
        event(2, 'finance', { propertyId: 'p2' }),
        event(3, 'finance', { propertyId: null }),
        event(4, 'tasks', { propertyId: 'p2' }),
        event(5, 'tasks', { propertyId: 'p1' }),
      ],
      { services: ['finance', 'tasks'], propertyId: 'p1' },
    );
    expect(got).toEqual(['finance:1:p1', 'finance:3:null', 'tasks:5']);
    d.deliver([event(6, 'tasks', { propertyId: 'p1' })], { services: ['finance'], propertyId: null });
    expect(got).toHaveLength(3);
    const h = health.snapshot(['finance', 'tasks']);
    expect(h.finance).toMatchObject({ delivered: 2, lastEventAt: NOW, p95LatencyMs: 50 });
    expect(h.tasks?.delivered).toBe(1);
  });

  it('counts a matching event of a service without handlers as delivered', () => {
    const { d, health } = delivery({ initial: ['finance'] });
    d.deliver([event(1)], { services: ['finance'], propertyId: null });
    expect(health.snapshot(['finance']).finance?.delivered).toBe(1);
  });

  it('a throwing handler is reported and keeps neither the other handlers nor later events from running', () => {
    const reportError = vi.fn();
    vi.stubGlobal('reportError', reportError);
    const { d } = delivery();
    const boom = new Error('boom');
    const got: number[] = [];
    d.add('finance', (e) => {
      if (e.seq === 1) throw boom;
    });
    d.add('finance', (e) => got.push(e.seq));
    d.deliver([event(1), event(2)], all);
    expect(got).toEqual([1, 2]);
    expect(reportError).toHaveBeenCalledTimes(1);
    expect(reportError).toHaveBeenCalledWith(boom);
  });

  it('stops mid-batch once the client stopped (a handler logged out)', () => {
    const { d, state } = delivery();
    const got: number[] = [];
    d.add('finance', (e) => {
      got.push(e.seq);
      if (e.seq === 2) state.active = false;
    });
    d.deliver([event(1), event(2), event(3)], all);
    expect(got).toEqual([1, 2]);
  });

  it('a handler unsubscribed by another one during dispatch still gets the current event, not the next', () => {
    const { d } = delivery();
    const got: string[] = [];
    let offB = (): boolean => false;
    d.add('finance', (e) => {
      got.push(`a${e.seq}`);
      offB();
    });
    offB = d.add('finance', (e) => got.push(`b${e.seq}`));
    d.deliver([event(1), event(2)], all);
    expect(got).toEqual(['a1', 'b1', 'a2']);
  });
});

describe('Delivery: resets', () => {
  it('calls onReset with the reason alone, or with the services of a scoped reset', () => {
    const onReset = vi.fn();
    const { d } = delivery({ onReset });
    d.reset('history_gone');
    d.reset('dropped', ['analytics']);
    expect(onReset.mock.calls).toEqual([['history_gone'], ['dropped', ['analytics']]]);
  });

  it('reports an onReset that throws instead of throwing into the client', () => {
    const reportError = vi.fn();
    vi.stubGlobal('reportError', reportError);
    const err = new Error('refetch failed');
    const { d } = delivery({
      onReset: () => {
        throw err;
      },
    });
    expect(() => d.reset('epoch_changed')).not.toThrow();
    expect(reportError).toHaveBeenCalledWith(err);
  });

  it('without reportError, handler errors go to console.error', () => {
    vi.stubGlobal('reportError', undefined);
    const spy = vi.spyOn(console, 'error').mockImplementation(() => {});
    const err = new Error('x');
    reportHandlerError(err);
    expect(spy).toHaveBeenCalledWith('herald: an event handler threw', err);
  });
});
