//! The `sealcast` command: run the server, mint development tokens.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)
)]

// Writers release their buffers whenever they go idle; glibc's malloc turns that into heap trimming and page
// faults in every burst, mimalloc into free-list reuse (ARCHITECTURE.md, "Choices").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod demo;

mod emit;

mod cli_settings;

mod reload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sealcast::auth::{self, JwtAuthenticator};
use sealcast::crypto::{StaticKey, StaticKeySet};
use sealcast::Server;
use sealcast_server::settings::{AdminBind, Effective, LogFormat, Secret};
use sealcast_server::{Settings, SettingsError};

/// Exit status of `config check` for settings that cannot be used (as for a usage error; 1 stays "failed").
const BAD_SETTINGS: u8 = 2;

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
    /// Check a configuration or print a sample config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Mint an HS256 token for a user, signed with the server's `auth.jwt_secret` (--secret or SEALCAST_JWT_SECRET).
    Token(TokenArgs),
    /// Publish one message to a fleet through Redis (like the reference's emitter).
    Emit(Box<emit::EmitArgs>),
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
    /// TOML config file (`sealcast config sample` prints one); SEALCAST_* variables and flags override it.
    #[arg(long, env = "SEALCAST_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: cli_settings::SettingArgs,
}

impl ServeArgs {
    /// The settings `serve` runs with: the file, then the environment and flags, validated.
    fn load(&self) -> Result<Effective, String> {
        let text = match &self.config {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?,
            None => String::new(),
        };
        Settings::load(&text, &self.settings.overrides).map_err(|e| match (&self.config, &e) {
            // These come from the file only: say which file.
            (
                Some(path),
                SettingsError::Syntax(_) | SettingsError::UnknownSection { .. } | SettingsError::UnknownKey { .. },
            ) => {
                format!("{}: {e}", path.display())
            }
            _ => e.to_string(),
        })
    }
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the settings `serve` would use (config file, environment, flags) and print them with where each
    /// came from, secrets redacted. Exits 2 when they are invalid.
    Check(ServeArgs),
    /// Print a config file with every setting at its default and its meaning (the committed sealcast.toml).
    Sample,
    /// Print the configuration reference as Markdown (the committed docs/reference/configuration.md).
    Reference,
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
    /// HS256 secret: the server's `auth.jwt_secret`.
    #[arg(long, env = "SEALCAST_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
}

