//! The JWKS authenticator against a real JWKS endpoint on a loopback port (https with a test CA, or plain
//! http), which counts its requests and can be made to rotate, fail or grow.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::jwt::{claims, fixture, hmac_signed, jwk, jwks, sign_kid, unsigned};
use crate::common::*;
use crate::https::{serve_https, TestCa};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use sealcast::auth::jwks::{JwksError, MAX_JWKS_BYTES};
use sealcast::auth::{JwksAuthenticator, JwtAlgorithm, Refusal};
use sealcast::protocol::event::errors;
use sealcast::{HookError, RoomRequest, Server};
use serde_json::json;

/// What the endpoint serves: a document (with a status) it can be told to change, and how often it was asked.
#[derive(Default)]
struct Served {
    document: parking_lot::Mutex<String>,
    status: AtomicU16,
    hits: AtomicUsize,
}

async fn serve_jwks(State(served): State<Arc<Served>>) -> (StatusCode, String) {
    served.hits.fetch_add(1, Ordering::SeqCst);
    let status = StatusCode::from_u16(served.status.load(Ordering::SeqCst)).unwrap();
    (status, served.document.lock().clone())
}

struct Endpoint {
    url: String,
    served: Arc<Served>,
    ca: Option<TestCa>,
}

impl Endpoint {
    async fn start(https: bool, document: String) -> Self {
        let served = Arc::new(Served::default());
        served.status.store(200, Ordering::SeqCst);
        *served.document.lock() = document;
        let app = Router::new().route("/jwks", get(serve_jwks)).with_state(served.clone());
        if https {
            let ca = TestCa::new("sealcast JWKS test CA");
            let addr = serve_https(app, &ca).await;
            Self {
                url: format!("https://{addr}/jwks"),
                served,
                ca: Some(ca),
            }
        } else {
            let addr = serve_http(app).await;
            Self {
                url: format!("http://{addr}/jwks"),
                served,
                ca: None,
            }
        }
    }

    /// An authenticator trusting this endpoint's CA (if https).
    fn authenticator(&self, alg: JwtAlgorithm) -> JwksAuthenticator {
        let mut builder = JwksAuthenticator::builder(&self.url, alg)
            .unwrap()
            .timeout(Duration::from_secs(2));
        if let Some(ca) = &self.ca {
            builder = builder.tls_roots(ca.roots());
        }
        builder.build().unwrap()
    }

    fn serve(&self, document: String) {
        *self.served.document.lock() = document;
    }

    fn hits(&self) -> usize {
        self.served.hits.load(Ordering::SeqCst)
    }
}

fn rs256_ab() -> String {
    jwks(&[
        jwk(Algorithm::RS256, "rs256-a.key.pem", "a"),
        jwk(Algorithm::RS256, "rs256-b.key.pem", "b"),
    ])
}

async fn server(authenticator: JwksAuthenticator) -> TestServer {
    TestServer::start(
        Server::builder()
            .require_encryption(false)
            .authenticator(authenticator)
            .room_validator(|req: RoomRequest| async move { Ok::<_, HookError>(req.rooms) }),
    )
    .await
}

/// Authenticates with `token`; the error text and close code the client got.
async fn refused(t: &TestServer, token: &str) -> (String, u16) {
    let mut c = t.connect().await;
    c.send(json!({"event": "authenticate", "data": {"token": token}})).await;
    let (code, _, before) = c.expect_close().await;
    let message = before
        .iter()
        .find(|v| v["event"] == "error")
        .and_then(|v| v["data"]["message"].as_str())
        .unwrap_or_default()
        .to_owned();
    (message, code)
}

#[tokio::test]
async fn jwks_rs256_tokens_over_https_are_verified_with_the_key_their_kid_names() {
    let endpoint = Endpoint::start(true, rs256_ab()).await;
    let jwks = endpoint.authenticator(JwtAlgorithm::Rs256);
    assert_eq!(jwks.refresh().await, Ok(2));
    let t = server(jwks).await;
    let (_a, connected) = t
        .login(&sign_kid(Algorithm::RS256, "rs256-a.key.pem", Some("a"), "alice"))
        .await;
    assert_eq!(connected["userId"], "alice");
    let (_b, connected) = t
        .login(&sign_kid(Algorithm::RS256, "rs256-b.key.pem", Some("b"), "bob"))
        .await;
    assert_eq!(connected["userId"], "bob");
    // Key b's token claiming to be a's: the kid chooses the key, so the signature does not verify.
    let swapped = sign_kid(Algorithm::RS256, "rs256-b.key.pem", Some("a"), "mallory");
    assert_eq!(
        refused(&t, &swapped).await,
        (errors::AUTHENTICATION_FAILED.to_owned(), 4003)
    );
    assert_eq!(endpoint.hits(), 1);
}

