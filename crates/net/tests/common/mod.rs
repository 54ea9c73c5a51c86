//! Helpers shared by the integration tests: identities, a listener on
//! loopback, and byte patterns.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tollway_net::{ClientOptions, Listener, NetError, ServerOptions, TlsIdentity, Transport};

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub fn identity(seed_byte: u8) -> TlsIdentity {
    TlsIdentity::from_seed([seed_byte; 32]).expect("identity")
}

/// A listener on one ephemeral port per transport.
pub async fn listener(identity: &TlsIdentity, transports: &[Transport], opts: &ServerOptions) -> Listener {
    Listener::bind(transports, LOOPBACK, 0..=0, identity, opts).await.expect("bind")
}

/// The address `listener` accepts `transport` on (its first port).
pub fn addr_of(listener: &Listener, transport: Transport) -> SocketAddr {
    let port = listener.ports(transport)[0];
    SocketAddr::new(LOOPBACK, port)
}

/// A listener on `n` consecutive ports, both transports: tries ranges from
/// a pseudo-random base until one is free on TCP and UDP.
pub async fn listener_on_range(identity: &TlsIdentity, n: u16, opts: &ServerOptions) -> Listener {
    let mut base = 20_000 + (std::process::id() % 20_000) as u16;
    for _ in 0..50 {
        match Listener::bind(&Transport::ALL, LOOPBACK, base..=base + n - 1, identity, opts).await {
            Ok(listener) => return listener,
            Err(NetError::BindFailed { .. }) => base = 20_000 + (base - 20_000 + 997) % 30_000,
            Err(e) => panic!("bind: {e}"),
        }
    }
    panic!("no free range of {n} ports found");
}

/// Deterministic, non-repeating-looking bytes.
pub fn pattern(len: usize, salt: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut counter = 0u64;
    while out.len() < len {
        let block = blake3::hash(&[&counter.to_le_bytes()[..], &[salt]].concat());
        out.extend_from_slice(block.as_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

pub fn client_opts() -> ClientOptions {
    ClientOptions::default()
}
