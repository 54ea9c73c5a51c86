//! The one error type of the crate: each variant says what happened and,
//! where it can, what to check.

use crate::{hex, Transport};
use std::net::SocketAddr;
use std::time::Duration;

/// What can go wrong connecting, listening or handshaking.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("connecting to {addr} over {transport}: connection refused (is the node up and listening on that port?)")]
    ConnectRefused { transport: Transport, addr: SocketAddr },

    #[error("connecting to {addr} over {transport}: {source}")]
    Connect {
        transport: Transport,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("{transport} handshake with {} timed out after {} ms", peer_label(peer), timeout.as_millis())]
    HandshakeTimeout { transport: Transport, peer: Option<SocketAddr>, timeout: Duration },

    /// The node presented a key other than the one its ledger record pins.
    #[error(
        "the node's TLS key does not match its pin: expected {}, got {} \
         (wrong address, a stale ledger record, or an impostor)",
        hex(expected),
        hex(got)
    )]
    PinMismatch { expected: [u8; 32], got: [u8; 32] },

    /// The certificate is not one a node makes: not an Ed25519 key, or not
    /// parseable.
    #[error("the peer's certificate was rejected: {reason}")]
    BadCertificate { reason: String },

    #[error(
        "{transport} handshake with {}: ALPN mismatch, expected {:?}, negotiated {:?} (not a tollway node, or a proxy in between)",
        peer_label(peer),
        String::from_utf8_lossy(expected),
        got.as_deref().map(String::from_utf8_lossy)
    )]
    AlpnMismatch { transport: Transport, peer: Option<SocketAddr>, expected: &'static [u8], got: Option<Vec<u8>> },

    #[error("{transport} handshake with {} failed: {reason}", peer_label(peer))]
    Handshake { transport: Transport, peer: Option<SocketAddr>, reason: String },

    /// `io` is no `#[source]`: the message holds it, and `{:#}` would print
    /// it twice.
    #[error("cannot listen on {transport} {addr}: {io}{}", bind_hint(io))]
    BindFailed { transport: Transport, addr: SocketAddr, io: std::io::Error },

    #[error("invalid port range {first}..={last}: {why}")]
    BadPortRange { first: u16, last: u16, why: String },

    #[error("invalid TLS server name {name:?}: use a DNS name such as \"www.example.org\"")]
    BadServerName { name: String },

    #[error("unknown transport {name:?}: expected \"tls\" or \"quic\"")]
    UnknownTransport { name: String },

    #[error("building the node's TLS identity failed: {reason}")]
    Identity { reason: String },

    #[error("invalid transport configuration: {reason}")]
    Config { reason: String },

    #[error("the listener is closed")]
    Closed,
}

/// What to check, where the error's kind tells.
fn bind_hint(io: &std::io::Error) -> &'static str {
    match io.kind() {
        std::io::ErrorKind::AddrInUse => " (another program, or another node, holds this port)",
        std::io::ErrorKind::PermissionDenied => " (a port below 1024 needs privilege)",
        std::io::ErrorKind::AddrNotAvailable => " (this host has no such address)",
        _ => "",
    }
}

fn peer_label(peer: &Option<SocketAddr>) -> String {
    match peer {
        Some(addr) => addr.to_string(),
        None => "the peer (over a stream)".to_string(),
    }
}
