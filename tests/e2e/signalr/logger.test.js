'use strict';
// kr.logger{ level, console, file, format, signalr } (lua-api.md §8, operations.md §3) and
// kr.metrics() (cpu_percent over the last 1 s window), with the official client (JSON and
// MessagePack) for the SignalR sink: log lines at or above the level reach the default hub's
// clients as ReceiveLog({level, message, timestamp}), exactly once, without feedback.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { startServer, runKestrun, request, sleep, tempDir, writeScript, luaString } = require('../lib/server');
const { signalR, connect, stopAll, collect, until } = require('../lib/signalr');
const { MessagePackHubProtocol } = require('@microsoft/signalr-protocol-msgpack');

const TIMESTAMP = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const T = { timeout: 20000 };

const ROUTES = `
kr.map_route("GET", "/log", function(req, res)
  kr.log(req.query.level, req.query.msg)
  res:text("ok")
end)
`;

async function get(srv, p) {
  const r = await request(srv.port, { path: p });
  assert.equal(r.status, 200, `${p}: ${r.status} ${r.body}`);
  try { return JSON.parse(r.body); } catch { return r.body; }
}
const log = (srv, level, msg) => get(srv, `/log?level=${level}&msg=${encodeURIComponent(msg)}`);

function msgpackConnect(url) {
  const conn = new signalR.HubConnectionBuilder()
    .withUrl(url, { transport: signalR.HttpTransportType.WebSockets })
    .withHubProtocol(new MessagePackHubProtocol())
    .configureLogging(signalR.LogLevel.None)
    .build();
  return conn.start().then(() => conn);
}

// ---- the SignalR sink at Warning, JSON file ---------------------------------------------

let srv;
let logFile;
before(async () => {
  const dir = tempDir();
  logFile = path.join(dir, 'app.log');
  srv = await startServer({
    script: `
kr.logger{ level = "Warning", signalr = true, file = ${luaString(logFile)}, format = "json" }
local hub = kr.hub("/hub")
hub:on("Boom", function(ctx) error("kaput") end)
kr.map_route("GET", "/flood", function(req, res)
  for i = 1, tonumber(req.query.n) do kr.log("Warning", "flood-" .. i) end
  res:text("ok")
end)
kr.map_route("GET", "/bad-send-log", function(req, res)
  local ok, err = kr.send_log("Loud", "x")
  res:text(tostring(err))
end)
${ROUTES}`,
  });
});
after(async () => {
  if (!srv) return;
  const r = await srv.stop();
  assert.equal(r.code, 0, `exit ${JSON.stringify(r)}: ${srv.stderr().slice(-2000)}`); // sanitizer reports too
});

const fileLines = () => fs.readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));

test('kr.log at or above the level reaches JSON and MessagePack clients once, as ReceiveLog', T, async () => {
  const a = await connect(srv.url('/hub'));
  const b = await msgpackConnect(srv.url('/hub'));
  try {
    const gotA = collect(a, 'ReceiveLog');
    const gotB = collect(b, 'ReceiveLog');
    const t0 = Date.now();
    await log(srv, 'Information', 'info-line');
    await log(srv, 'Warning', 'warn-line');
    await log(srv, 'error', 'error-line');
    await until(() => gotA.length >= 2 && gotB.length >= 2, 'two ReceiveLog each');
    await sleep(300); // nothing else may follow
    const mine = (got) => got.filter(([e]) => /-line$/.test(e.message));
    assert.equal(mine(gotA).length, 2, JSON.stringify(gotA));
    assert.equal(mine(gotB).length, 2, JSON.stringify(gotB));
    const [[w], [e]] = mine(gotA);
    assert.deepEqual(Object.keys(w).sort(), ['level', 'message', 'timestamp']);
    assert.equal(w.level, 'Warning');
    assert.equal(w.message, 'warn-line');
    assert.equal(e.level, 'Error'); // canonical name whatever the case kr.log got
    assert.equal(e.message, 'error-line');
    assert.match(w.timestamp, TIMESTAMP);
    assert.ok(Math.abs(Date.parse(w.timestamp) - t0) < 5000, w.timestamp);
    // the timestamp is the log line's own: the same as in the file
    const fw = fileLines().find((l) => l.message === 'warn-line');
    assert.equal(fw.timestamp, w.timestamp);
    // MessagePack: the timestamp arrives as a timestamp (a Date), same instant
    const [[mw]] = mine(gotB);
    assert.equal(mw.level, 'Warning');
    assert.equal(mw.message, 'warn-line');
    assert.ok(mw.timestamp instanceof Date, typeof mw.timestamp);
    assert.equal(mw.timestamp.toISOString(), w.timestamp);
  } finally { await stopAll([a, b]); }
});

