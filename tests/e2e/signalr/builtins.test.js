'use strict';
// The default hub's built-in methods (JoinGroup, LeaveGroup, Echo) and the broadcasters
// kr.send_log, kr.send_event, kr.group_send, kr.send_all, kr.send_to, kr.connections
// (lua-api.md §4), with the official client over WebSockets.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, request, sleep } = require('../lib/server');
const { connect, stopAll, collect, until } = require('../lib/signalr');

let srv;
before(async () => { srv = await startServer({ scripts: ['signalr.lua'] }); });
after(async () => { if (srv) await srv.stop(); });

const TIMESTAMP = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const get = async (p) => {
  const r = await request(srv.port, { path: p });
  assert.equal(r.status, 200, `${p}: ${r.status} ${r.body}`);
  try { return JSON.parse(r.body); } catch { return r.body; }
};

test('Echo: ReceiveEcho to the caller, invoke resolves null', async () => {
  const conn = await connect(srv.url('/hub'));
  try {
    const got = collect(conn, 'ReceiveEcho');
    const r = await conn.invoke('Echo', 'hi');
    assert.ok(r === null || r === undefined, `result ${JSON.stringify(r)}`);
    await until(() => got.length === 1, 'ReceiveEcho');
    assert.deepEqual(got, [['hi']]);
  } finally { await conn.stop(); }
});

test('Echo: method names match case-insensitively; any string round-trips', async () => {
  // Kestrun's Echo(string message): strings only (.NET would fail to bind anything else)
  const conn = await connect(srv.url('/hub'));
  try {
    const got = collect(conn, 'ReceiveEcho');
    const odd = 'é✓ 😀 "q" \\ \n\t \u2028 </script> \u0001';
    await conn.invoke('echo', 'lower');
    await conn.invoke('ECHO', odd);
    await conn.invoke('eChO', '');
    await until(() => got.length === 3, 'three echoes');
    assert.deepEqual(got, [['lower'], [odd], ['']]);
  } finally { await conn.stop(); }
});

// cJSON ends strings at a NUL: the hub codec keeps "\u0000" escapes as C0 80 while parsing
// and restores them (kr_json_nul_protect / kr_json_nul_restore).
test('Echo: a string with an embedded NUL (\\u0000) round-trips whole', async () => {
  const conn = await connect(srv.url('/hub'));
  try {
    const got = collect(conn, 'ReceiveEcho');
    await conn.invoke('Echo', 'before\u0000after');
    await until(() => got.length === 1, 'the echo');
    assert.deepEqual(got, [['before\u0000after']]);
  } finally { await conn.stop(); }
});

test('Echo: only the caller receives it', async () => {
  const a = await connect(srv.url('/hub'));
  const b = await connect(srv.url('/hub'));
  try {
    const gotA = collect(a, 'ReceiveEcho');
    const gotB = collect(b, 'ReceiveEcho');
    await a.invoke('Echo', 'mine');
    await until(() => gotA.length === 1, 'echo to A');
    await b.invoke('Echo', 'barrier');
    await until(() => gotB.length === 1, 'echo to B');
    assert.deepEqual(gotB, [['barrier']]);
    assert.deepEqual(gotA, [['mine']]);
  } finally { await stopAll([a, b]); }
});

