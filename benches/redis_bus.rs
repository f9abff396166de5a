//! Load bench for the Redis bus (not criterion: it measures a paced stream, not a closed loop).
//!
//! 1. Cross-instance delivery latency p50/p99/max at 1,000 msg/s through one Redis: server A sends to a room whose
//!    only member is a real WebSocket client on server B; latency is send → frame received.
//! 2. Redis messages received per delivered message for a room living on 1 of 4 instances, with interest-based
//!    and pattern subscriptions.
//!
//! `cargo bench --bench redis_bus` runs 5 s of traffic; under `cargo test` it runs a short smoke version. Needs
//! `redis-server` on the PATH (skipped otherwise).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/redis.rs"]
mod redis_harness;

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use axum::serve::{Listener, ListenerExt};

use common::{id_of, WAIT};
use redis_harness::{received_for_room_on_one_of_four, Instance, Redis};
use sealcast::bus::{RedisBus, RedisEndpoint, Subscriptions};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn latency(redis: &Redis, seconds: u64, rate: u64) {
    let bus = || RedisBus::builder(RedisEndpoint::single(redis.url()));
    let a = Instance::start(bus()).await;
    let b = Instance::start(bus()).await;
    // A second listener on B with TCP_NODELAY, and a client without Nagle either: the test harness's sockets
    // keep Nagle on, which alone adds milliseconds.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().tap_io(|s| {
        let _ = s.set_nodelay(true);
    });
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, b.t.server.router::<()>()).into_future());
    let (ws, _) = tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/ws"), None, true)
        .await
        .unwrap();
    let mut client = common::Client { ws };
    client
        .send(serde_json::json!({"event": "authenticate", "data": {"token": "user:bench"}}))
        .await;
    let d = client.expect_event("connected").await;
    b.t.server.join_room(&id_of(&d), "bench").unwrap();
    assert!(b.bus.settled(WAIT).await);

    let total = seconds * rate;
    let epoch = Instant::now();
    let sender = {
        let server = a.t.server.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            for _ in 0..total {
                tick.tick().await;
                let sent_us = epoch.elapsed().as_micros() as u64;
                server.send_to_room("bench", "t", &sent_us, &[]).unwrap();
            }
        })
    };
    let mut lat = Vec::with_capacity(total as usize);
    while (lat.len() as u64) < total {
        let v = client.recv().await;
        let sent = Duration::from_micros(v["data"].as_u64().expect("timestamp"));
        lat.push(epoch.elapsed() - sent);
    }
    sender.await.unwrap();
    lat.sort();
    println!(
        "redis_bus latency: {total} msgs at {rate}/s across 2 instances: p50 {:?} p99 {:?} max {:?} (dropped {})",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1],
        a.bus.stats().publish_dropped
    );
}

fn main() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("redis_bus bench: redis-server not found, skipped");
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let redis = Redis::start();
        latency(&redis, if full { 5 } else { 1 }, if full { 1000 } else { 200 }).await;
        let n = if full { 1000 } else { 100 };
        for subs in [Subscriptions::Interest, Subscriptions::Patterns] {
            let per = received_for_room_on_one_of_four(&redis, subs, n).await as f64 / n as f64;
            println!("redis_bus fan-out cost, room on 1 of 4 instances, {subs:?}: {per:.2} Redis messages received per message");
        }
    });
}
