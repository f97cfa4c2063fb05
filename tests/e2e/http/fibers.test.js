'use strict';
// Fibers and timers (lua-api.md section 5): kr.sleep concurrency, kr.after, kr.every, timer:stop,
// kr.spawn, kr.now, kr.log, kr.json.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { startServer, request, sleep, waitUntil } = require('../lib/server');

let srv;
before(async () => { srv = await startServer({ scripts: ['fibers.lua'] }); });
after(async () => { if (srv) await srv.stop(); });

const get = async (path) => {
  const r = await request(srv.port, { path });
  assert.equal(r.status, 200, `${path}: ${r.status} ${r.body}`);
  return r.body;
};

test('kr.sleep suspends only its fiber: 100 concurrent 500 ms sleeps finish together', async () => {
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const t0 = Date.now();
  const one = () => new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: srv.port, path: '/sleep', agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.setTimeout(20000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
  const results = await Promise.all(Array.from({ length: 100 }, one));
  const ms = Date.now() - t0;
  agent.destroy();
  assert.equal(results.filter((r) => r.status === 200 && r.body === 'slept').length, 100);
  assert.ok(ms >= 450, `each slept ~500 ms (total ${ms} ms)`);
  assert.ok(ms < 3000, `concurrent, not serial: total ${ms} ms`);
});

test('kr.sleep several times in one handler', async () => {
  const t0 = Date.now();
  assert.equal(await get('/sleep-many'), 'five');
  assert.ok(Date.now() - t0 >= 90);
});

test('a sleeping request does not delay another connection', async () => {
  const slow = request(srv.port, { path: '/sleep' });
  await sleep(50);
  const t0 = Date.now();
  assert.equal(await get('/hello'), 'hi');
  assert.ok(Date.now() - t0 < 300, 'answered while the other sleeps');
  assert.equal((await slow).body, 'slept');
});

test('kr.after runs once', async () => {
  const before = Number(await get('/after/count'));
  assert.equal(await get('/after/start'), 'started');
  assert.equal(Number(await get('/after/count')), before, 'not yet');
  const n = await waitUntil(async () => Number(await get('/after/count')) === before + 1, { timeoutMs: 2000 });
  assert.ok(n, 'ran');
  await sleep(300);
  assert.equal(Number(await get('/after/count')), before + 1, 'exactly once');
});

test('timer:stop cancels a pending kr.after', async () => {
  assert.equal(await get('/after/cancel'), 'cancelled');
  await sleep(400);
  assert.equal(await get('/after/cancelled-ran'), 'false');
});

test('a kr.after callback may kr.sleep', async () => {
  await get('/after/sleeper');
  assert.ok(await waitUntil(async () => (await get('/after/sleeper-state')) === 'woke', { timeoutMs: 2000 }));
});

test('kr.every ticks and timer:stop stops it', async () => {
  assert.equal(await get('/every/start'), 'started');
  await sleep(400);
  const stoppedAt = Number(await get('/every/stop'));
  assert.ok(stoppedAt >= 3, `ticked several times in 400 ms at 50 ms (got ${stoppedAt})`);
  assert.ok(stoppedAt <= 12, `not more often than asked (got ${stoppedAt})`);
  await sleep(300);
  assert.equal(Number(await get('/every/count')), stoppedAt, 'no ticks after stop');
});

test('kr.every skips a tick while the previous run is still going', async () => {
  await get('/every/slow/start');
  await sleep(700);
  const v = JSON.parse(await get('/every/slow/stop'));
  assert.equal(v.max_running, 1, 'never two runs at once');
  assert.ok(v.runs >= 2 && v.runs <= 7, `runs ${v.runs}`);
});

test('timers created at load time run', async () => {
  await waitUntil(async () => JSON.parse(await get('/load-timers')).ticks >= 2, { timeoutMs: 2000 });
  const v = JSON.parse(await get('/load-timers'));
  assert.ok(v.ticks >= 2, `ticks ${v.ticks}`);
  assert.equal(v.after, true);
  const n = Number(await get('/load-timers/stop'));
  await sleep(200);
  assert.equal(JSON.parse(await get('/load-timers')).ticks, n);
});

test('kr.spawn runs fn(...) in the background', async () => {
  assert.equal(await get('/spawn/start'), 'started:none', 'the handler did not wait for the spawned fiber');
  assert.ok(await waitUntil(async () => (await get('/spawn/result')) === 'xy', { timeoutMs: 2000 }));
});

test('an error in a spawned fiber is logged and does not hurt the server', async () => {
  assert.equal(await get('/spawn/error'), 'ok');
  assert.ok(await srv.waitForLog('spawned-fiber-boom-4821'), srv.log());
  assert.equal(await get('/hello'), 'hi');
});

test('kr.now() is UTC ISO-8601 with milliseconds', async () => {
  const s = await get('/now');
  assert.match(s, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.ok(Math.abs(Date.parse(s) - Date.now()) < 5000, `close to now: ${s}`);
});

test('kr.log writes to the log at its level', async () => {
  assert.equal(await get('/log'), 'logged');
  assert.ok(await srv.waitForLog('log-marker-warning-9157'), srv.log());
  assert.ok(srv.log().includes('log-marker-info-9157'), 'Information is shown by default');
  await sleep(100);
  assert.ok(!srv.log().includes('log-marker-debug-9157'), 'Debug is below the default level');
  const line = srv.log().split('\n').find((l) => l.includes('log-marker-warning-9157'));
  assert.match(line, /WRN|Warn/i, `the level is on the line: ${line}`);
});

test('kr.json.encode / decode / null', async () => {
  const v = JSON.parse(await get('/json'));
  assert.equal(v.enc, '{"Title":"x"}');
  assert.equal(v.enc_arr, '[1,2,3]');
  assert.equal(v.enc_null, '{"a":null}');
  assert.equal(v.null_alone, 'null');
  assert.equal(v.x2, 2);
  assert.equal(v.y, 'z');
  assert.equal(v.s, 'hé');
  assert.equal(v.t, true);
  assert.equal(v.f, 1.5);
  assert.equal(v.rt, 'v');
  assert.equal(await get('/json/null-decode'), 'true');
});
