//! Decoding of what a client sends, below the JSON: RFC 6455 frames (server side) into whole messages.
//!
//! Pure code: bytes in, [`Inbound`] items out. The connection's shell reads the socket into a stack buffer and
//! hands what arrived to [`Decoder::feed`]; the decoder keeps only the bytes of a frame (or a fragmented message)
//! that is not complete yet, and [`Decoder::idle`] gives even that storage back when nothing is pending, so an
//! idle connection holds no read buffer.
//!
//! Limits are checked on the frame header, before the payload is buffered: a client announcing a frame over the
//! current limit is refused at once, whatever it then sends.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::CloseCode;

/// A whole inbound message or control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A text message (its payload is valid UTF-8).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping: answer with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong (ignored).
    Pong,
    /// The client starts the closing handshake.
    Close,
}

/// Why the client's byte stream cannot be read further; the connection closes with [`Self::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame or message over the size limit in force.
    #[error("message over the size limit")]
    TooLarge,
    /// Not a valid client frame sequence (unmasked, reserved bits or opcodes, a bad control frame, a stray or
    /// missing continuation).
    #[error("protocol violation")]
    Protocol,
    /// A text message that is not UTF-8.
    #[error("text message is not UTF-8")]
    InvalidUtf8,
}

impl FrameError {
    /// The close code that answers this error.
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::TooLarge => CloseCode::TooLarge,
            Self::Protocol => CloseCode::ProtocolError,
            Self::InvalidUtf8 => CloseCode::InvalidPayload,
        }
    }
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
/// Control frames carry at most this much payload (RFC 6455 §5.5).
const MAX_CONTROL: u64 = 125;

/// A parsed frame header.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: usize,
    header_len: usize,
}

