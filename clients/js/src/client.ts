/**
 * The sealcast protocol client: authenticate, wsenc/1 handshake, encrypted
 * records, heartbeat, key update, reconnect with backoff (always a fresh
 * handshake), no plaintext fallback when encryption is required; tokens from `getToken` refresh the
 * session before expiry, and credential closes are retried once with a fresh token, never blindly.
 */

import { decode as b64uDecode } from "./b64u.js";
import { CloseCode, SealcastError, closeReason, reconnectPolicy } from "./errors.js";
import {
  authenticateCrypto,
  clientHandshake,
  ROOM_KEYS_FIELD,
  ROOM_KEYS_BATCHED,
  ROOM_KEYS_BINARY,
  envelopeFrame,
  generateEphemeral,
  resolveServerKeys,
  type EphemeralKeyPair,
  type InnerMessage,
  type ResolvedServerKey,
  type ServerKey,
  type Session,
} from "./wsenc.js";

/** The subset of the WHATWG WebSocket used here (browsers, Node ≥ 22, the `ws` package). */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType?: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason?: string; wasClean?: boolean }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ReconnectOptions {
  /** First delay (default 500 ms); doubles per failed attempt, with jitter. */
  initialMs?: number;
  /** Upper bound of the delay (default 30 s). */
  maxMs?: number;
}

export interface ConnectOptions {
  /** `ws://host:port/ws` or `wss://…`. */
  url: string;
  /** Credential for the server's authenticator (sent as `data.token`). */
  token?: string;
  /**
   * Supplies a token, or a Promise of one. Called before connecting when there is no token yet, before a
   * reconnect when the token's `exp` is within `refreshMarginMs`, to refresh the session before `exp` (the
   * `refresh` event), and once after a credentials close (1008, 4003). A throw or a non-string ends the client
   * with a `TOKEN_UNAVAILABLE` error (during a refresh: an `error` event, the session runs until it expires).
   */
  getToken?: () => string | Promise<string>;
  /**
   * With `getToken` and a JWT-shaped token: refresh this long before its `exp`, at most half of its remaining
   * life (default 60000 ms). Measured on the local clock.
   */
  refreshMarginMs?: number;
  /** Extra fields for the authenticate `data` (custom authenticators). */
  auth?: Record<string, unknown>;
  /** Pinned server static keys (strongest option). */
  serverKeys?: ServerKey[];
  /**
   * URL of `/.well-known/sealcast.json` to fetch the server keys from on every
   * (re)connect. Only as trustworthy as the origin serving it; prefer `serverKeys`.
   */
  wellKnownUrl?: string;
  /** Default true: encryption is mandatory, never falls back to plaintext. */
  requireEncryption?: boolean;
  /** Heartbeat period, default 30000 ms; 0 disables. */
  heartbeatMs?: number;
  /** Reconnect with exponential backoff (default on); `false` disables. */
  reconnect?: ReconnectOptions | false;
  /** WebSocket constructor override (Node < 22: `import { WebSocket } from "ws"`). */
  WebSocket?: WebSocketConstructor;
  /** Outbound records per epoch before a key update (default 2^20; tests use small values). */
  maxRecordsPerEpoch?: number;
  /** Pad outbound plaintexts to a multiple of this many bytes (default off). */
  padBucket?: number;
  /**
   * Advertise group records (wsenc/1 §11, `roomKeys: 1`; default true): room messages then arrive sealed once
   * under the room's key with a header of this session's own. `false`: every message is a per-recipient record.
   */
  roomKeys?: boolean;
  /**
   * Advertise batched group records too (wsenc/1 §11.4, `roomKeys: 2`; default true, with `roomKeys`): a burst of
   * room messages then arrives as one record with one header for all of them. `false`: `roomKeys: 1`.
   */
  roomKeyBatches?: boolean;
  /**
   * Take batched group records as binary frames (wsenc/1 §11.5, `roomKeys: 3`; default true, with `roomKeyBatches`):
   * the bodies then travel raw instead of base64url in JSON. `false`: `roomKeys: 2`.
   */
  roomKeyBinary?: boolean;
  /** Abort a connection attempt that has not completed the handshake in time (default 15000 ms). */
  handshakeTimeoutMs?: number;
  /** Maximum messages queued while not connected (default 1000). */
  maxQueue?: number;
  /** `fetch` override for `wellKnownUrl`. */
  fetch?: (url: string, init?: unknown) => Promise<{ ok: boolean; status: number; json(): Promise<unknown> }>;
}

export interface ConnectedInfo {
  /** Server-assigned connection id. */
  id: string;
  userId: string;
  time: string;
  encrypted: boolean;
  /** kid of the server key that authenticated the session. */
  kid?: string;
}

export interface CloseInfo {
  code: number;
  /** Fixed reason for the code (never echoes server input). */
  reason: string;
  /** True when the client will try again. */
  willReconnect: boolean;
  /** The client-side error that caused the close, if any. */
  error?: SealcastError;
}

