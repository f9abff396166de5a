//! One WebSocket connection: a reader (this task) that parses, authenticates and routes inbound frames, and a
//! writer task that owns the socket's sending half and the session's sealer.
//!
//! Everything bound for the client — fan-out, replies, pongs, the close frame — goes through the connection's
//! [`Mailbox`] queue, so the client sees it in exactly the order it was queued, and encrypted sessions get every
//! frame after `connected` sealed by the one task that owns the outbound sequence numbers.
//!
//! The upgraded stream is split below WebSocket framing. The reader parses with tungstenite; what tungstenite
//! itself writes (pongs, close replies) is forwarded into the queue as complete frames. The writer sends
//! pre-framed bytes: a fan-out's frame is encoded once and shared by every plaintext recipient, and a drained
//! batch goes out with vectored writes, without copying it into a write buffer first.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::Message;
use uuid::Uuid;

use crate::hooks::{invoke, AuthRequest, Connected, Disconnected, IncomingMessage, Outgoing, RoomRequest, Transformed};
use crate::limits::{Bucket, Slot};
use crate::mailbox::{Mailbox, Outbound, Receiver, Task};
use crate::metrics::Metrics;
use crate::protocol::event::errors;
use crate::protocol::inbound::{self, ClientMessage, InboundError};
use crate::protocol::outbound::{put_frame, TextFrame, OP_CLOSE, OP_TEXT, PING_FRAME};
use crate::protocol::{event, outbound, room, CloseCode, Message as AppMessage};
use crate::registry::{ClientState, Entry};
use crate::server::{PublishBatch, Shared};
use crate::session::{Frames, HandshakeOutcome, HandshakeRequest, Opener, Sealer, Session};
use crate::stats::Stats;

/// How long a closing writer may take to get the close frame out.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Most buffers handed to one vectored write (Linux accepts 1,024). A writer takes everything queued at once
/// (at most the queue's capacity), so a fan-out burst usually leaves in one or two calls.
const MAX_IOV: usize = 256;

type Flow = ControlFlow<()>;

/// The upgraded connection, as hyper hands it over (plain TCP or whatever the app serves, e.g. TLS).
pub(crate) type Io = TokioIo<Upgraded>;
type WriteIo = WriteHalf<Io>;

/// Runs a connection from the upgrade to cleanup. One function, not a chain of async calls: every level of an
/// async call chain keeps its own copy of the arguments in the connection's task, for as long as it lives.
pub(crate) async fn run(on_upgrade: OnUpgrade, shared: Arc<Shared>, id: Uuid, slot: Slot) {
    // Resolves once the 101 has been sent; an error means the client went away before that.
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let io = TokioIo::new(upgraded);
    let _live = Live::new(shared.metrics.connections.clone(), slot);
    let (mailbox, rx) = Mailbox::new(
        shared.config.outbound_queue,
        shared.clock,
        shared.stats.clone(),
        shared.metrics.queue_drops.clone(),
    );
    let entry = Entry::new(id, mailbox.clone());
    let (read_half, mut write_half) = tokio::io::split(io);
    if !shared.registry.insert(entry.clone()) {
        // A duplicate id must never shadow the existing connection (reference defect W34).
        let _ = send_close(&mut write_half, VecDeque::new(), CloseCode::InternalError).await;
        return;
    }
    tracing::debug!(client = %entry.id_str, "connected");
    let mut writer = tokio::spawn(write_loop(write_half, rx, entry.clone(), shared.clone()));
    let c = &shared.config;
    let config = WebSocketConfig::default()
        .read_buffer_size(c.read_buffer_size)
        .write_buffer_size(c.write_buffer_size)
        .max_write_buffer_size(c.max_write_buffer_size)
        .max_message_size(Some(c.max_payload_length))
        .max_frame_size(Some(c.max_payload_length));
    let reading = ReadSide {
        read: read_half,
        mailbox: mailbox.clone(),
    };
    let mut stream = WebSocketStream::from_raw_socket(reading, Role::Server, Some(config)).await;
    let now = std::time::Instant::now();
    let mut reader = Reader {
        deadline: Some(Instant::now() + shared.config.auth_timeout),
        shared: shared.clone(),
        entry: entry.clone(),
        opener: None,
        messages: Bucket::new(shared.config.message_rate, now),
        joins: Bucket::new(shared.config.join_rate, now),
        encrypted: None,
        expiry: None,
        pending: None,
    };
    // By reference: a by-value argument would be stored twice in the reader's future (argument and local).
    reader.read_loop(&mut stream).await;
    // Publishes accepted before the connection ended are still delivered.
    reader.flush_publishes();
    if tokio::time::timeout(CLOSE_GRACE, &mut writer).await.is_err() {
        mailbox.finish();
        let _ = writer.await;
    }
    let user_id = entry.user_id().map(|u| u.to_string());
    shared.registry.remove(&entry);
    match reader.encrypted {
        Some(true) => shared.metrics.sessions_encrypted.decrement(1),
        Some(false) => shared.metrics.sessions_plain.decrement(1),
        None => {}
    }
    let code = mailbox.close_code();
    if let Some(code) = code {
        Metrics::closed(code);
    }
    tracing::info!(client = %entry.id_str, code = code.map(CloseCode::code), "disconnected");
    if let Some(hook) = &shared.hooks.on_disconnected {
        let ev = Disconnected {
            client_id: entry.id_str.to_string(),
            user_id,
            code: code.map(CloseCode::code),
        };
        if let Err(e) = Box::pin(invoke(hook.as_ref(), ev)).await {
            Stats::bump(&shared.stats.hook_failures);
            tracing::warn!(client = %entry.id_str, error = %e, "on_disconnected hook failed");
        }
    }
}

