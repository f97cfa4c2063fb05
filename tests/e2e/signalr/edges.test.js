'use strict';
// Edge cases of signalr-protocol.md §11 (and §2, §4, §6, §7) that raw.test.js, longpolling.test.js,
// sse.test.js and negotiate.test.js do not already cover: handshake version 2/3 with MessagePack
// (JSON is in raw.test.js), the first long poll answered empty at once, a quiet 404 for the Close
// POST that follows a DELETE, a second poll replacing the first (204), useStatefulReconnect and
// Ack/Sequence never shown to a client that did not ask, CancelInvocation and StreamItem for
// ids the server does not stream, and stream ids reused while open.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, request, sleep } = require('../lib/server');
const { signalR, RawHub, RS, until, negotiate, connect } = require('../lib/signalr');
const { RawMpHub } = require('../lib/rawmsgpack');

const SCRIPT = `
local hub = kr.hub("/hub", { protocols = { "json", "messagepack" }, poll_timeout_ms = 5000,
  stateful_reconnect = true })
state = { disconnected = {}, sums = 0 }
hub:on("Add", function(ctx, a, b) return a + b end)
hub:on("Sleep", function(ctx, ms) kr.sleep(ms) return "slept" end)
hub:on("WhoAmI", function(ctx) return ctx.connection_id end)
hub:on("Sum", function(ctx, s)
  local t = 0
  for x in s do t = t + x end
  state.sums = state.sums + 1
  return t
end)
hub:stream("Counter", function(ctx, emit, n, ms)
  for i = 1, n do
    if not emit(i) then return end
    kr.sleep(ms)
  end
end)
hub:on_disconnected(function(ctx, err)
  state.disconnected[ctx.connection_id] = { err = err and tostring(err) or nil }
end)
kr.map_route("GET", "/push-table", function(req, res)
  local ok, n = hub:send_all("Table", { Title = "x", camelCase = 1, UPPER = true, nested = { InnerKey = "v" } })
  res:text(tostring(n))
end)
kr.map_route("GET", "/disconnected/{id}", function(req, res)
  local d = state.disconnected[req.params.id]
  res:json({ seen = d ~= nil, err = d and d.err or nil })
end)
`;

let srv;
before(async () => { srv = await startServer({ script: SCRIPT }); });
after(async () => { if (srv) await srv.stop(); });

async function handshaken(path = '/hub', opts = { negotiate: true }) {
  const h = await RawHub.open(srv.port, path, opts);
  assert.deepEqual(await h.handshake(), {});
  return h;
}

// Log lines at Warning or above written while fn runs.
async function noisyLines(fn) {
  const start = srv.log().length;
  await fn();
  await sleep(100);
  return srv.log().slice(start).split('\n').filter((l) => /\[(Warning|Error|Fatal)\]/.test(l));
}

// ---- handshake versions, MessagePack ---------------------------------------------------------

test('messagepack handshake version 2 is accepted ({}\\x1e in a binary frame); the connection works', async () => {
  const h = await RawMpHub.open(srv.port, '/hub');
  try {
    assert.deepEqual(await h.doHandshake({ version: 2 }), {});
    assert.equal(h.frames[0].binary, true);
    assert.equal(h.frames[0].buf.subarray(0, 3).toString('hex'), '7b7d1e');
    h.send([1, {}, '1', 'Add', [2, 3]]);
    assert.deepEqual(await h.completion('1'), [3, {}, '1', 3, 5]);
  } finally { h.close(); }
});

test('messagepack handshake version 3 is rejected with the .NET text, then the socket closes', async () => {
  const h = await RawMpHub.open(srv.port, '/hub');
  try {
    const r = await h.doHandshake({ version: 3 });
    assert.deepEqual(r, { error: "The server does not support version 3 of the 'messagepack' protocol." });
    assert.equal(h.handshake, '{"error":"The server does not support version 3 of the \'messagepack\' protocol."}');
    await h.waitClosed(3000);
    assert.equal(h.records.length, 0, 'nothing after the error');
  } finally { h.close(); }
});

// ---- long polling ------------------------------------------------------------------------------

