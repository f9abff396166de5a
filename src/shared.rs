//! The state every part of a server shares — configuration, routing table, bus, hooks, limits, counters — and
//! the delivery paths that use it: local fan-out plus hand-off to the bus, and what arrives from the bus.
//!
//! `connection` and `server` depend on this module; it depends on neither. The bus reaches it only through the
//! [`Deliver`] trait of an [`crate::Inbox`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{Bus, Deliver};
use crate::config::Config;
use std::collections::HashMap;

use parking_lot::Mutex;

use crate::bus::redis::history::{self as redis_history, Keys, RedisHistory};
use crate::history::{
    HistoryError, HistoryPage, IdKey, MemoryHistory, Publication, Published, Recovery, StreamPosition,
};
use crate::hooks::{Authenticator, MessageHandler, OnConnected, OnDisconnected, OutboundTransformer, RoomValidator};
use crate::limits::ConnectionLimits;
use crate::mailbox::Mailbox;
use crate::presence::{LocalPresence, Presence, PresenceError};
use crate::protocol::outbound::{StreamPos, TextFrame};
use crate::protocol::{event, outbound, room, Action, ClientId, CloseCode, Envelope, RoomName, Target};
use crate::registry::{Exclude, JoinResult, Registry};
use crate::session::Handshake;
use crate::telemetry::Telemetry;
use crate::wsenc::SharedKeys;

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The event name is reserved for the protocol (`connected`, `error`, `encrypted`, ...): delivering it would
    /// confuse or kill encrypted sessions. Pick another name.
    #[error("event name {0:?} is reserved by the protocol; use another name")]
    ReservedEvent(String),
    /// The event name is empty or longer than 256 bytes.
    #[error("event name must be 1 to 256 bytes long")]
    InvalidEvent,
    /// The payload could not be serialised to JSON.
    #[error("payload is not serialisable to JSON: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The room name is empty or longer than 1024 bytes.
    #[error("room name must be 1 to 1024 bytes long")]
    InvalidRoom,
    /// The idempotency key is empty or longer than 64 bytes.
    #[error("idempotency key must be 1 to 64 bytes long")]
    InvalidIdempotencyKey,
    /// The history store could not take the message (Redis unreachable, or its queue full); nothing was
    /// delivered. Retry with the same idempotency key.
    #[error("the history store is unavailable; retry (with the same idempotency key)")]
    Unavailable,
}

/// How long one outbound-transformer call may take unless the builder says otherwise.
pub(crate) const DEFAULT_TRANSFORMER_TIMEOUT: Duration = Duration::from_secs(1);

/// The application's optional hooks.
pub(crate) struct Hooks {
    pub(crate) room_validator: Option<Arc<RoomValidator>>,
    pub(crate) on_connected: Option<Arc<OnConnected>>,
    pub(crate) on_disconnected: Option<Arc<OnDisconnected>>,
    pub(crate) message_handler: Option<Arc<MessageHandler>>,
    pub(crate) outbound_transformer: Option<Arc<OutboundTransformer>>,
    /// Bound on one outbound-transformer call; past it the message is dropped for that recipient.
    pub(crate) transformer_timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            room_validator: None,
            on_connected: None,
            on_disconnected: None,
            message_handler: None,
            outbound_transformer: None,
            transformer_timeout: DEFAULT_TRANSFORMER_TIMEOUT,
        }
    }
}

/// One server's shared state; see the module docs.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) server_id: Arc<str>,
    pub(crate) registry: Registry,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) hooks: Hooks,
    pub(crate) authenticator: Arc<Authenticator>,
    pub(crate) handshake: Option<Arc<Handshake>>,
    pub(crate) static_keys: Option<SharedKeys>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    pub(crate) seal_permits: Semaphore,
    /// Outbound-transformer calls in flight, as many as sealing permits but apart from them: a slow transformer
    /// must not hold up sealing.
    pub(crate) transform_permits: Semaphore,
    /// Authenticator calls in flight; apart from the handshakes' permits, which bound CPU work only.
    pub(crate) auth_permits: Semaphore,
    pub(crate) handshake_permits: Semaphore,
    pub(crate) limits: Arc<ConnectionLimits>,
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) clock: Instant,
    /// Set off by the first upgrade without a peer address: per-IP limits cannot work, which is said once.
    pub(crate) peerless: std::sync::Once,
    /// The bus's history store (and idempotency keys), if it has one.
    pub(crate) history: Option<HistoryStore>,
    /// Redis history: clients joining with a recovery, per room, holding the live messages that arrive while their
    /// replay is read. Deliveries of history messages from the bus take this lock.
    pub(crate) joiners: Mutex<HashMap<RoomName, Vec<Arc<Joiner>>>>,
    /// This instance's members of presence rooms (kept by the registry).
    pub(crate) presence: Arc<LocalPresence>,
    /// Where presence queries are answered.
    pub(crate) presence_store: PresenceStore,
}

