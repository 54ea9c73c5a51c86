//! Ranked routes with health checks and failover (DESIGN §4): new streams
//! go to the best route that is up. A route whose session dies (its
//! connection drops) or stops answering pings is marked down for a while
//! and the next one takes the new streams. The streams in flight on a
//! route whose session died fail with it; those on a route that only
//! went silent stay on it while its session lives, until it answers again
//! or has been silent for `ClientConfig::dead_after`. A better route that
//! is up again takes the new streams back; the one it replaces closes once
//! its streams are done. A route whose channel can pay no more
//! is retired, and with a [`Renewal`] comes back on its own once the chain
//! has a channel that can. So is a route whose node claims more carried
//! bytes than this proxy takes on a node's word ([`CarriedBook`]): it
//! would claim them again at every connect.

use crate::carried::CarriedBook;
use crate::connect::{connect_route_via, ConnectError, ConnectOptions, Connected, Hop, RelayLink, Route, SharedRelay};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tollway_net::race;
use tollway_net::driver::{BoxFuture, EarlySocket, OnRefused, OnUnanswered, OpenError, SessionHandle, Usage};
use tollway_tunnel::session::{SessionError, StreamId};
use tollway_tunnel::dest::DestError;
use tollway_tunnel::policy::Forbidden;
use tollway_tunnel::{Dest, ErrorCode, Host};
use tollway_types::amount::Usd;
use tollway_types::tx::ChannelId;

/// Looks a retired route up again: given it and the channels the client
/// knows are spent, the same nodes with the channels the chain has for
/// them now (none of the spent ones), or why not. `tollway connect` asks
/// the chain's API, so a channel the user opens after the route retired
/// brings it back without a restart.
#[derive(Clone)]
pub struct Renewal(pub Arc<RenewFn>);

/// A [`Renewal`]'s lookup: the retired route and the spent channels in,
/// the route on its channels now (or why not) out.
pub type RenewFn = dyn Fn(Route, Vec<ChannelId>) -> BoxFuture<Result<Route, String>> + Send + Sync;

impl std::fmt::Debug for Renewal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Renewal")
    }
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub connect: ConnectOptions,
    /// Best first.
    pub routes: Vec<Route>,
    /// How often the active route is pinged.
    pub health_interval: Duration,
    /// A ping unanswered this long (with no byte from the route either)
    /// marks the route down: new streams go to the next route. The streams
    /// it carries stay on it (`dead_after`).
    pub health_timeout: Duration,
    /// How long a route marked down for want of answers keeps the streams
    /// it carries, in case it answers again: its session drains (no new
    /// stream goes to it), it is pinged every `health_interval`, and once
    /// it answers it is taken back as it is when it is the best route up.
    /// Silent this long after it was marked down, it is closed with them.
    /// 30 s: a Wi-Fi roam, a handover between cells or a line's brief
    /// outage silences a route for a few seconds, which an idle SSH
    /// session on it must outlive; a node that is really gone (its host
    /// lost power) should fail the programs' connections in half a minute,
    /// not leave them hanging until the session's idle timeout (5 minutes).
    /// A route whose connection drops closes at once, whatever this says.
    pub dead_after: Duration,
    /// `dead_after` while no other route is up to take new connections (a
    /// proxy with one exit, or all others down): new connections fail
    /// while the route is kept, and connecting it anew, which serves them
    /// again, closes the kept session at its node. 5 s: a roam's brief
    /// silence passes with the streams kept, and a connection that died
    /// for good (a laptop on another network: its TCP path is gone) is
    /// replaced after seconds, not after half a minute without service.
    pub dead_after_alone: Duration,
    /// The active route with no stream for this long is quiet: it is
    /// pinged only every `quiet_ping_every` (a phone's radio may sleep),
    /// and the next new stream waits for one ping's answer first (up to
    /// `health_timeout`; without one the route is down and the stream goes
    /// to the next).
    pub quiet_after: Duration,
    /// How often a quiet route is pinged: keeps NAT mappings and the
    /// node's idle timeout from closing it.
    pub quiet_ping_every: Duration,
    /// A route marked down is tried again after this long, then after
    /// twice as long as the time before at each failed try, up to
    /// `retry_after_max`: a node back from a restart serves again within
    /// about a second, and one down for hours costs a try every
    /// `retry_after_max`.
    pub retry_after: Duration,
    /// The longest wait between two tries of a route that is down. A route
    /// that has carried traffic this long starts again at `retry_after`
    /// when it next goes down; one that flaps keeps its longer wait.
    pub retry_after_max: Duration,
    /// Told, as one line each, what a user of the proxy wants to know as
    /// it happens: a route connected, a route down and why, a channel's
    /// escrow spent, a receipt the node rejected. `tollway connect` prints
    /// them.
    pub on_event: Option<fn(&str)>,
    /// How a retired route finds new channels; `None`: it stays retired
    /// until the proxy restarts.
    pub renewal: Option<Renewal>,
    /// How often a retired route is looked up again.
    pub renew_every: Duration,
}

impl ClientConfig {
    pub fn new(connect: ConnectOptions, routes: Vec<Route>) -> ClientConfig {
        ClientConfig {
            connect,
            routes,
            health_interval: Duration::from_millis(500),
            health_timeout: Duration::from_millis(1000),
            dead_after: Duration::from_secs(30),
            dead_after_alone: Duration::from_secs(5),
            quiet_after: Duration::from_secs(30),
            quiet_ping_every: Duration::from_secs(25),
            retry_after: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(30),
            on_event: None,
            renewal: None,
            renew_every: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no route is up; last error: {0}")]
    NoRoute(String),
    /// The exit is up but could not or would not reach the destination.
    #[error("{}", .0.describe())]
    Destination(ErrorCode),
    /// A destination no exit may be asked for (port 0): refused here, as
    /// sending it would close the route's session.
    #[error("{0}")]
    BadDestination(DestError),
    /// An IP-literal destination the exit's policy refuses, as its hello
    /// announced it: refused here, before the program is answered.
    #[error("the exit's policy forbids {}", .0.describe())]
    Policy(Forbidden),
    /// The route's session carried as many streams as its node allows, and
    /// none ended while the open waited (`Limits::stream_slot_wait`).
    #[error(
        "the route carries as many connections as its exit allows ({max_streams}), and none ended within {} s",
        .waited.as_secs_f32()
    )]
    NoStreamSlot { max_streams: u32, waited: Duration },
}

/// What the front end does with a program's new connection, before it
/// answers the program ([`RoutePool::before_reply`]).
#[derive(Debug)]
pub enum BeforeReply {
    /// Answer now (optimistic): the open is expected to go through.
    Answer,
    /// Answer only once the exit has connected: the active route's session
    /// holds as many streams as it may, so the open waits for one to end,
    /// and may be refused after all.
    AnswerOnceOpened,
    /// Refuse now, with a reply the program can read.
    Refuse(ClientError),
}

impl ClientError {
    /// The tunnel error code behind it, for SOCKS/HTTP replies.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::NoRoute(_) => ErrorCode::Unreachable,
            ClientError::Destination(code) => *code,
            ClientError::BadDestination(_) => ErrorCode::PolicyDenied,
            ClientError::Policy(_) => ErrorCode::PolicyDenied,
            ClientError::NoStreamSlot { .. } => ErrorCode::Limit,
        }
    }
}

struct State {
    /// The routes as they are now, best first: the configured ones, with
    /// the channels of those renewed since.
    routes: Vec<Route>,
    active: Option<(usize, Arc<Connected>)>,
    /// Per route: when it may be tried again, if it is down.
    down: Vec<Backoff>,
    /// Routes that cannot carry traffic until renewed (or the proxy
    /// restarts): a hop's escrow is spent, its node rejects our receipts
    /// (its chain says otherwise than ours did), or another client with
    /// this key took its channel; and what brings each back.
    retired: Vec<Option<Comeback>>,
    /// Channels whose escrow ran out in a session: a renewal must not
    /// bring them back, though the chain may still show escrow left (the
    /// node settles later).
    spent: Vec<ChannelId>,
    /// Which routes were made active, in order: the last few.
    history: History,
    /// The relay session of the route last closed because its exit's
    /// session closed, for the next connect through that relay: the relay
    /// that told us is up, and a second session on its channel would take
    /// the first over. (A route gone silent may have lost its relay
    /// connection: the next connect makes a new one.)
    spare_relay: Option<Arc<RelayLink>>,
    /// Routes replaced while they still carried streams, or marked down
    /// for want of answers while they did, closing once those are done. A
    /// route picked again while draining is taken back as it is: a second
    /// session on its channel would make the node close the first, and the
    /// streams with it (or, within the node's takeover period, refuse the
    /// second, blaming another proxy).
    draining: Vec<Draining>,
    /// The active route's quiet spell, if any.
    quiet: Quiet,
    /// The ping that ends a quiet spell, while it runs: the new streams
    /// that arrive meanwhile wait for its answer too, rather than go to a
    /// route that may be dead (a browser opens several at once).
    probe: Option<Arc<tokio::sync::OnceCell<bool>>>,
}

