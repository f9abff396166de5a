//! wsenc/1 record layer: ordering, envelope strictness, inner validation, padding, key update.

use std::num::NonZeroUsize;

use crate::common_crypto::{seal1, session};
use sealcast::crypto::schedule::TrafficSecret;
use sealcast::crypto::{b64, Direction, OpenError, RecordOpener, RecordSealer, SealError};
use serde_json::{json, Value};

const TS: [u8; 32] = [0x5a; 32];
const TH: [u8; 32] = [0xc3; 32];
const MSG: &[u8] = br#"{"event":"chat","data":{"text":"hi"}}"#;

/// A sealer and the matching opener for one direction.
fn pair(dir: Direction, first_seq: u64) -> (RecordSealer, RecordOpener) {
    (
        RecordSealer::new(dir, TrafficSecret::from_bytes(&TS), TH, first_seq),
        RecordOpener::new(dir, TrafficSecret::from_bytes(&TS), TH, first_seq),
    )
}

fn frames(s: &mut RecordSealer, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|_| seal1(s, MSG)).collect()
}

fn edit(frame: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(frame).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

fn ct_of(frame: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(frame).unwrap();
    b64::decode(v["data"]["ct"].as_str().unwrap()).unwrap()
}

fn with_ct(frame: &[u8], ct: &[u8]) -> Vec<u8> {
    edit(frame, |v| v["data"]["ct"] = Value::String(b64::encode(ct)))
}

/// Opens `frame` with a fresh opener and returns the error.
fn fresh_err(frame: &[u8]) -> OpenError {
    let (_, mut o) = pair(Direction::C2s, 0);
    o.open(frame).unwrap_err()
}

#[test]
fn replay_reorder_skip() {
    let (mut s, mut o) = pair(Direction::C2s, 0);
    let f = frames(&mut s, 3);
    assert_eq!(o.open(&f[0]).unwrap().unwrap(), MSG);
    // replay
    assert_eq!(o.open(&f[0]).unwrap_err(), OpenError::UnexpectedSeq);
    // after a failure the opener stays failed
    assert_eq!(o.open(&f[1]).unwrap_err(), OpenError::Poisoned);

    // reorder
    let (mut s, mut o) = pair(Direction::C2s, 0);
    let f = frames(&mut s, 2);
    let e = o.open(&f[1]).unwrap_err();
    assert_eq!(e, OpenError::UnexpectedSeq);
    assert_eq!(e.close_code(), 4005);

    // skipped (deleted) record
    let (mut s, mut o) = pair(Direction::C2s, 0);
    let f = frames(&mut s, 3);
    o.open(&f[0]).unwrap();
    assert_eq!(o.open(&f[2]).unwrap_err(), OpenError::UnexpectedSeq);

    // a record whose seq field was rewritten to the expected one: nonce mismatch
    let (mut s, mut o) = pair(Direction::C2s, 0);
    let f = frames(&mut s, 2);
    let moved = edit(&f[1], |v| v["data"]["seq"] = json!(0));
    assert_eq!(o.open(&moved).unwrap_err(), OpenError::NonceMismatch);
    // ... and with the iv rewritten too: the AAD/nonce no longer match the tag
    let (_, mut o) = pair(Direction::C2s, 0);
    let iv0 = {
        let v: Value = serde_json::from_slice(&f[0]).unwrap();
        v["data"]["iv"].clone()
    };
    let moved = edit(&f[1], |v| {
        v["data"]["seq"] = json!(0);
        v["data"]["iv"] = iv0;
    });
    assert_eq!(o.open(&moved).unwrap_err(), OpenError::AuthFailed);
}

#[test]
fn wrong_iv() {
    let (mut s, _) = pair(Direction::C2s, 0);
    let f = seal1(&mut s, MSG);
    let other = edit(&f, |v| v["data"]["iv"] = json!(b64::encode(&[0u8; 12])));
    assert_eq!(fresh_err(&other), OpenError::NonceMismatch);
    for bad in [
        "",
        "AAAA",
        "AAAAAAAAAAAAAAAAAAAA",
        "AAAAAAAAAAAAAAA=",
        "AAAAAAAA+AAAAAAA",
    ] {
        let g = edit(&f, |v| v["data"]["iv"] = json!(bad));
        assert_eq!(fresh_err(&g), OpenError::BadEncoding, "iv {bad:?}");
    }
}

#[test]
fn reflected_records_fail() {
    // same traffic secret, other direction: only the AAD direction byte differs
    let (mut s, _) = pair(Direction::C2s, 0);
    let (_, mut o) = pair(Direction::S2c, 0);
    let f = seal1(&mut s, MSG);
    assert_eq!(o.open(&f).unwrap_err(), OpenError::AuthFailed);

    let mut sess = session();
    // a client's c2s record reflected back to the client (its s2c opener expects seq 1)
    let c = frames(&mut sess.client_sealer, 2);
    let e = sess.client_opener.open(&c[1]).unwrap_err();
    assert_eq!(e.close_code(), 4005);
    // a server's s2c record reflected back into the server's c2s opener (expects seq 0)
    let mut sess = session();
    let first = seal1(&mut sess.server_sealer, MSG); // seq 1
    assert_eq!(sess.server_opener.open(&first).unwrap_err(), OpenError::UnexpectedSeq);
    // ... and at a matching seq (server epoch 1 seq 0 into the c2s opener expecting seq 0)
    let mut sess = session();
    sess.server_sealer.request_key_update(&mut Vec::new()).unwrap();
    let s0 = seal1(&mut sess.server_sealer, MSG);
    let e = sess.server_opener.open(&s0).unwrap_err();
    assert!(matches!(e, OpenError::NonceMismatch | OpenError::AuthFailed), "{e:?}");
}

#[test]
fn bit_flips_truncation_empty() {
    let (mut s, _) = pair(Direction::C2s, 0);
    let f = seal1(&mut s, MSG);
    let ct = ct_of(&f);
    for i in 0..ct.len() {
        for bit in [0u8, 3, 7] {
            let mut bad = ct.clone();
            bad[i] ^= 1 << bit;
            assert_eq!(fresh_err(&with_ct(&f, &bad)), OpenError::AuthFailed, "byte {i}");
        }
    }
    // truncated by one byte, to the bare tag, below the tag, empty
    assert_eq!(fresh_err(&with_ct(&f, &ct[..ct.len() - 1])), OpenError::AuthFailed);
    assert_eq!(fresh_err(&with_ct(&f, &ct[ct.len() - 16..])), OpenError::AuthFailed);
    assert_eq!(fresh_err(&with_ct(&f, &ct[..15])), OpenError::CiphertextTooShort);
    assert_eq!(fresh_err(&with_ct(&f, &[])), OpenError::CiphertextTooShort);
    // extended
    let mut long = ct.clone();
    long.push(0);
    assert_eq!(fresh_err(&with_ct(&f, &long)), OpenError::AuthFailed);
    // non-strict base64url in ct
    let g = edit(&f, |v| {
        let s = v["data"]["ct"].as_str().unwrap().to_string();
        v["data"]["ct"] = json!(format!("{s}="));
    });
    assert_eq!(fresh_err(&g), OpenError::BadEncoding);
    let g = edit(&f, |v| {
        let s = v["data"]["ct"].as_str().unwrap().to_string();
        v["data"]["ct"] = json!(format!(" {s}"));
    });
    assert_eq!(fresh_err(&g), OpenError::BadEncoding);
}

#[test]
fn envelope_schema_is_exact() {
    let (mut s, mut o) = pair(Direction::C2s, 0);
    let f = seal1(&mut s, MSG);
    let v: Value = serde_json::from_slice(&f).unwrap();
    let (iv, ct) = (
        v["data"]["iv"].as_str().unwrap().to_string(),
        v["data"]["ct"].as_str().unwrap().to_string(),
    );
    let env = |seq: &str| format!(r#"{{"event":"encrypted","data":{{"seq":{seq},"iv":"{iv}","ct":"{ct}"}}}}"#);
    // whitespace between tokens is still the same JSON document
    let spaced =
        format!(" {{ \"event\" : \"encrypted\" , \"data\" : {{ \"ct\":\"{ct}\", \"seq\" : 0 ,\"iv\":\"{iv}\" }} }} ");
    let malformed = vec![
        env("1.0"),
        env("0.0"),
        env("0e0"),
        env("1e0"),
        env("\"0\""),
        env("-0"),
        env("-1"),
        env("9007199254740992"),
        env("18446744073709551616"),
        env("null"),
        env("true"),
        env("[0]"),
        format!(r#"{{"event":"encrypted","data":{{"seq":0,"iv":"{iv}","ct":"{ct}","x":1}}}}"#),
        format!(r#"{{"event":"encrypted","data":{{"seq":0,"iv":"{iv}","ct":"{ct}"}},"x":1}}"#),
        format!(r#"{{"event":"encrypted","data":{{"seq":0,"iv":"{iv}"}}}}"#),
        format!(r#"{{"event":"encrypted","data":{{"seq":0,"ct":"{ct}"}}}}"#),
        format!(r#"{{"event":"encrypted","data":{{"iv":"{iv}","ct":"{ct}"}}}}"#),
        format!(r#"{{"event":"encrypted","data":{{"seq":0,"seq":0,"iv":"{iv}","ct":"{ct}"}}}}"#),
        format!(r#"{{"event":"encrypted","data":{{"seq":0,"iv":1,"ct":"{ct}"}}}}"#),
        format!(r#"{{"event":"encrypted","data":{{"seq":0,"iv":"{iv}","ct":null}}}}"#),
        format!(r#"{{"event":"encrypted","data":{{"seq":0,"iv":"\u0041{iv}","ct":"{ct}"}}}}"#),
        format!(r#"{{"event":"encrypted","data":[0,"{iv}","{ct}"]}}"#),
        r#"{"event":"encrypted","data":{}}"#.to_string(),
        r#"{"event":"encrypted","data":null}"#.to_string(),
        r#"{"event":"encrypted"}"#.to_string(),
        r#"{"event":"\u0065ncrypted","data":{}}"#.to_string(),
    ];
    for m in &malformed {
        let e = fresh_err(m.as_bytes());
        assert_eq!(e, OpenError::MalformedEnvelope, "{m}");
        assert_eq!(e.close_code(), 4005);
    }
    let not_encrypted: Vec<&[u8]> = vec![
        br#"{"event":"chat","data":{}}"#,
        br#"{"event":"authenticate","data":{"token":"x"}}"#,
        br#"{"data":{"seq":0}}"#,
        b"null",
        b"[]",
        b"[\"encrypted\",{}]",
        b"\"encrypted\"",
        b"0",
        b"{",
        b"",
        b"\xff\xfe\x00binary",
        br#"{"event":"encrypted","data":{"seq":0,"iv":"AA","ct":"AA"}"#, // truncated JSON
        br#"{"event":"encrypted","data":{"seq":00,"iv":"AA","ct":"AA"}}"#, // `00` is not JSON
    ];
    for m in &not_encrypted {
        let e = fresh_err(m);
        assert_eq!(e, OpenError::NotEncrypted, "{}", String::from_utf8_lossy(m));
        assert_eq!(e.close_code(), 4004);
    }
    // the exact form and the spaced form both open
    assert_eq!(o.open(env("0").as_bytes()).unwrap().unwrap(), MSG);
    let (_, mut o2) = pair(Direction::C2s, 0);
    assert_eq!(o2.open(spaced.as_bytes()).unwrap().unwrap(), MSG);
}

#[test]
fn inner_message_validation() {
    let cases: Vec<(&[u8], OpenError)> = vec![
        (b"not json", OpenError::InvalidInner),
        (b"[1,2]", OpenError::InvalidInner),
        (br#"["event","chat"]"#, OpenError::InvalidInner),
        (b"\"chat\"", OpenError::InvalidInner),
        (b"null", OpenError::InvalidInner),
        (br#"{"data":1}"#, OpenError::InvalidInner),
        (br#"{"event":1}"#, OpenError::InvalidInner),
        (br#"{"event":null}"#, OpenError::InvalidInner),
        (br#"{"event":"chat""#, OpenError::InvalidInner),
        (br#"{"event":"chat"} x"#, OpenError::InvalidInner),
        (br#"{"event":"chat","event":"x"}"#, OpenError::InvalidInner),
        (b"{\"event\":\"\xff\"}", OpenError::InvalidInner),
        (br#"{"event":"connected","data":{}}"#, OpenError::ReservedInnerEvent),
        (br#"{"event":"authenticate","data":{}}"#, OpenError::ReservedInnerEvent),
        (br#"{"event":"encrypted","data":{}}"#, OpenError::ReservedInnerEvent),
        (
            br#"{"event":"\u0063onnected","data":{}}"#,
            OpenError::ReservedInnerEvent,
        ),
    ];
    for (inner, want) in cases {
        let (mut s, mut o) = pair(Direction::S2c, 1);
        let f = seal1(&mut s, inner);
        let e = o.open(&f).unwrap_err();
        assert_eq!(e, want, "{}", String::from_utf8_lossy(inner));
        assert_eq!(e.close_code(), 4005);
    }
    // the sealer refuses an empty message or one ending in NUL (padding would eat it)
    let (mut s, _) = pair(Direction::S2c, 1);
    let mut out = Vec::new();
    assert_eq!(s.seal(b"", &mut out), Err(SealError::InvalidPlaintext));
    assert_eq!(s.seal(b"{}\0", &mut out), Err(SealError::InvalidPlaintext));
    assert!(out.is_empty());
    assert_eq!(s.next_seq(), 1);
    // an all-padding plaintext (empty after stripping) is rejected by the opener
    let (mut s, mut o) = pair(Direction::S2c, 1);
    s.set_padding(NonZeroUsize::new(8));
    let f = seal1(&mut s, b" ");
    assert_eq!(o.open(&f).unwrap_err(), OpenError::InvalidInner);
    // other events (including `error`, `heartbeat`) pass through
    for inner in [
        &br#"{"event":"error","data":{"code":1}}"#[..],
        br#" {"event":"heartbeat"}"#,
        br#"{"data":[1,{"a":null}],"event":"x\"y"}"#,
    ] {
        let (mut s, mut o) = pair(Direction::S2c, 1);
        assert_eq!(o.open(&seal1(&mut s, inner)).unwrap().unwrap(), inner);
    }
}

#[test]
fn padding() {
    for (bucket, msg_len) in [(32usize, 1usize), (32, 31), (32, 32), (32, 33), (64, 40), (1, 5)] {
        let msg = format!(r#"{{"event":"p","data":"{}"}}"#, "x".repeat(msg_len));
        let (mut s, mut o) = pair(Direction::C2s, 0);
        s.set_padding(NonZeroUsize::new(bucket));
        let f = seal1(&mut s, msg.as_bytes());
        let ct = ct_of(&f);
        let pt_len = ct.len() - 16;
        assert_eq!(pt_len % bucket, 0);
        assert!(pt_len >= msg.len() && pt_len < msg.len() + bucket);
        assert_eq!(o.open(&f).unwrap().unwrap(), msg.as_bytes());
    }
    // no padding: exact length
    let (mut s, _) = pair(Direction::C2s, 0);
    assert_eq!(ct_of(&seal1(&mut s, MSG)).len(), MSG.len() + 16);
}

fn drive(s: &mut RecordSealer, o: &mut RecordOpener, n: usize) -> (usize, usize) {
    let (mut frames_total, mut updates) = (0, 0);
    for i in 0..n {
        let msg = format!(r#"{{"event":"m","data":{i}}}"#);
        let mut out = Vec::new();
        s.seal(msg.as_bytes(), &mut out).unwrap();
        assert!(!out.is_empty() && out.len() <= 2);
        frames_total += out.len();
        let mut delivered = Vec::new();
        for f in &out {
            match o.open(f).unwrap() {
                None => updates += 1,
                Some(m) => delivered.push(m),
            }
        }
        assert_eq!(delivered, vec![msg.into_bytes()]);
        assert_eq!(s.epoch(), o.epoch());
        assert_eq!(s.next_seq(), o.expected_seq());
    }
    (frames_total, updates)
}

#[test]
fn key_update_small_limit_both_directions() {
    // c2s: seq 0..=2 data, 3 = key_update, then epoch 1 ...
    let (mut s, mut o) = pair(Direction::C2s, 0);
    s.set_epoch_limit(4).unwrap();
    o.set_epoch_limit(4).unwrap();
    let (frames_total, updates) = drive(&mut s, &mut o, 20);
    // 3 data records per epoch: 20 messages → epochs 0..=6, 6 updates
    assert_eq!(updates, 6);
    assert_eq!(frames_total, 26);
    assert_eq!(s.epoch(), 6);

    // s2c starts at seq 1: epoch 0 holds 2 data records (1, 2) + key_update (3)
    let (mut s, mut o) = pair(Direction::S2c, 1);
    s.set_epoch_limit(4).unwrap();
    o.set_epoch_limit(4).unwrap();
    let (_, updates) = drive(&mut s, &mut o, 2);
    assert_eq!(updates, 0);
    let (_, updates) = drive(&mut s, &mut o, 1);
    assert_eq!(updates, 1);
    assert_eq!((s.epoch(), s.next_seq()), (1, 1));
    let (_, updates) = drive(&mut s, &mut o, 10);
    assert_eq!(updates, 3);

    // through a real handshake, both directions
    let mut sess = session();
    sess.server_sealer.set_epoch_limit(4).unwrap();
    sess.client_sealer.set_epoch_limit(5).unwrap();
    sess.server_opener.set_epoch_limit(5).unwrap();
    sess.client_opener.set_epoch_limit(4).unwrap();
    drive(&mut sess.server_sealer, &mut sess.client_opener, 17);
    drive(&mut sess.client_sealer, &mut sess.server_opener, 17);
    assert!(sess.server_sealer.epoch() >= 5);
    assert!(sess.client_sealer.epoch() >= 4);
}

#[test]
fn explicit_key_update_and_old_keys_are_gone() {
    let (mut s, mut o) = pair(Direction::C2s, 0);
    let before = seal1(&mut s, MSG);
    let mut out = Vec::new();
    s.request_key_update(&mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!((s.epoch(), s.next_seq()), (1, 0));
    let after = seal1(&mut s, MSG);
    assert_eq!(o.open(&before).unwrap().unwrap(), MSG);
    assert_eq!(o.open(&out[0]).unwrap(), None);
    assert_eq!((o.epoch(), o.expected_seq()), (1, 0));
    assert_eq!(o.open(&after).unwrap().unwrap(), MSG);
    // epoch 1 seq 0 and epoch 0 seq 0 are different records
    assert_ne!(ct_of(&before), ct_of(&after));
    // a receiver that missed the key_update cannot open epoch-1 records
    let (_, mut o) = pair(Direction::C2s, 0);
    o.open(&before).unwrap();
    let moved = edit(&after, |v| v["data"]["seq"] = json!(1));
    let e = o.open(&moved).unwrap_err();
    assert!(matches!(e, OpenError::NonceMismatch), "{e:?}");
}

#[test]
fn seq_at_or_over_the_limit_is_4006() {
    // the sender has a higher limit than the receiver
    let (mut s, mut o) = pair(Direction::C2s, 0);
    s.set_epoch_limit(8).unwrap();
    o.set_epoch_limit(4).unwrap();
    let f = frames(&mut s, 5);
    for fr in &f[..3] {
        o.open(fr).unwrap();
    }
    // seq 3 is the last slot and must be the key_update
    let e = o.open(&f[3]).unwrap_err();
    assert_eq!(e, OpenError::KeyExhausted);
    assert_eq!(e.close_code(), 4006);
    // seq 4 ≥ limit, even before checking anything else
    let (_, mut o) = pair(Direction::C2s, 0);
    o.set_epoch_limit(4).unwrap();
    let e = o.open(&f[4]).unwrap_err();
    assert_eq!(e, OpenError::KeyExhausted);
    assert_eq!(e.close_code(), 4006);
    // default limit 2^20: a forged seq of 2^20 is 4006, 2^20-1 merely unexpected
    let (_, mut o) = pair(Direction::C2s, 0);
    let g = edit(&f[0], |v| v["data"]["seq"] = json!(1u64 << 20));
    assert_eq!(o.open(&g).unwrap_err(), OpenError::KeyExhausted);
    let (_, mut o) = pair(Direction::C2s, 0);
    let g = edit(&f[0], |v| v["data"]["seq"] = json!((1u64 << 20) - 1));
    assert_eq!(o.open(&g).unwrap_err(), OpenError::UnexpectedSeq);
}

#[test]
fn epoch_limit_configuration() {
    let (mut s, mut o) = pair(Direction::S2c, 1);
    for bad in [0u64, 1, (1 << 20) + 1, u64::MAX] {
        assert!(s.set_epoch_limit(bad).is_err(), "{bad}");
        assert!(o.set_epoch_limit(bad).is_err(), "{bad}");
    }
    assert!(s.set_epoch_limit(2).is_ok());
    assert!(s.set_epoch_limit(1 << 20).is_ok());
    // limit 2 on s2c: seq 1 is the last slot, so the first message is preceded by key_update
    let (mut s, mut o) = pair(Direction::S2c, 1);
    s.set_epoch_limit(2).unwrap();
    o.set_epoch_limit(2).unwrap();
    let mut out = Vec::new();
    s.seal(MSG, &mut out).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(o.open(&out[0]).unwrap(), None);
    assert_eq!(o.open(&out[1]).unwrap().unwrap(), MSG);
    // the limit cannot be lowered below the current position
    let (mut s, _) = pair(Direction::C2s, 0);
    frames(&mut s, 3);
    assert!(s.set_epoch_limit(3).is_err());
    assert!(s.set_epoch_limit(4).is_ok());
}

#[test]
fn error_messages_carry_no_data() {
    let all = [
        OpenError::NotEncrypted,
        OpenError::MalformedEnvelope,
        OpenError::UnexpectedSeq,
        OpenError::BadEncoding,
        OpenError::NonceMismatch,
        OpenError::CiphertextTooShort,
        OpenError::AuthFailed,
        OpenError::InvalidInner,
        OpenError::ReservedInnerEvent,
        OpenError::KeyExhausted,
        OpenError::Poisoned,
    ];
    for e in all {
        let code = e.close_code();
        assert!(matches!(code, 4004..=4006));
        assert_eq!(code == 4004, e == OpenError::NotEncrypted);
        assert_eq!(code == 4006, e == OpenError::KeyExhausted);
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(SealError::KeyExhausted.close_code(), 4006);
}
