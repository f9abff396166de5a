//! `sealcast-bench`: a bounded load generator for sealcast and the Ignis reference peer.
//!
//! Speaks the plaintext protocol and wsenc/1 (sealcast) or the reference's ECDH mode (counted, not decrypted).
//! Receivers parse WebSocket frames straight from the socket and only count them; JSON is built only where a
//! latency sample needs it. Source addresses are spread over 127.0.0.x. Every run is bounded by a count and a
//! deadline; results are printed as one JSON object on stdout.
//!
//! The defaults fit a `sealcast serve` with its defaults (encryption required): sessions are encrypted and, without
//! `--pin-pem`, the key the loopback server serves at `/.well-known/sealcast.json` is pinned. Only the HS256
//! secret must be given (`--jwt-secret` or `SEALCAST_JWT_SECRET`); what else a scenario needs from the server
//! (client publishes for `fanout` and `latency`, plaintext sessions for `latency`) is named when it is missing.
//!
//! ```text
//! sealcast-bench --url ws://127.0.0.1:8080/ws --server sealcast --mode encrypted --pin-pem key.pem \
//!     fanout --receivers 1000 --messages 200 --payload 256 --runs 5
//! sealcast-bench --server ignis --url ws://127.0.0.1:8090/ws connect --connections 2000 --concurrency 32
//! sealcast-bench ... idle --connections 5000 --hold 10 --server-pid $PID
//! sealcast-bench ... latency --rate 1000 --seconds 10 [--pub-url ws://other-instance/ws]
//! sealcast-bench crypto-limit --seconds 3
//! ```

// Writers release their buffers whenever they go idle; glibc's malloc turns that into heap trimming and page
// faults in every burst, mimalloc into free-list reuse (ARCHITECTURE.md, "Choices").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod serve;
mod ws;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use sealcast::crypto::{ClientHandshake, PinnedKey, RecordOpener, RecordSealer, ServerHello, StaticKey};
use serde_json::{json, Map, Value};
use tokio::task::JoinSet;

type Res<T> = Result<T, String>;

const HEARTBEAT: &str = r#"{"event":"heartbeat"}"#;
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(20);

