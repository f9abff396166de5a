//! Group records (wsenc/1 §11) through a real server and real sockets: room messages sealed once under the room's
//! key, a header of each recipient's own, keys rotated on membership changes, mixed rooms.

use sealcast::client::{Client as EncClient, ClientConfig};
use sealcast::crypto::{b64, RoomKey, StaticKeySet};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::common::enc::{enc_builder, test_key, RawEnc};
use crate::common::{builder, eventually, Data, TestServer};

/// The shared body of a group record's raw frame, decoded (panics if the frame is not a group record).
fn body_of(raw: &str) -> Vec<u8> {
    let v: Value = serde_json::from_str(raw).unwrap();
    b64::decode(v["data"]["body"].as_str().expect("a group record")).unwrap()
}

/// `raw` with its `body` replaced by `other`'s.
fn with_body_of(raw: &str, other: &str) -> String {
    let mut v: Value = serde_json::from_str(raw).unwrap();
    let o: Value = serde_json::from_str(other).unwrap();
    v["data"]["body"] = o["data"]["body"].clone();
    v.to_string()
}

fn is_group_record(raw: &str) -> bool {
    let v: Value = serde_json::from_str(raw).unwrap();
    v["event"] == "encrypted" && v["data"]["body"].is_string()
}

/// A room message's data long enough for a group record (shorter messages go per recipient:
/// `sealcast::wsenc::GROUP_RECORD_MIN_LEN`).
fn big(n: u64) -> Value {
    json!({"n": n, "pad": "x".repeat(sealcast::wsenc::GROUP_RECORD_MIN_LEN)})
}

/// A copy of `key`, as a member that kept it would hold it.
fn kept(key: &RoomKey) -> RoomKey {
    RoomKey::new(key.room().into(), key.epoch(), Zeroizing::new(*key.key_bytes())).unwrap()
}

/// Two group-capable members of `room`.
async fn two_members(t: &TestServer, room: &str) -> (RawEnc, RawEnc) {
    let mut a = RawEnc::login_room_keys(t, "user:a").await;
    let mut b = RawEnc::login_room_keys(t, "user:b").await;
    a.join(&[room]).await;
    b.join(&[room]).await;
    (a, b)
}

/// The next `n` raw frames.
async fn raw_frames(c: &mut RawEnc, n: usize) -> Vec<String> {
    let mut frames = Vec::new();
    for _ in 0..n {
        frames.push(c.recv_raw().await);
    }
    frames
}

#[tokio::test]
async fn roomkeys_a_room_message_arrives_as_a_group_record_that_opens() {
    let t = TestServer::start(enc_builder()).await;
    let (mut a, mut b) = two_members(&t, "r").await;
    t.server.send_to_room("r", "chat", &big(1), &[]).unwrap();
    for c in [&mut a, &mut b] {
        let (m, raw) = c.recv_with_raw().await;
        assert_eq!((m["event"].as_str(), &m["data"]), (Some("chat"), &big(1)));
        assert!(is_group_record(&raw), "{raw}");
    }
    let (ka, kb) = (a.opener.room_key("r").unwrap(), b.opener.room_key("r").unwrap());
    assert_eq!(
        (ka.epoch(), ka.key_bytes()),
        (kb.epoch(), kb.key_bytes()),
        "one key per room"
    );
}

#[tokio::test]
async fn roomkeys_an_ex_member_cannot_open_what_is_sent_after_it_left() {
    let t = TestServer::start(enc_builder()).await;
    let (mut a, mut b) = two_members(&t, "r").await;
    t.server.send_to_room("r", "chat", &big(1), &[]).unwrap();
    a.recv().await;
    b.recv().await;
    let old = kept(a.opener.room_key("r").expect("a got the key"));
    a.leave(&["r"]).await;
    eventually("a left", || t.server.clients_by_room("r").len() == 1).await;
    // Another member so that the room still gets group records.
    let mut c = RawEnc::login_room_keys(&t, "user:c").await;
    c.join(&["r"]).await;
    t.server.send_to_room("r", "chat", &big(2), &[]).unwrap();
    let (m, raw) = b.recv_with_raw().await;
    assert_eq!(m["data"], big(2));
    let new = b.opener.room_key("r").unwrap();
    assert_ne!(new.epoch(), old.epoch(), "the key was rotated");
    let body = body_of(&raw);
    assert!(
        old.open_body(&body).is_err(),
        "the old key does not open the later body"
    );
    assert!(new.open_body(&body).is_ok());
    a.c.expect_silence().await;
    c.recv().await;
}

