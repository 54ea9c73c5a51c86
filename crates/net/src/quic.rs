//! QUIC (quinn): one endpoint per UDP socket, one bidirectional stream per
//! connection carrying the tunnel's bytes.
//!
//! A QUIC stream exists for the peer only once data is sent on it, so the
//! client opens the stream with one byte, [`STREAM_OPEN`], which the node
//! reads before handing the connection over. It travels encrypted like
//! everything after the handshake.

use crate::conn::QuicStream;
use crate::tls::{client_config, server_name};
use crate::{
    ClientOptions, Connection, NetError, QuicOptions, TlsIdentity, Transport, ALPN_QUIC, CHANNEL_BINDING_LABEL,
};
use quinn::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The first byte on every QUIC connection's stream (see the module doc).
const STREAM_OPEN: u8 = 0;

/// A UDP socket bound to `addr` with the configured buffers (DESIGN §10:
/// the default receive buffer drops packets at loopback speeds).
fn udp_socket(addr: SocketAddr, opts: &QuicOptions) -> std::io::Result<std::net::UdpSocket> {
    let socket =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Best effort: Linux silently caps at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(opts.udp_buffer_bytes);
    let _ = socket.set_send_buffer_size(opts.udp_buffer_bytes);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The configuration of either side's connections; one that starts from a
/// live connection's congestion state if `start` says so (see
/// [`PathMemory`]).
fn transport_config(
    opts: &QuicOptions,
    is_server: bool,
    start: Option<CongestionStart>,
) -> Result<quinn::TransportConfig, NetError> {
    let mut config = quinn::TransportConfig::default();
    // One stream, opened by the client; nothing else.
    config.max_concurrent_bidi_streams(quinn::VarInt::from_u32(u32::from(is_server)));
    config.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    config.stream_receive_window(quinn::VarInt::from_u32(opts.stream_window_bytes));
    config.receive_window(quinn::VarInt::from_u32(opts.stream_window_bytes));
    config.send_window(u64::from(opts.stream_window_bytes));
    config.keep_alive_interval(Some(opts.keep_alive));
    let idle = quinn::IdleTimeout::try_from(opts.idle_timeout)
        .map_err(|_| NetError::Config { reason: format!("QUIC idle timeout {:?} is too long", opts.idle_timeout) })?;
    config.max_idle_timeout(Some(idle));
    if let Some(start) = start {
        let mut cubic = quinn::congestion::CubicConfig::default();
        // More than the stream window could never be in flight.
        cubic.initial_window(start.window_bytes.min(u64::from(opts.stream_window_bytes)));
        config.congestion_controller_factory(Arc::new(cubic));
        config.initial_rtt(start.rtt);
    }
    Ok(config)
}

/// A node's QUIC configuration, shared by the endpoints of its ports.
pub(crate) fn server_config(identity: &TlsIdentity, opts: &QuicOptions) -> Result<quinn::ServerConfig, NetError> {
    let crypto = QuicServerConfig::try_from(identity.quic_server.clone())
        .map_err(|e| NetError::Identity { reason: e.to_string() })?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(opts, true, None)?));
    Ok(server)
}

/// A node's endpoint on one UDP address.
pub(crate) fn server_endpoint(
    addr: SocketAddr,
    server: quinn::ServerConfig,
    opts: &QuicOptions,
) -> Result<quinn::Endpoint, NetError> {
    let bind_failed = |io| NetError::BindFailed { transport: Transport::Quic, addr, io };
    let socket = udp_socket(addr, opts).map_err(bind_failed)?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, Arc::new(quinn::TokioRuntime))
        .map_err(bind_failed)
}

