// Builds a TransportContext on a fake tab and records what the transport reports.

import type { Subscription } from '../src/routing.js';
import type { CloseReason, OpenInfo, TransportContext } from '../src/transport/types.js';
import type { HeraldEvent, ResetReason } from '../src/types.js';
import { World, type Tab } from './fakes.js';

export interface Recorder {
  opened: OpenInfo[];
  events: Array<{ events: HeraldEvent[]; cursor: number | null }>;
  cursors: Array<{ seq: number; epoch: string | null }>;
  resets: Array<{ reason: ResetReason; seq: number | null; epoch: string | null; services?: string[] }>;
  updated: Array<{ services: string[]; propertyId: string | null }>;
  closed: Array<{ reason: CloseReason; opened: boolean }>;
}

export function transportContext(
  opts: {
    sub?: Subscription;
    cursor?: { lastSeq: number | null; epoch: string | null };
    token?: string;
    freshToken?: string | null;
    hidden?: boolean;
    url?: string;
  } = {},
) {
  const world = new World();
  const tab: Tab = world.addTab();
  const rec: Recorder = { opened: [], events: [], cursors: [], resets: [], updated: [], closed: [] };
  const state = {
    sub: opts.sub ?? { services: ['finance', 'tasks'], propertyId: 'p1' },
    cursor: opts.cursor ?? { lastSeq: 41, epoch: 'E' },
    hidden: opts.hidden ?? false,
    tokenCalls: [] as boolean[],
  };
  const ctx: TransportContext = {
    url: opts.url ?? 'http://edge.test:8080',
    token: opts.token ?? 'tok-1',
    env: tab.env,
    handlers: {
      onOpen: (i) => rec.opened.push(i),
      onEvents: (events, cursor) => {
        rec.events.push({ events, cursor });
        const last = events[events.length - 1];
        const seq = cursor ?? last?.seq;
        if (seq !== undefined) state.cursor = { ...state.cursor, lastSeq: seq };
      },
      onCursor: (seq, epoch) => {
        rec.cursors.push({ seq, epoch });
        state.cursor = { lastSeq: seq, epoch: epoch ?? state.cursor.epoch };
      },
      onReset: (reason, seq, epoch, services) =>
        rec.resets.push(services === undefined ? { reason, seq, epoch } : { reason, seq, epoch, services }),
      onUpdated: (u) => rec.updated.push(u),
      onClose: (reason, opened) => rec.closed.push({ reason, opened }),
    },
    subscription: () => state.sub,
    cursor: () => state.cursor,
    getToken: async (force) => {
      state.tokenCalls.push(force);
      return opts.freshToken === undefined ? 'tok-2' : opts.freshToken;
    },
    hidden: () => state.hidden,
  };
  return { world, tab, ctx, rec, state };
}