#[tokio::test]
async fn roomkeys_a_joiner_gets_a_fresh_key_and_not_the_one_before_its_join() {
    let t = TestServer::start(enc_builder()).await;
    let (mut a, mut b) = two_members(&t, "r").await;
    t.server.send_to_room("r", "chat", &big(1), &[]).unwrap();
    let (_, before) = a.recv_with_raw().await;
    b.recv().await;
    let mut c = RawEnc::login_room_keys(&t, "user:c").await;
    c.join(&["r"]).await;
    t.server.send_to_room("r", "chat", &big(2), &[]).unwrap();
    assert_eq!(c.recv().await["data"], big(2));
    let joiner = kept(c.opener.room_key("r").unwrap());
    assert!(
        joiner.open_body(&body_of(&before)).is_err(),
        "the joiner's key does not open what was sent before it joined"
    );
    assert_eq!(a.recv().await["data"], big(2));
    assert_eq!(a.opener.room_key("r").unwrap().epoch(), joiner.epoch());
}

/// A relay that moves a body from one room's record into another room's record is caught by the receiver.
#[tokio::test]
async fn roomkeys_a_body_swapped_between_rooms_is_caught() {
    let t = TestServer::start(enc_builder()).await;
    let (mut a, mut b) = two_members(&t, "r1").await;
    a.join(&["r2"]).await;
    b.join(&["r2"]).await;
    t.server.send_to_room("r1", "chat", &big(1), &[]).unwrap();
    t.server.send_to_room("r2", "chat", &big(2), &[]).unwrap();
    // room_key r1, group record r1, room_key r2, group record r2
    let frames = raw_frames(&mut b, 4).await;
    assert!(is_group_record(&frames[1]) && is_group_record(&frames[3]));
    b.opener.open(frames[0].as_bytes()).unwrap();
    let swapped = with_body_of(&frames[1], &frames[3]);
    let err = b.opener.open(swapped.as_bytes()).unwrap_err();
    assert_eq!(err.close_code(), 4005);
    a.recv().await;
}

/// A relay that hands one recipient's group record to another recipient is caught.
#[tokio::test]
async fn roomkeys_a_record_moved_to_another_recipient_is_caught() {
    let t = TestServer::start(enc_builder()).await;
    let (mut a, mut b) = two_members(&t, "r").await;
    t.server.send_to_room("r", "chat", &big(1), &[]).unwrap();
    let fa = raw_frames(&mut a, 2).await;
    let fb = raw_frames(&mut b, 2).await;
    assert!(is_group_record(&fa[1]) && is_group_record(&fb[1]));
    assert_eq!(body_of(&fa[1]), body_of(&fb[1]), "both frames share one body");
    assert_ne!(fa[1], fb[1], "each recipient has a header of its own");
    b.opener.open(fb[0].as_bytes()).unwrap();
    let err = b.opener.open(fa[1].as_bytes()).unwrap_err();
    assert_eq!(err.close_code(), 4005);
}

/// A relay that gives a recipient the body of another message under its own header is caught.
#[tokio::test]
async fn roomkeys_a_body_swapped_between_messages_is_caught() {
    let t = TestServer::start(enc_builder()).await;
    let (_a, mut b) = two_members(&t, "r").await;
    t.server.send_to_room("r", "chat", &big(1), &[]).unwrap();
    t.server.send_to_room("r", "chat", &big(2), &[]).unwrap();
    let frames = raw_frames(&mut b, 3).await;
    b.opener.open(frames[0].as_bytes()).unwrap();
    let err = b
        .opener
        .open(with_body_of(&frames[1], &frames[2]).as_bytes())
        .unwrap_err();
    assert_eq!(err.close_code(), 4005);
}