/// A connection being served: counted in the `connections` gauge and holding its limiter slot until dropped.
struct Live {
    gauge: metrics::Gauge,
    _slot: Slot,
}

impl Live {
    fn new(gauge: metrics::Gauge, slot: Slot) -> Self {
        gauge.increment(1);
        Self { gauge, _slot: slot }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.gauge.decrement(1);
    }
}

/// What tungstenite reads from and writes to. Reads come from the socket's reading half. Writes (pongs, close
/// replies: complete frames, because nothing ever refuses them) are queued behind the data already queued, so
/// one writer orders everything the client receives.
struct ReadSide {
    read: ReadHalf<Io>,
    mailbox: Arc<Mailbox>,
}

impl AsyncRead for ReadSide {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().read).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadSide {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if !buf.is_empty() {
            // A full or closed queue has already doomed the connection; the bytes are dropped with it.
            self.mailbox.push(Outbound::Raw(buf.into()));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct Reader {
    shared: Arc<Shared>,
    entry: Arc<Entry>,
    /// Authentication deadline; `None` once authenticated.
    deadline: Option<Instant>,
    opener: Option<Box<dyn Opener>>,
    messages: Bucket,
    joins: Bucket,
    /// Set once authenticated: whether the session is encrypted.
    encrypted: Option<bool>,
    /// When the credentials expire (close 1008 unless refreshed).
    expiry: Option<Instant>,
    /// Publishes read but not yet delivered locally: delivered before anything else this reader does, and as
    /// soon as no further frame is already waiting.
    pending: Option<Box<PublishBatch>>,
}

impl Reader {
    fn mailbox(&self) -> &Mailbox {
        &self.entry.mailbox
    }

    fn close(&self, code: CloseCode) -> Flow {
        tracing::info!(client = %self.entry.id_str, code = code.code(), "closing");
        self.mailbox().close_after_pending(code);
        ControlFlow::Break(())
    }

    fn reply_error(&self, message: &str) {
        self.mailbox().push_system(outbound::error(message));
    }

    fn fail(&self, message: &str, code: CloseCode) -> Flow {
        self.reply_error(message);
        self.close(code)
    }

    fn flush_publishes(&mut self) {
        self.shared.flush_publishes(&mut self.pending);
    }

    async fn read_loop(&mut self, stream: &mut WebSocketStream<ReadSide>) {
        let entry = self.entry.clone();
        loop {
            // While publishes are held back, take the next frame only if it is already here (more publishes
            // join the batch); otherwise deliver the batch before waiting. (A block, so that no frame slot lives
            // across the wait: it would enlarge every idle reader.)
            let next = 'next: {
                if self.pending.is_some() {
                    if let Some(next) = stream.next().now_or_never() {
                        break 'next next;
                    }
                }
                self.flush_publishes();
                // No frame is waiting: what the opener can rebuild need not stay in memory meanwhile (one rebuild
                // per burst of frames, which costs a fraction of opening one).
                if let Some(opener) = self.opener.as_mut() {
                    opener.idle();
                }
                // One timer for whichever comes first (one per idle reader, not two).
                let timer = match (self.deadline, self.expiry) {
                    (Some(d), Some(e)) if e < d => Some((e, CloseCode::PolicyViolation)),
                    (Some(d), _) => Some((d, CloseCode::AuthenticationTimeout)),
                    (None, e) => e.map(|e| (e, CloseCode::PolicyViolation)),
                };
                tokio::select! {
                    biased;
                    _ = entry.mailbox.killed(Task::Reader) => return,
                    _ = sleep_until(timer.map(|(at, _)| at)) => {
                        if let Some((_, code)) = timer {
                            let _ = self.close(code);
                        }
                        return;
                    }
                    next = stream.next() => next,
                }
            };
            let flow = match next {
                None | Some(Ok(Message::Close(_))) => {
                    entry.mailbox.finish();
                    return;
                }
                Some(Err(e)) => {
                    if matches!(e, tungstenite::Error::Capacity(_)) {
                        let _ = self.close(CloseCode::TooLarge);
                    } else {
                        entry.mailbox.finish();
                    }
                    return;
                }
                // Boxed: the frame's handling would otherwise size every idle reader's future for its busiest
                // moment (about 0.4 KiB per connection).
                Some(Ok(Message::Text(text))) => Box::pin(self.guarded(text.as_bytes(), false)).await,
                Some(Ok(Message::Binary(bytes))) => Box::pin(self.guarded(&bytes, true)).await,
                // tungstenite queues the pong itself; raw frames are never produced by reading.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            };
            if flow.is_break() {
                return;
            }
        }
    }

