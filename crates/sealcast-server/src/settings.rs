//! The settings of `sealcast serve`: the config file format, its validation, and layering with environment
//! variables and flags.
//!
//! Pure code (text in, validated value out) so the parser can be fuzzed. Every setting is declared once, in the
//! `settings!` table below: its section, key, type, default, environment variable and meaning. The table
//! generates the section structs (deserialised with unknown keys refused) and [`KEYS`], from which the binary
//! builds its flags (`--` + the variable name without `SEALCAST_`, lowercased, `_` → `-`), the sample file
//! ([`Settings::sample_toml`]) and `config check`'s output ([`Effective::render`]).
//!
//! Precedence is flags > environment > file > defaults: [`Settings::load`] takes the file text and the values
//! that the command line resolved (clap already ranks a flag over its variable). Server defaults come from
//! [`Config::default`]; ranges are checked by [`Config::validate`] (the same check a programmatic
//! [`sealcast::ServerBuilder`] gets) plus the checks that only concern the binary (exposure beyond loopback, Redis,
//! logging), all in [`Settings::validate`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use sealcast::auth::JwtAlgorithm;
use sealcast::bus::{BusMode, RedisEndpoint};
use sealcast::{Config, ConfigError, Rate};

/// The library defaults, the one source of the server settings' defaults.
fn lib() -> Config {
    Config::default()
}

