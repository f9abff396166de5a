//! A Rust client: connect, authenticate, run the wsenc/1 handshake against pinned server keys, verify `confirm`,
//! then send and receive messages (sealed and opened transparently), with key updates in both directions.
//! [`Client`] is one connection; [`ReconnectingClient`] stays connected: it reconnects with backoff, re-joins its
//! rooms, refreshes its token before expiry and follows the [reconnect policy](reconnect_policy) per close code.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use sealcast::client::{Client, ClientConfig};
//! use sealcast::crypto::PinnedKey;
//!
//! let pinned = PinnedKey::from_b64u("BNTUZ2kMSb4ao997A_L0e6WLsBjkkuK5PO9L_JXKdnBgN5CoDZaiJdBMzMoRHjG6dkhoK9oBisrGSWEs6AKZe-A")?;
//! let mut client = Client::connect(ClientConfig::new("ws://127.0.0.1:8080/ws", "<token>").pin(pinned)).await?;
//! client.join(&["lobby"]).await?;
//! client.publish("lobby", "chat", &serde_json::json!({"text": "hi"})).await?;
//! let msg = client.recv().await?;
//! println!("{} {}", msg.event, msg.data);
//! # Ok(()) }
//! ```

mod reconnect;

pub use reconnect::{reconnect_policy, Event, Reconnect, ReconnectingClient};

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::crypto::{
    self, ClientHandshake, HandshakeError, OpenError, PinnedKey, RecordOpener, RecordSealer, ServerHello,
};
use crate::protocol::event;
use crate::redact::debug_redacted;

debug_redacted!(Message { event, position; data });

type TokenFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;
type TokenProvider = Arc<dyn Fn() -> TokenFuture + Send + Sync>;

