'use strict';
// The transport x protocol matrix with the official clients (@microsoft/signalr and
// @microsoft/signalr-protocol-msgpack): WebSockets, ServerSentEvents and LongPolling x JSON and
// MessagePack. MessagePack needs a Binary transport, so ServerSentEvents/messagepack is not a
// cell: one test checks that start() rejects there. Every valid cell runs the same tests, each
// its own named test ("LongPolling/messagepack: client results"): the Echo built-in, groups,
// kr.send_log, kr.send_event, Lua hub methods (results and errors), server-to-client streams,
// client-to-server (upload) streams, client results; MessagePack cells also round-trip binary
// data and dates. (lua-api.md §4; signalr-protocol.md §2, §4, §5, §7, §9 items 6-8, 17-30.)
// One server for the whole file: tests/e2e/scripts/matrix.lua.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const signalR = require('@microsoft/signalr');
const { MessagePackHubProtocol } = require('@microsoft/signalr-protocol-msgpack');
const { startServer, request, sleep } = require('../lib/server');
const { until } = require('../lib/signalr');

let srv;
before(async () => { srv = await startServer({ scripts: ['matrix.lua'] }); });
after(async () => { if (srv) await srv.stop(); });

const TRANSPORTS = ['WebSockets', 'ServerSentEvents', 'LongPolling'];
const PROTOCOLS = ['json', 'messagepack'];
const CELLS = [];
for (const transport of TRANSPORTS) {
  for (const protocol of PROTOCOLS) {
    if (transport === 'ServerSentEvents' && protocol === 'messagepack') continue; // SSE is text only
    CELLS.push({ transport, protocol, name: `${transport}/${protocol}`, key: `${transport}-${protocol}` });
  }
}

const TIMESTAMP = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const T = { timeout: 20000 }; // per test: a server that never answers fails the test, not the file
const WAIT = 5000;            // for one answer from the server

function build(cell, path = '/hub') {
  let b = new signalR.HubConnectionBuilder()
    .withUrl(srv.url(path), { transport: signalR.HttpTransportType[cell.transport] })
    .configureLogging(signalR.LogLevel.None);
  if (cell.protocol === 'messagepack') b = b.withHubProtocol(new MessagePackHubProtocol());
  return b.build();
}

// Runs fn(conn, ...) with started connections (opts.setup(conn, i) registers handlers before
// start); every connection is stopped afterwards, whatever happened.
async function withConns(cell, specs, fn) {
  const conns = specs.map((s) => build(cell, s.path || '/hub'));
  try {
    conns.forEach((c, i) => { if (specs[i].setup) specs[i].setup(c); });
    for (const c of conns) await within(c.start(), WAIT, `start() (${cell.name})`);
    // the cell is the real one: the server logs "hub: /hub: ID connected (Transport, protocol)"
    for (let i = 0; i < conns.length; i++) {
      const line = `${specs[i].path || '/hub'}: ${conns[i].connectionId} connected (${cell.transport}, ${cell.protocol}`;
      assert.ok(await srv.waitForLog(line, WAIT), `the server logged "${line}"`);
    }
    await fn(...conns);
  } finally {
    await Promise.allSettled(conns.map((c) => c.stop()));
  }
}
const withConn = (cell, fn, spec = {}) => withConns(cell, [spec], fn);

