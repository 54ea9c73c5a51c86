//! The node's listener loop: every accepted connection starts with a hello
//! (a new session) or a resume (another path of a session it has, after a
//! port hop). The first frame is read under the handshake timeout, so a
//! silent or slow client costs a task and a few bytes; how many
//! connections wait for it is capped, overall and per client address, and
//! so is the number of sessions.

use crate::channels::{now_unix_secs, ChannelSource, ReceiptBook};
use crate::exit::connect_dest;
use crate::holders::{Claim, Holders, SessionId};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tollway_net::driver::{self, BoxFuture, BoxStream, NodeHooks, SessionHandle, Status};
use tollway_net::rate::RelayTraffic;
use tollway_net::{Connection, Home, Listener, ServerOptions, TlsIdentity, Transport};
use tollway_tunnel::frame::{first_frame, FirstFrame, Frame, FrameError, MAX_BODY_BYTES};
use tollway_tunnel::session::{ChannelInfo, NodeTerms, Session};
use tollway_tunnel::{Dest, ErrorCode, ExitPolicy};
use tollway_types::admission::{client_key, AddressSlot, PerAddress};
use tollway_types::keys::AccountId;
use tollway_types::tx::{ChannelId, SignedReceipt};

/// Everything the node's data plane needs, resolved from config and flags.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub terms: NodeTerms,
    pub listen_ip: IpAddr,
    pub ports: RangeInclusive<u16>,
    pub transports: Vec<Transport>,
    pub policy: ExitPolicy,
    pub server: ServerOptions,
    pub connect_timeout: Duration,
    /// Sessions at once; a client beyond it is refused with `Limit`.
    pub max_sessions: usize,
    /// What the node relays, each way, over all its streams together
    /// (`tollway_net::rate`); `None`: as fast as it can.
    pub max_rate_bytes_per_sec: Option<u64>,
}

struct Hooks {
    channels: Arc<dyn ChannelSource>,
    receipts: Arc<ReceiptBook>,
    policy: ExitPolicy,
    connect_timeout: Duration,
    sessions: Arc<Sessions>,
    /// Which session each channel pays for (`holders`).
    holders: Arc<Mutex<Holders>>,
    /// Every destination socket goes through it: counted, and capped if
    /// the config says so.
    traffic: Arc<RelayTraffic>,
}

/// How long a session that takes a channel over waits for the session it
/// took it from to close. The old session's driver closes it at its next
/// turn; should it take longer, what it leaves unpaid comes later and is
/// owed on the channel's next session instead (`Holders::closed`).
const TAKEN_OVER_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What a session that claimed its channel owes from before.
enum Claimed {
    /// What the channel's closed sessions left unpaid.
    Owed(u64),
    /// The channel's open session, told to close: owed is what it leaves
    /// unpaid once it has closed.
    TakingOver(SessionHandle),
}

/// Gives `channel` to `session`, closing the session that held it, or
/// `ChannelBusy` if the channel was taken over too recently.
fn claim(
    sessions: &Sessions,
    holders: &Mutex<Holders>,
    receipts: &ReceiptBook,
    session: SessionId,
    channel: ChannelId,
    expires_at_secs: u64,
) -> Result<Claimed, ErrorCode> {
    let sessions = sessions.lock().map_err(|_| ErrorCode::Internal)?;
    let open = |id: &SessionId| sessions.get(id).is_some_and(|(h, _)| !matches!(h.status(), Status::Closed { .. }));
    let mut holders = holders.lock().map_err(|_| ErrorCode::Internal)?;
    let claimed = match holders.claim(session, channel, expires_at_secs, Instant::now(), open) {
        Claim::TakeOver(old) => match sessions.get(&old) {
            Some((handle, _)) => {
                handle.close(ErrorCode::ChannelBusy, "another session took this channel over");
                Ok(Claimed::TakingOver(handle.clone()))
            }
            // Gone from the table, so closed: its debt is in.
            None => Ok(Claimed::Owed(holders.take_owed(session, &channel))),
        },
        Claim::Free => Ok(Claimed::Owed(holders.take_owed(session, &channel))),
        Claim::Busy(_) => Err(ErrorCode::ChannelBusy),
        Claim::Gone => Err(ErrorCode::Shutdown),
    };
    // Under the holders' lock, so that the book gets the changes in order.
    receipts.keep_owed(holders.drain_owed_changes());
    claimed
}

