'use strict';
// The MessagePack hub protocol by hand (signalr-protocol.md §2, §3, §5, §7; checklist 7, 8, 32,
// 33, 38): a raw `ws` client sends the JSON handshake in a text frame, then VarInt-framed
// msgpack in binary frames (framing written in lib/rawmsgpack.js, bodies by @msgpack/msgpack).
// Also msgpack over Server-Sent Events (refused) and over long polling (binary POST bodies,
// octet-stream polls holding whole records).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { startServer, request, sleep } = require('../lib/server');
const { until, negotiate } = require('../lib/signalr');
const { RawMpHub, frame, varint, unframe, encode, decode } = require('../lib/rawmsgpack');

const SCRIPT = `
local hub = kr.hub("/hub", { protocols = { "json", "messagepack" }, poll_timeout_ms = 1000 })
local small = kr.hub("/small", { protocols = { "json", "messagepack" }, max_message_bytes = 1024 })
local pinging = kr.hub("/ping", { protocols = { "messagepack" }, keepalive_ms = 200 })
local function methods(h)
  h:on("Add", function(ctx, a, b) return a + b end)
  h:on("Back", function(ctx, v) return v end)
  h:on("Nothing", function(ctx) end)
end
methods(hub) methods(small) methods(pinging)
kr.map_route("GET", "/burst/{n:int}", function(req, res)
  for i = 1, req.params.n do hub:send_all("Burst", i, "payload-" .. i) end
  res:text("ok")
end)
`;

let srv;
before(async () => { srv = await startServer({ script: SCRIPT }); });
after(async () => { if (srv) await srv.stop(); });

const CLOSE_ERR = [7, 'Connection closed with an error.', true];
const HANDSHAKE = '{"protocol":"messagepack","version":1}\x1e';

async function handshaken(path = '/hub') {
  const h = await RawMpHub.open(srv.port, path);
  assert.deepEqual(await h.doHandshake(), {});
  return h;
}

// The Completion of the built-in Echo (a void method): kind 3 with nil, as .NET's.
function assertVoidCompletion(c, id) {
  assert.deepEqual(c, [3, {}, id, 3, null], `void Completion: ${JSON.stringify(c)}`);
}

// A server Invocation: [1, headers, nil, target, args] (5 elements) or with [] stream ids (6).
function assertPush(r, target, args) {
  assert.ok(Array.isArray(r) && (r.length === 5 || r.length === 6), `Invocation shape: ${JSON.stringify(r)}`);
  assert.deepEqual(r.slice(0, 5), [1, {}, null, target, args]);
  if (r.length === 6) assert.deepEqual(r[5], []);
}

// Waits until the server ended the connection; returns the Close record (if any was sent).
async function endedByServer(h, timeoutMs = 3000) {
  await h._wait(() => h.closed || h.records.some((r) => Array.isArray(r) && r[0] === 7), 'the server to end the connection', timeoutMs);
  return h.records.find((r) => Array.isArray(r) && r[0] === 7);
}

// Another client, connected before each error case, must keep working after it.
async function stillWorks(other, id) {
  other.send([1, {}, id, 'Add', [id.length, 1]]);
  assert.deepEqual(await other.completion(id), [3, {}, id, 3, id.length + 1]);
  assert.equal(other.closed, false);
}

test('handshake: JSON in a text frame; the reply {}\\x1e comes first, in a binary frame', async () => {
  const h = await RawMpHub.open(srv.port, '/hub');
  try {
    h.sendText(HANDSHAKE);
    await h._wait(() => h.frames.length > 0, 'the first frame');
    assert.equal(h.frames[0].binary, true, 'msgpack connection: binary frames');
    assert.equal(h.frames[0].buf.subarray(0, 3).toString('hex'), '7b7d1e', `first bytes: ${h.frames[0].buf.toString('hex')}`);
    assert.equal(h.handshake, '{}');
    // nothing else before our first message
    h.send([1, {}, '1', 'Add', [2, 3]]);
    assert.deepEqual(await h.completion('1'), [3, {}, '1', 3, 5]);
    assert.ok(h.frames.every((f) => f.binary), 'every frame binary');
  } finally { h.close(); }
});

test('Ping 02 91 06 from the client is accepted; the server pings with exactly 02 91 06', async () => {
  const h = await handshaken('/ping');
  try {
    h.sendBinary(Buffer.from([0x02, 0x91, 0x06]));
    h.sendBinary(Buffer.from([0x02, 0x91, 0x06, 0x02, 0x91, 0x06]));
    h.send([1, {}, '1', 'Add', [1, 1]]);
    assert.deepEqual(await h.completion('1'), [3, {}, '1', 3, 2]);
    await h.next((r) => Array.isArray(r) && r[0] === 6, { what: 'a server Ping', timeoutMs: 2000 });
    const i = h.records.findIndex((r) => Array.isArray(r) && r[0] === 6);
    assert.deepEqual(h.records[i], [6]);
    assert.equal(h.raw[i].toString('hex'), '029106');
    assert.equal(h.closed, false);
  } finally { h.close(); }
});

