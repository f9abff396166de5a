//! Replays the `config` fuzz target's committed inputs through its own check (`fuzz/src/config.rs`, the code the
//! cargo-fuzz target runs): every crash input under `fuzz/regressions/config/` and every seed under
//! `fuzz/corpus/config/`. The other targets' inputs are replayed by the library's `tests/fuzz_corpus.rs`; this
//! one needs the settings, which live in this crate.

#[path = "../../../fuzz/src/config.rs"]
mod config;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Runs every file of `fuzz/<kind>/config/` through the check; returns how many ran.
fn replay(kind: &str) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join("config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    let failures: Vec<String> = files
        .iter()
        .filter(|file| {
            let data = std::fs::read(file).expect("readable input");
            catch_unwind(AssertUnwindSafe(|| config::check(&data))).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(failures.is_empty(), "fuzz inputs failing their checks: {failures:#?}");
    files.len()
}

#[test]
fn every_config_crash_input_stays_fixed() {
    assert!(replay("regressions") >= 2, "the config crash inputs are missing");
}

#[test]
fn every_config_seed_passes_the_target() {
    let n = replay("corpus");
    assert!(n >= 5, "the config seed corpus has only {n} inputs");
}
