#!/usr/bin/env node
// Loads the canary-gate test pages through Envoy in Debian's headless Chromium, as new users,
// and prints what each page reported (web-vitals metrics, error events, beacons) as JSON on
// stdout; progress goes to stderr. harness/tests/vitals_browser.rs runs it and compares the
// output with Envoy's stats.
//
//   node tests/browser/vitals.mjs --base http://127.0.0.1:10000 [--sticky 2] [--forced 3]
//
// Each load is a new user: a fresh incognito browser context (no cookies, empty cache).
//   sticky  `--sticky` loads per version routed by the filter's own sticky cookie. The user's
//           first request (the probe, a small text file) gets a fresh random bucket cookie
//           from the filter and the version it routes to; the page, its images and scripts
//           and its beacons then carry that cookie. Users are drawn until each version has
//           its count (extra users of a full version are dropped after the probe), so the
//           canary never gets more sticky page views than asked for: with fewer than the
//           gate's min_page_views the gate cannot trip while these users' beacons are on their
//           way (after a trip the filter routes, and so attributes, a canary cookie user's
//           beacons to stable).
//   forced  then `--forced` loads per version with the tester's override header on every
//           request of the page (set through DevTools: the beacons carry it too), which
//           reaches the canary even after the gate tripped.
// A load: open the page, wait until it settled (its late image and shifts done), click its
// button (an interaction: INP, and the end of LCP), wait until web-vitals took it in, then
// open another tab in the same context and bring it to the front: the page becomes hidden (a
// real, trusted visibilitychange), web-vitals reports LCP, CLS and INP and the snippet sends its
// queue; wait until every beacon has its answer, read `window.__canaryVitals` and
// `window.__canaryBeacons`, close the context.
//
// Options: --base URL (required), --sticky N, --forced N, --override-header NAME (x-canary),
// --sticky-cookie NAME (canary_bucket), --vitals-path PATH (/__canary/vitals), --page PATH
// (/static/index.html), --probe PATH (/static/version.txt), --versions a,b (stable,canary),
// --concurrency N (loads in parallel, 6), --max-probes N (30), --timeout-ms MS (45000),
// --chromium PATH ($CHROMIUM_BIN or /usr/bin/chromium). Chromium runs headless with puppeteer's
// defaults (among them --disable-background-networking, --disable-sync, --no-first-run: nothing
// reaches out of the machine) plus --no-sandbox --disable-gpu --disable-quic
// --disable-component-update, in a new profile directory under $TMPDIR, removed at the end.
//
// Output: {"chromium": "...", "elapsed_ms": N, "loads": [{"phase", "forced", "version" (what
// the page says it is), "document": {"status", "version", "reason"} (the document's response
// headers), "cookie", "page_errors" (uncaught errors), "vitals": [...], "beacons": [{"body", "via",
// "ok"}], "answers": [{"status", "version", "query"}] (the beacon requests' answers; `query`: the
// beacon was in the URL), "elapsed_ms"}]}. Exit 1 with a message on stderr
// if anything fails or the whole run exceeds --timeout-ms; Chromium is closed in every case.

import { parseArgs } from 'node:util';
import { sleep, withChromium } from './chromium.mjs';

const { values: opt } = parseArgs({
  options: {
    base: { type: 'string' },
    sticky: { type: 'string', default: '2' },
    forced: { type: 'string', default: '3' },
    'override-header': { type: 'string', default: 'x-canary' },
    'sticky-cookie': { type: 'string', default: 'canary_bucket' },
    'vitals-path': { type: 'string', default: '/__canary/vitals' },
    page: { type: 'string', default: '/static/index.html' },
    probe: { type: 'string', default: '/static/version.txt' },
    versions: { type: 'string', default: 'stable,canary' },
    concurrency: { type: 'string', default: '6' },
    'max-probes': { type: 'string', default: '30' },
    'timeout-ms': { type: 'string', default: '45000' },
    chromium: { type: 'string', default: process.env.CHROMIUM_BIN || '/usr/bin/chromium' },
  },
});
if (!opt.base) {
  console.error('usage: node vitals.mjs --base http://127.0.0.1:PORT [options] (see the header)');
  process.exit(2);
}
const base = opt.base.replace(/\/$/, '');
const versions = opt.versions.split(',');
const int = (name) => {
  const n = Number.parseInt(opt[name], 10);
  if (!(n >= 0)) throw new Error(`--${name} must be a non-negative integer, got ${opt[name]}`);
  return n;
};
const [sticky, forced, concurrency, maxProbes, timeoutMs] = ['sticky', 'forced', 'concurrency', 'max-probes', 'timeout-ms'].map(int);
const started = Date.now();
const log = (...args) => console.error(`[vitals.mjs +${((Date.now() - started) / 1000).toFixed(1)}s]`, ...args);

/** Runs `tasks` (functions returning promises) at most `limit` at a time; results in order. */
async function pool(tasks, limit) {
  const results = new Array(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, tasks.length)) }, worker));
  return results;
}

