//! Recovering joins of one room share one read of its stream.
//!
//! After a deploy or a network blip every client of a room comes back at once and asks for the same missed
//! messages. Read one by one, the same entries would be fetched, parsed and framed once per client — a
//! thousand clients recovering a hundred messages made recovery cost more than delivering those messages live.
//! Here the recoveries of a room that arrive while a read of it is in flight wait for that read to end and are
//! then served together by the next one: at most one read per room is in flight, it waits [`GATHER`] for the
//! others coming back, covers the oldest offset asked for (but no more than the latest `max` messages, all that a
//! recovery may replay), and its frames are built once and shared like a live delivery's.
//!
//! Each caller registers itself as a joiner (holding the room's live messages) before it asks, and a batch's read
//! starts only after every member of the batch asked: the read sees every message published before any of them
//! was registered, which is what closes the subscribe-then-read race for each of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::history::{Keys, Limits, Read, RedisHistory, Unavailable};
use crate::protocol::outbound::{self, StreamPos, TextFrame};
use crate::protocol::StreamPosition;

/// The missed messages of a room as one read found them, framed.
pub(crate) struct Replay {
    /// The room's position when the entries were read.
    pub(crate) position: StreamPosition,
    /// Oldest first, dense unless entries expired or the stream was trimmed.
    pub(crate) entries: Vec<Replayed>,
}

/// One missed message, framed for delivery.
pub(crate) struct Replayed {
    pub(crate) offset: u64,
    /// When it was appended (ms since the Unix epoch).
    pub(crate) at_ms: u64,
    pub(crate) frame: TextFrame,
}

/// How long a batch's read waits for more recoveries of its room. A storm of reconnects brings a room's clients
/// back within tens of milliseconds, but one by one: without a wait, reads are quick enough that batches would
/// hold one or two clients. A lone recovery pays this once.
const GATHER: Duration = Duration::from_millis(2);

type Outcome = Option<Result<Arc<Replay>, Unavailable>>;

/// The reads of every room being recovered; a room is forgotten when its last read ends.
#[derive(Default)]
pub(crate) struct Replays {
    rooms: Mutex<HashMap<String, Arc<RoomReads>>>,
}

#[derive(Default)]
struct RoomReads {
    /// Held by the read in flight.
    slot: tokio::sync::Mutex<()>,
    /// The recoveries waiting for the next read.
    pending: Mutex<Option<Arc<Batch>>>,
}

struct Batch {
    /// The oldest offset asked for.
    oldest: AtomicU64,
    done: watch::Sender<Outcome>,
}

impl RedisHistory {
    /// The messages of `room` after offset `from` — unless it missed more than `max`, the last `max` of the
    /// stream — read after this call began, with the room's position at that read.
    pub(crate) async fn replay(
        &self,
        keys: &Keys,
        room: &str,
        from: u64,
        max: usize,
        limits: Limits,
    ) -> Result<Arc<Replay>, Unavailable> {
        let mut done = self.join_batch(keys, room, from, max, limits);
        let outcome = match done.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or(Err(Unavailable)),
            // The read's task is gone (the runtime is shutting down).
            Err(_) => Err(Unavailable),
        };
        outcome
    }

    /// Adds a recovery to the room's waiting batch, or starts one (and the task that will read for it).
    fn join_batch(&self, keys: &Keys, room: &str, from: u64, max: usize, limits: Limits) -> watch::Receiver<Outcome> {
        let replays = self.replays();
        let reads = replays.rooms.lock().entry(room.to_owned()).or_default().clone();
        let mut pending = reads.pending.lock();
        if let Some(batch) = pending.as_ref() {
            batch.oldest.fetch_min(from, Ordering::Relaxed);
            return batch.done.subscribe();
        }
        let (done, rx) = watch::channel(None);
        *pending = Some(Arc::new(Batch {
            oldest: AtomicU64::new(from),
            done,
        }));
        drop(pending);
        let (history, keys, room) = (self.clone(), keys.clone(), room.to_owned());
        // A task of its own: the batch must be read even if the connection that started it goes away.
        tokio::spawn(async move {
            let slot = reads.slot.lock().await;
            tokio::time::sleep(GATHER).await;
            let Some(batch) = reads.pending.lock().take() else {
                return;
            };
            let oldest = batch.oldest.load(Ordering::Relaxed);
            // Every recovery from `oldest` on that misses at most `max` finds its part in the latest `max`.
            let what = Read::Recent {
                from: oldest.saturating_add(1),
                count: max,
            };
            let outcome = history.read_replay(&keys, &room, what, limits).await;
            batch.done.send_replace(Some(outcome.map(Arc::new)));
            drop(slot);
            let mut rooms = history.replays().rooms.lock();
            // Nobody else holds the room's reads (the map's reference and this task's): it can go.
            if Arc::strong_count(&reads) == 2 && reads.pending.lock().is_none() {
                rooms.remove(&room);
            }
        });
        rx
    }

    /// What `what` reads of the room, framed.
    async fn read_replay(&self, keys: &Keys, room: &str, what: Read, limits: Limits) -> Result<Replay, Unavailable> {
        let snapshot = self.read(keys, what, limits).await?;
        let epoch = &snapshot.position.epoch;
        let entries = snapshot
            .entries
            .iter()
            .map(|e| Replayed {
                offset: e.offset,
                at_ms: e.at_ms,
                frame: TextFrame::new(&outbound::history_message(
                    &e.event,
                    &e.data,
                    room,
                    StreamPos {
                        offset: e.offset,
                        epoch,
                    },
                )),
            })
            .collect();
        Ok(Replay {
            position: snapshot.position,
            entries,
        })
    }
}
