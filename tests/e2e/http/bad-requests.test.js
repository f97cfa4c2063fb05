'use strict';
// Malformed or oversized requests on raw sockets: the right status, then the connection closes,
// and the server keeps serving everyone else.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, request, rawRequest, firstStatus, parseAll, assertCommonHeaders } = require('../lib/server');

let srv;
before(async () => {
  srv = await startServer({
    script: [
      'kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)',
      'kr.map_route("POST", "/echo-body", function(req, res) res:text(req.body or "<nil>") end)',
    ].join('\n'),
  });
});
after(async () => { if (srv) await srv.stop(); });

async function expectRejected(bytes, status, opts = {}) {
  const raw = await rawRequest(srv.port, bytes, { timeoutMs: 3000, ...opts });
  const text = raw.data.toString('latin1');
  assert.equal(firstStatus(raw.data), status, `expected ${status}, got: ${JSON.stringify(text.slice(0, 300))} (error ${raw.error})`);
  assert.equal(raw.closed, true, 'the server closes the connection after the error response');
  const rs = parseAll(raw.data);
  assert.equal(rs.length, 1, 'exactly one response');
  assertCommonHeaders(rs[0].headers, `on ${status}`);
  // a fresh connection is still served
  const ok = await request(srv.port, { path: '/hello' });
  assert.equal(ok.status, 200);
  assert.equal(ok.body, 'hi');
  return rs[0];
}

test('malformed request line: 400', async () => {
  await expectRejected('this is not http\r\n\r\n', 400);
});

test('request line without a version (HTTP/0.9 style): 400 or 505', async () => {
  const raw = await rawRequest(srv.port, 'GET /hello\r\nHost: x\r\n\r\n');
  const st = firstStatus(raw.data);
  assert.ok(st === 400 || st === 505, `status ${st}: ${JSON.stringify(raw.data.toString('latin1').slice(0, 200))}`);
  assert.equal(raw.closed, true);
  assert.equal((await request(srv.port, { path: '/hello' })).status, 200);
});

test('unsupported HTTP version: 505', async () => {
  await expectRejected('GET /hello HTTP/2.0\r\nHost: x\r\n\r\n', 505);
});

