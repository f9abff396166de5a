//! Publishing to a sealcast fleet from outside it (a worker, a cron job, another service), like the reference's
//! `WebSocketEmitter`: envelopes carry `serverId: "emitter"`, so every instance delivers them.

use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::bus::redis::history::{self as redis_history, Appended, Limits};
use crate::bus::redis::{check_endpoint, publish_cmd, Codec, Conn};
use crate::bus::{BusMode, RedisBusError, RedisEndpoint};
use crate::history::{IdKey, Published};
use crate::protocol::envelope::{EMITTER_SERVER_ID, ROOM_PREFIX};
use crate::protocol::{event, room, ClientId, Envelope, RoomName, Target, UserId};

/// Why an emit failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitterError {
    /// The event name is reserved by the protocol (`connected`, `encrypted`, ...), empty or too long.
    #[error("event name {0:?} is reserved or invalid; use another name")]
    Event(String),
    /// The payload could not be serialised to JSON.
    #[error("payload is not serialisable to JSON: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The addressee cannot exist: the named `client id` is not a UUID, or the `user id` or `room name` is empty
    /// or longer than [`MAX_TARGET_LEN`](crate::protocol::envelope::MAX_TARGET_LEN) bytes. Every instance would
    /// refuse such an envelope, so nothing was sent.
    #[error(
        "invalid {0}: pass a client id as the client received it in `connected` (a UUID), or a user id or room \
         name of 1 to 1024 bytes"
    )]
    InvalidTarget(&'static str),
    /// The endpoint or secret is unusable.
    #[error(transparent)]
    Config(#[from] RedisBusError),
    /// Redis refused the command or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The idempotency key is empty or longer than 64 bytes.
    #[error("idempotency key must be 1 to 64 bytes long")]
    InvalidIdempotencyKey,
    /// The message is too large to carry its position through the bus (the envelope limit); nothing was sent.
    #[error("message too large for the bus")]
    TooLarge,
}

/// Sends to clients, users, rooms or everyone through Redis, following the fleet's [`BusMode`]. Cheap to clone
/// (one multiplexed connection).
///
/// ```no_run
/// # async fn run() -> Result<(), sealcast::EmitterError> {
/// use sealcast::bus::RedisEndpoint;
/// let emitter = sealcast::Emitter::connect(RedisEndpoint::single("redis://127.0.0.1:6379")).await?;
/// emitter.to_room("lobby", "news", &serde_json::json!({"title": "hi"}), &[]).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Emitter {
    conn: Conn,
    mode: BusMode,
    codec: Codec,
    /// One Redis server (no hash slots), not a cluster.
    single: bool,
    history: Option<History>,
}

/// The fleet's room history, as this emitter keeps it.
#[derive(Clone)]
struct History {
    rooms: Vec<String>,
    limits: Limits,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("mode", &self.mode)
            .field("signed", &self.codec.is_signed())
            .finish()
    }
}

impl Emitter {
    /// Connects in the endpoint's default mode (classic for one server, sharded for a cluster).
    pub async fn connect(endpoint: RedisEndpoint) -> Result<Self, EmitterError> {
        let mode = endpoint.default_mode();
        Self::connect_with(endpoint, mode, None).await
    }

    /// Connects with an explicit mode and, when the fleet uses one, the bus secret.
    pub async fn connect_with(
        endpoint: RedisEndpoint,
        mode: BusMode,
        secret: Option<&[u8]>,
    ) -> Result<Self, EmitterError> {
        check_endpoint(&endpoint)?;
        let codec = Codec::new(secret)?;
        let conn = Conn::open(&endpoint, None::<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>).await?;
        Ok(Self {
            conn,
            mode,
            codec,
            single: matches!(endpoint, RedisEndpoint::Single(_)),
            history: None,
        })
    }

