'use strict';
// The JSON hub protocol by hand with `ws` (signalr-protocol.md §2-§4, §7, checklist 31-38):
// handshake replies and errors, framing, protocol errors, message size.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, request, sleep } = require('../lib/server');
const { RawHub, RS, connect, until } = require('../lib/signalr');

let srv;
before(async () => { srv = await startServer({ scripts: ['signalr.lua'] }); });
after(async () => { if (srv) await srv.stop(); });

const CLOSE_ERR = { type: 7, error: 'Connection closed with an error.', allowReconnect: true };

async function handshaken(path = '/hub', opts = { negotiate: true }) {
  const h = await RawHub.open(srv.port, path, opts);
  assert.deepEqual(await h.handshake(), {});
  return h;
}

// Waits until the server ends the connection: a Close record or the socket closing.
async function endedByServer(h, timeoutMs = 3000) {
  await h._wait(() => h.closed || h.records.some((r) => r.type === 7), 'the server to end the connection', timeoutMs);
  return h.records.find((r) => r.type === 7);
}

test('handshake: the reply is exactly {}\\x1e, first, in a text frame', async () => {
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true });
  try {
    h.send('{"protocol":"json","version":1}' + RS);
    await h.next(() => true, { what: 'the handshake reply' });
    assert.equal(h.frames[0].binary, false, 'a text frame');
    assert.ok(h.frames[0].text.startsWith('{}' + RS), `first frame: ${JSON.stringify(h.frames[0].text)}`);
    assert.equal(h.texts[0], '{}');
  } finally { h.close(); }
});

test('handshake: unknown properties are ignored; properties in any order', async () => {
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true });
  try {
    h.send('{"version":1,"extra":{"a":[1,2]},"protocol":"json"}' + RS);
    await h.next(() => true);
    assert.deepEqual(h.records[0], {});
  } finally { h.close(); }
});

test('handshake: bad JSON {"protocol": -> handshake error record, then close', async () => {
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true });
  try {
    h.send('{"protocol":' + RS);
    await h.next(() => true, { what: 'the handshake error' });
    assert.equal(typeof h.records[0].error, 'string', `record: ${h.texts[0]}`);
    assert.ok(h.records[0].error.length > 0);
    assert.deepEqual(Object.keys(h.records[0]), ['error']);
    await h.waitClosed(3000);
  } finally { h.close(); }
});

test('handshake: unknown protocol -> {"error":"The protocol \'foo\' is not supported."}, then close', async () => {
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true });
  try {
    const r = await h.handshake({ protocol: 'foo', version: 1 });
    assert.deepEqual(r, { error: "The protocol 'foo' is not supported." });
    assert.equal(h.texts[0], '{"error":"The protocol \'foo\' is not supported."}');
    await h.waitClosed(3000);
  } finally { h.close(); }
});

test('handshake: messagepack is not enabled on this hub -> error', async () => {
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true });
  try {
    const r = await h.handshake({ protocol: 'messagepack', version: 1 });
    assert.equal(typeof r.error, 'string', JSON.stringify(r));
    await h.waitClosed(3000);
  } finally { h.close(); }
});

test('handshake: version 3 is rejected', async () => {
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true });
  try {
    const r = await h.handshake({ protocol: 'json', version: 3 });
    assert.deepEqual(r, { error: "The server does not support version 3 of the 'json' protocol." });
    await h.waitClosed(3000);
  } finally { h.close(); }
});

test('handshake: version 2 is accepted', async () => {
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true });
  try {
    assert.deepEqual(await h.handshake({ protocol: 'json', version: 2 }), {});
    h.sendRecord({ type: 1, invocationId: '1', target: 'Add', arguments: [2, 3] });
    assert.equal((await h.completion('1')).result, 5);
  } finally { h.close(); }
});

test('handshake: a missing version is an error', async () => {
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true });
  try {
    h.send('{"protocol":"json"}' + RS);
    await h.next(() => true);
    assert.equal(typeof h.records[0].error, 'string', h.texts[0]);
    await h.waitClosed(3000);
  } finally { h.close(); }
});

test('handshake: a hub message before the handshake -> handshake error, then close', async () => {
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true });
  try {
    h.send('{"type":1,"invocationId":"1","target":"Echo","arguments":["x"]}' + RS);
    await h.next(() => true, { what: 'the handshake error' });
    assert.equal(typeof h.records[0].error, 'string', h.texts[0]);
    await h.waitClosed(3000);
    assert.equal(h.invocationsOf('ReceiveEcho').length, 0);
  } finally { h.close(); }
});

test('handshake: split over two frames is parsed', async () => {
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true });
  try {
    h.send('{"protocol":"js');
    await sleep(50);
    h.send('on","version":1}' + RS);
    await h.next(() => true);
    assert.deepEqual(h.records[0], {});
  } finally { h.close(); }
});

