//! The connect proxy: an authenticator that asks an HTTP backend, for applications that keep their sessions
//! elsewhere.
//!
//! The `authenticate` payload (the `data` object, exactly as the client sent it) is POSTed as JSON to the
//! configured `http://` or `https://` URL. For https the backend's certificate must chain to the system's
//! trusted roots, or only to the CA set with [`ConnectProxy::tls_roots`] (see [`super::tls`]); a TLS failure
//! (unknown issuer, wrong host name, ...) is an authenticator error and is not retried. The backend answers:
//!
//! - `200` with `{"userId": "...", "metadata": <any JSON>?, "rooms": ["chat:*", ...]?}`: accepted; `rooms`
//!   becomes [`Identity::rooms`], `metadata` the connection's metadata. Unknown fields are refused.
//! - `401` or `403` (body `{"error": ...}` optional, ignored): rejected, the client gets
//!   `Authentication failed` and close 4003. Never retried.
//! - anything else — another `4xx` (never retried), a `5xx` or a connection error (retried a bounded number of
//!   times inside the timeout), a body over [`MAX_RESPONSE_BYTES`], a malformed body, the timeout — is an
//!   authenticator error: the client gets `Authentication error` and close 4003.
//!
//! Neither the payload (which holds the client's credentials) nor the response body is ever logged or put in
//! an error.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::http::{Endpoint, FetchError, UrlError};
use super::tls::TlsRoots;
use crate::hooks::{AuthRequest, Hook, HookFuture, Identity};

/// Largest response body read from the backend.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Default bound on one authentication, retries included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause before retrying after a connection error or a `5xx`.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest accepted `userId`.
const MAX_USER_ID_LEN: usize = 256;

/// Why a connect proxy could not be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyConfigError {
    /// The URL does not parse, lacks a host or carries credentials (`user:password@`).
    #[error(
        "the connect proxy URL must look like https://host:port/path or http://host:port/path, without credentials"
    )]
    InvalidUrl,
    /// The scheme is neither `http` nor `https`.
    #[error("the connect proxy URL must use https:// or http://")]
    UnsupportedScheme,
    /// The timeout is zero.
    #[error("the connect proxy timeout must be greater than zero")]
    ZeroTimeout,
}

/// Why the backend gave no usable answer (an authenticator error, not a rejection). Never holds the request
/// or response body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The backend could not be reached.
    #[error("cannot connect to the auth backend: {0}")]
    Connect(std::io::ErrorKind),
    /// The TLS handshake failed: the backend's certificate does not chain to the trusted roots or does not name
    /// its host (rustls's reason follows), or the system's roots could not be loaded.
    #[error("TLS with the auth backend failed: {0}")]
    Tls(String),
    /// The HTTP exchange failed.
    #[error("HTTP exchange with the auth backend failed")]
    Http,
    /// The backend answered a status other than 200, 401 or 403.
    #[error("the auth backend answered HTTP {0}")]
    Status(u16),
    /// The 200 body is larger than [`MAX_RESPONSE_BYTES`].
    #[error("the auth backend's response is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    /// The 200 body is not `{"userId": .., "metadata"?: .., "rooms"?: [..]}` JSON.
    #[error("the auth backend's response is not the expected JSON (userId, metadata?, rooms?)")]
    Malformed,
    /// No answer within the timeout.
    #[error("the auth backend did not answer in time")]
    Timeout,
}

impl ProxyError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Connect(_) => true,
            Self::Status(code) => *code >= 500,
            // A certificate that does not verify will not verify a moment later.
            Self::Tls(_) | Self::Http | Self::TooLarge | Self::Malformed | Self::Timeout => false,
        }
    }
}

/// The accepted answer, parsed strictly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Accepted {
    user_id: String,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
}

impl From<FetchError> for ProxyError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Connect(kind) => Self::Connect(kind),
            FetchError::Tls(reason) => Self::Tls(reason),
            FetchError::Http => Self::Http,
            FetchError::TooLarge => Self::TooLarge,
        }
    }
}

/// An authenticator that POSTs the `authenticate` payload to a backend (see the module docs for the
/// contract). Cheap to clone.
///
/// ```
/// use std::time::Duration;
/// use sealcast::auth::proxy::ConnectProxy;
///
/// let proxy = ConnectProxy::new("http://127.0.0.1:3000/sealcast/connect", Duration::from_secs(2))?
///     .retries(1);
/// # let _ = sealcast::Server::builder().authenticator(proxy);
/// // https: the system's trusted roots, or only a CA of your own with `.tls_roots(TlsRoots::from_ca_file(..)?)`.
/// let _tls = ConnectProxy::new("https://auth.internal/sealcast/connect", Duration::from_secs(2))?;
/// assert!(ConnectProxy::new("ftp://example/", Duration::from_secs(2)).is_err());
/// # Ok::<(), sealcast::auth::proxy::ProxyConfigError>(())
/// ```
#[derive(Clone)]
pub struct ConnectProxy {
    target: Arc<Endpoint>,
    timeout: Duration,
    retries: u32,
}

impl std::fmt::Debug for ConnectProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectProxy")
            // Scheme, authority and path only: a query string might carry a backend credential.
            .field("url", &self.target.display())
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

