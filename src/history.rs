//! Room history: the last messages of each room with history, for clients that reconnect (recovery) and for the
//! HTTP API, and the remembered publish ids that make retries idempotent.
//!
//! The embedded store (`MemoryHistory`) keeps, per room, a bounded ring of the delivered frames (each already
//! encoded with its `room`, `offset` and `epoch`, so a recovery replays them without encoding anything), evicted by
//! size (`history_size`) and age (`history_ttl`). It is shared by every server on one [`crate::LocalBus`], so
//! their offsets agree. Each room's stream sits behind its own lock, under which a message is appended *and*
//! delivered (locally and to the other servers of the bus): offsets are handed out, and delivered, in one order.
//! A joining client is added to the room under the same lock, which closes the subscribe-then-read race: every
//! message is either in the replay (offset up to the latest at join time) or delivered live after it.
//!
//! Bounds: at most [`MAX_HISTORY_ROOMS`] rooms are tracked (the room published to least recently is forgotten
//! first; it starts again with a new epoch) and at most [`MAX_IDEMPOTENCY_KEYS`] publish ids are remembered (the
//! oldest first, if they have not expired by then). Memory is therefore bounded by `MAX_HISTORY_ROOMS ×
//! history_size` frames of at most `max_payload_length` (or the API's body limit) each.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::protocol::outbound::{StreamPos, TextFrame};
use crate::protocol::RoomName;

/// Most rooms whose history is kept at once (per store: per [`crate::LocalBus`]).
pub const MAX_HISTORY_ROOMS: usize = 10_000;
/// Most publish ids remembered at once for idempotency (per store).
pub const MAX_IDEMPOTENCY_KEYS: usize = 100_000;
/// Longest idempotency key (a client publish's `id`, the API's `idempotency_key`), in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = crate::protocol::event::MAX_PUBLISH_ID_LEN;
/// Longest accepted epoch, in bytes.
pub const MAX_EPOCH_LEN: usize = crate::protocol::inbound::MAX_EPOCH_LEN;

pub use crate::protocol::StreamPosition;

/// One message of a room's history.
#[derive(Clone)]
pub struct Publication {
    /// Its offset.
    pub offset: u64,
    /// The application event name.
    pub event: String,
    /// The payload, raw JSON.
    pub data: Box<RawValue>,
}

crate::redact::debug_redacted!(Publication { offset, event; data });

/// An answer of [`crate::Server::history`]: messages in offset order, and the stream's latest position.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The messages asked for, oldest first.
    pub publications: Vec<Publication>,
    /// The room's latest offset and its epoch.
    pub position: StreamPosition,
}

/// What a publish to a room came to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// In a room with history: the message's position (for a duplicate, the original one's).
    pub position: Option<StreamPosition>,
    /// The idempotency key was already used for this room within `history_ttl`: nothing was delivered again.
    pub duplicate: bool,
}

/// Why history could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The room matches none of `history_rooms`.
    #[error("this room keeps no history (see history_rooms)")]
    NotEnabled,
    /// The room name is empty or longer than 1024 bytes.
    #[error("room name must be 1 to 1024 bytes long")]
    InvalidRoom,
    /// `since` is of another epoch, after the latest offset, or older than the oldest message kept: the messages
    /// after it cannot all be given. The stream's current position is attached.
    #[error("the position cannot be recovered (other epoch, or out of the history window)")]
    Unrecoverable(StreamPosition),
    /// The history store could not be read (Redis unreachable).
    #[error("the history store is unavailable")]
    Unavailable,
}

/// Who used an idempotency key: a user (or, for anonymous sessions, the connection), or the server's own API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct IdKey {
    pub(crate) who: Arc<str>,
    pub(crate) room: RoomName,
    pub(crate) id: Box<str>,
}

impl IdKey {
    /// A key in the namespace of the servers' API and emitters (`Server::publish`, the HTTP API's
    /// `idempotency_key`, `Emitter::publish`); `None` unless it is 1 to 64 bytes long.
    pub(crate) fn of_server(room: &RoomName, key: &str) -> Option<Self> {
        (!key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_LEN).then(|| Self {
            who: SERVER_KEYS.into(),
            room: room.clone(),
            id: key.into(),
        })
    }
}

