//! wsenc/1 Appendix A known-answer test, value by value.

use std::num::NonZeroUsize;

use crate::common_crypto::{self, h, h32, seal1};
use sealcast::crypto::backend::{AeadKey, EcSecretKey};
use sealcast::crypto::handshake::server_handshake_with_ephemeral_for_tests;
use sealcast::crypto::record::{aad, nonce};
use sealcast::crypto::schedule::{ikm, initial_secrets, kid_of, transcript_hash, TrafficSecret, TranscriptInput};
use sealcast::crypto::{
    b64, ClientHandshake, Direction, HandshakeRequest, RecordOpener, RecordSealer, ServerHello, StaticKey,
    StaticKeySet, PROTO,
};

const S_PRIV: &str = "d94fd4c5ab0ccfce940b7e815fee6d9d973873aaafde612d017a53bfb088f5c8";
const EC_PRIV: &str = "f5c908b0474dbf26ebbc5051667aa574fe76aed8c1a97b611545e08de25cff54";
const ES_PRIV: &str = "851c112a8e088f06dbfb93a7592e7f79c4bd73bbb0eaa33b5a4eea5ded732170";

const S: &str = "04090dc69ea9ea2baa2002971f91a2ff8b7bb40dd13c57b3edeead4660fa68f8edce26cfc6e61ecc7a601ec7cbc300ef7995ae974991567d7db5a8520db0aa7cd3";
const E_C: &str = "043029ea9c9cdf639fa00adbe829740c0257efabf428dc54815c8602c2499895213af859590d71a22b93ac53f030f2e7d85a8964e36d849a566cd3ab5f3e8bc949";
const E_S: &str = "04d4d467690c49be1aa3df7b03f2f47ba58bb018e492e2b93cef4bfc95ca7670603790a80d96a225d04cccca111e31ba7648682bda018acac649612ce802997be0";
const SALT: &str = "6c0e7736790a5020a75c607273381fe90d859bf34a7afab67aeee9ae58619c9f";
const CONN_ID: &str = "c-0001";
const USER_ID: &str = "u-42";
const KID: &str = "f8657780ef683be5";
const EE: &str = "1b90e4fac5194831ccddb324e4e034d5b21fc0556fcbd1964132e83672bd5749";
const ES: &str = "5ac5303423cb5895f3ecb2a123deaae11476eb24b58851c4a03eb5226f4c2e4c";
const TH: &str = "bb94d819231ba73e0253cbfc053fa0aa891bfcd644518f74749afccd6856e315";
const TS_C2S_0: &str = "59a50d2ac62d2e7147f90b105423ca43279f042f321d30f234e8e96228f8c24a";
const TS_S2C_0: &str = "3a1702a53281678479263fad734718df93866c1be2be2bfb32203bd7210fba4e";
const KEY_C2S_0: &str = "8452434906a1b9d55a9d5cb9a9880143ef3860346fa9e7ade1b51a127e374e06";
const IV_C2S_0: &str = "aed88b600a2e68eb014cc921";
const KEY_S2C_0: &str = "d840e4b3515c7b4bbaa5b8c636d68e17a6d293350e5e27d707844d9400c72ed7";
const IV_S2C_0: &str = "7e2375a5fb68055a9d7285a2";
const TS_C2S_1: &str = "81792094775b34fd5684ea4414b12fbae6b95015a6c09c57f25848871c3c0e2f";
const KEY_C2S_1: &str = "370fb2a074c8bae4218d0c4366e0150f634e111d2dfd6606dfc9487f00fe6913";
const IV_C2S_1: &str = "756dab7ab4c5da8cf277441f";
const CONFIRM: &str = "3e31e7897a895d22bdb62150b794409a";

const MSG_S2C: &[u8] = br#"{"event":"message","data":{"text":"hi"}}"#;
const CT_S2C_1: &str = "bd849c0bbac57e8af14a3cf087e3d3a6ab4f4bb499fab363621fc46cbdadf41cbbe288b9b1828904d16fe4ee053213dbb59adbe3861810141c11e043c63e5c1eb3a8e83a5b7ff3967e6be09192a01ad7";
const MSG_C2S: &[u8] = br#"{"event":"ping","data":{}}"#;
const CT_C2S_0: &str = "c48f6d7a3d949644800198939356c8131da4f8dc0a68bda4de973267e51eafff633c3337759abe487ef7";

const WIRE_SERVER_PUBLIC_KEY: &str =
    "BNTUZ2kMSb4ao997A_L0e6WLsBjkkuK5PO9L_JXKdnBgN5CoDZaiJdBMzMoRHjG6dkhoK9oBisrGSWEs6AKZe-A";
