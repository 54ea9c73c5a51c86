//! Payment against a real node over real TLS. A client that stops paying
//! is served exactly the credit window beyond its last valid receipt and
//! then paused; forged, replayed, stale and over-escrow receipts are
//! refused with their reasons; a hello signed for another connection is
//! refused. The misbehaving client is the real client `Session`, driven
//! by hand so the test can drop its receipts or put others on the wire.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tollway_ledger::state::Channel;
use tollway_net::{ClientOptions, SecureStream, ServerOptions, TlsIdentity, Transport};
use tollway_node::{ChannelSource, NodeServer, ReceiptBook, ServerConfig, StaticChannels};
use tollway_tunnel::frame::Frame;
use tollway_tunnel::session::{ClientTerms, Event, Limits, NodeTerms, Session};
use tollway_tunnel::{Dest, ErrorCode, ExitPolicy, Host};
use tollway_types::amount::Usd;
use tollway_types::keys::{AccountId, SigningKey};
use tollway_types::tx::{channel_id, ChannelId, Receipt, SignedReceipt};

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
    download_with(conn, terms, dest, pay, quiet, enough, |_| Vec::new()).await
}

/// As `download`; once 1.5 MiB arrived, writes the frames `inject` makes
/// from the first receipt this client sent (once).
async fn download_with(
    conn: tollway_net::Connection,
    terms: ClientTerms,
    dest: Dest,
    pay: bool,
    quiet: Duration,
    enough: u64,
    inject: impl Fn(&SignedReceipt) -> Vec<Frame>,
) -> (u64, Vec<Event>) {
    let mut first_receipt: Option<SignedReceipt> = None;
    let mut injected = false;
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
                if let (Frame::Receipt(r), None) = (&frame, &first_receipt) {
                    first_receipt = Some(r.clone());
                }
                if pay || !matches!(frame, Frame::Receipt(_)) {
                    out.extend_from_slice(&rest[..used]);
                }
                rest = &rest[used..];
            }
            // The node may have closed and reset the connection (a channel
            // that expired): the download ends there.
            if write.write_all(&out).await.is_err() {
                return (received, events);
            }
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
                    session.consumed(Instant::now(), *s, payload.len());
                }
                _ => {}
            }
            events.push(e);
        }
        if received >= enough {
            return (received, events);
        }
        if let (false, Some(first)) = (injected, &first_receipt) {
            if received >= 3 * MIB / 2 {
                injected = true;
                for frame in inject(first) {
                    write.write_all(&frame.to_bytes()).await.unwrap();
                }
            }
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
    let (node, terms, dest) = unpaid_channel("freeloader", "exit-unpaid").await;
    let (addr, receipts) = (node.addr, node.receipts.clone());

    // A paying client gets far more than the window.
    let conn = tollway_net::connect(Transport::Tls, addr, node.pin, &ClientOptions::default()).await.unwrap();
    let (paid_bytes, _) = download(conn, terms.clone(), dest.clone(), true, Duration::from_secs(3), 8 * MIB).await;
    assert!(paid_bytes >= 8 * MIB, "a paying client got only {paid_bytes} bytes");
    assert!(receipts.latest(&terms.channel).is_some());

    // The same client, not paying: the window is counted from its newest
    // receipt, which the node holds, and what the first session delivered
    // past it (what was in flight when the client stopped reading) is owed
    // on the next one, inside the same window.
    let baseline = receipts.latest(&terms.channel).unwrap().receipt.cumulative_bytes;
    for _ in 0..500 {
        if node.server.n_sessions() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let conn = tollway_net::connect(Transport::Tls, addr, node.pin, &ClientOptions::default()).await.unwrap();
    let mut terms2 = terms.clone();
    terms2.settled_bytes = 0;
    let (got, events) = download(conn, terms2, dest, false, Duration::from_millis(1500), u64::MAX).await;
    let paused = events.iter().find_map(|e| match e {
        Event::Paused { unpaid_bytes } => Some(*unpaid_bytes),
        _ => None,
    });
    eprintln!("unpaid client: baseline {baseline} B, received {got} B, node paused at {paused:?} B unpaid");
    // The node's unpaid bytes (what it delivered both ways beyond the
    // newest receipt, the first session's included) never exceed the
    // window; the client received at most that. (When the first left a
    // whole window unpaid, in flight as its client stopped reading, this
    // one gets nothing and is never told it is paused.)
    assert!(got <= 2 * MIB, "the node served {got} unpaid bytes");
    assert!(got == 0 || paused == Some(2 * MIB), "served {got} B, then paused at {paused:?}: not the window");
}

/// A running node with one channel from `client`, whose chain record
/// says `paid` micro-USD are settled already.
struct TestNode {
    server: NodeServer,
    addr: SocketAddr,
    pin: [u8; 32],
    account: AccountId,
    receipts: Arc<ReceiptBook>,
}

const CHAIN: &str = "tollway-pay";
const PRICE: u64 = 1_000_000;

async fn node_with_channel(client: &SigningKey, label: &str, escrow: Usd, paid: Usd) -> TestNode {
    node_with_channel_until(client, label, escrow, paid, u64::MAX / 2).await
}

/// As `node_with_channel`, the channel expiring at `expires_at_secs`.
async fn node_with_channel_until(client: &SigningKey, label: &str, escrow: Usd, paid: Usd, expires_at_secs: u64) -> TestNode {
    node_with(client, label, (escrow, paid, expires_at_secs), ServerOptions::default(), Duration::ZERO).await
}

/// Answers as `StaticChannels`, `delay` later (a chain a round trip away).
struct SlowChannels(StaticChannels, Duration);

impl ChannelSource for SlowChannels {
    fn channel(&self, id: ChannelId) -> tollway_net::driver::BoxFuture<Result<Channel, ErrorCode>> {
        let (found, delay) = (self.0.channel(id), self.1);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            found.await
        })
    }
}