/// A group-capable, a per-recipient (legacy) encrypted and a plaintext member each receive their own form.
#[tokio::test]
async fn roomkeys_a_mixed_room_gives_each_member_its_own_form() {
    let t = TestServer::start(builder().static_keys(StaticKeySet::new(test_key()))).await;
    let mut g = RawEnc::login_room_keys(&t, "user:g").await;
    let mut l = RawEnc::login(&t, "user:l", &[test_key().pinned()]).await;
    assert!(l.connected.get("roomKeys").is_none(), "not advertised, not answered");
    let (mut p, _) = t.login("user:p").await;
    g.join(&["r"]).await;
    l.join(&["r"]).await;
    p.send(json!({"event": "join", "data": {"rooms": ["r"]}})).await;
    p.expect_event("joined").await;
    t.server.send_to_room("r", "chat", &big(1), &[]).unwrap();
    let (gm, graw) = g.recv_with_raw().await;
    assert!(is_group_record(&graw), "{graw}");
    let (lm, lraw) = l.recv_with_raw().await;
    let lv: Value = serde_json::from_str(&lraw).unwrap();
    assert_eq!(lv["event"], "encrypted");
    assert!(lv["data"].get("body").is_none(), "a per-recipient record: {lraw}");
    assert!(l.opener.room_key("r").is_none());
    let pm = p.recv().await;
    assert_eq!(pm["event"], "chat", "plaintext: {pm}");
    for m in [&gm, &lm, &pm] {
        assert_eq!(m["data"], big(1));
    }
}

#[tokio::test]
async fn roomkeys_raw_frames_show_no_plaintext_and_no_key() {
    let t = TestServer::start(enc_builder()).await;
    let (mut a, _b) = two_members(&t, "the-room").await;
    t.server
        .send_to_room(
            "the-room",
            "whisper",
            &json!({"text": "s3cr3t-payload", "pad": big(0)}),
            &[],
        )
        .unwrap();
    let (m, _) = a.recv_with_raw().await;
    assert_eq!(m["data"]["text"], "s3cr3t-payload");
    let key = b64::encode(a.opener.room_key("the-room").unwrap().key_bytes());
    let frames: Vec<&String> = a.wire.iter().skip_while(|f| !f.contains("\"seq\":")).collect();
    assert!(frames.iter().any(|f| is_group_record(f)));
    for f in frames {
        let v: Value = serde_json::from_str(f).unwrap();
        assert_eq!(v["event"], "encrypted", "{f}");
        for secret in ["s3cr3t", "whisper", "the-room", "room_key", key.as_str()] {
            assert!(!f.contains(secret), "{secret:?} visible in {f}");
        }
    }
}

/// Group records count towards the per-epoch limit: key updates interleave with them and nothing is lost.
#[tokio::test]
async fn roomkeys_group_records_and_key_updates_interleave() {
    let t = TestServer::start(enc_builder().max_records_per_epoch(4)).await;
    let (mut a, mut b) = two_members(&t, "r").await;
    for n in 0..12 {
        t.server.send_to_room("r", "chat", &big(n), &[]).unwrap();
    }
    for c in [&mut a, &mut b] {
        for n in 0..12 {
            assert_eq!(c.recv().await["data"], big(n));
        }
        assert!(c.opener.epoch() >= 3, "key updates happened");
    }
}

/// The Rust client advertises group records by default (batched ones too) and reads them.
#[tokio::test]
async fn roomkeys_the_rust_client_negotiates_and_reads_group_records() {
    let t = TestServer::start(enc_builder().allow_client_publish(true)).await;
    let cfg = |tok: &str| ClientConfig::new(t.url(), tok).pin(test_key().pinned());
    let mut a = EncClient::connect(cfg("user:a")).await.unwrap();
    let mut b = EncClient::connect(cfg("user:b")).await.unwrap();
    let mut c = EncClient::connect(cfg("user:c").room_keys(false)).await.unwrap();
    assert_eq!(a.connected_data()["roomKeys"], 3);
    assert!(c.connected_data().get("roomKeys").is_none());
    for x in [&mut a, &mut b, &mut c] {
        x.join(&["r"]).await.unwrap();
    }
    eventually("all joined", || t.server.clients_by_room("r").len() == 3).await;
    a.publish("r", "msg", &big(1)).await.unwrap();
    for x in [&mut b, &mut c] {
        let m = x.recv().await.unwrap();
        assert_eq!((m.event.as_str(), m.data), ("msg", big(1)));
    }
}

