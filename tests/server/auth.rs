//! Bundled authentication through real sockets: JWT kinds (HS256, RS256, ES256) with a pinned algorithm, key
//! reload, and identity room patterns limiting joins and client publishes.

use crate::common::jwt::{claims, fixture, hmac_signed, sign, unsigned};
use crate::common::*;
use jsonwebtoken::Algorithm;
use sealcast::auth::{self, JwtAlgorithm, JwtAuthenticator, JwtKey};
use sealcast::protocol::event::errors;
use sealcast::{HookError, RoomRequest, Server, ServerBuilder};
use serde_json::json;

fn rs256_a() -> JwtAuthenticator {
    JwtAuthenticator::from_public_key_pem(JwtAlgorithm::Rs256, fixture("rs256-a.pub.pem").as_bytes()).unwrap()
}

fn jwt_server(authenticator: JwtAuthenticator) -> ServerBuilder {
    Server::builder()
        .require_encryption(false)
        .allow_client_publish(true)
        .authenticator(authenticator)
        .room_validator(|req: RoomRequest| async move { Ok::<_, HookError>(req.rooms) })
}

/// Authenticates with `token` and returns the close code the server answered with.
async fn refused_with(t: &TestServer, token: &str) -> u16 {
    let mut c = t.connect().await;
    c.send(json!({"event": "authenticate", "data": {"token": token}})).await;
    let (code, _, before) = c.expect_close().await;
    assert_eq!(
        before,
        vec![json!({"event": "error", "data": {"message": errors::AUTHENTICATION_FAILED}})]
    );
    code
}

#[tokio::test]
async fn rs256_token_authenticates_its_subject() {
    let t = TestServer::start(jwt_server(rs256_a())).await;
    let (_c, connected) = t.login(&sign(Algorithm::RS256, "rs256-a.key.pem", "alice")).await;
    assert_eq!(connected["userId"], "alice");
}

#[tokio::test]
async fn es256_token_authenticates_its_subject() {
    let pem = fixture("es256-a.pub.pem");
    let verifier = JwtAuthenticator::from_public_key_pem(JwtAlgorithm::Es256, pem.as_bytes()).unwrap();
    let t = TestServer::start(jwt_server(verifier)).await;
    let (_c, connected) = t.login(&sign(Algorithm::ES256, "es256-a.key.pem", "bob")).await;
    assert_eq!(connected["userId"], "bob");
}

#[tokio::test]
async fn rs256_token_signed_by_another_key_is_refused_4003() {
    let t = TestServer::start(jwt_server(rs256_a())).await;
    assert_eq!(
        refused_with(&t, &sign(Algorithm::RS256, "rs256-b.key.pem", "mallory")).await,
        4003
    );
}

#[tokio::test]
async fn hs256_token_keyed_with_the_public_key_is_refused_by_an_rs256_server() {
    // The algorithm-confusion attack: HMAC over the public key bytes, which the attacker knows.
    let public = fixture("rs256-a.pub.pem");
    let forged = hmac_signed("HS256", public.as_bytes(), &claims("mallory", None));
    // Well-formed: a server misconfigured to HS256 with the public key as secret would accept it.
    assert!(JwtAuthenticator::hs256(public.as_bytes()).verify(&forged).is_some());
    let t = TestServer::start(jwt_server(rs256_a())).await;
    assert_eq!(refused_with(&t, &forged).await, 4003);
}

#[tokio::test]
async fn unsigned_alg_none_token_is_refused() {
    let verifier = JwtAuthenticator::hs256(b"secret");
    assert!(verifier.verify(&unsigned(&claims("mallory", None))).is_none());
    assert!(rs256_a().verify(&unsigned(&claims("mallory", None))).is_none());
}

#[tokio::test]
async fn rs256_token_is_refused_by_an_hs256_server() {
    let verifier = JwtAuthenticator::hs256(fixture("rs256-a.pub.pem").as_bytes());
    assert!(verifier
        .verify(&sign(Algorithm::RS256, "rs256-a.key.pem", "alice"))
        .is_none());
}

#[tokio::test]
async fn public_key_of_the_wrong_kind_is_a_key_error() {
    let rsa = fixture("rs256-a.pub.pem");
    assert!(JwtKey::from_public_key_pem(JwtAlgorithm::Es256, rsa.as_bytes()).is_err());
    assert!(JwtKey::from_public_key_pem(JwtAlgorithm::Hs256, rsa.as_bytes()).is_err());
    assert!(JwtKey::from_public_key_pem(JwtAlgorithm::Rs256, b"not a pem").is_err());
}

#[tokio::test]
async fn token_of_the_old_key_is_refused_after_reload_and_the_new_key_works() {
    let verifier = rs256_a();
    let t = TestServer::start(jwt_server(verifier.clone())).await;
    let (mut before, _) = t.login(&sign(Algorithm::RS256, "rs256-a.key.pem", "alice")).await;
    let new_key = JwtKey::from_public_key_pem(JwtAlgorithm::Rs256, fixture("rs256-b.pub.pem").as_bytes()).unwrap();
    verifier.reload(new_key);
    assert_eq!(
        refused_with(&t, &sign(Algorithm::RS256, "rs256-a.key.pem", "alice")).await,
        4003
    );
    let (_c, connected) = t.login(&sign(Algorithm::RS256, "rs256-b.key.pem", "carol")).await;
    assert_eq!(connected["userId"], "carol");
    // The session established under the old key continues.
    t.server.send_to_user("alice", "still-here", &1).unwrap();
    assert_eq!(before.expect_event("still-here").await, json!(1));
}

