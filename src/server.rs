//! The server: builder, shared state, the public handle and the axum router.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::bus::RedisBus;
use crate::bus::{Bus, Deliver, Inbox, LocalBus};
use crate::client_info::ClientInfo;
use crate::config::{Config, ConfigError};
use crate::crypto::StaticKeySet;
use crate::history::{HistoryError, HistoryPage, IdKey, Published, StreamPosition};
use crate::hooks::{Authenticator, Hook, UpgradeRequest};
use crate::limits::{Accepted, ConnectionLimits, Refusal};
use crate::presence::{LocalPresence, Presence, PresenceError};
use crate::protocol::{room, ClientId, CloseCode, RoomName, Target, UserId};
use crate::registry::{JoinResult, Registry};
use crate::session::Handshake;
use crate::shared::{check_event, HistoryStore, Hooks, PresenceStore, SendError, Shared};
use crate::telemetry::{StatsSnapshot, Telemetry};
use crate::wsenc::{SharedKeys, WsEnc1};

fn raw_json<T: Serialize + ?Sized>(data: &T) -> Result<Box<RawValue>, SendError> {
    Ok(serde_json::value::to_raw_value(data)?)
}

/// An idempotency key of the server's API (the `Server` methods and the HTTP API share one namespace).
pub(crate) fn server_key(room: &RoomName, key: &str) -> Result<IdKey, SendError> {
    IdKey::of_server(room, key).ok_or(SendError::InvalidIdempotencyKey)
}

/// The client ids of an `exclude` list; text that is not a client id could never match one and is left out.
fn exclude_ids(exclude: &[&str]) -> Vec<ClientId> {
    exclude.iter().filter_map(|id| ClientId::parse(id)).collect()
}

/// Why a key reload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The server was built without [`ServerBuilder::static_keys`], so there is no key set to replace.
    #[error("this server has no static keys to replace (build it with ServerBuilder::static_keys)")]
    NoStaticKeys,
}

/// Why a server-side room change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// No such connection on this instance (also when the id is not a client id at all).
    #[error("no such client on this instance")]
    UnknownClient,
    /// The client has not finished authenticating.
    #[error("client is not authenticated yet")]
    NotAuthenticated,
    /// The name is empty, too long, starts with `ws:` or is shaped like a client id.
    #[error("room name is not joinable (1-256 bytes, no 'ws:' prefix, not a UUID)")]
    InvalidName,
    /// The client is already in `max_rooms_per_client` rooms.
    #[error("client is in too many rooms")]
    RoomLimit,
}

