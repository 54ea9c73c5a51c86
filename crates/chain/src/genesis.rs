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
        let g: GenesisFile = serde_json::from_slice(bytes).map_err(|e| {
            // A field this version has and the file lacks (or the other
            // way round) means the file came from another version of
            // tollway: say so, rather than serde's bare "missing field".
            let text = e.to_string();
            if text.contains("missing field") || text.contains("unknown field") {
                format!(
                    "genesis file: {text}: unless it was edited by hand, it was written by another \
                     version of tollway, whose ledger parameters or genesis differ from this one's; a \
                     chain's genesis is fixed when it starts, so run this chain with the version that \
                     wrote it, or start a new chain (`tollway chain init --force`)"
                )
            } else {
                format!("genesis file: {text}")
            }
        })?;
        if g.validators.is_empty() {
            return Err("genesis file: `validators` is empty; a chain needs at least one".into());
        }
        // The file holds the parameters in base units, past the checks a
        // parameters file gets: a value out of range would panic the block
        // loop at an epoch's end.
        g.ledger.params.check().map_err(|e| format!("genesis file: ledger.params: {e}"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal genesis file's JSON, with the default parameters.
    fn genesis_json() -> serde_json::Value {
        let key = SigningKey::from_seed([1; 32]).public();
        let ledger = Genesis {
            chain_id: "t".into(),
            genesis_time_secs: 1_700_000_000,
            gateway: key,
            params: tollway_ledger::Params::default_params(),
            allocations: Vec::new(),
            pool_token: tollway_types::Token(1),
            pool_usd: tollway_types::Usd(1),
        };
        let file = GenesisFile { ledger, validators: vec![key] };
        serde_json::from_slice(&file.to_json()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_genesis_file_from_another_version_says_so() {
        let mut json = genesis_json();
        let params = json["ledger"]["params"].as_object_mut().unwrap_or_else(|| panic!("params is an object"));
        let (first, _) = params.iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap_or_else(|| panic!("no params"));
        params.remove(&first);
        let err = GenesisFile::from_json(json.to_string().as_bytes()).map(|_| ()).unwrap_err();
        assert!(err.contains("missing field") && err.contains("another version of tollway"), "{err}");
        // Other damage keeps its own message.
        let err = GenesisFile::from_json(b"{").map(|_| ()).unwrap_err();
        assert!(!err.contains("another version"), "{err}");
    }

    /// A genesis file edited to a zero-second halving period was taken as
    /// it was, and the chain's block loop divided by zero at the first
    /// epoch's end.
    #[test]
    fn parameters_a_parameters_file_would_refuse_are_refused() {
        let mut json = genesis_json();
        assert!(GenesisFile::from_json(json.to_string().as_bytes()).is_ok());
        json["ledger"]["params"]["halving_period_secs"] = 0.into();
        let err = GenesisFile::from_json(json.to_string().as_bytes()).map(|_| ()).unwrap_err();
        assert_eq!(
            err,
            "genesis file: ledger.params: parameter `emission.halving_period`: \"0s\" is 0 s; it must be at least 1 s"
        );
    }
}
