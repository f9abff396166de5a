//! # sealcast-server
//!
//! The `sealcast` command (`sealcast serve`, `config check`, `token`, `keygen`, `emit`) is this crate's binary,
//! built on the [`sealcast`] library. Everything only the command needs lives here rather than in the library:
//! the command line (clap), the config file (TOML), log output (tracing-subscriber), the Prometheus exporter and
//! the global allocator.
//!
//! The library part is [`settings`]: the settings of `sealcast serve` (config file, `SEALCAST_*` environment
//! variables, flags) as pure code, so that the binary, its tests and the `config` fuzz target share it.
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

pub mod settings;

pub use settings::{Settings, SettingsError};
