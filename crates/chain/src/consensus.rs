//! The consensus interface (DESIGN §3, ADR 0006). The engine decides which
//! block comes next; the application (ledger + mempool + store, in
//! [`crate::core::Core`]) builds, checks and commits blocks. The ledger
//! never sees consensus.
//!
//! The split follows Malachite's host interface (and ABCI's), so a BFT
//! engine plugs in by implementing [`Consensus`] over the same
//! [`Application`]:
//! - `GetValue` (ABCI `PrepareProposal`) → [`Application::propose`];
//! - a proposal received from a peer (`ProcessProposal`) →
//!   [`Application::verify`];
//! - `Decided` with its certificate (`FinalizeBlock` + `Commit`) →
//!   [`Application::commit`];
//! - a round that fails after the app executed a proposal →
//!   [`Application::abandon`].

use crate::core::Committed;
use crate::execute::BlockError;
use tollway_types::{Block, Commit, SigningKey};

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error(transparent)]
    Store(#[from] tollway_store::StoreError),
    #[error("{0}")]
    Other(String),
}

/// What a consensus engine needs from the application.
pub trait Application {
    /// Builds the next block at `time_ms` from the mempool and executes it
    /// (the header carries the state root after it). Not yet durable.
    fn propose(&mut self, time_ms: u64) -> Result<Block, ChainError>;
    /// Executes a block proposed by another validator and checks its root.
    fn verify(&mut self, block: &Block) -> Result<(), ChainError>;
    /// Makes a decided block durable, then visible. The block must be the
    /// one last proposed or verified.
    fn commit(&mut self, block: Block, commit: Commit) -> Result<Committed, ChainError>;
    /// Forgets an executed but undecided block: back to the committed state.
    fn abandon(&mut self) -> Result<(), ChainError>;
}

/// A consensus engine, driven by the node's loop once per block interval
/// (or sooner when the mempool has a full block) when a block is wanted
/// (`Core::block_wanted`: something to carry, or the idle heartbeat). A
/// BFT engine's proposer would ask the same (CometBFT's
/// `create_empty_blocks = false` with `create_empty_blocks_interval`).
pub trait Consensus: Send {
    fn name(&self) -> &'static str;
    /// Runs the engine at `now_ms`; returns the block committed, if any.
    fn step(&mut self, app: &mut dyn Application, now_ms: u64) -> Result<Option<Committed>, ChainError>;
}

/// One sequencer: it proposes, its own signature is the whole certificate,
/// and every proposal is decided at once.
pub struct Solo {
    key: SigningKey,
}

impl Solo {
    pub fn new(key: SigningKey) -> Solo {
        Solo { key }
    }
}

impl Consensus for Solo {
    fn name(&self) -> &'static str {
        "solo"
    }

    fn step(&mut self, app: &mut dyn Application, now_ms: u64) -> Result<Option<Committed>, ChainError> {
        let block = app.propose(now_ms)?;
        let commit = Commit { signatures: vec![block.header.sign(&self.key)] };
        app.commit(block, commit).map(Some)
    }
}
