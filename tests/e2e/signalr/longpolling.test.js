'use strict';
// The long-polling transport (signalr-protocol.md section 2): the official client forced onto
// LongPolling, and the timing rules checked by hand: the first poll answers 200 empty at once,
// later polls are held until there is data (or the poll timeout), bodies hold whole records,
// DELETE answers 202, a poll after the end gets 204, a late POST gets 404.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const signalR = require('@microsoft/signalr');
const { startServer, request } = require('../lib/server');
const { connect, collect, until, negotiate } = require('../lib/signalr');

const LP = signalR.HttpTransportType.LongPolling;
const SCRIPT = `
local hub = kr.hub("/hub", { poll_timeout_ms = 400 })
hub:on("Add", function(ctx, a, b) return a + b end)
kr.hub("/nolp", { transports = { "WebSockets" } })
kr.map_route("GET", "/log", function(req, res) kr.send_log("Information", "over lp") res:text("ok") end)
kr.map_route("GET", "/group/{g}", function(req, res)
  local ok, n = kr.group_send(req.params.g, "Notice", "for " .. req.params.g)
  res:text(tostring(n))
end)
`;

let srv;
before(async () => { srv = await startServer({ script: SCRIPT }); });
after(async () => { if (srv) await srv.stop(); });

test('negotiate lists LongPolling last, with Text and Binary', async () => {
  const n = await negotiate(srv.port, '/hub');
  assert.deepEqual(n.json.availableTransports.map((t) => [t.transport, t.transferFormats]),
    [['WebSockets', ['Text', 'Binary']], ['ServerSentEvents', ['Text']], ['LongPolling', ['Text', 'Binary']]]);
});

test('official client over LongPolling: Echo, a Lua method, broadcasts, groups, idle polls', async () => {
  const conn = await connect(srv.url('/hub'), { transport: LP });
  try {
    const echoes = collect(conn, 'ReceiveEcho');
    const logs = collect(conn, 'ReceiveLog');
    const notes = collect(conn, 'Notice');
    assert.equal(await conn.invoke('Echo', 'hi'), null);
    await until(() => echoes.length === 1, 'ReceiveEcho');
    assert.equal(await conn.invoke('Add', 20, 22), 42);
    // Several poll timeouts pass while idle: the client polls again and stays connected.
    await new Promise((r) => setTimeout(r, 1300));
    assert.equal(conn.state, signalR.HubConnectionState.Connected);
    assert.equal((await request(srv.port, { path: '/log' })).body, 'ok');
    await until(() => logs.length === 1, 'ReceiveLog');
    assert.equal(logs[0][0].message, 'over lp');
    await conn.invoke('JoinGroup', 'g');
    assert.equal((await request(srv.port, { path: '/group/g' })).body, '1');
    await until(() => notes.length === 1, 'Notice');
  } finally { await conn.stop(); }
});

test('raw long polling: first poll empty at once, held poll gets records, DELETE 202, then 204/404', async () => {
  const n = await negotiate(srv.port, '/hub');
  const token = n.json.connectionToken;
  const first = await request(srv.port, { path: `/hub?id=${token}` });
  assert.equal(first.status, 200);
  assert.equal(first.body, '');
  const post = (body) => request(srv.port, { method: 'POST', path: `/hub?id=${token}`, body,
    headers: { 'Content-Type': 'text/plain;charset=UTF-8' } });
  assert.equal((await post('{"protocol":"json","version":1}\x1e')).status, 200);
  const hs = await request(srv.port, { path: `/hub?id=${token}` });
  assert.equal(hs.status, 200);
  assert.equal(hs.body, '{}\x1e');
  // A held poll is answered when the completion is queued.
  const held = request(srv.port, { path: `/hub?id=${token}` });
  await new Promise((r) => setTimeout(r, 50));
  await post('{"type":1,"invocationId":"1","target":"Add","arguments":[1,2]}\x1e');
  const got = await held;
  assert.equal(got.status, 200);
  assert.equal(got.body, '{"type":3,"invocationId":"1","result":3}\x1e');
  // With nothing to send, a poll answers empty after the poll timeout (400 ms here).
  const idle = await request(srv.port, { path: `/hub?id=${token}` });
  assert.equal(idle.status, 200);
  assert.equal(idle.body, '');
  const del = await request(srv.port, { method: 'DELETE', path: `/hub?id=${token}` });
  assert.equal(del.status, 202);
  const late = await post('{"type":7}\x1e');
  assert.equal(late.status, 404);
});

test('the server closing a long-polling client: the Close record, then 204', async () => {
  const n = await negotiate(srv.port, '/hub');
  const token = n.json.connectionToken;
  await request(srv.port, { path: `/hub?id=${token}` });
  const post = (body) => request(srv.port, { method: 'POST', path: `/hub?id=${token}`, body });
  await post('{"protocol":"json","version":1}\x1e');
  assert.equal((await request(srv.port, { path: `/hub?id=${token}` })).body, '{}\x1e');
  // An oversize-free protocol error: a malformed record closes the connection with an error.
  await post('{"type":1,"target":5}\x1e');
  const closing = await request(srv.port, { path: `/hub?id=${token}` });
  assert.equal(closing.status, 200);
  assert.match(closing.body, /^\{"type":7,"error":"Connection closed with an error\."/);
  const end = await request(srv.port, { path: `/hub?id=${token}` });
  assert.equal(end.status, 204);
});

test('long polling disabled on a hub: the poll gets 404', async () => {
  const n = await negotiate(srv.port, '/nolp');
  const r = await request(srv.port, { path: `/nolp?id=${n.json.connectionToken}` });
  assert.equal(r.status, 404);
});