/// As `node_with_channel_until`, accepting as `server` says, its channel
/// lookups answered `lookup_delay` late.
async fn node_with(
    client: &SigningKey,
    label: &str,
    channel: (Usd, Usd, u64),
    server: ServerOptions,
    lookup_delay: Duration,
) -> TestNode {
    node_on_book(client, label, channel, lookup_delay, ReceiptBook::in_memory(), |config| config.server = server).await
}

/// As `node_with`, keeping its receipts in `receipts`, its config as
/// `configure` leaves it.
async fn node_on_book(
    client: &SigningKey,
    label: &str,
    (escrow, paid, expires_at_secs): (Usd, Usd, u64),
    lookup_delay: Duration,
    receipts: Arc<ReceiptBook>,
    configure: impl FnOnce(&mut ServerConfig),
) -> TestNode {
    let key = SigningKey::from_label(label);
    let identity = TlsIdentity::from_seed(*blake3::hash(label.as_bytes()).as_bytes()).unwrap();
    let channels = StaticChannels::default();
    let channel = Channel { paid, ..Channel::opened(client.public(), key.public(), escrow, expires_at_secs) };
    channels.0.lock().unwrap().insert(channel_id(&client.public(), 0), channel);
    let mut config = ServerConfig {
        terms: NodeTerms::new(CHAIN.into(), key.public(), PRICE),
        listen_ip: LOOPBACK,
        ports: 0..=0,
        transports: vec![Transport::Tls],
        policy: ExitPolicy { allow_loopback: true, ..ExitPolicy::default() },
        server: ServerOptions::default(),
        connect_timeout: Duration::from_secs(5),
        max_sessions: 10,
        max_rate_bytes_per_sec: None,
    };
    configure(&mut config);
    let channels = Arc::new(SlowChannels(channels, lookup_delay));
    let server = NodeServer::start(config, &identity, channels, receipts.clone()).await.unwrap();
    let addr = server.local_addrs()[0].1;
    TestNode { server, addr, pin: identity.pin(), account: key.public(), receipts }
}

