//! wsenc/1 through real sockets: handshake, records, key update, downgrade, encrypted fan-out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::enc::*;
use crate::common::*;
use base64::Engine;
use parking_lot::Mutex;
use sealcast::client::{Client as EncClient, ClientConfig, ClientError};
use sealcast::crypto::{ClientHandshake, HandshakeError, StaticKeySet};
use sealcast::protocol::CloseCode;
use sealcast::session::{Frames, HandshakeOutcome, HandshakeRequest, Opener, Sealer, Session};
use sealcast::{HookError, IncomingMessage, Outgoing, Transformed};
use serde_json::{json, Value};

fn b64u(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn enc_server() -> TestServer {
    TestServer::start(enc_builder()).await
}

/// Sends `authenticate` with a hand-made payload and returns the close code and frames before it.
async fn handshake_close(t: &TestServer, data: Value) -> (u16, Vec<Value>) {
    let mut c = t.connect().await;
    c.send(json!({"event": "authenticate", "data": data})).await;
    let (code, _, before) = c.expect_close().await;
    (code, before)
}

#[tokio::test]
async fn connected_carries_the_crypto_fields_and_confirm_verifies() {
    let t = enc_server().await;
    let mut c = RawEnc::login(&t, "user:alice", &[test_key().pinned()]).await;
    for field in ["id", "userId", "time", "v", "serverPublicKey", "salt", "kid", "confirm"] {
        assert!(c.connected.get(field).is_some(), "missing {field}");
    }
    assert_eq!(c.connected["kid"], test_key().kid_b64u());
    t.server.send_to_client(&c.id(), "hello", &json!({"x": 1})).unwrap();
    assert_eq!(c.recv().await, json!({"event": "hello", "data": {"x": 1}}));
    assert!(t.server.client(&c.id()).unwrap().encrypted);
}

#[tokio::test]
async fn rust_client_round_trips_custom_events_and_rooms() {
    let seen: Arc<Mutex<Vec<IncomingMessage>>> = Arc::default();
    let s = seen.clone();
    let b = enc_builder()
        .allow_client_publish(true)
        .message_handler(move |m: IncomingMessage| {
            let s = s.clone();
            async move {
                s.lock().push(m);
                Ok::<_, HookError>(())
            }
        });
    let t = TestServer::start(b).await;
    let cfg = |tok: &str| ClientConfig::new(t.url(), tok).pin(test_key().pinned());
    let mut a = EncClient::connect(cfg("user:a")).await.unwrap();
    let mut b = EncClient::connect(cfg("user:b")).await.unwrap();
    a.send("chat", &json!({"t": "secret"})).await.unwrap();
    eventually("handler saw the decrypted event", || !seen.lock().is_empty()).await;
    assert_eq!(seen.lock()[0].data, json!({"t": "secret"}));
    a.join(&["room"]).await.unwrap();
    b.join(&["room"]).await.unwrap();
    eventually("both joined", || t.server.clients_by_room("room").len() == 2).await;
    a.publish("room", "msg", &"hi").await.unwrap();
    let m = b.recv().await.unwrap();
    assert_eq!((m.event.as_str(), m.data), ("msg", json!("hi")));
    b.leave(&["room"]).await.unwrap();
    eventually("b left", || t.server.clients_by_room("room").len() == 1).await;
}

#[tokio::test]
async fn rejected_credentials_cost_no_elliptic_curve_work() {
    let t = enc_server().await;
    let hs = ClientHandshake::new().unwrap();
    let mut c = t.connect().await;
    c.send(authenticate_frame(&hs, "wrong", None)).await;
    assert_eq!(c.expect_close().await.0, 4003);
    let stats = t.server.stats();
    assert_eq!((stats.auth_rejected, stats.handshakes), (1, 0));
    RawEnc::login(&t, "user:a", &[test_key().pinned()]).await;
    assert_eq!(t.server.stats().handshakes, 1);
}

#[tokio::test]
async fn missing_public_key_is_closed_4004_when_encryption_is_required() {
    let t = enc_server().await;
    let (code, before) = handshake_close(&t, json!({"token": "user:a"})).await;
    assert_eq!(code, 4004);
    assert_eq!(
        before,
        vec![json!({"event": "error", "data": {"message": "Encryption handshake failed"}})]
    );
}

#[tokio::test]
async fn bad_public_keys_are_closed_4004() {
    let t = enc_server().await;
    let good = ClientHandshake::new().unwrap().public_key_b64u();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&good).unwrap();
    let mut off_curve = raw.clone();
    off_curve[64] ^= 1;
    let mut compressed = vec![0x02 | (raw[64] & 1)];
    compressed.extend_from_slice(&raw[1..33]);
    let mut identity = vec![0x04];
    identity.extend_from_slice(&[0u8; 64]);
    let padded = format!("{good}=");
    let std_b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
    for bad in [
        b64u(&off_curve),
        b64u(&compressed),
        b64u(&identity),
        b64u(&raw[..64]),
        padded,
        std_b64,
        "!!".into(),
    ] {
        let (code, _) = handshake_close(&t, json!({"token": "user:a", "v": 1, "publicKey": bad})).await;
        assert_eq!(code, 4004, "{bad}");
    }
    let (code, _) = handshake_close(&t, json!({"token": "user:a", "v": 1, "publicKey": 7})).await;
    assert_eq!(code, 4004);
}

