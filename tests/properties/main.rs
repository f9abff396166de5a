//! Generated and committed inputs through the fuzz targets' oracles (`fuzz/src/`, included here once): property
//! tests of the wire protocol and of wsenc/1's parsers and record layer, and the replay of the fuzz corpora and
//! crash inputs. proptest keeps its regressions for `tests/properties/<module>.rs` in
//! `tests/proptest-regressions/<module>.txt` (its default `SourceParallel` layout for a `main.rs` crate).

#[path = "../../fuzz/src/lib.rs"]
mod fuzz_checks;

mod crypto;
mod fuzz_corpus;
mod protocol;
