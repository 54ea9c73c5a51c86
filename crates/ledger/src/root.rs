//! The state root (ADR 0002): blake3 over the canonical encoding of the
//! whole state. Collections are vectors in creation order and ordered maps,
//! so the same blocks replayed give the same bytes and the same root.

use crate::state::State;
use tollway_types::codec::DecodeError;
use tollway_types::Hash32;

/// The layout of the stored state: bumped whenever a type inside
/// [`State`] changes, so a store written by another build is refused by
/// name rather than misread. Separate from the codec's version byte, which
/// transactions and blocks share. `tests/snapshot.rs` pins the encoding
/// this version stands for. (Version 1 was the codec's byte alone.)
pub const STATE_VERSION: u8 = 11;

pub fn state_root(state: &State) -> Hash32 {
    state_root_of_encoding(&encode_state(state))
}

/// The canonical encoding the root is taken over, `[STATE_VERSION] ++
/// codec::encode(state)`: the chain stores these same bytes as its
/// snapshot, so one encoding per block serves both.
pub fn encode_state(state: &State) -> Vec<u8> {
    let mut out = vec![STATE_VERSION];
    tollway_types::codec::encode_into(state, &mut out);
    out
}

pub fn state_root_of_encoding(encoded: &[u8]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(b"tollway-state-root\0");
    h.update(encoded);
    Hash32(*h.finalize().as_bytes())
}

/// Why a stored state could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "the state was stored in layout version {found}, and this build reads version {STATE_VERSION}: \
         run the build that wrote it, or start the chain again (`tollway chain init`)"
    )]
    Version { found: u8 },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Reads a state snapshot written by [`encode_state`].
pub fn decode_state(encoded: &[u8]) -> Result<State, SnapshotError> {
    let (&version, rest) = encoded.split_first().ok_or(DecodeError::Empty)?;
    if version != STATE_VERSION {
        return Err(SnapshotError::Version { found: version });
    }
    // A snapshot is the node's own durable file, not network input; the
    // limit only guards against a corrupt length.
    Ok(tollway_types::codec::decode(rest, usize::MAX)?)
}
