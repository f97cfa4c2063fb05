'use strict';
// SignalR over TLS: the official @microsoft/signalr client over https:// (negotiate, long
// polling, SSE) and wss:// (WebSockets) against kr.listen{ tls = ... }. The client runs in a
// child `node` with NODE_EXTRA_CA_CERTS=cert.pem, the one setting that both Node's fetch (which
// the client uses for HTTP) and the `ws` package (WebSockets) honour. Also: SIGHUP reloads the
// certificate (new handshakes see the new one, an open connection keeps working, a broken new
// file keeps the old one and logs an Error), and a bad key at load exits 1 with the message.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const tls = require('node:tls');
const { startServer, runKestrun, tempDir, writeScript, luaString } = require('../lib/server');

const E2E = path.resolve(__dirname, '..');

function makeCert(dir, name, cn) {
  const cert = path.join(dir, `${name}-cert.pem`);
  const key = path.join(dir, `${name}-key.pem`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-days', '1', '-subj', `/CN=${cn}`,
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert],
  { stdio: 'ignore' });
  return { cert, key };
}

// The client program run in the child: for each transport, connect, Echo, then a broadcast
// (GET /log over https makes the server call kr.send_log), and print one JSON line.
const CLIENT = `
const signalR = require(${JSON.stringify(path.join(E2E, 'node_modules', '@microsoft', 'signalr'))});
const [base, ...names] = process.argv.slice(1);
(async () => {
  for (const name of names) {
    const conn = new signalR.HubConnectionBuilder()
      .withUrl(base + '/hub', { transport: signalR.HttpTransportType[name] })
      .configureLogging(signalR.LogLevel.None).build();
    const echoes = [], logs = [];
    conn.on('ReceiveEcho', (m) => echoes.push(m));
    conn.on('ReceiveLog', (e) => logs.push(e.message));
    try {
      await conn.start();
      await conn.invoke('Echo', 'hello ' + name);
      const add = await conn.invoke('Add', 40, 2);
      const r = await fetch(base + '/log?m=' + name);
      await r.text();
      const d = Date.now() + 5000;
      while ((echoes.length < 1 || logs.length < 1) && Date.now() < d) await new Promise((s) => setTimeout(s, 20));
      console.log(JSON.stringify({ name, transport: conn.connection.transport.constructor.name, echoes, logs, add }));
    } catch (e) {
      console.log(JSON.stringify({ name, error: String(e && e.message || e) }));
    } finally { await conn.stop(); }
  }
})();
`;

function runClient(caFile, base, transports) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', CLIENT, base, ...transports],
      { env: { ...process.env, NODE_EXTRA_CA_CERTS: caFile }, timeout: 30000 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`client failed: ${err.message}\n${stderr}`));
        resolve(stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)));
      });
  });
}

const HUB = `
local hub = kr.hub("/hub")
hub:on("Add", function(ctx, a, b) return a + b end)
kr.map_route("GET", "/log", function(req, res) kr.send_log("Information", "broadcast " .. req.query.m) res:text("ok") end)
`;

