'use strict';
// kr.map_route: patterns, parameters, verbs, 404 / 405 / HEAD (lua-api.md section 3).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, request, rawRequest, parseAll, assertCommonHeaders, allowList } = require('../lib/server');

let srv;
before(async () => { srv = await startServer({ scripts: ['routes.lua'] }); });
after(async () => { if (srv) await srv.stop(); });

const get = (path, opts = {}) => request(srv.port, { path, ...opts });

test('GET /hello answers "hi" as text/plain', async () => {
  const r = await get('/hello');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'hi');
  assert.equal(r.headers['content-type'], 'text/plain; charset=utf-8');
  assert.equal(r.headers['content-length'], '2');
  assertCommonHeaders(r.headers);
});

test('route parameter {level} arrives in req.params', async () => {
  const r = await get('/api/log/Warning');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'level=Warning');
});

test('route parameter values are percent-decoded', async () => {
  const r = await get('/api/log/Warn%20ing');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'level=Warn ing');
});

test('two parameters in one pattern', async () => {
  const r = await get('/two/x1/and/y2');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'x1+y2');
});

test('{id:int} gives a Lua integer', async () => {
  const r = await get('/items/42');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'integer:43');
});

test('{id:int} does not match a non-integer: 404', async () => {
  assert.equal((await get('/items/abc')).status, 404);
  assert.equal((await get('/items/4.5')).status, 404);
});

test('catch-all {*rest} takes the remaining path', async () => {
  const r = await get('/files/a/b/c.txt');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'rest=a/b/c.txt');
  const r2 = await get('/files/one');
  assert.equal(r2.body, 'rest=one');
});

test('a literal segment beats a parameter', async () => {
  assert.equal((await get('/users/me')).body, 'literal');
  assert.equal((await get('/users/bob')).body, 'param:bob');
});

test('unknown path: 404 with Date and Server', async () => {
  const r = await get('/no/such/path');
  assert.equal(r.status, 404);
  assertCommonHeaders(r.headers, 'on 404');
  assert.equal((await get('/hello/extra')).status, 404);
  assert.equal((await get('/api/log')).status, 404);
});

test('path matches but the verb does not: 405 with Allow', async () => {
  const r = await request(srv.port, { method: 'POST', path: '/hello', body: '' });
  assert.equal(r.status, 405);
  assert.deepEqual(allowList(r.headers.allow), ['GET', 'HEAD']);
  assertCommonHeaders(r.headers, 'on 405');

  const r2 = await get('/only-post');
  assert.equal(r2.status, 405);
  assert.deepEqual(allowList(r2.headers.allow), ['POST']);

  const r3 = await get('/mixed');
  assert.equal(r3.status, 405);
  assert.deepEqual(allowList(r3.headers.allow), ['DELETE', 'PUT']);
});

test('routes with several verbs on one path', async () => {
  assert.equal((await request(srv.port, { method: 'PUT', path: '/mixed', body: '' })).body, 'put');
  assert.equal((await request(srv.port, { method: 'DELETE', path: '/mixed' })).body, 'delete');
});

test('GET answers HEAD: same headers, no body', async () => {
  const g = await get('/hello');
  const h = await request(srv.port, { method: 'HEAD', path: '/hello' });
  assert.equal(h.status, 200);
  assert.equal(h.body, '');
  assert.equal(h.headers['content-type'], g.headers['content-type']);
  assert.equal(h.headers['content-length'], g.headers['content-length']);
  assertCommonHeaders(h.headers, 'on HEAD');

  // and on the wire there really are no body bytes: a second request right after is parsed cleanly
  const raw = await rawRequest(srv.port,
    'HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  const rs = parseAll(raw.data, ['HEAD', 'GET']);
  assert.equal(rs.length, 2, raw.data.toString('latin1'));
  assert.equal(rs[0].status, 200);
  assert.equal(rs[0].headers['content-length'], '2');
  assert.equal(rs[1].status, 200);
  assert.equal(rs[1].text, 'hi');
});

test('verbs given as "GET,POST"', async () => {
  assert.equal((await get('/multi-a')).body, 'a:GET');
  assert.equal((await request(srv.port, { method: 'POST', path: '/multi-a', body: 'x' })).body, 'a:POST');
  const r = await request(srv.port, { method: 'PUT', path: '/multi-a', body: 'x' });
  assert.equal(r.status, 405);
  assert.deepEqual(allowList(r.headers.allow), ['GET', 'HEAD', 'POST']);
});

test('verbs given as {"GET","POST"}', async () => {
  assert.equal((await get('/multi-b')).body, 'b:GET');
  assert.equal((await request(srv.port, { method: 'POST', path: '/multi-b', body: 'x' })).body, 'b:POST');
  assert.equal((await request(srv.port, { method: 'DELETE', path: '/multi-b' })).status, 405);
});

test('the query string does not take part in matching', async () => {
  const r = await get('/hello?x=1&y=2');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'hi');
});

// ASP.NET Core routing conventions the contract's "ASP.NET-style templates" implies.
test('literal segments match case-insensitively, a trailing slash is ignored', async () => {
  assert.equal((await get('/HELLO')).body, 'hi');
  assert.equal((await get('/hello/')).body, 'hi');
  assert.equal((await get('/Users/ME')).body, 'literal');
});

test('{id:int} accepts a sign and rejects values that do not fit', async () => {
  assert.equal((await get('/items/-5')).body, 'integer:-4');
  assert.equal((await get('/items/99999999999999999999')).status, 404);
});

test('a catch-all also matches an empty remainder', async () => {
  const r = await get('/files/');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'rest=');
});
