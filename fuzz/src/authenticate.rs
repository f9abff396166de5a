//! `authenticate`: the `authenticate` payload (JSON) through `HandshakeRequest::from_auth_data`, the client's
//! `connected` parsing (`ServerHello::from_connected_data`), strict base64url and public-key parsing.
//!
//! Oracles: a request is accepted only with `v` the integer 1, a `publicKey` that is the canonical base64url of
//! an uncompressed on-curve point (it pins as a `PinnedKey` too) and an 8-byte `kid` if present; base64url
//! decoding accepts only canonical text (`encode(decode(s)) == s`) and every byte string round-trips; a parsed
//! `connected` re-serialises to the same fields.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sealcast::crypto::{b64, ignis, HandshakeError, HandshakeRequest, PinnedKey, ServerHello};
use sealcast::protocol::inbound::{self, ClientMessage};
use serde_json::{Map, Value};

/// The fuzz target.
pub fn check(data: &[u8]) {
    check_bytes(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_b64(text);
    check_ignis_key(text);
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        check_auth_data(&v);
        check_connected_data(&v);
    }
    // The same payload inside a client frame, as the router hands it on.
    if text.len() < 64 * 1024 {
        let frame = format!(r#"{{"event":"authenticate","data":{text}}}"#);
        if let Ok(ClientMessage::Authenticate(Some(raw))) = inbound::parse(&frame) {
            if let Ok(m) = serde_json::from_str::<Map<String, Value>>(raw.get()) {
                check_auth_data(&Value::Object(m));
            }
        }
    }
}

/// Arbitrary bytes: base64url round trip and SEC1 key parsing.
fn check_bytes(data: &[u8]) {
    let e = b64::encode(data);
    assert_eq!(e.len(), b64::encoded_len(data.len()));
    assert_eq!(b64::decode(&e).as_deref(), Ok(data));
    if let Ok(pin) = PinnedKey::from_sec1(data) {
        assert_eq!(data.len(), 65);
        assert_eq!(data.first(), Some(&4));
        let again = PinnedKey::from_b64u(&e).unwrap_or_else(|e| panic!("pinned key does not re-parse: {e}"));
        assert_eq!(again.kid(), pin.kid());
    }
}

/// Strict base64url: only canonical text decodes; `decode_array` agrees with `decode`.
pub fn check_b64(text: &str) {
    let decoded = b64::decode(text);
    if let Ok(bytes) = &decoded {
        assert_eq!(b64::encode(bytes), text, "non-canonical base64url accepted");
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
    let ok = decoded.ok();
    let want = |n: usize| ok.as_ref().filter(|b| b.len() == n).cloned();
    assert_eq!(b64::decode_array::<8>(text).ok().map(Vec::from), want(8));
    assert_eq!(b64::decode_array::<12>(text).ok().map(Vec::from), want(12));
    assert_eq!(b64::decode_array::<16>(text).ok().map(Vec::from), want(16));
    assert_eq!(b64::decode_array::<32>(text).ok().map(Vec::from), want(32));
    assert_eq!(b64::decode_array::<65>(text).ok().map(Vec::from), want(65));
    if PinnedKey::from_b64u(text).is_ok() {
        let bytes = want(65).unwrap_or_else(|| panic!("pinned key from non-65-byte text"));
        assert_eq!(bytes.first(), Some(&4));
    }
}

fn check_ignis_key(text: &str) {
    if ignis::parse_public_key(text).is_ok() {
        let raw = STANDARD
            .decode(text)
            .unwrap_or_else(|e| panic!("ignis key accepted but not base64: {e}"));
        assert_eq!(raw.len(), 65);
        assert_eq!(raw.first(), Some(&4));
    }
}

/// `HandshakeRequest::from_auth_data` against an independent reading of the fields.
pub fn check_auth_data(v: &Value) {
    let result = HandshakeRequest::from_auth_data(v);
    let Some(m) = v.as_object() else {
        assert!(matches!(result, Err(HandshakeError::InvalidField("data"))));
        return;
    };
    let Some(pk) = m.get("publicKey") else {
        assert!(matches!(result, Ok(None)), "no publicKey must mean a plaintext client");
        return;
    };
    let Ok(Some(req)) = result else {
        assert!(
            !matches!(result, Ok(None)),
            "publicKey present but treated as plaintext"
        );
        return;
    };
    assert_eq!(m.get("v").and_then(Value::as_u64), Some(1), "wrong version accepted");
    let pk = pk.as_str().unwrap_or_else(|| panic!("non-string publicKey accepted"));
    let bytes = b64::decode(pk).unwrap_or_else(|_| panic!("publicKey not strict base64url"));
    assert_eq!(b64::encode(&bytes), pk);
    assert_eq!(bytes.len(), 65);
    assert_eq!(bytes.first(), Some(&4));
    assert!(PinnedKey::from_b64u(pk).is_ok(), "accepted key does not pin");
    match m.get("kid") {
        None => assert_eq!(req.kid(), None),
        Some(k) => {
            let k = k.as_str().unwrap_or_else(|| panic!("non-string kid accepted"));
            let kid = b64::decode(k).unwrap_or_else(|_| panic!("kid not strict base64url"));
            assert_eq!(req.kid().map(Vec::from), Some(kid));
        }
    }
}

/// `ServerHello::from_connected_data`: accepted only with `v` 1 and the four fields; re-serialises identically.
pub fn check_connected_data(v: &Value) {
    let Ok(hello) = ServerHello::from_connected_data(v) else {
        return;
    };
    let m = v.as_object().unwrap_or_else(|| panic!("connected data not an object"));
    assert_eq!(m.get("v").and_then(Value::as_u64), Some(1));
    for (field, got) in [
        ("serverPublicKey", hello.server_public_key_b64u()),
        ("salt", hello.salt_b64u()),
        ("kid", hello.kid_b64u()),
        ("confirm", hello.confirm_b64u()),
    ] {
        assert_eq!(m.get(field).and_then(Value::as_str), Some(got.as_str()), "{field}");
    }
    let mut again = Map::new();
    hello.insert_into(&mut again);
    let back = ServerHello::from_connected_data(&Value::Object(again))
        .unwrap_or_else(|e| panic!("re-serialised connected refused: {e}"));
    assert_eq!(back, hello);
}
