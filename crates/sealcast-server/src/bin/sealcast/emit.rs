//! The `sealcast emit` command, and the Redis bus of `sealcast serve`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args};
use sealcast::bus::{BusMode, RedisBus};
use sealcast::history::Published;
use sealcast::{Emitter, ServerBuilder};
use sealcast_server::settings::{CredentialUrl, RedisSettings, Secret};
use serde_json::value::RawValue;

/// Where `emit` publishes (`serve` takes the same settings from its `[redis]` section).
#[derive(Args, Clone)]
pub struct BusArgs {
    /// Redis server carrying messages between instances, e.g. redis://127.0.0.1:6379.
    #[arg(
        long,
        env = "SEALCAST_REDIS_URL",
        conflicts_with = "redis_cluster_nodes",
        hide_env_values = true
    )]
    redis_url: Option<String>,
    /// Redis Cluster seed nodes (comma separated), e.g. redis://10.0.0.1:7000,redis://10.0.0.2:7000.
    #[arg(
        long,
        env = "SEALCAST_REDIS_CLUSTER_NODES",
        value_delimiter = ',',
        hide_env_values = true
    )]
    redis_cluster_nodes: Option<Vec<String>>,
    /// Pub/sub flavour: classic (PUBLISH, reference-compatible) or sharded (SPUBLISH, Redis Cluster ≥ 7). Default:
    /// classic for --redis-url, sharded for --redis-cluster-nodes. Every instance and emitter must agree.
    #[arg(long, env = "SEALCAST_BUS_MODE")]
    bus_mode: Option<BusMode>,
    /// Shared secret signing bus envelopes (HMAC-SHA256); unsigned or forged ones are refused. Reference emitters
    /// cannot sign: leave unset in mixed fleets.
    #[arg(long, env = "SEALCAST_BUS_SECRET", hide_env_values = true)]
    bus_secret: Option<String>,
}

impl BusArgs {
    /// The same settings as `serve`'s `[redis]` section.
    fn settings(&self) -> RedisSettings {
        RedisSettings {
            url: self.redis_url.clone().map(CredentialUrl::new),
            cluster_nodes: self
                .redis_cluster_nodes
                .iter()
                .flatten()
                .map(|n| CredentialUrl::new(n.as_str()))
                .collect(),
            bus_mode: self.bus_mode,
            bus_secret: self.bus_secret.clone().map(Secret::new),
        }
    }
}

/// Puts a Redis bus on `builder` when `redis` configures one.
pub fn apply(
    redis: &RedisSettings,
    builder: ServerBuilder,
) -> Result<(ServerBuilder, Option<RedisBus>), Box<dyn std::error::Error>> {
    let Some(endpoint) = redis.endpoint() else {
        return Ok((builder, None));
    };
    let mut bus = RedisBus::builder(endpoint);
    if let Some(mode) = redis.bus_mode {
        bus = bus.mode(mode);
    }
    if let Some(secret) = redis.secret() {
        bus = bus.secret(secret);
    }
    let bus = bus.build()?;
    Ok((builder.bus(bus.clone()), Some(bus)))
}

/// Logs how the bus came up; a Redis that is not there yet is not fatal (the bus keeps reconnecting and
/// readiness says so).
pub async fn announce(bus: Option<&RedisBus>) {
    let Some(bus) = bus else {
        return;
    };
    if bus.wait_ready(Duration::from_secs(5)).await {
        tracing::info!(mode = %bus.mode(), "redis bus ready");
    } else {
        tracing::warn!(mode = %bus.mode(), "redis bus not reachable yet; retrying in the background");
    }
}

/// `sealcast emit`: publish one message to a fleet through Redis.
#[derive(Args)]
#[command(group(ArgGroup::new("to").required(true).args(["room", "user", "client", "broadcast"])))]
pub struct EmitArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// Send to every member of this room.
    #[arg(long)]
    room: Option<String>,
    /// Send to every session of this user.
    #[arg(long)]
    user: Option<String>,
    /// Send to this connection id.
    #[arg(long)]
    client: Option<String>,
    /// Send to every authenticated client.
    #[arg(long)]
    broadcast: bool,
    /// Event name (not a reserved one such as `connected`).
    #[arg(long)]
    event: String,
    /// Payload, as JSON.
    #[arg(long, default_value = "null")]
    data: String,
    /// Client ids that must not receive it (room and broadcast; comma separated).
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    /// Idempotency key (1 to 64 bytes; with --room): a message whose key was already used for the room within the
    /// history TTL, by an emitter or a server, is not delivered again.
    #[arg(long, requires = "room", conflicts_with = "exclude")]
    id: Option<String>,
    /// The fleet's history rooms (`serve`'s `[history] rooms`, comma separated): messages to them get the room's
    /// next offset and are kept for recovering clients. Every instance and emitter must agree.
    #[arg(long, env = "SEALCAST_HISTORY_ROOMS", value_delimiter = ',')]
    history_rooms: Vec<String>,
    /// Messages kept per history room (`serve`'s `[history] size`).
    #[arg(long, env = "SEALCAST_HISTORY_SIZE", default_value_t = sealcast::Config::default().history_size)]
    history_size: usize,
    /// How long a history room keeps a message and a key is remembered, in milliseconds (`serve`'s `[history]
    /// ttl_ms`).
    #[arg(long, env = "SEALCAST_HISTORY_TTL_MS", default_value_t = 300_000)]
    history_ttl_ms: u64,
}

pub fn run(args: EmitArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sealcast emit: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(emit(args)) {
        Ok(outcome) => {
            println!("sealcast emit: {outcome}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sealcast emit: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn emit(args: EmitArgs) -> Result<String, Box<dyn std::error::Error>> {
    let redis = args.bus.settings();
    let endpoint = redis
        .endpoint()
        .ok_or("set --redis-url or --redis-cluster-nodes (or SEALCAST_REDIS_URL / SEALCAST_REDIS_CLUSTER_NODES)")?;
    let mode = redis.bus_mode.unwrap_or_else(|| endpoint.default_mode());
    let data: Box<RawValue> = serde_json::from_str(&args.data).map_err(|e| format!("--data is not valid JSON: {e}"))?;
    let mut emitter = Emitter::connect_with(endpoint, mode, redis.secret()).await?;
    if !args.history_rooms.is_empty() {
        emitter = emitter.with_history(
            args.history_rooms.clone(),
            args.history_size,
            Duration::from_millis(args.history_ttl_ms),
        );
    }
    let exclude: Vec<&str> = args.exclude.iter().map(String::as_str).collect();
    let n = if let Some(room) = &args.room {
        if let Some(id) = &args.id {
            return Ok(describe(&emitter.publish(room, &args.event, &data, Some(id)).await?));
        }
        emitter.to_room(room, &args.event, &data, &exclude).await?
    } else if let Some(user) = &args.user {
        emitter.to_user(user, &args.event, &data).await?
    } else if let Some(client) = &args.client {
        emitter.to_client(client, &args.event, &data).await?
    } else {
        emitter.broadcast(&args.event, &data, &exclude).await?
    };
    Ok(format!("published to {n} subscriber(s)"))
}

/// What a publish with an idempotency key came to.
fn describe(published: &Published) -> String {
    let at = match &published.position {
        Some(p) => format!(" at offset {} of epoch {}", p.offset, p.epoch),
        None => String::new(),
    };
    match published.duplicate {
        true => format!("already published with this id{at}: not sent again"),
        false => format!("published{at}"),
    }
}
