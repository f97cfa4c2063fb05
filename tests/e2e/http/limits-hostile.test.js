'use strict';
// Hostile clients against every limit (docs/operations.md section 4; research
// reliability-anchors.md section 0): each limit is hit by a raw client, which gets the
// documented answer, while the server keeps serving everyone else. Connection floods use a
// second source address (127.0.0.2: Linux routes all of 127/8 to lo) for the bystander.
// Loopback only; floods stay at a few hundred sockets (the open-file limit here is 20,000).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { startServer, request, rawRequest, firstStatus, sleep, tempDir, writeScript, kestrunBin,
  waitUntil, wsFrame } = require('../lib/server');

const RS = '\x1e';

// ---- raw sockets -------------------------------------------------------------------------

// A raw TCP client from a chosen source address: collects what arrives, knows when it closed.
function rawClient(port, { host = '127.0.0.1', localAddress } = {}) {
  return new Promise((resolve) => {
    const c = { data: Buffer.alloc(0), closed: false, error: undefined };
    const waiters = [];
    const wake = () => { for (const f of waiters.splice(0)) f(); };
    c.sock = net.connect({ host, port, localAddress });
    c.sock.on('data', (d) => { c.data = Buffer.concat([c.data, d]); wake(); });
    c.sock.on('close', () => { c.closed = true; wake(); });
    c.sock.on('error', (e) => { c.error = e.code || String(e); });
    c.text = () => c.data.toString('latin1');
    c.write = (b) => { if (!c.sock.destroyed) c.sock.write(b); };
    c.close = () => c.sock.destroy();
    // Resolves when pred(c) holds or after ms (then returns pred's last value).
    c.until = async (pred, ms = 3000) => {
      const deadline = Date.now() + ms;
      while (!pred(c)) {
        const left = deadline - Date.now();
        if (left <= 0) return false;
        await new Promise((r) => { const t = setTimeout(r, left); waiters.push(() => { clearTimeout(t); r(); }); });
      }
      return true;
    };
    c.sock.once('connect', () => resolve(c));
    c.sock.once('error', () => resolve(c));
  });
}

