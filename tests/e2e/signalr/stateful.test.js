'use strict';
// Stateful reconnect (signalr-protocol.md §6 "Stateful reconnect", checklist 3 and 45): the
// official Node client with withStatefulReconnect(), JSON and MessagePack, talking to kestrun
// through a TCP proxy of ours (lib/proxy.js) that cuts the client's socket (both halves
// destroyed, no WebSocket close frame) without touching the server. The client reattaches with
// a new WebSocket to the same ?id=, no negotiate and no handshake; both sides send Sequence and
// replay what the other has not acknowledged. Checked: every message arrives exactly once and in
// order in both directions, the connectionId stays, no reconnect/close events; a client that
// never comes back is ended after disconnect_timeout_ms. Raw `ws` tests check the wire (Sequence
// first, no handshake reply on reattach, Acks, duplicates dropped).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { MessagePackHubProtocol } = require('@microsoft/signalr-protocol-msgpack');
const { startServer, request, sleep } = require('../lib/server');
const { signalR, WebSocket, RawHub, RS, until, negotiate } = require('../lib/signalr');
const { startProxy } = require('../lib/proxy');
const { RawMpHub } = require('../lib/rawmsgpack');

const DISCONNECT_MS = 1500;
const SCRIPT = `
local hub = kr.hub("/hub", { transports = { "WebSockets" }, protocols = { "json", "messagepack" },
  stateful_reconnect = true, disconnect_timeout_ms = ${DISCONNECT_MS}, stateful_buffer_bytes = 100000 })
local off = kr.hub("/off", { transports = { "WebSockets" }, stateful_reconnect = false })
local dflt = kr.hub("/default", { transports = { "WebSockets" } })
local tiny = kr.hub("/tiny", { transports = { "WebSockets" }, disconnect_timeout_ms = ${DISCONNECT_MS},
  stateful_buffer_bytes = 400 })

state = { conns = {}, records = {} }
local function info(id)
  local t = state.conns[id]
  if not t then t = { connected = 0, disconnected = 0 } state.conns[id] = t end
  return t
end

local function methods(h)
  h:on_connected(function(ctx) local t = info(ctx.connection_id) t.connected = t.connected + 1 end)
  h:on_disconnected(function(ctx, err)
    local t = info(ctx.connection_id)
    t.disconnected = t.disconnected + 1
    t.at_us = kr.clock_us()
    t.err = err and tostring(err) or nil
  end)
  h:on("WhoAmI", function(ctx) return ctx.connection_id end)
  h:on("Add", function(ctx, a, b) return a + b end)
  h:on("Record", function(ctx, i)
    local r = state.records[ctx.connection_id]
    if not r then r = {} state.records[ctx.connection_id] = r end
    r[#r + 1] = i
  end)
  h:on("Slow", function(ctx, ms, v) kr.sleep(ms) return v end)
  -- Pushes Tick(1..n) to the caller from a background fiber, one every ms.
  h:on("Ticks", function(ctx, n, ms)
    kr.spawn(function()
      for i = 1, n do
        local ok, err = ctx:send("Tick", i)
        if not ok then kr.log("Warning", "Ticks stopped at " .. i .. ": " .. tostring(err)) return end
        kr.sleep(ms)
      end
    end)
    return n
  end)
  h:stream("Counter", function(ctx, emit, n, ms)
    for i = 1, n do
      if not emit(i) then return end
      kr.sleep(ms)
    end
  end)
end
methods(hub)
methods(off)
methods(dflt)
methods(tiny)

kr.map_route("GET", "/records/{id}", function(req, res)
  res:json(kr.json.array(state.records[req.params.id] or {}))
end)
kr.map_route("GET", "/conn/{id}", function(req, res)
  local t = state.conns[req.params.id] or { connected = 0, disconnected = 0 }
  res:json({ connected = t.connected, disconnected = t.disconnected, at_us = t.at_us, err = t.err })
end)
`;

let srv;
before(async () => { srv = await startServer({ script: SCRIPT }); });
after(async () => { if (srv) await srv.stop(); });

const PROTOCOLS = {
  json: () => new signalR.JsonHubProtocol(),
  messagepack: () => new MessagePackHubProtocol(),
};