async function lpConnect(query = 'negotiateVersion=1') {
  const n = await negotiate(srv.port, '/hub', query);
  const token = n.json.connectionToken;
  const path = `/hub?id=${token}`;
  const poll = () => request(srv.port, { path: `${path}&_=${Date.now()}` });
  const post = (body) => request(srv.port, { method: 'POST', path, body, headers: { 'Content-Type': 'text/plain;charset=UTF-8' } });
  return { n, token, path, poll, post, id: n.json.connectionId };
}

test('long polling: the first poll is answered 200 empty at once, even with a long poll_timeout_ms (5 s)', async () => {
  const c = await lpConnect();
  const t0 = Date.now();
  const first = await c.poll();
  const ms = Date.now() - t0;
  assert.equal(first.status, 200);
  assert.equal(first.bodyBuf.length, 0);
  assert.ok(ms < 1000, `the first poll took ${ms} ms`);
  // The handshake reply goes to the next poll, never to the first (the client discards it).
  assert.equal((await c.post('{"protocol":"json","version":1}' + RS)).status, 200);
  const second = await c.poll();
  assert.equal(second.status, 200);
  assert.equal(second.body, '{}' + RS);
  await request(srv.port, { method: 'DELETE', path: c.path });
});

test('long polling: the Close POST arriving after the DELETE gets a quiet 404 (nothing logged at Warning or above)', async () => {
  const c = await lpConnect();
  await c.poll();
  await c.post('{"protocol":"json","version":1}' + RS);
  assert.equal((await c.poll()).body, '{}' + RS);
  const noisy = await noisyLines(async () => {
    const held = c.poll(); // the client's pending poll, answered when the connection ends
    await sleep(50);
    const del = await request(srv.port, { method: 'DELETE', path: c.path });
    assert.equal(del.status, 202);
    const late = await c.post('{"type":7}' + RS);
    assert.equal(late.status, 404);
    const h = await held;
    assert.ok(h.status === 204 || h.status === 200, `the pending poll: ${h.status}`);
  });
  assert.deepEqual(noisy, [], 'no Warning/Error lines for a DELETE followed by a late Close POST');
  const d = await until(async () => {
    const x = JSON.parse((await request(srv.port, { path: `/disconnected/${encodeURIComponent(c.id)}` })).body);
    return x.seen ? x : null;
  }, 'on_disconnected');
  assert.equal(d.err, undefined, `DELETE is a clean end: ${JSON.stringify(d)}`);
});

test('long polling: the official client stop() (abort poll, DELETE, Close POST) logs nothing at Warning or above', async () => {
  const conn = await connect(srv.url('/hub'), { transport: signalR.HttpTransportType.LongPolling });
  const id = conn.connectionId;
  assert.equal(await conn.invoke('Add', 1, 2), 3);
  const noisy = await noisyLines(async () => { await conn.stop(); await sleep(300); });
  assert.deepEqual(noisy, [], `connection ${id}`);
});

test('long polling: a second concurrent poll replaces the first, which gets 204; the second gets the data', async () => {
  const c = await lpConnect();
  await c.poll();
  await c.post('{"protocol":"json","version":1}' + RS);
  assert.equal((await c.poll()).body, '{}' + RS);
  const a = c.poll();
  await sleep(100);
  const t0 = Date.now();
  const b = c.poll();
  const ra = await a;
  assert.equal(ra.status, 204, `the replaced poll: ${ra.status} ${JSON.stringify(ra.body)}`);
  assert.equal(ra.bodyBuf.length, 0);
  assert.ok(Date.now() - t0 < 1000, 'answered as soon as the second poll arrived');
  await sleep(50);
  assert.equal((await c.post('{"type":1,"invocationId":"1","target":"Add","arguments":[1,2]}' + RS)).status, 200);
  const rb = await b;
  assert.equal(rb.status, 200);
  assert.equal(rb.body, '{"type":3,"invocationId":"1","result":3}' + RS);
  // the connection is still there
  const more = c.poll();
  await sleep(50);
  await c.post('{"type":1,"invocationId":"2","target":"Add","arguments":[2,2]}' + RS);
  assert.equal((await more).body, '{"type":3,"invocationId":"2","result":4}' + RS);
  await request(srv.port, { method: 'DELETE', path: c.path });
});