/// A recovering member reads the replay of what was sent before it joined (per-recipient records), then the
/// live group records.
#[tokio::test]
async fn roomkeys_a_recovery_replay_is_readable_by_the_recovering_member() {
    let t = TestServer::start(enc_builder().history_rooms(vec!["chat:*".into()])).await;
    let (mut a, _b) = two_members(&t, "chat:1").await;
    for n in 1..=3 {
        t.server.send_to_room("chat:1", "m", &big(n), &[]).unwrap();
    }
    let first = a.recv().await;
    let epoch = first["epoch"].clone();
    let mut c = RawEnc::login_room_keys(&t, "user:c").await;
    c.send(
        json!({"event": "join", "data": {"rooms": ["chat:1"], "recover": {"chat:1": {"offset": 0, "epoch": epoch}}}}),
    )
    .await;
    let mut replayed = Vec::new();
    while replayed.len() < 3 {
        let (m, raw) = c.recv_with_raw().await;
        if m["event"] == "m" {
            assert!(!is_group_record(&raw), "a replay is a per-recipient record");
            replayed.push(m["data"].clone());
        }
    }
    assert_eq!(replayed, [big(1), big(2), big(3)]);
    c.expect_event("joined").await;
    t.server.send_to_room("chat:1", "m", &big(4), &[]).unwrap();
    let (m, raw) = c.recv_with_raw().await;
    assert_eq!(m["data"], big(4));
    assert!(is_group_record(&raw));
}

/// A short room message goes per recipient even to a group-capable member: below the threshold a per-recipient
/// record costs less.
#[tokio::test]
async fn roomkeys_a_short_room_message_goes_per_recipient() {
    let t = TestServer::start(enc_builder()).await;
    let (mut a, _b) = two_members(&t, "r").await;
    t.server.send_to_room("r", "chat", &json!({"n": 1}), &[]).unwrap();
    let (m, raw) = a.recv_with_raw().await;
    assert_eq!(m["data"], json!({"n": 1}));
    assert!(!is_group_record(&raw), "{raw}");
    assert!(a.opener.room_key("r").is_none(), "no key was needed");
    t.server.send_to_room("r", "chat", &big(2), &[]).unwrap();
    let (_, raw) = a.recv_with_raw().await;
    assert!(is_group_record(&raw));
}

// ------------------------------------------------------------------------------------------------------------
// Batched group records (§11.4): `"roomKeys": 2`
// ------------------------------------------------------------------------------------------------------------

/// The `bodies` of a raw frame (empty if it is not a batched record).
fn bodies_of(raw: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(raw).unwrap();
    v["data"]["bodies"].as_array().cloned().unwrap_or_default()
}

/// `raw` with its `bodies` replaced.
fn with_bodies(raw: &str, bodies: Vec<Value>) -> String {
    let mut v: Value = serde_json::from_str(raw).unwrap();
    v["data"]["bodies"] = Value::Array(bodies);
    v.to_string()
}

/// Two members of `room` that take batched group records.
async fn two_batch_members(t: &TestServer, room: &str) -> (RawEnc, RawEnc) {
    let mut a = RawEnc::login_room_key_batches(t, "user:a").await;
    let mut b = RawEnc::login_room_key_batches(t, "user:b").await;
    a.join(&[room]).await;
    b.join(&[room]).await;
    (a, b)
}

/// Sends `n` short room messages at once: the test's one-thread runtime runs no writer in between, so each
/// member's writer finds all of them queued together.
fn burst(t: &TestServer, room: &str, n: u64) {
    for i in 0..n {
        t.server
            .send_to_room(room, "chat", &json!({"n": i, "text": format!("s3cr3t-{i}")}), &[])
            .unwrap();
    }
}

/// Raw frames until one is a batched record (the `room_key` records come first): all of them, the batch last.
async fn frames_to_batch(c: &mut RawEnc) -> Vec<String> {
    let mut frames = Vec::new();
    loop {
        let raw = c.recv_raw().await;
        let batch = !bodies_of(&raw).is_empty();
        frames.push(raw);
        if batch {
            return frames;
        }
    }
}

