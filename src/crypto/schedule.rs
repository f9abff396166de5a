//! Transcript hash, DH input and the HKDF key schedule (wsenc/1 §4–§5).

use std::fmt;

use zeroize::Zeroizing;

use super::backend::{self, KEY_LEN, NONCE_LEN, SHARED_SECRET_LEN};
use super::{Direction, PROTO};

/// Length of the transcript hash `th`.
pub const TH_LEN: usize = 32;
/// Length of a `kid`.
pub const KID_LEN: usize = 8;
/// Length of the handshake `salt`.
pub const SALT_LEN: usize = 32;
/// Length of a traffic secret.
pub const TRAFFIC_SECRET_LEN: usize = 32;

const INFO_C2S: &[u8] = b"wsenc/1 c2s";
const INFO_S2C: &[u8] = b"wsenc/1 s2c";
const INFO_KEY: &[u8] = b"wsenc/1 key";
const INFO_IV: &[u8] = b"wsenc/1 iv";
const INFO_UPD: &[u8] = b"wsenc/1 upd";

/// A transcript field longer than 65535 bytes (cannot be length-prefixed with `u16be`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("transcript field too long")]
pub struct FieldTooLong;

/// The inputs of the transcript hash. All binary fields are the exact wire values.
#[derive(Clone, Copy)]
pub struct TranscriptInput<'a> {
    /// `kid` of the server static key used.
    pub kid: &'a [u8; KID_LEN],
    /// Server static public key `S`, uncompressed SEC1.
    pub server_static: &'a [u8; 65],
    /// Client ephemeral public key `e_c`.
    pub client_ephemeral: &'a [u8; 65],
    /// Server ephemeral public key `e_s`.
    pub server_ephemeral: &'a [u8; 65],
    /// The 32-byte handshake salt.
    pub salt: &'a [u8; SALT_LEN],
    /// Server-assigned connection id.
    pub conn_id: &'a str,
    /// Authenticated user id (empty if anonymous).
    pub user_id: &'a str,
}

/// `th = SHA-256(LP(PROTO) ‖ LP(kid) ‖ LP(S) ‖ LP(e_c) ‖ LP(e_s) ‖ LP(salt) ‖ LP(connId) ‖ LP(userId))`.
pub fn transcript_hash(t: &TranscriptInput<'_>) -> Result<[u8; TH_LEN], FieldTooLong> {
    let fields: [&[u8]; 8] = [
        PROTO,
        t.kid,
        t.server_static,
        t.client_ephemeral,
        t.server_ephemeral,
        t.salt,
        t.conn_id.as_bytes(),
        t.user_id.as_bytes(),
    ];
    let mut lens = [[0u8; 2]; 8];
    for (l, f) in lens.iter_mut().zip(fields.iter()) {
        *l = u16::try_from(f.len()).map_err(|_| FieldTooLong)?.to_be_bytes();
    }
    let mut parts: [&[u8]; 16] = [&[]; 16];
    for (i, (l, f)) in lens.iter().zip(fields.iter()).enumerate() {
        if let Some(slot) = parts.get_mut(2 * i) {
            *slot = l;
        }
        if let Some(slot) = parts.get_mut(2 * i + 1) {
            *slot = f;
        }
    }
    Ok(backend::sha256(&parts))
}

/// `ikm = ee ‖ es` (64 bytes, zeroized on drop).
pub fn ikm(ee: &[u8; SHARED_SECRET_LEN], es: &[u8; SHARED_SECRET_LEN]) -> Zeroizing<[u8; 2 * SHARED_SECRET_LEN]> {
    let mut out = Zeroizing::new([0u8; 2 * SHARED_SECRET_LEN]);
    let (a, b) = out.split_at_mut(SHARED_SECRET_LEN);
    a.copy_from_slice(ee);
    b.copy_from_slice(es);
    out
}

/// A per-direction, per-epoch traffic secret `ts_d_n`. Zeroized on drop; `Debug` is redacted.
pub struct TrafficSecret(Zeroizing<[u8; TRAFFIC_SECRET_LEN]>);

