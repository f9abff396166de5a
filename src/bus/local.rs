use std::sync::Arc;

use parking_lot::RwLock;

use super::{Bus, BusFuture, Inbox};
use crate::history::MemoryHistory;
use crate::protocol::Envelope;

/// The embedded bus: delivers envelopes to every other server attached to the same `LocalBus` in this process.
///
/// A server built without a bus gets its own `LocalBus`, so it is a single instance. Clone one `LocalBus` into
/// several builders to run several instances in one process (handy for tests and embedded clusters).
///
/// It also holds the embedded room history (see `history_rooms` in [`crate::Config`]), shared by its servers so
/// that their offsets agree: a ring per room in memory, lost when the process ends (a new epoch then).
#[derive(Clone, Default)]
pub struct LocalBus {
    inboxes: Arc<RwLock<Vec<Inbox>>>,
    history: Arc<MemoryHistory>,
}

impl LocalBus {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// The history store shared by the servers on this bus.
    pub(crate) fn history(&self) -> Arc<MemoryHistory> {
        self.history.clone()
    }
}

impl Bus for LocalBus {
    fn attach(&self, inbox: Inbox) {
        self.inboxes.write().push(inbox);
    }

    fn publish(&self, envelope: Envelope) {
        // Snapshot first: delivery must not run under our lock (an inbox may publish in turn).
        let inboxes: Vec<Inbox> = self.inboxes.read().clone();
        // The publishing server delivered the envelope itself (a history one too, under the room's lock).
        for inbox in inboxes
            .iter()
            .filter(|i| i.is_open() && i.server_id() != envelope.server_id)
        {
            inbox.deliver(&envelope);
        }
    }

    fn shutdown(&self, server_id: &str) -> BusFuture {
        self.inboxes
            .write()
            .retain(|i| i.server_id() != server_id && i.is_open());
        Box::pin(async {})
    }
}

impl std::fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBus")
            .field("servers", &self.inboxes.read().len())
            .finish()
    }
}
