//! The state root (ADR 0002): blake3 over the canonical encoding of the
//! whole state. Collections are vectors in creation order and ordered maps,
//! so the same blocks replayed give the same bytes and the same root.

use crate::state::State;
use tollway_types::Hash32;

pub fn state_root(state: &State) -> Hash32 {
    state_root_of_encoding(&encode_state(state))
}

/// The canonical encoding the root is taken over: the chain stores these
/// same bytes as its snapshot, so one encoding per block serves both.
pub fn encode_state(state: &State) -> Vec<u8> {
    tollway_types::codec::encode(state)
}

pub fn state_root_of_encoding(encoded: &[u8]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(b"tollway-state-root\0");
    h.update(encoded);
    Hash32(*h.finalize().as_bytes())
}

/// Reads a state snapshot written by [`encode_state`].
pub fn decode_state(encoded: &[u8]) -> Result<State, tollway_types::codec::DecodeError> {
    // A snapshot is the node's own durable file, not network input; the
    // limit only guards against a corrupt length.
    tollway_types::codec::decode(encoded, usize::MAX)
}
