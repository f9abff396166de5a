// wsenc/1 Appendix A known-answer test, value by value, plus the required negative checks.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as T from "../dist/testing.js";

const hex = (b) => Buffer.from(b).toString("hex");
const unhex = (h) => new Uint8Array(Buffer.from(h, "hex"));
const utf8 = (s) => new TextEncoder().encode(s);
const { b64u } = T;

const A = {
  S: "04090dc69ea9ea2baa2002971f91a2ff8b7bb40dd13c57b3edeead4660fa68f8edce26cfc6e61ecc7a601ec7cbc300ef7995ae974991567d7db5a8520db0aa7cd3",
  e_c: "043029ea9c9cdf639fa00adbe829740c0257efabf428dc54815c8602c2499895213af859590d71a22b93ac53f030f2e7d85a8964e36d849a566cd3ab5f3e8bc949",
  e_s: "04d4d467690c49be1aa3df7b03f2f47ba58bb018e492e2b93cef4bfc95ca7670603790a80d96a225d04cccca111e31ba7648682bda018acac649612ce802997be0",
  salt: "6c0e7736790a5020a75c607273381fe90d859bf34a7afab67aeee9ae58619c9f",
  connId: "c-0001",
  userId: "u-42",
  kid: "f8657780ef683be5",
  ee: "1b90e4fac5194831ccddb324e4e034d5b21fc0556fcbd1964132e83672bd5749",
  es: "5ac5303423cb5895f3ecb2a123deaae11476eb24b58851c4a03eb5226f4c2e4c",
  th: "bb94d819231ba73e0253cbfc053fa0aa891bfcd644518f74749afccd6856e315",
  ts_c2s_0: "59a50d2ac62d2e7147f90b105423ca43279f042f321d30f234e8e96228f8c24a",
  ts_s2c_0: "3a1702a53281678479263fad734718df93866c1be2be2bfb32203bd7210fba4e",
  key_c2s_0: "8452434906a1b9d55a9d5cb9a9880143ef3860346fa9e7ade1b51a127e374e06",
  iv_c2s_0: "aed88b600a2e68eb014cc921",
  key_s2c_0: "d840e4b3515c7b4bbaa5b8c636d68e17a6d293350e5e27d707844d9400c72ed7",
  iv_s2c_0: "7e2375a5fb68055a9d7285a2",
  ts_c2s_1: "81792094775b34fd5684ea4414b12fbae6b95015a6c09c57f25848871c3c0e2f",
  key_c2s_1: "370fb2a074c8bae4218d0c4366e0150f634e111d2dfd6606dfc9487f00fe6913",
  iv_c2s_1: "756dab7ab4c5da8cf277441f",
  confirm: "3e31e7897a895d22bdb62150b794409a",
  s2c1_pt: '{"event":"message","data":{"text":"hi"}}',
  s2c1_ct:
    "bd849c0bbac57e8af14a3cf087e3d3a6ab4f4bb499fab363621fc46cbdadf41cbbe288b9b1828904d16fe4ee053213dbb59adbe3861810141c11e043c63e5c1eb3a8e83a5b7ff3967e6be09192a01ad7",
  c2s0_pt: '{"event":"ping","data":{}}',
  c2s0_ct: "c48f6d7a3d949644800198939356c8131da4f8dc0a68bda4de973267e51eafff633c3337759abe487ef7",
};

const JWK = {
  s: { d: "2U_UxasMz86UC36BX-5tnZc4c6qv3mEtAXpTv7CI9cg", x: "CQ3GnqnqK6ogApcfkaL_i3u0DdE8V7Pt7q1GYPpo-O0", y: "zibPxuYezHpgHsfLwwDveZWul0mRVn19tahSDbCqfNM" },
  e_c: { d: "9ckIsEdNvybrvFBRZnqldP52rtjBqXthFUXgjeJc_1Q", x: "MCnqnJzfY5-gCtvoKXQMAlfvq_Qo3FSBXIYCwkmYlSE", y: "OvhZWQ1xoiuTrFPwMPLn2FqJZONthJpWbNOrXz6LyUk" },
  e_s: { d: "hRwRKo4Ijwbb-5OnWS5_ecS9c7uw6qM7Wk7qXe1zIXA", x: "1NRnaQxJvhqj33sD8vR7pYuwGOSS4rk870v8lcp2cGA", y: "N5CoDZaiJdBMzMoRHjG6dkhoK9oBisrGSWEs6AKZe-A" },
};