/** One page load in `context` (already holding the user's cookie, if any). */
async function load(context, { phase, forcedVersion, cookie }) {
  const t0 = Date.now();
  const page = await context.newPage();
  await page.setViewport({ width: 800, height: 600 });
  if (forcedVersion) await page.setExtraHTTPHeaders({ [opt['override-header']]: forcedVersion });
  const answers = [];
  const pending = new Set();
  page.on('request', (request) => {
    if (new URL(request.url()).pathname === opt['vitals-path']) pending.add(request);
  });
  const settle = (request, answer) => {
    if (pending.delete(request)) answers.push(answer);
  };
  page.on('requestfinished', (request) => {
    const response = request.response();
    settle(request, {
      status: response?.status() ?? 0,
      version: response?.headers()['x-canary-version'] ?? null,
      query: new URL(request.url()).searchParams.has('beacon'),
    });
  });
  page.on('requestfailed', (request) =>
    settle(request, { status: 0, version: null, error: request.failure()?.errorText ?? 'failed' }),
  );
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error.message ?? error)));

  const response = await page.goto(base + opt.page, { waitUntil: 'load', timeout: 15000 });
  const headers = response?.headers() ?? {};
  const doc = { status: response?.status() ?? 0, version: headers['x-canary-version'] ?? null, reason: headers['x-canary-reason'] ?? null };
  if (doc.status !== 200) throw new Error(`${opt.page}: status ${doc.status}`);
  await page.waitForFunction(() => window.__pageSettled === true, { timeout: 15000, polling: 50 });
  const version = await page.evaluate(() => document.documentElement.dataset.version);
  await page.click('#act');
  // The interaction's event timing entries come after its next paint, and web-vitals takes
  // them in an idle callback (or within 1 s): entries still waiting when the page is hidden
  // would never be reported. The page's own onINP (reporting every change) shows when they are
  // in; the snippet's instance took them in the same turn or just before.
  await page.waitForFunction(() => window.__inpSeen > 0, { timeout: 5000, polling: 50 }).catch(() => {
    log(`no interaction seen by web-vitals 5 s after the click on a ${version} page`);
  });
  await sleep(200);
  const other = await context.newPage();
  await other.bringToFront();
  await page.waitForFunction(() => document.visibilityState === 'hidden', { timeout: 5000, polling: 50 });
  const beaconsSent = () => page.evaluate(() => (window.__canaryBeacons || []).length);
  const deadline = Date.now() + 5000;
  // Every beacon sent and answered (or failed), and no new one for 300 ms.
  let last = { sent: -1, at: Date.now() };
  for (;;) {
    const sent = await beaconsSent();
    if (sent !== last.sent) last = { sent, at: Date.now() };
    const answered = sent > 0 && pending.size === 0 && answers.length >= sent;
    if (answered && Date.now() - last.at >= 300) break;
    if (Date.now() > deadline) {
      throw new Error(`beacons of a ${version} page: ${sent} sent, ${answers.length} answered, ${pending.size} pending`);
    }
    await sleep(50);
  }
  const report = await page.evaluate(() => ({ vitals: window.__canaryVitals || [], beacons: window.__canaryBeacons || [] }));
  const jar = await context.cookies(base);
  const stickyCookie = jar.find((c) => c.name === opt['sticky-cookie']);
  await context.close();
  return {
    phase,
    forced: forcedVersion ?? null,
    version,
    document: doc,
    cookie: stickyCookie ? `${stickyCookie.name}=${stickyCookie.value}` : cookie,
    page_errors: errors,
    vitals: report.vitals,
    beacons: report.beacons,
    answers,
    elapsed_ms: Date.now() - t0,
  };
}

/** A new user's context after its first request: the version the filter gave it, and its cookie. */
async function probe(browser) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  const response = await page.goto(base + opt.probe, { timeout: 10000 });
  const version = response?.headers()['x-canary-version'];
  const served = (await response?.text())?.trim();
  if (!version || version !== served) {
    await context.close();
    throw new Error(`probe: routed to ${version}, served by ${served} (status ${response?.status()})`);
  }
  const cookie = (await context.cookies(base)).find((c) => c.name === opt['sticky-cookie']);
  if (!cookie) {
    await context.close();
    throw new Error(`probe: the filter set no ${opt['sticky-cookie']} cookie`);
  }
  await page.close();
  return { context, version, cookie: `${cookie.name}=${cookie.value}` };
}

async function run(browser) {
  // Sticky users: probe new users until each version has `sticky` of them.
  const users = [];
  const count = Object.fromEntries(versions.map((v) => [v, 0]));
  let probes = 0;
  while (versions.some((v) => count[v] < sticky)) {
    if (probes >= maxProbes) {
      throw new Error(`${probes} new users did not give ${sticky} per version: ${JSON.stringify(count)}`);
    }
    probes += 1;
    const user = await probe(browser);
    if (count[user.version] === undefined) throw new Error(`probe routed to unknown version ${user.version}`);
    if (count[user.version] < sticky) {
      count[user.version] += 1;
      users.push(user);
    } else {
      await user.context.close();
    }
  }
  log(`${probes} new users probed for ${sticky} sticky users per version`);
  const loads = await pool(
    users.map((u) => () => load(u.context, { phase: 'sticky', forcedVersion: null, cookie: u.cookie })),
    concurrency,
  );
  log(`sticky loads done: ${loads.map((l) => l.version).join(' ')}`);
  const forcedTasks = [];
  for (let i = 0; i < forced; i++) {
    for (const v of versions) {
      forcedTasks.push(async () => load(await browser.createBrowserContext(), { phase: 'forced', forcedVersion: v, cookie: null }));
    }
  }
  loads.push(...(await pool(forcedTasks, concurrency)));
  log(`forced loads done: ${loads.length} loads`);
  return loads;
}

let code = 0;
try {
  const result = await withChromium(
    { executablePath: opt.chromium, timeoutMs, extraArgs: ['--disable-quic'], name: 'canary-vitals' },
    async (browser) => {
      const chromium = await browser.version();
      log(`${chromium} started`);
      const loads = await run(browser);
      return { chromium, elapsed_ms: Date.now() - started, loads };
    },
  );
  process.stdout.write(`${JSON.stringify(result)}\n`);
} catch (error) {
  console.error(`vitals.mjs: ${error?.stack ?? error}`);
  code = 1;
}
process.exit(code);
