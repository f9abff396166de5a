//! Typed identifiers: who a message is for, checked once where it enters (the bus, the HTTP API, the emitter,
//! the [`crate::Server`] handle, a client's frames) and carried as these types from then on, so no delivery path
//! parses or re-validates an id.
//!
//! - [`ClientId`]: one connection. A UUID, chosen by the server; its text is the canonical hyphenated form.
//! - [`UserId`]: every session of one user. Any text of 1 to [`MAX_TARGET_LEN`] bytes, as the authenticator
//!   names users.
//! - [`RoomName`]: every member of a room. Any text of 1 to [`MAX_TARGET_LEN`] bytes. That is the rule for
//!   *addressing* a room; which rooms a client may *join* is the stricter, separate [`super::room::is_joinable`].
//!
//! The length bound is the bus's: an envelope whose target is longer is refused by every instance, so a longer
//! name could never be reached across instances. None of these ids is a secret: `Debug` and `Display` print the
//! id's text.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use super::envelope::MAX_TARGET_LEN;

/// One connection's id: a UUID the server picks when the connection opens, sent to the client in `connected`.
///
/// [`ClientId::parse`] accepts what [`uuid::Uuid::try_parse`] accepts — the hyphenated form in either case, and
/// the simple, braced and URN forms — since that is what the server has always matched client ids with.
/// [`Display`](fmt::Display) always gives the canonical form: lowercase, hyphenated (36 bytes), which is the form
/// clients are told, the name of the client's own-id room, and the form on the bus (`ws:client:<id>`).
///
/// `Copy`, 16 bytes; ordered and hashed as the UUID (the order is also that of the canonical text).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(uuid::Uuid);

impl ClientId {
    /// Length of the canonical text form, in bytes.
    pub(crate) const TEXT_LEN: usize = 36;

    /// The id `text` names, if it is a UUID (see the type's docs for the accepted forms).
    pub fn parse(text: &str) -> Option<Self> {
        uuid::Uuid::try_parse(text).ok().map(Self)
    }

    /// A fresh random (v4) id for a new connection.
    pub(crate) fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The canonical text form, written into `buf` (no allocation).
    pub(crate) fn encode<'b>(&self, buf: &'b mut [u8; Self::TEXT_LEN]) -> &'b str {
        self.0.hyphenated().encode_lower(buf)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; Self::TEXT_LEN];
        f.write_str(self.encode(&mut buf))
    }
}

/// Prints the canonical text, quoted, as the `String` it replaces did.
impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; Self::TEXT_LEN];
        fmt::Debug::fmt(self.encode(&mut buf), f)
    }
}

