//! The primitive seam: P-256 ECDH, HKDF-SHA-256, SHA-256 and AES-256-GCM.
//!
//! Everything above this module only exchanges byte arrays with it. Backend: RustCrypto `p256` 0.13 (parsing,
//! validation, PKCS#8), `hkdf` 0.12 / `sha2` 0.10 and `aes-gcm` 0.11; with the default `aws-lc` feature the
//! P-256 scalar multiplications run in `aws-lc-rs` (see `docs/crypto-backend.md`).
//!
//! This module is public only so that test vectors and benchmarks can reach the primitives;
//! applications should use the handshake and record types instead.

use std::fmt;

use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// AES-256 key length.
pub const KEY_LEN: usize = 32;
/// AES-GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Length of an uncompressed SEC1 P-256 point.
pub const PUBLIC_KEY_LEN: usize = 65;
/// Length of an ECDH shared secret (x-coordinate).
pub const SHARED_SECRET_LEN: usize = 32;
/// Length of a P-256 scalar.
pub const SCALAR_LEN: usize = 32;

/// AEAD failure (authentication, or a length limit). Carries no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("AEAD operation failed")]
pub struct AeadError;

/// HKDF output length out of range (more than 255 × 32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("HKDF output length invalid")]
pub struct HkdfLengthError;

/// The OS random number generator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("OS random number generator failed")]
pub struct RngError;

/// A public key that is not an uncompressed, on-curve, non-identity P-256 point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid P-256 public key")]
pub struct InvalidPublicKey;

/// A private scalar that is not in `[1, n-1]` or not 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid P-256 private scalar")]
pub struct InvalidSecretKey;

/// An AES-256-GCM key schedule, constructed once per traffic key and reused for every record.
///
/// With the `aws-lc` feature the schedule lives in aws-lc (its AES-NI/VAES + CLMUL code, and a smaller per-key
/// footprint than RustCrypto's `aes` whose autodetected key holds both a hardware and a bitsliced schedule);
/// aws-lc cleanses the context when it frees it. The RustCrypto schedule is zeroized on drop (`aes-gcm`
/// `zeroize` feature).
pub struct AeadKey {
    cipher: Cipher,
}

enum Cipher {
    #[cfg(feature = "aws-lc")]
    Fast(aws_lc_rs::aead::LessSafeKey),
    // Boxed so that the common, fast variant keeps the connection small.
    Portable(Box<Aes256Gcm>),
}

impl AeadKey {
    /// Expands an AES-256-GCM key.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        #[cfg(feature = "aws-lc")]
        if let Ok(unbound) = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, key) {
            return Self {
                cipher: Cipher::Fast(aws_lc_rs::aead::LessSafeKey::new(unbound)),
            };
        }
        Self::portable(key)
    }

    fn portable(key: &[u8; KEY_LEN]) -> Self {
        Self {
            cipher: Cipher::Portable(Box::new(Aes256Gcm::new(key.into()))),
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        match &self.cipher {
            #[cfg(feature = "aws-lc")]
            Cipher::Fast(key) => {
                use aws_lc_rs::aead::{Aad, Nonce};
                let tag = key
                    .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
                    .map_err(|_| AeadError)?;
                tag.as_ref().try_into().map_err(|_| AeadError)
            }
            Cipher::Portable(cipher) => {
                let tag = cipher
                    .encrypt_inout_detached(nonce.into(), aad, buf.into())
                    .map_err(|_| AeadError)?;
                Ok(tag.into())
            }
        }
    }

    /// Decrypts `buf` in place after verifying `tag`. On failure `buf` holds no plaintext
    /// that may be used (the caller discards it).
    pub fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        match &self.cipher {
            #[cfg(feature = "aws-lc")]
            Cipher::Fast(key) => {
                use aws_lc_rs::aead::{Aad, Nonce};
                key.open_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), tag, buf)
                    .map(|_| ())
                    .map_err(|_| AeadError)
            }
            Cipher::Portable(cipher) => cipher
                .decrypt_inout_detached(nonce.into(), aad, buf.into(), tag.into())
                .map_err(|_| AeadError),
        }
    }
}

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AeadKey([redacted])")
    }
}

/// `HKDF-SHA-256(salt, ikm, info_0 ‖ info_1 ‖ …, okm.len())`. An empty salt is 32 zero bytes
/// (RFC 5869 §2.2; HMAC pads keys with zeros, so both are the same).
pub fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[&[u8]], okm: &mut [u8]) -> Result<(), HkdfLengthError> {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    hk.expand_multi_info(info, okm).map_err(|_| HkdfLengthError)
}

