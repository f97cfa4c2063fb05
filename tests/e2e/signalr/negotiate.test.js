'use strict';
// Negotiate (signalr-protocol.md §1) and connecting with the official client over WebSockets,
// with and without negotiation; upgrade and POST status codes (§2).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, request } = require('../lib/server');
const { connect, stopAll, collect, until, negotiate, RawHub } = require('../lib/signalr');

let srv;
before(async () => { srv = await startServer({ scripts: ['signalr.lua'] }); });
after(async () => { if (srv) await srv.stop(); });

const URL_SAFE = /^[A-Za-z0-9_-]+$/;

function assertWebSockets(body) {
  assert.ok(Array.isArray(body.availableTransports), `availableTransports: ${JSON.stringify(body)}`);
  const ws = body.availableTransports.find((t) => t.transport === 'WebSockets');
  assert.ok(ws, `WebSockets listed: ${JSON.stringify(body.availableTransports)}`);
  assert.ok(ws.transferFormats.includes('Text') && ws.transferFormats.includes('Binary'),
    `WebSockets formats: ${JSON.stringify(ws.transferFormats)}`);
  assert.ok(!('ProtocolVersion' in body), 'never a ProtocolVersion property');
}

test('negotiate v1: 200 JSON, negotiateVersion 1, a token distinct from the id, WebSockets Text+Binary', async () => {
  const r = await negotiate(srv.port, '/hub', 'negotiateVersion=1');
  assert.equal(r.status, 200, r.body);
  assert.match(String(r.headers['content-type']), /^application\/json/);
  const b = r.json;
  assert.ok(b, `JSON body: ${r.body}`);
  assert.equal(b.negotiateVersion, 1);
  assert.equal(typeof b.connectionId, 'string');
  assert.equal(typeof b.connectionToken, 'string');
  assert.ok(b.connectionId.length > 0 && b.connectionToken.length > 0);
  assert.notEqual(b.connectionId, b.connectionToken);
  assert.match(b.connectionToken, URL_SAFE, 'the token goes in the URL unencoded');
  assertWebSockets(b);
  assert.ok(!('error' in b));
});

test('negotiate: each call gives a new connection', async () => {
  const a = (await negotiate(srv.port)).json;
  const b = (await negotiate(srv.port)).json;
  assert.notEqual(a.connectionId, b.connectionId);
  assert.notEqual(a.connectionToken, b.connectionToken);
});

test('negotiate v0 (no version): no connectionToken', async () => {
  const r = await negotiate(srv.port, '/hub', '');
  assert.equal(r.status, 200, r.body);
  const b = r.json;
  assert.equal(typeof b.connectionId, 'string');
  assert.ok(!('connectionToken' in b), `no token in v0: ${r.body}`);
  assert.ok(b.negotiateVersion === undefined || b.negotiateVersion === 0, `negotiateVersion: ${b.negotiateVersion}`);
  assertWebSockets(b);
});

test('negotiate: a version above 1 is clamped to 1; the query key is case-insensitive', async () => {
  const r = await negotiate(srv.port, '/hub', 'negotiateVersion=7');
  assert.equal(r.status, 200);
  assert.equal(r.json.negotiateVersion, 1);
  assert.equal(typeof r.json.connectionToken, 'string');
  const r2 = await negotiate(srv.port, '/hub', 'NEGOTIATEVERSION=1');
  assert.equal(r2.json.negotiateVersion, 1, r2.body);
  assert.equal(typeof r2.json.connectionToken, 'string');
});

test('negotiateVersion=abc: 200 with {"error": ...}', async () => {
  const r = await negotiate(srv.port, '/hub', 'negotiateVersion=abc');
  assert.equal(r.status, 200, r.body);
  assert.ok(r.json, `JSON body: ${r.body}`);
  assert.equal(typeof r.json.error, 'string');
  assert.ok(r.json.error.length > 0);
  assert.ok(!('connectionId' in r.json));
});

test('GET negotiate: 405', async () => {
  const r = await negotiate(srv.port, '/hub', 'negotiateVersion=1', 'GET');
  assert.equal(r.status, 405, r.body);
});

