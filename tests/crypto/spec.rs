//! The known-answer tests of the normative spec, read from `docs/spec/wsenc1.md` itself.
//!
//! Every vector of Appendix A (wsenc/1) and Appendix C (the reference-compatible suite of §10) is parsed out of
//! the Markdown and recomputed with the implementation: the scalars from their labels, the public keys, `kid`,
//! the DH outputs, the transcript hash, every traffic secret / key / IV the appendix lists (any direction, any
//! epoch), the `confirm` tag, every example record (through the primitives and through `RecordSealer` /
//! `RecordOpener`), the wire-form JSON lines byte for byte, and the JWK coordinates. A value the test does not
//! know, a line it cannot parse, or a vector that is missing fails it, so the spec and the code cannot drift
//! apart silently. `include_str!` makes Cargo rebuild this test whenever the spec changes.
//!
//! (`kat` checks the same Appendix A values from its own hard-coded copies; this test is the one
//! tied to the document.)

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use sealcast::crypto::backend::{hkdf_sha256, sha256, AeadKey, EcSecretKey};
use sealcast::crypto::handshake::server_handshake_with_ephemeral_for_tests;
use sealcast::crypto::record::{aad, nonce};
use sealcast::crypto::schedule::{ikm, initial_secrets, kid_of, transcript_hash, TrafficSecret, TranscriptInput};
use sealcast::crypto::{
    b64, ignis, ClientHandshake, Direction, HandshakeRequest, RecordOpener, RecordSealer, ServerHello, StaticKey,
    StaticKeySet, PROTO,
};
use serde_json::Value;

const SPEC_PATH: &str = "docs/spec/wsenc1.md";
const SPEC: &str = include_str!("../../docs/spec/wsenc1.md");

// ---------------------------------------------------------------------------------------------------------------
// Reading the Markdown
// ---------------------------------------------------------------------------------------------------------------

/// The text of the level-2 section whose heading starts with `heading`, up to the next level-2 heading.
fn section(heading: &str) -> &'static str {
    let mut start = None;
    let mut offset = 0;
    for line in SPEC.split_inclusive('\n') {
        if let Some(s) = start {
            if line.starts_with("## ") {
                return &SPEC[s..offset];
            }
        } else if line.starts_with(heading) {
            start = Some(offset + line.len());
        }
        offset += line.len();
    }
    match start {
        Some(s) => &SPEC[s..],
        None => panic!("{SPEC_PATH}: no section starting with {heading:?}"),
    }
}

/// A fenced code block: its info string (e.g. `text`, `json`) and its lines.
struct Block {
    lang: String,
    lines: Vec<&'static str>,
}

/// The fenced code blocks of `text`, and the lines outside them.
fn split_blocks(text: &'static str) -> (Vec<Block>, Vec<&'static str>) {
    let mut blocks = Vec::new();
    let mut prose = Vec::new();
    let mut current: Option<Block> = None;
    for line in text.lines() {
        let fence = line.trim_start().starts_with("```");
        match (&mut current, fence) {
            (None, true) => {
                current = Some(Block {
                    lang: line.trim_start().trim_start_matches('`').trim().to_owned(),
                    lines: Vec::new(),
                })
            }
            (Some(_), true) => blocks.extend(current.take()),
            (Some(b), false) => b.lines.push(line),
            (None, false) => prose.push(line),
        }
    }
    assert!(current.is_none(), "{SPEC_PATH}: unterminated code block");
    (blocks, prose)
}

/// Splits off one JSON value at the start of `s` and returns its exact text and what follows.
fn take_json(s: &str) -> Option<(&str, &str)> {
    let mut it = serde_json::Deserializer::from_str(s).into_iter::<Value>();
    match it.next() {
        Some(Ok(_)) => {
            let end = it.byte_offset();
            Some((&s[..end], &s[end..]))
        }
        _ => None,
    }
}

/// Parses `name = value [name = value …] [trailing comment]`. A value is a `"quoted string"` (without the
/// quotes), a JSON object (its exact text), or a run of non-blank characters. `None` if the line does not start
/// with an assignment.
fn parse_assignments(line: &str) -> Option<Vec<(String, String)>> {
    let mut rest = line.trim();
    let mut out = Vec::new();
    loop {
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if name_len == 0 {
            break;
        }
        let name = &rest[..name_len];
        let Some(after) = rest[name_len..].trim_start().strip_prefix('=') else {
            break;
        };
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else if after.starts_with('{') {
            take_json(after)?
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if value.is_empty() {
            return None;
        }
        out.push((name.to_owned(), value.to_owned()));
        rest = remaining.trim_start();
    }
    (!out.is_empty()).then_some(out)
}

/// The first unsigned integer after `key` in `s`.
fn number_after(s: &str, key: &str) -> Option<usize> {
    let at = s.find(key)? + key.len();
    let digits: String = s[at..].trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn hex(s: &str, what: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("{SPEC_PATH}: {what} is not hex ({e}): {s}"))
}

fn arr<const N: usize>(v: &[u8], what: &str) -> [u8; N] {
    v.try_into()
        .unwrap_or_else(|_| panic!("{SPEC_PATH}: {what} is {} bytes, expected {N}", v.len()))
}

fn std_b64(s: &str, what: &str) -> Vec<u8> {
    STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("{SPEC_PATH}: {what} is not standard base64 ({e}): {s}"))
}

// ---------------------------------------------------------------------------------------------------------------
// Appendix A
// ---------------------------------------------------------------------------------------------------------------

/// An example record of Appendix A.
#[derive(Debug)]
struct Record {
    direction: Direction,
    epoch: u32,
    seq: u64,
    plaintext: String,
    /// The length the plaintext is padded to with zero bytes, if any.
    padded_to: Option<usize>,
    ct: Vec<u8>,
}

/// Everything Appendix A states.
struct AppendixA {
    /// `s`, `e_c`, `e_s` → (label, scalar).
    scalars: BTreeMap<String, (String, Vec<u8>)>,
    /// `name = value` lines.
    values: BTreeMap<String, String>,
    records: Vec<Record>,
    /// The wire-form JSON lines, exactly as written.
    wire: Vec<&'static str>,
    /// JWK lines: key label → (d, x, y).
    jwks: BTreeMap<String, (String, String, String)>,
}

fn direction(s: &str) -> Direction {
    match s {
        "c2s" => Direction::C2s,
        "s2c" => Direction::S2c,
        other => panic!("{SPEC_PATH}: unknown direction {other:?}"),
    }
}

fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::C2s => "c2s",
        Direction::S2c => "s2c",
    }
}

