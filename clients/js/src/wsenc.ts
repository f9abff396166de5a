/**
 * wsenc/1 — handshake key schedule and record layer on WebCrypto only
 * (`globalThis.crypto.subtle`). Implements docs/spec/wsenc1.md (in the sealcast
 * repository) §1–§8.
 *
 * Secrets (private keys, ikm, traffic secrets, AES keys, plaintext) are never
 * put into error messages or logs. Raw secret byte arrays are zeroed once they
 * are no longer needed; AES keys live only as non-extractable CryptoKeys.
 */

import * as b64u from "./b64u.js";
import { JsonNumber, isPlainObject, parseStrict, type StrictJson } from "./json.js";
import {
  SealcastError,
  decryptionFailed,
  keyExhausted,
  serverAuthFailed,
  CloseCode,
} from "./errors.js";

export type Bytes = Uint8Array<ArrayBuffer>;

const te = new TextEncoder();
const utf8 = (s: string): Bytes => te.encode(s) as Bytes;

/** `wsenc/1 NK P-256 HKDF-SHA256 AES-256-GCM` (40 bytes). */
export const PROTO: Bytes = utf8("wsenc/1 NK P-256 HKDF-SHA256 AES-256-GCM");
/** Spec maximum of records per direction and epoch, `key_update` included. */
export const MAX_RECORDS_PER_EPOCH = 2 ** 20;
/** SHOULD update keys after this long (one hour). */
export const DEFAULT_MAX_EPOCH_MS = 60 * 60 * 1000;
export const DIR_C2S = 0x01;
export const DIR_S2C = 0x02;
export type Direction = typeof DIR_C2S | typeof DIR_S2C;

const LABEL_C2S = utf8("wsenc/1 c2s");
const LABEL_S2C = utf8("wsenc/1 s2c");
const LABEL_KEY = utf8("wsenc/1 key");
const LABEL_IV = utf8("wsenc/1 iv");
const LABEL_UPD = utf8("wsenc/1 upd");
const LABEL_REC = utf8("wsenc/1 rec");
const LABEL_HDR = utf8("wsenc/1 hdr");
const LABEL_GRP = utf8("wsenc/1 grp");
const LABEL_DIG = utf8("wsenc/1 dig");
/** Rooms whose latest key a receiver keeps (§11.2); the least recently keyed room is forgotten first. */
export const MAX_ROOM_KEYS = 4096;
/** The `authenticate`/`connected` field that negotiates group records (§11.1). */
export const ROOM_KEYS_FIELD = "roomKeys";
/** The `roomKeys` value of batched group records (§11.4; implies 1). */
export const ROOM_KEYS_BATCHED = 2;
/** The `roomKeys` value of batched group records as binary frames (§11.5; implies 2 and 1). */
export const ROOM_KEYS_BINARY = 3;
/** Most bodies one batched group record may carry (§11.4). */
export const MAX_BATCH_BODIES = 256;
const ZERO_SALT: Bytes = new Uint8Array(32);
const MAX_SAFE_SEQ = Number.MAX_SAFE_INTEGER; // 2^53 - 1
const MAX_EPOCH = 0xffffffff;

/** Inner events a record may never carry (wsenc/1 §6 step 5). */
const FORBIDDEN_INNER = new Set(["authenticate", "connected", "encrypted"]);

function subtle(): SubtleCrypto {
  const s = (globalThis as { crypto?: Crypto }).crypto?.subtle;
  if (!s) throw new SealcastError("CONFIG", "WebCrypto (globalThis.crypto.subtle) is not available", { fatal: true });
  return s;
}

// ---------------------------------------------------------------- encodings

export function concat(...parts: Uint8Array[]): Bytes {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** `LP(x) = u16be(len(x)) ‖ x`. */
export function lp(x: Uint8Array): Bytes {
  if (x.length > 0xffff) throw new SealcastError("PROTOCOL", "transcript field too long");
  const out = new Uint8Array(2 + x.length);
  out[0] = x.length >>> 8;
  out[1] = x.length & 0xff;
  out.set(x, 2);
  return out;
}

export function u32be(n: number): Bytes {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n >>> 0, false);
  return out;
}

export function u64be(n: number): Bytes {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError("u64be: not a non-negative safe integer");
  const out = new Uint8Array(8);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, Math.floor(n / 2 ** 32), false);
  dv.setUint32(4, n >>> 0, false);
  return out;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

function wipe(...arrs: (Uint8Array | undefined | null)[]): void {
  for (const a of arrs) if (a) a.fill(0);
}

// ---------------------------------------------------------------- primitives

export async function sha256(data: Uint8Array<ArrayBuffer>): Promise<Bytes> {
  return new Uint8Array(await subtle().digest("SHA-256", data));
}

/** `HKDF(salt, ikm, info, L)`; an empty salt means 32 zero bytes (RFC 5869 §2.2). */
export async function hkdf(salt: Bytes, ikm: Bytes, info: Bytes, length: number): Promise<Bytes> {
  const s = subtle();
  const k = await s.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const bits = await s.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: salt.length === 0 ? ZERO_SALT : salt, info },
    k,
    length * 8,
  );
  return new Uint8Array(bits);
}