// An official client through the proxy, WebSockets only, stateful reconnect unless told not to.
// Every onreconnecting/onreconnected/onclose lands in `events`.
function build(url, { protocol = 'json', stateful = true, keepAliveMs } = {}) {
  let b = new signalR.HubConnectionBuilder()
    .withUrl(url, { transport: signalR.HttpTransportType.WebSockets })
    .withHubProtocol(PROTOCOLS[protocol]())
    .configureLogging(signalR.LogLevel.None);
  if (stateful) b = b.withStatefulReconnect();
  const conn = b.build();
  if (keepAliveMs) conn.keepAliveIntervalInMilliseconds = keepAliveMs;
  const events = [];
  conn.onreconnecting((e) => events.push(['reconnecting', e && e.message]));
  conn.onreconnected((id) => events.push(['reconnected', id]));
  conn.onclose((e) => events.push(['close', e ? e.message : undefined]));
  return { conn, events };
}

async function connInfo(id) {
  const r = await request(srv.port, { path: `/conn/${encodeURIComponent(id)}` });
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body);
}

async function records(id) {
  const r = await request(srv.port, { path: `/records/${encodeURIComponent(id)}` });
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body);
}

// A raw `ws` client whose listeners are attached before the upgrade completes: on a reattach the
// server speaks first (Sequence), possibly in the same TCP segment as the 101, and RawHub.open
// attaches its listeners only after 'open'.
async function openRaw(token) {
  const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/hub?id=${encodeURIComponent(token)}`, { perMessageDeflate: false });
  const h = new RawHub(ws);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('unexpected-response', (req, res) => { res.resume(); req.destroy(); reject(new Error(`upgrade answered ${res.statusCode}`)); });
    ws.once('error', reject);
  });
  h.id = token;
  return h;
}

// Stops the client, then waits until the server saw the end before the proxy goes (closing the
// proxy at once could cut the client's Close message and close frame still in flight).
async function stopThrough(conn, proxy) {
  const id = conn.connectionId;
  await conn.stop();
  if (id) await until(async () => (await connInfo(id)).disconnected > 0, 'on_disconnected after stop()', DISCONNECT_MS + 4000).catch(() => {});
  await proxy.close();
}

const range = (n) => Array.from({ length: n }, (_, i) => i + 1);

// Kills the proxied socket(s) and waits until the client has reattached (a new proxied connection
// that has stayed up for settleMs).
async function killAndWaitReattach(proxy, settleMs = 150) {
  const before = proxy.accepted;
  const n = proxy.kill();
  assert.ok(n >= 1, 'there was a proxied connection to kill');
  await until(() => proxy.accepted > before && proxy.active >= 1, 'the client to reattach through the proxy', 5000);
  await sleep(settleMs);
}

// ---- (a) negotiate -------------------------------------------------------------------------

test('negotiate: useStatefulReconnect:true only when the client asks, and only where allowed', async () => {
  const asked = await negotiate(srv.port, '/hub', 'negotiateVersion=1&useStatefulReconnect=true');
  assert.equal(asked.status, 200, asked.body);
  assert.equal(asked.json.useStatefulReconnect, true, asked.body);
  assert.equal(typeof asked.json.connectionToken, 'string');

  const unasked = await negotiate(srv.port, '/hub', 'negotiateVersion=1');
  assert.equal(unasked.status, 200, unasked.body);
  assert.ok(!('useStatefulReconnect' in unasked.json), `not asked, not offered: ${unasked.body}`);

  // stateful_reconnect defaults to true
  const dflt = await negotiate(srv.port, '/default', 'negotiateVersion=1&useStatefulReconnect=true');
  assert.equal(dflt.json.useStatefulReconnect, true, dflt.body);

  // stateful_reconnect = false: never offered, even when asked
  const off = await negotiate(srv.port, '/off', 'negotiateVersion=1&useStatefulReconnect=true');
  assert.equal(off.status, 200, off.body);
  assert.ok(!('useStatefulReconnect' in off.json), `server option off: ${off.body}`);
});

for (const protocol of Object.keys(PROTOCOLS)) {
  test(`${protocol}: a withStatefulReconnect client connects, invokes, stops cleanly (onclose without error)`, async () => {
    const { conn, events } = build(srv.url('/hub'), { protocol });
    await conn.start();
    try {
      assert.equal(conn.state, signalR.HubConnectionState.Connected);
      assert.equal(await conn.invoke('Add', 20, 22), 42);
      assert.equal(await conn.invoke('WhoAmI'), conn.connectionId);
    } finally { await conn.stop(); }
    assert.deepEqual(events, [['close', undefined]]);
  });
}

test('a withStatefulReconnect client connects to a hub with stateful_reconnect = false', async () => {
  const { conn } = build(srv.url('/off'));
  await conn.start();
  try {
    assert.equal(await conn.invoke('Add', 1, 2), 3);
  } finally { await conn.stop(); }
});

// ---- (b) server to client --------------------------------------------------------------------

for (const protocol of Object.keys(PROTOCOLS)) {
  test(`${protocol}: pushes (Invocations) across 4 socket kills arrive exactly once, in order, same connection`, async () => {
    const proxy = await startProxy(srv.port, { connectDelayMs: 50 });
    // A short client keep-alive: client Pings (not trackable) interleave with the numbered messages.
    const { conn, events } = build(proxy.url('/hub'), { protocol, keepAliveMs: 200 });
    const ticks = [];
    conn.on('Tick', (i) => { ticks.push(i); });
    await conn.start();
    const id = conn.connectionId;
    try {
      const N = 80;
      assert.equal(await conn.invoke('Ticks', N, 25), N);
      for (let k = 0; k < 4; k++) {
        await until(() => ticks.length >= (k + 1) * 15, `tick ${(k + 1) * 15}`, 5000);
        await killAndWaitReattach(proxy);
      }
      await until(() => ticks.length >= N, `${N} ticks (have ${ticks.length})`, 8000);
      await sleep(200);
      assert.deepEqual(ticks, range(N), 'every Tick exactly once, in order');
      assert.equal(proxy.kills, 4);
      assert.equal(conn.state, signalR.HubConnectionState.Connected);
      assert.equal(conn.connectionId, id, 'the client kept its connectionId');
      assert.equal(await conn.invoke('WhoAmI'), id, 'the server kept the same logical connection');
      assert.deepEqual(events, [], 'no onreconnecting / onreconnected / onclose');
      const ci = await connInfo(id);
      assert.equal(ci.connected, 1, 'on_connected ran once');
      assert.equal(ci.disconnected, 0, 'on_disconnected did not run');
    } finally {
      await stopThrough(conn, proxy);
    }
    const ci = await until(async () => { const x = await connInfo(id); return x.disconnected ? x : null; }, 'on_disconnected after stop()');
    assert.equal(ci.disconnected, 1);
    assert.equal(ci.err, undefined, `a clean stop: ${JSON.stringify(ci)}`);
  });

  test(`${protocol}: a hub stream (StreamItems) across socket kills yields every item once, in order, then completes`, async () => {
    const proxy = await startProxy(srv.port, { connectDelayMs: 50 });
    const { conn, events } = build(proxy.url('/hub'), { protocol });
    await conn.start();
    const id = conn.connectionId;
    try {
      const N = 60;
      const items = [];
      let completed = false;
      let failed;
      conn.stream('Counter', N, 25).subscribe({
        next: (v) => { items.push(v); },
        complete: () => { completed = true; },
        error: (e) => { failed = e; },
      });
      for (let k = 0; k < 3; k++) {
        await until(() => items.length >= (k + 1) * 15 || failed, `item ${(k + 1) * 15}`, 5000);
        await killAndWaitReattach(proxy);
      }
      await until(() => completed || failed, 'the stream to complete', 8000);
      assert.equal(failed, undefined, failed && failed.message);
      assert.deepEqual(items, range(N), 'every item exactly once, in order');
      assert.equal(conn.connectionId, id);
      assert.equal(await conn.invoke('WhoAmI'), id);
      assert.deepEqual(events, []);
    } finally {
      await stopThrough(conn, proxy);
    }
  });
}

test('json: server messages sent while the client is away are kept and replayed after the reattach', async () => {
  // The proxy holds the reattaching connection for 600 ms: ~20 ticks are produced meanwhile.
  const proxy = await startProxy(srv.port, { connectDelayMs: 600 });
  const { conn, events } = build(proxy.url('/hub'));
  const ticks = [];
  conn.on('Tick', (i) => { ticks.push(i); });
  await conn.start();
  try {
    const N = 60;
    await conn.invoke('Ticks', N, 30);
    await until(() => ticks.length >= 10, '10 ticks', 5000);
    const seenAtKill = ticks.length;
    proxy.kill();
    await sleep(400);
    const seenWhileAway = ticks.length;
    assert.equal(seenWhileAway, seenAtKill, 'nothing arrives while the socket is gone');
    await until(() => ticks.length >= N, `${N} ticks`, 8000);
    await sleep(200);
    assert.deepEqual(ticks, range(N));
    assert.deepEqual(events, []);
  } finally {
    await stopThrough(conn, proxy);
  }
});

test('json: stateful_buffer_bytes = 400: sends past the un-acked window wait for Acks; all arrive once, in order, across a kill', async () => {
  // A Tick record is about 45 bytes: about 9 fit in the window; the JS client acks 1 s after a receive.
  const proxy = await startProxy(srv.port, { connectDelayMs: 50 });
  const { conn, events } = build(proxy.url('/tiny'));
  const ticks = [];
  conn.on('Tick', (i) => { ticks.push(i); });
  await conn.start();
  try {
    const N = 30;
    const t0 = Date.now();
    await conn.invoke('Ticks', N, 10); // all produced within ~300 ms
    await sleep(Math.max(0, t0 + 600 - Date.now()));
    assert.ok(ticks.length <= 12, `before the first Ack only the window is sent: got ${ticks.length} ticks after 600 ms`);
    await until(() => ticks.length >= 15, '15 ticks', 6000);
    await killAndWaitReattach(proxy);
    await until(() => ticks.length >= N, `${N} ticks (have ${ticks.length})`, 10000);
    await sleep(200);
    assert.deepEqual(ticks, range(N));
    assert.deepEqual(events, []);
  } finally {
    await stopThrough(conn, proxy);
  }
});

// ---- (c) client to server ---------------------------------------------------------------------

for (const protocol of Object.keys(PROTOCOLS)) {
  test(`${protocol}: send('Record', i) across 3 socket kills: the server gets each exactly once, in order`, async () => {
    const proxy = await startProxy(srv.port, { connectDelayMs: 50 });
    const { conn, events } = build(proxy.url('/hub'), { protocol });
    await conn.start();
    const id = conn.connectionId;
    try {
      const N = 120;
      for (let i = 1; i <= N; i++) {
        await conn.send('Record', i);
        if (i === 30 || i === 65 || i === 100) proxy.kill(); // no waiting: the next sends go to the buffer
        await sleep(8);
      }
      const got = await until(async () => { const r = await records(id); return r.length >= N ? r : null; },
        `${N} records on the server`, 8000).catch(async (e) => { throw new Error(`${e.message}; have ${JSON.stringify(await records(id))}`); });
      await sleep(300);
      assert.deepEqual(await records(id), range(N), 'each Record exactly once, in order');
      assert.equal(got.length, N);
      assert.equal(proxy.kills, 3);
      assert.equal(await conn.invoke('WhoAmI'), id);
      assert.deepEqual(events, []);
      const ci = await connInfo(id);
      assert.equal(ci.connected, 1);
      assert.equal(ci.disconnected, 0);
    } finally {
      await stopThrough(conn, proxy);
    }
  });
}

test('json: invocations in flight across a kill complete once, with their results', async () => {
  const proxy = await startProxy(srv.port, { connectDelayMs: 0 }); // immediate reattach: it may reach the server before the old socket's end
  const { conn, events } = build(proxy.url('/hub'));
  await conn.start();
  try {
    // Slow runs one at a time (invocations of one connection are serialized): 3 x 200 ms.
    const pending = [conn.invoke('Slow', 200, 'a'), conn.invoke('Slow', 200, 'b'), conn.invoke('Slow', 200, 'c')];
    await sleep(100);
    proxy.kill();
    await sleep(250);
    proxy.kill();
    assert.deepEqual(await Promise.all(pending), ['a', 'b', 'c']);
    assert.equal(await conn.invoke('Add', 2, 2), 4);
    assert.deepEqual(events, []);
  } finally {
    await stopThrough(conn, proxy);
  }
});

test('messagepack: both directions at once across kills', async () => {
  const proxy = await startProxy(srv.port, { connectDelayMs: 0 }); // immediate reattach: it may reach the server before the old socket's end
  const { conn, events } = build(proxy.url('/hub'), { protocol: 'messagepack' });
  const ticks = [];
  conn.on('Tick', (i) => { ticks.push(i); });
  await conn.start();
  const id = conn.connectionId;
  try {
    const N = 60;
    await conn.invoke('Ticks', N, 20);
    for (let i = 1; i <= N; i++) {
      await conn.send('Record', i);
      if (i % 20 === 0) proxy.kill();
      await sleep(15);
    }
    await until(() => ticks.length >= N, `${N} ticks`, 8000);
    await until(async () => (await records(id)).length >= N, `${N} records`, 8000);
    await sleep(200);
    assert.deepEqual(ticks, range(N));
    assert.deepEqual(await records(id), range(N));
    assert.deepEqual(events, []);
  } finally {
    await stopThrough(conn, proxy);
  }
});

// ---- (d) a client that never comes back; clients without stateful reconnect ---------------

test('a stateful client that never comes back: on_disconnected runs after disconnect_timeout_ms, not before', async () => {
  const proxy = await startProxy(srv.port);
  const { conn, events } = build(proxy.url('/hub'));
  await conn.start();
  const id = conn.connectionId;
  assert.equal(await conn.invoke('Add', 1, 1), 2);
  proxy.refuse = true; // the reattach attempt is dropped: the client gives up (onclose)
  const killedAt = Date.now();
  proxy.kill();
  try {
    await until(() => events.some((e) => e[0] === 'close'), 'the client to give up (onclose)', 5000);
    // Well inside the timeout the server still holds the logical connection.
    await sleep(Math.max(0, killedAt + DISCONNECT_MS / 2 - Date.now()));
    assert.equal((await connInfo(id)).disconnected, 0, `on_disconnected ran before disconnect_timeout_ms (${DISCONNECT_MS} ms)`);
    const ci = await until(async () => { const x = await connInfo(id); return x.disconnected ? x : null; },
      'on_disconnected', DISCONNECT_MS + 4000);
    assert.equal(ci.disconnected, 1);
    const after = ci.at_us / 1000 - killedAt;
    assert.ok(after >= DISCONNECT_MS - 150, `on_disconnected ${Math.round(after)} ms after the drop (timeout ${DISCONNECT_MS})`);
    assert.ok(after <= DISCONNECT_MS + 2500, `on_disconnected ${Math.round(after)} ms after the drop (timeout ${DISCONNECT_MS})`);
  } finally {
    await stopThrough(conn, proxy);
  }
});

test('raw: a stateful connection dropped and never reattached: its token gets 404 after the timeout', async () => {
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true, negotiateQuery: 'negotiateVersion=1&useStatefulReconnect=true' });
  assert.equal(h.negotiated.useStatefulReconnect, true);
  assert.deepEqual(await h.handshake({ version: 2 }), {});
  h.sendRecord({ type: 1, invocationId: '1', target: 'WhoAmI', arguments: [] });
  const id = (await h.completion('1')).result;
  h.close(); // terminate(): the TCP socket goes, no close frame
  await until(async () => (await connInfo(id)).disconnected === 1, 'on_disconnected', DISCONNECT_MS + 4000);
  assert.equal(await RawHub.upgradeStatus(srv.port, `/hub?id=${h.id}`), 404);
});

test('without withStatefulReconnect a killed socket ends the connection at once (client onclose, server on_disconnected)', async () => {
  const proxy = await startProxy(srv.port, { connectDelayMs: 50 });
  const { conn, events } = build(proxy.url('/hub'), { stateful: false });
  await conn.start();
  const id = conn.connectionId;
  try {
    assert.equal(await conn.invoke('Add', 1, 2), 3);
    const killedAt = Date.now();
    proxy.kill();
    await until(() => events.some((e) => e[0] === 'close'), 'onclose', 3000);
    assert.equal(events.length, 1, JSON.stringify(events));
    assert.match(String(events[0][1]), /WebSocket closed with status code: 1006/);
    const ci = await until(async () => { const x = await connInfo(id); return x.disconnected ? x : null; }, 'on_disconnected', 3000);
    assert.ok(ci.at_us / 1000 - killedAt < DISCONNECT_MS - 300, 'not held for a reattach');
    assert.equal(typeof ci.err, 'string', `an abnormal close has an error: ${JSON.stringify(ci)}`);
  } finally {
    await stopThrough(conn, proxy);
  }
});

// ---- the wire, by hand -----------------------------------------------------------------------

test('raw json: Ack, then on a new socket: no handshake reply, Sequence first, replay of the un-acked, duplicates dropped', async () => {
  const neg = await negotiate(srv.port, '/hub', 'negotiateVersion=1&useStatefulReconnect=true');
  assert.equal(neg.json.useStatefulReconnect, true, neg.body);
  const token = neg.json.connectionToken;
  const id = neg.json.connectionId;
  const a = await openRaw(token);
  let b;
  try {
    assert.deepEqual(await a.handshake({ version: 2 }), {});
    // client message #1 (trackable) -> server message #1 (the Completion)
    a.sendRecord({ type: 1, invocationId: '1', target: 'Add', arguments: [1, 2] });
    assert.deepEqual(await a.completion('1'), { type: 3, invocationId: '1', result: 3 });
    // A Ping is not trackable and is never acknowledged as a message.
    a.send('{"type":6}' + RS);
    // client message #2: a fire-and-forget Record
    a.sendRecord({ type: 1, target: 'Record', arguments: [1] });
    // The server acknowledges what it received, about every second.
    const ack = await a.next((r) => r.type === 8 && r.sequenceId === 2, { what: 'Ack {sequenceId:2}', timeoutMs: 3500 });
    assert.deepEqual(ack, { type: 8, sequenceId: 2 });
    assert.equal(a.records.filter((r) => r.type === 8 && r.sequenceId > 2).length, 0, 'never acks beyond what was sent');
    // We never ack the server's Completion: drop the socket without a close frame.
    a.close();
    await sleep(100);

    b = await openRaw(token);
    // Each side sends Sequence first. The server's is the oldest message we did not ack: 1.
    const first = await b.next(() => true, { what: 'the first record on the reattached socket' });
    assert.deepEqual(first, { type: 9, sequenceId: 1 }, `first record: ${b.texts[0]}`);
    // then the replay: the un-acked Completion, before anything else but Pings and Acks
    await b.next((r) => r.type === 3, { what: 'the replayed Completion' });
    assert.deepEqual(b.records.filter((r) => r.type !== 6 && r.type !== 8).slice(0, 2),
      [{ type: 9, sequenceId: 1 }, { type: 3, invocationId: '1', result: 3 }]);
    assert.ok(!b.texts.includes('{}'), 'no handshake reply on the reattached socket');
    // Our Sequence: the server acked our messages 1..2, so a real client would say 3 and replay
    // nothing. We say 2 and resend #2 on purpose: it must be dropped as a duplicate.
    b.send('{"type":9,"sequenceId":2}' + RS + JSON.stringify({ type: 1, target: 'Record', arguments: [1] }) + RS);
    // #3 and #4
    b.sendRecord({ type: 1, target: 'Record', arguments: [2] });
    b.sendRecord({ type: 1, invocationId: '2', target: 'WhoAmI', arguments: [] });
    assert.deepEqual(await b.completion('2'), { type: 3, invocationId: '2', result: id });
    assert.deepEqual(await records(id), [1, 2], 'the replayed duplicate was dropped');
    assert.equal((await connInfo(id)).connected, 1);
    assert.equal((await connInfo(id)).disconnected, 0);
    // Acked messages are not replayed again: ack everything, drop, reattach: Sequence 3, nothing else.
    b.send('{"type":8,"sequenceId":2}' + RS);
    await sleep(100);
    b.close();
    await sleep(100);
    const c = await openRaw(token);
    try {
      const s = await c.next(() => true, { what: 'the Sequence on the third socket' });
      assert.deepEqual(s, { type: 9, sequenceId: 3 });
      c.send('{"type":9,"sequenceId":5}' + RS);
      c.sendRecord({ type: 1, invocationId: '3', target: 'Add', arguments: [3, 4] });
      assert.deepEqual(await c.completion('3'), { type: 3, invocationId: '3', result: 7 });
      assert.deepEqual(c.records.filter((r) => r.type !== 6 && r.type !== 8),
        [{ type: 9, sequenceId: 3 }, { type: 3, invocationId: '3', result: 7 }]);
      c.send('{"type":7}' + RS);
      await c.waitClosed(3000);
    } finally { c.close(); }
  } finally {
    a.close();
    if (b) b.close();
  }
});

test('raw messagepack: Ack [8, n] while attached; after a drop the new socket starts with [9, 1] and the replay', async () => {
  const neg = await negotiate(srv.port, '/hub', 'negotiateVersion=1&useStatefulReconnect=true');
  const token = neg.json.connectionToken;
  const a = await RawMpHub.open(srv.port, '/hub', { id: token });
  let b;
  try {
    assert.deepEqual(await a.doHandshake({ version: 2 }), {});
    a.send([1, {}, '1', 'Add', [20, 22]]);
    assert.deepEqual(await a.completion('1'), [3, {}, '1', 3, 42]);
    const ack = await a.next((r) => r[0] === 8, { what: 'an Ack', timeoutMs: 3500 });
    assert.deepEqual(ack, [8, 1]);
    a.close();
    await sleep(100);
    b = await RawMpHub.open(srv.port, '/hub', { id: token, reattach: true });
    await b.next((r) => r[0] === 3, { what: 'the replayed Completion' });
    assert.ok(b.frames.every((f) => f.binary), 'binary frames');
    assert.deepEqual(b.records.filter((r) => r[0] !== 6 && r[0] !== 8).slice(0, 2), [[9, 1], [3, {}, '1', 3, 42]]);
    assert.deepEqual(b.records[0], [9, 1], 'Sequence first');
    // our side: we sent one message, acked by the server: go on at 2
    b.send([9, 2], [1, {}, '2', 'Add', [1, 1]]);
    assert.deepEqual(await b.completion('2'), [3, {}, '2', 3, 2]);
    b.send([7, null]);
    await b.waitClosed(3000);
  } finally {
    a.close();
    if (b) b.close();
  }
});

test('raw json: a Sequence beyond what the server received closes the connection', async () => {
  const neg = await negotiate(srv.port, '/hub', 'negotiateVersion=1&useStatefulReconnect=true');
  const token = neg.json.connectionToken;
  const a = await openRaw(token);
  try {
    assert.deepEqual(await a.handshake({ version: 2 }), {});
    a.sendRecord({ type: 1, invocationId: '1', target: 'Add', arguments: [1, 2] });
    await a.completion('1');
    a.close();
    await sleep(100);
    const b = await openRaw(token);
    try {
      await b.next((r) => r.type === 9, { what: 'the server Sequence' });
      // the server received 1 message: its next expected is 2; 5 is impossible
      b.send('{"type":9,"sequenceId":5}' + RS);
      await b._wait(() => b.closed || b.records.some((r) => r.type === 7), 'the server to end the connection', 3000);
      const close = b.records.find((r) => r.type === 7);
      if (close) assert.equal(typeof close.error, 'string', JSON.stringify(close));
      await b.waitClosed(3000);
    } finally { b.close(); }
  } finally { a.close(); }
});

test('raw json: a connection that did not negotiate stateful reconnect is not kept after a drop', async () => {
  const neg = await negotiate(srv.port, '/hub', 'negotiateVersion=1');
  assert.ok(!('useStatefulReconnect' in neg.json));
  const a = await RawHub.open(srv.port, '/hub', { id: neg.json.connectionToken });
  assert.deepEqual(await a.handshake({ version: 1 }), {});
  a.sendRecord({ type: 1, invocationId: '1', target: 'Add', arguments: [1, 2] });
  await a.completion('1');
  a.close();
  await until(async () => (await connInfo(neg.json.connectionId)).disconnected === 1, 'on_disconnected', 2000);
  assert.equal(await RawHub.upgradeStatus(srv.port, `/hub?id=${neg.json.connectionToken}`), 404);
});
