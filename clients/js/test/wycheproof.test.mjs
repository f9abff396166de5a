// Project Wycheproof ECDH P-256 vectors (ecpoint form: raw SEC1 public points, the wsenc/1 wire form)
// through the client's strict public-key parser + WebCrypto ECDH.
// Vendored from the `wycheproof` 0.7.0 crate (Apache-2.0, see vectors/LICENSE-wycheproof-Apache-2.0).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createECDH } from "node:crypto";
import * as T from "../dist/testing.js";

const file = JSON.parse(readFileSync(new URL("./vectors/ecdh_secp256r1_ecpoint_test.json", import.meta.url), "utf8"));
const unhex = (h) => new Uint8Array(Buffer.from(h, "hex"));
const b64 = (b) => Buffer.from(b).toString("base64url");

async function importPrivateScalar(hexScalar) {
  let d = Buffer.from(hexScalar, "hex");
  while (d.length > 32 && d[0] === 0) d = d.subarray(1);
  if (d.length < 32) d = Buffer.concat([Buffer.alloc(32 - d.length), d]);
  const ecdh = createECDH("prime256v1");
  ecdh.setPrivateKey(d);
  const pub = ecdh.getPublicKey(); // 65 bytes uncompressed
  const jwk = { kty: "EC", crv: "P-256", d: b64(d), x: b64(pub.subarray(1, 33)), y: b64(pub.subarray(33)) };
  return crypto.subtle.importKey("jwk", jwk, { name: "ECDH", namedCurve: "P-256" }, false, ["deriveBits"]);
}

test("Wycheproof ecdh_secp256r1_ecpoint: every case", async () => {
  assert.equal(file.algorithm, "ECDH");
  const counts = { valid: 0, invalid: 0, acceptable: 0 };
  let total = 0;
  for (const g of file.testGroups) {
    assert.equal(g.curve, "secp256r1");
    for (const tc of g.tests) {
      total++;
      counts[tc.result]++;
      const priv = await importPrivateScalar(tc.private);
      let shared = null;
      let rejected = false;
      try {
        const pub = await T.importPublicKey(unhex(tc.public));
        shared = Buffer.from(await T.ecdh(priv, pub)).toString("hex");
      } catch {
        rejected = true;
      }
      if (tc.result === "valid") {
        assert.equal(rejected, false, `tcId ${tc.tcId} valid but rejected`);
        assert.equal(shared, tc.shared, `tcId ${tc.tcId} shared secret`);
      } else {
        // invalid: must be rejected; acceptable (compressed point): our strict parser rejects it
        assert.equal(rejected, true, `tcId ${tc.tcId} (${tc.result}, ${tc.flags}) must be rejected`);
      }
    }
  }
  assert.equal(total, file.numberOfTests);
  assert.deepEqual(counts, { valid: 330, invalid: 24, acceptable: 1 });
});

test("strict point check precedes WebCrypto: compressed, hybrid, short, long, identity-ish encodings", async () => {
  const G = unhex(
    "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
  );
  const ok = await T.importPublicKey(G);
  assert.ok(ok);
  const bad = [
    G.slice(0, 33).map((b, i) => (i === 0 ? 0x02 : b)), // compressed
    G.map((b, i) => (i === 0 ? 0x06 : b)), // hybrid prefix
    G.map((b, i) => (i === 0 ? 0x07 : b)),
    G.slice(0, 64),
    new Uint8Array([...G, 0]),
    new Uint8Array(65), // all zeros (prefix 0x00)
    new Uint8Array(1), // 0x00 identity encoding
    Uint8Array.of(4, ...new Uint8Array(64)), // (0,0) not on curve
    G.map((b, i) => (i === 64 ? b ^ 1 : b)), // off curve
  ];
  for (const b of bad) await assert.rejects(T.importPublicKey(b), (e) => e.name === "SealcastError");
});