/// Declares every setting once; see the module documentation.
macro_rules! settings {
    ($(
        $(#[doc = $sdoc:literal])*
        [$section:ident] $Section:ident {
            $(
                $(#[doc = $doc:literal])*
                $name:ident: $ty:ty = $default:expr, $env:literal;
            )*
        }
    )*) => {
        /// Every setting of `sealcast serve`, by config-file section. `Settings::default()` is the documented
        /// defaults; see the module documentation for how the file, the environment and flags combine.
        #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Settings {
            $( $(#[doc = $sdoc])* pub $section: $Section, )*
        }

        $(
            $(#[doc = $sdoc])*
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            #[serde(default, deny_unknown_fields)]
            pub struct $Section {
                $( $(#[doc = $doc])* pub $name: $ty, )*
            }

            impl Default for $Section {
                fn default() -> Self {
                    Self { $( $name: $default, )* }
                }
            }
        )*

        /// The config-file sections with their descriptions, in file order.
        pub static SECTIONS: &[(&str, &str)] = &[ $( (stringify!($section), concat!($($sdoc),*)), )* ];

        /// Every setting, in file order.
        pub static KEYS: &[Key] = &[ $( $( Key {
            section: stringify!($section),
            name: stringify!($name),
            id: concat!(stringify!($section), ".", stringify!($name)),
            env: $env,
            doc: concat!($($doc),*),
            expected: <$ty as SettingValue>::EXPECTED,
            secret: <$ty as SettingValue>::SECRET,
            hide_env: <$ty as SettingValue>::HIDE_ENV,
            switch: <$ty as SettingValue>::SWITCH,
            check: check_value::<$ty>,
            from_text: <$ty as SettingValue>::from_text,
        }, )* )* ];
    };
}

settings! {
    /// The public listener and connection behaviour.
    [server] ServerSettings {
        /// Address to listen on. Beyond loopback it needs real authentication (`auth.jwt_secret`, `auth.jwt_public_key_file`, `auth.jwks_url` or `auth.proxy_url`) and `encryption.server_key_files`.
        bind: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)), "SEALCAST_BIND";
        /// WebSocket path.
        path: String = lib().path, "SEALCAST_PATH";
        /// Browser Origins allowed to connect (exact `scheme://host[:port]`; others get HTTP 403); empty allows every origin. Requests without Origin (non-browser clients) are always allowed.
        allowed_origins: Vec<String> = lib().allowed_origins, "SEALCAST_ALLOWED_ORIGINS";
        /// Rooms every client joins after authenticating (those its token's `rooms` claim allows, if it has one).
        default_rooms: Vec<String> = lib().default_rooms, "SEALCAST_DEFAULT_ROOMS";
        /// Let clients publish to rooms they joined.
        allow_client_publish: bool = lib().allow_client_publish, "SEALCAST_ALLOW_CLIENT_PUBLISH";
        /// Deliver a client's own publish back to it.
        publish_to_self: bool = lib().publish_to_self, "SEALCAST_PUBLISH_TO_SELF";
        /// Time to send `authenticate` after connecting, in milliseconds (x3 while authenticating); later closes 4001.
        auth_timeout_ms: u64 = millis(lib().auth_timeout), "SEALCAST_AUTH_TIMEOUT_MS";
        /// How often each authenticated client is pinged, in milliseconds (each connection keeps its own timer).
        heartbeat_interval_ms: u64 = millis(lib().heartbeat_interval), "SEALCAST_HEARTBEAT_INTERVAL_MS";
        /// Silence after which an authenticated client is closed 4002, in milliseconds.
        heartbeat_timeout_ms: u64 = millis(lib().heartbeat_timeout), "SEALCAST_HEARTBEAT_TIMEOUT_MS";
        /// Send a WebSocket ping to each authenticated client every `heartbeat_interval_ms`.
        send_pings: bool = lib().send_pings, "SEALCAST_SEND_PINGS";
        /// Messages queued per connection before it is closed 4007 as a slow consumer.
        outbound_queue: usize = lib().outbound_queue, "SEALCAST_OUTBOUND_QUEUE";
        /// Bound on the graceful shutdown, in milliseconds.
        shutdown_timeout_ms: u64 = millis(lib().shutdown_timeout), "SEALCAST_SHUTDOWN_TIMEOUT_MS";
    }
    /// Client authentication.
    [auth] AuthSettings {
        /// HS256 secret for client tokens. Unset on loopback (and no other mode below): a random one is generated and printed (development mode).
        jwt_secret: Option<Secret> = None, "SEALCAST_JWT_SECRET";
        /// The only JWT algorithm accepted (the token's `alg` header never chooses): HS256 with `jwt_secret`, RS256 or ES256 with `jwt_public_key_file` or `jwks_url`.
        jwt_algorithm: JwtAlgorithm = JwtAlgorithm::Hs256, "SEALCAST_JWT_ALGORITHM";
        /// PEM public key (`-----BEGIN PUBLIC KEY-----`) verifying RS256/ES256 tokens; re-read on SIGHUP.
        jwt_public_key_file: Option<PathBuf> = None, "SEALCAST_JWT_PUBLIC_KEY_FILE";
        /// JWKS: verify RS256/ES256 tokens (`jwt_algorithm`) with the keys published at this https:// or http:// URL, chosen by the token's `kid`; fetched at startup (the server starts without it, refusing tokens until it arrives), then refreshed.
        jwks_url: Option<CredentialUrl> = None, "SEALCAST_JWKS_URL";
        /// PEM file of the CA certificate(s) that alone are trusted for an https `jwks_url`. Unset: the system's trusted roots.
        jwks_ca_file: Option<PathBuf> = None, "SEALCAST_JWKS_CA_FILE";
        /// Seconds between scheduled JWKS refreshes (1 to 86400); a token with an unknown `kid` also triggers one, at most every 30 s.
        jwks_refresh_secs: u64 = sealcast::auth::jwks::DEFAULT_REFRESH_INTERVAL.as_secs(), "SEALCAST_JWKS_REFRESH_SECS";
        /// Connect proxy: POST each `authenticate` payload to this https:// or http:// URL instead of verifying a JWT (the contract: docs/authentication.md, "Connect proxy contract").
        proxy_url: Option<CredentialUrl> = None, "SEALCAST_AUTH_PROXY_URL";
        /// PEM file of the CA certificate(s) that alone are trusted for an https `proxy_url`. Unset: the system's trusted roots.
        proxy_ca_file: Option<PathBuf> = None, "SEALCAST_AUTH_PROXY_CA_FILE";
        /// Bound on one connect-proxy authentication, retries and TLS handshake included, in milliseconds.
        proxy_timeout_ms: u64 = 3_000, "SEALCAST_AUTH_PROXY_TIMEOUT_MS";
    }
    /// wsenc/1 end-to-end encryption.
    [encryption] EncryptionSettings {
        /// Refuse sessions without an encryption handshake (close 4004).
        require_encryption: bool = lib().require_encryption, "SEALCAST_REQUIRE_ENCRYPTION";
        /// Static key files (PKCS#8 PEM from `sealcast keygen`): the current key first, then the next one during a rotation. Empty on loopback: an ephemeral key (development mode).
        server_key_files: Vec<PathBuf> = Vec::new(), "SEALCAST_SERVER_KEY_FILE";
        /// Records per direction and epoch before a key update (2 to 1048576).
        max_records_per_epoch: u64 = lib().max_records_per_epoch, "SEALCAST_MAX_RECORDS_PER_EPOCH";
        /// Group records (wsenc/1 §11, batched §11.4) for clients that advertise `roomKeys`: a room message sealed once, a small header per recipient. Off: every room message is sealed per recipient.
        room_keys: bool = lib().room_keys, "SEALCAST_ROOM_KEYS";
        /// Sealing operations in flight across all connections.
        encrypted_batch_limit: usize = lib().encrypted_batch_limit, "SEALCAST_ENCRYPTED_BATCH_LIMIT";
    }
    /// Abuse limits. A rate of 0 disables that limit.
    [limits] LimitSettings {
        /// Largest inbound message after authentication, in bytes; larger closes 1009.
        max_payload_length: usize = lib().max_payload_length, "SEALCAST_MAX_PAYLOAD_LENGTH";
        /// Largest inbound message before authentication, in bytes; larger closes 1009.
        max_preauth_payload_length: usize = lib().max_preauth_payload_length, "SEALCAST_MAX_PREAUTH_PAYLOAD_LENGTH";
        /// Rooms one client may be in (its own-id and default rooms included).
        max_rooms_per_client: usize = lib().max_rooms_per_client, "SEALCAST_MAX_ROOMS_PER_CLIENT";
        /// Open connections on this instance, upgraded or not; more are refused with HTTP 503.
        max_connections: usize = lib().max_connections, "SEALCAST_MAX_CONNECTIONS";
        /// Open connections per client IP, upgraded or not; more are refused with HTTP 429.
        max_connections_per_ip: usize = lib().max_connections_per_ip, "SEALCAST_MAX_CONNECTIONS_PER_IP";
        /// New connections per second per client IP; faster is refused with HTTP 429.
        connection_rate_per_ip: f64 = lib().connection_rate_per_ip.per_second, "SEALCAST_CONNECTION_RATE_PER_IP";
        /// Burst allowed above `connection_rate_per_ip`.
        connection_rate_per_ip_burst: f64 = lib().connection_rate_per_ip.burst, "SEALCAST_CONNECTION_RATE_PER_IP_BURST";
        /// Time a socket has to send a complete HTTP request head (from its start, or from the previous response on a kept-alive connection), and to finish the upgrade, in milliseconds; later it is closed. Sockets count against `max_connections` and `max_connections_per_ip` from the moment they are accepted.
        request_head_timeout_ms: u64 = millis(lib().request_head_timeout), "SEALCAST_REQUEST_HEAD_TIMEOUT_MS";
        /// Inbound messages per second per connection; faster closes 4008.
        message_rate: f64 = lib().message_rate.per_second, "SEALCAST_MESSAGE_RATE";
        /// Burst allowed above `message_rate`.
        message_rate_burst: f64 = lib().message_rate.burst, "SEALCAST_MESSAGE_RATE_BURST";
        /// `join` messages (and `presence` queries) per second per connection; faster closes 4008.
        join_rate: f64 = lib().join_rate.per_second, "SEALCAST_JOIN_RATE";
        /// Burst allowed above `join_rate`.
        join_rate_burst: f64 = lib().join_rate.burst, "SEALCAST_JOIN_RATE_BURST";
        /// Authenticator calls (JWT checks or connect-proxy requests) running at once, apart from the handshakes.
        max_concurrent_authentications: usize = lib().max_concurrent_authentications, "SEALCAST_MAX_CONCURRENT_AUTHENTICATIONS";
        /// Encryption handshakes running at once.
        max_concurrent_handshakes: usize = lib().max_concurrent_handshakes, "SEALCAST_MAX_CONCURRENT_HANDSHAKES";
        /// How long a connection waits for an authentication or a handshake slot before it is closed 1013, in milliseconds.
        handshake_wait_ms: u64 = millis(lib().handshake_wait), "SEALCAST_HANDSHAKE_WAIT_MS";
        /// Sessions one user may have on this instance; more are closed 1008.
        max_sessions_per_user: usize = lib().max_sessions_per_user, "SEALCAST_MAX_SESSIONS_PER_USER";
        /// Most bytes read from a socket per call, at most 16384 (a stack buffer: nothing is held between reads).
        read_buffer_size: usize = lib().read_buffer_size, "SEALCAST_READ_BUFFER_SIZE";
        /// Most message bytes queued for one client and not yet written; beyond it the client is closed 4007.
        max_write_buffer_size: usize = lib().max_write_buffer_size, "SEALCAST_MAX_WRITE_BUFFER_SIZE";
    }
    /// Room history: recovery after a reconnect, offsets on messages, idempotent publishes.
    [history] HistorySettings {
        /// Rooms whose messages are kept (exact names or `prefix*` patterns, as in the `rooms` claim); their messages carry `room`, `offset` and `epoch`. Empty: no history.
        rooms: Vec<String> = lib().history_rooms, "SEALCAST_HISTORY_ROOMS";
        /// Messages kept per history room (at most 100000).
        size: usize = lib().history_size, "SEALCAST_HISTORY_SIZE";
        /// How long a history room keeps a message, and how long a publish id is remembered for idempotency, in milliseconds.
        ttl_ms: u64 = millis(lib().history_ttl), "SEALCAST_HISTORY_TTL_MS";
    }
    /// Presence: who is in a room, and join/leave events (docs/presence.md).
    [presence] PresenceSettings {
        /// Rooms that keep presence (exact names or `prefix*` patterns): members may ask who is there (`presence`) and hear `member_joined` / `member_left`. Empty: no presence.
        rooms: Vec<String> = lib().presence_rooms, "SEALCAST_PRESENCE_ROOMS";
        /// Send `member_joined` / `member_left` to a presence room's members while it has at most `max_members` clients.
        events: bool = lib().presence_events, "SEALCAST_PRESENCE_EVENTS";
        /// Most members listed in a presence answer (counts stay exact; at most 100000), and the largest room that gets join/leave events.
        max_members: usize = lib().presence_max_members, "SEALCAST_PRESENCE_MAX_MEMBERS";
    }
    /// The bus between instances. With neither `url` nor `cluster_nodes` the embedded bus is used (one instance).
    [redis] RedisSettings {
        /// One Redis server, e.g. `redis://127.0.0.1:6379`.
        url: Option<CredentialUrl> = None, "SEALCAST_REDIS_URL";
        /// Redis Cluster seed nodes, e.g. `["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]`.
        cluster_nodes: Vec<CredentialUrl> = Vec::new(), "SEALCAST_REDIS_CLUSTER_NODES";
        /// `classic` (PUBLISH, reference-compatible) or `sharded` (SPUBLISH, Redis Cluster >= 7). Unset: classic with `url`, sharded with `cluster_nodes`. Servers and emitters of a fleet must agree.
        bus_mode: Option<BusMode> = None, "SEALCAST_BUS_MODE";
        /// Shared secret signing bus envelopes (HMAC-SHA256); unsigned or forged ones are refused. Reference emitters cannot sign: leave unset in mixed fleets.
        bus_secret: Option<Secret> = None, "SEALCAST_BUS_SECRET";
    }
    /// The private admin listener.
    [admin] AdminSettings {
        /// Address of /livez, /healthz, /readyz and /metrics, or `off`. Keep it private.
        bind: AdminBind = AdminBind::At(SocketAddr::from(([127, 0, 0, 1], 9090))), "SEALCAST_ADMIN_BIND";
    }
    /// The HTTP API on the public listener.
    [api] ApiSettings {
        /// Bearer key enabling POST /api/publish and /api/disconnect. Unset: the API is off.
        api_key: Option<Secret> = None, "SEALCAST_API_KEY";
    }
    /// Logging.
    [log] LogSettings {
        /// Log filter: comma-separated `level` or `target=level` directives, e.g. `debug` or `sealcast=debug,info`.
        level: String = "info".to_owned(), "SEALCAST_LOG";
        /// `text` or `json` (one JSON object per line).
        format: LogFormat = LogFormat::Text, "SEALCAST_LOG_FORMAT";
    }
    /// The demo chat at /demo/ (not for production).
    [demo] DemoSettings {
        /// Serve the demo chat with an open token endpoint (implies client publish; loopback only unless `public`).
        enabled: bool = false, "SEALCAST_DEMO";
        /// Allow the demo beyond loopback (anyone reaching the server can then get a demo token).
        public: bool = false, "SEALCAST_DEMO_PUBLIC";
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One setting: where it lives in the file, its environment variable, what it means.
#[derive(Debug)]
pub struct Key {
    /// Config-file section, e.g. `limits`.
    pub section: &'static str,
    /// Key within the section, e.g. `max_connections`.
    pub name: &'static str,
    /// `section.name`, how errors and `config check` name it.
    pub id: &'static str,
    /// Environment variable, e.g. `SEALCAST_MAX_CONNECTIONS`.
    pub env: &'static str,
    /// What it means (one paragraph).
    pub doc: &'static str,
    /// What a valid value looks like, for error messages.
    pub expected: &'static str,
    /// Never printed: shown as `<redacted>`.
    pub secret: bool,
    /// Its environment variable's value is kept out of `--help` (a secret, or a URL that may carry one).
    pub hide_env: bool,
    /// A boolean: a bare flag (`--demo`) means `true`.
    pub switch: bool,
    check: fn(&toml::Value) -> Result<(), String>,
    from_text: fn(&str) -> Result<Option<toml::Value>, String>,
}

impl Key {
    /// The setting named `section.name`.
    pub fn find(id: &str) -> Option<&'static Key> {
        KEYS.iter().find(|k| k.id == id)
    }

    /// The command-line flag, e.g. `--max-connections` (derived from the environment variable).
    pub fn flag(&self) -> String {
        let bare = self.env.strip_prefix("SEALCAST_").unwrap_or(self.env);
        format!("--{}", bare.to_ascii_lowercase().replace('_', "-"))
    }

    /// The doc text, trimmed.
    pub fn help(&self) -> &'static str {
        self.doc.trim()
    }
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Nobody set it.
    Default,
    /// The config file.
    File,
    /// The key's environment variable.
    Env,
    /// The key's command-line flag.
    Flag,
}

/// A value set on the command line or in the environment, as text, e.g. `SEALCAST_MAX_CONNECTIONS=500`.
#[derive(Clone)]
pub struct Override {
    /// The setting.
    pub key: &'static Key,
    /// The text given (lists are comma separated; empty unsets an optional setting).
    pub raw: String,
    /// [`Source::Env`] or [`Source::Flag`].
    pub source: Source,
}

impl std::fmt::Debug for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let raw: &dyn std::fmt::Debug = if self.key.hide_env { &"<redacted>" } else { &self.raw };
        f.debug_struct("Override")
            .field("key", &self.key.id)
            .field("raw", raw)
            .field("source", &self.source)
            .finish()
    }
}

/// A config file or a value that cannot be used; the message names the key and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The file is not TOML.
    #[error("the config file is not valid TOML: {0}")]
    Syntax(String),
    /// A section the file format does not have.
    #[error("unknown section [{section}] in the config file; {fix}")]
    UnknownSection {
        /// The section as written.
        section: String,
        /// What to do instead.
        fix: String,
    },
    /// A section name used as a plain key (`server = 1`).
    #[error("`{0}` must be a section: write [{0}] on a line of its own and its keys below it")]
    NotASection(String),
    /// A key its section does not have.
    #[error("unknown key {key:?} in [{section}]; {fix}")]
    UnknownKey {
        /// The section.
        section: String,
        /// The key as written.
        key: String,
        /// What to do instead.
        fix: String,
    },
    /// A value of the wrong type or out of range.
    #[error("`{key}` {problem}{origin}")]
    Invalid {
        /// The setting, `section.name`.
        key: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
        /// Where the value came from (empty for a default), e.g. ` (set by SEALCAST_BIND)`.
        origin: String,
    },
}

impl SettingsError {
    fn invalid(id: &'static str, problem: String, source: Source) -> Self {
        let origin = match (source, Key::find(id)) {
            (Source::File, _) => " (set in the config file)".to_owned(),
            (Source::Env, Some(key)) => format!(" (set by {})", key.env),
            (Source::Flag, Some(key)) => format!(" (set by {})", key.flag()),
            _ => String::new(),
        };
        Self::Invalid {
            key: id,
            problem,
            origin,
        }
    }
}

/// Validated settings and where each value came from.
#[derive(Debug, Clone)]
pub struct Effective {
    /// The values.
    pub settings: Settings,
    sources: Vec<Source>,
}

impl Effective {
    /// Where `key`'s value came from.
    pub fn source(&self, key: &Key) -> Source {
        KEYS.iter()
            .position(|k| k.id == key.id)
            .and_then(|i| self.sources.get(i).copied())
            .unwrap_or(Source::Default)
    }

    /// The effective settings as TOML, secrets `<redacted>`, each value annotated with where it came from.
    pub fn render(&self) -> String {
        let mut out = String::from("# effective settings (flags > environment > config file > defaults)\n");
        let mut section = "";
        for (key, value) in self.settings.values() {
            if key.section != section {
                section = key.section;
                out.push_str(&format!("\n[{section}]\n"));
            }
            let from = match self.source(key) {
                Source::Default => "default".to_owned(),
                Source::File => "config file".to_owned(),
                Source::Env => format!("env {}", key.env),
                Source::Flag => format!("flag {}", key.flag()),
            };
            match value {
                Some(v) => out.push_str(&format!("{} = {v}  # {from}\n", key.name)),
                None => out.push_str(&format!("# {} is not set  # {from}\n", key.name)),
            }
        }
        out
    }
}

impl Settings {
    /// Parses and validates a config file: every key it sets over the defaults.
    pub fn from_toml_str(text: &str) -> Result<Self, SettingsError> {
        Self::load(text, &[]).map(|e| e.settings)
    }

    /// The file (`""` for none) with `overrides` from the environment and the command line on top, validated.
    pub fn load(file: &str, overrides: &[Override]) -> Result<Effective, SettingsError> {
        let mut table: toml::Table = file
            .parse()
            .map_err(|e: toml::de::Error| SettingsError::Syntax(e.to_string()))?;
        let mut sources = vec![Source::Default; KEYS.len()];
        check_known(&table)?;
        for (i, key) in KEYS.iter().enumerate() {
            if table
                .get(key.section)
                .and_then(toml::Value::as_table)
                .is_some_and(|s| s.contains_key(key.name))
            {
                if let Some(source) = sources.get_mut(i) {
                    *source = Source::File;
                }
            }
        }
        for o in overrides {
            let value = (o.key.from_text)(&o.raw).map_err(|p| SettingsError::invalid(o.key.id, p, o.source))?;
            let section = table
                .entry(o.key.section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(section) = section {
                match value {
                    Some(v) => section.insert(o.key.name.to_owned(), v),
                    None => section.remove(o.key.name),
                };
            }
            if let Some(i) = KEYS.iter().position(|k| k.id == o.key.id) {
                if let Some(source) = sources.get_mut(i) {
                    *source = o.source;
                }
            }
        }
        for (key, source) in KEYS.iter().zip(&sources) {
            if let Some(v) = table.get(key.section).and_then(|s| s.get(key.name)) {
                (key.check)(v).map_err(|p| SettingsError::invalid(key.id, p, *source))?;
            }
        }
        let settings: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| SettingsError::Syntax(e.message().to_owned()))?;
        let effective = Effective { settings, sources };
        effective.settings.validate().map_err(|(id, problem)| {
            let source = Key::find(id).map_or(Source::Default, |k| effective.source(k));
            SettingsError::invalid(id, problem, source)
        })?;
        Ok(effective)
    }

    /// Checks ranges and combinations: `Config::validate` for the server's settings, then the binary's own
    /// (Redis, logging, exposure beyond loopback). Returns the offending key and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.config().validate().map_err(config_problem)?;
        let problem = |id: &'static str, text: String| (id, text);
        for (id, secret) in [
            ("auth.jwt_secret", &self.auth.jwt_secret),
            ("redis.bus_secret", &self.redis.bus_secret),
            ("api.api_key", &self.api.api_key),
        ] {
            if secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
                return Err(problem(
                    id,
                    "must not be empty: give a value or remove the key".to_owned(),
                ));
            }
        }
        self.check_auth_mode()?;
        if self.redis.url.is_some() && !self.redis.cluster_nodes.is_empty() {
            return Err(problem(
                "redis.url",
                "and `redis.cluster_nodes` are both set: keep only one of them".to_owned(),
            ));
        }
        if let Err(e) = self.log_filter() {
            return Err(problem("log.level", e));
        }
        let s = &self.server;
        if s.heartbeat_timeout_ms <= s.heartbeat_interval_ms {
            return Err(problem(
                "server.heartbeat_timeout_ms",
                format!(
                    "is {} ms, not above `server.heartbeat_interval_ms` ({} ms): clients heartbeat about once per \
                     interval, so they would be closed 4002 between two heartbeats; make the timeout a few intervals \
                     long (the defaults are 30000 and 90000)",
                    s.heartbeat_timeout_ms, s.heartbeat_interval_ms
                ),
            ));
        }
        for origin in &s.allowed_origins {
            check_origin(origin).map_err(|text| problem("server.allowed_origins", text))?;
        }
        self.check_exposure()
    }

    /// The `tracing` filter of `log.level`: comma-separated `level` or `target=level` directives. Both limits
    /// come from the `config` fuzz target: tracing-subscriber 0.3 slices an untrimmed directive at offsets
    /// taken from the trimmed one (a panic on a leading space before a multi-byte character), and span/field
    /// filters (`[span{field=value}]`) compile their values as regexes, which can take seconds.
    pub fn log_filter(&self) -> Result<tracing_subscriber::EnvFilter, String> {
        let hint = "use e.g. `info`, `debug` or `sealcast=debug,info`";
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_:=,.- ".contains(&b);
        if !self.log.level.bytes().all(allowed) {
            return Err(format!(
                "must be `level` or `target=level` directives (letters, digits, `_:=,.-`): {hint}"
            ));
        }
        let directives: Vec<&str> = self
            .log
            .level
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .collect();
        for directive in &directives {
            check_log_directive(directive)?;
        }
        tracing_subscriber::EnvFilter::try_new(directives.join(","))
            .map_err(|e| format!("is not a log filter ({e}): {hint}"))
    }

    /// What `serve` starts with but an operator should hear about: each warning says what to change.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let AdminBind::At(addr) = self.admin.bind {
            if !addr.ip().is_loopback() {
                out.push(format!(
                    "`admin.bind` is {addr}, beyond loopback: /metrics, /healthz, /readyz and /livez need no \
                     authentication, so keep that address on a private network (or set it to 127.0.0.1:9090)"
                ));
            }
        }
        out
    }

    /// One client authentication mode: an HS256 secret, a public key or a JWKS with RS256/ES256, or the connect
    /// proxy.
    fn check_auth_mode(&self) -> Result<(), (&'static str, String)> {
        let a = &self.auth;
        let problem = |id: &'static str, text: &str| Err((id, text.to_owned()));
        for (id, ca_file, url_id, url) in [
            ("auth.jwks_ca_file", &a.jwks_ca_file, "auth.jwks_url", &a.jwks_url),
            ("auth.proxy_ca_file", &a.proxy_ca_file, "auth.proxy_url", &a.proxy_url),
        ] {
            let https = |u: &CredentialUrl| u.expose().get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
            match (ca_file, url) {
                (Some(_), None) => return Err((id, format!("is set without `{url_id}`: remove it or set the URL"))),
                (Some(_), Some(u)) if !https(u) => {
                    return Err((
                        id,
                        format!("is set but `{url_id}` is not https://: a CA file only applies to https"),
                    ))
                }
                _ => {}
            }
        }
        if !(1..=86_400).contains(&a.jwks_refresh_secs) {
            return problem("auth.jwks_refresh_secs", "must be between 1 and 86400 seconds");
        }
        if let Some(url) = &a.jwks_url {
            if a.jwt_secret.is_some() || a.jwt_public_key_file.is_some() || a.proxy_url.is_some() {
                return problem(
                    "auth.jwks_url",
                    "is set together with `auth.jwt_secret`, `auth.jwt_public_key_file` or `auth.proxy_url`: choose one \
                     authentication mode",
                );
            }
            if a.jwt_algorithm == JwtAlgorithm::Hs256 {
                return problem(
                    "auth.jwks_url",
                    "needs `auth.jwt_algorithm` RS256 or ES256: a JWKS publishes public keys (HS256 uses \
                     `auth.jwt_secret`)",
                );
            }
            sealcast::auth::JwksAuthenticator::builder(url.expose(), a.jwt_algorithm)
                .map_err(|e| ("auth.jwks_url", format!("is not usable: {e}")))?;
            return Ok(());
        }
        if let Some(url) = &a.proxy_url {
            if a.jwt_secret.is_some() || a.jwt_public_key_file.is_some() {
                return problem(
                    "auth.proxy_url",
                    "is set together with `auth.jwt_secret` or `auth.jwt_public_key_file`: choose one authentication mode",
                );
            }
            sealcast::auth::proxy::ConnectProxy::new(url.expose(), Duration::from_millis(a.proxy_timeout_ms))
                .map_err(|e| ("auth.proxy_url", format!("is not usable: {e}")))?;
            return Ok(());
        }
        match (a.jwt_algorithm, &a.jwt_public_key_file) {
            (JwtAlgorithm::Hs256, Some(_)) => problem(
                "auth.jwt_public_key_file",
                "needs `auth.jwt_algorithm` RS256 or ES256 (HS256 uses `auth.jwt_secret`)",
            ),
            (_, Some(_)) if a.jwt_secret.is_some() => problem(
                "auth.jwt_secret",
                "is set together with `auth.jwt_public_key_file`: remove the secret for RS256/ES256",
            ),
            (JwtAlgorithm::Rs256 | JwtAlgorithm::Es256, None) => problem(
                "auth.jwt_algorithm",
                "is RS256 or ES256: set `auth.jwt_public_key_file` (a PEM public key) or `auth.jwks_url`",
            ),
            _ => Ok(()),
        }
    }

    /// True when clients authenticate with something the operator configured (not development mode's secret).
    fn has_real_auth(&self) -> bool {
        let a = &self.auth;
        a.jwt_secret.is_some() || a.jwt_public_key_file.is_some() || a.jwks_url.is_some() || a.proxy_url.is_some()
    }

    /// Beyond loopback the server needs real authentication and a static key (development mode's generated ones
    /// are printed), an HS256 secret long enough not to be guessed, and the demo's open token endpoint needs an
    /// explicit `demo.public`.
    fn check_exposure(&self) -> Result<(), (&'static str, String)> {
        let bind = self.server.bind;
        if bind.ip().is_loopback() {
            return Ok(());
        }
        let mut missing = Vec::new();
        if !self.has_real_auth() {
            missing.push(
                "`auth.jwt_secret` / SEALCAST_JWT_SECRET, `auth.jwt_public_key_file` / SEALCAST_JWT_PUBLIC_KEY_FILE, \
                 `auth.jwks_url` / SEALCAST_JWKS_URL or `auth.proxy_url` / SEALCAST_AUTH_PROXY_URL (client \
                 authentication)",
            );
        }
        if self.encryption.server_key_files.is_empty() {
            missing.push(
                "`encryption.server_key_files` / SEALCAST_SERVER_KEY_FILE (wsenc/1 static key, see `sealcast keygen`)",
            );
        }
        if !missing.is_empty() {
            return Err((
                "server.bind",
                format!(
                    "is {bind}, beyond loopback: refusing to listen there without {} (or bind to 127.0.0.1)",
                    missing.join(" and ")
                ),
            ));
        }
        if let Some(secret) = &self.auth.jwt_secret {
            let len = secret.expose().len();
            if len < MIN_PUBLIC_SECRET_LEN {
                return Err((
                    "auth.jwt_secret",
                    format!(
                        "has {len} bytes with `server.bind` {bind}, beyond loopback: an HS256 secret there needs at \
                         least {MIN_PUBLIC_SECRET_LEN} bytes (RFC 7518 3.2), e.g. `openssl rand -hex 32`"
                    ),
                ));
            }
        }
        if self.demo.enabled && !self.demo.public {
            return Err((
                "demo.enabled",
                format!(
                    "is on with `server.bind` {bind}, beyond loopback: refusing, since its token endpoint lets \
                     anyone in; set `demo.public = true` (SEALCAST_DEMO_PUBLIC=true) to expose it anyway"
                ),
            ));
        }
        Ok(())
    }

    /// The server's part of the settings, for [`sealcast::ServerBuilder::config`].
    pub fn config(&self) -> Config {
        let (s, e, l) = (&self.server, &self.encryption, &self.limits);
        // `Config` is `#[non_exhaustive]`, so no struct literal here: every field is set on the defaults, and the
        // test `every_config_field_is_a_setting` catches a field added to `Config` but not to the settings.
        let mut c = Config::default();
        c.path = s.path.clone();
        c.default_rooms = s.default_rooms.clone();
        c.auth_timeout = Duration::from_millis(s.auth_timeout_ms);
        c.heartbeat_interval = Duration::from_millis(s.heartbeat_interval_ms);
        c.heartbeat_timeout = Duration::from_millis(s.heartbeat_timeout_ms);
        c.encrypted_batch_limit = e.encrypted_batch_limit;
        c.require_encryption = e.require_encryption;
        c.max_records_per_epoch = e.max_records_per_epoch;
        c.room_keys = e.room_keys;
        c.max_payload_length = l.max_payload_length;
        c.max_preauth_payload_length = l.max_preauth_payload_length;
        c.outbound_queue = s.outbound_queue;
        c.send_pings = s.send_pings;
        c.allow_client_publish = s.allow_client_publish;
        c.publish_to_self = s.publish_to_self;
        c.max_rooms_per_client = l.max_rooms_per_client;
        c.shutdown_timeout = Duration::from_millis(s.shutdown_timeout_ms);
        c.max_connections = l.max_connections;
        c.max_connections_per_ip = l.max_connections_per_ip;
        c.connection_rate_per_ip = Rate::new(l.connection_rate_per_ip, l.connection_rate_per_ip_burst);
        c.request_head_timeout = Duration::from_millis(l.request_head_timeout_ms);
        c.message_rate = Rate::new(l.message_rate, l.message_rate_burst);
        c.join_rate = Rate::new(l.join_rate, l.join_rate_burst);
        c.max_concurrent_authentications = l.max_concurrent_authentications;
        c.max_concurrent_handshakes = l.max_concurrent_handshakes;
        c.handshake_wait = Duration::from_millis(l.handshake_wait_ms);
        c.max_sessions_per_user = l.max_sessions_per_user;
        c.allowed_origins = s.allowed_origins.clone();
        c.read_buffer_size = l.read_buffer_size;
        c.max_write_buffer_size = l.max_write_buffer_size;
        c.history_rooms = self.history.rooms.clone();
        c.history_size = self.history.size;
        c.history_ttl = Duration::from_millis(self.history.ttl_ms);
        c.presence_rooms = self.presence.rooms.clone();
        c.presence_events = self.presence.events;
        c.presence_max_members = self.presence.max_members;
        c
    }

    /// Every setting in file order with its value as TOML (`None` when unset; secrets `"<redacted>"`).
    pub fn values(&self) -> Vec<(&'static Key, Option<toml::Value>)> {
        let table = toml::Value::try_from(self).ok();
        KEYS.iter()
            .map(|k| {
                let v = table
                    .as_ref()
                    .and_then(|t| t.get(k.section))
                    .and_then(|s| s.get(k.name));
                (k, v.cloned())
            })
            .collect()
    }

    /// A config file with every setting at its default, each with its meaning, variable and flag (the committed
    /// `sealcast.toml`; `sealcast config sample` prints it).
    pub fn sample_toml() -> String {
        let mut out = String::from(
            "# sealcast configuration: `sealcast serve --config sealcast.toml` (or SEALCAST_CONFIG=sealcast.toml).\n\
             # Every setting at its default. Precedence: flags > SEALCAST_* environment variables > this file >\n\
             # defaults. Unknown keys are errors. Check a file with `sealcast config check --config FILE`.\n\
             # Generated by `sealcast config sample`.\n",
        );
        let mut section = "";
        for (key, value) in Self::default().values() {
            if key.section != section {
                section = key.section;
                let about = section_about(section);
                out.push_str(&format!("\n# {about}\n[{section}]\n"));
            }
            for line in wrap(key.help(), 110) {
                out.push_str(&format!("# {line}\n"));
            }
            out.push_str(&format!("# env {}, flag {}\n", key.env, key.flag()));
            match value {
                Some(v) => out.push_str(&format!("{} = {v}\n", key.name)),
                None => out.push_str(&format!("# {}: unset by default\n", key.name)),
            }
        }
        out
    }
}