/// Where `sealcast token` finds no secret: say where it comes from rather than clap's bare "required".
const NO_TOKEN_SECRET: &str = "no secret to sign with: pass --secret or set SEALCAST_JWT_SECRET to the server's \
     `auth.jwt_secret` (a `sealcast serve` started without one generates a development secret and prints it)";

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
        Command::Emit(args) => emit::run(*args),
        Command::Token(args) => {
            let Some(secret) = args.secret.map(zeroize::Zeroizing::new) else {
                eprintln!("sealcast token: {NO_TOKEN_SECRET}");
                return ExitCode::from(BAD_SETTINGS);
            };
            match auth::mint(secret.as_bytes(), &args.sub, args.ttl, args.rooms) {
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
        Command::Keygen(args) => match keygen(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sealcast keygen: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Config(ConfigCommand::Sample) => {
            print!("{}", Settings::sample_toml());
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Reference) => {
            print!("{}", Settings::reference_markdown());
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check(args)) => match check(&args) {
            Ok((report, warnings)) => {
                for warning in warnings {
                    eprintln!("sealcast config check: warning: {warning}");
                }
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sealcast config check: {e}");
                ExitCode::from(BAD_SETTINGS)
            }
        },
        Command::Serve(args) => {
            let settings = match args.load() {
                Ok(effective) => effective.settings,
                Err(e) => {
                    eprintln!("sealcast serve: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("sealcast: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let format = settings.log.format;
            match runtime.block_on(serve(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    match format {
                        LogFormat::Text => eprintln!("sealcast serve: {e}"),
                        // Logging is set up by now (its settings were valid): the failure is a JSON line too.
                        LogFormat::Json => tracing::error!(target: BANNER, "{e}"),
                    }
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `config check`: what `serve` would refuse, plus the key files' contents; the effective settings as text and
/// what `serve` would warn about.
fn check(args: &ServeArgs) -> Result<(String, Vec<String>), String> {
    let effective = args.load()?;
    let keys = &effective.settings.encryption.server_key_files;
    if !keys.is_empty() {
        load_keys(keys).map_err(|e| format!("`encryption.server_key_files`: {e}"))?;
    }
    reload::AuthMode::from_settings(&effective.settings.auth)?;
    Ok((effective.render(), warnings(&effective.settings)))
}

/// What `serve` starts with but warns about: the settings' own warnings and `SEALCAST_*` variables it ignores.
fn warnings(settings: &Settings) -> Vec<String> {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    let mut out = settings.warnings();
    out.extend(sealcast_server::settings::unknown_variables(
        names.iter().map(String::as_str),
    ));
    out
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

fn load_keys(paths: &[PathBuf]) -> Result<StaticKeySet, Box<dyn std::error::Error>> {
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

/// The target of the startup lines in `log.format = "json"`; always enabled, whatever `log.level` says.
const BANNER: &str = "sealcast::banner";

/// A startup line: printed as is for people, or an `info` event of [`BANNER`] in JSON so that every line is
/// JSON there (the message drops the `sealcast: ` prefix).
fn banner(format: LogFormat, text: &str) {
    match format {
        LogFormat::Text => println!("{text}"),
        LogFormat::Json => {
            let message = text.trim_start();
            tracing::info!(target: BANNER, "{}", message.strip_prefix("sealcast: ").unwrap_or(message));
        }
    }
}

async fn serve(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let format = settings.log.format;
    let banner_directive = format!("{BANNER}=info")
        .parse::<tracing_subscriber::filter::Directive>()
        .map_err(|e| format!("the log filter for startup lines: {e}"))?;
    let filter = settings.log_filter()?.add_directive(banner_directive);
    // Colour codes only for a terminal: in a file or a log collector they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    for warning in warnings(&settings) {
        tracing::warn!("{warning}");
    }
    let bind = settings.server.bind;
    let mode = reload::AuthMode::from_settings(&settings.auth)?;
    // `Settings::validate` already refused a public bind without real authentication or a key file; the guards
    // below keep development mode's generated credentials on loopback even if that check were ever bypassed.
    let secret = match settings.auth.jwt_secret.as_ref() {
        _ if !matches!(mode, reload::AuthMode::Secret) => None,
        Some(secret) => Some(zeroize::Zeroizing::new(secret.expose().to_owned())),
        None if bind.ip().is_loopback() => {
            let secret = auth::random_secret();
            let sample = auth::mint(secret.as_bytes(), "dev-user", Duration::from_secs(3600), None)?;
            banner(
                format,
                "sealcast: development mode (loopback only): no `auth.jwt_secret` (SEALCAST_JWT_SECRET).",
            );
            banner(format, &format!("  generated secret: {}", secret.as_str()));
            banner(format, &format!("  sample token (sub=dev-user, 1h): {sample}"));
            Some(secret)
        }
        None => return Err(format!("refusing to listen on {bind} without `auth.jwt_secret`").into()),
    };
    let keys = match settings.encryption.server_key_files.as_slice() {
        [] if bind.ip().is_loopback() => {
            let key = StaticKey::generate()?;
            banner(
                format,
                "sealcast: development mode: no `encryption.server_key_files` (SEALCAST_SERVER_KEY_FILE); using an \
                 ephemeral key.",
            );
            banner(
                format,
                &format!("  kid={} publicKey={}", key.kid_b64u(), key.public_key_b64u()),
            );
            StaticKeySet::new(key)
        }
        [] => return Err(format!("refusing to listen on {bind} without `encryption.server_key_files`").into()),
        paths => load_keys(paths)?,
    };
    if settings.demo.enabled && secret.is_none() {
        return Err(
            "the demo mints HS256 tokens: it needs `auth.jwt_secret`, not a public key, a JWKS or a proxy".into(),
        );
    }
    let admin_bind = match settings.admin.bind {
        AdminBind::Off => None,
        AdminBind::At(addr) => Some(addr),
    };
    // The recorder must exist before the server creates its metric handles.
    let prometheus = match admin_bind {
        Some(_) => Some(install_prometheus().map_err(|e| format!("cannot install the metrics recorder: {e}"))?),
        None => None,
    };
    let demo = settings.demo.enabled;
    let mut config = settings.config();
    if demo && config.history_rooms.is_empty() {
        // The demo page shows a room's recent messages on joining.
        config.history_rooms = vec![format!("{}*", demo::PREFIX)];
    }
    if demo && config.presence_rooms.is_empty() {
        // The demo page lists who is in the room.
        config.presence_rooms = vec![format!("{}*", demo::PREFIX)];
    }
    let builder = Server::builder()
        .config(config)
        .allow_client_publish(settings.server.allow_client_publish || demo)
        .static_keys(keys)
        .room_validator(auth::rooms_claim_validator);
    let mut jwks_reload = None;
    let (builder, jwt_reload) = match (mode, &secret) {
        (reload::AuthMode::PublicKey { authenticator, file }, _) => (
            builder.authenticator(authenticator.clone()),
            Some((authenticator, file)),
        ),
        (reload::AuthMode::Jwks(jwks), _) => {
            // Starting without keys beats refusing to start: the endpoint may be down for a moment, and the
            // refresher retries every 30 s meanwhile (tokens get `Authentication error` until then).
            match jwks.refresh().await {
                Ok(keys) => tracing::info!(keys, algorithm = %jwks.algorithm(), "JWKS fetched"),
                Err(error) => tracing::warn!(
                    %error,
                    "JWKS not available at startup: tokens are refused until a refresh succeeds (retried at least every 30 s)"
                ),
            }
            drop(jwks.spawn_refresher());
            jwks_reload = Some(jwks.clone());
            (builder.authenticator(jwks), None)
        }
        (reload::AuthMode::Proxy(proxy), _) => (builder.authenticator(proxy), None),
        (reload::AuthMode::Secret, Some(secret)) => {
            (builder.authenticator(JwtAuthenticator::hs256(secret.as_bytes())), None)
        }
        (reload::AuthMode::Secret, None) => return Err("no client authentication configured".into()),
    };
    let (builder, redis) = emit::apply(&settings.redis, builder)?;
    let server = builder.build()?;
    emit::announce(redis.as_ref()).await;
    let mut app: axum::Router = server.router();
    if let Some(key) = settings.api.api_key.as_ref().map(Secret::expose) {
        app = app.merge(server.api_router(key));
    }
    if let (true, Some(secret)) = (demo, &secret) {
        tracing::warn!("demo mode: /demo/token hands out tokens to anyone who asks; client publish is on");
        app = app.merge(demo::router(secret.clone(), &server.config().path));
    }
    let signals = shutdown_signal()?;
    reload::Reloader {
        server: server.clone(),
        server_key_files: settings.encryption.server_key_files.clone(),
        jwt: jwt_reload,
        jwks: jwks_reload,
    }
    .spawn()?;
    // A deep accept queue: a reconnect storm must not cost clients SYN retransmissions (`Server::listen`).
    let listener = Server::listen(bind)
        .map_err(|e| format!("cannot listen on {bind} (`server.bind`, SEALCAST_BIND, --bind): {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, path = %server.config().path, "listening");
    if let (Some(addr), Some(prometheus)) = (admin_bind, prometheus) {
        let admin = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (`admin.bind`, SEALCAST_ADMIN_BIND, --admin-bind): {e}"))?;
        let router = server.admin_router(move || prometheus.render());
        banner(format, &format!("sealcast: admin on http://{}", admin.local_addr()?));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(admin, router).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
    }
    if demo {
        let addr = listener.local_addr()?;
        banner(
            format,
            &format!("sealcast: demo chat at http://{addr}/demo/ (demo mode: not for production)"),
        );
    }
    banner(
        format,
        &format!(
            "sealcast: listening on ws://{}{}",
            listener.local_addr()?,
            server.config().path
        ),
    );
    let stopper = server.clone();
    tokio::spawn(async move {
        let second = signals.first().await;
        tracing::info!("shutting down (a second SIGTERM/SIGINT exits at once)");
        tokio::spawn(async move {
            let status = second.next().await;
            let message = "second signal: exiting now without waiting for the graceful shutdown";
            match format {
                LogFormat::Text => eprintln!("sealcast: {message}"),
                LogFormat::Json => tracing::warn!(target: BANNER, "{message}"),
            }
            std::process::exit(status);
        });
        stopper.shutdown().await;
    });
    // Counts sockets against the connection limits from accept and bounds the time to a request head.
    server.serve(listener, app).await;
    // Let the connection tasks finish their close handshakes.
    server.shutdown().await;
    Ok(())
}

/// The Prometheus recorder, with the library's buckets so that latencies are histograms (which add up across
/// instances) rather than the exporter's default summaries (which do not).
fn install_prometheus() -> Result<metrics_exporter_prometheus::PrometheusHandle, metrics_exporter_prometheus::BuildError>
{
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in sealcast::metrics::HISTOGRAM_BUCKETS {
        builder = builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)?;
    }
    builder.install_recorder()
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
