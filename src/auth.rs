//! Bundled authenticator: HS256 JSON Web Tokens carried in the `authenticate` payload's `token` field.
//!
//! `sub` becomes the user id; `exp` is required and `nbf` honoured, with a small leeway; every claim is kept as
//! the connection's metadata. An optional `rooms` claim (a list of names or `prefix*` patterns) is what
//! [`rooms_claim_validator`] allows a client to join.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
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

/// Verifies HS256 tokens.
#[derive(Clone)]
pub struct Hs256Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Hs256Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hs256Authenticator { key: [redacted] }")
    }
}

impl Hs256Authenticator {
    /// An authenticator for tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Checks a token; `None` when it is invalid, expired or not yet valid.
    pub fn verify(&self, token: &str) -> Option<(Claims, Value)> {
        let data = jsonwebtoken::decode::<Value>(token, &self.key, &self.validation).ok()?;
        let claims: Claims = serde_json::from_value(data.claims.clone()).ok()?;
        Some((claims, data.claims))
    }
}

impl Hook<AuthRequest, Option<Identity>> for Hs256Authenticator {
    fn call(&self, req: AuthRequest) -> HookFuture<Option<Identity>> {
        let outcome = req
            .data
            .get("token")
            .and_then(Value::as_str)
            .and_then(|t| self.verify(t))
            .map(|(claims, all)| {
                let expiry = std::time::UNIX_EPOCH + Duration::from_secs(claims.exp);
                Identity::user(claims.sub).with_metadata(all).expiring_at(expiry)
            });
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

/// True when `room` matches one of `patterns` (exact, or `prefix*`).
pub fn room_allowed(patterns: &[String], room: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => p == room,
    })
}

/// A room validator driven by the token's `rooms` claim (kept in the metadata by [`Hs256Authenticator`]):
/// without the claim every requested room is allowed, with it only matching ones.
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
    fn minted_token_verifies_and_wrong_secret_fails() {
        let t = mint(b"s3cret", "alice", Duration::from_secs(60), None).unwrap();
        let (claims, _) = Hs256Authenticator::new(b"s3cret").verify(&t).unwrap();
        assert_eq!(claims.sub, "alice");
        assert!(Hs256Authenticator::new(b"other").verify(&t).is_none());
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
        assert!(Hs256Authenticator::new(b"k").verify(&t).is_none());
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
