'use strict';
// Hub methods written in Lua (hub:on): results, errors with ASP.NET Core's texts, send()
// (fire-and-forget), concurrency between connections and ordering within one connection
// (lua-api.md §4, signalr-protocol.md §4, §7, §8 MaximumParallelInvocationsPerClient = 1).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer } = require('../lib/server');
const { connect, stopAll, collect, until } = require('../lib/signalr');

let srv;
before(async () => { srv = await startServer({ scripts: ['signalr.lua'] }); });
after(async () => { if (srv) await srv.stop(); });

const GENERIC = "An unexpected error occurred invoking 'Add' on the server.";
const BADARGS = "Failed to invoke 'Add' due to an error on the server.";

async function rejection(p) {
  try {
    const v = await p;
    return { resolved: v };
  } catch (e) {
    return e;
  }
}

test('hub:on: Add(1, 2) resolves 3; the name is case-insensitive', async () => {
  const conn = await connect(srv.url('/hub'));
  try {
    assert.equal(await conn.invoke('Add', 1, 2), 3);
    assert.equal(await conn.invoke('add', 40, 2), 42);
    assert.equal(await conn.invoke('ADD', 1.5, 2.25), 3.75);
    assert.equal(await conn.invoke('Add', -5, 2), -3);
  } finally { await conn.stop(); }
});

test('hub:on: a returned table arrives as a JSON object, keys as written', async () => {
  const conn = await connect(srv.url('/hub'));
  try {
    assert.deepEqual(await conn.invoke('Obj'), { Title: 'x', n: 1, list: [1, 2, 3] });
  } finally { await conn.stop(); }
});

test('hub:on: returning nothing resolves null', async () => {
  const conn = await connect(srv.url('/hub'));
  try {
    const r = await conn.invoke('Nothing');
    assert.ok(r === null || r === undefined, `result ${JSON.stringify(r)}`);
  } finally { await conn.stop(); }
});

test('hub:on: error("boom") rejects with the generic text, the connection stays up', async () => {
  const conn = await connect(srv.url('/hub'));
  try {
    const e = await rejection(conn.invoke('Add', 'boom', 1));
    assert.ok(e instanceof Error, `rejected: ${JSON.stringify(e)}`);
    assert.equal(e.message, GENERIC);
    assert.ok(!e.message.includes('boom'), 'no details without detailed_errors');
    assert.equal(conn.state, 'Connected');
    assert.equal(await conn.invoke('Add', 1, 2), 3);
  } finally { await conn.stop(); }
});

test('hub:on: a Lua runtime error (arithmetic on a table) also gives the generic text', async () => {
  const conn = await connect(srv.url('/hub'));
  try {
    const e = await rejection(conn.invoke('Add', { a: 1 }, 1));
    assert.ok(e instanceof Error);
    assert.equal(e.message, GENERIC);
  } finally { await conn.stop(); }
});

test('detailed_errors = true: the error text includes the Lua message', async () => {
  const conn = await connect(srv.url('/detailed'));
  try {
    const e = await rejection(conn.invoke('Add', 'boom', 1));
    assert.ok(e instanceof Error);
    assert.ok(e.message.includes('boom'), `message: ${e.message}`);
    assert.equal(await conn.invoke('Add', 1, 2), 3);
  } finally { await conn.stop(); }
});

test('wrong argument count: "Failed to invoke \'Add\' due to an error on the server."', async () => {
  const conn = await connect(srv.url('/hub'));
  try {
    const few = await rejection(conn.invoke('Add', 1));
    assert.ok(few instanceof Error, `rejected: ${JSON.stringify(few)}`);
    assert.equal(few.message, BADARGS);
    const many = await rejection(conn.invoke('Add', 1, 2, 3));
    assert.ok(many instanceof Error, `rejected: ${JSON.stringify(many)}`);
    assert.equal(many.message, BADARGS);
    assert.equal(await conn.invoke('Add', 1, 2), 3);
  } finally { await conn.stop(); }
});

test('detailed_errors = true: a wrong argument count keeps the generic text as its start', async () => {
  const conn = await connect(srv.url('/detailed'));
  try {
    const e = await rejection(conn.invoke('Add', 1));
    assert.ok(e instanceof Error);
    assert.ok(e.message.startsWith(BADARGS), `message: ${e.message}`);
  } finally { await conn.stop(); }
});

test('hub method arguments and results: JSON values round-trip through Lua', async () => {
  const conn = await connect(srv.url('/hub'));
  try {
    const v = { a: [1, 2, { b: 'c' }], s: 'é✓ 😀 "q"', t: true, f: false, n: -1.5, big: 9007199254740991, nested: { x: { y: { z: 'deep' } } } };
    assert.deepEqual(await conn.invoke('Back', v), v);
    assert.deepEqual(await conn.invoke('Back', [3, 'two', 1]), [3, 'two', 1]);
    assert.equal(await conn.invoke('Back', 'str'), 'str');
    assert.equal(await conn.invoke('Back', 0), 0);
    assert.equal(await conn.invoke('Back', true), true);
    const n = await conn.invoke('Back', null);
    assert.ok(n === null || n === undefined);
  } finally { await conn.stop(); }
});

