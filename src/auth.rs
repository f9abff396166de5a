//! Bundled authenticators: JSON Web Tokens ([`JwtAuthenticator`]: HS256 with a secret, RS256/ES256 with a
//! public key, the algorithm pinned by configuration; [`JwksAuthenticator`]: RS256/ES256 with the keys an
//! identity provider publishes as a JWKS, selected by `kid`) and a connect proxy ([`proxy::ConnectProxy`]) that
//! asks an HTTP backend. The last two reach their endpoints over http or https ([`tls`]).
//!
//! For tokens, `sub` becomes the user id; `exp` is required and `nbf` honoured, with a small leeway; every claim
//! is kept as the connection's metadata. An optional `rooms` claim (a list of names or `prefix*` patterns)
//! becomes [`Identity::rooms`]: the server then only lets the client join and publish to matching rooms.

mod http;
pub mod jwks;
pub mod proxy;
pub mod tls;

pub use jwks::JwksAuthenticator;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::hooks::{AuthRequest, HookError, HookFuture, Identity, RoomRequest};
use crate::Hook;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 5;

/// Claims of a sealcast token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the user id.
    pub sub: String,
    /// Expiry (seconds since the Unix epoch).
    pub exp: u64,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Rooms the holder may join: exact names or `prefix*` patterns. Absent means any room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The HMAC secret is empty.
    #[error("the JWT secret must not be empty")]
    EmptySecret,
    /// Encoding failed.
    #[error("could not encode the token: {0}")]
    Encode(#[from] jsonwebtoken::errors::Error),
}

/// Why [`JwtAuthenticator`] refused a token. [`JwtAuthenticator`] logs it at `info` with the connection id (never
/// the token), so an operator can tell a token that expired or is used too early (clock skew) from one signed
/// with another key or algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The `authenticate` payload has no `token` string.
    #[error("no `token` string in the authenticate payload")]
    NoToken,
    /// Not three base64url parts with a JSON header and claims.
    #[error("not a well-formed JWT")]
    Malformed,
    /// `exp` is past (beyond the leeway).
    #[error("the token has expired (`exp`)")]
    Expired,
    /// `nbf` is ahead (beyond the leeway).
    #[error("the token is not valid yet (`nbf`)")]
    NotYetValid,
    /// The signature does not verify with the configured key.
    #[error("bad signature: the token was not signed with the configured key")]
    BadSignature,
    /// The header's `alg` is not the configured algorithm.
    #[error("wrong algorithm: the token's `alg` is not the configured {0}")]
    WrongAlgorithm(JwtAlgorithm),
    /// A required claim is absent, or not of its type (jsonwebtoken does not tell the two apart).
    #[error("the token has no usable `{0}` claim (absent or of the wrong type)")]
    MissingClaim(&'static str),
    /// A claim has the wrong type (`rooms` must be a list of strings), or `exp` is past what a time can hold.
    #[error("a claim has the wrong type or is out of range (`rooms` must be a list of strings, `exp` a time)")]
    BadClaims,
    /// ([`JwksAuthenticator`]) No key of the JWKS has the token's `kid`, even after a refresh (or a refresh was
    /// not allowed yet: see [`jwks::MIN_REFETCH_INTERVAL`]).
    #[error("unknown key: no key of the JWKS has the token's `kid`")]
    UnknownKey,
    /// ([`JwksAuthenticator`]) The token has no `kid` and the JWKS has more than one usable key.
    #[error("the token has no `kid` and the JWKS has more than one key to choose from")]
    NoKeyId,
    /// ([`JwksAuthenticator`]) No JWKS has been fetched yet (the endpoint is unreachable or serves nothing
    /// usable). The hook reports it as an authenticator error, not a rejection.
    #[error("no JWKS keys: the key set could not be fetched yet")]
    KeysUnavailable,
}

impl Refusal {
    fn of(e: &jsonwebtoken::errors::Error, algorithm: JwtAlgorithm) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Self::WrongAlgorithm(algorithm),
            ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                "sub" => Self::MissingClaim("sub"),
                "exp" => Self::MissingClaim("exp"),
                _ => Self::BadClaims,
            },
            ErrorKind::InvalidClaimFormat(_) | ErrorKind::InvalidSubject => Self::BadClaims,
            _ => Self::Malformed,
        }
    }
}

/// The signature algorithm a [`JwtAuthenticator`] accepts. It is pinned by configuration: the token's own
/// `alg` header is never trusted, so an RS256/ES256 deployment refuses HS256 tokens (the algorithm-confusion
/// attack) and every deployment refuses `alg: none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, verified with an RSA public key.
    Rs256,
    /// ECDSA on P-256 with SHA-256, verified with an EC public key.
    Es256,
}

