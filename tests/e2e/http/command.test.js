'use strict';
// The kestrun command (lua-api.md section 1): options, exit codes, --check, --port-file,
// signals (SIGTERM graceful shutdown, SIGHUP reload).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { startServer, runKestrun, request, RawConn, tempDir, writeScript, sleep, waitUntil, SCRIPTS } = require('../lib/server');

const HELLO = 'kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)\n';

test('--help exits 0 and prints usage', async () => {
  const r = await runKestrun(['--help']);
  assert.equal(r.code, 0, r.stderr);
  const out = r.stdout + r.stderr;
  assert.match(out, /usage/i);
  assert.match(out, /--listen/);
  assert.match(out, /--port-file/);
  assert.match(out, /--check/);
  const h = await runKestrun(['-h']);
  assert.equal(h.code, 0);
});

test('--version prints a version and exits 0', async () => {
  const r = await runKestrun(['--version']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout + r.stderr, /\d+\.\d+/);
  const v = await runKestrun(['-V']);
  assert.equal(v.code, 0);
  assert.match(v.stdout + v.stderr, /\d+\.\d+/);
});

test('an unknown option exits 2', async () => {
  const r = await runKestrun(['--no-such-option', path.join(SCRIPTS, 'routes.lua')]);
  assert.equal(r.code, 2, `exit ${r.code}; stderr ${r.stderr}`);
  assert.ok(r.stderr.length > 0, 'says why on stderr');
});

test('an option missing its value exits 2', async () => {
  const r = await runKestrun([path.join(SCRIPTS, 'routes.lua'), '--listen']);
  assert.equal(r.code, 2, `exit ${r.code}; stderr ${r.stderr}`);
});

test('no script at all exits 2', async () => {
  const r = await runKestrun([]);
  assert.equal(r.code, 2, `exit ${r.code}; stderr ${r.stderr}`);
});

test('a missing script file exits 1', async () => {
  const r = await runKestrun(['--listen', '127.0.0.1:0', '/nonexistent/dir/missing.lua']);
  assert.equal(r.code, 1, `exit ${r.code}; stderr ${r.stderr}`);
  assert.match(r.stderr, /missing\.lua/);
});

test('--check on a good script exits 0 without serving', async () => {
  const r = await runKestrun(['--check', path.join(SCRIPTS, 'routes.lua')], { timeoutMs: 5000 });
  assert.equal(r.timedOut, false, 'returned on its own');
  assert.equal(r.code, 0, r.stderr);
});

test('--check on a syntax error exits 1 with FILE:LINE:', async () => {
  const dir = tempDir();
  const f = writeScript(dir, HELLO + '\nlocal x = = 1\n', 'syntax_error.lua');
  const r = await runKestrun(['--check', f]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /syntax_error\.lua:3:/);
});

test('--check on a load-time runtime error exits 1 with FILE:LINE:', async () => {
  const dir = tempDir();
  const f = writeScript(dir, HELLO + 'error("boom-check")\n', 'runtime_error.lua');
  const r = await runKestrun(['--check', f]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /runtime_error\.lua:2:/);
  assert.match(r.stderr, /boom-check/);
});

test('--check checks every script given', async () => {
  const dir = tempDir();
  const good = writeScript(dir, HELLO, 'good.lua');
  const bad = writeScript(dir, 'local = 1\n', 'second_bad.lua');
  const r = await runKestrun(['--check', good, bad]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /second_bad\.lua:1:/);
});

test('a load-time error("boom") exits 1 with FILE:LINE:', async () => {
  const dir = tempDir();
  const f = writeScript(dir, HELLO + '\n\nerror("boom")\n', 'boom.lua');
  const r = await runKestrun(['--listen', '127.0.0.1:0', '--port-file', path.join(dir, 'port'), f]);
  assert.equal(r.code, 1, `exit ${r.code} ${r.signal}; ${r.stderr}`);
  assert.match(r.stderr, /boom\.lua:4:/);
  assert.match(r.stderr, /boom/);
});

test('a syntax error at startup exits 1 with FILE:LINE:', async () => {
  const dir = tempDir();
  const f = writeScript(dir, HELLO + 'kr.map_route("GET", "/x", function(req, res)\n', 'unclosed.lua');
  const r = await runKestrun(['--listen', '127.0.0.1:0', f]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /unclosed\.lua:\d+:/);
});

test('--port-file holds the bound port', async () => {
  const srv = await startServer({ script: HELLO });
  try {
    const text = fs.readFileSync(srv.portFile, 'utf8');
    assert.match(text, /^\d+\n?$/);
    assert.equal(Number(text.trim()), srv.port);
    assert.equal((await request(srv.port, { path: '/hello' })).body, 'hi');
  } finally { await srv.stop(); }
});

test('two --listen give two ports in the port file, both serve', async () => {
  const srv = await startServer({ script: HELLO, args: ['--listen', '127.0.0.1:0'] });
  try {
    const lines = fs.readFileSync(srv.portFile, 'utf8').split('\n').filter(Boolean);
    assert.equal(lines.length, 2, `port file: ${JSON.stringify(lines)}`);
    const [a, b] = lines.map(Number);
    assert.notEqual(a, b);
    assert.equal((await request(a, { path: '/hello' })).body, 'hi');
    assert.equal((await request(b, { path: '/hello' })).body, 'hi');
  } finally { await srv.stop(); }
});

