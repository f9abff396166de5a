//! The wsenc/1 handshake (§3–§5), server side and client side.

use std::fmt;

use serde_json::{Map, Value};

use super::b64;
use super::backend::{EcPublicKey, EcSecretKey, RngError, PUBLIC_KEY_LEN, TAG_LEN};
use super::keys::{PinnedKey, StaticKeySet};
use super::record::{RecordOpener, RecordSealer};
use super::schedule::{ikm, initial_secrets, transcript_hash, TranscriptInput, KID_LEN, SALT_LEN, TH_LEN};
use super::{Direction, CLOSE_ENCRYPTION_REQUIRED};

/// The protocol version carried as `v`.
pub const VERSION: u64 = 1;

/// A handshake failure. Every variant closes the connection with 4004 (server side) or aborts
/// the client. Messages never include key material or field values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A required field is absent.
    #[error("missing handshake field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong type, or is not strict base64url of the right length.
    #[error("invalid handshake field `{0}`")]
    InvalidField(&'static str),
    /// `v` is not 1.
    #[error("unsupported wsenc version")]
    UnsupportedVersion,
    /// A public key is not an uncompressed, on-curve, non-identity P-256 point.
    #[error("invalid P-256 public key")]
    InvalidPublicKey,
    /// The requested (server) or announced (client) kid is not held / not pinned.
    #[error("unknown kid")]
    UnknownKid,
    /// `connId` or `userId` is longer than 65535 bytes.
    #[error("connection or user id too long")]
    IdentityTooLong,
    /// The `confirm` tag did not verify: the server does not hold the pinned key, or a field was
    /// tampered with.
    #[error("server authentication failed")]
    ServerAuthFailed,
    /// The OS random number generator failed.
    #[error("OS random number generator failed")]
    Rng,
}

impl HandshakeError {
    /// The WebSocket close code: always 4004 (`Encryption required`).
    pub fn close_code(&self) -> u16 {
        CLOSE_ENCRYPTION_REQUIRED
    }
}

impl From<RngError> for HandshakeError {
    fn from(_: RngError) -> Self {
        HandshakeError::Rng
    }
}

fn decode_field<const N: usize>(s: &str, name: &'static str) -> Result<[u8; N], HandshakeError> {
    b64::decode_array::<N>(s).map_err(|_| HandshakeError::InvalidField(name))
}

fn str_field<'a>(m: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, HandshakeError> {
    match m.get(name) {
        None => Err(HandshakeError::MissingField(name)),
        Some(v) => v.as_str().ok_or(HandshakeError::InvalidField(name)),
    }
}

fn check_version(m: &Map<String, Value>) -> Result<(), HandshakeError> {
    match m.get("v") {
        None => Err(HandshakeError::MissingField("v")),
        // `as_u64` is `None` for 1.0, -1, strings, …
        Some(v) if v.as_u64() == Some(VERSION) => Ok(()),
        Some(_) => Err(HandshakeError::UnsupportedVersion),
    }
}

fn parse_public_key(s: &str, name: &'static str) -> Result<EcPublicKey, HandshakeError> {
    let bytes: [u8; PUBLIC_KEY_LEN] = decode_field(s, name)?;
    EcPublicKey::from_sec1_uncompressed(&bytes).map_err(|_| HandshakeError::InvalidPublicKey)
}

/// The client's handshake fields from the `authenticate` data, strictly validated.
pub struct HandshakeRequest {
    client_public: EcPublicKey,
    kid: Option<[u8; KID_LEN]>,
}

impl HandshakeRequest {
    /// Parses the handshake fields of an `authenticate` `data` object. Call it only after the
    /// authenticator accepted the credentials (it validates a curve point).
    ///
    /// Returns `Ok(None)` if `publicKey` is absent (a plaintext client: with `requireEncryption`
    /// the caller closes 4004). Otherwise `v` must be the integer 1, `publicKey` strict base64url
    /// of a valid uncompressed P-256 point and `kid`, if present, strict base64url of 8 bytes.
    pub fn from_auth_data(data: &Value) -> Result<Option<Self>, HandshakeError> {
        let m = data.as_object().ok_or(HandshakeError::InvalidField("data"))?;
        let Some(pk) = m.get("publicKey") else {
            return Ok(None);
        };
        check_version(m)?;
        let pk = pk.as_str().ok_or(HandshakeError::InvalidField("publicKey"))?;
        let kid = match m.get("kid") {
            None => None,
            Some(v) => {
                let s = v.as_str().ok_or(HandshakeError::InvalidField("kid"))?;
                Some(decode_field::<KID_LEN>(s, "kid")?)
            }
        };
        Ok(Some(Self::from_parts(pk, kid)?))
    }

    /// From the `publicKey` string and an optional decoded kid.
    pub fn from_parts(public_key_b64u: &str, kid: Option<[u8; KID_LEN]>) -> Result<Self, HandshakeError> {
        Ok(Self {
            client_public: parse_public_key(public_key_b64u, "publicKey")?,
            kid,
        })
    }

