//! Redis going away and coming back: local delivery continues, readiness follows the subscription, publishes
//! during the outage are dropped and counted, and cross-instance delivery resumes after a restart without
//! restarting sealcast.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::redis_harness::{free_port, probe_until_delivered, try_event, Redis};
use sealcast::bus::{RedisBus, RedisEndpoint};
use sealcast::Bus;
use serde_json::json;

async fn instance(url: &str) -> (TestServer, RedisBus) {
    let bus = RedisBus::builder(RedisEndpoint::single(url)).build().unwrap();
    let t = TestServer::start(builder().bus(bus.clone())).await;
    (t, bus)
}

#[tokio::test]
async fn redis_killed_during_traffic_then_restarted() {
    let mut redis = Redis::start();
    let (s1, bus1) = instance(&redis.url()).await;
    let (s2, bus2) = instance(&redis.url()).await;
    assert!(bus1.wait_ready(WAIT).await && bus2.wait_ready(WAIT).await);
    let (mut a, _) = s1.login("user:alice").await;
    let (mut b, _) = s2.login("user:bob").await;
    assert!(bus1.settled(WAIT).await && bus2.settled(WAIT).await);

    // Background traffic from both instances for the whole test.
    let traffic = {
        let (x, y) = (s1.server.clone(), s2.server.clone());
        tokio::spawn(async move {
            for i in 0u64.. {
                let _ = x.send_to_room("ws-default", "traffic", &i, &[]);
                let _ = y.broadcast("traffic", &i, &[]);
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        })
    };
    assert!(try_event(&mut b, "traffic", WAIT).await.is_some());

    redis.kill();
    eventually("both instances report not ready", || {
        !s1.server.is_ready() && !s2.server.is_ready() && !bus1.is_ready()
    })
    .await;

    // Local delivery keeps working.
    s1.server.send_to_user("alice", "local", &1).unwrap();
    assert_eq!(try_event(&mut a, "local", WAIT).await, Some(json!(1)));
    // Cross-instance publishes are dropped and counted, not queued without bound.
    eventually("publishes dropped and counted", || {
        bus1.stats().publish_dropped > 0 && bus2.stats().publish_dropped > 0
    })
    .await;

    // Long enough for the reconnect backoff to reach its 1 s cap.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();
    let restarted = Instant::now();
    let recovered = probe_until_delivered(&s1.server, "bob", &mut b, restarted, Duration::from_secs(5)).await;
    println!("cross-instance delivery resumed {recovered:?} after Redis restarted");
    assert!(recovered < Duration::from_secs(2), "took {recovered:?}");
    assert!(s1.server.is_ready() && s2.server.is_ready());
    assert!(bus2.stats().reconnects >= 1);

    // Everything is resubscribed: room, user, client and broadcast channels.
    s2.server.send_to_room("ws-default", "room-after", &2, &[]).unwrap();
    assert_eq!(try_event(&mut a, "room-after", WAIT).await, Some(json!(2)));
    traffic.abort();
}

#[tokio::test]
async fn a_bus_started_before_redis_becomes_ready_when_redis_arrives() {
    let port = free_port();
    let (s, bus) = instance(&format!("redis://127.0.0.1:{port}")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!bus.is_ready() && !s.server.is_ready());
    // Sending while Redis has never been reachable: dropped and counted, never a panic.
    s.server.broadcast("early", &1, &[]).unwrap();
    eventually("early publish dropped", || bus.stats().publish_dropped == 1).await;
    let _redis = Redis::start_with(port, &[]);
    assert!(bus.wait_ready(Duration::from_secs(3)).await);
    assert!(s.server.is_ready());
}

#[tokio::test]
async fn a_full_publish_queue_drops_and_counts() {
    let port = free_port();
    let bus = RedisBus::builder(RedisEndpoint::single(format!("redis://127.0.0.1:{port}")))
        .publish_queue(4)
        .build()
        .unwrap();
    let s = TestServer::start(builder().bus(bus.clone())).await;
    for i in 0..1000 {
        s.server.broadcast("burst", &i, &[]).unwrap();
    }
    eventually("every publish accounted for", || {
        let st = bus.stats();
        st.publish_dropped + st.published == 1000
    })
    .await;
}

#[tokio::test]
async fn shutdown_stops_the_bus() {
    let redis = Redis::start();
    let (s, bus) = instance(&redis.url()).await;
    assert!(bus.wait_ready(WAIT).await);
    s.server.shutdown().await;
    assert!(!bus.is_ready());
    eventually("subscriber connection closed", || {
        redis
            .cli(&["client", "list"])
            .lines()
            .filter(|l| l.contains("cmd=ping") || l.contains("sub=1"))
            .count()
            == 0
    })
    .await;
}
