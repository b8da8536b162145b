// Tests of tools/wsgate-cli against the real gateway: node --test tests/js/cli.test.mjs
// Gateway binary: $WSGATE_BIN (default build/release/wsgate of this checkout). The CLI finds the
// 'ws' package itself ($WSGATE_WS_MODULE, bench/node, bench/peers, a global one).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { BIN, ROOT, SETPRIV, freePort, healthz, sleep, waitHealthy } from './helpers.mjs';

const CLI = path.join(ROOT, 'tools/wsgate-cli');
const DRAIN = ['--drain-delay-ms', '0', '--drain-spread-ms', '0', '--reconnect-jitter-ms', '300'];
const T = { timeout: 30000 }; // a hang fails the test instead of stalling the run




// Every process this file starts; killed in after() and on exit. setpriv --pdeathsig: they die
// with this process even if it is killed by SIGKILL.
const procs = new Set();
function track(argv, options) {
  if (SETPRIV) argv = [SETPRIV, '--pdeathsig', 'KILL', '--', ...argv];
  const proc = spawn(argv[0], argv.slice(1), options);
  procs.add(proc);
  proc.exited = new Promise((resolve) => proc.once('exit', (code, signal) => { procs.delete(proc); resolve({ code, signal }); }));
  return proc;
}
function killAll() {
  for (const p of procs) { try { p.kill('SIGKILL'); } catch { /* gone */ } }
}
process.on('exit', killAll);

