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
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::todo
    )
)]
#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod auth;
pub mod bus;
pub mod client;
mod client_info;
mod config;
mod connection;
pub mod crypto;
mod emitter;
pub mod history;
/// Entry points of the fuzz targets in `fuzz/` (feature `fuzzing`); not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    /// What presence reads back from Redis (`bus::redis::presence`).
    pub use crate::bus::redis::presence::fuzz::check as redis_presence;
    pub use crate::connection::fuzz::check as connection_core;
    /// The two crypto backends agree (needs the `aws-lc` feature).
    #[cfg(feature = "aws-lc")]
    pub use crate::crypto::backend::check_backends_agree as backends_agree;
}
pub mod hooks;
mod ignis_compat;
mod limits;
mod mailbox;
pub mod metrics;
#[cfg(test)]
mod module_graph;
pub mod presence;
pub mod protocol;
pub mod redact;
mod registry;
mod roomkeys;
mod serde_str;
mod serve;
mod server;
pub mod session;
mod shared;
mod telemetry;
pub mod wsenc;

pub use bus::{Bus, Inbox, LocalBus};
pub use client_info::{ClientInfo, ClientState};
pub use config::{Config, ConfigError, MAX_HISTORY_SIZE, MAX_PRESENCE_MEMBERS};
pub use emitter::{Emitter, EmitterError};
pub use hooks::{
    AuthRequest, Connected, Disconnected, Hook, HookError, Identity, IncomingMessage, Outgoing, RoomRequest,
    Transformed, UpgradeRequest,
};
pub use ignis_compat::IgnisCompat;
pub use limits::Rate;
pub use protocol::{ClientId, CloseCode, RoomName, UserId};
pub use server::{ReloadError, RoomError, Server, ServerBuilder};
pub use session::{HandshakeOutcome, HandshakeRequest, Session};
pub use shared::SendError;
pub use telemetry::StatsSnapshot;
pub use wsenc::WsEnc1;

/// The README's code blocks, compiled as doc-tests so the documented example keeps building.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The documentation site's Rust code blocks (docs/), compiled as doc-tests like the README's.
#[cfg(doctest)]
pub mod docs_doctests {
    /// docs/embedding.md
    #[doc = include_str!("../docs/embedding.md")]
    pub struct Embedding;
    /// docs/encryption.md
    #[doc = include_str!("../docs/encryption.md")]
    pub struct Encryption;
    /// docs/scaling.md
    #[doc = include_str!("../docs/scaling.md")]
    pub struct Scaling;
    /// docs/clients.md
    #[doc = include_str!("../docs/clients.md")]
    pub struct Clients;
}
