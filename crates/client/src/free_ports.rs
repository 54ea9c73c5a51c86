//! Test support, compiled only into tests: the crate's unit tests
//! (`#[cfg(test)]`) and its integration tests (`tests/curl.rs`, by
//! `#[path]`) share this one port finder.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};

/// Binds nothing, just finds `n` consecutive free ports (TCP and UDP).
/// Each call in this process starts past the last one's range: tests
/// that leave their port unbound for a while (a node restarting on it)
/// run beside others that look for ports too, and must not be handed the
/// same one.
pub(crate) fn free_port_range(n: u16) -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // Other test processes (other crates' suites) start elsewhere. Below
    // Linux's ephemeral range (32768 up), so no outgoing connection takes
    // the port while its node is down.
    let offset = std::process::id() % 200 * 97;
    for _ in 0..400 {
        let step = NEXT.fetch_add(n.max(1) as u32 + 1, std::sync::atomic::Ordering::Relaxed);
        let base = (20000 + (offset + step) % 12000) as u16;
        let ok = (base..base + n).all(|p| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok() && UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).is_ok()
        });
        if ok {
            return base;
        }
    }
    panic!("no free port range");
}
