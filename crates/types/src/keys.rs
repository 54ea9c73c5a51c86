//! ed25519 keys and signatures under ZIP-215 rules (ADR 0003): single and
//! batch verification accept exactly the same set, so every validator agrees
//! on validity whatever the batching.

use core::fmt;

/// A public key: also the id of the account it controls.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);
crate::serde_hr::bytes_serde!(PublicKey, 32, "a public key");

/// Accounts are named by their public key.
pub type AccountId = PublicKey;

impl PublicKey {
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
    pub fn from_hex(s: &str) -> Result<PublicKey, KeyError> {
        parse_hex32(s).map(PublicKey).ok_or(KeyError::BadHex { what: "public key" })
    }
    /// Short form for tables and logs: the first 8 hex digits.
    pub fn short(&self) -> String {
        hex(&self.0[..4])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

/// A 64-byte ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex(&self.0[..4]))
    }
}

crate::serde_hr::bytes_serde!(Signature, 64, "a signature");

/// A secret signing key. Deliberately not `Serialize`: key files are written
/// by the CLI, on purpose, never by accident through a state dump.
#[derive(Clone)]
pub struct SigningKey(ed25519_zebra::SigningKey);

impl SigningKey {
    /// A key from 32 secret bytes (a seed). Deterministic: tests and the
    /// simulator derive keys from fixed seeds.
    pub fn from_seed(seed: [u8; 32]) -> SigningKey {
        SigningKey(ed25519_zebra::SigningKey::from(seed))
    }
    /// A fresh random key (for `tollway keys new`): 32 random bytes are
    /// the seed, as RFC 8032 has it.
    pub fn generate<R: rand_core::RngCore + rand_core::CryptoRng>(mut rng: R) -> SigningKey {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        SigningKey::from_seed(seed)
    }
    /// A deterministic key named by a label, for tests, scripts and the
    /// simulator: `blake3("tollway test key" || label)`.
    pub fn from_label(label: &str) -> SigningKey {
        let mut h = blake3::Hasher::new();
        h.update(b"tollway test key\0");
        h.update(label.as_bytes());
        SigningKey::from_seed(*h.finalize().as_bytes())
    }
    pub fn seed_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verification_key().into())
    }
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg).to_bytes())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {})", self.public().short())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{what} is not 64 hex digits")]
    BadHex { what: &'static str },
    #[error("bad signature")]
    BadSignature,
}

/// Verifies one signature (ZIP-215).
pub fn verify(key: &PublicKey, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
    let vk = ed25519_zebra::VerificationKey::try_from(key.0).map_err(|_| KeyError::BadSignature)?;
    vk.verify(&ed25519_zebra::Signature::from(sig.0), msg).map_err(|_| KeyError::BadSignature)
}

/// Verifies many signatures at once: about 4× the single rate. ZIP-215
/// makes the batch verdict equal the conjunction of single verdicts, so on
/// failure we re-verify one by one only to find *which* failed. `seed`
/// derives the batch's random coefficients deterministically (the caller
/// passes e.g. a block hash); it affects speed only, never the verdict.
pub fn verify_batch(items: &[(PublicKey, &[u8], Signature)], seed: [u8; 32]) -> Vec<bool> {
    let mut batch = ed25519_zebra::batch::Verifier::new();
    for (key, msg, sig) in items {
        batch.queue((
            ed25519_zebra::VerificationKeyBytes::from(key.0),
            ed25519_zebra::Signature::from(sig.0),
            *msg,
        ));
    }
    if batch.verify(SeededRng::new(seed)).is_ok() {
        return vec![true; items.len()];
    }
    items.iter().map(|(k, m, s)| verify(k, m, s).is_ok()).collect()
}

/// A small ChaCha-free CSPRNG stand-in built on blake3's XOF, so the batch
/// verifier's coefficients need no OS randomness inside the pure core.
struct SeededRng {
    reader: blake3::OutputReader,
}

impl SeededRng {
    fn new(seed: [u8; 32]) -> SeededRng {
        let mut h = blake3::Hasher::new_keyed(&seed);
        h.update(b"tollway batch verification coefficients");
        SeededRng { reader: h.finalize_xof() }
    }
}

impl rand_core_10::TryRng for SeededRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.reader.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.reader.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
        self.reader.fill(dest);
        Ok(())
    }
}

// The batch verifier's security rests on the coefficients being unknown to
// whoever chose the signatures; a seed from the block being verified is
// not predictable by a tx author before the block exists.
impl rand_core_10::TryCryptoRng for SeededRng {}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    parse_hex(s).and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
}

/// Hex digits (either case, surrounding whitespace ignored) to bytes.
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.chunks_exact(2).map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_batch_agree() {
        let keys: Vec<SigningKey> = (0..8).map(|i| SigningKey::from_label(&format!("k{i}"))).collect();
        let msgs: Vec<Vec<u8>> = (0..8).map(|i| vec![i as u8; 10]).collect();
        let mut items: Vec<(PublicKey, &[u8], Signature)> =
            keys.iter().zip(&msgs).map(|(k, m)| (k.public(), m.as_slice(), k.sign(m))).collect();
        assert_eq!(verify_batch(&items, [7; 32]), vec![true; 8]);
        // Corrupt one: the batch finds exactly that one.
        items[3].2 .0[0] ^= 1;
        let verdicts = verify_batch(&items, [7; 32]);
        assert_eq!(verdicts.iter().filter(|v| !**v).count(), 1);
        assert!(!verdicts[3]);
        assert_eq!(verify(&items[3].0, items[3].1, &items[3].2), Err(KeyError::BadSignature));
    }

    #[test]
    fn hex_round_trip() {
        let k = SigningKey::from_label("a").public();
        assert_eq!(PublicKey::from_hex(&k.to_hex()).unwrap(), k);
        assert!(PublicKey::from_hex("zz").is_err());
    }
}
