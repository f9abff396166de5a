// Record layer: strict envelopes, replay / reorder / deletion, tampering, key update ratchet.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as T from "../dist/testing.js";

const { b64u } = T;
const isDec = (e) => e.name === "SealcastError" && e.code === "DECRYPTION_FAILED" && e.closeCode === 4005;
const isExh = (e) => e.name === "SealcastError" && e.code === "KEY_EXHAUSTED" && e.closeCode === 4006;
const isDowngrade = (e) => e.name === "SealcastError" && e.code === "DOWNGRADE" && e.closeCode === 4004;

async function pair(opts = {}) {
  const sk = await T.generateServerStaticKey();
  const eph = await T.generateEphemeral();
  const srv = await T.serverHandshake({
    staticKeys: [sk],
    authenticate: { v: 1, publicKey: b64u.encode(eph.publicKey), kid: sk.kid },
    connId: "conn-1",
    userId: "user-1",
    maxRecordsPerEpoch: opts.s2cMax,
    maxInboundRecordsPerEpoch: opts.c2sMax,
    padBucket: opts.padBucket,
  });
  const pinned = await T.resolveServerKeys([{ kid: sk.kid, publicKey: sk.publicKeyB64 }]);
  const cli = await T.clientHandshake(eph, pinned, { id: "conn-1", userId: "user-1", time: "x", ...srv.connectedFields }, {
    maxRecordsPerEpoch: opts.c2sMax,
    maxInboundRecordsPerEpoch: opts.s2cMax,
    padBucket: opts.padBucket,
  });
  return { srv, cli };
}
const frame = (d) => JSON.stringify({ event: "encrypted", data: d });

test("round trip both directions, s2c starts at seq 1, c2s at 0", async () => {
  const { srv, cli } = await pair();
  const [a] = await cli.sealer.seal({ event: "chat", data: { t: "é☃" } });
  assert.equal(a.seq, 0);
  assert.deepEqual(await srv.opener.openFrame(frame(a)), { event: "chat", data: { t: "é☃" } });
  const [b] = await srv.sealer.seal({ event: "news", data: [1, 2] });
  assert.equal(b.seq, 1);
  assert.deepEqual(await cli.opener.openFrame(T.envelopeFrame(b)), { event: "news", data: [1, 2] });
  const [c] = await cli.sealer.seal({ event: "heartbeat" });
  assert.deepEqual(await srv.opener.openFrame(frame(c)), { event: "heartbeat" });
});

test("padding buckets are stripped on open", async () => {
  const { srv, cli } = await pair({ padBucket: 128 });
  const [a] = await cli.sealer.seal({ event: "x", data: 1 });
  assert.equal(b64u.decode(a.ct).length, 128 + 16);
  assert.deepEqual(await srv.opener.open(a), { event: "x", data: 1 });
});

test("replay, reorder, skipped seq are rejected with 4005", async () => {
  let { srv, cli } = await pair();
  const r = [];
  for (let i = 0; i < 3; i++) r.push((await cli.sealer.seal({ event: "m", data: i }))[0]);
  await srv.opener.open(r[0]);
  await assert.rejects(srv.opener.open(r[0]), isDec, "replay");
  ({ srv, cli } = await pair());
  const s = [];
  for (let i = 0; i < 3; i++) s.push((await cli.sealer.seal({ event: "m", data: i }))[0]);
  await assert.rejects(srv.opener.open(s[1]), isDec, "reorder / skipped");
  ({ srv, cli } = await pair());
  const q = [];
  for (let i = 0; i < 3; i++) q.push((await cli.sealer.seal({ event: "m", data: i }))[0]);
  await srv.opener.open(q[0]);
  await assert.rejects(srv.opener.open(q[2]), isDec, "deletion of seq 1");
  // a forged seq with a matching iv still fails AEAD (seq is in AAD and nonce)
  ({ srv, cli } = await pair());
  const [z] = await cli.sealer.seal({ event: "m" });
  await srv.opener.open(z);
  await assert.rejects(srv.opener.open({ ...z, seq: 1, iv: b64u.encode(srv.opener.state.nonce(1)) }), isDec);
});

