//! `sealcast-bench` with its defaults against a server built as `sealcast serve` builds it from its default
//! settings (encryption required, client publishes off): what works without flags, and what each refusal says to
//! change. The workloads are a few connections and messages: these check behaviour, not speed.

use std::net::SocketAddr;
use std::process::Command;

use sealcast::auth::{self, JwtAuthenticator};
use sealcast::crypto::{StaticKey, StaticKeySet};
use sealcast::Server;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sealcast-bench");
const SECRET: &str = "bench-defaults-secret";

/// A server with `sealcast serve`'s defaults (client publishes as given) and its WebSocket URL.
async fn default_server(allow_client_publish: bool) -> (Server, String) {
    let server = Server::builder()
        .static_keys(StaticKeySet::new(StaticKey::generate().unwrap()))
        .authenticator(JwtAuthenticator::hs256(SECRET.as_bytes()))
        .room_validator(auth::rooms_claim_validator)
        .allow_client_publish(allow_client_publish)
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server.router().into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (server, format!("ws://{addr}/ws"))
}

/// What `sealcast-bench --url URL ARGS` printed (its JSON result) and its stderr, with `secret` in
/// SEALCAST_JWT_SECRET (none: unset). `args` are separated by spaces. Runs off the runtime, which keeps serving
/// meanwhile.
async fn bench(url: &str, args: &str, secret: Option<&str>) -> (Value, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["--url", url])
        .args(args.split(' '))
        .env_remove("SEALCAST_JWT_SECRET");
    if let Some(secret) = secret {
        cmd.env("SEALCAST_JWT_SECRET", secret);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (result, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `sealcast-bench ARGS` against a default server (client publishes as given) fails, and its message names every
/// one of `parts`.
async fn bench_fails_saying(allow_client_publish: bool, args: &str, secret: Option<&str>, parts: &[&str]) {
    let (_server, url) = default_server(allow_client_publish).await;
    let (result, err) = bench(&url, args, secret).await;
    assert!(result["error"].is_string(), "{result}");
    assert!(parts.iter().all(|p| err.contains(p)), "{parts:?} not all in: {err}");
}

#[tokio::test]
async fn default_mode_completes_encrypted_handshakes_pinning_the_served_key() {
    let (_server, url) = default_server(false).await;
    let (result, err) = bench(&url, "connect --connections 3 --verify", Some(SECRET)).await;
    assert_eq!(result["mode"], "encrypted", "{result} {err}");
    assert_eq!(result["ok"], 3, "{result} {err}");
    assert_eq!(result["failures"], 0, "{result} {err}");
}

#[tokio::test]
async fn default_fanout_is_delivered_when_the_server_allows_client_publishes() {
    let (_server, url) = default_server(true).await;
    let args = "fanout --receivers 2 --messages 10 --runs 1 --timeout 10";
    let (result, err) = bench(&url, args, Some(SECRET)).await;
    assert_eq!(result["exact"], true, "{result} {err}");
}

#[tokio::test]
async fn default_fanout_names_the_settings_a_default_server_lacks() {
    let settings = ["SEALCAST_ALLOW_CLIENT_PUBLISH=true", "SEALCAST_MESSAGE_RATE=0"];
    bench_fails_saying(
        false,
        "fanout --receivers 2 --messages 10 --runs 1",
        Some(SECRET),
        &settings,
    )
    .await;
}

#[tokio::test]
async fn fanout_says_when_the_server_rate_limits_the_publisher() {
    // 50 warm-up messages and a burst of 500: past the default 400-message burst allowance of one connection.
    let args = "fanout --receivers 1 --messages 500 --runs 1 --timeout 2";
    bench_fails_saying(
        true,
        args,
        Some(SECRET),
        &["closed the publisher 4008", "SEALCAST_MESSAGE_RATE=0"],
    )
    .await;
}

#[tokio::test]
async fn without_a_secret_the_bench_says_which_flag_gives_it() {
    bench_fails_saying(
        false,
        "connect --connections 1",
        None,
        &["--jwt-secret", "SEALCAST_JWT_SECRET"],
    )
    .await;
}
