//! Embedding sealcast in an axum app that has its own state and its own login: the WebSocket connection is
//! authenticated from the app's session cookie (sent by the browser with the upgrade request), so clients need
//! no second token.
//!
//! Run it: `cargo run --example embed_axum`, then `curl -i 'http://127.0.0.1:8080/login?user=alice'` gives a
//! `session` cookie; a page of the allowed origin connecting to `ws://127.0.0.1:8080/ws` with that cookie and
//! sending `{"event":"authenticate","data":{...wsenc/1 fields}}` is user `alice`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use sealcast::crypto::{StaticKey, StaticKeySet};
use sealcast::{AuthRequest, ConfigError, HookError, Identity, Server, ServerBuilder};

/// The app's own state: its sessions (cookie value → user). A real app keeps them in its session store.
#[derive(Clone, Default)]
struct AppState {
    sessions: Arc<Mutex<HashMap<String, String>>>,
}

impl AppState {
    fn user_of(&self, session: &str) -> Option<String> {
        self.sessions.lock().ok()?.get(session).cloned()
    }
}

#[derive(serde::Deserialize)]
struct Login {
    user: String,
}

/// The app's login (no password: an example): a new session and its cookie.
async fn login(State(state): State<AppState>, Query(login): Query<Login>) -> impl IntoResponse {
    let session = uuid::Uuid::new_v4().to_string();
    if let Ok(mut sessions) = state.sessions.lock() {
        sessions.insert(session.clone(), login.user);
    }
    [(
        header::SET_COOKIE,
        format!("session={session}; HttpOnly; SameSite=Strict; Path=/"),
    )]
}

/// The sealcast server, authenticating from the session cookie of the upgrade request.
fn sealcast(builder: ServerBuilder, state: AppState) -> Result<Server, ConfigError> {
    builder
        // A cookie goes with every request the browser makes, whichever page makes it: only the app's own
        // pages may open the WebSocket.
        .allowed_origins(vec!["http://127.0.0.1:8080".into()])
        .authenticator(move |req: AuthRequest| {
            let user = req
                .upgrade
                .as_deref()
                .and_then(|u| u.cookie("session"))
                .and_then(|s| state.user_of(s));
            async move { Ok::<_, HookError>(user.map(Identity::user)) }
        })
        .build()
}

/// The app: its routes and state, with sealcast's router merged in.
fn app(server: &Server, state: AppState) -> Router {
    Router::new()
        .route("/login", get(login))
        .merge(server.router())
        .with_state(state)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = StaticKey::generate()?; // in production: `sealcast keygen` once, and pin its public key
    println!("kid={} publicKey={}", key.kid_b64u(), key.public_key_b64u());
    let state = AppState::default();
    let server = sealcast(Server::builder().static_keys(StaticKeySet::new(key)), state.clone())?;
    // A listener whose accept queue survives a reconnect storm (tokio's `bind` asks for 128).
    let listener = Server::listen("127.0.0.1:8080".parse()?)?;
    let stop = server.clone();
    // Peer addresses feed the per-IP connection limits.
    axum::serve(
        listener,
        app(&server, state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.shutdown().await })
    .await?;
    Ok(())
}

#[test]
fn a_session_cookie_from_the_apps_login_authenticates_the_websocket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let state = AppState::default();
        // The test client below speaks plain WebSocket; a real one runs wsenc/1 (encryption stays required).
        let server = sealcast(Server::builder().require_encryption(false), state.clone()).expect("server");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = app(&server, state).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, service).await });

        let mut http = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let get = "GET /login?user=alice HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        http.write_all(get.as_bytes()).await.expect("write");
        let mut answer = String::new();
        http.read_to_string(&mut answer).await.expect("read");
        let cookie = answer
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .and_then(|c| c.split(';').next())
            .expect("a session cookie");

        let mut request = format!("ws://{addr}/ws").into_client_request().expect("request");
        request
            .headers_mut()
            .insert(header::COOKIE, cookie.parse().expect("header"));
        request
            .headers_mut()
            .insert(header::ORIGIN, "http://127.0.0.1:8080".parse().expect("header"));
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
        ws.send(Message::text(r#"{"event":"authenticate","data":{}}"#))
            .await
            .expect("send");
        let connected = ws.next().await.expect("a frame").expect("a frame");
        let connected: serde_json::Value = serde_json::from_str(connected.to_text().expect("text")).expect("JSON");
        assert_eq!(connected["event"], "connected");
        assert_eq!(connected["data"]["userId"], "alice");
    });
}