/// Client addresses the node has a QUIC connection with, each with its
/// newest one, so that a port hop's new connection starts from where the
/// connection it replaces got to instead of from scratch.
///
/// A hop's connection runs between the same two hosts over the same network
/// path as the one it replaces; only the ports differ. RFC 9000 §9.4 keeps a
/// migrated connection's congestion state when only a port changed, and a
/// hop is that change made with a new connection. Started from quinn's
/// initial window (12,000 bytes) and its guessed 333 ms round trip, every
/// hop sent the download back through slow start: through a scratch
/// 100 Mbit/s link with a 40 ms round trip, a download hopping every 2 s
/// took 14 % longer than one that stayed put (ADR 0007, 2026-12-07). So a
/// new connection from an address with a live connection starts with that
/// connection's congestion window (at most the stream window: more could
/// never be in flight) and round trip. Another client behind the same
/// address (a NAT) starts from the same state: it shares that path's
/// bottleneck, and the congestion controller corrects an overshoot at its
/// first loss. A client's hop starts its own side (its upload) the same
/// way, from its live connection to the node ([`crate::connect_after`]).
///
/// A connection is filed under its client's address, and a client may move
/// without a new connection (QUIC connection migration, RFC 9000 §9: a new
/// network, a NAT that gave it another address). Its state then belongs to
/// its new path (quinn starts a new IP's path from scratch), not to the
/// address it left: a lookup checks the connection's address now, and
/// files one that has moved under its new address. The node's side of the
/// connection also looks at its client's address as it reads, and files a
/// move at once ([`PathMemory::moved`]): before, a hop's
/// connection from the new address started from scratch until a lookup at
/// the old address had found the move.
#[derive(Default)]
pub(crate) struct PathMemory {
    remembered: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    /// Each address's newest live connection.
    newest: HashMap<IpAddr, quinn::Connection>,
    /// The address each connection in `newest` is filed under, by
    /// `stable_id`: it may have moved since it was remembered.
    filed_under: HashMap<usize, IpAddr>,
}

/// Addresses remembered at most: each entry is a live connection, so it
/// stays far above what the handshake caps let through, and a full memory
/// only means new connections start from scratch.
const PATH_MEMORY_MAX_ADDRESSES: usize = 16_384;

impl Remembered {
    /// Files the connection under `from` under `to` instead, unless `to`
    /// has one already.
    fn refile(&mut self, from: IpAddr, to: IpAddr) {
        let Some(connection) = self.newest.remove(&from) else { return };
        if self.newest.contains_key(&to) {
            self.filed_under.remove(&connection.stable_id());
        } else {
            self.filed_under.insert(connection.stable_id(), to);
            self.newest.insert(to, connection);
        }
    }
}

impl PathMemory {
    /// The congestion window (bytes) and round trip of the newest live
    /// connection with `ip` now.
    pub(crate) fn congestion_of(&self, ip: IpAddr) -> Option<CongestionStart> {
        let mut remembered = self.remembered.lock().ok()?;
        let connection = remembered.newest.get(&ip)?;
        let now_at = connection.remote_address().ip();
        if now_at != ip {
            remembered.refile(ip, now_at);
            return None;
        }
        CongestionStart::of(connection)
    }

    /// Files `connection` under its client's address, as that address's
    /// newest.
    fn remember(&self, connection: &quinn::Connection) {
        let Ok(mut remembered) = self.remembered.lock() else { return };
        let ip = connection.remote_address().ip();
        if remembered.newest.len() >= PATH_MEMORY_MAX_ADDRESSES && !remembered.newest.contains_key(&ip) {
            return;
        }
        if let Some(replaced) = remembered.newest.insert(ip, connection.clone()) {
            remembered.filed_under.remove(&replaced.stable_id());
        }
        remembered.filed_under.insert(connection.stable_id(), ip);
    }

    /// Files `connection`, whose client is at `now_at` now (it migrated),
    /// under that address, if it is filed elsewhere and `now_at` has no
    /// connection of its own.
    pub(crate) fn moved(&self, connection: &quinn::Connection, now_at: IpAddr) {
        let Ok(mut remembered) = self.remembered.lock() else { return };
        match remembered.filed_under.get(&connection.stable_id()) {
            Some(&filed_at) if filed_at != now_at => remembered.refile(filed_at, now_at),
            _ => {}
        }
    }

    /// Called as a connection ends: its entry goes, wherever it is filed,
    /// unless a newer one replaced it.
    pub(crate) fn forget(&self, connection: &quinn::Connection) {
        let Ok(mut remembered) = self.remembered.lock() else { return };
        let Some(ip) = remembered.filed_under.remove(&connection.stable_id()) else { return };
        if remembered.newest.get(&ip).is_some_and(|c| c.stable_id() == connection.stable_id()) {
            remembered.newest.remove(&ip);
        }
    }
}

/// Where a live connection's congestion control has got to: the window
/// and round trip a new connection over the same path starts from (see
/// [`PathMemory`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CongestionStart {
    window_bytes: u64,
    rtt: Duration,
}

impl CongestionStart {
    /// Where `connection` has got to, unless it is closed.
    fn of(connection: &quinn::Connection) -> Option<CongestionStart> {
        if connection.close_reason().is_some() {
            return None;
        }
        let path = connection.stats().path;
        Some(CongestionStart { window_bytes: path.cwnd, rtt: path.rtt })
    }
}

