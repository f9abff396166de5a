//! The cross-instance bus envelope and channel names, wire-compatible with the reference's Redis envelope
//! `{serverId, type, target?, event, data, exclude?}` so mixed fleets and existing emitters keep working.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::id::{ClientId, RoomName, UserId};
use super::{event, json};
use crate::redact::debug_redacted;

debug_redacted!(Envelope { server_id, target, event, exclude, action, position; data });

/// Channel every instance hears.
pub const BROADCAST_CHANNEL: &str = "ws:broadcast";
/// Prefix of room channels.
pub const ROOM_PREFIX: &str = "ws:room:";
/// Prefix of client channels.
pub const CLIENT_PREFIX: &str = "ws:client:";
/// Prefix of user channels.
pub const USER_PREFIX: &str = "ws:user:";
/// `serverId` used by emitters; never equal to a server's own id.
pub const EMITTER_SERVER_ID: &str = "emitter";

/// Largest envelope accepted from the bus, in bytes.
pub const MAX_ENVELOPE_LEN: usize = 1024 * 1024;
/// Most `exclude` entries accepted in one envelope.
pub const MAX_EXCLUDE: usize = 1024;
/// Longest target (room, client or user id) accepted, in bytes.
pub const MAX_TARGET_LEN: usize = 1024;

/// Who an envelope is addressed to. The ids are already checked (see [`super::id`]): building a `Target` is
/// where text from outside becomes an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// One connection, by id.
    Client(ClientId),
    /// Every session of a user.
    User(UserId),
    /// Every member of a room.
    Room(RoomName),
    /// Every authenticated client.
    Broadcast,
}

impl Target {
    /// The bus channel this target is published on.
    pub fn channel(&self) -> String {
        match self {
            Self::Client(id) => format!("{CLIENT_PREFIX}{id}"),
            Self::User(id) => format!("{USER_PREFIX}{id}"),
            Self::Room(room) => format!("{ROOM_PREFIX}{room}"),
            Self::Broadcast => BROADCAST_CHANNEL.to_owned(),
        }
    }

    /// The target a channel name denotes, if it is one of ours: exactly the name [`Target::channel`] gives it.
    /// A client channel must carry the id's canonical text (the only form published or subscribed to); user and
    /// room channels a name of 1 to [`MAX_TARGET_LEN`] bytes.
    pub fn from_channel(channel: &str) -> Option<Self> {
        if channel == BROADCAST_CHANNEL {
            return Some(Self::Broadcast);
        }
        if let Some(id) = channel.strip_prefix(CLIENT_PREFIX) {
            return ClientId::parse(id)
                .filter(|c| c.encode(&mut [0; ClientId::TEXT_LEN]) == id)
                .map(Self::Client);
        }
        if let Some(user) = channel.strip_prefix(USER_PREFIX) {
            return UserId::parse(user).map(Self::User);
        }
        channel
            .strip_prefix(ROOM_PREFIX)
            .and_then(RoomName::parse)
            .map(Self::Room)
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Client(_) => "client",
            Self::User(_) => "user",
            Self::Room(_) => "room",
            Self::Broadcast => "broadcast",
        }
    }

    /// The wire `target` text: the id's or the name's text (`None` for broadcast).
    pub(crate) fn id_text(&self) -> Option<String> {
        match self {
            Self::Client(id) => Some(id.to_string()),
            Self::User(user) => Some(user.as_str().to_owned()),
            Self::Room(room) => Some(room.as_str().to_owned()),
            Self::Broadcast => None,
        }
    }
}

/// What an envelope asks the receiving instances to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Action {
    /// Deliver `event`/`data` to the target's local clients (the reference's envelope).
    #[default]
    Deliver,
    /// Close the target's local connections (client or user targets only) with
    /// [`crate::CloseCode::PolicyViolation`] (1008). On the wire: `"type":"disconnect"`, `"target":"client:<id>"`
    /// or `"user:<id>"`, `"event":"disconnect"`; reference servers ignore the unknown type.
    Disconnect,
    /// Deliver a presence event (`member_joined` / `member_left`, a reserved name) to a room's local members. On
    /// the wire: `"type":"presence"`, `"target":"<room>"`, `data` `{"room","client","user"}` (rebuilt from its
    /// parsed fields on receipt), `exclude` the client it is about. Every instance delivers these, its own
    /// included.
    Presence,
}

