// Tests of tools/js/wsgate.mjs against the real gateway: node --test tests/js/
// Gateway binary: $WSGATE_BIN (default /work/main/build/release/wsgate, i.e. build/release/wsgate
// next to this checkout). WebSocket for Node 20: the 'ws' package, resolved from bench/peers
// (or bench/node) of this checkout, or $WSGATE_WS_MODULE (a path to ws's package directory).

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';

import { WsgateClient, WsgateError, backoffDelay, shouldReconnect } from '../../tools/js/wsgate.mjs';
import { BIN, ROOT, SETPRIV, freePort, healthz, sleep, waitHealthy } from './helpers.mjs';


function loadWs() {
  const candidates = [
    process.env.WSGATE_WS_MODULE,
    path.join(ROOT, 'bench/peers/node_modules/ws'),
    path.join(ROOT, 'bench/node/node_modules/ws'),
  ].filter(Boolean);
  const require = createRequire(import.meta.url);
  for (const dir of candidates) {
    if (existsSync(path.join(dir, 'package.json'))) return require(dir);
  }
  throw new Error(`the 'ws' package is missing: run npm ci in bench/peers (looked in ${candidates.join(', ')})`);
}
const ws = loadWs();
const WebSocket = ws.WebSocket ?? ws;
const WebSocketServer = ws.WebSocketServer ?? ws.Server;

// ---- helpers ------------------------------------------------------------------------------

const T = { timeout: 20000 }; // a hang fails the test instead of stalling the run




const gateways = new Set();

/** Starts a gateway on `port` and waits until it answers /healthz. */
async function startGateway(port, args = []) {
  const argv = [BIN, '--listen', `127.0.0.1:${port}`, '--threads', '2', '--log-level', 'warn', ...args];
  // setpriv --pdeathsig: the gateway dies with this process even if it is killed by SIGKILL
  if (SETPRIV) argv.unshift(SETPRIV, '--pdeathsig', 'KILL', '--');
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  proc.exited = new Promise((resolve) => proc.once('exit', (code, signal) => { gateways.delete(proc); resolve({ code, signal }); }));
  gateways.add(proc);
  return waitHealthy(proc, port, () => stderr);
}

function killAllGateways() {
  for (const p of gateways) {
    try { p.kill('SIGCONT'); p.kill('SIGKILL'); } catch { /* gone */ }
  }
}
process.on('exit', killAllGateways);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => { killAllGateways(); process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1)); });
}

const clients = new Set();

/** A client of the test gateway (closed after each test). */
function client(port, options = {}) {
  const c = new WsgateClient(`ws://127.0.0.1:${port}/ws`, { WebSocket, pingIntervalMs: 0, ...options });
  clients.add(c);
  c.events = [];
  for (const t of ['open', 'message', 'direct', 'broadcast', 'close', 'reconnecting', 'shutdown', 'error']) {
    c.on(t, (ev) => c.events.push({ t, ev, at: Date.now() }));
  }
  return c;
}

/** Resolves with the next `type` event matching `pred` (also one already recorded after `since`). */
function waitFor(c, type, pred = () => true, timeoutMs = 5000, since = 0) {
  const seen = c.events.find((e) => e.t === type && e.at >= since && pred(e.ev) && !e.consumed);
  if (seen) { seen.consumed = true; return Promise.resolve(seen.ev); }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`timed out waiting for '${type}'`)); }, timeoutMs);
    const off = c.on(type, (ev) => {
      if (!pred(ev)) return;
      const rec = c.events.findLast((e) => e.ev === ev);
      if (rec) rec.consumed = true;
      clearTimeout(timer); off(); resolve(ev);
    });
  });
}

