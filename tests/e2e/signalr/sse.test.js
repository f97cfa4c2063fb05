'use strict';
// The Server-Sent Events transport: the official client forced onto ServerSentEvents, and the
// wire rules of signalr-protocol.md section 2 checked by hand (event-stream head, the ":"
// comment flushed at once, "data:" lines, POST for client records, 404/400 answers).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const signalR = require('@microsoft/signalr');
const { startServer, request } = require('../lib/server');
const { connect, collect, until, negotiate } = require('../lib/signalr');

const SSE = signalR.HttpTransportType.ServerSentEvents;
const SCRIPT = `
local hub = kr.hub("/hub", { keepalive_ms = 300 })
hub:on("Add", function(ctx, a, b) return a + b end)
kr.hub("/wsonly", { transports = { "WebSockets" } })
kr.map_route("GET", "/log", function(req, res) kr.send_log("Warning", "over sse") res:text("ok") end)
kr.map_route("GET", "/group/{g}", function(req, res)
  local ok, n = kr.group_send(req.params.g, "Notice", "for " .. req.params.g)
  res:text(tostring(n))
end)
`;

let srv;
before(async () => { srv = await startServer({ script: SCRIPT }); });
after(async () => { if (srv) await srv.stop(); });

test('negotiate lists ServerSentEvents after WebSockets, Text only', async () => {
  const n = await negotiate(srv.port, '/hub');
  assert.deepEqual(n.json.availableTransports.slice(0, 2).map((t) => [t.transport, t.transferFormats]),
    [['WebSockets', ['Text', 'Binary']], ['ServerSentEvents', ['Text']]]);
  const w = await negotiate(srv.port, '/wsonly');
  assert.deepEqual(w.json.availableTransports.map((t) => t.transport), ['WebSockets']);
});

test('official client over ServerSentEvents: Echo, a Lua method, broadcasts, groups', async () => {
  const conn = await connect(srv.url('/hub'), { transport: SSE });
  try {
    const echoes = collect(conn, 'ReceiveEcho');
    const logs = collect(conn, 'ReceiveLog');
    const notes = collect(conn, 'Notice');
    assert.equal(await conn.invoke('Echo', 'line1\nline2'), null);
    await until(() => echoes.length === 1, 'ReceiveEcho');
    assert.deepEqual(echoes[0], ['line1\nline2']);
    assert.equal(await conn.invoke('Add', 40, 2), 42);
    assert.equal((await request(srv.port, { path: '/log' })).body, 'ok');
    await until(() => logs.length === 1, 'ReceiveLog');
    assert.equal(logs[0][0].message, 'over sse');
    await conn.invoke('JoinGroup', 'g');
    assert.equal((await request(srv.port, { path: '/group/g' })).body, '1');
    await until(() => notes.length === 1, 'Notice');
    assert.deepEqual(notes[0], ['for g']);
  } finally { await conn.stop(); }
});

test('keep-alive pings keep an idle SSE client connected', async () => {
  const conn = await connect(srv.url('/hub'), { transport: SSE, serverTimeoutMs: 1500 });
  try {
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(conn.state, signalR.HubConnectionState.Connected);
    assert.equal(await conn.invoke('Add', 1, 1), 2);
  } finally { await conn.stop(); }
});

// A raw event-stream GET that collects what arrives.
function openStream(port, token) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: `/hub?id=${token}`,
      headers: { Accept: 'text/event-stream' } }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      resolve({ res, text: () => Buffer.concat(chunks).toString(), close: () => req.destroy() });
    });
    req.on('error', reject);
  });
}

test('raw SSE: text/event-stream, ":" flushed first, records as data: lines, POST answers 200', async () => {
  const n = await negotiate(srv.port, '/hub');
  const token = n.json.connectionToken;
  const s = await openStream(srv.port, token);
  try {
    assert.equal(s.res.statusCode, 200);
    assert.match(s.res.headers['content-type'], /^text\/event-stream/);
    assert.equal(s.res.headers['cache-control'], 'no-cache');
    await until(() => s.text().startsWith(':\r\n'), 'the opening comment');
    const post = (body) => request(srv.port, { method: 'POST', path: `/hub?id=${token}`, body,
      headers: { 'Content-Type': 'text/plain;charset=UTF-8' } });
    assert.equal((await post('{"protocol":"json","version":1}\x1e')).status, 200);
    await until(() => s.text().includes('data: {}\x1e\r\n\r\n'), 'the handshake reply event');
    await post('{"type":1,"invocationId":"7","target":"Add","arguments":[2,3]}\x1e');
    await until(() => s.text().includes('data: {"type":3,"invocationId":"7","result":5}\x1e\r\n\r\n'),
      'the completion event');
    // A second event-stream GET on the same connection is refused.
    const again = await request(srv.port, { path: `/hub?id=${token}`, headers: { Accept: 'text/event-stream' } });
    assert.equal(again.status, 400);
    const del = await request(srv.port, { method: 'DELETE', path: `/hub?id=${token}` });
    assert.equal(del.status, 400);
  } finally { s.close(); }
});

test('SSE disabled on a hub: the event-stream GET gets 404', async () => {
  const n = await negotiate(srv.port, '/wsonly');
  const r = await request(srv.port, { path: `/wsonly?id=${n.json.connectionToken}`,
    headers: { Accept: 'text/event-stream' } });
  assert.equal(r.status, 404);
});
