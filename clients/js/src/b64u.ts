/**
 * Strict base64url without padding (RFC 4648 §5), as wsenc/1 §1 requires.
 *
 * `decode` rejects `=`, `+`, `/`, whitespace, any character outside the
 * URL-safe alphabet, impossible lengths (len % 4 == 1) and non-canonical
 * trailing bits. Errors never echo the input.
 */

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

const DECODE: Int8Array = (() => {
  const t = new Int8Array(128).fill(-1);
  for (let i = 0; i < ALPHABET.length; i++) t[ALPHABET.charCodeAt(i)] = i;
  return t;
})();

/** Thrown by {@link decode} for any malformed input. The message never contains the input. */
export class Base64UrlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Base64UrlError";
  }
}

/** Encode bytes as base64url without padding. */
export function encode(bytes: Uint8Array): string {
  let out = "";
  const n = bytes.length;
  let i = 0;
  for (; i + 3 <= n; i += 3) {
    const v = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += ALPHABET[(v >>> 18) & 63]! + ALPHABET[(v >>> 12) & 63]! + ALPHABET[(v >>> 6) & 63]! + ALPHABET[v & 63]!;
  }
  const rem = n - i;
  if (rem === 1) {
    const v = bytes[i]! << 16;
    out += ALPHABET[(v >>> 18) & 63]! + ALPHABET[(v >>> 12) & 63]!;
  } else if (rem === 2) {
    const v = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    out += ALPHABET[(v >>> 18) & 63]! + ALPHABET[(v >>> 12) & 63]! + ALPHABET[(v >>> 6) & 63]!;
  }
  return out;
}

/** Decode strict base64url without padding. Throws {@link Base64UrlError}. */
export function decode(s: string): Uint8Array<ArrayBuffer> {
  if (typeof s !== "string") throw new Base64UrlError("base64url: not a string");
  const len = s.length;
  if (len % 4 === 1) throw new Base64UrlError("base64url: invalid length");
  const sext = new Uint8Array(len);
  for (let i = 0; i < len; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? DECODE[c]! : -1;
    if (v < 0) throw new Base64UrlError("base64url: invalid character");
    sext[i] = v;
  }
  const full = Math.floor(len / 4);
  const rem = len % 4;
  const out = new Uint8Array(full * 3 + (rem === 0 ? 0 : rem - 1));
  let o = 0;
  let i = 0;
  for (let q = 0; q < full; q++, i += 4) {
    const v = (sext[i]! << 18) | (sext[i + 1]! << 12) | (sext[i + 2]! << 6) | sext[i + 3]!;
    out[o++] = (v >>> 16) & 255;
    out[o++] = (v >>> 8) & 255;
    out[o++] = v & 255;
  }
  if (rem === 2) {
    if ((sext[i + 1]! & 0x0f) !== 0) throw new Base64UrlError("base64url: non-canonical trailing bits");
    out[o++] = (sext[i]! << 2) | (sext[i + 1]! >>> 4);
  } else if (rem === 3) {
    if ((sext[i + 2]! & 0x03) !== 0) throw new Base64UrlError("base64url: non-canonical trailing bits");
    out[o++] = ((sext[i]! << 2) | (sext[i + 1]! >>> 4)) & 255;
    out[o++] = ((sext[i + 1]! << 4) | (sext[i + 2]! >>> 2)) & 255;
  }
  return out;
}

/** Decode and require an exact decoded length. */
export function decodeLen(s: string, n: number): Uint8Array<ArrayBuffer> {
  const b = decode(s);
  if (b.length !== n) throw new Base64UrlError("base64url: unexpected decoded length");
  return b;
}
