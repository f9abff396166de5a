//! Fan-out: one room of 1,000 local subscribers on real loopback WebSockets, plaintext, wsenc/1-encrypted per
//! recipient, wsenc/1 with group records (§11: sealed once, a header per recipient) and with batched group
//! records (§11.4: one header per run of queued messages) in the same run. Each iteration sends a burst with `send_to_room` and waits until every subscriber has
//! received all of it, so the figure is end-to-end deliveries per second (serialise once, queue, seal per
//! recipient if encrypted, write, client read). Subscribers count frames without parsing or decrypting them,
//! so both modes spend the same client-side effort and the difference is the server's sealing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::{SinkExt, StreamExt};
use sealcast::crypto::{ClientHandshake, ServerHello, StaticKey, StaticKeySet};
use sealcast::{AuthRequest, HookError, Identity, RoomRequest, Server};
use serde_json::{json, Map, Value};
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message;

const SUBSCRIBERS: usize = 1_000;
const BURST: u64 = 50;
const PAYLOAD: usize = 256;

struct Bench {
    server: Server,
    received: Arc<AtomicU64>,
}

/// A subscriber of `room`; with `key`, a wsenc/1 session (advertising `"roomKeys": group` when `group` is 1 or
/// 2). Group subscribers do not count the `room_key` record that precedes a new key's first group record, and
/// count each body of a batched record (§11.4) as a delivery.
async fn subscribe(url: &str, room: &str, key: Option<&StaticKey>, group: u64, counter: Arc<AtomicU64>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
    let mut data = Map::new();
    let hs = key.map(|_| ClientHandshake::new().expect("keygen"));
    if let Some(hs) = &hs {
        hs.insert_auth_fields(&mut data, None);
        if group > 0 {
            data.insert("roomKeys".into(), json!(group));
        }
    }
    let auth = json!({"event": "authenticate", "data": Value::Object(data)}).to_string();
    ws.send(Message::text(auth)).await.expect("send");
    let connected: Value =
        serde_json::from_str(ws.next().await.expect("frame").expect("ok").to_text().expect("text")).expect("json");
    let join = json!({"event": "join", "data": {"rooms": [room]}}).to_string();
    match (hs, key) {
        (Some(hs), Some(key)) => {
            let hello = ServerHello::from_connected_data(&connected["data"]).expect("hello");
            let id = connected["data"]["id"].as_str().expect("id");
            let (mut sealer, _opener) = hs.finish(&[key.pinned()], &hello, id, "").expect("finish");
            let mut out = Vec::new();
            sealer.seal(join.as_bytes(), &mut out).expect("seal");
            for f in out {
                ws.send(Message::text(String::from_utf8(f.to_vec()).expect("utf8")))
                    .await
                    .expect("send");
            }
        }
        _ => ws.send(Message::text(join)).await.expect("send"),
    }
    tokio::spawn(async move {
        // The first text frame is the join's answer (`joined`), not a delivery.
        let mut answered = false;
        while let Some(Ok(m)) = ws.next().await {
            // A delivered message is at least as long as its payload; the `room_key` records are shorter. A
            // batched record carries one message per body (base64url has no commas).
            if !m.is_text() {
                continue;
            }
            let data = m.into_data();
            let n = match memchr::memmem::find(&data, b"\"bodies\":[") {
                Some(at) => 1 + memchr::memchr_iter(b',', data.get(at..).unwrap_or_default()).count() as u64,
                None => u64::from(group == 0 || data.len() >= PAYLOAD),
            };
            if std::mem::replace(&mut answered, true) {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    });
}

async fn setup() -> Bench {
    let pem = StaticKey::generate().expect("key").to_pkcs8_pem().expect("pem");
    let key = StaticKey::from_pkcs8_pem(&pem).expect("key");
    let server = Server::builder()
        .require_encryption(false)
        .static_keys(StaticKeySet::new(StaticKey::from_pkcs8_pem(&pem).expect("key")))
        .default_rooms(vec![])
        .authenticator(|_: AuthRequest| async { Ok::<_, HookError>(Some(Identity::default())) })
        .room_validator(|r: RoomRequest| async move { Ok::<_, HookError>(r.rooms) })
        .outbound_queue(4096)
        .build()
        .expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
    let app: axum::Router = server.router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let received = Arc::new(AtomicU64::new(0));
    for _ in 0..SUBSCRIBERS {
        subscribe(&url, "plain", None, 0, received.clone()).await;
        subscribe(&url, "enc", Some(&key), 0, received.clone()).await;
        subscribe(&url, "group", Some(&key), 1, received.clone()).await;
        subscribe(&url, "batch", Some(&key), 2, received.clone()).await;
    }
    let members = |room| server.clients_by_room(room).len();
    while members("plain") + members("enc") + members("group") + members("batch") < 4 * SUBSCRIBERS {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Bench { server, received }
}

fn fanout(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let bench = rt.block_on(setup());
    let payload = json!({ "text": "x".repeat(PAYLOAD - 12) });
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64 * BURST));
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    for (name, room) in [
        ("plaintext_room_1000_256B", "plain"),
        ("encrypted_room_1000_256B", "enc"),
        ("group_records_room_1000_256B", "group"),
        ("batched_group_records_room_1000_256B", "batch"),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let target = bench.received.load(Ordering::Relaxed) + SUBSCRIBERS as u64 * BURST;
                        for _ in 0..BURST {
                            bench.server.send_to_room(room, "msg", &payload, &[]).expect("send");
                        }
                        while bench.received.load(Ordering::Relaxed) < target {
                            tokio::time::sleep(Duration::from_micros(100)).await;
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
