//! The `sealcast` binary, spawned as a process.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

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
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("SEALCAST_BIND", &bind)
        .env_remove("SEALCAST_JWT_SECRET")
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

#[tokio::test]
async fn dev_mode_prints_a_working_sample_token() {
    let (_p, lines, port) = serve(&[]);
    let token = lines
        .iter()
        .find_map(|l| l.split("sample token (sub=dev-user, 1h): ").nth(1))
        .expect("sample token printed")
        .to_owned();
    let mut c = Client::connect(&format!("ws://127.0.0.1:{port}/ws")).await;
    c.send(json!({"event": "authenticate", "data": {"token": token}}))
        .await;
    assert_eq!(c.expect_event("connected").await["userId"], "dev-user");
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
    ]);
    assert!(
        !lines.iter().any(|l| l.contains(secret)),
        "secret printed: {lines:?}"
    );
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut a = Client::connect(&url).await;
    a.send(json!({"event": "authenticate", "data": {"token": token}}))
        .await;
    assert_eq!(a.expect_event("connected").await["userId"], "alice");
    let mut bad = Client::connect(&url).await;
    bad.send(json!({"event": "authenticate", "data": {"token": "forged"}}))
        .await;
    assert_eq!(bad.expect_close().await.0, 4003);
    // Joins are allowed (no rooms claim) and client publish is on.
    let mut b = Client::connect(&url).await;
    b.send(json!({"event": "authenticate", "data": {"token": token}}))
        .await;
    b.expect_event("connected").await;
    b.send(json!({"event": "join", "data": {"rooms": ["chat"]}}))
        .await;
    a.send(json!({"event": "join", "data": {"rooms": ["chat"]}}))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.send(json!({"event": "publish", "data": {"room": "chat", "event": "msg", "data": "hi"}}))
        .await;
    assert_eq!(b.expect_event("msg").await, json!("hi"));
}

#[tokio::test]
async fn env_settings_reach_the_server() {
    let (_p, _, port) = serve(&[
        ("SEALCAST_AUTH_TIMEOUT_MS", "200"),
        ("SEALCAST_PATH", "/live"),
    ]);
    let mut c = Client::connect(&format!("ws://127.0.0.1:{port}/live")).await;
    assert_eq!(c.expect_close().await.0, 4001);
}

#[test]
fn refuses_a_public_bind_without_a_secret() {
    let out = Command::new(BIN)
        .arg("serve")
        .env("SEALCAST_BIND", "0.0.0.0:0")
        .env_remove("SEALCAST_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SEALCAST_JWT_SECRET"), "{err}");
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let (mut p, _, _) = serve(&[]);
    let pid = p.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
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
