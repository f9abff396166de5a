//! Property tests for wsenc/1's parsers and the record layer: strict base64url, handshake field validation,
//! sealer → opener round trips and tampering. The fuzz targets' oracles (`fuzz/src/`) run here too.

use std::num::NonZeroUsize;

use crate::fuzz_checks;
use crate::fuzz_checks::record_open::{hex32, TH, TS_C2S_0, TS_S2C_0};
use proptest::prelude::*;
use sealcast::crypto::schedule::TrafficSecret;
use sealcast::crypto::{b64, Direction, OpenError, RecordOpener, RecordSealer};
use serde_json::{json, Value};

/// Appendix A's client ephemeral public key, wire form.
const E_C_B64U: &str = "BDAp6pyc32OfoArb6Cl0DAJX76v0KNxUgVyGAsJJmJUhOvhZWQ1xoiuTrFPwMPLn2FqJZONthJpWbNOrXz6LyUk";

fn b64ish() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{0,100}",
        "[A-Za-z0-9_+/=-]{0,24}",
        "[A-Za-z0-9_-]{86,88}",
        any::<String>(),
    ]
}

fn pair(direction: Direction) -> (RecordSealer, RecordOpener) {
    let (ts, first) = match direction {
        Direction::C2s => (TS_C2S_0, 0),
        Direction::S2c => (TS_S2C_0, 1),
    };
    let ts = || TrafficSecret::from_bytes(&hex32(ts));
    (
        RecordSealer::new(direction, ts(), hex32(TH), first),
        RecordOpener::new(direction, ts(), hex32(TH), first),
    )
}

/// Inner application messages: a non-reserved event and arbitrary data.
fn inner() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<String>().prop_filter("not reserved inside a record", |e| {
            !["authenticate", "connected", "encrypted", "key_update"].contains(&e.as_str())
        }),
        prop_oneof![
            Just(Value::Null),
            any::<String>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from)
        ],
    )
        .prop_map(|(e, d)| json!({"event": e, "data": d}).to_string().into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn b64_round_trips_any_bytes(b in prop::collection::vec(any::<u8>(), 0..200)) {
        let e = b64::encode(&b);
        prop_assert_eq!(e.len(), b64::encoded_len(b.len()));
        prop_assert!(e.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        prop_assert_eq!(b64::decode(&e).expect("own encoding"), b);
    }

    #[test]
    fn b64_decode_is_strict(s in b64ish()) {
        fuzz_checks::authenticate::check_b64(&s);
    }

    #[test]
    fn auth_payloads_are_validated_strictly(
        v in prop_oneof![Just(json!(1)), Just(json!(1.0)), Just(json!(2)), Just(json!("1")), Just(json!(-1)), Just(Value::Null)],
        pk in prop_oneof![
            Just(json!(E_C_B64U)),
            (0usize..87).prop_map(|n| json!(&E_C_B64U[..n])),
            b64ish().prop_map(Value::from),
            Just(json!(7)),
        ],
        kid in prop::option::of(prop_oneof![Just(json!("-GV3gO9oO-U")), b64ish().prop_map(Value::from), Just(json!([]))]),
        with_v in any::<bool>(),
    ) {
        let mut m = serde_json::Map::new();
        m.insert("token".into(), json!("t"));
        if with_v {
            m.insert("v".into(), v);
        }
        m.insert("publicKey".into(), pk);
        if let Some(k) = kid {
            m.insert("kid".into(), k);
        }
        fuzz_checks::authenticate::check_auth_data(&Value::Object(m.clone()));
        fuzz_checks::authenticate::check(Value::Object(m).to_string().as_bytes());
    }

    #[test]
    fn authenticate_target_on_arbitrary_text(s in any::<String>()) {
        fuzz_checks::authenticate::check(s.as_bytes());
    }

    #[test]
    fn records_round_trip_in_order(
        s2c in any::<bool>(),
        messages in prop::collection::vec(inner(), 1..12),
        pad in prop::option::of(1usize..100),
        limit in prop::option::of(3u64..6),
    ) {
        let direction = if s2c { Direction::S2c } else { Direction::C2s };
        let (mut sealer, mut opener) = pair(direction);
        if let Some(l) = limit {
            sealer.set_epoch_limit(l).expect("limit");
            opener.set_epoch_limit(l).expect("limit");
        }
        sealer.set_padding(pad.and_then(NonZeroUsize::new));
        let mut got = Vec::new();
        for m in &messages {
            let mut frames = Vec::new();
            sealer.seal(m, &mut frames).expect("seal");
            for f in frames {
                if let Some(inner) = opener.open(&f).expect("own record opens") {
                    got.push(inner);
                }
            }
        }
        prop_assert_eq!(got, messages);
        prop_assert_eq!(opener.epoch(), sealer.epoch());
    }

    #[test]
    fn any_single_byte_change_is_rejected(
        m in inner(), pos in any::<prop::sample::Index>(), byte in any::<u8>(), s2c in any::<bool>(),
    ) {
        let direction = if s2c { Direction::S2c } else { Direction::C2s };
        let (mut sealer, mut opener) = pair(direction);
        let mut frames = Vec::new();
        sealer.seal(&m, &mut frames).expect("seal");
        let mut f = frames[0].to_vec();
        let i = pos.index(f.len());
        prop_assume!(f[i] != byte);
        f[i] = byte;
        let e = opener.open(&f).expect_err("a tampered record was accepted");
        prop_assert!(matches!(e.close_code(), 4004..=4006));
        // and the session is over
        prop_assert_eq!(opener.open(&frames[0]), Err(OpenError::Poisoned));
    }

    #[test]
    fn record_scripts(steps in prop::collection::vec(prop_oneof![
        inner().prop_map(|m| format!("!seal {}", String::from_utf8_lossy(&m))),
        inner().prop_map(|m| format!("!hold {}", String::from_utf8_lossy(&m))),
        (0usize..4).prop_map(|k| format!("!send {k}")),
        Just("!ku".to_owned()),
        Just("!again".to_owned()),
        (0usize..65).prop_map(|n| format!("!pad {n}")),
        (0usize..200, 0usize..3, "[ 0-9a-zA-Z\"{}:,_-]{0,3}").prop_map(|(o, d, t)| format!("!edit {o} {d} {t}")),
        any::<String>().prop_map(|s| s.replace('\n', " ")),
    ], 0..12), header in prop_oneof![Just("c2s"), Just("s2c"), Just("c2s limit=3"), Just("s2c limit=2")]) {
        let script = format!("{header}\n{}", steps.join("\n"));
        fuzz_checks::record_open::check(script.as_bytes());
    }

    #[test]
    fn opener_never_panics_on_bytes(b in prop::collection::vec(any::<u8>(), 0..300)) {
        let (_, mut opener) = pair(Direction::C2s);
        let e = opener.open(&b).expect_err("random bytes are no record");
        prop_assert_ne!(e, OpenError::Poisoned);
        fuzz_checks::record_open::check(&b);
        fuzz_checks::ignis_open::check(&b);
    }

    #[test]
    fn token_parsing_never_panics(s in "[A-Za-z0-9_.=-]{0,120}") {
        fuzz_checks::auth_token::check(s.as_bytes());
    }
}