/// How many route changes [`History`] keeps: "put a limit on everything"
/// (a proxy on a flaky line changes routes for as long as it runs, and the
/// whole list grew by a word each time); far more than a test makes.
const HISTORY_KEPT: usize = 64;

/// The routes made active, in order, the last [`HISTORY_KEPT`] of them:
/// what [`RoutePool::history`] tells tests.
#[derive(Default)]
struct History(std::collections::VecDeque<usize>);

impl History {
    fn push(&mut self, index: usize) {
        if self.0.len() == HISTORY_KEPT {
            self.0.pop_front();
        }
        self.0.push_back(index);
    }

    fn to_vec(&self) -> Vec<usize> {
        self.0.iter().copied().collect()
    }
}

/// A route's session that carries no new streams but keeps those it has.
#[derive(Clone)]
struct Draining {
    index: usize,
    connected: Arc<Connected>,
    /// Since when it has not answered, while it has not: it was marked
    /// down for that, not replaced by a better route. Such a route is
    /// neither taken back (it may be dead) nor connected again (its node
    /// would close this session for the new one, and the streams with it)
    /// until it answers or closes (`watch_silent`).
    silent_since: Option<Instant>,
}

/// How a route went down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outage {
    /// Its session closed or failed: the streams on it are gone.
    Closed,
    /// It did not answer a ping in time: its session may still carry the
    /// streams on it once it answers again (a Wi-Fi roam).
    Silent,
}

/// `1 connection`, `3 connections`.
fn connections(n: usize) -> String {
    if n == 1 {
        String::from("1 connection")
    } else {
        format!("{n} connections")
    }
}

/// The active route's health checks while it carries no stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Quiet {
    /// Since when it has had no stream; `None` while it has one.
    since: Option<Instant>,
    /// The last ping of its quiet spell.
    pinged: Option<Instant>,
}

impl Quiet {
    /// Whether a health check at `now` pings, with `streams` open: always
    /// while it carries streams and for `quiet_after` after; then every
    /// `quiet_ping_every`.
    fn should_ping(&mut self, now: Instant, streams: usize, quiet_after: Duration, ping_every: Duration) -> bool {
        if streams > 0 {
            *self = Quiet::default();
            return true;
        }
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) < quiet_after {
            return true;
        }
        match self.pinged {
            Some(at) if now.duration_since(at) < ping_every => false,
            _ => {
                self.pinged = Some(now);
                true
            }
        }
    }

    /// Whether a new stream should wait for a ping first: the route has not
    /// been pinged every health interval for a while.
    fn is_quiet(&self, now: Instant, quiet_after: Duration) -> bool {
        self.since.is_some_and(|since| now.duration_since(since) >= quiet_after)
    }
}

/// What brings a retired route back (a [`Renewal`] finds it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Comeback {
    /// A channel that can pay, other than the spent ones.
    NewChannel,
    /// That, or more settled on its channel than it knew: its node refused
    /// a receipt as stale, counting from a settlement newer than this
    /// proxy's lookup (and holding no receipt to hand over, or it would
    /// have).
    NewChannelOrSettlement,
}

/// `tollway wallet open-channel <node> <usd> --expires-in 7d`, quoted: what
/// opens a channel with `hop`'s node.
fn open_channel_command(hop: &Hop) -> String {
    format!("`tollway wallet open-channel {} <usd> --expires-in 7d`", hop.node.to_hex())
}

impl State {
    /// How long route `index`, silent, keeps the streams it carries: the
    /// shorter `dead_after_alone` when no other route could take new
    /// connections meanwhile (none is active, retired, down or silent
    /// itself). Not "none active": the next route is connected only when a
    /// new connection comes, so an idle SSH session on a proxy with two
    /// exits was cut after 5 s, not 30.
    fn silent_keep_for(&self, index: usize, now: Instant, config: &ClientConfig) -> Duration {
        if self.another_route_could_serve(index, now) {
            config.dead_after
        } else {
            config.dead_after.min(config.dead_after_alone)
        }
    }

    /// Whether a route other than `index` could take new connections: one
    /// not retired, down or silent itself.
    fn another_route_could_serve(&self, index: usize, now: Instant) -> bool {
        let silent = |j: usize| self.draining.iter().any(|d| d.index == j && d.silent_since.is_some());
        (0..self.routes.len()).any(|j| j != index && self.retired[j].is_none() && !self.down[j].is_down(now) && !silent(j))
    }

    /// Takes route `index` out of use until `comeback`; `spent` is the
    /// channel whose escrow ran out or was taken, if that is why.
    fn retire(&mut self, index: usize, spent: Option<ChannelId>, comeback: Comeback) {
        self.retired[index] = Some(comeback);
        self.spent.extend(spent);
        self.close_if_active(index);
    }

    /// Takes route `index`, and every other route that pays on `channel`
    /// (those through the same relay too), out of use until a renewal
    /// finds them a channel other than `channel`.
    fn retire_channel(&mut self, index: usize, channel: ChannelId) {
        for j in 0..self.routes.len() {
            if self.routes[j].hops().iter().any(|(_, h)| h.channel == channel) {
                self.retired[j] = Some(Comeback::NewChannel);
            }
        }
        self.retire(index, Some(channel), Comeback::NewChannel);
    }

    /// Closes route `index`'s session if it is the active one; whether it
    /// was.
    fn close_if_active(&mut self, index: usize) -> bool {
        match &self.active {
            Some((i, c)) if *i == index => {
                self.spare_relay = c.relay.clone().filter(|_| c.exit.is_closed());
                c.close();
                self.active = None;
                true
            }
            _ => false,
        }
    }
}

/// When a route that went down is tried again: exponential backoff,
/// reset once the route has stayed up for a while.
#[derive(Clone, Copy, Debug, Default)]
struct Backoff {
    /// Not tried before this, if set.
    until: Option<Instant>,
    /// The last wait; zero when the route never went down.
    wait: Duration,
    /// Since when it has been up (connected), if it is.
    up_since: Option<Instant>,
}

impl Backoff {
    fn is_down(&self, now: Instant) -> bool {
        self.until.is_some_and(|t| t > now)
    }

    /// Marks the route down at `now`; how long until it is tried again.
    fn down(&mut self, now: Instant, config: &ClientConfig) -> Duration {
        let stayed_up = self.up_since.is_some_and(|t| now.saturating_duration_since(t) >= config.retry_after_max);
        self.wait = if self.wait.is_zero() || stayed_up {
            config.retry_after
        } else {
            // Not `clamp`: it panics on a configuration whose first wait is
            // the longer one.
            (self.wait * 2).min(config.retry_after_max).max(config.retry_after)
        };
        self.until = Some(now + self.wait);
        self.up_since = None;
        self.wait
    }

    fn up(&mut self, now: Instant) {
        self.until = None;
        self.up_since = Some(now);
    }
}

/// `800 ms`, `4 s`: a wait, as a route's line tells it.
fn wait_text(wait: Duration) -> String {
    if wait < Duration::from_secs(1) {
        format!("{} ms", wait.as_millis())
    } else {
        format!("{} s", wait.as_secs())
    }
}

/// Why no route may be tried now, for a refusal: when the next one will
/// be, or that none will until renewed. "every route is down or out of
/// use" said neither.
fn none_usable(down: &[Backoff], retired: &[Option<Comeback>], now: Instant) -> String {
    let next = (down.iter().zip(retired))
        .filter(|(_, retired)| retired.is_none())
        .filter_map(|(backoff, _)| backoff.until.filter(|t| *t > now))
        .min();
    match next {
        Some(t) => format!(
            "every route is down; the next is tried again in {} (the log says why each went down)",
            wait_text(t.saturating_duration_since(now))
        ),
        None => String::from("every route is out of use until renewed (the log says why)"),
    }
}

/// The client's routes and the one in use.
pub struct RoutePool {
    config: ClientConfig,
    state: Mutex<State>,
    /// What the routes' sessions counted on each channel: holds the next
    /// session's carried bytes to it.
    carried: Arc<CarriedBook>,
    /// Itself, for the tasks it starts (which must not keep it alive).
    me: std::sync::Weak<RoutePool>,
    /// Counts the changes, other than by time, to whether a route could
    /// take new streams: a route kept for its silence, one activated or
    /// taken back, one that answers again or is closed after its silence,
    /// one renewed. A wait for a silent route to be left while another
    /// could serve ([`RoutePool::kept_silent_beside_another`]) looks
    /// again at each; a backoff's end it sees by a timer.
    routes_changed: tokio::sync::watch::Sender<u64>,
}