/// SHA-256 over the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Fills `out` from the OS CSPRNG.
pub fn random_bytes(out: &mut [u8]) -> Result<(), RngError> {
    rand::rngs::OsRng.try_fill_bytes(out).map_err(|_| RngError)
}

/// A validated P-256 public key (uncompressed SEC1 form kept alongside).
#[derive(Clone, PartialEq, Eq)]
pub struct EcPublicKey {
    key: p256::PublicKey,
    sec1: [u8; PUBLIC_KEY_LEN],
}

impl EcPublicKey {
    /// Strict parse (wsenc/1 §1): exactly 65 bytes, first byte `0x04`, on the curve, not the
    /// identity, canonical coordinates. Compressed and hybrid encodings are rejected.
    pub fn from_sec1_uncompressed(bytes: &[u8]) -> Result<Self, InvalidPublicKey> {
        let sec1: [u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| InvalidPublicKey)?;
        if sec1.first() != Some(&0x04) {
            return Err(InvalidPublicKey);
        }
        let key = p256::PublicKey::from_sec1_bytes(&sec1).map_err(|_| InvalidPublicKey)?;
        Ok(Self { key, sec1 })
    }

    /// The 65-byte uncompressed SEC1 encoding.
    pub fn to_sec1(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.sec1
    }

    /// Borrow the 65-byte uncompressed SEC1 encoding.
    pub fn as_sec1(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.sec1
    }

    fn from_p256(key: p256::PublicKey) -> Self {
        let mut sec1 = [0u8; PUBLIC_KEY_LEN];
        let ep = key.to_encoded_point(false);
        // An uncompressed encoding of a valid public key is always 65 bytes.
        sec1.iter_mut().zip(ep.as_bytes()).for_each(|(d, s)| *d = *s);
        Self { key, sec1 }
    }
}

impl fmt::Debug for EcPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Public, but keep logs small and uniform.
        f.write_str("EcPublicKey(P-256)")
    }
}

/// A P-256 private scalar. Zeroized on drop; `Debug` is redacted.
///
/// With the `aws-lc` feature the scalar multiplications run in aws-lc (BoringSSL's P-256 assembly, about four
/// times faster); the RustCrypto scalar is kept beside it for PKCS#8 export and as the fallback path.
pub struct EcSecretKey {
    key: p256::SecretKey,
    #[cfg(feature = "aws-lc")]
    fast: aws_lc_rs::agreement::PrivateKey,
}

impl EcSecretKey {
    /// Generates a fresh key from aws-lc's CSPRNG (seeded by the OS).
    #[cfg(feature = "aws-lc")]
    pub fn generate() -> Result<Self, RngError> {
        use aws_lc_rs::encoding::{AsBigEndian, EcPrivateKeyBin};
        let fast =
            aws_lc_rs::agreement::PrivateKey::generate(&aws_lc_rs::agreement::ECDH_P256).map_err(|_| RngError)?;
        let scalar: EcPrivateKeyBin<'static> = fast.as_be_bytes().map_err(|_| RngError)?;
        let key = p256::SecretKey::from_slice(scalar.as_ref()).map_err(|_| RngError)?;
        Ok(Self { key, fast })
    }

    /// Generates a fresh key from the OS CSPRNG (rejection sampling; never panics).
    #[cfg(not(feature = "aws-lc"))]
    pub fn generate() -> Result<Self, RngError> {
        // The probability of a 32-byte string not being in [1, n-1] is about 2^-32; bound the loop.
        for _ in 0..64 {
            let mut bytes = Zeroizing::new([0u8; SCALAR_LEN]);
            random_bytes(bytes.as_mut_slice())?;
            if let Ok(k) = Self::from_scalar_bytes(bytes.as_slice()) {
                return Ok(k);
            }
        }
        Err(RngError)
    }

    /// From a big-endian 32-byte scalar in `[1, n-1]`.
    pub fn from_scalar_bytes(bytes: &[u8]) -> Result<Self, InvalidSecretKey> {
        if bytes.len() != SCALAR_LEN {
            return Err(InvalidSecretKey);
        }
        let key = p256::SecretKey::from_slice(bytes).map_err(|_| InvalidSecretKey)?;
        Self::from_p256(key).ok_or(InvalidSecretKey)
    }