    /// Keeps this emitter's messages to rooms with history as the fleet's servers do: pass the servers'
    /// `history_rooms`, `history_size` and `history_ttl`. Such a message then gets the room's next offset, is
    /// appended to the room's stream in the same step as it is published, and is replayed to recovering clients.
    /// Without this, a message to a room with history is delivered live without an offset and is not kept: a
    /// client recovering the room is not told that it missed it.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), sealcast::EmitterError> {
    /// use std::time::Duration;
    /// use sealcast::bus::RedisEndpoint;
    /// let emitter = sealcast::Emitter::connect(RedisEndpoint::single("redis://127.0.0.1:6379"))
    ///     .await?
    ///     .with_history(vec!["chat:*".into()], 100, Duration::from_secs(300));
    /// let published = emitter.publish("chat:1", "news", &"hello", Some("news-42")).await?;
    /// println!("offset {:?}", published.position.map(|p| p.offset));
    /// # Ok(()) }
    /// ```
    pub fn with_history(mut self, rooms: Vec<String>, size: usize, ttl: Duration) -> Self {
        self.history = Some(History {
            rooms,
            limits: Limits { size, ttl },
        });
        self
    }

    /// The pub/sub flavour used.
    pub fn mode(&self) -> BusMode {
        self.mode
    }

    /// Sends to one connection. Returns how many subscribers (instances) Redis handed the message to.
    /// [`EmitterError::InvalidTarget`] if `client_id` is not a client id (a UUID).
    pub async fn to_client<T: Serialize + ?Sized>(
        &self,
        client_id: &str,
        event: &str,
        data: &T,
    ) -> Result<usize, EmitterError> {
        let id = ClientId::parse(client_id).ok_or(EmitterError::InvalidTarget("client id"))?;
        self.emit(Target::Client(id), event, data, &[]).await
    }

    /// Sends to every session of a user. [`EmitterError::InvalidTarget`] if `user_id` is empty or too long.
    pub async fn to_user<T: Serialize + ?Sized>(
        &self,
        user_id: &str,
        event: &str,
        data: &T,
    ) -> Result<usize, EmitterError> {
        let user = UserId::parse(user_id).ok_or(EmitterError::InvalidTarget("user id"))?;
        self.emit(Target::User(user), event, data, &[]).await
    }

    /// Sends to every member of a room except the clients in `exclude` (entries that are not client ids could
    /// never match one and are left out). [`EmitterError::InvalidTarget`] if `room` is empty or too long.
    pub async fn to_room<T: Serialize + ?Sized>(
        &self,
        room: &str,
        event: &str,
        data: &T,
        exclude: &[&str],
    ) -> Result<usize, EmitterError> {
        let room = RoomName::parse(room).ok_or(EmitterError::InvalidTarget("room name"))?;
        if let Some(history) = self.history_of(&room) {
            let envelope = self.envelope(Target::Room(room), event, data, exclude)?;
            return Ok(self.append(&envelope, None, history).await?.receivers);
        }
        self.emit(Target::Room(room), event, data, exclude).await
    }

