//! Presence on real Redis (one server and a 3-master Cluster), issue 17: joins, leaves and disconnects on one
//! instance are listed and announced on another; a Redis restart without persistence loses nothing for long.
//! The `kill -9` of an instance and the 10,000-member room run the real binary
//! (`crates/sealcast-server/tests/redis_binary.rs`).

use std::time::Duration;

use crate::common::*;
use crate::redis_harness::{Cluster, Instance, Redis};
use sealcast::bus::{RedisBus, RedisBusBuilder, RedisEndpoint};
use serde_json::json;

fn single(redis: &Redis) -> RedisBusBuilder {
    RedisBus::builder(RedisEndpoint::single(redis.url()))
}

fn cluster_bus(cluster: &Cluster) -> RedisBusBuilder {
    RedisBus::builder(RedisEndpoint::cluster(cluster.urls()))
}

/// A member on `a` sees a client of `b` join (listed, announced), leave, and another one disconnect.
async fn joins_leaves_and_disconnects_cross_instances(a: &Instance, b: &Instance) {
    let room = "chat:p";
    let (mut x, dx) = a.t.login("user:xavier").await;
    join(&mut x, &[room]).await;
    let (mut y, dy) = b.t.login("user:yvonne").await;
    join(&mut y, &[room]).await;
    // The joiner reads its own join at once, and the other member's.
    let mut both = vec![id_of(&dx), id_of(&dy)];
    both.sort();
    let answer = ask_presence(&mut y, room).await;
    assert_eq!(listed(&answer["data"]), both, "{answer}");
    assert_eq!(
        (answer["data"]["clients"].clone(), answer["data"]["users"].clone()),
        (json!(2), json!(2))
    );
    let (name, data) = next_member_event(&mut x).await;
    assert_eq!(name, "member_joined");
    assert_eq!(data, json!({"room": room, "client": id_of(&dy), "user": "yvonne"}));

    y.send(json!({"event": "leave", "data": {"rooms": [room]}})).await;
    let (name, data) = next_member_event(&mut x).await;
    assert_eq!(
        (name.as_str(), data["client"].clone()),
        ("member_left", json!(id_of(&dy)))
    );

    let (mut z, dz) = b.t.login("anon").await;
    join(&mut z, &[room]).await;
    assert_eq!(
        next_member_event(&mut x).await,
        (
            "member_joined".into(),
            json!({"room": room, "client": id_of(&dz), "user": null})
        )
    );
    z.close().await;
    assert_eq!(
        next_member_event(&mut x).await,
        (
            "member_left".into(),
            json!({"room": room, "client": id_of(&dz), "user": null})
        )
    );
    let answer = ask_presence(&mut x, room).await;
    assert_eq!(listed(&answer["data"]), vec![id_of(&dx)]);
    let by_b = b.t.server.presence(room).await.expect("answered");
    assert_eq!((by_b.clients, by_b.users), (1, 1));
}

#[tokio::test]
async fn joins_leaves_and_disconnects_cross_instances_on_one_redis() {
    let redis = Redis::start();
    let a = Instance::start_presence(single(&redis), 1000).await;
    let b = Instance::start_presence(single(&redis), 1000).await;
    joins_leaves_and_disconnects_cross_instances(&a, &b).await;
}

#[tokio::test]
async fn joins_leaves_and_disconnects_cross_instances_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(3, 0)).await.unwrap();
    let a = Instance::start_presence(cluster_bus(&cluster), 1000).await;
    let b = Instance::start_presence(cluster_bus(&cluster), 1000).await;
    joins_leaves_and_disconnects_cross_instances(&a, &b).await;
}

