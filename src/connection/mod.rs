//! One WebSocket connection, served by one task: the thin async shell around the protocol state machine.
//!
//! [`core::Core`] decides everything (pure code, unit-tested without sockets); this module carries its
//! decisions out. The task drives two halves as one future: the reader (socket → [`Decoder`] → `Core` →
//! actions: replies, hooks, joins, publishes) and the [`writer`] (the connection's [`Mailbox`] queue → seal →
//! vectored writes). Everything bound for the client goes through the queue, so it arrives in the order it was
//! queued, whoever queued it.
//!
//! Idle connections stay small: the socket is read into a stack buffer and the decoder keeps only an incomplete
//! frame, so nothing is held between messages; the rare hook-awaiting paths are boxed so that their state is
//! allocated only while they run.

mod core;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
mod publish;
mod writer;

use std::future::Future;
use std::mem::MaybeUninit;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, ReadBuf, ReadHalf};

use self::core::{Action, AuthAnswer, Core, HandshakeAnswer, Identity, JoinRequest, Membership};
use crate::history::IdKey;
use crate::hooks::{invoke, AuthRequest, Connected, Disconnected, IncomingMessage, RoomRequest, UpgradeRequest};
use crate::limits::Slot;
use crate::mailbox::{Mailbox, Outbound, Task};
use crate::presence::PresenceError;
use crate::protocol::envelope::MAX_TARGET_LEN;
use crate::protocol::event::{self, errors, refusals};
use crate::protocol::frame::{Decoder, Inbound};
use crate::protocol::outbound::StreamPos;
use crate::protocol::{outbound, ClientId, CloseCode, RoomName, Target, UserId};
use crate::registry::{Entry, JoinResult};
use crate::session::HandshakeRequest;
use crate::shared::{SendError, Shared};
use crate::telemetry::{AuthOutcome, HookKind};

/// A client publish ready to go: room, payload, excluded clients, idempotency key.
type Publication = (RoomName, Box<RawValue>, Vec<ClientId>, Option<IdKey>);

/// How long a closing connection may take to get its last frames and the close frame out.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Most bytes read from the socket per call: the stack buffer reads land in (nothing is held between reads).
const MAX_READ: usize = 16 * 1024;

type Flow = ControlFlow<()>;

/// The upgraded connection, as hyper hands it over (plain TCP or whatever the app serves, e.g. TLS).
pub(crate) type Io = TokioIo<Upgraded>;

/// Runs a connection from the upgrade to cleanup. One function, not a chain of async calls: every level of an
/// async call chain keeps its own copy of the arguments in the connection's task, for as long as it lives. For
/// the same reason this is an `async move` block rather than an `async fn`, which would keep each argument twice
/// (as captured, and moved into the body's locals).
#[allow(clippy::manual_async_fn, reason = "an async fn would store its arguments twice")]
pub(crate) fn run(
    on_upgrade: OnUpgrade,
    shared: Arc<Shared>,
    id: ClientId,
    slot: Slot,
    upgrade: Arc<UpgradeRequest>,
) -> impl Future<Output = ()> {
    async move {
        let c = &shared.config;
        // Resolves once the 101 has been sent; an error means the client went away before that. A client that
        // never lets it complete (e.g. stops reading) must not hold its slot beyond the request's time limit.
        // Boxed: a timer inline in the task's future cost every idle encrypted connection 0.5-0.9 KiB of RSS
        // (measured: 4.35/4.79 KiB inline, 3.83 boxed, 3.85 without the timeout).
        let Ok(Ok(upgraded)) = Box::pin(tokio::time::timeout(c.request_head_timeout, on_upgrade)).await else {
            return;
        };
        let (mailbox, rx) = Mailbox::new(
            c.outbound_queue,
            c.max_write_buffer_size,
            shared.clock,
            shared.telemetry.clone(),
        );
        let entry = Entry::new(id, mailbox);
        let (mut read_half, mut write_half) = tokio::io::split(TokioIo::new(upgraded));
        if !shared.registry.insert(entry.clone()) {
            // A duplicate id must never shadow the existing connection.
            writer::refuse(&mut write_half, CloseCode::InternalError).await;
            return;
        }
        shared.telemetry.connection_opened();
        tracing::debug!(client = %entry.id_str, "connected");
        let reading = async {
            let mut reader = Reader {
                core: Core::new(&shared.config, &entry.id_str, Instant::now()),
                decoder: Decoder::new(),
                shared: &shared,
                entry: &entry,
                pending: publish::Pending::default(),
                upgrade: Some(upgrade),
                late_read: None,
            };
            reader.read_loop(&mut read_half).await;
            // Publishes accepted before the connection ended are still delivered.
            reader.flush_publishes();
            // The writer gets the rest of the queue and the close frame out, within a grace period.
            if tokio::time::timeout(CLOSE_GRACE, entry.mailbox.killed(Task::Reader))
                .await
                .is_err()
            {
                entry.mailbox.finish();
            }
        };
        futures_util::future::join(reading, writer::write_loop(write_half, rx, &entry, &shared)).await;
        let (user_id, session) = entry.session();
        shared.registry.remove(&entry);
        let code = entry.mailbox.close_code();
        shared.telemetry.connection_closed(session, code);
        // The connection's limiter slot is released only now, once it has left every index.
        drop(slot);
        tracing::info!(client = %entry.id_str, code = code.map(CloseCode::code), "disconnected");
        if let Some(hook) = &shared.hooks.on_disconnected {
            let ev = Disconnected {
                client_id: entry.id_str.to_string(),
                user_id: user_id.map(|u| u.as_str().to_owned()),
                code: code.map(CloseCode::code),
            };
            if let Err(e) = Box::pin(invoke(hook.as_ref(), ev)).await {
                shared.telemetry.hook_failed(HookKind::OnDisconnected);
                tracing::warn!(client = %entry.id_str, error = %e, "on_disconnected hook failed");
            }
        }
    }
}

