//! Server settings and their defaults. Defaults match the reference where it has one.

use std::time::Duration;

use crate::limits::Rate;

/// Every tunable of a [`crate::Server`]. Build one through [`crate::Server::builder`]; `Config::default()` gives
/// the documented defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// WebSocket path. Default `/ws`.
    pub path: String,
    /// Rooms every client joins after authenticating, those its identity's room patterns allow.
    /// Default `["ws-default", "ws-notification"]`.
    pub default_rooms: Vec<String>,
    /// Time allowed to send `authenticate` after connecting; while authentication (and the handshake) runs, the
    /// window is three times this. Default 5 s.
    pub auth_timeout: Duration,
    /// How often each authenticated client is pinged (with `send_pings`); every connection keeps its own timer.
    /// Default 30 s.
    pub heartbeat_interval: Duration,
    /// An authenticated client silent for longer than this is closed 4002. Default 90 s.
    pub heartbeat_timeout: Duration,
    /// Most sealing operations in flight across all connections; outbound-transformer calls in flight are bounded
    /// by the same number, apart from them (see [`crate::ServerBuilder::outbound_transformer`]). Default 10.
    pub encrypted_batch_limit: usize,
    /// Refuse sessions that do not complete an encryption handshake (close 4004). Default `true`: give the
    /// builder static keys (wsenc/1) or a custom handshake, or turn this off explicitly for plaintext sessions.
    pub require_encryption: bool,
    /// wsenc/1 records per direction and epoch before a key update; past it the peer is closed 4006. Default 2^20,
    /// which is also the maximum (lower it only for tests).
    pub max_records_per_epoch: u64,
    /// Send wsenc/1 group records (§11: a room message sealed once, a small header per recipient; §11.4 batches)
    /// to clients that advertise them. Off, every room message is a per-recipient record and `connected` never
    /// carries `roomKeys`. Default `true`.
    pub room_keys: bool,
    /// Largest inbound message after authentication, in bytes; larger closes 1009. Default 128 KiB.
    pub max_payload_length: usize,
    /// Largest inbound message before authentication, in bytes; larger closes 1009. Default 8 KiB.
    pub max_preauth_payload_length: usize,
    /// Messages queued per connection before it is closed 4007 as a slow consumer. Default 1,024.
    pub outbound_queue: usize,
    /// Send a WebSocket ping to each authenticated client every `heartbeat_interval`. Default `true`.
    pub send_pings: bool,
    /// Let authenticated clients `publish` to rooms they joined. Default `false`.
    pub allow_client_publish: bool,
    /// Deliver a client's own `publish` back to it. Default `false` (the reference's `publishToSelf`).
    pub publish_to_self: bool,
    /// Most rooms one client may be in (own-id and default rooms included). Default 256.
    pub max_rooms_per_client: usize,
    /// How long [`crate::Server::shutdown`] waits for connections to close. Default 10 s.
    pub shutdown_timeout: Duration,
    /// Open connections on this instance; more are refused with HTTP 503. Served by [`crate::Server::serve`],
    /// every accepted socket counts, upgraded or not; under `axum::serve`, only upgraded ones. Default 100,000.
    pub max_connections: usize,
    /// Open connections per client IP, counted like `max_connections`; more are refused with HTTP 429.
    /// Default 10,000 (needs peer addresses: [`crate::Server::serve`] has them; with `axum::serve`, serve with
    /// `into_make_service_with_connect_info::<SocketAddr>()`).
    pub max_connections_per_ip: usize,
    /// New connections per client IP (accepted sockets under [`crate::Server::serve`], upgrades under
    /// `axum::serve`); faster is refused with HTTP 429. Default 1,000/s, bursts of 2,000.
    pub connection_rate_per_ip: Rate,
    /// Time a socket has to send a complete HTTP request head, from its start or, on a kept-alive connection,
    /// from the previous response; later it is closed. Also bounds the upgrade's completion. Applied by
    /// [`crate::Server::serve`] (and to the upgrade under any server). Default 10 s.
    pub request_head_timeout: Duration,
    /// Inbound messages per connection; faster closes 4008. Default 200/s, bursts of 400.
    pub message_rate: Rate,
    /// `join` messages (and `presence` queries) per connection; faster closes 4008. Default 20/s, bursts of 50.
    pub join_rate: Rate,
    /// Authenticator calls (`authenticate` and `refresh`; with the connect proxy, requests to its backend) running
    /// at once. An `authenticate` waits up to `handshake_wait` for a slot, then is closed 1013; a `refresh` gets
    /// `Authentication error`. Apart from `max_concurrent_handshakes`, so that a slow backend never holds up the
    /// handshakes. Default 1,024.
    pub max_concurrent_authentications: usize,
    /// Encryption handshakes (the elliptic-curve work after the authenticator accepted) running at once; a
    /// connection waits up to `handshake_wait` for a slot, then is closed 1013. Default 1,024.
    pub max_concurrent_handshakes: usize,
    /// How long a connection waits for an authentication or a handshake slot. Default 2 s.
    pub handshake_wait: Duration,
    /// Sessions one user may have on this instance; more are closed 1008 after authentication. Default 100.
    pub max_sessions_per_user: usize,
    /// Browser `Origin`s allowed to connect (exact `scheme://host[:port]`); others get HTTP 403 before the
    /// upgrade. Empty (the default) allows every origin, and requests without `Origin` (non-browser clients)
    /// are always allowed.
    pub allowed_origins: Vec<String>,
    /// Most bytes read from a socket per call (larger values read 16 KiB at a time). Reads land in a buffer on the
    /// stack and only an incomplete frame is kept between reads, so this costs no memory per connection.
    /// Default 16 KiB.
    pub read_buffer_size: usize,
    /// Most message bytes queued for one client and not yet taken by its writer; beyond it the client is closed
    /// 4007 as a slow consumer, like a full `outbound_queue`. Default 1 MiB.
    pub max_write_buffer_size: usize,
    /// Rooms whose messages are kept for recovery, as room patterns (exact names, or `prefix*` as in the `rooms`
    /// claim). Messages delivered to these rooms carry `room`, `offset` and `epoch`. Empty (the default): no
    /// history.
    pub history_rooms: Vec<String>,
    /// Messages kept per history room (at most [`MAX_HISTORY_SIZE`]). Default 100.
    pub history_size: usize,
    /// How long a history room keeps a message, and how long a publish id is remembered for idempotency.
    /// Default 300 s.
    pub history_ttl: Duration,
    /// Rooms that keep presence, as room patterns (exact names, or `prefix*`): their members may ask who is in
    /// them (`presence`) and, with `presence_events`, are told who joins and leaves. Empty (the default): no
    /// presence.
    pub presence_rooms: Vec<String>,
    /// Send `member_joined` / `member_left` to the members of presence rooms, while the room has at most
    /// `presence_max_members` clients (larger rooms get no events: see docs/presence.md). Default `true`.
    pub presence_events: bool,
    /// Most members listed in a presence answer (the counts stay exact; `truncated` says the list is cut), and
    /// the largest room that gets join and leave events. At most [`MAX_PRESENCE_MEMBERS`]. Default 1,000.
    pub presence_max_members: usize,
}

