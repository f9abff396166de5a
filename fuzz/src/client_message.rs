//! `client_message`: one raw client frame through the inbound parser and the router's decision
//! (`connection::Reader::route` without its I/O).
//!
//! Oracles: the decision agrees with an independent `serde_json::Value` reading of the frame; reserved events
//! are never accepted; join/leave room lists sanitise to joinable, unique names; a publish or custom message
//! re-encoded as the server would deliver it (`outbound::message`) parses back to the same event and data; a
//! join's `recover` positions and a publish's `id` agree with the `Value` reading; the error answer is a valid
//! `error` frame.

use std::borrow::Cow;

use sealcast::protocol::event::{self, errors};
use sealcast::protocol::inbound::{self, ClientMessage, InboundError};
use sealcast::protocol::{outbound, room};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// What the router does with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Answers `{"event":"error","data":{"message":..}}` and keeps serving.
    Error(&'static str),
    /// Keep-alive.
    Heartbeat,
    /// Authentication (a payload object or none).
    Authenticate,
    /// Credential refresh (a payload object or none).
    Refresh,
    /// Join rooms.
    Join,
    /// Leave.
    Leave,
    /// Publish.
    Publish,
    /// Presence query.
    Presence,
    /// Custom application event.
    Custom,
}

/// Runs one frame through the parser exactly as the router does (`from_utf8` then `inbound::parse`).
pub fn route(frame: &[u8]) -> Decision {
    let parsed = std::str::from_utf8(frame)
        .map_err(|_| InboundError::InvalidFormat)
        .and_then(inbound::parse);
    match parsed {
        Err(InboundError::InvalidFormat) => Decision::Error(errors::INVALID_MESSAGE_FORMAT),
        Err(InboundError::ReservedEvent) => Decision::Error(errors::RESERVED_EVENT),
        Ok(msg) => {
            check_message(&msg);
            match msg {
                ClientMessage::Heartbeat => Decision::Heartbeat,
                ClientMessage::Authenticate(_) => Decision::Authenticate,
                ClientMessage::Refresh(_) => Decision::Refresh,
                ClientMessage::Join { .. } => Decision::Join,
                ClientMessage::Leave(_) => Decision::Leave,
                ClientMessage::Publish { .. } => Decision::Publish,
                ClientMessage::Presence(_) => Decision::Presence,
                ClientMessage::Custom { .. } => Decision::Custom,
            }
        }
    }
}

/// The fuzz target.
pub fn check(data: &[u8]) {
    let decision = route(data);
    if let Decision::Error(message) = decision {
        check_error_frame(message);
    }
    check_against_value(data, decision);
}

/// The decision must agree with an independent reading of the frame as a `serde_json::Value`.
fn check_against_value(data: &[u8], decision: Decision) {
    let value = std::str::from_utf8(data)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(t).ok());
    let Some(Value::Object(obj)) = value else {
        // Not a JSON object (or not UTF-8): only a format error is a correct answer.
        assert_eq!(
            decision,
            Decision::Error(errors::INVALID_MESSAGE_FORMAT),
            "a non-object frame was accepted"
        );
        return;
    };
    let Some(name) = obj.get("event").and_then(Value::as_str) else {
        assert_eq!(
            decision,
            Decision::Error(errors::INVALID_MESSAGE_FORMAT),
            "a frame without a string event was accepted"
        );
        return;
    };
    // `Value` keeps the last of duplicate keys where the parser refuses them: only accepted frames are compared.
    let expected = match name {
        event::HEARTBEAT => Decision::Heartbeat,
        event::AUTHENTICATE => Decision::Authenticate,
        event::REFRESH => Decision::Refresh,
        event::JOIN => Decision::Join,
        event::LEAVE => Decision::Leave,
        event::PUBLISH => Decision::Publish,
        event::PRESENCE => Decision::Presence,
        _ => Decision::Custom,
    };
    if let Decision::Error(_) = decision {
        return;
    }
    assert_eq!(decision, expected, "event {name:?} routed as {decision:?}");
    if let Ok(text) = std::str::from_utf8(data) {
        check_positions(text, &obj);
    }
    if decision == Decision::Custom {
        assert!(
            event::is_valid_application_event(name),
            "custom event {name:?} accepted"
        );
    }
}

