'use strict';
// CORS from a real browser (docs/security.md "CORS", signalr-protocol.md sections 1 and 10):
// headless Chromium loads a page from one kestrun (origin http://127.0.0.1:A) and connects the
// official @microsoft/signalr browser client to the hubs of another kestrun (http://127.0.0.1:B,
// a different port and so a different origin) whose scripts set the CORS policy:
//   /hub       the default policy: origin http://127.0.0.1:A, credentials = true
//   /hub-anon  cors = kr.cors.policy{ origins = "*" } (no credentials)
// Over LongPolling and WebSockets, with withCredentials true (the client's default: the
// browser then needs the echoed origin and Access-Control-Allow-Credentials) and false, the
// page connects, POSTs to a route on B (preflighted: X-Requested-With) that broadcasts, and
// receives the broadcast. Refused: the same page from http://localhost:A (an origin outside
// the list) fails to start over both transports (preflight 403; WebSocket upgrade 403), and a
// credentialed client against the "*" hub is blocked by the browser itself (the Fetch standard).
//
// Chromium and playwright-core from lib/browser.js (KR_CHROMIUM, /usr/bin/chromium,
// /usr/bin/chromium-headless-shell); without them every test is skipped.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { startServer, luaString } = require('../lib/server');
const { browserSkip, launchBrowser } = require('../lib/browser');

const NODE_MODULES = path.resolve(__dirname, '..', 'node_modules');
const SIGNALR_DIR = path.join(NODE_MODULES, '@microsoft', 'signalr', 'dist', 'browser');

const SKIP = browserSkip({
  what: 'the browser CORS tests',
  files: [path.join(SIGNALR_DIR, 'signalr.js')],
  missing: 'the @microsoft/signalr browser bundle is missing from tests/e2e/node_modules (npm ci in tests/e2e)',
});

// Origin A: the page and the client bundle, no CORS.
const PAGE_SCRIPT = `
kr.static("/signalr", ${luaString(SIGNALR_DIR)})
kr.map_route("GET", "/", function(req, res)
  res:html([[<!doctype html><html><head><meta charset="utf-8"><title>kestrun CORS</title>
<script src="/signalr/signalr.js"></script></head><body><p>cross-origin hub test</p></body></html>]])
end)
`;

// Origin B: the hubs and the broadcasting route, CORS for origin A.
const hubScript = (pageOrigin) => `
kr.cors{ origins = { ${luaString(pageOrigin)} }, credentials = true, expose = { "X-Delivered" } }
local hub = kr.hub("/hub")
local anon = kr.hub("/hub-anon", { cors = kr.cors.policy{ origins = "*" } })
kr.map_route("POST", "/broadcast", function(req, res)
  local _, a = hub:send_all("Notice", req.query.tag)
  local _, b = anon:send_all("Notice", req.query.tag)
  res:header("X-Delivered", tostring(a + b)):json({ delivered = a + b })
end)
`;

let pageSrv;
let hubSrv;
let browser;
let pageOrigin;
let hubBase;

before(async () => {
  if (SKIP) return;
  pageSrv = await startServer({ script: PAGE_SCRIPT });
  pageOrigin = `http://127.0.0.1:${pageSrv.port}`;
  // Debug: the cors lines show the preflights (Playwright does not report them as requests).
  hubSrv = await startServer({ script: hubScript(pageOrigin), args: ['--log-level', 'Debug'] });
  hubBase = `http://127.0.0.1:${hubSrv.port}`;
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (hubSrv) await hubSrv.stop();
  if (pageSrv) await pageSrv.stop();
});

// Runs in the page: connect, let the route on B broadcast, wait for it, stop.
async function scenario({ hubUrl, base, transport, withCredentials, tag, skipNegotiation }) {
  const conn = new signalR.HubConnectionBuilder()
    .withUrl(hubUrl, {
      transport: signalR.HttpTransportType[transport],
      withCredentials,
      skipNegotiation: !!skipNegotiation,
    })
    .configureLogging(signalR.LogLevel.None)
    .build();
  const notice = new Promise((resolve) => conn.on('Notice', (t) => resolve(t)));
  try {
    await conn.start();
  } catch (e) {
    return { startError: String((e && e.message) || e) };
  }
  const r = await fetch(`${base}/broadcast?tag=${encodeURIComponent(tag)}`, {
    method: 'POST',
    credentials: withCredentials ? 'include' : 'omit',
    headers: { 'X-Requested-With': 'XMLHttpRequest' }, // not safelisted: a preflight first
  });
  const body = await r.json();
  const got = await Promise.race([notice, new Promise((res) => setTimeout(() => res('(no broadcast within 5 s)'), 5000))]);
  await conn.stop();
  return { status: r.status, body, delivered: r.headers.get('X-Delivered'), notice: got, connectionId: conn.connectionId };
}

