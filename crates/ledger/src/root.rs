//! The state root (ADR 0002): blake3 over the canonical encoding of the
//! whole state. Collections are vectors in creation order and ordered maps,
//! so the same blocks replayed give the same bytes and the same root.

use crate::state::State;
use tollway_types::Hash32;

pub fn state_root(state: &State) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(b"tollway-state-root\0");
    h.update(&tollway_types::codec::encode(state));
    Hash32(*h.finalize().as_bytes())
}
