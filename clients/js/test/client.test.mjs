// Protocol-level unit tests of the client against a tiny in-process fake server (`ws` devDependency).
// They check message sequencing only; live tests against the sealcast binary come later.
import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { WebSocketServer, WebSocket } from "ws";
import { connect as realConnect, CloseCode } from "../dist/index.js";
import * as T from "../dist/testing.js";

const { b64u } = T;

// Cleanup even when a test fails midway, so a failure never leaves sockets open (which would hang the file).
const live = { clients: new Set(), servers: new Set() };
function connect(opts) {
  const c = realConnect(opts);
  live.clients.add(c);
  return c;
}
afterEach(async () => {
  for (const c of live.clients) c.close();
  live.clients.clear();
  for (const s of live.servers) await s.close();
  live.servers.clear();
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function waitFor(pred, ms = 3000) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const tick = () => {
      const v = pred();
      if (v) return resolve(v);
      if (Date.now() - t0 > ms) return reject(new Error("timeout waiting for condition"));
      setTimeout(tick, 5);
    };
    tick();
  });
}
const once = (client, ev) => new Promise((r) => client.on(ev, (...a) => r(a.length > 1 ? a : a[0])));

/**
 * Fake server. mode(connIndex) returns behaviour for each connection:
 *  "good" | "badConfirm" | "noCrypto" | "v2" | "unpinnedKid" | "reject4003" | "plain"
 */
async function fakeServer({ mode = () => "good", s2cMax, c2sMax, sk, answers = true } = {}) {
  sk = sk ?? (await T.generateServerStaticKey());
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, path: "/ws" });
  await new Promise((r) => wss.once("listening", r));
  const conns = [];
  let n = 0;
  wss.on("connection", (ws) => {
    const c = { ws, index: n++, raw: [], inner: [], auth: null, session: null, closed: null, chain: Promise.resolve() };
    conns.push(c);
    ws.on("close", (code) => (c.closed = code));
    ws.on("message", (buf, isBinary) => {
      const text = isBinary ? buf : buf.toString();
      c.raw.push(text);
      c.chain = c.chain.then(() => onMsg(c, text)).catch((e) => {
        c.error = e;
        ws.close(e.closeCode ?? 4005);
      });
    });
  });
  async function onMsg(c, text) {
    if (!c.auth) {
      const m = JSON.parse(text);
      assert.equal(m.event, "authenticate");
      c.auth = m.data;
      const how = mode(c.index);
      c.mode = how;
      if (how === "reject4003") return c.ws.close(4003, "Authentication failed");
      const base = { id: `conn-${c.index}`, userId: "user-7", time: new Date().toISOString() };
      if (how === "plain" || how === "noCrypto") {
        c.ws.send(JSON.stringify({ event: "connected", data: base }));
        return;
      }
      const s = await T.serverHandshake({
        staticKeys: [sk], authenticate: c.auth, connId: base.id, userId: base.userId,
        maxRecordsPerEpoch: s2cMax, maxInboundRecordsPerEpoch: c2sMax,
      });
      c.session = s;
      const f = { ...s.connectedFields };
      if (how === "badConfirm") {
        const b = b64u.decode(f.confirm);
        b[0] ^= 1;
        f.confirm = b64u.encode(b);
      }
      if (how === "v2") f.v = 2;
      if (how === "unpinnedKid") f.kid = "AAAAAAAAAAA";
      c.ws.send(JSON.stringify({ event: "connected", data: { ...base, ...f } }));
      return;
    }
    const m = c.session ? await c.session.opener.openFrame(text) : JSON.parse(text);
    if (!m) return;
    c.inner.push(m);
    // Like the server: every join is answered, and so is every publish that carries an id.
    if (answers && m.event === "join") {
      await sendTo(c, { event: "joined", data: { rooms: (m.data?.rooms ?? []).map((room) => ({ room })), refused: [] } });
    }
    if (answers && m.event === "publish" && typeof m.id === "string") {
      await sendTo(c, { event: "ack", data: { id: m.id } });
    }
  }
  async function sendTo(c, msg) {
    if (!c.session) return c.ws.send(JSON.stringify(msg));
    for (const e of await c.session.sealer.seal(msg)) c.ws.send(T.envelopeFrame(e));
  }
  const url = `ws://127.0.0.1:${wss.address().port}/ws`;
  const serverKeys = [{ kid: sk.kid, publicKey: sk.publicKeyB64 }];
  let closing;
  const srv = {
    wss, url, conns, sendTo, serverKeys, sk,
    close: () => (closing ??= new Promise((r) => { for (const c of conns) c.ws.terminate(); wss.close(() => r()); })),
  };
  live.servers.add(srv);
  return srv;
}

