//! `redis_envelope`: bytes from the bus through `Envelope::parse`, and channel names through
//! `Target::from_channel`.
//!
//! Oracles: an accepted envelope never carries a reserved or invalid event name and respects every limit;
//! `to_json` → `parse` gives the same envelope and the same JSON again; an accepted envelope agrees with an
//! independent `serde_json::Value` reading (its client target and `exclude` entries being that reading's text
//! parsed as client ids, the entries that are not ids left out, its history position being that reading's
//! `offset` and `epoch`); a channel name maps to a target whose channel is that name. A presence envelope is the
//! one kind that carries a reserved name: `member_joined` or `member_left`, to a room, about the one client it
//! excludes, its data rebuilt as `{"room","client","user"}` naming that room and client.

use sealcast::protocol::envelope::{MAX_ENVELOPE_LEN, MAX_EXCLUDE, MAX_TARGET_LEN};
use sealcast::protocol::event;
use sealcast::protocol::{Action, ClientId, Envelope, EnvelopeError, Target};
use serde_json::Value;

/// The fuzz target.
pub fn check(data: &[u8]) {
    check_channel(data);
    let env = match Envelope::parse(data) {
        Ok(env) => env,
        Err(e) => {
            assert_eq!(e == EnvelopeError::TooLarge, data.len() > MAX_ENVELOPE_LEN);
            return;
        }
    };
    assert!(data.len() <= MAX_ENVELOPE_LEN);
    if env.action == Action::Presence {
        check_presence(&env);
        return;
    }
    if env.action == Action::Disconnect {
        check_disconnect(data, &env);
        return;
    }
    assert!(
        event::is_valid_application_event(&env.event) && !event::is_reserved(&env.event),
        "envelope with event {:?} accepted",
        env.event
    );
    assert!(env.exclude.len() <= MAX_EXCLUDE);
    match &env.target {
        Target::User(t) => assert!(!t.as_str().is_empty() && t.as_str().len() <= MAX_TARGET_LEN),
        Target::Room(t) => assert!(!t.as_str().is_empty() && t.as_str().len() <= MAX_TARGET_LEN),
        Target::Client(_) | Target::Broadcast => {}
    }
    check_against_value(data, &env);

    let json = env.to_json();
    let back = Envelope::parse(json.as_bytes()).unwrap_or_else(|e| panic!("own serialisation refused: {e}: {json}"));
    assert_same(&env, &back);
    assert_eq!(back.to_json(), json, "serialisation is not stable");
    assert_eq!(Target::from_channel(&env.target.channel()).as_ref(), Some(&env.target));
}

/// Every field, `data` compared as raw text.
pub fn assert_same(a: &Envelope, b: &Envelope) {
    assert_eq!(a.server_id, b.server_id);
    assert_eq!(a.target, b.target);
    assert_eq!(a.event, b.event);
    assert_eq!(a.data.get(), b.data.get());
    assert_eq!(a.exclude, b.exclude);
}

