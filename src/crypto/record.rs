//! The record layer (wsenc/1 §6–§7): per-direction sealer and opener.

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroUsize;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;
use zeroize::{Zeroize, Zeroizing};

use super::b64;
use super::backend::{AeadKey, KEY_LEN, NONCE_LEN, TAG_LEN};
use super::group::{self, KeysSent, RoomKey, RoomKeyRing, SealedBody, MAX_BATCH_BODIES, ROOM_KEY_EVENT};
use super::schedule::{TrafficSecret, TH_LEN};
use super::{
    Direction, CLOSE_DECRYPTION_FAILED, CLOSE_ENCRYPTION_REQUIRED, CLOSE_KEY_EXHAUSTED, MAX_RECORDS_PER_EPOCH,
};

/// Largest `seq` a JSON integer may carry on the wire (2^53 − 1).
pub const MAX_WIRE_SEQ: u64 = (1 << 53) - 1;
/// Length of the record AAD.
pub const AAD_LEN: usize = 56;

const AAD_LABEL: &[u8; 11] = b"wsenc/1 rec";
/// The AAD label of a group record's per-recipient header (§11): same layout as [`aad`], another label, so a
/// header can never be opened as an ordinary record or the other way round.
const HEADER_AAD_LABEL: &[u8; 11] = b"wsenc/1 hdr";
/// The inner control message that ends an epoch.
pub const KEY_UPDATE_MESSAGE: &[u8] = br#"{"event":"key_update","data":{}}"#;
const KEY_UPDATE_EVENT: &str = "key_update";
const RESERVED_INNER: [&str; 3] = ["authenticate", "connected", "encrypted"];

const ENV_PREFIX: &[u8] = br#"{"event":"encrypted","data":{"seq":"#;
const ENV_IV: &[u8] = br#","iv":""#;
const ENV_CT: &[u8] = br#"","ct":""#;
pub(crate) const ENV_SUFFIX: &[u8] = br#""}}"#;
const ENV_BODY: &[u8] = br#"","body":""#;
/// A batched group record's `bodies` array opens after `ct` (§11.4) ...
const ENV_BODIES: &[u8] = br#"","bodies":["#;
/// ... and the envelope ends right after it.
const ENV_BODIES_END: &[u8] = b"]}}";

/// `nonce(d, n, seq) = iv_d_n XOR (0x00000000 ‖ u64be(seq))`.
pub fn nonce(iv: &[u8; NONCE_LEN], seq: u64) -> [u8; NONCE_LEN] {
    let mut n = *iv;
    let s = seq.to_be_bytes();
    for (b, x) in n.iter_mut().skip(4).zip(s.iter()) {
        *b ^= x;
    }
    n
}

/// `AAD(d, n, seq) = "wsenc/1 rec" ‖ dir ‖ th ‖ u32be(n) ‖ u64be(seq)` (56 bytes, on the stack).
pub fn aad(direction: Direction, th: &[u8; TH_LEN], epoch: u32, seq: u64) -> [u8; AAD_LEN] {
    aad_labelled(AAD_LABEL, direction, th, epoch, seq)
}

/// `hdr_aad(d, n, seq) = "wsenc/1 hdr" ‖ dir ‖ th ‖ u32be(n) ‖ u64be(seq)`: the AAD of a group record's header.
pub fn header_aad(direction: Direction, th: &[u8; TH_LEN], epoch: u32, seq: u64) -> [u8; AAD_LEN] {
    aad_labelled(HEADER_AAD_LABEL, direction, th, epoch, seq)
}

fn aad_labelled(
    label_bytes: &[u8; 11],
    direction: Direction,
    th: &[u8; TH_LEN],
    epoch: u32,
    seq: u64,
) -> [u8; AAD_LEN] {
    let mut a = [0u8; AAD_LEN];
    let (label, rest) = a.split_at_mut(AAD_LABEL.len());
    label.copy_from_slice(label_bytes);
    let (dir, rest) = rest.split_at_mut(1);
    dir.copy_from_slice(&[direction.byte()]);
    let (t, rest) = rest.split_at_mut(TH_LEN);
    t.copy_from_slice(th);
    let (e, s) = rest.split_at_mut(4);
    e.copy_from_slice(&epoch.to_be_bytes());
    s.copy_from_slice(&seq.to_be_bytes());
    a
}

/// Keys of one direction and epoch: the traffic secret (kept until the ratchet), the AES key, its expanded
/// AES-GCM schedule and the static IV. The schedule (about 0.6 KiB in aws-lc) is built on first use and can be
/// released again: an idle session then holds only its 32-byte key, and rebuilding costs ~130 ns.
struct EpochKeys {
    ts: TrafficSecret,
    key: Zeroizing<[u8; KEY_LEN]>,
    aead: Option<AeadKey>,
    iv: Zeroizing<[u8; NONCE_LEN]>,
}

impl EpochKeys {
    fn new(ts: TrafficSecret) -> Self {
        let key = ts.key();
        let iv = ts.iv();
        Self {
            ts,
            key,
            aead: None,
            iv,
        }
    }

    fn aead(&mut self) -> &AeadKey {
        self.aead.get_or_insert_with(|| AeadKey::new(&self.key))
    }

    fn release_schedule(&mut self) {
        self.aead = None;
    }

    /// Switches to epoch n+1; `ts_n`, the old AES key and IV are erased when dropped here.
    fn ratchet(&mut self) {
        *self = Self::new(self.ts.next());
    }
}

/// A bad record-layer configuration value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("epoch limit must be in 2..=2^20 and above the current sequence number")]
pub struct InvalidEpochLimit;

/// Why sealing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The inner message is empty or ends in a 0x00 byte (which padding removal would strip).
    #[error("inner message is empty or ends with a NUL byte")]
    InvalidPlaintext,
    /// The epoch counter would wrap: the session must be closed.
    #[error("key exhausted: epoch counter would wrap")]
    KeyExhausted,
    /// The record is too large for AES-GCM or the address space.
    #[error("record too large")]
    TooLarge,
}

impl SealError {
    /// The WebSocket close code for this failure.
    pub fn close_code(&self) -> u16 {
        match self {
            SealError::KeyExhausted => CLOSE_KEY_EXHAUSTED,
            SealError::InvalidPlaintext | SealError::TooLarge => CLOSE_DECRYPTION_FAILED,
        }
    }
}

/// Why an inbound frame was rejected. Messages never include frame contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The frame is not an `encrypted` envelope at all (invalid JSON, another event, …): downgrade.
    #[error("frame is not an encrypted envelope")]
    NotEncrypted,
    /// An `encrypted` envelope whose schema is not exact (extra field, non-integer `seq`, …).
    #[error("malformed encrypted envelope")]
    MalformedEnvelope,
    /// `seq` is not the expected value: replay, reorder or deletion.
    #[error("unexpected record sequence number")]
    UnexpectedSeq,
    /// `iv` or `ct` is not strict base64url.
    #[error("invalid base64url in envelope")]
    BadEncoding,
    /// `iv` does not equal the nonce for this seq.
    #[error("record nonce mismatch")]
    NonceMismatch,
    /// `ct` is shorter than the tag.
    #[error("ciphertext too short")]
    CiphertextTooShort,
    /// AEAD authentication failed.
    #[error("record authentication failed")]
    AuthFailed,
    /// The decrypted message is not a non-empty UTF-8 JSON object with a string `event`.
    #[error("invalid inner message")]
    InvalidInner,
    /// The inner event is one that must never travel inside a record.
    #[error("reserved event inside a record")]
    ReservedInnerEvent,
    /// `seq` reached the per-epoch limit, or the epoch counter would wrap.
    #[error("key exhausted")]
    KeyExhausted,
    /// An earlier frame already failed; the session must be closed.
    #[error("record layer already failed")]
    Poisoned,
}

impl OpenError {
    /// The WebSocket close code for this failure (4004 downgrade, 4005 record failure, 4006 limit).
    pub fn close_code(&self) -> u16 {
        match self {
            OpenError::NotEncrypted => CLOSE_ENCRYPTION_REQUIRED,
            OpenError::KeyExhausted => CLOSE_KEY_EXHAUSTED,
            _ => CLOSE_DECRYPTION_FAILED,
        }
    }
}

/// The plaintext length after zero padding to a multiple of `pad` bytes (`None`: no padding).
pub(crate) fn padded_len(len: usize, pad: Option<NonZeroUsize>) -> Result<usize, SealError> {
    match pad {
        None => Ok(len),
        Some(b) => len.div_ceil(b.get()).checked_mul(b.get()).ok_or(SealError::TooLarge),
    }
}

