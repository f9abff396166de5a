//! Hot reload of the wsenc/1 static keys: new handshakes use the new set, the well-known document lists it,
//! established sessions continue.

use crate::common::enc::*;
use crate::common::*;
use sealcast::crypto::StaticKeySet;
use sealcast::ReloadError;
use serde_json::{json, Value};

async fn reloaded_server() -> TestServer {
    let t = TestServer::start(enc_builder()).await;
    t.server.reload_static_keys(StaticKeySet::new(next_key())).unwrap();
    t
}

#[tokio::test]
async fn client_pinned_to_the_new_key_connects_after_reload() {
    let t = reloaded_server().await;
    let c = connect_pinned(&t, next_key().pinned()).await.unwrap();
    assert_eq!(c.connected_data()["kid"], next_key().kid_b64u());
}

#[tokio::test]
async fn client_pinned_to_the_old_key_fails_after_reload() {
    let t = reloaded_server().await;
    assert_unknown_kid(&t, test_key().pinned()).await;
}

#[tokio::test]
async fn session_established_before_reload_keeps_working() {
    let t = TestServer::start(enc_builder()).await;
    let mut c = connect_pinned(&t, test_key().pinned()).await.unwrap();
    t.server.reload_static_keys(StaticKeySet::new(next_key())).unwrap();
    t.server.send_to_user("a", "after-reload", &json!(1)).unwrap();
    let got = c.recv().await.unwrap();
    assert_eq!((got.event.as_str(), got.data), ("after-reload", json!(1)));
    c.heartbeat().await.unwrap();
}

#[tokio::test]
async fn well_known_lists_the_new_keys_after_reload() {
    let t = reloaded_server().await;
    let (status, body) = http_get(t.addr.port(), "/.well-known/sealcast.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        doc["keys"],
        json!([{"kid": next_key().kid_b64u(), "publicKey": next_key().public_key_b64u()}])
    );
}

#[tokio::test]
async fn reload_without_static_keys_is_refused() {
    let t = TestServer::start(builder()).await;
    assert_eq!(
        t.server.reload_static_keys(StaticKeySet::new(next_key())),
        Err(ReloadError::NoStaticKeys)
    );
}