test('a C-side Error (a hub method that raises) arrives once, with its source', T, async () => {
  const a = await connect(srv.url('/hub'));
  const b = await connect(srv.url('/hub'));
  try {
    const gotA = collect(a, 'ReceiveLog');
    const gotB = collect(b, 'ReceiveLog');
    await assert.rejects(a.invoke('Boom'));
    await until(() => gotA.length >= 1 && gotB.length >= 1, 'the error line');
    await sleep(300);
    assert.equal(gotA.length, 1, JSON.stringify(gotA));
    assert.equal(gotB.length, 1, JSON.stringify(gotB));
    const [[m]] = gotA;
    assert.equal(m.level, 'Error');
    assert.match(m.message, /^hub: \/hub: method 'Boom' failed: .*kaput/);
    assert.deepEqual(gotB[0][0], m);
  } finally { await stopAll([a, b]); }
});

test('a failing kr.send_log: its warning is forwarded once, no loop', T, async () => {
  const a = await connect(srv.url('/hub'));
  try {
    const got = collect(a, 'ReceiveLog');
    assert.match(await get(srv, '/bad-send-log'), /invalid level/);
    await until(() => got.length >= 1, 'the warning');
    await sleep(400);
    assert.equal(got.length, 1, JSON.stringify(got));
    assert.equal(got[0][0].level, 'Warning');
    assert.match(got[0][0].message, /^hub: send_log failed: invalid level 'Loud'/);
  } finally { await a.stop(); }
});

test('many lines: exactly one ReceiveLog per line, in order', T, async () => {
  const a = await connect(srv.url('/hub'));
  try {
    const got = collect(a, 'ReceiveLog');
    for (let i = 0; i < 30; i++) await log(srv, 'Warning', `burst-${i}`);
    await until(() => got.length >= 30, '30 lines');
    await sleep(300);
    assert.deepEqual(got.map(([e]) => e.message), Array.from({ length: 30 }, (_, i) => `burst-${i}`));
  } finally { await a.stop(); }
});

test('a flood: at most 1024 lines wait for a loop turn; the drop warning is logged, not forwarded', T, async () => {
  const a = await connect(srv.url('/hub'));
  try {
    const got = collect(a, 'ReceiveLog');
    await get(srv, '/flood?n=1500'); // one loop turn: no flush in between
    await until(() => got.length >= 1024, '1024 lines', 10000);
    assert.ok(await srv.waitForLog('476 log line(s) not sent to SignalR clients (more than 1024 waiting)'), srv.stderr().slice(-500));
    await sleep(300);
    assert.equal(got.length, 1024);
    assert.deepEqual(got.map(([e]) => e.message), Array.from({ length: 1024 }, (_, i) => `flood-${i + 1}`));
    // the console and the file still have every line
    assert.ok(srv.stderr().includes('flood-1500'));
    assert.ok(fs.readFileSync(logFile, 'utf8').includes('"flood-1500"'));
  } finally { await a.stop(); }
});

test('the file gets JSON lines at the level; the console too (console defaults to true)', T, async () => {
  await log(srv, 'Warning', 'file-warn');
  await log(srv, 'Information', 'file-info');
  await log(srv, 'Fatal', 'file-fatal');
  const lines = fileLines();
  const msgs = lines.map((l) => l.message);
  assert.ok(msgs.includes('file-warn') && msgs.includes('file-fatal'), msgs.join('|'));
  assert.ok(!msgs.includes('file-info'));
  for (const l of lines) {
    assert.match(l.timestamp, TIMESTAMP);
    assert.ok(['Warning', 'Error', 'Fatal'].includes(l.level), l.level);
  }
  const f = lines.find((l) => l.message === 'file-fatal');
  assert.deepEqual(Object.keys(f), ['timestamp', 'level', 'source', 'message']);
  assert.equal(f.source, 'script');
  assert.ok(await srv.waitForLog('"message":"file-fatal"'), 'stderr has the line too');
  assert.ok(!srv.stderr().includes('file-info'));
});

