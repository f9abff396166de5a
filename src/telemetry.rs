//! Every event the server counts, counted in one place.
//!
//! Each [`Telemetry`] method stands for one event and updates everything that reports it: the `metrics` facade
//! (what the binary exports as Prometheus; see [`crate::metrics::names`]) and, where [`StatsSnapshot`] has a
//! field for it, that counter. Callers say what happened, never which counters to bump.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::metrics::names::*;
use crate::protocol::CloseCode;

/// A counter read both by the metrics facade and by snapshots.
pub(crate) struct Counted {
    value: AtomicU64,
    handle: Counter,
}

impl Counted {
    pub(crate) fn new(handle: Counter) -> Self {
        Self {
            value: AtomicU64::new(0),
            handle,
        }
    }

    pub(crate) fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        self.handle.increment(n);
    }

    pub(crate) fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// What the authenticator answered.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AuthOutcome {
    Accepted,
    Rejected,
    /// The authenticator failed (error or panic).
    Error,
    /// The authentication window ran out.
    Timeout,
}

/// The hooks whose failures are counted.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HookKind {
    Authenticator,
    Handshake,
    OnConnected,
    OnDisconnected,
    RoomValidator,
    MessageHandler,
    OutboundTransformer,
}

impl HookKind {
    const ALL: [Self; 7] = [
        Self::Authenticator,
        Self::Handshake,
        Self::OnConnected,
        Self::OnDisconnected,
        Self::RoomValidator,
        Self::MessageHandler,
        Self::OutboundTransformer,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Authenticator => "authenticator",
            Self::Handshake => "handshake",
            Self::OnConnected => "on_connected",
            Self::OnDisconnected => "on_disconnected",
            Self::RoomValidator => "room_validator",
            Self::MessageHandler => "message_handler",
            Self::OutboundTransformer => "outbound_transformer",
        }
    }
}

/// Why connections are refused before the upgrade (the `reason` label of [`REFUSED`]), so that each series
/// exists from the start.
const REFUSAL_REASONS: [&str; 5] = ["origin", "global", "per_ip", "rate", "shutdown"];

/// One server's counters and gauges.
pub(crate) struct Telemetry {
    connections: Gauge,
    rooms: Gauge,
    users: Gauge,
    sessions_plain: Gauge,
    sessions_encrypted: Gauge,
    auth_accepted: Counter,
    auth_rejected: Counted,
    auth_error: Counter,
    auth_timeout: Counter,
    hs_encrypted: Counter,
    hs_plaintext: Counter,
    hs_rejected: Counter,
    hs_busy: Counter,
    handshake_seconds: Histogram,
    wsenc_handshakes: Counted,
    hook_failures: AtomicU64,
    records_in: Counter,
    records_out: Counter,
    room_key_rotations: Counter,
    group_single: Counter,
    group_batched: Counter,
    key_updates: Counter,
    queue_drops: Counter,
    slow_consumer_closes: Counted,
    fanout_seconds: Histogram,
    bus_published: Counter,
    bus_delivered: Counted,
    bus_dropped: Counted,
}

impl Telemetry {
    pub(crate) fn new() -> Self {
        crate::metrics::describe();
        gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        // Series counted by a label known only at the event are registered (at zero) now, so that dashboards
        // and `rate()` see them before the first event.
        for reason in REFUSAL_REASONS {
            counter!(REFUSED, "reason" => reason).increment(0);
        }
        for code in crate::protocol::close::ALL {
            counter!(CLOSES, "code" => code.code().to_string()).increment(0);
        }
        for hook in HookKind::ALL {
            counter!(HOOK_FAILURES, "hook" => hook.label()).increment(0);
        }
        Self {
            connections: gauge!(CONNECTIONS),
            rooms: gauge!(ROOMS),
            users: gauge!(USERS),
            sessions_plain: gauge!(SESSIONS, "encrypted" => "false"),
            sessions_encrypted: gauge!(SESSIONS, "encrypted" => "true"),
            auth_accepted: counter!(AUTHENTICATIONS, "outcome" => "accepted"),
            auth_rejected: Counted::new(counter!(AUTHENTICATIONS, "outcome" => "rejected")),
            auth_error: counter!(AUTHENTICATIONS, "outcome" => "error"),
            auth_timeout: counter!(AUTHENTICATIONS, "outcome" => "timeout"),
            hs_encrypted: counter!(HANDSHAKES, "outcome" => "encrypted"),
            hs_plaintext: counter!(HANDSHAKES, "outcome" => "plaintext"),
            hs_rejected: counter!(HANDSHAKES, "outcome" => "rejected"),
            hs_busy: counter!(HANDSHAKES, "outcome" => "busy"),
            handshake_seconds: histogram!(HANDSHAKE_SECONDS),
            wsenc_handshakes: Counted::new(counter!(WSENC_HANDSHAKES)),
            hook_failures: AtomicU64::new(0),
            records_in: counter!(RECORDS, "direction" => "in"),
            records_out: counter!(RECORDS, "direction" => "out"),
            room_key_rotations: counter!(ROOM_KEY_ROTATIONS),
            group_single: counter!(GROUP_RECORDS, "form" => "single"),
            group_batched: counter!(GROUP_RECORDS, "form" => "batched"),
            key_updates: counter!(KEY_UPDATES),
            queue_drops: counter!(QUEUE_DROPS),
            slow_consumer_closes: Counted::new(counter!(SLOW_CONSUMER_CLOSES)),
            fanout_seconds: histogram!(FANOUT_SECONDS),
            bus_published: counter!(BUS_PUBLISHED),
            bus_delivered: Counted::new(counter!(BUS_RECEIVED, "result" => "delivered")),
            bus_dropped: Counted::new(counter!(BUS_RECEIVED, "result" => "dropped")),
        }
    }