impl JwtAlgorithm {
    /// The JOSE name (`HS256`, `RS256`, `ES256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }

    fn jose(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
        }
    }
}

impl std::fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JwtAlgorithm {
    type Err = JwtKeyError;

    /// Parses `HS256`, `RS256` or `ES256` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "HS256" => Ok(Self::Hs256),
            "RS256" => Ok(Self::Rs256),
            "ES256" => Ok(Self::Es256),
            _ => Err(JwtKeyError::UnknownAlgorithm),
        }
    }
}

/// Why a JWT verification key could not be loaded. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtKeyError {
    /// The algorithm name is not one of the supported ones.
    #[error("unknown JWT algorithm: use HS256, RS256 or ES256")]
    UnknownAlgorithm,
    /// HS256 takes a shared secret, not a public key.
    #[error("HS256 verifies with a shared secret, not a public key: pick RS256 or ES256 for a public key file")]
    NotAPublicKeyAlgorithm,
    /// The PEM text is not a public key of the algorithm's kind.
    #[error("not a valid {0} public key PEM (expected \"-----BEGIN PUBLIC KEY-----\")")]
    InvalidPublicKey(JwtAlgorithm),
}

/// A token verification key with its pinned algorithm: an HS256 secret or an RS256/ES256 public key.
#[derive(Clone)]
pub struct JwtKey {
    algorithm: JwtAlgorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtKey {{ algorithm: {}, key: [redacted] }}", self.algorithm)
    }
}

impl JwtKey {
    /// An HS256 shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            algorithm: JwtAlgorithm::Hs256,
            key: DecodingKey::from_secret(secret),
        }
    }

    /// An RS256 or ES256 public key in PEM (SubjectPublicKeyInfo, `-----BEGIN PUBLIC KEY-----`; RS256 also
    /// takes PKCS#1 `-----BEGIN RSA PUBLIC KEY-----`).
    ///
    /// ```
    /// use sealcast::auth::{JwtAlgorithm, JwtKey};
    ///
    /// let pem = "-----BEGIN PUBLIC KEY-----\n\
    ///            MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC0CgQ55xeahtqgOUEQvncFMOwVRu\n\
    ///            Q+yZXmWZIb/pbh8jeSBByvZuqe8oU+eWrBLtmiUPeoP3REY4TfuiUEvtpA==\n\
    ///            -----END PUBLIC KEY-----\n";
    /// let key = JwtKey::from_public_key_pem(JwtAlgorithm::Es256, pem.as_bytes())?;
    /// assert_eq!(key.algorithm(), JwtAlgorithm::Es256);
    /// assert!(JwtKey::from_public_key_pem(JwtAlgorithm::Hs256, pem.as_bytes()).is_err());
    /// # Ok::<(), sealcast::auth::JwtKeyError>(())
    /// ```
    pub fn from_public_key_pem(algorithm: JwtAlgorithm, pem: &[u8]) -> Result<Self, JwtKeyError> {
        let key = match algorithm {
            JwtAlgorithm::Hs256 => return Err(JwtKeyError::NotAPublicKeyAlgorithm),
            JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem),
            JwtAlgorithm::Es256 => DecodingKey::from_ec_pem(pem),
        }
        .map_err(|_| JwtKeyError::InvalidPublicKey(algorithm))?;
        Ok(Self { algorithm, key })
    }

    /// The algorithm tokens must be signed with.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }
}

struct Verifier {
    key: JwtKey,
    validation: Validation,
}

/// The claims checks every bundled JWT authenticator makes, for tokens of `algorithm` only.
fn validation(algorithm: JwtAlgorithm) -> Validation {
    // `Validation::new` pins `algorithms` to exactly this one: the header's `alg` must match it.
    let mut validation = Validation::new(algorithm.jose());
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation
}

/// A verified token's claims: [`Refusal::BadClaims`] when they are not of their types, or when `exp` is past
/// what a `SystemTime` holds (it becomes the credentials' expiry; `UNIX_EPOCH + exp` panicked for an `exp` of
/// 2^63 seconds or more, found by the `auth_token` fuzz target's identity check).
fn claims_of(claims: &Value) -> Result<Claims, Refusal> {
    let claims: Claims = serde_json::from_value(claims.clone()).map_err(|_| Refusal::BadClaims)?;
    if std::time::UNIX_EPOCH
        .checked_add(Duration::from_secs(claims.exp))
        .is_none()
    {
        return Err(Refusal::BadClaims);
    }
    Ok(claims)
}