const WIRE_SALT: &str = "bA53NnkKUCCnXGByczgf6Q2Fm_NKevq2eu7prlhhnJ8";
const WIRE_KID: &str = "-GV3gO9oO-U";
const WIRE_CONFIRM: &str = "PjHniXqJXSK9tiFQt5RAmg";
const WIRE_S2C_1: &str = r#"{"event":"encrypted","data":{"seq":1,"iv":"fiN1pftoBVqdcoWj","ct":"vYScC7rFforxSjzwh-PTpqtPS7SZ-rNjYh_EbL2t9By74oi5sYKJBNFv5O4FMhPbtZrb44YYEBQcEeBDxj5cHrOo6Dpbf_OWfmvgkZKgGtc"}}"#;

fn sk(hex_scalar: &str) -> EcSecretKey {
    EcSecretKey::from_scalar_bytes(&h(hex_scalar)).unwrap()
}

fn th() -> [u8; 32] {
    let (s, ec, es) = (h(S), h(E_C), h(E_S));
    transcript_hash(&TranscriptInput {
        kid: &h(KID).try_into().unwrap(),
        server_static: &s.try_into().unwrap(),
        client_ephemeral: &ec.try_into().unwrap(),
        server_ephemeral: &es.try_into().unwrap(),
        salt: &h32(SALT),
        conn_id: CONN_ID,
        user_id: USER_ID,
    })
    .unwrap()
}

#[test]
fn proto_and_scalars_are_the_labelled_hashes() {
    assert_eq!(PROTO.len(), 40);
    assert_eq!(&PROTO[..], b"wsenc/1 NK P-256 HKDF-SHA256 AES-256-GCM");
    use sealcast::crypto::backend::sha256;
    assert_eq!(sha256(&[b"wsenc/1 test server static"]), h32(S_PRIV));
    assert_eq!(sha256(&[b"wsenc/1 test client ephemeral"]), h32(EC_PRIV));
    assert_eq!(sha256(&[b"wsenc/1 test server ephemeral"]), h32(ES_PRIV));
    assert_eq!(sha256(&[b"wsenc/1 test salt"]), h32(SALT));
}

#[test]
fn public_keys_and_kid() {
    assert_eq!(sk(S_PRIV).public_key().to_sec1().to_vec(), h(S));
    assert_eq!(sk(EC_PRIV).public_key().to_sec1().to_vec(), h(E_C));
    assert_eq!(sk(ES_PRIV).public_key().to_sec1().to_vec(), h(E_S));
    let s: [u8; 65] = h(S).try_into().unwrap();
    assert_eq!(kid_of(&s).to_vec(), h(KID));
    let key = StaticKey::from_scalar_bytes_for_tests(&h(S_PRIV)).unwrap();
    assert_eq!(key.kid().to_vec(), h(KID));
    assert_eq!(key.kid_b64u(), WIRE_KID);
    assert_eq!(key.public_key_sec1().to_vec(), h(S));
}

#[test]
fn jwk_coordinates_match() {
    let cases = [
        (
            S_PRIV,
            S,
            "2U_UxasMz86UC36BX-5tnZc4c6qv3mEtAXpTv7CI9cg",
            "CQ3GnqnqK6ogApcfkaL_i3u0DdE8V7Pt7q1GYPpo-O0",
            "zibPxuYezHpgHsfLwwDveZWul0mRVn19tahSDbCqfNM",
        ),
        (
            EC_PRIV,
            E_C,
            "9ckIsEdNvybrvFBRZnqldP52rtjBqXthFUXgjeJc_1Q",
            "MCnqnJzfY5-gCtvoKXQMAlfvq_Qo3FSBXIYCwkmYlSE",
            "OvhZWQ1xoiuTrFPwMPLn2FqJZONthJpWbNOrXz6LyUk",
        ),
        (
            ES_PRIV,
            E_S,
            "hRwRKo4Ijwbb-5OnWS5_ecS9c7uw6qM7Wk7qXe1zIXA",
            "1NRnaQxJvhqj33sD8vR7pYuwGOSS4rk870v8lcp2cGA",
            "N5CoDZaiJdBMzMoRHjG6dkhoK9oBisrGSWEs6AKZe-A",
        ),
    ];
    for (d, p, jd, jx, jy) in cases {
        let p = h(p);
        assert_eq!(b64::encode(&h(d)), jd);
        assert_eq!(b64::encode(&p[1..33]), jx);
        assert_eq!(b64::encode(&p[33..65]), jy);
    }
}