    /// A WebSocket connection was accepted (upgraded).
    pub(crate) fn connection_opened(&self) {
        self.connections.increment(1);
    }

    /// A connection ended; `session` says whether it had been established and encrypted.
    pub(crate) fn connection_closed(&self, session: Option<bool>, code: Option<CloseCode>) {
        self.connections.decrement(1);
        match session {
            Some(true) => self.sessions_encrypted.decrement(1),
            Some(false) => self.sessions_plain.decrement(1),
            None => {}
        }
        if let Some(code) = code {
            counter!(CLOSES, "code" => code.code().to_string()).increment(1);
        }
    }

    /// A room got its first local member (`opened`) or lost its last one; clients' own-id rooms are not counted.
    pub(crate) fn room(&self, opened: bool) {
        if opened {
            self.rooms.increment(1);
        } else {
            self.rooms.decrement(1);
        }
    }

    /// A user got its first local session (`arrived`) or lost its last one.
    pub(crate) fn user(&self, arrived: bool) {
        if arrived {
            self.users.increment(1);
        } else {
            self.users.decrement(1);
        }
    }

    /// A connection was refused before the upgrade (origin, global, per_ip, rate, shutdown).
    pub(crate) fn refused(&self, reason: &'static str) {
        counter!(REFUSED, "reason" => reason).increment(1);
    }

    /// The authenticator answered (or the window ran out).
    pub(crate) fn authentication(&self, outcome: AuthOutcome) {
        match outcome {
            AuthOutcome::Accepted => self.auth_accepted.increment(1),
            AuthOutcome::Rejected => self.auth_rejected.add(1),
            AuthOutcome::Error => {
                self.auth_error.increment(1);
                self.hook_failed(HookKind::Authenticator);
            }
            AuthOutcome::Timeout => self.auth_timeout.increment(1),
        }
    }

    /// No authentication slot freed in time (close 1013).
    pub(crate) fn handshake_busy(&self) {
        self.hs_busy.increment(1);
    }

    /// The handshake refused the session (close 4004).
    pub(crate) fn handshake_rejected(&self) {
        self.hs_rejected.increment(1);
    }

    /// A session was established `after` the client's `authenticate`.
    pub(crate) fn session_established(&self, encrypted: bool, after: Duration) {
        if encrypted {
            self.hs_encrypted.increment(1);
            self.sessions_encrypted.increment(1);
        } else {
            self.hs_plaintext.increment(1);
            self.sessions_plain.increment(1);
        }
        self.handshake_seconds.record(after.as_secs_f64());
    }

    /// The bundled wsenc/1 handshake did its elliptic-curve work.
    pub(crate) fn wsenc_handshake(&self) {
        self.wsenc_handshakes.add(1);
    }

    /// A hook returned an error or panicked.
    pub(crate) fn hook_failed(&self, hook: HookKind) {
        self.hook_failures.fetch_add(1, Ordering::Relaxed);
        counter!(HOOK_FAILURES, "hook" => hook.label()).increment(1);
    }

    /// Records opened from a client.
    pub(crate) fn records_in(&self, n: u64) {
        self.records_in.increment(n);
    }

    /// Records sealed for a client.
    pub(crate) fn records_out(&self, n: u64) {
        self.records_out.increment(n);
    }

    /// A room key was made (wsenc/1 §11.2).
    pub(crate) fn room_key_rotation(&self) {
        self.room_key_rotations.increment(1);
    }

    /// Group records sent: `single` with one `body` (§11.3), `batched` with `bodies` (§11.4).
    pub(crate) fn group_records(&self, single: u64, batched: u64) {
        if single > 0 {
            self.group_single.increment(single);
        }
        if batched > 0 {
            self.group_batched.increment(batched);
        }
    }

    /// A client switched to its next epoch's keys.
    pub(crate) fn key_update(&self) {
        self.key_updates.increment(1);
    }

    /// `n` messages were not queued for a client (its queue was full or closed).
    pub(crate) fn queue_drops(&self, n: u64) {
        self.queue_drops.increment(n);
    }

    /// A client was closed 4007 because its queue overflowed.
    pub(crate) fn slow_consumer_closed(&self) {
        self.slow_consumer_closes.add(1);
    }

    /// One fan-out to the local recipients took `took`.
    pub(crate) fn fanout(&self, took: Duration) {
        self.fanout_seconds.record(took.as_secs_f64());
    }

    /// An envelope was handed to the bus.
    pub(crate) fn bus_published(&self) {
        self.bus_published.increment(1);
    }

    /// An envelope from the bus was delivered locally.
    pub(crate) fn bus_delivered(&self) {
        self.bus_delivered.add(1);
    }

    /// An envelope from the bus was refused.
    pub(crate) fn bus_dropped(&self) {
        self.bus_dropped.add(1);
    }

    /// Reads the counters [`crate::Server::stats`] reports.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            slow_consumer_closes: self.slow_consumer_closes.get(),
            envelopes_dropped: self.bus_dropped.get(),
            envelopes_delivered: self.bus_delivered.get(),
            auth_rejected: self.auth_rejected.get(),
            hook_failures: self.hook_failures.load(Ordering::Relaxed),
            handshakes: self.wsenc_handshakes.get(),
        }
    }
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
