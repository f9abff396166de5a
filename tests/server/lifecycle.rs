//! Connection lifecycle: authentication, the `connected` event, timeouts, heartbeats, shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use sealcast::{ClientState, HookError};
use serde_json::json;

#[tokio::test]
async fn connected_carries_id_user_and_iso_time() {
    let t = TestServer::start(builder()).await;
    let (_c, data) = t.login("user:alice").await;
    let id = data["id"].as_str().unwrap();
    assert!(uuid::Uuid::try_parse(id).is_ok());
    assert_eq!(data["userId"], "alice");
    let time = data["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.contains('T') && time.len() == 24, "{time}");
    assert_eq!(t.server.client(id).unwrap().state, ClientState::Authenticated);
}

#[tokio::test]
async fn anonymous_client_has_no_user_id() {
    let t = TestServer::start(builder()).await;
    let (_c, data) = t.login("anon").await;
    assert!(data.get("userId").is_none());
}

#[tokio::test]
async fn events_before_authentication_are_refused() {
    let t = TestServer::start(builder()).await;
    let mut c = t.connect().await;
    c.send(json!({"event": "join", "data": {"rooms": ["a"]}})).await;
    c.expect_error("Not authenticated").await;
    c.send(json!({"event": "chat", "data": {}})).await;
    c.expect_error("Not authenticated").await;
}

#[tokio::test]
async fn second_authenticate_is_refused() {
    let t = TestServer::start(builder()).await;
    let (mut c, _) = t.login("user:a").await;
    c.send(json!({"event": "authenticate", "data": {"token": "user:b"}}))
        .await;
    c.expect_error("Already authenticated").await;
}

#[tokio::test]
async fn rejected_credentials_get_error_then_4003() {
    let t = TestServer::start(builder()).await;
    let mut c = t.connect().await;
    c.send(json!({"event": "authenticate", "data": {"token": "wrong"}}))
        .await;
    let (code, reason, before) = c.expect_close().await;
    assert_eq!((code, reason.as_str()), (4003, "Authentication failed"));
    assert_eq!(
        before,
        vec![json!({"event": "error", "data": {"message": "Authentication failed"}})]
    );
    assert_eq!(t.server.stats().auth_rejected, 1);
}

#[tokio::test]
async fn non_object_authenticate_payload_is_a_failed_authentication() {
    let t = TestServer::start(builder()).await;
    let mut c = t.connect().await;
    c.send(json!({"event": "authenticate", "data": "user:alice"})).await;
    let (code, _, before) = c.expect_close().await;
    assert_eq!(code, 4003);
    assert_eq!(before[0]["data"]["message"], "Authentication failed");
}

#[tokio::test]
async fn failing_or_panicking_authenticator_gives_authentication_error() {
    let t = TestServer::start(builder()).await;
    for token in ["error", "panic"] {
        let mut c = t.connect().await;
        c.send(json!({"event": "authenticate", "data": {"token": token}})).await;
        let (code, reason, before) = c.expect_close().await;
        assert_eq!((code, reason.as_str()), (4003, "Authentication failed"), "{token}");
        assert_eq!(before[0]["data"]["message"], "Authentication error", "{token}");
    }
    // The server is still serving.
    t.login("user:after").await;
}

#[tokio::test]
async fn a_user_id_no_instance_could_address_is_an_authentication_error() {
    let t = TestServer::start(builder()).await;
    let max = sealcast::protocol::envelope::MAX_TARGET_LEN;
    for user in [String::new(), "u".repeat(max + 1)] {
        let mut c = t.connect().await;
        c.send(json!({"event": "authenticate", "data": {"token": format!("user:{user}")}}))
            .await;
        let (code, _, before) = c.expect_close().await;
        assert_eq!(code, 4003, "{} bytes", user.len());
        assert_eq!(before[0]["data"]["message"], "Authentication error");
    }
    let longest = "u".repeat(max);
    let (_c, connected) = t.login(&format!("user:{longest}")).await;
    assert_eq!(connected["userId"], longest.as_str());
    assert_eq!(t.server.clients_by_user(&longest).len(), 1);
}

#[tokio::test]
async fn silent_client_is_closed_4001() {
    let t = TestServer::start(builder().auth_timeout(Duration::from_millis(200))).await;
    let mut c = t.connect().await;
    let (code, reason, _) = c.expect_close().await;
    assert_eq!((code, reason.as_str()), (4001, "Authentication timeout"));
}

#[tokio::test]
async fn hanging_authentication_is_closed_4001_after_three_windows() {
    let t = TestServer::start(builder().auth_timeout(Duration::from_millis(150))).await;
    let mut c = t.connect().await;
    let started = std::time::Instant::now();
    c.send(json!({"event": "authenticate", "data": {"token": "slow"}}))
        .await;
    let (code, _, _) = c.expect_close().await;
    assert_eq!(code, 4001);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed after {:?}",
        started.elapsed()
    );
}