/// The identity of a verified token: `sub`, every claim as metadata, `exp` as the credential's expiry, `rooms`.
fn identity_of(claims: Claims, all: Value) -> Identity {
    // `claims_of` refused an `exp` that does not fit; the epoch (long expired) is only a fallback.
    let expiry = std::time::UNIX_EPOCH
        .checked_add(Duration::from_secs(claims.exp))
        .unwrap_or(std::time::UNIX_EPOCH);
    let identity = Identity::user(claims.sub).with_metadata(all).expiring_at(expiry);
    match claims.rooms {
        Some(patterns) => identity.with_rooms(patterns),
        None => identity,
    }
}

impl Verifier {
    fn new(key: JwtKey) -> Arc<Self> {
        let validation = validation(key.algorithm);
        Arc::new(Self { key, validation })
    }
}

/// Verifies JSON Web Tokens carried in the `authenticate` payload's `token` field, with one pinned algorithm.
///
/// Clones share the key: [`JwtAuthenticator::reload`] on any clone (e.g. from a SIGHUP handler) switches every
/// clone to the new key for the next verification; sessions already established are not affected.
///
/// ```
/// use std::time::Duration;
/// use sealcast::auth::{self, JwtAuthenticator, JwtKey};
///
/// let verifier = JwtAuthenticator::hs256(b"old secret");
/// let token = auth::mint(b"old secret", "alice", Duration::from_secs(60), None)?;
/// assert!(verifier.verify(&token).is_some());
/// verifier.reload(JwtKey::hs256(b"new secret"));
/// assert!(verifier.verify(&token).is_none());
/// # Ok::<(), auth::TokenError>(())
/// ```
#[derive(Clone)]
pub struct JwtAuthenticator {
    current: Arc<RwLock<Arc<Verifier>>>,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "JwtAuthenticator {{ algorithm: {}, key: [redacted] }}",
            self.algorithm()
        )
    }
}

impl JwtAuthenticator {
    /// An authenticator for tokens verified with `key` (its algorithm is the only one accepted).
    pub fn new(key: JwtKey) -> Self {
        Self {
            current: Arc::new(RwLock::new(Verifier::new(key))),
        }
    }

    /// An authenticator for HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::new(JwtKey::hs256(secret))
    }

    /// An authenticator for RS256 or ES256 tokens, verified with a PEM public key
    /// (see [`JwtKey::from_public_key_pem`]).
    pub fn from_public_key_pem(algorithm: JwtAlgorithm, pem: &[u8]) -> Result<Self, JwtKeyError> {
        Ok(Self::new(JwtKey::from_public_key_pem(algorithm, pem)?))
    }

    /// Replaces the key (and with it the accepted algorithm) for every clone of this authenticator.
    pub fn reload(&self, key: JwtKey) {
        *self.current.write() = Verifier::new(key);
    }

    /// The algorithm currently accepted.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.current.read().key.algorithm
    }

    /// Checks a token; `None` when it is invalid, signed otherwise, expired or not yet valid.
    pub fn verify(&self, token: &str) -> Option<(Claims, Value)> {
        self.check(token).ok()
    }

    /// Checks a token: its claims, or why it is refused.
    pub fn check(&self, token: &str) -> Result<(Claims, Value), Refusal> {
        let verifier = self.current.read().clone();
        let data = jsonwebtoken::decode::<Value>(token, &verifier.key.key, &verifier.validation)
            .map_err(|e| Refusal::of(&e, verifier.key.algorithm))?;
        let claims = claims_of(&data.claims)?;
        Ok((claims, data.claims))
    }

    /// Checks a token and builds the identity it grants: what the authentication hook answers.
    pub fn identify(&self, token: &str) -> Result<Identity, Refusal> {
        self.check(token).map(|(claims, all)| identity_of(claims, all))
    }
}

impl Hook<AuthRequest, Option<Identity>> for JwtAuthenticator {
    fn call(&self, req: AuthRequest) -> HookFuture<Option<Identity>> {
        let checked = match req.data.get("token").and_then(Value::as_str) {
            Some(token) => self.identify(token),
            None => Err(Refusal::NoToken),
        };
        let outcome = match checked {
            Ok(identity) => Some(identity),
            Err(reason) => {
                tracing::info!(client = %req.client_id, %reason, "authentication refused");
                None
            }
        };
        Box::pin(async move { Ok::<_, HookError>(outcome) })
    }
}

/// Mints an HS256 token for `sub`, valid for `ttl`, limited to `rooms` patterns if given.
pub fn mint(secret: &[u8], sub: &str, ttl: Duration, rooms: Option<Vec<String>>) -> Result<String, TokenError> {
    if secret.is_empty() {
        return Err(TokenError::EmptySecret);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        sub: sub.to_owned(),
        exp: now.saturating_add(ttl.as_secs()),
        iat: Some(now),
        rooms,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )?)
}

