//! The chain's embedded store (DESIGN §3, ADR 0005): one redb file holding
//! the genesis, every block, what each tx did, each epoch's report, each
//! node's figures in the recent epochs and the state at the tip.
//!
//! **Invariant:** a block, its tx index, its epoch reports, the nodes'
//! rows of those epochs and the state after it are written in ONE write
//! transaction with
//! `Durability::Immediate`. So after a crash at any instant the file holds
//! either all of a block or none of it, and the stored state is always the
//! state after the stored tip. A tx is acknowledged only after that
//! transaction's `commit` has returned.

use redb::{Database, Durability, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use tollway_ledger::state::NodeIdx;
use tollway_ledger::{EpochReport, Event};
use tollway_types::{codec, Block, SignedTx, Token, TxId, Usd};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// height → encoded block.
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
/// height → encoded `Vec<Vec<Event>>`: what each tx of the block did.
const RESULTS: TableDefinition<u64, &[u8]> = TableDefinition::new("results");
/// tx id → (height, index in block).
const TXS: TableDefinition<&[u8; 32], (u64, u32)> = TableDefinition::new("txs");
/// epoch → encoded `EpochRecord`.
const EPOCHS: TableDefinition<u64, &[u8]> = TableDefinition::new("epochs");
/// (epoch, node index) → encoded `NodeEpochRow`: each node's figures
/// in each of the last [`NODE_EPOCHS_KEPT`] epochs. By epoch first: an
/// epoch's rows go in at the end of the tree and the oldest epoch's go
/// from its start, where keyed by node first every epoch's commit wrote a
/// row into, and so copied, nearly every leaf. Added after format 1's
/// other tables: a store written before it has no such table, which reads
/// as no rows, and its first epoch's commit creates it. The node is named
/// by its index in the ledger's records (`NodeIdx`), which never changes
/// (a record is never removed, and a node registered again takes its old
/// one back): a 4-byte key part where the operator's key was 32, which
/// made a row 140 bytes of the file where it is now 70.
const NODE_EPOCHS: TableDefinition<(u64, NodeIdx), &[u8]> = TableDefinition::new("node_epochs");

/// Epochs of rows kept: a month of hourly epochs. A row takes about
/// 70 bytes of the file (a 12-byte key and a value of about 24, redb's
/// offsets, and leaves about half full as redb fills them in key order;
/// `tests/node_epochs_cost.rs` measures it): about 50 KB per node, 500 MB
/// at 10,000 nodes. Each epoch's commit prunes the epoch that fell out.
pub const NODE_EPOCHS_KEPT: u64 = 720;

const GENESIS_KEY: &str = "genesis";
const TIP_KEY: &str = "tip_height";
const STATE_KEY: &str = "tip_state";
const FORMAT_KEY: &str = "format";
/// Bumped when the layout changes, of the tables or of a record in them
/// (2: an over-claim slash in an epoch's report names its strike's
/// measurement); `open` refuses files of another format.
const FORMAT: &[u8] = b"tollway-store-2";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Db(String),
    #[error("store at {0} already exists; pass --force to start over, or run on it")]
    Exists(String),
    #[error("no store at {0}: run `tollway chain init` first")]
    Missing(String),
    /// Another program's redb file (no format of ours), or a store that
    /// another version of tollway wrote.
    #[error("store at {0} {advice}", advice = wrong_format_advice(.1))]
    WrongFormat(String, String),
    #[error("cannot open the store at {0}: {1} (not a chain store, or damaged)")]
    Unreadable(String, String),
    /// The file system's refusal (no permission to write it, say), or
    /// another program's hold on it: not the file's content.
    #[error("cannot open the store at {0}: {1}")]
    CannotOpen(String, String),
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    #[error("store at {0} is in use by another process (a running `tollway chain run`, or a `chain replay` reading it?); stop it first")]
    InUse(String),
    /// redb finds the file was not closed (the chain was killed or
    /// crashed): only a writer may repair it, and a reader refuses it.
    #[error(
        "store at {0} was not closed cleanly (the chain was killed or crashed) and must be repaired before it is read, \
         which writes to it: run `tollway chain replay` or `chain run` on it once where it can be written"
    )]
    NeedsRepair(String),
    /// A write to a store opened with [`Store::open_read_only`].
    #[error("store: opened to read only, it takes no block")]
    ReadOnly,
}

