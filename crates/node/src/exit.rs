//! Connecting a destination as an exit: resolve at the exit (so the
//! client's DNS never leaks), refuse what the policy forbids, connect with
//! a timeout.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tollway_tunnel::{Dest, ErrorCode, ExitPolicy, Host};

/// Resolves `dest`, checks every address against `policy` (a name that
/// resolves into the LAN is refused like the address) and connects to the
/// first allowed one.
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
    let mut last = ErrorCode::PolicyDenied;
    for addr in allowed {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
                last = ErrorCode::ConnectionRefused
            }
            Ok(Err(_)) => last = ErrorCode::Unreachable,
            Err(_) => last = ErrorCode::Timeout,
        }
    }
    Err(last)
}
