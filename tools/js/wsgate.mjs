// wsgate.mjs: a JavaScript client for wsgate's client protocol v1 (docs/protocol.md).
// One ES module, no dependencies, for browsers and Node >= 20. JSON text frames only.
//
//   import { WsgateClient } from './wsgate.mjs';
//   const c = new WsgateClient('ws://127.0.0.1:8080/ws', { user: 'alice' });
//   c.on('message', ({ room, from, data }) => console.log(room, from, data));
//   await c.connect();
//   await c.join('lobby');
//   await c.publish('lobby', { text: 'hi' });
//
// Node 20 has no global WebSocket: pass one, e.g. `{ WebSocket: (await import('ws')).WebSocket }`.
//
// Events (`client.on(type, fn)` → unsubscribe function; `off`, `once`): each listener gets one
// object argument.
//   open         {reconnected, rooms}           the connection is usable; after a reconnect, fired
//                                               once the rooms have been re-joined
//   message      {room, from, data, mid?, binary?, raw?}   a publication in a joined room
//   direct       {from, data, mid?, binary?, raw?}         a `send` to this user
//   broadcast    {data, mid?, binary?, raw?}               an admin broadcast
//   close        {code, reason, wasClean, willReconnect}   every time the socket closes (also a
//                                               failed connection attempt, code 1006)
//   reconnecting {attempt, delay, afterShutdown}  a new attempt is scheduled in `delay` ms
//   shutdown     {reconnectInMs, raw}            the server_shutdown push (a close 1001 follows)
//   error        {error, room?}                  transport errors, failed re-joins, bad frames
//
// Reconnect policy (decided from the close code, docs/protocol.md):
//   no reconnect: close() was called; 1000 (normal, idle timeout); 1002, 1003, 1007, 1010 (a
//     client bug: retrying repeats it); 1008 (policy: rate limit); 4000-4999 (application /
//     auth-type codes); or `reconnect.maxAttempts` tries failed in a row;
//   reconnect: everything else: 1001 (going away / drain), 1005, 1006 (abnormal: network,
//     refused, failed handshake, ping timeout), 1009 (the oversized request is rejected, not
//     retried), 1011, 1012, 1013, 1014, other codes.
//   Delay: after a server_shutdown push, its `reconnect_in_ms` (already jittered by the server);
//   otherwise exponential backoff with full jitter, attempt n (1-based) waiting
//   random(0, min(capMs, baseMs * 2^(n-1))). The counter resets when a connection opens.

/**
 * @typedef {object} ReconnectOptions
 * @property {number} [baseMs=500] backoff base
 * @property {number} [capMs=30000] backoff cap
 * @property {number} [maxAttempts=Infinity] consecutive failed attempts before giving up (0: never reconnect)
 */

/**
 * @typedef {object} WsgateClientOptions
 * @property {string | (() => string | Promise<string>)} [token] JWT sent as `?token=`; a function is
 *   called before every connection attempt (to refresh an expiring token)
 * @property {string} [user] anonymous development mode: the user id, sent as `?user=`
 * @property {new (url: string) => any} [WebSocket] WebSocket constructor (default `globalThis.WebSocket`)
 * @property {number} [requestTimeoutMs=10000] how long a request waits for its reply
 * @property {number} [connectTimeoutMs=10000] how long one connection attempt may take to open
 * @property {ReconnectOptions | false} [reconnect] backoff settings; `false` = never reconnect
 * @property {number} [pingIntervalMs=25000] app-level ping period (0: off)
 * @property {number} [pingTimeoutMs=10000] no pong within this → the connection is dead
 */

/** An Error from a failed request. `code` is the server's error code (`bad_request`, `unknown_op`,
 * `forbidden`, `not_member`, `limit`, `unavailable`, `internal`) or one of the client's own:
 * `timeout`, `disconnected` (the connection dropped before the reply), `not_connected`, `closed`
 * (close() was called). */
export class WsgateError extends Error {
  /** @param {string} code @param {string} message @param {string} [op] */
  constructor(code, message, op) {
    super(message || code);
    this.name = 'WsgateError';
    /** @type {string} */
    this.code = code;
    /** @type {string | undefined} */
    this.op = op;
  }
}

/**
 * Full-jitter exponential backoff: a random delay in [0, min(capMs, baseMs * 2^exponent)].
 * @param {number} exponent 0 for the first retry
 * @param {number} baseMs
 * @param {number} capMs
 * @param {() => number} [random=Math.random] returns [0, 1)
 * @returns {number} milliseconds (integer)
 */
export function backoffDelay(exponent, baseMs, capMs, random = Math.random) {
  const ceiling = Math.min(capMs, baseMs * Math.pow(2, Math.min(exponent, 60)));
  return Math.floor(random() * ceiling);
}

