'use strict';
// Authenticated hubs with the official client (lua-api.md §7, signalr-protocol.md §1 and §7):
// accessTokenFactory over WebSockets (Authorization header in Node), Server-Sent Events
// (?access_token=) and long polling (header); a negotiate 401 makes start() reject; ctx.user
// in hub methods; per-method policies; kr.send_user reaching every connection of a user; a
// transport request from another user is refused; tokens never reach the log.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const signalR = require('@microsoft/signalr');
const { startServer, request, luaString } = require('../lib/server');
const { collect, until, stopAll } = require('../lib/signalr');

const SECRET = 'hub-secret-hub-secret-hub-secret-0123456789';
const b64u = (b) => Buffer.from(b).toString('base64url');
function jwt(sub, extra = {}) {
  const h = b64u(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const p = b64u(JSON.stringify({ sub, aud: 'hub', exp: Math.floor(Date.now() / 1000) + 600, ...extra }));
  const sig = b64u(crypto.createHmac('sha256', SECRET).update(`${h}.${p}`).digest());
  return `${h}.${p}.${sig}`;
}

const SCRIPT = `
kr.auth.jwt{ secret = ${luaString(SECRET)}, audience = "hub" }
kr.policy("Admin", { role = "admin" })
local secure = kr.hub("/secure", { authorize = true })
local open = kr.hub("/open")
local admin = kr.hub("/adminhub", { authorize = "Admin" })
local function whoami(ctx) return ctx.user and { name = ctx.user.name, role = ctx.user.role } or kr.json.null end
secure:on("WhoAmI", whoami)
open:on("WhoAmI", whoami)
admin:on("WhoAmI", whoami)
secure:on("Secret", function(ctx) return "42" end, { authorize = "Admin" })
secure:stream("SecretCount", function(ctx, emit, n)
  for i = 1, n do emit(i) end
end, { authorize = "Admin" })
open:on("Members", function(ctx) return "members" end, { authorize = true })
secure:on("Notify", function(ctx, user, text)
  local ok, n = secure:send_user(user, "Note", text)
  return n
end)
`;

let srv;
before(async () => { srv = await startServer({ script: SCRIPT, args: ['--log-level', 'Debug'] }); });
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.equal(r.code, 0, 'clean exit');
  assert.ok(!/Sanitizer|runtime error:/.test(srv.log()), 'sanitizer report in the server log');
});

const T = signalR.HttpTransportType;
const tokens = new Set();
function build(path, { token, transport = T.WebSockets, skipNegotiation = false } = {}) {
  if (token) tokens.add(token);
  return new signalR.HubConnectionBuilder()
    .withUrl(srv.url(path), {
      transport,
      skipNegotiation,
      accessTokenFactory: token ? () => token : undefined,
    })
    .configureLogging(signalR.LogLevel.None)
    .build();
}
async function open(path, opts) {
  const c = build(path, opts);
  await c.start();
  return c;
}

for (const [name, transport] of [['WebSockets', T.WebSockets], ['ServerSentEvents', T.ServerSentEvents], ['LongPolling', T.LongPolling]]) {
  test(`${name}: an authorized hub accepts a bearer token; ctx.user has the claims`, async () => {
    const c = await open('/secure', { token: jwt('alice', { role: 'user' }), transport });
    try {
      assert.deepEqual(await c.invoke('WhoAmI'), { name: 'alice', role: 'user' });
    } finally { await c.stop(); }
  });
}

test('WebSockets with skipNegotiation: the user is fixed at the upgrade', async () => {
  const c = await open('/secure', { token: jwt('carol'), skipNegotiation: true });
  try {
    assert.equal((await c.invoke('WhoAmI')).name, 'carol');
  } finally { await c.stop(); }
});

test('no token or a bad one: negotiate answers 401 and start() rejects', async () => {
  for (const token of [undefined, jwt('alice', { exp: 1 }), jwt('alice').slice(0, -3) + 'AAA']) {
    const c = build('/secure', { token });
    await assert.rejects(c.start(), /401|Unauthorized/);
  }
  const r = await request(srv.port, { method: 'POST', path: '/secure/negotiate?negotiateVersion=1' });
  assert.equal(r.status, 401);
  assert.equal(r.headers['www-authenticate'], 'Bearer');
  // the WebSocket upgrade without negotiate is checked too
  const ws = build('/secure', { skipNegotiation: true });
  await assert.rejects(ws.start());
});

test('a hub with a policy: 403 for an authenticated user who fails it', async () => {
  const r = await request(srv.port, { method: 'POST', path: '/adminhub/negotiate?negotiateVersion=1', headers: { authorization: `Bearer ${jwt('alice')}` } });
  assert.equal(r.status, 403);
  const c = await open('/adminhub', { token: jwt('root', { role: 'admin' }) });
  try { assert.equal((await c.invoke('WhoAmI')).name, 'root'); } finally { await c.stop(); }
});

test('an open hub: anonymous ctx.user is nil; with a token it is the user', async () => {
  const anon = await open('/open');
  const bob = await open('/open', { token: jwt('bob') });
  try {
    assert.equal(await anon.invoke('WhoAmI'), null);
    assert.equal((await bob.invoke('WhoAmI')).name, 'bob');
    await assert.rejects(anon.invoke('Members'), { message: /Failed to invoke 'Members' because user is unauthorized/ });
    assert.equal(await bob.invoke('Members'), 'members');
  } finally { await stopAll([anon, bob]); }
});

