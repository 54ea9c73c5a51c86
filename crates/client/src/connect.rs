//! Building a route's session: connect to the first hop over the chosen
//! transport, run the tunnel handshake, and for two hops open a stream
//! through the relay to the exit and run a second TLS + tunnel session
//! *inside* it, end to end with the exit. Port hopping moves the first
//! hop's connection to the port of each new time window.

use crate::carried::CarriedBook;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tollway_net::driver::{self, BoxStream, SessionHandle, Status};
use tollway_net::{ClientOptions, LivePath, NetError, Transport};
use tollway_tunnel::hop;
use tollway_tunnel::session::{session_secret, ClientTerms, Limits, Session};
use tollway_tunnel::{Dest, ErrorCode, Host};
use tollway_types::amount::Usd;
use tollway_types::keys::{AccountId, SigningKey};
use tollway_types::tx::ChannelId;

/// One node on a route, as its ledger record and the client's channel with
/// it describe it.
#[derive(Clone, Debug)]
pub struct Hop {
    pub node: AccountId,
    pub addr: IpAddr,
    pub port_first: u16,
    pub port_last: u16,
    pub tls_key_pin: [u8; 32],
    pub price_usd_micro_per_gib: u64,
    pub channel: ChannelId,
    pub escrow: Usd,
    pub settled_bytes: u64,
    pub settled_usd: Usd,
}

/// An exit, optionally behind a relay. Each hop is paid on its own channel.
#[derive(Clone, Debug)]
pub struct Route {
    pub relay: Option<Hop>,
    pub exit: Hop,
}

impl Hop {
    /// Where the node is reached: address, ports and TLS key.
    pub fn place(&self) -> (IpAddr, u16, u16, [u8; 32]) {
        (self.addr, self.port_first, self.port_last, self.tls_key_pin)
    }

    /// Whether a session with `other` would be one with this hop: the same
    /// node, place and channel.
    pub fn same_session_as(&self, other: &Hop) -> bool {
        self.node == other.node && self.channel == other.channel && self.place() == other.place()
    }
}

impl Route {
    /// Its hops in path order, each with its role: the relay's, then the
    /// exit's.
    pub fn hops(&self) -> Vec<(&'static str, &Hop)> {
        self.relay.iter().map(|h| ("relay", h)).chain([("exit", &self.exit)]).collect()
    }

    /// Its hop in `role` (`"relay"` or `"exit"`), if it has one.
    pub fn hop(&self, role: &str) -> Option<&Hop> {
        self.hops().into_iter().find_map(|(r, h)| (r == role).then_some(h))
    }

    pub fn name(&self) -> String {
        match &self.relay {
            Some(r) => format!("{} via {}", self.exit.node.short(), r.node.short()),
            None => self.exit.node.short(),
        }
    }
}

/// A live route: the exit's session (where streams open) and, for two
/// hops, the relay's session it rides on.
pub struct Connected {
    pub exit: SessionHandle,
    pub relay: Option<Arc<RelayLink>>,
    /// The port hopper of a one-hop route (a relay's hops with its link).
    hopper: Option<tokio::task::JoinHandle<()>>,
    /// The route's round trip to its exit, in microseconds: its newest
    /// pong's, and before any, half its connect (which took at least two).
    round_trip_micros: AtomicU64,
}

/// A relay's session, ridden by every route through that relay on the
/// same channel, each exit session in a stream of its own. A node serves
/// a channel one session at a time (a second takes the first over: each
/// would be paid over the same range), so routes through one relay share
/// its session. It closes once no route holds it and its streams are done.
pub struct RelayLink {
    pub session: SessionHandle,
    hop: Hop,
    hopper: Option<tokio::task::JoinHandle<()>>,
}

impl RelayLink {
    /// A new session with the relay `hop`.
    async fn connect(hop: &Hop, opts: &ConnectOptions, book: &CarriedBook) -> Result<Arc<RelayLink>, ConnectError> {
        let (session, hopper) = connect_first(hop, opts, book).await?;
        Ok(Arc::new(RelayLink { session, hop: hop.clone(), hopper }))
    }

