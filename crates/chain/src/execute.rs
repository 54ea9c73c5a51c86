//! Block execution: what a block does to the ledger state. Pure (no I/O,
//! no clock: the time is the block's). The producer, `replay` and a BFT
//! validator checking a proposal all go through these functions, so a
//! block means the same thing everywhere.

use tollway_ledger::root::{encode_state, state_root_of_encoding};
use tollway_ledger::state::NodeIdx;
use tollway_ledger::{apply_verified, check_supply, end_epoch, epoch_due, Ctx, Event, State, TxError};
use tollway_store::{EpochRecord, NodeEpochRow};
use tollway_types::{Block, Hash32, TxId, Usd};

pub fn ctx(height: u64, time_ms: u64) -> Ctx {
    Ctx { height, time_secs: time_ms / 1000 }
}

/// Whether a block at `time_ms` closes the epoch (in [`begin_block`]; the
/// producer also asks it of an idle chain: an epoch ends on time even when
/// no tx comes).
pub fn block_ends_epoch(state: &State, time_ms: u64) -> bool {
    epoch_due(state, ctx(0, time_ms).time_secs)
}

/// What a block's start did: the epoch it closed, if any, and the rows of
/// the nodes registered in it.
#[derive(Default)]
pub struct EpochEnds {
    pub epochs: Vec<EpochRecord>,
    pub node_epochs: Vec<(NodeIdx, NodeEpochRow)>,
}

/// Start of a block: closes the epoch if the block's time says it is over.
/// The epoch seed is the parent block's hash: fixed before the block, so a
/// proposer cannot choose it by reordering txs.
pub fn begin_block(state: &mut State, height: u64, time_ms: u64, parent: Hash32) -> EpochEnds {
    let c = ctx(height, time_ms);
    if !block_ends_epoch(state, time_ms) {
        return EpochEnds::default();
    }
    // What `end_epoch` resets: which nodes were in the epoch (one that
    // deregistered in it was, and may still be paid for its traffic), and
    // what their channels settled.
    let in_epoch: Vec<(usize, Usd)> = state
        .nodes
        .iter()
        .zip(&state.node_epochs)
        .enumerate()
        .filter(|(_, (node, node_epoch))| node.active || node_epoch.group_left.is_some() || node_epoch.claim_held_bps > 0)
        .map(|(i, (_, node_epoch))| (i, node_epoch.settled_usd))
        .collect();
    let report = end_epoch(state, c, parent);
    let node_epochs = in_epoch
        .into_iter()
        .map(|(i, settled_usd)| {
            let node = &state.nodes[i];
            let row = NodeEpochRow {
                epoch: report.epoch,
                reward: node.last_reward,
                verified_capacity_bps: node.verified_capacity_bps,
                measured: node.measured_epoch == Some(report.epoch),
                uptime_ppm: node.uptime_ppm,
                reputation_ppm: node.reputation_ppm,
                latency_us: node.latency_us,
                settled_usd,
                region_multiplier_ppm: report.regions.get(node.region.index()).map_or(0, |r| r.multiplier_ppm),
            };
            (i as NodeIdx, row)
        })
        .collect();
    EpochEnds { epochs: vec![EpochRecord { height, time_ms, report }], node_epochs }
}

