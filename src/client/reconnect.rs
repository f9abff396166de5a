//! A client that stays connected: reconnects with backoff, re-joins its rooms, refreshes its token before expiry
//! and never retries a credentials close blindly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::{Ack, Client, ClientConfig, ClientError, Joined, Message, StreamPosition};
use crate::crypto::b64;
use crate::protocol::event;

/// What [`ReconnectingClient`] does after a close: the answer of [`reconnect_policy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reconnect {
    /// Connect again after the backoff delay, with the current token.
    Backoff,
    /// Fetch a fresh token from the provider, then connect again after the backoff delay (once).
    FreshToken,
    /// Give up: the close is returned to the application.
    Stop,
}

/// The reconnect policy per close code, the same as the JavaScript client's.
///
/// `has_token_provider`: whether [`ClientConfig::token_provider`] is set. `retried_with_fresh_token`: whether the
/// previous close already used the one fresh-token retry and no session was established since.
///
/// | Code | Meaning | Policy |
/// |---|---|---|
/// | 1001 | server shutting down | reconnect with backoff |
/// | 1006 | connection lost (no close frame; also a refused connection) | reconnect with backoff |
/// | 1008 | credentials expired without a refresh, too many sessions for the user, or removed by the operator (`POST /api/disconnect`) | with a token provider: one retry with a fresh token; without: stop |
/// | 1009, 1011, 1013 | message too large, internal error, try again later | reconnect with backoff |
/// | 4001, 4002 | authentication or heartbeat timeout | reconnect with backoff |
/// | 4003 | authentication failed (e.g. the token expired while disconnected) | with a token provider: one retry with a fresh token; without: stop |
/// | 4004 | encryption required | stop |
/// | 4005–4008 | decryption failed, key exhausted, slow consumer, rate limited | reconnect with backoff |
///
/// Retrying a credentials close with the same token cannot help (an expired or rejected token) or must not undo
/// an operator's decision blindly; the fresh-token retry is spent until a session is established again, so a user
/// over the session limit stops after it. Client-side failures: a failed handshake (unpinned key, bad `confirm`,
/// downgrade) stops; a record that fails to open, a protocol violation or a WebSocket error reconnects.
pub fn reconnect_policy(code: u16, has_token_provider: bool, retried_with_fresh_token: bool) -> Reconnect {
    match code {
        4004 => Reconnect::Stop,
        1008 | 4003 if has_token_provider && !retried_with_fresh_token => Reconnect::FreshToken,
        1008 | 4003 => Reconnect::Stop,
        _ => Reconnect::Backoff,
    }
}

/// What [`ReconnectingClient::recv`] observed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// An application message.
    Message(Message),
    /// The connection closed with `close_code` (1006 when it was lost) and a new session replaced it: a new
    /// connection id, rooms joined again. In rooms with history the missed messages were asked for again: those
    /// recovered are delivered after this event, and [`ReconnectingClient::last_joined`] tells per room whether
    /// recovery succeeded (`recovered`); elsewhere messages sent to the old session in between are lost.
    Reconnected {
        /// Why the previous session ended.
        close_code: u16,
    },
}

/// A [`Client`] that reconnects per [`reconnect_policy`], with exponential backoff and jitter like the
/// JavaScript client; every reconnect is a fresh handshake. Rooms joined through it are joined again on every
/// new session. With a [token provider](ClientConfig::token_provider) and a JWT-shaped token it sends `refresh`
/// before the token's `exp`, while [`ReconnectingClient::recv`] is being awaited.
///
/// Sends are at most once: a send on a connection that has just dropped fails with the connection's error, and
/// the next `recv` reconnects (retry a publish with [`ReconnectingClient::publish_with_id`] and the same id to
/// make it idempotent). Receiving in rooms with history is at least once within the server's history window: the
/// client tracks the last offset of each such room and recovers from it on every new session.
///
/// ```no_run
/// # async fn run(pinned: sealcast::crypto::PinnedKey) -> Result<(), sealcast::client::ClientError> {
/// use sealcast::client::{ClientConfig, Event, ReconnectingClient};
///
/// async fn fetch_token() -> Result<String, std::io::Error> {
///     Ok("<a JWT from your login service>".into())
/// }
/// let config = ClientConfig::new("wss://chat.example.com/ws", "").pin(pinned).token_provider(fetch_token);
/// let mut client = ReconnectingClient::connect(config).await?;
/// client.join(&["lobby"]).await?;
/// loop {
///     match client.recv().await? {
///         Event::Message(m) => println!("{} {}", m.event, m.data),
///         Event::Reconnected { close_code } => println!("new session after {close_code}"),
///         _ => {}
///     }
/// }
/// # }
/// ```
pub struct ReconnectingClient {
    config: ClientConfig,
    client: Option<Client>,
    stopped: bool,
    rooms: BTreeSet<String>,
    /// The last position received in each joined room with history.
    positions: BTreeMap<String, StreamPosition>,
    /// The answer to the latest session's re-join.
    last_joined: Option<Joined>,
    token: Option<String>,
    need_fresh_token: bool,
    retried_with_fresh_token: bool,
    failures: u32,
    refresh_at: Option<Instant>,
    last_close: u16,
}

