'use strict';
// The demo's dashboard (scripts/examples/public/, served by scripts/examples/signalr_demo.lua) in
// headless Chromium: the page connects to /runtime with the official browser bundle served from
// scripts/examples/dashboard/node_modules, the buttons call the routes, and the test sees the log
// entries (colour-coded by level), the notification, the group chips and group messages, the echo,
// both progress bars reach 100%, the CPU/memory chart gain points, and the connection state turn to
// reconnecting when the server stops.
//
// Chromium from lib/browser.js (KR_CHROMIUM, else /usr/bin/chromium, else
// /usr/bin/chromium-headless-shell); every test skips without a browser or playwright-core. A
// screenshot (dashboard.png) goes next to KESTRUN_BIN (the build directory), else into os.tmpdir(). With KR_DOCS_SCREENSHOT=1 it is also written to docs/images/dashboard.png (the
// README's picture); that is off by default so that a test run does not modify the repository.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { REPO, startServer } = require('../lib/server');
const { EXECUTABLE, browserSkip, launchBrowser, screenshotPath } = require('../lib/browser');

const DEMO = path.join(REPO, 'scripts', 'examples', 'signalr_demo.lua');
const BUNDLE = path.join(REPO, 'scripts', 'examples', 'dashboard', 'node_modules', '@microsoft', 'signalr',
  'dist', 'browser', 'signalr.min.js');
const DOCS_SHOT = path.join(REPO, 'docs', 'images', 'dashboard.png');

const SKIP = browserSkip({
  what: 'the dashboard test',
  files: [BUNDLE],
  missing: 'the dashboard\'s @microsoft/signalr bundle is missing (npm ci in scripts/examples/dashboard; scripts/deps.sh does it)',
});

let srv;
let browser;

before(async () => {
  if (SKIP) return;
  srv = await startServer({
    scripts: [DEMO],
    args: ['--no-watch'],
    env: { KR_DEMO_METRICS_MS: '700', KR_DEMO_HEARTBEAT_CRON: '*/2 * * * * *' },
  });
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (srv) await srv.stop();
});

