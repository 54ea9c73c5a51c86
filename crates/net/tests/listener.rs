//! The listener: every port of a range at once, and handshakes that one
//! slow client cannot hold up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollway_net::{
    connect, connect_after, ClientOptions, Listener, NetError, ServerOptions, Transport, MAX_LISTEN_PORTS,
};

#[tokio::test]
async fn a_three_port_range_accepts_on_every_port_and_reports_it() {
    let node = identity(20);
    let listener = listener_on_range(&node, 3, &ServerOptions::default()).await;
    let tcp_ports = listener.ports(Transport::Tls);
    assert_eq!(tcp_ports.len(), 3);
    assert_eq!(tcp_ports, listener.ports(Transport::Quic), "TCP and UDP on the same ports");
    assert_eq!(tcp_ports[2], tcp_ports[0] + 2, "consecutive");

    for transport in Transport::ALL {
        for &port in &tcp_ports {
            let addr = SocketAddr::new(LOOPBACK, port);
            let mut client = connect(transport, addr, node.pin(), &client_opts()).await.unwrap();
            client.write_all(&port.to_be_bytes()).await.unwrap();
            client.flush().await.unwrap();
            let mut server = listener.accept().await.unwrap();
            assert_eq!((server.transport(), server.local_port()), (transport, port));
            assert_eq!(server.peer_addr().port(), client.local_port());
            let mut said = [0u8; 2];
            server.read_exact(&mut said).await.unwrap();
            assert_eq!(u16::from_be_bytes(said), port, "the bytes came in on the port reported");
        }
    }
    assert_eq!(listener.stats().handshakes_ok, 6);
}