function mk(srv, extra = {}) {
  return connect({ url: srv.url, token: "tok-secret", serverKeys: srv.serverKeys, WebSocket, heartbeatMs: 0, reconnect: false, ...extra });
}

test("authenticate payload shape, connected info, encrypted send/receive both ways", async () => {
  const srv = await fakeServer();
  const client = mk(srv);
  const info = await client.ready();
  assert.deepEqual({ ...info, time: undefined }, { id: "conn-0", userId: "user-7", time: undefined, encrypted: true, kid: srv.sk.kid });
  const c = srv.conns[0];
  assert.deepEqual(Object.keys(c.auth).sort(), ["kid", "publicKey", "roomKeys", "token", "v"]);
  assert.equal(c.auth.token, "tok-secret");
  assert.equal(c.auth.v, 1);
  assert.equal(c.auth.roomKeys, 3, "group records, batched ones too (as binary frames), are advertised by default");
  assert.equal(c.auth.kid, srv.sk.kid);
  const pub = b64u.decode(c.auth.publicKey);
  assert.equal(pub.length, 65);
  assert.equal(pub[0], 4);

  await client.send("custom", { a: 1 });
  await client.join(["r1", "r2"]);
  await client.publish("r1", "chat", { text: "hi" });
  await client.leave("r2");
  await client.send("bare");
  await waitFor(() => c.inner.length === 5);
  assert.deepEqual(c.inner, [
    { event: "custom", data: { a: 1 } },
    { event: "join", data: { rooms: ["r1", "r2"] } },
    { event: "publish", data: { room: "r1", event: "chat", data: { text: "hi" } }, id: "p1" },
    { event: "leave", data: { rooms: ["r2"] } },
    { event: "bare" },
  ]);
  // every frame after authenticate is an encrypted envelope; nothing in plaintext
  for (const f of c.raw.slice(1)) {
    const m = JSON.parse(f);
    assert.equal(m.event, "encrypted");
    assert.deepEqual(Object.keys(m.data), ["seq", "iv", "ct"]);
    const ct = Buffer.from(b64u.decode(m.data.ct)).toString("latin1");
    for (const word of ['"custom"', '"rooms"', '"room"', '"hi"']) assert.ok(!ct.includes(word));
  }
  assert.ok(!c.raw[0].includes("custom"));

  const got = [];
  const named = [];
  const errors = [];
  client.on("message", (event, data) => got.push([event, data]));
  client.on("chat", (data, event) => named.push([event, data]));
  client.on("error", (e) => errors.push(e));
  await srv.sendTo(c, { event: "chat", data: { text: "yo" } });
  await srv.sendTo(c, { event: "other", data: 5 });
  await srv.sendTo(c, { event: "error", data: { message: "nope" } });
  await waitFor(() => got.length === 2 && errors.length === 1);
  assert.deepEqual(got, [["chat", { text: "yo" }], ["other", 5]]);
  assert.deepEqual(named, [["chat", { text: "yo" }]]);
  assert.equal(errors[0].code, "SERVER_ERROR");
  assert.equal(errors[0].serverMessage, "nope");
  await assert.rejects(client.send("encrypted", {}), (e) => e.code === "CONFIG");
  await assert.rejects(client.send("key_update", {}), (e) => e.code === "CONFIG");
  const closed = once(client, "close");
  client.close();
  const ci = await closed;
  assert.deepEqual(ci, { code: 1000, reason: "Normal closure", willReconnect: false });
  assert.equal(client.state, "closed");
  await assert.rejects(client.send("x"), (e) => e.code === "NOT_CONNECTED");
  await srv.close();
});