impl RoutePool {
    /// Starts the pool: connects the best route that works, then checks
    /// its health.
    pub fn start(config: ClientConfig) -> Arc<RoutePool> {
        let n = config.routes.len();
        let pool = Arc::new_cyclic(|me| RoutePool {
            me: me.clone(),
            routes_changed: tokio::sync::watch::channel(0).0,
            carried: Arc::new(CarriedBook::default()),
            state: Mutex::new(State {
                routes: config.routes.clone(),
                active: None,
                down: vec![Backoff::default(); n],
                retired: vec![None; n],
                spent: Vec::new(),
                history: History::default(),
                spare_relay: None,
                draining: Vec::new(),
                quiet: Quiet::default(),
                probe: None,
            }),
            config,
        });
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            // Connect at once rather than on the first stream: the user
            // learns now whether the routes work, and the first stream
            // does not wait for the handshakes.
            if let Some(pool) = weak.upgrade() {
                let _ = pool.session().await;
            }
            every(weak, |c| c.health_interval, |pool| async move { pool.check_health().await }).await;
        });
        // A loop of its own: a connect to a better route that hangs must
        // not hold up the active route's pings (failover within 2 s).
        tokio::spawn(every(Arc::downgrade(&pool), |c| c.health_interval, |pool| async move { pool.switch_back().await }));
        if pool.config.renewal.is_some() {
            tokio::spawn(every(Arc::downgrade(&pool), |c| c.renew_every, |pool| async move { pool.renew().await }));
        }
        pool
    }

    /// What the front end does with a new connection to `dest` before it
    /// answers its program: refuse it at once when no route is active and
    /// every route is retired or waits out its backoff (as
    /// [`RoutePool::session`] would find), or when `dest` is an IP literal
    /// the active route's exit announced it refuses (or a name on a port it
    /// denies); wait for the exit's
    /// answer when the active route's session holds as many streams as it
    /// may; else answer at once. A few comparisons, no allocation: it runs
    /// before every optimistic answer (time to first byte, ADR 0009).
    pub async fn before_reply(&self, dest: &Dest) -> BeforeReply {
        let state = self.state.lock().await;
        if let Some((_, connected)) = &state.active {
            let exit = &connected.exit;
            if let Some(policy) = exit.exit_policy() {
                // A name's port too: the exit checks it whatever the name
                // resolves to.
                let checked = match &dest.host {
                    Host::Ip(ip) => policy.check(*ip, dest.port),
                    _ => policy.check_port(dest.port),
                };
                if let Err(forbidden) = checked {
                    return BeforeReply::Refuse(ClientError::Policy(forbidden));
                }
            }
            return if exit.streams_full() {
                BeforeReply::AnswerOnceOpened
            } else {
                BeforeReply::Answer
            };
        }
        match self.refusal_without_active(&state) {
            Some(e) => BeforeReply::Refuse(e),
            None => BeforeReply::Answer,
        }
    }

    /// With no active route: why a new connection would be refused at
    /// once, or `None` when a route may be tried.
    fn refusal_without_active(&self, state: &State) -> Option<ClientError> {
        let now = Instant::now();
        let triable = (0..state.routes.len()).any(|i| state.retired[i].is_none() && !state.down[i].is_down(now));
        match state.routes.len() {
            0 => Some(ClientError::NoRoute(String::from("no routes configured"))),
            _ if triable => None,
            _ => Some(ClientError::NoRoute(none_usable(&state.down, &state.retired, now))),
        }
    }

    /// How many routes the pool has (up or not).
    pub fn route_count(&self) -> usize {
        self.config.routes.len()
    }

    /// Routes that were made active, in order: the last 64 (`HISTORY_KEPT`).
    pub async fn history(&self) -> Vec<usize> {
        self.state.lock().await.history.to_vec()
    }

    /// Pings the active route; marks it down if the ping fails.
    async fn check_health(&self) {
        let (index, connected, ping) = {
            let mut state = self.state.lock().await;
            let Some((index, connected)) = state.active.clone() else {
                return;
            };
            let (after, every) = (self.config.quiet_after, self.config.quiet_ping_every);
            let ping = state.quiet.should_ping(Instant::now(), connected.exit.streams_open(), after, every);
            (index, connected, ping)
        };
        let down = if let Some(why) = connected.closed_because() {
            Some((why, Outage::Closed))
        } else if !ping || self.answers_or_sends(&connected).await {
            None
        } else {
            let why = format!("no answer to a ping and no data in {} ms", self.silence_timeout(&connected).as_millis());
            Some((why, Outage::Silent))
        };
        if let Some((why, outage)) = down {
            self.mark_down(index, &why, outage).await;
        }
    }

    /// Pings the active route's session `connected`: whether it answered,
    /// or kept sending while the answer was awaited. Behind a slow link
    /// the answer waits behind the data already on its way (up to the
    /// node's credit window, which takes seconds at home speeds): bytes
    /// still arriving say the route is up, and the answer is awaited for
    /// as long as they do. It is not up once neither the answer nor a byte
    /// came for the health timeout: counted from its last bytes, not from
    /// the ping, so a route that goes silent in the middle of a download
    /// is down a timeout after its bytes stopped. (Excused by those bytes
    /// and pinged again a health interval later, it waited that interval
    /// and a second timeout: 2.5 s with the defaults, not 1.)
    ///
    /// Up, with no verdict, once `connected` is no longer the active
    /// route (a better one took the new streams back meanwhile): the one
    /// health loop, held by this wait for as long as bytes come, must ping
    /// the route that is active now, and a verdict here would mark down
    /// the route's index, now another session's.
    async fn answers_or_sends(&self, connected: &Arc<Connected>) -> bool {
        let (session, timeout) = (&connected.exit, self.silence_timeout(connected));
        // How late the bytes' end may be seen: a tenth of the timeout.
        let look_every = (timeout / 10).max(Duration::from_millis(1));
        let ping = session.ping();
        tokio::pin!(ping);
        let (mut heard_bytes, mut heard_at) = (session.bytes_received(), Instant::now());
        loop {
            let wait = look_every.min(timeout.saturating_sub(heard_at.elapsed()));
            match tokio::time::timeout(wait, &mut ping).await {
                Ok(pong) => {
                    if let Some(rtt) = pong {
                        connected.note_round_trip(rtt);
                    }
                    return pong.is_some();
                }
                Err(_) => {
                    if !self.is_active(connected).await {
                        return true;
                    }
                    let received = session.bytes_received();
                    if received > heard_bytes {
                        (heard_bytes, heard_at) = (received, Instant::now());
                    } else if heard_at.elapsed() >= timeout {
                        return false;
                    }
                }
            }
        }
    }

    /// How long a route may leave a ping unanswered, with no byte, before
    /// it counts as silent: the health timeout, or twice the route's round
    /// trip where that is longer. A route whose round trip passed the
    /// timeout (two far hops, a satellite link) was marked down at every
    /// check while healthy, and could carry nothing.
    fn silence_timeout(&self, connected: &Connected) -> Duration {
        self.config.health_timeout.max(connected.round_trip().saturating_mul(2))
    }

    /// Whether `connected` is the active route's session.
    async fn is_active(&self, connected: &Arc<Connected>) -> bool {
        self.state.lock().await.active.as_ref().is_some_and(|(_, c)| Arc::ptr_eq(c, connected))
    }

    /// Connects, beside the active route, the best route ranked above it
    /// that may be up again (its down time is over, or a renewal brought
    /// it back); once that works, new streams go to it, and the active
    /// route closes when the streams it carries are done. A failed try
    /// marks it down again, quietly: its outage was told.
    async fn switch_back(&self) {
        let (active, better, route, relay) = {
            let mut state = self.state.lock().await;
            let Some((active, connected)) = state.active.clone() else { return };
            let now = Instant::now();
            state.draining.retain(|d| !d.connected.is_closed());
            let silent = |j: usize| state.draining.iter().any(|d| d.index == j && d.silent_since.is_some());
            let up = |j: &usize| state.retired[*j].is_none() && !state.down[*j].is_down(now) && !silent(*j);
            let Some(better) = (0..active).find(up) else { return };
            // Still draining (it answered again after a silence): taken
            // back as it is, not connected again (see `State::draining`).
            if let Some(draining) = state.draining.iter().find(|d| d.index == better).cloned() {
                self.take_back(&mut state, draining);
                return;
            }
            let route = state.routes[better].clone();
            // Through the active route's relay: its session, not a second
            // one on the same channel (the relay would close the first).
            let relay = connected.relay.clone().filter(|l| route.relay.as_ref().is_some_and(|h| l.serves(h)));
            (active, better, route, SharedRelay::new_with(relay))
        };
        let started = Instant::now();
        let connected = connect_route_via(&route, &self.config.connect, &relay, &self.carried).await;
        let mut state = self.state.lock().await;
        let connected = match connected {
            Ok(connected) => connected,
            Err(e) if e.needs_another_channel() => {
                self.retire_refused(&mut state, better, &route, e);
                return;
            }
            Err(_) => {
                state.down[better].down(Instant::now(), &self.config);
                return;
            }
        };
        // Meanwhile the active route may have gone, or this one retired.
        let unchanged = matches!(&state.active, Some((i, _)) if *i == active)
            && state.retired[better].is_none()
            && same_channels(&state.routes[better], &route);
        if !unchanged {
            connected.close();
            return;
        }
        self.say(&format!(
            "{}; new connections go to it again, ahead of route {}",
            self.connected_line(&route, started),
            state.routes[active].name()
        ));
        self.activate(&mut state, better, connected);
    }

    /// Makes route `index` the active one, on `connected`, and returns it:
    /// watches what its nodes say about payment, and drains the route it
    /// replaces, if any.
    fn activate(&self, state: &mut State, index: usize, connected: Connected) -> Arc<Connected> {
        let connected = Arc::new(connected);
        tokio::spawn(watch_payments(self.me.clone(), index, Arc::downgrade(&connected)));
        self.activate_shared(state, index, connected)
    }

    /// [`Pool::activate`], for a route's connection that may have been
    /// active before (one taken back from draining).
    fn activate_shared(&self, state: &mut State, index: usize, connected: Arc<Connected>) -> Arc<Connected> {
        state.draining.retain(|d| d.index != index && !d.connected.is_closed());
        if let Some((replaced_index, replaced)) = state.active.replace((index, connected.clone())) {
            replaced.drain();
            state.draining.push(Draining { index: replaced_index, connected: replaced, silent_since: None });
        }
        state.down[index].up(Instant::now());
        state.history.push(index);
        state.quiet = Quiet::default();
        self.note_routes_changed();
        connected
    }

    /// Wakes the waits on `routes_changed`.
    fn note_routes_changed(&self) {
        self.routes_changed.send_modify(|n| *n += 1);
    }

    /// `route <r>: connected over tls in 3 ms`, for a connect started at
    /// `started`.
    fn connected_line(&self, route: &Route, started: Instant) -> String {
        format!(
            "route {}: connected over {} in {} ms",
            route.name(),
            self.config.connect.transport,
            started.elapsed().as_millis()
        )
    }

    fn say(&self, line: &str) {
        if let Some(say) = self.config.on_event {
            say(line);
        }
    }

    async fn mark_down(&self, index: usize, why: &str, outage: Outage) {
        let mut state = self.state.lock().await;
        self.mark_down_locked(&mut state, index, why, outage);
    }

    fn mark_down_locked(&self, state: &mut State, index: usize, why: &str, outage: Outage) {
        // Taken over: another client with this key (a second proxy) uses
        // the channel now. Trying it again would take it back, and the two
        // would trade it for as long as both run; this one leaves it.
        // Expired: the node would refuse it again; only a new channel
        // serves. Either way the route waits for a channel, and says so.
        let retired = state.active.as_ref().filter(|(i, _)| *i == index).and_then(|(_, c)| {
            (c.closed_with(ErrorCode::ChannelBusy).map(|(role, _)| (role, None)))
                .or_else(|| c.closed_with(ErrorCode::NoChannel).map(|(role, message)| (role, Some(message))))
        });
        if let Some((role, expired)) = retired {
            let route = state.routes[index].clone();
            let Some(hop) = route.hop(role) else { return };
            let why = match expired {
                None => format!(
                    "another session took over the channel with {role} {} (another `tollway connect` with this key?): \
                     one proxy per channel; open one for this proxy ({})",
                    hop.node.short(),
                    open_channel_command(hop)
                ),
                Some(message) => self.channel_gone_text(role, hop, &message),
            };
            self.say(&format!("route {} retired: {why}; {}", route.name(), self.next_route()));
            // Every route that pays on that channel (those through the same
            // relay too), until a renewal finds a channel of its own.
            state.retire_channel(index, hop.channel);
            return;
        }
        let now = Instant::now();
        let kept = match outage {
            Outage::Silent => self.keep_while_silent(state, index, now),
            Outage::Closed => 0,
        };
        let was_active = kept > 0 || state.close_if_active(index);
        let was_down = state.retired[index].is_some() || state.down[index].is_down(now);
        // Once per outage: a failed ping and a failed open may both report
        // it, and the second must not lengthen the wait.
        if was_active || !was_down {
            let wait = state.down[index].down(now, &self.config);
            let kept_line = if kept > 0 {
                let kept_for = state.silent_keep_for(index, now, &self.config);
                format!(
                    "; the {} open on it stay for up to {} in case it answers again",
                    connections(kept),
                    wait_text(kept_for)
                )
            } else {
                String::new()
            };
            self.say(&format!(
                "route {} down: {why}; {}, and it is tried again in {}{kept_line}",
                state.routes[index].name(),
                self.next_route(),
                wait_text(wait)
            ));
        }
    }

    /// Route `index`, if it is the active one and its session is up with
    /// streams on it, stops taking new streams but keeps those (it went
    /// silent, and may answer again): it drains, watched by
    /// [`watch_silent`]. How many streams it keeps; none: the caller closes
    /// it as before, as there is nothing to keep it for.
    fn keep_while_silent(&self, state: &mut State, index: usize, now: Instant) -> usize {
        let streams = match &state.active {
            Some((i, c)) if *i == index && !c.is_closed() => c.exit.streams_open(),
            _ => return 0,
        };
        if streams == 0 {
            return 0;
        }
        let Some((_, connected)) = state.active.take() else { return 0 };
        connected.drain();
        let heard = connected.exit.bytes_received();
        tokio::spawn(watch_silent(self.me.clone(), index, Arc::downgrade(&connected), heard));
        state.draining.push(Draining { index, connected, silent_since: Some(now) });
        self.note_routes_changed();
        streams
    }

    /// Returns once `connected` is kept for its silence (marked down; its
    /// streams wait for `dead_after` in case it answers again) while
    /// another route could take new streams: a stream still waiting for
    /// its first answer there goes to that route instead. Pending while
    /// the route answers, and while it is silent with no other route to
    /// go to: a roam's silence may pass, and the stream with it.
    ///
    /// Looks again at each change to the routes (`routes_changed`) and,
    /// while the route is kept, when another route's backoff ends (a
    /// change by time alone), and every health interval at most.
    async fn kept_silent_beside_another(&self, connected: &Arc<Connected>) {
        // Subscribed before the look, so a change after it wakes it.
        let mut changes = self.routes_changed.subscribe();
        loop {
            let next_look = {
                let state = self.state.lock().await;
                let now = Instant::now();
                let silent = state.draining.iter().find(|d| Arc::ptr_eq(&d.connected, connected) && d.silent_since.is_some());
                match silent {
                    None => None,
                    Some(d) if state.another_route_could_serve(d.index, now) => return,
                    Some(_) => {
                        let backoff_ends = state.down.iter().filter_map(|b| b.until).filter(|t| *t > now).min();
                        let every = self.config.health_interval;
                        Some(backoff_ends.map_or(every, |t| t.duration_since(now).min(every)))
                    }
                }
            };
            let timer = async {
                match next_look {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    // The pool is gone: nothing will say so.
                    return std::future::pending().await;
                },
                () = timer => {}
            }
        }
    }

    /// What one check of route `index`'s session `connected`, kept while
    /// silent, found (`answered`: a pong or any byte since it went silent);
    /// whether to check it again. Answered, it is a draining route like
    /// any other, taken back when it is the best up and its wait is over;
    /// silent for `dead_after` (`dead_after_alone` while no other route
    /// could take new connections: `State::silent_keep_for`), it is closed
    /// with its streams.
    async fn after_silent_check(&self, index: usize, connected: &Arc<Connected>, answered: bool) -> bool {
        let mut state = self.state.lock().await;
        let Some(at) = state.draining.iter().position(|d| Arc::ptr_eq(&d.connected, connected)) else {
            return false;
        };
        let Some(since) = state.draining[at].silent_since else { return false };
        let name = state.routes[index].name();
        // With no other route up, new connections have nowhere to go.
        let bound = state.silent_keep_for(index, Instant::now(), &self.config);
        if connected.is_closed() {
            // Its connection dropped, or its streams ended and it drained.
            state.draining.remove(at);
            self.note_routes_changed();
            false
        } else if answered {
            state.draining[at].silent_since = None;
            self.note_routes_changed();
            let streams = connections(connected.exit.streams_open());
            self.say(&format!("route {name} answers again; the {streams} open on it go on"));
            false
        } else if since.elapsed() >= bound {
            state.draining.remove(at);
            self.note_routes_changed();
            let streams = connections(connected.exit.streams_open());
            connected.close();
            let silent_for = wait_text(bound);
            self.say(&format!("route {name}: no answer for {silent_for}; the {streams} open on it are closed"));
            false
        } else {
            true
        }
    }

    fn next_route(&self) -> &'static str {
        if self.config.routes.len() > 1 {
            "new connections go to the next route"
        } else {
            "no other route"
        }
    }

    /// Why a route is retired whose `role` hop's node no longer serves its
    /// channel (`message`: it expired), and what to do.
    fn channel_gone_text(&self, role: &str, hop: &Hop, message: &str) -> String {
        let then = if self.config.renewal.is_some() {
            "; it comes back once the chain has it"
        } else {
            " and restart `tollway connect`"
        };
        format!(
            "{role} {} no longer serves channel {}: {message}. Open a new channel ({}){then}",
            hop.node.short(),
            hop.channel.short(),
            open_channel_command(hop)
        )
    }

    /// Route `index` (`route`) was refused at connect: `node`'s hello
    /// claimed more carried bytes on `channel` than this proxy takes on a
    /// node's word (`message` says how much). Tried again, the node would
    /// claim them again, so the route and every other that pays on the
    /// channel are retired, as a channel taken over is; only a new channel
    /// (a renewal) brings them back.
    fn retire_refused(&self, state: &mut State, index: usize, route: &Route, refusal: ConnectError) {
        // Told once: routes through one relay that a race tried together
        // are refused together, and went with the first.
        if state.retired[index].is_some() {
            return;
        }
        let (ConnectError::CarriedClaim { node, channel, message }
        | ConnectError::EscrowSpent { node, channel, message }
        | ConnectError::ChannelGone { node, channel, message }) = &refusal
        else {
            return;
        };
        let Some((role, hop)) = route.hops().into_iter().find(|(_, h)| h.node == *node && h.channel == *channel) else {
            return;
        };
        let why = match refusal {
            ConnectError::EscrowSpent { .. } => format!(
                "the channel with {role} {} has too little of its {} escrow left for one receipt ({message}). Open a \
                 new channel ({})",
                node.short(),
                hop.escrow,
                open_channel_command(hop)
            ),
            ConnectError::ChannelGone { .. } => self.channel_gone_text(role, hop, message),
            _ => format!("{role} {} asks to be paid for bytes this proxy never received: {message}", node.short()),
        };
        self.say(&format!("route {} retired: {why}; {}", route.name(), self.next_route()));
        state.retire_channel(index, *channel);
    }

    async fn retire(&self, index: usize, spent: Option<ChannelId>, comeback: Comeback) {
        self.state.lock().await.retire(index, spent, comeback);
    }

    /// Looks each retired route, and each route that is down, up again
    /// ([`Renewal`]). A retired one whose channels changed (a new channel
    /// for a spent one, or the escrow the chain really holds) is back in
    /// use. A down one whose node the chain now reaches elsewhere (a home
    /// node's new address after its line reconnected, other ports, a new
    /// TLS key) is tried there at once. Either way new connections take it
    /// when no better route is up (`switch_back`).
    async fn renew(&self) {
        let Some(renewal) = &self.config.renewal else { return };
        let (lookups, spent) = {
            let state = self.state.lock().await;
            let now = Instant::now();
            let lookups: Vec<(usize, Route)> = (0..state.routes.len())
                .filter(|&i| state.retired[i].is_some() || state.down[i].is_down(now))
                .map(|i| (i, state.routes[i].clone()))
                .collect();
            (lookups, state.spent.clone())
        };
        for (index, old) in lookups {
            // No channel yet, or the chain is unreachable: the retirement
            // or outage line already said so, so this stays quiet.
            let Ok(new) = (renewal.0)(old.clone(), spent.clone()).await else { continue };
            let mut state = self.state.lock().await;
            if !same_channels(&state.routes[index], &old) || !same_places(&state.routes[index], &old) {
                continue;
            }
            if let Some(comeback) = state.retired[index] {
                let caught_up = comeback == Comeback::NewChannelOrSettlement && catches_up(&old, &new);
                if !renews(&old, &new, &spent) && !caught_up {
                    continue;
                }
                // The exit first: the hop a user picked the route by.
                let hops: Vec<String> = (new.hops().into_iter().rev())
                    .map(|(role, h)| {
                        let settled = if caught_up { format!(", {} settled", h.settled_usd) } else { String::new() };
                        format!("{role} {} on channel {} with {} escrow{settled}", h.node.short(), h.channel.short(), h.escrow)
                    })
                    .collect();
                self.say(&format!("route {} back in use: {}", new.name(), hops.join("; ")));
                state.retired[index] = None;
            } else {
                let Some(moved) = moved(&old, &new) else { continue };
                if !state.down[index].is_down(Instant::now()) {
                    continue;
                }
                self.say(&format!("route {}: {moved}; trying it there", new.name()));
                // A session kept at the old place while silent waits for
                // nothing now, and would keep the route from the new one.
                if let Some(at) = state.draining.iter().position(|d| d.index == index && d.silent_since.is_some()) {
                    state.draining.remove(at).connected.close();
                }
            }
            state.routes[index] = new;
            state.down[index] = Backoff::default();
            self.note_routes_changed();
        }
    }

    /// One line on what the active route has paid, per hop: the channel's
    /// bytes and USD in the newest receipt, of its escrow. `None` with no
    /// route up.
    pub async fn usage_line(&self) -> Option<String> {
        let state = self.state.lock().await;
        let (index, connected) = state.active.as_ref()?;
        let route = &state.routes[*index];
        let hop = |role: &str, hop: &Hop, session: &SessionHandle| {
            let (bytes, usd) = paid(hop, &session.usage(), self.carried.signed(&hop.channel));
            format!("{role} {}: {} paid with {usd} of its {} escrow", hop.node.short(), human_bytes(bytes), hop.escrow)
        };
        let mut parts = vec![hop("exit", &route.exit, &connected.exit)];
        if let (Some(r), Some(link)) = (&route.relay, &connected.relay) {
            parts.push(hop("relay", r, &link.session));
        }
        Some(format!("route {}: {}", route.name(), parts.join("; ")))
    }

    /// The best route that is up, connecting if needed.
    async fn session(&self) -> Result<(usize, Arc<Connected>), ClientError> {
        let mut state = self.state.lock().await;
        if let Some((i, c)) = &state.active {
            let (i, why) = match c.closed_because() {
                None => return Ok((*i, c.clone())),
                Some(why) => (*i, why),
            };
            self.mark_down_locked(&mut state, i, &why, Outage::Closed);
        }
        let now = Instant::now();
        let candidates: Vec<(usize, Route)> = (0..state.routes.len())
            .filter(|&i| state.retired[i].is_none() && !state.down[i].is_down(now))
            .map(|i| (i, state.routes[i].clone()))
            .collect();
        // A route still draining is taken back as it is, not connected
        // again (see `State::draining`): ahead of the race when it is the
        // best route up. One still silent is neither.
        state.draining.retain(|d| !d.connected.is_closed());
        let draining: Vec<Draining> =
            candidates.iter().filter_map(|(i, _)| state.draining.iter().find(|d| d.index == *i).cloned()).collect();
        if let Some(first) = draining.first().filter(|d| candidates.first().is_some_and(|(c, _)| *c == d.index)) {
            if let Some(taken_back) = self.take_back(&mut state, first.clone()) {
                return Ok(taken_back);
            }
        }
        let candidates: Vec<(usize, Route)> =
            candidates.into_iter().filter(|(i, _)| !draining.iter().any(|d| d.index == *i)).collect();
        let mut last = match candidates.len() {
            _ if state.routes.is_empty() => String::from("no routes configured"),
            0 => none_usable(&state.down, &state.retired, now),
            _ => String::new(),
        };
        // Best first, but not one after the other: a route whose host
        // swallows the handshake would hold every new connection for the
        // handshake timeout. The next route starts a quarter second later
        // (or at once when a try fails) beside those still trying, and the
        // first to connect serves; the others are dropped, closing what
        // they opened. A better route that lost comes back by `switch_back`.
        let opts = &self.config.connect;
        // Routes through one relay share its session: the first attempt
        // that needs it connects it, and the others wait for that.
        let mut relays: Vec<(Hop, Arc<SharedRelay>)> = Vec::new();
        let mut spare = state.spare_relay.take();
        for (_, route) in &candidates {
            if let Some(h) = route.relay.as_ref().filter(|h| !relays.iter().any(|(r, _)| r.same_session_as(h))) {
                let link = spare.take_if(|l| l.serves(h));
                relays.push((h.clone(), Arc::new(SharedRelay::new_with(link))));
            }
        }
        let attempt = |(i, route): (usize, Route)| {
            let opts = opts.clone();
            let carried = self.carried.clone();
            let relay = (route.relay.as_ref())
                .and_then(|h| relays.iter().find(|(r, _)| r.same_session_as(h)))
                .map_or_else(|| Arc::new(SharedRelay::new()), |(_, cell)| cell.clone());
            async move {
                let started = Instant::now();
                match connect_route_via(&route, &opts, &relay, &carried).await {
                    Ok(connected) => Ok((i, route, started, connected)),
                    Err(e) => Err((i, route, e)),
                }
            }
        };
        let failed = |(i, route, e): (usize, Route, ConnectError)| {
            last = format!("{}: {}", route.name(), describe(&e));
            if e.needs_another_channel() {
                return self.retire_refused(&mut state, i, &route, e);
            }
            let wait = state.down[i].down(Instant::now(), &self.config);
            self.say(&format!("route {last}; it is tried again in {}", wait_text(wait)));
        };
        // A route that connected in the same instant as the winner: its
        // sessions close (a drop leaves them open on their nodes).
        let surplus = |(_, _, _, connected): (usize, Route, Instant, Connected)| connected.close();
        let won = race::first_success(candidates, race::NEXT_ATTEMPT_AFTER, attempt, failed, surplus).await;
        let Some((i, route, started, connected)) = won else {
            // Worse routes still draining serve before nothing does.
            for d in draining {
                if let Some(taken_back) = self.take_back(&mut state, d) {
                    return Ok(taken_back);
                }
            }
            return Err(ClientError::NoRoute(last));
        };
        self.say(&self.connected_line(&route, started));
        Ok((i, self.activate(&mut state, i, connected)))
    }

    /// Makes a draining route active again, if it still is open and not
    /// silent.
    fn take_back(&self, state: &mut State, draining: Draining) -> Option<(usize, Arc<Connected>)> {
        let Draining { index, connected, silent_since } = draining;
        if silent_since.is_some() {
            return None;
        }
        connected.keep_open();
        if connected.is_closed() {
            return None;
        }
        self.say(&format!("route {}: still open, new connections go to it again", state.routes[index].name()));
        Some((index, self.activate_shared(state, index, connected)))
    }

    /// Before a new stream goes to a quiet route (not pinged every health
    /// interval for a while, so its node may have gone without a word):
    /// one ping, up to `health_timeout`, which every stream arriving
    /// meanwhile waits for as well. Without an answer the route is marked
    /// down (false), and the streams go to the next one.
    async fn still_there_if_quiet(&self, index: usize, connected: &Connected) -> bool {
        let probe = {
            let mut state = self.state.lock().await;
            match &state.probe {
                Some(running) => running.clone(),
                None if state.quiet.is_quiet(Instant::now(), self.config.quiet_after) => {
                    // Streams are coming: checks every health interval again.
                    state.quiet = Quiet::default();
                    let probe = Arc::new(tokio::sync::OnceCell::new());
                    state.probe = Some(probe.clone());
                    probe
                }
                None => return true,
            }
        };
        let up = *probe
            .get_or_init(|| async {
                let timeout = self.silence_timeout(connected);
                let pong = tokio::time::timeout(timeout, connected.exit.ping()).await;
                if let Ok(Some(rtt)) = pong {
                    connected.note_round_trip(rtt);
                }
                let up = matches!(pong, Ok(Some(_)));
                let mut state = self.state.lock().await;
                state.probe = None;
                if !up {
                    let timeout_ms = timeout.as_millis();
                    let why = format!("no answer to a ping in {timeout_ms} ms after a quiet spell");
                    self.mark_down_locked(&mut state, index, &why, Outage::Silent);
                }
                up
            })
            .await;
        up
    }

    /// Opens a stream to `dest` on the best route and returns once the exit
    /// has connected it (so a refusal is an error here); a route that turns
    /// out dead is marked down and the next one is tried. One gone silent
    /// is left for the next while that could serve, and waited on again if
    /// none connects (it is kept in case it answers).
    pub async fn open(&self, dest: Dest) -> Result<(SessionHandle, StreamId), ClientError> {
        // The route this open left for its silence, kept in case it answers
        // again: should no other route connect, the open goes back to it.
        let mut left_silent: Option<(usize, Arc<Connected>)> = None;
        for _ in 0..=self.config.routes.len() {
            let ((index, connected), back) = match self.session().await {
                Ok(up) => (up, false),
                Err(e) => match left_silent.take().filter(|(_, c)| !c.is_closed()) {
                    Some(silent) => (silent, true),
                    None => return Err(e),
                },
            };
            let session = &connected.exit;
            if !back && !self.still_there_if_quiet(index, &connected).await {
                continue;
            }
            let opened = tokio::select! {
                opened = session.open(dest.clone()) => opened,
                // Marked down before its exit answered while another route
                // could serve: the open would wait for as long as the route
                // is kept (`dead_after`), while the next route serves at
                // once. Should the route answer after all, its driver
                // resets the stream, which no one awaits. With no other
                // route it waits, as a roam's silence may pass; and so it
                // does back on the silent route when the others failed.
                () = self.kept_silent_beside_another(&connected), if !back => {
                    left_silent = Some((index, connected.clone()));
                    continue;
                }
            };
            match opened {
                Ok(stream) => return Ok((session.clone(), stream)),
                Err(e) => {
                    if let Some(refused) = not_the_routes_fault(&e, self.config.connect.limits.stream_slot_wait) {
                        return Err(refused);
                    }
                    self.mark_down(index, &e.to_string(), Outage::Closed).await
                }
            }
        }
        Err(ClientError::NoRoute("every route failed".into()))
    }

    /// Whether new streams still go to the route a stream was `opened` on:
    /// it is the active route, and open. A stream kept for another request
    /// (the front end's to an origin) serves again only then: on a route
    /// marked down for its silence the request would wait for as long as
    /// the route is kept (`dead_after`), and on a replaced route it would
    /// keep that route's session from closing.
    pub async fn takes_new_streams(&self, opened: &OpenedOn) -> bool {
        self.active_route().await.is_some_and(|active| active.same_session_as(opened))
    }

    /// Waits until the route a stream was `opened` on is kept for its
    /// silence (marked down; its streams wait for `dead_after` in case it
    /// answers again) while another route could take new streams, or its
    /// session closed. Pending while it is up, even replaced: a response
    /// on its way still comes then. Pending too while it is silent with
    /// no other route to go to: a roam's silence may pass.
    pub async fn went_silent_or_closed(&self, opened: &OpenedOn) {
        let Some(connected) = opened.0.upgrade() else { return };
        tokio::select! {
            () = self.kept_silent_beside_another(&connected) => {}
            () = connected.exit.closed() => {}
        }
    }

    /// The route new streams go to now, if one is active and open: a
    /// stream opened on any other no longer takes new requests
    /// ([`RoutePool::takes_new_streams`]).
    pub async fn active_route(&self) -> Option<OpenedOn> {
        let state = self.state.lock().await;
        state.active.as_ref().filter(|(_, c)| !c.is_closed()).map(|(_, c)| OpenedOn(Arc::downgrade(c)))
    }

    /// [`RoutePool::open`] without waiting for the exit, with the socket
    /// attached in the same step (the front end's optimistic CONNECT). A
    /// dead route is marked down and the socket goes to the next one. The
    /// exit's answer comes later: `on_refused` hears a refusal. Returns the
    /// route it went to.
    ///
    /// Should the route's session end before its exit answered (the exit
    /// died or hung right as the program connected, before the pool could
    /// know), `if_unanswered` says what becomes of the connection.
    pub async fn open_attached(
        &self,
        dest: Dest,
        io: EarlySocket,
        on_refused: Option<OnRefused>,
        if_unanswered: IfUnanswered,
    ) -> Result<OpenedOn, ClientError> {
        let replays = match if_unanswered {
            IfUnanswered::OpenAgain => self.config.routes.len(),
            IfUnanswered::Close => 0,
        };
        self.open_attached_again(dest, io, on_refused, replays).await
    }

    /// [`RoutePool::open_attached`], opened again at most `replays` times.
    async fn open_attached_again(
        &self,
        dest: Dest,
        io: EarlySocket,
        on_refused: Option<OnRefused>,
        replays: usize,
    ) -> Result<OpenedOn, ClientError> {
        let mut io = io;
        for _ in 0..=self.config.routes.len() {
            let (index, connected) = self.session().await?;
            let session = &connected.exit;
            if !self.still_there_if_quiet(index, &connected).await {
                continue;
            }
            let on_unanswered = (replays > 0).then(|| self.open_elsewhere(index, &dest, on_refused.clone(), replays - 1));
            match session.open_attached(dest.clone(), io, on_refused.clone(), on_unanswered).await {
                Ok(_) => return Ok(OpenedOn(Arc::downgrade(&connected))),
                Err((e, back)) => {
                    if let Some(refused) = not_the_routes_fault(&e, self.config.connect.limits.stream_slot_wait) {
                        return Err(refused);
                    }
                    self.mark_down(index, &e.to_string(), Outage::Closed).await;
                    io = back.ok_or_else(|| ClientError::NoRoute("the session stopped holding the socket".into()))?;
                }
            }
        }
        Err(ClientError::NoRoute("every route failed".into()))
    }

    /// What becomes of a connection opened on route `index` whose session
    /// ends before its exit answered: it is opened again, on the route new
    /// streams go to by then.
    fn open_elsewhere(&self, index: usize, dest: &Dest, on_refused: Option<OnRefused>, replays: usize) -> OnUnanswered {
        let (pool, dest) = (self.me.clone(), dest.clone());
        Box::new(move |io: EarlySocket| {
            let Some(pool) = pool.upgrade() else {
                return;
            };
            // Named here, not for every connection opened: this is rare.
            let name = pool.config.routes[index].name();
            pool.say(&format!("route {name}: closed before its exit answered a connection to {dest}: opened again on the next route"));
            tokio::spawn(async move {
                if let Err(e) = Box::pin(pool.open_attached_again(dest.clone(), io, on_refused, replays)).await {
                    pool.say(&format!("a connection to {dest} opened again failed: {e}"));
                }
            });
        })
    }
}