test('official client: connects through negotiate (v1), Echo works, stop()', async () => {
  let echoed;
  const conn = await connect(srv.url('/hub'), {}, (c) => c.on('ReceiveEcho', (m) => { echoed = m; }));
  try {
    assert.equal(conn.state, 'Connected');
    assert.equal(typeof conn.connectionId, 'string');
    assert.ok(conn.connectionId.length > 0);
    const r = await conn.invoke('Echo', 'hi');
    assert.ok(r === null || r === undefined, `Echo result ${JSON.stringify(r)}`);
    await until(() => echoed !== undefined, 'ReceiveEcho');
    assert.equal(echoed, 'hi');
    // ctx.connection_id is the public id the client got from negotiate
    assert.equal(await conn.invoke('WhoAmI'), conn.connectionId);
  } finally { await conn.stop(); }
  assert.equal(conn.state, 'Disconnected');
});

test('official client: skipNegotiation connects, connectionId is null, invoke works', async () => {
  const conn = await connect(srv.url('/hub'), { skipNegotiation: true });
  try {
    assert.equal(conn.state, 'Connected');
    assert.equal(conn.connectionId, null);
    assert.equal(await conn.invoke('Add', 1, 2), 3);
    const id = await conn.invoke('WhoAmI');
    assert.equal(typeof id, 'string');
    assert.ok(id.length > 0, 'the server still gives the connection an id');
  } finally { await conn.stop(); }
});

test('official client: a query string on the hub URL is kept and ignored', async () => {
  const conn = await connect(srv.url('/hub?x=1&y=two'));
  try {
    assert.equal(await conn.invoke('Add', 2, 3), 5);
  } finally { await conn.stop(); }
});

test('official client: on_connected ctx:send reaches the new client first thing', async () => {
  let welcome;
  const conn = await connect(srv.url('/hub'), {}, (c) => c.on('Welcome', (id) => { welcome = id; }));
  try {
    await until(() => welcome !== undefined, 'Welcome');
    assert.equal(welcome, conn.connectionId);
  } finally { await conn.stop(); }
});

test('a hub path that is not declared: negotiate 404', async () => {
  const r = await negotiate(srv.port, '/nohub', 'negotiateVersion=1');
  assert.equal(r.status, 404);
});

test('raw: v0 negotiate, the connectionId is the id on the upgrade', async () => {
  const neg = (await negotiate(srv.port, '/hub', '')).json;
  const h = await RawHub.open(srv.port, '/hub', { id: neg.connectionId });
  try {
    assert.deepEqual(await h.handshake(), {});
    h.sendRecord({ type: 1, invocationId: '1', target: 'Add', arguments: [20, 22] });
    const c = await h.completion('1');
    assert.equal(c.result, 42);
  } finally { h.close(); }
});

test('raw: WebSocket upgrade with an unknown id: 404', async () => {
  assert.equal(await RawHub.upgradeStatus(srv.port, '/hub?id=nosuchconnectionid'), 404);
});

test('raw: a second WebSocket on an active id: 409', async () => {
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true });
  try {
    assert.deepEqual(await h.handshake(), {});
    assert.equal(await RawHub.upgradeStatus(srv.port, `/hub?id=${h.id}`), 409);
    // the first socket is unaffected
    h.sendRecord({ type: 1, invocationId: '7', target: 'Add', arguments: [1, 1] });
    assert.equal((await h.completion('7')).result, 2);
  } finally { h.close(); }
});

test('raw: POST to a WebSocket connection id: 405; POST without id: 400', async () => {
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true });
  try {
    assert.deepEqual(await h.handshake(), {});
    const r = await request(srv.port, { method: 'POST', path: `/hub?id=${h.id}`, body: '{"type":6}\x1e',
      headers: { 'content-type': 'text/plain;charset=UTF-8' } });
    assert.equal(r.status, 405, r.body);
    const r2 = await request(srv.port, { method: 'POST', path: '/hub', body: '{"type":6}\x1e',
      headers: { 'content-type': 'text/plain;charset=UTF-8' } });
    assert.equal(r2.status, 400, r2.body);
  } finally { h.close(); }
});

test('official clients: several connect at once and all get distinct ids', async () => {
  const conns = await Promise.all([1, 2, 3, 4, 5].map(() => connect(srv.url('/hub'))));
  try {
    const ids = new Set(conns.map((c) => c.connectionId));
    assert.equal(ids.size, 5);
    const echoes = conns.map((c) => collect(c, 'ReceiveEcho'));
    await Promise.all(conns.map((c, i) => c.invoke('Echo', `m${i}`)));
    await until(() => echoes.every((e) => e.length === 1), 'every echo');
    echoes.forEach((e, i) => assert.deepEqual(e, [[`m${i}`]]));
  } finally { await stopAll(conns); }
});