    /// Handles one frame, abandoning it if the connection is killed meanwhile (a hook may be slow).
    async fn guarded(&mut self, frame: &[u8], binary: bool) -> Flow {
        let entry = self.entry.clone();
        tokio::select! {
            biased;
            _ = entry.mailbox.killed(Task::Reader) => ControlFlow::Break(()),
            flow = self.on_frame(frame, binary) => flow,
        }
    }

    async fn on_frame(&mut self, frame: &[u8], binary: bool) -> Flow {
        let limit = if self.deadline.is_some() {
            self.shared.config.max_preauth_payload_length
        } else {
            self.shared.config.max_payload_length
        };
        if frame.len() > limit {
            return self.close(CloseCode::TooLarge);
        }
        if !self
            .messages
            .try_take(self.shared.config.message_rate, std::time::Instant::now())
        {
            return self.close(CloseCode::RateLimited);
        }
        let Some(opener) = self.opener.as_mut() else {
            return self.route(frame).await;
        };
        if binary {
            // wsenc/1 §8: anything but an `encrypted` text record is a downgrade attempt.
            return self.close(CloseCode::EncryptionRequired);
        }
        match opener.open(frame) {
            Ok(Some(inner)) => {
                self.shared.metrics.records_in.increment(1);
                self.route(&inner).await
            }
            Ok(None) => {
                self.shared.metrics.records_in.increment(1);
                self.shared.metrics.key_updates.increment(1);
                self.mailbox().touch();
                ControlFlow::Continue(())
            }
            Err(code) => self.close(code),
        }
    }

    async fn route(&mut self, frame: &[u8]) -> Flow {
        let parsed = std::str::from_utf8(frame)
            .map_err(|_| InboundError::InvalidFormat)
            .and_then(inbound::parse);
        if !matches!(parsed, Ok(ClientMessage::Publish { .. })) {
            // Anything else may reach this client or change who receives what: held-back publishes go first.
            self.flush_publishes();
        }
        let msg = match parsed {
            Ok(msg) => msg,
            Err(InboundError::InvalidFormat) => {
                self.reply_error(errors::INVALID_MESSAGE_FORMAT);
                return ControlFlow::Continue(());
            }
            Err(InboundError::ReservedEvent) => {
                self.reply_error(errors::RESERVED_EVENT);
                return ControlFlow::Continue(());
            }
        };
        self.mailbox().touch();
        match msg {
            ClientMessage::Heartbeat => ControlFlow::Continue(()),
            // The hook-awaiting paths are boxed: their state would otherwise sit in every idle reader's future.
            ClientMessage::Authenticate(data) => Box::pin(self.authenticate(data)).await,
            ClientMessage::Refresh(_) if self.entry.phase() != ClientState::Authenticated => {
                self.reply_error(errors::NOT_AUTHENTICATED);
                ControlFlow::Continue(())
            }
            ClientMessage::Refresh(data) => Box::pin(self.refresh(data)).await,
            _ if self.entry.phase() != ClientState::Authenticated => {
                self.reply_error(errors::NOT_AUTHENTICATED);
                ControlFlow::Continue(())
            }
            ClientMessage::Join(_)
                if !self
                    .joins
                    .try_take(self.shared.config.join_rate, std::time::Instant::now()) =>
            {
                self.close(CloseCode::RateLimited)
            }
            ClientMessage::Join(rooms) => Box::pin(self.join(rooms)).await,
            ClientMessage::Leave(rooms) => self.leave(&rooms),
            ClientMessage::Publish { room, event, data } => self.publish(&room, &event, data),
            ClientMessage::Custom { event, data, id } => Box::pin(self.custom(&event, data, id)).await,
        }
    }