#[test]
fn dh_outputs() {
    let (s, ec, es) = (sk(S_PRIV), sk(EC_PRIV), sk(ES_PRIV));
    let ee_server = es.diffie_hellman(&ec.public_key());
    let ee_client = ec.diffie_hellman(&es.public_key());
    assert_eq!(ee_server.to_vec(), h(EE));
    assert_eq!(ee_client.to_vec(), h(EE));
    let es_server = s.diffie_hellman(&ec.public_key());
    let es_client = ec.diffie_hellman(&s.public_key());
    assert_eq!(es_server.to_vec(), h(ES));
    assert_eq!(es_client.to_vec(), h(ES));
}

#[test]
fn transcript_and_schedule() {
    let th = th();
    assert_eq!(th.to_vec(), h(TH));
    let ikm = ikm(&h32(EE), &h32(ES));
    assert_eq!(ikm[..32], h(EE)[..]);
    assert_eq!(ikm[32..], h(ES)[..]);
    let (c2s, s2c) = initial_secrets(&h32(SALT), &ikm, &th);
    assert_eq!(c2s.expose_secret_for_tests().to_vec(), h(TS_C2S_0));
    assert_eq!(s2c.expose_secret_for_tests().to_vec(), h(TS_S2C_0));
    assert_eq!(c2s.key().to_vec(), h(KEY_C2S_0));
    assert_eq!(c2s.iv().to_vec(), h(IV_C2S_0));
    assert_eq!(s2c.key().to_vec(), h(KEY_S2C_0));
    assert_eq!(s2c.iv().to_vec(), h(IV_S2C_0));
    let c2s_1 = c2s.next();
    assert_eq!(c2s_1.expose_secret_for_tests().to_vec(), h(TS_C2S_1));
    assert_eq!(c2s_1.key().to_vec(), h(KEY_C2S_1));
    assert_eq!(c2s_1.iv().to_vec(), h(IV_C2S_1));
}

#[test]
fn confirm_tag() {
    let th = h32(TH);
    let key = AeadKey::new(&h32(KEY_S2C_0));
    let iv: [u8; 12] = h(IV_S2C_0).try_into().unwrap();
    let tag = key
        .seal_in_place(&nonce(&iv, 0), &aad(Direction::S2c, &th, 0, 0), &mut [])
        .unwrap();
    assert_eq!(tag.to_vec(), h(CONFIRM));
    assert_eq!(b64::encode(&tag), WIRE_CONFIRM);
}

#[test]
fn example_records() {
    let th = h32(TH);
    // s2c epoch 0 seq 1, padded to 64 bytes (24 zero bytes)
    let mut s2c = RecordSealer::new(Direction::S2c, TrafficSecret::from_bytes(&h32(TS_S2C_0)), th, 1);
    s2c.set_padding(NonZeroUsize::new(64));
    let frame = seal1(&mut s2c, MSG_S2C);
    assert_eq!(std::str::from_utf8(&frame).unwrap(), WIRE_S2C_1);
    let v: serde_json::Value = serde_json::from_slice(&frame).unwrap();
    assert_eq!(b64::decode(v["data"]["ct"].as_str().unwrap()).unwrap(), h(CT_S2C_1));
    // c2s epoch 0 seq 0, no padding
    let mut c2s = RecordSealer::new(Direction::C2s, TrafficSecret::from_bytes(&h32(TS_C2S_0)), th, 0);
    let frame = seal1(&mut c2s, MSG_C2S);
    let v: serde_json::Value = serde_json::from_slice(&frame).unwrap();
    assert_eq!(v["data"]["seq"], 0);
    assert_eq!(b64::decode(v["data"]["iv"].as_str().unwrap()).unwrap(), h(IV_C2S_0));
    assert_eq!(b64::decode(v["data"]["ct"].as_str().unwrap()).unwrap(), h(CT_C2S_0));
    // and both open
    let mut o = RecordOpener::new(Direction::C2s, TrafficSecret::from_bytes(&h32(TS_C2S_0)), th, 0);
    assert_eq!(o.open(&frame).unwrap().unwrap(), MSG_C2S);
    let mut o = RecordOpener::new(Direction::S2c, TrafficSecret::from_bytes(&h32(TS_S2C_0)), th, 1);
    assert_eq!(o.open(WIRE_S2C_1.as_bytes()).unwrap().unwrap(), MSG_S2C);
}

