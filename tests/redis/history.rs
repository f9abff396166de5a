//! Room history on real Redis (one server and a Cluster): recovery across instances while publishing goes on,
//! unrecoverable positions, idempotent retries across instances, a Redis restart without persistence.

use std::time::Duration;

use crate::common::*;
use crate::redis_harness::{Cluster, Instance, Redis};
use sealcast::bus::{RedisBus, RedisBusBuilder, RedisEndpoint};
use sealcast::Emitter;
use serde_json::{json, Value};

fn single(redis: &Redis) -> RedisBusBuilder {
    RedisBus::builder(RedisEndpoint::single(redis.url()))
}

fn cluster_bus(cluster: &Cluster) -> RedisBusBuilder {
    RedisBus::builder(RedisEndpoint::cluster(cluster.urls()))
}

async fn start_cluster() -> Cluster {
    tokio::task::spawn_blocking(|| Cluster::start(3, 0)).await.unwrap()
}

async fn join(c: &mut Client, data: Value) -> Value {
    c.send(json!({"event": "join", "data": data})).await;
    c.expect_event("joined").await
}

fn room_of<'a>(joined: &'a Value, room: &str) -> &'a Value {
    joined["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == room)
        .expect("joined the room")
}

/// A client on `a` misses 500 messages published through `b`, then recovers them all in order while `b` goes on
/// publishing 200 more: replay then live, no gap, no duplicate.
async fn recovers_500_missed_messages_across_instances(a: &Instance, b: &Instance) {
    let room = "chat:recover";
    let (mut c, _) = a.t.login("user:reader").await;
    let joined = join(&mut c, json!({"rooms": [room]})).await;
    let epoch = room_of(&joined, room)["epoch"].as_str().expect("an epoch").to_owned();
    assert!(a.bus.settled(WAIT).await);
    let first = b.t.server.publish(room, "m", &0, None).await.expect("published");
    assert_eq!(first.position.as_ref().map(|p| p.offset), Some(1));
    let m = c.recv().await;
    assert_eq!(
        m,
        json!({"event": "m", "data": 0, "room": room, "offset": 1, "epoch": epoch})
    );
    c.close().await;
    for n in 1..=500 {
        b.t.server.publish(room, "m", &n, None).await.expect("published");
    }
    let (mut c, _) = a.t.login("user:reader").await;
    c.send(json!({"event": "join", "data": {"rooms": [room], "recover": {room: {"offset": 1, "epoch": epoch}}}}))
        .await;
    let server = b.t.server.clone();
    let more = tokio::spawn(async move {
        for n in 501..=700 {
            server.publish(room, "m", &n, None).await.expect("published");
        }
    });
    let mut offsets = Vec::new();
    let mut joined = None;
    while offsets.last() != Some(&701) || joined.is_none() {
        let m = c.recv().await;
        if m["event"] == "joined" {
            joined = Some(m["data"].clone());
            continue;
        }
        assert_eq!(
            (m["room"].as_str(), m["epoch"].as_str()),
            (Some(room), Some(epoch.as_str()))
        );
        assert_eq!(m["data"], m["offset"].as_u64().unwrap() - 1, "{m}");
        offsets.push(m["offset"].as_u64().unwrap());
    }
    more.await.unwrap();
    let want: Vec<u64> = (2..=701).collect();
    let first_difference = offsets.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        offsets == want,
        "every message once, in order: {} received, first difference at {first_difference:?}: {:?}",
        offsets.len(),
        first_difference.map(|i| &offsets[i.saturating_sub(3)..(i + 5).min(offsets.len())])
    );
    assert_eq!(room_of(&joined.unwrap(), room)["recovered"], true);
    c.expect_silence().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_recovers_500_messages_missed_on_another_instance_while_publishing_goes_on() {
    let redis = Redis::start();
    let a = Instance::start_history(single(&redis), 1000).await;
    let b = Instance::start_history(single(&redis), 1000).await;
    recovers_500_missed_messages_across_instances(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_recovers_500_missed_messages_on_a_cluster_with_sharded_pub_sub() {
    let cluster = start_cluster().await;
    let a = Instance::start_history(cluster_bus(&cluster), 1000).await;
    let b = Instance::start_history(cluster_bus(&cluster), 1000).await;
    recovers_500_missed_messages_across_instances(&a, &b).await;
}

#[tokio::test]
async fn a_wrong_epoch_or_an_offset_older_than_the_window_is_not_recovered() {
    let redis = Redis::start();
    let a = Instance::start_history(single(&redis), 5).await;
    for n in 0..10 {
        a.t.server.publish("chat:w", "m", &n, None).await.unwrap();
    }
    let page = a.t.server.history("chat:w", None, None).await.unwrap();
    let epoch = page.position.epoch.clone();
    assert_eq!(page.position.offset, 10);
    let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, [6, 7, 8, 9, 10]);
    let (mut c, _) = a.t.login("user:x").await;
    for recover in [
        json!({"offset": 4, "epoch": epoch}),
        json!({"offset": 9, "epoch": "other"}),
    ] {
        let joined = join(&mut c, json!({"rooms": ["chat:w"], "recover": {"chat:w": recover}})).await;
        let r = room_of(&joined, "chat:w");
        assert_eq!(
            (r["recovered"].clone(), r["offset"].clone()),
            (json!(false), json!(10)),
            "{joined}"
        );
        c.expect_silence().await;
        c.send(json!({"event": "leave", "data": {"rooms": ["chat:w"]}})).await;
    }
    // The oldest offset still in the window recovers.
    c.send(
        json!({"event": "join", "data": {"rooms": ["chat:w"], "recover": {"chat:w": {"offset": 5, "epoch": epoch}}}}),
    )
    .await;
    let mut offsets = Vec::new();
    for _ in 0..5 {
        offsets.push(c.recv().await["offset"].as_u64().unwrap());
    }
    assert_eq!(offsets, [6, 7, 8, 9, 10]);
    let joined = c.expect_event("joined").await;
    assert_eq!(room_of(&joined, "chat:w")["recovered"], true);
}

/// Clients coming back at once share reads of the room's stream (one in flight per room, covering the oldest
/// offset asked for); each still gets exactly its own missed messages, or `recovered: false` when its gap is
/// beyond its queue, its epoch is wrong or its offset is ahead of the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_recovering_one_room_at_once_each_get_exactly_what_they_missed() {
    let redis = Redis::start();
    let a = Instance::start_history_queue(single(&redis), 1000, 50).await;
    for n in 1..=130 {
        a.t.server.publish("chat:storm", "m", &n, None).await.unwrap();
    }
    let epoch =
        a.t.server
            .history("chat:storm", None, Some(1))
            .await
            .unwrap()
            .position
            .epoch;
    let span = |a: u64, b: u64| Some((a..=b).collect::<Vec<u64>>());
    // (offset, epoch, what the client should get: the offsets replayed, or None for `recovered: false`)
    let cases: Vec<(u64, &str, Option<Vec<u64>>)> = vec![
        (85, &epoch, span(86, 130)),
        (100, &epoch, span(101, 130)),
        (125, &epoch, span(126, 130)),
        (129, &epoch, span(130, 130)),
        (130, &epoch, Some(vec![])),
        (70, &epoch, None),
        (0, &epoch, None),
        (110, "another", None),
        (1000, &epoch, None),
    ];
    let mut clients = Vec::new();
    for round in 0..4 {
        for (i, case) in cases.iter().enumerate() {
            let (c, _) = a.t.login(&format!("user:{round}-{i}")).await;
            clients.push((c, case.clone()));
        }
    }
    let joins = clients.iter_mut().map(|(c, (offset, epoch, _))| {
        c.send(json!({"event": "join", "data": {"rooms": ["chat:storm"],
            "recover": {"chat:storm": {"offset": offset, "epoch": epoch}}}}))
    });
    futures_util::future::join_all(joins).await;
    for (c, (offset, _, want)) in &mut clients {
        let mut replayed = Vec::new();
        let joined = loop {
            let m = c.recv().await;
            if m["event"] == "joined" {
                break m["data"].clone();
            }
            replayed.push(m["offset"].as_u64().unwrap());
        };
        let r = room_of(&joined, "chat:storm");
        assert_eq!(r["recovered"], want.is_some(), "from {offset}: {joined}");
        assert_eq!(r["offset"], 130);
        assert_eq!(&replayed, want.as_ref().unwrap_or(&vec![]), "from {offset}");
    }
}

