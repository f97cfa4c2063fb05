'use strict';
// The MessagePack hub protocol by hand (signalr-protocol.md §5): VarInt length framing written
// here, bodies encoded/decoded with @msgpack/msgpack; and RawMpHub, a raw `ws` client that sends
// the JSON handshake in a text frame, then binary frames, and keeps every frame it receives and
// every record parsed from the byte stream (the handshake reply first, up to 0x1E, then
// VarInt-framed msgpack bodies).

const { encode, decode } = require('@msgpack/msgpack');
const { openRawWs } = require('./signalr');

// VarInt: 7 bits per byte, lowest first, high bit = more follows.
function varint(n) {
  const out = [];
  do {
    let b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

// One framed record from a body (Buffer) or a value to encode.
function frame(bodyOrValue) {
  const body = Buffer.isBuffer(bodyOrValue) ? bodyOrValue : Buffer.from(encode(bodyOrValue));
  return Buffer.concat([varint(body.length), body]);
}

/**
 * Splits buf into framed records. -> { bodies: [Buffer], raw: [Buffer] (prefix included),
 * rest: Buffer (an incomplete tail), error: string|undefined (a broken prefix) }
 */
function unframe(buf) {
  const bodies = [];
  const raw = [];
  let off = 0;
  while (off < buf.length) {
    let size = 0;
    let n = 0;
    let b;
    do {
      if (off + n >= buf.length) return { bodies, raw, rest: buf.subarray(off) };
      b = buf[off + n];
      size += (b & 0x7f) * 2 ** (7 * n);
      n++;
    } while ((b & 0x80) && n < 5);
    if ((b & 0x80) || (n === 5 && b > 7)) return { bodies, raw, rest: buf.subarray(off), error: 'bad length prefix' };
    if (off + n + size > buf.length) return { bodies, raw, rest: buf.subarray(off) };
    bodies.push(buf.subarray(off + n, off + n + size));
    raw.push(buf.subarray(off, off + n + size));
    off += n + size;
  }
  return { bodies, raw, rest: buf.subarray(off) };
}

function tryDecode(body) {
  try { return decode(body); } catch (e) { return { __bad: body.toString('hex'), error: e.message }; }
}

class RawMpHub {
  // opts.reattach: a stateful reattach, where no handshake reply comes: parse frames at once.
  constructor(ws, { reattach = false } = {}) {
    this.ws = ws;
    this.expectHandshake = !reattach;
    this.frames = [];        // { binary, buf }
    this.handshake = undefined; // the handshake reply text (without 0x1E)
    this.records = [];       // decoded msgpack records
    this.raw = [];           // each record's bytes, prefix included
    this.stream = Buffer.alloc(0);
    this.closed = false;
    this.closeCode = undefined;
    this.waiters = [];
    ws.on('message', (data, isBinary) => {
      const buf = Buffer.from(data);
      this.frames.push({ binary: isBinary, buf });
      this.stream = Buffer.concat([this.stream, buf]);
      if (this.expectHandshake && this.handshake === undefined) {
        const i = this.stream.indexOf(0x1e);
        if (i < 0) { this._wake(); return; }
        this.handshake = this.stream.subarray(0, i).toString('utf8');
        this.stream = this.stream.subarray(i + 1);
      }
      const u = unframe(this.stream);
      for (let k = 0; k < u.bodies.length; k++) {
        this.records.push(tryDecode(u.bodies[k]));
        this.raw.push(Buffer.from(u.raw[k]));
      }
      this.stream = Buffer.from(u.rest);
      this._wake();
    });
    ws.on('close', (code) => { this.closed = true; this.closeCode = code; this._wake(); });
    ws.on('error', (e) => { this.error = e; });
  }

  // ws://127.0.0.1:port{path}?id=... after a v1 negotiate (unless opts.negotiate is false), or
  // opts.id; opts.reattach as in the constructor. The open code is signalr.js's openRawWs.
  static open(port, path = '/hub', opts = {}) {
    return openRawWs(port, path, { ...opts, negotiate: opts.negotiate !== false },
      (ws) => new RawMpHub(ws, { reattach: !!opts.reattach }));
  }

  _wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  async _wait(cond, what, timeoutMs = 3000) {
    const d = Date.now() + timeoutMs;
    for (;;) {
      const v = cond();
      if (v) return v;
      const left = d - Date.now();
      if (left <= 0) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; handshake=${JSON.stringify(this.handshake)} ` +
          `records so far: ${JSON.stringify(this.records).slice(0, 1500)}; pending bytes ${this.stream.toString('hex').slice(0, 200)}; ` +
          `closed=${this.closed} code=${this.closeCode}`);
      }
      await new Promise((r) => { const t = setTimeout(r, Math.min(left, 50)); this.waiters.push(() => { clearTimeout(t); r(); }); });
    }
  }

  sendText(text) { this.ws.send(Buffer.from(text, 'utf8'), { binary: false }); }
  sendBinary(buf) { this.ws.send(buf, { binary: true }); }
  // Frames and sends one or more messages (values or raw bodies) in ONE binary frame.
  send(...msgs) { this.sendBinary(Buffer.concat(msgs.map((m) => frame(m)))); }

  // Sends the JSON handshake in a text frame; resolves with the parsed reply.
  async doHandshake({ protocol = 'messagepack', version = 1, timeoutMs = 3000 } = {}) {
    this.sendText(JSON.stringify({ protocol, version }) + '\x1e');
    await this._wait(() => this.handshake !== undefined || this.closed, 'the handshake reply', timeoutMs);
    if (this.handshake === undefined) throw new Error(`closed before the handshake reply (code ${this.closeCode})`);
    return JSON.parse(this.handshake);
  }

  async next(pred, { timeoutMs = 3000, what = 'a matching record' } = {}) {
    let found;
    await this._wait(() => {
      for (const r of this.records) if (pred(r)) { found = r; return true; }
      return false;
    }, what, timeoutMs);
    return found;
  }
  completion(id, opts = {}) {
    return this.next((r) => Array.isArray(r) && r[0] === 3 && r[2] === id, { what: `Completion ${id}`, ...opts });
  }
  invocationsOf(target) {
    return this.records.filter((r) => Array.isArray(r) && r[0] === 1 && r[3] === target);
  }
  async waitClosed(timeoutMs = 3000) {
    await this._wait(() => this.closed, 'the socket to close', timeoutMs);
    return this.closeCode;
  }
  close() { try { this.ws.terminate(); } catch { /* gone */ } }
}

module.exports = { varint, frame, unframe, tryDecode, RawMpHub, encode, decode };