/// The wire `type` of disconnect envelopes.
pub const DISCONNECT_TYPE: &str = "disconnect";
/// The wire `type` of presence envelopes.
pub const PRESENCE_TYPE: &str = "presence";

#[derive(Deserialize)]
struct PresenceData<'a> {
    #[serde(borrow)]
    room: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    client: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    user: Option<std::borrow::Cow<'a, str>>,
}

/// One message travelling between instances.
#[derive(Clone)]
pub struct Envelope {
    /// The publishing instance (`"emitter"` for emitters); an instance skips its own envelopes.
    pub server_id: String,
    /// Addressee.
    pub target: Target,
    /// Application event name (never a reserved one).
    pub event: String,
    /// Payload, raw JSON.
    pub data: Box<RawValue>,
    /// Client ids that must not receive it (room and broadcast only). On the wire: their canonical text.
    pub exclude: Vec<ClientId>,
    /// Deliver (the default) or disconnect.
    pub action: Action,
    /// For a room with history: the message's place in the room's stream (delivered with it as `room`,
    /// `offset`, `epoch`). On the wire, the top-level `offset` and `epoch` fields, which the Redis bus's history
    /// script appends when it assigns the offset ([`Envelope::to_json`] never writes them, and a bus signature
    /// does not cover them). The publishing instance delivers such an envelope too when it comes back from the
    /// bus: that is how its own clients get the message, in offset order.
    pub position: Option<super::StreamPosition>,
}

/// Why an envelope from the bus was refused. Refused envelopes are dropped and counted, never delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Larger than [`MAX_ENVELOPE_LEN`].
    #[error("envelope larger than {MAX_ENVELOPE_LEN} bytes")]
    TooLarge,
    /// Not JSON, or a field has the wrong type.
    #[error("envelope is not valid JSON of the expected shape")]
    Malformed,
    /// `type` is not client, user, room or broadcast, a non-broadcast envelope lacks `target`, or a client
    /// target is not a client id (a UUID).
    #[error("envelope has an unknown type or is missing its target")]
    BadTarget,
    /// The event name is reserved (`connected`, `encrypted`, ...) or empty/too long.
    #[error("envelope carries a reserved or invalid event name")]
    BadEvent,
    /// Too many `exclude` entries or an oversized target.
    #[error("envelope exceeds a field limit")]
    Limit,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    #[serde(borrow)]
    server_id: std::borrow::Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    target: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exclude: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    epoch: Option<std::borrow::Cow<'a, str>>,
}

impl Envelope {
    /// A disconnect envelope for a client or a user (`None` for rooms and broadcast).
    pub fn disconnect(server_id: impl Into<String>, target: Target) -> Option<Self> {
        match target {
            Target::Client(_) | Target::User(_) => Some(Self {
                server_id: server_id.into(),
                target,
                event: event::DISCONNECT.to_owned(),
                data: RawValue::from_string("null".to_owned()).ok()?,
                exclude: Vec::new(),
                action: Action::Disconnect,
                position: None,
            }),
            Target::Room(_) | Target::Broadcast => None,
        }
    }

    /// A presence event (`member_joined` or `member_left`) about `client` (of `user`) in `room`, for the room's
    /// other members.
    pub fn presence(
        server_id: impl Into<String>,
        room: RoomName,
        joined: bool,
        client: ClientId,
        user: Option<&UserId>,
    ) -> Option<Self> {
        let data = super::outbound::member_data(room.as_str(), &client.to_string(), user.map(UserId::as_str));
        Some(Self {
            server_id: server_id.into(),
            target: Target::Room(room),
            event: if joined {
                event::MEMBER_JOINED
            } else {
                event::MEMBER_LEFT
            }
            .to_owned(),
            data: RawValue::from_string(data).ok()?,
            exclude: vec![client],
            action: Action::Presence,
            position: None,
        })
    }

    /// The wire `type` and `target` fields (what the bus signature covers).
    pub(crate) fn wire_kind_target(&self) -> (&'static str, Option<String>) {
        match self.action {
            Action::Deliver => (self.target.kind(), self.target.id_text()),
            Action::Presence => (PRESENCE_TYPE, self.target.id_text()),
            Action::Disconnect => (
                DISCONNECT_TYPE,
                self.target.id_text().map(|id| format!("{}:{id}", self.target.kind())),
            ),
        }
    }