impl Settings {
    /// The configuration reference as Markdown: one table per section with every setting's file key,
    /// environment variable, flag, default and meaning (the committed `docs/reference/configuration.md`;
    /// `sealcast config reference` prints it).
    pub fn reference_markdown() -> String {
        let mut out = String::from(
            "# Configuration reference\n\n\
             <!-- Generated by `sealcast config reference > docs/reference/configuration.md`; do not edit. -->\n\n\
             Every setting can be given in a TOML file (`sealcast serve --config FILE` or `SEALCAST_CONFIG`), as a\n\
             `SEALCAST_*` environment variable or as a flag; a flag beats its variable, which beats the file, which\n\
             beats the default. Lists are TOML arrays in the file and comma separated in variables and flags; an\n\
             empty variable unsets an optional setting; a boolean flag alone means `true`. `sealcast config sample`\n\
             prints a file with every setting at its default; `sealcast config check` validates one.\n",
        );
        let mut section = "";
        for (key, value) in Self::default().values() {
            if key.section != section {
                section = key.section;
                let about = section_about(section);
                out.push_str(&format!("\n## `[{section}]`\n\n{about}\n"));
            }
            out.push_str(&reference_entry(key, value.as_ref()));
        }
        out
    }
}

/// The doc text of a config-file section.
fn section_about(section: &str) -> &'static str {
    SECTIONS
        .iter()
        .find(|(s, _)| *s == section)
        .map_or("", |(_, d)| d.trim())
}

