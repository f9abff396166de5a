//! JWKS: RS256/ES256 tokens verified with the keys an identity provider publishes at a URL (RFC 7517), chosen
//! by the token's `kid`.
//!
//! - **One algorithm**, pinned by configuration like [`super::JwtAuthenticator`]'s: a token whose header says
//!   another `alg` is refused before any key is looked at, and only keys of that algorithm are taken from the
//!   set: `kty` `RSA` (2048 to 4096 bits) for RS256, `kty` `EC` with `crv` `P-256` (a valid point) for ES256,
//!   and in both cases `use` absent or `sig`, `key_ops` absent or containing `verify`, `alg` absent or the
//!   configured one. Other keys (encryption keys, other algorithms, unknown key types) are skipped; a `kid`
//!   seen twice keeps its first key.
//! - **Selection by `kid`**: a token with a `kid` is verified with that key only. A token without one is
//!   accepted only when the set holds exactly one usable key.
//! - **Cached and refreshed**: the set is fetched by [`JwksAuthenticator::refresh`] (the binary calls it at
//!   startup), then every [`DEFAULT_REFRESH_INTERVAL`] by the task [`JwksAuthenticator::spawn_refresher`]
//!   starts, and on demand when a token names a `kid` the set does not have (a key rotation): at most once per
//!   [`MIN_REFETCH_INTERVAL`], one fetch at a time, so tokens with made-up `kid`s cannot make the server hammer
//!   the endpoint. A failed fetch (unreachable, TLS, status, timeout, over [`MAX_JWKS_BYTES`], over
//!   [`MAX_KEYS`] keys, malformed, no usable key) keeps the last good set and is logged at `warn`.
//! - **Until a first set arrives** tokens are refused with an authenticator error ([`Refusal::KeysUnavailable`],
//!   the client gets `Authentication error`); the refresher retries every [`MIN_REFETCH_INTERVAL`] meanwhile.
//!
//! The endpoint is `http://` or `https://` (the system's trusted roots, or only a configured CA: see
//! [`super::tls`]). Neither tokens nor the URL's query string are logged.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{DecodingKey, Validation};
use parking_lot::RwLock;
use serde::Deserialize;
use serde_json::Value;

use super::http::{Endpoint, FetchError, UrlError};
use super::tls::TlsRoots;
use super::{claims_of, identity_of, validation, Claims, JwtAlgorithm, Refusal};
use crate::hooks::{AuthRequest, Hook, HookError, HookFuture, Identity};

/// Largest JWKS document read.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Most keys a JWKS document may list (all kinds counted); a larger set is refused whole.
pub const MAX_KEYS: usize = 100;
/// Default bound on one fetch (connection, TLS handshake and body included).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time between two scheduled refreshes.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Default shortest time between two fetches triggered by tokens (an unknown `kid`, no set yet), and the retry
/// period of the refresher while no set has been fetched.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Longest `kid` kept.
const MAX_KID_LEN: usize = 256;
const MIN_RSA_BITS: usize = 2048;
/// What the RSA verifier (RustCrypto `rsa`) accepts.
const MAX_RSA_BITS: usize = 4096;

/// Why a [`JwksAuthenticator`] could not be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksConfigError {
    /// The URL does not parse, lacks a host or carries credentials (`user:password@`).
    #[error("the JWKS URL must look like https://host[:port]/path (or http://), without credentials")]
    InvalidUrl,
    /// The scheme is neither `http` nor `https`.
    #[error("the JWKS URL must use https:// or http://")]
    UnsupportedScheme,
    /// HS256 keys are shared secrets, which a JWKS does not publish.
    #[error("a JWKS publishes public keys: use RS256 or ES256, not HS256")]
    NotAPublicKeyAlgorithm,
    /// A timeout or interval is zero.
    #[error("the JWKS {0} must be greater than zero")]
    Zero(&'static str),
}