/// The next batched record, after opening the records before it (the `room_key`s it needs).
async fn batch_after_its_keys(c: &mut RawEnc) -> String {
    let mut frames = frames_to_batch(c).await;
    let batch = frames.pop().unwrap();
    for f in frames {
        c.opener.open_all(f.as_bytes()).unwrap();
    }
    batch
}

#[tokio::test]
async fn roomkeys_a_burst_arrives_as_batched_records_in_order_without_plaintext() {
    let t = TestServer::start(enc_builder()).await;
    let (mut a, _b) = two_batch_members(&t, "the-room").await;
    burst(&t, "the-room", 20);
    for n in 0..20 {
        let (m, _) = a.recv_with_raw().await;
        assert_eq!(m["data"]["n"], n, "in order");
    }
    let frames: Vec<&String> = a.wire.iter().skip_while(|f| !f.contains("\"seq\":")).collect();
    assert!(
        frames.iter().any(|f| bodies_of(f).len() > 1),
        "a batched record with several bodies: {frames:?}"
    );
    let key = b64::encode(a.opener.room_key("the-room").unwrap().key_bytes());
    for f in frames {
        let v: Value = serde_json::from_str(f).unwrap();
        assert_eq!(v["event"], "encrypted", "{f}");
        assert!(v["data"].get("body").is_none(), "no single-body record in a burst: {f}");
        for secret in ["s3cr3t", "chat", "the-room", "room_key", key.as_str()] {
            assert!(!f.contains(secret), "{secret:?} visible in {f}");
        }
    }
}

#[tokio::test]
async fn roomkeys_bodies_reordered_inside_a_batch_are_caught() {
    let t = TestServer::start(enc_builder()).await;
    let (_a, mut b) = two_batch_members(&t, "r").await;
    burst(&t, "r", 3);
    let batch = &batch_after_its_keys(&mut b).await;
    let mut bodies = bodies_of(batch);
    assert!(bodies.len() >= 2, "{batch}");
    bodies.swap(0, 1);
    let err = b.opener.open_all(with_bodies(batch, bodies).as_bytes()).unwrap_err();
    assert_eq!(err.close_code(), 4005);
}

#[tokio::test]
async fn roomkeys_a_body_dropped_from_a_batch_is_caught() {
    let t = TestServer::start(enc_builder()).await;
    let (_a, mut b) = two_batch_members(&t, "r").await;
    burst(&t, "r", 3);
    let batch = &batch_after_its_keys(&mut b).await;
    let mut bodies = bodies_of(batch);
    bodies.pop();
    let err = b.opener.open_all(with_bodies(batch, bodies).as_bytes()).unwrap_err();
    assert_eq!(err.close_code(), 4005);
}

/// A relay that puts a body of another recipient's batch (another room's message) into this recipient's batch
/// is caught: this header names other digests.
#[tokio::test]
async fn roomkeys_a_body_swapped_in_from_another_recipients_batch_is_caught() {
    let t = TestServer::start(enc_builder()).await;
    let (_a, mut b) = two_batch_members(&t, "r1").await;
    let mut c = RawEnc::login_room_key_batches(&t, "user:c").await;
    let mut d = RawEnc::login_room_key_batches(&t, "user:d").await;
    c.join(&["r2"]).await;
    d.join(&["r2"]).await;
    burst(&t, "r1", 2);
    burst(&t, "r2", 2);
    let theirs = frames_to_batch(&mut c).await;
    let batch = &batch_after_its_keys(&mut b).await;
    let mut bodies = bodies_of(batch);
    bodies[0] = bodies_of(theirs.last().unwrap())[0].clone();
    let err = b.opener.open_all(with_bodies(batch, bodies).as_bytes()).unwrap_err();
    assert_eq!(err.close_code(), 4005);
}

