//! The Redis bus: several sealcast instances (and emitters) exchange envelopes through one Redis server or a
//! Redis Cluster, wire-compatible with the reference framework (`ws:*` channels, the same JSON envelope).
//!
//! Each [`RedisBus`] owns two connections (a third for history reads): a publisher and a subscriber, driven by
//! background tasks so [`Bus::publish`] and [`Bus::interest`] never wait on the network.
//!
//! * **Subscriptions.** By default ([`Subscriptions::Interest`]) an instance subscribes only to `ws:broadcast` and
//!   to the channels of the clients, users and rooms it has local members for (subscribe on the first local
//!   member, unsubscribe after the last), so a message reaches only the instances that need it. With
//!   [`Subscriptions::Patterns`] (classic mode only) it pattern-subscribes to everything like the reference.
//!   Interest changes are recorded synchronously in a per-channel reference count and a *dirty set* of channels,
//!   then applied by the subscriber task; the dirty set is bounded by the number of distinct channels touched
//!   (itself bounded by the interest set), and churn on one channel coalesces into one entry.
//!   Connection events (a disconnect, or Redis unsubscribing us from a sharded channel whose slot moved) reach the
//!   subscriber task through an unbounded channel: at most one disconnect per connection plus one entry per
//!   subscribed channel, so it is bounded by the interest set too.
//! * **Faults.** The subscriber pings every second; on a disconnect, a failed ping or a failed (un)subscribe it
//!   reports not ready, reconnects with exponential backoff (50 ms to 1 s) and resubscribes **everything** it
//!   wants before reporting ready again. A sharded channel that Redis unsubscribes us from (slot migration) is
//!   resubscribed through the cluster connection, which follows `MOVED`.
//! * **Publishing** goes through a bounded queue ([`RedisBusBuilder::publish_queue`], default 4096). When it is
//!   full, or Redis is unreachable, envelopes are dropped and counted ([`RedisBusStats::publish_dropped`]):
//!   delivery across instances is at-most-once, ordered per publisher.
//! * **Inbound** messages are verified (with a [`RedisBusBuilder::secret`]), parsed strictly, checked against
//!   the channel they arrived on, and handed straight to the local clients' bounded queues from the connection's
//!   reader. Anything refused is dropped and counted, never delivered.

mod conn;
pub(crate) mod history;
pub(crate) mod presence;
pub(crate) mod replay;
mod sign;

pub use conn::{BusMode, RedisEndpoint};
pub use sign::SIG_FIELD;

pub(crate) use conn::{publish_cmd, Conn};
pub(crate) use sign::Codec;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::{Bus, BusFuture, Inbox};
use crate::protocol::envelope::{BROADCAST_CHANNEL, CLIENT_PREFIX, MAX_ENVELOPE_LEN, ROOM_PREFIX, USER_PREFIX};
use crate::protocol::Envelope;
use crate::telemetry::Counted;

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const PING_EVERY: Duration = Duration::from_secs(1);
const PUBLISH_BATCH: usize = 128;
const SUBSCRIBE_CHUNK: usize = 256;

type NoPush = tokio::sync::mpsc::UnboundedSender<PushInfo>;

/// How a classic-mode instance subscribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Subscriptions {
    /// Only the channels this instance has local members for (plus `ws:broadcast`). The default, and the only
    /// choice in sharded mode.
    #[default]
    Interest,
    /// `ws:room:*`, `ws:client:*`, `ws:user:*` patterns and `ws:broadcast`, like the reference: every instance
    /// receives every message. Classic mode only.
    Patterns,
}

/// Why a [`RedisBus`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisBusError {
    /// `build` was called outside a Tokio runtime.
    #[error("RedisBusBuilder::build must be called inside a Tokio runtime")]
    NoRuntime,
    /// The endpoint has no URL or a URL redis-rs does not understand.
    #[error("invalid Redis endpoint: {0}")]
    Endpoint(String),
    /// Pattern subscriptions do not exist for sharded pub/sub.
    #[error("pattern subscriptions are only available in classic mode")]
    PatternsNeedClassic,
    /// The secret is empty.
    #[error("the bus secret must not be empty")]
    EmptySecret,
}