/// An emitter given the fleet's history settings appends as the servers do: its messages carry the room's next
/// offset, are replayed to a recovering client, and a repeated idempotency key is not delivered again.
async fn an_emitter_with_history_is_recovered_like_a_server(a: &Instance, emitter: Emitter) {
    let emitter = emitter.with_history(vec!["chat:*".into()], 1000, Duration::from_secs(300));
    let room = "chat:emitted";
    let (mut c, _) = a.t.login("user:reader").await;
    let joined = join(&mut c, json!({"rooms": [room]})).await;
    let epoch = room_of(&joined, room)["epoch"].as_str().expect("an epoch").to_owned();
    assert!(a.bus.settled(WAIT).await);
    let receivers = emitter.to_room(room, "m", &1, &[]).await.unwrap();
    assert_eq!(receivers, 1, "one instance subscribed");
    assert_eq!(
        c.recv().await,
        json!({"event": "m", "data": 1, "room": room, "offset": 1, "epoch": epoch})
    );
    c.close().await;
    emitter.to_room(room, "m", &2, &[]).await.unwrap();
    let first = emitter.publish(room, "m", &3, Some("k3")).await.unwrap();
    let again = emitter.publish(room, "m", &3, Some("k3")).await.unwrap();
    assert_eq!(first.position.as_ref().map(|p| p.offset), Some(3));
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(
        again.position, first.position,
        "the retry is answered with the original position"
    );
    let (mut c, _) = a.t.login("user:reader").await;
    c.send(json!({"event": "join", "data": {"rooms": [room], "recover": {room: {"offset": 1, "epoch": epoch}}}}))
        .await;
    // The replay comes before the answer.
    for n in [2, 3] {
        let m = c.recv().await;
        assert_eq!((m["data"].clone(), m["offset"].clone()), (json!(n), json!(n)), "{m}");
    }
    let joined = c.expect_event("joined").await;
    assert_eq!(room_of(&joined, room)["recovered"], true, "{joined}");
    c.expect_silence().await;
}

