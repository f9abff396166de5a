//! Room keys and group records (wsenc/1 §11): a room message sealed once under the room's key, shared by every
//! recipient's frame, with a small per-recipient header sealed under that recipient's session keys.
//!
//! Pure code: the caller supplies the room key's random bytes and the body counter. The per-recipient halves
//! (the `room_key` delivery record and the header record) are [`RecordSealer`](super::RecordSealer) methods,
//! because they use the session's sequence numbers; the opener side is
//! [`RecordOpener::enable_room_keys`](super::RecordOpener::enable_room_keys).

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use super::b64;
use super::backend::{sha256, AeadKey, KEY_LEN, NONCE_LEN, TAG_LEN};
use super::record::{padded_len, ENV_SUFFIX, MAX_WIRE_SEQ};
use super::{OpenError, SealError, MAX_RECORDS_PER_EPOCH};

/// Length of a room key.
pub const ROOM_KEY_LEN: usize = KEY_LEN;
/// Plaintext of a group record's header: `u64be(epoch) ‖ digest`.
pub const HEADER_LEN: usize = 8 + 32;
/// Bodies one room key may seal; the server rotates the key before reaching it.
pub const MAX_BODIES_PER_KEY: u64 = MAX_RECORDS_PER_EPOCH;
/// Rooms whose latest key a receiver keeps (the least recently keyed room is forgotten first). A server re-sends
/// a key whenever it is not sure the client still holds it, and it remembers fewer rooms than this
/// ([`MAX_KEYS_SENT`]), so a conforming server never names a forgotten key.
pub const MAX_ROOM_KEYS: usize = 4096;
/// Rooms whose delivered key a sealer remembers before it forgets them all (and re-sends keys as needed).
pub const MAX_KEYS_SENT: usize = 1024;
/// The inner event that carries a room key inside an ordinary record.
pub const ROOM_KEY_EVENT: &str = "room_key";
/// Most bodies one batched group record (§11.4) may carry; a receiver refuses more.
pub const MAX_BATCH_BODIES: usize = 256;

const BODY_LABEL: &[u8; 11] = b"wsenc/1 grp";
const DIGEST_LABEL: &[u8; 11] = b"wsenc/1 dig";
/// Counter bytes in front of the body's ciphertext.
const COUNTER_LEN: usize = 8;

/// A room name or epoch that cannot be keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("room key: epoch above 2^53-1 or room name empty or longer than 65535 bytes")]
pub struct InvalidRoomKey;

/// One room's key for one epoch. The key bytes and their AES-GCM schedule are erased when it is dropped;
/// `Debug` is redacted.
pub struct RoomKey {
    room: Arc<str>,
    epoch: u64,
    key: Zeroizing<[u8; ROOM_KEY_LEN]>,
    aead: AeadKey,
    /// The `room_key` record's inner message, made once: every member's delivery seals the same text.
    delivery: Zeroizing<Vec<u8>>,
}

impl RoomKey {
    /// A key for `room` at `epoch` from 32 bytes the caller drew from a CSPRNG.
    pub fn new(room: Arc<str>, epoch: u64, key: Zeroizing<[u8; ROOM_KEY_LEN]>) -> Result<Self, InvalidRoomKey> {
        if epoch > MAX_WIRE_SEQ || room.is_empty() || room.len() > usize::from(u16::MAX) {
            return Err(InvalidRoomKey);
        }
        let aead = AeadKey::new(&key);
        let delivery = delivery_message(&room, epoch, &key);
        Ok(Self {
            room,
            epoch,
            key,
            aead,
            delivery,
        })
    }

    /// The room this key belongs to.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The key's epoch (unique per server instance across all rooms).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The key bytes (for tests that play an ex-member holding an old key).
    pub fn key_bytes(&self) -> &[u8; ROOM_KEY_LEN] {
        &self.key
    }

