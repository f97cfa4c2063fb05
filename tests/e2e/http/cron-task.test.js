'use strict';
// kr.cron (6-field cron timers) and background tasks (kr.task, task:progress, kr.task_status,
// kr.task_stop): lua-api.md section 8. Cron fire times are checked against kr.now() (UTC); the
// second-level expressions used here do not depend on the server's time zone.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { startServer, request, runKestrun, tempDir, writeScript, sleep, waitUntil } = require('../lib/server');

const MAIN = String.raw`
local fires = { every = {}, even = {}, slow = {}, stoppable = {} }
local function rec(name) return function() local l = fires[name]; l[#l + 1] = kr.now() end end
kr.cron("* * * * * *", rec("every"))
kr.cron("*/2 * * * * *", rec("even"))
kr.cron("* * * * * *", function() rec("slow")() kr.sleep(1500) end)
local stoppable = kr.cron("* * * * * *", rec("stoppable"))
kr.map_route("GET", "/cron/fires", function(req, res) res:json(fires) end)
kr.map_route("GET", "/cron/stop", function(req, res)
  local before = tostring(stoppable)
  local a, b = stoppable:stop(), stoppable:stop()
  res:json({ first = a, second = b, before = before, after = tostring(stoppable) })
end)
kr.map_route("GET", "/cron/bad", function(req, res)
  local ok, err = pcall(kr.cron, req.query.expr, function() end)
  res:json({ ok = ok, err = tostring(err) })
end)

local kinds = {}
function kinds.ok(task, args)
  for i = 1, 3 do
    kr.sleep(args.ms)
    task:progress(i * 30, "step " .. i)
  end
  return { sum = 6, list = { 1, 2, 3 }, id = task.id, name = task.name, tag = args.tag }
end
function kinds.fail(task, args) kr.sleep(20) error("task-boom-4711\nsecond line") end
function kinds.long(task, args)
  task:progress(5, "waiting")
  for i = 1, 100 do kr.sleep(100) end
  return "never"
end
function kinds.clamp(task, args)
  local r1 = task:progress(150, "over")
  kr.sleep(300)
  task:progress(-5)
  kr.sleep(300)
  task:progress(42.9, "fraction")
  kr.sleep(300)
  return nil
end
function kinds.badresult(task, args) return function() end end
function kinds.self(task, args)
  local ok, msg = kr.task_stop(task.id)
  return { ok = ok, msg = msg }
end
function kinds.quick(task, args) return args.n end
local last_task
function kinds.keep(task, args) last_task = task return true end

kr.map_route("POST", "/task/{kind}", function(req, res)
  local q = req.query
  local opts = q.name and { name = q.name } or nil
  local id, err = kr.task(kinds[req.params.kind], { ms = 100, tag = q.tag, n = tonumber(q.n) }, opts)
  if not id then return res:json({ err = err }, 503) end
  res:json({ id = id, now = kr.task_status(id) })
end)
kr.map_route("GET", "/status", function(req, res) res:json(kr.task_status(req.query.id) or { unknown = true }) end)
kr.map_route("GET", "/stop", function(req, res)
  local ok, msg = kr.task_stop(req.query.id)
  res:json({ ok = ok, msg = msg or kr.json.null })
end)
kr.map_route("GET", "/late-progress", function(req, res)
  res:json({ late = last_task:progress(10, "late"), id = last_task.id, s = tostring(last_task) })
end)
kr.map_route("GET", "/stop-early", function(req, res)
  local ran = false
  local id = kr.task(function() ran = true end)
  local ok = kr.task_stop(id)
  kr.sleep(50)
  res:json({ id = id, ok = ok, ran = ran, status = kr.task_status(id) })
end)
kr.map_route("GET", "/task-args", function(req, res)
  local results = {}
  for _, bad in ipairs({ "x", 1 }) do
    local ok, err = pcall(kr.task, bad)
    results[#results + 1] = err
  end
  local ok, err = pcall(kr.task, function() end, nil, { name = 5 })
  results[#results + 1] = err
  res:json(results)
end)
`;