/// A relay that hands one recipient's whole batched record to another recipient is caught.
#[tokio::test]
async fn roomkeys_a_batch_moved_to_another_recipient_is_caught() {
    let t = TestServer::start(enc_builder()).await;
    let (mut a, mut b) = two_batch_members(&t, "r").await;
    burst(&t, "r", 3);
    let fa = frames_to_batch(&mut a).await;
    let fb = frames_to_batch(&mut b).await;
    assert_eq!(
        bodies_of(fa.last().unwrap()),
        bodies_of(fb.last().unwrap()),
        "both batches share the bodies"
    );
    for f in &fb[..fb.len() - 1] {
        b.opener.open_all(f.as_bytes()).unwrap();
    }
    let err = b.opener.open_all(fa.last().unwrap().as_bytes()).unwrap_err();
    assert_eq!(err.close_code(), 4005);
}

/// A `roomKeys: 1` member of a room whose other members take batches keeps getting single-body records.
#[tokio::test]
async fn roomkeys_a_room_keys_1_member_keeps_getting_single_body_records() {
    let t = TestServer::start(enc_builder()).await;
    let (_a, _b) = two_batch_members(&t, "r").await;
    let mut g = RawEnc::login_room_keys(&t, "user:g").await;
    g.join(&["r"]).await;
    for n in 0..5 {
        t.server.send_to_room("r", "chat", &big(n), &[]).unwrap();
    }
    for n in 0..5 {
        let (m, raw) = g.recv_with_raw().await;
        assert_eq!(m["data"], big(n));
        assert!(is_group_record(&raw), "a single-body group record: {raw}");
        assert!(bodies_of(&raw).is_empty(), "{raw}");
    }
}

/// Batch-capable, single-body, per-recipient encrypted and plaintext members of one room each get their own
/// form of the same burst.
#[tokio::test]
async fn roomkeys_a_mixed_room_with_batches_gives_each_member_its_own_form() {
    let t = TestServer::start(builder().static_keys(StaticKeySet::new(test_key()))).await;
    let mut bm = RawEnc::login_room_key_batches(&t, "user:b").await;
    let mut g = RawEnc::login_room_keys(&t, "user:g").await;
    let mut l = RawEnc::login(&t, "user:l", &[test_key().pinned()]).await;
    let (mut p, _) = t.login("user:p").await;
    for c in [&mut bm, &mut g, &mut l] {
        c.join(&["r"]).await;
    }
    p.send(json!({"event": "join", "data": {"rooms": ["r"]}})).await;
    p.expect_event("joined").await;
    for n in 0..4 {
        t.server.send_to_room("r", "chat", &big(n), &[]).unwrap();
    }
    let mut forms = Vec::new();
    for c in [&mut bm, &mut g, &mut l] {
        let mut raws = Vec::new();
        for n in 0..4 {
            let (m, raw) = c.recv_with_raw().await;
            assert_eq!(m["data"], big(n));
            raws.push(raw);
        }
        forms.push(raws);
    }
    assert!(
        forms[0].iter().all(|r| bodies_of(r).len() == 4),
        "one batch of four: {:?}",
        forms[0]
    );
    assert!(forms[1].iter().all(|r| is_group_record(r) && bodies_of(r).is_empty()));
    assert!(forms[2].iter().all(|r| !is_group_record(r) && bodies_of(r).is_empty()));
    for n in 0..4 {
        let m = p.recv().await;
        assert_eq!((m["event"].as_str(), &m["data"]), (Some("chat"), &big(n)), "plaintext");
    }
}

/// A batch is one record: with a small epoch limit key updates interleave with batches and nothing is lost.
#[tokio::test]
async fn roomkeys_batched_records_and_key_updates_interleave() {
    let t = TestServer::start(enc_builder().max_records_per_epoch(4)).await;
    let (mut a, _b) = two_batch_members(&t, "r").await;
    for round in 0..4 {
        burst(&t, "r", 5);
        for n in 0..5 {
            assert_eq!(a.recv().await["data"]["n"], n, "round {round}");
        }
    }
    assert!(a.opener.epoch() >= 2, "key updates happened");
}