export type ClientState = "connecting" | "open" | "reconnecting" | "closed";

/** A place in a room's history stream. */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

/** The server's answer to a `join`. */
export interface JoinResult {
  /** Rooms joined; rooms with history add their latest `offset` and `epoch`, and `recovered` when asked to. */
  rooms: { room: string; offset?: number; epoch?: string; recovered?: boolean }[];
  /** Rooms refused, with the server's reason (`Room not allowed`, `Room refused`, `Invalid room name`, `Too many rooms`). */
  refused: { room: string; reason: string }[];
}

/** The server's acknowledgement of a `publish`: in a room with history, the message's position. */
export interface Ack {
  id: string;
  offset?: number;
  epoch?: string;
}

/** A member of a presence room, as `presence()` lists it. */
export interface PresenceMember {
  /** Its client id. */
  client: string;
  /** Its user, or null. */
  user: string | null;
  /** When it joined the room (ISO 8601, UTC). */
  since: string;
}

/** The server's answer to `presence(room)`: who is in the room. */
export interface Presence {
  room: string;
  /** At most the server's `presence.max_members` members, in no particular order. */
  members: PresenceMember[];
  /** How many clients are in the room (exact). */
  clients: number;
  /** How many distinct users they belong to (exact). */
  users: number;
  /** `members` lists fewer than `clients`. */
  truncated: boolean;
}

/** The data of `member_joined` and `member_left`. */
export interface MemberEvent {
  room: string;
  client: string;
  user: string | null;
}

/** Where a message delivered to a room with history sits in the room's stream. */
export interface MessageMeta {
  room: string;
  offset: number;
  epoch: string;
}

const LIFECYCLE = new Set(["connected", "close", "error", "message", "reconnecting", "rejoined"]);
/** Events an application may not send itself. */
const NOT_SENDABLE = new Set([
  "authenticate",
  "connected",
  "encrypted",
  "key_update",
  "joined",
  "ack",
  "presence",
  "member_joined",
  "member_left",
]);
/** The error texts that answer a presence query. */
const PRESENCE_ERRORS = new Set(["Not a member of room", "Presence not enabled for room", "Presence unavailable"]);
/** Most rooms whose last position is tracked for recovery. */
const MAX_TRACKED_ROOMS = 1024;

interface Queued {
  msg: InnerMessage;
  resolve: () => void;
  reject: (e: unknown) => void;
  onSent?: (a: Attempt) => void;
}

type Listener = (...args: any[]) => void;

interface Attempt {
  ws: WebSocketLike;
  phase: "opening" | "handshake" | "open" | "done";
  session?: Session;
  inbound: Promise<void>;
  outbound: Promise<void>;
  timers: ReturnType<typeof setTimeout>[];
  heartbeat?: ReturnType<typeof setInterval>;
  /** Joins sent on this session, answered (`joined`) in order; `undefined`: the automatic re-join. */
  joins: (PendingJoin | undefined)[];
  /** Publishes sent on this session, by id, waiting for their `ack` or `error`. */
  publishes: Map<string, PendingPublish>;
  /** Presence queries sent on this session, answered (`presence` or a presence error) in order. */
  presences: PendingPresence[];
}

interface PendingPresence {
  resolve: (p: Presence) => void;
  reject: (e: unknown) => void;
}

interface PendingJoin {
  resolve: (r: JoinResult) => void;
  reject: (e: unknown) => void;
}

interface PendingPublish {
  resolve: (a: Ack) => void;
  reject: (e: unknown) => void;
}

const OPEN = 1;

/** Create a client and start connecting. Register listeners right away (events fire asynchronously). */
export function connect(options: ConnectOptions): SealcastClient {
  return new SealcastClient(options);
}

export class SealcastClient {
  private readonly opts: ConnectOptions;
  private readonly encrypt: boolean;
  private readonly WS: WebSocketConstructor;
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly queue: Queued[] = [];
  private readonly rooms = new Set<string>();
  /** The last position received in each joined room with history (recovery after a reconnect). */
  private readonly positions = new Map<string, StreamPosition>();
  private publishIds = 0;
  private pinned?: Promise<ResolvedServerKey[]>;
  private cur?: Attempt;
  private _state: ClientState = "connecting";
  private _info?: ConnectedInfo;
  private failures = 0;
  private reconnectTimer?: ReturnType<typeof setTimeout>;
  private readyWaiters: { resolve: (i: ConnectedInfo) => void; reject: (e: unknown) => void }[] = [];
  private token?: string;
  /** A credentials close asked for a fresh token before the next attempt. */
  private needFreshToken = false;
  /** The one fresh-token retry is spent until a session is established again. */
  private retriedWithFreshToken = false;