#[tokio::test]
#[allow(clippy::reversed_empty_ranges)]
async fn bad_ranges_are_refused_and_a_taken_port_names_itself() {
    let node = identity(21);
    let opts = ServerOptions::default();
    for (range, what) in [(10..=9, "after"), (0..=5, "port 0"), (1000..=(1000 + MAX_LISTEN_PORTS as u16), "more than")]
    {
        let err = Listener::bind(&Transport::ALL, LOOPBACK, range, &node, &opts).await.err().unwrap();
        assert!(matches!(err, NetError::BadPortRange { .. }) && err.to_string().contains(what), "{err}");
    }
    let taken = std::net::TcpListener::bind((LOOPBACK, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = Listener::bind(&[Transport::Tls], LOOPBACK, port..=port, &node, &opts).await.err().unwrap();
    match err {
        NetError::BindFailed { transport: Transport::Tls, addr, .. } => assert_eq!(addr.port(), port),
        other => panic!("expected BindFailed, got {other}"),
    }
}

/// `node run` on a taken port said "cannot listen on tls …: Address already
/// in use (os error 98) (is the port in use, or below 1024 without
/// privilege?): Address already in use (os error 98)": the OS error twice
/// (message and source) and a question the error's kind answers.
#[tokio::test]
async fn a_taken_port_is_said_once_and_without_guessing() {
    let node = identity(23);
    let taken = std::net::TcpListener::bind((LOOPBACK, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = Listener::bind(&[Transport::Tls], LOOPBACK, port..=port, &node, &ServerOptions::default()).await.err().unwrap();
    let mut said = vec![err.to_string()];
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        said.push(e.to_string());
        source = e.source();
    }
    let said = said.join(": ");
    assert_eq!(said.matches("os error").count(), 1, "{said}");
    assert!(said.contains("holds this port") && !said.contains("1024"), "{said}");
}

/// Clients that open TCP and send nothing do not delay anyone else: the
/// node's handshake timeout is long here, yet a real client is served at
/// once.
#[tokio::test]
async fn slowloris_clients_do_not_block_another_handshake() {
    let node = identity(22);
    let opts = ServerOptions { handshake_timeout: Duration::from_secs(60), ..ServerOptions::default() };
    let listener = listener(&node, &[Transport::Tls], &opts).await;
    let addr = addr_of(&listener, Transport::Tls);
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let quick = ClientOptions { handshake_timeout: Duration::from_secs(2), ..ClientOptions::default() };
    let client = connect(Transport::Tls, addr, node.pin(), &quick).await.unwrap();
    let server =
        tokio::time::timeout(Duration::from_secs(2), listener.accept()).await.expect("accept not blocked").unwrap();
    assert_eq!(server.channel_binding(), client.channel_binding());
    drop(idle);
}

/// With the handshake cap at one, a silent client holds the only permit
/// until the node's (short) handshake timeout drops it; then the real
/// client is served.
#[tokio::test]
async fn a_silent_client_is_dropped_at_the_handshake_timeout() {
    let node = identity(23);
    let opts = ServerOptions {
        handshake_timeout: Duration::from_millis(300),
        max_concurrent_handshakes: 1,
        ..ServerOptions::default()
    };
    let listener = listener(&node, &[Transport::Tls], &opts).await;
    let addr = addr_of(&listener, Transport::Tls);
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let quick = ClientOptions { handshake_timeout: Duration::from_secs(3), ..ClientOptions::default() };
    let client = connect(Transport::Tls, addr, node.pin(), &quick).await.unwrap();
    let server = listener.accept().await.unwrap();
    assert_eq!(server.channel_binding(), client.channel_binding());
    assert_eq!(listener.stats().handshakes_timed_out, 1);
    // The node closed the silent connection.
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(1), silent.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_closed_listener_reports_closed() {
    let node = identity(24);
    let mut listener = listener(&node, &Transport::ALL, &ServerOptions::default()).await;
    let addr = addr_of(&listener, Transport::Tls);
    listener.close();
    let accepted = tokio::time::timeout(Duration::from_secs(2), listener.accept()).await.unwrap();
    assert!(matches!(accepted, Err(NetError::Closed)));
    let err = connect(Transport::Tls, addr, node.pin(), &client_opts()).await.unwrap_err();
    assert!(matches!(err, NetError::ConnectRefused { .. } | NetError::Handshake { .. }), "{err}");
}

/// Thread-per-core: each accepted TCP connection moves to the shard with
/// the fewest live connections, its socket works there (an echo served by
/// a task on [`tollway_net::Connection::runtime`]), and the shard's count
/// falls back when the connection is gone.
#[tokio::test]
async fn a_sharded_listener_spreads_connections_and_serves_each_on_its_shard() {
    let node = identity(25);
    let shards = tollway_net::Shards::start(2).unwrap();
    let opts = ServerOptions { shards: Some(shards.handles()), ..ServerOptions::default() };
    let listener = listener(&node, &[Transport::Tls], &opts).await;
    let addr = addr_of(&listener, Transport::Tls);
    let mut clients = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..4 {
        clients.push(connect(Transport::Tls, addr, node.pin(), &client_opts()).await.unwrap());
        let mut server = listener.accept().await.unwrap();
        let (thread_tx, thread_rx) = tokio::sync::oneshot::channel();
        server.runtime().clone().spawn(async move {
            let _ = thread_tx.send(std::thread::current().name().map(str::to_string));
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match server.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if server.write_all(&buf[..n]).await.is_err() || server.flush().await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = server.shutdown().await;
        });
        threads.push(thread_rx.await.unwrap().unwrap_or_default());
    }
    assert_eq!(threads, ["tollway-shard-0", "tollway-shard-1", "tollway-shard-0", "tollway-shard-1"]);
    assert_eq!(shards.handles().live_per_shard(), [2, 2]);

    for (i, client) in clients.iter_mut().enumerate() {
        let sent = pattern(200_000, i as u8);
        let (mut read, mut write) = tokio::io::split(client);
        let writer = async {
            write.write_all(&sent).await.unwrap();
            write.flush().await.unwrap();
        };
        let mut echoed = vec![0u8; sent.len()];
        let reader = read.read_exact(&mut echoed);
        let (_, got) = tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(writer, reader) })
            .await
            .expect("echo within 10 s");
        got.unwrap();
        assert!(echoed == sent, "connection {i}: the echo differs");
    }

    for mut client in clients {
        client.shutdown().await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while shards.handles().live_per_shard() != [0, 0] {
        assert!(tokio::time::Instant::now() < deadline, "live per shard stays {:?}", shards.handles().live_per_shard());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Raw TCP connections from `from` that each send one byte and then
/// nothing: each holds a handshake slot until the node's timeout.
async fn stalled_from(from: &str, to: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
        let mut s = socket.connect(to).await.unwrap();
        s.write_all(&[0x16]).await.unwrap(); // a TLS record's first byte
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    held
}

/// One address that opens handshakes and stalls them gets its own share
/// of the slots, not all of them: a client elsewhere is served at once.
#[tokio::test]
async fn one_address_cannot_take_every_handshake_slot() {
    let node = identity(26);
    let opts = ServerOptions {
        handshake_timeout: Duration::from_secs(60),
        max_concurrent_handshakes: 8,
        max_handshakes_per_address: 4,
        ..ServerOptions::default()
    };
    let listener = listener(&node, &[Transport::Tls], &opts).await;
    let addr = addr_of(&listener, Transport::Tls);
    let held = stalled_from("127.0.0.2", addr, 8).await;
    assert_eq!(listener.stats().refused_per_address, 4);
    let quick = ClientOptions { handshake_timeout: Duration::from_secs(2), ..ClientOptions::default() };
    let client = connect(Transport::Tls, addr, node.pin(), &quick).await.expect("served beside the stalled address");
    let server = listener.accept().await.unwrap();
    assert_eq!(server.channel_binding(), client.channel_binding());
    drop(held);
}

/// With half the handshake slots taken, a QUIC client is asked to prove
/// its address (a spoofed Initial cannot) and is then served.
#[tokio::test]
async fn under_pressure_quic_asks_for_proof_of_address_and_still_serves() {
    let node = identity(27);
    let opts = ServerOptions {
        handshake_timeout: Duration::from_secs(60),
        max_concurrent_handshakes: 4,
        ..ServerOptions::default()
    };
    let listener = listener(&node, &Transport::ALL, &opts).await;
    let held = stalled_from("127.0.0.2", addr_of(&listener, Transport::Tls), 3).await;
    let quick = ClientOptions { handshake_timeout: Duration::from_secs(3), ..ClientOptions::default() };
    let client = connect(Transport::Quic, addr_of(&listener, Transport::Quic), node.pin(), &quick).await.unwrap();
    let server = listener.accept().await.unwrap();
    assert_eq!(server.channel_binding(), client.channel_binding());
    assert!(listener.stats().quic_retries >= 1, "{:?}", listener.stats());
    drop(held);
}

/// A port hop's new QUIC connection comes from a client address the node
/// has a live connection with, over the same path: it starts from that
/// connection's congestion window, where it started from QUIC's initial
/// 14,720 bytes and every hop of a download went back through slow start
/// (ADR 0007, 2026-12-07). A connection from an address with none live
/// still starts from the initial window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hops_quic_connection_starts_from_the_live_connections_congestion_window() {
    let node = identity(28);
    let listener = listener_on_range(&node, 2, &ServerOptions::default()).await;
    let ports = listener.ports(Transport::Quic);
    let on_port = |i: usize| SocketAddr::new(LOOPBACK, ports[i]);
    let pin = node.pin();
    let accept_from = |addr: SocketAddr| {
        let listener = &listener;
        async move {
            let mut client = connect(Transport::Quic, addr, pin, &client_opts()).await.unwrap();
            client.write_all(b"x").await.unwrap();
            client.flush().await.unwrap();
            let mut server = listener.accept().await.unwrap();
            let mut said = [0u8; 1];
            server.read_exact(&mut said).await.unwrap();
            (client, server)
        }
    };

    let (mut first_client, mut first) = accept_from(on_port(0)).await;
    let initial_bytes = first.congestion_window_bytes().unwrap();
    // A download: the node's window grows in slow start.
    let download = pattern(8 << 20, 28);
    let sending = tokio::spawn(async move {
        first.write_all(&download).await.unwrap();
        first.flush().await.unwrap();
        first
    });
    let mut got = vec![0u8; 8 << 20];
    first_client.read_exact(&mut got).await.unwrap();
    let first = sending.await.unwrap();
    let grown_bytes = first.congestion_window_bytes().unwrap();
    assert!(grown_bytes > 4 * initial_bytes, "8 MiB grew the window only from {initial_bytes} to {grown_bytes} bytes");

    // The hop: the same client address, the next port, the first still live.
    let (second_client, second) = accept_from(on_port(1)).await;
    let started_bytes = second.congestion_window_bytes().unwrap();
    assert!(
        started_bytes > 4 * initial_bytes,
        "the hop's connection started from {started_bytes} bytes, not from the live one's {grown_bytes}"
    );

    // Once both are gone, a new connection starts from scratch.
    drop((first_client, first, second_client, second));
    let (_third_client, third) = accept_from(on_port(0)).await;
    assert_eq!(third.congestion_window_bytes(), Some(initial_bytes), "no live connection to start from");
}

/// The client's side of a port hop: only the node started a hop's
/// connection from the live one's congestion state, so a client's upload
/// still went back through slow start at every hop. Its next connection
/// to the same node (`connect_after`) now starts from its live
/// connection's window; one to another node's address starts from
/// scratch, and TLS has no such state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_hop_connection_starts_from_its_live_connections_congestion_window() {
    let node = identity(30);
    let listener = listener_on_range(&node, 2, &ServerOptions::default()).await;
    let ports = listener.ports(Transport::Quic);
    let on_port = |i: usize| SocketAddr::new(LOOPBACK, ports[i]);

    let mut first = connect(Transport::Quic, on_port(0), node.pin(), &client_opts()).await.unwrap();
    let initial_bytes = first.congestion_window_bytes().unwrap();
    // An upload: the client's window grows in slow start.
    let upload = pattern(8 << 20, 30);
    let (wrote, read) = tokio::join!(
        async {
            first.write_all(&upload).await?;
            first.flush().await
        },
        async {
            let mut server = listener.accept().await.unwrap();
            let mut got = vec![0u8; 8 << 20];
            server.read_exact(&mut got).await.map(|_| (server, got))
        }
    );
    wrote.unwrap();
    let (_first_server, got) = read.unwrap();
    assert!(got == upload, "the upload arrived different");
    let grown_bytes = first.congestion_window_bytes().unwrap();
    assert!(grown_bytes > 4 * initial_bytes, "8 MiB grew the window only from {initial_bytes} to {grown_bytes} bytes");

    // The hop: the next port of the same node, the first still live.
    let live = first.live_path().unwrap();
    let hop = connect_after(Transport::Quic, on_port(1), node.pin(), &client_opts(), Some(&live)).await.unwrap();
    let started_bytes = hop.congestion_window_bytes().unwrap();
    assert!(
        started_bytes > 4 * initial_bytes,
        "the hop's connection started from {started_bytes} bytes, not from the live one's {grown_bytes}"
    );

    // Another node's address is another path.
    let elsewhere_node = identity(31);
    let elsewhere_ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
    let elsewhere = Listener::bind(&[Transport::Quic], elsewhere_ip, 0..=0, &elsewhere_node, &ServerOptions::default())
        .await
        .unwrap();
    let elsewhere_addr = SocketAddr::new(elsewhere_ip, elsewhere.ports(Transport::Quic)[0]);
    let other = connect_after(Transport::Quic, elsewhere_addr, elsewhere_node.pin(), &client_opts(), Some(&live))
        .await
        .unwrap();
    assert_eq!(other.congestion_window_bytes(), Some(initial_bytes), "another node's connection inherited the window");

    let tls = connect(Transport::Tls, addr_of(&listener, Transport::Tls), node.pin(), &client_opts()).await.unwrap();
    assert!(tls.live_path().is_none());
}