for (const [how, code] of [
  ["badConfirm", "SERVER_AUTH_FAILED"],
  ["unpinnedKid", "SERVER_AUTH_FAILED"],
  ["noCrypto", "DOWNGRADE"],
  ["v2", "DOWNGRADE"],
]) {
  test(`aborts on ${how}: fatal, nothing sent after authenticate, no plaintext fallback, no reconnect`, async () => {
    const srv = await fakeServer({ mode: () => how });
    const client = mk(srv, { reconnect: { initialMs: 10, maxMs: 20 }, heartbeatMs: 20 });
    const errors = [];
    client.on("error", (e) => errors.push(e));
    const queued = client.send("secret-event", { plaintext: "must never leave" });
    const joinQ = client.join("room");
    const closed = once(client, "close");
    const ci = await closed;
    assert.equal(ci.code, CloseCode.EncryptionRequired);
    assert.equal(ci.reason, "Encryption required");
    assert.equal(ci.willReconnect, false);
    assert.equal(ci.error.code, code);
    assert.equal(errors[0].code, code);
    if (code === "SERVER_AUTH_FAILED") assert.equal(errors[0].message, "server authentication failed");
    await assert.rejects(queued, (e) => e.code === "NOT_CONNECTED");
    await assert.rejects(joinQ);
    await assert.rejects(client.ready());
    await sleep(80);
    assert.equal(srv.conns.length, 1, "no reconnect");
    const c = srv.conns[0];
    assert.equal(c.raw.length, 1, "only authenticate was sent");
    assert.ok(!c.raw.join("").includes("must never leave"));
    await waitFor(() => c.closed !== null);
    assert.equal(c.closed, 4004);
    assert.equal(client.state, "closed");
    // error messages carry no secrets
    assert.ok(!errors[0].message.includes("tok-secret"));
    await srv.close();
  });
}

test("server closes 4003: close event mapped, no reconnect", async () => {
  const srv = await fakeServer({ mode: () => "reject4003" });
  const client = mk(srv, { reconnect: { initialMs: 5, maxMs: 10 } });
  const ci = await once(client, "close");
  assert.equal(ci.code, 4003);
  assert.equal(ci.reason, "Authentication failed");
  assert.equal(ci.willReconnect, false);
  await sleep(50);
  assert.equal(srv.conns.length, 1);
  await srv.close();
});

/** An unsigned JWT-shaped token whose `exp` the client can read (the fake server does not check it). */
function fakeJwt(claims) {
  const part = (o) => b64u.encode(new TextEncoder().encode(JSON.stringify(o)));
  return `${part({ alg: "none" })}.${part(claims)}.sig`;
}

test("server closes 4003 with getToken: one retry with a fresh token, then the client stops", async () => {
  const srv = await fakeServer({ mode: () => "reject4003" });
  const issued = [];
  const getToken = () => issued[issued.push(`fresh-${issued.length}`) - 1];
  const client = mk(srv, { getToken, reconnect: { initialMs: 5, maxMs: 10 } });
  const closes = [];
  client.on("close", (i) => closes.push(i));
  await waitFor(() => client.state === "closed");
  assert.deepEqual(closes.map((c) => [c.code, c.willReconnect]), [[4003, true], [4003, false]]);
  assert.deepEqual(srv.conns.map((c) => c.auth.token), ["tok-secret", "fresh-0"]);
  await sleep(50);
  assert.equal(srv.conns.length, 2);
  await srv.close();
});

test("a getToken that throws ends the client with TOKEN_UNAVAILABLE before any socket opens", async () => {
  const srv = await fakeServer();
  const errors = [];
  const client = mk(srv, { token: undefined, getToken: () => Promise.reject(new Error("login expired")) });
  client.on("error", (e) => errors.push(e));
  const ci = await once(client, "close");
  assert.equal(ci.willReconnect, false);
  assert.equal(ci.error?.code, "TOKEN_UNAVAILABLE");
  assert.deepEqual(errors.map((e) => e.code), ["TOKEN_UNAVAILABLE"]);
  await assert.rejects(client.ready());
  assert.equal(srv.conns.length, 0);
  await srv.close();
});