impl Membership for Entry {
    fn is_member(&self, room: &str) -> bool {
        self.is_in(room)
    }
}

/// Reads what the socket has into `decoder`, through a stack buffer; resolves with the count (0: end of stream).
async fn read_some(io: &mut ReadHalf<Io>, decoder: &mut Decoder, max: usize) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_some(Pin::new(&mut *io), cx, decoder, max)).await
}

fn poll_read_some(
    io: Pin<&mut ReadHalf<Io>>,
    cx: &mut Context<'_>,
    decoder: &mut Decoder,
    max: usize,
) -> Poll<std::io::Result<usize>> {
    // Lives on the stack of this poll only, never in the connection's future.
    let mut stack = [MaybeUninit::<u8>::uninit(); MAX_READ];
    let mut buf = ReadBuf::uninit(stack.get_mut(..max.clamp(1, MAX_READ)).unwrap_or_default());
    ready!(io.poll_read(cx, &mut buf))?;
    decoder.feed(buf.filled());
    Poll::Ready(Ok(buf.filled().len()))
}

/// The reading half: decodes, asks the core, carries out its actions.
struct Reader<'a> {
    core: Core<'a>,
    decoder: Decoder,
    shared: &'a Shared,
    entry: &'a Arc<Entry>,
    /// Publishes read but not yet delivered locally.
    pending: publish::Pending,
    /// The upgrade request, for the authenticator; given to it (or dropped) with the first `authenticate`.
    upgrade: Option<Arc<UpgradeRequest>>,
    /// The deadline past which one more read was allowed (once per deadline, so a client that keeps sending
    /// cannot hold a deadline off).
    late_read: Option<tokio::time::Instant>,
}

