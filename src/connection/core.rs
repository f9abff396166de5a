//! The connection's protocol state machine: every decision about what a client may do and what happens next,
//! as pure code.
//!
//! [`Core`] takes inputs — a decoded message, a deadline reached, a hook's answer — and returns [`Action`]s for
//! the async shell in [`super`] to carry out: queue an error, close with a code, call a hook, join rooms,
//! publish. It does no I/O, reads no clock (every input carries `now`) and never awaits, so each rule is unit
//! tested below without a socket, and the whole machine can be fuzzed.
//!
//! The connection's phase lives here and only here ([`Phase`]); the registry's [`crate::ClientState`] is a
//! snapshot published for queries.
//!
//! Adding a client event: one line in [`crate::protocol::inbound`] (its parse), one arm in
//! [`Core::on_message`] (the decision, usually a new [`Action`]), and its test.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::limits::Bucket;
use crate::protocol::event::{errors, refusals};
use crate::protocol::frame::Inbound;
use crate::protocol::inbound::{self, ClientMessage, InboundError, Recover};
use crate::protocol::{room, CloseCode, UserId};
use crate::session::{HandshakeOutcome, Opener, Sealer};

/// What the shell must do next.
#[must_use]
pub(crate) enum Action<'m> {
    /// Nothing.
    None,
    /// Queue `{"event":"error","data":{"message":..}}` and go on.
    Reply(&'static str),
    /// Queue `{"event":"error","data":{"message":..,"id":..}}` (a refused `publish` that carried an id) and go on.
    ReplyTo(&'static str, Cow<'m, str>),
    /// Close with this code after what is queued.
    Close(CloseCode),
    /// Queue the error, then close.
    Fail(&'static str, CloseCode),
    /// Queue a pong carrying this payload, in line with the data.
    Pong(bytes::Bytes),
    /// The client closed: answer its close frame and end.
    ClientClosed,
    /// Send a WebSocket ping.
    Ping,
    /// A key update was received (nothing to answer; count it).
    KeyUpdate,
    /// Run the authenticator on this payload (under an authentication slot), then answer with
    /// [`Core::on_identity`], or [`Core::on_busy`] when no slot frees in time.
    Authenticate(Map<String, Value>),
    /// Run the handshake (for this user, if any) on the `authenticate` payload (under a handshake slot), then
    /// answer with [`Core::on_handshake`], or [`Core::on_busy`] when no slot frees in time.
    Handshake(Option<UserId>),
    /// The session is established: send `connected` (with these extra fields), seal everything after it with
    /// `sealer` if any, and enter the routing table.
    Established(Box<Established>),
    /// Run the authenticator on fresh credentials, then answer with [`Core::on_refresh`].
    Refresh(Map<String, Value>),
    /// Credentials refreshed: rotate the outbound keys.
    Rekey,
    /// Ask the room validator about the request's rooms (joinable, permitted, deduplicated), then answer with
    /// [`Core::on_rooms_validated`].
    ValidateRooms(JoinRequest),
    /// Add the client to the request's rooms (recovering those it asks for), then answer `joined`.
    Join(JoinRequest),
    /// Remove the client from these rooms.
    Leave(Vec<Cow<'m, str>>),
    /// Deliver to a room the client is in.
    Publish {
        /// The room.
        room: Cow<'m, str>,
        /// The application event name (checked: not reserved).
        event: Cow<'m, str>,
        /// The payload (`None` is delivered as `null`).
        data: Option<&'m RawValue>,
        /// Whether the publisher itself receives it too.
        to_self: bool,
        /// The client's id for this publish: answer `ack`, and deliver a retry with the same id only once.
        id: Option<Cow<'m, str>>,
    },
    /// Answer a `presence` query about a room the client is in (and that keeps presence).
    Presence(Cow<'m, str>),
    /// Hand a custom event to the message handler.
    Custom {
        /// Event name.
        event: Cow<'m, str>,
        /// Payload.
        data: Option<&'m RawValue>,
        /// Client-chosen correlation id.
        id: Option<&'m RawValue>,
    },
}

/// A `join` on its way: what may still be joined, what was refused and why, the recoveries asked for.
#[derive(Debug, Default, Clone)]
pub(crate) struct JoinRequest {
    /// Joinable, permitted, deduplicated names, in the order asked.
    pub(crate) rooms: Vec<String>,
    /// Names refused so far, with their `reason` text ([`refusals`]).
    pub(crate) refused: Vec<(String, &'static str)>,
    /// Recovery positions, only for names in `rooms`.
    pub(crate) recover: Vec<Recover>,
}

/// An established session, as [`Action::Established`] hands it to the shell.
pub(crate) struct Established {
    pub(crate) user_id: Option<UserId>,
    pub(crate) metadata: Value,
    /// Fields the handshake adds to `connected`.
    pub(crate) connected_fields: Map<String, Value>,
    /// Seals every frame after `connected` (encrypted sessions).
    pub(crate) sealer: Option<Box<dyn Sealer>>,
    /// The configured default rooms, as joinable names.
    pub(crate) rooms: Vec<String>,
}

impl Established {
    pub(crate) fn encrypted(&self) -> bool {
        self.sealer.is_some()
    }
}

/// The authenticator's answer, as the shell hands it to [`Core::on_identity`] and [`Core::on_refresh`].
pub(crate) enum AuthAnswer {
    /// Accepted.
    Accepted(Identity),
    /// The credentials were refused.
    Rejected,
    /// The authenticator failed (error or panic).
    Failed,
}

/// An accepted identity, with its expiry already turned into a deadline by the shell.
pub(crate) struct Identity {
    pub(crate) user_id: Option<UserId>,
    pub(crate) metadata: Value,
    pub(crate) expires: Option<Instant>,
    pub(crate) rooms: Option<Vec<String>>,
}

/// The handshake's answer.
pub(crate) enum HandshakeAnswer {
    /// No handshake is configured.
    None,
    /// What the handshake decided.
    Outcome(HandshakeOutcome),
    /// The handshake failed (error or panic).
    Failed,
}

/// Where the connection is. One place, one enum.
enum Phase {
    /// Connected; `authenticate` must come before `deadline`.
    AwaitingAuth { deadline: Instant },
    /// The authenticator or the handshake runs; it must be done before `deadline`.
    Authenticating {
        deadline: Instant,
        /// Set once the authenticator accepted: who is authenticating.
        identity: Option<Box<Identity>>,
    },
    /// Authenticated: messages are routed.
    Established(Session),
    /// A close was decided; nothing more is read.
    Closed,
}

/// What an established connection knows about itself.
struct Session {
    user_id: Option<UserId>,
    /// Opens every inbound frame of an encrypted session.
    opener: Option<Box<dyn Opener>>,
    /// When the credentials expire (close 1008 unless refreshed first).
    expiry: Option<Instant>,
    /// The identity's room patterns; `None`: no limit beyond the validator and membership.
    room_patterns: Option<Box<[String]>>,
    /// Last valid message: silence past `heartbeat_timeout` closes 4002.
    last_activity: Instant,
    /// When the next WebSocket ping is due.
    next_ping: Instant,
}

impl Session {
    fn room_permitted(&self, room: &str) -> bool {
        self.room_patterns.as_deref().is_none_or(|p| room::allowed(p, room))
    }
}

/// The connection's view of the routing table, read when a publish is checked.
pub(crate) trait Membership {
    /// True when the connection is in `room`.
    fn is_member(&self, room: &str) -> bool;
}

/// One connection's protocol state. See the module docs.
pub(crate) struct Core<'c> {
    config: &'c Config,
    /// This connection's id: its own-id room, which is never a publish target and never left.
    id: &'c str,
    phase: Phase,
    messages: Bucket,
    joins: Bucket,
}

impl<'c> Core<'c> {
    /// A connection accepted at `now`.
    pub(crate) fn new(config: &'c Config, id: &'c str, now: Instant) -> Self {
        Self {
            config,
            id,
            phase: Phase::AwaitingAuth {
                deadline: now + config.auth_timeout,
            },
            messages: Bucket::new(config.message_rate, now),
            joins: Bucket::new(config.join_rate, now),
        }
    }

    /// True once the session is established.
    #[cfg(test)]
    fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Established(_))
    }

    /// True once an encrypted session is established: inbound frames are records.
    pub(crate) fn is_encrypted(&self) -> bool {
        matches!(self.phase, Phase::Established(Session { opener: Some(_), .. }))
    }

    /// True while the authenticator or the handshake runs.
    #[cfg(test)]
    fn is_authenticating(&self) -> bool {
        matches!(self.phase, Phase::Authenticating { .. })
    }

    /// Largest message the client may send now.
    pub(crate) fn max_message_len(&self) -> usize {
        match self.phase {
            Phase::Established(_) => self.config.max_payload_length,
            _ => self.config.max_preauth_payload_length,
        }
    }

    /// When [`Self::on_timeout`] must next be called, if ever.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::AwaitingAuth { deadline } | Phase::Authenticating { deadline, .. } => Some(*deadline),
            Phase::Established(s) => {
                let silent = s.last_activity + self.config.heartbeat_timeout;
                let mut at = silent.min(s.expiry.unwrap_or(silent));
                if self.config.send_pings {
                    at = at.min(s.next_ping);
                }
                Some(at)
            }
            Phase::Closed => None,
        }
    }

    /// The time since the last valid message of an established session (zero before).
    pub(crate) fn idle(&self, now: Instant) -> Duration {
        match &self.phase {
            Phase::Established(s) => now.saturating_duration_since(s.last_activity),
            _ => Duration::ZERO,
        }
    }

    /// A deadline may have passed.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> Action<'static> {
        match &mut self.phase {
            Phase::AwaitingAuth { deadline } | Phase::Authenticating { deadline, .. } if now >= *deadline => {
                self.close(CloseCode::AuthenticationTimeout)
            }
            Phase::Established(s) if s.expiry.is_some_and(|e| now >= e) => self.close(CloseCode::PolicyViolation),
            Phase::Established(s) if now >= s.last_activity + self.config.heartbeat_timeout => {
                self.close(CloseCode::HeartbeatTimeout)
            }
            Phase::Established(s) if self.config.send_pings && now >= s.next_ping => {
                s.next_ping = now + self.config.heartbeat_interval;
                Action::Ping
            }
            _ => Action::None,
        }
    }

    fn close(&mut self, code: CloseCode) -> Action<'static> {
        self.phase = Phase::Closed;
        Action::Close(code)
    }

    fn fail(&mut self, message: &'static str, code: CloseCode) -> Action<'static> {
        self.phase = Phase::Closed;
        Action::Fail(message, code)
    }

    /// A decoded frame arrived. Text and binary messages are opened (encrypted sessions), checked against the
    /// limits and parsed; `scratch` holds an opened record's plaintext for as long as the action borrows it.
    pub(crate) fn on_inbound<'m>(
        &mut self,
        now: Instant,
        item: &'m Inbound,
        scratch: &'m mut Vec<u8>,
        rooms: &dyn Membership,
    ) -> Action<'m> {
        // Once a close is decided nothing more is acted on, not even a ping.
        if matches!(self.phase, Phase::Closed) {
            return Action::None;
        }
        let (payload, binary) = match item {
            Inbound::Text(p) => (p, false),
            Inbound::Binary(p) => (p, true),
            Inbound::Ping(p) => return Action::Pong(p.clone()),
            Inbound::Pong => return Action::None,
            Inbound::Close => {
                self.phase = Phase::Closed;
                return Action::ClientClosed;
            }
        };
        if payload.len() > self.max_message_len() {
            return self.close(CloseCode::TooLarge);
        }
        if !self.messages.try_take(self.config.message_rate, now) {
            return self.close(CloseCode::RateLimited);
        }
        let inner: &'m [u8] = match &mut self.phase {
            Phase::Established(Session {
                opener: Some(opener), ..
            }) => {
                if binary {
                    // wsenc/1 §8: anything but an `encrypted` text record is a downgrade attempt.
                    return self.close(CloseCode::EncryptionRequired);
                }
                match opener.open(payload) {
                    Ok(Some(inner)) => {
                        *scratch = inner;
                        scratch
                    }
                    Ok(None) => {
                        self.touch(now);
                        return Action::KeyUpdate;
                    }
                    Err(code) => return self.close(code),
                }
            }
            _ => payload,
        };
        self.on_message(now, inner, rooms)
    }

    /// Nothing more is waiting to be read: the opener may free what it can rebuild.
    pub(crate) fn on_idle(&mut self) {
        if let Phase::Established(Session {
            opener: Some(opener), ..
        }) = &mut self.phase
        {
            opener.idle();
        }
    }

    fn touch(&mut self, now: Instant) {
        if let Phase::Established(s) = &mut self.phase {
            s.last_activity = now;
        }
    }

    /// One plaintext message: what the client asks for, and whether it may.
    fn on_message<'m>(&mut self, now: Instant, text: &'m [u8], rooms: &dyn Membership) -> Action<'m> {
        let parsed = std::str::from_utf8(text)
            .map_err(|_| InboundError::InvalidFormat)
            .and_then(inbound::parse);
        let established = matches!(self.phase, Phase::Established(_));
        let msg = match parsed {
            Ok(msg) => msg,
            Err(InboundError::InvalidFormat) => return Action::Reply(errors::INVALID_MESSAGE_FORMAT),
            // A reserved name is still a well-formed event: before authentication it gets the answer every event
            // but `authenticate` gets, as in the reference, so nothing about the protocol is told to a stranger.
            Err(InboundError::ReservedEvent) if !established => return Action::Reply(errors::NOT_AUTHENTICATED),
            Err(InboundError::ReservedEvent) => return Action::Reply(errors::RESERVED_EVENT),
        };
        // Only valid messages count as activity.
        self.touch(now);
        let session = match (&mut self.phase, msg) {
            (Phase::AwaitingAuth { .. }, ClientMessage::Authenticate(data)) => return self.authenticate(now, data),
            (_, ClientMessage::Authenticate(_)) => return Action::Reply(errors::ALREADY_AUTHENTICATED),
            (Phase::Established(_), ClientMessage::Heartbeat) => return Action::None,
            (Phase::Established(s), msg) => (s, msg),
            _ => return Action::Reply(errors::NOT_AUTHENTICATED),
        };
        match session {
            (_, ClientMessage::Refresh(Some(data))) => Action::Refresh(object(data)),
            (_, ClientMessage::Refresh(None)) => Action::Reply(errors::INVALID_MESSAGE_FORMAT),
            (_, ClientMessage::Join { .. }) if !self.joins.try_take(self.config.join_rate, now) => {
                self.close(CloseCode::RateLimited)
            }
            (s, ClientMessage::Join { rooms, recover }) => {
                let mut request = JoinRequest::default();
                for name in rooms {
                    if request.rooms.iter().any(|r| *r == name) || request.refused.iter().any(|(r, _)| *r == name) {
                        continue;
                    }
                    if !room::is_joinable(&name) {
                        request.refused.push((name.into_owned(), refusals::INVALID_ROOM_NAME));
                    } else if !s.room_permitted(&name) {
                        request.refused.push((name.into_owned(), refusals::ROOM_NOT_ALLOWED));
                    } else {
                        request.rooms.push(name.into_owned());
                    }
                }
                request.recover = recover
                    .into_iter()
                    .filter(|r| request.rooms.contains(&r.room))
                    .collect();
                if request.rooms.is_empty() {
                    // Nothing for the validator: the answer is all refusals (or empty).
                    Action::Join(request)
                } else {
                    Action::ValidateRooms(request)
                }
            }
            (_, ClientMessage::Leave(mut requested)) => {
                // The own-id room is the client's direct channel: it is never left.
                requested.retain(|r| r != self.id);
                Action::Leave(requested)
            }
            (s, ClientMessage::Publish { room, event, data, id }) => {
                let refusal = if !self.config.allow_client_publish {
                    Some(errors::PUBLISH_NOT_ALLOWED)
                } else if room == self.id || !rooms.is_member(&room) {
                    // Own-id rooms are direct channels, never publish targets.
                    Some(errors::NOT_IN_ROOM)
                } else if !s.room_permitted(&room) {
                    Some(errors::ROOM_NOT_ALLOWED)
                } else {
                    None
                };
                match (refusal, id) {
                    (Some(message), Some(id)) => Action::ReplyTo(message, id),
                    (Some(message), None) => Action::Reply(message),
                    (None, id) => Action::Publish {
                        room,
                        event,
                        data,
                        to_self: self.config.publish_to_self,
                        id,
                    },
                }
            }
            // A query lists up to `presence_max_members` members: it counts against the join rate, like a join.
            (_, ClientMessage::Presence(_)) if !self.joins.try_take(self.config.join_rate, now) => {
                self.close(CloseCode::RateLimited)
            }
            (_, ClientMessage::Presence(room)) => {
                if room == self.id || !rooms.is_member(&room) {
                    // Only members learn who else is there; own-id rooms have no presence.
                    Action::Reply(errors::NOT_IN_ROOM)
                } else if !room::allowed(&self.config.presence_rooms, &room) {
                    Action::Reply(errors::PRESENCE_NOT_ENABLED)
                } else {
                    Action::Presence(room)
                }
            }
            (_, ClientMessage::Custom { event, data, id }) => Action::Custom { event, data, id },
            (_, ClientMessage::Heartbeat | ClientMessage::Authenticate(_)) => Action::None,
        }
    }

    fn authenticate(&mut self, now: Instant, data: Option<&RawValue>) -> Action<'static> {
        let Some(data) = data else {
            // Not an object: a failed authentication, as the reference answers it.
            return self.fail(errors::AUTHENTICATION_FAILED, CloseCode::AuthenticationFailed);
        };
        // The extended window covers the authenticator and the handshake together.
        self.phase = Phase::Authenticating {
            deadline: now + self.config.auth_timeout.saturating_mul(3),
            identity: None,
        };
        Action::Authenticate(object(data))
    }

    /// No authentication slot freed in time.
    pub(crate) fn on_busy(&mut self) -> Action<'static> {
        self.close(CloseCode::TryAgainLater)
    }

    /// The authenticator answered `authenticate`. `user_sessions` is how many sessions the accepted user already
    /// has on this instance.
    pub(crate) fn on_identity(&mut self, answer: AuthAnswer, user_sessions: usize) -> Action<'static> {
        let Phase::Authenticating { identity, .. } = &mut self.phase else {
            return Action::None;
        };
        let id = match answer {
            AuthAnswer::Accepted(id) => id,
            AuthAnswer::Rejected => return self.fail(errors::AUTHENTICATION_FAILED, CloseCode::AuthenticationFailed),
            AuthAnswer::Failed => return self.fail(errors::AUTHENTICATION_ERROR, CloseCode::AuthenticationFailed),
        };
        if id.user_id.is_some() && user_sessions >= self.config.max_sessions_per_user {
            return self.fail(errors::TOO_MANY_SESSIONS, CloseCode::PolicyViolation);
        }
        let user_id = id.user_id.clone();
        *identity = Some(Box::new(id));
        Action::Handshake(user_id)
    }

    /// The handshake answered; on success the session is established at `now`.
    pub(crate) fn on_handshake(&mut self, now: Instant, answer: HandshakeAnswer) -> Action<'static> {
        let Phase::Authenticating { identity, .. } = &mut self.phase else {
            return Action::None;
        };
        let Some(id) = identity.take() else {
            return Action::None;
        };
        let session = match answer {
            HandshakeAnswer::Outcome(HandshakeOutcome::Encrypted(session)) => Some(session),
            HandshakeAnswer::None | HandshakeAnswer::Outcome(HandshakeOutcome::Plaintext)
                if !self.config.require_encryption =>
            {
                None
            }
            _ => return self.fail(errors::HANDSHAKE_FAILED, CloseCode::EncryptionRequired),
        };
        let Identity {
            user_id,
            metadata,
            expires,
            rooms,
        } = *id;
        let (connected_fields, sealer, opener) = match session {
            Some(s) => (s.connected_fields, Some(s.sealer), Some(s.opener)),
            None => (Map::new(), None, None),
        };
        let session = Session {
            user_id: user_id.clone(),
            opener,
            expiry: expires,
            room_patterns: rooms.map(Vec::into_boxed_slice),
            last_activity: now,
            next_ping: now + self.config.heartbeat_interval,
        };
        // Default rooms are joins the server makes for the client: an identity limited to other rooms must not
        // receive what is sent to them (a `demo:*` token would otherwise hear all of `ws-default`).
        let mut default_rooms = room::sanitize(&self.config.default_rooms);
        default_rooms.retain(|r| session.room_permitted(r));
        self.phase = Phase::Established(session);
        Action::Established(Box::new(Established {
            user_id,
            metadata,
            connected_fields,
            sealer,
            rooms: default_rooms,
        }))
    }

    /// The authenticator answered a `refresh`: the same user extends the session (and rotates keys); anything
    /// else is refused with an error, and the session keeps its current expiry.
    pub(crate) fn on_refresh(&mut self, answer: AuthAnswer) -> Action<'static> {
        let Phase::Established(s) = &mut self.phase else {
            return Action::None;
        };
        match answer {
            AuthAnswer::Accepted(id) if id.user_id == s.user_id => {
                s.expiry = id.expires;
                s.room_patterns = id.rooms.map(Vec::into_boxed_slice);
                Action::Rekey
            }
            AuthAnswer::Accepted(_) | AuthAnswer::Rejected => Action::Reply(errors::AUTHENTICATION_FAILED),
            AuthAnswer::Failed => Action::Reply(errors::AUTHENTICATION_ERROR),
        }
    }

    /// The room validator answered (`None`: it failed, or there is none): its answer is sanitised again and
    /// limited to what was asked for; the other rooms asked for are refused.
    pub(crate) fn on_rooms_validated(
        &mut self,
        mut request: JoinRequest,
        allowed: Option<Vec<String>>,
    ) -> Action<'static> {
        if !matches!(self.phase, Phase::Established(_)) {
            return Action::None;
        }
        let allowed = room::sanitize(allowed.unwrap_or_default());
        let (rooms, refused): (Vec<String>, Vec<String>) = std::mem::take(&mut request.rooms)
            .into_iter()
            .partition(|r| allowed.contains(r));
        request
            .refused
            .extend(refused.into_iter().map(|r| (r, refusals::ROOM_REFUSED)));
        request.recover.retain(|r| rooms.contains(&r.room));
        request.rooms = rooms;
        Action::Join(request)
    }
}

