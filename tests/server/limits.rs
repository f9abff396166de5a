//! Abuse limits: connection caps and rates (HTTP refusals before the upgrade; under `Server::serve` from accept,
//! with a time limit on the request head), message and join rates (4008), authentication and handshake capacity
//! (1013), sessions per user (1008), Origin allow-list (403).

use std::time::Duration;

use crate::common::*;
use sealcast::{HandshakeOutcome, HandshakeRequest, HookError, Rate};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

/// The HTTP status of a refused upgrade, or `None` if the upgrade succeeded.
async fn upgrade_status(url: &str, origin: Option<&str>) -> Option<u16> {
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => None,
        Err(WsError::Http(resp)) => Some(resp.status().as_u16()),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn origins_outside_the_allow_list_get_403() {
    let t = TestServer::start(builder().allowed_origins(vec!["https://app.example".into()])).await;
    assert_eq!(upgrade_status(&t.url(), Some("https://evil.example")).await, Some(403));
    assert_eq!(upgrade_status(&t.url(), Some("https://app.example")).await, None);
    assert_eq!(
        upgrade_status(&t.url(), None).await,
        None,
        "non-browser clients send no Origin"
    );
}

#[tokio::test]
async fn the_global_connection_cap_answers_503() {
    let t = TestServer::start(builder().max_connections(2)).await;
    let _a = t.connect().await;
    let _b = t.connect().await;
    assert_eq!(upgrade_status(&t.url(), None).await, Some(503));
}

#[tokio::test]
async fn per_ip_caps_and_rates_answer_429() {
    let t = TestServer::start_with_peer_addrs(builder().max_connections_per_ip(2)).await;
    let a = t.connect().await;
    let _b = t.connect().await;
    assert_eq!(upgrade_status(&t.url(), None).await, Some(429));
    a.close().await;
    eventually_async(|| async { upgrade_status(&t.url(), None).await.is_none() }).await;

    let t = TestServer::start_with_peer_addrs(builder().connection_rate_per_ip(Rate::new(1.0, 3.0))).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(upgrade_status(&t.url(), None).await);
    }
    assert_eq!(statuses, vec![None, None, None, Some(429), Some(429)]);
}

async fn eventually_async<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition never held");
}

#[tokio::test]
async fn flooding_messages_closes_4008_and_others_are_unaffected() {
    let t = TestServer::start(builder().message_rate(Rate::new(10.0, 10.0))).await;
    let (mut calm, _) = t.login("user:calm").await;
    let (mut flood, _) = t.login("user:flood").await;
    for _ in 0..30 {
        flood.send(json!({"event": "heartbeat"})).await;
    }
    let (code, reason, _) = flood.expect_close().await;
    assert_eq!((code, reason.as_str()), (4008, "Rate limited"));
    t.server.broadcast("ok", &1, &[]).unwrap();
    calm.expect_event("ok").await;
}

#[tokio::test]
async fn join_flooding_closes_4008() {
    let t = TestServer::start(builder().join_rate(Rate::new(1.0, 3.0))).await;
    let (mut c, _) = t.login("user:a").await;
    for i in 0..6 {
        c.send(json!({"event": "join", "data": {"rooms": [format!("r{i}")]}}))
            .await;
    }
    assert_eq!(c.expect_close().await.0, 4008);
}

/// Connections whose authenticator or handshake is running.
fn authenticating(t: &TestServer) -> usize {
    let clients = t.server.clients();
    clients
        .iter()
        .filter(|c| c.state == sealcast::ClientState::Authenticating)
        .count()
}

/// A new connection that sent `authenticate` with `token`.
async fn authenticate(t: &TestServer, token: &str) -> Client {
    let mut c = t.connect().await;
    c.send(json!({"event": "authenticate", "data": {"token": token}})).await;
    c
}

/// The close code and reason a new connection authenticating as `user:late` gets.
async fn late_close(t: &TestServer) -> (u16, String) {
    let (code, reason, _) = authenticate(t, "user:late").await.expect_close().await;
    (code, reason)
}

/// A plaintext handshake that never finishes for the user `slowhs`.
async fn handshake_hanging_for_slowhs(req: HandshakeRequest) -> Result<HandshakeOutcome, HookError> {
    if req.user_id.as_deref() == Some("slowhs") {
        std::future::pending::<()>().await;
    }
    Ok(HandshakeOutcome::Plaintext)
}

/// A server with one handshake slot, held for good by the user `slowhs`.
async fn one_handshake_slot() -> TestServer {
    let b = builder()
        .handshake(handshake_hanging_for_slowhs)
        .max_concurrent_handshakes(1)
        .handshake_wait(Duration::from_millis(100));
    TestServer::start(b).await
}

