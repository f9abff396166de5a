//! `auth_token`: the bundled HS256 authenticator's token parsing (`JwtAuthenticator::verify`).
//!
//! Oracles: nothing panics; an accepted token has a JOSE header with `alg` HS256, a `sub` and an `exp` not in
//! the past (beyond the leeway), and its claims are what the payload segment says.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sealcast::auth::{JwtAuthenticator, LEEWAY_SECS};
use serde_json::Value;

/// The secret the seed tokens are signed with.
pub const SECRET: &[u8] = b"sealcast fuzz secret";

/// The fuzz target.
pub fn check(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let auth = JwtAuthenticator::hs256(SECRET);
    // The identity the authentication hook answers with: granted exactly for an accepted token, for its `sub`,
    // expiring at its `exp`, with every claim as metadata.
    let identity = auth.identify(token);
    let Some((claims, all)) = auth.verify(token) else {
        assert!(identity.is_err(), "an identity for a refused token");
        return;
    };
    let identity = identity.unwrap_or_else(|e| panic!("accepted token without an identity: {e}"));
    assert_eq!(identity.user_id.as_deref(), Some(claims.sub.as_str()));
    assert_eq!(
        identity.expires_at,
        UNIX_EPOCH.checked_add(std::time::Duration::from_secs(claims.exp)),
        "the identity's expiry is not the token's exp"
    );
    assert_eq!(identity.metadata, all);
    assert_eq!(identity.rooms, claims.rooms);
    let mut parts = token.split('.');
    let segment = |p: Option<&str>| -> Value {
        let raw = URL_SAFE_NO_PAD
            .decode(p.unwrap_or_default())
            .unwrap_or_else(|e| panic!("accepted token segment is not base64url: {e}"));
        serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("accepted token segment is not JSON: {e}"))
    };
    let header = segment(parts.next());
    assert_eq!(header["alg"], "HS256", "accepted a token not signed with HS256");
    let payload = segment(parts.next());
    assert_eq!(payload, all);
    assert_eq!(payload["sub"], claims.sub.as_str());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    assert!(claims.exp.saturating_add(LEEWAY_SECS) >= now, "expired token accepted");
}
