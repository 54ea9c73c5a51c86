//! Both transports over real loopback sockets: bytes arrive exactly, the
//! channel binding agrees, the pin is the only trust anchor, and the wire
//! says h2 / h3.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tollway_net::{
    accept_tls_over, connect, connect_tls_over, ClientOptions, Connection, NetError, ServerOptions, Transport,
};

const ROUND_TRIP_BYTES: usize = 3 * 1024 * 1024 + 12_345;

/// Writes `data`, shuts down, and reads the peer's bytes to the end.
async fn send_then_read<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    got
}

/// Reads the peer's bytes to the end, then writes `data` and shuts down.
async fn read_then_send<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, data: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    stream.write_all(data).await.unwrap();
    stream.shutdown().await.unwrap();
    got
}

async fn round_trip(transport: Transport) {
    let node = identity(1);
    let listener = listener(&node, &[transport], &ServerOptions::default()).await;
    let addr = addr_of(&listener, transport);
    let up = pattern(ROUND_TRIP_BYTES, 1);
    let down = pattern(ROUND_TRIP_BYTES - 777, 2);

    let server = {
        let down = down.clone();
        tokio::spawn(async move {
            let mut conn = listener.accept().await.unwrap();
            assert_eq!(conn.transport(), transport);
            assert_eq!(conn.alpn(), transport.alpn(), "the node sees the ordinary ALPN");
            let got = read_then_send(&mut conn, &down).await;
            (got, conn.channel_binding())
        })
    };
    let mut client = connect(transport, addr, node.pin(), &client_opts()).await.unwrap();
    assert_eq!(client.alpn(), transport.alpn());
    assert_eq!(client.peer_addr(), addr);
    let got_down = send_then_read(&mut client, &up).await;
    let client_binding = client.channel_binding();
    drop(client);
    let (got_up, server_binding) = server.await.unwrap();

    assert!(got_up == up, "client → node bytes differ ({} vs {} bytes)", got_up.len(), up.len());
    assert!(got_down == down, "node → client bytes differ ({} vs {} bytes)", got_down.len(), down.len());
    assert_eq!(client_binding, server_binding, "channel binding equal on both ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trip_is_byte_exact() {
    round_trip(Transport::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_round_trip_is_byte_exact() {
    round_trip(Transport::Quic).await;
}

#[tokio::test]
async fn tls_prefers_aes_128_gcm() {
    let node = identity(1);
    let listener = listener(&node, &[Transport::Tls], &ServerOptions::default()).await;
    let client = connect(Transport::Tls, addr_of(&listener, Transport::Tls), node.pin(), &client_opts()).await.unwrap();
    let server = listener.accept().await.unwrap();
    assert_eq!(client.cipher_suite().as_deref(), Some("TLS13_AES_128_GCM_SHA256"));
    assert_eq!(server.cipher_suite(), client.cipher_suite());
}

#[tokio::test]
async fn binding_is_shared_by_the_ends_and_differs_between_connections() {
    let node = identity(2);
    let listener = listener(&node, &Transport::ALL, &ServerOptions::default()).await;
    for transport in Transport::ALL {
        let addr = addr_of(&listener, transport);
        let mut pairs = Vec::new();
        for _ in 0..2 {
            let client = connect(transport, addr, node.pin(), &client_opts()).await.unwrap();
            let server = listener.accept().await.unwrap();
            assert_eq!(server.transport(), transport);
            assert_eq!(client.channel_binding(), server.channel_binding(), "{transport}");
            pairs.push((client, server));
        }
        assert_ne!(pairs[0].0.channel_binding(), pairs[1].0.channel_binding(), "{transport}");
        assert_ne!(pairs[0].0.channel_binding(), [0u8; 32]);
    }
}

#[tokio::test]
async fn wrong_pin_is_a_pin_mismatch_on_both_transports() {
    let node = identity(3);
    let impostor_pin = identity(4).pin();
    let listener = listener(&node, &Transport::ALL, &ServerOptions::default()).await;
    for transport in Transport::ALL {
        let err = connect(transport, addr_of(&listener, transport), impostor_pin, &client_opts()).await.unwrap_err();
        match err {
            NetError::PinMismatch { expected, got } => {
                assert_eq!(expected, impostor_pin, "{transport}");
                assert_eq!(got, node.pin(), "{transport}");
            }
            other => panic!("{transport}: expected PinMismatch, got {other}"),
        }
    }
    // The node counted two failed handshakes and handed out nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = listener.stats();
    assert_eq!(stats.handshakes_ok, 0);
    assert_eq!(stats.handshakes_failed, 2);
}

/// A TLS server on loopback with an arbitrary rustls configuration.
async fn rogue_server(config: rustls::ServerConfig) -> std::net::SocketAddr {
    let tcp = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let mut sink = Vec::new();
                    let _ = tls.read_to_end(&mut sink).await;
                }
            });
        }
    });
    addr
}

