//! Delivery: addressing, exclusion, the reference `send` routing table, ordering, slow consumers, client publish.

use std::time::Duration;

use crate::common::*;
use sealcast::SendError;
use serde_json::json;

#[tokio::test]
async fn send_to_client_reaches_only_that_client() {
    let t = TestServer::start(builder()).await;
    let (mut a, ad) = t.login("user:a").await;
    let (mut b, _) = t.login("user:b").await;
    t.server
        .send_to_client(&id_of(&ad), "direct", &json!({"n": 1}))
        .unwrap();
    assert_eq!(a.recv().await, json!({"event": "direct", "data": {"n": 1}}));
    b.expect_silence().await;
}

#[tokio::test]
async fn send_to_user_reaches_every_session_of_that_user() {
    let t = TestServer::start(builder()).await;
    let (mut a1, _) = t.login("user:a").await;
    let (mut a2, _) = t.login("user:a").await;
    let (mut b, _) = t.login("user:b").await;
    t.server.send_to_user("a", "note", &"hi").unwrap();
    assert_eq!(a1.expect_event("note").await, json!("hi"));
    assert_eq!(a2.expect_event("note").await, json!("hi"));
    b.expect_silence().await;
}

#[tokio::test]
async fn room_and_broadcast_honour_exclude() {
    let t = TestServer::start(builder()).await;
    let (mut a, ad) = t.login("user:a").await;
    let (mut b, _) = t.login("user:b").await;
    t.server.send_to_room("ws-default", "r", &1, &[&id_of(&ad)]).unwrap();
    assert_eq!(b.expect_event("r").await, json!(1));
    t.server.broadcast("bc", &2, &[&id_of(&ad)]).unwrap();
    assert_eq!(b.expect_event("bc").await, json!(2));
    a.expect_silence().await;
    t.server.broadcast("bc", &3, &[]).unwrap();
    assert_eq!(a.expect_event("bc").await, json!(3));
}

#[tokio::test]
async fn ids_that_can_name_nobody_reach_nobody_and_are_not_errors() {
    let t = TestServer::start(builder()).await;
    let (mut a, ad) = t.login("user:a").await;
    let too_long = "x".repeat(sealcast::protocol::envelope::MAX_TARGET_LEN + 1);
    for bad in ["", "nope", too_long.as_str()] {
        t.server.send_to_client(bad, "x", &1).unwrap();
        t.server.send_to_user(bad, "x", &1).unwrap();
        t.server.send_to_room(bad, "x", &1, &[]).unwrap();
        t.server.send(Some(bad), "x", &1).unwrap();
        // The event name is checked all the same.
        assert!(matches!(
            t.server.send_to_client(bad, "connected", &1),
            Err(SendError::ReservedEvent(_))
        ));
        assert!(matches!(
            t.server.send_to_room(bad, "", &1, &[]),
            Err(SendError::InvalidEvent)
        ));
        assert!(t.server.client(bad).is_none());
        assert!(!t.server.disconnect(bad, sealcast::CloseCode::Normal));
    }
    a.expect_silence().await;
    // Exclude entries that are not client ids are ignored; client ids are read in any UUID form.
    let id = id_of(&ad);
    t.server.broadcast("bc", &1, &["nope", ""]).unwrap();
    assert_eq!(a.expect_event("bc").await, json!(1));
    t.server.broadcast("bc", &2, &[&id.to_uppercase()]).unwrap();
    a.expect_silence().await;
    t.server.send_to_client(&id.to_uppercase(), "direct", &3).unwrap();
    assert_eq!(a.expect_event("direct").await, json!(3));
    assert!(!t.server.leave_room(&id.to_uppercase(), &id));
    assert!(t.server.client(&id).unwrap().rooms.contains(&id));
}

#[tokio::test]
async fn unauthenticated_clients_receive_nothing() {
    let t = TestServer::start(builder()).await;
    let mut pre = t.connect().await;
    let (_a, _) = t.login("user:a").await;
    let pre_id = t.server.clients().into_iter().find(|c| c.user_id.is_none()).unwrap().id;
    t.server.send_to_client(&pre_id, "x", &1).unwrap();
    t.server.broadcast("x", &1, &[]).unwrap();
    t.server.send(Some(&pre_id), "x", &1).unwrap();
    pre.expect_silence().await;
}

#[tokio::test]
async fn send_follows_the_reference_routing_table() {
    let t = TestServer::start(builder()).await;
    let (mut a, ad) = t.login("user:a").await;
    let (mut b, _) = t.login("user:b").await;
    // No destination: everyone.
    t.server.send(None, "all", &0).unwrap();
    assert_eq!(a.expect_event("all").await, json!(0));
    assert_eq!(b.expect_event("all").await, json!(0));
    // A local client id: that client.
    t.server.send(Some(&id_of(&ad)), "one", &1).unwrap();
    assert_eq!(a.expect_event("one").await, json!(1));
    // A local room.
    t.server.send(Some("ws-notification"), "room", &2).unwrap();
    assert_eq!(a.expect_event("room").await, json!(2));
    assert_eq!(b.expect_event("room").await, json!(2));
    // Unknown here: nothing locally, no error.
    t.server.send(Some("elsewhere"), "none", &3).unwrap();
    b.expect_silence().await;
}

