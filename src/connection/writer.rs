//! The connection's outbound half: drains the [`Mailbox`] queue into the socket.
//!
//! Everything bound for the client — fan-out, replies, pongs, the close frame — goes through the queue, so the
//! client sees it in exactly the order it was queued, and encrypted sessions get every frame after `connected`
//! sealed here, in order, by the one place that owns the outbound sequence numbers. Frames are pre-framed bytes:
//! a fan-out's frame is encoded once and shared by every plaintext recipient, and a drained batch goes out with
//! vectored writes, without copying it into a write buffer first.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::SemaphorePermit;

use super::{Io, CLOSE_GRACE};
use crate::hooks::{invoke, Outgoing, Transformed};
use crate::mailbox::{Outbound, Receiver, Task};
use crate::protocol::outbound::{put_frame, TextFrame, OP_CLOSE, OP_PONG, OP_TEXT, PING_FRAME};
use crate::protocol::{event, outbound, CloseCode, Message as AppMessage};
use crate::registry::Entry;
use crate::session::{Frames, RoomFrame, RoomMessage, Sealer, SharedTail};
use crate::shared::Shared;
use crate::telemetry::HookKind;

/// Most buffers handed to one vectored write (Linux accepts 1,024). A writer takes everything queued at once
/// (at most the queue's capacity), so a fan-out burst usually leaves in one or two calls.
const MAX_IOV: usize = 256;

pub(super) type WriteIo = WriteHalf<Io>;

enum WriteEnd {
    /// Send this close frame.
    Close(CloseCode),
    /// The socket failed; nothing more can be sent.
    Broken,
}

/// Drains the mailbox into the socket until a close, a kill, or a socket error. An `async move` block, not an
/// `async fn`: the latter would keep the socket and the receiver twice in every connection's task.
#[allow(clippy::manual_async_fn, reason = "an async fn would store its arguments twice")]
pub(super) fn write_loop<'a>(
    mut io: WriteIo,
    mut rx: Receiver,
    entry: &'a Entry,
    shared: &'a Shared,
) -> impl Future<Output = ()> + 'a {
    async move {
        let mut writer = Writer {
            sealer: None,
            buf: BytesMut::new(),
            chunks: VecDeque::new(),
            entry,
            shared,
        };
        let end = tokio::select! {
            biased;
            _ = entry.mailbox.killed(Task::Writer) => entry.mailbox.close_code().map_or(WriteEnd::Broken, WriteEnd::Close),
            end = writer.pump(&mut io, &mut rx) => end,
        };
        // Refuse further pushes and free what is queued while the close frame goes out.
        drop(rx);
        if let WriteEnd::Close(code) = end {
            // A kill may have cut a write short: what is left of that batch goes first, so that the close frame never
            // lands inside a partly written frame. Boxed: a timer and a write future would otherwise enlarge every
            // idle writer's task.
            let rest = std::mem::take(&mut writer.chunks);
            let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, send_close(&mut io, rest, code))).await;
        }
        // The writer is gone: the reader must stop too.
        entry.mailbox.finish();
    }
}

/// Sends the close frame for `code` on a connection that never got going.
pub(super) async fn refuse(io: &mut WriteIo, code: CloseCode) {
    let _ = send_close(io, VecDeque::new(), code).await;
}

/// Writes `chunks`, then the close frame for `code`, then shuts the sending direction down.
async fn send_close(io: &mut WriteIo, mut chunks: VecDeque<Chunk>, code: CloseCode) -> std::io::Result<()> {
    let reason = code.reason().as_bytes();
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.code().to_be_bytes());
    payload.extend_from_slice(reason);
    let mut frame = BytesMut::new();
    put_frame(&mut frame, OP_CLOSE, &payload);
    chunks.push_back(Chunk::Own(frame.freeze()));
    write_all(io, &mut chunks).await?;
    io.shutdown().await
}

/// Writes every chunk, oldest first, with vectored writes of up to [`MAX_IOV`] buffers, then flushes (a TLS
/// stream may buffer). A partial write advances the first unwritten chunk in place; nothing is copied. Written
/// chunks leave the queue as they go, so a cancelled call leaves exactly the unwritten bytes behind.
async fn write_all(io: &mut WriteIo, chunks: &mut VecDeque<Chunk>) -> std::io::Result<()> {
    // The slices live on the stack of each poll, never in the future: every writer task stays small.
    std::future::poll_fn(|cx| poll_write_all(Pin::new(&mut *io), cx, chunks)).await?;
    io.flush().await
}

