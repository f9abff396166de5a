//! No panics on hostile input: mutated frames through the opener, random JSON through the
//! handshake parsers. Every failure maps to a spec close code.

use crate::common_crypto::seal1;
use sealcast::crypto::schedule::TrafficSecret;
use sealcast::crypto::{Direction, HandshakeRequest, RecordOpener, RecordSealer, ServerHello};
use serde_json::{json, Map, Value};

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

const MSG: &[u8] = br#"{"event":"chat","data":{"t":"hello"}}"#;

fn opener() -> RecordOpener {
    RecordOpener::new(Direction::C2s, TrafficSecret::from_bytes(&[3; 32]), [4; 32], 0)
}

#[test]
fn mutated_frames_never_panic_and_map_to_close_codes() {
    let mut s = RecordSealer::new(Direction::C2s, TrafficSecret::from_bytes(&[3; 32]), [4; 32], 0);
    let base = seal1(&mut s, MSG);
    let alphabet = b"{}[]\":,0123456789-_+/=. eAzZ\\u\x00\xff\n";
    let mut rng = Rng(0x2545f4914f6cdd1d);
    let (mut ok, mut codes) = (0, [0usize; 3]);
    for _ in 0..3000 {
        let mut f = base.clone();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(f.len() + 1);
            match rng.below(6) {
                0 if i < f.len() => f[i] = alphabet[rng.below(alphabet.len())],
                1 => f.insert(i, alphabet[rng.below(alphabet.len())]),
                2 if i < f.len() => {
                    f.remove(i);
                }
                3 => f.truncate(i),
                4 if i < f.len() => {
                    let j = i + rng.below(f.len() - i);
                    let seg = f[i..j].to_vec();
                    f.splice(i..i, seg);
                }
                _ if i < f.len() => f[i] ^= 1 << rng.below(8),
                _ => {}
            }
        }
        match opener().open(&f) {
            // only a semantically identical envelope (e.g. JSON whitespace) may open
            Ok(inner) => {
                assert_eq!(inner.as_deref(), Some(MSG));
                ok += 1;
            }
            Err(e) => codes[(e.close_code() - 4004) as usize] += 1,
        }
    }
    assert!(codes[0] > 0 && codes[1] > 0, "{codes:?} ok={ok}");
    // the original still opens
    assert_eq!(opener().open(&base).unwrap().unwrap(), MSG);
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 3 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.below(3) as u64),
        2 => json!(-(rng.below(3) as i64) as f64 + 0.5),
        3 => json!(["", "AA", "AAAAAAAAAAA", "-GV3gO9oO-U", "BNTU", "x=", " "][rng.below(7)]),
        4 => Value::Bool(rng.below(2) == 0),
        5 => Value::Array((0..rng.below(3)).map(|_| random_value(rng, depth + 1)).collect()),
        _ => random_object(rng, depth + 1),
    }
}

fn random_object(rng: &mut Rng, depth: usize) -> Value {
    let keys = [
        "v",
        "publicKey",
        "kid",
        "serverPublicKey",
        "salt",
        "confirm",
        "token",
        "id",
    ];
    let mut m = Map::new();
    for _ in 0..rng.below(6) {
        m.insert(keys[rng.below(keys.len())].into(), random_value(rng, depth));
    }
    Value::Object(m)
}

#[test]
fn random_handshake_json_never_panics() {
    let mut rng = Rng(0xdeadbeefcafef00d);
    for _ in 0..5000 {
        let v = if rng.below(4) == 0 {
            random_value(&mut rng, 0)
        } else {
            random_object(&mut rng, 0)
        };
        if let Err(e) = HandshakeRequest::from_auth_data(&v) {
            assert_eq!(e.close_code(), 4004);
        }
        if let Err(e) = ServerHello::from_connected_data(&v) {
            assert_eq!(e.close_code(), 4004);
        }
    }
}