#[tokio::test]
async fn a_cut_list_keeps_exact_counts_across_instances() {
    let redis = Redis::start();
    let a = Instance::start_presence(single(&redis), 3).await;
    let b = Instance::start_presence(single(&redis), 3).await;
    let mut clients = Vec::new();
    for (i, token) in ["user:u1", "user:u1", "user:u2", "anon", "user:u3"]
        .into_iter()
        .enumerate()
    {
        let t = if i % 2 == 0 { &a.t } else { &b.t };
        let (mut c, _) = t.login(token).await;
        join(&mut c, &["chat:big"]).await;
        clients.push(c);
    }
    let p = a.t.server.presence("chat:big").await.expect("answered");
    assert_eq!((p.members.len(), p.clients, p.users, p.truncated), (3, 5, 3, true));
}

#[tokio::test]
async fn members_are_written_again_after_redis_lost_them() {
    let mut redis = Redis::start();
    let a = Instance::start_presence(single(&redis), 1000).await;
    let (mut x, dx) = a.t.login("user:xavier").await;
    join(&mut x, &["chat:r"]).await;
    assert_eq!(a.t.server.presence("chat:r").await.map(|p| p.clients), Ok(1));
    // Restarted without persistence: every key is gone.
    redis.restart();
    let b = Instance::start_presence(single(&redis), 1000).await;
    let mut listed_again = false;
    for _ in 0..100 {
        if let Ok(p) = b.t.server.presence("chat:r").await {
            if p.members.iter().any(|m| m.client == id_of(&dx)) {
                listed_again = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listed_again, "the instance never wrote its member again");
}

#[tokio::test]
async fn a_stopping_instance_says_its_members_left() {
    let redis = Redis::start();
    let a = Instance::start_presence(single(&redis), 1000).await;
    let b = Instance::start_presence(single(&redis), 1000).await;
    let (mut x, _) = a.t.login("user:xavier").await;
    join(&mut x, &["chat:s"]).await;
    let (mut y, dy) = b.t.login("user:yvonne").await;
    join(&mut y, &["chat:s"]).await;
    assert_eq!(next_member_event(&mut x).await.0, "member_joined");
    b.t.server.shutdown().await;
    let (name, data) = next_member_event(&mut x).await;
    assert_eq!(
        (name.as_str(), data["client"].clone()),
        ("member_left", json!(id_of(&dy)))
    );
    assert_eq!(a.t.server.presence("chat:s").await.map(|p| p.clients), Ok(1));
}

/// Whatever else writes to Redis is hostile input: malformed entries are skipped (the counts are Redis's), and a
/// bogus instance in the heartbeat set is cleaned up like a dead one, without disturbing the real members.
#[tokio::test]
async fn garbage_in_redis_is_skipped_and_a_bogus_instance_is_removed() {
    let redis = Redis::start();
    let a = Instance::start_presence(single(&redis), 1000).await;
    let (mut x, dx) = a.t.login("user:xavier").await;
    join(&mut x, &["chat:h"]).await;
    assert_eq!(a.t.server.presence("chat:h").await.map(|p| p.clients), Ok(1));
    let members = "{ws:room:chat:h}:sealcast:p:ws:room:chat:h";
    redis.cli(&["HSET", members, "not-a-client-id", "i 1 -"]);
    redis.cli(&[
        "HSET",
        members,
        "0b6d9c2e-8f0a-4c59-9a57-3f2f1f7d3c11",
        "i not-a-time \u{1}",
    ]);
    redis.cli(&["ZADD", "sealcast:presence:instances", "0", "bogus \n instance"]);
    let p = a.t.server.presence("chat:h").await.expect("answered");
    assert_eq!(
        p.members.iter().map(|m| m.client.clone()).collect::<Vec<_>>(),
        vec![id_of(&dx)]
    );
    assert_eq!((p.clients, p.truncated), (3, true), "the counts are Redis's");
    let mut removed = false;
    for _ in 0..50 {
        if redis
            .cli(&["ZSCORE", "sealcast:presence:instances", "bogus \n instance"])
            .trim()
            .is_empty()
        {
            removed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(removed, "the bogus instance was never removed");
    assert_eq!(
        ask_presence(&mut x, "chat:h").await["data"]["members"][0]["client"],
        id_of(&dx)
    );
}
