'use strict';
// HTTP/1.1 connection handling on raw sockets: keep-alive, pipelining, Connection: close,
// HTTP/1.0, request bodies by Content-Length and chunked.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, rawRequest, RawConn, parseAll, sleep, assertCommonHeaders } = require('../lib/server');

let srv;
before(async () => { srv = await startServer({ scripts: ['protocol.lua'] }); });
after(async () => { if (srv) await srv.stop(); });

const GET = (p, extra = '') => `GET ${p} HTTP/1.1\r\nHost: test\r\n${extra}\r\n`;

async function conn() { return new RawConn(srv.port).connect(); }

test('keep-alive: two requests on one connection', async () => {
  const c = await conn();
  try {
    c.write(GET('/hello'));
    const r1 = await c.readResponse();
    assert.equal(r1.status, 200);
    assert.equal(r1.text, 'hi');
    assert.notEqual((r1.headers.connection || '').toLowerCase(), 'close');
    assertCommonHeaders(r1.headers);
    c.write(GET('/fast'));
    const r2 = await c.readResponse();
    assert.equal(r2.status, 200);
    assert.equal(r2.text, 'fast');
    assert.equal(c.closed, false);
  } finally { c.close(); }
});

test('keep-alive survives 404, 405 and 204 responses', async () => {
  const c = await conn();
  try {
    c.write(GET('/missing'));
    assert.equal((await c.readResponse()).status, 404);
    c.write('DELETE /hello HTTP/1.1\r\nHost: t\r\n\r\n');
    assert.equal((await c.readResponse()).status, 405);
    c.write(GET('/nothing'));
    assert.equal((await c.readResponse()).status, 204);
    c.write(GET('/hello'));
    assert.equal((await c.readResponse()).text, 'hi');
  } finally { c.close(); }
});

test('pipelining: three requests in one write, three responses in order', async () => {
  const c = await conn();
  try {
    c.write(GET('/slow') + GET('/fast') + GET('/hello'));
    const rs = await c.readResponses(3);
    assert.deepEqual(rs.map((r) => r.status), [200, 200, 200]);
    assert.deepEqual(rs.map((r) => r.text), ['slow', 'fast', 'hi']);
  } finally { c.close(); }
});

test('pipelining: twenty mixed sleeping and immediate requests stay in order', async () => {
  const c = await conn();
  try {
    let bytes = '';
    for (let i = 1; i <= 20; i++) bytes += GET(`/n/${i}`);
    c.write(bytes);
    const rs = await c.readResponses(20);
    assert.deepEqual(rs.map((r) => r.text), Array.from({ length: 20 }, (_, i) => `n${i + 1}`));
  } finally { c.close(); }
});

test('pipelining with bodies in between (Content-Length and chunked)', async () => {
  const c = await conn();
  try {
    c.write(
      'POST /echo-body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde' +
      GET('/fast') +
      'POST /echo-body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n' +
      GET('/slow'));
    const rs = await c.readResponses(4);
    assert.deepEqual(rs.map((r) => r.text), ['abcde', 'fast', 'xyz', 'slow']);
  } finally { c.close(); }
});

test('a request split into many small writes', async () => {
  const req = GET('/hello');
  const writes = [];
  for (let i = 0; i < req.length; i += 3) writes.push(req.slice(i, i + 3));
  writes.push(GET('/fast', 'Connection: close\r\n'));
  const raw = await rawRequest(srv.port, null, { writes, delayMs: 5, timeoutMs: 5000 });
  const rs = parseAll(raw.data);
  assert.deepEqual(rs.map((r) => r.text), ['hi', 'fast']);
  assert.equal(raw.closed, true);
});

test('Connection: close closes after the response', async () => {
  const raw = await rawRequest(srv.port, GET('/hello', 'Connection: close\r\n'), { timeoutMs: 3000 });
  assert.equal(raw.closed, true, 'server closed the connection');
  const rs = parseAll(raw.data);
  assert.equal(rs.length, 1);
  assert.equal(rs[0].status, 200);
  assert.equal(rs[0].text, 'hi');
  assert.equal((rs[0].headers.connection || '').toLowerCase(), 'close');
});

test('Connection: close in a pipeline: later requests are not answered', async () => {
  const raw = await rawRequest(srv.port, GET('/fast', 'Connection: close\r\n') + GET('/hello'), { timeoutMs: 3000 });
  assert.equal(raw.closed, true);
  const rs = parseAll(raw.data);
  assert.equal(rs.length, 1);
  assert.equal(rs[0].text, 'fast');
});