#[tokio::test]
async fn wrong_version_and_unknown_kid_are_closed_4004() {
    let t = enc_server().await;
    let pk = ClientHandshake::new().unwrap().public_key_b64u();
    for data in [
        json!({"token": "user:a", "v": 2, "publicKey": pk}),
        json!({"token": "user:a", "v": "1", "publicKey": pk}),
        json!({"token": "user:a", "v": 1, "publicKey": pk, "kid": b64u(&[1u8; 8])}),
    ] {
        assert_eq!(handshake_close(&t, data.clone()).await.0, 4004, "{data}");
    }
}

#[tokio::test]
async fn the_next_keys_kid_selects_the_next_key() {
    let keys = StaticKeySet::new(test_key()).with_key(next_key()).unwrap();
    let t = TestServer::start(builder().require_encryption(true).static_keys(keys)).await;
    let c = RawEnc::login_with_kid(&t, "user:a", &[next_key().pinned()], Some(next_key().kid())).await;
    assert_eq!(c.connected["kid"], next_key().kid_b64u());
    // Without a kid the current key answers, which a client pinning only the next key refuses.
    assert_unknown_kid(&t, next_key().pinned()).await;
}

#[tokio::test]
async fn two_connections_get_different_keys() {
    let t = enc_server().await;
    let a = RawEnc::login(&t, "user:a", &[test_key().pinned()]).await;
    let b = RawEnc::login(&t, "user:a", &[test_key().pinned()]).await;
    assert_ne!(a.connected["salt"], b.connected["salt"]);
    assert_ne!(a.connected["serverPublicKey"], b.connected["serverPublicKey"]);
    assert_ne!(a.connected["confirm"], b.connected["confirm"]);
}

#[tokio::test]
async fn a_client_pinning_another_key_aborts() {
    let t = enc_server().await;
    assert_unknown_kid(&t, next_key().pinned()).await;
}

/// A relay between client and server that rewrites one field of `connected`.
async fn tampering_relay(upstream: String, field: &'static str) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut down = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let (mut up, _) = tokio_tungstenite::connect_async(upstream).await.unwrap();
        loop {
            tokio::select! {
                m = down.next() => match m { Some(Ok(m)) => { let _ = up.send(m).await; } _ => return },
                m = up.next() => match m {
                    Some(Ok(Message::Text(t))) => {
                        let mut v: Value = serde_json::from_str(&t).unwrap();
                        if v["event"] == "connected" {
                            v["data"][field] = match field {
                                "serverPublicKey" => json!(ClientHandshake::new().unwrap().public_key_b64u()),
                                "salt" => json!(b64u(&[3u8; 32])),
                                _ => json!(uuid::Uuid::new_v4().to_string()),
                            };
                        }
                        let _ = down.send(Message::text(v.to_string())).await;
                    }
                    Some(Ok(m)) => { let _ = down.send(m).await; }
                    _ => return,
                },
            }
        }
    });
    url
}

