//! A client's publishes, delivered locally in batches.
//!
//! Consecutive publishes of one client to one room are held back while more are already waiting to be read, and
//! delivered together: each member's queue is visited once per batch instead of once per message (with 10,000
//! members those queues are cold in the cache, and that miss was most of a delivery's cost). The envelopes go to
//! the bus at once. The reader flushes before anything else it does and whenever it is about to wait, so a
//! client's own frames never overtake its publishes.

use std::time::Instant;

use serde_json::value::RawValue;

use crate::protocol::outbound::{self, TextFrame};
use crate::protocol::{ClientId, RoomName, Target};
use crate::registry::Exclude;
use crate::shared::{check_event, SendError, Shared};

/// Most messages held back before they are delivered anyway.
const MAX: usize = 64;

struct Batch {
    room: RoomName,
    exclude: Vec<ClientId>,
    frames: Vec<TextFrame>,
}

/// The publishes not yet delivered locally (boxed: most connections never publish, and this sits in each one).
#[derive(Default)]
pub(super) struct Pending(Option<Box<Batch>>);

impl Pending {
    /// True while publishes are held back.
    pub(super) fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// Adds a publish to `room` (delivering the held-back batch first if it was for another room or exclude list)
    /// and hands its envelope to the bus.
    pub(super) fn push(
        &mut self,
        shared: &Shared,
        room: RoomName,
        event_name: &str,
        data: Box<RawValue>,
        exclude: Vec<ClientId>,
    ) -> Result<(), SendError> {
        check_event(event_name)?;
        let text = TextFrame::new(&outbound::message(event_name, Some(&data)));
        if self.0.as_ref().is_some_and(|b| b.room != room || b.exclude != exclude) {
            self.flush(shared);
        }
        let b = self.0.get_or_insert_with(|| {
            Box::new(Batch {
                room: room.clone(),
                exclude: exclude.clone(),
                frames: Vec::new(),
            })
        });
        b.frames.push(text);
        let full = b.frames.len() >= MAX;
        shared.publish_delivery(Target::Room(room), event_name, data, exclude);
        if full {
            self.flush(shared);
        }
        Ok(())
    }

    /// Delivers what is held back to this instance's members of its room.
    pub(super) fn flush(&mut self, shared: &Shared) {
        let Some(b) = self.0.take() else {
            return;
        };
        let started = Instant::now();
        let target = Target::Room(b.room);
        shared
            .registry
            .deliver_all(&target, &b.frames, &Exclude::from_ids(&b.exclude));
        shared.telemetry.fanout(started.elapsed());
    }
}
