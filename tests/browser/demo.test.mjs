// Browser test of the demo page (tools/demo/index.html) against the real gateway:
//   node --test tests/browser/demo.test.mjs
// Needs playwright-core (npm ci in tests/browser) and Debian's chromium (apt-get install chromium);
// without either the tests are skipped. Gateway binary: $WSGATE_BIN (default
// build/release/wsgate of this checkout); browser: $WSGATE_CHROMIUM (default /usr/bin/chromium).
// The page is loaded from the gateway (`--demo`: GET / and GET /wsgate.mjs). A gateway without
// --demo (checked in its --help) gets the two files from a static server here instead, the page
// pointed at the gateway with ?gw=HOST:PORT.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { BIN, ROOT, SETPRIV, freePort } from '../js/helpers.mjs';

const CHROMIUM = process.env.WSGATE_CHROMIUM || '/usr/bin/chromium';
const GATEWAY_FLAGS = ['--threads', '2', '--drain-delay-ms', '0', '--drain-spread-ms', '0',
  '--reconnect-jitter-ms', '300', '--log-level', 'warn'];
const WAIT_MS = 15000; // one DOM wait; a hang fails the step instead of stalling the run

let chromium = null;
let skip = false;
try {
  ({ chromium } = await import('playwright-core'));
} catch {
  skip = 'playwright-core is missing: run npm ci in tests/browser';
}
if (!skip && !existsSync(CHROMIUM)) skip = `no browser at ${CHROMIUM}: apt-get install chromium`;

// ---- helpers ------------------------------------------------------------------------------


function get(port, urlPath) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false,
      headers: { Connection: 'close' }, timeout: 1000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'] ?? '', body }));
    });
    req.on('error', () => resolve({ status: 0 }));
    req.on('timeout', () => { req.destroy(); resolve({ status: 0 }); });
  });
}

const gateways = new Set();
let gatewayLog = '';

/** Starts a gateway on `port` and waits until it answers /healthz. */
async function startGateway(port, args) {
  const argv = [BIN, '--listen', `127.0.0.1:${port}`, ...args];
  // setpriv --pdeathsig: the gateway dies with this process even if it is killed by SIGKILL
  if (SETPRIV) argv.unshift(SETPRIV, '--pdeathsig', 'KILL', '--');
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr.on('data', (d) => { gatewayLog = (gatewayLog + d).slice(-4000); });
  proc.exited = new Promise((resolve) => proc.once('exit', (code, signal) => {
    gateways.delete(proc);
    resolve({ code, signal });
  }));
  gateways.add(proc);
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) break;
    if ((await get(port, '/healthz')).status === 200) return proc;
    await new Promise((r) => setTimeout(r, 50));
  }
  proc.kill('SIGKILL');
  throw new Error(`gateway did not start on ${port}: ${gatewayLog}`);
}