/**
 * Strictly validate and import a P-256 public key: exactly 65 bytes, first byte
 * 0x04 (SEC1 uncompressed), then WebCrypto rejects off-curve points.
 */
export async function importPublicKey(raw: Uint8Array<ArrayBuffer>): Promise<CryptoKey> {
  if (!(raw instanceof Uint8Array) || raw.length !== 65 || raw[0] !== 0x04) {
    throw new SealcastError("PROTOCOL", "invalid P-256 public key encoding");
  }
  try {
    return await subtle().importKey("raw", raw, { name: "ECDH", namedCurve: "P-256" }, true, []);
  } catch {
    throw new SealcastError("PROTOCOL", "invalid P-256 public key");
  }
}

export interface EphemeralKeyPair {
  privateKey: CryptoKey;
  /** 65-byte SEC1 uncompressed public point. */
  publicKey: Bytes;
}

/** Fresh ephemeral P-256 key pair; the private key is non-extractable. */
export async function generateEphemeral(): Promise<EphemeralKeyPair> {
  const s = subtle();
  const kp = (await s.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, ["deriveBits"])) as CryptoKeyPair;
  const pub = new Uint8Array(await s.exportKey("raw", kp.publicKey));
  return { privateKey: kp.privateKey, publicKey: pub };
}

/** ECDH: the 32-byte x-coordinate. */
export async function ecdh(privateKey: CryptoKey, publicKey: CryptoKey): Promise<Bytes> {
  return new Uint8Array(await subtle().deriveBits({ name: "ECDH", public: publicKey }, privateKey, 256));
}

/** `kid = SHA-256(S)[0..8]`. */
export async function computeKid(S: Bytes): Promise<Bytes> {
  return (await sha256(S)).slice(0, 8);
}

// ---------------------------------------------------------------- key schedule

export interface TranscriptInput {
  kid: Bytes;
  serverStatic: Bytes;
  clientEphemeral: Bytes;
  serverEphemeral: Bytes;
  salt: Bytes;
  connId: string;
  userId: string;
}

/** `th = SHA-256(LP(PROTO) ‖ LP(kid) ‖ LP(S) ‖ LP(e_c) ‖ LP(e_s) ‖ LP(salt) ‖ LP(connId) ‖ LP(userId))`. */
export async function transcriptHash(t: TranscriptInput): Promise<Bytes> {
  return sha256(
    concat(
      lp(PROTO),
      lp(t.kid),
      lp(t.serverStatic),
      lp(t.clientEphemeral),
      lp(t.serverEphemeral),
      lp(t.salt),
      lp(utf8(t.connId)),
      lp(utf8(t.userId)),
    ),
  );
}

/** `ts_c2s_0`, `ts_s2c_0` from `salt`, `ikm = ee ‖ es` and `th`. */
export async function initialTrafficSecrets(salt: Bytes, ikm: Bytes, th: Bytes): Promise<{ c2s: Bytes; s2c: Bytes }> {
  const c2s = await hkdf(salt, ikm, concat(LABEL_C2S, th), 32);
  const s2c = await hkdf(salt, ikm, concat(LABEL_S2C, th), 32);
  return { c2s, s2c };
}

/** Raw `key_d_n` bytes (for tests / KAT only; the record layer imports them at once). */
export async function deriveKeyBytes(ts: Bytes): Promise<Bytes> {
  return hkdf(ZERO_SALT, ts, LABEL_KEY, 32);
}
export async function deriveIv(ts: Bytes): Promise<Bytes> {
  return hkdf(ZERO_SALT, ts, LABEL_IV, 12);
}
/** `ts_{n+1} = HKDF("", ts_n, "wsenc/1 upd", 32)`. */
export async function nextTrafficSecret(ts: Bytes): Promise<Bytes> {
  return hkdf(ZERO_SALT, ts, LABEL_UPD, 32);
}

/** `nonce = iv XOR (0x00000000 ‖ u64be(seq))`. */
export function recordNonce(iv: Bytes, seq: number): Bytes {
  const out = iv.slice();
  const s = u64be(seq);
  for (let i = 0; i < 8; i++) out[4 + i]! ^= s[i]!;
  return out;
}

/** `AAD = "wsenc/1 rec" ‖ dir ‖ th ‖ u32be(epoch) ‖ u64be(seq)` (56 bytes). */
export function recordAad(dir: Direction, th: Bytes, epoch: number, seq: number): Bytes {
  return concat(LABEL_REC, Uint8Array.of(dir), th, u32be(epoch), u64be(seq));
}

/** `hdr_aad = "wsenc/1 hdr" ‖ dir ‖ th ‖ u32be(epoch) ‖ u64be(seq)`: a group record's header (§11.3). */
export function headerAad(dir: Direction, th: Bytes, epoch: number, seq: number): Bytes {
  return concat(LABEL_HDR, Uint8Array.of(dir), th, u32be(epoch), u64be(seq));
}

