//! The sans-IO tunnel protocol (DESIGN §4): frames, the handshake bound to
//! the TLS connection and the payment channel, multiplexed streams with
//! flow control, byte metering, cumulative receipts checked with the
//! ledger's own code, the credit window, path switching for port hopping,
//! the exit policy and the hop schedule.
//!
//! Architecture invariant: no I/O, no clocks, no randomness. Time comes in
//! as `now`, randomness (session ids) from the driver; `tollway-net`'s
//! daemons drive it over real sockets, tests drive two sessions directly.

pub mod dest;
pub mod frame;
pub mod hop;
pub mod policy;
pub mod session;

pub use dest::{Dest, Host};
pub use frame::{ErrorCode, Frame, FrameError};
pub use policy::{AnnouncedPolicy, ExitPolicy};
pub use session::{
    ChannelInfo, ClientTerms, EarlierSessions, Event, Limits, NodeTerms, PathId, Session, SessionError, StreamId,
};
