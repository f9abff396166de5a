//! The connect-proxy authenticator against a real HTTP backend on a loopback port.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use crate::https::{serve_https, TestCa};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use sealcast::auth::proxy::{ConnectProxy, ProxyError};
use sealcast::protocol::event::errors;
use sealcast::{HookError, RoomRequest, Server};
use serde_json::{json, Value};

/// The backend: `/{behaviour}` answers as the name says and counts its requests.
struct Backend {
    addr: std::net::SocketAddr,
    hits: Arc<AtomicUsize>,
}

async fn answer(
    State(hits): State<Arc<AtomicUsize>>,
    Path(how): Path<String>,
    Json(payload): Json<Value>,
) -> (StatusCode, String) {
    hits.fetch_add(1, Ordering::SeqCst);
    let user = payload["token"].as_str().unwrap_or_default().to_owned();
    match how.as_str() {
        "accept" => (
            StatusCode::OK,
            json!({"userId": user, "metadata": {"plan": "pro"}, "rooms": ["chat:*"]}).to_string(),
        ),
        "reject" => (StatusCode::UNAUTHORIZED, json!({"error": "bad session"}).to_string()),
        "forbidden" => (StatusCode::FORBIDDEN, String::new()),
        "teapot" => (StatusCode::IM_A_TEAPOT, String::new()),
        "unavailable" => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            (StatusCode::OK, json!({"userId": user}).to_string())
        }
        "malformed" => (StatusCode::OK, json!({"user": user}).to_string()),
        "huge" => (StatusCode::OK, format!("{{\"userId\":\"{}\"}}", "x".repeat(100 * 1024))),
        _ => (StatusCode::NOT_FOUND, String::new()),
    }
}

fn app(hits: &Arc<AtomicUsize>) -> Router {
    Router::new().route("/{how}", post(answer)).with_state(hits.clone())
}