    async fn authenticate(&mut self, data: Option<&RawValue>) -> Flow {
        if self.entry.phase() != ClientState::Unauthorized {
            self.reply_error(errors::ALREADY_AUTHENTICATED);
            return ControlFlow::Continue(());
        }
        self.shared.registry.set_authenticating(&self.entry);
        let Some(data) = data.and_then(|d| serde_json::from_str::<Map<String, Value>>(d.get()).ok()) else {
            Stats::bump(&self.shared.stats.auth_rejected);
            return self.fail(errors::AUTHENTICATION_FAILED, CloseCode::AuthenticationFailed);
        };
        let started = std::time::Instant::now();
        let shared = self.shared.clone();
        let Ok(Ok(_permit)) =
            tokio::time::timeout(shared.config.handshake_wait, shared.handshake_permits.acquire()).await
        else {
            shared.metrics.hs_busy.increment(1);
            return self.close(CloseCode::TryAgainLater);
        };
        // The extended window covers the authenticator and the handshake together (reference defect W11).
        let window = self.shared.config.auth_timeout.saturating_mul(3);
        let established = match tokio::time::timeout(window, self.establish(data)).await {
            Ok(Ok(established)) => established,
            Ok(Err(flow)) => return flow,
            Err(_) => {
                self.shared.metrics.auth_timeout.increment(1);
                return self.close(CloseCode::AuthenticationTimeout);
            }
        };
        drop(_permit);
        self.shared
            .metrics
            .handshake_seconds
            .record(started.elapsed().as_secs_f64());
        self.deadline = None;
        if let Some(hook) = &self.shared.hooks.on_connected {
            // A failing hook is logged; it never turns an established session into an auth failure (W33).
            if let Err(e) = invoke(hook.as_ref(), established).await {
                Stats::bump(&self.shared.stats.hook_failures);
                tracing::warn!(client = %self.entry.id_str, error = %e, "on_connected hook failed");
            }
        }
        ControlFlow::Continue(())
    }

    /// Authenticator, then handshake, then `connected` and the indexes. Credentials are checked before any
    /// handshake work happens.
    async fn establish(&mut self, data: Map<String, Value>) -> Result<Connected, Flow> {
        let client_id = self.entry.id_str.to_string();
        let req = AuthRequest {
            client_id: client_id.clone(),
            data: data.clone(),
        };
        let identity = match invoke(self.shared.authenticator.as_ref(), req).await {
            Ok(Some(identity)) => identity,
            Ok(None) => {
                Stats::bump(&self.shared.stats.auth_rejected);
                self.shared.metrics.auth_rejected.increment(1);
                return Err(self.fail(errors::AUTHENTICATION_FAILED, CloseCode::AuthenticationFailed));
            }
            Err(e) => {
                Stats::bump(&self.shared.stats.hook_failures);
                self.shared.metrics.auth_error.increment(1);
                tracing::warn!(client = %client_id, error = %e, "authenticator failed");
                return Err(self.fail(errors::AUTHENTICATION_ERROR, CloseCode::AuthenticationFailed));
            }
        };
        self.shared.metrics.auth_accepted.increment(1);
        if let Some(user) = &identity.user_id {
            if self.shared.registry.by_user(user).len() >= self.shared.config.max_sessions_per_user {
                return Err(self.fail(errors::TOO_MANY_SESSIONS, CloseCode::PolicyViolation));
            }
        }
        let session = self.handshake(&identity.user_id, data).await?;
        let encrypted = session.is_some();
        self.encrypted = Some(encrypted);
        if encrypted {
            self.shared.metrics.hs_encrypted.increment(1);
            self.shared.metrics.sessions_encrypted.increment(1);
        } else {
            self.shared.metrics.hs_plaintext.increment(1);
            self.shared.metrics.sessions_plain.increment(1);
        }
        let mut fields = Map::new();
        fields.insert("id".into(), Value::String(client_id.clone()));
        if let Some(user) = &identity.user_id {
            fields.insert("userId".into(), Value::String(user.clone()));
        }
        fields.insert("time".into(), Value::String(now_iso8601()));
        let sealer: Option<Box<dyn Sealer>> = session.map(|s| {
            let Session {
                connected_fields,
                sealer,
                opener,
            } = s;
            fields.extend(connected_fields);
            self.opener = Some(opener);
            sealer
        });
        let mut connected = String::with_capacity(256);
        connected.push_str("{\"event\":\"connected\",\"data\":");
        connected.push_str(&Value::Object(fields).to_string());
        connected.push('}');
        // `connected` is the last plaintext frame; the sealer takes over right behind it in the same queue.
        self.mailbox().push_system(connected);
        if let Some(sealer) = sealer {
            self.mailbox().push(Outbound::Encrypt(sealer));
        }
        let user: Option<Arc<str>> = identity.user_id.as_deref().map(Into::into);
        let rooms = room::sanitize(&self.shared.config.default_rooms);
        self.expiry = identity.expires_at.map(instant_of);
        self.entry.set_room_patterns(identity.rooms);
        self.shared
            .registry
            .authenticate(&self.entry, user, identity.metadata.clone(), encrypted, &rooms);
        tracing::info!(client = %client_id, encrypted, "authenticated");
        Ok(Connected {
            client_id,
            user_id: identity.user_id,
            metadata: identity.metadata,
        })
    }

