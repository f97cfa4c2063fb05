'use strict';
// The demo (scripts/examples/signalr_demo.lua, what `make demo` runs) with the official
// @microsoft/signalr client: every route and event with its exact payload (field names and types),
// the process route's 11 Progress events while other requests are served, SystemMetrics and the
// cron heartbeat on schedule (their intervals shortened through KR_DEMO_METRICS_MS and
// KR_DEMO_HEARTBEAT_CRON), the operation routes (kr.task) reaching Completed, group notifications
// reaching members only, log lines forwarded by kr.logger{ signalr = true }, the dashboard files
// and the PORT variable.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { REPO, startServer, request, sleep } = require('../lib/server');
const { connect, stopAll, collect, until, freePort } = require('../lib/signalr');

const fs = require('node:fs');

const DEMO = path.join(REPO, 'scripts', 'examples', 'signalr_demo.lua');
// The demo serves the dashboard's own copy of the browser bundle and refuses to load without it.
const BUNDLE = path.join(REPO, 'scripts', 'examples', 'dashboard', 'node_modules', '@microsoft', 'signalr',
  'dist', 'browser', 'signalr.min.js');
const SKIP = fs.existsSync(BUNDLE) ? false
  : 'scripts/examples/dashboard/node_modules is missing @microsoft/signalr (run scripts/deps.sh or npm ci there)';
if (SKIP) process.stdout.write(`# skipping the demo tests: ${SKIP}\n`);
const T = { skip: SKIP };
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const TIMESPAN = /^(\d+\.)?\d\d:\d\d:\d\d(\.\d{7})?$/; // .NET TimeSpan "c"
const METRICS_MS = 1000;

let srv;
before(async () => {
  if (SKIP) return;
  srv = await startServer({
    scripts: [DEMO],
    args: ['--no-watch'],
    env: { KR_DEMO_METRICS_MS: String(METRICS_MS), KR_DEMO_HEARTBEAT_CRON: '*/2 * * * * *' },
  });
});
after(async () => { if (srv) await srv.stop(); });

const hubUrl = () => srv.url('/runtime');

// ReceiveEvent payloads named `name`, each with the time it arrived.
function events(conn, name) {
  const got = [];
  conn.on('ReceiveEvent', (e) => {
    if (e && e.eventName === name) got.push({ ...e, at: Date.now() });
  });
  return got;
}

function keys(o) { return Object.keys(o).sort(); }

async function call(method, p, expectStatus = 200) {
  const r = await request(srv.port, { method, path: p, body: method === 'GET' ? undefined : '' });
  assert.equal(r.status, expectStatus, `${method} ${p}: ${r.status} ${r.body}\n${srv.log().slice(-1500)}`);
  return r;
}

async function callJson(method, p, expectStatus = 200) {
  const r = await call(method, p, expectStatus);
  assert.match(r.headers['content-type'], /^application\/json/);
  return JSON.parse(r.body);
}

test('the dashboard: index, its script and style, the official browser bundle', T, async () => {
  const index = await call('GET', '/');
  assert.match(index.headers['content-type'], /^text\/html/);
  assert.match(index.body, /<script src="\/lib\/signalr\/signalr\.min\.js"><\/script>/);
  assert.match(index.body, /<script src="\/app\.js"><\/script>/);
  assert.doesNotMatch(index.body, /https?:\/\/(cdn|unpkg)/, 'no CDN');
  const bundle = await call('GET', '/lib/signalr/signalr.min.js');
  assert.match(bundle.headers['content-type'], /^text\/javascript/);
  assert.ok(bundle.body.includes('HubConnectionBuilder'));
  assert.match((await call('GET', '/app.js')).headers['content-type'], /^text\/javascript/);
  assert.match((await call('GET', '/app.css')).headers['content-type'], /^text\/css/);
});

test('GET /api/log/{level}: ReceiveLog {level, message, timestamp} to every client', T, async () => {
  const a = await connect(hubUrl());
  const b = await connect(hubUrl());
  try {
    const logsA = collect(a, 'ReceiveLog');
    const logsB = collect(b, 'ReceiveLog');
    const mine = (list) => list.map(([m]) => m).filter((m) => /^Event occurred at /.test(m.message));
    for (const level of ['Information', 'Warning', 'Error']) {
      const r = await call('GET', `/api/log/${level}`);
      assert.match(r.headers['content-type'], /^text\/plain/);
      assert.equal(r.body, 'Log broadcasted');
    }
    await until(() => mine(logsA).length === 3 && mine(logsB).length === 3, 'three log lines on both clients');
    const got = mine(logsA);
    assert.deepEqual(got.map((m) => m.level), ['Information', 'Warning', 'Error']);
    for (const m of got) {
      assert.deepEqual(keys(m), ['level', 'message', 'timestamp']);
      assert.match(m.message, /^Event occurred at \d\d:\d\d:\d\d$/);
      assert.match(m.timestamp, ISO);
    }
    assert.deepEqual(mine(logsB), got);

    const bad = await call('GET', '/api/log/Loud', 400);
    assert.match(bad.body, /invalid level 'Loud'/);
  } finally { await stopAll([a, b]); }
});

