#![no_main]

use libfuzzer_sys::fuzz_target;

// Not in `sealcast_fuzz`: see the note in `src/lib.rs`.
#[path = "../src/config.rs"]
mod config;

fuzz_target!(|data: &[u8]| config::check(data));