fn ring_server_builder() -> rustls::ConfigBuilder<rustls::ServerConfig, rustls::WantsVerifier> {
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
}

#[tokio::test]
async fn a_ca_signed_certificate_is_rejected() {
    // A perfectly ordinary web PKI chain (CA → leaf for the SNI we send),
    // with ECDSA keys: no pin can match, whatever the CA.
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec![tollway_net::DEFAULT_SERVER_NAME.to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca_issuer).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let mut config = ring_server_builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let addr = rogue_server(config).await;

    let err = connect(Transport::Tls, addr, identity(5).pin(), &client_opts()).await.unwrap_err();
    assert!(matches!(err, NetError::BadCertificate { .. }), "expected BadCertificate, got {err}");
    assert!(err.to_string().contains("not Ed25519"), "{err}");
}

/// A server holding the node's own key but its own (different)
/// self-signed certificate around it is the node: the pin is on the key.
/// One with a different self-signed Ed25519 key is not.
#[tokio::test]
async fn a_different_self_signed_certificate_is_rejected() {
    let node = identity(6);
    let stranger = identity(7);
    let stranger_seed = [7u8; 32];
    let mut pkcs8 = hex_decode("302e020100300506032b657004220420");
    pkcs8.extend_from_slice(&stranger_seed);
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(pkcs8.into());
    let mut config = ring_server_builder()
        .with_no_client_auth()
        .with_single_cert(vec![stranger.certificate_der().to_vec().into()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let addr = rogue_server(config).await;

    let err = connect(Transport::Tls, addr, node.pin(), &client_opts()).await.unwrap_err();
    assert!(matches!(err, NetError::PinMismatch { got, .. } if got == stranger.pin()), "got {err}");
}

#[tokio::test]
async fn a_server_without_alpn_is_an_alpn_mismatch() {
    let seed = [8u8; 32];
    let node = tollway_net::TlsIdentity::from_seed(seed).unwrap();
    let mut pkcs8 = hex_decode("302e020100300506032b657004220420");
    pkcs8.extend_from_slice(&seed);
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(pkcs8.into());
    // The right key, but no ALPN (an HTTP/1.1-only server, say).
    let config = ring_server_builder()
        .with_no_client_auth()
        .with_single_cert(vec![node.certificate_der().to_vec().into()], key)
        .unwrap();
    let addr = rogue_server(config).await;
    let err = connect(Transport::Tls, addr, node.pin(), &client_opts()).await.unwrap_err();
    assert!(matches!(err, NetError::AlpnMismatch { got: None, .. }), "got {err}");
}

#[tokio::test]
async fn a_closed_port_is_refused_over_tls_and_times_out_over_quic() {
    let free = std::net::TcpListener::bind((LOOPBACK, 0)).unwrap().local_addr().unwrap();
    let pin = identity(9).pin();
    let err = connect(Transport::Tls, free, pin, &client_opts()).await.unwrap_err();
    assert!(matches!(err, NetError::ConnectRefused { .. }), "got {err}");

    let udp_free = std::net::UdpSocket::bind((LOOPBACK, 0)).unwrap().local_addr().unwrap();
    let opts = ClientOptions { handshake_timeout: Duration::from_millis(300), ..ClientOptions::default() };
    let err = connect(Transport::Quic, udp_free, pin, &opts).await.unwrap_err();
    assert!(matches!(err, NetError::HandshakeTimeout { transport: Transport::Quic, .. }), "got {err}");
}

#[tokio::test]
async fn an_ip_address_is_not_a_server_name() {
    let opts = ClientOptions { server_name: "127.0.0.1".to_string(), ..ClientOptions::default() };
    let node = identity(10);
    let listener = listener(&node, &[Transport::Tls], &ServerOptions::default()).await;
    let err = connect(Transport::Tls, addr_of(&listener, Transport::Tls), node.pin(), &opts).await.unwrap_err();
    assert!(matches!(err, NetError::BadServerName { .. }), "got {err}");
}

/// Runs `connect_tls_over` and `accept_tls_over` on the two ends of a
/// stream pair and checks bytes and binding.
async fn tls_over_pair<A, B>(client_end: A, node_end: B)
where
    A: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let exit = identity(11);
    let server = {
        let exit = exit.clone();
        tokio::spawn(async move {
            let mut tls = accept_tls_over(node_end, &exit, &ServerOptions::default()).await.unwrap();
            let got = read_then_send(&mut tls, b"from the exit").await;
            (got, tls.channel_binding())
        })
    };
    let mut tls = connect_tls_over(client_end, exit.pin(), &client_opts()).await.unwrap();
    assert_eq!(tls.alpn(), b"h2");
    let up = pattern(300_000, 3);
    let down = send_then_read(&mut tls, &up).await;
    let (got_up, server_binding) = server.await.unwrap();
    assert!(got_up == up);
    assert_eq!(down, b"from the exit");
    assert_eq!(tls.channel_binding(), server_binding);
}

#[tokio::test]
async fn tls_over_a_duplex_stream() {
    let (a, b) = tokio::io::duplex(16 * 1024);
    tls_over_pair(a, b).await;
}

#[tokio::test]
async fn tls_over_a_tcp_stream() {
    let tcp = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (client_end, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), tcp.accept());
    tls_over_pair(client_end.unwrap(), accepted.unwrap().0).await;
}

