//! `sealcast-bench serve`: the sealcast server as `sealcast serve` wires it (HS256 tokens, wsenc/1 static key,
//! shipped defaults), with the abuse limits the reference does not have lifted so a load generator can drive
//! it: the per-connection message and join rates (one publisher sends whole bursts; the presence scenario joins
//! hundreds of times from one session) and sessions per user.

use std::net::SocketAddr;

use sealcast::auth::{self, JwtAuthenticator};
use sealcast::bus::{RedisBus, RedisEndpoint};
use sealcast::crypto::{StaticKey, StaticKeySet};
use sealcast::{Rate, Server};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub async fn serve() -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEALCAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let bind: SocketAddr = env("SEALCAST_BIND", SocketAddr::from(([127, 0, 0, 1], 8080)));
    if !bind.ip().is_loopback() {
        return Err("the benchmark server binds to loopback only".into());
    }
    let secret = std::env::var("SEALCAST_JWT_SECRET").map_err(|_| "SEALCAST_JWT_SECRET is required")?;
    let key_file = std::env::var("SEALCAST_SERVER_KEY_FILE").map_err(|_| "SEALCAST_SERVER_KEY_FILE is required")?;
    let pem = std::fs::read_to_string(&key_file).map_err(|e| format!("{key_file}: {e}"))?;
    let key = StaticKey::from_pkcs8_pem(&pem).map_err(|e| e.to_string())?;
    let mut builder = Server::builder();
    // SEALCAST_REDIS_URL: route through the Redis bus (the cross-instance latency scenario).
    if let Ok(url) = std::env::var("SEALCAST_REDIS_URL") {
        let bus = RedisBus::builder(RedisEndpoint::single(url))
            .build()
            .map_err(|e| e.to_string())?;
        if !bus.wait_ready(std::time::Duration::from_secs(5)).await {
            return Err("redis bus not ready".into());
        }
        builder = builder.bus(bus);
    }
    let server = builder
        .static_keys(StaticKeySet::new(key))
        .require_encryption(env("SEALCAST_REQUIRE_ENCRYPTION", false))
        .allow_client_publish(true)
        .outbound_queue(env("SEALCAST_OUTBOUND_QUEUE", 1024))
        .encrypted_batch_limit(env("SEALCAST_ENCRYPTED_BATCH_LIMIT", 10))
        .read_buffer_size(env(
            "SEALCAST_READ_BUFFER_SIZE",
            sealcast::Config::default().read_buffer_size,
        ))
        // SEALCAST_HISTORY_ROOMS (comma-separated patterns) / SEALCAST_HISTORY_SIZE: fan-out into rooms with history.
        .history_rooms(
            std::env::var("SEALCAST_HISTORY_ROOMS")
                .map(|v| v.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default(),
        )
        .history_size(env("SEALCAST_HISTORY_SIZE", sealcast::Config::default().history_size))
        // SEALCAST_PRESENCE_ROOMS (comma-separated patterns) / _EVENTS / _MAX_MEMBERS: the presence scenario.
        .presence_rooms(
            std::env::var("SEALCAST_PRESENCE_ROOMS")
                .map(|v| v.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default(),
        )
        .presence_events(env("SEALCAST_PRESENCE_EVENTS", true))
        .presence_max_members(env(
            "SEALCAST_PRESENCE_MAX_MEMBERS",
            sealcast::Config::default().presence_max_members,
        ))
        .message_rate(Rate::UNLIMITED)
        .join_rate(Rate::UNLIMITED)
        .max_sessions_per_user(usize::MAX)
        .authenticator(JwtAuthenticator::hs256(secret.as_bytes()))
        .room_validator(auth::rooms_claim_validator)
        .build()
        .map_err(|e| e.to_string())?;
    let listener = Server::listen(bind).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("sealcast: listening on ws://{addr}{}", server.config().path);
    // `Server::serve`, as the `sealcast` binary: sockets count against the limits from accept, TCP_NODELAY.
    let stopper = server.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        stopper.shutdown().await;
    });
    server.serve(listener, server.router()).await;
    server.shutdown().await;
    Ok(())
}
