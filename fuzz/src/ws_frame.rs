//! `ws_frame`: raw client bytes through the RFC 6455 frame decoder (`protocol::frame::Decoder`), the first parser
//! that sees what arrives on a connection's socket (below the JSON of `client_message`).
//!
//! Input: one byte choosing the message size limit, one byte choosing how the rest is split into the reads the
//! shell feeds (all at once, or chunks of varying size with `Decoder::idle` between reads, as the shell calls it
//! before waiting on the socket), then the byte stream.
//!
//! Oracles: the items and the error the decoder produces match an independent decoder written here that reads
//! the whole stream at once (so the result does not depend on how the bytes were split): frames masked, no
//! reserved bit, no unknown opcode, control frames final and at most 125 bytes, a close payload not of 1 byte,
//! no text/binary frame inside a fragmented message and no continuation outside one, a message over the limit
//! refused as soon as its header announces it (`TooLarge`, even before its payload arrives), text that is not
//! UTF-8 refused when the message completes; payloads unmasked; nothing read after a close. After the last read
//! the decoder holds bytes exactly when the independent reading left an incomplete frame, and any whole message
//! it returned is within the limit.

use sealcast::protocol::frame::{Decoder, FrameError, Inbound};

/// The message size limits the first byte picks from (the server's default is 64 KiB).
const LIMITS: [usize; 8] = [0, 1, 16, 125, 126, 1_000, 65_536, 1 << 20];

/// The fuzz target.
pub fn check(data: &[u8]) {
    let [l, split, stream @ ..] = data else {
        return;
    };
    let limit = LIMITS[usize::from(*l) % LIMITS.len()];
    let want = reference(stream, limit);
    let got = run(stream, limit, *split);
    assert_eq!(got.items, want.items, "items differ from the independent decoder");
    assert_eq!(got.error, want.error, "error differs from the independent decoder");
    if got.error.is_none() {
        assert_eq!(got.buffered, want.leftover, "bytes left buffered");
    }
    for item in &got.items {
        if let Inbound::Text(p) | Inbound::Binary(p) = item {
            assert!(
                p.len() <= limit,
                "a message of {} bytes over the limit {limit}",
                p.len()
            );
        }
    }
}

/// What a decoding produced: the items, the error that ended it, whether bytes were left buffered.
#[derive(Debug, Default)]
pub struct Outcome {
    pub items: Vec<Inbound>,
    pub error: Option<FrameError>,
    pub buffered: bool,
}

/// The decoder under test, fed as the shell feeds it.
pub fn run(stream: &[u8], limit: usize, split: u8) -> Outcome {
    let mut d = Decoder::new();
    let mut out = Outcome::default();
    let mut state = u32::from(split) | 0x100;
    let mut rest = stream;
    while !rest.is_empty() {
        let n = if split == 0 {
            rest.len()
        } else {
            // xorshift: chunks of 1 to `split` bytes.
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            1 + (state as usize) % usize::from(split)
        };
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        d.feed(chunk);
        loop {
            match d.next(limit) {
                Ok(Some(item)) => out.items.push(item),
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            }
        }
        d.idle();
    }
    out.buffered = d.has_buffered();
    out
}

/// The independent reading: `items`, `error`, and `leftover` (an incomplete frame at the end, not after a close).
#[derive(Debug, Default)]
pub struct Reading {
    pub items: Vec<Inbound>,
    pub error: Option<FrameError>,
    pub leftover: bool,
}

/// Decodes `s` as a whole: RFC 6455 §5 for client frames with no extension.
pub fn reference(s: &[u8], limit: usize) -> Reading {
    let mut r = Reading::default();
    let mut at = 0usize;
    // A fragmented message being assembled: (text, payload).
    let mut message: Option<(bool, Vec<u8>)> = None;
    let fail = |mut r: Reading, e: FrameError| {
        r.error = Some(e);
        r
    };
    loop {
        let frame = &s[at..];
        if frame.len() < 2 {
            r.leftover = !frame.is_empty();
            return r;
        }
        let (b0, b1) = (frame[0], frame[1]);
        let (fin, rsv, opcode) = (b0 >> 7 == 1, (b0 >> 4) & 7, b0 & 15);
        if rsv != 0 || b1 >> 7 == 0 {
            return fail(r, FrameError::Protocol);
        }
        let (len, mut pos): (u128, usize) = match b1 & 127 {
            126 if frame.len() >= 4 => ((u128::from(frame[2]) << 8) | u128::from(frame[3]), 4),
            127 if frame.len() >= 10 => (frame[2..10].iter().fold(0u128, |n, b| (n << 8) | u128::from(*b)), 10),
            126 | 127 => {
                r.leftover = true;
                return r;
            }
            n => (u128::from(n), 2),
        };
        if frame.len() < pos + 4 {
            r.leftover = true;
            return r;
        }
        let mask = [frame[pos], frame[pos + 1], frame[pos + 2], frame[pos + 3]];
        pos += 4;
        let control = opcode >= 8;
        if control && (!fin || len > 125) {
            return fail(r, FrameError::Protocol);
        }
        let so_far = message.as_ref().map_or(0, |m| m.1.len()) as u128;
        if !control && len + so_far > limit as u128 {
            return fail(r, FrameError::TooLarge);
        }
        let len = len as usize;
        if frame.len() < pos + len {
            r.leftover = true;
            return r;
        }
        let payload: Vec<u8> = frame[pos..pos + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        at += pos + len;
        match opcode {
            9 => r.items.push(Inbound::Ping(payload.into())),
            10 => r.items.push(Inbound::Pong),
            8 if payload.len() == 1 => return fail(r, FrameError::Protocol),
            8 => {
                r.items.push(Inbound::Close);
                return r;
            }
            1 | 2 if message.is_some() => return fail(r, FrameError::Protocol),
            0..=2 => {
                let (text, whole) = match (opcode, message.take()) {
                    (0, None) => return fail(r, FrameError::Protocol),
                    (0, Some((text, mut so_far))) => {
                        so_far.extend_from_slice(&payload);
                        (text, so_far)
                    }
                    (op, _) => (op == 1, payload),
                };
                if !fin {
                    message = Some((text, whole));
                } else if !text {
                    r.items.push(Inbound::Binary(whole.into()));
                } else if String::from_utf8(whole.clone()).is_ok() {
                    r.items.push(Inbound::Text(whole.into()));
                } else {
                    return fail(r, FrameError::InvalidUtf8);
                }
            }
            _ => return fail(r, FrameError::Protocol),
        }
    }
}