/// The server setting turns group records off: `roomKeys` is not answered and room messages are per-recipient.
#[tokio::test]
async fn roomkeys_the_room_keys_setting_turns_group_records_off() {
    let t = TestServer::start(enc_builder().room_keys(false)).await;
    let mut a = RawEnc::login(&t, "user:a", &[test_key().pinned()]).await;
    assert!(a.connected.get("roomKeys").is_none());
    let mut b = RawEnc::login(&t, "user:b", &[test_key().pinned()]).await;
    a.join(&["r"]).await;
    b.join(&["r"]).await;
    t.server.send_to_room("r", "chat", &big(1), &[]).unwrap();
    let (m, raw) = a.recv_with_raw().await;
    assert_eq!(m["data"], big(1));
    assert!(!is_group_record(&raw) && bodies_of(&raw).is_empty(), "{raw}");
}

/// The Rust client offers batches by default and reads a burst that arrives batched.
#[tokio::test]
async fn roomkeys_the_rust_client_negotiates_and_reads_batched_records() {
    let t = TestServer::start(enc_builder()).await;
    let cfg = |tok: &str| ClientConfig::new(t.url(), tok).pin(test_key().pinned());
    let mut a = EncClient::connect(cfg("user:a")).await.unwrap();
    let mut b = EncClient::connect(cfg("user:b").room_key_batches(false)).await.unwrap();
    assert_eq!(a.connected_data()["roomKeys"], 3);
    assert_eq!(b.connected_data()["roomKeys"], 1);
    for x in [&mut a, &mut b] {
        x.join(&["r"]).await.unwrap();
    }
    burst(&t, "r", 10);
    for x in [&mut a, &mut b] {
        for n in 0..10 {
            let m = x.recv().await.unwrap();
            assert_eq!((m.event.as_str(), &m.data["n"]), ("chat", &json!(n)));
        }
    }
}

/// Binary frames until one is a binary batched record (§11.5), opening the text records before it (the
/// `room_key`s it needs).
async fn binary_batch_after_its_keys(c: &mut RawEnc) -> Vec<u8> {
    loop {
        match c.recv_data().await {
            Data::Binary(bin) => return bin,
            Data::Text(raw) => {
                c.opener.open_all(raw.as_bytes()).unwrap();
            }
        }
    }
}

/// The parts `u32be(len) ‖ body` of a binary batched record, after its head and header.
fn binary_parts(bin: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let k = usize::from(u16::from_be_bytes([bin[9], bin[10]]));
    let head = 11 + 40 * k + 16;
    let mut parts = Vec::new();
    let mut at = head;
    while at < bin.len() {
        let len = u32::from_be_bytes(bin[at..at + 4].try_into().unwrap()) as usize;
        parts.push(bin[at..at + 4 + len].to_vec());
        at += 4 + len;
    }
    assert_eq!(parts.len(), k, "k parts");
    (bin[..head].to_vec(), parts)
}

/// A `roomKeys: 3` member gets a burst as binary frames, in order, with no plaintext in the raw bytes; a
/// `roomKeys: 2` member of the same room keeps getting text batches.
#[tokio::test]
async fn roomkeys_a_burst_arrives_as_binary_batches_in_order_and_text_batches_stay_text() {
    let t = TestServer::start(enc_builder()).await;
    let mut a = RawEnc::login_room_key_binary(&t, "user:a").await;
    let mut b = RawEnc::login_room_key_batches(&t, "user:b").await;
    a.join(&["the-room"]).await;
    b.join(&["the-room"]).await;
    burst(&t, "the-room", 20);
    for n in 0..20 {
        let (m, _) = a.recv_with_raw().await;
        assert_eq!(m["data"]["n"], n, "in order");
        let (m, raw) = b.recv_with_raw().await;
        assert_eq!(m["data"]["n"], n, "in order");
        assert!(!raw.starts_with("binary:"), "text for roomKeys 2");
    }
    assert!(b.bin_wire.is_empty(), "no binary frame to a roomKeys 2 member");
    assert!(
        b.wire.iter().any(|f| bodies_of(f).len() > 1),
        "text batches: {:?}",
        b.wire
    );
    assert!(!a.bin_wire.is_empty(), "binary batches");
    assert!(
        a.bin_wire.iter().any(|f| binary_parts(f).1.len() > 1),
        "a binary batch with several bodies"
    );
    assert!(
        a.wire.iter().all(|f| bodies_of(f).is_empty()),
        "no text batch to a roomKeys 3 member"
    );
    let key = *a.opener.room_key("the-room").unwrap().key_bytes();
    for f in &a.bin_wire {
        assert_eq!(f[0], 0x01, "type byte");
        for secret in [&b"s3cr3t"[..], b"chat", b"the-room", b"room_key", &key[..]] {
            assert!(!f.windows(secret.len()).any(|w| w == secret), "{secret:?} visible");
        }
    }
}