let srv;
let started;
before(async () => {
  started = Date.now();
  srv = await startServer({ script: MAIN });
});
// A clean exit: under the sanitizer builds a leak or a bad access shows up here.
async function stopClean(server) {
  const st = await server.stop();
  assert.deepEqual(st, { code: 0, signal: null }, server.log());
  assert.doesNotMatch(server.log(), /Sanitizer|runtime error:/);
}
after(async () => { if (srv) await stopClean(srv); });

async function getJson(p) {
  const r = await request(srv.port, { path: p });
  assert.equal(r.status, 200, `${p}: ${r.status} ${r.body}`);
  return JSON.parse(r.body);
}
async function post(p) {
  const r = await request(srv.port, { method: 'POST', path: p });
  return { status: r.status, ...JSON.parse(r.body) };
}
const status = (id) => getJson(`/status?id=${encodeURIComponent(id)}`);
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const secondOf = (ts) => Number(ts.slice(17, 19));
const msOf = (ts) => Number(ts.slice(20, 23));
const epochOf = (ts) => Math.floor(Date.parse(ts) / 1000);

// ---- kr.cron ---------------------------------------------------------------------------------

test('kr.cron: "* * * * * *" fires every second at the start of the second; "*/2" every even second; a slow run skips ticks', async () => {
  await sleep(Math.max(0, started + 3300 - Date.now()));
  const f = await getJson('/cron/fires');
  const every = f.every;
  assert.ok(every.length >= 2 && every.length <= 4, `~3 fires in ~3 s: ${JSON.stringify(every)}`);
  for (let i = 1; i < every.length; i++)
    assert.equal(epochOf(every[i]) - epochOf(every[i - 1]), 1, `consecutive seconds: ${every}`);
  for (const ts of every) {
    assert.match(ts, ISO);
    assert.ok(msOf(ts) < 300, `fires just after the second starts: ${ts}`);
  }
  assert.ok(f.even.length >= 1 && f.even.length <= 2, `*/2: ${JSON.stringify(f.even)}`);
  for (const ts of f.even) assert.equal(secondOf(ts) % 2, 0, `even seconds only: ${f.even}`);
  // the slow job sleeps 1.5 s: the tick in between is skipped, so runs start 2 s apart
  assert.ok(f.slow.length >= 1, JSON.stringify(f.slow));
  for (let i = 1; i < f.slow.length; i++)
    assert.equal(epochOf(f.slow[i]) - epochOf(f.slow[i - 1]), 2, `skip rule: ${f.slow}`);
});

test('kr.cron: timer:stop() stops it; a second stop returns false', async () => {
  const s = await getJson('/cron/stop');
  assert.deepEqual(s, { first: true, second: false, before: "kr.Timer (cron '* * * * * *')", after: 'kr.Timer (stopped)' });
  const n = (await getJson('/cron/fires')).stoppable.length;
  assert.ok(n >= 1, 'it had fired');
  await sleep(1300);
  const f = await getJson('/cron/fires');
  assert.equal(f.stoppable.length, n, 'no fire after stop');
  assert.ok(f.every.length > n, 'the others keep firing');
});

test('kr.cron: a bad expression raises with the parser message (at run time, via pcall)', async () => {
  const cases = {
    '61 * * * * *': "kr.cron: bad expression '61 * * * * *': second: 61 is out of range 0-59",
    '0 0 9 * * MON-XYZ': "kr.cron: bad expression '0 0 9 * * MON-XYZ': day-of-week: unknown name 'XYZ' (use SUN..SAT or numbers)",
    '0 0 0 30 2 *': "kr.cron: bad expression '0 0 0 30 2 *': day-of-month: the chosen days never occur in the chosen months",
  };
  for (const [expr, msg] of Object.entries(cases)) {
    const r = await getJson(`/cron/bad?expr=${encodeURIComponent(expr)}`);
    assert.equal(r.ok, false);
    assert.ok(r.err.endsWith(msg), `${expr}: ${r.err}`);
  }
});

