//! What an applied transaction did, for the chain's API and the wallet.

use serde::{Deserialize, Serialize};
use tollway_types::{AccountId, Amount, ChannelId, Token, Usd};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    FeePaid { account: AccountId, fee: Amount },
    Transferred { from: AccountId, to: AccountId, amount: Amount },
    Staked { account: AccountId, amount: Token },
    UnbondStarted { account: AccountId, amount: Token, release_at_secs: u64 },
    UnbondedWithdrawn { account: AccountId, amount: Token },
    NodeRegistered { node: AccountId },
    NodeUpdated { node: AccountId },
    NodeDeregistered { node: AccountId },
    OracleRegistered { oracle: AccountId, active_from_epoch: u64 },
    OracleDeregistered { oracle: AccountId, retired_from_epoch: u64 },
    ChannelOpened { channel: ChannelId, client: AccountId, node: AccountId, escrow: Usd },
    ChannelSettled { channel: ChannelId, amount: Usd, to_node: Usd, to_burn: Usd, cumulative: Usd },
    ChannelClosed { channel: ChannelId, refund: Usd },
    Heartbeat { node: AccountId, epoch: u64 },
    Reported { oracle: AccountId, epoch: u64, measurements: u32 },
    Swapped { account: AccountId, sold: Amount, bought: Amount },
    Deposited { to: AccountId, amount: Usd },
    UsdWithdrawn { account: AccountId, amount: Usd, reference: String },
    VestedClaimed { account: AccountId, amount: Token },
}
