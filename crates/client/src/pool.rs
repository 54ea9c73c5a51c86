//! Ranked routes with health checks and failover (DESIGN §4): new streams
//! go to the best route that is up. A route whose session dies (its
//! connection drops) or stops answering pings is marked down for a while
//! and the next one takes the new streams; only the streams that were in
//! flight on the dead route fail.

use crate::connect::{connect_route, ConnectError, ConnectOptions, Connected, Route};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tollway_net::driver::{EarlySocket, OnRefused, OpenError, SessionHandle};
use tollway_tunnel::session::StreamId;
use tollway_tunnel::{Dest, ErrorCode};

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
}

impl ClientConfig {
    pub fn new(connect: ConnectOptions, routes: Vec<Route>) -> ClientConfig {
        ClientConfig {
            connect,
            routes,
            health_interval: Duration::from_millis(500),
            health_timeout: Duration::from_millis(1000),
            down_for: Duration::from_secs(30),
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
    /// Which route was active, in order, for tests and logs.
    history: Vec<usize>,
}

/// The client's routes and the one in use.
pub struct RoutePool {
    config: ClientConfig,
    state: Mutex<State>,
}

impl RoutePool {
    /// Starts the pool and its health checker.
    pub fn start(config: ClientConfig) -> Arc<RoutePool> {
        let n = config.routes.len();
        let pool = Arc::new(RoutePool {
            config,
            state: Mutex::new(State {
                active: None,
                down_until: vec![None; n],
                history: Vec::new(),
            }),
        });
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
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
        let alive = !connected.is_closed()
            && matches!(
                tokio::time::timeout(self.config.health_timeout, connected.exit.ping()).await,
                Ok(Some(_))
            );
        if !alive {
            self.mark_down(index).await;
        }
    }

    async fn mark_down(&self, index: usize) {
        let mut state = self.state.lock().await;
        if let Some((i, c)) = &state.active {
            if *i == index {
                c.close();
                state.active = None;
            }
        }
        state.down_until[index] = Some(Instant::now() + self.config.down_for);
    }

    /// The exit session of the best route that is up, connecting if needed.
    async fn session(&self) -> Result<(usize, SessionHandle), ClientError> {
        let mut state = self.state.lock().await;
        if let Some((i, c)) = &state.active {
            if !c.is_closed() {
                return Ok((*i, c.exit.clone()));
            }
            let i = *i;
            state.active = None;
            state.down_until[i] = Some(Instant::now() + self.config.down_for);
        }
        let mut last = String::from("no routes configured");
        for (i, route) in self.config.routes.iter().enumerate() {
            if state.down_until[i].is_some_and(|t| t > Instant::now()) {
                continue;
            }
            match connect_route(route, &self.config.connect).await {
                Ok(connected) => {
                    let exit = connected.exit.clone();
                    state.active = Some((i, Arc::new(connected)));
                    state.history.push(i);
                    return Ok((i, exit));
                }
                Err(e) => {
                    last = format!("{}: {}", route.name(), describe(&e));
                    state.down_until[i] = Some(Instant::now() + self.config.down_for);
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
                Err(_) => self.mark_down(index).await,
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
                Err((_, back)) => {
                    self.mark_down(index).await;
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