test('handshake: the handshake and a first invocation in one frame are both processed', async () => {
  const h = await RawHub.open(srv.port, '/hub', { negotiate: true });
  try {
    h.send('{"protocol":"json","version":1}' + RS + '{"type":1,"invocationId":"0","target":"Add","arguments":[1,2]}' + RS);
    assert.equal((await h.completion('0')).result, 3);
    assert.deepEqual(h.records[0], {});
  } finally { h.close(); }
});

test('two records in one frame: both processed (two ReceiveEcho)', async () => {
  const h = await handshaken();
  try {
    h.send('{"type":1,"target":"Echo","arguments":["one"]}' + RS + '{"type":1,"target":"Echo","arguments":["two"]}' + RS);
    await h._wait(() => h.invocationsOf('ReceiveEcho').length === 2, 'two ReceiveEcho', 3000);
    assert.deepEqual(h.invocationsOf('ReceiveEcho').map((r) => r.arguments), [['one'], ['two']]);
    assert.deepEqual(h.invocationsOf('ReceiveEcho')[0], { type: 1, target: 'ReceiveEcho', arguments: ['one'] });
  } finally { h.close(); }
});

test('one record split over two frames: processed', async () => {
  const h = await handshaken();
  try {
    h.send('{"type":1,"invocationId":"5","tar');
    await sleep(50);
    h.send('get":"Echo","arguments":["split"]}' + RS);
    const c = await h.completion('5');
    assert.ok(c.result === null || !('result' in c), JSON.stringify(c));
    assert.ok(!('error' in c));
    assert.deepEqual(h.invocationsOf('ReceiveEcho').map((r) => r.arguments), [['split']]);
  } finally { h.close(); }
});

test('send without invocationId: processed, and never answered with a Completion', async () => {
  const h = await handshaken();
  try {
    h.send('{"type":1,"target":"Echo","arguments":["ff"]}' + RS);
    h.send('{"type":1,"target":"Nope","arguments":[]}' + RS);
    h.send('{"type":1,"target":"Add","arguments":["boom",1]}' + RS);
    h.send('{"type":1,"invocationId":"9","target":"Add","arguments":[4,5]}' + RS);
    assert.equal((await h.completion('9')).result, 9);
    await sleep(50);
    const completions = h.records.filter((r) => r.type === 3);
    assert.deepEqual(completions, [{ type: 3, invocationId: '9', result: 9 }]);
    assert.equal(h.invocationsOf('ReceiveEcho').length, 1);
  } finally { h.close(); }
});

test('Completion shapes: result, void result, error', async () => {
  const h = await handshaken();
  try {
    h.sendRecord({ type: 1, invocationId: 'a1', target: 'Add', arguments: [1, 2] });
    h.sendRecord({ type: 1, invocationId: 'a2', target: 'Nothing', arguments: [] });
    h.sendRecord({ type: 1, invocationId: 'a3', target: 'Nope', arguments: [] });
    assert.deepEqual(await h.completion('a1'), { type: 3, invocationId: 'a1', result: 3 });
    const v = await h.completion('a2');
    assert.ok(JSON.stringify(v) === '{"type":3,"invocationId":"a2","result":null}' ||
      JSON.stringify(v) === '{"type":3,"invocationId":"a2"}', JSON.stringify(v));
    assert.deepEqual(await h.completion('a3'), { type: 3, invocationId: 'a3', error: "Unknown hub method 'Nope'" });
  } finally { h.close(); }
});

test('properties in any order; headers accepted; unknown properties skipped', async () => {
  const h = await handshaken();
  try {
    h.send('{"arguments":[7,8],"invocationId":"o1","target":"Add","type":1}' + RS);
    h.send('{"type":1,"invocationId":"o2","target":"Add","arguments":[1,1],"headers":{"k":"v"},"whatever":[{"x":1}]}' + RS);
    assert.equal((await h.completion('o1')).result, 15);
    assert.equal((await h.completion('o2')).result, 2);
  } finally { h.close(); }
});

test('type 99 is ignored and the connection stays up', async () => {
  const h = await handshaken();
  try {
    h.send('{"type":99,"payload":{"a":1}}' + RS);
    h.sendRecord({ type: 1, invocationId: '1', target: 'Add', arguments: [1, 2] });
    assert.equal((await h.completion('1')).result, 3);
    assert.equal(h.closed, false);
    assert.equal(h.records.filter((r) => r.type === 7).length, 0);
  } finally { h.close(); }
});

