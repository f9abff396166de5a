//! The `sealcast` binary, spawned as a process.

// The harness the library's integration tests use (repository root `tests/common/`).
#[path = "../../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use sealcast::client::ClientConfig;
use sealcast::crypto::PinnedKey;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_sealcast");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `sealcast serve` and returns it with the lines it printed up to "listening".
fn serve(envs: &[(&str, &str)]) -> (Proc, Vec<String>, u16) {
    serve_with(&[], envs)
}

/// `serve` with extra arguments.
fn serve_with(args: &[&str], envs: &[(&str, &str)]) -> (Proc, Vec<String>, u16) {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .env("SEALCAST_BIND", &bind)
        .env_remove("SEALCAST_JWT_SECRET")
        .env("SEALCAST_ADMIN_BIND", "off")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for line in out.lines() {
        let line = line.unwrap();
        let done = line.contains("listening on");
        lines.push(line);
        if done {
            break;
        }
    }
    (Proc(child), lines, port)
}

fn printed<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.split(prefix).nth(1))
        .unwrap_or_else(|| panic!("{prefix} not printed: {lines:?}"))
        .split_whitespace()
        .next()
        .unwrap()
}

#[tokio::test]
async fn dev_mode_prints_a_sample_token_and_key_that_establish_an_encrypted_session() {
    let (_p, lines, port) = serve(&[]);
    let (mut enc, token, url) = dev_session(&lines, port).await;
    assert!(enc.is_encrypted());
    assert_eq!(enc.user_id(), Some("dev-user"));
    enc.heartbeat().await.unwrap();
    // Encryption is required by default: a plaintext authenticate is closed 4004.
    let mut plain = Client::connect(&url).await;
    plain
        .send(json!({"event": "authenticate", "data": {"token": token}}))
        .await;
    assert_eq!(plain.expect_close().await.0, 4004);
}

