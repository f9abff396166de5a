//! The per-connection outbound side: a bounded queue of frames feeding the connection's writer, plus the switch
//! that closes the connection.
//!
//! Producers (fan-out, the connection's own reader, the server's disconnects) never wait: a full queue means the
//! client is not keeping up, and it is closed 4007 instead of slowing everyone else down.
//!
//! The queue is a `VecDeque` under a `parking_lot` mutex rather than a tokio `mpsc`: a fan-out push is one
//! uncontended lock, a `push_back` and, only when the writer is parked on an empty queue, one wake-up — a writer
//! busy draining is never woken again. The deque starts empty and is released whenever the writer parks on an
//! empty queue, so an idle connection holds no queue storage.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use parking_lot::Mutex;

use crate::protocol::outbound::TextFrame;
use crate::protocol::CloseCode;
use crate::session::{RoomFrame, Sealer};
use crate::telemetry::Telemetry;

/// One item of a connection's outbound queue. Kept small (see the size test): a fan-out writes one of these into
/// every recipient's queue, so its size is most of the fan-out's memory traffic.
pub(crate) enum Outbound {
    /// A serialised application message `{"event":..,"data":..}`, framed once and shared by every recipient of a
    /// fan-out. The outbound transformer sees it.
    Text(TextFrame),
    /// A message to a room whose members include group-capable sessions (wsenc/1 §11): those seal it as a
    /// group record, everyone else treats it as [`Self::Text`].
    Room(RoomFrame),
    /// A protocol frame (`connected`, `error`): never transformed, still sealed on encrypted sessions.
    System(Box<str>),
    /// A pong answering a client's ping, carrying the ping's payload; sent in queue order with everything else.
    Pong(Box<[u8]>),
    /// From here on, seal every frame with this sealer.
    Encrypt(Box<dyn Sealer>),
    /// A WebSocket ping.
    Ping,
    /// Rotate the session's outbound keys (after a credential refresh).
    Rekey,
    /// Send the close frame after everything queued before it.
    Close(CloseCode),
}

impl Outbound {
    /// The length of the message text this item carries, if any.
    pub(crate) fn text_len(&self) -> usize {
        match self {
            Self::Text(frame) => frame.text().len(),
            Self::Room(frame) => frame.text_frame().text().len(),
            Self::System(text) => text.len(),
            _ => 0,
        }
    }
}

/// The queue proper, behind the mailbox's lock.
struct Queue {
    items: VecDeque<Outbound>,
    /// Message bytes in `items` (what the writer has not taken yet).
    bytes: usize,
    /// The writer, when it is parked on an empty queue; taken by the push that wakes it.
    waker: Option<Waker>,
    /// The writer is gone: pushes are dropped.
    closed: bool,
}

/// The two halves of a connection (one task drives both), as waiters on its kill switch.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Task {
    Reader,
    Writer,
}

