// The demo page's client bundle is committed (the server binary embeds it): it must match a fresh build.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { bundle, OUT } from "../scripts/bundle.mjs";

test("demo/sealcast-client.js is the bundle of the current sources (run `npm run bundle`)", async () => {
  const fresh = await bundle();
  const committed = readFileSync(OUT, "utf8");
  assert.ok(committed === fresh, "demo/sealcast-client.js is stale: run `npm run bundle` in clients/js and commit it");
});

test("the bundle exposes the public API", async () => {
  const mod = await import(`data:text/javascript;base64,${Buffer.from(await bundle()).toString("base64")}`);
  const index = await import("../dist/index.js");
  assert.deepEqual(Object.keys(mod).sort(), Object.keys(index).sort());
  assert.equal(typeof mod.connect, "function");
});