function token(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

afterEach(() => {
  for (const c of clients) c.close();
  clients.clear();
});

after(async () => {
  const waits = [...gateways].map((p) => p.exited);
  killAllGateways();
  await Promise.all(waits);
});

// ---- pure functions -----------------------------------------------------------------------

describe('policy', () => {
  test('backoff delay is full jitter in [0, min(cap, base*2^n)]', T, () => {
    assert.equal(backoffDelay(0, 100, 1000, () => 0), 0);
    assert.equal(backoffDelay(0, 100, 1000, () => 0.999999), 99);
    assert.equal(backoffDelay(3, 100, 1000, () => 0.5), 400);
    assert.equal(backoffDelay(4, 100, 1000, () => 0.5), 500); // capped at 1000
    assert.equal(backoffDelay(5000, 100, 1000, () => 0.5), 500);
    for (let n = 0; n < 20; n++) {
      const ceiling = Math.min(1000, 100 * 2 ** n);
      let max = 0;
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(n, 100, 1000);
        assert.ok(Number.isInteger(d) && d >= 0 && d <= ceiling, `n=${n} d=${d}`);
        max = Math.max(max, d);
      }
      assert.ok(max > ceiling / 4, 'delays spread over the range'); // full jitter, not fixed
    }
  });

  test('close codes: reconnect or not', T, () => {
    for (const code of [1001, 1005, 1006, 1009, 1011, 1012, 1013, 1014]) assert.equal(shouldReconnect(code), true, `${code}`);
    for (const code of [1000, 1002, 1003, 1007, 1008, 1010, 4000, 4001, 4401, 4999]) assert.equal(shouldReconnect(code), false, `${code}`);
  });

  test('a WebSocket constructor is required', T, () => {
    const saved = globalThis.WebSocket;
    try {
      globalThis.WebSocket = undefined;
      assert.throws(() => new WsgateClient('ws://127.0.0.1:1/ws'), TypeError);
    } finally { globalThis.WebSocket = saved; }
  });
});

// ---- one gateway for the protocol tests ------------------------------------------------------