/// What to do with a store of a format other than [`FORMAT`].
fn wrong_format_advice(found: &str) -> String {
    let ours = String::from_utf8_lossy(FORMAT);
    match found.strip_prefix("tollway-store-") {
        Some(_) => format!(
            "was written by another version of tollway (store format {found:?}; this version reads {ours:?}): run it with \
             the tollway that made it, or start a new chain in another home with `tollway chain init --home DIR`"
        ),
        None if found.is_empty() => "holds no Tollway chain (another program's redb file?): give --home the directory \
             `tollway chain init` made"
            .to_string(),
        None => format!("is not a Tollway chain store (found format {found:?}, this version reads {ours:?})"),
    }
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

pub type Result<T> = std::result::Result<T, StoreError>;

/// An epoch's report and the block whose time closed it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    pub height: u64,
    pub time_ms: u64,
    pub report: EpochReport,
}

/// What one node was credited with at an epoch's end, and the figures its
/// reward came from (DESIGN §2 "Epochs"): the operator's history of why an
/// epoch paid what it did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeEpochRow {
    pub epoch: u64,
    /// Paid at the epoch's end, uptime and usage rewards together (it
    /// vests first): the node's `last_reward` then.
    pub reward: Token,
    pub verified_capacity_bps: u64,
    /// A quorum of oracles measured it this epoch; if not, the capacity,
    /// reputation and latency are those of its last measurement.
    pub measured: bool,
    /// The uptime credited for the epoch.
    pub uptime_ppm: u32,
    pub reputation_ppm: u32,
    pub latency_us: u32,
    /// USD its channels settled in the epoch (to the node and to the burn).
    pub settled_usd: Usd,
    /// Its region's scarcity multiplier that epoch (the epoch report's).
    pub region_multiplier_ppm: u32,
}

/// Everything one block changes, written atomically by [`Store::commit`].
pub struct BlockCommit<'a> {
    pub block: &'a Block,
    /// The ids of `block.txs`, in order (the caller has them already).
    pub tx_ids: &'a [TxId],
    /// What each tx did, in block order.
    pub results: &'a [Vec<Event>],
    /// Epochs closed before this block's txs ran (usually none, at most a
    /// few after a long pause).
    pub epochs: &'a [EpochRecord],
    /// The rows of the nodes registered in those epochs, by node index.
    pub node_epochs: &'a [(NodeIdx, NodeEpochRow)],
    /// `tollway_ledger::root::encode_state` of the state after the block;
    /// its root is `block.header.state_root`. `None` when the block changed
    /// nothing (no txs, no epoch end): the stored state is still current.
    pub state_encoding: Option<&'a [u8]>,
}

/// Where a committed tx is and what it did.
#[derive(Clone, Debug)]
pub struct TxRecord {
    pub tx: SignedTx,
    pub height: u64,
    pub index: u32,
    pub events: Vec<Event>,
}

pub struct Store {
    db: Db,
}

/// Opened to write (the chain), or to read only (replay): a read-only
/// file, and a file other readers have open, are then read too.
enum Db {
    Writable(Database),
    ReadOnly(ReadOnlyDatabase),
}

/// The most of the file the store keeps in memory (redb's page cache).
/// redb's default, 1 GiB, fills with every page written, not only with
/// pages read: a chain's process grew with its store, by about as much as
/// it wrote, towards a gigabyte. The recent blocks, the tx index's upper
/// pages and the tip snapshot fit in this; the OS's page cache holds more.
pub const CACHE_BYTES: usize = 64 << 20;