  constructor(options: ConnectOptions) {
    if (!options || typeof options.url !== "string") {
      throw new SealcastError("CONFIG", "url is required", { fatal: true });
    }
    if (options.token !== undefined && typeof options.token !== "string") {
      throw new SealcastError("CONFIG", "token must be a string", { fatal: true });
    }
    if (options.getToken !== undefined && typeof options.getToken !== "function") {
      throw new SealcastError("CONFIG", "getToken must be a function", { fatal: true });
    }
    this.opts = { ...options };
    this.token = options.token;
    const requireEnc = options.requireEncryption ?? true;
    const hasKeys = (options.serverKeys && options.serverKeys.length > 0) || typeof options.wellKnownUrl === "string";
    if (requireEnc && !hasKeys) {
      throw new SealcastError("CONFIG", "requireEncryption needs serverKeys or wellKnownUrl", { fatal: true });
    }
    // Keys given => always encrypted, strictly. requireEncryption=false only allows a key-less plaintext client.
    this.encrypt = Boolean(hasKeys);
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (typeof WS !== "function") {
      throw new SealcastError("CONFIG", "no WebSocket implementation: pass options.WebSocket", { fatal: true });
    }
    this.WS = WS;
    if (options.serverKeys && options.serverKeys.length > 0) {
      this.pinned = resolveServerKeys(options.serverKeys);
      this.pinned.catch(() => undefined); // reported on first attempt
    }
    setTimeout(() => void this.attempt(), 0);
  }

  /** Current state. */
  get state(): ClientState {
    return this._state;
  }

  /** Info of the current session (undefined while not connected). */
  get info(): ConnectedInfo | undefined {
    return this._state === "open" ? this._info : undefined;
  }

  /**
   * Subscribe. Lifecycle events: `connected` (info), `close` (CloseInfo),
   * `error` (SealcastError), `reconnecting` ({attempt, delayMs}),
   * `message` (event, data, meta) for every application message, `rejoined`
   * (JoinResult) when a reconnect joined the rooms again (per room with history:
   * `recovered` tells whether every missed message was delivered, before this
   * event). Any other name subscribes to application messages with that event
   * name: fn(data, event, meta). `meta` ({room, offset, epoch}) is set for
   * messages of rooms with history.
   */
  on(event: "connected", fn: (info: ConnectedInfo) => void): this;
  on(event: "close", fn: (info: CloseInfo) => void): this;
  on(event: "error", fn: (err: SealcastError) => void): this;
  on(event: "reconnecting", fn: (info: { attempt: number; delayMs: number }) => void): this;
  on(event: "message", fn: (event: string, data: unknown, meta?: MessageMeta) => void): this;
  on(event: "rejoined", fn: (result: JoinResult) => void): this;
  on(event: "member_joined" | "member_left", fn: (data: MemberEvent, event: string) => void): this;
  on(event: string, fn: (data: unknown, event: string, meta?: MessageMeta) => void): this;
  on(event: string, fn: Listener): this {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return this;
  }

  off(event: string, fn: Listener): this {
    this.listeners.get(event)?.delete(fn);
    return this;
  }