/// What becomes of an optimistic open ([`RoutePool::open_attached`]) whose
/// route's session ends before its exit answered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfUnanswered {
    /// It is opened again on the route new streams go to by then, with
    /// the bytes the program had sent: it was not yet in flight, so the
    /// program does not see it fail (`OnUnanswered`). Its socket is read no
    /// further than those first bytes until the exit answers.
    OpenAgain,
    /// It closes, as one in flight does: for a caller that decides itself
    /// whether its bytes may go twice.
    Close,
}

/// The route a stream was opened on, for [`RoutePool::takes_new_streams`].
/// It does not keep the route's session open.
#[derive(Clone)]
pub struct OpenedOn(std::sync::Weak<Connected>);

impl OpenedOn {
    /// Whether both are the same route's session.
    pub fn same_session_as(&self, other: &OpenedOn) -> bool {
        std::sync::Weak::ptr_eq(&self.0, &other.0)
    }
}

/// The code for a program when opening a stream failed for a reason of
/// its own, not the route's: the exit refused the destination, or the
/// session holds as many streams as it may (one more connection than the
/// limit took the healthy route down, and every connection on it). `None`:
/// the route is at fault.
fn not_the_routes_fault(e: &OpenError, slot_wait: Duration) -> Option<ClientError> {
    match e {
        OpenError::Refused(code) => Some(ClientError::Destination(*code)),
        OpenError::Session(SessionError::TooManyStreams(max_streams)) => {
            Some(ClientError::NoStreamSlot { max_streams: *max_streams, waited: slot_wait })
        }
        OpenError::Session(SessionError::BadDest(e)) => Some(ClientError::BadDestination(e.clone())),
        _ => None,
    }
}

