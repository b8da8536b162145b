#!/usr/bin/env node
// wsgate-cli: a command-line client for wsgate, built on the JavaScript client (js/wsgate.mjs), so
// it reconnects, re-joins and honours server_shutdown exactly like it. Run it as `tools/wsgate-cli`
// (a thin wrapper: Node runs an extensionless file as CommonJS) or `node tools/wsgate-cli.mjs`.
// `--help` prints the usage. Node >= 20 and the `ws` package (see loadWs below).

import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { WsgateClient, WsgateError } from './js/wsgate.mjs';

const USAGE = `Usage: wsgate-cli URL [--token T | --user NAME] [--quiet] COMMAND [ARG...]

Commands:
  join ROOM [ROOM...]    join the rooms and print every push until interrupted; each line read
                         from stdin is published to the first room (empty lines skipped); at
                         stdin EOF, exit once the pending publishes are acked
  listen [--join ROOM]   print every push (direct, broadcast, and the rooms given with --join,
                         repeatable) until interrupted
  publish ROOM DATA      join ROOM, publish DATA, exit once acked (--no-join: do not join first;
                         the gateway then refuses with not_member)
  send USER DATA         send DATA to every connection of USER, exit once acked
  presence ROOM          print {"type":"presence","room":ROOM,"users":[...]} and exit
  online USER...         print {"type":"online","users":[...]} (those online) and exit

DATA and stdin lines are sent as JSON when they parse as JSON (text kept byte for byte), else as
a string: 42 and {"a":1} are JSON, '"42"' and hello are strings. Put -- before a DATA that starts
with a dash.

Options:
  --token T    JWT (default: $WSGATE_TOKEN)
  --user NAME  user id in anonymous mode (a gateway without --jwt-secret)
  --quiet, -q  no status lines on stderr (errors are still printed)
  --help, -h   this text

URL is ws://HOST:PORT/ws (/ws is added to a URL without a path). Pushes go to stdout exactly as
received, one JSON object per line (pipe them to jq); status and errors go to stderr. join and
listen reconnect for ever (full-jitter backoff, or the delay of a server_shutdown) and re-join;
the other commands give up after 3 attempts. Interrupting join/listen exits 0.
Exit status: 0 ok, 1 refused (the gateway's error code on stderr) or failed, 2 usage error,
3 cannot connect.
`;

const EXIT_OK = 0;
const EXIT_REFUSED = 1;
const EXIT_USAGE = 2;
const EXIT_CONNECT = 3;

const SCRIPT_DIR = path.dirname(fileURLToPath(import.meta.url));

// ---- helpers --------------------------------------------------------------------------------

class UsageError extends Error {}

function usageExit(message) {
  process.stderr.write(`wsgate-cli: ${message}\n\n${USAGE}`);
  process.exit(EXIT_USAGE);
}

/** The `ws` package: $WSGATE_WS_MODULE, this checkout's bench/node or bench/peers, then a global one. */
function loadWs() {
  const require = createRequire(import.meta.url);
  const dirs = [
    process.env.WSGATE_WS_MODULE,
    path.join(SCRIPT_DIR, '../bench/node/node_modules/ws'),
    path.join(SCRIPT_DIR, '../bench/peers/node_modules/ws'),
  ].filter(Boolean);
  for (const dir of dirs) {
    if (existsSync(path.join(dir, 'package.json'))) return require(dir);
  }
  try { return require('ws'); } catch { /* next */ } // NODE_PATH, ~/.node_modules, …
  const prefixes = [process.env.npm_config_prefix, path.resolve(path.dirname(process.execPath), '..')];
  for (const prefix of prefixes.filter(Boolean)) {
    const dir = path.join(prefix, 'lib/node_modules/ws');
    if (existsSync(path.join(dir, 'package.json'))) return require(dir);
  }
  process.stderr.write(
    `wsgate-cli: the Node package 'ws' was not found (looked in ${dirs.join(', ')}, then for a global 'ws').\n` +
    `Install it (npm ci in bench/node, or npm install -g ws) or set WSGATE_WS_MODULE to its directory.\n`);
  process.exit(EXIT_REFUSED);
}