test('kr.cron: a bad expression fails the load with FILE:LINE and the message', async () => {
  const dir = tempDir();
  const f = writeScript(dir, 'kr.map_route("GET", "/", function(req, res) res:text("x") end)\nkr.cron("* * * * *", function() end)\n');
  const r = await runKestrun(['--check', f]);
  assert.equal(r.code, 1, r.stderr);
  assert.ok(r.stderr.includes(`${f}:2: kr.cron: bad expression '* * * * *': expected 6 fields (second minute hour day-of-month month day-of-week), got 5`), r.stderr);
  // kr.task at load time is refused the same way
  const g = writeScript(dir, 'kr.task(function() end)\n', 'task.lua');
  const r2 = await runKestrun(['--check', g]);
  assert.equal(r2.code, 1, r2.stderr);
  assert.ok(r2.stderr.includes(`${g}:1: kr.task: cannot start a task while the scripts load`), r2.stderr);
});

// ---- kr.task ---------------------------------------------------------------------------------

test('kr.task: NotStarted, then Running with progress and status, then Completed with progress 100 and the result', async () => {
  const t0 = Date.now();
  const s = await post('/task/ok?tag=hello');
  assert.equal(s.status, 200);
  assert.match(s.id, GUID);
  assert.deepEqual(s.now, { id: s.id, name: s.id, state: 'NotStarted', progress: 0 },
    'queried in the same handler: not started yet, no times');
  await sleep(170);
  const mid = await status(s.id);
  assert.equal(mid.state, 'Running');
  assert.equal(mid.progress, 30);
  assert.equal(mid.status, 'step 1');
  assert.match(mid.started_at, ISO);
  assert.equal(mid.completed_at, undefined);
  assert.equal(mid.result, undefined);
  const done = await waitUntil(async () => { const x = await status(s.id); return x.state === 'Completed' && x; }, { timeoutMs: 3000 });
  assert.ok(done, 'completed');
  assert.equal(done.progress, 100);
  assert.equal(done.status, 'step 3', 'the last status message stays');
  assert.deepEqual(done.result, { sum: 6, list: [1, 2, 3], id: s.id, name: s.id, tag: 'hello' });
  assert.equal(done.error, undefined);
  assert.match(done.completed_at, ISO);
  const ran = Date.parse(done.completed_at) - Date.parse(done.started_at);
  assert.ok(ran >= 280 && ran < 2000, `ran ~300 ms: ${ran}`);
  assert.ok(Date.parse(done.started_at) >= t0 - 1000 && Date.parse(done.completed_at) <= Date.now() + 1000, 'wall-clock times');
  assert.deepEqual(Object.keys(done).sort(), ['completed_at', 'id', 'name', 'progress', 'result', 'started_at', 'state', 'status']);
});

test('kr.task: ids are unique GUIDs; opts.name names the task', async () => {
  const ids = new Set();
  for (let i = 0; i < 5; i++) {
    const s = await post(`/task/quick?n=${i}&name=LongOperation-${i}`);
    assert.match(s.id, GUID);
    assert.equal(s.now.name, `LongOperation-${i}`);
    ids.add(s.id);
  }
  assert.equal(ids.size, 5);
  const last = [...ids][4];
  assert.ok(await waitUntil(async () => (await status(last)).state === 'Completed'));
  const st = await status(last);
  assert.equal(st.result, 4);
  assert.equal(st.name, 'LongOperation-4');
});