/// How to connect.
#[derive(Clone)]
pub struct ClientConfig {
    url: String,
    auth: Map<String, Value>,
    pinned: Vec<PinnedKey>,
    kid: Option<[u8; 8]>,
    require_encryption: bool,
    max_records_per_epoch: u64,
    room_keys: bool,
    room_key_batches: bool,
    room_key_binary: bool,
    token_provider: Option<TokenProvider>,
    refresh_margin: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("pinned", &self.pinned.len())
            .field("require_encryption", &self.require_encryption)
            .field("token_provider", &self.token_provider.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Connect to `url` and authenticate with `{"token": token}`. Encryption is required: pin at least one key.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        let mut auth = Map::new();
        auth.insert("token".into(), Value::String(token.into()));
        Self {
            url: url.into(),
            auth,
            pinned: Vec::new(),
            kid: None,
            require_encryption: true,
            max_records_per_epoch: crypto::MAX_RECORDS_PER_EPOCH,
            room_keys: true,
            room_key_batches: true,
            room_key_binary: true,
            token_provider: None,
            refresh_margin: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }

    /// Where fresh tokens come from (your login service), for [`ReconnectingClient`]: called when the token given
    /// to [`ClientConfig::new`] is empty, before a reconnect when the token's `exp` is within the refresh margin,
    /// to refresh the session before `exp` (the `refresh` event), and once after a credentials close (1008,
    /// 4003). An `Err` ends the client with [`ClientError::TokenUnavailable`] (during a refresh the session lasts
    /// until it expires); the error itself is dropped, as it may describe the credentials.
    pub fn token_provider<F, Fut, E>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
    {
        self.token_provider = Some(Arc::new(move || {
            let fut = provider();
            Box::pin(async move { fut.await.ok() })
        }));
        self
    }

    /// With a token provider and a JWT-shaped token: refresh this long before its `exp`, at most half its
    /// remaining life (default 60 s). The `exp` is read without verification, on the local clock.
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// [`ReconnectingClient`]'s backoff: the first delay (default 500 ms) doubles per failed attempt up to `max`
    /// (default 30 s); each delay is drawn from [base/2, base].
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// Trusts this server static key (several may be pinned, e.g. current and next).
    pub fn pin(mut self, key: PinnedKey) -> Self {
        self.pinned.push(key);
        self
    }

    /// Asks the server for the static key with this kid.
    pub fn kid(mut self, kid: [u8; 8]) -> Self {
        self.kid = Some(kid);
        self
    }

    /// Adds a field to the `authenticate` payload.
    pub fn auth_field(mut self, name: &str, value: Value) -> Self {
        self.auth.insert(name.to_owned(), value);
        self
    }

    /// Allows a plaintext session when no key is pinned (never falls back once keys are pinned).
    pub fn allow_plaintext(mut self) -> Self {
        self.require_encryption = false;
        self
    }

    /// Records per epoch this client sends before updating its keys (default 2^20).
    pub fn max_records_per_epoch(mut self, limit: u64) -> Self {
        self.max_records_per_epoch = limit;
        self
    }

    /// Whether to advertise group records (wsenc/1 §11, `"roomKeys": 1`): room messages then arrive sealed once
    /// under the room's key with a header of this session's own (default: true). Off, every message is a
    /// per-recipient record.
    pub fn room_keys(mut self, enabled: bool) -> Self {
        self.room_keys = enabled;
        self
    }

    /// Whether to advertise batched group records too (wsenc/1 §11.4, `"roomKeys": 2`; default: true): a burst
    /// of room messages then arrives as one record with one header for all of them. Off (with
    /// [`Self::room_keys`] on) the client offers `"roomKeys": 1`.
    pub fn room_key_batches(mut self, enabled: bool) -> Self {
        self.room_key_batches = enabled;
        self
    }

    /// Whether to take batched group records as binary frames (wsenc/1 §11.5, `"roomKeys": 3`; default: true):
    /// the bodies then travel as raw bytes instead of base64url in JSON. Off (with [`Self::room_key_batches`] on)
    /// the client offers `"roomKeys": 2`.
    pub fn room_key_binary(mut self, enabled: bool) -> Self {
        self.room_key_binary = enabled;
        self
    }
}

/// What went wrong on the client side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The WebSocket could not be opened or failed.
    #[error("websocket error: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server closed the connection.
    #[error("closed by the server: {code} {reason}")]
    Closed {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
        /// The `error` event the server sent before closing, if any.
        error: Option<String>,
    },
    /// Encryption is required but no key is pinned.
    #[error("encryption is required: pin the server's static key (ClientConfig::pin)")]
    NoPinnedKey,
    /// The handshake failed (bad server fields, unpinned kid, or the server failed to prove its key).
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// A record from the server failed to open.
    #[error("record rejected: {0}")]
    Record(#[from] OpenError),
    /// Sealing failed (key exhausted).
    #[error("sealing failed: {0}")]
    Seal(#[from] crypto::SealError),
    /// The server broke the protocol (e.g. plaintext after an encrypted handshake).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The token provider failed or gave an empty token.
    #[error("the token provider gave no token")]
    TokenUnavailable,
    /// A [`ReconnectingClient`] already stopped on an earlier error (which it returned then).
    #[error("the client has stopped")]
    Stopped,
    /// The server refused a `publish` or a presence query with this error text (e.g. `Not a member of room`).
    #[error("publish refused: {0}")]
    Refused(String),
}

/// An application message received from the server.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Message {
    /// Event name.
    pub event: String,
    /// Payload.
    pub data: Value,
    /// In a room with history: the room, and the message's place in its stream.
    pub position: Option<(String, StreamPosition)>,
}

/// A place in a room's history stream: the offset of a message and the stream's epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The message's offset (1 for a room's first message).
    pub offset: u64,
    /// The stream's epoch; offsets of another epoch are not comparable.
    pub epoch: String,
}

/// The server's answer to a `join`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Joined {
    /// The rooms the client is now in.
    #[serde(default)]
    pub rooms: Vec<JoinedRoom>,
    /// The rooms refused, with the reason.
    #[serde(default)]
    pub refused: Vec<RefusedRoom>,
}

/// A joined room in [`Joined`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct JoinedRoom {
    /// The room.
    pub room: String,
    /// A room with history: its latest offset when joined.
    pub offset: Option<u64>,
    /// A room with history: its epoch.
    pub epoch: Option<String>,
    /// When recovery was asked for: whether every missed message was delivered (before the `joined` answer).
    pub recovered: Option<bool>,
}

/// A refused room in [`Joined`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct RefusedRoom {
    /// The room as asked for.
    pub room: String,
    /// Why (`Room not allowed`, `Room refused`, `Invalid room name`, `Too many rooms`).
    pub reason: String,
}

/// The server's acknowledgement of a `publish`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Ack {
    /// A room with history: the message's offset (the original one for an idempotent retry).
    pub offset: Option<u64>,
    /// A room with history: the stream's epoch.
    pub epoch: Option<String>,
}

