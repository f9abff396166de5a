//! Instances on a real Redis Cluster (3 masters + 3 replicas) with sharded pub/sub: cross-instance addressing,
//! the Emitter, interest-based subscriptions (an instance without members of a room hears none of it), and
//! delivery resuming after a master fails over to its replica.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::redis_harness::{
    cross_instance_matrix, probe_until_delivered, settle, try_event, Cluster, Instance, Matrix,
};
use sealcast::bus::{BusMode, RedisBus, RedisEndpoint};
use sealcast::{Bus, Emitter};
use serde_json::json;

async fn instance(cluster: &Cluster) -> Instance {
    let i = Instance::start(RedisBus::builder(RedisEndpoint::cluster(cluster.urls()))).await;
    assert_eq!(i.bus.mode(), BusMode::Sharded);
    i
}

async fn start_cluster() -> Cluster {
    tokio::task::spawn_blocking(|| Cluster::start(3, 1)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_matrix_interest_and_emitter() {
    let cluster = start_cluster().await;
    let (s1, s2, s3) = (
        instance(&cluster).await,
        instance(&cluster).await,
        instance(&cluster).await,
    );
    let Matrix {
        mut a1,
        d1,
        mut a2,
        d2,
        mut b3,
    } = cross_instance_matrix(&s1, &s2, &s3).await;
    s1.t.server.join_room(&id_of(&d1), "only-on-1").unwrap();
    settle(&[&s1]).await;

    // Per-client order across instances.
    for i in 0..200 {
        s3.t.server.send_to_room("only-on-1", "n", &i, &[]).unwrap();
    }
    for i in 0..200 {
        assert_eq!(a1.recv().await, json!({"event": "n", "data": i}));
    }

    // The emitter follows the cluster's mode.
    let emitter = Emitter::connect(RedisEndpoint::cluster(cluster.urls())).await.unwrap();
    assert_eq!(emitter.mode(), BusMode::Sharded);
    emitter
        .to_room("ws-default", "e", &json!({}), &[&id_of(&d2)])
        .await
        .unwrap();
    assert_eq!(a1.recv().await, json!({"event": "e", "data": {}}));
    assert_eq!(b3.recv().await, json!({"event": "e", "data": {}}));
    emitter.to_user("bob", "eu", &6).await.unwrap();
    assert_eq!(b3.recv().await, json!({"event": "eu", "data": 6}));
    emitter.to_client(&id_of(&d2), "ec", &7).await.unwrap();
    assert_eq!(a2.recv().await, json!({"event": "ec", "data": 7}));
    emitter.broadcast("eb", &8, &[]).await.unwrap();
    for c in [&mut a1, &mut a2, &mut b3] {
        assert_eq!(c.recv().await, json!({"event": "eb", "data": 8}));
    }
    for c in [&mut a1, &mut a2, &mut b3] {
        c.expect_silence().await;
    }

    // Interest: only s1 subscribes to the room it alone has members of, so only s1 receives its messages.
    let subscribers = tokio::task::block_in_place(|| cluster.shard_subscribers("ws:room:only-on-1"));
    assert_eq!(subscribers, 1);
    assert_eq!(
        tokio::task::block_in_place(|| cluster.shard_subscribers("ws:room:ws-default")),
        3
    );
    let before = (s2.bus.stats().received, s3.bus.stats().received);
    for i in 0..50 {
        emitter.to_room("only-on-1", "solo", &i, &[]).await.unwrap();
    }
    for i in 0..50 {
        assert_eq!(a1.recv().await, json!({"event": "solo", "data": i}));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        (s2.bus.stats().received, s3.bus.stats().received),
        before,
        "instances without members received room traffic"
    );

    // Classic mode on a cluster: PUBLISH is relayed to every node, reference emitters work there too.
    let classic = || RedisBus::builder(RedisEndpoint::cluster(cluster.urls())).mode(BusMode::Classic);
    let (c1, c2) = (Instance::start(classic()).await, Instance::start(classic()).await);
    let (mut x, _) = c2.t.login("user:xavier").await;
    settle(&[&c1, &c2]).await;
    c1.t.server.send_to_user("xavier", "classic", &1).unwrap();
    assert_eq!(x.recv().await, json!({"event": "classic", "data": 1}));
    tokio::task::block_in_place(|| {
        cluster.nodes[0].cli(&[
            "PUBLISH",
            "ws:user:xavier",
            r#"{"serverId":"emitter","type":"user","target":"xavier","event":"ref","data":2}"#,
        ])
    });
    assert_eq!(x.recv().await, json!({"event": "ref", "data": 2}));
    x.expect_silence().await;

    // The last member leaves: the subscription goes.
    assert!(s1.t.server.leave_room(&id_of(&d1), "only-on-1"));
    settle(&[&s1]).await;
    assert_eq!(
        tokio::task::block_in_place(|| cluster.shard_subscribers("ws:room:only-on-1")),
        0
    );
}

/// Two instances, bob on the second, a first message from the first instance delivered.
async fn bob_across_two_instances(cluster: &Cluster) -> (Instance, Instance, Client) {
    let s1 = instance(cluster).await;
    let s2 = instance(cluster).await;
    let (mut b, _) = s2.t.login("user:bob").await;
    settle(&[&s1, &s2]).await;
    s1.t.server.send_to_user("bob", "before", &0).unwrap();
    assert_eq!(try_event(&mut b, "before", WAIT).await, Some(json!(0)));
    (s1, s2, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_a_master_fails_over() {
    let mut cluster = start_cluster().await;
    let (s1, s2, mut b) = bob_across_two_instances(&cluster).await;

    let victim = tokio::task::block_in_place(|| cluster.master_of("ws:user:bob"));
    cluster.nodes[victim].kill();
    let killed = Instant::now();
    // Noticing a dead shard master depends on when redis-rs's cluster client drops that node's connection; on a
    // loaded 2-core runner that has taken more than WAIT. What must hold within bounds is the resumed delivery.
    eventually_within(Duration::from_secs(20), "subscription reported down", || {
        !s2.bus.is_ready()
    })
    .await;

    let resumed = probe_until_delivered(&s1.t.server, "bob", &mut b, killed, Duration::from_secs(30)).await;
    println!("sharded delivery resumed {resumed:?} after killing the master of ws:user:bob");
    assert!(s2.bus.wait_ready(WAIT).await && s2.t.server.is_ready());
    // Every node's view converges on the promoted replica.
    let start = Instant::now();
    while [None, Some(victim)].contains(&tokio::task::block_in_place(|| cluster.try_master_of("ws:user:bob"))) {
        assert!(start.elapsed() < WAIT, "no node saw the failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_subscriptions_follow_a_slot_migration() {
    let cluster = start_cluster().await;
    let (s1, _s2, mut b) = bob_across_two_instances(&cluster).await;

    let (from, to) = tokio::task::block_in_place(|| cluster.move_slot_of("ws:user:bob"));
    let moved = Instant::now();
    let resumed = probe_until_delivered(&s1.t.server, "bob", &mut b, moved, Duration::from_secs(10)).await;
    println!("sharded delivery resumed {resumed:?} after moving the slot of ws:user:bob");
    // Subscribed once, on the new owner only.
    let on = |i: usize| tokio::task::block_in_place(|| cluster.nodes[i].cli(&["pubsub", "shardnumsub", "ws:user:bob"]));
    eventually("subscription moved to the new owner", || {
        on(to).lines().nth(1).map(str::trim) == Some("1") && on(from).lines().nth(1).map(str::trim) == Some("0")
    })
    .await;
    b.expect_silence().await;
}