// Opens the page at pageUrl in a fresh context, runs the scenario, records the responses of B.
async function run(t, pageUrl, opts) {
  const context = await browser.newContext();
  t.after(() => context.close().catch(() => {}));
  const page = await context.newPage();
  const responses = [];
  const pageErrors = [];
  page.on('response', (r) => { if (r.url().startsWith(hubBase)) responses.push(r); });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  const nav = await page.goto(pageUrl);
  assert.equal(nav.status(), 200);
  await page.waitForFunction(() => window.signalR, null, { timeout: 5000 });
  const result = await page.evaluate(scenario, { base: hubBase, ...opts });
  assert.deepEqual(pageErrors, [], 'no uncaught error in the page');
  return { result, responses };
}

async function checkConnected(t, pageUrl, opts) {
  const tag = `${opts.transport}-${opts.withCredentials ? 'cred' : 'anon'}`;
  const { result, responses } = await run(t, pageUrl, { ...opts, tag });
  assert.equal(result.startError, undefined, `start() failed: ${result.startError}\n--- hub server log ---\n${hubSrv.log().slice(-1500)}`);
  assert.equal(result.status, 200);
  assert.ok(result.body.delivered >= 1);
  assert.equal(result.delivered, String(result.body.delivered), 'X-Delivered is readable: exposed');
  assert.equal(result.notice, tag, 'the broadcast arrived');
  // What the browser saw from B: the negotiate answer (the preflights are in the server log).
  const neg = responses.find((r) => new URL(r.url()).pathname.endsWith('/negotiate'));
  const acao = (await neg.allHeaders())['access-control-allow-origin'];
  return { result, acao, neg };
}

test('LongPolling with credentials (the default): the echoed origin and Allow-Credentials let it through', { skip: SKIP, timeout: 20000 }, async (t) => {
  t.diagnostic(`page ${pageOrigin}, hubs ${hubBase} (Chromium ${browser.version()})`);
  const { acao, neg } = await checkConnected(t, `${pageOrigin}/`, { hubUrl: `${hubBase}/hub`, transport: 'LongPolling', withCredentials: true });
  assert.equal(acao, pageOrigin);
  assert.equal((await neg.allHeaders())['access-control-allow-credentials'], 'true');
  assert.ok(await hubSrv.waitForLog(`cors: preflight POST /hub/negotiate from ${pageOrigin}: 204`), 'negotiate was preflighted');
  assert.ok(await hubSrv.waitForLog(`cors: preflight GET /hub from ${pageOrigin}: 204`), 'a poll was preflighted');
  assert.ok(await hubSrv.waitForLog(/\/hub: \S+ connected \(LongPolling, json\)/), 'a LongPolling connection');
});

test('WebSockets with credentials: negotiate over CORS, the upgrade\'s Origin is on the list', { skip: SKIP, timeout: 20000 }, async (t) => {
  const { acao } = await checkConnected(t, `${pageOrigin}/`, { hubUrl: `${hubBase}/hub`, transport: 'WebSockets', withCredentials: true });
  assert.equal(acao, pageOrigin);
  assert.ok(await hubSrv.waitForLog(/\/hub: \S+ connected \(WebSockets, json\)/), 'a WebSockets connection');
});

test('withCredentials: false against the "*" hub, LongPolling and WebSockets', { skip: SKIP, timeout: 20000 }, async (t) => {
  for (const transport of ['LongPolling', 'WebSockets']) {
    const { acao } = await checkConnected(t, `${pageOrigin}/`, { hubUrl: `${hubBase}/hub-anon`, transport, withCredentials: false });
    assert.equal(acao, '*', `${transport}: a wildcard answer without credentials`);
  }
});

test('a credentialed client against the "*" hub is blocked by the browser (wildcard + credentials)', { skip: SKIP, timeout: 20000 }, async (t) => {
  const { result } = await run(t, `${pageOrigin}/`, { hubUrl: `${hubBase}/hub-anon`, transport: 'LongPolling', withCredentials: true, tag: 'x' });
  assert.match(result.startError || '', /Failed to complete negotiation|Failed to fetch/, 'start() rejects');
});

test('a page from a refused origin (http://localhost:A) cannot connect: LongPolling and WebSockets', { skip: SKIP, timeout: 20000 }, async (t) => {
  const refusedPage = `http://localhost:${pageSrv.port}/`;
  const lp = await run(t, refusedPage, { hubUrl: `${hubBase}/hub`, transport: 'LongPolling', withCredentials: true, tag: 'x' });
  assert.match(lp.result.startError || '', /Failed to complete negotiation|Failed to fetch/, 'LongPolling: start() rejects');
  assert.ok(await hubSrv.waitForLog(`cors: preflight POST /hub/negotiate from http://localhost:${pageSrv.port}: 403 (origin not allowed)`),
    'the preflight was refused');
  // WebSockets without negotiate: the upgrade itself carries Origin and is refused.
  const ws = await run(t, refusedPage, { hubUrl: `${hubBase}/hub`, transport: 'WebSockets', withCredentials: true, skipNegotiation: true, tag: 'x' });
  assert.ok(ws.result.startError, 'WebSockets: start() rejects');
  assert.ok(await hubSrv.waitForLog(`cors: WebSocket GET /hub from http://localhost:${pageSrv.port}: 403 (origin not allowed)`),
    'the upgrade was refused');
  t.diagnostic(`refused: ${lp.result.startError} | ${ws.result.startError}`);
});