fn database() -> redb::Builder {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(CACHE_BYTES);
    builder
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

impl Store {
    /// Creates a new store holding the genesis block (height 0) and the
    /// genesis state. Refuses to touch an existing file.
    /// `genesis_file` is the genesis file's bytes, kept verbatim.
    pub fn create(path: &Path, genesis_file: &[u8], genesis_block: &Block, state_encoding: &[u8]) -> Result<Store> {
        if path.exists() {
            return Err(StoreError::Exists(path.display().to_string()));
        }
        let db = database().create(path)?;
        let mut w = db.begin_write()?;
        w.set_durability(Durability::Immediate)?;
        w.set_two_phase_commit(true);
        {
            let mut meta = w.open_table(META)?;
            meta.insert(FORMAT_KEY, FORMAT)?;
            meta.insert(GENESIS_KEY, genesis_file)?;
            // Create every table so readers never meet a missing one.
            w.open_table(RESULTS)?;
            w.open_table(TXS)?;
            w.open_table(EPOCHS)?;
            w.open_table(NODE_EPOCHS)?;
            w.open_table(BLOCKS)?;
        }
        w.commit()?;
        let store = Store { db: Db::Writable(db) };
        store.commit(&BlockCommit {
            block: genesis_block,
            tx_ids: &[],
            results: &[],
            epochs: &[],
            node_epochs: &[],
            state_encoding: Some(state_encoding),
        })?;
        Ok(store)
    }

    /// Opens the store to write: one process at a time (a running chain).
    /// A store not closed cleanly is repaired.
    pub fn open(path: &Path) -> Result<Store> {
        let db = open_db(path, |p| database().open(p))?;
        Store::checked(path, Db::Writable(db))
    }

    /// Opens the store to read only (replay): on a read-only filesystem,
    /// and beside other readers, but not beside a running chain (redb
    /// locks the file: [`StoreError::InUse`]), nor, as a reader cannot
    /// repair it, when it was not closed cleanly ([`StoreError::NeedsRepair`]).
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let db = open_db(path, |p| database().open_read_only(p))?;
        Store::checked(path, Db::ReadOnly(db))
    }

    /// `db`, once it is known to be a store of ours in this format.
    fn checked(path: &Path, db: Db) -> Result<Store> {
        let shown = || path.display().to_string();
        let store = Store { db };
        let r = store.begin_read()?;
        // Another program's redb file has no table of ours.
        let meta = r.open_table(META).map_err(|e| match e {
            redb::TableError::TableDoesNotExist(_) => StoreError::WrongFormat(shown(), String::new()),
            other => other.into(),
        })?;
        let format = meta.get(FORMAT_KEY)?.map(|g| g.value().to_vec()).unwrap_or_default();
        if format != FORMAT {
            return Err(StoreError::WrongFormat(shown(), String::from_utf8_lossy(&format).into_owned()));
        }
        drop(meta);
        drop(r);
        Ok(store)
    }

    fn begin_read(&self) -> std::result::Result<ReadTransaction, redb::TransactionError> {
        match &self.db {
            Db::Writable(db) => db.begin_read(),
            Db::ReadOnly(db) => db.begin_read(),
        }
    }

    /// Writes one block and everything it changed in a single durable
    /// transaction. Heights must follow the tip without gaps.
    pub fn commit(&self, c: &BlockCommit<'_>) -> Result<()> {
        let height = c.block.header.height;
        let Db::Writable(db) = &self.db else { return Err(StoreError::ReadOnly) };
        let mut w = db.begin_write()?;
        w.set_durability(Durability::Immediate)?;
        // With one phase, a newest commit whose checksum fails (a torn
        // write, a flipped bit) was rolled back to the one before without
        // a word when the file was next opened: an acknowledged block gone,
        // and another built at its height. Two phases make such a file an
        // error instead.
        w.set_two_phase_commit(true);
        {
            let mut meta = w.open_table(META)?;
            let tip = meta.get(TIP_KEY)?.map(|g| decode_u64(g.value())).transpose()?;
            let expected = tip.map_or(0, |t| t + 1);
            if height != expected {
                return Err(corrupt(format!("block {height} does not follow the stored tip (expected {expected})")));
            }
            let mut blocks = w.open_table(BLOCKS)?;
            blocks.insert(height, c.block.encode().as_slice())?;
            let mut results = w.open_table(RESULTS)?;
            results.insert(height, codec::encode(&c.results.to_vec()).as_slice())?;
            let mut txs = w.open_table(TXS)?;
            debug_assert_eq!(c.tx_ids.len(), c.block.txs.len());
            // In key order: the B-tree's inserts then walk its pages once,
            // left to right, instead of jumping to a random leaf per tx.
            let mut by_id: Vec<(&TxId, u32)> = c.tx_ids.iter().zip(0u32..).collect();
            by_id.sort_unstable_by_key(|(id, _)| id.0);
            for (id, i) in by_id {
                txs.insert(&id.0, (height, i))?;
            }
            let mut epochs = w.open_table(EPOCHS)?;
            for e in c.epochs {
                epochs.insert(e.report.epoch, codec::encode(e).as_slice())?;
            }
            if let Some(newest) = c.node_epochs.iter().map(|(_, row)| row.epoch).max() {
                let mut rows = w.open_table(NODE_EPOCHS)?;
                // In key order, as the tx index's: the nodes come in
                // registration order.
                let mut in_order: Vec<&(NodeIdx, NodeEpochRow)> = c.node_epochs.iter().collect();
                in_order.sort_unstable_by_key(|(node, row)| (row.epoch, *node));
                for (node, row) in in_order {
                    rows.insert((row.epoch, *node), codec::encode(row).as_slice())?;
                }
                // Usually the one epoch that fell out of the window.
                if let Some(last_pruned) = newest.checked_sub(NODE_EPOCHS_KEPT) {
                    rows.retain_in((0, 0)..=(last_pruned, NodeIdx::MAX), |_, _| false)?;
                }
            }
            if let Some(state) = c.state_encoding {
                meta.insert(STATE_KEY, state)?;
            }
            meta.insert(TIP_KEY, height.to_le_bytes().as_slice())?;
        }
        w.commit()?;
        Ok(())
    }

    /// The genesis file's bytes, as given to `create`.
    pub fn genesis_file(&self) -> Result<Vec<u8>> {
        let r = self.begin_read()?;
        let meta = r.open_table(META)?;
        let g = meta.get(GENESIS_KEY)?.ok_or_else(|| corrupt("no genesis"))?;
        Ok(g.value().to_vec())
    }

    pub fn tip_height(&self) -> Result<u64> {
        let r = self.begin_read()?;
        let meta = r.open_table(META)?;
        let g = meta.get(TIP_KEY)?.ok_or_else(|| corrupt("no tip"))?;
        decode_u64(g.value())
    }

    /// The tip block and the encoded state after it, read in one snapshot
    /// so they always belong together.
    pub fn tip(&self) -> Result<(Block, Vec<u8>)> {
        let r = self.begin_read()?;
        let meta = r.open_table(META)?;
        let height = decode_u64(meta.get(TIP_KEY)?.ok_or_else(|| corrupt("no tip"))?.value())?;
        let state = meta.get(STATE_KEY)?.ok_or_else(|| corrupt("no state"))?.value().to_vec();
        let blocks = r.open_table(BLOCKS)?;
        let block = blocks.get(height)?.ok_or_else(|| corrupt(format!("tip block {height} missing")))?;
        let block = Block::decode(block.value()).map_err(|e| corrupt(format!("block {height}: {e}")))?;
        Ok((block, state))
    }

    pub fn block(&self, height: u64) -> Result<Option<Block>> {
        let r = self.begin_read()?;
        let blocks = r.open_table(BLOCKS)?;
        let Some(g) = blocks.get(height)? else { return Ok(None) };
        Block::decode(g.value()).map(Some).map_err(|e| corrupt(format!("block {height}: {e}")))
    }

    /// What each tx of block `height` did.
    pub fn results(&self, height: u64) -> Result<Option<Vec<Vec<Event>>>> {
        let r = self.begin_read()?;
        let t = r.open_table(RESULTS)?;
        let Some(g) = t.get(height)? else { return Ok(None) };
        codec::decode(g.value(), usize::MAX).map(Some).map_err(|e| corrupt(format!("results {height}: {e}")))
    }

    pub fn tx_location(&self, id: &TxId) -> Result<Option<(u64, u32)>> {
        let r = self.begin_read()?;
        let t = r.open_table(TXS)?;
        Ok(t.get(&id.0)?.map(|g| g.value()))
    }

    pub fn tx(&self, id: &TxId) -> Result<Option<TxRecord>> {
        let Some((height, index)) = self.tx_location(id)? else { return Ok(None) };
        let block = self.block(height)?.ok_or_else(|| corrupt(format!("tx {id} points at missing block {height}")))?;
        let tx = block.txs.get(index as usize).cloned().ok_or_else(|| corrupt(format!("tx {id}: bad index")))?;
        let events = self.results(height)?.and_then(|r| r.into_iter().nth(index as usize)).unwrap_or_default();
        Ok(Some(TxRecord { tx, height, index, events }))
    }

    /// Epoch records from `from` on, at most `limit`.
    pub fn epochs(&self, from: u64, limit: usize) -> Result<Vec<EpochRecord>> {
        let r = self.begin_read()?;
        let t = r.open_table(EPOCHS)?;
        let mut out = Vec::new();
        for item in t.range(from..)?.take(limit) {
            let (k, v) = item?;
            out.push(codec::decode(v.value(), usize::MAX).map_err(|e| corrupt(format!("epoch {}: {e}", k.value())))?);
        }
        Ok(out)
    }

    /// The rows of the node at index `node` from epoch `from` on, oldest
    /// first, at most `limit` (only the last [`NODE_EPOCHS_KEPT`] epochs are
    /// kept: at most that many lookups).
    pub fn node_epochs(&self, node: NodeIdx, from: u64, limit: usize) -> Result<Vec<NodeEpochRow>> {
        let r = self.begin_read()?;
        let t = match r.open_table(NODE_EPOCHS) {
            Ok(t) => t,
            // A store from before the table, with no epoch since.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let (Some(first), Some(last)) = (t.first()?, t.last()?) else { return Ok(Vec::new()) };
        let (oldest, newest) = (first.0.value().0, last.0.value().0);
        let mut out = Vec::new();
        for epoch in from.max(oldest)..=newest {
            if out.len() == limit {
                break;
            }
            if let Some(v) = t.get((epoch, node))? {
                out.push(codec::decode(v.value(), usize::MAX).map_err(|e| corrupt(format!("node {node} epoch {epoch}: {e}")))?);
            }
        }
        Ok(out)
    }
}

/// Opens the redb file at `path` with `open`, each failure as the
/// store's error naming the file.
fn open_db<D>(
    path: &Path,
    open: impl FnOnce(&Path) -> std::result::Result<D, redb::DatabaseError> + std::panic::UnwindSafe,
) -> Result<D> {
    let shown = || path.display().to_string();
    if !path.exists() {
        return Err(StoreError::Missing(shown()));
    }
    // redb panics on some damage it meets while opening (a table tree
    // whose pages are noise: "entered unreachable code"); that is this
    // file's error, not a crash of the program. Nothing of the half-
    // opened database outlives the unwind.
    let opened = quietly_catch_unwind(|| open(path)).map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        StoreError::Unreadable(shown(), format!("redb gave up reading it: {why}"))
    })?;
    opened.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse(shown()),
        redb::DatabaseError::RepairAborted => StoreError::NeedsRepair(shown()),
        // A read-only file, or another redb's lock: what the guess of
        // damage would send the user the wrong way on.
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if matches!(io.kind(), std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem) =>
        {
            StoreError::CannotOpen(shown(), io.to_string())
        }
        e @ redb::DatabaseError::LockProtocolMismatch => StoreError::CannotOpen(shown(), e.to_string()),
        other => StoreError::Unreadable(shown(), other.to_string()),
    })
}

