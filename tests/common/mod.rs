//! Shared test harness: real servers on 127.0.0.1:0 and real WebSocket clients (tokio-tungstenite).
#![allow(dead_code)]

pub mod enc;
pub mod jwt;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sealcast::{AuthRequest, HookError, Identity, Server, ServerBuilder};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does not happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// The test authenticator: `user:<id>` → user `<id>`, `anon` → anonymous, `error` → hook error, `panic` → panic,
/// `slow` → never answers, `rooms:<id>:<patterns>` → user `<id>` limited to those rooms, `stall:<ms>:<id>` →
/// user `<id>` after blocking the server's thread for that long (a server that fell behind), anything else →
/// rejected.
pub async fn test_auth(req: AuthRequest) -> Result<Option<Identity>, HookError> {
    let token = req
        .data
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match token.as_str() {
        "anon" => Ok(Some(Identity::default())),
        "error" => Err("authenticator exploded".into()),
        "panic" => panic!("authenticator panicked"),
        "slow" => {
            std::future::pending::<()>().await;
            Ok(None)
        }
        t if t.starts_with("expiring:") => {
            // `expiring:<user>:<millis>`: valid for that long.
            let mut parts = t.splitn(3, ':').skip(1);
            let user = parts.next().unwrap_or_default();
            let ms: u64 = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
            let at = std::time::SystemTime::now() + std::time::Duration::from_millis(ms);
            Ok(Some(Identity::user(user).expiring_at(at)))
        }
        t if t.starts_with("stall:") => {
            let mut parts = t.splitn(3, ':').skip(1);
            let ms: u64 = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(ms));
            Ok(Some(Identity::user(parts.next().unwrap_or_default())))
        }
        t if t.starts_with("rooms:") => {
            // `rooms:<user>:<pattern>,<pattern>`: an identity limited to those room patterns.
            let mut parts = t.splitn(3, ':').skip(1);
            let user = parts.next().unwrap_or_default();
            let patterns = parts.next().unwrap_or_default().split(',').map(str::to_owned).collect();
            Ok(Some(Identity::user(user).with_rooms(patterns)))
        }
        t => Ok(t
            .strip_prefix("user:")
            .map(|u| Identity::user(u).with_metadata(json!({ "token": "kept" })))),
    }
}

/// A plaintext builder with the test authenticator and a permissive room validator.
pub fn builder() -> ServerBuilder {
    Server::builder()
        .require_encryption(false)
        .authenticator(test_auth)
        .room_validator(|req: sealcast::RoomRequest| async move { Ok::<_, HookError>(req.rooms) })
}

type NoDelay = axum::serve::TapIo<tokio::net::TcpListener, fn(&mut TcpStream)>;

fn nodelay(listener: tokio::net::TcpListener) -> NoDelay {
    fn set(tcp: &mut TcpStream) {
        let _ = tcp.set_nodelay(true);
    }
    axum::serve::ListenerExt::tap_io(listener, set as fn(&mut TcpStream))
}

/// A server listening on a free loopback port.
pub struct TestServer {
    pub server: Server,
    pub addr: SocketAddr,
}

