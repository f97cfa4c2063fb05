'use strict';
// HTTPS: kr.listen{ tls = { cert, key } } with a self-signed P-256 certificate made at test
// time by the openssl command. Node's https client trusts it through `ca`. Covered: requests
// on one keep-alive connection, pipelining on a raw TLS socket, a large body both ways, ALPN
// (http/1.1 chosen, h2-only refused, none is fine), TLS 1.1 refused, plain HTTP on the TLS
// port closed quietly (Debug log line, no crash), the handshake bounded by header_timeout_ms,
// and load errors: a missing certificate and a key that does not match exit 1 with the message.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const https = require('node:https');
const net = require('node:net');
const path = require('node:path');
const tls = require('node:tls');
const { startServer, runKestrun, tempDir, writeScript, luaString, parseResponses, sleep } =
  require('../lib/server');

function makeCert(dir, name = '', cn = 'localhost') {
  const cert = path.join(dir, `${name}cert.pem`);
  const key = path.join(dir, `${name}key.pem`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-days', '1', '-subj', `/CN=${cn}`,
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert],
  { stdio: 'ignore' });
  return { cert, key };
}

const ROUTES = `
kr.map_route("GET", "/hello", function(req, res) res:text("hello over tls") end)
kr.map_route("POST", "/echo", function(req, res) res:send(req.body or "") end)
kr.map_route("GET", "/big/{n:int}", function(req, res) res:send(string.rep("0123456789", req.params.n)) end)
`;

let dir, files, srv, ca;
before(async () => {
  dir = tempDir('kestrun-tls-');
  files = makeCert(dir);
  ca = fs.readFileSync(files.cert);
  srv = await startServer({
    listen: false,
    args: ['--log-level', 'Debug'],
    script: `kr.listen{ host = "127.0.0.1", port = 0, tls = { cert = ${luaString(files.cert)}, key = ${luaString(files.key)} } }
kr.limits{ header_timeout_ms = 1500, max_body_bytes = 4 * 1024 * 1024 }
${ROUTES}`,
  });
});
after(async () => {
  if (srv) await srv.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

function get(agent, p, { method = 'GET', body, host = '127.0.0.1' } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.request({ host, port: srv.port, path: p, method, ca, agent, servername: 'localhost' }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks),
        socket: res.socket }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10000, () => req.destroy(new Error('timeout')));
    req.end(body);
  });
}

// A raw TLS socket (for pipelining and protocol checks). Resolves when the handshake is done.
function tlsConnect(opts = {}) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: srv.port, ca, servername: 'localhost', ...opts });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

test('the listener logs https:// and a GET answers over TLS 1.3 with a verified certificate', async () => {
  assert.ok(await srv.waitForLog(/listening on https:\/\/127\.0\.0\.1:\d+/), srv.log());
  const r = await get(false, '/hello');
  assert.equal(r.status, 200);
  assert.equal(r.body.toString(), 'hello over tls');
  assert.equal(r.socket.getProtocol(), 'TLSv1.3');
  assert.equal(r.socket.alpnProtocol, false); // https.request offers no ALPN by default
});

test('keep-alive: several requests share one TLS connection', async () => {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const sockets = new Set();
    for (let i = 0; i < 5; i++) {
      const r = await get(agent, '/hello');
      assert.equal(r.status, 200);
      sockets.add(r.socket);
    }
    assert.equal(sockets.size, 1);
  } finally { agent.destroy(); }
});

test('pipelining: three requests in one write get three responses in order', async () => {
  const s = await tlsConnect();
  try {
    let buf = Buffer.alloc(0);
    s.on('data', (d) => { buf = Buffer.concat([buf, d]); });
    s.write('GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /big/3 HTTP/1.1\r\nHost: x\r\n\r\n' +
      'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\npong');
    const d = Date.now() + 5000;
    let parsed;
    while (Date.now() < d) {
      parsed = parseResponses(buf);
      if (parsed.responses.length === 3) break;
      await sleep(20);
    }
    assert.deepEqual(parsed.responses.map((r) => [r.status, r.text]),
      [[200, 'hello over tls'], [200, '012345678901234567890123456789'], [200, 'pong']]);
  } finally { s.destroy(); }
});

test('a large body both ways (3 MB up, 2 MB down) arrives intact', async () => {
  const up = Buffer.alloc(3 * 1024 * 1024);
  for (let i = 0; i < up.length; i++) up[i] = (i * 7 + (i >> 10)) & 0xff;
  const r = await get(false, '/echo', { method: 'POST', body: up });
  assert.equal(r.status, 200);
  assert.equal(r.body.length, up.length);
  assert.ok(r.body.equals(up));
  const down = await get(false, '/big/200000');
  assert.equal(down.body.length, 2000000);
  assert.equal(down.body.toString('latin1', 1999990), '0123456789');
});

test('ALPN: http/1.1 is chosen from h2,http/1.1; h2 alone is refused; no ALPN is fine', async () => {
  const s = await tlsConnect({ ALPNProtocols: ['h2', 'http/1.1'] });
  assert.equal(s.alpnProtocol, 'http/1.1');
  s.destroy();
  await assert.rejects(tlsConnect({ ALPNProtocols: ['h2'] }), /no application protocol|ALPN/i);
  const n = await tlsConnect();
  assert.equal(n.alpnProtocol, false);
  n.destroy();
});