fn poll_write_all(
    mut io: Pin<&mut WriteIo>,
    cx: &mut Context<'_>,
    chunks: &mut VecDeque<Chunk>,
) -> Poll<std::io::Result<()>> {
    while !chunks.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        for (slot, chunk) in slices.iter_mut().zip(chunks.iter()) {
            *slot = IoSlice::new(chunk.bytes());
            n += 1;
        }
        let written = ready!(io.as_mut().poll_write_vectored(cx, slices.get(..n).unwrap_or_default()))?;
        if written == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        consume(chunks, written);
    }
    Poll::Ready(Ok(()))
}

/// Drops the first `n` bytes of `chunks`.
fn consume(chunks: &mut VecDeque<Chunk>, mut n: usize) {
    while n > 0 {
        let Some(front) = chunks.front_mut() else {
            return;
        };
        let len = front.bytes().len();
        if n < len {
            front.advance(n);
            return;
        }
        n -= len;
        chunks.pop_front();
    }
}

/// An outbound message's text before sealing: shared with the other recipients, or this connection's own.
enum Payload {
    Shared(TextFrame),
    /// A room message: a group record for sessions that take them (wsenc/1 §11), else as `Shared`.
    Room(RoomFrame),
    Own(Box<str>),
}

/// A piece of the byte stream waiting to be written: a fan-out's frame, shared with the other recipients, or
/// bytes of this connection's own.
enum Chunk {
    Shared(TextFrame),
    Own(Bytes),
    /// A room message's sealed body as an element of a batched group record (wsenc/1 §11.4): `true` for the
    /// first of its record.
    Element(RoomFrame, bool),
    /// A room message's sealed body as a part of a binary batched group record (wsenc/1 §11.5).
    Part(RoomFrame),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Shared(frame) => frame.wire(),
            Self::Own(bytes) => bytes,
            Self::Element(frame, first) => frame.element(*first),
            Self::Part(frame) => frame.part(),
        }
    }

    /// Drops the first `n` bytes (fewer than the chunk holds): only after a partial write, so the copy a shared
    /// frame needs here is rare.
    fn advance(&mut self, n: usize) {
        match self {
            Self::Shared(_) | Self::Element(..) | Self::Part(_) => {
                *self = Self::Own(Bytes::copy_from_slice(self.bytes().get(n..).unwrap_or_default()));
            }
            Self::Own(bytes) => bytes.advance(n),
        }
    }
}

/// What a sealing call appended besides the bytes in the buffer.
struct Sealed {
    count: u64,
    groups: (u64, u64),
    tails: Vec<(usize, SharedTail)>,
}

impl From<Frames<'_>> for Sealed {
    fn from(mut frames: Frames<'_>) -> Self {
        Self {
            count: frames.count(),
            groups: frames.group_records(),
            tails: frames.take_tails(),
        }
    }
}

/// Most message text (bytes of JSON) one batched group record (wsenc/1 §11.4) carries: its frame stays near
/// 64 KiB, far below any client's frame limit. A longer message is sealed on its own.
const MAX_BATCH_TEXT: usize = 48 * 1024;

/// Bytes a sealed record adds to its text besides the base64 growth (wsenc/1: the envelope, the nonce and the
/// frame header come to about 90); used only to size the write buffer up front.
const SEALED_OVERHEAD: usize = 96;

struct Writer<'a> {
    sealer: Option<Box<dyn Sealer>>,
    /// Where frames of this connection's own are built (sealed records, protocol frames). Consecutive ones are
    /// split off as one chunk, and the buffer's storage is reused once the chunks written from it are freed.
    buf: BytesMut,
    /// Complete frames, or what is left of them, waiting to be written.
    chunks: VecDeque<Chunk>,
    entry: &'a Entry,
    shared: &'a Shared,
}

/// Where [`Writer::encode_ready`] stopped.
enum Encoded {
    /// The batch is done; a close, if it held one.
    Done(Option<WriteEnd>),
    /// The item at the front of the batch needs something awaited: the outbound transformer, or a sealing permit
    /// while all are taken.
    Blocked,
}