impl ConnectProxy {
    /// A proxy to `url` (`https://host[:port]/path` or `http://...`), each authentication bounded by `timeout`
    /// (retries, connection and TLS handshake included). One retry by default. For https the system's trusted
    /// roots are loaded on first use unless [`Self::tls_roots`] sets others; this call does no I/O.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, ProxyConfigError> {
        if timeout.is_zero() {
            return Err(ProxyConfigError::ZeroTimeout);
        }
        let target = Endpoint::parse(url).map_err(|e| match e {
            UrlError::Invalid => ProxyConfigError::InvalidUrl,
            UrlError::Scheme => ProxyConfigError::UnsupportedScheme,
        })?;
        Ok(Self {
            target: Arc::new(target),
            timeout,
            retries: 1,
        })
    }

    /// Trusts only `roots` for an https backend (e.g. [`TlsRoots::from_ca_file`] for a private CA) instead of
    /// the system's store. No effect on an `http://` URL.
    pub fn tls_roots(self, roots: TlsRoots) -> Self {
        let target = Endpoint::clone(&self.target).with_roots(roots);
        Self {
            target: Arc::new(target),
            ..self
        }
    }

    /// Extra attempts after a connection error or a `5xx`, as long as the timeout allows (default 1; a `4xx`
    /// is never retried).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Asks the backend about one `authenticate` payload: `Ok(Some)` accepted, `Ok(None)` rejected (401/403).
    pub async fn authenticate(&self, payload: &Map<String, Value>) -> Result<Option<Identity>, ProxyError> {
        let body = Bytes::from(serde_json::to_vec(payload).map_err(|_| ProxyError::Malformed)?);
        tokio::time::timeout(self.timeout, self.attempts(body))
            .await
            .map_err(|_| ProxyError::Timeout)?
    }

    async fn attempts(&self, body: Bytes) -> Result<Option<Identity>, ProxyError> {
        let mut left = self.retries;
        loop {
            match self.once(body.clone()).await {
                Err(e) if e.is_retryable() && left > 0 => {
                    left -= 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                outcome => return outcome,
            }
        }
    }

    async fn once(&self, body: Bytes) -> Result<Option<Identity>, ProxyError> {
        let (status, answer) = self
            .target
            .exchange(Method::POST, Some(body), MAX_RESPONSE_BYTES)
            .await?;
        match status {
            StatusCode::OK => parse_accepted(&answer).map(Some),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Ok(None),
            other => Err(ProxyError::Status(other.as_u16())),
        }
    }
}

fn parse_accepted(body: &[u8]) -> Result<Identity, ProxyError> {
    let accepted: Accepted = serde_json::from_slice(body).map_err(|_| ProxyError::Malformed)?;
    if accepted.user_id.is_empty() || accepted.user_id.len() > MAX_USER_ID_LEN {
        return Err(ProxyError::Malformed);
    }
    let identity = Identity::user(accepted.user_id).with_metadata(accepted.metadata.unwrap_or(Value::Null));
    Ok(match accepted.rooms {
        Some(rooms) => identity.with_rooms(rooms),
        None => identity,
    })
}

impl Hook<AuthRequest, Option<Identity>> for ConnectProxy {
    fn call(&self, req: AuthRequest) -> HookFuture<Option<Identity>> {
        let proxy = self.clone();
        Box::pin(async move {
            let answer = proxy.authenticate(&req.data).await?;
            if answer.is_none() {
                tracing::info!(client = %req.client_id, reason = "the auth backend refused (401/403)", "authentication refused");
            }
            Ok(answer)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_or_https_with_a_host_and_no_credentials() {
        let t = Duration::from_secs(1);
        assert!(ConnectProxy::new("http://127.0.0.1:1/auth", t).is_ok());
        assert!(ConnectProxy::new("https://auth.example/connect", t).is_ok());
        assert!(ConnectProxy::new("https://127.0.0.1:8443/connect", t).is_ok());
        assert_eq!(
            ConnectProxy::new("ftp://a/", t).unwrap_err(),
            ProxyConfigError::UnsupportedScheme
        );
        for bad in [
            "",
            "127.0.0.1:1/auth",
            "http:///x",
            "http://user:pw@h/",
            "https://user@h/",
        ] {
            assert_eq!(
                ConnectProxy::new(bad, t).unwrap_err(),
                ProxyConfigError::InvalidUrl,
                "{bad}"
            );
        }
        assert_eq!(
            ConnectProxy::new("http://h/", Duration::ZERO).unwrap_err(),
            ProxyConfigError::ZeroTimeout
        );
    }

    #[test]
    fn debug_output_leaves_out_the_query_string() {
        for (url, shown_url) in [
            ("http://h:1/auth?key=s3cret", "http://h:1/auth"),
            ("https://h/auth?key=s3cret", "https://h/auth"),
        ] {
            let proxy = ConnectProxy::new(url, Duration::from_secs(1)).unwrap();
            let shown = format!("{proxy:?}");
            assert!(shown.contains(shown_url) && !shown.contains("s3cret"), "{shown}");
        }
    }

    #[test]
    fn accepted_bodies_are_parsed_strictly() {
        let id = parse_accepted(br#"{"userId":"u1","metadata":{"plan":"pro"},"rooms":["chat:*"]}"#).unwrap();
        assert_eq!(id.user_id.as_deref(), Some("u1"));
        assert_eq!(id.metadata["plan"], "pro");
        assert_eq!(id.rooms, Some(vec!["chat:*".to_owned()]));
        for bad in [
            &br#"{"userId":"u1","admin":true}"#[..],
            br#"{"userId":""}"#,
            br#"{"userId":7}"#,
            br#"{"metadata":{}}"#,
            br#"{"userId":"u1","rooms":"chat:*"}"#,
            b"not json",
        ] {
            assert!(parse_accepted(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
