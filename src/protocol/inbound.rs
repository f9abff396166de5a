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
    /// `{"event":"join","data":{"rooms":[..],"recover":{R:{"offset":N,"epoch":E}}}}`.
    Join {
        /// The string entries of `rooms`, unsanitised; empty when absent.
        rooms: Vec<Cow<'a, str>>,
        /// The positions the client asks to recover from, by room (`recover`; empty when absent). Entries for
        /// rooms not in `rooms` are kept here; the connection ignores them.
        recover: Vec<Recover>,
    },
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
        /// The top-level `id`: a string of at most [`event::MAX_PUBLISH_ID_LEN`] bytes that asks for an `ack` and
        /// makes retries idempotent.
        id: Option<Cow<'a, str>>,
    },
    /// `{"event":"presence","data":{"room":R}}`: who is in a room (the room's text, unsanitised).
    Presence(Cow<'a, str>),
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

/// A position in a room's history the client asks to resume after: the last `offset` it received in `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recover {
    /// The room.
    pub room: String,
    /// The last offset the client received.
    pub offset: u64,
    /// The stream's epoch that offset belongs to.
    pub epoch: String,
}

/// Longest `epoch` accepted in a `recover` entry, in bytes (the server's epochs are far shorter).
pub const MAX_EPOCH_LEN: usize = 64;

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
    #[serde(borrow, default)]
    recover: Option<std::collections::BTreeMap<Cow<'a, str>, Position<'a>>>,
}

#[derive(Deserialize)]
struct Position<'a> {
    offset: u64,
    #[serde(borrow)]
    epoch: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RoomData<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
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
        event::JOIN => parse_join(data),
        event::LEAVE => parse_rooms(data).map(|(rooms, _)| ClientMessage::Leave(rooms)),
        event::PUBLISH => parse_publish(data, frame.id),
        event::PRESENCE => parse_presence(data),
        name if event::is_reserved(name) => Err(InboundError::ReservedEvent),
        name if name.is_empty() || name.len() > event::MAX_EVENT_LEN => Err(InboundError::InvalidFormat),
        _ => Ok(ClientMessage::Custom {
            event: frame.event,
            data,
            id: frame.id,
        }),
    }
}

type Rooms<'a> = (Vec<Cow<'a, str>>, Vec<Recover>);

fn parse_rooms(data: Option<&RawValue>) -> Result<Rooms<'_>, InboundError> {
    let Some(data) = data else {
        return Ok((Vec::new(), Vec::new()));
    };
    if !is_object(data) {
        return Err(InboundError::InvalidFormat);
    }
    let parsed: RoomsData<'_> = serde_json::from_str(data.get()).map_err(|_| InboundError::InvalidFormat)?;
    // Non-string entries are dropped like any other unjoinable name.
    let rooms = parsed
        .rooms
        .unwrap_or_default()
        .into_iter()
        .filter_map(|raw| serde_json::from_str::<Cow<'_, str>>(raw.get()).ok())
        .collect();
    let mut recover = Vec::new();
    for (room, p) in parsed.recover.unwrap_or_default() {
        if p.epoch.len() > MAX_EPOCH_LEN {
            return Err(InboundError::InvalidFormat);
        }
        recover.push(Recover {
            room: room.into_owned(),
            offset: p.offset,
            epoch: p.epoch.into_owned(),
        });
    }
    Ok((rooms, recover))
}

fn parse_join(data: Option<&RawValue>) -> Result<ClientMessage<'_>, InboundError> {
    let (rooms, recover) = parse_rooms(data)?;
    Ok(ClientMessage::Join { rooms, recover })
}

fn parse_presence(data: Option<&RawValue>) -> Result<ClientMessage<'_>, InboundError> {
    let data = data.filter(|d| is_object(d)).ok_or(InboundError::InvalidFormat)?;
    let p: RoomData<'_> = serde_json::from_str(data.get()).map_err(|_| InboundError::InvalidFormat)?;
    Ok(ClientMessage::Presence(p.room))
}

