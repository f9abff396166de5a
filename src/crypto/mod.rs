//! wsenc/1: the encrypted session protocol (specified in `docs/spec/wsenc1.md`, the normative spec), as pure code.
//!
//! No I/O: bytes in, values out. The server calls [`HandshakeRequest::from_auth_data`] and
//! [`server_handshake`] after the authenticator accepted the credentials, sends the
//! [`ServerHello`] fields in `connected`, then seals every outbound message with the
//! [`RecordSealer`] and opens every inbound frame with the [`RecordOpener`]. A client uses
//! [`ClientHandshake`]. Errors map to the spec close codes via `close_code()`.
//!
//! All secrets live in zeroizing types and `Debug` output is redacted.
//!
//! ```
//! use sealcast::crypto::{
//!     server_handshake, ClientHandshake, HandshakeRequest, ServerHello, StaticKey, StaticKeySet,
//! };
//! use serde_json::{json, Map, Value};
//!
//! // Server start-up: load (or `keygen`) the static key; clients pin `keys.current().pinned()`.
//! let keys = StaticKeySet::new(StaticKey::generate()?);
//! let pins = [keys.current().pinned()];
//!
//! // Client: `authenticate` carries the ephemeral key.
//! let client = ClientHandshake::new()?;
//! let mut auth = Map::new();
//! auth.insert("token".into(), json!("opaque"));
//! client.insert_auth_fields(&mut auth, None);
//!
//! // Server, after the authenticator accepted the credentials (Ok(None): plaintext client).
//! let req = HandshakeRequest::from_auth_data(&Value::Object(auth))?.expect("publicKey present");
//! let (hello, mut s2c, mut c2s_in) = server_handshake(&keys, &req, "conn-1", "user-1")?;
//! let mut connected = Map::new();
//! connected.insert("id".into(), json!("conn-1"));
//! connected.insert("userId".into(), json!("user-1"));
//! hello.insert_into(&mut connected);
//!
//! // Client: verify `confirm`, get its record states.
//! let hello = ServerHello::from_connected_data(&Value::Object(connected))?;
//! let (mut c2s, mut s2c_in) = client.finish(&pins, &hello, "conn-1", "user-1")?;
//!
//! // Records both ways; errors carry `close_code()` (4004 / 4005 / 4006).
//! let mut frames = Vec::new();
//! c2s.seal(br#"{"event":"publish","data":{"room":"r","text":"hi"}}"#, &mut frames)?;
//! for f in &frames {
//!     let inner = c2s_in.open(f)?; // Some(inner JSON) or None for a key_update
//!     assert!(inner.is_some());
//! }
//! frames.clear();
//! s2c.seal(br#"{"event":"message","data":{"text":"hi"}}"#, &mut frames)?;
//! assert!(s2c_in.open(&frames[0])?.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::unreachable,
        clippy::todo
    )
)]

pub mod b64;
#[doc(hidden)]
pub mod backend;
pub mod group;
pub mod handshake;
pub mod ignis;
pub mod keys;
pub mod record;
pub mod schedule;

pub use group::{InvalidRoomKey, RoomKey, SealedBody};
pub use handshake::{server_handshake, ClientHandshake, HandshakeError, HandshakeRequest, ServerHello};
pub use keys::{KeyError, PinnedKey, StaticKey, StaticKeySet};
pub(crate) use record::RecordSink;
pub use record::{InvalidEpochLimit, OpenError, RecordOpener, RecordSealer, SealError, BINARY_BATCH};

/// `PROTO` (40 bytes), the first transcript field.
pub const PROTO: &[u8; 40] = b"wsenc/1 NK P-256 HKDF-SHA256 AES-256-GCM";

/// Records per direction and epoch, the `key_update` included (§7).
pub const MAX_RECORDS_PER_EPOCH: u64 = 1 << 20;

/// Close code 4004 `Encryption required`.
pub const CLOSE_ENCRYPTION_REQUIRED: u16 = 4004;
/// Close code 4005 `Decryption failed`.
pub const CLOSE_DECRYPTION_FAILED: u16 = 4005;
/// Close code 4006 `Key exhausted`.
pub const CLOSE_KEY_EXHAUSTED: u16 = 4006;

/// Record direction; its byte goes into the AAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server (`0x01`).
    C2s,
    /// Server to client (`0x02`).
    S2c,
}

impl Direction {
    /// The AAD direction byte.
    pub const fn byte(self) -> u8 {
        match self {
            Direction::C2s => 0x01,
            Direction::S2c => 0x02,
        }
    }
}
