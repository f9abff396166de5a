//! The binary with Redis: two `sealcast serve` processes on one Redis, and `sealcast emit`; presence when an
//! instance is killed (`kill -9`, on one Redis and on a Cluster) and in a 10,000-member room.

// The harness the library's integration tests use (repository root `tests/common/`).
#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../../tests/common/redis.rs"]
mod redis_harness;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use common::*;
use redis_harness::{Cluster, Redis};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_sealcast");
const SECRET: &str = "binary-test-secret";

struct Serve(Child, u16);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(redis_url: &str) -> Serve {
    serve_with_admin(redis_url, "off")
}

/// `serve` with the admin listener at `admin_bind`.
fn serve_with_admin(redis_url: &str, admin_bind: &str) -> Serve {
    serve_with_env(&[("SEALCAST_REDIS_URL", redis_url), ("SEALCAST_ADMIN_BIND", admin_bind)])
}

/// `serve` with these variables on top of the common ones (a Redis URL or cluster nodes among them).
fn serve_with_env(envs: &[(&str, &str)]) -> Serve {
    let port = redis_harness::free_port();
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("SEALCAST_BIND", format!("127.0.0.1:{port}"))
        .env("SEALCAST_JWT_SECRET", SECRET)
        .env("SEALCAST_ADMIN_BIND", "off")
        .env("SEALCAST_BUS_SECRET", "bus-secret")
        .env("SEALCAST_ALLOW_CLIENT_PUBLISH", "true")
        .env("SEALCAST_REQUIRE_ENCRYPTION", "false")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    for line in out.lines() {
        if line.unwrap().contains("listening on") {
            break;
        }
    }
    Serve(child, port)
}

