//! wsenc/1 crypto benchmarks: record seal/open, the server-side handshake vs its bare primitives.
//!
//! `cargo bench --bench crypto`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sealcast::crypto::backend::{hkdf_sha256, random_bytes, sha256, AeadKey, EcPublicKey, EcSecretKey};
use sealcast::crypto::record::{aad, nonce};
use sealcast::crypto::schedule::TrafficSecret;
use sealcast::crypto::{
    server_handshake, ClientHandshake, Direction, HandshakeRequest, RecordOpener, RecordSealer, RoomKey, StaticKey,
    StaticKeySet, PROTO,
};
use zeroize::Zeroizing;

/// An inner message of exactly `len` bytes.
fn message(len: usize) -> Vec<u8> {
    let head = br#"{"event":"message","data":""#;
    let tail = br#""}"#;
    let mut m = head.to_vec();
    m.resize(len - tail.len(), b'x');
    m.extend_from_slice(tail);
    assert_eq!(m.len(), len);
    m
}

fn pair() -> (RecordSealer, RecordOpener) {
    let ts = [0x42u8; 32];
    let th = [0x17u8; 32];
    (
        RecordSealer::new(Direction::S2c, TrafficSecret::from_bytes(&ts), th, 1),
        RecordOpener::new(Direction::S2c, TrafficSecret::from_bytes(&ts), th, 1),
    )
}

fn records(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    for size in [256usize, 4096] {
        let msg = message(size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("seal_{size}B"), |b| {
            let (mut sealer, _) = pair();
            let mut out = Vec::with_capacity(2);
            b.iter(|| {
                out.clear();
                sealer.seal(black_box(&msg), &mut out).unwrap();
                black_box(&out);
            })
        });
        g.bench_function(format!("open_{size}B"), |b| {
            let (mut sealer, mut opener) = pair();
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                let mut frames = Vec::with_capacity(1024);
                while left > 0 {
                    let n = left.min(1024);
                    frames.clear();
                    for _ in 0..n {
                        sealer.seal(&msg, &mut frames).unwrap();
                    }
                    let t = Instant::now();
                    for f in &frames {
                        black_box(opener.open(black_box(f)).unwrap());
                    }
                    total += t.elapsed();
                    left -= n;
                }
                total
            })
        });
    }
    g.finish();
}

