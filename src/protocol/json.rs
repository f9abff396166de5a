//! Strict checking of JSON the server reads partly and relays as raw text.
//!
//! Payloads (`data`, `id`) travel as [`RawValue`](serde_json::value::RawValue)s, byte for byte, and fields the
//! parsers do not know are skipped. serde_json checks both only lexically: a lone UTF-16 surrogate escape
//! (`"\udead"`), a number out of `f64` range (`1e400`) or nesting deeper than its recursion limit all pass, yet no
//! strict parser (serde_json into a value, the bundled Rust client, an outbound transformer) can read the frame they
//! end up in. One publisher could so break every such recipient in a room (found by the `client_message` and
//! `redis_envelope` fuzz targets). Client frames and bus envelopes are therefore checked whole with [`is_strict`]
//! first, which walks the text once, decoding every string and number as a strict parser would, without building
//! anything.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// True when `text` is one JSON value that parses as a `serde_json::Value` would: every string (keys included)
/// decodes to valid Unicode, every number fits, nesting stays within serde_json's recursion limit (128) and
/// nothing but whitespace follows.
pub fn is_strict(text: &str) -> bool {
    let mut de = serde_json::Deserializer::from_str(text);
    Strict::deserialize(&mut de).is_ok() && de.end().is_ok()
}

struct Strict;

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `deserialize_any`, not `deserialize_ignored_any`: the latter skips strings and numbers without decoding.
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        while seq.next_element::<Strict>()?.is_some() {}
        Ok(Strict)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        while map.next_key::<Strict>()?.is_some() {
            map.next_value::<Strict>()?;
        }
        Ok(Strict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(s: &str) -> bool {
        is_strict(s)
    }

    #[test]
    fn accepts_what_a_value_parser_accepts() {
        for ok in [
            "null",
            "true",
            "-1",
            "18446744073709551615",
            "-9223372036854775808",
            "1e300",
            "1.5",
            r#""\ud83d\ude00 \u00e9 \n""#,
            r#"{"a":[1,{"b":null}],"\u00e9":"x"}"#,
            &format!("{}{}", "[".repeat(127), "]".repeat(127)),
        ] {
            assert!(strict(ok), "{ok}");
            assert!(serde_json::from_str::<serde_json::Value>(ok).is_ok());
        }
    }

    #[test]
    fn refuses_what_only_the_raw_lexer_lets_through() {
        for bad in [
            r#""\ude00""#,
            r#""\ud83d""#,
            r#""\ud83dx""#,
            r#"{"\udead":1}"#,
            r#"[1,"\ud800\u0041"]"#,
            "1e400",
            "-1e400",
            &format!("{}{}", "[".repeat(129), "]".repeat(129)),
            &format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200)),
            "{} {}",
            "[1]x",
            "",
        ] {
            assert!(!strict(bad), "{bad}");
            assert!(serde_json::from_str::<serde_json::Value>(bad).is_err(), "{bad}");
        }
    }
}
