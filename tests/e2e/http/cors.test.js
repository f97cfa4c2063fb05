'use strict';
// CORS (lua-api.md: kr.cors, kr.cors.policy, the cors option of kr.map_route and kr.hub;
// docs/security.md "CORS"): preflights, actual requests on routes, errors, static files and
// the hub endpoints (negotiate, long polling), credentials on and off, per-route and per-hub
// overrides, the WebSocket Origin check, and the load-time errors. Raw HTTP, no browser
// (tests/e2e/browser/cors.test.js runs the same policy in Chromium).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const {
  startServer, runKestrun, request, rawRequest, firstStatus, parseAll, tempDir, writeScript,
} = require('../lib/server');

const APP = 'http://app.example';
const EVIL = 'http://evil.example';

const SCRIPT = `
kr.cors{
  origins = { "${APP}", "https://*.example.org", "http://localhost:5173/" },
  credentials = true,
  expose = { "X-Total" },
  max_age = 600,
}
kr.hub("/hub")
kr.hub("/hub-closed", { cors = false })
kr.hub("/hub-open", { cors = kr.cors.policy{ origins = "*" } })

kr.map_route("GET,POST", "/api/data", function(req, res)
  res:header("X-Total", "3"):json({ ok = true })
end)
kr.map_route("GET", "/api/boom", function(req, res) error("boom") end)
kr.map_route("GET", "/api/own", function(req, res)
  res:header("Access-Control-Allow-Origin", "https://mine.example"):header("Vary", "Accept"):text("own")
end)
kr.map_route("GET", "/open", function(req, res) res:text("open") end,
  { cors = kr.cors.policy{ origins = "*", methods = { "GET" }, headers = "*" } })
kr.map_route("GET", "/closed", function(req, res) res:text("closed") end, { cors = false })
kr.map_route("OPTIONS", "/closed", function(req, res) res:text("own options") end, { cors = false })
kr.map_route("PUT", "/inline", function(req, res) res:text("put") end,
  { cors = { origins = { "http://other.example" }, methods = { "PUT" }, headers = { "X-Custom" } } })
kr.static("/static", ${'${STATIC}'})
`;

let srv; // the policy above
let plain; // no kr.cors at all

function withStatic(dir) {
  const fs = require('node:fs');
  const st = path.join(dir, 'static');
  fs.mkdirSync(st, { recursive: true });
  fs.writeFileSync(path.join(st, 'a.txt'), 'static file');
  return JSON.stringify(st);
}

before(async () => {
  const dir = tempDir('kestrun-cors-');
  const script = SCRIPT.replace('${STATIC}', withStatic(dir));
  srv = await startServer({ script, args: ['--log-level', 'Debug'] });
  plain = await startServer({
    script: `
kr.hub("/hub")
kr.map_route("GET", "/plain", function(req, res) res:text("plain") end)
`,
  });
});

after(async () => {
  if (srv) await srv.stop();
  if (plain) await plain.stop();
});

const preflight = (port, p, origin, method, headers) => request(port, {
  method: 'OPTIONS',
  path: p,
  headers: {
    Origin: origin,
    'Access-Control-Request-Method': method,
    ...(headers ? { 'Access-Control-Request-Headers': headers } : {}),
  },
});

function assertNoCors(h, where) {
  for (const k of Object.keys(h)) assert.ok(!k.startsWith('access-control-'), `${where}: unexpected ${k}`);
}

test('preflight from an allowed origin: 204 with the Allow-* headers, credentials, max-age, Vary', async () => {
  const r = await preflight(srv.port, '/api/data', APP, 'POST', 'Content-Type, X-Requested-With');
  assert.equal(r.status, 204);
  assert.equal(r.body, '');
  assert.equal(r.headers['access-control-allow-origin'], APP, 'the origin is echoed (credentials)');
  assert.equal(r.headers['access-control-allow-credentials'], 'true');
  assert.equal(r.headers['access-control-allow-methods'], 'POST');
  assert.equal(r.headers['access-control-allow-headers'], 'content-type,x-requested-with');
  assert.equal(r.headers['access-control-max-age'], '600');
  assert.match(r.headers.vary, /\bOrigin\b/);
});