test("wrong iv, bit flips anywhere in ct, truncated ct, bad base64 are rejected", async () => {
  const { cli } = await pair();
  const [a] = await cli.sealer.seal({ event: "m", data: "hello" });
  const ct = b64u.decode(a.ct);
  // fresh receiver per attempt: one pair per tamper
  const tampers = [
    (d) => ({ ...d, iv: b64u.encode(new Uint8Array(12)) }),
    (d) => ({ ...d, iv: d.iv.slice(0, -1) + (d.iv.endsWith("A") ? "B" : "A") }),
    (d) => ({ ...d, iv: d.iv + "AA" }),
    (d) => ({ ...d, ct: flip(d.ct, 0) }),
    (d) => ({ ...d, ct: flip(d.ct, 10) }),
    (d) => ({ ...d, ct: flip(d.ct, -1) }),
    (d) => ({ ...d, ct: b64u.encode(b64u.decode(d.ct).slice(0, 15)) }),
    (d) => ({ ...d, ct: b64u.encode(b64u.decode(d.ct).slice(0, -1)) }),
    (d) => ({ ...d, ct: d.ct + "=" }),
    (d) => ({ ...d, ct: d.ct.replace(/[-_]/g, "+") + "+" }),
    (d) => ({ ...d, ct: " " + d.ct }),
  ];
  for (const t of tampers) {
    const p = await pair();
    const [e] = await p.cli.sealer.seal({ event: "m", data: "hello" });
    await assert.rejects(p.srv.opener.open(t(e)), isDec);
  }
  function flip(s, idx) {
    const b = b64u.decode(s);
    const i = idx < 0 ? b.length + idx : idx;
    b[i] ^= 0x01;
    return b64u.encode(b);
  }
  assert.ok(ct.length > 16);
});

test("strict envelope schema: extra field, seq 1.0 / 1e0 / -1 / \"0\" / 2^53, duplicates, missing fields", async () => {
  const { cli } = await pair();
  const [a] = await cli.sealer.seal({ event: "m" });
  const goodFrame = frame(a);
  const ivct = `"iv":${JSON.stringify(a.iv)},"ct":${JSON.stringify(a.ct)}`;
  const bad = [
    `{"event":"encrypted","data":{"seq":0,${ivct},"x":1}}`,
    `{"event":"encrypted","data":{"seq":0.0,${ivct}}}`,
    `{"event":"encrypted","data":{"seq":0e0,${ivct}}}`,
    `{"event":"encrypted","data":{"seq":-0,${ivct}}}`,
    `{"event":"encrypted","data":{"seq":-1,${ivct}}}`,
    `{"event":"encrypted","data":{"seq":"0",${ivct}}}`,
    `{"event":"encrypted","data":{"seq":00,${ivct}}}`,
    `{"event":"encrypted","data":{"seq":9007199254740992,${ivct}}}`,
    `{"event":"encrypted","data":{"seq":0,"seq":0,${ivct}}}`,
    `{"event":"encrypted","data":{"seq":0,"iv":${JSON.stringify(a.iv)}}}`,
    `{"event":"encrypted","data":{"seq":0,"iv":null,"ct":${JSON.stringify(a.ct)}}}`,
    `{"event":"encrypted","data":{"seq":0,"iv":${JSON.stringify(a.iv)},"ct":[]}}`,
    `{"event":"encrypted","data":[0,1,2]}`,
    `{"event":"encrypted","data":null}`,
    `{"event":"encrypted"}`,
    `{"event":"encrypted","data":{"seq":0,${ivct}},"extra":true}`,
    `{"event":"encrypted","data":{"seq":0,${ivct}}`,
    `{"event":"encrypted","data":{"seq":0,${ivct}}} x`,
  ];
  for (const f of bad) {
    const p = await pair();
    const [e] = await p.cli.sealer.seal({ event: "m" });
    const text = f.replaceAll(JSON.stringify(a.iv), JSON.stringify(e.iv)).replaceAll(JSON.stringify(a.ct), JSON.stringify(e.ct));
    await assert.rejects(p.srv.opener.openFrame(text), isDec, f.slice(0, 60));
  }
  // seq 1 written as 1.0 on a record that is really seq 1
  {
    const p = await pair();
    const [e0] = await p.cli.sealer.seal({ event: "m" });
    const [e1] = await p.cli.sealer.seal({ event: "m" });
    await p.srv.opener.openFrame(frame(e0));
    await assert.rejects(p.srv.opener.openFrame(`{"event":"encrypted","data":{"seq":1.0,"iv":"${e1.iv}","ct":"${e1.ct}"}}`), isDec);
  }
  // a plaintext frame on an encrypted session is a downgrade (4004)
  for (const f of ['{"event":"chat","data":{}}', "null", "[]", "42", "not json", '{"data":{}}', new Uint8Array(3)]) {
    const p = await pair();
    await assert.rejects(p.srv.opener.openFrame(f), isDowngrade);
  }
  // whitespace between tokens is fine JSON; key order does not matter
  {
    const p = await pair();
    const [e] = await p.cli.sealer.seal({ event: "m", data: 1 });
    const t = ` { "data" : { "ct" : "${e.ct}" , "iv" : "${e.iv}" , "seq" : 0 } , "event" : "encrypted" } `;
    assert.deepEqual(await p.srv.opener.openFrame(t), { event: "m", data: 1 });
  }
  assert.ok(goodFrame);
});