/** `body_aad = "wsenc/1 grp" ‖ u64be(epoch) ‖ LP(utf8(room))` (§11.3). */
export function bodyAad(epoch: number, room: string): Bytes {
  return concat(LABEL_GRP, u64be(epoch), lp(utf8(room)));
}

/** `digest = SHA-256("wsenc/1 dig" ‖ u64be(epoch) ‖ LP(utf8(room)) ‖ body)` (§11.3). */
export function bodyDigest(epoch: number, room: string, body: Bytes): Promise<Bytes> {
  return sha256(concat(LABEL_DIG, u64be(epoch), lp(utf8(room)), body));
}

/** A room key as a receiver holds it (§11.2): the AES key is a non-extractable CryptoKey. */
export interface RoomKey {
  room: string;
  epoch: number;
  key: CryptoKey;
}

/** Imports a room key's 32 raw bytes (non-extractable) and wipes them. */
export async function importRoomKey(room: string, epoch: number, raw: Bytes): Promise<RoomKey> {
  try {
    const key = await subtle().importKey("raw", raw, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
    return { room, epoch, key };
  } finally {
    wipe(raw);
  }
}

/** Opens a group record's shared body under `k`; the plaintext with its padding stripped, or null. */
export async function openBody(k: RoomKey, body: Bytes): Promise<Bytes | null> {
  if (body.length < 8 + 16) return null;
  const nonce = new Uint8Array(12);
  nonce.set(body.subarray(0, 8), 4);
  try {
    const pt = new Uint8Array(
      await subtle().decrypt(
        { name: "AES-GCM", iv: nonce, additionalData: bodyAad(k.epoch, k.room), tagLength: 128 },
        k.key,
        body.subarray(8),
      ),
    );
    let end = pt.length;
    while (end > 0 && pt[end - 1] === 0) end--;
    return pt.subarray(0, end);
  } catch {
    return null;
  }
}

/** The state of one direction: traffic secret, epoch, next seq, current AES key and IV. */
export class DirectionState {
  private ts: Bytes;
  private key!: CryptoKey;
  private iv!: Bytes;
  epoch = 0;
  seq: number;
  epochStartedAt: number;

  private constructor(
    readonly dir: Direction,
    readonly th: Bytes,
    ts: Bytes,
    readonly maxRecords: number,
    startSeq: number,
  ) {
    this.ts = ts;
    this.seq = startSeq;
    this.epochStartedAt = Date.now();
  }

  /**
   * Build the epoch-0 state from `ts_d_0` (the array is owned and wiped later).
   * `seq` starts at 0 for both directions; the s2c confirm consumes seq 0.
   */
  static async create(dir: Direction, th: Bytes, ts0: Bytes, maxRecords = MAX_RECORDS_PER_EPOCH): Promise<DirectionState> {
    if (!Number.isSafeInteger(maxRecords) || maxRecords < 2 || maxRecords > MAX_RECORDS_PER_EPOCH) {
      throw new SealcastError("CONFIG", "maxRecordsPerEpoch must be an integer in [2, 2^20]", { fatal: true });
    }
    const st = new DirectionState(dir, th, ts0, maxRecords, 0);
    await st.loadEpochKeys();
    return st;
  }

  private async loadEpochKeys(): Promise<void> {
    const keyBytes = await deriveKeyBytes(this.ts);
    try {
      this.key = await subtle().importKey("raw", keyBytes, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
    } finally {
      wipe(keyBytes);
    }
    this.iv = await deriveIv(this.ts);
  }

  /** Move to epoch n+1 (seq 0); erases `ts_n`. */
  async advanceEpoch(): Promise<void> {
    if (this.epoch >= MAX_EPOCH) throw keyExhausted();
    const next = await nextTrafficSecret(this.ts);
    wipe(this.ts);
    this.ts = next;
    this.epoch += 1;
    this.seq = 0;
    this.epochStartedAt = Date.now();
    await this.loadEpochKeys();
  }

  nonce(seq: number): Bytes {
    return recordNonce(this.iv, seq);
  }

  aad(seq: number): Bytes {
    return recordAad(this.dir, this.th, this.epoch, seq);
  }

  async encrypt(seq: number, plaintext: Bytes): Promise<Bytes> {
    const ct = await subtle().encrypt(
      { name: "AES-GCM", iv: this.nonce(seq), additionalData: this.aad(seq), tagLength: 128 },
      this.key,
      plaintext,
    );
    return new Uint8Array(ct);
  }

  /** Returns null on authentication failure. `header`: a group record's header (§11.3), another AAD label. */
  async decrypt(seq: number, ct: Bytes, header = false): Promise<Bytes | null> {
    const additionalData = header ? headerAad(this.dir, this.th, this.epoch, seq) : this.aad(seq);
    try {
      const pt = await subtle().decrypt(
        { name: "AES-GCM", iv: this.nonce(seq), additionalData, tagLength: 128 },
        this.key,
        ct,
      );
      return new Uint8Array(pt);
    } catch {
      return null;
    }
  }

  /** Forget the traffic secret (the connection is over). */
  destroy(): void {
    wipe(this.ts);
  }
}

// ---------------------------------------------------------------- records

/** The `data` of an `encrypted` envelope. */
export interface EnvelopeData {
  seq: number;
  iv: string;
  ct: string;
  /** A group record's shared body (§11), only on sessions that negotiated `roomKeys`. */
  body?: string;
  /** A batched group record's shared bodies (§11.4), only on sessions that negotiated `roomKeys: 2`. */
  bodies?: string[];
}

export interface InnerMessage {
  event: string;
  data?: unknown;
  /** A client `publish`'s id (its idempotency key). */
  id?: string;
  /** A message of a room with history: the room, its offset and the stream's epoch (inside the record). */
  room?: string;
  offset?: number;
  epoch?: string;
}

export function envelopeFrame(d: EnvelopeData): string {
  return JSON.stringify({ event: "encrypted", data: { seq: d.seq, iv: d.iv, ct: d.ct } });
}

const KEY_UPDATE_JSON = '{"event":"key_update","data":{}}';

export interface SealerOptions {
  /** Pad plaintexts with 0x00 up to a multiple of this many bytes (0/1 = off). */
  padBucket?: number;
  /** Update keys once an epoch is older than this (default one hour). */
  maxEpochMs?: number;
}

/**
 * Seals outbound records for one direction, in call order, inserting
 * `key_update` records as required (§7). All calls are serialized internally.
 */
export class RecordSealer {
  private tail: Promise<unknown> = Promise.resolve();
  private readonly padBucket: number;
  private readonly maxEpochMs: number;

  constructor(readonly state: DirectionState, opts: SealerOptions = {}) {
    this.padBucket = Math.max(1, Math.floor(opts.padBucket ?? 1));
    this.maxEpochMs = opts.maxEpochMs ?? DEFAULT_MAX_EPOCH_MS;
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn);
    this.tail = p.catch(() => undefined);
    return p;
  }

  /** Pad a plaintext to the configured bucket. */
  pad(pt: Bytes): Bytes {
    if (this.padBucket <= 1) return pt;
    const target = Math.max(this.padBucket, Math.ceil(pt.length / this.padBucket) * this.padBucket);
    if (target === pt.length) return pt;
    const out = new Uint8Array(target);
    out.set(pt);
    return out;
  }

  /** Low level: seal exactly one record at the current seq (no automatic key update). */
  async sealRecordRaw(plaintext: Bytes): Promise<EnvelopeData> {
    const st = this.state;
    const seq = st.seq;
    if (seq >= st.maxRecords || seq > MAX_SAFE_SEQ) throw keyExhausted();
    const ct = await st.encrypt(seq, plaintext);
    st.seq = seq + 1;
    return { seq, iv: b64u.encode(st.nonce(seq)), ct: b64u.encode(ct) };
  }

  private async sealKeyUpdateLocked(): Promise<EnvelopeData> {
    const env = await this.sealRecordRaw(this.pad(utf8(KEY_UPDATE_JSON)));
    await this.state.advanceEpoch();
    return env;
  }

  private needsUpdate(): boolean {
    const st = this.state;
    return st.seq >= st.maxRecords - 1 || Date.now() - st.epochStartedAt >= this.maxEpochMs;
  }

  /**
   * Seal one inner message. Returns one envelope, or two when a `key_update`
   * had to be sent first (send them in order).
   */
  seal(message: InnerMessage | string): Promise<EnvelopeData[]> {
    const text = typeof message === "string" ? message : JSON.stringify(message);
    return this.serialize(async () => {
      const out: EnvelopeData[] = [];
      if (this.needsUpdate()) out.push(await this.sealKeyUpdateLocked());
      const pt = this.pad(utf8(text));
      try {
        out.push(await this.sealRecordRaw(pt));
      } finally {
        wipe(pt);
      }
      return out;
    });
  }

  /** Send a `key_update` now (the last record of the current epoch). */
  updateKeys(): Promise<EnvelopeData> {
    return this.serialize(() => this.sealKeyUpdateLocked());
  }

  /** Server side: the `confirm` tag (s2c, epoch 0, seq 0, empty plaintext). */
  sealConfirm(): Promise<Bytes> {
    return this.serialize(async () => {
      const st = this.state;
      if (st.dir !== DIR_S2C || st.epoch !== 0 || st.seq !== 0) throw new SealcastError("PROTOCOL", "confirm out of order");
      const tag = await st.encrypt(0, new Uint8Array(0));
      st.seq = 1;
      return tag;
    });
  }
}

/** Validate the envelope `data` (§6 step 1). Throws 4005. */
export function checkEnvelopeData(d: StrictJson | undefined): EnvelopeData {
  if (!isPlainObject(d)) throw decryptionFailed();
  const keys = Object.keys(d);
  const group = keys.length === 4 && "body" in d;
  const batch = keys.length === 4 && "bodies" in d;
  if (keys.length !== 3 && !group && !batch) throw decryptionFailed();
  const { seq, iv, ct, body, bodies } = d as Record<string, StrictJson>;
  const n = integerLiteral(seq);
  if (n === null) throw decryptionFailed();
  if (typeof iv !== "string" || typeof ct !== "string") throw decryptionFailed();
  if (batch) {
    if (!Array.isArray(bodies) || bodies.length === 0 || bodies.length > MAX_BATCH_BODIES) throw decryptionFailed();
    if (!bodies.every((b) => typeof b === "string")) throw decryptionFailed();
    return { seq: n, iv, ct, bodies: bodies as string[] };
  }
  if (!group) return { seq: n, iv, ct };
  if (typeof body !== "string") throw decryptionFailed();
  return { seq: n, iv, ct, body };
}

/** A JSON integer literal `0 | [1-9][0-9]*` up to 2^53 − 1 (§6 step 1), else null. */
function integerLiteral(v: StrictJson | undefined): number | null {
  if (!(v instanceof JsonNumber) || !/^(0|[1-9][0-9]*)$/.test(v.raw)) return null;
  const n = Number(v.raw);
  return Number.isSafeInteger(n) ? n : null;
}

/**
 * Parse a whole inbound frame of an encrypted session. A frame that is not an
 * `encrypted` envelope is a downgrade attempt (4004); a malformed envelope is 4005.
 */
export function parseEncryptedFrame(text: unknown): EnvelopeData {
  const downgrade = () =>
    new SealcastError("DOWNGRADE", "unexpected plaintext frame on an encrypted session", {
      closeCode: CloseCode.EncryptionRequired,
    });
  if (typeof text !== "string") throw downgrade();
  let v: StrictJson;
  try {
    v = parseStrict(text);
  } catch {
    // Distinguish a malformed envelope from a non-envelope as far as we can.
    if (/^\s*\{\s*"event"\s*:\s*"encrypted"/.test(text)) throw decryptionFailed();
    throw downgrade();
  }
  if (!isPlainObject(v) || v["event"] !== "encrypted") throw downgrade();
  const keys = Object.keys(v);
  if (keys.length !== 2 || !("data" in v)) throw decryptionFailed();
  return checkEnvelopeData(v["data"]);
}

const td = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Opens inbound records for one direction (§6 receiver steps), in order. */
export class RecordOpener {
  private tail: Promise<unknown> = Promise.resolve();
  /** Group records (§11) accepted: the latest key per room, oldest first. Null unless enabled. */
  private rooms: Map<string, RoomKey> | null = null;
  /** Batched group records (§11.4) accepted, by `openFrameAll`/`openAll`. */
  private batches = false;
  /** Binary batched group records (§11.5) accepted, by `openBinary`. */
  private binary = false;
  constructor(readonly state: DirectionState) {}

  /** Accept `room_key` and group records (§11): the server answered `roomKeys: 1`. */
  enableRoomKeys(): void {
    this.rooms ??= new Map();
  }

  /** Accept batched group records too (§11.4): the server answered `roomKeys: 2`. Implies `enableRoomKeys`. */
  enableRoomKeyBatches(): void {
    this.enableRoomKeys();
    this.batches = true;
  }

  /** Accept batched group records as binary frames (§11.5): the server answered `roomKeys: 3`. Implies batches. */
  enableRoomKeyBinary(): void {
    this.enableRoomKeyBatches();
    this.binary = true;
  }

  /**
   * Open a binary frame: a binary batched group record (§11.5), `0x01 ‖ u64be(seq) ‖ u16be(k) ‖ hdr ‖
   * k × (u32be(len) ‖ body)`. Every message it carries, in order; any failure (or a session without §11.5) is 4005.
   */
  openBinary(frame: Bytes): Promise<InnerMessage[]> {
    return this.serialize(async () => this.openBinaryLocked(frame));
  }

  private async openBinaryLocked(frame: Bytes): Promise<InnerMessage[]> {
    const st = this.state;
    if (!this.binary || !(frame instanceof Uint8Array) || frame.length < 11 || frame[0] !== 0x01) {
      throw decryptionFailed();
    }
    const dv = new DataView(frame.buffer, frame.byteOffset, frame.length);
    const hi = dv.getUint32(1);
    const seq = hi * 2 ** 32 + dv.getUint32(5);
    const k = dv.getUint16(9);
    if (k < 1 || k > MAX_BATCH_BODIES) throw decryptionFailed();
    const hdrEnd = 11 + 40 * k + 16;
    if (frame.length < hdrEnd) throw decryptionFailed();
    const bodies: Bytes[] = [];
    let at = hdrEnd;
    for (let i = 0; i < k; i++) {
      if (frame.length - at < 4) throw decryptionFailed();
      const len = dv.getUint32(at);
      at += 4;
      if (len < 24 || frame.length - at < len) throw decryptionFailed();
      bodies.push(frame.subarray(at, at + len));
      at += len;
    }
    if (at !== frame.length) throw decryptionFailed();
    if (hi >= 2 ** 21 || seq >= st.maxRecords) throw keyExhausted();
    if (seq !== st.seq) throw decryptionFailed();
    const pt = await st.decrypt(seq, frame.slice(11, hdrEnd), true);
    if (pt === null) throw decryptionFailed();
    return this.openBatchLocked(seq, pt, bodies);
  }

  /** The latest key received for `room` (for tests). */
  roomKey(room: string): RoomKey | undefined {
    return this.rooms?.get(room);
  }

  /** Client side: verify the server's `confirm` (consumes s2c seq 0). */
  async verifyConfirm(confirm: Bytes): Promise<void> {
    const st = this.state;
    if (st.dir !== DIR_S2C || st.epoch !== 0 || st.seq !== 0 || confirm.length !== 16) throw serverAuthFailed();
    const pt = await st.decrypt(0, confirm);
    if (pt === null || pt.length !== 0) throw serverAuthFailed();
    st.seq = 1;
  }

  /**
   * Open a whole frame (string). Returns null for a consumed `key_update`. A batched group record (§11.4) carries
   * several messages, so this refuses it (4005): sessions that enabled batches use `openFrameAll`.
   */
  openFrame(text: unknown): Promise<InnerMessage | null> {
    return this.serialize(async () => single(await this.openLocked(parseEncryptedFrame(text), false)));
  }

  /** Open a whole frame: every message it carries, in order (none for a control record, several for a batch). */
  openFrameAll(text: unknown): Promise<InnerMessage[]> {
    return this.serialize(async () => this.openLocked(parseEncryptedFrame(text), this.batches));
  }

  /** Open the envelope `data` given as a strict-parsed or plain value (batches refused, as `openFrame`). */
  open(d: EnvelopeData): Promise<InnerMessage | null> {
    return this.serialize(async () => single(await this.openLocked(checkedData(d), false)));
  }

  /** `open` for every message the envelope carries (batches accepted when enabled). */
  openAll(d: EnvelopeData): Promise<InnerMessage[]> {
    return this.serialize(async () => this.openLocked(checkedData(d), this.batches));
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn);
    this.tail = p.catch(() => undefined);
    return p;
  }

  private async openLocked(d: EnvelopeData, batches: boolean): Promise<InnerMessage[]> {
    const st = this.state;
    if (d.body !== undefined && this.rooms === null) throw decryptionFailed();
    if (d.bodies !== undefined && (!batches || d.body !== undefined)) throw decryptionFailed();
    if (d.seq >= st.maxRecords) throw keyExhausted();
    if (d.seq !== st.seq) throw decryptionFailed();
    let iv: Bytes, ct: Bytes, body: Bytes | undefined, bodies: Bytes[] | undefined;
    try {
      iv = b64u.decode(d.iv);
      ct = b64u.decode(d.ct);
      if (d.body !== undefined) body = b64u.decode(d.body);
      if (d.bodies !== undefined) bodies = d.bodies.map((b) => b64u.decode(b));
    } catch {
      throw decryptionFailed();
    }
    if (!bytesEqual(iv, st.nonce(d.seq)) || ct.length < 16) throw decryptionFailed();
    const pt = await st.decrypt(d.seq, ct, body !== undefined || bodies !== undefined);
    if (pt === null) throw decryptionFailed();
    if (body !== undefined) return [await this.openGroupLocked(d.seq, pt, body)];
    if (bodies !== undefined) return this.openBatchLocked(d.seq, pt, bodies);
    let end = pt.length;
    while (end > 0 && pt[end - 1] === 0) end--;
    if (end === 0) throw decryptionFailed();
    let msg: unknown, text: string;
    try {
      text = td.decode(pt.subarray(0, end));
      msg = JSON.parse(text);
    } catch {
      throw decryptionFailed();
    } finally {
      wipe(pt);
    }
    if (!isPlainObject(msg) || typeof msg["event"] !== "string" || FORBIDDEN_INNER.has(msg["event"])) {
      throw decryptionFailed();
    }
    st.seq = d.seq + 1;
    if (msg["event"] === "key_update") {
      await st.advanceEpoch();
      return [];
    }
    if (msg["event"] === "room_key" && this.rooms !== null) {
      await this.storeRoomKey(text);
      return [];
    }
    return [innerMessage(msg)];
  }

  /** §11.3 steps 4–8 for a header that opened: the key, the digest, the body. */
  private async openGroupLocked(seq: number, header: Bytes, body: Bytes): Promise<InnerMessage> {
    const st = this.state;
    if (header.length !== 40) throw decryptionFailed();
    const msg = await this.openShared(header, body);
    // The last slot of an epoch is reserved for key_update.
    if (seq + 1 >= st.maxRecords) throw keyExhausted();
    st.seq = seq + 1;
    return msg;
  }

  /** §11.4 steps 4–7: one 40-byte header per body, in order; every body checked before any is returned. */
  private async openBatchLocked(seq: number, header: Bytes, bodies: Bytes[]): Promise<InnerMessage[]> {
    const st = this.state;
    if (header.length !== 40 * bodies.length) throw decryptionFailed();
    const out: InnerMessage[] = [];
    for (let i = 0; i < bodies.length; i++) {
      out.push(await this.openShared(header.subarray(40 * i, 40 * (i + 1)), bodies[i]!));
    }
    if (seq + 1 >= st.maxRecords) throw keyExhausted();
    st.seq = seq + 1;
    return out;
  }

  /** §11.3 steps 5–7 for one body named by a 40-byte header `u64be(epoch) ‖ digest`. */
  private async openShared(header: Bytes, body: Bytes): Promise<InnerMessage> {
    const dv = new DataView(header.buffer, header.byteOffset, 8);
    const epoch = dv.getUint32(0) * 2 ** 32 + dv.getUint32(4);
    let k: RoomKey | undefined;
    for (const candidate of this.rooms!.values()) if (candidate.epoch === epoch) k = candidate;
    if (k === undefined) throw decryptionFailed();
    if (!bytesEqual(await bodyDigest(epoch, k.room, body), header.subarray(8))) throw decryptionFailed();
    const pt = await openBody(k, body);
    if (pt === null || pt.length === 0) throw decryptionFailed();
    let msg: unknown;
    try {
      msg = JSON.parse(td.decode(pt));
    } catch {
      throw decryptionFailed();
    } finally {
      wipe(pt);
    }
    if (
      !isPlainObject(msg) ||
      typeof msg["event"] !== "string" ||
      FORBIDDEN_INNER.has(msg["event"]) ||
      msg["event"] === "key_update" ||
      msg["event"] === "room_key"
    ) {
      throw decryptionFailed();
    }
    return innerMessage(msg);
  }

  /** A `room_key` record (§11.2): exact schema, then the room's current key. */
  private async storeRoomKey(text: string): Promise<void> {
    let v: StrictJson;
    try {
      v = parseStrict(text);
    } catch {
      throw decryptionFailed();
    }
    if (!isPlainObject(v) || Object.keys(v).length !== 2) throw decryptionFailed();
    const d = v["data"];
    if (!isPlainObject(d) || Object.keys(d).length !== 3) throw decryptionFailed();
    const { room, epoch, key } = d as Record<string, StrictJson>;
    const n = integerLiteral(epoch);
    if (typeof room !== "string" || room.length === 0 || utf8(room).length > 0xffff) throw decryptionFailed();
    if (n === null || typeof key !== "string") throw decryptionFailed();
    let raw: Bytes;
    try {
      raw = b64u.decodeLen(key, 32);
    } catch {
      throw decryptionFailed();
    }
    const k = await importRoomKey(room, n, raw);
    const rooms = this.rooms!;
    rooms.delete(room);
    rooms.set(room, k);
    if (rooms.size > MAX_ROOM_KEYS) {
      const oldest = rooms.keys().next().value;
      if (oldest !== undefined) rooms.delete(oldest);
    }
  }
}

/** `openFrame`'s answer: the one message, or null for a control record; a batch is refused (4005). */
function single(all: InnerMessage[]): InnerMessage | null {
  if (all.length > 1) throw decryptionFailed();
  return all[0] ?? null;
}

/** An envelope `data` given by the caller: the basic shape checked (4005 otherwise). */
function checkedData(d: EnvelopeData): EnvelopeData {
  if (!Number.isSafeInteger(d.seq) || d.seq < 0 || typeof d.iv !== "string" || typeof d.ct !== "string") {
    throw decryptionFailed();
  }
  return d;
}

/** The application message of an opened record, keeping protocol fields only with their expected types. */
function innerMessage(msg: Record<string, unknown>): InnerMessage {
  const out: InnerMessage = { event: msg["event"] as string };
  if ("data" in msg) out.data = msg["data"];
  if (typeof msg["id"] === "string") out.id = msg["id"];
  if (typeof msg["room"] === "string") out.room = msg["room"];
  if (typeof msg["offset"] === "number") out.offset = msg["offset"];
  if (typeof msg["epoch"] === "string") out.epoch = msg["epoch"];
  return out;
}

// ---------------------------------------------------------------- handshake

/** A pinned server static key as configured or served by `/.well-known/sealcast.json`. */
export interface ServerKey {
  /** base64url 8-byte kid = SHA-256(publicKey)[0..8]. */
  kid: string;
  /** base64url 65-byte uncompressed P-256 point. */
  publicKey: string;
}

export interface ResolvedServerKey {
  kidB64: string;
  kid: Bytes;
  S: Bytes;
  key: CryptoKey;
}

/** Decode and validate pinned keys; `kid` must equal SHA-256(publicKey)[0..8]. */
export async function resolveServerKeys(keys: readonly ServerKey[]): Promise<ResolvedServerKey[]> {
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new SealcastError("CONFIG", "serverKeys must be a non-empty array", { fatal: true });
  }
  const out: ResolvedServerKey[] = [];
  for (const k of keys) {
    let kid: Bytes, S: Bytes, key: CryptoKey;
    try {
      kid = b64u.decodeLen(k.kid, 8);
      S = b64u.decodeLen(k.publicKey, 65);
      key = await importPublicKey(S);
    } catch {
      throw new SealcastError("CONFIG", "invalid server key", { fatal: true });
    }
    if (!bytesEqual(kid, await computeKid(S))) {
      throw new SealcastError("CONFIG", "server key kid does not match its public key", { fatal: true });
    }
    out.push({ kidB64: b64u.encode(kid), kid, S, key });
  }
  return out;
}

