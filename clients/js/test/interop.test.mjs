// Cross-implementation: this client and the Rust client (`examples/chat_peer.rs`) talk through a real server,
// both encrypted with wsenc/1 and with a small epoch limit so both implementations update keys both ways.
import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { WebSocket } from "ws";
import { connect } from "../dist/index.js";
import { BIN, startServer, mintToken, skipWithoutBinary } from "./support/sealcast.mjs";

const skip = skipWithoutBinary();
const PEER = BIN && join(dirname(BIN), "examples", "chat_peer");
const cleanups = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("a Rust client and a JS client converse through the server", { skip }, async () => {
  assert.ok(existsSync(PEER), `${PEER} missing: cargo build --example chat_peer`);
  const limit = 8;
  const s = await startServer({
    env: { SEALCAST_ALLOW_CLIENT_PUBLISH: "true", SEALCAST_MAX_RECORDS_PER_EPOCH: String(limit) },
  });
  cleanups.push(() => s.stop());
  const room = "interop";
  const peer = spawn(PEER, [s.url, await mintToken(s.secret, "rust-peer"), s.publicKey, room, String(limit)], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise((r) => peer.once("exit", (code) => r(code)));
  cleanups.push(() => peer.exitCode === null && peer.kill());
  let stderr = "";
  peer.stderr.on("data", (d) => (stderr += d));
  const lines = [];
  createInterface({ input: peer.stdout }).on("line", (l) => lines.push(l));
  const waitLine = async (pred, what) => {
    for (let i = 0; i < 1000; i++) {
      const l = lines.find(pred);
      if (l) return l;
      if (peer.exitCode !== null) break;
      await sleep(10);
    }
    throw new Error(`peer: no ${what}; stdout=${lines.join("|")} stderr=${stderr}`);
  };
  await waitLine((l) => l.startsWith("joined "), "joined");

  const c = connect({
    url: s.url,
    token: await mintToken(s.secret, "js-peer"),
    serverKeys: [{ kid: s.kid, publicKey: s.publicKey }],
    maxRecordsPerEpoch: limit,
    WebSocket,
    reconnect: false,
  });
  cleanups.push(() => c.close());
  const got = [];
  c.on("chat", (d) => got.push(d));
  let bye;
  c.on("bye", (d) => (bye = d));
  const info = await c.ready();
  assert.equal(info.encrypted, true);
  await c.join(room);
  // Joins are not acknowledged: ping until the Rust peer answers.
  for (let i = 0; got.length === 0; i++) {
    assert.ok(i < 100, "the Rust peer never answered");
    await c.publish(room, "chat", { from: "js", text: `sync ${i}` });
    await sleep(50);
  }
  const syncs = got.length;
  const n = 40;
  for (let i = 0; i < n; i++) await c.publish(room, "chat", { from: "js", text: `message ${i} ✓` });
  for (let i = 0; i < 1000 && got.length < syncs + n; i++) await sleep(10);
  assert.deepEqual(
    got.slice(syncs).map((d) => d.text),
    [...Array(n).keys()].map((i) => `echo: message ${i} ✓`),
  );
  assert.ok(got.every((d) => d.from === "rust"));
  await c.publish(room, "bye", {});
  assert.equal(await exited, 0, stderr);
  for (let i = 0; i < 200 && !bye; i++) await sleep(10);
  assert.deepEqual(bye, { from: "rust", echoed: got.length });
  const received = lines.filter((l) => l.startsWith("got ")).map((l) => JSON.parse(l.slice(4)));
  assert.deepEqual(received.slice(-n).map((d) => d.text), [...Array(n).keys()].map((i) => `message ${i} ✓`));
  assert.ok(lines.includes("bye"));
});