impl std::fmt::Debug for ReconnectingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectingClient")
            .field("client", &self.client)
            .field("stopped", &self.stopped)
            .field("rooms", &self.rooms.len())
            .finish_non_exhaustive()
    }
}

impl ReconnectingClient {
    /// Connects, retrying per the policy (a server that is not up yet is retried with backoff); fails with the
    /// error that stopped it.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let token = config
            .auth
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        let mut this = Self {
            config,
            client: None,
            stopped: false,
            rooms: BTreeSet::new(),
            positions: BTreeMap::new(),
            last_joined: None,
            token,
            need_fresh_token: false,
            retried_with_fresh_token: false,
            failures: 0,
            refresh_at: None,
            last_close: 1006,
        };
        this.establish().await?;
        Ok(this)
    }

    /// The current session, if connected.
    pub fn client(&self) -> Option<&Client> {
        self.client.as_ref()
    }

    /// The server's answer to the rooms joined again by the latest reconnect (`None` before any): per room with
    /// history, its position and whether the missed messages were recovered.
    pub fn last_joined(&self) -> Option<&Joined> {
        self.last_joined.as_ref()
    }

    /// The last position received in `room`, if it has history.
    pub fn position(&self, room: &str) -> Option<&StreamPosition> {
        self.positions.get(room)
    }

    fn track(&mut self, joined: &Joined) {
        for r in &joined.rooms {
            // A room recovered keeps its position: the replayed messages move it on as they are received.
            if r.recovered == Some(true) {
                continue;
            }
            if let (Some(offset), Some(epoch)) = (r.offset, &r.epoch) {
                self.positions.insert(
                    r.room.clone(),
                    StreamPosition {
                        offset,
                        epoch: epoch.clone(),
                    },
                );
            }
        }
    }

    /// The next message, or [`Event::Reconnected`] once a lost session has been replaced. An error means the
    /// client stopped (per the policy); later calls return [`ClientError::Stopped`].
    pub async fn recv(&mut self) -> Result<Event, ClientError> {
        loop {
            let Some(client) = self.client.as_mut() else {
                // Stopped, or a previous `recv` was dropped while reconnecting: carry on with that.
                if self.stopped {
                    return Err(ClientError::Stopped);
                }
                self.establish().await?;
                return Ok(Event::Reconnected {
                    close_code: self.last_close,
                });
            };
            let refresh_at = self.refresh_at;
            // `Client::recv` is cancel-safe: it only awaits the next frame.
            let received = tokio::select! {
                r = client.recv() => Some(r),
                () = sleep_until(refresh_at) => None,
            };
            match received {
                None => self.refresh().await,
                Some(Ok(message)) => {
                    if let Some((room, at)) = &message.position {
                        if self.rooms.contains(room) {
                            self.positions.insert(room.clone(), at.clone());
                        }
                    }
                    return Ok(Event::Message(message));
                }
                Some(Err(e)) => {
                    self.client = None;
                    self.refresh_at = None;
                    self.last_close = close_code(&e);
                    self.after_failure(e).await?;
                }
            }
        }
    }

    /// Sends `{"event": event, "data": data}` on the current session.
    pub async fn send<T: Serialize + ?Sized>(&mut self, event_name: &str, data: &T) -> Result<(), ClientError> {
        self.current()?.send(event_name, data).await
    }

    /// Joins rooms now and on every later session; answers the server's result for this session.
    pub async fn join(&mut self, rooms: &[&str]) -> Result<Joined, ClientError> {
        let joined = self.current()?.join(rooms).await?;
        // Only what the server let in is joined again later.
        self.rooms.extend(joined.rooms.iter().map(|r| r.room.clone()));
        self.track(&joined);
        Ok(joined)
    }

    /// Leaves rooms (and forgets them for later sessions).
    pub async fn leave(&mut self, rooms: &[&str]) -> Result<(), ClientError> {
        for r in rooms {
            self.rooms.remove(*r);
            self.positions.remove(*r);
        }
        self.current()?.leave(rooms).await
    }

    /// Asks who is in a joined room, on the current session.
    pub async fn presence(&mut self, room: &str) -> Result<super::RoomPresence, ClientError> {
        self.current()?.presence(room).await
    }

    /// Publishes to a joined room on the current session and waits for the acknowledgement.
    pub async fn publish<T: Serialize + ?Sized>(
        &mut self,
        room: &str,
        event_name: &str,
        data: &T,
    ) -> Result<Ack, ClientError> {
        self.current()?.publish(room, event_name, data).await
    }

    /// [`Client::publish_with_id`] on the current session: retry with the same `id` after a failure and the
    /// message is delivered once.
    pub async fn publish_with_id<T: Serialize + ?Sized>(
        &mut self,
        room: &str,
        event_name: &str,
        data: &T,
        id: &str,
    ) -> Result<Ack, ClientError> {
        self.current()?.publish_with_id(room, event_name, data, id).await
    }

    /// Closes the session for good.
    pub async fn close(mut self) {
        if let Some(c) = self.client.take() {
            c.close().await;
        }
    }

    fn current(&mut self) -> Result<&mut Client, ClientError> {
        self.client.as_mut().ok_or(ClientError::Stopped)
    }

    /// Connects until a session is up, or the policy stops (then `Err` with the cause).
    async fn establish(&mut self) -> Result<(), ClientError> {
        loop {
            match self.attempt().await {
                Ok(client) => {
                    // After a fresh-token retry the backoff keeps growing: a provider that keeps handing out a
                    // token about to expire (accepted within the server's leeway, closed 1008 at `exp`) must not
                    // reconnect at full speed.
                    if !self.retried_with_fresh_token {
                        self.failures = 0;
                    }
                    self.retried_with_fresh_token = false;
                    self.client = Some(client);
                    self.schedule_refresh();
                    return Ok(());
                }
                // `last_close` keeps why the session ended, not why a later attempt failed.
                Err(e) => self.after_failure(e).await?,
            }
        }
    }

    async fn attempt(&mut self) -> Result<Client, ClientError> {
        let stale = self.need_fresh_token
            || self.token.is_none()
            || self.token.as_deref().is_some_and(|t| self.expires_soon(t));
        if self.config.token_provider.is_some() && stale {
            self.token = Some(self.fetch_token().await?);
            self.need_fresh_token = false;
        }
        let mut config = self.config.clone();
        if let Some(token) = &self.token {
            config.auth.insert("token".into(), Value::String(token.clone()));
        }
        let mut client = Client::connect(config).await?;
        if !self.rooms.is_empty() {
            let rooms: Vec<&str> = self.rooms.iter().map(String::as_str).collect();
            let joined = client.join_recovering(&rooms, &self.positions).await?;
            self.track(&joined);
            self.last_joined = Some(joined);
        }
        Ok(client)
    }

    /// Applies the policy to a failure: `Ok` after the backoff delay when another attempt follows.
    async fn after_failure(&mut self, e: ClientError) -> Result<(), ClientError> {
        let decision = match &e {
            ClientError::Closed { code, .. } => reconnect_policy(
                *code,
                self.config.token_provider.is_some(),
                self.retried_with_fresh_token,
            ),
            ClientError::WebSocket(_) | ClientError::Record(_) | ClientError::Seal(_) | ClientError::Protocol(_) => {
                Reconnect::Backoff
            }
            _ => Reconnect::Stop,
        };
        match decision {
            Reconnect::Stop => {
                self.stopped = true;
                return Err(e);
            }
            Reconnect::FreshToken => {
                self.need_fresh_token = true;
                self.retried_with_fresh_token = true;
            }
            Reconnect::Backoff => {}
        }
        self.failures = self.failures.saturating_add(1);
        tokio::time::sleep(self.backoff_delay()).await;
        Ok(())
    }

    fn backoff_delay(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(30);
        let base = self
            .config
            .backoff_initial
            .saturating_mul(1 << doublings)
            .min(self.config.backoff_max);
        let half = base / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    /// A token from the provider. The provider is cloned out first, so the future borrows nothing of `self`.
    fn fetch_token(&self) -> impl std::future::Future<Output = Result<String, ClientError>> + Send + 'static {
        let provider = self.config.token_provider.clone();
        async move {
            let Some(provider) = provider else {
                return Err(ClientError::TokenUnavailable);
            };
            match provider().await {
                Some(token) if !token.is_empty() => Ok(token),
                _ => Err(ClientError::TokenUnavailable),
            }
        }
    }

    fn expires_soon(&self, token: &str) -> bool {
        token_expiry(token).is_some_and(|exp| until(exp) <= self.config.refresh_margin)
    }

    fn schedule_refresh(&mut self) {
        self.refresh_at = None;
        if self.config.token_provider.is_none() {
            return;
        }
        let Some(exp) = self.token.as_deref().and_then(token_expiry) else {
            return;
        };
        let remaining = until(exp);
        if remaining.is_zero() {
            return;
        }
        let lead = self.config.refresh_margin.min(remaining / 2);
        self.refresh_at = Instant::now().checked_add(remaining - lead);
    }

    /// Sends `refresh` with a fresh token, so the server does not close 1008 at the current token's `exp`.
    async fn refresh(&mut self) {
        self.refresh_at = None;
        // Without a token it is not the end yet: the session lasts until its expiry, whose 1008 gets the
        // fresh-token retry.
        let Ok(token) = self.fetch_token().await else {
            return;
        };
        self.token = Some(token.clone());
        let mut data = self.config.auth.clone();
        data.insert("token".into(), Value::String(token));
        if let Some(client) = self.client.as_mut() {
            // A failed send shows up in the next `recv`; a refused refresh comes back as an `error` message and
            // the old expiry stands.
            let _ = client.send(event::REFRESH, &Value::Object(data)).await;
        }
        self.schedule_refresh();
    }
}