/// Counters of one [`RedisBus`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisBusStats {
    /// Envelopes published to Redis.
    pub published: u64,
    /// Envelopes not published: queue full, Redis unreachable, or the publish failed (at-most-once).
    pub publish_dropped: u64,
    /// Pub/sub messages received from Redis (including this instance's own, which are then skipped).
    pub received: u64,
    /// Received messages refused: malformed, reserved event, oversized, unsigned or forged, or not matching the
    /// channel they arrived on.
    pub rejected: u64,
    /// Times the subscriber connection was re-established after a fault.
    pub reconnects: u64,
    /// Channels currently subscribed by exact name (interest-based subscriptions).
    pub subscriptions: u64,
}

/// The bus's events, each counted once for both [`RedisBusStats`] and the metrics facade.
struct Counters {
    published: Counted,
    publish_dropped: Counted,
    received: Counted,
    rejected: Counted,
    reconnects: Counted,
    subscriptions: AtomicU64,
    subscriptions_gauge: metrics::Gauge,
}

impl Counters {
    fn new() -> Self {
        use crate::metrics::names::*;
        Self {
            published: Counted::new(metrics::counter!(REDIS_PUBLISHED)),
            publish_dropped: Counted::new(metrics::counter!(REDIS_PUBLISH_DROPPED)),
            received: Counted::new(metrics::counter!(REDIS_RECEIVED)),
            rejected: Counted::new(metrics::counter!(REDIS_REJECTED)),
            reconnects: Counted::new(metrics::counter!(REDIS_RECONNECTS)),
            subscriptions: AtomicU64::new(0),
            subscriptions_gauge: metrics::gauge!(REDIS_SUBSCRIPTIONS),
        }
    }

    fn subscribed(&self, channels: usize) {
        self.subscriptions.store(channels as u64, Ordering::Relaxed);
        self.subscriptions_gauge.set(channels as f64);
    }
}

/// Configures a [`RedisBus`].
#[derive(Debug, Clone)]
pub struct RedisBusBuilder {
    endpoint: RedisEndpoint,
    mode: Option<BusMode>,
    subscriptions: Subscriptions,
    secret: Option<Vec<u8>>,
    publish_queue: usize,
}

impl RedisBusBuilder {
    /// The pub/sub flavour; defaults to [`RedisEndpoint::default_mode`].
    pub fn mode(mut self, mode: BusMode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// How a classic-mode instance subscribes (default [`Subscriptions::Interest`]).
    pub fn subscriptions(mut self, subscriptions: Subscriptions) -> Self {
        self.subscriptions = subscriptions;
        self
    }

    /// Shared secret: sign every envelope and refuse unsigned or forged ones (see [`SIG_FIELD`]). Every server
    /// and emitter of the fleet needs the same secret; reference emitters cannot sign. Off by default.
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secret = Some(secret.as_ref().to_vec());
        self
    }

    /// Envelopes waiting to be published before new ones are dropped. Default 4096.
    pub fn publish_queue(mut self, capacity: usize) -> Self {
        self.publish_queue = capacity.max(1);
        self
    }

    /// Starts the background connections. Must run inside a Tokio runtime; Redis need not be up yet (see
    /// [`RedisBus::wait_ready`]).
    pub fn build(self) -> Result<RedisBus, RedisBusError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| RedisBusError::NoRuntime)?;
        let mode = self.mode.unwrap_or_else(|| self.endpoint.default_mode());
        if mode == BusMode::Sharded && self.subscriptions == Subscriptions::Patterns {
            return Err(RedisBusError::PatternsNeedClassic);
        }
        check_endpoint(&self.endpoint)?;
        let codec = Codec::new(self.secret.as_deref())?;
        let (publish_tx, publish_rx) = mpsc::channel::<Outgoing>(self.publish_queue);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            endpoint: self.endpoint,
            mode,
            subscriptions: self.subscriptions,
            codec,
            inboxes: RwLock::new(Vec::new()),
            interest: Mutex::new(Interest::default()),
            wake: Notify::new(),
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            events: events_tx,
            publish_tx,
            counters: Counters::new(),
            active: Mutex::new(HashSet::new()),
            inbound: inbound_tx,
            stop: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let tasks = vec![
            runtime.spawn(subscriber(inner.clone(), events_rx)),
            runtime.spawn(publisher(inner.clone(), publish_rx)),
            runtime.spawn(deliverer(inner.clone(), inbound_rx)),
        ];
        *inner.tasks.lock() = tasks;
        Ok(RedisBus {
            _guard: Arc::new(StopOnDrop(inner.stop.clone())),
            inner,
        })
    }
}