/** The authenticate payload's crypto fields. */
export function authenticateCrypto(ephemeral: EphemeralKeyPair, preferred?: ResolvedServerKey): Record<string, unknown> {
  const d: Record<string, unknown> = { v: 1, publicKey: b64u.encode(ephemeral.publicKey) };
  if (preferred) d["kid"] = preferred.kidB64;
  return d;
}

export interface Session {
  th: Bytes;
  kid: string;
  connId: string;
  userId: string;
  /** Outbound (c2s for a client). */
  sealer: RecordSealer;
  /** Inbound (s2c for a client). */
  opener: RecordOpener;
  destroy(): void;
}

export interface SessionOptions extends SealerOptions {
  /** Records per epoch for the sender side (default 2^20). */
  maxRecordsPerEpoch?: number;
  /** Records per epoch accepted on the receiving side (default 2^20). */
  maxInboundRecordsPerEpoch?: number;
}

function downgradeError(): SealcastError {
  return new SealcastError("DOWNGRADE", "server did not negotiate wsenc/1", {
    closeCode: CloseCode.EncryptionRequired,
    fatal: true,
  });
}

/**
 * Client side of §3: validate the server's `connected` data, compute §4–§5,
 * verify `confirm`. On any failure throws (nothing must be sent encrypted).
 */
