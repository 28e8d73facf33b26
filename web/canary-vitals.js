/**
 * canary-vitals: sends a page's web vitals and error events to canary-gate's beacon endpoint,
 * so the proxy can compare the canary's real user experience with stable's (and gate on it).
 *
 * Include it once per page, as an ES module, with the npm package `web-vitals` resolvable as
 * the bare specifier 'web-vitals':
 *
 *   - with a bundler (Vite, webpack, esbuild, ...): `npm install web-vitals`, then
 *       import { startCanaryVitals } from './canary-vitals.js';
 *       startCanaryVitals();
 *
 *   - without one, through an import map served with the page:
 *       <script type="importmap">
 *         {"imports": {"web-vitals": "/assets/web-vitals.js"}}   (node_modules/web-vitals/dist/web-vitals.js)
 *       </script>
 *       <script type="module">
 *         import { startCanaryVitals } from '/assets/canary-vitals.js';
 *         startCanaryVitals({ path: '/__canary/vitals' });
 *       </script>
 *
 * Start it early (in the head): it counts errors from then on, and web-vitals reads the
 * paints and layout shifts the browser buffered before.
 *
 * What it sends, as JSON arrays of small objects (no `entries`, no URLs, no messages):
 *   {name, value, id, delta, rating, navigationType}  for LCP, INP, CLS, FCP and TTFB, as the
 *                                                     web-vitals callbacks report them
 *   {name: 'page_view'}                               once, when the page starts
 *   {name: 'js_error'}                                per uncaught error or unhandled rejection
 *   {name: 'resource_error'}                          per failed <img>, <script>, <link>, ...
 * It queues them and sends the queue when the page is hidden (visibilitychange to hidden, and
 * pagehide), where web-vitals reports LCP, CLS and INP (and anything reported while hidden right
 * away), with `navigator.sendBeacon` as
 * text/plain (a simple request: no CORS preflight) or, where that is refused,
 * `fetch(..., {keepalive: true})`. A queue larger than `maxBytes` goes as several beacons.
 *
 * With `transport: 'query'` the JSON goes in the URL instead, as the query parameter `beacon`
 * of a bodiless POST: for proxies whose Wasm plugin configuration cannot set
 * `allow_on_headers_stop_iteration` (Istio's WasmPlugin), which keep a request body from the
 * filter. The URL shows up in access logs; `maxBytes` then bounds the encoded URL.
 *
 * The beacon goes to the page's own origin, through the same proxy as the page, with the same
 * cookies (canary-gate's sticky cookie): the proxy attributes it to the version that serves
 * this user, not to anything the page claims.
 *
 * Vitals are a signal, not a security boundary: any client can send any beacon. The proxy caps
 * their size and rate, and a gate on them is meant for a canary's real-user experience, next to
 * its server-side SLOs; it does not replace them.
 *
 * Debugging aid: every item is also pushed to the array `window.__canaryVitals`, and every
 * beacon sent to `window.__canaryBeacons` as {body, via, ok} (the browser tests read both).
 */
import { onCLS, onFCP, onINP, onLCP, onTTFB } from 'web-vitals';

let started = false;

/**
 * Starts reporting; call once per page (later calls do nothing).
 * @param {object} [options]
 * @param {string} [options.path='/__canary/vitals'] the endpoint (canary-gate's `vitals.path`)
 * @param {number} [options.maxBytes=4000] largest beacon body (below `vitals.max_body_bytes`)
 * @param {number} [options.maxErrors=20] js_error and resource_error events sent at most per page
 * @param {'body'|'query'} [options.transport='body'] where the JSON goes: the body, or the query
 *   parameter `beacon` of a bodiless POST
 */
export function startCanaryVitals({
  path = '/__canary/vitals',
  maxBytes = 4000,
  maxErrors = 20,
  transport = 'body',
} = {}) {
  if (started) return;
  started = true;
  const seen = (window.__canaryVitals = window.__canaryVitals || []);
  const sent = (window.__canaryBeacons = window.__canaryBeacons || []);
  let queue = [];
  let errors = 0;
  let flushQueued = false;

  const add = (item) => {
    seen.push(item);
    queue.push(item);
    // Reported while hidden (e.g. an interaction web-vitals processed late): send it soon.
    if (document.visibilityState === 'hidden' && !flushQueued) {
      flushQueued = true;
      setTimeout(flush);
    }
  };
  const addError = (name) => {
    if (errors < maxErrors) {
      errors += 1;
      add({ name });
    }
  };
  const inQuery = transport === 'query';
  const encoded = (json) => (inQuery ? encodeURIComponent(json) : json);
  const send = (body) => {
    const url = inQuery ? `${path}?beacon=${encodeURIComponent(body)}` : path;
    const payload = inQuery ? '' : body;
    let ok = false;
    try {
      ok = navigator.sendBeacon(url, new Blob([payload], { type: 'text/plain' }));
    } catch {
      ok = false;
    }
    if (ok) {
      sent.push({ body, via: 'beacon', ok });
      return;
    }
    // sendBeacon refuses when its quota is used up: fetch with keepalive outlives the page too.
    const entry = { body, via: 'fetch', ok: false };
    sent.push(entry);
    fetch(url, { method: 'POST', body: payload, keepalive: true, headers: { 'content-type': 'text/plain' } }).then(
      (r) => (entry.ok = r.ok),
      () => (entry.ok = false),
    );
  };
  const flush = () => {
    flushQueued = false;
    let batch = [];
    for (const item of queue) {
      const next = encoded(JSON.stringify([...batch, item]));
      if (batch.length > 0 && next.length > maxBytes) {
        send(JSON.stringify(batch));
        batch = [];
      }
      batch.push(item);
    }
    if (batch.length > 0) send(JSON.stringify(batch));
    queue = [];
  };

  const metric = ({ name, value, id, delta, rating, navigationType }) =>
    add({ name, value, id, delta, rating, navigationType });
  onLCP(metric);
  onINP(metric);
  onCLS(metric);
  onFCP(metric);
  onTTFB(metric);

  add({ name: 'page_view' });
  addEventListener('error', (event) => {
    const target = event.target;
    if (target instanceof Element) {
      // A resource that failed to load (error events do not bubble: capture sees them).
      if (target.hasAttribute('src') || target.hasAttribute('href')) addError('resource_error');
    } else {
      addError('js_error');
    }
  }, true);
  addEventListener('unhandledrejection', () => addError('js_error'));

  // web-vitals reports on visibilitychange; capture-phase listeners on `document` run after
  // those on `window`, so the queue holds the last values when it is sent.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden') flush();
  }, true);
  addEventListener('pagehide', flush, true);
}
