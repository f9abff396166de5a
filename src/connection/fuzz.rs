//! The connection state machine under arbitrary input sequences, with its invariants checked after every step.
//!
//! [`check`] reads its input as a script: each step is one input to [`Core`] — a client frame (well-formed events
//! of every kind, reserved names, arbitrary bytes, binary frames, pings, closes), a sealed wsenc/1 record, a
//! replayed or altered record, a client key update, time passing, a hook's answer (accepted, refused, failed,
//! handshake outcomes, a refresh, the room validator), a busy authentication slot, the server joining or removing
//! the client from a room. After each step the action is checked against what the protocol allows in the phase
//! the connection is in:
//!
//! - nothing but `None` after the connection closed;
//! - no session without an accepted identity followed by a successful handshake (an encrypted one when encryption
//!   is required);
//! - in an encrypted session, nothing a client frame asks for (a reply, a publish, a join…) unless the frame was a
//!   record the opener accepted, and accepted records' sequence numbers strictly increase;
//! - every close code one the documented table allows in that phase, every error text a documented one;
//! - publishes only to rooms the client is in (never its own-id room) when client publish is on; joins only of
//!   rooms the validator allowed out of those asked for; default rooms, joins and publishes within the credentials'
//!   room claim;
//! - presence answers only about a room the client is in (never its own-id room) that matches `presence_rooms`;
//! - pings only to an established session when pings are on; rekeys only for a refresh by the same user.
//!
//! The fuzz target `connection_core` calls [`check`]; the unit tests below run it over generated scripts and
//! replay the committed corpus and regression inputs, so a failure found once stays fixed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value};

use super::core::{Action, AuthAnswer, Core, HandshakeAnswer, Identity, JoinRequest, Membership};
use crate::config::Config;
use crate::crypto::record::{RecordOpener, RecordSealer};
use crate::crypto::schedule::TrafficSecret;
use crate::crypto::Direction;
use crate::protocol::event::{errors, refusals};
use crate::protocol::frame::Inbound;
use crate::protocol::{CloseCode, UserId};
use crate::session::{HandshakeOutcome, Opener, Sealer, Session};

/// The connection's own id (its own-id room).
const ID: &str = "0b6d9c2e-8f0a-4c59-9a57-3f2f1f7d3c11";
/// Room names the script picks from: joinable ones, a pattern-limited one, the own-id room, invalid ones.
const ROOMS: [&str; 8] = [
    "chat",
    "demo:1",
    "ws-default",
    ID,
    "",
    "a b",
    "x:y:z",
    "ws-notification",
];
/// Event names: application ones and reserved ones.
const EVENTS: [&str; 8] = [
    "msg",
    "chat.x",
    "encrypted",
    "key_update",
    "connected",
    "error",
    "join",
    "a",
];
/// The documented error texts (docs/protocol.md, "Error texts").
const ERROR_TEXTS: [&str; 12] = [
    errors::INVALID_MESSAGE_FORMAT,
    errors::NOT_AUTHENTICATED,
    errors::ALREADY_AUTHENTICATED,
    errors::AUTHENTICATION_FAILED,
    errors::AUTHENTICATION_ERROR,
    errors::HANDSHAKE_FAILED,
    errors::RESERVED_EVENT,
    errors::PUBLISH_NOT_ALLOWED,
    errors::TOO_MANY_SESSIONS,
    errors::NOT_IN_ROOM,
    errors::ROOM_NOT_ALLOWED,
    errors::PRESENCE_NOT_ENABLED,
];

/// The documented `reason` texts of refused joins.
const REFUSALS: [&str; 4] = [
    refusals::INVALID_ROOM_NAME,
    refusals::ROOM_NOT_ALLOWED,
    refusals::ROOM_REFUSED,
    refusals::TOO_MANY_ROOMS,
];

/// Runs one script; panics when an invariant fails.
pub fn check(data: &[u8]) {
    run(data);
}

