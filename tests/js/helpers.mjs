// Shared by the Node tests (tests/js, tests/browser): paths, free ports, health checks.
import { existsSync } from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = process.env.WSGATE_BIN || path.join(ROOT, 'build/release/wsgate');
// setpriv --pdeathsig: a started process dies with the test even if the test is killed by SIGKILL.
export const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function healthz(port) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/healthz', agent: false,
      headers: { Connection: 'close' }, timeout: 500 }, (res) => { res.resume(); resolve(res.statusCode === 200); });
    req.on('error', () => resolve(false));
    req.on('timeout', () => { req.destroy(); resolve(false); });
  });
}

/** Waits until the gateway `proc` answers /healthz on `port` (15 s); else kills it and throws
 * with `stderr()` (its captured stderr) in the message. */
export async function waitHealthy(proc, port, stderr) {
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) break;
    if (await healthz(port)) return proc;
    await sleep(30);
  }
  proc.kill('SIGKILL');
  throw new Error(`gateway did not start on ${port}: ${stderr()}`);
}