export async function clientHandshake(
  ephemeral: EphemeralKeyPair,
  serverKeys: readonly ResolvedServerKey[],
  connected: unknown,
  opts: SessionOptions = {},
): Promise<Session> {
  if (!isPlainObject(connected)) throw downgradeError();
  const { id, userId, v, serverPublicKey, salt, kid, confirm } = connected;
  // 1. every field present, v == 1 — no plaintext fallback.
  if (
    v !== 1 ||
    typeof serverPublicKey !== "string" ||
    typeof salt !== "string" ||
    typeof kid !== "string" ||
    typeof confirm !== "string"
  ) {
    throw downgradeError();
  }
  if (typeof id !== "string" || typeof userId !== "string") {
    throw new SealcastError("PROTOCOL", "malformed connected message", { closeCode: CloseCode.ProtocolError, fatal: true });
  }
  let eS: Bytes, saltB: Bytes, kidB: Bytes, confirmB: Bytes;
  try {
    eS = b64u.decodeLen(serverPublicKey, 65);
    saltB = b64u.decodeLen(salt, 32);
    kidB = b64u.decodeLen(kid, 8);
    confirmB = b64u.decodeLen(confirm, 16);
  } catch {
    throw serverAuthFailed();
  }
  // 2. kid pinned.
  const pinned = serverKeys.find((k) => bytesEqual(k.kid, kidB));
  if (!pinned) throw serverAuthFailed();
  // 3. validate e_s.
  let eSKey: CryptoKey;
  try {
    eSKey = await importPublicKey(eS);
  } catch {
    throw serverAuthFailed();
  }
  // 4. §4–§5.
  const th = await transcriptHash({
    kid: pinned.kid,
    serverStatic: pinned.S,
    clientEphemeral: ephemeral.publicKey,
    serverEphemeral: eS,
    salt: saltB,
    connId: id,
    userId,
  });
  let ee: Bytes | undefined, es: Bytes | undefined, ikm: Bytes | undefined;
  let secrets: { c2s: Bytes; s2c: Bytes };
  try {
    ee = await ecdh(ephemeral.privateKey, eSKey);
    es = await ecdh(ephemeral.privateKey, pinned.key);
    ikm = concat(ee, es);
    secrets = await initialTrafficSecrets(saltB, ikm, th);
  } catch (e) {
    if (e instanceof SealcastError) throw e;
    throw serverAuthFailed();
  } finally {
    wipe(ee, es, ikm);
  }
  const c2s = await DirectionState.create(DIR_C2S, th, secrets.c2s, opts.maxRecordsPerEpoch);
  const s2c = await DirectionState.create(DIR_S2C, th, secrets.s2c, opts.maxInboundRecordsPerEpoch);
  const opener = new RecordOpener(s2c);
  // 5. verify confirm.
  try {
    await opener.verifyConfirm(confirmB);
  } catch (e) {
    c2s.destroy();
    s2c.destroy();
    throw e;
  }
  const sealer = new RecordSealer(c2s, opts);
  return {
    th,
    kid: pinned.kidB64,
    connId: id,
    userId,
    sealer,
    opener,
    destroy() {
      c2s.destroy();
      s2c.destroy();
    },
  };
}
