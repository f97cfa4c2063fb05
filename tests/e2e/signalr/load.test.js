'use strict';
// Broadcast fan-out: 200 official clients get the same ordered sequence; a client that never
// reads is closed as a slow consumer (hub output limits 1 MiB / 8 MiB) while the others get
// everything.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, request } = require('../lib/server');
const { connect, stopAll, until, rawTcpHubClient } = require('../lib/signalr');

test('200 clients connected at once receive the same 20 broadcasts, in order', async () => {
  const srv = await startServer({ scripts: ['signalr_load.lua'] });
  const conns = [];
  try {
    const seqs = [];
    const N = 200;
    for (let b = 0; b < N; b += 50) {
      const batch = await Promise.all(Array.from({ length: Math.min(50, N - b) }, (_, k) => {
        const got = [];
        seqs.push(got);
        return connect(srv.url('/hub'), { skipNegotiation: (b + k) % 4 === 3 }, (c) => {
          c.on('ReceiveEvent', (m) => got.push(m));
        });
      }));
      conns.push(...batch);
    }
    assert.equal(conns.length, N);
    assert.ok(conns.every((c) => c.state === 'Connected'));
    const nconn = JSON.parse((await request(srv.port, { path: '/connections' })).body).n;
    assert.equal(nconn, N);
    const r = JSON.parse((await request(srv.port, { path: '/seq/20' })).body);
    assert.deepEqual(r, { sent: 20 });
    await until(() => seqs.every((s) => s.length >= 20), 'all 200 clients to get 20 events', 15000, 25);
    const want = Array.from({ length: 20 }, (_, i) => i + 1);
    seqs.forEach((s, i) => {
      assert.deepEqual(s.map((m) => m.data.n), want, `client ${i} got the sequence in order`);
      assert.ok(s.every((m) => m.eventName === 'Seq'));
    });
    // every client saw the same bytes: the same timestamps for the same n
    const ts = seqs[0].map((m) => m.timestamp);
    seqs.forEach((s, i) => assert.deepEqual(s.map((m) => m.timestamp), ts, `client ${i} timestamps`));
  } finally { await stopAll(conns); await srv.stop(); }
});

test('a client that never reads is closed as a slow consumer; the others receive everything', async () => {
  const srv = await startServer({ scripts: ['signalr_load.lua'] });
  const conns = [];
  let slow;
  try {
    const got = [[], []];
    for (const g of got) {
      conns.push(await connect(srv.url('/hub'), {}, (c) => c.on('ReceiveEvent', (m) => g.push(m.data.i))));
    }
    slow = await rawTcpHubClient(srv.port, '/hub');
    slow.sock.pause(); // stop reading: kernel buffers fill, then the server's queue grows
    await until(async () => JSON.parse((await request(srv.port, { path: '/connections' })).body).n === 3, 'three connections');
    // 4000 x ~4.2 KB = ~17 MB to each client: past the 8 MiB hard limit plus the ~4 MB the
    // kernel socket buffers absorb for the paused client. Paced (20 events, then 10 ms) so that
    // the normal clients, both in this one Node process, keep up (~8 MB/s each).
    const COUNT = 4000;
    const r = await request(srv.port, { path: `/big?count=${COUNT}&size=4096&batch=20&pause=10`, timeoutMs: 30000 });
    assert.equal(r.status, 200, r.body);
    assert.equal(JSON.parse(r.body).sent, COUNT);
    try {
      await until(() => got.every((g) => g.length >= COUNT), `both normal clients to get ${COUNT} events`, 20000, 25);
    } catch (e) {
      e.message += `; normal clients got ${got.map((g) => g.length).join(' and ')} events (last ${got.map((g) => g[g.length - 1]).join(', ')}),` +
        ` states ${conns.map((c) => c.state).join(', ')}; slow client read ${slow.bytesRead()} bytes;` +
        ` server log tail:\n${srv.log().slice(-2500)}`;
      throw e;
    }
    const want = Array.from({ length: COUNT }, (_, i) => i + 1);
    got.forEach((g, k) => assert.deepEqual(g, want, `normal client ${k} got every event in order`));
    assert.ok(conns.every((c) => c.state === 'Connected'), 'the normal clients stay connected');
    assert.ok(await srv.waitForLog(/slow consumer/i, 3000), `the log mentions a slow consumer:\n${srv.log().slice(-3000)}`);
    // once it reads again, the slow client finds its connection ended
    slow.sock.resume();
    let timer;
    const ended = await Promise.race([slow.ended.then(() => true),
      new Promise((res) => { timer = setTimeout(() => res(false), 8000); })]);
    clearTimeout(timer);
    assert.ok(ended, 'the slow client connection was closed by the server');
    if (process.env.KR_E2E_DEBUG) console.log('slow client read', slow.bytesRead(), 'bytes');
    assert.ok(slow.bytesRead() < COUNT * 4096, `the slow client did not get everything (${slow.bytesRead()} bytes)`);
    await until(async () => JSON.parse((await request(srv.port, { path: '/connections' })).body).n === 2, 'two connections left');
  } finally {
    if (slow) slow.sock.destroy();
    await stopAll(conns);
    await srv.stop();
  }
});
