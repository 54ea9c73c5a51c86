//! Linear vesting of rewards (DESIGN §2 step 5). Rewards earned within one
//! bucket (a thirtieth of the vesting period) join one tranche, so an
//! account holds about 31 tranches whatever the epoch length; a reward that
//! joins a tranche late vests at most one bucket early, which is the price
//! of O(1) work per reward.

use super::mul_div_floor_fast;
use crate::state::{Account, NarrowTranche, Tranche, Tranches};
use std::collections::VecDeque;
use tollway_types::Token;

/// Tranches per vesting period.
const BUCKETS_PER_PERIOD: u64 = 30;

/// A stored tranche, narrow or wide: the rules below are written once.
/// Setters are only given values that fit (`add_reward` widens first).
trait Slot {
    fn start_secs(&self) -> u64;
    fn amount(&self) -> u128;
    fn released(&self) -> u128;
    fn set_amount(&mut self, v: u128);
    fn set_released(&mut self, v: u128);
    fn fresh(start_secs: u64, amount: u128) -> Self;
}

impl Slot for Tranche {
    fn start_secs(&self) -> u64 {
        self.start_secs
    }
    fn amount(&self) -> u128 {
        self.amount.0
    }
    fn released(&self) -> u128 {
        self.released.0
    }
    fn set_amount(&mut self, v: u128) {
        self.amount = Token(v);
    }
    fn set_released(&mut self, v: u128) {
        self.released = Token(v);
    }
    fn fresh(start_secs: u64, amount: u128) -> Tranche {
        Tranche { start_secs, amount: Token(amount), released: Token::ZERO }
    }
}

impl Slot for NarrowTranche {
    fn start_secs(&self) -> u64 {
        self.start_secs
    }
    fn amount(&self) -> u128 {
        self.amount as u128
    }
    fn released(&self) -> u128 {
        self.released as u128
    }
    fn set_amount(&mut self, v: u128) {
        debug_assert!(v <= u64::MAX as u128);
        self.amount = v as u64;
    }
    fn set_released(&mut self, v: u128) {
        debug_assert!(v <= u64::MAX as u128);
        self.released = v as u64;
    }
    fn fresh(start_secs: u64, amount: u128) -> NarrowTranche {
        debug_assert!(amount <= u64::MAX as u128);
        NarrowTranche { start_secs, amount: amount as u64, released: 0 }
    }
}

/// Base units of a tranche vested at `now_secs`, rounded down.
fn vested<T: Slot>(t: &T, now_secs: u64, vesting_secs: u64) -> u128 {
    if vesting_secs == 0 {
        return t.amount();
    }
    let elapsed = now_secs.saturating_sub(t.start_secs());
    if elapsed >= vesting_secs {
        return t.amount(); // amount × v / v, exactly
    }
    mul_div_floor_fast(t.amount(), elapsed as u128, vesting_secs as u128)
}

fn releasable_in<T: Slot>(d: &VecDeque<T>, now_secs: u64, vesting_secs: u64) -> u128 {
    d.iter().map(|t| vested(t, now_secs, vesting_secs) - t.released()).sum()
}

fn release_in<T: Slot>(d: &mut VecDeque<T>, now_secs: u64, vesting_secs: u64) -> u128 {
    let mut total = 0u128;
    for t in d.iter_mut() {
        let v = vested(t, now_secs, vesting_secs);
        total += v - t.released();
        t.set_released(v);
    }
    d.retain(|t| t.released() < t.amount());
    total
}

/// Returns what a fully vested front tranche released on the way.
fn add_in<T: Slot>(d: &mut VecDeque<T>, amount: u128, now_secs: u64, vesting_secs: u64) -> u128 {
    let bucket_secs = (vesting_secs / BUCKETS_PER_PERIOD).max(1);
    match d.back_mut() {
        Some(last) if now_secs < last.start_secs().saturating_add(bucket_secs) => {
            last.set_amount(last.amount() + amount);
            0
        }
        _ => {
            // Keep the list short: a fully vested front tranche is released
            // before a new one is pushed (O(1): only that tranche).
            let mut rest = 0;
            if let Some(front) = d.front() {
                if now_secs >= front.start_secs().saturating_add(vesting_secs) {
                    rest = front.amount() - front.released();
                    d.pop_front();
                }
            }
            d.push_back(T::fresh(now_secs, amount));
            rest
        }
    }
}

fn slash_in<T: Slot>(d: &mut VecDeque<T>, amount: u128) -> u128 {
    let mut left = amount;
    for t in d.iter_mut().rev() {
        let take = (t.amount() - t.released()).min(left);
        t.set_amount(t.amount() - take);
        left -= take;
        if left == 0 {
            break;
        }
    }
    d.retain(|t| t.released() < t.amount());
    amount - left
}

/// Tokens vested but not yet released.
pub fn releasable(acct: &Account, now_secs: u64, vesting_secs: u64) -> Token {
    Token(match &acct.vesting {
        Tranches::Narrow(d) => releasable_in(d, now_secs, vesting_secs),
        Tranches::Wide(d) => releasable_in(d, now_secs, vesting_secs),
    })
}

/// Releases everything vested to the balance; drops finished tranches.
pub fn release(acct: &mut Account, now_secs: u64, vesting_secs: u64) -> Token {
    let total = match &mut acct.vesting {
        Tranches::Narrow(d) => release_in(d, now_secs, vesting_secs),
        Tranches::Wide(d) => release_in(d, now_secs, vesting_secs),
    };
    acct.token.0 += total;
    acct.vesting_unreleased.0 -= total;
    Token(total)
}

/// Adds a reward that starts vesting at `now_secs`.
pub fn add_reward(acct: &mut Account, amount: Token, now_secs: u64, vesting_secs: u64) {
    if amount.is_zero() {
        return;
    }
    if vesting_secs == 0 {
        acct.token.0 += amount.0;
        return;
    }
    acct.vesting_unreleased.0 += amount.0;
    // The narrow storage holds the result only if the reward, added to the
    // newest tranche, fits in 64 bits.
    if let Tranches::Narrow(d) = &acct.vesting {
        let newest = d.back().map_or(0, |t| t.amount as u128);
        if newest.saturating_add(amount.0) > u64::MAX as u128 {
            acct.vesting.widen();
        }
    }
    let rest = match &mut acct.vesting {
        Tranches::Narrow(d) => add_in(d, amount.0, now_secs, vesting_secs),
        Tranches::Wide(d) => add_in(d, amount.0, now_secs, vesting_secs),
    };
    acct.token.0 += rest;
    acct.vesting_unreleased.0 -= rest;
}

/// Takes up to `amount` of unvested (not yet released) rewards, newest
/// first: unvested rewards stay slashable (after Filecoin).
pub fn slash_unvested(acct: &mut Account, amount: Token) -> Token {
    let taken = match &mut acct.vesting {
        Tranches::Narrow(d) => slash_in(d, amount.0),
        Tranches::Wide(d) => slash_in(d, amount.0),
    };
    acct.vesting_unreleased.0 -= taken;
    Token(taken)
}
