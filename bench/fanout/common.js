'use strict';
// common.js: what the two Node peer servers of the fan-out benchmark share: options, the
// microsecond wall clock, the message, the HTTP control routes and the broadcast loops.
//
// Control (plain HTTP on the server's own port, like the kestrun script's route):
//   GET /start?seconds=S[&rate=R]  start broadcasting for S seconds (0 < S <= 600);
//                                  R = 0 or absent: as fast as allowed, R > 0: R broadcasts/s
//   GET /stats                     counters of the current or last run, as JSON
// The reply to /start is sent at once; the loop runs in the background. A second /start while
// one runs gets 409.
//
// Broadcast loops (the exact policy, identical in ws_server.js and sio_server.js):
//   max rate  one broadcast per event-loop turn (setImmediate), --burst B broadcasts per turn
//             (default 1). A client whose outbound backlog is at or over --hwm bytes (default
//             64 KiB) is skipped for that broadcast: the message is dropped for it, so a client
//             that does not read costs neither memory nor the others' throughput.
//   rate R    open loop: broadcast i is due at start + i/R; each timer wake-up sends every due
//             broadcast, with "t" set to its *scheduled* time (coordinated-omission-safe), then
//             sleeps until the next one is due (Node timers: 1 ms granularity, as libuv's).
// Every message carries "t":<µs since the epoch> (CLOCK_REALTIME) for the load generator.
const { parseArgs } = require('node:util');
const { performance } = require('node:perf_hooks');
const fs = require('node:fs');

function options(name) {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      'port-file': { type: 'string' },
      hwm: { type: 'string', default: String(64 * 1024) },
      burst: { type: 'string', default: '1' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(`usage: node ${name} [--host 127.0.0.1] [--port P|0] [--port-file F] [--hwm BYTES] [--burst B]`);
    process.exit(0);
  }
  const o = {
    host: values.host,
    port: Number(values.port),
    portFile: values['port-file'],
    hwm: Number(values.hwm),
    burst: Number(values.burst),
  };
  if (!/^127\./.test(o.host)) die('--host must be in 127.0.0.0/8');
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) die('--port: 0..65535');
  if (!(o.hwm > 0)) die('--hwm must be > 0');
  if (!Number.isInteger(o.burst) || o.burst < 1 || o.burst > 1000) die('--burst: 1..1000');
  return o;
}

function die(msg) {
  console.error(msg);
  process.exit(2);
}

// Wall clock in µs with sub-millisecond resolution: performance.now() (monotonic) plus an
// offset to CLOCK_REALTIME, taken at the edge of a Date.now() millisecond (accurate to ~1 µs).
let offsetUs = 0;
{
  const d0 = Date.now();
  let d, p;
  const limit = performance.now() + 5;
  do {
    p = performance.now();
    d = Date.now();
  } while (d === d0 && p < limit);
  offsetUs = d * 1000 - p * 1000;
}
function nowUs() {
  return Math.round(performance.now() * 1000 + offsetUs);
}

// The kestrun broadcast's arguments: ReceiveEvent({eventName, data, timestamp}).
function eventArg(n, t) {
  return { eventName: 'tick', data: { n, t }, timestamp: new Date(Math.floor(t / 1000)).toISOString() };
}

// Writes the bound port (then renames, so a reader never sees half a file) and prints it.
function announce(server, o) {
  const port = server.address().port;
  if (o.portFile) {
    fs.writeFileSync(o.portFile + '.tmp', `${port}\n`);
    fs.renameSync(o.portFile + '.tmp', o.portFile);
  }
  console.log(`LISTENING ${port}`);
}

// The control routes and the two loops. `broadcast(n, t)` sends one message to every client
// that is not backpressured and returns how many it skipped; `clients()` counts them.
function control(o, broadcast, clients) {
  const st = { running: false, broadcasts: 0, skipped: 0, seconds: 0, rate: 0, clients_at_start: 0, started_at: 0, elapsed_s: 0 };
  let n = 0;

  function finish(t0) {
    st.running = false;
    st.elapsed_s = (nowUs() - t0) / 1e6;
    console.error(`broadcast done: ${st.broadcasts} broadcasts to ${st.clients_at_start} clients (at start) in ` +
      `${st.elapsed_s.toFixed(3)} s, ${st.skipped} skipped deliveries`);
  }

  function runMax(seconds) {
    const t0 = nowUs();
    const end = t0 + seconds * 1e6;
    const tick = () => {
      for (let b = 0; b < o.burst; b++) {
        const t = nowUs();
        if (t >= end) return finish(t0);
        st.skipped += broadcast(++n, t);
        st.broadcasts++;
      }
      setImmediate(tick);
    };
    setImmediate(tick);
  }

  function runRate(seconds, rate) {
    const t0 = nowUs();
    const end = t0 + seconds * 1e6;
    let i = 0;
    const tick = () => {
      const now = nowUs();
      let due = t0 + Math.floor((i * 1e6) / rate);
      while (due <= now && due < end) {
        st.skipped += broadcast(++n, due);
        st.broadcasts++;
        i++;
        due = t0 + Math.floor((i * 1e6) / rate);
      }
      if (due >= end) return finish(t0);
      setTimeout(tick, Math.max(1, Math.ceil((due - nowUs()) / 1000)));
    };
    tick();
  }

  return (req, res) => {
    const url = new URL(req.url, 'http://x');
    const json = (code, body) => {
      res.writeHead(code, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === '/stats') return json(200, { ...st, clients: clients() });
    if (url.pathname !== '/start') return json(404, { error: 'not found' });
    const seconds = Number(url.searchParams.get('seconds') ?? 5);
    const rate = Number(url.searchParams.get('rate') ?? 0);
    if (!(seconds > 0 && seconds <= 600)) return json(400, { error: 'seconds: 0 < S <= 600' });
    if (!(rate >= 0 && rate <= 1e6)) return json(400, { error: 'rate: 0 <= R <= 1e6' });
    if (st.running) return json(409, { error: 'already running' });
    Object.assign(st, { running: true, broadcasts: 0, skipped: 0, seconds, rate, clients_at_start: clients(), started_at: nowUs(), elapsed_s: 0 });
    if (rate > 0) runRate(seconds, rate);
    else runMax(seconds);
    return json(200, { started: true, seconds, rate, clients: clients() });
  };
}

// Stop cleanly on SIGTERM/SIGINT (the orchestrator kills the server after each run).
function exitOnSignals() {
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
}

module.exports = { options, nowUs, eventArg, announce, control, exitOnSignals };
