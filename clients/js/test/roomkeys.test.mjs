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

// Appendix E (§11.4): a second room keyed at seq 3, then one batched record at seq 4 of three bodies.
const E = {
  room_2: "den",
  epoch_2: 9,
  K_r2: "5d49cfb6fb2ea54ce9bee75872c86ad1ae13b839eb32b18ffd28b93177f8a520",
  bodies: [
    ["lobby", 7, 4, '{"event":"message","data":{"text":"one"}}', "0000000000000004fb3b67d57474b9527a4c59879ebdb7e55bedacbee60dbee5c15cdda0e03820dcbc4b2c3d26bf49753dd4c1c2572ed6c02700f47e9cdb026a5c"],
    ["den", 9, 0, '{"event":"message","data":{"text":"two"}}', "0000000000000000a9acca1ca409c7307d5705721d765f4dc83952279a46db56a704d9b75cf4d88beb90166287db273a71ba0970a5207a3baf0e86ff85efd0225c"],
    ["lobby", 7, 5, '{"event":"message","data":{"text":"three"}}', "00000000000000059f009611843c26da32f9ecb1c180503335be7f47dd64b364ae512158688d0389c1c5912afaf9a2eef43feab20923419574b3b018704e305f31b251"],
  ],
  room_key_pt: '{"event":"room_key","data":{"room":"den","epoch":9,"key":"XUnPtvsupUzpvudYcshq0a4TuDnrMrGP_Si5MXf4pSA"}}',
  room_key_ct:
    "dcac841c55f63e01def34e0af144e0d8f8f5fdcc30bb18f53de831cf6300e2fc1a238e8d06d3274572a03b34d03bab108d7b316bffd7ecb8c95d357421cde68b2e3c12315d8c225ea5c73eaf16591828fed33553286cc6c5cd59dff3d0f6c21ace3f6c468d5e4753a2bac2faca7cc2bb533141093e82427d",
  header_pt:
    "0000000000000007d1c003be32efb8f03831a91c5fbc91e0470f5f1d7fbcd5a15163b9127897a4b70000000000000009ba22a7b31b610fcf90c146553ee690d2d9060924c0722bef1fb69dbb97c0de5c0000000000000007da5c87fde14a9e8a4bd219d0124ba072667bf146b5945ed17a2bbe61f76687e1",
  header_ct:
    "b7153df7332df57b86ce1ff6aa20cbe5596acccbd59a6e7a43159b3bd82415f3d5e01b9374936dac3144a578137159c7b21cd3b9d1115f905aa70f6d73ccb7d5a659c897a782eff6b202ff72bdbbf060afe08cb9cb8473bdf6c2493f6b309972dddedfc677f745f344de34f8ec22cfafbc753eaa0561769497c171d07bcf8c08734987078da8b69e",
};
const WIRE_E = [
  '{"event":"encrypted","data":{"seq":3,"iv":"fiN1pftoBVqdcoWh","ct":"3KyEHFX2PgHe804K8UTg2Pj1_cwwuxj1Pegxz2MA4vwaI46NBtMnRXKgOzTQO6sQjXsxa__X7LjJXTV0Ic3miy48EjFdjCJepcc-rxZZGCj-0zVTKGzGxc1Z3_PQ9sIazj9sRo1eR1OiusL6ynzCu1MxQQk-gkJ9"}}',
  '{"event":"encrypted","data":{"seq":4,"iv":"fiN1pftoBVqdcoWm","ct":"txU99zMt9XuGzh_2qiDL5VlqzMvVmm56QxWbO9gkFfPV4BuTdJNtrDFEpXgTcVnHshzTudERX5Bapw9tc8y31aZZyJengu_2sgL_cr278GCv4Iy5y4RzvfbCST9rMJly3d7fxnf3RfNE3jT47CLPr7x1PqoFYXaUl8Fx0HvPjAhzSYcHjai2ng","bodies":["AAAAAAAAAAT7O2fVdHS5UnpMWYeevbflW-2svuYNvuXBXN2g4Dgg3LxLLD0mv0l1PdTBwlcu1sAnAPR-nNsCalw","AAAAAAAAAACprMocpAnHMH1XBXIddl9NyDlSJ5pG21anBNm3XPTYi-uQFmKH2yc6cboJcKUgejuvDob_he_QIlw","AAAAAAAAAAWfAJYRhDwm2jL57LHBgFAzNb5_R91ks2SuUSFYaI0DicHFkSr6-aLu9D_qsgkjQZV0s7AYcE4wXzGyUQ"]}}',
];