/// Where a server's presence lives.
#[derive(Clone)]
pub(crate) enum PresenceStore {
    /// In process: this instance's members are the room's ([`crate::LocalBus`]).
    Local,
    /// In Redis, cluster-wide ([`crate::bus::RedisBus`]).
    Redis(crate::bus::redis::presence::RedisPresence),
    /// The bus keeps no presence (`presence_rooms` must then be empty).
    None,
}

/// Where a server's room history lives: the bus's store.
#[derive(Clone)]
pub(crate) enum HistoryStore {
    /// In process ([`crate::LocalBus`]).
    Memory(Arc<MemoryHistory>),
    /// In Redis ([`crate::bus::RedisBus`]).
    Redis(RedisHistory),
}

/// A client joining a Redis history room with a recovery.
pub(crate) struct Joiner {
    client: ClientId,
    state: Mutex<JoinerState>,
}

enum JoinerState {
    /// Its replay is being read: the room's live messages are held for it (`None` once more arrived than its
    /// queue holds: it is then closed as a slow consumer).
    Holding(Option<Vec<(u64, TextFrame)>>),
    /// In the room, replayed up to `up_to`: a live copy of a replayed message may still be on its way from Redis
    /// (the read can overtake the pub/sub message), and is not delivered to it again. Ends with the first live
    /// message after `up_to`, or after [`FILTER_FOR`].
    Filtering { up_to: u64, since: Instant },
}

/// Undoes a recovering join's pin of its room channel, and removes its joiner unless it is filtering late copies.
struct JoinGuard<'a> {
    shared: &'a Shared,
    target: Target,
    room: RoomName,
    joiner: Arc<Joiner>,
}

impl Drop for JoinGuard<'_> {
    fn drop(&mut self) {
        let filtering = matches!(
            &*self.joiner.state.lock(),
            JoinerState::Filtering { up_to, .. } if *up_to > 0
        );
        if !filtering {
            let mut joiners = self.shared.joiners.lock();
            if let Some(list) = joiners.get_mut(&self.room) {
                list.retain(|j| !Arc::ptr_eq(j, &self.joiner));
                if list.is_empty() {
                    joiners.remove(&self.room);
                }
            }
        }
        self.shared.bus.interest(&self.target, false);
    }
}

/// Longest a joined client's filter of late copies lasts.
const FILTER_FOR: Duration = Duration::from_secs(30);

/// How long a recovering join waits for the room's channel to be subscribed.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// What joining one room came to.
pub(crate) struct RoomJoin {
    pub(crate) result: JoinResult,
    /// A room with history: its latest position when the client was added.
    pub(crate) position: Option<StreamPosition>,
    /// A recovery was asked for: whether every missed message was queued for the client.
    pub(crate) recovered: Option<bool>,
}

/// Refuses reserved and malformed application event names.
pub(crate) fn check_event(name: &str) -> Result<(), SendError> {
    if event::is_reserved(name) {
        return Err(SendError::ReservedEvent(name.to_owned()));
    }
    if !event::is_valid_application_event(name) {
        return Err(SendError::InvalidEvent);
    }
    Ok(())
}

impl Shared {
    /// A live history message meets a recovering joiner: held for it, or (a late copy of its replay) noted in
    /// `late` to be skipped. False once the joiner needs nothing more.
    fn joiner_sees(
        &self,
        j: &Joiner,
        offset: u64,
        text: &TextFrame,
        exclude: &Exclude,
        late: &mut Vec<ClientId>,
    ) -> bool {
        match &mut *j.state.lock() {
            JoinerState::Holding(held) => {
                if !exclude.skips(&j.client) {
                    let full = held.as_ref().is_some_and(|h| h.len() >= self.config.outbound_queue);
                    match held {
                        Some(h) if !full => h.push((offset, text.clone())),
                        _ => *held = None,
                    }
                }
                true
            }
            JoinerState::Filtering { up_to, since } => {
                if offset <= *up_to && since.elapsed() < FILTER_FOR {
                    late.push(j.client);
                    true
                } else {
                    false
                }
            }
        }
    }
}