test('preflight for the SignalR negotiate: the headers the browser client sends are allowed by default', async () => {
  const r = await preflight(srv.port, '/hub/negotiate?negotiateVersion=1', APP, 'POST',
    'authorization,x-requested-with,x-signalr-user-agent');
  assert.equal(r.status, 204);
  assert.equal(r.headers['access-control-allow-origin'], APP);
  assert.equal(r.headers['access-control-allow-credentials'], 'true');
  assert.equal(r.headers['access-control-allow-headers'], 'authorization,x-requested-with,x-signalr-user-agent');
  // Long polling: GET polls and the DELETE of stop() are preflighted too.
  for (const m of ['GET', 'DELETE', 'POST']) {
    const p = await preflight(srv.port, '/hub?id=whatever', APP, m, 'x-requested-with,x-signalr-user-agent');
    assert.equal(p.status, 204, m);
    assert.equal(p.headers['access-control-allow-methods'], m);
  }
});

test('preflight from a refused origin: 403 and no CORS headers', async () => {
  for (const p of ['/api/data', '/hub/negotiate', '/nowhere']) {
    const r = await preflight(srv.port, p, EVIL, 'POST', 'x-requested-with');
    assert.equal(r.status, 403, p);
    assertNoCors(r.headers, p);
    assert.match(r.body, /origin not allowed/);
    assert.match(r.headers.vary, /\bOrigin\b/);
  }
});

test('refusals are logged at Debug with the path only: no connection token or access_token', async () => {
  const r = await preflight(srv.port, '/hub?id=SECRETID&access_token=SECRETTOKEN', EVIL, 'GET');
  assert.equal(r.status, 403);
  const w = await upgrade(srv.port, '/hub?id=SECRETID2', EVIL);
  assert.equal(firstStatus(w.data), 403);
  assert.ok(await srv.waitForLog(`cors: preflight GET /hub from ${EVIL}: 403 (origin not allowed)`));
  assert.ok(await srv.waitForLog(`cors: WebSocket GET /hub from ${EVIL}: 403 (origin not allowed)`));
  assert.doesNotMatch(srv.log(), /SECRET/);
});

test('preflight asking for a method or a header outside the policy: 403', async () => {
  const m = await preflight(srv.port, '/api/data', APP, 'TRACE');
  assert.equal(m.status, 403);
  assert.match(m.body, /method not allowed/);
  assertNoCors(m.headers, 'method');
  const h = await preflight(srv.port, '/api/data', APP, 'POST', 'x-requested-with, x-secret');
  assert.equal(h.status, 403);
  assert.match(h.body, /header not allowed/);
  assertNoCors(h.headers, 'header');
});

test('origins: exact match ignores case and a trailing slash in the policy; *.name matches subdomains only', async () => {
  const ok = async (o) => (await request(srv.port, { path: '/api/data', headers: { Origin: o } })).headers['access-control-allow-origin'];
  assert.equal(await ok('http://localhost:5173'), 'http://localhost:5173');
  assert.equal(await ok('http://APP.example'), 'http://APP.example');
  assert.equal(await ok('https://a.example.org'), 'https://a.example.org');
  assert.equal(await ok('https://a.b.example.org'), 'https://a.b.example.org');
  assert.equal(await ok('https://example.org'), undefined, 'the bare domain is not a subdomain');
  assert.equal(await ok('http://a.example.org'), undefined, 'scheme must match');
  assert.equal(await ok('https://a.example.org:8443'), undefined, 'port must match');
  assert.equal(await ok('https://evil.com/.example.org'), undefined);
  assert.equal(await ok('http://app.example:80'), undefined, 'an origin is compared as serialized');
  assert.equal(await ok('null'), undefined);
});

test('actual request from an allowed origin: Allow-Origin, Allow-Credentials, Expose-Headers, Vary', async () => {
  const r = await request(srv.port, { method: 'POST', path: '/api/data', headers: { Origin: APP } });
  assert.equal(r.status, 200);
  assert.equal(r.body, '{"ok":true}');
  assert.equal(r.headers['access-control-allow-origin'], APP);
  assert.equal(r.headers['access-control-allow-credentials'], 'true');
  assert.equal(r.headers['access-control-expose-headers'], 'X-Total');
  assert.equal(r.headers.vary, 'Origin');
  assert.equal(r.headers['x-total'], '3');
});

