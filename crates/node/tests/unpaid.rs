//! A client that stops paying, against a real node over real TLS: the
//! node serves exactly its credit window beyond the last valid receipt and
//! then pauses the client; it never carries more unpaid bytes than that.
//! The misbehaving client is the real client `Session`, driven by hand so
//! the test can drop its receipts before they reach the wire.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tollway_ledger::state::Channel;
use tollway_net::{ClientOptions, ServerOptions, TlsIdentity, Transport};
use tollway_node::{NodeServer, ReceiptBook, ServerConfig, StaticChannels};
use tollway_tunnel::frame::Frame;
use tollway_tunnel::session::{ClientTerms, Event, Limits, NodeTerms, Session};
use tollway_tunnel::{Dest, ExitPolicy, Host};
use tollway_types::amount::Usd;
use tollway_types::keys::SigningKey;
use tollway_types::tx::channel_id;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const MIB: u64 = 1 << 20;

/// Serves an endless stream of bytes to whoever connects.
async fn firehose() -> SocketAddr {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = vec![7u8; 64 * 1024];
                while s.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    addr
}

/// Runs a client session over `conn`, writing everything it transmits
/// except receipts when `pay` is false; returns the bytes received on one
/// stream to `dest` once nothing arrives for `quiet` or `enough` arrived.
async fn download(
    conn: tollway_net::Connection,
    terms: ClientTerms,
    dest: Dest,
    pay: bool,
    quiet: Duration,
    enough: u64,
) -> (u64, Vec<Event>) {
    let binding = conn.channel_binding();
    let mut session = Session::client(terms, Instant::now(), 0, binding);
    let (mut read, mut write) = tokio::io::split(conn);
    let mut received = 0u64;
    let mut events = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some((_, bytes)) = session.poll_transmit() {
            let mut out = Vec::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let (frame, used) = Frame::decode(rest).unwrap();
                if pay || !matches!(frame, Frame::Receipt(_)) {
                    out.extend_from_slice(&rest[..used]);
                }
                rest = &rest[used..];
            }
            write.write_all(&out).await.unwrap();
        }
        let mut handled = false;
        while let Some(e) = session.poll_event() {
            handled = true;
            match &e {
                Event::Established => {
                    session.open_stream(dest.clone()).unwrap();
                }
                Event::Data { stream: s, payload } => {
                    received += payload.len() as u64;
                    session.consumed(*s, payload.len());
                }
                _ => {}
            }
            events.push(e);
        }
        if received >= enough {
            return (received, events);
        }
        if handled {
            // Events may have queued frames (the open, window updates).
            continue;
        }
        match tokio::time::timeout(quiet, read.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => session.handle_input(Instant::now(), 0, &buf[..n]),
            _ => return (received, events),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_paying_gets_exactly_the_credit_window_and_is_paused() {
    let source = firehose().await;
    let client = SigningKey::from_label("freeloader");
    let key = SigningKey::from_label("exit-unpaid");
    let identity = TlsIdentity::from_seed([11; 32]).unwrap();
    let escrow = Usd(50_000_000);
    let channels = StaticChannels::default();
    let channel = Channel { client: client.public(), node: key.public(), escrow, paid: Usd::ZERO, paid_bytes: 0, expires_at_secs: u64::MAX / 2 };
    channels.0.lock().unwrap().insert(channel_id(&client.public(), 0), channel);
    let price = 1_000_000;
    let receipts = ReceiptBook::in_memory();
    let config = ServerConfig {
        terms: NodeTerms::new("tollway-unpaid".into(), key.public(), price),
        listen_ip: LOOPBACK,
        ports: 0..=0,
        transports: vec![Transport::Tls],
        policy: ExitPolicy { allow_loopback: true, ..ExitPolicy::default() },
        server: ServerOptions::default(),
        connect_timeout: Duration::from_secs(5),
        max_sessions: 10,
    };
    let server = NodeServer::start(config, &identity, Arc::new(channels), receipts.clone()).await.unwrap();
    let addr = server.local_addrs()[0].1;
    let terms = ClientTerms {
        chain_id: "tollway-unpaid".into(),
        node: key.public(),
        channel: channel_id(&client.public(), 0),
        key: client.clone(),
        escrow,
        settled_bytes: 0,
        settled_usd: Usd::ZERO,
        max_price_usd_micro_per_gib: price,
        limits: Limits::default(),
    };
    let dest = Dest::new(Host::Ip(source.ip()), source.port());

    // A paying client gets far more than the window.
    let conn = tollway_net::connect(Transport::Tls, addr, identity.pin(), &ClientOptions::default()).await.unwrap();
    let (paid_bytes, _) = download(conn, terms.clone(), dest.clone(), true, Duration::from_secs(3), 8 * MIB).await;
    assert!(paid_bytes >= 8 * MIB, "a paying client got only {paid_bytes} bytes");
    assert!(receipts.latest(&terms.channel).is_some());

    // The same client, not paying: the window is counted from its newest
    // receipt, which the node holds, so it gets exactly 2 MiB more.
    let baseline = receipts.latest(&terms.channel).unwrap().receipt.cumulative_bytes;
    let conn = tollway_net::connect(Transport::Tls, addr, identity.pin(), &ClientOptions::default()).await.unwrap();
    let mut terms2 = terms.clone();
    terms2.settled_bytes = 0;
    let (got, events) = download(conn, terms2, dest, false, Duration::from_millis(1500), u64::MAX).await;
    let paused = events.iter().find_map(|e| match e {
        Event::Paused { unpaid_bytes } => Some(*unpaid_bytes),
        _ => None,
    });
    eprintln!("unpaid client: baseline {baseline} B, received {got} B, node paused at {paused:?} B unpaid");
    assert_eq!(paused, Some(2 * MIB), "the node must pause at the window");
    // The node's unpaid bytes (what it delivered both ways beyond the
    // newest receipt) never exceed the window; the client received at most
    // that (the request bytes it sent count too).
    assert!(got <= 2 * MIB, "the node served {got} unpaid bytes");
    assert!(got >= 2 * MIB - 64 * 1024, "the node served only {got} bytes of the window");
}