test("before the token's exp the client sends a sealed refresh with the next token", async () => {
  const srv = await fakeServer();
  const exp = () => Math.floor(Date.now() / 1000) + 2;
  const issued = [];
  const getToken = () => issued[issued.push(fakeJwt({ sub: "u", exp: exp(), n: issued.length })) - 1];
  const client = mk(srv, { token: undefined, getToken });
  await client.ready();
  const firstExp = JSON.parse(new TextDecoder().decode(b64u.decode(issued[0].split(".")[1]))).exp * 1000;
  const refresh = await waitFor(() => srv.conns[0].inner.find((m) => m.event === "refresh"), 3000);
  assert.ok(Date.now() < firstExp, "refreshed before exp");
  assert.deepEqual(refresh.data, { token: issued[1] });
  assert.equal(srv.conns[0].auth.token, issued[0]);
  assert.ok(srv.conns[0].raw.slice(1).every((f) => JSON.parse(f).event === "encrypted"));
  client.close();
  await srv.close();
});

test("reconnect with backoff performs a fresh handshake and re-joins rooms", async () => {
  const srv = await fakeServer();
  const client = mk(srv, { reconnect: { initialMs: 10, maxMs: 40 } });
  const connected = [];
  const closes = [];
  const reconnecting = [];
  client.on("connected", (i) => connected.push(i));
  client.on("close", (i) => closes.push(i));
  client.on("reconnecting", (i) => reconnecting.push(i));
  await client.ready();
  await client.join(["lobby"]);
  await waitFor(() => srv.conns[0].inner.length === 1);
  srv.conns[0].ws.close(1001, "Server shutting down");
  await waitFor(() => connected.length === 2);
  assert.equal(closes[0].code, 1001);
  assert.equal(closes[0].reason, "Server shutting down");
  assert.equal(closes[0].willReconnect, true);
  assert.equal(reconnecting[0].attempt, 1);
  assert.ok(reconnecting[0].delayMs >= 5 && reconnecting[0].delayMs <= 10);
  assert.notEqual(srv.conns[0].auth.publicKey, srv.conns[1].auth.publicKey, "fresh ephemeral");
  assert.equal(connected[1].id, "conn-1");
  await waitFor(() => srv.conns[1].inner.length === 1);
  assert.deepEqual(srv.conns[1].inner[0], { event: "join", data: { rooms: ["lobby"] } });
  // send after reconnect uses the new session
  await client.send("after", 1);
  await waitFor(() => srv.conns[1].inner.length === 2);
  client.close();
  await srv.close();
});

test("join resolves with the joined answer, publish with its ack; a refusal rejects with the server's error", async () => {
  const srv = await fakeServer({ answers: false });
  const client = mk(srv);
  await client.ready();
  const c = srv.conns[0];
  const joined = client.join(["chat:1", "nope"]);
  await waitFor(() => c.inner.length === 1);
  const answer = { rooms: [{ room: "chat:1", offset: 4, epoch: "e1" }], refused: [{ room: "nope", reason: "Room not allowed" }] };
  await srv.sendTo(c, { event: "joined", data: answer });
  assert.deepEqual(await joined, answer);
  assert.deepEqual(client.position("chat:1"), { offset: 4, epoch: "e1" });
  const published = client.publish("chat:1", "chat", 1, { id: "mine" });
  const refused = client.publish("elsewhere", "chat", 2).then(() => null, (e) => e);
  await waitFor(() => c.inner.length === 3);
  assert.equal(c.inner[1].id, "mine");
  const autoId = c.inner[2].id;
  assert.equal(typeof autoId, "string");
  await srv.sendTo(c, { event: "error", data: { message: "Not a member of room", id: autoId } });
  await srv.sendTo(c, { event: "ack", data: { id: "mine", offset: 5, epoch: "e1" } });
  assert.deepEqual(await published, { id: "mine", offset: 5, epoch: "e1" });
  const e = await refused;
  assert.equal(e?.code, "SERVER_ERROR");
  assert.equal(e?.serverMessage, "Not a member of room");
  await assert.rejects(client.publish("r", "e", 1, { id: "x".repeat(65) }), (e) => e.code === "CONFIG");
  // Answers never reach the application as messages.
  const seen = [];
  client.on("message", (event) => seen.push(event));
  await srv.sendTo(c, { event: "m", data: 1, room: "chat:1", offset: 6, epoch: "e1" });
  await waitFor(() => seen.length === 1);
  assert.deepEqual(seen, ["m"]);
  assert.deepEqual(client.position("chat:1"), { offset: 6, epoch: "e1" });
});