impl<'a> Writer<'a> {
    /// Drains the queue in batches: everything a batch needs sealed is sealed under one permit, then the
    /// batch's frames are written with vectored writes.
    async fn pump(&mut self, io: &mut WriteIo, rx: &mut Receiver) -> WriteEnd {
        let mut batch = VecDeque::new();
        loop {
            rx.recv_all(&mut batch).await;
            // The permit taken here is released at the end of this statement, before any wait or write.
            let ready = self.encode_ready(&mut batch, &mut None);
            let end = match ready {
                Encoded::Done(end) => end,
                // Rare, and boxed: the waiting path's state would otherwise sit in every idle writer's task.
                Encoded::Blocked => Box::pin(self.encode_waiting(&mut batch)).await,
            };
            if write_all(io, &mut self.chunks).await.is_err() {
                return WriteEnd::Broken;
            }
            if let Some(end) = end {
                return end;
            }
            if rx.is_empty() {
                // Idle: hand the batch buffers and whatever the sealer can rebuild back; most connections are idle
                // most of the time. Under load the queue is rarely empty here, so this costs one rebuild per
                // burst, not per message.
                batch = VecDeque::new();
                self.chunks = VecDeque::new();
                self.buf = BytesMut::new();
                if let Some(sealer) = self.sealer.as_mut() {
                    sealer.idle();
                }
            }
        }
    }

    /// Turns queued items into chunks, in order, up to a close (returned; later items are dropped), as long as
    /// nothing needs waiting for. Sealing happens under `permit`, taken at most once per batch (here by
    /// `try_acquire`) and released before anything is written to the socket.
    fn encode_ready(&mut self, batch: &mut VecDeque<Outbound>, permit: &mut Option<SemaphorePermit<'a>>) -> Encoded {
        if self.sealer.is_some() && permit.is_none() {
            // A sealed record is about 4/3 of its text plus an envelope: one reservation for the batch instead of a
            // chain of reallocations (each copying what was sealed so far) after every idle spell.
            let text: usize = batch.iter().map(Outbound::text_len).sum();
            self.buf.reserve(text + text / 2 + batch.len() * SEALED_OVERHEAD);
        }
        while let Some(item) = batch.pop_front() {
            let transform = matches!(item, Outbound::Text(_) | Outbound::Room(_))
                && self.shared.hooks.outbound_transformer.is_some();
            let seal =
                matches!(item, Outbound::Text(_) | Outbound::Room(_) | Outbound::System(_)) && self.sealer.is_some();
            if seal && permit.is_none() {
                // Bounds sealing work in flight across connections; never held across a socket write.
                *permit = self.shared.seal_permits.try_acquire().ok();
            }
            if transform || (seal && permit.is_none()) {
                batch.push_front(item);
                return Encoded::Blocked;
            }
            let payload = match item {
                Outbound::Text(frame) => Payload::Shared(frame),
                Outbound::Room(frame) => {
                    // Consecutive room messages go to a sealer that takes batches together (never with an outbound
                    // transformer: those items are handled one by one in `encode_waiting`).
                    let limit = self.sealer.as_ref().map_or(0, |s| s.room_batch_limit());
                    if limit > 1 && matches!(batch.front(), Some(Outbound::Room(_))) {
                        let run = take_run(frame, batch, limit);
                        if let Err(code) = self.put_rooms(run) {
                            return Encoded::Done(Some(WriteEnd::Close(code)));
                        }
                        continue;
                    }
                    Payload::Room(frame)
                }
                Outbound::System(text) => Payload::Own(text),
                Outbound::Pong(payload) => {
                    put_frame(&mut self.buf, OP_PONG, &payload);
                    continue;
                }
                Outbound::Encrypt(sealer) => {
                    self.sealer = Some(sealer);
                    continue;
                }
                Outbound::Ping => {
                    self.push_chunk(Chunk::Own(Bytes::from_static(PING_FRAME)));
                    continue;
                }
                Outbound::Rekey => {
                    if let Some(sealer) = self.sealer.as_mut() {
                        let mark = self.buf.len();
                        let mut frames = Frames::new(&mut self.buf);
                        if let Err(code) = sealer.rekey(&mut frames) {
                            self.buf.truncate(mark);
                            self.flush_own();
                            return Encoded::Done(Some(WriteEnd::Close(code)));
                        }
                        self.shared.telemetry.records_out(frames.count());
                    }
                    continue;
                }
                Outbound::Close(code) => {
                    self.flush_own();
                    return Encoded::Done(Some(WriteEnd::Close(code)));
                }
            };
            if let Err(code) = self.put_payload(payload) {
                return Encoded::Done(Some(WriteEnd::Close(code)));
            }
        }
        self.flush_own();
        Encoded::Done(None)
    }

