'use strict';
// Helpers for the SignalR end-to-end tests: the official @microsoft/signalr client, a raw `ws`
// client that speaks the JSON hub protocol by hand (records split on 0x1E, every frame kept),
// negotiate requests, a free-port picker and a raw TCP WebSocket client that can stop reading.

const crypto = require('node:crypto');
const net = require('node:net');
const signalR = require('@microsoft/signalr');
const WebSocket = require('ws');
const { request, sleep, wsFrame } = require('./server');

const RS = '\x1e';

// A HubConnection over WebSockets (or opts.transport) with logging off. opts: transport,
// skipNegotiation, reconnect (array of delays), serverTimeoutMs, keepAliveMs, headers.
function hubConnection(url, opts = {}) {
  let b = new signalR.HubConnectionBuilder()
    .withUrl(url, {
      transport: opts.transport || signalR.HttpTransportType.WebSockets,
      skipNegotiation: !!opts.skipNegotiation,
      headers: opts.headers,
    })
    .configureLogging(signalR.LogLevel.None);
  if (opts.reconnect) b = b.withAutomaticReconnect(opts.reconnect);
  const conn = b.build();
  if (opts.serverTimeoutMs) conn.serverTimeoutInMilliseconds = opts.serverTimeoutMs;
  if (opts.keepAliveMs) conn.keepAliveIntervalInMilliseconds = opts.keepAliveMs;
  return conn;
}

// hubConnection + start(); `setup(conn)` runs before start (register handlers there).
async function connect(url, opts = {}, setup) {
  const conn = hubConnection(url, opts);
  if (setup) setup(conn);
  await conn.start();
  return conn;
}

async function stopAll(conns) {
  await Promise.allSettled(conns.filter(Boolean).map((c) => c.stop()));
}

// Registers a handler for `method` and returns the list its calls land in (each an argument array).
function collect(conn, method) {
  const got = [];
  conn.on(method, (...args) => got.push(args));
  return got;
}

// Resolves when fn() is truthy, or rejects with `what` after timeoutMs.
async function until(fn, what, timeoutMs = 3000, intervalMs = 10) {
  const d = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > d) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

// POST {path}/negotiate[?query] -> { status, headers, body, json }
async function negotiate(port, hubPath = '/hub', query = 'negotiateVersion=1', method = 'POST') {
  const p = `${hubPath}/negotiate${query ? '?' + query : ''}`;
  const r = await request(port, { method, path: p, body: method === 'POST' ? '' : undefined });
  let json;
  try { json = JSON.parse(r.body); } catch { json = undefined; }
  return { ...r, json };
}

// The open code of the raw clients (RawHub here, RawMpHub in rawmsgpack.js): negotiates when
// opts.negotiate (v1 unless opts.negotiateQuery; the id is the token, else the connection id)
// unless opts.id is given, opens ws://127.0.0.1:port{path}[?id=...] and resolves on 'open' with
// wrap(ws), which attaches its listeners before 'open' so that data the server sends with the
// 101 is not lost; the result gets .id and .negotiated (the negotiate JSON). Rejects with
// err.status on a non-101 answer.
async function openRawWs(port, path, opts, wrap) {
  let id = opts.id;
  let neg;
  if (id === undefined && opts.negotiate) {
    neg = await negotiate(port, path, opts.negotiateQuery || 'negotiateVersion=1');
    id = neg.json.connectionToken || neg.json.connectionId;
  }
  const url = `ws://127.0.0.1:${port}${path}${id !== undefined ? `${path.includes('?') ? '&' : '?'}id=${encodeURIComponent(id)}` : ''}`;
  const ws = new WebSocket(url, { perMessageDeflate: false });
  const h = wrap(ws);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('unexpected-response', (req, res) => {
      const err = new Error(`WebSocket upgrade answered ${res.statusCode}`);
      err.status = res.statusCode;
      res.resume();
      req.destroy();
      reject(err);
    });
    ws.once('error', reject);
  });
  h.id = id;
  h.negotiated = neg && neg.json;
  return h;
}

// Raw WebSocket client: keeps every frame and every parsed record.
class RawHub {
  constructor(ws) {
    this.ws = ws;
    this.frames = [];      // { binary, text }
    this.records = [];     // parsed JSON objects (or { __bad: text })
    this.texts = [];       // raw record texts
    this.partial = '';
    this.closed = false;
    this.closeCode = undefined;
    this.closeReason = undefined;
    this.waiters = [];
    ws.on('message', (data, isBinary) => {
      const text = Buffer.from(data).toString('utf8');
      this.frames.push({ binary: isBinary, text });
      const all = this.partial + text;
      const parts = all.split(RS);
      this.partial = parts.pop();
      for (const t of parts) {
        this.texts.push(t);
        try { this.records.push(JSON.parse(t)); } catch { this.records.push({ __bad: t }); }
      }
      this._wake();
    });
    ws.on('close', (code, reason) => {
      this.closed = true;
      this.closeCode = code;
      this.closeReason = reason ? reason.toString() : '';
      this._wake();
    });
    ws.on('error', (e) => { this.error = e; });
  }

