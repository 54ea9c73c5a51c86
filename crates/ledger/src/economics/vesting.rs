//! Linear vesting of rewards (DESIGN §2 step 5). Rewards earned within one
//! bucket (a thirtieth of the vesting period) join one tranche, so an
//! account holds about 31 tranches whatever the epoch length; a reward that
//! joins a tranche late vests at most one bucket early, which is the price
//! of O(1) work per reward.

use crate::state::{Account, Tranche};
use super::mul_div_floor_fast;
use tollway_types::Token;

/// Tranches per vesting period.
const BUCKETS_PER_PERIOD: u64 = 30;

/// Base units of `t` vested at `now_secs`, rounded down.
fn vested(t: &Tranche, now_secs: u64, vesting_secs: u64) -> Token {
    if vesting_secs == 0 {
        return t.amount;
    }
    let elapsed = now_secs.saturating_sub(t.start_secs);
    if elapsed >= vesting_secs {
        return t.amount; // amount × v / v, exactly
    }
    Token(mul_div_floor_fast(t.amount.0, elapsed as u128, vesting_secs as u128))
}

/// Tokens vested but not yet released.
pub fn releasable(acct: &Account, now_secs: u64, vesting_secs: u64) -> Token {
    acct.vesting.iter().map(|t| Token(vested(t, now_secs, vesting_secs).0 - t.released.0)).sum()
}

/// Releases everything vested to the balance; drops finished tranches.
pub fn release(acct: &mut Account, now_secs: u64, vesting_secs: u64) -> Token {
    let mut total = 0u128;
    for t in acct.vesting.iter_mut() {
        let v = vested(t, now_secs, vesting_secs);
        total += v.0 - t.released.0;
        t.released = v;
    }
    acct.vesting.retain(|t| t.released < t.amount);
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
    let bucket_secs = (vesting_secs / BUCKETS_PER_PERIOD).max(1);
    match acct.vesting.back_mut() {
        Some(last) if now_secs < last.start_secs.saturating_add(bucket_secs) => last.amount.0 += amount.0,
        _ => {
            // Keep the list short: a fully vested front tranche is released
            // before a new one is pushed (O(1): only that tranche).
            if let Some(front) = acct.vesting.front() {
                if now_secs >= front.start_secs.saturating_add(vesting_secs) {
                    let rest = front.amount.0 - front.released.0;
                    acct.token.0 += rest;
                    acct.vesting_unreleased.0 -= rest;
                    acct.vesting.pop_front();
                }
            }
            acct.vesting.push_back(Tranche { start_secs: now_secs, amount, released: Token::ZERO });
        }
    }
}

/// Takes up to `amount` of unvested (not yet released) rewards, newest
/// first: unvested rewards stay slashable (after Filecoin).
pub fn slash_unvested(acct: &mut Account, amount: Token) -> Token {
    let mut left = amount.0;
    for t in acct.vesting.iter_mut().rev() {
        let take = (t.amount.0 - t.released.0).min(left);
        t.amount.0 -= take;
        left -= take;
        if left == 0 {
            break;
        }
    }
    acct.vesting.retain(|t| t.released < t.amount);
    let taken = amount.0 - left;
    acct.vesting_unreleased.0 -= taken;
    Token(taken)
}