/// The bus channel of a room, by name.
fn room_channel(room: &str) -> String {
    format!("{}{room}", crate::protocol::envelope::ROOM_PREFIX)
}

/// Whether `entries` are exactly the messages `from + 1 ..= last`, unexpired, at most `max` of them.
/// `entries` are (offset, appended at) pairs.
fn complete(
    entries: impl ExactSizeIterator<Item = (u64, u64)>,
    from: u64,
    last: u64,
    max: usize,
    now_ms: u64,
    ttl_ms: u64,
) -> bool {
    if from > last {
        return false;
    }
    let missed = last - from;
    if usize::try_from(missed).map_or(true, |m| m > max) || entries.len() as u64 != missed {
        return false;
    }
    entries
        .zip(from.saturating_add(1)..)
        .all(|((offset, at_ms), want)| offset == want && now_ms.saturating_sub(at_ms) < ttl_ms)
}

fn position_of(offset: u64, epoch: &str) -> StreamPosition {
    StreamPosition {
        offset,
        epoch: epoch.to_owned(),
    }
}

impl Shared {
    /// True when `room` keeps history (it matches `history_rooms`, and the bus has a store that can keep it).
    pub(crate) fn has_history(&self, room: &str) -> bool {
        let matches = !self.config.history_rooms.is_empty() && room::allowed(&self.config.history_rooms, room);
        match &self.history {
            Some(HistoryStore::Memory(_)) => matches,
            Some(HistoryStore::Redis(r)) => matches && r.keys(&room_channel(room)).is_some(),
            None => false,
        }
    }

    /// The Redis store and the room's keys, for a room with history on Redis.
    fn redis_room(&self, room: &RoomName) -> Option<(&RedisHistory, Keys)> {
        match &self.history {
            Some(HistoryStore::Redis(r)) if self.has_history(room.as_str()) => {
                r.keys(&room_channel(room.as_str())).map(|k| (r, k))
            }
            _ => None,
        }
    }

    /// Whether a publish must wait for the history store's answer: on Redis, one with an id (its `ack` needs the
    /// position, its delivery the idempotency check). Without an id the append is only queued, in order.
    pub(crate) fn publish_awaits(&self, keyed: bool) -> bool {
        keyed && matches!(self.history, Some(HistoryStore::Redis(_)))
    }

    fn limits(&self) -> redis_history::Limits {
        redis_history::Limits {
            size: self.config.history_size,
            ttl: self.config.history_ttl,
        }
    }

    fn envelope(&self, room: &RoomName, event_name: &str, data: Box<RawValue>, exclude: Vec<ClientId>) -> Envelope {
        Envelope {
            server_id: self.server_id.to_string(),
            target: Target::Room(room.clone()),
            event: event_name.to_owned(),
            data,
            exclude,
            action: Action::Deliver,
            position: None,
        }
    }

    /// Publishes to a room on every instance without waiting: in a room with history the message is appended and
    /// delivered under the room's lock (so offsets are delivered in order), and a `key` already used within
    /// `history_ttl` makes it a duplicate that is not delivered again. On Redis the append is queued in order
    /// (no position is known yet, and keys need [`Self::publish_room_acked`]).
    pub(crate) fn publish_room(
        &self,
        room: RoomName,
        event_name: &str,
        data: Box<RawValue>,
        exclude: Vec<ClientId>,
        key: Option<IdKey>,
    ) -> Result<Published, SendError> {
        check_event(event_name)?;
        if let Some((r, keys)) = self.redis_room(&room) {
            let env = self.envelope(&room, event_name, data, exclude);
            r.append(&keys, &env, key.as_ref(), self.limits(), false)
                .map_err(|_| SendError::Unavailable)?;
            self.telemetry.bus_published();
            return Ok(Published {
                position: None,
                duplicate: false,
            });
        }
        let now = Instant::now();
        let ttl = self.config.history_ttl;
        let store = match &self.history {
            Some(HistoryStore::Memory(store)) if self.has_history(room.as_str()) => store,
            store => {
                if let (Some(HistoryStore::Memory(store)), Some(key)) = (store, key) {
                    if !store.claim(key, now, ttl) {
                        return Ok(Published {
                            position: None,
                            duplicate: true,
                        });
                    }
                }
                self.emit(Target::Room(room), event_name, data, exclude, true)?;
                return Ok(Published {
                    position: None,
                    duplicate: false,
                });
            }
        };
        let stream = store.stream(&room, now);
        let mut s = stream.lock();
        if let Some(original) = key.as_ref().and_then(|k| store.used(k, now)) {
            return Ok(Published {
                position: original,
                duplicate: true,
            });
        }
        let (offset, epoch, frame) = s.append(now, self.config.history_size, ttl, |at| {
            TextFrame::new(&outbound::history_message(event_name, &data, room.as_str(), at))
        });
        let started = Instant::now();
        self.registry
            .deliver(&Target::Room(room.clone()), &frame, &Exclude::from_ids(&exclude));
        self.telemetry.fanout(started.elapsed());
        let position = position_of(offset, &epoch);
        // Still under the room's lock: the other instances get the messages in offset order too.
        let mut env = self.envelope(&room, event_name, data, exclude);
        env.position = Some(position.clone());
        self.telemetry.bus_published();
        self.bus.publish(env);
        if let Some(key) = key {
            store.remember(key, Some(position.clone()), now, ttl);
        }
        drop(s);
        Ok(Published {
            position: Some(position),
            duplicate: false,
        })
    }