fn handshake(c: &mut Criterion) {
    let keys = StaticKeySet::new(StaticKey::generate().unwrap());
    let client = ClientHandshake::new().unwrap();
    let mut m = serde_json::Map::new();
    m.insert("token".into(), "t".into());
    client.insert_auth_fields(&mut m, None);
    let data = serde_json::Value::Object(m);
    let client_pub_b64 = client.public_key_b64u();
    let client_pub = sealcast::crypto::b64::decode(&client_pub_b64).unwrap();
    let s_secret = EcSecretKey::generate().unwrap();

    let mut g = c.benchmark_group("handshake");
    // What a connection runs: the server's WsEnc1 hook from the authenticate payload to an encrypted Session
    // (connected fields built, record states boxed).
    let wsenc = sealcast::WsEnc1::new(std::sync::Arc::new(StaticKeySet::new(StaticKey::generate().unwrap())));
    let payload = data.as_object().unwrap().clone();
    g.bench_function("server_hook", |b| {
        b.iter(|| {
            let outcome = wsenc.establish("c-0001", Some("u-42"), black_box(payload.clone()));
            assert!(matches!(outcome, sealcast::HandshakeOutcome::Encrypted(_)));
            black_box(outcome);
        })
    });
    g.bench_function("server_full", |b| {
        b.iter(|| {
            let req = HandshakeRequest::from_auth_data(black_box(&data)).unwrap().unwrap();
            black_box(server_handshake(&keys, &req, "c-0001", "u-42").unwrap());
        })
    });
    // The same work done with the bare primitives: parse e_c, keygen e_s, salt, 2 ECDH,
    // 2 initial HKDFs + key/iv for both directions, 2 AES key setups, the confirm tag.
    g.bench_function("bare_primitives", |b| {
        b.iter(|| {
            let e_c = EcPublicKey::from_sec1_uncompressed(black_box(&client_pub)).unwrap();
            let e_s = EcSecretKey::generate().unwrap();
            let mut salt = [0u8; 32];
            random_bytes(&mut salt).unwrap();
            let e_s_pub = e_s.public_key();
            let th = sha256(&[
                PROTO,
                &[0u8; 8],
                &client_pub,
                e_c.as_sec1(),
                e_s_pub.as_sec1(),
                &salt,
                b"c-0001u-42",
                &[0u8; 16],
            ]);
            let ee = e_s.diffie_hellman(&e_c);
            let es = s_secret.diffie_hellman(&e_c);
            let mut ikm = [0u8; 64];
            ikm[..32].copy_from_slice(&*ee);
            ikm[32..].copy_from_slice(&*es);
            let mut ts = [[0u8; 32]; 2];
            for (t, l) in ts.iter_mut().zip([&b"wsenc/1 c2s"[..], b"wsenc/1 s2c"]) {
                hkdf_sha256(&salt, &ikm, &[l, &th], t).unwrap();
            }
            let mut keys = Vec::with_capacity(2);
            let mut iv = [0u8; 12];
            for t in &ts {
                let mut k = [0u8; 32];
                hkdf_sha256(&[], t, &[b"wsenc/1 key"], &mut k).unwrap();
                hkdf_sha256(&[], t, &[b"wsenc/1 iv"], &mut iv).unwrap();
                keys.push(AeadKey::new(&k));
            }
            let tag = keys[1]
                .seal_in_place(&nonce(&iv, 0), &aad(Direction::S2c, &th, 0, 0), &mut [])
                .unwrap();
            black_box((e_s_pub, tag));
        })
    });
    g.bench_function("p256_keygen", |b| {
        b.iter(|| black_box(EcSecretKey::generate().unwrap().public_key()))
    });
    let e_c = EcPublicKey::from_sec1_uncompressed(&client_pub).unwrap();
    g.bench_function("p256_ecdh", |b| {
        b.iter(|| black_box(s_secret.diffie_hellman(black_box(&e_c))))
    });
    g.bench_function("p256_parse_public", |b| {
        b.iter(|| black_box(EcPublicKey::from_sec1_uncompressed(black_box(&client_pub)).unwrap()))
    });
    g.bench_function("hkdf_sha256_32B", |b| {
        let mut out = [0u8; 32];
        b.iter(|| {
            hkdf_sha256(
                black_box(&[1u8; 32]),
                &[2u8; 64],
                &[b"wsenc/1 c2s", &[3u8; 32]],
                &mut out,
            )
            .unwrap();
            black_box(&out);
        })
    });
    g.bench_function("aes256gcm_key_setup", |b| {
        b.iter(|| black_box(AeadKey::new(black_box(&[7u8; 32]))))
    });
    g.bench_function("client_finish", |b| {
        let pin = keys.current().pinned();
        b.iter_batched(
            || {
                let client = ClientHandshake::new().unwrap();
                let mut m = serde_json::Map::new();
                client.insert_auth_fields(&mut m, None);
                let req = HandshakeRequest::from_auth_data(&serde_json::Value::Object(m))
                    .unwrap()
                    .unwrap();
                let (hello, _, _) = server_handshake(&keys, &req, "c", "u").unwrap();
                (client, hello)
            },
            |(client, hello)| black_box(client.finish(std::slice::from_ref(&pin), &hello, "c", "u").unwrap()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Members of the room in the group-record benchmarks.
const MEMBERS: usize = 1_000;

/// A fresh room key, as the server makes one (OS randomness).
fn fresh_room_key(epoch: u64) -> RoomKey {
    let mut key = Zeroizing::new([0u8; 32]);
    random_bytes(&mut *key).unwrap();
    RoomKey::new("bench".into(), epoch, key).unwrap()
}

fn group_sealers() -> Vec<RecordSealer> {
    (0..MEMBERS)
        .map(|i| {
            let mut s = RecordSealer::new(Direction::S2c, TrafficSecret::from_bytes(&[i as u8; 32]), [7; 32], 1);
            s.enable_room_keys();
            s
        })
        .collect()
}

/// One 256-byte room message to 1,000 encrypted members: sealed per recipient (§6) or as group records (§11),
/// and the first message after a rotation (a fresh key, delivered in a `room_key` record to every member).
fn room_keys(c: &mut Criterion) {
    let msg = message(256);
    let mut g = c.benchmark_group("room_keys");
    g.throughput(Throughput::Elements(MEMBERS as u64));
    g.bench_function("per_recipient_1000x256B", |b| {
        let mut sealers = group_sealers();
        let mut out = Vec::with_capacity(4);
        b.iter(|| {
            for s in &mut sealers {
                out.clear();
                s.seal(black_box(&msg), &mut out).unwrap();
                black_box(&out);
            }
        })
    });
    g.bench_function("group_1000x256B", |b| single_header_records(b, &msg));
    g.bench_function("rotation_then_group_1000x256B", |b| {
        let mut sealers = group_sealers();
        let mut out = Vec::with_capacity(4);
        let mut epoch = 1;
        b.iter(|| {
            epoch += 1;
            let key = fresh_room_key(epoch);
            let body = key.seal_body(0, black_box(&msg), None).unwrap();
            for s in &mut sealers {
                out.clear();
                s.seal_group(&key, &body, &mut out).unwrap();
                black_box(&out);
            }
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

/// One §11.3 record (a 40-byte header per recipient) per 256-byte message to 1,000 members; the shared body is
/// sealed once per message inside the measurement, as the server does.
fn single_header_records(b: &mut criterion::Bencher, msg: &[u8]) {
    let mut sealers = group_sealers();
    let key = fresh_room_key(1);
    let mut out = Vec::with_capacity(4);
    let mut counter = 0;
    b.iter(|| {
        let body = key.seal_body(counter % 1_000_000, black_box(msg), None).unwrap();
        counter += 1;
        for s in &mut sealers {
            out.clear();
            s.seal_group(&key, &body, &mut out).unwrap();
            black_box(&out);
        }
    })
}

fn batch_sealers() -> Vec<RecordSealer> {
    let mut sealers = group_sealers();
    for s in &mut sealers {
        s.enable_room_key_batches();
    }
    sealers
}

/// The floor of §11.4 (issue 18): the per-recipient, per-message sealing cost of 256-byte room messages to 1,000
/// members, in messages (deliveries) per second — a §11.3 record (one 40-byte header sealed, base64'd and framed
/// per message) against batched records of `k` bodies (one header of 40 × k bytes per `k` messages). The shared
/// bodies are sealed once per message, as the server does, inside the measurement.
fn room_key_batches(c: &mut Criterion) {
    let msg = message(256);
    let mut g = c.benchmark_group("room_key_batches");
    g.throughput(Throughput::Elements(MEMBERS as u64));
    g.bench_function("single_header_1000x256B", |b| single_header_records(b, &msg));
    for k in [2usize, 8, 32, 128] {
        g.throughput(Throughput::Elements((MEMBERS * k) as u64));
        g.bench_function(format!("batched_{k}_1000x256B"), |b| {
            let mut sealers = batch_sealers();
            let key = fresh_room_key(1);
            let mut out = Vec::with_capacity(4);
            let mut counter = 0u64;
            b.iter(|| {
                let bodies: Vec<_> = (0..k)
                    .map(|_| {
                        counter += 1;
                        key.seal_body(counter % 1_000_000, black_box(&msg), None).unwrap()
                    })
                    .collect();
                let items: Vec<_> = bodies.iter().map(|body| (&key, body)).collect();
                for s in &mut sealers {
                    out.clear();
                    s.seal_group_batch(&items, &mut out).unwrap();
                    black_box(&out);
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = records, handshake, room_keys, room_key_batches
}
criterion_main!(benches);