fn decode_u64(bytes: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(bytes).map(u64::from_le_bytes).map_err(|_| corrupt("bad height"))
}

/// `f`, with a panic in it caught and not printed: a store redb panics on
/// is an error the caller reports, and the panic's message and backtrace
/// (from the process's hook) read as a crash of the program. Quiet on
/// this thread alone and only while `f` runs; every other panic still
/// goes to the hook there was before.
fn quietly_catch_unwind<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> std::thread::Result<T> {
    thread_local! {
        static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|quiet| quiet.get()) {
                previous(info);
            }
        }));
    });
    QUIET.with(|quiet| quiet.set(true));
    let result = std::panic::catch_unwind(f);
    QUIET.with(|quiet| quiet.set(false));
    result
}

/// Blocks for the store's tests (its unit tests and `tests/memory.rs`).
#[doc(hidden)]
pub mod testkit {
    use tollway_types::{Block, Commit, Hash32, Header, SigningKey};

    /// An unsigned block with no tx at `height`, whose parent and time follow
    /// from the height.
    pub fn empty_block(height: u64) -> Block {
        let header = Header {
            chain_id: "t".into(),
            height,
            parent: Hash32::of(&height.to_le_bytes()),
            time_ms: 1000 + height,
            tx_root: tollway_types::block::tx_root([]),
            n_txs: 0,
            state_root: Hash32::of(b"root"),
            proposer: SigningKey::from_label("v").public(),
        };
        Block { header, commit: Commit { signatures: vec![] }, txs: vec![] }
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::empty_block as block;
    use super::*;

    #[test]
    fn blocks_follow_the_tip_without_gaps_and_the_snapshot_stays_with_its_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::create(&path, b"{}", &block(0), b"state-0").unwrap();
        let gap = store.commit(&BlockCommit { block: &block(2), tx_ids: &[], results: &[], epochs: &[], node_epochs: &[], state_encoding: Some(b"x") });
        assert!(matches!(gap, Err(StoreError::Corrupt(_))), "{gap:?}");
        store.commit(&BlockCommit { block: &block(1), tx_ids: &[], results: &[], epochs: &[], node_epochs: &[], state_encoding: None }).unwrap();
        let (tip, state) = store.tip().unwrap();
        assert_eq!((tip.header.height, state.as_slice()), (1, b"state-0".as_slice()), "an unchanged block keeps the snapshot");
        drop(store);
        assert!(matches!(Store::create(&path, b"{}", &block(0), b"s"), Err(StoreError::Exists(_))));
        let store = Store::open(&path).unwrap();
        assert!(matches!(Store::open(&path), Err(StoreError::InUse(_))), "one process at a time");
        assert_eq!(store.tip_height().unwrap(), 1);
        assert_eq!(store.genesis_file().unwrap(), b"{}");
    }

