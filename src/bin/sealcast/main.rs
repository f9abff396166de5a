//! The `sealcast` command: run the server, mint development tokens.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)
)]

mod demo;

mod emit;

mod reload;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sealcast::auth::{self, JwtAuthenticator};
use sealcast::crypto::{StaticKey, StaticKeySet};
use sealcast::Server;

#[derive(Parser)]
#[command(name = "sealcast", version, about = "Encryption-first real-time messaging server")]
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
    /// Generate a wsenc/1 server static key (PKCS#8 PEM) and print its kid and public key.
    Keygen(KeygenArgs),
}

#[derive(Args)]
struct KeygenArgs {
    /// Where to write the private key (created with mode 0600).
    #[arg(long, default_value = "sealcast-key.pem")]
    out: std::path::PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on. Anything but loopback requires real authentication (SEALCAST_JWT_SECRET,
    /// SEALCAST_JWT_PUBLIC_KEY_FILE or SEALCAST_AUTH_PROXY_URL) and SEALCAST_SERVER_KEY_FILE.
    #[arg(long, env = "SEALCAST_BIND", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// HS256 secret for client tokens. Unset on loopback: a random one is generated and printed (dev mode).
    #[arg(long, env = "SEALCAST_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// WebSocket path.
    #[arg(long, env = "SEALCAST_PATH", default_value = "/ws")]
    path: String,
    /// Refuse sessions without an encryption handshake (wsenc/1).
    #[arg(long, env = "SEALCAST_REQUIRE_ENCRYPTION", default_value_t = true, action = clap::ArgAction::Set)]
    require_encryption: bool,
    /// wsenc/1 static key files (PKCS#8 PEM from `sealcast keygen`), comma separated: current first, then the
    /// next key during a rotation. Unset on loopback: an ephemeral key is generated (dev mode).
    #[arg(long, env = "SEALCAST_SERVER_KEY_FILE", value_delimiter = ',')]
    server_key_file: Vec<std::path::PathBuf>,
    /// wsenc/1 records per direction and epoch before a key update (max 1048576).
    #[arg(long, env = "SEALCAST_MAX_RECORDS_PER_EPOCH", default_value_t = 1 << 20)]
    max_records_per_epoch: u64,
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
    /// Serve the demo chat at /demo/ with an open token endpoint (implies client publish; loopback only).
    #[arg(
        long,
        env = "SEALCAST_DEMO",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    demo: bool,
    /// Allow --demo on a non-loopback bind (anyone reaching the server can then get a demo token).
    #[arg(long, env = "SEALCAST_DEMO_PUBLIC", default_value_t = false, action = clap::ArgAction::Set)]
    demo_public: bool,
    /// Enables the HTTP API (POST /api/publish, /api/disconnect) with this bearer key.
    #[arg(long, env = "SEALCAST_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Admin listener for /livez, /healthz, /readyz and /metrics (`off` disables it). Keep it private.
    #[arg(long, env = "SEALCAST_ADMIN_BIND", default_value = "127.0.0.1:9090")]
    admin_bind: String,
    /// Log format: `text` or `json` (one JSON object per line). The level filter is SEALCAST_LOG (default info).
    #[arg(long, env = "SEALCAST_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(flatten)]
    bus: emit::BusArgs,
    #[command(flatten)]
    auth: reload::AuthArgs,
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
        Command::Token(args) => match auth::mint(args.secret.as_bytes(), &args.sub, args.ttl, args.rooms) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sealcast token: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Keygen(args) => match keygen(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sealcast keygen: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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

fn keygen(args: &KeygenArgs) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    let key = StaticKey::generate()?;
    let pem = key.to_pkcs8_pem()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&args.out)
        .map_err(|e| format!("cannot create {}: {e} (use --force to overwrite)", args.out.display()))?;
    file.write_all(pem.as_bytes())?;
    println!("wrote {}", args.out.display());
    println!("kid={}", key.kid_b64u());
    println!("publicKey={}", key.public_key_b64u());
    Ok(())
}

fn load_keys(paths: &[std::path::PathBuf]) -> Result<StaticKeySet, Box<dyn std::error::Error>> {
    let mut keys: Option<StaticKeySet> = None;
    for path in paths {
        let pem = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?,
        );
        let key = StaticKey::from_pkcs8_pem(&pem)
            .map_err(|e| format!("key file {} is not a P-256 PKCS#8 PEM key: {e}", path.display()))?;
        keys = Some(match keys {
            None => StaticKeySet::new(key),
            Some(set) => set.with_key(key)?,
        });
    }
    keys.ok_or_else(|| "no key file given".into())
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SEALCAST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let secret_set = args.jwt_secret.as_deref().is_some_and(|s| !s.is_empty());
    let mode = reload::AuthMode::from_args(&args.auth, secret_set)?;
    if !args.bind.ip().is_loopback() {
        let mut missing = Vec::new();
        if !secret_set && !mode.is_configured() {
            missing.push(
                "SEALCAST_JWT_SECRET, SEALCAST_JWT_PUBLIC_KEY_FILE or SEALCAST_AUTH_PROXY_URL (client authentication)",
            );
        }
        if args.server_key_file.is_empty() {
            missing.push("SEALCAST_SERVER_KEY_FILE (wsenc/1 static key, see `sealcast keygen`)");
        }
        if !missing.is_empty() {
            return Err(format!(
                "refusing to listen on {} beyond loopback without: {}",
                args.bind,
                missing.join(", ")
            )
            .into());
        }
    }
    if args.demo {
        demo::check_bind(args.bind, args.demo_public)?;
    }
    let secret = match args.jwt_secret.filter(|s| !s.is_empty()) {
        _ if mode.is_configured() => None,
        Some(secret) => Some(zeroize::Zeroizing::new(secret)),
        None if args.bind.ip().is_loopback() => {
            let secret = auth::random_secret();
            let sample = auth::mint(secret.as_bytes(), "dev-user", Duration::from_secs(3600), None)?;
            println!("sealcast: development mode (loopback only): SEALCAST_JWT_SECRET is not set.");
            println!("  generated secret: {}", secret.as_str());
            println!("  sample token (sub=dev-user, 1h): {sample}");
            Some(secret)
        }
        None => {
            return Err(format!(
                "refusing to listen on {} without authentication: set SEALCAST_JWT_SECRET (or bind to 127.0.0.1)",
                args.bind
            )
            .into())
        }
    };
    let keys = match args.server_key_file.as_slice() {
        [] if args.bind.ip().is_loopback() => {
            let key = StaticKey::generate()?;
            println!("sealcast: development mode: SEALCAST_SERVER_KEY_FILE is not set; using an ephemeral key.");
            println!("  kid={} publicKey={}", key.kid_b64u(), key.public_key_b64u());
            StaticKeySet::new(key)
        }
        [] => {
            return Err(format!(
                "refusing to listen on {} without a static key: set SEALCAST_SERVER_KEY_FILE (see `sealcast keygen`)",
                args.bind
            )
            .into())
        }
        paths => load_keys(paths)?,
    };
    if args.demo && secret.is_none() {
        return Err("the demo mints HS256 tokens: it needs SEALCAST_JWT_SECRET, not a public key or a proxy".into());
    }
    let admin_bind: Option<SocketAddr> = match args.admin_bind.as_str() {
        "off" => None,
        addr => Some(
            addr.parse()
                .map_err(|_| format!("SEALCAST_ADMIN_BIND: {addr:?} is not an address like 127.0.0.1:9090 or `off`"))?,
        ),
    };
    // The recorder must exist before the server creates its metric handles.
    let prometheus = match admin_bind {
        Some(_) => Some(
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| format!("cannot install the metrics recorder: {e}"))?,
        ),
        None => None,
    };
    let builder = Server::builder()
        .static_keys(keys)
        .max_records_per_epoch(args.max_records_per_epoch)
        .path(args.path)
        .require_encryption(args.require_encryption)
        .allow_client_publish(args.allow_client_publish || args.demo)
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
        .room_validator(auth::rooms_claim_validator);
    let (builder, jwt_reload) = match (mode, &secret) {
        (reload::AuthMode::PublicKey { authenticator, file }, _) => (
            builder.authenticator(authenticator.clone()),
            Some((authenticator, file)),
        ),
        (reload::AuthMode::Proxy(proxy), _) => (builder.authenticator(proxy), None),
        (reload::AuthMode::Secret, Some(secret)) => {
            (builder.authenticator(JwtAuthenticator::hs256(secret.as_bytes())), None)
        }
        (reload::AuthMode::Secret, None) => return Err("no client authentication configured".into()),
    };
    let (builder, redis) = args.bus.apply(builder)?;
    let server = builder.build()?;
    emit::announce(redis.as_ref()).await;
    let mut app = server.router();
    if let Some(key) = args.api_key.as_deref().filter(|k| !k.is_empty()) {
        app = app.merge(server.api_router(key));
    }
    if let (true, Some(secret)) = (args.demo, &secret) {
        tracing::warn!("demo mode: /demo/token hands out tokens to anyone who asks; client publish is on");
        app = app.merge(demo::router(secret.clone(), &server.config().path));
    }
    let signals = shutdown_signal()?;
    reload::Reloader {
        server: server.clone(),
        server_key_files: args.server_key_file,
        jwt: jwt_reload,
    }
    .spawn()?;
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    tracing::info!(addr = %listener.local_addr()?, path = %server.config().path, "listening");
    if let (Some(addr), Some(prometheus)) = (admin_bind, prometheus) {
        let admin = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot bind the admin listener (SEALCAST_ADMIN_BIND) {addr}: {e}"))?;
        let redis = redis.clone();
        let router = server.admin_router(move || {
            if let Some(bus) = &redis {
                sealcast::admin::record_redis_stats(&bus.stats());
            }
            prometheus.render()
        });
        println!("sealcast: admin on http://{}", admin.local_addr()?);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(admin, router).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
    }
    if args.demo {
        let addr = listener.local_addr()?;
        println!("sealcast: demo chat at http://{addr}/demo/ (demo mode: not for production)");
    }
    println!(
        "sealcast: listening on ws://{}{}",
        listener.local_addr()?,
        server.config().path
    );
    let stopper = server.clone();
    tokio::spawn(async move {
        let second = signals.first().await;
        tracing::info!("shutting down (a second SIGTERM/SIGINT exits at once)");
        tokio::spawn(async move {
            let status = second.next().await;
            eprintln!("sealcast: second signal: exiting now without waiting for the graceful shutdown");
            std::process::exit(status);
        });
        stopper.shutdown().await;
    });
    // Small frames must not wait for Nagle; peer addresses feed the per-IP limits.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown({
            let s = server.clone();
            async move { s.stopped().await }
        })
        .await?;
    // Let the connection tasks finish their close handshakes.
    server.shutdown().await;
    Ok(())
}

/// SIGTERM and SIGINT, registered before the listener is announced so an early signal is not lost.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Waits for the first signal (start the graceful shutdown); the streams stay registered for the next one.
    async fn first(mut self) -> Self {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        self
    }

    /// Waits for another signal and returns the exit status for it (128 + the signal number).
    async fn next(mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => 128 + 15,
            _ = self.int.recv() => 128 + 2,
        }
    }
}

/// Registers SIGTERM and SIGINT now (before the listener is announced).
fn shutdown_signal() -> std::io::Result<Signals> {
    use tokio::signal::unix::{signal, SignalKind};
    Ok(Signals {
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
    })
}