test('long polling: two overlapping POSTs are both accepted (200, no 409) and both processed', async () => {
  const c = await lpConnect();
  await c.poll();
  await c.post('{"protocol":"json","version":1}' + RS);
  assert.equal((await c.poll()).body, '{}' + RS);
  const big = 'p'.repeat(20000); // a body that takes a moment to arrive and be parsed
  const [p1, p2] = await Promise.all([
    c.post(JSON.stringify({ type: 1, invocationId: '1', target: 'Add', arguments: [big.length, 1] }) + RS +
      JSON.stringify({ type: 1, target: 'Echo', arguments: [big] }) + RS),
    c.post('{"type":1,"invocationId":"2","target":"Add","arguments":[2,2]}' + RS),
  ]);
  assert.equal(p1.status, 200, p1.body);
  assert.equal(p2.status, 200, p2.body);
  const texts = [];
  for (let i = 0; i < 5 && !(texts.some((t) => t.includes('"invocationId":"1"')) && texts.some((t) => t.includes('"invocationId":"2"'))); i++) {
    const r = await c.poll();
    assert.equal(r.status, 200);
    texts.push(...r.body.split(RS).filter(Boolean));
  }
  assert.ok(texts.includes('{"type":3,"invocationId":"1","result":20001}'), JSON.stringify(texts).slice(0, 300));
  assert.ok(texts.includes('{"type":3,"invocationId":"2","result":4}'), JSON.stringify(texts).slice(0, 300));
  await request(srv.port, { method: 'DELETE', path: c.path });
});

// ---- MessagePack shapes ------------------------------------------------------------------------

for (const [name, close] of [['JS [7, nil]', [7, null]], ['.NET [7, nil, false]', [7, null, false]]]) {
  test(`messagepack: a client Close with ${close.length} elements (${name}) ends the connection cleanly`, async () => {
    const h = await RawMpHub.open(srv.port, '/hub');
    try {
      assert.deepEqual(await h.doHandshake(), {});
      h.send([1, {}, '1', 'WhoAmI', []]);
      const id = (await h.completion('1'))[4];
      h.send(close);
      await h.waitClosed(3000);
      assert.deepEqual(h.records.filter((r) => r[0] === 7 && r[1] !== null), [], 'no Close with an error');
      const d = await until(async () => {
        const x = JSON.parse((await request(srv.port, { path: `/disconnected/${encodeURIComponent(id)}` })).body);
        return x.seen ? x : null;
      }, 'on_disconnected');
      assert.equal(d.err, undefined, JSON.stringify(d));
    } finally { h.close(); }
  });
}

test('messagepack: map keys of a Lua table arrive as written (not camelCased)', async () => {
  const h = await RawMpHub.open(srv.port, '/hub');
  try {
    assert.deepEqual(await h.doHandshake(), {});
    h.send([1, {}, '1', 'Add', [0, 0]]);
    await h.completion('1');
    assert.equal((await request(srv.port, { path: '/push-table' })).status, 200);
    const r = await h.next((x) => x[0] === 1 && x[3] === 'Table', { what: 'the Table push' });
    assert.deepEqual(r[4], [{ Title: 'x', camelCase: 1, UPPER: true, nested: { InnerKey: 'v' } }]);
  } finally { h.close(); }
});

// ---- stateful reconnect only for those who ask -------------------------------------------------

test('negotiate: no useStatefulReconnect without the parameter, with =false, or in v0', async () => {
  for (const q of ['negotiateVersion=1', 'negotiateVersion=1&useStatefulReconnect=false', '']) {
    const r = await negotiate(srv.port, '/hub', q);
    assert.equal(r.status, 200, r.body);
    assert.ok(!('useStatefulReconnect' in r.json), `query '${q}': ${r.body}`);
  }
  const asked = await negotiate(srv.port, '/hub', 'negotiateVersion=1&useStatefulReconnect=true');
  assert.equal(asked.json.useStatefulReconnect, true, 'the hub does allow it');
});