/** Starts a gateway on `port` and waits until it answers /healthz. */
async function startGateway(port, args = []) {
  const proc = track([BIN, '--listen', `127.0.0.1:${port}`, '--threads', '2', '--log-level', 'warn', ...args],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  return waitHealthy(proc, port, () => stderr);
}

/** Starts the CLI; collects its stdout lines and stderr. */
function cli(args, { stdin = 'ignore' } = {}) {
  const proc = track([process.execPath, CLI, ...args], { stdio: [stdin, 'pipe', 'pipe'] });
  proc.lines = [];
  proc.err = '';
  let partial = '';
  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8');
  proc.stdout.on('data', (d) => {
    const parts = (partial + d).split('\n');
    partial = parts.pop();
    proc.lines.push(...parts);
    proc.emit('progress');
  });
  proc.stderr.on('data', (d) => { proc.err += d; proc.emit('progress'); });
  proc.stdout.on('end', () => { if (partial) proc.lines.push(partial); partial = ''; proc.emit('progress'); });
  /** Resolves once `pred()` holds, re-checked on every output; rejects after `timeoutMs`. */
  proc.until = (pred, what, timeoutMs = 10000) => new Promise((resolve, reject) => {
    const check = () => {
      const v = pred();
      if (!v) return false;
      proc.off('progress', check); clearTimeout(timer); resolve(v);
      return true;
    };
    const timer = setTimeout(() => {
      proc.off('progress', check);
      reject(new Error(`timed out waiting for ${what}; stdout: ${proc.lines.join('\n')}\nstderr: ${proc.err}`));
    }, timeoutMs);
    proc.on('progress', check);
    check();
  });
  proc.line = (expected, timeoutMs) => proc.until(() => proc.lines.includes(expected), `line ${expected}`, timeoutMs);
  proc.stderrMatch = (re, timeoutMs) => proc.until(() => re.exec(proc.err), `stderr ${re}`, timeoutMs);
  return proc;
}

/** Runs a one-shot CLI command to completion. */
async function run(args, timeoutMs = 15000) {
  const p = cli(args);
  const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
  const [{ code, signal }] = await Promise.all([p.exited, new Promise((r) => p.stdout.once('close', r))]);
  clearTimeout(timer);
  return { code, signal, stdout: p.lines, stderr: p.err };
}

const push = (room, from, rawData) => `{"type":"message","room":"${room}","from":"${from}","data":${rawData}}`;

after(async () => {
  const waits = [...procs].map((p) => p.exited);
  killAll();
  await Promise.all(waits);
});

// ---- without a gateway ------------------------------------------------------------------------

describe('usage and connection failures', () => {
  test('--help, usage errors (exit 2), unreachable gateway (exit 3)', T, async () => {
    const port = await freePort(); // nothing listens there
    const url = `ws://127.0.0.1:${port}/ws`;
    const t0 = Date.now();
    const [help, none, unknownCmd, missingData, badOpt, badUrl, joinOpt, both, unreachable, unreachable2] = await Promise.all([
      run(['--help']),
      run([]),
      run([url, 'frobnicate']),
      run([url, 'publish', 'r1']),
      run([url, '--frob', 'presence', 'r1']),
      run(['ftp://127.0.0.1/ws', 'presence', 'r1']),
      run([url, '--join', 'a', 'publish', 'r1', 'x']),
      run([url, '--token', 't', '--user', 'u', 'presence', 'r1']),
      run([url, '--user', 'bob', 'publish', 'r1', '{"a":1}']),
      run([`ws://127.0.0.1:${port}`, 'online', 'bob']),
    ]);
    assert.equal(help.code, 0);
    assert.match(help.stdout.join('\n'), /^Usage: wsgate-cli URL/);
    assert.equal(help.stderr, '');
    for (const r of [none, unknownCmd, missingData, badOpt, badUrl, joinOpt, both]) {
      assert.equal(r.code, 2, JSON.stringify(r));
      assert.match(r.stderr, /Usage: wsgate-cli URL/);
      assert.deepEqual(r.stdout, []);
    }
    assert.match(unknownCmd.stderr, /unknown command 'frobnicate'/);
    assert.match(badOpt.stderr, /unknown option --frob/);
    for (const r of [unreachable, unreachable2]) {
      assert.equal(r.code, 3, JSON.stringify(r));
      assert.match(r.stderr, /cannot connect to ws:\/\/127\.0\.0\.1:\d+\/ws: .*ECONNREFUSED/);
      assert.match(r.stderr, /reconnecting in \d+ ms/);
      assert.deepEqual(r.stdout, []);
    }
    assert.ok(Date.now() - t0 < 15000, `one-shot commands give up quickly (${Date.now() - t0} ms)`);
  });
});

// ---- against a gateway ------------------------------------------------------------------------

describe('commands', () => {
  let url;
  before(async () => {
    const port = await freePort();
    await startGateway(port, DRAIN);
    url = `ws://127.0.0.1:${port}/ws`;
  });

  test('join prints what publish sends, stdin lines are published, listen, send, presence, online', T, async () => {
    const join = cli([url, '--user', 'alice', 'join', 'r1', 'r2'], { stdin: 'pipe' });
    const listen = cli([url, '--user', 'carol', 'listen', '--join', 'r1']);
    await Promise.all([join.stderrMatch(/joined r1, r2\n/), listen.stderrMatch(/joined r1\n/)]);

    // DATA: JSON text is forwarded byte for byte (spacing, 2.50, a number beyond 2^53), anything
    // else as a string; a line break in the data becomes a space so a push stays on one line
    const cases = [
      ['r1', '{"a": [1, 2.50, "x"], "b": null}', '{"a": [1, 2.50, "x"], "b": null}'],
      ['r1', '12345678901234567890', '12345678901234567890'],
      ['r1', 'hello world', '"hello world"'],
      ['r1', '"quoted"', '"quoted"'],
      ['r1', '{"multi":\n"line"}', '{"multi": "line"}'],
      ['r2', '[true,false]', '[true,false]'],
    ];
    const results = await Promise.all(cases.map(([room, data]) => run([url, '--user', 'bob', 'publish', room, data])));
    for (const r of results) assert.deepEqual([r.code, r.stdout], [0, []], JSON.stringify(r));
    for (const [room, , raw] of cases) await join.line(push(room, 'bob', raw));
    for (const [room, , raw] of cases.filter(([room]) => room === 'r1')) await listen.line(push(room, 'bob', raw));

    // stdin lines → the first room (empty lines skipped)
    join.stdin.write('{"n": 1}\nplain text\n\n');
    for (const raw of ['{"n": 1}', '"plain text"']) {
      await listen.line(push('r1', 'alice', raw));
      await join.line(push('r1', 'alice', raw)); // alice is a member of r1 too
    }

    // send → a direct push; presence and online answers
    const sent = await run([url, '--user', 'bob', '--quiet', 'send', 'carol', '{"dm":true}']);
    assert.deepEqual([sent.code, sent.stdout, sent.stderr], [0, [], '']);
    await listen.line('{"type":"direct","from":"bob","data":{"dm":true}}');
    const [pres, onl] = await Promise.all([run([url, '-q', 'presence', 'r1']), run([url, '-q', 'online', 'alice', 'nobody', 'carol'])]);
    assert.deepEqual([pres.code, pres.stdout], [0, ['{"type":"presence","room":"r1","users":["alice","carol"]}']]);
    assert.deepEqual([onl.code, onl.stdout], [0, ['{"type":"online","users":["alice","carol"]}']]);

    // stdin EOF: exit 0 once the pending publishes are acked
    join.stdin.end('last 1\nlast 2\n');
    assert.deepEqual(await join.exited, { code: 0, signal: null });
    await listen.line(push('r1', 'alice', '"last 2"'));
    assert.ok(listen.lines.includes(push('r1', 'alice', '"last 1"')));
    assert.match(join.err, /stdin closed/);

    for (const p of [join, listen]) {
      for (const line of p.lines) assert.equal(typeof JSON.parse(line), 'object', line); // one JSON object per line
    }
    assert.deepEqual(listen.lines.filter((l) => JSON.parse(l).room === 'r2'), []);
    listen.kill('SIGINT');
    assert.deepEqual(await listen.exited, { code: 0, signal: null });
  });

  test('refusals exit 1 naming the error code', T, async () => {
    const [notMember, joinedFirst] = await Promise.all([
      run([url, '--user', 'bob', '--no-join', 'publish', 'r9', 'x']),
      run([url, '--user', 'bob', '-q', 'publish', 'r9', 'x']),
    ]);
    assert.equal(notMember.code, 1, JSON.stringify(notMember));
    assert.match(notMember.stderr, /publish refused: not_member/);
    assert.deepEqual([joinedFirst.code, joinedFirst.stderr], [0, '']);
    const tooMany = await run([url, '-q', 'online', ...Array.from({ length: 1001 }, (_, i) => `u${i}`)]);
    assert.equal(tooMany.code, 1, JSON.stringify(tooMany));
    assert.match(tooMany.stderr, /online refused: bad_request/);
  });
});

// ---- a gateway restart while join runs ----------------------------------------------------------

describe('restart', () => {
  test('join reconnects after a gateway restart, re-joins and keeps printing', T, async () => {
    const port = await freePort();
    const url = `ws://127.0.0.1:${port}/ws`;
    const gw1 = await startGateway(port, DRAIN);
    const join = cli([url, '--user', 'alice', 'join', 'lobby'], { stdin: 'pipe' });
    await join.stderrMatch(/joined lobby\n/);
    assert.equal((await run([url, '--user', 'bob', 'publish', 'lobby', '{"before":1}'])).code, 0);
    await join.line(push('lobby', 'bob', '{"before":1}'));

    gw1.kill('SIGTERM');
    await join.stderrMatch(/server_shutdown/);
    assert.equal((await gw1.exited).code, 0);
    await startGateway(port, DRAIN);
    await join.stderrMatch(/reconnected to .*, rooms re-joined: lobby\n/, 20000);
    assert.match(join.err, /reconnecting in \d+ ms after server_shutdown \(attempt 1\)/);
    assert.equal(join.exitCode, null);

    const r = await run([url, '--user', 'bob', 'publish', 'lobby', '{"after":2}']);
    assert.equal(r.code, 0, JSON.stringify(r));
    await join.line(push('lobby', 'bob', '{"after":2}'));
    join.stdin.write('from stdin\n');
    await join.line(push('lobby', 'alice', '"from stdin"'));
    join.kill('SIGTERM');
    assert.deepEqual(await join.exited, { code: 0, signal: null });
  });
});
