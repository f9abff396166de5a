//! Hostile input: every malformed frame gets its documented answer and everyone else keeps being served.

use crate::common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

async fn assert_still_served(t: &TestServer, bystander: &mut Client) {
    t.server.broadcast("still-here", &1, &[]).unwrap();
    assert_eq!(bystander.expect_event("still-here").await, json!(1));
}

#[tokio::test]
async fn malformed_frames_get_invalid_message_format_and_the_socket_stays_open() {
    let t = TestServer::start(builder()).await;
    let (mut bystander, _) = t.login("user:bystander").await;
    let (mut c, _) = t.login("user:a").await;
    for bad in [
        "null",
        "[]",
        "[1,2]",
        "42",
        "\"text\"",
        "{",
        "{}",
        "{\"event\":7}",
        "{\"event\":\"join\",\"data\":{\"rooms\":\"lobby\"}}",
        "{\"event\":\"join\",\"data\":[1]}",
        "{\"event\":\"leave\",\"data\":\"x\"}",
        "{\"event\":\"publish\",\"data\":null}",
    ] {
        c.send_text(bad).await;
        c.expect_error("Invalid message format").await;
    }
    assert_still_served(&t, &mut bystander).await;
    assert_still_served(&t, &mut c).await;
}

#[tokio::test]
async fn malformed_frames_before_authentication_are_answered_too() {
    let t = TestServer::start(builder()).await;
    let mut c = t.connect().await;
    c.send_text("null").await;
    c.expect_error("Invalid message format").await;
    c.send(json!({"event": "authenticate", "data": {"token": "user:a"}}))
        .await;
    c.expect_event("connected").await;
}

#[tokio::test]
async fn reserved_events_from_clients_are_refused() {
    let t = TestServer::start(builder()).await;
    let (mut c, _) = t.login("user:a").await;
    for ev in ["connected", "error", "encrypted", "key_update"] {
        c.send(json!({"event": ev, "data": {}})).await;
        c.expect_error("Reserved event").await;
    }
}

#[tokio::test]
async fn reserved_events_before_authentication_get_not_authenticated() {
    let t = TestServer::start(builder()).await;
    let mut c = t.connect().await;
    for ev in ["connected", "error", "encrypted", "key_update", "heartbeat"] {
        c.send(json!({"event": ev, "data": {}})).await;
        c.expect_error("Not authenticated").await;
    }
    c.send(json!({"event": "authenticate", "data": {"token": "user:a"}}))
        .await;
    c.expect_event("connected").await;
}

#[tokio::test]
async fn unknown_events_without_a_handler_are_ignored() {
    let t = TestServer::start(builder()).await;
    let (mut c, _) = t.login("user:a").await;
    c.send(json!({"event": "whatever", "data": [1]})).await;
    c.expect_silence().await;
}

#[tokio::test]
async fn binary_frames_are_read_as_utf8_json() {
    let t = TestServer::start(builder()).await;
    let mut c = t.connect().await;
    c.send_raw(Message::binary(vec![0xff, 0xfe, 0x00])).await;
    c.expect_error("Invalid message format").await;
    let auth = json!({"event": "authenticate", "data": {"token": "user:a"}}).to_string();
    c.send_raw(Message::binary(auth.into_bytes())).await;
    c.expect_event("connected").await;
}

#[tokio::test]
async fn oversized_frame_closes_1009_and_others_are_unaffected() {
    let t = TestServer::start(builder().max_payload_length(4096).max_preauth_payload_length(1024)).await;
    let (mut bystander, _) = t.login("user:b").await;
    let (mut c, _) = t.login("user:a").await;
    c.send(json!({"event": "x", "data": "y".repeat(5000)})).await;
    let (code, _, _) = c.expect_close().await;
    assert_eq!(code, 1009);
    assert_still_served(&t, &mut bystander).await;
}

#[tokio::test]
async fn pre_authentication_frames_have_a_smaller_limit() {
    let t = TestServer::start(builder().max_payload_length(4096).max_preauth_payload_length(1024)).await;
    let mut c = t.connect().await;
    c.send(json!({"event": "authenticate", "data": {"token": "user:a", "pad": "p".repeat(2000)}}))
        .await;
    let (code, _, before) = c.expect_close().await;
    assert_eq!(code, 1009);
    assert!(before.is_empty(), "{before:?}");
    // After authentication the larger limit applies.
    let (mut ok, _) = t.login("user:b").await;
    ok.send(json!({"event": "heartbeat", "data": "p".repeat(2000)})).await;
    ok.expect_silence().await;
}

#[tokio::test]
async fn a_large_frame_announced_before_authentication_closes_1009_at_once() {
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::MaybeTlsStream;
    // A window far longer than the test waits: a close can only come from the frame header.
    let t = TestServer::start(builder().auth_timeout(std::time::Duration::from_secs(600))).await;
    let mut c = t.connect().await;
    let MaybeTlsStream::Plain(tcp) = c.ws.get_mut() else {
        panic!("the test server speaks plain TCP");
    };
    // A masked text frame announcing 120 KiB (64-bit length), then only the first KiB of it.
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(120u64 * 1024).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[0; 1024]);
    tcp.write_all(&frame).await.unwrap();
    let (code, reason, before) = c.expect_close().await;
    assert_eq!((code, reason.as_str()), (1009, "Message too large"));
    assert!(before.is_empty(), "{before:?}");
}

#[tokio::test]
async fn deeply_nested_json_is_not_fatal() {
    let t = TestServer::start(builder()).await;
    let (mut c, _) = t.login("user:a").await;
    // Nesting inside `data` is opaque to the server; nesting in the envelope itself is a format error.
    let nested = format!("{{\"event\":\"x\",\"data\":{}{}}}", "[".repeat(2000), "]".repeat(2000));
    c.send_text(&nested).await;
    let nested_event = format!("{{\"event\":{}{}}}", "[".repeat(2000), "]".repeat(2000));
    c.send_text(&nested_event).await;
    c.expect_error("Invalid message format").await;
    assert_still_served(&t, &mut c).await;
}

#[tokio::test]
async fn a_flood_of_garbage_from_one_client_does_not_starve_another() {
    let t = TestServer::start(builder()).await;
    let (mut bystander, _) = t.login("user:b").await;
    let (mut c, _) = t.login("user:a").await;
    for _ in 0..500 {
        c.send_text("garbage").await;
    }
    assert_still_served(&t, &mut bystander).await;
}