    /// [`Self::publish_room`], waiting on Redis for the position (and for the idempotency key's check): what an
    /// acknowledgement needs. On Redis the message reaches this instance's clients, like every other instance's,
    /// from the room's channel, in offset order.
    pub(crate) async fn publish_room_acked(
        &self,
        room: RoomName,
        event_name: &str,
        data: Box<RawValue>,
        exclude: Vec<ClientId>,
        key: Option<IdKey>,
    ) -> Result<Published, SendError> {
        let Some(HistoryStore::Redis(r)) = &self.history else {
            return self.publish_room(room, event_name, data, exclude, key);
        };
        check_event(event_name)?;
        let answer = match (self.redis_room(&room), key) {
            (Some((r, keys)), key) => {
                let env = self.envelope(&room, event_name, data, exclude);
                let rx = r.append(&keys, &env, key.as_ref(), self.limits(), true);
                match rx {
                    Ok(Some(rx)) => rx.await.ok().and_then(Result::ok),
                    _ => None,
                }
            }
            (None, Some(key)) => {
                let Some(keys) = r.keys(&room_channel(room.as_str())) else {
                    // No key can live on this room's slot: published without the idempotency check.
                    self.emit(Target::Room(room), event_name, data, exclude, true)?;
                    return Ok(Published {
                        position: None,
                        duplicate: false,
                    });
                };
                // The script publishes to the other instances; this one delivers itself once the key is claimed.
                let frame = TextFrame::new(&outbound::message(event_name, Some(&data)));
                let ids = exclude.clone();
                let env = self.envelope(&room, event_name, data, exclude);
                let rx = r.claim(&keys, &env, &key, self.config.history_ttl);
                let answer = match rx {
                    Ok(rx) => rx.await.ok().and_then(Result::ok),
                    Err(_) => None,
                };
                if answer.as_ref().is_some_and(|a| !a.duplicate) {
                    self.registry
                        .deliver(&Target::Room(room), &frame, &Exclude::from_ids(&ids));
                }
                answer
            }
            (None, None) => return self.publish_room(room, event_name, data, exclude, None),
        };
        let answer = answer.ok_or(SendError::Unavailable)?;
        self.telemetry.bus_published();
        Ok(Published {
            position: answer.position,
            duplicate: answer.duplicate,
        })
    }

