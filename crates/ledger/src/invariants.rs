//! The supply invariant (DESIGN §2), checked after every block and every
//! simulated epoch: for each currency, the total equals genesis + minted −
//! burned (or + deposited − withdrawn), and the sum of every place money
//! can sit equals that total.

use crate::state::State;
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

impl Holdings {
    pub fn of(state: &State) -> Holdings {
        let mut h = Holdings {
            token_balances: Token::ZERO,
            token_staked: Token::ZERO,
            token_unbonding: Token::ZERO,
            token_vesting: Token::ZERO,
            token_pool: state.pool.token,
            usd_balances: Usd::ZERO,
            usd_escrow: Usd::ZERO,
            usd_pool: state.pool.usd,
            usd_burn_queue: state.burn_queue_usd,
        };
        for a in &state.accounts {
            h.token_balances.0 += a.token.0;
            h.token_staked.0 += a.staked.0;
            h.token_unbonding.0 += a.unbonding_total().0;
            // The stored total, which every vesting change keeps equal to
            // the tranches' sum: walking all ~31 tranches of every account
            // after every epoch was a tenth of a simulated epoch. The
            // property tests check the two agree after every step, and so
            // does every debug build here.
            debug_assert!(a.vesting_cache_is_consistent(), "vesting total out of step with the tranches");
            h.token_vesting.0 += a.vesting_total().0;
            h.usd_balances.0 += a.usd.0;
        }
        for c in state.channels.values() {
            h.usd_escrow.0 += c.escrow.0 - c.paid.0;
        }
        h
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
    let h = Holdings::of(state);
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