test("after a reconnect, rooms with history are joined again recovering from the last offset received", async () => {
  const srv = await fakeServer({ answers: false });
  const client = mk(srv, { reconnect: { initialMs: 10, maxMs: 40 } });
  const metas = [];
  client.on("m", (data, event, meta) => metas.push(meta));
  await client.ready();
  const joined = client.join(["chat:1", "plain"]);
  await waitFor(() => srv.conns[0].inner.length === 1);
  await srv.sendTo(srv.conns[0], { event: "joined", data: { rooms: [{ room: "chat:1", offset: 6, epoch: "e1" }, { room: "plain" }], refused: [] } });
  await joined;
  await srv.sendTo(srv.conns[0], { event: "m", data: 7, room: "chat:1", offset: 7, epoch: "e1" });
  await waitFor(() => metas.length === 1);
  assert.deepEqual(metas[0], { room: "chat:1", offset: 7, epoch: "e1" });
  const rejoined = once(client, "rejoined");
  srv.conns[0].ws.close(1001, "Server shutting down");
  await waitFor(() => srv.conns[1]?.inner.length === 1);
  assert.deepEqual(srv.conns[1].inner[0], {
    event: "join",
    data: { rooms: ["chat:1", "plain"], recover: { "chat:1": { offset: 7, epoch: "e1" } } },
  });
  // The missed message comes first, then the answer.
  await srv.sendTo(srv.conns[1], { event: "m", data: 8, room: "chat:1", offset: 8, epoch: "e1" });
  const answer = { rooms: [{ room: "chat:1", offset: 8, epoch: "e1", recovered: true }, { room: "plain" }], refused: [] };
  await srv.sendTo(srv.conns[1], { event: "joined", data: answer });
  assert.deepEqual(await rejoined, answer);
  assert.deepEqual(client.position("chat:1"), { offset: 8, epoch: "e1" });
  // Not recovered: the client continues from the position the server reports.
  const again = once(client, "rejoined");
  srv.conns[1].ws.close(1001, "Server shutting down");
  await waitFor(() => srv.conns[2]?.inner.length === 1);
  await srv.sendTo(srv.conns[2], { event: "joined", data: { rooms: [{ room: "chat:1", offset: 2, epoch: "e2", recovered: false }], refused: [] } });
  assert.equal((await again).rooms[0].recovered, false);
  assert.deepEqual(client.position("chat:1"), { offset: 2, epoch: "e2" });
});

test("rooms joined before the first session are joined once, in order with the queue", async () => {
  const srv = await fakeServer();
  const client = mk(srv);
  const joined = client.join(["a", "b"]);
  const published = client.publish("a", "chat", 1);
  await Promise.all([joined, published]);
  await waitFor(() => srv.conns[0].inner.length === 2);
  await client.send("last");
  await waitFor(() => srv.conns[0].inner.length === 3);
  assert.deepEqual(srv.conns[0].inner, [
    { event: "join", data: { rooms: ["a", "b"] } },
    { event: "publish", data: { room: "a", event: "chat", data: 1 }, id: "p1" },
    { event: "last" },
  ]);
  client.close();
  await srv.close();
});

test("messages sent while reconnecting are queued and delivered on the next session", async () => {
  const srv = await fakeServer();
  const client = mk(srv, { reconnect: { initialMs: 30, maxMs: 30 } });
  await client.ready();
  const closed = once(client, "close");
  srv.conns[0].ws.close(1013, "Try again later");
  await closed;
  const p = client.send("queued", { n: 1 });
  await p;
  await waitFor(() => srv.conns[1]?.inner.length === 1);
  assert.deepEqual(srv.conns[1].inner[0], { event: "queued", data: { n: 1 } });
  client.close();
  await srv.close();
});