    async fn handshake(&self, user_id: &Option<String>, data: Map<String, Value>) -> Result<Option<Session>, Flow> {
        let require = self.shared.config.require_encryption;
        let Some(hs) = &self.shared.handshake else {
            return Ok(None);
        };
        let req = HandshakeRequest {
            client_id: self.entry.id_str.to_string(),
            user_id: user_id.clone(),
            data,
        };
        match invoke(hs.as_ref(), req).await {
            Ok(HandshakeOutcome::Encrypted(session)) => Ok(Some(session)),
            Ok(HandshakeOutcome::Plaintext) if !require => Ok(None),
            Ok(HandshakeOutcome::Plaintext | HandshakeOutcome::Reject) => {
                self.shared.metrics.hs_rejected.increment(1);
                Err(self.fail(errors::HANDSHAKE_FAILED, CloseCode::EncryptionRequired))
            }
            Err(e) => {
                self.shared.metrics.hs_rejected.increment(1);
                Stats::bump(&self.shared.stats.hook_failures);
                tracing::warn!(client = %self.entry.id_str, error = %e, "handshake failed");
                Err(self.fail(errors::HANDSHAKE_FAILED, CloseCode::EncryptionRequired))
            }
        }
    }

    /// Fresh credentials for the same user: extend the session and rotate the outbound keys. A refused refresh
    /// is answered with an error; the session keeps its current expiry.
    async fn refresh(&mut self, data: Option<&RawValue>) -> Flow {
        let Some(data) = data.and_then(|d| serde_json::from_str::<Map<String, Value>>(d.get()).ok()) else {
            self.reply_error(errors::INVALID_MESSAGE_FORMAT);
            return ControlFlow::Continue(());
        };
        let req = AuthRequest {
            client_id: self.entry.id_str.to_string(),
            data,
        };
        let current = self.entry.user_id();
        match invoke(self.shared.authenticator.as_ref(), req).await {
            Ok(Some(identity)) if identity.user_id.as_deref() == current.as_deref() => {
                self.expiry = identity.expires_at.map(instant_of);
                self.entry.set_room_patterns(identity.rooms);
                self.mailbox().push(Outbound::Rekey);
                tracing::info!(client = %self.entry.id_str, "credentials refreshed");
            }
            Ok(_) => {
                self.shared.metrics.auth_rejected.increment(1);
                self.reply_error(errors::AUTHENTICATION_FAILED);
            }
            Err(e) => {
                Stats::bump(&self.shared.stats.hook_failures);
                tracing::warn!(client = %self.entry.id_str, error = %e, "authenticator failed on refresh");
                self.reply_error(errors::AUTHENTICATION_ERROR);
            }
        }
        ControlFlow::Continue(())
    }

    async fn join(&mut self, requested: Vec<std::borrow::Cow<'_, str>>) -> Flow {
        let mut rooms = room::sanitize(&requested);
        rooms.retain(|r| self.entry.room_permitted(r));
        if rooms.is_empty() {
            return ControlFlow::Continue(());
        }
        let Some(validator) = self.shared.room_validator() else {
            tracing::debug!(client = %self.entry.id_str, "join refused: no room validator configured");
            return ControlFlow::Continue(());
        };
        let req = RoomRequest {
            client_id: self.entry.id_str.to_string(),
            user_id: self.entry.user_id().map(|u| u.to_string()),
            metadata: self.entry.metadata(),
            rooms: rooms.clone(),
        };
        let allowed = match invoke(validator, req).await {
            Ok(allowed) => allowed,
            Err(e) => {
                Stats::bump(&self.shared.stats.hook_failures);
                tracing::warn!(client = %self.entry.id_str, error = %e, "room validator failed");
                return ControlFlow::Continue(());
            }
        };
        // The validator's answer is re-sanitised and limited to what was asked for (reference defect W23).
        for name in room::sanitize(&allowed).iter().filter(|r| rooms.contains(r)) {
            self.shared.registry.join(&self.entry.id, name);
        }
        ControlFlow::Continue(())
    }

