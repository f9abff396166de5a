//! Publishing to a sealcast fleet from outside it (a worker, a cron job, another service), like the reference's
//! `WebSocketEmitter`: envelopes carry `serverId: "emitter"`, so every instance delivers them.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::bus::redis::{check_endpoint, publish_cmd, Codec, Conn};
use crate::bus::{BusMode, RedisBusError, RedisEndpoint};
use crate::protocol::envelope::EMITTER_SERVER_ID;
use crate::protocol::{event, ClientId, Envelope, RoomName, Target, UserId};

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
        Ok(Self { conn, mode, codec })
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
        self.emit(Target::Room(room), event, data, exclude).await
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
        if !event::is_valid_application_event(event_name) {
            return Err(EmitterError::Event(event_name.to_owned()));
        }
        let data: Box<RawValue> = serde_json::value::to_raw_value(data)?;
        let envelope = Envelope {
            server_id: EMITTER_SERVER_ID.to_owned(),
            target,
            event: event_name.to_owned(),
            data,
            exclude: exclude.iter().filter_map(|id| ClientId::parse(id)).collect(),
            action: crate::protocol::Action::Deliver,
            position: None,
        };
        let payload = self.codec.encode(&envelope);
        let channel = envelope.target.channel();
        let mut conn = self.conn.clone();
        let receivers: i64 = conn.run(&publish_cmd(self.mode, &channel, &payload)).await?;
        Ok(usize::try_from(receivers).unwrap_or(0))
    }
}
