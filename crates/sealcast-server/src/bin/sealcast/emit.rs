//! The `sealcast emit` command, and the Redis bus of `sealcast serve`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args};
use sealcast::bus::{BusMode, RedisBus};
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
        Ok(receivers) => {
            println!("sealcast emit: published to {receivers} subscriber(s)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sealcast emit: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn emit(args: EmitArgs) -> Result<usize, Box<dyn std::error::Error>> {
    let redis = args.bus.settings();
    let endpoint = redis
        .endpoint()
        .ok_or("set --redis-url or --redis-cluster-nodes (or SEALCAST_REDIS_URL / SEALCAST_REDIS_CLUSTER_NODES)")?;
    let mode = redis.bus_mode.unwrap_or_else(|| endpoint.default_mode());
    let data: Box<RawValue> = serde_json::from_str(&args.data).map_err(|e| format!("--data is not valid JSON: {e}"))?;
    let emitter = Emitter::connect_with(endpoint, mode, redis.secret()).await?;
    let exclude: Vec<&str> = args.exclude.iter().map(String::as_str).collect();
    let n = if let Some(room) = &args.room {
        emitter.to_room(room, &args.event, &data, &exclude).await?
    } else if let Some(user) = &args.user {
        emitter.to_user(user, &args.event, &data).await?
    } else if let Some(client) = &args.client {
        emitter.to_client(client, &args.event, &data).await?
    } else {
        emitter.broadcast(&args.event, &data, &exclude).await?
    };
    Ok(n)
}
