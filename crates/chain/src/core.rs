//! The application side of the chain: the ledger state, the mempool and the
//! store, and what happens to a tx from admission to commit. Synchronous
//! and free of the network; the node (`node.rs`) drives it under a lock.

use crate::consensus::{Application, ChainError};
use crate::execute::{self, begin_block, finish_block, BlockError, EpochEnds, Executed};
use crate::genesis::GenesisFile;
use crate::mempool::{BlockTarget, Dropped, Mempool, MempoolLimits, Pending};
use rand_core::RngCore;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use tollway_ledger::root::{decode_state, encode_state, state_root_of_encoding};
use tollway_ledger::{apply_verified, Ctx, Event, SlashReason, State};
use tollway_store::{BlockCommit, EpochRecord, Store};
use tollway_types::math::mul_div_floor;
use tollway_types::{block::tx_root, Amount, Block, Commit, Hash32, Header, PublicKey, SignedTx, SigningKey, TxId};

#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub max_block_txs: usize,
    pub max_block_bytes: usize,
    pub mempool: MempoolLimits,
    /// How many finished (committed or rejected) tx statuses stay in memory
    /// for fast lookups; older committed ones are found in the store.
    pub status_cache: usize,
}

impl Default for CoreConfig {
    fn default() -> CoreConfig {
        CoreConfig {
            max_block_txs: 10_000,
            max_block_bytes: 8 << 20,
            mempool: MempoolLimits::default(),
            status_cache: 200_000,
        }
    }
}

/// Where a tx stands, as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxState {
    Pending,
    Committed { height: u64, index: u32 },
    Rejected { code: String, message: String },
}

/// Why a submission was refused before it entered the mempool.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("wrong chain: this is {expected:?}, the tx is for {found:?}")]
    WrongChain { expected: String, found: String },
    #[error("unknown account {0}: it has never received funds, so it cannot pay a fee")]
    UnknownAccount(PublicKey),
    #[error("fee {offered} is below the minimum {minimum}")]
    FeeTooLow { offered: String, minimum: String },
    #[error(transparent)]
    Mempool(#[from] crate::mempool::AdmitError),
}

impl SubmitError {
    pub fn code(&self) -> &'static str {
        match self {
            SubmitError::WrongChain { .. } => "wrong_chain",
            SubmitError::UnknownAccount(_) => "unknown_account",
            SubmitError::FeeTooLow { .. } => "fee_too_low",
            SubmitError::Mempool(e) => e.code(),
        }
    }
}

/// What a commit did, for the API's event stream, metrics and waiters.
#[derive(Clone, Debug)]
pub struct Committed {
    pub header: Header,
    pub hash: Hash32,
    pub tx_ids: Vec<TxId>,
    pub epochs: Vec<EpochRecord>,
    pub dropped: Vec<Dropped>,
}

struct Speculative {
    hash: Hash32,
    executed: Executed,
    /// Proposed from our mempool: given back if the block is abandoned.
    taken: Vec<Pending>,
    dropped: Vec<Dropped>,
}

/// Recent tx statuses, with what committed txs did: a waiter answered at
/// commit time needs no store read (a block's results are one record, and
/// reading it once per waiter would cost O(txs²) per block).
#[derive(Default)]
struct Statuses {
    map: HashMap<TxId, (TxState, Vec<Event>)>,
    finished: VecDeque<TxId>,
    cap: usize,
}

impl Statuses {
    fn set(&mut self, id: TxId, s: TxState, events: Vec<Event>) {
        let finished = s != TxState::Pending;
        self.map.insert(id, (s, events));
        if finished {
            self.finished.push_back(id);
            while self.finished.len() > self.cap {
                if let Some(old) = self.finished.pop_front() {
                    if self.map.get(&old).is_some_and(|(s, _)| *s != TxState::Pending) {
                        self.map.remove(&old);
                    }
                }
            }
        }
    }
}

pub struct Core {
    state: State,
    mempool: Mempool,
    store: Store,
    tip: Header,
    validators: Vec<PublicKey>,
    proposer: PublicKey,
    config: CoreConfig,
    statuses: Statuses,
    speculative: Option<Speculative>,
    node_slashes: NodeSlashes,
}

