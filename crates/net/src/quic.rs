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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

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

fn transport_config(opts: &QuicOptions, is_server: bool) -> Result<Arc<quinn::TransportConfig>, NetError> {
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
    Ok(Arc::new(config))
}

/// A node's endpoint on one UDP address.
pub(crate) fn server_endpoint(
    addr: SocketAddr,
    identity: &TlsIdentity,
    opts: &QuicOptions,
) -> Result<quinn::Endpoint, NetError> {
    let bind_failed = |io| NetError::BindFailed { transport: Transport::Quic, addr, io };
    let crypto = QuicServerConfig::try_from(identity.quic_server.clone())
        .map_err(|e| NetError::Identity { reason: e.to_string() })?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport_config(opts, true)?);
    let socket = udp_socket(addr, opts).map_err(bind_failed)?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, Arc::new(quinn::TokioRuntime))
        .map_err(bind_failed)
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
    config.transport_config(transport_config(&opts.quic, false)?);

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
    let stream = QuicStream { send: Some(send), recv, connection, endpoint, channel_binding, alpn: ALPN_QUIC.to_vec() };
    Ok(Connection::quic(stream, addr, local_addr))
}

/// The node's side for one incoming connection on `endpoint` (the caller
/// bounds it with the handshake timeout).
pub(crate) async fn accept(
    incoming: quinn::Incoming,
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
) -> Result<Connection, NetError> {
    let peer = incoming.remote_address();
    let handshake_error = |reason: String| NetError::Handshake { transport: Transport::Quic, peer: Some(peer), reason };
    let connection = incoming
        .accept()
        .map_err(|e| handshake_error(e.to_string()))?
        .await
        .map_err(|e| handshake_error(e.to_string()))?;
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
    let stream = QuicStream { send: Some(send), recv, connection, endpoint, channel_binding, alpn: ALPN_QUIC.to_vec() };
    Ok(Connection::quic(stream, peer, local_addr))
}