/// How far a script got: what the tests use to show the generated scripts reach the deep states.
#[derive(Debug, Default)]
struct Reached {
    established: bool,
    encrypted: bool,
    records: u64,
}

fn run(data: &[u8]) -> Reached {
    let mut input = Script(data);
    let flags = input.byte();
    let config = Config {
        require_encryption: flags & 1 != 0,
        allow_client_publish: flags & 2 != 0,
        send_pings: flags & 4 != 0,
        publish_to_self: flags & 8 != 0,
        presence_rooms: if flags & 16 != 0 {
            ROOMS.iter().take(2).map(|r| (*r).to_owned()).collect()
        } else {
            Vec::new()
        },
        max_sessions_per_user: 2,
        max_payload_length: 2048,
        max_preauth_payload_length: 256,
        ..Config::default()
    };
    let mut h = Harness::new(&config);
    let mut reached = Reached::default();
    while !input.is_empty() {
        h.step(&mut input);
        reached.established |= h.user.is_some();
        reached.encrypted |= h.client.is_some();
    }
    reached.records = h.accepted_records();
    reached
}

/// The script being read: every read past the end gives zeros, so any byte string is a valid script.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        first
    }

    fn pick<const N: usize>(&mut self, of: &[&'static str; N]) -> &'static str {
        of.get(usize::from(self.byte()) % N).copied().unwrap_or_default()
    }

    fn bytes(&mut self) -> Vec<u8> {
        let n = usize::from(self.byte()).min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }
}

/// What the harness knows independently of the core.
struct Harness<'c> {
    config: &'c Config,
    core: Core<'c>,
    now: Instant,
    rooms: Rooms,
    /// The hook the core is waiting for: like the shell, the harness reads no frame until it answered.
    pending: Option<Pending>,
    /// The authenticator accepted (this user); the handshake is due.
    accepted: Option<Option<UserId>>,
    /// The room patterns of the identity accepted last (`None`: no limit).
    patterns: Option<Vec<String>>,
    /// The established session's user.
    user: Option<Option<UserId>>,
    closed: bool,
    /// The client's side of an encrypted session, and what its opener accepted.
    client: Option<Client>,
}

struct Client {
    sealer: RecordSealer,
    sent: Vec<Bytes>,
    opened: Arc<OpenLog>,
}

/// What the server's opener accepted: how many records, and the last one's epoch and sequence number.
#[derive(Default)]
struct OpenLog {
    accepted: AtomicU64,
    last: Mutex<Option<(u32, u64)>>,
}

/// The real wsenc/1 opener, logging what it accepts.
struct LoggingOpener {
    inner: RecordOpener,
    log: Arc<OpenLog>,
}

impl Opener for LoggingOpener {
    fn open(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, CloseCode> {
        // Sequence numbers restart with each epoch (a key update): the pair is what strictly increases.
        let at = (self.inner.epoch(), self.inner.expected_seq());
        let opened = Opener::open(&mut self.inner, frame)?;
        self.log.accepted.fetch_add(1, Ordering::Relaxed);
        let mut last = self.log.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(
            last.is_none_or(|last| at > last),
            "accepted records must strictly increase in (epoch, sequence): {at:?} after {last:?}"
        );
        *last = Some(at);
        Ok(opened)
    }

    fn idle(&mut self) {
        Opener::idle(&mut self.inner);
    }
}

struct Rooms(HashSet<String>);

impl Membership for Rooms {
    fn is_member(&self, room: &str) -> bool {
        self.0.contains(room)
    }
}

/// A hook the core asked the shell to run.
enum Pending {
    Identity,
    Handshake,
    Refresh,
    Rooms(JoinRequest),
}

/// What produced the action being checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cause {
    /// A frame from the client; `opened`: the session's opener accepted it as a record.
    Frame { opened: bool },
    /// A hook's answer or a deadline.
    Shell,
}

