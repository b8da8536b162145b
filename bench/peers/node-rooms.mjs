// node-rooms.mjs — the seed article's room fan-out ("Room-Based Broadcasting")
// as a peer for wsgate-bench, minus Redis: one Node process, one event loop,
// `ws` on /ws, rooms kept in process (Map room -> Set of sockets).
//
// It speaks the subset of wsgate client protocol v1 (docs/protocol.md) that
// the fan-out benchmark uses, in JSON text frames:
//   {"op":"join","room":R,"id":N}             -> {"type":"ack","id":N}
//   {"op":"leave","room":R,"id":N}            -> {"type":"ack","id":N}
//   {"op":"publish","room":R,"data":D,"id":N} -> every member of R (the sender
//        included) gets {"type":"message","room":R,"from":USER,"data":D}, then
//        the sender gets {"type":"ack","id":N}; the sender must have joined R
//   {"op":"ping","id":N}                      -> {"type":"pong","id":N}
// Anything else gets {"type":"error",...} and the connection stays open.
// USER is the `user` query parameter, or a generated id (wsgate's anonymous
// mode). Without an id, success is silent, as in wsgate.
//
// As in the seed, a publication is serialised once (JSON.stringify) and the
// same string is handed to ws.send for every member. No batching, no
// permessage-deflate (the load generator does not offer it anyway).
//
// With --redis URL it is the seed's fleet design ("Room-Based Broadcasting" with
// Redis pub/sub, node-redis v4 as in the seed): a publisher and a subscriber
// client per process; the first local member of a room SUBSCRIBEs room:{id}
// (SADD room:{id}:members as the seed does); `publish` PUBLISHes the push to
// room:{id} and acks once Redis answered; every local member — the sender's
// included — gets it from the subscription. So several processes behind one
// Redis are one fleet, for wsgate-bench fanout --publish-url.
//
// Usage: node node-rooms.mjs PORT [HOST] [--redis redis://HOST:PORT]   (HOST defaults to 127.0.0.1)
import { WebSocketServer, WebSocket } from 'ws';

const args = process.argv.slice(2);
let redisUrl = null;
const ri = args.indexOf('--redis');
if (ri >= 0) {
  redisUrl = args[ri + 1];
  args.splice(ri, 2);
}
const port = Number.parseInt(args[0] ?? '', 10);
const host = args[1] ?? '127.0.0.1';
if (!Number.isInteger(port) || port <= 0 || port > 65535 || (ri >= 0 && !redisUrl)) {
  console.error('usage: node node-rooms.mjs PORT [HOST] [--redis redis://HOST:PORT]');
  process.exit(2);
}

// Redis clients (seed design), only with --redis.
let publisher = null;
let subscriber = null;
let redisClient = null;
if (redisUrl) {
  const { createClient } = await import('redis');
  publisher = createClient({ url: redisUrl });
  subscriber = publisher.duplicate();
  redisClient = publisher.duplicate();
  for (const c of [publisher, subscriber, redisClient]) {
    c.on('error', (err) => console.error(`redis: ${err.message}`));
    await c.connect();
  }
}

const MAX_NAME = 128; // bytes, as wsgate (protocol/message.h)

/** @type {Map<string, Set<WebSocket>>} room name -> member sockets */
const rooms = new Map();
let nextAnon = 0;

/** @type {Map<string, Promise<void>>} room -> its last (un)subscribe, to keep them in order */
const subscriptionOps = new Map();

function toLocalMembers(room, message) {
  const members = rooms.get(room);
  if (members === undefined) {
    return;
  }
  for (const member of members) {
    if (member.readyState === WebSocket.OPEN) {
      member.send(message);
    }
  }
}

function join(ws, room) {
  let members = rooms.get(room);
  if (members === undefined) {
    members = new Set();
    rooms.set(room, members);
    if (subscriber) {
      // Subscribe to the room channel on the first local member (seed). Chained
      // after a pending unsubscribe of the same room, which would otherwise
      // remove the new listener when it completes.
      const prev = subscriptionOps.get(room) ?? Promise.resolve();
      subscriptionOps.set(room, prev.then(
        () => subscriber.subscribe(`room:${room}`, (message) => toLocalMembers(room, message))).catch(() => {}));
    }
  }
  if (redisClient) {
    redisClient.sAdd(`room:${room}:members`, ws.user).catch(() => {});
  }
  members.add(ws);
  ws.rooms.add(room);
}

