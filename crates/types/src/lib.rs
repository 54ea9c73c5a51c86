//! Tollway's core types: amounts, ids, keys, the signed transaction envelope
//! and its codec. Pure: no I/O, clocks or randomness (ARCHITECTURE.md).

pub mod admission;
pub mod amount;
pub mod block;
pub mod codec;
pub mod ip;
pub mod keys;
pub mod math;
pub mod region;
mod serde_hr;
pub mod tx;

pub use block::{Block, Commit, CommitSig, Header};
pub use amount::{Amount, Token, Usd, PPM, UNIT};
pub use keys::{AccountId, PublicKey, Signature, SigningKey};
pub use region::{CountryCode, MacroRegion};
pub use tx::{
    channel_id, ChannelId, Hash32, Measurement, MeasurementOutcome, MeasurementReport, NodeSpec,
    Receipt, SignedReceipt, SignedTx, Tx, TxBody, TxId,
};
