//! The `sealcast` command: run the server, mint development tokens.

mod emit;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sealcast::auth::{self, Hs256Authenticator};
use sealcast::Server;

#[derive(Parser)]
#[command(
    name = "sealcast",
    version,
    about = "Encryption-first real-time messaging server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Mint an HS256 token for a user (uses SEALCAST_JWT_SECRET).
    Token(TokenArgs),
    /// Publish one message to a fleet through Redis (like the reference's emitter).
    Emit(emit::EmitArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on. Anything but loopback requires SEALCAST_JWT_SECRET.
    #[arg(long, env = "SEALCAST_BIND", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// HS256 secret for client tokens. Unset on loopback: a random one is generated and printed (dev mode).
    #[arg(long, env = "SEALCAST_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// WebSocket path.
    #[arg(long, env = "SEALCAST_PATH", default_value = "/ws")]
    path: String,
    /// Refuse sessions without an encryption handshake.
    #[arg(long, env = "SEALCAST_REQUIRE_ENCRYPTION", default_value_t = false, action = clap::ArgAction::Set)]
    require_encryption: bool,
    /// Let clients publish to rooms they joined.
    #[arg(long, env = "SEALCAST_ALLOW_CLIENT_PUBLISH", default_value_t = false, action = clap::ArgAction::Set)]
    allow_client_publish: bool,
    /// Deliver a client's own publish back to it.
    #[arg(long, env = "SEALCAST_PUBLISH_TO_SELF", default_value_t = false, action = clap::ArgAction::Set)]
    publish_to_self: bool,
    /// Authentication window in milliseconds (×3 while authenticating).
    #[arg(long, env = "SEALCAST_AUTH_TIMEOUT_MS", default_value_t = 5_000)]
    auth_timeout_ms: u64,
    /// Heartbeat sweep period in milliseconds.
    #[arg(long, env = "SEALCAST_HEARTBEAT_INTERVAL_MS", default_value_t = 30_000)]
    heartbeat_interval_ms: u64,
    /// Silence after which an authenticated client is closed 4002, in milliseconds.
    #[arg(long, env = "SEALCAST_HEARTBEAT_TIMEOUT_MS", default_value_t = 90_000)]
    heartbeat_timeout_ms: u64,
    /// Largest inbound message after authentication, in bytes.
    #[arg(long, env = "SEALCAST_MAX_PAYLOAD_LENGTH", default_value_t = 128 * 1024)]
    max_payload_length: usize,
    /// Largest inbound message before authentication, in bytes.
    #[arg(long, env = "SEALCAST_MAX_PREAUTH_PAYLOAD_LENGTH", default_value_t = 8 * 1024)]
    max_preauth_payload_length: usize,
    /// Queued messages per connection before a 4007 close.
    #[arg(long, env = "SEALCAST_OUTBOUND_QUEUE", default_value_t = 1024)]
    outbound_queue: usize,
    /// Concurrent sealing operations across connections.
    #[arg(long, env = "SEALCAST_ENCRYPTED_BATCH_LIMIT", default_value_t = 10)]
    encrypted_batch_limit: usize,
    /// Rooms joined after authentication (comma separated).
    #[arg(
        long,
        env = "SEALCAST_DEFAULT_ROOMS",
        value_delimiter = ',',
        default_value = "ws-default,ws-notification"
    )]
    default_rooms: Vec<String>,
    /// Rooms per client.
    #[arg(long, env = "SEALCAST_MAX_ROOMS_PER_CLIENT", default_value_t = 256)]
    max_rooms_per_client: usize,
    /// Graceful shutdown bound in milliseconds.
    #[arg(long, env = "SEALCAST_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    shutdown_timeout_ms: u64,
    #[command(flatten)]
    bus: emit::BusArgs,
}

#[derive(Args)]
struct TokenArgs {
    /// User id (the `sub` claim).
    #[arg(long)]
    sub: String,
    /// Lifetime, e.g. `3600s`, `60m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// Room patterns the token allows joining (comma separated, `prefix*` allowed). Default: any room.
    #[arg(long, value_delimiter = ',')]
    rooms: Option<Vec<String>>,
    /// HS256 secret.
    #[arg(long, env = "SEALCAST_JWT_SECRET", hide_env_values = true)]
    secret: String,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected e.g. 90s, 30m, 1h, 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("bad duration unit in {s:?}: use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Emit(args) => emit::run(args),
        Command::Token(args) => {
            match auth::mint(args.secret.as_bytes(), &args.sub, args.ttl, args.rooms) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sealcast token: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("sealcast: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sealcast serve: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEALCAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let secret = match args.jwt_secret.filter(|s| !s.is_empty()) {
        Some(secret) => zeroize::Zeroizing::new(secret),
        None if args.bind.ip().is_loopback() => {
            let secret = auth::random_secret();
            let sample = auth::mint(secret.as_bytes(), "dev-user", Duration::from_secs(3600), None)?;
            println!("sealcast: development mode (loopback only): SEALCAST_JWT_SECRET is not set.");
            println!("  generated secret: {}", secret.as_str());
            println!("  sample token (sub=dev-user, 1h): {sample}");
            secret
        }
        None => {
            return Err(format!(
                "refusing to listen on {} without authentication: set SEALCAST_JWT_SECRET (or bind to 127.0.0.1)",
                args.bind
            )
            .into())
        }
    };
    let builder = Server::builder()
        .path(args.path)
        .require_encryption(args.require_encryption)
        .allow_client_publish(args.allow_client_publish)
        .publish_to_self(args.publish_to_self)
        .auth_timeout(Duration::from_millis(args.auth_timeout_ms))
        .heartbeat_interval(Duration::from_millis(args.heartbeat_interval_ms))
        .heartbeat_timeout(Duration::from_millis(args.heartbeat_timeout_ms))
        .max_payload_length(args.max_payload_length)
        .max_preauth_payload_length(args.max_preauth_payload_length)
        .outbound_queue(args.outbound_queue)
        .encrypted_batch_limit(args.encrypted_batch_limit)
        .default_rooms(args.default_rooms)
        .max_rooms_per_client(args.max_rooms_per_client)
        .shutdown_timeout(Duration::from_millis(args.shutdown_timeout_ms))
        .authenticator(Hs256Authenticator::new(secret.as_bytes()))
        .room_validator(auth::rooms_claim_validator);
    let (builder, redis) = args.bus.apply(builder)?;
    let server = builder.build()?;
    emit::announce(redis.as_ref()).await;
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    tracing::info!(addr = %listener.local_addr()?, path = %server.config().path, "listening");
    println!(
        "sealcast: listening on ws://{}{}",
        listener.local_addr()?,
        server.config().path
    );
    let stopper = server.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        stopper.shutdown().await;
    });
    axum::serve(listener, server.router())
        .with_graceful_shutdown({
            let s = server.clone();
            async move { s.stopped().await }
        })
        .await?;
    // Let the connection tasks finish their close handshakes.
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