impl<'c> Harness<'c> {
    fn new(config: &'c Config) -> Self {
        let now = Instant::now();
        Self {
            config,
            core: Core::new(config, ID, now),
            now,
            rooms: Rooms(HashSet::new()),
            pending: None,
            accepted: None,
            patterns: None,
            user: None,
            closed: false,
            client: None,
        }
    }

    fn step(&mut self, s: &mut Script<'_>) {
        if let Some(pending) = self.pending.take() {
            return self.answer(pending, s);
        }
        match s.byte() % 14 {
            0 => {
                // In an encrypted session most messages go sealed, so that scripts get deep into it.
                let message = json_message(s);
                if self.client.is_some() && s.byte() % 4 != 0 {
                    self.sealed(message);
                } else {
                    self.text(message);
                }
            }
            1 => {
                let raw = s.bytes();
                self.text(raw);
            }
            2 => self.sealed(json_message(s)),
            3 => self.replayed(s),
            4 => self.key_update(),
            5 => {
                let raw = s.bytes();
                self.inbound(Inbound::Binary(raw.into()));
            }
            6 => {
                let item = match s.byte() % 3 {
                    0 => Inbound::Ping(s.bytes().into()),
                    1 => Inbound::Pong,
                    _ => Inbound::Close,
                };
                self.inbound(item);
            }
            7 => self.time_passes(s),
            8 => self.core.on_idle(),
            9 => {
                // The server (API, `Server::join_room`) changes the client's rooms behind the core's back.
                let room = s.pick(&ROOMS).to_owned();
                if !self.rooms.0.remove(&room) {
                    self.rooms.0.insert(room);
                }
            }
            _ => self.text(authenticate(s)),
        }
    }

    /// The hook the core waits for answers, or (while authenticating, where the shell keeps a timer) time passes.
    fn answer(&mut self, pending: Pending, s: &mut Script<'_>) {
        let authenticating = matches!(pending, Pending::Identity | Pending::Handshake);
        if authenticating && s.byte() % 4 == 0 {
            self.pending = Some(pending);
            return self.time_passes(s);
        }
        match pending {
            Pending::Identity if s.byte() % 8 == 0 => {
                let action = self.core.on_busy();
                self.after(action, Cause::Shell);
            }
            Pending::Identity => self.identity(s),
            Pending::Handshake => self.handshake(s),
            Pending::Refresh => self.refresh(s),
            Pending::Rooms(asked) => self.validated(asked, s),
        }
    }

    fn time_passes(&mut self, s: &mut Script<'_>) {
        // Mostly short steps, so that scripts live long enough to reach deep states; now and then a long one.
        let scale = if s.byte() % 8 == 0 { 1000 } else { 10 };
        let ms = u64::from(s.byte()) * scale;
        self.now += Duration::from_millis(ms);
        let action = self.core.on_timeout(self.now);
        self.after(action, Cause::Shell);
    }

    fn text(&mut self, frame: Vec<u8>) {
        self.inbound(Inbound::Text(frame.into()));
    }

    /// A message sealed as the client would (a plain text frame while there is no encrypted session).
    fn sealed(&mut self, inner: Vec<u8>) {
        let Some(client) = &mut self.client else {
            return self.text(inner);
        };
        let mut out = Vec::new();
        if client.sealer.seal(&inner, &mut out).is_err() {
            return;
        }
        client.sent.extend(out.iter().cloned());
        for record in out {
            self.inbound(Inbound::Text(record));
        }
    }

    /// A record the client sent before, again (a replay), or altered.
    fn replayed(&mut self, s: &mut Script<'_>) {
        let Some(client) = &self.client else {
            return;
        };
        let Some(old) = client
            .sent
            .get(usize::from(s.byte()) % client.sent.len().max(1))
            .cloned()
        else {
            return;
        };
        let mut frame = old.to_vec();
        let at = usize::from(s.byte());
        if let Some(b) = frame.get_mut(at) {
            *b ^= s.byte() | 1;
        }
        self.inbound(Inbound::Text(frame.into()));
    }