test('GET /api/notify: ReceiveEvent Notification {Title, Message, Timestamp}', T, async () => {
  const conn = await connect(hubUrl());
  try {
    const got = events(conn, 'Notification');
    const r = await call('GET', '/api/notify');
    assert.equal(r.body, 'Event broadcasted');
    await until(() => got.length === 1, 'the Notification');
    const e = got[0];
    assert.deepEqual(keys(e), ['at', 'data', 'eventName', 'timestamp']);
    assert.match(e.timestamp, ISO);
    assert.deepEqual(keys(e.data), ['Message', 'Timestamp', 'Title']);
    assert.equal(e.data.Title, 'System Update');
    assert.equal(e.data.Message, 'New features available');
    assert.match(e.data.Timestamp, ISO);
  } finally { await conn.stop(); }
});

test('POST /api/notify-group/{group}: ReceiveMessage {Message} reaches the members only', T, async () => {
  const member = await connect(hubUrl());
  const other = await connect(hubUrl());
  try {
    const joined = collect(member, 'GroupJoined');
    const left = collect(member, 'GroupLeft');
    const gotMember = collect(member, 'ReceiveMessage');
    const gotOther = collect(other, 'ReceiveMessage');
    const barrier = events(other, 'Notification');
    const barrierMember = events(member, 'Notification');

    await member.invoke('JoinGroup', 'Admins');
    await until(() => joined.length === 1, 'GroupJoined');
    assert.deepEqual(joined, [['Admins']]);

    const r = await call('POST', '/api/notify-group/Admins');
    assert.equal(r.body, 'Sent to group: Admins');
    await until(() => gotMember.length === 1, 'ReceiveMessage on the member');
    assert.deepEqual(gotMember, [[{ Message: 'Group notification' }]]);
    // A broadcast to all as a barrier: messages to one connection arrive in order, so once the
    // other client has this one, a group message sent before it would have arrived too.
    await call('GET', '/api/notify');
    await until(() => barrier.length === 1 && barrierMember.length === 1, 'the barrier');
    assert.deepEqual(gotOther, [], 'not a member: nothing');

    // Another group's message does not reach the member; after LeaveGroup, neither does Admins'.
    await call('POST', '/api/notify-group/Operators');
    await member.invoke('LeaveGroup', 'Admins');
    await until(() => left.length === 1, 'GroupLeft');
    await call('POST', '/api/notify-group/Admins');
    await call('GET', '/api/notify');
    await until(() => barrier.length === 2 && barrierMember.length === 2, 'the second barrier');
    assert.equal(gotMember.length, 1, 'nothing after LeaveGroup, nothing from another group');
    assert.deepEqual(gotOther, []);

    await call('GET', '/api/notify-group/Admins', 405);
  } finally { await stopAll([member, other]); }
});