    /// The kid the client asked for, if any.
    pub fn kid(&self) -> Option<[u8; KID_LEN]> {
        self.kid
    }
}

impl fmt::Debug for HandshakeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeRequest")
            .field("kid", &self.kid.map(|k| b64::encode(&k)))
            .finish_non_exhaustive()
    }
}

/// The crypto fields of the `connected` event: `v`, `serverPublicKey`, `salt`, `kid`, `confirm`.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerHello {
    server_public: [u8; PUBLIC_KEY_LEN],
    salt: [u8; SALT_LEN],
    kid: [u8; KID_LEN],
    confirm: [u8; TAG_LEN],
}

impl ServerHello {
    /// `serverPublicKey` (base64url of the 65-byte `e_s`).
    pub fn server_public_key_b64u(&self) -> String {
        b64::encode(&self.server_public)
    }
    /// `salt` (base64url of 32 bytes).
    pub fn salt_b64u(&self) -> String {
        b64::encode(&self.salt)
    }
    /// `kid` (base64url of 8 bytes).
    pub fn kid_b64u(&self) -> String {
        b64::encode(&self.kid)
    }
    /// `confirm` (base64url of the 16-byte tag).
    pub fn confirm_b64u(&self) -> String {
        b64::encode(&self.confirm)
    }

    /// Adds `v`, `serverPublicKey`, `salt`, `kid`, `confirm` to the `connected` data object
    /// (the caller adds `id`, `userId`, `time`).
    pub fn insert_into(&self, data: &mut Map<String, Value>) {
        data.insert("v".into(), Value::from(VERSION));
        data.insert("serverPublicKey".into(), Value::String(self.server_public_key_b64u()));
        data.insert("salt".into(), Value::String(self.salt_b64u()));
        data.insert("kid".into(), Value::String(self.kid_b64u()));
        data.insert("confirm".into(), Value::String(self.confirm_b64u()));
    }

    /// Client side: parses the `connected` data object. Every crypto field must be present and
    /// strictly encoded and `v` must be 1 (no plaintext fallback). The key itself is validated in
    /// [`ClientHandshake::finish`].
    pub fn from_connected_data(data: &Value) -> Result<Self, HandshakeError> {
        let m = data.as_object().ok_or(HandshakeError::InvalidField("data"))?;
        check_version(m)?;
        Ok(Self {
            server_public: decode_field(str_field(m, "serverPublicKey")?, "serverPublicKey")?,
            salt: decode_field(str_field(m, "salt")?, "salt")?,
            kid: decode_field(str_field(m, "kid")?, "kid")?,
            confirm: decode_field(str_field(m, "confirm")?, "confirm")?,
        })
    }

    /// From decoded field values (e.g. a custom transport).
    pub fn from_parts(
        server_public: [u8; PUBLIC_KEY_LEN],
        salt: [u8; SALT_LEN],
        kid: [u8; KID_LEN],
        confirm: [u8; TAG_LEN],
    ) -> Self {
        Self {
            server_public,
            salt,
            kid,
            confirm,
        }
    }

    /// The kid of the server static key used.
    pub fn kid(&self) -> [u8; KID_LEN] {
        self.kid
    }
}

impl fmt::Debug for ServerHello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // salt and confirm are public on the wire but never logged (§9).
        f.debug_struct("ServerHello")
            .field("kid", &self.kid_b64u())
            .finish_non_exhaustive()
    }
}

/// Server side of the handshake (§3 step 5): generates `e_s` and `salt`, derives the schedule,
/// erases `e_s`, `ee`, `es`, `ikm` and returns the `connected` fields, the s2c sealer (next seq 1;
/// seq 0 was `confirm`) and the c2s opener (expects seq 0).
pub fn server_handshake(
    keys: &StaticKeySet,
    req: &HandshakeRequest,
    conn_id: &str,
    user_id: &str,
) -> Result<(ServerHello, RecordSealer, RecordOpener), HandshakeError> {
    let e_s = EcSecretKey::generate()?;
    let mut salt = [0u8; SALT_LEN];
    super::backend::random_bytes(&mut salt)?;
    server_handshake_inner(keys, req, conn_id, user_id, e_s, salt)
}

/// [`server_handshake`] with a fixed ephemeral scalar and salt: known-answer tests only.
#[doc(hidden)]
pub fn server_handshake_with_ephemeral_for_tests(
    keys: &StaticKeySet,
    req: &HandshakeRequest,
    conn_id: &str,
    user_id: &str,
    e_s_scalar: &[u8],
    salt: [u8; SALT_LEN],
) -> Result<(ServerHello, RecordSealer, RecordOpener), HandshakeError> {
    let e_s = EcSecretKey::from_scalar_bytes(e_s_scalar).map_err(|_| HandshakeError::InvalidPublicKey)?;
    server_handshake_inner(keys, req, conn_id, user_id, e_s, salt)
}

