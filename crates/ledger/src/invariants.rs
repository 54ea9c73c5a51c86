//! The supply invariant (DESIGN §2), checked after every block and every
//! simulated epoch: for each currency, the total equals genesis + minted −
//! burned (or + deposited − withdrawn), and the sum of every place money
//! can sit equals that total.

use crate::state::{Account, State};
use tollway_types::{Token, Usd};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdings {
    pub token_balances: Token,
    pub token_staked: Token,
    pub token_unbonding: Token,
    pub token_vesting: Token,
    pub token_pool: Token,
    pub usd_balances: Usd,
    pub usd_escrow: Usd,
    pub usd_pool: Usd,
    pub usd_burn_queue: Usd,
}

/// What the supply check sums over the accounts. Exact integer sums, so
/// the sums of the parts of a split add up to the sum of the whole: a
/// caller may compute them in parallel ([`check_supply_with`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AccountSums {
    token: u128,
    staked: u128,
    unbonding: u128,
    vesting: u128,
    usd: u128,
}

impl AccountSums {
    pub fn of(accounts: &[Account]) -> AccountSums {
        let mut s = AccountSums::default();
        for a in accounts {
            s.token += a.token.0;
            s.staked += a.staked.0;
            s.unbonding += a.unbonding_total().0;
            // The stored total, which every vesting change keeps equal to
            // the tranches' sum: walking all ~31 tranches of every account
            // after every epoch was a tenth of a simulated epoch. The
            // property tests check the two agree after every step, and so
            // does every debug build here.
            debug_assert!(a.vesting_cache_is_consistent(), "vesting total out of step with the tranches");
            s.vesting += a.vesting_total().0;
            s.usd += a.usd.0;
        }
        s
    }
}

/// The sums over both parts.
impl std::ops::Add for AccountSums {
    type Output = AccountSums;
    fn add(self, other: AccountSums) -> AccountSums {
        AccountSums {
            token: self.token + other.token,
            staked: self.staked + other.staked,
            unbonding: self.unbonding + other.unbonding,
            vesting: self.vesting + other.vesting,
            usd: self.usd + other.usd,
        }
    }
}

impl Holdings {
    pub fn of(state: &State) -> Holdings {
        Holdings::with_accounts(state, AccountSums::of(&state.accounts))
    }

    fn with_accounts(state: &State, sums: AccountSums) -> Holdings {
        let mut usd_escrow = Usd::ZERO;
        for c in state.channels.values() {
            usd_escrow.0 += c.escrow.0 - c.paid.0;
        }
        Holdings {
            token_balances: Token(sums.token),
            token_staked: Token(sums.staked),
            token_unbonding: Token(sums.unbonding),
            token_vesting: Token(sums.vesting),
            token_pool: state.pool.token,
            usd_balances: Usd(sums.usd),
            usd_escrow,
            usd_pool: state.pool.usd,
            usd_burn_queue: state.burn_queue_usd,
        }
    }

    pub fn token_total(&self) -> Token {
        Token(
            self.token_balances.0 + self.token_staked.0 + self.token_unbonding.0 + self.token_vesting.0 + self.token_pool.0,
        )
    }

    pub fn usd_total(&self) -> Usd {
        Usd(self.usd_balances.0 + self.usd_escrow.0 + self.usd_pool.0 + self.usd_burn_queue.0)
    }
}

/// `Ok` with the holdings it summed if both currencies balance; otherwise
/// a message with the figures. (The holdings spare a caller that wants
/// one of those sums, such as the simulator's circulating supply, a pass
/// of its own over every account.)
pub fn check_supply(state: &State) -> Result<Holdings, String> {
    check_supply_with(state, AccountSums::of(&state.accounts))
}

/// [`check_supply`] with the sums over `state.accounts` computed by the
/// caller (the simulator splits them over threads). Debug builds check
/// them against a pass of their own.
pub fn check_supply_with(state: &State, sums: AccountSums) -> Result<Holdings, String> {
    debug_assert_eq!(sums, AccountSums::of(&state.accounts), "the account sums given are not the accounts' sums");
    let h = Holdings::with_accounts(state, sums);
    let s = &state.supply;
    if h.token_total() != s.total_token() {
        return Err(format!(
            "token supply broken: holdings {} != genesis {} + minted {} - burned {} = {} ({h:?})",
            h.token_total(),
            s.genesis_token,
            s.minted_token,
            s.burned_token,
            s.total_token()
        ));
    }
    if h.usd_total() != s.total_usd() {
        return Err(format!(
            "USD supply broken: holdings {} != genesis {} + deposited {} - withdrawn {} = {} ({h:?})",
            h.usd_total(),
            s.genesis_usd,
            s.deposited_usd,
            s.withdrawn_usd,
            s.total_usd()
        ));
    }
    for c in state.channels.values() {
        if c.paid > c.escrow {
            return Err(format!("channel paid {} above its escrow {}", c.paid, c.escrow));
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{fund, World};
    use crate::Params;

    /// Sums of any split of the accounts add up to the sums of all of them,
    /// so `check_supply_with` on split sums is `check_supply`; a supply
    /// that does not balance is caught either way.
    #[test]
    fn split_account_sums_give_the_same_check() {
        let accounts: Vec<_> = (0..40).map(|i| fund(&format!("a{i}"), 10 + i, 3 * i, 1_000 + i)).collect();
        let mut w = World::new(Params::default_params(), 1_000, 1_000, accounts);
        w.end_epoch();
        let all = &w.state.accounts;
        for cut in [0, 1, 17, all.len() - 1, all.len()] {
            let (a, b) = all.split_at(cut);
            let sums = AccountSums::of(a) + AccountSums::of(b);
            assert_eq!(sums, AccountSums::of(all));
            assert_eq!(check_supply_with(&w.state, sums), check_supply(&w.state));
        }
        assert!(check_supply(&w.state).is_ok());
        w.state.accounts[3].token.0 += 1;
        assert!(check_supply_with(&w.state, AccountSums::of(&w.state.accounts)).is_err());
    }
}