pub(crate) fn check_endpoint(endpoint: &RedisEndpoint) -> Result<(), RedisBusError> {
    use redis::IntoConnectionInfo;
    let urls: Vec<&str> = match endpoint {
        RedisEndpoint::Single(u) => vec![u.as_str()],
        RedisEndpoint::Cluster(nodes) => nodes.iter().map(String::as_str).collect(),
    };
    if urls.is_empty() {
        return Err(RedisBusError::Endpoint("no cluster node given".into()));
    }
    for url in urls {
        url.into_connection_info()
            .map_err(|e| RedisBusError::Endpoint(format!("{}: {e}", crate::redact::url(url))))?;
    }
    Ok(())
}

/// A [`Bus`] over Redis pub/sub (single server or cluster). Cheap to clone; the background tasks stop when the
/// last clone is dropped or the last attached server shuts down.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use sealcast::bus::{RedisBus, RedisEndpoint};
/// let bus = RedisBus::builder(RedisEndpoint::single("redis://127.0.0.1:6379")).build()?;
/// let server = sealcast::Server::builder()
///     .authenticator(|_req: sealcast::AuthRequest| async { Ok(None) })
///     .bus(bus.clone())
///     .build()?;
/// bus.wait_ready(std::time::Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
    _guard: Arc<StopOnDrop>,
}

struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("endpoint", &self.inner.endpoint)
            .field("mode", &self.inner.mode)
            .field("subscriptions", &self.inner.subscriptions)
            .field("signed", &self.inner.codec.is_signed())
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl RedisBus {
    /// Starts configuring a bus on `endpoint`.
    pub fn builder(endpoint: RedisEndpoint) -> RedisBusBuilder {
        RedisBusBuilder {
            endpoint,
            mode: None,
            subscriptions: Subscriptions::default(),
            secret: None,
            publish_queue: 4096,
        }
    }

    /// The pub/sub flavour in use.
    pub fn mode(&self) -> BusMode {
        self.inner.mode
    }

    /// Current counters.
    pub fn stats(&self) -> RedisBusStats {
        let c = &self.inner.counters;
        RedisBusStats {
            published: c.published.get(),
            publish_dropped: c.publish_dropped.get(),
            received: c.received.get(),
            rejected: c.rejected.get(),
            reconnects: c.reconnects.get(),
            subscriptions: c.subscriptions.load(Ordering::Relaxed),
        }
    }

    /// Waits until the subscription is up (true) or `timeout` passes (false).
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_ready() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// The history store on this bus's Redis (used by the servers it is attached to, for `history_rooms`).
    pub(crate) fn history(&self) -> history::RedisHistory {
        history::RedisHistory::new(self.inner.clone())
    }

    /// Starts the presence worker of the server `server_id` on this bus's Redis (for `presence_rooms`).
    pub(crate) fn presence(
        &self,
        server_id: Arc<str>,
        local: Arc<crate::presence::LocalPresence>,
        settings: presence::Settings,
    ) -> presence::RedisPresence {
        presence::RedisPresence::start(self.inner.clone(), server_id, local, settings)
    }

    /// Waits until every interest change made so far is applied on Redis, or `timeout` passes (handy before
    /// addressing a freshly joined room from another instance).
    pub async fn settled(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let pending = {
                let i = self.inner.interest.lock();
                !i.dirty.is_empty() || i.applying
            };
            if !pending && self.is_ready() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Bus for RedisBus {
    fn attach(&self, inbox: Inbox) {
        self.inner.inboxes.write().push(inbox);
    }

    fn publish(&self, envelope: Envelope) {
        let inner = &self.inner;
        if inner.stop.is_cancelled() {
            inner.counters.publish_dropped.add(1);
            return;
        }
        let payload = inner.codec.encode(&envelope);
        // Receivers would refuse it; do not spend Redis bandwidth on it.
        if payload.len() > MAX_ENVELOPE_LEN
            || inner
                .publish_tx
                .try_send(Outgoing::Plain(envelope.target.channel(), payload))
                .is_err()
        {
            inner.counters.publish_dropped.add(1);
        }
    }

    fn interest(&self, target: &crate::protocol::Target, on: bool) {
        if self.inner.subscriptions == Subscriptions::Patterns {
            return;
        }
        let channel = target.channel();
        if channel == BROADCAST_CHANNEL {
            return;
        }
        let changed = {
            let mut i = self.inner.interest.lock();
            let count = i.counts.entry(channel.clone()).or_insert(0);
            let before = *count;
            *count = if on { before + 1 } else { before.saturating_sub(1) };
            let after = *count;
            if after == 0 {
                i.counts.remove(&channel);
            }
            let changed = (before == 0) != (after == 0);
            if changed {
                i.dirty.insert(channel);
            }
            changed
        };
        if changed {
            self.inner.wake.notify_one();
        }
    }

    fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire) && !self.inner.stop.is_cancelled()
    }

    fn is_subscribed(&self, target: &crate::protocol::Target) -> bool {
        self.inner.is_subscribed(&target.channel())
    }

    fn shutdown(&self, server_id: &str) -> BusFuture {
        let inner = self.inner.clone();
        let last = {
            let mut inboxes = inner.inboxes.write();
            inboxes.retain(|i| i.server_id() != server_id && i.is_open());
            inboxes.is_empty()
        };
        Box::pin(async move {
            if !last {
                return;
            }
            inner.stop.cancel();
            inner.ready.store(false, Ordering::Release);
            let tasks = std::mem::take(&mut *inner.tasks.lock());
            for task in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
            }
        })
    }
}

