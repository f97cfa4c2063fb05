'use strict';
// The hub from a real browser (signalr-protocol.md section 9 item 50, section 10 "Chromium"):
// headless Chromium, driven by playwright-core, loads a page served by kestrun itself (same
// origin as the hub) with the official browser bundles of @microsoft/signalr and
// @microsoft/signalr-protocol-msgpack from tests/e2e/node_modules, and runs page/app.js's
// scenario over WebSockets, Server-Sent Events and long polling: the built-in Echo, Lua hub
// methods, JoinGroup, and a route (fetch()ed by the page) that broadcasts with kr.send_all,
// kr.send_log, kr.send_event and kr.group_send. Playwright's request events show what the
// browser sent (X-SignalR-User-Agent, the access_token query on the WebSocket), the server log
// shows the transport and protocol each connection used.
//
// Chromium as lib/browser.js finds it (KR_CHROMIUM, /usr/bin/chromium, /usr/bin/chromium-headless-shell);
// without a browser or playwright-core every test is skipped. A screenshot of the page after the
// WebSocket run goes where lib/browser.js's screenshotPath() puts it (next to KESTRUN_BIN, else
// os.tmpdir()); its path is printed as a diagnostic.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { startServer, luaString } = require('../lib/server');
const { EXECUTABLE, browserSkip, launchBrowser, screenshotPath } = require('../lib/browser');

const NODE_MODULES = path.resolve(__dirname, '..', 'node_modules');
const SIGNALR_DIR = path.join(NODE_MODULES, '@microsoft', 'signalr', 'dist', 'browser');
const MSGPACK_DIR = path.join(NODE_MODULES, '@microsoft', 'signalr-protocol-msgpack', 'dist', 'browser');
const PAGE_DIR = path.join(__dirname, 'page');

const SKIP = browserSkip({
  what: 'the browser tests',
  files: [path.join(SIGNALR_DIR, 'signalr.js'), path.join(MSGPACK_DIR, 'signalr-protocol-msgpack.js')],
  missing: 'the @microsoft/signalr browser bundles are missing from tests/e2e/node_modules (npm ci in tests/e2e)',
});

const SCRIPT = `
local hub = kr.hub("/hub", { protocols = { "json", "messagepack" } })
hub:on("Add", function(ctx, a, b) return a + b end)
hub:on("Roundtrip", function(ctx, v) return v end)

kr.static("/signalr", ${luaString(SIGNALR_DIR)})
kr.static("/msgpack", ${luaString(MSGPACK_DIR)})
kr.static("/", ${luaString(PAGE_DIR)})

kr.map_route("GET", "/broadcast", function(req, res)
  local group, tag = req.query.group, req.query.tag
  local _, all = kr.send_all("Everyone", tag, 1)
  local _, log = kr.send_log("Warning", "log " .. tag)
  local _, event = kr.send_event("BrowserEvent", { tag = tag, n = 3 })
  local _, grp = kr.group_send(group, "GroupNotice", tag, 7)
  res:json({ all = all, log = log, event = event, group = grp })
end)
`;

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
// What the browser client puts in X-SignalR-User-Agent (signalr-protocol.md section 1).
const BROWSER_UA = /^Microsoft SignalR\/\d+\.\d+ \(\d+\.\d+\.\d+[^;]*; Unknown OS; Browser; Unknown Runtime Version\)$/;

let srv;
let browser;

before(async () => {
  if (SKIP) return;
  srv = await startServer({ script: SCRIPT });
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (srv) await srv.stop();
});