// GET /hello on a fresh connection from localAddress -> status (or null when refused/closed).
async function helloFrom(port, localAddress, host = '127.0.0.1') {
  const c = await rawClient(port, { host, localAddress });
  c.write(`GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  await c.until((x) => x.closed, 3000);
  c.close();
  return { status: firstStatus(c.data), text: c.text() };
}

const REFUSAL = /^HTTP\/1\.1 503 Service Unavailable\r\n(?:[^\r\n]+\r\n)*\r\n$/;

function assertRefused(c, what) {
  const t = c.text();
  assert.match(t, REFUSAL, `${what}: ${JSON.stringify(t)}`);
  assert.match(t, /\r\nRetry-After: 1\r\n/);
  assert.match(t, /\r\nConnection: close\r\n/);
  assert.match(t, /\r\nContent-Length: 0\r\n/);
  assert.ok(c.closed, `${what}: closed`);
}

// ---- raw WebSocket + SignalR JSON ----------------------------------------------------------

// Server frames (unmasked) after the 101 head: [{ opcode, payload }], plus the bytes left.
function parseFrames(buf) {
  const frames = [];
  let off = 0;
  while (off + 2 <= buf.length) {
    const opcode = buf[off] & 0x0f;
    let len = buf[off + 1] & 0x7f;
    let p = off + 2;
    if (len === 126) { if (p + 2 > buf.length) break; len = buf.readUInt16BE(p); p += 2; }
    else if (len === 127) { if (p + 8 > buf.length) break; len = Number(buf.readBigUInt64BE(p)); p += 8; }
    if (p + len > buf.length) break;
    frames.push({ opcode, payload: buf.subarray(p, p + len) });
    off = p + len;
  }
  return frames;
}

// Upgrades /hub (skipNegotiation style); handshake: true also completes the SignalR handshake.
async function hubClient(port, { handshake = true } = {}) {
  const c = await rawClient(port);
  const key = crypto.randomBytes(16).toString('base64');
  c.write(`GET /hub HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  assert.ok(await c.until((x) => x.data.indexOf('\r\n\r\n') >= 0), `upgrade answer: ${c.text()}`);
  const headEnd = c.data.indexOf('\r\n\r\n');
  assert.match(c.data.subarray(0, headEnd).toString('latin1'), /^HTTP\/1\.1 101 /);
  c.headLen = headEnd + 4;
  c.frames = () => parseFrames(c.data.subarray(c.headLen));
  c.texts = () => c.frames().filter((f) => f.opcode === 1).map((f) => f.payload.toString('utf8'));
  c.records = () => c.texts().join('').split(RS).filter(Boolean).map((s) => JSON.parse(s));
  c.send = (text) => c.write(wsFrame(text));
  // The server's close frame, answered as a client does; then the socket must close.
  c.closeHandshake = async (ms = 3000) => {
    const got = await c.until((x) => x.closed || x.frames().some((f) => f.opcode === 8), ms);
    const frame = c.frames().find((f) => f.opcode === 8);
    if (got && frame && !c.closed) c.write(wsFrame(frame.payload.subarray(0, 2), 0x8));
    return { frame, closed: await c.until((x) => x.closed, ms) };
  };
  if (handshake) {
    c.send(`{"protocol":"json","version":1}${RS}`);
    assert.ok(await c.until((x) => x.texts().join('').includes(`{}${RS}`)), `handshake: ${c.text()}`);
  }
  return c;
}

// One Echo through a fresh hub connection: the hub still serves.
async function hubServes(port) {
  const h = await hubClient(port);
  h.send(`{"type":1,"invocationId":"e","target":"Echo","arguments":["still here"]}${RS}`);
  const ok = await h.until((x) => x.records().some((r) => r.type === 3 && r.invocationId === 'e'));
  h.close();
  assert.ok(ok, `Echo answered: ${h.text()}`);
  assert.deepEqual(h.records().find((r) => r.type === 3), { type: 3, invocationId: 'e', result: 'still here' });
}

// ---- servers ---------------------------------------------------------------------------------

const CAPS = `
kr.limits{ max_connections = 40, max_connections_per_ip = 20 }
kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)
kr.map_route("GET", "/refused", function(req, res) res:text(tostring(kr.metrics().connections_refused)) end)
`;

const HOSTILE = `
kr.limits{
  header_timeout_ms = 700,
  max_header_bytes = 4096,
  max_body_bytes = 10000,
  lua_max_timers = 5,
}
local hub = kr.hub("/hub", { max_message_bytes = 1024, handshake_timeout_ms = 400,
                             poll_timeout_ms = 500, max_streams = 4 })
hub:on("Echo", function(ctx, x) return x end)
hub:stream("Slow", function(ctx, emit) kr.sleep(3000) end)
kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)
kr.map_route("POST", "/echo", function(req, res) res:text(tostring(#(req.body or ""))) end)
kr.map_route("GET", "/timer", function(req, res)
  local t, err = kr.after(60000, function() end)
  res:text(t and "ok" or tostring(err))
end)
`;

let caps;
let srv;
let floodAt = 0;
before(async () => {
  caps = await startServer({ script: CAPS });
  srv = await startServer({ script: HOSTILE });
});
after(async () => {
  if (caps) await caps.stop();
  if (srv) await srv.stop('SIGTERM', { killAfterMs: 2000 });
});

const hello = async (s) => (await request(s.port, { path: '/hello' })).status;

// ---- connection caps -------------------------------------------------------------------------

test('per-IP cap: a flood of 200 sockets from one address gets 20 in, 180 answered 503 and closed; 127.0.0.2 is served throughout', async () => {
  const flood = [];
  floodAt = Date.now();
  for (let i = 0; i < 200; i += 50) {
    flood.push(...await Promise.all(Array.from({ length: 50 }, () => rawClient(caps.port))));
    // the bystander is served between the waves
    assert.equal((await helloFrom(caps.port, '127.0.0.2')).status, 200);
  }
  assert.ok(await waitUntil(() => flood.filter((c) => c.closed).length === 180, { timeoutMs: 5000 }),
    `closed: ${flood.filter((c) => c.closed).length}`);
  const open = flood.filter((c) => !c.closed);
  assert.equal(open.length, 20);
  for (const c of open) assert.equal(c.data.length, 0, 'admitted sockets got nothing yet');
  for (const c of flood.filter((x) => x.closed)) assertRefused(c, 'flooding socket');
  // one more from the flooding address: 503; another address: served
  const more = await helloFrom(caps.port, '127.0.0.1');
  assert.equal(more.status, 503, more.text);
  assert.equal((await helloFrom(caps.port, '127.0.0.2')).status, 200);
  // the admitted sockets are real connections
  open[0].write('GET /hello HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.ok(await open[0].until((x) => /\r\n\r\nhi$/.test(x.text())), open[0].text());
  // one Warning for the whole flood, naming the key and the address
  const lines = caps.log().split('\n').filter((l) => l.includes('max_connections_per_ip = 20'));
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.match(lines[0], /\[Warning\] server: connection from 127\.0\.0\.1 refused with 503: 20 open from it \(max_connections_per_ip = 20\)/);
  // kr.metrics counts the refusals (180 of the flood and the one more)
  const m = await rawClient(caps.port, { host: '127.0.0.1', localAddress: '127.0.0.2' });
  m.write('GET /refused HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  await m.until((x) => x.closed, 3000);
  m.close();
  assert.match(m.text(), /\r\n\r\n181$/, m.text());
  // the flood leaves: its address is served again
  for (const c of flood) c.close();
  assert.ok(await waitUntil(async () => (await helloFrom(caps.port, '127.0.0.1')).status === 200, { timeoutMs: 3000 }));
});

test('total cap: 40 open connections (20 + 20 from two addresses): a third address gets 503, served again once some leave', async () => {
  const a = await Promise.all(Array.from({ length: 20 }, () => rawClient(caps.port, { localAddress: '127.0.0.1' })));
  const b = await Promise.all(Array.from({ length: 20 }, () => rawClient(caps.port, { localAddress: '127.0.0.2' })));
  await sleep(100);
  assert.equal([...a, ...b].filter((c) => c.closed).length, 0, 'all 40 admitted');
  const r = await helloFrom(caps.port, '127.0.0.3');
  assert.equal(r.status, 503, r.text);
  assert.match(r.text, /\r\nRetry-After: 1\r\n/);
  assert.ok(await caps.waitForLog(/\[Warning\] server: connection from 127\.0\.0\.3 refused with 503: 40 connections open \(max_connections = 40\)/));
  for (const c of a.slice(0, 5)) c.close();
  assert.ok(await waitUntil(async () => (await helloFrom(caps.port, '127.0.0.3')).status === 200, { timeoutMs: 3000 }));
  for (const c of [...a, ...b]) c.close();
});

test('IPv6: the per-IP cap counts ::1 (its /64) as one client', async (t) => {
  let s6;
  try {
    s6 = await startServer({ script: 'kr.limits{ max_connections_per_ip = 3 }\n' +
      'kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)\n',
    listen: false, args: ['--listen', '[::1]:0'] });
  } catch (e) {
    t.skip(`no IPv6 loopback: ${e.message.split('\n')[0]}`);
    return;
  }
  try {
    const held = await Promise.all([0, 1, 2].map(() => rawClient(s6.port, { host: '::1' })));
    const r = await helloFrom(s6.port, undefined, '::1');
    assert.equal(r.status, 503, r.text);
    assert.ok(await s6.waitForLog(/connection from ::\/64 refused with 503: 3 open from it \(max_connections_per_ip = 3\)/), s6.log());
    held[0].close();
    assert.ok(await waitUntil(async () => (await helloFrom(s6.port, undefined, '::1')).status === 200, { timeoutMs: 3000 }));
    for (const c of held) c.close();
  } finally {
    await s6.stop();
  }
});

test('the default total cap follows the open-file limit: under ulimit -n 64, 100 sockets get 503s, never a stuck accept loop, and the server recovers', async () => {
  const dir = tempDir();
  const script = writeScript(dir, 'kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)\n');
  const portFile = path.join(dir, 'port');
  const proc = spawn('sh', ['-c', `ulimit -n 64 && exec "$0" --listen 127.0.0.1:0 --port-file "$1" "$2"`,
    kestrunBin(), portFile, script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout.on('data', (d) => { log += d; });
  proc.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((r) => proc.on('close', r));
  try {
    assert.ok(await waitUntil(() => fs.existsSync(portFile) && fs.readFileSync(portFile, 'utf8').endsWith('\n'), { timeoutMs: 5000 }), log);
    const port = Number(fs.readFileSync(portFile, 'utf8').trim());
    const socks = [];
    for (let i = 0; i < 100; i += 25) socks.push(...await Promise.all(Array.from({ length: 25 }, () => rawClient(port))));
    await waitUntil(() => socks.filter((c) => c.closed).length >= 60, { timeoutMs: 3000 });
    const refused = socks.filter((c) => c.closed);
    // 64 descriptors: 32 kept in reserve, 32 for connections
    assert.equal(socks.length - refused.length, 32, log);
    for (const c of refused) assertRefused(c, 'over the default cap');
    assert.match(log, /refused with 503: 32 connections open \(max_connections = 32\)/);
    for (const c of socks) c.close();
    assert.ok(await waitUntil(async () => (await request(port, { path: '/hello' })).status === 200, { timeoutMs: 3000 }));
  } finally {
    proc.kill('SIGKILL');
    await exited;
  }
});

// ---- HTTP ------------------------------------------------------------------------------------

test('slowloris: headers trickled a byte every 100 ms get 408 at the 700 ms header deadline (not reset per byte); others are served meanwhile', async () => {
  const c = await rawClient(srv.port);
  const t0 = Date.now();
  c.write('GET /hello HTTP/1.1\r\nHost: x\r\n');
  const trickle = (async () => {
    for (let i = 0; i < 40 && !c.closed; i++) { c.write('X'); await sleep(100); }
  })();
  assert.equal(await hello(srv), 200);
  assert.ok(await c.until((x) => x.closed, 4000), 'closed');
  await trickle;
  const ms = Date.now() - t0;
  assert.equal(firstStatus(c.data), 408, c.text());
  assert.ok(ms >= 600 && ms < 2000, `answered after ${ms} ms`);
  assert.equal(await hello(srv), 200);
});

test('a connection that never sends a byte is closed at the header deadline without an answer', async () => {
  const c = await rawClient(srv.port);
  const t0 = Date.now();
  assert.ok(await c.until((x) => x.closed, 3000));
  assert.equal(c.data.length, 0);
  assert.ok(Date.now() - t0 >= 600, `${Date.now() - t0} ms`);
});

test('a body trickle with a gap longer than the header timeout gets 408', async () => {
  const r = await rawRequest(srv.port, null, {
    writes: ['POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc', 'def'],
    delayMs: 1200, timeoutMs: 4000,
  });
  assert.equal(firstStatus(r.data), 408, r.data.toString('latin1'));
  assert.equal(await hello(srv), 200);
});

test('oversized headers: 431 and close', async () => {
  const big = 'X-Big: ' + 'a'.repeat(5000) + '\r\n';
  const r = await rawRequest(srv.port, `GET /hello HTTP/1.1\r\nHost: x\r\n${big}\r\n`);
  assert.equal(firstStatus(r.data), 431, r.data.toString('latin1'));
  assert.ok(r.closed);
  assert.equal(await hello(srv), 200);
});

test('oversized body: 413 before reading it (Content-Length) and while reading it (chunked)', async () => {
  const r1 = await rawRequest(srv.port, 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n');
  assert.equal(firstStatus(r1.data), 413, r1.data.toString('latin1'));
  const chunk = 'a'.repeat(4000);
  const body = [1, 2, 3].map(() => `${(4000).toString(16)}\r\n${chunk}\r\n`).join('') + '0\r\n\r\n';
  const r2 = await rawRequest(srv.port, `POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${body}`);
  assert.equal(firstStatus(r2.data), 413, r2.data.toString('latin1'));
  const ok = await request(srv.port, { method: 'POST', path: '/echo', body: 'a'.repeat(9000) });
  assert.equal(ok.body, '9000');
});

test('pending timers: the sixth kr.after of a generation gets "too many pending timers"', async () => {
  const got = [];
  for (let i = 0; i < 7; i++) got.push((await request(srv.port, { path: '/timer' })).body);
  assert.deepEqual(got, ['ok', 'ok', 'ok', 'ok', 'ok', 'too many pending timers', 'too many pending timers']);
  assert.equal(await hello(srv), 200);
});

// ---- hubs ------------------------------------------------------------------------------------

test('hub: a 2 KB message (max_message_bytes 1024) gets Close with error and the socket is closed; others are served', async () => {
  const h = await hubClient(srv.port);
  h.send(`{"type":1,"invocationId":"1","target":"Echo","arguments":["${'x'.repeat(2048)}"]}${RS}`);
  const end = await h.closeHandshake();
  assert.ok(end.frame && end.closed, `close frame, then closed: ${h.text()}`);
  const close = h.records().find((r) => r.type === 7);
  assert.deepEqual(close, { type: 7, error: 'Connection closed with an error.', allowReconnect: true });
  await hubServes(srv.port);
});

test('hub: a WebSocket message over 4 x max_message_bytes + 1 KiB gets close 1009', async () => {
  const h = await hubClient(srv.port);
  h.send('x'.repeat(8192));
  const end = await h.closeHandshake();
  assert.ok(end.frame && end.closed, `close frame, then closed: ${h.text()}`);
  assert.equal(end.frame.payload.readUInt16BE(0), 1009);
  await hubServes(srv.port);
});

test('hub: a SignalR handshake that never comes is canceled at handshake_timeout_ms (400 ms)', async () => {
  const h = await hubClient(srv.port, { handshake: false });
  const t0 = Date.now();
  const end = await h.closeHandshake();
  assert.ok(end.frame && end.closed, `close frame, then closed: ${h.text()}`);
  assert.ok(Date.now() - t0 >= 300, `${Date.now() - t0} ms`);
  assert.deepEqual(h.texts().join('').split(RS).filter(Boolean).map((s) => JSON.parse(s)),
    [{ error: 'Handshake was canceled.' }]);
  await hubServes(srv.port);
});

test('hub: fibers per connection: 10 streams at once with max_streams 4: 4 run, 6 get an error Completion; others are served', async () => {
  const h = await hubClient(srv.port);
  for (let i = 0; i < 10; i++) h.send(`{"type":4,"invocationId":"s${i}","target":"Slow","arguments":[]}${RS}`);
  assert.ok(await h.until((x) => x.records().filter((r) => r.type === 3).length >= 6, 3000), h.text());
  const done = h.records().filter((r) => r.type === 3);
  assert.equal(done.length, 6);
  for (const r of done) assert.match(r.error, /^An unexpected error occurred invoking 'Slow' on the server/);
  assert.ok(!h.closed, 'the connection stays');
  await hubServes(srv.port);
  // the running four end with the connection
  h.close();
});

test('long polling: a poll with nothing to send is answered 200 empty after poll_timeout_ms (500 ms)', async () => {
  const n = await request(srv.port, { method: 'POST', path: '/hub/negotiate?negotiateVersion=1', body: '' });
  const token = JSON.parse(n.body).connectionToken;
  assert.equal((await request(srv.port, { path: `/hub?id=${token}` })).body, '');
  const hs = await request(srv.port, { method: 'POST', path: `/hub?id=${token}`, body: `{"protocol":"json","version":1}${RS}` });
  assert.equal(hs.status, 200);
  assert.equal((await request(srv.port, { path: `/hub?id=${token}` })).body, `{}${RS}`);
  const t0 = Date.now();
  const held = request(srv.port, { path: `/hub?id=${token}` });
  assert.equal(await hello(srv), 200, 'served while the poll is held');
  const r = await held;
  const ms = Date.now() - t0;
  assert.equal(r.status, 200);
  assert.equal(r.body, '');
  assert.ok(ms >= 400 && ms < 2000, `held ${ms} ms`);
  await request(srv.port, { method: 'DELETE', path: `/hub?id=${token}` });
});

// Last: the flood's suppressed refusals are reported once the 10 s interval is over.
test('the refusals of a flood are summed up in one Warning per 10 s', async () => {
  const left = Math.max(0, floodAt + 11500 - Date.now());
  assert.ok(await caps.waitForLog(/\[Warning\] server: 1[78]\d more connection\(s\) refused with 503 \(max_connections_per_ip\) in the last 10 s/, left + 1000),
    caps.log());
});