#[derive(Default)]
struct Interest {
    counts: HashMap<String, usize>,
    dirty: HashSet<String>,
    /// The subscriber took dirty entries and is applying them.
    applying: bool,
}

enum Event {
    Disconnected(u64),
    Lost(u64, String),
}

struct Inner {
    endpoint: RedisEndpoint,
    mode: BusMode,
    subscriptions: Subscriptions,
    codec: Codec,
    inboxes: RwLock<Vec<Inbox>>,
    interest: Mutex<Interest>,
    wake: Notify,
    ready: AtomicBool,
    generation: AtomicU64,
    events: mpsc::UnboundedSender<Event>,
    publish_tx: mpsc::Sender<Outgoing>,
    counters: Counters,
    /// Channels the subscriber connection is subscribed to right now (cleared while it is down).
    active: Mutex<HashSet<String>>,
    /// Accepted envelopes on their way to the deliverer task. Unbounded like the connection's own push channel
    /// it drains (what arrives is what Redis sent to this subscriber), so nothing is dropped here.
    inbound: mpsc::UnboundedSender<Envelope>,
    stop: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

impl Inner {
    /// Whether the subscriber is subscribed to `channel` right now (every channel, with pattern subscriptions).
    pub(crate) fn is_subscribed(&self, channel: &str) -> bool {
        self.ready.load(Ordering::Acquire)
            && (self.subscriptions == Subscriptions::Patterns || self.active.lock().contains(channel))
    }

    fn on_push(&self, generation: u64, push: PushInfo) {
        let current = generation == self.generation.load(Ordering::Acquire);
        match (push.kind, push.data.as_slice()) {
            (PushKind::Message | PushKind::SMessage, [channel, payload])
            | (PushKind::PMessage, [_, channel, payload]) => {
                if let (Some(c), Some(p)) = (bytes(channel), bytes(payload)) {
                    self.on_message(c, p);
                }
            }
            (PushKind::Disconnection, _) if current => {
                self.ready.store(false, Ordering::Release);
                let _ = self.events.send(Event::Disconnected(generation));
            }
            (PushKind::SUnsubscribe, [channel, ..]) if current => {
                if let Some(c) = bytes(channel).and_then(|c| std::str::from_utf8(c).ok()) {
                    let _ = self.events.send(Event::Lost(generation, c.to_owned()));
                }
            }
            _ => {}
        }
    }