/// One setting's entry in the configuration reference: a heading (an anchor per key), where to set it, its
/// default and its meaning.
fn reference_entry(key: &Key, default: Option<&toml::Value>) -> String {
    let default = default.map_or("unset".to_owned(), |v| format!("`{v}`"));
    format!(
        "\n### `{}`\n\nVariable `{}` · flag `{}` · default {default}\n\n{}\n",
        key.id,
        key.env,
        key.flag(),
        key.help()
    )
}

impl RedisSettings {
    /// The Redis deployment to use, if any.
    pub fn endpoint(&self) -> Option<RedisEndpoint> {
        match (&self.url, self.cluster_nodes.as_slice()) {
            (Some(url), _) if !url.expose().is_empty() => Some(RedisEndpoint::single(url.expose())),
            (_, []) => None,
            (_, nodes) => Some(RedisEndpoint::cluster(nodes.iter().map(CredentialUrl::expose))),
        }
    }

    /// The envelope-signing secret, if any.
    pub fn secret(&self) -> Option<&[u8]> {
        self.bus_secret
            .as_ref()
            .map(|s| s.expose().as_bytes())
            .filter(|s| !s.is_empty())
    }
}

/// Shortest HS256 secret accepted beyond loopback: the key size RFC 7518 (3.2) requires for HS256.
const MIN_PUBLIC_SECRET_LEN: usize = 32;