/// Generates a random 32-byte secret, hex encoded (for development mode).
pub fn random_secret() -> Zeroizing<String> {
    use rand::RngCore;
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    Zeroizing::new(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub use crate::protocol::room::allowed as room_allowed;

/// A room validator driven by a `rooms` list in the connection's metadata (where [`JwtAuthenticator`] keeps
/// every claim): without it every requested room is allowed, with it only matching ones. The server applies
/// [`Identity::rooms`] to joins before any validator runs, so this one only adds the metadata check.
pub fn rooms_claim_validator(req: RoomRequest) -> HookFuture<Vec<String>> {
    let patterns: Option<Vec<String>> = req
        .metadata
        .get("rooms")
        .and_then(|r| serde_json::from_value(r.clone()).ok());
    let allowed = match patterns {
        None => req.rooms,
        Some(p) => req.rooms.into_iter().filter(|r| room_allowed(&p, r)).collect(),
    };
    Box::pin(async move { Ok(allowed) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exp_past_what_a_time_holds_is_refused_not_a_panic() {
        // `UNIX_EPOCH + exp` panicked here for exp >= 2^63 s (fuzz/regressions/auth_token/).
        let token = |exp: u64| {
            let claims = serde_json::json!({"sub": "alice", "exp": exp});
            jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(b"k")).unwrap()
        };
        let auth = JwtAuthenticator::hs256(b"k");
        for exp in [u64::MAX, 1 << 63] {
            assert!(matches!(auth.check(&token(exp)), Err(Refusal::BadClaims)), "{exp}");
            assert!(matches!(auth.identify(&token(exp)), Err(Refusal::BadClaims)), "{exp}");
        }
        let far = 253_402_300_799; // 9999-12-31T23:59:59Z
        let identity = auth.identify(&token(far)).unwrap();
        assert_eq!(identity.expires_at, Some(UNIX_EPOCH + Duration::from_secs(far)));
    }

    #[test]
    fn minted_token_verifies_and_wrong_secret_fails() {
        let t = mint(b"s3cret", "alice", Duration::from_secs(60), None).unwrap();
        let (claims, _) = JwtAuthenticator::hs256(b"s3cret").verify(&t).unwrap();
        assert_eq!(claims.sub, "alice");
        assert!(JwtAuthenticator::hs256(b"other").verify(&t).is_none());
    }

    #[test]
    fn expired_token_is_refused() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims = Claims {
            sub: "a".into(),
            exp: now - 60,
            iat: None,
            rooms: None,
        };
        let t = jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(b"k")).unwrap();
        assert!(JwtAuthenticator::hs256(b"k").verify(&t).is_none());
    }

    #[test]
    fn refusals_say_why() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let hs = JwtAuthenticator::hs256(b"k");
        let signed = |claims: Value, alg: Algorithm| {
            jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(b"k")).unwrap()
        };
        let hs256 = |claims: Value| signed(claims, Algorithm::HS256);
        let cases = [
            (
                hs256(serde_json::json!({"sub": "a", "exp": now - 60})),
                Refusal::Expired,
            ),
            (
                hs256(serde_json::json!({"sub": "a", "exp": now + 60, "nbf": now + 60})),
                Refusal::NotYetValid,
            ),
            (
                mint(b"other", "a", Duration::from_secs(60), None).unwrap(),
                Refusal::BadSignature,
            ),
            (
                signed(serde_json::json!({"sub": "a", "exp": now + 60}), Algorithm::HS384),
                Refusal::WrongAlgorithm(JwtAlgorithm::Hs256),
            ),
            (
                hs256(serde_json::json!({"exp": now + 60})),
                Refusal::MissingClaim("sub"),
            ),
            (
                hs256(serde_json::json!({"sub": 7, "exp": now + 60})),
                Refusal::MissingClaim("sub"),
            ),
            (
                hs256(serde_json::json!({"sub": "a", "exp": now + 60, "rooms": "chat:*"})),
                Refusal::BadClaims,
            ),
            ("not.a.jwt".to_owned(), Refusal::Malformed),
        ];
        for (token, why) in cases {
            assert_eq!(hs.check(&token).err(), Some(why), "{why}");
        }
    }

    #[test]
    fn room_patterns_match_prefixes_and_exact_names() {
        let p = vec!["chat:*".to_owned(), "lobby".to_owned()];
        assert!(room_allowed(&p, "chat:x"));
        assert!(room_allowed(&p, "lobby"));
        assert!(!room_allowed(&p, "lobby2"));
        assert!(!room_allowed(&p, "admin"));
    }
}
