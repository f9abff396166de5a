//! `record_open`: the wsenc/1 record opener as a state machine, keyed with the spec's Appendix A session.
//!
//! The input is a small script, one step per line (`\n`):
//!
//! ```text
//! c2s limit=4          optional header: direction (c2s: expects seq 0; s2c: expects seq 1), epoch limit 2..=64
//! !seal {"event":"x"}  seal TEXT with the reference sealer and deliver the frame(s) (a key_update may precede)
//! !hold {"event":"x"}  seal TEXT but keep the frame(s) back
//! !send 3              deliver held frame 3 (modulo the number held)
//! !ku                  the sealer emits a key_update record, delivered
//! !pad 64              the sealer pads plaintexts to multiples of 64 bytes (0: off)
//! !edit 10 2 xyz       deliver the last sealed frame with 2 bytes at offset 10 replaced by `xyz`
//! !again               deliver the last delivered frame again (replay)
//! anything else        delivered as a raw frame
//! ```
//!
//! Every delivered frame goes to `RecordOpener::open` and to an independent model of §6–§7 (its own envelope
//! parsing, nonce, AAD and key schedule walk, only the AES-GCM primitive shared). The asserted property: the
//! opener accepts a frame **only** if the model says it is exactly the valid next record, and returns the same
//! inner message; a frame the reference sealer produced for the model's current state is never refused; once
//! an open fails, every later call fails with `Poisoned`; a non-`encrypted` frame is a downgrade (4004) and an
//! `encrypted` one a record failure (4005/4006).

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use sealcast::crypto::backend::{AeadKey, NONCE_LEN, TAG_LEN};
use sealcast::crypto::schedule::TrafficSecret;
use sealcast::crypto::{b64, Direction, OpenError, RecordOpener, RecordSealer, MAX_RECORDS_PER_EPOCH};
use serde_json::value::RawValue;

/// Appendix A: `ts_c2s_0`.
pub const TS_C2S_0: &str = "59a50d2ac62d2e7147f90b105423ca43279f042f321d30f234e8e96228f8c24a";
/// Appendix A: `ts_s2c_0`.
pub const TS_S2C_0: &str = "3a1702a53281678479263fad734718df93866c1be2be2bfb32203bd7210fba4e";
/// Appendix A: `th`.
pub const TH: &str = "bb94d819231ba73e0253cbfc053fa0aa891bfcd644518f74749afccd6856e315";

const MAX_WIRE_SEQ: u64 = (1 << 53) - 1;
const MAX_STEPS: usize = 64;
const MAX_HELD: usize = 16;

/// 32 bytes from 64 hex digits (constants only).
pub fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks(2)) {
        let txt = std::str::from_utf8(pair).unwrap_or("00");
        *o = u8::from_str_radix(txt, 16).unwrap_or_else(|_| panic!("bad hex constant"));
    }
    out
}

/// What the model expects of one frame.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Not the valid next record.
    Reject,
    /// The valid next record, a `key_update`.
    KeyUpdate,
    /// The valid next record, an application message (padding stripped).
    Message(Vec<u8>),
}

/// An independent reading of §6–§7 for one direction.
struct Model {
    direction: Direction,
    th: [u8; 32],
    ts: TrafficSecret,
    epoch: u32,
    expected: u64,
    limit: u64,
}

impl Model {
    fn nonce(&self, seq: u64) -> [u8; NONCE_LEN] {
        let mut n = *self.ts.iv();
        for (i, b) in seq.to_be_bytes().iter().enumerate() {
            if let Some(x) = n.get_mut(4 + i) {
                *x ^= b;
            }
        }
        n
    }

    fn aad(&self, seq: u64) -> Vec<u8> {
        let mut a = Vec::with_capacity(56);
        a.extend_from_slice(b"wsenc/1 rec");
        a.push(match self.direction {
            Direction::C2s => 1,
            Direction::S2c => 2,
        });
        a.extend_from_slice(&self.th);
        a.extend_from_slice(&self.epoch.to_be_bytes());
        a.extend_from_slice(&seq.to_be_bytes());
        a
    }

    fn judge(&self, frame: &[u8]) -> Verdict {
        self.judge_inner(frame).unwrap_or(Verdict::Reject)
    }