    /// Adds a client to a room. In a room with history this happens under the room's lock, and a recovery from
    /// `recover` (the last offset the client received, and its epoch) queues every missed message first: a
    /// message published meanwhile waits for the lock, so it comes after the replay, never in it too, never lost.
    /// Rooms with history on Redis need [`Self::join_room_awaited`].
    pub(crate) fn join_room(
        &self,
        id: &ClientId,
        mailbox: &Mailbox,
        room: RoomName,
        recover: Option<(u64, &str)>,
    ) -> RoomJoin {
        let store = match &self.history {
            Some(HistoryStore::Memory(store)) if self.has_history(room.as_str()) => store,
            _ => {
                return RoomJoin {
                    result: self.registry.join(id, room),
                    position: None,
                    recovered: None,
                }
            }
        };
        let now = Instant::now();
        let stream = store.stream(&room, now);
        let mut s = stream.lock();
        let result = self.registry.join(id, room);
        let (offset, epoch) = s.position();
        let recovered = recover.map(|(from, from_epoch)| {
            // A client already in the room receives live messages: nothing is missing that a replay could add.
            if result != JoinResult::Joined {
                return false;
            }
            // A replay beyond the client's queue would only close it as a slow consumer.
            match s.since(
                now,
                self.config.history_ttl,
                from,
                from_epoch,
                self.config.outbound_queue,
            ) {
                Recovery::Replay(frames) => frames.is_empty() || mailbox.push_frames(&frames),
                Recovery::Unrecoverable => false,
            }
        });
        drop(s);
        RoomJoin {
            result,
            position: Some(position_of(offset, &epoch)),
            recovered,
        }
    }

    /// Waits (up to `SUBSCRIBE_WAIT`, while the bus is up) until envelopes for `target` published on other
    /// instances reach this one: a join answered before that could miss a message published right after the
    /// answer. True once they do.
    pub(crate) async fn await_subscribed(&self, target: &Target) -> bool {
        let deadline = Instant::now() + SUBSCRIBE_WAIT;
        while !self.bus.is_subscribed(target) && self.bus.is_ready() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.bus.is_subscribed(target)
    }

    /// [`Self::join_room`] for every store. On Redis, a recovery closes the subscribe-then-read race this way:
    /// the room's channel is subscribed first (and waited for), the client is registered as a joiner that holds
    /// the room's live messages, the missed ones are read from the stream, and then — under the joiners' lock,
    /// which deliveries from the bus take too — the replay is queued, then the held messages after the replay's
    /// last offset, and the client enters the room: each message once, in offset order.
    pub(crate) async fn join_room_awaited(
        &self,
        id: &ClientId,
        mailbox: &Mailbox,
        room: RoomName,
        recover: Option<(u64, &str)>,
    ) -> RoomJoin {
        let Some((r, keys)) = self.redis_room(&room) else {
            return self.join_room(id, mailbox, room, recover);
        };
        let limits = self.limits();
        let Some((from, from_epoch)) = recover else {
            let result = self.registry.join(id, room);
            let position = r.read(&keys, redis_history::Read::Position, limits).await.ok();
            return RoomJoin {
                result,
                position: position.map(|p| p.position),
                recovered: None,
            };
        };
        let target = Target::Room(room.clone());
        let joiner = Arc::new(Joiner {
            client: *id,
            state: Mutex::new(JoinerState::Holding(Some(Vec::new()))),
        });
        // Pinned while the replay is read: the channel stays subscribed whatever the registry does meanwhile. The
        // guard undoes the pin and the joiner however this ends (the connection may be killed while it waits).
        self.bus.interest(&target, true);
        let _pin = JoinGuard {
            shared: self,
            target: target.clone(),
            room: room.clone(),
            joiner: joiner.clone(),
        };
        let subscribed = self.await_subscribed(&target).await;
        self.joiners
            .lock()
            .entry(room.clone())
            .or_default()
            .push(joiner.clone());
        let max = self.config.outbound_queue;
        let read = match subscribed {
            true => Some(r.replay(&keys, room.as_str(), from, max, limits).await),
            false => None,
        };
        let joined = {
            let joiners = self.joiners.lock();
            let result = self.registry.join(id, room.clone());
            let held = match std::mem::replace(&mut *joiner.state.lock(), JoinerState::Holding(None)) {
                JoinerState::Holding(held) => held,
                JoinerState::Filtering { .. } => Some(Vec::new()),
            };
            let mut position = None;
            let mut replayed_to = 0;
            let mut recovered = false;
            if let Some(Ok(replay)) = read {
                let now_ms = redis_history::now_ms();
                let ttl_ms = u64::try_from(self.config.history_ttl.as_millis()).unwrap_or(u64::MAX);
                // The read may have been shared with clients further behind: this one's part starts after `from`.
                let mine = replay
                    .entries
                    .get(replay.entries.partition_point(|e| e.offset <= from)..)
                    .unwrap_or_default();
                let complete = replay.position.epoch == from_epoch
                    && complete(
                        mine.iter().map(|e| (e.offset, e.at_ms)),
                        from,
                        replay.position.offset,
                        max,
                        now_ms,
                        ttl_ms,
                    );
                if result == JoinResult::Joined && complete {
                    let frames: Vec<TextFrame> = mine.iter().map(|e| e.frame.clone()).collect();
                    recovered = frames.is_empty() || mailbox.push_frames(&frames);
                    replayed_to = replay.position.offset;
                }
                position = Some(replay.position.clone());
            }
            if result == JoinResult::Joined {
                match held {
                    Some(held) => {
                        let live: Vec<TextFrame> = held
                            .into_iter()
                            .filter(|(offset, _)| *offset > replayed_to)
                            .map(|(_, f)| f)
                            .collect();
                        if !live.is_empty() {
                            mailbox.push_frames(&live);
                        }
                    }
                    None => {
                        mailbox.close_after_pending(CloseCode::SlowConsumer);
                    }
                }
            }
            // Late live copies of the replay are dropped for a while (nothing is, with nothing replayed): the
            // joiner leaves the list with the first message after `replayed_to`.
            *joiner.state.lock() = JoinerState::Filtering {
                up_to: replayed_to,
                since: Instant::now(),
            };
            drop(joiners);
            RoomJoin {
                result,
                position,
                recovered: Some(recovered),
            }
        };
        joined
    }