impl Reader<'_> {
    fn mailbox(&self) -> &Mailbox {
        &self.entry.mailbox
    }

    fn flush_publishes(&mut self) {
        self.pending.flush(self.shared);
    }

    async fn read_loop(&mut self, io: &mut ReadHalf<Io>) {
        let read_size = self.shared.config.read_buffer_size;
        loop {
            // Everything already received first.
            loop {
                let item = match self.decoder.next(self.core.max_message_len()) {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = self.close(e.close_code());
                        return;
                    }
                };
                if self.on_item(item).await.is_break() {
                    return;
                }
            }
            // While publishes are held back, more of them join the batch only if they are already here.
            if self.pending.is_some() {
                if let Some(read) = read_some(io, &mut self.decoder, read_size).now_or_never() {
                    if self.after_read(read).is_break() {
                        return;
                    }
                    continue;
                }
            }
            self.flush_publishes();
            // Nothing is waiting: what can be rebuilt need not stay in memory meanwhile.
            self.core.on_idle();
            self.decoder.idle();
            let timer = self.core.poll_timeout().map(tokio::time::Instant::from_std);
            // Reading comes before the timer: when the server falls behind (a reconnect storm), a frame that has
            // been waiting in the socket is the client's answer in time, not a timeout. Past a deadline, one read
            // is allowed (so a client that keeps sending cannot hold the deadline off), then it is enforced.
            if let Some(due) = timer.filter(|t| *t <= tokio::time::Instant::now()) {
                if self.late_read == Some(due) {
                    let action = self.core.on_timeout(Instant::now());
                    if self.act(action).is_break() {
                        return;
                    }
                    continue;
                }
                self.late_read = Some(due);
            }
            let read = tokio::select! {
                biased;
                _ = self.entry.mailbox.killed(Task::Reader) => return,
                read = read_some(io, &mut self.decoder, read_size) => Some(read),
                _ = sleep_until(timer) => None,
            };
            let flow = match read {
                Some(read) => self.after_read(read),
                None => {
                    let action = self.core.on_timeout(Instant::now());
                    self.act(action)
                }
            };
            if flow.is_break() {
                return;
            }
        }
    }

    /// The end of the stream or a read error ends the connection.
    fn after_read(&self, read: std::io::Result<usize>) -> Flow {
        match read {
            Ok(n) if n > 0 => ControlFlow::Continue(()),
            _ => {
                self.mailbox().finish();
                ControlFlow::Break(())
            }
        }
    }

    /// One decoded frame: the core decides, this carries it out.
    async fn on_item(&mut self, item: Inbound) -> Flow {
        let now = Instant::now();
        let entry = self.entry;
        let record = self.core.is_encrypted() && matches!(item, Inbound::Text(_));
        let mut scratch = Vec::new();
        let action = self.core.on_inbound(now, &item, &mut scratch, &**entry);
        if record && !matches!(action, Action::Close(_)) {
            self.shared.telemetry.records_in(1);
        }
        if !matches!(action, Action::Publish { .. }) {
            // Anything else may reach this client or change who receives what: held-back publishes go first.
            self.flush_publishes();
        }
        if self.core.idle(now).is_zero() {
            self.mailbox().touch();
        }
        match action {
            // The hook-awaiting paths are boxed: their state would otherwise sit in every idle connection.
            Action::Authenticate(data) => Box::pin(guarded(entry, self.authenticate(data))).await,
            Action::Refresh(data) => Box::pin(guarded(entry, self.refresh(data))).await,
            Action::ValidateRooms(request) => Box::pin(guarded(entry, self.validate_rooms(request))).await,
            Action::Join(request) => Box::pin(guarded(entry, self.join(request))).await,
            Action::Publish {
                room,
                event,
                data,
                to_self,
                id,
            } if self.shared.publish_awaits(id.is_some()) => {
                let publish = self.publish_awaited(&room, &event, data, to_self, id.as_deref());
                Box::pin(guarded(entry, publish)).await
            }
            Action::Custom { event, data, id } => {
                let msg = self.incoming(&event, data, id);
                Box::pin(guarded(entry, self.custom(msg))).await
            }
            Action::Presence(room) => Box::pin(guarded(entry, self.presence(&room))).await,
            action => self.act(action),
        }
    }

    /// Carries out an action that needs no hook.
    fn act(&mut self, action: Action<'_>) -> Flow {
        match action {
            Action::None => {}
            Action::Reply(message) => self.reply_error(message),
            Action::ReplyTo(message, id) => self.reply_to(message, Some(&id)),
            Action::Close(code) => return self.close(code),
            Action::Fail(message, code) => {
                self.reply_error(message);
                return self.close(code);
            }
            Action::Pong(payload) => {
                self.mailbox().push(Outbound::Pong(payload.to_vec().into_boxed_slice()));
            }
            Action::ClientClosed => {
                self.mailbox().answer_close();
                return ControlFlow::Break(());
            }
            Action::Ping => {
                self.mailbox().push(Outbound::Ping);
            }
            Action::KeyUpdate => self.shared.telemetry.key_update(),
            Action::Rekey => {
                self.mailbox().push(Outbound::Rekey);
                tracing::info!(client = %self.entry.id_str, "credentials refreshed");
            }
            Action::Leave(rooms) => {
                // Looked up by text: a name the client is not in is simply not found.
                for room in &rooms {
                    self.shared.registry.leave(&self.entry.id, room);
                }
            }
            Action::Publish {
                room,
                event,
                data,
                to_self,
                id,
            } => self.publish(&room, &event, data, to_self, id.as_deref()),
            Action::Established(established) => self.establish(*established),
            // Answered inside the hook-awaiting paths.
            Action::Authenticate(_)
            | Action::Handshake(_)
            | Action::Refresh(_)
            | Action::ValidateRooms(_)
            | Action::Join(_)
            | Action::Presence(_)
            | Action::Custom { .. } => {}
        }
        ControlFlow::Continue(())
    }

    fn reply_error(&self, message: &str) {
        self.mailbox().push_system(outbound::error(message));
    }

    /// An error answer to a `publish`: carrying its `id`, when it had one.
    fn reply_to(&self, message: &str, id: Option<&str>) {
        let frame = match id {
            Some(id) => outbound::error_with_id(message, id),
            None => outbound::error(message),
        };
        self.mailbox().push_system(frame);
    }

    fn close(&self, code: CloseCode) -> Flow {
        tracing::info!(client = %self.entry.id_str, code = code.code(), "closing");
        self.mailbox().close_after_pending(code);
        ControlFlow::Break(())
    }

    /// Authenticator, then handshake, within the core's extended window. Credentials are checked before any
    /// handshake work happens.
    async fn authenticate(&mut self, data: Map<String, Value>) -> Flow {
        self.shared.registry.set_authenticating(self.entry);
        let shared = self.shared;
        let started = Instant::now();
        let deadline = self.core.poll_timeout().map(tokio::time::Instant::from_std);
        let action = match sleep_or(deadline, self.establishing(data)).await {
            Some(action) => action,
            None => {
                shared.telemetry.authentication(AuthOutcome::Timeout);
                self.core.on_timeout(Instant::now())
            }
        };
        if let Action::Established(e) = &action {
            shared.telemetry.session_established(e.encrypted(), started.elapsed());
        }
        let flow = self.act(action);
        if flow.is_continue() {
            if let Some(hook) = &shared.hooks.on_connected {
                let ev = Connected {
                    client_id: self.entry.id_str.to_string(),
                    user_id: self.entry.user_id().map(|u| u.to_string()),
                    metadata: self.entry.metadata(),
                };
                // A failing hook is logged; it never turns an established session into an auth failure.
                if let Err(e) = invoke(hook.as_ref(), ev).await {
                    shared.telemetry.hook_failed(HookKind::OnConnected);
                    tracing::warn!(client = %self.entry.id_str, error = %e, "on_connected hook failed");
                }
            }
        }
        flow
    }

    /// The authenticator's and the handshake's answers, fed to the core. Each runs under a slot of its own kind,
    /// held only while it runs: the authenticator may wait on a slow backend (the connect proxy), which must not
    /// keep the handshakes' CPU slots from others.
    async fn establishing(&mut self, data: Map<String, Value>) -> Action<'static> {
        let shared = self.shared;
        let upgrade = self.upgrade.take();
        let Some(auth_slot) = slot(&shared.auth_permits, shared.config.handshake_wait).await else {
            shared.telemetry.handshake_busy();
            return self.core.on_busy();
        };
        let answer = self.run_authenticator(data.clone(), upgrade).await;
        drop(auth_slot);
        let user_sessions = match &answer {
            AuthAnswer::Accepted(Identity {
                user_id: Some(user), ..
            }) => shared.registry.by_user(user.as_str()).len(),
            _ => 0,
        };
        let user_id = match self.core.on_identity(answer, user_sessions) {
            Action::Handshake(user_id) => user_id,
            other => return other,
        };
        let answer = match &shared.handshake {
            None => HandshakeAnswer::None,
            Some(hs) => {
                let Some(_slot) = slot(&shared.handshake_permits, shared.config.handshake_wait).await else {
                    shared.telemetry.handshake_busy();
                    return self.core.on_busy();
                };
                let req = HandshakeRequest {
                    client_id: self.entry.id_str.to_string(),
                    user_id: user_id.as_ref().map(|u| u.as_str().to_owned()),
                    data,
                };
                match invoke(hs.as_ref(), req).await {
                    Ok(outcome) => HandshakeAnswer::Outcome(outcome),
                    Err(e) => {
                        shared.telemetry.hook_failed(HookKind::Handshake);
                        tracing::warn!(client = %self.entry.id_str, error = %e, "handshake failed");
                        HandshakeAnswer::Failed
                    }
                }
            }
        };
        let action = self.core.on_handshake(Instant::now(), answer);
        if matches!(action, Action::Fail(..)) {
            shared.telemetry.handshake_rejected();
        }
        action
    }

    /// Runs the authenticator and counts its answer.
    async fn run_authenticator(&self, data: Map<String, Value>, upgrade: Option<Arc<UpgradeRequest>>) -> AuthAnswer {
        let shared = self.shared;
        let req = AuthRequest {
            client_id: self.entry.id_str.to_string(),
            data,
            upgrade,
        };
        match invoke(shared.authenticator.as_ref(), req).await {
            Ok(Some(identity)) => {
                // The edge where the application's user id becomes a `UserId`: one that no instance could address
                // (empty, or longer than the bus accepts) is the authenticator's failure, not an anonymous session.
                let user_id = match identity.user_id.as_deref().map(UserId::parse) {
                    None => None,
                    Some(Some(user)) => Some(user),
                    Some(None) => {
                        shared.telemetry.authentication(AuthOutcome::Error);
                        tracing::warn!(
                            client = %self.entry.id_str,
                            "authenticator answered with an unusable user id (empty or over {MAX_TARGET_LEN} bytes)"
                        );
                        return AuthAnswer::Failed;
                    }
                };
                shared.telemetry.authentication(AuthOutcome::Accepted);
                AuthAnswer::Accepted(Identity {
                    user_id,
                    metadata: identity.metadata,
                    expires: identity.expires_at.map(instant_of),
                    rooms: identity.rooms,
                })
            }
            Ok(None) => {
                shared.telemetry.authentication(AuthOutcome::Rejected);
                AuthAnswer::Rejected
            }
            Err(e) => {
                shared.telemetry.authentication(AuthOutcome::Error);
                tracing::warn!(client = %self.entry.id_str, error = %e, "authenticator failed");
                AuthAnswer::Failed
            }
        }
    }

    /// `connected`, then the sealer for everything after it, then the routing table.
    fn establish(&mut self, e: core::Established) {
        let shared = self.shared;
        let encrypted = e.encrypted();
        let connected = outbound::connected(
            &self.entry.id_str,
            e.user_id.as_ref().map(UserId::as_str),
            &now_iso8601(),
            e.connected_fields,
        );
        // `connected` is the last plaintext frame; the sealer takes over right behind it in the same queue.
        self.mailbox().push_system(connected);
        if let Some(sealer) = e.sealer {
            if sealer.room_keys() {
                self.entry.set_room_keys(sealer.room_batch_limit() > 1);
            }
            self.mailbox().push(Outbound::Encrypt(sealer));
        }
        let rooms: Vec<RoomName> = e.rooms.iter().filter_map(|r| RoomName::parse(r)).collect();
        shared
            .registry
            .authenticate(self.entry, e.user_id, e.metadata, encrypted, &rooms);
        tracing::info!(client = %self.entry.id_str, encrypted, "authenticated");
    }

    /// Fresh credentials for the same user: extend the session and rotate the outbound keys.
    async fn refresh(&mut self, data: Map<String, Value>) -> Flow {
        let shared = self.shared;
        let answer = match slot(&shared.auth_permits, shared.config.handshake_wait).await {
            Some(_slot) => self.run_authenticator(data, None).await,
            // The session stays up on its current credentials; the client may try again.
            None => AuthAnswer::Failed,
        };
        let action = self.core.on_refresh(answer);
        self.act(action)
    }

    /// Joins the rooms the core allowed (recovering those asked for) and answers `joined`, with every refusal and
    /// its reason. Replayed messages are queued before the answer.
    async fn join(&mut self, request: JoinRequest) -> Flow {
        let mut refused = request.refused;
        let mut joined = Vec::with_capacity(request.rooms.len());
        for name in request.rooms {
            // The core checked these names are joinable; each becomes a `RoomName` here, once.
            let Some(room) = RoomName::parse(&name) else {
                refused.push((name, refusals::INVALID_ROOM_NAME));
                continue;
            };
            let recover = request
                .recover
                .iter()
                .find(|r| r.room == name)
                .map(|r| (r.offset, r.epoch.as_str()));
            let target = Target::Room(room.clone());
            let j = self
                .shared
                .join_room_awaited(&self.entry.id, &self.entry.mailbox, room, recover)
                .await;
            if matches!(j.result, JoinResult::Joined) {
                // `joined` promises delivery from here on: the bus must carry the room to this instance first.
                self.shared.await_subscribed(&target).await;
            }
            match j.result {
                JoinResult::Joined | JoinResult::AlreadyMember => joined.push(outbound::JoinedRoom {
                    room: name,
                    position: j.position.map(|p| (p.offset, p.epoch)),
                    recovered: j.recovered,
                }),
                JoinResult::RoomLimit => refused.push((name, refusals::TOO_MANY_ROOMS)),
                JoinResult::NotAuthenticated | JoinResult::UnknownClient => {
                    refused.push((name, refusals::ROOM_REFUSED))
                }
            }
        }
        self.mailbox().push_system(outbound::joined(&joined, &refused));
        ControlFlow::Continue(())
    }

    async fn validate_rooms(&mut self, request: JoinRequest) -> Flow {
        let rooms = &request.rooms;
        let shared = self.shared;
        let allowed = match &shared.hooks.room_validator {
            None => {
                tracing::debug!(client = %self.entry.id_str, "join refused: no room validator configured");
                None
            }
            Some(validator) => {
                let req = RoomRequest {
                    client_id: self.entry.id_str.to_string(),
                    user_id: self.entry.user_id().map(|u| u.to_string()),
                    metadata: self.entry.metadata(),
                    rooms: rooms.clone(),
                };
                match invoke(validator.as_ref(), req).await {
                    Ok(allowed) => Some(allowed),
                    Err(e) => {
                        shared.telemetry.hook_failed(HookKind::RoomValidator);
                        tracing::warn!(client = %self.entry.id_str, error = %e, "room validator failed");
                        None
                    }
                }
            }
        };
        match self.core.on_rooms_validated(request, allowed) {
            Action::Join(request) => self.join(request).await,
            action => self.act(action),
        }
    }

    /// What a client publish becomes: the room (the client is a member, the core checked, so this is a room's
    /// name: made a `RoomName` once, here), the payload, who is excluded, the idempotency key.
    fn publication(&self, room: &str, data: Option<&RawValue>, to_self: bool, id: Option<&str>) -> Option<Publication> {
        let room = RoomName::parse(room)?;
        let data = data.map_or_else(|| RawValue::from_string("null".to_owned()), |d| Ok(d.to_owned()));
        let exclude = if to_self { Vec::new() } else { vec![self.entry.id] };
        let key = id.map(|id| IdKey {
            who: self.key_owner(),
            room: room.clone(),
            id: id.into(),
        });
        Some((room, data.ok()?, exclude, key))
    }

    fn publish(&mut self, room: &str, event: &str, data: Option<&RawValue>, to_self: bool, id: Option<&str>) {
        let Some((room, data, exclude, key)) = self.publication(room, data, to_self, id) else {
            return;
        };
        let shared = self.shared;
        if key.is_none() && !shared.has_history(room.as_str()) {
            // Nothing to answer and no offset to assign: delivered in a batch with the publishes around it.
            if self.pending.push(shared, room, event, data, exclude).is_err() {
                self.flush_publishes();
                self.reply_error(errors::RESERVED_EVENT);
            }
            return;
        }
        self.flush_publishes();
        let published = shared.publish_room(room, event, data, exclude, key);
        self.answer_publish(published, id);
    }

    /// A publish whose answer needs the history store (Redis): awaited in line, so the client's frames and
    /// answers stay in order.
    async fn publish_awaited(
        &mut self,
        room: &str,
        event: &str,
        data: Option<&RawValue>,
        to_self: bool,
        id: Option<&str>,
    ) -> Flow {
        if let Some((room, data, exclude, key)) = self.publication(room, data, to_self, id) {
            let published = self.shared.publish_room_acked(room, event, data, exclude, key).await;
            self.answer_publish(published, id);
        }
        ControlFlow::Continue(())
    }

    fn answer_publish(&self, published: Result<crate::history::Published, SendError>, id: Option<&str>) {
        match published {
            Ok(published) => {
                if let Some(id) = id {
                    let at = published.position.as_ref().map(|p| StreamPos {
                        offset: p.offset,
                        epoch: &p.epoch,
                    });
                    self.mailbox().push_system(outbound::ack(id, at));
                }
            }
            Err(SendError::Unavailable) => self.reply_to(errors::PUBLISH_FAILED, id),
            Err(_) => self.reply_to(errors::RESERVED_EVENT, id),
        }
    }

    /// Whose publish ids these are: the user's (the same across sessions and instances), or for an anonymous
    /// session the connection's.
    fn key_owner(&self) -> std::sync::Arc<str> {
        match self.entry.user_id() {
            Some(user) => format!("u:{}", user.as_str()).into(),
            None => format!("c:{}", self.entry.id_str).into(),
        }
    }

    fn incoming(&self, event: &str, data: Option<&RawValue>, id: Option<&RawValue>) -> IncomingMessage {
        let parse = |raw: Option<&RawValue>| raw.and_then(|r| serde_json::from_str::<Value>(r.get()).ok());
        IncomingMessage {
            client_id: self.entry.id_str.to_string(),
            user_id: self.entry.user_id().map(|u| u.to_string()),
            event: event.to_owned(),
            data: parse(data).unwrap_or(Value::Null),
            id: parse(id),
        }
    }

    /// Answers a `presence` query (the core checked membership and `presence_rooms`), through the queue like
    /// every other frame: sealed on an encrypted session.
    async fn presence(&self, room: &str) -> Flow {
        let frame = match RoomName::parse(room) {
            Some(room) => match self.shared.presence(&room).await {
                Ok(answer) => match RawValue::from_string(answer.to_json()) {
                    Ok(data) => outbound::message(event::PRESENCE, Some(&data)),
                    Err(_) => outbound::error(errors::PRESENCE_UNAVAILABLE),
                },
                Err(PresenceError::Unavailable) => outbound::error(errors::PRESENCE_UNAVAILABLE),
                Err(_) => outbound::error(errors::PRESENCE_NOT_ENABLED),
            },
            None => outbound::error(errors::NOT_IN_ROOM),
        };
        self.mailbox().push_system(frame);
        ControlFlow::Continue(())
    }

    async fn custom(&mut self, msg: IncomingMessage) -> Flow {
        let Some(handler) = &self.shared.hooks.message_handler else {
            tracing::debug!(client = %self.entry.id_str, "no message handler for custom event");
            return ControlFlow::Continue(());
        };
        if let Err(e) = invoke(handler.as_ref(), msg).await {
            self.shared.telemetry.hook_failed(HookKind::MessageHandler);
            tracing::warn!(client = %self.entry.id_str, error = %e, "message handler failed");
        }
        ControlFlow::Continue(())
    }
}

/// Runs a hook-awaiting step, abandoning it if the connection is killed meanwhile (a hook may be slow).
async fn guarded(entry: &Entry, step: impl std::future::Future<Output = Flow>) -> Flow {
    tokio::select! {
        biased;
        _ = entry.mailbox.killed(Task::Reader) => ControlFlow::Break(()),
        flow = step => flow,
    }
}

/// A permit of `permits`, or `None` when none frees within `wait`.
async fn slot(permits: &tokio::sync::Semaphore, wait: Duration) -> Option<tokio::sync::SemaphorePermit<'_>> {
    tokio::time::timeout(wait, permits.acquire()).await.ok()?.ok()
}

/// A wall-clock time as a monotonic deadline (times in the past are due now).
fn instant_of(at: std::time::SystemTime) -> Instant {
    let left = at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    Instant::now() + left
}

fn now_iso8601() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    now.format(&format).unwrap_or_default()
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `fut`'s output, or `None` once `deadline` passed first.
async fn sleep_or<T>(deadline: Option<tokio::time::Instant>, fut: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::select! {
        out = fut => Some(out),
        () = sleep_until(deadline) => None,
    }
}
