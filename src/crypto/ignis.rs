//! The reference framework's encryption suite (wsenc/1 §10), for clients built on Ignis' browser helper.
//!
//! ECDH P-256 between the client's key and a fresh server key, HKDF-SHA-256 with a random 32-byte salt and
//! info `ignis-ecdh-p256-aes-256-gcm-v1`, one AES-256-GCM key for both directions, a random 12-byte IV per
//! message, standard padded base64, envelope `{"event":"encrypted","data":{"iv":..,"ct":..}}`.
//!
//! **Weaker than wsenc/1 and never the default:** the server is not authenticated (an active intermediary can
//! substitute keys), records have no sequence numbers (replay, reordering and deletion go unnoticed), and one key
//! serves both directions (a record can be reflected). Use it only to serve existing Ignis clients.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;

use super::backend::{self, AeadKey, EcPublicKey, EcSecretKey, NONCE_LEN, PUBLIC_KEY_LEN, TAG_LEN};

/// The reference's HKDF info string.
pub const HKDF_INFO: &[u8] = b"ignis-ecdh-p256-aes-256-gcm-v1";
/// Salt length the reference uses.
pub const SALT_LEN: usize = 32;

/// What can go wrong with the reference suite. Carries no key material or plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IgnisError {
    /// The client's `publicKey` is not standard base64 of an uncompressed, valid P-256 point.
    #[error("invalid client public key")]
    InvalidPublicKey,
    /// The OS random number generator failed.
    #[error("OS random number generator failed")]
    Rng,
    /// The frame is not an `encrypted` envelope at all.
    #[error("not an encrypted envelope")]
    NotEncrypted,
    /// The envelope is malformed or does not decrypt.
    #[error("record rejected")]
    Record,
}

/// The one AES-256-GCM key of a session, shared by both directions.
#[derive(Clone)]
pub struct IgnisKey(Arc<AeadKey>);

impl std::fmt::Debug for IgnisKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IgnisKey([redacted])")
    }
}

/// The server's answer: fields for `connected` plus the session key.
#[derive(Debug)]
pub struct IgnisHello {
    /// Standard base64 of the server's 65-byte public key.
    pub server_public_key: String,
    /// Standard base64 of the 32-byte salt.
    pub salt: String,
    /// The session key.
    pub key: IgnisKey,
}

/// Derives the session key as the reference does: HKDF(salt, ECDH x-coordinate, info) → AES-256-GCM.
pub fn derive(secret: &EcSecretKey, peer: &EcPublicKey, salt: &[u8]) -> IgnisKey {
    let shared = secret.diffie_hellman(peer);
    let mut okm = zeroize::Zeroizing::new([0u8; 32]);
    // 32 bytes is always a valid HKDF-SHA-256 output length.
    let _ = backend::hkdf_sha256(salt, shared.as_ref(), &[HKDF_INFO], okm.as_mut());
    IgnisKey(Arc::new(AeadKey::new(&okm)))
}

/// Parses a client key in the reference's encoding (standard padded base64 of the 65-byte point).
pub fn parse_public_key(b64: &str) -> Result<EcPublicKey, IgnisError> {
    let raw = STANDARD.decode(b64).map_err(|_| IgnisError::InvalidPublicKey)?;
    if raw.len() != PUBLIC_KEY_LEN {
        return Err(IgnisError::InvalidPublicKey);
    }
    EcPublicKey::from_sec1_uncompressed(&raw).map_err(|_| IgnisError::InvalidPublicKey)
}

/// Server side: a fresh server key and salt per connection (better than the reference's per-process key, and
/// invisible to its clients).
pub fn server_handshake(client_public_key_b64: &str) -> Result<IgnisHello, IgnisError> {
    let peer = parse_public_key(client_public_key_b64)?;
    let secret = EcSecretKey::generate().map_err(|_| IgnisError::Rng)?;
    let mut salt = [0u8; SALT_LEN];
    backend::random_bytes(&mut salt).map_err(|_| IgnisError::Rng)?;
    let key = derive(&secret, &peer, &salt);
    Ok(IgnisHello {
        server_public_key: STANDARD.encode(secret.public_key().as_sec1()),
        salt: STANDARD.encode(salt),
        key,
    })
}

impl IgnisKey {
    /// Seals `inner` under a fresh random IV into a full `encrypted` frame.
    pub fn seal(&self, inner: &[u8]) -> Result<String, IgnisError> {
        let mut iv = [0u8; NONCE_LEN];
        backend::random_bytes(&mut iv).map_err(|_| IgnisError::Rng)?;
        self.seal_with_iv(&iv, inner)
    }