    fn judge_inner(&self, frame: &[u8]) -> Option<Verdict> {
        // 1. schema: exactly {event:"encrypted", data:{seq, iv, ct}}
        let top: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(frame).ok()?;
        if top.len() != 2 {
            return None;
        }
        let event: String = serde_json::from_str(top.get("event")?.get()).ok()?;
        if event != "encrypted" {
            return None;
        }
        let data: BTreeMap<String, Box<RawValue>> = serde_json::from_str(top.get("data")?.get()).ok()?;
        if data.len() != 3 {
            return None;
        }
        let seq_txt = data.get("seq")?.get();
        if seq_txt.is_empty()
            || !seq_txt.bytes().all(|b| b.is_ascii_digit())
            || (seq_txt.len() > 1 && seq_txt.starts_with('0'))
        {
            return None;
        }
        let seq: u64 = seq_txt.parse().ok().filter(|s| *s <= MAX_WIRE_SEQ)?;
        let iv: String = serde_json::from_str(data.get("iv")?.get()).ok()?;
        let ct: String = serde_json::from_str(data.get("ct")?.get()).ok()?;
        // 2. order and limit
        if seq != self.expected || seq >= self.limit {
            return None;
        }
        // 3. iv == nonce (one canonical encoding), strict base64url ct of at least a tag
        let nonce = self.nonce(seq);
        if iv != b64::encode(&nonce) {
            return None;
        }
        let mut buf = b64::decode(&ct).ok()?;
        if b64::encode(&buf) != ct || buf.len() < TAG_LEN {
            return None;
        }
        // 4. AEAD
        let tag: [u8; TAG_LEN] = buf.split_off(buf.len() - TAG_LEN).try_into().ok()?;
        AeadKey::new(&self.ts.key())
            .open_in_place(&nonce, &self.aad(seq), &mut buf, &tag)
            .ok()?;
        // 5. padding, inner message
        while buf.last() == Some(&0) {
            buf.pop();
        }
        let name = inner_event(&buf)?;
        match name.as_str() {
            "key_update" => Some(Verdict::KeyUpdate),
            "authenticate" | "connected" | "encrypted" => None,
            // the last slot of an epoch is the key_update's
            _ if seq + 1 >= self.limit => None,
            _ => Some(Verdict::Message(buf)),
        }
    }

    fn advance(&mut self, verdict: &Verdict) {
        match verdict {
            Verdict::KeyUpdate => {
                self.ts = self.ts.next();
                self.epoch += 1;
                self.expected = 0;
            }
            Verdict::Message(_) => self.expected += 1,
            Verdict::Reject => {}
        }
    }
}

/// The one `event` of a JSON object, other values skipped (see [`inner_event`]).
struct Probe(Option<String>);
struct ProbeVisitor;
impl<'de> Visitor<'de> for ProbeVisitor {
    type Value = Probe;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Probe, A::Error> {
        let mut event = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "event" {
                if event.is_some() {
                    return Err(de::Error::duplicate_field("event"));
                }
                event = Some(map.next_value::<String>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Probe(event))
    }
}
impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ProbeVisitor)
    }
}

/// The `event` of an inner message: a JSON object (after optional JSON whitespace) with exactly one `event` key
/// whose value is a string; other values are only checked lexically (as the record layer does: it relays them).
/// A duplicate `event` is refused: receivers that keep the first or the last would disagree on the event.
fn inner_event(pt: &[u8]) -> Option<String> {
    std::str::from_utf8(pt).ok()?;
    lexical_event(pt)
}

/// [`inner_event`] without requiring the whole text to be UTF-8: serde_json skips unread strings without
/// checking them, and the opener classifies failed frames this way (WebSocket text frames are UTF-8 anyway).
fn lexical_event(bytes: &[u8]) -> Option<String> {
    let start = bytes.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if start != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<Probe>(bytes).ok()?.0
}

/// The machine under test and its model.
struct Harness {
    opener: RecordOpener,
    model: Model,
    sealer: RecordSealer,
    held: Vec<Vec<u8>>,
    last_sealed: Option<Vec<u8>>,
    last_delivered: Option<Vec<u8>>,
    failed: bool,
    accepted: usize,
}

impl Harness {
    fn new(direction: Direction, limit: Option<u64>) -> Self {
        let (ts, first) = match direction {
            Direction::C2s => (TS_C2S_0, 0),
            Direction::S2c => (TS_S2C_0, 1),
        };
        let ts = || TrafficSecret::from_bytes(&hex32(ts));
        let th = hex32(TH);
        let mut opener = RecordOpener::new(direction, ts(), th, first);
        let mut sealer = RecordSealer::new(direction, ts(), th, first);
        let mut model_limit = MAX_RECORDS_PER_EPOCH;
        if let Some(l) = limit {
            if opener.set_epoch_limit(l).is_ok() && sealer.set_epoch_limit(l).is_ok() {
                model_limit = l;
            } else {
                opener = RecordOpener::new(direction, ts(), th, first);
                sealer = RecordSealer::new(direction, ts(), th, first);
            }
        }
        Self {
            opener,
            model: Model {
                direction,
                th,
                ts: ts(),
                epoch: 0,
                expected: first,
                limit: model_limit,
            },
            sealer,
            held: Vec::new(),
            last_sealed: None,
            last_delivered: None,
            failed: false,
            accepted: 0,
        }
    }