#[test]
fn full_handshake_reproduces_the_wire_form() {
    let keys = StaticKeySet::new(StaticKey::from_scalar_bytes_for_tests(&h(S_PRIV)).unwrap());
    let client = ClientHandshake::with_ephemeral_for_tests(&h(EC_PRIV)).unwrap();
    assert_eq!(b64::decode(&client.public_key_b64u()).unwrap(), h(E_C));
    let data = common_crypto::auth_data(&client, None);
    let req = HandshakeRequest::from_auth_data(&data).unwrap().unwrap();
    let (hello, mut server_sealer, mut server_opener) =
        server_handshake_with_ephemeral_for_tests(&keys, &req, CONN_ID, USER_ID, &h(ES_PRIV), h32(SALT)).unwrap();
    assert_eq!(hello.server_public_key_b64u(), WIRE_SERVER_PUBLIC_KEY);
    assert_eq!(hello.salt_b64u(), WIRE_SALT);
    assert_eq!(hello.kid_b64u(), WIRE_KID);
    assert_eq!(hello.confirm_b64u(), WIRE_CONFIRM);

    // the spec's `connected` line parses to the same hello
    let line = r#"{"event":"connected","data":{"id":"c-0001","userId":"u-42","time":"…","v":1,"serverPublicKey":"BNTUZ2kMSb4ao997A_L0e6WLsBjkkuK5PO9L_JXKdnBgN5CoDZaiJdBMzMoRHjG6dkhoK9oBisrGSWEs6AKZe-A","salt":"bA53NnkKUCCnXGByczgf6Q2Fm_NKevq2eu7prlhhnJ8","kid":"-GV3gO9oO-U","confirm":"PjHniXqJXSK9tiFQt5RAmg"}}"#;
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let parsed = ServerHello::from_connected_data(&v["data"]).unwrap();
    assert_eq!(parsed, hello);

    let pin = keys.current().pinned();
    let (mut client_sealer, mut client_opener) = client.finish(&[pin], &parsed, CONN_ID, USER_ID).unwrap();

    // server's first record (seq 1) is the Appendix A frame
    server_sealer.set_padding(NonZeroUsize::new(64));
    let frame = seal1(&mut server_sealer, MSG_S2C);
    assert_eq!(std::str::from_utf8(&frame).unwrap(), WIRE_S2C_1);
    assert_eq!(client_opener.open(&frame).unwrap().unwrap(), MSG_S2C);

    // client's first record (seq 0)
    let frame = seal1(&mut client_sealer, MSG_C2S);
    let v: serde_json::Value = serde_json::from_slice(&frame).unwrap();
    assert_eq!(b64::decode(v["data"]["ct"].as_str().unwrap()).unwrap(), h(CT_C2S_0));
    assert_eq!(server_opener.open(&frame).unwrap().unwrap(), MSG_C2S);
}

#[test]
fn negative_checks_fail() {
    let th = h32(TH);
    let key = AeadKey::new(&h32(KEY_C2S_0));
    let iv: [u8; 12] = h(IV_C2S_0).try_into().unwrap();
    let ct = h(CT_C2S_0);
    let try_open = |n: [u8; 12], a: [u8; 56], ct: &[u8]| {
        let (body, tag) = ct.split_at(ct.len() - 16);
        let mut body = body.to_vec();
        key.open_in_place(&n, &a, &mut body, tag.try_into().unwrap())
            .map(|_| body)
    };
    // control: correct parameters open
    assert_eq!(
        try_open(nonce(&iv, 0), aad(Direction::C2s, &th, 0, 0), &ct).unwrap(),
        MSG_C2S
    );
    // wrong seq in the AAD
    assert!(try_open(nonce(&iv, 0), aad(Direction::C2s, &th, 0, 1), &ct).is_err());
    // wrong direction byte
    assert!(try_open(nonce(&iv, 0), aad(Direction::S2c, &th, 0, 0), &ct).is_err());
    // wrong epoch in the AAD
    assert!(try_open(nonce(&iv, 0), aad(Direction::C2s, &th, 1, 0), &ct).is_err());
    // the nonce of another seq
    assert!(try_open(nonce(&iv, 1), aad(Direction::C2s, &th, 0, 0), &ct).is_err());
    // one flipped tag bit (every bit position)
    for bit in 0..128 {
        let mut bad = ct.clone();
        let i = ct.len() - 16 + bit / 8;
        bad[i] ^= 1 << (bit % 8);
        assert!(try_open(nonce(&iv, 0), aad(Direction::C2s, &th, 0, 0), &bad).is_err());
    }
    // and the confirm tag does not verify under c2s keys or seq 1
    let s2c_key = AeadKey::new(&h32(KEY_S2C_0));
    let s2c_iv: [u8; 12] = h(IV_S2C_0).try_into().unwrap();
    let confirm: [u8; 16] = h(CONFIRM).try_into().unwrap();
    assert!(s2c_key
        .open_in_place(&nonce(&s2c_iv, 0), &aad(Direction::S2c, &th, 0, 0), &mut [], &confirm)
        .is_ok());
    assert!(s2c_key
        .open_in_place(&nonce(&s2c_iv, 1), &aad(Direction::S2c, &th, 0, 1), &mut [], &confirm)
        .is_err());
    assert!(key
        .open_in_place(&nonce(&iv, 0), &aad(Direction::C2s, &th, 0, 0), &mut [], &confirm)
        .is_err());
}