/// The server's answer to a presence query ([`Client::presence`]): who is in a room.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct RoomPresence {
    /// The room.
    pub room: String,
    /// At most the server's `presence_max_members` members, in no particular order.
    pub members: Vec<RoomMember>,
    /// How many clients are in the room (exact).
    pub clients: usize,
    /// How many distinct users they belong to (exact).
    pub users: usize,
    /// `members` lists fewer than `clients`.
    pub truncated: bool,
}

/// A member in [`RoomPresence`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct RoomMember {
    /// Its client id.
    pub client: String,
    /// Its user, if any.
    pub user: Option<String>,
    /// When it joined the room (ISO 8601, UTC).
    pub since: String,
}

/// A `member_joined` or `member_left` event ([`Message::member_event`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct MemberEvent {
    /// True for `member_joined`, false for `member_left`.
    #[serde(skip)]
    pub joined: bool,
    /// The room.
    pub room: String,
    /// The client that joined or left.
    pub client: String,
    /// Its user, if any.
    pub user: Option<String>,
}

impl Message {
    /// The presence event this message is (`member_joined` / `member_left` in a presence room), if it is one.
    pub fn member_event(&self) -> Option<MemberEvent> {
        let joined = match self.event.as_str() {
            event::MEMBER_JOINED => true,
            event::MEMBER_LEFT => false,
            _ => return None,
        };
        let mut e: MemberEvent = serde_json::from_value(self.data.clone()).ok()?;
        e.joined = joined;
        Some(e)
    }
}

/// The error texts that answer a presence query.
const PRESENCE_ERRORS: [&str; 3] = [
    event::errors::NOT_IN_ROOM,
    event::errors::PRESENCE_NOT_ENABLED,
    event::errors::PRESENCE_UNAVAILABLE,
];

