/**
 * INTERNAL test hooks — `@sealcast/client/testing`. Not re-exported from the
 * package index and not part of the stable API.
 *
 * Exposes the wsenc/1 building blocks (so the Appendix A KAT can be checked
 * value by value with fixed ephemeral keys) and a minimal server-side
 * handshake (for fake servers in unit tests).
 */

import * as b64u from "./b64u.js";
import {
  DIR_C2S,
  DIR_S2C,
  DirectionState,
  RecordOpener,
  RecordSealer,
  bytesEqual,
  computeKid,
  concat,
  ecdh,
  importPublicKey,
  initialTrafficSecrets,
  transcriptHash,
  type Bytes,
  type EphemeralKeyPair,
  type SessionOptions,
} from "./wsenc.js";
import { SealcastError } from "./errors.js";

export * from "./wsenc.js";
export * as b64u from "./b64u.js";
export { parseStrict, JsonNumber } from "./json.js";

export interface ServerStaticKey {
  privateKey: CryptoKey;
  /** 65-byte SEC1 point. */
  publicKey: Bytes;
}

export interface ServerHandshakeParams extends SessionOptions {
  staticKeys: ServerStaticKey[];
  /** `data` of the client's `authenticate`. */
  authenticate: Record<string, unknown>;
  connId: string;
  userId: string;
  /** Fixed server ephemeral (KAT); fresh if absent. */
  ephemeral?: EphemeralKeyPair;
  /** Fixed salt (KAT); random if absent. */
  salt?: Bytes;
}

export interface ServerSession {
  th: Bytes;
  /** Crypto fields for `connected` (v, serverPublicKey, salt, kid, confirm). */
  connectedFields: { v: 1; serverPublicKey: string; salt: string; kid: string; confirm: string };
  sealer: RecordSealer; // s2c
  opener: RecordOpener; // c2s
}

/** Server side of §3 steps 3–5 (test quality: throws on any failure). */
export async function serverHandshake(p: ServerHandshakeParams): Promise<ServerSession> {
  const a = p.authenticate;
  if (a["v"] !== 1 || typeof a["publicKey"] !== "string") throw new SealcastError("PROTOCOL", "bad authenticate");
  const eC = b64u.decodeLen(a["publicKey"], 65);
  const eCKey = await importPublicKey(eC);
  let chosen = p.staticKeys[0]!;
  if (typeof a["kid"] === "string") {
    const want = b64u.decodeLen(a["kid"], 8);
    for (const k of p.staticKeys) if (bytesEqual(await computeKid(k.publicKey), want)) chosen = k;
  }
  const kid = await computeKid(chosen.publicKey);
  const eph =
    p.ephemeral ??
    (await (async () => {
      const kp = (await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, [
        "deriveBits",
      ])) as CryptoKeyPair;
      return { privateKey: kp.privateKey, publicKey: new Uint8Array(await crypto.subtle.exportKey("raw", kp.publicKey)) };
    })());
  const salt = p.salt ?? crypto.getRandomValues(new Uint8Array(32));
  const th = await transcriptHash({
    kid,
    serverStatic: chosen.publicKey,
    clientEphemeral: eC,
    serverEphemeral: eph.publicKey,
    salt,
    connId: p.connId,
    userId: p.userId,
  });
  const ee = await ecdh(eph.privateKey, eCKey);
  const es = await ecdh(chosen.privateKey, eCKey);
  const secrets = await initialTrafficSecrets(salt, concat(ee, es), th);
  const c2s = await DirectionState.create(DIR_C2S, th, secrets.c2s, p.maxInboundRecordsPerEpoch);
  const s2c = await DirectionState.create(DIR_S2C, th, secrets.s2c, p.maxRecordsPerEpoch);
  const sealer = new RecordSealer(s2c, p);
  const confirm = await sealer.sealConfirm();
  return {
    th,
    connectedFields: {
      v: 1,
      serverPublicKey: b64u.encode(eph.publicKey),
      salt: b64u.encode(salt),
      kid: b64u.encode(kid),
      confirm: b64u.encode(confirm),
    },
    sealer,
    opener: new RecordOpener(c2s),
  };
}

/** Generate a server static key pair (extractable, for tests). */
export async function generateServerStaticKey(): Promise<ServerStaticKey & { kid: string; publicKeyB64: string }> {
  const kp = (await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"])) as CryptoKeyPair;
  const pub = new Uint8Array(await crypto.subtle.exportKey("raw", kp.publicKey));
  return {
    privateKey: kp.privateKey,
    publicKey: pub,
    kid: b64u.encode(await computeKid(pub)),
    publicKeyB64: b64u.encode(pub),
  };
}
