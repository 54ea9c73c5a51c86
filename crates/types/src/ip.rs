//! The IPv4 host an IPv6 address names by one of the standard embeddings.
//! One reading serves both who must see through them: the exit policy
//! (a node must not become a door into its owner's IPv4 LAN) and the
//! ledger's subnet key (a /24 must not become many groups by spelling its
//! hosts as IPv6).

use std::net::{Ipv4Addr, Ipv6Addr};

/// How an IPv6 address embeds an IPv4 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Embedding {
    /// `::ffff:a.b.c.d` (RFC 4291).
    Mapped,
    /// `::a.b.c.d`, deprecated (RFC 4291).
    Compatible,
    /// NAT64's well-known prefix `64:ff9b::/96`, in the last 32 bits
    /// (RFC 6052). Not the local-use `64:ff9b:1::/48` (RFC 8215), whose
    /// operator lays out where the IPv4 address sits.
    Nat64,
    /// 6to4, `2002:AABB:CCDD::/48` (RFC 3056).
    SixToFour,
    /// Teredo, `2001::/32`: the client's public address, inverted in the
    /// last 32 bits (RFC 4380).
    Teredo,
}

/// The IPv4 address `v6` embeds, and how; `None` for any other address.
/// `::` and `::1` read as compatible (0.0.0.0, 0.0.0.1): callers that
/// treat them apart do so first.
pub fn embedded_ipv4(v6: &Ipv6Addr) -> Option<(Embedding, Ipv4Addr)> {
    let s = v6.segments();
    let o = v6.octets();
    let last32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = v6.to_ipv4_mapped() {
        Some((Embedding::Mapped, v4))
    } else if let Some(v4) = v6.to_ipv4() {
        Some((Embedding::Compatible, v4))
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some((Embedding::Nat64, last32))
    } else if s[0] == 0x2002 {
        Some((Embedding::SixToFour, Ipv4Addr::new(o[2], o[3], o[4], o[5])))
    } else if s[..2] == [0x2001, 0] {
        Some((Embedding::Teredo, Ipv4Addr::from(!u32::from(last32))))
    } else {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_embedding_gives_its_host() {
        let read = |ip: &str| embedded_ipv4(&ip.parse().unwrap());
        let host = Ipv4Addr::new(203, 0, 113, 1);
        assert_eq!(read("::ffff:203.0.113.1"), Some((Embedding::Mapped, host)));
        assert_eq!(read("::203.0.113.1"), Some((Embedding::Compatible, host)));
        assert_eq!(read("64:ff9b::cb00:7101"), Some((Embedding::Nat64, host)));
        assert_eq!(read("2002:cb00:7101::1"), Some((Embedding::SixToFour, host)));
        assert_eq!(read("2001:0:4136:e378:8000:63bf:34ff:8efe"), Some((Embedding::Teredo, host)));
        assert_eq!(read("64:ff9b:1::cb00:7101"), None);
        assert_eq!(read("2a00:1:2::1"), None);
        assert_eq!(read("2001:db8::1"), None);
    }
}