#[tokio::test]
async fn a_relay_swapping_handshake_fields_makes_the_client_abort() {
    let t = enc_server().await;
    for field in ["serverPublicKey", "salt", "id"] {
        let relay = tampering_relay(t.url(), field).await;
        let err = EncClient::connect(ClientConfig::new(relay, "user:a").pin(test_key().pinned()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Handshake(HandshakeError::ServerAuthFailed)),
            "{field}: {err:?}"
        );
    }
}

/// A server whose message handler records what it receives, to prove forged records deliver nothing.
async fn recording_server() -> (TestServer, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let b = enc_builder().message_handler(move |m: IncomingMessage| {
        let s = s.clone();
        async move {
            s.lock().push(m.event);
            Ok::<_, HookError>(())
        }
    });
    (TestServer::start(b).await, seen)
}

async fn expect_closed(c: &mut RawEnc, code: u16) {
    let (got, _, _) = c.c.expect_close().await;
    assert_eq!(got, code);
}

fn flip_ct_bit(frame: &str) -> String {
    let mut v: Value = serde_json::from_str(frame).unwrap();
    let ct = v["data"]["ct"].as_str().unwrap();
    let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(ct).unwrap();
    raw[0] ^= 0x80;
    v["data"]["ct"] = json!(b64u(&raw));
    v.to_string()
}

#[tokio::test]
async fn forged_records_close_4005_and_deliver_nothing() {
    let (t, seen) = recording_server().await;
    let pin = [test_key().pinned()];
    type Forge = fn(&mut RawEnc, &mut RawEnc) -> String;
    // Replay: a valid record, then the same bytes again.
    let mut c = RawEnc::login(&t, "user:a", &pin).await;
    let valid = c.seal(&json!({"event": "valid"})).remove(0);
    c.c.send_text(&valid).await;
    c.c.send_text(&valid).await;
    expect_closed(&mut c, 4005).await;
    eventually("the original was delivered once", || {
        seen.lock().as_slice() == ["valid"]
    })
    .await;
    seen.lock().clear();
    let cases: Vec<(&str, Forge)> = vec![
        ("skipped seq", |c, _| {
            c.seal(&json!({"event": "skipped"}));
            c.seal(&json!({"event": "x"})).remove(0)
        }),
        ("bit flip", |c, _| {
            flip_ct_bit(&c.seal(&json!({"event": "x"})).remove(0))
        }),
        ("wrong iv", |c, _| {
            let mut v: Value = serde_json::from_str(&c.seal(&json!({"event": "x"})).remove(0)).unwrap();
            v["data"]["iv"] = json!(b64u(&[0u8; 12]));
            v.to_string()
        }),
        ("truncated ct", |c, _| {
            let mut v: Value = serde_json::from_str(&c.seal(&json!({"event": "x"})).remove(0)).unwrap();
            v["data"]["ct"] = json!(b64u(&[1u8; 10]));
            v.to_string()
        }),
        ("empty ct", |c, _| {
            let mut v: Value = serde_json::from_str(&c.seal(&json!({"event": "x"})).remove(0)).unwrap();
            v["data"]["ct"] = json!("");
            v.to_string()
        }),
        ("extra field", |c, _| {
            let mut v: Value = serde_json::from_str(&c.seal(&json!({"event": "x"})).remove(0)).unwrap();
            v["data"]["extra"] = json!(1);
            v.to_string()
        }),
        ("seq as float", |c, _| {
            c.seal(&json!({"event": "x"}))
                .remove(0)
                .replace("\"seq\":0", "\"seq\":0.0")
        }),
        ("bad inner json", |c, _| {
            let mut out = Vec::new();
            c.sealer.seal(b"{not json", &mut out).unwrap();
            String::from_utf8(out.remove(0).to_vec()).unwrap()
        }),
        ("inner connected", |c, _| {
            c.seal(&json!({"event": "connected", "data": {}})).remove(0)
        }),
        ("spliced from another connection", |_, other| {
            other.seal(&json!({"event": "x"})).remove(0)
        }),
    ];
    for (name, forge) in cases {
        let mut c = RawEnc::login(&t, "user:a", &pin).await;
        let mut other = RawEnc::login(&t, "user:b", &pin).await;
        let frame = forge(&mut c, &mut other);
        c.c.send_text(&frame).await;
        let (code, _, before) = c.c.expect_close().await;
        assert_eq!(code, 4005, "{name}");
        assert!(before.is_empty(), "{name}: server answered {before:?}");
    }
    assert!(
        seen.lock().is_empty(),
        "forged records were delivered: {:?}",
        seen.lock()
    );
}