    fn node_row(epoch: u64) -> NodeEpochRow {
        NodeEpochRow {
            epoch,
            reward: Token(1_000 + u128::from(epoch)),
            verified_capacity_bps: 50_000_000,
            measured: epoch.is_multiple_of(2),
            uptime_ppm: 620_000,
            reputation_ppm: 900_000,
            latency_us: 20_000,
            settled_usd: Usd(epoch.into()),
            region_multiplier_ppm: 1_500_000,
        }
    }

    fn commit_rows(store: &Store, height: u64, rows: &[(NodeIdx, NodeEpochRow)]) {
        let c = BlockCommit { block: &block(height), tx_ids: &[], results: &[], epochs: &[], node_epochs: rows, state_encoding: None };
        store.commit(&c).unwrap();
    }

    fn epochs_of(rows: &[NodeEpochRow]) -> Vec<u64> {
        rows.iter().map(|r| r.epoch).collect()
    }

    /// A node's rows are written with their block, read back after a
    /// restart, a page at a time from an epoch on, and only the last
    /// `NODE_EPOCHS_KEPT` epochs' stay: each epoch's rows prune the epochs
    /// that fell out, of every node.
    #[test]
    fn a_nodes_epoch_rows_survive_a_restart_and_only_the_last_kept_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (steady, away, stranger): (NodeIdx, NodeIdx, NodeIdx) = (0, 1, 2);
        let store = Store::create(&path, b"{}", &block(0), b"state-0").unwrap();
        let kept = NODE_EPOCHS_KEPT;
        let mut rows: Vec<_> = (0..kept).map(|e| (steady, node_row(e))).collect();
        rows.extend((0..3).map(|e| (away, node_row(e))));
        commit_rows(&store, 1, &rows);
        let all = store.node_epochs(steady, 0, usize::MAX).unwrap();
        assert_eq!((all.len() as u64, all[0].clone()), (kept, node_row(0)));
        // One epoch more: the oldest goes, of both nodes.
        commit_rows(&store, 2, &[(steady, node_row(kept))]);
        drop(store);