impl Backend {
    async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        Self {
            addr: serve_http(app(&hits)).await,
            hits,
        }
    }

    fn proxy(&self, how: &str) -> ConnectProxy {
        ConnectProxy::new(&format!("http://{}/{how}", self.addr), Duration::from_millis(500)).unwrap()
    }

    async fn server(&self, how: &str) -> TestServer {
        TestServer::start(
            Server::builder()
                .require_encryption(false)
                .allow_client_publish(true)
                .authenticator(self.proxy(how))
                .room_validator(|req: RoomRequest| async move { Ok::<_, HookError>(req.rooms) }),
        )
        .await
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Authenticates and returns the error message and close code the client got.
async fn refusal(t: &TestServer) -> (String, u16) {
    let mut c = t.connect().await;
    c.send(json!({"event": "authenticate", "data": {"token": "alice"}}))
        .await;
    let (code, _, before) = c.expect_close().await;
    let message = before
        .iter()
        .find(|v| v["event"] == "error")
        .map(|v| v["data"]["message"].as_str().unwrap().to_owned())
        .unwrap_or_default();
    (message, code)
}

#[tokio::test]
async fn accepted_answer_sets_user_metadata_and_room_patterns() {
    let backend = Backend::start().await;
    let t = backend.server("accept").await;
    let (mut c, connected) = t.login("alice").await;
    assert_eq!(connected["userId"], "alice");
    assert_eq!(
        t.server.client(&id_of(&connected)).unwrap().metadata,
        json!({"plan": "pro"})
    );
    t.server.join_room(&id_of(&connected), "lobby").unwrap();
    c.send(json!({"event": "publish", "data": {"room": "lobby", "event": "hi"}}))
        .await;
    c.expect_error(errors::ROOM_NOT_ALLOWED).await;
}

/// What a client authenticating against a backend answering `how` gets, and how many requests the backend saw.
async fn outcome(how: &str) -> (&'static str, u16, usize) {
    let backend = Backend::start().await;
    let t = backend.server(how).await;
    let (message, code) = refusal(&t).await;
    tokio::time::sleep(QUIET).await;
    let message = [errors::AUTHENTICATION_FAILED, errors::AUTHENTICATION_ERROR]
        .into_iter()
        .find(|m| *m == message)
        .unwrap_or_else(|| panic!("unexpected error text {message:?}"));
    (message, code, backend.hits())
}

#[tokio::test]
async fn unauthorized_answer_is_a_rejection_asked_exactly_once() {
    assert_eq!(outcome("reject").await, (errors::AUTHENTICATION_FAILED, 4003, 1));
}

#[tokio::test]
async fn forbidden_answer_is_a_rejection_asked_exactly_once() {
    assert_eq!(outcome("forbidden").await, (errors::AUTHENTICATION_FAILED, 4003, 1));
}

#[tokio::test]
async fn other_client_error_is_an_authenticator_error_and_not_retried() {
    assert_eq!(outcome("teapot").await, (errors::AUTHENTICATION_ERROR, 4003, 1));
}

#[tokio::test]
async fn server_error_is_retried_once_then_an_authenticator_error() {
    assert_eq!(outcome("unavailable").await, (errors::AUTHENTICATION_ERROR, 4003, 2));
}

#[tokio::test]
async fn slow_backend_times_out_into_an_authentication_failure_close() {
    let started = std::time::Instant::now();
    assert_eq!(outcome("slow").await, (errors::AUTHENTICATION_ERROR, 4003, 1));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn malformed_answer_is_an_authenticator_error() {
    assert_eq!(outcome("malformed").await, (errors::AUTHENTICATION_ERROR, 4003, 1));
}

#[tokio::test]
async fn oversized_answer_is_an_authenticator_error() {
    assert_eq!(outcome("huge").await, (errors::AUTHENTICATION_ERROR, 4003, 1));
}

#[tokio::test]
async fn unreachable_backend_is_an_authenticator_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = ConnectProxy::new(&format!("http://127.0.0.1:{port}/auth"), Duration::from_millis(500)).unwrap();
    let mut payload = serde_json::Map::new();
    payload.insert("token".into(), json!("alice"));
    let err = proxy.authenticate(&payload).await.unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

/// A backend over https with a certificate from `ca`, and a proxy to its `/{how}` trusting `trusted` only.
async fn https_backend(ca: &TestCa, trusted: &TestCa, how: &str) -> (ConnectProxy, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = serve_https(app(&hits), ca).await;
    let proxy = ConnectProxy::new(&format!("https://{addr}/{how}"), Duration::from_secs(2))
        .unwrap()
        .tls_roots(trusted.roots());
    (proxy, hits)
}

fn https_server(proxy: ConnectProxy) -> sealcast::ServerBuilder {
    Server::builder()
        .require_encryption(false)
        .authenticator(proxy)
        .room_validator(|req: RoomRequest| async move { Ok::<_, HookError>(req.rooms) })
}

#[tokio::test]
async fn https_backend_is_asked_when_its_certificate_chains_to_the_configured_ca() {
    let ca = TestCa::new("sealcast proxy test CA");
    let (proxy, hits) = https_backend(&ca, &ca, "accept").await;
    let t = TestServer::start(https_server(proxy)).await;
    let (_c, connected) = t.login("alice").await;
    assert_eq!(connected["userId"], "alice");
    assert_eq!(
        t.server.client(&id_of(&connected)).unwrap().metadata,
        json!({"plan": "pro"})
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // 401 over https is still a rejection.
    let (reject, _) = https_backend(&ca, &ca, "reject").await;
    let t = TestServer::start(https_server(reject)).await;
    assert_eq!(refusal(&t).await, (errors::AUTHENTICATION_FAILED.to_owned(), 4003));
}

#[tokio::test]
async fn https_backend_with_a_certificate_of_another_ca_is_an_authenticator_error_never_sent_the_payload() {
    let ca = TestCa::new("sealcast proxy test CA");
    let other = TestCa::new("another CA");
    let (proxy, hits) = https_backend(&ca, &other, "accept").await;
    let mut payload = serde_json::Map::new();
    payload.insert("token".into(), json!("alice"));
    match proxy.authenticate(&payload).await {
        Err(ProxyError::Tls(reason)) => assert!(reason.contains("UnknownIssuer"), "{reason}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    let t = TestServer::start(https_server(proxy)).await;
    assert_eq!(refusal(&t).await, (errors::AUTHENTICATION_ERROR.to_owned(), 4003));
    // Not retried, and the backend never saw a request.
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn https_backend_answering_too_much_is_an_authenticator_error() {
    let ca = TestCa::new("sealcast proxy test CA");
    let (proxy, hits) = https_backend(&ca, &ca, "huge").await;
    let mut payload = serde_json::Map::new();
    payload.insert("token".into(), json!("alice"));
    assert!(matches!(proxy.authenticate(&payload).await, Err(ProxyError::TooLarge)));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn https_backend_without_a_configured_ca_is_checked_against_the_system_roots() {
    let ca = TestCa::new("sealcast proxy test CA");
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = serve_https(app(&hits), &ca).await;
    // No `tls_roots`: the system's store, which does not hold a CA made a moment ago.
    let proxy = ConnectProxy::new(&format!("https://{addr}/accept"), Duration::from_secs(2)).unwrap();
    let mut payload = serde_json::Map::new();
    payload.insert("token".into(), json!("alice"));
    assert!(matches!(proxy.authenticate(&payload).await, Err(ProxyError::Tls(_))));
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn https_backend_whose_certificate_names_another_host_is_refused() {
    // Issued by the trusted CA, but for `localhost` only, while the URL says 127.0.0.1.
    let ca = TestCa::for_names("sealcast proxy test CA", &["localhost"]);
    let (proxy, hits) = https_backend(&ca, &ca, "accept").await;
    let mut payload = serde_json::Map::new();
    payload.insert("token".into(), json!("alice"));
    match proxy.authenticate(&payload).await {
        Err(ProxyError::Tls(reason)) => assert!(reason.contains("not valid for name"), "{reason}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}