/// Waits until the node has let its sessions go.
async fn sessions_gone(node: &TestNode) {
    for _ in 0..500 {
        if node.server.n_sessions() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the node kept its sessions");
}

/// Opens a session over `conn` and returns what the client's first
/// receipt must cover there: the newest receipt the node holds plus what
/// the channel's earlier sessions left unpaid (the hello's
/// `carried_bytes`).
async fn owed_at_hello(conn: tollway_net::Connection, terms: &ClientTerms) -> u64 {
    let mut session = Session::client(terms.clone(), Instant::now(), 0, conn.channel_binding());
    let (mut read, mut write) = tokio::io::split(conn);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some((_, bytes)) = session.poll_transmit() {
            write.write_all(&bytes).await.unwrap();
            // The TLS stream may hold back what the socket did not take at
            // once until the next write, and nothing is written until the
            // node answers.
            write.flush().await.unwrap();
        }
        while let Some(e) = session.poll_event() {
            match e {
                Event::Established => return session.cumulative_bytes(),
                Event::Closed { code, message, .. } => panic!("the node refused the session: {code:?} {message}"),
                _ => {}
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the node hung up before its hello");
        session.handle_input(Instant::now(), 0, &buf[..n]);
    }
}

/// The client's side of the channel to `node`.
/// A node whose chain knows a channel from `client_label` with $50 of
/// escrow and nothing settled, the client's terms for it, and a
/// destination that sends as fast as it can.
async fn unpaid_channel(client_label: &str, node_label: &str) -> (TestNode, ClientTerms, Dest) {
    let source = firehose().await;
    let client = SigningKey::from_label(client_label);
    let escrow = Usd(50_000_000);
    let node = node_with_channel(&client, node_label, escrow, Usd::ZERO).await;
    let terms = terms_for(&client, &node, escrow, Usd::ZERO);
    (node, terms, Dest::new(Host::Ip(source.ip()), source.port()))
}

fn terms_for(client: &SigningKey, node: &TestNode, escrow: Usd, settled_usd: Usd) -> ClientTerms {
    ClientTerms {
        chain_id: CHAIN.into(),
        node: node.account,
        channel: channel_id(&client.public(), 0),
        key: client.clone(),
        escrow,
        settled_bytes: 0,
        settled_usd,
        max_price_usd_micro_per_gib: PRICE,
        limits: Limits::default(),
        earlier: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_stale_and_over_escrow_receipts_are_refused_on_the_wire() {
    let source = firehose().await;
    let client = SigningKey::from_label("payer");
    let escrow = Usd(5_000_000);
    // The chain has settled 1000 micro-USD on the channel already.
    let node = node_with_channel(&client, "exit-receipts", escrow, Usd(1_000)).await;
    let (addr, pin) = (node.addr, node.pin);
    let channel = channel_id(&client.public(), 0);
    let terms = terms_for(&client, &node, escrow, Usd(1_000));
    let conn = tollway_net::connect(Transport::Tls, addr, pin, &ClientOptions::default()).await.unwrap();
    let dest = Dest::new(Host::Ip(source.ip()), source.port());
    let signed = |key: &SigningKey, usd: u128, bytes: u64| {
        Frame::Receipt(
            Receipt { chain_id: CHAIN.into(), channel, cumulative_usd: Usd(usd), cumulative_bytes: bytes }.sign(key),
        )
    };
    let mallory = SigningKey::from_label("mallory");
    let (_, events) = download_with(conn, terms, dest, true, Duration::from_secs(3), 4 * MIB, |first| {
        vec![
            // Forged: another key signed it.
            signed(&mallory, 4_000, 2 * MIB),
            // Replayed: the client's own first receipt again.
            Frame::Receipt(first.clone()),
            // Stale: below what the chain has settled.
            signed(&client, 900, MIB),
            // Over the escrow.
            signed(&client, 5_000_001, 3 * MIB),
        ]
    })
    .await;
    let refused: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::ReceiptRejected { code, .. } => Some(code.as_str()),
            _ => None,
        })
        .collect();
    eprintln!("refused on the wire: {refused:?}");
    assert_eq!(refused, ["bad_receipt_signature", "stale_receipt", "stale_receipt", "over_escrow"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_signed_for_another_connection_is_refused_on_the_wire() {
    let client = SigningKey::from_label("lifter");
    let escrow = Usd(5_000_000);
    let node = node_with_channel(&client, "exit-hello", escrow, Usd::ZERO).await;
    let (addr, pin) = (node.addr, node.pin);
    let terms = terms_for(&client, &node, escrow, Usd::ZERO);
    let conn = tollway_net::connect(Transport::Tls, addr, pin, &ClientOptions::default()).await.unwrap();
    // The hello signs a binding that is not this connection's (as if it
    // were lifted from another connection).
    let mut session = Session::client(terms, Instant::now(), 0, [0xAB; 32]);
    let (mut read, mut write) = tokio::io::split(conn);
    while let Some((_, bytes)) = session.poll_transmit() {
        write.write_all(&bytes).await.unwrap();
    }
    // rustls holds what it was given until flushed.
    write.flush().await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), read.read(&mut buf)).await.unwrap().unwrap();
    session.handle_input(Instant::now(), 0, &buf[..n]);
    let closed = std::iter::from_fn(|| session.poll_event()).find_map(|e| match e {
        Event::Closed { code, message, .. } => Some((code, message)),
        _ => None,
    });
    let (code, message) = closed.expect("the node refused");
    assert_eq!(code, tollway_tunnel::ErrorCode::BadHello, "{message}");
    // And then it hangs up.
    let rest = tokio::time::timeout(Duration::from_secs(5), read.read(&mut buf)).await.unwrap();
    assert!(matches!(rest, Ok(0) | Err(_)), "{rest:?}");
}

/// The code a session closed with, if it closed.
fn closed_with(events: &[Event]) -> Option<ErrorCode> {
    events.iter().find_map(|e| match e {
        Event::Closed { code, .. } => Some(*code),
        _ => None,
    })
}

/// A client session on `node` that pays nothing, in a task: paused at the
/// credit window, it stays open until nothing has arrived for `quiet`.
fn unpaid_session(node: &TestNode, terms: &ClientTerms, dest: &Dest, quiet: Duration) -> tokio::task::JoinHandle<(u64, Vec<Event>)> {
    let (addr, pin, terms, dest) = (node.addr, node.pin, terms.clone(), dest.clone());
    tokio::spawn(async move {
        let conn = tollway_net::connect(Transport::Tls, addr, pin, &ClientOptions::default()).await.unwrap();
        download(conn, terms, dest, false, quiet, u64::MAX).await
    })
}

/// Each session meters from the channel's newest receipt, so sessions side
/// by side on one channel would each be paid over the same range and the
/// node could settle only one: k sessions for the price of one. A second
/// session takes the channel over and the first is closed, its unpaid
/// bytes owed on the second; a third within five seconds is refused. A
/// client that pays nothing gets one credit window in all, however many
/// sessions it opens (before: 2 MiB each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_side_by_side_on_one_channel_are_not_each_paid_for() {
    let (node, terms, dest) = unpaid_channel("sybil-sessions", "exit-one-session").await;
    // The first, unpaid, is paused at the window and stays open…
    let first = unpaid_session(&node, &terms, &dest, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // …until the second takes the channel over.
    let second = unpaid_session(&node, &terms, &dest, Duration::from_secs(4));
    let (got_first, first_events) = first.await.unwrap();
    let told = |events: &[Event]| -> Vec<String> {
        events.iter().filter(|e| !matches!(e, Event::Data { .. })).map(|e| format!("{e:?}")).collect()
    };
    assert_eq!(closed_with(&first_events), Some(ErrorCode::ChannelBusy), "{:?}", told(&first_events));
    // A third, within five seconds of the takeover, while the second is
    // open (paused at its window).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let conn = tollway_net::connect(Transport::Tls, node.addr, node.pin, &ClientOptions::default()).await.unwrap();
    let (got_third, third_events) = download(conn, terms.clone(), dest.clone(), false, Duration::from_secs(2), u64::MAX).await;
    let (got_second, _) = second.await.unwrap();
    eprintln!(
        "unpaid sessions on one channel: {got_first} B, {got_second} B, then {got_third} B ({:?})",
        closed_with(&third_events)
    );
    assert_eq!(got_first, 2 * MIB, "the first session's window");
    assert_eq!(got_second, 0, "the second owes the first's window: nothing more unpaid");
    assert_eq!(got_third, 0);
    assert_eq!(closed_with(&third_events), Some(ErrorCode::ChannelBusy), "{:?}", told(&third_events));
}

/// A client on `node` that opens four streams to `dest` and then only
/// reads, until the node closes its session; once `after` bytes have
/// arrived it says so on `going`. It writes nothing after its opens (no
/// receipt, no window update), so that the node, which stops reading as
/// it closes, closes the connection cleanly rather than resetting it over
/// unread bytes: the client then gets every byte the node sent. Returns
/// the bytes its session metered on the channel (all it received) and the
/// code the node closed it with (`None`: the connection ended first).
async fn read_until_closed(
    node: &TestNode,
    terms: ClientTerms,
    dest: Dest,
    after: u64,
    going: tokio::sync::oneshot::Sender<()>,
) -> (u64, Option<ErrorCode>) {
    let conn = tollway_net::connect(Transport::Tls, node.addr, node.pin, &ClientOptions::default()).await.unwrap();
    let mut session = Session::client(terms, Instant::now(), 0, conn.channel_binding());
    let (mut read, mut write) = tokio::io::split(conn);
    let (mut going, mut received, mut opened) = (Some(going), 0u64, false);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !opened {
            while let Some((_, bytes)) = session.poll_transmit() {
                write.write_all(&bytes).await.unwrap();
                write.flush().await.unwrap();
            }
        }
        let mut handled = false;
        while let Some(e) = session.poll_event() {
            match e {
                Event::Established => {
                    for _ in 0..4 {
                        session.open_stream(dest.clone()).unwrap();
                    }
                    handled = true;
                }
                Event::Data { payload, .. } => {
                    received += payload.len() as u64;
                    opened = true;
                }
                Event::Closed { code, .. } => return (session.cumulative_bytes(), Some(code)),
                _ => {}
            }
        }
        if received >= after {
            if let Some(going) = going.take() {
                let _ = going.send(());
            }
        }
        if handled {
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => session.handle_input(Instant::now(), 0, &buf[..n]),
            _ => return (session.cumulative_bytes(), None),
        }
    }
}

/// What a session delivers while it is being taken over is owed on the
/// channel: the new session's first receipt covers every byte the old one
/// delivered. The node read the old session's unpaid bytes and then closed
/// it, and what the old one delivered in between (a busy download's bytes
/// already in its driver) was owed by no one. The race is the old driver's
/// against the new session's claim, so it is run ten times, each on a
/// node of its own (a channel is taken over at most every 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_delivered_by_a_session_as_it_is_taken_over_are_owed() {
    let source = firehose().await;
    let dest = Dest::new(Host::Ip(source.ip()), source.port());
    let client = SigningKey::from_label("busy-when-taken");
    let escrow = Usd(50_000_000);
    for run in 0..10 {
        // A credit window as wide as the session's (8 MiB), so that the
        // node sends on for a while with no word from the client.
        let label = format!("exit-busy-takeover-{run}");
        let node = node_on_book(&client, &label, (escrow, Usd::ZERO, u64::MAX / 2), Duration::ZERO, ReceiptBook::in_memory(), |config| {
            config.terms.credit_window_bytes = config.terms.limits.session_window_bytes;
        })
        .await;
        let terms = terms_for(&client, &node, escrow, Usd::ZERO);
        // The second connection is ready before the first session starts,
        // so that its hello takes the channel over while the node sends.
        let second = tollway_net::connect(Transport::Tls, node.addr, node.pin, &ClientOptions::default()).await.unwrap();
        let (going, downloading) = tokio::sync::oneshot::channel();
        let (first, owed) = tokio::join!(read_until_closed(&node, terms.clone(), dest.clone(), MIB, going), async {
            downloading.await.unwrap();
            owed_at_hello(second, &terms).await
        });
        let (delivered, closed) = first;
        eprintln!("run {run}, taken over while downloading: {delivered} B delivered, {owed} B owed on the next session");
        assert_eq!(closed, Some(ErrorCode::ChannelBusy), "the first session was closed for the second");
        assert_eq!(owed, delivered, "every byte the first session delivered is owed on the second");
    }
}

/// A client that never pays, hangs up at the pause and reconnects, again
/// and again, gets one credit window in all: what a closed session
/// delivered unpaid is owed on the channel's next one. (Only a takeover of
/// a session still open carried it: each new session got 2 MiB more.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_at_the_pause_and_reconnects_gets_no_new_window() {
    let (node, terms, dest) = unpaid_channel("reconnector", "exit-reconnect").await;
    let mut per_session = Vec::new();
    for _ in 0..3 {
        let conn = tollway_net::connect(Transport::Tls, node.addr, node.pin, &ClientOptions::default()).await.unwrap();
        let (got, events) = download(conn, terms.clone(), dest.clone(), false, Duration::from_millis(1500), u64::MAX).await;
        // The connection is dropped: wait until the node has let the
        // session go, so that the next one finds the channel free.
        for _ in 0..500 {
            if node.server.n_sessions() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(node.server.n_sessions(), 0, "the node kept the session");
        per_session.push((got, events.iter().find_map(|e| match e {
            Event::Paused { unpaid_bytes } => Some(*unpaid_bytes),
            _ => None,
        })));
    }
    eprintln!("unpaid sessions one after another: {per_session:?}");
    assert!(node.receipts.latest(&terms.channel).is_none(), "no receipt was ever sent");
    assert_eq!(per_session[0], (2 * MIB, Some(2 * MIB)), "the first session's window, paused at its end");
    for (got, _) in &per_session[1..] {
        assert_eq!(*got, 0, "a later session owes the first's window: nothing more unpaid");
    }
}

/// What a closed session left unpaid is still owed after the node
/// restarts on the same receipt book: the node keeps the debts with the
/// receipts. It kept them in memory only, so a client that stopped paying
/// got a fresh credit window on each channel after every restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debt_left_by_a_closed_session_is_owed_after_the_node_restarts() {
    let source = firehose().await;
    let client = SigningKey::from_label("restart-debtor");
    let escrow = Usd(50_000_000);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("receipts.json");
    let channel = (escrow, Usd::ZERO, u64::MAX / 2);
    let start = |book| node_on_book(&client, "exit-restart", channel, Duration::ZERO, book, |_| {});
    let node = start(ReceiptBook::open(file.clone()).unwrap()).await;
    let terms = terms_for(&client, &node, escrow, Usd::ZERO);
    let dest = Dest::new(Host::Ip(source.ip()), source.port());
    let conn = tollway_net::connect(Transport::Tls, node.addr, node.pin, &ClientOptions::default()).await.unwrap();
    let (got, _) = download(conn, terms.clone(), dest, false, Duration::from_millis(1500), u64::MAX).await;
    assert_eq!(got, 2 * MIB, "the first session's window");
    sessions_gone(&node).await;
    // Stopped, the node writes its book (as `node run` does at stop), and
    // starts again on that file.
    node.server.shutdown();
    node.receipts.flush().unwrap();
    drop(node);
    let node = start(ReceiptBook::open(file).unwrap()).await;
    assert!(node.receipts.latest(&terms.channel).is_none(), "no receipt was ever sent");
    let conn = tollway_net::connect(Transport::Tls, node.addr, node.pin, &ClientOptions::default()).await.unwrap();
    let owed = owed_at_hello(conn, &terms).await;
    assert_eq!(owed, 2 * MIB, "the next session after the restart carries the closed one's debt");
}

