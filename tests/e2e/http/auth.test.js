'use strict';
// Authentication and authorization on routes (lua-api.md §7, reliability-anchors.md §6):
// kr.auth.jwt (HS256, RS256, ES256 keys made here with node:crypto), kr.auth.api_key (header,
// query, validator), kr.auth.basic (validator; plain HTTP refused unless allow_insecure),
// kr.policy (role, claims, function), 401 with WWW-Authenticate vs 403, and what the log
// never shows.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { startServer, request, luaString } = require('../lib/server');

const SECRET = 'an-hs256-secret-of-at-least-32-bytes!!';
const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const RSA_PEM = rsa.publicKey.export({ type: 'spki', format: 'pem' });
const EC_PEM = ec.publicKey.export({ type: 'spki', format: 'pem' });

const b64u = (b) => Buffer.from(b).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

// Signs a JWT. alg: HS256 (key: secret), RS256 (RSA private key), ES256 (EC private key), none.
function jwt(claims, { alg = 'HS256', key = SECRET, header = {} } = {}) {
  const h = b64u(JSON.stringify({ alg, typ: 'JWT', ...header }));
  const p = b64u(JSON.stringify(claims));
  const data = `${h}.${p}`;
  let sig = '';
  if (alg === 'HS256') sig = b64u(crypto.createHmac('sha256', key).update(data).digest());
  else if (alg === 'RS256') sig = b64u(crypto.sign('sha256', Buffer.from(data), key));
  else if (alg === 'ES256') sig = b64u(crypto.sign('sha256', Buffer.from(data), { key, dsaEncoding: 'ieee-p1363' }));
  return `${data}.${sig}`;
}

const claims = (extra = {}) => ({ sub: 'alice', iss: 'kestrun-tests', aud: 'api', exp: now() + 600, ...extra });

const SCRIPT = (basicInsecure) => `
kr.auth.jwt{ secret = ${luaString(SECRET)}, issuer = "kestrun-tests", audience = {"api", "hub"} }
kr.auth.jwt{ public_key = ${luaString(RSA_PEM)}, algorithms = {"RS256"}, issuer = "kestrun-tests", audience = "api" }
kr.auth.jwt{ public_key = ${luaString(EC_PEM)}, algorithms = {"ES256"}, issuer = "kestrun-tests", audience = "api" }
kr.auth.api_key{ header = "X-Api-Key", query = "api_key", keys = { ["k-123"] = { name = "svc", role = "admin" }, ["k-456"] = "plain" } }
kr.auth.api_key{ header = "X-Dyn-Key", validate = function(key)
  kr.sleep(5) -- validators run in the request's fiber and may yield
  if key == "dyn" then return { name = "dyn-user", dept = "eng" } end
end }
kr.auth.basic{ allow_insecure = ${basicInsecure}, validate = function(user, password)
  kr.sleep(1)
  if user == "bob" and password == "pa:ss" then return { role = {"ops", "admin"} } end
end }
kr.policy("Admin", { role = "admin" })
kr.policy("Writer", { claims = { scope = {"write", "admin"} } })
kr.policy("Eng", function(user) return user.dept == "eng" end)
local function who(req, res) res:json({ user = req.user and req.user.name or kr.json.null, claims = req.user or kr.json.null }) end
kr.map_route("GET", "/open", who)
kr.map_route("GET", "/private", who, { authorize = true })
kr.map_route("GET", "/admin", who, { authorize = "Admin" })
kr.map_route("GET", "/writer", who, { authorize = "Writer" })
kr.map_route("GET", "/eng", who, { authorize = "Eng" })
kr.map_route("GET", "/boom", function() error("boom") end)
`;

let srv; let strict;
before(async () => {
  srv = await startServer({ script: SCRIPT('true') });
  strict = await startServer({ script: SCRIPT('false') });
});
after(async () => {
  for (const s of [srv, strict].filter(Boolean)) {
    const r = await s.stop();
    assert.equal(r.code, 0, 'clean exit');
    assert.ok(!/Sanitizer|runtime error:/.test(s.log()), 'sanitizer report in the server log');
  }
});

