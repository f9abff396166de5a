// Real browser: Debian's Chromium driven by playwright-core opens the demo page (`sealcast serve --demo`) in two
// browser contexts; both join a room and chat. Screenshots go to target/test-output/.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "./support/sealcast.mjs";
import { launchChromium, skipWithoutBrowser } from "./support/browser.mjs";

const OUT = fileURLToPath(new URL("../../../target/test-output/", import.meta.url));

const skip = skipWithoutBrowser();

const cleanups = [];
after(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

/** Opens the demo in a fresh context and records the raw WebSocket frames as Chromium itself saw them. */
async function openDemo(browser, url) {
  const context = await browser.newContext({ viewport: { width: 1180, height: 760 } });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  const problems = [];
  page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
  page.on("pageerror", (e) => problems.push(String(e)));
  const raw = [];
  page.on("websocket", (ws) => {
    ws.on("framesent", (f) => raw.push({ dir: "out", data: String(f.payload) }));
    ws.on("framereceived", (f) => raw.push({ dir: "in", data: String(f.payload) }));
  });
  await page.goto(url);
  return { page, problems, raw };
}

async function join({ page }, name, room) {
  await page.fill("#name", name);
  await page.fill("#room", room);
  await page.click("#join");
  await page.waitForSelector('#status[data-state="open"]');
  await page.waitForSelector(`.msg.system >> text=you joined ${room} as ${name}`);
}

async function say({ page }, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
  await page.waitForSelector(`.msg.mine .text >> text=${text}`);
}

/** The wire panel as data: every frame after the first `connected` must be `encrypted`. */
async function assertWirePanel({ page }) {
  const frames = await page.$$eval("#wire .frame", (lis) =>
    lis.map((li) => ({ dir: li.dataset.dir, event: li.dataset.event, after: li.dataset.afterConnected })),
  );
  assert.deepEqual(
    frames.slice(0, 2).map((f) => `${f.dir} ${f.event}`),
    ["out authenticate", "in connected"],
  );
  const rest = frames.slice(2);
  assert.ok(rest.length >= 4, `only ${rest.length} frames after connected`);
  for (const f of rest) {
    assert.equal(f.event, "encrypted", `${f.dir} ${f.event} in the wire panel`);
    assert.equal(f.after, "true");
  }
  assert.equal(await page.getAttribute("#wire-check", "data-ok"), "true");
}

/** The frames Chromium put on the wire (CDP, independent of the page's own tap). */
function assertRawFrames(raw, secrets) {
  const events = raw.map((f) => `${f.dir} ${JSON.parse(f.data).event}`);
  assert.deepEqual(events.slice(0, 2), ["out authenticate", "in connected"]);
  for (const e of events.slice(2)) assert.match(e, / encrypted$/);
  for (const f of raw) for (const s of secrets) assert.ok(!f.data.includes(s), `plaintext ${s} on the wire`);
}

test("two browsers chat through the demo page and see each other in the member list; the wire shows only encrypted frames", { skip }, async () => {
  const server = await startServer({ args: ["--demo"] });
  cleanups.push(() => server.stop());
  const browser = await launchChromium(chromium);
  cleanups.push(() => browser.close());
  const url = `${server.http}/demo/`;
  const alice = await openDemo(browser, url);
  const bob = await openDemo(browser, url);
  assert.equal(await alice.page.title(), "sealcast demo chat");

  await join(alice, "alice", "lobby");
  await join(bob, "bob", "lobby");
  // Presence: alice hears bob join (member_joined), bob's page lists alice (the presence answer).
  await alice.page.waitForSelector(".msg.system >> text=bob joined");
  await alice.page.waitForSelector('#members .member[data-name="bob"]');
  await bob.page.waitForSelector('#members .member[data-name="alice"]');
  assert.deepEqual(await alice.page.$$eval("#members .member", (lis) => lis.map((li) => li.dataset.name)), ["alice", "bob"]);
  await say(alice, "hello bob, this is secret sauce");
  await bob.page.waitForSelector('.msg.theirs:has(.who:text-is("alice")) .text >> text=hello bob, this is secret sauce');
  await say(bob, "hi alice, got it ✓");
  await alice.page.waitForSelector('.msg.theirs:has(.who:text-is("bob")) .text >> text=hi alice, got it ✓');

  for (const p of [alice, bob]) {
    await assertWirePanel(p);
    assertRawFrames(p.raw, ["secret sauce", "got it"]);
    assert.deepEqual(p.problems, [], "console errors (CSP violations show up here)");
  }
  mkdirSync(OUT, { recursive: true });
  await alice.page.screenshot({ path: `${OUT}demo-alice.png` });
  await bob.page.screenshot({ path: `${OUT}demo-bob.png` });
  // Bob closes his page: he leaves alice's member list (member_left).
  await bob.page.context().close();
  await alice.page.waitForSelector('#members .member[data-name="bob"]', { state: "detached" });
  await alice.page.waitForSelector(".msg.system >> text=bob left");
});
