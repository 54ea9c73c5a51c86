//! The chain node's driver: tokio tasks around the synchronous [`Core`].
//!
//! - **verifier**: submissions queue here; whatever has queued is checked
//!   in one batch (ed25519 batch verification, ZIP-215), then admitted to
//!   the mempool under the lock. Batching emerges from load.
//! - **producer**: a thread that, every block interval or as soon as the
//!   mempool holds a full block, runs one consensus step if a block would
//!   carry something (`Core::block_wanted`: ready txs, an epoch due) or the
//!   tip is `idle_heartbeat_ms` old. The lock is held through the durable
//!   commit, so nothing reads a state that the disk does not have.
//! - **api**: the axum server (`api.rs`).
//!
//! Crash-only: a failed commit stops the node; a restart recovers from the
//! store, which holds only whole blocks.

use crate::consensus::{Consensus, Solo};
use crate::core::{Committed, Core, CoreConfig, SubmitError, TxState};
use crate::directory::NodeDirectory;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};
use tollway_store::{EpochRecord, Store};
use tollway_types::{SignedTx, SigningKey, TxId};

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub block_interval: Duration,
    /// With no tx and no epoch due, a block only once the tip is this old:
    /// an idle chain stores about a block a minute, not one an interval,
    /// and its followers (block events, the status's `time_ms`) still see
    /// it alive. At most every block interval, whatever this says.
    pub idle_heartbeat_ms: u64,
    pub core: CoreConfig,
    /// Most requests whose txs are verified in one batch.
    pub verify_batch_max: usize,
    /// Txs waiting for verification beyond this are refused (503).
    pub verify_queue: usize,
    /// The API's connections: how many, from one address, how long idle,
    /// how long a request's head and body may take; its event streams.
    pub api: crate::listener::ApiLimits,
}

impl Default for NodeConfig {
    fn default() -> NodeConfig {
        NodeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            block_interval: Duration::from_secs(1),
            idle_heartbeat_ms: 60_000,
            core: CoreConfig::default(),
            verify_batch_max: 512,
            verify_queue: 8192,
            api: crate::listener::ApiLimits::default(),
        }
    }
}

/// What the event stream carries.
#[derive(Clone, Debug)]
pub enum ChainEvent {
    Block(Arc<Committed>),
    Epoch(Arc<EpochRecord>),
}

/// One decoded tx on its way to the verifier, with the canonical bytes it
/// was decoded from (its id and signing message come from them: no
/// re-encoding).
pub(crate) struct Incoming {
    pub stx: SignedTx,
    pub id: TxId,
    pub raw: axum::body::Bytes,
}

/// One request's txs (one for `POST /v1/txs`, many for the batch route):
/// answered together, one result per tx in order.
pub(crate) struct Submission {
    pub txs: Vec<Incoming>,
    pub reply: oneshot::Sender<Vec<Result<(), SubmitRefusal>>>,
}

/// A refusal at submission: the API's status code comes from `code`.
#[derive(Clone, Debug)]
pub struct SubmitRefusal {
    pub code: &'static str,
    pub message: String,
}

impl From<SubmitError> for SubmitRefusal {
    fn from(e: SubmitError) -> SubmitRefusal {
        SubmitRefusal { code: e.code(), message: e.to_string() }
    }
}

pub struct Shared {
    core: Mutex<Core>,
    pub(crate) tip: watch::Sender<u64>,
    pub(crate) events: broadcast::Sender<ChainEvent>,
    pub(crate) submit: mpsc::Sender<Submission>,
    /// Txs sent to the verifier and not yet answered (bounded by
    /// `config.verify_queue`).
    pub(crate) queued_txs: AtomicUsize,
    produce_now: Notify,
    /// Set by [`RunningNode::stop`]: the block loop ends after the block
    /// in progress.
    stopping: std::sync::atomic::AtomicBool,
    pub config: NodeConfig,
    pub(crate) metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub(crate) started: Instant,
    /// The newest copy of the node list (`directory`).
    directory: Mutex<Option<Arc<NodeDirectory>>>,
    /// Held (asynchronously) while a copy is made, so that requests at a
    /// new block make one between them, and wait without blocking their
    /// worker thread.
    directory_gate: tokio::sync::Mutex<()>,
    /// Event streams open, in all and per client (`ApiLimits`).
    pub(crate) event_streams: crate::api::Places,
    /// Long-polls waiting for a tx's block, in all and per client
    /// (`ApiLimits::max_waits`).
    pub(crate) waits: crate::api::Places,
}