    fn key_update(&mut self) {
        let Some(client) = &mut self.client else {
            return;
        };
        let mut out = Vec::new();
        if client.sealer.request_key_update(&mut out).is_err() {
            return;
        }
        client.sent.extend(out.iter().cloned());
        for record in out {
            self.inbound(Inbound::Text(record));
        }
    }

    fn accepted_records(&self) -> u64 {
        self.client
            .as_ref()
            .map_or(0, |c| c.opened.accepted.load(Ordering::Relaxed))
    }

    fn inbound(&mut self, item: Inbound) {
        let before = self.accepted_records();
        let mut scratch = Vec::new();
        let action = self.core.on_inbound(self.now, &item, &mut scratch, &self.rooms);
        let opened = self.accepted_records() > before;
        self.after(action, Cause::Frame { opened });
    }

    fn identity(&mut self, s: &mut Script<'_>) {
        let answer = auth_answer(s, self.now);
        let (accepted, patterns) = match &answer {
            AuthAnswer::Accepted(id) => (Some(id.user_id.clone()), id.rooms.clone()),
            _ => (None, None),
        };
        let sessions = usize::from(s.byte() % 3);
        let action = self.core.on_identity(answer, sessions);
        if let Action::Handshake(user) = &action {
            assert_eq!(Some(user), accepted.as_ref(), "the handshake is for the accepted user");
            assert!(
                user.is_none() || sessions < self.config.max_sessions_per_user,
                "a user over the session limit was let in"
            );
            self.accepted = accepted;
            self.patterns = patterns;
        }
        self.after(action, Cause::Shell);
    }

    fn handshake(&mut self, s: &mut Script<'_>) {
        let log = Arc::new(OpenLog::default());
        let mut client_sealer = None;
        let answer = match s.byte() % 6 {
            0 => HandshakeAnswer::None,
            1 => HandshakeAnswer::Failed,
            2 => HandshakeAnswer::Outcome(HandshakeOutcome::Plaintext),
            3 => HandshakeAnswer::Outcome(HandshakeOutcome::Reject),
            _ => {
                let secret = [s.byte(); 32];
                let th = [s.byte(); 32];
                client_sealer = Some(RecordSealer::new(
                    Direction::C2s,
                    TrafficSecret::from_bytes(&secret),
                    th,
                    0,
                ));
                let opener = LoggingOpener {
                    inner: RecordOpener::new(Direction::C2s, TrafficSecret::from_bytes(&secret), th, 0),
                    log: log.clone(),
                };
                let sealer = RecordSealer::new(Direction::S2c, TrafficSecret::from_bytes(&secret), th, 0);
                HandshakeAnswer::Outcome(HandshakeOutcome::Encrypted(Session {
                    connected_fields: Map::new(),
                    sealer: Box::new(sealer) as Box<dyn Sealer>,
                    opener: Box::new(opener),
                }))
            }
        };
        let encrypted = client_sealer.is_some();
        let success = match &answer {
            HandshakeAnswer::Outcome(HandshakeOutcome::Encrypted(_)) => true,
            HandshakeAnswer::None | HandshakeAnswer::Outcome(HandshakeOutcome::Plaintext) => {
                !self.config.require_encryption
            }
            HandshakeAnswer::Failed | HandshakeAnswer::Outcome(HandshakeOutcome::Reject) => false,
        };
        let action = self.core.on_handshake(self.now, answer);
        if let Action::Established(e) = &action {
            let accepted = self.accepted.take();
            assert!(
                accepted.is_some(),
                "a session was established without an accepted identity"
            );
            assert!(success, "a session was established by a failed handshake");
            assert_eq!(e.encrypted(), encrypted, "the session's encryption is the handshake's");
            assert!(
                e.encrypted() || !self.config.require_encryption,
                "a plaintext session while encryption is required"
            );
            assert_eq!(
                Some(&e.user_id),
                accepted.as_ref(),
                "the session is the accepted user's"
            );
            assert!(
                e.rooms.iter().all(|r| self.permitted(r)),
                "default rooms outside the credentials' room claim: {:?}",
                e.rooms
            );
            self.user = accepted;
            self.rooms.0.insert(ID.to_owned());
            self.rooms.0.extend(e.rooms.iter().cloned());
            self.client = client_sealer.map(|sealer| Client {
                sealer,
                sent: Vec::new(),
                opened: log,
            });
        }
        self.after(action, Cause::Shell);
    }