#[tokio::test]
async fn keygen_writes_a_private_key_file_the_server_serves() {
    let dir = std::env::temp_dir().join(format!("sealcast-keygen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("k.pem");
    let _ = std::fs::remove_file(&path);
    let out = Command::new(BIN).args(["keygen", "--out"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    let (kid, public) = (printed(&lines, "kid="), printed(&lines, "publicKey="));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let again = Command::new(BIN).args(["keygen", "--out"]).arg(&path).output().unwrap();
    assert!(!again.status.success(), "must not overwrite without --force");
    let (_p, served, port) = serve(&[("SEALCAST_SERVER_KEY_FILE", path.to_str().unwrap())]);
    assert!(!served.iter().any(|l| l.contains("ephemeral")), "{served:?}");
    let (status, body) = http_get(port, "/.well-known/sealcast.json").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        json!({"protocol": "wsenc/1", "keys": [{"kid": kid, "publicKey": public}]})
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn token_subcommand_mints_tokens_the_server_accepts() {
    let secret = "test-secret-123";
    let out = Command::new(BIN)
        .args(["token", "--sub", "alice", "--ttl", "10m"])
        .env("SEALCAST_JWT_SECRET", secret)
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (_p, lines, port) = serve(&[
        ("SEALCAST_JWT_SECRET", secret),
        ("SEALCAST_ALLOW_CLIENT_PUBLISH", "true"),
        ("SEALCAST_REQUIRE_ENCRYPTION", "false"),
    ]);
    assert!(!lines.iter().any(|l| l.contains(secret)), "secret printed: {lines:?}");
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut a = Client::connect(&url).await;
    a.send(json!({"event": "authenticate", "data": {"token": token}})).await;
    assert_eq!(a.expect_event("connected").await["userId"], "alice");
    let mut bad = Client::connect(&url).await;
    bad.send(json!({"event": "authenticate", "data": {"token": "forged"}}))
        .await;
    assert_eq!(bad.expect_close().await.0, 4003);
    // Joins are allowed (no rooms claim) and client publish is on.
    let mut b = Client::connect(&url).await;
    b.send(json!({"event": "authenticate", "data": {"token": token}})).await;
    b.expect_event("connected").await;
    b.send(json!({"event": "join", "data": {"rooms": ["chat"]}})).await;
    a.send(json!({"event": "join", "data": {"rooms": ["chat"]}})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.send(json!({"event": "publish", "data": {"room": "chat", "event": "msg", "data": "hi"}}))
        .await;
    assert_eq!(b.expect_event("msg").await, json!("hi"));
}

#[tokio::test]
async fn env_settings_reach_the_server() {
    let (_p, _, port) = serve(&[("SEALCAST_AUTH_TIMEOUT_MS", "200"), ("SEALCAST_PATH", "/live")]);
    let mut c = Client::connect(&format!("ws://127.0.0.1:{port}/live")).await;
    assert_eq!(c.expect_close().await.0, 4001);
}

/// Runs `sealcast serve` on 0.0.0.0 without a secret (plus `envs`); it must refuse: its stderr.
fn public_bind_refusal(envs: &[(&str, &str)]) -> String {
    let out = Command::new(BIN)
        .arg("serve")
        .env("SEALCAST_BIND", "0.0.0.0:0")
        .env_remove("SEALCAST_JWT_SECRET")
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn refuses_a_public_bind_without_a_secret() {
    let err = public_bind_refusal(&[]);
    assert!(
        err.contains("SEALCAST_JWT_SECRET") && err.contains("SEALCAST_SERVER_KEY_FILE"),
        "{err}"
    );
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let (mut p, _, _) = serve(&[]);
    let pid = p.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = p.0.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_second_signal_exits_at_once_with_a_failure_status() {
    let (mut p, _, port) = serve(&[("SEALCAST_SHUTDOWN_TIMEOUT_MS", "60000")]);
    let _stuck = hold_a_request(port).await;
    let pid = p.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        p.0.try_wait().unwrap().is_none(),
        "the first signal must shut down gracefully"
    );
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = p.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a second signal must exit at once"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(130), "{status:?}");
}

#[tokio::test]
async fn the_admin_listener_serves_health_readiness_and_metrics_and_readiness_drops_on_shutdown() {
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let (p, lines, port) = serve(&[
        ("SEALCAST_ADMIN_BIND", &admin),
        ("SEALCAST_SHUTDOWN_TIMEOUT_MS", "60000"),
    ]);
    assert_eq!(printed(&lines, "admin on "), format!("http://{admin}"));
    for path in ["/livez", "/healthz", "/readyz"] {
        assert_eq!(http_get(admin_port, path).await.0, 200, "{path}");
    }
    // One encrypted session so the connection metrics move.
    let (mut enc, _, _) = dev_session(&lines, port).await;
    enc.heartbeat().await.unwrap();
    let (status, metrics) = http_get(admin_port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("sealcast_connections 1"), "{metrics}");
    assert!(metrics.contains("sealcast_sessions{encrypted=\"true\"} 1"), "{metrics}");
    assert!(
        metrics.contains("sealcast_authentications_total{outcome=\"accepted\"} 1"),
        "{metrics}"
    );
    // The admin endpoints are never on the public listener.
    for path in ["/metrics", "/readyz", "/livez"] {
        assert_eq!(http_get(port, path).await.0, 404, "{path}");
    }
    // Keep the graceful shutdown busy, then watch readiness drop.
    let _stuck = hold_a_request(port).await;
    let pid = p.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(http_get(admin_port, "/readyz").await.0, 503);
    assert_eq!(http_get(admin_port, "/livez").await.0, 200);
}

/// `sealcast serve` (development mode) with the admin listener on: the process, its output up to "listening",
/// the public port and the admin port.
fn serve_with_admin() -> (Proc, Vec<String>, u16, u16) {
    let admin_port = free_port();
    let (p, lines, port) = serve(&[("SEALCAST_ADMIN_BIND", &format!("127.0.0.1:{admin_port}"))]);
    (p, lines, port, admin_port)
}

/// What `/metrics` answers on the admin port.
async fn scrape(admin_port: u16) -> String {
    let (status, body) = http_get(admin_port, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn every_dashboard_query_names_a_series_a_fresh_server_exports() {
    let (_p, _, _, admin_port) = serve_with_admin();
    let exported = scraped_series(&scrape(admin_port).await);
    let expressions = dashboard_expressions();
    assert!(expressions.len() > 10, "the dashboard has its queries: {expressions:?}");
    for expr in &expressions {
        let named = series_named_in(expr);
        assert!(!named.is_empty(), "a dashboard query names no sealcast metric: {expr}");
        // The Redis bus's series exist only on servers with Redis (redis_binary.rs checks those).
        for series in named.iter().filter(|s| !s.starts_with("sealcast_redis_")) {
            assert!(
                exported.contains(series),
                "{series} (in `{expr}`) is not exported: {exported:?}"
            );
        }
    }
}

#[tokio::test]
async fn every_exported_metric_has_help_text() {
    let (_p, _, _, admin_port) = serve_with_admin();
    let metrics = scrape(admin_port).await;
    let typed: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(typed.len() > 10, "{metrics}");
    for name in typed {
        assert!(
            metrics.lines().any(|l| l.starts_with(&format!("# HELP {name} "))),
            "no # HELP for {name}: {metrics}"
        );
    }
}

#[tokio::test]
async fn latencies_are_histograms_with_buckets_before_any_observation() {
    let (_p, _, _, admin_port) = serve_with_admin();
    let metrics = scrape(admin_port).await;
    assert!(!metrics.contains(" summary\n"), "no summaries: {metrics}");
    for name in ["sealcast_handshake_seconds", "sealcast_fanout_seconds"] {
        assert!(
            metrics.contains(&format!("# TYPE {name} histogram\n")),
            "{name}: {metrics}"
        );
        assert!(
            metrics.contains(&format!("{name}_bucket{{le=\"0.001\"}} 0\n")),
            "{name}: {metrics}"
        );
        assert!(metrics.contains(&format!("{name}_count 0\n")), "{name}: {metrics}");
    }
}

#[tokio::test]
async fn build_info_carries_the_version() {
    let (_p, _, _, admin_port) = serve_with_admin();
    // The library and the binary are versioned together.
    let expected = format!("sealcast_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"));
    let metrics = scrape(admin_port).await;
    assert!(metrics.contains(&expected), "{metrics}");
}

#[tokio::test]
async fn series_with_labels_exist_at_zero_before_their_first_event() {
    let (_p, _, _, admin_port) = serve_with_admin();
    let metrics = scrape(admin_port).await;
    for series in [
        "sealcast_closes_total{code=\"4007\"} 0",
        "sealcast_closes_total{code=\"1001\"} 0",
        "sealcast_connections_refused_total{reason=\"per_ip\"} 0",
        "sealcast_hook_failures_total{hook=\"authenticator\"} 0",
        "sealcast_authentications_total{outcome=\"timeout\"} 0",
        "sealcast_rooms 0",
        "sealcast_users 0",
    ] {
        assert!(metrics.lines().any(|l| l == series), "{series}: {metrics}");
    }
}

#[tokio::test]
async fn rooms_and_users_gauges_count_this_instances_rooms_and_users() {
    let (_p, lines, port, admin_port) = serve_with_admin();
    let (client, _, _) = dev_session(&lines, port).await;
    // dev-user's session is in the default rooms ws-default and ws-notification; its own-id room is not counted.
    let metrics = scrape(admin_port).await;
    assert!(metrics.lines().any(|l| l == "sealcast_users 1"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "sealcast_rooms 2"), "{metrics}");
    drop(client);
    let mut left = String::new();
    for _ in 0..100 {
        left = scrape(admin_port).await;
        if left.lines().any(|l| l == "sealcast_users 0") && left.lines().any(|l| l == "sealcast_rooms 0") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gauges did not drop back to 0 once the session ended: {left}");
}

/// A request still being sent: the graceful shutdown waits for it, so the process stays in its shutdown phase.
async fn hold_a_request(port: u16) -> tokio::net::TcpStream {
    let mut stuck = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stuck, b"GET /ws HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stuck
}

/// An encrypted session with the dev-mode sample token and key a server printed; also returns the token and URL.
async fn dev_session(lines: &[String], port: u16) -> (sealcast::client::Client, &str, String) {
    let token = printed(lines, "sample token (sub=dev-user, 1h): ");
    let key = PinnedKey::from_b64u(printed(lines, "publicKey=")).unwrap();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let enc = sealcast::client::Client::connect(ClientConfig::new(&url, token).pin(key))
        .await
        .unwrap();
    (enc, token, url)
}

/// Every output line of a process, shared with the threads reading it.
type Lines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Runs `sealcast serve` with every output line (stdout and stderr) captured, plus the reader threads.
fn serve_captured(envs: &[(&str, &str)]) -> (Proc, Lines, u16, Vec<std::thread::JoinHandle<()>>) {
    let port = free_port();
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("SEALCAST_BIND", format!("127.0.0.1:{port}"))
        .env("SEALCAST_ADMIN_BIND", "off")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
    let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
    let readers = [out, err]
        .into_iter()
        .map(|stream| {
            let (lines, tx) = (lines.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("listening on") {
                        let _ = tx.send(());
                    }
                    lines.lock().unwrap().push(line);
                }
            })
        })
        .collect();
    rx.recv_timeout(Duration::from_secs(20)).expect("server did not start");
    (Proc(child), lines, port, readers)
}

#[tokio::test]
async fn json_debug_logs_of_a_full_encrypted_session_hold_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("k.pem");
    assert!(Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(&key_path)
        .output()
        .unwrap()
        .status
        .success());
    let pem = std::fs::read_to_string(&key_path).unwrap();
    let public = sealcast::crypto::StaticKey::from_pkcs8_pem(&pem)
        .unwrap()
        .public_key_b64u();
    let jwt_secret = "jwt-secret-7f3a9c1e5b";
    let api_key = "api-key-4d2b8e6a0c";
    let (mut p, lines, port, readers) = serve_captured(&[
        ("SEALCAST_LOG", "debug"),
        ("SEALCAST_LOG_FORMAT", "json"),
        ("SEALCAST_JWT_SECRET", jwt_secret),
        ("SEALCAST_SERVER_KEY_FILE", key_path.to_str().unwrap()),
        ("SEALCAST_API_KEY", api_key),
        ("SEALCAST_ALLOW_CLIENT_PUBLISH", "true"),
        ("SEALCAST_PUBLISH_TO_SELF", "true"),
    ]);
    let token = sealcast::auth::mint(jwt_secret.as_bytes(), "alice", Duration::from_secs(3600), None).unwrap();
    let fresh = sealcast::auth::mint(jwt_secret.as_bytes(), "alice", Duration::from_secs(7200), None).unwrap();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let pinned = PinnedKey::from_b64u(&public).unwrap();
    let mut c = sealcast::client::Client::connect(ClientConfig::new(&url, &token).pin(pinned))
        .await
        .unwrap();
    assert!(c.is_encrypted());
    let hello = c.connected_data().clone();
    let body = "TOP-SECRET-BODY-9b1e4f";
    c.join(&["vault"]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.publish("vault", "note", &json!({"text": body})).await.unwrap();
    assert_eq!(c.recv().await.unwrap().data, json!({"text": body}));
    c.send("custom", &json!({"text": body})).await.unwrap();
    c.send("refresh", &json!({"token": fresh})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.publish("vault", "note", &json!({"text": body})).await.unwrap();
    assert_eq!(c.recv().await.unwrap().data, json!({"text": body}));
    let client_id = c.id().to_owned();
    c.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = p.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(p.0.wait().unwrap().success());
    readers.into_iter().for_each(|r| r.join().unwrap());
    let log = lines.lock().unwrap().join("\n");
    let pem_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut secrets = vec![
        ("token", token.as_str()),
        ("refreshed token", fresh.as_str()),
        ("JWT secret", jwt_secret),
        ("API key", api_key),
        ("message body", body),
        ("private key", pem_body.as_str()),
    ];
    for field in ["salt", "serverPublicKey", "confirm"] {
        secrets.push((field, hello[field].as_str().unwrap()));
    }
    // Also no fragment of the private key's PEM lines.
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        secrets.push(("private key line", line));
    }
    for (what, secret) in secrets {
        assert!(!secret.is_empty());
        assert!(!log.contains(secret), "the logs contain the {what}:\n{log}");
    }
    // The logs are JSON, one connection event per line with the client id and the close code.
    let events: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let about = |message: &str| {
        events
            .iter()
            .any(|e| e["fields"]["message"] == message && e["fields"]["client"] == client_id.as_str())
    };
    assert!(
        about("authenticated") && about("credentials refreshed") && about("disconnected"),
        "{log}"
    );
}

/// Runs `sealcast serve ARGS` on `bind` (admin listener off), which must refuse to start (status 1): its stderr.
fn serve_refused(args: &[&str], bind: &str) -> String {
    let out = Command::new(BIN)
        .arg("serve")
        .args(args)
        .env("SEALCAST_BIND", bind)
        .env("SEALCAST_ADMIN_BIND", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_busy_port_is_refused_naming_the_address_and_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = serve_refused(&[], &addr);
    assert!(
        err.contains(&format!(
            "cannot listen on {addr} (`server.bind`, SEALCAST_BIND, --bind)"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn text_logs_carry_no_colour_codes_when_not_written_to_a_terminal() {
    let (_p, lines, _port, _readers) = serve_captured(&[("SEALCAST_LOG", "debug")]);
    let lines = lines.lock().unwrap().clone();
    assert!(lines.iter().any(|l| l.contains(" INFO ")), "no log line: {lines:?}");
    assert!(!lines.iter().any(|l| l.contains('\u{1b}')), "{lines:?}");
}

#[tokio::test]
async fn json_log_format_writes_every_line_as_json_startup_lines_included() {
    // `warn` would hide the startup lines if they were ordinary log events.
    let (mut p, lines, port, readers) = serve_captured(&[("SEALCAST_LOG_FORMAT", "json"), ("SEALCAST_LOG", "warn")]);
    let mut c = Client::connect(&format!("ws://127.0.0.1:{port}/ws")).await;
    c.send(json!({"event": "authenticate", "data": {"token": "forged"}}))
        .await;
    assert_eq!(c.expect_close().await.0, 4003);
    let pid = p.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(p.0.wait().unwrap().success());
    readers.into_iter().for_each(|r| r.join().unwrap());
    let lines = lines.lock().unwrap().clone();
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let said = |start: &str| {
        events
            .iter()
            .any(|e| e["fields"]["message"].as_str().is_some_and(|m| m.starts_with(start)))
    };
    assert!(said("listening on ws://127.0.0.1:"), "{lines:?}");
    assert!(said("development mode") && said("sample token"), "{lines:?}");
}

/// The reason `sealcast serve` logs when it refuses `token` (HS256 with `secret`); the logs never show the token.
async fn logged_refusal(envs: &[(&str, &str)], token: &str) -> String {
    let mut envs = envs.to_vec();
    envs.extend([
        ("SEALCAST_LOG_FORMAT", "json"),
        ("SEALCAST_REQUIRE_ENCRYPTION", "false"),
    ]);
    let (_p, lines, port, _readers) = serve_captured(&envs);
    let mut c = Client::connect(&format!("ws://127.0.0.1:{port}/ws")).await;
    c.send(json!({"event": "authenticate", "data": {"token": token}})).await;
    assert_eq!(c.expect_close().await.0, 4003);
    let refusal = || {
        let lines = lines.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["fields"]["message"] == "authentication refused")
    };
    eventually("the refusal is logged", || refusal().is_some()).await;
    let log = lines.lock().unwrap().join("\n");
    assert!(!log.contains(token), "the token is in the log:\n{log}");
    let event = refusal().unwrap();
    assert!(event["fields"]["client"].is_string(), "{event}");
    event["fields"]["reason"].as_str().unwrap().to_owned()
}

const LOG_SECRET: &str = "log-test-secret-0123456789abcdef";

fn claims_expiring_in(secs: i64) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    json!({"sub": "alice", "exp": now + secs})
}

#[tokio::test]
async fn an_expired_token_is_logged_as_expired() {
    let token = common::jwt::hmac_signed("HS256", LOG_SECRET.as_bytes(), &claims_expiring_in(-60));
    let reason = logged_refusal(&[("SEALCAST_JWT_SECRET", LOG_SECRET)], &token).await;
    assert_eq!(reason, "the token has expired (`exp`)");
}

#[tokio::test]
async fn a_token_signed_with_another_key_is_logged_as_a_bad_signature() {
    let token = common::jwt::hmac_signed("HS256", b"another-secret", &claims_expiring_in(60));
    let reason = logged_refusal(&[("SEALCAST_JWT_SECRET", LOG_SECRET)], &token).await;
    assert_eq!(
        reason,
        "bad signature: the token was not signed with the configured key"
    );
}

#[tokio::test]
async fn a_token_of_another_algorithm_is_logged_as_the_wrong_algorithm() {
    let token = common::jwt::hmac_signed("HS384", LOG_SECRET.as_bytes(), &claims_expiring_in(60));
    let reason = logged_refusal(&[("SEALCAST_JWT_SECRET", LOG_SECRET)], &token).await;
    assert_eq!(reason, "wrong algorithm: the token's `alg` is not the configured HS256");
}

#[tokio::test]
async fn a_token_without_sub_is_logged_as_missing_sub() {
    let mut claims = claims_expiring_in(60);
    claims.as_object_mut().unwrap().remove("sub");
    let token = common::jwt::hmac_signed("HS256", LOG_SECRET.as_bytes(), &claims);
    let reason = logged_refusal(&[("SEALCAST_JWT_SECRET", LOG_SECRET)], &token).await;
    assert_eq!(
        reason,
        "the token has no usable `sub` claim (absent or of the wrong type)"
    );
}

#[tokio::test]
async fn a_connect_proxy_refusal_is_logged_as_refused_by_the_backend() {
    let backend = proxy_backend().await;
    let proxy_url = format!("http://{backend}/auth");
    let reason = logged_refusal(&[("SEALCAST_AUTH_PROXY_URL", &proxy_url)], "bad-token-5e9a").await;
    assert_eq!(reason, "the auth backend refused (401/403)");
}

/// A config file in a temporary directory (kept alive by the returned guard).
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sealcast.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.to_str().unwrap().to_owned())
}

/// Runs `sealcast config check ARGS` with `envs`: exit status, stdout, stderr.
fn config_check(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["config", "check"])
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap(), text(out.stdout), text(out.stderr))
}

/// Runs `sealcast config check ARGS` expecting a refusal (status 2); its stderr.
fn config_refused(args: &[&str], envs: &[(&str, &str)]) -> String {
    let (code, out, err) = config_check(args, envs);
    assert_eq!(code, 2, "{out}{err}");
    err
}

/// `config check ARGS` refuses, and its message has every one of `parts`.
fn config_refusal_says(args: &[&str], envs: &[(&str, &str)], parts: &[&str]) {
    let err = config_refused(args, envs);
    assert!(parts.iter().all(|p| err.contains(p)), "{parts:?} not all in: {err}");
}

#[test]
fn config_check_names_an_unknown_key_and_suggests_the_fix() {
    let (_dir, path) = config_file("[server]\nheartbeat_intervl = 5\n");
    let err = config_refused(&["--config", &path], &[]);
    assert!(
        err.contains(&format!(
            "{path}: unknown key \"heartbeat_intervl\" in [server]; did you mean \"heartbeat_interval_ms\"?"
        )),
        "{err}"
    );
}

#[test]
fn config_check_names_the_key_of_a_bad_value() {
    let (_dir, path) = config_file("[limits]\nmax_connections = 0\n");
    let err = config_refused(&["--config", &path], &[]);
    assert!(
        err.contains("`limits.max_connections` must be greater than 0 (set in the config file)"),
        "{err}"
    );
}

#[test]
fn config_check_names_the_variable_of_a_bad_environment_value() {
    let err = config_refused(&[], &[("SEALCAST_MESSAGE_RATE", "fast")]);
    assert!(
        err.contains("`limits.message_rate` must be a number >= 0, not \"fast\" (set by SEALCAST_MESSAGE_RATE)"),
        "{err}"
    );
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
    let (_dir, path) = config_file("[server]\npath = \"/file\"\n[limits]\nmax_connections = 5\njoin_rate = 3\n");
    let (code, out, err) = config_check(
        &["--config", &path, "--max-connections", "7"],
        &[("SEALCAST_MAX_CONNECTIONS", "6"), ("SEALCAST_PATH", "/env")],
    );
    assert_eq!(code, 0, "{err}");
    for line in [
        "max_connections = 7  # flag --max-connections",
        "path = \"/env\"  # env SEALCAST_PATH",
        "join_rate = 3.0  # config file",
        "max_sessions_per_user = 100  # default",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} not in:\n{out}");
    }
}

#[test]
fn the_config_file_can_come_from_sealcast_config() {
    let (_dir, path) = config_file("[limits]\nmax_connections = 5\n");
    let (code, out, err) = config_check(&[], &[("SEALCAST_CONFIG", &path)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("max_connections = 5  # config file"), "{out}");
}

#[test]
fn config_check_redacts_secrets_from_every_source() {
    let (_dir, path) = config_file("[auth]\njwt_secret = \"file-jwt-secret-1f2e\"\n");
    let (code, out, err) = config_check(
        &["--config", &path, "--bus-secret", "flag-bus-secret-3c4d"],
        &[("SEALCAST_API_KEY", "env-api-key-5a6b")],
    );
    assert_eq!(code, 0, "{err}");
    assert_redacted(
        (&out, &err),
        &["file-jwt-secret-1f2e", "flag-bus-secret-3c4d", "env-api-key-5a6b"],
        &[
            "jwt_secret = \"<redacted>\"  # config file",
            "bus_secret = \"<redacted>\"  # flag --bus-secret",
            "api_key = \"<redacted>\"  # env SEALCAST_API_KEY",
        ],
    );
}

/// `config check`'s output `(stdout, stderr)` shows none of `hidden` and has each of the `shown` lines.
fn assert_redacted((out, err): (&str, &str), hidden: &[&str], shown: &[&str]) {
    for secret in hidden {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} printed:\n{out}{err}"
        );
    }
    for line in shown {
        assert!(out.lines().any(|l| l == *line), "{line:?} not in:\n{out}");
    }
}

#[test]
fn config_check_redacts_url_passwords_and_query_strings() {
    let (_dir, path) = config_file(
        "[redis]\nurl = \"redis://app:redis-pass-8e1f@127.0.0.1:6379/0\"\n\
         [auth]\nproxy_url = \"http://127.0.0.1:3000/auth?key=proxy-key-2c7d\"\n",
    );
    let (code, out, err) = config_check(&["--config", &path], &[]);
    assert_eq!(code, 0, "{err}");
    assert_redacted(
        (&out, &err),
        &["redis-pass-8e1f", "proxy-key-2c7d"],
        &[
            "url = \"redis://app:[redacted]@127.0.0.1:6379/0\"  # config file",
            "proxy_url = \"http://127.0.0.1:3000/auth?[redacted]\"  # config file",
        ],
    );
}

#[test]
fn config_check_redacts_cluster_node_passwords_from_the_environment() {
    let nodes = "redis://:node-pass-1@10.0.0.1:7000,redis://:node-pass-2@10.0.0.2:7000";
    let (code, out, err) = config_check(&[], &[("SEALCAST_REDIS_CLUSTER_NODES", nodes)]);
    assert_eq!(code, 0, "{err}");
    assert_redacted(
        (&out, &err),
        &["node-pass"],
        &[
            r#"cluster_nodes = ["redis://:[redacted]@10.0.0.1:7000", "redis://:[redacted]@10.0.0.2:7000"]  # env SEALCAST_REDIS_CLUSTER_NODES"#,
        ],
    );
}

#[test]
fn help_hides_the_values_of_url_variables() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .env("SEALCAST_REDIS_URL", "redis://app:help-pass-77@127.0.0.1:6379")
        .env("SEALCAST_AUTH_PROXY_URL", "http://127.0.0.1:1/auth?key=help-key-88")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("SEALCAST_REDIS_URL"), "{help}");
    assert!(
        !help.contains("help-pass-77") && !help.contains("help-key-88"),
        "{help}"
    );
}

#[test]
fn serve_refusing_a_redis_url_does_not_print_its_password() {
    let out = Command::new(BIN)
        .arg("serve")
        .env("SEALCAST_BIND", "127.0.0.1:0")
        .env("SEALCAST_ADMIN_BIND", "off")
        .env("SEALCAST_REDIS_URL", "redis://app:serve-pass-99@127.0.0.1:notaport")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("redis://app:[redacted]@127.0.0.1:notaport"), "{all}");
    assert!(!all.contains("serve-pass-99"), "{all}");
}

#[test]
fn config_check_refuses_a_log_level_that_is_not_a_level() {
    config_refusal_says(
        &[],
        &[("SEALCAST_LOG", "verbose")],
        &[
            "`log.level` has \"verbose\", which does not end in a level",
            "(set by SEALCAST_LOG)",
        ],
    );
}

#[test]
fn serve_refuses_a_log_level_that_is_not_a_level() {
    let err = serve_refused(&["--log", "warning"], "127.0.0.1:0");
    assert!(
        err.contains("did you mean `warn`?") && err.contains("(set by --log)"),
        "{err}"
    );
}

#[test]
fn config_check_warns_about_an_unknown_variable_and_suggests_the_right_one() {
    let (code, _, err) = config_check(&[], &[("SEALCAST_HEARTBEAT_INTERVAL", "5000")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "warning: SEALCAST_HEARTBEAT_INTERVAL is not a sealcast setting and is ignored; did you mean \
             SEALCAST_HEARTBEAT_INTERVAL_MS?"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn serve_logs_a_warning_for_an_unknown_variable() {
    let (_p, lines, _port, _readers) = serve_captured(&[("SEALCAST_MAX_CONECTIONS", "5")]);
    let log = lines.lock().unwrap().join("\n");
    assert!(
        log.contains(
            "SEALCAST_MAX_CONECTIONS is not a sealcast setting and is ignored; did you mean SEALCAST_MAX_CONNECTIONS?"
        ),
        "{log}"
    );
}

#[test]
fn config_check_refuses_a_heartbeat_timeout_not_above_the_interval() {
    let (_dir, path) = config_file("[server]\nheartbeat_interval_ms = 30000\nheartbeat_timeout_ms = 30000\n");
    config_refusal_says(
        &["--config", &path],
        &[],
        &["`server.heartbeat_timeout_ms` is 30000 ms, not above `server.heartbeat_interval_ms` (30000 ms)"],
    );
}

#[test]
fn config_check_refuses_an_origin_without_a_scheme() {
    config_refusal_says(
        &[],
        &[("SEALCAST_ALLOWED_ORIGINS", "https://app.example,chat.example")],
        &[
            "`server.allowed_origins` has \"chat.example\", which has no scheme",
            "did you mean \"https://chat.example\"?",
        ],
    );
}

#[test]
fn config_check_refuses_a_short_hs256_secret_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    keygen_into(&key);
    let key = key.to_str().unwrap();
    let public = [("SEALCAST_SERVER_KEY_FILE", key), ("SEALCAST_BIND", "0.0.0.0:8080")];
    let short = "short-secret-31-bytes-long-xxxx";
    let err = config_refused(&[], &[public[0], public[1], ("SEALCAST_JWT_SECRET", short)]);
    assert!(
        err.contains("`auth.jwt_secret` has 31 bytes with `server.bind` 0.0.0.0:8080, beyond loopback")
            && !err.contains(short),
        "{err}"
    );
    let long = "a-secret-of-exactly-32-bytes-xyz";
    let (code, _, err) = config_check(&[], &[public[0], public[1], ("SEALCAST_JWT_SECRET", long)]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn config_check_warns_about_an_admin_listener_beyond_loopback() {
    let (code, _, err) = config_check(&["--admin-bind", "0.0.0.0:9090"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: `admin.bind` is 0.0.0.0:9090, beyond loopback"),
        "{err}"
    );
}

#[test]
fn token_without_a_secret_says_where_the_secret_comes_from() {
    let out = Command::new(BIN)
        .args(["token", "--sub", "alice"])
        .env_remove("SEALCAST_JWT_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--secret") && err.contains("SEALCAST_JWT_SECRET") && err.contains("`auth.jwt_secret`"),
        "{err}"
    );
}

#[test]
fn config_check_refuses_a_public_bind_saying_what_is_missing() {
    let err = config_refused(&["--bind", "0.0.0.0:8080"], &[]);
    assert!(
        err.contains("`server.bind` is 0.0.0.0:8080, beyond loopback: refusing to listen there without")
            && err.contains("`auth.jwt_secret` / SEALCAST_JWT_SECRET")
            && err.contains("`encryption.server_key_files` / SEALCAST_SERVER_KEY_FILE"),
        "{err}"
    );
    let err = config_refused(&["--bind", "0.0.0.0:8080"], &[("SEALCAST_JWT_SECRET", "s")]);
    assert!(
        !err.contains("SEALCAST_JWT_SECRET") && err.contains("SEALCAST_SERVER_KEY_FILE"),
        "{err}"
    );
}

#[test]
fn config_check_reads_the_key_files() {
    let (_dir, path) = config_file("not a key");
    let err = config_refused(&[], &[("SEALCAST_SERVER_KEY_FILE", &path)]);
    assert!(
        err.contains("`encryption.server_key_files`") && err.contains("not a P-256 PKCS#8 PEM key"),
        "{err}"
    );
}

#[test]
fn the_committed_sample_config_is_what_config_sample_prints_and_passes_config_check() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sealcast.toml");
    let printed = Command::new(BIN).args(["config", "sample"]).output().unwrap();
    assert!(printed.status.success());
    assert_eq!(
        String::from_utf8(printed.stdout).unwrap(),
        std::fs::read_to_string(sample).unwrap()
    );
    let (code, out, err) = config_check(&["--config", sample], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("bind = \"127.0.0.1:8080\"  # config file"), "{out}");
}

#[test]
fn config_reference_prints_the_committed_configuration_reference_page() {
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/reference/configuration.md");
    let printed = Command::new(BIN).args(["config", "reference"]).output().unwrap();
    assert!(printed.status.success());
    let printed = String::from_utf8(printed.stdout).unwrap();
    assert!(
        printed.contains("### `server.bind`\n\nVariable `SEALCAST_BIND` · flag `--bind` ·"),
        "{printed}"
    );
    assert_eq!(printed, std::fs::read_to_string(page).unwrap());
}

#[test]
fn serve_refuses_an_invalid_config_file_naming_the_key() {
    let (_dir, path) = config_file("[limits]\nmax_conections = 5\n");
    let out = Command::new(BIN).args(["serve", "--config", &path]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did you mean \"max_connections\"?"), "{err}");
}

#[tokio::test]
async fn serve_takes_its_settings_from_the_config_file() {
    let (_dir, path) = config_file("[server]\npath = \"/from-file\"\nauth_timeout_ms = 200\n");
    let (_p, _, port) = serve_with(&["--config", &path], &[]);
    let mut c = Client::connect(&format!("ws://127.0.0.1:{port}/from-file")).await;
    assert_eq!(c.expect_close().await.0, 4001);
}

#[tokio::test]
async fn a_serve_flag_overrides_the_config_file() {
    let (_dir, path) = config_file("[server]\npath = \"/from-file\"\nauth_timeout_ms = 200\n");
    let (_p, _, port) = serve_with(&["--config", &path, "--path", "/from-flag"], &[]);
    let mut c = Client::connect(&format!("ws://127.0.0.1:{port}/from-flag")).await;
    assert_eq!(c.expect_close().await.0, 4001);
    assert_eq!(http_get(port, "/from-file").await.0, 404);
}

/// `sealcast keygen --force --out path`: the new key's kid and public key.
fn keygen_into(path: &std::path::Path) -> (String, String) {
    let out = Command::new(BIN)
        .args(["keygen", "--force", "--out"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    (
        printed(&lines, "kid=").to_owned(),
        printed(&lines, "publicKey=").to_owned(),
    )
}

#[tokio::test]
async fn rs256_public_key_file_verifies_client_tokens() {
    let key_file = format!(
        "{}/../../tests/fixtures/jwt/rs256-a.pub.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let (_p, lines, port) = serve(&[
        ("SEALCAST_JWT_ALGORITHM", "RS256"),
        ("SEALCAST_JWT_PUBLIC_KEY_FILE", &key_file),
        ("SEALCAST_REQUIRE_ENCRYPTION", "false"),
    ]);
    assert!(!lines.iter().any(|l| l.contains("sample token")), "{lines:?}");
    let url = format!("ws://127.0.0.1:{port}/ws");
    let token = common::jwt::sign(jsonwebtoken::Algorithm::RS256, "rs256-a.key.pem", "alice");
    let mut ok = Client::connect(&url).await;
    ok.send(json!({"event": "authenticate", "data": {"token": token}}))
        .await;
    assert_eq!(ok.expect_event("connected").await["userId"], "alice");
    let public_pem = common::jwt::fixture("rs256-a.pub.pem");
    let forged = common::jwt::hmac_signed("HS256", public_pem.as_bytes(), &common::jwt::claims("mallory", None));
    let mut bad = Client::connect(&url).await;
    bad.send(json!({"event": "authenticate", "data": {"token": forged}}))
        .await;
    assert_eq!(bad.expect_close().await.0, 4003);
}

#[test]
fn a_public_bind_counts_the_connect_proxy_as_authentication() {
    let err = public_bind_refusal(&[("SEALCAST_AUTH_PROXY_URL", "http://127.0.0.1:1/auth")]);
    assert!(
        err.contains("SEALCAST_SERVER_KEY_FILE") && !err.contains("SEALCAST_JWT_SECRET"),
        "{err}"
    );
}

#[tokio::test]
async fn sighup_rereads_the_server_key_file_for_new_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.pem");
    keygen_into(&path);
    let (p, lines, port) = serve(&[("SEALCAST_SERVER_KEY_FILE", path.to_str().unwrap())]);
    let token = printed(&lines, "sample token (sub=dev-user, 1h): ").to_owned();
    let (kid, public) = keygen_into(&path);
    let pid = p.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let start = std::time::Instant::now();
    loop {
        let (_, body) = http_get(port, "/.well-known/sealcast.json").await;
        if body.contains(&kid) {
            break;
        }
        assert!(start.elapsed() < WAIT, "new key not served: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("ws://127.0.0.1:{port}/ws");
    let pinned = PinnedKey::from_b64u(&public).unwrap();
    let enc = sealcast::client::Client::connect(ClientConfig::new(&url, token.as_str()).pin(pinned))
        .await
        .unwrap();
    assert!(enc.is_encrypted());
}

#[tokio::test]
async fn sighup_with_an_unparsable_key_file_keeps_the_old_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.pem");
    let (kid, _) = keygen_into(&path);
    let (p, lines, port, _readers) = serve_captured(&[("SEALCAST_SERVER_KEY_FILE", path.to_str().unwrap())]);
    std::fs::write(&path, "not a key").unwrap();
    let pid = p.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    eventually("the failed reload is logged", || {
        lines.lock().unwrap().iter().any(|l| l.contains("NOT reloaded"))
    })
    .await;
    let (status, body) = http_get(port, "/.well-known/sealcast.json").await;
    assert_eq!(status, 200);
    assert!(body.contains(&kid), "{body}");
}

#[tokio::test]
async fn the_binary_serves_the_http_api_with_its_bearer_key() {
    let api_key = "bin-api-key-3c9e1a";
    let (_p, lines, port) = serve(&[("SEALCAST_API_KEY", api_key), ("SEALCAST_REQUIRE_ENCRYPTION", "false")]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let token = printed(&lines, "sample token (sub=dev-user, 1h): ");
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut c = Client::connect(&url).await;
    c.send(json!({"event": "authenticate", "data": {"token": token}})).await;
    let id = id_of(&c.expect_event("connected").await);
    c.send(json!({"event": "join", "data": {"rooms": ["news"]}})).await;
    c.expect_event("joined").await;
    let publish = json!({"room": "news", "event": "headline", "data": {"n": 1}}).to_string();
    let (status, _) = http_post(addr, "/api/publish", None, &publish).await;
    assert_eq!(status, 401);
    let (status, _) = http_post(addr, "/api/publish", Some("Bearer wrong"), &publish).await;
    assert_eq!(status, 401);
    c.expect_silence().await;
    let bearer = format!("Bearer {api_key}");
    assert_eq!(http_post(addr, "/api/publish", Some(&bearer), &publish).await.0, 202);
    assert_eq!(c.expect_event("headline").await, json!({"n": 1}));
    let disconnect = json!({"client": id}).to_string();
    assert_eq!(
        http_post(addr, "/api/disconnect", Some(&bearer), &disconnect).await.0,
        202
    );
    assert_eq!(c.expect_close().await.0, 1008);
}

#[tokio::test]
async fn a_connection_limit_from_the_config_file_refuses_the_connection_beyond_it() {
    let (_dir, path) = config_file("[limits]\nmax_connections = 1\n");
    let (_p, _lines, port) = serve_with(&["--config", &path], &[]);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let _first = Client::connect(&url).await;
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(refusal)) => assert_eq!(refusal.status(), 503),
        other => panic!(
            "the second connection was not refused: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
}

/// A connect-proxy backend that accepts the token `good` as user `alice` and refuses everything else.
async fn proxy_backend() -> std::net::SocketAddr {
    async fn decide(axum::Json(payload): axum::Json<Value>) -> (axum::http::StatusCode, String) {
        if payload["token"] == "good" {
            (axum::http::StatusCode::OK, json!({"userId": "alice"}).to_string())
        } else {
            (axum::http::StatusCode::UNAUTHORIZED, String::new())
        }
    }
    serve_http(axum::Router::new().route("/auth", axum::routing::post(decide))).await
}

#[tokio::test]
async fn the_binary_authenticates_clients_through_the_connect_proxy() {
    let backend = proxy_backend().await;
    let proxy_url = format!("http://{backend}/auth");
    let (_p, lines, port) = serve(&[
        ("SEALCAST_AUTH_PROXY_URL", &proxy_url),
        ("SEALCAST_REQUIRE_ENCRYPTION", "false"),
    ]);
    assert!(!lines.iter().any(|l| l.contains("sample token")), "{lines:?}");
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut ok = Client::connect(&url).await;
    ok.send(json!({"event": "authenticate", "data": {"token": "good"}}))
        .await;
    assert_eq!(ok.expect_event("connected").await["userId"], "alice");
    let mut refused = Client::connect(&url).await;
    refused
        .send(json!({"event": "authenticate", "data": {"token": "bad"}}))
        .await;
    assert_eq!(refused.expect_close().await.0, 4003);
}

/// A plain-http JWKS endpoint serving RS256 fixture keys `a` and `b`.
async fn jwks_endpoint() -> String {
    use jsonwebtoken::Algorithm::RS256;
    let document = common::jwt::jwks(&[
        common::jwt::jwk(RS256, "rs256-a.key.pem", "a"),
        common::jwt::jwk(RS256, "rs256-b.key.pem", "b"),
    ]);
    let app = axum::Router::new().route("/jwks", axum::routing::get(move || async move { document }));
    format!("http://{}/jwks", serve_http(app).await)
}

// Multi-threaded: `serve` blocks its thread until the server listens, and the server fetches the JWKS first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_verifies_tokens_with_the_jwks_key_their_kid_names() {
    use jsonwebtoken::Algorithm::RS256;
    let jwks_url = jwks_endpoint().await;
    let (_p, lines, port) = serve(&[
        ("SEALCAST_JWT_ALGORITHM", "RS256"),
        ("SEALCAST_JWKS_URL", &jwks_url),
        ("SEALCAST_REQUIRE_ENCRYPTION", "false"),
    ]);
    assert!(!lines.iter().any(|l| l.contains("sample token")), "{lines:?}");
    let url = format!("ws://127.0.0.1:{port}/ws");
    let token = common::jwt::sign_kid(RS256, "rs256-b.key.pem", Some("b"), "bob");
    let mut ok = Client::connect(&url).await;
    ok.send(json!({"event": "authenticate", "data": {"token": token}}))
        .await;
    assert_eq!(ok.expect_event("connected").await["userId"], "bob");
    let swapped = common::jwt::sign_kid(RS256, "rs256-b.key.pem", Some("a"), "mallory");
    let mut bad = Client::connect(&url).await;
    bad.send(json!({"event": "authenticate", "data": {"token": swapped}}))
        .await;
    assert_eq!(bad.expect_close().await.0, 4003);
}

// Multi-threaded: `serve` blocks its thread until the server listens, and the server fetches the JWKS first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_naming_a_kid_the_jwks_lacks_is_logged_as_an_unknown_key() {
    let jwks_url = jwks_endpoint().await;
    let token = common::jwt::sign_kid(jsonwebtoken::Algorithm::RS256, "rs256-a.key.pem", Some("gone"), "alice");
    let reason = logged_refusal(
        &[("SEALCAST_JWT_ALGORITHM", "RS256"), ("SEALCAST_JWKS_URL", &jwks_url)],
        &token,
    )
    .await;
    assert_eq!(reason, "unknown key: no key of the JWKS has the token's `kid`");
}

#[test]
fn config_check_refuses_hs256_with_a_jwks_url() {
    config_refusal_says(
        &[],
        &[("SEALCAST_JWKS_URL", "https://idp.example/jwks.json")],
        &["`auth.jwks_url` needs `auth.jwt_algorithm` RS256 or ES256"],
    );
    config_refusal_says(
        &[],
        &[
            ("SEALCAST_JWT_ALGORITHM", "ES256"),
            ("SEALCAST_JWKS_URL", "https://idp.example/jwks.json"),
            ("SEALCAST_AUTH_PROXY_URL", "http://127.0.0.1:1/auth"),
        ],
        &["`auth.jwks_url` is set together", "choose one authentication mode"],
    );
}

#[test]
fn config_check_accepts_a_jwks_url_as_authentication_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("server.pem");
    keygen_into(&key);
    let envs = [
        ("SEALCAST_BIND", "0.0.0.0:8080"),
        ("SEALCAST_SERVER_KEY_FILE", key.to_str().unwrap()),
        ("SEALCAST_JWT_ALGORITHM", "RS256"),
        ("SEALCAST_JWKS_URL", "http://127.0.0.1:1/jwks?key=jwks-key-7f3a"),
    ];
    let (code, out, err) = config_check(&[], &envs);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("jwks_url = \"http://127.0.0.1:1/jwks?[redacted]\"") && !out.contains("jwks-key-7f3a"),
        "{out}"
    );
    let err = public_bind_refusal(&[
        ("SEALCAST_JWT_ALGORITHM", "RS256"),
        ("SEALCAST_JWKS_URL", "http://127.0.0.1:1/jwks"),
    ]);
    assert!(
        err.contains("SEALCAST_SERVER_KEY_FILE") && !err.contains("SEALCAST_JWT_SECRET"),
        "{err}"
    );
}

#[test]
fn config_check_reads_the_ca_files_of_https_urls() {
    let (_dir, path) = config_file("not a certificate");
    config_refusal_says(
        &[],
        &[
            ("SEALCAST_JWT_ALGORITHM", "ES256"),
            ("SEALCAST_JWKS_URL", "https://idp.example/jwks.json"),
            ("SEALCAST_JWKS_CA_FILE", &path),
        ],
        &["`auth.jwks_ca_file`", "no CA certificate"],
    );
    config_refusal_says(
        &[],
        &[
            ("SEALCAST_AUTH_PROXY_URL", "https://auth.internal/connect"),
            ("SEALCAST_AUTH_PROXY_CA_FILE", "/nonexistent/ca.pem"),
        ],
        &["`auth.proxy_ca_file`", "cannot read the CA file /nonexistent/ca.pem"],
    );
}

#[tokio::test]
async fn the_binary_starts_without_its_jwks_and_answers_authentication_error_saying_why() {
    let jwks_url = format!("http://127.0.0.1:{}/jwks", free_port());
    let (_p, lines, port, _readers) = serve_captured(&[
        ("SEALCAST_JWT_ALGORITHM", "RS256"),
        ("SEALCAST_JWKS_URL", &jwks_url),
        ("SEALCAST_LOG_FORMAT", "json"),
        ("SEALCAST_REQUIRE_ENCRYPTION", "false"),
    ]);
    let log = || lines.lock().unwrap().join("\n");
    assert!(log().contains("JWKS not available at startup"), "{}", log());
    let token = common::jwt::sign_kid(jsonwebtoken::Algorithm::RS256, "rs256-a.key.pem", Some("a"), "alice");
    let mut c = Client::connect(&format!("ws://127.0.0.1:{port}/ws")).await;
    c.send(json!({"event": "authenticate", "data": {"token": token}})).await;
    let (code, _, before) = c.expect_close().await;
    assert_eq!(code, 4003);
    assert_eq!(
        before,
        vec![json!({"event": "error", "data": {"message": sealcast::protocol::event::errors::AUTHENTICATION_ERROR}})]
    );
    eventually("the authenticator error is logged with its reason", || {
        let log = log();
        log.contains("authenticator failed")
            && log.contains("no JWKS keys")
            && log.contains("cannot connect to the JWKS endpoint")
    })
    .await;
    assert!(!log().contains(&token), "the token is in the log");
}

// Multi-threaded: `serve` blocks its thread until the server listens, and the server fetches the JWKS first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_fetches_the_jwks_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let hits = Arc::new(AtomicUsize::new(0));
    let document = common::jwt::jwks(&[common::jwt::jwk(
        jsonwebtoken::Algorithm::ES256,
        "es256-a.key.pem",
        "ec",
    )]);
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            document
        }),
    );
    let jwks_url = format!("http://{}/jwks", serve_http(app).await);
    let (p, _lines, _port) = serve(&[("SEALCAST_JWT_ALGORITHM", "ES256"), ("SEALCAST_JWKS_URL", &jwks_url)]);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let pid = p.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    eventually("SIGHUP fetches the JWKS", || hits.load(Ordering::SeqCst) == 2).await;
}