/// A fresh `roomKeys: 3` member of `room`, and the first binary batch of a burst of three, its keys opened.
async fn fresh_binary_batch(t: &TestServer, token: &str, room: &str) -> (RawEnc, Vec<u8>) {
    let mut x = RawEnc::login_room_key_binary(t, token).await;
    x.join(&[room]).await;
    burst(t, room, 3);
    let bin = binary_batch_after_its_keys(&mut x).await;
    (x, bin)
}

/// A truncated, extended or body-swapped binary batch is refused (4005), and so is any binary batch on a session
/// that did not negotiate `roomKeys: 3`.
#[tokio::test]
async fn roomkeys_tampered_binary_batches_are_caught() {
    let t = TestServer::start(enc_builder()).await;
    let mut other = RawEnc::login_room_key_binary(&t, "user:o").await;
    other.join(&["r"]).await;
    type Tamper = fn(&[u8], &[u8], &[Vec<u8>]) -> Vec<u8>;
    let cases: [(&str, Tamper); 7] = [
        ("truncated", |bin, _, _| bin[..bin.len() - 1].to_vec()),
        ("extended", |bin, _, _| [bin, &[0u8]].concat()),
        ("header only", |_, head, _| head.to_vec()),
        ("bad type byte", |bin, _, _| [&[0x02u8][..], &bin[1..]].concat()),
        ("k = 0", |bin, _, _| [&bin[..9], &[0, 0], &bin[11..]].concat()),
        ("bodies swapped", |_, head, parts| {
            [head.to_vec(), parts[1].clone(), parts[0].clone(), parts[2..].concat()].concat()
        }),
        ("a body's length lies", |_, head, parts| {
            let mut p0 = parts[0].clone();
            p0[3] = p0[3].wrapping_sub(1);
            [head.to_vec(), p0, parts[1..].concat()].concat()
        }),
    ];
    for (i, (what, tamper)) in cases.iter().enumerate() {
        let (mut x, bin) = fresh_binary_batch(&t, &format!("user:x{i}"), "r").await;
        let (head, parts) = binary_parts(&bin);
        assert!(parts.len() >= 3, "a batch of three: {what}");
        let err = x.opener.open_binary(&tamper(&bin, &head, &parts)).unwrap_err();
        assert_eq!(err.close_code(), 4005, "{what}");
    }
    // The untampered frame opens on the session it was made for.
    let (mut y, bin) = fresh_binary_batch(&t, "user:y", "r").await;
    let all = y.opener.open_binary(&bin).expect("opens");
    assert_eq!(all.len(), 3);
    // A roomKeys 2 session refuses a binary batch.
    let mut c = RawEnc::login_room_key_batches(&t, "user:c").await;
    let err = c.opener.open_binary(&bin).unwrap_err();
    assert_eq!(err.close_code(), 4005, "binary on a roomKeys 2 session");
}

/// A binary batch is one record too: with a small epoch limit key updates (text records) interleave with binary
/// batches and nothing is lost.
#[tokio::test]
async fn roomkeys_binary_batches_and_key_updates_interleave() {
    let t = TestServer::start(enc_builder().max_records_per_epoch(4)).await;
    let mut a = RawEnc::login_room_key_binary(&t, "user:a").await;
    let mut b = RawEnc::login_room_key_binary(&t, "user:b").await;
    a.join(&["r"]).await;
    b.join(&["r"]).await;
    for round in 0..4 {
        burst(&t, "r", 5);
        for n in 0..5 {
            assert_eq!(a.recv().await["data"]["n"], n, "round {round}");
        }
    }
    assert!(a.opener.epoch() >= 2, "key updates happened");
    assert!(!a.bin_wire.is_empty(), "binary batches");
}