/// A session that hangs up while the node still looks its channel up
/// leaves the channel's debt where it was. The lookup claimed the channel
/// when it returned, closed session or not: it took the debt the last
/// session left with it, and the next session got a new credit window,
/// every time a client opened a session and hung up at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_gone_before_its_channel_lookup_returns_does_not_clear_the_debt() {
    let source = firehose().await;
    let client = SigningKey::from_label("hang-up-early");
    let escrow = Usd(50_000_000);
    let lookup = Duration::from_millis(300);
    let node = node_with(&client, "exit-slow-chain", (escrow, Usd::ZERO, u64::MAX / 2), ServerOptions::default(), lookup).await;
    let terms = terms_for(&client, &node, escrow, Usd::ZERO);
    let dest = Dest::new(Host::Ip(source.ip()), source.port());
    let opts = ClientOptions::default();
    let connect = || tollway_net::connect(Transport::Tls, node.addr, node.pin, &opts);
    let wait_closed = || async {
        for _ in 0..500 {
            if node.server.n_sessions() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the node kept the session");
    };
    // A whole window unpaid, then gone.
    let (got, _) = download(connect().await.unwrap(), terms.clone(), dest.clone(), false, Duration::from_millis(1500), u64::MAX).await;
    assert_eq!(got, 2 * MIB);
    wait_closed().await;
    for _ in 0..2 {
        // A hello, and the connection dropped before the lookup returns.
        let conn = connect().await.unwrap();
        let mut session = Session::client(terms.clone(), Instant::now(), 0, conn.channel_binding());
        let (_read, mut write) = tokio::io::split(conn);
        while let Some((_, bytes)) = session.poll_transmit() {
            write.write_all(&bytes).await.unwrap();
        }
        // rustls holds what it was given until flushed.
        write.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop((_read, write));
        tokio::time::sleep(lookup * 2).await;
        wait_closed().await;
    }
    let (got, _) = download(connect().await.unwrap(), terms, dest, false, Duration::from_millis(1500), u64::MAX).await;
    assert_eq!(got, 0, "the first session's debt was cleared by a session that never got its channel");
}

