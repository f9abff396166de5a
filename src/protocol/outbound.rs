//! Encoding of server → client frames. A frame is serialised once and its bytes are shared by every recipient.

use serde_json::value::RawValue;

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

/// `{"event":E,"data":D}` with `data` given as raw JSON (`None` encodes `null`).
pub fn message(event_name: &str, data: Option<&RawValue>) -> String {
    let data = data.map_or("null", RawValue::get);
    let mut out = String::with_capacity(event_name.len() + data.len() + 22);
    out.push_str("{\"event\":");
    push_json_str(&mut out, event_name);
    out.push_str(",\"data\":");
    out.push_str(data);
    out.push('}');
    out
}

/// `{"event":"error","data":{"message":M}}`.
pub fn error(message: &str) -> String {
    let mut data = String::with_capacity(message.len() + 14);
    data.push_str("{\"message\":");
    push_json_str(&mut data, message);
    data.push('}');
    let mut out = String::with_capacity(data.len() + 28);
    out.push_str("{\"event\":\"");
    out.push_str(event::ERROR);
    out.push_str("\",\"data\":");
    out.push_str(&data);
    out.push('}');
    out
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn error_frame_has_the_reference_shape() {
        assert_eq!(
            error("Not authenticated"),
            r#"{"event":"error","data":{"message":"Not authenticated"}}"#
        );
    }

    #[test]
    fn message_round_trips_through_parse() {
        let data = RawValue::from_string("[1]".into()).unwrap();
        let m = Message::parse(&message("x", Some(&data))).unwrap();
        assert_eq!(m.event, "x");
        assert_eq!(m.data, serde_json::json!([1]));
    }
}