fn token(sub: &str) -> String {
    let out = Command::new(BIN)
        .args(["token", "--sub", sub])
        .env("SEALCAST_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn login(s: &Serve, sub: &str) -> Client {
    login_with_id(s, sub).await.0
}

/// A client of `sub` on `s`, and its client id.
async fn login_with_id(s: &Serve, sub: &str) -> (Client, String) {
    let mut c = Client::connect(&format!("ws://127.0.0.1:{}/ws", s.1)).await;
    c.send(json!({"event": "authenticate", "data": {"token": token(sub)}}))
        .await;
    let connected = c.expect_event("connected").await;
    (c, id_of(&connected))
}

#[tokio::test]
async fn two_serve_processes_share_a_redis_and_emit_reaches_them() {
    let redis = Redis::start();
    let (s1, s2) = (serve(&redis.url()), serve(&redis.url()));
    let mut a = login(&s1, "alice").await;
    let mut b = login(&s2, "bob").await;

    // Publish from an instance's client to a room: crosses to the other instance (signed with the bus secret).
    let publish = json!({"event": "publish", "data": {"room": "ws-default", "event": "chat", "data": "hi"}});
    let mut delivered = false;
    for _ in 0..50 {
        a.send(publish.clone()).await;
        if redis_harness::try_event(&mut b, "chat", std::time::Duration::from_millis(100))
            .await
            .is_some()
        {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "cross-process publish never arrived");

    let emit = |args: &[&str], secret: &str| {
        Command::new(BIN)
            .arg("emit")
            .args(["--redis-url", &redis.url()])
            .args(args)
            .env("SEALCAST_BUS_SECRET", secret)
            .output()
            .unwrap()
    };
    let out = emit(
        &["--room", "ws-default", "--event", "news", "--data", r#"{"k":1}"#],
        "bus-secret",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(a.expect_event("news").await, json!({"k": 1}));
    assert_eq!(b.expect_event("news").await, json!({"k": 1}));

    let out = emit(&["--user", "bob", "--event", "dm", "--data", "2"], "bus-secret");
    assert!(out.status.success());
    assert_eq!(b.expect_event("dm").await, json!(2));

    // Wrong secret: refused by both instances.
    let out = emit(&["--broadcast", "--event", "forged"], "wrong");
    assert!(out.status.success());
    // Reserved events and bad JSON are refused by the CLI itself.
    assert!(!emit(&["--broadcast", "--event", "connected"], "bus-secret")
        .status
        .success());
    assert!(!emit(&["--broadcast", "--event", "x", "--data", "{nope"], "bus-secret")
        .status
        .success());
    a.expect_silence().await;
    b.expect_silence().await;
}

/// `emit --id` with the fleet's history rooms appends like a server: the message carries its offset, and the
/// same id again is not delivered twice.
#[tokio::test]
async fn emit_with_an_id_into_a_history_room_is_kept_and_delivered_once() {
    let redis = Redis::start();
    let url = redis.url();
    let s = serve_with_env(&[("SEALCAST_REDIS_URL", &url), ("SEALCAST_HISTORY_ROOMS", "chat:*")]);
    let mut c = login(&s, "alice").await;
    c.send(json!({"event": "join", "data": {"rooms": ["chat:1"]}})).await;
    let joined = c.expect_event("joined").await;
    let epoch = joined["rooms"][0]["epoch"].as_str().unwrap().to_owned();
    let emit = || {
        let out = Command::new(BIN)
            .args([
                "emit",
                "--redis-url",
                &redis.url(),
                "--room",
                "chat:1",
                "--event",
                "news",
            ])
            .args(["--data", "7", "--id", "k1"])
            .env("SEALCAST_BUS_SECRET", "bus-secret")
            .env("SEALCAST_HISTORY_ROOMS", "chat:*")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // `joined` is answered once the instance hears the room's channel.
    let first = emit();
    let m = c.recv().await;
    assert_eq!((m["data"].clone(), m["offset"].clone()), (json!(7), json!(1)), "{m}");
    assert!(first.contains("published at offset"), "{first}");
    assert!(first.contains(&epoch), "{first}");
    let again = emit();
    assert!(again.contains("already published with this id"), "{again}");
    c.expect_silence().await;
}

#[tokio::test]
async fn the_dashboards_redis_queries_name_series_a_redis_backed_server_exports() {
    let redis = Redis::start();
    let admin_port = redis_harness::free_port();
    let _s = serve_with_admin(&redis.url(), &format!("127.0.0.1:{admin_port}"));
    let (status, metrics) = http_get(admin_port, "/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    let exported = scraped_series(&metrics);
    let redis_series: Vec<String> = dashboard_expressions()
        .iter()
        .flat_map(|e| series_named_in(e))
        .filter(|s| s.starts_with("sealcast_redis_"))
        .collect();
    assert!(!redis_series.is_empty(), "the dashboard has Redis panels");
    for series in &redis_series {
        assert!(exported.contains(series), "{series} is not exported: {exported:?}");
    }
}

/// Presence in `chat:*` rooms, on this bus.
fn presence_env<'a>(bus: &'a [(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut envs = vec![("SEALCAST_PRESENCE_ROOMS", "chat:*"), ("SEALCAST_API_KEY", "api-key")];
    envs.extend_from_slice(bus);
    envs
}

/// Alice on one instance, Bob on another, both in `chat:k`; the second instance is killed with SIGKILL. The
/// survivor must send `member_left` for Bob within the documented bound (about 6 s: docs/presence.md) and stop
/// listing him.
async fn a_killed_instances_members_leave(bus: &[(&str, &str)]) {
    let envs = presence_env(bus);
    let (s1, mut s2) = (serve_with_env(&envs), serve_with_env(&envs));
    let mut a = login(&s1, "alice").await;
    join(&mut a, &["chat:k"]).await;
    let (mut b, b_id) = login_with_id(&s2, "bob").await;
    join(&mut b, &["chat:k"]).await;
    assert_eq!(next_member_event(&mut a).await.0, "member_joined");
    s2.0.kill().unwrap();
    let killed = Instant::now();
    let left = redis_harness::try_event(&mut a, "member_left", Duration::from_secs(20))
        .await
        .expect("member_left for the killed instance's member");
    println!("member_left {:?} after kill -9", killed.elapsed());
    assert_eq!(left, json!({"room": "chat:k", "client": b_id, "user": "bob"}));
    let answer = ask_presence(&mut a, "chat:k").await;
    assert_eq!(
        (answer["data"]["clients"].clone(), answer["data"]["users"].clone()),
        (json!(1), json!(1))
    );
    assert!(!listed(&answer["data"]).contains(&b_id));
    let _ = s2.0.wait();
    // A new process (a new instance id) joins the fleet: nothing of the killed one comes back.
    let s3 = serve_with_env(&envs);
    let (mut c, c_id) = login_with_id(&s3, "carol").await;
    join(&mut c, &["chat:k"]).await;
    let answer = ask_presence(&mut c, "chat:k").await;
    let mut want = listed(&ask_presence(&mut a, "chat:k").await["data"]);
    want.push(c_id);
    want.sort();
    want.dedup();
    assert_eq!(listed(&answer["data"]), want);
    assert_eq!(answer["data"]["clients"], 2);
}

#[tokio::test]
async fn a_killed_instances_members_leave_on_one_redis() {
    let redis = Redis::start();
    a_killed_instances_members_leave(&[("SEALCAST_REDIS_URL", &redis.url())]).await;
}

#[tokio::test]
async fn a_killed_instances_members_leave_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(3, 0)).await.unwrap();
    let nodes = cluster.urls().join(",");
    a_killed_instances_members_leave(&[("SEALCAST_REDIS_CLUSTER_NODES", &nodes)]).await;
}

/// 10,000 members, half on each of two instances, 100 sessions each of 100 users: the list stops at
/// `max_members` (1,000) and the counts are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10000_member_room_is_cut_at_max_members_with_exact_counts() {
    let redis = Redis::start();
    let url = redis.url();
    let bus = [("SEALCAST_REDIS_URL", url.as_str())];
    let mut envs = presence_env(&bus);
    envs.extend_from_slice(&[
        ("SEALCAST_DEFAULT_ROOMS", "chat:big"),
        ("SEALCAST_MAX_CONNECTIONS_PER_IP", "20000"),
        ("SEALCAST_CONNECTION_RATE_PER_IP", "100000"),
        ("SEALCAST_CONNECTION_RATE_PER_IP_BURST", "100000"),
    ]);
    let (s1, s2) = (serve_with_env(&envs), serve_with_env(&envs));
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let tokens: Vec<String> = (0..100)
        .map(|u| {
            let claims = jwt::claims(&format!("u{u}"), None);
            jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
        })
        .collect();
    for i in 0..10_000 {
        let port = if i % 2 == 0 { s1.1 } else { s2.1 };
        raw_member(port, &tokens[i % 100]).await;
    }
    let api: std::net::SocketAddr = ([127, 0, 0, 1], s1.1).into();
    let started = Instant::now();
    let mut answer = json!(null);
    while started.elapsed() < Duration::from_secs(120) {
        let (status, body) = http_post(api, "/api/presence", Some("Bearer api-key"), r#"{"room":"chat:big"}"#).await;
        assert_eq!(status, 200, "{body}");
        answer = body;
        if answer["clients"] == 10_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(answer["clients"], 10_000, "all members registered");
    assert_eq!(answer["users"], 100);
    assert_eq!(answer["members"].as_array().map(Vec::len), Some(1000));
    assert_eq!(answer["truncated"], true);
}
