// wsenc/1 §11 group records: the Appendix D known-answer test (computed independently: Python `cryptography`,
// Rust), its negative checks, and a live room against the real binary.
import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { WebSocket } from "ws";
import { connect as realConnect } from "../dist/index.js";
import * as T from "../dist/testing.js";
import { startServer, mintToken, skipWithoutBinary } from "./support/sealcast.mjs";

const hex = (b) => Buffer.from(b).toString("hex");
const unhex = (h) => new Uint8Array(Buffer.from(h, "hex"));
const utf8 = (s) => new TextEncoder().encode(s);
const { b64u } = T;

// Appendix A's session.
const TH = "bb94d819231ba73e0253cbfc053fa0aa891bfcd644518f74749afccd6856e315";
const TS_S2C_0 = "3a1702a53281678479263fad734718df93866c1be2be2bfb32203bd7210fba4e";
// Appendix D.
const D = {
  room: "lobby",
  epoch: 7,
  counter: 3,
  K_r: "3ac8a054de97b4e5ad340d08faf35682872484f2571d58999f3f653a2413f291",
  message: '{"event":"message","data":{"text":"hi"}}',
  body_aad: "7773656e632f3120677270000000000000000700056c6f626279",
  body: "00000000000000033b3537fc7594dcd00b9776181c89ae981535e03768d72d65c96a48e15d2621012fcafc32e9364800a68cfa61ea186e8fff5ebe3a073dda21",
  digest: "8e8f1123215ec85553abb1e38ae8dbd674f554085cd3f01ef4ef0cf948c75652",
  room_key_pt: '{"event":"room_key","data":{"room":"lobby","epoch":7,"key":"OsigVN6XtOWtNA0I-vNWgockhPJXHViZnz9lOiQT8pE"}}',
  room_key_ct:
    "bd849c0bbac57e8af14a23fa9bfdedaaab1445badfffa67621078535ebbae307f4fa90f3b4cf961ba84dc8cc60427cb8ddb8e1d4aa3a7b716533da61894d357937ac42c9d2e4b7a79fcd14c9dad2fac168d4e88fb04269cf337bbe911e34fd9730d5eb86788891035ea060fe27dc23dc9241f00ffa306a2ccfe6",
  header_pt: "00000000000000078e8f1123215ec85553abb1e38ae8dbd674f554085cd3f01ef4ef0cf948c75652",
  header_ct:
    "dd7938d9c16e4a176d3c53140704137225060259af7f0a0b7655a4aa0c7e38ce28dc27fc98105facafbf37f2511c5b45b79f06556a598cb5",
};
const WIRE = [
  '{"event":"encrypted","data":{"seq":1,"iv":"fiN1pftoBVqdcoWj","ct":"vYScC7rFforxSiP6m_3tqqsURbrf_6Z2IQeFNeu64wf0-pDztM-WG6hNyMxgQny43bjh1Ko6e3FlM9phiU01eTesQsnS5Lenn80UydrS-sFo1OiPsEJpzzN7vpEeNP2XMNXrhniIkQNeoGD-J9wj3JJB8A_6MGosz-Y"}}',
  '{"event":"encrypted","data":{"seq":2,"iv":"fiN1pftoBVqdcoWg","ct":"3Xk42cFuShdtPFMUBwQTciUGAlmvfwoLdlWkqgx-OM4o3Cf8mBBfrK-_N_JRHFtFt58GVWpZjLU","body":"AAAAAAAAAAM7NTf8dZTc0AuXdhgcia6YFTXgN2jXLWXJakjhXSYhAS_K_DLpNkgApoz6YeoYbo__Xr46Bz3aIQ"}}',
];

const subtle = globalThis.crypto.subtle;
const aes = (raw) => subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
const seal = async (key, iv, aad, pt) =>
  new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv, additionalData: aad, tagLength: 128 }, key, pt));

/** Appendix A's s2c receive state after `confirm` (next seq `first`), optionally with group records. */
async function opener(roomKeys = true, first = 1) {
  const st = await T.DirectionState.create(T.DIR_S2C, unhex(TH), unhex(TS_S2C_0));
  st.seq = first;
  const o = new T.RecordOpener(st);
  if (roomKeys) o.enableRoomKeys();
  return o;
}

const is4005 = (e) => e.closeCode === 4005;

test("Appendix D: the body, its AAD and its digest", async () => {
  assert.equal(D.K_r, hex(await T.sha256(utf8("wsenc/1 test room key"))));
  assert.equal(hex(T.bodyAad(D.epoch, D.room)), D.body_aad);
  const nonce = new Uint8Array(12);
  nonce.set(T.u64be(D.counter), 4);
  const ct = await seal(await aes(unhex(D.K_r)), nonce, T.bodyAad(D.epoch, D.room), utf8(D.message));
  const body = T.concat(T.u64be(D.counter), ct);
  assert.equal(hex(body), D.body);
  assert.equal(hex(await T.bodyDigest(D.epoch, D.room, body)), D.digest);
});

