//! Application hooks: message handler and outbound transformer, including failing ones.

use std::sync::Arc;

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