/// The deadline is the client's: an `authenticate` that arrived in time but waited in the socket while the server
/// was busy (a reconnect storm) is honoured, not closed 4001.
#[tokio::test]
async fn an_authenticate_that_waited_while_the_server_was_busy_is_honoured() {
    let t = TestServer::start_on_own_thread(builder().auth_timeout(Duration::from_millis(300))).await;
    let mut waiting = t.connect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut staller = t.connect().await;
    staller
        .send(json!({"event": "authenticate", "data": {"token": "stall:700:s"}}))
        .await;
    // The server's only thread is now blocked in the authenticator, past `waiting`'s deadline.
    tokio::time::sleep(Duration::from_millis(100)).await;
    waiting
        .send(json!({"event": "authenticate", "data": {"token": "user:w"}}))
        .await;
    let connected = waiting.expect_event("connected").await;
    assert_eq!(connected["userId"], "w");
    assert_eq!(staller.expect_event("connected").await["userId"], "s");
}

#[tokio::test]
async fn heartbeats_before_authentication_do_not_extend_the_window() {
    let t = TestServer::start(builder().auth_timeout(Duration::from_millis(300))).await;
    let mut c = t.connect().await;
    for _ in 0..4 {
        c.send(json!({"event": "heartbeat"})).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _, _) = c.expect_close().await;
    assert_eq!(code, 4001);
}

#[tokio::test]
async fn silent_authenticated_client_is_closed_4002() {
    let b = builder()
        .heartbeat_interval(Duration::from_millis(100))
        .heartbeat_timeout(Duration::from_millis(300));
    let t = TestServer::start(b).await;
    let (mut c, _) = t.login("user:a").await;
    let (code, reason, _) = c.expect_close().await;
    assert_eq!((code, reason.as_str()), (4002, "Heartbeat timeout"));
}