/** An opener with batches (or only §11.3 records) that took Appendix D's records and Appendix E's room_key. */
async function batchOpener(batches = true) {
  const o = await opener(false);
  if (batches) o.enableRoomKeyBatches();
  else o.enableRoomKeys();
  for (const w of [WIRE[0], WIRE[1], WIRE_E[0]]) await o.openFrameAll(w);
  return o;
}

test("Appendix E: the bodies, the batched header and the den room_key record", async () => {
  assert.equal(E.K_r2, hex(await T.sha256(utf8("wsenc/1 test room key 2"))));
  const keys = { lobby: D.K_r, den: E.K_r2 };
  let header = new Uint8Array(0);
  for (const [room, epoch, counter, message, expected] of E.bodies) {
    const nonce = new Uint8Array(12);
    nonce.set(T.u64be(counter), 4);
    const ct = await seal(await aes(unhex(keys[room])), nonce, T.bodyAad(epoch, room), utf8(message));
    const body = T.concat(T.u64be(counter), ct);
    assert.equal(hex(body), expected);
    header = T.concat(header, T.u64be(epoch), await T.bodyDigest(epoch, room, body));
  }
  assert.equal(hex(header), E.header_pt);
  const ts = unhex(TS_S2C_0);
  const key = await aes(await T.deriveKeyBytes(ts));
  const iv = await T.deriveIv(ts);
  const th = unhex(TH);
  assert.equal(hex(await seal(key, T.recordNonce(iv, 3), T.recordAad(T.DIR_S2C, th, 0, 3), utf8(E.room_key_pt))), E.room_key_ct);
  assert.equal(hex(await seal(key, T.recordNonce(iv, 4), T.headerAad(T.DIR_S2C, th, 0, 4), unhex(E.header_pt))), E.header_ct);
  assert.equal(hex(b64u.decode(JSON.parse(WIRE_E[1]).data.ct)), E.header_ct);
});

test("Appendix E: the batch opens into its three messages in order", async () => {
  const o = await batchOpener();
  assert.deepEqual(await o.openFrameAll(WIRE_E[1]), E.bodies.map((b) => JSON.parse(b[3])));
});

test("Appendix E negative: reordered, dropped and duplicated bodies", async () => {
  const bodies = JSON.parse(WIRE_E[1]).data.bodies;
  for (const forged of [[bodies[1], bodies[0], bodies[2]], [bodies[0], bodies[1]], [bodies[0], bodies[0], bodies[2]]]) {
    const v = JSON.parse(WIRE_E[1]);
    v.data.bodies = forged;
    await assert.rejects((await batchOpener()).openFrameAll(JSON.stringify(v)), is4005);
  }
});

test("Appendix E negative: the batch on a roomKeys: 1 session, and through openFrame", async () => {
  await assert.rejects((await batchOpener(false)).openFrameAll(WIRE_E[1]), is4005);
  await assert.rejects((await batchOpener()).openFrame(WIRE_E[1]), is4005);
});

test("Appendix E negative: both body and bodies", async () => {
  const v = JSON.parse(WIRE_E[1]);
  v.data.body = v.data.bodies[0];
  await assert.rejects((await batchOpener()).openFrameAll(JSON.stringify(v)), is4005);
});

// Appendix F (§11.5): Appendix E's batch at seq 4 as a binary frame (produced by the Rust sealer).
const F_BINARY = "0100000000000000040003b7153df7332df57b86ce1ff6aa20cbe5596acccbd59a6e7a43159b3bd82415f3d5e01b9374936dac3144a578137159c7b21cd3b9d1115f905aa70f6d73ccb7d5a659c897a782eff6b202ff72bdbbf060afe08cb9cb8473bdf6c2493f6b309972dddedfc677f745f344de34f8ec22cfafbc753eaa0561769497c171d07bcf8c08734987078da8b69e000000410000000000000004fb3b67d57474b9527a4c59879ebdb7e55bedacbee60dbee5c15cdda0e03820dcbc4b2c3d26bf49753dd4c1c2572ed6c02700f47e9cdb026a5c000000410000000000000000a9acca1ca409c7307d5705721d765f4dc83952279a46db56a704d9b75cf4d88beb90166287db273a71ba0970a5207a3baf0e86ff85efd0225c0000004300000000000000059f009611843c26da32f9ecb1c180503335be7f47dd64b364ae512158688d0389c1c5912afaf9a2eef43feab20923419574b3b018704e305f31b251";