const get = (path, headers = {}, s = srv) => request(s.port, { path, headers });
const bearer = (t) => ({ authorization: `Bearer ${t}` });

test('jwt: a valid HS256 token reaches a protected route; req.user has the claims and name = sub', async () => {
  const r = await get('/private', bearer(jwt(claims({ role: 'x' }))));
  assert.equal(r.status, 200);
  const j = JSON.parse(r.body);
  assert.equal(j.user, 'alice');
  assert.equal(j.claims.role, 'x');
  assert.equal(j.claims.iss, 'kestrun-tests');
});

test('jwt: RS256 and ES256 tokens verify against their public keys', async () => {
  for (const [alg, key] of [['RS256', rsa.privateKey], ['ES256', ec.privateKey]]) {
    const r = await get('/private', bearer(jwt(claims({ sub: alg }), { alg, key })));
    assert.equal(r.status, 200, alg);
    assert.equal(JSON.parse(r.body).user, alg);
  }
});

test('no credentials: 401 with a challenge per scheme', async () => {
  const r = await get('/private');
  assert.equal(r.status, 401);
  const c = r.headers['www-authenticate'];
  assert.match(c, /^Bearer/);
  assert.match(c, /ApiKey/);
  assert.match(c, /Basic realm="kestrun"/);
});

const BAD = {
  expired: () => jwt(claims({ exp: now() - 3600 })),
  'not yet valid': () => jwt(claims({ nbf: now() + 3600 })),
  'wrong issuer': () => jwt(claims({ iss: 'evil' })),
  'wrong audience': () => jwt(claims({ aud: 'other' })),
  'wrong signature': () => jwt(claims(), { key: 'another-secret-that-is-also-32-bytes-long' }),
  'alg none': () => jwt(claims(), { alg: 'none' }),
  'HS/RS confusion (HMAC keyed with the RSA public PEM)': () => jwt(claims(), { key: RSA_PEM }),
  'malformed base64': () => { const t = jwt(claims()).split('.'); return `${t[0]}.${t[1]}*.${t[2]}`; },
  'no exp': () => { const c = claims(); delete c.exp; return jwt(c); },
  oversized: () => jwt(claims({ pad: 'x'.repeat(9000) })),
};
for (const [name, make] of Object.entries(BAD)) {
  test(`jwt: ${name} -> 401 invalid_token; an open route runs anonymous`, async () => {
    const token = make();
    const r = await get('/private', bearer(token));
    assert.equal(r.status, 401);
    assert.match(r.headers['www-authenticate'], /^Bearer error="invalid_token", error_description="[^"]+"$/);
    const o = await get('/open', bearer(token));
    assert.equal(o.status, 200);
    assert.equal(JSON.parse(o.body).user, null);
  });
}

test('jwt: ?access_token= is not accepted on routes (hubs only)', async () => {
  const r = await get(`/private?access_token=${jwt(claims())}`);
  assert.equal(r.status, 401);
});

test('policies: role (string or array), claims (space-separated scope), function; 403 when failed', async () => {
  assert.equal((await get('/admin', bearer(jwt(claims())))).status, 403);
  assert.equal((await get('/admin', bearer(jwt(claims({ role: 'admin' }))))).status, 200);
  assert.equal((await get('/admin', bearer(jwt(claims({ roles: ['user', 'admin'] }))))).status, 200);
  assert.equal((await get('/writer', bearer(jwt(claims({ scope: 'read write' }))))).status, 200);
  assert.equal((await get('/writer', bearer(jwt(claims({ scope: 'read' }))))).status, 403);
  assert.equal((await get('/writer', bearer(jwt(claims({ scope: ['read', 'admin'] }))))).status, 200);
  assert.equal((await get('/eng', bearer(jwt(claims({ dept: 'eng' }))))).status, 200);
  assert.equal((await get('/eng', bearer(jwt(claims({ dept: 'ops' }))))).status, 403);
  const r = await get('/admin');
  assert.equal(r.status, 401); // anonymous: 401, not 403
});