test('--listen replaces what the script asks with kr.listen', async () => {
  // port 1 is privileged: if the script's listener were used, startup would fail
  const srv = await startServer({ script: 'kr.listen{ host = "127.0.0.1", port = 1 }\n' + HELLO });
  try {
    assert.equal((await request(srv.port, { path: '/hello' })).body, 'hi');
    assert.equal(srv.ports.length, 1, 'only the --listen port is bound');
  } finally { await srv.stop(); }
});

test('SIGTERM: an in-flight sleeping request completes, then exit 0', async () => {
  const srv = await startServer({
    script: HELLO + 'kr.map_route("GET", "/slow", function(req, res) kr.sleep(300) res:text("done") end)\n',
  });
  const inflight = request(srv.port, { path: '/slow' });
  await sleep(80);
  const stopped = srv.stop('SIGTERM');
  const r = await inflight;
  assert.equal(r.status, 200);
  assert.equal(r.body, 'done');
  const st = await stopped;
  assert.deepEqual(st, { code: 0, signal: null }, srv.stderr());
});

test('SIGTERM: new connections are refused after shutdown', async () => {
  const srv = await startServer({ script: HELLO });
  const port = srv.port;
  const st = await srv.stop('SIGTERM');
  assert.equal(st.code, 0, srv.stderr());
  await assert.rejects(request(port, { path: '/hello', timeoutMs: 2000 }));
});

test('SIGINT: exit 0', async () => {
  const srv = await startServer({ script: HELLO });
  const st = await srv.stop('SIGINT');
  assert.deepEqual(st, { code: 0, signal: null }, srv.stderr());
});

function versionScript(body) {
  return `kr.map_route("GET", "/v", function(req, res) res:text(${JSON.stringify(body)}) end)\n`;
}
function replaceFile(file, text) {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}
async function body(port, p) {
  return (await request(port, { path: p })).body;
}

test('SIGHUP reloads a replaced script; an open keep-alive connection keeps working', async () => {
  const srv = await startServer({ script: versionScript('v1') });
  const c = await new RawConn(srv.port).connect();
  try {
    c.write('GET /v HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal((await c.readResponse()).text, 'v1');
    replaceFile(srv.scriptPaths[0], versionScript('v2'));
    srv.proc.kill('SIGHUP');
    assert.ok(await waitUntil(async () => (await body(srv.port, '/v')) === 'v2', { timeoutMs: 5000 }),
      `new body served; log:\n${srv.log()}`);
    c.write('GET /v HTTP/1.1\r\nHost: x\r\n\r\n');
    const r = await c.readResponse();
    assert.equal(r.status, 200);
    assert.equal(r.text, 'v2');
    assert.equal(srv.proc.exitCode, null, 'still running');
  } finally {
    c.close();
    await srv.stop();
  }
});

test('SIGHUP with a broken new version: the old one keeps serving and the error is logged', async () => {
  const srv = await startServer({ script: versionScript('v1') });
  try {
    assert.equal(await body(srv.port, '/v'), 'v1');
    replaceFile(srv.scriptPaths[0], versionScript('v2') + '\nlocal = broken\n');
    srv.proc.kill('SIGHUP');
    assert.ok(await srv.waitForLog(/main\.lua:3:/, 5000), `error logged with FILE:LINE; log:\n${srv.log()}`);
    await sleep(100);
    assert.equal(await body(srv.port, '/v'), 'v1');
    assert.equal(srv.proc.exitCode, null, 'still running');
    // and a good version after that is picked up
    replaceFile(srv.scriptPaths[0], versionScript('v3'));
    srv.proc.kill('SIGHUP');
    assert.ok(await waitUntil(async () => (await body(srv.port, '/v')) === 'v3', { timeoutMs: 5000 }), srv.log());
  } finally { await srv.stop(); }
});

test('SIGHUP with a load-time runtime error in the new version keeps the old one', async () => {
  const srv = await startServer({ script: versionScript('v1') });
  try {
    replaceFile(srv.scriptPaths[0], versionScript('v2') + 'error("reload-boom-3317")\n');
    srv.proc.kill('SIGHUP');
    assert.ok(await srv.waitForLog('reload-boom-3317', 5000), srv.log());
    await sleep(100);
    assert.equal(await body(srv.port, '/v'), 'v1');
  } finally { await srv.stop(); }
});

test('a request sleeping across a reload finishes on its old state', async () => {
  const script = (v) => `kr.map_route("GET", "/slow", function(req, res) kr.sleep(400) res:text(${JSON.stringify(v)}) end)\n` +
    versionScript(v);
  const srv = await startServer({ script: script('old') });
  try {
    const inflight = request(srv.port, { path: '/slow' });
    await sleep(80);
    replaceFile(srv.scriptPaths[0], script('new'));
    srv.proc.kill('SIGHUP');
    assert.ok(await waitUntil(async () => (await body(srv.port, '/v')) === 'new', { timeoutMs: 5000 }), srv.log());
    const r = await inflight;
    assert.equal(r.status, 200);
    assert.equal(r.body, 'old');
  } finally { await srv.stop(); }
});