/// Multi-hop in miniature: the client's TLS session with the exit runs
/// inside its transport connection to a relay, which forwards ciphertext;
/// the inner pin is the exit's, the outer the relay's, over both
/// transports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_inside_a_connection_through_a_relay() {
    let relay = identity(12);
    let exit = identity(13);
    let relay_listener = listener(&relay, &Transport::ALL, &ServerOptions::default()).await;
    for transport in Transport::ALL {
        let outer = connect(transport, addr_of(&relay_listener, transport), relay.pin(), &client_opts()).await.unwrap();
        let relayed: Connection = relay_listener.accept().await.unwrap();
        // The relay hands its end of the connection to the exit as is; a
        // real relay would copy bytes between two connections.
        let exit_task = {
            let exit = exit.clone();
            tokio::spawn(async move {
                let mut inner = accept_tls_over(relayed, &exit, &ServerOptions::default()).await.unwrap();
                let got = read_then_send(&mut inner, b"pong").await;
                (got, inner.channel_binding())
            })
        };
        let mut inner = connect_tls_over(outer, exit.pin(), &client_opts()).await.unwrap();
        let reply = send_then_read(&mut inner, b"ping").await;
        let (got, binding) = exit_task.await.unwrap();
        assert_eq!((got.as_slice(), reply.as_slice()), (&b"ping"[..], &b"pong"[..]), "{transport}");
        assert_eq!(inner.channel_binding(), binding);
        assert_ne!(inner.channel_binding(), inner.get_ref().channel_binding(), "inner and outer sessions differ");
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// A gathered write over TLS takes every slice at once (a driver's path
/// writer hands it what is queued: a stream's last data and its Fin). The
/// default for a stream without its own wrote the first slice alone, a
/// record and a system call per slice.
#[tokio::test]
async fn a_gathered_write_over_tls_takes_every_slice() {
    let node = identity(14);
    let listener = listener(&node, &[Transport::Tls], &ServerOptions::default()).await;
    let addr = addr_of(&listener, Transport::Tls);
    let server = tokio::spawn(async move {
        let mut conn = listener.accept().await.unwrap();
        read_then_send(&mut conn, b"").await
    });
    let mut conn = connect(Transport::Tls, addr, node.pin(), &client_opts()).await.unwrap();
    assert!(conn.is_write_vectored());
    let (a, b) = (pattern(1000, 5), pattern(300, 6));
    let slices = [std::io::IoSlice::new(&a), std::io::IoSlice::new(&[]), std::io::IoSlice::new(&b)];
    assert_eq!(conn.write_vectored(&slices).await.unwrap(), a.len() + b.len());
    conn.shutdown().await.unwrap();
    let got = server.await.unwrap();
    assert!(got == [a, b].concat());
}