/// The level names a log directive may end in.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// One `level` or `target=level` directive of `log.level`. tracing reads any other word as a target, which
/// would log only that target and silence everything else: a typo such as `verbose` must not do that.
fn check_log_directive(directive: &str) -> Result<(), String> {
    let level = directive
        .rsplit_once('=')
        .map_or(directive, |(_, level)| level)
        .to_ascii_lowercase();
    if LOG_LEVELS.contains(&level.as_str()) {
        return Ok(());
    }
    let suggestion = LOG_LEVELS
        .iter()
        .copied()
        .find(|l| level.starts_with(l))
        .or_else(|| closest(&level, LOG_LEVELS.iter().copied()));
    let fix = match (suggestion, directive.rsplit_once('=')) {
        (Some(l), Some((target, _))) => format!("did you mean `{target}={l}`?"),
        (Some(l), None) => format!("did you mean `{l}`?"),
        (None, Some((target, _))) => format!("write `{target}=` and one of {}", LOG_LEVELS.join(", ")),
        (None, None) => format!(
            "use one of {}, or `target=level` (a bare word is read as a target and silences everything else)",
            LOG_LEVELS.join(", ")
        ),
    };
    Err(format!("has {directive:?}, which does not end in a level: {fix}"))
}

/// An allowed Origin must be what browsers send, `scheme://host[:port]`: anything else never matches.
fn check_origin(origin: &str) -> Result<(), String> {
    let scheme_ok = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    };
    match origin.split_once("://") {
        Some((scheme, host)) if scheme_ok(scheme) && !host.is_empty() && !host.contains(['/', '?', '#']) => Ok(()),
        Some((scheme, rest)) if scheme_ok(scheme) && !rest.is_empty() => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            Err(format!(
                "has {origin:?}: an Origin is `scheme://host[:port]` without a path; did you mean \"{scheme}://{host}\"?"
            ))
        }
        _ => Err(format!(
            "has {origin:?}, which has no scheme: browsers send `scheme://host[:port]` and it is compared exactly; did \
             you mean \"https://{}\"?",
            origin.trim_end_matches('/')
        )),
    }
}

/// Variables `sealcast serve` reads that are not settings.
const OTHER_VARIABLES: [&str; 1] = ["SEALCAST_CONFIG"];

/// A warning for each `SEALCAST_*` name in `names` that `sealcast serve` does not read: a misspelt variable
/// leaves its setting at the default without a word otherwise. Suggests the closest known variable.
pub fn unknown_variables<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    const PREFIX: &str = "SEALCAST_";
    let known = || KEYS.iter().map(|k| k.env).chain(OTHER_VARIABLES);
    // Compared without the common prefix, which would make every name look close to every other.
    let bare = || known().filter_map(|k| k.strip_prefix(PREFIX));
    names
        .into_iter()
        .filter_map(|name| Some((name, name.strip_prefix(PREFIX)?)))
        .filter(|(name, _)| !known().any(|k| k == *name))
        .map(|(name, rest)| match closest(rest, bare()) {
            Some(k) => format!("{name} is not a sealcast setting and is ignored; did you mean {PREFIX}{k}?"),
            None => format!("{name} is not a sealcast setting and is ignored (`sealcast serve --help` lists them)"),
        })
        .collect()
}

/// The key holding `Config` field `field` (durations carry an `_ms` suffix in the file).
fn config_key(field: &'static str) -> &'static str {
    // `Config::history_*` and `presence_*` fields are the `[history]` and `[presence]` sections' keys.
    let (section, name) = match (field.strip_prefix("history_"), field.strip_prefix("presence_")) {
        (Some(rest), _) => (Some("history"), rest),
        (_, Some(rest)) => (Some("presence"), rest),
        _ => (None, field),
    };
    KEYS.iter()
        .filter(|k| section.is_none_or(|s| k.section == s))
        .find(|k| k.name == name || k.name.strip_suffix("_ms") == Some(name))
        .map_or(field, |k| k.id)
}

fn config_problem(e: ConfigError) -> (&'static str, String) {
    match e {
        ConfigError::BadPath(_) => ("server.path", "must start with '/', e.g. \"/ws\"".to_owned()),
        ConfigError::Zero(field) => (config_key(field), "must be greater than 0".to_owned()),
        ConfigError::PreauthLimit => (
            "limits.max_preauth_payload_length",
            "must not exceed `limits.max_payload_length`".to_owned(),
        ),
        ConfigError::EpochLimit => (
            "encryption.max_records_per_epoch",
            "must be between 2 and 1048576 (2^20)".to_owned(),
        ),
        ConfigError::HistorySize => (
            "history.size",
            format!("must be at most {}", sealcast::MAX_HISTORY_SIZE),
        ),
        ConfigError::PresenceMaxMembers => (
            "presence.max_members",
            format!("must be at most {}", sealcast::MAX_PRESENCE_MEMBERS),
        ),
        ConfigError::BadRate(field) => {
            let k = config_key(field);
            (
                k,
                format!("and `{k}_burst` must be finite numbers >= 0 (a rate of 0 disables the limit)"),
            )
        }
        // `EncryptionWithoutHandshake`, `NoAuthenticator`, `NoRuntime`: not produced by `Config::validate` (they
        // concern the builder's hooks and runtime). `ConfigError` is non-exhaustive: the same for later variants.
        e => ("server", e.to_string()),
    }
}

/// Refuses sections and keys the format does not have, suggesting the closest known one.
fn check_known(table: &toml::Table) -> Result<(), SettingsError> {
    for (section, value) in table {
        let known_section = SECTIONS.iter().any(|(s, _)| s == section);
        if known_section && !value.is_table() {
            return Err(SettingsError::NotASection(section.clone()));
        }
        let Some(keys) = value.as_table().filter(|_| known_section) else {
            if let Some(k) = KEYS.iter().find(|k| k.name == section.as_str()) {
                return Err(SettingsError::UnknownSection {
                    section: section.clone(),
                    fix: format!("\"{section}\" is a key: put it under [{}]", k.section),
                });
            }
            let names = SECTIONS.iter().map(|(s, _)| *s);
            let fix = match closest(section, names.clone()) {
                Some(s) => format!("did you mean [{s}]?"),
                None => format!(
                    "the sections are {}",
                    names.map(|s| format!("[{s}]")).collect::<Vec<_>>().join(", ")
                ),
            };
            return Err(SettingsError::UnknownSection {
                section: section.clone(),
                fix,
            });
        };
        for name in keys.keys() {
            let known = KEYS.iter().filter(|k| k.section == section.as_str());
            if known.clone().any(|k| k.name == name.as_str()) {
                continue;
            }
            let fix = if let Some(other) = KEYS.iter().find(|k| k.name == name.as_str()) {
                format!("it belongs in [{}]", other.section)
            } else if let Some(s) = closest(name, known.clone().map(|k| k.name)) {
                format!("did you mean \"{s}\"?")
            } else {
                format!(
                    "remove it; the keys of [{section}] are {}",
                    known.map(|k| k.name).collect::<Vec<_>>().join(", ")
                )
            };
            return Err(SettingsError::UnknownKey {
                section: section.clone(),
                key: name.clone(),
                fix,
            });
        }
    }
    Ok(())
}

/// The candidate closest to `given` by edit distance, or extending it, if close enough to be a typo.
fn closest<'a>(given: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| {
            let d = if c.starts_with(given) && given.len() >= 3 {
                0
            } else {
                edit_distance(given, c)
            };
            (d, c)
        })
        .filter(|(d, c)| *d <= 2.max(c.len().max(given.len()) / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = Vec::with_capacity(b.len() + 1);
        row.push(i + 1);
        for ((cb, &diag), &up) in b.iter().zip(&prev).zip(prev.iter().skip(1)) {
            let left = row.last().copied().unwrap_or(usize::MAX - 1);
            row.push((diag + usize::from(ca != *cb)).min(up + 1).min(left + 1));
        }
        prev = row;
    }
    prev.last().copied().unwrap_or(0)
}