test('Echo with a JS 5-element Invocation and a .NET 6-element Invocation', async () => {
  const h = await handshaken();
  try {
    h.send([1, {}, '1', 'Echo', ['five']]);
    assertVoidCompletion(await h.completion('1'), '1');
    h.send([1, {}, '2', 'Echo', ['six'], []]);
    assertVoidCompletion(await h.completion('2'), '2');
    const echoes = h.invocationsOf('ReceiveEcho');
    assert.equal(echoes.length, 2);
    assertPush(echoes[0], 'ReceiveEcho', ['five']);
    assertPush(echoes[1], 'ReceiveEcho', ['six']);
    // fire-and-forget: nil id (5 and 6 elements): processed, never answered
    h.send([1, {}, null, 'Echo', ['ff5']], [1, {}, null, 'Echo', ['ff6'], []]);
    h.send([1, {}, '3', 'Add', [1, 2]]);
    assert.deepEqual(await h.completion('3'), [3, {}, '3', 3, 3]);
    await h._wait(() => h.invocationsOf('ReceiveEcho').length === 4, 'four ReceiveEcho');
    assert.deepEqual(h.invocationsOf('ReceiveEcho').map((r) => r[4][0]), ['five', 'six', 'ff5', 'ff6']);
    assert.deepEqual(h.records.filter((r) => r[0] === 3).map((r) => r[2]), ['1', '2', '3'], 'no Completion for nil ids');
  } finally { h.close(); }
});

test('headers on an Invocation are accepted; results of several types come back as msgpack', async () => {
  const h = await handshaken();
  try {
    h.send([1, { k: 'v', a: 'b' }, '1', 'Add', [40, 2]]);
    assert.deepEqual(await h.completion('1'), [3, {}, '1', 3, 42]);
    const values = [0, -1, 127, 128, 65536, -40000, 2 ** 40, 1.5, 'text', 'ünï', true, false, [1, 'a', [2]], { x: 1, y: 'z' }];
    values.forEach((v, i) => h.send([1, {}, `v${i}`, 'Back', [v]]));
    for (let i = 0; i < values.length; i++) {
      assert.deepEqual(await h.completion(`v${i}`), [3, {}, `v${i}`, 3, values[i]], `Back(${JSON.stringify(values[i])})`);
    }
    h.send([1, {}, 'n', 'Nothing', []]);
    assertVoidCompletion(await h.completion('n'), 'n');
    h.send([1, {}, 'u', 'Nope', []]);
    assert.deepEqual(await h.completion('u'), [3, {}, 'u', 1, "Unknown hub method 'Nope'"]);
    // an unknown message type is ignored; the connection stays up
    h.send([99, {}, 'x'], [1, {}, 'w', 'Add', [0, 0]]);
    assert.deepEqual(await h.completion('w'), [3, {}, 'w', 3, 0]);
    assert.equal(h.records.filter((r) => r[0] === 7).length, 0);
  } finally { h.close(); }
});

test('two records in one frame, and one record split over two frames (inside the VarInt too)', async () => {
  const h = await handshaken();
  try {
    h.send([1, {}, '1', 'Add', [1, 2]], [1, {}, '2', 'Add', [3, 4]]);
    assert.deepEqual(await h.completion('1'), [3, {}, '1', 3, 3]);
    assert.deepEqual(await h.completion('2'), [3, {}, '2', 3, 7]);
    // split inside the body
    const a = frame([1, {}, '3', 'Echo', ['split']]);
    h.sendBinary(a.subarray(0, 7));
    await sleep(50);
    h.sendBinary(a.subarray(7));
    assertVoidCompletion(await h.completion('3'), '3');
    // a 300-byte record has a 2-byte VarInt: split between its two bytes
    const long = 'L'.repeat(280);
    const b = frame([1, {}, '4', 'Back', [long]]);
    assert.ok(b[0] & 0x80, 'a two-byte prefix');
    h.sendBinary(b.subarray(0, 1));
    await sleep(50);
    h.sendBinary(b.subarray(1, 2));
    await sleep(50);
    h.sendBinary(b.subarray(2));
    assert.deepEqual(await h.completion('4'), [3, {}, '4', 3, long]);
    // three records over two frames, the cut inside the third
    const c = Buffer.concat([frame([1, {}, '5', 'Add', [5, 5]]), frame([1, {}, '6', 'Add', [6, 6]]), frame([1, {}, '7', 'Add', [7, 7]])]);
    const cut = c.length - 4;
    h.sendBinary(c.subarray(0, cut));
    await sleep(50);
    h.sendBinary(c.subarray(cut));
    assert.deepEqual(await h.completion('7'), [3, {}, '7', 3, 14]);
    assert.deepEqual(h.records.filter((r) => r[0] === 3).map((r) => r[2]), ['1', '2', '3', '4', '5', '6', '7']);
  } finally { h.close(); }
});

