//! Why a transaction was rejected. Each variant's message says what was
//! wrong and, where it helps, what to do; a rejected tx changes nothing.

use crate::params::{format_duration, format_span};
use tollway_types::{AccountId, Amount, ChannelId, Token, Usd};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("bad signature: the tx is not signed by {0}")]
    BadSignature(AccountId),
    #[error("wrong chain id {found:?}: this chain is {expected:?}")]
    WrongChain { expected: String, found: String },
    #[error("bad nonce {found}: account {account} expects nonce {expected}")]
    BadNonce { account: AccountId, expected: u64, found: u64 },
    #[error("unknown account {0}: it has never received funds")]
    UnknownAccount(AccountId),
    #[error("fee {offered} is below the minimum of {minimum}")]
    FeeTooLow { offered: String, minimum: String },
    #[error("insufficient token balance: have {have}, need {need}")]
    InsufficientToken { have: Token, need: Token },
    #[error("insufficient USD balance: have {have}, need {need}")]
    InsufficientUsd { have: Usd, need: Usd },
    #[error("insufficient stake: have {have} bonded, need {need}")]
    InsufficientStake { have: Token, need: Token },
    #[error("amount must be greater than zero")]
    ZeroAmount,
    #[error("cannot send to yourself")]
    SelfTransfer,
    #[error(
        "the receiver has no account yet, and a transfer that creates one must send at least {minimum} \
         (this sends {amount}): accounts stay in the state for good"
    )]
    NewAccountTooSmall { amount: Amount, minimum: Amount },
    #[error("unbonding {amount} would leave {left} bonded, but your roles need {need}: deregister first")]
    StakeLocked { amount: Token, left: Token, need: Token },
    #[error("too many unbonding entries ({limit}): withdraw matured ones first")]
    TooManyUnbondings { limit: usize },
    #[error("nothing to withdraw: {0}")]
    NothingToWithdraw(String),
    #[error("nothing vested to claim yet")]
    NothingVested,
    #[error("{0} already runs a node: use update-node")]
    NodeAlreadyRegistered(AccountId),
    #[error("{0} runs no active node")]
    NotANode(AccountId),
    #[error("{0} is already an oracle")]
    OracleAlreadyRegistered(AccountId),
    #[error("{0} is not an active oracle")]
    NotAnOracle(AccountId),
    #[error("this oracle may report from epoch {active_from_epoch}; the current epoch is {current}")]
    OracleNotYetActive { active_from_epoch: u64, current: u64 },
    #[error("this oracle serves at its address until epoch {retired_from_epoch} begins (the current epoch is {current}): register at that address to stay, or at a new one from then")]
    OracleRetiring { retired_from_epoch: u64, current: u64 },
    #[error("invalid node spec: {0}")]
    InvalidNodeSpec(String),
    #[error("channel {0} does not exist (never opened, or already closed: by its client, or by the chain at the first epoch end past its expiry and grace)")]
    UnknownChannel(ChannelId),
    #[error("only the channel's {role} ({expected}) may do this")]
    NotChannelParty { role: &'static str, expected: AccountId },
    #[error("channel expiry {expires_at_secs} is not after the current time {now_secs}")]
    ExpiryInPast { expires_at_secs: u64, now_secs: u64 },
    #[error(
        "channel expiry {expires_at_secs} is too far ahead: a channel may last at most {}, \
         so it must expire by {} (the current time is {now_secs})",
        format_duration(*.max_lifetime_secs),
        .now_secs.saturating_add(*.max_lifetime_secs)
    )]
    ExpiryTooFar { expires_at_secs: u64, now_secs: u64, max_lifetime_secs: u64 },
    #[error("channel escrow {escrow} is below the minimum of {minimum}")]
    EscrowTooSmall { escrow: Usd, minimum: Usd },
    #[error(
        "channel cannot be closed before {closable_at_secs} (expiry plus the settlement grace), in {}; now is {now_secs}",
        format_span(.closable_at_secs.saturating_sub(*.now_secs))
    )]
    ChannelNotExpired { closable_at_secs: u64, now_secs: u64 },
    #[error(
        "too many open channels ({limit}): close expired ones first (`close-channel`, from their expiry plus the \
         grace; the chain closes them itself at the first epoch end from then)"
    )]
    TooManyChannels { limit: u32 },
    #[error("receipt is for chain {0:?}, not this chain")]
    ReceiptWrongChain(String),
    #[error("receipt signature is not the channel client's")]
    BadReceiptSignature,
    #[error("stale receipt: cumulative {cumulative} is not above the {settled} already settled")]
    StaleReceipt { cumulative: Usd, settled: Usd },
    #[error("receipt bytes went backwards: {bytes} after {settled_bytes}")]
    ReceiptBytesBackwards { bytes: u64, settled_bytes: u64 },
    #[error("receipt for {cumulative} exceeds the channel's escrow of {escrow}")]
    OverEscrow { cumulative: Usd, escrow: Usd },
    #[error("{what} is for epoch {found}, but the current epoch is {current}")]
    WrongEpoch { what: &'static str, found: u64, current: u64 },
    #[error("heartbeat already recorded for epoch {0}")]
    DuplicateHeartbeat(u64),
    #[error("report entry {index}: {why}")]
    BadReport { index: usize, why: String },
    #[error("pool has no liquidity")]
    EmptyPool,
    #[error("swap output {out} is below the minimum {min_out} you accepted")]
    Slippage { out: u128, min_out: u128 },
    #[error(
        "the account's node holds an over-claim strike from epoch {epoch}: its stake stays slashable, \
         so deregistering and withdrawing unbonded stake wait until a measurement clears or confirms it"
    )]
    StrikePending { epoch: u64 },
    #[error(
        "the account's oracle vouched for node {node}'s claim, which holds an over-claim strike from epoch {epoch}: \
         if a measurement confirms it, the voucher is slashed too, so withdrawing unbonded stake waits until one \
         decides, or until epoch {until_epoch}"
    )]
    VouchPending { node: AccountId, epoch: u64, until_epoch: u64 },
    #[error("only the gateway may deposit USD")]
    NotGateway,
    #[error("arithmetic overflow: amount too large")]
    Overflow,
}

