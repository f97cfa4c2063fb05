'use strict';
// A TCP proxy (node:net) between a client and kestrun, so that a test can cut the client's
// connections without touching the server: kill() destroys both halves of every proxied
// connection at once (no WebSocket close frame: the server sees an abnormal close, the client a
// 1006). The proxy keeps listening, so a client that reattaches comes through a new pair;
// `refuse = true` makes it drop every new connection instead (a client that never comes back).

const net = require('node:net');

class TcpProxy {
  /**
   * @param {number} targetPort kestrun's port on 127.0.0.1
   * @param {object} [opts]
   * @param {number} [opts.connectDelayMs=0] wait this long before connecting a newly accepted
   *   client to the server (data the client sends meanwhile is held): lets the server see the
   *   previous socket's end before the reattaching one arrives
   */
  constructor(targetPort, { connectDelayMs = 0 } = {}) {
    this.targetPort = targetPort;
    this.connectDelayMs = connectDelayMs;
    this.refuse = false;
    this.pairs = new Set();
    this.accepted = 0;   // client connections accepted (refused ones included)
    this.kills = 0;      // kill() calls
    this.killed = 0;     // pairs destroyed by kill()
    this.server = net.createServer((client) => this._onClient(client));
  }

  start() {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.port = this.server.address().port;
        resolve(this);
      });
    });
  }

  url(p = '/') { return `http://127.0.0.1:${this.port}${p}`; }

  _onClient(client) {
    this.accepted++;
    client.on('error', () => {});
    if (this.refuse) { client.destroy(); return; }
    client.setNoDelay(true);
    const pair = { client, upstream: null, dead: false, openedAt: Date.now() };
    this.pairs.add(pair);
    const held = [];
    const hold = (d) => held.push(d);
    client.on('data', hold);
    const end = () => {
      if (pair.dead) return;
      pair.dead = true;
      this.pairs.delete(pair);
      client.destroy();
      if (pair.upstream) pair.upstream.destroy();
    };
    client.on('close', end);
    const connectUp = () => {
      if (pair.dead) return;
      const up = net.connect({ host: '127.0.0.1', port: this.targetPort });
      pair.upstream = up;
      up.setNoDelay(true);
      up.on('error', () => {});
      up.on('close', end);
      up.on('connect', () => {
        if (pair.dead) { up.destroy(); return; }
        client.off('data', hold);
        for (const d of held) up.write(d);
        held.length = 0;
        client.pipe(up);
        up.pipe(client);
      });
    };
    if (this.connectDelayMs > 0) setTimeout(connectUp, this.connectDelayMs); else connectUp();
  }

  // Destroys both halves of every proxied connection, right now. Returns how many.
  kill() {
    this.kills++;
    let n = 0;
    for (const pair of [...this.pairs]) {
      pair.dead = true;
      this.pairs.delete(pair);
      pair.client.destroy();
      if (pair.upstream) pair.upstream.destroy();
      n++;
    }
    this.killed += n;
    return n;
  }

  // The number of live proxied connections.
  get active() { return this.pairs.size; }

  async close() {
    this.refuse = true;
    this.kill();
    await new Promise((resolve) => this.server.close(() => resolve()));
  }
}

async function startProxy(targetPort, opts) {
  return new TcpProxy(targetPort, opts).start();
}

module.exports = { TcpProxy, startProxy };