test('JoinGroup: GroupJoined to the caller; group_send reaches members only; LeaveGroup stops it', async () => {
  const member = await connect(srv.url('/hub'));
  const other = await connect(srv.url('/hub'));
  try {
    const joined = collect(member, 'GroupJoined');
    const left = collect(member, 'GroupLeft');
    const otherJoined = collect(other, 'GroupJoined');
    const mNotice = collect(member, 'Notice');
    const oNotice = collect(other, 'Notice');

    const r = await member.invoke('JoinGroup', 'g1');
    assert.ok(r === null || r === undefined, `JoinGroup result ${JSON.stringify(r)}`);
    await until(() => joined.length === 1, 'GroupJoined');
    assert.deepEqual(joined, [['g1']]);

    assert.equal(await get('/group/g1'), 'ok');
    await until(() => mNotice.length === 1, 'Notice to the member');
    assert.deepEqual(mNotice, [['x', 42]]);

    // the non-member: a second group message goes to a group it is in, as a barrier
    await other.invoke('joingroup', 'g2');
    await until(() => otherJoined.length === 1, 'GroupJoined g2');
    assert.deepEqual(otherJoined, [['g2']]);
    assert.equal(await get('/group/g2'), 'ok');
    await until(() => oNotice.length === 1, 'Notice to the g2 member');
    await sleep(100);
    assert.deepEqual(oNotice, [['x', 42]], 'the non-member of g1 got only the g2 notice');
    assert.equal(mNotice.length, 1, 'the g1 member got no g2 notice');

    const r2 = await member.invoke('LeaveGroup', 'g1');
    assert.ok(r2 === null || r2 === undefined);
    await until(() => left.length === 1, 'GroupLeft');
    assert.deepEqual(left, [['g1']]);
    assert.equal(await get('/group/g1'), 'ok');
    // barrier: member joins g3 and gets a g3 notice, after which no g1 notice may have come
    await member.invoke('JoinGroup', 'g3');
    assert.equal(await get('/group/g3'), 'ok');
    await until(() => mNotice.length === 2, 'the g3 notice');
    await sleep(100);
    assert.equal(mNotice.length, 2, `after LeaveGroup no g1 notice: ${JSON.stringify(mNotice)}`);
  } finally { await stopAll([member, other]); }
});

test('group_send: returns true and the recipient count; an empty group gives true, 0', async () => {
  const a = await connect(srv.url('/hub'));
  const b = await connect(srv.url('/hub'));
  try {
    await a.invoke('JoinGroup', 'count');
    await b.invoke('JoinGroup', 'count');
    const r = await get('/groupres/count');
    assert.deepEqual(r, { ok: true, n: 2 });
    const e = await get('/groupres/nobody-here');
    assert.equal(e.ok, true, JSON.stringify(e));
    assert.equal(e.n, 0);
  } finally { await stopAll([a, b]); }
});

test('send_log: ReceiveLog {level, message, timestamp} to every client, all six levels', async () => {
  const a = await connect(srv.url('/hub'));
  const b = await connect(srv.url('/hub'));
  try {
    const gotA = collect(a, 'ReceiveLog');
    const gotB = collect(b, 'ReceiveLog');
    const r = await get('/log?level=Warning&message=disk%20almost%20full');
    assert.equal(r.ok, true, JSON.stringify(r));
    await until(() => gotA.length === 1 && gotB.length === 1, 'ReceiveLog on both');
    for (const got of [gotA, gotB]) {
      assert.equal(got[0].length, 1, 'one argument');
      const m = got[0][0];
      assert.deepEqual(Object.keys(m).sort(), ['level', 'message', 'timestamp']);
      assert.equal(m.level, 'Warning');
      assert.equal(m.message, 'disk almost full');
      assert.match(m.timestamp, TIMESTAMP);
      assert.ok(Math.abs(Date.parse(m.timestamp) - Date.now()) < 60000, `timestamp is now: ${m.timestamp}`);
    }
    const levels = ['Verbose', 'Debug', 'Information', 'Warning', 'Error', 'Fatal'];
    for (const level of levels) {
      const x = await get(`/log?level=${level}&message=m-${level}`);
      assert.equal(x.ok, true, `${level}: ${JSON.stringify(x)}`);
    }
    await until(() => gotA.length === 7, 'six more logs');
    assert.deepEqual(gotA.slice(1).map(([m]) => [m.level, m.message]), levels.map((l) => [l, `m-${l}`]));
  } finally { await stopAll([a, b]); }
});

test('send_log: an invalid level returns false, err and nobody receives anything', async () => {
  const a = await connect(srv.url('/hub'));
  try {
    const got = collect(a, 'ReceiveLog');
    const r = await get('/log?level=Loud&message=nope');
    assert.equal(r.ok, false, JSON.stringify(r));
    assert.equal(typeof r.err, 'string');
    assert.ok(r.err.length > 0, 'says why');
    // barrier: a valid log right after must be the first thing received
    assert.equal((await get('/log?level=Information&message=after')).ok, true);
    await until(() => got.length >= 1, 'the valid log');
    await sleep(50);
    assert.equal(got.length, 1, JSON.stringify(got));
    assert.equal(got[0][0].message, 'after');
  } finally { await a.stop(); }
});

