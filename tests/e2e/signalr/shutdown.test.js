'use strict';
// Graceful shutdown (lua-api.md §1: serverShutdown("Server stopping") then Close with
// allowReconnect) and withAutomaticReconnect across a server restart on the same port
// (signalr-protocol.md §6).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, sleep } = require('../lib/server');
const { connect, stopAll, collect, until, freePort, RawHub } = require('../lib/signalr');

test('graceful shutdown: serverShutdown("Server stopping"), onclose without error, exit 0', async () => {
  const srv = await startServer({ scripts: ['signalr.lua'] });
  const shutdown = [];
  let closed;
  const conn = await connect(srv.url('/hub'), {}, (c) => {
    c.on('serverShutdown', (...args) => shutdown.push(args));
    c.onclose((e) => { closed = { error: e ? e.message : undefined }; });
  });
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true });
  try {
    assert.deepEqual(await h.handshake(), {});
    assert.equal(await conn.invoke('Add', 1, 2), 3);
    const st = await srv.stop('SIGTERM');
    assert.deepEqual(st, { code: 0, signal: null }, srv.log());
    await until(() => closed !== undefined, 'onclose', 5000);
    assert.deepEqual(shutdown, [['Server stopping']]);
    assert.deepEqual(closed, { error: undefined }, 'a Close without error gives onclose(undefined)');
    assert.equal(conn.state, 'Disconnected');
    // the raw client saw the exact records: serverShutdown invocation, then Close allowReconnect
    const i = h.records.findIndex((r) => r.type === 1 && r.target === 'serverShutdown');
    assert.ok(i >= 0, `serverShutdown record: ${JSON.stringify(h.texts)}`);
    assert.deepEqual(h.records[i], { type: 1, target: 'serverShutdown', arguments: ['Server stopping'] });
    const close = h.records.slice(i + 1).find((r) => r.type === 7);
    assert.deepEqual(close, { type: 7, allowReconnect: true });
    await h.waitClosed(3000);
  } finally { h.close(); await conn.stop(); await srv.stop('SIGKILL'); }
});

test('SIGINT is a graceful shutdown too', async () => {
  const srv = await startServer({ scripts: ['signalr.lua'] });
  const shutdown = [];
  const conn = await connect(srv.url('/hub'), {}, (c) => c.on('serverShutdown', (m) => shutdown.push(m)));
  try {
    const st = await srv.stop('SIGINT');
    assert.deepEqual(st, { code: 0, signal: null }, srv.log());
    await until(() => conn.state === 'Disconnected', 'Disconnected', 3000);
    assert.deepEqual(shutdown, ['Server stopping']);
  } finally { await conn.stop(); }
});

test('withAutomaticReconnect: server restart on the same port -> onreconnecting, onreconnected(new id), invoke works', async () => {
  const port = await freePort();
  const args = ['--listen', `127.0.0.1:${port}`];
  let srv = await startServer({ scripts: ['signalr.lua'], listen: false, args });
  assert.equal(srv.port, port);
  const events = [];
  const shutdown = [];
  let reconnectedId;
  let closed = false;
  const conn = await connect(`http://127.0.0.1:${port}/hub`, { reconnect: [0, 200, 500, 1000, 1000, 2000] }, (c) => {
    c.on('serverShutdown', (m) => shutdown.push(m));
    c.onreconnecting(() => events.push('reconnecting'));
    c.onreconnected((id) => { events.push('reconnected'); reconnectedId = id; });
    c.onclose(() => { closed = true; });
  });
  try {
    const firstId = conn.connectionId;
    assert.equal(await conn.invoke('WhoAmI'), firstId);
    const st = await srv.stop('SIGTERM');
    assert.deepEqual(st, { code: 0, signal: null });
    assert.deepEqual(shutdown, ['Server stopping']);
    await until(() => events.includes('reconnecting'), 'onreconnecting', 3000);
    assert.equal(conn.state, 'Reconnecting');
    srv = await startServer({ scripts: ['signalr.lua'], listen: false, args });
    await until(() => events.includes('reconnected'), 'onreconnected', 8000);
    assert.deepEqual(events, ['reconnecting', 'reconnected']);
    assert.equal(closed, false);
    assert.equal(conn.state, 'Connected');
    assert.equal(typeof reconnectedId, 'string');
    assert.notEqual(reconnectedId, firstId, 'a reconnect is a new connection');
    assert.equal(await conn.invoke('Add', 20, 22), 42);
    const echo = collect(conn, 'ReceiveEcho');
    await conn.invoke('Echo', 'after restart');
    await until(() => echo.length === 1, 'echo');
  } finally { await conn.stop(); await srv.stop(); }
});

test('without automatic reconnect: Close allowReconnect only closes (no reconnect events)', async () => {
  const srv = await startServer({ scripts: ['signalr.lua'] });
  let closed = false;
  let reconnecting = false;
  const conn = await connect(srv.url('/hub'), {}, (c) => {
    c.onclose(() => { closed = true; });
    c.onreconnecting(() => { reconnecting = true; });
  });
  try {
    await srv.stop('SIGTERM');
    await until(() => closed, 'onclose', 3000);
    await sleep(100);
    assert.equal(reconnecting, false);
  } finally { await conn.stop(); }
});

test('graceful shutdown with many clients: every one gets serverShutdown and the server exits 0 promptly', async () => {
  const srv = await startServer({ scripts: ['signalr.lua'] });
  const conns = [];
  const got = [];
  try {
    for (let i = 0; i < 20; i++) {
      conns.push(await connect(srv.url('/hub'), { skipNegotiation: i % 2 === 1 }, (c) => {
        c.on('serverShutdown', (m) => got.push(m));
      }));
    }
    const t0 = Date.now();
    const st = await srv.stop('SIGTERM');
    const ms = Date.now() - t0;
    assert.deepEqual(st, { code: 0, signal: null });
    assert.ok(ms < 4000, `exit took ${ms} ms`);
    await until(() => conns.every((c) => c.state === 'Disconnected'), 'all Disconnected', 3000);
    assert.equal(got.length, 20);
    assert.ok(got.every((m) => m === 'Server stopping'));
  } finally { await stopAll(conns); }
});