/// Runs `work` on the pool, then waits `interval`, for as long as the pool
/// lives (the loop holds it only while `work` runs).
async fn every<F, Fut>(pool: std::sync::Weak<RoutePool>, interval: fn(&ClientConfig) -> Duration, work: F)
where
    F: Fn(Arc<RoutePool>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        let Some(strong) = pool.upgrade() else { return };
        let wait = interval(&strong.config);
        work(strong).await;
        tokio::time::sleep(wait).await;
    }
}

fn describe(e: &ConnectError) -> String {
    e.to_string()
}

/// Whether two routes have the same hops as `key` sees them.
fn same_hops<T: PartialEq>(a: &Route, b: &Route, key: impl Fn(&Hop) -> T) -> bool {
    let keys = |r: &Route| -> Vec<T> { r.hops().into_iter().map(|(_, h)| key(h)).collect() };
    keys(a) == keys(b)
}

/// Whether two routes use the same channels on every hop.
fn same_channels(a: &Route, b: &Route) -> bool {
    same_hops(a, b, |h| (h.channel, h.escrow))
}

/// Whether two routes reach every hop at the same place: address, ports
/// and TLS key.
fn same_places(a: &Route, b: &Route) -> bool {
    same_hops(a, b, Hop::place)
}

/// Whether `new` can carry what retired `old` could not: the same nodes,
/// none of the spent channels, and a channel changed (a new one, or the
/// escrow the chain really holds).
fn renews(old: &Route, new: &Route, spent: &[ChannelId]) -> bool {
    same_hops(old, new, |h| h.node)
        && new.hops().iter().all(|(_, h)| !spent.contains(&h.channel) && h.settled_usd < h.escrow)
        && !same_channels(old, new)
}