/// A JSON object the parser already checked the shape of (`{` first); anything serde still refuses is empty.
fn object(raw: &RawValue) -> Map<String, Value> {
    serde_json::from_str(raw.get()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::session::Session as CryptoSession;

    const ID: &str = "0b6d9c2e-8f0a-4c59-9a57-3f2f1f7d3c11";

    struct Rooms(HashSet<&'static str>);

    impl Membership for Rooms {
        fn is_member(&self, room: &str) -> bool {
            self.0.contains(room)
        }
    }

    fn in_rooms(rooms: &[&'static str]) -> Rooms {
        Rooms(rooms.iter().copied().collect())
    }

    fn config() -> Config {
        Config {
            require_encryption: false,
            allow_client_publish: true,
            ..Config::default()
        }
    }

    fn text(s: &str) -> Inbound {
        Inbound::Text(bytes::Bytes::copy_from_slice(s.as_bytes()))
    }

    /// Feeds one text message and describes the action.
    fn send(core: &mut Core<'_>, now: Instant, s: &str) -> String {
        let item = text(s);
        let mut scratch = Vec::new();
        describe(core.on_inbound(now, &item, &mut scratch, &in_rooms(&["chat"])))
    }

    fn describe(action: Action<'_>) -> String {
        match action {
            Action::None => "none".into(),
            Action::Reply(m) => format!("reply {m}"),
            Action::ReplyTo(m, id) => format!("reply {m} id={id}"),
            Action::Close(c) => format!("close {}", c.code()),
            Action::Fail(m, c) => format!("fail {m} {}", c.code()),
            Action::Pong(p) => format!("pong {p:?}"),
            Action::ClientClosed => "client closed".into(),
            Action::Ping => "ping".into(),
            Action::KeyUpdate => "key update".into(),
            Action::Authenticate(d) => format!("authenticate {}", Value::Object(d)),
            Action::Handshake(user_id) => format!("handshake {user_id:?}"),
            Action::Established(e) => format!("established {:?} encrypted={}", e.user_id, e.encrypted()),
            Action::Refresh(d) => format!("refresh {}", Value::Object(d)),
            Action::Rekey => "rekey".into(),
            Action::ValidateRooms(r) => format!("validate {:?} refused {:?}", r.rooms, r.refused),
            Action::Join(r) => format!("join {:?} refused {:?}", r.rooms, r.refused),
            Action::Leave(r) => format!("leave {r:?}"),
            Action::Publish {
                room,
                event,
                data,
                to_self,
                id,
            } => format!(
                "publish {room} {event} {} self={to_self}{}",
                data.map_or("-", RawValue::get),
                id.map_or(String::new(), |id| format!(" id={id}"))
            ),
            Action::Presence(room) => format!("presence {room}"),
            Action::Custom { event, data, id } => {
                format!(
                    "custom {event} {} {}",
                    data.map_or("-", RawValue::get),
                    id.map_or("-", RawValue::get)
                )
            }
        }
    }

    fn identity(user: Option<&str>) -> Identity {
        Identity {
            user_id: user.map(|u| UserId::parse(u).unwrap()),
            metadata: Value::Null,
            expires: None,
            rooms: None,
        }
    }

    /// A core that received `authenticate` and waits for the authenticator.
    fn authenticating(config: &Config) -> Core<'_> {
        let mut core = Core::new(config, ID, Instant::now());
        let step = send(&mut core, Instant::now(), r#"{"event":"authenticate","data":{}}"#);
        assert_eq!(step, "authenticate {}");
        core
    }

    /// A core established at `now` for `user`, plaintext.
    fn established<'c>(config: &'c Config, now: Instant, id: Identity) -> Core<'c> {
        let mut core = Core::new(config, ID, now);
        assert_eq!(
            send(&mut core, now, r#"{"event":"authenticate","data":{"token":"t"}}"#),
            r#"authenticate {"token":"t"}"#
        );
        assert!(core.is_authenticating());
        let _ = core.on_identity(AuthAnswer::Accepted(id), 0);
        assert!(matches!(
            core.on_handshake(now, HandshakeAnswer::None),
            Action::Established(_)
        ));
        core
    }

    struct Upper;
    impl Opener for Upper {
        fn open(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, CloseCode> {
            match frame {
                b"key_update" => Ok(None),
                b"bad" => Err(CloseCode::DecryptionFailed),
                b"old" => Err(CloseCode::KeyExhausted),
                f => Ok(Some(f.to_vec())),
            }
        }
    }
    struct NoSeal;
    impl Sealer for NoSeal {
        fn seal(&mut self, inner: &str, out: &mut crate::session::Frames<'_>) -> Result<(), CloseCode> {
            out.push(inner);
            Ok(())
        }
    }

    fn encrypted<'c>(config: &'c Config, now: Instant) -> Core<'c> {
        let mut core = Core::new(config, ID, now);
        let _ = send(&mut core, now, r#"{"event":"authenticate","data":{}}"#);
        let _ = core.on_identity(AuthAnswer::Accepted(identity(Some("alice"))), 0);
        let session = CryptoSession {
            connected_fields: Map::new(),
            sealer: Box::new(NoSeal),
            opener: Box::new(Upper),
        };
        let step = describe(core.on_handshake(now, HandshakeAnswer::Outcome(HandshakeOutcome::Encrypted(session))));
        assert_eq!(step, r#"established Some("alice") encrypted=true"#);
        core
    }

    // Before authentication.

    #[test]
    fn events_before_authentication_get_not_authenticated() {
        let c = config();
        let mut core = Core::new(&c, ID, Instant::now());
        for frame in [
            r#"{"event":"join","data":{"rooms":["a"]}}"#,
            r#"{"event":"publish","data":{"room":"a","event":"e"}}"#,
            r#"{"event":"refresh","data":{}}"#,
            r#"{"event":"heartbeat"}"#,
            r#"{"event":"custom"}"#,
        ] {
            assert_eq!(
                send(&mut core, Instant::now(), frame),
                "reply Not authenticated",
                "{frame}"
            );
        }
    }

    #[test]
    fn reserved_events_before_authentication_get_not_authenticated() {
        let c = config();
        let now = Instant::now();
        let mut fresh = Core::new(&c, ID, now);
        let mut waiting = authenticating(&c);
        for core in [&mut fresh, &mut waiting] {
            for frame in [
                r#"{"event":"connected"}"#,
                r#"{"event":"error","data":{}}"#,
                r#"{"event":"encrypted","data":{"seq":0}}"#,
                r#"{"event":"key_update"}"#,
                r#"{"event":"publish","data":{"room":"chat","event":"connected"}}"#,
            ] {
                assert_eq!(send(core, now, frame), "reply Not authenticated", "{frame}");
            }
        }
    }

    #[test]
    fn malformed_frames_get_invalid_message_format_in_every_phase() {
        let c = config();
        let now = Instant::now();
        let mut fresh = Core::new(&c, ID, now);
        let mut est = established(&c, now, identity(Some("u")));
        for core in [&mut fresh, &mut est] {
            for frame in [
                "",
                "[]",
                "{",
                r#"{"event":1}"#,
                r#"{"data":{}}"#,
                r#"{"event":"join","data":3}"#,
            ] {
                assert_eq!(send(core, now, frame), "reply Invalid message format", "{frame:?}");
            }
        }
    }

    #[test]
    fn reserved_events_from_clients_get_reserved_event() {
        let c = config();
        let now = Instant::now();
        let mut core = established(&c, now, identity(None));
        for name in ["connected", "error", "encrypted", "key_update"] {
            let frame = format!(r#"{{"event":"{name}"}}"#);
            assert_eq!(send(&mut core, now, &frame), "reply Reserved event", "{name}");
        }
        let publish = r#"{"event":"publish","data":{"room":"chat","event":"connected"}}"#;
        assert_eq!(send(&mut core, now, publish), "reply Reserved event");
    }

    #[test]
    fn a_non_object_authenticate_payload_fails_authentication_4003() {
        let c = config();
        let mut core = Core::new(&c, ID, Instant::now());
        let step = send(&mut core, Instant::now(), r#"{"event":"authenticate","data":"token"}"#);
        assert_eq!(step, "fail Authentication failed 4003");
    }

    #[test]
    fn rejected_credentials_fail_4003_and_a_failing_authenticator_says_authentication_error() {
        let c = config();
        for (answer, want) in [
            (AuthAnswer::Rejected, "fail Authentication failed 4003"),
            (AuthAnswer::Failed, "fail Authentication error 4003"),
        ] {
            let mut core = authenticating(&c);
            assert_eq!(describe(core.on_identity(answer, 0)), want);
        }
    }

    #[test]
    fn a_second_authenticate_gets_already_authenticated() {
        let c = config();
        let now = Instant::now();
        let mut core = Core::new(&c, ID, now);
        let auth = r#"{"event":"authenticate","data":{}}"#;
        let _ = send(&mut core, now, auth);
        assert_eq!(
            send(&mut core, now, auth),
            "reply Already authenticated",
            "while authenticating"
        );
        let mut core = established(&c, now, identity(None));
        assert_eq!(
            send(&mut core, now, auth),
            "reply Already authenticated",
            "once established"
        );
    }

    #[test]
    fn no_authenticate_before_the_deadline_closes_4001_and_heartbeats_do_not_extend_it() {
        let c = config();
        let t0 = Instant::now();
        let mut core = Core::new(&c, ID, t0);
        assert_eq!(core.poll_timeout(), Some(t0 + c.auth_timeout));
        let _ = send(&mut core, t0 + Duration::from_secs(4), r#"{"event":"heartbeat"}"#);
        assert_eq!(core.poll_timeout(), Some(t0 + c.auth_timeout));
        assert_eq!(describe(core.on_timeout(t0 + Duration::from_secs(4))), "none");
        assert_eq!(describe(core.on_timeout(t0 + c.auth_timeout)), "close 4001");
        assert_eq!(core.poll_timeout(), None);
    }

    #[test]
    fn authentication_gets_three_windows_then_closes_4001() {
        let c = config();
        let t0 = Instant::now();
        let mut core = Core::new(&c, ID, t0);
        let t1 = t0 + Duration::from_secs(1);
        let _ = send(&mut core, t1, r#"{"event":"authenticate","data":{}}"#);
        assert_eq!(core.poll_timeout(), Some(t1 + c.auth_timeout * 3));
        assert_eq!(describe(core.on_timeout(t1 + c.auth_timeout * 2)), "none");
        assert_eq!(describe(core.on_timeout(t1 + c.auth_timeout * 3)), "close 4001");
    }

    #[test]
    fn no_authentication_slot_in_time_closes_1013() {
        let c = config();
        let mut core = authenticating(&c);
        assert_eq!(describe(core.on_busy()), "close 1013");
    }

    #[test]
    fn preauth_messages_over_the_smaller_limit_close_1009() {
        let c = config();
        let now = Instant::now();
        let mut core = Core::new(&c, ID, now);
        assert_eq!(core.max_message_len(), c.max_preauth_payload_length);
        let big = format!(
            r#"{{"event":"x","data":"{}"}}"#,
            "a".repeat(c.max_preauth_payload_length)
        );
        assert_eq!(send(&mut core, now, &big), "close 1009");
        let mut core = established(&c, now, identity(None));
        assert_eq!(core.max_message_len(), c.max_payload_length);
        assert!(send(&mut core, now, &big).starts_with("custom x "));
        let bigger = "a".repeat(c.max_payload_length + 1);
        assert_eq!(send(&mut core, now, &bigger), "close 1009");
    }

    // The handshake.

    #[test]
    fn without_a_handshake_required_encryption_fails_4004() {
        let c = Config::default();
        let mut core = authenticating(&c);
        let _ = core.on_identity(AuthAnswer::Accepted(identity(None)), 0);
        let step = describe(core.on_handshake(Instant::now(), HandshakeAnswer::None));
        assert_eq!(step, "fail Encryption handshake failed 4004");
    }

    #[test]
    fn a_rejecting_or_failing_handshake_fails_4004_even_when_plaintext_is_allowed() {
        let c = config();
        for answer in [
            HandshakeAnswer::Outcome(HandshakeOutcome::Reject),
            HandshakeAnswer::Failed,
        ] {
            let mut core = authenticating(&c);
            let _ = core.on_identity(AuthAnswer::Accepted(identity(None)), 0);
            let step = describe(core.on_handshake(Instant::now(), answer));
            assert_eq!(step, "fail Encryption handshake failed 4004");
        }
    }

    #[test]
    fn a_user_at_the_session_cap_fails_1008_with_too_many_sessions() {
        let c = config();
        let mut core = authenticating(&c);
        let step = core.on_identity(AuthAnswer::Accepted(identity(Some("u"))), c.max_sessions_per_user);
        assert_eq!(describe(step), "fail Too many sessions 1008");
    }

    #[test]
    fn anonymous_identities_are_not_counted_against_the_session_cap() {
        let c = config();
        let mut core = authenticating(&c);
        let step = core.on_identity(AuthAnswer::Accepted(identity(None)), usize::MAX);
        assert_eq!(describe(step), "handshake None");
    }

    #[test]
    fn established_sessions_join_the_default_rooms() {
        let c = config();
        let mut core = authenticating(&c);
        let _ = core.on_identity(AuthAnswer::Accepted(identity(None)), 0);
        let Action::Established(e) = core.on_handshake(Instant::now(), HandshakeAnswer::None) else {
            panic!("not established");
        };
        assert_eq!(e.rooms, ["ws-default", "ws-notification"]);
        assert!(core.is_established());
    }

    #[test]
    fn default_rooms_outside_the_identity_room_patterns_are_not_joined() {
        let c = Config {
            default_rooms: vec!["ws-default".into(), "demo:lobby".into(), "ws-notification".into()],
            ..config()
        };
        let mut core = authenticating(&c);
        let limited = Identity {
            rooms: Some(vec!["demo:*".into(), "ws-notification".into()]),
            ..identity(None)
        };
        let _ = core.on_identity(AuthAnswer::Accepted(limited), 0);
        let Action::Established(e) = core.on_handshake(Instant::now(), HandshakeAnswer::None) else {
            panic!("not established");
        };
        assert_eq!(e.rooms, ["demo:lobby", "ws-notification"]);
    }

    // Encrypted sessions.

    #[test]
    fn encrypted_sessions_open_every_frame_before_routing_it() {
        let c = config();
        let now = Instant::now();
        let mut core = encrypted(&c, now);
        assert_eq!(send(&mut core, now, r#"{"event":"custom"}"#), "custom custom - -");
        assert_eq!(send(&mut core, now, "key_update"), "key update");
    }

    #[test]
    fn a_bad_record_closes_with_the_openers_code() {
        let c = config();
        let now = Instant::now();
        assert_eq!(send(&mut encrypted(&c, now), now, "bad"), "close 4005");
        assert_eq!(send(&mut encrypted(&c, now), now, "old"), "close 4006");
    }

    #[test]
    fn a_binary_frame_on_an_encrypted_session_closes_4004() {
        let c = config();
        let now = Instant::now();
        let mut core = encrypted(&c, now);
        let item = Inbound::Binary(bytes::Bytes::from_static(br#"{"event":"custom"}"#));
        let step = describe(core.on_inbound(now, &item, &mut Vec::new(), &in_rooms(&[])));
        assert_eq!(step, "close 4004");
    }

    #[test]
    fn binary_frames_of_plaintext_sessions_are_read_as_json() {
        let c = config();
        let now = Instant::now();
        let mut core = established(&c, now, identity(None));
        let item = Inbound::Binary(bytes::Bytes::from_static(br#"{"event":"custom"}"#));
        let step = describe(core.on_inbound(now, &item, &mut Vec::new(), &in_rooms(&[])));
        assert_eq!(step, "custom custom - -");
        let item = Inbound::Binary(bytes::Bytes::from_static(b"\xff"));
        let step = describe(core.on_inbound(now, &item, &mut Vec::new(), &in_rooms(&[])));
        assert_eq!(step, "reply Invalid message format");
    }

    // Rates.

    #[test]
    fn messages_over_the_rate_close_4008() {
        let c = Config {
            message_rate: crate::Rate::new(1.0, 3.0),
            ..config()
        };
        let now = Instant::now();
        let mut core = Core::new(&c, ID, now);
        for _ in 0..3 {
            assert_eq!(
                send(&mut core, now, r#"{"event":"heartbeat"}"#),
                "reply Not authenticated"
            );
        }
        assert_eq!(send(&mut core, now, r#"{"event":"heartbeat"}"#), "close 4008");
        assert_eq!(
            send(&mut core, now, r#"{"event":"heartbeat"}"#),
            "none",
            "nothing is read after a close"
        );
    }

    #[test]
    fn joins_over_the_join_rate_close_4008() {
        let c = Config {
            join_rate: crate::Rate::new(1.0, 2.0),
            ..config()
        };
        let now = Instant::now();
        let mut core = established(&c, now, identity(None));
        let join = r#"{"event":"join","data":{"rooms":["a"]}}"#;
        assert_eq!(send(&mut core, now, join), r#"validate ["a"] refused []"#);
        assert_eq!(send(&mut core, now, join), r#"validate ["a"] refused []"#);
        assert_eq!(send(&mut core, now, join), "close 4008");
    }

    #[test]
    fn presence_queries_share_the_join_rate() {
        let c = Config {
            join_rate: crate::Rate::new(1.0, 2.0),
            presence_rooms: vec!["chat".into()],
            ..config()
        };
        let now = Instant::now();
        let mut core = established(&c, now, identity(None));
        let ask = r#"{"event":"presence","data":{"room":"chat"}}"#;
        let join = r#"{"event":"join","data":{"rooms":["a"]}}"#;
        assert_eq!(send(&mut core, now, ask), "presence chat");
        assert_eq!(send(&mut core, now, join), r#"validate ["a"] refused []"#);
        assert_eq!(send(&mut core, now, ask), "close 4008");
    }

    // Established sessions.

    #[test]
    fn joins_are_sanitised_and_limited_to_the_identity_room_patterns() {
        let c = config();
        let now = Instant::now();
        let id = Identity {
            rooms: Some(vec!["demo:*".into()]),
            ..identity(None)
        };
        let mut core = established(&c, now, id);
        let join = format!(r#"{{"event":"join","data":{{"rooms":["demo:a","other","ws:x","{ID}","demo:a",""]}}}}"#);
        assert_eq!(
            send(&mut core, now, &join),
            format!(
                r#"validate ["demo:a"] refused [("other", "Room not allowed"), ("ws:x", "Invalid room name"), ("{ID}", "Invalid room name"), ("", "Invalid room name")]"#
            )
        );
        assert_eq!(
            send(&mut core, now, r#"{"event":"join","data":{"rooms":["other"]}}"#),
            r#"join [] refused [("other", "Room not allowed")]"#,
            "nothing left to validate: answered at once"
        );
        assert_eq!(send(&mut core, now, r#"{"event":"join"}"#), "join [] refused []");
    }

    #[test]
    fn recovery_positions_are_kept_only_for_rooms_being_joined() {
        let c = config();
        let now = Instant::now();
        let mut core = established(&c, now, identity(None));
        let join = r#"{"event":"join","data":{"rooms":["a","ws:x"],"recover":{"a":{"offset":3,"epoch":"e"},"ws:x":{"offset":1,"epoch":"e"},"b":{"offset":1,"epoch":"e"}}}}"#;
        let item = text(join);
        let mut scratch = Vec::new();
        let Action::ValidateRooms(request) = core.on_inbound(now, &item, &mut scratch, &in_rooms(&[])) else {
            panic!("a join to validate");
        };
        let rooms: Vec<&str> = request.recover.iter().map(|r| r.room.as_str()).collect();
        assert_eq!(rooms, ["a"]);
        let Action::Join(request) = core.on_rooms_validated(request, Some(vec![])) else {
            panic!("an answer");
        };
        assert!(request.recover.is_empty(), "a refused room is not recovered");
        assert_eq!(request.refused.last(), Some(&("a".to_owned(), "Room refused")));
    }

    #[test]
    fn the_validators_answer_is_sanitised_and_limited_to_what_was_asked() {
        let c = config();
        let mut core = established(&c, Instant::now(), identity(None));
        let asked = || JoinRequest {
            rooms: vec!["a".to_owned(), "b".to_owned()],
            ..JoinRequest::default()
        };
        let allowed = vec!["b".into(), "c".into(), "ws:x".into(), "b".into()];
        assert_eq!(
            describe(core.on_rooms_validated(asked(), Some(allowed))),
            r#"join ["b"] refused [("a", "Room refused")]"#
        );
        assert_eq!(
            describe(core.on_rooms_validated(asked(), Some(vec![]))),
            r#"join [] refused [("a", "Room refused"), ("b", "Room refused")]"#
        );
        assert_eq!(
            describe(core.on_rooms_validated(asked(), None)),
            r#"join [] refused [("a", "Room refused"), ("b", "Room refused")]"#,
            "no validator or a failing one"
        );
    }

    #[test]
    fn the_own_id_room_is_never_left() {
        let c = config();
        let now = Instant::now();
        let mut core = established(&c, now, identity(None));
        let leave = format!(r#"{{"event":"leave","data":{{"rooms":["a","{ID}"]}}}}"#);
        assert_eq!(send(&mut core, now, &leave), r#"leave ["a"]"#);
    }

    #[test]
    fn publish_needs_the_setting_membership_and_a_permitted_room() {
        let now = Instant::now();
        let off = Config {
            require_encryption: false,
            ..Config::default()
        };
        let mut core = established(&off, now, identity(None));
        let publish = r#"{"event":"publish","data":{"room":"chat","event":"msg","data":{"t":1}}}"#;
        assert_eq!(send(&mut core, now, publish), "reply Publish not allowed");

        let c = config();
        let mut core = established(&c, now, identity(None));
        assert_eq!(send(&mut core, now, publish), r#"publish chat msg {"t":1} self=false"#);
        let elsewhere = r#"{"event":"publish","data":{"room":"other","event":"msg"}}"#;
        assert_eq!(send(&mut core, now, elsewhere), "reply Not a member of room");
        let own = format!(r#"{{"event":"publish","data":{{"room":"{ID}","event":"msg"}}}}"#);
        assert_eq!(send(&mut core, now, &own), "reply Not a member of room");

        let limited = Identity {
            rooms: Some(vec!["demo:*".into()]),
            ..identity(None)
        };
        let mut core = established(&c, now, limited);
        assert_eq!(send(&mut core, now, publish), "reply Room not allowed");
    }

    #[test]
    fn a_presence_query_needs_membership_and_a_presence_room() {
        let now = Instant::now();
        let c = Config {
            presence_rooms: vec!["chat".into()],
            ..config()
        };
        let mut core = established(&c, now, identity(None));
        let ask = |room: &str| format!(r#"{{"event":"presence","data":{{"room":"{room}"}}}}"#);
        assert_eq!(send(&mut core, now, &ask("chat")), "presence chat");
        assert_eq!(send(&mut core, now, &ask("other")), "reply Not a member of room");
        assert_eq!(send(&mut core, now, &ask(ID)), "reply Not a member of room");

        let none = config();
        let mut core = established(&none, now, identity(None));
        assert_eq!(
            send(&mut core, now, &ask("chat")),
            "reply Presence not enabled for room"
        );
    }

    #[test]
    fn a_publish_id_is_passed_on_and_echoed_in_its_refusal() {
        let c = config();
        let now = Instant::now();
        let mut core = established(&c, now, identity(None));
        let publish = r#"{"event":"publish","data":{"room":"chat","event":"msg"},"id":"c1"}"#;
        assert_eq!(send(&mut core, now, publish), "publish chat msg - self=false id=c1");
        let elsewhere = r#"{"event":"publish","data":{"room":"other","event":"msg"},"id":"c2"}"#;
        assert_eq!(send(&mut core, now, elsewhere), "reply Not a member of room id=c2");
        let long = format!(
            r#"{{"event":"publish","data":{{"room":"chat","event":"msg"}},"id":"{}"}}"#,
            "x".repeat(65)
        );
        assert_eq!(send(&mut core, now, &long), "reply Invalid message format");
    }

    #[test]
    fn publish_to_self_is_passed_on() {
        let c = Config {
            publish_to_self: true,
            ..config()
        };
        let now = Instant::now();
        let mut core = established(&c, now, identity(None));
        let publish = r#"{"event":"publish","data":{"room":"chat","event":"msg"}}"#;
        assert_eq!(send(&mut core, now, publish), "publish chat msg - self=true");
    }

    #[test]
    fn custom_events_carry_their_data_and_correlation_id() {
        let c = config();
        let now = Instant::now();
        let mut core = established(&c, now, identity(None));
        let step = send(&mut core, now, r#"{"event":"order","data":{"n":1},"id":7}"#);
        assert_eq!(step, r#"custom order {"n":1} 7"#);
    }

    #[test]
    fn control_frames_are_answered_in_every_phase() {
        let c = config();
        let mut core = Core::new(&c, ID, Instant::now());
        let ping = Inbound::Ping(bytes::Bytes::from_static(b"p"));
        let step = describe(core.on_inbound(Instant::now(), &ping, &mut Vec::new(), &in_rooms(&[])));
        assert_eq!(step, r#"pong b"p""#);
        let step = describe(core.on_inbound(Instant::now(), &Inbound::Close, &mut Vec::new(), &in_rooms(&[])));
        assert_eq!(step, "client closed");
    }

    // Refresh and expiry.

    #[test]
    fn expired_credentials_close_1008() {
        let c = config();
        let t0 = Instant::now();
        let expires = t0 + Duration::from_secs(10);
        let id = Identity {
            expires: Some(expires),
            ..identity(Some("u"))
        };
        let mut core = established(&c, t0, id);
        assert_eq!(core.poll_timeout(), Some(expires));
        assert_eq!(describe(core.on_timeout(expires)), "close 1008");
    }

    #[test]
    fn a_refresh_by_the_same_user_extends_the_session_and_rekeys() {
        let c = config();
        let t0 = Instant::now();
        let id = Identity {
            expires: Some(t0 + Duration::from_secs(10)),
            ..identity(Some("u"))
        };
        let mut core = established(&c, t0, id);
        assert_eq!(
            send(&mut core, t0, r#"{"event":"refresh","data":{"token":"n"}}"#),
            r#"refresh {"token":"n"}"#
        );
        let later = t0 + Duration::from_secs(60);
        let fresh = Identity {
            expires: Some(later),
            ..identity(Some("u"))
        };
        assert_eq!(describe(core.on_refresh(AuthAnswer::Accepted(fresh))), "rekey");
        assert_eq!(describe(core.on_timeout(t0 + Duration::from_secs(10))), "none");
    }

    #[test]
    fn a_refresh_for_another_user_or_refused_changes_nothing() {
        let c = config();
        let t0 = Instant::now();
        let expires = t0 + Duration::from_secs(10);
        let id = Identity {
            expires: Some(expires),
            ..identity(Some("u"))
        };
        let mut core = established(&c, t0, id);
        let other = identity(Some("mallory"));
        assert_eq!(
            describe(core.on_refresh(AuthAnswer::Accepted(other))),
            "reply Authentication failed"
        );
        assert_eq!(
            describe(core.on_refresh(AuthAnswer::Rejected)),
            "reply Authentication failed"
        );
        assert_eq!(
            describe(core.on_refresh(AuthAnswer::Failed)),
            "reply Authentication error"
        );
        assert_eq!(
            send(&mut core, t0, r#"{"event":"refresh","data":"x"}"#),
            "reply Invalid message format"
        );
        assert_eq!(describe(core.on_timeout(expires)), "close 1008");
    }

    // Heartbeats.

    #[test]
    fn silence_past_the_heartbeat_timeout_closes_4002_and_valid_messages_reset_it() {
        let c = Config {
            send_pings: false,
            ..config()
        };
        let t0 = Instant::now();
        let mut core = established(&c, t0, identity(None));
        assert_eq!(core.poll_timeout(), Some(t0 + c.heartbeat_timeout));
        let t1 = t0 + Duration::from_secs(60);
        let _ = send(&mut core, t1, r#"{"event":"heartbeat"}"#);
        assert_eq!(core.idle(t1), Duration::ZERO);
        assert_eq!(describe(core.on_timeout(t0 + c.heartbeat_timeout)), "none");
        assert_eq!(core.poll_timeout(), Some(t1 + c.heartbeat_timeout));
        assert_eq!(describe(core.on_timeout(t1 + c.heartbeat_timeout)), "close 4002");
    }

    #[test]
    fn invalid_frames_do_not_count_as_activity() {
        let c = config();
        let t0 = Instant::now();
        let mut core = established(&c, t0, identity(None));
        let t1 = t0 + Duration::from_secs(60);
        let _ = send(&mut core, t1, "not json");
        assert_eq!(core.idle(t1), Duration::from_secs(60));
    }

    #[test]
    fn pings_are_due_every_heartbeat_interval() {
        let c = config();
        let t0 = Instant::now();
        let mut core = established(&c, t0, identity(None));
        let due = t0 + c.heartbeat_interval;
        assert_eq!(core.poll_timeout(), Some(due));
        assert_eq!(describe(core.on_timeout(due)), "ping");
        assert_eq!(core.poll_timeout(), Some(due + c.heartbeat_interval));
    }
}
