//! The checks behind sealcast's fuzz targets.
//!
//! Each module has a `check(&[u8])` that feeds one input to a parser and **asserts** what must hold for it (an
//! oracle, not only "no panic"): round trips, reserved names never accepted, and for the record layer that nothing
//! but the exact valid next record is ever accepted. The fuzz targets in `fuzz_targets/` call these; the main
//! crate's `tests/properties/` test binary includes this file with `#[path]`; its `fuzz_corpus.rs` replays every
//! committed corpus and crash input through the same checks, so a crash found once stays fixed.
//!
//! These are the checks of the library's parsers. The `config` target's check (`src/config.rs`) is not part of
//! this crate's library: it needs `sealcast-server` (the settings), which the library's tests that include this
//! file cannot depend on. Its target includes it with `#[path]`, and so does
//! `crates/sealcast-server/tests/fuzz_config.rs`, which replays its corpus and crash inputs.

pub mod auth_token;
pub mod authenticate;
pub mod client_message;
pub mod group_binary;
pub mod group_open;
pub mod ignis_open;
pub mod record_open;
pub mod redis_envelope;
pub mod ws_frame;

/// A target's check: panics when an oracle fails.
pub type Check = fn(&[u8]);

/// The fuzz targets of the library's parsers, by name, with their checks (the directory names under `corpus/` and
/// `regressions/`); `config` is the one other target.
pub const TARGETS: [(&str, Check); 9] = [
    ("client_message", client_message::check),
    ("authenticate", authenticate::check),
    ("record_open", record_open::check),
    ("group_open", group_open::check),
    ("group_binary", group_binary::check),
    ("redis_envelope", redis_envelope::check),
    ("ignis_open", ignis_open::check),
    ("auth_token", auth_token::check),
    ("ws_frame", ws_frame::check),
];