    /// A page of a room's history (memory store).
    pub(crate) fn history_page(
        &self,
        room: &RoomName,
        since: Option<&StreamPosition>,
        limit: Option<usize>,
    ) -> Result<HistoryPage, HistoryError> {
        let store = match &self.history {
            Some(HistoryStore::Memory(store)) if self.has_history(room.as_str()) => store,
            _ => return Err(HistoryError::NotEnabled),
        };
        let size = self.config.history_size;
        let limit = limit.unwrap_or(size).min(size);
        store.page(room, Instant::now(), self.config.history_ttl, since, limit)
    }

    /// A page of a room's history, from either store.
    pub(crate) async fn history_page_awaited(
        &self,
        room: &RoomName,
        since: Option<&StreamPosition>,
        limit: Option<usize>,
    ) -> Result<HistoryPage, HistoryError> {
        let Some((r, keys)) = self.redis_room(room) else {
            return self.history_page(room, since, limit);
        };
        let size = self.config.history_size;
        let limit = limit.unwrap_or(size).min(size);
        let what = match since {
            Some(p) => redis_history::Read::After {
                from: p.offset.saturating_add(1),
                count: limit,
            },
            None => redis_history::Read::Latest { count: limit },
        };
        let snapshot = r
            .read(&keys, what, self.limits())
            .await
            .map_err(|_| HistoryError::Unavailable)?;
        let now_ms = redis_history::now_ms();
        let ttl_ms = u64::try_from(self.config.history_ttl.as_millis()).unwrap_or(u64::MAX);
        if let Some(p) = since {
            let missed = snapshot.position.offset.saturating_sub(p.offset);
            let wanted = usize::try_from(missed).unwrap_or(usize::MAX).min(limit);
            let ok = snapshot.position.epoch == p.epoch
                && p.offset <= snapshot.position.offset
                && complete(
                    snapshot
                        .entries
                        .get(..wanted)
                        .unwrap_or(&snapshot.entries)
                        .iter()
                        .map(|e| (e.offset, e.at_ms)),
                    p.offset,
                    p.offset.saturating_add(wanted as u64),
                    limit,
                    now_ms,
                    ttl_ms,
                );
            if !ok {
                return Err(HistoryError::Unrecoverable(snapshot.position));
            }
        }
        let publications = snapshot
            .entries
            .into_iter()
            .filter(|e| now_ms.saturating_sub(e.at_ms) < ttl_ms)
            .map(|e| Publication {
                offset: e.offset,
                event: e.event,
                data: e.data,
            })
            .collect();
        Ok(HistoryPage {
            publications,
            position: snapshot.position,
        })
    }

    /// Delivers to local recipients and, when `publish`, hands the envelope to the bus. Returns the local count.
    pub(crate) fn emit(
        &self,
        target: Target,
        event_name: &str,
        data: Box<RawValue>,
        exclude: Vec<ClientId>,
        publish: bool,
    ) -> Result<usize, SendError> {
        check_event(event_name)?;
        if let Target::Room(room) = &target {
            if publish && self.has_history(room.as_str()) {
                // Every message to a room with history gets its offset.
                self.publish_room(room.clone(), event_name, data, exclude, None)?;
                return Ok(0);
            }
        }
        let started = Instant::now();
        let text = TextFrame::new(&outbound::message(event_name, Some(&data)));
        let local = self.registry.deliver(&target, &text, &Exclude::from_ids(&exclude));
        self.telemetry.fanout(started.elapsed());
        if publish {
            self.publish_delivery(target, event_name, data, exclude);
        }
        Ok(local)
    }

