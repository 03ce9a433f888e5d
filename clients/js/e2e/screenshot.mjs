#!/usr/bin/env node
// npm run screenshot [-- out.png]: starts the e2e stack (nats-server, two
// edges, the demo server, Chromium), opens the demo page with live events and
// writes a screenshot (default: <repo>/docs/demo.png).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Stack } from './harness.mjs';
import { captureDemo } from './demo-shot.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(process.argv[2] ?? path.join(here, '..', '..', '..', 'docs', 'demo.png'));

const stack = new Stack();
let code = 0;
try {
  await stack.start({ edges: 2 });
  const f = await captureDemo(stack, out);
  console.log(`screenshot: ${out} (${f.shown} events shown; publish click → shown ${f.clickLatencies.map((x) => `${Math.round(x)} ms`).join(', ')})`);
} catch (err) {
  console.error(`screenshot failed: ${err.stack ?? err}`);
  code = 1;
} finally {
  await stack.stop();
}
process.exit(code);
