'use strict';
// Header timeout (slowloris) and keep-alive idle timeout, lowered with kr.limits for a fast test.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, request, rawRequest, RawConn, firstStatus, parseAll, sleep } = require('../lib/server');

let srv;
before(async () => {
  srv = await startServer({
    script: [
      'kr.limits{ header_timeout_ms = 500, keepalive_timeout_ms = 300 }',
      'kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)',
      'kr.map_route("GET", "/sleep", function(req, res) kr.sleep(800) res:text("slept") end)',
      'kr.map_route("POST", "/echo", function(req, res) res:text(req.body or "<nil>") end)',
    ].join('\n'),
  });
});
after(async () => { if (srv) await srv.stop(); });

test('a partial request head: 408 and close within ~2 s', async () => {
  const raw = await rawRequest(srv.port, 'GET /hello HTTP/1.1\r\nHost: x\r\n', { timeoutMs: 4000 });
  assert.equal(firstStatus(raw.data), 408, JSON.stringify(raw.data.toString('latin1')));
  assert.equal(raw.closed, true);
  assert.ok(raw.ms >= 400, `not before the timeout (${raw.ms} ms)`);
  assert.ok(raw.ms < 2000, `within ~2 s (${raw.ms} ms)`);
  assert.equal((await request(srv.port, { path: '/hello' })).status, 200);
});

test('slowloris: a head trickled one byte at a time still times out', async () => {
  const writes = ['GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: '];
  for (let i = 0; i < 40; i++) writes.push('a');
  const raw = await rawRequest(srv.port, null, { writes, delayMs: 100, timeoutMs: 4000 });
  assert.equal(firstStatus(raw.data), 408, JSON.stringify(raw.data.toString('latin1')));
  assert.equal(raw.closed, true);
  assert.ok(raw.ms < 2500, `closed after ${raw.ms} ms`);
});

test('a connection that never sends anything is closed', async () => {
  const raw = await rawRequest(srv.port, null, { timeoutMs: 4000 });
  assert.equal(raw.closed, true);
  assert.ok(raw.ms < 2500, `closed after ${raw.ms} ms`);
});

test('keep-alive idle timeout closes an idle connection within ~2 s', async () => {
  const c = await new RawConn(srv.port).connect();
  try {
    const t0 = Date.now();
    c.write('GET /hello HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal((await c.readResponse()).text, 'hi');
    const closed = await c.waitClosed(3000);
    const ms = Date.now() - t0;
    assert.equal(closed, true, 'idle connection closed');
    assert.ok(ms < 2000, `closed after ${ms} ms`);
    // nothing else was sent on close, or at most a 408
    if (c.buf.length) assert.equal(firstStatus(c.buf), 408);
  } finally { c.close(); }
});

test('a second request inside the keep-alive window is served', async () => {
  const c = await new RawConn(srv.port).connect();
  try {
    c.write('GET /hello HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal((await c.readResponse()).text, 'hi');
    await sleep(100);
    c.write('GET /hello HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal((await c.readResponse()).text, 'hi');
  } finally { c.close(); }
});

test('a handler that runs longer than both timeouts is not cut off', async () => {
  const raw = await rawRequest(srv.port, 'GET /sleep HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', { timeoutMs: 4000 });
  const rs = parseAll(raw.data);
  assert.equal(rs.length, 1, JSON.stringify(raw.data.toString('latin1')));
  assert.equal(rs[0].status, 200);
  assert.equal(rs[0].text, 'slept');
});

test('a body arriving slowly after a complete head is not a header timeout', async () => {
  const raw = await rawRequest(srv.port, null, {
    writes: ['POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 8\r\n\r\n', 'ab', 'cd', 'ef', 'gh'],
    delayMs: 200,
    timeoutMs: 4000,
  });
  const rs = parseAll(raw.data);
  assert.equal(rs.length, 1, JSON.stringify(raw.data.toString('latin1')));
  assert.equal(rs[0].status, 200);
  assert.equal(rs[0].text, 'abcdefgh');
});
