'use strict';
// Hot reload under load (--watch): 100 official clients over WebSockets, some in groups, a
// steady stream of HTTP requests, hub invocations and group broadcasts while the script is
// rewritten three times (a plain write; a write in another directory renamed over it; vim's
// backup-rename with a new route). Nothing may drop or fail; groups survive; routes, hub
// methods and timers switch. Then two broken edits (a syntax error, a runtime error at load):
// the old version keeps answering, the log has FILE:LINE:, and every client gets the Error
// ReceiveLog exactly once per failed reload.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { startServer, sleep, tempDir, luaString } = require('../lib/server');
const { connect, stopAll, until } = require('../lib/signalr');

const N = 100;
const HTTP_LOOPS = 20;
const INVOKERS = 5;
const GROUPS = ['red', 'blue', 'green', 'ticks'];

// Group memberships of client i: a mix of none, one and two groups.
function groupsOf(i) {
  const g = [];
  if (i % 3 === 0) g.push('red');
  if (i % 3 === 1) g.push('blue');
  if (i % 5 === 0) g.push('green');
  if (i % 10 === 7) g.push('ticks');
  return g;
}

function script(version, { newRoute = false } = {}) {
  const v = JSON.stringify(version);
  return `local VERSION = ${v}
local hub = kr.hub("/hub", { transports = { "WebSockets" } })
hub:on("Version", function(ctx) return VERSION end)
kr.map_route("GET", "/v", function(req, res) res:text(VERSION) end)
kr.map_route("GET", "/slow", function(req, res) kr.sleep(150) res:text(VERSION) end)
kr.map_route("GET", "/gsend/{g}", function(req, res)
  local ok, n = kr.group_send(req.params.g, "G", req.params.g, req.query.tag)
  res:json({ ok = ok, n = n })
end)
kr.every(50, function() kr.group_send("ticks", "Tick", VERSION) end)
${newRoute ? `kr.map_route("GET", "/new", function(req, res) res:text("new-" .. VERSION) end)\n` : ''}`;
}

// Exit 0 and no sanitizer report (the ASan build aborts on UB and exits 1 on a leak).
function assertCleanExit(st, srv) {
  assert.deepEqual(st, { code: 0, signal: null }, srv.stderr().slice(-4000));
  assert.doesNotMatch(srv.stderr(), /Sanitizer|runtime error:/);
}