const WIRE_CONNECTED = {
  id: "c-0001",
  userId: "u-42",
  time: "2026-01-01T00:00:00Z",
  v: 1,
  serverPublicKey: "BNTUZ2kMSb4ao997A_L0e6WLsBjkkuK5PO9L_JXKdnBgN5CoDZaiJdBMzMoRHjG6dkhoK9oBisrGSWEs6AKZe-A",
  salt: "bA53NnkKUCCnXGByczgf6Q2Fm_NKevq2eu7prlhhnJ8",
  kid: "-GV3gO9oO-U",
  confirm: "PjHniXqJXSK9tiFQt5RAmg",
};
const WIRE_S2C1 = {
  seq: 1,
  iv: "fiN1pftoBVqdcoWj",
  ct: "vYScC7rFforxSjzwh-PTpqtPS7SZ-rNjYh_EbL2t9By74oi5sYKJBNFv5O4FMhPbtZrb44YYEBQcEeBDxj5cHrOo6Dpbf_OWfmvgkZKgGtc",
};

async function importPriv(j) {
  return crypto.subtle.importKey("jwk", { kty: "EC", crv: "P-256", ...j, ext: true }, { name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"]);
}
async function pubOf(j) {
  const k = await crypto.subtle.importKey("jwk", { kty: "EC", crv: "P-256", x: j.x, y: j.y, ext: true }, { name: "ECDH", namedCurve: "P-256" }, true, []);
  return new Uint8Array(await crypto.subtle.exportKey("raw", k));
}

async function keys() {
  return {
    s: await importPriv(JWK.s),
    e_c: await importPriv(JWK.e_c),
    e_s: await importPriv(JWK.e_s),
    S: await pubOf(JWK.s),
    E_C: await pubOf(JWK.e_c),
    E_S: await pubOf(JWK.e_s),
  };
}

test("Appendix A: private scalars are SHA-256(label) and publics match", async () => {
  const labels = { s: "wsenc/1 test server static", e_c: "wsenc/1 test client ephemeral", e_s: "wsenc/1 test server ephemeral" };
  for (const [k, label] of Object.entries(labels)) {
    assert.equal(hex(b64u.decode(JWK[k].d)), hex(await T.sha256(utf8(label))));
  }
  const K = await keys();
  assert.equal(hex(K.S), A.S);
  assert.equal(hex(K.E_C), A.e_c);
  assert.equal(hex(K.E_S), A.e_s);
  assert.equal(hex(await T.sha256(utf8("wsenc/1 test salt"))), A.salt);
  assert.equal(T.PROTO.length, 40);
});

test("Appendix A: kid, ee, es, th, traffic secrets, keys, ivs, epoch 1", async () => {
  const K = await keys();
  const kid = await T.computeKid(K.S);
  assert.equal(hex(kid), A.kid);
  const ee = await T.ecdh(K.e_c, await T.importPublicKey(K.E_S));
  const ee2 = await T.ecdh(K.e_s, await T.importPublicKey(K.E_C));
  assert.equal(hex(ee), A.ee);
  assert.equal(hex(ee2), A.ee);
  const es = await T.ecdh(K.e_c, await T.importPublicKey(K.S));
  const es2 = await T.ecdh(K.s, await T.importPublicKey(K.E_C));
  assert.equal(hex(es), A.es);
  assert.equal(hex(es2), A.es);
  const th = await T.transcriptHash({
    kid, serverStatic: K.S, clientEphemeral: K.E_C, serverEphemeral: K.E_S, salt: unhex(A.salt), connId: A.connId, userId: A.userId,
  });
  assert.equal(hex(th), A.th);
  const ts = await T.initialTrafficSecrets(unhex(A.salt), T.concat(ee, es), th);
  assert.equal(hex(ts.c2s), A.ts_c2s_0);
  assert.equal(hex(ts.s2c), A.ts_s2c_0);
  assert.equal(hex(await T.deriveKeyBytes(ts.c2s)), A.key_c2s_0);
  assert.equal(hex(await T.deriveIv(ts.c2s)), A.iv_c2s_0);
  assert.equal(hex(await T.deriveKeyBytes(ts.s2c)), A.key_s2c_0);
  assert.equal(hex(await T.deriveIv(ts.s2c)), A.iv_s2c_0);
  const ts1 = await T.nextTrafficSecret(ts.c2s);
  assert.equal(hex(ts1), A.ts_c2s_1);
  assert.equal(hex(await T.deriveKeyBytes(ts1)), A.key_c2s_1);
  assert.equal(hex(await T.deriveIv(ts1)), A.iv_c2s_1);
  // empty HKDF salt == 32 zero bytes
  assert.equal(hex(await T.hkdf(new Uint8Array(0), ts.c2s, utf8("wsenc/1 upd"), 32)), A.ts_c2s_1);
  assert.equal(T.recordAad(T.DIR_C2S, th, 0, 0).length, 56);
});

async function katServer(extra = {}) {
  const K = await keys();
  return T.serverHandshake({
    staticKeys: [{ privateKey: K.s, publicKey: K.S }],
    authenticate: { v: 1, publicKey: b64u.encode(K.E_C), kid: WIRE_CONNECTED.kid },
    connId: A.connId,
    userId: A.userId,
    ephemeral: { privateKey: K.e_s, publicKey: K.E_S },
    salt: unhex(A.salt),
    ...extra,
  });
}

async function katClient(opts = {}) {
  const K = await keys();
  const pinned = await T.resolveServerKeys([{ kid: WIRE_CONNECTED.kid, publicKey: b64u.encode(K.S) }]);
  return T.clientHandshake({ privateKey: K.e_c, publicKey: K.E_C }, pinned, WIRE_CONNECTED, opts);
}

test("Appendix A: server side reproduces the wire connected fields and confirm", async () => {
  const srv = await katServer();
  assert.equal(hex(srv.th), A.th);
  const f = srv.connectedFields;
  assert.equal(f.serverPublicKey, WIRE_CONNECTED.serverPublicKey);
  assert.equal(f.salt, WIRE_CONNECTED.salt);
  assert.equal(f.kid, WIRE_CONNECTED.kid);
  assert.equal(f.confirm, WIRE_CONNECTED.confirm);
  assert.equal(hex(b64u.decode(f.confirm)), A.confirm);
});

test("Appendix A: s2c seq 1 record (padded to 64 B) byte-exact, both ways", async () => {
  const srv = await katServer({ padBucket: 64 });
  const [env, ...rest] = await srv.sealer.seal(A.s2c1_pt);
  assert.equal(rest.length, 0);
  assert.equal(utf8(A.s2c1_pt).length, 40);
  assert.deepEqual(env, WIRE_S2C1);
  assert.equal(hex(b64u.decode(env.ct)), A.s2c1_ct);
  // client opens the wire frame (strips the 24 zero bytes)
  const cli = await katClient();
  assert.equal(hex(cli.th), A.th);
  assert.equal(cli.kid, WIRE_CONNECTED.kid);
  const frame = JSON.stringify({ event: "encrypted", data: WIRE_S2C1 });
  const msg = await cli.opener.openFrame(frame);
  assert.deepEqual(msg, { event: "message", data: { text: "hi" } });
});

test("Appendix A: c2s seq 0 record byte-exact, opened by the server", async () => {
  const cli = await katClient();
  const [env] = await cli.sealer.seal(A.c2s0_pt);
  assert.equal(env.seq, 0);
  assert.equal(hex(b64u.decode(env.ct)), A.c2s0_ct);
  assert.equal(hex(b64u.decode(env.iv)), A.iv_c2s_0);
  const srv = await katServer();
  assert.deepEqual(await srv.opener.open(env), { event: "ping", data: {} });
});

test("Appendix A: c2s epoch 1 uses key_c2s_1 / iv_c2s_1", async () => {
  const cli = await katClient();
  const upd = await cli.sealer.updateKeys();
  assert.equal(upd.seq, 0);
  const [env] = await cli.sealer.seal(A.c2s0_pt);
  assert.equal(env.seq, 0);
  assert.equal(hex(b64u.decode(env.iv)), A.iv_c2s_1);
  // independent AES-GCM with the KAT epoch-1 key
  const k = await crypto.subtle.importKey("raw", unhex(A.key_c2s_1), "AES-GCM", false, ["encrypt"]);
  const aad = T.concat(utf8("wsenc/1 rec"), Uint8Array.of(1), unhex(A.th), Uint8Array.of(0, 0, 0, 1), new Uint8Array(8));
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv: unhex(A.iv_c2s_1), additionalData: aad }, k, utf8(A.c2s0_pt)));
  assert.equal(hex(b64u.decode(env.ct)), hex(ct));
  const srv = await katServer();
  assert.equal(await srv.opener.open(upd), null);
  assert.deepEqual(await srv.opener.open(env), { event: "ping", data: {} });
});

