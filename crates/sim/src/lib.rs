//! The tokenomics simulator (DESIGN §7, issue 3): agents over years of
//! synthetic market activity, driving the ledger's own `end_epoch`.

pub mod engine;
pub mod montecarlo;
pub mod output;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod spill;