#[derive(Default)]
struct KillWakers {
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// Why a push was refused.
enum Refused {
    Full,
    Closed,
}

/// The handle through which anything reaches one connection.
pub(crate) struct Mailbox {
    queue: Mutex<Queue>,
    capacity: usize,
    /// Most message bytes queued at once.
    max_bytes: usize,
    /// The kill switch: once set, both halves stop at once.
    killed: AtomicBool,
    /// The halves parked on the kill switch (a `CancellationToken` would be an allocation of its own per
    /// connection, and a larger future in each half).
    kill_wakers: Mutex<KillWakers>,
    close_code: AtomicU16,
    last_activity_ms: AtomicU64,
    clock: Instant,
    telemetry: Arc<Telemetry>,
}

impl Mailbox {
    pub(crate) fn new(
        capacity: usize,
        max_bytes: usize,
        clock: Instant,
        telemetry: Arc<Telemetry>,
    ) -> (Arc<Self>, Receiver) {
        let mb = Arc::new(Self {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                bytes: 0,
                waker: None,
                closed: false,
            }),
            capacity,
            max_bytes,
            killed: AtomicBool::new(false),
            kill_wakers: Mutex::new(KillWakers::default()),
            close_code: AtomicU16::new(0),
            last_activity_ms: AtomicU64::new(0),
            clock,
            telemetry,
        });
        mb.touch();
        let rx = Receiver(mb.clone());
        (mb, rx)
    }

    /// Appends `n` items of `bytes` message bytes with `fill` unless they do not all fit or the queue is closed;
    /// wakes the writer if it is parked. A refused item is dropped after the lock is released.
    fn try_push_with(&self, n: usize, bytes: usize, fill: impl FnOnce(&mut VecDeque<Outbound>)) -> Result<(), Refused> {
        let waker = {
            let mut q = self.queue.lock();
            if q.closed {
                return Err(Refused::Closed);
            }
            let queued = q.bytes.saturating_add(bytes);
            if q.items.len().saturating_add(n) > self.capacity || queued > self.max_bytes {
                return Err(Refused::Full);
            }
            q.bytes = queued;
            fill(&mut q.items);
            q.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    fn try_push(&self, item: Outbound) -> Result<(), Refused> {
        self.try_push_with(1, item.text_len(), |q| q.push_back(item))
    }

    /// Queues a frame. A full queue closes the connection as a slow consumer; a closed one drops the frame.
    pub(crate) fn push(&self, item: Outbound) -> bool {
        let pushed = self.try_push(item);
        self.settle(pushed, 1)
    }

    /// Queues a fan-out's frames in order, under one lock and with at most one wake-up; all or none, as
    /// [`Self::push`].
    pub(crate) fn push_frames(&self, frames: &[TextFrame]) -> bool {
        let bytes = frames.iter().map(|f| f.text().len()).sum();
        let pushed = self.try_push_with(frames.len(), bytes, |q| {
            q.extend(frames.iter().cloned().map(Outbound::Text))
        });
        self.settle(pushed, frames.len())
    }

    /// [`Self::push_frames`] for a room's frames prepared for group records (wsenc/1 §11).
    pub(crate) fn push_room_frames(&self, frames: &[RoomFrame]) -> bool {
        let bytes = frames.iter().map(|f| f.text_frame().text().len()).sum();
        let pushed = self.try_push_with(frames.len(), bytes, |q| {
            q.extend(frames.iter().cloned().map(Outbound::Room))
        });
        self.settle(pushed, frames.len())
    }

    /// Counts and acts on a refused push of `n` items.
    fn settle(&self, pushed: Result<(), Refused>, n: usize) -> bool {
        match pushed {
            Ok(()) => true,
            Err(Refused::Full) => {
                self.telemetry.queue_drops(n as u64);
                if self.kill_with(CloseCode::SlowConsumer) {
                    self.telemetry.slow_consumer_closed();
                }
                false
            }
            Err(Refused::Closed) => {
                self.telemetry.queue_drops(n as u64);
                false
            }
        }
    }

    /// Queues a protocol frame; see [`Self::push`].
    pub(crate) fn push_system(&self, text: String) -> bool {
        self.push(Outbound::System(text.into_boxed_str()))
    }

    /// Closes after the frames already queued have been written (falls back to [`Self::kill_with`] when the
    /// queue is full). Returns false if a close was already under way.
    pub(crate) fn close_after_pending(&self, code: CloseCode) -> bool {
        if !self.claim_close(code) {
            return false;
        }
        if self.try_push(Outbound::Close(code)).is_err() {
            self.trip();
        }
        true
    }

    /// Answers the client's close frame after the frames already queued, without a close code of ours (the
    /// client ended the connection).
    pub(crate) fn answer_close(&self) {
        if self.try_push(Outbound::Close(CloseCode::Normal)).is_err() {
            self.trip();
        }
    }

    /// Closes now, dropping whatever is queued. Returns false if a close was already under way.
    pub(crate) fn kill_with(&self, code: CloseCode) -> bool {
        let claimed = self.claim_close(code);
        self.trip();
        claimed
    }

    fn claim_close(&self, code: CloseCode) -> bool {
        self.close_code
            .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Ends the connection without a close code of ours (the peer went away, or the writer stopped).
    pub(crate) fn finish(&self) {
        self.trip();
    }

    /// Sets the kill switch and wakes whichever half waits on it.
    fn trip(&self) {
        // Set before taking the wakers: a task that registers after this sees the switch under the lock.
        self.killed.store(true, Ordering::Release);
        let KillWakers { reader, writer } = std::mem::take(&mut *self.kill_wakers.lock());
        for waker in [reader, writer].into_iter().flatten() {
            waker.wake();
        }
    }

    /// The close code chosen by the server, if any.
    pub(crate) fn close_code(&self) -> Option<CloseCode> {
        CloseCode::from_code(self.close_code.load(Ordering::Acquire))
    }

    /// Resolves once the connection must stop at once. `task` says which of the connection's two halves waits.
    pub(crate) fn killed(&self, task: Task) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_killed(task, cx))
    }

    fn poll_killed(&self, task: Task, cx: &mut Context<'_>) -> Poll<()> {
        if self.killed.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let mut wakers = self.kill_wakers.lock();
        // Checked again under the lock: `trip` sets the switch before it takes the wakers.
        if self.killed.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let slot = match task {
            Task::Reader => &mut wakers.reader,
            Task::Writer => &mut wakers.writer,
        };
        match slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Records inbound activity (a valid message).
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last recorded activity.
    pub(crate) fn idle_for(&self) -> std::time::Duration {
        let last = std::time::Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        self.clock.elapsed().saturating_sub(last)
    }
}

/// The writer's end of a [`Mailbox`]. Dropping it closes the queue: later pushes are refused and whatever is
/// still queued is freed.
pub(crate) struct Receiver(Arc<Mailbox>);

impl Receiver {
    /// Takes everything queued, oldest first, waiting while the queue is empty. `out` must be empty: the two
    /// buffers are swapped, so the queue goes on with `out`'s storage and nothing is copied or allocated.
    pub(crate) async fn recv_all(&mut self, out: &mut VecDeque<Outbound>) {
        std::future::poll_fn(|cx| self.poll_recv_all(cx, out)).await
    }

    fn poll_recv_all(&self, cx: &mut Context<'_>, out: &mut VecDeque<Outbound>) -> Poll<()> {
        let mut q = self.0.queue.lock();
        if q.items.is_empty() {
            if q.items.capacity() > 0 {
                // Most connections are idle most of the time: hand back what a burst grew.
                q.items = VecDeque::new();
            }
            // Park: the next push takes this waker, so a burst wakes the writer once.
            match &q.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => q.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        if out.is_empty() {
            std::mem::swap(&mut q.items, out);
        } else {
            out.append(&mut q.items);
        }
        q.bytes = 0;
        Poll::Ready(())
    }

    /// True if nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.queue.lock().items.is_empty()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let items = {
            let mut q = self.0.queue.lock();
            q.closed = true;
            q.waker = None;
            std::mem::take(&mut q.items)
        };
        // Dropped outside the lock: sealers and shared buffers may take a while to free.
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox() -> Arc<Mailbox> {
        Mailbox::new(4, 1000, Instant::now(), Arc::new(Telemetry::new())).0
    }

    #[tokio::test]
    async fn the_kill_switch_wakes_both_waiting_tasks_and_stays_set() {
        let mb = mailbox();
        let waiting = |task| {
            let mb = mb.clone();
            tokio::spawn(async move { mb.killed(task).await })
        };
        let (reader, writer) = (waiting(Task::Reader), waiting(Task::Writer));
        tokio::task::yield_now().await;
        assert!(!reader.is_finished() && !writer.is_finished());
        assert!(mb.kill_with(CloseCode::SlowConsumer));
        let within = std::time::Duration::from_secs(5);
        tokio::time::timeout(within, reader).await.unwrap().unwrap();
        tokio::time::timeout(within, writer).await.unwrap().unwrap();
        tokio::time::timeout(within, mb.killed(Task::Reader)).await.unwrap();
        assert!(!mb.kill_with(CloseCode::InternalError), "the first close code stays");
        assert_eq!(mb.close_code(), Some(CloseCode::SlowConsumer));
    }

    #[tokio::test]
    async fn queued_bytes_past_the_bound_close_4007_and_taking_the_queue_frees_them() {
        let (mb, mut rx) = Mailbox::new(4, 1000, Instant::now(), Arc::new(Telemetry::new()));
        let text = |n: usize| TextFrame::new(&"x".repeat(n));
        assert!(mb.push_frames(&[text(600)]));
        let mut batch = VecDeque::new();
        rx.recv_all(&mut batch).await;
        assert_eq!(batch.len(), 1);
        assert!(mb.push_frames(&[text(600)]), "the writer took the first 600 bytes");
        assert!(
            !mb.push_frames(&[text(401)]),
            "1,001 bytes queued is over the bound of 1,000"
        );
        assert_eq!(mb.close_code(), Some(CloseCode::SlowConsumer));
    }

    #[test]
    fn the_queue_length_bound_closes_4007_too() {
        let (mb, _rx) = Mailbox::new(4, 1000, Instant::now(), Arc::new(Telemetry::new()));
        for _ in 0..4 {
            assert!(mb.push(Outbound::Ping));
        }
        assert!(!mb.push(Outbound::Ping));
        assert_eq!(mb.close_code(), Some(CloseCode::SlowConsumer));
    }

    #[test]
    fn a_queue_slot_is_at_most_three_words() {
        assert!(std::mem::size_of::<Outbound>() <= 3 * std::mem::size_of::<usize>());
    }
}
