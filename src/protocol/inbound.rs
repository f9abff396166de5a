//! Parsing of client → server frames into [`ClientMessage`].
//!
//! The parser decides what a frame *is*; it never decides whether the client may do it (that depends on the
//! connection's state and lives in the connection task). Every malformed shape maps to an [`InboundError`] — never a
//! panic — so hostile frames get their documented answer and the connection keeps serving.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

use super::{event, json};

/// A parsed client frame.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    /// `{"event":"heartbeat"}`: keep-alive.
    Heartbeat,
    /// `{"event":"authenticate","data":{..}}`: `data` must be a JSON object (else `None`, which is a failed
    /// authentication, not a format error, as the reference answers it).
    Authenticate(Option<&'a RawValue>),
    /// `{"event":"refresh","data":{..}}`: fresh credentials (`None` when `data` is not an object).
    Refresh(Option<&'a RawValue>),
    /// `{"event":"join","data":{"rooms":[..]}}`: the string entries, unsanitised; empty when absent.
    Join(Vec<Cow<'a, str>>),
    /// `{"event":"leave","data":{"rooms":[..]}}`: the string entries; empty when absent.
    Leave(Vec<Cow<'a, str>>),
    /// `{"event":"publish","data":{"room":R,"event":E,"data":D}}`.
    Publish {
        /// Target room.
        room: Cow<'a, str>,
        /// Application event name, already checked against the reserved names.
        event: Cow<'a, str>,
        /// Payload, if present (absent is delivered as `null`).
        data: Option<&'a RawValue>,
    },
    /// Any other, non-reserved event, for the application's message handler.
    Custom {
        /// Event name.
        event: Cow<'a, str>,
        /// Payload, if present.
        data: Option<&'a RawValue>,
        /// Client-chosen correlation id, passed through untouched.
        id: Option<&'a RawValue>,
    },
}

/// Why a frame could not be turned into a [`ClientMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// Not a JSON object with a string `event`, or a field of a known event has the wrong shape.
    #[error("invalid message format")]
    InvalidFormat,
    /// The client used an event name reserved for the protocol (e.g. `connected`, `error`).
    #[error("reserved event name")]
    ReservedEvent,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RoomsData<'a> {
    #[serde(borrow, default)]
    rooms: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
struct PublishData<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

const NULL: &str = "null";

fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<ClientMessage<'_>, InboundError> {
    // serde would happily read a struct out of a JSON array; the protocol wants objects only.
    if !text.trim_start().starts_with('{') {
        return Err(InboundError::InvalidFormat);
    }
    // Payloads are relayed as raw text and unknown fields skipped unchecked: the whole frame must be JSON every
    // strict recipient can read (see `json`).
    if !json::is_strict(text) {
        return Err(InboundError::InvalidFormat);
    }
    let frame: Frame<'_> = serde_json::from_str(text).map_err(|_| InboundError::InvalidFormat)?;
    let data = frame.data.filter(|d| d.get() != NULL);
    match frame.event.as_ref() {
        event::HEARTBEAT => Ok(ClientMessage::Heartbeat),
        event::AUTHENTICATE => Ok(ClientMessage::Authenticate(data.filter(|d| is_object(d)))),
        event::REFRESH => Ok(ClientMessage::Refresh(data.filter(|d| is_object(d)))),
        event::JOIN => parse_rooms(data).map(ClientMessage::Join),
        event::LEAVE => parse_rooms(data).map(ClientMessage::Leave),
        event::PUBLISH => parse_publish(data),
        name if event::is_reserved(name) => Err(InboundError::ReservedEvent),
        name if name.is_empty() || name.len() > event::MAX_EVENT_LEN => Err(InboundError::InvalidFormat),
        _ => Ok(ClientMessage::Custom {
            event: frame.event,
            data,
            id: frame.id,
        }),
    }
}

fn parse_rooms(data: Option<&RawValue>) -> Result<Vec<Cow<'_, str>>, InboundError> {
    let Some(data) = data else {
        return Ok(Vec::new());
    };
    if !is_object(data) {
        return Err(InboundError::InvalidFormat);
    }
    let parsed: RoomsData<'_> = serde_json::from_str(data.get()).map_err(|_| InboundError::InvalidFormat)?;
    // Non-string entries are dropped like any other unjoinable name.
    Ok(parsed
        .rooms
        .unwrap_or_default()
        .into_iter()
        .filter_map(|raw| serde_json::from_str::<Cow<'_, str>>(raw.get()).ok())
        .collect())
}

fn parse_publish(data: Option<&RawValue>) -> Result<ClientMessage<'_>, InboundError> {
    let data = data.filter(|d| is_object(d)).ok_or(InboundError::InvalidFormat)?;
    let p: PublishData<'_> = serde_json::from_str(data.get()).map_err(|_| InboundError::InvalidFormat)?;
    if event::is_reserved(&p.event) {
        return Err(InboundError::ReservedEvent);
    }
    if !event::is_valid_application_event(&p.event) {
        return Err(InboundError::InvalidFormat);
    }
    Ok(ClientMessage::Publish {
        room: p.room,
        event: p.event,
        data: p.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(v: &[&str]) -> Vec<Cow<'static, str>> {
        v.iter().map(|s| Cow::Owned((*s).to_owned())).collect()
    }

    #[test]
    fn hostile_shapes_are_format_errors() {
        for bad in [
            "null",
            "[]",
            "[\"heartbeat\"]",
            "42",
            "\"x\"",
            "{",
            "{}",
            "{\"event\":1}",
            "{\"event\":null}",
            "{\"event\":\"\"}",
            "{\"event\":\"join\",\"data\":{\"rooms\":\"a\"}}",
            "{\"event\":\"join\",\"data\":[\"a\"]}",
            "{\"event\":\"join\",\"data\":\"a\"}",
            "{\"event\":\"publish\",\"data\":{\"room\":\"r\"}}",
            "{\"event\":\"publish\",\"data\":7}",
            "{\"event\":\"x\",\"event\":\"y\"}",
            // payloads no strict parser can read (found by fuzzing: fuzz/regressions/client_message/)
            r#"{"event":"chat","data":"\ude00"}"#,
            r#"{"event":"chat","data":{},"id":[1e400]}"#,
            r#"{"event":"publish","data":{"room":"r","event":"e","data":{"\ud800":1}}}"#,
            r#"{"event":"chat","extra":"\udead"}"#,
        ] {
            assert_eq!(parse(bad).err(), Some(InboundError::InvalidFormat), "{bad}");
        }
    }

    #[test]
    fn reserved_events_from_clients_are_refused() {
        for ev in ["connected", "error", "encrypted", "key_update"] {
            let f = format!("{{\"event\":\"{ev}\",\"data\":{{}}}}");
            assert_eq!(parse(&f).err(), Some(InboundError::ReservedEvent));
        }
        let p = r#"{"event":"publish","data":{"room":"r","event":"connected","data":{}}}"#;
        assert_eq!(parse(p).err(), Some(InboundError::ReservedEvent));
    }

    #[test]
    fn join_keeps_string_entries_only() {
        let m = parse(r#"{"event":"join","data":{"rooms":["a",1,null,"b"]}}"#).unwrap();
        assert!(matches!(m, ClientMessage::Join(r) if r == rooms(&["a", "b"])));
        assert!(matches!(parse(r#"{"event":"join"}"#).unwrap(), ClientMessage::Join(r) if r.is_empty()));
    }

    #[test]
    fn authenticate_with_non_object_data_has_no_payload() {
        assert!(matches!(
            parse(r#"{"event":"authenticate","data":"tok"}"#).unwrap(),
            ClientMessage::Authenticate(None)
        ));
        match parse(r#"{"event":"authenticate","data":{"token":"t"}}"#).unwrap() {
            ClientMessage::Authenticate(Some(d)) => assert_eq!(d.get(), r#"{"token":"t"}"#),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn publish_without_data_has_none() {
        match parse(r#"{"event":"publish","data":{"room":"r","event":"chat"}}"#).unwrap() {
            ClientMessage::Publish { room, event, data } => {
                assert_eq!((room.as_ref(), event.as_ref(), data.is_none()), ("r", "chat", true));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn custom_events_carry_data_and_id() {
        match parse(r#"{"event":"chat","data":{"t":1},"id":"abc"}"#).unwrap() {
            ClientMessage::Custom { event, data, id } => {
                assert_eq!(event, "chat");
                assert_eq!(data.map(RawValue::get), Some(r#"{"t":1}"#));
                assert_eq!(id.map(RawValue::get), Some(r#""abc""#));
            }
            other => panic!("{other:?}"),
        }
    }
}