#[tokio::test]
async fn heartbeats_keep_an_authenticated_client_alive() {
    let b = builder()
        .heartbeat_interval(Duration::from_millis(100))
        .heartbeat_timeout(Duration::from_millis(400));
    let t = TestServer::start(b).await;
    let (mut c, data) = t.login("user:a").await;
    for _ in 0..10 {
        c.send(json!({"event": "heartbeat"})).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(t.server.client(data["id"].as_str().unwrap()).is_some());
}

#[tokio::test]
async fn invalid_frames_do_not_count_as_activity() {
    let b = builder()
        .heartbeat_interval(Duration::from_millis(100))
        .heartbeat_timeout(Duration::from_millis(300));
    let t = TestServer::start(b).await;
    let (mut c, _) = t.login("user:a").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        assert!(std::time::Instant::now() < deadline, "never closed");
        c.send_text("not json").await;
        match c.next_text(WAIT).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(Ended::Closed(code, _)) => {
                assert_eq!(code, 4002);
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[tokio::test]
async fn shutdown_closes_everyone_1001_and_runs_disconnect_hooks() {
    let gone = Arc::new(AtomicUsize::new(0));
    let g = gone.clone();
    let b = builder().on_disconnected(move |ev: sealcast::Disconnected| {
        let g = g.clone();
        async move {
            assert_eq!(ev.code, Some(1001));
            g.fetch_add(1, Ordering::SeqCst);
            if ev.user_id.as_deref() == Some("boom") {
                panic!("disconnect hook panics");
            }
            Ok::<_, HookError>(())
        }
    });
    let t = TestServer::start(b).await;
    let (mut a, _) = t.login("user:a").await;
    let (mut boom, _) = t.login("user:boom").await;
    let mut pre = t.connect().await;
    let started = std::time::Instant::now();
    t.server.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    for c in [&mut a, &mut boom, &mut pre] {
        let (code, reason, _) = c.expect_close().await;
        assert_eq!((code, reason.as_str()), (1001, "Server shutting down"));
    }
    assert_eq!(gone.load(Ordering::SeqCst), 3);
    assert!(t.server.clients().is_empty());
    assert!(!t.server.is_ready());
    assert!(
        tokio_tungstenite::connect_async(t.url()).await.is_err(),
        "new upgrades refused"
    );
}

#[tokio::test]
async fn panicking_on_connected_hook_keeps_the_client_connected() {
    let b = builder().on_connected(|_: sealcast::Connected| async move {
        if true {
            panic!("on_connected panics");
        }
        Ok::<_, HookError>(())
    });
    let t = TestServer::start(b).await;
    let (mut c, data) = t.login("user:a").await;
    c.expect_silence().await;
    let id = data["id"].as_str().unwrap();
    t.server.send_to_client(id, "still", &json!(1)).unwrap();
    assert_eq!(c.expect_event("still").await, json!(1));
    assert_eq!(t.server.stats().hook_failures, 1);
}

#[tokio::test]
async fn disconnect_removes_the_client_from_every_index() {
    let t = TestServer::start(builder()).await;
    let (c, data) = t.login("user:a").await;
    let id = data["id"].as_str().unwrap().to_owned();
    assert_eq!(t.server.clients_by_user("a").len(), 1);
    assert_eq!(t.server.clients_by_room("ws-default").len(), 1);
    c.close().await;
    eventually("client removed", || t.server.client(&id).is_none()).await;
    assert!(t.server.clients_by_user("a").is_empty());
    assert!(t.server.clients_by_room("ws-default").is_empty());
    assert!(t.server.clients_by_room(&id).is_empty());
}

#[tokio::test]
async fn expired_credentials_close_1008() {
    let t = TestServer::start(builder()).await;
    let (mut c, _) = t.login("expiring:a:300").await;
    let (code, reason, _) = c.expect_close().await;
    assert_eq!((code, reason.as_str()), (1008, "Policy violation"));
}

#[tokio::test]
async fn refreshing_credentials_extends_the_session() {
    let t = TestServer::start(builder()).await;
    let (mut c, data) = t.login("expiring:a:400").await;
    c.send(json!({"event": "refresh", "data": {"token": "expiring:a:60000"}}))
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    t.server
        .send_to_client(data["id"].as_str().unwrap(), "still", &1)
        .unwrap();
    assert_eq!(c.expect_event("still").await, json!(1));
}

#[tokio::test]
async fn a_refresh_for_another_user_is_refused_and_changes_nothing() {
    let t = TestServer::start(builder()).await;
    let (mut c, data) = t.login("user:a").await;
    c.send(json!({"event": "refresh", "data": {"token": "user:b"}})).await;
    c.expect_error("Authentication failed").await;
    c.send(json!({"event": "refresh", "data": "nope"})).await;
    c.expect_error("Invalid message format").await;
    assert_eq!(
        t.server
            .client(data["id"].as_str().unwrap())
            .unwrap()
            .user_id
            .as_deref(),
        Some("a")
    );
}
