import { test } from "node:test";
import assert from "node:assert/strict";
import * as api from "../dist/index.js";
import { closeReason, CloseCode, FATAL_CLOSE_CODES } from "../dist/index.js";

test("public entry exposes the client API and not the internal test hooks", () => {
  for (const k of ["connect", "SealcastClient", "SealcastError", "CloseCode", "closeReason", "MAX_RECORDS_PER_EPOCH"]) {
    assert.ok(k in api, k);
  }
  for (const k of ["serverHandshake", "clientHandshake", "hkdf", "DirectionState", "RecordSealer", "transcriptHash"]) {
    assert.ok(!(k in api), `${k} must stay internal`);
  }
  assert.equal(api.MAX_RECORDS_PER_EPOCH, 2 ** 20);
});

test("close-code mapping", () => {
  const table = {
    1001: "Server shutting down", 1009: "Message too large", 1013: "Try again later",
    4001: "Authentication timeout", 4002: "Heartbeat timeout", 4003: "Authentication failed",
    4004: "Encryption required", 4005: "Decryption failed", 4006: "Key exhausted",
    4007: "Slow consumer", 4008: "Rate limited",
  };
  for (const [c, r] of Object.entries(table)) assert.equal(closeReason(Number(c)), r);
  assert.equal(closeReason(4999), "Application close");
  assert.equal(closeReason(1234), "Unknown close code");
  assert.equal(CloseCode.DecryptionFailed, 4005);
  assert.deepEqual([...FATAL_CLOSE_CODES].sort(), [4003, 4004]);
});