test("tampered record from the server -> client closes 4005 and reconnects", async () => {
  const srv = await fakeServer();
  const client = mk(srv, { reconnect: { initialMs: 10, maxMs: 10 } });
  await client.ready();
  const c = srv.conns[0];
  const [e] = await c.session.sealer.seal({ event: "x", data: 1 });
  const ct = b64u.decode(e.ct);
  ct[0] ^= 0x40;
  const closed = once(client, "close");
  c.ws.send(T.envelopeFrame({ ...e, ct: b64u.encode(ct) }));
  const ci = await closed;
  assert.equal(ci.code, 4005);
  assert.equal(ci.reason, "Decryption failed");
  assert.equal(ci.error.code, "DECRYPTION_FAILED");
  assert.equal(ci.willReconnect, true);
  await waitFor(() => c.closed === 4005);
  await client.ready();
  assert.equal(srv.conns.length, 2);
  client.close();
  await srv.close();
});

test("plaintext frame from the server after the handshake -> 4004 (downgrade)", async () => {
  const srv = await fakeServer();
  const client = mk(srv);
  await client.ready();
  const got = [];
  client.on("message", (ev) => got.push(ev));
  const closed = once(client, "close");
  srv.conns[0].ws.send(JSON.stringify({ event: "chat", data: { text: "injected" } }));
  const ci = await closed;
  assert.equal(ci.code, 4004);
  assert.equal(ci.error.code, "DOWNGRADE");
  assert.deepEqual(got, []);
  await srv.close();
});

test("heartbeat is sent inside encrypted records", async () => {
  const srv = await fakeServer();
  const client = mk(srv, { heartbeatMs: 15 });
  await client.ready();
  await waitFor(() => srv.conns[0].inner.filter((m) => m.event === "heartbeat").length >= 2);
  assert.deepEqual(srv.conns[0].inner[0], { event: "heartbeat" });
  assert.ok(srv.conns[0].raw.slice(1).every((f) => JSON.parse(f).event === "encrypted"));
  client.close();
  await srv.close();
});

