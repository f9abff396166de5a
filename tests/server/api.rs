//! The HTTP API (`/api/publish`, `/api/disconnect`) served by one instance, reaching clients on another
//! through the bus.

use crate::common::*;
use sealcast::LocalBus;
use serde_json::{json, Value};

const KEY: &str = "api-key-123";

/// Two instances on one bus; the first also serves the API on its own port.
async fn fleet() -> (TestServer, TestServer, std::net::SocketAddr) {
    let bus = LocalBus::new();
    let s1 = TestServer::start(builder().bus(bus.clone())).await;
    let s2 = TestServer::start(builder().bus(bus)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let app: axum::Router = s1.server.api_router(KEY);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (s1, s2, api)
}

async fn call(addr: std::net::SocketAddr, path: &str, body: Value) -> (u16, Value) {
    http_post(addr, path, Some(&format!("Bearer {KEY}")), &body.to_string()).await
}

#[tokio::test]
async fn publish_reaches_clients_on_every_instance_by_client_user_room_and_broadcast() {
    let (_s1, s2, api) = fleet().await;
    let (mut a, da) = s2.login("user:alice").await;
    let (mut b, db) = s2.login("user:bob").await;
    let accepted = (202, json!({"status": "accepted"}));
    let req = json!({"client": id_of(&da), "event": "dm", "data": {"n": 1}});
    assert_eq!(call(api, "/api/publish", req).await, accepted);
    assert_eq!(a.expect_event("dm").await, json!({"n": 1}));
    let req = json!({"user": "bob", "event": "u", "data": 2});
    assert_eq!(call(api, "/api/publish", req).await, accepted);
    assert_eq!(b.expect_event("u").await, json!(2));
    let req = json!({"room": "ws-default", "event": "r", "data": 3, "exclude": [id_of(&db)]});
    assert_eq!(call(api, "/api/publish", req).await, accepted);
    assert_eq!(a.expect_event("r").await, json!(3));
    assert_eq!(
        call(api, "/api/publish", json!({"broadcast": true, "event": "b"})).await,
        accepted
    );
    assert_eq!(a.expect_event("b").await, Value::Null);
    assert_eq!(b.expect_event("b").await, Value::Null);
    a.expect_silence().await;
    b.expect_silence().await;
}

#[tokio::test]
async fn client_ids_are_read_in_any_uuid_form_and_exclude_ignores_other_text() {
    let (_s1, s2, api) = fleet().await;
    let (mut a, da) = s2.login("user:alice").await;
    let (mut b, db) = s2.login("user:bob").await;
    let upper = id_of(&da).to_uppercase();
    let req = json!({"client": upper, "event": "dm", "data": 1});
    assert_eq!(call(api, "/api/publish", req).await.0, 202);
    assert_eq!(a.expect_event("dm").await, json!(1));
    let req = json!({"room": "ws-default", "event": "r", "exclude": ["junk", "", id_of(&db).to_uppercase()]});
    assert_eq!(call(api, "/api/publish", req).await.0, 202);
    assert_eq!(a.expect_event("r").await, Value::Null);
    a.expect_silence().await;
    b.expect_silence().await;
}

#[tokio::test]
async fn disconnect_closes_a_client_or_every_session_of_a_user_on_every_instance_with_1008() {
    let (s1, s2, api) = fleet().await;
    let (mut a1, _) = s1.login("user:alice").await;
    let (mut a2, _) = s2.login("user:alice").await;
    let (mut b, db) = s2.login("user:bob").await;
    let (mut other, _) = s2.login("user:carol").await;
    assert_eq!(call(api, "/api/disconnect", json!({"user": "alice"})).await.0, 202);
    assert_eq!(a1.expect_close().await.0, 1008);
    assert_eq!(a2.expect_close().await.0, 1008);
    assert_eq!(call(api, "/api/disconnect", json!({"client": id_of(&db)})).await.0, 202);
    assert_eq!(b.expect_close().await.0, 1008);
    other.expect_silence().await;
}

#[tokio::test]
async fn bad_requests_get_stable_error_codes() {
    let (_s1, s2, api) = fleet().await;
    let (mut a, _) = s2.login("user:alice").await;
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or_default().to_owned();
    let body = json!({"broadcast": true, "event": "x"}).to_string();
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer "),
        Some(KEY),
        Some("Basic api-key-123"),
    ] {
        let (status, v) = http_post(api, "/api/publish", auth, &body).await;
        assert_eq!((status, code(&v)), (401, "unauthorized".into()), "{auth:?}");
    }
    let invalid = [
        json!({"user": "a", "room": "r", "event": "x"}),
        json!({"event": "x"}),
        json!({"room": "", "event": "x"}),
        json!({"room": "r", "event": "x", "extra": 1}),
        json!({"room": "r", "event": ""}),
        json!({"client": "not-a-client-id", "event": "x"}),
        json!({"user": "u".repeat(1025), "event": "x"}),
        json!({"room": "r".repeat(1025), "event": "x"}),
    ];
    let reserved = [
        json!({"room": "r", "event": "connected"}),
        json!({"broadcast": true, "event": "encrypted"}),
    ];
    let bad_disconnects = [
        json!({"room": "r"}),
        json!({"user": "a", "client": "b"}),
        json!({"client": "b"}),
        json!({"user": ""}),
    ];
    let cases = (invalid.iter().map(|r| ("/api/publish", r, "invalid_request")))
        .chain(reserved.iter().map(|r| ("/api/publish", r, "reserved_event")))
        .chain(
            bad_disconnects
                .iter()
                .map(|r| ("/api/disconnect", r, "invalid_request")),
        );
    for (path, req, want) in cases {
        let (got, v) = call(api, path, req.clone()).await;
        assert_eq!((got, code(&v)), (400, want.to_owned()), "{req}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    let (_, v) = call(api, "/api/publish", json!({"client": "c1", "event": "x"})).await;
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("client id"), "{v}");
    let (status, v) = http_post(api, "/api/publish", Some(&format!("Bearer {KEY}")), "{not json").await;
    assert_eq!((status, code(&v)), (400, "invalid_request".into()));
    let big = json!({"broadcast": true, "event": "x", "data": "y".repeat(sealcast::api::API_BODY_LIMIT)});
    let (status, v) = call(api, "/api/publish", big).await;
    assert_eq!((status, code(&v)), (413, "payload_too_large".into()));
    a.expect_silence().await;
}
