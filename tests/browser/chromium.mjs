// Debian's headless Chromium for the browser scripts: a new profile under $TMPDIR, puppeteer's
// defaults (among them --disable-background-networking, --disable-sync, --no-first-run: nothing
// reaches out of the machine) plus --no-sandbox --disable-gpu --disable-component-update and
// `extraArgs`. Closed, and killed if closing hangs, and its profile removed, in every case.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `work(browser)` in a fresh headless Chromium at `executablePath`; its result, or an
 * error if it throws or takes longer than `timeoutMs`.
 */
export async function withChromium({ executablePath, timeoutMs, extraArgs = [], name = 'canary' }, work) {
  const userDataDir = await mkdtemp(join(tmpdir(), `${name}-chromium-`));
  let browser;
  let timer;
  try {
    browser = await puppeteer.launch({
      executablePath,
      headless: true,
      pipe: true,
      userDataDir,
      args: ['--no-sandbox', '--disable-gpu', '--disable-component-update', ...extraArgs],
      timeout: 20000,
    });
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`not done within ${timeoutMs} ms`)), timeoutMs);
    });
    return await Promise.race([work(browser), timeout]);
  } finally {
    clearTimeout(timer);
    if (browser) await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
    // If close hung, make sure the process is gone.
    const proc = browser?.process();
    if (proc && proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  }
}
