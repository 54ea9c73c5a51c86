//! Two faces for the wire types. The binary codec (postcard, not
//! human-readable) keeps its fixed-size byte layout, so the state root and
//! tx ids are unchanged; JSON and TOML (human-readable) see hex strings for
//! keys, hashes and signatures, decimal strings for amounts (a `u128` does
//! not fit a JSON number safely, nor a TOML integer at all), and two-letter
//! country codes.

use serde::{de, Deserializer, Serializer};

/// `serialize`/`deserialize` for a `[u8; N]` newtype: raw bytes for the
/// codec, lowercase hex for people.
pub(crate) fn ser_bytes<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.serialize_str(&crate::keys::hex(bytes))
    } else {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(N)?;
        for b in bytes {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

pub(crate) fn de_bytes<'de, D: Deserializer<'de>, const N: usize>(d: D, what: &'static str) -> Result<[u8; N], D::Error> {
    struct V<const N: usize>(&'static str);
    impl<'de, const N: usize> de::Visitor<'de> for V<N> {
        type Value = [u8; N];
        fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "{} ({} bytes, {} hex digits)", self.0, N, 2 * N)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<[u8; N], E> {
            crate::keys::parse_hex(v)
                .and_then(|b| <[u8; N]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| E::custom(format!("{} must be {} hex digits, got {:?}", self.0, 2 * N, v)))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }
    if d.is_human_readable() {
        d.deserialize_str(V::<N>(what))
    } else {
        d.deserialize_tuple(N, V::<N>(what))
    }
}

/// Implements `Serialize` and `Deserialize` for a `struct X(pub [u8; N])`.
macro_rules! bytes_serde {
    ($ty:ty, $n:expr, $what:expr) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $crate::serde_hr::ser_bytes::<S, $n>(&self.0, s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                $crate::serde_hr::de_bytes::<D, $n>(d, $what).map(Self)
            }
        }
    };
}
pub(crate) use bytes_serde;