/// A session whose lookup took the channel's debt but whose channel was
/// then refused (the escrow left buys less than a receipt interval) leaves
/// the debt owed, as does one that closes before the lookup's answer
/// reaches it: neither took its channel. The lookup's take was for good,
/// so the debt was forgiven (a client that hung up as its lookup returned
/// started a fresh credit window). Every later session on this channel is
/// refused too, so the node's book shows the debt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debt_taken_by_a_session_refused_its_channel_is_owed_still() {
    let source = firehose().await;
    let client = SigningKey::from_label("refused-after-lookup");
    // Buys 1.54 MiB at the node's price: one receipt interval and a half.
    let escrow = Usd(1_500);
    let node = node_with_channel(&client, "exit-refused-after-lookup", escrow, Usd::ZERO).await;
    let terms = terms_for(&client, &node, escrow, Usd::ZERO);
    let dest = Dest::new(Host::Ip(source.ip()), source.port());
    let opts = ClientOptions::default();
    let connect = || tollway_net::connect(Transport::Tls, node.addr, node.pin, &opts);
    // Served to the escrow's end, the client pays its first receipt (about
    // 1 MiB) only and hangs up owing the rest.
    let conn = connect().await.unwrap();
    let (got, _) = download_with(conn, terms.clone(), dest.clone(), false, Duration::from_secs(3), u64::MAX, |first| {
        vec![Frame::Receipt(first.clone())]
    })
    .await;
    sessions_gone(&node).await;
    let paid = node.receipts.latest(&terms.channel).map_or(0, |r| r.receipt.cumulative_bytes);
    assert!(paid >= MIB && paid < got, "served {got} B, paid for {paid} B");
    let owed = node.receipts.owed();
    assert!(matches!(owed[..], [(channel, debt)] if channel == terms.channel && debt.bytes > 0), "{owed:?}");
    eprintln!("served {got} B, paid for {paid} B, owed {owed:?}");
    // The next session's lookup takes the debt; the escrow left (about
    // 520 micro-USD) buys less than a receipt interval, so its channel is
    // refused.
    let (_, events) = download(connect().await.unwrap(), terms, dest, false, Duration::from_secs(2), u64::MAX).await;
    assert_eq!(closed_with(&events), Some(ErrorCode::EscrowExhausted));
    sessions_gone(&node).await;
    assert_eq!(node.receipts.owed(), owed, "the debt was forgiven to a session that never took its channel");
}