    /// Whether a route whose relay is `hop` can ride this session: the
    /// same node, place and channel, and the session is up.
    pub fn serves(&self, hop: &Hop) -> bool {
        self.hop.same_session_as(hop) && !self.session.is_closed()
    }
}

impl Drop for RelayLink {
    fn drop(&mut self) {
        if let Some(h) = &self.hopper {
            h.abort();
        }
        self.session.close_when_drained(ErrorCode::Shutdown, "no route uses it any more");
    }
}

/// Where a connect takes a route's relay session: a link to share (set,
/// or set by the first connect that needs it, which the others then
/// wait for), or a new session if none is given.
pub type SharedRelay = tokio::sync::OnceCell<Arc<RelayLink>>;

impl Connected {
    fn new(exit: SessionHandle, relay: Option<Arc<RelayLink>>, hopper: Option<tokio::task::JoinHandle<()>>, took: Duration) -> Connected {
        let round_trip_micros = AtomicU64::new(u64::try_from((took / 2).as_micros()).unwrap_or(u64::MAX));
        Connected { exit, relay, hopper, round_trip_micros }
    }

    /// The route's round trip to its exit as last measured (at first, an
    /// upper bound from its connect).
    pub fn round_trip(&self) -> Duration {
        Duration::from_micros(self.round_trip_micros.load(Ordering::Relaxed))
    }