test("inner message checks: reserved handshake events, non-object, empty, invalid UTF-8", async () => {
  for (const inner of [
    '{"event":"authenticate","data":{}}',
    '{"event":"connected","data":{}}',
    '{"event":"encrypted","data":{}}',
    "[1]",
    '"x"',
    "null",
    '{"data":1}',
    '{"event":5}',
    "",
    "{not json",
  ]) {
    const p = await pair();
    const env = await p.cli.sealer.sealRecordRaw(new TextEncoder().encode(inner));
    await assert.rejects(p.srv.opener.open(env), isDec, inner);
  }
  {
    const p = await pair();
    const env = await p.cli.sealer.sealRecordRaw(Uint8Array.of(0x7b, 0xff, 0xfe, 0x7d));
    await assert.rejects(p.srv.opener.open(env), isDec, "invalid utf-8");
  }
  {
    const p = await pair();
    const env = await p.cli.sealer.sealRecordRaw(new Uint8Array(20));
    await assert.rejects(p.srv.opener.open(env), isDec, "all padding");
  }
});

test("key update ratchet across several epochs, both directions, small limit", async () => {
  const max = 4;
  const { srv, cli } = await pair({ c2sMax: max, s2cMax: max });
  // c2s: 20 app messages -> epochs advance automatically; key_update is the last record (seq max-1)
  let lastEpochSeen = 0;
  for (let i = 0; i < 20; i++) {
    const envs = await cli.sealer.seal({ event: "m", data: i });
    for (const e of envs) {
      assert.ok(e.seq < max);
      const m = await srv.opener.open(e);
      if (envs.length === 2 && e === envs[0]) {
        assert.equal(m, null, "key_update consumed by the record layer");
        assert.equal(e.seq, max - 1);
      } else assert.deepEqual(m, { event: "m", data: i });
    }
    lastEpochSeen = cli.sealer.state.epoch;
    assert.equal(srv.opener.state.epoch, cli.sealer.state.epoch);
  }
  assert.ok(lastEpochSeen >= 5, `epoch ${lastEpochSeen}`);
  // s2c: epoch 0 starts at seq 1 (confirm took seq 0)
  const firsts = await srv.sealer.seal({ event: "s", data: 0 });
  assert.deepEqual(firsts.map((e) => e.seq), [1]);
  assert.deepEqual(await cli.opener.open(firsts[0]), { event: "s", data: 0 });
  for (let i = 1; i < 20; i++) {
    for (const e of await srv.sealer.seal({ event: "s", data: i })) await cli.opener.open(e);
  }
  assert.ok(srv.sealer.state.epoch >= 5);
  assert.equal(cli.opener.state.epoch, srv.sealer.state.epoch);
  // explicit update
  const before = cli.sealer.state.epoch;
  const upd = await cli.sealer.updateKeys();
  assert.equal(await srv.opener.open(upd), null);
  assert.equal(cli.sealer.state.epoch, before + 1);
  const [next] = await cli.sealer.seal({ event: "after" });
  assert.equal(next.seq, 0);
  assert.deepEqual(await srv.opener.open(next), { event: "after" });
});