    /// `"wsenc/1 grp" ‖ u64be(epoch) ‖ LP(room)`.
    fn body_aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(BODY_LABEL.len() + 8 + 2 + self.room.len());
        aad.extend_from_slice(BODY_LABEL);
        aad.extend_from_slice(&self.epoch.to_be_bytes());
        put_lp(&mut aad, self.room.as_bytes());
        aad
    }

    /// `SHA-256("wsenc/1 dig" ‖ u64be(epoch) ‖ LP(room) ‖ body)`.
    pub fn digest(&self, body: &[u8]) -> [u8; 32] {
        let mut lp = Vec::with_capacity(2 + self.room.len());
        put_lp(&mut lp, self.room.as_bytes());
        sha256(&[DIGEST_LABEL, &self.epoch.to_be_bytes(), &lp, body])
    }

    /// Seals one inner message once for every recipient: `body = u64be(counter) ‖ AES-256-GCM(...)`. `counter`
    /// must never repeat under this key (`0..MAX_BODIES_PER_KEY`). The plaintext is padded with zeros to a
    /// multiple of `pad` bytes, as records are.
    pub fn seal_body(&self, counter: u64, inner: &[u8], pad: Option<NonZeroUsize>) -> Result<SealedBody, SealError> {
        if counter >= MAX_BODIES_PER_KEY {
            return Err(SealError::KeyExhausted);
        }
        if inner.last().is_none_or(|b| *b == 0) {
            return Err(SealError::InvalidPlaintext);
        }
        let pt_len = padded_len(inner.len(), pad)?;
        let body_len = pt_len
            .checked_add(COUNTER_LEN + TAG_LEN)
            .filter(|n| *n <= usize::MAX / 2)
            .ok_or(SealError::TooLarge)?;
        let mut body = Vec::with_capacity(body_len);
        body.extend_from_slice(&counter.to_be_bytes());
        body.extend_from_slice(inner);
        body.resize(COUNTER_LEN + pt_len, 0);
        let tag = self
            .aead
            .seal_in_place(
                &body_nonce(counter),
                &self.body_aad(),
                body.get_mut(COUNTER_LEN..).unwrap_or_default(),
            )
            .map_err(|_| SealError::TooLarge)?;
        body.extend_from_slice(&tag);
        let digest = self.digest(&body);
        let encoded = b64::encoded_len(body.len());
        let mut wire = BytesMut::with_capacity(WIRE_LEAD.len() + encoded + ENV_SUFFIX.len());
        wire.put_slice(WIRE_LEAD);
        wire.resize(WIRE_LEAD.len() + encoded, 0);
        b64::encode_into(&body, wire.get_mut(WIRE_LEAD.len()..).unwrap_or_default())
            .map_err(|_| SealError::TooLarge)?;
        wire.put_slice(ENV_SUFFIX);
        let len = u32::try_from(body.len()).map_err(|_| SealError::TooLarge)?;
        let mut raw = BytesMut::with_capacity(4 + body.len());
        raw.put_slice(&len.to_be_bytes());
        raw.put_slice(&body);
        Ok(SealedBody {
            epoch: self.epoch,
            digest,
            wire: wire.freeze(),
            raw: raw.freeze(),
        })
    }

    /// Opens a body sealed under this key: the inner message with its padding stripped (not yet checked as JSON).
    pub fn open_body(&self, body: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (counter, rest) = body
            .split_at_checked(COUNTER_LEN)
            .ok_or(OpenError::CiphertextTooShort)?;
        let counter: [u8; COUNTER_LEN] = counter.try_into().map_err(|_| OpenError::CiphertextTooShort)?;
        let ct_len = rest.len().checked_sub(TAG_LEN).ok_or(OpenError::CiphertextTooShort)?;
        let (ct, tag) = rest.split_at_checked(ct_len).ok_or(OpenError::CiphertextTooShort)?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| OpenError::CiphertextTooShort)?;
        let mut pt = ct.to_vec();
        self.aead
            .open_in_place(
                &body_nonce(u64::from_be_bytes(counter)),
                &self.body_aad(),
                &mut pt,
                &tag,
            )
            .map_err(|_| OpenError::AuthFailed)?;
        let end = pt.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        pt.truncate(end);
        Ok(pt)
    }

    /// The inner message of the `room_key` record that delivers this key (key material: zeroized on drop).
    pub(crate) fn delivery_message(&self) -> &[u8] {
        &self.delivery
    }

    /// Parses the `data` of a `room_key` inner message (exact schema) into a key.
    pub(crate) fn from_delivery(data: &str) -> Result<Self, OpenError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Delivery<'a> {
            room: String,
            #[serde(borrow)]
            epoch: &'a RawValue,
            #[serde(borrow)]
            key: &'a str,
        }
        let d: Delivery<'_> = serde_json::from_str(data).map_err(|_| OpenError::InvalidInner)?;
        let epoch = super::record::parse_seq(d.epoch.get()).ok_or(OpenError::InvalidInner)?;
        let key = Zeroizing::new(b64::decode_array::<ROOM_KEY_LEN>(d.key).map_err(|_| OpenError::InvalidInner)?);
        Self::new(d.room.into(), epoch, key).map_err(|_| OpenError::InvalidInner)
    }
}