test('a Ping from the client is accepted silently', async () => {
  const h = await handshaken();
  try {
    h.send('{"type":6}' + RS + '{"type":6}' + RS);
    h.sendRecord({ type: 1, invocationId: '1', target: 'Add', arguments: [0, 1] });
    assert.equal((await h.completion('1')).result, 1);
    assert.equal(h.closed, false);
  } finally { h.close(); }
});

test('a client Close {"type":7}: the server closes the socket, on_disconnected runs without error', async () => {
  const h = await handshaken('/hub', { negotiate: true });
  try {
    h.sendRecord({ type: 1, invocationId: '1', target: 'WhoAmI', arguments: [] });
    const id = (await h.completion('1')).result;
    h.send('{"type":7}' + RS);
    await h.waitClosed(3000);
    const d = await until(async () => {
      const x = JSON.parse((await request(srv.port, { path: `/disconnected/${encodeURIComponent(id)}` })).body);
      return x.seen ? x : null;
    }, 'on_disconnected');
    assert.deepEqual(d, { seen: true });
  } finally { h.close(); }
});

test('malformed record after the handshake ({"type":1,"target":5}) -> Close "Connection closed with an error.", then close', async () => {
  const h = await handshaken();
  try {
    h.send('{"type":1,"target":5}' + RS);
    const close = await h.next((r) => r.type === 7, { what: 'a Close message' });
    assert.deepEqual(close, CLOSE_ERR);
    await h.waitClosed(3000);
  } finally { h.close(); }
});

test('invalid JSON after the handshake -> Close with error, then close', async () => {
  const h = await handshaken();
  try {
    h.send('{"type":1,' + RS);
    const close = await h.next((r) => r.type === 7, { what: 'a Close message' });
    assert.deepEqual(close, CLOSE_ERR);
    await h.waitClosed(3000);
  } finally { h.close(); }
});

test('an Invocation without arguments -> Close with error', async () => {
  const h = await handshaken();
  try {
    h.send('{"type":1,"invocationId":"1","target":"Echo"}' + RS);
    const close = await h.next((r) => r.type === 7, { what: 'a Close message' });
    assert.deepEqual(close, CLOSE_ERR);
    await h.waitClosed(3000);
  } finally { h.close(); }
});

test('a binary frame on a JSON connection: the connection is closed', async () => {
  const h = await handshaken();
  try {
    h.send(Buffer.from('{"type":1,"invocationId":"1","target":"Add","arguments":[1,2]}' + RS), { binary: true });
    await endedByServer(h);
    assert.equal(h.records.filter((r) => r.type === 3).length, 0, 'the binary record was not processed');
    await h.waitClosed(3000);
  } finally { h.close(); }
});

test('invalid UTF-8 in a text frame: WebSocket close code 1007', async () => {
  const h = await handshaken();
  try {
    h.send(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d, 0x1e]), { binary: false });
    const code = await h.waitClosed(3000);
    assert.equal(code, 1007);
  } finally { h.close(); }
});

test('an oversized message (40 KB argument, default max 32 KB): official client onclose "Server returned an error on close: Connection closed with an error."', async () => {
  let closedWith;
  const conn = await connect(srv.url('/hub'), {}, (c) => c.onclose((e) => { closedWith = e ? e.message : 'no error'; }));
  try {
    const big = 'x'.repeat(40 * 1024);
    const inv = conn.invoke('Echo', big).then(() => 'resolved', (e) => e.message);
    await until(() => closedWith !== undefined, 'onclose', 5000);
    assert.equal(closedWith, 'Server returned an error on close: Connection closed with an error.');
    const r = await inv;
    assert.notEqual(r, 'resolved');
  } finally { await conn.stop(); }
});

test('raw: an oversized message -> Close with error; one under the limit is fine', async () => {
  const h = await handshaken();
  try {
    // a 32,000-byte record is accepted (the limit is 32,768; the exact boundary is not tested)
    const head = '{"type":1,"invocationId":"1","target":"Echo","arguments":["';
    const tail = '"]}';
    const fill = 'y'.repeat(32000 - head.length - tail.length);
    h.send(head + fill + tail + RS);
    const c = await h.completion('1', { timeoutMs: 3000 });
    assert.ok(!('error' in c), JSON.stringify(c).slice(0, 200));
    assert.equal(h.invocationsOf('ReceiveEcho')[0].arguments[0].length, fill.length);
    // 33,000 bytes, sent in two frames so no single frame is over the limit
    const big = head.replace('"1"', '"2"') + fill + 'y'.repeat(1000) + tail + RS;
    h.send(big.slice(0, 20000));
    h.send(big.slice(20000));
    const close = await h.next((r) => r.type === 7, { what: 'a Close message' });
    assert.deepEqual(close, CLOSE_ERR);
    await h.waitClosed(3000);
  } finally { h.close(); }
});