        let store = Store::open(&path).unwrap();
        let all = store.node_epochs(steady, 0, usize::MAX).unwrap();
        assert_eq!(epochs_of(&all), (1..=kept).collect::<Vec<_>>());
        assert_eq!(all.last(), Some(&node_row(kept)));
        assert_eq!(epochs_of(&store.node_epochs(steady, 700, 3).unwrap()), [700, 701, 702]);
        assert_eq!(epochs_of(&store.node_epochs(away, 0, 10).unwrap()), [1, 2]);
        assert_eq!(store.node_epochs(stranger, 0, 10).unwrap(), []);
        // After epochs with no row (no node registered), every epoch out
        // of the window goes at once.
        commit_rows(&store, 3, &[(steady, node_row(kept + 5))]);
        let all = epochs_of(&store.node_epochs(steady, 0, usize::MAX).unwrap());
        assert_eq!((all.len() as u64, all[0], all.last().copied()), (kept - 4, 6, Some(kept + 5)));
        assert_eq!(store.node_epochs(away, 0, 10).unwrap(), []);
    }

    /// A store written before the table had none: it reads as no rows,
    /// and the first epoch's commit makes it.
    #[test]
    fn a_store_from_before_the_node_epochs_table_reads_none_then_takes_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        drop(Store::create(&path, b"{}", &block(0), b"state-0").unwrap());
        let db = Database::open(&path).unwrap();
        let w = db.begin_write().unwrap();
        assert!(w.delete_table(NODE_EPOCHS).unwrap());
        w.commit().unwrap();
        drop(db);
        let node: NodeIdx = 0;
        let store = Store::open(&path).unwrap();
        assert_eq!(store.node_epochs(node, 0, 10).unwrap(), []);
        commit_rows(&store, 1, &[(node, node_row(0))]);
        assert_eq!(store.node_epochs(node, 0, 10).unwrap(), [node_row(0)]);
    }

    /// An empty or foreign file at the store's path was refused with
    /// "store: I/O error: Not a redb database: …", naming no file.
    #[test]
    fn a_store_that_cannot_be_opened_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        for bytes in [&b""[..], &[7u8; 8192][..]] {
            std::fs::write(&path, bytes).unwrap();
            let err = Store::open(&path).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(&path.display().to_string()) && err.contains("not a chain store"), "{err}");
        }
        // Another program's redb file: named, as not a chain store.
        std::fs::remove_file(&path).unwrap();
        drop(Database::create(&path).unwrap());
        let err = Store::open(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(&path.display().to_string()) && err.contains("holds no Tollway chain"), "{err}");
    }

    /// A store another version wrote was refused as "not a Tollway chain
    /// store of this version (found format …)", with nothing to do about
    /// it. Now the error says which format it is, which this version
    /// reads, and what to do.
    #[test]
    fn a_store_of_another_format_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        drop(Store::create(&path, b"{}", &block(0), b"state-0").unwrap());
        let db = Database::open(&path).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(META).unwrap().insert(FORMAT_KEY, b"tollway-store-1".as_slice()).unwrap();
        w.commit().unwrap();
        drop(db);
        for err in [Store::open(&path).err(), Store::open_read_only(&path).err()] {
            let err = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(&path.display().to_string()) && err.contains("another version of tollway"), "{err}");
            assert!(err.contains("\"tollway-store-1\"") && err.contains("reads \"tollway-store-2\""), "{err}");
            assert!(err.contains("the tollway that made it") && err.contains("tollway chain init --home"), "{err}");
        }
    }

    /// Replay opened the store to write, so it could not read a store on
    /// a read-only filesystem. Read-only, it reads beside other readers;
    /// not beside a writer (a running chain), either way round; and not a
    /// store that must first be repaired, which a reader cannot.
    #[test]
    fn a_store_opened_read_only_is_shared_by_readers_only_and_takes_no_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        let store = Store::create(&path, b"{}", &block(0), b"state-0").unwrap();
        // A copy taken while it is open is a store its writer did not close.
        let unclosed = dir.path().join("unclosed.redb");
        std::fs::copy(&path, &unclosed).unwrap();
        assert!(matches!(Store::open_read_only(&path), Err(StoreError::InUse(_))), "read beside its writer");
        drop(store);
        let reader = Store::open_read_only(&path).unwrap();
        let another = Store::open_read_only(&path).unwrap();
        assert_eq!((reader.tip_height().unwrap(), another.tip_height().unwrap()), (0, 0));
        assert!(matches!(Store::open(&path), Err(StoreError::InUse(_))), "written beside a reader");
        let wrote = reader.commit(&BlockCommit { block: &block(1), tx_ids: &[], results: &[], epochs: &[], node_epochs: &[], state_encoding: None });
        assert!(matches!(wrote, Err(StoreError::ReadOnly)), "{wrote:?}");
        drop((reader, another));

        let err = Store::open_read_only(&unclosed).err();
        assert!(matches!(err, Some(StoreError::NeedsRepair(_))), "{err:?}");
        let said = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(said.contains(&unclosed.display().to_string()) && said.contains("where it can be written"), "{said}");
        // Opened to write, it is repaired, and then reads.
        drop(Store::open(&unclosed).unwrap());
        assert_eq!(Store::open_read_only(&unclosed).unwrap().tip_height().unwrap(), 0);
    }

    /// A store damaged in its first pages (60 KB of noise at byte 512 or
    /// 4096, as a bad disk or a stray `dd` leaves it) made redb panic while
    /// opening it ("entered unreachable code"): `chain run` and `chain
    /// replay` ended with exit 101 and a backtrace, naming no file.
    #[test]
    fn a_store_damaged_at_its_start_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.redb");
        let store = Store::create(&good, b"{}", &block(0), b"state-0").unwrap();
        for h in 1..=3 {
            store.commit(&BlockCommit { block: &block(h), tx_ids: &[], results: &[], epochs: &[], node_epochs: &[], state_encoding: None }).unwrap();
        }
        drop(store);
        let bytes = std::fs::read(&good).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..60_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for offset in [512, 4096] {
            let mut damaged = bytes.clone();
            let end = (offset + noise.len()).min(damaged.len());
            damaged[offset..end].copy_from_slice(&noise[..end - offset]);
            let path = dir.path().join(format!("damaged-{offset}.redb"));
            std::fs::write(&path, &damaged).unwrap();
            let opened = std::panic::catch_unwind(|| Store::open(&path).map(|_| ()));
            let err = match opened {
                Ok(result) => result.err().map(|e| e.to_string()).unwrap_or_default(),
                Err(_) => panic!("opening the store damaged at {offset} panicked"),
            };
            assert!(err.contains(&path.display().to_string()), "{offset}: {err}");
        }
    }
}