#[tokio::test]
async fn a_reflected_server_record_closes_4005() {
    let t = enc_server().await;
    let mut c = RawEnc::login(&t, "user:a", &[test_key().pinned()]).await;
    t.server.send_to_client(&c.id(), "e", &1).unwrap();
    let record = c.recv_raw().await;
    c.c.send_text(&record).await;
    expect_closed(&mut c, 4005).await;
}

#[tokio::test]
async fn reordered_records_close_4005() {
    let (t, seen) = recording_server().await;
    let mut c = RawEnc::login(&t, "user:a", &[test_key().pinned()]).await;
    let first = c.seal(&json!({"event": "one"})).remove(0);
    let second = c.seal(&json!({"event": "two"})).remove(0);
    c.c.send_text(&second).await;
    c.c.send_text(&first).await;
    expect_closed(&mut c, 4005).await;
    assert!(seen.lock().is_empty());
}

#[tokio::test]
async fn padded_records_are_accepted() {
    let (t, seen) = recording_server().await;
    let mut c = RawEnc::login(&t, "user:a", &[test_key().pinned()]).await;
    c.sealer.set_padding(std::num::NonZeroUsize::new(64));
    c.send(json!({"event": "padded", "data": "x"})).await;
    eventually("padded record delivered", || seen.lock().as_slice() == ["padded"]).await;
}

#[tokio::test]
async fn plaintext_frames_on_an_encrypted_session_close_4004() {
    let t = enc_server().await;
    let pin = [test_key().pinned()];
    for frame in [
        r#"{"event":"chat","data":{}}"#,
        r#"{"event":"heartbeat"}"#,
        "not json",
        "null",
        "[]",
    ] {
        let mut c = RawEnc::login(&t, "user:a", &pin).await;
        c.c.send_text(frame).await;
        let (code, _, before) = c.c.expect_close().await;
        assert_eq!(code, 4004, "{frame}");
        assert!(before.is_empty(), "{frame}: {before:?}");
    }
    let mut c = RawEnc::login(&t, "user:a", &pin).await;
    c.c.send_raw(tokio_tungstenite::tungstenite::Message::binary(b"{}".to_vec()))
        .await;
    expect_closed(&mut c, 4004).await;
}

#[tokio::test]
async fn errors_to_encrypted_clients_are_encrypted() {
    let t = enc_server().await;
    let mut c = RawEnc::login(&t, "user:a", &[test_key().pinned()]).await;
    c.send(json!({"event": "join", "data": "not-an-object"})).await;
    assert_eq!(
        c.recv().await,
        json!({"event": "error", "data": {"message": "Invalid message format"}})
    );
    c.send(json!({"event": "custom-without-handler"})).await;
    // §6 step 5: an inner `authenticate` is a record-layer failure, not a second authentication.
    c.send(json!({"event": "authenticate", "data": {}})).await;
    expect_closed(&mut c, 4005).await;
}

#[tokio::test]
async fn key_update_in_both_directions_with_a_small_epoch_limit() {
    let (t, seen) = {
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let s = seen.clone();
        let b = enc_builder()
            .max_records_per_epoch(4)
            .message_handler(move |m: IncomingMessage| {
                let s = s.clone();
                async move {
                    s.lock().push(m.data);
                    Ok::<_, HookError>(())
                }
            });
        (TestServer::start(b).await, seen)
    };
    let cfg = ClientConfig::new(t.url(), "user:a")
        .pin(test_key().pinned())
        .max_records_per_epoch(4);
    let mut c = EncClient::connect(cfg).await.unwrap();
    for i in 0..25 {
        c.send("n", &i).await.unwrap();
    }
    c.update_keys().await.unwrap();
    c.send("n", &25).await.unwrap();
    eventually("all 26 opened across epochs", || seen.lock().len() == 26).await;
    assert_eq!(*seen.lock(), (0..26).map(|i| json!(i)).collect::<Vec<_>>());
    for i in 0..25 {
        t.server.send_to_client(c.id(), "s", &i).unwrap();
    }
    for i in 0..25 {
        assert_eq!(c.recv().await.unwrap().data, json!(i));
    }
}