// GET on 127.0.0.1 with a given agent (keep-alive pool or a fresh connection).
function get(port, p, agent) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: p, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', reject);
    });
    req.setTimeout(10000, () => req.destroy(new Error(`GET ${p} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

test('hot reload under load: nothing drops, groups survive, a broken edit keeps the old version', async (t) => {
  const srv = await startServer({ script: script('v1') });
  const file = srv.scriptPaths[0];
  const port = srv.port;
  const keepAlive = new http.Agent({ keepAlive: true, maxSockets: HTTP_LOOPS });
  const clients = [];
  let stop = false;
  try {
    // ---- 100 clients, groups joined through the built-in JoinGroup ----
    const events = { closed: 0, reconnecting: 0 };
    for (let b = 0; b < N; b += 25) {
      const batch = await Promise.all(Array.from({ length: 25 }, (_, k) => {
        const i = b + k;
        const c = { i, groups: groupsOf(i), g: [], ticks: [], logs: [] };
        return connect(srv.url('/hub'), { reconnect: [0, 200, 1000] }, (conn) => {
          conn.on('G', (group, tag) => c.g.push({ group, tag }));
          conn.on('Tick', (v) => c.ticks.push(v));
          conn.on('ReceiveLog', (m) => c.logs.push(m));
          conn.onclose(() => { events.closed++; });
          conn.onreconnecting(() => { events.reconnecting++; });
        }).then((conn) => { c.conn = conn; return c; });
      }));
      clients.push(...batch);
    }
    for (const c of clients) for (const g of c.groups) await c.conn.invoke('JoinGroup', g);
    const members = Object.fromEntries(GROUPS.map((g) => [g, clients.filter((c) => c.groups.includes(g))]));
    assert.ok(GROUPS.every((g) => members[g].length > 0));

    // ---- the steady stream ----
    // The versions in order; `floor` is the oldest one a request sent now may still get: it
    // moves up once a fresh request has seen the new one (the swap is then done), so nothing
    // depends on timing.
    const order = ['v1', 'v2', 'v3', 'v4'];
    let floor = 0;
    const valid = (body, f) => order.indexOf(body) >= f;
    const failures = [];
    let okRequests = 0;
    const httpLoop = async (k) => {
      const agent = k % 2 ? keepAlive : false; // half keep-alive, half a connection per request
      const p = k < 4 ? '/slow' : '/v'; // /slow sleeps 150 ms: some are running across each swap
      while (!stop) {
        const f = floor;
        try {
          const r = await get(port, p, agent);
          if (r.status === 200 && valid(r.body, f)) okRequests++;
          else failures.push(`GET ${p}: ${r.status} ${JSON.stringify(r.body)}`);
        } catch (e) { failures.push(`GET ${p}: ${e.message}`); }
      }
    };
    let okInvokes = 0;
    const invokeLoop = async (c) => {
      while (!stop) {
        const f = floor;
        try {
          const v = await c.conn.invoke('Version');
          if (valid(v, f)) okInvokes++; else failures.push(`Version -> ${JSON.stringify(v)}`);
        } catch (e) { failures.push(`Version: ${e.message}`); }
      }
    };
    const sentTags = Object.fromEntries(GROUPS.map((g) => [g, []]));
    const broadcastLoop = async () => {
      for (let k = 0; !stop; k++) {
        const g = GROUPS[k % 3];
        const tag = `bg-${k}`;
        try {
          const r = await get(port, `/gsend/${g}?tag=${tag}`, keepAlive);
          const j = r.status === 200 ? JSON.parse(r.body) : null;
          // every broadcast reaches exactly the current members: memberships never blink
          if (j && j.ok === true && j.n === members[g].length) sentTags[g].push(tag);
          else failures.push(`gsend ${g}: ${r.status} ${r.body} (members ${members[g].length})`);
        } catch (e) { failures.push(`gsend ${g}: ${e.message}`); }
        await sleep(10);
      }
    };
    const loops = [
      ...Array.from({ length: HTTP_LOOPS }, (_, k) => httpLoop(k)),
      ...clients.slice(0, INVOKERS).map(invokeLoop),
      broadcastLoop(),
    ];

    // Waits until the new version serves; from then on an older answer is a failure.
    const switchTo = async (v, what) => {
      await until(async () => (await get(port, '/v', false)).body === v, `${what}: /v answers ${v}`, 10000, 25);
      floor = order.indexOf(v);
      assert.equal(await clients[INVOKERS].conn.invoke('Version'), v, `${what}: hub method switched`);
      await sleep(300); // some load on the new version before the next edit
    };

    await sleep(500);
    // 1. a plain write (same inode)
    fs.writeFileSync(file, script('v2'));
    await switchTo('v2', 'plain write');
    // 2. written in another directory, renamed over the script
    const other = tempDir('kestrun-e2e-other-');
    fs.writeFileSync(path.join(other, 'main.lua'), script('v3'));
    fs.renameSync(path.join(other, 'main.lua'), file);
    fs.rmSync(other, { recursive: true, force: true });
    await switchTo('v3', 'rename from another directory');
    // 3. vim's backup-rename (the old file moves to main.lua~, a new main.lua is written), a new route
    fs.renameSync(file, `${file}~`);
    fs.writeFileSync(file, script('v4', { newRoute: true }));
    await switchTo('v4', 'backup-rename');
    const nr = await get(port, '/new', false);
    assert.deepEqual(nr, { status: 200, body: 'new-v4' });

    // The timer of the current generation alone ticks now: on one connection the old timer's
    // last tick comes before the new one's first, and none after.
    const ticker = members.ticks[0];
    await until(() => ticker.ticks.includes('v4'), 'a tick of the new timer', 5000);
    const first = ticker.ticks.indexOf('v4');
    await until(() => ticker.ticks.length >= first + 6, 'five more ticks', 5000);
    assert.deepEqual([...new Set(ticker.ticks.slice(first))], ['v4'], 'only the new timer ticks');

    stop = true;
    await Promise.all(loops);
    t.diagnostic(`${okRequests} requests, ${okInvokes} invocations, ${GROUPS.slice(0, 3).map((g) => sentTags[g].length).join('+')} group broadcasts`);
    assert.deepEqual(failures, [], 'no failed request, invocation or broadcast');
    assert.ok(okRequests > 200, `a real stream of requests (${okRequests})`);
    assert.ok(okInvokes > 20, `a real stream of invocations (${okInvokes})`);
    assert.deepEqual(events, { closed: 0, reconnecting: 0 }, 'no connection dropped');
    assert.ok(clients.every((c) => c.conn.state === 'Connected'));

    // Every member got every broadcast of its groups; nobody got one of another group.
    await until(() => GROUPS.slice(0, 3).every((g) => members[g].every((c) =>
      c.g.filter((m) => m.group === g).length >= sentTags[g].length)), 'background group messages', 10000);
    for (const c of clients) {
      for (const g of GROUPS.slice(0, 3)) {
        const got = c.g.filter((m) => m.group === g).map((m) => m.tag);
        assert.deepEqual(got, c.groups.includes(g) ? sentTags[g] : [], `client ${c.i} group ${g}`);
      }
    }
    // A group_send after the reloads reaches exactly the members.
    for (const g of GROUPS) {
      const r = JSON.parse((await get(port, `/gsend/${g}?tag=final`, false)).body);
      assert.deepEqual(r, { ok: true, n: members[g].length }, `final group_send to ${g}`);
    }
    await until(() => clients.every((c) => c.groups.every((g) => c.g.some((m) => m.group === g && m.tag === 'final'))),
      'final group messages', 5000);
    await sleep(200);
    for (const c of clients) {
      const finals = c.g.filter((m) => m.tag === 'final').map((m) => m.group).sort();
      assert.deepEqual(finals, [...c.groups].sort(), `client ${c.i}: the final group_send of exactly its groups`);
    }

    // ---- broken edits: the old version keeps serving; each client is told once ----
    const broken = [
      { what: 'syntax error', text: script('v5') + 'local = 1\n', line: script('v5').split('\n').length,
        write: () => fs.writeFileSync(file, script('v5') + 'local = 1\n') },
      { what: 'runtime error at load', text: null, line: 2,
        write: () => {
          const tmp = `${file}.tmp-${process.pid}`;
          fs.writeFileSync(tmp, 'local VERSION = "v6"\nerror("reload-load-boom-8841")\n' + script('v6'));
          fs.renameSync(tmp, file);
        } },
    ];
    const esc = file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    for (let k = 0; k < broken.length; k++) {
      const b = broken[k];
      const before = srv.log().length;
      b.write();
      await until(() => /reload failed: generation \d+ keeps serving/.test(srv.log().slice(before)),
        `${b.what}: reload failed logged`, 5000);
      const logged = srv.log().slice(before);
      const lineRe = new RegExp(`\\[Error\\] lua: (${esc}:${b.line}: [^\\n]+)`);
      const m = lineRe.exec(logged);
      assert.ok(m, `${b.what}: FILE:LINE: message in the log:\n${logged}`);
      await until(() => clients.every((c) => c.logs.length >= k + 1), `${b.what}: every client told`, 5000);
      await sleep(400); // a second ReceiveLog would have arrived by now
      for (const c of clients) {
        assert.equal(c.logs.length, k + 1, `client ${c.i}: exactly one ReceiveLog per failed reload`);
        const l = c.logs[k];
        assert.equal(l.level, 'Error');
        assert.equal(l.message, m[1], `client ${c.i}: the logged FILE:LINE: message`);
        assert.ok(!Number.isNaN(Date.parse(l.timestamp)), `timestamp ${l.timestamp}`);
      }
      assert.deepEqual(await get(port, '/v', false), { status: 200, body: 'v4' }, `${b.what}: old route`);
      assert.deepEqual(await get(port, '/new', false), { status: 200, body: 'new-v4' });
      assert.equal(await clients[0].conn.invoke('Version'), 'v4', `${b.what}: old hub method`);
    }
    assert.match(clients[0].logs[1].message, /reload-load-boom-8841/);
    assert.deepEqual(events, { closed: 0, reconnecting: 0 }, 'no connection dropped by the broken edits');
    await stopAll(clients.map((c) => c.conn));
    assertCleanExit(await srv.stop(), srv);
  } finally {
    stop = true;
    keepAlive.destroy();
    await stopAll(clients.map((c) => c.conn));
    await srv.stop();
  }
});

test('--watch also watches the files the scripts pulled in with require and dofile', async () => {
  const dir = tempDir();
  const write = (name, text) => {
    const tmp = path.join(dir, `.${name}.tmp`);
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, path.join(dir, name)); // as `sed -i` does: a temp file renamed over it
  };
  write('mod.lua', 'return { v = "m1" }\n');
  write('data.lua', 'return { v = "d1" }\n');
  write('main.lua', `package.path = ${luaString(path.join(dir, '?.lua'))}\n` +
    'local m = require("mod")\n' +
    `local d = dofile(${luaString(path.join(dir, 'data.lua'))})\n` +
    'kr.map_route("GET", "/v", function(req, res) res:text(m.v .. "/" .. d.v) end)\n');
  const srv = await startServer({ scripts: [path.join(dir, 'main.lua')] });
  const body = async () => (await get(srv.port, '/v', false)).body;
  try {
    assert.equal(await body(), 'm1/d1');
    write('mod.lua', 'return { v = "m2" }\n');
    await until(async () => (await body()) === 'm2/d1', 'the required module reloaded', 5000, 25);
    fs.writeFileSync(path.join(dir, 'data.lua'), 'return { v = "d2" }\n');
    await until(async () => (await body()) === 'm2/d2', 'the dofile data reloaded', 5000, 25);
    // A broken module: the old version keeps serving; the error names the module's line.
    const before = srv.log().length;
    write('mod.lua', 'local x = 1\nreturn { v = \n');
    await until(() => /reload failed/.test(srv.log().slice(before)), 'the failed reload', 5000);
    assert.match(srv.log().slice(before), /\[Error\] lua: \S*main\.lua:2: error loading module 'mod' from file '\S*mod\.lua': \S*mod\.lua:3: /);
    assert.equal(await body(), 'm2/d2');
    write('mod.lua', 'return { v = "m3" }\n');
    await until(async () => (await body()) === 'm3/d2', 'the fixed module reloaded', 5000, 25);
    assertCleanExit(await srv.stop(), srv);
  } finally {
    await srv.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