    fn leave(&self, requested: &[std::borrow::Cow<'_, str>]) -> Flow {
        for name in requested.iter().filter(|r| **r != *self.entry.id_str) {
            self.shared.registry.leave(&self.entry.id, name);
        }
        ControlFlow::Continue(())
    }

    fn publish(&mut self, room_name: &str, event_name: &str, data: Option<&RawValue>) -> Flow {
        let config = &self.shared.config;
        if !config.allow_client_publish {
            self.reply_error(errors::PUBLISH_NOT_ALLOWED);
            return ControlFlow::Continue(());
        }
        // Own-id rooms are direct channels, never publish targets.
        if room_name == &*self.entry.id_str || !self.entry.is_in(room_name) {
            self.reply_error(errors::NOT_IN_ROOM);
            return ControlFlow::Continue(());
        }
        if !self.entry.room_permitted(room_name) {
            self.reply_error(errors::ROOM_NOT_ALLOWED);
            return ControlFlow::Continue(());
        }
        let data = data.map_or_else(|| RawValue::from_string("null".to_owned()), |d| Ok(d.to_owned()));
        let Ok(data) = data else {
            return ControlFlow::Continue(());
        };
        let exclude = if config.publish_to_self {
            Vec::new()
        } else {
            vec![self.entry.id_str.to_string()]
        };
        let shared = Arc::clone(&self.shared);
        if shared
            .publish_batched(&mut self.pending, room_name, event_name, data, exclude)
            .is_err()
        {
            self.flush_publishes();
            self.reply_error(errors::RESERVED_EVENT);
        }
        ControlFlow::Continue(())
    }

    async fn custom(&self, event_name: &str, data: Option<&RawValue>, id: Option<&RawValue>) -> Flow {
        let Some(handler) = &self.shared.hooks.message_handler else {
            tracing::debug!(client = %self.entry.id_str, "no message handler for custom event");
            return ControlFlow::Continue(());
        };
        let parse = |raw: Option<&RawValue>| raw.and_then(|r| serde_json::from_str::<Value>(r.get()).ok());
        let msg = IncomingMessage {
            client_id: self.entry.id_str.to_string(),
            user_id: self.entry.user_id().map(|u| u.to_string()),
            event: event_name.to_owned(),
            data: parse(data).unwrap_or(Value::Null),
            id: parse(id),
        };
        if let Err(e) = invoke(handler.as_ref(), msg).await {
            Stats::bump(&self.shared.stats.hook_failures);
            tracing::warn!(client = %self.entry.id_str, error = %e, "message handler failed");
        }
        ControlFlow::Continue(())
    }
}

/// A wall-clock time as a monotonic deadline (times in the past are due now).
fn instant_of(at: std::time::SystemTime) -> Instant {
    let left = at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    Instant::now() + left
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn now_iso8601() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    now.format(&format).unwrap_or_default()
}

enum WriteEnd {
    /// Send this close frame.
    Close(CloseCode),
    /// The socket failed; nothing more can be sent.
    Broken,
}

/// Drains the mailbox into the socket until a close, a kill, or a socket error.
async fn write_loop(mut io: WriteIo, mut rx: Receiver, entry: Arc<Entry>, shared: Arc<Shared>) {
    let mut writer = Writer {
        sealer: None,
        buf: BytesMut::new(),
        chunks: VecDeque::new(),
        entry: entry.clone(),
        shared,
    };
    let end = tokio::select! {
        biased;
        _ = entry.mailbox.killed(Task::Writer) => entry.mailbox.close_code().map_or(WriteEnd::Broken, WriteEnd::Close),
        end = writer.pump(&mut io, &mut rx) => end,
    };
    // Refuse further pushes and free what is queued while the close frame goes out.
    drop(rx);
    if let WriteEnd::Close(code) = end {
        // A kill may have cut a write short: what is left of that batch goes first, so that the close frame never
        // lands inside a partly written frame. Boxed: a timer and a write future would otherwise enlarge every
        // idle writer's task.
        let rest = std::mem::take(&mut writer.chunks);
        let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, send_close(&mut io, rest, code))).await;
    }
    // The writer is gone: the reader must stop too.
    entry.mailbox.finish();
}

/// Writes `chunks`, then the close frame for `code`, then shuts the sending direction down.
async fn send_close(io: &mut WriteIo, mut chunks: VecDeque<Chunk>, code: CloseCode) -> std::io::Result<()> {
    let reason = code.reason().as_bytes();
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.code().to_be_bytes());
    payload.extend_from_slice(reason);
    let mut frame = BytesMut::new();
    put_frame(&mut frame, OP_CLOSE, &payload);
    chunks.push_back(Chunk::Own(frame.freeze()));
    write_all(io, &mut chunks).await?;
    io.shutdown().await
}

