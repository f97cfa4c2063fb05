'use strict';
// The res object, 204 for silence, 500 for errors, Date and Server everywhere (lua-api.md section 3).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, request, rawRequest, parseAll, assertCommonHeaders } = require('../lib/server');

let srv;
before(async () => { srv = await startServer({ scripts: ['response.lua'] }); });
after(async () => { if (srv) await srv.stop(); });

const get = (path, opts = {}) => request(srv.port, { path, ...opts });
const JSON_CT = /^application\/json(; ?charset=utf-8)?$/i;
const ERROR_BODY = '{"error":"Internal Server Error"}';

test('res:text sets text/plain; charset=utf-8', async () => {
  const r = await get('/res/text');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'hello text');
  assert.equal(r.headers['content-type'], 'text/plain; charset=utf-8');
  assert.equal(r.headers['content-length'], String(Buffer.byteLength('hello text')));
  assertCommonHeaders(r.headers);
});

test('res:text(body, status)', async () => {
  const r = await get('/res/text-status');
  assert.equal(r.status, 201);
  assert.equal(r.body, 'created');
});

test('res:text keeps UTF-8 and counts bytes', async () => {
  const r = await get('/res/text-utf8');
  assert.equal(r.body, 'héllo ✓');
  assert.equal(r.headers['content-length'], String(Buffer.byteLength('héllo ✓')));
});

test('res:json keeps keys as written: { Title = "x" } -> {"Title":"x"}', async () => {
  const r = await get('/res/json');
  assert.equal(r.status, 200);
  assert.match(r.headers['content-type'], JSON_CT);
  assert.equal(r.body, '{"Title":"x"}');
  assertCommonHeaders(r.headers);
});

test('res:json nested values, arrays, null, floats', async () => {
  const r = await get('/res/json-nested');
  assert.equal(r.status, 200);
  assert.deepEqual(JSON.parse(r.body), {
    Title: 'x', Items: [1, 2, 3], Nested: { Flag: true, Nothing: null, Pi: 1.5 }, camelCase: 'c', snake_case: 's',
  });
});

test('res:json(value, status)', async () => {
  const r = await get('/res/json-status');
  assert.equal(r.status, 422);
  assert.equal(r.body, '{"ok":false}');
});

test('res:json of an array and of a string', async () => {
  assert.equal((await get('/res/json-array')).body, '["a","b"]');
  const s = await get('/res/json-string');
  assert.equal(JSON.parse(s.body), 'just a "string"\n');
});

test('res:html sets text/html; charset=utf-8', async () => {
  const r = await get('/res/html');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], 'text/html; charset=utf-8');
  assert.equal(r.body, '<h1>hi</h1>');
  const r2 = await get('/res/html-status');
  assert.equal(r2.status, 404);
  assert.equal(r2.body, '<p>nope</p>');
});

test('res:redirect: 302 with Location by default', async () => {
  const r = await get('/res/redirect');
  assert.equal(r.status, 302);
  assert.equal(r.headers.location, '/hello');
  assertCommonHeaders(r.headers, 'on 302');
});

test('res:redirect(url, 301)', async () => {
  const r = await get('/res/redirect-301');
  assert.equal(r.status, 301);
  assert.equal(r.headers.location, 'https://example.com/x');
});

test('res:send with a custom content type', async () => {
  const r = await get('/res/send');
  assert.equal(r.status, 200);
  assert.match(r.headers['content-type'], /^text\/csv\b/);
  assert.equal(r.body, 'a,b\n1,2\n');
});

test('res:send keeps binary bytes', async () => {
  const r = await get('/res/send-bin');
  assert.equal(r.headers['content-type'], 'application/octet-stream');
  assert.equal(r.bodyBuf.length, 256);
  for (let i = 0; i < 256; i++) assert.equal(r.bodyBuf[i], i);
});

test('res:send(body, status, type)', async () => {
  const r = await get('/res/send-status');
  assert.equal(r.status, 418);
  assert.equal(r.body, 'teapot');
});