fn check_limit(limit: u64, next_seq: u64) -> Result<(), InvalidEpochLimit> {
    if (2..=MAX_RECORDS_PER_EPOCH).contains(&limit) && next_seq < limit {
        Ok(())
    } else {
        Err(InvalidEpochLimit)
    }
}

/// Seals outbound messages of one direction. Exactly one task must own it (it assigns `seq`).
pub struct RecordSealer {
    direction: Direction,
    th: [u8; TH_LEN],
    epoch: u32,
    seq: u64,
    keys: EpochKeys,
    limit: u64,
    pad_bucket: Option<NonZeroUsize>,
    scratch: Vec<u8>,
    /// Group records (§11) negotiated.
    room_keys: bool,
    /// Batched group records (§11.4) negotiated.
    batches: bool,
    /// Binary batched group records (§11.5) negotiated: batches go out as binary frames.
    binary: bool,
    /// The room keys this session's client holds: boxed, and made at the first group record, so that an idle
    /// session stays small.
    keys_sent: Option<Box<KeysSent>>,
}

impl RecordSealer {
    /// A sealer for `direction` starting at epoch 0 and `first_seq` (0 for c2s, 1 for s2c).
    /// Normally obtained from the handshake.
    pub fn new(direction: Direction, ts0: TrafficSecret, th: [u8; TH_LEN], first_seq: u64) -> Self {
        Self {
            direction,
            th,
            epoch: 0,
            seq: first_seq,
            keys: EpochKeys::new(ts0),
            limit: MAX_RECORDS_PER_EPOCH,
            pad_bucket: None,
            scratch: Vec::new(),
            room_keys: false,
            batches: false,
            binary: false,
            keys_sent: None,
        }
    }

    /// Sends group records (§11) from now on: the client advertised them and the server answered `roomKeys`.
    pub fn enable_room_keys(&mut self) {
        self.room_keys = true;
    }

    /// True if this session gets group records.
    pub fn room_keys_enabled(&self) -> bool {
        self.room_keys
    }

    /// Sends batched group records (§11.4) too: the client advertised `"roomKeys": 2` and the server answered it.
    /// Implies [`Self::enable_room_keys`].
    pub fn enable_room_key_batches(&mut self) {
        self.room_keys = true;
        self.batches = true;
    }

    /// True if this session gets batched group records.
    pub fn room_key_batches_enabled(&self) -> bool {
        self.batches
    }

    /// Sends batched group records as binary frames (§11.5): the client advertised `"roomKeys": 3` and the server
    /// answered it. Implies [`Self::enable_room_key_batches`].
    pub fn enable_room_key_binary(&mut self) {
        self.enable_room_key_batches();
        self.binary = true;
    }

    /// True if this session gets batched group records as binary frames (§11.5).
    pub fn room_key_binary_enabled(&self) -> bool {
        self.binary
    }

    /// Seals several room messages as one batched group record (§11.4): a `room_key` record first for every key
    /// the client does not hold yet, then one record whose header names every body, in order. `items` are the
    /// bodies with the keys that sealed them (1 to [`MAX_BATCH_BODIES`]; they may be of different rooms and
    /// epochs). Frames appended to `out` are complete. Fails with [`SealError::InvalidPlaintext`] when batches are
    /// not enabled, `items` is empty or too long, or a body is not its key's.
    pub fn seal_group_batch(
        &mut self,
        items: &[(&RoomKey, &SealedBody)],
        out: &mut Vec<Bytes>,
    ) -> Result<(), SealError> {
        let mut records = Vec::new();
        let sealed = self.seal_group_batch_to(items, &mut records);
        out.extend(records.into_iter().map(BytesMut::freeze));
        sealed
    }

    /// [`Self::seal_group_batch`] into a [`RecordSink`]: each body goes to [`RecordSink::put_element`].
    pub(crate) fn seal_group_batch_to(
        &mut self,
        items: &[(&RoomKey, &SealedBody)],
        sink: &mut impl RecordSink,
    ) -> Result<(), SealError> {
        if !self.batches
            || items.is_empty()
            || items.len() > MAX_BATCH_BODIES
            || items.iter().any(|(key, body)| key.epoch() != body.epoch())
        {
            return Err(SealError::InvalidPlaintext);
        }
        for (key, _) in items {
            if !self.keys_sent.as_ref().is_some_and(|sent| sent.holds(key)) {
                self.seal_to(key.delivery_message(), sink)?;
                self.keys_sent.get_or_insert_with(Box::default).sent(key);
            }
        }
        if self.seq.saturating_add(1) >= self.limit {
            self.key_update(sink)?;
        }
        // Every item's key was just checked, so the box exists; its buffer is borrowed out while sealing.
        let mut header = self
            .keys_sent
            .as_mut()
            .map(|s| std::mem::take(&mut s.header))
            .unwrap_or_default();
        header.clear();
        group::batch_header(items.iter().map(|(_, body)| *body), &mut header);
        let sealed = if self.binary {
            self.seal_binary(&header, items, sink)
        } else {
            self.seal_envelope(&header, None, HEADER_AAD_LABEL, Tail::Batch(items), sink)
        };
        if let Some(sent) = self.keys_sent.as_mut() {
            sent.header = header;
        }
        sealed
    }

    /// The padding bucket, if any.
    pub fn padding(&self) -> Option<NonZeroUsize> {
        self.pad_bucket
    }

    /// Seals one room message as a group record (§11): the `room_key` record first if the client does not hold
    /// `key` yet, then the header record, whose envelope ends with `body`'s shared bytes. Frames appended to
    /// `out` are complete (header and body in one buffer each); the server shares the body instead.
    /// Fails with [`SealError::InvalidPlaintext`] when group records are not enabled or `body` is not `key`'s.
    pub fn seal_group(&mut self, key: &RoomKey, body: &SealedBody, out: &mut Vec<Bytes>) -> Result<(), SealError> {
        let mut records = Vec::new();
        let sealed = self.seal_group_to(key, body, &mut records);
        out.extend(records.into_iter().map(BytesMut::freeze));
        sealed
    }

    /// [`Self::seal_group`] into a [`RecordSink`]: the shared body goes to [`RecordSink::put_tail`].
    pub(crate) fn seal_group_to(
        &mut self,
        key: &RoomKey,
        body: &SealedBody,
        sink: &mut impl RecordSink,
    ) -> Result<(), SealError> {
        if body.epoch() != key.epoch() {
            return Err(SealError::InvalidPlaintext);
        }
        if !self.room_keys {
            return Err(SealError::InvalidPlaintext);
        }
        if !self.keys_sent.as_ref().is_some_and(|sent| sent.holds(key)) {
            // Sealed in place: the sealing buffer holds only ciphertext afterwards.
            self.seal_to(key.delivery_message(), sink)?;
            self.keys_sent.get_or_insert_with(Box::default).sent(key);
        }
        if self.seq.saturating_add(1) >= self.limit {
            self.key_update(sink)?;
        }
        let header = group::header(body);
        self.seal_envelope(&header, None, HEADER_AAD_LABEL, Tail::Body(body.wire()), sink)
    }

    /// Lowers the per-epoch record limit (`2..=2^20`, above the next seq); for tests.
    pub fn set_epoch_limit(&mut self, limit: u64) -> Result<(), InvalidEpochLimit> {
        check_limit(limit, self.seq)?;
        self.limit = limit;
        Ok(())
    }

    /// Pads every plaintext with zeros to a multiple of `bucket` bytes (`None`: no padding).
    pub fn set_padding(&mut self, bucket: Option<NonZeroUsize>) {
        self.pad_bucket = bucket;
    }

    /// Current epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The seq the next record will carry.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Frees what the next record can rebuild: the expanded AES-GCM schedule (about 0.6 KiB with aws-lc; rebuilt
    /// from the key in about 130 ns) and the sealing buffer (as large as the last record). The server calls this
    /// whenever a connection goes idle, so that an idle session holds little more than its keys.
    pub fn release_idle_memory(&mut self) {
        self.keys.release_schedule();
        self.scratch = Vec::new();
        if let Some(sent) = self.keys_sent.as_mut() {
            sent.header = Vec::new();
        }
    }