/// `s2c epoch 0 seq 1: plaintext = {..} (40 B) + 24 × 0x00 (padded to 64 B)` or `... (no padding)`.
fn parse_record_header(line: &str) -> Record {
    let (head, tail) = line
        .split_once(':')
        .unwrap_or_else(|| panic!("{SPEC_PATH}: record line without ':': {line}"));
    let words: Vec<&str> = head.split_whitespace().collect();
    let [dir, "epoch", epoch, "seq", seq] = words.as_slice() else {
        panic!("{SPEC_PATH}: record line must start `DIR epoch N seq M:`: {line}");
    };
    let tail = tail.trim_start();
    let json = tail
        .strip_prefix("plaintext")
        .map(str::trim_start)
        .and_then(|t| t.strip_prefix('='))
        .map(str::trim_start)
        .and_then(take_json);
    let Some((plaintext, note)) = json else {
        panic!("{SPEC_PATH}: record line without `plaintext = {{json}}`: {line}");
    };
    let stated_len = note
        .trim_start()
        .strip_prefix('(')
        .and_then(|n| n.split_once(')'))
        .and_then(|(inside, _)| inside.trim().strip_suffix('B'))
        .and_then(|n| n.trim().parse::<usize>().ok());
    if let Some(n) = stated_len {
        assert_eq!(n, plaintext.len(), "{SPEC_PATH}: stated plaintext length in: {line}");
    }
    let padded_to = if note.contains("no padding") {
        None
    } else if let Some(p) = number_after(note, "padded to") {
        if let Some(zeros) = number_after(note, "+") {
            assert_eq!(plaintext.len() + zeros, p, "{SPEC_PATH}: padding arithmetic in: {line}");
        }
        assert!(
            p >= plaintext.len(),
            "{SPEC_PATH}: padded below the plaintext length: {line}"
        );
        Some(p)
    } else {
        panic!("{SPEC_PATH}: a record line must say `padded to N B` or `no padding`: {line}");
    };
    Record {
        direction: direction(dir),
        epoch: epoch
            .parse()
            .unwrap_or_else(|_| panic!("{SPEC_PATH}: epoch in: {line}")),
        seq: seq.parse().unwrap_or_else(|_| panic!("{SPEC_PATH}: seq in: {line}")),
        plaintext: plaintext.to_owned(),
        padded_to,
        ct: Vec::new(),
    }
}

const JWK_LABELS: [(&str, &str); 3] = [
    ("server static", "s"),
    ("client ephemeral", "e_c"),
    ("server ephemeral", "e_s"),
];

fn appendix_a() -> AppendixA {
    let (blocks, prose) = split_blocks(section("## Appendix A"));
    let mut a = AppendixA {
        scalars: BTreeMap::new(),
        values: BTreeMap::new(),
        records: Vec::new(),
        wire: Vec::new(),
        jwks: BTreeMap::new(),
    };
    // The scalar table: | key `name` | `label` | `hex` |
    for line in prose.iter().map(|l| l.trim()).filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let ticked = |cell: &str| cell.split('`').nth(1).map(str::to_owned);
        let [key, label, scalar] = cells.as_slice() else {
            panic!("{SPEC_PATH}: scalar table row without three cells: {line}");
        };
        if scalar.starts_with("---") || *scalar == "Scalar (hex)" {
            continue;
        }
        let (Some(name), Some(label), Some(scalar)) = (ticked(key), ticked(label), ticked(scalar)) else {
            panic!("{SPEC_PATH}: scalar table row needs `name`, `label` and `hex` in backticks: {line}");
        };
        let scalar = hex(&scalar, &format!("scalar {name}"));
        assert!(
            a.scalars.insert(name.clone(), (label, scalar)).is_none(),
            "duplicate scalar {name}"
        );
    }
    for block in blocks {
        match block.lang.as_str() {
            "json" => a.wire.extend(block.lines.into_iter().filter(|l| !l.trim().is_empty())),
            "text" => {
                for line in block.lines {
                    let t = line.trim();
                    if t.is_empty() {
                        continue;
                    }
                    if t.starts_with("c2s ") || t.starts_with("s2c ") {
                        a.records.push(parse_record_header(t));
                        continue;
                    }
                    if let Some((label, rest)) = t.split_once(':') {
                        if let Some((_, name)) = JWK_LABELS.iter().find(|(l, _)| *l == label.trim()) {
                            let mut d = BTreeMap::new();
                            for kv in rest.split_whitespace() {
                                let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{SPEC_PATH}: JWK {t}"));
                                d.insert(k, v.to_owned());
                            }
                            let get =
                                |k: &str| d.get(k).cloned().unwrap_or_else(|| panic!("{SPEC_PATH}: JWK {k}: {t}"));
                            let jwk = (get("d"), get("x"), get("y"));
                            assert!(a.jwks.insert((*name).to_owned(), jwk).is_none(), "duplicate JWK {name}");
                            continue;
                        }
                    }
                    let Some(pairs) = parse_assignments(t) else {
                        panic!("{SPEC_PATH}: Appendix A line not understood by tests/crypto/spec.rs: {t}");
                    };
                    for (name, value) in pairs {
                        if name == "ct" {
                            let Some(rec) = a.records.last_mut().filter(|r| r.ct.is_empty()) else {
                                panic!("{SPEC_PATH}: `ct =` without a record line before it: {t}");
                            };
                            rec.ct = hex(&value, "record ct");
                        } else {
                            assert!(a.values.insert(name.clone(), value).is_none(), "duplicate value {name}");
                        }
                    }
                }
            }
            other => panic!("{SPEC_PATH}: unexpected code block `{other}` in Appendix A"),
        }
    }
    for r in &a.records {
        assert!(!r.ct.is_empty(), "{SPEC_PATH}: record {r:?} has no `ct =` line");
    }
    a
}

/// The Appendix A session, computed from the inputs the appendix gives (scalars, salt, ids).
struct Session {
    s: EcSecretKey,
    e_c: EcSecretKey,
    e_s: EcSecretKey,
    s_pub: [u8; 65],
    e_c_pub: [u8; 65],
    e_s_pub: [u8; 65],
    salt: [u8; 32],
    kid: [u8; 8],
    conn_id: String,
    user_id: String,
    th: [u8; 32],
}

impl AppendixA {
    fn value(&self, name: &str) -> &str {
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("{SPEC_PATH}: Appendix A does not give `{name}`"))
    }

    fn scalar(&self, name: &str) -> &[u8] {
        &self
            .scalars
            .get(name)
            .unwrap_or_else(|| panic!("{SPEC_PATH}: the scalar table has no `{name}`"))
            .1
    }

    fn session(&self) -> Session {
        let key = |n: &str| {
            EcSecretKey::from_scalar_bytes(self.scalar(n)).unwrap_or_else(|_| panic!("scalar {n} is not valid"))
        };
        let (s, e_c, e_s) = (key("s"), key("e_c"), key("e_s"));
        let (s_pub, e_c_pub, e_s_pub) = (
            s.public_key().to_sec1(),
            e_c.public_key().to_sec1(),
            e_s.public_key().to_sec1(),
        );
        let salt = arr(&hex(self.value("salt"), "salt"), "salt");
        let kid = kid_of(&s_pub);
        let conn_id = self.value("connId").to_owned();
        let user_id = self.value("userId").to_owned();
        let th = transcript_hash(&TranscriptInput {
            kid: &kid,
            server_static: &s_pub,
            client_ephemeral: &e_c_pub,
            server_ephemeral: &e_s_pub,
            salt: &salt,
            conn_id: &conn_id,
            user_id: &user_id,
        })
        .expect("transcript fields fit");
        Session {
            s,
            e_c,
            e_s,
            s_pub,
            e_c_pub,
            e_s_pub,
            salt,
            kid,
            conn_id,
            user_id,
            th,
        }
    }
}