#[tokio::test]
async fn an_emitter_with_history_appends_its_messages_to_the_room_s_stream() {
    let redis = Redis::start();
    let a = Instance::start_history(single(&redis), 1000).await;
    let emitter = Emitter::connect(RedisEndpoint::single(redis.url())).await.unwrap();
    an_emitter_with_history_is_recovered_like_a_server(&a, emitter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emitter_with_history_appends_its_messages_on_a_cluster() {
    let cluster = start_cluster().await;
    let a = Instance::start_history(cluster_bus(&cluster), 1000).await;
    let emitter = Emitter::connect(RedisEndpoint::cluster(cluster.urls())).await.unwrap();
    an_emitter_with_history_is_recovered_like_a_server(&a, emitter).await;
}

/// The same user retries a publish with the same id through the other instance: acknowledged twice with one
/// offset, delivered once.
async fn idempotent_retries_deliver_once(a: &Instance, b: &Instance) {
    let (mut a1, _) = a.t.login("user:writer").await;
    let (mut b1, _) = b.t.login("user:writer").await;
    let (mut reader, _) = b.t.login("user:reader").await;
    for c in [&mut a1, &mut b1, &mut reader] {
        join(c, json!({"rooms": ["chat:idem", "plain"]})).await;
    }
    assert!(a.bus.settled(WAIT).await && b.bus.settled(WAIT).await);
    for room in ["chat:idem", "plain"] {
        let publish = json!({"event": "publish", "data": {"room": room, "event": "m", "data": room}, "id": "retry-1"});
        a1.send(publish.clone()).await;
        let first = a1.expect_event("ack").await;
        b1.send(publish).await;
        assert_eq!(b1.expect_event("ack").await, first);
        assert_eq!(reader.expect_event("m").await, json!(room));
    }
    reader.expect_silence().await;
    let first = a.t.server.publish("chat:idem", "m", &1, Some("api-key")).await.unwrap();
    let again = b.t.server.publish("chat:idem", "m", &1, Some("api-key")).await.unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(first.position, again.position);
}

#[tokio::test]
async fn idempotent_retries_across_two_instances_deliver_once() {
    let redis = Redis::start();
    let a = Instance::start_history(single(&redis), 100).await;
    let b = Instance::start_history(single(&redis), 100).await;
    idempotent_retries_deliver_once(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_across_two_instances_deliver_once_on_a_cluster() {
    let cluster = start_cluster().await;
    let a = Instance::start_history(cluster_bus(&cluster), 100).await;
    let b = Instance::start_history(cluster_bus(&cluster), 100).await;
    idempotent_retries_deliver_once(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_persistence_starts_a_new_epoch_that_clients_are_told() {
    let mut redis = Redis::start();
    let a = Instance::start_history(single(&redis), 100).await;
    for n in 0..3 {
        a.t.server.publish("chat:r", "m", &n, None).await.unwrap();
    }
    let old = a.t.server.history("chat:r", None, None).await.unwrap().position;
    assert_eq!(old.offset, 3);
    redis.kill();
    let down = tokio::time::timeout(WAIT, a.t.server.publish("chat:r", "m", &"lost", Some("k"))).await;
    assert!(matches!(down, Ok(Err(sealcast::SendError::Unavailable))), "{down:?}");
    redis.restart();
    assert!(a.bus.wait_ready(WAIT).await, "the bus comes back");
    // Nothing wedged: the next publish goes through (after the publisher's reconnect backoff).
    let mut published = None;
    for _ in 0..100 {
        if let Ok(p) = a.t.server.publish("chat:r", "m", &"after", Some("k")).await {
            published = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new = published.expect("publishing works again").position.expect("a position");
    assert_eq!(new.offset, 1);
    assert_ne!(new.epoch, old.epoch, "Redis lost the stream: a new epoch");
    let (mut c, _) = a.t.login("user:x").await;
    let joined = join(
        &mut c,
        json!({"rooms": ["chat:r"], "recover": {"chat:r": {"offset": 3, "epoch": old.epoch}}}),
    )
    .await;
    let r = room_of(&joined, "chat:r");
    assert_eq!(r["recovered"], false);
    assert_eq!((r["offset"].clone(), r["epoch"].clone()), (json!(1), json!(new.epoch)));
}