#[tokio::test]
async fn rooms_claim_becomes_the_identity_room_patterns() {
    let verifier = JwtAuthenticator::hs256(b"secret");
    let token = auth::mint(
        b"secret",
        "alice",
        std::time::Duration::from_secs(60),
        Some(vec!["chat:*".into()]),
    )
    .unwrap();
    let t = TestServer::start(jwt_server(verifier)).await;
    let (mut c, connected) = t.login(&token).await;
    // The server may put a client anywhere; the client's own publishes stay within its claim.
    t.server.join_room(&id_of(&connected), "lobby").unwrap();
    c.send(json!({"event": "publish", "data": {"room": "lobby", "event": "hi"}}))
        .await;
    c.expect_error(errors::ROOM_NOT_ALLOWED).await;
}

/// A client logged in with a JWT whose `rooms` claim is `rooms` (`None`: no claim), and its `connected` data.
async fn login_with_rooms_claim(t: &TestServer, user: &str, rooms: Option<Vec<String>>) -> (Client, serde_json::Value) {
    let token = auth::mint(b"secret", user, std::time::Duration::from_secs(60), rooms).unwrap();
    t.login(&token).await
}

#[tokio::test]
async fn a_token_limited_to_other_rooms_does_not_receive_the_default_rooms() {
    let t = TestServer::start(jwt_server(JwtAuthenticator::hs256(b"secret"))).await;
    let (mut limited, connected) = login_with_rooms_claim(&t, "mallory", Some(vec!["demo:*".into()])).await;
    let (mut unlimited, _) = login_with_rooms_claim(&t, "alice", None).await;
    t.server.send_to_room("ws-default", "news", &1, &[]).unwrap();
    t.server.send_to_room("ws-notification", "alert", &2, &[]).unwrap();
    assert_eq!(unlimited.expect_event("news").await, json!(1));
    assert_eq!(unlimited.expect_event("alert").await, json!(2));
    limited.expect_silence().await;
    assert_eq!(t.server.client(&id_of(&connected)).unwrap().rooms, [id_of(&connected)]);
}

#[tokio::test]
async fn a_default_room_matching_the_rooms_claim_is_joined() {
    let t = TestServer::start(
        jwt_server(JwtAuthenticator::hs256(b"secret")).default_rooms(vec!["demo:lobby".into(), "ws-default".into()]),
    )
    .await;
    let (mut c, _) = login_with_rooms_claim(&t, "alice", Some(vec!["demo:*".into()])).await;
    t.server.send_to_room("ws-default", "news", &1, &[]).unwrap();
    t.server.send_to_room("demo:lobby", "hello", &2, &[]).unwrap();
    assert_eq!(c.expect_event("hello").await, json!(2));
    c.expect_silence().await;
}

fn publishing() -> ServerBuilder {
    builder().allow_client_publish(true)
}

#[tokio::test]
async fn publish_to_a_member_room_outside_the_patterns_is_refused_with_room_not_allowed() {
    let t = TestServer::start(publishing()).await;
    let (mut c, alice) = t.login("rooms:alice:chat:*").await;
    let (mut listener, _) = t.login("user:bob").await;
    t.server.join_room(&id_of(&alice), "lobby").unwrap();
    c.send(json!({"event": "publish", "data": {"room": "lobby", "event": "hi", "data": 1}}))
        .await;
    c.expect_error(errors::ROOM_NOT_ALLOWED).await;
    listener.expect_silence().await;
}

#[tokio::test]
async fn publish_to_a_room_matching_the_patterns_is_delivered() {
    let t = TestServer::start(publishing()).await;
    let (mut c, _) = t.login("rooms:alice:chat:*").await;
    let (mut listener, bob) = t.login("user:bob").await;
    t.server.join_room(&id_of(&bob), "chat:1").unwrap();
    c.send(json!({"event": "join", "data": {"rooms": ["chat:1"]}})).await;
    eventually("alice joined chat:1", || t.server.clients_by_room("chat:1").len() == 2).await;
    c.send(json!({"event": "publish", "data": {"room": "chat:1", "event": "hi", "data": 1}}))
        .await;
    assert_eq!(listener.expect_event("hi").await, json!(1));
}

#[tokio::test]
async fn join_outside_the_patterns_is_dropped_before_a_permissive_validator() {
    let t = TestServer::start(publishing()).await;
    let (mut c, data) = t.login("rooms:alice:chat:*,lobby").await;
    c.send(json!({"event": "join", "data": {"rooms": ["admin", "lobby", "chat:x"]}}))
        .await;
    eventually("allowed rooms joined", || {
        t.server
            .client(&id_of(&data))
            .unwrap()
            .rooms
            .contains(&"chat:x".to_owned())
    })
    .await;
    let rooms = t.server.client(&id_of(&data)).unwrap().rooms;
    assert!(rooms.contains(&"lobby".to_owned()), "{rooms:?}");
    assert!(!rooms.contains(&"admin".to_owned()), "{rooms:?}");
}

#[tokio::test]
async fn refresh_replaces_the_room_patterns() {
    let t = TestServer::start(publishing()).await;
    let (mut c, alice) = t.login("rooms:alice:chat:*").await;
    let (mut listener, _) = t.login("user:bob").await;
    t.server.join_room(&id_of(&alice), "ws-default").unwrap();
    c.send(json!({"event": "refresh", "data": {"token": "user:alice"}}))
        .await;
    c.send(json!({"event": "publish", "data": {"room": "ws-default", "event": "hi", "data": 1}}))
        .await;
    assert_eq!(listener.expect_event("hi").await, json!(1));
}