test('methods chain: res:status(201):header("X-A","1"):text("ok")', async () => {
  const r = await get('/res/chain');
  assert.equal(r.status, 201);
  assert.equal(r.headers['x-a'], '1');
  assert.equal(r.body, 'ok');
  assert.equal(r.headers['content-type'], 'text/plain; charset=utf-8');
});

test('res:header and res:status before the body', async () => {
  const r = await get('/res/headers');
  assert.equal(r.status, 202);
  assert.equal(r.headers['x-one'], '1');
  assert.equal(r.headers['cache-control'], 'no-store');
  assert.equal(r.body, 'accepted');
  const r2 = await get('/res/status-then-json');
  assert.equal(r2.status, 400);
  assert.equal(r2.body, '{"error":"bad"}');
});

test('a handler that writes nothing gets 204 No Content', async () => {
  const r = await get('/res/nothing');
  assert.equal(r.status, 204);
  assert.equal(r.body, '');
  assertCommonHeaders(r.headers, 'on 204');
  const p = await request(srv.port, { method: 'POST', path: '/res/nothing', body: 'ignored' });
  assert.equal(p.status, 204);
  const s = await get('/res/nothing-after-sleep');
  assert.equal(s.status, 204);
});

async function expect500(path, marker) {
  const r = await get(path);
  assert.equal(r.status, 500, `${path}: ${r.body}`);
  assert.equal(r.body, ERROR_BODY);
  assert.match(r.headers['content-type'], JSON_CT);
  assertCommonHeaders(r.headers, 'on 500');
  if (marker) {
    assert.ok(await srv.waitForLog(marker), `log should contain ${marker}; log:\n${srv.log()}`);
  }
  return r;
}

test('a raising handler: 500 {"error":"Internal Server Error"}, message and traceback in the log', async () => {
  await expect500('/res/error', 'kaboom-unique-7731');
  const log = srv.log();
  const at = log.indexOf('kaboom-unique-7731');
  assert.match(log.slice(at), /traceback/i, `traceback after the message; log:\n${log}`);
  assert.match(log, /response\.lua:\d+/, 'the log names the script and line');
  // the server keeps serving
  const ok = await get('/hello');
  assert.equal(ok.status, 200);
  assert.equal(ok.body, 'hi');
});

test('a handler raising after kr.sleep: 500', async () => {
  await expect500('/res/error-after-sleep', 'late-kaboom-5512');
  assert.equal((await get('/hello')).status, 200);
});

test('a handler raising a table or indexing nil: 500', async () => {
  await expect500('/res/error-table');
  await expect500('/res/error-nil-index', /attempt to index/);
  assert.equal((await get('/hello')).status, 200);
});

test('a handler raising after setting status and headers: still 500 with the error body only', async () => {
  const r = await expect500('/res/error-after-header', 'after-header-kaboom');
  assert.equal(r.headers['x-partial'], undefined);
});

test('no stack trace reaches the client', async () => {
  const r = await get('/res/error');
  assert.doesNotMatch(r.body, /kaboom|traceback|\.lua/);
});

test('Date and Server on every kind of response', async () => {
  for (const p of ['/hello', '/res/json', '/res/nothing', '/res/redirect', '/nope', '/res/error']) {
    const r = await get(p);
    assertCommonHeaders(r.headers, `on ${p} (${r.status})`);
  }
  const r = await request(srv.port, { method: 'DELETE', path: '/hello' });
  assert.equal(r.status, 405);
  assertCommonHeaders(r.headers, 'on 405');
});

test('res:json of a table with a cycle is a programming error: 500', async () => {
  await expect500('/res/json-cycle');
  assert.equal((await get('/hello')).status, 200);
});

test('CR/LF in a header value cannot inject a header (500 or sanitised)', async () => {
  for (const p of ['/res/header-crlf', '/res/redirect-crlf']) {
    const raw = await rawRequest(srv.port, `GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    const text = raw.data.toString('latin1');
    assert.doesNotMatch(text, /\r\nInjected:/i, `${p}: ${JSON.stringify(text)}`);
    const [r] = parseAll(raw.data);
    assert.ok(r, `${p}: a response`);
    assert.equal(r.headers.injected, undefined);
  }
  assert.equal((await get('/hello')).status, 200);
});