/// Why a JWKS fetch failed (the last good key set stays in use). Never holds the document or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The endpoint could not be reached.
    #[error("cannot connect to the JWKS endpoint: {0}")]
    Connect(std::io::ErrorKind),
    /// The TLS handshake failed (rustls's reason: unknown issuer, wrong host name, ...), or the system's roots
    /// could not be loaded.
    #[error("TLS with the JWKS endpoint failed: {0}")]
    Tls(String),
    /// The HTTP exchange failed.
    #[error("HTTP exchange with the JWKS endpoint failed")]
    Http,
    /// The endpoint answered a status other than 200 (redirects are not followed).
    #[error("the JWKS endpoint answered HTTP {0}")]
    Status(u16),
    /// The document is larger than [`MAX_JWKS_BYTES`].
    #[error("the JWKS document is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// No complete answer within the timeout.
    #[error("the JWKS endpoint did not answer in time")]
    Timeout,
    /// The document is not a JSON object with a `keys` list.
    #[error("the JWKS document is not a JSON object with a `keys` list")]
    Malformed,
    /// The document lists more than [`MAX_KEYS`] keys.
    #[error("the JWKS document lists {0} keys, more than {MAX_KEYS}")]
    TooManyKeys(usize),
    /// No key of the document is usable for the configured algorithm.
    #[error("the JWKS document has no usable {0} signature key")]
    NoUsableKeys(JwtAlgorithm),
}

impl From<FetchError> for JwksError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Connect(kind) => Self::Connect(kind),
            FetchError::Tls(reason) => Self::Tls(reason),
            FetchError::Http => Self::Http,
            FetchError::TooLarge => Self::TooLarge,
        }
    }
}

/// Configures a [`JwksAuthenticator`]; from [`JwksAuthenticator::builder`].
#[derive(Clone)]
pub struct JwksBuilder {
    endpoint: Endpoint,
    algorithm: JwtAlgorithm,
    timeout: Duration,
    refresh_interval: Duration,
    min_refetch_interval: Duration,
}

impl std::fmt::Debug for JwksBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksBuilder")
            .field("url", &self.endpoint.display())
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl JwksBuilder {
    /// Bound on one fetch, connection and TLS handshake included (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time between two scheduled refreshes (default [`DEFAULT_REFRESH_INTERVAL`]).
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// Shortest time between two fetches that tokens trigger (default [`MIN_REFETCH_INTERVAL`]).
    pub fn min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch_interval = interval;
        self
    }

    /// Trusts only `roots` for an https URL (e.g. [`TlsRoots::from_ca_file`]) instead of the system's store.
    /// No effect on an `http://` URL.
    pub fn tls_roots(mut self, roots: TlsRoots) -> Self {
        self.endpoint = self.endpoint.with_roots(roots);
        self
    }

    /// The authenticator, with no key yet: call [`JwksAuthenticator::refresh`] and
    /// [`JwksAuthenticator::spawn_refresher`] (or let the first token trigger a fetch).
    pub fn build(self) -> Result<JwksAuthenticator, JwksConfigError> {
        for (what, d) in [
            ("timeout", self.timeout),
            ("refresh interval", self.refresh_interval),
            ("minimum refetch interval", self.min_refetch_interval),
        ] {
            if d.is_zero() {
                return Err(JwksConfigError::Zero(what));
            }
        }
        Ok(JwksAuthenticator {
            inner: Arc::new(Inner {
                validation: validation(self.algorithm),
                endpoint: self.endpoint,
                algorithm: self.algorithm,
                timeout: self.timeout,
                refresh_interval: self.refresh_interval,
                min_refetch_interval: self.min_refetch_interval,
                keys: RwLock::new(Arc::new(KeySet::default())),
                fetch: tokio::sync::Mutex::new(FetchState::default()),
                last_error: parking_lot::Mutex::new(None),
            }),
        })
    }
}

