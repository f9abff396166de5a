//! Shared helpers for the crypto integration tests (`tests/crypto/`).
//! Included by `tests/crypto/main.rs` as `#[path = "../common/crypto.rs"] mod common_crypto;`.
#![allow(dead_code)]

use sealcast::crypto::{
    server_handshake, ClientHandshake, HandshakeRequest, PinnedKey, RecordOpener, RecordSealer, ServerHello, StaticKey,
    StaticKeySet,
};

pub fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("test hex")
}

pub fn h32(s: &str) -> [u8; 32] {
    h(s).try_into().expect("32 bytes")
}

pub const CONN_ID: &str = "c-0001";
pub const USER_ID: &str = "u-42";

/// A completed handshake with both sides' record states.
pub struct Session {
    pub hello: ServerHello,
    /// server → client
    pub server_sealer: RecordSealer,
    /// client → server, at the server
    pub server_opener: RecordOpener,
    /// client → server
    pub client_sealer: RecordSealer,
    /// server → client, at the client
    pub client_opener: RecordOpener,
}

pub fn auth_data(client: &ClientHandshake, kid: Option<[u8; 8]>) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("token".into(), "opaque".into());
    client.insert_auth_fields(&mut m, kid);
    serde_json::Value::Object(m)
}

pub fn connected_data(hello: &ServerHello, conn_id: &str, user_id: &str) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), conn_id.into());
    m.insert("userId".into(), user_id.into());
    m.insert("time".into(), "2026-01-01T00:00:00Z".into());
    hello.insert_into(&mut m);
    serde_json::Value::Object(m)
}

/// Runs a full handshake through the JSON forms, as a server and a client would.
pub fn session_with(keys: &StaticKeySet, pinned: &[PinnedKey], kid: Option<[u8; 8]>) -> Session {
    let client = ClientHandshake::new().expect("client keygen");
    let req = HandshakeRequest::from_auth_data(&auth_data(&client, kid))
        .expect("valid request")
        .expect("encrypted client");
    let (hello, server_sealer, server_opener) =
        server_handshake(keys, &req, CONN_ID, USER_ID).expect("server handshake");
    let parsed = ServerHello::from_connected_data(&connected_data(&hello, CONN_ID, USER_ID)).expect("connected parses");
    assert_eq!(parsed, hello);
    let (client_sealer, client_opener) = client.finish(pinned, &parsed, CONN_ID, USER_ID).expect("client finish");
    Session {
        hello,
        server_sealer,
        server_opener,
        client_sealer,
        client_opener,
    }
}

pub fn session() -> Session {
    let key = StaticKey::generate().expect("keygen");
    let pin = key.pinned();
    session_with(&StaticKeySet::new(key), &[pin], None)
}

/// Seals one message and returns the single frame produced.
pub fn seal1(s: &mut RecordSealer, inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    s.seal(inner, &mut out).expect("seal");
    assert_eq!(out.len(), 1, "expected exactly one frame");
    out.remove(0).to_vec()
}