test("old-epoch records are rejected after an update; seq >= limit is 4006", async () => {
  const max = 4;
  const { srv, cli } = await pair({ c2sMax: max, s2cMax: max });
  const [a] = await cli.sealer.seal({ event: "m" });
  await srv.opener.open(a);
  const upd = await cli.sealer.updateKeys();
  await srv.opener.open(upd);
  // replay an epoch-0 record at seq 0 of epoch 1: wrong keys
  await assert.rejects(srv.opener.open(a), isDec);
  // receiver sees seq >= limit
  const p = await pair({ c2sMax: max, s2cMax: max });
  await assert.rejects(p.srv.opener.open({ seq: max, iv: "AAAAAAAAAAAAAAAA", ct: "AAAAAAAAAAAAAAAAAAAAAA" }), isExh);
  // sender refuses to exceed the limit through the raw API
  const q = await pair({ c2sMax: 2, s2cMax: 2 });
  await q.cli.sealer.sealRecordRaw(new TextEncoder().encode('{"event":"a"}'));
  await q.cli.sealer.sealRecordRaw(new TextEncoder().encode('{"event":"a"}'));
  await assert.rejects(q.cli.sealer.sealRecordRaw(new TextEncoder().encode('{"event":"a"}')), isExh);
  await assert.rejects(T.DirectionState.create(1, new Uint8Array(32), new Uint8Array(32), 1), /maxRecordsPerEpoch/);
});

test("time-based key update (maxEpochMs)", async () => {
  const sk = await T.generateServerStaticKey();
  const eph = await T.generateEphemeral();
  const srv = await T.serverHandshake({ staticKeys: [sk], authenticate: { v: 1, publicKey: b64u.encode(eph.publicKey) }, connId: "c", userId: "" });
  const pinned = await T.resolveServerKeys([{ kid: sk.kid, publicKey: sk.publicKeyB64 }]);
  const cli = await T.clientHandshake(eph, pinned, { id: "c", userId: "", ...srv.connectedFields }, { maxEpochMs: 0 });
  const envs = await cli.sealer.seal({ event: "m" });
  assert.equal(envs.length, 2);
  assert.equal(await srv.opener.open(envs[0]), null);
  assert.deepEqual(await srv.opener.open(envs[1]), { event: "m" });
});

test("concurrent seal calls keep call order", async () => {
  const { srv, cli } = await pair({ c2sMax: 3 });
  const all = await Promise.all(Array.from({ length: 12 }, (_, i) => cli.sealer.seal({ event: "m", data: i })));
  const got = [];
  for (const envs of all) for (const e of envs) {
    const m = await srv.opener.open(e);
    if (m) got.push(m.data);
  }
  assert.deepEqual(got, Array.from({ length: 12 }, (_, i) => i));
});

test("resolveServerKeys checks kid = SHA-256(S)[0..8] and encodings", async () => {
  const sk = await T.generateServerStaticKey();
  await T.resolveServerKeys([{ kid: sk.kid, publicKey: sk.publicKeyB64 }]);
  await assert.rejects(T.resolveServerKeys([{ kid: "AAAAAAAAAAA", publicKey: sk.publicKeyB64 }]), (e) => e.code === "CONFIG");
  await assert.rejects(T.resolveServerKeys([{ kid: sk.kid + "=", publicKey: sk.publicKeyB64 }]), (e) => e.code === "CONFIG");
  await assert.rejects(T.resolveServerKeys([]), (e) => e.code === "CONFIG");
});
