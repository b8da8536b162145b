// Node `ws` with permessage-deflate as an independent peer of the gateway (test_deflate.py):
// echo at several sizes on /echo, then a compressed push between two /ws clients.
// Usage: node deflate_peer.mjs PORT PATH_TO_WS_PACKAGE ; prints one JSON line.
import { createRequire } from 'node:module';

const [port, wsPath] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const WebSocket = require(wsPath);
const opts = { perMessageDeflate: { threshold: 0 } };

function open(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, opts);
    ws.on('upgrade', (res) => { ws.extensionsHeader = res.headers['sec-websocket-extensions'] || null; });
    const queue = [];
    const waiters = [];
    ws.on('message', (data) => {
      const m = data.toString();
      if (waiters.length) waiters.shift()(m); else queue.push(m);
    });
    ws.next = () => new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error('timeout')), 5000);
      const done = (m) => { clearTimeout(t); res(m); };
      if (queue.length) done(queue.shift()); else waiters.push(done);
    });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

const echo = await open(`ws://127.0.0.1:${port}/echo`);
let sent = 0, echoed = 0;
for (const n of [1, 100, 1000, 10000, 100000]) {
  const msg = 'abc'.repeat(Math.ceil(n / 3)).slice(0, n);
  echo.send(msg);
  sent++;
  if ((await echo.next()) === msg) echoed++;
}
const extensions = echo.extensionsHeader;
echo.close();

const a = await open(`ws://127.0.0.1:${port}/ws?user=nodea`);
const b = await open(`ws://127.0.0.1:${port}/ws?user=nodeb`);
a.send(JSON.stringify({ op: 'join', room: 'n', id: 1 }));
await a.next();
b.send(JSON.stringify({ op: 'join', room: 'n', id: 1 }));
await b.next();
const data = { text: 'compressed push '.repeat(200) };
b.send(JSON.stringify({ op: 'publish', room: 'n', data, id: 2 }));
const push = JSON.parse(await a.next());
const pushOk = push.type === 'message' && JSON.stringify(push.data) === JSON.stringify(data);
a.close();
b.close();
console.log(JSON.stringify({ extensions, sent, echoed, push_ok: pushOk }));
