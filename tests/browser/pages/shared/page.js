// Helpers of the test pages. A page sets `window.__pageSettled` once every paint and shift it
// makes without input has happened; the browser test waits for it before clicking.
import { onINP } from 'web-vitals';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const frames = () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));

export function whenLoaded(img) {
  if (img.complete) return Promise.resolve();
  return new Promise((resolve) => {
    img.addEventListener('load', resolve, { once: true });
    img.addEventListener('error', resolve, { once: true });
  });
}

/** Resolves once what the page changed has been painted (two frames) and observers ran. */
export async function painted() {
  await frames();
  await sleep(100);
}

/**
 * For the test: `window.__inpSeen` is the page's INP as soon as web-vitals has taken an
 * interaction in (a second onINP reporting every change, next to the snippet's, which reports
 * only when the page is hidden: hiding the page before web-vitals took the interaction in, in an
 * idle callback or within 1 s, would lose it).
 */
export function watchInteractions() {
  onINP((metric) => { window.__inpSeen = metric.value; }, { reportAllChanges: true });
}