    #[cfg(feature = "aws-lc")]
    fn from_p256(key: p256::SecretKey) -> Option<Self> {
        let scalar = Zeroizing::new(key.to_bytes());
        let fast =
            aws_lc_rs::agreement::PrivateKey::from_private_key(&aws_lc_rs::agreement::ECDH_P256, &scalar[..]).ok()?;
        Some(Self { key, fast })
    }

    #[cfg(not(feature = "aws-lc"))]
    fn from_p256(key: p256::SecretKey) -> Option<Self> {
        Some(Self { key })
    }

    /// The matching public key (one base-point multiplication).
    pub fn public_key(&self) -> EcPublicKey {
        #[cfg(feature = "aws-lc")]
        if let Some(public) = self.fast_public_key() {
            return public;
        }
        self.portable_public_key()
    }

    /// `ECDH(self, peer)`: the 32-byte x-coordinate of the shared point.
    pub fn diffie_hellman(&self, peer: &EcPublicKey) -> Zeroizing<[u8; SHARED_SECRET_LEN]> {
        // `peer` was validated on parse, so aws-lc cannot refuse it; if it ever did, the portable path computes
        // the same value.
        #[cfg(feature = "aws-lc")]
        if let Some(shared) = self.fast_diffie_hellman(peer) {
            return shared;
        }
        self.portable_diffie_hellman(peer)
    }

    #[cfg(feature = "aws-lc")]
    fn fast_public_key(&self) -> Option<EcPublicKey> {
        let public = self.fast.compute_public_key().ok()?;
        EcPublicKey::from_sec1_uncompressed(public.as_ref()).ok()
    }

    #[cfg(feature = "aws-lc")]
    fn fast_diffie_hellman(&self, peer: &EcPublicKey) -> Option<Zeroizing<[u8; SHARED_SECRET_LEN]>> {
        use aws_lc_rs::agreement::{agree, UnparsedPublicKey, ECDH_P256};
        let mut out = Zeroizing::new([0u8; SHARED_SECRET_LEN]);
        agree(
            &self.fast,
            UnparsedPublicKey::new(&ECDH_P256, &peer.sec1),
            (),
            |shared| {
                let shared: &[u8; SHARED_SECRET_LEN] = shared.try_into().map_err(|_| ())?;
                *out = *shared;
                Ok(())
            },
        )
        .ok()?;
        Some(out)
    }

    fn portable_public_key(&self) -> EcPublicKey {
        EcPublicKey::from_p256(self.key.public_key())
    }

    fn portable_diffie_hellman(&self, peer: &EcPublicKey) -> Zeroizing<[u8; SHARED_SECRET_LEN]> {
        let scalar = Zeroizing::new(self.key.to_nonzero_scalar());
        let shared = p256::ecdh::diffie_hellman(&*scalar, peer.key.as_affine());
        let mut out = Zeroizing::new([0u8; SHARED_SECRET_LEN]);
        out.iter_mut()
            .zip(shared.raw_secret_bytes().iter())
            .for_each(|(d, s)| *d = *s);
        out
    }

    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), LF line endings.
    pub(crate) fn to_pkcs8_pem(&self) -> Option<Zeroizing<String>> {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        self.key.to_pkcs8_pem(LineEnding::LF).ok()
    }

    /// From PKCS#8 PEM.
    pub(crate) fn from_pkcs8_pem(pem: &str) -> Option<Self> {
        use p256::pkcs8::DecodePrivateKey;
        p256::SecretKey::from_pkcs8_pem(pem).ok().and_then(Self::from_p256)
    }
}

impl fmt::Debug for EcSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EcSecretKey([redacted])")
    }
}