impl TestServer {
    pub async fn start(builder: ServerBuilder) -> Self {
        let server = builder.build().expect("valid test config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app: axum::Router = server.router();
        let listener = nodelay(listener);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { server, addr }
    }

    /// Like [`Self::start`], on a one-thread runtime of its own: a hook that blocks that thread stalls the
    /// server but not the test's clients.
    pub async fn start_on_own_thread(builder: ServerBuilder) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let t = Self::start(builder).await;
                let server = t.server.clone();
                let _ = tx.send(t);
                // Runs until the test process ends.
                std::future::pending::<()>().await;
                drop(server);
            });
        });
        rx.await.expect("server thread")
    }

    /// Like [`Self::start`], but the server sees peer addresses (per-IP limits apply).
    pub async fn start_with_peer_addrs(builder: ServerBuilder) -> Self {
        let server = builder.build().expect("valid test config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = server
            .router::<()>()
            .into_make_service_with_connect_info::<SocketAddr>();
        let listener = nodelay(listener);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { server, addr }
    }

    /// Like [`Self::start`], served by `Server::serve`: sockets count against the connection limits from accept,
    /// and request heads have a time limit.
    pub async fn start_served(builder: ServerBuilder) -> Self {
        let server = builder.build().expect("valid test config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = server.clone();
        tokio::spawn(async move {
            served.serve(listener, served.router()).await;
        });
        Self { server, addr }
    }

    pub fn url(&self) -> String {
        format!("ws://{}{}", self.addr, self.server.config().path)
    }

    /// A raw, unauthenticated client.
    pub async fn connect(&self) -> Client {
        Client::connect(&self.url()).await
    }

    /// A client authenticated with `token`, after its `connected` event.
    pub async fn login(&self, token: &str) -> (Client, Value) {
        let mut c = self.connect().await;
        c.send(json!({"event": "authenticate", "data": {"token": token}})).await;
        let connected = c.expect_event("connected").await;
        (c, connected)
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A real WebSocket client.
pub struct Client {
    pub ws: Ws,
}

/// What the client observed instead of a frame.
/// A data frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Text(String),
    Binary(Vec<u8>),
}

#[derive(Debug, PartialEq)]
pub enum Ended {
    Closed(u16, String),
    Dropped,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connect");
        Self { ws }
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// Next data frame (text or binary), or how the connection ended.
    pub async fn next_data(&mut self, within: Duration) -> Result<Data, Ended> {
        loop {
            let m = match tokio::time::timeout(within, self.ws.next()).await {
                Err(_) => panic!("no frame within {within:?}"),
                Ok(None) | Ok(Some(Err(_))) => return Err(Ended::Dropped),
                Ok(Some(Ok(m))) => m,
            };
            match m {
                Message::Text(t) => return Ok(Data::Text(t.to_string())),
                Message::Binary(b) => return Ok(Data::Binary(b.to_vec())),
                Message::Close(Some(f)) => return Err(Ended::Closed(u16::from(f.code), f.reason.to_string())),
                Message::Close(None) => return Err(Ended::Dropped),
                _ => continue,
            }
        }
    }

    /// Next text frame, or how the connection ended.
    pub async fn next_text(&mut self, within: Duration) -> Result<String, Ended> {
        loop {
            let m = match tokio::time::timeout(within, self.ws.next()).await {
                Err(_) => panic!("no frame within {within:?}"),
                Ok(None) | Ok(Some(Err(_))) => return Err(Ended::Dropped),
                Ok(Some(Ok(m))) => m,
            };
            match m {
                Message::Text(t) => return Ok(t.to_string()),
                Message::Close(Some(f)) => return Err(Ended::Closed(u16::from(f.code), f.reason.to_string())),
                Message::Close(None) => return Err(Ended::Dropped),
                _ => continue,
            }
        }
    }

    /// Next frame as JSON; panics if the connection ends.
    pub async fn recv(&mut self) -> Value {
        match self.next_text(WAIT).await {
            Ok(t) => serde_json::from_str(&t).expect("server sent JSON"),
            Err(e) => panic!("connection ended: {e:?}"),
        }
    }

    /// Skips frames until one with `event`, returns its `data`.
    pub async fn expect_event(&mut self, event: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["event"] == event {
                return v["data"].clone();
            }
        }
    }

    /// The next frame must be an `error` event with this message.
    pub async fn expect_error(&mut self, message: &str) {
        let v = self.recv().await;
        assert_eq!(v, json!({"event": "error", "data": {"message": message}}));
    }

    /// Reads until the close frame and returns its code and reason (frames before it are returned too).
    pub async fn expect_close(&mut self) -> (u16, String, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            match self.next_text(WAIT).await {
                Ok(t) => before.push(serde_json::from_str(&t).unwrap_or(Value::String(t))),
                Err(Ended::Closed(code, reason)) => return (code, reason, before),
                Err(Ended::Dropped) => panic!("dropped without a close frame; before: {before:?}"),
            }
        }
    }

    /// Nothing arrives for a while.
    pub async fn expect_silence(&mut self) {
        match tokio::time::timeout(QUIET, self.ws.next()).await {
            Err(_) => {}
            Ok(m) => panic!("expected silence, got {m:?}"),
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A bare HTTP/1.1 request to 127.0.0.1:`port`: the status code and the body.
pub async fn http_request(port: u16, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    let status = buf.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, buf.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
}

/// `POST path` with a JSON `body` (and an `Authorization` header when given) to `addr`: the status code and
/// the JSON answer (`null` when it is not JSON).
pub async fn http_post(addr: SocketAddr, path: &str, auth: Option<&str>, body: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Serves `app` on a free loopback port (e.g. a backend the server under test calls).
pub async fn serve_http(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// `GET path` on 127.0.0.1:`port`.
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    http_request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// The `id` of a `connected` payload.
pub fn id_of(connected: &Value) -> String {
    connected["id"].as_str().expect("connected.id").to_owned()
}

/// The numeric close code tungstenite uses.
pub fn code_of(c: WsCloseCode) -> u16 {
    u16::from(c)
}

/// Polls `cond` until true or panics after [`WAIT`].
pub async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    eventually_within(WAIT, what, cond).await;
}

/// Polls `cond` until true or panics after `limit`.
pub async fn eventually_within(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The shipped Grafana dashboard.
pub const DASHBOARD: &str = include_str!("../../docs/grafana/sealcast.json");

/// Every PromQL expression of the dashboard's panels.
pub fn dashboard_expressions() -> Vec<String> {
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", Value::String(expr)) => out.push(expr.clone()),
                        _ => collect(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            _ => {}
        }
    }
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut out = Vec::new();
    collect(&dashboard, &mut out);
    out
}

/// The `sealcast_*` series an expression names (e.g. `sealcast_handshake_seconds_bucket`).
pub fn series_named_in(expr: &str) -> Vec<String> {
    expr.match_indices("sealcast_")
        .map(|(at, _)| {
            expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

/// The series names with at least one sample in a Prometheus text scrape.
pub fn scraped_series(scrape: &str) -> std::collections::HashSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Joins `rooms` and waits for the `joined` answer, which it returns.
pub async fn join(c: &mut Client, rooms: &[&str]) -> Value {
    c.send(json!({"event": "join", "data": {"rooms": rooms}})).await;
    c.expect_event("joined").await
}

/// Asks who is in `room` and returns the answer frame (`presence`, or an `error`), skipping member events.
pub async fn ask_presence(c: &mut Client, room: &str) -> Value {
    c.send(json!({"event": "presence", "data": {"room": room}})).await;
    loop {
        let v = c.recv().await;
        if v["event"] == "presence" || v["event"] == "error" {
            return v;
        }
    }
}

/// The client ids a presence answer lists, sorted.
pub fn listed(answer: &Value) -> Vec<String> {
    let mut ids: Vec<String> = answer["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| x["client"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Reads frames until a `member_joined` or `member_left` event and returns `(event, data)`.
pub async fn next_member_event(c: &mut Client) -> (String, Value) {
    loop {
        let v = c.recv().await;
        let name = v["event"].as_str().unwrap_or_default().to_owned();
        if name == "member_joined" || name == "member_left" {
            return (name, v["data"].clone());
        }
    }
}

/// A connection that costs the test next to nothing: a raw TCP socket that upgrades to WebSocket and sends
/// `authenticate` with `token` in one write, then reads and drops whatever the server sends until it closes. For
/// tests that need thousands of members (a tungstenite client per member would be heavy).
pub async fn raw_member(port: u16, token: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let _ = s.set_nodelay(true);
    let payload = json!({"event": "authenticate", "data": {"token": token}}).to_string();
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    // One masked text frame; a zero masking key leaves the payload as it is.
    bytes.push(0x81);
    match payload.len() {
        n if n < 126 => bytes.push(0x80 | n as u8),
        n => {
            bytes.push(0x80 | 126);
            bytes.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    bytes.extend_from_slice(payload.as_bytes());
    s.write_all(&bytes).await.expect("write");
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
}