    /// Hands a message to the bus for the other instances to deliver.
    pub(crate) fn publish_delivery(
        &self,
        target: Target,
        event_name: &str,
        data: Box<RawValue>,
        exclude: Vec<ClientId>,
    ) {
        self.telemetry.bus_published();
        self.bus.publish(Envelope {
            server_id: self.server_id.to_string(),
            target,
            event: event_name.to_owned(),
            data,
            exclude,
            action: Action::Deliver,
            position: None,
        });
    }

    /// Closes the local connections of a client or user target with 1008 and, when `publish`, asks the other
    /// instances to do the same. Returns the local count (rooms and broadcast are not disconnect targets: 0).
    pub(crate) fn disconnect_target(&self, target: &Target, publish: bool) -> usize {
        let entries = match target {
            Target::Client(id) => self.registry.get(id).into_iter().collect(),
            Target::User(id) => self.registry.by_user(id.as_str()),
            Target::Room(_) | Target::Broadcast => return 0,
        };
        let mut closed = 0;
        for e in entries {
            if e.mailbox.close_after_pending(CloseCode::PolicyViolation) {
                tracing::info!(client = %e.id_str, code = CloseCode::PolicyViolation.code(), "disconnect requested");
                closed += 1;
            }
        }
        if publish {
            if let Some(env) = Envelope::disconnect(self.server_id.to_string(), target.clone()) {
                self.telemetry.bus_published();
                self.bus.publish(env);
            }
        }
        closed
    }
}

impl Shared {
    /// Who is in `room` (it must match `presence_rooms`): from this instance on the embedded bus, from Redis on
    /// the Redis bus (after this instance's own pending joins and leaves are written, so it reads its own
    /// changes).
    pub(crate) async fn presence(&self, room: &RoomName) -> Result<Presence, PresenceError> {
        if !self.presence.is_presence_room(room.as_str()) {
            return Err(PresenceError::NotEnabled);
        }
        let max = self.config.presence_max_members;
        match &self.presence_store {
            PresenceStore::Local => Ok(self.presence.query(room, max)),
            PresenceStore::Redis(r) => r.query(room, max).await,
            PresenceStore::None => Err(PresenceError::NotEnabled),
        }
    }

    /// Queues `member_joined` / `member_left` about `client` for the room's local members (but that client).
    pub(crate) fn deliver_presence(&self, room: &RoomName, event_name: &str, client: &ClientId, data: &RawValue) {
        let text = TextFrame::new(&outbound::message(event_name, Some(data)));
        self.registry.deliver(
            &Target::Room(room.clone()),
            &text,
            &Exclude::from_ids(std::slice::from_ref(client)),
        );
    }
}

/// Carries out presence changes on the embedded bus: `member_joined` / `member_left` for the room's other
/// members (with `presence_events`, while the room has at most `presence_max_members` clients counting the one
/// that joined or left). Runs until `stop`, or the server is gone.
pub(crate) async fn local_presence_events(shared: std::sync::Weak<Shared>, stop: CancellationToken) {
    loop {
        let Some(local) = shared.upgrade().map(|s| s.presence.clone()) else {
            return;
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = local.changed() => {}
        }
        drop(local);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let pending = shared.presence.take();
        if !shared.config.presence_events {
            continue;
        }
        for c in pending.changes {
            let count = shared.presence.count(c.room.as_str()) + usize::from(!c.joined);
            if count > shared.config.presence_max_members {
                continue;
            }
            let name = if c.joined {
                event::MEMBER_JOINED
            } else {
                event::MEMBER_LEFT
            };
            let data = outbound::member_data(
                c.room.as_str(),
                &c.client.to_string(),
                c.user.as_ref().map(|u| u.as_str()),
            );
            if let Ok(data) = RawValue::from_string(data) {
                shared.deliver_presence(&c.room, name, &c.client, &data);
            }
        }
    }
}