test('the handshake (text frame) followed at once by a binary message, without waiting for the reply', async () => {
  // The JS client sends the handshake in a text frame and everything after in binary frames,
  // right away (no wait for the reply).
  const h = await RawMpHub.open(srv.port, '/hub');
  try {
    h.sendText(HANDSHAKE);
    h.send([1, {}, '1', 'Add', [20, 22]]);
    assert.deepEqual(await h.completion('1'), [3, {}, '1', 3, 42]);
    assert.equal(h.handshake, '{}');
  } finally { h.close(); }
});

const BAD = [
  // a VarInt prefix of 6 bytes: the 5th byte has its high bit set (JS and .NET: at most 5 bytes, the 5th <= 7)
  ['a broken VarInt prefix (6 bytes)', Buffer.from([0x81, 0x80, 0x80, 0x80, 0x80, 0x00, 0x91, 0x06])],
  // 0xc1 is never used in msgpack
  ['a body that is not msgpack', Buffer.from([0x03, 0xc1, 0xc1, 0xc1])],
  ['an Invocation with a non-string target', frame([1, {}, '1', 5, []])],
  ['an Invocation whose arguments are not an array', frame([1, {}, '1', 'Add', 5])],
  // [1, {}, "1", str32 of 0xffffffff bytes ...] in a 12-byte body
  ['a str32 that declares 4 GB in a small frame', frame(Buffer.from([0x95, 0x01, 0x80, 0xa1, 0x31, 0xdb, 0xff, 0xff, 0xff, 0xff, 0x41, 0x42]))],
  ['a message that is not an array', frame({ type: 1 })],
  ['an array without a type', frame([])],
];

for (const [name, bytes] of BAD) {
  test(`${name}: Close [7, "Connection closed with an error.", true], the socket closes, another client keeps working`, async () => {
    const other = await handshaken();
    const h = await handshaken();
    try {
      h.send([1, {}, 'ok', 'Add', [1, 1]]);
      assert.deepEqual(await h.completion('ok'), [3, {}, 'ok', 3, 2]);
      h.sendBinary(bytes);
      const close = await endedByServer(h);
      assert.deepEqual(close, CLOSE_ERR, `Close record: ${JSON.stringify(close)} (bytes sent ${bytes.toString('hex')})`);
      await h.waitClosed(3000);
      assert.equal(h.records.filter((r) => r[0] === 3).length, 1, 'nothing was invoked');
      await stillWorks(other, 'after');
    } finally { h.close(); other.close(); }
  });
}

test('a message larger than max_message_bytes (1024): Close with error; 900 bytes are fine', async () => {
  const other = await handshaken('/small');
  const h = await handshaken('/small');
  try {
    h.send([1, {}, '1', 'Back', ['s'.repeat(900)]]);
    assert.equal((await h.completion('1'))[4].length, 900);
    // 2,000 bytes sent in two frames, so that no single frame is over the limit
    const big = frame([1, {}, '2', 'Back', ['s'.repeat(2000)]]);
    h.sendBinary(big.subarray(0, 900));
    await sleep(30);
    h.sendBinary(big.subarray(900));
    const close = await endedByServer(h);
    assert.deepEqual(close, CLOSE_ERR);
    await h.waitClosed(3000);
    assert.equal(h.records.filter((r) => r[0] === 3 && r[2] === '2').length, 0);
    await stillWorks(other, 'x');
  } finally { h.close(); other.close(); }
});

test('a VarInt that declares 100 KB (max_message_bytes 1024): Close once more than the limit is buffered, without waiting for the rest', async () => {
  const other = await handshaken('/small');
  const h = await handshaken('/small');
  try {
    const body = Buffer.from(encode([1, {}, '1', 'Back', ['b'.repeat(100000)]]));
    const whole = Buffer.concat([varint(body.length), body]);
    h.sendBinary(whole.subarray(0, 700));
    await sleep(30);
    h.sendBinary(whole.subarray(700, 1400));
    const close = await endedByServer(h);
    assert.deepEqual(close, CLOSE_ERR);
    await h.waitClosed(3000);
    await stillWorks(other, 'y');
  } finally { h.close(); other.close(); }
});