#[tokio::test]
async fn reserved_and_invalid_event_names_are_refused() {
    let t = TestServer::start(builder()).await;
    let (mut a, _) = t.login("user:a").await;
    for name in ["connected", "encrypted", "error", "key_update", "authenticate"] {
        assert!(
            matches!(t.server.broadcast(name, &1, &[]), Err(SendError::ReservedEvent(_))),
            "{name}"
        );
    }
    assert!(matches!(t.server.broadcast("", &1, &[]), Err(SendError::InvalidEvent)));
    a.expect_silence().await;
}

#[tokio::test]
async fn per_client_order_is_preserved_across_paths() {
    let t = TestServer::start(builder()).await;
    let (mut a, ad) = t.login("user:a").await;
    let id = id_of(&ad);
    for i in 0..300 {
        match i % 4 {
            0 => t.server.send_to_client(&id, "seq", &i),
            1 => t.server.send_to_room("ws-default", "seq", &i, &[]),
            2 => t.server.send_to_user("a", "seq", &i),
            _ => t.server.broadcast("seq", &i, &[]),
        }
        .unwrap();
    }
    for i in 0..300 {
        assert_eq!(a.expect_event("seq").await, json!(i));
    }
}

#[tokio::test]
async fn slow_consumer_is_closed_4007_and_others_keep_receiving() {
    let t = TestServer::start(builder().outbound_queue(32).max_write_buffer_size(256 * 1024)).await;
    let (mut slow, _) = t.login("user:slow").await;
    let (mut fast, _) = t.login("user:fast").await;
    // Far more than loopback socket buffers absorb.
    const N: usize = 600;
    let payload = "x".repeat(64 * 1024);
    // The slow client never reads; the fast one reads everything.
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < N {
            assert!(fast.next_text(WAIT).await.is_ok());
            n += 1;
        }
        n
    });
    for _ in 0..N {
        t.server.send_to_room("ws-default", "flood", &payload, &[]).unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(20), reader)
            .await
            .unwrap()
            .unwrap(),
        N
    );
    eventually("slow consumer closed", || t.server.stats().slow_consumer_closes == 1).await;
    // The slow client's socket ends with 4007 once it finally reads.
    let code = loop {
        match slow.next_text(WAIT).await {
            Ok(_) => continue,
            Err(Ended::Closed(code, _)) => break code,
            Err(Ended::Dropped) => break 0,
        }
    };
    assert!(code == 4007 || code == 0, "closed with {code}");
}

#[tokio::test]
async fn client_publish_reaches_the_room_but_not_the_sender() {
    let t = TestServer::start(builder().allow_client_publish(true)).await;
    let (mut a, _) = t.login("user:a").await;
    let (mut b, _) = t.login("user:b").await;
    a.send(json!({"event": "publish", "data": {"room": "ws-default", "event": "chat", "data": {"t": "hi"}}}))
        .await;
    assert_eq!(b.recv().await, json!({"event": "chat", "data": {"t": "hi"}}));
    a.expect_silence().await;
}

#[tokio::test]
async fn a_burst_of_publishes_arrives_in_order_and_before_what_the_publisher_sends_next() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let t = TestServer::start(builder().allow_client_publish(true).publish_to_self(true)).await;
    let (mut a, _) = t.login("user:a").await;
    let (mut b, _) = t.login("user:b").await;
    // One write: the server reads the publishes together and delivers them in batches (of at most 64), and the
    // frame after them (not a publish) must not overtake any of them.
    for i in 0..150 {
        let publish = json!({"event": "publish", "data": {"room": "ws-default", "event": "chat", "data": i}});
        a.ws.feed(Message::text(publish.to_string())).await.unwrap();
    }
    a.ws.feed(Message::text("{not json")).await.unwrap();
    a.ws.flush().await.unwrap();
    for i in 0..150 {
        assert_eq!(b.recv().await, json!({"event": "chat", "data": i}));
        assert_eq!(a.recv().await, json!({"event": "chat", "data": i}));
    }
    a.expect_error("Invalid message format").await;
    b.expect_silence().await;
}

#[tokio::test]
async fn client_publish_to_self_when_enabled() {
    let t = TestServer::start(builder().allow_client_publish(true).publish_to_self(true)).await;
    let (mut a, _) = t.login("user:a").await;
    a.send(json!({"event": "publish", "data": {"room": "ws-default", "event": "chat", "data": 1}}))
        .await;
    assert_eq!(a.expect_event("chat").await, json!(1));
}

#[tokio::test]
async fn client_publish_is_refused_when_disabled_not_a_member_or_reserved() {
    let t = TestServer::start(builder()).await;
    let (mut a, _) = t.login("user:a").await;
    a.send(json!({"event": "publish", "data": {"room": "ws-default", "event": "chat", "data": 1}}))
        .await;
    a.expect_error("Publish not allowed").await;

    let t = TestServer::start(builder().allow_client_publish(true)).await;
    let (mut a, ad) = t.login("user:a").await;
    let (mut b, _) = t.login("user:b").await;
    a.send(json!({"event": "publish", "data": {"room": "elsewhere", "event": "chat", "data": 1}}))
        .await;
    a.expect_error("Not a member of room").await;
    a.send(json!({"event": "publish", "data": {"room": id_of(&ad), "event": "chat", "data": 1}}))
        .await;
    a.expect_error("Not a member of room").await;
    a.send(json!({"event": "publish", "data": {"room": "ws-default", "event": "connected", "data": 1}}))
        .await;
    a.expect_error("Reserved event").await;
    b.expect_silence().await;
}