test('kr.task: a failing task is Failed with the first line of its error; progress is clamped', async () => {
  const s = await post('/task/fail');
  const st = await waitUntil(async () => { const x = await status(s.id); return x.state === 'Failed' && x; });
  assert.ok(st, 'failed');
  assert.match(st.error, /\/main\.lua:\d+: task-boom-4711$/);
  assert.equal(st.result, undefined);
  assert.match(st.completed_at, ISO);
  assert.ok(await srv.waitForLog(/kr\.task '[0-9a-f-]+' \([0-9a-f-]+\) failed: \S*main\.lua:\d+: task-boom-4711/), srv.log());

  const bad = await post('/task/badresult');
  const b = await waitUntil(async () => { const x = await status(bad.id); return x.state !== 'NotStarted' && x.state !== 'Running' && x; });
  assert.equal(b.state, 'Failed');
  assert.equal(b.error, 'the result cannot be encoded as JSON: cannot encode a function');

  const c = await post('/task/clamp');
  await sleep(150);
  let x = await status(c.id);
  assert.deepEqual([x.progress, x.status], [100, 'over']);
  await sleep(300);
  x = await status(c.id);
  assert.deepEqual([x.progress, x.status], [0, 'over'], 'no status: the old one stays');
  await sleep(300);
  x = await status(c.id);
  assert.deepEqual([x.progress, x.status], [42, 'fraction'], 'rounded down to an integer');
  x = await waitUntil(async () => { const y = await status(c.id); return y.state === 'Completed' && y; });
  assert.equal(x.result, undefined, 'nil result');
  assert.equal(x.progress, 100);
});

test('kr.task_stop: a running task becomes Stopped; stopping again, unknown ids and self-stop give false + message', async () => {
  const s = await post('/task/long?name=stopme');
  await sleep(150);
  assert.equal((await status(s.id)).state, 'Running');
  assert.deepEqual(await getJson(`/stop?id=${s.id}`), { ok: true, msg: null });
  const st = await status(s.id);
  assert.equal(st.state, 'Stopped');
  assert.equal(st.progress, 5);
  assert.equal(st.status, 'waiting');
  assert.match(st.started_at, ISO);
  assert.match(st.completed_at, ISO);
  assert.equal(st.result, undefined);
  assert.equal(st.error, undefined);
  assert.deepEqual(await getJson(`/stop?id=${s.id}`), { ok: false, msg: 'the task is not running (Stopped)' });

  const q = await post('/task/quick?n=1');
  await waitUntil(async () => (await status(q.id)).state === 'Completed');
  assert.deepEqual(await getJson(`/stop?id=${q.id}`), { ok: false, msg: 'the task is not running (Completed)' });

  assert.deepEqual(await getJson('/stop?id=nope'), { ok: false, msg: 'no such task' });
  assert.deepEqual(await getJson('/stop?id=00000000-0000-4000-8000-000000000000'), { ok: false, msg: 'no such task' });
  assert.deepEqual(await getJson('/status?id=nope'), { unknown: true });
  assert.deepEqual(await getJson('/status?id=00000000-0000-4000-8000-000000000000'), { unknown: true });

  const me = await post('/task/self');
  const m = await waitUntil(async () => { const x = await status(me.id); return x.state === 'Completed' && x; });
  assert.deepEqual(m.result, { ok: false, msg: 'a task cannot stop itself (return from its function instead)' });
});