/** An opener that negotiated roomKeys 3 (or only 2) and took Appendix D's records and Appendix E's room_key. */
async function binaryOpener(binary = true) {
  const o = await opener(false);
  if (binary) o.enableRoomKeyBinary();
  else o.enableRoomKeyBatches();
  for (const w of [WIRE[0], WIRE[1], WIRE_E[0]]) await o.openFrameAll(w);
  return o;
}

test("Appendix F: the binary frame is Appendix E's header and raw bodies", () => {
  const parts = E.bodies.map((b) => T.concat(unhex("000000" + (b[4].length / 2).toString(16)), unhex(b[4])));
  const frame = T.concat(unhex("01"), T.u64be(4), unhex("0003"), unhex(E.header_ct), ...parts);
  assert.equal(hex(frame), F_BINARY);
});

test("Appendix F: the binary batch opens into its three messages in order", async () => {
  const o = await binaryOpener();
  assert.deepEqual(await o.openBinary(unhex(F_BINARY)), E.bodies.map((b) => JSON.parse(b[3])));
});

test("Appendix F negative: truncated, extended, parts swapped, type byte, k = 0, roomKeys 2", async () => {
  const f = unhex(F_BINARY);
  const head = 11 + 3 * 40 + 16;
  const p1 = f.subarray(head, head + 69);
  const p2 = f.subarray(head + 69, head + 138);
  const k0 = f.slice();
  k0[9] = 0;
  k0[10] = 0;
  const t2 = f.slice();
  t2[0] = 2;
  const variants = [f.subarray(0, f.length - 1), T.concat(f, new Uint8Array(1)), T.concat(f.subarray(0, head), p2, p1, f.subarray(head + 138)), t2, k0];
  for (const v of variants) await assert.rejects((await binaryOpener()).openBinary(v), is4005);
  await assert.rejects((await binaryOpener(false)).openBinary(f), is4005);
});

// ------------------------------------------------------------------------------------------- live (binary)

const skip = skipWithoutBinary();
const cleanups = [];
afterEach(async () => {
  for (const f of cleanups.splice(0)) await f();
});

function client(s, user, opts = {}) {
  const wire = [];
  const bin = [];
  class Tap extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      this.addEventListener("message", (e) => {
        if (typeof e.data === "string") wire.push(e.data);
        else bin.push(new Uint8Array(e.data));
      });
    }
  }
  return mintToken(s.secret, user).then((token) => {
    const c = realConnect({ url: s.url, token, serverKeys: [{ kid: s.kid, publicKey: s.publicKey }], WebSocket: Tap, reconnect: false, ...opts });
    c.wire = wire;
    c.bin = bin;
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

test("live: a burst to a room reaches JS clients as binary (roomKeys 3) or text (roomKeys 2) batches, in order", { skip }, async () => {
  const s = await startServer({ env: { SEALCAST_ALLOW_CLIENT_PUBLISH: "true" } });
  cleanups.push(() => s.stop());
  const alice = await client(s, "alice");
  const bob = await client(s, "bob", { roomKeyBinary: false });
  const carol = await client(s, "carol");
  for (const c of [alice, bob, carol]) {
    await c.ready();
    await c.join("chat:burst");
  }
  await sleep(100);
  const n = 40;
  await Promise.all([...Array(n).keys()].map((i) => alice.publish("chat:burst", "m", { i })));
  for (const c of [bob, carol]) await waitFor(() => c.got.filter((m) => m.event === "m").length === n, "the burst");
  for (const c of [bob, carol]) assert.deepEqual(c.got.filter((m) => m.event === "m").map((m) => m.data.i), [...Array(n).keys()]);
  const batches = bob.wire.map((f) => JSON.parse(f)).filter((f) => f.event === "encrypted" && Array.isArray(f.data.bodies));
  assert.ok(batches.some((f) => f.data.bodies.length > 1), "at least one record carries several bodies");
  assert.equal(bob.bin.length, 0, "no binary frame to a roomKeys 2 client");
  assert.ok(carol.bin.some((b) => b[0] === 1 && ((b[9] << 8) | b[10]) > 1), "carol gets binary batches of several");
  assert.ok(!carol.wire.some((f) => f.includes('"bodies"')), "no text batch to a roomKeys 3 client");
  const secret = new TextEncoder().encode('"i":');
  for (const b of carol.bin) assert.ok(!Buffer.from(b).includes(Buffer.from(secret)), "no plaintext in a binary frame");
});
