//! Presence on the embedded bus (issue 17): the `presence` query, `member_joined` / `member_left`, the member
//! list's bound, the HTTP API and `Server::presence`, and sealing on encrypted sessions.

use crate::common::enc::*;
use crate::common::*;
use sealcast::client::{Client as EncClient, ClientConfig, ClientError};
use sealcast::presence::PresenceError;
use sealcast::ServerBuilder;
use serde_json::{json, Value};

fn presence(b: ServerBuilder) -> ServerBuilder {
    b.presence_rooms(vec!["chat:*".into()])
}

/// Two clients of `t` in `chat:1` (`a` first, so it hears `b` join): `(a, a's id, b, b's id)`.
async fn two_members(t: &TestServer, token_b: &str) -> (Client, String, Client, String) {
    let (mut a, da) = t.login("user:alice").await;
    let (mut b, db) = t.login(token_b).await;
    join(&mut a, &["chat:1"]).await;
    join(&mut b, &["chat:1"]).await;
    (a, id_of(&da), b, id_of(&db))
}

#[tokio::test]
async fn a_member_is_told_who_is_in_the_room() {
    let t = TestServer::start(presence(builder())).await;
    let (mut a, da, _b, db) = two_members(&t, "user:bob").await;
    let answer = ask_presence(&mut a, "chat:1").await;
    assert_eq!(answer["event"], "presence", "{answer}");
    let data = &answer["data"];
    assert_eq!(data["room"], "chat:1");
    assert_eq!((data["clients"].clone(), data["users"].clone()), (json!(2), json!(2)));
    assert_eq!(data["truncated"], false);
    let mut want = vec![da.clone(), db];
    want.sort();
    assert_eq!(listed(data), want);
    let alice = data["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["client"] == da.as_str())
        .unwrap();
    assert_eq!(alice["user"], "alice");
    let since = alice["since"].as_str().unwrap();
    assert!(
        since.len() == 24 && since.ends_with('Z') && since.as_bytes()[10] == b'T',
        "since is ISO 8601 UTC: {since}"
    );
}

#[tokio::test]
async fn a_join_is_announced_to_the_other_members_only() {
    let t = TestServer::start(presence(builder())).await;
    let (mut a, _, mut b, db) = two_members(&t, "user:bob").await;
    let (name, data) = next_member_event(&mut a).await;
    assert_eq!(name, "member_joined");
    assert_eq!(data, json!({"room": "chat:1", "client": db, "user": "bob"}));
    b.expect_silence().await;
}

#[tokio::test]
async fn a_leave_is_announced_and_the_member_is_no_longer_listed() {
    let t = TestServer::start(presence(builder())).await;
    let (mut a, da, mut b, db) = two_members(&t, "user:bob").await;
    assert_eq!(next_member_event(&mut a).await.0, "member_joined");
    b.send(json!({"event": "leave", "data": {"rooms": ["chat:1"]}})).await;
    let (name, data) = next_member_event(&mut a).await;
    assert_eq!(name, "member_left");
    assert_eq!(data, json!({"room": "chat:1", "client": db, "user": "bob"}));
    assert_eq!(listed(&ask_presence(&mut a, "chat:1").await["data"]), vec![da]);
}

#[tokio::test]
async fn a_disconnect_is_announced_as_member_left() {
    let t = TestServer::start(presence(builder())).await;
    let (mut a, da, b, db) = two_members(&t, "anon").await;
    assert_eq!(next_member_event(&mut a).await.0, "member_joined");
    b.close().await;
    let (name, data) = next_member_event(&mut a).await;
    assert_eq!(name, "member_left");
    assert_eq!(data, json!({"room": "chat:1", "client": db, "user": null}));
    let answer = ask_presence(&mut a, "chat:1").await;
    assert_eq!(listed(&answer["data"]), vec![da]);
    assert_eq!(answer["data"]["users"], 1);
}

#[tokio::test]
async fn a_non_member_is_refused() {
    let t = TestServer::start(presence(builder())).await;
    let (mut a, _) = t.login("user:alice").await;
    let (mut b, _) = t.login("user:bob").await;
    join(&mut a, &["chat:1"]).await;
    assert_eq!(
        ask_presence(&mut b, "chat:1").await,
        json!({"event": "error", "data": {"message": "Not a member of room"}})
    );
}

#[tokio::test]
async fn a_room_without_presence_is_refused() {
    let t = TestServer::start(presence(builder())).await;
    let (mut a, _) = t.login("user:alice").await;
    join(&mut a, &["news"]).await;
    assert_eq!(
        ask_presence(&mut a, "news").await,
        json!({"event": "error", "data": {"message": "Presence not enabled for room"}})
    );
    assert_eq!(t.server.presence("news").await, Err(PresenceError::NotEnabled));
}

#[tokio::test]
async fn the_list_is_cut_at_max_members_and_the_counts_stay_exact() {
    let t = TestServer::start(presence(builder()).presence_max_members(3)).await;
    let mut clients = Vec::new();
    for token in ["user:a", "user:a", "user:b", "user:c", "anon"] {
        let (mut c, _) = t.login(token).await;
        join(&mut c, &["chat:big"]).await;
        clients.push(c);
    }
    let answer = ask_presence(&mut clients[0], "chat:big").await;
    let data = &answer["data"];
    assert_eq!(data["members"].as_array().map(Vec::len), Some(3));
    assert_eq!((data["clients"].clone(), data["users"].clone()), (json!(5), json!(3)));
    assert_eq!(data["truncated"], true);
}

#[tokio::test]
async fn events_stop_once_a_room_has_more_than_max_members() {
    let t = TestServer::start(presence(builder()).presence_max_members(2)).await;
    let (mut a, _, mut b, _) = two_members(&t, "user:b").await;
    assert_eq!(next_member_event(&mut a).await.0, "member_joined");
    let (mut c, _) = t.login("user:c").await;
    join(&mut c, &["chat:1"]).await;
    a.expect_silence().await;
    b.expect_silence().await;
}

#[tokio::test]
async fn events_can_be_turned_off() {
    let t = TestServer::start(presence(builder()).presence_events(false)).await;
    let (mut a, _, _b, _) = two_members(&t, "user:b").await;
    a.expect_silence().await;
    assert_eq!(ask_presence(&mut a, "chat:1").await["data"]["clients"], 2);
}

#[tokio::test]
async fn the_server_and_the_http_api_answer_like_the_query() {
    let t = TestServer::start(presence(builder())).await;
    let app: axum::Router = t.server.api_router("k");
    let api = serve_http(app).await;
    let (mut a, _) = t.login("user:alice").await;
    join(&mut a, &["chat:1"]).await;
    let asked = ask_presence(&mut a, "chat:1").await["data"].clone();
    let by_server = serde_json::from_str::<Value>(&t.server.presence("chat:1").await.unwrap().to_json()).unwrap();
    assert_eq!(by_server, asked);
    let (status, body) = http_post(api, "/api/presence", Some("Bearer k"), r#"{"room":"chat:1"}"#).await;
    assert_eq!((status, body), (200, asked));
    let (status, body) = http_post(api, "/api/presence", Some("Bearer k"), r#"{"room":"news"}"#).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("presence_not_enabled"))
    );
}

#[tokio::test]
async fn answers_and_events_are_sealed_records_on_encrypted_sessions() {
    let t = TestServer::start(presence(enc_builder())).await;
    let mut a = RawEnc::login(&t, "user:alice", &[test_key().pinned()]).await;
    a.send(json!({"event": "join", "data": {"rooms": ["chat:1"]}})).await;
    assert_eq!(a.expect_event("joined").await["rooms"][0]["room"], "chat:1");
    let mut b = RawEnc::login(&t, "user:bob", &[test_key().pinned()]).await;
    b.send(json!({"event": "join", "data": {"rooms": ["chat:1"]}})).await;
    b.expect_event("joined").await;
    // `recv` opens every frame and fails on any plaintext one.
    let joined = a.expect_event("member_joined").await;
    assert_eq!(joined["client"], b.id());
    a.send(json!({"event": "presence", "data": {"room": "chat:1"}})).await;
    let answer = a.expect_event("presence").await;
    assert_eq!(answer["clients"], 2);
    assert!(a
        .wire
        .iter()
        .all(|raw| !raw.contains("member_joined") && !raw.contains(&b.id())));
}

#[tokio::test]
async fn the_rust_client_asks_who_is_there_and_hears_members_come_and_go() {
    let t = TestServer::start(presence(enc_builder())).await;
    let config = |token: &str| ClientConfig::new(t.url(), token).pin(test_key().pinned());
    let mut a = EncClient::connect(config("user:alice")).await.unwrap();
    a.join(&["chat:1"]).await.unwrap();
    let mut b = EncClient::connect(config("user:bob")).await.unwrap();
    b.join(&["chat:1"]).await.unwrap();
    let answer = b.presence("chat:1").await.unwrap();
    assert_eq!((answer.clients, answer.users, answer.truncated), (2, 2, false));
    assert!(answer
        .members
        .iter()
        .any(|m| m.client == a.id() && m.user.as_deref() == Some("alice")));
    let joined = a.recv().await.unwrap().member_event().expect("a member event");
    assert!(joined.joined && joined.client == b.id() && joined.room == "chat:1");
    let b_id = b.id().to_owned();
    b.close().await;
    let left = a.recv().await.unwrap().member_event().expect("a member event");
    assert_eq!(
        (left.joined, left.client, left.user.as_deref()),
        (false, b_id, Some("bob"))
    );
    let refused = a.presence("chat:2").await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Refused(m) if m == "Not a member of room"),
        "{refused:?}"
    );
}
