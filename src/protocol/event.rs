//! Event names of the wire protocol.

/// Client → server: credentials (and, with wsenc/1, the client's ephemeral public key).
pub const AUTHENTICATE: &str = "authenticate";
/// Server → client: the session is established.
pub const CONNECTED: &str = "connected";
/// Reference constant; never sent by the server.
pub const DISCONNECT: &str = "disconnect";
/// Client → server: join rooms `{"rooms":[..]}`.
pub const JOIN: &str = "join";
/// Client → server: leave rooms `{"rooms":[..]}`.
pub const LEAVE: &str = "leave";
/// Server → client: `{"message": ".."}`.
pub const ERROR: &str = "error";
/// Client → server keep-alive.
pub const HEARTBEAT: &str = "heartbeat";
/// Both directions: a wsenc/1 record.
pub const ENCRYPTED: &str = "encrypted";
/// Inside a record: the sender switches to the next epoch's keys.
pub const KEY_UPDATE: &str = "key_update";
/// Client → server: publish to a joined room `{"room":R,"event":E,"data":D}`.
pub const PUBLISH: &str = "publish";

/// Client → server: fresh credentials before the current ones expire `{"token":..}`; rotates the session keys.
pub const REFRESH: &str = "refresh";
/// Server → client: the answer to every `join`, `{"rooms":[{"room":..}],"refused":[{"room":..,"reason":..}]}`.
pub const JOINED: &str = "joined";
/// Server → client: a `publish` that carried an `id` was accepted, `{"id":..}` (plus `offset`/`epoch` in a
/// history room).
pub const ACK: &str = "ack";
/// Server → client, inside a record of a session with group records (wsenc/1 §11): a room's key
/// `{"room":..,"epoch":..,"key":..}`.
pub const ROOM_KEY: &str = "room_key";

/// Client → server: who is in a room `{"room":R}`; server → client: the answer, `{"room","members","clients",
/// "users","truncated"}` (rooms matching `presence_rooms` only).
pub const PRESENCE: &str = "presence";
/// Server → client: a client joined a presence room the recipient is in, `{"room","client","user"}`.
pub const MEMBER_JOINED: &str = "member_joined";
/// Server → client: a client left a presence room the recipient is in (left, disconnected, was closed, or its
/// instance died), `{"room","client","user"}`.
pub const MEMBER_LEFT: &str = "member_left";

/// Names no application message may carry, whoever publishes it (client, server API, bus, emitter): delivering
/// one would confuse or kill encrypted sessions (wsenc/1 §8a).
pub const RESERVED: [&str; 16] = [
    AUTHENTICATE,
    CONNECTED,
    ENCRYPTED,
    KEY_UPDATE,
    ERROR,
    HEARTBEAT,
    JOIN,
    LEAVE,
    PUBLISH,
    REFRESH,
    JOINED,
    ACK,
    PRESENCE,
    MEMBER_JOINED,
    MEMBER_LEFT,
    ROOM_KEY,
];

/// True when `event` is one of [`RESERVED`].
pub fn is_reserved(event: &str) -> bool {
    RESERVED.contains(&event)
}

/// Longest application event name accepted anywhere (client publish, server API, bus).
pub const MAX_EVENT_LEN: usize = 256;

/// Longest `id` a client `publish` may carry, in bytes (the idempotency key).
pub const MAX_PUBLISH_ID_LEN: usize = 64;

/// Checks an application event name: non-empty, at most [`MAX_EVENT_LEN`] bytes, not reserved.
pub fn is_valid_application_event(event: &str) -> bool {
    !event.is_empty() && event.len() <= MAX_EVENT_LEN && !is_reserved(event)
}

/// The fixed `error` event texts; they never echo client input.
pub mod errors {
    /// The frame is not a JSON object with a string `event` (or a field has the wrong shape).
    pub const INVALID_MESSAGE_FORMAT: &str = "Invalid message format";
    /// A non-auth event before authentication finished.
    pub const NOT_AUTHENTICATED: &str = "Not authenticated";
    /// A second `authenticate`.
    pub const ALREADY_AUTHENTICATED: &str = "Already authenticated";
    /// The authenticator rejected the credentials.
    pub const AUTHENTICATION_FAILED: &str = "Authentication failed";
    /// The authenticator failed (error or panic).
    pub const AUTHENTICATION_ERROR: &str = "Authentication error";
    /// The handshake rejected the client's key material.
    pub const HANDSHAKE_FAILED: &str = "Encryption handshake failed";
    /// A client sent an event name the protocol reserves.
    pub const RESERVED_EVENT: &str = "Reserved event";
    /// Client publishing is disabled on this server.
    pub const PUBLISH_NOT_ALLOWED: &str = "Publish not allowed";
    /// The user already has `max_sessions_per_user` sessions (then close 1008).
    pub const TOO_MANY_SESSIONS: &str = "Too many sessions";
    /// The client published to a room it has not joined.
    pub const NOT_IN_ROOM: &str = "Not a member of room";
    /// The client published to a room outside its identity's room patterns (the token's `rooms` claim).
    pub const ROOM_NOT_ALLOWED: &str = "Room not allowed";
    /// The history store could not take a `publish` (Redis unreachable): nothing was delivered; retry with the
    /// same `id`.
    pub const PUBLISH_FAILED: &str = "Publish failed";
    /// A `presence` query for a room that does not match `presence_rooms`.
    pub const PRESENCE_NOT_ENABLED: &str = "Presence not enabled for room";
    /// The presence store could not answer (Redis unreachable).
    pub const PRESENCE_UNAVAILABLE: &str = "Presence unavailable";
}

/// The fixed `reason` texts of the `refused` entries of `joined`; they never echo client input.
pub mod refusals {
    /// The name is not joinable: empty, over 256 bytes, `ws:` prefix, control characters, or shaped like a client id.
    pub const INVALID_ROOM_NAME: &str = "Invalid room name";
    /// Outside the identity's room patterns (the token's `rooms` claim): the text of
    /// [`super::errors::ROOM_NOT_ALLOWED`].
    pub const ROOM_NOT_ALLOWED: &str = super::errors::ROOM_NOT_ALLOWED;
    /// The room validator did not allow it (or failed, or none is configured).
    pub const ROOM_REFUSED: &str = "Room refused";
    /// The client is already in `max_rooms_per_client` rooms.
    pub const TOO_MANY_ROOMS: &str = "Too many rooms";
}