let dir, a, b, live, srv;
before(async () => {
  dir = tempDir('kestrun-tls-sr-');
  a = makeCert(dir, 'a', 'first');
  b = makeCert(dir, 'b', 'second');
  live = { cert: path.join(dir, 'live-cert.pem'), key: path.join(dir, 'live-key.pem') };
  fs.copyFileSync(a.cert, live.cert);
  fs.copyFileSync(a.key, live.key);
  srv = await startServer({
    listen: false,
    args: ['--no-watch'],
    script: `kr.listen{ host = "127.0.0.1", port = 0, tls = { cert = ${luaString(live.cert)}, key = ${luaString(live.key)} } }\n${HUB}`,
  });
});
after(async () => {
  if (srv) await srv.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('official client over wss:// and https://: WebSockets, SSE and long polling echo and broadcast', async () => {
  const results = await runClient(a.cert, `https://localhost:${srv.port}`,
    ['WebSockets', 'ServerSentEvents', 'LongPolling']);
  assert.equal(results.length, 3);
  for (const r of results) {
    assert.equal(r.error, undefined, `${r.name}: ${r.error}`);
    assert.deepEqual(r.echoes, [`hello ${r.name}`], r.name);
    assert.deepEqual(r.logs, [`broadcast ${r.name}`], r.name);
    assert.equal(r.add, 42);
  }
  assert.deepEqual(results.map((r) => r.transport),
    ['WebSocketTransport', 'ServerSentEventsTransport', 'LongPollingTransport']);
});

test('the client refuses the server without the CA (the certificate is really checked)', async () => {
  const other = makeCert(dir, 'untrusted', 'nobody');
  const results = await runClient(other.cert, `https://localhost:${srv.port}`, ['WebSockets']);
  assert.ok(results[0].error, 'connection must fail');
  assert.match(results[0].error, /self[- ]signed|certificate|fetch failed/i);
});

// The subject CN of the certificate a new TLS connection gets.
function peerCN(keep = false) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: srv.port, rejectUnauthorized: false }, () => {
      const cn = s.getPeerCertificate().subject.CN;
      if (keep) resolve({ cn, socket: s }); else { s.destroy(); resolve(cn); }
    });
    s.on('error', reject);
  });
}

// One HTTP/1.1 request on an open TLS socket; resolves with the raw answer head.
function askOn(socket) {
  return new Promise((resolve) => {
    let buf = '';
    const onData = (d) => {
      buf += d.toString('latin1');
      if (buf.includes('\r\n\r\n')) { socket.off('data', onData); resolve(buf); }
    };
    socket.on('data', onData);
    socket.write('GET /log?m=open HTTP/1.1\r\nHost: x\r\n\r\n');
  });
}

test('SIGHUP reloads the certificate: new handshakes get it, an open connection keeps working; a broken file keeps the old one', async () => {
  assert.equal(await peerCN(), 'first');
  const open = await peerCN(true);
  assert.match(await askOn(open.socket), /^HTTP\/1\.1 200/);

  fs.copyFileSync(b.cert, live.cert);
  fs.copyFileSync(b.key, live.key);
  srv.proc.kill('SIGHUP');
  assert.ok(await srv.waitForLog(/TLS certificate reloaded from '.*live-cert\.pem'/), srv.log());
  assert.equal(await peerCN(), 'second');
  assert.match(await askOn(open.socket), /^HTTP\/1\.1 200/); // the old session goes on
  open.socket.destroy();
  const results = await runClient(b.cert, `https://localhost:${srv.port}`, ['WebSockets']);
  assert.equal(results[0].error, undefined, results[0].error);

  fs.writeFileSync(live.cert, 'not a certificate\n');
  srv.proc.kill('SIGHUP');
  assert.ok(await srv.waitForLog(/\[Error\] server: 127\.0\.0\.1:\d+: TLS certificate reload failed, keeping the old one: cannot load TLS certificate '.*live-cert\.pem': no start line/),
    srv.log());
  assert.equal(await peerCN(), 'second');
  assert.equal(srv.proc.exitCode, null);
});

test('a bad key at load: exit 1 with the message', async () => {
  const d = tempDir();
  const bad = path.join(d, 'bad-key.pem');
  fs.writeFileSync(bad, '-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n');
  const script = writeScript(d, `kr.listen{ port = 0, tls = { cert = ${luaString(a.cert)}, key = ${luaString(bad)} } }\n${HUB}`);
  const r = await runKestrun(['--port-file', path.join(d, 'port'), script]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /main\.lua:1: kr\.listen: cannot load TLS key '.*bad-key\.pem': /);
  assert.ok(!fs.existsSync(path.join(d, 'port')), 'nothing was bound');
  fs.rmSync(d, { recursive: true, force: true });
});