/// A running sealcast server: the routing handle and the source of the axum [`Router`]. Cheap to clone.
///
/// Every `send_*` method delivers to this instance's clients at once and publishes to the bus so other instances
/// deliver to theirs (with the embedded bus and one instance, that is a no-op).
///
/// Ids are taken as text and checked here, once: a client id must be a [`ClientId`] (a UUID, as sent in
/// `connected`), a user id a [`UserId`] and a room a [`RoomName`] (1 to
/// [`MAX_TARGET_LEN`](crate::protocol::envelope::MAX_TARGET_LEN) bytes each). Sending to text that is none of
/// these is not an error: like sending to a client that has gone, it reaches nobody (and nothing is published);
/// the event name and the payload are still checked. `exclude` entries that are not client ids are ignored.
///
/// ```no_run
/// use sealcast::{Identity, Server};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let keys = sealcast::crypto::StaticKeySet::new(sealcast::crypto::StaticKey::generate()?);
/// let server = Server::builder()
///     .static_keys(keys)
///     .authenticator(|req: sealcast::AuthRequest| async move {
///         let ok = req.data.get("token").and_then(|t| t.as_str()) == Some("let-me-in");
///         Ok(ok.then(|| Identity::user("alice")))
///     })
///     .build()?;
/// let app = axum::Router::new().merge(server.router());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let stopper = server.clone();
/// // Peer addresses feed the per-IP limits.
/// let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
/// axum::serve(listener, service)
///     .with_graceful_shutdown(async move { stopper.shutdown().await })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("server_id", &self.shared.server_id)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Starts configuring a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The axum router serving the WebSocket endpoint at the configured path (and, with static keys,
    /// `/.well-known/sealcast.json`). It carries its own state, so it merges into an app of any state `S`.
    ///
    /// Serve the app with `into_make_service_with_connect_info::<SocketAddr>()`: without peer addresses the
    /// per-IP limits cannot apply (the server logs a warning at the first connection) and
    /// [`UpgradeRequest::peer_addr`](crate::UpgradeRequest::peer_addr) is `None`.
    pub fn router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let mut router = Router::new().route(&self.shared.config.path, get(upgrade));
        if self.shared.static_keys.is_some() {
            router = router.route("/.well-known/sealcast.json", get(well_known));
        }
        router.with_state(self.shared.clone())
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// This instance's id (a UUID), as written into bus envelopes.
    pub fn server_id(&self) -> &str {
        &self.shared.server_id
    }

    /// The effective configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The server's bus entry point, for feeding envelopes from a custom transport or a test.
    pub fn inbox(&self) -> Inbox {
        Inbox::new(
            self.shared.server_id.clone(),
            Arc::downgrade(&self.shared) as Weak<dyn Deliver>,
        )
    }

    /// Replaces the wsenc/1 static key set at runtime (e.g. on SIGHUP): handshakes that start afterwards use
    /// `keys` and `/.well-known/sealcast.json` lists them; sessions already established keep their session keys
    /// and continue. Applies to the bundled [`WsEnc1`] handshake; a custom [`ServerBuilder::handshake`] only
    /// sees the new keys on the well-known endpoint.
    ///
    /// ```
    /// use sealcast::crypto::{StaticKey, StaticKeySet};
    /// use sealcast::{Identity, Server};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = Server::builder()
    ///     .static_keys(StaticKeySet::new(StaticKey::generate()?))
    ///     .authenticator(|_req: sealcast::AuthRequest| async move { Ok(Some(Identity::user("alice"))) })
    ///     .build()?;
    /// let next = StaticKey::generate()?;
    /// let kid = next.kid_b64u();
    /// server.reload_static_keys(StaticKeySet::new(next))?;
    /// assert_eq!(server.static_keys().map(|k| k.current().kid_b64u()), Some(kid));
    /// # Ok(()) }
    /// ```
    pub fn reload_static_keys(&self, keys: StaticKeySet) -> Result<(), ReloadError> {
        let cell = self.shared.static_keys.as_ref().ok_or(ReloadError::NoStaticKeys)?;
        cell.replace(Arc::new(keys));
        tracing::info!("static keys replaced");
        Ok(())
    }

    /// The wsenc/1 static key set new handshakes use, if the server has one.
    pub fn static_keys(&self) -> Option<Arc<StaticKeySet>> {
        self.shared.static_keys.as_ref().map(SharedKeys::current)
    }

    /// Current counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.telemetry.snapshot()
    }

    /// True while the server accepts connections and its bus is delivering.
    pub fn is_ready(&self) -> bool {
        !self.shared.shutdown.is_cancelled() && self.shared.bus.is_ready()
    }

    /// Sends to one connection, wherever it is connected. A client on this instance is served directly, without
    /// a bus round trip. Text that is not a client id reaches nobody (see the type's docs).
    pub fn send_to_client<T: Serialize + ?Sized>(
        &self,
        client_id: &str,
        event: &str,
        data: &T,
    ) -> Result<(), SendError> {
        let data = raw_json(data)?;
        match ClientId::parse(client_id) {
            Some(id) => self.emit_to_client(id, event, data),
            None => check_event(event),
        }
    }

    fn emit_to_client(&self, id: ClientId, event: &str, data: Box<RawValue>) -> Result<(), SendError> {
        let local = self.shared.registry.get(&id).is_some();
        self.shared
            .emit(Target::Client(id), event, data, Vec::new(), !local)
            .map(drop)
    }

    /// Sends to every session of a user, on every instance. An empty or oversized user id reaches nobody (see the
    /// type's docs).
    pub fn send_to_user<T: Serialize + ?Sized>(&self, user_id: &str, event: &str, data: &T) -> Result<(), SendError> {
        let data = raw_json(data)?;
        match UserId::parse(user_id) {
            Some(user) => self
                .shared
                .emit(Target::User(user), event, data, Vec::new(), true)
                .map(drop),
            None => check_event(event),
        }
    }

    /// Sends to every member of a room on every instance, except the clients in `exclude`. An empty or oversized
    /// room name reaches nobody (see the type's docs).
    pub fn send_to_room<T: Serialize + ?Sized>(
        &self,
        room: &str,
        event: &str,
        data: &T,
        exclude: &[&str],
    ) -> Result<(), SendError> {
        let data = raw_json(data)?;
        match RoomName::parse(room) {
            Some(room) => self.emit_to_room(room, event, data, exclude_ids(exclude)),
            None => check_event(event),
        }
    }

    fn emit_to_room(
        &self,
        room: RoomName,
        event: &str,
        data: Box<RawValue>,
        exclude: Vec<ClientId>,
    ) -> Result<(), SendError> {
        self.shared
            .emit(Target::Room(room), event, data, exclude, true)
            .map(drop)
    }

    /// Publishes to a room on every instance, like [`Self::send_to_room`], and tells what it came to: in a room with
    /// history (`history_rooms`) the message's offset and epoch. With an `idempotency_key` (1 to 64 bytes), a
    /// publish whose key was already used for this room within `history_ttl` (through this method or the HTTP
    /// API's `idempotency_key`, on any instance sharing the bus's store) is not delivered again, and the answer
    /// is the original one with [`Published::duplicate`] set.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        room: &str,
        event: &str,
        data: &T,
        idempotency_key: Option<&str>,
    ) -> Result<Published, SendError> {
        let data = raw_json(data)?;
        let room = RoomName::parse(room).ok_or(SendError::InvalidRoom)?;
        let key = idempotency_key.map(|k| server_key(&room, k)).transpose()?;
        self.shared.publish_room_acked(room, event, data, Vec::new(), key).await
    }

    /// A room's history (the room must match `history_rooms`): with `since`, the messages after that position,
    /// oldest first ([`HistoryError::Unrecoverable`] if the window no longer holds all of them); without, the
    /// latest ones. At most `limit` messages, and never more than `history_size`.
    pub async fn history(
        &self,
        room: &str,
        since: Option<&StreamPosition>,
        limit: Option<usize>,
    ) -> Result<HistoryPage, HistoryError> {
        let room = RoomName::parse(room).ok_or(HistoryError::InvalidRoom)?;
        self.shared.history_page_awaited(&room, since, limit).await
    }

    /// Who is in `room` (it must match `presence_rooms`): its members on every instance sharing the bus (at most
    /// `presence_max_members` of them, in no particular order), with exact `clients` and `users` counts. On the
    /// Redis bus this instance's own joins and leaves are always included; see docs/presence.md.
    pub async fn presence(&self, room: &str) -> Result<Presence, PresenceError> {
        let room = RoomName::parse(room).ok_or(PresenceError::InvalidRoom)?;
        self.shared.presence(&room).await
    }

    /// Sends to every authenticated client on every instance, except the clients in `exclude`.
    pub fn broadcast<T: Serialize + ?Sized>(&self, event: &str, data: &T, exclude: &[&str]) -> Result<(), SendError> {
        self.shared
            .emit(Target::Broadcast, event, raw_json(data)?, exclude_ids(exclude), true)
            .map(drop)
    }

    /// The reference's `send`: no destination broadcasts; otherwise the destination is resolved as a local client
    /// id, then a local room, then — not known here — a client id if it is shaped like one (client ids are UUIDs
    /// and UUID-shaped room names are reserved), else a room.
    pub fn send<T: Serialize + ?Sized>(
        &self,
        destination: Option<&str>,
        topic: &str,
        data: &T,
    ) -> Result<(), SendError> {
        let Some(dest) = destination else {
            return self.broadcast(topic, data, &[]);
        };
        let data = raw_json(data)?;
        let client = ClientId::parse(dest);
        let is_local_client = client.is_some_and(|id| self.shared.registry.get(&id).is_some());
        let client_shaped = !self.shared.registry.has_room(dest) && room::is_client_id_shaped(dest);
        match (client, RoomName::parse(dest)) {
            (Some(id), _) if is_local_client || client_shaped => self.emit_to_client(id, topic, data),
            (_, Some(room)) => self.emit_to_room(room, topic, data, Vec::new()),
            (_, None) => check_event(topic),
        }
    }

    /// Adds a local, authenticated client to a room (no validator involved: this is the server's decision).
    /// A `client_id` that is not a client id is [`RoomError::UnknownClient`]; a room name that is not joinable
    /// ([`room::is_joinable`]) is [`RoomError::InvalidName`].
    pub fn join_room(&self, client_id: &str, room_name: &str) -> Result<(), RoomError> {
        let room = RoomName::parse(room_name)
            .filter(|_| room::is_joinable(room_name))
            .ok_or(RoomError::InvalidName)?;
        let id = ClientId::parse(client_id).ok_or(RoomError::UnknownClient)?;
        match self.shared.registry.join(&id, room) {
            JoinResult::Joined | JoinResult::AlreadyMember => Ok(()),
            JoinResult::NotAuthenticated => Err(RoomError::NotAuthenticated),
            JoinResult::RoomLimit => Err(RoomError::RoomLimit),
            JoinResult::UnknownClient => Err(RoomError::UnknownClient),
        }
    }

    /// Removes a local client from a room. A client cannot leave the room named after its own id. Returns
    /// whether it was a member (false too when `client_id` is not a client id).
    pub fn leave_room(&self, client_id: &str, room_name: &str) -> bool {
        match ClientId::parse(client_id) {
            Some(id) if id.to_string() != room_name => self.shared.registry.leave(&id, room_name),
            _ => false,
        }
    }

    /// Every connection on this instance, authenticated or not.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.shared.registry.all().iter().map(|e| e.info()).collect()
    }

    /// One connection on this instance (`None` too when `client_id` is not a client id).
    pub fn client(&self, client_id: &str) -> Option<ClientInfo> {
        let id = ClientId::parse(client_id)?;
        self.shared.registry.get(&id).map(|e| e.info())
    }

    /// The local sessions of a user.
    pub fn clients_by_user(&self, user_id: &str) -> Vec<ClientInfo> {
        self.shared.registry.by_user(user_id).iter().map(|e| e.info()).collect()
    }

    /// The local members of a room.
    pub fn clients_by_room(&self, room_name: &str) -> Vec<ClientInfo> {
        self.shared
            .registry
            .by_room(room_name)
            .iter()
            .map(|e| e.info())
            .collect()
    }

    /// Closes a local connection with `code` after what is already queued for it. False if unknown (or if
    /// `client_id` is not a client id).
    pub fn disconnect(&self, client_id: &str, code: CloseCode) -> bool {
        ClientId::parse(client_id)
            .and_then(|id| self.shared.registry.get(&id))
            .is_some_and(|e| e.mailbox.close_after_pending(code))
    }

    /// Closes a client's or a user's connections on every instance with 1008 (policy violation: the operator
    /// removed the session) after what is already queued for them. Returns how many were closed locally.
    pub fn disconnect_everywhere(&self, target: &Target) -> usize {
        self.shared.disconnect_target(target, true)
    }

    /// Graceful shutdown: refuses new connections, closes every client 1001 after its queued messages, waits for
    /// the connection tasks (disconnect hooks included) up to `shutdown_timeout`, then detaches from the bus.
    /// Safe to call more than once.
    pub async fn shutdown(&self) {
        let s = &self.shared;
        s.shutdown.cancel();
        for e in s.registry.all() {
            e.mailbox.close_after_pending(CloseCode::ShuttingDown);
        }
        s.tracker.close();
        if tokio::time::timeout(s.config.shutdown_timeout, s.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown timeout: aborting remaining connections");
            for e in s.registry.all() {
                e.mailbox.kill_with(CloseCode::ShuttingDown);
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), s.tracker.wait()).await;
        }
        if let PresenceStore::Redis(p) = &s.presence_store {
            // Every client has left by now: their leaves are written (and `member_left` sent) before the bus stops.
            p.shutdown().await;
        }
        s.bus.shutdown(&s.server_id).await;
    }

    /// Resolves when [`Server::shutdown`] has been called (handy for `with_graceful_shutdown`).
    pub async fn stopped(&self) {
        self.shared.shutdown.cancelled().await;
    }
}