/// Reads one frame header from the start of `buf`: `Ok(None)` while it is incomplete.
fn header(buf: &[u8]) -> Result<Option<(Header, u64)>, FrameError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        // No extension is ever negotiated, so no reserved bit may be set.
        return Err(FrameError::Protocol);
    }
    if b1 & 0x80 == 0 {
        // Every client frame is masked (§5.1).
        return Err(FrameError::Protocol);
    }
    let (len, at) = match b1 & 0x7F {
        126 => match buf.get(2..4).and_then(|b| <[u8; 2]>::try_from(b).ok()) {
            Some(b) => (u64::from(u16::from_be_bytes(b)), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let Some(mask) = buf.get(at..at + 4).and_then(|m| <[u8; 4]>::try_from(m).ok()) else {
        return Ok(None);
    };
    let header = Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0F,
        mask,
        len: 0,
        header_len: at + 4,
    };
    Ok(Some((header, len)))
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (byte, m) in payload.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

/// The RFC 6455 reader of one connection.
#[derive(Default)]
pub struct Decoder {
    /// Bytes received and not yet decoded: at most the start of one frame once [`Self::next`] returned `None`.
    buf: BytesMut,
    /// A fragmented message being assembled: whether it is text, and its payload so far. Boxed: fragmented
    /// messages are rare, and the decoder lives in every connection's task.
    message: Option<Box<(bool, BytesMut)>>,
    /// The client sent a close frame (or the stream failed): nothing after it is read.
    done: bool,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("buffered", &self.buf.len())
            .field("fragmented", &self.message.as_ref().map(|m| m.1.len()))
            .finish()
    }
}

impl Decoder {
    /// A decoder holding no storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the socket.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !self.done {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// True while bytes are buffered that [`Self::next`] has not turned into items yet.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Decodes the next complete item from what was fed, refusing any message longer than `limit` bytes as
    /// soon as its header announces it. `Ok(None)`: more bytes are needed.
    pub fn next(&mut self, limit: usize) -> Result<Option<Inbound>, FrameError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some((mut h, len)) = header(&self.buf)? else {
                return Ok(None);
            };
            let control = h.opcode & 0x08 != 0;
            if control && (!h.fin || len > MAX_CONTROL) {
                return Err(FrameError::Protocol);
            }
            let so_far = self.message.as_ref().map_or(0, |m| m.1.len());
            let total = len.saturating_add(so_far as u64);
            if !control && total > limit as u64 {
                return Err(FrameError::TooLarge);
            }
            // Within the limit (or a control frame of at most 125 bytes), so it fits a usize.
            h.len = usize::try_from(len).map_err(|_| FrameError::TooLarge)?;
            let end = h.header_len.saturating_add(h.len);
            if self.buf.len() < end {
                // Reserve once for the whole frame rather than growing by doubling as it trickles in.
                let missing = end - self.buf.len();
                if missing > isize::MAX as usize - self.buf.capacity() {
                    return Err(FrameError::TooLarge);
                }
                self.buf.reserve(missing);
                return Ok(None);
            }
            self.buf.advance(h.header_len);
            let mut payload = self.buf.split_to(h.len);
            unmask(&mut payload, h.mask);
            if let Some(item) = self.frame(h.fin, h.opcode, payload)? {
                return Ok(Some(item));
            }
        }
    }

    /// Handles one complete frame: `Some` when it completes an item.
    fn frame(&mut self, fin: bool, opcode: u8, payload: BytesMut) -> Result<Option<Inbound>, FrameError> {
        match opcode {
            OP_PING => Ok(Some(Inbound::Ping(payload.freeze()))),
            OP_PONG => Ok(Some(Inbound::Pong)),
            OP_CLOSE => {
                // A close payload is empty or a 2-byte code plus a UTF-8 reason; we answer either way.
                if payload.len() == 1 {
                    return Err(FrameError::Protocol);
                }
                self.done = true;
                self.buf = BytesMut::new();
                self.message = None;
                Ok(Some(Inbound::Close))
            }
            OP_TEXT | OP_BINARY if self.message.is_some() => Err(FrameError::Protocol),
            OP_TEXT | OP_BINARY if fin => Self::complete(opcode == OP_TEXT, payload).map(Some),
            OP_TEXT | OP_BINARY => {
                self.message = Some(Box::new((opcode == OP_TEXT, payload)));
                Ok(None)
            }
            OP_CONTINUATION => {
                let Some(mut message) = self.message.take() else {
                    return Err(FrameError::Protocol);
                };
                message.1.put(payload);
                if fin {
                    let (text, message) = *message;
                    Self::complete(text, message).map(Some)
                } else {
                    self.message = Some(message);
                    Ok(None)
                }
            }
            _ => Err(FrameError::Protocol),
        }
    }

    fn complete(text: bool, payload: BytesMut) -> Result<Inbound, FrameError> {
        let payload = payload.freeze();
        if !text {
            return Ok(Inbound::Binary(payload));
        }
        if std::str::from_utf8(&payload).is_err() {
            return Err(FrameError::InvalidUtf8);
        }
        Ok(Inbound::Text(payload))
    }

    /// Gives back the storage of an empty buffer: called before the connection waits for the socket.
    pub fn idle(&mut self) {
        // An empty buffer may still pin a whole read's allocation: after `split_to` took the last frame, its
        // capacity is zero but it shares that allocation with the frame, so "has capacity" is not the test.
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        out
    }

    fn decode_all(bytes: &[u8], limit: usize) -> Result<Vec<Inbound>, FrameError> {
        let mut d = Decoder::new();
        d.feed(bytes);
        let mut out = Vec::new();
        while let Some(item) = d.next(limit)? {
            out.push(item);
        }
        Ok(out)
    }

    #[test]
    fn every_length_encoding_decodes_to_the_sent_text() {
        for n in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let text = "x".repeat(n);
            let got = decode_all(&frame(true, OP_TEXT, text.as_bytes()), 100_000).unwrap();
            assert_eq!(got, [Inbound::Text(Bytes::from(text))], "{n}");
        }
    }

    #[test]
    fn bytes_arriving_one_at_a_time_decode_the_same() {
        let mut wire = frame(true, OP_TEXT, b"hello");
        wire.extend(frame(true, OP_BINARY, b"\x00\x01"));
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in &wire {
            d.feed(std::slice::from_ref(b));
            while let Some(item) = d.next(1024).unwrap() {
                got.push(item);
            }
        }
        assert_eq!(got, [Inbound::Text("hello".into()), Inbound::Binary(vec![0, 1].into())]);
        assert!(!d.has_buffered());
    }

    #[test]
    fn fragments_are_joined_with_control_frames_between_them() {
        let mut wire = frame(false, OP_TEXT, b"he");
        wire.extend(frame(true, OP_PING, b"p"));
        wire.extend(frame(false, OP_CONTINUATION, b"ll"));
        wire.extend(frame(true, OP_CONTINUATION, b"o"));
        let got = decode_all(&wire, 1024).unwrap();
        assert_eq!(got, [Inbound::Ping("p".into()), Inbound::Text("hello".into())]);
    }

    #[test]
    fn an_oversized_header_is_refused_before_its_payload_arrives() {
        let wire = frame(true, OP_TEXT, &[b'a'; 2000]);
        let mut d = Decoder::new();
        d.feed(wire.get(..14).unwrap());
        assert_eq!(d.next(1000), Err(FrameError::TooLarge));
        assert_eq!(FrameError::TooLarge.close_code(), CloseCode::TooLarge);
    }

    #[test]
    fn fragments_adding_up_past_the_limit_are_refused() {
        let mut wire = frame(false, OP_TEXT, &[b'a'; 600]);
        wire.extend(frame(true, OP_CONTINUATION, &[b'a'; 600]));
        assert_eq!(decode_all(&wire, 1000), Err(FrameError::TooLarge));
    }

    #[test]
    fn a_64_bit_length_beyond_usize_is_too_large_not_a_panic() {
        let mut wire = vec![0x81, 0x80 | 127];
        wire.extend_from_slice(&u64::MAX.to_be_bytes());
        wire.extend_from_slice(&[0; 4]);
        assert_eq!(decode_all(&wire, usize::MAX), Err(FrameError::TooLarge));
    }

    #[test]
    fn protocol_violations_close_1002() {
        let unmasked = vec![0x81, 0x01, b'a'];
        let reserved_bit = {
            let mut f = frame(true, OP_TEXT, b"a");
            f[0] |= 0x40;
            f
        };
        let reserved_opcode = frame(true, 0x3, b"a");
        let fragmented_ping = frame(false, OP_PING, b"");
        let long_ping = frame(true, OP_PING, &[0; 126]);
        let stray_continuation = frame(true, OP_CONTINUATION, b"a");
        let mut interleaved = frame(false, OP_TEXT, b"a");
        interleaved.extend(frame(true, OP_TEXT, b"b"));
        let one_byte_close = frame(true, OP_CLOSE, b"\x03");
        for wire in [
            unmasked,
            reserved_bit,
            reserved_opcode,
            fragmented_ping,
            long_ping,
            stray_continuation,
            interleaved,
            one_byte_close,
        ] {
            assert_eq!(decode_all(&wire, 1024), Err(FrameError::Protocol), "{wire:?}");
        }
        assert_eq!(FrameError::Protocol.close_code().code(), 1002);
    }

    #[test]
    fn text_that_is_not_utf8_closes_1007_and_binary_passes() {
        assert_eq!(
            decode_all(&frame(true, OP_TEXT, b"\xff"), 10),
            Err(FrameError::InvalidUtf8)
        );
        assert_eq!(FrameError::InvalidUtf8.close_code().code(), 1007);
        assert_eq!(
            decode_all(&frame(true, OP_BINARY, b"\xff"), 10).unwrap(),
            [Inbound::Binary(vec![0xff].into())]
        );
    }

    #[test]
    fn nothing_is_read_after_a_close_frame() {
        let mut wire = frame(true, OP_CLOSE, b"\x03\xe8bye");
        wire.extend(frame(true, OP_TEXT, b"late"));
        assert_eq!(decode_all(&wire, 1024).unwrap(), [Inbound::Close]);
    }

    #[test]
    fn an_idle_decoder_holds_no_storage() {
        let mut d = Decoder::new();
        d.feed(&frame(true, OP_TEXT, b"hi"));
        let Ok(Some(Inbound::Text(text))) = d.next(10) else {
            panic!("one text frame was fed");
        };
        d.idle();
        assert_eq!(d.buf.capacity(), 0);
        // The frame was the read's last bytes: the emptied buffer must not keep sharing the read's allocation.
        assert!(text.is_unique(), "the idle decoder still pins the read's allocation");
    }
}
