// Opens the demo page on a running stack, fills its feeds with hotel-like
// events (three published by clicking "Publish test event", the rest over
// HTTP) and writes a screenshot. Used by the e2e suite and by
// `npm run screenshot`.
import fs from 'node:fs';
import path from 'node:path';
import { sleep, waitFor } from './harness.mjs';

const GUESTS = ['Ana Costa', 'Lena Dubois', 'Kenji Sato', 'Omar Haddad', 'Julia Eriksen', 'Mateo Ruiz'];
const TASKS = ['Replace light bulb', 'Deliver extra pillows', 'Fix shower drain', 'Restock minibar', 'Review guest feedback'];
const STAFF = ['Priya Nair', 'Goran Petrov', 'Hana Novak', 'Diego Alves'];
const PROPS = ['lisbon', 'porto', 'seville'];

/** The i-th event of a small simulated hotel day. */
function hotelEvent(i) {
  const prop = i % 7 === 6 ? null : PROPS[i % 3];
  switch (i % 4) {
    case 0:
      return {
        service: 'finance',
        propertyId: prop,
        eventType: ['expense.created', 'expense.updated', 'expense.approved'][i % 3],
        entityType: 'expense',
        entityId: `exp-${1040 + i}`,
        payload: { amount: Math.round((40 + ((i * 137) % 900)) * 100) / 100, currency: 'EUR', category: ['utilities', 'laundry', 'marketing'][i % 3] },
      };
    case 1:
      return {
        service: 'guest',
        propertyId: PROPS[i % 3],
        eventType: ['guest.checked_in', 'guest.checked_out', 'guest.updated'][i % 3],
        entityType: 'guest_stay',
        entityId: `stay-${2200 + i}`,
        payload: { guestName: GUESTS[i % GUESTS.length], room: 100 + ((i * 37) % 500), nights: 1 + (i % 5) },
      };
    case 2:
      return {
        service: 'tasks',
        propertyId: prop,
        eventType: ['task.created', 'task.updated', 'task.completed'][i % 3],
        entityType: 'task',
        entityId: `task-${300 + i}`,
        payload: { title: TASKS[i % TASKS.length], assignee: STAFF[(i >> 2) % STAFF.length], status: ['open', 'in_progress', 'done'][i % 3] },
      };
    default:
      return {
        service: 'staff',
        propertyId: prop,
        eventType: ['shift.created', 'shift.updated', 'shift.deleted'][i % 3],
        entityType: 'shift',
        entityId: `shift-${500 + i}`,
        payload: { name: STAFF[(i >> 2) % STAFF.length], role: ['reception', 'housekeeping', 'maintenance'][i % 3], from: '07:00', to: '15:00' },
      };
  }
}

export async function captureDemo(stack, outFile) {
  const ctx = await stack.newContext();
  try {
    const page = await ctx.newPage();
    await page.setViewportSize({ width: 1440, height: 960 });
    await page.goto(stack.demo.url);
    await waitFor(async () => (await page.textContent('#st-status')) === 'live', { timeout: 20_000, what: 'the demo page live' });
    // a second tab of the same profile: a follower, fed by the page above
    const follower = await ctx.newPage();
    await follower.goto(stack.demo.url);
    // Events published before the follower has joined the tab bus are not
    // replayed to it: wait until it shows the shared live state.
    await waitFor(async () => (await follower.textContent('#st-status')) === 'live', { timeout: 20_000, what: 'the follower tab live' });

    for (let i = 0; i < 28; i++) {
      await stack.publish({ ...hotelEvent(i), stamp: false });
      await sleep(30);
    }

    // publish from the page itself and read the measured latency
    const clickLatencies = [];
    for (const [service, property] of [
      ['finance', 'lisbon'],
      ['tasks', 'porto'],
      ['guest', 'seville'],
    ]) {
      await page.selectOption('#pub-service', service);
      await page.selectOption('#pub-property', property);
      const before = await page.$$eval('li.mine', (l) => l.length);
      await page.click('#publish');
      await waitFor(async () => (await page.$$eval('li.mine', (l) => l.length)) > before, { timeout: 10_000, what: 'the test event shown' });
      clickLatencies.push(Number.parseFloat(await page.textContent('#lat-last')));
      await sleep(250);
    }
    // The follower gets each event over BroadcastChannel a moment after the
    // leader: wait for both to show as many as the leader.
    const shown = await page.$$eval('.feed li', (l) => l.length);
    let followerShown = 0;
    await waitFor(
      async () => (followerShown = await follower.$$eval('.feed li', (l) => l.length)) >= shown,
      { timeout: 5_000, what: 'the follower tab to show every event' },
    ).catch(() => {});
    await sleep(1300); // let the highlight fade and the stats refresh
    fs.mkdirSync(path.dirname(outFile), { recursive: true });
    await page.screenshot({ path: outFile, fullPage: true });
    return { shown, followerShown, clickLatencies };
  } finally {
    await stack.closeContext(ctx);
  }
}
