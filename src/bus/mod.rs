//! Cross-instance delivery.
//!
//! Every [`crate::Server`] delivers to its own clients directly and hands an [`Envelope`] to its [`Bus`] so other
//! instances can deliver to theirs. What comes in from the bus enters through the server's [`Inbox`]. The bus
//! carries plaintext application messages between servers; each instance seals for its own encrypted clients.
//!
//! [`LocalBus`] is the embedded default: an in-process hub (one instance, or several servers in one process).
//! [`RedisBus`] connects instances through one Redis server or a Redis Cluster.

mod local;
pub(crate) mod redis;

pub use local::LocalBus;
pub use redis::{
    BusMode, RedisBus, RedisBusBuilder, RedisBusError, RedisBusStats, RedisEndpoint, Subscriptions, SIG_FIELD,
};

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use crate::protocol::{Action, Envelope, EnvelopeError, Target};

/// A future returned by [`Bus::shutdown`].
pub type BusFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Transport between server instances. Implementations must never block the caller: `publish` and `interest`
/// are called on delivery paths (and `interest` under the routing table's lock).
pub trait Bus: Send + Sync + 'static {
    /// Connects a server: envelopes for it from now on go to `inbox`.
    fn attach(&self, inbox: Inbox);

    /// Sends an envelope to the other instances (at most once; failures are counted, not returned).
    fn publish(&self, envelope: Envelope);

    /// This instance gained (`on`) or lost its last local member for `target`; interest-based transports
    /// subscribe or unsubscribe the matching channel. The default ignores it.
    fn interest(&self, target: &Target, on: bool) {
        let _ = (target, on);
    }

    /// Whether envelopes currently flow (false while a remote transport is reconnecting).
    fn is_ready(&self) -> bool {
        true
    }

    /// Whether envelopes for `target` published elsewhere reach this instance now. An interest-based transport
    /// answers false until the channel `interest` asked for is subscribed; a join waits for it (bounded) before
    /// it is answered. The default: everything flows from the start.
    fn is_subscribed(&self, target: &Target) -> bool {
        let _ = target;
        true
    }

    /// Detaches the server `server_id` and releases the transport's resources.
    fn shutdown(&self, server_id: &str) -> BusFuture;
}

/// What an [`Inbox`] hands envelopes to: the server's delivery paths. The bus knows no more of the server.
pub(crate) trait Deliver: Send + Sync {
    /// Delivers a parsed envelope to the local clients it addresses.
    fn deliver(&self, envelope: &Envelope);
    /// Delivers several, in order (an implementation may batch consecutive ones for one target).
    fn deliver_batch(&self, envelopes: &[&Envelope]) {
        envelopes.iter().for_each(|e| self.deliver(e));
    }
    /// Counts an envelope refused before it could be delivered.
    fn count_dropped(&self);
}

/// The entry point of envelopes arriving from the bus into one server.
#[derive(Clone)]
pub struct Inbox {
    server_id: Arc<str>,
    shared: Weak<dyn Deliver>,
}

impl Inbox {
    pub(crate) fn new(server_id: Arc<str>, shared: Weak<dyn Deliver>) -> Self {
        Self { server_id, shared }
    }

    /// The id of the server behind this inbox; envelopes carrying it are its own and are skipped.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// Whether this server delivers `envelope`: another instance's, or its own history and presence envelopes.
    fn wants(&self, envelope: &Envelope) -> bool {
        envelope.server_id != *self.server_id || envelope.position.is_some() || envelope.action == Action::Presence
    }

    /// False once the server is gone.
    pub fn is_open(&self) -> bool {
        self.shared.strong_count() > 0
    }

    /// Delivers a parsed envelope to the local clients it addresses. The server's own envelopes are skipped
    /// (it delivered them itself), except those with a history position, which it delivers only as they come
    /// back from the bus, in offset order, and presence events, which every instance delivers from the bus.
    pub fn deliver(&self, envelope: &Envelope) {
        if !self.wants(envelope) {
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.deliver(envelope);
        }
    }

    /// [`Self::deliver`] for several envelopes in order; consecutive ones for one room are delivered together
    /// (each member's queue visited once), which is what a transport should call when several have arrived.
    pub fn deliver_batch(&self, envelopes: &[Envelope]) {
        let mine: Vec<&Envelope> = envelopes.iter().filter(|e| self.wants(e)).collect();
        if mine.is_empty() {
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.deliver_batch(&mine);
        }
    }

    /// Counts an envelope the transport refused before parsing (unsigned, forged, wrong channel) as dropped.
    pub fn count_dropped(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.count_dropped();
        }
    }

    /// Parses raw envelope bytes from a transport and delivers them; hostile input is dropped and counted.
    pub fn deliver_bytes(&self, payload: &[u8]) -> Result<(), EnvelopeError> {
        match Envelope::parse(payload) {
            Ok(env) => {
                self.deliver(&env);
                Ok(())
            }
            Err(e) => {
                if let Some(shared) = self.shared.upgrade() {
                    shared.count_dropped();
                }
                Err(e)
            }
        }
    }
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("server_id", &self.server_id).finish()
    }
}
