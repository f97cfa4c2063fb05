// The kestrun demo dashboard: one SignalR connection to /runtime (the official browser client,
// window.signalR), the routes of signalr_demo.lua behind the buttons, and a small chart drawn by hand.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const MAX_LOG = 300;
  const MAX_POINTS = 60;

  // ---------------------------------------------------------------- helpers

  function clock(iso) {
    const d = iso ? new Date(iso) : new Date();
    return isNaN(d) ? String(iso) : d.toLocaleTimeString([], { hour12: false });
  }

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (k === 'dataset') Object.assign(e.dataset, v);
        else if (k === 'text') e.textContent = v;
        else e.setAttribute(k, v);
      }
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }

  function compact(value) {
    if (value === null || value === undefined) return '';
    if (typeof value !== 'object') return String(value);
    return Object.entries(value).map(([k, v]) => `${k}=${typeof v === 'object' && v !== null ? JSON.stringify(v) : v}`).join('  ');
  }

  // ---------------------------------------------------------------- live log

  const logEl = $('log');

  // kind: log | event | group | http | client; level: the badge text (a log level, an event name...)
  function addLog(kind, level, message, data, timestamp) {
    const li = el('li', { dataset: { kind, level } },
      el('time', { datetime: timestamp || new Date().toISOString(), text: clock(timestamp) }),
      el('span', { class: 'badge', text: level }),
      el('span', { class: 'msg' }, message, data ? el('span', { class: 'data', text: '  ' + data }) : null));
    logEl.prepend(li);
    while (logEl.children.length > MAX_LOG) logEl.lastElementChild.remove();
  }

  $('btn-clear').addEventListener('click', () => { logEl.textContent = ''; });
  $('show-events').addEventListener('change', (e) => logEl.classList.toggle('hide-event', !e.target.checked));
  $('show-http').addEventListener('change', (e) => logEl.classList.toggle('hide-http', !e.target.checked));

  // ---------------------------------------------------------------- HTTP calls

  async function call(method, url) {
    try {
      const r = await fetch(url, { method });
      const type = r.headers.get('content-type') || '';
      const body = type.includes('json') ? await r.json() : await r.text();
      addLog('http', String(r.status), `${method} ${url}`, typeof body === 'string' ? body : JSON.stringify(body));
      return { status: r.status, body };
    } catch (err) {
      addLog('http', 'failed', `${method} ${url}`, String(err));
      return { status: 0, body: null };
    }
  }

  for (const b of document.querySelectorAll('button[data-get]')) {
    b.addEventListener('click', () => call('GET', b.dataset.get));
  }

  // ---------------------------------------------------------------- progress bars

  function setBar(prefix, percent, status, done) {
    const p = Math.max(0, Math.min(100, Math.round(Number(percent) || 0)));
    const bar = $(prefix + '-bar');
    bar.setAttribute('aria-valuenow', String(p));
    bar.dataset.done = done ? 'true' : 'false';
    bar.querySelector('.fill').style.width = p + '%';
    $(prefix + '-percent').textContent = p + '%';
    if (status !== undefined) $(prefix + '-status').textContent = status;
  }

  let currentOp = null;

  $('op-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const seconds = Number($('op-seconds').value) || 10;
    setBar('op', 0, 'starting…', false);
    const r = await call('POST', `/api/operation/start?seconds=${encodeURIComponent(seconds)}`);
    if (r.body && r.body.Success) {
      currentOp = r.body.TaskId;
      $('op-id').textContent = currentOp;
      $('op-id').title = currentOp;
      $('btn-op-status').disabled = false;
      setBar('op', 0, 'running', false);
    } else {
      setBar('op', 0, 'could not start', false);
    }
  });

  $('btn-op-status').addEventListener('click', async () => {
    if (!currentOp) return;
    const r = await call('GET', `/api/operation/status/${encodeURIComponent(currentOp)}`);
    const pre = $('op-details');
    pre.hidden = false;
    pre.textContent = JSON.stringify(r.body, null, 2);
  });

  $('btn-process').addEventListener('click', async () => {
    setBar('proc', 0, 'waiting for the first step…', false);
    const r = await call('POST', '/api/process');
    if (r.status === 200) $('proc-status').textContent = `answered: ${r.body}`;
  });

  // ---------------------------------------------------------------- chart

  const canvas = $('chart');
  const points = [];

  function niceMax(v, floor) {
    const m = Math.max(v, floor);
    const step = Math.pow(10, Math.floor(Math.log10(m)));
    for (const k of [1, 2, 4, 6, 8, 10]) if (k * step >= m) return k * step;
    return 10 * step;
  }

  function drawChart() {
    const css = getComputedStyle(document.documentElement);
    const color = (name) => css.getPropertyValue(name).trim();
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 600;
    const h = canvas.clientHeight || 200;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);

    const pad = { l: 44, r: 58, t: 10, b: 22 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    const cpuMax = niceMax(Math.max(0, ...points.map((p) => p.cpu)), 4);
    const memMax = niceMax(Math.max(0, ...points.map((p) => p.mem)), 8);

    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    ctx.strokeStyle = color('--line');
    ctx.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const y = pad.t + ph - (ph * i) / 4;
      ctx.beginPath();
      ctx.moveTo(pad.l, Math.round(y) + 0.5);
      ctx.lineTo(pad.l + pw, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.fillStyle = color('--cpu');
      ctx.textAlign = 'right';
      ctx.fillText(`${+(cpuMax * i / 4).toFixed(1)}%`, pad.l - 6, y);
      ctx.fillStyle = color('--mem');
      ctx.textAlign = 'left';
      ctx.fillText(`${+(memMax * i / 4).toFixed(1)} MB`, pad.l + pw + 6, y);
    }

    ctx.fillStyle = color('--muted');
    ctx.textAlign = 'center';
    ctx.textBaseline = 'alphabetic';
    if (points.length === 0) {
      ctx.fillText('waiting for the first SystemMetrics event…', pad.l + pw / 2, pad.t + ph / 2);
      return;
    }
    ctx.textAlign = 'left';
    ctx.fillText(clock(points[0].ts), pad.l, h - 5);
    ctx.textAlign = 'right';
    ctx.fillText(clock(points[points.length - 1].ts), pad.l + pw, h - 5);

    // The points spread over the whole width (the oldest at the left edge, the newest at the right).
    const x = (i) => pad.l + (points.length === 1 ? pw : (pw * i) / (points.length - 1));
    const series = (key, max, col) => {
      ctx.strokeStyle = col;
      ctx.fillStyle = col;
      ctx.lineWidth = 2;
      ctx.lineJoin = 'round';
      ctx.beginPath();
      points.forEach((p, i) => {
        const y = pad.t + ph - (ph * p[key]) / max;
        if (i === 0) ctx.moveTo(x(i), y); else ctx.lineTo(x(i), y);
      });
      ctx.stroke();
      const last = points[points.length - 1];
      ctx.beginPath();
      ctx.arc(x(points.length - 1), pad.t + ph - (ph * last[key]) / max, 3, 0, Math.PI * 2);
      ctx.fill();
    };
    series('mem', memMax, color('--mem'));
    series('cpu', cpuMax, color('--cpu'));
  }

  function addMetrics(data, timestamp) {
    const cpu = Number(data.CpuPercent) || 0;
    const mem = Number(data.MemoryMB) || 0;
    points.push({ cpu, mem, ts: data.Timestamp || timestamp });
    while (points.length > MAX_POINTS) points.shift();
    canvas.dataset.points = String(points.length);
    canvas.dataset.cpu = String(cpu);
    canvas.dataset.memory = String(mem);
    $('m-cpu').textContent = `${cpu.toFixed(1)}%`;
    $('m-mem').textContent = `${mem.toFixed(1)} MB`;
    drawChart();
  }

  if (window.ResizeObserver) new ResizeObserver(drawChart).observe(canvas);
  else window.addEventListener('resize', drawChart);
  if (window.matchMedia) window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', drawChart);
  drawChart();

  // ---------------------------------------------------------------- SignalR

  const connection = new signalR.HubConnectionBuilder()
    .withUrl('/runtime')
    .withAutomaticReconnect()
    .configureLogging(signalR.LogLevel.Warning)
    .build();
  window.krDashboard = { connection, points };

  const groups = new Set();

  function renderGroups() {
    const ul = $('groups');
    ul.textContent = '';
    if (groups.size === 0) ul.append(el('li', { class: 'empty', text: 'none' }));
    for (const g of [...groups].sort()) ul.append(el('li', { text: g }));
  }

  function setState(state, text) {
    $('conn').dataset.state = state;
    $('conn-text').textContent = text;
    $('conn-id').textContent = state === 'connected' && connection.connectionId ? connection.connectionId : '';
  }

  connection.on('ReceiveLog', (m) => addLog('log', m.level, m.message, null, m.timestamp));

  connection.on('ReceiveEvent', (e) => {
    const d = e.data || {};
    switch (e.eventName) {
      case 'SystemMetrics':
        addMetrics(d, e.timestamp);
        return; // the chart is its display
      case 'Progress':
        setBar('proc', d.Percent, d.Status, Number(d.Percent) >= 100);
        break;
      case 'OperationProgress':
        if (!currentOp || currentOp === d.TaskId) {
          currentOp = currentOp || d.TaskId;
          $('op-id').textContent = d.TaskId;
          $('btn-op-status').disabled = false;
          setBar('op', d.Progress, d.Message, false);
        }
        break;
      case 'OperationComplete':
        if (!currentOp || currentOp === d.TaskId) setBar('op', 100, d.Message, true);
        break;
      case 'Notification':
        $('last-notification').textContent = `${d.Title}: ${d.Message} (${clock(d.Timestamp)})`;
        break;
      case 'ServerHeartbeat':
        $('m-clients').textContent = d.ConnectedClients;
        $('m-uptime').textContent = String(d.Uptime).replace(/\.\d+$/, '');
        $('m-heartbeat').textContent = clock(d.ServerTime);
        break;
      default:
        break;
    }
    addLog('event', e.eventName, compact(d), null, e.timestamp);
  });

  connection.on('ReceiveMessage', (m) => {
    const text = m && typeof m === 'object' ? (m.Message || JSON.stringify(m)) : String(m);
    $('group-messages').prepend(el('li', null, el('time', { text: clock() }), text));
    addLog('group', 'group', text);
  });

  connection.on('ReceiveEcho', (msg) => {
    $('echo-reply').textContent = msg;
    addLog('client', 'echo', String(msg));
  });

  connection.on('GroupJoined', (g) => { groups.add(g); renderGroups(); addLog('client', 'joined', `joined group ${g}`); });
  connection.on('GroupLeft', (g) => { groups.delete(g); renderGroups(); addLog('client', 'left', `left group ${g}`); });
  connection.on('Welcome', (m) => addLog('client', 'hub', m));
  connection.on('serverShutdown', (m) => addLog('log', 'Warning', `server: ${m}`));

  connection.onreconnecting(() => setState('reconnecting', 'Reconnecting…'));
  connection.onreconnected(async () => {
    setState('connected', 'Connected');
    addLog('client', 'hub', 'reconnected');
    // Group membership belongs to a connection: join again what this page had joined.
    const had = [...groups];
    groups.clear();
    renderGroups();
    for (const g of had) await connection.invoke('JoinGroup', g).catch(() => {});
  });
  connection.onclose(() => {
    setState('disconnected', 'Disconnected');
    scheduleStart(5000);
  });

  let startTimer = null;
  function scheduleStart(ms) {
    if (startTimer) return;
    startTimer = setTimeout(() => { startTimer = null; start(); }, ms);
  }

  async function start() {
    setState('connecting', 'Connecting…');
    try {
      await connection.start();
      setState('connected', 'Connected');
      for (const g of [...groups]) {
        groups.delete(g);
        await connection.invoke('JoinGroup', g).catch(() => {});
      }
      renderGroups();
    } catch (err) {
      setState('disconnected', 'Disconnected: retrying…');
      scheduleStart(5000);
    }
  }

  async function invoke(method, ...args) {
    try {
      await connection.invoke(method, ...args);
    } catch (err) {
      addLog('client', 'error', `${method} failed: ${err.message || err}`);
    }
  }

  const groupName = () => $('group-name').value.trim();
  $('group-form').addEventListener('submit', (e) => { e.preventDefault(); if (groupName()) invoke('JoinGroup', groupName()); });
  $('btn-leave').addEventListener('click', () => { if (groupName()) invoke('LeaveGroup', groupName()); });
  $('btn-group-notify').addEventListener('click', () => {
    if (groupName()) call('POST', `/api/notify-group/${encodeURIComponent(groupName())}`);
  });
  $('echo-form').addEventListener('submit', (e) => { e.preventDefault(); invoke('Echo', $('echo-input').value); });

  start();
})();