/// Whether `new` shows more settled on a channel of `old` (the same
/// nodes and channels), with escrow left on every hop: a route retired for
/// a stale receipt then goes on from the chain's newer settlement.
fn catches_up(old: &Route, new: &Route) -> bool {
    same_hops(old, new, |h| h.node)
        && same_channels(old, new)
        && new.hops().iter().all(|(_, h)| h.settled_usd < h.escrow)
        && old.hops().iter().zip(new.hops()).any(|((_, o), (_, n))| n.settled_usd > o.settled_usd)
}

/// Where `new` reaches a node of `old` elsewhere (the same nodes): `exit
/// 9ad04e84 moved to 10.1.2.3:443-446`, or `None` if nothing moved.
fn moved(old: &Route, new: &Route) -> Option<String> {
    if !same_hops(old, new, |h| h.node) {
        return None;
    }
    let told: Vec<String> = old
        .hops()
        .into_iter()
        .zip(new.hops())
        .filter(|((_, o), (_, n))| o.place() != n.place())
        .map(|(_, (role, n))| {
            let ports = if n.port_first == n.port_last { n.port_first.to_string() } else { format!("{}-{}", n.port_first, n.port_last) };
            let addr = match n.addr {
                std::net::IpAddr::V4(a) => a.to_string(),
                std::net::IpAddr::V6(a) => format!("[{a}]"),
            };
            format!("{role} {} moved to {addr}:{ports}", n.node.short())
        })
        .collect();
    (!told.is_empty()).then(|| told.join(", "))
}