fn expand<const N: usize>(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; N]> {
    let mut out = Zeroizing::new([0u8; N]);
    // N ≤ 32 here, far below the HKDF limit of 255 × 32 bytes: this cannot fail.
    if backend::hkdf_sha256(salt, ikm, info, out.as_mut_slice()).is_err() {
        out.as_mut_slice().fill(0);
    }
    out
}

impl TrafficSecret {
    /// `ts_d_0 = HKDF(salt, ikm, "wsenc/1 c2s"|"wsenc/1 s2c" ‖ th, 32)`.
    pub fn initial(
        direction: Direction,
        salt: &[u8; SALT_LEN],
        ikm: &[u8; 2 * SHARED_SECRET_LEN],
        th: &[u8; TH_LEN],
    ) -> Self {
        let label = match direction {
            Direction::C2s => INFO_C2S,
            Direction::S2c => INFO_S2C,
        };
        Self(expand(salt, ikm, &[label, th]))
    }

    /// Wraps raw secret bytes (for custom schedules and known-answer tests).
    pub fn from_bytes(bytes: &[u8; TRAFFIC_SECRET_LEN]) -> Self {
        Self(Zeroizing::new(*bytes))
    }

    /// `key_d_n = HKDF("", ts_d_n, "wsenc/1 key", 32)`.
    pub fn key(&self) -> Zeroizing<[u8; KEY_LEN]> {
        expand(&[], self.0.as_slice(), &[INFO_KEY])
    }

    /// `iv_d_n = HKDF("", ts_d_n, "wsenc/1 iv", 12)`.
    pub fn iv(&self) -> Zeroizing<[u8; NONCE_LEN]> {
        expand(&[], self.0.as_slice(), &[INFO_IV])
    }

    /// `ts_d_n+1 = HKDF("", ts_d_n, "wsenc/1 upd", 32)`. Drop `self` afterwards to erase `ts_d_n`.
    pub fn next(&self) -> Self {
        Self(expand(&[], self.0.as_slice(), &[INFO_UPD]))
    }

    /// The raw secret. Only for known-answer tests; never log it.
    #[doc(hidden)]
    pub fn expose_secret_for_tests(&self) -> &[u8; TRAFFIC_SECRET_LEN] {
        &self.0
    }
}

impl fmt::Debug for TrafficSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TrafficSecret([redacted])")
    }
}

/// `(ts_c2s_0, ts_s2c_0)` from the handshake values.
pub fn initial_secrets(
    salt: &[u8; SALT_LEN],
    ikm: &[u8; 2 * SHARED_SECRET_LEN],
    th: &[u8; TH_LEN],
) -> (TrafficSecret, TrafficSecret) {
    (
        TrafficSecret::initial(Direction::C2s, salt, ikm, th),
        TrafficSecret::initial(Direction::S2c, salt, ikm, th),
    )
}

/// `kid = SHA-256(S)[0..8]`.
pub fn kid_of(server_static: &[u8; 65]) -> [u8; KID_LEN] {
    let h = backend::sha256(&[server_static]);
    let mut kid = [0u8; KID_LEN];
    kid.iter_mut().zip(h.iter()).for_each(|(d, s)| *d = *s);
    kid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_long_fields_rejected() {
        let z = [0u8; 65];
        let long = "x".repeat(65536);
        let ok = "x".repeat(65535);
        let mk = |c: &str, u: &str| {
            transcript_hash(&TranscriptInput {
                kid: &[0; 8],
                server_static: &z,
                client_ephemeral: &z,
                server_ephemeral: &z,
                salt: &[0; 32],
                conn_id: c,
                user_id: u,
            })
        };
        assert!(mk(&ok, "").is_ok());
        assert_eq!(mk(&long, ""), Err(FieldTooLong));
        assert_eq!(mk("", &long), Err(FieldTooLong));
        // LP framing: moving a byte between adjacent fields changes th
        assert_ne!(mk("ab", "c").unwrap(), mk("a", "bc").unwrap());
    }

    #[test]
    fn debug_redacted() {
        let ts = TrafficSecret::from_bytes(&[0xab; 32]);
        let s = format!("{ts:?}");
        assert_eq!(s, "TrafficSecret([redacted])");
    }
}