/// A node's configuration for a connection that starts from a live
/// connection's congestion state (see [`PathMemory`]).
pub(crate) fn inherited_config(
    base: &quinn::ServerConfig,
    opts: &QuicOptions,
    start: CongestionStart,
) -> Result<Arc<quinn::ServerConfig>, NetError> {
    let mut server = base.clone();
    server.transport_config(Arc::new(transport_config(opts, true, Some(start))?));
    Ok(Arc::new(server))
}

/// A client's handle on one of its QUIC connections, kept once the
/// connection is handed to a session ([`Connection::live_path`]): a port
/// hop's next connection to the same node starts from where this one got
/// to ([`crate::connect_after`]), as the node's side does ([`PathMemory`]).
#[derive(Clone)]
pub struct LivePath {
    connection: quinn::Connection,
}

impl LivePath {
    pub(crate) fn new(connection: quinn::Connection) -> LivePath {
        LivePath { connection }
    }

    /// Where a new connection to `ip` starts: from this connection's state
    /// if it is open and runs to `ip` (the same node, so the same path).
    pub(crate) fn start_toward(&self, ip: IpAddr) -> Option<CongestionStart> {
        if self.connection.remote_address().ip() != ip {
            return None;
        }
        CongestionStart::of(&self.connection)
    }
}

fn negotiated_alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection.handshake_data()?.downcast::<HandshakeData>().ok()?.protocol
}

fn channel_binding(connection: &quinn::Connection) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    connection.export_keying_material(&mut out, CHANNEL_BINDING_LABEL, b"").map_err(|e| format!("{e:?}"))?;
    Ok(out)
}

/// The client side (the caller bounds it with the handshake timeout),
/// starting from a live connection's congestion state if `start` says so.
/// A closed UDP port gives no error, only silence: it ends in the timeout.
pub(crate) async fn connect(
    addr: SocketAddr,
    pin: [u8; 32],
    opts: &ClientOptions,
    start: Option<CongestionStart>,
) -> Result<Connection, NetError> {
    let unspecified = match addr.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    connect_from(unspecified, addr, pin, opts, start).await
}

/// [`connect`] from a socket bound to `local_ip` (tests: a client at
/// another loopback address).
async fn connect_from(
    local_ip: IpAddr,
    addr: SocketAddr,
    pin: [u8; 32],
    opts: &ClientOptions,
    start: Option<CongestionStart>,
) -> Result<Connection, NetError> {
    let name = server_name(opts)?;
    let (tls, verifier) = client_config(pin, ALPN_QUIC)?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| NetError::Config { reason: e.to_string() })?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(&opts.quic, false, start)?));

    let local = SocketAddr::new(local_ip, 0);
    let connect_error = |source| NetError::Connect { transport: Transport::Quic, addr, source };
    let socket = udp_socket(local, &opts.quic).map_err(connect_error)?;
    let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, Arc::new(quinn::TokioRuntime))
        .map_err(connect_error)?;
    let local_addr = endpoint.local_addr().map_err(connect_error)?;

    let handshake_error = |reason: String| NetError::Handshake { transport: Transport::Quic, peer: Some(addr), reason };
    let connecting = endpoint.connect_with(config, addr, &name.to_str()).map_err(|e| handshake_error(e.to_string()))?;
    let connection = match connecting.await {
        Ok(connection) => connection,
        Err(e) => return Err(verifier.rejection_error().unwrap_or_else(|| handshake_error(e.to_string()))),
    };
    let alpn = negotiated_alpn(&connection);
    if alpn.as_deref() != Some(ALPN_QUIC) {
        return Err(NetError::AlpnMismatch {
            transport: Transport::Quic,
            peer: Some(addr),
            expected: ALPN_QUIC,
            got: alpn,
        });
    }
    let channel_binding = channel_binding(&connection).map_err(handshake_error)?;
    let (mut send, recv) = connection.open_bi().await.map_err(|e| handshake_error(e.to_string()))?;
    send.write_all(&[STREAM_OPEN]).await.map_err(|e| handshake_error(e.to_string()))?;
    let stream = joined(send, recv, connection, endpoint, channel_binding, None);
    Ok(Connection::quic(stream, addr, local_addr))
}

