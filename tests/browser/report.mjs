#!/usr/bin/env node
// Opens the demo's report (target/demo/report.html, or the page given) in Debian's headless
// Chromium as a person would, and prints what the page shows as JSON on stdout: for each chart
// (each <svg class="chart">) its id, its drawn series (name and number of points on screen),
// axis labels, tick labels, marker labels and shaded bands, with their rendered sizes; the
// console errors and uncaught errors of the page; every request that left the page's own
// file. harness/tests/report_browser.rs runs it on a report from a real Envoy and checks it.
//
//   node tests/browser/report.mjs --page /abs/path/report.html [--screenshot out.png]
//
// Options: --page PATH (required), --screenshot PATH (a full-page PNG), --timeout-ms MS (30000),
// --chromium PATH ($CHROMIUM_BIN or /usr/bin/chromium). Chromium runs as in vitals.mjs: headless,
// through tests/browser/chromium.mjs.
// Exit 1 with a message on stderr if anything fails; Chromium is closed in every case.

import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { withChromium } from './chromium.mjs';

const { values: opt } = parseArgs({
  options: {
    page: { type: 'string' },
    screenshot: { type: 'string' },
    'timeout-ms': { type: 'string', default: '30000' },
    chromium: { type: 'string', default: process.env.CHROMIUM_BIN || '/usr/bin/chromium' },
  },
});
if (!opt.page) {
  console.error('usage: node report.mjs --page /abs/path/report.html [--screenshot out.png]');
  process.exit(2);
}
const pageUrl = pathToFileURL(opt.page).href;
const timeoutMs = Number.parseInt(opt['timeout-ms'], 10);

/** What the page shows, read in the page. */
function readCharts() {
  const texts = (svg, cls) => [...svg.querySelectorAll(`text.${cls}`)].map((t) => t.textContent);
  // Points on screen of a path: its M and L commands.
  const points = (d) => (d.match(/[ML]/g) || []).length;
  return [...document.querySelectorAll('svg.chart')].map((svg) => {
    const box = svg.getBoundingClientRect();
    const series = {};
    for (const path of svg.querySelectorAll('path.series')) {
      const name = path.dataset.series;
      const len = path.getTotalLength();
      series[name] = series[name] || { paths: 0, points: 0, length: 0 };
      series[name].paths += 1;
      series[name].points += points(path.getAttribute('d') || '');
      series[name].length += len;
    }
    for (const dot of svg.querySelectorAll('circle.series-point')) {
      const name = dot.dataset.series;
      series[name] = series[name] || { paths: 0, points: 0, length: 0 };
      series[name].points += 1;
    }
    return {
      id: svg.id,
      title: texts(svg, 'title').join(' '),
      width: box.width,
      height: box.height,
      axis_labels: texts(svg, 'axis-label'),
      ticks: texts(svg, 'tick'),
      legend: texts(svg, 'legend'),
      markers: texts(svg, 'marker-label'),
      bands: [...svg.querySelectorAll('rect.band')].map((r) => ({
        label: r.dataset.label,
        width: r.getBoundingClientRect().width,
      })),
      series,
    };
  });
}

let code = 0;
try {
  const facts = await withChromium({ executablePath: opt.chromium, timeoutMs, name: 'canary-report' }, async (browser) => {
    const page = await browser.newPage();
    await page.setViewport({ width: 1040, height: 900 });
    const consoleErrors = [];
    const external = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warn') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(String(e.message ?? e)));
    page.on('request', (r) => {
      if (r.url() !== pageUrl) external.push(r.url());
    });
    page.on('requestfailed', (r) => consoleErrors.push(`request failed: ${r.url()}`));
    const response = await page.goto(pageUrl, { waitUntil: 'load', timeout: 15000 });
    const charts = await page.evaluate(readCharts);
    const title = await page.title();
    const height = await page.evaluate(() => document.documentElement.scrollHeight);
    if (opt.screenshot) await page.screenshot({ path: opt.screenshot, fullPage: true });
    return { ok: response?.ok() ?? false, title, height, charts, console_errors: consoleErrors, external };
  });
  process.stdout.write(`${JSON.stringify(facts)}\n`);
} catch (error) {
  console.error(`report.mjs: ${error?.stack ?? error}`);
  code = 1;
}
process.exit(code);