    /// Notes a pong's round trip.
    pub fn note_round_trip(&self, rtt: Duration) {
        self.round_trip_micros.store(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn is_closed(&self) -> bool {
        self.closed_because().is_some()
    }

    /// Why the route is closed (which hop's session, and what it said), or
    /// `None` while both hops are up.
    pub fn closed_because(&self) -> Option<String> {
        let why = |role: &str, session: &SessionHandle| match session.status() {
            Status::Closed { code, message } => Some(format!("the {role}'s session closed: {message} ({})", code.describe())),
            _ => None,
        };
        self.relay.as_ref().and_then(|r| why("relay", &r.session)).or_else(|| why("exit", &self.exit))
    }

    /// The hop whose node closed its session with `code`, and what it
    /// said, if one did (the relay's first): `ChannelBusy` when another
    /// session took its channel over (another client with this key),
    /// `NoChannel` when the channel is gone (expired).
    pub fn closed_with(&self, code: ErrorCode) -> Option<(&'static str, String)> {
        let closed = |s: &SessionHandle| match s.status() {
            Status::Closed { code: c, message } if c == code => Some(message),
            _ => None,
        };
        (self.relay.as_ref().and_then(|r| closed(&r.session)).map(|m| ("relay", m)))
            .or_else(|| closed(&self.exit).map(|m| ("exit", m)))
    }

    /// Closes the exit's session once its streams are done: the route was
    /// replaced, and what it carries finishes on it. The relay's session
    /// closes once no route holds it and its streams are done.
    pub fn drain(&self) {
        self.exit.close_when_drained(ErrorCode::Shutdown, "replaced by a better route");
    }

    /// Undoes [`Connected::drain`]: the route is active again. Whether it
    /// still is open is for the caller to check after
    /// ([`Connected::closed_because`]).
    pub fn keep_open(&self) {
        self.exit.keep_open();
    }

    /// Closes the route's sessions now; the relay's only if no other route
    /// rides it.
    pub fn close(&self) {
        self.exit.close(ErrorCode::Shutdown, "closed by the client");
        if let Some(r) = self.relay.as_ref().filter(|r| Arc::strong_count(r) == 1) {
            r.session.close(ErrorCode::Shutdown, "closed by the client");
        }
        if let Some(h) = &self.hopper {
            h.abort();
        }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        if let Some(h) = &self.hopper {
            h.abort();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("the node refused the session: {}", refusal_text(*code, message))]
    Refused { code: ErrorCode, message: String },
    #[error("the relay could not reach the exit: {0}")]
    Relay(String),
    /// The node's hello said the channel's earlier sessions left more
    /// unpaid than this client counted, beyond what it takes on a node's
    /// word: the node is misbehaving, not down.
    #[error("refused the node's hello: {message}")]
    CarriedClaim { node: AccountId, channel: ChannelId, message: String },
    /// The node refused the channel at the hello: what is left of its
    /// escrow cannot pay for one receipt interval (or nothing is). Tried
    /// again, it would refuse again.
    #[error("the node refused the session: {}", refusal_text(ErrorCode::EscrowExhausted, message))]
    EscrowSpent { node: AccountId, channel: ChannelId, message: String },
    /// The node refused the channel at the hello: it has expired, or the
    /// node's chain has no such channel. Tried again, it would refuse
    /// again: only another channel serves.
    #[error("the node refused the session: {}", refusal_text(ErrorCode::NoChannel, message))]
    ChannelGone { node: AccountId, channel: ChannelId, message: String },
}

impl ConnectError {
    /// Whether only another channel (or, for a node that claims too much,
    /// another node) can serve where this refusal came from: the route is
    /// retired, not tried again.
    pub fn needs_another_channel(&self) -> bool {
        matches!(
            self,
            ConnectError::CarriedClaim { .. } | ConnectError::EscrowSpent { .. } | ConnectError::ChannelGone { .. }
        )
    }
}

/// `message (what the code means)`, or the message alone when it already
/// says that (a refusal the node gave as a bare code).
fn refusal_text(code: ErrorCode, message: &str) -> String {
    if message == code.describe() {
        message.to_string()
    } else {
        format!("{message} ({})", code.describe())
    }
}

/// How the client connects, shared by every route.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub chain_id: String,
    pub key: SigningKey,
    pub transport: Transport,
    pub net: ClientOptions,
    pub limits: Limits,
    /// Port hopping window; `None` stays on one port.
    pub hop_window: Option<Duration>,
}

/// The terms of a session with `hop`, whose node's carried bytes are held
/// to what `book` knows of the channel's earlier sessions.
fn terms(opts: &ConnectOptions, hop: &Hop, book: &CarriedBook) -> ClientTerms {
    ClientTerms {
        chain_id: opts.chain_id.clone(),
        node: hop.node,
        channel: hop.channel,
        key: opts.key.clone(),
        escrow: hop.escrow,
        settled_bytes: hop.settled_bytes,
        settled_usd: hop.settled_usd,
        max_price_usd_micro_per_gib: hop.price_usd_micro_per_gib,
        limits: opts.limits.clone(),
        earlier: book.earlier(&hop.channel),
    }
}

/// The wall clock the port schedule runs on, in Unix milliseconds.
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The port of `hop` to dial first: spread over the range by channel, so
/// clients do not all start on the first port.
fn first_port(hop: &Hop) -> u16 {
    hop::port_for(&hop.channel.0, hop.port_first, hop.port_last, 1, 0)
}

/// Handshakes a client session with `hop` on a connection and starts its
/// driver; once established, it is the channel's last session in `book`.
async fn start_session(
    io: BoxStream,
    binding: [u8; 32],
    hop: &Hop,
    opts: &ConnectOptions,
    book: &CarriedBook,
) -> Result<SessionHandle, ConnectError> {
    let session = Session::client(terms(opts, hop, book), Instant::now(), 0, binding);
    let handle = CloseUnlessKept::new(driver::spawn(session, io, None));
    if let Err((code, message)) = handle.handle.established().await {
        if handle.handle.usage().carried_refused {
            return Err(ConnectError::CarriedClaim { node: hop.node, channel: hop.channel, message });
        }
        if code == ErrorCode::EscrowExhausted {
            return Err(ConnectError::EscrowSpent { node: hop.node, channel: hop.channel, message });
        }
        if code == ErrorCode::NoChannel {
            return Err(ConnectError::ChannelGone { node: hop.node, channel: hop.channel, message });
        }
        return Err(ConnectError::Refused { code, message });
    }
    book.established(hop.channel, &handle.handle);
    Ok(handle.keep())
}

/// A session a connect started, closed when dropped unless the connect
/// kept it: a connect abandoned half-way (a faster route won the race, or
/// the exit behind a relay could not be reached) must not leave the
/// session open until its idle timeout.
struct CloseUnlessKept {
    handle: SessionHandle,
    kept: bool,
}

impl CloseUnlessKept {
    fn new(handle: SessionHandle) -> CloseUnlessKept {
        CloseUnlessKept { handle, kept: false }
    }

    fn keep(mut self) -> SessionHandle {
        self.kept = true;
        self.handle.clone()
    }
}

impl Drop for CloseUnlessKept {
    fn drop(&mut self) {
        if !self.kept {
            self.handle.close(ErrorCode::Shutdown, "the connect was abandoned");
        }
    }
}

/// Connects `route`: one hop, or the exit through a new session with the
/// relay. Knowing nothing of the channels' earlier sessions, it takes a
/// node's carried bytes on its word up to one credit window.
pub async fn connect_route(route: &Route, opts: &ConnectOptions) -> Result<Connected, ConnectError> {
    connect_route_via(route, opts, &SharedRelay::new(), &CarriedBook::default()).await
}

/// As [`connect_route`], with the relay's session from `relay`: the link
/// it holds, or one it gets from this connect (or from another one sharing
/// it, which this then waits for); and the nodes' carried bytes held to
/// what `book` knows of the channels' earlier sessions.
pub async fn connect_route_via(
    route: &Route,
    opts: &ConnectOptions,
    relay: &SharedRelay,
    book: &CarriedBook,
) -> Result<Connected, ConnectError> {
    let started = Instant::now();
    let Some(relay_hop) = &route.relay else {
        let (exit, hopper) = connect_first(&route.exit, opts, book).await?;
        return Ok(Connected::new(exit, None, hopper, started.elapsed()));
    };
    let link = relay.get_or_try_init(|| RelayLink::connect(relay_hop, opts, book)).await?.clone();
    // A link that went down since it was shared, or another relay's: a
    // session of the route's own.
    let link = if link.serves(relay_hop) { link } else { RelayLink::connect(relay_hop, opts, book).await? };
    // If the exit cannot be reached, the link closes with this connect's
    // last hold on it (unless another route rides it).
    let exit = connect_through(&link.session, &route.exit, opts, book).await?;
    Ok(Connected::new(exit, Some(link), None, started.elapsed()))
}

/// The session with a route's first hop, and its port hopper.
async fn connect_first(
    first: &Hop,
    opts: &ConnectOptions,
    book: &CarriedBook,
) -> Result<(SessionHandle, Option<tokio::task::JoinHandle<()>>), ConnectError> {
    let addr = SocketAddr::new(first.addr, first_port(first));
    let conn = tollway_net::connect(opts.transport, addr, first.tls_key_pin, &opts.net).await?;
    let binding = conn.channel_binding();
    let live = conn.live_path();
    let handle = start_session(Box::new(conn), binding, first, opts, book).await?;
    let hopper = match opts.hop_window {
        Some(window) if first.port_last > first.port_first => {
            Some(tokio::spawn(Hopper::new(handle.clone(), first.clone(), opts.clone(), binding, live, window).run()))
        }
        _ => None,
    };
    Ok((handle, hopper))
}

/// Two hops: a stream through the relay to the exit's port, then TLS with
/// the exit's pinned key inside it and the exit's session on that. The
/// relay forwards ciphertext.
async fn connect_through(
    relay: &SessionHandle,
    exit: &Hop,
    opts: &ConnectOptions,
    book: &CarriedBook,
) -> Result<SessionHandle, ConnectError> {
    let dest = Dest::new(Host::Ip(exit.addr), first_port(exit));
    // Bounded: a relay whose connection died without a word never answers
    // (the session would notice only at its idle timeout, minutes later).
    let wait = opts.net.handshake_timeout;
    let stream = (tokio::time::timeout(wait, relay.open(dest)).await)
        .map_err(|_| ConnectError::Relay(format!("the relay did not answer in {} s", wait.as_secs())))?
        .map_err(|e| ConnectError::Relay(e.to_string()))?;
    let through_relay = relay.attach_local(stream).await.map_err(|e| ConnectError::Relay(e.to_string()))?;
    let inner = tollway_net::connect_tls_over(through_relay, exit.tls_key_pin, &opts.net).await?;
    let inner_binding = inner.channel_binding();
    start_session(Box::new(inner), inner_binding, exit, opts, book).await
}

/// Sleeps until the next port-hop window starts, to the millisecond, and
/// returns its start (Unix seconds).
async fn until_next_window(window_secs: u64) -> u64 {
    let now_millis = unix_millis();
    let start_millis = hop::window_end_millis(window_secs, now_millis);
    tokio::time::sleep(Duration::from_millis(start_millis - now_millis)).await;
    start_millis / 1000
}

/// A one-hop route's port hopper: every window, if the schedule names
/// another port, it connects to it and moves the session there
/// (make-before-break). Over QUIC each new connection starts from the live
/// one's congestion state (the first connection's, then each hop's;
/// `tollway_net::connect_after`), so an upload does not go back through
/// slow start at every hop.
struct Hopper {
    handle: SessionHandle,
    hop: Hop,
    opts: ConnectOptions,
    /// The session's secret, which the port schedule is keyed with.
    secret: [u8; 32],
    window_secs: u64,
    /// The port the session's connection is on.
    port: u16,
    /// The session's QUIC connection (`None` over TLS).
    live: Option<LivePath>,
}

/// What the start of a window did to a session's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HopOutcome {
    /// The window names the port in use.
    Stayed,
    /// The window's port could not be reached, or the session did not take
    /// the new connection: it stays where it is this window.
    Failed,
    /// The session moved to `port`, on a connection whose congestion window
    /// was `started_window_bytes` when it was handed over (`None` over TLS).
    Moved { port: u16, started_window_bytes: Option<u64> },
}

impl Hopper {
    /// The hopper of `handle`, the session on `first_binding`'s connection
    /// (`first_live`) with `hop` on its first port.
    fn new(
        handle: SessionHandle,
        hop: Hop,
        opts: ConnectOptions,
        first_binding: [u8; 32],
        first_live: Option<LivePath>,
        window: Duration,
    ) -> Hopper {
        let port = first_port(&hop);
        Hopper {
            handle,
            hop,
            opts,
            secret: session_secret(&first_binding),
            window_secs: window.as_secs().max(1),
            port,
            live: first_live,
        }
    }