/** Serves the page and the client module as `--demo` does (for a gateway without --demo). */
function startStaticServer() {
  const files = {
    '/': ['tools/demo/index.html', 'text/html; charset=utf-8'],
    '/wsgate.mjs': ['tools/js/wsgate.mjs', 'text/javascript; charset=utf-8'],
  };
  const server = http.createServer((req, res) => {
    const f = files[new URL(req.url, 'http://x').pathname];
    if (!f) { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'Content-Type': f[1], 'Cache-Control': 'no-store' });
    res.end(readFileSync(path.join(ROOT, f[0])));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// DOM conditions, polled by Playwright in the page.
const stateIs = (page, state) => page.waitForFunction(
  (s) => document.getElementById('status')?.dataset.state === s, state, { timeout: WAIT_MS });
const presentAre = (page, users) => page.waitForFunction(
  (us) => {
    const shown = [...document.querySelectorAll('#present li')].map((li) => li.dataset.user);
    return us.every((u) => shown.includes(u));
  }, users, { timeout: WAIT_MS });
const messageShown = (page, from, text) => page.waitForFunction(
  ([f, t]) => [...document.querySelectorAll('#messages li.msg')].some((li) =>
    li.querySelector('.from')?.textContent === `${f}:` && li.querySelector('.text')?.textContent === t),
  [from, text], { timeout: WAIT_MS });
const sysLineShown = (page, text) => page.waitForFunction(
  (t) => [...document.querySelectorAll('#messages li.sys')].some((li) => li.textContent.includes(t)),
  text, { timeout: WAIT_MS });

async function say(page, text) {
  await page.fill('#text', text); // waits until the box is enabled (connected)
  await page.click('#send');
  await page.waitForFunction(() => document.getElementById('text').value === '', null, { timeout: WAIT_MS });
}

// ---- fixture ------------------------------------------------------------------------------

let port = 0;
let gatewayArgs = GATEWAY_FLAGS;
let pageUrl = '';
let staticServer = null;
let browser = null;
const pages = {}; // name -> page
const pageErrors = [];
let passed = false; // set by the last test: diagnostics are printed only after a failure

before(async () => {
  if (skip) return;
  const demo = execFileSync(BIN, ['--help'], { encoding: 'utf8' }).includes('--demo');
  port = await freePort();
  if (demo) {
    gatewayArgs = ['--demo', ...GATEWAY_FLAGS];
    pageUrl = `http://127.0.0.1:${port}/`;
  } else {
    staticServer = await startStaticServer();
    pageUrl = `http://127.0.0.1:${staticServer.address().port}/?gw=127.0.0.1:${port}`;
    console.log(`${BIN} has no --demo: the page comes from a static server, with ?gw=`);
  }
  await startGateway(port, gatewayArgs);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  for (const name of ['alice', 'bob']) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`));
    pages[name] = page;
  }
});

after(async () => {
  if (!passed && !skip) { // what the pages showed, and the gateway's last words
    for (const [name, page] of Object.entries(pages)) {
      const status = await page.textContent('#status', { timeout: 1000 }).catch(() => '?');
      const lines = await page.locator('#messages li').allTextContents().catch(() => []);
      console.log(`${name}: status "${status}"; messages: ${JSON.stringify(lines.slice(-8))}`);
    }
    console.log(`page errors: ${JSON.stringify(pageErrors)}; gateway stderr: ${gatewayLog}`);
  }
  if (browser) { // a wedged browser must not stall the run: it is killed with this process anyway
    await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 5000).unref())]).catch(() => {});
  }
  for (const g of gateways) g.kill('SIGKILL');
  await Promise.all([...gateways].map((g) => g.exited));
  if (staticServer) { staticServer.close(); staticServer.closeAllConnections(); }
});

// ---- tests --------------------------------------------------------------------------------

test('the gateway serves the page and the client module', { skip }, async (t) => {
  if (!gatewayArgs.includes('--demo')) { t.skip('gateway without --demo'); return; }
  const index = await get(port, '/');
  assert.equal(index.status, 200);
  assert.match(index.type, /^text\/html/);
  assert.equal(index.body, readFileSync(path.join(ROOT, 'tools/demo/index.html'), 'utf8'));
  const mod = await get(port, '/wsgate.mjs');
  assert.equal(mod.status, 200);
  assert.match(mod.type, /^text\/javascript/);
  assert.equal(mod.body, readFileSync(path.join(ROOT, 'tools/js/wsgate.mjs'), 'utf8'));
});

test('alice and bob join the lobby, see each other and chat', { skip, timeout: 30000 }, async () => {
  const { alice, bob } = pages;
  for (const [name, page] of Object.entries(pages)) {
    await page.goto(pageUrl);
    assert.match(await page.inputValue('#name'), /^guest-\d{4}$/); // a random default name
    assert.equal(await page.inputValue('#room'), 'lobby');
    await page.fill('#name', name);
    await page.click('#join');
    await stateIs(page, 'connected');
    await sysLineShown(page, 'You joined lobby.');
  }
  await presentAre(alice, ['alice', 'bob']); // alice's list: refreshed every 3 s
  await presentAre(bob, ['alice', 'bob']);

  await say(alice, 'hello from alice');
  await messageShown(bob, 'alice', 'hello from alice');
  await messageShown(alice, 'alice', 'hello from alice'); // one's own messages are listed too
  await say(bob, 'hi alice, bob here');
  await messageShown(alice, 'bob', 'hi alice, bob here');

  // Everything received is rendered as text.
  const markup = '<img src=x onerror="document.title=\'pwned\'"><b>bold</b> & co';
  await say(bob, markup);
  await messageShown(alice, 'bob', markup);
  assert.equal(await alice.locator('#messages img, #messages b').count(), 0);
  assert.notEqual(await alice.title(), 'pwned');
});

test('after a gateway restart both pages reconnect by themselves and chat on', { skip, timeout: 40000 }, async () => {
  const { alice, bob } = pages;
  const [old] = gateways;
  old.kill('SIGTERM');
  const { code, signal } = await old.exited;
  assert.equal(code, 0, `gateway exit: code ${code} signal ${signal}`);
  for (const page of [alice, bob]) {
    await sysLineShown(page, 'The server is shutting down.');
    await stateIs(page, 'reconnecting'); // retrying (with backoff) while there is no gateway
    assert.match(await page.textContent('#status'), /Reconnecting \(attempt \d+, in \d+ ms\)/);
  }

  await startGateway(port, gatewayArgs);
  for (const page of [alice, bob]) {
    await stateIs(page, 'connected');
    await sysLineShown(page, 'Reconnected; re-joined the room.');
  }
  await presentAre(alice, ['alice', 'bob']);
  await presentAre(bob, ['alice', 'bob']);
  await say(bob, 'still here after the restart');
  await messageShown(alice, 'bob', 'still here after the restart');
  await say(alice, 'me too');
  await messageShown(bob, 'alice', 'me too');
  assert.deepEqual(pageErrors, []);
  passed = true;
});
