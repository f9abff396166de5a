//! The seam between the connection and whatever encrypts it.
//!
//! A [`Handshake`] runs once, after the authenticator accepted the credentials. It either leaves the session in
//! plaintext, rejects it (close 4004), or returns a [`Session`]: extra fields for the `connected` event plus a
//! [`Sealer`] (owned by the connection's writer: every outbound frame after `connected` goes through it, in order)
//! and an [`Opener`] (owned by the reader: every inbound frame goes through it). wsenc/1 is one implementation;
//! applications can plug their own.

use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};

use crate::crypto::{RecordSink, RoomKey, SealedBody};

use crate::hooks::Hook;
use crate::protocol::outbound::{put_frame, put_header, TextFrame, OP_BINARY, OP_TEXT};
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

    /// Seals a message to a room. A sealer that supports group records (wsenc/1 §11, see [`Self::room_keys`])
    /// seals only a small header of its own and appends the body the fan-out sealed once for every recipient;
    /// the default seals [`RoomMessage::text`] like any other message.
    fn seal_room(&mut self, message: &RoomMessage<'_>, out: &mut Frames<'_>) -> Result<(), CloseCode> {
        self.seal(message.text(), out)
    }

    /// True if [`Self::seal_room`] sends group records, so the fan-out must prepare the room's key and shared
    /// body for this session. The default is false.
    fn room_keys(&self) -> bool {
        false
    }

    /// Most room messages one [`Self::seal_rooms`] call takes (wsenc/1 §11.4: 256). Above 1, the connection's
    /// writer hands consecutive room messages to [`Self::seal_rooms`] together, and every room fan-out prepares
    /// room frames for this session whatever the messages' length. The default, 0, means no batches.
    fn room_batch_limit(&self) -> usize {
        0
    }

    /// Seals consecutive room messages, in order (at most [`Self::room_batch_limit`]; the writer passes only
    /// messages the outbound transformer did not change). wsenc/1 sends them as one batched group record under a
    /// single header of this session's own. The default seals each with [`Self::seal_room`].
    fn seal_rooms(&mut self, messages: &[RoomMessage<'_>], out: &mut Frames<'_>) -> Result<(), CloseCode> {
        for message in messages {
            self.seal_room(message, out)?;
        }
        Ok(())
    }
}

/// A message to a room, as the fan-out hands it to each recipient's [`Sealer::seal_room`]: its text and, for
/// group records, the room's current key and the body sealed once under it (sealed by the first recipient's
/// writer that needs it, then shared).
#[derive(Debug)]
pub struct RoomMessage<'a> {
    frame: &'a RoomFrame,
}

impl<'a> RoomMessage<'a> {
    pub(crate) fn new(frame: &'a RoomFrame) -> Self {
        Self { frame }
    }

    /// The message (`{"event":..,"data":..}` JSON text).
    pub fn text(&self) -> &str {
        self.frame.0.text.text()
    }

    /// The room key and the body sealed under it, padded to `pad`; `None` if the message cannot be sealed so
    /// (the sealer then falls back to a per-recipient record). The first call seals, later ones share the result.
    pub(crate) fn group(&self, pad: Option<NonZeroUsize>) -> Option<(&'a RoomKey, &'a SealedBody)> {
        let inner = &*self.frame.0;
        let body = inner
            .body
            .get_or_init(|| {
                inner
                    .key
                    .seal_body(inner.counter, inner.text.text().as_bytes(), pad)
                    .ok()
            })
            .as_ref()?;
        Some((&inner.key, body))
    }
}

/// A fan-out's message to a room with group-capable members: the shared frame for everyone else, and what group
/// records need. One `Arc`, so a queued copy is one pointer.
#[derive(Clone)]
pub(crate) struct RoomFrame(Arc<RoomFrameInner>);

struct RoomFrameInner {
    text: TextFrame,
    key: Arc<RoomKey>,
    /// The body's counter under `key`, unique per message.
    counter: u64,
    body: OnceLock<Option<SealedBody>>,
}

impl RoomFrame {
    pub(crate) fn new(text: TextFrame, key: Arc<RoomKey>, counter: u64) -> Self {
        Self(Arc::new(RoomFrameInner {
            text,
            key,
            counter,
            body: OnceLock::new(),
        }))
    }

    /// The plaintext frame, for recipients without group records.
    pub(crate) fn text_frame(&self) -> &TextFrame {
        &self.0.text
    }

    /// The sealed body as an element of a batched record's `bodies` (empty if it was never sealed).
    pub(crate) fn element(&self, first: bool) -> &[u8] {
        match self.0.body.get() {
            Some(Some(body)) => body.batch_element_bytes(first),
            _ => &[],
        }
    }

    /// The sealed body as a part of a binary batched record (`u32be(len) ‖ body`, §11.5; empty if never sealed).
    pub(crate) fn part(&self) -> &[u8] {
        match self.0.body.get() {
            Some(Some(body)) => body.binary_part(),
            _ => &[],
        }
    }
}