impl Shared {
    /// The core, for a short read or write. Never held across an await.
    pub fn core(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock is a bug that already stopped the
        // producer; the data behind it is still the committed state.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node list as of the tip, copied under the core's lock at most
    /// once per block, and sorted on a blocking thread.
    pub(crate) async fn node_directory(self: &Arc<Self>) -> Result<Arc<NodeDirectory>, tokio::task::JoinError> {
        let height = *self.tip.borrow();
        let fresh = || {
            let cached = self.directory.lock().unwrap_or_else(|p| p.into_inner());
            cached.as_ref().filter(|d| d.height >= height).cloned()
        };
        if let Some(d) = fresh() {
            return Ok(d);
        }
        let _building = self.directory_gate.lock().await;
        if let Some(d) = fresh() {
            return Ok(d);
        }
        let shared = self.clone();
        let directory = tokio::task::spawn_blocking(move || {
            let (height, rows) = {
                let core = shared.core();
                (core.tip().height, NodeDirectory::rows(core.state()))
            };
            Arc::new(NodeDirectory::sorted(height, rows))
        })
        .await?;
        *self.directory.lock().unwrap_or_else(|p| p.into_inner()) = Some(directory.clone());
        Ok(directory)
    }

    /// Waits until the tx is committed or rejected, or the timeout passes.
    pub async fn wait_final(&self, id: &TxId, timeout: Duration) -> Result<Option<TxState>, crate::consensus::ChainError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.tip.subscribe();
        loop {
            let status = self.core().status(id)?;
            match status {
                Some(TxState::Pending) => {}
                other => return Ok(other),
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Ok(Some(TxState::Pending));
            }
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A running node: its address and a way to stop it.
pub struct RunningNode {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
}

impl RunningNode {
    /// Ends the block loop after the block in progress, so that the
    /// returned task of [`start`] ends and the store can close cleanly.
    /// (A runtime dropped under the loop panicked in it, and left the
    /// store for redb to repair at the next open.)
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.produce_now.notify_one();
    }
}

/// Opens the store and starts the node's tasks on the current tokio
/// runtime. Returns once the API listens. The returned future of
/// [`serve`] ends only on a fatal error.
pub async fn start(store: Store, key: SigningKey, config: NodeConfig) -> anyhow::Result<(RunningNode, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let core = Core::open(store, key.public(), config.core.clone())?;
    let height = core.tip().height;
    let (tip, _) = watch::channel(height);
    let (events, _) = broadcast::channel(1024);
    let (submit, submit_rx) = mpsc::channel(config.verify_queue);
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        tip,
        events,
        submit,
        queued_txs: AtomicUsize::new(0),
        produce_now: Notify::new(),
        stopping: std::sync::atomic::AtomicBool::new(false),
        config: config.clone(),
        metrics: crate::metrics::handle(),
        started: Instant::now(),
        directory: Mutex::new(None),
        directory_gate: tokio::sync::Mutex::new(()),
        event_streams: crate::api::Places::new(config.api.max_event_streams, config.api.max_event_streams_per_ip),
        waits: crate::api::Places::new(config.api.max_waits, config.api.max_waits_per_ip),
    });
    crate::metrics::on_open(&shared.core());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;

    tokio::spawn(verifier(shared.clone(), submit_rx));
    let producer = {
        let shared = shared.clone();
        let handle = tokio::runtime::Handle::current();
        let consensus = Solo::new(key);
        tokio::task::spawn_blocking(move || produce(shared, Box::new(consensus), handle))
    };
    let app = crate::api::router(shared.clone());
    let listener = crate::listener::GuardedListener::new(listener, config.api);
    let server = tokio::spawn(async move {
        listener.serve(app).await;
        Ok::<(), anyhow::Error>(())
    });
    let joined = tokio::spawn(async move {
        tokio::select! {
            r = producer => r.map_err(anyhow::Error::from)?,
            r = server => r.map_err(anyhow::Error::from)?,
        }
    });
    Ok((RunningNode { addr, shared }, joined))
}

async fn verifier(shared: Arc<Shared>, mut rx: mpsc::Receiver<Submission>) {
    let max = shared.config.verify_batch_max;
    let mut batch = Vec::with_capacity(max);
    while rx.recv_many(&mut batch, max).await > 0 {
        let taken = std::mem::take(&mut batch);
        let shared = shared.clone();
        // Verification and admission both run off the async workers: the
        // core's lock may be held by the producer through a durable commit.
        let _ = tokio::task::spawn_blocking(move || verify_and_admit(&shared, taken)).await;
    }
}

/// The message a tx's signature covers, from its canonical encoding:
/// `Tx::signing_bytes` is the domain tag, a zero and the codec's encoding
/// of the `Tx`, and a `SignedTx` encodes as that same `Tx` encoding
/// followed by the signature's 64 raw bytes. A test pins the equality.
pub(crate) fn signing_bytes_of_encoding(raw: &[u8]) -> Vec<u8> {
    const TAG: &[u8] = b"tollway-tx\0";
    let body = &raw[..raw.len().saturating_sub(64)];
    let mut msg = Vec::with_capacity(TAG.len() + body.len());
    msg.extend_from_slice(TAG);
    msg.extend_from_slice(body);
    msg
}

