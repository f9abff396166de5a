//! Encoding of server → client frames. A frame is serialised once and its bytes are shared by every recipient.
//!
//! Also the WebSocket framing of what the server sends (RFC 6455 §5.2): server frames are never masked, so a
//! frame is a 2, 4 or 10-byte header followed by the payload as is. Encoding a fan-out's frame once lets every
//! plaintext recipient's writer send the same bytes without copying or re-framing them.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::event;
use crate::redact::debug_redacted;

debug_redacted!(Message { event; data });

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    // serde_json's escaping of a &str cannot fail; fall back to an empty literal rather than panic.
    match serde_json::to_string(s) {
        Ok(lit) => out.push_str(&lit),
        Err(_) => out.push_str("\"\""),
    }
}

/// `{"event":E,"data":D}` with `data` given as raw JSON text: the one shape of every frame the server sends.
fn frame(event_name: &str, data: &str) -> String {
    let mut out = String::with_capacity(event_name.len() + data.len() + 22);
    out.push_str("{\"event\":");
    push_json_str(&mut out, event_name);
    out.push_str(",\"data\":");
    out.push_str(data);
    out.push('}');
    out
}

/// `{"event":E,"data":D}` with `data` given as raw JSON (`None` encodes `null`).
pub fn message(event_name: &str, data: Option<&RawValue>) -> String {
    frame(event_name, data.map_or("null", RawValue::get))
}

/// `{"event":"error","data":{"message":M}}`.
pub fn error(message: &str) -> String {
    let mut data = String::with_capacity(message.len() + 14);
    data.push_str("{\"message\":");
    push_json_str(&mut data, message);
    data.push('}');
    frame(event::ERROR, &data)
}

/// `{"event":"error","data":{"message":M,"id":ID}}`: a refused `publish` that carried `id`.
pub fn error_with_id(message: &str, id: &str) -> String {
    let mut data = String::with_capacity(message.len() + id.len() + 22);
    data.push_str("{\"message\":");
    push_json_str(&mut data, message);
    data.push_str(",\"id\":");
    push_json_str(&mut data, id);
    data.push('}');
    frame(event::ERROR, &data)
}

/// `{"room":R,"client":C,"user":U}` (`user` is `null` for a client without one): the data of `member_joined` and
/// `member_left`.
pub fn member_data(room: &str, client: &str, user: Option<&str>) -> String {
    let mut out = String::with_capacity(room.len() + client.len() + 48);
    out.push_str("{\"room\":");
    push_json_str(&mut out, room);
    out.push_str(",\"client\":");
    push_json_str(&mut out, client);
    out.push_str(",\"user\":");
    match user {
        Some(u) => push_json_str(&mut out, u),
        None => out.push_str("null"),
    }
    out.push('}');
    out
}

/// A message's place in a room's history stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPos<'a> {
    /// Its offset: 1 for the room's first message, one more for each after it.
    pub offset: u64,
    /// The stream's epoch: changes whenever the stream had to be recreated.
    pub epoch: &'a str,
}

fn push_position(out: &mut String, at: StreamPos<'_>) {
    out.push_str(",\"offset\":");
    out.push_str(itoa::Buffer::new().format(at.offset));
    out.push_str(",\"epoch\":");
    push_json_str(out, at.epoch);
}

/// `{"event":"ack","data":{"id":ID}}`, plus `"offset"` and `"epoch"` for a history room.
pub fn ack(id: &str, at: Option<StreamPos<'_>>) -> String {
    let mut data = String::with_capacity(id.len() + 48);
    data.push_str("{\"id\":");
    push_json_str(&mut data, id);
    if let Some(at) = at {
        push_position(&mut data, at);
    }
    data.push('}');
    frame(event::ACK, &data)
}

/// `{"event":E,"data":D,"room":R,"offset":N,"epoch":P}`: a message delivered to a room with history. On an
/// encrypted session this whole text is the sealed record, so the position is authenticated with the payload.
pub fn history_message(event_name: &str, data: &RawValue, room: &str, at: StreamPos<'_>) -> String {
    let mut out = String::with_capacity(event_name.len() + data.get().len() + room.len() + 80);
    out.push_str("{\"event\":");
    push_json_str(&mut out, event_name);
    out.push_str(",\"data\":");
    out.push_str(data.get());
    out.push_str(",\"room\":");
    push_json_str(&mut out, room);
    push_position(&mut out, at);
    out.push('}');
    out
}