    fn refresh(&mut self, s: &mut Script<'_>) {
        let answer = auth_answer(s, self.now);
        let same_user = matches!((&answer, &self.user), (AuthAnswer::Accepted(id), Some(user)) if id.user_id == *user);
        let patterns = match &answer {
            AuthAnswer::Accepted(id) => id.rooms.clone(),
            _ => None,
        };
        let action = self.core.on_refresh(answer);
        if matches!(action, Action::Rekey) {
            assert!(same_user, "a rekey for a refresh by another user, or a refused one");
            assert!(self.user.is_some() && !self.closed, "a rekey outside a session");
            // The refreshed credentials' room claim applies from now on.
            self.patterns = patterns;
        }
        self.after(action, Cause::Shell);
    }

    fn validated(&mut self, request: JoinRequest, s: &mut Script<'_>) {
        let asked = request.rooms.clone();
        let allowed = match s.byte() % 3 {
            0 => None,
            1 => Some(asked.clone()),
            _ => Some(vec![s.pick(&ROOMS).to_owned(), s.pick(&ROOMS).to_owned()]),
        };
        let action = self.core.on_rooms_validated(request, allowed);
        if let Action::Join(r) = &action {
            assert!(
                r.rooms.iter().all(|room| asked.contains(room)),
                "joined rooms that were not asked for: {:?} of {asked:?}",
                r.rooms
            );
            assert!(
                asked
                    .iter()
                    .all(|room| r.rooms.contains(room) || r.refused.iter().any(|(x, _)| x == room)),
                "a room asked for is neither joined nor refused: {asked:?} -> {r:?}"
            );
            self.rooms.0.extend(r.rooms.iter().cloned());
        }
        self.after(action, Cause::Shell);
    }