/// One over-claim slash of a node, as its epoch's report gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeSlash {
    pub epoch: u64,
    pub amount: tollway_types::Token,
    /// The claim the epoch was judged against, and what the oracles measured.
    pub claimed_capacity_bps: u64,
    pub measured_capacity_bps: u64,
    pub over_claim_ppm: u64,
    /// The first of the two measurements: the one that gave the strike
    /// this slash confirmed.
    pub struck: StrikeFigures,
    /// The bond fell below a node's minimum: the node was deregistered.
    pub ejected: bool,
}

/// The measurement that gave a node its strike, in [`NodeSlash`]'s terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StrikeFigures {
    pub epoch: u64,
    pub claimed_capacity_bps: u64,
    pub measured_capacity_bps: u64,
}

/// The over-claim slashes of each node operator, newest last, so that the
/// API can show a node's without reading every epoch in the store (the
/// ledger keeps only their total). Built from the store at open, then from
/// each committed epoch.
#[derive(Default)]
struct NodeSlashes {
    by_operator: BTreeMap<PublicKey, Vec<NodeSlash>>,
}

impl NodeSlashes {
    /// Slashes kept per operator: each takes at least `slash_base` of the
    /// bond, so a node is ejected long before; the oldest go first.
    const MAX_PER_OPERATOR: usize = 64;

    fn add(&mut self, record: &EpochRecord) {
        for slash in &record.report.slashes {
            let SlashReason::OverClaim { rho_ppm, claimed_bps, verified_bps, struck } = slash.reason else { continue };
            let list = self.by_operator.entry(slash.account).or_default();
            if list.len() == Self::MAX_PER_OPERATOR {
                list.remove(0);
            }
            list.push(NodeSlash {
                epoch: record.report.epoch,
                amount: slash.amount,
                claimed_capacity_bps: claimed_bps,
                measured_capacity_bps: verified_bps,
                over_claim_ppm: rho_ppm,
                struck: StrikeFigures {
                    epoch: struck.epoch,
                    claimed_capacity_bps: struck.claimed_bps,
                    measured_capacity_bps: struck.verified_bps,
                },
                ejected: slash.ejected,
            });
        }
    }

    /// Every epoch the store holds, a page at a time.
    fn of_store(store: &Store) -> Result<NodeSlashes, ChainError> {
        const PAGE: usize = 256;
        let mut slashes = NodeSlashes::default();
        let mut from = 0;
        loop {
            let page = store.epochs(from, PAGE)?;
            for record in &page {
                slashes.add(record);
            }
            match page.last() {
                Some(last) if page.len() == PAGE => from = last.report.epoch + 1,
                _ => return Ok(slashes),
            }
        }
    }
}

/// Writes a new store holding block 0 and the genesis state.
pub fn init_store(path: &Path, genesis_bytes: &[u8], key: &SigningKey) -> Result<Hash32, ChainError> {
    let genesis = GenesisFile::from_json(genesis_bytes).map_err(ChainError::Other)?;
    let state = genesis.ledger.build().map_err(|e| ChainError::Other(format!("genesis: {e}")))?;
    let encoding = encode_state(&state);
    let root = state_root_of_encoding(&encoding);
    let signer = genesis.validators.contains(&key.public()).then_some(key);
    let block = genesis.block_zero(genesis_bytes, root, signer);
    Store::create(path, genesis_bytes, &block, &encoding)?;
    Ok(root)
}

fn random_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut seed);
    seed
}

