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
use crate::history::{HistoryError, HistoryPage, IdKey, MemoryHistory, Published, Recovery, StreamPosition};
use crate::hooks::{Authenticator, MessageHandler, OnConnected, OnDisconnected, OutboundTransformer, RoomValidator};
use crate::limits::ConnectionLimits;
use crate::mailbox::Mailbox;
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
    pub(crate) history: Option<Arc<MemoryHistory>>,
}

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

fn position_of(offset: u64, epoch: &str) -> StreamPosition {
    StreamPosition {
        offset,
        epoch: epoch.to_owned(),
    }
}

impl Shared {
    /// True when `room` keeps history (it matches `history_rooms` and the bus has a store).
    pub(crate) fn has_history(&self, room: &str) -> bool {
        self.history.is_some()
            && !self.config.history_rooms.is_empty()
            && room::allowed(&self.config.history_rooms, room)
    }

    /// Publishes to a room on every instance: in a room with history the message is appended and delivered under
    /// the room's lock (so offsets are delivered in order), and a `key` already used within `history_ttl` makes
    /// it a duplicate that is not delivered again.
    pub(crate) fn publish_room(
        &self,
        room: RoomName,
        event_name: &str,
        data: Box<RawValue>,
        exclude: Vec<ClientId>,
        key: Option<IdKey>,
    ) -> Result<Published, SendError> {
        check_event(event_name)?;
        let now = Instant::now();
        let ttl = self.config.history_ttl;
        let store = match &self.history {
            Some(store) if self.has_history(room.as_str()) => store,
            store => {
                if let (Some(store), Some(key)) = (store, key) {
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
        let target = Target::Room(room);
        self.registry.deliver(&target, &frame, &Exclude::from_ids(&exclude));
        self.telemetry.fanout(started.elapsed());
        let position = position_of(offset, &epoch);
        // Still under the room's lock: the other instances get the messages in offset order too.
        self.telemetry.bus_published();
        self.bus.publish(Envelope {
            server_id: self.server_id.to_string(),
            target,
            event: event_name.to_owned(),
            data,
            exclude,
            action: Action::Deliver,
            position: Some(position.clone()),
        });
        if let Some(key) = key {
            store.remember(key, Some(position.clone()), now, ttl);
        }
        drop(s);
        Ok(Published {
            position: Some(position),
            duplicate: false,
        })
    }

    /// Adds a client to a room. In a room with history this happens under the room's lock, and a recovery from
    /// `recover` (the last offset the client received, and its epoch) queues every missed message first: a
    /// message published meanwhile waits for the lock, so it comes after the replay, never in it too, never lost.
    pub(crate) fn join_room(
        &self,
        id: &ClientId,
        mailbox: &Mailbox,
        room: RoomName,
        recover: Option<(u64, &str)>,
    ) -> RoomJoin {
        let store = match &self.history {
            Some(store) if self.has_history(room.as_str()) => store,
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

    /// A page of a room's history.
    pub(crate) fn history_page(
        &self,
        room: &RoomName,
        since: Option<&StreamPosition>,
        limit: Option<usize>,
    ) -> Result<HistoryPage, HistoryError> {
        let store = match &self.history {
            Some(store) if self.has_history(room.as_str()) => store,
            _ => return Err(HistoryError::NotEnabled),
        };
        let size = self.config.history_size;
        let limit = limit.unwrap_or(size).min(size);
        store.page(room, Instant::now(), self.config.history_ttl, since, limit)
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

impl Deliver for Shared {
    fn deliver(&self, env: &Envelope) {
        if env.action == Action::Disconnect {
            self.disconnect_target(&env.target, false);
            self.telemetry.bus_delivered();
            return;
        }
        // Envelope::parse already refused reserved names; envelopes built in-process are checked here.
        if !event::is_valid_application_event(&env.event) {
            self.count_dropped();
            return;
        }
        let text = match (&env.position, &env.target) {
            (Some(at), Target::Room(room)) => TextFrame::new(&outbound::history_message(
                &env.event,
                &env.data,
                room.as_str(),
                StreamPos {
                    offset: at.offset,
                    epoch: &at.epoch,
                },
            )),
            _ => TextFrame::new(&outbound::message(&env.event, Some(&env.data))),
        };
        let exclude = match env.target {
            Target::Room(_) | Target::Broadcast | Target::User(_) => Exclude::from_ids(&env.exclude),
            Target::Client(_) => Exclude::none(),
        };
        self.registry.deliver(&env.target, &text, &exclude);
        self.telemetry.bus_delivered();
    }

    fn count_dropped(&self) {
        self.telemetry.bus_dropped();
    }
}