impl fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomKey")
            .field("epoch", &self.epoch)
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// `{"event":"room_key","data":{"room":..,"epoch":..,"key":..}}` (key material: zeroized on drop).
fn delivery_message(room: &str, epoch: u64, key: &[u8; ROOM_KEY_LEN]) -> Zeroizing<Vec<u8>> {
    let room = serde_json::to_string(room).unwrap_or_default();
    let key = Zeroizing::new(b64::encode(key));
    let mut m = Zeroizing::new(Vec::with_capacity(64 + room.len() + key.len()));
    m.extend_from_slice(br#"{"event":"room_key","data":{"room":"#);
    m.extend_from_slice(room.as_bytes());
    m.extend_from_slice(br#","epoch":"#);
    m.extend_from_slice(itoa::Buffer::new().format(epoch).as_bytes());
    m.extend_from_slice(br#","key":""#);
    m.extend_from_slice(key.as_bytes());
    m.extend_from_slice(br#""}}"#);
    m
}

/// `0x00000000 ‖ u64be(counter)`.
fn body_nonce(counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    if let Some(tail) = n.get_mut(4..) {
        tail.copy_from_slice(&counter.to_be_bytes());
    }
    n
}

fn put_lp(out: &mut Vec<u8>, x: &[u8]) {
    let len = u16::try_from(x.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(x.get(..usize::from(len)).unwrap_or(x));
}

/// What a body's shared buffer starts with: `,"`, so that one buffer serves every place a body goes on the wire
/// (see [`SealedBody`]).
const WIRE_LEAD: &[u8] = b",\"";

/// A room message sealed once: what every group-capable recipient's frame shares.
#[derive(Clone)]
pub struct SealedBody {
    epoch: u64,
    digest: [u8; 32],
    /// `,"` ‖ `b64u(body)` ‖ `"}}`, one buffer sliced three ways: from the third byte it ends a §11.3 record
    /// (`b64u(body)"}}`); without its last two bytes it follows an earlier body of a batched record (`,"b64u"`);
    /// from the second byte without its last two it is a batch's first body (`"b64u"`).
    wire: Bytes,
    /// `u32be(len(body))` ‖ `body`: the body as a part of a binary batched record (§11.5), shared.
    raw: Bytes,
}

impl SealedBody {
    /// The body as a part of a binary batched record (§11.5): `u32be(len)` ‖ the raw body bytes, shared.
    pub fn binary_part(&self) -> &[u8] {
        &self.raw
    }

    /// [`Self::binary_part`] as a shared buffer.
    pub fn binary_part_bytes(&self) -> Bytes {
        self.raw.clone()
    }

    /// The epoch of the key that sealed it.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The digest each recipient's header binds.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The shared tail of a §11.3 envelope: the base64url body and the closing `"}}`.
    pub fn wire(&self) -> Bytes {
        self.wire.slice(WIRE_LEAD.len().min(self.wire.len())..)
    }

    /// The body as an element of a batched record's `bodies` array (§11.4): `"b64u"` for the first body,
    /// `,"b64u"` for every later one. Shares the sealed bytes.
    pub fn batch_element(&self, first: bool) -> Bytes {
        let end = self.wire.len().saturating_sub(ENV_SUFFIX.len() - 1);
        let start = usize::from(first).min(end);
        self.wire.slice(start..end)
    }

    /// [`Self::batch_element`] as a slice of the shared bytes.
    pub fn batch_element_bytes(&self, first: bool) -> &[u8] {
        let end = self.wire.len().saturating_sub(ENV_SUFFIX.len() - 1);
        self.wire.get(usize::from(first).min(end)..end).unwrap_or_default()
    }

    /// The body's base64url text (the envelope's `body` field).
    pub fn body_b64u(&self) -> &[u8] {
        let end = self.wire.len().saturating_sub(ENV_SUFFIX.len());
        self.wire.get(WIRE_LEAD.len().min(end)..end).unwrap_or_default()
    }
}

impl fmt::Debug for SealedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedBody")
            .field("epoch", &self.epoch)
            .field("len", &self.wire.len())
            .finish_non_exhaustive()
    }
}

/// What a sealer remembers about the room keys its client holds: the latest epoch sent per room. It also keeps
/// the buffer a batched record's header is built in (§11.4), so that a session that never gets group records
/// holds neither.
#[derive(Default)]
pub(crate) struct KeysSent {
    sent: Vec<(Arc<str>, u64)>,
    /// A batched header's plaintext (epochs and digests: not secret), reused.
    pub(crate) header: Vec<u8>,
}

impl KeysSent {
    /// True if the client already holds `key` (it was sent and not forgotten since).
    pub(crate) fn holds(&self, key: &RoomKey) -> bool {
        self.sent
            .iter()
            .any(|(room, epoch)| *epoch == key.epoch && **room == *key.room)
    }

    /// Records that `key` was sent: it replaces its room's earlier key. When full, everything is forgotten.
    pub(crate) fn sent(&mut self, key: &RoomKey) {
        if let Some(slot) = self.sent.iter_mut().find(|(room, _)| **room == *key.room) {
            slot.1 = key.epoch;
            return;
        }
        if self.sent.len() >= MAX_KEYS_SENT {
            self.sent = Vec::new();
        }
        self.sent.push((key.room.clone(), key.epoch));
    }
}

/// The room keys a receiver holds: the latest per room, at most [`MAX_ROOM_KEYS`] rooms.
#[derive(Default)]
pub(crate) struct RoomKeyRing(Vec<RoomKey>);

impl RoomKeyRing {
    /// Stores `key`, replacing its room's earlier key; forgets the least recently keyed room when full.
    pub(crate) fn insert(&mut self, key: RoomKey) {
        self.0.retain(|k| k.room != key.room);
        if self.0.len() >= MAX_ROOM_KEYS {
            self.0.remove(0);
        }
        self.0.push(key);
    }

    pub(crate) fn by_epoch(&self, epoch: u64) -> Option<&RoomKey> {
        self.0.iter().find(|k| k.epoch == epoch)
    }

    pub(crate) fn by_room(&self, room: &str) -> Option<&RoomKey> {
        self.0.iter().find(|k| &*k.room == room)
    }
}

/// Splits a group header's plaintext into `(epoch, digest)`.
pub(crate) fn parse_header(pt: &[u8]) -> Option<(u64, [u8; 32])> {
    if pt.len() != HEADER_LEN {
        return None;
    }
    let (epoch, digest) = pt.split_at_checked(8)?;
    Some((u64::from_be_bytes(epoch.try_into().ok()?), digest.try_into().ok()?))
}

/// Splits a batched header's plaintext (§11.4) into its `n` `(epoch, digest)` pairs, in order; `None` unless it
/// is exactly `n` × 40 bytes.
pub(crate) fn parse_batch_header(pt: &[u8], n: usize) -> Option<Vec<(u64, [u8; 32])>> {
    if Some(pt.len()) != n.checked_mul(HEADER_LEN) {
        return None;
    }
    pt.chunks_exact(HEADER_LEN).map(parse_header).collect()
}

/// A batched header's plaintext (§11.4): the headers of `bodies`, concatenated in order.
pub(crate) fn batch_header<'b>(bodies: impl Iterator<Item = &'b SealedBody>, out: &mut Vec<u8>) {
    for body in bodies {
        out.extend_from_slice(&header(body));
    }
}

/// `u64be(epoch) ‖ digest`.
pub(crate) fn header(body: &SealedBody) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let (e, d) = h.split_at_mut(8);
    e.copy_from_slice(&body.epoch.to_be_bytes());
    d.copy_from_slice(&body.digest);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(room: &str, epoch: u64, byte: u8) -> RoomKey {
        RoomKey::new(room.into(), epoch, Zeroizing::new([byte; 32])).unwrap()
    }

    #[test]
    fn a_body_opens_under_its_key_only() {
        let k = key("lobby", 7, 1);
        let sealed = k.seal_body(3, br#"{"event":"m","data":1}"#, None).unwrap();
        let body = b64::decode(std::str::from_utf8(sealed.body_b64u()).unwrap()).unwrap();
        assert_eq!(k.open_body(&body).unwrap(), br#"{"event":"m","data":1}"#);
        assert_eq!(sealed.digest(), &k.digest(&body));
        assert!(sealed.wire().ends_with(b"\"}}"));
        assert_eq!(key("lobby", 7, 2).open_body(&body), Err(OpenError::AuthFailed));
        for other in [key("lobby", 8, 1), key("lobbx", 7, 1)] {
            assert_eq!(other.open_body(&body), Err(OpenError::AuthFailed));
            assert_ne!(
                other.digest(&body),
                *sealed.digest(),
                "the digest binds the room and the epoch"
            );
        }
        let mut flipped = body.clone();
        flipped[0] ^= 1;
        assert_eq!(
            k.open_body(&flipped),
            Err(OpenError::AuthFailed),
            "the counter is bound by the nonce"
        );
        assert_eq!(k.open_body(&body[..20]), Err(OpenError::CiphertextTooShort));
    }

    #[test]
    fn padding_is_stripped_and_counters_are_bounded() {
        let k = key("r", 1, 3);
        let sealed = k.seal_body(0, b"{}", NonZeroUsize::new(64)).unwrap();
        let body = b64::decode(std::str::from_utf8(sealed.body_b64u()).unwrap()).unwrap();
        assert_eq!(body.len(), 8 + 64 + 16);
        assert_eq!(k.open_body(&body).unwrap(), b"{}");
        assert_eq!(
            k.seal_body(MAX_BODIES_PER_KEY, b"{}", None).unwrap_err(),
            SealError::KeyExhausted
        );
        assert_eq!(k.seal_body(0, b"", None).unwrap_err(), SealError::InvalidPlaintext);
    }

    #[test]
    fn a_delivery_message_parses_back_into_the_same_key() {
        let k = key("a \"quoted\" room", 9, 4);
        let msg = k.delivery_message();
        let v: serde_json::Value = serde_json::from_slice(msg).unwrap();
        assert_eq!(v["event"], ROOM_KEY_EVENT);
        let back = RoomKey::from_delivery(&v["data"].to_string()).unwrap();
        assert_eq!(back.room(), k.room());
        assert_eq!(back.epoch(), 9);
        assert_eq!(back.key_bytes(), k.key_bytes());
        for bad in [
            r#"{"room":"r","epoch":1}"#,
            r#"{"room":"r","epoch":1,"key":"AAAA","x":1}"#,
            r#"{"room":"","epoch":1,"key":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"}"#,
            r#"{"room":"r","epoch":1.0,"key":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"}"#,
            r#"{"room":"r","epoch":1,"key":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ"}"#,
        ] {
            assert!(RoomKey::from_delivery(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ring_keeps_the_latest_key_per_room_and_is_bounded() {
        let mut ring = RoomKeyRing::default();
        ring.insert(key("a", 1, 1));
        ring.insert(key("a", 2, 2));
        assert!(ring.by_epoch(1).is_none(), "a room's new key replaces its old one");
        assert_eq!(ring.by_room("a").unwrap().epoch(), 2);
        for i in 0..MAX_ROOM_KEYS as u64 {
            ring.insert(key(&format!("r{i}"), 10 + i, 0));
        }
        assert_eq!(ring.0.len(), MAX_ROOM_KEYS);
        assert!(ring.by_room("a").is_none(), "the least recently keyed room goes first");
    }

    #[test]
    fn keys_sent_remembers_the_latest_epoch_per_room_and_forgets_when_full() {
        let mut sent = KeysSent::default();
        let (a1, a2) = (key("a", 1, 1), key("a", 2, 1));
        assert!(!sent.holds(&a1));
        sent.sent(&a1);
        assert!(sent.holds(&a1) && !sent.holds(&a2));
        sent.sent(&a2);
        assert!(!sent.holds(&a1) && sent.holds(&a2));
        for i in 0..MAX_KEYS_SENT as u64 {
            sent.sent(&key(&format!("r{i}"), 10 + i, 0));
        }
        assert!(!sent.holds(&a2), "full: forgotten, so it is sent again");
        assert!(sent.sent.len() <= MAX_KEYS_SENT);
    }
}
