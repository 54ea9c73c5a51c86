//! Port hopping (DESIGN §4): the node listens on its whole advertised
//! range; client and node derive the active port for each time window from
//! the session secret, so an observer that throttles one port stalls
//! nothing, and nobody without the secret can predict the next port.

/// The port a session uses in the window holding `unix_secs`.
pub fn port_for(
    secret: &[u8; 32],
    port_first: u16,
    port_last: u16,
    window_secs: u64,
    unix_secs: u64,
) -> u16 {
    let span = u64::from(port_last.saturating_sub(port_first)) + 1;
    let window = unix_secs / window_secs.max(1);
    let mut h = blake3::Hasher::new_keyed(secret);
    h.update(b"tollway-port-hop\0");
    h.update(&window.to_le_bytes());
    let digest = h.finalize();
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest.as_bytes()[..8]);
    // The span is at most 65536, so the modulo bias is below 2^-47.
    port_first + (u64::from_le_bytes(word) % span) as u16
}

/// When the window holding `unix_millis` ends, in Unix milliseconds: a
/// hopper that wakes then moves at the window's start, where one that
/// counted in whole seconds woke up to a second late.
pub fn window_end_millis(window_secs: u64, unix_millis: u64) -> u64 {
    let window_millis = window_secs.max(1).saturating_mul(1000);
    (unix_millis / window_millis + 1).saturating_mul(window_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_stay_in_range_change_between_windows_and_depend_on_the_secret() {
        let secret = [7u8; 32];
        let ports: Vec<u16> = (0..64)
            .map(|w| port_for(&secret, 40000, 40007, 10, w * 10 + 3))
            .collect();
        assert!(ports.iter().all(|p| (40000..=40007).contains(p)));
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert!(
            distinct.len() >= 6,
            "64 windows over 8 ports used only {distinct:?}"
        );
        // Same window, same port.
        assert_eq!(
            port_for(&secret, 40000, 40007, 10, 30),
            port_for(&secret, 40000, 40007, 10, 39)
        );
        let other: Vec<u16> = (0..64)
            .map(|w| port_for(&[8u8; 32], 40000, 40007, 10, w * 10))
            .collect();
        assert_ne!(ports, other);
        assert_eq!(port_for(&secret, 5000, 5000, 10, 99), 5000);
        assert_eq!(window_end_millis(10, 31_999), 40_000);
        assert_eq!(window_end_millis(10, 39_999), 40_000);
        assert_eq!(window_end_millis(10, 40_000), 50_000);
        assert_eq!(window_end_millis(1, 10_400), 11_000);
    }
}