/** Parses argv: options may appear anywhere; `--` ends them. */
function parseArgs(argv) {
  const o = { token: process.env.WSGATE_TOKEN || undefined, user: undefined, quiet: false, join: [], noJoin: false,
    help: false, positional: [], tokenGiven: false };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    if (a === '--') { o.positional.push(...argv.slice(i + 1)); break; }
    if (!/^--?[A-Za-z]/.test(a)) { o.positional.push(a); continue; }
    let value;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { value = a.slice(eq + 1); a = a.slice(0, eq); }
    const takeValue = () => {
      if (value !== undefined) return value;
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--help': case '-h': o.help = true; break;
      case '--quiet': case '-q': o.quiet = true; break;
      case '--no-join': o.noJoin = true; break;
      case '--token': o.token = takeValue(); o.tokenGiven = true; break;
      case '--user': o.user = takeValue(); break;
      case '--join': o.join.push(takeValue()); break;
      default: throw new UsageError(`unknown option ${a}`);
    }
    if (value !== undefined && !['--token', '--user', '--join'].includes(a)) throw new UsageError(`${a} takes no value`);
  }
  if (o.help) return o;
  const [url, command, ...args] = o.positional;
  if (url === undefined) throw new UsageError('missing URL');
  if (command === undefined) throw new UsageError('missing COMMAND');
  o.url = normalizeUrl(url);
  o.command = command;
  o.args = args;
  const arity = { join: [1, Infinity], listen: [0, 0], publish: [2, 2], send: [2, 2], presence: [1, 1], online: [1, Infinity] }[command];
  if (!arity) throw new UsageError(`unknown command '${command}'`);
  if (args.length < arity[0] || args.length > arity[1]) throw new UsageError(`wrong number of arguments for '${command}'`);
  if (o.join.length && command !== 'listen') throw new UsageError('--join goes with listen (join takes its rooms as arguments)');
  if (o.noJoin && command !== 'publish') throw new UsageError('--no-join goes with publish');
  if (o.tokenGiven && o.user !== undefined) throw new UsageError('--token and --user exclude each other');
  if (o.user !== undefined) o.token = undefined; // --user wins over $WSGATE_TOKEN
  return o;
}

function normalizeUrl(text) {
  let u;
  try { u = new URL(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*$/i.test(text) ? text + '/ws' : text); } catch {
    throw new UsageError(`bad URL '${text}' (expected ws://HOST:PORT/ws)`);
  }
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new UsageError(`bad URL '${text}' (expected ws:// or wss://)`);
  return u.toString();
}

// DATA given as JSON text goes out byte for byte: the client serializes requests with
// JSON.stringify (which would reformat it and round big numbers), so the value handed to it is a
// placeholder string that the WebSocket wrapper below replaces by the text in the outgoing frame.
const rawTexts = new Map(); // JSON form of a placeholder -> the JSON text it stands for
let rawSeq = 0;

/** @returns {{value: any, release: () => void}} */
function dataValue(text) {
  const trimmed = text.replace(/^[ \t\n\r]+|[ \t\n\r]+$/g, '');
  try { JSON.parse(trimmed); } catch { return { value: text, release() {} }; } // not JSON: a string
  const placeholder = `\u0000wsgate-cli raw ${++rawSeq}\u0000`;
  const key = JSON.stringify(placeholder);
  rawTexts.set(key, trimmed);
  return { value: placeholder, release: () => rawTexts.delete(key) };
}

function wrapWebSocket(Base) {
  return class CliWebSocket extends Base {
    send(data, ...rest) {
      if (typeof data === 'string' && rawTexts.size) {
        for (const [key, text] of rawTexts) {
          if (data.includes(key)) data = data.replace(key, () => text);
        }
      }
      return super.send(data, ...rest);
    }
  };
}

/** A push as one line: the frame as received; a publisher's data with line breaks in it (JSON
 * whitespace: a string cannot hold a raw line break) has them turned into spaces. */
function pushLine(ev, type) {
  if (typeof ev.raw === 'string' && !/[\r\n]/.test(ev.raw)) return ev.raw;
  if (typeof ev.raw === 'string') {
    const line = ev.raw.replace(/[\r\n]/g, ' ');
    try { JSON.parse(line); return line; } catch { /* below */ }
  }
  const obj = {};
  if (ev.mid !== undefined) obj.mid = ev.mid;
  obj.type = type;
  if (type === 'message') obj.room = ev.room;
  if (type !== 'broadcast') obj.from = ev.from;
  if (ev.binary) obj.binary = true;
  obj.data = ev.data;
  return JSON.stringify(obj);
}