/// Largest `presence_max_members`.
pub const MAX_PRESENCE_MEMBERS: usize = 100_000;

/// Largest `history_size`: the number of messages one room may keep.
pub const MAX_HISTORY_SIZE: usize = 100_000;

impl Default for Config {
    fn default() -> Self {
        Self {
            path: "/ws".to_owned(),
            default_rooms: vec!["ws-default".to_owned(), "ws-notification".to_owned()],
            auth_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(90),
            encrypted_batch_limit: 10,
            require_encryption: true,
            max_records_per_epoch: crate::crypto::MAX_RECORDS_PER_EPOCH,
            room_keys: true,
            max_payload_length: 128 * 1024,
            max_preauth_payload_length: 8 * 1024,
            outbound_queue: 1024,
            send_pings: true,
            allow_client_publish: false,
            publish_to_self: false,
            max_rooms_per_client: 256,
            shutdown_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            max_connections_per_ip: 10_000,
            connection_rate_per_ip: Rate::new(1_000.0, 2_000.0),
            request_head_timeout: Duration::from_secs(10),
            message_rate: Rate::new(200.0, 400.0),
            join_rate: Rate::new(20.0, 50.0),
            max_concurrent_authentications: 1_024,
            max_concurrent_handshakes: 1_024,
            handshake_wait: Duration::from_secs(2),
            max_sessions_per_user: 100,
            allowed_origins: Vec::new(),
            read_buffer_size: 16 * 1024,
            max_write_buffer_size: 1024 * 1024,
            history_rooms: Vec::new(),
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            presence_rooms: Vec::new(),
            presence_events: true,
            presence_max_members: 1_000,
        }
    }
}

