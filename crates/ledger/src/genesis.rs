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

/// The most tokens a chain may ever hold: its genesis (allocations,
/// stakes and the pool) and all the emission may mint
/// (`Params::emission_cap`), 2^126 base units (about 8.5 × 10^31 TWY).
/// Every token sits in one place the supply check sums, so any sum of
/// holdings (the supply's own total, an account's bond, the stakes that
/// weigh a median) then stays under 2^127, with room to double it.
pub const MAX_TOKEN_SUPPLY: Token = Token(1 << 126);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    #[error("account {0} is allocated twice")]
    DuplicateAllocation(AccountId),
    #[error("chain id must be 1 to 64 bytes")]
    BadChainId,
    #[error("genesis amounts overflow")]
    Overflow,
    #[error(
        "the genesis holds {genesis} and the emission may mint up to {emission_cap} more (emission.cap_twy): \
         together above the supply bound of {bound}; allocate less or lower the cap"
    )]
    SupplyAboveBound { genesis: Token, emission_cap: Token, bound: Token },
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
            node_epochs: Vec::new(),
            subnet_index: BTreeMap::new(),
            oracle_index: BTreeMap::new(),
            oracles: Vec::new(),
            channels: BTreeMap::new(),
            channels_by_account: Default::default(),
            channels_by_expiry: Default::default(),
            pool: Pool {
                token: self.pool_token,
                usd: self.pool_usd,
                epoch_price_seconds: 0,
                updated_secs: self.genesis_time_secs,
            },
            supply: Supply::default(),
            burn_queue_usd: Usd::ZERO,
            held_burn: Default::default(),
            emission_carry: Token::ZERO,
            regions: Default::default(),
        };
        let mut token = self.pool_token.0;
        let mut usd = self.pool_usd.0;
        state.account_idx_or_create(self.gateway);
        let mut gateway_allocated = false;
        for a in &self.allocations {
            // The gateway's account exists already; it may be allocated once.
            let is_gateway = a.account == self.gateway;
            if is_gateway && gateway_allocated || !is_gateway && state.account_index.contains_key(&a.account) {
                return Err(GenesisError::DuplicateAllocation(a.account));
            }
            gateway_allocated |= is_gateway;
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
        // The supply's total (genesis + minted − burned) and every sum of
        // holdings must fit whatever the emission mints later.
        let emission_cap = self.params.emission_cap;
        if token.checked_add(emission_cap.0).is_none_or(|t| t > MAX_TOKEN_SUPPLY.0) {
            return Err(GenesisError::SupplyAboveBound { genesis: Token(token), emission_cap, bound: MAX_TOKEN_SUPPLY });
        }
        state.supply.genesis_token = Token(token);
        state.supply.genesis_usd = Usd(usd);
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollway_types::SigningKey;

    fn genesis(allocs: &[&str]) -> Genesis {
        Genesis {
            chain_id: "t".into(),
            genesis_time_secs: 0,
            gateway: SigningKey::from_label("gw").public(),
            params: Params::default_params(),
            allocations: allocs
                .iter()
                .map(|l| Allocation {
                    account: SigningKey::from_label(l).public(),
                    token: Token::units(1),
                    usd: Usd::units(2),
                    staked: Token::units(3),
                })
                .collect(),
            pool_token: Token::units(10),
            pool_usd: Usd::units(20),
        }
    }

    #[test]
    fn supply_counts_allocations_stakes_and_the_pool() {
        let s = genesis(&["a", "b", "gw"]).build().unwrap();
        assert_eq!(s.supply.genesis_token, Token::units(10 + 3 * 4));
        assert_eq!(s.supply.genesis_usd, Usd::units(20 + 3 * 2));
        assert!(crate::check_supply(&s).is_ok());
    }

    /// A genesis whose tokens leave the emission no room under the supply
    /// bound is refused, naming both figures. Only the allocations' sum
    /// was checked (that it fit in a u128): a genesis of nearly 2^128
    /// base units started, with no room for what the emission mints.
    #[test]
    fn a_genesis_that_leaves_no_room_for_the_emission_cap_is_refused_with_both_figures() {
        let mut g = genesis(&["a"]);
        let cap = g.params.emission_cap.0;
        let others = g.pool_token.0 + g.allocations[0].staked.0;
        g.allocations[0].token = Token(MAX_TOKEN_SUPPLY.0 - cap - others);
        let s = g.build().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.supply.genesis_token.0 + cap, MAX_TOKEN_SUPPLY.0, "exactly at the bound");
        g.allocations[0].token.0 += 1;
        let refused = g.build().unwrap_err().to_string();
        expect_test::expect![[r#"the genesis holds 85070591730234615865843551857942.052865 TWY and the emission may mint up to 100000000 TWY more (emission.cap_twy): together above the supply bound of 85070591730234615865843651857942.052864 TWY; allocate less or lower the cap"#]]
            .assert_eq(&refused);
        // Above the bound on the allocations alone, too.
        g.allocations[0].token = MAX_TOKEN_SUPPLY;
        assert!(matches!(g.build(), Err(GenesisError::SupplyAboveBound { .. })));
    }

    #[test]
    fn duplicates_and_bad_chain_ids_are_refused() {
        assert!(matches!(genesis(&["a", "b", "a"]).build(), Err(GenesisError::DuplicateAllocation(_))));
        assert!(matches!(genesis(&["gw", "gw"]).build(), Err(GenesisError::DuplicateAllocation(_))));
        let mut g = genesis(&[]);
        g.chain_id = String::new();
        assert_eq!(g.build().unwrap_err(), GenesisError::BadChainId);
    }
}