    /// Seals one inner message (UTF-8 JSON `{"event":..,"data":..}`; the caller guarantees it is a
    /// valid, non-reserved application message) into `encrypted` frames appended to `out`. When the
    /// epoch is about to run out it first emits the `key_update` record as the last of the epoch
    /// and ratchets, so one call may append 2 frames.
    pub fn seal(&mut self, inner: &[u8], out: &mut Vec<Bytes>) -> Result<(), SealError> {
        let mut records = Vec::new();
        let sealed = self.seal_to(inner, &mut records);
        out.extend(records.into_iter().map(BytesMut::freeze));
        sealed
    }

    /// [`Self::seal`], writing each record straight into the space `sink` gives it: the server frames records
    /// in its write buffer this way, with no per-record allocation or copy.
    pub(crate) fn seal_to(&mut self, inner: &[u8], sink: &mut impl RecordSink) -> Result<(), SealError> {
        if inner.last().is_none_or(|b| *b == 0) {
            return Err(SealError::InvalidPlaintext);
        }
        if self.seq.saturating_add(1) >= self.limit {
            self.key_update(sink)?;
        }
        self.seal_record(inner, self.pad_bucket, sink)
    }

    /// Emits a `key_update` record now and switches to the next epoch.
    pub fn request_key_update(&mut self, out: &mut Vec<Bytes>) -> Result<(), SealError> {
        let mut records = Vec::new();
        let sealed = self.key_update(&mut records);
        out.extend(records.into_iter().map(BytesMut::freeze));
        sealed
    }

    /// [`Self::request_key_update`] into a [`RecordSink`].
    pub(crate) fn key_update_to(&mut self, sink: &mut impl RecordSink) -> Result<(), SealError> {
        self.key_update(sink)
    }

    /// `confirm`: the bare tag of the empty plaintext at s2c epoch 0 seq 0; advances to seq 1.
    pub(crate) fn seal_confirm(&mut self) -> [u8; TAG_LEN] {
        let nonce = nonce(&self.keys.iv, self.seq);
        let aad = aad(self.direction, &self.th, self.epoch, self.seq);
        let tag = self
            .keys
            .aead()
            .seal_in_place(&nonce, &aad, &mut [])
            .unwrap_or([0u8; TAG_LEN]);
        self.seq += 1;
        tag
    }

    fn key_update(&mut self, sink: &mut impl RecordSink) -> Result<(), SealError> {
        let next_epoch = self.epoch.checked_add(1).ok_or(SealError::KeyExhausted)?;
        self.seal_record(KEY_UPDATE_MESSAGE, self.pad_bucket, sink)?;
        self.keys.ratchet();
        self.epoch = next_epoch;
        self.seq = 0;
        Ok(())
    }

    fn seal_record(
        &mut self,
        inner: &[u8],
        pad: Option<NonZeroUsize>,
        sink: &mut impl RecordSink,
    ) -> Result<(), SealError> {
        self.seal_envelope(inner, pad, AAD_LABEL, Tail::None, sink)
    }

    /// Seals `inner` at the current seq under the AAD with `label` and writes its envelope; with a `tail`, the
    /// envelope is a group record's: `"body":"` follows `ct`, and the shared tail (the body and the closing
    /// `"}}`) is handed to the sink as it is; or, batched, `"bodies":[` follows `ct`, then each shared body.
    fn seal_envelope(
        &mut self,
        inner: &[u8],
        pad: Option<NonZeroUsize>,
        label: &[u8; 11],
        tail: Tail<'_>,
        sink: &mut impl RecordSink,
    ) -> Result<(), SealError> {
        if self.seq >= self.limit {
            return Err(SealError::KeyExhausted);
        }
        let pt_len = padded_len(inner.len(), pad)?;
        let ct_len = pt_len.checked_add(TAG_LEN).ok_or(SealError::TooLarge)?;
        if ct_len > usize::MAX / 2 {
            return Err(SealError::TooLarge);
        }
        // Reserve first so the plaintext is never left behind in a reallocated buffer.
        self.scratch.clear();
        self.scratch.reserve(ct_len);
        self.scratch.extend_from_slice(inner);
        self.scratch.resize(pt_len, 0);

        let nonce = nonce(&self.keys.iv, self.seq);
        let aad = aad_labelled(label, self.direction, &self.th, self.epoch, self.seq);
        let tag = self
            .keys
            .aead()
            .seal_in_place(&nonce, &aad, &mut self.scratch)
            .map_err(|_| SealError::TooLarge)?;
        self.scratch.extend_from_slice(&tag);

        let mut seq_buf = itoa::Buffer::new();
        let seq_str = seq_buf.format(self.seq).as_bytes();
        let total = ENV_PREFIX.len()
            + seq_str.len()
            + ENV_IV.len()
            + b64::encoded_len(NONCE_LEN)
            + ENV_CT.len()
            + b64::encoded_len(ct_len);
        let (end, tail_len) = match &tail {
            Tail::None => (ENV_SUFFIX, 0),
            Tail::Body(body) => (ENV_BODY, body.len()),
            Tail::Batch(items) => {
                let bodies: usize = items
                    .iter()
                    .enumerate()
                    .map(|(i, (_, body))| body.batch_element(i == 0).len())
                    .sum();
                (ENV_BODIES, bodies + ENV_BODIES_END.len())
            }
        };
        let mut out = match tail {
            Tail::None => Fill(sink.next_record(total + end.len())),
            _ => Fill(sink.next_prefix(total + end.len(), tail_len)),
        };
        out.put(ENV_PREFIX)?;
        out.put(seq_str)?;
        out.put(ENV_IV)?;
        out.put_b64(&nonce)?;
        out.put(ENV_CT)?;
        out.put_b64(&self.scratch)?;
        out.put(end)?;
        if !out.0.is_empty() {
            return Err(SealError::TooLarge);
        }
        match tail {
            Tail::None => {}
            Tail::Body(body) => {
                sink.put_tail(&body);
                sink.group_record(false);
            }
            Tail::Batch(items) => {
                sink.group_record(true);
                for (i, (_, body)) in items.iter().enumerate() {
                    sink.put_element(i, body, i == 0);
                }
                sink.put_tail(&Bytes::from_static(ENV_BODIES_END));
            }
        }
        self.seq += 1;
        Ok(())
    }
}

impl RecordSealer {
    /// A batched record as one binary frame (§11.5): `0x01 ‖ u64be(seq) ‖ u16be(k) ‖ hdr ‖ k × (u32be(len) ‖ body)`,
    /// `hdr` sealed exactly as §11.4's at the current seq.
    fn seal_binary(
        &mut self,
        header: &[u8],
        items: &[(&RoomKey, &SealedBody)],
        sink: &mut impl RecordSink,
    ) -> Result<(), SealError> {
        if self.seq >= self.limit {
            return Err(SealError::KeyExhausted);
        }
        let k = u16::try_from(items.len()).map_err(|_| SealError::InvalidPlaintext)?;
        self.scratch.clear();
        self.scratch.extend_from_slice(header);
        let nonce = nonce(&self.keys.iv, self.seq);
        let aad = aad_labelled(HEADER_AAD_LABEL, self.direction, &self.th, self.epoch, self.seq);
        let tag = self
            .keys
            .aead()
            .seal_in_place(&nonce, &aad, &mut self.scratch)
            .map_err(|_| SealError::TooLarge)?;
        self.scratch.extend_from_slice(&tag);
        let head_len = BINARY_HEAD_LEN + self.scratch.len();
        let parts: usize = items.iter().map(|(_, body)| body.binary_part().len()).sum();
        let mut out = Fill(sink.next_binary(head_len, parts));
        out.put(&[BINARY_BATCH])?;
        out.put(&self.seq.to_be_bytes())?;
        out.put(&k.to_be_bytes())?;
        out.put(&self.scratch)?;
        if !out.0.is_empty() {
            return Err(SealError::TooLarge);
        }
        sink.group_record(true);
        for (i, (_, body)) in items.iter().enumerate() {
            sink.put_part(i, body);
        }
        self.seq += 1;
        Ok(())
    }
}

/// The type byte of a binary batched group record (§11.5).
pub const BINARY_BATCH: u8 = 0x01;

/// Type byte, `u64be(seq)`, `u16be(k)`: what precedes a binary batch's header.
const BINARY_HEAD_LEN: usize = 1 + 8 + 2;

/// What follows `ct` in an envelope.
enum Tail<'a> {
    /// Nothing: a §6 record.
    None,
    /// A group record's shared body (§11.3), with the closing `"}}`.
    Body(Bytes),
    /// A batched group record's bodies (§11.4), in order.
    Batch(&'a [(&'a RoomKey, &'a SealedBody)]),
}

