//! The Rust client's reconnect policy (`ReconnectingClient`, `reconnect_policy`) and token refresh against a
//! real server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sealcast::auth::{mint, JwtAuthenticator};
use sealcast::client::{ClientConfig, ClientError, Event, ReconnectingClient};
use sealcast::{CloseCode, Server, ServerBuilder};
use tokio::time::timeout;

use crate::common::enc::{enc_builder, test_key};
use crate::common::{TestServer, QUIET, WAIT};

const SECRET: &[u8] = b"client-reconnect-test-secret-of-32-bytes";

/// A pinned config with a short backoff, so tests wait tens of milliseconds rather than seconds.
fn config(url: String, token: &str) -> ClientConfig {
    ClientConfig::new(url, token)
        .pin(test_key().pinned())
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
}

/// `config` with a token provider minting through `mint_one`; `calls` counts its calls.
fn with_provider(
    config: ClientConfig,
    calls: &Arc<AtomicUsize>,
    mint_one: impl Fn() -> String + Send + Sync + 'static,
) -> ClientConfig {
    let calls = Arc::clone(calls);
    config.token_provider(move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<_, ()>(mint_one()))
    })
}

/// The next application message, failing on a reconnect.
async fn next_message(c: &mut ReconnectingClient) -> sealcast::client::Message {
    match timeout(WAIT, c.recv()).await.expect("an event in time") {
        Ok(Event::Message(m)) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Sends to `room` until the client receives it (the join after a reconnect is not acknowledged).
async fn room_reaches(server: &Server, c: &mut ReconnectingClient, room: &str) {
    for _ in 0..50 {
        server.send_to_room(room, "probe", &1, &[]).expect("send");
        if let Ok(Ok(Event::Message(m))) = timeout(Duration::from_millis(100), c.recv()).await {
            assert_eq!(m.event, "probe");
            return;
        }
    }
    panic!("the room never reached the client");
}

#[tokio::test]
async fn an_operator_disconnect_with_a_token_provider_reconnects_once_with_a_fresh_token() {
    let t = TestServer::start(enc_builder()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let cfg = with_provider(config(t.url(), ""), &calls, || "user:a".to_owned());
    let mut c = ReconnectingClient::connect(cfg).await.expect("connected");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no token given: the provider supplies the first"
    );
    c.join(&["lobby"]).await.expect("join");
    let first = c.client().expect("session").id().to_owned();
    assert!(t.server.disconnect(&first, CloseCode::PolicyViolation));
    let ev = timeout(WAIT, c.recv()).await.expect("in time").expect("reconnected");
    assert!(matches!(ev, Event::Reconnected { close_code: 1008 }), "{ev:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "a fresh token for the retry");
    assert_ne!(c.client().expect("session").id(), first);
    room_reaches(&t.server, &mut c, "lobby").await;
}

#[tokio::test]
async fn an_operator_disconnect_without_a_token_provider_stops_the_client() {
    let t = TestServer::start(enc_builder()).await;
    let mut c = ReconnectingClient::connect(config(t.url(), "user:a"))
        .await
        .expect("connected");
    let first = c.client().expect("session").id().to_owned();
    assert!(t.server.disconnect(&first, CloseCode::PolicyViolation));
    let err = timeout(WAIT, c.recv()).await.expect("in time").unwrap_err();
    assert!(matches!(err, ClientError::Closed { code: 1008, .. }), "{err:?}");
    tokio::time::sleep(QUIET).await;
    assert!(t.server.clients_by_user("a").is_empty(), "no reconnect");
    assert!(matches!(c.recv().await, Err(ClientError::Stopped)));
}

#[tokio::test]
async fn too_many_sessions_spends_the_one_fresh_token_retry_then_stops() {
    let t = TestServer::start(enc_builder().max_sessions_per_user(1)).await;
    let _holder = ReconnectingClient::connect(config(t.url(), "user:a"))
        .await
        .expect("connected");
    let calls = Arc::new(AtomicUsize::new(0));
    let cfg = with_provider(config(t.url(), "user:a"), &calls, || "user:a".to_owned());
    let err = ReconnectingClient::connect(cfg).await.unwrap_err();
    match err {
        ClientError::Closed { code, error, .. } => {
            assert_eq!(code, 1008);
            assert_eq!(error.as_deref(), Some("Too many sessions"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one fresh token, for the one retry");
}

/// Serves `builder` on `addr` until the server shuts down; the task ends once the listener is released.
async fn serve_on(addr: SocketAddr, builder: ServerBuilder) -> (Server, tokio::task::JoinHandle<()>) {
    let server = builder.build().expect("valid config");
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let (app, stopper) = (server.router(), server.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopper.stopped().await })
            .await;
    });
    (server, task)
}

#[tokio::test]
async fn a_server_restart_is_retried_with_backoff_and_rooms_are_joined_again() {
    let addr = {
        let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        probe.local_addr().expect("addr")
    };
    let (old, task) = serve_on(addr, enc_builder()).await;
    let url = format!("ws://{addr}/ws");
    let mut c = ReconnectingClient::connect(config(url, "user:a"))
        .await
        .expect("connected");
    c.join(&["lobby"]).await.expect("join");
    let first = c.client().expect("session").id().to_owned();
    old.shutdown().await;
    task.await.expect("serve task");
    // Refused attempts while nothing listens, then the new server on the same address.
    let restart = async {
        tokio::time::sleep(QUIET).await;
        serve_on(addr, enc_builder()).await
    };
    let (ev, (new, _task)) = tokio::join!(timeout(WAIT, c.recv()), restart);
    let ev = ev.expect("in time").expect("reconnected");
    assert!(matches!(ev, Event::Reconnected { close_code: 1001 }), "{ev:?}");
    assert_ne!(c.client().expect("session").id(), first);
    room_reaches(&new, &mut c, "lobby").await;
}

#[tokio::test]
async fn a_refresh_before_expiry_keeps_the_session_past_the_first_tokens_exp() {
    let t = TestServer::start(enc_builder().authenticator(JwtAuthenticator::hs256(SECRET))).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let cfg = with_provider(config(t.url(), ""), &calls, || {
        mint(SECRET, "r", Duration::from_secs(2), None).expect("mint")
    });
    let mut c = ReconnectingClient::connect(cfg).await.expect("connected");
    let first = c.client().expect("session").id().to_owned();
    // The first token's exp is at most 2 s away; the server closes 1008 then unless the client refreshed.
    let past_exp = tokio::time::Instant::now() + Duration::from_millis(3500);
    if let Ok(ev) = tokio::time::timeout_at(past_exp, c.recv()).await {
        panic!("nothing should happen while refreshing: {ev:?}");
    }
    assert!(calls.load(Ordering::SeqCst) >= 2, "refreshed with a new token");
    assert_eq!(c.client().expect("session").id(), first);
    t.server.send_to_user("r", "still-here", &1).expect("send");
    assert_eq!(next_message(&mut c).await.event, "still-here");
}

#[tokio::test]
async fn a_reconnect_recovers_the_messages_missed_in_a_history_room() {
    let b = enc_builder().history_rooms(vec!["chat:*".into()]);
    let t = TestServer::start(b).await;
    let mut c = ReconnectingClient::connect(config(t.url(), "user:a"))
        .await
        .expect("connect");
    let joined = c.join(&["chat:1"]).await.expect("join");
    assert_eq!(joined.rooms.first().and_then(|r| r.offset), Some(0));
    t.server.send_to_room("chat:1", "m", &0, &[]).unwrap();
    let first = next_message(&mut c).await;
    assert_eq!(first.position.as_ref().map(|(_, p)| p.offset), Some(1));
    let id = c.client().expect("connected").id().to_owned();
    assert!(t.server.disconnect(&id, CloseCode::InternalError));
    for n in 1..=20 {
        t.server.send_to_room("chat:1", "m", &n, &[]).unwrap();
    }
    match timeout(WAIT, c.recv()).await.expect("in time") {
        Ok(Event::Reconnected { close_code }) => assert_eq!(close_code, 1011),
        other => panic!("expected a reconnect, got {other:?}"),
    }
    let room = c.last_joined().and_then(|j| j.rooms.first()).expect("re-joined");
    assert_eq!(room.recovered, Some(true));
    let mut got = Vec::new();
    for _ in 1..=20 {
        let m = next_message(&mut c).await;
        got.push(m.data.as_u64().expect("n"));
    }
    assert_eq!(got, (1..=20).collect::<Vec<_>>(), "every missed message, in order");
    assert_eq!(c.position("chat:1").map(|p| p.offset), Some(21));
    t.server.send_to_room("chat:1", "m", &21, &[]).unwrap();
    assert_eq!(next_message(&mut c).await.data, serde_json::json!(21));
}

#[tokio::test]
async fn publish_resolves_on_the_ack_and_a_refusal_is_an_error() {
    let t = TestServer::start(
        enc_builder()
            .allow_client_publish(true)
            .history_rooms(vec!["chat:*".into()]),
    )
    .await;
    let mut c = ReconnectingClient::connect(config(t.url(), "user:a"))
        .await
        .expect("connect");
    c.join(&["chat:1"]).await.expect("join");
    let ack = c.publish("chat:1", "m", &1).await.expect("acknowledged");
    assert_eq!(ack.offset, Some(1));
    let again = c.publish_with_id("chat:1", "m", &1, "same").await.expect("ack");
    let retry = c.publish_with_id("chat:1", "m", &1, "same").await.expect("ack");
    assert_eq!(
        (again.offset, retry.offset),
        (Some(2), Some(2)),
        "a retry keeps its offset"
    );
    let refused = c.publish("elsewhere", "m", &1).await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Refused(m) if m == "Not a member of room"),
        "{refused:?}"
    );
    let joined = c.join(&["ws:nope", "chat:2"]).await.expect("join");
    assert_eq!(
        joined.refused.first().map(|r| r.reason.as_str()),
        Some("Invalid room name")
    );
    assert_eq!(joined.rooms.first().map(|r| r.room.as_str()), Some("chat:2"));
}