impl Core {
    /// Opens a store and loads the state after its tip, checking that the
    /// stored state matches the tip's root.
    pub fn open(store: Store, proposer: PublicKey, config: CoreConfig) -> Result<Core, ChainError> {
        let genesis = GenesisFile::from_json(&store.genesis_file()?).map_err(ChainError::Other)?;
        let (tip_block, encoding) = store.tip()?;
        let root = state_root_of_encoding(&encoding);
        if root != tip_block.header.state_root {
            return Err(ChainError::Other(format!(
                "stored state root {root} does not match block {}'s {}",
                tip_block.header.height, tip_block.header.state_root
            )));
        }
        // The next block is built on the tip: its txs must be the ones its
        // header names (the state's root alone does not cover them; a bit
        // flipped in a stored tx was served as it was).
        let tx_ids: Vec<_> = tip_block.txs.iter().map(|t| t.id()).collect();
        let header = &tip_block.header;
        if header.n_txs as usize != tx_ids.len() || header.tx_root != tollway_types::block::tx_root(tx_ids.iter().copied()) {
            return Err(ChainError::Other(format!(
                "the stored block {} does not match its header's tx root or count: the store is damaged (`tollway chain replay` checks every block)",
                header.height
            )));
        }
        let state = decode_state(&encoding).map_err(|e| ChainError::Other(format!("stored state: {e}")))?;
        let statuses = Statuses { cap: config.status_cache, ..Statuses::default() };
        let node_slashes = NodeSlashes::of_store(&store)?;
        Ok(Core {
            state,
            mempool: Mempool::new(config.mempool),
            store,
            tip: tip_block.header,
            validators: genesis.validators,
            proposer,
            config,
            statuses,
            speculative: None,
            node_slashes,
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }
    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn tip(&self) -> &Header {
        &self.tip
    }
    /// The over-claim slashes of `operator`'s node so far, oldest first
    /// (at most the last `NodeSlashes::MAX_PER_OPERATOR`).
    pub fn node_slashes(&self, operator: &PublicKey) -> &[NodeSlash] {
        self.node_slashes.by_operator.get(operator).map_or(&[], Vec::as_slice)
    }
    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }
    /// Txs that could go into the next block now (for "produce when full"):
    /// those behind a nonce gap cannot, and counting them made every
    /// submission start an empty block once enough waited.
    pub fn block_is_full(&self) -> bool {
        self.mempool.ready_len() >= self.config.max_block_txs
    }

    /// Whether to make a block at `now_ms` (DESIGN §3's blocks every
    /// interval or size, when they carry something): txs a block could
    /// take now, or an epoch due at the block's time; or, with neither, the
    /// tip is `idle_heartbeat_ms` old. An empty block changes nothing in
    /// the state (its root is the parent's) and cost 300-400 bytes of
    /// store, about 30 MB a day on a chain idle at a block a second; the
    /// heartbeat keeps followers' view of the chain's clock (the tip's
    /// time, block events) at most that far behind.
    pub fn block_wanted(&self, now_ms: u64, idle_heartbeat_ms: u64) -> bool {
        let (_, _, time_ms) = self.next_block_frame(now_ms);
        self.mempool.ready_len() > 0
            || execute::block_ends_epoch(&self.state, time_ms)
            || now_ms.saturating_sub(self.tip.time_ms) >= idle_heartbeat_ms
    }

    fn next_nonce(state: &State, account: &PublicKey) -> u64 {
        state.account_index.get(account).map_or(0, |&i| state.accounts[i as usize].nonce)
    }

    /// Admits a tx whose signature the caller has verified, at `now_ms` (the
    /// node's clock: a tx behind a nonce gap waits at most
    /// `MempoolLimits::gap_ttl_ms` from then).
    pub fn admit(&mut self, stx: SignedTx, id: TxId, bytes: usize, now_ms: u64) -> Result<(), SubmitError> {
        let s = &self.state;
        if stx.tx.chain_id != s.chain_id {
            return Err(SubmitError::WrongChain { expected: s.chain_id.clone(), found: stx.tx.chain_id.clone() });
        }
        let Some(&idx) = s.account_index.get(&stx.tx.signer) else {
            return Err(SubmitError::UnknownAccount(stx.tx.signer));
        };
        let fee_rank = match stx.tx.fee {
            Amount::Usd(f) if f < s.params.min_fee_usd => {
                return Err(SubmitError::FeeTooLow { offered: f.to_string(), minimum: s.params.min_fee_usd.to_string() })
            }
            Amount::Token(f) if f < s.params.min_fee_token => {
                return Err(SubmitError::FeeTooLow { offered: f.to_string(), minimum: s.params.min_fee_token.to_string() })
            }
            Amount::Usd(f) => f.0,
            // Valued at the pool's price so both currencies compete fairly.
            Amount::Token(f) if s.pool.token.0 > 0 => mul_div_floor(f.0, s.pool.usd.0, s.pool.token.0),
            Amount::Token(_) => 0,
        };
        let nonce = s.accounts[idx as usize].nonce;
        self.mempool.admit(Pending::new(stx, id, bytes, fee_rank), nonce, now_ms)?;
        self.statuses.set(id, TxState::Pending, Vec::new());
        Ok(())
    }

    /// A tx's status: in memory if recent, else from the store.
    pub fn status(&self, id: &TxId) -> Result<Option<TxState>, ChainError> {
        if let Some((s, _)) = self.statuses.map.get(id) {
            return Ok(Some(s.clone()));
        }
        Ok(self.store.tx_location(id)?.map(|(height, index)| TxState::Committed { height, index }))
    }

    /// What a committed tx did: from memory if recent, else from the store.
    pub fn events(&self, id: &TxId) -> Result<Vec<Event>, ChainError> {
        if let Some((TxState::Committed { .. }, events)) = self.statuses.map.get(id) {
            return Ok(events.clone());
        }
        Ok(self.store.tx(id)?.map(|r| r.events).unwrap_or_default())
    }

    /// The block that would come after the tip: its height, parent and a
    /// time strictly after the parent's.
    fn next_block_frame(&self, time_ms: u64) -> (u64, Hash32, u64) {
        (self.tip.height + 1, self.tip.hash(), time_ms.max(self.tip.time_ms + 1))
    }
}

/// The state a block is being built on, as the mempool sees it.
struct Target<'a> {
    state: &'a mut State,
    ctx: Ctx,
    results: Vec<Vec<Event>>,
}