    /// The checks every action passes, whatever caused it.
    fn after(&mut self, action: Action<'_>, cause: Cause) {
        if self.closed {
            assert!(matches!(action, Action::None), "an action after the connection closed");
            return;
        }
        let established = self.user.is_some();
        let encrypted = self.client.is_some();
        // In an encrypted session a client frame is only acted on once the opener accepted it.
        let asked_by_client = matches!(
            action,
            Action::Reply(_)
                | Action::ReplyTo(..)
                | Action::Authenticate(_)
                | Action::Refresh(_)
                | Action::ValidateRooms(_)
                | Action::Leave(_)
                | Action::Publish { .. }
                | Action::Presence(_)
                | Action::Custom { .. }
        );
        if encrypted && asked_by_client && matches!(cause, Cause::Frame { .. }) {
            assert_eq!(
                cause,
                Cause::Frame { opened: true },
                "an encrypted session acted on a frame that was not an accepted record"
            );
        }
        match &action {
            Action::Reply(text) => assert!(ERROR_TEXTS.contains(text), "undocumented error text {text:?}"),
            Action::ReplyTo(text, id) => {
                assert!(ERROR_TEXTS.contains(text), "undocumented error text {text:?}");
                assert!(
                    !id.is_empty() && id.len() <= crate::protocol::event::MAX_PUBLISH_ID_LEN,
                    "an error echoing an id out of bounds"
                );
            }
            Action::Fail(text, code) => {
                assert!(ERROR_TEXTS.contains(text), "undocumented error text {text:?}");
                self.closes(*code, established);
            }
            Action::Close(code) => self.closes(*code, established),
            Action::ClientClosed => {
                self.closed = true;
                self.pending = None;
            }
            Action::Authenticate(_) => {
                assert!(
                    !established && self.accepted.is_none(),
                    "authentication of an authenticated client"
                );
                self.pending = Some(Pending::Identity);
            }
            Action::Handshake(_) => self.pending = Some(Pending::Handshake),
            Action::Ping => assert!(
                established && self.config.send_pings,
                "a ping outside a session with pings on"
            ),
            Action::Refresh(_) => {
                assert!(established, "a refresh before the session");
                self.pending = Some(Pending::Refresh);
            }
            Action::ValidateRooms(request) | Action::Join(request) => {
                assert!(established, "rooms validated or joined before the session");
                assert!(
                    request
                        .rooms
                        .iter()
                        .all(|r| self.permitted(r) && crate::protocol::room::is_joinable(r)),
                    "a join outside the credentials' room claim, or of an unjoinable name: {:?}",
                    request.rooms
                );
                assert!(
                    request.refused.iter().all(|(_, reason)| REFUSALS.contains(reason)),
                    "an undocumented refusal reason: {:?}",
                    request.refused
                );
                assert!(
                    request.recover.iter().all(|r| request.rooms.contains(&r.room)),
                    "a recovery for a room not being joined"
                );
                if matches!(action, Action::ValidateRooms(_)) {
                    self.pending = Some(Pending::Rooms(request.clone()));
                } else {
                    assert!(
                        cause == Cause::Shell || request.rooms.is_empty(),
                        "a client frame joined rooms without the validator"
                    );
                }
            }
            Action::Leave(rooms) => {
                assert!(established, "a leave before the session");
                assert!(rooms.iter().all(|r| r != ID), "the own-id room was left");
                for room in rooms {
                    self.rooms.0.remove(room.as_ref());
                }
            }
            Action::Publish { room, event, id, .. } => {
                assert!(
                    id.as_ref()
                        .is_none_or(|id| !id.is_empty() && id.len() <= crate::protocol::event::MAX_PUBLISH_ID_LEN),
                    "a publish id out of bounds"
                );
                assert!(
                    established && self.config.allow_client_publish,
                    "a publish that is not allowed"
                );
                assert!(
                    self.rooms.0.contains(room.as_ref()),
                    "a publish to a room the client is not in"
                );
                assert_ne!(room.as_ref(), ID, "a publish to the own-id room");
                assert!(self.permitted(room), "a publish outside the credentials' room claim");
                assert!(
                    crate::protocol::event::is_valid_application_event(event),
                    "a publish with a reserved event name {event:?}"
                );
            }
            Action::Presence(room) => {
                assert!(established, "a presence query before the session");
                assert!(
                    self.rooms.0.contains(room.as_ref()),
                    "a presence answer about a room the client is not in"
                );
                assert_ne!(room.as_ref(), ID, "a presence answer about the own-id room");
                assert!(
                    crate::protocol::room::allowed(&self.config.presence_rooms, room),
                    "a presence answer about a room without presence"
                );
            }
            Action::Custom { .. } | Action::KeyUpdate => assert!(established, "a session event before the session"),
            Action::None | Action::Pong(_) | Action::Established(_) | Action::Rekey => {}
        }
    }

    fn permitted(&self, room: &str) -> bool {
        self.patterns
            .as_deref()
            .is_none_or(|p| crate::protocol::room::allowed(p, room))
    }

    /// A close decided by the core: its code must be one the protocol uses in this phase.
    fn closes(&mut self, code: CloseCode, established: bool) {
        use CloseCode::*;
        let allowed: &[CloseCode] = if established {
            &[
                PolicyViolation,
                TooLarge,
                HeartbeatTimeout,
                EncryptionRequired,
                DecryptionFailed,
                KeyExhausted,
                RateLimited,
            ]
        } else {
            &[
                TooLarge,
                TryAgainLater,
                AuthenticationTimeout,
                AuthenticationFailed,
                EncryptionRequired,
                PolicyViolation,
                RateLimited,
            ]
        };
        assert!(
            allowed.contains(&code),
            "close {} is not one the protocol uses {} the session",
            code.code(),
            if established { "in" } else { "before" }
        );
        self.closed = true;
        self.pending = None;
    }
}

