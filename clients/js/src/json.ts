/**
 * A small strict JSON parser (RFC 8259) used for the outer `encrypted`
 * envelope, where wsenc/1 §6 needs to see the *literal* of `seq`
 * (`1` is valid, `1.0` and `1e0` are not) — which `JSON.parse` hides.
 *
 * Numbers are returned as {@link JsonNumber} (raw text kept); duplicate object
 * keys are rejected. Errors are fixed strings.
 */

export class JsonNumber {
  constructor(readonly raw: string) {}
  /** True iff the literal is `-?(0|[1-9][0-9]*)` (no fraction, no exponent). */
  isIntegerLiteral(): boolean {
    return /^-?(0|[1-9][0-9]*)$/.test(this.raw);
  }
}

export type StrictJson = null | boolean | string | JsonNumber | StrictJson[] | { [k: string]: StrictJson };

class JsonSyntaxError extends Error {
  constructor() {
    super("invalid JSON");
    this.name = "JsonSyntaxError";
  }
}

const MAX_DEPTH = 32;

export function parseStrict(text: string): StrictJson {
  let i = 0;
  const n = text.length;
  const fail = (): never => {
    throw new JsonSyntaxError();
  };
  const ws = () => {
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
      else break;
    }
  };
  const str = (): string => {
    // at opening quote
    i++;
    let out = "";
    let start = i;
    while (true) {
      if (i >= n) fail();
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        out += text.slice(start, i);
        i++;
        return out;
      }
      if (c < 0x20) fail();
      if (c === 0x5c) {
        out += text.slice(start, i);
        i++;
        if (i >= n) fail();
        const e = text[i];
        i++;
        switch (e) {
          case '"': out += '"'; break;
          case "\\": out += "\\"; break;
          case "/": out += "/"; break;
          case "b": out += "\b"; break;
          case "f": out += "\f"; break;
          case "n": out += "\n"; break;
          case "r": out += "\r"; break;
          case "t": out += "\t"; break;
          case "u": {
            const h = text.slice(i, i + 4);
            if (!/^[0-9a-fA-F]{4}$/.test(h)) fail();
            out += String.fromCharCode(parseInt(h, 16));
            i += 4;
            break;
          }
          default: fail();
        }
        start = i;
      } else {
        i++;
      }
    }
  };
  const num = (): JsonNumber => {
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(i, i + 400));
    if (!m || m[0].length === 0) fail();
    const raw = m![0];
    i += raw.length;
    return new JsonNumber(raw);
  };
  const lit = (word: string, v: StrictJson): StrictJson => {
    if (text.startsWith(word, i)) {
      i += word.length;
      return v;
    }
    return fail();
  };
  const value = (depth: number): StrictJson => {
    if (depth > MAX_DEPTH) fail();
    ws();
    if (i >= n) fail();
    const c = text[i];
    if (c === "{") {
      i++;
      const obj: { [k: string]: StrictJson } = Object.create(null);
      const seen = new Set<string>();
      ws();
      if (text[i] === "}") {
        i++;
        return obj;
      }
      while (true) {
        ws();
        if (text[i] !== '"') fail();
        const k = str();
        if (seen.has(k)) fail();
        seen.add(k);
        ws();
        if (text[i] !== ":") fail();
        i++;
        obj[k] = value(depth + 1);
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return obj;
        }
        fail();
      }
    }
    if (c === "[") {
      i++;
      const arr: StrictJson[] = [];
      ws();
      if (text[i] === "]") {
        i++;
        return arr;
      }
      while (true) {
        arr.push(value(depth + 1));
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return arr;
        }
        fail();
      }
    }
    if (c === '"') return str();
    if (c === "t") return lit("true", true);
    if (c === "f") return lit("false", false);
    if (c === "n") return lit("null", null);
    if (c === "-" || (c! >= "0" && c! <= "9")) return num();
    return fail();
  };
  const v = value(0);
  ws();
  if (i !== n) fail();
  return v;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof JsonNumber);
}