/// Whether `b` can be delivered in one batch with `a`: room deliveries to the same room, excluding the same
/// clients, both with or both without a history position.
fn same_run(a: &Envelope, b: &Envelope) -> bool {
    a.action == Action::Deliver
        && b.action == Action::Deliver
        && matches!(a.target, Target::Room(_))
        && a.target == b.target
        && a.exclude == b.exclude
        && a.position.is_some() == b.position.is_some()
}

impl Shared {
    /// Delivers a run of room envelopes (see [`same_run`]) with one visit of each member's queue.
    fn deliver_run(&self, run: &[&Envelope]) {
        let Some(first) = run.first() else {
            return;
        };
        let Target::Room(room) = &first.target else {
            run.iter().for_each(|e| self.deliver(e));
            return;
        };
        let mut frames = Vec::with_capacity(run.len());
        for env in run {
            if !event::is_valid_application_event(&env.event) {
                self.count_dropped();
                continue;
            }
            let text = match &env.position {
                Some(at) => outbound::history_message(
                    &env.event,
                    &env.data,
                    room.as_str(),
                    StreamPos {
                        offset: at.offset,
                        epoch: &at.epoch,
                    },
                ),
                None => outbound::message(&env.event, Some(&env.data)),
            };
            frames.push(TextFrame::new(&text));
        }
        // History messages go out under the joiners' lock, as one delivery; a room with a recovering join takes
        // the one-by-one path (its joiners hold or filter message by message).
        let joiners = first.position.is_some().then(|| self.joiners.lock());
        if joiners.as_ref().is_some_and(|j| j.contains_key(room)) {
            drop(joiners);
            run.iter().for_each(|e| self.deliver(e));
            return;
        }
        self.registry
            .deliver_all(&first.target, &frames, &Exclude::from_ids(&first.exclude));
        drop(joiners);
        for _ in &frames {
            self.telemetry.bus_delivered();
        }
    }
}

impl Deliver for Shared {
    fn deliver_batch(&self, envelopes: &[&Envelope]) {
        let mut rest = envelopes;
        while let Some(first) = rest.first() {
            let len = rest.iter().take_while(|e| same_run(first, e)).count().max(1);
            let (run, tail) = rest.split_at(len.min(rest.len()));
            if run.len() > 1 {
                self.deliver_run(run);
            } else {
                self.deliver(first);
            }
            rest = tail;
        }
    }

    fn deliver(&self, env: &Envelope) {
        if env.action == Action::Disconnect {
            self.disconnect_target(&env.target, false);
            self.telemetry.bus_delivered();
            return;
        }
        if env.action == Action::Presence {
            // Envelope::parse checked the event (member_joined / member_left) and rebuilt the data.
            if let (Target::Room(room), Some(client)) = (&env.target, env.exclude.first()) {
                if self.config.presence_events {
                    self.deliver_presence(room, &env.event, client, &env.data);
                }
            }
            self.telemetry.bus_delivered();
            return;
        }
        // Envelope::parse already refused reserved names; envelopes built in-process are checked here.
        if !event::is_valid_application_event(&env.event) {
            self.count_dropped();
            return;
        }
        let exclude = match env.target {
            Target::Room(_) | Target::Broadcast | Target::User(_) => Exclude::from_ids(&env.exclude),
            Target::Client(_) => Exclude::none(),
        };
        match (&env.position, &env.target) {
            (Some(at), Target::Room(room)) => {
                let text = TextFrame::new(&outbound::history_message(
                    &env.event,
                    &env.data,
                    room.as_str(),
                    StreamPos {
                        offset: at.offset,
                        epoch: &at.epoch,
                    },
                ));
                // Under the joiners' lock: a recovering join either holds this message or is already in the room.
                let mut joiners = self.joiners.lock();
                let mut late = Vec::new();
                if let Some(list) = joiners.get_mut(room) {
                    list.retain(|j| self.joiner_sees(j, at.offset, &text, &exclude, &mut late));
                    if list.is_empty() {
                        joiners.remove(room);
                    }
                }
                if late.is_empty() {
                    self.registry.deliver(&env.target, &text, &exclude);
                } else {
                    late.extend_from_slice(&env.exclude);
                    self.registry.deliver(&env.target, &text, &Exclude::from_ids(&late));
                }
            }
            _ => {
                let text = TextFrame::new(&outbound::message(&env.event, Some(&env.data)));
                self.registry.deliver(&env.target, &text, &exclude);
            }
        }
        self.telemetry.bus_delivered();
    }

    fn count_dropped(&self) {
        self.telemetry.bus_dropped();
    }
}