// Resolves or rejects as p does, or rejects after ms (an unanswered invocation fails the test).
function within(p, ms, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

// The rejection of p (an Error), or { resolved: value } when it resolved.
async function rejection(p) {
  try {
    return { resolved: await p };
  } catch (e) {
    return e;
  }
}

function collect(conn, method) {
  const got = [];
  conn.on(method, (...args) => got.push(args));
  return got;
}

// Subscribes to a stream result; `finished` resolves on complete or error.
function subscribe(streamResult) {
  const s = { items: [], completed: false, error: undefined };
  s.finished = new Promise((resolve) => {
    s.sub = streamResult.subscribe({
      next: (v) => s.items.push(v),
      complete: () => { s.completed = true; resolve(); },
      error: (e) => { s.error = e; resolve(); },
    });
  });
  return s;
}

async function post(p) {
  const r = await request(srv.port, { method: 'POST', path: p, body: '' });
  assert.equal(r.status, 200, `POST ${p}: ${r.status} ${r.body}`);
  return JSON.parse(r.body);
}
async function get(p) {
  const r = await request(srv.port, { path: p });
  assert.equal(r.status, 200, `GET ${p}: ${r.status} ${r.body}`);
  return JSON.parse(r.body);
}

// A timestamp of ReceiveLog / ReceiveEvent: an ISO string with JSON, a Date with MessagePack
// (timestamp extension -1), and close to now.
function assertTimestamp(cell, ts) {
  let ms;
  if (cell.protocol === 'messagepack') {
    assert.ok(ts instanceof Date, `timestamp is a Date with MessagePack: ${typeof ts} ${JSON.stringify(ts)}`);
    ms = ts.getTime();
  } else {
    assert.equal(typeof ts, 'string', `timestamp is a string with JSON: ${JSON.stringify(ts)}`);
    assert.match(ts, TIMESTAMP);
    ms = Date.parse(ts);
  }
  assert.ok(Number.isFinite(ms) && Math.abs(ms - Date.now()) < 60000, `timestamp is now: ${String(ts)}`);
}

const isVoid = (r) => r === null || r === undefined;

for (const cell of CELLS) {
  const N = cell.name;

  test(`${N}: Echo built-in`, T, async () => {
    await withConn(cell, async (c) => {
      const got = collect(c, 'ReceiveEcho');
      const r = await within(c.invoke('Echo', 'x'), WAIT, 'Echo');
      assert.ok(isVoid(r), `Echo resolves null/undefined: ${JSON.stringify(r)}`);
      await until(() => got.length === 1, 'ReceiveEcho');
      assert.deepEqual(got, [['x']]);
      const odd = 'é✓ 😀 "q" \\ \n\t';
      await within(c.invoke('echo', odd), WAIT, 'echo (lower case)');
      await until(() => got.length === 2, 'the second ReceiveEcho');
      assert.deepEqual(got[1], [odd]);
    });
  });

  test(`${N}: groups: JoinGroup, then group_send reaches members only`, T, async () => {
    const g = `g-${cell.key}`;
    await withConns(cell, [{}, {}], async (member, other) => {
      const joined = collect(member, 'GroupJoined');
      const mMsg = collect(member, 'GroupMsg');
      const oMsg = collect(other, 'GroupMsg');
      const oEcho = collect(other, 'ReceiveEcho');
      const r = await within(member.invoke('JoinGroup', g), WAIT, 'JoinGroup');
      assert.ok(isVoid(r), `JoinGroup resolves null/undefined: ${JSON.stringify(r)}`);
      await until(() => joined.length === 1, 'GroupJoined');
      assert.deepEqual(joined, [[g]]);

      assert.deepEqual(await post(`/group/${encodeURIComponent(g)}`), { ok: true, n: 1 }, 'one member');
      await until(() => mMsg.length === 1, 'GroupMsg to the member');
      assert.deepEqual(mMsg, [['hello', { n: 1, list: [1, 2] }]]);
      // barrier for the non-member: its Echo reply comes after anything queued to it before
      await within(other.invoke('Echo', 'barrier'), WAIT, 'Echo on the non-member');
      await until(() => oEcho.length === 1, 'ReceiveEcho on the non-member');
      assert.deepEqual(oMsg, [], 'the non-member received nothing');
      assert.equal(mMsg.length, 1);
    });
  });

  test(`${N}: kr.send_log -> ReceiveLog {level, message, timestamp}`, T, async () => {
    await withConn(cell, async (c) => {
      const got = collect(c, 'ReceiveLog');
      const r = await post('/log');
      assert.equal(r.ok, true, JSON.stringify(r));
      await until(() => got.length === 1, 'ReceiveLog');
      assert.equal(got[0].length, 1, 'one argument');
      const m = got[0][0];
      assert.deepEqual(Object.keys(m).sort(), ['level', 'message', 'timestamp']);
      assert.equal(m.level, 'Warning');
      assert.equal(m.message, 'disk almost full');
      assertTimestamp(cell, m.timestamp);
    });
  });

  test(`${N}: kr.send_event -> ReceiveEvent {eventName, data, timestamp}, nested data`, T, async () => {
    await withConn(cell, async (c) => {
      const got = collect(c, 'ReceiveEvent');
      const r = await post('/event');
      assert.equal(r.ok, true, JSON.stringify(r));
      await until(() => got.length === 1, 'ReceiveEvent');
      assert.equal(got[0].length, 1, 'one argument');
      const m = got[0][0];
      assert.deepEqual(Object.keys(m).sort(), ['data', 'eventName', 'timestamp']);
      assert.equal(m.eventName, 'Nested');
      assert.deepEqual(m.data, {
        obj: { a: 1, b: 'two', inner: { c: [3, 4] } },
        arr: [1, 2.5, 'x', true, false, null, { k: 'v' }],
        num: -12,
        flag: true,
        off: false,
        none: null,
        empty: [],
      });
      assertTimestamp(cell, m.timestamp);
    });
  });

  test(`${N}: Lua hub methods: results`, T, async () => {
    await withConn(cell, async (c) => {
      const v = (kind) => within(c.invoke('Value', kind), WAIT, `Value(${kind})`);
      assert.equal(await v('int'), 42);
      assert.equal(await v('neg'), -7);
      assert.equal(await v('float'), 2.5);
      assert.equal(await v('big'), 1099511627776);
      assert.equal(await v('str'), 'héllo ✓ "q"');
      assert.equal(await v('empty_str'), '');
      assert.equal(await v('yes'), true);
      assert.equal(await v('no'), false);
      assert.deepEqual(await v('array'), [1, 'two', 3.5, true]);
      assert.deepEqual(await v('object'), { Title: 'x', n: 1, list: [1, 2, 3], nested: { deep: { ok: true } } });
      assert.deepEqual(await v('mixed'), { list: [1, null, { a: 'b' }], none: null, empty: [] });
      assert.equal(await v('nil'), null, 'nil -> null');
      // arguments round-trip through Lua
      const value = { a: [1, 2, { b: 'c' }], s: 'é✓ 😀', t: true, f: false, n: -1.5, nested: { x: { y: 'deep' } } };
      assert.deepEqual(await within(c.invoke('Back', value), WAIT, 'Back(object)'), value);
      assert.deepEqual(await within(c.invoke('Back', [3, 'two', null, 1]), WAIT, 'Back(array)'), [3, 'two', null, 1]);
      assert.equal(await within(c.invoke('Back', null), WAIT, 'Back(null)'), null);
    });
  });

  test(`${N}: Lua hub methods: errors, generic and with detailed_errors`, T, async () => {
    const generic = "An unexpected error occurred invoking 'Boom' on the server.";
    await withConns(cell, [{}, { path: '/detailed' }], async (c, d) => {
      const e = await rejection(within(c.invoke('Boom'), WAIT, 'Boom'));
      assert.ok(e instanceof Error, `Boom rejects: ${JSON.stringify(e)}`);
      assert.equal(e.message, generic);
      assert.equal(c.state, signalR.HubConnectionState.Connected);
      assert.equal(await within(c.invoke('Value', 'int'), WAIT, 'Value after Boom'), 42, 'the connection still works');

      const de = await rejection(within(d.invoke('Boom'), WAIT, 'Boom on /detailed'));
      assert.ok(de instanceof Error, `Boom rejects on /detailed: ${JSON.stringify(de)}`);
      assert.ok(de.message.startsWith(generic + ' '), `detailed message: ${de.message}`);
      assert.match(de.message, /kaboom$/, 'the Lua message is appended');
    });
  });

  test(`${N}: server-to-client streams: items then completion`, T, async () => {
    await withConn(cell, async (c) => {
      const s = subscribe(c.stream('Counter', 5, 10));
      await within(s.finished, WAIT, 'Counter to finish');
      assert.equal(s.error, undefined, `no error: ${s.error && s.error.message}`);
      assert.equal(s.completed, true);
      assert.deepEqual(s.items, [1, 2, 3, 4, 5]);
    });
  });

  test(`${N}: server-to-client streams: an error after 2 items`, T, async () => {
    const generic = 'An error occurred on the server while streaming results.';
    await withConns(cell, [{}, { path: '/detailed' }], async (c, d) => {
      const s = subscribe(c.stream('FailAfter2'));
      await within(s.finished, WAIT, 'FailAfter2 to finish');
      assert.deepEqual(s.items, [1, 2]);
      assert.equal(s.completed, false);
      assert.ok(s.error instanceof Error, `stream error: ${s.error}`);
      assert.equal(s.error.message, generic);
      assert.equal(await within(c.invoke('Value', 'int'), WAIT, 'Value after the failed stream'), 42);
      // detailed_errors: the Lua message is appended
      const sd = subscribe(d.stream('FailAfter2'));
      await within(sd.finished, WAIT, 'FailAfter2 on /detailed to finish');
      assert.deepEqual(sd.items, [1, 2]);
      assert.ok(sd.error instanceof Error, `stream error on /detailed: ${sd.error}`);
      assert.ok(sd.error.message.startsWith(generic + ' '), `detailed message: ${sd.error.message}`);
      assert.match(sd.error.message, /stream broke$/, 'the Lua message is appended');
    });
  });

  test(`${N}: server-to-client streams: disposing the subscription stops the server`, T, async () => {
    const key = `ticker-${cell.key}`;
    await withConn(cell, async (c) => {
      const s = subscribe(c.stream('Ticker', key, 20));
      await until(() => s.items.length >= 3, 'three Ticker items', WAIT);
      s.sub.dispose();
      // once the CancelInvocation has reached the server the count stops moving (with a tick
      // every 20 ms, two reads 100 ms apart differ while the fiber runs)
      let prev = -2;
      const n1 = await until(async () => {
        const n = (await get(`/ticks/${key}`)).n;
        const stable = n === prev;
        prev = n;
        return stable ? n : (await sleep(100), false);
      }, 'the tick count to stop moving after the dispose', WAIT);
      assert.ok(n1 >= 3, `ticks so far: ${n1}`);
      await sleep(300); // 15 more ticks if the fiber were still running
      const t2 = await get(`/ticks/${key}`);
      assert.equal(t2.n, n1, `the server stopped emitting after the dispose (${JSON.stringify(t2)})`);
      assert.equal(s.error, undefined);
      // the connection goes on
      assert.equal(await within(c.invoke('Value', 'int'), WAIT, 'Value after the dispose'), 42);
    });
  });

  test(`${N}: client-to-server streams: invoke with a Subject`, T, async () => {
    await withConn(cell, async (c) => {
      const s = new signalR.Subject();
      const p = within(c.invoke('Sum', s), WAIT, 'Sum');
      s.next(1); s.next(2); s.next(3); s.complete();
      assert.equal(await p, 6);
      // an empty stream
      const s0 = new signalR.Subject();
      const p0 = within(c.invoke('Sum', s0), WAIT, 'Sum of nothing');
      s0.complete();
      assert.equal(await p0, 0);
    });
  });

  test(`${N}: client-to-server streams: the client's error reaches the server`, T, async () => {
    await withConn(cell, async (c) => {
      // the Lua iterator raises the client's error text
      const s1 = new signalR.Subject();
      const p1 = within(c.invoke('SumCatch', s1), WAIT, 'SumCatch');
      s1.next(1);
      s1.error(new Error('bad'));
      assert.equal(await p1, 'caught: bad');
      // uncaught, the invocation fails like any Lua error
      const s2 = new signalR.Subject();
      const p2 = rejection(within(c.invoke('Sum', s2), WAIT, 'Sum with an error'));
      s2.next(1);
      s2.error(new Error('bad'));
      const e = await p2;
      assert.ok(e instanceof Error, `Sum rejects: ${JSON.stringify(e)}`);
      assert.equal(e.message, "An unexpected error occurred invoking 'Sum' on the server.");
    });
  });

  test(`${N}: client-to-server streams: through send() and stream()`, T, async () => {
    const key = `collect-${cell.key}`;
    await withConn(cell, async (c) => {
      // send(): no completion; a later invoke runs after it (one invocation at a time)
      const s = new signalR.Subject();
      await within(c.send('Collect', key, s), WAIT, 'send(Collect)');
      s.next('a'); s.next(null); s.next(3); s.next({ x: [1, 2] }); s.complete();
      const got = await within(c.invoke('GetCollected', key), WAIT, 'GetCollected');
      assert.deepEqual(got, ['a', null, 3, { x: [1, 2] }], 'null items arrive as kr.json.null');

      // stream() with a plain argument and an upload
      const up = new signalR.Subject();
      const st = subscribe(c.stream('Scale', 10, up));
      up.next(1); up.next(2); up.next(3); up.complete();
      await within(st.finished, WAIT, 'Scale to finish');
      assert.equal(st.error, undefined, `no error: ${st.error && st.error.message}`);
      assert.equal(st.completed, true);
      assert.deepEqual(st.items, [10, 20, 30]);
    });
  });

  test(`${N}: client results`, T, async () => {
    const handlers = {
      setup: (c) => {
        c.on('GetName', (hint) => 'bob-' + hint);
        c.on('GetValue', () => ({ n: 42, list: [1, 'x', null], ok: true }));
      },
    };
    const none = {};
    const throwing = { setup: (c) => c.on('GetName', () => { throw new Error('nope'); }) };
    await withConns(cell, [handlers, none, throwing], async (a, b, t) => {
      assert.equal(await within(a.invoke('AskName', 'hint'), WAIT, 'AskName'), 'bob-hint');
      assert.deepEqual(await within(a.invoke('AskValue'), WAIT, 'AskValue'),
        { value: { n: 42, list: [1, 'x', null], ok: true } });
      // no handler: nil, "Client didn't provide a result."
      assert.equal(await within(b.invoke('AskName', 'hint'), WAIT, 'AskName without a handler'),
        "error: Client didn't provide a result.");
      // a handler that throws: the client sends String(exception)
      assert.equal(await within(t.invoke('AskName', 'hint'), WAIT, 'AskName with a throwing handler'),
        'error: Error: nope');
    });
  });

  if (cell.protocol === 'messagepack') {
    test(`${N}: binary and Date values`, T, async () => {
      await withConn(cell, async (c) => {
        // not valid UTF-8: travels as msgpack bin both ways
        const bytes = new Uint8Array([0xff, 0x00, 0x80, 0xfe, 0x01, 0xc3, 0x28]);
        const back = await within(c.invoke('Back', bytes), WAIT, 'Back(Uint8Array)');
        assert.ok(back instanceof Uint8Array, `a Uint8Array comes back: ${Object.prototype.toString.call(back)} ${JSON.stringify(back)}`);
        assert.deepEqual(Array.from(back), Array.from(bytes));
        const nested = await within(c.invoke('Back', { data: bytes, list: [bytes] }), WAIT, 'Back(nested bytes)');
        assert.ok(nested.data instanceof Uint8Array && nested.list[0] instanceof Uint8Array, 'nested bin stays bin');
        assert.deepEqual(Array.from(nested.data), Array.from(bytes));
        assert.deepEqual(Array.from(nested.list[0]), Array.from(bytes));
        // a Date (timestamp extension) arrives in Lua as an ISO string
        const when = new Date(Date.UTC(2024, 1, 29, 12, 34, 56, 789));
        assert.deepEqual(await within(c.invoke('Describe', when), WAIT, 'Describe(Date)'),
          { type: 'string', value: '2024-02-29T12:34:56.789Z' });
      });
    });
  }
}

test('ServerSentEvents/messagepack: start() rejects (SSE carries text only)', T, async () => {
  const c = build({ transport: 'ServerSentEvents', protocol: 'messagepack' });
  try {
    const e = await rejection(within(c.start(), WAIT, 'start() over SSE with MessagePack'));
    assert.ok(e instanceof Error, `start() rejects: ${JSON.stringify(e)}`);
    assert.match(e.message, /Binary/, e.message);
    assert.equal(c.state, signalR.HubConnectionState.Disconnected);
  } finally {
    await c.stop();
  }
});
