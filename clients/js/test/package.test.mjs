// The package as a user gets it: `npm pack` of a copy of the sources (no dist/: `prepack` must build it), the
// tarball installed into a fresh temporary project, then a type check of a TypeScript consumer, a live session
// from Node and one from Chromium, each importing only what the installed package exports.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";
import { startServer, skipWithoutBinary } from "./support/sealcast.mjs";
import { CHROMIUM, launchChromium, skipWithoutBrowser } from "./support/browser.mjs";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const TSC = join(ROOT, "node_modules/typescript/bin/tsc");
const work = mkdtempSync(join(tmpdir(), "sealcast-pack-"));
const project = join(work, "consumer");
const cleanups = [() => rmSync(work, { recursive: true, force: true })];
let tarball;
let files;

before(async () => {
  // A copy of what a clean clone has (no dist/), with the dev dependencies linked in for the build.
  const src = join(work, "src-copy");
  for (const f of ["package.json", "package-lock.json", "tsconfig.json", "README.md", "src", "scripts"]) {
    cpSync(join(ROOT, f), join(src, f), { recursive: true });
  }
  symlinkSync(join(ROOT, "node_modules"), join(src, "node_modules"), "dir");
  const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", work], { cwd: src });
  const [packed] = JSON.parse(stdout.slice(stdout.indexOf("[")));
  tarball = join(work, packed.filename);
  files = packed.files.map((f) => f.path).sort();
  cpSync(join(ROOT, "test/support/consumer"), project, { recursive: true });
  await run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", tarball], { cwd: project });
});
after(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

test("npm pack ships the built ESM, its type declarations and the minified browser build", () => {
  for (const f of ["package.json", "README.md", "dist/index.js", "dist/index.d.ts", "dist/sealcast.min.js", "dist/testing.js", "dist/testing.d.ts"]) {
    assert.ok(files.includes(f), `${f} missing from the tarball: ${files.join(", ")}`);
  }
  assert.deepEqual(files.filter((f) => !f.startsWith("dist/") && f !== "package.json" && f !== "README.md"), []);
  const installed = JSON.parse(readFileSync(join(project, "node_modules/@sealcast/client/package.json"), "utf8"));
  for (const k of ["name", "version", "license", "repository", "exports", "types", "files", "sideEffects"]) {
    assert.ok(installed[k] !== undefined, `package.json lacks ${k}`);
  }
  assert.deepEqual(installed.dependencies ?? {}, {}, "the client has no runtime dependencies");
});

test("a TypeScript consumer type-checks against the installed package's declarations", async () => {
  // consumer.ts uses the typed API; a wrong type there (or missing declarations) fails `tsc --noEmit`.
  await run(process.execPath, [TSC, "-p", "tsconfig.json"], { cwd: project }).catch((e) => {
    assert.fail(`tsc failed:\n${e.stdout}${e.stderr}`);
  });
});

test("the installed package talks to the sealcast binary from Node", { skip: skipWithoutBinary() }, async () => {
  const s = await startServer({ env: { SEALCAST_ALLOW_CLIENT_PUBLISH: "true" } });
  cleanups.push(() => s.stop());
  // Node 20 has its WebSocket behind a flag; later versions have it by default.
  const flags = typeof globalThis.WebSocket === "function" ? [] : ["--experimental-websocket"];
  const { stdout } = await run(process.execPath, [...flags, "node-session.mjs", s.url, s.token, s.kid, s.publicKey], {
    cwd: project,
    timeout: 30_000,
  });
  const got = JSON.parse(stdout.trim().split("\n").at(-1));
  assert.equal(got.encrypted, true);
  assert.equal(got.kid, s.kid);
  assert.equal(got.joined, true);
  assert.equal(typeof got.ack.id, "string");
  assert.deepEqual(got.received, { room: "pack", event: "note", data: { text: "from the tarball" } });
  assert.match(got.browserEntry, /node_modules\/@sealcast\/client\/dist\/sealcast\.min\.js$/);
});

test("the installed minified browser build talks to the sealcast binary from Chromium", { skip: skipWithoutBrowser() }, async () => {
  const s = await startServer({ env: { SEALCAST_ALLOW_CLIENT_PUBLISH: "true" } });
  cleanups.push(() => s.stop());
  const min = readFileSync(join(project, "node_modules/@sealcast/client/dist/sealcast.min.js"));
  const http = createServer((req, res) => {
    if (req.url === "/sealcast.min.js") {
      res.writeHead(200, { "content-type": "text/javascript" }).end(min);
    } else {
      res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>pack</title>");
    }
  });
  await new Promise((r) => http.listen(0, "127.0.0.1", r));
  cleanups.push(() => new Promise((r) => http.close(r)));
  const browser = await launchChromium(chromium);
  cleanups.push(() => browser.close());
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(String(e)));
  await page.goto(`http://127.0.0.1:${http.address().port}/`);
  const got = await page.evaluate(
    async ({ url, token, kid, publicKey }) => {
      const { connect } = await import("/sealcast.min.js");
      const serverKeys = [{ kid, publicKey }];
      const a = connect({ url, token, serverKeys, reconnect: false });
      const b = connect({ url, token, serverKeys, reconnect: false });
      const info = await a.ready();
      await b.ready();
      const received = new Promise((resolve) => b.on("note", (data, event, meta) => resolve({ data, event, meta })));
      await a.join("pack");
      await b.join("pack");
      const ack = await a.publish("pack", "note", { text: "from Chromium" }, { id: "p1" });
      const r = await received;
      a.close();
      b.close();
      return { encrypted: info.encrypted, kid: info.kid, ack, received: { event: r.event, data: r.data } };
    },
    { url: s.url, token: s.token, kid: s.kid, publicKey: s.publicKey },
  );
  assert.equal(got.encrypted, true);
  assert.equal(got.kid, s.kid);
  assert.equal(got.ack.id, "p1");
  assert.deepEqual(got.received, { event: "note", data: { text: "from Chromium" } });
  assert.deepEqual(problems, []);
  assert.ok(existsSync(CHROMIUM));
});
