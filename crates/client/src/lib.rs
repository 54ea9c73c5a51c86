//! The consumer side as a library (DESIGN §4): a local SOCKS5 and HTTP
//! CONNECT front end whose streams go through tunnel sessions to a ranked
//! list of routes (an exit, or a relay then an exit), with health checks,
//! failover and port hopping.

pub mod carried;
pub mod choice;
pub mod connect;
pub mod front;
pub mod pool;
#[cfg(test)]
mod free_ports;

pub use connect::{Hop, Route};
pub use front::{serve_front, FrontConfig, FIRST_BYTES_WAIT_DEFAULT};
pub use pool::{human_bytes, BeforeReply, ClientConfig, ClientError, IfUnanswered, Renewal, RoutePool};

/// The runtime a client process runs its proxy on: one thread. A client's
/// streams share one session per route, whose driver task is one thread's
/// work anyway; spreading the per-stream tasks over a work-stealing pool
/// only adds a thread hand-off (a futex wake-up) to every chunk. On the
/// benchmark's 2-core machine one thread cut a download's CPU per GiB by
/// about a quarter (see `tollway_net::Shards` for the node's side).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}