/// The close code an error stands for: the server's, or 1006 when the connection was lost without one.
fn close_code(e: &ClientError) -> u16 {
    match e {
        ClientError::Closed { code, .. } => *code,
        ClientError::Record(_) => 4005,
        _ => 1006,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Time from now until `at` (zero if past).
fn until(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::now()).unwrap_or_default()
}

/// The `exp` of a JWT-shaped token, read without verification (only to schedule the refresh).
fn token_expiry(token: &str) -> Option<SystemTime> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let claims: Value = serde_json::from_slice(&b64::decode(payload).ok()?).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_closes_get_one_fresh_token_retry_and_never_a_blind_one() {
        for code in [1008, 4003] {
            assert_eq!(reconnect_policy(code, false, false), Reconnect::Stop, "{code}");
            assert_eq!(reconnect_policy(code, true, false), Reconnect::FreshToken, "{code}");
            assert_eq!(reconnect_policy(code, true, true), Reconnect::Stop, "{code}");
        }
        assert_eq!(reconnect_policy(4004, true, false), Reconnect::Stop);
        for code in [1001, 1006, 1009, 1011, 1013, 4001, 4002, 4005, 4006, 4007, 4008] {
            assert_eq!(reconnect_policy(code, false, false), Reconnect::Backoff, "{code}");
            assert_eq!(reconnect_policy(code, true, true), Reconnect::Backoff, "{code}");
        }
    }

    /// Applications spawn their receive loops: the futures must be `Send` (checked at compile time).
    #[allow(dead_code)]
    fn recv_and_connect_futures_are_send(c: &mut ReconnectingClient, config: ClientConfig) {
        fn send<T: Send>(_: T) {}
        send(c.recv());
        send(ReconnectingClient::connect(config));
    }

    #[test]
    fn a_jwt_exp_is_read_and_anything_else_has_none() {
        let token = crate::auth::mint(b"k", "u", Duration::from_secs(90), None).expect("mint");
        let exp = token_expiry(&token).expect("exp");
        let left = until(exp);
        assert!(
            left > Duration::from_secs(80) && left <= Duration::from_secs(90),
            "{left:?}"
        );
        assert_eq!(token_expiry("user:a"), None);
        assert_eq!(token_expiry("a.b.c.d"), None);
        assert_eq!(token_expiry("a.!!.c"), None);
    }
}
