//! The chain (DESIGN §3): orders transactions into blocks, makes them
//! durable in the embedded store, and answers over HTTP.
//!
//! - `mempool`, `execute`: pure (no I/O, no clock).
//! - `consensus`: the engine interface; `Solo` is the one sequencer.
//! - `core`: ledger state + mempool + store: admission to commit.
//! - `replay`: every block again from genesis, every root checked.
//! - `node`, `api`: the tokio driver and the axum HTTP API; `listener`:
//!   the API's server: connection limits, idle timeout, request head and
//!   body deadlines; `directory`: the node
//!   list the API filters, copied once per block, outside the lock.

pub mod consensus;
pub mod core;
pub mod directory;
pub mod execute;
pub mod genesis;
pub mod listener;
pub mod mempool;
pub mod api;
pub mod metrics;
pub mod node;
pub mod replay;