describe('protocol', () => {
  let port;
  before(async () => { port = await freePort(); await startGateway(port); });

  test('connect, join, publish reaches the other member byte for byte', T, async () => {
    const alice = client(port, { user: 'alice' });
    const bob = client(port, { user: 'bob' });
    await Promise.all([alice.connect(), bob.connect()]);
    assert.equal(alice.state, 'open');
    assert.deepEqual((await waitFor(alice, 'open')), { reconnected: false, rooms: [] });
    await alice.join('lobby');
    await bob.join('lobby');
    assert.deepEqual(alice.rooms, ['lobby']);
    const data = { text: 'héllo ✓ 😀 "q" \\ \n', n: [1, 2.5, -3e-7, true, null], nested: { a: {} } };
    const got = waitFor(bob, 'message');
    const own = waitFor(alice, 'message');
    assert.equal(await alice.publish('lobby', data), undefined);
    const m = await got;
    assert.equal(m.room, 'lobby');
    assert.equal(m.from, 'alice');
    assert.deepEqual(m.data, data);
    assert.ok(m.raw.endsWith(`"data":${JSON.stringify(data)}}`), m.raw); // the bytes as sent
    assert.deepEqual((await own).data, data); // the publisher is a member too
  });

  test('send reaches every connection of the user as a direct push', T, async () => {
    const alice = client(port, { user: 'alice' });
    const bob1 = client(port, { user: 'bob' });
    const bob2 = client(port, { user: 'bob' });
    await Promise.all([alice.connect(), bob1.connect(), bob2.connect()]);
    const d1 = waitFor(bob1, 'direct');
    const d2 = waitFor(bob2, 'direct');
    await alice.send('bob', 'psst');
    for (const d of [await d1, await d2]) {
      assert.equal(d.from, 'alice');
      assert.equal(d.data, 'psst');
    }
    assert.equal(alice.events.filter((e) => e.t === 'direct').length, 0);
  });

  test('presence and online answer', T, async () => {
    const alice = client(port, { user: 'alice' });
    const carol = client(port, { user: 'carol' });
    await Promise.all([alice.connect(), carol.connect()]);
    await carol.join('room-p');
    await alice.join('room-p');
    assert.deepEqual(await alice.presence('room-p'), ['alice', 'carol']);
    assert.deepEqual(await alice.presence('empty-room'), []);
    assert.deepEqual(await alice.online(['zed', 'carol', 'alice']), ['carol', 'alice']);
    await carol.leave('room-p');
    assert.deepEqual(carol.rooms, []);
    assert.deepEqual(await alice.presence('room-p'), ['alice']);
    const rtt = await alice.ping();
    assert.ok(rtt >= 0 && rtt < 5000);
  });

  test('errors reject with the server code', T, async () => {
    const alice = client(port, { user: 'alice' });
    await alice.connect();
    await assert.rejects(alice.publish('not-joined', 1), (e) => e instanceof WsgateError && e.code === 'not_member' && e.op === 'publish' && e.message.length > 0);
    await assert.rejects(alice.leave('not-joined'), { code: 'not_member' });
    await assert.rejects(alice.join(''), { code: 'bad_request' });
    await assert.rejects(alice.broadcast('x'), { code: 'forbidden' }); // anonymous mode: never
    assert.deepEqual(alice.rooms, []);
    await alice.join('ok'); // still usable
    assert.deepEqual(alice.rooms, ['ok']);
  });

  test('requests without a connection reject; close() stops for good', T, async () => {
    const alice = client(port, { user: 'alice', reconnect: { baseMs: 10, capMs: 20 } });
    await assert.rejects(alice.join('x'), { code: 'not_connected' });
    await alice.connect();
    await alice.join('x');
    const pending = alice.presence('x');
    alice.close();
    await assert.rejects(pending, { code: 'closed' });
    assert.equal(alice.state, 'closed');
    const closes = alice.events.filter((e) => e.t === 'close');
    assert.equal(closes.length, 1);
    assert.equal(closes[0].ev.willReconnect, false);
    await sleep(300);
    assert.equal(alice.events.filter((e) => e.t === 'reconnecting' || e.t === 'open').length, 1); // the first open only
    assert.equal(alice.state, 'closed');
    const bob = client(port, { user: 'bob' });
    await bob.connect();
    assert.deepEqual(await bob.online(['alice']), []); // really gone
    await assert.rejects(alice.join('x'), { code: 'not_connected' });
  });

  test('connection refused: backoff within bounds, gives up after maxAttempts', T, async () => {
    const dead = await freePort(); // nothing listens there
    const c = client(dead, { user: 'x', reconnect: { baseMs: 20, capMs: 100, maxAttempts: 6 } });
    await assert.rejects(c.connect(), { code: 'closed' });
    const rec = c.events.filter((e) => e.t === 'reconnecting').map((e) => e.ev);
    assert.deepEqual(rec.map((r) => r.attempt), [1, 2, 3, 4, 5, 6]);
    for (const r of rec) {
      assert.equal(r.afterShutdown, false);
      assert.ok(r.delay >= 0 && r.delay <= Math.min(100, 20 * 2 ** (r.attempt - 1)), JSON.stringify(r));
    }
    const closes = c.events.filter((e) => e.t === 'close').map((e) => e.ev);
    assert.equal(closes.length, 7);
    assert.ok(closes.slice(0, 6).every((e) => e.willReconnect && e.code === 1006));
    assert.equal(closes[6].willReconnect, false);
    assert.equal(c.state, 'closed');
  });
});

// ---- close-code policy against a scripted server ---------------------------------------------

describe('close codes', () => {
  test('1011 reconnects, 4001 and 1000 do not', T, async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((r) => wss.once('listening', r));
    const codes = [1011, 4001, 1013, 1000];
    const urls = [];
    wss.on('connection', (sock, req) => { urls.push(req.url); setTimeout(() => sock.close(codes.shift(), 'bye'), 20); });
    try {
      const c = client(wss.address().port, { user: 'u 1', reconnect: { baseMs: 10, capMs: 20 } });
      await c.connect();
      const c1 = await waitFor(c, 'close');
      assert.deepEqual([c1.code, c1.willReconnect], [1011, true]);
      await waitFor(c, 'open', (e) => e.reconnected);
      const c2 = await waitFor(c, 'close');
      assert.deepEqual([c2.code, c2.reason, c2.willReconnect], [4001, 'bye', false]);
      await sleep(100);
      assert.equal(c.state, 'closed');
      assert.equal(urls.length, 2);
      assert.equal(new URL(urls[0], 'ws://x').searchParams.get('user'), 'u 1');
      // connect() again after a final close: 1013 reconnects, 1000 stops
      await c.connect();
      const c3 = await waitFor(c, 'close');
      assert.deepEqual([c3.code, c3.willReconnect], [1013, true]);
      const c4 = await waitFor(c, 'close', (e) => e.code === 1000);
      assert.equal(c4.willReconnect, false);
      assert.equal(urls.length, 4);
    } finally {
      for (const s of wss.clients) s.terminate();
      await new Promise((r) => wss.close(r));
    }
  });
});