fn check_against_value(data: &[u8], env: &Envelope) {
    let v: Value = serde_json::from_slice(data).unwrap_or_else(|e| panic!("accepted envelope is not JSON: {e}"));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("accepted envelope is not an object"));
    assert_eq!(
        obj.get("serverId").and_then(Value::as_str),
        Some(env.server_id.as_str())
    );
    assert_eq!(obj.get("event").and_then(Value::as_str), Some(env.event.as_str()));
    let kind = obj.get("type").and_then(Value::as_str);
    let target = obj.get("target").and_then(Value::as_str);
    match &env.target {
        Target::Broadcast => assert_eq!(kind, Some("broadcast")),
        Target::Client(t) => {
            assert_eq!(kind, Some("client"));
            assert_eq!(target.and_then(ClientId::parse), Some(*t));
        }
        Target::User(t) => assert_eq!((kind, target), (Some("user"), Some(t.as_str()))),
        Target::Room(t) => assert_eq!((kind, target), (Some("room"), Some(t.as_str()))),
    }
    let field = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let want_position = match (
        field("offset").and_then(Value::as_u64),
        field("epoch").and_then(Value::as_str),
    ) {
        (Some(offset), Some(epoch)) => Some((offset, epoch)),
        _ => None,
    };
    let got_position = env.position.as_ref().map(|p| (p.offset, p.epoch.as_str()));
    assert_eq!(
        got_position, want_position,
        "history position differs from the envelope's"
    );
    let want_data = obj.get("data").cloned().unwrap_or(Value::Null);
    let got_data: Value = serde_json::from_str(env.data.get()).unwrap_or_else(|e| panic!("data is not JSON: {e}"));
    assert_eq!(got_data, want_data);
    let raw_exclude: Vec<&str> = match obj.get("exclude") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().unwrap_or_else(|| panic!("non-string exclude accepted")))
            .collect(),
        Some(other) => panic!("exclude {other} accepted"),
    };
    assert!(raw_exclude.len() <= MAX_EXCLUDE);
    let want_exclude: Vec<ClientId> = raw_exclude.into_iter().filter_map(ClientId::parse).collect();
    assert_eq!(env.exclude, want_exclude);
}

fn check_presence(env: &Envelope) {
    assert!(
        env.event == event::MEMBER_JOINED || env.event == event::MEMBER_LEFT,
        "presence envelope with event {:?} accepted",
        env.event
    );
    let Target::Room(room) = &env.target else {
        panic!("presence envelope to a non-room target accepted");
    };
    let d: Value = serde_json::from_str(env.data.get()).unwrap_or_else(|e| panic!("data is not JSON: {e}"));
    assert_eq!(d.get("room").and_then(Value::as_str), Some(room.as_str()));
    let client = d.get("client").and_then(Value::as_str).and_then(ClientId::parse);
    assert_eq!(
        env.exclude,
        client.into_iter().collect::<Vec<_>>(),
        "exclude is not the client"
    );
    assert!(env.position.is_none());
    let json = env.to_json();
    let back = Envelope::parse(json.as_bytes()).unwrap_or_else(|e| panic!("own serialisation refused: {e}: {json}"));
    assert_same(env, &back);
    assert_eq!(back.action, Action::Presence);
}

/// `{"type":"disconnect","target":"client:<id>"|"user:<id>","event":"disconnect"}`: to a client or a user, the
/// target as the raw reading spells it, nothing excluded, no position, `null` data; it round-trips as a disconnect.
fn check_disconnect(data: &[u8], env: &Envelope) {
    assert_eq!(
        env.event,
        event::DISCONNECT,
        "disconnect envelope with event {:?} accepted",
        env.event
    );
    let v: Value = serde_json::from_slice(data).unwrap_or_else(|e| panic!("accepted envelope is not JSON: {e}"));
    assert_eq!(v.get("type").and_then(Value::as_str), Some("disconnect"));
    assert_eq!(v.get("serverId").and_then(Value::as_str), Some(env.server_id.as_str()));
    let target = v.get("target").and_then(Value::as_str).unwrap_or_default();
    match &env.target {
        Target::Client(id) => assert_eq!(target.strip_prefix("client:").and_then(ClientId::parse), Some(*id)),
        Target::User(u) => assert_eq!(target.strip_prefix("user:"), Some(u.as_str())),
        other => panic!("disconnect envelope to {other:?} accepted"),
    }
    assert!(v.get("exclude").and_then(Value::as_array).is_none_or(Vec::is_empty));
    assert!(env.exclude.is_empty() && env.position.is_none());
    assert_eq!(env.data.get(), "null");
    let json = env.to_json();
    let back = Envelope::parse(json.as_bytes()).unwrap_or_else(|e| panic!("own serialisation refused: {e}: {json}"));
    assert_same(env, &back);
    assert_eq!(back.action, Action::Disconnect);
    assert_eq!(back.to_json(), json, "serialisation is not stable");
}

fn check_channel(data: &[u8]) {
    let Ok(channel) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(t) = Target::from_channel(channel) {
        assert_eq!(t.channel(), channel);
    }
}
