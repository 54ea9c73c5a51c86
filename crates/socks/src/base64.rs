//! Base64 (RFC 4648 §4, the standard alphabet) for HTTP Basic credentials
//! (RFC 7617). Small enough to write rather than depend on.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let sextets = [n >> 18, n >> 12, n >> 6, n];
        for (i, s) in sextets.into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(s & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes padded or unpadded Base64; `None` for any other byte, padding
/// in the wrong place, or a length no encoding has. Bits left over in the
/// last character are ignored (RFC 4648 §3.5 lets decoders accept them).
pub(crate) fn decode(input: &[u8]) -> Option<Vec<u8>> {
    let padding = input
        .iter()
        .rev()
        .take(2)
        .take_while(|&&c| c == b'=')
        .count();
    if padding > 0 && !input.len().is_multiple_of(4) {
        return None;
    }
    let body = &input[..input.len() - padding];
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    for chunk in body.chunks(4) {
        let mut n: u32 = 0;
        for &c in chunk {
            n = n << 6 | u32::from(sextet(c)?);
        }
        // Left-align a short final group to 24 bits.
        n <<= 6 * (4 - chunk.len() as u32);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        match chunk.len() {
            4 => out.extend_from_slice(&bytes),
            3 => out.extend_from_slice(&bytes[..2]),
            2 => out.push(bytes[0]),
            _ => return None,
        }
    }
    Some(out)
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_test_vectors_round_trip() {
        // RFC 4648 §10.
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(
                decode(encoded.as_bytes()).as_deref(),
                Some(plain.as_bytes()),
                "{encoded}"
            );
            let unpadded = encoded.trim_end_matches('=');
            assert_eq!(
                decode(unpadded.as_bytes()).as_deref(),
                Some(plain.as_bytes()),
                "{unpadded}"
            );
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(encode(&all).as_bytes()), Some(all));
        assert_eq!(decode(b"/+9z"), Some(vec![0xff, 0xef, 0x73]));
    }

    #[test]
    fn malformed_base64_is_refused() {
        for bad in [
            &b"Z"[..],
            b"Zg=",
            b"Zg===",
            b"=",
            b"==",
            b"====",
            b"Zm9vY",
            b"Zm 9v",
            b"Zm9v\n",
            b"Zm-v",
            b"Z=g=",
            b"Zg==Zg==",
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