const NO_RECONNECT = new Set([1000, 1002, 1003, 1007, 1008, 1010]);

/**
 * The reconnect policy: whether a close with this code should be followed by a reconnect.
 * @param {number} code
 * @returns {boolean}
 */
export function shouldReconnect(code) {
  if (NO_RECONNECT.has(code)) return false;
  if (code >= 4000 && code <= 4999) return false;
  return true;
}

const OPEN = 1;

export class WsgateClient {
  /**
   * @param {string} url `ws://host:port/ws` (or `wss://…` behind a TLS load balancer)
   * @param {WsgateClientOptions} [options]
   */
  constructor(url, options = {}) {
    this._url = url;
    this._token = options.token;
    this._user = options.user;
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') {
      throw new TypeError('no WebSocket constructor: pass options.WebSocket (e.g. from the "ws" package)');
    }
    this._requestTimeoutMs = options.requestTimeoutMs ?? 10000;
    this._connectTimeoutMs = options.connectTimeoutMs ?? 10000;
    const r = options.reconnect === false ? { maxAttempts: 0 } : (options.reconnect ?? {});
    this._baseMs = r.baseMs ?? 500;
    this._capMs = r.capMs ?? 30000;
    this._maxAttempts = r.maxAttempts ?? Infinity;
    this._pingIntervalMs = options.pingIntervalMs ?? 25000;
    this._pingTimeoutMs = options.pingTimeoutMs ?? 10000;

    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** @type {Map<number, {resolve: Function, reject: Function, timer: any, op: string}>} */
    this._pending = new Map();
    /** rooms joined (acked) and not left: re-joined after a reconnect */
    this._rooms = new Set();
    this._nextId = 1;
    this._ws = null;
    this._state = 'idle';
    this._attempt = 0; // reconnect attempts since the last open
    this._everOpened = false;
    this._shutdownDelay = null; // reconnect_in_ms of a server_shutdown on the current socket
    this._retryTimer = null;
    this._connectTimer = null;
    this._pingTimer = null;
    this._connectWaiters = [];
    this._generation = 0; // bumps on every socket, so stale callbacks are ignored
  }

  /** @returns {'idle'|'connecting'|'open'|'reconnecting'|'closed'} */
  get state() { return this._state; }

  /** @returns {string[]} the rooms this client has joined and will re-join after a reconnect */
  get rooms() { return [...this._rooms]; }

  // ---- events ---------------------------------------------------------------------------

  /**
   * @param {'open'|'message'|'direct'|'broadcast'|'close'|'reconnecting'|'shutdown'|'error'} type
   * @param {(event: any) => void} fn
   * @returns {() => void} unsubscribe
   */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /** @param {string} type @param {(event: any) => void} fn */
  off(type, fn) { this._listeners.get(type)?.delete(fn); }

  /** @param {string} type @param {(event: any) => void} fn @returns {() => void} */
  once(type, fn) {
    const off = this.on(type, (ev) => { off(); fn(ev); });
    return off;
  }

  _emit(type, ev) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try { fn(ev); } catch (e) { queueMicrotask(() => { throw e; }); }
    }
  }

  // ---- connection -----------------------------------------------------------------------

  /**
   * Connects (retrying per the reconnect policy) and resolves once the connection is open.
   * Rejects if the client gives up (policy, maxAttempts) or close() is called first.
   * @returns {Promise<void>}
   */
  connect() {
    if (this._state === 'open') return Promise.resolve();
    const p = new Promise((resolve, reject) => this._connectWaiters.push({ resolve, reject }));
    if (this._state === 'idle' || this._state === 'closed') {
      this._attempt = 0;
      this._everOpened = false;
      this._state = 'connecting';
      this._open();
    }
    return p;
  }

  /**
   * Closes the connection for good: no reconnect afterwards; pending requests reject with
   * code `closed`. connect() may be called again later.
   * @param {number} [code=1000] @param {string} [reason='']
   */
  close(code = 1000, reason = '') {
    if (this._state === 'closed' || this._state === 'idle') return;
    this._state = 'closed';
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._stopTimers();
    this._rejectAll('closed', 'client closed');
    this._settleConnect(new WsgateError('closed', 'client closed'));
    const ws = this._ws;
    this._ws = null;
    this._generation++;
    if (ws) {
      detach(ws);
      try { ws.close(code, reason); } catch { try { ws.close(); } catch { /* ignore */ } }
    }
    this._emit('close', { code, reason, wasClean: true, willReconnect: false });
  }

  async _open() {
    const gen = ++this._generation;
    let url;
    try {
      url = new URL(this._url);
      const token = typeof this._token === 'function' ? await this._token() : this._token;
      if (gen !== this._generation) return;
      if (token != null) url.searchParams.set('token', token);
      if (this._user != null) url.searchParams.set('user', this._user);
    } catch (error) {
      if (gen !== this._generation) return;
      this._emit('error', { error });
      this._onSocketClosed(gen, 1006, String(error?.message ?? error), false);
      return;
    }
    let ws;
    try {
      ws = new this._WebSocket(url.toString());
    } catch (error) {
      this._emit('error', { error });
      this._onSocketClosed(gen, 1006, String(error?.message ?? error), false);
      return;
    }
    this._ws = ws;
    this._shutdownDelay = null;
    try { ws.binaryType = 'arraybuffer'; } catch { /* ignore */ }
    this._connectTimer = setTimeout(() => {
      if (gen !== this._generation) return;
      this._kill(ws);
      this._onSocketClosed(gen, 1006, 'connect timeout', false);
    }, this._connectTimeoutMs);
    ws.onopen = () => { if (gen === this._generation) this._onSocketOpen(gen); };
    ws.onmessage = (ev) => { if (gen === this._generation) this._onFrame(ev.data); };
    ws.onerror = (ev) => {
      if (gen !== this._generation) return;
      this._emit('error', { error: ev?.error ?? new Error(ev?.message ?? 'websocket error') });
    };
    ws.onclose = (ev) => {
      if (gen !== this._generation) return;
      this._onSocketClosed(gen, ev.code ?? 1006, ev.reason ?? '', !!ev.wasClean);
    };
  }

  async _onSocketOpen(gen) {
    clearTimeout(this._connectTimer);
    this._connectTimer = null;
    const reconnected = this._everOpened;
    this._everOpened = true;
    this._attempt = 0;
    this._state = 'open';
    this._startPing(gen);
    if (reconnected && this._rooms.size) {
      // Re-join: internal requests, nothing the application holds is resolved again.
      const rooms = [...this._rooms];
      const results = await Promise.allSettled(rooms.map((room) => this._request({ op: 'join', room })));
      if (gen !== this._generation) return; // dropped again while re-joining
      results.forEach((res, i) => {
        if (res.status === 'rejected' && res.reason?.code !== 'disconnected' && res.reason?.code !== 'timeout') {
          this._rooms.delete(rooms[i]); // refused now (e.g. forbidden): forget it
          this._emit('error', { error: res.reason, room: rooms[i] });
        }
      });
    }
    this._settleConnect(null);
    this._emit('open', { reconnected, rooms: this.rooms });
  }

  _onSocketClosed(gen, code, reason, wasClean) {
    if (gen !== this._generation) return;
    this._generation++;
    this._ws = null;
    this._stopTimers();
    this._rejectAll('disconnected', `connection closed (${code}${reason ? ' ' + reason : ''})`);
    const afterShutdown = this._shutdownDelay != null;
    const policyOk = afterShutdown || shouldReconnect(code);
    const willReconnect = this._state !== 'closed' && policyOk && this._attempt < this._maxAttempts;
    this._emit('close', { code, reason, wasClean, willReconnect });
    if (this._state === 'closed') return; // close() from a listener
    if (!willReconnect) {
      this._state = 'closed';
      this._settleConnect(new WsgateError('closed', `connection closed (${code}${reason ? ' ' + reason : ''}), not reconnecting`));
      return;
    }
    this._attempt++;
    const delay = afterShutdown
      ? this._shutdownDelay
      : backoffDelay(this._attempt - 1, this._baseMs, this._capMs);
    this._shutdownDelay = null;
    this._state = 'reconnecting';
    this._emit('reconnecting', { attempt: this._attempt, delay, afterShutdown });
    if (this._state !== 'reconnecting') return; // close() from a listener
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (this._state !== 'reconnecting') return;
      this._state = 'connecting';
      this._open();
    }, delay);
  }

  _settleConnect(error) {
    const waiters = this._connectWaiters;
    this._connectWaiters = [];
    for (const w of waiters) error ? w.reject(error) : w.resolve();
  }

  /** Drops a socket at once without waiting for a close handshake (it may be dead). */
  _kill(ws) {
    detach(ws);
    try {
      if (typeof ws.terminate === 'function') ws.terminate(); // Node 'ws': no 30 s close wait
      else ws.close(4000, 'dead connection');
    } catch { /* ignore */ }
  }

  _startPing(gen) {
    if (!(this._pingIntervalMs > 0)) return;
    this._pingTimer = setInterval(() => {
      if (gen !== this._generation) return;
      this._request({ op: 'ping' }, this._pingTimeoutMs).catch((e) => {
        if (gen !== this._generation || e.code !== 'timeout') return;
        // No pong in time: the connection is dead (browsers cannot see WebSocket pings).
        const ws = this._ws;
        if (ws) this._kill(ws);
        this._onSocketClosed(gen, 1006, 'ping timeout', false);
      });
    }, this._pingIntervalMs);
  }

  _stopTimers() {
    clearTimeout(this._connectTimer);
    this._connectTimer = null;
    clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  _rejectAll(code, message) {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(new WsgateError(code, message, p.op));
    }
  }

  // ---- incoming frames ------------------------------------------------------------------

  _onFrame(data) {
    if (typeof data !== 'string') {
      this._emit('error', { error: new Error('unexpected binary frame') });
      return;
    }
    let msg;
    try { msg = JSON.parse(data); } catch (error) {
      this._emit('error', { error: new Error('unparsable frame: ' + error.message) });
      return;
    }
    if (Array.isArray(msg)) { for (const m of msg) this._onMessage(m, undefined); } // ?batch=1
    else this._onMessage(msg, data);
  }

  _onMessage(msg, raw) {
    if (msg == null || typeof msg !== 'object') return;
    const extra = {};
    if (msg.mid !== undefined) extra.mid = msg.mid;
    if (msg.binary) extra.binary = true;
    if (raw !== undefined) extra.raw = raw;
    switch (msg.type) {
      case 'message':
        this._emit('message', { room: msg.room, from: msg.from, data: msg.data, ...extra });
        return;
      case 'direct':
        this._emit('direct', { from: msg.from, data: msg.data, ...extra });
        return;
      case 'broadcast':
        this._emit('broadcast', { data: msg.data, ...extra });
        return;
      case 'server_shutdown': {
        const ms = Number(msg.reconnect_in_ms);
        this._shutdownDelay = Number.isFinite(ms) && ms >= 0 ? Math.min(ms, 600000) : 0;
        this._emit('shutdown', { reconnectInMs: this._shutdownDelay, raw });
        return;
      }
      default:
        break;
    }
    if (msg.id === undefined) {
      if (msg.type === 'error') {
        this._emit('error', { error: new WsgateError(msg.code ?? 'internal', msg.message ?? '') });
      }
      return; // unsolicited pong, or an unknown push
    }
    const p = this._pending.get(msg.id);
    if (!p) return; // late reply to a request that timed out
    this._pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.type === 'error') p.reject(new WsgateError(msg.code ?? 'internal', msg.message ?? '', p.op));
    else p.resolve(msg);
  }

  // ---- requests -------------------------------------------------------------------------

  /** @returns {Promise<any>} the reply object */
  _request(msg, timeoutMs = this._requestTimeoutMs) {
    const ws = this._ws;
    if (this._state !== 'open' || !ws || ws.readyState !== OPEN) {
      return Promise.reject(new WsgateError('not_connected', 'not connected', msg.op));
    }
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this._pending.delete(id)) reject(new WsgateError('timeout', `no reply in ${timeoutMs} ms`, msg.op));
      }, timeoutMs);
      this._pending.set(id, { resolve, reject, timer, op: msg.op });
      try {
        ws.send(JSON.stringify({ ...msg, id }));
      } catch (e) {
        this._pending.delete(id);
        clearTimeout(timer);
        reject(new WsgateError('disconnected', String(e?.message ?? e), msg.op));
      }
    });
  }

  /** Enters a room; it is re-joined after every reconnect until left.
   * @param {string} room @returns {Promise<void>} */
  async join(room) {
    await this._request({ op: 'join', room });
    this._rooms.add(room);
  }

  /** Leaves a room (it is forgotten at once: not re-joined even if the reply is lost).
   * @param {string} room @returns {Promise<void>} */
  async leave(room) {
    const p = this._request({ op: 'leave', room });
    this._rooms.delete(room);
    await p;
  }

  /** Publishes to a joined room; `data` is any JSON value.
   * @param {string} room @param {any} data @returns {Promise<void>} */
  async publish(room, data) { await this._request({ op: 'publish', room, data }); }

  /** Sends to every connection of a user.
   * @param {string} user @param {any} data @returns {Promise<void>} */
  async send(user, data) { await this._request({ op: 'send', user, data }); }

  /** Broadcasts to everyone (the token needs `admin`).
   * @param {any} data @returns {Promise<void>} */
  async broadcast(data) { await this._request({ op: 'broadcast', data }); }

  /** The room's members, fleet-wide, sorted.
   * @param {string} room @returns {Promise<string[]>} */
  async presence(room) { return (await this._request({ op: 'presence', room })).users ?? []; }

  /** Which of these users are online, fleet-wide, in the order asked.
   * @param {string[]} users @returns {Promise<string[]>} */
  async online(users) { return (await this._request({ op: 'online', users })).users ?? []; }

  /** An app-level ping; resolves with the round-trip time in ms.
   * @returns {Promise<number>} */
  async ping() {
    const t0 = Date.now();
    await this._request({ op: 'ping' });
    return Date.now() - t0;
  }
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = null;
  ws.onerror = () => {}; // Node 'ws' may still report an error on an aborted handshake
}
