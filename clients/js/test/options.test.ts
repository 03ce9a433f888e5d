import { describe, expect, it } from 'vitest';
import { checkService, DEFAULT_STALE_AFTER_MS, resolveOptions } from '../src/options.js';
import type { RealtimeOptions, TransportKind } from '../src/types.js';

const base: RealtimeOptions = { urls: ['http://edge-a.test'], getToken: async () => 'tok' };

describe('options', () => {
  it('fills in the defaults', () => {
    expect(resolveOptions(base)).toEqual({
      urls: ['http://edge-a.test'],
      transports: ['websocket', 'sse', 'longpoll'],
      channelName: 'herald',
      staleAfterMs: 60_000,
      services: [],
      telemetry: { sampleRate: 0.02, endpoint: null },
    });
    expect(DEFAULT_STALE_AFTER_MS).toBe(60_000);
  });

  it('keeps the given values, copies the arrays, and dedups transports in the app’s order', () => {
    const urls = ['http://a.test', 'http://b.test'];
    const services = ['finance'];
    const c = resolveOptions({
      ...base,
      urls,
      services,
      transports: ['sse', 'longpoll', 'sse'],
      channelName: 'app',
      staleAfterMs: 5_000,
    });
    expect(c).toEqual({ urls: ['http://a.test', 'http://b.test'], transports: ['sse', 'longpoll'], channelName: 'app', staleAfterMs: 5_000, services: ['finance'], telemetry: { sampleRate: 0.02, endpoint: null } });
    urls.push('http://c.test');
    services.push('tasks');
    expect(c.urls).toHaveLength(2);
    expect(c.services).toEqual(['finance']);
  });

  it('drops unknown transports and refuses a list with none left', () => {
    const transports = ['carrier-pigeon', 'longpoll'] as unknown as TransportKind[];
    expect(resolveOptions({ ...base, transports }).transports).toEqual(['longpoll']);
    expect(() => resolveOptions({ ...base, transports: [] })).toThrow("herald: `transports` must name 'websocket', 'sse' or 'longpoll'");
  });

  it('refuses missing URLs, empty URLs and a missing getToken', () => {
    expect(() => resolveOptions({ ...base, urls: [] })).toThrow('herald: `urls` must be a non-empty array of edge base URLs');
    expect(() => resolveOptions({ ...base, urls: [''] })).toThrow(TypeError);
    expect(() => resolveOptions({ ...base, getToken: undefined as unknown as RealtimeOptions['getToken'] })).toThrow(
      'herald: `getToken` must be a function',
    );
  });

  it('accepts 1–64 of [A-Za-z0-9_-] as a service name and nothing else', () => {
    expect(() => checkService('a')).not.toThrow();
    expect(() => checkService('x'.repeat(64))).not.toThrow();
    expect(() => checkService('Fin_ance-2')).not.toThrow();
    expect(() => checkService('x'.repeat(65))).toThrow(TypeError);
    expect(() => checkService('')).toThrow(TypeError);
    expect(() => checkService('no spaces')).toThrow('herald: invalid service name "no spaces" (1–64 of [A-Za-z0-9_-])');
    expect(() => resolveOptions({ ...base, services: ['ok', 'not/ok'] })).toThrow('herald: invalid service name "not/ok"');
  });

  it('checks the telemetry option: a rate from 0 to 1, `enabled: false` turns it off', () => {
    expect(resolveOptions({ ...base, telemetry: { sampleRate: 1 } }).telemetry).toEqual({ sampleRate: 1, endpoint: null });
    expect(resolveOptions({ ...base, telemetry: { sampleRate: 0.5, enabled: false } }).telemetry.sampleRate).toBe(0);
    expect(resolveOptions({ ...base, telemetry: { endpoint: 'https://t.test/x' } }).telemetry).toEqual({
      sampleRate: 0.02,
      endpoint: 'https://t.test/x',
    });
    for (const sampleRate of [-0.1, 1.5, Number.NaN, '0.5' as unknown as number]) {
      expect(() => resolveOptions({ ...base, telemetry: { sampleRate } })).toThrow('herald: `telemetry.sampleRate` must be a number from 0 to 1');
    }
    expect(() => resolveOptions({ ...base, telemetry: { endpoint: '' } })).toThrow(TypeError);
  });
});
