//! The Tollway ledger: a pure, deterministic state machine (DESIGN §2).
//!
//! - [`apply`] takes a signed transaction and returns events or a typed
//!   [`TxError`]; a rejected tx changes nothing.
//! - [`end_epoch`] runs the tokenomics engine: measurement aggregation,
//!   caps and slashes, burn, mint into the pools, vesting.
//!
//! No clocks, randomness, I/O or floats in state: time and the epoch seed
//! come in through [`Ctx`] and `end_epoch`'s `seed`.

pub mod apply;
pub mod assignment;
pub mod direct;
pub mod economics;
pub mod error;
pub mod event;
pub mod genesis;
pub mod invariants;
pub mod params;
pub mod root;
pub mod state;
pub mod testkit;
pub mod workers;

pub use apply::{apply, apply_verified, check_receipt, cost_of_bytes, ClosedChannel};
pub use economics::{end_epoch, end_epoch_reusing, end_epoch_with, epoch_due, EpochBuffers, EpochReport, SlashEvent, SlashReason, StrikeMeasurement};
pub use error::TxError;
pub use event::Event;
pub use genesis::{Allocation, Genesis};
pub use invariants::check_supply;
pub use params::Params;
pub use root::state_root;
pub use state::{Ctx, State};