/// A channel is checked at the hello, but a session may outlive it: the
/// node closes a session once its channel expires (what it served after
/// that would be paid by receipts the client can void by closing the
/// channel an hour later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_channel_expires() {
    let source = firehose().await;
    let client = SigningKey::from_label("expiring");
    let escrow = Usd(50_000_000);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let node = node_with_channel_until(&client, "exit-expiring", escrow, Usd::ZERO, now + 3).await;
    let terms = terms_for(&client, &node, escrow, Usd::ZERO);
    let dest = Dest::new(Host::Ip(source.ip()), source.port());
    let started = Instant::now();
    let conn = tollway_net::connect(Transport::Tls, node.addr, node.pin, &ClientOptions::default()).await.unwrap();
    // Data flows all along, so only the node's close ends the download
    // before its ten quiet seconds.
    let (got, events) = download(conn, terms, dest, true, Duration::from_secs(10), u64::MAX).await;
    let lasted = started.elapsed();
    eprintln!("a paying session on a channel expiring in 3 s: {got} B in {lasted:?}, {:?}", closed_with(&events));
    assert!(got > 2 * MIB, "it was served before the expiry ({got} B)");
    // Within the sweep's second of the expiry (whose second was counted
    // from a whole one).
    assert!(lasted < Duration::from_secs(5), "closed only after {lasted:?}");
    // The close is read if it arrives before the socket's end (which may
    // reset, as the client still sends).
    assert!(matches!(closed_with(&events), None | Some(ErrorCode::NoChannel)), "{:?}", closed_with(&events));
    for _ in 0..200 {
        if node.server.n_sessions() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(node.server.n_sessions(), 0);
}

