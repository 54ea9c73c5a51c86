//! Ranked routes with health checks and failover (DESIGN §4): new streams
//! go to the best route that is up. A route whose session dies (its
//! connection drops) or stops answering pings is marked down for a while
//! and the next one takes the new streams; only the streams that were in
//! flight on the dead route fail.

use crate::connect::{connect_route, ConnectError, ConnectOptions, Connected, Hop, Route};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tollway_net::driver::{EarlySocket, OnRefused, OpenError, SessionHandle, Usage};
use tollway_tunnel::session::StreamId;
use tollway_tunnel::{Dest, ErrorCode};
use tollway_types::amount::Usd;

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub connect: ConnectOptions,
    /// Best first.
    pub routes: Vec<Route>,
    /// How often the active route is pinged.
    pub health_interval: Duration,
    /// A ping unanswered this long marks the route down.
    pub health_timeout: Duration,
    /// A route marked down is not tried again for this long.
    pub down_for: Duration,
    /// Told, as one line each, what a user of the proxy wants to know as
    /// it happens: a route connected, a route down and why, a channel's
    /// escrow spent, a receipt the node rejected. `tollway connect` prints
    /// them.
    pub on_event: Option<fn(&str)>,
}

impl ClientConfig {
    pub fn new(connect: ConnectOptions, routes: Vec<Route>) -> ClientConfig {
        ClientConfig {
            connect,
            routes,
            health_interval: Duration::from_millis(500),
            health_timeout: Duration::from_millis(1000),
            down_for: Duration::from_secs(30),
            on_event: None,
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
}

impl ClientError {
    /// The tunnel error code behind it, for SOCKS/HTTP replies.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::NoRoute(_) => ErrorCode::Unreachable,
            ClientError::Destination(code) => *code,
        }
    }
}

struct State {
    active: Option<(usize, Arc<Connected>)>,
    down_until: Vec<Option<Instant>>,
    /// Routes that cannot carry traffic until the proxy restarts: a hop's
    /// escrow is spent, or its node rejects our receipts (its chain says
    /// otherwise than ours did at start).
    retired: Vec<bool>,
    /// Which route was active, in order, for tests and logs.
    history: Vec<usize>,
}

impl State {
    /// Closes route `index`'s session if it is the active one; whether it
    /// was.
    fn close_if_active(&mut self, index: usize) -> bool {
        match &self.active {
            Some((i, c)) if *i == index => {
                c.close();
                self.active = None;
                true
            }
            _ => false,
        }
    }
}

/// The client's routes and the one in use.
pub struct RoutePool {
    config: ClientConfig,
    state: Mutex<State>,
    /// Itself, for the tasks it starts (which must not keep it alive).
    me: std::sync::Weak<RoutePool>,
}