/// Greedy word wrap for comments.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.is_empty() => line.push_str(word),
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// A type a setting can have: how it reads from an environment variable or flag, and how errors describe it.
trait SettingValue: Serialize + DeserializeOwned {
    /// What a valid value looks like.
    const EXPECTED: &'static str;
    /// Never printed.
    const SECRET: bool = false;
    /// Its environment variable's value stays out of `--help`.
    const HIDE_ENV: bool = Self::SECRET;
    /// A boolean (a bare flag means `true`).
    const SWITCH: bool = false;

    /// The TOML value for `raw` text from the environment or a flag (`None`: unset it).
    fn from_text(raw: &str) -> Result<Option<toml::Value>, String> {
        Ok(Some(toml::Value::String(raw.to_owned())))
    }
}

/// Checks that a TOML value deserialises as `T`.
fn check_value<T: SettingValue>(v: &toml::Value) -> Result<(), String> {
    v.clone().try_into::<T>().map(drop).map_err(|e| {
        if T::HIDE_ENV {
            // Neither the value nor serde's message (which quotes it) may show a credential.
            format!("must be {}", T::EXPECTED)
        } else {
            format!("must be {}, not {v} ({})", T::EXPECTED, e.message().trim())
        }
    })
}

fn integer(raw: &str, expected: &str) -> Result<Option<toml::Value>, String> {
    raw.trim()
        .parse::<i64>()
        .map(|n| Some(toml::Value::Integer(n)))
        .map_err(|_| format!("must be {expected}, not {raw:?}"))
}

impl SettingValue for u64 {
    const EXPECTED: &'static str = "a whole number >= 0";
    fn from_text(raw: &str) -> Result<Option<toml::Value>, String> {
        integer(raw, Self::EXPECTED)
    }
}

impl SettingValue for usize {
    const EXPECTED: &'static str = "a whole number >= 0";
    fn from_text(raw: &str) -> Result<Option<toml::Value>, String> {
        integer(raw, Self::EXPECTED)
    }
}

impl SettingValue for f64 {
    const EXPECTED: &'static str = "a number >= 0";
    fn from_text(raw: &str) -> Result<Option<toml::Value>, String> {
        raw.trim()
            .parse::<f64>()
            .map(|n| Some(toml::Value::Float(n)))
            .map_err(|_| format!("must be {}, not {raw:?}", Self::EXPECTED))
    }
}

impl SettingValue for bool {
    const EXPECTED: &'static str = "true or false";
    const SWITCH: bool = true;
    fn from_text(raw: &str) -> Result<Option<toml::Value>, String> {
        match raw.trim() {
            "true" => Ok(Some(toml::Value::Boolean(true))),
            "false" => Ok(Some(toml::Value::Boolean(false))),
            _ => Err(format!("must be {}, not {raw:?}", Self::EXPECTED)),
        }
    }
}

impl SettingValue for String {
    const EXPECTED: &'static str = "a string";
}

impl SettingValue for SocketAddr {
    const EXPECTED: &'static str = "an address like \"127.0.0.1:8080\"";
}

impl SettingValue for PathBuf {
    const EXPECTED: &'static str = "a file path";
}

/// Lists: a TOML array, or comma-separated text in the environment and flags.
impl<T: SettingValue> SettingValue for Vec<T> {
    const EXPECTED: &'static str = "a list of strings, e.g. [\"a\", \"b\"]";
    const HIDE_ENV: bool = T::HIDE_ENV;
    fn from_text(raw: &str) -> Result<Option<toml::Value>, String> {
        let items = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| toml::Value::String(s.to_owned()))
            .collect();
        Ok(Some(toml::Value::Array(items)))
    }
}

/// Optional settings: absent from the file, or empty text in the environment and flags, leaves them unset.
impl<T: SettingValue> SettingValue for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    const SECRET: bool = T::SECRET;
    const HIDE_ENV: bool = T::HIDE_ENV;
    fn from_text(raw: &str) -> Result<Option<toml::Value>, String> {
        if raw.is_empty() {
            Ok(None)
        } else {
            T::from_text(raw)
        }
    }
}

/// A credential: printed and serialised only as `<redacted>`, wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(zeroize::Zeroizing::new(value.into()))
    }

    /// The value itself, for the code that uses it (never for output).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

impl SettingValue for Secret {
    const EXPECTED: &'static str = "a string";
    const SECRET: bool = true;
}

/// A URL that may carry a credential (a Redis password, a key in the connect proxy's query string): shown
/// (`Debug`, `config check`, serialised) through [`sealcast::redact::url`], which hides the password and the
/// query; the code that connects uses [`Self::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialUrl(String);

impl CredentialUrl {
    /// The URL `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL itself, credentials included, for the code that connects (never for output).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CredentialUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&sealcast::redact::url(&self.0))
    }
}

impl Serialize for CredentialUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&sealcast::redact::url(&self.0))
    }
}

impl<'de> Deserialize<'de> for CredentialUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

impl SettingValue for CredentialUrl {
    const EXPECTED: &'static str = "a URL";
    const HIDE_ENV: bool = true;
}

/// Where the admin listener listens, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminBind {
    /// No admin listener.
    Off,
    /// Listen on this address.
    At(SocketAddr),
}

impl std::str::FromStr for AdminBind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Self::Off),
            addr => addr
                .parse()
                .map(Self::At)
                .map_err(|_| format!("{addr:?} is not an address like 127.0.0.1:9090 or `off`")),
        }
    }
}

impl std::fmt::Display for AdminBind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::At(addr) => addr.fmt(f),
        }
    }
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Settings types written as a string in the file: serde through `FromStr` and `Display`. The library's own
/// such types (`BusMode`, `JwtAlgorithm`) have the same serde impls in the library (the orphan rule puts them
/// there), so they only get their description here.
macro_rules! string_setting {
    ($($ty:ty => $expected:literal),* $(,)?) => {$(
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }

        impl SettingValue for $ty {
            const EXPECTED: &'static str = $expected;
        }
    )*};
}

string_setting! {
    AdminBind => "an address like \"127.0.0.1:9090\", or \"off\"",
    LogFormat => "\"text\" or \"json\"",
}

impl SettingValue for BusMode {
    const EXPECTED: &'static str = "\"classic\" or \"sharded\"";
}