test('a 1,000-push burst: every record arrives, each binary frame holds whole records only', async () => {
  const h = await handshaken();
  try {
    const r = await request(srv.port, { path: '/burst/1000' });
    assert.equal(r.status, 200);
    await h._wait(() => h.invocationsOf('Burst').length === 1000, '1000 Burst records', 5000);
    h.invocationsOf('Burst').forEach((x, i) => assertPush(x, 'Burst', [i + 1, `payload-${i + 1}`]));
    // Frames after the first (which starts with the handshake reply) each parse to whole records.
    for (const f of h.frames.slice(1)) {
      assert.equal(f.binary, true);
      const u = unframe(f.buf);
      assert.equal(u.rest.length, 0, `a frame with a partial record: ${f.buf.subarray(0, 40).toString('hex')}...`);
      assert.equal(u.error, undefined);
    }
  } finally { h.close(); }
});

// ---- other transports -------------------------------------------------------------------------

function openEventStream(port, path) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers: { Accept: 'text/event-stream' } }, (res) => {
      const chunks = [];
      let ended = false;
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => { ended = true; });
      res.on('close', () => { ended = true; });
      resolve({ res, text: () => Buffer.concat(chunks).toString(), ended: () => ended, close: () => req.destroy() });
    });
    req.on('error', reject);
  });
}

test('messagepack over Server-Sent Events: the handshake error about the Binary transfer format, then the stream ends', async () => {
  const n = await negotiate(srv.port, '/hub');
  const token = n.json.connectionToken;
  const s = await openEventStream(srv.port, `/hub?id=${token}`);
  try {
    assert.equal(s.res.statusCode, 200);
    await until(() => s.text().startsWith(':'), 'the opening comment');
    const post = await request(srv.port, { method: 'POST', path: `/hub?id=${token}`, body: HANDSHAKE,
      headers: { 'Content-Type': 'text/plain;charset=UTF-8' } });
    assert.equal(post.status, 200);
    const expected = '{"error":"Cannot use the \'messagepack\' protocol on the current transport. ' +
      'The transport does not support \'Binary\' transfer format."}\x1e';
    await until(() => s.text().includes('data: ' + expected + '\r\n\r\n'), `the error event; got ${JSON.stringify(s.text())}`);
    await until(() => s.ended(), 'the event stream to end', 3000);
  } finally { s.close(); }
});

test('long polling with messagepack: varint-framed binary POSTs; polls answer octet-stream with whole records', async () => {
  const n = await negotiate(srv.port, '/hub');
  const token = n.json.connectionToken;
  const poll = () => request(srv.port, { path: `/hub?id=${token}&_=${Date.now()}` });
  const first = await poll();
  assert.equal(first.status, 200);
  assert.equal(first.bodyBuf.length, 0);
  // The handshake POST is text/plain, later ones application/octet-stream (as the JS client does).
  const hs = await request(srv.port, { method: 'POST', path: `/hub?id=${token}`, body: HANDSHAKE,
    headers: { 'Content-Type': 'text/plain;charset=UTF-8' } });
  assert.equal(hs.status, 200);
  const reply = await poll();
  assert.equal(reply.status, 200);
  assert.equal(reply.bodyBuf.toString('hex'), '7b7d1e', 'the handshake reply alone');
  const postBin = (buf) => request(srv.port, { method: 'POST', path: `/hub?id=${token}`, body: buf,
    headers: { 'Content-Type': 'application/octet-stream' } });
  // two records in one POST body
  const body = Buffer.concat([frame([1, {}, '1', 'Echo', ['over lp']]), frame([1, {}, '2', 'Add', [2, 3]])]);
  const held = poll();
  await sleep(50);
  assert.equal((await postBin(body)).status, 200);
  const records = [];
  let r = await held;
  for (let i = 0; i < 5; i++) {
    assert.equal(r.status, 200);
    if (r.bodyBuf.length > 0) {
      assert.match(String(r.headers['content-type']), /^application\/octet-stream/);
      const u = unframe(r.bodyBuf);
      assert.equal(u.rest.length, 0, `whole records only: ${r.bodyBuf.toString('hex')}`);
      records.push(...u.bodies.map((b) => decode(b)));
    }
    if (records.filter((x) => x[0] === 3).length >= 2) break;
    r = await poll();
  }
  const echo = records.find((x) => x[0] === 1);
  assertPush(echo, 'ReceiveEcho', ['over lp']);
  assertVoidCompletion(records.find((x) => x[0] === 3 && x[2] === '1'), '1');
  assert.deepEqual(records.find((x) => x[0] === 3 && x[2] === '2'), [3, {}, '2', 3, 5]);
  // A Close from the client ends it: the next poll is 204.
  assert.equal((await postBin(frame([7, null]))).status, 200);
  let end = await poll();
  if (end.status === 200) end = await poll(); // a Close record may be delivered first
  assert.equal(end.status, 204);
});