#[tokio::test]
async fn jwks_es256_tokens_over_https_are_verified_by_kid() {
    let endpoint = Endpoint::start(true, jwks(&[jwk(Algorithm::ES256, "es256-a.key.pem", "ec-1")])).await;
    let jwks = endpoint.authenticator(JwtAlgorithm::Es256);
    assert_eq!(jwks.refresh().await, Ok(1));
    let t = server(jwks.clone()).await;
    let (_c, connected) = t
        .login(&sign_kid(Algorithm::ES256, "es256-a.key.pem", Some("ec-1"), "carol"))
        .await;
    assert_eq!(connected["userId"], "carol");
    // The only key of the set also verifies a token without kid.
    let no_kid = sign_kid(Algorithm::ES256, "es256-a.key.pem", None, "dave");
    assert_eq!(jwks.check(&no_kid).await.unwrap().0.sub, "dave");
}

#[tokio::test]
async fn a_token_without_kid_is_refused_when_the_set_has_several_keys() {
    let endpoint = Endpoint::start(false, rs256_ab()).await;
    let jwks = endpoint.authenticator(JwtAlgorithm::Rs256);
    jwks.refresh().await.unwrap();
    let no_kid = sign_kid(Algorithm::RS256, "rs256-a.key.pem", None, "alice");
    assert_eq!(jwks.check(&no_kid).await.err(), Some(Refusal::NoKeyId));
    assert_eq!(endpoint.hits(), 1);
}

#[tokio::test]
async fn an_unknown_kid_triggers_one_refresh_and_succeeds_after_a_key_rotation() {
    let endpoint = Endpoint::start(true, jwks(&[jwk(Algorithm::RS256, "rs256-a.key.pem", "a")])).await;
    let jwks = endpoint.authenticator(JwtAlgorithm::Rs256);
    assert_eq!(jwks.refresh().await, Ok(1));
    let t = server(jwks).await;
    // The identity provider rotates in key b and signs with it before the next scheduled refresh.
    endpoint.serve(rs256_ab());
    let (_c, connected) = t
        .login(&sign_kid(Algorithm::RS256, "rs256-b.key.pem", Some("b"), "bob"))
        .await;
    assert_eq!(connected["userId"], "bob");
    assert_eq!(endpoint.hits(), 2);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_rate_limit_window() {
    let endpoint = Endpoint::start(false, rs256_ab()).await;
    let jwks = endpoint.authenticator(JwtAlgorithm::Rs256);
    jwks.refresh().await.unwrap();
    // An attacker needs no key for this: the header names a kid, the signature is anything.
    let signed = sign_kid(Algorithm::RS256, "rs256-a.key.pem", Some("a"), "x");
    let rest = signed.split_once('.').unwrap().1.to_owned();
    let checks = (0..200).map(|i| {
        let jwks = jwks.clone();
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": format!("random-{i}")});
        let token = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()));
        tokio::spawn(async move { jwks.check(&token).await })
    });
    for outcome in futures_util::future::join_all(checks).await {
        assert_eq!(outcome.unwrap().err(), Some(Refusal::UnknownKey));
    }
    // The start-up fetch and a single on-demand one (the default window is 30 s).
    assert_eq!(endpoint.hits(), 2);
    // Known keys keep working meanwhile, without a fetch.
    let token = sign_kid(Algorithm::RS256, "rs256-b.key.pem", Some("b"), "bob");
    assert!(jwks.check(&token).await.is_ok());
    assert_eq!(endpoint.hits(), 2);
}

