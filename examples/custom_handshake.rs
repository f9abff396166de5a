//! Plugging a user-written handshake into sealcast: a pre-shared-key (PSK) scheme.
//!
//! The client names a PSK and sends a random nonce in `authenticate`; the server answers with its own nonce in
//! `connected`; both derive one key per direction from the PSK and the two nonces and then exchange
//! `{"event":"encrypted","data":{"seq":N,"ct":"..."}}` records with counter nonces. The server enforces the
//! same rules as for wsenc/1: `connected` is the last plaintext frame, every later frame is sealed in order, and
//! anything that is not a valid next record closes the connection.
//!
//! Run it: `cargo run --example custom_handshake` (starts a server on a free port, connects a client, exchanges
//! a message both ways and prints it).

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use sealcast::crypto::backend::{hkdf_sha256, random_bytes, AeadKey};
use sealcast::session::{Frames, Opener, Sealer};
use sealcast::{
    AuthRequest, CloseCode, HandshakeOutcome, HandshakeRequest, HookError, Identity, IncomingMessage, Server, Session,
};
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;

const PSK_ID: &str = "demo";
const PSK: &[u8; 32] = b"an example pre-shared key 32 B!!";

/// Direction keys derived from the PSK and both nonces.
fn keys(client_nonce: &[u8], server_nonce: &[u8]) -> (AeadKey, AeadKey) {
    let mut okm = zeroize::Zeroizing::new([0u8; 64]);
    let salt = [client_nonce, server_nonce].concat();
    hkdf_sha256(&salt, PSK, &[b"example psk v1"], okm.as_mut()).expect("64 bytes is a valid HKDF length");
    let (c2s, s2c) = okm.split_at(32);
    let c2s: [u8; 32] = c2s.try_into().expect("32 bytes");
    let s2c: [u8; 32] = s2c.try_into().expect("32 bytes");
    (AeadKey::new(&c2s), AeadKey::new(&s2c))
}

fn nonce(seq: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n
}

/// One direction of the record layer (used by both the server and the example client).
struct Records {
    key: AeadKey,
    seq: u64,
}

impl Records {
    fn seal(&mut self, inner: &[u8]) -> String {
        let mut buf = inner.to_vec();
        let tag = self
            .key
            .seal_in_place(&nonce(self.seq), b"psk", &mut buf)
            .expect("seal");
        buf.extend_from_slice(&tag);
        let frame = json!({"event": "encrypted", "data": {"seq": self.seq, "ct": B64.encode(&buf)}}).to_string();
        self.seq += 1;
        frame
    }

    fn open(&mut self, frame: &[u8]) -> Result<Vec<u8>, CloseCode> {
        let v: Value = serde_json::from_slice(frame).map_err(|_| CloseCode::EncryptionRequired)?;
        if v["event"] != "encrypted" {
            return Err(CloseCode::EncryptionRequired);
        }
        if v["data"]["seq"].as_u64() != Some(self.seq) {
            return Err(CloseCode::DecryptionFailed);
        }
        let ct = v["data"]["ct"].as_str().ok_or(CloseCode::DecryptionFailed)?;
        let mut buf = B64.decode(ct).map_err(|_| CloseCode::DecryptionFailed)?;
        let split = buf.len().checked_sub(16).ok_or(CloseCode::DecryptionFailed)?;
        let tag: [u8; 16] = buf
            .split_off(split)
            .try_into()
            .map_err(|_| CloseCode::DecryptionFailed)?;
        self.key
            .open_in_place(&nonce(self.seq), b"psk", &mut buf, &tag)
            .map_err(|_| CloseCode::DecryptionFailed)?;
        self.seq += 1;
        Ok(buf)
    }
}

impl Sealer for Records {
    fn seal(&mut self, inner: &str, out: &mut Frames<'_>) -> Result<(), CloseCode> {
        out.push(&Records::seal(self, inner.as_bytes()));
        Ok(())
    }
}

impl Opener for Records {
    fn open(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, CloseCode> {
        Records::open(self, frame).map(Some)
    }
}

/// The server side of the PSK handshake.
async fn psk_handshake(req: HandshakeRequest) -> Result<HandshakeOutcome, HookError> {
    if req.data.get("pskId").and_then(Value::as_str) != Some(PSK_ID) {
        return Ok(HandshakeOutcome::Reject);
    }
    let Some(client_nonce) = req
        .data
        .get("nonce")
        .and_then(Value::as_str)
        .and_then(|n| B64.decode(n).ok())
    else {
        return Ok(HandshakeOutcome::Reject);
    };
    if client_nonce.len() != 16 {
        return Ok(HandshakeOutcome::Reject);
    }
    let mut server_nonce = [0u8; 16];
    random_bytes(&mut server_nonce)?;
    let (c2s, s2c) = keys(&client_nonce, &server_nonce);
    let mut connected_fields = Map::new();
    connected_fields.insert("serverNonce".into(), Value::String(B64.encode(server_nonce)));
    Ok(HandshakeOutcome::Encrypted(Session {
        connected_fields,
        sealer: Box::new(Records { key: s2c, seq: 0 }),
        opener: Box::new(Records { key: c2s, seq: 0 }),
    }))
}

/// Starts a server with the PSK handshake, runs one client through it, returns what the client received.
async fn demo() -> Result<Value, Box<dyn std::error::Error>> {
    let echo_server: Arc<std::sync::OnceLock<Server>> = Arc::default();
    let handle = echo_server.clone();
    let server = Server::builder()
        .authenticator(|_: AuthRequest| async { Ok::<_, HookError>(Some(Identity::default())) })
        .handshake(psk_handshake)
        .message_handler(move |m: IncomingMessage| {
            let handle = handle.clone();
            async move {
                if let Some(server) = handle.get() {
                    server.send_to_client(&m.client_id, "echo", &m.data)?;
                }
                Ok::<_, HookError>(())
            }
        })
        .build()?;
    let _ = echo_server.set(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/ws", listener.local_addr()?);
    let app: axum::Router = server.router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let mut client_nonce = [0u8; 16];
    random_bytes(&mut client_nonce)?;
    let auth = json!({"event": "authenticate", "data": {"pskId": PSK_ID, "nonce": B64.encode(client_nonce)}});
    ws.send(Message::text(auth.to_string())).await?;
    let connected: Value = serde_json::from_str(ws.next().await.ok_or("closed")??.to_text()?)?;
    let server_nonce = B64.decode(connected["data"]["serverNonce"].as_str().ok_or("no serverNonce")?)?;
    let (c2s, s2c) = keys(&client_nonce, &server_nonce);
    let (mut send, mut recv) = (Records { key: c2s, seq: 0 }, Records { key: s2c, seq: 0 });
    ws.send(Message::text(send.seal(br#"{"event":"hello","data":"over PSK"}"#)))
        .await?;
    let frame = ws.next().await.ok_or("closed")??;
    let inner = recv
        .open(frame.to_text()?.as_bytes())
        .map_err(|c| format!("record refused: {c}"))?;
    server.shutdown().await;
    Ok(serde_json::from_slice(&inner)?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("{}", demo().await?);
    Ok(())
}

#[test]
fn psk_handshake_round_trip() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let got = rt.block_on(demo()).expect("demo runs");
    assert_eq!(got, json!({"event": "echo", "data": "over PSK"}));
}
