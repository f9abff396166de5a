//! What the server tells about a connection: its lifecycle state and a snapshot of it, as queries and hooks
//! see them.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::redact::debug_redacted;

debug_redacted!(ClientInfo { id, user_id, state, rooms, encrypted, connected_at, idle; metadata });

/// Where a connection is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientState {
    /// Connected, no `authenticate` yet.
    Unauthorized,
    /// Authenticator or handshake running.
    Authenticating,
    /// Established: receives messages.
    Authenticated,
}

impl ClientState {
    /// The reference's state name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Authenticating => "authenticating",
            Self::Authenticated => "authenticated",
        }
    }
}

/// A snapshot of one connection, as returned by [`crate::Server::client`] and friends.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientInfo {
    /// Connection id (a UUID).
    pub id: String,
    /// The authenticated user, if any.
    pub user_id: Option<String>,
    /// Lifecycle state.
    pub state: ClientState,
    /// Rooms the client is in, sorted (its own-id room included).
    pub rooms: Vec<String>,
    /// Whether the session is encrypted.
    pub encrypted: bool,
    /// When the WebSocket was accepted.
    pub connected_at: SystemTime,
    /// Time since the client's last valid message.
    pub idle: Duration,
    /// Metadata returned by the authenticator (`null` before authentication).
    pub metadata: Value,
}