// ---- timeouts and dead connections -------------------------------------------------------

describe('timeouts', () => {
  let port, gw;
  before(async () => { port = await freePort(); gw = await startGateway(port); });
  after(() => { try { gw.kill('SIGCONT'); } catch { /* gone */ } });

  test('a request without a reply times out; a late reply is ignored', T, async () => {
    const c = client(port, { user: 'slow', requestTimeoutMs: 300 });
    await c.connect();
    gw.kill('SIGSTOP');
    try {
      const t0 = Date.now();
      await assert.rejects(c.presence('r'), (e) => e.code === 'timeout' && e.op === 'presence');
      assert.ok(Date.now() - t0 >= 250);
    } finally { gw.kill('SIGCONT'); }
    await c.join('r'); // the connection survived; the late presence reply is dropped
    assert.deepEqual(await c.presence('r'), ['slow']);
    assert.equal(c.events.filter((e) => e.t === 'close').length, 0);
  });

  test('app-level ping detects a dead connection, then reconnects and re-joins', T, async () => {
    const c = client(port, { user: 'pinger', pingIntervalMs: 150, pingTimeoutMs: 300,
      connectTimeoutMs: 400, reconnect: { baseMs: 50, capMs: 200 } });
    await c.connect();
    await c.join('hb');
    await sleep(700); // pings flow while the gateway runs (several ping/pong rounds)
    assert.equal(c.events.filter((e) => e.t === 'close').length, 0);
    gw.kill('SIGSTOP');
    let closed, rec;
    try {
      closed = await waitFor(c, 'close', () => true, 3000);
      rec = await waitFor(c, 'reconnecting', () => true, 3000);
      await sleep(600); // attempts against a stopped gateway time out
    } finally { gw.kill('SIGCONT'); }
    assert.deepEqual([closed.code, closed.reason, closed.willReconnect], [1006, 'ping timeout', true]);
    assert.ok(rec.delay <= 50);
    const open = await waitFor(c, 'open', (e) => e.reconnected, 8000);
    assert.deepEqual(open.rooms, ['hb']);
    assert.deepEqual(await c.presence('hb'), ['pinger']);
  });
});

// ---- a gateway restart in the middle of a session -----------------------------------------