/// Verifies RS256 or ES256 tokens with the keys of a JWKS endpoint (see the [module documentation](self) for
/// the rules). Cheap to clone; clones share the key set and its fetches.
///
/// ```no_run
/// use sealcast::auth::{JwksAuthenticator, JwtAlgorithm};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let jwks = JwksAuthenticator::builder("https://idp.example/.well-known/jwks.json", JwtAlgorithm::Rs256)?
///     .refresh_interval(std::time::Duration::from_secs(600))
///     .build()?;
/// // Start with keys if the endpoint answers; without, tokens are refused until a refresh succeeds.
/// if let Err(e) = jwks.refresh().await {
///     eprintln!("no JWKS yet: {e}");
/// }
/// let _refresher = jwks.spawn_refresher();
/// let server = sealcast::Server::builder().authenticator(jwks).build()?;
/// # drop(server);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct JwksAuthenticator {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    algorithm: JwtAlgorithm,
    validation: Validation,
    timeout: Duration,
    refresh_interval: Duration,
    min_refetch_interval: Duration,
    keys: RwLock<Arc<KeySet>>,
    /// Held for the length of a fetch: one fetch at a time.
    fetch: tokio::sync::Mutex<FetchState>,
    /// Why the last fetch failed (cleared by a success), for the authenticator error while no set is there.
    last_error: parking_lot::Mutex<Option<JwksError>>,
}

#[derive(Default)]
struct FetchState {
    /// When tokens last triggered a fetch (scheduled refreshes do not count: a rotation right after one must
    /// still be picked up).
    last_on_demand: Option<Instant>,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
}

impl KeySet {
    fn select(&self, kid: Option<&str>) -> Result<&DecodingKey, Refusal> {
        match (kid, self.keys.as_slice()) {
            (_, []) => Err(Refusal::KeysUnavailable),
            (Some(kid), keys) => keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .map(|k| &k.key)
                .ok_or(Refusal::UnknownKey),
            (None, [only]) => Ok(&only.key),
            (None, _) => Err(Refusal::NoKeyId),
        }
    }

    fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_deref().unwrap_or("")).collect()
    }
}

impl std::fmt::Debug for JwksAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksAuthenticator")
            .field("url", &self.inner.endpoint.display())
            .field("algorithm", &self.inner.algorithm)
            .field("keys", &self.key_count())
            .finish()
    }
}

impl JwksAuthenticator {
    /// Starts configuring an authenticator for tokens of `algorithm` (RS256 or ES256) with the keys at `url`
    /// (`https://...` or `http://...`). Does no I/O: for https the system's roots are loaded on first use unless
    /// [`JwksBuilder::tls_roots`] sets others.
    pub fn builder(url: &str, algorithm: JwtAlgorithm) -> Result<JwksBuilder, JwksConfigError> {
        if algorithm == JwtAlgorithm::Hs256 {
            return Err(JwksConfigError::NotAPublicKeyAlgorithm);
        }
        let endpoint = Endpoint::parse(url).map_err(|e| match e {
            UrlError::Invalid => JwksConfigError::InvalidUrl,
            UrlError::Scheme => JwksConfigError::UnsupportedScheme,
        })?;
        Ok(JwksBuilder {
            endpoint,
            algorithm,
            timeout: DEFAULT_TIMEOUT,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            min_refetch_interval: MIN_REFETCH_INTERVAL,
        })
    }

    /// [`Self::builder`] with the defaults.
    pub fn new(url: &str, algorithm: JwtAlgorithm) -> Result<Self, JwksConfigError> {
        Self::builder(url, algorithm)?.build()
    }