/// What a hop's channel has paid, bytes and USD: the newest receipt of
/// this session, the highest this process signed on the channel in any
/// session (`signed`: a new session signs its first only a receipt
/// interval in), or what the chain had settled when the route started,
/// whichever is highest. Receipts are cumulative: it never goes down.
fn paid(hop: &Hop, usage: &Usage, signed: (u64, Usd)) -> (u64, Usd) {
    let (signed_bytes, signed_usd) = signed;
    let bytes = usage.receipted_bytes.max(signed_bytes).max(hop.settled_bytes);
    (bytes, usage.receipted_usd.max(signed_usd).max(hop.settled_usd))
}

pub use tollway_tunnel::session::human_bytes;

/// While route `index`'s session `connected` is kept for its streams after
/// it went silent (having received `heard` bytes by then): pings it every
/// health interval until it answers, closes or has been silent for
/// `dead_after` ([`RoutePool::after_silent_check`]).
async fn watch_silent(pool: std::sync::Weak<RoutePool>, index: usize, connected: std::sync::Weak<Connected>, heard: u64) {
    loop {
        let Some((every, timeout)) = pool.upgrade().map(|p| (p.config.health_interval, p.config.health_timeout)) else {
            return;
        };
        tokio::time::sleep(every).await;
        let Some(c) = connected.upgrade() else { return };
        let timeout = timeout.max(c.round_trip().saturating_mul(2));
        let pong = matches!(tokio::time::timeout(timeout, c.exit.ping()).await, Ok(Some(_)));
        let answered = pong || c.exit.bytes_received() > heard;
        let Some(pool) = pool.upgrade() else { return };
        if !pool.after_silent_check(index, &c, answered).await {
            return;
        }
    }
}

