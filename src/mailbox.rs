//! The per-connection outbound side: a bounded queue of frames feeding the connection's writer task, plus the
//! switch that closes the connection.
//!
//! Producers (fan-out, the connection's own reader, the heartbeat sweep) never wait: a full queue means the
//! client is not keeping up, and it is closed 4007 instead of slowing everyone else down.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::CloseCode;
use crate::session::Sealer;
use crate::stats::Stats;

/// One item of a connection's outbound queue.
pub(crate) enum Outbound {
    /// A serialised application message `{"event":..,"data":..}`, shared by every recipient of a fan-out. The
    /// outbound transformer sees it.
    Text(Utf8Bytes),
    /// A protocol frame (`connected`, `error`): never transformed, still sealed on encrypted sessions.
    System(Utf8Bytes),
    /// From here on, seal every frame with this sealer.
    Encrypt(Box<dyn Sealer>),
    /// A WebSocket ping.
    Ping,
    /// Rotate the session's outbound keys (after a credential refresh).
    Rekey,
    /// Send the close frame after everything queued before it.
    Close(CloseCode),
}

/// The handle through which anything reaches one connection.
pub(crate) struct Mailbox {
    tx: mpsc::Sender<Outbound>,
    kill: CancellationToken,
    close_code: AtomicU16,
    last_activity_ms: AtomicU64,
    clock: Instant,
    stats: Arc<Stats>,
    drops: metrics::Counter,
}

impl Mailbox {
    pub(crate) fn new(
        capacity: usize,
        clock: Instant,
        stats: Arc<Stats>,
        drops: metrics::Counter,
    ) -> (Arc<Self>, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity);
        let mb = Arc::new(Self {
            tx,
            kill: CancellationToken::new(),
            close_code: AtomicU16::new(0),
            last_activity_ms: AtomicU64::new(0),
            clock,
            stats,
            drops,
        });
        mb.touch();
        (mb, rx)
    }

    /// Queues a frame. A full queue closes the connection as a slow consumer; a closed one drops the frame.
    pub(crate) fn push(&self, item: Outbound) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.drops.increment(1);
                if self.kill_with(CloseCode::SlowConsumer) {
                    self.stats.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.drops.increment(1);
                false
            }
        }
    }

    /// Queues a protocol frame; see [`Self::push`].
    pub(crate) fn push_system(&self, text: String) -> bool {
        self.push(Outbound::System(text.into()))
    }

    /// Closes after the frames already queued have been written (falls back to [`Self::kill_with`] when the
    /// queue is full). Returns false if a close was already under way.
    pub(crate) fn close_after_pending(&self, code: CloseCode) -> bool {
        if !self.claim_close(code) {
            return false;
        }
        if self.tx.try_send(Outbound::Close(code)).is_err() {
            self.kill.cancel();
        }
        true
    }

    /// Closes now, dropping whatever is queued. Returns false if a close was already under way.
    pub(crate) fn kill_with(&self, code: CloseCode) -> bool {
        let claimed = self.claim_close(code);
        self.kill.cancel();
        claimed
    }

    fn claim_close(&self, code: CloseCode) -> bool {
        self.close_code
            .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Ends the connection without a close code of ours (the peer went away, or the writer stopped).
    pub(crate) fn finish(&self) {
        self.kill.cancel();
    }

    /// The close code chosen by the server, if any.
    pub(crate) fn close_code(&self) -> Option<CloseCode> {
        CloseCode::from_code(self.close_code.load(Ordering::Acquire))
    }

    /// Resolves once the connection must stop at once.
    pub(crate) fn killed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.kill.cancelled()
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