/// The rule [`UserId`] and [`RoomName`] share: 1 to [`MAX_TARGET_LEN`] bytes.
fn bounded(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_TARGET_LEN
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// `text` as this id, if it is 1 to [`MAX_TARGET_LEN`] bytes long.
            pub fn parse(text: &str) -> Option<Self> {
                bounded(text).then(|| Self(text.into()))
            }

            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Prints the text, quoted, as the `String` it replaces did.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Hashes, compares and orders exactly as its text, so maps keyed by this id are looked up by `&str`.
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type! {
    /// A user id, as the authenticator named the user (for JWTs, the `sub` claim): 1 to [`MAX_TARGET_LEN`] bytes,
    /// any text. Empty or longer ids could not be addressed across instances (the bus refuses such targets), so
    /// an authenticator answering with one fails the authentication.
    ///
    /// Cheap to clone (a shared `Arc<str>`); hashed, compared and ordered as its text.
    UserId
}

name_type! {
    /// A room name as a delivery target: 1 to [`MAX_TARGET_LEN`] bytes, any text — the bus's limit on targets.
    ///
    /// Which rooms a client may *join* is a stricter, separate rule ([`super::room::is_joinable`]: at most
    /// [`super::room::MAX_ROOM_LEN`] bytes, no `ws:` prefix, no control characters, not shaped like a client id);
    /// sending to a room that nobody can join is allowed and reaches nobody. Every client is also in the room
    /// named after its own [`ClientId`] (its canonical text).
    ///
    /// Cheap to clone (a shared `Arc<str>`); hashed, compared and ordered as its text.
    RoomName
}

impl RoomName {
    /// `text` as a room name without copying it, if it is 1 to [`MAX_TARGET_LEN`] bytes long (a client's own-id
    /// room shares its connection's cached id text this way).
    pub(crate) fn from_shared(text: Arc<str>) -> Option<Self> {
        bounded(&text).then_some(Self(text))
    }

    /// The name's shared text (a clone of the `Arc`).
    pub(crate) fn as_shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const ID: &str = "0b6d9c2e-8f0a-4c59-9a57-3f2f1f7d3c11";

    #[test]
    fn client_ids_are_uuids_shown_in_canonical_form() {
        let id = ClientId::parse(ID).unwrap();
        assert_eq!(id.to_string(), ID);
        assert_eq!(ClientId::parse(&id.to_string()), Some(id));
        assert_eq!(format!("{id:?}"), format!("{ID:?}"));
        for other_form in [
            "0B6D9C2E-8F0A-4C59-9A57-3F2F1F7D3C11",
            "0b6d9c2e8f0a4c599a573f2f1f7d3c11",
            "{0b6d9c2e-8f0a-4c59-9a57-3f2f1f7d3c11}",
            "urn:uuid:0b6d9c2e-8f0a-4c59-9a57-3f2f1f7d3c11",
        ] {
            assert_eq!(ClientId::parse(other_form), Some(id), "{other_form}");
        }
        for bad in [
            "",
            "c1",
            "nope",
            &ID[1..],
            &format!("{ID}0"),
            "0b6d9c2e-8f0a-4c59-9a57-3f2f1f7d3c1g",
        ] {
            assert_eq!(ClientId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn random_client_ids_round_trip_and_order_like_their_text() {
        let ids: Vec<ClientId> = (0..64).map(|_| ClientId::random()).collect();
        for id in &ids {
            let text = id.to_string();
            assert_eq!(text.len(), ClientId::TEXT_LEN);
            assert_eq!(ClientId::parse(&text), Some(*id));
            assert_eq!(RoomName::from_shared(text.as_str().into()).unwrap().as_str(), text);
        }
        let mut by_id = ids.clone();
        by_id.sort();
        let mut by_text = ids;
        by_text.sort_by_key(ToString::to_string);
        assert_eq!(by_id, by_text);
    }

    #[test]
    fn names_are_one_to_max_target_len_bytes() {
        for text in ["u", "a:b", " ", "ws:internal", "é", ID, &"x".repeat(MAX_TARGET_LEN)] {
            let user = UserId::parse(text).unwrap();
            let room = RoomName::parse(text).unwrap();
            assert_eq!((user.as_str(), room.as_str()), (text, text));
            assert_eq!((user.to_string(), room.to_string()), (text.to_owned(), text.to_owned()));
            assert_eq!(format!("{user:?}"), format!("{text:?}"));
            assert_eq!(UserId::parse(user.as_str()), Some(user));
        }
        let long = "x".repeat(MAX_TARGET_LEN + 1);
        for bad in ["", long.as_str()] {
            assert_eq!(UserId::parse(bad), None);
            assert_eq!(RoomName::parse(bad), None);
            assert_eq!(RoomName::from_shared(bad.into()), None);
        }
        // Bytes, not characters: 512 two-byte characters fit, 513 do not.
        assert!(RoomName::parse(&"é".repeat(MAX_TARGET_LEN / 2)).is_some());
        assert!(RoomName::parse(&"é".repeat(MAX_TARGET_LEN / 2 + 1)).is_none());
    }

    #[test]
    fn maps_keyed_by_names_are_looked_up_by_text() {
        let mut rooms: HashMap<RoomName, u8> = HashMap::new();
        rooms.insert(RoomName::parse("chat").unwrap(), 1);
        assert_eq!(rooms.get("chat"), Some(&1));
        assert_eq!(rooms.get("other"), None);
        let users: HashMap<UserId, u8> = [(UserId::parse("alice").unwrap(), 2)].into();
        assert_eq!(users.get("alice"), Some(&2));
        let a = UserId::parse("alice").unwrap();
        assert_eq!(a.clone(), a);
        assert!(UserId::parse("a").unwrap() < UserId::parse("b").unwrap());
    }
}
