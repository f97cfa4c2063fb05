'use strict';
// The CPU-slice hook, the memory cap, and yielding outside a fiber (architecture.md decisions;
// lua-api.md section 5 last paragraph).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { startServer, request, runKestrun, tempDir, writeScript } = require('../lib/server');

let srv;
let memSrv;
before(async () => {
  srv = await startServer({ scripts: ['limits.lua'] });
  memSrv = await startServer({ scripts: ['memory.lua'] });
});
after(async () => {
  if (srv) await srv.stop();
  if (memSrv) await memSrv.stop();
});

const ERROR_BODY = '{"error":"Internal Server Error"}';
const get = (p, timeoutMs = 15000) => request(srv.port, { path: p, timeoutMs });

async function healthy() {
  const r = await get('/hello');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'hi');
}

test('an endless loop gets 500 and the server keeps serving', async () => {
  const t0 = Date.now();
  const r = await get('/spin');
  assert.equal(r.status, 500);
  assert.equal(r.body, ERROR_BODY);
  assert.ok(Date.now() - t0 < 5000, `stopped in ${Date.now() - t0} ms`);
  await healthy();
});

test('pcall cannot swallow the CPU-slice error', async () => {
  const r = await get('/spin-pcall');
  assert.equal(r.status, 500, r.body);
  assert.equal(r.body, ERROR_BODY);
  await healthy();
});

test('pcall in a loop cannot swallow it either', async () => {
  const t0 = Date.now();
  const r = await get('/spin-pcall-loop');
  assert.equal(r.status, 500, r.body);
  assert.ok(Date.now() - t0 < 5000, `stopped in ${Date.now() - t0} ms`);
  await healthy();
});

test('xpcall cannot swallow it', async () => {
  const r = await get('/spin-xpcall');
  assert.equal(r.status, 500, r.body);
  await healthy();
});

test('other requests are served again after a runaway handler', async () => {
  const spin = get('/spin');
  const ok = get('/hello');
  assert.equal((await spin).status, 500);
  assert.equal((await ok).status, 200);
});

test('work that yields between short slices is not stopped', async () => {
  const r = await get('/busy-yielding');
  assert.equal(r.status, 200, r.body);
  assert.equal(r.body, 'done');
});

test('the memory cap stops a runaway table: 500, server keeps serving', async () => {
  const mget = (p) => request(memSrv.port, { path: p, timeoutMs: 60000 });
  const t0 = Date.now();
  const r = await mget('/mem');
  assert.equal(r.status, 500, r.body);
  assert.equal(r.body, ERROR_BODY);
  assert.ok(Date.now() - t0 < 15000, `stopped in ${Date.now() - t0} ms`);
  assert.ok(await memSrv.waitForLog(/memory/i), `the log says it was memory:\n${memSrv.log()}`);
  assert.equal((await mget('/hello')).body, 'hi');
  const ok = await mget('/alloc-ok');
  assert.equal(ok.status, 200);
  assert.equal(ok.body, '10000');
  // and again: the state got its memory back
  assert.equal((await mget('/mem')).status, 500);
  assert.equal((await mget('/hello')).body, 'hi');
});

test('the memory cap stops one huge string: 500', async () => {
  const r = await request(memSrv.port, { path: '/mem-string', timeoutMs: 30000 });
  assert.equal(r.status, 500, r.body);
  assert.equal((await request(memSrv.port, { path: '/hello' })).body, 'hi');
});

test('kr.sleep inside coroutine.wrap: 500 and a clear error mentioning kr.sleep in the log', async () => {
  const r = await get('/yield-in-wrap');
  assert.equal(r.status, 500, r.body);
  assert.equal(r.body, ERROR_BODY);
  assert.ok(await srv.waitForLog(/kr\.sleep/), `log:\n${srv.log()}`);
  await healthy();
});

test('kr.sleep inside coroutine.resume returns false and an error mentioning kr.sleep', async () => {
  const r = await get('/yield-in-resume');
  assert.equal(r.status, 200, r.body);
  const v = JSON.parse(r.body);
  assert.equal(v.ok, false, `resume reported ${r.body}`);
  assert.match(v.err, /kr\.sleep/);
});

test('plain coroutines still work inside a handler', async () => {
  const r = await get('/plain-coroutine');
  assert.equal(r.status, 200);
  assert.equal(r.body, '123');
});

test('kr.sleep at load time: exit 1 with kr.sleep and FILE:LINE: in stderr', async () => {
  const dir = tempDir();
  const file = writeScript(dir, 'kr.map_route("GET", "/x", function(req, res) res:text("x") end)\n\nkr.sleep(10)\n', 'sleep_at_load.lua');
  const r = await runKestrun(['--listen', '127.0.0.1:0', '--port-file', path.join(dir, 'port'), file]);
  assert.equal(r.code, 1, `exit ${r.code} ${r.signal}; stderr:\n${r.stderr}`);
  assert.match(r.stderr, /kr\.sleep/);
  assert.match(r.stderr, /sleep_at_load\.lua:3:/);
});

test('an endless loop at load time: exit 1 with FILE:LINE: (load budget), not a hang', async () => {
  const dir = tempDir();
  const file = writeScript(dir, 'kr.map_route("GET", "/x", function(req, res) res:text("x") end)\nwhile true do end\n', 'spin_at_load.lua');
  // The load budget is CPU time (10 s): on a loaded machine that takes longer in wall time, so
  // the bound here is generous and only tells "stopped by the budget" from "hangs for ever".
  const r = await runKestrun(['--listen', '127.0.0.1:0', '--port-file', path.join(dir, 'port'), file], { timeoutMs: 90000 });
  assert.equal(r.timedOut, false, 'stopped on its own');
  assert.equal(r.code, 1, `exit ${r.code} ${r.signal}; stderr:\n${r.stderr}`);
  assert.match(r.stderr, /spin_at_load\.lua:2:/);
});

test('a runaway allocation at load time under kr.limits{ lua_max_memory_mb }: exit 1', async () => {
  const dir = tempDir();
  const file = writeScript(dir, 'kr.limits{ lua_max_memory_mb = 32 }\nlocal t = {}\nfor i = 1, 1e9 do t[i] = ("x"):rep(100) .. i end\n', 'mem_at_load.lua');
  const r = await runKestrun(['--listen', '127.0.0.1:0', '--port-file', path.join(dir, 'port'), file], { timeoutMs: 30000 });
  assert.equal(r.code, 1, `exit ${r.code} ${r.signal}; stderr:\n${r.stderr}`);
  assert.match(r.stderr, /memory/i);
  assert.match(r.stderr, /mem_at_load\.lua/);
});