/// Where a [`RecordSealer`] writes records: space for each record, of its exact length, in order.
pub(crate) trait RecordSink {
    /// Returns `len` bytes for the next record. The sealer overwrites all of them with ASCII (JSON and base64url)
    /// before asking for more; after a sealing error the space holds garbage and must be discarded.
    fn next_record(&mut self, len: usize) -> &mut [u8];

    /// Returns `len` bytes for the start of a record whose last `tail_len` bytes will be a shared tail, passed
    /// to [`Self::put_tail`] once the start is filled.
    fn next_prefix(&mut self, len: usize, tail_len: usize) -> &mut [u8];

    /// Ends the record started by [`Self::next_prefix`] with its shared tail.
    fn put_tail(&mut self, tail: &Bytes);

    /// Continues the record started by [`Self::next_prefix`] with one shared body of a batched record.
    /// `index`: the body's place in the batch; `first`: it opens the array.
    fn put_element(&mut self, index: usize, body: &SealedBody, first: bool) {
        let _ = index;
        self.put_tail(&body.batch_element(first));
    }

    /// Returns `len` bytes for the start of a binary frame (§11.5) whose last `tail_len` bytes are the parts
    /// handed to [`Self::put_part`]. The default is [`Self::next_prefix`] (a sink that does not frame).
    fn next_binary(&mut self, len: usize, tail_len: usize) -> &mut [u8] {
        self.next_prefix(len, tail_len)
    }

    /// Continues the binary frame started by [`Self::next_binary`] with one body part (`u32be(len) ‖ body`).
    fn put_part(&mut self, index: usize, body: &SealedBody) {
        let _ = index;
        self.put_tail(&body.binary_part_bytes());
    }

    /// Told once per group record written: batched (§11.4) or single (§11.3). The default ignores it.
    fn group_record(&mut self, batched: bool) {
        let _ = batched;
    }
}

/// Each record in a buffer of its own.
impl RecordSink for Vec<BytesMut> {
    fn next_record(&mut self, len: usize) -> &mut [u8] {
        self.push(BytesMut::zeroed(len));
        self.last_mut().map(|b| &mut b[..]).unwrap_or_default()
    }

    fn next_prefix(&mut self, len: usize, tail_len: usize) -> &mut [u8] {
        let mut b = BytesMut::with_capacity(len.saturating_add(tail_len));
        b.resize(len, 0);
        self.push(b);
        self.last_mut().map(|b| &mut b[..]).unwrap_or_default()
    }

    fn put_tail(&mut self, tail: &Bytes) {
        if let Some(last) = self.last_mut() {
            last.extend_from_slice(tail);
        }
    }
}

/// Fills a record's space front to back; running out of space is an error, never a panic.
struct Fill<'a>(&'a mut [u8]);

impl Fill<'_> {
    fn take(&mut self, n: usize) -> Result<&mut [u8], SealError> {
        let (head, rest) = std::mem::take(&mut self.0)
            .split_at_mut_checked(n)
            .ok_or(SealError::TooLarge)?;
        self.0 = rest;
        Ok(head)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), SealError> {
        self.take(bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }

    fn put_b64(&mut self, bytes: &[u8]) -> Result<(), SealError> {
        b64::encode_into(bytes, self.take(b64::encoded_len(bytes.len()))?).map_err(|_| SealError::TooLarge)
    }
}

impl fmt::Debug for RecordSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordSealer")
            .field("direction", &self.direction)
            .field("epoch", &self.epoch)
            .field("seq", &self.seq)
            .field("keys", &"[redacted]")
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope<'a> {
    #[serde(borrow)]
    event: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireData<'a> {
    #[serde(borrow)]
    seq: &'a RawValue,
    #[serde(borrow)]
    iv: &'a str,
    #[serde(borrow)]
    ct: &'a str,
    /// A group record's shared body (§11); when present it must be a string (`null` is malformed).
    #[serde(borrow, default, deserialize_with = "some_str")]
    body: Option<&'a str>,
    /// A batched group record's shared bodies (§11.4); when present an array of strings.
    #[serde(borrow, default, deserialize_with = "some_strs")]
    bodies: Option<Vec<&'a str>>,
}

fn some_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de str>, D::Error> {
    <&'de str>::deserialize(d).map(Some)
}

fn some_strs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<&'de str>>, D::Error> {
    <Vec<&'de str>>::deserialize(d).map(Some)
}

/// What an envelope carries after `ct`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shared<'a> {
    /// Nothing: a §6 record.
    None,
    /// A group record's `body` (§11.3).
    Body(&'a str),
    /// A batched group record's `bodies` (§11.4), as sent (not yet checked for count).
    Bodies(Vec<&'a str>),
}

/// A strictly parsed envelope: `seq`, `iv`, `ct` and, for a group record, its body or bodies.
type Parsed<'a> = (u64, &'a str, &'a str, Shared<'a>);

#[derive(Deserialize)]
struct InnerProbe<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
}

fn starts_with_object(s: &[u8]) -> bool {
    s.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'{')
}

/// A JSON integer literal `0 | [1-9][0-9]*` in `0..=2^53-1`; no sign, fraction or exponent.
pub(crate) fn parse_seq(raw: &str) -> Option<u64> {
    let b = raw.as_bytes();
    if b.is_empty() || b.len() > 16 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 1 && b.first() == Some(&b'0') {
        return None;
    }
    raw.parse::<u64>().ok().filter(|v| *v <= MAX_WIRE_SEQ)
}

/// True if every byte is in the base64url alphabet. Branch-free so it vectorizes: a per-byte
/// early-exit loop here cost more than the whole AEAD open of a 4 KiB record.
fn all_b64url(s: &[u8]) -> bool {
    s.iter().fold(true, |ok, &b| {
        ok & ((b.wrapping_sub(b'A') < 26)
            | (b.wrapping_sub(b'a') < 26)
            | (b.wrapping_sub(b'0') < 10)
            | (b == b'-')
            | (b == b'_'))
    })
}

/// Splits `s` at the next `"`; the content must be pure base64url (so it is a JSON string
/// without escapes, exactly what the strict path would borrow).
fn take_b64url(s: &[u8]) -> Option<(&str, &[u8])> {
    let n = memchr::memchr(b'"', s)?;
    let (content, rest) = s.split_at_checked(n)?;
    if !all_b64url(content) {
        return None;
    }
    Some((std::str::from_utf8(content).ok()?, rest))
}

/// Fast path for the canonical form (what our sealer and `JSON.stringify` emit):
/// `{"event":"encrypted","data":{"seq":<digits>,"iv":"<b64url>","ct":"<b64url>"}}` with no
/// whitespace. It only accepts frames that the strict serde path accepts with the same result;
/// `None` means "use the strict path".
fn parse_canonical(frame: &[u8]) -> Option<Parsed<'_>> {
    let rest = frame.strip_prefix(ENV_PREFIX)?;
    let n = rest.iter().position(|b| !b.is_ascii_digit())?;
    let (digits, rest) = rest.split_at_checked(n)?;
    let seq = parse_seq(std::str::from_utf8(digits).ok()?)?;
    let rest = rest.strip_prefix(ENV_IV)?;
    let (iv, rest) = take_b64url(rest)?;
    let rest = rest.strip_prefix(ENV_CT)?;
    let (ct, rest) = take_b64url(rest)?;
    if rest == ENV_SUFFIX {
        return Some((seq, iv, ct, Shared::None));
    }
    if let Some(mut rest) = rest.strip_prefix(ENV_BODIES) {
        let mut bodies = Vec::new();
        loop {
            let (body, after) = take_b64url(rest)?;
            bodies.push(body);
            if after == br#""]}}"# {
                return Some((seq, iv, ct, Shared::Bodies(bodies)));
            }
            rest = after.strip_prefix(br#"",""#)?;
        }
    }
    let rest = rest.strip_prefix(ENV_BODY)?;
    let (body, rest) = take_b64url(rest)?;
    if rest != ENV_SUFFIX {
        return None;
    }
    Some((seq, iv, ct, Shared::Body(body)))
}

/// The strictly parsed envelope: `(seq, iv, ct)`.
fn parse_envelope(frame: &[u8]) -> Result<Parsed<'_>, OpenError> {
    if let Some(parsed) = parse_canonical(frame) {
        return Ok(parsed);
    }
    parse_envelope_strict(frame)
}