test('api_key: static keys by header or query (fallback); claims from the key map', async () => {
  let r = await get('/admin', { 'x-api-key': 'k-123' });
  assert.equal(r.status, 200);
  assert.equal(JSON.parse(r.body).user, 'svc');
  r = await get('/private?api_key=k-456');
  assert.equal(r.status, 200);
  assert.equal(JSON.parse(r.body).user, 'plain');
  r = await get('/private', { 'x-api-key': 'k-999' });
  assert.equal(r.status, 401);
  assert.equal(r.headers['www-authenticate'], 'ApiKey');
  assert.equal((await get('/admin', { 'x-api-key': 'k-456' })).status, 403);
});

test('api_key: a validator (which yields) decides', async () => {
  let r = await get('/eng', { 'x-dyn-key': 'dyn' });
  assert.equal(r.status, 200);
  assert.equal(JSON.parse(r.body).user, 'dyn-user');
  r = await get('/eng', { 'x-dyn-key': 'nope' });
  assert.equal(r.status, 401);
});

const basic = (u, p) => ({ authorization: 'Basic ' + Buffer.from(`${u}:${p}`).toString('base64') });

test('basic: validator with allow_insecure; the name defaults to the user name', async () => {
  let r = await get('/admin', basic('bob', 'pa:ss'));
  assert.equal(r.status, 200);
  assert.equal(JSON.parse(r.body).user, 'bob');
  r = await get('/private', basic('bob', 'wrong'));
  assert.equal(r.status, 401);
  assert.equal(r.headers['www-authenticate'], 'Basic realm="kestrun", charset="UTF-8"');
  r = await get('/private', { authorization: 'Basic !!!notbase64' });
  assert.equal(r.status, 401);
});

test('basic: refused over plain HTTP without allow_insecure (403 with a clear message)', async () => {
  const r = await get('/private', basic('bob', 'pa:ss'), strict);
  assert.equal(r.status, 403);
  assert.match(r.body, /Basic authentication requires a TLS connection/);
  // other schemes are unaffected
  assert.equal((await get('/private', bearer(jwt(claims())), strict)).status, 200);
});

test('the first scheme that finds credentials decides (a bad bearer is not rescued by a good key)', async () => {
  const r = await get('/private', { ...bearer(jwt(claims({ exp: 1 }))), 'x-api-key': 'k-123' });
  assert.equal(r.status, 401);
});

test('logs: access_token and other secrets in a logged URL are redacted; tokens never logged', async () => {
  const token = jwt(claims());
  const r = await get(`/boom?access_token=${token}&x=1&api_key=k-123`, bearer(token));
  assert.equal(r.status, 500);
  assert.ok(await srv.waitForLog('handler failed'));
  const log = srv.log();
  assert.match(log, /\/boom\?access_token=\*\*\*&x=1&api_key=\*\*\*/);
  assert.ok(!log.includes(token.split('.')[2]), 'token signature in the log');
  assert.ok(!log.includes('k-123'), 'api key in the log');
  assert.ok(!log.includes('pa:ss'), 'password in the log');
});

test('configuration errors are load errors', async () => {
  const { runKestrun } = require('../lib/server');
  const fs = require('node:fs');
  const path = require('node:path');
  const os = require('node:os');
  const bad = [
    ['kr.auth.jwt{ secret = "short" }', /secret|32|short|bytes/i],
    ['kr.auth.jwt{ secret = ' + luaString(SECRET) + ', leeway_s = 3600 }', /leeway_s/],
    ['kr.auth.jwt{ secret = ' + luaString(SECRET) + ', algorithms = {"RS256"} }', /RS256 needs/],
    ['kr.auth.jwt{ secret = ' + luaString(SECRET) + ', audiance = "x" }', /unknown option 'audiance'/],
    ['kr.map_route("GET", "/x", function() end, { authorize = 5 })', /authorize must be true or a policy name/],
    ['kr.policy("P", { rol = "x" })', /unknown option 'rol'/],
  ];
  for (const [src, re] of bad) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kr-auth-'));
    const f = path.join(dir, 'bad.lua');
    fs.writeFileSync(f, src);
    const r = await runKestrun(['--listen', '127.0.0.1:0', f]);
    assert.notEqual(r.code, 0, src);
    assert.match(r.stderr + r.stdout, re, src);
  }
});
