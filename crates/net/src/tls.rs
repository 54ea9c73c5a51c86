//! TLS 1.3 over TCP, and over any byte stream (multi-hop).

use crate::buffered::BufferedTcp;
use crate::conn::SecureStream;
use crate::identity::crypto_provider;
use crate::verify::PinVerifier;
use crate::{
    ClientOptions, Connection, NetError, ServerOptions, TlsIdentity, Transport, ALPN_TLS, CHANNEL_BINDING_LABEL,
};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A client configuration that pins `pin` and offers `alpn`, and the
/// verifier that remembers why it refused a certificate. One per attempt;
/// no session resumption, so every connection checks the pin.
pub(crate) fn client_config(pin: [u8; 32], alpn: &[u8]) -> Result<(rustls::ClientConfig, Arc<PinVerifier>), NetError> {
    let verifier = PinVerifier::new(pin);
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Config { reason: e.to_string() })?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok((config, verifier))
}

/// The SNI to send: must be a DNS name (an IP address would send none,
/// which ordinary HTTPS clients rarely do).
pub(crate) fn server_name(opts: &ClientOptions) -> Result<ServerName<'static>, NetError> {
    match ServerName::try_from(opts.server_name.clone()) {
        Ok(name @ ServerName::DnsName(_)) => Ok(name),
        _ => Err(NetError::BadServerName { name: opts.server_name.clone() }),
    }
}

/// Connects TCP to `addr` and runs the TLS handshake (the caller bounds it
/// with the handshake timeout).
pub(crate) async fn connect_tcp(addr: SocketAddr, pin: [u8; 32], opts: &ClientOptions) -> Result<Connection, NetError> {
    let tcp = TcpStream::connect(addr).await.map_err(|source| match source.kind() {
        std::io::ErrorKind::ConnectionRefused => NetError::ConnectRefused { transport: Transport::Tls, addr },
        _ => NetError::Connect { transport: Transport::Tls, addr, source },
    })?;
    // The tunnel interleaves small frames (receipts, acks) with bulk data.
    let _ = tcp.set_nodelay(true);
    let local_addr =
        tcp.local_addr().map_err(|source| NetError::Connect { transport: Transport::Tls, addr, source })?;
    let tcp = BufferedTcp::new(tcp);
    let stream = client_handshake(tcp, pin, opts, Some(addr)).await?;
    Ok(Connection::tls(stream, addr, local_addr))
}

async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    pin: [u8; 32],
    opts: &ClientOptions,
    peer: Option<SocketAddr>,
) -> Result<SecureStream<S>, NetError> {
    let name = server_name(opts)?;
    let (config, verifier) = client_config(pin, ALPN_TLS)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake_error = |reason: String| NetError::Handshake { transport: Transport::Tls, peer, reason };
    let tls = match connector.connect(name, stream).await {
        Ok(tls) => tls,
        Err(e) => return Err(verifier.rejection_error().unwrap_or_else(|| handshake_error(e.to_string()))),
    };
    let channel_binding = alpn_and_binding(tls.get_ref().1, peer)?;
    Ok(SecureStream { stream: tokio_rustls::TlsStream::Client(tls), channel_binding, alpn: ALPN_TLS.to_vec() })
}

/// The node's side of the handshake on an accepted stream (the caller
/// bounds it with the handshake timeout).
pub(crate) async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    identity: &TlsIdentity,
    peer: Option<SocketAddr>,
) -> Result<SecureStream<S>, NetError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.tls_server.clone());
    let handshake_error = |reason: String| NetError::Handshake { transport: Transport::Tls, peer, reason };
    let tls = acceptor.accept(stream).await.map_err(|e| handshake_error(e.to_string()))?;
    let channel_binding = alpn_and_binding(tls.get_ref().1, peer)?;
    Ok(SecureStream { stream: tokio_rustls::TlsStream::Server(tls), channel_binding, alpn: ALPN_TLS.to_vec() })
}

/// After either side's handshake: the negotiated ALPN must be ours (on the
/// node, a client that offered none is not one of ours; rustls refuses a
/// wrong one itself), then the channel binding both ends export.
fn alpn_and_binding<D>(conn: &rustls::ConnectionCommon<D>, peer: Option<SocketAddr>) -> Result<[u8; 32], NetError> {
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    if alpn.as_deref() != Some(ALPN_TLS) {
        return Err(NetError::AlpnMismatch { transport: Transport::Tls, peer, expected: ALPN_TLS, got: alpn });
    }
    conn.export_keying_material([0u8; 32], CHANNEL_BINDING_LABEL, None)
        .map_err(|e| NetError::Handshake { transport: Transport::Tls, peer, reason: e.to_string() })
}

/// Client-side TLS inside an established byte stream: for multi-hop, the
/// client's session with the exit runs inside the stream a relay
/// forwards, so the relay sees only ciphertext. Checks the exit's `pin` as
/// [`crate::connect`] does; bounded by `opts.handshake_timeout`.
pub async fn connect_tls_over<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    pin: [u8; 32],
    opts: &ClientOptions,
) -> Result<SecureStream<S>, NetError> {
    match tokio::time::timeout(opts.handshake_timeout, client_handshake(stream, pin, opts, None)).await {
        Ok(result) => result,
        Err(_) => {
            Err(NetError::HandshakeTimeout { transport: Transport::Tls, peer: None, timeout: opts.handshake_timeout })
        }
    }
}

/// The node's side of [`connect_tls_over`]: TLS with `identity` inside an
/// established byte stream; bounded by `opts.handshake_timeout`.
pub async fn accept_tls_over<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    identity: &TlsIdentity,
    opts: &ServerOptions,
) -> Result<SecureStream<S>, NetError> {
    match tokio::time::timeout(opts.handshake_timeout, server_handshake(stream, identity, None)).await {
        Ok(result) => result,
        Err(_) => {
            Err(NetError::HandshakeTimeout { transport: Transport::Tls, peer: None, timeout: opts.handshake_timeout })
        }
    }
}

/// A node's handshake on an accepted TCP connection.
pub(crate) async fn accept_tcp(
    tcp: TcpStream,
    peer: SocketAddr,
    identity: &TlsIdentity,
) -> Result<Connection, NetError> {
    let _ = tcp.set_nodelay(true);
    let local_addr = tcp.local_addr().map_err(|e| NetError::Handshake {
        transport: Transport::Tls,
        peer: Some(peer),
        reason: e.to_string(),
    })?;
    let tcp = BufferedTcp::new(tcp);
    let stream = server_handshake(tcp, identity, Some(peer)).await?;
    Ok(Connection::tls(stream, peer, local_addr))
}
