//! Metric handles (the `metrics` facade). They cost nothing until the application installs a recorder (the
//! binary installs the Prometheus exporter and serves it on the admin listener). Handles are created once so hot
//! paths only bump an atomic.

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::protocol::CloseCode;

/// Metric names, for dashboards and tests.
pub mod names {
    /// Open WebSocket connections (gauge).
    pub const CONNECTIONS: &str = "sealcast_connections";
    /// Authenticated connections by encryption (gauge, label `encrypted`).
    pub const SESSIONS: &str = "sealcast_sessions";
    /// Connections refused before the upgrade (label `reason`: origin, global, per_ip, rate, shutdown).
    pub const REFUSED: &str = "sealcast_connections_refused_total";
    /// Authentications (label `outcome`: accepted, rejected, error, timeout).
    pub const AUTHENTICATIONS: &str = "sealcast_authentications_total";
    /// Handshakes (label `outcome`: encrypted, plaintext, rejected, busy).
    pub const HANDSHAKES: &str = "sealcast_handshakes_total";
    /// Time from `authenticate` to `connected`, seconds (histogram).
    pub const HANDSHAKE_SECONDS: &str = "sealcast_handshake_seconds";
    /// Records opened (inbound) and sealed (outbound) (label `direction`: in, out).
    pub const RECORDS: &str = "sealcast_records_total";
    /// Key updates received from clients.
    pub const KEY_UPDATES: &str = "sealcast_key_updates_total";
    /// Connections closed by the server (label `code`).
    pub const CLOSES: &str = "sealcast_closes_total";
    /// Messages not queued because the recipient's queue was full.
    pub const QUEUE_DROPS: &str = "sealcast_outbound_dropped_total";
    /// Time to queue one fan-out to every local recipient, seconds (histogram).
    pub const FANOUT_SECONDS: &str = "sealcast_fanout_seconds";
    /// Bus envelopes delivered locally / refused (label `result`: delivered, dropped).
    pub const BUS_RECEIVED: &str = "sealcast_bus_received_total";
    /// Envelopes handed to the bus.
    pub const BUS_PUBLISHED: &str = "sealcast_bus_published_total";
    /// Envelopes the Redis bus published (copied from `RedisBusStats` at render time).
    pub const REDIS_PUBLISHED: &str = "sealcast_redis_published_total";
    /// Envelopes the Redis bus did not publish (queue full, Redis unreachable, publish failed).
    pub const REDIS_PUBLISH_DROPPED: &str = "sealcast_redis_publish_dropped_total";
    /// Pub/sub messages received from Redis.
    pub const REDIS_RECEIVED: &str = "sealcast_redis_received_total";
    /// Received messages refused (malformed, forged, wrong channel).
    pub const REDIS_REJECTED: &str = "sealcast_redis_rejected_total";
    /// Subscriber reconnections after a fault.
    pub const REDIS_RECONNECTS: &str = "sealcast_redis_reconnects_total";
    /// Channels currently subscribed (gauge).
    pub const REDIS_SUBSCRIPTIONS: &str = "sealcast_redis_subscriptions";
    /// HTTP API requests (label `endpoint`: publish, disconnect; label `status`).
    pub const API_REQUESTS: &str = "sealcast_api_requests_total";
}

pub(crate) struct Metrics {
    pub(crate) connections: Gauge,
    pub(crate) sessions_plain: Gauge,
    pub(crate) sessions_encrypted: Gauge,
    pub(crate) auth_accepted: Counter,
    pub(crate) auth_rejected: Counter,
    pub(crate) auth_error: Counter,
    pub(crate) auth_timeout: Counter,
    pub(crate) hs_encrypted: Counter,
    pub(crate) hs_plaintext: Counter,
    pub(crate) hs_rejected: Counter,
    pub(crate) hs_busy: Counter,
    pub(crate) handshake_seconds: Histogram,
    pub(crate) records_in: Counter,
    pub(crate) records_out: Counter,
    pub(crate) key_updates: Counter,
    pub(crate) queue_drops: Counter,
    pub(crate) fanout_seconds: Histogram,
    pub(crate) bus_delivered: Counter,
    pub(crate) bus_dropped: Counter,
    pub(crate) bus_published: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        use names::*;
        Self {
            connections: gauge!(CONNECTIONS),
            sessions_plain: gauge!(SESSIONS, "encrypted" => "false"),
            sessions_encrypted: gauge!(SESSIONS, "encrypted" => "true"),
            auth_accepted: counter!(AUTHENTICATIONS, "outcome" => "accepted"),
            auth_rejected: counter!(AUTHENTICATIONS, "outcome" => "rejected"),
            auth_error: counter!(AUTHENTICATIONS, "outcome" => "error"),
            auth_timeout: counter!(AUTHENTICATIONS, "outcome" => "timeout"),
            hs_encrypted: counter!(HANDSHAKES, "outcome" => "encrypted"),
            hs_plaintext: counter!(HANDSHAKES, "outcome" => "plaintext"),
            hs_rejected: counter!(HANDSHAKES, "outcome" => "rejected"),
            hs_busy: counter!(HANDSHAKES, "outcome" => "busy"),
            handshake_seconds: histogram!(HANDSHAKE_SECONDS),
            records_in: counter!(RECORDS, "direction" => "in"),
            records_out: counter!(RECORDS, "direction" => "out"),
            key_updates: counter!(KEY_UPDATES),
            queue_drops: counter!(QUEUE_DROPS),
            fanout_seconds: histogram!(FANOUT_SECONDS),
            bus_delivered: counter!(BUS_RECEIVED, "result" => "delivered"),
            bus_dropped: counter!(BUS_RECEIVED, "result" => "dropped"),
            bus_published: counter!(BUS_PUBLISHED),
        }
    }

    pub(crate) fn refused(reason: &'static str) {
        counter!(names::REFUSED, "reason" => reason).increment(1);
    }

    pub(crate) fn closed(code: CloseCode) {
        counter!(names::CLOSES, "code" => code.code().to_string()).increment(1);
    }
}
