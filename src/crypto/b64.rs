//! Strict base64url without padding (RFC 4648 §5), as required by wsenc/1 §1.
//!
//! Decoding rejects `=`, `+`, `/`, whitespace, any other non-alphabet byte, impossible lengths and
//! non-canonical trailing bits. Any decode error is a protocol error.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_encode_padding(false)
    .with_decode_padding_mode(DecodePaddingMode::RequireNone)
    .with_decode_allow_trailing_bits(false);

/// The strict base64url engine (no padding, canonical trailing bits).
pub(crate) const ENGINE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);

/// A strict base64url decode failure. Carries no input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid base64url (strict, unpadded) or wrong length")]
pub struct B64Error;

/// Encodes `bytes` as base64url without padding.
pub fn encode(bytes: &[u8]) -> String {
    ENGINE.encode(bytes)
}

/// Length of the unpadded base64url encoding of `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    (n / 3) * 4
        + match n % 3 {
            0 => 0,
            1 => 2,
            _ => 3,
        }
}

/// Encodes `bytes` into `out`, which must be exactly `encoded_len(bytes.len())` long. This is the record layer's
/// hot path (every outbound record's ciphertext), so it uses a SIMD encoder; decoding stays on the strict engine.
pub(crate) fn encode_into(bytes: &[u8], out: &mut [u8]) -> Result<(), B64Error> {
    if out.len() != encoded_len(bytes.len()) {
        return Err(B64Error);
    }
    let expected = out.len();
    let written = base64_simd::URL_SAFE_NO_PAD.encode(bytes, base64_simd::Out::from_slice(out));
    if written.len() == expected {
        Ok(())
    } else {
        Err(B64Error)
    }
}

/// Strictly decodes base64url without padding.
pub fn decode(s: &str) -> Result<Vec<u8>, B64Error> {
    ENGINE.decode(s.as_bytes()).map_err(|_| B64Error)
}

/// Strictly decodes exactly `N` bytes (the encoded length is checked before decoding).
pub fn decode_array<const N: usize>(s: &str) -> Result<[u8; N], B64Error> {
    if s.len() != encoded_len(N) {
        return Err(B64Error);
    }
    let mut out = [0u8; N];
    match ENGINE.decode_slice(s.as_bytes(), &mut out) {
        Ok(n) if n == N => Ok(out),
        _ => Err(B64Error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_lengths() {
        for n in 0..70usize {
            let v: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let e = encode(&v);
            assert_eq!(e.len(), encoded_len(n));
            assert!(!e.contains('='));
            assert_eq!(decode(&e).unwrap(), v);
        }
    }

    #[test]
    fn simd_encoder_matches_the_strict_engine() {
        for n in 0..300usize {
            let v: Vec<u8> = (0..n).map(|i| (i * 151 + 7) as u8).collect();
            let mut out = vec![0u8; encoded_len(n)];
            encode_into(&v, &mut out).unwrap();
            assert_eq!(std::str::from_utf8(&out).unwrap(), encode(&v), "length {n}");
            assert!(encode_into(&v, &mut vec![0u8; encoded_len(n) + 1]).is_err());
        }
    }

    #[test]
    fn url_alphabet() {
        assert_eq!(encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(decode("-_8").unwrap(), vec![0xfb, 0xff]);
    }

    #[test]
    fn rejects_non_strict_inputs() {
        // padding
        assert!(decode("AA==").is_err());
        assert!(decode("AAA=").is_err());
        // standard alphabet
        assert!(decode("+_8").is_err());
        assert!(decode("-/8").is_err());
        // whitespace anywhere
        assert!(decode(" AAA").is_err());
        assert!(decode("AAA ").is_err());
        assert!(decode("AA\nAA").is_err());
        assert!(decode("AAAA\r\n").is_err());
        // non-canonical trailing bits: "AB" decodes 1 byte with 4 leftover bits set
        assert_eq!(decode("AA").unwrap(), vec![0]);
        assert!(decode("AB").is_err());
        assert!(decode("AAB").is_err());
        // impossible length
        assert!(decode("A").is_err());
        assert!(decode("AAAAA").is_err());
        // non-ASCII
        assert!(decode("AAé").is_err());
    }

    #[test]
    fn decode_array_exact_length() {
        let e = encode(&[7u8; 12]);
        assert_eq!(decode_array::<12>(&e).unwrap(), [7u8; 12]);
        assert!(decode_array::<11>(&e).is_err());
        assert!(decode_array::<13>(&e).is_err());
        assert!(decode_array::<12>("").is_err());
        assert!(decode_array::<0>("").is_ok());
        // right length, non-canonical last char
        let mut bad = encode(&[0u8; 8]);
        bad.pop();
        bad.push('B');
        assert!(decode_array::<8>(&bad).is_err());
    }
}
