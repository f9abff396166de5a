//! Property tests for the wire protocol's pure code: client frame parsing, outbound encoding, room names and the
//! bus envelope. The fuzz targets' oracles (`fuzz/src/`) run here too, on generated inputs.

use std::borrow::Cow;

use crate::fuzz_checks;
use proptest::prelude::*;
use sealcast::protocol::envelope::MAX_TARGET_LEN;
use sealcast::protocol::event::{self, RESERVED};
use sealcast::protocol::inbound::{self, ClientMessage, InboundError};
use sealcast::protocol::{outbound, room, ClientId, Envelope, RoomName, Target, UserId};
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// Arbitrary JSON values, a few levels deep. Floats are decimal fractions that serde_json parses exactly: its
/// default float parser is not correctly rounded for every `f64` (the `float_roundtrip` feature), which is
/// serde_json's behaviour, not the server's (frames relay the raw JSON text untouched).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (any::<i32>(), 0i32..8).prop_map(|(m, e)| Value::from(f64::from(m) / 10f64.powi(e))),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Event names an application may use: non-empty, at most 256 bytes, not reserved.
fn app_event() -> impl Strategy<Value = String> {
    any::<String>().prop_filter("valid application event", |e| event::is_valid_application_event(e))
}

/// Room names biased towards the interesting classes (internal prefix, UUIDs, control characters, long names).
fn room_name() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z:]{0,12}",
        "ws:[a-z:]{0,8}",
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}",
        "[a\\x00-\\x1f\\x7f\\u{85}]{1,4}",
        (250usize..262).prop_map(|n| "r".repeat(n)),
        (80usize..90).prop_map(|n| "é".repeat(n)),
    ]
}

/// Client ids, in every form `ClientId::parse` accepts (canonical, uppercase, simple, braced, URN).
fn client_id() -> impl Strategy<Value = ClientId> {
    let hex = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
    (hex, 0u8..5).prop_map(|(text, form)| {
        let text = match form {
            0 => text,
            1 => text.to_uppercase(),
            2 => text.replace('-', ""),
            3 => format!("{{{text}}}"),
            _ => format!("urn:uuid:{text}"),
        };
        ClientId::parse(&text).expect("a UUID")
    })
}