test('max_message_bytes = 1024: a 2 KB message closes with error, a 900-byte one is fine', async () => {
  const h = await handshaken('/small');
  try {
    h.sendRecord({ type: 1, invocationId: '1', target: 'Back', arguments: ['s'.repeat(900)] });
    assert.equal((await h.completion('1')).result.length, 900);
    h.sendRecord({ type: 1, invocationId: '2', target: 'Back', arguments: ['s'.repeat(2048)] });
    const close = await h.next((r) => r.type === 7, { what: 'a Close message' });
    assert.deepEqual(close, CLOSE_ERR);
    await h.waitClosed(3000);
    assert.equal(h.records.filter((r) => r.type === 3 && r.invocationId === '2').length, 0);
  } finally { h.close(); }
});

test('max_message_bytes = 1024: a handshake larger than the limit is refused', async () => {
  const h = await RawHub.open(srv.port, '/small', { negotiate: true });
  try {
    h.send(JSON.stringify({ protocol: 'json', version: 1, pad: 'p'.repeat(2048) }) + RS);
    await h.next(() => true, { what: 'the handshake error' });
    assert.equal(typeof h.records[0].error, 'string', h.texts[0]);
    await h.waitClosed(3000);
  } finally { h.close(); }
});

test('a 1,000-push burst: every record arrives, none split across frames', async () => {
  const h = await handshaken();
  try {
    const r = await request(srv.port, { path: '/burst/1000' });
    assert.equal(r.status, 200);
    await h._wait(() => h.invocationsOf('Burst').length === 1000, '1000 Burst records', 5000);
    assert.deepEqual(h.invocationsOf('Burst').map((x) => x.arguments[0]), Array.from({ length: 1000 }, (_, i) => i + 1));
    assert.deepEqual(h.splitFrames(), [], 'every text frame ends with 0x1E');
    assert.equal(h.frames.filter((f) => f.binary).length, 0, 'JSON goes in text frames');
  } finally { h.close(); }
});

test('skipNegotiation raw: an upgrade without id works and the connection has an id', async () => {
  const h = await RawHub.open(srv.port, '/hub');
  try {
    assert.deepEqual(await h.handshake(), {});
    h.sendRecord({ type: 1, invocationId: '1', target: 'WhoAmI', arguments: [] });
    const c = await h.completion('1');
    assert.equal(typeof c.result, 'string');
    assert.ok(c.result.length > 0);
  } finally { h.close(); }
});

test('negotiated connection: the connectionId (public) is not accepted in place of the token', async () => {
  const neg = (await request(srv.port, { method: 'POST', path: '/hub/negotiate?negotiateVersion=1', body: '' }));
  const j = JSON.parse(neg.body);
  const status = await RawHub.upgradeStatus(srv.port, `/hub?id=${j.connectionId}`);
  assert.equal(status, 404);
  // the token still works afterwards
  const h = await RawHub.open(srv.port, '/hub', { id: j.connectionToken });
  try {
    assert.deepEqual(await h.handshake(), {});
  } finally { h.close(); }
});

test('a protocol error: on_disconnected gets an error; the disconnect is logged at Warning', async () => {
  const h = await handshaken('/hub', { negotiate: true });
  try {
    const id = h.negotiated.connectionId;
    h.send('{"type":1,"target":5}' + RS);
    await h.next((r) => r.type === 7, { what: 'a Close message' });
    await h.waitClosed(3000);
    const d = await until(async () => {
      const x = JSON.parse((await request(srv.port, { path: `/disconnected/${encodeURIComponent(id)}` })).body);
      return x.seen ? x : null;
    }, 'on_disconnected');
    assert.equal(typeof d.err, 'string', `on_disconnected err: ${JSON.stringify(d)}`);
    assert.ok(d.err.length > 0);
    const line = () => srv.log().split('\n').find((l) => l.includes(id) && /disconnect/i.test(l));
    await until(() => line(), `a disconnect log line for ${id}`);
    assert.match(line(), /\[Warning\]/, line());
  } finally { h.close(); }
});

test('connect and a clean disconnect are logged at Information with the connection id', async () => {
  const conn = await connect(srv.url('/hub'));
  const id = conn.connectionId;
  const lines = () => srv.log().split('\n').filter((l) => l.includes(id));
  await until(() => lines().some((l) => /\bconnected\b/i.test(l)), `a connect log line for ${id}`);
  assert.match(lines().find((l) => /\bconnected\b/i.test(l)), /\[Information\]/);
  await conn.stop();
  await until(() => lines().some((l) => /disconnected/i.test(l)), `a disconnect log line for ${id}`);
  assert.match(lines().find((l) => /disconnected/i.test(l)), /\[Information\]/);
});
