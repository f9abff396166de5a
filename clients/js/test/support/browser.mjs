// Debian's Chromium driven by playwright-core (never a downloaded browser): the path, the skip rule, the launch.
import { existsSync } from "node:fs";
import { skipWithoutBinary } from "./sealcast.mjs";

/** The browser binary (SEALCAST_CHROMIUM overrides). */
export const CHROMIUM = process.env.SEALCAST_CHROMIUM || "/usr/bin/chromium";

/** `test(..., { skip })` value: needs the sealcast binary and Chromium; fails loudly when live tests are required. */
export function skipWithoutBrowser() {
  const noBinary = skipWithoutBinary();
  if (noBinary) return noBinary;
  if (existsSync(CHROMIUM)) return false;
  if (process.env.SEALCAST_LIVE_REQUIRED === "1") throw new Error(`${CHROMIUM} missing: apt-get install chromium`);
  return `${CHROMIUM} missing (apt-get install chromium, or set SEALCAST_CHROMIUM)`;
}

/** Launches headless Chromium (`chromium` is playwright-core's export); the caller closes it. */
export function launchChromium(chromium) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Playwright gives every launch a fresh temporary profile (--user-data-dir) of its own.
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: 30_000,
  });
}