/// One joined room in a `joined` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedRoom {
    /// The room.
    pub room: String,
    /// For a room with history: its latest offset and its epoch.
    pub position: Option<(u64, String)>,
    /// For a room whose recovery was asked for: whether every missed message was delivered.
    pub recovered: Option<bool>,
}

/// `{"event":"joined","data":{"rooms":[..],"refused":[{"room":R,"reason":T}]}}`: the answer to a `join`.
pub fn joined(rooms: &[JoinedRoom], refused: &[(String, &'static str)]) -> String {
    let rooms: Vec<Value> = rooms
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("room".into(), Value::String(r.room.clone()));
            if let Some((offset, epoch)) = &r.position {
                m.insert("offset".into(), Value::from(*offset));
                m.insert("epoch".into(), Value::String(epoch.clone()));
            }
            if let Some(recovered) = r.recovered {
                m.insert("recovered".into(), Value::Bool(recovered));
            }
            Value::Object(m)
        })
        .collect();
    let refused: Vec<Value> = refused
        .iter()
        .map(|(room, reason)| serde_json::json!({"room": room, "reason": reason}))
        .collect();
    frame(
        event::JOINED,
        &serde_json::json!({"rooms": rooms, "refused": refused}).to_string(),
    )
}

/// `{"event":"connected","data":{"id":..,"userId":..,"time":..}}` plus the handshake's `fields` (wsenc/1: the
/// server's key share, salt and confirmation), the last plaintext frame of an encrypted session.
pub fn connected(id: &str, user_id: Option<&str>, time: &str, fields: Map<String, Value>) -> String {
    let mut data = Map::new();
    data.insert("id".into(), Value::String(id.to_owned()));
    if let Some(user) = user_id {
        data.insert("userId".into(), Value::String(user.to_owned()));
    }
    data.insert("time".into(), Value::String(time.to_owned()));
    data.extend(fields);
    frame(event::CONNECTED, &Value::Object(data).to_string())
}

/// A server → client application message after parsing: what an outbound transformer sees.
#[derive(Clone, PartialEq, serde::Deserialize)]
pub struct Message {
    /// Event name.
    pub event: String,
    /// Payload.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Message {
    /// Parses a frame produced by [`message`]; `None` for anything else.
    pub fn parse(frame: &str) -> Option<Self> {
        serde_json::from_str(frame).ok()
    }
}

