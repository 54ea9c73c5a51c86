//! Connecting a destination as an exit: resolve at the exit (so the
//! client's DNS never leaks), refuse what the policy forbids, connect with
//! a timeout.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tollway_net::race::{first_success, NEXT_ATTEMPT_AFTER};
use tollway_tunnel::{Dest, ErrorCode, ExitPolicy, Host};

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
        .collect();
    // Raced with a stagger: an exit whose IPv6 route is broken (packets
    // vanish) reaches a dual-stack destination over IPv4 a quarter second
    // late, not after the connect timeout.
    let mut last = ErrorCode::PolicyDenied;
    let attempt = |addr| async move {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => Err(ErrorCode::ConnectionRefused),
            Ok(Err(_)) => Err(ErrorCode::Unreachable),
            Err(_) => Err(ErrorCode::Timeout),
        }
    };
    let stream = first_success(allowed, NEXT_ATTEMPT_AFTER, attempt, |code| last = code).await.ok_or(last)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
