//! `group_binary`: a binary batched group record (wsenc/1 §11.5) opened on a session that negotiated
//! `roomKeys: 3`, keyed with the spec's Appendix A session and Appendix D room key (the session of `group_open`).
//!
//! The reference sealer, in binary mode, delivers the Appendix D `room_key` record and then the valid binary
//! frame `V` of two bodies (the Appendix D message and a second one). The input is delivered in `V`'s place
//! through `open_binary`. The binary form has one encoding, so the asserted property is exact: the opener accepts
//! the input **only** if it is `V` byte for byte, then returns exactly its two messages in order, and never twice;
//! every refusal closes 4005 (or 4006) and leaves the opener failed (`Poisoned`), `V` included.

use sealcast::crypto::schedule::TrafficSecret;
use sealcast::crypto::{Direction, OpenError, RecordOpener, RecordSealer};

use super::group_open::{room_key, MESSAGE, MESSAGE_2};
use super::record_open::{hex32, TH, TS_S2C_0};

fn ts() -> TrafficSecret {
    TrafficSecret::from_bytes(&hex32(TS_S2C_0))
}

/// An opener with binary batches that has taken the `room_key` record, and the valid binary frame `V` after it.
pub fn session() -> (RecordOpener, Vec<u8>) {
    let mut sealer = RecordSealer::new(Direction::S2c, ts(), hex32(TH), 1);
    let mut opener = RecordOpener::new(Direction::S2c, ts(), hex32(TH), 1);
    sealer.enable_room_key_batches();
    sealer.enable_room_key_binary();
    opener.enable_room_key_batches();
    opener.enable_room_key_binary();
    let key = room_key();
    let seal = |counter, m| key.seal_body(counter, m, None).unwrap_or_else(|_| panic!("seal body"));
    let (b1, b2) = (seal(3, MESSAGE), seal(4, MESSAGE_2));
    let mut out = Vec::new();
    sealer
        .seal_group_batch(&[(&key, &b1), (&key, &b2)], &mut out)
        .unwrap_or_else(|_| panic!("seal batch"));
    assert_eq!(out.len(), 2, "the room_key record, then the binary batch");
    let frame = out.pop().map(|f| f.to_vec()).unwrap_or_default();
    let delivery = out.pop().map(|f| f.to_vec()).unwrap_or_default();
    assert_eq!(opener.open(&delivery), Ok(None), "the room_key record is consumed");
    (opener, frame)
}

/// The target's check.
pub fn check(data: &[u8]) {
    let (mut opener, valid) = session();
    match opener.open_binary(data) {
        Ok(messages) => {
            assert_eq!(data, valid.as_slice(), "only the valid frame is accepted");
            assert_eq!(messages, [MESSAGE, MESSAGE_2], "its messages, in order");
            assert!(opener.open_binary(data).is_err(), "a replay is refused");
        }
        Err(e) => {
            let code = e.close_code();
            assert!(code == 4005 || code == 4006, "{e:?} closes {code}");
            assert_eq!(
                opener.open_binary(&valid),
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
    fn the_valid_frame_is_accepted_once() {
        let (_, valid) = session();
        assert_eq!(valid.first(), Some(&0x01), "the §11.5 type byte");
        check(&valid);
    }

    #[test]
    fn a_frame_cut_by_one_byte_is_refused() {
        let (_, valid) = session();
        check(&valid[..valid.len() - 1]);
    }
}
