//! Metric names, their help texts and the histograms' buckets (the `metrics` facade). Handles cost nothing
//! until the application installs a recorder (the binary installs the Prometheus exporter and serves it on the
//! admin listener). What is counted, and where, is `telemetry`'s business.
//!
//! Every series exists from the moment a server is built (counters at zero, histograms empty), so dashboards
//! and alerts see it before the first event. Latencies are histograms with fixed buckets
//! ([`HISTOGRAM_BUCKETS`]), which add up across instances; a Prometheus exporter left at its default renders
//! them as summaries, which do not. Configure it like this:
//!
//! ```ignore
//! let mut prometheus = metrics_exporter_prometheus::PrometheusBuilder::new();
//! for (name, buckets) in sealcast::metrics::HISTOGRAM_BUCKETS {
//!     prometheus = prometheus.set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)?;
//! }
//! let handle = prometheus.install_recorder()?; // before building the server and the bus
//! ```

/// Declares every metric once: its constant in [`names`] (documented with its help text) and its description
/// for the recorder (Prometheus' `# HELP`), so the two cannot drift apart.
macro_rules! metrics {
    ($($kind:ident $name:ident = $value:literal, $help:literal;)*) => {
        /// Metric names, for dashboards and tests.
        pub mod names {
            $(
                #[doc = $help]
                pub const $name: &str = $value;
            )*
        }

        /// Gives the installed recorder every metric's help text (a no-op without one).
        pub(crate) fn describe() {
            $( metrics!(@describe $kind, $value, $help); )*
        }
    };
    (@describe counter, $value:literal, $help:literal) => { ::metrics::describe_counter!($value, $help) };
    (@describe gauge, $value:literal, $help:literal) => { ::metrics::describe_gauge!($value, $help) };
    (@describe histogram, $value:literal, $help:literal) => {
        ::metrics::describe_histogram!($value, ::metrics::Unit::Seconds, $help)
    };
}

metrics! {
    gauge BUILD_INFO = "sealcast_build_info",
        "Always 1; label `version`: the sealcast library's version.";
    gauge CONNECTIONS = "sealcast_connections",
        "Open WebSocket connections.";
    gauge SESSIONS = "sealcast_sessions",
        "Authenticated connections (label `encrypted`: true, false).";
    gauge ROOMS = "sealcast_rooms",
        "Rooms with at least one member on this instance (clients' own-id rooms not counted).";
    gauge USERS = "sealcast_users",
        "Users with at least one session on this instance.";
    counter REFUSED = "sealcast_connections_refused_total",
        "Connections refused before the upgrade (label `reason`: origin, global, per_ip, rate, shutdown).";
    counter AUTHENTICATIONS = "sealcast_authentications_total",
        "Authentications (label `outcome`: accepted, rejected, error, timeout).";
    counter HANDSHAKES = "sealcast_handshakes_total",
        "Handshakes (label `outcome`: encrypted, plaintext, rejected, busy).";
    histogram HANDSHAKE_SECONDS = "sealcast_handshake_seconds",
        "Time from `authenticate` to `connected`, in seconds.";
    counter RECORDS = "sealcast_records_total",
        "wsenc/1 records opened (inbound) and sealed (outbound) (label `direction`: in, out).";
    counter KEY_UPDATES = "sealcast_key_updates_total",
        "Key updates received from clients.";
    counter CLOSES = "sealcast_closes_total",
        "Connections closed by the server (label `code`).";
    counter QUEUE_DROPS = "sealcast_outbound_dropped_total",
        "Messages not queued because the recipient's queue was full or closed.";
    histogram FANOUT_SECONDS = "sealcast_fanout_seconds",
        "Time to queue one fan-out to every local recipient, in seconds.";
    counter BUS_RECEIVED = "sealcast_bus_received_total",
        "Bus envelopes delivered locally or refused (label `result`: delivered, dropped).";
    counter BUS_PUBLISHED = "sealcast_bus_published_total",
        "Envelopes handed to the bus.";
    counter REDIS_PUBLISHED = "sealcast_redis_published_total",
        "Envelopes the Redis bus published.";
    counter REDIS_PUBLISH_DROPPED = "sealcast_redis_publish_dropped_total",
        "Envelopes the Redis bus did not publish (queue full, Redis unreachable, publish failed).";
    counter REDIS_RECEIVED = "sealcast_redis_received_total",
        "Pub/sub messages received from Redis.";
    counter REDIS_REJECTED = "sealcast_redis_rejected_total",
        "Messages received from Redis and refused (malformed, forged, wrong channel).";
    counter REDIS_RECONNECTS = "sealcast_redis_reconnects_total",
        "Redis subscriber reconnections after a fault.";
    gauge REDIS_SUBSCRIPTIONS = "sealcast_redis_subscriptions",
        "Redis channels currently subscribed.";
    counter HOOK_FAILURES = "sealcast_hook_failures_total",
        "Hook calls that returned an error or panicked (label `hook`).";
    counter SLOW_CONSUMER_CLOSES = "sealcast_slow_consumer_closes_total",
        "Connections closed 4007 because their outbound queue overflowed.";
    counter WSENC_HANDSHAKES = "sealcast_wsenc_handshakes_total",
        "wsenc/1 handshakes attempted (elliptic-curve work done).";
    counter ROOM_KEY_ROTATIONS = "sealcast_room_key_rotations_total",
        "Room keys made (wsenc/1 group records): a room's first group message, and its next after a membership change or a spent key.";
    counter GROUP_RECORDS = "sealcast_group_records_total",
        "wsenc/1 group records sent (label `form`: single, batched); each is also one outbound record.";
}

/// Bucket upper bounds, in seconds, for each histogram: give them to the Prometheus exporter (see the module's
/// documentation). The handshake spans a local signature check (~0.1 ms) to a remote connect proxy (seconds);
/// a fan-out queues one frame per local recipient (microseconds to milliseconds for large rooms).
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[
    (
        names::HANDSHAKE_SECONDS,
        &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ],
    ),
    (
        names::FANOUT_SECONDS,
        &[
            0.000_01, 0.000_025, 0.000_05, 0.0001, 0.000_25, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
        ],
    ),
];