impl SettingValue for JwtAlgorithm {
    const EXPECTED: &'static str = "\"HS256\", \"RS256\" or \"ES256\"";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Settings::from_toml_str(text).unwrap_err().to_string()
    }

    fn env(id: &str, raw: &str) -> Override {
        Override {
            key: Key::find(id).unwrap(),
            raw: raw.to_owned(),
            source: Source::Env,
        }
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(Settings::from_toml_str("").unwrap(), Settings::default());
    }

    #[test]
    fn server_defaults_are_the_library_defaults() {
        let (ours, lib) = (Settings::default().config(), Config::default());
        assert_eq!(format!("{ours:?}"), format!("{lib:?}"));
    }

    #[test]
    fn file_values_override_defaults() {
        let s = Settings::from_toml_str(
            "[server]\npath = \"/live\"\ndefault_rooms = []\n[limits]\nmax_connections = 5\nmessage_rate = 3\n",
        )
        .unwrap();
        assert_eq!(s.server.path, "/live");
        assert!(s.server.default_rooms.is_empty());
        assert_eq!(s.limits.max_connections, 5);
        assert_eq!(s.config().message_rate, Rate::new(3.0, 400.0));
    }

    #[test]
    fn unknown_key_is_named_with_a_suggestion() {
        assert_eq!(
            err("[server]\nheartbeat_intervl = 5\n"),
            "unknown key \"heartbeat_intervl\" in [server]; did you mean \"heartbeat_interval_ms\"?"
        );
    }

    #[test]
    fn key_in_the_wrong_section_says_where_it_belongs() {
        assert_eq!(
            err("[server]\nmax_connections = 5\n"),
            "unknown key \"max_connections\" in [server]; it belongs in [limits]"
        );
    }

    #[test]
    fn unrelated_unknown_key_lists_the_section_keys() {
        let e = err("[admin]\nzzzzzzzz = 1\n");
        assert_eq!(
            e,
            "unknown key \"zzzzzzzz\" in [admin]; remove it; the keys of [admin] are bind"
        );
    }

    #[test]
    fn unknown_section_is_named_with_a_suggestion() {
        assert_eq!(
            err("[limit]\n"),
            "unknown section [limit] in the config file; did you mean [limits]?"
        );
    }

    #[test]
    fn section_written_as_a_value_is_refused() {
        assert_eq!(
            err("server = 1\n"),
            "`server` must be a section: write [server] on a line of its own and its keys below it"
        );
    }

    #[test]
    fn top_level_key_says_which_section_it_belongs_in() {
        assert_eq!(
            err("bind = \"127.0.0.1:1\"\n"),
            "unknown section [bind] in the config file; \"bind\" is a key: put it under [server]"
        );
    }

    #[test]
    fn wrong_type_names_the_key_and_what_is_expected() {
        let e = err("[limits]\nmax_connections = \"many\"\n");
        assert!(
            e.starts_with("`limits.max_connections` must be a whole number >= 0, not \"many\""),
            "{e}"
        );
        assert!(e.ends_with("(set in the config file)"), "{e}");
    }

    #[test]
    fn zero_limit_names_the_key() {
        assert_eq!(
            err("[limits]\nmax_connections = 0\n"),
            "`limits.max_connections` must be greater than 0 (set in the config file)"
        );
    }

    #[test]
    fn zero_duration_names_the_file_key() {
        assert!(err("[server]\nheartbeat_interval_ms = 0\n").starts_with("`server.heartbeat_interval_ms` must be"));
    }

    #[test]
    fn negative_or_nan_rate_names_the_key() {
        for text in [
            "[limits]\nmessage_rate = -1.0\n",
            "[limits]\nmessage_rate_burst = nan\n",
        ] {
            assert!(
                err(text).starts_with("`limits.message_rate` and `limits.message_rate_burst`"),
                "{text}"
            );
        }
    }

    #[test]
    fn cross_field_limits_are_checked() {
        assert!(err("[limits]\nmax_preauth_payload_length = 999999999\n")
            .starts_with("`limits.max_preauth_payload_length` must not exceed"));
        assert!(err("[limits]\nmax_write_buffer_size = 0\n").starts_with("`limits.max_write_buffer_size` must be"));
        assert!(err("[encryption]\nmax_records_per_epoch = 1\n").starts_with("`encryption.max_records_per_epoch`"));
        assert!(err("[server]\npath = \"ws\"\n").starts_with("`server.path` must start with '/'"));
    }

    /// tracing-subscriber panics on a directive with leading space and a multi-byte character, and spends
    /// seconds compiling field-filter regexes (config fuzz finds).
    #[test]
    fn a_log_filter_that_would_crash_or_stall_tracing_is_refused_naming_the_key() {
        let refused = "`log.level` must be `level` or `target=level` directives";
        assert!(err("[log]\nlevel = \"info, \u{0364}[x]e,s)\"\n").starts_with(refused));
        assert!(err("[log]\nlevel = \"info,\\tdebug\"\n").starts_with(refused));
        assert!(err("[log]\nlevel = \"9[T{f=a.*b.*c}]\"\n").starts_with(refused));
        let spaced = Settings::from_toml_str("[log]\nlevel = \" info , sealcast=debug \"\n").unwrap();
        assert_eq!(spaced.log_filter().unwrap().to_string(), "sealcast=debug,info");
    }

    #[test]
    fn syntax_error_is_reported_with_its_line() {
        let e = err("[server\n");
        assert!(
            e.starts_with("the config file is not valid TOML") && e.contains("line 1"),
            "{e}"
        );
    }

    #[test]
    fn string_settings_are_parsed() {
        let s = Settings::from_toml_str(
            "[admin]\nbind = \"off\"\n[log]\nformat = \"json\"\n[redis]\nbus_mode = \"sharded\"\nurl = \"redis://x\"\n",
        )
        .unwrap();
        assert_eq!(s.admin.bind, AdminBind::Off);
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.redis.bus_mode, Some(BusMode::Sharded));
        assert!(err("[admin]\nbind = \"nowhere\"\n").starts_with("`admin.bind` must be an address"));
        assert!(err("[log]\nlevel = \"sealcast=loud\"\n")
            .starts_with("`log.level` has \"sealcast=loud\", which does not end in a level"));
    }

    #[test]
    fn environment_overrides_the_file_and_is_named_in_errors() {
        let file = "[limits]\nmax_connections = 5\n";
        let e = Settings::load(file, &[env("limits.max_connections", "7")]).unwrap();
        assert_eq!(e.settings.limits.max_connections, 7);
        assert_eq!(e.source(Key::find("limits.max_connections").unwrap()), Source::Env);
        assert_eq!(e.source(Key::find("server.path").unwrap()), Source::Default);
        let bad = Settings::load(file, &[env("limits.max_connections", "x")]).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "`limits.max_connections` must be a whole number >= 0, not \"x\" (set by SEALCAST_MAX_CONNECTIONS)"
        );
    }

    #[test]
    fn environment_lists_are_comma_separated_and_empty_unsets_optionals() {
        let e = Settings::load(
            "[api]\napi_key = \"k\"\n",
            &[env("server.default_rooms", "a, b,,"), env("api.api_key", "")],
        )
        .unwrap();
        assert_eq!(e.settings.server.default_rooms, ["a", "b"]);
        assert_eq!(e.settings.api.api_key, None);
    }

    #[test]
    fn secrets_are_redacted_in_debug_and_render() {
        let e = Settings::load("[auth]\njwt_secret = \"hunter2\"\n", &[]).unwrap();
        assert!(!format!("{:?}", e.settings).contains("hunter2"));
        let out = e.render();
        assert!(
            !out.contains("hunter2") && out.contains("jwt_secret = \"<redacted>\"  # config file"),
            "{out}"
        );
        assert_eq!(e.settings.auth.jwt_secret.as_ref().map(Secret::expose), Some("hunter2"));
    }

    #[test]
    fn empty_secret_is_refused() {
        assert!(err("[api]\napi_key = \"\"\n").starts_with("`api.api_key` must not be empty"));
    }

    #[test]
    fn public_bind_needs_a_secret_and_a_key_file() {
        let e = err("[server]\nbind = \"0.0.0.0:8080\"\n");
        assert!(
            e.contains("SEALCAST_JWT_SECRET")
                && e.contains("SEALCAST_SERVER_KEY_FILE")
                && e.starts_with("`server.bind`"),
            "{e}"
        );
        let only_key = err("[server]\nbind = \"0.0.0.0:8080\"\n[auth]\njwt_secret = \"s\"\n");
        assert!(!only_key.contains("SEALCAST_JWT_SECRET") && only_key.contains("SEALCAST_SERVER_KEY_FILE"));
        let ready = "[server]\nbind = \"0.0.0.0:8080\"\n[auth]\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n\
                     [encryption]\nserver_key_files = [\"k.pem\"]\n";
        assert!(Settings::from_toml_str(ready).is_ok());
    }

    #[test]
    fn public_bind_counts_a_public_key_a_jwks_or_the_connect_proxy_as_authentication() {
        let keyed = "[server]\nbind = \"0.0.0.0:8080\"\n[encryption]\nserver_key_files = [\"k.pem\"]\n[auth]\n";
        for auth in [
            "jwt_algorithm = \"RS256\"\njwt_public_key_file = \"jwt.pem\"\n",
            "proxy_url = \"http://127.0.0.1:3000/auth\"\n",
            "proxy_url = \"https://auth.internal/connect\"\nproxy_ca_file = \"ca.pem\"\n",
            "jwt_algorithm = \"ES256\"\njwks_url = \"https://idp.example/jwks.json\"\n",
        ] {
            assert!(Settings::from_toml_str(&format!("{keyed}{auth}")).is_ok(), "{auth}");
        }
    }

    #[test]
    fn exactly_one_authentication_mode_is_accepted() {
        for (auth, key) in [
            (
                "proxy_url = \"http://h/\"\njwt_secret = \"s\"\n",
                "`auth.proxy_url` is set together",
            ),
            (
                "proxy_url = \"ftp://h/\"\n",
                "`auth.proxy_url` is not usable: the connect proxy URL must use https:// or http://",
            ),
            (
                "jwks_url = \"https://idp/jwks\"\n",
                "`auth.jwks_url` needs `auth.jwt_algorithm` RS256 or ES256",
            ),
            (
                "jwt_algorithm = \"RS256\"\njwks_url = \"https://idp/jwks\"\njwt_public_key_file = \"k.pem\"\n",
                "`auth.jwks_url` is set together",
            ),
            (
                "jwt_algorithm = \"RS256\"\njwks_url = \"https://idp/jwks\"\nproxy_url = \"http://h/\"\n",
                "`auth.jwks_url` is set together",
            ),
            (
                "jwt_algorithm = \"RS256\"\njwks_url = \"ftp://idp/jwks\"\n",
                "`auth.jwks_url` is not usable: the JWKS URL must use https:// or http://",
            ),
            (
                "jwt_algorithm = \"RS256\"\njwks_url = \"http://idp/jwks\"\njwks_ca_file = \"ca.pem\"\n",
                "`auth.jwks_ca_file` is set but `auth.jwks_url` is not https://",
            ),
            (
                "jwks_ca_file = \"ca.pem\"\n",
                "`auth.jwks_ca_file` is set without `auth.jwks_url`",
            ),
            (
                "proxy_ca_file = \"ca.pem\"\n",
                "`auth.proxy_ca_file` is set without `auth.proxy_url`",
            ),
            (
                "jwt_algorithm = \"RS256\"\njwks_url = \"https://idp/jwks\"\njwks_refresh_secs = 0\n",
                "`auth.jwks_refresh_secs` must be between 1 and 86400",
            ),
            ("jwt_public_key_file = \"k.pem\"\n", "`auth.jwt_public_key_file` needs"),
            ("jwt_algorithm = \"ES256\"\n", "`auth.jwt_algorithm` is RS256 or ES256"),
            (
                "jwt_algorithm = \"ES256\"\njwt_public_key_file = \"k\"\njwt_secret = \"s\"\n",
                "`auth.jwt_secret` is set",
            ),
            ("jwt_algorithm = \"PS256\"\n", "`auth.jwt_algorithm`"),
        ] {
            let e = err(&format!("[auth]\n{auth}"));
            assert!(e.starts_with(key), "{auth}: {e}");
        }
    }

    #[test]
    fn redis_url_and_cluster_nodes_are_exclusive() {
        assert!(err("[redis]\nurl = \"redis://a\"\ncluster_nodes = [\"redis://b\"]\n").starts_with("`redis.url` and"));
    }

    #[test]
    fn sample_parses_to_the_defaults() {
        assert_eq!(
            Settings::from_toml_str(&Settings::sample_toml()).unwrap(),
            Settings::default()
        );
    }

    #[test]
    fn every_key_is_in_the_sample_and_has_a_doc() {
        let sample = Settings::sample_toml();
        for k in KEYS {
            assert!(!k.help().is_empty(), "{}", k.id);
            assert!(
                sample.contains(&format!("\n{} = ", k.name))
                    || sample.contains(&format!("# {}: unset by default", k.name))
            );
        }
    }

    #[test]
    fn keys_flags_and_variables_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for k in KEYS {
            assert!(seen.insert(k.id) && seen.insert(k.env), "{}", k.id);
            assert!(k.env.starts_with("SEALCAST_"), "{}", k.env);
        }
        let flags: std::collections::HashSet<String> = KEYS.iter().map(Key::flag).collect();
        assert_eq!(flags.len(), KEYS.len());
    }

    #[test]
    fn every_key_named_in_messages_exists() {
        for id in [
            "server.path",
            "server.bind",
            "demo.enabled",
            "auth.jwt_secret",
            "redis.bus_secret",
            "api.api_key",
            "redis.url",
            "log.level",
            "limits.max_preauth_payload_length",
            "encryption.max_records_per_epoch",
            "limits.max_write_buffer_size",
            "server.heartbeat_timeout_ms",
            "server.allowed_origins",
        ] {
            assert!(Key::find(id).is_some(), "{id}");
        }
        for field in [
            "encrypted_batch_limit",
            "max_payload_length",
            "max_preauth_payload_length",
            "outbound_queue",
            "max_rooms_per_client",
            "read_buffer_size",
            "max_connections",
            "max_connections_per_ip",
            "max_concurrent_authentications",
            "max_concurrent_handshakes",
            "max_sessions_per_user",
            "auth_timeout",
            "heartbeat_interval",
            "heartbeat_timeout",
            "request_head_timeout",
            "connection_rate_per_ip",
            "message_rate",
            "join_rate",
        ] {
            assert!(Key::find(config_key(field)).is_some(), "{field}");
        }
    }

    #[test]
    fn committed_configuration_reference_is_current() {
        assert!(
            include_str!("../../../docs/reference/configuration.md") == Settings::reference_markdown(),
            "docs/reference/configuration.md is stale: regenerate it with \
             `cargo run -- config reference > docs/reference/configuration.md`"
        );
    }

    #[test]
    fn configuration_reference_lists_every_setting_once() {
        let reference = Settings::reference_markdown();
        for key in KEYS.iter() {
            let entry = format!("### `{}`\n\nVariable `{}` · flag `{}` ·", key.id, key.env, key.flag());
            assert_eq!(reference.matches(entry.as_str()).count(), 1, "{}", key.id);
        }
    }

    #[test]
    fn committed_sample_is_current() {
        assert!(
            include_str!("../../../sealcast.toml") == Settings::sample_toml(),
            "sealcast.toml is stale: regenerate it with `cargo run -- config sample > sealcast.toml`"
        );
    }

    #[test]
    fn demo_beyond_loopback_needs_public() {
        let public = "[server]\nbind = \"0.0.0.0:8080\"\n[auth]\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n\
             [encryption]\nserver_key_files = [\"k\"]\n";
        assert!(Settings::from_toml_str("[demo]\nenabled = true\n").is_ok());
        assert!(err(&format!("{public}[demo]\nenabled = true\n")).starts_with("`demo.enabled` is on"));
        assert!(Settings::from_toml_str(&format!("{public}[demo]\nenabled = true\npublic = true\n")).is_ok());
    }

    /// What the struct literal `Settings::config` had before `Config` moved to another crate checked at compile
    /// time: every field of `Config` is a setting (key `field`, or `field_ms` for a duration).
    #[test]
    fn every_config_field_is_a_setting() {
        let debug = format!("{:#?}", Config::default());
        let fields: Vec<&str> = debug
            .lines()
            .filter_map(|l| l.strip_prefix("    "))
            .filter(|l| !l.starts_with(' '))
            .filter_map(|l| l.split_once(':').map(|(name, _)| name))
            .collect();
        assert!(
            fields.len() >= 27 && fields.contains(&"max_write_buffer_size"),
            "{fields:?}"
        );
        let defaults = format!("{:?}", Settings::default().config());
        for field in fields {
            let key = KEYS
                .iter()
                .find(|k| {
                    // `[history] ttl_ms` is `Config::history_ttl`: the section names the field's prefix.
                    let name = if k.section == "history" || k.section == "presence" {
                        format!("{}_{}", k.section, k.name)
                    } else {
                        k.name.to_owned()
                    };
                    k.section != "auth" && (name == field || name.strip_suffix("_ms") == Some(field))
                })
                .unwrap_or_else(|| panic!("Config field {field} has no setting (add it to `settings!`)"));
            // Another valid value for the key must reach `Settings::config`.
            let other = match Settings::default().values().into_iter().find(|(k, _)| k.id == key.id) {
                Some((_, Some(toml::Value::Integer(n)))) => toml::Value::Integer(n - 1),
                Some((_, Some(toml::Value::Float(f)))) => toml::Value::Float(f + 1.0),
                Some((_, Some(toml::Value::Boolean(b)))) => toml::Value::Boolean(!b),
                Some((_, Some(toml::Value::String(s)))) => toml::Value::String(format!("{s}x")),
                // A list whose entries are checked (allowed origins) must get a valid one.
                Some((_, Some(toml::Value::Array(a)))) if a.is_empty() => {
                    toml::Value::Array(vec!["https://x.example".into()])
                }
                Some((_, Some(toml::Value::Array(_)))) => toml::Value::Array(Vec::new()),
                other => panic!("{}: unexpected default {other:?}", key.id),
            };
            let changed = Settings::from_toml_str(&format!("[{}]\n{} = {other}\n", key.section, key.name)).unwrap();
            assert_ne!(
                format!("{:?}", changed.config()),
                defaults,
                "`{}` does not reach Config field {field} in `Settings::config`",
                key.id
            );
        }
    }

    #[test]
    fn a_short_hs256_secret_is_refused_beyond_loopback_only() {
        let secret = |bind: &str, secret: &str| {
            Settings::from_toml_str(&format!(
                "[server]\nbind = \"{bind}\"\n[auth]\njwt_secret = \"{secret}\"\n[encryption]\nserver_key_files = [\"k\"]\n"
            ))
        };
        let short = secret("0.0.0.0:8080", "0123456789abcdef0123456789abcde")
            .unwrap_err()
            .to_string();
        assert!(short.starts_with("`auth.jwt_secret` has 31 bytes"), "{short}");
        assert!(
            !short.contains("0123456789abcdef"),
            "the secret is in the error: {short}"
        );
        assert!(secret("127.0.0.1:8080", "s").is_ok());
    }

    #[test]
    fn log_levels_must_be_level_names() {
        let level = |l: &str| err(&format!("[log]\nlevel = \"{l}\"\n"));
        assert!(
            level("verbose").contains("does not end in a level"),
            "{}",
            level("verbose")
        );
        assert!(
            level("warning").contains("did you mean `warn`?"),
            "{}",
            level("warning")
        );
        assert!(
            level("sealcast=inf").contains("did you mean `sealcast=info`?"),
            "{}",
            level("sealcast=inf")
        );
        for good in ["info", "DEBUG", "sealcast=debug,info", "off"] {
            assert!(
                Settings::from_toml_str(&format!("[log]\nlevel = \"{good}\"\n")).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn origins_need_a_scheme_and_no_path() {
        let origins = |o: &str| err(&format!("[server]\nallowed_origins = [\"{o}\"]\n"));
        assert!(origins("example.com").contains("did you mean \"https://example.com\"?"));
        assert!(origins("https://example.com/").contains("did you mean \"https://example.com\"?"));
        assert!(origins("null").contains("no scheme"));
        let ok = "[server]\nallowed_origins = [\"https://example.com\", \"http://localhost:3000\"]\n";
        assert!(Settings::from_toml_str(ok).is_ok());
    }

    #[test]
    fn unknown_variables_are_named_with_a_suggestion() {
        let warnings = unknown_variables([
            "SEALCAST_HEARTBEAT_INTERVAL",
            "SEALCAST_BIND",
            "SEALCAST_CONFIG",
            "HOME",
            "SEALCAST_ZZZ_QQQ",
        ]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("did you mean SEALCAST_HEARTBEAT_INTERVAL_MS?"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].starts_with("SEALCAST_ZZZ_QQQ is not a sealcast setting"),
            "{warnings:?}"
        );
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }
}