/// Channel ids are public on the chain. A hello that names somebody
/// else's channel, signed with the sender's own key, is refused, and must
/// not take the channel over first: the channel's own session stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_naming_another_clients_channel_does_not_close_its_session() {
    let (node, terms, dest) = unpaid_channel("victim", "exit-no-kick").await;
    let victim = unpaid_session(&node, &terms, &dest, Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mallory = SigningKey::from_label("mallory");
    let forged = ClientTerms { key: mallory, ..terms.clone() };
    let conn = tollway_net::connect(Transport::Tls, node.addr, node.pin, &ClientOptions::default()).await.unwrap();
    let (got, events) = download(conn, forged, dest, false, Duration::from_secs(2), u64::MAX).await;
    assert_eq!((got, closed_with(&events)), (0, Some(ErrorCode::NoChannel)));
    // The refused session leaves the node's table as its task ends.
    for _ in 0..200 {
        if node.server.n_sessions() <= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(node.server.n_sessions(), 1, "the victim's session must stay");
    let (victim_got, victim_events) = victim.await.unwrap();
    assert_eq!(victim_got, 2 * MIB);
    assert_eq!(closed_with(&victim_events), None, "the victim's session was closed");
}

/// A destination whose connects hang: a listener with a full accept queue
/// (nothing accepts), so the kernel drops further SYNs.
async fn black_hole() -> (SocketAddr, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((LOOPBACK, 0).into()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fill = Vec::new();
    // The queue takes backlog + 1; the rest hang.
    while let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(300), tokio::net::TcpStream::connect(addr)).await {
        fill.push(s);
        assert!(fill.len() < 64, "the accept queue never filled");
    }
    std::mem::forget(listener); // kept for the test's life: the queue stays full
    (addr, fill)
}

/// Connects to `port` on loopback still waiting for the peer's SYN-ACK.
fn syn_sent_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "02" && f[2].ends_with(&format!(":{port:04X}"))
        })
        .count()
}