/// A well-formed client message of any kind, as JSON text.
fn json_message(s: &mut Script<'_>) -> Vec<u8> {
    let room = s.pick(&ROOMS);
    let event = s.pick(&EVENTS);
    let message = match s.byte() % 11 {
        0 => serde_json::json!({"event": "join", "data": {"rooms": [room, s.pick(&ROOMS)]}}),
        8 => serde_json::json!({"event": "join", "data": {"rooms": [room],
            "recover": {room: {"offset": s.byte(), "epoch": "e"}, s.pick(&ROOMS): {"offset": 1, "epoch": "x"}}}}),
        9 => {
            let id = "i".repeat(usize::from(s.byte() % 70));
            serde_json::json!({"event": "publish", "data": {"room": room, "event": event}, "id": id})
        }
        1 => serde_json::json!({"event": "leave", "data": {"rooms": [room]}}),
        2 => serde_json::json!({"event": "publish", "data": {"room": room, "event": event, "data": {"n": 1}}}),
        3 => serde_json::json!({"event": "refresh", "data": {"token": "t"}}),
        4 => serde_json::json!({"event": "heartbeat"}),
        5 => serde_json::json!({"event": event, "data": [1, 2], "id": 7}),
        6 => serde_json::json!({"event": "authenticate", "data": {"token": "t"}}),
        10 => serde_json::json!({"event": "presence", "data": {"room": room}}),
        _ => serde_json::json!({"event": "refresh"}),
    };
    message.to_string().into_bytes()
}

fn authenticate(s: &mut Script<'_>) -> Vec<u8> {
    match s.byte() % 8 {
        0 => br#"{"event":"authenticate","data":"t"}"#.to_vec(),
        1 => br#"{"event":"authenticate"}"#.to_vec(),
        _ => br#"{"event":"authenticate","data":{"token":"t"}}"#.to_vec(),
    }
}

fn auth_answer(s: &mut Script<'_>, now: Instant) -> AuthAnswer {
    match s.byte() % 6 {
        0 => AuthAnswer::Rejected,
        1 => AuthAnswer::Failed,
        b => {
            let user = match s.byte() % 3 {
                0 => None,
                1 => UserId::parse("alice"),
                _ => UserId::parse("bob"),
            };
            AuthAnswer::Accepted(Identity {
                user_id: user,
                metadata: Value::Null,
                expires: (b == 5).then(|| now + Duration::from_millis(u64::from(s.byte()) * 100)),
                rooms: (s.byte() % 2 == 0).then(|| vec!["demo:*".to_owned(), "chat".to_owned()]),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so the scripts are the same on every run.
    fn scripts(count: usize, seed: u64) -> impl Iterator<Item = Vec<u8>> {
        let mut state = seed;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..count).map(move |_| {
            let len = (next() % 512) as usize;
            (0..len).map(|_| next() as u8).collect()
        })
    }

    #[test]
    fn generated_scripts_keep_every_invariant_and_reach_encrypted_sessions() {
        let (mut established, mut encrypted, mut records) = (0, 0, 0);
        for script in scripts(10_000, 0x5eed_cafe_f00d_0001) {
            let reached = run(&script);
            established += usize::from(reached.established);
            encrypted += usize::from(reached.encrypted);
            records += reached.records;
        }
        // Otherwise the invariants above were only checked in the shallow states.
        assert!(established > 100, "only {established} scripts reached a session");
        assert!(encrypted > 20, "only {encrypted} scripts reached an encrypted session");
        assert!(records > 20, "only {records} records were accepted");
    }

    #[test]
    fn committed_corpus_and_regressions_keep_every_invariant() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        for dir in ["corpus/connection_core", "regressions/connection_core"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.path().is_file() {
                    check(&std::fs::read(entry.path()).unwrap_or_default());
                }
            }
        }
    }
}