#[derive(Parser)]
#[command(
    name = "sealcast-bench",
    about = "Bounded WebSocket load generator for sealcast and the Ignis reference"
)]
struct Cli {
    #[command(flatten)]
    target: TargetArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct TargetArgs {
    /// WebSocket URL of the server under test.
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Which protocol dialect to speak.
    #[arg(long, global = true, value_enum, default_value = "sealcast")]
    server: Kind,
    /// Receivers' session type (`mixed`: every other receiver encrypted; `group`: encrypted with group records,
    /// wsenc/1 §11; frames shorter than the payload, the `room_key` records, are not counted). Encrypted by default,
    /// as a default sealcast server requires it.
    #[arg(long, global = true, value_enum, default_value = "encrypted")]
    mode: Mode,
    /// HS256 secret to mint sealcast tokens with.
    #[arg(long, global = true, env = "SEALCAST_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// The sealcast server's static key (PKCS#8 PEM) to pin for wsenc/1. Default: the keys the (loopback) server
    /// serves at /.well-known/sealcast.json.
    #[arg(long, global = true)]
    pin_pem: Option<PathBuf>,
    /// The server's PID: its CPU time and RSS are sampled from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Spread client source addresses over 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, global = true, default_value_t = 200)]
    src_addrs: u8,
    /// Room name.
    #[arg(long, global = true, default_value = "bench")]
    room: String,
    /// Connections being set up at once.
    #[arg(long, global = true, default_value_t = 64)]
    concurrency: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Kind {
    Sealcast,
    Ignis,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Mode {
    Plain,
    Encrypted,
    Mixed,
    /// wsenc/1 sessions that advertise group records (`roomKeys`).
    Group,
    /// wsenc/1 sessions that advertise batched group records too (`roomKeys: 2`, §11.4): every body of a batched
    /// record counts as a delivery.
    Batch,
    /// wsenc/1 sessions that take batched group records as binary frames (`roomKeys: 3`, §11.5): every body of a
    /// binary batch counts as a delivery.
    #[value(name = "binbatch")]
    BinBatch,
}

#[derive(Subcommand)]
enum Cmd {
    /// Room fan-out: N receivers, M messages of P bytes published by one client, R measured bursts.
    Fanout(FanoutArgs),
    /// Connect + authenticate (+ handshake) rate and latency.
    Connect(ConnectArgs),
    /// Idle memory per connection (server RSS delta / N), optionally held with heartbeats.
    Idle(IdleArgs),
    /// Reconnect storm: N sessions held, the server (--server-pid) is sent SIGTERM, the harness restarts it and
    /// writes the new PID to --pid-file, every client reconnects at once.
    Storm(StormArgs),
    /// End-to-end latency at a fixed publish rate (publisher may be on another instance).
    Latency(LatencyArgs),
    /// Room history (sealcast): server CPU for clients recovering M missed messages on join, against the same
    /// clients joining and receiving M live messages. The server needs the room in `SEALCAST_HISTORY_ROOMS`.
    Recover(RecoverArgs),
    /// Presence (sealcast): M members held in a presence room `<room>-p` and a plain room `<room>-q`; then the
    /// server CPU of a presence query against a join (of a room already joined), and of a join + leave of the
    /// presence room against the plain one. The server needs `SEALCAST_PRESENCE_ROOMS=<room>-p` and
    /// `SEALCAST_PRESENCE_EVENTS=false` (members do not read; above `max_members` no events are sent anyway).
    Presence(PresenceArgs),
    /// Run a sealcast server for benchmarks (see serve.rs: shipped defaults, abuse limits lifted).
    Serve,
    /// The bare handshake crypto limit on this core: keygen + 2 ECDH + HKDF per second.
    CryptoLimit {
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
}

#[derive(Args)]
struct FanoutArgs {
    #[arg(long, default_value_t = 1000)]
    receivers: usize,
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Size of each delivered (plaintext) frame in bytes.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Measured bursts (after one warm-up burst of messages/10).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Deadline per burst in seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

#[derive(Args)]
struct ConnectArgs {
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// Complete the client side of wsenc/1 too (costs load-generator CPU; off: the server's work is measured).
    #[arg(long)]
    verify: bool,
    /// How each session ends: `graceful` (Close frame, the server's answer, TCP close: what a leaving browser
    /// does) or `drop` (TCP close only).
    #[arg(long, value_enum, default_value = "graceful")]
    close: CloseKind,
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum CloseKind {
    Graceful,
    Drop,
}

#[derive(Args)]
struct StormArgs {
    /// Sessions held before the restart. Every process here has a 20,000-descriptor limit, which caps it near
    /// 19,900 (the server holds one socket per session too).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// The harness writes the restarted server's PID here; its RSS and CPU are sampled from it.
    #[arg(long)]
    pid_file: PathBuf,
    /// Deadline for the whole storm in seconds.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
}

#[derive(Args)]
struct RecoverArgs {
    /// Clients in each phase.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Messages each client missed (recovery) or receives live.
    #[arg(long, default_value_t = 100)]
    missed: usize,
    /// Size of each delivered (plaintext) frame in bytes.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Deadline per phase in seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

#[derive(Args)]
struct PresenceArgs {
    /// Members held in each room.
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Operations of each kind measured (queries, joins, join + leave pairs), one after another.
    #[arg(long, default_value_t = 500)]
    ops: usize,
    /// Members being set up at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Deadline for setting up the members, in seconds.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
}

#[derive(Args)]
struct IdleArgs {
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// Also sample RSS after each of these connection counts (comma separated, ascending).
    #[arg(long, value_delimiter = ',')]
    steps: Vec<usize>,
    /// Hold the connections this long (seconds) and count unexpected closes.
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Heartbeat period while holding (seconds).
    #[arg(long, default_value_t = 30.0)]
    heartbeat: f64,
    /// Settle time before each RSS sample (seconds).
    #[arg(long, default_value_t = 1.5)]
    settle: f64,
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
}

#[derive(Args)]
struct LatencyArgs {
    /// Publisher's URL (another instance for the cross-instance scenario); default: --url.
    #[arg(long)]
    pub_url: Option<String>,
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// Publishes per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 128)]
    payload: usize,
}

/// Everything needed to open a session.
struct Ctx {
    kind: Kind,
    addr: SocketAddr,
    host: String,
    path: String,
    /// HS256 secret (sealcast): every connection gets its own user, as sessions per user are capped.
    secret: Option<String>,
    /// The server keys wsenc/1 sessions accept (empty: plaintext only).
    pins: Vec<PinnedKey>,
    /// Why `pins` is empty, said when a wsenc/1 session needs them (a plaintext scenario does not).
    pin_error: Option<String>,
    /// One client public key reused where the client side is not completed (std base64 for Ignis, b64url for
    /// sealcast).
    shared_pub: String,
    /// The `roomKeys` receivers advertise: 1 with `--mode group`, 2 with `--mode batch`, else 0 (none).
    room_keys: u64,
    src_addrs: u8,
    room: String,
}

fn parse_url(url: &str) -> Res<(SocketAddr, String, String)> {
    let rest = url.strip_prefix("ws://").ok_or("only ws:// URLs")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or("no address")?;
    if !addr.ip().is_loopback() {
        return Err("loopback targets only".into());
    }
    let path = if path.is_empty() { "/" } else { path };
    Ok((addr, host.to_string(), path.to_string()))
}

/// What to do when a sealcast server refuses client publishes (its default).
const PUBLISH_HINT: &str = "the server refuses client publishes (`Publish not allowed`): start `sealcast serve` with \
     SEALCAST_ALLOW_CLIENT_PUBLISH=true and SEALCAST_MESSAGE_RATE=0 (a publisher sends whole bursts), or run \
     `sealcast-bench serve`";
/// What to do when a sealcast server closes the publisher for its message rate.
const RATE_HINT: &str = "the server closed the publisher 4008 (its per-connection message rate): start `sealcast \
     serve` with SEALCAST_MESSAGE_RATE=0, or run `sealcast-bench serve`";

/// The static keys a server publishes at `/.well-known/sealcast.json`. Pinning what the server itself serves
/// proves nothing in general; it is acceptable here only because targets are loopback (see [`parse_url`]).
async fn served_keys(addr: SocketAddr, host: &str) -> Res<Vec<PinnedKey>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fail = |e: String| {
        format!(
            "wsenc/1 needs the server key: pass --pin-pem FILE (reading \
             http://{host}/.well-known/sealcast.json failed: {e})"
        )
    };
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let request = format!("GET /.well-known/sealcast.json HTTP/1.0\r\nHost: {host}\r\n\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut response = Vec::new();
    tcp.take(64 * 1024)
        .read_to_end(&mut response)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let head_end = memchr::memmem::find(&response, b"\r\n\r\n").ok_or_else(|| fail("no HTTP answer".into()))?;
    let (head, body) = response.split_at(head_end + 4);
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        let status = String::from_utf8_lossy(head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        return Err(fail(status));
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| fail(e.to_string()))?;
    let keys: Vec<PinnedKey> = doc["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| PinnedKey::from_b64u(k["publicKey"].as_str()?).ok())
        .collect();
    if keys.is_empty() {
        return Err(fail("no keys in it".into()));
    }
    Ok(keys)
}

impl Ctx {
    async fn new(t: &TargetArgs, url: &str) -> Res<Self> {
        let (addr, host, path) = parse_url(url)?;
        if t.server == Kind::Sealcast && t.jwt_secret.is_none() {
            return Err(
                "sealcast needs the server's HS256 secret: pass --jwt-secret or set SEALCAST_JWT_SECRET \
                 (a `sealcast serve` without `auth.jwt_secret` prints the one it generated: `generated secret: ...`)"
                    .into(),
            );
        }
        let (pins, pin_error) = match &t.pin_pem {
            Some(p) => {
                let pem = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                (
                    vec![StaticKey::from_pkcs8_pem(&pem).map_err(|e| e.to_string())?.pinned()],
                    None,
                )
            }
            None if t.server == Kind::Sealcast && t.mode != Mode::Plain => match served_keys(addr, &host).await {
                Ok(keys) => (keys, None),
                Err(e) => (Vec::new(), Some(e)),
            },
            None => (Vec::new(), None),
        };
        let hs = ClientHandshake::new().map_err(|e| e.to_string())?;
        let shared_pub = match t.server {
            Kind::Sealcast => hs.public_key_b64u(),
            Kind::Ignis => {
                use base64::Engine;
                let raw = sealcast::crypto::b64::decode(&hs.public_key_b64u()).map_err(|_| "b64")?;
                base64::engine::general_purpose::STANDARD.encode(raw)
            }
        };
        Ok(Self {
            kind: t.server,
            addr,
            host,
            path,
            secret: t.jwt_secret.clone(),
            pins,
            pin_error,
            shared_pub,
            room_keys: match t.mode {
                Mode::Group => 1,
                Mode::Batch => 2,
                Mode::BinBatch => 3,
                _ => 0,
            },
            src_addrs: t.src_addrs.max(1),
            room: t.room.clone(),
        })
    }

    fn src(&self, idx: usize) -> Option<u8> {
        Some(1 + (idx % self.src_addrs as usize) as u8)
    }

    /// Connects and authenticates. `full`: for sealcast wsenc/1, finish the client side (needed to send).
    async fn open(&self, idx: usize, encrypted: bool, full: bool) -> Res<Session> {
        let mut conn = ws::connect(self.addr, self.src(idx), &self.host, &self.path)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut data = Map::new();
        let mut hs = None;
        match self.kind {
            Kind::Sealcast => {
                let secret = self.secret.as_deref().unwrap_or_default();
                let token =
                    sealcast::auth::mint(secret.as_bytes(), &format!("u{idx}"), Duration::from_secs(3600), None)
                        .map_err(|e| e.to_string())?;
                data.insert("token".into(), Value::String(token));
                if encrypted && full {
                    let h = ClientHandshake::new().map_err(|e| e.to_string())?;
                    h.insert_auth_fields(&mut data, None);
                    if self.room_keys > 0 {
                        data.insert("roomKeys".into(), json!(self.room_keys));
                    }
                    hs = Some(h);
                } else if encrypted {
                    data.insert("v".into(), json!(1));
                    data.insert("publicKey".into(), Value::String(self.shared_pub.clone()));
                }
            }
            Kind::Ignis => {
                data.insert("token".into(), Value::String(format!("tok-u{idx}")));
                if encrypted {
                    data.insert("publicKey".into(), Value::String(self.shared_pub.clone()));
                }
            }
        }
        let auth = json!({"event": "authenticate", "data": Value::Object(data)}).to_string();
        conn.send_text(auth.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let first = conn.recv_text().await.map_err(|e| format!("auth reply: {e}"))?;
        let mut sealer = None;
        let mut opener = None;
        if let Some(hs) = hs {
            let v: Value = serde_json::from_slice(&first).map_err(|e| format!("connected: {e}"))?;
            let d = &v["data"];
            let hello = ServerHello::from_connected_data(d).map_err(|e| format!("hello: {e}"))?;
            if self.pins.is_empty() {
                return Err(self
                    .pin_error
                    .clone()
                    .unwrap_or_else(|| "wsenc/1 needs the server key: pass --pin-pem FILE".into()));
            }
            let (s, mut o) = hs
                .finish(
                    &self.pins,
                    &hello,
                    d["id"].as_str().unwrap_or(""),
                    d["userId"].as_str().unwrap_or(""),
                )
                .map_err(|e| format!("finish: {e}"))?;
            if d["roomKeys"] == 1 {
                o.enable_room_keys();
            } else if d["roomKeys"] == 2 {
                o.enable_room_key_batches();
            } else if d["roomKeys"] == 3 {
                o.enable_room_key_binary();
            }
            sealer = Some(s);
            opener = Some(o);
        } else if (self.kind == Kind::Sealcast || !encrypted)
            && memchr::memmem::find(&first, b"\"connected\"").is_none()
        {
            let hint = if self.kind == Kind::Sealcast && !encrypted {
                " (a plaintext session: a default sealcast server requires encryption; use --mode encrypted, or start \
                 it with SEALCAST_REQUIRE_ENCRYPTION=false as the plaintext-only latency scenario needs)"
            } else if memchr::memmem::find(&first, b"Authentication failed").is_some() {
                " (is --jwt-secret / SEALCAST_JWT_SECRET the server's `auth.jwt_secret`?)"
            } else {
                ""
            };
            return Err(format!("auth failed: {}{hint}", String::from_utf8_lossy(&first)));
        }
        let group = (opener.as_ref().is_some() && self.room_keys > 0).then_some(0);
        Ok(Session {
            conn,
            sealer,
            opener,
            group,
        })
    }
}

struct Session {
    conn: ws::Conn,
    sealer: Option<RecordSealer>,
    /// Opens the reply to the join barrier on a wsenc/1 session; dropped once read (receivers only count).
    opener: Option<RecordOpener>,
    /// Group records negotiated: frames shorter than this are `room_key` records (a delivered message is at least
    /// as long as its payload) and are not counted. Set by `fanout` to the payload size.
    group: Option<usize>,
}

impl Session {
    /// Sends an application message (sealed on a wsenc/1 session).
    async fn send_app(&mut self, text: &str) -> Res<()> {
        let bytes = self.encode_app(text)?;
        self.conn.send_raw(&bytes).await.map_err(|e| e.to_string())
    }

    fn encode_app(&mut self, text: &str) -> Res<Vec<u8>> {
        let mut out = Vec::with_capacity(text.len() + 16);
        match &mut self.sealer {
            Some(s) => {
                let mut frames = Vec::new();
                s.seal(text.as_bytes(), &mut frames).map_err(|e| e.to_string())?;
                for f in frames {
                    ws::encode(ws::OP_TEXT, &f, &mut out);
                }
            }
            None => ws::encode(ws::OP_TEXT, text.as_bytes(), &mut out),
        }
        Ok(out)
    }

    /// Joins the room and waits until the join has taken effect: the reference answers an `echo`; sealcast
    /// answers a publish to a room we are not in with an error, after the join (frames are handled in order).
    /// Returns that answer, opened on a wsenc/1 session.
    async fn join(&mut self, kind: Kind, room: &str) -> Res<Vec<u8>> {
        self.send_app(&json!({"event": "join", "data": {"rooms": [room]}}).to_string())
            .await?;
        let barrier = match kind {
            Kind::Ignis => r#"{"event":"echo","data":"barrier"}"#.to_string(),
            Kind::Sealcast => {
                r#"{"event":"publish","data":{"room":"~barrier","event":"barrier","data":null}}"#.to_string()
            }
        };
        self.send_app(&barrier).await?;
        // sealcast answers the join itself (`joined`) before the barrier's answer.
        let answers = match kind {
            Kind::Ignis => 1,
            Kind::Sealcast => 2,
        };
        let mut reply = Vec::new();
        for _ in 0..answers {
            let frame = self.conn.recv_text().await.map_err(|e| format!("barrier: {e}"))?;
            reply = match self.opener.as_mut() {
                Some(opener) => opener
                    .open(&frame)
                    .map_err(|e| format!("barrier: {e}"))?
                    .unwrap_or_default(),
                None => frame,
            };
        }
        self.opener = None;
        Ok(reply)
    }

    /// The next application message, opened on a wsenc/1 session (every record must be opened, in order).
    async fn recv_app(&mut self) -> Res<Vec<u8>> {
        loop {
            let frame = self.conn.recv_text().await.map_err(|e| e.to_string())?;
            match self.opener.as_mut() {
                Some(opener) => match opener.open(&frame).map_err(|e| e.to_string())? {
                    Some(inner) => return Ok(inner),
                    None => continue,
                },
                None => return Ok(frame),
            }
        }
    }

    /// Joins as the publisher: fails, saying what the server needs, when it refuses client publishes.
    async fn join_to_publish(&mut self, kind: Kind, room: &str) -> Res<()> {
        let reply = self.join(kind, room).await?;
        if memchr::memmem::find(&reply, b"Publish not allowed").is_some() {
            return Err(PUBLISH_HINT.into());
        }
        Ok(())
    }
}

/// Counts text frames until the socket ends; answers pings; sends heartbeats (sealed afresh each time on
/// wsenc/1 sessions: a replayed record would be refused) if asked.
async fn count_frames(mut s: Session, mine: Arc<Counters>, idx: usize, heartbeat: Option<Duration>) {
    let mut tick = heartbeat.map(|p| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        let mut n = 0u64;
        while let Some((op, range)) = s.conn.next_frame() {
            match op {
                ws::OP_BINARY if s.group.is_some() => {
                    // A binary batched group record (§11.5): `0x01 ‖ u64be(seq) ‖ u16be(k) ‖ …`, k deliveries.
                    let frame = s.conn.buf.get(range.clone()).unwrap_or_default();
                    n += match (frame.first(), frame.get(9..11)) {
                        (Some(0x01), Some(&[hi, lo])) => u64::from(u16::from_be_bytes([hi, lo])),
                        _ => 1,
                    };
                }
                ws::OP_TEXT | ws::OP_BINARY if s.group.is_some() => {
                    let frame = s.conn.buf.get(range.clone()).unwrap_or_default();
                    n += match memchr::memmem::find(frame, b"\"bodies\":[") {
                        // A batched group record: one delivery per body (base64url has no commas).
                        Some(at) => 1 + memchr::memchr_iter(b',', frame.get(at..).unwrap_or_default()).count() as u64,
                        None => u64::from(range.len() >= s.group.unwrap_or(0)),
                    };
                }
                ws::OP_TEXT | ws::OP_BINARY => n += 1,
                ws::OP_PING => {
                    let p = s.conn.buf[range].to_vec();
                    if s.conn.pong(&p).await.is_err() {
                        mine.closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                ws::OP_CLOSE => {
                    mine.closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                _ => {}
            }
        }
        if n > 0 {
            mine.per[idx].fetch_add(n, Ordering::Relaxed);
            mine.total.fetch_add(n, Ordering::Relaxed);
        }
        let read = match &mut tick {
            None => s.conn.fill().await,
            Some(t) => {
                tokio::select! {
                    r = s.conn.fill() => r,
                    _ = t.tick() => {
                        if s.send_app(HEARTBEAT).await.is_err() {
                            mine.closed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        if !matches!(read, Ok(n) if n > 0) {
            mine.closed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

struct Counters {
    per: Vec<AtomicU64>,
    total: AtomicU64,
    closed: AtomicU64,
}

impl Counters {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            per: (0..n).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        })
    }
}

fn is_encrypted(mode: Mode, idx: usize) -> bool {
    match mode {
        Mode::Plain => false,
        Mode::Encrypted | Mode::Group | Mode::Batch | Mode::BinBatch => true,
        Mode::Mixed => idx % 2 == 1,
    }
}

/// Opens `range` sessions (joined to the room) with bounded concurrency, `full` client handshakes.
async fn open_many(ctx: &Arc<Ctx>, mode: Mode, range: std::ops::Range<usize>, concurrency: usize) -> Res<Vec<Session>> {
    let mut out: Vec<Option<Session>> = (0..range.len()).map(|_| None).collect();
    let base = range.start;
    let mut next = range.start;
    let mut set = JoinSet::new();
    let mut err = None;
    while next < range.end || !set.is_empty() {
        while next < range.end && set.len() < concurrency.max(1) && err.is_none() {
            let c = ctx.clone();
            let i = next;
            set.spawn(async move {
                let mut s = c.open(i, is_encrypted(mode, i), true).await?;
                s.join(c.kind, &c.room).await?;
                Ok::<_, String>((i, s))
            });
            next += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok((i, s)))) => out[i - base] = Some(s),
            Some(Ok(Err(e))) => err = Some(e),
            Some(Err(e)) => err = Some(e.to_string()),
            None => {}
        }
        if err.is_some() && next < range.end {
            next = range.end;
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok(out.into_iter().flatten().collect()),
    }
}

/// CPU seconds (user + system) and RSS in KiB of a process.
fn proc_sample(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let cpu = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
            (t(11) + t(12)) / 100.0
        })
        .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

fn server_sample(pid: Option<u32>) -> (f64, u64) {
    pid.map(proc_sample).unwrap_or((0.0, 0))
}

fn self_cpu() -> f64 {
    proc_sample(std::process::id()).0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The delivered frame `{"event":"bench","data":{"seq":N,"p":"xx…"}}`, padded to `size` bytes, inside a
/// `publish` request.
fn publish_text(room: &str, seq: usize, size: usize, t_us: Option<u64>) -> String {
    let t = t_us.map(|t| format!(",\"t\":{t}")).unwrap_or_default();
    let inner_len = format!("{{\"event\":\"bench\",\"data\":{{\"seq\":{seq}{t},\"p\":\"\"}}}}").len();
    let pad = "x".repeat(size.saturating_sub(inner_len));
    format!(
        "{{\"event\":\"publish\",\"data\":{{\"room\":{room:?},\"event\":\"bench\",\"data\":{{\"seq\":{seq}{t},\"p\":\"{pad}\"}}}}}}"
    )
}

async fn fanout(t: &TargetArgs, a: &FanoutArgs) -> Res<Value> {
    let ctx = Arc::new(Ctx::new(t, &t.url).await?);
    let setup = Instant::now();
    let (_, rss0) = server_sample(t.server_pid);
    let sessions = open_many(&ctx, t.mode, 0..a.receivers, t.concurrency).await?;
    let setup_s = setup.elapsed().as_secs_f64();
    let (_, rss1) = server_sample(t.server_pid);
    // The publisher: a member of the room for sealcast (membership is required; the sender is excluded).
    let pub_enc = matches!(t.mode, Mode::Encrypted | Mode::Group | Mode::Batch | Mode::BinBatch);
    let mut publisher = ctx.open(a.receivers, pub_enc, true).await?;
    if ctx.kind == Kind::Sealcast {
        publisher.join_to_publish(ctx.kind, &ctx.room).await?;
    }
    let counters = Counters::new(a.receivers);
    let mut tasks = JoinSet::new();
    for (i, mut s) in sessions.into_iter().enumerate() {
        if s.group.is_some() {
            s.group = Some(a.payload);
        }
        // Long runs (large rooms) outlast the servers' 90 s silence limit without heartbeats.
        tasks.spawn(count_frames(s, counters.clone(), i, Some(HEARTBEAT_PERIOD)));
    }
    let mut runs = Vec::new();
    let mut rates = Vec::new();
    let mut seq = 0usize;
    for run in 0..=a.runs {
        let m = if run == 0 { (a.messages / 10).max(1) } else { a.messages };
        let mut wire = Vec::with_capacity(m * (a.payload + 128));
        for _ in 0..m {
            let text = publish_text(&ctx.room, seq, a.payload, None);
            wire.extend_from_slice(&publisher.encode_app(&text)?);
            seq += 1;
        }
        let target = counters.total.load(Ordering::Relaxed) + (m * a.receivers) as u64;
        let (cpu0, _) = server_sample(t.server_pid);
        let me0 = self_cpu();
        let start = Instant::now();
        for chunk in wire.chunks(64 * 1024) {
            publisher
                .conn
                .send_raw(chunk)
                .await
                .map_err(|e| format!("publish: {e}"))?;
        }
        let deadline = start + Duration::from_secs_f64(a.timeout);
        // Drain whatever the publisher gets back (sealcast error replies would show up here).
        loop {
            let got = counters.total.load(Ordering::Relaxed);
            if got >= target || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        let (cpu1, _) = server_sample(t.server_pid);
        let me1 = self_cpu();
        let got = counters.total.load(Ordering::Relaxed) - (target - (m * a.receivers) as u64);
        if got < (m * a.receivers) as u64 && ctx.kind == Kind::Sealcast && publisher_rate_limited(&mut publisher).await
        {
            return Err(RATE_HINT.into());
        }
        if run == 0 {
            continue;
        }
        let rate = got as f64 / secs;
        rates.push(rate);
        runs.push(json!({
            "deliveries": got, "expected": m * a.receivers, "secs": secs, "rate": rate,
            "server_cpu_s": cpu1 - cpu0, "loadgen_cpu_s": me1 - me0,
            "server_cpu_us_per_delivery": if got > 0 { (cpu1 - cpu0) * 1e6 / got as f64 } else { 0.0 },
        }));
        if got < (m * a.receivers) as u64 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let expected_each = seq as u64;
    let per: Vec<u64> = counters.per.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let min = per.iter().copied().min().unwrap_or(0);
    let max = per.iter().copied().max().unwrap_or(0);
    let closed = counters.closed.load(Ordering::Relaxed);
    tasks.abort_all();
    let mut r = rates.clone();
    let med = median(&mut r);
    Ok(json!({
        "scenario": "fanout", "server": format!("{:?}", t.server).to_lowercase(),
        "mode": format!("{:?}", t.mode).to_lowercase(),
        "receivers": a.receivers, "messages": a.messages, "payload": a.payload,
        "setup_s": setup_s,
        "setup_rss_kib_per_conn": if rss0 > 0 { (rss1.saturating_sub(rss0)) as f64 / a.receivers as f64 } else { 0.0 },
        "runs": runs,
        "rate_median": med,
        "rate_min": rates.iter().copied().fold(f64::INFINITY, f64::min),
        "rate_max": rates.iter().copied().fold(0.0, f64::max),
        "per_receiver_expected": expected_each, "per_receiver_min": min, "per_receiver_max": max,
        "exact": min == expected_each && max == expected_each,
        "unexpected_closes": closed,
    }))
}

/// True when the server closed the publisher 4008 (message rate); looked for once deliveries fall short.
async fn publisher_rate_limited(publisher: &mut Session) -> bool {
    match tokio::time::timeout(Duration::from_millis(300), publisher.conn.recv_text()).await {
        Ok(Err(e)) => e.to_string().contains("4008"),
        _ => false,
    }
}

async fn connect(t: &TargetArgs, a: &ConnectArgs) -> Res<Value> {
    let ctx = Arc::new(Ctx::new(t, &t.url).await?);
    let (cpu0, _) = server_sample(t.server_pid);
    let me0 = self_cpu();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.timeout);
    let mut set = JoinSet::new();
    let mut lat = Vec::with_capacity(a.connections);
    let mut failures = 0usize;
    let mut first_err = None;
    let mut next = 0;
    while (next < a.connections || !set.is_empty()) && Instant::now() < deadline {
        while next < a.connections && set.len() < t.concurrency.max(1) {
            let c = ctx.clone();
            let i = next;
            let enc = is_encrypted(t.mode, i);
            let verify = a.verify;
            let close = a.close;
            set.spawn(async move {
                let t0 = Instant::now();
                let mut s = c.open(i, enc, verify).await?;
                let dt = t0.elapsed().as_secs_f64();
                if close == CloseKind::Graceful {
                    s.conn
                        .close(Duration::from_secs(10))
                        .await
                        .map_err(|e| format!("close: {e}"))?;
                }
                drop(s);
                Ok::<_, String>(dt)
            });
            next += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(dt))) => lat.push(dt * 1e3),
            Some(Ok(Err(e))) => {
                failures += 1;
                first_err.get_or_insert(e);
            }
            Some(Err(e)) => {
                failures += 1;
                first_err.get_or_insert(e.to_string());
            }
            None => {}
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Let the server finish tearing the last connections down before reading its CPU time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (cpu1, _) = server_sample(t.server_pid);
    let me1 = self_cpu();
    lat.sort_by(|a, b| a.total_cmp(b));
    let ok = lat.len();
    let server_cpu = cpu1 - cpu0;
    Ok(json!({
        "scenario": "connect", "server": format!("{:?}", t.server).to_lowercase(),
        "mode": format!("{:?}", t.mode).to_lowercase(), "connections": a.connections, "ok": ok,
        "failures": failures, "first_error": first_err, "concurrency": t.concurrency, "secs": secs,
        "close": format!("{:?}", a.close).to_lowercase(),
        "rate": ok as f64 / secs, "per_wall_second": ok as f64 / secs,
        "latency_ms_p50": percentile(&lat, 0.5), "latency_ms_p99": percentile(&lat, 0.99),
        "server_cpu_s": server_cpu, "loadgen_cpu_s": me1 - me0,
        "per_server_cpu_second": if server_cpu > 0.0 { ok as f64 / server_cpu } else { 0.0 },
    }))
}

async fn idle(t: &TargetArgs, a: &IdleArgs) -> Res<Value> {
    let ctx = Arc::new(Ctx::new(t, &t.url).await?);
    let pid = t.server_pid.ok_or("idle needs --server-pid")?;
    let settle = Duration::from_secs_f64(a.settle);
    let deadline = Instant::now() + Duration::from_secs_f64(a.timeout);
    tokio::time::sleep(settle).await;
    let (_, rss0) = proc_sample(pid);
    let mut steps: Vec<usize> = a.steps.iter().copied().filter(|&s| s < a.connections).collect();
    steps.push(a.connections);
    let counters = Counters::new(a.connections);
    let mut tasks = JoinSet::new();
    let mut samples = Vec::new();
    let mut opened = 0;
    let hb = Duration::from_secs_f64(a.heartbeat);
    let mut error = None;
    for step in steps {
        if Instant::now() > deadline {
            error = Some("deadline".to_string());
            break;
        }
        match open_many(&ctx, t.mode, opened..step, t.concurrency).await {
            Ok(sessions) => {
                for (k, s) in sessions.into_iter().enumerate() {
                    tasks.spawn(count_frames(s, counters.clone(), opened + k, Some(hb)));
                }
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        opened = step;
        tokio::time::sleep(settle).await;
        let (_, rss) = proc_sample(pid);
        samples.push(json!({"connections": step, "rss_kib": rss,
            "kib_per_conn": (rss.saturating_sub(rss0)) as f64 / step as f64}));
    }
    let hold_start = Instant::now();
    let closed_before = counters.closed.load(Ordering::Relaxed);
    if a.hold > 0.0 && error.is_none() {
        tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    }
    let held = hold_start.elapsed().as_secs_f64();
    let (_, rss_end) = proc_sample(pid);
    let closed = counters.closed.load(Ordering::Relaxed);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    tokio::time::sleep(settle * 2).await;
    let (_, rss_after) = proc_sample(pid);
    Ok(json!({
        "scenario": "idle", "server": format!("{:?}", t.server).to_lowercase(),
        "mode": format!("{:?}", t.mode).to_lowercase(), "connections": opened, "error": error,
        "rss0_kib": rss0, "samples": samples,
        "kib_per_conn": if opened > 0 { (rss_end.saturating_sub(rss0)) as f64 / opened as f64 } else { 0.0 },
        "held_s": held, "closes_during_setup": closed_before, "unexpected_closes": closed,
        "rss_after_close_kib": rss_after,
    }))
}

async fn latency(t: &TargetArgs, a: &LatencyArgs) -> Res<Value> {
    let sub_ctx = Arc::new(Ctx::new(t, &t.url).await?);
    let pub_ctx = Ctx::new(t, a.pub_url.as_deref().unwrap_or(&t.url)).await?;
    // Subscribers are plaintext: each frame is parsed for its send timestamp.
    let subs = open_many(&sub_ctx, Mode::Plain, 0..a.subscribers, t.concurrency).await?;
    let mut publisher = pub_ctx.open(a.subscribers, false, true).await?;
    if pub_ctx.kind == Kind::Sealcast {
        publisher.join_to_publish(pub_ctx.kind, &pub_ctx.room).await?;
    }
    let epoch = Instant::now();
    let total = (a.rate as f64 * a.seconds) as usize;
    // Subscribers stop at the last message or 3 s after the publisher's last send is due, so that a message
    // lost counts as one, not as a subscriber that never finished.
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(a.seconds + 3.0);
    let mut handles = Vec::new();
    for mut s in subs {
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total);
            // The first and last sequence numbers seen: a loss at the start (a late subscription) or at the end
            // (a stall) shows here.
            let mut seqs = (u64::MAX, 0u64);
            let ended = loop {
                if lat.len() >= total {
                    break None;
                }
                let frame = match tokio::time::timeout_at(end, s.conn.recv_text()).await {
                    Ok(Ok(f)) => f,
                    Ok(Err(e)) => break Some(e.to_string()),
                    Err(_) => break Some("deadline".to_owned()),
                };
                let v: Value = serde_json::from_slice(&frame).unwrap_or(Value::Null);
                if let Some(t) = v["data"]["t"].as_u64() {
                    let now = epoch.elapsed().as_micros() as u64;
                    lat.push(now.saturating_sub(t) as f64 / 1e3);
                    let seq = v["data"]["seq"].as_u64().unwrap_or(0);
                    seqs = (seqs.0.min(seq), seqs.1.max(seq));
                }
            };
            (lat, seqs, ended)
        }));
    }
    let period = Duration::from_secs_f64(1.0 / a.rate.max(1) as f64);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for seq in 0..total {
        tick.tick().await;
        let text = publish_text(&pub_ctx.room, seq, a.payload, Some(epoch.elapsed().as_micros() as u64));
        publisher.send_app(&text).await?;
    }
    let mut all = Vec::new();
    let mut lost = 0usize;
    let mut seen = Vec::new();
    for h in handles {
        match tokio::time::timeout(Duration::from_secs(10), h).await {
            Ok(Ok((l, (first, last), ended))) => {
                lost += total - l.len();
                if l.len() < total {
                    seen.push(json!({"received": l.len(), "first_seq": first, "last_seq": last, "ended": ended}));
                }
                all.extend(l);
            }
            _ => lost += total,
        }
    }
    all.sort_by(|a, b| a.total_cmp(b));
    Ok(json!({
        "scenario": "latency", "server": format!("{:?}", t.server).to_lowercase(),
        "cross_instance": a.pub_url.is_some(), "rate": a.rate, "seconds": a.seconds,
        "subscribers": a.subscribers, "samples": all.len(), "lost": lost, "short_subscribers": seen,
        "p50_ms": percentile(&all, 0.5), "p99_ms": percentile(&all, 0.99), "p999_ms": percentile(&all, 0.999),
        "max_ms": all.last().copied().unwrap_or(0.0),
    }))
}

/// A reconnect storm as a deploy causes it: every client loses its session at once and comes back as soon as
/// the server listens again, with the shipped clients' backoff. Attempts refused while nothing listens are
/// counted apart; an attempt that reaches the server and does not end in a session is a failure.
async fn storm(t: &TargetArgs, a: &StormArgs) -> Res<Value> {
    let ctx = Arc::new(Ctx::new(t, &t.url).await?);
    let old_pid = t.server_pid.ok_or("storm needs --server-pid")?;
    let mode = t.mode;
    let _ = std::fs::remove_file(&a.pid_file);
    let mut held = Vec::with_capacity(a.connections);
    {
        let mut set = JoinSet::new();
        let mut next = 0;
        while next < a.connections || !set.is_empty() {
            while next < a.connections && set.len() < t.concurrency.max(1) {
                let c = ctx.clone();
                let i = next;
                set.spawn(async move { c.open(i, is_encrypted(mode, i), false).await.map(|s| (i, s)) });
                next += 1;
            }
            match set.join_next().await {
                Some(Ok(Ok(s))) => held.push(s),
                Some(Ok(Err(e))) => return Err(format!("setup: {e}")),
                Some(Err(e)) => return Err(format!("setup: {e}")),
                None => {}
            }
        }
    }
    let epoch = Instant::now();
    let first_contact = Arc::new(AtomicU64::new(u64::MAX));
    let failures = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    // Why attempts failed: the first 100 bytes of each distinct error, counted (at most 20 kinds).
    let why = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let mut set = JoinSet::new();
    for (i, mut s) in held {
        let c = ctx.clone();
        let first_contact = first_contact.clone();
        let failures = failures.clone();
        let why = why.clone();
        let refused = refused.clone();
        set.spawn(async move {
            // The old session ends (Close frame or EOF) when the server goes down.
            while s.conn.recv_text().await.is_ok() {}
            drop(s);
            // The shipped clients' policy: the first attempt after 250-500 ms, the delay doubling per failed
            // attempt (JS client: `reconnect.initialMs` 500, half of it jittered).
            let mut rng = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut base = 500u64;
            loop {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                tokio::time::sleep(Duration::from_millis(base / 2 + rng % (base / 2))).await;
                base = (base * 2).min(30_000);
                match c.open(i, is_encrypted(mode, i), false).await {
                    Ok(s) => return (epoch.elapsed().as_micros() as u64, s),
                    Err(e) if e.contains("Connection refused") => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        first_contact.fetch_min(epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
                        failures.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut w) = why.lock() {
                            let key: String = e.chars().take(100).collect();
                            if w.len() < 20 || w.contains_key(&key) {
                                *w.entry(key).or_default() += 1;
                            }
                        }
                    }
                }
            }
        });
    }
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(old_pid.to_string())
        .status();
    // The restarted server: sampled from the moment its PID is known.
    let pid_file = a.pid_file.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut pid = None;
            let (mut cpu0, mut peak) = (0.0, 0u64);
            let mut cpu = 0.0;
            while !done.load(Ordering::Relaxed) {
                if pid.is_none() {
                    pid = std::fs::read_to_string(&pid_file)
                        .ok()
                        .and_then(|p| p.trim().parse::<u32>().ok());
                    if let Some(p) = pid {
                        cpu0 = proc_sample(p).0;
                    }
                }
                if let Some(p) = pid {
                    let (c, rss) = proc_sample(p);
                    cpu = c - cpu0;
                    peak = peak.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (pid, cpu, peak)
        })
    };
    let deadline = Duration::from_secs_f64(a.timeout);
    let mut last = 0u64;
    let mut back = Vec::with_capacity(a.connections);
    let outcome = tokio::time::timeout(deadline, async {
        while let Some(r) = set.join_next().await {
            if let Ok((at, s)) = r {
                first_contact.fetch_min(at, Ordering::Relaxed);
                last = last.max(at);
                back.push(s);
            }
        }
    })
    .await;
    let reestablished = back.len();
    set.abort_all();
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.store(true, Ordering::Relaxed);
    let (pid, cpu, peak) = sampler.await.map_err(|e| e.to_string())?;
    let (_, rss_after) = server_sample(pid);
    drop(back);
    let first = first_contact.load(Ordering::Relaxed);
    let secs = if reestablished > 0 && first != u64::MAX {
        last.saturating_sub(first) as f64 / 1e6
    } else {
        0.0
    };
    Ok(json!({
        "scenario": "storm", "server": format!("{:?}", t.server).to_lowercase(),
        "mode": format!("{:?}", t.mode).to_lowercase(), "connections": a.connections,
        "reestablished": reestablished, "failures": failures.load(Ordering::Relaxed),
        "refused_while_down": refused.load(Ordering::Relaxed),
        "timed_out": outcome.is_err(),
        "secs_first_to_last": secs,
        "per_wall_second": if secs > 0.0 { reestablished as f64 / secs } else { 0.0 },
        "server_cpu_s": cpu, "per_server_cpu_second": if cpu > 0.0 { reestablished as f64 / cpu } else { 0.0 },
        "peak_rss_kib": peak, "rss_after_kib": rss_after,
        "failure_kinds": why.lock().map(|w| json!(*w)).unwrap_or(Value::Null),
    }))
}

/// Reads until `n` text frames have arrived (records are counted, not opened), answering pings.
async fn expect_frames(s: &mut Session, n: usize) -> Res<()> {
    let mut got = 0;
    loop {
        while let Some((op, range)) = s.conn.next_frame() {
            match op {
                ws::OP_TEXT | ws::OP_BINARY => got += 1,
                ws::OP_PING => {
                    let p = s.conn.buf[range].to_vec();
                    s.conn.pong(&p).await.map_err(|e| e.to_string())?;
                }
                ws::OP_CLOSE => return Err("closed".into()),
                _ => {}
            }
        }
        if got >= n {
            return Ok(());
        }
        if s.conn.fill().await.map_err(|e| e.to_string())? == 0 {
            return Err("eof".into());
        }
    }
}

/// Runs `each` on every session at once; the server's CPU seconds for the whole phase.
async fn phase<F, Fut>(pid: Option<u32>, sessions: Vec<Session>, limit: f64, each: F) -> Res<(f64, Vec<Session>)>
where
    F: Fn(usize, Session) -> Fut,
    Fut: std::future::Future<Output = Res<Session>> + Send + 'static,
{
    let (cpu0, _) = server_sample(pid);
    let mut set = JoinSet::new();
    for (i, s) in sessions.into_iter().enumerate() {
        set.spawn(each(i, s));
    }
    let mut back = Vec::new();
    let all = async {
        while let Some(r) = set.join_next().await {
            back.push(r.map_err(|e| e.to_string())??);
        }
        Ok::<_, String>(())
    };
    tokio::time::timeout(Duration::from_secs_f64(limit), all)
        .await
        .map_err(|_| "phase timed out".to_string())??;
    // Let the server finish what it was doing (the last writes) before its CPU time is read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok((server_sample(pid).0 - cpu0, back))
}

async fn recover(t: &TargetArgs, a: &RecoverArgs) -> Res<Value> {
    if t.server != Kind::Sealcast {
        return Err("recover measures sealcast's room history".into());
    }
    let ctx = Arc::new(Ctx::new(t, &t.url).await?);
    let room = ctx.room.clone();
    let mut publisher = ctx.open(2 * a.clients, false, true).await?;
    publisher.join_to_publish(ctx.kind, &room).await?;
    let open_all = |base: usize| {
        let ctx = ctx.clone();
        async move {
            let mut out = Vec::with_capacity(a.clients);
            for i in 0..a.clients {
                out.push(ctx.open(base + i, is_encrypted(t.mode, i), true).await?);
            }
            Ok::<_, String>(out)
        }
    };
    // `missed` publishes from `from` on; the last one carries an id, so that its ack says where the stream is. The
    // id is new in every run: a run against a Redis that still remembers an earlier run's ids would have its last
    // message acknowledged as a duplicate and not delivered.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let texts = |from: usize| -> Vec<String> {
        (from..from + a.missed)
            .map(|seq| {
                let text = publish_text(&room, seq, a.payload, None);
                match (seq + 1 == from + a.missed, text.strip_suffix('}')) {
                    (true, Some(head)) => format!("{head},\"id\":\"last{seq}-{run}\"}}"),
                    _ => text,
                }
            })
            .collect()
    };
    // Phase A: the clients were away while `missed` messages went to the room; they come back and recover.
    let away = open_all(0).await?;
    for text in texts(0) {
        publisher.send_app(&text).await?;
    }
    let (last, epoch) = loop {
        let frame = publisher.conn.recv_text().await.map_err(|e| format!("ack: {e}"))?;
        let v: Value = serde_json::from_slice(&frame).unwrap_or(Value::Null);
        if v["event"] == "ack" {
            break (
                v["data"]["offset"]
                    .as_u64()
                    .ok_or("the ack has no offset: is the room in SEALCAST_HISTORY_ROOMS?")?,
                v["data"]["epoch"].as_str().unwrap_or_default().to_owned(),
            );
        }
        if v["event"] == "error" {
            return Err(format!("publish refused: {v}"));
        }
    };
    let from = last.saturating_sub(a.missed as u64);
    let join = json!({"event": "join", "data": {"rooms": [room.clone()], "recover": {room.clone(): {"offset": from, "epoch": epoch}}}}).to_string();
    let missed = a.missed;
    let (recover_cpu, _back) = phase(t.server_pid, away, a.timeout, |_, mut s| {
        let join = join.clone();
        async move {
            s.send_app(&join).await?;
            expect_frames(&mut s, missed + 1).await?;
            Ok(s)
        }
    })
    .await?;
    // Phase B: as many clients join and receive as many messages live.
    let fresh = open_all(a.clients).await?;
    let (cpu0, _) = server_sample(t.server_pid);
    let plain_join = json!({"event": "join", "data": {"rooms": [room.clone()]}}).to_string();
    let (join_cpu, joined) = phase(t.server_pid, fresh, a.timeout, |_, mut s| {
        let join = plain_join.clone();
        async move {
            s.send_app(&join).await?;
            expect_frames(&mut s, 1).await?;
            Ok(s)
        }
    })
    .await?;
    let mut set = JoinSet::new();
    for mut s in joined {
        set.spawn(async move { expect_frames(&mut s, missed).await.map(|_| s) });
    }
    for text in texts(a.missed) {
        publisher.send_app(&text).await?;
    }
    tokio::time::timeout(Duration::from_secs_f64(a.timeout), async {
        while let Some(r) = set.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
        Ok::<_, String>(())
    })
    .await
    .map_err(|_| "live phase timed out".to_string())??;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let live_cpu = server_sample(t.server_pid).0 - cpu0;
    Ok(json!({
        "scenario": "recover", "server": "sealcast", "mode": format!("{:?}", t.mode).to_lowercase(),
        "clients": a.clients, "missed": a.missed,
        "recover_cpu_s": recover_cpu, "live_cpu_s": live_cpu, "live_join_cpu_s": join_cpu,
        "recover_over_live": if live_cpu > 0.0 { recover_cpu / live_cpu } else { 0.0 },
    }))
}

/// Server CPU seconds and wall seconds of `work`.
async fn cpu_of(pid: Option<u32>, work: impl std::future::Future<Output = Res<()>>) -> Res<(f64, f64)> {
    let (cpu0, _) = server_sample(pid);
    let started = Instant::now();
    work.await?;
    let wall = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok((server_sample(pid).0 - cpu0, wall))
}

/// Sends `frames` one after another, each followed by its one answer frame (`None`: no answer).
async fn one_by_one(s: &mut Session, frames: &[(String, bool)], times: usize) -> Res<()> {
    for _ in 0..times {
        for (frame, answered) in frames {
            s.send_app(frame).await?;
            if *answered {
                expect_frames(s, 1).await?;
            }
        }
    }
    Ok(())
}

async fn presence(t: &TargetArgs, a: &PresenceArgs) -> Res<Value> {
    if t.server != Kind::Sealcast {
        return Err("presence measures sealcast's presence".into());
    }
    let ctx = Arc::new(Ctx::new(t, &t.url).await?);
    let (p, q) = (format!("{}-p", ctx.room), format!("{}-q", ctx.room));
    let join = |rooms: &[&str]| json!({"event": "join", "data": {"rooms": rooms}}).to_string();
    let leave = |room: &str| json!({"event": "leave", "data": {"rooms": [room]}}).to_string();
    let both = join(&[&p, &q]);
    let mode = t.mode;
    let mut members = Vec::with_capacity(a.members);
    let setup = async {
        let mut set = JoinSet::new();
        let mut next = 0;
        while next < a.members || !set.is_empty() {
            while next < a.members && set.len() < a.concurrency.max(1) {
                let (c, both, i) = (ctx.clone(), both.clone(), next);
                set.spawn(async move {
                    let mut s = c.open(i, is_encrypted(mode, i), true).await?;
                    s.send_app(&both).await?;
                    expect_frames(&mut s, 1).await?;
                    Ok::<_, String>(s)
                });
                next += 1;
            }
            if let Some(r) = set.join_next().await {
                members.push(r.map_err(|e| e.to_string())??);
            }
        }
        Ok::<_, String>(())
    };
    tokio::time::timeout(Duration::from_secs_f64(a.timeout), setup)
        .await
        .map_err(|_| "setting up the members timed out".to_string())??;
    let mut probe = ctx.open(a.members, is_encrypted(t.mode, a.members), true).await?;
    probe.send_app(&both).await?;
    probe.recv_app().await?;
    // The first answer says whether the room keeps presence (and how many it counts).
    probe
        .send_app(&json!({"event": "presence", "data": {"room": p}}).to_string())
        .await?;
    let first = probe.recv_app().await?;
    let v: Value = serde_json::from_slice(&first).unwrap_or(Value::Null);
    if v["event"] != "presence" {
        return Err(format!("no presence answer (is {p} in SEALCAST_PRESENCE_ROOMS?): {v}"));
    }
    let counted = v["data"]["clients"].as_u64().unwrap_or(0);
    let ask = json!({"event": "presence", "data": {"room": p}}).to_string();
    let pid = t.server_pid;
    let (query_cpu, query_wall) = cpu_of(pid, one_by_one(&mut probe, &[(ask, true)], a.ops)).await?;
    let (rejoin_cpu, rejoin_wall) = cpu_of(pid, one_by_one(&mut probe, &[(join(&[&q]), true)], a.ops)).await?;
    // Join + leave: the probe leaves both rooms first, then enters and leaves each `ops` times.
    probe.send_app(&leave(&p)).await?;
    probe.send_app(&leave(&q)).await?;
    let churn = |room: &str| vec![(join(&[room]), true), (leave(room), false)];
    let (presence_cpu, presence_wall) = cpu_of(pid, one_by_one(&mut probe, &churn(&p), a.ops)).await?;
    let (plain_cpu, plain_wall) = cpu_of(pid, one_by_one(&mut probe, &churn(&q), a.ops)).await?;
    drop(members);
    let per = |x: f64| x * 1e6 / a.ops as f64;
    Ok(json!({
        "scenario": "presence", "server": "sealcast", "mode": format!("{:?}", t.mode).to_lowercase(),
        "members": a.members, "counted": counted, "ops": a.ops,
        "query_cpu_us": per(query_cpu), "query_wall_us": per(query_wall),
        "rejoin_cpu_us": per(rejoin_cpu), "rejoin_wall_us": per(rejoin_wall),
        "query_over_join": if rejoin_cpu > 0.0 { query_cpu / rejoin_cpu } else { 0.0 },
        "presence_join_leave_cpu_us": per(presence_cpu), "presence_join_leave_wall_us": per(presence_wall),
        "plain_join_leave_cpu_us": per(plain_cpu), "plain_join_leave_wall_us": per(plain_wall),
        "presence_over_plain": if plain_cpu > 0.0 { presence_cpu / plain_cpu } else { 0.0 },
    }))
}

fn crypto_limit(seconds: f64) -> Res<Value> {
    use sealcast::crypto::backend::{hkdf_sha256, EcSecretKey};
    let peer = EcSecretKey::generate().map_err(|_| "rng")?.public_key();
    let stat = EcSecretKey::generate().map_err(|_| "rng")?.public_key();
    let cpu0 = self_cpu();
    let start = Instant::now();
    let mut n = 0u64;
    let mut okm = [0u8; 64];
    while start.elapsed().as_secs_f64() < seconds {
        let e = EcSecretKey::generate().map_err(|_| "rng")?;
        let _pub = e.public_key();
        let a = e.diffie_hellman(&peer);
        let b = e.diffie_hellman(&stat);
        hkdf_sha256(&a[..], &b[..], &[b"bench"], &mut okm).map_err(|_| "hkdf")?;
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    // CPU time, not wall time: on a shared core the wall-clock rate says more about the neighbours.
    let cpu = self_cpu() - cpu0;
    Ok(json!({"scenario": "crypto_limit", "ops": n, "secs": secs, "cpu_s": cpu,
        "per_second": n as f64 / secs, "per_cpu_second": if cpu > 0.0 { n as f64 / cpu } else { 0.0 },
        "us_per_op": secs * 1e6 / n as f64}))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.cmd, Cmd::Serve) {
        // Like `sealcast serve`: a multi-thread runtime sized by the CPU affinity mask.
        let result = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(serve::serve()));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sealcast-bench serve: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sealcast-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let t = &cli.target;
    let result = rt.block_on(async {
        match &cli.cmd {
            Cmd::Fanout(a) => fanout(t, a).await,
            Cmd::Connect(a) => connect(t, a).await,
            Cmd::Idle(a) => idle(t, a).await,
            Cmd::Storm(a) => storm(t, a).await,
            Cmd::Latency(a) => latency(t, a).await,
            Cmd::Recover(a) => recover(t, a).await,
            Cmd::Presence(a) => presence(t, a).await,
            Cmd::CryptoLimit { seconds } => crypto_limit(*seconds),
            Cmd::Serve => Ok(Value::Null),
        }
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", json!({"error": e}));
            eprintln!("sealcast-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
