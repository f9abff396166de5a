//! wsenc/1 test helpers: servers with static keys and a raw encrypted client that exposes every frame.

use sealcast::client::{Client as EncClient, ClientConfig, ClientError};
use sealcast::crypto::{
    ClientHandshake, HandshakeError, PinnedKey, RecordOpener, RecordSealer, ServerHello, StaticKey, StaticKeySet,
};
use sealcast::ServerBuilder;
use serde_json::{json, Map, Value};

use super::{builder, Client, TestServer};

/// A fixed test key (deterministic so failures reproduce).
pub fn test_key() -> StaticKey {
    StaticKey::from_scalar_bytes_for_tests(&[7u8; 32]).expect("test scalar")
}

/// A second fixed key, e.g. the "next" key of a rotation.
pub fn next_key() -> StaticKey {
    StaticKey::from_scalar_bytes_for_tests(&[9u8; 32]).expect("test scalar")
}

/// A builder that requires encryption with [`test_key`].
pub fn enc_builder() -> ServerBuilder {
    builder()
        .require_encryption(true)
        .static_keys(StaticKeySet::new(test_key()))
}

/// A `sealcast::client` session for `user:a` that pins `key`.
pub async fn connect_pinned(t: &TestServer, key: PinnedKey) -> Result<EncClient, ClientError> {
    EncClient::connect(ClientConfig::new(t.url(), "user:a").pin(key)).await
}

/// A client pinning `key` aborts the handshake: the server answered with a key it does not know.
pub async fn assert_unknown_kid(t: &TestServer, key: PinnedKey) {
    let err = connect_pinned(t, key).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Handshake(HandshakeError::UnknownKid)),
        "{err:?}"
    );
}

/// A client that speaks wsenc/1 by hand, so tests can see and forge raw frames.
pub struct RawEnc {
    pub c: Client,
    pub sealer: RecordSealer,
    pub opener: RecordOpener,
    pub connected: Value,
    /// Every raw frame received after `connected`.
    pub wire: Vec<String>,
    /// Every binary frame received after `connected` (wsenc/1 §11.5).
    pub bin_wire: Vec<Vec<u8>>,
    /// The rest of a batched group record's messages (§11.4), with the frame that carried them.
    pending: std::collections::VecDeque<(Value, String)>,
}

/// The `authenticate` frame of a fresh handshake.
pub fn authenticate_frame(hs: &ClientHandshake, token: &str, kid: Option<[u8; 8]>) -> Value {
    let mut data = Map::new();
    data.insert("token".into(), token.into());
    hs.insert_auth_fields(&mut data, kid);
    json!({"event": "authenticate", "data": Value::Object(data)})
}

impl RawEnc {
    pub async fn login(t: &TestServer, token: &str, pinned: &[PinnedKey]) -> Self {
        Self::login_with_kid(t, token, pinned, None).await
    }

    pub async fn login_with_kid(t: &TestServer, token: &str, pinned: &[PinnedKey], kid: Option<[u8; 8]>) -> Self {
        Self::login_with(t, token, pinned, kid, 0).await
    }

    /// A session that advertises group records (wsenc/1 §11, `"roomKeys": 1`) and accepts them if the server
    /// answers `roomKeys`.
    pub async fn login_room_keys(t: &TestServer, token: &str) -> Self {
        let raw = Self::login_with(t, token, &[test_key().pinned()], None, 1).await;
        assert_eq!(raw.connected["roomKeys"], 1, "the server answers roomKeys");
        raw
    }

    /// A session that advertises batched group records (wsenc/1 §11.4, `"roomKeys": 2`) and accepts them.
    pub async fn login_room_key_batches(t: &TestServer, token: &str) -> Self {
        let raw = Self::login_with(t, token, &[test_key().pinned()], None, 2).await;
        assert_eq!(raw.connected["roomKeys"], 2, "the server answers roomKeys 2");
        raw
    }

    /// A session that advertises binary batched group records (wsenc/1 §11.5, `"roomKeys": 3`) and accepts them.
    pub async fn login_room_key_binary(t: &TestServer, token: &str) -> Self {
        let raw = Self::login_with(t, token, &[test_key().pinned()], None, 3).await;
        assert_eq!(raw.connected["roomKeys"], 3, "the server answers roomKeys 3");
        raw
    }

