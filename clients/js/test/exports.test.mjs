import { test } from "node:test";
import assert from "node:assert/strict";
import * as api from "../dist/index.js";
import { closeReason, CloseCode, FATAL_CLOSE_CODES, CREDENTIAL_CLOSE_CODES, reconnectPolicy } from "../dist/index.js";

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
  assert.deepEqual([...FATAL_CLOSE_CODES].sort(), [4004]);
  assert.deepEqual([...CREDENTIAL_CLOSE_CODES].sort(), [1008, 4003]);
});

test("reconnect policy per close code: credential closes get one fresh-token retry, never a blind one", () => {
  for (const code of [1001, 1006, 1009, 1011, 1013, 4001, 4002, 4005, 4006, 4007, 4008]) {
    assert.equal(reconnectPolicy(code, false), "reconnect", String(code));
    assert.equal(reconnectPolicy(code, true, true), "reconnect", String(code));
  }
  for (const code of [1008, 4003]) {
    assert.equal(reconnectPolicy(code, false), "stop", String(code));
    assert.equal(reconnectPolicy(code, true), "fresh-token", String(code));
    assert.equal(reconnectPolicy(code, true, true), "stop", String(code));
  }
  assert.equal(reconnectPolicy(4004, true), "stop");
});
