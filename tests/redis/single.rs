//! Several instances on one real Redis server: cross-instance addressing, the Emitter, reference-format
//! envelopes, hostile envelopes, bus authentication, and how many messages each subscription style receives.

use crate::common::*;
use crate::redis_harness::{cross_instance_matrix, received_for_room_on_one_of_four, settle, Instance, Redis};
use sealcast::bus::{BusMode, RedisBus, RedisEndpoint, Subscriptions};
use sealcast::{Bus, ClientId, Emitter, UserId};
use serde_json::json;

async fn instance_with(bus: sealcast::bus::RedisBusBuilder) -> Instance {
    Instance::start(bus).await
}

async fn instance(redis: &Redis) -> Instance {
    instance_with(RedisBus::builder(RedisEndpoint::single(redis.url()))).await
}

#[tokio::test]
async fn client_user_room_broadcast_and_exclude_across_three_instances() {
    let redis = Redis::start();
    let (s1, s2, s3) = (instance(&redis).await, instance(&redis).await, instance(&redis).await);
    cross_instance_matrix(&s1, &s2, &s3).await;
}

#[tokio::test]
async fn room_joined_later_and_left_follows_interest() {
    let redis = Redis::start();
    let (s1, s2) = (instance(&redis).await, instance(&redis).await);
    let (mut c2, d2) = s2.t.login("user:carol").await;
    s2.t.server.join_room(&id_of(&d2), "later").unwrap();
    settle(&[&s2]).await;
    s1.t.server.send_to_room("later", "hi", &1, &[]).unwrap();
    assert_eq!(c2.recv().await, json!({"event": "hi", "data": 1}));
    assert!(s2.t.server.leave_room(&id_of(&d2), "later"));
    settle(&[&s2]).await;
    let before = s2.bus.stats().received;
    s1.t.server.send_to_room("later", "hi", &2, &[]).unwrap();
    c2.expect_silence().await;
    // Unsubscribed: Redis no longer hands it to s2.
    assert_eq!(s2.bus.stats().received, before);
}

#[tokio::test]
async fn per_client_order_is_kept_across_instances() {
    let redis = Redis::start();
    let (s1, s2) = (instance(&redis).await, instance(&redis).await);
    let (mut c, d) = s2.t.login("user:dave").await;
    s2.t.server.join_room(&id_of(&d), "ordered").unwrap();
    settle(&[&s2]).await;
    for i in 0..300 {
        s1.t.server.send_to_room("ordered", "n", &i, &[]).unwrap();
    }
    for i in 0..300 {
        assert_eq!(c.recv().await, json!({"event": "n", "data": i}));
    }
    c.expect_silence().await;
}

#[tokio::test]
async fn emitter_and_reference_envelopes_reach_clients() {
    let redis = Redis::start();
    let (s1, s2) = (instance(&redis).await, instance(&redis).await);
    let (mut a, da) = s1.t.login("user:alice").await;
    let (mut b, db) = s2.t.login("user:bob").await;
    settle(&[&s1, &s2]).await;
    let emitter = Emitter::connect(RedisEndpoint::single(redis.url())).await.unwrap();
    assert_eq!(emitter.mode(), BusMode::Classic);

    emitter
        .to_room("ws-default", "room", &json!({"k": 1}), &[&id_of(&db)])
        .await
        .unwrap();
    assert_eq!(a.recv().await, json!({"event": "room", "data": {"k": 1}}));
    assert_eq!(emitter.to_user("bob", "user", &2).await.unwrap(), 1);
    assert_eq!(b.recv().await, json!({"event": "user", "data": 2}));
    emitter.to_client(&id_of(&da), "client", &3).await.unwrap();
    assert_eq!(a.recv().await, json!({"event": "client", "data": 3}));
    emitter.broadcast("all", &4, &[]).await.unwrap();
    assert_eq!(a.recv().await, json!({"event": "all", "data": 4}));
    assert_eq!(b.recv().await, json!({"event": "all", "data": 4}));
    assert!(matches!(
        emitter.to_room("ws-default", "connected", &0, &[]).await,
        Err(sealcast::EmitterError::Event(_))
    ));
    // Addressees that cannot exist are refused before anything is sent.
    let too_long = "x".repeat(sealcast::protocol::envelope::MAX_TARGET_LEN + 1);
    for result in [
        emitter.to_client("not-a-client-id", "e", &0).await,
        emitter.to_user("", "e", &0).await,
        emitter.to_room(&too_long, "e", &0, &[]).await,
    ] {
        assert!(
            matches!(result, Err(sealcast::EmitterError::InvalidTarget(_))),
            "{result:?}"
        );
    }

    // Exactly what the reference's emitter publishes.
    redis.cli(&[
        "PUBLISH",
        "ws:room:ws-default",
        r#"{"serverId":"emitter","type":"room","target":"ws-default","event":"e","data":{}}"#,
    ]);
    assert_eq!(a.recv().await, json!({"event": "e", "data": {}}));
    assert_eq!(b.recv().await, json!({"event": "e", "data": {}}));
    a.expect_silence().await;
    b.expect_silence().await;
}

