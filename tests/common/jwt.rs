//! JWT helpers: the committed test key pairs under `tests/fixtures/jwt/` and token signing.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// A fixture file's text (`rs256-a.key.pem`, `rs256-a.pub.pem`, `rs256-b.*`, `es256-a.*`). Found from the
/// crate's directory upwards: crates/sealcast-server's tests use this harness too.
pub fn fixture(name: &str) -> String {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest
        .ancestors()
        .find(|dir| dir.join("tests/fixtures/jwt").is_dir())
        .unwrap_or(manifest);
    let path = format!("{}/tests/fixtures/jwt/{name}", root.display());
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Claims for `sub`, valid for a minute, with `rooms` patterns if given.
pub fn claims(sub: &str, rooms: Option<&[&str]>) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut c = json!({"sub": sub, "exp": now + 60, "iat": now});
    if let Some(rooms) = rooms {
        c["rooms"] = json!(rooms);
    }
    c
}

/// A token for `sub` signed with `alg` and the fixture private key `key_file`.
pub fn sign(alg: Algorithm, key_file: &str, sub: &str) -> String {
    let pem = fixture(key_file);
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        other => panic!("no fixture key for {other:?}"),
    };
    jsonwebtoken::encode(&Header::new(alg), &claims(sub, None), &key).unwrap()
}

/// A token whose header says `alg` but which is signed with HMAC-SHA256 over `secret` (for forgeries).
pub fn hmac_signed(header_alg: &str, secret: &[u8], claims: &Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use hmac::Mac as _;
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": header_alg, "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// An unsigned token (`alg: none`, empty signature).
pub fn unsigned(claims: &Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
    format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

fn encoding_key(alg: Algorithm, key_file: &str) -> EncodingKey {
    let pem = fixture(key_file);
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        other => panic!("no fixture key for {other:?}"),
    }
}

/// The public JWK of the fixture private key `key_file`, with `kid`, `use: sig` and `alg`.
pub fn jwk(alg: Algorithm, key_file: &str, kid: &str) -> Value {
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding_key(alg, key_file), alg).unwrap();
    let mut value = serde_json::to_value(jwk).unwrap();
    value["kid"] = json!(kid);
    value["use"] = json!("sig");
    value
}

/// A JWKS document of `keys`.
pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// A token for `sub` signed with `alg` and the fixture private key `key_file`, its header naming `kid`.
pub fn sign_kid(alg: Algorithm, key_file: &str, kid: Option<&str>, sub: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims(sub, None), &encoding_key(alg, key_file)).unwrap()
}