    /// Hops at the start of every window until the session closes.
    /// Ends as soon as the session closes, not at the next window: it
    /// holds the session's live QUIC connection (and so its socket),
    /// which a window of an hour kept for up to an hour after the node
    /// closed the session.
    async fn run(mut self) {
        loop {
            let window_start_secs = tokio::select! {
                start = until_next_window(self.window_secs) => start,
                () = self.handle.closed() => return,
            };
            if self.handle.is_closed() {
                return;
            }
            self.enter_window(window_start_secs).await;
        }
    }

    /// Moves the session to the port of the window starting at
    /// `window_start_secs` (Unix seconds), if that is another port: the
    /// port of the window that has just started, whatever the wall clock
    /// (which may step) says now.
    async fn enter_window(&mut self, window_start_secs: u64) -> HopOutcome {
        let hop = &self.hop;
        let port = hop::port_for(&self.secret, hop.port_first, hop.port_last, self.window_secs, window_start_secs);
        if port == self.port {
            return HopOutcome::Stayed;
        }
        let addr = SocketAddr::new(hop.addr, port);
        let connecting =
            tollway_net::connect_after(self.opts.transport, addr, hop.tls_key_pin, &self.opts.net, self.live.as_ref());
        let Ok(conn) = connecting.await else {
            return HopOutcome::Failed;
        };
        let binding = conn.channel_binding();
        let next_live = conn.live_path();
        let started_window_bytes = conn.congestion_window_bytes();
        if self.handle.attach_path(Box::new(conn), binding).await.is_err() {
            return HopOutcome::Failed;
        }
        self.port = port;
        self.live = next_live;
        HopOutcome::Moved { port, started_window_bytes }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::{
        first_port, start_session, unix_millis, until_next_window, ConnectError, ConnectOptions, Hop, HopOutcome,
        Hopper,
    };
    use crate::carried::CarriedBook;
    use crate::free_ports::free_port_range;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tollway_net::{ClientOptions, ServerOptions, TlsIdentity, Transport};
    use tollway_node::{NodeServer, ReceiptBook, ServerConfig, StaticChannels};
    use tollway_tunnel::session::{Limits, NodeTerms};
    use tollway_tunnel::{Dest, ErrorCode, ExitPolicy, Host};
    use tollway_types::amount::Usd;
    use tollway_types::keys::SigningKey;
    use tollway_types::tx::channel_id;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// A loopback TCP server that reads one connection to its end and
    /// says how many bytes it got.
    async fn sink() -> (SocketAddr, tokio::sync::oneshot::Receiver<usize>) {
        let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tell, told) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let _ = socket.read_to_end(&mut got).await;
            let _ = tell.send(got.len());
        });
        (addr, told)
    }

    /// A QUIC node on two loopback ports with a channel open to a client
    /// key, the hop to it, and the client's options (1 s hop windows).
    async fn quic_node_to_hop(label: &str, seed: u8) -> (NodeServer, Hop, ConnectOptions) {
        const SPAN: u16 = 2;
        let client_key = SigningKey::from_label(label);
        let node_key = SigningKey::from_label(&format!("{label}-node"));
        let identity = TlsIdentity::from_seed([seed; 32]).unwrap();
        let channels = Arc::new(StaticChannels::default());
        channels.open(client_key.public(), node_key.public(), 0, Usd(50_000_000));
        let base = free_port_range(SPAN);
        let config = ServerConfig {
            terms: NodeTerms::new(label.into(), node_key.public(), 500_000),
            listen_ip: LOOPBACK,
            ports: base..=base + SPAN - 1,
            transports: vec![Transport::Quic],
            policy: ExitPolicy { allow_loopback: true, ..ExitPolicy::default() },
            server: ServerOptions::default(),
            connect_timeout: Duration::from_secs(5),
            max_sessions: 10,
            max_rate_bytes_per_sec: None,
        };
        let node = NodeServer::start(config, &identity, channels, ReceiptBook::in_memory()).await.unwrap();
        let hop = Hop {
            node: node_key.public(),
            addr: LOOPBACK,
            port_first: base,
            port_last: base + SPAN - 1,
            tls_key_pin: identity.pin(),
            price_usd_micro_per_gib: 500_000,
            channel: channel_id(&client_key.public(), 0),
            escrow: Usd(50_000_000),
            settled_bytes: 0,
            settled_usd: Usd::ZERO,
        };
        let opts = ConnectOptions {
            chain_id: label.into(),
            key: client_key,
            transport: Transport::Quic,
            net: ClientOptions::default(),
            limits: Limits::default(),
            hop_window: Some(Duration::from_secs(1)),
        };
        (node, hop, opts)
    }

    /// The hopper's own test: the net crate's tests check that
    /// `connect_after` starts from the live connection it is given, not
    /// that the hopper gives it one. A hopper that dialed each window's
    /// connection from scratch (`connect`, or no live path) sent an
    /// upload back through QUIC's slow start at every hop (ADR 0007,
    /// 2026-12-07). Two hops after an upload that grew the session's
    /// window: each new connection starts from its live one's window.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_hopper_starts_each_quic_hop_from_the_live_connections_window() {
        let (_node, hop, opts) = quic_node_to_hop("hopper-window", 44).await;

        // The session's first connection, as `connect_first` makes it.
        let first_addr = SocketAddr::new(LOOPBACK, first_port(&hop));
        let conn = tollway_net::connect(Transport::Quic, first_addr, hop.tls_key_pin, &opts.net).await.unwrap();
        let initial_bytes = conn.congestion_window_bytes().unwrap();
        let binding = conn.channel_binding();
        let live = conn.live_path();
        let handle = start_session(Box::new(conn), binding, &hop, &opts, &CarriedBook::default()).await.unwrap();
        let mut hopper = Hopper::new(handle.clone(), hop, opts, binding, live, Duration::from_secs(1));

        // The windows are entered one after another, not waited for:
        // whichever of them names the other port is a hop.
        let mut window_start_secs = unix_millis() / 1000;
        for n_hop in 1..=2 {
            // An upload: the client's window grows in slow start.
            let (sink_addr, received) = sink().await;
            let stream = handle.open(Dest::new(Host::Ip(LOOPBACK), sink_addr.port())).await.unwrap();
            let mut upload = handle.attach_local(stream).await.unwrap();
            upload.write_all(&vec![7u8; 8 << 20]).await.unwrap();
            upload.shutdown().await.unwrap();
            assert_eq!(received.await.unwrap(), 8 << 20, "hop {n_hop}: the upload did not arrive whole");

            let outcome = loop {
                window_start_secs += 1;
                match hopper.enter_window(window_start_secs).await {
                    HopOutcome::Stayed => continue,
                    outcome => break outcome,
                }
            };
            let HopOutcome::Moved { started_window_bytes: Some(started_bytes), .. } = outcome else {
                panic!("hop {n_hop}: {outcome:?}");
            };
            assert!(
                started_bytes > 4 * initial_bytes,
                "hop {n_hop}'s connection started from {started_bytes} bytes, as a new one does ({initial_bytes}), \
                 not from the live one's window"
            );
        }
        handle.close(ErrorCode::Shutdown, "done");
    }

    /// A hopper slept to its next window even when its session had
    /// closed, holding the session's QUIC connection till then: up to an
    /// hour with hour-long windows. It ends with the session now.
    #[tokio::test]
    async fn a_hopper_ends_when_its_session_closes_not_at_its_next_window() {
        let (_node, hop, opts) = quic_node_to_hop("hopper-ends", 45).await;
        let first_addr = SocketAddr::new(LOOPBACK, first_port(&hop));
        let conn = tollway_net::connect(Transport::Quic, first_addr, hop.tls_key_pin, &opts.net).await.unwrap();
        let binding = conn.channel_binding();
        let live = conn.live_path();
        let handle = start_session(Box::new(conn), binding, &hop, &opts, &CarriedBook::default()).await.unwrap();
        let hour = Duration::from_secs(3600);
        let hopper = tokio::spawn(Hopper::new(handle.clone(), hop, opts, binding, live, hour).run());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!hopper.is_finished(), "the hopper ended with its session still up");
        handle.close(ErrorCode::Shutdown, "done");
        tokio::time::timeout(Duration::from_secs(10), hopper)
            .await
            .expect("the hopper was still waiting for its next window 10 s after its session closed")
            .unwrap();
    }

    /// The hopper's timer worked out its sleep in whole seconds, so it
    /// woke as far past a window's start as it had been called past a
    /// whole second: called 600 ms past one, it woke 600 ms late (up to a
    /// second late in general). It wakes at the start now; the bound
    /// leaves a loaded host 300 ms to run the task.
    #[tokio::test]
    async fn the_hop_timer_wakes_when_the_window_starts_not_up_to_a_second_later() {
        tokio::time::sleep(Duration::from_millis((1600 - unix_millis() % 1000) % 1000)).await;
        let called_ms = unix_millis();
        let window_start_secs = until_next_window(1).await;
        let woke_ms = unix_millis();
        let start_ms = window_start_secs * 1000;
        assert!(
            start_ms > called_ms,
            "the window starting at {start_ms} ms had started when called ({called_ms} ms)"
        );
        assert!(
            (start_ms..start_ms + 300).contains(&woke_ms),
            "called at {called_ms} ms, woke {} ms after the window's start at {start_ms} ms",
            woke_ms as i64 - start_ms as i64
        );
    }

    /// A refusal given as a bare code is said once, not twice.
    #[test]
    fn a_refusal_says_what_the_code_means_once() {
        let bare = ConnectError::Refused { code: ErrorCode::ChannelBusy, message: ErrorCode::ChannelBusy.describe().into() };
        assert_eq!(
            bare.to_string(),
            "the node refused the session: another session uses this channel (one `tollway connect` per channel)"
        );
        let told = ConnectError::Refused { code: ErrorCode::NoChannel, message: "the channel has expired".into() };
        assert_eq!(told.to_string(), format!("the node refused the session: the channel has expired ({})", ErrorCode::NoChannel.describe()));
    }
}