/// The namespace of keys used through the HTTP API and the `Server` methods.
pub(crate) const SERVER_KEYS: &str = "server";

/// A message kept in a room's ring.
struct Stored {
    offset: u64,
    at: Instant,
    frame: TextFrame,
}

/// One room's stream.
pub(crate) struct Stream {
    epoch: Arc<str>,
    last: u64,
    ring: VecDeque<Stored>,
    touched: Instant,
}

/// What a recovery found.
pub(crate) enum Recovery {
    /// Every message after the position, in order (possibly none).
    Replay(Vec<TextFrame>),
    /// Not every message after the position can be given.
    Unrecoverable,
}

impl Stream {
    fn new(now: Instant) -> Self {
        Self {
            epoch: new_epoch(),
            last: 0,
            ring: VecDeque::new(),
            touched: now,
        }
    }

    fn expire(&mut self, now: Instant, ttl: Duration) {
        while self
            .ring
            .front()
            .is_some_and(|m| now.saturating_duration_since(m.at) >= ttl)
        {
            self.ring.pop_front();
        }
    }

    /// The latest offset and the epoch.
    pub(crate) fn position(&self) -> (u64, Arc<str>) {
        (self.last, self.epoch.clone())
    }

    /// Appends the next message, encoded by `encode` at its position; keeps at most `size` messages.
    pub(crate) fn append(
        &mut self,
        now: Instant,
        size: usize,
        ttl: Duration,
        encode: impl FnOnce(StreamPos<'_>) -> TextFrame,
    ) -> (u64, Arc<str>, TextFrame) {
        self.expire(now, ttl);
        self.last = self.last.saturating_add(1);
        self.touched = now;
        let frame = encode(StreamPos {
            offset: self.last,
            epoch: &self.epoch,
        });
        self.ring.push_back(Stored {
            offset: self.last,
            at: now,
            frame: frame.clone(),
        });
        while self.ring.len() > size {
            self.ring.pop_front();
        }
        (self.last, self.epoch.clone(), frame)
    }

    /// The messages after `offset` of `epoch`, if the window still holds all of them (at most `max`).
    pub(crate) fn since(&mut self, now: Instant, ttl: Duration, offset: u64, epoch: &str, max: usize) -> Recovery {
        self.expire(now, ttl);
        if epoch != &*self.epoch || offset > self.last {
            return Recovery::Unrecoverable;
        }
        let missed = self.last - offset;
        let first = self.ring.front().map_or(self.last.saturating_add(1), |m| m.offset);
        // The ring is dense: it holds `first..=last`, so offset + 1 must not be older than `first`.
        let too_old = missed > 0 && offset.saturating_add(1) < first;
        if too_old || usize::try_from(missed).map_or(true, |m| m > max) {
            return Recovery::Unrecoverable;
        }
        Recovery::Replay(
            self.ring
                .iter()
                .filter(|m| m.offset > offset)
                .map(|m| m.frame.clone())
                .collect(),
        )
    }

    /// Up to `limit` messages: after `since` (oldest first), or without it the latest ones.
    fn page(
        &mut self,
        now: Instant,
        ttl: Duration,
        since: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<Vec<Publication>, HistoryError> {
        let frames: Vec<(u64, TextFrame)> = match since {
            Some(p) => match self.since(now, ttl, p.offset, &p.epoch, usize::MAX) {
                Recovery::Replay(_) => self
                    .ring
                    .iter()
                    .filter(|m| m.offset > p.offset)
                    .take(limit)
                    .map(|m| (m.offset, m.frame.clone()))
                    .collect(),
                Recovery::Unrecoverable => return Err(HistoryError::Unrecoverable(self.stream_position())),
            },
            None => {
                self.expire(now, ttl);
                let skip = self.ring.len().saturating_sub(limit);
                self.ring
                    .iter()
                    .skip(skip)
                    .map(|m| (m.offset, m.frame.clone()))
                    .collect()
            }
        };
        Ok(frames
            .into_iter()
            .filter_map(|(offset, frame)| publication(offset, frame.text()))
            .collect())
    }

    fn stream_position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.last,
            epoch: self.epoch.to_string(),
        }
    }
}

