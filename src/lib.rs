//! sealcast: encryption-first WebSocket messaging server.

pub mod crypto;
