import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { b64u } from "../dist/testing.js";

test("base64url round trip matches Node's encoder for every length 0..70", () => {
  for (let n = 0; n <= 70; n++) {
    const b = new Uint8Array(randomBytes(n));
    const s = b64u.encode(b);
    assert.equal(s, Buffer.from(b).toString("base64url"));
    assert.deepEqual(b64u.decode(s), b);
  }
});

test("RFC 4648 test vectors (base64url, unpadded)", () => {
  const v = { "": "", f: "Zg", fo: "Zm8", foo: "Zm9v", foob: "Zm9vYg", fooba: "Zm9vYmE", foobar: "Zm9vYmFy" };
  for (const [p, e] of Object.entries(v)) {
    assert.equal(b64u.encode(new TextEncoder().encode(p)), e);
    assert.equal(new TextDecoder().decode(b64u.decode(e)), p);
  }
  assert.deepEqual(b64u.decode("-_8"), Uint8Array.of(0xfb, 0xff));
});

test("strict decoding rejects padding, +, /, whitespace, bad chars, bad length, non-canonical bits", () => {
  const bad = [
    "Zg==", "Zg=", "Zm8=", "Zm9v=", "+/8", "Zm+v", "Zm/v", " Zm9v", "Zm9v ", "Zm 9v", "Zm9v\n", "\tZg",
    "Z", "Zm9vY", "Zh", "Zm9", "Zm+", "é", "Zm9\u0000", "Zm9v\u00ff", "Zm.v", "Zm9v!",
  ];
  // "Zh" -> 'h' = 33 = 0b100001, low 4 bits non-zero; "Zm9" -> '9' low 2 bits = 01
  for (const s of bad) assert.throws(() => b64u.decode(s), (e) => e.name === "Base64UrlError" && !e.message.includes(s.trim() || "\u0000"), JSON.stringify(s));
  assert.throws(() => b64u.decode(null), /not a string/);
  assert.throws(() => b64u.decodeLen("Zm9v", 4), /unexpected decoded length/);
  assert.deepEqual(b64u.decodeLen("Zm9v", 3), new TextEncoder().encode("foo"));
});