/// The fuzz target `backends_agree`: aws-lc and the portable RustCrypto path must agree on everything the
/// protocol computes with them. `data` is read as key ‖ nonce ‖ aad length ‖ aad ‖ message for AES-256-GCM, and as
/// a scalar and a peer point (the same bytes, whatever they hold) for P-256. Panics on any disagreement.
#[cfg(all(any(test, feature = "fuzzing"), feature = "aws-lc"))]
#[doc(hidden)]
pub fn check_backends_agree(data: &[u8]) {
    let mut key = [0u8; KEY_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    key.iter_mut().zip(data).for_each(|(d, s)| *d = *s);
    nonce
        .iter_mut()
        .zip(data.iter().skip(KEY_LEN))
        .for_each(|(d, s)| *d = *s);
    let rest = data.get(KEY_LEN + NONCE_LEN..).unwrap_or_default();
    let aad_len = rest.first().map_or(0, |n| usize::from(*n));
    let aad = rest.get(1..).unwrap_or_default();
    let (aad, message) = aad.split_at(aad_len.min(aad.len()));

    let fast = AeadKey::new(&key);
    assert!(matches!(fast.cipher, Cipher::Fast(_)), "aws-lc refused a 32-byte key");
    let portable = AeadKey::portable(&key);
    let (mut a, mut b) = (message.to_vec(), message.to_vec());
    let tag_a = fast.seal_in_place(&nonce, aad, &mut a);
    let tag_b = portable.seal_in_place(&nonce, aad, &mut b);
    assert_eq!(tag_a.is_ok(), tag_b.is_ok(), "one backend sealed, the other refused");
    if let (Ok(tag_a), Ok(tag_b)) = (tag_a, tag_b) {
        assert_eq!((&a, tag_a), (&b, tag_b), "the backends sealed differently");
        // Each opens the other's record; an altered one is refused by both.
        let (mut x, mut y) = (b.clone(), a.clone());
        assert!(fast.open_in_place(&nonce, aad, &mut x, &tag_b).is_ok() && x == message);
        assert!(portable.open_in_place(&nonce, aad, &mut y, &tag_a).is_ok() && y == message);
        let mut bad_tag = tag_a;
        bad_tag[0] ^= 1;
        let (mut x, mut y) = (a.clone(), a);
        assert!(fast.open_in_place(&nonce, aad, &mut x, &bad_tag).is_err());
        assert!(portable.open_in_place(&nonce, aad, &mut y, &bad_tag).is_err());
    }

    // P-256: a scalar the strict parse accepts must give the same public key and the same shared secret with a
    // peer the strict parse accepts, whichever path computes them.
    let Ok(secret) = EcSecretKey::from_scalar_bytes(data.get(..SCALAR_LEN).unwrap_or_default()) else {
        return;
    };
    let fast_public = secret.fast_public_key();
    assert!(fast_public.is_some(), "aws-lc refused a valid scalar's public key");
    assert_eq!(
        fast_public.map(|p| p.to_sec1()),
        Some(secret.portable_public_key().to_sec1()),
        "the backends derived different public keys"
    );
    let peer = match EcPublicKey::from_sec1_uncompressed(
        data.get(SCALAR_LEN..SCALAR_LEN + PUBLIC_KEY_LEN).unwrap_or_default(),
    ) {
        Ok(peer) => peer,
        // Random bytes are rarely a point: the scalar's own public key is one.
        Err(_) => secret.portable_public_key(),
    };
    let fast_shared = secret.fast_diffie_hellman(&peer);
    assert!(fast_shared.is_some(), "aws-lc refused a validated peer key");
    assert_eq!(
        fast_shared.map(|s| *s),
        Some(*secret.portable_diffie_hellman(&peer)),
        "the backends computed different shared secrets"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_public_key_parse() {
        let sk = EcSecretKey::generate().unwrap();
        let pk = sk.public_key();
        let sec1 = pk.to_sec1();
        assert_eq!(sec1[0], 4);
        assert!(EcPublicKey::from_sec1_uncompressed(&sec1).is_ok());
        // compressed form of the same point is rejected
        let compressed = sk.key.public_key().to_encoded_point(true);
        assert_eq!(compressed.as_bytes().len(), 33);
        assert!(p256::PublicKey::from_sec1_bytes(compressed.as_bytes()).is_ok());
        assert!(EcPublicKey::from_sec1_uncompressed(compressed.as_bytes()).is_err());
        // identity, wrong lengths, wrong prefix, off-curve
        assert!(EcPublicKey::from_sec1_uncompressed(&[0u8]).is_err());
        assert!(EcPublicKey::from_sec1_uncompressed(&[]).is_err());
        assert!(EcPublicKey::from_sec1_uncompressed(&[0u8; 65]).is_err());
        assert!(EcPublicKey::from_sec1_uncompressed(&sec1[..64]).is_err());
        let mut hybrid = sec1;
        hybrid[0] = 0x06 | (sec1[64] & 1);
        assert!(EcPublicKey::from_sec1_uncompressed(&hybrid).is_err());
        let mut off = sec1;
        off[64] ^= 1;
        assert!(EcPublicKey::from_sec1_uncompressed(&off).is_err());
        let mut long = sec1.to_vec();
        long.push(0);
        assert!(EcPublicKey::from_sec1_uncompressed(&long).is_err());
    }

    #[test]
    fn scalar_range() {
        assert!(EcSecretKey::from_scalar_bytes(&[0u8; 32]).is_err());
        assert!(EcSecretKey::from_scalar_bytes(&[0xffu8; 32]).is_err());
        assert!(EcSecretKey::from_scalar_bytes(&[1u8; 31]).is_err());
        assert!(EcSecretKey::from_scalar_bytes(&[1u8; 32]).is_ok());
    }

    #[test]
    fn ecdh_agrees() {
        let a = EcSecretKey::generate().unwrap();
        let b = EcSecretKey::generate().unwrap();
        assert_eq!(*a.diffie_hellman(&b.public_key()), *b.diffie_hellman(&a.public_key()));
    }

    /// The aws-lc path and the portable RustCrypto path compute the same keys and secrets.
    #[cfg(feature = "aws-lc")]
    #[test]
    fn fast_backend_matches_portable() {
        for _ in 0..32 {
            let a = EcSecretKey::generate().unwrap();
            let b = EcSecretKey::generate().unwrap();
            let b_pub = b.portable_public_key();
            assert_eq!(
                a.fast_public_key().unwrap().to_sec1(),
                a.portable_public_key().to_sec1()
            );
            assert_eq!(
                *a.fast_diffie_hellman(&b_pub).unwrap(),
                *a.portable_diffie_hellman(&b_pub)
            );
            let from_bytes = EcSecretKey::from_scalar_bytes(&a.key.to_bytes()).unwrap();
            assert_eq!(
                *from_bytes.fast_diffie_hellman(&b_pub).unwrap(),
                *a.portable_diffie_hellman(&b_pub)
            );
        }
    }

    /// The fuzz target's differential check holds on generated inputs: random bytes, and valid scalars with a
    /// peer that is a real point.
    #[cfg(feature = "aws-lc")]
    #[test]
    fn backends_agree_on_generated_inputs() {
        let mut data = vec![0u8; 200];
        for round in 0..64u8 {
            random_bytes(&mut data).unwrap();
            data[KEY_LEN + NONCE_LEN] = round;
            check_backends_agree(&data);
            let a = EcSecretKey::generate().unwrap();
            let b = EcSecretKey::generate().unwrap();
            let mut input = a.key.to_bytes().to_vec();
            input.extend_from_slice(&b.public_key().to_sec1());
            input.extend_from_slice(&data);
            check_backends_agree(&input);
        }
    }

    /// aws-lc's AES-256-GCM and the portable one produce the same ciphertext and tag, and each opens the other's.
    #[cfg(feature = "aws-lc")]
    #[test]
    fn fast_aead_matches_portable() {
        let key = [7u8; KEY_LEN];
        let (fast, portable) = (AeadKey::new(&key), AeadKey::portable(&key));
        assert!(matches!(fast.cipher, Cipher::Fast(_)));
        for len in [0usize, 1, 15, 16, 17, 255, 256, 4096] {
            let nonce = [len as u8; NONCE_LEN];
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let (mut a, mut b) = (plain.clone(), plain.clone());
            let tag_a = fast.seal_in_place(&nonce, b"aad", &mut a).unwrap();
            let tag_b = portable.seal_in_place(&nonce, b"aad", &mut b).unwrap();
            assert_eq!((&a, tag_a), (&b, tag_b));
            portable.open_in_place(&nonce, b"aad", &mut a, &tag_a).unwrap();
            fast.open_in_place(&nonce, b"aad", &mut b, &tag_b).unwrap();
            assert_eq!((&a, &b), (&plain, &plain));
            let mut bad = tag_a;
            bad[0] ^= 1;
            assert!(fast.open_in_place(&nonce, b"aad", &mut b.clone(), &bad).is_err());
        }
    }

    #[test]
    fn debug_redacted() {
        let a = EcSecretKey::generate().unwrap();
        assert_eq!(format!("{a:?}"), "EcSecretKey([redacted])");
        let k = AeadKey::new(&[9u8; 32]);
        assert_eq!(format!("{k:?}"), "AeadKey([redacted])");
    }
}