/// Most messages held while a `join` or a `publish` waits for its answer; beyond it the wait fails, since a
/// server that never answers must not grow the client without bound.
const MAX_HELD: usize = 65_536;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connected, authenticated client.
pub struct Client {
    ws: Ws,
    sealer: Option<RecordSealer>,
    opener: Option<RecordOpener>,
    connected: Value,
    out: Vec<Bytes>,
    /// Messages that arrived while a `join` or a `publish` waited for its answer, for `recv`.
    held: VecDeque<Message>,
    /// The rest of a batched group record's messages (wsenc/1 §11.4), read before the socket.
    unread: VecDeque<Vec<u8>>,
    /// The next publish id.
    next_id: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id())
            .field("encrypted", &self.is_encrypted())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects, authenticates and (with pinned keys) completes the wsenc/1 handshake.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        if config.require_encryption && config.pinned.is_empty() {
            return Err(ClientError::NoPinnedKey);
        }
        let (mut ws, _) = tokio_tungstenite::connect_async(config.url.as_str()).await?;
        let mut auth = config.auth.clone();
        let handshake = if config.pinned.is_empty() {
            None
        } else {
            let hs = ClientHandshake::new()?;
            hs.insert_auth_fields(&mut auth, config.kid);
            if config.room_keys {
                let offer = if config.room_key_batches && config.room_key_binary {
                    crate::wsenc::ROOM_KEYS_BINARY
                } else if config.room_key_batches {
                    crate::wsenc::ROOM_KEYS_BATCHED
                } else {
                    1
                };
                auth.insert(crate::wsenc::ROOM_KEYS_FIELD.into(), Value::from(offer));
            }
            Some(hs)
        };
        let frame = json!({ "event": event::AUTHENTICATE, "data": Value::Object(auth) });
        ws.send(WsMessage::text(frame.to_string())).await?;
        let connected = wait_connected(&mut ws).await?;
        let mut client = Self {
            ws,
            sealer: None,
            opener: None,
            connected,
            out: Vec::new(),
            held: VecDeque::new(),
            unread: VecDeque::new(),
            next_id: 0,
        };
        if let Some(hs) = handshake {
            let hello = ServerHello::from_connected_data(&client.connected)?;
            let (mut sealer, mut opener) =
                hs.finish(&config.pinned, &hello, client.id(), client.user_id().unwrap_or(""))?;
            // Group records only when both sides asked for them; the server's answer is what counts.
            let answer = client
                .connected
                .get(crate::wsenc::ROOM_KEYS_FIELD)
                .and_then(Value::as_u64);
            match answer {
                Some(1) if config.room_keys => opener.enable_room_keys(),
                Some(crate::wsenc::ROOM_KEYS_BATCHED) if config.room_keys && config.room_key_batches => {
                    opener.enable_room_key_batches();
                }
                Some(crate::wsenc::ROOM_KEYS_BINARY)
                    if config.room_keys && config.room_key_batches && config.room_key_binary =>
                {
                    opener.enable_room_key_binary();
                }
                // An answer the client did not offer: the record layer refuses group records (4005).
                _ => {}
            }
            sealer
                .set_epoch_limit(config.max_records_per_epoch)
                .map_err(|_| ClientError::Protocol("invalid epoch limit"))?;
            client.sealer = Some(sealer);
            client.opener = Some(opener);
        }
        Ok(client)
    }

    /// The connection id the server assigned.
    pub fn id(&self) -> &str {
        str_field(&self.connected, "id").unwrap_or_default()
    }

    /// The authenticated user, if any.
    pub fn user_id(&self) -> Option<&str> {
        str_field(&self.connected, "userId")
    }

    /// The `data` of the `connected` event.
    pub fn connected_data(&self) -> &Value {
        &self.connected
    }

    /// Whether the session is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.sealer.is_some()
    }

    /// Sends `{"event": event, "data": data}` (sealed on an encrypted session).
    pub async fn send<T: Serialize + ?Sized>(&mut self, event_name: &str, data: &T) -> Result<(), ClientError> {
        let inner = json!({ "event": event_name, "data": data }).to_string();
        self.send_inner(&inner).await
    }

    /// Sends an inner message given as JSON text.
    pub async fn send_inner(&mut self, inner: &str) -> Result<(), ClientError> {
        let Some(sealer) = self.sealer.as_mut() else {
            self.ws.send(WsMessage::text(inner)).await?;
            return Ok(());
        };
        sealer.seal(inner.as_bytes(), &mut self.out)?;
        self.flush_sealed().await
    }

    async fn flush_sealed(&mut self) -> Result<(), ClientError> {
        for frame in std::mem::take(&mut self.out) {
            let text = String::from_utf8(frame.to_vec()).map_err(|_| ClientError::Protocol("non-UTF-8 record"))?;
            self.ws.feed(WsMessage::text(text)).await?;
        }
        self.ws.flush().await?;
        Ok(())
    }

    /// Sends a heartbeat.
    pub async fn heartbeat(&mut self) -> Result<(), ClientError> {
        self.send_inner(r#"{"event":"heartbeat"}"#).await
    }

    /// Joins rooms and waits for the server's answer: which rooms were joined, which refused and why. Messages
    /// arriving meanwhile are kept for [`Self::recv`].
    pub async fn join(&mut self, rooms: &[&str]) -> Result<Joined, ClientError> {
        self.join_recovering(rooms, &BTreeMap::new()).await
    }

    /// [`Self::join`], asking to recover each room of `recover` after the position given: the missed messages
    /// arrive first (for [`Self::recv`]), and [`JoinedRoom::recovered`] tells whether they all did.
    pub async fn join_recovering(
        &mut self,
        rooms: &[&str],
        recover: &BTreeMap<String, StreamPosition>,
    ) -> Result<Joined, ClientError> {
        let data = if recover.is_empty() {
            json!({ "rooms": rooms })
        } else {
            json!({ "rooms": rooms, "recover": recover })
        };
        self.send(event::JOIN, &data).await?;
        loop {
            let m = self.read().await?;
            if m.event == event::JOINED {
                return serde_json::from_value(m.data).map_err(|_| ClientError::Protocol("malformed joined"));
            }
            self.hold(m)?;
        }
    }

    /// Leaves rooms.
    pub async fn leave(&mut self, rooms: &[&str]) -> Result<(), ClientError> {
        self.send(event::LEAVE, &json!({ "rooms": rooms })).await
    }

    /// Publishes to a joined room (needs `allow_client_publish` on the server) and waits for the server's
    /// acknowledgement; a refusal is [`ClientError::Refused`]. Messages arriving meanwhile are kept for
    /// [`Self::recv`].
    pub async fn publish<T: Serialize + ?Sized>(
        &mut self,
        room: &str,
        event_name: &str,
        data: &T,
    ) -> Result<Ack, ClientError> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = format!("p{}", self.next_id);
        self.publish_with_id(room, event_name, data, &id).await
    }

    /// [`Self::publish`] with the caller's `id` (at most 64 bytes): a retry with the same id, for the same room,
    /// within the server's `history_ttl` (also after a reconnect, for the same user) is acknowledged with the
    /// original offset and not delivered again.
    pub async fn publish_with_id<T: Serialize + ?Sized>(
        &mut self,
        room: &str,
        event_name: &str,
        data: &T,
        id: &str,
    ) -> Result<Ack, ClientError> {
        let frame =
            json!({ "event": event::PUBLISH, "data": { "room": room, "event": event_name, "data": data }, "id": id });
        self.send_inner(&frame.to_string()).await?;
        loop {
            let m = self.read().await?;
            let answers = m.data.get("id").and_then(Value::as_str) == Some(id);
            match m.event.as_str() {
                event::ACK if answers => {
                    return serde_json::from_value(m.data).map_err(|_| ClientError::Protocol("malformed ack"))
                }
                event::ERROR if answers => {
                    let text = m.data.get("message").and_then(Value::as_str).unwrap_or_default();
                    return Err(ClientError::Refused(text.to_owned()));
                }
                _ => self.hold(m)?,
            }
        }
    }

    /// Asks who is in `room` (the client must be in it, and the room must keep presence) and waits for the
    /// answer; a refusal (`Not a member of room`, `Presence not enabled for room`, `Presence unavailable`) is
    /// [`ClientError::Refused`]. Messages arriving meanwhile are kept for [`Self::recv`].
    pub async fn presence(&mut self, room: &str) -> Result<RoomPresence, ClientError> {
        self.send(event::PRESENCE, &json!({ "room": room })).await?;
        loop {
            let m = self.read().await?;
            let text = m.data.get("message").and_then(Value::as_str).unwrap_or_default();
            match m.event.as_str() {
                event::PRESENCE if m.data.get("room").and_then(Value::as_str) == Some(room) => {
                    return serde_json::from_value(m.data).map_err(|_| ClientError::Protocol("malformed presence"))
                }
                event::ERROR if PRESENCE_ERRORS.contains(&text) => return Err(ClientError::Refused(text.to_owned())),
                _ => self.hold(m)?,
            }
        }
    }

    fn hold(&mut self, m: Message) -> Result<(), ClientError> {
        if self.held.len() >= MAX_HELD {
            return Err(ClientError::Protocol("no answer while too many messages arrived"));
        }
        self.held.push_back(m);
        Ok(())
    }

    /// Switches the outbound direction to the next epoch's keys now.
    pub async fn update_keys(&mut self) -> Result<(), ClientError> {
        let Some(sealer) = self.sealer.as_mut() else {
            return Err(ClientError::Protocol("key update on a plaintext session"));
        };
        sealer.request_key_update(&mut self.out)?;
        self.flush_sealed().await
    }

    /// The next message (key updates are handled internally). Answers of `join` and `publish` are taken by those
    /// calls; an unrequested `joined` or `ack` (e.g. from frames sent with [`Self::send_inner`]) is returned.
    pub async fn recv(&mut self) -> Result<Message, ClientError> {
        match self.held.pop_front() {
            Some(m) => Ok(m),
            None => self.read().await,
        }
    }

    /// The next message from the socket.
    async fn read(&mut self) -> Result<Message, ClientError> {
        loop {
            let inner = match self.unread.pop_front() {
                Some(inner) => inner,
                None => {
                    let text = match next_frame(&mut self.ws).await? {
                        None => continue,
                        Some(Frame::Text(text)) => text,
                        Some(Frame::Binary(bytes)) => {
                            // §11.5: only a session that negotiated binary batches takes one (else 4005).
                            let opener = self.opener.as_mut().ok_or(ClientError::Protocol("binary frame"))?;
                            self.unread.extend(opener.open_binary(&bytes)?);
                            continue;
                        }
                    };
                    match self.opener.as_mut() {
                        None => text.into_bytes(),
                        Some(opener) => match opener.open_all(text.as_bytes()) {
                            Ok(all) => {
                                self.unread.extend(all);
                                continue;
                            }
                            Err(OpenError::NotEncrypted) => {
                                return Err(ClientError::Protocol("plaintext frame on an encrypted session"))
                            }
                            Err(e) => return Err(e.into()),
                        },
                    }
                }
            };
            let v: Value = serde_json::from_slice(&inner).map_err(|_| ClientError::Protocol("invalid JSON"))?;
            let event_name = str_field(&v, "event").ok_or(ClientError::Protocol("message without event"))?;
            let position = match (
                str_field(&v, "room"),
                v.get("offset").and_then(Value::as_u64),
                str_field(&v, "epoch"),
            ) {
                (Some(room), Some(offset), Some(epoch)) => Some((
                    room.to_owned(),
                    StreamPosition {
                        offset,
                        epoch: epoch.to_owned(),
                    },
                )),
                _ => None,
            };
            return Ok(Message {
                event: event_name.to_owned(),
                data: v.get("data").cloned().unwrap_or(Value::Null),
                position,
            });
        }
    }

    /// Sends a raw text frame, bypassing the record layer (for tests of server hardening).
    pub async fn send_raw(&mut self, text: &str) -> Result<(), ClientError> {
        self.ws.send(WsMessage::text(text)).await?;
        Ok(())
    }

    /// Seals an inner message without sending it and returns the wire frames (for tests of server hardening).
    pub fn seal_raw(&mut self, inner: &str) -> Result<Vec<String>, ClientError> {
        let sealer = self.sealer.as_mut().ok_or(ClientError::Protocol("plaintext session"))?;
        let mut out = Vec::new();
        sealer.seal(inner.as_bytes(), &mut out)?;
        Ok(out.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect())
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A data frame.
enum Frame {
    Text(String),
    /// A binary batched group record (wsenc/1 §11.5).
    Binary(Vec<u8>),
}

/// Reads the next data frame; `Ok(None)` for control frames; a close becomes [`ClientError::Closed`].
async fn next_frame(ws: &mut Ws) -> Result<Option<Frame>, ClientError> {
    match ws.next().await {
        Some(Ok(WsMessage::Binary(b))) => Ok(Some(Frame::Binary(b.to_vec()))),
        Some(Ok(WsMessage::Text(t))) => Ok(Some(Frame::Text(t.to_string()))),
        other => next_other(other).map(|_| None),
    }
}

/// [`next_frame`] for what is not a data frame.
fn next_other(next: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>) -> Result<(), ClientError> {
    match next {
        None => Err(ClientError::Closed {
            code: 1006,
            reason: String::new(),
            error: None,
        }),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(WsMessage::Close(frame))) => Err(ClientError::Closed {
            code: frame.as_ref().map_or(1005, |f| u16::from(f.code)),
            reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
            error: None,
        }),
        Some(Ok(_)) => Ok(()),
    }
}

