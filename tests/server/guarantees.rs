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