test('kr.task: a task stopped before it started; task object after the end; argument errors', async () => {
  const k = await post('/task/keep');
  await waitUntil(async () => (await status(k.id)).state === 'Completed');
  const late = await getJson('/late-progress');
  assert.deepEqual(late, { late: false, id: k.id, s: `kr.Task (${k.id}, Completed)` });
  assert.equal((await status(k.id)).status, undefined, 'late progress is not recorded');
  const early = await getJson('/stop-early');
  assert.equal(early.ok, true);
  assert.equal(early.ran, false, 'the function never ran');
  assert.equal(early.status.state, 'Stopped');
  assert.equal(early.status.started_at, undefined);
  assert.match(early.status.completed_at, ISO);
  const errs = await getJson('/task-args');
  assert.match(errs[0], /bad argument #1 to '.*' \(function expected, got string\)/);
  assert.match(errs[1], /bad argument #1 to '.*' \(function expected, got number\)/);
  assert.match(errs[2], /bad argument #3 to '.*' \(name must be a string\)/);
});

test('kr.limits{ max_tasks, task_retention_s }: finished tasks are dropped, oldest first; a full registry refuses', async () => {
  const s2 = await startServer({ script: String.raw`
kr.limits{ max_tasks = 3, task_retention_s = 1 }
kr.map_route("POST", "/quick", function(req, res) res:text(kr.task(function() return 1 end)) end)
kr.map_route("POST", "/long", function(req, res)
  local id, err = kr.task(function() kr.sleep(10000) end)
  res:text(id or ("fail: " .. err))
end)
kr.map_route("GET", "/status", function(req, res) local s = kr.task_status(req.query.id) res:text(s and s.state or "gone") end)
kr.map_route("GET", "/stop", function(req, res) res:text(tostring(kr.task_stop(req.query.id))) end)
` });
  try {
    const p = async (path) => (await request(s2.port, { method: 'POST', path })).body;
    const st = async (id) => (await request(s2.port, { path: `/status?id=${id}` })).body;
    const q = [await p('/quick'), await p('/quick'), await p('/quick')];
    await sleep(100);
    for (const id of q) assert.equal(await st(id), 'Completed');
    const q4 = await p('/quick');
    assert.equal(await st(q[0]), 'gone', 'the oldest finished task made room');
    assert.equal(await st(q[1]), 'Completed');
    await sleep(1200);
    assert.equal(await st(q[1]), 'gone', 'retention passed');
    assert.equal(await st(q4), 'gone');
    const l = [await p('/long'), await p('/long'), await p('/long')];
    assert.equal(await p('/long'), 'fail: too many tasks', 'three running tasks fill it');
    await sleep(50);
    for (const id of l) assert.equal(await st(id), 'Running');
    assert.equal((await request(s2.port, { path: `/stop?id=${l[0]}` })).body, 'true');
    const l4 = await p('/long');
    assert.notEqual(l4, 'fail: too many tasks');
    assert.equal(await st(l[0]), 'gone');
    await stopClean(s2);
  } finally { await s2.stop(); }
});

// ---- reload --------------------------------------------------------------------------------

test('a task survives a reload: it finishes on its generation and the new one sees its status; old crons stop', async () => {
  const script = (v) => String.raw`
local v = ${JSON.stringify(v)}
kr.map_route("GET", "/v", function(req, res) res:text(v) end)
kr.map_route("POST", "/start", function(req, res)
  res:text(kr.task(function(task)
    task:progress(10, "started on " .. v)
    kr.sleep(1500)
    return "done on " .. v
  end, nil, { name = "reload-" .. v }))
end)
kr.map_route("GET", "/status", function(req, res) res:json(kr.task_status(req.query.id) or { unknown = true }) end)
kr.cron("* * * * * *", function() kr.log("Information", "cron-tick-" .. v) end)
`;
  const s3 = await startServer({ script: script('v1'), args: ['--no-watch'] });
  try {
    const get = async (p) => (await request(s3.port, { path: p })).body;
    const id = (await request(s3.port, { method: 'POST', path: '/start' })).body;
    assert.match(id, GUID);
    assert.ok(await s3.waitForLog('cron-tick-v1', 2500), s3.log());
    const tmp = `${s3.scriptPaths[0]}.tmp`;
    fs.writeFileSync(tmp, script('v2'));
    fs.renameSync(tmp, s3.scriptPaths[0]);
    s3.proc.kill('SIGHUP');
    assert.ok(await waitUntil(async () => (await get('/v')) === 'v2', { timeoutMs: 5000 }), s3.log());
    const mid = JSON.parse(await get(`/status?id=${id}`));
    assert.equal(mid.state, 'Running', JSON.stringify(mid));
    assert.equal(mid.status, 'started on v1');
    assert.equal(mid.name, 'reload-v1');
    const ticksV1 = (s3.log().match(/cron-tick-v1/g) || []).length;
    const done = await waitUntil(async () => { const x = JSON.parse(await get(`/status?id=${id}`)); return x.state === 'Completed' && x; }, { timeoutMs: 4000 });
    assert.ok(done, s3.log());
    assert.equal(done.result, 'done on v1', 'finished on the generation it started on');
    assert.ok(await s3.waitForLog('cron-tick-v2', 2500), 'the new generation\'s cron runs');
    assert.equal((s3.log().match(/cron-tick-v1/g) || []).length, ticksV1, 'the old generation\'s cron stopped');
    await stopClean(s3);
  } finally { await s3.stop(); }
});