/// Every representation of a secret we could accidentally print.
fn forms(secret: &[u8]) -> Vec<String> {
    let dec = |b: &[u8]| b.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ");
    vec![
        hex::encode(secret),
        hex::encode_upper(secret),
        hex::encode(&secret[..6]),
        b64::encode(secret),
        b64::encode(&secret[..6]),
        dec(&secret[..4]),
    ]
}

fn assert_redacted(what: &str, dbg: &str, secrets: &[Vec<u8>]) {
    for s in secrets {
        for f in forms(s) {
            assert!(!dbg.contains(&f), "{what} Debug leaks {f}: {dbg}");
        }
    }
    // no long hex runs either
    let mut run = 0;
    for c in dbg.chars() {
        run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
        assert!(run < 16, "{what} Debug has a hex run: {dbg}");
    }
}

#[test]
fn debug_output_is_redacted() {
    let secrets = [
        h(S_PRIV),
        h(EC_PRIV),
        h(ES_PRIV),
        h(EE),
        h(ES),
        h(TS_C2S_0),
        h(TS_S2C_0),
        h(KEY_C2S_0),
        h(KEY_S2C_0),
        h(IV_C2S_0),
        h(IV_S2C_0),
        h(TS_C2S_1),
        h(KEY_C2S_1),
        h(IV_C2S_1),
        h(SALT),
        h(CONFIRM),
    ];
    let key = StaticKey::from_scalar_bytes_for_tests(&h(S_PRIV)).unwrap();
    let pem = key.to_pkcs8_pem().unwrap();
    let keys = StaticKeySet::new(key);
    let client = ClientHandshake::with_ephemeral_for_tests(&h(EC_PRIV)).unwrap();
    let req = HandshakeRequest::from_auth_data(&common_crypto::auth_data(&client, None))
        .unwrap()
        .unwrap();
    let (hello, mut sealer, opener) =
        server_handshake_with_ephemeral_for_tests(&keys, &req, CONN_ID, USER_ID, &h(ES_PRIV), h32(SALT)).unwrap();
    let mut c2s = RecordSealer::new(Direction::C2s, TrafficSecret::from_bytes(&h32(TS_C2S_0)), h32(TH), 0);
    let dbgs = vec![
        ("StaticKeySet", format!("{keys:?} {keys:#?}")),
        ("StaticKey", format!("{:?}", keys.current())),
        ("ClientHandshake", format!("{client:?} {client:#?}")),
        ("HandshakeRequest", format!("{req:?}")),
        ("ServerHello", format!("{hello:?} {hello:#?}")),
        ("RecordSealer", format!("{sealer:?} {sealer:#?}")),
        ("RecordOpener", format!("{opener:?} {opener:#?}")),
        (
            "TrafficSecret",
            format!("{:?}", TrafficSecret::from_bytes(&h32(TS_C2S_0))),
        ),
        ("EcSecretKey", format!("{:?}", sk(S_PRIV))),
        ("AeadKey", format!("{:?}", AeadKey::new(&h32(KEY_C2S_0)))),
    ];
    for (what, d) in &dbgs {
        assert!(
            d.contains("redacted") || *what == "HandshakeRequest" || *what == "ServerHello",
            "{what}: {d}"
        );
        assert_redacted(what, d, &secrets);
        // the PEM body never shows up either
        let body: String = pem.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(!d.contains(&body));
    }
    // the detector itself catches leaks in each form
    for leak in [
        format!("{:?}", h(KEY_C2S_0)),
        hex::encode(h(TS_S2C_0)),
        b64::encode(&h(IV_C2S_0)),
    ] {
        let s2 = secrets.clone();
        assert!(std::panic::catch_unwind(move || assert_redacted("probe", &leak, &s2)).is_err());
    }
    // after a key update too
    c2s.request_key_update(&mut Vec::new()).unwrap();
    sealer.request_key_update(&mut Vec::new()).unwrap();
    assert_redacted("RecordSealer", &format!("{c2s:?}{sealer:?}"), &secrets);
}