/// A stored frame read back as a publication (the frames are ours, so this only fails on a bug).
fn publication(offset: u64, frame: &str) -> Option<Publication> {
    #[derive(Deserialize)]
    struct Frame {
        event: String,
        data: Box<RawValue>,
    }
    let f: Frame = serde_json::from_str(frame).ok()?;
    Some(Publication {
        offset,
        event: f.event,
        data: f.data,
    })
}

/// A fresh epoch: random, short, URL-safe.
fn new_epoch() -> Arc<str> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id.get(..12).unwrap_or(&id).into()
}

/// Remembered publish ids: the key, the position it got (`None` outside history rooms), when it expires.
#[derive(Default)]
struct IdCache {
    map: HashMap<IdKey, (Option<StreamPosition>, Instant)>,
    /// Keys in the order they were remembered (all live equally long, so this is also expiry order).
    order: VecDeque<(IdKey, Instant)>,
}

impl IdCache {
    fn expire(&mut self, now: Instant) {
        while let Some((key, until)) = self.order.front() {
            if *until > now && self.order.len() < MAX_IDEMPOTENCY_KEYS {
                break;
            }
            if self.map.get(key).is_some_and(|(_, u)| u == until) {
                self.map.remove(key);
            }
            self.order.pop_front();
        }
    }

    fn get(&mut self, key: &IdKey, now: Instant) -> Option<Option<StreamPosition>> {
        self.expire(now);
        self.map.get(key).map(|(p, _)| p.clone())
    }

    fn insert(&mut self, key: IdKey, position: Option<StreamPosition>, now: Instant, ttl: Duration) {
        self.expire(now);
        let until = now + ttl;
        self.order.push_back((key.clone(), until));
        self.map.insert(key, (position, until));
    }
}

/// The embedded history store; see the module docs.
#[derive(Default)]
pub(crate) struct MemoryHistory {
    streams: Mutex<HashMap<RoomName, Arc<Mutex<Stream>>>>,
    ids: Mutex<IdCache>,
}

impl MemoryHistory {
    /// `room`'s stream, created (with a new epoch) if it is not tracked.
    pub(crate) fn stream(&self, room: &RoomName, now: Instant) -> Arc<Mutex<Stream>> {
        let mut streams = self.streams.lock();
        if let Some(s) = streams.get(room) {
            return s.clone();
        }
        if streams.len() >= MAX_HISTORY_ROOMS {
            // Forget the room published to least recently; it restarts with a new epoch if used again.
            let oldest = streams
                .iter()
                .min_by_key(|(_, s)| s.lock().touched)
                .map(|(r, _)| r.clone());
            if let Some(r) = oldest {
                streams.remove(&r);
            }
        }
        let s = Arc::new(Mutex::new(Stream::new(now)));
        streams.insert(room.clone(), s.clone());
        s
    }

    /// The position a key was first used at, if it was used within its lifetime (`Some(None)`: outside history).
    pub(crate) fn used(&self, key: &IdKey, now: Instant) -> Option<Option<StreamPosition>> {
        self.ids.lock().get(key, now)
    }

    /// Remembers a key until `now + ttl`.
    pub(crate) fn remember(&self, key: IdKey, position: Option<StreamPosition>, now: Instant, ttl: Duration) {
        self.ids.lock().insert(key, position, now, ttl);
    }

    /// Claims a key outside history rooms: false when it was already used (the publish is a duplicate).
    pub(crate) fn claim(&self, key: IdKey, now: Instant, ttl: Duration) -> bool {
        let mut ids = self.ids.lock();
        if ids.get(&key, now).is_some() {
            return false;
        }
        ids.insert(key, None, now, ttl);
        true
    }

