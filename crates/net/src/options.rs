//! Plain parameter structs (STYLE: config is resolved into these by the
//! daemons and passed explicitly). Every default is named here.

use crate::ShardHandles;
use std::time::Duration;

/// The SNI a client sends unless told otherwise: an ordinary name, so the
/// ClientHello looks like any HTTPS client's. Nodes accept any name.
pub const DEFAULT_SERVER_NAME: &str = "www.example.org";

/// How a client connects.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The server name sent in the SNI (a DNS name; never checked against
    /// the certificate, the pin is).
    pub server_name: String,
    /// Bound on the whole connect + handshake.
    pub handshake_timeout: Duration,
    pub quic: QuicOptions,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            server_name: DEFAULT_SERVER_NAME.to_string(),
            handshake_timeout: Duration::from_secs(10),
            quic: QuicOptions::default(),
        }
    }
}

/// How a node accepts.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// A client that has not finished its handshake after this long is
    /// dropped (slowloris).
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once, over all ports and transports; when
    /// full, new connections wait in the kernel's backlog.
    pub max_concurrent_handshakes: usize,
    /// Connections of one client address (an IPv6 client's /64) waiting or
    /// handshaking at once; beyond it, new ones from there are closed at
    /// once (`ListenerStats::refused_per_address`), so one address cannot
    /// take every handshake slot for itself.
    pub max_handshakes_per_address: usize,
    /// TCP connections that have not sent their first byte yet, over all
    /// ports; each costs a socket and a small task. Beyond it, new
    /// connections wait in the kernel's backlog.
    pub max_waiting_connections: usize,
    /// Connections past their handshake that have not sent their first
    /// frame yet, over all ports: each holds its TLS state until the
    /// handshake timeout. The node closes more at once, and one client
    /// address holds at most `max_handshakes_per_address` of them.
    pub max_awaiting_first_frame: usize,
    /// Finished connections waiting for [`crate::Listener::accept`].
    pub accept_queue: usize,
    pub quic: QuicOptions,
    /// Where TCP connections are served: `None` serves each on the
    /// runtime that accepted it; `Some` moves each to the least loaded
    /// shard before its handshake (thread-per-core, see [`crate::Shards`]).
    pub shards: Option<ShardHandles>,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_handshakes: 256,
            max_handshakes_per_address: 32,
            max_waiting_connections: 16_384,
            max_awaiting_first_frame: 1024,
            accept_queue: 64,
            quic: QuicOptions::default(),
            shards: None,
        }
    }
}

/// QUIC settings shared by both ends.
#[derive(Clone, Debug)]
pub struct QuicOptions {
    /// UDP socket send and receive buffer size. DESIGN §10: the default
    /// buffer drops about 0.7 % of packets on loopback; 4 MiB does not.
    /// Linux caps it at `net.core.{r,w}mem_max`.
    pub udp_buffer_bytes: usize,
    /// Flow-control window of the one stream (and of the connection):
    /// bounds the bytes in flight, so throughput ≤ window / RTT.
    pub stream_window_bytes: u32,
    /// After this long without a packet from the peer, a PING: a backstop
    /// for NAT bindings. The tunnel's own pings come first (a client's
    /// route is pinged every 500 ms while busy and every 25 s when quiet,
    /// ADR 0012), so this is longer than their quiet interval: at 10 s it
    /// sent a packet each way between every two quiet pings, waking a
    /// phone's radio twice as often as the tunnel needs.
    pub keep_alive: Duration,
    /// A connection silent this long is closed (the shorter of the two
    /// ends' settings counts). Above the keep-alive, with room for a lost
    /// ping's retransmissions; a dead node is found by the tunnel's pings
    /// long before, so this only frees what a vanished peer left.
    pub idle_timeout: Duration,
}

impl Default for QuicOptions {
    fn default() -> QuicOptions {
        QuicOptions {
            udp_buffer_bytes: 4 << 20,
            stream_window_bytes: 8 << 20,
            keep_alive: Duration::from_secs(28),
            idle_timeout: Duration::from_secs(60),
        }
    }
}