#[tokio::test]
async fn hostile_envelopes_are_dropped_and_counted() {
    let redis = Redis::start();
    let s = instance(&redis).await;
    let (mut c, _) = s.t.login("user:eve").await;
    settle(&[&s]).await;
    let room = "ws:room:ws-default";
    let cases: Vec<(&str, String)> = vec![
        (room, "not json".into()),
        (room, r#"[1,2]"#.into()),
        (
            room,
            r#"{"serverId":"emitter","type":"room","target":"ws-default","event":"connected","data":{}}"#.into(),
        ),
        (
            room,
            r#"{"serverId":"emitter","type":"room","target":"ws-default","event":"encrypted","data":{}}"#.into(),
        ),
        (
            room,
            r#"{"serverId":"emitter","type":"planet","target":"ws-default","event":"e","data":{}}"#.into(),
        ),
        (
            room,
            r#"{"serverId":7,"type":"room","target":"ws-default","event":"e","data":{}}"#.into(),
        ),
        // Arrives on one room's channel but addresses another room / everyone.
        (
            room,
            r#"{"serverId":"emitter","type":"room","target":"elsewhere","event":"e","data":{}}"#.into(),
        ),
        (
            "ws:broadcast",
            r#"{"serverId":"emitter","type":"room","target":"ws-default","event":"e","data":{}}"#.into(),
        ),
    ];
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (channel, payload) in &cases {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let oversized = format!(
        r#"{{"serverId":"emitter","type":"room","target":"ws-default","event":"e","data":"{}"}}"#,
        "x".repeat(1024 * 1024 + 1)
    );
    let _: i64 = redis::cmd("PUBLISH")
        .arg(room)
        .arg(&oversized)
        .query_async(&mut conn)
        .await
        .unwrap();
    let n = cases.len() as u64 + 1;
    eventually("every hostile envelope counted", || {
        s.t.server.stats().envelopes_dropped == n
    })
    .await;
    assert_eq!(s.bus.stats().rejected, n);
    c.expect_silence().await;
    assert!(s.bus.is_ready() && s.t.server.is_ready());
    // Still delivering afterwards.
    redis.cli(&[
        "PUBLISH",
        room,
        r#"{"serverId":"emitter","type":"room","target":"ws-default","event":"ok","data":1}"#,
    ]);
    assert_eq!(c.recv().await, json!({"event": "ok", "data": 1}));
}

#[tokio::test]
async fn with_a_bus_secret_only_signed_envelopes_are_delivered() {
    let redis = Redis::start();
    let signed = || RedisBus::builder(RedisEndpoint::single(redis.url())).secret("s3cret");
    let (s1, s2) = (instance_with(signed()).await, instance_with(signed()).await);
    let (mut b, _) = s2.t.login("user:bob").await;
    let (mut c, dc) = s2.t.login("user:carol").await;
    settle(&[&s1, &s2]).await;

    s1.t.server.send_to_user("bob", "signed", &1).unwrap();
    assert_eq!(b.recv().await, json!({"event": "signed", "data": 1}));

    let endpoint = RedisEndpoint::single(redis.url());
    let good = Emitter::connect_with(endpoint.clone(), BusMode::Classic, Some(b"s3cret"))
        .await
        .unwrap();
    good.to_user("bob", "emitted", &2).await.unwrap();
    assert_eq!(b.recv().await, json!({"event": "emitted", "data": 2}));
    // The signature covers the exclude entries: it verifies, and they are honoured.
    good.to_room("ws-default", "excluding", &5, &[&id_of(&dc)])
        .await
        .unwrap();
    assert_eq!(b.recv().await, json!({"event": "excluding", "data": 5}));
    s1.t.server
        .send_to_room("ws-default", "excluding", &6, &[&id_of(&dc)])
        .unwrap();
    assert_eq!(b.recv().await, json!({"event": "excluding", "data": 6}));

    let forged = Emitter::connect_with(endpoint.clone(), BusMode::Classic, Some(b"guess"))
        .await
        .unwrap();
    forged.to_user("bob", "forged", &3).await.unwrap();
    let unsigned = Emitter::connect(endpoint).await.unwrap();
    unsigned.to_user("bob", "unsigned", &4).await.unwrap();
    redis.cli(&[
        "PUBLISH",
        "ws:user:bob",
        r#"{"serverId":"emitter","type":"user","target":"bob","event":"ref","data":{}}"#,
    ]);
    eventually("forged and unsigned envelopes counted", || {
        s2.t.server.stats().envelopes_dropped == 3
    })
    .await;
    b.expect_silence().await;
    c.expect_silence().await;
}

#[tokio::test]
async fn interest_subscriptions_receive_one_message_per_delivery_patterns_four() {
    let redis = Redis::start();
    let n = 200;
    let interest = received_for_room_on_one_of_four(&redis, Subscriptions::Interest, n).await;
    let patterns = received_for_room_on_one_of_four(&redis, Subscriptions::Patterns, n).await;
    println!(
        "room on 1 of 4 instances, {n} messages: interest {interest} received ({:.2}/msg), patterns {patterns} ({:.2}/msg)",
        interest as f64 / n as f64,
        patterns as f64 / n as f64
    );
    assert_eq!(interest, n);
    assert_eq!(patterns, 4 * n);
}

#[tokio::test]
async fn sharded_mode_also_works_on_a_single_redis() {
    let redis = Redis::start();
    let sharded = || RedisBus::builder(RedisEndpoint::single(redis.url())).mode(BusMode::Sharded);
    let (s1, s2) = (instance_with(sharded()).await, instance_with(sharded()).await);
    let (mut b, _) = s2.t.login("user:bob").await;
    settle(&[&s1, &s2]).await;
    s1.t.server.send_to_user("bob", "s", &1).unwrap();
    assert_eq!(b.recv().await, json!({"event": "s", "data": 1}));
    let emitter = Emitter::connect_with(RedisEndpoint::single(redis.url()), BusMode::Sharded, None)
        .await
        .unwrap();
    assert_eq!(emitter.to_user("bob", "e", &2).await.unwrap(), 1);
    assert_eq!(b.recv().await, json!({"event": "e", "data": 2}));
    // A classic emitter is not heard by a sharded fleet: modes must agree.
    let classic = Emitter::connect(RedisEndpoint::single(redis.url())).await.unwrap();
    assert_eq!(classic.to_user("bob", "e", &3).await.unwrap(), 0);
    b.expect_silence().await;
}

#[tokio::test]
async fn unusable_bus_settings_are_refused() {
    use sealcast::bus::RedisBusError;
    let url = RedisEndpoint::single("redis://127.0.0.1:1");
    assert!(matches!(
        RedisBus::builder(url.clone())
            .mode(BusMode::Sharded)
            .subscriptions(Subscriptions::Patterns)
            .build(),
        Err(RedisBusError::PatternsNeedClassic)
    ));
    assert!(matches!(
        RedisBus::builder(url).secret("").build(),
        Err(RedisBusError::EmptySecret)
    ));
    assert!(matches!(
        RedisBus::builder(RedisEndpoint::single("http://nope")).build(),
        Err(RedisBusError::Endpoint(_))
    ));
    assert!(matches!(
        RedisBus::builder(RedisEndpoint::cluster(Vec::<String>::new())).build(),
        Err(RedisBusError::Endpoint(_))
    ));
    assert_eq!("Sharded".parse::<BusMode>(), Ok(BusMode::Sharded));
    assert!("fast".parse::<BusMode>().is_err());
}

#[tokio::test]
async fn signed_disconnects_cross_instances_and_unsigned_ones_are_dropped() {
    let redis = Redis::start();
    let signed = || RedisBus::builder(RedisEndpoint::single(redis.url())).secret("s3cret");
    let (s1, s2) = (instance_with(signed()).await, instance_with(signed()).await);
    let (mut bob, _) = s2.t.login("user:bob").await;
    let (mut carol, dc) = s2.t.login("user:carol").await;
    let (mut dave, _) = s2.t.login("user:dave").await;
    settle(&[&s1, &s2]).await;
    // Hostile: unsigned, or a signed-looking one for another target, never disconnect anyone.
    redis.cli(&[
        "PUBLISH",
        "ws:user:dave",
        r#"{"serverId":"emitter","type":"disconnect","target":"user:dave","event":"disconnect"}"#,
    ]);
    eventually("the unsigned disconnect is counted", || {
        s2.t.server.stats().envelopes_dropped == 1
    })
    .await;
    assert_eq!(
        s1.t.server
            .disconnect_everywhere(&sealcast::protocol::Target::User(UserId::parse("bob").unwrap())),
        0
    );
    assert_eq!(bob.expect_close().await.0, 1008);
    let carol_target = sealcast::protocol::Target::Client(ClientId::parse(&id_of(&dc)).unwrap());
    assert_eq!(s1.t.server.disconnect_everywhere(&carol_target), 0);
    assert_eq!(carol.expect_close().await.0, 1008);
    dave.expect_silence().await;
}