test('wrong argument count on a built-in: Echo() and Echo(a, b)', async () => {
  const conn = await connect(srv.url('/hub'));
  try {
    const none = await rejection(conn.invoke('Echo'));
    assert.ok(none instanceof Error);
    assert.equal(none.message, "Failed to invoke 'Echo' due to an error on the server.");
    const two = await rejection(conn.invoke('Echo', 'a', 'b'));
    assert.ok(two instanceof Error);
    assert.equal(two.message, "Failed to invoke 'Echo' due to an error on the server.");
  } finally { await conn.stop(); }
});

test('unknown method: "Unknown hub method \'Nope\'"', async () => {
  const conn = await connect(srv.url('/hub'));
  try {
    const e = await rejection(conn.invoke('Nope'));
    assert.ok(e instanceof Error);
    assert.equal(e.message, "Unknown hub method 'Nope'");
    assert.equal(conn.state, 'Connected');
  } finally { await conn.stop(); }
});

test('builtins = false: Echo is an unknown method there, Lua methods still work', async () => {
  const conn = await connect(srv.url('/plain'));
  try {
    const e = await rejection(conn.invoke('Echo', 'x'));
    assert.ok(e instanceof Error);
    assert.equal(e.message, "Unknown hub method 'Echo'");
    assert.equal(await conn.invoke('Add', 2, 2), 4);
  } finally { await conn.stop(); }
});

test('send() (fire-and-forget) runs: a later invoke sees its effect', async () => {
  const conn = await connect(srv.url('/hub'));
  try {
    const key = `k${Date.now()}`;
    await conn.send('Fire', key, 'v1');
    assert.equal(await conn.invoke('GetFired', key), 'v1');
    // a failing send() is silent and the connection stays usable
    await conn.send('Add', 'boom', 1);
    await conn.send('Nope');
    assert.equal(await conn.invoke('Add', 1, 1), 2);
    assert.equal(conn.state, 'Connected');
  } finally { await conn.stop(); }
});

test('ctx:send, ctx:join, ctx:leave from a hub method', async () => {
  const conn = await connect(srv.url('/hub'));
  try {
    const pings = collect(conn, 'Pinged');
    assert.equal(await conn.invoke('SendMe', 'Pinged', 'a', { b: 2 }), 'sent');
    await until(() => pings.length === 1, 'Pinged');
    assert.deepEqual(pings, [['a', { b: 2 }]]);
    const notices = collect(conn, 'Notice');
    assert.equal(await conn.invoke('JoinMe', 'lua-group'), 'joined');
    const { request } = require('../lib/server');
    await request(srv.port, { path: '/group/lua-group' });
    await until(() => notices.length === 1, 'Notice');
    assert.equal(await conn.invoke('LeaveMe', 'lua-group'), 'left');
    const r = JSON.parse((await request(srv.port, { path: '/groupres/lua-group' })).body);
    assert.deepEqual(r, { ok: true, n: 0 });
  } finally { await conn.stop(); }
});

test('a sleeping hub method does not delay another connection (< 200 ms while it sleeps 300 ms)', async () => {
  const a = await connect(srv.url('/hub'));
  const b = await connect(srv.url('/hub'));
  try {
    await b.invoke('Add', 0, 0); // warm
    const t0 = Date.now();
    const slow = a.invoke('Sleep', 300);
    await new Promise((r) => setTimeout(r, 30));
    const t1 = Date.now();
    assert.equal(await b.invoke('Add', 1, 2), 3);
    const fast = Date.now() - t1;
    assert.ok(fast < 200, `the other connection's invoke took ${fast} ms`);
    assert.equal(await slow, 'slept');
    const slowMs = Date.now() - t0;
    assert.ok(slowMs >= 280, `the sleeping invoke took ${slowMs} ms`);
  } finally { await stopAll([a, b]); }
});

test('invocations from one connection run one at a time, in order', async () => {
  const conn = await connect(srv.url('/hub'));
  try {
    const done = [];
    const pa = conn.invoke('Order', 'A', 200).then((v) => { done.push(v); });
    const pb = conn.invoke('Order', 'B', 0).then((v) => { done.push(v); });
    const pc = conn.invoke('Order', 'C', 50).then((v) => { done.push(v); });
    await Promise.all([pa, pb, pc]);
    assert.deepEqual(done, ['A', 'B', 'C'], 'results in order');
    assert.deepEqual(await conn.invoke('GetOrder'),
      ['A:start', 'A:end', 'B:start', 'B:end', 'C:start', 'C:end'], 'server ran them one at a time');
  } finally { await conn.stop(); }
});

test('many hub-method invocations from many connections all complete correctly', async () => {
  const conns = await Promise.all(Array.from({ length: 10 }, () => connect(srv.url('/hub'))));
  try {
    const results = await Promise.all(conns.flatMap((c, i) =>
      Array.from({ length: 20 }, (_, j) => c.invoke('Add', i, j).then((v) => [i + j, v]))));
    for (const [want, got] of results) assert.equal(got, want);
  } finally { await stopAll(conns); }
});