    /// A page of `room`'s history.
    pub(crate) fn page(
        &self,
        room: &RoomName,
        now: Instant,
        ttl: Duration,
        since: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        let stream = self.stream(room, now);
        let mut s = stream.lock();
        let publications = s.page(now, ttl, since, limit)?;
        Ok(HistoryPage {
            publications,
            position: s.stream_position(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn frame(p: StreamPos<'_>) -> TextFrame {
        TextFrame::new(&format!(r#"{{"event":"e","data":{},"offset":{}}}"#, p.offset, p.offset))
    }

    fn offsets(r: Recovery) -> Option<Vec<u64>> {
        match r {
            Recovery::Replay(frames) => Some(
                frames
                    .iter()
                    .map(|f| publication(0, f.text()).unwrap().data.get().parse().unwrap())
                    .collect(),
            ),
            Recovery::Unrecoverable => None,
        }
    }

    #[test]
    fn offsets_are_dense_from_one_and_the_ring_keeps_the_last_size_messages() {
        let now = Instant::now();
        let mut s = Stream::new(now);
        for want in 1..=5 {
            let (offset, _, _) = s.append(now, 3, TTL, frame);
            assert_eq!(offset, want);
        }
        let epoch = s.position().1.to_string();
        assert_eq!(offsets(s.since(now, TTL, 2, &epoch, 100)), Some(vec![3, 4, 5]));
        assert_eq!(offsets(s.since(now, TTL, 5, &epoch, 100)), Some(vec![]));
        assert_eq!(offsets(s.since(now, TTL, 1, &epoch, 100)), None, "offset 2 was evicted");
        assert_eq!(offsets(s.since(now, TTL, 6, &epoch, 100)), None, "after the latest");
        assert_eq!(offsets(s.since(now, TTL, 4, "other", 100)), None, "another epoch");
        assert_eq!(
            offsets(s.since(now, TTL, 2, &epoch, 2)),
            None,
            "more than the caller takes"
        );
    }

    #[test]
    fn messages_expire_by_age_and_recovery_past_them_fails() {
        let now = Instant::now();
        let mut s = Stream::new(now);
        s.append(now, 10, TTL, frame);
        s.append(now + TTL / 2, 10, TTL, frame);
        let epoch = s.position().1.to_string();
        let later = now + TTL;
        assert_eq!(offsets(s.since(later, TTL, 1, &epoch, 100)), Some(vec![2]));
        assert_eq!(offsets(s.since(later, TTL, 0, &epoch, 100)), None, "offset 1 expired");
        let much_later = now + TTL * 3;
        assert_eq!(
            offsets(s.since(much_later, TTL, 2, &epoch, 100)),
            Some(vec![]),
            "up to date, empty ring"
        );
        assert_eq!(offsets(s.since(much_later, TTL, 1, &epoch, 100)), None);
    }

    #[test]
    fn the_least_recently_used_room_is_forgotten_past_the_room_bound() {
        let h = MemoryHistory::default();
        let now = Instant::now();
        let first = RoomName::parse("r0").unwrap();
        let epoch = h.stream(&first, now).lock().position().1;
        for i in 1..=MAX_HISTORY_ROOMS {
            h.stream(
                &RoomName::parse(&format!("r{i}")).unwrap(),
                now + Duration::from_millis(1),
            );
        }
        assert_eq!(h.streams.lock().len(), MAX_HISTORY_ROOMS);
        assert_ne!(
            h.stream(&first, now).lock().position().1,
            epoch,
            "recreated with a new epoch"
        );
    }

    #[test]
    fn publish_ids_are_remembered_for_their_lifetime_and_bounded() {
        let h = MemoryHistory::default();
        let now = Instant::now();
        let key = |id: &str| IdKey {
            who: "u".into(),
            room: RoomName::parse("r").unwrap(),
            id: id.into(),
        };
        assert!(h.claim(key("a"), now, TTL));
        assert!(!h.claim(key("a"), now + TTL / 2, TTL));
        assert!(h.claim(key("a"), now + TTL, TTL), "expired");
        let at = StreamPosition {
            offset: 3,
            epoch: "e".into(),
        };
        h.remember(key("b"), Some(at.clone()), now, TTL);
        assert_eq!(h.used(&key("b"), now), Some(Some(at)));
        for i in 0..MAX_IDEMPOTENCY_KEYS {
            h.remember(key(&i.to_string()), None, now, TTL);
        }
        assert!(h.ids.lock().map.len() <= MAX_IDEMPOTENCY_KEYS);
        assert_eq!(h.used(&key("b"), now), None, "the oldest went first");
    }
}