    fn seal(&mut self, text: &[u8], ku: bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let r = if ku {
            self.sealer.request_key_update(&mut out)
        } else {
            self.sealer.seal(text, &mut out)
        };
        if r.is_err() {
            assert!(out.is_empty(), "a failed seal emitted frames");
        }
        let frames: Vec<Vec<u8>> = out.iter().map(|b| b.to_vec()).collect();
        if let Some(f) = frames.last() {
            self.last_sealed = Some(f.clone());
        }
        frames
    }

    fn deliver(&mut self, frame: &[u8], from_sealer: bool) {
        self.last_delivered = Some(frame.to_vec());
        let got = self.opener.open(frame);
        if self.failed {
            assert_eq!(got, Err(OpenError::Poisoned), "the opener recovered after a failure");
            return;
        }
        let verdict = self.model.judge(frame);
        match got {
            Ok(inner) => {
                let as_verdict = match inner {
                    None => Verdict::KeyUpdate,
                    Some(m) => Verdict::Message(m),
                };
                assert_eq!(
                    as_verdict,
                    verdict,
                    "the opener accepted a frame that is not the valid next record: {}",
                    String::from_utf8_lossy(frame)
                );
                self.model.advance(&verdict);
                self.accepted += 1;
                assert_eq!(self.opener.epoch(), self.model.epoch);
                assert_eq!(self.opener.expected_seq(), self.model.expected);
            }
            Err(e) => {
                self.failed = true;
                assert!(
                    !(from_sealer && verdict != Verdict::Reject),
                    "the valid next record was refused ({e:?}): {}",
                    String::from_utf8_lossy(frame)
                );
                assert_ne!(e, OpenError::Poisoned);
                // 4005/4006 for an `encrypted` envelope (one top-level `event`, the rest read lexically: a bad
                // `seq` like `1e99999` or a broken key in `data` still make one), 4004 for anything else.
                let encrypted = lexical_event(frame).as_deref() == Some("encrypted");
                assert_eq!(
                    e == OpenError::NotEncrypted,
                    !encrypted,
                    "wrong downgrade classification ({e:?}): {}",
                    String::from_utf8_lossy(frame)
                );
            }
        }
    }
}

fn parse_header(line: &[u8]) -> Option<(Direction, Option<u64>)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split(' ');
    let direction = match words.next()? {
        "c2s" => Direction::C2s,
        "s2c" => Direction::S2c,
        _ => return None,
    };
    let limit = words
        .find_map(|w| w.strip_prefix("limit="))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| (2..=64).contains(n));
    Some((direction, limit))
}

fn number(s: &[u8]) -> Option<usize> {
    std::str::from_utf8(s).ok()?.trim().parse().ok()
}

/// The fuzz target.
pub fn check(data: &[u8]) {
    run(data);
}

/// Runs one script with all its assertions; returns how many frames the opener accepted.
pub fn run(data: &[u8]) -> usize {
    let mut lines = data.split(|b| *b == b'\n').peekable();
    let header = lines.peek().and_then(|l| parse_header(l));
    let mut h = match header {
        Some((direction, limit)) => {
            lines.next();
            Harness::new(direction, limit)
        }
        None => Harness::new(Direction::C2s, None),
    };
    for line in lines.take(MAX_STEPS) {
        if let Some(text) = line.strip_prefix(b"!seal ") {
            for f in h.seal(text, false) {
                h.deliver(&f, true);
            }
        } else if let Some(text) = line.strip_prefix(b"!hold ") {
            for f in h.seal(text, false) {
                if h.held.len() < MAX_HELD {
                    h.held.push(f);
                }
            }
        } else if let Some(k) = line.strip_prefix(b"!send ") {
            let n = h.held.len();
            if let (Some(k), true) = (number(k), n > 0) {
                let f = h.held.get(k % n).cloned().unwrap_or_default();
                h.deliver(&f, true);
            }
        } else if line == b"!ku" {
            for f in h.seal(b"", true) {
                h.deliver(&f, true);
            }
        } else if let Some(n) = line.strip_prefix(b"!pad ") {
            if let Some(n) = number(n).filter(|n| *n <= 4096) {
                h.sealer.set_padding(NonZeroUsize::new(n));
            }
        } else if let Some(args) = line.strip_prefix(b"!edit ") {
            let mut parts = args.splitn(3, |b| *b == b' ');
            let off = parts.next().and_then(number);
            let del = parts.next().and_then(number);
            let ins = parts.next().unwrap_or_default();
            if let (Some(off), Some(del), Some(mut f)) = (off, del, h.last_sealed.clone()) {
                let off = off.min(f.len());
                let end = off.saturating_add(del).min(f.len());
                f.splice(off..end, ins.iter().copied());
                h.deliver(&f, false);
            }
        } else if line == b"!again" {
            if let Some(f) = h.last_delivered.clone() {
                h.deliver(&f, false);
            }
        } else {
            h.deliver(line, false);
        }
    }
    h.accepted
}