    /// Serialises to the reference's JSON form.
    pub fn to_json(&self) -> String {
        let (kind, target) = self.wire_kind_target();
        let wire = Wire {
            server_id: self.server_id.as_str().into(),
            kind: kind.into(),
            target: target.map(Into::into),
            event: self.event.as_str().into(),
            data: Some(&self.data),
            exclude: (!self.exclude.is_empty()).then(|| self.exclude.iter().map(ClientId::to_string).collect()),
            offset: None,
            epoch: None,
        };
        // Every field is a string, a list of strings or already-valid raw JSON, so this cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Parses and validates an envelope received from the bus: the edge where its text becomes typed ids. A client
    /// target must be a client id ([`EnvelopeError::BadTarget`] otherwise); `exclude` entries that are not client
    /// ids are dropped, as they could never match a client (the [`MAX_EXCLUDE`] limit counts them all).
    pub fn parse(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(EnvelopeError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| EnvelopeError::Malformed)?;
        if !text.trim_start().starts_with('{') {
            return Err(EnvelopeError::Malformed);
        }
        // `data` is relayed to clients as raw text and unknown fields are skipped unchecked: the whole envelope must
        // be JSON every strict recipient can read (see `json`).
        if !json::is_strict(text) {
            return Err(EnvelopeError::Malformed);
        }
        let w: Wire<'_> = serde_json::from_str(text).map_err(|_| EnvelopeError::Malformed)?;
        if w.kind == DISCONNECT_TYPE {
            return Self::parse_disconnect(w);
        }
        if w.kind == PRESENCE_TYPE {
            return Self::parse_presence(w);
        }
        if !event::is_valid_application_event(&w.event) {
            return Err(EnvelopeError::BadEvent);
        }
        let target = match (w.kind.as_ref(), w.target) {
            ("broadcast", _) => Target::Broadcast,
            (_, None) => return Err(EnvelopeError::BadTarget),
            (_, Some(t)) if t.is_empty() => return Err(EnvelopeError::BadTarget),
            (_, Some(t)) if t.len() > MAX_TARGET_LEN => return Err(EnvelopeError::Limit),
            ("client", Some(t)) => Target::Client(ClientId::parse(&t).ok_or(EnvelopeError::BadTarget)?),
            ("user", Some(t)) => Target::User(UserId::parse(&t).ok_or(EnvelopeError::BadTarget)?),
            ("room", Some(t)) => Target::Room(RoomName::parse(&t).ok_or(EnvelopeError::BadTarget)?),
            _ => return Err(EnvelopeError::BadTarget),
        };
        // A position is a whole (both fields, a short epoch) on a room envelope, or absent.
        let position = match (w.offset, w.epoch, &target) {
            (None, None, _) => None,
            (Some(offset), Some(epoch), Target::Room(_)) if epoch.len() <= super::inbound::MAX_EPOCH_LEN => {
                Some(super::StreamPosition {
                    offset,
                    epoch: epoch.into_owned(),
                })
            }
            _ => return Err(EnvelopeError::Malformed),
        };
        let exclude = w.exclude.unwrap_or_default();
        if exclude.len() > MAX_EXCLUDE {
            return Err(EnvelopeError::Limit);
        }
        let exclude = exclude.iter().filter_map(|id| ClientId::parse(id)).collect();
        let data = match w.data {
            Some(d) => d.to_owned(),
            None => RawValue::from_string("null".to_owned()).map_err(|_| EnvelopeError::Malformed)?,
        };
        Ok(Self {
            server_id: w.server_id.into_owned(),
            target,
            event: w.event.into_owned(),
            data,
            exclude,
            action: Action::Deliver,
            position,
        })
    }

    /// `{"type":"presence","target":R,"event":"member_joined"|"member_left","data":{"room":R,"client":C,"user":U}}`:
    /// the data must name the target room, a client id and a valid user (or `null`), and is rebuilt from them.
    fn parse_presence(w: Wire<'_>) -> Result<Self, EnvelopeError> {
        let joined = match w.event.as_ref() {
            event::MEMBER_JOINED => true,
            event::MEMBER_LEFT => false,
            _ => return Err(EnvelopeError::BadEvent),
        };
        if w.offset.is_some() || w.epoch.is_some() {
            return Err(EnvelopeError::Malformed);
        }
        let raw = w.target.ok_or(EnvelopeError::BadTarget)?;
        if raw.len() > MAX_TARGET_LEN {
            return Err(EnvelopeError::Limit);
        }
        let room = RoomName::parse(&raw).ok_or(EnvelopeError::BadTarget)?;
        let data = w.data.ok_or(EnvelopeError::Malformed)?;
        let d: PresenceData<'_> = serde_json::from_str(data.get()).map_err(|_| EnvelopeError::Malformed)?;
        if d.room != raw {
            return Err(EnvelopeError::BadTarget);
        }
        let client = ClientId::parse(&d.client).ok_or(EnvelopeError::Malformed)?;
        let user = match d.user {
            Some(u) if u.len() > MAX_TARGET_LEN => return Err(EnvelopeError::Limit),
            Some(u) => Some(UserId::parse(&u).ok_or(EnvelopeError::Malformed)?),
            None => None,
        };
        Self::presence(w.server_id.into_owned(), room, joined, client, user.as_ref()).ok_or(EnvelopeError::Malformed)
    }

    /// `{"type":"disconnect","target":"client:<id>"|"user:<id>","event":"disconnect"}`, nothing excluded.
    fn parse_disconnect(w: Wire<'_>) -> Result<Self, EnvelopeError> {
        if w.event != event::DISCONNECT {
            return Err(EnvelopeError::BadEvent);
        }
        if w.exclude.is_some_and(|e| !e.is_empty()) {
            return Err(EnvelopeError::Limit);
        }
        let raw = w.target.ok_or(EnvelopeError::BadTarget)?;
        if raw.len() > MAX_TARGET_LEN {
            return Err(EnvelopeError::Limit);
        }
        let target = match raw.split_once(':') {
            Some(("client", id)) => ClientId::parse(id).map(Target::Client),
            Some(("user", id)) => UserId::parse(id).map(Target::User),
            _ => None,
        };
        let target = target.ok_or(EnvelopeError::BadTarget)?;
        Self::disconnect(w.server_id.into_owned(), target).ok_or(EnvelopeError::BadTarget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: &str = "0b6d9c2e-8f0a-4c59-9a57-3f2f1f7d3c11";

    fn room(name: &str) -> Target {
        Target::Room(RoomName::parse(name).unwrap())
    }

    fn user(id: &str) -> Target {
        Target::User(UserId::parse(id).unwrap())
    }

    fn client(id: &str) -> Target {
        Target::Client(ClientId::parse(id).unwrap())
    }

    #[test]
    fn a_presence_envelope_round_trips_and_its_data_is_checked() {
        let room = RoomName::parse("chat:1").unwrap();
        let client = ClientId::parse(C1).unwrap();
        let alice = UserId::parse("alice").unwrap();
        let env = Envelope::presence("s1", room.clone(), true, client, Some(&alice)).unwrap();
        let back = Envelope::parse(env.to_json().as_bytes()).unwrap();
        assert_eq!(back.action, Action::Presence);
        assert_eq!(back.event, "member_joined");
        assert_eq!(back.exclude, vec![client]);
        assert_eq!(
            back.data.get(),
            format!(r#"{{"room":"chat:1","client":"{C1}","user":"alice"}}"#)
        );
        let left = Envelope::presence("s1", room, false, client, None).unwrap();
        let back = Envelope::parse(left.to_json().as_bytes()).unwrap();
        assert_eq!(
            (back.event.as_str(), back.data.get().contains(r#""user":null"#)),
            ("member_left", true)
        );
        let base = |event: &str, data: &str| {
            format!(r#"{{"serverId":"s","type":"presence","target":"chat:1","event":"{event}","data":{data}}}"#)
        };
        for bad in [
            base("chat", &format!(r#"{{"room":"chat:1","client":"{C1}"}}"#)),
            base("member_left", &format!(r#"{{"room":"other","client":"{C1}"}}"#)),
            base("member_left", r#"{"room":"chat:1","client":"nope"}"#),
            base(
                "member_left",
                &format!(r#"{{"room":"chat:1","client":"{C1}","user":7}}"#),
            ),
            base("member_left", "null"),
            base("member_left", "[1]"),
        ] {
            assert!(Envelope::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_history_position_is_read_whole_and_only_on_room_envelopes() {
        let base = r#"{"serverId":"s","type":"room","target":"chat","event":"m","data":1"#;
        let env = Envelope::parse(format!(r#"{base},"offset":7,"epoch":"e1"}}"#).as_bytes()).unwrap();
        assert_eq!(
            env.position,
            Some(super::super::StreamPosition {
                offset: 7,
                epoch: "e1".into()
            })
        );
        assert!(
            !env.to_json().contains("offset"),
            "only the bus's history script writes it"
        );
        assert_eq!(Envelope::parse(format!("{base}}}").as_bytes()).unwrap().position, None);
        let long = "e".repeat(65);
        for bad in [
            format!(r#"{base},"offset":7}}"#),
            format!(r#"{base},"epoch":"e1"}}"#),
            format!(r#"{base},"offset":-1,"epoch":"e1"}}"#),
            format!(r#"{base},"offset":7,"epoch":"{long}"}}"#),
            r#"{"serverId":"s","type":"broadcast","event":"m","data":1,"offset":7,"epoch":"e"}"#.to_owned(),
        ] {
            assert_eq!(
                Envelope::parse(bad.as_bytes()).err(),
                Some(EnvelopeError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn reference_emitter_envelope_parses() {
        let e = Envelope::parse(br#"{"serverId":"emitter","type":"room","target":"r","event":"e","data":{}}"#).unwrap();
        assert_eq!(e.server_id, EMITTER_SERVER_ID);
        assert_eq!(e.target, room("r"));
        assert_eq!(e.target.channel(), "ws:room:r");
        assert_eq!(e.data.get(), "{}");
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let e = Envelope {
            server_id: "s1".into(),
            target: Target::Broadcast,
            event: "news".into(),
            data: RawValue::from_string("[1,\"x\"]".into()).unwrap(),
            exclude: vec![ClientId::parse(C1).unwrap()],
            action: Action::Deliver,
            position: None,
        };
        let json = e.to_json();
        assert!(json.contains(&format!(r#""exclude":["{C1}"]"#)), "{json}");
        let back = Envelope::parse(json.as_bytes()).unwrap();
        assert_eq!(
            (back.server_id, back.target, back.event),
            ("s1".into(), Target::Broadcast, "news".into())
        );
        assert_eq!((back.data.get(), back.exclude), ("[1,\"x\"]", e.exclude));
    }

    #[test]
    fn ids_are_parsed_once_on_the_way_in() {
        let upper = C1.to_uppercase();
        let text = format!(
            r#"{{"serverId":"x","type":"client","target":"{upper}","event":"e","exclude":["a","{C1}","{upper}",""]}}"#
        );
        let e = Envelope::parse(text.as_bytes()).unwrap();
        assert_eq!(e.target, client(C1));
        // Entries that are not client ids could never match one: dropped.
        assert_eq!(e.exclude, vec![ClientId::parse(C1).unwrap(); 2]);
        let text = r#"{"serverId":"x","type":"client","target":"c1","event":"e"}"#;
        assert_eq!(Envelope::parse(text.as_bytes()).err(), Some(EnvelopeError::BadTarget));
        // The limit counts every entry, ids or not.
        let many = vec!["a"; MAX_EXCLUDE + 1];
        let text = serde_json::json!({"serverId": "x", "type": "broadcast", "event": "e", "exclude": many});
        assert_eq!(
            Envelope::parse(text.to_string().as_bytes()).err(),
            Some(EnvelopeError::Limit)
        );
    }

    fn assert_refused(cases: &[(&[u8], EnvelopeError)]) {
        for (bytes, want) in cases {
            let got = Envelope::parse(bytes).err();
            assert_eq!(got, Some(*want), "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn hostile_envelopes_are_refused() {
        let cases: [(&[u8], EnvelopeError); 9] = [
            (b"nope", EnvelopeError::Malformed),
            (b"[1]", EnvelopeError::Malformed),
            (
                br#"{"serverId":1,"type":"room","target":"r","event":"e"}"#,
                EnvelopeError::Malformed,
            ),
            (
                br#"{"serverId":"x","type":"room","event":"e"}"#,
                EnvelopeError::BadTarget,
            ),
            (
                br#"{"serverId":"x","type":"planet","target":"r","event":"e"}"#,
                EnvelopeError::BadTarget,
            ),
            (
                br#"{"serverId":"x","type":"room","target":"r","event":"connected"}"#,
                EnvelopeError::BadEvent,
            ),
            (
                br#"{"serverId":"x","type":"broadcast","event":"encrypted"}"#,
                EnvelopeError::BadEvent,
            ),
            (
                br#"{"serverId":"x","type":"broadcast","event":"e","data":["\udead"]}"#,
                EnvelopeError::Malformed,
            ),
            (
                br#"{"serverId":"x","type":"broadcast","event":"e","other":"\udead"}"#,
                EnvelopeError::Malformed,
            ),
        ];
        assert_refused(&cases);
        let big = vec![b' '; MAX_ENVELOPE_LEN + 1];
        assert_eq!(Envelope::parse(&big).err(), Some(EnvelopeError::TooLarge));
    }

    #[test]
    fn disconnect_envelopes_round_trip_on_the_targets_channel() {
        for target in [client(C1), user("u:1")] {
            let e = Envelope::disconnect("s1", target.clone()).unwrap();
            let json = e.to_json();
            assert!(json.contains("\"type\":\"disconnect\""), "{json}");
            let back = Envelope::parse(json.as_bytes()).unwrap();
            assert_eq!((back.action, back.target.clone()), (Action::Disconnect, target.clone()));
            assert_eq!(back.target.channel(), target.channel());
        }
        assert!(Envelope::disconnect("s1", room("r")).is_none());
        assert!(Envelope::disconnect("s1", Target::Broadcast).is_none());
    }

    #[test]
    fn hostile_disconnect_envelopes_are_refused() {
        let cases: [(&[u8], EnvelopeError); 7] = [
            (
                br#"{"serverId":"x","type":"disconnect","target":"client:c1","event":"disconnect"}"#,
                EnvelopeError::BadTarget,
            ),
            (
                br#"{"serverId":"x","type":"disconnect","event":"disconnect"}"#,
                EnvelopeError::BadTarget,
            ),
            (
                br#"{"serverId":"x","type":"disconnect","target":"room:r","event":"disconnect"}"#,
                EnvelopeError::BadTarget,
            ),
            (
                br#"{"serverId":"x","type":"disconnect","target":"client:","event":"disconnect"}"#,
                EnvelopeError::BadTarget,
            ),
            (
                br#"{"serverId":"x","type":"disconnect","target":"c1","event":"disconnect"}"#,
                EnvelopeError::BadTarget,
            ),
            (
                br#"{"serverId":"x","type":"disconnect","target":"client:c","event":"kick"}"#,
                EnvelopeError::BadEvent,
            ),
            (
                br#"{"serverId":"x","type":"disconnect","target":"user:u","event":"disconnect","exclude":["a"]}"#,
                EnvelopeError::Limit,
            ),
        ];
        assert_refused(&cases);
        let long = format!(
            r#"{{"serverId":"x","type":"disconnect","target":"user:{}","event":"disconnect"}}"#,
            "u".repeat(MAX_TARGET_LEN)
        );
        assert_eq!(Envelope::parse(long.as_bytes()).err(), Some(EnvelopeError::Limit));
    }

    #[test]
    fn channels_map_back_to_targets() {
        for t in [Target::Broadcast, room("a:b"), client(C1), user("u")] {
            assert_eq!(Target::from_channel(&t.channel()), Some(t));
        }
        assert_eq!(Target::from_channel("ws:room:"), None);
        assert_eq!(Target::from_channel("other"), None);
        // A client channel names a client only in the id's canonical form, the only one ever used.
        assert_eq!(Target::from_channel("ws:client:c"), None);
        assert_eq!(Target::from_channel(&format!("ws:client:{}", C1.to_uppercase())), None);
        let long = format!("ws:user:{}", "u".repeat(MAX_TARGET_LEN + 1));
        assert_eq!(Target::from_channel(&long), None);
    }
}