fn server_handshake_inner(
    keys: &StaticKeySet,
    req: &HandshakeRequest,
    conn_id: &str,
    user_id: &str,
    e_s: EcSecretKey,
    salt: [u8; SALT_LEN],
) -> Result<(ServerHello, RecordSealer, RecordOpener), HandshakeError> {
    let sk = keys.select(req.kid.as_ref()).ok_or(HandshakeError::UnknownKid)?;
    let kid = sk.kid();
    let e_s_pub = e_s.public_key();
    let th: [u8; TH_LEN] = transcript_hash(&TranscriptInput {
        kid: &kid,
        server_static: sk.public().as_sec1(),
        client_ephemeral: req.client_public.as_sec1(),
        server_ephemeral: e_s_pub.as_sec1(),
        salt: &salt,
        conn_id,
        user_id,
    })
    .map_err(|_| HandshakeError::IdentityTooLong)?;
    let (c2s, s2c) = {
        let ee = e_s.diffie_hellman(&req.client_public);
        drop(e_s);
        let es = sk.secret().diffie_hellman(&req.client_public);
        let ikm = ikm(&ee, &es);
        initial_secrets(&salt, &ikm, &th)
        // ee, es, ikm are zeroized here
    };
    let mut sealer = RecordSealer::new(Direction::S2c, s2c, th, 0);
    let confirm = sealer.seal_confirm();
    let opener = RecordOpener::new(Direction::C2s, c2s, th, 0);
    let hello = ServerHello {
        server_public: e_s_pub.to_sec1(),
        salt,
        kid,
        confirm,
    };
    Ok((hello, sealer, opener))
}

/// Client side of the handshake: holds the ephemeral `e_c` between `authenticate` and
/// `connected`. Consumed by [`ClientHandshake::finish`]; zeroized on drop; `Debug` is redacted.
pub struct ClientHandshake {
    e_c: EcSecretKey,
    e_c_pub: EcPublicKey,
}

impl ClientHandshake {
    /// A fresh ephemeral key from the OS CSPRNG.
    pub fn new() -> Result<Self, HandshakeError> {
        Ok(Self::from_secret(EcSecretKey::generate()?))
    }

    /// With a fixed ephemeral scalar: known-answer tests only.
    #[doc(hidden)]
    pub fn with_ephemeral_for_tests(e_c_scalar: &[u8]) -> Result<Self, HandshakeError> {
        EcSecretKey::from_scalar_bytes(e_c_scalar)
            .map(Self::from_secret)
            .map_err(|_| HandshakeError::InvalidPublicKey)
    }

    fn from_secret(e_c: EcSecretKey) -> Self {
        let e_c_pub = e_c.public_key();
        Self { e_c, e_c_pub }
    }

    /// `publicKey` for the `authenticate` data (base64url of the 65-byte `e_c`).
    pub fn public_key_b64u(&self) -> String {
        b64::encode(self.e_c_pub.as_sec1())
    }

    /// Adds `v`, `publicKey` and (if given) `kid` to the `authenticate` data object.
    pub fn insert_auth_fields(&self, data: &mut Map<String, Value>, kid: Option<[u8; KID_LEN]>) {
        data.insert("v".into(), Value::from(VERSION));
        data.insert("publicKey".into(), Value::String(self.public_key_b64u()));
        if let Some(kid) = kid {
            data.insert("kid".into(), Value::String(b64::encode(&kid)));
        }
    }

    /// Completes the handshake: `kid` must be pinned, `serverPublicKey` valid and `confirm` must
    /// verify ("server authentication failed" otherwise; send nothing encrypted). Returns the c2s
    /// sealer (seq 0) and the s2c opener (expects seq 1).
    pub fn finish(
        self,
        pinned: &[PinnedKey],
        hello: &ServerHello,
        conn_id: &str,
        user_id: &str,
    ) -> Result<(RecordSealer, RecordOpener), HandshakeError> {
        let pin = pinned
            .iter()
            .find(|p| p.kid() == hello.kid)
            .ok_or(HandshakeError::UnknownKid)?;
        let e_s =
            EcPublicKey::from_sec1_uncompressed(&hello.server_public).map_err(|_| HandshakeError::InvalidPublicKey)?;
        let th: [u8; TH_LEN] = transcript_hash(&TranscriptInput {
            kid: &hello.kid,
            server_static: pin.public().as_sec1(),
            client_ephemeral: self.e_c_pub.as_sec1(),
            server_ephemeral: e_s.as_sec1(),
            salt: &hello.salt,
            conn_id,
            user_id,
        })
        .map_err(|_| HandshakeError::IdentityTooLong)?;
        let (c2s, s2c) = {
            let ee = self.e_c.diffie_hellman(&e_s);
            let es = self.e_c.diffie_hellman(pin.public());
            drop(self);
            let ikm = ikm(&ee, &es);
            initial_secrets(&hello.salt, &ikm, &th)
        };
        let mut opener = RecordOpener::new(Direction::S2c, s2c, th, 0);
        opener
            .verify_confirm(&hello.confirm)
            .map_err(|_| HandshakeError::ServerAuthFailed)?;
        let sealer = RecordSealer::new(Direction::C2s, c2s, th, 0);
        Ok((sealer, opener))
    }
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientHandshake([redacted])")
    }
}