/// The general strict parser (any key order, JSON whitespace).
fn parse_envelope_strict(frame: &[u8]) -> Result<Parsed<'_>, OpenError> {
    let strict = || -> Option<(Option<u64>, &str, &str, Option<Shared<'_>>)> {
        if !starts_with_object(frame) {
            return None;
        }
        let env: WireEnvelope<'_> = serde_json::from_slice(frame).ok()?;
        if env.event != "encrypted" || !starts_with_object(env.data.get().as_bytes()) {
            return None;
        }
        let data: WireData<'_> = serde_json::from_str(env.data.get()).ok()?;
        let shared = match (data.body, data.bodies) {
            (None, None) => Some(Shared::None),
            (Some(body), None) => Some(Shared::Body(body)),
            (None, Some(bodies)) => Some(Shared::Bodies(bodies)),
            // Never both (§11.4).
            (Some(_), Some(_)) => None,
        };
        Some((parse_seq(data.seq.get()), data.iv, data.ct, shared))
    };
    match strict() {
        Some((Some(seq), iv, ct, Some(shared))) => Ok((seq, iv, ct, shared)),
        Some(_) => Err(OpenError::MalformedEnvelope),
        None => Err(classify_failure(frame)),
    }
}

/// Slow path, only on failure: an object whose one `event` is `"encrypted"` is a malformed envelope
/// (4005); anything else is not an envelope at all (4004). The rest of the frame is read lexically: a
/// broken `data` (a lone surrogate escape in a key, a `seq` out of `f64` range) still makes a malformed
/// `encrypted` envelope (found by the `record_open` fuzz target).
fn classify_failure(frame: &[u8]) -> OpenError {
    let encrypted = starts_with_object(frame)
        && serde_json::from_slice::<InnerProbe<'_>>(frame).is_ok_and(|p| p.event == "encrypted");
    if encrypted {
        OpenError::MalformedEnvelope
    } else {
        OpenError::NotEncrypted
    }
}

/// What the inner message was.
enum Inner {
    Application,
    KeyUpdate,
    RoomKey,
}

fn check_inner(pt: &[u8]) -> Result<Inner, OpenError> {
    if pt.is_empty() || !starts_with_object(pt) {
        return Err(OpenError::InvalidInner);
    }
    let s = std::str::from_utf8(pt).map_err(|_| OpenError::InvalidInner)?;
    let probe: InnerProbe<'_> = serde_json::from_str(s).map_err(|_| OpenError::InvalidInner)?;
    let event = probe.event.as_ref();
    if event == KEY_UPDATE_EVENT {
        Ok(Inner::KeyUpdate)
    } else if event == ROOM_KEY_EVENT {
        Ok(Inner::RoomKey)
    } else if RESERVED_INNER.contains(&event) {
        Err(OpenError::ReservedInnerEvent)
    } else {
        Ok(Inner::Application)
    }
}

/// Opens inbound records of one direction, enforcing order, limits and the inner schema.
pub struct RecordOpener {
    direction: Direction,
    th: [u8; TH_LEN],
    epoch: u32,
    expected: u64,
    keys: EpochKeys,
    limit: u64,
    poisoned: bool,
    /// Group records (§11) accepted: the room keys received. `None` unless enabled.
    rooms: Option<Box<RoomKeyRing>>,
    /// Batched group records (§11.4) accepted (by [`Self::open_all`]).
    batches: bool,
    /// Binary batched group records (§11.5) accepted (by [`Self::open_binary`]).
    binary: bool,
}

/// What one record held.
enum Opened {
    /// A control record, consumed.
    Consumed,
    /// One application message.
    One(Vec<u8>),
    /// A batched group record's messages, in order.
    Many(Vec<Vec<u8>>),
}

/// The `data` of a `room_key` inner message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomKeyMessage<'a> {
    #[serde(borrow)]
    #[allow(dead_code, reason = "checked by the schema only")]
    event: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

impl RecordOpener {
    /// An opener for `direction` at epoch 0 expecting `first_seq` (0 for c2s, 1 for s2c).
    /// Normally obtained from the handshake.
    pub fn new(direction: Direction, ts0: TrafficSecret, th: [u8; TH_LEN], first_seq: u64) -> Self {
        Self {
            direction,
            th,
            epoch: 0,
            expected: first_seq,
            keys: EpochKeys::new(ts0),
            limit: MAX_RECORDS_PER_EPOCH,
            poisoned: false,
            rooms: None,
            batches: false,
            binary: false,
        }
    }

    /// Accepts group records and `room_key` records (§11) from now on: the client advertised `roomKeys` and the
    /// server answered it. `room_key` records are then consumed ([`Self::open`] returns `Ok(None)`).
    pub fn enable_room_keys(&mut self) {
        self.rooms.get_or_insert_with(Box::default);
    }

    /// Accepts batched group records (§11.4) too, through [`Self::open_all`]: the client advertised
    /// `"roomKeys": 2` and the server answered it. Implies [`Self::enable_room_keys`].
    pub fn enable_room_key_batches(&mut self) {
        self.enable_room_keys();
        self.batches = true;
    }

    /// Accepts binary batched group records (§11.5) too, through [`Self::open_binary`]: the client advertised
    /// `"roomKeys": 3` and the server answered it. Implies [`Self::enable_room_key_batches`].
    pub fn enable_room_key_binary(&mut self) {
        self.enable_room_key_batches();
        self.binary = true;
    }