// -------- negative checks against the KAT (independent AES-GCM with the KAT key)
async function gcmOpen(keyHex, nonce, aad, ct) {
  const k = await crypto.subtle.importKey("raw", unhex(keyHex), "AES-GCM", false, ["decrypt"]);
  return crypto.subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, k, ct);
}
const aadFor = (dir, epoch, seq) => T.recordAad(dir, unhex(A.th), epoch, seq);

test("Appendix A negatives: correct parameters open; wrong seq/dir/nonce/tag fail", async () => {
  const ct = unhex(A.s2c1_ct);
  const iv = unhex(A.iv_s2c_0);
  const good = new Uint8Array(await gcmOpen(A.key_s2c_0, T.recordNonce(iv, 1), aadFor(2, 0, 1), ct));
  assert.equal(good.length, 64);
  await assert.rejects(gcmOpen(A.key_s2c_0, T.recordNonce(iv, 1), aadFor(2, 0, 2), ct), "wrong seq in AAD");
  await assert.rejects(gcmOpen(A.key_s2c_0, T.recordNonce(iv, 1), aadFor(1, 0, 1), ct), "wrong direction byte");
  await assert.rejects(gcmOpen(A.key_s2c_0, T.recordNonce(iv, 2), aadFor(2, 0, 1), ct), "nonce of another seq");
  const flipped = ct.slice();
  flipped[flipped.length - 1] ^= 0x01;
  await assert.rejects(gcmOpen(A.key_s2c_0, T.recordNonce(iv, 1), aadFor(2, 0, 1), flipped), "flipped tag bit");
  // confirm: flipped bit fails
  const c = unhex(A.confirm);
  assert.equal((await gcmOpen(A.key_s2c_0, T.recordNonce(iv, 0), aadFor(2, 0, 0), c)).byteLength, 0);
  c[0] ^= 0x80;
  await assert.rejects(gcmOpen(A.key_s2c_0, T.recordNonce(iv, 0), aadFor(2, 0, 0), c));
});