// Opens the page in a fresh browser context, records its requests, WebSockets, console and
// errors, runs window.krRun(opts) there and returns what it returned plus the records.
async function runInPage(t, opts) {
  const context = await browser.newContext();
  t.after(() => context.close().catch(() => {}));
  const page = await context.newPage();
  const requests = [];
  const sockets = [];
  const consoleLines = [];
  const pageErrors = [];
  page.on('request', (r) => requests.push(r));
  page.on('websocket', (ws) => sockets.push(ws.url()));
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => pageErrors.push(String(e)));

  const nav = await page.goto(srv.url('/'));
  assert.equal(nav.status(), 200, 'the page is served by kr.static');
  await page.waitForFunction(() => window.signalR && window.signalR.protocols && window.krRun, null, { timeout: 5000 });
  let result;
  try {
    result = await page.evaluate((o) => window.krRun(o), opts);
  } catch (e) {
    // Keep the page's own log with the failure.
    e.message += `\n--- page console ---\n${consoleLines.join('\n')}\n--- server log (tail) ---\n${srv.log().slice(-2000)}`;
    throw e;
  }
  assert.deepEqual(pageErrors, [], 'no uncaught error in the page');
  return { page, result, requests, sockets, consoleLines };
}

// The scenario's outcome, the same for every transport and protocol.
function checkScenario(result, tag) {
  assert.equal(result.echoResult, null, 'Echo completes with null');
  assert.deepEqual(result.got.echo, [`echo ${tag}`], 'ReceiveEcho back to the caller');
  assert.deepEqual(result.got.joined, [`g-${tag}`], 'GroupJoined back to the caller');
  assert.equal(result.add, 42, 'Add(20, 22)');
  assert.deepEqual(result.roundtrip, { s: `text ${tag}`, n: 7, list: [1, 'two', 3.5], nested: { ok: true } });
  assert.equal(result.broadcast.status, 200);
  assert.equal(result.broadcast.body.group, 1, 'group_send reached the one member');
  for (const k of ['all', 'log', 'event']) assert.ok(result.broadcast.body[k] >= 1, `${k} reached a client`);

  assert.equal(result.got.log.length, 1);
  const log = result.got.log[0];
  assert.deepEqual(Object.keys(log).sort(), ['level', 'message', 'timestamp']);
  assert.equal(log.level, 'Warning');
  assert.equal(log.message, `log ${tag}`);
  assert.match(log.timestamp, ISO_MS);

  assert.equal(result.got.event.length, 1);
  const ev = result.got.event[0];
  assert.deepEqual(Object.keys(ev).sort(), ['data', 'eventName', 'timestamp']);
  assert.equal(ev.eventName, 'BrowserEvent');
  assert.deepEqual(ev.data, { tag, n: 3 });
  assert.match(ev.timestamp, ISO_MS);

  assert.deepEqual(result.got.group, [[tag, 7]], 'GroupNotice(tag, 7) to the group');
  assert.deepEqual(result.got.all, [[tag, 1]], 'Everyone(tag, 1) to all');
  assert.equal(result.closedWith, 'clean', 'stop() closes cleanly');
}

// The negotiate request carried the browser client's X-SignalR-User-Agent.
async function checkUserAgent(t, requests) {
  const neg = requests.find((r) => new URL(r.url()).pathname === '/hub/negotiate');
  assert.ok(neg, 'the page negotiated');
  assert.equal(neg.method(), 'POST');
  const h = await neg.allHeaders();
  assert.match(h['x-signalr-user-agent'] || '', BROWSER_UA, 'X-SignalR-User-Agent on negotiate');
  assert.equal(h['x-requested-with'], 'XMLHttpRequest');
  t.diagnostic(`X-SignalR-User-Agent: ${h['x-signalr-user-agent']}`);
  return h;
}

function connectedLine(id, transport, protocol) {
  return `hub: /hub: ${id} connected (${transport}, ${protocol})`;
}

test('WebSockets: Echo, Lua methods, JoinGroup + group_send, send_all, send_log, send_event', { skip: SKIP, timeout: 20000 }, async (t) => {
  t.diagnostic(`browser: ${EXECUTABLE} (Chromium ${browser.version()})`);
  const tag = 'ws';
  const { page, result, requests, sockets } = await runInPage(t, { transport: 'WebSockets', tag });
  checkScenario(result, tag);
  await checkUserAgent(t, requests);
  assert.equal(sockets.length, 1, 'one WebSocket');
  assert.match(sockets[0], new RegExp(`^ws://127\\.0\\.0\\.1:${srv.port}/hub\\?id=[^&]+$`));
  assert.ok(await srv.waitForLog(connectedLine(result.connectionId, 'WebSockets', 'json')), 'server logged a WebSockets/json connection');
  const shot = screenshotPath('signalr-browser-websockets.png');
  await page.screenshot({ path: shot, fullPage: true });
  t.diagnostic(`screenshot: ${shot}`);
});

