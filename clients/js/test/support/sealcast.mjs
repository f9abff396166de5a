// Helpers for tests that run the real `sealcast` binary (path in SEALCAST_BIN; scripts/test.sh builds it and
// sets it). Not a test file itself (the runner only picks up test/*.test.mjs).
import { spawn, execFile } from "node:child_process";
import { createHmac } from "node:crypto";
import { createServer } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** The binary to test, or undefined (the live tests then skip, unless SEALCAST_LIVE_REQUIRED=1). */
export const BIN = process.env.SEALCAST_BIN || undefined;

/** `test(..., { skip })` value: false when the binary is there; fails loudly when it is required but missing. */
export function skipWithoutBinary() {
  if (BIN) return false;
  if (process.env.SEALCAST_LIVE_REQUIRED === "1") {
    throw new Error("SEALCAST_LIVE_REQUIRED=1 but SEALCAST_BIN is not set");
  }
  return "SEALCAST_BIN is not set: build with `cargo build` and run with SEALCAST_BIN=target/debug/sealcast";
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** The process environment without any SEALCAST_* setting (so a developer's shell cannot change a test). */
function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("SEALCAST_")) env[k] = v;
  return { ...env, SEALCAST_LOG: "warn", SEALCAST_ADMIN_BIND: "off", ...extra };
}

const after = (line, prefix) => {
  const i = line.indexOf(prefix);
  return i < 0 ? undefined : line.slice(i + prefix.length).split(/\s+/)[0];
};

/**
 * Starts `sealcast serve` on 127.0.0.1 (a free port unless `port` is given) with `env`, and resolves once it
 * printed "listening on". Dev-mode values it printed (secret, sample token, kid, public key) are parsed.
 */
export async function startServer({ env = {}, port, args = [] } = {}) {
  port = port ?? (await freePort());
  const proc = spawn(BIN, ["serve", ...args], {
    env: cleanEnv({ SEALCAST_BIND: `127.0.0.1:${port}`, ...env }),
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines = [];
  const exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
  const ready = new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`server did not start: ${lines.join("\n")}`)), 20_000);
    proc.stdout.setEncoding("utf8");
    // Keep draining stdout (logs go there too) so the server never blocks on a full pipe.
    proc.stdout.on("data", (chunk) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (lines.length < 500) lines.push(line);
        if (line.includes("listening on")) {
          clearTimeout(timer);
          resolve();
        }
      }
    });
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (chunk) => lines.length < 500 && lines.push(chunk.trimEnd()));
    exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before listening: ${lines.join("\n")}`));
    });
  });
  try {
    await ready;
  } catch (e) {
    proc.kill("SIGKILL");
    throw e;
  }
  const find = (prefix) => lines.map((l) => after(l, prefix)).find((v) => v !== undefined);
  const server = {
    proc,
    port,
    lines,
    url: `ws://127.0.0.1:${port}/ws`,
    http: `http://127.0.0.1:${port}`,
    secret: env.SEALCAST_JWT_SECRET ?? find("generated secret: "),
    token: find("sample token (sub=dev-user, 1h): "),
    kid: find("kid="),
    publicKey: find("publicKey="),
    /** SIGTERM, then SIGKILL after 10 s; resolves when the process is gone. */
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(t);
      }
    },
    exited,
  };
  return server;
}

/** `sealcast token --sub <sub>` with `secret`. */
export async function mintToken(secret, sub, { ttl = "10m", rooms } = {}) {
  const args = ["token", "--sub", sub, "--ttl", ttl];
  if (rooms) args.push("--rooms", rooms.join(","));
  const { stdout } = await run(BIN, args, { env: cleanEnv({ SEALCAST_JWT_SECRET: secret }) });
  return stdout.trim();
}

/**
 * An HS256 JWT signed here (no process to spawn, so a `getToken` callback can mint one per call): `sub`, `exp`
 * `ttlSecs` from now, and `extra` claims (e.g. a counter, so two tokens minted in one second differ).
 */
export function signToken(secret, sub, ttlSecs, extra = {}) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub, iat: now, exp: now + ttlSecs, ...extra })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** `sealcast keygen` into a fresh temporary directory; returns { path, kid, publicKey, cleanup }. */
export async function keygen() {
  const dir = mkdtempSync(join(tmpdir(), "sealcast-js-"));
  const path = join(dir, "key.pem");
  const { stdout } = await run(BIN, ["keygen", "--out", path], { env: cleanEnv({}) });
  const lines = stdout.split("\n");
  const pick = (p) => lines.map((l) => after(l, p)).find((v) => v !== undefined);
  return { path, kid: pick("kid="), publicKey: pick("publicKey="), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
