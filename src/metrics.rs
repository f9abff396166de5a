//! Metric names (the `metrics` facade). Handles cost nothing until the application installs a recorder (the
//! binary installs the Prometheus exporter and serves it on the admin listener). What is counted, and where, is
//! `telemetry`'s business.

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
    /// Envelopes the Redis bus published.
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
    /// Hook calls that returned an error or panicked (label `hook`).
    pub const HOOK_FAILURES: &str = "sealcast_hook_failures_total";
    /// Connections closed 4007 because their outbound queue overflowed.
    pub const SLOW_CONSUMER_CLOSES: &str = "sealcast_slow_consumer_closes_total";
    /// wsenc/1 handshakes attempted (elliptic-curve work done).
    pub const WSENC_HANDSHAKES: &str = "sealcast_wsenc_handshakes_total";
    /// HTTP API requests (label `endpoint`: publish, disconnect; label `status`).
    pub const API_REQUESTS: &str = "sealcast_api_requests_total";
}