    async fn login_with(
        t: &TestServer,
        token: &str,
        pinned: &[PinnedKey],
        kid: Option<[u8; 8]>,
        room_keys: u64,
    ) -> Self {
        let mut c = t.connect().await;
        let hs = ClientHandshake::new().expect("keygen");
        let mut auth = authenticate_frame(&hs, token, kid);
        if room_keys > 0 {
            auth["data"]["roomKeys"] = room_keys.into();
        }
        c.send(auth).await;
        let first = c.recv().await;
        assert_eq!(first["event"], "connected", "{first}");
        let connected = first["data"].clone();
        let hello = ServerHello::from_connected_data(&connected).expect("crypto fields");
        let id = connected["id"].as_str().unwrap().to_owned();
        let user = connected["userId"].as_str().unwrap_or("").to_owned();
        let (sealer, mut opener) = hs.finish(pinned, &hello, &id, &user).expect("confirm verifies");
        if room_keys > 0 && connected["roomKeys"] == 1 {
            opener.enable_room_keys();
        }
        if room_keys >= 2 && connected["roomKeys"] == 2 {
            opener.enable_room_key_batches();
        }
        if room_keys == 3 && connected["roomKeys"] == 3 {
            opener.enable_room_key_binary();
        }
        Self {
            c,
            sealer,
            opener,
            connected,
            wire: Vec::new(),
            bin_wire: Vec::new(),
            pending: Default::default(),
        }
    }

    pub fn id(&self) -> String {
        self.connected["id"].as_str().unwrap().to_owned()
    }

    /// Seals an inner message into wire frames without sending them.
    pub fn seal(&mut self, inner: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.sealer.seal(inner.to_string().as_bytes(), &mut out).expect("seal");
        out.into_iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    pub async fn send(&mut self, inner: Value) {
        for frame in self.seal(&inner) {
            self.c.send_text(&frame).await;
        }
    }

    /// The next raw frame, text or binary.
    pub async fn recv_data(&mut self) -> super::Data {
        let data = self.c.next_data(super::WAIT).await.expect("a frame");
        match &data {
            super::Data::Text(t) => self.wire.push(t.clone()),
            super::Data::Binary(b) => self.bin_wire.push(b.clone()),
        }
        data
    }

    /// The next raw frame (must be a text frame).
    pub async fn recv_raw(&mut self) -> String {
        let raw = self.c.next_text(super::WAIT).await.expect("a frame");
        self.wire.push(raw.clone());
        raw
    }

    /// The next application message, opened (key updates consumed).
    pub async fn recv(&mut self) -> Value {
        self.recv_with_raw().await.0
    }

    /// Joins `rooms` and waits for the `joined` answer.
    pub async fn join(&mut self, rooms: &[&str]) {
        self.send(json!({"event": "join", "data": {"rooms": rooms}})).await;
        self.expect_event("joined").await;
    }

    /// Leaves `rooms` (no answer comes).
    pub async fn leave(&mut self, rooms: &[&str]) {
        self.send(json!({"event": "leave", "data": {"rooms": rooms}})).await;
    }

    /// The next application message and the raw frame that carried it (`room_key` and `key_update` records
    /// skipped).
    /// A batched record's messages come one by one, each with the batch's frame.
    pub async fn recv_with_raw(&mut self) -> (Value, String) {
        loop {
            if let Some(next) = self.pending.pop_front() {
                return next;
            }
            let raw = match self.recv_data().await {
                super::Data::Text(raw) => raw,
                super::Data::Binary(bin) => {
                    // A binary batched record (§11.5): its messages come with a hex rendering of the frame.
                    let hex: String = bin.iter().map(|b| format!("{b:02x}")).collect();
                    let raw = format!("binary:{hex}");
                    for inner in self.opener.open_binary(&bin).expect("binary record opens") {
                        self.pending
                            .push_back((serde_json::from_slice(&inner).unwrap(), raw.clone()));
                    }
                    continue;
                }
            };
            let v: Value = serde_json::from_str(&raw).unwrap();
            assert_eq!(v["event"], "encrypted", "plaintext after connected: {raw}");
            for inner in self.opener.open_all(raw.as_bytes()).expect("record opens") {
                self.pending
                    .push_back((serde_json::from_slice(&inner).unwrap(), raw.clone()));
            }
        }
    }

    /// Skips messages until `event`, returns its data.
    pub async fn expect_event(&mut self, event: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["event"] == event {
                return v["data"].clone();
            }
        }
    }
}