    /// Opens one whole inbound binary frame: a binary batched group record (§11.5). Returns its messages, in
    /// order (all or nothing). On a session without §11.5, or on any failure, the opener stays failed and the
    /// connection must be closed with [`OpenError::close_code`] (4005, or 4006 for a spent epoch).
    pub fn open_binary(&mut self, frame: &[u8]) -> Result<Vec<Vec<u8>>, OpenError> {
        if self.poisoned {
            return Err(OpenError::Poisoned);
        }
        let r = self.open_binary_inner(frame);
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    fn open_binary_inner(&mut self, frame: &[u8]) -> Result<Vec<Vec<u8>>, OpenError> {
        if !self.binary {
            return Err(OpenError::MalformedEnvelope);
        }
        // 1. exact length accounting
        let (&kind, rest) = frame.split_first().ok_or(OpenError::MalformedEnvelope)?;
        if kind != BINARY_BATCH {
            return Err(OpenError::MalformedEnvelope);
        }
        let (seq, rest) = rest.split_first_chunk::<8>().ok_or(OpenError::MalformedEnvelope)?;
        let (k, rest) = rest.split_first_chunk::<2>().ok_or(OpenError::MalformedEnvelope)?;
        let seq = u64::from_be_bytes(*seq);
        let k = usize::from(u16::from_be_bytes(*k));
        if !(1..=MAX_BATCH_BODIES).contains(&k) {
            return Err(OpenError::MalformedEnvelope);
        }
        let hdr_len = k * group::HEADER_LEN + TAG_LEN;
        let (hdr, mut rest) = rest.split_at_checked(hdr_len).ok_or(OpenError::MalformedEnvelope)?;
        let mut bodies = Vec::with_capacity(k);
        for _ in 0..k {
            let (len, after) = rest.split_first_chunk::<4>().ok_or(OpenError::MalformedEnvelope)?;
            let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| OpenError::MalformedEnvelope)?;
            if len < 8 + TAG_LEN {
                return Err(OpenError::MalformedEnvelope);
            }
            let (body, after) = after.split_at_checked(len).ok_or(OpenError::MalformedEnvelope)?;
            bodies.push(body);
            rest = after;
        }
        if !rest.is_empty() {
            return Err(OpenError::MalformedEnvelope);
        }
        // 2. seq == expected (a seq at or past the epoch limit is 4006)
        if seq >= self.limit {
            return Err(OpenError::KeyExhausted);
        }
        if seq != self.expected {
            return Err(OpenError::UnexpectedSeq);
        }
        // 3./4. the header under this seq's nonce and the header AAD
        let nonce = nonce(&self.keys.iv, seq);
        let aad = header_aad(self.direction, &self.th, self.epoch, seq);
        let (ct, tag) = hdr
            .split_at_checked(hdr_len - TAG_LEN)
            .ok_or(OpenError::CiphertextTooShort)?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| OpenError::CiphertextTooShort)?;
        let mut pt = ct.to_vec();
        self.keys
            .aead()
            .open_in_place(&nonce, &aad, &mut pt, &tag)
            .map_err(|_| OpenError::AuthFailed)?;
        // 5. every body, in order, before any is returned
        let headers = group::parse_batch_header(&pt, k).ok_or(OpenError::InvalidInner)?;
        let mut all = Vec::with_capacity(k);
        for ((epoch, digest), body) in headers.iter().zip(bodies) {
            all.push(self.open_shared_raw(*epoch, digest, body)?);
        }
        // 7. one record
        if seq.saturating_add(1) >= self.limit {
            return Err(OpenError::KeyExhausted);
        }
        self.expected = seq + 1;
        Ok(all)
    }

    /// The latest key received for `room`, if any (group records enabled).
    pub fn room_key(&self, room: &str) -> Option<&RoomKey> {
        self.rooms.as_ref()?.by_room(room)
    }

    /// Lowers the per-epoch record limit (`2..=2^20`, above the expected seq); for tests.
    pub fn set_epoch_limit(&mut self, limit: u64) -> Result<(), InvalidEpochLimit> {
        check_limit(limit, self.expected)?;
        self.limit = limit;
        Ok(())
    }

    /// Current receive epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The seq the next record must carry.
    pub fn expected_seq(&self) -> u64 {
        self.expected
    }

    /// Frees the expanded AES-GCM schedule, as [`RecordSealer::release_idle_memory`] does.
    pub fn release_idle_memory(&mut self) {
        self.keys.release_schedule();
    }

    /// Opens one whole inbound text frame. Returns `Ok(Some(inner))` with the inner JSON message
    /// (padding stripped, validated as a JSON object with a string, non-reserved `event`), or
    /// `Ok(None)` when the record was a `key_update` (consumed: the receive keys switched).
    /// After any error the opener stays failed and the connection must be closed with
    /// [`OpenError::close_code`].
    ///
    /// A batched group record (§11.4) carries several messages, so this refuses it as a malformed envelope; a
    /// session that enabled batches opens its frames with [`Self::open_all`].
    pub fn open(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, OpenError> {
        match self.open_checked(frame, false)? {
            Opened::Consumed => Ok(None),
            Opened::One(inner) => Ok(Some(inner)),
            Opened::Many(_) => {
                self.poisoned = true;
                Err(OpenError::MalformedEnvelope)
            }
        }
    }

    /// [`Self::open`] for sessions that may receive batched group records (§11.4): every inner message the frame
    /// carries, in order — none for a control record, one for an ordinary or group record, several for a batch.
    /// A batch is all or nothing: if any of its bodies fails, none is returned and the session must close.
    pub fn open_all(&mut self, frame: &[u8]) -> Result<Vec<Vec<u8>>, OpenError> {
        let batches = self.batches;
        Ok(match self.open_checked(frame, batches)? {
            Opened::Consumed => Vec::new(),
            Opened::One(inner) => vec![inner],
            Opened::Many(all) => all,
        })
    }

    fn open_checked(&mut self, frame: &[u8], batches: bool) -> Result<Opened, OpenError> {
        if self.poisoned {
            return Err(OpenError::Poisoned);
        }
        let r = self.open_inner(frame, batches);
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    /// Verifies `confirm` (empty plaintext at the expected seq, normally s2c epoch 0 seq 0) and
    /// advances to the next seq.
    pub(crate) fn verify_confirm(&mut self, tag: &[u8; TAG_LEN]) -> Result<(), OpenError> {
        let nonce = nonce(&self.keys.iv, self.expected);
        let aad = aad(self.direction, &self.th, self.epoch, self.expected);
        if let Err(e) = self.keys.aead().open_in_place(&nonce, &aad, &mut [], tag) {
            let _ = e;
            self.poisoned = true;
            return Err(OpenError::AuthFailed);
        }
        self.expected += 1;
        Ok(())
    }

    fn open_inner(&mut self, frame: &[u8], batches: bool) -> Result<Opened, OpenError> {
        // 1. exact schema
        let (seq, iv_b64, ct_b64, shared) = parse_envelope(frame)?;
        match &shared {
            Shared::None => {}
            Shared::Body(_) if self.rooms.is_some() => {}
            Shared::Bodies(bodies) if batches && (1..=MAX_BATCH_BODIES).contains(&bodies.len()) => {}
            _ => return Err(OpenError::MalformedEnvelope),
        }
        // 2. seq == expected (a seq at or past the epoch limit is 4006)
        if seq >= self.limit {
            return Err(OpenError::KeyExhausted);
        }
        if seq != self.expected {
            return Err(OpenError::UnexpectedSeq);
        }
        // 3. iv == nonce, strict base64url, len(ct) >= 16
        let iv: [u8; NONCE_LEN] = b64::decode_array(iv_b64).map_err(|_| OpenError::BadEncoding)?;
        let nonce = nonce(&self.keys.iv, seq);
        if iv != nonce {
            return Err(OpenError::NonceMismatch);
        }
        let mut buf = b64::decode(ct_b64).map_err(|_| OpenError::BadEncoding)?;
        let body_len = buf.len().checked_sub(TAG_LEN).ok_or(OpenError::CiphertextTooShort)?;
        // 4. AEAD open
        let (body, tag) = buf
            .split_at_mut_checked(body_len)
            .ok_or(OpenError::CiphertextTooShort)?;
        let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| OpenError::CiphertextTooShort)?;
        let aad = match shared {
            Shared::None => aad(self.direction, &self.th, self.epoch, seq),
            Shared::Body(_) | Shared::Bodies(_) => header_aad(self.direction, &self.th, self.epoch, seq),
        };
        self.keys
            .aead()
            .open_in_place(&nonce, &aad, body, &tag)
            .map_err(|_| OpenError::AuthFailed)?;
        let opened = match shared {
            Shared::None => None,
            Shared::Body(shared) => {
                // §11.3: the header names the room key and the shared body's digest.
                let (epoch, digest) = group::parse_header(body).ok_or(OpenError::InvalidInner)?;
                Some(Opened::One(self.open_shared(epoch, &digest, shared)?))
            }
            Shared::Bodies(bodies) => {
                // §11.4: one (epoch, digest) per body, in order; every body checked before any is returned.
                let headers = group::parse_batch_header(body, bodies.len()).ok_or(OpenError::InvalidInner)?;
                let mut all = Vec::with_capacity(bodies.len());
                for ((epoch, digest), shared) in headers.iter().zip(bodies) {
                    all.push(self.open_shared(*epoch, digest, shared)?);
                }
                Some(Opened::Many(all))
            }
        };
        if let Some(opened) = opened {
            if seq.saturating_add(1) >= self.limit {
                return Err(OpenError::KeyExhausted);
            }
            self.expected = seq + 1;
            return Ok(opened);
        }
        // 5. strip padding, validate the inner message
        let end = body.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        buf.truncate(end);
        let mut kind = check_inner(&buf)?;
        if matches!(kind, Inner::RoomKey) {
            if let Some(rooms) = self.rooms.as_mut() {
                let text = std::str::from_utf8(&buf).map_err(|_| OpenError::InvalidInner)?;
                let message: RoomKeyMessage<'_> = serde_json::from_str(text).map_err(|_| OpenError::InvalidInner)?;
                rooms.insert(RoomKey::from_delivery(message.data.get())?);
                buf.zeroize();
            } else {
                // Without group records it is an ordinary (reserved) event name: the application decides.
                kind = Inner::Application;
            }
        }
        // 6. advance
        match kind {
            Inner::KeyUpdate => {
                let next_epoch = self.epoch.checked_add(1).ok_or(OpenError::KeyExhausted)?;
                self.keys.ratchet();
                self.epoch = next_epoch;
                self.expected = 0;
                Ok(Opened::Consumed)
            }
            Inner::Application | Inner::RoomKey => {
                // The last slot of an epoch is reserved for key_update.
                if seq.saturating_add(1) >= self.limit {
                    return Err(OpenError::KeyExhausted);
                }
                self.expected = seq + 1;
                Ok(match kind {
                    Inner::Application => Opened::One(buf),
                    _ => Opened::Consumed,
                })
            }
        }
    }

    /// §11.3 steps 5–7 for one shared body named by a header: the key of `epoch` is held, `digest` matches the
    /// body, the body opens, and its message is an application message.
    fn open_shared(&self, epoch: u64, digest: &[u8; 32], shared: &str) -> Result<Vec<u8>, OpenError> {
        if self.rooms.as_ref().and_then(|rooms| rooms.by_epoch(epoch)).is_none() {
            return Err(OpenError::AuthFailed);
        }
        let shared = b64::decode(shared).map_err(|_| OpenError::BadEncoding)?;
        self.open_shared_raw(epoch, digest, &shared)
    }

    /// [`Self::open_shared`] on the raw body bytes.
    fn open_shared_raw(&self, epoch: u64, digest: &[u8; 32], shared: &[u8]) -> Result<Vec<u8>, OpenError> {
        let key = self
            .rooms
            .as_ref()
            .and_then(|rooms| rooms.by_epoch(epoch))
            .ok_or(OpenError::AuthFailed)?;
        if key.digest(shared) != *digest {
            return Err(OpenError::AuthFailed);
        }
        let inner = key.open_body(shared)?;
        if !matches!(check_inner(&inner)?, Inner::Application) {
            return Err(OpenError::ReservedInnerEvent);
        }
        Ok(inner)
    }
}

