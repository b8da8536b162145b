// echo-server.mjs — the seed article's stack (Node + ws) as an echo peer for
// wsgate-bench: one process, one event loop, path /echo, every message sent
// back unchanged (text stays text, binary stays binary), no permessage-deflate.
//
// Usage: node echo-server.mjs PORT [HOST]     (HOST defaults to 127.0.0.1)
import { WebSocketServer } from 'ws';

const port = Number.parseInt(process.argv[2] ?? '', 10);
const host = process.argv[3] ?? '127.0.0.1';
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node echo-server.mjs PORT [HOST]');
  process.exit(2);
}

const wss = new WebSocketServer({
  host,
  port,
  path: '/echo',
  perMessageDeflate: false,
  clientTracking: false, // the seed tracks clients itself; here nothing needs the set
  maxPayload: 64 * 1024 * 1024,
});

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
  ws.on('error', () => {}); // a reset client must not crash the server
});

wss.on('listening', () => {
  console.error(`node ws echo server listening on ${host}:${port}/echo (pid ${process.pid})`);
});
wss.on('error', (err) => {
  console.error(`node ws echo server: ${err.message}`);
  process.exit(1);
});

// Exit at once: wss.close() would wait for every open connection to end.
const stop = () => process.exit(0);
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