test('a WebSocket client that did not ask never receives Ack or Sequence messages', async () => {
  const h = await handshaken('/hub', { negotiate: true });
  try {
    for (let i = 0; i < 5; i++) h.sendRecord({ type: 1, invocationId: String(i), target: 'Add', arguments: [i, i] });
    await h.completion('4');
    await sleep(1600); // the stateful Ack would come about every second
    assert.deepEqual(h.records.filter((r) => r.type === 8 || r.type === 9), []);
  } finally { h.close(); }
});

test('a version-1 handshake after a stateful negotiate: no Ack or Sequence, and a drop ends the connection at once', async () => {
  // .NET (HubConnectionContext.HandshakeAsync): a handshake version below 2 disables stateful reconnect.
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true, negotiateQuery: 'negotiateVersion=1&useStatefulReconnect=true' });
  const id = h.negotiated.connectionId;
  try {
    assert.equal(h.negotiated.useStatefulReconnect, true);
    assert.deepEqual(await h.handshake({ version: 1 }), {});
    h.sendRecord({ type: 1, invocationId: '1', target: 'Add', arguments: [1, 1] });
    await h.completion('1');
    await sleep(1600);
    assert.deepEqual(h.records.filter((r) => r.type === 8 || r.type === 9), []);
  } finally { h.close(); }
  // Not kept for a reattach (the hub's disconnect_timeout_ms is the default 15 s).
  await until(async () => JSON.parse((await request(srv.port, { path: `/disconnected/${encodeURIComponent(id)}` })).body).seen,
    'on_disconnected soon after the drop', 2000);
  assert.equal(await RawHub.upgradeStatus(srv.port, `/hub?id=${h.id}`), 404);
});

test('long polling after a stateful negotiate: no Ack or Sequence in the polls', async () => {
  const c = await lpConnect('negotiateVersion=1&useStatefulReconnect=true');
  await c.poll();
  await c.post('{"protocol":"json","version":1}' + RS);
  assert.equal((await c.poll()).body, '{}' + RS);
  await c.post('{"type":1,"invocationId":"1","target":"Add","arguments":[1,1]}' + RS);
  const texts = [];
  const r1 = await c.poll();
  assert.equal(r1.status, 200);
  texts.push(...r1.body.split(RS).filter(Boolean));
  // a poll held while a stateful Ack would be due (about 1 s), then ended by DELETE
  const held = c.poll();
  await sleep(1600);
  await request(srv.port, { method: 'DELETE', path: c.path });
  const r2 = await held;
  if (r2.status === 200) texts.push(...r2.body.split(RS).filter(Boolean));
  assert.ok(texts.includes('{"type":3,"invocationId":"1","result":2}'), JSON.stringify(texts));
  assert.deepEqual(texts.filter((t) => /"type":(8|9)\b/.test(t)), []);
});

// ---- CancelInvocation, StreamItem, Completion for ids the server does not stream ------------

test('CancelInvocation for an unknown id is ignored; the connection stays up', async () => {
  const h = await handshaken();
  try {
    h.sendRecord({ type: 5, invocationId: 'nope' });
    h.sendRecord({ type: 1, invocationId: '1', target: 'Add', arguments: [1, 2] });
    assert.deepEqual(await h.completion('1'), { type: 3, invocationId: '1', result: 3 });
    await sleep(100);
    assert.equal(h.closed, false);
    assert.deepEqual(h.records.filter((r) => r.type === 7 || (r.type === 3 && r.invocationId === 'nope')), []);
  } finally { h.close(); }
});

test('CancelInvocation for a running non-streaming invocation is ignored: it completes normally, once', async () => {
  const h = await handshaken();
  try {
    h.sendRecord({ type: 1, invocationId: 's1', target: 'Sleep', arguments: [300] });
    await sleep(50);
    h.sendRecord({ type: 5, invocationId: 's1' });
    assert.deepEqual(await h.completion('s1', { timeoutMs: 3000 }), { type: 3, invocationId: 's1', result: 'slept' });
    h.sendRecord({ type: 1, invocationId: '2', target: 'Add', arguments: [2, 2] });
    await h.completion('2');
    assert.equal(h.records.filter((r) => r.type === 3 && r.invocationId === 's1').length, 1);
    assert.equal(h.closed, false);
  } finally { h.close(); }
});

