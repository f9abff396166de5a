//! A minimal WebSocket client over a raw `TcpStream`: just enough for a load generator. Frames are parsed
//! straight from the read buffer (no per-frame allocation, no JSON), client frames are masked with a fixed key.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const READ_CHUNK: usize = 64 * 1024;

pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Appends one masked client frame.
pub fn encode(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
}

/// A parsed server frame header: opcode, header length, payload length.
#[derive(Clone, Copy)]
pub struct Header {
    pub opcode: u8,
    pub head: usize,
    pub len: usize,
}

/// Parses a server (unmasked) frame header at the start of `buf`, if complete.
pub fn header(buf: &[u8]) -> Option<Header> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut head) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if masked {
        head += 4;
    }
    Some(Header { opcode, head, len })
}

/// One connection: the socket and the unparsed bytes read so far.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    /// Parse position in `buf`.
    pub pos: usize,
    out: Vec<u8>,
}

/// Connects from `127.0.0.{src}` (spreads the ephemeral port space) and performs the upgrade.
pub async fn connect(addr: SocketAddr, src: Option<u8>, host: &str, path: &str) -> io::Result<Conn> {
    let socket = TcpSocket::new_v4()?;
    if let Some(x) = src {
        socket.bind(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, x), 0)))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(4096),
        pos: 0,
        out: Vec::with_capacity(512),
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    conn.stream.write_all(req.as_bytes()).await?;
    loop {
        if let Some(end) = memchr::memmem::find(&conn.buf, b"\r\n\r\n") {
            if !conn.buf.starts_with(b"HTTP/1.1 101") {
                let line = String::from_utf8_lossy(&conn.buf[..end.min(80)]).into_owned();
                return Err(io::Error::other(format!("upgrade refused: {line}")));
            }
            conn.pos = end + 4;
            return Ok(conn);
        }
        if conn.fill().await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof during upgrade"));
        }
    }
}

impl Conn {
    /// Reads more bytes, compacting the buffer first. Returns 0 on EOF.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        if self.buf.capacity() - len < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    /// Sends one text frame.
    pub async fn send_text(&mut self, text: &[u8]) -> io::Result<()> {
        self.out.clear();
        encode(OP_TEXT, text, &mut self.out);
        self.stream.write_all(&self.out).await
    }

    /// Sends pre-encoded frames.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next complete frame already in the buffer: (opcode, payload range). Answers nothing by itself.
    pub fn next_frame(&mut self) -> Option<(u8, std::ops::Range<usize>)> {
        let rest = &self.buf[self.pos..];
        let h = header(rest)?;
        if rest.len() < h.head + h.len {
            return None;
        }
        let start = self.pos + h.head;
        self.pos += h.head + h.len;
        Some((h.opcode, start..start + h.len))
    }

    /// Waits for the next text frame and returns a copy of it, answering pings; errors on close/EOF.
    pub async fn recv_text(&mut self) -> io::Result<Vec<u8>> {
        loop {
            while let Some((op, range)) = self.next_frame() {
                match op {
                    OP_TEXT | OP_BINARY => return Ok(self.buf[range].to_vec()),
                    OP_PING => {
                        let payload = self.buf[range].to_vec();
                        self.pong(&payload).await?;
                    }
                    OP_CLOSE => {
                        let code = self
                            .buf
                            .get(range.clone())
                            .filter(|p| p.len() >= 2)
                            .map(|p| u16::from_be_bytes([p[0], p[1]]));
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            format!("closed {code:?}"),
                        ));
                    }
                    _ => {}
                }
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof"));
            }
        }
    }

    /// Leaves the way a browser tab does: a Close frame (1000), then the server's Close or end of stream
    /// (bounded by `limit`), then the TCP close when `self` drops.
    pub async fn close(&mut self, limit: std::time::Duration) -> io::Result<()> {
        self.out.clear();
        encode(OP_CLOSE, &1000u16.to_be_bytes(), &mut self.out);
        self.stream.write_all(&self.out).await?;
        let answered = async {
            loop {
                match self.recv_text().await {
                    Ok(_) => continue,
                    Err(e)
                        if e.kind() == io::ErrorKind::ConnectionAborted || e.kind() == io::ErrorKind::UnexpectedEof =>
                    {
                        return Ok(())
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        tokio::time::timeout(limit, answered)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no close answer"))?
    }

    pub async fn pong(&mut self, payload: &[u8]) -> io::Result<()> {
        self.out.clear();
        encode(OP_PONG, payload, &mut self.out);
        self.stream.write_all(&self.out).await
    }
}