async fn well_known(State(shared): State<Arc<Shared>>) -> Response {
    match &shared.static_keys {
        Some(keys) => axum::Json(crate::wsenc::well_known(&keys.current())).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The client's address, when the server is served with connect info (needed for per-IP limits).
struct PeerAddr(Option<std::net::SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0),
        ))
    }
}

/// Browser requests carry `Origin`; it must be allow-listed when a list is configured.
fn origin_allowed(config: &Config, parts_origin: Option<&axum::http::HeaderValue>) -> bool {
    match parts_origin {
        None => true,
        Some(_) if config.allowed_origins.is_empty() => true,
        Some(origin) => origin
            .to_str()
            .is_ok_and(|o| config.allowed_origins.iter().any(|a| a == o)),
    }
}

/// True if the comma-separated header `name` lists `token` (case-insensitively).
fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Checks an RFC 6455 opening handshake and returns the `Sec-WebSocket-Accept` value, or why it is refused
/// (all 400, as axum's `WebSocketUpgrade` answered).
fn check_handshake(headers: &HeaderMap) -> Result<HeaderValue, &'static str> {
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err("Connection header did not include 'upgrade'");
    }
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err("`Upgrade` header did not include 'websocket'");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        return Err("WebSocket version not supported");
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err("`Sec-WebSocket-Key` header missing");
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    HeaderValue::from_str(&accept).map_err(|_| "invalid `Sec-WebSocket-Key`")
}

