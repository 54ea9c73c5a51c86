//! ed25519-zebra (what `keys` verifies with) against ed25519-consensus (what
//! it verified with before, ADR 0003): both claim ZIP-215, and a validator
//! that changed its verdict on any signature would split the chain. The
//! edge cases are where libraries differ: small-order and non-canonical
//! points as the key and as R, and scalars at and past the group order.

#![allow(clippy::unwrap_used)] // a test may panic

use proptest::prelude::*;
use tollway_types::keys::{self, PublicKey, Signature, SigningKey};

fn old_verdict(key: [u8; 32], sig: [u8; 64], msg: &[u8]) -> bool {
    ed25519_consensus::VerificationKey::try_from(key)
        .is_ok_and(|vk| vk.verify(&ed25519_consensus::Signature::from(sig), msg).is_ok())
}

fn ours(key: [u8; 32], sig: [u8; 64], msg: &[u8]) -> bool {
    keys::verify(&PublicKey(key), msg, &Signature(sig)).is_ok()
}

fn from_hex(h: &str) -> [u8; 32] {
    keys::parse_hex32(h).unwrap()
}

/// Point encodings: y = 0, 1, 2 and the 21 values up to 2^255 - 1 (those
/// from p = 2^255 - 19 up are non-canonical: p + y encodes y), each with
/// both signs of x, and the four points of order 8. Among them are all 14
/// encodings of the 8 small-order points.
fn encodings() -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for sign in [0u8, 0x80] {
        for y in 0u8..3 {
            let mut b = [0u8; 32];
            b[0] = y;
            b[31] |= sign;
            out.push(b);
        }
        for below in 0u8..21 {
            let mut b = [0xffu8; 32];
            b[0] = 0xff - below;
            b[31] = 0x7f | sign;
            out.push(b);
        }
    }
    for h in [
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    ] {
        out.push(from_hex(h));
    }
    out
}

#[test]
fn small_order_and_non_canonical_points_get_the_old_verdicts() {
    // The group order L, L - 1, and the largest 256-bit value: s must be
    // below L.
    let order = from_hex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
    let mut order_less_one = order;
    order_less_one[0] -= 1;
    let mut one = [0u8; 32];
    one[0] = 1;
    let good = SigningKey::from_label("zip215").sign(b"Zcash").0;
    let scalars = [[0u8; 32], one, order_less_one, order, good[32..].try_into().unwrap(), [0xff; 32]];
    let points = encodings();
    let (mut cases, mut valid) = (0, 0);
    for key in &points {
        for r in &points {
            for s in &scalars {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(r);
                sig[32..].copy_from_slice(s);
                let verdict = ours(*key, sig, b"Zcash");
                assert_eq!(verdict, old_verdict(*key, sig, b"Zcash"), "key {key:02x?}, signature {sig:02x?}");
                cases += 1;
                valid += verdict as u32;
            }
        }
    }
    // ZIP-215's own vectors: a small-order key and R (14 encodings each)
    // with s = 0 always verify, under any message; nothing else here does.
    assert_eq!((cases, valid), (points.len() * points.len() * scalars.len(), 14 * 14));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Good signatures, and the same with a flipped bit in the key, R, s
    /// or the message: the same verdict as before, one by one and in a
    /// batch.
    #[test]
    fn signatures_and_their_corruptions_get_the_old_verdicts(
        seed in any::<[u8; 32]>(),
        msg in proptest::collection::vec(any::<u8>(), 0..200),
        flip in proptest::option::of((0usize..3, any::<prop::sample::Index>(), 0u8..8)),
        batch_seed in any::<[u8; 32]>(),
    ) {
        let signer = SigningKey::from_seed(seed);
        prop_assert_eq!(signer.public().0, ed25519_consensus::SigningKey::from(seed).verification_key().to_bytes());
        let sig = signer.sign(&msg);
        prop_assert_eq!(sig.0, ed25519_consensus::SigningKey::from(seed).sign(&msg).to_bytes());
        let (mut key, mut sig, mut msg) = (signer.public().0, sig.0, msg);
        let mut corrupted = true;
        match flip {
            Some((0, at, bit)) => key[at.index(32)] ^= 1 << bit,
            Some((1, at, bit)) => sig[at.index(64)] ^= 1 << bit,
            Some((_, at, bit)) if !msg.is_empty() => {
                let i = at.index(msg.len());
                msg[i] ^= 1 << bit;
            }
            _ => corrupted = false,
        }
        let verdict = ours(key, sig, &msg);
        prop_assert_eq!(verdict, old_verdict(key, sig, &msg));
        prop_assert_eq!(verdict, !corrupted);
        let other = SigningKey::from_seed(batch_seed);
        let items = [(PublicKey(key), msg.as_slice(), Signature(sig)), (other.public(), b"x".as_slice(), other.sign(b"x"))];
        prop_assert_eq!(keys::verify_batch(&items, batch_seed), vec![verdict, true]);
    }
}