describe('restart', () => {
  test('server_shutdown, reconnect with backoff, rooms re-joined, publish flows again', T, async () => {
    const port = await freePort();
    const drain = ['--drain-delay-ms', '0', '--drain-spread-ms', '0', '--reconnect-jitter-ms', '300', '--close-timeout-ms', '500'];
    const gw1 = await startGateway(port, drain);
    const opts = { reconnect: { baseMs: 100, capMs: 400 } };
    const alice = client(port, { user: 'alice', ...opts });
    const bob = client(port, { user: 'bob', ...opts });
    await Promise.all([alice.connect(), bob.connect()]);
    await alice.join('r1');
    await alice.join('r2');
    await bob.join('r1');
    const joinResolved = [];
    const p = bob.join('r3').then(() => joinResolved.push('r3'));
    await p;

    gw1.kill('SIGTERM');
    for (const c of [alice, bob]) {
      const sd = await waitFor(c, 'shutdown');
      assert.ok(sd.reconnectInMs >= 0 && sd.reconnectInMs <= 300, JSON.stringify(sd));
      const cl = await waitFor(c, 'close');
      assert.deepEqual([cl.code, cl.willReconnect], [1001, true]);
      const rec = await waitFor(c, 'reconnecting');
      assert.deepEqual([rec.attempt, rec.delay, rec.afterShutdown], [1, sd.reconnectInMs, true]);
    }
    assert.equal((await gw1.exited).code, 0);
    await sleep(700); // prompt attempts find nothing: backoff
    const gw2 = await startGateway(port, drain);
    const [oa, ob] = await Promise.all([waitFor(alice, 'open', (e) => e.reconnected, 8000), waitFor(bob, 'open', (e) => e.reconnected, 8000)]);
    assert.deepEqual(oa.rooms.sort(), ['r1', 'r2']);
    assert.deepEqual(ob.rooms.sort(), ['r1', 'r3']);
    for (const c of [alice, bob]) {
      const recs = c.events.filter((e) => e.t === 'reconnecting').map((e) => e.ev);
      assert.ok(recs.length >= 2, 'at least one backoff attempt');
      for (const r of recs.slice(1)) {
        assert.equal(r.afterShutdown, false);
        assert.ok(r.delay >= 0 && r.delay <= Math.min(400, 100 * 2 ** (r.attempt - 1)), JSON.stringify(r));
      }
      assert.equal(c.events.filter((e) => e.t === 'error' && e.ev.room).length, 0);
    }
    assert.deepEqual(await alice.presence('r1'), ['alice', 'bob']);
    const got = waitFor(alice, 'message', (m) => m.room === 'r1');
    await bob.publish('r1', { after: 'restart' });
    assert.deepEqual((await got).data, { after: 'restart' });
    assert.deepEqual(joinResolved, ['r3']); // nothing resolved twice
    gw2.kill('SIGTERM');
    for (const c of [alice, bob]) c.close();
    await gw2.exited;
  });
});

// ---- authentication -----------------------------------------------------------------------

describe('tokens', () => {
  let port;
  const secret = 'test-secret';
  before(async () => { port = await freePort(); await startGateway(port, ['--jwt-secret', secret]); });

  test('token auth, admin broadcast, forbidden without admin, 401 gives up', T, async () => {
    const exp = Math.floor(Date.now() / 1000) + 600;
    let calls = 0;
    const boss = client(port, { token: async () => { calls++; return token(secret, { sub: 'boss', exp, admin: true }); } });
    const carol = client(port, { token: token(secret, { sub: 'carol', exp }) });
    await Promise.all([boss.connect(), carol.connect()]);
    assert.equal(calls, 1);
    assert.deepEqual(await boss.online(['carol', 'boss']), ['carol', 'boss']);
    const b = waitFor(carol, 'broadcast');
    await boss.broadcast([1, 'two']);
    assert.deepEqual((await b).data, [1, 'two']);
    await assert.rejects(carol.broadcast('x'), { code: 'forbidden' });
    const bad = client(port, { token: token('wrong', { sub: 'eve', exp }), reconnect: { baseMs: 10, capMs: 20, maxAttempts: 2 } });
    await assert.rejects(bad.connect(), { code: 'closed' });
    assert.equal(bad.events.filter((e) => e.t === 'reconnecting').length, 2);
  });
});

// ---- a rate-limit close (1008) is final ---------------------------------------------------

describe('policy close', () => {
  test('close 1008 (rate limit) does not reconnect', T, async () => {
    const port = await freePort();
    await startGateway(port, ['--rate-limit', '1', '--rate-burst', '1']);
    const c = client(port, { user: 'spammer', reconnect: { baseMs: 10, capMs: 20 } });
    await c.connect();
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => c.ping()));
    assert.ok(results.some((r) => r.status === 'rejected' && r.reason.code === 'limit'));
    const cl = await waitFor(c, 'close');
    assert.deepEqual([cl.code, cl.willReconnect], [1008, false]);
    await sleep(200);
    assert.equal(c.state, 'closed');
    assert.equal(c.events.filter((e) => e.t === 'reconnecting').length, 0);
  });
});
