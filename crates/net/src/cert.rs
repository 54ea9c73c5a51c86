//! The Ed25519 key out of an X.509 certificate, by a minimal DER walk.
//!
//! A node's certificate is only a carrier for its key (the pin is the trust
//! anchor), so we read exactly the path to the SubjectPublicKeyInfo and
//! nothing else:
//!
//! ```text
//! Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
//!     [0] version OPTIONAL, serialNumber INTEGER, signature SEQUENCE,
//!     issuer SEQUENCE, validity SEQUENCE, subject SEQUENCE,
//!     subjectPublicKeyInfo SEQUENCE {
//!         algorithm SEQUENCE { OID 1.3.101.112 },   -- id-Ed25519, no parameters
//!         subjectPublicKey BIT STRING (0 unused bits, 32 bytes) }, … }, … }
//! ```
//!
//! Untrusted input: every step is bounds-checked and returns an error,
//! never panics.

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const VERSION_TAG: u8 = 0xa0;
/// `SEQUENCE { OID 1.3.101.112 }`'s content: the Ed25519 algorithm id.
const ED25519_ALGORITHM: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// The raw 32-byte Ed25519 public key of a DER certificate.
pub(crate) fn ed25519_key_of_cert(der: &[u8]) -> Result<[u8; 32], String> {
    let (cert, _) = expect(der, SEQUENCE, "certificate")?;
    let (tbs, _) = expect(cert, SEQUENCE, "tbsCertificate")?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION_TAG) {
        rest = expect(rest, VERSION_TAG, "version")?.1;
    }
    rest = expect(rest, INTEGER, "serialNumber")?.1;
    for what in ["signature algorithm", "issuer", "validity", "subject"] {
        rest = expect(rest, SEQUENCE, what)?.1;
    }
    let (spki, _) = expect(rest, SEQUENCE, "subjectPublicKeyInfo")?;
    let (algorithm, rest) = expect(spki, SEQUENCE, "key algorithm")?;
    if algorithm != ED25519_ALGORITHM {
        return Err("the certificate's key is not Ed25519 (a node's key always is)".to_string());
    }
    let (bits, _) = expect(rest, BIT_STRING, "subjectPublicKey")?;
    match bits {
        [0, key @ ..] if key.len() == 32 => {
            let mut out = [0u8; 32];
            out.copy_from_slice(key);
            Ok(out)
        }
        _ => Err(format!("malformed Ed25519 key: a BIT STRING of {} bytes", bits.len())),
    }
}

/// Reads one element with `tag`: its content and what follows it.
fn expect<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    let malformed = || format!("malformed certificate: bad {what}");
    let (&found, rest) = input.split_first().ok_or_else(malformed)?;
    if found != tag {
        return Err(malformed());
    }
    let (&first, mut rest) = rest.split_first().ok_or_else(malformed)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        // Long form: 1 to 4 length bytes (a certificate is far below 4 GiB).
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(malformed());
        }
        let (len_bytes, after) = rest.split_at(n);
        rest = after;
        len_bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if rest.len() < len {
        return Err(malformed());
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn never_panics_on_truncations_of_a_real_certificate() {
        let identity = crate::TlsIdentity::from_seed([7; 32]).unwrap();
        let der = identity.certificate_der();
        assert_eq!(ed25519_key_of_cert(der), Ok(identity.public_key()));
        for len in 0..der.len() {
            assert!(ed25519_key_of_cert(&der[..len]).is_err(), "truncated at {len}");
        }
        // Flipping any single byte must never panic (it may still parse).
        for i in 0..der.len() {
            let mut bent = der.to_vec();
            bent[i] ^= 0xff;
            let _ = ed25519_key_of_cert(&bent);
        }
    }

    #[test]
    fn long_form_lengths_are_bounded() {
        assert!(ed25519_key_of_cert(&[0x30, 0x85, 1, 2, 3, 4, 5]).is_err());
        assert!(ed25519_key_of_cert(&[0x30, 0x80]).is_err());
        assert!(ed25519_key_of_cert(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