impl RoutePool {
    /// Starts the pool: connects the best route that works, then checks
    /// its health.
    pub fn start(config: ClientConfig) -> Arc<RoutePool> {
        let n = config.routes.len();
        let pool = Arc::new_cyclic(|me| RoutePool {
            me: me.clone(),
            config,
            state: Mutex::new(State {
                active: None,
                down_until: vec![None; n],
                retired: vec![false; n],
                history: Vec::new(),
            }),
        });
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            // Connect at once rather than on the first stream: the user
            // learns now whether the routes work, and the first stream
            // does not wait for the handshakes.
            if let Some(pool) = weak.upgrade() {
                let _ = pool.session().await;
            }
            loop {
                let Some(pool) = weak.upgrade() else { return };
                let interval = pool.config.health_interval;
                pool.check_health().await;
                drop(pool);
                tokio::time::sleep(interval).await;
            }
        });
        pool
    }

    /// Routes that were active, in order.
    pub async fn history(&self) -> Vec<usize> {
        self.state.lock().await.history.clone()
    }

    /// Pings the active route; marks it down if the ping fails.
    async fn check_health(&self) {
        let active = self.state.lock().await.active.clone();
        let Some((index, connected)) = active else {
            return;
        };
        let down = if let Some(why) = connected.closed_because() {
            Some(why)
        } else {
            match tokio::time::timeout(self.config.health_timeout, connected.exit.ping()).await {
                Ok(Some(_)) => None,
                _ => Some(format!("no answer to a ping in {} ms", self.config.health_timeout.as_millis())),
            }
        };
        if let Some(why) = down {
            self.mark_down(index, &why).await;
        }
    }

    fn say(&self, line: &str) {
        if let Some(say) = self.config.on_event {
            say(line);
        }
    }

    async fn mark_down(&self, index: usize, why: &str) {
        let mut state = self.state.lock().await;
        self.mark_down_locked(&mut state, index, why);
    }

    fn mark_down_locked(&self, state: &mut State, index: usize, why: &str) {
        let was_active = state.close_if_active(index);
        let was_down = state.retired[index] || state.down_until[index].is_some_and(|t| t > Instant::now());
        state.down_until[index] = Some(Instant::now() + self.config.down_for);
        // Once per outage: a failed ping and a failed open may both report it.
        if was_active || !was_down {
            self.say(&format!(
                "route {} down: {why}; {}, and it is tried again in {} s",
                self.config.routes[index].name(),
                self.next_route(),
                self.config.down_for.as_secs()
            ));
        }
    }

    fn next_route(&self) -> &'static str {
        if self.config.routes.len() > 1 {
            "new connections go to the next route"
        } else {
            "no other route"
        }
    }

    /// Takes route `index` out of use until the proxy restarts.
    async fn retire(&self, index: usize) {
        let mut state = self.state.lock().await;
        state.retired[index] = true;
        state.close_if_active(index);
    }

    /// One line on what the active route has paid, per hop: the channel's
    /// bytes and USD in the newest receipt, of its escrow. `None` with no
    /// route up.
    pub async fn usage_line(&self) -> Option<String> {
        let state = self.state.lock().await;
        let (index, connected) = state.active.as_ref()?;
        let route = &self.config.routes[*index];
        let hop = |role: &str, hop: &Hop, session: &SessionHandle| {
            let (bytes, usd) = paid(hop, &session.usage());
            format!("{role} {}: {} paid with {usd} of its {} escrow", hop.node.short(), human_bytes(bytes), hop.escrow)
        };
        let mut parts = vec![hop("exit", &route.exit, &connected.exit)];
        if let (Some(r), Some(session)) = (&route.relay, &connected.relay) {
            parts.push(hop("relay", r, session));
        }
        Some(format!("route {}: {}", route.name(), parts.join("; ")))
    }

    /// The exit session of the best route that is up, connecting if needed.
    async fn session(&self) -> Result<(usize, SessionHandle), ClientError> {
        let mut state = self.state.lock().await;
        if let Some((i, c)) = &state.active {
            let (i, why) = match c.closed_because() {
                None => return Ok((*i, c.exit.clone())),
                Some(why) => (*i, why),
            };
            self.mark_down_locked(&mut state, i, &why);
        }
        let mut last = String::from("no routes configured");
        for (i, route) in self.config.routes.iter().enumerate() {
            if state.retired[i] || state.down_until[i].is_some_and(|t| t > Instant::now()) {
                continue;
            }
            let started = Instant::now();
            match connect_route(route, &self.config.connect).await {
                Ok(connected) => {
                    self.say(&format!(
                        "route {}: connected over {} in {} ms",
                        route.name(),
                        self.config.connect.transport,
                        started.elapsed().as_millis()
                    ));
                    let connected = Arc::new(connected);
                    tokio::spawn(watch_payments(self.me.clone(), i, Arc::downgrade(&connected)));
                    let exit = connected.exit.clone();
                    state.active = Some((i, connected));
                    state.history.push(i);
                    return Ok((i, exit));
                }
                Err(e) => {
                    last = format!("{}: {}", route.name(), describe(&e));
                    state.down_until[i] = Some(Instant::now() + self.config.down_for);
                    self.say(&format!(
                        "route {last}; it is tried again in {} s",
                        self.config.down_for.as_secs()
                    ));
                }
            }
        }
        Err(ClientError::NoRoute(last))
    }

    /// Opens a stream to `dest` on the best route and returns once the exit
    /// has connected it (so a refusal is an error here); a route that turns
    /// out dead is marked down and the next one is tried.
    pub async fn open(&self, dest: Dest) -> Result<(SessionHandle, StreamId), ClientError> {
        for _ in 0..=self.config.routes.len() {
            let (index, session) = self.session().await?;
            match session.open(dest.clone()).await {
                Ok(stream) => return Ok((session, stream)),
                Err(OpenError::Refused(code)) => return Err(ClientError::Destination(code)),
                Err(e) => self.mark_down(index, &e.to_string()).await,
            }
        }
        Err(ClientError::NoRoute("every route failed".into()))
    }

    /// [`RoutePool::open`] without waiting for the exit, with the socket
    /// attached in the same step (the front end's optimistic CONNECT). A
    /// dead route is marked down and the socket goes to the next one. The
    /// exit's answer comes later: `on_refused` hears a refusal.
    pub async fn open_attached(
        &self,
        dest: Dest,
        io: EarlySocket,
        on_refused: Option<OnRefused>,
    ) -> Result<(), ClientError> {
        let mut io = io;
        for _ in 0..=self.config.routes.len() {
            let (index, session) = self.session().await?;
            match session.open_attached(dest.clone(), io, on_refused.clone()).await {
                Ok(_) => return Ok(()),
                Err((OpenError::Refused(code), _)) => return Err(ClientError::Destination(code)),
                Err((e, back)) => {
                    self.mark_down(index, &e.to_string()).await;
                    io = back.ok_or_else(|| ClientError::NoRoute("the session stopped holding the socket".into()))?;
                }
            }
        }
        Err(ClientError::NoRoute("every route failed".into()))
    }
}