/// Checks every tx of the given requests in ONE batch verification, admits
/// the good ones to the mempool, and answers each request.
fn verify_and_admit(shared: &Shared, taken: Vec<Submission>) {
    let n_txs: usize = taken.iter().map(|s| s.txs.len()).sum();
    let msgs: Vec<Vec<u8>> = taken.iter().flat_map(|s| &s.txs).map(|t| signing_bytes_of_encoding(&t.raw)).collect();
    debug_assert!(taken.iter().flat_map(|s| &s.txs).zip(&msgs).all(|(t, m)| *m == t.stx.tx.signing_bytes()));
    let items: Vec<_> =
        taken.iter().flat_map(|s| &s.txs).zip(&msgs).map(|(t, m)| (t.stx.tx.signer, m.as_slice(), t.stx.signature)).collect();
    let mut seed = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
    let ok = tollway_types::keys::verify_batch(&items, seed);
    drop(items);
    let mut ok = ok.into_iter();
    let mut answers = Vec::with_capacity(taken.len());
    let mut counts = crate::metrics::SubmitCounts::default();
    let mut admitted = 0usize;
    {
        let mut core = shared.core();
        let admitted_ms = now_ms();
        for s in taken {
            let mut results = Vec::with_capacity(s.txs.len());
            for t in s.txs {
                let result = if ok.next().unwrap_or(false) {
                    core.admit(t.stx, t.id, t.raw.len(), admitted_ms).map_err(SubmitRefusal::from)
                } else {
                    Err(SubmitRefusal {
                        code: "bad_signature",
                        message: format!("bad signature: the tx is not signed by {}", t.stx.tx.signer),
                    })
                };
                counts.add(result.as_ref().err().map(|r| r.code));
                admitted += usize::from(result.is_ok());
                results.push(result);
            }
            answers.push((s.reply, results));
        }
        crate::metrics::mempool(core.mempool_len());
        // Only news can fill a block: a round of refusals woke the producer
        // for a block as empty as the last.
        if admitted > 0 && core.block_is_full() {
            shared.produce_now.notify_one();
        }
    }
    shared.queued_txs.fetch_sub(n_txs, Ordering::SeqCst);
    counts.record();
    for (reply, results) in answers {
        let _ = reply.send(results);
    }
}

/// The block loop. Runs on a blocking thread: block building and the
/// durable commit are CPU and disk work. Wakes every interval (or for a
/// full block), and makes a block only when it carries something or the
/// idle heartbeat is due: a tx submitted to an idle chain still waits at
/// most an interval.
fn produce(shared: Arc<Shared>, mut consensus: Box<dyn Consensus>, rt: tokio::runtime::Handle) -> anyhow::Result<()> {
    let interval = shared.config.block_interval;
    let mut next = Instant::now() + interval;
    loop {
        // Sleep until the interval ends, or until a full block is waiting.
        let wait = next.saturating_duration_since(Instant::now());
        rt.block_on(async {
            let _ = tokio::time::timeout(wait, shared.produce_now.notified()).await;
        });
        if shared.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        if Instant::now() >= next {
            next += interval;
            if next < Instant::now() {
                next = Instant::now() + interval;
            }
        } else if shared.core().block_is_full() {
            // A full block restarts the interval: no tiny block of the
            // stragglers right after it.
            next = Instant::now() + interval;
        } else {
            continue;
        }
        let started = Instant::now();
        let committed = {
            let mut core = shared.core();
            let now = now_ms();
            if !core.block_wanted(now, shared.config.idle_heartbeat_ms) {
                continue;
            }
            let c = consensus.step(&mut *core, now);
            if let Ok(Some(c)) = &c {
                crate::metrics::committed(c, &core, started.elapsed());
            }
            c
        };
        let committed = match committed {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!("block production failed, stopping: {e}");
                return Err(anyhow::anyhow!("block production failed: {e}"));
            }
        };
        let c = Arc::new(committed);
        for e in &c.epochs {
            let _ = shared.events.send(ChainEvent::Epoch(Arc::new(e.clone())));
        }
        let _ = shared.events.send(ChainEvent::Block(c.clone()));
        shared.tip.send_replace(c.header.height);
    }
}

#[cfg(test)]
mod tests {
    use super::signing_bytes_of_encoding;
    use tollway_types::{Amount, SigningKey, Token, Tx, TxBody, Usd};

    #[test]
    fn the_signing_message_taken_from_the_encoding_is_the_txs_signing_bytes() {
        let key = SigningKey::from_label("signer");
        let bodies = [
            TxBody::Transfer {
                to: SigningKey::from_label("to").public(),
                amount: Amount::Token(Token(1)),
            },
            TxBody::WithdrawUsd {
                amount: Usd(u128::MAX),
                reference: "ref-ünïcode".repeat(7),
            },
            TxBody::RegisterOracle {
                addr: std::net::IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
            },
            TxBody::ClaimVested,
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            let fee = if i % 2 == 0 {
                Amount::Usd(Usd(100))
            } else {
                Amount::Token(Token(u128::MAX / 3))
            };
            let tx = Tx {
                chain_id: "c".repeat(i * 40),
                signer: key.public(),
                nonce: u64::MAX >> i,
                fee,
                body,
            };
            let stx = tx.clone().sign(&key);
            assert_eq!(
                signing_bytes_of_encoding(&stx.encode()),
                tx.signing_bytes(),
                "{tx:?}"
            );
        }
    }
}