    /// Publishes to a room, like [`Self::to_room`], and tells what it came to, like
    /// [`Server::publish`](crate::Server::publish): in a room with history ([`Self::with_history`]) the message's
    /// offset and epoch. With an `idempotency_key` (1 to 64 bytes), a publish whose key was already used for this
    /// room within the history TTL — by this emitter, another one, or a server's `Server::publish` or HTTP API
    /// `idempotency_key` — is not delivered again, and the answer is the original one with
    /// [`Published::duplicate`] set.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        room: &str,
        event: &str,
        data: &T,
        idempotency_key: Option<&str>,
    ) -> Result<Published, EmitterError> {
        let room = RoomName::parse(room).ok_or(EmitterError::InvalidTarget("room name"))?;
        let key = idempotency_key
            .map(|k| IdKey::of_server(&room, k).ok_or(EmitterError::InvalidIdempotencyKey))
            .transpose()?;
        let history = self.history_of(&room);
        let envelope = self.envelope(Target::Room(room), event, data, &[])?;
        let answer = match (history, key) {
            (Some(history), key) => self.append(&envelope, key.as_ref(), history).await?,
            (None, Some(key)) => {
                let keys = redis_history::room_keys(&envelope.target.channel(), self.single).ok_or(
                    EmitterError::InvalidTarget("room name (braces without a hash tag, on a cluster)"),
                )?;
                let ttl = self.history.as_ref().map_or(DEFAULT_KEY_TTL, |h| h.limits.ttl);
                let payload = self.codec.encode(&envelope);
                let cmd = redis_history::claim_cmd(&keys, &key, ttl, payload, self.mode);
                let mut conn = self.conn.clone();
                redis_history::claim_answer(&conn.run(&cmd).await?)?
            }
            (None, None) => {
                self.publish_envelope(&envelope).await?;
                Appended {
                    position: None,
                    duplicate: false,
                    receivers: 0,
                }
            }
        };
        Ok(Published {
            position: answer.position,
            duplicate: answer.duplicate,
        })
    }

    /// The fleet's history settings if `room` keeps history (and its keys can live on its channel's slot).
    fn history_of(&self, room: &RoomName) -> Option<&History> {
        let history = self.history.as_ref()?;
        let channel = format!("{ROOM_PREFIX}{}", room.as_str());
        (room::allowed(&history.rooms, room.as_str()) && redis_history::room_keys(&channel, self.single).is_some())
            .then_some(history)
    }

    /// Runs the append script: the message's offset, its entry in the room's stream, its publication.
    async fn append(
        &self,
        envelope: &Envelope,
        key: Option<&IdKey>,
        history: &History,
    ) -> Result<Appended, EmitterError> {
        let keys = redis_history::room_keys(&envelope.target.channel(), self.single)
            .ok_or(EmitterError::InvalidTarget("room name"))?;
        let head = redis_history::envelope_head(&self.codec, envelope).map_err(|_| EmitterError::TooLarge)?;
        let cmd = redis_history::append_cmd(&keys, envelope, head, key, history.limits, self.mode);
        let mut conn = self.conn.clone();
        Ok(redis_history::append_answer(&conn.run(&cmd).await?)?)
    }

    /// Sends to every authenticated client except those in `exclude` (entries that are not client ids are left
    /// out).
    pub async fn broadcast<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
        exclude: &[&str],
    ) -> Result<usize, EmitterError> {
        self.emit(Target::Broadcast, event, data, exclude).await
    }

    async fn emit<T: Serialize + ?Sized>(
        &self,
        target: Target,
        event_name: &str,
        data: &T,
        exclude: &[&str],
    ) -> Result<usize, EmitterError> {
        let envelope = self.envelope(target, event_name, data, exclude)?;
        self.publish_envelope(&envelope).await
    }

    fn envelope<T: Serialize + ?Sized>(
        &self,
        target: Target,
        event_name: &str,
        data: &T,
        exclude: &[&str],
    ) -> Result<Envelope, EmitterError> {
        if !event::is_valid_application_event(event_name) {
            return Err(EmitterError::Event(event_name.to_owned()));
        }
        let data: Box<RawValue> = serde_json::value::to_raw_value(data)?;
        Ok(Envelope {
            server_id: EMITTER_SERVER_ID.to_owned(),
            target,
            event: event_name.to_owned(),
            data,
            exclude: exclude.iter().filter_map(|id| ClientId::parse(id)).collect(),
            action: crate::protocol::Action::Deliver,
            position: None,
        })
    }

    /// Publishes without history; how many subscribers Redis handed it to.
    async fn publish_envelope(&self, envelope: &Envelope) -> Result<usize, EmitterError> {
        let payload = self.codec.encode(envelope);
        let channel = envelope.target.channel();
        let mut conn = self.conn.clone();
        let receivers: i64 = conn.run(&publish_cmd(self.mode, &channel, &payload)).await?;
        Ok(usize::try_from(receivers).unwrap_or(0))
    }
}

/// How long an idempotency key outside history is remembered when the emitter was given no history settings:
/// the servers' default `history_ttl`.
const DEFAULT_KEY_TTL: Duration = Duration::from_secs(300);