    /// [`Self::encode_ready`] for a batch that needs waiting: runs the outbound transformer on each message
    /// (a hook may be slow: never with the permit held) and waits for a sealing permit when all are taken.
    async fn encode_waiting(&mut self, batch: &mut VecDeque<Outbound>) -> Option<WriteEnd> {
        // The permit borrows the semaphore, not `self`.
        let shared = self.shared;
        let mut permit = None;
        loop {
            if let Encoded::Done(end) = self.encode_ready(batch, &mut permit) {
                return end;
            }
            let item = batch.pop_front()?;
            match item {
                Outbound::Text(_) | Outbound::Room(_) if shared.hooks.outbound_transformer.is_some() => {
                    permit = None;
                    let (text, unchanged) = match item {
                        Outbound::Room(frame) => (frame.text_frame().clone(), Payload::Room(frame)),
                        Outbound::Text(frame) => (frame.clone(), Payload::Shared(frame)),
                        _ => continue,
                    };
                    let payload = match transform(shared, self.entry, text.text()).await {
                        Some(None) => unchanged,
                        Some(Some(text)) => Payload::Own(text.into_boxed_str()),
                        None => continue,
                    };
                    if self.sealer.is_some() {
                        permit = shared.seal_permits.acquire().await.ok();
                    }
                    if let Err(code) = self.put_payload(payload) {
                        return Some(WriteEnd::Close(code));
                    }
                }
                item => {
                    batch.push_front(item);
                    // Only a closed semaphore fails, and the server never closes it.
                    let Ok(p) = shared.seal_permits.acquire().await else {
                        return Some(WriteEnd::Close(CloseCode::InternalError));
                    };
                    permit = Some(p);
                }
            }
        }
    }

    /// Frames one message: as it is (plaintext), or sealed into records. Fails with the close code when the
    /// session's keys are spent; nothing of the failed message is sent, the frames before it are.
    fn put_payload(&mut self, payload: Payload) -> Result<(), CloseCode> {
        let Some(sealer) = self.sealer.as_mut() else {
            match payload {
                // The common case: the fan-out's frame as it is, no copy.
                Payload::Shared(frame) => self.push_chunk(Chunk::Shared(frame)),
                Payload::Room(frame) => self.push_chunk(Chunk::Shared(frame.text_frame().clone())),
                Payload::Own(text) => put_frame(&mut self.buf, OP_TEXT, text.as_bytes()),
            }
            return Ok(());
        };
        let mark = self.buf.len();
        let mut frames = Frames::new(&mut self.buf);
        let sealed = match &payload {
            Payload::Shared(frame) => sealer.seal(frame.text(), &mut frames),
            Payload::Room(frame) => sealer.seal_room(&RoomMessage::new(frame), &mut frames),
            Payload::Own(text) => sealer.seal(text, &mut frames),
        };
        let done = Sealed::from(frames);
        self.sealed(mark, sealed, done, Vec::new())
    }

    /// Frames a run of consecutive room messages (at least two) through [`Sealer::seal_rooms`]: wsenc/1 sends
    /// them as one batched group record.
    fn put_rooms(&mut self, run: Vec<RoomFrame>) -> Result<(), CloseCode> {
        let Some(sealer) = self.sealer.as_mut() else {
            for frame in run {
                self.push_chunk(Chunk::Shared(frame.text_frame().clone()));
            }
            return Ok(());
        };
        let mark = self.buf.len();
        let messages: Vec<RoomMessage<'_>> = run.iter().map(RoomMessage::new).collect();
        let mut frames = Frames::new(&mut self.buf);
        let sealed = sealer.seal_rooms(&messages, &mut frames);
        let done = Sealed::from(frames);
        drop(messages);
        self.sealed(mark, sealed, done, run)
    }

