//! Several server instances in one process sharing a LocalBus: cross-instance addressing.

use crate::common::*;
use sealcast::LocalBus;
use serde_json::json;

async fn pair() -> (TestServer, TestServer) {
    let bus = LocalBus::new();
    let a = TestServer::start(builder().bus(bus.clone())).await;
    let b = TestServer::start(builder().bus(bus)).await;
    (a, b)
}

#[tokio::test]
async fn room_user_client_and_broadcast_cross_instances() {
    let (s1, s2) = pair().await;
    let (mut on1, d1) = s1.login("user:alice").await;
    let (mut on2, _) = s2.login("user:alice").await;
    s1.server.send_to_user("alice", "u", &1).unwrap();
    assert_eq!(on1.expect_event("u").await, json!(1));
    assert_eq!(on2.expect_event("u").await, json!(1));
    s2.server.send_to_room("ws-default", "r", &2, &[]).unwrap();
    assert_eq!(on1.expect_event("r").await, json!(2));
    assert_eq!(on2.expect_event("r").await, json!(2));
    s2.server.send_to_client(d1["id"].as_str().unwrap(), "c", &3).unwrap();
    assert_eq!(on1.expect_event("c").await, json!(3));
    s1.server.broadcast("b", &4, &[d1["id"].as_str().unwrap()]).unwrap();
    assert_eq!(on2.expect_event("b").await, json!(4));
    on1.expect_silence().await;
    on2.expect_silence().await;
}

#[tokio::test]
async fn send_to_a_remote_client_id_reaches_it_once() {
    let (s1, s2) = pair().await;
    let (mut on2, d2) = s2.login("user:bob").await;
    s1.server.send(Some(d2["id"].as_str().unwrap()), "dm", &"hi").unwrap();
    assert_eq!(on2.recv().await, json!({"event": "dm", "data": "hi"}));
    on2.expect_silence().await;
}

#[tokio::test]
async fn client_publish_crosses_instances() {
    let bus = LocalBus::new();
    let s1 = TestServer::start(builder().bus(bus.clone()).allow_client_publish(true)).await;
    let s2 = TestServer::start(builder().bus(bus)).await;
    let (mut a, _) = s1.login("user:a").await;
    let (mut b, _) = s2.login("user:b").await;
    a.send(json!({"event": "publish", "data": {"room": "ws-default", "event": "chat", "data": "x"}}))
        .await;
    assert_eq!(b.recv().await, json!({"event": "chat", "data": "x"}));
    a.expect_silence().await;
}

#[tokio::test]
async fn hostile_envelopes_are_dropped_and_counted() {
    let s = TestServer::start(builder()).await;
    let (mut c, _) = s.login("user:a").await;
    let inbox = s.server.inbox();
    for bad in [
        &b"not json"[..],
        br#"{"serverId":"emitter","type":"room","target":"ws-default","event":"connected","data":{}}"#,
        br#"{"serverId":"emitter","type":"nope","target":"ws-default","event":"e","data":{}}"#,
        br#"{"serverId":1,"type":"broadcast","event":"e"}"#,
    ] {
        assert!(inbox.deliver_bytes(bad).is_err());
    }
    assert_eq!(s.server.stats().envelopes_dropped, 4);
    c.expect_silence().await;
    inbox
        .deliver_bytes(br#"{"serverId":"emitter","type":"room","target":"ws-default","event":"e","data":{"k":1}}"#)
        .unwrap();
    assert_eq!(c.recv().await, json!({"event": "e", "data": {"k": 1}}));
}
