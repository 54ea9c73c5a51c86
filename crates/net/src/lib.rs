//! Transports for the data plane (DESIGN §4, §10, ADR 0007).
//!
//! Two encrypted byte-stream transports between a client and a node, both
//! TLS 1.3 with the node's key **pinned**, never checked against a CA:
//!
//! - [`Transport::Tls`]: TLS 1.3 over TCP (tokio-rustls), ALPN `h2`. The
//!   default (ADR 0007: about twice QUIC's throughput per connection).
//! - [`Transport::Quic`]: QUIC (quinn), ALPN `h3`, one bidirectional stream
//!   per connection. For networks that favour UDP and for port hopping.
//!
//! On the wire both look like ordinary HTTPS / HTTP/3: an ordinary server
//! name in the SNI ([`ClientOptions::server_name`]), the usual ALPN, and
//! nothing of ours in cleartext (the certificate travels encrypted in
//! TLS 1.3 and names nobody in particular).
//!
//! # The pieces
//! - [`TlsIdentity`]: a node's Ed25519 TLS key and self-signed certificate,
//!   from a 32-byte seed; [`TlsIdentity::pin`] is what the node publishes as
//!   `NodeSpec::tls_key_pin` (blake3 of the raw public key).
//! - [`connect`]: dial a node on one address, checking its pin; returns a
//!   [`Connection`]. [`connect_after`]: a port hop's next connection, over
//!   QUIC starting from the live one's congestion state.
//! - [`Listener`]: listen on every port of a range, over one or both
//!   transports, and [`Listener::accept`] finished connections. Handshakes
//!   run in their own tasks under a timeout and a cap, so one slow client
//!   cannot hold up the others.
//! - [`Shards`]: thread-per-core serving; a listener given their handles
//!   serves each TCP connection on one shard's thread
//!   ([`Connection::runtime`]).
//! - [`connect_tls_over`] / [`accept_tls_over`]: TLS inside an existing
//!   byte stream (multi-hop: the client's session with the exit runs inside
//!   the stream a relay forwards). They return a [`SecureStream`].
//!
//! A [`Connection`] and a [`SecureStream`] are `AsyncRead + AsyncWrite`
//! byte streams and carry a 32-byte [`channel binding`](Connection::channel_binding),
//! exported from the TLS session and equal on both ends: the tunnel
//! handshake signs it, so a session cannot be lifted onto another
//! connection. Like any buffered writer, flush or shut down a stream
//! before dropping it if the last bytes matter.
//!
//! # Architecture invariant
//! Only this crate knows rustls, quinn and sockets; the tunnel protocol
//! above it sees byte streams, addresses, ports and the binding. The pin is
//! the only trust anchor: no CA, host name or validity period is checked.

mod buffered;
mod cert;
pub mod driver;
pub mod race;
mod conn;
mod error;
mod identity;
mod listener;
mod options;
mod quic;
pub mod rate;
mod shards;
mod tls;
mod verify;

pub use conn::{Connection, SecureStream};
pub use error::NetError;
pub use identity::{pin_of_public_key, TlsIdentity};
pub use listener::{Listener, ListenerStats, MAX_LISTEN_PORTS};
pub use shards::{Home, ShardHandles, Shards};
pub use options::{ClientOptions, QuicOptions, ServerOptions, DEFAULT_SERVER_NAME};
pub use quic::LivePath;
pub use tls::{accept_tls_over, connect_tls_over};

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// The label of the keying-material exporter (RFC 8446 §7.5) that gives
/// the channel binding; no context.
pub const CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-tollway-session";

/// ALPN of TLS over TCP: what an HTTPS client offers first.
pub const ALPN_TLS: &[u8] = b"h2";
/// ALPN of QUIC: HTTP/3's.
pub const ALPN_QUIC: &[u8] = b"h3";

/// Which transport a connection uses.
///
/// The default is TLS over TCP (ADR 0007: on one connection it carries
/// about twice what QUIC does, at less CPU per byte); QUIC is for
/// UDP-friendly networks and clients whose address moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// TLS 1.3 over TCP.
    #[default]
    Tls,
    /// QUIC over UDP.
    Quic,
}

impl Transport {
    /// Both transports, TLS first.
    pub const ALL: [Transport; 2] = [Transport::Tls, Transport::Quic];

    /// The name used in config files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tls => "tls",
            Transport::Quic => "quic",
        }
    }

    /// The ALPN protocol id this transport negotiates.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Transport::Tls => ALPN_TLS,
            Transport::Quic => ALPN_QUIC,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Transport, NetError> {
        match s {
            "tls" => Ok(Transport::Tls),
            "quic" => Ok(Transport::Quic),
            _ => Err(NetError::UnknownTransport { name: s.to_string() }),
        }
    }
}

/// Connects to a node at `addr` over `transport`, accepting it only if its
/// TLS key hashes to `pin` (`NodeSpec::tls_key_pin`).
///
/// The whole handshake (TCP connect or QUIC handshake, TLS, and for QUIC
/// opening the stream) is bounded by [`ClientOptions::handshake_timeout`].
/// Errors: [`NetError::ConnectRefused`], [`NetError::HandshakeTimeout`],
/// [`NetError::PinMismatch`], [`NetError::BadCertificate`],
/// [`NetError::AlpnMismatch`], [`NetError::Handshake`].
pub async fn connect(
    transport: Transport,
    addr: SocketAddr,
    pin: [u8; 32],
    opts: &ClientOptions,
) -> Result<Connection, NetError> {
    connect_after(transport, addr, pin, opts, None).await
}

/// [`connect`] for a port hop's next connection, made while `live` (the
/// session's connection now, [`Connection::live_path`]) still runs. Over
/// QUIC, a connection to the node `live` runs to starts from `live`'s
/// congestion window and round trip, not from slow start: the same two
/// hosts over the same path, only the ports differ (RFC 9000 §9.4; the
/// node does the same for its side). A closed `live`, one to another
/// address, `None`, and TLS (the kernel's TCP) start as [`connect`] does.
pub async fn connect_after(
    transport: Transport,
    addr: SocketAddr,
    pin: [u8; 32],
    opts: &ClientOptions,
    live: Option<&LivePath>,
) -> Result<Connection, NetError> {
    let attempt = async {
        match transport {
            Transport::Tls => tls::connect_tcp(addr, pin, opts).await,
            Transport::Quic => {
                let start = live.and_then(|live| live.start_toward(addr.ip()));
                quic::connect(addr, pin, opts, start).await
            }
        }
    };
    match tokio::time::timeout(opts.handshake_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(NetError::HandshakeTimeout { transport, peer: Some(addr), timeout: opts.handshake_timeout }),
    }
}

/// Lowercase hex, for pins in messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names_round_trip() {
        for t in Transport::ALL {
            assert_eq!(t.to_string().parse::<Transport>().ok(), Some(t));
        }
        assert!(matches!("udp".parse::<Transport>(), Err(NetError::UnknownTransport { .. })));
    }
}
