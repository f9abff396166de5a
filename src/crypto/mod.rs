//! wsenc/1: the encrypted session protocol (`/work/shared/spec/wsenc1.md`), as pure code.
//!
//! No I/O: bytes in, values out. The server calls [`HandshakeRequest::from_auth_data`] and
//! [`server_handshake`] after the authenticator accepted the credentials, sends the
//! [`ServerHello`] fields in `connected`, then seals every outbound message with the
//! [`RecordSealer`] and opens every inbound frame with the [`RecordOpener`]. A client uses
//! [`ClientHandshake`]. Errors map to the spec close codes via `close_code()`.
//!
//! All secrets live in zeroizing types and `Debug` output is redacted.

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
pub mod handshake;
pub mod keys;
pub mod record;
pub mod schedule;

pub use handshake::{
    server_handshake, ClientHandshake, HandshakeError, HandshakeRequest, ServerHello,
};
pub use keys::{KeyError, PinnedKey, StaticKey, StaticKeySet};
pub use record::{InvalidEpochLimit, OpenError, RecordOpener, RecordSealer, SealError};

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