impl TxError {
    /// A stable machine-readable name for the API (`insufficient_token`).
    pub fn code(&self) -> &'static str {
        match self {
            TxError::BadSignature(..) => "bad_signature",
            TxError::WrongChain { .. } => "wrong_chain",
            TxError::BadNonce { .. } => "bad_nonce",
            TxError::UnknownAccount(..) => "unknown_account",
            TxError::FeeTooLow { .. } => "fee_too_low",
            TxError::InsufficientToken { .. } => "insufficient_token",
            TxError::InsufficientUsd { .. } => "insufficient_usd",
            TxError::InsufficientStake { .. } => "insufficient_stake",
            TxError::ZeroAmount => "zero_amount",
            TxError::SelfTransfer => "self_transfer",
            TxError::NewAccountTooSmall { .. } => "new_account_too_small",
            TxError::StakeLocked { .. } => "stake_locked",
            TxError::TooManyUnbondings { .. } => "too_many_unbondings",
            TxError::NothingToWithdraw(..) => "nothing_to_withdraw",
            TxError::NothingVested => "nothing_vested",
            TxError::NodeAlreadyRegistered(..) => "node_already_registered",
            TxError::NotANode(..) => "not_a_node",
            TxError::OracleAlreadyRegistered(..) => "oracle_already_registered",
            TxError::NotAnOracle(..) => "not_an_oracle",
            TxError::OracleNotYetActive { .. } => "oracle_not_yet_active",
            TxError::OracleRetiring { .. } => "oracle_retiring",
            TxError::InvalidNodeSpec(..) => "invalid_node_spec",
            TxError::UnknownChannel(..) => "unknown_channel",
            TxError::NotChannelParty { .. } => "not_channel_party",
            TxError::ExpiryInPast { .. } => "expiry_in_past",
            TxError::ExpiryTooFar { .. } => "expiry_too_far",
            TxError::EscrowTooSmall { .. } => "escrow_too_small",
            TxError::ChannelNotExpired { .. } => "channel_not_expired",
            TxError::TooManyChannels { .. } => "too_many_channels",
            TxError::ReceiptWrongChain(..) => "receipt_wrong_chain",
            TxError::BadReceiptSignature => "bad_receipt_signature",
            TxError::StaleReceipt { .. } => "stale_receipt",
            TxError::ReceiptBytesBackwards { .. } => "receipt_bytes_backwards",
            TxError::OverEscrow { .. } => "over_escrow",
            TxError::WrongEpoch { .. } => "wrong_epoch",
            TxError::DuplicateHeartbeat(..) => "duplicate_heartbeat",
            TxError::BadReport { .. } => "bad_report",
            TxError::EmptyPool => "empty_pool",
            TxError::Slippage { .. } => "slippage",
            TxError::NotGateway => "not_gateway",
            TxError::StrikePending { .. } => "strike_pending",
            TxError::VouchPending { .. } => "vouch_pending",
            TxError::Overflow => "overflow",
        }
    }
}