/// What the channel's closed sessions left unpaid, owed by `session`.
fn take_owed(holders: &Mutex<Holders>, receipts: &ReceiptBook, session: SessionId, channel: ChannelId) -> Result<u64, ErrorCode> {
    let mut holders = holders.lock().map_err(|_| ErrorCode::Internal)?;
    let owed = holders.take_owed(session, &channel);
    receipts.keep_owed(holders.drain_owed_changes());
    Ok(owed)
}

impl NodeHooks for Hooks {
    fn lookup_channel(
        &self,
        session: SessionId,
        channel: ChannelId,
        client: AccountId,
    ) -> BoxFuture<Result<ChannelInfo, ErrorCode>> {
        let found = self.channels.channel(channel);
        let (sessions, holders, receipts) = (self.sessions.clone(), self.holders.clone(), self.receipts.clone());
        Box::pin(async move {
            let channel_record = found.await?;
            let expired = channel_record.expires_at_secs <= now_unix_secs();
            // Only a session the channel can serve takes it over: a hello
            // naming another client's channel (ids are public) or an
            // expired one is refused next, and must not close the
            // channel's session first.
            let carried_bytes = if channel_record.client == client && !expired {
                match claim(&sessions, &holders, &receipts, session, channel, channel_record.expires_at_secs)? {
                    Claimed::Owed(bytes) => bytes,
                    // What the old session owes is read once it has closed
                    // (its driver records it as the session closes): read
                    // at the takeover, while it still ran, the bytes it
                    // delivered between the read and its close were owed by
                    // no one.
                    Claimed::TakingOver(old) => {
                        let _ = tokio::time::timeout(TAKEN_OVER_CLOSE_WAIT, old.closed()).await;
                        take_owed(&holders, &receipts, session, channel)?
                    }
                }
            } else {
                0
            };
            // After the old session closed: its receipts are in, so the
            // debt it left counts from its newest.
            let latest_receipt = receipts.latest(&channel);
            Ok(ChannelInfo {
                channel: channel_record,
                latest_receipt,
                expired,
                carried_bytes,
            })
        })
    }

    fn connect(&self, session: [u8; 16], dest: Dest) -> BoxFuture<Result<BoxStream, ErrorCode>> {
        let policy = self.policy.clone();
        let timeout = self.connect_timeout;
        let traffic = self.traffic.clone();
        Box::pin(async move {
            let stream = connect_dest(&dest, &policy, timeout).await?;
            Ok(Box::new(traffic.wrap(stream, session)) as BoxStream)
        })
    }

    fn receipt_accepted(&self, receipt: SignedReceipt) {
        self.receipts.record(receipt);
    }

    fn session_closed(&self, session: SessionId, unpaid_bytes: u64) {
        // Whether it took its channel: only such a session meters unpaid
        // bytes, and its driver's status says Established until after this
        // call. One that did not (refused after its lookup, or closed
        // before the lookup's answer reached its driver) carried none of
        // the debt its lookup took (`take_owed`), which is owed still:
        // taken for good, it was forgiven to a client that hung up as its
        // lookup returned (ADR 0008).
        let took_channel = unpaid_bytes > 0
            || self.sessions.lock().is_ok_and(|map| {
                map.get(&session).is_some_and(|(handle, _)| matches!(handle.status(), Status::Established))
            });
        if let Ok(mut holders) = self.holders.lock() {
            holders.closed(session, took_channel.then_some(unpaid_bytes), now_unix_secs());
            // Kept in the book, so that a restart does not forgive it.
            self.receipts.keep_owed(holders.drain_owed_changes());
        }
    }
}

/// A running node data plane.
pub struct NodeServer {
    listener: Arc<Listener>,
    sessions: Arc<Sessions>,
    live: Arc<AtomicUsize>,
    ports: Arc<Mutex<BTreeMap<u16, u64>>>,
    refused_before_first_frame: Arc<AtomicU64>,
    accept_task: tokio::task::JoinHandle<()>,
    /// Closes sessions whose channel has expired (`close_expired`).
    expiry_task: tokio::task::JoinHandle<()>,
    traffic: Arc<RelayTraffic>,
}