  /** Resolves on the next (or current) `connected`; rejects if the client closes for good. */
  ready(): Promise<ConnectedInfo> {
    if (this._state === "open" && this._info) return Promise.resolve(this._info);
    if (this._state === "closed") return Promise.reject(new SealcastError("NOT_CONNECTED", "client is closed"));
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  /** Send a custom event. Queued while (re)connecting; rejects once the client is closed. */
  send(event: string, data?: unknown): Promise<void> {
    if (typeof event !== "string" || event.length === 0 || NOT_SENDABLE.has(event)) {
      return Promise.reject(new SealcastError("CONFIG", "event name not allowed"));
    }
    const msg: InnerMessage = data === undefined ? { event } : { event, data };
    return this.enqueue(msg);
  }

  /**
   * Publish to a room: `{"event":"publish","data":{"room","event","data"},"id"}`. Resolves with the server's
   * `ack` (in a room with history: the message's `offset` and `epoch`); rejects with the server's error
   * (`SERVER_ERROR`), or `NOT_CONNECTED` if the session ended first. Pass the same `id` (at most 64 bytes) to
   * retry: the server delivers a message once per user, room and id within its history TTL.
   */
  publish(room: string, event: string, data?: unknown, options: { id?: string } = {}): Promise<Ack> {
    const id = options.id ?? `p${++this.publishIds}`;
    if (typeof id !== "string" || id.length === 0 || new TextEncoder().encode(id).length > 64) {
      return Promise.reject(new SealcastError("CONFIG", "publish id must be 1 to 64 bytes"));
    }
    return new Promise<Ack>((resolve, reject) => {
      const msg: InnerMessage = { event: "publish", data: { room, event, data: data ?? null }, id };
      this.enqueue(msg, (a) => a.publishes.set(id, { resolve, reject })).catch(reject);
    });
  }

  /**
   * Join rooms; remembered and re-joined after a reconnect (recovering missed messages in rooms with history).
   * Resolves with the server's answer: the rooms joined and those refused, with the reason.
   */
  join(rooms: string | string[], options: { recover?: Record<string, StreamPosition> } = {}): Promise<JoinResult> {
    const list = Array.isArray(rooms) ? rooms : [rooms];
    for (const r of list) this.rooms.add(r);
    // `recover` asks for the messages after a position (e.g. to show a room's recent history on joining).
    const data = options.recover ? { rooms: list, recover: options.recover } : { rooms: list };
    return new Promise<JoinResult>((resolve, reject) => {
      this.enqueue({ event: "join", data }, (a) => a.joins.push({ resolve, reject })).catch(reject);
    });
  }

  /**
   * Who is in a room the client has joined (the room must keep presence: the server's `presence.rooms`).
   * Resolves with the member list (at most the server's `presence.max_members`) and exact `clients` / `users`
   * counts; rejects with `SERVER_ERROR` (`Not a member of room`, `Presence not enabled for room`, `Presence
   * unavailable`), or `NOT_CONNECTED` if the session ended first. Listen to `member_joined` / `member_left` to
   * keep the list current.
   */
  presence(room: string): Promise<Presence> {
    return new Promise<Presence>((resolve, reject) => {
      const msg: InnerMessage = { event: "presence", data: { room } };
      this.enqueue(msg, (a) => a.presences.push({ resolve, reject })).catch(reject);
    });
  }

  /** Leave rooms. */
  leave(rooms: string | string[]): Promise<void> {
    const list = Array.isArray(rooms) ? rooms : [rooms];
    for (const r of list) {
      this.rooms.delete(r);
      this.positions.delete(r);
    }
    return this.enqueue({ event: "leave", data: { rooms: list } });
  }

  /** The last position received in a joined room with history (what a reconnect recovers from). */
  position(room: string): StreamPosition | undefined {
    const p = this.positions.get(room);
    return p ? { ...p } : undefined;
  }

  /** Force an outbound key update now (encrypted sessions). */
  async updateKeys(): Promise<void> {
    const a = this.cur;
    if (!a || a.phase !== "open" || !a.session) throw new SealcastError("NOT_CONNECTED", "not connected");
    const session = a.session;
    await this.write(a, async () => [envelopeFrame(await session.sealer.updateKeys())]);
  }

  /** Close for good (no reconnect). */
  close(code: number = CloseCode.Normal): void {
    if (this._state === "closed") return;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const a = this.cur;
    if (a && a.phase !== "done") {
      this.finishAttempt(a, code, undefined, false);
    } else {
      this.finalClose({ code, reason: closeReason(code), willReconnect: false });
    }
  }

  // ------------------------------------------------------------ internals

  private emit(event: string, ...args: unknown[]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  /**
   * Sends now or queues until connected. `onSent` runs, in order, when the message goes out on a session (the
   * place to wait for its answer on that session).
   */
  private enqueue(msg: InnerMessage, onSent?: (a: Attempt) => void): Promise<void> {
    if (this._state === "closed") return Promise.reject(new SealcastError("NOT_CONNECTED", "client is closed"));
    const a = this.cur;
    if (this._state === "open" && a && a.phase === "open" && this.queue.length === 0) {
      onSent?.(a);
      return this.sendNow(a, msg);
    }
    if (this.queue.length >= (this.opts.maxQueue ?? 1000)) {
      return Promise.reject(new SealcastError("NOT_CONNECTED", "send queue full"));
    }
    return new Promise((resolve, reject) => this.queue.push({ msg, resolve, reject, onSent }));
  }

  private sendNow(a: Attempt, msg: InnerMessage): Promise<void> {
    const session = a.session;
    if (session) {
      return this.write(a, async () => (await session.sealer.seal(msg)).map(envelopeFrame));
    }
    return this.write(a, async () => [JSON.stringify(msg)]);
  }

  /** Serialize producing and writing frames for one attempt (seq order == wire order). */
  private write(a: Attempt, produce: () => Promise<string[]>): Promise<void> {
    const p = a.outbound.then(async () => {
      if (a.phase !== "open") throw new SealcastError("NOT_CONNECTED", "not connected");
      let frames: string[];
      try {
        frames = await produce();
      } catch (e) {
        const err = e instanceof SealcastError ? e : new SealcastError("PROTOCOL", "failed to seal record");
        this.fail(a, err);
        throw err;
      }
      if (a.phase !== "open" || a.ws.readyState !== OPEN) throw new SealcastError("NOT_CONNECTED", "not connected");
      for (const f of frames) a.ws.send(f);
    });
    a.outbound = p.catch(() => undefined);
    return p;
  }

  private async keysForAttempt(): Promise<ResolvedServerKey[]> {
    if (this.pinned) return this.pinned;
    const f = this.opts.fetch ?? (globalThis as { fetch?: ConnectOptions["fetch"] }).fetch;
    if (!f || !this.opts.wellKnownUrl) throw new SealcastError("CONFIG", "fetch is not available", { fatal: true });
    let body: unknown;
    try {
      const res = await f(this.opts.wellKnownUrl, { cache: "no-store", credentials: "omit" });
      if (!res.ok) throw new Error("status");
      body = await res.json();
    } catch {
      throw new SealcastError("PROTOCOL", "could not fetch server keys");
    }
    const b = body as { protocol?: unknown; keys?: unknown };
    if (!b || b.protocol !== "wsenc/1" || !Array.isArray(b.keys)) {
      throw new SealcastError("PROTOCOL", "unexpected well-known document", { fatal: true });
    }
    return resolveServerKeys(b.keys as ServerKey[]);
  }

  private async attempt(): Promise<void> {
    if (this._state === "closed") return;
    let keys: ResolvedServerKey[] | undefined;
    let ephemeral: EphemeralKeyPair | undefined;
    try {
      if (this.encrypt) {
        keys = await this.keysForAttempt();
        ephemeral = await generateEphemeral();
      }
      if (this.opts.getToken && (this.needFreshToken || this.token === undefined || this.expiresSoon(this.token))) {
        this.token = await this.fetchToken();
        this.needFreshToken = false;
      }
    } catch (e) {
      const err = e instanceof SealcastError ? e : new SealcastError("PROTOCOL", "connection setup failed");
      this.emit("error", err);
      this.afterClose({ code: CloseCode.Abnormal, reason: closeReason(CloseCode.Abnormal), willReconnect: false, error: err });
      return;
    }
    if ((this._state as ClientState) === "closed") return;
    let ws: WebSocketLike;
    try {
      ws = new this.WS(this.opts.url);
    } catch {
      const err = new SealcastError("CONFIG", "invalid WebSocket URL", { fatal: true });
      this.emit("error", err);
      this.afterClose({ code: CloseCode.Abnormal, reason: closeReason(CloseCode.Abnormal), willReconnect: false, error: err });
      return;
    }
    const a: Attempt = {
      ws,
      phase: "opening",
      inbound: Promise.resolve(),
      outbound: Promise.resolve(),
      timers: [],
      joins: [],
      publishes: new Map(),
      presences: [],
    };
    this.cur = a;
    try {
      ws.binaryType = "arraybuffer";
    } catch {
      /* ignore */
    }
    const hsTimeout = this.opts.handshakeTimeoutMs ?? 15000;
    a.timers.push(
      setTimeout(() => {
        if (a.phase === "opening" || a.phase === "handshake") {
          this.fail(a, new SealcastError("PROTOCOL", "handshake timeout", { closeCode: CloseCode.AuthenticationTimeout }));
        }
      }, hsTimeout),
    );
    ws.onopen = () => {
      if (a.phase !== "opening") return;
      a.phase = "handshake";
      const data: Record<string, unknown> = { ...(this.opts.auth ?? {}) };
      if (this.token !== undefined) data["token"] = this.token;
      if (ephemeral && keys) {
        Object.assign(data, authenticateCrypto(ephemeral, keys[0]));
        if (this.opts.roomKeys !== false) {
          data[ROOM_KEYS_FIELD] =
            this.opts.roomKeyBatches === false ? 1 : this.opts.roomKeyBinary === false ? ROOM_KEYS_BATCHED : ROOM_KEYS_BINARY;
        }
      }
      try {
        ws.send(JSON.stringify({ event: "authenticate", data }));
      } catch {
        this.fail(a, new SealcastError("PROTOCOL", "send failed"));
      }
    };
    ws.onmessage = (ev) => {
      const raw = ev.data;
      a.inbound = a.inbound.then(() => this.onFrame(a, raw, keys, ephemeral)).catch((e) => {
        const err = e instanceof SealcastError ? e : new SealcastError("PROTOCOL", "message handling failed");
        this.fail(a, err);
      });
    };
    ws.onerror = () => {
      /* a close event follows */
    };
    ws.onclose = (ev) => {
      if (a.phase === "done") return;
      const code = typeof ev?.code === "number" ? ev.code : CloseCode.Abnormal;
      this.finishAttempt(a, code, undefined, true);
    };
  }

  private async onFrame(
    a: Attempt,
    raw: unknown,
    keys: ResolvedServerKey[] | undefined,
    ephemeral: EphemeralKeyPair | undefined,
  ): Promise<void> {
    if (a.phase === "done") return;
    if (a.phase === "open") {
      if (a.session) {
        // A binary frame is a binary batched group record (§11.5); on a session without it the opener refuses (4005).
        const bin =
          raw instanceof ArrayBuffer
            ? new Uint8Array(raw)
            : ArrayBuffer.isView(raw)
              ? Uint8Array.from(new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength))
              : null;
        const msgs = bin !== null ? await a.session.opener.openBinary(bin) : await a.session.opener.openFrameAll(raw);
        for (const msg of msgs) this.dispatch(a, msg);
        return;
      }
      if (typeof raw !== "string") return; // plaintext session: ignore binary frames
      let msg: unknown;
      try {
        msg = JSON.parse(raw);
      } catch {
        return;
      }
      if (msg && typeof msg === "object" && typeof (msg as InnerMessage).event === "string") this.dispatch(a, msg as InnerMessage);
      return;
    }
    if (a.phase !== "handshake") {
      throw new SealcastError("PROTOCOL", "unexpected frame before open", { closeCode: CloseCode.ProtocolError });
    }
    // Handshake phase: the only plaintext frames are `connected` (or a server error before closing).
    let msg: { event?: unknown; data?: unknown };
    try {
      if (typeof raw !== "string") throw new Error();
      msg = JSON.parse(raw);
      if (!msg || typeof msg !== "object" || Array.isArray(msg)) throw new Error();
    } catch {
      throw new SealcastError("PROTOCOL", "malformed handshake message", { closeCode: CloseCode.ProtocolError });
    }
    if (msg.event === "error") {
      this.emit("error", serverError(msg.data));
      return;
    }
    if (msg.event !== "connected" || !msg.data || typeof msg.data !== "object") {
      throw new SealcastError("PROTOCOL", "unexpected handshake message", { closeCode: CloseCode.ProtocolError });
    }
    const d = msg.data as Record<string, unknown>;
    let info: ConnectedInfo;
    if (this.encrypt) {
      // Never falls back: clientHandshake rejects a connected without crypto fields or with v != 1.
      const session = await clientHandshake(ephemeral!, keys!, d, {
        maxRecordsPerEpoch: this.opts.maxRecordsPerEpoch,
        padBucket: this.opts.padBucket,
      });
      if (a.phase !== "handshake") {
        session.destroy();
        return;
      }
      // Group records only when this client asked and the server answered (§11.1).
      if (this.opts.roomKeys !== false && d[ROOM_KEYS_FIELD] === 1) session.opener.enableRoomKeys();
      if (this.opts.roomKeys !== false && this.opts.roomKeyBatches !== false && d[ROOM_KEYS_FIELD] === ROOM_KEYS_BATCHED) {
        session.opener.enableRoomKeyBatches();
      }
      if (
        this.opts.roomKeys !== false &&
        this.opts.roomKeyBatches !== false &&
        this.opts.roomKeyBinary !== false &&
        d[ROOM_KEYS_FIELD] === ROOM_KEYS_BINARY
      ) {
        session.opener.enableRoomKeyBinary();
      }
      a.session = session;
      info = { id: session.connId, userId: session.userId, time: String(d["time"] ?? ""), encrypted: true, kid: session.kid };
    } else {
      if (typeof d["id"] !== "string") {
        throw new SealcastError("PROTOCOL", "malformed connected message", { closeCode: CloseCode.ProtocolError });
      }
      info = { id: d["id"], userId: String(d["userId"] ?? ""), time: String(d["time"] ?? ""), encrypted: false };
    }
    for (const t of a.timers) clearTimeout(t);
    a.timers = [];
    a.phase = "open";
    this._state = "open";
    this._info = info;
    // After a fresh-token retry the backoff keeps growing: a getToken that keeps handing out a token about to
    // expire (the server accepts it within its leeway, then closes 1008 at exp) must not reconnect at full speed.
    if (!this.retriedWithFreshToken) this.failures = 0;
    this.retriedWithFreshToken = false;
    // Re-join remembered rooms (except those a queued join asks for anyway), then flush the queue, in order.
    const queuedJoins = new Set(this.queue.flatMap((q) => (q.msg.event === "join" ? (q.msg.data as { rooms: string[] }).rooms : [])));
    const rejoin = [...this.rooms].filter((r) => !queuedJoins.has(r));
    if (rejoin.length > 0) {
      // Rooms with history recover what was missed since the last position received there.
      const recover: Record<string, StreamPosition> = {};
      for (const r of rejoin) {
        const p = this.positions.get(r);
        if (p) recover[r] = p;
      }
      const data = Object.keys(recover).length > 0 ? { rooms: rejoin, recover } : { rooms: rejoin };
      a.joins.push(undefined);
      void this.sendNow(a, { event: "join", data }).catch(() => undefined);
    }
    const q = this.queue.splice(0);
    for (const item of q) {
      item.onSent?.(a);
      this.sendNow(a, item.msg).then(item.resolve, item.reject);
    }
    const hb = this.opts.heartbeatMs ?? 30000;
    if (hb > 0) {
      a.heartbeat = setInterval(() => {
        if (a.phase === "open") void this.sendNow(a, { event: "heartbeat" }).catch(() => undefined);
      }, hb);
    }
    this.scheduleRefresh(a);
    this.emit("connected", info);
    for (const w of this.readyWaiters.splice(0)) w.resolve(info);
  }

  /** Whether a token with a readable `exp` is within the refresh margin of it (so a reconnect fetches anew). */
  private expiresSoon(token: string): boolean {
    const exp = tokenExpiry(token);
    return exp !== undefined && exp - Date.now() <= (this.opts.refreshMarginMs ?? 60000);
  }

  private async fetchToken(): Promise<string> {
    let t: unknown;
    try {
      t = await this.opts.getToken!();
    } catch {
      t = undefined;
    }
    if (typeof t !== "string" || t.length === 0) {
      throw new SealcastError("TOKEN_UNAVAILABLE", "getToken did not provide a token", { fatal: true });
    }
    return t;
  }

  /** Sends `refresh` with a fresh token before the current one's `exp`, so the server does not close 1008. */
  private scheduleRefresh(a: Attempt): void {
    if (!this.opts.getToken || this.token === undefined) return;
    const exp = tokenExpiry(this.token);
    if (exp === undefined) return;
    const remaining = exp - Date.now();
    if (remaining <= 0) return;
    const lead = Math.min(this.opts.refreshMarginMs ?? 60000, remaining / 2);
    // setTimeout fires at once beyond 2^31-1 ms; a token that far from expiry is simply refreshed early.
    a.timers.push(setTimeout(() => void this.refresh(a), Math.min(remaining - lead, 2 ** 31 - 1)));
  }

  private async refresh(a: Attempt): Promise<void> {
    if (a.phase !== "open") return;
    let token: string;
    try {
      token = await this.fetchToken();
    } catch (e) {
      // Not fatal here: the session runs until its expiry, whose 1008 then gets the one fresh-token retry.
      this.emit("error", e);
      return;
    }
    this.token = token;
    if (a.phase !== "open") return;
    // A refused refresh comes back as an `error` event and the old expiry stands; success is silent (the server
    // answers with a key update only).
    await this.sendNow(a, { event: "refresh", data: { ...(this.opts.auth ?? {}), token } }).catch(() => undefined);
    this.scheduleRefresh(a);
  }

  private dispatch(a: Attempt, msg: InnerMessage): void {
    const data = msg.data as Record<string, unknown> | null | undefined;
    if (msg.event === "error") {
      const id = data && typeof data === "object" ? data["id"] : undefined;
      const pending = typeof id === "string" ? a.publishes.get(id) : undefined;
      if (pending && typeof id === "string") {
        a.publishes.delete(id);
        pending.reject(serverError(msg.data));
        return;
      }
      const text = data && typeof data === "object" ? data["message"] : undefined;
      if (typeof text === "string" && PRESENCE_ERRORS.has(text) && a.presences.length > 0) {
        a.presences.shift()?.reject(serverError(msg.data));
        return;
      }
      this.emit("error", serverError(msg.data));
      return;
    }
    if (msg.event === "presence") {
      a.presences.shift()?.resolve(msg.data as unknown as Presence);
      return;
    }
    if (msg.event === "heartbeat" || msg.event === "key_update") return;
    if (msg.event === "ack") {
      const id = data && typeof data === "object" ? data["id"] : undefined;
      const pending = typeof id === "string" ? a.publishes.get(id) : undefined;
      if (pending && typeof id === "string") {
        a.publishes.delete(id);
        pending.resolve(data as unknown as Ack);
      }
      return;
    }
    if (msg.event === "joined") {
      const result = joinResult(msg.data);
      this.track(result);
      const pending = a.joins.shift();
      if (pending) pending.resolve(result);
      else this.emit("rejoined", result);
      return;
    }
    const m = msg;
    let meta: MessageMeta | undefined;
    if (typeof m.room === "string" && typeof m.offset === "number" && typeof m.epoch === "string") {
      meta = { room: m.room, offset: m.offset, epoch: m.epoch };
      if (this.rooms.has(m.room) && (this.positions.has(m.room) || this.positions.size < MAX_TRACKED_ROOMS)) {
        this.positions.set(m.room, { offset: m.offset, epoch: m.epoch });
      }
    }
    // `meta` only for messages of rooms with history: listeners of other messages get exactly what they did.
    const extra = meta ? [meta] : [];
    this.emit("message", msg.event, msg.data, ...extra);
    if (!LIFECYCLE.has(msg.event)) this.emit(msg.event, msg.data, msg.event, ...extra);
  }

  /** A join's answer: rooms not recovered continue from the position the server reports now. */
  private track(result: JoinResult): void {
    for (const r of result.rooms) {
      if (r.recovered === true || typeof r.offset !== "number" || typeof r.epoch !== "string") continue;
      if (this.positions.has(r.room) || this.positions.size < MAX_TRACKED_ROOMS) {
        this.positions.set(r.room, { offset: r.offset, epoch: r.epoch });
      }
    }
  }

  /** Client-side failure of an attempt: close the socket with the mapped code. */
  private fail(a: Attempt, err: SealcastError): void {
    if (a.phase === "done") return;
    this.emit("error", err);
    const code = err.closeCode ?? CloseCode.Normal;
    this.finishAttempt(a, code, err, !err.fatal);
  }

  private finishAttempt(a: Attempt, code: number, err: SealcastError | undefined, mayReconnect: boolean): void {
    if (a.phase === "done") return;
    a.phase = "done";
    for (const t of a.timers) clearTimeout(t);
    if (a.heartbeat) clearInterval(a.heartbeat);
    a.session?.destroy();
    a.session = undefined;
    // Unanswered joins and publishes of this session: the app may publish again with the same id.
    const gone = new SealcastError("NOT_CONNECTED", "the session ended before the server answered");
    for (const j of a.joins.splice(0)) j?.reject(gone);
    for (const p of a.publishes.values()) p.reject(gone);
    for (const p of a.presences.splice(0)) p.reject(gone);
    a.publishes.clear();
    const ws = a.ws;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onerror = () => undefined; // some implementations throw on an unhandled error event
    ws.onclose = null;
    try {
      if (ws.readyState <= OPEN) {
        // Browsers only allow 1000 and 3000–4999 from the client.
        const sendCode = code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000;
        ws.close(sendCode, closeReason(sendCode));
      }
    } catch {
      /* ignore */
    }
    if (this.cur === a) this.cur = undefined;
    const decision = reconnectPolicy(code, this.opts.getToken !== undefined, this.retriedWithFreshToken);
    const fatal = !mayReconnect || decision === "stop" || (err?.fatal ?? false);
    if (!fatal && decision === "fresh-token") {
      this.needFreshToken = true;
      this.retriedWithFreshToken = true;
    }
    const info: CloseInfo = { code, reason: closeReason(code), willReconnect: false };
    if (err) info.error = err;
    this.afterClose(info, fatal);
  }

  private afterClose(info: CloseInfo, fatal = info.error?.fatal ?? false): void {
    const rc = this.opts.reconnect;
    const canReconnect = rc !== false && !fatal && this._state !== "closed";
    if (!canReconnect) {
      this.finalClose(info);
      return;
    }
    this._state = "reconnecting";
    info.willReconnect = true;
    this.emit("close", info);
    this.failures++;
    const initial = (rc && rc.initialMs) ?? 500;
    const max = (rc && rc.maxMs) ?? 30000;
    const base = Math.min(max, initial * 2 ** Math.min(this.failures - 1, 30));
    const delayMs = Math.round(base / 2 + (Math.random() * base) / 2);
    this.emit("reconnecting", { attempt: this.failures, delayMs });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this._state !== "reconnecting") return;
      this._state = "connecting";
      void this.attempt();
    }, delayMs);
  }

  private finalClose(info: CloseInfo): void {
    if (this._state === "closed") return;
    this._state = "closed";
    this.emit("close", info);
    const err = new SealcastError("NOT_CONNECTED", "client is closed");
    for (const q of this.queue.splice(0)) q.reject(err);
    for (const w of this.readyWaiters.splice(0)) w.reject(info.error ?? err);
  }
}

