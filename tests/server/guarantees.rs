//! Delivery guarantees: `joined` answers, publish acknowledgements and ids, room history, recovery after a
//! reconnect, idempotent publishes (issue 16).

use crate::common::{self, *};
use sealcast::{HookError, RoomRequest};
use serde_json::{json, Value};

async fn join(c: &mut Client, data: Value) -> Value {
    c.send(json!({"event": "join", "data": data})).await;
    c.expect_event("joined").await
}

fn publishing() -> sealcast::ServerBuilder {
    common::builder().allow_client_publish(true)
}

#[tokio::test]
async fn every_join_is_answered_with_the_rooms_joined_and_each_refusal_with_its_reason() {
    let b = publishing().room_validator(|req: RoomRequest| async move {
        Ok::<_, HookError>(req.rooms.into_iter().filter(|r| r != "demo:closed").collect())
    });
    let t = TestServer::start(b).await;
    let (mut c, _) = t.login("rooms:u:demo:*").await;
    let joined = join(
        &mut c,
        json!({"rooms": ["demo:a", "elsewhere", "ws:x", "demo:closed", "demo:a", 7]}),
    )
    .await;
    assert_eq!(
        joined,
        json!({
            "rooms": [{"room": "demo:a"}],
            "refused": [
                {"room": "elsewhere", "reason": "Room not allowed"},
                {"room": "ws:x", "reason": "Invalid room name"},
                {"room": "demo:closed", "reason": "Room refused"},
            ]
        })
    );
    assert_eq!(join(&mut c, json!({})).await, json!({"rooms": [], "refused": []}));
}

/// A bus that carries a room to this instance only 300 ms after the interest in it (a remote transport whose
/// subscription takes time).
struct SlowSubscription {
    inner: sealcast::LocalBus,
    asked: std::sync::Mutex<Option<std::time::Instant>>,
}

const SUBSCRIPTION_DELAY: std::time::Duration = std::time::Duration::from_millis(300);

impl sealcast::Bus for SlowSubscription {
    fn attach(&self, inbox: sealcast::Inbox) {
        self.inner.attach(inbox);
    }
    fn publish(&self, envelope: sealcast::protocol::Envelope) {
        self.inner.publish(envelope);
    }
    fn interest(&self, _: &sealcast::protocol::Target, on: bool) {
        if on {
            *self.asked.lock().unwrap() = Some(std::time::Instant::now());
        }
    }
    fn is_subscribed(&self, _: &sealcast::protocol::Target) -> bool {
        self.asked
            .lock()
            .unwrap()
            .is_some_and(|t| t.elapsed() >= SUBSCRIPTION_DELAY)
    }
    fn shutdown(&self, server_id: &str) -> sealcast::bus::BusFuture {
        self.inner.shutdown(server_id)
    }
}

/// `joined` promises delivery from then on, so a join is answered only once the bus carries the room to this
/// instance: a message published elsewhere right after the answer cannot be missed.
#[tokio::test]
async fn a_join_is_answered_once_the_bus_carries_the_room() {
    let bus = SlowSubscription {
        inner: sealcast::LocalBus::new(),
        asked: std::sync::Mutex::new(None),
    };
    let t = TestServer::start(common::builder().bus(bus)).await;
    let (mut c, _) = t.login("user:a").await;
    let started = std::time::Instant::now();
    join(&mut c, json!({"rooms": ["chat:1"]})).await;
    assert!(
        started.elapsed() >= SUBSCRIPTION_DELAY,
        "answered after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_join_over_the_room_limit_is_refused_as_too_many_rooms() {
    let t = TestServer::start(publishing().max_rooms_per_client(4)).await;
    let (mut c, _) = t.login("user:a").await;
    // Own-id room and the two default rooms: one more fits.
    let joined = join(&mut c, json!({"rooms": ["one", "two"]})).await;
    assert_eq!(
        joined,
        json!({"rooms": [{"room": "one"}], "refused": [{"room": "two", "reason": "Too many rooms"}]})
    );
}

#[tokio::test]
async fn a_publish_with_an_id_is_acknowledged_after_it_is_accepted() {
    let t = TestServer::start(publishing()).await;
    let (mut a, _) = t.login("user:a").await;
    let (mut b, _) = t.login("user:b").await;
    join(&mut a, json!({"rooms": ["r"]})).await;
    join(&mut b, json!({"rooms": ["r"]})).await;
    a.send(json!({"event": "publish", "data": {"room": "r", "event": "chat", "data": 1}, "id": "c1"}))
        .await;
    assert_eq!(a.recv().await, json!({"event": "ack", "data": {"id": "c1"}}));
    assert_eq!(b.recv().await, json!({"event": "chat", "data": 1}));
    // Without an id, nothing is answered (as before).
    a.send(json!({"event": "publish", "data": {"room": "r", "event": "chat", "data": 2}}))
        .await;
    assert_eq!(b.recv().await, json!({"event": "chat", "data": 2}));
    a.expect_silence().await;
}

#[tokio::test]
async fn a_refused_publish_carries_its_id_in_the_error() {
    let t = TestServer::start(publishing()).await;
    let (mut a, _) = t.login("user:a").await;
    a.send(json!({"event": "publish", "data": {"room": "nowhere", "event": "chat"}, "id": "c2"}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"event": "error", "data": {"message": "Not a member of room", "id": "c2"}})
    );
}

