//! Connecting a destination as an exit: resolve at the exit (so the
//! client's DNS never leaks), refuse what the policy forbids, connect with
//! a timeout.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpStream;
use tollway_net::race::{first_success, NEXT_ATTEMPT_AFTER};
use tollway_tunnel::policy::classify;
use tollway_tunnel::{Dest, ErrorCode, ExitPolicy, Host};

/// The most addresses of one name an exit tries: each attempt holds a
/// socket until the connect timeout, a quarter second after the one
/// before, and a name may resolve to dozens.
pub const MAX_ADDRESSES_TRIED: usize = 4;

/// The host's global IPv6 addresses, from Linux's `/proc/net/if_inet6`
/// (none elsewhere). In the policy's `own_addrs`, their /64s are refused
/// as the owner's IPv6 LAN (`Forbidden::OwnNetwork`): the ledger record
/// lists the address clients reach, which may not be the host's own.
pub fn host_ipv6_addrs() -> Vec<IpAddr> {
    std::fs::read_to_string("/proc/net/if_inet6").map(|text| parse_if_inet6(&text)).unwrap_or_default()
}

/// Lines of `address ifindex prefix-length scope flags name`, the address
/// as 32 hex digits; the global ones (scope 00).
fn parse_if_inet6(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (hex, scope) = (fields.first()?, fields.get(3)?);
            if *scope != "00" || hex.len() != 32 {
                return None;
            }
            u128::from_str_radix(hex, 16).ok().map(|bits| IpAddr::V6(Ipv6Addr::from(bits)))
        })
        .collect()
}

/// Resolves `dest`, checks every address against `policy` (a name that
/// resolves into the LAN is refused like the address) and connects to the
/// allowed ones in order, each a quarter second after the one before (or
/// at once when one fails): the first to connect serves.
pub async fn connect_dest(
    dest: &Dest,
    policy: &ExitPolicy,
    timeout: Duration,
) -> Result<TcpStream, ErrorCode> {
    let addrs: Vec<SocketAddr> = match &dest.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, dest.port)],
        Host::Domain(name) => {
            match tokio::time::timeout(timeout, tokio::net::lookup_host((name.as_str(), dest.port)))
                .await
            {
                Ok(Ok(found)) => found.collect(),
                Ok(Err(_)) => return Err(ErrorCode::DnsFailed),
                Err(_) => return Err(ErrorCode::Timeout),
            }
        }
    };
    if addrs.is_empty() {
        return Err(ErrorCode::DnsFailed);
    }
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| policy.check(a.ip(), a.port()).is_ok())
        .take(MAX_ADDRESSES_TRIED)
        .collect();
    // Raced with a stagger: an exit whose IPv6 route is broken (packets
    // vanish) reaches a dual-stack destination over IPv4 a quarter second
    // late, not after the connect timeout.
    let mut last = ErrorCode::PolicyDenied;
    let attempt = |addr: SocketAddr| async move {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            // A public address of this host that its ledger record does
            // not list (a second address, a new dynamic one): refused like
            // the listed ones (`Forbidden::OwnAddress`), before a byte is
            // sent. A service bound to it trusts its own host.
            Ok(Ok(stream)) if classify(addr.ip()).is_none() && reaches_this_host(&stream) => Err(ErrorCode::PolicyDenied),
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => Err(ErrorCode::ConnectionRefused),
            Ok(Err(_)) => Err(ErrorCode::Unreachable),
            Err(_) => Err(ErrorCode::Timeout),
        }
    };
    let stream = first_success(allowed, NEXT_ATTEMPT_AFTER, attempt, |code| last = code, drop).await.ok_or(last)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Whether `stream` connects this host to itself: the kernel routes a
/// connection to one of the host's own addresses through its local table,
/// whose source address is the destination itself, whatever interface
/// holds it. Asked of the connected socket, so it holds for addresses the
/// host gained after the node started.
fn reaches_this_host(stream: &TcpStream) -> bool {
    match (stream.local_addr(), stream.peer_addr()) {
        (Ok(local), Ok(peer)) => local.ip().to_canonical() == peer.ip().to_canonical(),
        // Not known: let it through, as before; the policy checked the
        // address.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback stands in for a public address of this host (a test cannot
    /// give itself one): the kernel answers the same way for both.
    #[tokio::test]
    async fn a_connection_to_one_of_this_hosts_addresses_is_seen_as_such() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
        let to_self = TcpStream::connect(("127.0.0.1", port)).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(reaches_this_host(&to_self));
        // 127.0.0.2 is this host too, but its route's source is 127.0.0.1:
        // only the exact address counts, which is what a public one is.
        let listener2 = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap_or_else(|e| panic!("{e}"));
        let port2 = listener2.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
        let other = TcpStream::connect(("127.0.0.2", port2)).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!reaches_this_host(&other));
    }

    /// The global addresses of `/proc/net/if_inet6`, not loopback or
    /// link-local ones.
    #[test]
    fn the_hosts_global_ipv6_addresses_are_read_from_proc() {
        let text = "00000000000000000000000000000001 01 80 10 80       lo\n\
                    2a0014501234abcd0000000000000007 02 40 00 00     eth0\n\
                    fe8000000000000000fc00fffe000001 02 40 20 80     eth0\n";
        assert_eq!(parse_if_inet6(text), vec!["2a00:1450:1234:abcd::7".parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"))]);
    }
}
