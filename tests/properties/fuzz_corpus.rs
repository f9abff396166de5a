//! Replays the fuzz targets' committed inputs through the targets' own checks: every crash input under
//! `fuzz/regressions/<target>/` and every seed under `fuzz/corpus/<target>/`. The checks are the same code the
//! cargo-fuzz targets run (`fuzz/src/`), so a crash the fuzzers found once is tested on every `cargo test`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use crate::fuzz_checks;

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    files
}

/// Runs every file of `fuzz/<kind>/<target>/` through the target's check; returns how many ran.
fn replay(kind: &str) -> Vec<(&'static str, usize)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind);
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    for (name, check) in fuzz_checks::TARGETS {
        let files = inputs(&root.join(name));
        for file in &files {
            let data = std::fs::read(file).expect("readable input");
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failures.push(file.display().to_string());
            }
        }
        counts.push((name, files.len()));
    }
    assert!(failures.is_empty(), "fuzz inputs failing their checks: {failures:#?}");
    counts
}

#[test]
fn every_crash_input_stays_fixed() {
    let counts = replay("regressions");
    assert_eq!(counts.len(), fuzz_checks::TARGETS.len());
}

#[test]
fn every_seed_passes_its_target() {
    for (name, n) in replay("corpus") {
        assert!(n >= 5, "the {name} seed corpus has only {n} inputs");
    }
}

#[test]
fn record_seeds_reach_the_valid_records() {
    // The harness asserts that the opener agrees with its model; here the seeds must also get records through.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/record_open");
    for (seed, accepted) in [
        ("kat_c2s", 1),
        ("kat_s2c", 1),
        ("kat_s2c_sealed", 1),
        ("kat_c2s_twice", 1),
        ("sequence", 3),
        ("limit_auto_ku", 5),
        ("key_update", 5),
        ("reorder", 0),
        ("replay", 1),
        ("reordered_keys", 1),
        ("spaced", 1),
        ("downgrade", 0),
    ] {
        let data = std::fs::read(root.join(seed)).expect("seed present");
        assert_eq!(fuzz_checks::record_open::run(&data), accepted, "{seed}");
    }
}

#[test]
fn group_seeds_reach_the_valid_record_and_the_edits_are_refused() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/group_open");
    for (seed, accepted) in [
        ("valid", true),
        ("valid_spaced", true),
        ("valid_body_first", true),
        ("body_flipped", false),
        ("no_body", false),
        ("seq_replayed", false),
    ] {
        let data = std::fs::read(root.join(seed)).expect("seed");
        let (mut opener, _) = fuzz_checks::group_open::session();
        assert_eq!(opener.open(&data).is_ok_and(|m| m.is_some()), accepted, "{seed}");
    }
}

#[test]
fn batched_group_seeds_reach_the_valid_batch_and_the_edits_are_refused() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/group_open");
    for (seed, messages) in [
        ("batch_valid", 2),
        ("batch_one_body_form", 1),
        ("batch_reordered", 0),
        ("batch_dropped", 0),
        ("batch_empty", 0),
        ("batch_body_and_bodies", 0),
    ] {
        let data = std::fs::read(root.join(seed)).expect("seed");
        let (mut opener, _) = fuzz_checks::group_open::session();
        assert_eq!(opener.open_all(&data).map_or(0, |m| m.len()), messages, "{seed}");
        fuzz_checks::group_open::check(&data);
    }
}

#[test]
fn frame_seeds_decode_to_the_expected_items_and_errors() {
    use sealcast::protocol::frame::{FrameError, Inbound};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ws_frame");
    let decode = |seed: &str| {
        let data = std::fs::read(root.join(seed)).expect("seed");
        fuzz_checks::ws_frame::run(&data[2..], 65_536, data[1])
    };
    let text = decode("fragmented_with_ping");
    assert_eq!(
        text.items,
        [Inbound::Ping("p".into()), Inbound::Text("hello world".into())]
    );
    assert_eq!(decode("ping_pong_close").items.last(), Some(&Inbound::Close));
    assert_eq!(decode("utf8_split_across_fragments").items, [Inbound::Text("é".into())]);
    assert_eq!(decode("unmasked").error, Some(FrameError::Protocol));
    assert_eq!(decode("invalid_utf8").error, Some(FrameError::InvalidUtf8));
    assert_eq!(decode("len64_msb_set").error, Some(FrameError::TooLarge));
    assert!(decode("incomplete_payload").buffered);
    // The limit is the seed's first byte: 16 bytes here, announced over it before any payload arrives.
    let data = std::fs::read(root.join("too_large_header_only")).expect("seed");
    assert_eq!(
        fuzz_checks::ws_frame::run(&data[2..], 16, 0).error,
        Some(FrameError::TooLarge)
    );
}

#[test]
fn binary_group_seeds_reach_the_valid_frame_and_the_edits_are_refused() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/group_binary");
    let seeds = [
        "valid",
        "truncated",
        "extended",
        "wrong_type",
        "zero_bodies",
        "count_over",
    ];
    for seed in seeds
        .into_iter()
        .chain(["seq_changed", "body_flipped", "header_flipped", "head_only"])
    {
        let data = std::fs::read(root.join(seed)).expect("seed");
        let (mut opener, _) = fuzz_checks::group_binary::session();
        let messages = opener.open_binary(&data).map_or(0, |m| m.len());
        assert_eq!(messages, if seed == "valid" { 2 } else { 0 }, "{seed}");
        fuzz_checks::group_binary::check(&data);
    }
}