#[tokio::test]
async fn a_publish_id_that_is_not_a_short_string_is_an_invalid_message() {
    let t = TestServer::start(publishing()).await;
    let (mut a, _) = t.login("user:a").await;
    join(&mut a, json!({"rooms": ["r"]})).await;
    for id in [json!("x".repeat(65)), json!(7), json!("")] {
        a.send(json!({"event": "publish", "data": {"room": "r", "event": "chat"}, "id": id}))
            .await;
        a.expect_error("Invalid message format").await;
    }
}

#[tokio::test]
async fn clients_cannot_send_the_new_reserved_events() {
    let t = TestServer::start(publishing()).await;
    let (mut a, _) = t.login("user:a").await;
    join(&mut a, json!({"rooms": ["r"]})).await;
    for name in ["joined", "ack"] {
        a.send(json!({"event": name, "data": {}})).await;
        a.expect_error("Reserved event").await;
        a.send(json!({"event": "publish", "data": {"room": "r", "event": name}}))
            .await;
        a.expect_error("Reserved event").await;
    }
    assert!(t.server.send_to_room("r", "joined", &1, &[]).is_err());
}

// Room history (embedded store).

const KEY: &str = "api-key-history";

fn history() -> sealcast::ServerBuilder {
    publishing().history_rooms(vec!["chat:*".into()])
}

/// Reads `n` messages of `event`, returning their offsets; each must carry `room` and the `epoch`.
async fn offsets(c: &mut Client, n: usize, room: &str, epoch: &str) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = c.recv().await;
        if m["event"] == "joined" {
            continue;
        }
        assert_eq!(
            (m["room"].as_str(), m["epoch"].as_str()),
            (Some(room), Some(epoch)),
            "{m}"
        );
        out.push(m["offset"].as_u64().expect("an offset"));
    }
    out
}

