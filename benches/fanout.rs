//! Fan-out baseline: one room of 1,000 local subscribers on real loopback WebSockets. Each iteration sends a
//! burst of messages with `send_to_room` and waits until every subscriber has received all of them, so the figure
//! is end-to-end deliveries per second (serialise once, queue, write, client read).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::{SinkExt, StreamExt};
use sealcast::{AuthRequest, HookError, Identity, Server};
use serde_json::json;
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message;

const SUBSCRIBERS: usize = 1_000;
const BURST: u64 = 50;
const PAYLOAD: usize = 256;

struct Bench {
    server: Server,
    received: Arc<AtomicU64>,
}

async fn setup() -> Bench {
    let server = Server::builder()
        .require_encryption(false)
        .authenticator(|_: AuthRequest| async { Ok::<_, HookError>(Some(Identity::default())) })
        .outbound_queue(4096)
        .build()
        .expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
    let app = server.router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let received = Arc::new(AtomicU64::new(0));
    for _ in 0..SUBSCRIBERS {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
        let auth = json!({"event": "authenticate", "data": {}}).to_string();
        ws.send(Message::text(auth)).await.expect("send");
        let _connected = ws.next().await;
        let counter = received.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                if m.is_text() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
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
    group.bench_function("plaintext_room_1000_256B", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let target = bench.received.load(Ordering::Relaxed) + SUBSCRIBERS as u64 * BURST;
                    for _ in 0..BURST {
                        bench
                            .server
                            .send_to_room("ws-default", "msg", &payload, &[])
                            .expect("send");
                    }
                    while bench.received.load(Ordering::Relaxed) < target {
                        tokio::time::sleep(Duration::from_micros(100)).await;
                    }
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
