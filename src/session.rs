//! The seam between the connection and whatever encrypts it.
//!
//! A [`Handshake`] runs once, after the authenticator accepted the credentials. It either leaves the session in
//! plaintext, rejects it (close 4004), or returns a [`Session`]: extra fields for the `connected` event plus a
//! [`Sealer`] (owned by the connection's writer: every outbound frame after `connected` goes through it, in order)
//! and an [`Opener`] (owned by the reader: every inbound frame goes through it). wsenc/1 is one implementation;
//! applications can plug their own.

use bytes::BytesMut;
use serde_json::{Map, Value};

use crate::crypto::RecordSink;

use crate::hooks::Hook;
use crate::protocol::outbound::{put_frame, put_header, OP_TEXT};
use crate::protocol::CloseCode;
use crate::redact::debug_redacted;

debug_redacted!(HandshakeRequest { client_id, user_id; data });

/// Seals outbound messages of one session (server → client direction).
///
/// ```
/// use sealcast::protocol::CloseCode;
/// use sealcast::session::{Frames, Sealer};
///
/// /// Not encryption: an illustration of the contract (one inner message in, text frames out).
/// struct Shouting;
///
/// impl Sealer for Shouting {
///     fn seal(&mut self, inner: &str, out: &mut Frames<'_>) -> Result<(), CloseCode> {
///         out.push(&inner.to_uppercase());
///         Ok(())
///     }
/// }
/// ```
pub trait Sealer: Send + Sync + 'static {
    /// Seals one inner message (`{"event":..,"data":..}` JSON text) into one or more text frames appended to
    /// `out`. An error closes the connection with the returned code.
    fn seal(&mut self, inner: &str, out: &mut Frames<'_>) -> Result<(), CloseCode>;

    /// Switches to fresh keys now, appending whatever frames announce it (wsenc/1: a `key_update` record).
    /// Called when the client refreshes its credentials. The default does nothing.
    fn rekey(&mut self, out: &mut Frames<'_>) -> Result<(), CloseCode> {
        let _ = out;
        Ok(())
    }

    /// Called whenever the connection's writer has sent everything queued: a chance to free what the next
    /// [`Self::seal`] can rebuild (wsenc/1 drops its expanded AES-GCM schedule), so that idle sessions stay small.
    /// The default does nothing.
    fn idle(&mut self) {}
}

/// Where a [`Sealer`] puts what it sends: each frame is appended, already framed as a WebSocket text frame, to
/// the connection's write buffer, so sealed records go out without another copy.
pub struct Frames<'a> {
    buf: &'a mut BytesMut,
    count: u64,
}

impl<'a> Frames<'a> {
    pub(crate) fn new(buf: &'a mut BytesMut) -> Self {
        Self { buf, count: 0 }
    }

    /// Appends `text` as one text frame.
    pub fn push(&mut self, text: &str) {
        put_frame(self.buf, OP_TEXT, text.as_bytes());
        self.count += 1;
    }

    /// How many frames were appended.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }
}

/// The record layer writes each record's ASCII straight into the frame's payload.
impl RecordSink for Frames<'_> {
    fn next_record(&mut self, len: usize) -> &mut [u8] {
        put_header(self.buf, OP_TEXT, len);
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        self.count += 1;
        self.buf.get_mut(start..).unwrap_or_default()
    }
}

impl std::fmt::Debug for Frames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frames")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// Opens inbound frames of one session (client → server direction).
pub trait Opener: Send + Sync + 'static {
    /// Opens one inbound frame. `Ok(Some(inner))` is an inner message to route, `Ok(None)` a control record the
    /// opener consumed (e.g. a key update). An error closes the connection with the returned code (4004 for a
    /// frame that is not a record at all, 4005 for a bad record, 4006 for an exhausted key).
    fn open(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, CloseCode>;

    /// Called whenever the connection's reader has handled every frame that arrived and is about to wait: a
    /// chance to free what the next [`Self::open`] can rebuild, as [`Sealer::idle`]. The default does nothing.
    fn idle(&mut self) {}
}

/// An established encrypted session.
pub struct Session {
    /// Fields merged into the `connected` event's `data` (e.g. `serverPublicKey`, `salt`, `confirm`).
    pub connected_fields: Map<String, Value>,
    /// Outbound direction.
    pub sealer: Box<dyn Sealer>,
    /// Inbound direction.
    pub opener: Box<dyn Opener>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

/// Input of a [`Handshake`].
#[derive(Clone)]
pub struct HandshakeRequest {
    /// Connection id.
    pub client_id: String,
    /// The authenticated user, if any.
    pub user_id: Option<String>,
    /// The `authenticate` payload (key material lives here).
    pub data: Map<String, Value>,
}

/// What a handshake decided.
#[derive(Debug)]
pub enum HandshakeOutcome {
    /// The client asked for no encryption (allowed only when encryption is not required).
    Plaintext,
    /// Encrypt the session.
    Encrypted(Session),
    /// Refuse: close 4004.
    Reject,
}

/// A pluggable handshake (the reference's `handshakeFn`).
pub type Handshake = dyn Hook<HandshakeRequest, HandshakeOutcome>;