    /// Seals with a caller-chosen IV (known-answer tests only).
    #[doc(hidden)]
    pub fn seal_with_iv(&self, iv: &[u8; NONCE_LEN], inner: &[u8]) -> Result<String, IgnisError> {
        let mut buf = inner.to_vec();
        let tag = self
            .0
            .seal_in_place(iv, &[], &mut buf)
            .map_err(|_| IgnisError::Record)?;
        buf.extend_from_slice(&tag);
        Ok(format!(
            r#"{{"event":"encrypted","data":{{"iv":"{}","ct":"{}"}}}}"#,
            STANDARD.encode(iv),
            STANDARD.encode(&buf)
        ))
    }

    /// Opens one inbound frame and returns the inner message bytes.
    pub fn open(&self, frame: &[u8]) -> Result<Vec<u8>, IgnisError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Outer<'a> {
            event: &'a str,
            data: Option<Data<'a>>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Data<'a> {
            iv: &'a str,
            ct: &'a str,
        }
        let outer: Outer<'_> = serde_json::from_slice(frame).map_err(|_| IgnisError::NotEncrypted)?;
        if outer.event != "encrypted" {
            return Err(IgnisError::NotEncrypted);
        }
        let data = outer.data.ok_or(IgnisError::Record)?;
        let iv: [u8; NONCE_LEN] = STANDARD
            .decode(data.iv)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(IgnisError::Record)?;
        let mut buf = STANDARD.decode(data.ct).map_err(|_| IgnisError::Record)?;
        let split = buf.len().checked_sub(TAG_LEN).ok_or(IgnisError::Record)?;
        let tag: [u8; TAG_LEN] = buf.split_off(split).try_into().map_err(|_| IgnisError::Record)?;
        self.0
            .open_in_place(&iv, &[], &mut buf, &tag)
            .map_err(|_| IgnisError::Record)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Appendix C of `docs/spec/wsenc1.md`: the vector produced with the reference's own ECDH class.
    #[test]
    fn reproduces_the_reference_interop_vector() {
        let server = EcSecretKey::from_scalar_bytes(&hex32(
            "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721",
        ))
        .unwrap();
        let client_pub = parse_public_key(
            "BOrSGFkBGeiHaykUb/icphdwxO27+X04zjhe0oHYprIwKK9hKB/TXi+nACUjrMhaQpywbuZkgyU4n1nt/OFAUUE=",
        )
        .unwrap();
        assert_eq!(
            STANDARD.encode(server.public_key().as_sec1()),
            "BGD+1LolWp0xyWHrdMY1bWjASbiSO2H6bOZpYi5g8p+2eQP+EAi4vJmkGunpVii8ZPLxsgwtfp9Rd6PClNRGIpk="
        );
        let key = derive(&server, &client_pub, &[0x11; 32]);
        let frame = key
            .seal_with_iv(&[0x22; 12], br#"{"event":"chat","data":{"text":"hi"}}"#)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["data"]["iv"], "IiIiIiIiIiIiIiIi");
        assert_eq!(
            v["data"]["ct"],
            "Y5s8jdykYmw1C9bBFz6SZ1RsQMmB/FpIsNKZaKPVcUOGsqfHoABKzC3adeMKO07D5sOd2Gg="
        );
        assert_eq!(
            key.open(frame.as_bytes()).unwrap(),
            br#"{"event":"chat","data":{"text":"hi"}}"#
        );
    }

    #[test]
    fn rejects_url_safe_unpadded_and_compressed_keys() {
        let k = EcSecretKey::generate().unwrap().public_key();
        let std = STANDARD.encode(k.as_sec1());
        assert!(parse_public_key(&std).is_ok());
        assert!(parse_public_key(std.trim_end_matches('=')).is_err());
        assert!(parse_public_key(&super::super::b64::encode(k.as_sec1())).is_err());
        let mut compressed = vec![2u8];
        compressed.extend_from_slice(&k.as_sec1()[1..33]);
        assert!(parse_public_key(&STANDARD.encode(compressed)).is_err());
    }

    #[test]
    fn tampered_and_foreign_frames_are_refused() {
        let a = derive(
            &EcSecretKey::generate().unwrap(),
            &EcSecretKey::generate().unwrap().public_key(),
            &[1; 32],
        );
        let b = derive(
            &EcSecretKey::generate().unwrap(),
            &EcSecretKey::generate().unwrap().public_key(),
            &[1; 32],
        );
        let f = a.seal(b"{\"event\":\"x\"}").unwrap();
        assert_eq!(b.open(f.as_bytes()), Err(IgnisError::Record));
        assert_eq!(a.open(br#"{"event":"chat"}"#), Err(IgnisError::NotEncrypted));
        assert_eq!(
            a.open(br#"{"event":"encrypted","data":{"iv":"AAAA","ct":""}}"#),
            Err(IgnisError::Record)
        );
        let tampered = f.replacen("\"ct\":\"", "\"ct\":\"A", 1);
        assert!(a.open(tampered.as_bytes()).is_err());
    }
}