/// How often the node looks for sessions whose channel has expired.
const EXPIRY_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Closes every session whose channel has expired, every
/// [`EXPIRY_SWEEP_EVERY`]. A channel is checked at the hello only, and a
/// session may outlive it by far: what it served after the expiry was paid
/// by receipts that stop counting once the client closes the channel (an
/// hour after it expires), and the node settles only every few minutes.
async fn close_expired(sessions: Arc<Sessions>, holders: Arc<Mutex<Holders>>) {
    let mut tick = tokio::time::interval(EXPIRY_SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let expired = holders.lock().map(|h| h.expired_sessions(now_unix_secs())).unwrap_or_default();
        if expired.is_empty() {
            continue;
        }
        let Ok(map) = sessions.lock() else { continue };
        for session in expired {
            if let Some((handle, _)) = map.get(&session) {
                handle.close(ErrorCode::NoChannel, "the channel has expired");
            }
        }
    }
}

impl NodeServer {
    /// Binds every port of the range on every transport and starts serving.
    pub async fn start(
        mut config: ServerConfig,
        identity: &TlsIdentity,
        channels: Arc<dyn ChannelSource>,
        receipts: Arc<ReceiptBook>,
    ) -> Result<NodeServer, tollway_net::NetError> {
        // The hello announces the policy the hooks enforce, never another.
        config.terms.exit_policy = config.policy.announced();
        let listener = Arc::new(
            Listener::bind(
                &config.transports,
                config.listen_ip,
                config.ports.clone(),
                identity,
                &config.server,
            )
            .await?,
        );
        let sessions = Arc::new(Mutex::new(HashMap::new()));
        // The debts the node's sessions left before it restarted.
        let mut holders = Holders::with_owed(receipts.owed(), now_unix_secs());
        receipts.keep_owed(holders.drain_owed_changes());
        let holders = Arc::new(Mutex::new(holders));
        let traffic = RelayTraffic::new(config.max_rate_bytes_per_sec);
        let hooks: Arc<dyn NodeHooks> = Arc::new(Hooks {
            channels,
            receipts,
            policy: config.policy.clone(),
            connect_timeout: config.connect_timeout,
            sessions: sessions.clone(),
            holders: holders.clone(),
            traffic: traffic.clone(),
        });
        let expiry_task = tokio::spawn(close_expired(sessions.clone(), holders));
        let live = Arc::new(AtomicUsize::new(0));
        let ports = Arc::new(Mutex::new(BTreeMap::new()));
        let refused_before_first_frame = Arc::new(AtomicU64::new(0));
        let shared = Accepting {
            sessions: sessions.clone(),
            live: live.clone(),
            ports: ports.clone(),
            awaiting_first_frame: Arc::new(Semaphore::new(config.server.max_awaiting_first_frame.max(1))),
            awaiting_per_address: PerAddress::new(config.server.max_handshakes_per_address.max(1)),
            refused_before_first_frame: refused_before_first_frame.clone(),
        };
        let accept_task = tokio::spawn(accept_loop(listener.clone(), config, hooks, shared));
        Ok(NodeServer {
            listener,
            sessions,
            live,
            ports,
            refused_before_first_frame,
            accept_task,
            expiry_task,
            traffic,
        })
    }

    /// Bytes relayed so far: read from destinations (for clients) and
    /// written to them (from clients).
    pub fn relayed_bytes(&self) -> (u64, u64) {
        self.traffic.totals()
    }

    /// Where it listens, per transport.
    pub fn local_addrs(&self) -> Vec<(Transport, std::net::SocketAddr)> {
        self.listener.local_addrs().to_vec()
    }