const TRANSPORT_CODES = new Set(['disconnected', 'not_connected']);
const SERVER_CODES = new Set(['bad_request', 'unknown_op', 'forbidden', 'not_member', 'limit', 'unavailable', 'internal']);

// ---- main -----------------------------------------------------------------------------------

async function main() {
  let opts;
  try { opts = parseArgs(process.argv.slice(2)); } catch (e) {
    if (e instanceof UsageError) usageExit(e.message);
    throw e;
  }
  if (opts.help) { process.stdout.write(USAGE); return; }

  const ws = loadWs();
  const WebSocket = wrapWebSocket(ws.WebSocket ?? ws);
  const longLived = opts.command === 'join' || opts.command === 'listen';
  const status = (line) => { if (!opts.quiet) process.stderr.write(`wsgate-cli: ${line}\n`); };
  const error = (line) => process.stderr.write(`wsgate-cli: ${line}\n`);

  const client = new WsgateClient(opts.url, {
    WebSocket,
    token: opts.token,
    user: opts.user,
    connectTimeoutMs: longLived ? 10000 : 5000,
    reconnect: longLived ? { baseMs: 500, capMs: 10000 } : { baseMs: 200, capMs: 1000, maxAttempts: 3 },
    pingIntervalMs: longLived ? 25000 : 0,
  });

  let exiting = false;
  const finish = (code) => {
    if (exiting) return;
    exiting = true;
    client.close();
    // stdout may be a pipe: exit once what was written is flushed
    process.stdout.write('', () => process.exit(code));
    setTimeout(() => process.exit(code), 2000).unref();
  };
  const fail = (code, line) => { error(line); finish(code); };

  process.stdout.on('error', (e) => { // e.g. `| head -1` closed the pipe
    if (e.code === 'EPIPE') { exiting = true; client.close(); process.exit(EXIT_OK); }
    error(`stdout: ${e.message}`);
    process.exit(EXIT_REFUSED);
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    const signo = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 }[sig];
    process.on(sig, () => { status(`${sig}, exiting`); finish(longLived ? EXIT_OK : 128 + signo); });
  }

  // ---- status lines and pushes
  let lastError = null; // the latest transport error, for the next status line
  let lastClose = null;
  let everOpened = false;
  client.on('error', ({ error: err, room }) => {
    if (room !== undefined) {
      // a room refused on re-join: what this command was asked to follow is gone
      fail(EXIT_REFUSED, `re-join of '${room}' refused: ${err.code}${err.message && err.message !== err.code ? ` (${err.message})` : ''}`);
      return;
    }
    if (err instanceof WsgateError) { error(`gateway error: ${err.code} (${err.message})`); return; }
    lastError = err?.message ?? String(err);
    const http = /Unexpected server response: (\d+)/.exec(lastError);
    if (http && ['400', '401', '403'].includes(http[1])) {
      const why = { 400: 'bad request (user id?)', 401: 'token refused', 403: 'origin not allowed' }[http[1]];
      fail(EXIT_REFUSED, `refused by the gateway: HTTP ${http[1]}, ${why}`);
    }
  });
  client.on('open', ({ reconnected, rooms }) => {
    everOpened = true;
    lastError = null;
    if (reconnected) status(`reconnected to ${opts.url}${rooms.length ? `, rooms re-joined: ${rooms.join(', ')}` : ''}`);
    else status(`connected to ${opts.url}`);
  });
  client.on('close', (ev) => { lastClose = ev; });
  client.on('shutdown', ({ reconnectInMs }) => status(`server_shutdown: the gateway is draining (reconnect in ${reconnectInMs} ms)`));
  client.on('reconnecting', ({ attempt, delay, afterShutdown }) => {
    if (exiting) return;
    const why = afterShutdown ? 'after server_shutdown'
      : lastError && !(everOpened && attempt === 1) ? `(${lastError})`
      : lastClose ? `(connection closed ${lastClose.code}${lastClose.reason ? ' ' + lastClose.reason : ''})` : '';
    status(`reconnecting in ${delay} ms ${why} (attempt ${attempt})`.replace(/ +/g, ' '));
    lastError = null;
  });
  if (longLived) {
    for (const type of ['message', 'direct', 'broadcast']) {
      client.on(type, (ev) => { if (!exiting) process.stdout.write(pushLine(ev, type) + '\n'); });
    }
  }

  const describe = (e) => `${e.code ?? 'error'}${e.message && e.message !== e.code ? ` (${e.message})` : ''}`;

  /** Runs a request; after a lost connection, waits for the reconnect (rooms re-joined) and sends
   * it again (at least once). Throws a WsgateError when refused or when the client gives up. */
  async function request(fn) {
    for (;;) {
      try { return await fn(); } catch (e) {
        if (!(e instanceof WsgateError) || !TRANSPORT_CODES.has(e.code) || exiting) throw e;
        if (e.code === 'disconnected' && lastClose?.code === 1009) throw new WsgateError('too_big', 'message too big: the gateway closed the connection 1009');
        if (client.state === 'closed') throw e;
        await client.connect();
      }
    }
  }

  /** Exits 1 (server's refusal) or 3 (connection) for a failed request. */
  const requestFailed = (what, e) => {
    if (exiting) return;
    if (e instanceof WsgateError && (SERVER_CODES.has(e.code) || e.code === 'too_big')) fail(EXIT_REFUSED, `${what} refused: ${describe(e)}`);
    else if (e instanceof WsgateError) fail(EXIT_CONNECT, `${what} failed: ${describe(e)}`);
    else fail(EXIT_REFUSED, `${what} failed: ${e?.stack ?? e}`);
  };

  // ---- connect
  try {
    await client.connect();
  } catch (e) {
    if (!exiting) fail(EXIT_CONNECT, `cannot connect to ${opts.url}${lastError ? `: ${lastError}` : lastClose ? `: closed ${lastClose.code} ${lastClose.reason}`.trimEnd() : ''}`);
    return;
  }

  // ---- one-shot commands
  const [a0, a1] = opts.args;
  let what = opts.command;
  try {
    switch (opts.command) {
      case 'publish': {
        if (!opts.noJoin) {
          what = `join ${a0}`;
          await request(() => client.join(a0));
          what = 'publish';
        }
        const d = dataValue(a1);
        try { await request(() => client.publish(a0, d.value)); } finally { d.release(); }
        status(`published to ${a0}`);
        return finish(EXIT_OK);
      }
      case 'send': {
        const d = dataValue(a1);
        try { await request(() => client.send(a0, d.value)); } finally { d.release(); }
        status(`sent to ${a0}`);
        return finish(EXIT_OK);
      }
      case 'presence': {
        const users = await request(() => client.presence(a0));
        process.stdout.write(JSON.stringify({ type: 'presence', room: a0, users }) + '\n');
        return finish(EXIT_OK);
      }
      case 'online': {
        const users = await request(() => client.online(opts.args));
        process.stdout.write(JSON.stringify({ type: 'online', users }) + '\n');
        return finish(EXIT_OK);
      }
      default: break;
    }
  } catch (e) {
    requestFailed(what, e);
    return;
  }

  // ---- join / listen
  const rooms = opts.command === 'join' ? opts.args : opts.join;
  for (const room of rooms) {
    try { await request(() => client.join(room)); } catch (e) { requestFailed(`join ${room}`, e); return; }
  }
  if (rooms.length) status(`joined ${rooms.join(', ')}`);
  if (opts.command !== 'join') return; // listen: runs until interrupted

  // stdin lines are published to the first room, in order, each once acked before the next
  const room = rooms[0];
  let refused = 0;
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
  for await (const line of rl) {
    if (exiting) return;
    if (line === '') continue;
    const d = dataValue(line);
    try {
      for (;;) {
        try { await request(() => client.publish(room, d.value)); break; } catch (e) {
          if (e instanceof WsgateError && e.code === 'limit') { await new Promise((r) => setTimeout(r, 200)); continue; } // rate limit: slow down
          throw e;
        }
      }
    } catch (e) {
      if (exiting) return;
      if (e instanceof WsgateError && (SERVER_CODES.has(e.code) || e.code === 'too_big')) {
        refused++;
        error(`publish refused: ${describe(e)}`);
        continue;
      }
      requestFailed('publish', e);
      return;
    } finally { d.release(); }
  }
  if (exiting) return;
  status(refused ? `stdin closed; ${refused} publish(es) refused` : 'stdin closed, every line published');
  finish(refused ? EXIT_REFUSED : EXIT_OK);
}

main().catch((e) => {
  process.stderr.write(`wsgate-cli: ${e?.stack ?? e}\n`);
  process.exit(EXIT_REFUSED);
});
