//! Application hooks: authentication, room validation, lifecycle callbacks, message handling and outbound
//! transformation.
//!
//! Every hook is a [`Hook`]: any `Fn(Request) -> impl Future<Output = Result<Response, HookError>>` closure
//! qualifies, or a type implementing the trait. The server calls every hook through one guard that turns an error
//! *or a panic* into a [`HookFailure`] so a misbehaving hook never takes down the connection's neighbours or the
//! server.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use futures_util::FutureExt;
use serde_json::Value;

use crate::client_info::ClientInfo;
use crate::redact::debug_redacted;

/// What a hook returns on failure.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// The boxed future a [`Hook`] returns.
pub type HookFuture<T> = Pin<Box<dyn Future<Output = Result<T, HookError>> + Send>>;

/// An asynchronous application callback from `Req` to `Resp`.
pub trait Hook<Req, Resp>: Send + Sync + 'static {
    /// Runs the hook.
    fn call(&self, req: Req) -> HookFuture<Resp>;
}

impl<F, Fut, Req, Resp> Hook<Req, Resp> for F
where
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, HookError>> + Send + 'static,
{
    fn call(&self, req: Req) -> HookFuture<Resp> {
        Box::pin(self(req))
    }
}

/// How a hook call went wrong.
#[derive(Debug, thiserror::Error)]
pub enum HookFailure {
    /// The hook returned an error.
    #[error("hook returned an error: {0}")]
    Error(HookError),
    /// The hook panicked (while being called or while its future ran).
    #[error("hook panicked")]
    Panicked,
}

/// Calls `hook`, catching errors and panics.
pub(crate) async fn invoke<Req: 'static, Resp: 'static>(
    hook: &dyn Hook<Req, Resp>,
    req: Req,
) -> Result<Resp, HookFailure> {
    let fut = std::panic::catch_unwind(AssertUnwindSafe(|| hook.call(req))).map_err(|_| HookFailure::Panicked)?;
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(HookFailure::Error(e)),
        Err(_) => Err(HookFailure::Panicked),
    }
}

/// Input of the authenticator: the `data` object of the client's `authenticate` message and, for that first
/// authentication, the HTTP request the connection was upgraded from.
#[derive(Clone)]
pub struct AuthRequest {
    /// Server-assigned connection id.
    pub client_id: String,
    /// The `data` object as sent (secrets included: never log it).
    pub data: serde_json::Map<String, Value>,
    /// The upgrade request (headers, query string, peer address), so that an application can authenticate
    /// from its own session cookie or `Authorization` header. Present for the `authenticate` message; `None`
    /// for a `refresh`, whose credentials are in `data` (a connection lets go of its request once it is
    /// authenticated, so that idle connections do not hold their headers).
    pub upgrade: Option<Arc<UpgradeRequest>>,
}

/// What the client's HTTP upgrade request carried: its headers (cookies, `Authorization`, `Origin`, ...), its
/// query string and the peer's address.
///
/// Header values and the query string often hold credentials: `Debug` shows the header names only.
///
/// ```
/// use axum::http::{header, HeaderMap, HeaderValue};
/// use sealcast::hooks::UpgradeRequest;
///
/// let mut headers = HeaderMap::new();
/// headers.insert(header::COOKIE, HeaderValue::from_static("theme=dark; session=s3cr3t"));
/// let req = UpgradeRequest::new(headers, Some("v=2".into()), Some("10.0.0.7:50000".parse().unwrap()));
/// assert_eq!(req.cookie("session"), Some("s3cr3t"));
/// assert_eq!(req.query(), Some("v=2"));
/// assert!(!format!("{req:?}").contains("s3cr3t"));
/// ```
#[derive(Clone)]
pub struct UpgradeRequest {
    headers: HeaderMap,
    query: Option<String>,
    peer: Option<SocketAddr>,
}

impl UpgradeRequest {
    /// A request with these headers, query string (without the `?`) and peer address (`None` when the server
    /// is not served with connect info). The server makes these; this is for testing an authenticator.
    pub fn new(headers: HeaderMap, query: Option<String>, peer: Option<SocketAddr>) -> Self {
        Self { headers, query, peer }
    }