test("Appendix A negatives through the record layer (4005)", async () => {
  const isDec = (e) => e.code === "DECRYPTION_FAILED" && e.closeCode === 4005;
  // wrong seq (replay of seq 1 expected as 2): open once, then replay
  let cli = await katClient();
  await cli.opener.open(WIRE_S2C1);
  await assert.rejects(cli.opener.open(WIRE_S2C1), isDec);
  // seq claims 2 with the iv of seq 2 (ciphertext authenticated for seq 1)
  cli = await katClient();
  const st = cli.opener.state;
  await assert.rejects(cli.opener.open({ ...WIRE_S2C1, seq: 2, iv: b64u.encode(st.nonce(2)) }), isDec);
  // nonce of another seq in the iv field
  cli = await katClient();
  await assert.rejects(cli.opener.open({ ...WIRE_S2C1, iv: b64u.encode(st.nonce(2)) }), isDec);
  // flipped tag bit
  cli = await katClient();
  const ct = b64u.decode(WIRE_S2C1.ct);
  ct[ct.length - 1] ^= 1;
  await assert.rejects(cli.opener.open({ ...WIRE_S2C1, ct: b64u.encode(ct) }), isDec);
  // reflection: a c2s record fed to the s2c opener (wrong direction)
  cli = await katClient();
  const [own] = await cli.sealer.seal(A.c2s0_pt);
  const cli2 = await katClient();
  await cli2.opener.open(WIRE_S2C1);
  await assert.rejects(cli2.opener.open({ ...own, seq: 2, iv: b64u.encode(cli2.opener.state.nonce(2)) }), isDec);
});

test("Appendix A: client aborts on bad confirm / unpinned kid / missing fields / v != 1", async () => {
  const K = await keys();
  const pinned = await T.resolveServerKeys([{ kid: WIRE_CONNECTED.kid, publicKey: b64u.encode(K.S) }]);
  const eph = { privateKey: K.e_c, publicKey: K.E_C };
  const bad = b64u.decode(WIRE_CONNECTED.confirm);
  bad[3] ^= 4;
  await assert.rejects(T.clientHandshake(eph, pinned, { ...WIRE_CONNECTED, confirm: b64u.encode(bad) }), (e) => e.code === "SERVER_AUTH_FAILED" && e.message === "server authentication failed");
  await assert.rejects(T.clientHandshake(eph, pinned, { ...WIRE_CONNECTED, userId: "u-43" }), (e) => e.code === "SERVER_AUTH_FAILED");
  await assert.rejects(T.clientHandshake(eph, pinned, { ...WIRE_CONNECTED, id: "c-0002" }), (e) => e.code === "SERVER_AUTH_FAILED");
  await assert.rejects(T.clientHandshake(eph, pinned, { ...WIRE_CONNECTED, kid: "AAAAAAAAAAA" }), (e) => e.code === "SERVER_AUTH_FAILED");
  for (const f of ["serverPublicKey", "salt", "kid", "confirm", "v"]) {
    const c = { ...WIRE_CONNECTED };
    delete c[f];
    await assert.rejects(T.clientHandshake(eph, pinned, c), (e) => e.code === "DOWNGRADE" && e.fatal);
  }
  await assert.rejects(T.clientHandshake(eph, pinned, { ...WIRE_CONNECTED, v: 2 }), (e) => e.code === "DOWNGRADE");
  await assert.rejects(T.clientHandshake(eph, pinned, { ...WIRE_CONNECTED, v: "1" }), (e) => e.code === "DOWNGRADE");
  // messages never leak secrets
  try {
    await T.clientHandshake(eph, pinned, { ...WIRE_CONNECTED, confirm: b64u.encode(bad) });
  } catch (e) {
    assert.ok(!String(e.message).includes(WIRE_CONNECTED.salt));
    assert.ok(!String(e.stack).includes(b64u.encode(bad)));
  }
});
