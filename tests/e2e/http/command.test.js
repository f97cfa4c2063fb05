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
  const srv = await startServer({ script: versionScript('v1'), args: ['--no-watch'] });
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
  const srv = await startServer({ script: versionScript('v1'), args: ['--no-watch'] });
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
  const srv = await startServer({ script: versionScript('v1'), args: ['--no-watch'] });
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
  const srv = await startServer({ script: script('old'), args: ['--no-watch'] });
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

test('--watch (the default): replacing a loaded script reloads it without a signal', async () => {
  const srv = await startServer({ script: versionScript('w1') });
  try {
    assert.equal(await body(srv.port, '/v'), 'w1');
    await sleep(50);
    replaceFile(srv.scriptPaths[0], versionScript('w2'));
    assert.ok(await waitUntil(async () => (await body(srv.port, '/v')) === 'w2', { timeoutMs: 5000 }),
      `reloaded on change; log:\n${srv.log()}`);
    // an in-place rewrite (same inode) is seen too
    await sleep(50);
    fs.writeFileSync(srv.scriptPaths[0], versionScript('w3'));
    assert.ok(await waitUntil(async () => (await body(srv.port, '/v')) === 'w3', { timeoutMs: 5000 }),
      `reloaded on in-place write; log:\n${srv.log()}`);
  } finally { await srv.stop(); }
});

test('--no-watch: a changed script is not reloaded until SIGHUP', async () => {
  const srv = await startServer({ script: versionScript('n1'), args: ['--no-watch'] });
  try {
    replaceFile(srv.scriptPaths[0], versionScript('n2'));
    await sleep(1200);
    assert.equal(await body(srv.port, '/v'), 'n1');
    srv.proc.kill('SIGHUP');
    assert.ok(await waitUntil(async () => (await body(srv.port, '/v')) === 'n2', { timeoutMs: 5000 }), srv.log());
  } finally { await srv.stop(); }
});

const LOG_SCRIPT = 'kr.map_route("GET", "/log", function(req, res)\n' +
  '  kr.log("Debug", "lvl-debug-6402") kr.log("Information", "lvl-info-6402") kr.log("Warning", "lvl-warn-6402")\n' +
  '  res:text("ok")\nend)\n';

test('--log-level Warning hides Information; --log-level Debug shows Debug', async () => {
  const w = await startServer({ script: LOG_SCRIPT, args: ['--log-level', 'Warning'] });
  try {
    assert.equal(await body(w.port, '/log'), 'ok');
    assert.ok(await w.waitForLog('lvl-warn-6402'), w.log());
    assert.ok(!w.log().includes('lvl-info-6402'), 'Information hidden at Warning');
    assert.ok(!w.log().includes('lvl-debug-6402'));
  } finally { await w.stop(); }
  const d = await startServer({ script: LOG_SCRIPT, args: ['--log-level', 'Debug'] });
  try {
    assert.equal(await body(d.port, '/log'), 'ok');
    assert.ok(await d.waitForLog('lvl-warn-6402'), d.log());
    assert.ok(d.log().includes('lvl-debug-6402'), 'Debug shown at Debug');
    assert.ok(d.log().includes('lvl-info-6402'));
  } finally { await d.stop(); }
});

test('an unknown --log-level is rejected', async () => {
  const r = await runKestrun(['--log-level', 'Chatty', '--check', path.join(SCRIPTS, 'routes.lua')]);
  assert.ok(r.code === 2 || r.code === 1, `exit ${r.code}`);
});

test('--log-format json writes one JSON object per line', async () => {
  const srv = await startServer({ script: LOG_SCRIPT, args: ['--log-format', 'json'] });
  try {
    assert.equal(await body(srv.port, '/log'), 'ok');
    assert.ok(await srv.waitForLog('lvl-warn-6402'), srv.log());
    const lines = srv.stderr().split('\n').filter((l) => l.trim());
    assert.ok(lines.length >= 2);
    for (const l of lines) assert.doesNotThrow(() => JSON.parse(l), `not JSON: ${l}`);
    const warn = lines.map((l) => JSON.parse(l)).find((o) => JSON.stringify(o).includes('lvl-warn-6402'));
    assert.ok(warn, 'the message is in a JSON line');
    assert.match(JSON.stringify(warn), /Warning/);
  } finally { await srv.stop(); }
});

test('kr.listen in the script is used when there is no --listen (repeatable)', async () => {
  const srv = await startServer({
    listen: false,
    script: 'kr.listen{ host = "127.0.0.1", port = 0 }\nkr.listen{ host = "127.0.0.1", port = 0 }\n' + HELLO,
  });
  try {
    assert.equal(srv.ports.length, 2, `port file: ${fs.readFileSync(srv.portFile, 'utf8')}`);
    for (const p of srv.ports) assert.equal((await request(p, { path: '/hello' })).body, 'hi');
  } finally { await srv.stop(); }
});

test('with no kr.listen and no --listen it listens on 127.0.0.1:5000', async (t) => {
  const net = require('node:net');
  const free = await new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(5000, '127.0.0.1', () => s.close(() => resolve(true)));
  });
  if (!free) { t.skip('port 5000 is in use on this machine'); return; }
  const srv = await startServer({ listen: false, script: HELLO });
  try {
    assert.deepEqual(srv.ports, [5000]);
    assert.equal((await request(5000, { path: '/hello' })).body, 'hi');
  } finally { await srv.stop(); }
});
