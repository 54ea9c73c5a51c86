//! Blocks (DESIGN §3): a header that commits to the parent, the txs and the
//! state after them, signed by whoever decided it. Here so that the store,
//! the chain, the API and a future BFT engine share one definition.

use crate::codec;
use crate::keys::{self, KeyError, PublicKey, Signature, SigningKey};
use crate::tx::{Hash32, SignedTx, TxId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub chain_id: String,
    pub height: u64,
    /// Hash of the previous header; for height 0, the genesis hash.
    pub parent: Hash32,
    /// Block time in milliseconds since the Unix epoch. Epoch boundaries
    /// come from it, never from a local clock.
    pub time_ms: u64,
    /// blake3 over the ids of the txs, in order.
    pub tx_root: Hash32,
    pub n_txs: u32,
    /// The state root after every tx of this block (and any epoch end it
    /// triggered) has been applied.
    pub state_root: Hash32,
    pub proposer: PublicKey,
}

/// A validator's signature over a header hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSig {
    pub validator: PublicKey,
    pub signature: Signature,
}

/// Proof that a header was decided. Solo: the sequencer's own signature.
/// A BFT engine puts its 2f+1 precommits here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub signatures: Vec<CommitSig>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub header: Header,
    pub commit: Commit,
    pub txs: Vec<SignedTx>,
}

impl Header {
    pub fn hash(&self) -> Hash32 {
        Hash32::of(&codec::domain_bytes(b"tollway-header", self))
    }
    /// What a validator signs to commit to this header.
    pub fn commit_bytes(&self) -> Vec<u8> {
        let mut out = b"tollway-commit\0".to_vec();
        out.extend_from_slice(&self.hash().0);
        out
    }
    pub fn sign(&self, key: &SigningKey) -> CommitSig {
        CommitSig { validator: key.public(), signature: key.sign(&self.commit_bytes()) }
    }
}

impl CommitSig {
    pub fn verify(&self, header: &Header) -> Result<(), KeyError> {
        keys::verify(&self.validator, &header.commit_bytes(), &self.signature)
    }
}

pub fn tx_root(ids: impl IntoIterator<Item = TxId>) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(b"tollway-tx-root\0");
    for id in ids {
        h.update(&id.0);
    }
    Hash32(*h.finalize().as_bytes())
}

impl Block {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }
    /// Decodes untrusted bytes (e.g. from a peer): every tx inside is held
    /// to the same limits as a submitted one.
    pub fn decode(bytes: &[u8]) -> Result<Block, codec::DecodeError> {
        let block: Block = codec::decode(bytes, MAX_BLOCK_BYTES)?;
        for stx in &block.txs {
            codec::check_limits(stx)?;
        }
        Ok(block)
    }
}

/// No block is larger than this once encoded (16 MiB).
pub const MAX_BLOCK_BYTES: usize = 16 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            chain_id: "t".into(),
            height: 3,
            parent: Hash32::of(b"p"),
            time_ms: 1_000,
            tx_root: tx_root([]),
            n_txs: 0,
            state_root: Hash32::of(b"s"),
            proposer: SigningKey::from_label("v").public(),
        }
    }

    #[test]
    fn a_commit_signature_covers_every_header_field() {
        let key = SigningKey::from_label("v");
        let h = header();
        let sig = h.sign(&key);
        assert!(sig.verify(&h).is_ok());
        let mut other = h.clone();
        other.time_ms += 1;
        assert!(sig.verify(&other).is_err());
    }

    #[test]
    fn blocks_round_trip_through_the_codec() {
        let key = SigningKey::from_label("v");
        let h = header();
        let b = Block { commit: Commit { signatures: vec![h.sign(&key)] }, header: h, txs: vec![] };
        assert_eq!(Block::decode(&b.encode()).unwrap(), b);
    }
}