    /// Connections with a session or a handshake in progress.
    pub fn live_connections(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Connections accepted per local port (port hopping shows here).
    pub fn accepted_per_port(&self) -> BTreeMap<u16, u64> {
        self.ports.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Connections closed after their handshake without being read: too
    /// many were waiting for their first frame, overall or from their
    /// client's address.
    pub fn refused_before_first_frame(&self) -> u64 {
        self.refused_before_first_frame.load(Ordering::Relaxed)
    }

    pub fn n_sessions(&self) -> usize {
        self.sessions.lock().map_or(0, |m| m.len())
    }

    /// Stops accepting and closes every session.
    pub fn shutdown(&self) {
        self.accept_task.abort();
        self.expiry_task.abort();
        if let Ok(map) = self.sessions.lock() {
            for (handle, _) in map.values() {
                handle.close(ErrorCode::Shutdown, "the node is shutting down");
            }
        }
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The node's sessions by id, each with the home of its first connection,
/// where its driver and stream tasks run.
type Sessions = Mutex<HashMap<SessionId, (SessionHandle, Home)>>;

/// What the accept loop shares with the server's handle.
#[derive(Clone)]
struct Accepting {
    sessions: Arc<Sessions>,
    live: Arc<AtomicUsize>,
    ports: Arc<Mutex<BTreeMap<u16, u64>>>,
    /// Places for connections between their handshake and their first
    /// frame: a client can finish handshakes and then say nothing, each
    /// holding its TLS state for the handshake timeout.
    awaiting_first_frame: Arc<Semaphore>,
    awaiting_per_address: Arc<PerAddress>,
    refused_before_first_frame: Arc<AtomicU64>,
}

/// A connection's place while the node waits for its first frame.
type AwaitingPlace = (OwnedSemaphorePermit, AddressSlot);

impl Accepting {
    fn admit(&self, conn: &Connection) -> Option<AwaitingPlace> {
        let place = self.awaiting_per_address.admit(client_key(conn.peer_addr().ip()));
        let permit = self.awaiting_first_frame.clone().try_acquire_owned().ok();
        let admitted = permit.zip(place);
        if admitted.is_none() {
            self.refused_before_first_frame.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }
}

async fn accept_loop(
    listener: Arc<Listener>,
    config: ServerConfig,
    hooks: Arc<dyn NodeHooks>,
    shared: Accepting,
) {
    loop {
        let Ok(conn) = listener.accept().await else {
            // Accept errors are per connection (a failed handshake); the
            // listener itself keeps going.
            continue;
        };
        if let Ok(mut ports) = shared.ports.lock() {
            *ports.entry(conn.local_port()).or_default() += 1;
        }
        let Some(awaiting) = shared.admit(&conn) else {
            continue; // dropped: closed
        };
        let (config, hooks, shared) = (config.clone(), hooks.clone(), shared.clone());
        // On its connection's runtime: on a sharded node the session's
        // driver and stream tasks then share the thread of its socket.
        conn.runtime().clone().spawn(async move {
            shared.live.fetch_add(1, Ordering::Relaxed);
            serve_connection(conn, awaiting, &config, hooks, &shared.sessions).await;
            shared.live.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Reads the first frame, then starts or extends a session; returns when
/// the session (or this path of it) ends.
async fn serve_connection(
    mut conn: Connection,
    awaiting: AwaitingPlace,
    config: &ServerConfig,
    hooks: Arc<dyn NodeHooks>,
    sessions: &Sessions,
) {
    let binding = conn.channel_binding();
    let deadline = tokio::time::Instant::now() + config.terms.limits.handshake_timeout;
    let mut buf = Vec::with_capacity(1024);
    let first = loop {
        match first_frame(&buf) {
            Err(FrameError::Incomplete) if buf.len() <= MAX_BODY_BYTES + 8 => {}
            other => break other,
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, conn.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    drop(awaiting);
    match first {
        Ok(FirstFrame::Hello) => {
            let at_limit = sessions
                .lock()
                .map_or(true, |m| m.len() >= config.max_sessions);
            let session_id: [u8; 16] = blake3::hash(&binding).as_bytes()[..16]
                .try_into()
                .unwrap_or([0; 16]);
            let mut session =
                Session::node(config.terms.clone(), Instant::now(), 0, binding, session_id);
            if at_limit {
                session.close(
                    ErrorCode::Limit,
                    "this node serves as many sessions as it can",
                );
            }
            let home = conn.home();
            let handle = driver::spawn_with_prefix(session, Box::new(conn), buf, Some(hooks));
            if let Ok(mut map) = sessions.lock() {
                map.insert(session_id, (handle.clone(), home));
            }
            handle.closed().await;
            if let Ok(mut map) = sessions.lock() {
                map.remove(&session_id);
            }
        }
        Ok(FirstFrame::Resume { session_id }) => {
            let handle = sessions
                .lock()
                .ok()
                .and_then(|m| m.get(&session_id).cloned());
            let Ok((Frame::Resume(resume), used)) = Frame::decode(&buf) else {
                return;
            };
            if let Some((handle, home)) = handle {
                // Onto the session's shard, so the new path's I/O shares
                // the thread of the session's driver and streams.
                let Ok(conn) = conn.move_home(&home).await else { return };
                let rest = buf[used..].to_vec();
                let _ = handle.resume_path(Box::new(conn), binding, resume, rest);
            }
        }
        Err(_) => {}
    }
}