test('dashboard: buttons, live log, groups, echo, progress bars, metrics chart, reconnect state', { skip: SKIP, timeout: 40000 }, async (t) => {
  t.diagnostic(`browser: ${EXECUTABLE} (Chromium ${browser.version()})`);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  t.after(() => context.close().catch(() => {}));
  const page = await context.newPage();
  const pageErrors = [];
  const consoleLines = [];
  const sockets = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('websocket', (ws) => sockets.push(ws.url()));
  const failed = [];
  page.on('response', (r) => { if (r.status() >= 400) failed.push(`${r.status()} ${r.url()}`); });

  const wait = async (what, fn, arg, timeout = 8000) => {
    try {
      return await page.waitForFunction(fn, arg, { timeout });
    } catch (e) {
      e.message += `\nwaiting for ${what}\n--- page console ---\n${consoleLines.join('\n')}\n` +
        `--- server log (tail) ---\n${srv.log().slice(-2000)}`;
      throw e;
    }
  };
  const text = (sel) => page.locator(sel).innerText();

  const nav = await page.goto(srv.url('/'));
  assert.equal(nav.status(), 200);
  assert.equal(await page.title(), 'kestrun · SignalR dashboard');
  await wait('the connected state', () => document.getElementById('conn').dataset.state === 'connected');
  assert.equal(await text('#conn-text'), 'Connected');
  assert.equal(sockets.length, 1, 'one WebSocket');
  assert.match(sockets[0], new RegExp(`^ws://127\\.0\\.0\\.1:${srv.port}/runtime\\?id=`));

  // The two long runs first, so that they go on while the other buttons are tried (the log lines
  // come last, so that they are at the top of the log in the screenshot).
  await page.click('#btn-process');
  await page.fill('#op-seconds', '2');
  await page.click('#btn-op-start');

  // Groups: join, a group message, leave.
  await page.fill('#group-name', 'Admins');
  await page.click('#btn-join');
  await wait('the Admins chip', () => [...document.querySelectorAll('#groups li')].some((li) => li.textContent === 'Admins'));
  await page.click('#btn-group-notify');
  await wait('the group message', () => /Group notification/.test(document.getElementById('group-messages').textContent));
  await page.click('#btn-leave');
  await wait('no chip', () => document.querySelector('#groups li.empty') !== null);
  await page.click('#btn-join'); // joined again, for the screenshot

  // Echo.
  await page.fill('#echo-input', 'hello from Chromium');
  await page.click('#btn-echo');
  await wait('the echo', () => document.getElementById('echo-reply').textContent === 'hello from Chromium');

  // The operation's bar reaches 100% (OperationComplete), then its status says Completed.
  await wait('the operation bar at 100%', () => {
    const bar = document.getElementById('op-bar');
    return bar.getAttribute('aria-valuenow') === '100' && bar.dataset.done === 'true';
  });
  assert.equal(await text('#op-percent'), '100%');
  assert.equal(await text('#op-status'), 'Operation completed successfully!');
  await page.click('#btn-op-status');
  await wait('the status JSON', () => /"State": "(Completed|Running)"/.test(document.getElementById('op-details').textContent));
  if (!/"State": "Completed"/.test(await text('#op-details'))) {
    await page.waitForTimeout(300);
    await page.click('#btn-op-status');
    await wait('State Completed', () => /"State": "Completed"/.test(document.getElementById('op-details').textContent));
  }

  // The process route's bar: 11 Progress events, the last one 100%.
  await wait('the process bar at 100%', () => document.getElementById('proc-bar').getAttribute('aria-valuenow') === '100', null, 9000);
  await wait('the process answer', () => document.getElementById('proc-status').textContent === 'answered: Complete');
  const progressLines = await page.locator('#log li[data-kind="event"][data-level="Progress"]').count();
  assert.equal(progressLines, 11, '11 Progress events in the log');

  // Log lines of three levels, colour-coded.
  for (const level of ['Information', 'Warning', 'Error']) {
    await page.click(`button[data-get="/api/log/${level}"]`);
  }
  await wait('three broadcast log lines', () => ['Information', 'Warning', 'Error'].every((l) =>
    [...document.querySelectorAll(`#log li[data-kind="log"][data-level="${l}"]`)]
      .some((li) => /Event occurred at \d\d:\d\d:\d\d/.test(li.textContent))));
  const colours = await page.evaluate(() => Object.fromEntries(['Information', 'Warning', 'Error'].map((l) => {
    const li = [...document.querySelectorAll(`#log li[data-kind="log"][data-level="${l}"]`)]
      .find((x) => /Event occurred/.test(x.textContent));
    return [l, getComputedStyle(li.querySelector('.badge')).color];
  })));
  assert.equal(new Set(Object.values(colours)).size, 3, `three colours: ${JSON.stringify(colours)}`);

  // Notification event.
  await page.click('#btn-notify');
  await wait('the notification', () => /System Update: New features available/.test(document.getElementById('last-notification').textContent));

  // The chart keeps gaining points from SystemMetrics, and something is drawn.
  await wait('three chart points', () => Number(document.getElementById('chart').dataset.points) >= 3);
  const before = Number(await page.getAttribute('#chart', 'data-points'));
  await wait('one more point', (n) => Number(document.getElementById('chart').dataset.points) > n, before, 3000);
  const chart = await page.evaluate(() => {
    const c = document.getElementById('chart');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let painted = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) painted++;
    return { painted, cpu: Number(c.dataset.cpu), memory: Number(c.dataset.memory), w: c.width, h: c.height };
  });
  assert.ok(chart.painted > 500, `the canvas has ${chart.painted} painted pixels`);
  assert.ok(chart.memory > 1, `memory ${chart.memory} MB`);
  assert.ok(chart.cpu >= 0);
  assert.match(await text('#m-mem'), /^\d+\.\d MB$/);

  // The heartbeat (cron every 2 s here) fills the header stats.
  await wait('a heartbeat', () => document.getElementById('m-heartbeat').textContent !== '–', null, 4000);
  assert.match(await text('#m-uptime'), /^(\d+\.)?\d\d:\d\d:\d\d$/);

  assert.deepEqual(pageErrors, [], 'no uncaught error in the page');
  assert.deepEqual(failed, [], 'no failed request');

  const shot = screenshotPath('dashboard.png');
  await page.screenshot({ path: shot, fullPage: true });
  t.diagnostic(`screenshot: ${shot}`);
  if (process.env.KR_DOCS_SCREENSHOT === '1') {
    fs.mkdirSync(path.dirname(DOCS_SHOT), { recursive: true });
    fs.copyFileSync(shot, DOCS_SHOT);
    t.diagnostic(`screenshot: ${DOCS_SHOT}`);
  }

  // Stopping the server: serverShutdown in the log, then the page tries to reconnect.
  await srv.stop();
  await wait('the reconnecting state', () => ['reconnecting', 'disconnected'].includes(document.getElementById('conn').dataset.state));
  await wait('the shutdown notice', () => /Server stopping/.test(document.getElementById('log').textContent), null, 3000);
});