test('messagepack: CancelInvocation [5, {}, id] for an unknown id is ignored', async () => {
  const h = await RawMpHub.open(srv.port, '/hub');
  try {
    assert.deepEqual(await h.doHandshake(), {});
    h.send([5, {}, 'nope'], [2, {}, 'nostream', 1], [1, {}, '1', 'Add', [3, 4]]);
    assert.deepEqual(await h.completion('1'), [3, {}, '1', 3, 7]);
    assert.equal(h.closed, false);
    assert.deepEqual(h.records.filter((r) => r[0] === 7), []);
  } finally { h.close(); }
});

test('a StreamItem or a Completion for an unknown stream id is ignored; the connection stays up', async () => {
  const h = await handshaken();
  try {
    h.sendRecord({ type: 2, invocationId: 'ghost', item: 1 });
    h.sendRecord({ type: 2, invocationId: 'ghost', item: null });
    h.sendRecord({ type: 3, invocationId: 'ghost' });
    h.sendRecord({ type: 1, invocationId: '1', target: 'Add', arguments: [5, 6] });
    assert.deepEqual(await h.completion('1'), { type: 3, invocationId: '1', result: 11 });
    await sleep(100);
    assert.equal(h.closed, false);
    assert.deepEqual(h.records.filter((r) => r.type === 7), []);
  } finally { h.close(); }
});

// ---- stream ids in use --------------------------------------------------------------------------

test("an upload stream id reused while open -> \"Invocation ID '7' is already in use.\"; the first upload goes on", async () => {
  const h = await handshaken();
  try {
    h.sendRecord({ type: 1, invocationId: '1', target: 'Sum', arguments: [], streamIds: ['7'] });
    h.sendRecord({ type: 2, invocationId: '7', item: 1 });
    h.sendRecord({ type: 1, invocationId: '2', target: 'Sum', arguments: [], streamIds: ['7'] });
    assert.deepEqual(await h.completion('2'), { type: 3, invocationId: '2', error: "Invocation ID '7' is already in use." });
    h.sendRecord({ type: 2, invocationId: '7', item: 2 });
    h.sendRecord({ type: 2, invocationId: '7', item: 3 });
    h.sendRecord({ type: 3, invocationId: '7' });
    assert.deepEqual(await h.completion('1'), { type: 3, invocationId: '1', result: 6 });
    // closed, the id may be used again
    h.sendRecord({ type: 1, invocationId: '3', target: 'Sum', arguments: [], streamIds: ['7'] });
    h.sendRecord({ type: 2, invocationId: '7', item: 10 });
    h.sendRecord({ type: 3, invocationId: '7' });
    assert.deepEqual(await h.completion('3'), { type: 3, invocationId: '3', result: 10 });
    assert.equal(h.closed, false);
  } finally { h.close(); }
});

test("a StreamInvocation id reused while its stream runs -> \"Invocation ID 's' is already in use.\"", async () => {
  const h = await handshaken();
  try {
    h.sendRecord({ type: 4, invocationId: 's', target: 'Counter', arguments: [100, 20] });
    await h.next((r) => r.type === 2 && r.invocationId === 's', { what: 'a first StreamItem' });
    h.sendRecord({ type: 4, invocationId: 's', target: 'Counter', arguments: [3, 1] });
    const err = await h.next((r) => r.type === 3 && r.invocationId === 's', { what: "the error Completion for 's'" });
    assert.deepEqual(err, { type: 3, invocationId: 's', error: "Invocation ID 's' is already in use." });
    h.sendRecord({ type: 5, invocationId: 's' });
    h.sendRecord({ type: 1, invocationId: '1', target: 'Add', arguments: [1, 1] });
    await h.completion('1');
    // The first stream's items were 1, 2, 3, ... without a restart from the second invocation.
    const items = h.records.filter((r) => r.type === 2 && r.invocationId === 's').map((r) => r.item);
    assert.deepEqual(items, Array.from({ length: items.length }, (_, i) => i + 1));
  } finally { h.close(); }
});