fn parse_publish<'a>(data: Option<&'a RawValue>, id: Option<&'a RawValue>) -> Result<ClientMessage<'a>, InboundError> {
    // A publish's id is the client's idempotency key: a short string, or nothing.
    let id = match id.filter(|i| i.get() != NULL) {
        None => None,
        Some(raw) => {
            let id: Cow<'a, str> = serde_json::from_str(raw.get()).map_err(|_| InboundError::InvalidFormat)?;
            if id.is_empty() || id.len() > event::MAX_PUBLISH_ID_LEN {
                return Err(InboundError::InvalidFormat);
            }
            Some(id)
        }
    };
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
        id,
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
        assert!(matches!(m, ClientMessage::Join { rooms: r, .. } if r == rooms(&["a", "b"])));
        assert!(matches!(parse(r#"{"event":"join"}"#).unwrap(), ClientMessage::Join { rooms: r, .. } if r.is_empty()));
    }

    #[test]
    fn join_carries_recovery_positions() {
        let m = parse(r#"{"event":"join","data":{"rooms":["c"],"recover":{"c":{"offset":41,"epoch":"e1"}}}}"#).unwrap();
        let want = Recover {
            room: "c".into(),
            offset: 41,
            epoch: "e1".into(),
        };
        assert!(matches!(m, ClientMessage::Join { recover, .. } if recover == [want]));
        for bad in [
            r#"{"event":"join","data":{"rooms":["c"],"recover":{"c":{"offset":-1,"epoch":"e"}}}}"#,
            r#"{"event":"join","data":{"rooms":["c"],"recover":{"c":{"offset":1}}}}"#,
            r#"{"event":"join","data":{"rooms":["c"],"recover":["c"]}}"#,
        ] {
            assert_eq!(parse(bad).err(), Some(InboundError::InvalidFormat), "{bad}");
        }
        let long = format!(
            r#"{{"event":"join","data":{{"rooms":["c"],"recover":{{"c":{{"offset":1,"epoch":"{}"}}}}}}}}"#,
            "e".repeat(MAX_EPOCH_LEN + 1)
        );
        assert_eq!(parse(&long).err(), Some(InboundError::InvalidFormat));
    }

    #[test]
    fn publish_ids_are_short_strings() {
        let with = |id: &str| format!(r#"{{"event":"publish","data":{{"room":"r","event":"e"}},"id":{id}}}"#);
        match parse(&with(r#""c1""#)).unwrap() {
            ClientMessage::Publish { id, .. } => assert_eq!(id.as_deref(), Some("c1")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&with("null")).unwrap(),
            ClientMessage::Publish { id: None, .. }
        ));
        let max = format!("\"{}\"", "x".repeat(event::MAX_PUBLISH_ID_LEN));
        assert!(matches!(
            parse(&with(&max)).unwrap(),
            ClientMessage::Publish { id: Some(_), .. }
        ));
        let over = format!("\"{}\"", "x".repeat(event::MAX_PUBLISH_ID_LEN + 1));
        for bad in [over.as_str(), "7", r#""""#, "{}"] {
            assert_eq!(parse(&with(bad)).err(), Some(InboundError::InvalidFormat), "{bad}");
        }
    }

    #[test]
    fn presence_names_one_room() {
        match parse(r#"{"event":"presence","data":{"room":"chat:1"}}"#).unwrap() {
            ClientMessage::Presence(room) => assert_eq!(room, "chat:1"),
            other => panic!("{other:?}"),
        }
        for bad in [
            r#"{"event":"presence"}"#,
            r#"{"event":"presence","data":{}}"#,
            r#"{"event":"presence","data":{"room":7}}"#,
            r#"{"event":"presence","data":"chat:1"}"#,
            r#"{"event":"presence","data":{"room":["a"]}}"#,
        ] {
            assert_eq!(parse(bad).err(), Some(InboundError::InvalidFormat), "{bad}");
        }
    }

    #[test]
    fn presence_events_are_reserved_for_the_server() {
        for ev in ["member_joined", "member_left"] {
            let f = format!(r#"{{"event":"{ev}","data":{{}}}}"#);
            assert_eq!(parse(&f).err(), Some(InboundError::ReservedEvent), "{ev}");
            let p = format!(r#"{{"event":"publish","data":{{"room":"r","event":"{ev}","data":{{}}}}}}"#);
            assert_eq!(parse(&p).err(), Some(InboundError::ReservedEvent), "{ev}");
        }
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
            ClientMessage::Publish { room, event, data, .. } => {
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
