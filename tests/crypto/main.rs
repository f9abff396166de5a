//! wsenc/1's crypto without sockets: the spec's known answers (read from docs/spec/wsenc1.md), public vectors, the record layer, the handshake, hostile input.
//! One test binary; `scripts/test.sh` also runs `kat::`, `vectors::` and `handshake::` on the pure-Rust backend
//! (`--no-default-features`).

#[path = "../common/crypto.rs"]
mod common_crypto;

mod handshake;
mod kat;
mod records;
mod robustness;
mod spec;
mod vectors;
