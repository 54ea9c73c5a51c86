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

fn transport_config(opts: &QuicOptions, is_server: bool) -> Result<quinn::TransportConfig, NetError> {
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
    Ok(config)
}

/// A node's QUIC configuration, shared by the endpoints of its ports.
pub(crate) fn server_config(identity: &TlsIdentity, opts: &QuicOptions) -> Result<quinn::ServerConfig, NetError> {
    let crypto = QuicServerConfig::try_from(identity.quic_server.clone())
        .map_err(|e| NetError::Identity { reason: e.to_string() })?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(opts, true)?));
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
/// first loss.
#[derive(Default)]
pub(crate) struct PathMemory {
    newest: Mutex<HashMap<IpAddr, quinn::Connection>>,
}

/// Addresses remembered at most: each entry is a live connection, so it
/// stays far above what the handshake caps let through, and a full memory
/// only means new connections start from scratch.
const PATH_MEMORY_MAX_ADDRESSES: usize = 16_384;

impl PathMemory {
    /// The congestion window (bytes) and round trip of the newest live
    /// connection with `ip`.
    pub(crate) fn congestion_of(&self, ip: IpAddr) -> Option<(u64, Duration)> {
        let newest = self.newest.lock().ok()?;
        let connection = newest.get(&ip).filter(|c| c.close_reason().is_none())?;
        let path = connection.stats().path;
        Some((path.cwnd, path.rtt))
    }

    fn remember(&self, ip: IpAddr, connection: &quinn::Connection) {
        let Ok(mut newest) = self.newest.lock() else { return };
        if newest.len() >= PATH_MEMORY_MAX_ADDRESSES && !newest.contains_key(&ip) {
            return;
        }
        newest.insert(ip, connection.clone());
    }

    /// Called as a connection ends: its entry goes, unless a newer one
    /// from the same address replaced it.
    pub(crate) fn forget(&self, ip: IpAddr, connection: &quinn::Connection) {
        let Ok(mut newest) = self.newest.lock() else { return };
        if newest.get(&ip).is_some_and(|c| c.stable_id() == connection.stable_id()) {
            newest.remove(&ip);
        }
    }
}

/// The configuration of a connection that starts from a live connection's
/// congestion window and round trip (see [`PathMemory`]).
pub(crate) fn inherited_config(
    base: &quinn::ServerConfig,
    opts: &QuicOptions,
    (window_bytes, rtt): (u64, Duration),
) -> Result<Arc<quinn::ServerConfig>, NetError> {
    let mut transport = transport_config(opts, true)?;
    let mut cubic = quinn::congestion::CubicConfig::default();
    cubic.initial_window(window_bytes.min(u64::from(opts.stream_window_bytes)));
    transport.congestion_controller_factory(Arc::new(cubic));
    transport.initial_rtt(rtt);
    let mut server = base.clone();
    server.transport_config(Arc::new(transport));
    Ok(Arc::new(server))
}

fn negotiated_alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection.handshake_data()?.downcast::<HandshakeData>().ok()?.protocol
}

fn channel_binding(connection: &quinn::Connection) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    connection.export_keying_material(&mut out, CHANNEL_BINDING_LABEL, b"").map_err(|e| format!("{e:?}"))?;
    Ok(out)
}

/// The client side (the caller bounds it with the handshake timeout). A
/// closed UDP port gives no error, only silence: it ends in the timeout.
pub(crate) async fn connect(addr: SocketAddr, pin: [u8; 32], opts: &ClientOptions) -> Result<Connection, NetError> {
    let name = server_name(opts)?;
    let (tls, verifier) = client_config(pin, ALPN_QUIC)?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| NetError::Config { reason: e.to_string() })?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(&opts.quic, false)?));

    let unspecified = match addr.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let local = SocketAddr::new(unspecified, 0);
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
    remembered: Option<(Arc<PathMemory>, IpAddr)>,
) -> QuicStream {
    QuicStream { send: Some(send), recv, connection, endpoint, channel_binding, alpn: ALPN_QUIC.to_vec(), remembered }
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
    memory.remember(peer.ip(), &connection);
    let stream = joined(send, recv, connection, endpoint, channel_binding, Some((memory, peer.ip())));
    Ok(Connection::quic(stream, peer, local_addr))
}