/// A setting that cannot work, reported by [`crate::ServerBuilder::build`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `require_encryption` is on but nothing can encrypt.
    #[error("require_encryption is on (the default) but nothing can encrypt: give ServerBuilder::static_keys (wsenc/1) or ServerBuilder::handshake, or call require_encryption(false) for plaintext sessions")]
    EncryptionWithoutHandshake,
    /// The path does not start with `/`.
    #[error("path {0:?} must start with '/'")]
    BadPath(String),
    /// A limit is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The pre-auth limit exceeds the post-auth limit.
    #[error("max_preauth_payload_length must not exceed max_payload_length")]
    PreauthLimit,
    /// `max_records_per_epoch` is outside 2..=2^20.
    #[error("max_records_per_epoch must be between 2 and 2^20 (1048576)")]
    EpochLimit,
    /// No authenticator was given.
    #[error("an authenticator is required: add one with ServerBuilder::authenticator")]
    NoAuthenticator,
    /// A rate or its burst is negative, NaN or infinite.
    #[error("{0}: the rate and its burst must be finite numbers >= 0 (a rate of 0 disables the limit)")]
    BadRate(&'static str),
    /// `history_size` is over [`MAX_HISTORY_SIZE`].
    #[error("history_size must be at most {MAX_HISTORY_SIZE}")]
    HistorySize,
    /// History rooms are configured but the bus has no history store (only [`crate::LocalBus`] and
    /// [`crate::bus::RedisBus`] have one).
    #[error("history_rooms is set but this bus keeps no history: use LocalBus or RedisBus")]
    HistoryUnsupported,
    /// `presence_max_members` is over [`MAX_PRESENCE_MEMBERS`].
    #[error("presence_max_members must be at most {MAX_PRESENCE_MEMBERS}")]
    PresenceMaxMembers,
    /// Presence rooms are configured but the bus keeps no presence (only [`crate::LocalBus`] and
    /// [`crate::bus::RedisBus`] do).
    #[error("presence_rooms is set but this bus keeps no presence: use LocalBus or RedisBus")]
    PresenceUnsupported,
    /// `build` was called outside a Tokio runtime.
    #[error("ServerBuilder::build must be called inside a Tokio runtime")]
    NoRuntime,
}

