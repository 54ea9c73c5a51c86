//! The initial state: allocations, the gateway key, parameters and the
//! pool's starting liquidity.

use crate::params::Params;
use crate::state::{Pool, State, Supply};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tollway_types::{AccountId, Hash32, Token, Usd};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub account: AccountId,
    pub token: Token,
    pub usd: Usd,
    /// Bonded at genesis (e.g. for the first oracles).
    pub staked: Token,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub chain_id: String,
    pub genesis_time_secs: u64,
    /// The account allowed to deposit USD (the bridge or on-ramp).
    pub gateway: AccountId,
    pub params: Params,
    pub allocations: Vec<Allocation>,
    pub pool_token: Token,
    pub pool_usd: Usd,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    #[error("account {0} is allocated twice")]
    DuplicateAllocation(AccountId),
    #[error("chain id must be 1 to 64 bytes")]
    BadChainId,
    #[error("genesis amounts overflow")]
    Overflow,
}

impl Genesis {
    pub fn build(&self) -> Result<State, GenesisError> {
        if self.chain_id.is_empty() || self.chain_id.len() > tollway_types::tx::limits::MAX_CHAIN_ID_BYTES {
            return Err(GenesisError::BadChainId);
        }
        let mut state = State {
            chain_id: self.chain_id.clone(),
            params: self.params.clone(),
            gateway: self.gateway,
            epoch: 0,
            epoch_start_secs: self.genesis_time_secs,
            epoch_seed: Hash32::of(self.chain_id.as_bytes()),
            account_index: BTreeMap::new(),
            accounts: Vec::new(),
            node_index: BTreeMap::new(),
            nodes: Vec::new(),
            subnet_index: BTreeMap::new(),
            oracle_index: BTreeMap::new(),
            oracles: Vec::new(),
            channels: BTreeMap::new(),
            pool: Pool { token: self.pool_token, usd: self.pool_usd },
            supply: Supply::default(),
            burn_queue_usd: Usd::ZERO,
            emission_carry: Token::ZERO,
            regions: Default::default(),
        };
        let mut token = self.pool_token.0;
        let mut usd = self.pool_usd.0;
        state.account_idx_or_create(self.gateway);
        for a in &self.allocations {
            if state.account_index.contains_key(&a.account) && a.account != self.gateway
                || self.allocations.iter().filter(|b| b.account == a.account).count() > 1
            {
                return Err(GenesisError::DuplicateAllocation(a.account));
            }
            let i = state.account_idx_or_create(a.account) as usize;
            let acct = &mut state.accounts[i];
            acct.token = a.token;
            acct.usd = a.usd;
            acct.staked = a.staked;
            token = token
                .checked_add(a.token.0)
                .and_then(|t| t.checked_add(a.staked.0))
                .ok_or(GenesisError::Overflow)?;
            usd = usd.checked_add(a.usd.0).ok_or(GenesisError::Overflow)?;
        }
        state.supply.genesis_token = Token(token);
        state.supply.genesis_usd = Usd(usd);
        Ok(state)
    }
}