// ---- text file, console = false, reload -------------------------------------------------

test('text file with console = false; SIGHUP reopens the file; a generation without kr.logger goes back to the command line', T, async () => {
  const dir = tempDir();
  const file = path.join(dir, 'text.log');
  const withLogger = `kr.logger{ console = false, file = ${luaString(file)}, format = "text", level = "Debug" }\n${ROUTES}`;
  const s = await startServer({ script: withLogger, args: ['--no-watch'] });
  try {
    await log(s, 'Debug', 'dbg-1');
    let text = fs.readFileSync(file, 'utf8');
    assert.match(text, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[Information\] server: listening on http:\/\/127\.0\.0\.1:\d+$/m);
    assert.match(text, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[Debug\] script: dbg-1$/m);
    assert.equal(s.stderr(), '', 'nothing on the console');

    // logrotate: rename, then SIGHUP; the new generation writes to a new file
    fs.renameSync(file, file + '.1');
    s.proc.kill('SIGHUP');
    await until(() => fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes('generation 2 serving'), 'the reopened file', 5000);
    await log(s, 'Debug', 'dbg-2');
    assert.match(fs.readFileSync(file, 'utf8'), /\[Debug\] script: dbg-2$/m);
    assert.ok(!fs.readFileSync(file + '.1', 'utf8').includes('dbg-2'));
    assert.equal(s.stderr(), '');

    // a generation without kr.logger: back to stderr at the default level, the file closed
    fs.writeFileSync(s.scriptPaths[0], ROUTES);
    s.proc.kill('SIGHUP');
    assert.ok(await s.waitForLog('generation 3 serving'), s.stderr());
    await log(s, 'Debug', 'dbg-3');
    await log(s, 'Information', 'info-3');
    assert.ok(await s.waitForLog('[Information] script: info-3'));
    assert.ok(!s.stderr().includes('dbg-3'));
    assert.ok(!fs.readFileSync(file, 'utf8').includes('info-3'));
  } finally { await s.stop(); }
});

test('--log-level and --log-format on the command line win over kr.logger', T, async () => {
  const s = await startServer({
    script: `kr.logger{ level = "Error", format = "text" }\n${ROUTES}`,
    args: ['--log-level', 'Debug', '--log-format', 'json'],
  });
  try {
    await log(s, 'Debug', 'cli-debug');
    assert.ok(await s.waitForLog('"level":"Debug","source":"script","message":"cli-debug"'), s.stderr());
  } finally { await s.stop(); }
});

test('an unwritable file or a bad option fails the load with a clear error', T, async () => {
  const dir = tempDir();
  const bad = [
    [`kr.logger{ file = "/nonexistent-kestrun-dir/x.log" }`, /kr\.logger: cannot open log file '\/nonexistent-kestrun-dir\/x\.log': no such file or directory/],
    [`kr.logger{ level = "Loud" }`, /kr\.logger: level must be Verbose, Debug, Information, Warning, Error or Fatal/],
    [`kr.logger{ format = "xml" }`, /kr\.logger: format must be "text" or "json"/],
    [`kr.logger{ colour = true }`, /kr\.logger: unknown option 'colour'/],
    [`kr.logger{ signalr = "yes" }`, /kr\.logger: signalr must be a boolean/],
  ];
  for (const [src, re] of bad) {
    const p = writeScript(dir, src, 'bad.lua');
    const r = await runKestrun(['--check', p]);
    assert.equal(r.code, 1, `${src}: ${r.stderr}`);
    assert.match(r.stderr, /bad\.lua:1: /);
    assert.match(r.stderr, re);
  }
  // kr.logger outside loading raises
  const s = await startServer({
    script: `kr.map_route("GET", "/late", function(req, res)
      local ok, err = pcall(kr.logger, {})
      res:text(tostring(err))
    end)`,
  });
  try {
    assert.match(await get(s, '/late'), /kr\.logger may only be called while the scripts load/);
  } finally { await s.stop(); }
});