test('HTTP/1.0 without keep-alive closes after the response', async () => {
  const raw = await rawRequest(srv.port, 'GET /hello HTTP/1.0\r\n\r\n', { timeoutMs: 3000 });
  assert.equal(raw.closed, true);
  const rs = parseAll(raw.data);
  assert.equal(rs.length, 1);
  assert.equal(rs[0].status, 200);
  assert.equal(rs[0].text, 'hi');
  assertCommonHeaders(rs[0].headers, 'on HTTP/1.0');
});

test('HTTP/1.0 with Connection: keep-alive stays open', async () => {
  const c = await conn();
  try {
    c.write('GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    const r1 = await c.readResponse();
    assert.equal(r1.text, 'hi');
    c.write('GET /fast HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    const r2 = await c.readResponse();
    assert.equal(r2.text, 'fast');
  } finally { c.close(); }
});

test('Content-Length body reaches req.body', async () => {
  const c = await conn();
  try {
    c.write('POST /echo-body HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world');
    const r = await c.readResponse();
    assert.equal(r.status, 200);
    assert.equal(r.text, 'hello world');
  } finally { c.close(); }
});

test('Content-Length body sent in pieces', async () => {
  const raw = await rawRequest(srv.port, null, {
    writes: ['PUT /echo-body HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 10\r\n\r\n', '01234', '56789'],
    delayMs: 50,
  });
  const [r] = parseAll(raw.data);
  assert.equal(r.text, '0123456789');
});

test('chunked request body reaches req.body', async () => {
  const c = await conn();
  try {
    c.write('POST /echo-body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n' +
      '5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n');
    const r = await c.readResponse();
    assert.equal(r.status, 200);
    assert.equal(r.text, 'hello world');
  } finally { c.close(); }
});

test('chunked body in separate writes, with a chunk extension and a trailer', async () => {
  const raw = await rawRequest(srv.port, null, {
    writes: [
      'POST /echo-body HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n',
      '4;name=value\r\nabcd\r\n',
      'A\r\n0123456789\r\n',
      '0\r\nX-Trailer: t\r\n\r\n',
    ],
    delayMs: 30,
  });
  const [r] = parseAll(raw.data);
  assert.ok(r, raw.data.toString('latin1'));
  assert.equal(r.status, 200);
  assert.equal(r.text, 'abcd0123456789');
});

test('an empty chunked body gives req.body == nil', async () => {
  const raw = await rawRequest(srv.port,
    'POST /echo-body HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
  const [r] = parseAll(raw.data);
  assert.equal(r.text, '<nil>');
});

test('a response to a request on a connection the client already closed does not hurt the server', async () => {
  const raw = await rawRequest(srv.port, GET('/slow'), { timeoutMs: 20 });
  assert.equal(raw.closed, false);
  await sleep(200);
  const again = await rawRequest(srv.port, GET('/hello', 'Connection: close\r\n'));
  assert.equal(parseAll(again.data)[0].text, 'hi');
});

test('keep-alive and pipelining continue after a handler error', async () => {
  const c = await conn();
  try {
    c.write(GET('/boom') + GET('/hello'));
    const rs = await c.readResponses(2);
    assert.deepEqual(rs.map((r) => r.status), [500, 200]);
    assert.equal(rs[1].text, 'hi');
  } finally { c.close(); }
});

test('a 1 MiB response from Lua, pipelined with small ones', async () => {
  const c = await conn();
  try {
    c.write(GET('/big') + GET('/hello') + GET('/big') + GET('/fast'));
    const rs = await c.readResponses(4, { timeoutMs: 10000 });
    const expected = '0123456789abcdef'.repeat(65536);
    assert.equal(rs[0].body.length, 1 << 20);
    assert.ok(rs[0].text === expected, 'first big body intact');
    assert.equal(rs[1].text, 'hi');
    assert.ok(rs[2].text === expected, 'second big body intact');
    assert.equal(rs[3].text, 'fast');
  } finally { c.close(); }
});

test('a slow reader still gets the whole 1 MiB response', async () => {
  const c = await conn();
  try {
    c.sock.pause();
    c.write(GET('/big'));
    await sleep(300);
    c.sock.resume();
    const r = await c.readResponse({ timeoutMs: 10000 });
    assert.equal(r.body.length, 1 << 20);
  } finally { c.close(); }
});