impl std::fmt::Debug for RoomFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomFrame")
            .field("epoch", &self.0.key.epoch())
            .finish_non_exhaustive()
    }
}

/// Shared bodies (group records) at least this long are written from the shared buffer itself; shorter ones are
/// copied into the connection's write buffer.
const SHARED_TAIL_MIN: usize = 2048;

/// The same for the bodies of a batched group record (§11.4). They follow each other with nothing of the
/// connection's own in between, so a shared body would cost one buffer of the vectored write, as a plaintext
/// recipient's frame does; copying the 256-byte bodies into the connection's buffer still measured a little
/// cheaper (0.166 vs 0.171–0.183 µs per delivery; BENCHMARKS.md, batched group records).
const SHARED_ELEMENT_MIN: usize = SHARED_TAIL_MIN;

/// The same for the parts of a binary batched record (§11.5): below it a part is copied into the connection's
/// buffer, at or above it the writer sends the room frame's shared raw bytes as a buffer of their own.
const SHARED_PART_MIN: usize = SHARED_ELEMENT_MIN;

/// A shared piece of the byte stream that follows a group record's own bytes.
pub(crate) enum SharedTail {
    /// These bytes (a single group record's body and its closing `"}}`, §11.3).
    Bytes(Bytes),
    /// The body of the `index`th message handed to [`Sealer::seal_rooms`], as an element of a batched record's
    /// `bodies` (§11.4): the writer sends it from the room frame it holds, with no reference count touched.
    Element { index: usize, first: bool },
    /// The same message's body as a part of a binary batched record (§11.5): `u32be(len) ‖ body`.
    Part { index: usize },
}

/// Where a [`Sealer`] puts what it sends: each frame is appended, already framed as a WebSocket text frame, to
/// the connection's write buffer, so sealed records go out without another copy.
pub struct Frames<'a> {
    buf: &'a mut BytesMut,
    count: u64,
    /// Group records among them (single, batched).
    groups: (u64, u64),
    /// Shared tails (group records' bodies) and the offsets in `buf` they follow.
    tails: Vec<(usize, SharedTail)>,
    /// The index, in the messages handed to [`Sealer::seal_rooms`], of the batch's first body.
    element_base: usize,
}

impl<'a> Frames<'a> {
    pub(crate) fn new(buf: &'a mut BytesMut) -> Self {
        Self {
            buf,
            count: 0,
            groups: (0, 0),
            tails: Vec::new(),
            element_base: 0,
        }
    }

    /// The shared tails appended, each with the offset in the write buffer it follows (ascending): the writer
    /// sends the buffer up to there, then the tail, without copying it.
    pub(crate) fn take_tails(&mut self) -> Vec<(usize, SharedTail)> {
        std::mem::take(&mut self.tails)
    }

    /// The bodies of the next batched record are those of the messages from `index` on (in the slice handed to
    /// [`Sealer::seal_rooms`]), in order.
    pub(crate) fn set_element_base(&mut self, index: usize) {
        self.element_base = index;
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

    /// How many of them were group records: single (§11.3), batched (§11.4).
    pub(crate) fn group_records(&self) -> (u64, u64) {
        self.groups
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

    fn next_prefix(&mut self, len: usize, tail_len: usize) -> &mut [u8] {
        put_header(self.buf, OP_TEXT, len.saturating_add(tail_len));
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        self.count += 1;
        self.buf.get_mut(start..).unwrap_or_default()
    }

    fn put_tail(&mut self, tail: &Bytes) {
        // A small body is cheaper to copy than to send as a buffer of its own: a vectored write of two buffers per
        // message cost more kernel time than the copy (measured: BENCHMARKS.md, group records).
        if tail.len() < SHARED_TAIL_MIN {
            self.buf.extend_from_slice(tail);
        } else {
            self.tails.push((self.buf.len(), SharedTail::Bytes(tail.clone())));
        }
    }

    fn group_record(&mut self, batched: bool) {
        if batched {
            self.groups.1 += 1;
        } else {
            self.groups.0 += 1;
        }
    }

    fn next_binary(&mut self, len: usize, tail_len: usize) -> &mut [u8] {
        put_header(self.buf, OP_BINARY, len.saturating_add(tail_len));
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        self.count += 1;
        self.buf.get_mut(start..).unwrap_or_default()
    }

    fn put_part(&mut self, index: usize, body: &SealedBody) {
        let part = body.binary_part();
        if part.len() < SHARED_PART_MIN {
            self.buf.extend_from_slice(part);
        } else {
            let index = self.element_base.saturating_add(index);
            self.tails.push((self.buf.len(), SharedTail::Part { index }));
        }
    }

    fn put_element(&mut self, index: usize, body: &SealedBody, first: bool) {
        let element = body.batch_element_bytes(first);
        if element.len() < SHARED_ELEMENT_MIN {
            self.buf.extend_from_slice(element);
        } else {
            let index = self.element_base.saturating_add(index);
            self.tails.push((self.buf.len(), SharedTail::Element { index, first }));
        }
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
