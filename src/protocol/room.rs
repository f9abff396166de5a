//! Room-name rules.
//!
//! Client ids are UUIDs and every client sits in a room named after its own id, so that `send(destination)` can
//! reach a client on any instance. To make it impossible to eavesdrop on another client's direct messages by
//! joining a room named after its id (which the reference allows; see docs/differences-from-ignis.md, "Room names
//! shaped like client ids are reserved"), UUID-shaped names are reserved for those own-id rooms: nobody can join
//! one except the client it names.

/// Longest room name, in bytes (the reference's `MAX_ROOM_NAME_LENGTH`, counted in bytes here).
pub const MAX_ROOM_LEN: usize = 256;

/// Prefix reserved for internal topics and bus channels.
pub const INTERNAL_PREFIX: &str = "ws:";

/// True when `name` may be joined by request: 1..=256 bytes, no `ws:` prefix, no control characters, not shaped
/// like a client id.
pub fn is_joinable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROOM_LEN
        && !name.starts_with(INTERNAL_PREFIX)
        && !name.chars().any(char::is_control)
        && !is_client_id_shaped(name)
}

/// True when `name` has the canonical hyphenated UUID form used for client ids.
pub fn is_client_id_shaped(name: &str) -> bool {
    name.len() == 36 && uuid::Uuid::try_parse(name).is_ok()
}

/// Keeps the joinable names of `requested` in order, without duplicates.
pub fn sanitize<I, S>(requested: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out: Vec<String> = Vec::new();
    for name in requested {
        let name = name.as_ref();
        if is_joinable(name) && !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    out
}

/// True when `room` matches one of `patterns` (exact, or `prefix*`).
pub fn allowed(patterns: &[String], room: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => p == room,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_long_internal_and_uuid_names() {
        assert!(!is_joinable(""));
        assert!(!is_joinable(&"a".repeat(257)));
        assert!(is_joinable(&"a".repeat(256)));
        assert!(!is_joinable("ws:internal:broadcast"));
        assert!(!is_joinable("0b6d9c2e-8f0a-4c59-9a57-3f2f1f7d3c11"));
        assert!(!is_joinable("a\nb"));
        assert!(is_joinable("chat:general"));
    }

    #[test]
    fn sanitize_keeps_order_and_drops_duplicates() {
        assert_eq!(sanitize(["b", "a", "b", "ws:x", ""]), vec!["b", "a"]);
    }
}
