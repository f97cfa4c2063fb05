'use strict';
// The example scripts under scripts/examples, run as they ship and driven with the official
// @microsoft/signalr client: chat.lua (hub methods, rooms as groups, a message to one
// connection, connect/disconnect announcements, the history and announce routes), ticker.lua
// (timers that broadcast prices and SystemMetrics, per-symbol group subscriptions) and
// progress.lua (progress as events from a route, from a background job started by a hub method,
// and as a server-to-client stream). Every payload is checked exactly; values that change from
// run to run (ids, timestamps, random prices) are checked by shape and by their invariants.
// The examples are the source of the snippets in docs/guide.md.
const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { startServer, runKestrun, request, sleep, REPO } = require('../lib/server');
const { connect, stopAll, collect, until } = require('../lib/signalr');

const EXAMPLES = path.join(REPO, 'scripts', 'examples');
const example = (name) => path.join(EXAMPLES, name);
const TIMESTAMP = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const T = { timeout: 15000 };

async function rejection(p) {
  try {
    return { resolved: await p };
  } catch (e) {
    return e;
  }
}

// The client of an example's header comment (the "--   " lines after "-- A client"), made a
// program for `node -e`, aimed at `port`.
function clientSnippet(name, port) {
  const lines = fs.readFileSync(example(name), 'utf8').split('\n');
  let i = lines.findIndex((l) => l.startsWith('-- A client'));
  assert.ok(i >= 0, `${name} has a client snippet`);
  while (!lines[i].startsWith('--   ')) i++;
  const code = [];
  for (; lines[i].startsWith('--   '); i++) code.push(lines[i].slice(5));
  const body = code.join('\n').replaceAll('http://127.0.0.1:5000', `http://127.0.0.1:${port}`);
  return `(async () => {\n${body}\n})().catch((e) => { console.error(e); process.exit(1); });\n`;
}

