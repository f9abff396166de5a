//! Server static keys, pinned keys and the key set used for rotation (wsenc/1 §2).

use std::fmt;

use zeroize::Zeroizing;

use super::b64;
use super::backend::{EcPublicKey, EcSecretKey, RngError, PUBLIC_KEY_LEN};
use super::schedule::{kid_of, KID_LEN};

/// Key loading / generation failures. Never carry key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The PEM is not a PKCS#8 P-256 private key.
    #[error("not a PKCS#8 PEM P-256 private key")]
    InvalidPem,
    /// PEM encoding failed.
    #[error("cannot encode the private key")]
    Encoding,
    /// The public key is not an uncompressed, valid P-256 point (or not strict base64url).
    #[error("invalid P-256 public key")]
    InvalidPublicKey,
    /// The OS random number generator failed.
    #[error(transparent)]
    Rng(#[from] RngError),
    /// A key set needs distinct kids.
    #[error("duplicate kid in key set")]
    DuplicateKid,
}

/// A server static key `s`/`S` with its `kid = SHA-256(S)[0..8]`. `Debug` is redacted.
pub struct StaticKey {
    secret: EcSecretKey,
    public: EcPublicKey,
    kid: [u8; KID_LEN],
}

impl StaticKey {
    /// Generates a new static key (`keygen`).
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self::from_secret(EcSecretKey::generate()?))
    }

    /// Loads a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) P-256 key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        EcSecretKey::from_pkcs8_pem(pem)
            .map(Self::from_secret)
            .ok_or(KeyError::InvalidPem)
    }

    /// PKCS#8 PEM of the private key, to be written to a secret file (mode 0600). Zeroized on drop.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        self.secret.to_pkcs8_pem().ok_or(KeyError::Encoding)
    }

    /// From a raw 32-byte scalar (test keys, Appendix A).
    #[doc(hidden)]
    pub fn from_scalar_bytes_for_tests(bytes: &[u8]) -> Result<Self, KeyError> {
        EcSecretKey::from_scalar_bytes(bytes)
            .map(Self::from_secret)
            .map_err(|_| KeyError::InvalidPem)
    }

    fn from_secret(secret: EcSecretKey) -> Self {
        let public = secret.public_key();
        let kid = kid_of(public.as_sec1());
        Self { secret, public, kid }
    }

    /// The `kid`.
    pub fn kid(&self) -> [u8; KID_LEN] {
        self.kid
    }

    /// The `kid` as base64url (11 chars).
    pub fn kid_b64u(&self) -> String {
        b64::encode(&self.kid)
    }

    /// `S`, uncompressed SEC1 (65 bytes).
    pub fn public_key_sec1(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public.to_sec1()
    }

    /// `S` as base64url, for distribution to clients (pinning).
    pub fn public_key_b64u(&self) -> String {
        b64::encode(self.public.as_sec1())
    }

    /// The pin a client needs for this key.
    pub fn pinned(&self) -> PinnedKey {
        PinnedKey {
            kid: self.kid,
            public: self.public.clone(),
        }
    }

    pub(crate) fn secret(&self) -> &EcSecretKey {
        &self.secret
    }

    pub(crate) fn public(&self) -> &EcPublicKey {
        &self.public
    }
}

impl fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKey")
            .field("kid", &self.kid_b64u())
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// A server public key pinned by a client, with its kid.
#[derive(Clone, PartialEq, Eq)]
pub struct PinnedKey {
    kid: [u8; KID_LEN],
    public: EcPublicKey,
}

impl PinnedKey {
    /// From the 65-byte uncompressed SEC1 key `S` (strictly validated); the kid is computed.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, KeyError> {
        let public = EcPublicKey::from_sec1_uncompressed(bytes).map_err(|_| KeyError::InvalidPublicKey)?;
        Ok(Self {
            kid: kid_of(public.as_sec1()),
            public,
        })
    }

    /// From `S` as strict base64url.
    pub fn from_b64u(s: &str) -> Result<Self, KeyError> {
        let bytes: [u8; PUBLIC_KEY_LEN] = b64::decode_array(s).map_err(|_| KeyError::InvalidPublicKey)?;
        Self::from_sec1(&bytes)
    }

    /// The kid of this key.
    pub fn kid(&self) -> [u8; KID_LEN] {
        self.kid
    }

    pub(crate) fn public(&self) -> &EcPublicKey {
        &self.public
    }
}

impl fmt::Debug for PinnedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedKey")
            .field("kid", &b64::encode(&self.kid))
            .finish()
    }
}

/// The static keys a server holds: the current one, plus others (e.g. the next one during
/// rotation). Selection: the key whose kid the client asks for, else the current one.
#[derive(Debug)]
pub struct StaticKeySet {
    current: StaticKey,
    others: Vec<StaticKey>,
}

impl StaticKeySet {
    /// A set with only the current key.
    pub fn new(current: StaticKey) -> Self {
        Self {
            current,
            others: Vec::new(),
        }
    }

    /// Adds another key (e.g. the next one). Kids must be distinct.
    pub fn with_key(mut self, key: StaticKey) -> Result<Self, KeyError> {
        if self.get(&key.kid).is_some() {
            return Err(KeyError::DuplicateKid);
        }
        self.others.push(key);
        Ok(self)
    }

    /// The current key.
    pub fn current(&self) -> &StaticKey {
        &self.current
    }

    /// The key with this kid, if held.
    pub fn get(&self, kid: &[u8; KID_LEN]) -> Option<&StaticKey> {
        self.iter().find(|k| &k.kid == kid)
    }

    /// `kid` given: that key or `None` (the client asked for a key we do not hold);
    /// no kid: the current key.
    pub fn select(&self, kid: Option<&[u8; KID_LEN]>) -> Option<&StaticKey> {
        match kid {
            Some(kid) => self.get(kid),
            None => Some(&self.current),
        }
    }

    /// All keys, current first.
    pub fn iter(&self) -> impl Iterator<Item = &StaticKey> {
        std::iter::once(&self.current).chain(self.others.iter())
    }
}