impl Session {
    /// `ts_d_n`, by the implementation's schedule.
    fn traffic_secret(&self, d: Direction, epoch: u32) -> TrafficSecret {
        let ee = self.e_s.diffie_hellman(&self.e_c.public_key());
        let es = self.s.diffie_hellman(&self.e_c.public_key());
        let (c2s, s2c) = initial_secrets(&self.salt, &ikm(&ee, &es), &self.th);
        let mut ts = match d {
            Direction::C2s => c2s,
            Direction::S2c => s2c,
        };
        for _ in 0..epoch {
            ts = ts.next();
        }
        ts
    }

    /// A sealer whose next record is `(epoch, seq)`, reached through the implementation's key updates.
    fn sealer_at(&self, d: Direction, epoch: u32, seq: u64) -> RecordSealer {
        if epoch == 0 {
            return RecordSealer::new(d, self.traffic_secret(d, 0), self.th, seq);
        }
        assert!(
            seq < 4096,
            "{SPEC_PATH}: example records beyond epoch 0 need a small seq"
        );
        let first = if d == Direction::S2c { 1 } else { 0 };
        let mut sealer = RecordSealer::new(d, self.traffic_secret(d, 0), self.th, first);
        let mut sink = Vec::new();
        for _ in 0..epoch {
            sealer.request_key_update(&mut sink).expect("key update");
        }
        for _ in 0..seq {
            sealer
                .seal(br#"{"event":"filler","data":{}}"#, &mut sink)
                .expect("seal");
        }
        assert_eq!((sealer.epoch(), sealer.next_seq()), (epoch, seq));
        sealer
    }
}

fn seal_one(sealer: &mut RecordSealer, inner: &[u8]) -> Bytes {
    let mut out = Vec::new();
    sealer.seal(inner, &mut out).expect("seal");
    assert_eq!(out.len(), 1, "one record per message");
    out.remove(0)
}

/// Checks every `name = value` of Appendix A against the implementation; fails on names it does not know.
#[test]
fn appendix_a_values_match_the_implementation() {
    let a = appendix_a();
    let k = a.session();
    let mut checked = Vec::new();
    for (name, value) in &a.values {
        let expect_hex = |bytes: &[u8]| assert_eq!(value, &hex::encode(bytes), "{SPEC_PATH}: `{name}`");
        match name.as_str() {
            "PROTO" => assert_eq!(value.as_bytes(), PROTO, "{SPEC_PATH}: PROTO"),
            "S" => expect_hex(&k.s_pub),
            "e_c" => expect_hex(&k.e_c_pub),
            "e_s" => expect_hex(&k.e_s_pub),
            // An input, but a labelled hash like the scalars.
            "salt" => expect_hex(&sha256(&[b"wsenc/1 test salt"])),
            // Inputs: used by every other value.
            "connId" | "userId" => {}
            "kid" => {
                expect_hex(&k.kid);
                let key = StaticKey::from_scalar_bytes_for_tests(a.scalar("s")).expect("static key");
                expect_hex(&key.kid());
            }
            "ee" => {
                expect_hex(k.e_s.diffie_hellman(&k.e_c.public_key()).as_ref());
                expect_hex(k.e_c.diffie_hellman(&k.e_s.public_key()).as_ref());
            }
            "es" => {
                expect_hex(k.s.diffie_hellman(&k.e_c.public_key()).as_ref());
                expect_hex(k.e_c.diffie_hellman(&k.s.public_key()).as_ref());
            }
            "th" => expect_hex(&k.th),
            "confirm" => {
                let ts = k.traffic_secret(Direction::S2c, 0);
                let tag = AeadKey::new(&ts.key())
                    .seal_in_place(&nonce(&ts.iv(), 0), &aad(Direction::S2c, &k.th, 0, 0), &mut [])
                    .expect("seal");
                expect_hex(&tag);
            }
            other => {
                // ts_/key_/iv_ DIR _ EPOCH, for any direction and epoch the appendix lists.
                let parts: Vec<&str> = other.split('_').collect();
                let [what @ ("ts" | "key" | "iv"), dir, epoch] = parts.as_slice() else {
                    panic!("{SPEC_PATH}: Appendix A value `{other}` is not checked by tests/crypto/spec.rs: add it");
                };
                let epoch: u32 = epoch
                    .parse()
                    .unwrap_or_else(|_| panic!("{SPEC_PATH}: epoch of `{other}`"));
                let ts = k.traffic_secret(direction(dir), epoch);
                match *what {
                    "ts" => expect_hex(ts.expose_secret_for_tests()),
                    "key" => expect_hex(ts.key().as_ref()),
                    _ => expect_hex(ts.iv().as_ref()),
                }
            }
        }
        checked.push(name.as_str());
    }
    // What the appendix has always given; losing one of these is a regression of the document.
    for required in [
        "PROTO",
        "S",
        "e_c",
        "e_s",
        "salt",
        "connId",
        "userId",
        "kid",
        "ee",
        "es",
        "th",
        "ts_c2s_0",
        "ts_s2c_0",
        "key_c2s_0",
        "iv_c2s_0",
        "key_s2c_0",
        "iv_s2c_0",
        "ts_c2s_1",
        "key_c2s_1",
        "iv_c2s_1",
        "confirm",
    ] {
        assert!(checked.contains(&required), "{SPEC_PATH}: Appendix A lost `{required}`");
    }
}

#[test]
fn appendix_a_scalars_are_the_labelled_hashes() {
    let a = appendix_a();
    let names: Vec<&str> = a.scalars.keys().map(String::as_str).collect();
    assert_eq!(names, ["e_c", "e_s", "s"], "{SPEC_PATH}: the scalar table");
    for (name, (label, scalar)) in &a.scalars {
        assert_eq!(
            sha256(&[label.as_bytes()]).to_vec(),
            *scalar,
            "{SPEC_PATH}: scalar {name} = SHA-256({label:?})"
        );
    }
}

#[test]
fn appendix_a_records_match_the_implementation() {
    let a = appendix_a();
    let k = a.session();
    assert!(
        a.records.iter().any(|r| r.direction == Direction::C2s)
            && a.records.iter().any(|r| r.direction == Direction::S2c),
        "{SPEC_PATH}: Appendix A should give an example record in each direction"
    );
    for r in &a.records {
        let what = format!("{} epoch {} seq {}", dir_name(r.direction), r.epoch, r.seq);
        let ts = k.traffic_secret(r.direction, r.epoch);
        let (key, iv) = (AeadKey::new(&ts.key()), ts.iv());
        let (n, ad) = (nonce(&iv, r.seq), aad(r.direction, &k.th, r.epoch, r.seq));

        // The formulas of §6 with the primitives.
        let mut body = r.plaintext.as_bytes().to_vec();
        if let Some(p) = r.padded_to {
            body.resize(p, 0);
        }
        let mut sealed = body.clone();
        let tag = key.seal_in_place(&n, &ad, &mut sealed).expect("seal");
        sealed.extend_from_slice(&tag);
        assert_eq!(hex::encode(&sealed), hex::encode(&r.ct), "{SPEC_PATH}: ct of {what}");

        // The record layer: same ciphertext, and the opener returns the message without its padding.
        let mut sealer = k.sealer_at(r.direction, r.epoch, r.seq);
        sealer.set_padding(r.padded_to.and_then(NonZeroUsize::new));
        let frame = seal_one(&mut sealer, r.plaintext.as_bytes());
        let v: Value = serde_json::from_slice(&frame).expect("record is JSON");
        assert_eq!(v["data"]["seq"], r.seq, "{what}");
        let wire_iv = b64::decode(v["data"]["iv"].as_str().expect("iv")).expect("iv b64u");
        assert_eq!(wire_iv, n.to_vec(), "{SPEC_PATH}: iv of {what} is the nonce");
        let wire_ct = b64::decode(v["data"]["ct"].as_str().expect("ct")).expect("ct b64u");
        assert_eq!(
            hex::encode(wire_ct),
            hex::encode(&r.ct),
            "{SPEC_PATH}: RecordSealer ct of {what}"
        );
        if r.epoch == 0 {
            let mut opener = RecordOpener::new(r.direction, k.traffic_secret(r.direction, 0), k.th, r.seq);
            let opened = opener.open(&frame).expect("open").expect("a message, not a key update");
            assert_eq!(opened, r.plaintext.as_bytes(), "{what}");
        }

        // The negative checks the appendix requires.
        let (ct_body, ct_tag) = r.ct.split_at(r.ct.len() - 16);
        let open = |n: [u8; 12], ad: [u8; 56], body: &[u8], tag: &[u8]| {
            let mut b = body.to_vec();
            key.open_in_place(&n, &ad, &mut b, &arr(tag, "tag")).map(|()| b)
        };
        assert_eq!(open(n, ad, ct_body, ct_tag).expect("control"), body, "{what}");
        let other_dir = match r.direction {
            Direction::C2s => Direction::S2c,
            Direction::S2c => Direction::C2s,
        };
        assert!(
            open(n, aad(r.direction, &k.th, r.epoch, r.seq + 1), ct_body, ct_tag).is_err(),
            "wrong seq in AAD"
        );
        assert!(
            open(n, aad(other_dir, &k.th, r.epoch, r.seq), ct_body, ct_tag).is_err(),
            "wrong direction byte"
        );
        assert!(
            open(n, aad(r.direction, &k.th, r.epoch + 1, r.seq), ct_body, ct_tag).is_err(),
            "wrong epoch"
        );
        assert!(
            open(nonce(&iv, r.seq + 1), ad, ct_body, ct_tag).is_err(),
            "nonce of another seq"
        );
        for bit in 0..128 {
            let mut bad = ct_tag.to_vec();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(open(n, ad, ct_body, &bad).is_err(), "flipped tag bit {bit} of {what}");
        }
    }
}

#[test]
fn appendix_a_wire_form_is_what_the_implementation_sends() {
    let a = appendix_a();
    let k = a.session();
    let keys = StaticKeySet::new(StaticKey::from_scalar_bytes_for_tests(a.scalar("s")).expect("static key"));
    let client = ClientHandshake::with_ephemeral_for_tests(a.scalar("e_c")).expect("client");
    let mut auth = serde_json::Map::new();
    auth.insert("token".into(), "opaque".into());
    client.insert_auth_fields(&mut auth, None);
    let req = HandshakeRequest::from_auth_data(&Value::Object(auth))
        .expect("valid authenticate")
        .expect("an encrypted client");
    let (hello, _sealer, _opener) =
        server_handshake_with_ephemeral_for_tests(&keys, &req, &k.conn_id, &k.user_id, a.scalar("e_s"), k.salt)
            .expect("server handshake");

    let (mut connected, mut encrypted) = (0, 0);
    for line in &a.wire {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{SPEC_PATH}: wire line is not JSON ({e}): {line}"));
        match v["event"].as_str() {
            Some("connected") => {
                connected += 1;
                let d = &v["data"];
                assert_eq!(d["id"], k.conn_id.as_str(), "{SPEC_PATH}: connected.id");
                assert_eq!(d["userId"], k.user_id.as_str(), "{SPEC_PATH}: connected.userId");
                assert_eq!(d["v"], 1, "{SPEC_PATH}: connected.v");
                assert_eq!(
                    d["serverPublicKey"],
                    b64::encode(&k.e_s_pub),
                    "{SPEC_PATH}: serverPublicKey"
                );
                assert_eq!(d["salt"], b64::encode(&k.salt), "{SPEC_PATH}: salt");
                assert_eq!(d["kid"], b64::encode(&k.kid), "{SPEC_PATH}: kid");
                assert_eq!(d["confirm"], hello.confirm_b64u(), "{SPEC_PATH}: confirm");
                let parsed = ServerHello::from_connected_data(d).expect("the client accepts it");
                assert_eq!(parsed, hello, "{SPEC_PATH}: the connected line is the server's hello");
                // and the client finishes the handshake against it
                let pin = keys.current().pinned();
                let finish = ClientHandshake::with_ephemeral_for_tests(a.scalar("e_c"))
                    .expect("client")
                    .finish(&[pin], &parsed, &k.conn_id, &k.user_id);
                assert!(finish.is_ok(), "{SPEC_PATH}: the client rejects the connected line");
            }
            Some("encrypted") => {
                encrypted += 1;
                let d = &v["data"];
                let seq = d["seq"].as_u64().expect("seq");
                let ct = b64::decode(d["ct"].as_str().expect("ct")).expect("ct b64u");
                let Some(r) = a.records.iter().find(|r| r.seq == seq && r.ct == ct) else {
                    panic!("{SPEC_PATH}: wire record is none of the example records: {line}");
                };
                let mut sealer = k.sealer_at(r.direction, r.epoch, r.seq);
                sealer.set_padding(r.padded_to.and_then(NonZeroUsize::new));
                let frame = seal_one(&mut sealer, r.plaintext.as_bytes());
                assert_eq!(
                    std::str::from_utf8(&frame).expect("utf-8"),
                    *line,
                    "{SPEC_PATH}: wire form"
                );
            }
            _ => panic!("{SPEC_PATH}: unexpected wire line: {line}"),
        }
    }
    assert!(
        connected >= 1 && encrypted >= 1,
        "{SPEC_PATH}: Appendix A lost its wire form"
    );
}

#[test]
fn appendix_a_jwks_match_the_keys() {
    let a = appendix_a();
    assert_eq!(a.jwks.len(), JWK_LABELS.len(), "{SPEC_PATH}: one JWK per test key");
    for (name, (d, x, y)) in &a.jwks {
        let scalar = a.scalar(name);
        let public = EcSecretKey::from_scalar_bytes(scalar)
            .expect("scalar")
            .public_key()
            .to_sec1();
        assert_eq!(*d, b64::encode(scalar), "{SPEC_PATH}: JWK d of {name}");
        assert_eq!(*x, b64::encode(&public[1..33]), "{SPEC_PATH}: JWK x of {name}");
        assert_eq!(*y, b64::encode(&public[33..65]), "{SPEC_PATH}: JWK y of {name}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Appendix C: the reference-compatible suite
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn appendix_c_reference_suite_vector_matches_the_implementation() {
    let (blocks, _) = split_blocks(section("## Appendix C"));
    let mut values = BTreeMap::new();
    let mut wire = Vec::new();
    for block in blocks {
        for line in block.lines.into_iter().filter(|l| !l.trim().is_empty()) {
            match block.lang.as_str() {
                "json" => wire.push(line),
                "text" => {
                    let Some(pairs) = parse_assignments(line) else {
                        panic!("{SPEC_PATH}: Appendix C line not understood by tests/crypto/spec.rs: {line}");
                    };
                    for (name, value) in pairs {
                        assert!(values.insert(name.clone(), value).is_none(), "duplicate value {name}");
                    }
                }
                other => panic!("{SPEC_PATH}: unexpected code block `{other}` in Appendix C"),
            }
        }
    }
    const NAMES: [&str; 11] = [
        "aesKey",
        "clientPrivScalar",
        "clientPublicKey",
        "ct",
        "hkdfInfo",
        "iv",
        "plaintext",
        "salt",
        "serverPrivScalar",
        "serverPublicKey",
        "sharedSecret",
    ];
    let names: Vec<&str> = values.keys().map(String::as_str).collect();
    assert_eq!(
        names, NAMES,
        "{SPEC_PATH}: Appendix C values (tests/crypto/spec.rs checks exactly these)"
    );
    let v = |n: &str| -> String { values[n].clone() };

    let server = EcSecretKey::from_scalar_bytes(&hex(&v("serverPrivScalar"), "serverPrivScalar")).expect("scalar");
    let client = EcSecretKey::from_scalar_bytes(&hex(&v("clientPrivScalar"), "clientPrivScalar")).expect("scalar");
    assert_eq!(STANDARD.encode(server.public_key().as_sec1()), v("serverPublicKey"));
    assert_eq!(STANDARD.encode(client.public_key().as_sec1()), v("clientPublicKey"));
    // The server parses the client's key in the suite's encoding.
    let client_pub = ignis::parse_public_key(&v("clientPublicKey")).expect("client key parses");
    let shared = server.diffie_hellman(&client_pub);
    assert_eq!(hex::encode(shared.as_ref()), v("sharedSecret"));
    assert_eq!(
        hex::encode(client.diffie_hellman(&server.public_key()).as_ref()),
        v("sharedSecret")
    );
    assert_eq!(v("hkdfInfo").as_bytes(), ignis::HKDF_INFO);
    let salt = std_b64(&v("salt"), "salt");
    let mut aes_key = [0u8; 32];
    hkdf_sha256(&salt, shared.as_ref(), &[ignis::HKDF_INFO], &mut aes_key).expect("hkdf");
    assert_eq!(hex::encode(aes_key), v("aesKey"));

    let key = ignis::derive(&server, &client_pub, &salt);
    let iv: [u8; 12] = arr(&std_b64(&v("iv"), "iv"), "iv");
    let frame = key.seal_with_iv(&iv, v("plaintext").as_bytes()).expect("seal");
    let sent: Value = serde_json::from_str(&frame).expect("JSON");
    assert_eq!(sent["data"]["ct"], v("ct"), "{SPEC_PATH}: Appendix C ct");
    assert_eq!(sent["data"]["iv"], v("iv"));
    assert_eq!(key.open(frame.as_bytes()).expect("open"), v("plaintext").as_bytes());
    assert_eq!(wire.len(), 1, "{SPEC_PATH}: Appendix C gives one wire record");
    assert_eq!(wire[0], frame, "{SPEC_PATH}: Appendix C wire form");
    // the client derives the same key
    let client_key = ignis::derive(&client, &server.public_key(), &salt);
    assert_eq!(
        client_key.open(wire[0].as_bytes()).expect("open"),
        v("plaintext").as_bytes()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// The parser itself: it must notice edits, not skip them.
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn the_parser_reads_assignments_strictly() {
    assert_eq!(
        parse_assignments(r#"connId    = "c-0001"      userId = "u-42""#),
        Some(vec![
            ("connId".into(), "c-0001".into()),
            ("userId".into(), "u-42".into())
        ])
    );
    assert_eq!(
        parse_assignments("salt      = 6c0e   (= SHA-256(\"wsenc/1 test salt\"))"),
        Some(vec![("salt".into(), "6c0e".into())])
    );
    assert_eq!(
        parse_assignments(r#"plaintext = {"event":"a b","data":{}} trailing"#),
        Some(vec![("plaintext".into(), r#"{"event":"a b","data":{}}"#.into())])
    );
    assert_eq!(parse_assignments("(note) x = 1"), None);
    assert_eq!(parse_assignments("x ="), None);
    let r = parse_record_header(
        r#"s2c epoch 2 seq 7: plaintext = {"event":"m","data":{}} (23 B) + 9 × 0x00 (padded to 32 B)"#,
    );
    assert_eq!(
        (dir_name(r.direction), r.epoch, r.seq, r.padded_to),
        ("s2c", 2, 7, Some(32))
    );
    let r = parse_record_header(r#"c2s epoch 0 seq 0: plaintext = {"event":"ping","data":{}} (no padding)"#);
    assert_eq!(r.padded_to, None);
    assert!(
        std::panic::catch_unwind(|| parse_record_header(r#"c2s epoch 0 seq 0: plaintext = {"event":"x"}"#)).is_err()
    );
    assert!(std::panic::catch_unwind(|| parse_record_header(
        r#"c2s epoch 0 seq 0: plaintext = {"event":"x"} (99 B) (no padding)"#
    ))
    .is_err());
}

// ---------------------------------------------------------------------------------------------------------------
// Appendix D: group records (§11)
// ---------------------------------------------------------------------------------------------------------------

/// Everything Appendix D states: its `name = value` lines, the two example records and the wire lines.
struct AppendixD {
    values: BTreeMap<String, String>,
    wire: Vec<&'static str>,
}

fn appendix_d() -> AppendixD {
    let (blocks, _) = split_blocks(section("## Appendix D"));
    let mut d = AppendixD {
        values: BTreeMap::new(),
        wire: Vec::new(),
    };
    let mut record = None;
    for block in blocks {
        match block.lang.as_str() {
            "text" => {
                for line in block.lines {
                    let t = line.trim();
                    let (name, value) = if let Some(rest) = t.strip_prefix("ct = ") {
                        let prefix = record
                            .take()
                            .unwrap_or_else(|| panic!("{SPEC_PATH}: Appendix D ct without a record"));
                        (format!("{prefix}_ct"), rest.to_owned())
                    } else if let Some((head, pt)) = t.split_once(": plaintext = ") {
                        let prefix = if head.starts_with("room_key record") {
                            "room_key"
                        } else {
                            "header"
                        };
                        record = Some(prefix);
                        let pt = pt.rsplit_once(" (").map_or(pt, |(p, _)| p);
                        (format!("{prefix}_pt"), pt.to_owned())
                    } else if let Some((name, value)) = t.split_once(" = ") {
                        let value = value.trim();
                        let value = if name.trim() == "message" {
                            value.rsplit_once(" (").map_or(value, |(v, _)| v)
                        } else {
                            value.split_whitespace().next().unwrap_or_default()
                        };
                        (name.trim().to_owned(), value.to_owned())
                    } else {
                        panic!("{SPEC_PATH}: Appendix D line not understood by tests/crypto/spec.rs: {t}");
                    };
                    d.values.insert(name, value);
                }
            }
            "json" => d.wire.extend(block.lines),
            other => panic!("{SPEC_PATH}: unexpected code block `{other}` in Appendix D"),
        }
    }
    d
}

impl AppendixD {
    fn value(&self, name: &str) -> &str {
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("{SPEC_PATH}: Appendix D does not give `{name}`"))
    }

    fn room_key(&self) -> sealcast::crypto::RoomKey {
        let k: [u8; 32] = arr(&hex(self.value("K_r"), "K_r"), "K_r");
        sealcast::crypto::RoomKey::new(
            self.value("room").into(),
            self.value("epoch").parse().expect("epoch"),
            zeroize::Zeroizing::new(k),
        )
        .expect("room key")
    }
}

#[test]
fn appendix_d_values_match_the_implementation() {
    let d = appendix_d();
    let known = [
        "room",
        "epoch",
        "counter",
        "K_r",
        "message",
        "body_aad",
        "body",
        "digest",
        "room_key_pt",
        "room_key_ct",
        "header_pt",
        "header_ct",
    ];
    for name in d.values.keys() {
        assert!(
            known.contains(&name.as_str()),
            "{SPEC_PATH}: Appendix D value `{name}` is not checked"
        );
    }
    assert_eq!(
        hex(d.value("K_r"), "K_r"),
        sha256(&[b"wsenc/1 test room key"]),
        "{SPEC_PATH}: K_r is SHA-256 of its label"
    );
    let key = d.room_key();
    let counter: u64 = d.value("counter").parse().expect("counter");
    let sealed = key
        .seal_body(counter, d.value("message").as_bytes(), None)
        .expect("seal body");
    let body = b64::decode(std::str::from_utf8(sealed.body_b64u()).unwrap()).unwrap();
    assert_eq!(hex::encode(&body), d.value("body"), "{SPEC_PATH}: Appendix D body");
    assert_eq!(
        hex::encode(sealed.digest()),
        d.value("digest"),
        "{SPEC_PATH}: Appendix D digest"
    );
    // body_aad, through the primitive: the body opens under exactly this AAD.
    let body_aad = hex(d.value("body_aad"), "body_aad");
    let mut body_nonce = [0u8; 12];
    body_nonce[4..].copy_from_slice(&counter.to_be_bytes());
    let (ct, tag) = body[8..].split_at(body.len() - 8 - 16);
    let mut pt = ct.to_vec();
    AeadKey::new(key.key_bytes())
        .open_in_place(&body_nonce, &body_aad, &mut pt, tag.try_into().unwrap())
        .expect("body opens under body_aad");
    assert_eq!(pt, d.value("message").as_bytes());

    // The two records, sealed by the implementation on Appendix A's session.
    let a = appendix_a();
    let mut sealer = a.session().sealer_at(Direction::S2c, 0, 1);
    sealer.enable_room_keys();
    let mut out: Vec<Bytes> = Vec::new();
    sealer.seal_group(&key, &sealed, &mut out).expect("seal group");
    assert_eq!(out.len(), 2, "room_key record, then the group record");
    let session = a.session();
    let ts = session.traffic_secret(Direction::S2c, 0);
    let key_s2c = ts.key();
    let iv_s2c = ts.iv();
    for (i, (pt_name, ct_name, label)) in [
        ("room_key_pt", "room_key_ct", &b"wsenc/1 rec"[..]),
        ("header_pt", "header_ct", &b"wsenc/1 hdr"[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let wire: Value = serde_json::from_slice(&out[i]).unwrap();
        let ct = b64::decode(wire["data"]["ct"].as_str().unwrap()).unwrap();
        assert_eq!(hex::encode(&ct), d.value(ct_name), "{SPEC_PATH}: Appendix D {ct_name}");
        let seq = 1 + i as u64;
        let mut aad = aad(Direction::S2c, &session.th, 0, seq);
        aad[..11].copy_from_slice(label);
        let (body, tag) = ct.split_at(ct.len() - 16);
        let mut pt = body.to_vec();
        AeadKey::new(&key_s2c)
            .open_in_place(&nonce(&iv_s2c, seq), &aad, &mut pt, tag.try_into().unwrap())
            .expect("record opens");
        let expected = if pt_name == "header_pt" {
            hex(d.value(pt_name), pt_name)
        } else {
            d.value(pt_name).as_bytes().to_vec()
        };
        assert_eq!(pt, expected, "{SPEC_PATH}: Appendix D {pt_name}");
    }
    assert_eq!(d.wire.len(), 2, "{SPEC_PATH}: Appendix D gives two wire records");
    for (sent, line) in out.iter().zip(&d.wire) {
        assert_eq!(
            std::str::from_utf8(sent).unwrap(),
            *line,
            "{SPEC_PATH}: Appendix D wire form"
        );
    }
}

/// The client side of Appendix D: the wire lines open, and each negative check of the appendix fails.
#[test]
fn appendix_d_records_open_and_the_negative_checks_fail() {
    let d = appendix_d();
    let a = appendix_a();
    let session = a.session();
    let opener = |room_keys: bool, first: u64| {
        let mut o = RecordOpener::new(
            Direction::S2c,
            session.traffic_secret(Direction::S2c, 0),
            session.th,
            first,
        );
        if room_keys {
            o.enable_room_keys();
        }
        o
    };
    let (key_line, group_line) = (d.wire[0].as_bytes(), d.wire[1].as_bytes());
    let mut o = opener(true, 1);
    assert_eq!(o.open(key_line).unwrap(), None, "the room_key record is consumed");
    assert_eq!(o.room_key("lobby").unwrap().key_bytes(), d.room_key().key_bytes());
    assert_eq!(o.open(group_line).unwrap().unwrap(), d.value("message").as_bytes());

    // Without the room_key record before it.
    assert!(opener(true, 2).open(group_line).is_err());
    // On a session that did not negotiate roomKeys.
    let mut plain = opener(false, 1);
    assert!(plain.open(key_line).unwrap().is_some());
    assert_eq!(plain.open(group_line).unwrap_err().close_code(), 4005);
    // The header sealed with the §6 label: rebuild the record's ct under `wsenc/1 rec`.
    let ts = session.traffic_secret(Direction::S2c, 0);
    let mut hdr = hex(d.value("header_pt"), "header_pt");
    let tag = AeadKey::new(&ts.key())
        .seal_in_place(&nonce(&ts.iv(), 2), &aad(Direction::S2c, &session.th, 0, 2), &mut hdr)
        .unwrap();
    hdr.extend_from_slice(&tag);
    let original: Value = serde_json::from_slice(group_line).unwrap();
    let relabelled = std::str::from_utf8(group_line)
        .unwrap()
        .replace(original["data"]["ct"].as_str().unwrap(), &b64::encode(&hdr));
    let mut o = opener(true, 1);
    o.open(key_line).unwrap();
    assert_eq!(o.open(relabelled.as_bytes()).unwrap_err().close_code(), 4005);
    // The body of another counter or epoch, and one flipped bit of the body.
    let key = d.room_key();
    let body_b64 = original["data"]["body"].as_str().unwrap();
    let mut variants = Vec::new();
    let other = key.seal_body(4, d.value("message").as_bytes(), None).unwrap();
    variants.push(std::str::from_utf8(other.body_b64u()).unwrap().to_owned());
    let k8 = sealcast::crypto::RoomKey::new("lobby".into(), 8, zeroize::Zeroizing::new(*key.key_bytes())).unwrap();
    let other = k8.seal_body(3, d.value("message").as_bytes(), None).unwrap();
    variants.push(std::str::from_utf8(other.body_b64u()).unwrap().to_owned());
    let mut flipped = b64::decode(body_b64).unwrap();
    flipped[20] ^= 1;
    variants.push(b64::encode(&flipped));
    for body in variants {
        let forged = std::str::from_utf8(group_line).unwrap().replace(body_b64, &body);
        let mut o = opener(true, 1);
        o.open(key_line).unwrap();
        assert_eq!(o.open(forged.as_bytes()).unwrap_err().close_code(), 4005);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Appendix E: batched group records (§11.4)
// ---------------------------------------------------------------------------------------------------------------

/// Appendix E's `name = value` lines (a trailing parenthesised note dropped) and its JSON wire lines.
fn appendix_e() -> (BTreeMap<String, String>, Vec<&'static str>) {
    let (blocks, _) = split_blocks(section("## Appendix E"));
    let mut values = BTreeMap::new();
    let mut wire = Vec::new();
    for block in blocks {
        match block.lang.as_str() {
            "text" => {
                for line in block.lines {
                    let (name, value) = line
                        .split_once(" = ")
                        .unwrap_or_else(|| panic!("{SPEC_PATH}: Appendix E line not understood: {line}"));
                    let value = value.trim();
                    let value = value.split_once("   (").map_or(value, |(v, _)| v).trim();
                    values.insert(name.trim().to_owned(), value.to_owned());
                }
            }
            "json" => wire.extend(block.lines),
            other => panic!("{SPEC_PATH}: unexpected code block `{other}` in Appendix E"),
        }
    }
    (values, wire)
}

fn e_value<'a>(values: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    values
        .get(name)
        .unwrap_or_else(|| panic!("{SPEC_PATH}: Appendix E does not give `{name}`"))
}

/// The second room's key of Appendix E.
fn appendix_e_room_key(values: &BTreeMap<String, String>) -> sealcast::crypto::RoomKey {
    assert_eq!(
        hex(e_value(values, "K_r2"), "K_r2"),
        sha256(&[b"wsenc/1 test room key 2"]),
        "{SPEC_PATH}: K_r2 is SHA-256 of its label"
    );
    let k: [u8; 32] = arr(&hex(e_value(values, "K_r2"), "K_r2"), "K_r2");
    sealcast::crypto::RoomKey::new(
        e_value(values, "room_2").into(),
        e_value(values, "epoch_2").parse().expect("epoch_2"),
        zeroize::Zeroizing::new(k),
    )
    .expect("room key")
}

/// The implementation seals Appendix E's records byte for byte: Appendix D's two records, the second room's
/// `room_key` record and the batched record of three bodies from the two rooms.
#[test]
fn appendix_e_batched_record_matches_the_implementation() {
    let d = appendix_d();
    let (values, wire) = appendix_e();
    let lobby = d.room_key();
    let den = appendix_e_room_key(&values);
    let sealed: Vec<_> = [
        (&lobby, 4u64, "message_1"),
        (&den, 0, "message_2"),
        (&lobby, 5, "message_3"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (key, counter, message))| {
        let sealed = key
            .seal_body(counter, e_value(&values, message).as_bytes(), None)
            .expect("seal body");
        let body = b64::decode(std::str::from_utf8(sealed.body_b64u()).unwrap()).unwrap();
        let name = format!("body_{}", i + 1);
        assert_eq!(
            hex::encode(&body),
            e_value(&values, &name),
            "{SPEC_PATH}: Appendix E {name}"
        );
        sealed
    })
    .collect();
    let mut header = Vec::new();
    for (key, body) in [(&lobby, &sealed[0]), (&den, &sealed[1]), (&lobby, &sealed[2])] {
        header.extend_from_slice(&key.epoch().to_be_bytes());
        header.extend_from_slice(body.digest());
    }
    assert_eq!(
        hex::encode(&header),
        e_value(&values, "header_pt"),
        "{SPEC_PATH}: Appendix E header_pt"
    );

    let a = appendix_a();
    let mut sealer = a.session().sealer_at(Direction::S2c, 0, 1);
    sealer.enable_room_key_batches();
    let mut out: Vec<Bytes> = Vec::new();
    let d_body = lobby
        .seal_body(d.value("counter").parse().unwrap(), d.value("message").as_bytes(), None)
        .unwrap();
    sealer
        .seal_group(&lobby, &d_body, &mut out)
        .expect("Appendix D's records");
    let items = [(&lobby, &sealed[0]), (&den, &sealed[1]), (&lobby, &sealed[2])];
    sealer.seal_group_batch(&items, &mut out).expect("seal batch");
    assert_eq!(
        out.len(),
        4,
        "Appendix D's two records, the den room_key record, the batch"
    );
    let session = a.session();
    let ts = session.traffic_secret(Direction::S2c, 0);
    for (i, (pt_name, ct_name, label)) in [
        ("room_key_pt", "room_key_ct", &b"wsenc/1 rec"[..]),
        ("header_pt", "header_ct", &b"wsenc/1 hdr"[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let record: Value = serde_json::from_slice(&out[2 + i]).unwrap();
        let ct = b64::decode(record["data"]["ct"].as_str().unwrap()).unwrap();
        assert_eq!(
            hex::encode(&ct),
            e_value(&values, ct_name),
            "{SPEC_PATH}: Appendix E {ct_name}"
        );
        let seq = 3 + i as u64;
        let mut aad = aad(Direction::S2c, &session.th, 0, seq);
        aad[..11].copy_from_slice(label);
        let (body, tag) = ct.split_at(ct.len() - 16);
        let mut pt = body.to_vec();
        AeadKey::new(&ts.key())
            .open_in_place(&nonce(&ts.iv(), seq), &aad, &mut pt, tag.try_into().unwrap())
            .expect("record opens");
        let expected = if pt_name == "header_pt" {
            hex(e_value(&values, pt_name), pt_name)
        } else {
            e_value(&values, pt_name).as_bytes().to_vec()
        };
        assert_eq!(pt, expected, "{SPEC_PATH}: Appendix E {pt_name}");
    }
    assert_eq!(wire.len(), 2, "{SPEC_PATH}: Appendix E gives two wire records");
    for (sent, line) in out[2..].iter().zip(&wire) {
        assert_eq!(
            std::str::from_utf8(sent).unwrap(),
            *line,
            "{SPEC_PATH}: Appendix E wire form"
        );
    }

    // Appendix F: the same batch on a roomKeys 3 session is the binary frame, the records before it unchanged.
    let mut bin_sealer = a.session().sealer_at(Direction::S2c, 0, 1);
    bin_sealer.enable_room_key_binary();
    let mut bin_out: Vec<Bytes> = Vec::new();
    bin_sealer.seal_group(&lobby, &d_body, &mut bin_out).unwrap();
    bin_sealer.seal_group_batch(&items, &mut bin_out).unwrap();
    assert_eq!(bin_out.len(), 4);
    assert_eq!(bin_out[..3], out[..3], "only the batch changes form");
    assert_eq!(
        hex::encode(&bin_out[3]),
        appendix_f(),
        "{SPEC_PATH}: Appendix F binary_batch"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Appendix F: binary batched group records (§11.5)

/// Appendix F's `binary_batch` hex.
fn appendix_f() -> String {
    let (blocks, _) = split_blocks(section("## Appendix F"));
    let line = blocks
        .iter()
        .flat_map(|b| b.lines.iter())
        .find_map(|l| l.strip_prefix("binary_batch = "))
        .unwrap_or_else(|| panic!("{SPEC_PATH}: Appendix F has no binary_batch line"));
    line.trim().to_owned()
}

/// An opener that negotiated `roomKeys: 3` (or only 2) and took Appendix D's records and Appendix E's `room_key`.
fn appendix_f_opener(binary: bool) -> RecordOpener {
    let d = appendix_d();
    let (_, wire) = appendix_e();
    let session = appendix_a().session();
    let mut o = RecordOpener::new(Direction::S2c, session.traffic_secret(Direction::S2c, 0), session.th, 1);
    if binary {
        o.enable_room_key_binary();
    } else {
        o.enable_room_key_batches();
    }
    for line in [d.wire[0], d.wire[1], wire[0]] {
        o.open_all(line.as_bytes()).expect("earlier records open");
    }
    o
}

/// The client side of Appendix F: the binary batch opens into Appendix E's three messages in order.
#[test]
fn appendix_f_binary_batch_opens_into_its_messages_in_order() {
    let (values, _) = appendix_e();
    let frame = hex(&appendix_f(), "binary_batch");
    let opened = appendix_f_opener(true).open_binary(&frame).expect("binary batch opens");
    let expected: Vec<Vec<u8>> = ["message_1", "message_2", "message_3"]
        .iter()
        .map(|m| e_value(&values, m).as_bytes().to_vec())
        .collect();
    assert_eq!(opened, expected);
}

/// Appendix F's negative checks.
#[test]
fn appendix_f_negative_checks_fail() {
    let frame = hex(&appendix_f(), "binary_batch");
    let head = 11 + 3 * 40 + 16;
    let part1 = head..head + 4 + 65;
    let part2 = part1.end..part1.end + 4 + 65;
    let swapped = [
        &frame[..head],
        &frame[part2.clone()],
        &frame[part1],
        &frame[part2.end..],
    ]
    .concat();
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", frame[..frame.len() - 1].to_vec()),
        ("extended", [&frame[..], &[0]].concat()),
        ("parts swapped", swapped),
        ("type byte 0x02", [&[0x02][..], &frame[1..]].concat()),
        ("k = 0", [&frame[..9], &[0, 0], &frame[11..]].concat()),
    ];
    for (what, forged) in variants {
        let err = appendix_f_opener(true).open_binary(&forged).unwrap_err();
        assert_eq!(err.close_code(), 4005, "{what}");
    }
    let err = appendix_f_opener(false).open_binary(&frame).unwrap_err();
    assert_eq!(err.close_code(), 4005, "binary on a roomKeys: 2 session");
}

/// An opener that took Appendix D's records and Appendix E's `room_key` record (batches negotiated or not).
fn appendix_e_opener(batches: bool) -> RecordOpener {
    let d = appendix_d();
    let (_, wire) = appendix_e();
    let session = appendix_a().session();
    let mut o = RecordOpener::new(Direction::S2c, session.traffic_secret(Direction::S2c, 0), session.th, 1);
    if batches {
        o.enable_room_key_batches();
    } else {
        o.enable_room_keys();
    }
    for line in [d.wire[0], d.wire[1], wire[0]] {
        o.open_all(line.as_bytes()).expect("earlier records open");
    }
    o
}

/// The client side of Appendix E: the batch opens into its three messages in order.
#[test]
fn appendix_e_batch_opens_into_its_messages_in_order() {
    let (values, wire) = appendix_e();
    let mut o = appendix_e_opener(true);
    let opened = o.open_all(wire[1].as_bytes()).expect("batch opens");
    let expected: Vec<Vec<u8>> = ["message_1", "message_2", "message_3"]
        .iter()
        .map(|m| e_value(&values, m).as_bytes().to_vec())
        .collect();
    assert_eq!(opened, expected);
}

/// Appendix E's negative checks: reordered, dropped and duplicated bodies, the batch on a `roomKeys: 1`
/// session, and both `body` and `bodies`.
#[test]
fn appendix_e_negative_checks_fail() {
    let (_, wire) = appendix_e();
    let batch: Value = serde_json::from_str(wire[1]).unwrap();
    let bodies = batch["data"]["bodies"].as_array().unwrap().clone();
    let with_bodies = |b: Vec<Value>| {
        let mut v = batch.clone();
        v["data"]["bodies"] = Value::Array(b);
        v.to_string()
    };
    let mut variants = vec![
        with_bodies(vec![bodies[1].clone(), bodies[0].clone(), bodies[2].clone()]),
        with_bodies(vec![bodies[0].clone(), bodies[1].clone()]),
        with_bodies(vec![bodies[0].clone(), bodies[0].clone(), bodies[2].clone()]),
    ];
    let mut both = batch.clone();
    both["data"]["body"] = bodies[0].clone();
    variants.push(both.to_string());
    for forged in variants {
        let err = appendix_e_opener(true).open_all(forged.as_bytes()).unwrap_err();
        assert_eq!(err.close_code(), 4005, "{forged}");
    }
    let err = appendix_e_opener(false).open_all(wire[1].as_bytes()).unwrap_err();
    assert_eq!(err.close_code(), 4005, "a batch on a roomKeys: 1 session");
}
