//! `group_open`: a group record (wsenc/1 §11) opened on a session that negotiated room keys, keyed with the
//! spec's Appendix A session and Appendix D room key.
//!
//! The reference sealer delivers the Appendix D `room_key` record, then produces the valid group record `F` for
//! the Appendix D message. The input is delivered in `F`'s place, as one whole frame. The asserted property: the
//! opener accepts the input **only** if it carries `F`'s fields (the same `seq`, `iv`, header and body, in any
//! JSON form the strict parser reads) and then returns exactly the Appendix D message, and never twice (a
//! replay fails); a refusal is 4004 for a frame that is not an `encrypted` envelope and 4005/4006 otherwise, and
//! the opener stays failed (`Poisoned`) afterwards, `F` included. No input ever hands a `room_key` or
//! `key_update` through as a message.

use sealcast::crypto::schedule::TrafficSecret;
use sealcast::crypto::{b64, Direction, OpenError, RecordOpener, RecordSealer, RoomKey};
use serde_json::Value;
use zeroize::Zeroizing;

use super::record_open::{hex32, TH, TS_S2C_0};

/// Appendix D: the room key `K_r`.
const K_R: &str = "3ac8a054de97b4e5ad340d08faf35682872484f2571d58999f3f653a2413f291";
/// Appendix D: the message.
const MESSAGE: &[u8] = br#"{"event":"message","data":{"text":"hi"}}"#;

/// The Appendix D room key.
pub fn room_key() -> RoomKey {
    RoomKey::new("lobby".into(), 7, Zeroizing::new(hex32(K_R))).unwrap_or_else(|_| panic!("Appendix D key"))
}

/// An opener with room keys that has taken the `room_key` record, and the valid group record `F` after it.
pub fn session() -> (RecordOpener, Vec<u8>) {
    let ts = || TrafficSecret::from_bytes(&hex32(TS_S2C_0));
    let mut sealer = RecordSealer::new(Direction::S2c, ts(), hex32(TH), 1);
    let mut opener = RecordOpener::new(Direction::S2c, ts(), hex32(TH), 1);
    sealer.enable_room_keys();
    opener.enable_room_keys();
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

/// A group record's `data` fields, decoded: `seq`, `iv`, `ct`, `body`.
type Fields = (u64, Vec<u8>, Vec<u8>, Vec<u8>);

/// The `data` fields of a frame, decoded.
fn fields(frame: &[u8]) -> Option<Fields> {
    let v: Value = serde_json::from_slice(frame).ok()?;
    let d = v.get("data")?;
    Some((
        d.get("seq")?.as_u64()?,
        b64::decode(d.get("iv")?.as_str()?).ok()?,
        b64::decode(d.get("ct")?.as_str()?).ok()?,
        b64::decode(d.get("body")?.as_str()?).ok()?,
    ))
}

/// The target's check.
pub fn check(data: &[u8]) {
    let (mut opener, valid) = session();
    match opener.open(data) {
        Ok(Some(inner)) => {
            assert_eq!(inner, MESSAGE, "an accepted group record carries the sealed message");
            assert_eq!(
                fields(data),
                fields(&valid),
                "only the valid record's fields are accepted"
            );
            assert!(opener.open(data).is_err(), "a replay is refused");
        }
        Ok(None) => panic!("a control record was accepted in a group record's place"),
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
}