/// A connection's one stream, either side's, once the handshake and the
/// stream's opening byte are through.
fn joined(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    connection: quinn::Connection,
    endpoint: quinn::Endpoint,
    channel_binding: [u8; 32],
    remembered: Option<Arc<PathMemory>>,
) -> QuicStream {
    let client_ip = connection.remote_address().ip();
    QuicStream {
        send: Some(send),
        recv,
        connection,
        endpoint,
        channel_binding,
        alpn: ALPN_QUIC.to_vec(),
        remembered,
        client_ip,
    }
}

/// The node's side for one incoming connection on `endpoint` (the caller
/// bounds it with the handshake timeout), with `config` instead of the
/// endpoint's own if given. The connection is remembered in `memory` for
/// as long as it lives.
pub(crate) async fn accept(
    incoming: quinn::Incoming,
    config: Option<Arc<quinn::ServerConfig>>,
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    memory: Arc<PathMemory>,
) -> Result<Connection, NetError> {
    let peer = incoming.remote_address();
    let handshake_error = |reason: String| NetError::Handshake { transport: Transport::Quic, peer: Some(peer), reason };
    let connecting = match config {
        Some(config) => incoming.accept_with(config),
        None => incoming.accept(),
    };
    let connection =
        connecting.map_err(|e| handshake_error(e.to_string()))?.await.map_err(|e| handshake_error(e.to_string()))?;
    let alpn = negotiated_alpn(&connection);
    if alpn.as_deref() != Some(ALPN_QUIC) {
        return Err(NetError::AlpnMismatch {
            transport: Transport::Quic,
            peer: Some(peer),
            expected: ALPN_QUIC,
            got: alpn,
        });
    }
    let channel_binding = channel_binding(&connection).map_err(handshake_error)?;
    let (send, mut recv) = connection.accept_bi().await.map_err(|e| handshake_error(e.to_string()))?;
    let mut first = [0u8; 1];
    recv.read_exact(&mut first).await.map_err(|e| handshake_error(e.to_string()))?;
    if first[0] != STREAM_OPEN {
        return Err(handshake_error(format!("stream opened with byte {:#04x}, expected {STREAM_OPEN:#04x}", first[0])));
    }
    memory.remember(&connection);
    let stream = joined(send, recv, connection, endpoint, channel_binding, Some(memory));
    Ok(Connection::quic(stream, peer, local_addr))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::{Listener, ServerOptions};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const NODE_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const OTHER_CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

    /// A node listening over QUIC on one port of `NODE_IP`: its listener,
    /// address and pin.
    async fn quic_listener(seed: u8) -> (Listener, SocketAddr, [u8; 32]) {
        let identity = crate::TlsIdentity::from_seed([seed; 32]).unwrap();
        let listener =
            Listener::bind(&[Transport::Quic], NODE_IP, 0..=0, &identity, &ServerOptions::default()).await.unwrap();
        let addr = SocketAddr::new(NODE_IP, listener.ports(Transport::Quic)[0]);
        (listener, addr, identity.pin())
    }

    /// A QUIC connection from a client socket on `client_ip` to `addr`,
    /// and the node's side of it, once a byte has gone through.
    async fn connected(
        listener: &Listener,
        client_ip: IpAddr,
        addr: SocketAddr,
        pin: [u8; 32],
    ) -> (Connection, Connection) {
        let mut client = connect_from(client_ip, addr, pin, &ClientOptions::default(), None).await.unwrap();
        client.write_all(b"x").await.unwrap();
        client.flush().await.unwrap();
        let mut node = listener.accept().await.unwrap();
        let mut said = [0u8; 1];
        node.read_exact(&mut said).await.unwrap();
        (client, node)
    }

    /// `bytes` from the node to the client: the node's window grows.
    async fn download(node: &mut Connection, client: &mut Connection, bytes: usize) {
        let sent = vec![7u8; bytes];
        let mut got = vec![0u8; bytes];
        let (wrote, read) = tokio::join!(
            async {
                node.write_all(&sent).await?;
                node.flush().await
            },
            client.read_exact(&mut got)
        );
        wrote.unwrap();
        read.unwrap();
        assert!(got == sent);
    }

    /// The client moves to `OTHER_CLIENT_IP` (its endpoint rebound there)
    /// and 8 MiB go to it, so the node follows at its first packet from
    /// the new address and the new path's window grows.
    async fn migrate(client: &mut Connection, node: &mut Connection) {
        let moved = std::net::UdpSocket::bind((OTHER_CLIENT_IP, 0)).unwrap();
        client.quic_endpoint().unwrap().rebind(moved).unwrap();
        download(node, client, 8 << 20).await;
        assert_eq!(node.peer_addr().ip(), OTHER_CLIENT_IP, "the node did not see the client move");
    }

    /// A client that moves to another address (QUIC connection migration:
    /// here its endpoint rebound from 127.0.0.1 to 127.0.0.2) takes its
    /// congestion state along. The node's memory of it was keyed by the
    /// address at accept, so a new connection from the address it had left
    /// (another client behind it) started from the moved connection's
    /// window, measured on another path; now it starts from scratch, and a
    /// new connection from where the client went starts from its window.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_migrated_connections_congestion_state_goes_with_it_to_its_new_address() {
        let (listener, addr, pin) = quic_listener(29).await;

        let (mut client, mut node) = connected(&listener, NODE_IP, addr, pin).await;
        let initial_bytes = node.congestion_window_bytes().unwrap();
        download(&mut node, &mut client, 8 << 20).await;
        let grown_bytes = node.congestion_window_bytes().unwrap();
        assert!(grown_bytes > 4 * initial_bytes, "8 MiB grew the window only from {initial_bytes} to {grown_bytes}");

        // The client moves; the node follows at its first packet from the
        // new address (its acknowledgements). quinn starts a new IP's path
        // from scratch, and a second download grows that one.
        migrate(&mut client, &mut node).await;
        let regrown_bytes = node.congestion_window_bytes().unwrap();
        assert!(regrown_bytes > 4 * initial_bytes, "the new path's window grew only to {regrown_bytes}");

        let (_behind_client, behind) = connected(&listener, NODE_IP, addr, pin).await;
        assert_eq!(
            behind.congestion_window_bytes(),
            Some(initial_bytes),
            "a new client at the address the live connection left started from its window"
        );
        let (_hop_client, hop) = connected(&listener, OTHER_CLIENT_IP, addr, pin).await;
        let hop_bytes = hop.congestion_window_bytes().unwrap();
        assert!(
            hop_bytes > 4 * initial_bytes,
            "a new connection from the moved client's address started from {hop_bytes} bytes, not its {regrown_bytes}"
        );
    }

    /// A migrated client's next hop: its connection stayed filed under the
    /// address it had left until a new connection from there looked it up,
    /// so a hop's connection from the address it moved to started from
    /// scratch (quinn's initial window) though the moved connection was
    /// live with a grown window. The node's side now files the move as it
    /// next reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_migrated_clients_next_hop_starts_from_its_window_without_a_lookup_at_the_old_address() {
        let (listener, addr, pin) = quic_listener(31).await;

        let (mut client, mut node) = connected(&listener, NODE_IP, addr, pin).await;
        let initial_bytes = node.congestion_window_bytes().unwrap();
        migrate(&mut client, &mut node).await;
        // The client's next bytes (a receipt, a window update): the node
        // reads them, as a session does all along.
        client.write_all(b"r").await.unwrap();
        client.flush().await.unwrap();
        let mut said = [0u8; 1];
        node.read_exact(&mut said).await.unwrap();
        let moved_bytes = node.congestion_window_bytes().unwrap();
        assert!(moved_bytes > 4 * initial_bytes, "the new path's window grew only to {moved_bytes}");

        let (_hop_client, hop) = connected(&listener, OTHER_CLIENT_IP, addr, pin).await;
        let hop_bytes = hop.congestion_window_bytes().unwrap();
        assert!(
            hop_bytes > 4 * initial_bytes,
            "the moved client's hop started from {hop_bytes} bytes ({initial_bytes} is a new connection's), \
             not from its live connection's {moved_bytes}"
        );
        drop((client, node));
    }

    /// A moved connection filed under its new address is forgotten there
    /// when it ends: a new connection from that address then starts from
    /// scratch, though the client keeps its end open (the node's lingers
    /// until it has read, so a stale entry would still look live).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_moved_connection_is_forgotten_at_its_new_address_when_it_ends() {
        let (listener, addr, pin) = quic_listener(30).await;

        let (mut client, mut node) = connected(&listener, NODE_IP, addr, pin).await;
        let initial_bytes = node.congestion_window_bytes().unwrap();
        migrate(&mut client, &mut node).await;
        // A lookup at the old address files it under the new one.
        let (_behind_client, _behind) = connected(&listener, NODE_IP, addr, pin).await;

        node.write_all(&[1u8; 64 << 10]).await.unwrap();
        drop(node);
        let (_next_client, next) = connected(&listener, OTHER_CLIENT_IP, addr, pin).await;
        assert_eq!(next.congestion_window_bytes(), Some(initial_bytes), "it started from a connection that had ended");
        drop(client);
    }
}