/** The `exp` of a JWT-shaped token in milliseconds, read without verification (only to schedule the refresh). */
export function tokenExpiry(token: string): number | undefined {
  const parts = token.split(".");
  if (parts.length !== 3) return undefined;
  try {
    const claims: unknown = JSON.parse(new TextDecoder().decode(b64uDecode(parts[1]!)));
    const exp = claims && typeof claims === "object" ? (claims as { exp?: unknown }).exp : undefined;
    return typeof exp === "number" && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** A `joined` payload, checked field by field (anything malformed is left out). */
function joinResult(data: unknown): JoinResult {
  const d = data && typeof data === "object" ? (data as { rooms?: unknown; refused?: unknown }) : {};
  const rooms: JoinResult["rooms"] = [];
  for (const r of Array.isArray(d.rooms) ? d.rooms : []) {
    if (!r || typeof r.room !== "string") continue;
    const room: JoinResult["rooms"][number] = { room: r.room };
    if (typeof r.offset === "number") room.offset = r.offset;
    if (typeof r.epoch === "string") room.epoch = r.epoch;
    if (typeof r.recovered === "boolean") room.recovered = r.recovered;
    rooms.push(room);
  }
  const refused: JoinResult["refused"] = [];
  for (const r of Array.isArray(d.refused) ? d.refused : []) {
    if (r && typeof r.room === "string" && typeof r.reason === "string") refused.push({ room: r.room, reason: r.reason });
  }
  return { rooms, refused };
}

function serverError(data: unknown): SealcastError {
  const e = new SealcastError("SERVER_ERROR", "server error");
  const m = data && typeof data === "object" ? (data as { message?: unknown }).message : undefined;
  if (typeof m === "string") e.serverMessage = m;
  return e;
}
