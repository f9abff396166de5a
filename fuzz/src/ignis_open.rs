//! `ignis_open`: frames of the reference-compatible suite (wsenc/1 §10) through `IgnisKey::open`, keyed with the
//! interop vector of Appendix C of `docs/spec/wsenc1.md`.
//!
//! Input: a raw frame, or `!seal TEXT` to seal TEXT (fixed IV) and open the result. Oracles: a sealed frame opens
//! to its plaintext; an accepted frame is an exact `encrypted` envelope whose `ct` is what sealing the returned
//! plaintext under its `iv` gives (so nothing unauthenticated gets through).

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sealcast::crypto::backend::EcSecretKey;
use sealcast::crypto::ignis::{self, IgnisKey};
use serde_json::Value;

/// The server scalar of the interop vector.
pub const SERVER_SCALAR: &str = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721";
/// The client key of the interop vector (standard base64).
pub const CLIENT_PUBLIC: &str =
    "BOrSGFkBGeiHaykUb/icphdwxO27+X04zjhe0oHYprIwKK9hKB/TXi+nACUjrMhaQpywbuZkgyU4n1nt/OFAUUE=";

/// The interop vector's session key (derived once).
pub fn key() -> &'static IgnisKey {
    static KEY: OnceLock<IgnisKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let server = EcSecretKey::from_scalar_bytes(&super::record_open::hex32(SERVER_SCALAR))
            .unwrap_or_else(|_| panic!("interop scalar"));
        let client = ignis::parse_public_key(CLIENT_PUBLIC).unwrap_or_else(|_| panic!("interop client key"));
        ignis::derive(&server, &client, &[0x11; 32])
    })
}

/// The fuzz target.
pub fn check(data: &[u8]) {
    let key = key();
    if let Some(text) = data.strip_prefix(b"!seal ") {
        let frame = key
            .seal_with_iv(&[0x22; 12], text)
            .unwrap_or_else(|e| panic!("seal failed: {e}"));
        assert_eq!(key.open(frame.as_bytes()).as_deref(), Ok(text));
        return;
    }
    let Ok(pt) = key.open(data) else {
        return;
    };
    let v: Value = serde_json::from_slice(data).unwrap_or_else(|e| panic!("accepted frame is not JSON: {e}"));
    assert_eq!(v["event"], "encrypted");
    let field = |name: &str| {
        let s = v["data"][name]
            .as_str()
            .unwrap_or_else(|| panic!("accepted frame without string {name}"));
        STANDARD
            .decode(s)
            .unwrap_or_else(|e| panic!("accepted {name} is not base64: {e}"))
    };
    let iv: [u8; 12] = field("iv")
        .try_into()
        .unwrap_or_else(|_| panic!("accepted iv is not 12 bytes"));
    let resealed = key
        .seal_with_iv(&iv, &pt)
        .unwrap_or_else(|e| panic!("reseal failed: {e}"));
    let again: Value = serde_json::from_str(&resealed).unwrap_or_else(|e| panic!("own frame: {e}"));
    let ct = STANDARD
        .decode(again["data"]["ct"].as_str().unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(
        field("ct"),
        ct,
        "accepted a ciphertext that is not the seal of its plaintext"
    );
}
