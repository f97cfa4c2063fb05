'use strict';
// Keep-alive, client timeout and handshake timeout with shortened hub options
// (signalr-protocol.md §3, §6).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, sleep } = require('../lib/server');
const { connect, until, RawHub } = require('../lib/signalr');

const SCRIPT = `
local base = { transports = { "WebSockets" }, protocols = { "json" } }
local function o(t) for k, v in pairs(base) do t[k] = v end return t end
kr.hub("/ka", o({ keepalive_ms = 200 }))
kr.hub("/quiet", o({ keepalive_ms = 60000 }))
kr.hub("/ct", o({ client_timeout_ms = 500 }))
kr.hub("/hs", o({ handshake_timeout_ms = 300 }))
kr.hub("/dt", o({ disconnect_timeout_ms = 300 }))
`;

let srv;
before(async () => { srv = await startServer({ script: SCRIPT }); });
after(async () => { if (srv) await srv.stop(); });

test('keepalive_ms = 200: an idle client with a 1 s server timeout stays Connected for 2.5 s', async () => {
  let closedWith = 'not closed';
  const conn = await connect(srv.url('/ka'), { serverTimeoutMs: 1000 });
  conn.onclose((e) => { closedWith = e ? e.message : 'closed'; });
  try {
    await sleep(2500);
    assert.equal(closedWith, 'not closed');
    assert.equal(conn.state, 'Connected');
    const got = [];
    conn.on('ReceiveEcho', (m) => got.push(m));
    await conn.invoke('Echo', 'still here');
    await until(() => got.length === 1, 'the echo');
  } finally { await conn.stop(); }
});

test('control: without server pings (keepalive 60 s) the 1 s server timeout fires', async () => {
  let closedWith;
  const conn = await connect(srv.url('/quiet'), { serverTimeoutMs: 1000 });
  conn.onclose((e) => { closedWith = e ? e.message : 'no error'; });
  try {
    await until(() => closedWith !== undefined, 'onclose', 3000);
    assert.match(closedWith, /Server timeout elapsed without receiving a message from the server/);
  } finally { await conn.stop(); }
});

test('raw: keepalive_ms = 200 sends Ping records {"type":6} while idle', async () => {
  const h = await RawHub.open(srv.port, '/ka');
  try {
    assert.deepEqual(await h.handshake(), {});
    const t0 = Date.now();
    await sleep(1200);
    const pings = h.records.filter((r) => r.type === 6);
    assert.ok(pings.length >= 2, `pings in ${Date.now() - t0} ms: ${pings.length}`);
    for (const p of pings) assert.deepEqual(p, { type: 6 });
    assert.equal(h.closed, false);
  } finally { h.close(); }
});

test('client_timeout_ms = 500: a raw client that pings once then goes silent gets Close allowReconnect, then the socket closes', async () => {
  const h = await RawHub.open(srv.port, '/ct');
  try {
    assert.deepEqual(await h.handshake(), {});
    const t0 = Date.now();
    h.send('{"type":6}\x1e');
    const close = await h.next((r) => r.type === 7, { timeoutMs: 4000, what: 'a Close message' });
    const ms = Date.now() - t0;
    assert.deepEqual(close, { type: 7, error: 'Connection closed with an error.', allowReconnect: true });
    assert.ok(ms >= 400, `closed after ${ms} ms, not before the timeout`);
    await h.waitClosed(6000);
    assert.equal(h.splitFrames().length, 0, 'whole records per frame');
  } finally { h.close(); }
});

test('client_timeout_ms = 500: the timeout is armed only after the first Ping', async () => {
  const h = await RawHub.open(srv.port, '/ct');
  try {
    assert.deepEqual(await h.handshake(), {});
    await sleep(1300);
    assert.equal(h.closed, false, 'still open without a Ping from the client');
    assert.equal(h.records.filter((r) => r.type === 7).length, 0);
    // a client that keeps pinging stays up
    for (let i = 0; i < 6; i++) { h.send('{"type":6}\x1e'); await sleep(200); }
    assert.equal(h.closed, false, 'a pinging client stays up');
    h.sendRecord({ type: 1, invocationId: '1', target: 'Echo', arguments: ['x'] });
    await h.completion('1');
  } finally { h.close(); }
});

test('handshake_timeout_ms = 300: a silent raw client gets {"error":"Handshake was canceled."} and close', async () => {
  const h = await RawHub.open(srv.port, '/hs');
  try {
    const t0 = Date.now();
    await h.next(() => true, { timeoutMs: 3000, what: 'the handshake error' });
    const ms = Date.now() - t0;
    assert.deepEqual(h.records[0], { error: 'Handshake was canceled.' });
    assert.equal(h.texts[0], '{"error":"Handshake was canceled."}');
    assert.ok(ms >= 200 && ms < 2500, `after ${ms} ms`);
    await h.waitClosed(6000);
    assert.equal(h.records.length, 1, 'nothing after the error');
  } finally { h.close(); }
});

test('handshake_timeout_ms = 300: a handshake sent in time is accepted', async () => {
  const h = await RawHub.open(srv.port, '/hs');
  try {
    assert.deepEqual(await h.handshake(), {});
    await sleep(600);
    assert.equal(h.closed, false);
    h.sendRecord({ type: 1, invocationId: '1', target: 'Echo', arguments: ['ok'] });
    await h.completion('1');
  } finally { h.close(); }
});

test('disconnect_timeout_ms = 300: a negotiated connection never used is gone (404) within ~2 s', async () => {
  const { negotiate } = require('../lib/signalr');
  const neg = (await negotiate(srv.port, '/dt')).json;
  const used = (await negotiate(srv.port, '/dt')).json;
  const h = await RawHub.open(srv.port, '/dt', { id: used.connectionToken });
  try {
    assert.deepEqual(await h.handshake(), {});
    await sleep(2000);
    assert.equal(await RawHub.upgradeStatus(srv.port, `/dt?id=${neg.connectionToken}`), 404);
    // a connection in use is not affected
    assert.equal(h.closed, false);
    h.sendRecord({ type: 1, invocationId: '1', target: 'Echo', arguments: ['x'] });
    await h.completion('1');
  } finally { h.close(); }
});