impl fmt::Debug for RecordOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordOpener")
            .field("direction", &self.direction)
            .field("epoch", &self.epoch)
            .field("expected_seq", &self.expected)
            .field("keys", &"[redacted]")
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_literal_forms() {
        assert_eq!(parse_seq("0"), Some(0));
        assert_eq!(parse_seq("1"), Some(1));
        assert_eq!(parse_seq("9007199254740991"), Some(MAX_WIRE_SEQ));
        for bad in [
            "9007199254740992",
            "1.0",
            "1e0",
            "\"1\"",
            "-1",
            "-0",
            "01",
            "",
            "+1",
            "1 ",
            "99999999999999999999",
        ] {
            assert_eq!(parse_seq(bad), None, "{bad}");
        }
    }

    #[test]
    fn canonical_fast_path_agrees_with_strict_path() {
        let mut sealer = RecordSealer::new(Direction::C2s, TrafficSecret::from_bytes(&[1; 32]), [2; 32], 0);
        let mut out = Vec::new();
        for len in [1usize, 2, 3, 100] {
            let m = format!(r#"{{"event":"x","data":"{}"}}"#, "y".repeat(len));
            sealer.seal(m.as_bytes(), &mut out).unwrap();
        }
        let mut frames: Vec<Vec<u8>> = out.iter().map(|b| b.to_vec()).collect();
        let f = frames[0].clone();
        let s = String::from_utf8(f.clone()).unwrap();
        for (from, to) in [
            ("\"seq\":0", "\"seq\":9007199254740991"),
            ("\"seq\":0", "\"seq\":9007199254740992"),
            ("\"seq\":0", "\"seq\":01"),
            ("\"seq\":0", "\"seq\":"),
            ("\"seq\":0", "\"seq\":0.0"),
            ("\"iv\":\"", "\"iv\":\"+"),
            ("\"iv\":\"", "\"iv\":\"\\u0041"),
            ("\"ct\":\"", "\"ct\":\"="),
            ("\"ct\":\"", "\"ct\":\"\u{1}"),
            ("}}", "} }"),
            ("}}", "}},"),
            ("}}", "}}}"),
            ("{\"event", "{ \"event"),
        ] {
            frames.push(s.replacen(from, to, 1).into_bytes());
        }
        let mut with_space = f.clone();
        with_space.push(b' ');
        frames.push(with_space);
        let mut fast_hits = 0;
        for fr in &frames {
            if let Some(fast) = parse_canonical(fr) {
                fast_hits += 1;
                assert_eq!(Ok(fast), parse_envelope_strict(fr), "{}", String::from_utf8_lossy(fr));
            }
            // the public entry point always agrees with the strict parser
            assert_eq!(parse_envelope(fr), parse_envelope_strict(fr));
        }
        assert!(fast_hits >= 5);
    }

    /// Mutated frames: the fast path never disagrees with the strict parser, nothing panics.
    #[test]
    fn mutated_frames_fast_path_equivalence() {
        let mut sealer = RecordSealer::new(Direction::C2s, TrafficSecret::from_bytes(&[1; 32]), [2; 32], 0);
        let mut out = Vec::new();
        sealer.seal(br#"{"event":"x","data":1}"#, &mut out).unwrap();
        let base = out[0].to_vec();
        let alphabet = b"{}[]\":,0123456789-_+/=. eAzZ\\u\x00\xff";
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut rnd = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for _ in 0..20_000 {
            let mut f = base.clone();
            for _ in 0..1 + rnd(3) {
                let i = rnd(f.len() + 1);
                match rnd(5) {
                    0 if i < f.len() => f[i] = alphabet[rnd(alphabet.len())],
                    1 => f.insert(i, alphabet[rnd(alphabet.len())]),
                    2 if i < f.len() => {
                        f.remove(i);
                    }
                    3 => f.truncate(i),
                    _ if i < f.len() => f[i] ^= 1 << rnd(8),
                    _ => {}
                }
            }
            let a = parse_envelope(&f);
            let b = parse_envelope_strict(&f);
            assert_eq!(a, b, "{}", String::from_utf8_lossy(&f));
        }
    }

    #[test]
    fn epoch_wrap_is_key_exhausted() {
        let ts = || TrafficSecret::from_bytes(&[9; 32]);
        let mut s = RecordSealer::new(Direction::S2c, ts(), [8; 32], 0);
        s.epoch = u32::MAX;
        let mut out = Vec::new();
        assert_eq!(s.request_key_update(&mut out), Err(SealError::KeyExhausted));
        assert!(out.is_empty(), "no key_update record may be emitted");
        s.set_epoch_limit(2).unwrap();
        // seq 0 is fine; seq 1 is the last slot and needs a key_update that cannot happen
        s.seal(b"{}", &mut out).unwrap();
        out.clear();
        assert_eq!(s.seal(b"{}", &mut out), Err(SealError::KeyExhausted));
        assert!(out.is_empty());
        assert_eq!(s.next_seq(), 1);
        s.seq = 0;
        // a key_update received in the last epoch closes 4006
        let mut records: Vec<BytesMut> = Vec::new();
        s.seal_record(KEY_UPDATE_MESSAGE, None, &mut records).unwrap();
        let mut o = RecordOpener::new(Direction::S2c, ts(), [8; 32], 0);
        o.epoch = u32::MAX;
        let e = o.open(&records[0]).unwrap_err();
        assert_eq!(e, OpenError::KeyExhausted);
        assert_eq!(e.close_code(), 4006);
    }

    #[test]
    fn released_idle_memory_is_rebuilt_from_the_same_key() {
        let ts = || TrafficSecret::from_bytes(&[7; 32]);
        let mut released = RecordSealer::new(Direction::S2c, ts(), [6; 32], 1);
        let mut kept = RecordSealer::new(Direction::S2c, ts(), [6; 32], 1);
        let mut o = RecordOpener::new(Direction::S2c, ts(), [6; 32], 1);
        for i in 0..3 {
            let inner = format!(r#"{{"event":"m","data":{i}}}"#);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            released.seal(inner.as_bytes(), &mut a).unwrap();
            kept.seal(inner.as_bytes(), &mut b).unwrap();
            assert_eq!(a, b, "record {i}");
            released.release_idle_memory();
            assert!(released.keys.aead.is_none());
            assert_eq!(released.scratch.capacity(), 0);
            assert_eq!(o.open(&a[0]).unwrap().as_deref(), Some(inner.as_bytes()));
            o.release_idle_memory();
            assert!(o.keys.aead.is_none());
        }
    }

    #[test]
    fn aad_layout() {
        let th = [0x11u8; 32];
        let a = aad(Direction::S2c, &th, 0x01020304, 0x0506070809);
        assert_eq!(&a[..11], b"wsenc/1 rec");
        assert_eq!(a[11], 2);
        assert_eq!(&a[12..44], &th);
        assert_eq!(&a[44..48], &[1, 2, 3, 4]);
        assert_eq!(&a[48..56], &[0, 0, 0, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn nonce_xor() {
        let iv = [0xffu8; 12];
        let n = nonce(&iv, 1);
        assert_eq!(n[..11], [0xff; 11]);
        assert_eq!(n[11], 0xfe);
        assert_eq!(nonce(&iv, 0), iv);
        assert_eq!(nonce(&[0; 12], u64::MAX)[..4], [0; 4]);
    }

    #[test]
    fn envelope_written_directly_parses_strictly() {
        let mut s = RecordSealer::new(Direction::C2s, TrafficSecret::from_bytes(&[1; 32]), [2; 32], 0);
        let mut out = Vec::new();
        s.seal(br#"{"event":"x","data":1}"#, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out[0]).unwrap();
        assert_eq!(v["event"], "encrypted");
        assert_eq!(v["data"]["seq"], 0);
        assert!(parse_envelope(&out[0]).is_ok());
    }
}

#[cfg(test)]
mod group_tests {
    use super::*;
    use zeroize::Zeroizing;

    fn pair(limit: u64) -> (RecordSealer, RecordOpener) {
        let ts = || TrafficSecret::from_bytes(&[5; 32]);
        let mut s = RecordSealer::new(Direction::S2c, ts(), [4; 32], 1);
        let mut o = RecordOpener::new(Direction::S2c, ts(), [4; 32], 1);
        s.set_epoch_limit(limit).unwrap();
        o.set_epoch_limit(limit).unwrap();
        s.enable_room_keys();
        o.enable_room_keys();
        (s, o)
    }

    fn room_key(room: &str, epoch: u64, byte: u8) -> RoomKey {
        RoomKey::new(room.into(), epoch, Zeroizing::new([byte; 32])).unwrap()
    }

    const MSG: &[u8] = br#"{"event":"m","data":{"text":"hi"}}"#;

    #[test]
    fn a_group_record_opens_after_its_key_was_delivered_once() {
        let (mut s, mut o) = pair(MAX_RECORDS_PER_EPOCH);
        let key = room_key("lobby", 3, 1);
        let mut out = Vec::new();
        for counter in 0..3 {
            let body = key.seal_body(counter, MSG, None).unwrap();
            s.seal_group(&key, &body, &mut out).unwrap();
        }
        assert_eq!(out.len(), 4, "one room_key record, then three group records");
        assert_eq!(o.open(&out[0]).unwrap(), None, "the room_key record is consumed");
        assert_eq!(o.room_key("lobby").unwrap().key_bytes(), key.key_bytes());
        for f in &out[1..] {
            assert!(f.ends_with(b"\"}}") && memchr::memmem::find(f, b"\"body\":\"").is_some());
            assert_eq!(o.open(f).unwrap().as_deref(), Some(MSG));
        }
    }

    #[test]
    fn an_opener_without_room_keys_refuses_group_records() {
        let (mut s, _) = pair(MAX_RECORDS_PER_EPOCH);
        let mut o = RecordOpener::new(Direction::S2c, TrafficSecret::from_bytes(&[5; 32]), [4; 32], 1);
        let key = room_key("r", 1, 1);
        let mut out = Vec::new();
        s.seal_group(&key, &key.seal_body(0, MSG, None).unwrap(), &mut out)
            .unwrap();
        // Without the extension a room_key record is an ordinary message for the application.
        assert!(o.open(&out[0]).unwrap().is_some());
        assert_eq!(o.open(&out[1]), Err(OpenError::MalformedEnvelope));
    }

    /// Splices a body from another room or epoch into a recipient's record: the digest check refuses it.
    #[test]
    fn a_body_swapped_into_another_record_is_refused() {
        let (mut s, mut o) = pair(MAX_RECORDS_PER_EPOCH);
        let (a, b) = (room_key("a", 1, 1), room_key("b", 2, 2));
        let mut out = Vec::new();
        s.seal_group(&a, &a.seal_body(0, MSG, None).unwrap(), &mut out).unwrap();
        s.seal_group(&b, &b.seal_body(0, MSG, None).unwrap(), &mut out).unwrap();
        let other = b.seal_body(1, MSG, None).unwrap();
        s.seal_group(&b, &other, &mut out).unwrap();
        // out: key a, rec a, key b, rec b, rec b'
        for f in &out[..4] {
            o.open(f).unwrap();
        }
        let text = String::from_utf8(out[4].to_vec()).unwrap();
        let original = std::str::from_utf8(other.body_b64u()).unwrap();
        let sealed_a = String::from_utf8(out[1].to_vec()).unwrap();
        let body_a = sealed_a.rsplit_once("\"body\":\"").unwrap().1.trim_end_matches("\"}}");
        let forged = text.replace(original, body_a);
        assert_eq!(o.open(forged.as_bytes()), Err(OpenError::AuthFailed));
    }

    #[test]
    fn group_records_count_towards_the_epoch_limit_and_key_updates_still_happen() {
        let (mut s, mut o) = pair(4);
        let key = room_key("r", 1, 1);
        let mut out = Vec::new();
        for counter in 0..6 {
            s.seal_group(&key, &key.seal_body(counter, MSG, None).unwrap(), &mut out)
                .unwrap();
        }
        let opened: Vec<_> = out.iter().map(|f| o.open(f).unwrap()).collect();
        assert_eq!(opened.iter().filter(|m| m.is_some()).count(), 6);
        assert!(o.epoch() >= 2, "key updates interleave with group records");
        assert_eq!(s.epoch(), o.epoch());
    }

    fn batch_pair() -> (RecordSealer, RecordOpener) {
        let (mut s, mut o) = pair(MAX_RECORDS_PER_EPOCH);
        s.enable_room_key_batches();
        o.enable_room_key_batches();
        (s, o)
    }

    #[test]
    fn a_batch_of_two_rooms_opens_every_body_in_order() {
        let (mut s, mut o) = batch_pair();
        let (a, b) = (room_key("a", 1, 1), room_key("b", 2, 2));
        let msgs: [&[u8]; 3] = [
            br#"{"event":"m","data":1}"#,
            br#"{"event":"m","data":2}"#,
            br#"{"event":"m","data":3}"#,
        ];
        let bodies = [
            a.seal_body(0, msgs[0], None).unwrap(),
            b.seal_body(0, msgs[1], None).unwrap(),
            a.seal_body(1, msgs[2], None).unwrap(),
        ];
        let items = [(&a, &bodies[0]), (&b, &bodies[1]), (&a, &bodies[2])];
        let mut out = Vec::new();
        s.seal_group_batch(&items, &mut out).unwrap();
        assert_eq!(out.len(), 3, "two room_key records, then one batched record");
        let mut opened = Vec::new();
        for f in &out {
            opened.extend(o.open_all(f).unwrap());
        }
        assert_eq!(opened, msgs.map(<[u8]>::to_vec));
        let v: serde_json::Value = serde_json::from_slice(&out[2]).unwrap();
        assert_eq!(v["data"]["bodies"].as_array().unwrap().len(), 3);
        assert_eq!(s.next_seq(), o.expected_seq(), "one record, one seq");
    }

    /// A batch-capable opener and what its sealer wrote: the `room_key` record, then a batch of two bodies.
    fn two_body_batch() -> (RecordOpener, Vec<Bytes>) {
        let (mut s, o) = batch_pair();
        let key = room_key("r", 1, 1);
        let bodies = [
            key.seal_body(0, MSG, None).unwrap(),
            key.seal_body(1, MSG, None).unwrap(),
        ];
        let mut out = Vec::new();
        s.seal_group_batch(&[(&key, &bodies[0]), (&key, &bodies[1])], &mut out)
            .unwrap();
        (o, out)
    }

    #[test]
    fn open_refuses_a_batch_that_only_open_all_takes() {
        let (mut o, out) = two_body_batch();
        assert_eq!(o.open(&out[0]).unwrap(), None);
        assert_eq!(o.open(&out[1]), Err(OpenError::MalformedEnvelope));
    }

    #[test]
    fn a_batch_on_a_session_without_batches_is_refused() {
        let (mut s, _) = batch_pair();
        let (_, mut o) = pair(MAX_RECORDS_PER_EPOCH);
        let key = room_key("r", 1, 1);
        let body = key.seal_body(0, MSG, None).unwrap();
        let mut out = Vec::new();
        s.seal_group_batch(&[(&key, &body)], &mut out).unwrap();
        o.open_all(&out[0]).unwrap();
        assert_eq!(o.open_all(&out[1]), Err(OpenError::MalformedEnvelope));
    }

    #[test]
    fn a_batch_with_bodies_reordered_is_refused() {
        let (mut o, out) = two_body_batch();
        o.open_all(&out[0]).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&out[1]).unwrap();
        v["data"]["bodies"].as_array_mut().unwrap().swap(0, 1);
        assert_eq!(o.open_all(v.to_string().as_bytes()), Err(OpenError::AuthFailed));
    }

    #[test]
    fn a_record_whose_key_was_never_delivered_is_refused() {
        let (mut s, mut o) = pair(MAX_RECORDS_PER_EPOCH);
        let key = room_key("r", 1, 1);
        let mut out = Vec::new();
        s.seal_group(&key, &key.seal_body(0, MSG, None).unwrap(), &mut out)
            .unwrap();
        let mut o2 = RecordOpener::new(Direction::S2c, TrafficSecret::from_bytes(&[5; 32]), [4; 32], 2);
        o2.enable_room_keys();
        assert_eq!(o2.open(&out[1]), Err(OpenError::AuthFailed), "unknown epoch");
        assert!(o.open(&out[0]).is_ok());
    }
}