#[tokio::test]
async fn records_past_the_epoch_limit_close_4006() {
    let t = TestServer::start(enc_builder().max_records_per_epoch(4)).await;
    let mut c = RawEnc::login(&t, "user:a", &[test_key().pinned()]).await;
    // The client ignores the limit: seq 0..2 are fine, seq 3 is the slot reserved for key_update.
    for i in 0..4 {
        c.send(json!({"event": "n", "data": i})).await;
    }
    expect_closed(&mut c, 4006).await;
}

#[tokio::test]
async fn encrypted_fan_out_is_complete_ordered_and_never_plaintext() {
    const SUBSCRIBERS: usize = 50;
    const MESSAGES: usize = 1000;
    let t = TestServer::start(enc_builder().encrypted_batch_limit(8).outbound_queue(2048)).await;
    let pin = [test_key().pinned()];
    let mut clients = Vec::new();
    for i in 0..SUBSCRIBERS {
        clients.push(RawEnc::login(&t, &format!("user:u{i}"), &pin).await);
    }
    for seq in 1..=MESSAGES {
        t.server.send_to_room("ws-default", "seq", &seq, &[]).unwrap();
    }
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                for seq in 1..=MESSAGES {
                    assert_eq!(c.recv().await, json!({"event": "seq", "data": seq}));
                }
                assert!(c
                    .wire
                    .iter()
                    .all(|f| f.starts_with(r#"{"event":"encrypted","data":{"seq":"#)));
                c.wire.len()
            })
        })
        .collect();
    for r in readers {
        assert!(tokio::time::timeout(Duration::from_secs(60), r).await.unwrap().unwrap() >= MESSAGES);
    }
}

#[tokio::test]
async fn mixed_rooms_deliver_each_member_in_its_own_form() {
    let keys = StaticKeySet::new(test_key());
    let t = TestServer::start(builder().require_encryption(false).static_keys(keys)).await;
    let mut enc = RawEnc::login(&t, "user:e", &[test_key().pinned()]).await;
    let (mut plain, data) = t.login("user:p").await;
    assert!(data.get("serverPublicKey").is_none());
    t.server
        .send_to_room("ws-default", "both", &json!({"k": 1}), &[])
        .unwrap();
    assert_eq!(plain.recv().await, json!({"event": "both", "data": {"k": 1}}));
    assert_eq!(enc.recv().await, json!({"event": "both", "data": {"k": 1}}));
}

#[tokio::test]
async fn the_transformer_runs_before_sealing() {
    let b = enc_builder().outbound_transformer(|o: Outgoing| async move {
        Ok::<_, HookError>(Transformed::Replace {
            event: o.event,
            data: json!({"wrapped": o.data}),
        })
    });
    let t = TestServer::start(b).await;
    let mut c = RawEnc::login(&t, "user:a", &[test_key().pinned()]).await;
    t.server.broadcast("b", &1, &[]).unwrap();
    assert_eq!(c.recv().await, json!({"event": "b", "data": {"wrapped": 1}}));
}

#[tokio::test]
async fn well_known_lists_every_static_key() {
    let keys = StaticKeySet::new(test_key()).with_key(next_key()).unwrap();
    let t = TestServer::start(builder().require_encryption(true).static_keys(keys)).await;
    let (status, body) = http_get(t.addr.port(), "/.well-known/sealcast.json").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["protocol"], "wsenc/1");
    assert_eq!(
        v["keys"][0],
        json!({"kid": test_key().kid_b64u(), "publicKey": test_key().public_key_b64u()})
    );
    assert_eq!(v["keys"][1]["kid"], next_key().kid_b64u());
}

#[test]
fn building_with_required_encryption_and_no_handshake_is_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let err = sealcast::Server::builder()
            .authenticator(test_auth)
            .build()
            .unwrap_err();
        assert!(matches!(err, sealcast::ConfigError::EncryptionWithoutHandshake));
        assert!(err.to_string().contains("static_keys"));
    });
}

