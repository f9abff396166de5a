// Live tests: the client against the real `sealcast` binary (SEALCAST_BIN; scripts/test.sh sets it).
import { test, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { WebSocket, WebSocketServer } from "ws";
import { connect as realConnect } from "../dist/index.js";
import * as T from "../dist/testing.js";
import { BIN, startServer, mintToken, signToken, keygen, skipWithoutBinary } from "./support/sealcast.mjs";

const skip = skipWithoutBinary();
const live = { clients: new Set(), servers: new Set(), cleanups: [] };
afterEach(async () => {
  for (const c of live.clients) c.close();
  live.clients.clear();
  for (const s of live.servers) await s.stop();
  live.servers.clear();
  for (const f of live.cleanups.splice(0)) await f();
});
after(() => assert.equal(live.servers.size, 0));

async function server(opts) {
  const s = await startServer(opts);
  live.servers.add(s);
  return s;
}

/** A `ws` WebSocket that records every frame on the wire in `log` ({dir: "in"|"out", data}). */
function tapped(log) {
  return class TapWebSocket extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      this.addEventListener("message", (e) => log.push({ dir: "in", data: String(e.data) }));
    }
    send(data, ...rest) {
      log.push({ dir: "out", data });
      super.send(data, ...rest);
    }
  };
}

function connect(opts) {
  const wire = [];
  const c = realConnect({ WebSocket: tapped(wire), reconnect: false, ...opts });
  c.wire = wire;
  c.got = [];
  c.errors = [];
  c.closes = [];
  c.on("message", (event, data) => c.got.push({ event, data }));
  c.on("error", (e) => c.errors.push(e));
  c.on("close", (info) => c.closes.push(info));
  live.clients.add(c);
  return c;
}