    /// The only algorithm accepted.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.inner.algorithm
    }

    /// How many usable keys the current set holds (0 before the first successful fetch).
    pub fn key_count(&self) -> usize {
        self.inner.keys.read().keys.len()
    }

    /// Fetches the set now (waiting for a fetch already under way, then fetching again) and replaces the cached
    /// one: the number of usable keys, or why the fetch failed (the last good set is kept; the failure is
    /// logged at `warn`).
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _one_at_a_time = self.inner.fetch.lock().await;
        self.fetch().await
    }

    /// Spawns the task that refreshes the set every refresh interval (every minimum refetch interval while
    /// no set has been fetched or after a failure). It ends by itself once every clone of this authenticator is
    /// dropped. Needs a tokio runtime.
    pub fn spawn_refresher(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let mut healthy = self.key_count() > 0;
        tokio::spawn(async move {
            loop {
                let delay = match weak.upgrade() {
                    Some(inner) if healthy => inner.refresh_interval,
                    Some(inner) => inner.min_refetch_interval.min(inner.refresh_interval),
                    None => return,
                };
                tokio::time::sleep(delay).await;
                let Some(inner) = weak.upgrade() else { return };
                healthy = Self { inner }.refresh().await.is_ok();
            }
        })
    }

    /// Checks a token: its claims, or why it is refused. A `kid` the set lacks (or a token arriving while no set
    /// has been fetched) triggers a fetch first, if the minimum refetch interval allows one.
    pub async fn check(&self, token: &str) -> Result<(Claims, Value), Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
        // Before any key lookup, so that a token of another algorithm never triggers a fetch.
        if header.alg != self.inner.algorithm.jose() {
            return Err(Refusal::WrongAlgorithm(self.inner.algorithm));
        }
        let kid = header.kid.as_deref();
        match self.verify_with(kid, token) {
            Err(Refusal::UnknownKey | Refusal::KeysUnavailable) => {
                self.refetch_for(kid).await;
                self.verify_with(kid, token)
            }
            outcome => outcome,
        }
    }

    fn verify_with(&self, kid: Option<&str>, token: &str) -> Result<(Claims, Value), Refusal> {
        let set = self.inner.keys.read().clone();
        let key = set.select(kid)?;
        let data = jsonwebtoken::decode::<Value>(token, key, &self.inner.validation)
            .map_err(|e| Refusal::of(&e, self.inner.algorithm))?;
        let claims = claims_of(&data.claims)?;
        Ok((claims, data.claims))
    }

    /// The on-demand fetch: single-flight and rate-limited.
    async fn refetch_for(&self, kid: Option<&str>) {
        let mut state = self.inner.fetch.lock().await;
        // A fetch that finished while this one waited for the lock may have brought the key.
        if self.inner.keys.read().select(kid).is_ok() {
            return;
        }
        let now = Instant::now();
        if state
            .last_on_demand
            .is_some_and(|at| now.duration_since(at) < self.inner.min_refetch_interval)
        {
            return;
        }
        state.last_on_demand = Some(now);
        let _ = self.fetch().await;
    }

    /// One fetch; the caller holds the fetch lock.
    async fn fetch(&self) -> Result<usize, JwksError> {
        let inner = &self.inner;
        let fetched = tokio::time::timeout(
            inner.timeout,
            inner.endpoint.exchange(Method::GET, None, MAX_JWKS_BYTES),
        )
        .await;
        let parsed = match fetched {
            Err(_) => Err(JwksError::Timeout),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok((StatusCode::OK, body))) => parse_set(&body, inner.algorithm),
            Ok(Ok((status, _))) => Err(JwksError::Status(status.as_u16())),
        };
        match parsed {
            Ok(set) => {
                let count = set.keys.len();
                let previous = std::mem::replace(&mut *inner.keys.write(), Arc::new(set));
                *inner.last_error.lock() = None;
                let current = inner.keys.read().clone();
                if previous.kids() != current.kids() {
                    tracing::info!(url = %inner.endpoint.display(), keys = count, kids = ?current.kids(), "JWKS key set loaded");
                } else {
                    tracing::debug!(url = %inner.endpoint.display(), keys = count, "JWKS key set refreshed, unchanged");
                }
                Ok(count)
            }
            Err(error) => {
                let kept = inner.keys.read().keys.len();
                tracing::warn!(url = %inner.endpoint.display(), %error, kept, "JWKS fetch failed; keeping the last good key set");
                *inner.last_error.lock() = Some(error.clone());
                Err(error)
            }
        }
    }
}