  // Opens ws://127.0.0.1:port{path}[?id=...]. opts.id: explicit id; opts.negotiate: negotiate
  // first (v1, uses the token). Rejects with err.status on a non-101 answer.
  static open(port, path = '/hub', opts = {}) {
    return openRawWs(port, path, { ...opts, negotiate: !!opts.negotiate }, (ws) => new RawHub(ws));
  }

  // Status code of a WS upgrade attempt (101 when it succeeds; the socket is then closed).
  static async upgradeStatus(port, pathAndQuery) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${pathAndQuery}`, { perMessageDeflate: false });
    return new Promise((resolve, reject) => {
      ws.once('open', () => { ws.terminate(); resolve(101); });
      ws.once('unexpected-response', (req, res) => { res.resume(); req.destroy(); resolve(res.statusCode); });
      ws.once('error', reject);
    });
  }

  _wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  async _wait(cond, what, timeoutMs) {
    const d = Date.now() + timeoutMs;
    for (;;) {
      const v = cond();
      if (v) return v;
      const left = d - Date.now();
      if (left <= 0) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; records so far: ` +
          JSON.stringify(this.texts).slice(0, 1500) + `; closed=${this.closed} code=${this.closeCode}`);
      }
      await new Promise((r) => { const t = setTimeout(r, Math.min(left, 50)); this.waiters.push(() => { clearTimeout(t); r(); }); });
    }
  }

  send(text, { binary = false } = {}) {
    this.ws.send(typeof text === 'string' ? Buffer.from(text, 'utf8') : text, { binary });
  }
  sendRecord(obj) { this.send(JSON.stringify(obj) + RS); }

  // Sends the handshake and waits for the first record; returns it.
  async handshake({ protocol = 'json', version = 1, timeoutMs = 3000 } = {}) {
    this.send(JSON.stringify({ protocol, version }) + RS);
    await this._wait(() => this.records.length > 0 || this.closed, 'the handshake reply', timeoutMs);
    if (!this.records.length) throw new Error(`closed before the handshake reply (code ${this.closeCode})`);
    return this.records[0];
  }

  // Waits for a record (at or after index `from`) that pred accepts; returns it.
  async next(pred, { timeoutMs = 3000, from = 0, what = 'a matching record' } = {}) {
    let found;
    await this._wait(() => {
      for (let i = from; i < this.records.length; i++) {
        if (pred(this.records[i])) { found = this.records[i]; return true; }
      }
      return false;
    }, what, timeoutMs);
    return found;
  }
  completion(invocationId, opts = {}) {
    return this.next((r) => r.type === 3 && r.invocationId === invocationId, { what: `Completion ${invocationId}`, ...opts });
  }
  invocationsOf(target) {
    return this.records.filter((r) => r.type === 1 && r.target === target);
  }
  async waitClosed(timeoutMs = 3000) {
    await this._wait(() => this.closed, 'the socket to close', timeoutMs);
    return this.closeCode;
  }
  // Frames that do not hold whole records (JSON units must end with 0x1E).
  splitFrames() {
    return this.frames.filter((f) => !f.binary && !f.text.endsWith(RS));
  }
  close() { try { this.ws.terminate(); } catch { /* gone */ } }
}

// A free TCP port on 127.0.0.1 (bound then released).
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// A raw TCP socket that completes the WebSocket upgrade (skipNegotiation style, path without id)
// and the SignalR JSON handshake, then hands the socket back. Reading can be stopped with
// sock.pause(). -> { sock, bytesRead(): number, ended: Promise }
async function rawTcpHubClient(port, path = '/hub', timeoutMs = 3000) {
  const sock = net.connect({ host: '127.0.0.1', port });
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  let buf = Buffer.alloc(0);
  let total = 0;
  const onData = (d) => { buf = Buffer.concat([buf, d]); total += d.length; };
  sock.on('data', onData);
  const ended = new Promise((resolve) => { sock.on('close', resolve); sock.on('error', () => {}); });
  const key = crypto.randomBytes(16).toString('base64');
  sock.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  const deadline = Date.now() + timeoutMs;
  while (buf.indexOf('\r\n\r\n') < 0) {
    if (Date.now() > deadline) throw new Error(`no upgrade answer: ${buf.toString('latin1')}`);
    await sleep(5);
  }
  const headEnd = buf.indexOf('\r\n\r\n');
  const head = buf.subarray(0, headEnd).toString('latin1');
  if (!/^HTTP\/1\.1 101/.test(head)) throw new Error(`upgrade failed: ${head}`);
  buf = buf.subarray(headEnd + 4);
  sock.write(wsFrame('{"protocol":"json","version":1}' + RS));
  // wait for the text frame holding {}\x1e
  while (!buf.includes(Buffer.from('{}' + RS))) {
    if (Date.now() > deadline) throw new Error(`no handshake reply: ${buf.toString('latin1')}`);
    await sleep(5);
  }
  return { sock, bytesRead: () => total, ended };
}

module.exports = {
  signalR, WebSocket, RS, hubConnection, connect, stopAll, collect, until, negotiate, openRawWs, RawHub,
  freePort, wsFrame, rawTcpHubClient,
};