fn position(joined: &Value, room: &str) -> (u64, String) {
    let r = joined["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == room)
        .expect("the room is joined");
    (r["offset"].as_u64().unwrap(), r["epoch"].as_str().unwrap().to_owned())
}

fn recovered(joined: &Value, room: &str) -> Option<bool> {
    joined["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == room)
        .and_then(|r| r["recovered"].as_bool())
}

#[tokio::test]
async fn messages_to_a_history_room_carry_room_offset_and_epoch_counting_from_one() {
    let t = TestServer::start(history()).await;
    let (mut a, _) = t.login("user:a").await;
    let (mut b, _) = t.login("user:b").await;
    let joined = join(&mut b, json!({"rooms": ["chat:1", "plain"]})).await;
    assert_eq!(joined["rooms"][0]["offset"], 0, "{joined}");
    assert!(joined["rooms"][1].get("offset").is_none(), "{joined}");
    let epoch = position(&joined, "chat:1").1;
    join(&mut a, json!({"rooms": ["chat:1", "plain"]})).await;
    a.send(json!({"event": "publish", "data": {"room": "chat:1", "event": "m", "data": 1}, "id": "x"}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"event": "ack", "data": {"id": "x", "offset": 1, "epoch": epoch}})
    );
    t.server.send_to_room("chat:1", "m", &2, &[]).unwrap();
    let published = t.server.publish("chat:1", "m", &3, None).await.unwrap();
    assert_eq!(published.position.map(|p| p.offset), Some(3));
    assert_eq!(
        b.recv().await,
        json!({"event": "m", "data": 1, "room": "chat:1", "offset": 1, "epoch": epoch})
    );
    assert_eq!(offsets(&mut b, 2, "chat:1", &epoch).await, [2, 3]);
    t.server.send_to_room("plain", "m", &4, &[]).unwrap();
    assert_eq!(
        b.recv().await,
        json!({"event": "m", "data": 4}),
        "no history, no position"
    );
}

#[tokio::test]
async fn a_client_recovers_every_missed_message_in_order_then_live_ones() {
    let t = TestServer::start(history().history_size(1000)).await;
    let (mut c, _) = t.login("user:a").await;
    let joined = join(&mut c, json!({"rooms": ["chat:1"]})).await;
    let (_, epoch) = position(&joined, "chat:1");
    t.server.send_to_room("chat:1", "m", &0, &[]).unwrap();
    assert_eq!(offsets(&mut c, 1, "chat:1", &epoch).await, [1]);
    c.close().await;
    for n in 1..=500 {
        t.server.send_to_room("chat:1", "m", &n, &[]).unwrap();
    }
    let (mut c, _) = t.login("user:a").await;
    c.send(
        json!({"event": "join", "data": {"rooms": ["chat:1"], "recover": {"chat:1": {"offset": 1, "epoch": epoch}}}}),
    )
    .await;
    let replay = offsets(&mut c, 500, "chat:1", &epoch).await;
    assert_eq!(replay, (2..=501).collect::<Vec<_>>());
    let joined = c.expect_event("joined").await;
    assert_eq!(recovered(&joined, "chat:1"), Some(true));
    assert_eq!(position(&joined, "chat:1"), (501, epoch.clone()));
    t.server.send_to_room("chat:1", "m", &"live", &[]).unwrap();
    assert_eq!(offsets(&mut c, 1, "chat:1", &epoch).await, [502]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_while_publishing_continues_has_no_gap_and_no_duplicate() {
    let t = TestServer::start(history().history_size(5000).outbound_queue(8192)).await;
    let epoch = t.server.history("chat:1", None, None).await.unwrap().position.epoch;
    for n in 0..200 {
        t.server.send_to_room("chat:1", "m", &n, &[]).unwrap();
    }
    let (mut c, _) = t.login("user:a").await;
    c.send(
        json!({"event": "join", "data": {"rooms": ["chat:1"], "recover": {"chat:1": {"offset": 100, "epoch": epoch}}}}),
    )
    .await;
    // Publishing goes on, on another thread, while the server handles the join.
    let server = t.server.clone();
    tokio::spawn(async move {
        for n in 0..2000 {
            server.send_to_room("chat:1", "m", &n, &[]).unwrap();
            if n % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
    })
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut joined = None;
    // `joined` follows the replay; live messages may come before it too.
    while got.last() != Some(&2200) || joined.is_none() {
        let m = c.recv().await;
        if m["event"] == "joined" {
            joined = Some(m["data"].clone());
            continue;
        }
        got.push(m["offset"].as_u64().unwrap());
    }
    assert_eq!(
        got,
        (101..=2200).collect::<Vec<_>>(),
        "replay then live, no gap, no duplicate"
    );
    let joined = joined.expect("joined");
    assert_eq!(recovered(&joined, "chat:1"), Some(true));
}

#[tokio::test]
async fn a_wrong_epoch_is_not_recovered_and_nothing_is_replayed() {
    let t = TestServer::start(history()).await;
    for n in 0..3 {
        t.server.send_to_room("chat:1", "m", &n, &[]).unwrap();
    }
    let (mut c, _) = t.login("user:a").await;
    let joined = join(
        &mut c,
        json!({"rooms": ["chat:1"], "recover": {"chat:1": {"offset": 1, "epoch": "not-this-one"}}}),
    )
    .await;
    assert_eq!(recovered(&joined, "chat:1"), Some(false));
    assert_eq!(position(&joined, "chat:1").0, 3, "the current position instead");
    c.expect_silence().await;
}

#[tokio::test]
async fn an_offset_older_than_the_window_is_not_recovered_and_nothing_is_replayed() {
    let t = TestServer::start(history().history_size(5)).await;
    for n in 0..10 {
        t.server.send_to_room("chat:1", "m", &n, &[]).unwrap();
    }
    let epoch = t.server.history("chat:1", None, None).await.unwrap().position.epoch;
    let (mut c, _) = t.login("user:a").await;
    let joined = join(
        &mut c,
        json!({"rooms": ["chat:1"], "recover": {"chat:1": {"offset": 4, "epoch": epoch}}}),
    )
    .await;
    assert_eq!(
        recovered(&joined, "chat:1"),
        Some(false),
        "offset 5 is gone: no partial replay"
    );
    c.expect_silence().await;
    let joined = join(
        &mut c,
        json!({"rooms": ["chat:2"], "recover": {"chat:2": {"offset": 0, "epoch": "whatever"}}}),
    )
    .await;
    assert_eq!(recovered(&joined, "chat:2"), Some(false));
}

#[tokio::test]
async fn an_idempotent_retry_is_acknowledged_with_the_original_offset_and_delivered_once() {
    let t = TestServer::start(history()).await;
    let (mut a, _) = t.login("user:a").await;
    let (mut b, _) = t.login("user:b").await;
    join(&mut a, json!({"rooms": ["chat:1", "plain"]})).await;
    join(&mut b, json!({"rooms": ["chat:1", "plain"]})).await;
    for room in ["chat:1", "plain"] {
        for _ in 0..2 {
            a.send(json!({"event": "publish", "data": {"room": room, "event": "m", "data": room}, "id": "k1"}))
                .await;
            let ack = a.expect_event("ack").await;
            assert_eq!(ack["id"], "k1");
            assert_eq!(
                ack.get("offset").and_then(Value::as_u64),
                (room == "chat:1").then_some(1)
            );
        }
        assert_eq!(b.expect_event("m").await, json!(room));
    }
    b.expect_silence().await;
    // The same id by another user is another key.
    let (mut other, _) = t.login("user:c").await;
    join(&mut other, json!({"rooms": ["chat:1"]})).await;
    other
        .send(json!({"event": "publish", "data": {"room": "chat:1", "event": "m", "data": 0}, "id": "k1"}))
        .await;
    assert_eq!(other.expect_event("ack").await["offset"], 2);
}

#[tokio::test]
async fn idempotent_retries_across_two_instances_on_one_bus_deliver_once() {
    let bus = sealcast::LocalBus::new();
    let s1 = TestServer::start(history().bus(bus.clone())).await;
    let s2 = TestServer::start(history().bus(bus)).await;
    let (mut a1, _) = s1.login("user:a").await;
    let (mut a2, _) = s2.login("user:a").await;
    let (mut r, _) = s2.login("user:r").await;
    for c in [&mut a1, &mut a2, &mut r] {
        join(c, json!({"rooms": ["chat:1"]})).await;
    }
    let publish = json!({"event": "publish", "data": {"room": "chat:1", "event": "m", "data": 1}, "id": "retry"});
    a1.send(publish.clone()).await;
    let first = a1.expect_event("ack").await;
    // The retry after a reconnect lands on the other instance.
    a2.send(publish).await;
    assert_eq!(a2.expect_event("ack").await, first);
    assert_eq!(r.expect_event("m").await, json!(1));
    r.expect_silence().await;
    let first = s1.server.publish("chat:2", "m", &1, Some("api")).await.unwrap();
    let again = s2.server.publish("chat:2", "m", &1, Some("api")).await.unwrap();
    assert!(again.duplicate && !first.duplicate);
    assert_eq!(again.position, first.position);
}

#[tokio::test]
async fn on_an_encrypted_session_room_offset_and_epoch_are_inside_the_record() {
    let t = TestServer::start(
        enc::enc_builder()
            .allow_client_publish(true)
            .history_rooms(vec!["chat:*".into()]),
    )
    .await;
    let mut c = enc::RawEnc::login(&t, "user:a", &[enc::test_key().pinned()]).await;
    c.send(json!({"event": "join", "data": {"rooms": ["chat:secret-room"]}}))
        .await;
    let joined = c.expect_event("joined").await;
    let epoch = position(&joined, "chat:secret-room").1;
    t.server.send_to_room("chat:secret-room", "m", &"hello", &[]).unwrap();
    let m = c.recv().await;
    assert_eq!(
        m,
        json!({"event": "m", "data": "hello", "room": "chat:secret-room", "offset": 1, "epoch": epoch})
    );
    for raw in &c.wire {
        let v: Value = serde_json::from_str(raw).unwrap();
        assert_eq!(v["event"], "encrypted");
        let fields: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(fields, ["data", "event"], "nothing beside the record: {raw}");
        let data: Vec<&str> = v["data"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(data, ["ct", "iv", "seq"], "{raw}");
        for plain in ["secret-room", "offset", &epoch, "room"] {
            assert!(!raw.contains(plain), "{plain} in the clear: {raw}");
        }
    }
}

async fn api_server() -> (TestServer, std::net::SocketAddr) {
    let t = TestServer::start(history()).await;
    let app: axum::Router = t.server.api_router(KEY);
    let api = serve_http(app).await;
    (t, api)
}

async fn call(addr: std::net::SocketAddr, path: &str, body: Value) -> (u16, Value) {
    http_post(addr, path, Some(&format!("Bearer {KEY}")), &body.to_string()).await
}

#[tokio::test]
async fn the_http_api_publish_answers_offsets_and_honours_idempotency_keys() {
    let (t, api) = api_server().await;
    let (mut c, _) = t.login("user:a").await;
    join(&mut c, json!({"rooms": ["chat:1"]})).await;
    let req = json!({"room": "chat:1", "event": "m", "data": 1, "idempotency_key": "once"});
    let (status, first) = call(api, "/api/publish", req.clone()).await;
    assert_eq!(status, 202);
    assert_eq!(first["offset"], 1);
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    assert_eq!(
        call(api, "/api/publish", req).await,
        (
            202,
            json!({"status": "accepted", "offset": 1, "epoch": epoch, "duplicate": true})
        )
    );
    assert_eq!(c.expect_event("m").await, json!(1));
    c.expect_silence().await;
    let (status, body) = call(
        api,
        "/api/publish",
        json!({"user": "a", "event": "m", "idempotency_key": "k"}),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")));
    let long = json!({"room": "chat:1", "event": "m", "idempotency_key": "k".repeat(65)});
    assert_eq!(call(api, "/api/publish", long).await.0, 400);
}

#[tokio::test]
async fn the_http_api_history_pages_after_a_position_and_refuses_unrecoverable_ones() {
    let (t, api) = api_server().await;
    for n in 1..=5 {
        t.server.send_to_room("chat:1", "m", &json!({"n": n}), &[]).unwrap();
    }
    let (status, page) = call(api, "/api/history", json!({"room": "chat:1", "limit": 2})).await;
    assert_eq!(status, 200);
    let epoch = page["epoch"].as_str().unwrap().to_owned();
    assert_eq!(page["offset"], 5);
    assert_eq!(
        page["publications"],
        json!([{"offset": 4, "event": "m", "data": {"n": 4}}, {"offset": 5, "event": "m", "data": {"n": 5}}]),
        "without since: the latest"
    );
    let since = json!({"room": "chat:1", "since": {"offset": 1, "epoch": epoch}, "limit": 2});
    let (_, page) = call(api, "/api/history", since).await;
    let got: Vec<u64> = page["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [2, 3], "after since, oldest first");
    let wrong = json!({"room": "chat:1", "since": {"offset": 1, "epoch": "other"}});
    let (status, body) = call(api, "/api/history", wrong).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("unrecoverable_position"))
    );
    let (status, body) = call(api, "/api/history", json!({"room": "plain"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("history_not_enabled"))
    );
}

#[tokio::test]
async fn history_rooms_need_a_bus_that_keeps_history() {
    struct Silent;
    impl sealcast::Bus for Silent {
        fn attach(&self, _: sealcast::Inbox) {}
        fn publish(&self, _: sealcast::protocol::Envelope) {}
        fn shutdown(&self, _: &str) -> sealcast::bus::BusFuture {
            Box::pin(async {})
        }
    }
    let err = history().bus(Silent).build().unwrap_err();
    assert!(matches!(err, sealcast::ConfigError::HistoryUnsupported), "{err}");
}