test('send_event: ReceiveEvent {eventName, data, timestamp}, table keys kept as written', async () => {
  const a = await connect(srv.url('/hub'));
  try {
    const got = collect(a, 'ReceiveEvent');
    const r = await get('/event');
    assert.equal(r.ok, true, JSON.stringify(r));
    await until(() => got.length === 1, 'ReceiveEvent');
    const m = got[0][0];
    assert.deepEqual(Object.keys(m).sort(), ['data', 'eventName', 'timestamp']);
    assert.equal(m.eventName, 'Thing');
    assert.deepEqual(m.data, { Title: 'x', n: 1 });
    assert.match(m.timestamp, TIMESTAMP);
    assert.equal((await get('/event-string')).ok, true);
    await until(() => got.length === 2, 'the second ReceiveEvent');
    assert.equal(got[1][0].eventName, 'Plain');
    assert.equal(got[1][0].data, 'just text');
  } finally { await a.stop(); }
});

test('send_all: every client of the default hub, arguments as given; returns true, n', async () => {
  const a = await connect(srv.url('/hub'));
  const b = await connect(srv.url('/hub'), { skipNegotiation: true });
  const d = await connect(srv.url('/detailed'));
  try {
    await until(async () => (await get('/connections')).hub === 2, 'two connections on /hub', 3000);
    const gotA = collect(a, 'Broadcast');
    const gotB = collect(b, 'Broadcast');
    const gotD = collect(d, 'Broadcast');
    const dd = collect(d, 'DetailedBroadcast');
    const r = await get('/all');
    assert.deepEqual(r, { ok: true, n: 2 });
    await until(() => gotA.length === 1 && gotB.length === 1, 'Broadcast on both');
    assert.deepEqual(gotA, [['a', 1, { k: 'v' }]]);
    assert.deepEqual(gotB, [['a', 1, { k: 'v' }]]);
    // hub objects aim at their own hub
    const r2 = await get('/detailed-all');
    assert.deepEqual(r2, { ok: true, n: 1 });
    await until(() => dd.length === 1, 'DetailedBroadcast');
    assert.deepEqual(dd, [['only /detailed']]);
    assert.equal(gotD.length, 0, 'kr.send_all targets the default hub only');
    const gotH = collect(a, 'HubBroadcast');
    assert.equal((await get('/hub-all')).ok, true);
    await until(() => gotH.length === 1, 'HubBroadcast');
    assert.deepEqual(gotH, [['via hub object']]);
  } finally { await stopAll([a, b, d]); }
});

test('send_to: one connection by ctx.connection_id (from the client and from on_connected)', async () => {
  let welcomeId;
  const a = await connect(srv.url('/hub'), {}, (c) => c.on('Welcome', (id) => { welcomeId = id; }));
  const b = await connect(srv.url('/hub'));
  try {
    const gotA = collect(a, 'Direct');
    const gotB = collect(b, 'Direct');
    const idA = await a.invoke('WhoAmI');
    assert.equal(idA, a.connectionId);
    await until(() => welcomeId !== undefined, 'Welcome');
    assert.equal(welcomeId, idA, 'on_connected saw the same id');
    assert.deepEqual(await get(`/connected/${encodeURIComponent(idA)}`), { seen: true });
    const r = await get(`/to/${encodeURIComponent(idA)}`);
    assert.equal(r.ok, true, JSON.stringify(r));
    await until(() => gotA.length === 1, 'Direct to A');
    assert.deepEqual(gotA, [['hello', idA]]);
    // B as a barrier
    const idB = await b.invoke('WhoAmI');
    assert.equal((await get(`/to/${encodeURIComponent(idB)}`)).ok, true);
    await until(() => gotB.length === 1, 'Direct to B');
    assert.deepEqual(gotB, [['hello', idB]]);
    assert.equal(gotA.length, 1);
    // an unknown id: no raise (the route answers), nobody receives it
    const u = await get('/to/no-such-connection');
    assert.equal(typeof u.ok, 'boolean');
    if (u.ok) assert.equal(u.n, 0);
  } finally { await stopAll([a, b]); }
});

