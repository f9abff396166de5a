//! The WebSocket wire below the protocol: the hand-made upgrade, the pre-encoded outbound frames (every length
//! encoding), vectored writes under back-pressure, and pongs queued with the data.

use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Sends a raw HTTP request and returns the response head.
async fn raw_request(t: &TestServer, headers: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    let req = format!("GET /ws HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn the_upgrade_checks_the_opening_handshake() {
    let t = TestServer::start(builder()).await;
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let ok = format!("Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n");
    let head = raw_request(&t, &ok).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // RFC 6455 §1.3's example key and answer.
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");

    let refused = [
        format!("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"),
        format!("Connection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"),
        format!(
            "Connection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: {key}\r\n"
        ),
        "Connection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n".to_owned(),
    ];
    for headers in refused {
        let head = raw_request(&t, &headers).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{headers}: {head}");
    }
    assert_eq!(t.server.clients().len(), 0);
}

#[tokio::test]
async fn frames_of_every_length_encoding_arrive_intact_and_in_order() {
    let t = TestServer::start(builder().max_payload_length(1 << 20)).await;
    let (mut c, data) = t.login("user:a").await;
    let id = data["id"].as_str().unwrap().to_owned();
    let sizes = [0, 100, 125, 126, 200, 65_535, 65_536, 300_000];
    for (i, n) in sizes.iter().enumerate() {
        t.server
            .send_to_client(&id, "blob", &json!({"i": i, "s": "x".repeat(*n)}))
            .unwrap();
    }
    for (i, n) in sizes.iter().enumerate() {
        let v = c.expect_event("blob").await;
        assert_eq!(v["i"], i);
        assert_eq!(v["s"].as_str().unwrap().len(), *n);
    }
}

#[tokio::test]
async fn a_client_that_reads_late_gets_everything_once_in_order() {
    // Enough queued bytes to fill the socket buffers, so writes are partial and resume mid-frame (9 MB: both
    // queue bounds raised well past it).
    let t = TestServer::start(builder().outbound_queue(4096).max_write_buffer_size(64 << 20)).await;
    let (mut c, data) = t.login("user:a").await;
    let id = data["id"].as_str().unwrap().to_owned();
    let filler = "y".repeat(3000);
    for i in 0..3000 {
        t.server
            .send_to_client(&id, "n", &json!({"i": i, "f": filler}))
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..3000 {
        let v = c.expect_event("n").await;
        assert_eq!(v["i"], i);
    }
}

#[tokio::test]
async fn pings_are_answered_in_line_with_the_data() {
    let t = TestServer::start(builder()).await;
    let (mut c, data) = t.login("user:a").await;
    let id = data["id"].as_str().unwrap().to_owned();
    t.server.send_to_client(&id, "before", &json!(1)).unwrap();
    c.ws.send(Message::Ping(b"p1".to_vec().into())).await.unwrap();
    // The pong is written by tungstenite when the reader next polls; a heartbeat makes sure it does.
    c.send(json!({"event": "heartbeat"})).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(WAIT, c.ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Text(t) => seen.push(serde_json::from_str::<serde_json::Value>(&t).unwrap()["event"].to_string()),
            Message::Pong(p) => {
                assert_eq!(&p[..], b"p1");
                seen.push("pong".into());
            }
            _ => {}
        }
    }
    assert_eq!(seen, ["\"before\"", "pong"]);
    t.server.send_to_client(&id, "after", &json!(2)).unwrap();
    c.expect_event("after").await;
}