test('actual request from a refused origin is served without CORS headers (the browser blocks it)', async () => {
  const r = await request(srv.port, { path: '/api/data', headers: { Origin: EVIL } });
  assert.equal(r.status, 200);
  assertNoCors(r.headers, 'refused origin');
  assert.equal(r.headers.vary, 'Origin');
});

test('a request without Origin gets Vary: Origin only', async () => {
  const r = await request(srv.port, { path: '/api/data' });
  assert.equal(r.status, 200);
  assertNoCors(r.headers, 'no Origin');
  assert.equal(r.headers.vary, 'Origin');
});

test('error responses carry the CORS headers: 500 from a handler, 404, 405, a static file and its 404', async () => {
  const cases = [
    ['GET', '/api/boom', 500],
    ['GET', '/nowhere', 404],
    ['DELETE', '/api/data', 405],
    ['GET', '/static/a.txt', 200],
    ['GET', '/static/missing.txt', 404],
  ];
  for (const [method, p, status] of cases) {
    const r = await request(srv.port, { method, path: p, headers: { Origin: APP } });
    assert.equal(r.status, status, `${method} ${p}`);
    assert.equal(r.headers['access-control-allow-origin'], APP, `${method} ${p}`);
    assert.equal(r.headers['access-control-allow-credentials'], 'true', `${method} ${p}`);
    assert.match(r.headers.vary || '', /Origin/, `${method} ${p}`);
  }
});

test('a handler\'s own Access-Control-Allow-Origin wins; its Vary is kept next to Vary: Origin', async () => {
  const raw = await rawRequest(srv.port, `GET /api/own HTTP/1.1\r\nHost: x\r\nOrigin: ${APP}\r\nConnection: close\r\n\r\n`);
  const [r] = parseAll(raw.data);
  assert.equal(r.status, 200);
  const acao = r.rawHeaders.filter(([k]) => k.toLowerCase() === 'access-control-allow-origin').map(([, v]) => v);
  assert.deepEqual(acao, ['https://mine.example']);
  const vary = r.rawHeaders.filter(([k]) => k.toLowerCase() === 'vary').map(([, v]) => v).sort();
  assert.deepEqual(vary, ['Accept', 'Origin']);
});

test('hub endpoints: negotiate, long-polling poll, send and DELETE carry the CORS headers', async () => {
  const neg = await request(srv.port, { method: 'POST', path: '/hub/negotiate?negotiateVersion=1', headers: { Origin: APP } });
  assert.equal(neg.status, 200);
  assert.equal(neg.headers['access-control-allow-origin'], APP);
  assert.equal(neg.headers['access-control-allow-credentials'], 'true');
  const id = JSON.parse(neg.body).connectionToken;
  const first = await request(srv.port, { path: `/hub?id=${id}&_=0`, headers: { Origin: APP } });
  assert.equal(first.status, 200, 'the first poll starts long polling');
  assert.equal(first.headers['access-control-allow-origin'], APP);
  const send = await request(srv.port, {
    method: 'POST', path: `/hub?id=${id}`, headers: { Origin: APP, 'Content-Type': 'text/plain' },
    body: '{"protocol":"json","version":1}\x1e',
  });
  assert.equal(send.status, 200);
  assert.equal(send.headers['access-control-allow-origin'], APP);
  const poll = await request(srv.port, { path: `/hub?id=${id}&_=1`, headers: { Origin: APP } });
  assert.equal(poll.status, 200);
  assert.equal(poll.body, '{}\x1e', 'the handshake answer');
  assert.equal(poll.headers['access-control-allow-origin'], APP);
  const del = await request(srv.port, { method: 'DELETE', path: `/hub?id=${id}`, headers: { Origin: APP } });
  assert.equal(del.status, 202);
  assert.equal(del.headers['access-control-allow-origin'], APP);
  // Errors of the hub too.
  const bad = await request(srv.port, { path: '/hub?id=nope', headers: { Origin: APP } });
  assert.equal(bad.status, 404);
  assert.equal(bad.headers['access-control-allow-origin'], APP);
});

