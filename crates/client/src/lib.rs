//! The consumer side as a library (DESIGN §4): a local SOCKS5 and HTTP
//! CONNECT front end whose streams go through tunnel sessions to a ranked
//! list of routes (an exit, or a relay then an exit), with health checks,
//! failover and port hopping.

pub mod connect;
pub mod front;
pub mod pool;

pub use connect::{Hop, Route};
pub use front::{serve_front, FrontConfig};
pub use pool::{ClientConfig, ClientError, RoutePool};
