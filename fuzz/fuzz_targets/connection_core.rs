#![no_main]

//! `connection_core`: arbitrary input sequences driven into the connection's state machine, its invariants checked
//! after every step (the check and its oracles: `src/connection/fuzz.rs` in the library).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sealcast::fuzzing::connection_core(data));
