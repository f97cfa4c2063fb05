'use strict';
// Headless Chromium for the tests in browser/, driven by playwright-core.
//
// Chromium: KR_CHROMIUM, else /usr/bin/chromium (Debian `chromium`, which scripts/deps.sh
// installs), else /usr/bin/chromium-headless-shell. browserSkip() gives the reason to skip every
// test of a file (no playwright-core, no Chromium, or a file the page needs is missing) and prints
// it; launchBrowser() starts Chromium; screenshotPath() puts a screenshot next to KESTRUN_BIN (the
// build directory), else into os.tmpdir().
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const LAUNCH_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

function findChromium() {
  const candidates = process.env.KR_CHROMIUM
    ? [process.env.KR_CHROMIUM]
    : ['/usr/bin/chromium', '/usr/bin/chromium-headless-shell'];
  return candidates.find((p) => fs.existsSync(p));
}

let playwright;
try { playwright = require('playwright-core'); } catch { playwright = null; }
const EXECUTABLE = findChromium();

// The reason to skip the tests of one file, or false. `files` must all exist, else `missing` is
// the reason; `what` names the tests in the line printed when they are skipped.
function browserSkip({ what, files = [], missing }) {
  const skip = !playwright
    ? 'playwright-core is not installed in tests/e2e/node_modules (run scripts/deps.sh or npm ci in tests/e2e)'
    : !EXECUTABLE
      ? (process.env.KR_CHROMIUM
        ? `KR_CHROMIUM=${process.env.KR_CHROMIUM} does not exist`
        : 'no Chromium found (/usr/bin/chromium or /usr/bin/chromium-headless-shell; scripts/deps.sh installs Debian chromium)')
      : !files.every((f) => fs.existsSync(f))
        ? missing
        : false;
  if (skip) process.stdout.write(`# skipping ${what}: ${skip}\n`);
  return skip;
}

function launchBrowser() {
  return playwright.chromium.launch({ executablePath: EXECUTABLE, headless: true, args: LAUNCH_ARGS, timeout: 20000 });
}

function screenshotPath(name) {
  const bin = process.env.KESTRUN_BIN;
  const dir = bin && fs.existsSync(path.dirname(bin)) ? path.dirname(bin) : os.tmpdir();
  return path.join(dir, name);
}

module.exports = { EXECUTABLE, LAUNCH_ARGS, browserSkip, launchBrowser, screenshotPath };