/// While route `index` is connected, watches what its hops' nodes say
/// about payment: a spent escrow or a rejected receipt is told (once) and
/// retires the route, since it can carry nothing more (its node pauses it)
/// and the next route can.
async fn watch_payments(pool: std::sync::Weak<RoutePool>, index: usize, connected: std::sync::Weak<Connected>) {
    let (mut exit, mut relay) = {
        let Some(c) = connected.upgrade() else { return };
        (c.exit.watch_usage(), c.relay.as_ref().map(|l| l.session.watch_usage()))
    };
    let (mut told_exit, mut told_relay) = (Usage::default(), Usage::default());
    loop {
        let relay_changed = async {
            match relay.as_mut() {
                Some(r) => r.changed().await,
                None => std::future::pending().await,
            }
        };
        let (role, now, before) = tokio::select! {
            changed = exit.changed() => {
                if changed.is_err() { return }
                let now = exit.borrow_and_update().clone();
                ("exit", now.clone(), std::mem::replace(&mut told_exit, now))
            }
            changed = relay_changed => {
                let (Ok(()), Some(r)) = (changed, relay.as_mut()) else { return };
                let now = r.borrow_and_update().clone();
                ("relay", now.clone(), std::mem::replace(&mut told_relay, now))
            }
        };
        let Some(pool) = pool.upgrade() else { return };
        let route = pool.state.lock().await.routes[index].clone();
        let Some(hop) = route.hop(role) else { return };
        let then = if pool.config.renewal.is_some() {
            "; it comes back once the chain has it"
        } else {
            " and restart `tollway connect`"
        };
        let (why, spent, comeback) = if now.escrow_exhausted && !before.escrow_exhausted {
            let why = format!(
                "the channel with {role} {} has spent its {} escrow ({} paid). Open a new channel \
                 ({}){then}",
                hop.node.short(),
                hop.escrow,
                paid(hop, &now, pool.carried.signed(&hop.channel)).1,
                open_channel_command(hop)
            );
            (why, Some(hop.channel), Comeback::NewChannel)
        } else if now.receipt_rejected.is_some() && now.receipt_rejected != before.receipt_rejected {
            let rejected = now.receipt_rejected.as_deref().unwrap_or_default();
            // Stale: the node counts from a settlement newer than our
            // lookup; the chain shows it soon.
            let stale = rejected.starts_with("stale_receipt") && pool.config.renewal.is_some();
            let then = if stale { "; it comes back once the chain shows that settlement" } else { "" };
            let comeback = if stale { Comeback::NewChannelOrSettlement } else { Comeback::NewChannel };
            (format!("{role} {} rejected a receipt: {rejected}{then}", hop.node.short()), None, comeback)
        } else {
            continue;
        };
        pool.say(&format!("route {} retired: {why}; {}", route.name(), pool.next_route()));
        pool.retire(index, spent, comeback).await;
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::{human_bytes, moved, none_usable, renews, wait_text, Backoff, ClientConfig, Comeback, History, Quiet, HISTORY_KEPT};
    use crate::connect::{ConnectOptions, Hop, Route};
    use std::time::{Duration, Instant};
    use tollway_types::amount::Usd;
    use tollway_types::keys::SigningKey;
    use tollway_types::tx::channel_id;

    fn hop(node: &str, nonce: u64, escrow: u128, settled: u128) -> Hop {
        let me = SigningKey::from_label("renewing client").public();
        Hop {
            node: SigningKey::from_label(node).public(),
            addr: std::net::Ipv4Addr::LOCALHOST.into(),
            port_first: 1,
            port_last: 1,
            tls_key_pin: [0; 32],
            price_usd_micro_per_gib: 1,
            channel: channel_id(&me, nonce),
            escrow: Usd(escrow),
            settled_bytes: 0,
            settled_usd: Usd(settled),
        }
    }

    /// A refusal with no route to try says when the next try is, or that
    /// none comes until a renewal.
    #[test]
    fn with_no_route_to_try_the_refusal_says_when_the_next_is() {
        let now = Instant::now();
        let down = |secs| Backoff { until: Some(now + Duration::from_secs(secs)), wait: Duration::from_secs(secs), up_since: None };
        let text = none_usable(&[down(8), down(3)], &[None, None], now);
        assert!(text.starts_with("every route is down; the next is tried again in 3 s"), "{text}");
        let text = none_usable(&[down(8), down(3)], &[None, Some(Comeback::NewChannel)], now);
        assert!(text.contains("again in 8 s"), "{text}");
        let text = none_usable(&[down(8)], &[Some(Comeback::NewChannel)], now);
        assert!(text.starts_with("every route is out of use until renewed"), "{text}");
    }

    /// A renewal brings a route back only on the same nodes, none of the
    /// spent channels, with escrow left, and a channel changed on some hop
    /// (the relay's as well as the exit's).
    #[test]
    fn a_renewal_counts_only_when_a_hop_can_pay_again() {
        let old = Route { relay: Some(hop("relay", 1, 100, 0)), exit: hop("exit", 2, 100, 0) };
        let spent = [old.exit.channel];
        let with = |relay: Hop, exit: Hop| Route { relay: Some(relay), exit };
        assert!(renews(&old, &with(hop("relay", 1, 100, 0), hop("exit", 3, 100, 0)), &spent), "a new exit channel");
        assert!(renews(&old, &with(hop("relay", 4, 100, 0), hop("exit", 3, 100, 0)), &spent), "new channels on both");
        assert!(renews(&old, &with(hop("relay", 1, 100, 0), hop("exit", 2, 50, 0)), &[]), "the escrow the chain holds");
        assert!(!renews(&old, &old, &[]), "nothing changed");
        assert!(!renews(&old, &with(hop("relay", 1, 100, 0), hop("exit", 2, 100, 0)), &spent), "the spent channel again");
        assert!(!renews(&old, &with(hop("relay", 1, 100, 0), hop("exit", 3, 100, 100)), &spent), "no escrow left");
        assert!(!renews(&old, &with(hop("relay", 1, 100, 0), hop("another exit", 3, 100, 0)), &spent), "another node");
        assert!(!renews(&old, &Route { relay: None, exit: hop("exit", 3, 100, 0) }, &spent), "a hop fewer");
    }

    /// A node the chain reaches elsewhere is told by role, node and place;
    /// the same place, or other nodes, is no move.
    #[test]
    fn a_move_is_told_by_where_the_node_is_now() {
        let old = Route { relay: Some(hop("relay", 1, 10, 0)), exit: hop("exit", 2, 10, 0) };
        assert_eq!(moved(&old, &old), None);
        let mut new = old.clone();
        new.exit.addr = std::net::Ipv6Addr::LOCALHOST.into();
        (new.exit.port_first, new.exit.port_last) = (443, 446);
        let exit = old.exit.node.short();
        assert_eq!(moved(&old, &new), Some(format!("exit {exit} moved to [::1]:443-446")));
        new.relay.as_mut().unwrap().tls_key_pin = [7; 32];
        let relay = old.relay.as_ref().unwrap().node.short();
        assert_eq!(moved(&old, &new), Some(format!("relay {relay} moved to 127.0.0.1:1, exit {exit} moved to [::1]:443-446")));
        let other = Route { relay: None, exit: hop("another exit", 2, 10, 0) };
        assert_eq!(moved(&Route { relay: None, exit: old.exit.clone() }, &other), None);
    }

    /// A route down again and again waits twice as long each time, up to
    /// the maximum; only a route that stayed up that long starts over.
    #[test]
    fn a_route_down_again_waits_twice_as_long_up_to_the_maximum() {
        let connect = ConnectOptions {
            chain_id: "test".into(),
            key: SigningKey::from_label("backing-off client"),
            transport: tollway_net::Transport::Tls,
            net: tollway_net::ClientOptions::default(),
            limits: tollway_tunnel::session::Limits::default(),
            hop_window: None,
        };
        let config = ClientConfig::new(connect, Vec::new());
        let (first, max) = (config.retry_after, config.retry_after_max);
        assert_eq!((first, max), (Duration::from_secs(1), Duration::from_secs(30)));
        let start = Instant::now();
        let mut backoff = Backoff::default();
        assert!(!backoff.is_down(start));
        let mut now = start;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let wait = backoff.down(now, &config);
            assert!(backoff.is_down(now + wait - Duration::from_millis(1)) && !backoff.is_down(now + wait));
            waits.push(wait.as_secs());
            now += wait;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        // Connected for less than the maximum: a flapping route keeps its wait.
        backoff.up(now);
        assert!(!backoff.is_down(now));
        now += max - Duration::from_secs(1);
        assert_eq!(backoff.down(now, &config), max);
        // Up for the maximum: a fresh outage, tried again soon.
        now += max;
        backoff.up(now);
        now += max;
        assert_eq!(backoff.down(now, &config), first);
        assert_eq!(backoff.down(now, &config), first * 2);
        assert_eq!((wait_text(Duration::from_millis(300)), wait_text(first)), ("300 ms".to_string(), "1 s".to_string()));
    }

    #[test]
    fn a_quiet_route_is_pinged_seldom_and_checked_before_its_next_stream() {
        let (after, every) = (Duration::from_secs(30), Duration::from_secs(25));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut q = Quiet::default();
        // Busy: every check pings.
        assert!(q.should_ping(at(0), 3, after, every));
        assert!(!q.is_quiet(at(0), after));
        // Idle, but for less than `after`: every check still pings.
        let pings = |q: &mut Quiet, from: u64, to: u64| (from..to).step_by(500).filter(|&ms| q.should_ping(at(ms), 0, after, every)).count();
        assert_eq!(pings(&mut q, 500, 30_500), 60);
        assert!(!q.is_quiet(at(30_000), after) && q.is_quiet(at(30_500), after));
        // Quiet: one ping in 25 s, not fifty.
        assert_eq!(pings(&mut q, 30_500, 55_500), 1);
        assert_eq!(pings(&mut q, 55_500, 80_500), 1);
        // A stream ends the spell.
        assert!(q.should_ping(at(81_000), 1, after, every));
        assert_eq!(q, Quiet::default());
    }

    #[test]
    fn byte_counts_read_in_three_figures() {
        let cases = [(0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"), (5_358_000, "5.11 MiB"), (150 << 20, "150 MiB"), (3 << 40, "3.00 TiB")];
        for (n, text) in cases {
            assert_eq!(human_bytes(n), text);
        }
    }

    /// The pool's route history grew by a word at every route change for
    /// as long as the proxy ran, though only tests read it. It keeps the
    /// last `HISTORY_KEPT`, in order.
    #[test]
    fn the_route_history_keeps_only_the_last_changes() {
        let mut history = History::default();
        for index in 0..3 {
            history.push(index);
        }
        assert_eq!(history.to_vec(), [0, 1, 2]);
        let changes = 100 * HISTORY_KEPT;
        for i in 3..changes {
            history.push(i % 3);
        }
        let kept = history.to_vec();
        let expected: Vec<usize> = (changes - HISTORY_KEPT..changes).map(|i| i % 3).collect();
        assert_eq!(kept, expected);
        assert!(history.0.capacity() < 2 * HISTORY_KEPT, "{} entries' room", history.0.capacity());
    }
}