#[tokio::test]
async fn exhausted_handshake_capacity_closes_1013() {
    let t = one_handshake_slot().await;
    let _slow = authenticate(&t, "user:slowhs").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(late_close(&t).await, (1013, "Try again later".to_owned()));
}

/// A server with one authentication slot.
async fn one_authentication_slot() -> TestServer {
    let b = builder()
        .max_concurrent_authentications(1)
        .handshake_wait(Duration::from_millis(100));
    TestServer::start(b).await
}

/// A connection whose authenticator never answers, once it holds the server's only authentication slot.
async fn hold_the_authentication_slot(t: &TestServer) -> Client {
    let slow = authenticate(t, "slow").await;
    eventually("the slow authentication holds the slot", || authenticating(t) == 1).await;
    slow
}

#[tokio::test]
async fn exhausted_authentication_capacity_closes_1013() {
    let t = one_authentication_slot().await;
    let _slow = hold_the_authentication_slot(&t).await;
    assert_eq!(late_close(&t).await, (1013, "Try again later".to_owned()));
}

#[tokio::test]
async fn slow_authenticators_do_not_take_handshake_slots() {
    let t = one_handshake_slot().await;
    let mut bogus = Vec::new();
    for _ in 0..5 {
        bogus.push(authenticate(&t, "slow").await);
    }
    eventually("every slow authentication is running", || authenticating(&t) == 5).await;
    let (_ok, connected) = t.login("user:ok").await;
    assert!(connected["id"].is_string());
}

#[tokio::test]
async fn a_refresh_without_an_authentication_slot_keeps_the_session() {
    let t = one_authentication_slot().await;
    let (mut c, _) = t.login("user:a").await;
    let _slow = hold_the_authentication_slot(&t).await;
    c.send(json!({"event": "refresh", "data": {"token": "user:a"}})).await;
    c.expect_error("Authentication error").await;
    t.server.broadcast("still-here", &1, &[]).unwrap();
    c.expect_event("still-here").await;
}

#[tokio::test]
async fn sessions_beyond_the_per_user_cap_close_1008() {
    let t = TestServer::start(builder().max_sessions_per_user(2)).await;
    let (_a, _) = t.login("user:u").await;
    let (_b, _) = t.login("user:u").await;
    let mut c = t.connect().await;
    c.send(json!({"event": "authenticate", "data": {"token": "user:u"}}))
        .await;
    let (code, _, before) = c.expect_close().await;
    assert_eq!(code, 1008);
    assert_eq!(
        before,
        vec![json!({"event": "error", "data": {"message": "Too many sessions"}})]
    );
    t.login("user:other").await;
}

/// A raw socket that sent the start of a request head and nothing more.
async fn half_open(t: &TestServer) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    s
}

#[tokio::test]
async fn a_request_head_dribbled_slowly_is_closed_after_the_request_head_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestServer::start_served(builder().request_head_timeout(Duration::from_millis(1500))).await;
    let (mut rx, mut tx) = tokio::net::TcpStream::connect(t.addr).await.unwrap().into_split();
    tx.write_all(b"GET /ws HTTP/1.1\r\n").await.unwrap();
    // A header line every second, for far longer than the test waits for the close.
    let dribbler = tokio::spawn(async move {
        for i in 0..60 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if tx.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, rx.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the socket is still open after {WAIT:?}");
    dribbler.abort();
    assert!(!String::from_utf8_lossy(&rest).contains(" 101 "), "it was upgraded");
    assert!(t.server.clients().is_empty());
}

/// A server `b` builds, served by `Server::serve`, with two half-open sockets; and what an upgrade gets then.
async fn beside_two_half_open(b: sealcast::ServerBuilder) -> (TestServer, Vec<tokio::net::TcpStream>, Option<u16>) {
    let t = TestServer::start_served(b).await;
    let sockets = vec![half_open(&t).await, half_open(&t).await];
    let status = upgrade_status(&t.url(), None).await;
    (t, sockets, status)
}

#[tokio::test]
async fn half_open_sockets_count_against_max_connections_per_ip() {
    let (t, mut sockets, status) = beside_two_half_open(builder().max_connections_per_ip(2)).await;
    assert_eq!(status, Some(429));
    sockets.pop();
    eventually_async(|| async { upgrade_status(&t.url(), None).await.is_none() }).await;
}

#[tokio::test]
async fn half_open_sockets_count_against_max_connections() {
    let (_t, _sockets, status) = beside_two_half_open(builder().max_connections(2)).await;
    assert_eq!(status, Some(503));
}

#[tokio::test]
async fn a_served_websocket_holds_one_slot_from_accept_to_close() {
    let t = TestServer::start_served(builder().max_connections_per_ip(1)).await;
    let (c, _) = t.login("user:a").await;
    assert_eq!(upgrade_status(&t.url(), None).await, Some(429));
    c.close().await;
    eventually_async(|| async { upgrade_status(&t.url(), None).await.is_none() }).await;
}