test("Appendix D: the room_key record and the header, sealed under Appendix A's s2c key", async () => {
  const ts = unhex(TS_S2C_0);
  const key = await aes(await T.deriveKeyBytes(ts));
  const iv = await T.deriveIv(ts);
  const th = unhex(TH);
  const rk = await seal(key, T.recordNonce(iv, 1), T.recordAad(T.DIR_S2C, th, 0, 1), utf8(D.room_key_pt));
  assert.equal(hex(rk), D.room_key_ct);
  const hdr = await seal(key, T.recordNonce(iv, 2), T.headerAad(T.DIR_S2C, th, 0, 2), unhex(D.header_pt));
  assert.equal(hex(hdr), D.header_ct);
  assert.equal(hex(b64u.decode(JSON.parse(WIRE[1]).data.ct)), D.header_ct);
  assert.equal(hex(b64u.decode(JSON.parse(WIRE[1]).data.body)), D.body);
});

test("Appendix D: the wire records open; the room_key record is consumed", async () => {
  const o = await opener();
  assert.equal(await o.openFrame(WIRE[0]), null);
  assert.equal(o.roomKey("lobby").epoch, 7);
  assert.deepEqual(await o.openFrame(WIRE[1]), JSON.parse(D.message));
});

test("Appendix D negative: the group record without the room_key record before it", async () => {
  await assert.rejects((await opener(true, 2)).openFrame(WIRE[1]), is4005);
});

test("Appendix D negative: a group record on a session that did not negotiate roomKeys", async () => {
  const o = await opener(false);
  assert.equal((await o.openFrame(WIRE[0])).event, "room_key", "an ordinary message without the extension");
  await assert.rejects(o.openFrame(WIRE[1]), is4005);
});

test("Appendix D negative: the header sealed with the §6 label", async () => {
  const ts = unhex(TS_S2C_0);
  const key = await aes(await T.deriveKeyBytes(ts));
  const ct = await seal(key, T.recordNonce(await T.deriveIv(ts), 2), T.recordAad(T.DIR_S2C, unhex(TH), 0, 2), unhex(D.header_pt));
  const v = JSON.parse(WIRE[1]);
  v.data.ct = b64u.encode(ct);
  const o = await opener();
  await o.openFrame(WIRE[0]);
  await assert.rejects(o.openFrame(JSON.stringify(v)), is4005);
});

test("Appendix D negative: another counter's body and a flipped body bit", async () => {
  const nonce = new Uint8Array(12);
  nonce.set(T.u64be(4), 4);
  const other = T.concat(
    T.u64be(4),
    await seal(await aes(unhex(D.K_r)), nonce, T.bodyAad(D.epoch, D.room), utf8(D.message)),
  );
  const flipped = unhex(D.body);
  flipped[20] ^= 1;
  for (const body of [other, flipped]) {
    const v = JSON.parse(WIRE[1]);
    v.data.body = b64u.encode(body);
    const o = await opener();
    await o.openFrame(WIRE[0]);
    await assert.rejects(o.openFrame(JSON.stringify(v)), is4005);
  }
});

// ------------------------------------------------------------------------------------------- live (binary)

const skip = skipWithoutBinary();
const cleanups = [];
afterEach(async () => {
  for (const f of cleanups.splice(0)) await f();
});

function client(s, user, opts = {}) {
  const wire = [];
  class Tap extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      this.addEventListener("message", (e) => wire.push(String(e.data)));
    }
  }
  return mintToken(s.secret, user).then((token) => {
    const c = realConnect({ url: s.url, token, serverKeys: [{ kid: s.kid, publicKey: s.publicKey }], WebSocket: Tap, reconnect: false, ...opts });
    c.wire = wire;
    c.got = [];
    c.on("message", (event, data) => c.got.push({ event, data }));
    cleanups.push(() => c.close());
    return c;
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(pred, what, ms = 10_000) {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timeout waiting for ${what}`);
    await sleep(10);
  }
}

test("live: group-capable and per-recipient JS clients share a room, each gets its own form", { skip }, async () => {
  const s = await startServer({ env: { SEALCAST_ALLOW_CLIENT_PUBLISH: "true" } });
  cleanups.push(() => s.stop());
  const alice = await client(s, "alice");
  const bob = await client(s, "bob");
  const carol = await client(s, "carol", { roomKeys: false });
  for (const c of [alice, bob, carol]) {
    await c.ready();
    await c.join("chat:lobby");
  }
  await sleep(100);
  // At least 1 KiB: the server sends shorter room messages per recipient (they cost less that way).
  const pad = "x".repeat(1024);
  await alice.publish("chat:lobby", "chat", { text: "s3cr3t", pad });
  for (const c of [bob, carol]) await waitFor(() => c.got.some((m) => m.event === "chat"), "the chat");
  for (const c of [bob, carol]) assert.deepEqual(c.got.find((m) => m.event === "chat").data, { text: "s3cr3t", pad });
  const records = (c) => c.wire.map((f) => JSON.parse(f)).filter((f) => f.event === "encrypted");
  assert.ok(records(bob).some((f) => typeof f.data.body === "string"), "bob gets a group record");
  assert.ok(!records(carol).some((f) => "body" in f.data), "carol gets per-recipient records only");
  for (const c of [bob, carol]) for (const f of c.wire) assert.ok(!f.includes("s3cr3t"), f);
  // Bob leaves: the key rotates, and what alice sends next bob never receives.
  const before = bob.got.length;
  await bob.leave("chat:lobby");
  await sleep(200);
  await alice.publish("chat:lobby", "chat", { text: "after" });
  await waitFor(() => carol.got.filter((m) => m.event === "chat").length === 2, "carol's second chat");
  await sleep(200);
  assert.equal(bob.got.length, before);
});