function leave(ws, room) {
  const members = rooms.get(room);
  if (members !== undefined) {
    members.delete(ws);
    if (members.size === 0) {
      rooms.delete(room);
      if (subscriber) {
        const prev = subscriptionOps.get(room) ?? Promise.resolve();
        subscriptionOps.set(room, prev.then(() => subscriber.unsubscribe(`room:${room}`)).catch(() => {}));
      }
    }
  }
  ws.rooms.delete(room);
}

function reply(ws, msg) {
  ws.send(JSON.stringify(msg));
}

function fail(ws, id, code, message) {
  reply(ws, id === undefined ? { type: 'error', code, message } : { type: 'error', id, code, message });
}

function ack(ws, id) {
  if (id !== undefined) {
    reply(ws, { type: 'ack', id });
  }
}

function validRoom(room) {
  return typeof room === 'string' && room.length > 0 && Buffer.byteLength(room) <= MAX_NAME;
}

function onMessage(ws, raw, isBinary) {
  if (isBinary) {
    fail(ws, undefined, 'bad_request', 'binary encoding not supported by this peer');
    return;
  }
  let msg;
  try {
    msg = JSON.parse(raw);
  } catch {
    fail(ws, undefined, 'bad_request', 'bad json');
    return;
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
    fail(ws, undefined, 'bad_request', 'not an object');
    return;
  }
  const { id } = msg;
  if (id !== undefined && typeof id !== 'number' && typeof id !== 'string') {
    fail(ws, undefined, 'bad_request', 'bad id');
    return;
  }
  switch (msg.op) {
    case 'join':
      if (!validRoom(msg.room)) {
        fail(ws, id, 'bad_request', 'bad room');
        return;
      }
      join(ws, msg.room);
      ack(ws, id);
      return;
    case 'leave':
      if (!validRoom(msg.room)) {
        fail(ws, id, 'bad_request', 'bad room');
        return;
      }
      if (!ws.rooms.has(msg.room)) {
        fail(ws, id, 'not_member', 'not a member');
        return;
      }
      leave(ws, msg.room);
      ack(ws, id);
      return;
    case 'publish': {
      if (!validRoom(msg.room) || msg.data === undefined) {
        fail(ws, id, 'bad_request', 'bad room or missing data');
        return;
      }
      if (!ws.rooms.has(msg.room)) {
        fail(ws, id, 'not_member', 'not a member');
        return;
      }
      const message = JSON.stringify({ type: 'message', room: msg.room, from: ws.user, data: msg.data });
      if (publisher) {
        // Through Redis, local members included (seed): ack once Redis took it.
        publisher.publish(`room:${msg.room}`, message).then(
          () => ack(ws, id),
          () => fail(ws, id, 'unavailable', 'redis publish failed'));
        return;
      }
      toLocalMembers(msg.room, message);
      ack(ws, id);
      return;
    }
    case 'ping':
      reply(ws, id === undefined ? { type: 'pong' } : { type: 'pong', id });
      return;
    default:
      fail(ws, id, 'unknown_op', 'unknown op');
  }
}

const wss = new WebSocketServer({
  host,
  port,
  path: '/ws',
  perMessageDeflate: false,
  clientTracking: false, // rooms hold the sockets; nothing else needs the set
  maxPayload: 1024 * 1024,
});

wss.on('connection', (ws, req) => {
  const user = new URL(req.url, 'http://localhost').searchParams.get('user');
  ws.user = user !== null && user.length > 0 ? user : `anon-${process.pid}-${++nextAnon}`;
  ws.rooms = new Set();
  ws.on('message', (raw, isBinary) => onMessage(ws, raw, isBinary));
  ws.on('close', () => {
    for (const room of ws.rooms) {
      leave(ws, room);
    }
  });
  ws.on('error', () => {}); // a reset client must not crash the server
});

wss.on('listening', () => {
  console.error(`node ws rooms server listening on ${host}:${port}/ws (pid ${process.pid})`);
});
wss.on('error', (err) => {
  console.error(`node ws rooms server: ${err.message}`);
  process.exit(1);
});

// Exit at once: wss.close() would wait for every open connection to end.
const stop = () => process.exit(0);
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