/// Writes every chunk, oldest first, with vectored writes of up to [`MAX_IOV`] buffers, then flushes (a TLS
/// stream may buffer). A partial write advances the first unwritten chunk in place; nothing is copied. Written
/// chunks leave the queue as they go, so a cancelled call leaves exactly the unwritten bytes behind.
async fn write_all(io: &mut WriteIo, chunks: &mut VecDeque<Chunk>) -> std::io::Result<()> {
    // The slices live on the stack of each poll, never in the future: every writer task stays small.
    std::future::poll_fn(|cx| poll_write_all(Pin::new(&mut *io), cx, chunks)).await?;
    io.flush().await
}

fn poll_write_all(
    mut io: Pin<&mut WriteIo>,
    cx: &mut Context<'_>,
    chunks: &mut VecDeque<Chunk>,
) -> Poll<std::io::Result<()>> {
    while !chunks.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        for (slot, chunk) in slices.iter_mut().zip(chunks.iter()) {
            *slot = IoSlice::new(chunk.bytes());
            n += 1;
        }
        let written = ready!(io.as_mut().poll_write_vectored(cx, slices.get(..n).unwrap_or_default()))?;
        if written == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        consume(chunks, written);
    }
    Poll::Ready(Ok(()))
}

/// Drops the first `n` bytes of `chunks`.
fn consume(chunks: &mut VecDeque<Chunk>, mut n: usize) {
    while n > 0 {
        let Some(front) = chunks.front_mut() else {
            return;
        };
        let len = front.bytes().len();
        if n < len {
            front.advance(n);
            return;
        }
        n -= len;
        chunks.pop_front();
    }
}

/// An outbound message's text before sealing: shared with the other recipients, or this connection's own.
enum Payload {
    Shared(TextFrame),
    Own(Box<str>),
}

/// A piece of the byte stream waiting to be written: a fan-out's frame, shared with the other recipients, or
/// bytes of this connection's own.
enum Chunk {
    Shared(TextFrame),
    Own(Bytes),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Shared(frame) => frame.wire(),
            Self::Own(bytes) => bytes,
        }
    }

    /// Drops the first `n` bytes (fewer than the chunk holds): only after a partial write, so the copy a shared
    /// frame needs here is rare.
    fn advance(&mut self, n: usize) {
        match self {
            Self::Shared(frame) => {
                *self = Self::Own(Bytes::copy_from_slice(frame.wire().get(n..).unwrap_or_default()));
            }
            Self::Own(bytes) => bytes.advance(n),
        }
    }
}

/// Bytes a sealed record adds to its text besides the base64 growth (wsenc/1: the envelope, the nonce and the
/// frame header come to about 90); used only to size the write buffer up front.
const SEALED_OVERHEAD: usize = 96;

struct Writer {
    sealer: Option<Box<dyn Sealer>>,
    /// Where frames of this connection's own are built (sealed records, protocol frames). Consecutive ones are
    /// split off as one chunk, and the buffer's storage is reused once the chunks written from it are freed.
    buf: BytesMut,
    /// Complete frames, or what is left of them, waiting to be written.
    chunks: VecDeque<Chunk>,
    entry: Arc<Entry>,
    shared: Arc<Shared>,
}

impl Writer {
    /// Drains the queue in batches: everything a batch needs sealed is sealed under one permit, then the
    /// batch's frames are written with vectored writes.
    async fn pump(&mut self, io: &mut WriteIo, rx: &mut Receiver) -> WriteEnd {
        let mut batch = VecDeque::new();
        loop {
            rx.recv_all(&mut batch).await;
            let end = self.encode_batch(&mut batch).await;
            if write_all(io, &mut self.chunks).await.is_err() {
                return WriteEnd::Broken;
            }
            if let Some(end) = end {
                return end;
            }
            if rx.is_empty() {
                // Idle: hand the batch buffers and whatever the sealer can rebuild back; most connections are idle
                // most of the time. Under load the queue is rarely empty here, so this costs one rebuild per
                // burst, not per message.
                batch = VecDeque::new();
                self.chunks = VecDeque::new();
                self.buf = BytesMut::new();
                if let Some(sealer) = self.sealer.as_mut() {
                    sealer.idle();
                }
            }
        }
    }