    fn on_message(&self, channel: &[u8], payload: &[u8]) {
        self.counters.received.add(1);
        let accepted = std::str::from_utf8(channel).ok().and_then(|channel| {
            if !self.codec.accepts(channel, payload) {
                return None;
            }
            Envelope::parse(payload)
                .ok()
                .filter(|env| env.target.channel() == channel)
        });
        match accepted {
            Some(env) => {
                let _ = self.inbound.send(env);
            }
            None => {
                self.counters.rejected.add(1);
                self.inboxes.read().iter().for_each(Inbox::count_dropped);
            }
        }
    }

    fn subscribe_cmd(&self, on: bool) -> &'static str {
        match (self.mode, on) {
            (BusMode::Classic, true) => "SUBSCRIBE",
            (BusMode::Classic, false) => "UNSUBSCRIBE",
            (BusMode::Sharded, true) => "SSUBSCRIBE",
            (BusMode::Sharded, false) => "SUNSUBSCRIBE",
        }
    }

    /// (Un)subscribes `channels`: in chunks on one server; one command per channel on a cluster (a sharded
    /// command must not span slots), concurrently.
    async fn apply(&self, conn: &mut Conn, channels: &[String], on: bool) -> redis::RedisResult<()> {
        let name = self.subscribe_cmd(on);
        for chunk in channels.chunks(SUBSCRIBE_CHUNK) {
            match conn {
                Conn::Single(_) => {
                    let mut cmd = redis::cmd(name);
                    cmd.arg(chunk);
                    conn.run::<()>(&cmd).await?;
                }
                Conn::Cluster(_) => {
                    let runs = chunk.iter().map(|channel| {
                        let mut conn = conn.clone();
                        let mut cmd = redis::cmd(name);
                        cmd.arg(channel);
                        async move { conn.run::<()>(&cmd).await }
                    });
                    for r in futures_util::future::join_all(runs).await {
                        r?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A new connection: base subscriptions, then everything currently wanted.
    async fn start_session(self: &Arc<Self>, generation: u64) -> redis::RedisResult<(Conn, HashSet<String>)> {
        let weak = Arc::downgrade(self);
        let push = move |info: PushInfo| -> Result<(), ()> {
            let inner = weak.upgrade().ok_or(())?;
            inner.on_push(generation, info);
            Ok(())
        };
        let mut conn = Conn::open(&self.endpoint, Some(push)).await?;
        if self.subscriptions == Subscriptions::Patterns {
            let mut cmd = redis::cmd("PSUBSCRIBE");
            cmd.arg(format!("{ROOM_PREFIX}*"))
                .arg(format!("{CLIENT_PREFIX}*"))
                .arg(format!("{USER_PREFIX}*"));
            conn.run::<()>(&cmd).await?;
        }
        self.apply(&mut conn, &[BROADCAST_CHANNEL.to_owned()], true).await?;
        let wanted: Vec<String> = {
            let mut i = self.interest.lock();
            i.dirty.clear();
            i.counts.keys().cloned().collect()
        };
        self.apply(&mut conn, &wanted, true).await?;
        *self.active.lock() = wanted.iter().cloned().collect();
        Ok((conn, wanted.into_iter().collect()))
    }

    /// Applies the dirty set.
    async fn reconcile(&self, conn: &mut Conn, subscribed: &mut HashSet<String>) -> redis::RedisResult<()> {
        let (add, remove): (Vec<String>, Vec<String>) = {
            let mut i = self.interest.lock();
            let dirty: Vec<String> = i.dirty.drain().collect();
            i.applying = true;
            let mut add = Vec::new();
            let mut remove = Vec::new();
            for channel in dirty {
                match (i.counts.contains_key(&channel), subscribed.contains(&channel)) {
                    (true, false) => add.push(channel),
                    (false, true) => remove.push(channel),
                    _ => {}
                }
            }
            (add, remove)
        };
        let result = async {
            self.apply(conn, &add, true).await?;
            self.active.lock().extend(add.iter().cloned());
            subscribed.extend(add);
            self.apply(conn, &remove, false).await?;
            let mut active = self.active.lock();
            for channel in &remove {
                subscribed.remove(channel);
                active.remove(channel);
            }
            Ok(())
        }
        .await;
        self.interest.lock().applying = false;
        result
    }
}

/// Sleeps `d` unless the bus stops first (then returns false).
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

async fn subscriber(inner: Arc<Inner>, mut events: mpsc::UnboundedReceiver<Event>) {
    let mut backoff = MIN_BACKOFF;
    let mut first = true;
    while !inner.stop.is_cancelled() {
        inner.ready.store(false, Ordering::Release);
        let generation = inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let session = tokio::select! {
            _ = inner.stop.cancelled() => return,
            s = inner.start_session(generation) => s,
        };
        let (mut conn, mut subscribed) = match session {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "redis bus: subscriber cannot connect");
                if !pause(&inner.stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if !first {
            inner.counters.reconnects.add(1);
            tracing::info!("redis bus: subscriber reconnected and resubscribed");
        }
        first = false;
        backoff = MIN_BACKOFF;
        inner
            .counters
            .subscriptions
            .store(subscribed.len() as u64, Ordering::Relaxed);
        inner.ready.store(true, Ordering::Release);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let why: String = loop {
            tokio::select! {
                _ = inner.stop.cancelled() => return,
                ev = events.recv() => match ev {
                    None => return,
                    Some(Event::Disconnected(g)) if g == generation => break "connection lost".into(),
                    Some(Event::Lost(g, channel)) if g == generation => {
                        let wanted = inner.interest.lock().counts.contains_key(&channel)
                            || channel == BROADCAST_CHANNEL;
                        if wanted {
                            if let Err(e) = inner.apply(&mut conn, &[channel], true).await {
                                break format!("resubscribe failed: {e}");
                            }
                        }
                    }
                    Some(_) => {}
                },
                _ = inner.wake.notified() => {
                    if let Err(e) = inner.reconcile(&mut conn, &mut subscribed).await {
                        break format!("subscribe failed: {e}");
                    }
                    inner.counters.subscribed(subscribed.len());
                }
                _ = ping.tick() => {
                    if let Err(e) = conn.run::<Value>(&redis::cmd("PING")).await {
                        break format!("ping failed: {e}");
                    }
                }
            }
        };
        inner.ready.store(false, Ordering::Release);
        inner.active.lock().clear();
        tracing::warn!(reason = %why, "redis bus: subscription down, reconnecting");
    }
}

/// Most envelopes delivered in one batch.
const DELIVER_BATCH: usize = 256;

/// Delivers what the subscriber accepted, in order, taking everything already waiting at once: consecutive
/// messages of one room then visit each member's queue once (`Inbox::deliver_batch`), as a client's publish
/// burst does on its own instance. Nothing is held back: a batch is whatever had arrived.
async fn deliverer(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Envelope>) {
    let mut batch = Vec::with_capacity(DELIVER_BATCH);
    loop {
        let n = tokio::select! {
            _ = inner.stop.cancelled() => return,
            n = rx.recv_many(&mut batch, DELIVER_BATCH) => n,
        };
        if n == 0 {
            return;
        }
        let inboxes: Vec<Inbox> = inner.inboxes.read().clone();
        for inbox in &inboxes {
            inbox.deliver_batch(&batch);
        }
        batch.clear();
    }
}

/// What the publisher task sends: a plain envelope, or a history operation (a script that appends and publishes,
/// or claims an idempotency key and publishes), in the order they were queued.
pub(crate) enum Outgoing {
    /// `(channel, payload)`.
    Plain(String, String),
    /// A script run with its reply.
    Script(Box<history::Op>),
}

/// Publishes queued envelopes in order, in batches; drops (and counts) them while Redis is unreachable. History
/// operations run in the same order, between the batches of plain envelopes around them.
async fn publisher(inner: Arc<Inner>, mut rx: mpsc::Receiver<Outgoing>) {
    let mut link = PublishLink::default();
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        let n = tokio::select! {
            _ = inner.stop.cancelled() => break,
            n = rx.recv_many(&mut batch, PUBLISH_BATCH) => n,
        };
        if n == 0 {
            return;
        }
        link.flush_all(&inner, &mut batch).await;
    }
    // Stopping: publish what is already queued, within a bound.
    let drain = async {
        rx.close();
        while rx.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
            link.flush_all(&inner, &mut batch).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

struct PublishLink {
    conn: Option<Conn>,
    retry_at: Instant,
    backoff: Duration,
}

impl Default for PublishLink {
    fn default() -> Self {
        Self {
            conn: None,
            retry_at: Instant::now(),
            backoff: MIN_BACKOFF,
        }
    }
}

impl PublishLink {
    /// Runs what was queued, in order: runs of plain envelopes as one batch each, scripts one by one.
    async fn flush_all(&mut self, inner: &Inner, items: &mut Vec<Outgoing>) {
        let mut plain = Vec::new();
        let mut scripts = Vec::new();
        for item in items.drain(..) {
            match item {
                Outgoing::Plain(channel, payload) => {
                    self.run_scripts(inner, &mut scripts).await;
                    plain.push((channel, payload));
                }
                Outgoing::Script(op) => {
                    if !plain.is_empty() {
                        self.flush(inner, &mut plain).await;
                    }
                    scripts.push(*op);
                }
            }
        }
        self.run_scripts(inner, &mut scripts).await;
        if !plain.is_empty() {
            self.flush(inner, &mut plain).await;
        }
    }

    /// Runs consecutive history scripts together (one pipeline on one server), in order.
    async fn run_scripts(&mut self, inner: &Inner, scripts: &mut Vec<history::Op>) {
        if scripts.is_empty() {
            return;
        }
        let ops = std::mem::take(scripts);
        let n = ops.len() as u64;
        let ok = match self.connected(inner).await {
            Ok(conn) => history::run_all(conn, ops).await,
            Err(_) => {
                for op in ops {
                    op.answer(Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "redis bus: reconnecting",
                    ))));
                }
                false
            }
        };
        if ok {
            inner.counters.published.add(n);
        } else {
            // A broken connection is opened again (after the backoff) for what follows.
            self.conn = None;
            inner.counters.publish_dropped.add(n);
        }
    }

    /// The publishing connection, opened if needed. `Err(None)`: not tried, inside the reconnect backoff.
    async fn connected(&mut self, inner: &Inner) -> Result<&mut Conn, Option<redis::RedisError>> {
        if self.conn.is_none() {
            if Instant::now() < self.retry_at {
                return Err(None);
            }
            match Conn::open(&inner.endpoint, None::<NoPush>).await {
                Ok(c) => {
                    self.backoff = MIN_BACKOFF;
                    self.conn = Some(c);
                }
                Err(e) => {
                    self.retry_at = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return Err(Some(e));
                }
            }
        }
        self.conn.as_mut().ok_or(None)
    }

    async fn flush(&mut self, inner: &Inner, batch: &mut Vec<(String, String)>) {
        let n = batch.len() as u64;
        let outcome = self.publish(inner, batch).await;
        batch.clear();
        match outcome {
            Ok(()) => inner.counters.published.add(n),
            Err(e) => {
                inner.counters.publish_dropped.add(n);
                if let Some(e) = e {
                    tracing::warn!(error = %e, dropped = n, "redis bus: publish failed");
                }
            }
        }
    }

    /// `Err(None)`: dropped without trying (inside the reconnect backoff).
    async fn publish(&mut self, inner: &Inner, batch: &[(String, String)]) -> Result<(), Option<redis::RedisError>> {
        let conn = self.connected(inner).await?;
        match conn.publish_batch(inner.mode, batch).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.conn = None;
                Err(Some(e))
            }
        }
    }
}
