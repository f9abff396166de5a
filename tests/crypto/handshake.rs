//! wsenc/1 handshake: round trips, strict request parsing, kid selection, client-side abort.

use crate::common_crypto::{auth_data, connected_data, seal1, session, session_with, CONN_ID, USER_ID};
use sealcast::crypto::backend::EcSecretKey;
use sealcast::crypto::{
    b64, server_handshake, ClientHandshake, HandshakeError, HandshakeRequest, OpenError, ServerHello, StaticKey,
    StaticKeySet,
};
use serde_json::{json, Value};

fn valid_pub_b64() -> String {
    ClientHandshake::new().unwrap().public_key_b64u()
}

fn req(data: Value) -> Result<Option<HandshakeRequest>, HandshakeError> {
    HandshakeRequest::from_auth_data(&data)
}

#[test]
fn round_trip_both_directions() {
    let mut s = session();
    assert_eq!(s.server_sealer.next_seq(), 1, "s2c seq 0 is confirm");
    assert_eq!(s.client_opener.expected_seq(), 1);
    assert_eq!(s.client_sealer.next_seq(), 0);
    assert_eq!(s.server_opener.expected_seq(), 0);
    for i in 0..5u32 {
        let c2s = format!(r#"{{"event":"chat","data":{{"n":{i}}}}}"#);
        let f = seal1(&mut s.client_sealer, c2s.as_bytes());
        assert_eq!(s.server_opener.open(&f).unwrap().unwrap(), c2s.as_bytes());
        let s2c = format!(r#"{{"event":"message","data":{{"n":{i},"text":"héllo"}}}}"#);
        let f = seal1(&mut s.server_sealer, s2c.as_bytes());
        assert_eq!(s.client_opener.open(&f).unwrap().unwrap(), s2c.as_bytes());
    }
    assert_eq!(s.client_sealer.next_seq(), 5);
    assert_eq!(s.server_opener.expected_seq(), 5);
    assert_eq!(s.server_sealer.next_seq(), 6);
    assert_eq!(s.client_opener.expected_seq(), 6);
    assert_eq!(s.server_sealer.epoch(), 0);
}

#[test]
fn request_without_public_key_is_plaintext() {
    assert!(req(json!({"token": "t"})).unwrap().is_none());
    // `v` alone does not make an encrypted client
    assert!(req(json!({"token": "t", "v": 1})).unwrap().is_none());
    assert_eq!(
        req(json!("not an object")).unwrap_err(),
        HandshakeError::InvalidField("data")
    );
}

#[test]
fn request_version_must_be_integer_one() {
    let pk = valid_pub_b64();
    assert!(req(json!({"v": 1, "publicKey": pk})).unwrap().is_some());
    assert_eq!(
        req(json!({"publicKey": pk})).unwrap_err(),
        HandshakeError::MissingField("v")
    );
    for v in [
        json!(0),
        json!(2),
        json!(1.0),
        json!("1"),
        json!(null),
        json!(-1),
        json!([1]),
    ] {
        assert_eq!(
            req(json!({"v": v, "publicKey": pk})).unwrap_err(),
            HandshakeError::UnsupportedVersion,
            "v = {v}"
        );
    }
}

#[test]
fn request_rejects_bad_public_keys() {
    let good = b64::decode(&valid_pub_b64()).unwrap();
    let sk = EcSecretKey::generate().unwrap();
    let sec1 = sk.public_key().to_sec1();
    // compressed form of a valid key
    let mut compressed = vec![0x02 | (sec1[64] & 1)];
    compressed.extend_from_slice(&sec1[1..33]);
    // off-curve: y + 1
    let mut off = sec1;
    off[64] ^= 1;
    // hybrid prefix
    let mut hybrid = sec1;
    hybrid[0] = 0x06 | (sec1[64] & 1);
    let mut long = good.clone();
    long.push(0);
    let mut zero_x = [0u8; 65];
    zero_x[0] = 4;
    let bad_keys: Vec<(&str, Vec<u8>)> = vec![
        ("compressed", compressed),
        ("off-curve", off.to_vec()),
        ("hybrid", hybrid.to_vec()),
        ("identity", vec![0x00]),
        ("zeros", vec![0u8; 65]),
        ("04 zeros", zero_x.to_vec()),
        ("short", good[..64].to_vec()),
        ("long", long),
        ("empty", vec![]),
    ];
    for (name, k) in bad_keys {
        let e = req(json!({"v": 1, "publicKey": b64::encode(&k)})).unwrap_err();
        assert!(
            matches!(
                e,
                HandshakeError::InvalidPublicKey | HandshakeError::InvalidField("publicKey")
            ),
            "{name}: {e:?}"
        );
        assert_eq!(e.close_code(), 4004);
    }
    // not strict base64url
    let pk = b64::encode(&good);
    let std_b64 = pk.replace('-', "+").replace('_', "/");
    for bad in [format!("{pk}="), format!(" {pk}"), format!("{pk}\n"), std_b64.clone()] {
        if bad == pk {
            continue;
        }
        assert_eq!(
            req(json!({"v": 1, "publicKey": bad})).unwrap_err(),
            HandshakeError::InvalidField("publicKey")
        );
    }
    for v in [json!(null), json!(1), json!([pk]), json!({"k": pk})] {
        assert_eq!(
            req(json!({"v": 1, "publicKey": v})).unwrap_err(),
            HandshakeError::InvalidField("publicKey")
        );
    }
}

#[test]
fn request_kid_rules() {
    let key = StaticKey::generate().unwrap();
    let keys = StaticKeySet::new(key);
    let pk = valid_pub_b64();
    for kid in [
        json!(null),
        json!(1),
        json!("AAAA"),
        json!("AAAAAAAAAAAAAA"),
        json!("AAAAAAAAAA="),
    ] {
        assert_eq!(
            req(json!({"v": 1, "publicKey": pk, "kid": kid})).unwrap_err(),
            HandshakeError::InvalidField("kid"),
            "kid = {kid}"
        );
    }
    // well-formed but not held
    let r = req(json!({"v": 1, "publicKey": pk, "kid": b64::encode(&[7u8; 8])}))
        .unwrap()
        .unwrap();
    let e = server_handshake(&keys, &r, CONN_ID, USER_ID).unwrap_err();
    assert_eq!(e, HandshakeError::UnknownKid);
    assert_eq!(e.close_code(), 4004);
    // held
    let kid = keys.current().kid_b64u();
    let r = req(json!({"v": 1, "publicKey": pk, "kid": kid})).unwrap().unwrap();
    assert_eq!(r.kid(), Some(keys.current().kid()));
    assert!(server_handshake(&keys, &r, CONN_ID, USER_ID).is_ok());
}

#[test]
fn kid_selects_the_next_key_else_current() {
    let current = StaticKey::generate().unwrap();
    let next = StaticKey::generate().unwrap();
    let (pin_cur, pin_next) = (current.pinned(), next.pinned());
    let (kid_cur, kid_next) = (current.kid(), next.kid());
    let keys = StaticKeySet::new(current).with_key(next).unwrap();
    let both = [pin_cur.clone(), pin_next.clone()];

    let mut s = session_with(&keys, &both, Some(kid_next));
    assert_eq!(s.hello.kid(), kid_next);
    let f = seal1(&mut s.client_sealer, br#"{"event":"a","data":1}"#);
    assert!(s.server_opener.open(&f).unwrap().is_some());
    // a client pinning only the next key works with it
    let s = session_with(&keys, std::slice::from_ref(&pin_next), Some(kid_next));
    assert_eq!(s.hello.kid(), kid_next);
    // no kid: the current key
    let s = session_with(&keys, &both, None);
    assert_eq!(s.hello.kid(), kid_cur);
    let s = session_with(&keys, &both, Some(kid_cur));
    assert_eq!(s.hello.kid(), kid_cur);

    // a client pinning only `current` aborts when the server answers with `next`
    let client = ClientHandshake::new().unwrap();
    let r = HandshakeRequest::from_auth_data(&auth_data(&client, Some(kid_next)))
        .unwrap()
        .unwrap();
    let (hello, _, _) = server_handshake(&keys, &r, CONN_ID, USER_ID).unwrap();
    assert_eq!(
        client.finish(&[pin_cur], &hello, CONN_ID, USER_ID).unwrap_err(),
        HandshakeError::UnknownKid
    );
    // duplicate kids are refused
    let k = StaticKey::generate().unwrap();
    let pem = k.to_pkcs8_pem().unwrap();
    let dup = StaticKey::from_pkcs8_pem(&pem).unwrap();
    assert!(StaticKeySet::new(k).with_key(dup).is_err());
}

#[test]
fn two_handshakes_yield_different_keys() {
    let key = StaticKey::generate().unwrap();
    let pin = key.pinned();
    let keys = StaticKeySet::new(key);
    let mut a = session_with(&keys, std::slice::from_ref(&pin), None);
    let mut b = session_with(&keys, std::slice::from_ref(&pin), None);
    assert_ne!(a.hello.salt_b64u(), b.hello.salt_b64u());
    assert_ne!(a.hello.server_public_key_b64u(), b.hello.server_public_key_b64u());
    assert_ne!(a.hello.confirm_b64u(), b.hello.confirm_b64u());
    let m = br#"{"event":"chat","data":"same"}"#;
    let fa = seal1(&mut a.client_sealer, m);
    let fb = seal1(&mut b.client_sealer, m);
    assert_ne!(fa, fb);
    // a record from another session does not open (its iv already differs from our nonce)
    let e = b.server_opener.open(&fa).unwrap_err();
    assert_eq!(e, OpenError::NonceMismatch);
    assert_eq!(e.close_code(), 4005);
    assert_eq!(a.server_opener.open(&fa).unwrap().unwrap(), m);
}

/// Runs server_handshake for a fresh client and returns the client, the hello and the pins.
fn server_side(keys: &StaticKeySet) -> (ClientHandshake, ServerHello) {
    let client = ClientHandshake::new().unwrap();
    let r = HandshakeRequest::from_auth_data(&auth_data(&client, None))
        .unwrap()
        .unwrap();
    let (hello, _, _) = server_handshake(keys, &r, CONN_ID, USER_ID).unwrap();
    (client, hello)
}

fn with_field(hello: &ServerHello, field: &str, value: &str) -> ServerHello {
    let mut d = connected_data(hello, CONN_ID, USER_ID);
    d[field] = Value::String(value.into());
    ServerHello::from_connected_data(&d).unwrap()
}

#[test]
fn client_aborts_on_swapped_fields_or_identities() {
    let current = StaticKey::generate().unwrap();
    let next = StaticKey::generate().unwrap();
    let pins = [current.pinned(), next.pinned()];
    let next_kid = next.kid_b64u();
    let keys = StaticKeySet::new(current).with_key(next).unwrap();
    let (_, other) = server_side(&keys);

    type Tamper<'a> = Box<dyn Fn(&ServerHello) -> ServerHello + 'a>;
    let cases: Vec<(&str, Tamper<'_>)> = vec![
        (
            "serverPublicKey",
            Box::new(|h| with_field(h, "serverPublicKey", &other.server_public_key_b64u())),
        ),
        ("salt", Box::new(|h| with_field(h, "salt", &other.salt_b64u()))),
        ("kid", Box::new(|h| with_field(h, "kid", &next_kid))),
        ("confirm", Box::new(|h| with_field(h, "confirm", &other.confirm_b64u()))),
    ];
    for (name, tamper) in cases {
        let (client, hello) = server_side(&keys);
        let bad = tamper(&hello);
        assert_ne!(bad, hello, "{name}");
        let e = client.finish(&pins, &bad, CONN_ID, USER_ID).unwrap_err();
        assert_eq!(e, HandshakeError::ServerAuthFailed, "{name}");
        assert_eq!(e.to_string(), "server authentication failed");
    }
    // connId / userId differ
    for (c, u) in [("c-0002", USER_ID), (CONN_ID, "u-43"), (CONN_ID, ""), ("", USER_ID)] {
        let (client, hello) = server_side(&keys);
        assert_eq!(
            client.finish(&pins, &hello, c, u).unwrap_err(),
            HandshakeError::ServerAuthFailed,
            "{c} {u}"
        );
    }
    // untampered works
    let (client, hello) = server_side(&keys);
    assert!(client.finish(&pins, &hello, CONN_ID, USER_ID).is_ok());
    // no pins at all
    let (client, hello) = server_side(&keys);
    assert_eq!(
        client.finish(&[], &hello, CONN_ID, USER_ID).unwrap_err(),
        HandshakeError::UnknownKid
    );
    // invalid serverPublicKey (well-formed base64url, off-curve)
    let (client, hello) = server_side(&keys);
    let mut pk = b64::decode(&hello.server_public_key_b64u()).unwrap();
    pk[64] ^= 1;
    let bad = with_field(&hello, "serverPublicKey", &b64::encode(&pk));
    assert_eq!(
        client.finish(&pins, &bad, CONN_ID, USER_ID).unwrap_err(),
        HandshakeError::InvalidPublicKey
    );
}

#[test]
fn connected_must_carry_every_crypto_field() {
    let key = StaticKey::generate().unwrap();
    let keys = StaticKeySet::new(key);
    let (_, hello) = server_side(&keys);
    let full = connected_data(&hello, CONN_ID, USER_ID);
    assert_eq!(ServerHello::from_connected_data(&full).unwrap(), hello);
    for f in ["serverPublicKey", "salt", "kid", "confirm"] {
        let mut d = full.clone();
        d.as_object_mut().unwrap().remove(f);
        let e = ServerHello::from_connected_data(&d).unwrap_err();
        assert_eq!(e, HandshakeError::MissingField(f));
        assert_eq!(e.close_code(), 4004);
        let mut d = full.clone();
        d[f] = json!(1);
        assert_eq!(
            ServerHello::from_connected_data(&d).unwrap_err(),
            HandshakeError::InvalidField(f)
        );
        let mut d = full.clone();
        let s = d[f].as_str().unwrap().to_string();
        d[f] = json!(format!("{s}="));
        assert_eq!(
            ServerHello::from_connected_data(&d).unwrap_err(),
            HandshakeError::InvalidField(f)
        );
    }
    // plaintext `connected` (no crypto fields) is fatal
    let plain = json!({"id": CONN_ID, "userId": USER_ID, "time": "t"});
    assert!(ServerHello::from_connected_data(&plain).is_err());
    for v in [json!(2), json!(0), json!("1"), json!(1.0)] {
        let mut d = full.clone();
        d["v"] = v;
        assert_eq!(
            ServerHello::from_connected_data(&d).unwrap_err(),
            HandshakeError::UnsupportedVersion
        );
    }
}

#[test]
fn static_key_pem_round_trip() {
    let k = StaticKey::generate().unwrap();
    let pem = k.to_pkcs8_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let k2 = StaticKey::from_pkcs8_pem(&pem).unwrap();
    assert_eq!(k.kid(), k2.kid());
    assert_eq!(k.public_key_sec1(), k2.public_key_sec1());
    assert_eq!(k.kid().to_vec(), {
        use sealcast::crypto::backend::sha256;
        sha256(&[&k.public_key_sec1()])[..8].to_vec()
    });
    assert!(StaticKey::from_pkcs8_pem("garbage").is_err());
    assert!(StaticKey::from_pkcs8_pem(&pem.replace('A', "B")).is_err());
    // the pin round-trips through base64url
    let pin = sealcast::crypto::PinnedKey::from_b64u(&k.public_key_b64u()).unwrap();
    assert_eq!(pin, k.pinned());
}

#[test]
fn state_types_can_move_across_tasks() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<sealcast::crypto::RecordSealer>();
    send::<sealcast::crypto::RecordOpener>();
    send::<ClientHandshake>();
    send_sync::<StaticKeySet>();
    send_sync::<ServerHello>();
}