/// A stream reset while its destination's connect is pending ends that
/// connect. It went on for the connect timeout, while the reset had
/// freed the stream's slot: open-reset pairs opened any number of sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_reset_before_they_connect_leave_no_connects_behind() {
    let (hole, _fill) = black_hole().await;
    let client = SigningKey::from_label("open-reset");
    let node = node_with_channel(&client, "exit-open-reset", Usd(50_000_000), Usd::ZERO).await;
    let terms = terms_for(&client, &node, Usd(50_000_000), Usd::ZERO);
    let conn = tollway_net::connect(Transport::Tls, node.addr, node.pin, &ClientOptions::default()).await.unwrap();
    let binding = conn.channel_binding();
    let mut session = Session::client(terms, Instant::now(), 0, binding);
    let (mut read, mut write) = tokio::io::split(conn);
    let mut buf = vec![0u8; 64 * 1024];
    let dest = Dest::new(Host::Ip(hole.ip()), hole.port());
    let mut opened = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while opened < 200 && Instant::now() < deadline {
        while let Some((_, bytes)) = session.poll_transmit() {
            write.write_all(&bytes).await.unwrap();
        }
        // rustls holds what it was given until flushed.
        write.flush().await.unwrap();
        while let Some(e) = session.poll_event() {
            if matches!(e, Event::Established) {
                for _ in 0..200 {
                    let s = session.open_stream(dest.clone()).unwrap();
                    session.reset(s, ErrorCode::Shutdown);
                    opened += 1;
                }
            }
        }
        if opened > 0 {
            break;
        }
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), read.read(&mut buf)).await {
            session.handle_input(Instant::now(), 0, &buf[..n]);
        }
    }
    while let Some((_, bytes)) = session.poll_transmit() {
        write.write_all(&bytes).await.unwrap();
    }
    // rustls holds what it was given until flushed.
    write.flush().await.unwrap();
    assert_eq!(opened, 200, "the session was never established");
    // The node has read them all well within its 5 s connect timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pending = syn_sent_to(hole.port());
    assert!(pending <= 2, "{pending} connects still pending for 200 streams opened and reset");
    drop(write);
}

/// A TLS connection to `node` from `source` (a loopback address), which
/// says nothing after its handshake.
async fn silent_from(source: Ipv4Addr, node: &TestNode) -> SecureStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    let tcp = socket.connect(node.addr).await.unwrap();
    tollway_net::connect_tls_over(tcp, node.pin, &ClientOptions::default()).await.unwrap()
}

/// Whether the node closed `conn` within `wait`.
async fn closed_within(conn: &mut SecureStream<tokio::net::TcpStream>, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(wait, conn.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_silent_after_their_handshake_are_capped_per_address_and_in_all() {
    let source = firehose().await;
    let client = SigningKey::from_label("silent-after-tls");
    let escrow = Usd(50_000_000);
    let server = ServerOptions { max_handshakes_per_address: 4, max_awaiting_first_frame: 6, ..ServerOptions::default() };
    let node = node_with(&client, "exit-silent", (escrow, Usd::ZERO, u64::MAX / 2), server, Duration::ZERO).await;
    let (a, b, c) = (Ipv4Addr::new(127, 0, 0, 11), Ipv4Addr::new(127, 0, 0, 12), Ipv4Addr::new(127, 0, 0, 13));
    let mut kept = Vec::new();
    for _ in 0..4 {
        kept.push(silent_from(a, &node).await);
    }
    let mut fifth = silent_from(a, &node).await;
    assert!(closed_within(&mut fifth, Duration::from_secs(2)).await, "a fifth silent connection from one address was kept");
    for _ in 0..2 {
        kept.push(silent_from(b, &node).await);
    }
    let mut seventh = silent_from(c, &node).await;
    assert!(closed_within(&mut seventh, Duration::from_secs(2)).await, "a seventh silent connection in all was kept");
    for conn in &mut kept {
        assert!(!closed_within(conn, Duration::from_millis(50)).await, "a connection within both caps was closed");
    }
    assert_eq!(node.server.refused_before_first_frame(), 2);

    // A place comes back when its connection leaves: a paying client is
    // then served.
    drop(kept.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let conn = tollway_net::connect(Transport::Tls, node.addr, node.pin, &ClientOptions::default()).await.unwrap();
    let terms = terms_for(&client, &node, escrow, Usd::ZERO);
    let dest = Dest::new(Host::Ip(source.ip()), source.port());
    let (got, _) = download(conn, terms, dest, true, Duration::from_secs(3), MIB).await;
    assert!(got >= MIB, "the paying client got {got} bytes");
    assert_eq!(node.server.refused_before_first_frame(), 2);
}
