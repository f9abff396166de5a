//! Counters the server keeps about itself (exported as metrics by the product layer).

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters, readable through [`crate::Server::stats`].
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections closed 4007 because their outbound queue overflowed.
    pub slow_consumer_closes: AtomicU64,
    /// Bus envelopes refused (malformed, reserved event, oversized, ...).
    pub envelopes_dropped: AtomicU64,
    /// Bus envelopes accepted and delivered locally.
    pub envelopes_delivered: AtomicU64,
    /// Credentials rejected by the authenticator (no handshake work was done for them).
    pub auth_rejected: AtomicU64,
    /// Hook calls that returned an error or panicked.
    pub hook_failures: AtomicU64,
    /// wsenc/1 handshakes attempted (elliptic-curve work done).
    pub handshakes: AtomicU64,
}

/// A point-in-time copy of the server's own counters ([`crate::Server::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Connections closed 4007 because their outbound queue overflowed.
    pub slow_consumer_closes: u64,
    /// Bus envelopes refused (malformed, reserved event, oversized, ...).
    pub envelopes_dropped: u64,
    /// Bus envelopes accepted and delivered locally.
    pub envelopes_delivered: u64,
    /// Credentials rejected by the authenticator (no handshake work was done for them).
    pub auth_rejected: u64,
    /// Hook calls that returned an error or panicked.
    pub hook_failures: u64,
    /// wsenc/1 handshakes attempted (elliptic-curve work done).
    pub handshakes: u64,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            slow_consumer_closes: r(&self.slow_consumer_closes),
            envelopes_dropped: r(&self.envelopes_dropped),
            envelopes_delivered: r(&self.envelopes_delivered),
            auth_rejected: r(&self.auth_rejected),
            hook_failures: r(&self.hook_failures),
            handshakes: r(&self.handshakes),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