test('TLS 1.1 (and 1.0) are refused with a protocol_version alert; TLS 1.2 works', async () => {
  for (const v of ['TLSv1.1', 'TLSv1']) {
    await assert.rejects(tlsConnect({ minVersion: v, maxVersion: v, ciphers: 'DEFAULT@SECLEVEL=0' }),
      (err) => /protocol version|unsupported protocol|PROTOCOL_VERSION/i.test(`${err.code} ${err.message}`));
  }
  const s = await tlsConnect({ maxVersion: 'TLSv1.2' });
  assert.equal(s.getProtocol(), 'TLSv1.2');
  assert.match(s.getCipher().name, /ECDHE-ECDSA-(AES128-GCM|AES256-GCM|CHACHA20)/);
  s.destroy();
  assert.ok(await srv.waitForLog(/\[Debug\] conn: conn=\d+ 127\.0\.0\.1: TLS handshake failed: unsupported protocol/));
});

test('plain HTTP on the TLS port is closed quietly; the server keeps serving', async () => {
  const got = await new Promise((resolve) => {
    const chunks = [];
    const s = net.connect({ host: '127.0.0.1', port: srv.port }, () => s.write('GET /hello HTTP/1.1\r\nHost: x\r\n\r\n'));
    s.on('data', (d) => chunks.push(d));
    s.on('close', () => resolve(Buffer.concat(chunks)));
    s.on('error', () => {});
    setTimeout(() => s.destroy(), 5000);
  });
  assert.ok(!got.toString('latin1').includes('HTTP/1.1'), 'no plaintext answer');
  assert.ok(await srv.waitForLog(/TLS handshake failed: (http request|wrong version number)/));
  assert.equal((await get(false, '/hello')).status, 200);
});

test('a client that never finishes the handshake is dropped after header_timeout_ms', async () => {
  const started = Date.now();
  const closed = await new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port: srv.port }, () => s.write(Buffer.from([0x16, 0x03, 0x01])));
    s.on('close', () => resolve(true));
    s.on('error', () => {});
    setTimeout(() => { s.destroy(); resolve(false); }, 6000);
  });
  const ms = Date.now() - started;
  assert.ok(closed, 'closed by the server');
  assert.ok(ms >= 1300 && ms < 4000, `closed after ${ms} ms`);
  assert.ok(await srv.waitForLog(/closed: TLS handshake timeout/));
});

test('load errors: a missing certificate, a key that does not match: exit 1 with the message', async () => {
  const other = makeCert(dir, 'other-', 'other');
  const cases = [
    [`cert = ${luaString(path.join(dir, 'missing.pem'))}, key = ${luaString(files.key)}`,
      /kr\.listen: cannot load TLS certificate '.*missing\.pem': No such file or directory/],
    [`cert = ${luaString(files.cert)}, key = ${luaString(other.key)}`,
      /kr\.listen: TLS key '.*other-key\.pem' does not match certificate '.*cert\.pem'/],
    [`cert = ${luaString(files.cert)}, key = ${luaString(files.cert)}`,
      /kr\.listen: cannot load TLS key '.*cert\.pem': no PEM private key found in it/],
  ];
  for (const [tlsOpts, re] of cases) {
    const d = tempDir();
    const script = writeScript(d, `kr.listen{ port = 0, tls = { ${tlsOpts} } }\n`);
    const r = await runKestrun(['--port-file', path.join(d, 'port'), script]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, re);
    assert.match(r.stderr, /main\.lua:1:/);
    const c = await runKestrun(['--check', script]);
    assert.equal(c.code, 1);
    assert.match(c.stderr, re);
    fs.rmSync(d, { recursive: true, force: true });
  }
});

test('Basic authentication over TLS is accepted without allow_insecure (req.user set)', async () => {
  const s = await startServer({
    listen: false,
    script: `kr.listen{ host = "127.0.0.1", port = 0, tls = { cert = ${luaString(files.cert)}, key = ${luaString(files.key)} } }
kr.auth.basic{ validate = function(user, password)
  if user == "ann" and password == "s3cret" then return { sub = user } end
end }
kr.map_route("GET", "/me", function(req, res) res:text(req.user.name) end, { authorize = true })`,
  });
  try {
    const call = (auth) => new Promise((resolve, reject) => {
      const headers = auth ? { Authorization: 'Basic ' + Buffer.from(auth).toString('base64') } : {};
      https.get({ host: '127.0.0.1', port: s.port, path: '/me', ca, servername: 'localhost', headers, agent: false }, (res) => {
        let body = '';
        res.on('data', (d) => { body += d; });
        res.on('end', () => resolve({ status: res.statusCode, body, challenge: res.headers['www-authenticate'] }));
      }).on('error', reject);
    });
    assert.deepEqual(await call('ann:s3cret'), { status: 200, body: 'ann', challenge: undefined });
    const anon = await call(null);
    assert.equal(anon.status, 401);
    assert.match(anon.challenge, /^Basic realm=/);
    assert.equal((await call('ann:wrong')).status, 401);
  } finally {
    await s.stop();
  }
});
