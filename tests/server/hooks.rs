//! Application hooks: message handler and outbound transformer, including failing ones.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use parking_lot::Mutex;
use sealcast::{HookError, IncomingMessage, Outgoing, Transformed};
use serde_json::{json, Value};

#[tokio::test]
async fn custom_events_reach_the_message_handler_with_data_and_id() {
    let seen: Arc<Mutex<Vec<IncomingMessage>>> = Arc::default();
    let s = seen.clone();
    let b = builder().message_handler(move |m: IncomingMessage| {
        let s = s.clone();
        async move {
            s.lock().push(m);
            Ok::<_, HookError>(())
        }
    });
    let t = TestServer::start(b).await;
    let (mut c, data) = t.login("user:a").await;
    c.send(json!({"event": "chat", "data": {"t": 1}, "id": "q1"})).await;
    eventually("handler called", || !seen.lock().is_empty()).await;
    let m = seen.lock()[0].clone();
    assert_eq!((m.event.as_str(), m.user_id.as_deref()), ("chat", Some("a")));
    assert_eq!((m.data, m.id), (json!({"t": 1}), Some(json!("q1"))));
    assert_eq!(m.client_id, data["id"]);
}

#[tokio::test]
async fn a_panicking_message_handler_does_not_kill_the_connection() {
    let b = builder().message_handler(|_: IncomingMessage| async move {
        if true {
            panic!("handler panics");
        }
        Ok::<_, HookError>(())
    });
    let t = TestServer::start(b).await;
    let (mut c, _) = t.login("user:a").await;
    c.send(json!({"event": "boom"})).await;
    c.send(json!({"event": "boom"})).await;
    eventually("two failures counted", || t.server.stats().hook_failures == 2).await;
    t.server.broadcast("alive", &1, &[]).unwrap();
    c.expect_event("alive").await;
}

#[tokio::test]
async fn transformer_can_replace_drop_or_keep_per_recipient() {
    let b = builder().outbound_transformer(|o: Outgoing| async move {
        Ok::<_, HookError>(match (o.client.user_id.as_deref(), o.event.as_str()) {
            (Some("dropme"), _) => Transformed::Drop,
            (Some("rewrite"), ev) => Transformed::Replace {
                event: format!("{ev}-x"),
                data: json!({"orig": o.data}),
            },
            (Some("evil"), _) => Transformed::Replace {
                event: "connected".into(),
                data: Value::Null,
            },
            _ => Transformed::Unchanged,
        })
    });
    let t = TestServer::start(b).await;
    let (mut keep, _) = t.login("user:keep").await;
    let (mut dropme, _) = t.login("user:dropme").await;
    let (mut rewrite, _) = t.login("user:rewrite").await;
    let (mut evil, _) = t.login("user:evil").await;
    t.server.broadcast("news", &7, &[]).unwrap();
    assert_eq!(keep.recv().await, json!({"event": "news", "data": 7}));
    assert_eq!(rewrite.recv().await, json!({"event": "news-x", "data": {"orig": 7}}));
    dropme.expect_silence().await;
    evil.expect_silence().await;
}

#[tokio::test]
async fn transformer_never_sees_protocol_frames() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let b = builder().outbound_transformer(move |o: Outgoing| {
        s.lock().push(o.event);
        async move { Ok::<_, HookError>(Transformed::Unchanged) }
    });
    let t = TestServer::start(b).await;
    let (mut c, _) = t.login("user:a").await;
    c.send_text("null").await;
    c.expect_error("Invalid message format").await;
    assert!(seen.lock().is_empty(), "{:?}", seen.lock());
}

#[tokio::test]
async fn a_panicking_transformer_drops_that_message_only() {
    let b = builder().outbound_transformer(|o: Outgoing| async move {
        if o.event == "bad" {
            panic!("transformer panics");
        }
        Ok::<_, HookError>(Transformed::Unchanged)
    });
    let t = TestServer::start(b).await;
    let (mut c, _) = t.login("user:a").await;
    t.server.broadcast("bad", &1, &[]).unwrap();
    t.server.broadcast("good", &2, &[]).unwrap();
    assert_eq!(c.recv().await, json!({"event": "good", "data": 2}));
}

/// A transformer's calls in flight, now and at most (a call cut short by the timeout leaves too).
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

struct Running(Arc<InFlight>);

impl Running {
    fn enter(flight: &Arc<InFlight>) -> Self {
        let now = flight.now.fetch_add(1, Ordering::SeqCst) + 1;
        flight.max.fetch_max(now, Ordering::SeqCst);
        Self(flight.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A server whose transformer never answers for the event `slow` or the user `stuck` and keeps everything else,
/// with `limit` as `encrypted_batch_limit` and each call cut off after `timeout`; and the calls in flight.
async fn hanging_transformer(limit: usize, timeout: Duration) -> (TestServer, Arc<InFlight>) {
    let flight = Arc::new(InFlight::default());
    let counted = flight.clone();
    let b = builder()
        .encrypted_batch_limit(limit)
        .outbound_transformer_timeout(timeout)
        .outbound_transformer(move |o: Outgoing| {
            let flight = counted.clone();
            async move {
                if o.event == "slow" || o.client.user_id.as_deref() == Some("stuck") {
                    let _running = Running::enter(&flight);
                    std::future::pending::<()>().await;
                }
                Ok::<_, HookError>(Transformed::Unchanged)
            }
        });
    (TestServer::start(b).await, flight)
}

#[tokio::test]
async fn a_slow_transformer_never_has_more_calls_in_flight_than_the_batch_limit() {
    let (t, flight) = hanging_transformer(2, Duration::from_millis(200)).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(t.login(&format!("user:u{i}")).await.0);
    }
    t.server.broadcast("slow", &1, &[]).unwrap();
    eventually("every call timed out", || t.server.stats().hook_failures == 5).await;
    assert_eq!(
        flight.max.load(Ordering::SeqCst),
        2,
        "the bound is reached, never passed"
    );
    assert_eq!(flight.now.load(Ordering::SeqCst), 0, "timed-out calls are cut off");
}

#[tokio::test]
async fn a_timed_out_transformer_call_drops_that_message_only() {
    let (t, _) = hanging_transformer(10, Duration::from_millis(100)).await;
    let (mut c, _) = t.login("user:a").await;
    t.server.broadcast("slow", &1, &[]).unwrap();
    t.server.broadcast("after", &2, &[]).unwrap();
    assert_eq!(c.recv().await, json!({"event": "after", "data": 2}));
    assert_eq!(t.server.stats().hook_failures, 1);
}

#[tokio::test]
async fn a_slow_transformer_does_not_stall_other_connections() {
    let (t, flight) = hanging_transformer(2, Duration::from_secs(600)).await;
    let (mut stuck, _) = t.login("user:stuck").await;
    let (mut other, _) = t.login("user:other").await;
    t.server.broadcast("news", &1, &[]).unwrap();
    assert_eq!(other.recv().await, json!({"event": "news", "data": 1}));
    assert_eq!(flight.now.load(Ordering::SeqCst), 1, "the stuck call is still running");
    stuck.expect_silence().await;
}