    /// What a sealing call left in the buffer from `mark` on: on failure it is dropped (the frames before it are
    /// sent); otherwise its records are counted and its shared tails are queued in their places.
    /// `run`: the room frames whose bodies the tails may name.
    fn sealed(
        &mut self,
        mark: usize,
        sealed: Result<(), CloseCode>,
        done: Sealed,
        run: Vec<RoomFrame>,
    ) -> Result<(), CloseCode> {
        if let Err(code) = sealed {
            self.buf.truncate(mark);
            self.flush_own();
            return Err(code);
        }
        self.shared.telemetry.records_out(done.count);
        let (single, batched) = done.groups;
        self.shared.telemetry.group_records(single, batched);
        let tails = done.tails;
        // A group record's shared body follows its header in the byte stream without being copied: the buffer
        // up to each body's place goes first, then the body.
        // A batch's bodies follow each other with nothing in between: no empty buffer between them.
        let mut sent = 0;
        self.chunks.reserve(tails.len() + 1);
        // Element indexes ascend: each room frame moves into its chunk (no reference count touched).
        let mut run = run.into_iter().enumerate();
        for (at, tail) in tails {
            if at > sent {
                let own = self.buf.split_to(at - sent);
                sent = at;
                self.chunks.push_back(Chunk::Own(own.freeze()));
            }
            match tail {
                SharedTail::Bytes(bytes) => self.chunks.push_back(Chunk::Own(bytes)),
                SharedTail::Element { index, first } => {
                    if let Some((_, frame)) = run.find(|(i, _)| *i == index) {
                        self.chunks.push_back(Chunk::Element(frame, first));
                    }
                }
                SharedTail::Part { index } => {
                    if let Some((_, frame)) = run.find(|(i, _)| *i == index) {
                        self.chunks.push_back(Chunk::Part(frame));
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues `chunk` behind the frames built so far.
    fn push_chunk(&mut self, chunk: Chunk) {
        self.flush_own();
        self.chunks.push_back(chunk);
    }

    /// Moves the frames built in the buffer so far into the queue as one chunk: a run of sealed records is one
    /// buffer for the vectored write, however many records it holds.
    fn flush_own(&mut self) {
        if !self.buf.is_empty() {
            self.chunks.push_back(Chunk::Own(self.buf.split().freeze()));
        }
    }
}

/// `first` and the room messages right behind it in `batch`, up to `limit` of them and [`MAX_BATCH_TEXT`] bytes
/// of text (`first` is always taken).
fn take_run(first: RoomFrame, batch: &mut VecDeque<Outbound>, limit: usize) -> Vec<RoomFrame> {
    let mut text = first.text_frame().text().len();
    let mut run = vec![first];
    while run.len() < limit {
        let Some(Outbound::Room(next)) = batch.front() else {
            break;
        };
        text = text.saturating_add(next.text_frame().text().len());
        if text > MAX_BATCH_TEXT {
            break;
        }
        if let Some(Outbound::Room(next)) = batch.pop_front() {
            run.push(next);
        }
    }
    run
}

/// Runs the outbound transformer, if any: `None` drops the message for this recipient, `Some(None)` sends it
/// unchanged, `Some(Some(text))` sends `text` instead. The call waits for a transformer slot (calls in flight are
/// bounded across connections) and is cut off after the configured timeout, which drops the message.
async fn transform(shared: &Shared, entry: &Entry, text: &str) -> Option<Option<String>> {
    let Some(hook) = &shared.hooks.outbound_transformer else {
        return Some(None);
    };
    let msg = AppMessage::parse(text)?;
    let req = Outgoing {
        client: entry.info(),
        event: msg.event,
        data: msg.data,
    };
    // Only a closed semaphore fails, and the server never closes it.
    let _slot = shared.transform_permits.acquire().await.ok()?;
    let called = tokio::time::timeout(shared.hooks.transformer_timeout, invoke(hook.as_ref(), req)).await;
    match called {
        Ok(Ok(Transformed::Unchanged)) => Some(None),
        Ok(Ok(Transformed::Replace { event: name, data })) if event::is_valid_application_event(&name) => {
            let raw = serde_json::value::to_raw_value(&data).ok()?;
            Some(Some(outbound::message(&name, Some(&raw))))
        }
        Ok(Ok(Transformed::Replace { .. } | Transformed::Drop)) => None,
        Ok(Err(e)) => {
            shared.telemetry.hook_failed(HookKind::OutboundTransformer);
            tracing::warn!(client = %entry.id_str, error = %e, "outbound transformer failed; message dropped");
            None
        }
        Err(_) => {
            shared.telemetry.hook_failed(HookKind::OutboundTransformer);
            tracing::warn!(
                client = %entry.id_str,
                timeout_ms = shared.hooks.transformer_timeout.as_millis(),
                "outbound transformer timed out; message dropped"
            );
            None
        }
    }
}
