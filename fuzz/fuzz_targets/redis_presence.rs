#![no_main]

//! `redis_presence`: what presence reads back from Redis (query answers, purge and heartbeat answers, an
//! instance's rooms set, member entries) through the worker's own readers, against an independent reading (the
//! check and its oracles: `src/bus/redis/presence/fuzz.rs` in the library).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sealcast::fuzzing::redis_presence(data));
