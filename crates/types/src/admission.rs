//! Connections counted per client address, up to a cap each: one address
//! cannot take all of a listener's places (the chain's API, a node's
//! handshakes). The caller picks the key: an address, or its prefix.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// How many connections each key holds, and the most it may.
pub struct PerAddress {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    pub fn new(max: usize) -> Arc<PerAddress> {
        Arc::new(PerAddress { max, counts: Mutex::new(HashMap::new()) })
    }

    /// A place for one more connection of `key`, or `None` if it holds
    /// all of its own.
    pub fn admit(self: &Arc<Self>, key: IpAddr) -> Option<AddressSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot { of: self.clone(), key })
    }
}

/// What one client is: its IPv4 address, or its IPv6 /64 (one host's
/// usual share, and a host can pick any address in it).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

/// One connection's place in its key's count, given back on drop.
pub struct AddressSlot {
    of: Arc<PerAddress>,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.of.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_holds_at_most_its_cap_and_a_dropped_slot_is_given_back() {
        let caps = PerAddress::new(2);
        let (a, b): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        let first = caps.admit(a);
        let second = caps.admit(a);
        assert!(first.is_some() && second.is_some());
        assert!(caps.admit(a).is_none(), "a third from the same key");
        assert!(caps.admit(b).is_some(), "another key has its own");
        drop(first);
        assert!(caps.admit(a).is_some(), "given back");
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_one_its_address() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }
}
