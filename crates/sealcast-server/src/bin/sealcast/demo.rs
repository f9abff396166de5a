//! `sealcast serve --demo`: a chat page at `/demo/` built on the JavaScript client, embedded in the binary.
//!
//! Trust model (for demos only): the page fetches a short-lived token from `GET /demo/token?name=…`, which
//! anyone who can reach the server may call, and the server's key from `/.well-known/sealcast.json`, so it is
//! only as trustworthy as the origin serving it. Real applications issue tokens from their own login and pin
//! the server key (`serverKeys`). Demo tokens are confined: the user id is `demo:<name>` (never a real user's
//! id) and the `rooms` claim allows only `demo:*` rooms. Beyond loopback it needs `demo.public`
//! (`sealcast_server::settings` refuses it otherwise).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use zeroize::Zeroizing;

/// Prefix of demo user ids and of the rooms a demo token may join.
pub const PREFIX: &str = "demo:";
/// Lifetime of a demo token.
pub const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Longest demo name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// The embedded files: path, content type, body (the client bundle is `npm run bundle`'s committed output).
const ASSETS: [(&str, &str, &str); 5] = [
    (
        "/demo/",
        "text/html; charset=utf-8",
        include_str!("../../../../../clients/js/demo/index.html"),
    ),
    (
        "/demo/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../../clients/js/demo/app.js"),
    ),
    (
        "/demo/style.css",
        "text/css; charset=utf-8",
        include_str!("../../../../../clients/js/demo/style.css"),
    ),
    (
        "/demo/favicon.svg",
        "image/svg+xml",
        include_str!("../../../../../clients/js/demo/favicon.svg"),
    ),
    (
        "/demo/sealcast-client.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../../clients/js/demo/sealcast-client.js"),
    ),
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Clone)]
struct Demo {
    secret: std::sync::Arc<Zeroizing<String>>,
    ws_path: std::sync::Arc<str>,
}

/// The demo routes: `/demo/` (page, script, style, icon, client bundle) and `/demo/token`.
pub fn router(secret: Zeroizing<String>, ws_path: &str) -> Router {
    let state = Demo {
        secret: std::sync::Arc::new(secret),
        ws_path: ws_path.into(),
    };
    let mut router = Router::new()
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route("/demo/token", get(token));
    for (path, content_type, body) in ASSETS {
        router = router.route(path, get(move || async move { asset(content_type, body) }));
    }
    router.with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// A valid demo name: 1 to [`MAX_NAME_CHARS`] letters, digits, `-`, `_` or `.`.
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&n) && name.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c))
}

#[derive(Deserialize)]
struct TokenQuery {
    name: Option<String>,
}

async fn token(State(demo): State<Demo>, Query(q): Query<TokenQuery>) -> Response {
    let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    let Some(name) = q.name.filter(|n| valid_name(n)) else {
        let msg = format!("name: 1 to {MAX_NAME_CHARS} letters, digits, '-', '_' or '.'");
        return (StatusCode::BAD_REQUEST, no_store, msg).into_response();
    };
    let user_id = format!("{PREFIX}{name}");
    let rooms = vec![format!("{PREFIX}*")];
    match sealcast::auth::mint(demo.secret.as_bytes(), &user_id, TOKEN_TTL, Some(rooms)) {
        Ok(token) => (
            no_store,
            axum::Json(serde_json::json!({
                "token": token,
                "userId": user_id,
                "roomPrefix": PREFIX,
                "expiresIn": TOKEN_TTL.as_secs(),
                "wsPath": &*demo.ws_path,
            })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "demo token");
            (StatusCode::INTERNAL_SERVER_ERROR, no_store, "cannot mint a token").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealcast::auth::{room_allowed, JwtAuthenticator};

    #[test]
    fn names() {
        for ok in ["alice", "Bob_2", "a.b-c", "zoë", &"x".repeat(MAX_NAME_CHARS)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "<script>", "a:b", &"x".repeat(MAX_NAME_CHARS + 1)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    async fn get(app: Router, path: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let (head, body) = buf.split_once("\r\n\r\n").unwrap();
        (head.to_ascii_lowercase(), body.to_owned())
    }

    fn app() -> Router {
        router(Zeroizing::new("demo-test-secret".into()), "/ws")
    }

    #[tokio::test]
    async fn token_endpoint_mints_confined_short_lived_tokens() {
        let (head, body) = get(app(), "/demo/token?name=alice").await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("cache-control: no-store"), "{head}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["userId"], "demo:alice");
        assert_eq!(v["wsPath"], "/ws");
        let (claims, _) = JwtAuthenticator::hs256(b"demo-test-secret")
            .verify(v["token"].as_str().unwrap())
            .unwrap();
        assert_eq!(claims.sub, "demo:alice");
        let rooms = claims.rooms.unwrap();
        assert!(room_allowed(&rooms, "demo:lobby"));
        assert!(!room_allowed(&rooms, "lobby"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(claims.exp <= now + TOKEN_TTL.as_secs() + 1);
        for bad in ["/demo/token", "/demo/token?name=", "/demo/token?name=a%20b"] {
            let (head, _) = get(app(), bad).await;
            assert!(head.starts_with("http/1.1 400"), "{bad}: {head}");
        }
    }

    #[tokio::test]
    async fn static_files_are_served_with_a_strict_policy() {
        for (path, ty, embedded) in ASSETS {
            let (head, body) = get(app(), path).await;
            assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
            assert!(head.contains(&format!("content-type: {ty}")), "{path}: {head}");
            assert_eq!(body, embedded);
            assert!(
                head.contains("content-security-policy: default-src 'none'"),
                "{path}: {head}"
            );
            assert!(!body.is_empty());
        }
        let (head, _) = get(app(), "/demo").await;
        assert!(
            head.starts_with("http/1.1 308") && head.contains("location: /demo/"),
            "{head}"
        );
        let (head, _) = get(app(), "/demo/missing.js").await;
        assert!(head.starts_with("http/1.1 404"), "{head}");
    }
}
