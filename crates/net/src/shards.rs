//! Thread-per-core serving: a node's TCP connections each live on one
//! single-threaded runtime (a *shard*), with every task of their session.
//!
//! Why: a session is one driver task plus a reader and a writer task per
//! stream, and the bytes of a download pass through all of them. On a
//! work-stealing runtime those tasks wander between worker threads, and
//! every hand-off between threads is a futex wake-up and a cold cache. On
//! this 2-core machine one worker instead of two cut a one-hop download's
//! CPU per GiB by about a quarter and halved its context switches. Sessions
//! are independent of each other, so a node keeps every core busy by
//! spreading sessions, not the tasks of one session, across cores.
//!
//! The listener's accept loops stay where they are; an accepted TCP socket
//! is deregistered from the accepting runtime and registered again on the
//! shard with the fewest live connections, before its TLS handshake, so
//! its I/O readiness, timers and spawned tasks all stay on that shard's
//! thread. [`crate::Connection::spawn_here`] spawns onto a connection's
//! runtime. QUIC connections stay on the runtime of their endpoint (one UDP
//! socket serves them all).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::runtime::Handle;

/// The running shards: one OS thread with a single-threaded runtime each.
/// Dropping it stops them, cancelling the tasks still on them.
pub struct Shards {
    handles: ShardHandles,
    /// Closing these ends each thread's `block_on`.
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// Where to place work: the shards' runtimes and their live connections.
/// Cheap to clone; it does not keep the shards running.
#[derive(Clone)]
pub struct ShardHandles {
    shards: Arc<[Shard]>,
}

struct Shard {
    runtime: Handle,
    live: Arc<AtomicUsize>,
}

/// Counts one connection against its shard while it lives.
pub(crate) struct ShardLoad {
    live: Arc<AtomicUsize>,
}

impl ShardLoad {
    /// Counts one more connection on the shard whose count `live` is.
    fn on(live: &Arc<AtomicUsize>) -> ShardLoad {
        live.fetch_add(1, Ordering::Relaxed);
        ShardLoad { live: live.clone() }
    }
}

/// Where a connection is served: the runtime its socket is registered
/// with and, on a sharded node, its shard. A node keeps a session's home
/// and moves the session's later paths there
/// ([`crate::Connection::move_home`]): a port hop's new connection lands
/// on the least loaded shard, which is often not its session's.
#[derive(Clone)]
pub struct Home {
    pub(crate) runtime: Handle,
    /// The shard's live count; `None` off shards.
    pub(crate) shard: Option<Arc<AtomicUsize>>,
}

impl Home {
    pub(crate) fn new(runtime: Handle, load: Option<&ShardLoad>) -> Home {
        Home { runtime, shard: load.map(|l| l.live.clone()) }
    }

    /// Whether both are the same shard (or both off shards).
    pub fn is(&self, other: &Home) -> bool {
        match (&self.shard, &other.shard) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// A count of one more connection on this home's shard.
    pub(crate) fn load(&self) -> Option<ShardLoad> {
        self.shard.as_ref().map(ShardLoad::on)
    }
}

impl std::fmt::Debug for Home {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Home").field("sharded", &self.shard.is_some()).finish_non_exhaustive()
    }
}

impl Drop for ShardLoad {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shards {
    /// Starts `n` shards (at least one), threads named `tollway-shard-<i>`.
    pub fn start(n: usize) -> std::io::Result<Shards> {
        let mut shards = Vec::new();
        let mut stops = Vec::new();
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new().name(format!("tollway-shard-{i}")).spawn(move || {
                let _ = runtime.block_on(stopped);
            })?;
            shards.push(Shard { runtime: handle, live: Arc::new(AtomicUsize::new(0)) });
            stops.push(stop);
        }
        Ok(Shards { handles: ShardHandles { shards: shards.into() }, stops })
    }

    /// One shard per available core.
    pub fn per_core() -> std::io::Result<Shards> {
        Shards::start(std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// What a listener needs to place connections on these shards
    /// ([`crate::ServerOptions::shards`]).
    pub fn handles(&self) -> ShardHandles {
        self.handles.clone()
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        // Dropping the senders wakes every shard's `block_on`; each thread
        // then drops its runtime, and with it the tasks left on it.
        self.stops.clear();
    }
}

impl ShardHandles {
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Live connections per shard, in shard order.
    pub fn live_per_shard(&self) -> Vec<usize> {
        self.shards.iter().map(|s| s.live.load(Ordering::Relaxed)).collect()
    }

    /// The shard with the fewest live connections (the first of equals),
    /// and a guard that counts one more there until it is dropped; `None`
    /// only for an empty set (`Shards::start` makes at least one).
    pub(crate) fn least_loaded(&self) -> Option<(Handle, ShardLoad)> {
        let shard = self.shards.iter().min_by_key(|s| s.live.load(Ordering::Relaxed))?;
        Some((shard.runtime.clone(), ShardLoad::on(&shard.live)))
    }
}

impl std::fmt::Debug for ShardHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardHandles").field("live_per_shard", &self.live_per_shard()).finish()
    }
}