impl BlockTarget for Target<'_> {
    fn next_nonce(&self, account: &PublicKey) -> u64 {
        Core::next_nonce(self.state, account)
    }
    fn apply(&mut self, p: &Pending) -> Result<(), (&'static str, String)> {
        match apply_verified(self.state, self.ctx, &p.stx) {
            Ok(events) => {
                self.results.push(events);
                Ok(())
            }
            Err(e) => Err((e.code(), e.to_string())),
        }
    }
}

impl Application for Core {
    fn propose(&mut self, time_ms: u64) -> Result<Block, ChainError> {
        if self.speculative.is_some() {
            self.abandon()?;
        }
        let (height, parent, time_ms) = self.next_block_frame(time_ms);
        let EpochEnds { epochs, node_epochs } = begin_block(&mut self.state, height, time_ms, parent);
        let mut target = Target { state: &mut self.state, ctx: execute::ctx(height, time_ms), results: Vec::new() };
        let (taken, dropped) = self.mempool.fill_block(self.config.max_block_txs, self.config.max_block_bytes, &mut target);
        let results = target.results;
        let changed = !taken.is_empty() || !epochs.is_empty();
        let (state_root, state_encoding) = finish_block(&self.state, changed, self.tip.state_root)?;
        let txs: Vec<SignedTx> = taken.iter().map(|p| p.stx.clone()).collect();
        let tx_ids: Vec<TxId> = taken.iter().map(|p| p.id).collect();
        let header = Header {
            chain_id: self.state.chain_id.clone(),
            height,
            parent,
            time_ms,
            tx_root: tx_root(tx_ids.iter().copied()),
            n_txs: txs.len() as u32,
            state_root,
            proposer: self.proposer,
        };
        self.speculative = Some(Speculative {
            hash: header.hash(),
            executed: Executed { tx_ids, results, epochs, node_epochs, state_root, state_encoding },
            taken,
            dropped,
        });
        Ok(Block { header, commit: Commit { signatures: Vec::new() }, txs })
    }