    /// Turns queued items into chunks, in order, up to a close (returned; later items are dropped). The
    /// sealing permit is taken at most once per batch and released before anything is written to the socket.
    async fn encode_batch(&mut self, batch: &mut VecDeque<Outbound>) -> Option<WriteEnd> {
        // The permit borrows the semaphore, not `self`.
        let shared = Arc::clone(&self.shared);
        let mut permit = None;
        if self.sealer.is_some() {
            // A sealed record is about 4/3 of its text plus an envelope: one reservation for the batch instead of a
            // chain of reallocations (each copying what was sealed so far) after every idle spell.
            let text: usize = batch.iter().map(Outbound::text_len).sum();
            self.buf.reserve(text + text / 2 + batch.len() * SEALED_OVERHEAD);
        }
        for item in batch.drain(..) {
            let payload = match item {
                Outbound::Text(frame) if self.shared.hooks.outbound_transformer.is_some() => {
                    // A hook may be slow: never hold the permit across it. Boxed, so that the hook's state does
                    // not enlarge every writer's task.
                    permit = None;
                    match Box::pin(transform(&self.shared, &self.entry, frame.text())).await {
                        Some(None) => Payload::Shared(frame),
                        Some(Some(text)) => Payload::Own(text.into_boxed_str()),
                        None => continue,
                    }
                }
                Outbound::Text(frame) => Payload::Shared(frame),
                Outbound::System(text) => Payload::Own(text),
                Outbound::Raw(bytes) => {
                    self.push_chunk(Chunk::Own(bytes.into()));
                    continue;
                }
                Outbound::Encrypt(sealer) => {
                    self.sealer = Some(sealer);
                    continue;
                }
                Outbound::Ping => {
                    self.push_chunk(Chunk::Own(Bytes::from_static(PING_FRAME)));
                    continue;
                }
                Outbound::Rekey => {
                    if let Some(sealer) = self.sealer.as_mut() {
                        let mark = self.buf.len();
                        let mut frames = Frames::new(&mut self.buf);
                        if let Err(code) = sealer.rekey(&mut frames) {
                            self.buf.truncate(mark);
                            self.flush_own();
                            return Some(WriteEnd::Close(code));
                        }
                        self.shared.metrics.records_out.increment(frames.count());
                    }
                    continue;
                }
                Outbound::Close(code) => {
                    self.flush_own();
                    return Some(WriteEnd::Close(code));
                }
            };
            let Some(sealer) = self.sealer.as_mut() else {
                match payload {
                    // The common case: the fan-out's frame as it is, no copy.
                    Payload::Shared(frame) => self.push_chunk(Chunk::Shared(frame)),
                    Payload::Own(text) => put_frame(&mut self.buf, OP_TEXT, text.as_bytes()),
                }
                continue;
            };
            if permit.is_none() {
                // Bounds sealing work in flight across connections; never held across a socket write. Waiting is
                // rare (the limit is reached) and boxed, so that its state does not enlarge every writer's task.
                permit = Some(match shared.seal_permits.try_acquire() {
                    Ok(p) => Some(p),
                    Err(_) => Box::pin(shared.seal_permits.acquire()).await.ok(),
                });
            }
            let inner = match &payload {
                Payload::Shared(frame) => frame.text(),
                Payload::Own(text) => text,
            };
            let mark = self.buf.len();
            let mut frames = Frames::new(&mut self.buf);
            if let Err(code) = sealer.seal(inner, &mut frames) {
                // What the failed call left in the buffer is never sent; the frames before it are.
                self.buf.truncate(mark);
                self.flush_own();
                return Some(WriteEnd::Close(code));
            }
            self.shared.metrics.records_out.increment(frames.count());
        }
        self.flush_own();
        None
    }

    /// Queues `chunk` behind the frames built so far.
    fn push_chunk(&mut self, chunk: Chunk) {
        self.flush_own();
        self.chunks.push_back(chunk);
    }

    /// Moves the frames built in the buffer so far into the queue as one chunk: a run of sealed records is one
    /// buffer for the vectored write, however many records it holds.
    fn flush_own(&mut self) {
        if !self.buf.is_empty() {
            self.chunks.push_back(Chunk::Own(self.buf.split().freeze()));
        }
    }
}

/// Runs the outbound transformer, if any: `None` drops the message for this recipient, `Some(None)` sends it
/// unchanged, `Some(Some(text))` sends `text` instead.
async fn transform(shared: &Shared, entry: &Entry, text: &str) -> Option<Option<String>> {
    let Some(hook) = &shared.hooks.outbound_transformer else {
        return Some(None);
    };
    let msg = AppMessage::parse(text)?;
    let req = Outgoing {
        client: entry.info(),
        event: msg.event,
        data: msg.data,
    };
    match invoke(hook.as_ref(), req).await {
        Ok(Transformed::Unchanged) => Some(None),
        Ok(Transformed::Replace { event: name, data }) if event::is_valid_application_event(&name) => {
            let raw = serde_json::value::to_raw_value(&data).ok()?;
            Some(Some(outbound::message(&name, Some(&raw))))
        }
        Ok(Transformed::Replace { .. } | Transformed::Drop) => None,
        Err(e) => {
            Stats::bump(&shared.stats.hook_failures);
            tracing::warn!(client = %entry.id_str, error = %e, "outbound transformer failed; message dropped");
            None
        }
    }
}