// Runs a snippet with node (from tests/e2e, where @microsoft/signalr is installed) until
// enough(lines) holds for its stdout lines, or it exits, or timeoutMs; then ends it.
async function runClient(src, enough, timeoutMs = 8000) {
  const child = spawn(process.execPath, ['-e', src], { cwd: path.join(__dirname, '..'), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let exited = false;
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const gone = new Promise((r) => child.on('close', () => { exited = true; r(); }));
  const lines = () => out.split('\n').filter(Boolean);
  const deadline = Date.now() + timeoutMs;
  while (!exited && !enough(lines()) && Date.now() < deadline) await sleep(20);
  child.kill('SIGKILL');
  await gone;
  return { lines: lines(), stderr: err };
}

async function json(port, method, p, body) {
  const r = await request(port, { method, path: p, body });
  return { status: r.status, type: r.headers['content-type'], body: r.body ? JSON.parse(r.body) : undefined };
}

test('examples: --check accepts every example', T, async () => {
  for (const name of ['chat.lua', 'ticker.lua', 'progress.lua']) {
    const r = await runKestrun(['--check', example(name)]);
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
    assert.equal(r.stdout, `${example(name)}: OK\n`);
  }
});

// docs/guide.md quotes its Lua, JavaScript and HTML from the tested scripts: each such block
// starts with a comment naming the file (`-- scripts/examples/chat.lua`), and the rest of the block
// must be a run of whole lines of that file, or of the client in its header comment (the
// "--   " lines without that prefix).
test('docs/guide.md: every Lua, JavaScript and HTML snippet is copied from a tested script', () => {
  const guide = fs.readFileSync(path.join(REPO, 'docs', 'guide.md'), 'utf8');
  const blocks = [...guide.matchAll(/^```(lua|javascript|html)\n([\s\S]*?)^```$/gm)];
  assert.ok(blocks.length >= 20, `found ${blocks.length} blocks`);
  for (const [, lang, body] of blocks) {
    const lines = body.replace(/\n$/, '').split('\n');
    const m = /^(?:--|\/\/|<!--) ((?:scripts|tests)\/[\w./-]+?)(?: -->)?$/.exec(lines[0]);
    assert.ok(m, `a ${lang} block that does not name its source: ${JSON.stringify(lines[0])}`);
    const file = fs.readFileSync(path.join(REPO, m[1]), 'utf8').split('\n');
    const header = file.map((l) => (l.startsWith('--   ') ? l.slice(5) : l));
    const rest = lines.slice(1);
    const within = (text) => text.some((_, i) => rest.every((l, j) => text[i + j] === l));
    assert.ok(rest.length > 0 && (within(file) || within(header)),
      `not found as written in ${m[1]}:\n${rest.join('\n')}`);
  }
});

test('examples: PORT sets the port when the command line has no --listen', T, async () => {
  // PORT=0 asks for any free port: the port file then names one that is not the default 5000.
  const srv = await startServer({ scripts: [example('chat.lua')], listen: false, env: { PORT: '0' } });
  try {
    assert.notEqual(srv.port, 5000);
    const conn = await connect(srv.url('/chat'));
    await conn.stop();
    assert.ok(await srv.waitForLog(`listening on http://127.0.0.1:${srv.port}`));
  } finally { await srv.stop(); }
});

describe('chat.lua', () => {
  let srv;
  before(async () => { srv = await startServer({ scripts: [example('chat.lua')] }); });
  after(async () => { if (srv) await srv.stop(); });

  test('announcements, SendMessage to everyone, WhoAmI (no user), errors', T, async () => {
    const got = { a: {}, b: {} };
    const watch = (key) => (c) => {
      got[key].connected = collect(c, 'UserConnected');
      got[key].disconnected = collect(c, 'UserDisconnected');
      got[key].messages = collect(c, 'ReceiveMessage');
    };
    const a = await connect(srv.url('/chat'), {}, watch('a'));
    let b;
    try {
      await until(() => got.a.connected.length === 1, 'UserConnected for a');
      assert.deepEqual(got.a.connected, [[a.connectionId, 1]]);

      b = await connect(srv.url('/chat'), {}, watch('b'));
      await until(() => got.a.connected.length === 2 && got.b.connected.length === 1, 'UserConnected for b');
      assert.deepEqual(got.a.connected[1], [b.connectionId, 2]);
      assert.deepEqual(got.b.connected, [[b.connectionId, 2]]);

      assert.deepEqual(await a.invoke('WhoAmI'), { connectionId: a.connectionId, user: null });

      assert.equal(await a.invoke('SendMessage', 'ann', 'hello'), 2);
      await until(() => got.a.messages.length === 1 && got.b.messages.length === 1, 'ReceiveMessage');
      assert.deepEqual(got.a.messages, [['ann', 'hello']]);
      assert.deepEqual(got.b.messages, [['ann', 'hello']]);

      const e = await rejection(a.invoke('SendMessage', 'ann', ''));
      assert.equal(e.message, "An unexpected error occurred invoking 'SendMessage' on the server.");
      assert.ok(await srv.waitForLog(/method 'SendMessage' failed: .*chat\.lua:\d+: text must be a non-empty string of at most 1000 bytes/));

      const bid = b.connectionId;       // null once stopped
      await b.stop();
      await until(() => got.a.disconnected.length === 1, 'UserDisconnected');
      assert.deepEqual(got.a.disconnected, [[bid]]);
    } finally { await stopAll([a, b]); }
  });

  test('rooms: JoinRoom, SendToRoom and LeaveRoom reach the members only', T, async () => {
    const rooms = {};
    const all = {};
    const watch = (key) => (c) => { rooms[key] = collect(c, 'ReceiveRoomMessage'); all[key] = collect(c, 'ReceiveMessage'); };
    const a = await connect(srv.url('/chat'), {}, watch('a'));
    const b = await connect(srv.url('/chat'), {}, watch('b'));
    const c = await connect(srv.url('/chat'), {}, watch('c'));
    try {
      const joinedA = ['dev', 'system', `${a.connectionId} has joined the room dev.`];
      const joinedB = ['dev', 'system', `${b.connectionId} has joined the room dev.`];
      const leftA = ['dev', 'system', `${a.connectionId} has left the room dev.`];
      assert.equal(await a.invoke('JoinRoom', 'dev'), true);
      assert.equal(await b.invoke('JoinRoom', 'dev'), true);
      assert.equal(await b.invoke('SendToRoom', 'dev', 'bob', 'hi dev'), 2);
      assert.equal(await a.invoke('LeaveRoom', 'dev'), true);
      assert.equal(await b.invoke('SendToRoom', 'dev', 'bob', 'anyone?'), 1);
      // a message to everyone last: once c has it, c has everything it will get
      assert.equal(await a.invoke('SendMessage', 'ann', 'bye'), 3);
      await until(() => all.a.length && all.b.length && all.c.length, 'the last ReceiveMessage');

      const hi = ['dev', 'bob', 'hi dev'];
      assert.deepEqual(rooms.a, [joinedA, joinedB, hi]);
      assert.deepEqual(rooms.b, [joinedB, hi, leftA, ['dev', 'bob', 'anyone?']]);
      assert.deepEqual(rooms.c, []);

      const e = await rejection(a.invoke('JoinRoom', ''));
      assert.equal(e.message, "An unexpected error occurred invoking 'JoinRoom' on the server.");
    } finally { await stopAll([a, b, c]); }
  });

  test('SendPrivate reaches one connection; false when it is gone', T, async () => {
    const priv = {};
    const watch = (key) => (c) => { priv[key] = collect(c, 'ReceivePrivate'); };
    const a = await connect(srv.url('/chat'), {}, watch('a'));
    const b = await connect(srv.url('/chat'), {}, watch('b'));
    const c = await connect(srv.url('/chat'), {}, watch('c'));
    try {
      assert.equal(await a.invoke('SendPrivate', c.connectionId, 'psst'), true);
      await until(() => priv.c.length === 1, 'ReceivePrivate');
      assert.deepEqual(priv.c, [[a.connectionId, 'psst']]);
      const gone = c.connectionId;
      await c.stop();
      assert.equal(await a.invoke('SendPrivate', gone, 'hello?'), false);
      // b sends itself one to know that everything before it was delivered
      assert.equal(await b.invoke('SendPrivate', b.connectionId, 'me'), true);
      await until(() => priv.b.length === 1, 'ReceivePrivate to self');
      assert.deepEqual(priv.b, [[b.connectionId, 'me']]);
      assert.deepEqual(priv.a, []);
    } finally { await stopAll([a, b, c]); }
  });

  test('routes: /api/announce broadcasts, /api/history lists (and filters by room)', T, async () => {
    const msgs = [];
    const a = await connect(srv.url('/chat'), {}, (c) => c.on('ReceiveMessage', (...args) => msgs.push(args)));
    try {
      await a.invoke('JoinRoom', 'ops');
      await a.invoke('SendToRoom', 'ops', 'ann', 'deploying');
      const r = await json(srv.port, 'POST', '/api/announce', 'back in 5 minutes');
      assert.deepEqual(r, { status: 200, type: 'application/json', body: { delivered: 1 } });
      await until(() => msgs.length === 1, 'the announcement');
      assert.deepEqual(msgs, [['server', 'back in 5 minutes']]);

      const bad = await json(srv.port, 'POST', '/api/announce');
      assert.equal(bad.status, 400);
      assert.deepEqual(bad.body, { error: 'the body must be the announcement, at most 1000 bytes' });

      const h = await json(srv.port, 'GET', '/api/history');
      assert.equal(h.status, 200);
      assert.ok(Array.isArray(h.body));
      for (const m of h.body) {
        assert.deepEqual(Object.keys(m).sort(), ['at', 'room', 'text', 'user']);
        assert.match(m.at, TIMESTAMP);
      }
      const strip = (list) => list.map(({ at, ...rest }) => rest);
      assert.deepEqual(strip(h.body.slice(-2)), [
        { room: 'ops', user: 'ann', text: 'deploying' },
        { room: null, user: 'server', text: 'back in 5 minutes' },
      ]);
      // earlier tests' messages are there too, in order
      assert.deepEqual(strip(h.body.filter((m) => m.room === 'dev')),
        [{ room: 'dev', user: 'bob', text: 'hi dev' }, { room: 'dev', user: 'bob', text: 'anyone?' }]);

      const ops = await json(srv.port, 'GET', '/api/history?room=ops');
      assert.deepEqual(strip(ops.body), [{ room: 'ops', user: 'ann', text: 'deploying' }]);
      const none = await request(srv.port, { path: '/api/history?room=nobody' });
      assert.equal(none.body, '[]');
    } finally { await a.stop(); }
  });

  test('the client of the header comment prints what it received', T, async () => {
    const r = await runClient(clientSnippet('chat.lua', srv.port), (l) => l.includes('[dev] ann: hi dev'));
    assert.equal(r.stderr, '');
    assert.equal(r.lines.length, 4, r.lines.join('\n'));
    const m = /^(\S+) connected \(1 online\)$/.exec(r.lines[0]);
    assert.ok(m, r.lines[0]);
    assert.deepEqual(r.lines.slice(1), ['ann: hello', `[dev] system: ${m[1]} has joined the room dev.`, '[dev] ann: hi dev']);
  });
});

describe('ticker.lua', () => {
  let srv;
  // ticks every 100 ms and SystemMetrics every 300 ms instead of 1 s and 5 s
  before(async () => {
    srv = await startServer({ scripts: [example('ticker.lua')], env: { TICK_MS: '100', METRICS_MS: '300' } });
  });
  after(async () => { if (srv) await srv.stop(); });

  const SYMBOLS = ['ACME', 'GLOBEX', 'INITECH'];
  function assertTick(t, symbol) {
    assert.deepEqual(Object.keys(t).sort(), ['at', 'change', 'price', 'seq', 'symbol']);
    assert.equal(t.symbol, symbol);
    assert.equal(typeof t.price, 'number');
    assert.ok(t.price >= 1);
    assert.equal(Math.round(t.price * 100), Math.round(t.price * 100 * 1e6) / 1e6, `two decimals: ${t.price}`);
    assert.ok(Number.isInteger(t.seq));
    assert.match(t.at, TIMESTAMP);
  }

  test('Subscribe returns the latest tick; ReceiveTick goes to the subscribers only', T, async () => {
    const ticks = {};
    const watch = (key) => (c) => { ticks[key] = collect(c, 'ReceiveTick'); };
    const sub = await connect(srv.url('/ticker'), {}, watch('sub'));
    const other = await connect(srv.url('/ticker'), {}, watch('other'));
    try {
      const first = await sub.invoke('Subscribe', 'ACME');
      assertTick(first, 'ACME');
      await until(() => ticks.sub.length >= 4, 'four ReceiveTick', 5000);
      const list = [first, ...ticks.sub.map((args) => { assert.equal(args.length, 1); return args[0]; })];
      for (let i = 1; i < list.length; i++) {
        const prev = list[i - 1];
        const t = list[i];
        assertTick(t, 'ACME');
        if (i > 1) assert.equal(t.seq, prev.seq + 1);
        else assert.ok(t.seq > prev.seq);
        assert.ok(Math.abs(prev.price + t.change - t.price) < 0.0051, `price ${prev.price} + ${t.change} = ${t.price}`);
        assert.ok(Math.abs(t.change) <= prev.price * 0.01 + 0.01, `a step of at most 1 %: ${t.change}`);
      }
      assert.deepEqual(ticks.other, []);

      // the route shows the tick the subscriber got last (or a later one)
      const last = ticks.sub[ticks.sub.length - 1][0];
      const now = await json(srv.port, 'GET', '/api/prices/ACME');
      assert.ok(now.body.seq >= last.seq);
      if (now.body.seq === last.seq) assert.deepEqual(now.body, last);

      // Unsubscribe: nothing after the completion (ticks come every 100 ms)
      assert.equal(await sub.invoke('Unsubscribe', 'ACME'), true);
      const n = ticks.sub.length;
      await sleep(350);
      assert.equal(ticks.sub.length, n);
      assert.deepEqual(ticks.other, []);

      const e = await rejection(sub.invoke('Subscribe', 'NOPE'));
      assert.equal(e.message, "An unexpected error occurred invoking 'Subscribe' on the server.");
    } finally { await stopAll([sub, other]); }
  });

  test('SystemMetrics every METRICS_MS as a ReceiveEvent', T, async () => {
    const events = [];
    const a = await connect(srv.url('/ticker'), {}, (c) => c.on('ReceiveEvent', (e) => events.push(e)));
    const b = await connect(srv.url('/ticker'));
    try {
      await until(() => events.some((e) => e.data.Clients === 2), 'SystemMetrics with 2 clients', 3000);
      const e = events.find((x) => x.data.Clients === 2);
      assert.deepEqual(Object.keys(e).sort(), ['data', 'eventName', 'timestamp']);
      assert.equal(e.eventName, 'SystemMetrics');
      assert.match(e.timestamp, TIMESTAMP);
      assert.deepEqual(Object.keys(e.data).sort(), ['Clients', 'CpuPercent', 'MemoryMB', 'Timestamp']);
      assert.ok(e.data.MemoryMB > 0 && e.data.MemoryMB < 1024, `MemoryMB ${e.data.MemoryMB}`);
      assert.ok(e.data.CpuPercent >= 0, `CpuPercent ${e.data.CpuPercent}`);
      assert.match(e.data.Timestamp, TIMESTAMP);
    } finally { await stopAll([a, b]); }
  });

  test('the client of the header comment prints what it received', T, async () => {
    const r = await runClient(clientSnippet('ticker.lua', srv.port),
      (l) => l.filter((x) => /\)$/.test(x)).length >= 4 && l.some((x) => x.startsWith('SystemMetrics ')));
    assert.equal(r.stderr, '');
    const latest = r.lines.findIndex((x) => / \(latest\)$/.test(x));
    assert.match(r.lines[latest], /^ACME \d+(\.\d{1,2})? \(latest\)$/);
    for (const [i, x] of r.lines.entries()) {
      if (i === latest) continue;
      if (x.startsWith('SystemMetrics ')) {
        const data = JSON.parse(x.slice('SystemMetrics '.length));
        assert.deepEqual(Object.keys(data).sort(), ['Clients', 'CpuPercent', 'MemoryMB', 'Timestamp']);
      } else {
        // No order check against the "(latest)" line: a tick that arrives in the same read as
        // the Subscribe completion is printed by its handler before the awaiting code resumes.
        assert.match(x, /^ACME \d+(\.\d{1,2})? \(-?\d+(\.\d{1,2})?\)$/);
      }
    }
  });

  test('routes: /api/prices and /api/prices/{symbol}', T, async () => {
    const all = await json(srv.port, 'GET', '/api/prices');
    assert.equal(all.status, 200);
    assert.deepEqual(Object.keys(all.body).sort(), ['prices', 'seq']);
    assert.deepEqual(Object.keys(all.body.prices).sort(), SYMBOLS);
    assert.ok(all.body.seq > 0);
    const one = await json(srv.port, 'GET', '/api/prices/GLOBEX');
    assert.equal(one.status, 200);
    assertTick(one.body, 'GLOBEX');
    assert.deepEqual(await json(srv.port, 'GET', '/api/prices/NOPE'),
      { status: 404, type: 'application/json', body: { error: 'unknown symbol' } });
  });
});

describe('progress.lua', () => {
  let srv;
  before(async () => { srv = await startServer({ scripts: [example('progress.lua')] }); });
  after(async () => { if (srv) await srv.stop(); });

  const STEPS4 = [
    { Percent: 25, Status: 'Processed item 1 of 4' },
    { Percent: 50, Status: 'Processed item 2 of 4' },
    { Percent: 75, Status: 'Processed item 3 of 4' },
    { Percent: 100, Status: 'Processed item 4 of 4' },
  ];

  test('POST /api/process: a Progress event per step to every client, then "Complete"', T, async () => {
    const events = [];
    const a = await connect(srv.url('/progress'), {}, (c) => c.on('ReceiveEvent', (e) => events.push(e)));
    try {
      const r = await request(srv.port, { method: 'POST', path: '/api/process?steps=4&delayMs=30' });
      assert.equal(r.status, 200);
      assert.equal(r.body, 'Complete\n');
      await until(() => events.length === 4, 'four Progress events');
      for (const e of events) {
        assert.deepEqual(Object.keys(e).sort(), ['data', 'eventName', 'timestamp']);
        assert.equal(e.eventName, 'Progress');
        assert.match(e.timestamp, TIMESTAMP);
      }
      assert.deepEqual(events.map((e) => e.data), STEPS4);

      const bad = await request(srv.port, { method: 'POST', path: '/api/process?steps=0' });
      assert.equal(bad.status, 400);
      assert.equal(bad.body, 'steps must be 1..100 and delayMs 0..10000\n');
    } finally { await a.stop(); }
  });

  test('StartJob: the id at once, JobProgress and JobCompleted to the caller, /api/jobs/{id}', T, async () => {
    let progress;
    let completed;
    const a = await connect(srv.url('/progress'), {}, (c) => {
      progress = collect(c, 'JobProgress');
      completed = collect(c, 'JobCompleted');
    });
    const other = [];
    const b = await connect(srv.url('/progress'), {}, (c) => c.on('JobProgress', (...args) => other.push(args)));
    try {
      const id = await a.invoke('StartJob', 4, 30);
      assert.match(id, /^job-\d+$/);
      assert.ok(progress.length < 4, 'invoke() resolved before the job was done');
      await until(() => completed.length === 1, 'JobCompleted');
      assert.deepEqual(completed, [[id]]);
      assert.deepEqual(progress, STEPS4.map((p) => [id, p]));
      assert.deepEqual(other, []);

      const s = await json(srv.port, 'GET', `/api/jobs/${id}`);
      assert.equal(s.status, 200);
      assert.match(s.body.startedAt, TIMESTAMP);
      assert.match(s.body.completedAt, TIMESTAMP);
      const { startedAt, completedAt, ...rest } = s.body;
      assert.deepEqual(rest, { id, state: 'Completed', percent: 100, status: 'Processed item 4 of 4' });
      assert.deepEqual(await json(srv.port, 'GET', '/api/jobs/job-999'),
        { status: 404, type: 'application/json', body: { error: 'unknown job' } });

      const e = await rejection(a.invoke('StartJob', 0, 10));
      assert.equal(e.message, "An unexpected error occurred invoking 'StartJob' on the server.");
    } finally { await stopAll([a, b]); }
  });

  test('StartJob: the job stops when its caller disconnects', T, async () => {
    let progress;
    const a = await connect(srv.url('/progress'), {}, (c) => { progress = collect(c, 'JobProgress'); });
    const id = await a.invoke('StartJob', 100, 30);
    await until(() => progress.length >= 1, 'the first JobProgress');
    await a.stop();
    const s = await until(async () => {
      const r = await json(srv.port, 'GET', `/api/jobs/${id}`);
      return r.body.state !== 'Running' && r;
    }, 'the job to stop');
    assert.equal(s.body.state, 'Stopped');
    assert.ok(s.body.percent < 100);
    assert.match(s.body.completedAt, TIMESTAMP);
  });

  test('stream Process: one item per step, then completion; errors end the stream', T, async () => {
    const a = await connect(srv.url('/progress'));
    try {
      const items = await new Promise((resolve, reject) => {
        const got = [];
        a.stream('Process', 4, 30).subscribe({
          next: (p) => got.push(p),
          complete: () => resolve(got),
          error: reject,
        });
      });
      assert.deepEqual(items, STEPS4);

      const err = await new Promise((resolve) => {
        a.stream('Process', 0, 30).subscribe({ next: () => {}, complete: () => resolve(null), error: resolve });
      });
      assert.equal(err && err.message, 'An error occurred on the server while streaming results.');

      // cancelled by the client after two items: the server's loop sees emit return false
      const seen = [];
      await new Promise((resolve) => {
        const sub = a.stream('Process', 100, 20).subscribe({
          next: (p) => { seen.push(p); if (seen.length === 2) { sub.dispose(); resolve(); } },
          complete: () => {},
          error: () => {},
        });
      });
      await sleep(100);
      assert.deepEqual(seen, [{ Percent: 1, Status: 'Processed item 1 of 100' },
        { Percent: 2, Status: 'Processed item 2 of 100' }]);
      // the connection still works after the cancel
      const again = await new Promise((resolve, reject) => {
        const got = [];
        a.stream('Process', 1, 0).subscribe({ next: (p) => got.push(p), complete: () => resolve(got), error: reject });
      });
      assert.deepEqual(again, [{ Percent: 100, Status: 'Processed item 1 of 1' }]);
    } finally { await a.stop(); }
  });

  test('the client of the header comment prints what it received', T, async () => {
    const r = await runClient(clientSnippet('progress.lua', srv.port),
      (l) => l.includes('done') && l.some((x) => / completed$/.test(x)));
    assert.equal(r.stderr, '');
    const started = r.lines.find((x) => x.startsWith('started '));
    assert.match(started, /^started job-\d+$/);
    const id = started.slice('started '.length);
    const steps = STEPS4.map((p) => `${p.Percent} ${p.Status}`);
    // each kind in order; the three run side by side
    assert.deepEqual(r.lines.filter((x) => x.startsWith('Progress ')), steps.map((x) => `Progress ${x}`));
    assert.deepEqual(r.lines.filter((x) => x.startsWith(id + ' ')), [...steps.map((x) => `${id} ${x}`), `${id} completed`]);
    assert.deepEqual(r.lines.filter((x) => /^\d/.test(x) || x === 'done'), [...steps, 'done']);
    assert.equal(r.lines.length, 4 + 1 + 5 + 5, r.lines.join('\n'));
  });
});