test('send_to: a connection that skipped negotiation is addressable by its server-side id', async () => {
  const a = await connect(srv.url('/hub'), { skipNegotiation: true });
  try {
    const got = collect(a, 'Direct');
    const id = await a.invoke('WhoAmI');
    assert.equal((await get(`/to/${encodeURIComponent(id)}`)).ok, true);
    await until(() => got.length === 1, 'Direct');
    assert.deepEqual(got, [['hello', id]]);
  } finally { await a.stop(); }
});

test('kr.connections(): counts connected clients, up and down', async () => {
  const s2 = await startServer({ scripts: ['signalr.lua'] });
  const conns = [];
  try {
    const n = async () => JSON.parse((await request(s2.port, { path: '/connections' })).body).n;
    assert.equal(await n(), 0);
    conns.push(await connect(s2.url('/hub')));
    conns.push(await connect(s2.url('/hub'), { skipNegotiation: true }));
    conns.push(await connect(s2.url('/hub')));
    await until(async () => (await n()) === 3, 'three connections');
    assert.equal(await conns[0].invoke('Connections'), 3, 'also from inside a hub method');
    // a connection on another hub is not counted by kr.connections()
    const d = await connect(s2.url('/detailed'));
    const r = JSON.parse((await request(s2.port, { path: '/connections' })).body);
    assert.deepEqual(r, { n: 3, hub: 3, detailed: 1 });
    await d.stop();
    await conns.pop().stop();
    await until(async () => (await n()) === 2, 'two after one stop', 3000);
    await stopAll(conns.splice(0));
    await until(async () => (await n()) === 0, 'zero after all stop', 3000);
  } finally { await stopAll(conns); await s2.stop(); }
});

test('kr.send_user without authentication: does not raise, reaches nobody', async () => {
  const a = await connect(srv.url('/hub'));
  try {
    const got = collect(a, 'ForUser');
    const r = await get('/send-user');
    assert.equal(typeof r.ok, 'boolean', JSON.stringify(r));
    if (r.ok) assert.equal(r.n, 0);
    await sleep(100);
    assert.equal(got.length, 0);
  } finally { await a.stop(); }
});

test('a broadcaster called with a wrong argument type raises (the route answers 500)', async () => {
  const r = await request(srv.port, { path: '/bad-args' });
  assert.equal(r.status, 500, r.body);
  assert.equal((await request(srv.port, { path: '/connections' })).status, 200, 'the server keeps serving');
});

test('on_connected joins "lobby": group_send("lobby") reaches new clients', async () => {
  const a = await connect(srv.url('/hub'));
  const b = await connect(srv.url('/hub'));
  try {
    const gotA = collect(a, 'LobbyNotice');
    const gotB = collect(b, 'LobbyNotice');
    const r = await get('/lobby');
    assert.equal(r.ok, true);
    assert.ok(r.n >= 2, `recipients ${r.n}`);
    await until(() => gotA.length === 1 && gotB.length === 1, 'LobbyNotice on both');
    assert.deepEqual(gotA, [['hello lobby']]);
    // LeaveGroup works on a group joined from on_connected
    await a.invoke('LeaveGroup', 'lobby');
    await get('/lobby');
    await until(() => gotB.length === 2, 'second LobbyNotice on b');
    await sleep(100);
    assert.equal(gotA.length, 1);
  } finally { await stopAll([a, b]); }
});

test('on_disconnected runs with no error after a client stop()', async () => {
  const a = await connect(srv.url('/hub'));
  const id = a.connectionId;
  assert.deepEqual(await get(`/disconnected/${encodeURIComponent(id)}`), { seen: false });
  await a.stop();
  const d = await until(async () => {
    const x = await get(`/disconnected/${encodeURIComponent(id)}`);
    return x.seen ? x : null;
  }, 'on_disconnected', 3000);
  assert.deepEqual(d, { seen: true }, 'no error for a clean stop');
});