    fn verify(&mut self, block: &Block) -> Result<(), ChainError> {
        if self.speculative.is_some() {
            self.abandon()?;
        }
        match execute::execute_block(&mut self.state, block, &self.tip, &self.validators, random_seed()) {
            Ok(executed) => {
                self.speculative =
                    Some(Speculative { hash: block.header.hash(), executed, taken: Vec::new(), dropped: Vec::new() });
                Ok(())
            }
            Err(e) => {
                // The state may be half-changed: back to the committed one.
                self.reload_state()?;
                Err(e.into())
            }
        }
    }

    fn commit(&mut self, mut block: Block, commit: Commit) -> Result<Committed, ChainError> {
        let hash = block.header.hash();
        let spec = match self.speculative.take() {
            Some(s) if s.hash == hash => s,
            _ => return Err(ChainError::Other(format!("block {} was not the one executed", block.header.height))),
        };
        if !commit.signatures.iter().any(|s| self.validators.contains(&s.validator) && s.verify(&block.header).is_ok()) {
            return Err(BlockError::Commit { height: block.header.height }.into());
        }
        block.commit = commit;
        let ex = &spec.executed;
        // Durable first; only then is anything acknowledged. If this fails
        // the in-memory state is ahead of the disk: the node must stop and
        // restart from the store (crash-only).
        self.store.commit(&BlockCommit {
            block: &block,
            tx_ids: &ex.tx_ids,
            results: &ex.results,
            epochs: &ex.epochs,
            node_epochs: &ex.node_epochs,
            state_encoding: ex.state_encoding.as_deref(),
        })?;
        // Proposed or verified alike, the executed block names its txs.
        let Executed { tx_ids, results, epochs, .. } = spec.executed;
        for record in &epochs {
            self.node_slashes.add(record);
        }
        for (index, (id, events)) in tx_ids.iter().zip(results).enumerate() {
            self.statuses.set(*id, TxState::Committed { height: block.header.height, index: index as u32 }, events);
        }
        let state = &self.state;
        let mut dropped = spec.dropped;
        dropped.extend(self.mempool.prune(|a| Core::next_nonce(state, a), block.header.time_ms));
        for d in &dropped {
            self.statuses.set(d.id, TxState::Rejected { code: d.code.to_string(), message: d.message.clone() }, Vec::new());
        }
        self.tip = block.header.clone();
        Ok(Committed { header: block.header, hash, tx_ids, epochs, dropped })
    }

    fn abandon(&mut self) -> Result<(), ChainError> {
        if let Some(spec) = self.speculative.take() {
            self.reload_state()?;
            for p in spec.taken {
                let nonce = Core::next_nonce(&self.state, &p.stx.tx.signer);
                // It was admitted before, but the pool took others while
                // the block was out: it may be full now, or hold another tx
                // with this nonce. Its wait is still counted from its first
                // admission.
                let (id, admitted_ms) = (p.id, p.admitted_ms);
                if let Err(e) = self.mempool.admit(p, nonce, admitted_ms) {
                    // Out of the pool, it would be "pending" for good.
                    let message = format!("dropped: its block was abandoned, and it could not go back to the mempool: {e}");
                    self.statuses.set(id, TxState::Rejected { code: e.code().to_string(), message }, Vec::new());
                }
            }
            // Rejected while the block was built: they left the pool then,
            // and their status, set only at a commit, stayed "pending". One
            // submitted again since (admission checks nonces against the
            // block's state, where its nonce is still free) is pending.
            for d in spec.dropped {
                if !self.mempool.contains(&d.id) {
                    self.statuses.set(d.id, TxState::Rejected { code: d.code.to_string(), message: d.message }, Vec::new());
                }
            }
        }
        Ok(())
    }
}