/// End of a block: the supply invariant (DESIGN §2: checked after every
/// block), then the state root. `changed == false` (no tx, no epoch) skips
/// the re-encoding: the root is the parent's.
pub fn finish_block(state: &State, changed: bool, parent_root: Hash32) -> Result<(Hash32, Option<Vec<u8>>), BlockError> {
    check_supply(state).map_err(BlockError::Invariant)?;
    if !changed {
        return Ok((parent_root, None));
    }
    let encoding = encode_state(state);
    Ok((state_root_of_encoding(&encoding), Some(encoding)))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block {height}: expected height {expected}")]
    Height { height: u64, expected: u64 },
    #[error("block {height}: parent {found} is not the tip {expected}")]
    Parent { height: u64, expected: Hash32, found: Hash32 },
    #[error("block {height}: time {time_ms} ms is not after the parent's {parent_ms} ms")]
    Time { height: u64, time_ms: u64, parent_ms: u64 },
    #[error("block {height}: wrong chain id {found:?}")]
    ChainId { height: u64, found: String },
    #[error("block {height}: the tx root or count does not match its txs")]
    TxRoot { height: u64 },
    #[error("block {height}: not signed by a validator of this chain")]
    Commit { height: u64 },
    #[error("block {height}: tx {index} has a bad signature")]
    TxSignature { height: u64, index: usize },
    #[error("block {height}: tx {index} was rejected: {error}")]
    Tx { height: u64, index: usize, error: TxError },
    #[error("block {height}: state root {found} does not match the header's {expected}")]
    StateRoot { height: u64, expected: Hash32, found: Hash32 },
    #[error("the supply invariant broke: {0}")]
    Invariant(String),
}

/// What executing a whole block produced.
pub struct Executed {
    pub tx_ids: Vec<TxId>,
    pub results: Vec<Vec<Event>>,
    pub epochs: Vec<EpochRecord>,
    pub node_epochs: Vec<(NodeIdx, NodeEpochRow)>,
    pub state_root: Hash32,
    pub state_encoding: Option<Vec<u8>>,
}

/// Checks a block's header against its parent and validators, then runs
/// every tx; all must apply (a producer only includes txs that did) and the
/// root must match. Signatures are batch-verified with `verify_seed`.
/// On error the state may be partly changed: the caller discards it.
pub fn execute_block(
    state: &mut State,
    block: &Block,
    parent: &tollway_types::Header,
    validators: &[tollway_types::PublicKey],
    verify_seed: [u8; 32],
) -> Result<Executed, BlockError> {
    let h = &block.header;
    let height = h.height;
    if height != parent.height + 1 {
        return Err(BlockError::Height { height, expected: parent.height + 1 });
    }
    if h.parent != parent.hash() {
        return Err(BlockError::Parent { height, expected: parent.hash(), found: h.parent });
    }
    if h.time_ms <= parent.time_ms {
        return Err(BlockError::Time { height, time_ms: h.time_ms, parent_ms: parent.time_ms });
    }
    if h.chain_id != state.chain_id {
        return Err(BlockError::ChainId { height, found: h.chain_id.clone() });
    }
    let tx_ids: Vec<TxId> = block.txs.iter().map(|t| t.id()).collect();
    if h.n_txs as usize != block.txs.len() || h.tx_root != tollway_types::block::tx_root(tx_ids.iter().copied()) {
        return Err(BlockError::TxRoot { height });
    }
    let signed = block.commit.signatures.iter().any(|s| validators.contains(&s.validator) && s.verify(h).is_ok());
    if !signed || !validators.contains(&h.proposer) {
        return Err(BlockError::Commit { height });
    }
    let msgs: Vec<Vec<u8>> = block.txs.iter().map(|t| t.tx.signing_bytes()).collect();
    let items: Vec<_> = block.txs.iter().zip(&msgs).map(|(t, m)| (t.tx.signer, m.as_slice(), t.signature)).collect();
    if let Some(index) = tollway_types::keys::verify_batch(&items, verify_seed).iter().position(|ok| !ok) {
        return Err(BlockError::TxSignature { height, index });
    }
    let EpochEnds { epochs, node_epochs } = begin_block(state, height, h.time_ms, h.parent);
    let c = ctx(height, h.time_ms);
    let mut results = Vec::with_capacity(block.txs.len());
    for (index, stx) in block.txs.iter().enumerate() {
        results.push(apply_verified(state, c, stx).map_err(|error| BlockError::Tx { height, index, error })?);
    }
    let changed = !block.txs.is_empty() || !epochs.is_empty();
    let (state_root, state_encoding) = finish_block(state, changed, parent.state_root)?;
    if state_root != h.state_root {
        return Err(BlockError::StateRoot { height, expected: h.state_root, found: state_root });
    }
    Ok(Executed { tx_ids, results, epochs, node_epochs, state_root, state_encoding })
}