test("per-method policy: Failed to invoke 'Secret' because user is unauthorized", async () => {
  const user = await open('/secure', { token: jwt('alice') });
  const root = await open('/secure', { token: jwt('root', { role: 'admin' }) });
  try {
    await assert.rejects(user.invoke('Secret'), (e) => {
      assert.match(e.message, /Failed to invoke 'Secret' because user is unauthorized/);
      return true;
    });
    assert.equal(await root.invoke('Secret'), '42');
    assert.equal((await user.invoke('WhoAmI')).name, 'alice'); // the connection stays usable
  } finally { await stopAll([user, root]); }
  assert.ok(!/method 'Secret' failed/.test(srv.log()), 'a refusal is not logged as a method failure');
});

test("per-method policy on a stream: the stream ends with the unauthorized error", async () => {
  const user = await open('/secure', { token: jwt('alice') });
  const root = await open('/secure', { token: jwt('root', { role: 'admin' }) });
  const collect = (conn) => new Promise((resolve, reject) => {
    const items = [];
    conn.stream('SecretCount', 3).subscribe({ next: (x) => items.push(x), complete: () => resolve(items), error: reject });
  });
  try {
    await assert.rejects(collect(user), { message: /Failed to invoke 'SecretCount' because user is unauthorized/ });
    assert.deepEqual(await collect(root), [1, 2, 3]);
  } finally { await stopAll([user, root]); }
  assert.ok(!/stream 'SecretCount' failed/.test(srv.log()), 'a refusal is not logged as a stream failure');
});

test('kr.send_user reaches every connection of that user, on any transport, and no one else', async () => {
  const a1 = await open('/secure', { token: jwt('dave') });
  const a2 = await open('/secure', { token: jwt('dave'), transport: T.LongPolling });
  const a3 = await open('/secure', { token: jwt('dave'), transport: T.ServerSentEvents });
  const other = await open('/secure', { token: jwt('erin') });
  const got = [a1, a2, a3, other].map((c) => collect(c, 'Note'));
  try {
    assert.equal(await other.invoke('Notify', 'dave', 'hello'), 3);
    await until(() => got.slice(0, 3).every((g) => g.length === 1), 'three deliveries');
    for (const g of got.slice(0, 3)) assert.deepEqual(g[0], ['hello']);
    assert.equal(got[3].length, 0);
  } finally { await stopAll([a1, a2, a3, other]); }
});

test('a transport request from another user than the negotiate is refused with 403', async () => {
  const alice = `Bearer ${jwt('alice')}`;
  const n = await request(srv.port, { method: 'POST', path: '/secure/negotiate?negotiateVersion=1', headers: { authorization: alice } });
  assert.equal(n.status, 200);
  const id = JSON.parse(n.body).connectionToken;
  const other = await request(srv.port, { path: `/secure?id=${id}`, headers: { authorization: `Bearer ${jwt('mallory')}` } });
  assert.equal(other.status, 403);
  const same = await request(srv.port, { path: `/secure?id=${id}`, headers: { authorization: alice } });
  assert.equal(same.status, 200); // the first long poll
  await request(srv.port, { method: 'DELETE', path: `/secure?id=${id}`, headers: { authorization: alice } });
});

test('?access_token= works on hub requests (what browsers send), and is never logged', async () => {
  const t = jwt('frank');
  tokens.add(t);
  const n = await request(srv.port, { method: 'POST', path: `/secure/negotiate?negotiateVersion=1&access_token=${t}` });
  assert.equal(n.status, 200);
  const log = srv.log();
  for (const tok of tokens) assert.ok(!log.includes(tok.split('.')[2]), 'a token signature appears in the log');
  assert.ok(!/Bearer /.test(log), 'an Authorization header appears in the log');
});

test('close_on_expiration: the connection is closed at exp with a Close that allows a reconnect', async () => {
  const s = await startServer({ script: `
kr.auth.jwt{ secret = ${luaString(SECRET)}, audience = "hub", close_on_expiration = true, leeway_s = 0 }
kr.hub("/exp", { authorize = true })
` });
  try {
    const exp = Math.floor(Date.now() / 1000) + 2;
    const c = new signalR.HubConnectionBuilder()
      .withUrl(s.url('/exp'), { transport: T.WebSockets, accessTokenFactory: () => jwt('gina', { exp }) })
      .configureLogging(signalR.LogLevel.None).build();
    let closedWith;
    const closed = new Promise((resolve) => c.onclose((e) => { closedWith = e; resolve(); }));
    await c.start();
    await closed;
    assert.ok(Date.now() >= (exp - 1) * 1000, 'closed too early');
    assert.equal(closedWith, undefined); // no error text, as ASP.NET Core's CloseOnAuthenticationExpiration
    assert.ok(await s.waitForLog('credentials expired'));
  } finally {
    await s.stop();
    assert.ok(!/Sanitizer|runtime error:/.test(s.log()), 'sanitizer report in the server log');
  }
});