impl Hook<AuthRequest, Option<Identity>> for JwksAuthenticator {
    fn call(&self, req: AuthRequest) -> HookFuture<Option<Identity>> {
        let this = self.clone();
        Box::pin(async move {
            let checked = match req.data.get("token").and_then(Value::as_str) {
                Some(token) => this.check(token).await,
                None => Err(Refusal::NoToken),
            };
            match checked {
                Ok((claims, all)) => Ok(Some(identity_of(claims, all))),
                Err(Refusal::KeysUnavailable) => {
                    let why = this.inner.last_error.lock().clone();
                    let text = match why {
                        Some(why) => format!("{}: {why}", Refusal::KeysUnavailable),
                        None => Refusal::KeysUnavailable.to_string(),
                    };
                    Err(HookError::from(text))
                }
                Err(reason) => {
                    tracing::info!(client = %req.client_id, %reason, "authentication refused");
                    Ok(None)
                }
            }
        })
    }
}

/// A JWK's members that matter here; the others are ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(rename = "use", default)]
    use_: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<Value>,
}

fn parse_set(body: &[u8], algorithm: JwtAlgorithm) -> Result<KeySet, JwksError> {
    let document: Document = serde_json::from_slice(body).map_err(|_| JwksError::Malformed)?;
    if document.keys.len() > MAX_KEYS {
        return Err(JwksError::TooManyKeys(document.keys.len()));
    }
    let mut keys: Vec<Key> = Vec::new();
    for raw in document.keys {
        // A key of a kind this crate does not know is skipped, not a reason to refuse the others.
        let Ok(jwk) = serde_json::from_value::<RawJwk>(raw) else {
            continue;
        };
        let Some(key) = usable(jwk, algorithm) else {
            continue;
        };
        if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) {
            continue;
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKeys(algorithm));
    }
    Ok(KeySet { keys })
}

