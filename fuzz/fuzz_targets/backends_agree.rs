#![no_main]

//! `backends_agree`: aws-lc and the portable RustCrypto path seal, open, derive public keys and compute shared
//! secrets identically (the check: `check_backends_agree` in the library's `src/crypto/backend.rs`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sealcast::fuzzing::backends_agree(data));
