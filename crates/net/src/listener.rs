//! A node's listener: every port of its advertised range, over one or both
//! transports, feeding one queue of finished connections.
//!
//! Port hopping (DESIGN §4) is the protocol layer's business: client and
//! node derive the port of each time window and move make-before-break.
//! This layer only listens on every port at once and says which port each
//! connection arrived on.
//!
//! One accept loop per socket (a TCP listener, or a QUIC endpoint per UDP
//! port). A loop never handshakes itself: it takes a permit from the
//! listener-wide handshake cap, accepts, and spawns the handshake with its
//! timeout, so a client that connects and then says nothing (slowloris)
//! holds one permit for at most the timeout and blocks nobody. Finished
//! connections wait in a bounded queue for [`Listener::accept`]; while it
//! is full, handshakes hold their permits, and when all permits are held
//! new connections wait in the kernel's backlog.
//!
//! With [`crate::ServerOptions::shards`] set, an accepted TCP socket moves
//! to the least loaded shard (thread-per-core, [`crate::Shards`]) before
//! its first read; its handshake and everything after run there.

use crate::shards::ShardLoad;
use crate::{quic, tls, Connection, NetError, ServerOptions, ShardHandles, TlsIdentity, Transport};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tollway_types::admission::{client_key, AddressSlot, PerAddress};

/// At most this many ports per listener (each is a TCP and/or a UDP
/// socket; UDP sockets have 4 MiB buffers).
pub const MAX_LISTEN_PORTS: usize = 256;

/// After a failed `accept` (e.g. out of file descriptors), wait this long
/// rather than spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Counters of a listener's handshakes since it was bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Handshakes that produced a connection.
    pub handshakes_ok: u64,
    /// Handshakes that failed (not TLS, wrong ALPN, reset…).
    pub handshakes_failed: u64,
    /// Handshakes dropped at the handshake timeout.
    pub handshakes_timed_out: u64,
    /// Failed `accept` calls on a socket.
    pub accept_errors: u64,
    /// Connections closed at once: their address already had
    /// `max_handshakes_per_address` under way.
    pub refused_per_address: u64,
    /// QUIC connections asked to prove their address (a Retry) because
    /// half the handshake slots were taken.
    pub quic_retries: u64,
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    accept_errors: AtomicU64,
    refused_per_address: AtomicU64,
    quic_retries: AtomicU64,
}

/// What every accept loop and handshake task shares.
struct Shared {
    identity: TlsIdentity,
    handshake_timeout: Duration,
    handshakes: Arc<Semaphore>,
    max_handshakes: usize,
    per_address: Arc<PerAddress>,
    /// TCP connections accepted that have not sent a byte yet: they cost a
    /// task and a socket, never a handshake slot, so thousands of idle
    /// clients cannot keep a real one from handshaking.
    waiting: Arc<Semaphore>,
    counters: Arc<Counters>,
    /// Where TCP connections are served (thread-per-core), if anywhere
    /// but the accepting runtime.
    shards: Option<ShardHandles>,
    /// QUIC: the configuration the endpoints share, for a connection
    /// accepted with another congestion start, and the options it is
    /// built from.
    quic_config: Option<quinn::ServerConfig>,
    quic_options: crate::QuicOptions,
    /// QUIC: each client address's newest live connection, whose
    /// congestion state a port hop's next connection starts from.
    paths: Arc<quic::PathMemory>,
    /// The queue's only senders are here: once the loops and handshakes
    /// are gone, [`Listener::accept`] sees the queue close.
    ready: mpsc::Sender<Connection>,
}