test("key update in both directions over the wire with small epoch limits", async () => {
  const srv = await fakeServer({ s2cMax: 3, c2sMax: 3 });
  const client = mk(srv, { maxRecordsPerEpoch: 3 });
  await client.ready();
  const c = srv.conns[0];
  for (let i = 0; i < 10; i++) await client.send("up", i);
  await waitFor(() => c.inner.length === 10);
  assert.deepEqual(c.inner.map((m) => m.data), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.ok(c.session.opener.state.epoch >= 4);
  const got = [];
  client.on("down", (d) => got.push(d));
  for (let i = 0; i < 10; i++) await srv.sendTo(c, { event: "down", data: i });
  await waitFor(() => got.length === 10);
  assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.ok(c.session.sealer.state.epoch >= 4);
  await client.updateKeys();
  await client.send("after-update");
  await waitFor(() => c.inner.length === 11);
  client.close();
  await srv.close();
});

test("plaintext mode only with requireEncryption=false and no keys", async () => {
  assert.throws(() => connect({ url: "ws://127.0.0.1:1/ws", token: "t", WebSocket }), (e) => e.code === "CONFIG");
  assert.throws(() => connect({ url: "ws://127.0.0.1:1/ws", token: "t" , serverKeys: [], WebSocket}), (e) => e.code === "CONFIG");
  const srv = await fakeServer({ mode: () => "plain" });
  const client = connect({ url: srv.url, token: "t", requireEncryption: false, WebSocket, heartbeatMs: 0, reconnect: false });
  const info = await client.ready();
  assert.equal(info.encrypted, false);
  assert.deepEqual(srv.conns[0].auth, { token: "t" });
  await client.send("hello", { x: 1 });
  await waitFor(() => srv.conns[0].inner.length === 1);
  assert.deepEqual(srv.conns[0].inner[0], { event: "hello", data: { x: 1 } });
  const got = once(client, "message");
  srv.conns[0].ws.send(JSON.stringify({ event: "news", data: 2 }));
  assert.deepEqual(await got, ["news", 2]);
  client.close();
  await srv.close();
});

test("requireEncryption=false with keys still requires encryption (no fallback)", async () => {
  const srv = await fakeServer({ mode: () => "noCrypto" });
  const client = connect({ url: srv.url, token: "t", serverKeys: srv.serverKeys, requireEncryption: false, WebSocket, heartbeatMs: 0, reconnect: false });
  const ci = await once(client, "close");
  assert.equal(ci.error.code, "DOWNGRADE");
  assert.equal(srv.conns[0].raw.length, 1);
  await srv.close();
});

test("wellKnownUrl: keys fetched per attempt and validated", async () => {
  const srv = await fakeServer();
  const calls = [];
  const fetch = async (url) => {
    calls.push(url);
    return { ok: true, status: 200, json: async () => ({ protocol: "wsenc/1", keys: srv.serverKeys }) };
  };
  const client = connect({ url: srv.url, token: "t", wellKnownUrl: "http://x/.well-known/sealcast.json", fetch, WebSocket, heartbeatMs: 0, reconnect: false });
  const info = await client.ready();
  assert.equal(info.kid, srv.sk.kid);
  assert.deepEqual(calls, ["http://x/.well-known/sealcast.json"]);
  client.close();
  // wrong protocol -> fatal
  const bad = connect({
    url: srv.url, token: "t", wellKnownUrl: "http://x/", WebSocket, heartbeatMs: 0, reconnect: { initialMs: 5, maxMs: 5 },
    fetch: async () => ({ ok: true, status: 200, json: async () => ({ protocol: "other", keys: [] }) }),
  });
  const ci = await once(bad, "close");
  assert.equal(ci.willReconnect, false);
  assert.equal(ci.error.code, "PROTOCOL");
  // a key whose kid does not match -> fatal config error
  const other = await T.generateServerStaticKey();
  const bad2 = connect({
    url: srv.url, token: "t", wellKnownUrl: "http://x/", WebSocket, heartbeatMs: 0,
    fetch: async () => ({ ok: true, status: 200, json: async () => ({ protocol: "wsenc/1", keys: [{ kid: srv.sk.kid, publicKey: other.publicKeyB64 }] }) }),
  });
  const ci2 = await once(bad2, "close");
  assert.equal(ci2.error.code, "CONFIG");
  assert.equal(srv.conns.length, 1);
  await srv.close();
});

test("handshake timeout closes and (when enabled) retries", async () => {
  // a server that never answers authenticate
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => wss.once("listening", r));
  let n = 0;
  wss.on("connection", () => n++);
  const sk = await T.generateServerStaticKey();
  const client = connect({
    url: `ws://127.0.0.1:${wss.address().port}/`, token: "t", serverKeys: [{ kid: sk.kid, publicKey: sk.publicKeyB64 }],
    WebSocket, heartbeatMs: 0, handshakeTimeoutMs: 40, reconnect: { initialMs: 5, maxMs: 5 },
  });
  const ci = await once(client, "close");
  assert.equal(ci.code, 4001);
  assert.equal(ci.willReconnect, true);
  await waitFor(() => n >= 2);
  client.close();
  for (const c of wss.clients) c.terminate();
  await new Promise((r) => wss.close(r));
});

test("close() while the socket is still connecting / before the first attempt", async () => {
  const srv = await fakeServer();
  // immediately: before the first attempt even starts
  const a = mk(srv);
  const ca = once(a, "close");
  a.close();
  assert.equal((await ca).code, 1000);
  assert.equal(a.state, "closed");
  await assert.rejects(a.ready());
  // while the WebSocket is CONNECTING
  const b = mk(srv);
  await waitFor(() => b.cur !== undefined || b["cur"] !== undefined, 2000).catch(() => {});
  const cb = once(b, "close");
  b.close();
  assert.equal((await cb).willReconnect, false);
  await sleep(50);
  assert.equal(b.state, "closed");
  await srv.close();
});

test("no reconnect attempts after close() during the backoff wait", async () => {
  const srv = await fakeServer();
  const client = mk(srv, { reconnect: { initialMs: 40, maxMs: 40 } });
  await client.ready();
  const closed = once(client, "close");
  srv.conns[0].ws.close(1001);
  await closed;
  assert.equal(client.state, "reconnecting");
  client.close();
  await sleep(100);
  assert.equal(srv.conns.length, 1);
  assert.equal(client.state, "closed");
  await srv.close();
});
