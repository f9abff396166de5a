//! `group_open`: a group record (wsenc/1 §11) opened on a session that negotiated batched room keys
//! (`roomKeys: 2`), keyed with the spec's Appendix A session and Appendix D room key.
//!
//! The reference sealer delivers the Appendix D `room_key` record, then produces the valid group record `F` for
//! the Appendix D message, or (another sealer in the same state) the valid batched record `B` (§11.4) of two
//! bodies: the Appendix D message and a second one. The input is delivered in their place, as one whole frame,
//! through `open_all`. The asserted property: the opener accepts the input **only** if it carries `F`'s or
//! `B`'s fields (the same `seq`, `iv`, header and bodies in order, in any JSON form the strict parser reads; a
//! one-body `bodies` array is the same record as `body`, §11.4) and then returns exactly their messages in
//! order, and never twice (a replay fails); a refusal is 4004 for a frame that is not an `encrypted` envelope
//! and 4005/4006 otherwise, and the opener stays failed (`Poisoned`) afterwards, `F` included. No input ever
//! hands a `room_key` or `key_update` through as a message.

use sealcast::crypto::schedule::TrafficSecret;
use sealcast::crypto::{b64, Direction, OpenError, RecordOpener, RecordSealer, RoomKey};
use serde_json::Value;
use zeroize::Zeroizing;

use super::record_open::{hex32, TH, TS_S2C_0};

/// Appendix D: the room key `K_r`.
const K_R: &str = "3ac8a054de97b4e5ad340d08faf35682872484f2571d58999f3f653a2413f291";
/// Appendix D: the message.
pub const MESSAGE: &[u8] = br#"{"event":"message","data":{"text":"hi"}}"#;
/// The second message of the batched record.
pub const MESSAGE_2: &[u8] = br#"{"event":"message","data":{"text":"there"}}"#;

/// The Appendix D room key.
pub fn room_key() -> RoomKey {
    RoomKey::new("lobby".into(), 7, Zeroizing::new(hex32(K_R))).unwrap_or_else(|_| panic!("Appendix D key"))
}

fn ts() -> TrafficSecret {
    TrafficSecret::from_bytes(&hex32(TS_S2C_0))
}

/// An opener with batched room keys that has taken the `room_key` record, and the valid group record `F` after
/// it.
pub fn session() -> (RecordOpener, Vec<u8>) {
    let mut sealer = RecordSealer::new(Direction::S2c, ts(), hex32(TH), 1);
    let mut opener = RecordOpener::new(Direction::S2c, ts(), hex32(TH), 1);
    sealer.enable_room_key_batches();
    opener.enable_room_key_batches();
    let key = room_key();
    let body = key.seal_body(3, MESSAGE, None).unwrap_or_else(|_| panic!("seal body"));
    let mut out = Vec::new();
    sealer
        .seal_group(&key, &body, &mut out)
        .unwrap_or_else(|_| panic!("seal group"));
    assert_eq!(out.len(), 2, "the room_key record, then the group record");
    let frame = out.pop().map(|f| f.to_vec()).unwrap_or_default();
    let delivery = out.pop().map(|f| f.to_vec()).unwrap_or_default();
    assert_eq!(opener.open(&delivery), Ok(None), "the room_key record is consumed");
    (opener, frame)
}

/// The valid batched record `B` at `F`'s place (seq 2): the Appendix D message (counter 3) and [`MESSAGE_2`]
/// (counter 4) under the Appendix D key.
pub fn batch() -> Vec<u8> {
    let mut sealer = RecordSealer::new(Direction::S2c, ts(), hex32(TH), 1);
    sealer.enable_room_key_batches();
    let key = room_key();
    let seal = |counter, m| key.seal_body(counter, m, None).unwrap_or_else(|_| panic!("seal body"));
    let (b1, b2) = (seal(3, MESSAGE), seal(4, MESSAGE_2));
    let mut out = Vec::new();
    sealer
        .seal_group_batch(&[(&key, &b1), (&key, &b2)], &mut out)
        .unwrap_or_else(|_| panic!("seal batch"));
    assert_eq!(out.len(), 2, "the room_key record, then the batched record");
    out.pop().map(|f| f.to_vec()).unwrap_or_default()
}

/// A group record's `data` fields, decoded: `seq`, `iv`, `ct`, and the body or bodies in order (`body` as a
/// one-body list).
type Fields = (u64, Vec<u8>, Vec<u8>, Vec<Vec<u8>>);

/// The `data` fields of a frame, decoded.
fn fields(frame: &[u8]) -> Option<Fields> {
    let v: Value = serde_json::from_slice(frame).ok()?;
    let d = v.get("data")?;
    let bodies = match (d.get("body"), d.get("bodies")) {
        (Some(body), None) => vec![b64::decode(body.as_str()?).ok()?],
        (None, Some(bodies)) => bodies
            .as_array()?
            .iter()
            .map(|b| b64::decode(b.as_str()?).ok())
            .collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    Some((
        d.get("seq")?.as_u64()?,
        b64::decode(d.get("iv")?.as_str()?).ok()?,
        b64::decode(d.get("ct")?.as_str()?).ok()?,
        bodies,
    ))
}

/// The target's check.
pub fn check(data: &[u8]) {
    let (mut opener, valid) = session();
    match opener.open_all(data) {
        Ok(messages) if messages.len() == 1 => {
            assert_eq!(
                messages,
                [MESSAGE],
                "an accepted group record carries the sealed message"
            );
            assert_eq!(
                fields(data),
                fields(&valid),
                "only the valid record's fields are accepted"
            );
            assert!(opener.open_all(data).is_err(), "a replay is refused");
        }
        Ok(messages) if !messages.is_empty() => {
            assert_eq!(
                messages,
                [MESSAGE, MESSAGE_2],
                "an accepted batch carries its messages in order"
            );
            assert_eq!(
                fields(data),
                fields(&batch()),
                "only the valid batch's fields are accepted"
            );
            assert!(opener.open_all(data).is_err(), "a replay is refused");
        }
        Ok(_) => panic!("a control record was accepted in a group record's place"),
        Err(e) => {
            let code = e.close_code();
            if e == OpenError::NotEncrypted {
                assert_eq!(code, 4004);
            } else {
                assert!(code == 4005 || code == 4006, "{e:?} closes {code}");
            }
            assert_eq!(
                opener.open(&valid),
                Err(OpenError::Poisoned),
                "a failed opener stays failed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_valid_record_is_accepted_once() {
        let (_, valid) = session();
        check(&valid);
    }

    #[test]
    fn the_valid_batch_is_accepted_once() {
        let (mut opener, _) = session();
        assert_eq!(opener.open_all(&batch()).unwrap_or_default(), [MESSAGE, MESSAGE_2]);
        check(&batch());
    }
}