impl Shared {
    /// Runs one handshake under the timeout and queues its connection.
    async fn finish<F>(self: Arc<Self>, handshake: F, permit: OwnedSemaphorePermit, deadline: tokio::time::Instant)
    where
        F: std::future::Future<Output = Result<Connection, NetError>>,
    {
        match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(connection)) => {
                self.counters.ok.fetch_add(1, Ordering::Relaxed);
                let _ = self.ready.send(connection).await;
            }
            Ok(Err(_)) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(permit);
    }

    /// An accepted TCP connection: waits (bounded) for its first byte,
    /// then handshakes under a permit and queues the connection.
    async fn handshake_tcp(
        self: Arc<Self>,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        (waiting, _slot): (OwnedSemaphorePermit, AddressSlot),
        shard_load: Option<ShardLoad>,
    ) {
        let deadline = tokio::time::Instant::now() + self.handshake_timeout;
        // Wait for the ClientHello's first byte before taking a handshake
        // slot (slowloris and idle connections).
        let readable = tokio::time::timeout_at(deadline, tcp.readable()).await;
        drop(waiting);
        let permit = match readable {
            Ok(Ok(())) => tokio::time::timeout_at(deadline, self.handshakes.clone().acquire_owned()).await,
            _ => {
                self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let Ok(Ok(permit)) = permit else {
            self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let identity = self.identity.clone();
        let handshake = async move {
            let connection = tls::accept_tcp(tcp, peer, &identity).await?;
            Ok(match shard_load {
                Some(load) => connection.on_shard(load),
                None => connection,
            })
        };
        self.clone().finish(handshake, permit, deadline).await;
    }
}

/// Listens on a range of ports over one or both transports; see the module
/// documentation. Dropping it stops accepting; connections already handed
/// out are unaffected.
pub struct Listener {
    ready: tokio::sync::Mutex<mpsc::Receiver<Connection>>,
    local_addrs: Vec<(Transport, SocketAddr)>,
    counters: Arc<Counters>,
    loops: Vec<JoinHandle<()>>,
    endpoints: Vec<quinn::Endpoint>,
}

impl Listener {
    /// Binds `ip` on every port of `ports` for each of `transports` (TCP
    /// sockets for [`Transport::Tls`], one QUIC endpoint per UDP port for
    /// [`Transport::Quic`]) and starts accepting.
    ///
    /// `0..=0` binds one ephemeral port per socket (for tests; TCP and UDP
    /// then get different ports, see [`Listener::local_addrs`]). Otherwise
    /// the range must not contain 0 and holds at most [`MAX_LISTEN_PORTS`].
    /// Any port that cannot be bound fails the whole call with
    /// [`NetError::BindFailed`] naming it.
    pub async fn bind(
        transports: &[Transport],
        ip: IpAddr,
        ports: RangeInclusive<u16>,
        identity: &TlsIdentity,
        opts: &ServerOptions,
    ) -> Result<Listener, NetError> {
        let (first, last) = (*ports.start(), *ports.end());
        let bad_range = |why: &str| NetError::BadPortRange { first, last, why: why.to_string() };
        if first > last {
            return Err(bad_range("the first port is after the last"));
        }
        if first == 0 && last != 0 {
            return Err(bad_range("port 0 (ephemeral) only on its own, as 0..=0"));
        }
        if usize::from(last - first) + 1 > MAX_LISTEN_PORTS {
            return Err(bad_range(&format!("more than {MAX_LISTEN_PORTS} ports")));
        }
        if transports.is_empty() {
            return Err(NetError::Config { reason: "a listener needs at least one transport".to_string() });
        }
        if opts.max_concurrent_handshakes == 0 || opts.accept_queue == 0 {
            return Err(NetError::Config {
                reason: "max_concurrent_handshakes and accept_queue must be at least 1".to_string(),
            });
        }

        // Bind everything before starting any loop, so a failure leaves
        // nothing running.
        let mut tcp_listeners = Vec::new();
        let mut endpoints = Vec::new();
        let mut local_addrs = Vec::new();
        let mut unique = transports.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let quic_config =
            if unique.contains(&Transport::Quic) { Some(quic::server_config(identity, &opts.quic)?) } else { None };
        for port in ports {
            let addr = SocketAddr::new(ip, port);
            for &transport in &unique {
                match transport {
                    Transport::Tls => {
                        let bind_failed = |io| NetError::BindFailed { transport, addr, io };
                        let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind_failed)?;
                        local_addrs.push((transport, listener.local_addr().map_err(bind_failed)?));
                        tcp_listeners.push(listener);
                    }
                    Transport::Quic => {
                        let config = quic_config.clone().ok_or_else(|| NetError::Config {
                            reason: "a QUIC endpoint without its configuration".to_string(),
                        })?;
                        let endpoint = quic::server_endpoint(addr, config, &opts.quic)?;
                        let local =
                            endpoint.local_addr().map_err(|io| NetError::BindFailed { transport, addr, io })?;
                        local_addrs.push((transport, local));
                        endpoints.push((endpoint, local));
                    }
                }
            }
        }

        let (ready_tx, ready_rx) = mpsc::channel(opts.accept_queue);
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared {
            identity: identity.clone(),
            handshake_timeout: opts.handshake_timeout,
            handshakes: Arc::new(Semaphore::new(opts.max_concurrent_handshakes)),
            max_handshakes: opts.max_concurrent_handshakes,
            per_address: PerAddress::new(opts.max_handshakes_per_address.max(1)),
            waiting: Arc::new(Semaphore::new(opts.max_waiting_connections.max(1))),
            counters: counters.clone(),
            shards: opts.shards.clone(),
            quic_config,
            quic_options: opts.quic.clone(),
            paths: Arc::default(),
            ready: ready_tx,
        });
        let mut loops = Vec::new();
        for listener in tcp_listeners {
            loops.push(tokio::spawn(tcp_loop(listener, shared.clone())));
        }
        for (endpoint, local) in &endpoints {
            loops.push(tokio::spawn(quic_loop(endpoint.clone(), *local, shared.clone())));
        }
        Ok(Listener {
            ready: tokio::sync::Mutex::new(ready_rx),
            local_addrs,
            counters,
            loops,
            endpoints: endpoints.into_iter().map(|(endpoint, _)| endpoint).collect(),
        })
    }

    /// The next connection whose handshake has finished, from any port and
    /// transport ([`Connection::local_port`] says which port). Failed
    /// handshakes are not errors here, only counted ([`Listener::stats`]).
    /// [`NetError::Closed`] once the listener is closed and drained.
    pub async fn accept(&self) -> Result<Connection, NetError> {
        self.ready.lock().await.recv().await.ok_or(NetError::Closed)
    }

    /// Every bound socket: its transport and local address.
    pub fn local_addrs(&self) -> &[(Transport, SocketAddr)] {
        &self.local_addrs
    }

    /// The bound ports of one transport, in order.
    pub fn ports(&self, transport: Transport) -> Vec<u16> {
        self.local_addrs.iter().filter(|(t, _)| *t == transport).map(|(_, a)| a.port()).collect()
    }

    pub fn stats(&self) -> ListenerStats {
        let c = &self.counters;
        ListenerStats {
            handshakes_ok: c.ok.load(Ordering::Relaxed),
            handshakes_failed: c.failed.load(Ordering::Relaxed),
            handshakes_timed_out: c.timed_out.load(Ordering::Relaxed),
            accept_errors: c.accept_errors.load(Ordering::Relaxed),
            refused_per_address: c.refused_per_address.load(Ordering::Relaxed),
            quic_retries: c.quic_retries.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting new connections on every port. Handshakes already
    /// under way finish (within the timeout) and can still be accepted;
    /// then [`Listener::accept`] returns [`NetError::Closed`].
    pub fn close(&mut self) {
        for task in self.loops.drain(..) {
            task.abort();
        }
        for endpoint in &self.endpoints {
            endpoint.set_server_config(None);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

async fn tcp_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok(waiting) = shared.waiting.clone().acquire_owned().await else { return };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                shared.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Some(slot) = shared.per_address.admit(client_key(peer.ip())) else {
            shared.counters.refused_per_address.fetch_add(1, Ordering::Relaxed);
            continue; // dropped: closed
        };
        let waiting = (waiting, slot);
        // Without shards, the accepting runtime serves the connection.
        let Some((runtime, load)) = shared.shards.as_ref().and_then(|s| s.least_loaded()) else {
            tokio::spawn(shared.clone().handshake_tcp(tcp, peer, waiting, None));
            continue;
        };
        // Move the socket to its shard before anything reads it: from
        // there on its readiness, timers and tasks stay on that thread.
        let Ok(tcp) = tcp.into_std() else {
            shared.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let shared = shared.clone();
        runtime.spawn(async move {
            match tokio::net::TcpStream::from_std(tcp) {
                Ok(tcp) => shared.handshake_tcp(tcp, peer, waiting, Some(load)).await,
                Err(_) => {
                    shared.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

async fn quic_loop(endpoint: quinn::Endpoint, local: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok(permit) = shared.handshakes.clone().acquire_owned().await else { return };
        let Some(incoming) = endpoint.accept().await else { return };
        // An Initial's source address is unproven: a spoofer sends them by
        // the thousand for the price of UDP, each holding a slot for the
        // timeout. Once half the slots are taken, an unproven address is
        // asked to prove it (a stateless Retry: one round trip more, and
        // nothing held meanwhile).
        if !incoming.remote_address_validated() && shared.handshakes.available_permits() < shared.max_handshakes / 2 {
            shared.counters.quic_retries.fetch_add(1, Ordering::Relaxed);
            let _ = incoming.retry();
            continue;
        }
        let Some(slot) = shared.per_address.admit(client_key(incoming.remote_address().ip())) else {
            shared.counters.refused_per_address.fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        };
        // A port hop's new connection (its address has a live one) starts
        // from that connection's congestion state (see `quic::PathMemory`).
        let ip = incoming.remote_address().ip();
        let config = match (shared.paths.congestion_of(ip), &shared.quic_config) {
            (Some(state), Some(base)) => quic::inherited_config(base, &shared.quic_options, state).ok(),
            _ => None,
        };
        let handshake = quic::accept(incoming, config, endpoint.clone(), local, shared.paths.clone());
        let deadline = tokio::time::Instant::now() + shared.handshake_timeout;
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            shared.finish(handshake, permit, deadline).await;
        });
    }
}