impl Config {
    /// Checks ranges and combinations (paths, zero limits and durations, the epoch and payload limits, rates,
    /// buffer sizes): the check [`crate::ServerBuilder::build`] makes, for code that validates settings before
    /// building a server (`sealcast-server`'s config file). Never returns the variants that concern the builder
    /// itself ([`ConfigError::EncryptionWithoutHandshake`], [`ConfigError::NoAuthenticator`],
    /// [`ConfigError::NoRuntime`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.path.starts_with('/') {
            return Err(ConfigError::BadPath(self.path.clone()));
        }
        for (name, v) in [
            ("encrypted_batch_limit", self.encrypted_batch_limit),
            ("max_payload_length", self.max_payload_length),
            ("max_preauth_payload_length", self.max_preauth_payload_length),
            ("outbound_queue", self.outbound_queue),
            ("max_rooms_per_client", self.max_rooms_per_client),
            ("read_buffer_size", self.read_buffer_size),
            ("max_write_buffer_size", self.max_write_buffer_size),
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_concurrent_authentications", self.max_concurrent_authentications),
            ("max_concurrent_handshakes", self.max_concurrent_handshakes),
            ("max_sessions_per_user", self.max_sessions_per_user),
            ("history_size", self.history_size),
            ("presence_max_members", self.presence_max_members),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, d) in [
            ("auth_timeout", self.auth_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("heartbeat_timeout", self.heartbeat_timeout),
            ("request_head_timeout", self.request_head_timeout),
            ("history_ttl", self.history_ttl),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.presence_max_members > MAX_PRESENCE_MEMBERS {
            return Err(ConfigError::PresenceMaxMembers);
        }
        if self.history_size > MAX_HISTORY_SIZE {
            return Err(ConfigError::HistorySize);
        }
        if self.max_records_per_epoch < 2 || self.max_records_per_epoch > crate::crypto::MAX_RECORDS_PER_EPOCH {
            return Err(ConfigError::EpochLimit);
        }
        if self.max_preauth_payload_length > self.max_payload_length {
            return Err(ConfigError::PreauthLimit);
        }
        for (name, rate) in [
            ("connection_rate_per_ip", self.connection_rate_per_ip),
            ("message_rate", self.message_rate),
            ("join_rate", self.join_rate),
        ] {
            // A NaN rate would refuse everything silently; negative ones read as "unlimited" by accident.
            let usable = |v: f64| v.is_finite() && v >= 0.0;
            if !usable(rate.per_second) || !usable(rate.burst) {
                return Err(ConfigError::BadRate(name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Each field's doc comment, from this file's source.
    fn field_docs() -> Vec<(String, String)> {
        let src = include_str!("config.rs");
        let body = src
            .split("pub struct Config {")
            .nth(1)
            .unwrap()
            .split("\n}\n")
            .next()
            .unwrap();
        let mut out = Vec::new();
        let mut doc = String::new();
        for line in body.lines().map(str::trim) {
            if let Some(text) = line.strip_prefix("///") {
                doc.push_str(text);
                doc.push(' ');
            } else if let Some(field) = line.strip_prefix("pub ") {
                let name = field.split(':').next().unwrap().to_owned();
                out.push((name, std::mem::take(&mut doc)));
            }
        }
        out
    }

    fn thousands(n: u64) -> String {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    }

    fn bytes(n: usize) -> String {
        match n {
            n if n % (1024 * 1024) == 0 => format!("{} MiB", n / (1024 * 1024)),
            n if n % 1024 == 0 => format!("{} KiB", n / 1024),
            n => thousands(n as u64),
        }
    }

    fn secs(d: Duration) -> String {
        format!("{} s", d.as_secs())
    }

    fn rate(r: Rate) -> String {
        format!(
            "{}/s, bursts of {}",
            thousands(r.per_second as u64),
            thousands(r.burst as u64)
        )
    }

    fn flag(b: bool) -> String {
        format!("`{b}`")
    }

    fn list(v: &[String]) -> String {
        if v.is_empty() {
            return "Empty (the default)".to_owned();
        }
        let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
        format!("Default `[{}]`", items.join(", "))
    }

    /// The builder's setters repeat each default in short: `(default X)`, booleans as on/off.
    fn check_builder_docs(expected: &[(&str, String)]) {
        let src = include_str!("server.rs");
        let setters = src
            .split("    setters! {")
            .nth(1)
            .unwrap()
            .split("\n    }\n")
            .next()
            .unwrap();
        let mut doc = String::new();
        let mut checked = 0;
        for line in setters.lines().map(str::trim) {
            if let Some(text) = line.strip_prefix("///") {
                doc.push_str(text);
            } else if let Some((name, _)) = line.split_once(':') {
                let (_, value) = expected.iter().find(|(n, _)| *n == name).unwrap();
                let short = match value.as_str() {
                    "`true`" => "on".to_owned(),
                    "`false`" => "off".to_owned(),
                    "Empty (the default)" => ": any".to_owned(),
                    v => v
                        .trim_start_matches("Default ")
                        .replace("`[", "")
                        .replace("]`", "")
                        .replace('"', "`"),
                };
                let wanted = format!("default {}", short.trim_start_matches(' '));
                let wanted = wanted.replace("default : any", "default: any");
                // An empty pattern list means "every origin" for origins but "no room" for history.
                let wanted = if name == "history_rooms" || name == "presence_rooms" {
                    "default: none".to_owned()
                } else {
                    wanted
                };
                assert!(
                    doc.contains(&wanted),
                    "ServerBuilder::{name}: its doc should say {wanted:?}: {doc}"
                );
                doc.clear();
                checked += 1;
            }
        }
        assert_eq!(checked, expected.len(), "every setter is checked");
    }

    #[test]
    fn every_documented_default_is_the_real_one() {
        let d = Config::default();
        let count = |n: usize| thousands(n as u64);
        let expected: Vec<(&str, String)> = vec![
            ("path", format!("`{}`", d.path)),
            ("default_rooms", list(&d.default_rooms)),
            ("auth_timeout", secs(d.auth_timeout)),
            ("heartbeat_interval", secs(d.heartbeat_interval)),
            ("heartbeat_timeout", secs(d.heartbeat_timeout)),
            ("encrypted_batch_limit", count(d.encrypted_batch_limit)),
            ("require_encryption", flag(d.require_encryption)),
            (
                "max_records_per_epoch",
                format!("2^{}", d.max_records_per_epoch.ilog2()),
            ),
            ("room_keys", flag(d.room_keys)),
            ("max_payload_length", bytes(d.max_payload_length)),
            ("max_preauth_payload_length", bytes(d.max_preauth_payload_length)),
            ("outbound_queue", count(d.outbound_queue)),
            ("send_pings", flag(d.send_pings)),
            ("allow_client_publish", flag(d.allow_client_publish)),
            ("publish_to_self", flag(d.publish_to_self)),
            ("max_rooms_per_client", count(d.max_rooms_per_client)),
            ("shutdown_timeout", secs(d.shutdown_timeout)),
            ("max_connections", count(d.max_connections)),
            ("max_connections_per_ip", count(d.max_connections_per_ip)),
            ("connection_rate_per_ip", rate(d.connection_rate_per_ip)),
            ("request_head_timeout", secs(d.request_head_timeout)),
            ("message_rate", rate(d.message_rate)),
            ("join_rate", rate(d.join_rate)),
            (
                "max_concurrent_authentications",
                count(d.max_concurrent_authentications),
            ),
            ("max_concurrent_handshakes", count(d.max_concurrent_handshakes)),
            ("handshake_wait", secs(d.handshake_wait)),
            ("max_sessions_per_user", count(d.max_sessions_per_user)),
            ("allowed_origins", list(&d.allowed_origins)),
            ("read_buffer_size", bytes(d.read_buffer_size)),
            ("max_write_buffer_size", bytes(d.max_write_buffer_size)),
            ("history_rooms", list(&d.history_rooms)),
            ("history_size", count(d.history_size)),
            ("history_ttl", secs(d.history_ttl)),
            ("presence_rooms", list(&d.presence_rooms)),
            ("presence_events", flag(d.presence_events)),
            ("presence_max_members", count(d.presence_max_members)),
        ];
        check_builder_docs(&expected);
        let docs = field_docs();
        assert_eq!(
            docs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            expected.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "every field is checked"
        );
        for ((name, doc), (_, value)) in docs.iter().zip(&expected) {
            let wanted = if value.starts_with("Default") || value.starts_with("Empty") {
                value.clone()
            } else {
                format!("Default {value}")
            };
            assert!(doc.contains(&wanted), "{name}: its doc should say {wanted:?}: {doc}");
        }
    }
}
