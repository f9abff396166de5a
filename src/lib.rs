//! # sealcast
//!
//! An encryption-first, horizontally scalable real-time messaging server. Clients connect over WebSocket,
//! authenticate after connecting, optionally run an encryption handshake, join rooms, and receive messages
//! addressed to one connection, to every session of a user, to a room, or to everyone. Several instances route
//! through a [`Bus`].
//!
//! Mount [`Server::router`] in an axum app and use the cloneable [`Server`] handle to send messages; see the
//! example on [`Server`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod bus;
mod config;
mod connection;
mod emitter;
pub mod hooks;
mod mailbox;
pub mod protocol;
mod registry;
mod server;
pub mod session;
mod stats;

pub use bus::{Bus, Inbox, LocalBus};
pub use config::{Config, ConfigError};
pub use emitter::{Emitter, EmitterError};
pub use hooks::{
    AuthRequest, Connected, Disconnected, Hook, HookError, Identity, IncomingMessage, Outgoing,
    RoomRequest, Transformed,
};
pub use protocol::CloseCode;
pub use registry::{ClientInfo, ClientState};
pub use server::{RoomError, SendError, Server, ServerBuilder};
pub use session::{HandshakeOutcome, HandshakeRequest, Session};
pub use stats::StatsSnapshot;