test('server-sent events: the stream\'s head carries the CORS headers', async () => {
  const neg = await request(srv.port, { method: 'POST', path: '/hub/negotiate?negotiateVersion=1', headers: { Origin: APP } });
  const id = JSON.parse(neg.body).connectionToken;
  const raw = await rawRequest(srv.port,
    `GET /hub?id=${id} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nOrigin: ${APP}\r\n\r\n`, { timeoutMs: 400 });
  const head = raw.data.toString('latin1').split('\r\n\r\n')[0];
  assert.match(head, /^HTTP\/1\.1 200/);
  assert.match(head, /\r\ncontent-type: text\/event-stream/i);
  assert.match(head, new RegExp(`\\r\\nAccess-Control-Allow-Origin: ${APP}\\r\\n`));
  assert.match(head, /\r\nAccess-Control-Allow-Credentials: true\r\n/);
});

test('per-route policy: origins "*" without credentials answers "*" to any origin', async () => {
  const r = await request(srv.port, { path: '/open', headers: { Origin: EVIL } });
  assert.equal(r.status, 200);
  assert.equal(r.headers['access-control-allow-origin'], '*');
  assert.equal(r.headers['access-control-allow-credentials'], undefined);
  assert.equal(r.headers['access-control-expose-headers'], undefined, 'the route policy has no expose list');
  const p = await preflight(srv.port, '/open', EVIL, 'GET', 'x-anything, x-else');
  assert.equal(p.status, 204);
  assert.equal(p.headers['access-control-allow-origin'], '*');
  assert.equal(p.headers['access-control-allow-headers'], 'x-anything,x-else', 'headers = "*" allows any');
  assert.equal(p.headers['access-control-max-age'], undefined);
});

test('per-route policy given as a table: its own origins, methods and headers', async () => {
  const p = await preflight(srv.port, '/inline', 'http://other.example', 'PUT', 'x-custom');
  assert.equal(p.status, 204);
  assert.equal(p.headers['access-control-allow-origin'], 'http://other.example');
  assert.equal(p.headers['access-control-allow-credentials'], undefined);
  const app = await preflight(srv.port, '/inline', APP, 'PUT');
  assert.equal(app.status, 403, 'the default policy\'s origin is not the route\'s');
  const r = await request(srv.port, { method: 'PUT', path: '/inline', headers: { Origin: 'http://other.example' } });
  assert.equal(r.headers['access-control-allow-origin'], 'http://other.example');
});

test('cors = false on a route: no CORS headers, and an OPTIONS goes to the route\'s own handler', async () => {
  const r = await request(srv.port, { path: '/closed', headers: { Origin: APP } });
  assert.equal(r.status, 200);
  assertNoCors(r.headers, '/closed');
  assert.equal(r.headers.vary, undefined);
  const p = await preflight(srv.port, '/closed', APP, 'GET');
  // The preflight asks about GET, whose route has no CORS: the request goes on to routing,
  // where the OPTIONS route answers (a browser would then refuse the missing headers).
  assert.equal(p.status, 200);
  assert.equal(p.body, 'own options');
  assertNoCors(p.headers, 'OPTIONS /closed');
});

test('per-hub policies: cors = false and a wildcard policy', async () => {
  const closed = await request(srv.port, { method: 'POST', path: '/hub-closed/negotiate?negotiateVersion=1', headers: { Origin: APP } });
  assert.equal(closed.status, 200);
  assertNoCors(closed.headers, 'hub-closed');
  const pre = await preflight(srv.port, '/hub-closed/negotiate', APP, 'POST');
  assert.equal(pre.status, 405, 'no policy: the hub answers OPTIONS as before');
  const open = await request(srv.port, { method: 'POST', path: '/hub-open/negotiate?negotiateVersion=1', headers: { Origin: EVIL } });
  assert.equal(open.headers['access-control-allow-origin'], '*');
});

test('no kr.cors: OPTIONS keeps its old answers and responses carry no CORS headers or Vary', async () => {
  const p = await preflight(plain.port, '/plain', APP, 'GET', 'x-requested-with');
  assert.equal(p.status, 405);
  assert.equal(p.headers.allow, 'GET, HEAD');
  assertNoCors(p.headers, 'plain preflight');
  const n = await preflight(plain.port, '/hub/negotiate', APP, 'POST');
  assert.equal(n.status, 405);
  assert.equal(n.headers.allow, 'POST');
  const r = await request(plain.port, { path: '/plain', headers: { Origin: APP } });
  assert.equal(r.status, 200);
  assertNoCors(r.headers, 'plain');
  assert.equal(r.headers.vary, undefined);
});

