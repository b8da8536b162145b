// Type declarations for wsgate.mjs (the wsgate client protocol v1 client; docs/protocol.md).

export interface ReconnectOptions {
  /** Backoff base in ms (default 500). */
  baseMs?: number;
  /** Backoff cap in ms (default 30000). */
  capMs?: number;
  /** Consecutive failed attempts before giving up (default Infinity; 0: never reconnect). */
  maxAttempts?: number;
}

export interface WsgateClientOptions {
  /** JWT sent as `?token=`; a function is called before every connection attempt. */
  token?: string | (() => string | Promise<string>);
  /** Anonymous development mode: the user id, sent as `?user=`. */
  user?: string;
  /** WebSocket constructor (default `globalThis.WebSocket`; in Node 20 pass `ws`'s). */
  WebSocket?: new (url: string) => any;
  /** How long a request waits for its reply (default 10000 ms). */
  requestTimeoutMs?: number;
  /** How long one connection attempt may take to open (default 10000 ms). */
  connectTimeoutMs?: number;
  /** Backoff settings; `false`: never reconnect. */
  reconnect?: ReconnectOptions | false;
  /** App-level ping period (default 25000 ms; 0: off). */
  pingIntervalMs?: number;
  /** No pong within this → the connection is treated as dead (default 10000 ms). */
  pingTimeoutMs?: number;
}

/** Server codes: bad_request, unknown_op, forbidden, not_member, limit, unavailable, internal.
 * Client codes: timeout, disconnected, not_connected, closed. */
export type WsgateErrorCode =
  | 'bad_request' | 'unknown_op' | 'forbidden' | 'not_member' | 'limit' | 'unavailable' | 'internal'
  | 'timeout' | 'disconnected' | 'not_connected' | 'closed' | (string & {});

export class WsgateError extends Error {
  constructor(code: string, message: string, op?: string);
  readonly code: WsgateErrorCode;
  /** The op of the request that failed, when there was one. */
  readonly op?: string;
}

export interface PushExtra {
  /** Message id (Redis backplane only). */
  mid?: string;
  /** true when a binary sender's data arrives base64-encoded. */
  binary?: boolean;
  /** The frame's text, exactly as received (absent for pushes inside a batch). */
  raw?: string;
}

export interface WsgateEvents {
  open: { reconnected: boolean; rooms: string[] };
  message: { room: string; from: string; data: unknown } & PushExtra;
  direct: { from: string; data: unknown } & PushExtra;
  broadcast: { data: unknown } & PushExtra;
  close: { code: number; reason: string; wasClean: boolean; willReconnect: boolean };
  reconnecting: { attempt: number; delay: number; afterShutdown: boolean };
  shutdown: { reconnectInMs: number; raw?: string };
  error: { error: unknown; room?: string };
}

export type WsgateState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export class WsgateClient {
  constructor(url: string, options?: WsgateClientOptions);
  readonly state: WsgateState;
  /** Rooms joined and not left: re-joined after every reconnect. */
  readonly rooms: string[];

  on<K extends keyof WsgateEvents>(type: K, fn: (event: WsgateEvents[K]) => void): () => void;
  off<K extends keyof WsgateEvents>(type: K, fn: (event: WsgateEvents[K]) => void): void;
  once<K extends keyof WsgateEvents>(type: K, fn: (event: WsgateEvents[K]) => void): () => void;

  /** Resolves once open (retrying per the reconnect policy); rejects if the client gives up or close() is called. */
  connect(): Promise<void>;
  /** Closes for good (no reconnect); pending requests reject with code `closed`. */
  close(code?: number, reason?: string): void;

  join(room: string): Promise<void>;
  leave(room: string): Promise<void>;
  publish(room: string, data: unknown): Promise<void>;
  send(user: string, data: unknown): Promise<void>;
  broadcast(data: unknown): Promise<void>;
  /** The room's members, fleet-wide, sorted. */
  presence(room: string): Promise<string[]>;
  /** Which of these users are online, in the order asked. */
  online(users: string[]): Promise<string[]>;
  /** Round-trip time in ms. */
  ping(): Promise<number>;
}

/** random(0, min(capMs, baseMs * 2^exponent)), integer ms; exponent 0 for the first retry. */
export function backoffDelay(exponent: number, baseMs: number, capMs: number, random?: () => number): number;

/** The reconnect policy by close code (false for 1000, 1002, 1003, 1007, 1008, 1010, 4000–4999). */
export function shouldReconnect(code: number): boolean;
