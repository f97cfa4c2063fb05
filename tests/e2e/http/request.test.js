'use strict';
// The req object (lua-api.md section 3).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, request, rawRequest, parseAll } = require('../lib/server');

let srv;
before(async () => { srv = await startServer({ scripts: ['request.lua'] }); });
after(async () => { if (srv) await srv.stop(); });

async function json(opts) {
  const r = await request(srv.port, opts);
  assert.equal(r.status, 200, `status for ${opts.method || 'GET'} ${opts.path}: body ${r.body}`);
  return JSON.parse(r.body);
}

test('req.method, req.path, req.raw_query', async () => {
  const v = await json({ path: '/req/info/x?b=2&a=1' });
  assert.equal(v.method, 'GET');
  assert.equal(v.path, '/req/info/x');
  assert.equal(v.raw_query, 'b=2&a=1');
  const p = await json({ method: 'POST', path: '/req/info/y', body: 'z' });
  assert.equal(p.method, 'POST');
  assert.equal(p.path, '/req/info/y');
  const d = await json({ method: 'DELETE', path: '/req/info/z' });
  assert.equal(d.method, 'DELETE');
});

test('req.raw_query is an empty string without a query', async () => {
  const v = await json({ path: '/req/info/x' });
  assert.equal(v.raw_query_type, 'string');
  assert.equal(v.raw_query, '');
});

test('req.path is percent-decoded', async () => {
  const v = await json({ path: '/req/info/a%20b' });
  assert.equal(v.path, '/req/info/a b');
});

test('req.query: decoded, a repeated key gives the last value, req:query_all lists them', async () => {
  const v = await json({ path: '/req/query?a=1&b=x%20y&a=2&sp=a+b&a=3&%C3%BC=%C3%A9' });
  assert.equal(v.a, '3');
  assert.equal(v.b, 'x y');
  assert.equal(v.sp, 'a b');
  assert.equal(v.utf, 'é');
  assert.equal(v.all, '1|2|3');
  assert.equal(v.n_all, 3);
  assert.equal(v.n_missing, 0);
  assert.equal(v.missing_is_nil, true);
});

test('req.headers by lower-case name', async () => {
  const v = await json({ path: '/req/headers', headers: { 'X-Custom-Thing': 'Value One', Accept: 'text/x-test' } });
  assert.equal(v.custom, 'Value One');
  assert.equal(v.accept, 'text/x-test');
  assert.equal(v.host, `127.0.0.1:${srv.port}`);
  assert.equal(v.missing_is_nil, true);
});

test('req:cookie(name)', async () => {
  const v = await json({ path: '/req/cookie', headers: { Cookie: 'a=1; sid=abc123; theme=dark' } });
  assert.equal(v.sid, 'abc123');
  assert.equal(v.theme, 'dark');
  assert.equal(v.missing_is_nil, true);
  const none = await json({ path: '/req/cookie' });
  assert.equal(none.sid, undefined);
  assert.equal(none.missing_is_nil, true);
});

test('req.body is nil when there is no body', async () => {
  const g = await json({ path: '/req/body' });
  assert.equal(g.is_nil, true);
  const e = await json({ method: 'POST', path: '/req/body', headers: { 'Content-Length': '0' }, body: '' });
  assert.equal(e.is_nil, true);
});

test('req.body holds the raw body', async () => {
  const v = await json({ method: 'POST', path: '/req/body', headers: { 'Content-Type': 'text/plain' }, body: 'hello body' });
  assert.equal(v.is_nil, false);
  assert.equal(v.body_type, 'string');
  assert.equal(v.text, 'hello body');
  assert.equal(v.len, 10);
});

test('req.body keeps binary bytes (NUL and high bytes)', async () => {
  const bytes = Buffer.alloc(256);
  for (let i = 0; i < 256; i++) bytes[i] = i;
  const v = await json({ method: 'PUT', path: '/req/body', headers: { 'Content-Type': 'application/octet-stream' }, body: bytes });
  assert.equal(v.len, 256);
  assert.equal(v.sum, (255 * 256) / 2);
});

test('req.body of 1 MiB arrives whole', async () => {
  const big = Buffer.alloc(1 << 20, 7);
  const v = await json({ method: 'POST', path: '/req/body', body: big });
  assert.equal(v.len, 1 << 20);
  assert.equal(v.sum, 7 * (1 << 20));
});

test('req:json() decodes a JSON body', async () => {
  const v = await json({ method: 'POST', path: '/req/json', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'x', n: 3, arr: [10, 20], obj: { k: 'v' } }) });
  delete v.n_type; // integer vs float for JSON numbers is not part of the contract
  assert.deepEqual(v, { ok: true, name: 'x', n: 3, second: 20, nested: 'v' });
});

test('req:json() on bad JSON returns nil, err', async () => {
  const v = await json({ method: 'POST', path: '/req/json', headers: { 'Content-Type': 'application/json' }, body: '{bad json' });
  assert.equal(v.ok, false);
  assert.equal(v.err_type, 'string');
  assert.ok(v.err.length > 0);
});

test('req:form() decodes an urlencoded body', async () => {
  const v = await json({ method: 'POST', path: '/req/form',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: 'a=1&b=hello+world&c=%26x%3D&%C3%BC=%C3%A9' });
  assert.deepEqual(v, { a: '1', b: 'hello world', c: '&x=', e: 'é' });
});

test('req.remote_addr is the peer address', async () => {
  const v = await json({ path: '/req/info/x' });
  assert.equal(v.remote_addr, '127.0.0.1');
});

test('header names arrive lower-cased whatever the client sent', async () => {
  const raw = await rawRequest(srv.port,
    'GET /req/headers HTTP/1.1\r\nHOST: h.example\r\nX-CUSTOM-THING: Shouted\r\nConnection: close\r\n\r\n');
  const [r] = parseAll(raw.data);
  assert.equal(r.status, 200, raw.data.toString('latin1'));
  const v = JSON.parse(r.text);
  assert.equal(v.custom, 'Shouted');
  assert.equal(v.host, 'h.example');
});