function upgrade(port, p, origin) {
  return rawRequest(port,
    `GET ${p} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n' +
    (origin ? `Origin: ${origin}\r\n` : '') + '\r\n', { timeoutMs: 250 });
}

test('WebSocket upgrade: a refused Origin gets 403; an allowed one, none (non-browser) and the server\'s own origin get 101', async () => {
  const refused = await upgrade(srv.port, '/hub', EVIL);
  assert.equal(firstStatus(refused.data), 403);
  assert.match(refused.data.toString(), /origin not allowed/);
  assert.equal(firstStatus((await upgrade(srv.port, '/hub', APP)).data), 101);
  assert.equal(firstStatus((await upgrade(srv.port, '/hub', 'https://x.example.org')).data), 101);
  assert.equal(firstStatus((await upgrade(srv.port, '/hub', null)).data), 101);
  assert.equal(firstStatus((await upgrade(srv.port, '/hub', `http://127.0.0.1:${srv.port}`)).data), 101, 'same origin');
  // With a negotiated id too.
  const neg = await request(srv.port, { method: 'POST', path: '/hub/negotiate?negotiateVersion=1' });
  const id = JSON.parse(neg.body).connectionToken;
  assert.equal(firstStatus((await upgrade(srv.port, `/hub?id=${id}`, EVIL)).data), 403);
  // A hub without CORS and a wildcard one do not check.
  assert.equal(firstStatus((await upgrade(srv.port, '/hub-closed', EVIL)).data), 101);
  assert.equal(firstStatus((await upgrade(srv.port, '/hub-open', EVIL)).data), 101);
  assert.equal(firstStatus((await upgrade(plain.port, '/hub', EVIL)).data), 101, 'no kr.cors at all');
});

test('load errors: wildcard with credentials, bad origins and options, kr.cors twice', async () => {
  const dir = tempDir('kestrun-cors-check-');
  const cases = [
    ['kr.cors{ origins = "*", credentials = true }',
      'kr.cors: origins "*" cannot be used with credentials = true (the Fetch standard forbids it)'],
    ['kr.map_route("GET", "/x", function() end, { cors = { origins = { "*" }, credentials = true } })',
      'kr.cors: origins "*" cannot be used with credentials = true (the Fetch standard forbids it)'],
    ['kr.cors{ origins = { "app.example" } }', "kr.cors: origin 'app.example' is not scheme://host[:port]"],
    ['kr.cors{ origins = { "http://a.example/path" } }', "kr.cors: origin 'http://a.example/path' is not scheme://host[:port]"],
    ['kr.cors{ origins = "*", colour = "red" }', "kr.cors: unknown option 'colour'"],
    ['kr.cors{ methods = { "GET" } }', 'kr.cors: origins is required'],
    ['kr.cors{ origins = "*", headers = { "bad header" } }', "kr.cors: header 'bad header' is not a valid header name"],
    ['kr.cors{ origins = "*", max_age = -1 }', 'kr.cors: max_age must be'],
    ['kr.cors{ origins = "*" }\nkr.cors{ origins = "*" }', 'kr.cors: the default policy is already set'],
    ['kr.map_route("GET", "/x", function() end, { cors = true })', 'kr.map_route: cors must be a policy'],
    ['kr.hub("/h", { cors = "yes" })', 'kr.hub: cors must be a policy'],
  ];
  for (const [i, [src, msg]] of cases.entries()) {
    const f = writeScript(dir, src + '\n', `bad${i}.lua`);
    const r = await runKestrun(['--check', f], { timeoutMs: 5000 });
    assert.equal(r.code, 1, `${src}\n${r.stderr}`);
    assert.ok(r.stderr.includes(msg), `expected ${JSON.stringify(msg)} in:\n${r.stderr}`);
    assert.match(r.stderr, new RegExp(`bad${i}\\.lua:\\d+:`), 'FILE:LINE:');
  }
  const good = writeScript(dir, 'local p = kr.cors{ origins = "*" }\nassert(tostring(p) == "kr.CorsPolicy (*)")\n' +
    'kr.map_route("GET", "/x", function() end, { cors = p })\n', 'good.lua');
  const ok = await runKestrun(['--check', good], { timeoutMs: 5000 });
  assert.equal(ok.code, 0, ok.stderr);
});