#[tokio::test]
async fn an_oversized_jwks_is_refused_and_the_last_good_set_kept() {
    let endpoint = Endpoint::start(true, rs256_ab()).await;
    let jwks = endpoint.authenticator(JwtAlgorithm::Rs256);
    jwks.refresh().await.unwrap();
    let padding = "x".repeat(MAX_JWKS_BYTES);
    endpoint.serve(format!("{{\"keys\": [], \"padding\": \"{padding}\"}}"));
    assert_eq!(jwks.refresh().await, Err(JwksError::TooLarge));
    endpoint.serve("{\"keys\": \"not a list\"}".to_owned());
    assert_eq!(jwks.refresh().await, Err(JwksError::Malformed));
    endpoint.served.status.store(503, Ordering::SeqCst);
    assert_eq!(jwks.refresh().await, Err(JwksError::Status(503)));
    assert_eq!(jwks.key_count(), 2);
    let token = sign_kid(Algorithm::RS256, "rs256-a.key.pem", Some("a"), "alice");
    assert_eq!(jwks.check(&token).await.unwrap().0.sub, "alice");
}

#[tokio::test]
async fn hs256_alg_confusion_and_unsigned_tokens_are_refused_without_a_fetch() {
    let endpoint = Endpoint::start(false, rs256_ab()).await;
    let jwks = endpoint.authenticator(JwtAlgorithm::Rs256);
    jwks.refresh().await.unwrap();
    let t = server(jwks.clone()).await;
    // HMAC over the public key, which the attacker knows.
    let public = fixture("rs256-a.pub.pem");
    let forged = hmac_signed("HS256", public.as_bytes(), &claims("mallory", None));
    assert_eq!(
        jwks.check(&forged).await.err(),
        Some(Refusal::WrongAlgorithm(JwtAlgorithm::Rs256))
    );
    assert_eq!(
        refused(&t, &forged).await,
        (errors::AUTHENTICATION_FAILED.to_owned(), 4003)
    );
    let es256 = sign_kid(Algorithm::ES256, "es256-a.key.pem", Some("a"), "mallory");
    assert_eq!(
        jwks.check(&es256).await.err(),
        Some(Refusal::WrongAlgorithm(JwtAlgorithm::Rs256))
    );
    assert!(jwks.check(&unsigned(&claims("mallory", None))).await.is_err());
    assert_eq!(endpoint.hits(), 1);
}

#[tokio::test]
async fn jwks_over_https_with_another_ca_is_refused_and_gives_an_authentication_error() {
    let endpoint = Endpoint::start(true, rs256_ab()).await;
    let other = TestCa::new("another CA");
    let jwks = JwksAuthenticator::builder(&endpoint.url, JwtAlgorithm::Rs256)
        .unwrap()
        .tls_roots(other.roots())
        .build()
        .unwrap();
    match jwks.refresh().await {
        Err(JwksError::Tls(reason)) => assert!(reason.contains("UnknownIssuer"), "{reason}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert_eq!(endpoint.hits(), 0);
    let t = server(jwks).await;
    let token = sign_kid(Algorithm::RS256, "rs256-a.key.pem", Some("a"), "alice");
    assert_eq!(
        refused(&t, &token).await,
        (errors::AUTHENTICATION_ERROR.to_owned(), 4003)
    );
}

#[tokio::test]
async fn an_endpoint_down_at_start_gives_authentication_errors_until_the_refresher_gets_keys() {
    let endpoint = Endpoint::start(false, rs256_ab()).await;
    endpoint.served.status.store(503, Ordering::SeqCst);
    let jwks = JwksAuthenticator::builder(&endpoint.url, JwtAlgorithm::Rs256)
        .unwrap()
        .min_refetch_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    assert_eq!(jwks.refresh().await, Err(JwksError::Status(503)));
    let refresher = jwks.spawn_refresher();
    let t = server(jwks.clone()).await;
    let token = sign_kid(Algorithm::RS256, "rs256-a.key.pem", Some("a"), "alice");
    assert_eq!(
        refused(&t, &token).await,
        (errors::AUTHENTICATION_ERROR.to_owned(), 4003)
    );
    endpoint.served.status.store(200, Ordering::SeqCst);
    eventually("the refresher fetches the keys", || jwks.key_count() == 2).await;
    let (_c, connected) = t.login(&token).await;
    assert_eq!(connected["userId"], "alice");
    refresher.abort();
}