const pinned = (s) => [{ kid: s.kid, publicKey: s.publicKey }];
const frames = (c) => c.wire.map((f) => ({ dir: f.dir, ...JSON.parse(f.data) }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(pred, what, ms = 10_000) {
  const t0 = Date.now();
  for (;;) {
    const v = pred();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timeout waiting for ${what}`);
    await sleep(10);
  }
}

/** Every frame after the plaintext `connected` is an `encrypted` record, in both directions. */
function assertEncryptedAfterConnected(c) {
  const f = frames(c);
  const i = f.findIndex((x) => x.dir === "in" && x.event === "connected");
  assert.ok(i >= 0, "no connected frame");
  assert.deepEqual(
    f.slice(0, i).map((x) => `${x.dir} ${x.event}`),
    ["out authenticate"],
  );
  const rest = f.slice(i + 1);
  assert.ok(rest.length > 0);
  for (const x of rest) assert.equal(x.event, "encrypted", `${x.dir} frame ${x.event} is not encrypted`);
}

/** Publishes probes from `a` until `b` sees one (another instance's join may take a moment to reach it). */
async function synced(a, b, room) {
  for (let i = 0; i < 100; i++) {
    await a.publish(room, "probe", i);
    await sleep(50);
    if (b.got.some((m) => m.event === "probe")) return;
  }
  throw new Error("probes never arrived");
}

test("handshake with the pinned dev key printed by the server", { skip }, async () => {
  const s = await server();
  assert.ok(s.token && s.kid && s.publicKey, s.lines.join("\n"));
  const c = connect({ url: s.url, token: s.token, serverKeys: pinned(s) });
  const info = await c.ready();
  assert.equal(info.encrypted, true);
  assert.equal(info.userId, "dev-user");
  assert.equal(info.kid, s.kid);
  // A custom event with no handler is simply dropped; the session stays up and encrypted.
  await c.send("hello", { n: 1 });
  await c.updateKeys();
  await c.send("hello", { n: 2 });
  await sleep(200);
  assert.equal(c.state, "open");
  assert.deepEqual(c.errors, []);
  assertEncryptedAfterConnected(c);
});

test("a wrong pinned key: the client aborts and sends nothing encrypted", { skip }, async () => {
  const s = await server();
  const wrong = await T.generateServerStaticKey();
  const c = connect({ url: s.url, token: s.token, serverKeys: [{ kid: wrong.kid, publicKey: wrong.publicKeyB64 }] });
  await assert.rejects(c.ready());
  await waitFor(() => c.state === "closed", "close");
  // The server does not know the kid: it refuses the handshake (4004, fatal for the client: no retry loop).
  assert.equal(c.errors.find((e) => e.code === "SERVER_ERROR")?.serverMessage, "Encryption handshake failed");
  assert.equal(c.closes.at(-1).code, 4004);
  assert.equal(c.closes.at(-1).willReconnect, false);
  assert.deepEqual(
    frames(c).filter((f) => f.dir === "out").map((f) => f.event),
    ["authenticate"],
  );
});

test("an active attacker swapping in the real server key is detected (confirm check)", { skip }, async () => {
  // A relay that asks the real server for its own key (rewrites the kid) and hands the client the pinned
  // (wrong) key's kid and public key: the server cannot prove possession of the pinned key, `confirm` fails.
  const s = await server();
  const wrong = await T.generateServerStaticKey();
  const relay = new WebSocketServer({ host: "127.0.0.1", port: 0, path: "/ws" });
  await new Promise((r) => relay.once("listening", r));
  live.cleanups.push(() => new Promise((r) => relay.close(r)));
  relay.on("connection", (down) => {
    const up = new WebSocket(s.url);
    const pending = [];
    up.on("open", () => pending.splice(0).forEach((m) => up.send(m)));
    down.on("message", (buf) => {
      const m = JSON.parse(buf.toString());
      if (m.event === "authenticate") m.data.kid = s.kid;
      const text = JSON.stringify(m);
      up.readyState === WebSocket.OPEN ? up.send(text) : pending.push(text);
    });
    up.on("message", (buf) => {
      const m = JSON.parse(buf.toString());
      if (m.event === "connected") m.data.kid = wrong.kid;
      down.send(JSON.stringify(m));
    });
    up.on("close", () => down.close());
    down.on("close", () => up.close());
  });
  const url = `ws://127.0.0.1:${relay.address().port}/ws`;
  const c = connect({ url, token: s.token, serverKeys: [{ kid: wrong.kid, publicKey: wrong.publicKeyB64 }] });
  await assert.rejects(c.ready());
  await waitFor(() => c.state === "closed", "close");
  assert.ok(c.errors.some((e) => e.code === "SERVER_AUTH_FAILED"), c.errors.map((e) => e.code).join());
  assert.equal(c.closes.at(-1).code, 4004);
  assert.equal(c.closes.at(-1).willReconnect, false);
  assert.deepEqual(
    frames(c).filter((f) => f.dir === "out").map((f) => f.event),
    ["authenticate"],
  );
});

test("rooms and publish between two clients; rooms claims are enforced", { skip }, async () => {
  const s = await server({ env: { SEALCAST_ALLOW_CLIENT_PUBLISH: "true" } });
  const alice = connect({ url: s.url, token: await mintToken(s.secret, "alice"), serverKeys: pinned(s) });
  const bob = connect({
    url: s.url,
    token: await mintToken(s.secret, "bob", { rooms: ["chat:*"] }),
    serverKeys: pinned(s),
  });
  assert.equal((await alice.ready()).userId, "alice");
  assert.equal((await bob.ready()).userId, "bob");
  await alice.join("chat:lobby");
  const joined = await bob.join(["chat:lobby", "secret"]); // "secret" is outside bob's claim: refused
  assert.deepEqual(joined, { rooms: [{ room: "chat:lobby" }], refused: [{ room: "secret", reason: "Room not allowed" }] });
  await synced(alice, bob, "chat:lobby");
  await alice.publish("chat:lobby", "chat", { from: "alice", text: "hi bob" });
  await waitFor(() => bob.got.find((m) => m.event === "chat"), "bob gets the chat");
  assert.deepEqual(bob.got.find((m) => m.event === "chat").data, { from: "alice", text: "hi bob" });
  await bob.publish("chat:lobby", "chat", { from: "bob", text: "hi alice" });
  await waitFor(() => alice.got.find((m) => m.event === "chat"), "alice gets the chat");
  // Bob is not in "secret": his publish there is refused with a server error.
  await assert.rejects(bob.publish("secret", "chat", "x"), (e) => e.code === "SERVER_ERROR" && e.serverMessage === "Not a member of room");
  // After leaving, bob gets nothing more from the room.
  await bob.leave("chat:lobby");
  await sleep(200);
  const before = bob.got.length;
  await alice.publish("chat:lobby", "chat", { text: "gone?" });
  await sleep(300);
  assert.equal(bob.got.length, before);
  assertEncryptedAfterConnected(alice);
  assertEncryptedAfterConnected(bob);
});

test("key updates in both directions with a small epoch limit", { skip }, async () => {
  const limit = 8;
  const s = await server({
    env: { SEALCAST_ALLOW_CLIENT_PUBLISH: "true", SEALCAST_MAX_RECORDS_PER_EPOCH: String(limit) },
  });
  const opts = { url: s.url, serverKeys: pinned(s), maxRecordsPerEpoch: limit };
  const a = connect({ ...opts, token: await mintToken(s.secret, "a") });
  const b = connect({ ...opts, token: await mintToken(s.secret, "b") });
  await Promise.all([a.ready(), b.ready()]);
  await a.join("epochs");
  await b.join("epochs");
  await synced(a, b, "epochs");
  await synced(b, a, "epochs");
  const n = 60;
  for (let i = 0; i < n; i++) {
    await a.publish("epochs", "n", { from: "a", i });
    await b.publish("epochs", "n", { from: "b", i });
  }
  const seen = (c, from) => c.got.filter((m) => m.event === "n" && m.data.from === from).map((m) => m.data.i);
  await waitFor(() => seen(b, "a").length === n && seen(a, "b").length === n, "all messages");
  const all = [...Array(n).keys()];
  assert.deepEqual(seen(b, "a"), all);
  assert.deepEqual(seen(a, "b"), all);
  for (const c of [a, b]) {
    assert.equal(c.state, "open");
    assert.deepEqual(c.errors, []);
    assertEncryptedAfterConnected(c);
    // seq restarts at 0 in every epoch: never reaches the limit, and restarts many times in both directions.
    for (const dir of ["in", "out"]) {
      const seqs = frames(c)
        .filter((f) => f.dir === dir && f.event === "encrypted")
        .map((f) => f.data.seq);
      assert.ok(Math.max(...seqs) < limit, `${dir}: seq ${Math.max(...seqs)}`);
      assert.ok(seqs.filter((q) => q === 0).length >= n / limit, `${dir}: too few key updates`);
    }
  }
});

test("reconnect after the server restarts: same port and key file, fresh handshake, rooms re-joined", { skip }, async () => {
  const key = await keygen();
  live.cleanups.push(key.cleanup);
  const env = {
    SEALCAST_SERVER_KEY_FILE: key.path,
    SEALCAST_JWT_SECRET: "live-test-secret",
    SEALCAST_ALLOW_CLIENT_PUBLISH: "true",
  };
  let s = await server({ env });
  assert.ok(!s.lines.some((l) => l.includes("ephemeral")));
  const serverKeys = [{ kid: key.kid, publicKey: key.publicKey }];
  const c = connect({
    url: s.url,
    token: await mintToken(env.SEALCAST_JWT_SECRET, "carol"),
    serverKeys,
    reconnect: { initialMs: 100, maxMs: 400 },
  });
  const first = await c.ready();
  await c.join("after-restart");
  const port = s.port;
  await s.stop();
  live.servers.delete(s);
  await waitFor(() => c.state === "reconnecting" || c.state === "connecting", "the client notices");
  assert.equal(c.closes.at(-1).willReconnect, true);
  await sleep(300); // a few refused attempts while the server is down
  s = await server({ env, port });
  const second = await c.ready();
  assert.notEqual(second.id, first.id);
  assert.equal(second.kid, key.kid);
  // A fresh handshake: a second authenticate with a new ephemeral key.
  const auths = frames(c).filter((f) => f.dir === "out" && f.event === "authenticate");
  assert.ok(auths.length >= 2);
  assert.notEqual(auths[0].data.publicKey, auths.at(-1).data.publicKey);
  // The room was re-joined: a message published there reaches the client.
  const other = connect({ url: s.url, token: await mintToken(env.SEALCAST_JWT_SECRET, "dave"), serverKeys });
  await other.ready();
  await other.join("after-restart");
  await synced(other, c, "after-restart");
  // Encrypted from the second connected on.
  const f = frames(c);
  const lastConnected = f.findLastIndex((x) => x.event === "connected");
  for (const x of f.slice(lastConnected + 1)) assert.equal(x.event, "encrypted");
});

/** A `getToken` for `sub` minting `ttlSecs` tokens with the server's secret; `issued` lists what it handed out. */
function tokenSource(s, sub, ttlSecs) {
  const issued = [];
  const getToken = async () => issued[issued.push(signToken(s.secret, sub, ttlSecs, { n: issued.length })) - 1];
  return { issued, getToken };
}
const authTokens = (c) => frames(c).filter((f) => f.dir === "out" && f.event === "authenticate").map((f) => f.data.token);
const closeCodes = (c) => c.closes.map((i) => [i.code, i.willReconnect]);
const API_KEY = "live-test-api-key";
async function api(s, path, body) {
  const res = await fetch(`${s.http}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 202, await res.text());
}

test("an expired token's 1008 close is not retried without getToken", { skip }, async () => {
  const s = await server();
  const c = connect({ url: s.url, token: signToken(s.secret, "erin", 2), serverKeys: pinned(s), reconnect: { initialMs: 50, maxMs: 100 } });
  await c.ready();
  await waitFor(() => c.state === "closed", "the close at exp");
  await sleep(500); // several backoff periods: no further attempt
  assert.deepEqual(closeCodes(c), [[1008, false]]);
  assert.equal(authTokens(c).length, 1);
  await assert.rejects(c.ready());
});

test("refresh before expiry keeps the session alive past the first token's exp", { skip }, async () => {
  const s = await server({ env: { SEALCAST_API_KEY: API_KEY } });
  const src = tokenSource(s, "frank", 3);
  const c = connect({ url: s.url, getToken: src.getToken, serverKeys: pinned(s) });
  const first = await c.ready();
  const firstExp = JSON.parse(Buffer.from(src.issued[0].split(".")[1], "base64url")).exp * 1000;
  await sleep(firstExp + 1500 - Date.now());
  assert.equal(c.state, "open");
  assert.deepEqual(c.closes, []);
  assert.equal(c.info.id, first.id);
  assert.ok(src.issued.length >= 2, "refreshed with a new token");
  assert.deepEqual(authTokens(c), [src.issued[0]]);
  // The refreshed session still receives (the server rekeyed its outbound side on the refresh).
  await api(s, "/api/publish", { user: "frank", event: "still-here", data: 1 });
  await waitFor(() => c.got.find((m) => m.event === "still-here"), "a message after the refresh");
  assert.deepEqual(c.errors, []);
  assertEncryptedAfterConnected(c);
});

test("with getToken, an expiry close after a refused refresh reconnects with a fresh token", { skip }, async () => {
  const s = await server();
  // The refresh brings another user's token (refused: the old expiry stands); the retry after 1008 a good one.
  const issued = [];
  const getToken = async () => {
    const [sub, ttl] = [["kim", 3], ["mallory", 600]][issued.length] ?? ["kim", 600];
    return issued[issued.push(signToken(s.secret, sub, ttl, { n: issued.length })) - 1];
  };
  const c = connect({ url: s.url, getToken, serverKeys: pinned(s), reconnect: { initialMs: 50, maxMs: 100 } });
  const first = await c.ready();
  await waitFor(() => c.closes.length === 1, "the close at the first token's exp");
  const second = await c.ready();
  assert.notEqual(second.id, first.id);
  assert.equal(second.userId, "kim");
  assert.deepEqual(closeCodes(c), [[1008, true]]);
  assert.equal(c.errors.find((e) => e.code === "SERVER_ERROR")?.serverMessage, "Authentication failed");
  assert.deepEqual(authTokens(c), [issued[0], issued[2]]);
});

test("with getToken, an operator disconnect (1008) reconnects once with a fresh token", { skip }, async () => {
  const s = await server({ env: { SEALCAST_API_KEY: API_KEY } });
  const src = tokenSource(s, "grace", 600);
  const c = connect({ url: s.url, getToken: src.getToken, serverKeys: pinned(s), reconnect: { initialMs: 50, maxMs: 100 } });
  const first = await c.ready();
  await api(s, "/api/disconnect", { user: "grace" });
  await waitFor(() => c.closes.length === 1, "the operator's close");
  const second = await c.ready();
  assert.notEqual(second.id, first.id);
  assert.deepEqual(closeCodes(c), [[1008, true]]);
  assert.equal(src.issued.length, 2);
  assert.deepEqual(authTokens(c), src.issued);
});

test("a reconnect recovers the messages missed in a history room, each once and in order", { skip }, async () => {
  const s = await server({ env: { SEALCAST_API_KEY: API_KEY, SEALCAST_HISTORY_ROOMS: "chat:*" } });
  const src = tokenSource(s, "ivan", 600);
  const c = connect({ url: s.url, getToken: src.getToken, serverKeys: pinned(s), reconnect: { initialMs: 300, maxMs: 400 } });
  const offsets = [];
  c.on("m", (data, _event, meta) => offsets.push([data, meta?.offset]));
  const rejoined = [];
  c.on("rejoined", (r) => rejoined.push(r));
  await c.ready();
  const joined = await c.join("chat:live");
  assert.equal(joined.rooms[0].offset, 0);
  await api(s, "/api/publish", { room: "chat:live", event: "m", data: 1 });
  await waitFor(() => offsets.length === 1, "the first message");
  await api(s, "/api/disconnect", { user: "ivan" });
  await waitFor(() => c.closes.length === 1, "the operator's close");
  // Published while the client is away (its reconnect waits 150-300 ms).
  for (let n = 2; n <= 6; n++) await api(s, "/api/publish", { room: "chat:live", event: "m", data: n });
  await waitFor(() => rejoined.length === 1 && offsets.length === 6, "recovery");
  assert.deepEqual(offsets, [1, 2, 3, 4, 5, 6].map((n) => [n, n]));
  assert.equal(rejoined[0].rooms[0].recovered, true);
  assert.deepEqual(c.position("chat:live")?.offset, 6);
  // Positions travel inside the records: no frame on the wire names the room.
  assert.ok(!c.wire.some((f) => f.data.includes("chat:live")));
});

test("presence: who is in a room, and member_joined / member_left as clients come and go", { skip }, async () => {
  const s = await server({ env: { SEALCAST_PRESENCE_ROOMS: "chat:*" } });
  const alice = connect({ url: s.url, token: await mintToken(s.secret, "alice"), serverKeys: pinned(s) });
  const bob = connect({ url: s.url, token: await mintToken(s.secret, "bob"), serverKeys: pinned(s) });
  const events = [];
  alice.on("member_joined", (data) => events.push(["joined", data]));
  alice.on("member_left", (data) => events.push(["left", data]));
  const aliceId = (await alice.ready()).id;
  const bobId = (await bob.ready()).id;
  await alice.join("chat:p");
  await bob.join("chat:p");
  const answer = await bob.presence("chat:p");
  assert.equal(answer.room, "chat:p");
  assert.deepEqual([answer.clients, answer.users, answer.truncated], [2, 2, false]);
  assert.deepEqual(answer.members.map((m) => m.client).sort(), [aliceId, bobId].sort());
  assert.match(answer.members[0].since, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  await waitFor(() => events.length === 1, "member_joined");
  assert.deepEqual(events[0], ["joined", { room: "chat:p", client: bobId, user: "bob" }]);
  bob.close();
  await waitFor(() => events.length === 2, "member_left");
  assert.deepEqual(events[1], ["left", { room: "chat:p", client: bobId, user: "bob" }]);
  assert.equal((await alice.presence("chat:p")).clients, 1);
  await assert.rejects(alice.presence("chat:other"), (e) => e.code === "SERVER_ERROR" && e.serverMessage === "Not a member of room");
  await assert.rejects(alice.send("presence", { room: "chat:p" }), (e) => e.code === "CONFIG");
  assertEncryptedAfterConnected(alice);
});

test("too many sessions: the one fresh-token retry is spent, then the client stops", { skip }, async () => {
  const s = await server({ env: { SEALCAST_MAX_SESSIONS_PER_USER: "1" } });
  const holder = connect({ url: s.url, token: signToken(s.secret, "heidi", 600), serverKeys: pinned(s) });
  await holder.ready();
  const src = tokenSource(s, "heidi", 600);
  const c = connect({ url: s.url, getToken: src.getToken, serverKeys: pinned(s), reconnect: { initialMs: 50, maxMs: 100 } });
  await waitFor(() => c.state === "closed", "the client gives up");
  await sleep(300);
  assert.deepEqual(closeCodes(c), [[1008, true], [1008, false]]);
  assert.deepEqual(authTokens(c), src.issued);
  assert.equal(src.issued.length, 2);
  assert.deepEqual(c.errors.map((e) => e.serverMessage), ["Too many sessions", "Too many sessions"]);
  assert.equal(holder.state, "open");
});

test("with getToken, a rejected token (4003) is replaced by a fresh one", { skip }, async () => {
  const s = await server();
  const src = tokenSource(s, "ivan", 600);
  const stale = signToken("another-secret", "ivan", 600);
  const c = connect({ url: s.url, token: stale, getToken: src.getToken, serverKeys: pinned(s), reconnect: { initialMs: 50, maxMs: 100 } });
  const info = await c.ready();
  assert.equal(info.userId, "ivan");
  assert.deepEqual(closeCodes(c), [[4003, true]]);
  assert.deepEqual(authTokens(c), [stale, src.issued[0]]);
});

test("wellKnownUrl: keys fetched from /.well-known/sealcast.json", { skip }, async () => {
  const s = await server();
  const c = connect({ url: s.url, token: s.token, wellKnownUrl: `${s.http}/.well-known/sealcast.json` });
  const info = await c.ready();
  assert.equal(info.kid, s.kid);
  assert.equal(info.encrypted, true);
  // A well-known URL that does not answer: no session, and no plaintext fallback.
  const bad = connect({ url: s.url, token: s.token, wellKnownUrl: `${s.http}/no-such-document` });
  await assert.rejects(bad.ready());
  assert.deepEqual(bad.wire, []);
});

test("--demo: the page, its token endpoint and the well-known keys are enough to chat", { skip }, async () => {
  const s = await server({ args: ["--demo"] });
  assert.ok(s.lines.includes(`sealcast: demo chat at ${s.http}/demo/ (demo mode: not for production)`), s.lines.join("\n"));
  const page = await fetch(`${s.http}/demo/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-security-policy"), /script-src 'self'/);
  assert.match(await page.text(), /<script type="module" src="app.js">/);
  // The binary serves the committed bundle (rebuild the binary after `npm run bundle`).
  const bundle = await (await fetch(`${s.http}/demo/sealcast-client.js`)).text();
  assert.equal(bundle, readFileSync(new URL("../demo/sealcast-client.js", import.meta.url), "utf8"));
  assert.equal((await fetch(`${s.http}/demo/token?name=no%20spaces`)).status, 400);
  const grant = async (name) => (await fetch(`${s.http}/demo/token?name=${name}`)).json();
  const [ga, gb] = [await grant("alice"), await grant("bob")];
  assert.equal(ga.userId, "demo:alice");
  const wellKnownUrl = `${s.http}/.well-known/sealcast.json`;
  const a = connect({ url: `ws://127.0.0.1:${s.port}${ga.wsPath}`, token: ga.token, wellKnownUrl });
  const b = connect({ url: `ws://127.0.0.1:${s.port}${gb.wsPath}`, token: gb.token, wellKnownUrl });
  assert.equal((await a.ready()).userId, "demo:alice");
  await b.ready();
  // --demo implies client publish; demo tokens only join demo:* rooms.
  await a.join(["demo:lobby", "lobby"]);
  await b.join("demo:lobby");
  await synced(a, b, "demo:lobby");
  await assert.rejects(a.publish("lobby", "chat", "x"), (e) => e.serverMessage === "Not a member of room");
  // Demo rooms keep history: a publish is acknowledged with its offset.
  const ack = await a.publish("demo:lobby", "chat", "y");
  assert.equal(typeof ack.offset, "number");
  assertEncryptedAfterConnected(a);
});

test("without --demo there is no demo; --demo beyond loopback needs SEALCAST_DEMO_PUBLIC", { skip }, async () => {
  const s = await server();
  assert.equal((await fetch(`${s.http}/demo/`)).status, 404);
  assert.equal((await fetch(`${s.http}/demo/token?name=alice`)).status, 404);
  const key = await keygen();
  live.cleanups.push(key.cleanup);
  const { code, stderr } = await new Promise((resolve) => {
    const env = { ...process.env, SEALCAST_BIND: "0.0.0.0:0", SEALCAST_DEMO: "true", SEALCAST_JWT_SECRET: "s".repeat(32) };
    env.SEALCAST_SERVER_KEY_FILE = key.path;
    const p = execFile(BIN, ["serve"], { env, timeout: 10_000 }, (err, _stdout, stderr) =>
      resolve({ code: err?.code ?? 0, stderr }),
    );
    p.stdin?.end();
  });
  assert.equal(code, 1);
  assert.match(stderr, /SEALCAST_DEMO_PUBLIC/);
});