fn describe(e: &ConnectError) -> String {
    e.to_string()
}

/// What a hop's channel has paid, bytes and USD: the newest receipt of
/// this session, or what the chain had settled when the route started.
fn paid(hop: &Hop, usage: &Usage) -> (u64, Usd) {
    (usage.receipted_bytes.max(hop.settled_bytes), usage.receipted_usd.max(hop.settled_usd))
}

/// `1.50 GiB`, `12.0 MiB`, `512 KiB`, `100 B`: three figures.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let decimals = if v < 10.0 { 2 } else if v < 100.0 { 1 } else { 0 };
    format!("{v:.decimals$} {}", UNITS[unit])
}

/// While route `index` is connected, watches what its hops' nodes say
/// about payment: a spent escrow or a rejected receipt is told (once) and
/// retires the route, since it can carry nothing more (its node pauses it)
/// and the next route can.
async fn watch_payments(pool: std::sync::Weak<RoutePool>, index: usize, connected: std::sync::Weak<Connected>) {
    let (mut exit, mut relay) = {
        let Some(c) = connected.upgrade() else { return };
        (c.exit.watch_usage(), c.relay.as_ref().map(SessionHandle::watch_usage))
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
        let route = &pool.config.routes[index];
        let Some(hop) = (if role == "exit" { Some(&route.exit) } else { route.relay.as_ref() }) else { return };
        let why = if now.escrow_exhausted && !before.escrow_exhausted {
            format!(
                "the channel with {role} {} has spent its {} escrow ({} paid). Open a new channel \
                 (`tollway wallet open-channel {} <usd> --expires-in 7d`) and restart `tollway connect`",
                hop.node.short(),
                hop.escrow,
                paid(hop, &now).1,
                hop.node.to_hex()
            )
        } else if now.receipt_rejected.is_some() && now.receipt_rejected != before.receipt_rejected {
            format!(
                "{role} {} rejected a receipt: {}",
                hop.node.short(),
                now.receipt_rejected.as_deref().unwrap_or_default()
            )
        } else {
            continue;
        };
        pool.say(&format!("route {} retired: {why}; {}", route.name(), pool.next_route()));
        pool.retire(index).await;
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn byte_counts_read_in_three_figures() {
        let cases = [(0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"), (5_358_000, "5.11 MiB"), (150 << 20, "150 MiB"), (3 << 40, "3.00 TiB")];
        for (n, text) in cases {
            assert_eq!(human_bytes(n), text);
        }
    }
}