/// The WebSocket endpoint. The upgrade is done here rather than by axum's `WebSocketUpgrade`, so that the
/// connection owns the raw upgraded stream: its writer sends pre-framed bytes with vectored writes and its reader
/// decodes frames itself (`protocol::frame`), TLS or not, whatever the app serves.
async fn upgrade(
    State(shared): State<Arc<Shared>>,
    PeerAddr(peer): PeerAddr,
    mut req: axum::extract::Request,
) -> Response {
    if peer.is_none() {
        shared.peerless.call_once(|| {
            tracing::warn!(
                "per-IP connection limits are off: the server does not see peer addresses; serve the app with \
                 `Server::serve` or `into_make_service_with_connect_info::<SocketAddr>()`"
            );
        });
    }
    let accept = match check_handshake(req.headers()) {
        Ok(accept) => accept,
        Err(refusal) => return (StatusCode::BAD_REQUEST, refusal).into_response(),
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "WebSocket request couldn't be upgraded since no upgrade state was present",
        )
            .into_response();
    };
    if shared.shutdown.is_cancelled() {
        shared.telemetry.refused("shutdown");
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let c = &shared.config;
    if !origin_allowed(c, req.headers().get(header::ORIGIN)) {
        shared.telemetry.refused("origin");
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    // A socket accepted by `Server::serve` was counted then; under `axum::serve` it is counted now.
    let claimed = match req.extensions().get::<Accepted>().and_then(Accepted::take) {
        Some(slot) => Ok(slot),
        None => shared.limits.acquire(peer.map(|p| p.ip()), Instant::now()),
    };
    let slot = match claimed {
        Ok(slot) => slot,
        Err(refusal) => {
            shared.telemetry.refused(refusal.reason());
            let answer = match refusal {
                Refusal::Global => (StatusCode::SERVICE_UNAVAILABLE, "too many connections"),
                Refusal::PerIp => (StatusCode::TOO_MANY_REQUESTS, "too many connections from this address"),
                Refusal::Rate => (StatusCode::TOO_MANY_REQUESTS, "connecting too fast"),
            };
            return answer.into_response();
        }
    };
    let id = ClientId::random();
    // The authenticator may use the request (a session cookie, say); the response needs none of its headers.
    let query = req.uri().query().map(str::to_owned);
    let request = Arc::new(UpgradeRequest::new(std::mem::take(req.headers_mut()), query, peer));
    let tracker = shared.tracker.clone();
    tracker.spawn(crate::connection::run(on_upgrade, shared, id, slot, request));
    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    res
}

/// Configures a [`Server`]. Defaults are those of [`Config::default`].
#[derive(Default)]
pub struct ServerBuilder {
    config: Config,
    hooks: Hooks,
    authenticator: Option<Arc<Authenticator>>,
    handshake: Option<Arc<Handshake>>,
    static_keys: Option<SharedKeys>,
    bus: Option<Arc<dyn Bus>>,
    /// The bus's history store, when the bus has one.
    history: Option<HistoryStore>,
    /// The bus's kind, for presence: the embedded bus, Redis, or another (which keeps no presence).
    presence_bus: PresenceBus,
}

#[derive(Default)]
enum PresenceBus {
    #[default]
    Local,
    Redis(RedisBus),
    Other,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident : $ty:ty),* $(,)?) => {
        $( $(#[$doc])* pub fn $name(mut self, value: $ty) -> Self { self.config.$name = value; self } )*
    };
}

impl ServerBuilder {
    setters! {
        /// WebSocket path (default `/ws`).
        path: String,
        /// Rooms joined after authentication (default `ws-default`, `ws-notification`).
        default_rooms: Vec<String>,
        /// Authentication window (default 5 s; ×3 while authenticating and handshaking).
        auth_timeout: Duration,
        /// How often each authenticated client is pinged (default 30 s).
        heartbeat_interval: Duration,
        /// Silence after which an authenticated client is closed 4002 (default 90 s).
        heartbeat_timeout: Duration,
        /// Concurrent sealing operations across connections, and apart from them outbound-transformer calls
        /// (default 10).
        encrypted_batch_limit: usize,
        /// Require an encrypted session, closing 4004 otherwise (default on).
        require_encryption: bool,
        /// wsenc/1 records per epoch before a key update (default 2^20).
        max_records_per_epoch: u64,
        /// wsenc/1 group records (§11, batched §11.4) for clients that advertise them (default on).
        room_keys: bool,
        /// Largest inbound message after authentication (default 128 KiB).
        max_payload_length: usize,
        /// Largest inbound message before authentication (default 8 KiB).
        max_preauth_payload_length: usize,
        /// Outbound queue length per connection before a 4007 close (default 1,024).
        outbound_queue: usize,
        /// A WebSocket ping every `heartbeat_interval` (default on).
        send_pings: bool,
        /// Allow clients to `publish` to joined rooms (default off).
        allow_client_publish: bool,
        /// Echo a client's publish back to it (default off).
        publish_to_self: bool,
        /// Rooms per client (default 256).
        max_rooms_per_client: usize,
        /// Open connections on this instance (default 100,000; HTTP 503 beyond).
        max_connections: usize,
        /// Open connections per client IP (default 10,000; HTTP 429 beyond).
        max_connections_per_ip: usize,
        /// New connections per client IP (default 1,000/s, bursts of 2,000; HTTP 429 beyond).
        connection_rate_per_ip: crate::Rate,
        /// Time to a complete HTTP request head under [`Server::serve`], and to the upgrade (default 10 s).
        request_head_timeout: Duration,
        /// Inbound messages per connection (default 200/s, bursts of 400; 4008 beyond).
        message_rate: crate::Rate,
        /// `join` messages and `presence` queries per connection (default 20/s, bursts of 50; 4008 beyond).
        join_rate: crate::Rate,
        /// Authenticator calls running at once, apart from handshakes (default 1,024).
        max_concurrent_authentications: usize,
        /// Encryption handshakes running at once (default 1,024).
        max_concurrent_handshakes: usize,
        /// Wait for an authentication or handshake slot before closing 1013 (default 2 s).
        handshake_wait: Duration,
        /// Sessions per user on this instance (default 100; 1008 beyond).
        max_sessions_per_user: usize,
        /// Allowed browser origins (default: any).
        allowed_origins: Vec<String>,
        /// Bound on graceful shutdown (default 10 s).
        shutdown_timeout: Duration,
        /// Most bytes read from a socket per call (default 16 KiB; a stack buffer, nothing held between reads).
        read_buffer_size: usize,
        /// Most message bytes queued for one client before it is closed 4007 (default 1 MiB).
        max_write_buffer_size: usize,
        /// Room patterns (exact or `prefix*`) whose messages are kept for recovery (default: none).
        history_rooms: Vec<String>,
        /// Messages kept per history room (default 100).
        history_size: usize,
        /// Age limit of history messages and of remembered publish ids (default 300 s).
        history_ttl: Duration,
        /// Room patterns (exact or `prefix*`) that keep presence (default: none).
        presence_rooms: Vec<String>,
        /// `member_joined` / `member_left` events in presence rooms (default on).
        presence_events: bool,
        /// Most members in a presence answer, and the largest room with events (default 1,000).
        presence_max_members: usize,
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The authenticator (required): `Ok(Some(identity))` accepts, `Ok(None)` rejects (4003).
    pub fn authenticator(mut self, hook: impl Hook<crate::AuthRequest, Option<crate::Identity>>) -> Self {
        self.authenticator = Some(Arc::new(hook));
        self
    }

    /// Decides which requested rooms a client may join. Without one, client joins are refused.
    pub fn room_validator(mut self, hook: impl Hook<crate::RoomRequest, Vec<String>>) -> Self {
        self.hooks.room_validator = Some(Arc::new(hook));
        self
    }

    /// Called after a client is authenticated and in its rooms.
    pub fn on_connected(mut self, hook: impl Hook<crate::Connected, ()>) -> Self {
        self.hooks.on_connected = Some(Arc::new(hook));
        self
    }

    /// Called after a connection ended and left every index.
    pub fn on_disconnected(mut self, hook: impl Hook<crate::Disconnected, ()>) -> Self {
        self.hooks.on_disconnected = Some(Arc::new(hook));
        self
    }

    /// Handles custom events from authenticated clients.
    pub fn message_handler(mut self, hook: impl Hook<crate::IncomingMessage, ()>) -> Self {
        self.hooks.message_handler = Some(Arc::new(hook));
        self
    }

    /// Rewrites or drops application messages per recipient, before sealing. At most `encrypted_batch_limit`
    /// calls run at once across all connections (a recipient's writer waits for a slot), each bounded by
    /// [`Self::outbound_transformer_timeout`].
    pub fn outbound_transformer(mut self, hook: impl Hook<crate::Outgoing, crate::Transformed>) -> Self {
        self.hooks.outbound_transformer = Some(Arc::new(hook));
        self
    }

    /// Bound on one outbound-transformer call (default 1 s): past it the message is dropped for that recipient
    /// and counted as a hook failure, like a transformer that fails. Must be greater than zero.
    pub fn outbound_transformer_timeout(mut self, timeout: Duration) -> Self {
        self.hooks.transformer_timeout = timeout;
        self
    }

    /// The encryption handshake run after authentication.
    pub fn handshake(mut self, hook: impl Hook<crate::HandshakeRequest, crate::HandshakeOutcome>) -> Self {
        self.handshake = Some(Arc::new(hook));
        self
    }

    /// The server's static wsenc/1 keys (current first, then e.g. the next one for rotation). Installs the
    /// bundled [`WsEnc1`] handshake (unless [`Self::handshake`] gives another) and serves the public keys at
    /// `GET /.well-known/sealcast.json`.
    pub fn static_keys(mut self, keys: StaticKeySet) -> Self {
        self.static_keys = Some(SharedKeys::new(Arc::new(keys)));
        self
    }

    /// The bus to other instances (default: a private [`LocalBus`], i.e. a single instance).
    pub fn bus(mut self, bus: impl Bus) -> Self {
        // The buses that keep history bring their store; others cannot serve `history_rooms`.
        let any: &dyn std::any::Any = &bus;
        self.history = match (any.downcast_ref::<LocalBus>(), any.downcast_ref::<RedisBus>()) {
            (Some(local), _) => Some(HistoryStore::Memory(local.history())),
            (_, Some(redis)) => Some(HistoryStore::Redis(redis.history())),
            _ => None,
        };
        self.presence_bus = match (any.downcast_ref::<LocalBus>(), any.downcast_ref::<RedisBus>()) {
            (Some(_), _) => PresenceBus::Local,
            (_, Some(redis)) => PresenceBus::Redis(redis.clone()),
            _ => PresenceBus::Other,
        };
        self.bus = Some(Arc::new(bus));
        self
    }

    /// Validates the settings and starts the server's background tasks. Must run inside a Tokio runtime.
    pub fn build(self) -> Result<Server, ConfigError> {
        self.config.validate()?;
        if self.hooks.transformer_timeout.is_zero() {
            return Err(ConfigError::Zero("outbound_transformer_timeout"));
        }
        let authenticator = self.authenticator.ok_or(ConfigError::NoAuthenticator)?;
        let telemetry = Arc::new(Telemetry::new());
        let handshake = self.handshake.or_else(|| {
            self.static_keys.as_ref().map(|keys| {
                let wsenc = WsEnc1::with_shared_keys(keys.clone())
                    .max_records_per_epoch(self.config.max_records_per_epoch)
                    .room_keys(self.config.room_keys)
                    .with_telemetry(telemetry.clone());
                Arc::new(wsenc) as Arc<Handshake>
            })
        });
        if self.config.require_encryption && handshake.is_none() {
            return Err(ConfigError::EncryptionWithoutHandshake);
        }
        tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let (bus, history) = match self.bus {
            Some(bus) => (bus, self.history),
            None => {
                let local = LocalBus::new();
                let history = HistoryStore::Memory(local.history());
                (Arc::new(local) as Arc<dyn Bus>, Some(history))
            }
        };
        if !self.config.history_rooms.is_empty() && history.is_none() {
            return Err(ConfigError::HistoryUnsupported);
        }
        let server_id: Arc<str> = Uuid::new_v4().to_string().into();
        let presence = Arc::new(LocalPresence::new(self.config.presence_rooms.clone()));
        let with_presence = !self.config.presence_rooms.is_empty();
        let presence_store = match self.presence_bus {
            _ if !with_presence => PresenceStore::None,
            PresenceBus::Local => PresenceStore::Local,
            PresenceBus::Redis(redis) => {
                let settings = crate::bus::redis::presence::Settings {
                    max_members: self.config.presence_max_members,
                    events: self.config.presence_events,
                };
                PresenceStore::Redis(redis.presence(server_id.clone(), presence.clone(), settings))
            }
            PresenceBus::Other => return Err(ConfigError::PresenceUnsupported),
        };
        let shared = Arc::new(Shared {
            registry: Registry::new(
                bus.clone(),
                telemetry.clone(),
                self.config.max_rooms_per_client,
                presence.clone(),
            ),
            seal_permits: Semaphore::new(self.config.encrypted_batch_limit),
            transform_permits: Semaphore::new(self.config.encrypted_batch_limit),
            auth_permits: Semaphore::new(self.config.max_concurrent_authentications),
            handshake_permits: Semaphore::new(self.config.max_concurrent_handshakes),
            limits: Arc::new(ConnectionLimits::new(
                self.config.max_connections,
                self.config.max_connections_per_ip,
                self.config.connection_rate_per_ip,
            )),
            config: self.config,
            server_id: server_id.clone(),
            bus: bus.clone(),
            hooks: self.hooks,
            authenticator,
            handshake,
            static_keys: self.static_keys,
            telemetry,
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            clock: Instant::now(),
            peerless: std::sync::Once::new(),
            history,
            joiners: parking_lot::Mutex::new(std::collections::HashMap::new()),
            presence,
            presence_store,
        });
        if matches!(shared.presence_store, PresenceStore::Local) {
            tokio::spawn(crate::shared::local_presence_events(
                Arc::downgrade(&shared),
                shared.shutdown.clone(),
            ));
        }
        bus.attach(Inbox::new(server_id, Arc::downgrade(&shared) as Weak<dyn Deliver>));
        Ok(Server { shared })
    }
}
