//! Rooms: own-id and default rooms, join sanitising and validation, leave rules.

use crate::common::{self, *};
use sealcast::{HookError, RoomError, RoomRequest, Server};
use serde_json::{json, Value};

fn rooms_of(t: &TestServer, id: &str) -> Vec<String> {
    t.server.client(id).expect("client").rooms
}

/// Sends `join` and waits for its `joined` answer, which it returns.
async fn join_and_settle(c: &mut Client, rooms: Value) -> Value {
    c.send(json!({"event": "join", "data": {"rooms": rooms}})).await;
    c.expect_event("joined").await
}

#[tokio::test]
async fn authenticated_client_is_in_its_own_room_and_the_default_rooms() {
    let t = TestServer::start(builder()).await;
    let (_c, data) = t.login("user:a").await;
    let id = id_of(&data);
    let mut want = vec![id.clone(), "ws-default".to_owned(), "ws-notification".to_owned()];
    want.sort();
    assert_eq!(rooms_of(&t, &id), want);
}

#[tokio::test]
async fn joins_are_refused_without_a_room_validator() {
    let t = TestServer::start(Server::builder().require_encryption(false).authenticator(test_auth)).await;
    let (mut c, data) = t.login("user:a").await;
    let id = id_of(&data);
    let joined = join_and_settle(&mut c, json!(["lobby"])).await;
    assert_eq!(
        joined,
        json!({"rooms": [], "refused": [{"room": "lobby", "reason": "Room refused"}]})
    );
    assert!(!rooms_of(&t, &id).contains(&"lobby".to_owned()));
    c.expect_silence().await;
}

#[tokio::test]
async fn join_drops_internal_oversized_uuid_and_non_string_names() {
    let t = TestServer::start(builder()).await;
    let (mut c, data) = t.login("user:a").await;
    let (_other, other_data) = t.login("user:b").await;
    let id = id_of(&data);
    let long = "x".repeat(257);
    join_and_settle(
        &mut c,
        json!(["ok", "ws:internal:broadcast", long, 7, "", id_of(&other_data)]),
    )
    .await;
    let rooms = rooms_of(&t, &id);
    assert!(rooms.contains(&"ok".to_owned()));
    assert_eq!(rooms.len(), 4, "{rooms:?}");
}

#[tokio::test]
async fn validator_output_is_resanitised_and_limited_to_the_request() {
    let b = common::builder().room_validator(|req: RoomRequest| async move {
        let mut out = req.rooms.clone();
        out.extend(["not-requested".to_owned(), "ws:evil".to_owned()]);
        out.retain(|r| r != "denied");
        Ok::<_, HookError>(out)
    });
    let t = TestServer::start(b).await;
    let (mut c, data) = t.login("user:a").await;
    let id = id_of(&data);
    join_and_settle(&mut c, json!(["a", "denied"])).await;
    let rooms = rooms_of(&t, &id);
    assert!(rooms.contains(&"a".to_owned()));
    for bad in ["denied", "not-requested", "ws:evil"] {
        assert!(!rooms.contains(&bad.to_owned()), "{bad} in {rooms:?}");
    }
}

#[tokio::test]
async fn failing_validator_joins_nothing_and_keeps_the_connection() {
    let b = common::builder().room_validator(|_: RoomRequest| async move {
        if true {
            panic!("validator panics");
        }
        Ok::<Vec<String>, HookError>(vec![])
    });
    let t = TestServer::start(b).await;
    let (mut c, data) = t.login("user:a").await;
    let id = id_of(&data);
    join_and_settle(&mut c, json!(["a"])).await;
    assert!(!rooms_of(&t, &id).contains(&"a".to_owned()));
    t.server.send_to_client(&id, "alive", &1).unwrap();
    c.expect_event("alive").await;
}

#[tokio::test]
async fn leave_removes_joined_rooms_but_never_the_own_id_room() {
    let t = TestServer::start(builder()).await;
    let (mut c, data) = t.login("user:a").await;
    let id = id_of(&data);
    join_and_settle(&mut c, json!(["a"])).await;
    c.send(json!({"event": "leave", "data": {"rooms": ["a", id, "never-joined"]}}))
        .await;
    c.send(json!({"event": "heartbeat"})).await;
    eventually("left a", || !rooms_of(&t, &id).contains(&"a".to_owned())).await;
    assert!(rooms_of(&t, &id).contains(&id));
    t.server.send(Some(&id), "direct", &1).unwrap();
    c.expect_event("direct").await;
}

#[tokio::test]
async fn joining_another_clients_id_never_reveals_its_direct_messages() {
    let t = TestServer::start(builder()).await;
    let (mut victim, vdata) = t.login("user:victim").await;
    let (mut intruder, idata) = t.login("user:intruder").await;
    let vid = id_of(&vdata);
    let joined = join_and_settle(&mut intruder, json!([vid])).await;
    assert_eq!(joined["refused"], json!([{"room": vid, "reason": "Invalid room name"}]));
    assert_eq!(t.server.join_room(&id_of(&idata), &vid), Err(RoomError::InvalidName));
    t.server.send(Some(&vid), "private", &json!("secret")).unwrap();
    t.server.send_to_room(&vid, "private", &json!("secret"), &[]).unwrap();
    assert_eq!(victim.expect_event("private").await, json!("secret"));
    intruder.expect_silence().await;
}

#[tokio::test]
async fn server_side_join_and_leave() {
    let t = TestServer::start(builder()).await;
    let (mut c, data) = t.login("user:a").await;
    let id = id_of(&data);
    t.server.join_room(&id, "vip").unwrap();
    t.server.send_to_room("vip", "hello", &1, &[]).unwrap();
    c.expect_event("hello").await;
    assert!(t.server.leave_room(&id, "vip"));
    assert!(!t.server.leave_room(&id, &id));
    assert_eq!(t.server.join_room("nope", "vip"), Err(RoomError::UnknownClient));
    let pre = t.connect().await;
    let pre_id = t.server.clients().into_iter().find(|c| c.id != id).unwrap().id;
    assert_eq!(t.server.join_room(&pre_id, "vip"), Err(RoomError::NotAuthenticated));
    drop(pre);
}

#[tokio::test]
async fn rooms_per_client_are_capped() {
    let t = TestServer::start(builder().max_rooms_per_client(5)).await;
    let (mut c, data) = t.login("user:a").await;
    let id = id_of(&data);
    join_and_settle(&mut c, json!(["r1", "r2", "r3", "r4", "r5"])).await;
    assert_eq!(rooms_of(&t, &id).len(), 5);
    assert_eq!(t.server.join_room(&id, "r9"), Err(RoomError::RoomLimit));
}
