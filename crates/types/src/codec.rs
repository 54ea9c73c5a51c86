//! The compact versioned binary codec: one version byte, then postcard
//! (ADR 0002). The decoder checks the version, the size, the limits and
//! canonical form, and returns an error for every malformed input; it never
//! panics (fuzzed by `fuzz/`).

use crate::tx::{limits, SignedTx, TxBody};
use serde::{de::DeserializeOwned, Serialize};

/// Bumped on any change to an encoded type.
pub const CODEC_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty input: expected a codec version byte")]
    Empty,
    #[error("codec version {found} is not supported (this build reads version {CODEC_VERSION})")]
    UnsupportedVersion { found: u8 },
    #[error("input is {len} bytes; the limit is {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed encoding: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    #[error("not in canonical form (re-encoding differs)")]
    NonCanonical,
    #[error("{field} has {len} entries or bytes; the limit is {limit}")]
    LimitExceeded { field: &'static str, len: usize, limit: usize },
}

/// `[CODEC_VERSION] ++ postcard(value)`.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

/// Appends `encode(value)` to `out`, with no buffer of its own (the tunnel
/// encodes a control frame per request this way).
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    out.push(CODEC_VERSION);
    // postcard serialising into a Vec only fails on types serde cannot
    // describe (none of ours): treat it as a bug.
    *out = postcard::to_extend(value, std::mem::take(out)).unwrap_or_else(|e| panic!("encoding failed: {e}"));
}

/// Decodes any versioned value, refusing trailing bytes and non-canonical
/// encodings, with `limit` as the maximum input size.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge { len: bytes.len(), limit });
    }
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != CODEC_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    let (value, rest): (T, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    // One value, one encoding: tx ids and signatures then name exactly one
    // byte string (postcard accepts e.g. over-long varints).
    if encode(&value) != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

/// Decodes a signed transaction from untrusted bytes.
pub fn decode_signed_tx(bytes: &[u8]) -> Result<SignedTx, DecodeError> {
    let tx: SignedTx = decode(bytes, limits::MAX_TX_BYTES)?;
    check_limits(&tx)?;
    Ok(tx)
}

pub(crate) fn check_limits(stx: &SignedTx) -> Result<(), DecodeError> {
    let check = |field, len, limit| {
        if len > limit {
            Err(DecodeError::LimitExceeded { field, len, limit })
        } else {
            Ok(())
        }
    };
    check("chain_id", stx.tx.chain_id.len(), limits::MAX_CHAIN_ID_BYTES)?;
    match &stx.tx.body {
        TxBody::RegisterNode(spec) | TxBody::UpdateNode(spec) => {
            check("addrs", spec.addrs.len(), limits::MAX_NODE_ADDRS)?
        }
        TxBody::Report(r) => {
            check("measurements", r.measurements.len(), limits::MAX_MEASUREMENTS_PER_REPORT)?
        }
        TxBody::SettleChannel { receipt } => {
            check("receipt.chain_id", receipt.receipt.chain_id.len(), limits::MAX_CHAIN_ID_BYTES)?
        }
        TxBody::WithdrawUsd { reference, .. } => {
            check("reference", reference.len(), limits::MAX_WITHDRAW_REFERENCE_BYTES)?
        }
        _ => {}
    }
    Ok(())
}

/// `tag ++ 0 ++ encode(value)`: what gets signed, so a signature over one
/// kind of message can never be replayed as another.
pub fn domain_bytes<T: Serialize>(tag: &[u8], value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(tag.len() + 1 + 128);
    out.extend_from_slice(tag);
    out.push(0);
    out.extend_from_slice(&encode(value));
    out
}