test('no feedback loop at Verbose: one ReceiveLog per line, then silence', T, async () => {
  const s = await startServer({
    script: `kr.logger{ level = "Verbose", signalr = true, console = false }
local hub = kr.hub("/hub")
${ROUTES}`,
  });
  try {
    const a = await connect(s.url('/hub'));
    try {
      const got = collect(a, 'ReceiveLog');
      await sleep(300);
      await log(s, 'Verbose', 'v-line');
      await until(() => got.some(([e]) => e.message === 'v-line'), 'the verbose line');
      await sleep(300);
      const n = got.length;
      await sleep(700);
      assert.equal(got.length, n, 'nothing more arrives');
      assert.equal(got.filter(([e]) => e.message === 'v-line').length, 1);
      assert.ok(n < 10, JSON.stringify(got));
      assert.ok(got.every(([e]) => e.level === 'Verbose' || e.level === 'Debug' || e.level === 'Information'), JSON.stringify(got));
    } finally { await a.stop(); }
  } finally { await s.stop(); }
});

// ---- kr.metrics ---------------------------------------------------------------------------

test('kr.metrics: cpu_percent follows the load over the last second; memory and counters', { timeout: 30000 }, async () => {
  const s = await startServer({
    script: `
local hub = kr.hub("/hub")
kr.map_route("GET", "/metrics", function(req, res) res:json(kr.metrics()) end)
kr.map_route("GET", "/send", function(req, res) kr.send_all("Ping", 1) res:text("ok") end)
-- burns CPU for ms of wall time in 20 ms slices; answers the share of a core it got (on a
-- busy test machine the process may get much less than 100 %)
kr.map_route("GET", "/burn", function(req, res)
  local t0, c0 = kr.clock_us(), os.clock()
  local stop = t0 + tonumber(req.query.ms) * 1000
  while kr.clock_us() < stop do
    local chunk = kr.clock_us() + 20000
    while kr.clock_us() < chunk do end
    kr.yield()
  end
  res:json({ share = 100 * (os.clock() - c0) / ((kr.clock_us() - t0) / 1e6) })
end)`,
  });
  try {
    const m0 = await get(s, '/metrics');
    for (const k of ['cpu_percent', 'memory_mb', 'connections', 'uptime_s', 'requests', 'messages_sent', 'slow_consumers'])
      assert.equal(typeof m0[k], 'number', k);
    assert.ok(m0.memory_mb > 1 && m0.memory_mb < 1000, `memory_mb ${m0.memory_mb}`);

    const conn = await connect(s.url('/hub'));
    try {
      const pings = collect(conn, 'Ping');
      await get(s, '/send');
      await until(() => pings.length === 1, 'the ping');
    } finally { await conn.stop(); }

    const burn = get(s, '/burn?ms=3000');
    await sleep(2200); // the last completed 1 s window lies inside the burn
    const m1 = await get(s, '/metrics');
    const { share } = await burn;
    assert.ok(m1.cpu_percent > 10 && m1.cpu_percent > share / 2 && m1.cpu_percent < 150,
      `busy: cpu_percent ${m1.cpu_percent}, the burner got ${share} % of a core`);
    await sleep(2200);
    const m2 = await get(s, '/metrics');
    assert.ok(m2.cpu_percent >= 0 && m2.cpu_percent < 10 && m2.cpu_percent < m1.cpu_percent / 2,
      `idle: cpu_percent ${m2.cpu_percent} (busy ${m1.cpu_percent})`);

    assert.ok(m1.requests > m0.requests && m2.requests > m1.requests, `${m0.requests} ${m1.requests} ${m2.requests}`);
    assert.ok(m1.messages_sent >= m0.messages_sent + 1, `${m0.messages_sent} -> ${m1.messages_sent}`);
    assert.ok(m2.uptime_s > m1.uptime_s + 2 && m1.uptime_s > m0.uptime_s, `${m0.uptime_s} ${m1.uptime_s} ${m2.uptime_s}`);
    assert.ok(m2.memory_mb > 1 && m2.memory_mb < 1000, `memory_mb ${m2.memory_mb}`);
  } finally { await s.stop(); }
});