test('both Content-Length and Transfer-Encoding: 400', async () => {
  await expectRejected('POST /echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400);
});

test('bare LF line endings: 400', async () => {
  await expectRejected('GET /hello HTTP/1.1\nHost: x\n\n', 400);
});

test('bare LF in the middle of the headers: 400', async () => {
  await expectRejected('GET /hello HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n', 400);
});

test('bare CR: 400', async () => {
  await expectRejected('GET /hello HTTP/1.1\r\nHost: x\rX-A: y\r\n\r\n', 400);
});

test('obs-fold (header line starting with a space): 400', async () => {
  await expectRejected('GET /hello HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  continued\r\n\r\n', 400);
});

test('obs-fold with a tab: 400', async () => {
  await expectRejected('GET /hello HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\tcontinued\r\n\r\n', 400);
});

test('empty header name ": x": 400', async () => {
  await expectRejected('GET /hello HTTP/1.1\r\nHost: x\r\n: x\r\n\r\n', 400);
});

test('header line without a colon: 400', async () => {
  await expectRejected('GET /hello HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n', 400);
});

test('whitespace between header name and colon: 400', async () => {
  await expectRejected('GET /hello HTTP/1.1\r\nHost : x\r\n\r\n', 400);
});

test('invalid Content-Length: 400', async () => {
  await expectRejected('POST /echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n', 400);
});

test('invalid chunk size: 400', async () => {
  await expectRejected('POST /echo-body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n', 400);
});

test('request line over 8 KiB: 414', async () => {
  await expectRejected(`GET /${'a'.repeat(9000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 414);
});

test('request line just under 8 KiB is accepted (404 for the unknown path)', async () => {
  const raw = await rawRequest(srv.port, `GET /${'a'.repeat(8000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  assert.equal(firstStatus(raw.data), 404);
});

test('headers over 32 KiB in total: 431', async () => {
  let h = '';
  for (let i = 0; i < 40; i++) h += `X-Big-${i}: ${'v'.repeat(1000)}\r\n`;
  await expectRejected(`GET /hello HTTP/1.1\r\nHost: x\r\n${h}\r\n`, 431);
});

test('one header over 32 KiB: 431', async () => {
  await expectRejected(`GET /hello HTTP/1.1\r\nHost: x\r\nX-Huge: ${'v'.repeat(40000)}\r\n\r\n`, 431);
});

test('more than 100 headers: 431', async () => {
  let h = '';
  for (let i = 0; i < 101; i++) h += `X-H${i}: ${i}\r\n`;
  await expectRejected(`GET /hello HTTP/1.1\r\nHost: x\r\n${h}\r\n`, 431);
});

test('90 headers are fine', async () => {
  let h = '';
  for (let i = 0; i < 90; i++) h += `X-H${i}: ${i}\r\n`;
  const raw = await rawRequest(srv.port, `GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${h}\r\n`);
  assert.equal(firstStatus(raw.data), 200);
});

test('Content-Length over the body limit: 413 without reading the body', async () => {
  await expectRejected('POST /echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: 40000000\r\n\r\n', 413);
});

test('garbage bytes: 400', async () => {
  await expectRejected(Buffer.from([0x00, 0x01, 0x02, 0xff, 0xfe, 0x0d, 0x0a, 0x0d, 0x0a]), 400);
});

test('a TLS ClientHello on the plain port: 400 or a close, never a crash', async () => {
  const hello = Buffer.from('16030100a5010000a10303' + '00'.repeat(32) + '000004c02fc030' + '0100', 'hex');
  const raw = await rawRequest(srv.port, hello, { timeoutMs: 3000 });
  assert.equal(raw.closed, true);
  const st = firstStatus(raw.data);
  assert.ok(st === null || st === 400, `status ${st}`);
  assert.equal((await request(srv.port, { path: '/hello' })).status, 200);
});

// A lower body limit set by the script (kr.limits{ max_body_bytes }), so the limit can be
// crossed by bodies that are actually sent, both with Content-Length and chunked.
test('kr.limits{ max_body_bytes }: bodies over it get 413, bodies at it are served', async (t) => {
  const small = await startServer({
    script: 'kr.limits{ max_body_bytes = 1024 }\n' +
      'kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)\n' +
      'kr.map_route("POST", "/len", function(req, res) res:text(tostring(#(req.body or ""))) end)\n',
  });
  t.after(() => small.stop());
  const post = (extra, body) => rawRequest(small.port, `POST /len HTTP/1.1\r\nHost: x\r\n${extra}\r\n${body}`);

  const at = await post('Connection: close\r\nContent-Length: 1024\r\n', 'a'.repeat(1024));
  assert.equal(firstStatus(at.data), 200);
  assert.equal(parseAll(at.data)[0].text, '1024');

  const over = await post('Content-Length: 1025\r\n', 'a'.repeat(1025));
  assert.equal(firstStatus(over.data), 413, over.data.toString('latin1').slice(0, 200));
  assert.equal(over.closed, true);

  let chunks = '';
  for (let i = 0; i < 5; i++) chunks += `100\r\n${'b'.repeat(256)}\r\n`;
  const chunked = await post('Transfer-Encoding: chunked\r\n', `${chunks}0\r\n\r\n`);
  assert.equal(firstStatus(chunked.data), 413, chunked.data.toString('latin1').slice(0, 200));
  assert.equal(chunked.closed, true);

  let four = '';
  for (let i = 0; i < 4; i++) four += `100\r\n${'c'.repeat(256)}\r\n`;
  const chunkedAt = await post('Connection: close\r\nTransfer-Encoding: chunked\r\n', `${four}0\r\n\r\n`);
  assert.equal(firstStatus(chunkedAt.data), 200);
  assert.equal(parseAll(chunkedAt.data)[0].text, '1024');

  assert.equal((await request(small.port, { path: '/hello' })).body, 'hi');
});