    /// Every header of the request.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The first value of header `name`, if it is there and is visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The value of cookie `name` from the `Cookie` headers, as sent (no percent-decoding).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                (key == name).then_some(value)
            })
    }

    /// The `Origin` header (browsers send it; other clients usually do not).
    pub fn origin(&self) -> Option<&str> {
        self.header(header::ORIGIN.as_str())
    }

    /// The query string of the request's URI, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The client's address (the proxy's, behind a reverse proxy); `None` unless the server is served with
    /// `into_make_service_with_connect_info::<SocketAddr>()`.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }
}

impl std::fmt::Debug for UpgradeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.keys().map(|k| k.as_str()).collect();
        f.debug_struct("UpgradeRequest")
            .field("peer", &self.peer)
            .field("headers", &names)
            .field("query", &self.query.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// A successful authentication.
#[derive(Clone, Default)]
pub struct Identity {
    /// The user this connection belongs to; `None` for an anonymous client.
    pub user_id: Option<String>,
    /// Application data kept with the connection and handed to later hooks.
    pub metadata: Value,
    /// When the credentials expire: the connection is closed 1008 then unless the client sends
    /// `{"event":"refresh","data":{"token":..}}` with fresh credentials for the same user first.
    pub expires_at: Option<std::time::SystemTime>,
    /// Room patterns (exact names or `prefix*`) the connection may join and publish to; `None` leaves joins to
    /// the room validator and publishing to room membership. With patterns, a `join` outside them is dropped
    /// before the validator runs, a `publish` outside them is answered with the `Room not allowed` error, and
    /// default rooms outside them are not joined.
    /// Set by [`crate::auth::JwtAuthenticator`] from the `rooms` claim and by the connect proxy from `rooms`.
    pub rooms: Option<Vec<String>>,
}

impl Identity {
    /// An identity for `user_id`, without metadata or expiry.
    pub fn user(user_id: impl Into<String>) -> Self {
        Self {
            user_id: Some(user_id.into()),
            ..Self::default()
        }
    }

    /// Attaches metadata.
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// Limits the rooms the connection may join and publish to (see [`Identity::rooms`]).
    pub fn with_rooms(mut self, patterns: Vec<String>) -> Self {
        self.rooms = Some(patterns);
        self
    }

    /// Sets the credentials' expiry.
    pub fn expiring_at(mut self, at: std::time::SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }
}

/// Input of the room validator.
#[derive(Clone)]
pub struct RoomRequest {
    /// Connection id.
    pub client_id: String,
    /// The connection's user, if any.
    pub user_id: Option<String>,
    /// Metadata returned by the authenticator.
    pub metadata: Value,
    /// Requested rooms, already sanitised. The validator returns the allowed subset; anything it returns that was
    /// not requested, or is not a joinable name, is ignored.
    pub rooms: Vec<String>,
}

/// Input of the on-connected hook.
#[derive(Clone)]
pub struct Connected {
    /// Connection id.
    pub client_id: String,
    /// The connection's user, if any.
    pub user_id: Option<String>,
    /// Metadata returned by the authenticator.
    pub metadata: Value,
}

/// Input of the on-disconnected hook.
#[derive(Clone)]
pub struct Disconnected {
    /// Connection id.
    pub client_id: String,
    /// The connection's user, if it had authenticated.
    pub user_id: Option<String>,
    /// The close code the server sent, if the server closed the connection.
    pub code: Option<u16>,
}

/// A custom (non-protocol) event from an authenticated client.
#[derive(Clone)]
pub struct IncomingMessage {
    /// Connection id.
    pub client_id: String,
    /// The connection's user, if any.
    pub user_id: Option<String>,
    /// Event name (never a reserved one).
    pub event: String,
    /// Payload (`null` when absent).
    pub data: Value,
    /// The client's correlation id, untouched.
    pub id: Option<Value>,
}

/// Input of the outbound transformer: one message about to be delivered to one client.
#[derive(Clone)]
pub struct Outgoing {
    /// The recipient.
    pub client: ClientInfo,
    /// Event name.
    pub event: String,
    /// Payload.
    pub data: Value,
}

/// What the outbound transformer decided. The result is still sealed for encrypted clients: a transformer can
/// never cause plaintext to reach an encrypted session.
#[derive(Clone)]
pub enum Transformed {
    /// Deliver the message as it is.
    Unchanged,
    /// Deliver this instead.
    Replace {
        /// New event name (reserved names are refused and the message dropped).
        event: String,
        /// New payload.
        data: Value,
    },
    /// Do not deliver it to this client.
    Drop,
}

/// The authenticator: `None` rejects the credentials (close 4003).
pub type Authenticator = dyn Hook<AuthRequest, Option<Identity>>;
/// The room validator: returns the allowed rooms.
pub type RoomValidator = dyn Hook<RoomRequest, Vec<String>>;
/// Called once a client is authenticated and in its rooms.
pub type OnConnected = dyn Hook<Connected, ()>;
/// Called once a connection is gone and removed from every index.
pub type OnDisconnected = dyn Hook<Disconnected, ()>;
/// Handles custom events from authenticated clients.
pub type MessageHandler = dyn Hook<IncomingMessage, ()>;
/// Rewrites or drops outbound messages per recipient (runs in the recipient's writer, before sealing).
pub type OutboundTransformer = dyn Hook<Outgoing, Transformed>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn panics_and_errors_become_failures() {
        let panics_now = |_: u8| -> std::future::Ready<Result<u8, HookError>> { panic!("sync") };
        let panics_later = |_: u8| async move {
            if true {
                panic!("async");
            }
            Ok::<u8, HookError>(1)
        };
        let errs = |_: u8| async move { Err::<u8, HookError>("nope".into()) };
        let ok = |x: u8| async move { Ok::<u8, HookError>(x + 1) };
        assert!(matches!(invoke(&panics_now, 1).await, Err(HookFailure::Panicked)));
        assert!(matches!(invoke(&panics_later, 1).await, Err(HookFailure::Panicked)));
        assert!(matches!(invoke(&errs, 1).await, Err(HookFailure::Error(_))));
        assert_eq!(invoke(&ok, 1).await.unwrap(), 2);
    }

    #[test]
    fn upgrade_request_debug_shows_header_names_but_no_value_or_query() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "session=cookie-SECRET".parse().unwrap());
        headers.insert(header::AUTHORIZATION, "Bearer bearer-SECRET".parse().unwrap());
        let req = UpgradeRequest::new(headers, Some("token=query-SECRET".into()), None);
        let shown = format!("{req:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("cookie") && shown.contains("authorization"), "{shown}");
    }

    #[test]
    fn a_cookie_is_found_among_several_in_any_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1; sessionx=no".parse().unwrap());
        headers.append(header::COOKIE, "b=2;session=yes".parse().unwrap());
        let req = UpgradeRequest::new(headers, None, None);
        assert_eq!(req.cookie("session"), Some("yes"));
        assert_eq!(req.cookie("b"), Some("2"));
        assert_eq!(req.cookie("missing"), None);
    }
}

debug_redacted!(AuthRequest { client_id, upgrade; data });
debug_redacted!(Identity { user_id, expires_at, rooms; metadata });
debug_redacted!(RoomRequest { client_id, user_id, rooms; metadata });
debug_redacted!(Connected { client_id, user_id; metadata });
debug_redacted!(Disconnected { client_id, user_id, code; });
debug_redacted!(IncomingMessage { client_id, user_id, event; data, id });
debug_redacted!(Outgoing { client, event; data });

impl std::fmt::Debug for Transformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unchanged => f.write_str("Unchanged"),
            Self::Replace { event, .. } => write!(f, "Replace {{ event: {event:?}, data: [redacted] }}"),
            Self::Drop => f.write_str("Drop"),
        }
    }
}
