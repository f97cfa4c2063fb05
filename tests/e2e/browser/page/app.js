'use strict';
// Runs one scenario against the hub at /hub with the official browser client (global
// `signalR`, plus `signalR.protocols.msgpack` from signalr-protocol-msgpack.js). The test calls
// window.krRun({ transport, msgpack, tag, token }) through playwright and checks what it returns; the
// page also shows every step, for the screenshot.

(function () {
  const out = () => document.getElementById('out');
  function show(line) {
    out().textContent += line + '\n';
  }
  function status(text, cls) {
    const s = document.getElementById('status');
    s.textContent = text;
    s.className = cls || '';
  }
  // Timestamps, Dates and typed arrays as JSON-friendly values for the test.
  function plain(v) {
    return JSON.parse(JSON.stringify(v, (k, x) => (x instanceof Uint8Array ? Array.from(x) : x)));
  }

  async function krRun({ transport, msgpack = false, tag, token }) {
    const T = signalR.HttpTransportType[transport];
    if (T === undefined) throw new Error('unknown transport ' + transport);
    status(`${transport}${msgpack ? ' + MessagePack' : ''}: connecting`);
    let b = new signalR.HubConnectionBuilder()
      .withUrl('/hub', token ? { transport: T, accessTokenFactory: () => token } : { transport: T })
      .configureLogging(signalR.LogLevel.Warning);
    if (msgpack) b = b.withHubProtocol(new signalR.protocols.msgpack.MessagePackHubProtocol());
    const conn = b.build();

    const got = { echo: [], joined: [], log: [], event: [], group: [], all: [] };
    conn.on('ReceiveEcho', (m) => got.echo.push(m));
    conn.on('GroupJoined', (g) => got.joined.push(g));
    conn.on('ReceiveLog', (e) => got.log.push(plain(e)));
    conn.on('ReceiveEvent', (e) => got.event.push(plain(e)));
    conn.on('GroupNotice', (...a) => got.group.push(plain(a)));
    conn.on('Everyone', (...a) => got.all.push(plain(a)));
    let closedWith = null;
    conn.onclose((e) => { closedWith = e ? String(e.message || e) : 'clean'; });

    async function until(pred, what, ms = 5000) {
      const d = Date.now() + ms;
      while (!pred()) {
        if (closedWith) throw new Error(`connection closed (${closedWith}) while waiting for ${what}`);
        if (Date.now() > d) throw new Error(`timed out after ${ms} ms waiting for ${what}: ${JSON.stringify(got)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    }

    const result = { transport, msgpack };
    await conn.start();
    result.connectionId = conn.connectionId;
    show(`[${transport}${msgpack ? '/msgpack' : ''}] connected: ${conn.connectionId}`);
    try {
      // Built-in Echo: the Completion resolves null, ReceiveEcho arrives on the caller.
      result.echoResult = await conn.invoke('Echo', 'echo ' + tag);
      await until(() => got.echo.length === 1, 'ReceiveEcho');
      show(`  Echo -> ReceiveEcho(${JSON.stringify(got.echo[0])})`);

      // A Lua hub method with structured arguments and result.
      result.add = await conn.invoke('Add', 20, 22);
      result.roundtrip = plain(await conn.invoke('Roundtrip', { s: 'text ' + tag, n: 7, list: [1, 'two', 3.5], nested: { ok: true } }));
      show(`  Add(20, 22) = ${result.add}; Roundtrip = ${JSON.stringify(result.roundtrip)}`);

      // JoinGroup, then a route (fetch from the page, same origin) broadcasts four ways.
      await conn.invoke('JoinGroup', 'g-' + tag);
      await until(() => got.joined.length === 1, 'GroupJoined');
      const r = await fetch(`/broadcast?group=${encodeURIComponent('g-' + tag)}&tag=${encodeURIComponent(tag)}`);
      result.broadcast = { status: r.status, body: await r.json() };
      show(`  GET /broadcast -> ${r.status} ${JSON.stringify(result.broadcast.body)}`);
      await until(() => got.log.length && got.event.length && got.group.length && got.all.length,
        'ReceiveLog, ReceiveEvent, GroupNotice and Everyone');
      show(`  ReceiveLog ${JSON.stringify(got.log[0])}`);
      show(`  ReceiveEvent ${JSON.stringify(got.event[0])}`);
      show(`  GroupNotice ${JSON.stringify(got.group[0])}`);
      show(`  Everyone ${JSON.stringify(got.all[0])}`);
    } finally {
      await conn.stop();
    }
    result.got = got;
    result.closedWith = closedWith;
    status(`${transport}${msgpack ? ' + MessagePack' : ''}: passed`, 'ok');
    return result;
  }

  window.krRun = async (opts) => {
    try {
      return await krRun(opts);
    } catch (e) {
      status(`${opts.transport}: failed: ${e && e.message}`, 'fail');
      show(`  error: ${e && e.message}`);
      throw e;
    }
  };
})();