impl Core {
    fn reload_state(&mut self) -> Result<(), ChainError> {
        let (_, encoding) = self.store.tip()?;
        self.state = decode_state(&encoding).map_err(|e| ChainError::Other(format!("stored state: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollway_ledger::genesis::{Allocation, Genesis};
    use tollway_ledger::Params;
    use tollway_types::{Token, Tx, TxBody, Usd};

    const CHAIN: &str = "tollway-core-test";
    const GENESIS_MS: u64 = 1_700_000_000_000;

    /// A core on a fresh store whose genesis funds `funded`.
    fn core(dir: &Path, funded: &[&str], mempool: MempoolLimits) -> Core {
        let seq = SigningKey::from_label("sequencer");
        let alloc = |l: &&str| Allocation {
            account: SigningKey::from_label(l).public(),
            token: Token::units(10),
            usd: Usd::units(10),
            staked: Token::ZERO,
        };
        let file = GenesisFile {
            ledger: Genesis {
                chain_id: CHAIN.into(),
                genesis_time_secs: GENESIS_MS / 1000,
                gateway: seq.public(),
                params: Params::default_params(),
                allocations: funded.iter().map(alloc).collect(),
                pool_token: Token::units(1_000),
                pool_usd: Usd::units(100),
            },
            validators: vec![seq.public()],
        };
        let path = dir.join("chain.redb");
        init_store(&path, &file.to_json(), &seq).unwrap();
        let config = CoreConfig { mempool, ..CoreConfig::default() };
        Core::open(Store::open(&path).unwrap(), seq.public(), config).unwrap()
    }

    fn transfer(label: &str, nonce: u64, amount_twy: u128) -> SignedTx {
        let key = SigningKey::from_label(label);
        Tx {
            chain_id: CHAIN.into(),
            signer: key.public(),
            nonce,
            fee: Amount::Usd(Usd::units(1)),
            body: TxBody::Transfer { to: SigningKey::from_label("sequencer").public(), amount: Amount::Token(Token::units(amount_twy)) },
        }
        .sign(&key)
    }

    fn admit(core: &mut Core, stx: &SignedTx) -> TxId {
        let id = stx.id();
        core.admit(stx.clone(), id, stx.encode().len(), GENESIS_MS).unwrap();
        id
    }

    /// An abandoned block gives its txs back to the mempool, which may have
    /// filled up while the block was out: a tx it refused was left
    /// "pending" for good (and so was one rejected while the block was
    /// built, its status being set only at a commit). Each now says it was
    /// dropped and why; a rejected tx submitted again meanwhile is pending.
    #[test]
    fn a_tx_of_an_abandoned_block_that_cannot_go_back_to_the_mempool_says_it_was_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let limits = MempoolLimits { max_txs: 4, ..MempoolLimits::default() };
        let funded = ["alice", "bob", "carol", "dave", "erin", "frank", "gina"];
        let mut core = core(dir.path(), &funded, limits);
        let refused_id = admit(&mut core, &transfer("alice", 0, 1));
        admit(&mut core, &transfer("bob", 0, 1));
        let resubmitted = transfer("dave", 0, 1_000);
        let resubmitted_id = admit(&mut core, &resubmitted);
        let overdraft_id = admit(&mut core, &transfer("erin", 0, 1_000));
        let block = core.propose(GENESIS_MS + 1_000).unwrap();
        assert_eq!(block.txs.len(), 2, "alice's and bob's; dave's and erin's overdraw");
        // While the block is out, the pool fills again, with dave's sent
        // again among others.
        admit(&mut core, &transfer("carol", 0, 1));
        admit(&mut core, &transfer("frank", 0, 1));
        admit(&mut core, &transfer("gina", 0, 1));
        admit(&mut core, &resubmitted);
        core.abandon().unwrap();

        let Some(TxState::Rejected { code, message }) = core.status(&refused_id).unwrap() else {
            panic!("alice's tx is {:?}", core.status(&refused_id));
        };
        assert_eq!(code, "mempool_full");
        let why = "dropped: its block was abandoned, and it could not go back to the mempool: the mempool is full";
        assert!(message.starts_with(why), "{message}");
        let Some(TxState::Rejected { code, .. }) = core.status(&overdraft_id).unwrap() else {
            panic!("erin's tx is {:?}", core.status(&overdraft_id));
        };
        assert_eq!(code, "insufficient_token");
        assert_eq!(core.status(&resubmitted_id).unwrap(), Some(TxState::Pending));
        assert!(core.mempool.contains(&resubmitted_id));
    }
}
