//! The chain's genesis file: the ledger's genesis (allocations, parameters,
//! pool liquidity) plus the validator set. JSON, because it is written once
//! by `tollway chain init` and shared byte for byte by every validator; its
//! hash (over the exact bytes) is the parent of block 0.

use serde::{Deserialize, Serialize};
use tollway_ledger::Genesis;
use tollway_types::{Block, Commit, Hash32, Header, PublicKey, SigningKey};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    pub ledger: Genesis,
    /// Who may sign blocks. Solo: exactly one.
    pub validators: Vec<PublicKey>,
}

impl GenesisFile {
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_else(|e| panic!("genesis to JSON: {e}"));
        out.push(b'\n');
        out
    }

    pub fn from_json(bytes: &[u8]) -> Result<GenesisFile, String> {
        let g: GenesisFile = serde_json::from_slice(bytes).map_err(|e| format!("genesis file: {e}"))?;
        if g.validators.is_empty() {
            return Err("genesis file: `validators` is empty; a chain needs at least one".into());
        }
        Ok(g)
    }

    pub fn hash_of(bytes: &[u8]) -> Hash32 {
        let mut h = blake3::Hasher::new();
        h.update(b"tollway-genesis\0");
        h.update(bytes);
        Hash32(*h.finalize().as_bytes())
    }

    /// Block 0: no txs, the genesis state's root, signed by the first
    /// validator (so that every stored block carries a commit).
    pub fn block_zero(&self, file_bytes: &[u8], state_root: Hash32, key: Option<&SigningKey>) -> Block {
        let header = Header {
            chain_id: self.ledger.chain_id.clone(),
            height: 0,
            parent: GenesisFile::hash_of(file_bytes),
            time_ms: self.ledger.genesis_time_secs.saturating_mul(1000),
            tx_root: tollway_types::block::tx_root([]),
            n_txs: 0,
            state_root,
            proposer: self.validators[0],
        };
        let signatures = key.map(|k| vec![header.sign(k)]).unwrap_or_default();
        Block { header, commit: Commit { signatures }, txs: Vec::new() }
    }
}