/// Reads the next text frame; `Ok(None)` for control frames; a close becomes [`ClientError::Closed`].
async fn next_text(ws: &mut Ws) -> Result<Option<String>, ClientError> {
    match ws.next().await {
        None => Err(ClientError::Closed {
            code: 1006,
            reason: String::new(),
            error: None,
        }),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(WsMessage::Text(t))) => Ok(Some(t.to_string())),
        Some(Ok(WsMessage::Binary(_))) => Err(ClientError::Protocol("binary frame")),
        Some(Ok(WsMessage::Close(frame))) => Err(ClientError::Closed {
            code: frame.as_ref().map_or(1005, |f| u16::from(f.code)),
            reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
            error: None,
        }),
        Some(Ok(_)) => Ok(None),
    }
}

/// Waits for `connected`; an `error` then a close becomes [`ClientError::Closed`] carrying the error text.
async fn wait_connected(ws: &mut Ws) -> Result<Value, ClientError> {
    let mut error = None;
    loop {
        let text = match next_text(ws).await {
            Ok(Some(text)) => text,
            Ok(None) => continue,
            Err(ClientError::Closed { code, reason, .. }) => return Err(ClientError::Closed { code, reason, error }),
            Err(e) => return Err(e),
        };
        let v: Value = serde_json::from_str(&text).map_err(|_| ClientError::Protocol("invalid JSON"))?;
        match str_field(&v, "event") {
            Some(event::CONNECTED) => return Ok(v.get("data").cloned().unwrap_or(Value::Null)),
            Some(event::ERROR) => error = v.get("data").and_then(|d| str_field(d, "message")).map(str::to_owned),
            _ => return Err(ClientError::Protocol("unexpected frame before connected")),
        }
    }
}
