//! Embedding the server in an axum app: authenticating from the upgrade request (the app's session cookie,
//! the peer address, `Origin`, the query string), merging the router into an app with its own state, the
//! warning when the app is served without peer addresses, and the listener `Server::listen` makes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::get;
use sealcast::{AuthRequest, HookError, Identity, UpgradeRequest};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;

/// A WebSocket client whose upgrade request carries `headers`.
async fn connect_with(url: &str, headers: &[(&'static str, &str)]) -> Client {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    Client { ws }
}

/// The app's sessions: cookie value → user.
async fn cookie_auth(req: AuthRequest) -> Result<Option<Identity>, HookError> {
    let session = req.upgrade.as_deref().and_then(|u| u.cookie("session"));
    Ok(match session {
        Some("s-alice") => Some(Identity::user("alice")),
        _ => None,
    })
}

#[tokio::test]
async fn an_authenticator_authenticates_from_the_session_cookie() {
    let t = TestServer::start(builder().authenticator(cookie_auth)).await;
    let mut c = connect_with(&t.url(), &[("cookie", "theme=dark; session=s-alice")]).await;
    c.send(json!({"event": "authenticate", "data": {}})).await;
    assert_eq!(c.expect_event("connected").await["userId"], "alice");
}

#[tokio::test]
async fn an_unknown_session_cookie_is_refused_4003() {
    let t = TestServer::start(builder().authenticator(cookie_auth)).await;
    let mut c = connect_with(&t.url(), &[("cookie", "session=s-mallory")]).await;
    c.send(json!({"event": "authenticate", "data": {}})).await;
    let (code, _, _) = c.expect_close().await;
    assert_eq!(code, 4003);
}

/// The upgrade request each authenticator call got.
type Seen = Arc<Mutex<Vec<Option<Arc<UpgradeRequest>>>>>;

/// An authenticator that accepts everyone and keeps the upgrade request of each call.
fn recording() -> (impl sealcast::Hook<AuthRequest, Option<Identity>>, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let hook = move |req: AuthRequest| {
        log.lock().unwrap().push(req.upgrade.clone());
        async move { Ok::<_, HookError>(Some(Identity::user("u"))) }
    };
    (hook, seen)
}

#[tokio::test]
async fn the_authenticator_sees_the_peer_address_origin_and_query_string() {
    let (hook, seen) = recording();
    let t = TestServer::start_with_peer_addrs(builder().authenticator(hook)).await;
    let url = format!("{}?app=web&v=2", t.url());
    let mut c = connect_with(&url, &[("origin", "https://app.example")]).await;
    c.send(json!({"event": "authenticate", "data": {}})).await;
    c.expect_event("connected").await;
    let seen = seen.lock().unwrap();
    let upgrade = seen.first().cloned().flatten().expect("the upgrade request");
    assert_eq!(upgrade.peer_addr().map(|p| p.ip()), Some([127, 0, 0, 1].into()));
    assert_eq!(upgrade.origin(), Some("https://app.example"));
    assert_eq!(upgrade.query(), Some("app=web&v=2"));
}

#[tokio::test]
async fn a_refresh_gets_its_credentials_from_data_not_the_upgrade_request() {
    let (hook, seen) = recording();
    let t = TestServer::start(builder().authenticator(hook)).await;
    let (mut c, _) = t.login("anything").await;
    c.send(json!({"event": "refresh", "data": {"token": "fresh"}})).await;
    eventually("the refresh reaches the authenticator", || {
        seen.lock().unwrap().len() == 2
    })
    .await;
    let present: Vec<bool> = seen.lock().unwrap().iter().map(Option::is_some).collect();
    assert_eq!(present, [true, false]);
}

#[derive(Clone)]
struct AppState {
    greeting: &'static str,
}

#[tokio::test]
async fn the_router_merges_into_an_app_with_its_own_state() {
    let server = builder().build().unwrap();
    let app = axum::Router::new()
        .route("/hello", get(|State(s): State<AppState>| async move { s.greeting }))
        .merge(server.router())
        .merge(server.api_router("api-key"))
        .with_state(AppState {
            greeting: "hello from the app",
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    assert_eq!(
        http_get(addr.port(), "/hello").await,
        (200, "hello from the app".to_owned())
    );
    let mut c = Client::connect(&format!("ws://{addr}/ws")).await;
    c.send(json!({"event": "authenticate", "data": {"token": "user:alice"}}))
        .await;
    assert_eq!(c.expect_event("connected").await["userId"], "alice");
}

/// Collects the messages of warnings (and errors) logged on this thread.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0.lock().unwrap().push(message.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn a_server_served_without_peer_addresses_warns_once_that_per_ip_limits_are_off() {
    let warnings = Warnings::default();
    // The test's runtime runs the server's tasks on this thread, so they log here.
    let _guard = tracing::subscriber::set_default(warnings.clone());
    let t = TestServer::start(builder()).await;
    let (_a, _) = t.login("user:a").await;
    let (_b, _) = t.login("user:b").await;
    let logged = warnings.0.lock().unwrap().clone();
    assert_eq!(logged.iter().filter(|m| m.contains("per-IP")).count(), 1, "{logged:?}");
}

/// `Server::listen` asks for an accept queue of 4,096: when the server is too busy to accept (a reconnect storm),
/// connections beyond tokio's 128 still complete their TCP handshake instead of waiting out a SYN retransmission.
#[tokio::test]
async fn a_listener_from_server_listen_queues_connections_beyond_tokios_128() {
    let n = 1_500;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        somaxconn > n,
        "net.core.somaxconn is {somaxconn}: every accept queue here is shorter than {n}"
    );
    let listener = sealcast::Server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    // Nobody accepts: a connect completes only if the kernel queues it (a dropped SYN is retried after 1 s).
    let connects = (0..n).map(|_| {
        tokio::time::timeout(
            std::time::Duration::from_millis(900),
            tokio::net::TcpStream::connect(addr),
        )
    });
    let results = futures_util::future::join_all(connects).await;
    let queued = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert_eq!(queued, n, "connections queued without an accept");
}
