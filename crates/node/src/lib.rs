//! The provider daemon as a library (DESIGN §4, §6): listens on the node's
//! advertised port range over TLS/TCP and QUIC, runs a tunnel session per
//! client with the channel checked on the chain, connects destinations
//! under the exit policy, and keeps the newest receipt per channel for
//! settlement.
//!
//! A relay is the same daemon: a client's stream to the next hop is just a
//! destination, and the session inside it is end-to-end encrypted to the
//! exit, so the relay sees neither the destinations nor the data.

pub mod channels;
pub mod exit;
pub mod holders;
pub mod server;

pub use channels::{ChainChannels, ChannelSource, ReceiptBook, StaticChannels};
pub use exit::connect_dest;
pub use server::{NodeServer, ServerConfig};