/// What an accepted frame asks of history (issue 16) is what its `Value` reading says: a join's `recover`
/// positions (room, offset, epoch) and a publish's top-level `id`.
fn check_positions(text: &str, obj: &Map<String, Value>) {
    match inbound::parse(text) {
        Ok(ClientMessage::Join { recover, .. }) => {
            let mut got: Vec<(String, u64, String)> =
                recover.into_iter().map(|r| (r.room, r.offset, r.epoch)).collect();
            got.sort();
            let mut want: Vec<(String, u64, String)> = obj
                .get("data")
                .and_then(|d| d.get("recover"))
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(room, p)| {
                            Some((
                                room.clone(),
                                p.get("offset")?.as_u64()?,
                                p.get("epoch")?.as_str()?.to_owned(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            want.sort();
            assert_eq!(got, want, "recover positions differ from the frame's");
        }
        Ok(ClientMessage::Publish { id, .. }) => {
            let want = obj.get("id").and_then(Value::as_str);
            assert_eq!(id.as_deref(), want, "publish id differs from the frame's");
        }
        Ok(ClientMessage::Presence(room)) => {
            let want = obj.get("data").and_then(|d| d.get("room")).and_then(Value::as_str);
            assert_eq!(Some(room.as_ref()), want, "presence room differs from the frame's");
        }
        _ => {}
    }
}

fn check_message(msg: &ClientMessage<'_>) {
    match msg {
        ClientMessage::Heartbeat => {}
        ClientMessage::Authenticate(data) | ClientMessage::Refresh(data) => {
            if let Some(d) = data {
                // The router reads the payload as a JSON object; a payload the parser let through must be one.
                assert!(
                    serde_json::from_str::<Map<String, Value>>(d.get()).is_ok(),
                    "authenticate payload is not an object"
                );
            }
        }
        ClientMessage::Join { rooms, .. } | ClientMessage::Leave(rooms) => check_sanitize(rooms),
        ClientMessage::Publish {
            room: _,
            event,
            data,
            id,
        } => {
            assert!(
                id.as_ref()
                    .is_none_or(|id| !id.is_empty() && id.len() <= event::MAX_PUBLISH_ID_LEN),
                "a publish id out of bounds"
            );
            assert!(
                event::is_valid_application_event(event),
                "publish of {event:?} accepted"
            );
            check_delivery(event, *data);
        }
        ClientMessage::Presence(_) => {}
        ClientMessage::Custom { event, data, id } => {
            assert!(event::is_valid_application_event(event), "custom {event:?} accepted");
            check_delivery(event, *data);
            if let Some(id) = id {
                assert!(serde_json::from_str::<Value>(id.get()).is_ok());
            }
        }
    }
}

/// `room::sanitize` keeps exactly the joinable names, first occurrence each, in order.
pub fn check_sanitize(rooms: &[Cow<'_, str>]) {
    let out = room::sanitize(rooms.iter());
    let mut expected: Vec<&str> = Vec::new();
    for r in rooms {
        let r = r.as_ref();
        if room::is_joinable(r) && !expected.contains(&r) {
            expected.push(r);
        }
    }
    assert_eq!(out, expected);
    for r in &out {
        assert!(!r.is_empty() && r.len() <= room::MAX_ROOM_LEN);
        assert!(!r.starts_with(room::INTERNAL_PREFIX));
        assert!(!r.chars().any(char::is_control));
        assert!(!room::is_client_id_shaped(r));
    }
}

/// The message as the server would deliver it parses back to the same event and data.
pub fn check_delivery(event_name: &str, data: Option<&RawValue>) {
    let frame = outbound::message(event_name, data);
    let back = outbound::Message::parse(&frame).unwrap_or_else(|| panic!("delivered frame does not parse: {frame}"));
    assert_eq!(back.event, event_name);
    let want: Value = match data {
        Some(d) => serde_json::from_str(d.get()).unwrap_or_else(|e| panic!("raw data is not JSON: {e}")),
        None => Value::Null,
    };
    assert_eq!(back.data, want);
}

fn check_error_frame(message: &str) {
    let frame = outbound::error(message);
    let v: Value = serde_json::from_str(&frame).unwrap_or_else(|e| panic!("error frame is not JSON: {e}"));
    assert_eq!(v["event"], event::ERROR);
    assert_eq!(v["data"]["message"], message);
}