/// JSON-shaped text: mostly the protocol's tokens, glued together by the fuzzer-like generator.
fn json_ish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just(" ".to_owned()),
        Just("null".to_owned()),
        Just("1".to_owned()),
        Just("\"event\"".to_owned()),
        Just("\"data\"".to_owned()),
        Just("\"rooms\"".to_owned()),
        Just("\"room\"".to_owned()),
        Just("\"id\"".to_owned()),
        prop::sample::select(RESERVED.to_vec()).prop_map(|e| format!("\"{e}\"")),
        "\"[a-z\\\\\"]{0,6}\"",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(token, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn inbound_never_panics_and_routes_consistently(s in any::<String>()) {
        fuzz_checks::client_message::check(s.as_bytes());
    }

    #[test]
    fn inbound_json_shaped_frames(s in json_ish()) {
        fuzz_checks::client_message::check(s.as_bytes());
    }

    #[test]
    fn inbound_arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzz_checks::client_message::check(&b);
    }

    #[test]
    fn join_and_leave_parse_their_string_rooms(
        rooms in prop::collection::vec(prop_oneof![room_name().prop_map(Value::from), json_value()], 0..12),
        leave in any::<bool>(),
    ) {
        let name = if leave { "leave" } else { "join" };
        let frame = json!({"event": name, "data": {"rooms": rooms}}).to_string();
        let want: Vec<&str> = rooms.iter().filter_map(Value::as_str).collect();
        let got = match inbound::parse(&frame) {
            Ok(ClientMessage::Join { rooms: r, .. }) if !leave => r,
            Ok(ClientMessage::Leave(r)) if leave => r,
            other => panic!("{frame} parsed as {other:?}"),
        };
        prop_assert_eq!(got.iter().map(Cow::as_ref).collect::<Vec<_>>(), want);
        fuzz_checks::client_message::check_sanitize(&got);
    }

    #[test]
    fn publish_parses_what_a_client_sends(
        room in any::<String>(), ev in any::<String>(), data in prop::option::of(json_value()),
    ) {
        let mut d = json!({"room": room, "event": ev});
        if let Some(x) = &data {
            d["data"] = x.clone();
        }
        let frame = json!({"event": "publish", "data": d}).to_string();
        match inbound::parse(&frame) {
            Ok(ClientMessage::Publish { room: r, event: e, data: got, .. }) => {
                prop_assert!(event::is_valid_application_event(&ev));
                prop_assert_eq!((r.as_ref(), e.as_ref()), (room.as_str(), ev.as_str()));
                let got: Option<Value> = got.map(|g| serde_json::from_str(g.get()).expect("raw JSON"));
                // an explicit null is absent data
                prop_assert_eq!(got, data.filter(|v| !v.is_null()));
            }
            Err(InboundError::ReservedEvent) => prop_assert!(event::is_reserved(&ev)),
            Err(InboundError::InvalidFormat) => prop_assert!(!event::is_valid_application_event(&ev)),
            Ok(other) => panic!("{frame} parsed as {other:?}"),
        }
    }

    #[test]
    fn custom_events_keep_data_and_id(ev in app_event(), data in json_value(), id in json_value()) {
        prop_assume!(!["heartbeat", "authenticate", "join", "leave", "publish"].contains(&ev.as_str()));
        let frame = json!({"event": ev, "data": data, "id": id}).to_string();
        match inbound::parse(&frame) {
            Ok(ClientMessage::Custom { event: e, data: d, id: i }) => {
                prop_assert_eq!(e.as_ref(), ev.as_str());
                let d: Value = d.map_or(Value::Null, |d| serde_json::from_str(d.get()).expect("raw JSON"));
                prop_assert_eq!(d, data);
                let i: Value = i.map_or(Value::Null, |i| serde_json::from_str(i.get()).expect("raw JSON"));
                prop_assert_eq!(i, id);
            }
            other => panic!("{frame} parsed as {other:?}"),
        }
    }

    #[test]
    fn reserved_events_are_never_accepted_from_clients(
        ev in prop::sample::select(RESERVED.to_vec()), data in json_value(),
    ) {
        let frame = json!({"event": "publish", "data": {"room": "r", "event": ev, "data": data}}).to_string();
        prop_assert_eq!(inbound::parse(&frame).err(), Some(InboundError::ReservedEvent));
        if !["heartbeat", "authenticate", "join", "leave", "publish", "refresh", "presence"].contains(&ev) {
            let frame = json!({"event": ev, "data": data}).to_string();
            prop_assert_eq!(inbound::parse(&frame).err(), Some(InboundError::ReservedEvent));
        }
    }

    #[test]
    fn outbound_message_round_trips(ev in any::<String>(), data in prop::option::of(json_value())) {
        let raw = data.as_ref().map(|d| RawValue::from_string(d.to_string()).expect("JSON"));
        let frame = outbound::message(&ev, raw.as_deref());
        let back = outbound::Message::parse(&frame).expect("own frame parses");
        prop_assert_eq!(back.event, ev);
        prop_assert_eq!(back.data, data.unwrap_or(Value::Null));
    }

    #[test]
    fn outbound_error_round_trips(msg in any::<String>()) {
        let v: Value = serde_json::from_str(&outbound::error(&msg)).expect("own frame parses");
        prop_assert_eq!(&v["event"], "error");
        prop_assert_eq!(&v["data"]["message"], msg.as_str());
        prop_assert_eq!(v.as_object().map(|o| o.len()), Some(2));
    }

    #[test]
    fn sanitize_invariants(names in prop::collection::vec(room_name(), 0..16)) {
        let as_cow: Vec<Cow<'_, str>> = names.iter().map(|n| Cow::Borrowed(n.as_str())).collect();
        fuzz_checks::client_message::check_sanitize(&as_cow);
        let out = room::sanitize(&names);
        // idempotent
        prop_assert_eq!(room::sanitize(&out), out.clone());
        for n in &names {
            let uuid_shaped = uuid::Uuid::try_parse(n).is_ok() && n.len() == 36;
            let joinable = !n.is_empty() && n.len() <= 256 && !n.starts_with("ws:")
                && !n.chars().any(char::is_control) && !uuid_shaped;
            prop_assert_eq!(room::is_joinable(n), joinable, "{:?}", n);
            prop_assert_eq!(out.contains(n), joinable);
        }
    }

    #[test]
    fn envelope_round_trips(
        server_id in any::<String>(),
        kind in 0u8..4,
        target in any::<String>().prop_filter("target length", |t| !t.is_empty() && t.len() <= MAX_TARGET_LEN),
        client in client_id(),
        ev in app_event(),
        data in json_value(),
        exclude in prop::collection::vec(client_id(), 0..5),
    ) {
        let target = match kind {
            0 => Target::Client(client),
            1 => Target::User(UserId::parse(&target).expect("1 to MAX_TARGET_LEN bytes")),
            2 => Target::Room(RoomName::parse(&target).expect("1 to MAX_TARGET_LEN bytes")),
            _ => Target::Broadcast,
        };
        let env = Envelope {
            server_id,
            target,
            event: ev,
            data: RawValue::from_string(data.to_string()).expect("JSON"),
            exclude,
            action: sealcast::protocol::envelope::Action::Deliver,
            position: None,
        };
        let json = env.to_json();
        let back = Envelope::parse(json.as_bytes()).expect("own envelope parses");
        fuzz_checks::redis_envelope::assert_same(&env, &back);
        fuzz_checks::redis_envelope::check(json.as_bytes());
        prop_assert_eq!(Target::from_channel(&env.target.channel()), Some(env.target.clone()));
    }

    #[test]
    fn envelope_parse_never_panics(b in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzz_checks::redis_envelope::check(&b);
    }

    #[test]
    fn envelope_json_shaped(s in json_ish()) {
        fuzz_checks::redis_envelope::check(s.as_bytes());
    }

    #[test]
    fn reserved_events_never_cross_the_bus(ev in prop::sample::select(RESERVED.to_vec()), kind in 0u8..4) {
        let kind = ["client", "user", "room", "broadcast"][kind as usize];
        let bytes = json!({"serverId": "x", "type": kind, "target": "t", "event": ev, "data": {}}).to_string();
        prop_assert!(Envelope::parse(bytes.as_bytes()).is_err());
    }
}