mod ignis_suite {
    use super::*;
    use sealcast::crypto::backend::{EcPublicKey, EcSecretKey};
    use sealcast::crypto::ignis;

    const STD: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    /// A client doing what the reference's browser helper does.
    async fn ignis_login(t: &TestServer) -> (Client, ignis::IgnisKey, Value) {
        let secret = EcSecretKey::generate().unwrap();
        let mut c = t.connect().await;
        let pk = STD.encode(secret.public_key().as_sec1());
        c.send(json!({"event": "authenticate", "data": {"token": "user:a", "publicKey": pk}}))
            .await;
        let connected = c.expect_event("connected").await;
        let server = STD.decode(connected["serverPublicKey"].as_str().unwrap()).unwrap();
        let salt = STD.decode(connected["salt"].as_str().unwrap()).unwrap();
        let key = ignis::derive(&secret, &EcPublicKey::from_sec1_uncompressed(&server).unwrap(), &salt);
        (c, key, connected)
    }

    async fn ignis_server() -> TestServer {
        TestServer::start(builder().require_encryption(true).handshake(sealcast::IgnisCompat)).await
    }

    #[tokio::test]
    async fn reference_clients_decrypt_our_messages_and_we_open_theirs() {
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let s = seen.clone();
        let b = builder()
            .require_encryption(true)
            .handshake(sealcast::IgnisCompat)
            .message_handler(move |m: IncomingMessage| {
                let s = s.clone();
                async move {
                    s.lock().push(m.data);
                    Ok::<_, HookError>(())
                }
            });
        let t = TestServer::start(b).await;
        let (mut c, key, connected) = ignis_login(&t).await;
        t.server
            .send_to_client(connected["id"].as_str().unwrap(), "news", &json!({"n": 1}))
            .unwrap();
        let frame = c.next_text(WAIT).await.unwrap();
        let inner: Value = serde_json::from_slice(&key.open(frame.as_bytes()).unwrap()).unwrap();
        assert_eq!(inner, json!({"event": "news", "data": {"n": 1}}));
        c.send_text(&key.seal(br#"{"event":"chat","data":"hello"}"#).unwrap())
            .await;
        eventually("inbound record opened", || seen.lock().as_slice() == [json!("hello")]).await;
    }

    #[tokio::test]
    async fn plaintext_after_the_ignis_handshake_closes_4004_and_bad_records_4005() {
        let t = ignis_server().await;
        let (mut c, _, _) = ignis_login(&t).await;
        c.send(json!({"event": "chat", "data": 1})).await;
        assert_eq!(c.expect_close().await.0, 4004);
        let (mut c, _, _) = ignis_login(&t).await;
        c.send(json!({"event": "encrypted", "data": {"iv": "AAAAAAAAAAAAAAAA", "ct": "AAAAAAAAAAAAAAAAAAAAAA=="}}))
            .await;
        assert_eq!(c.expect_close().await.0, 4005);
    }

    #[tokio::test]
    async fn a_bad_ignis_key_is_closed_4004() {
        let t = ignis_server().await;
        let mut c = t.connect().await;
        c.send(json!({"event": "authenticate", "data": {"token": "user:a", "publicKey": "bm90IGEga2V5"}}))
            .await;
        assert_eq!(c.expect_close().await.0, 4004);
    }
}

#[tokio::test]
async fn a_credential_refresh_rotates_the_servers_keys() {
    let t = enc_server().await;
    let mut c = RawEnc::login(&t, "user:a", &[test_key().pinned()]).await;
    assert_eq!(c.opener.epoch(), 0);
    c.send(json!({"event": "refresh", "data": {"token": "user:a"}})).await;
    // The refresh is handled asynchronously; probe until a message arrives under the new epoch.
    for i in 0..50 {
        t.server.send_to_client(&c.id(), "probe", &i).unwrap();
        assert_eq!(c.recv().await, json!({"event": "probe", "data": i}));
        if c.opener.epoch() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server never switched to epoch 1 after the refresh");
}

#[tokio::test]
async fn a_burst_through_the_transformer_across_key_updates_arrives_whole_and_in_order() {
    // The writer seals a drained batch under one permit; a transformer (async) and epoch ratchets inside a
    // batch (one seal emitting two records) must not reorder or drop anything.
    let b = enc_builder()
        .encrypted_batch_limit(1)
        .max_records_per_epoch(7)
        .outbound_queue(4096)
        .outbound_transformer(|o: Outgoing| async move {
            Ok::<_, HookError>(Transformed::Replace {
                event: o.event,
                data: json!({"w": o.data}),
            })
        });
    let t = TestServer::start(b).await;
    let cfg = |tok: &str| {
        ClientConfig::new(t.url(), tok)
            .pin(test_key().pinned())
            .max_records_per_epoch(7)
    };
    let mut a = EncClient::connect(cfg("user:a")).await.unwrap();
    let mut b = EncClient::connect(cfg("user:b")).await.unwrap();
    for i in 0..300 {
        t.server.send_to_room("ws-default", "n", &i, &[]).unwrap();
    }
    for c in [&mut a, &mut b] {
        for i in 0..300 {
            assert_eq!(c.recv().await.unwrap().data, json!({"w": i}));
        }
    }
}

/// Passes text through unchanged and counts the heartbeats it is told about.
struct Counting(Arc<AtomicUsize>);

impl Counting {
    fn count(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Sealer for Counting {
    fn seal(&mut self, inner: &str, out: &mut Frames<'_>) -> Result<(), CloseCode> {
        out.push(inner);
        Ok(())
    }

    fn idle(&mut self) {
        self.count();
    }
}

impl Opener for Counting {
    fn open(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, CloseCode> {
        Ok(Some(frame.to_vec()))
    }

    fn idle(&mut self) {
        self.count();
    }
}

/// A server whose sessions pass text through and count the idle signals their sealer and opener hear.
async fn counting_server() -> (TestServer, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let sealer_idle = Arc::new(AtomicUsize::new(0));
    let opener_idle = Arc::new(AtomicUsize::new(0));
    let (s, o) = (sealer_idle.clone(), opener_idle.clone());
    let b = builder().handshake(move |_req: HandshakeRequest| {
        let session = Session {
            connected_fields: Default::default(),
            sealer: Box::new(Counting(s.clone())),
            opener: Box::new(Counting(o.clone())),
        };
        async move { Ok::<_, HookError>(HandshakeOutcome::Encrypted(session)) }
    });
    (TestServer::start(b).await, sealer_idle, opener_idle)
}

fn load(n: &AtomicUsize) -> usize {
    n.load(Ordering::Relaxed)
}

#[tokio::test]
async fn the_sealer_hears_when_everything_queued_is_sent() {
    let (t, sealer_idle, _) = counting_server().await;
    let (mut c, data) = t.login("user:a").await;
    let id = id_of(&data);
    eventually("the writer went idle after connected", || load(&sealer_idle) >= 1).await;
    let before = load(&sealer_idle);
    t.server.send_to_client(&id, "m", &json!(1)).unwrap();
    assert_eq!(c.expect_event("m").await, json!(1));
    eventually("the writer went idle again", || load(&sealer_idle) > before).await;
}

#[tokio::test]
async fn the_opener_hears_when_no_frame_is_waiting() {
    let (t, _, opener_idle) = counting_server().await;
    let (mut c, _) = t.login("user:a").await;
    eventually("the reader went idle after authenticating", || load(&opener_idle) >= 1).await;
    let before = load(&opener_idle);
    c.send(json!({"event": "heartbeat"})).await;
    eventually("the reader went idle again", || load(&opener_idle) > before).await;
}

#[tokio::test]
async fn a_wsenc1_session_keeps_working_across_idle_spells() {
    let t = enc_server().await;
    let mut c = RawEnc::login(&t, "user:a", &[test_key().pinned()]).await;
    for round in 0..3 {
        // Each direction's schedule is released whenever it idles, and rebuilt by the next record.
        let room = format!("r{round}");
        c.send(json!({"event": "join", "data": {"rooms": [room]}})).await;
        eventually("joined", || t.server.clients_by_room(&room).len() == 1).await;
        t.server.send_to_client(&c.id(), "m", &json!(round)).unwrap();
        assert_eq!(c.expect_event("m").await, json!(round));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
