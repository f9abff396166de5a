//! The server in one process through real sockets: one test binary for every in-process server suite (linking one
//! binary instead of one per suite). Each module is one suite; the harness is `tests/common/`.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/https.rs"]
mod https;

mod api;
mod auth;
mod auth_proxy;
mod client_reconnect;
mod delivery;
mod embedding;
mod encryption;
mod guarantees;
mod hooks;
mod hostile;
mod jwks;
mod key_reload;
mod lifecycle;
mod limits;
mod local_bus;
mod presence;
mod roomkeys;
mod rooms;
mod wire;