/// WebSocket opcode of a text frame.
pub(crate) const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame (wsenc/1 §11.5's batched records).
pub(crate) const OP_BINARY: u8 = 0x2;
/// WebSocket opcode of a close frame.
pub(crate) const OP_CLOSE: u8 = 0x8;
/// WebSocket opcode of a pong frame.
pub(crate) const OP_PONG: u8 = 0xA;
/// A complete, empty ping frame (FIN, opcode 0x9, length 0).
pub(crate) const PING_FRAME: &[u8] = &[0x89, 0x00];

/// Appends one unfragmented, unmasked frame of `opcode` carrying `payload` to `out`.
pub(crate) fn put_frame(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    out.reserve(payload.len() + 10);
    put_header(out, opcode, payload.len());
    out.put_slice(payload);
}

/// Appends the header of one unfragmented, unmasked frame of `opcode` whose payload is `len` bytes long; the
/// caller appends exactly that payload next.
pub(crate) fn put_header(out: &mut BytesMut, opcode: u8, len: usize) {
    out.put_u8(0x80 | opcode);
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
}

/// A text frame encoded once and shared by every recipient. A clone is one reference count and a queued copy is
/// one pointer, which keeps every connection's queue small: a fan-out writes one queue slot per recipient.
#[derive(Clone)]
pub(crate) struct TextFrame(Arc<Encoded>);

struct Encoded {
    /// Header and payload, as they go on the wire.
    wire: Box<[u8]>,
    /// The payload as text, kept beside the wire bytes so that sealers get a `&str` without re-validating it.
    text: Box<str>,
}

impl TextFrame {
    /// Frames `text`.
    pub(crate) fn new(text: &str) -> Self {
        let mut out = BytesMut::with_capacity(text.len() + 10);
        put_frame(&mut out, OP_TEXT, text.as_bytes());
        Self(Arc::new(Encoded {
            wire: out.to_vec().into_boxed_slice(),
            text: text.into(),
        }))
    }

    /// The frame as it goes on the wire.
    pub(crate) fn wire(&self) -> &[u8] {
        &self.0.wire
    }

    /// The payload: the JSON text that was framed.
    pub(crate) fn text(&self) -> &str {
        &self.0.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `wire` with tungstenite's own header parser: one final, unmasked frame of `opcode`.
    fn parse(wire: &[u8], opcode: u8) -> Vec<u8> {
        let mut cursor = std::io::Cursor::new(wire);
        let (header, len) = tungstenite::protocol::frame::FrameHeader::parse(&mut cursor)
            .unwrap()
            .unwrap();
        assert!(header.is_final && header.mask.is_none());
        assert_eq!(u8::from(header.opcode), opcode);
        let start = cursor.position() as usize;
        assert_eq!(wire.len() - start, len as usize);
        wire[start..].to_vec()
    }

    #[test]
    fn frames_use_the_shortest_length_encoding_at_every_boundary() {
        for (len, header) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10), (100_000, 10)] {
            let text = "x".repeat(len);
            let frame = TextFrame::new(&text);
            assert_eq!(frame.wire().len(), len + header, "len {len}");
            assert_eq!(frame.text(), text);
            assert_eq!(parse(frame.clone().wire(), OP_TEXT), text.as_bytes());
        }
        let mut close = BytesMut::new();
        put_frame(&mut close, OP_CLOSE, b"\x03\xe8bye");
        assert_eq!(parse(&close, OP_CLOSE), b"\x03\xe8bye");
        assert_eq!(parse(PING_FRAME, 0x9), b"");
    }

    #[test]
    fn message_escapes_the_event_name_and_embeds_raw_data() {
        let data = RawValue::from_string(r#"{"a":[1,2]}"#.into()).unwrap();
        let f = message("we\"ird", Some(&data));
        assert_eq!(f, r#"{"event":"we\"ird","data":{"a":[1,2]}}"#);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["event"], "we\"ird");
        assert_eq!(message("e", None), r#"{"event":"e","data":null}"#);
    }

    #[test]
    fn delivery_guarantee_frames_have_their_documented_shapes() {
        let at = StreamPos {
            offset: 42,
            epoch: "e\"1",
        };
        assert_eq!(ack("c1", None), r#"{"event":"ack","data":{"id":"c1"}}"#);
        assert_eq!(
            ack("c1", Some(at)),
            r#"{"event":"ack","data":{"id":"c1","offset":42,"epoch":"e\"1"}}"#
        );
        assert_eq!(
            error_with_id("Not a member of room", "c\"2"),
            r#"{"event":"error","data":{"message":"Not a member of room","id":"c\"2"}}"#
        );
        let data = RawValue::from_string("{\"t\":1}".into()).unwrap();
        let m: Value = serde_json::from_str(&history_message("chat", &data, "r", at)).unwrap();
        assert_eq!(
            m,
            serde_json::json!({"event": "chat", "data": {"t": 1}, "room": "r", "offset": 42, "epoch": "e\"1"})
        );
        let rooms = [
            JoinedRoom {
                room: "a".into(),
                position: None,
                recovered: None,
            },
            JoinedRoom {
                room: "h".into(),
                position: Some((7, "e".into())),
                recovered: Some(true),
            },
        ];
        let j: Value = serde_json::from_str(&joined(&rooms, &[("x".into(), "Room not allowed")])).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"event": "joined", "data": {
                "rooms": [{"room": "a"}, {"room": "h", "offset": 7, "epoch": "e", "recovered": true}],
                "refused": [{"room": "x", "reason": "Room not allowed"}]}})
        );
    }

    #[test]
    fn error_frame_has_the_reference_shape() {
        assert_eq!(
            error("Not authenticated"),
            r#"{"event":"error","data":{"message":"Not authenticated"}}"#
        );
    }

    #[test]
    fn connected_carries_id_user_time_and_the_handshakes_fields() {
        let mut fields = Map::new();
        fields.insert("salt".into(), Value::String("s".into()));
        let frame = connected("c1", Some("alice"), "2026-12-03T10:00:00.000Z", fields);
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["event"], "connected");
        assert_eq!(
            v["data"],
            serde_json::json!({"id": "c1", "userId": "alice", "time": "2026-12-03T10:00:00.000Z", "salt": "s"})
        );
        let anonymous: Value = serde_json::from_str(&connected("c2", None, "t", Map::new())).unwrap();
        assert!(anonymous["data"].get("userId").is_none());
    }

    #[test]
    fn message_round_trips_through_parse() {
        let data = RawValue::from_string("[1]".into()).unwrap();
        let m = Message::parse(&message("x", Some(&data))).unwrap();
        assert_eq!(m.event, "x");
        assert_eq!(m.data, serde_json::json!([1]));
    }
}
