//! The checks behind sealcast's fuzz targets.
//!
//! Each module has a `check(&[u8])` that feeds one input to a parser and **asserts** what must hold for it (an
//! oracle, not only "no panic"): round trips, reserved names never accepted, and for the record layer that nothing
//! but the exact valid next record is ever accepted. The fuzz targets in `fuzz_targets/` call these; the main
//! crate's `tests/properties/` test binary includes this file with `#[path]`; its `fuzz_corpus.rs` replays every
//! committed corpus and crash input through the same checks, so a crash found once stays fixed.

pub mod auth_token;
pub mod authenticate;
pub mod client_message;
pub mod config;
pub mod ignis_open;
pub mod record_open;
pub mod redis_envelope;

/// A target's check: panics when an oracle fails.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name, with their checks (the directory names under `corpus/` and `regressions/`).
pub const TARGETS: [(&str, Check); 7] = [
    ("client_message", client_message::check),
    ("authenticate", authenticate::check),
    ("record_open", record_open::check),
    ("redis_envelope", redis_envelope::check),
    ("ignis_open", ignis_open::check),
    ("auth_token", auth_token::check),
    ("config", config::check),
];
