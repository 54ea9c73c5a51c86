//! `tollway chain replay`: rebuilds the state from the genesis file and
//! re-executes every stored block, checking each header's parent, tx root,
//! commit signature, every tx signature and the state root; at the end the
//! rebuilt state must equal the stored tip state byte for byte.

use crate::consensus::ChainError;
use crate::execute::execute_block;
use crate::genesis::GenesisFile;
use tollway_ledger::root::{encode_state, state_root_of_encoding, SnapshotError, STATE_VERSION};
use tollway_store::Store;
use tollway_types::Hash32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub blocks: u64,
    pub txs: u64,
    pub epochs: u64,
    pub tip_height: u64,
    pub tip_root: Hash32,
}

pub fn replay(store: &Store, mut progress: impl FnMut(u64, u64)) -> Result<ReplayReport, ChainError> {
    // A state stored in another build's layout: named, with what to do,
    // as `chain run` names it. Replay compared it at the end, or failed at
    // a root, as one that differed.
    let (_, stored) = store.tip()?;
    if let Some(&found) = stored.first().filter(|&&version| version != STATE_VERSION) {
        return Err(ChainError::Other(format!("stored state: {}", SnapshotError::Version { found })));
    }
    let bytes = store.genesis_file()?;
    let genesis = GenesisFile::from_json(&bytes).map_err(ChainError::Other)?;
    let mut state = genesis.ledger.build().map_err(|e| ChainError::Other(format!("genesis: {e}")))?;
    let zero = store.block(0)?.ok_or_else(|| ChainError::Other("no block 0".into()))?;
    let root = state_root_of_encoding(&encode_state(&state));
    if zero.header.state_root != root || zero.header.parent != GenesisFile::hash_of(&bytes) {
        return Err(ChainError::Other("block 0 does not match the genesis file".into()));
    }
    let tip = store.tip_height()?;
    let mut parent = zero.header;
    let (mut txs, mut epochs) = (0u64, 0u64);
    let mut seed = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
    for height in 1..=tip {
        let block = store.block(height)?.ok_or_else(|| ChainError::Other(format!("block {height} is missing")))?;
        let executed = execute_block(&mut state, &block, &parent, &genesis.validators, seed)?;
        txs += block.txs.len() as u64;
        epochs += executed.epochs.len() as u64;
        parent = block.header;
        progress(height, tip);
    }
    let (_, stored) = store.tip()?;
    let rebuilt = encode_state(&state);
    if rebuilt != stored {
        return Err(ChainError::Other(format!(
            "the stored tip state (root {}) differs from the replayed one (root {})",
            state_root_of_encoding(&stored),
            state_root_of_encoding(&rebuilt)
        )));
    }
    Ok(ReplayReport { blocks: tip, txs, epochs, tip_height: tip, tip_root: parent.state_root })
}
