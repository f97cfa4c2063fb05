'use strict';
// Test harness for the kestrun end-to-end tests: starts the real binary on 127.0.0.1 port 0
// (the bound port comes back through --port-file), captures its output for log assertions,
// and offers raw-socket helpers plus a small HTTP/1.1 response parser for the tests that send
// bytes Node's own client would refuse to send (pipelining, malformed requests, slowloris).

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..');
const SCRIPTS = path.resolve(__dirname, '..', 'scripts');

function kestrunBin() {
  return process.env.KESTRUN_BIN || path.join(REPO, 'build', 'kestrun');
}

// Every child we start, so that none outlives the test process.
const live = new Set();
function killAll() {
  for (const p of live) {
    try { p.kill('SIGKILL'); } catch { /* already gone */ }
  }
  live.clear();
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => { killAll(); process.exit(128 + os.constants.signals[sig]); });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function tempDir(prefix = 'kestrun-e2e-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

// Writes inline Lua source into dir (under name) and returns the file's path.
function writeScript(dir, source, name = 'main.lua') {
  const p = path.join(dir, name);
  fs.writeFileSync(p, source);
  return p;
}

// A Lua string literal for any JS string (used to put temp paths into inline scripts).
function luaString(s) {
  return '"' + String(s).replace(/[\\"]/g, (c) => '\\' + c).replace(/\n/g, '\\n') + '"';
}

function spawnTracked(args, { env, cwd } = {}) {
  const proc = spawn(kestrunBin(), args, {
    cwd,
    env: { ...process.env, ...(env || {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(proc);
  let stdout = '';
  let stderr = '';
  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8');
  proc.stdout.on('data', (d) => { stdout += d; });
  proc.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => {
    proc.on('error', (err) => { live.delete(proc); resolve({ code: null, signal: null, error: err }); });
    proc.on('close', (code, signal) => { live.delete(proc); resolve({ code, signal }); });
  });
  return { proc, exited, stdout: () => stdout, stderr: () => stderr };
}

// Runs the binary to completion (for --help, --check, ...). Killed after timeoutMs.
async function runKestrun(args, { timeoutMs = 10000, env, cwd } = {}) {
  const c = spawnTracked(args, { env, cwd });
  const timer = setTimeout(() => { try { c.proc.kill('SIGKILL'); } catch { /* gone */ } }, timeoutMs);
  const r = await c.exited;
  clearTimeout(timer);
  return { ...r, timedOut: r.signal === 'SIGKILL', stdout: c.stdout(), stderr: c.stderr() };
}

/**
 * startServer({ scripts: [paths] | script: 'lua source', args: [], env, listen: true, timeoutMs })
 * -> { port, ports, url(path), stderr(), stdout(), stop(signal), proc, dir, scriptPaths, exited,
 *      waitForLog(re, ms) }
 */
async function startServer(opts = {}) {
  const dir = tempDir();
  const scriptPaths = [];
  if (opts.script !== undefined) scriptPaths.push(writeScript(dir, opts.script, opts.scriptName || 'main.lua'));
  if (opts.scripts) scriptPaths.push(...opts.scripts.map((s) => (path.isAbsolute(s) ? s : path.join(SCRIPTS, s))));
  const portFile = path.join(dir, 'port');
  const args = [];
  if (opts.listen !== false) args.push('--listen', '127.0.0.1:0');
  args.push('--port-file', portFile, ...(opts.args || []), ...scriptPaths);

  const c = spawnTracked(args, { env: opts.env, cwd: dir });
  let exitInfo = null;
  c.exited.then((r) => { exitInfo = r; });

  const deadline = Date.now() + (opts.timeoutMs || 10000);
  let ports = null;
  while (Date.now() < deadline) {
    if (exitInfo) break;
    try {
      const text = fs.readFileSync(portFile, 'utf8');
      if (text.endsWith('\n') || /^\d+$/.test(text.trim())) {
        const list = text.split('\n').map((l) => l.trim()).filter(Boolean).map(Number);
        if (list.length && list.every((n) => Number.isInteger(n) && n > 0)) { ports = list; break; }
      }
    } catch { /* not there yet */ }
    await sleep(20);
  }
  if (!ports) {
    try { c.proc.kill('SIGKILL'); } catch { /* gone */ }
    const r = await c.exited;
    throw new Error(`kestrun did not start (exit ${JSON.stringify(r)}; bin ${kestrunBin()}; args ${args.join(' ')})\n` +
      `--- stderr ---\n${c.stderr()}\n--- stdout ---\n${c.stdout()}`);
  }

  const port = ports[0];
  async function stop(signal = 'SIGTERM', { killAfterMs = 5000 } = {}) {
    if (!exitInfo) {
      try { c.proc.kill(signal); } catch { /* gone */ }
      const t = setTimeout(() => { try { c.proc.kill('SIGKILL'); } catch { /* gone */ } }, killAfterMs);
      await c.exited;
      clearTimeout(t);
    }
    return { code: exitInfo.code, signal: exitInfo.signal };
  }
  async function waitForLog(re, ms = 3000) {
    const d = Date.now() + ms;
    const test = (s) => (typeof re === 'string' ? s.includes(re) : re.test(s));
    while (Date.now() < d) {
      if (test(c.stderr()) || test(c.stdout())) return true;
      await sleep(20);
    }
    return test(c.stderr()) || test(c.stdout());
  }
  return {
    port,
    ports,
    dir,
    scriptPaths,
    portFile,
    proc: c.proc,
    exited: c.exited,
    url: (p = '/') => `http://127.0.0.1:${port}${p}`,
    stderr: c.stderr,
    stdout: c.stdout,
    log: () => c.stderr() + c.stdout(),
    stop,
    waitForLog,
  };
}

// One request with Node's client on a fresh connection (no keep-alive pool).
// -> { status, headers (lower-case), rawHeaders, body: string, bodyBuf: Buffer }
function request(port, { method = 'GET', path: p = '/', headers = {}, body, timeoutMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => {
        const bodyBuf = Buffer.concat(chunks);
        resolve({ status: res.statusCode, headers: res.headers, rawHeaders: res.rawHeaders,
          body: bodyBuf.toString('utf8'), bodyBuf });
      });
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`request ${method} ${p} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    if (body !== undefined) req.end(body); else req.end();
  });
}

/**
 * rawRequest(port, bytes, { timeoutMs, writes: [..] , delayMs })
 * Sends bytes (or each of opts.writes with delayMs between them) on a new connection and
 * collects everything until the server closes or timeoutMs passes.
 * -> { data: Buffer, closed: bool, error: string|undefined, ms }
 */
function rawRequest(port, bytes, { timeoutMs = 3000, writes, delayMs = 0 } = {}) {
  return new Promise((resolve) => {
    const started = Date.now();
    const chunks = [];
    let done = false;
    let error;
    const sock = net.connect({ host: '127.0.0.1', port });
    const finish = (closed) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ data: Buffer.concat(chunks), closed, error, ms: Date.now() - started });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.on('data', (d) => chunks.push(d));
    sock.on('end', () => finish(true));
    sock.on('close', () => finish(true));
    sock.on('error', (e) => { error = e.code || String(e); finish(true); });
    sock.on('connect', async () => {
      const parts = writes || (bytes === undefined || bytes === null ? [] : [bytes]);
      for (let i = 0; i < parts.length; i++) {
        if (done) return;
        if (i > 0 && delayMs) await sleep(delayMs);
        if (done) return;
        sock.write(parts[i]);
      }
    });
  });
}

// A raw keep-alive connection: write bytes, read whole responses as they arrive.
class RawConn {
  constructor(port) {
    this.port = port;
    this.buf = Buffer.alloc(0);
    this.closed = false;
    this.error = undefined;
    this.waiters = [];
  }
  connect() {
    return new Promise((resolve, reject) => {
      this.sock = net.connect({ host: '127.0.0.1', port: this.port });
      this.sock.once('connect', () => resolve(this));
      this.sock.once('error', reject);
      this.sock.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this._wake(); });
      this.sock.on('end', () => { this.closed = true; this._wake(); });
      this.sock.on('close', () => { this.closed = true; this._wake(); });
      this.sock.on('error', (e) => { this.error = e.code || String(e); this.closed = true; this._wake(); });
    });
  }
  _wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
  write(bytes) { this.sock.write(bytes); }
  // Waits until n complete responses are buffered (methods: per-response request method, for HEAD).
  async readResponses(n, { timeoutMs = 5000, methods = [] } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { responses, rest } = parseResponses(this.buf, { methods, eof: this.closed });
      if (responses.length >= n) {
        // consume exactly n responses
        const { rest: r2 } = parseResponses(this.buf, { methods, eof: this.closed, max: n });
        this.buf = r2;
        return responses.slice(0, n);
      }
      void rest;
      if (this.closed) throw new Error(`connection closed after ${responses.length} of ${n} responses; buffered: ${JSON.stringify(this.buf.toString('latin1').slice(0, 500))}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} responses (got ${responses.length}); buffered: ${JSON.stringify(this.buf.toString('latin1').slice(0, 500))}`);
      await new Promise((r) => { const t = setTimeout(r, left); this.waiters.push(() => { clearTimeout(t); r(); }); });
    }
  }
  async readResponse(opts) { return (await this.readResponses(1, opts))[0]; }
  // Resolves true when the server closes the connection within timeoutMs, else false.
  async waitClosed(timeoutMs = 3000) {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise((r) => { const t = setTimeout(r, left); this.waiters.push(() => { clearTimeout(t); r(); }); });
    }
    return true;
  }
  close() { if (this.sock) this.sock.destroy(); }
}

/**
 * parseResponses(buf, { methods: ['GET','HEAD',...], eof, max })
 * Parses as many complete HTTP/1.x responses as buf holds.
 * -> { responses: [{ version, status, reason, headers: {lower: value}, rawHeaders: [[n,v]], body: Buffer, text }], rest: Buffer, incomplete: bool }
 * A response without Content-Length or chunked framing is body-until-close: complete only when eof.
 */
function parseResponses(buf, { methods = [], eof = false, max = Infinity } = {}) {
  const responses = [];
  let off = 0;
  while (off < buf.length && responses.length < max) {
    const headEnd = buf.indexOf('\r\n\r\n', off, 'latin1');
    if (headEnd < 0) break;
    const head = buf.subarray(off, headEnd).toString('latin1');
    const lines = head.split('\r\n');
    const m = /^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/.exec(lines[0]);
    if (!m) throw new Error(`bad status line: ${JSON.stringify(lines[0])}`);
    const status = Number(m[2]);
    const headers = {};
    const rawHeaders = [];
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      if (i <= 0) throw new Error(`bad header line: ${JSON.stringify(line)}`);
      const name = line.slice(0, i);
      const value = line.slice(i + 1).trim();
      rawHeaders.push([name, value]);
      const k = name.toLowerCase();
      headers[k] = k in headers ? `${headers[k]}, ${value}` : value;
    }
    let p = headEnd + 4;
    const method = (methods[responses.length] || 'GET').toUpperCase();
    let body;
    if (method === 'HEAD' || (status >= 100 && status < 200) || status === 204 || status === 304) {
      body = Buffer.alloc(0);
    } else if (/\bchunked\b/i.test(headers['transfer-encoding'] || '')) {
      const parts = [];
      let complete = false;
      for (;;) {
        const le = buf.indexOf('\r\n', p, 'latin1');
        if (le < 0) break;
        const size = parseInt(buf.subarray(p, le).toString('latin1').split(';')[0].trim(), 16);
        if (Number.isNaN(size)) throw new Error('bad chunk size');
        if (size === 0) {
          // trailers until an empty line
          let q = le + 2;
          for (;;) {
            const te = buf.indexOf('\r\n', q, 'latin1');
            if (te < 0) { q = -1; break; }
            if (te === q) { q = te + 2; break; }
            q = te + 2;
          }
          if (q < 0) break;
          p = q;
          complete = true;
          break;
        }
        if (le + 2 + size + 2 > buf.length) break;
        parts.push(buf.subarray(le + 2, le + 2 + size));
        p = le + 2 + size + 2;
      }
      if (!complete) return { responses, rest: buf.subarray(off), incomplete: true };
      body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
      const len = Number(headers['content-length']);
      if (p + len > buf.length) return { responses, rest: buf.subarray(off), incomplete: true };
      body = buf.subarray(p, p + len);
      p += len;
    } else {
      if (!eof) return { responses, rest: buf.subarray(off), incomplete: true };
      body = buf.subarray(p);
      p = buf.length;
    }
    responses.push({ version: m[1], status, reason: m[3] || '', headers, rawHeaders,
      body: Buffer.from(body), text: Buffer.from(body).toString('utf8') });
    off = p;
  }
  return { responses, rest: buf.subarray(off), incomplete: off < buf.length };
}

// Parses everything a rawRequest returned (the connection is over, so eof = true).
function parseAll(data, methods) {
  return parseResponses(data, { methods, eof: true }).responses;
}

// The status code of the first response in raw bytes, or null.
function firstStatus(data) {
  const m = /^HTTP\/\d\.\d (\d{3})/.exec(data.toString('latin1'));
  return m ? Number(m[1]) : null;
}

async function waitUntil(fn, { timeoutMs = 3000, intervalMs = 25 } = {}) {
  const d = Date.now() + timeoutMs;
  let last;
  while (Date.now() < d) {
    last = await fn();
    if (last) return last;
    await sleep(intervalMs);
  }
  return fn();
}

// A masked client WebSocket frame (FIN set), for tests that speak WebSocket over a bare socket.
function wsFrame(payload, opcode = 0x1) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload, 'utf8');
  const mask = crypto.randomBytes(4);
  let head;
  if (data.length < 126) {
    head = Buffer.from([0x80 | opcode, 0x80 | data.length]);
  } else if (data.length < 65536) {
    head = Buffer.alloc(4);
    head[0] = 0x80 | opcode; head[1] = 0x80 | 126; head.writeUInt16BE(data.length, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = 0x80 | opcode; head[1] = 0x80 | 127; head.writeBigUInt64BE(BigInt(data.length), 2);
  }
  const body = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) body[i] = data[i] ^ mask[i & 3];
  return Buffer.concat([head, mask, body]);
}

module.exports = {
  REPO, SCRIPTS, kestrunBin, startServer, runKestrun, request, rawRequest, RawConn,
  parseResponses, parseAll, firstStatus, sleep, tempDir, writeScript, luaString, waitUntil, wsFrame,
};

// RFC 9110 IMF-fixdate, as in every Date header.
const HTTP_DATE = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;

// Every response carries Date and Server: kestrun.
function assertCommonHeaders(headers, where = '') {
  const assert = require('node:assert/strict');
  assert.match(String(headers.date), HTTP_DATE, `Date header ${where}`);
  assert.equal(headers.server, 'kestrun', `Server header ${where}`);
}

// The methods of an Allow header as a sorted list.
function allowList(value) {
  return String(value || '').split(',').map((s) => s.trim()).filter(Boolean).sort();
}

module.exports.HTTP_DATE = HTTP_DATE;
module.exports.assertCommonHeaders = assertCommonHeaders;
module.exports.allowList = allowList;