test('LongPolling: the same scenario, polls and DELETE seen in the browser', { skip: SKIP, timeout: 20000 }, async (t) => {
  const tag = 'lp';
  const { result, requests, sockets } = await runInPage(t, { transport: 'LongPolling', tag });
  checkScenario(result, tag);
  await checkUserAgent(t, requests);
  assert.equal(sockets.length, 0, 'no WebSocket');
  const hub = requests.filter((r) => new URL(r.url()).pathname === '/hub');
  const polls = hub.filter((r) => r.method() === 'GET');
  assert.ok(polls.length >= 2, `at least two polls (got ${polls.length})`);
  assert.ok(polls.every((r) => new URL(r.url()).searchParams.has('_')), 'polls carry the cache buster');
  const poll = await polls[polls.length - 1].allHeaders();
  assert.match(poll['x-signalr-user-agent'] || '', BROWSER_UA, 'X-SignalR-User-Agent on a poll');
  assert.ok(hub.some((r) => r.method() === 'POST'), 'records sent by POST');
  assert.ok(hub.some((r) => r.method() === 'DELETE'), 'stop() sends DELETE');
  assert.ok(await srv.waitForLog(connectedLine(result.connectionId, 'LongPolling', 'json')), 'server logged a LongPolling/json connection');
});

test('ServerSentEvents: the same scenario over an EventSource', { skip: SKIP, timeout: 20000 }, async (t) => {
  const tag = 'sse';
  const { result, requests, sockets } = await runInPage(t, { transport: 'ServerSentEvents', tag });
  checkScenario(result, tag);
  await checkUserAgent(t, requests);
  assert.equal(sockets.length, 0, 'no WebSocket');
  const stream = requests.find((r) => new URL(r.url()).pathname === '/hub' && r.method() === 'GET');
  assert.ok(stream, 'the EventSource GET');
  assert.equal(stream.resourceType(), 'eventsource');
  assert.ok(await srv.waitForLog(connectedLine(result.connectionId, 'ServerSentEvents', 'json')), 'server logged a ServerSentEvents/json connection');
});

test('WebSockets with accessTokenFactory: Bearer on negotiate, access_token in the WebSocket URL', { skip: SKIP, timeout: 20000 }, async (t) => {
  const tag = 'tok';
  const { result, requests, sockets } = await runInPage(t, { transport: 'WebSockets', tag, token: 'tok-123' });
  checkScenario(result, tag);
  const h = await checkUserAgent(t, requests);
  assert.equal(h.authorization, 'Bearer tok-123');
  assert.equal(sockets.length, 1);
  assert.equal(new URL(sockets[0]).searchParams.get('access_token'), 'tok-123');
});

// MessagePack (Binary frames / octet-stream bodies).
async function msgpackScenario(t, transport, tag) {
  const { result } = await runInPage(t, { transport, msgpack: true, tag });
  checkScenario(result, tag);
  assert.ok(await srv.waitForLog(connectedLine(result.connectionId, transport, 'messagepack')),
    `server logged a ${transport}/messagepack connection`);
}

test('MessagePack over WebSockets: the same scenario with MessagePackHubProtocol', { skip: SKIP, timeout: 20000 }, async (t) => {
  await msgpackScenario(t, 'WebSockets', 'mpws');
});

test('MessagePack over LongPolling: the same scenario with MessagePackHubProtocol', { skip: SKIP, timeout: 20000 }, async (t) => {
  await msgpackScenario(t, 'LongPolling', 'mplp');
});