fn usable(jwk: RawJwk, algorithm: JwtAlgorithm) -> Option<Key> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig")
        || jwk
            .key_ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|o| o == "verify"))
        || jwk.alg.as_deref().is_some_and(|a| a != algorithm.as_str())
        || jwk.kid.as_ref().is_some_and(|k| k.is_empty() || k.len() > MAX_KID_LEN)
    {
        return None;
    }
    let b64 = |text: Option<&String>| text.and_then(|t| URL_SAFE_NO_PAD.decode(t).ok());
    let key = match algorithm {
        JwtAlgorithm::Hs256 => return None,
        JwtAlgorithm::Rs256 => {
            if jwk.kty != "RSA" {
                return None;
            }
            let n = b64(jwk.n.as_ref())?;
            let e = b64(jwk.e.as_ref())?;
            let n = strip_leading_zeros(&n);
            let e = strip_leading_zeros(&e);
            let first = n.first()?;
            let bits = n.len() * 8 - first.leading_zeros() as usize;
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) || e.is_empty() || e.len() > 4 {
                return None;
            }
            DecodingKey::from_rsa_raw_components(n, e)
        }
        JwtAlgorithm::Es256 => {
            if jwk.kty != "EC" || jwk.crv.as_deref() != Some("P-256") {
                return None;
            }
            let x = b64(jwk.x.as_ref())?;
            let y = b64(jwk.y.as_ref())?;
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            // jsonwebtoken would only find an off-curve point when a token is checked; refuse it here.
            let mut sec1 = Vec::with_capacity(65);
            sec1.push(0x04);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            p256::PublicKey::from_sec1_bytes(&sec1).ok()?;
            DecodingKey::from_ec_components(jwk.x.as_deref()?, jwk.y.as_deref()?).ok()?
        }
    };
    Some(Key { kid: jwk.kid, key })
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A valid P-256 point (the generator).
    const GX: &str = "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY";
    const GY: &str = "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU";

    fn ec(extra: Value) -> Value {
        let mut key = json!({"kty": "EC", "crv": "P-256", "x": GX, "y": GY});
        if let (Some(key), Some(extra)) = (key.as_object_mut(), extra.as_object()) {
            key.extend(extra.clone());
        }
        key
    }

    fn set(keys: &[Value]) -> Vec<u8> {
        serde_json::to_vec(&json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn only_signature_keys_of_the_configured_algorithm_are_kept() {
        let keys = [
            ec(json!({"kid": "ok", "use": "sig", "alg": "ES256", "key_ops": ["verify"]})),
            ec(json!({"kid": "plain"})),
            ec(json!({"kid": "enc", "use": "enc"})),
            ec(json!({"kid": "ops", "key_ops": ["encrypt"]})),
            ec(json!({"kid": "alg", "alg": "ES384"})),
            ec(json!({"kid": "curve", "crv": "P-384"})),
            ec(json!({"kid": "short", "x": "AQ"})),
            ec(json!({"kid": "off-curve", "y": GX})),
            json!({"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"}),
            json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": GX}),
            json!({"kty": "AKP", "kid": "future"}),
            json!("not an object"),
            ec(json!({"kid": "ok"})),
        ];
        let parsed = parse_set(&set(&keys), JwtAlgorithm::Es256).unwrap();
        assert_eq!(parsed.kids(), ["ok", "plain"]);
        assert_eq!(
            parse_set(&set(&keys), JwtAlgorithm::Rs256).err(),
            Some(JwksError::NoUsableKeys(JwtAlgorithm::Rs256))
        );
    }

    #[test]
    fn small_rsa_keys_and_oversized_sets_are_refused() {
        let small = json!({"kty": "RSA", "kid": "small", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB"});
        let fine = json!({"kty": "RSA", "kid": "fine", "n": URL_SAFE_NO_PAD.encode([0xffu8; 256]), "e": "AQAB"});
        let parsed = parse_set(&set(&[small, fine]), JwtAlgorithm::Rs256).unwrap();
        assert_eq!(parsed.kids(), ["fine"]);
        let many: Vec<Value> = (0..=MAX_KEYS).map(|i| ec(json!({ "kid": i.to_string() }))).collect();
        assert_eq!(
            parse_set(&set(&many), JwtAlgorithm::Es256).err(),
            Some(JwksError::TooManyKeys(MAX_KEYS + 1))
        );
        for bad in [&b"[]"[..], b"{}", b"{\"keys\": {}}", b"not json"] {
            assert_eq!(parse_set(bad, JwtAlgorithm::Es256).err(), Some(JwksError::Malformed));
        }
    }

    #[test]
    fn a_token_without_kid_needs_a_set_of_exactly_one_key() {
        let one = parse_set(&set(&[ec(json!({"kid": "a"}))]), JwtAlgorithm::Es256).unwrap();
        assert!(one.select(None).is_ok());
        assert!(one.select(Some("a")).is_ok());
        assert_eq!(one.select(Some("b")).err(), Some(Refusal::UnknownKey));
        let two = parse_set(
            &set(&[ec(json!({"kid": "a"})), ec(json!({"kid": "b"}))]),
            JwtAlgorithm::Es256,
        )
        .unwrap();
        assert_eq!(two.select(None).err(), Some(Refusal::NoKeyId));
        assert_eq!(
            KeySet::default().select(Some("a")).err(),
            Some(Refusal::KeysUnavailable)
        );
    }

    #[test]
    fn configuration_is_checked_without_io() {
        assert_eq!(
            JwksAuthenticator::new("https://idp/jwks", JwtAlgorithm::Hs256).err(),
            Some(JwksConfigError::NotAPublicKeyAlgorithm)
        );
        assert_eq!(
            JwksAuthenticator::new("ftp://idp/jwks", JwtAlgorithm::Rs256).err(),
            Some(JwksConfigError::UnsupportedScheme)
        );
        assert_eq!(
            JwksAuthenticator::new("https://u:p@idp/jwks", JwtAlgorithm::Rs256).err(),
            Some(JwksConfigError::InvalidUrl)
        );
        let jwks = JwksAuthenticator::new("https://idp/jwks?key=s3cret", JwtAlgorithm::Es256).unwrap();
        let shown = format!("{jwks:?}");
        assert!(
            shown.contains("https://idp/jwks") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert_eq!(jwks.key_count(), 0);
    }
}