test('POST /api/process: 11 Progress events (0..100) every 500 ms, then "Complete"; other requests are served meanwhile', T, async () => {
  const conn = await connect(hubUrl());
  try {
    const got = events(conn, 'Progress');
    const started = Date.now();
    const processing = request(srv.port, { method: 'POST', path: '/api/process', body: '' })
      .then((r) => ({ ...r, at: Date.now() }));

    // While the route runs, other routes answer at once.
    const served = [];
    while (got.length < 8) {
      const t0 = Date.now();
      const r = await request(srv.port, { path: '/api/status' });
      served.push({ status: r.status, ms: Date.now() - t0, progressSoFar: got.length });
      await sleep(150);
      if (Date.now() - started > 10000) break;
    }
    assert.ok(served.length >= 10, `${served.length} requests served during the process`);
    for (const s of served) {
      assert.equal(s.status, 200);
      assert.ok(s.ms < 400, `a request took ${s.ms} ms during the process`);
    }

    const r = await processing;
    assert.equal(r.status, 200);
    assert.equal(r.body, 'Complete');
    assert.match(r.headers['content-type'], /^text\/plain/);
    await until(() => got.length >= 11, '11 Progress events', 2000);
    assert.equal(got.length, 11);
    assert.deepEqual(got.map((e) => e.data.Percent), [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    for (const e of got) {
      assert.deepEqual(keys(e.data), ['Percent', 'Status']);
      assert.equal(typeof e.data.Percent, 'number');
      assert.equal(e.data.Status, `Processing item ${e.data.Percent}`);
      assert.match(e.timestamp, ISO);
    }
    // 500 ms before each event: the first after ~0.5 s, the answer after ~5.5 s.
    const stamps = got.map((e) => Date.parse(e.timestamp));
    for (let i = 1; i < stamps.length; i++) {
      const gap = stamps[i] - stamps[i - 1];
      assert.ok(gap >= 450 && gap <= 1000, `gap ${i}: ${gap} ms`);
    }
    assert.ok(got[0].at - started >= 450, 'the first event after a 500 ms step');
    assert.ok(r.at - started >= 5400, `answered after ${r.at - started} ms`);
    assert.ok(r.at >= got[10].at - 50, 'the answer comes after the last event');
  } finally { await conn.stop(); }
});

test('SystemMetrics every KR_DEMO_METRICS_MS: {CpuPercent, MemoryMB, Timestamp} with plausible numbers', T, async () => {
  const conn = await connect(hubUrl());
  try {
    const got = events(conn, 'SystemMetrics');
    await until(() => got.length >= 3, 'three SystemMetrics events', METRICS_MS * 5);
    for (const e of got) {
      assert.deepEqual(keys(e.data), ['CpuPercent', 'MemoryMB', 'Timestamp']);
      assert.equal(typeof e.data.CpuPercent, 'number');
      assert.equal(typeof e.data.MemoryMB, 'number');
      assert.ok(e.data.CpuPercent >= 0 && e.data.CpuPercent <= 100 * require('node:os').cpus().length,
        `CpuPercent ${e.data.CpuPercent}`);
      assert.ok(e.data.MemoryMB > 1 && e.data.MemoryMB < 2048, `MemoryMB ${e.data.MemoryMB}`);
      assert.equal(Math.round(e.data.MemoryMB * 100) / 100, e.data.MemoryMB, 'two decimals');
      assert.match(e.data.Timestamp, ISO);
    }
    for (let i = 1; i < got.length; i++) {
      const gap = Date.parse(got[i].data.Timestamp) - Date.parse(got[i - 1].data.Timestamp);
      assert.ok(gap >= METRICS_MS * 0.8 && gap <= METRICS_MS * 1.6, `gap ${gap} ms`);
    }
  } finally { await conn.stop(); }
});

test('ServerHeartbeat on the cron schedule: {Type, ServerTime, Uptime, ConnectedClients, Message}', T, async () => {
  const conn = await connect(hubUrl());
  try {
    const got = events(conn, 'ServerHeartbeat');
    await until(() => got.length >= 2, 'two heartbeats', 6000);
    for (const e of got) {
      const d = e.data;
      assert.deepEqual(keys(d), ['ConnectedClients', 'Message', 'ServerTime', 'Type', 'Uptime']);
      assert.equal(d.Type, 'Heartbeat');
      assert.equal(d.Message, 'Server heartbeat from scheduled task');
      assert.match(d.ServerTime, ISO);
      assert.match(d.Uptime, TIMESPAN);
      assert.ok(Number.isInteger(d.ConnectedClients) && d.ConnectedClients >= 1, `ConnectedClients ${d.ConnectedClients}`);
      // */2 in the seconds field: an even second, just after it starts.
      const t = new Date(d.ServerTime);
      assert.equal(t.getUTCSeconds() % 2, 0, `fired at ${d.ServerTime}`);
      assert.ok(t.getUTCMilliseconds() < 600, `fired late in its second: ${d.ServerTime}`);
    }
    const gap = Date.parse(got[1].data.ServerTime) - Date.parse(got[0].data.ServerTime);
    assert.ok(gap >= 1700 && gap <= 2300, `heartbeats ${gap} ms apart`);
  } finally { await conn.stop(); }
});

test('operations: POST /api/operation/start runs a task with OperationProgress and OperationComplete; status reaches Completed', T, async () => {
  const conn = await connect(hubUrl());
  try {
    const progress = events(conn, 'OperationProgress');
    const complete = events(conn, 'OperationComplete');

    const start = await callJson('POST', '/api/operation/start?seconds=2');
    assert.deepEqual(keys(start), ['Message', 'Success', 'TaskId']);
    assert.equal(start.Success, true);
    assert.equal(typeof start.TaskId, 'string');
    assert.ok(start.TaskId.length > 0);
    assert.equal(start.Message, `Starting long operation with ID: ${start.TaskId}`);
    const id = start.TaskId;
    // seconds=0 means 2 steps too (Kestrun's rule for values below 1).
    const zero = await callJson('POST', '/api/operation/start?seconds=0');
    assert.notEqual(zero.TaskId, id, 'each operation gets its own id');

    const running = await callJson('GET', `/api/operation/status/${encodeURIComponent(id)}`);
    assert.deepEqual(keys(running),
      ['CompletedAt', 'Message', 'OperationId', 'Progress', 'StartedAt', 'State', 'Status', 'TaskId']);
    assert.equal(running.TaskId, id);
    assert.equal(running.OperationId, id);
    assert.ok(['NotStarted', 'Running'].includes(running.State), `state ${running.State}`);
    assert.equal(running.Progress, 0);
    assert.equal(running.CompletedAt, null);
    assert.equal(running.Message, 'Operation status retrieved');

    const done = (tid) => complete.some((e) => e.data.TaskId === tid);
    await until(() => done(id) && done(zero.TaskId), 'both OperationComplete events', 6000);

    const mine = progress.filter((e) => e.data.TaskId === id);
    assert.deepEqual(mine.map((e) => [e.data.Step, e.data.Progress]), [[1, 50], [2, 100]]);
    for (const e of mine) {
      assert.deepEqual(keys(e.data), ['Message', 'Progress', 'Step', 'TaskId', 'Timestamp']);
      assert.equal(e.data.Message, `Processing step ${e.data.Step} of 2...`);
      assert.match(e.data.Timestamp, ISO);
    }
    const gap = Date.parse(mine[1].data.Timestamp) - Date.parse(mine[0].data.Timestamp);
    assert.ok(gap >= 900 && gap <= 1500, `steps ${gap} ms apart`);
    assert.deepEqual(progress.filter((e) => e.data.TaskId === zero.TaskId).map((e) => e.data.Step), [1, 2]);

    const end = complete.find((e) => e.data.TaskId === id).data;
    assert.deepEqual(keys(end), ['Message', 'Progress', 'TaskId', 'Timestamp']);
    assert.equal(end.Progress, 100);
    assert.equal(end.Message, 'Operation completed successfully!');
    assert.match(end.Timestamp, ISO);

    // The task's own record: Completed once its function has returned.
    const final = await until(async () => {
      const s = await callJson('GET', `/api/operation/status/${encodeURIComponent(id)}`);
      return s.State === 'Completed' ? s : null;
    }, 'State Completed', 3000);
    assert.equal(final.TaskId, id);
    assert.equal(final.Progress, 100);
    assert.equal(final.Status, 'Sleeping (2/2)');
    assert.match(final.StartedAt, ISO);
    assert.match(final.CompletedAt, ISO);
    const ran = Date.parse(final.CompletedAt) - Date.parse(final.StartedAt);
    assert.ok(ran >= 1900 && ran < 4000, `ran ${ran} ms`);

    const missing = await callJson('GET', '/api/operation/status/no-such-task', 404);
    assert.deepEqual(missing, { Success: false, Message: "No task found for operation 'no-such-task'" });
  } finally { await conn.stop(); }
});

test('kr.logger{ signalr = true }: server log lines reach the clients as ReceiveLog', T, async () => {
  const conn = await connect(hubUrl());
  try {
    const logs = collect(conn, 'ReceiveLog');
    const start = await callJson('POST', '/api/operation/start?seconds=1');
    const line = () => logs.map(([m]) => m).find((m) => m.message.includes(`long operation started: ${start.TaskId}`));
    await until(line, 'the log line of kr.log in the start route');
    const m = line();
    assert.equal(m.level, 'Information');
    assert.match(m.timestamp, ISO);
  } finally { await conn.stop(); }
});

test('GET /api/status: connections, metrics, now', T, async () => {
  const conn = await connect(hubUrl());
  try {
    const s = await callJson('GET', '/api/status');
    assert.ok(s.connections >= 1);
    assert.match(s.now, ISO);
    for (const k of ['cpu_percent', 'memory_mb', 'connections', 'uptime_s', 'requests', 'messages_sent']) {
      assert.equal(typeof s.metrics[k], 'number', `metrics.${k}`);
    }
  } finally { await conn.stop(); }
});

test('PORT chooses the port when the command line has no --listen', T, async () => {
  const port = await freePort();
  const s = await startServer({ scripts: [DEMO], listen: false, args: ['--no-watch'], env: { PORT: String(port) } });
  try {
    assert.equal(s.port, port);
    const r = await request(port, { path: '/api/notify' });
    assert.equal(r.body, 'Event broadcasted');
  } finally { await s.stop(); }
});
