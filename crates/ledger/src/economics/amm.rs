//! The protocol's token/USD constant-product pool (DESIGN §2): the price the
//! burn uses. Outputs round down and the fee stays in the pool, so the
//! product of the reserves never decreases.
//!
//! The pool also keeps the epoch's time-weighted average price, which
//! bounds what the epoch's burn pays (ADR 0018): the burn is known in
//! advance and trades at a known moment, so without a bound anyone could
//! buy just before it and sell to it.

use crate::state::Pool;
use tollway_types::{math::mul_div_floor, Amount, PPM, UNIT};

/// Output of selling `amount_in` into a pool holding `reserve_in` of the
/// sold currency and `reserve_out` of the bought one, after `fee_ppm`.
/// Always strictly less than `reserve_out`.
pub fn swap_output(reserve_in: u128, reserve_out: u128, amount_in: u128, fee_ppm: u32) -> u128 {
    let in_after_fee = mul_div_floor(amount_in, PPM - fee_ppm as u128, PPM);
    let denominator = reserve_in.saturating_add(in_after_fee);
    mul_div_floor(reserve_out, in_after_fee, denominator)
}

/// USD base units per whole token, rounded down (0 for an empty pool).
pub fn price_usd_micro_per_token(token_reserve: u128, usd_reserve: u128) -> u128 {
    mul_div_floor(usd_reserve, UNIT, token_reserve)
}

/// The burn's bound compares prices in USD base units per 10^18 token
/// base units ([`fine_price`]): micro-USD per token would round a price of
/// $0.0001 to 1 % and one of $0.000001 to nothing.
const FINE_PRICE_SCALE: u128 = 1_000_000_000_000_000_000;

/// The pool's price for the burn's bound (`FINE_PRICE_SCALE`).
fn fine_price(token_reserve: u128, usd_reserve: u128) -> u128 {
    mul_div_floor(usd_reserve, FINE_PRICE_SCALE, token_reserve)
}

impl crate::state::HeldBurn {
    /// The held queue's price bound in USD base units per whole token,
    /// rounded down, as [`price_usd_micro_per_token`] (0: nothing held).
    pub fn price_cap_usd_micro_per_token(&self) -> u128 {
        mul_div_floor(self.price_cap, UNIT, FINE_PRICE_SCALE)
    }
}

impl Pool {
    pub fn price_usd_micro_per_token(&self) -> u128 {
        price_usd_micro_per_token(self.token.0, self.usd.0)
    }

    /// Adds the price the pool has held since it last changed to the
    /// epoch's price-seconds; called before every change.
    fn observe(&mut self, now_secs: u64) {
        let held_secs = now_secs.saturating_sub(self.updated_secs);
        let price = fine_price(self.token.0, self.usd.0);
        self.epoch_price_seconds = self.epoch_price_seconds.saturating_add(price.saturating_mul(held_secs as u128));
        self.updated_secs = self.updated_secs.max(now_secs);
    }

    /// Sells `sell` into the pool at `now_secs`, after `fee_ppm`, and
    /// returns what it bought ([`swap_output`]). Below `min_out` (and below
    /// 1 always) the pool stays as it was and the output comes back as the
    /// error.
    pub(crate) fn swap(&mut self, now_secs: u64, sell: Amount, fee_ppm: u32, min_out: u128) -> Result<u128, u128> {
        let (reserve_in, reserve_out, amount_in) = match sell {
            Amount::Token(a) => (self.token.0, self.usd.0, a.0),
            Amount::Usd(a) => (self.usd.0, self.token.0, a.0),
        };
        let out = swap_output(reserve_in, reserve_out, amount_in, fee_ppm);
        if out < min_out.max(1) {
            return Err(out);
        }
        self.observe(now_secs);
        let (reserve_in, reserve_out) = match sell {
            Amount::Token(_) => (&mut self.token.0, &mut self.usd.0),
            Amount::Usd(_) => (&mut self.usd.0, &mut self.token.0),
        };
        *reserve_in += amount_in;
        *reserve_out -= out;
        Ok(out)
    }

    /// The time-weighted average price ([`fine_price`]) of the epoch that
    /// started at `epoch_start_secs` and ends at `now_secs` (the spot price
    /// if it took no time), and a fresh average for the next one.
    pub(crate) fn take_epoch_average(&mut self, now_secs: u64, epoch_start_secs: u64) -> u128 {
        self.observe(now_secs);
        let window_secs = now_secs.saturating_sub(epoch_start_secs) as u128;
        let average =
            self.epoch_price_seconds.checked_div(window_secs).unwrap_or_else(|| fine_price(self.token.0, self.usd.0));
        self.epoch_price_seconds = 0;
        average
    }
}

/// The pool's USD reserve were its price `price` ([`fine_price`]), its
/// product of reserves the same: what a trade just before barely moves
/// (the epoch's average sees it for the seconds it stood).
/// (At price p the USD reserve is √(k·p), and now it is √(k·spot).)
pub fn usd_reserve_at(pool: &Pool, price: u128) -> u128 {
    let spot = fine_price(pool.token.0, pool.usd.0);
    pool.usd.0.saturating_mul(mul_div_floor(pool.usd.0, price, spot)).isqrt()
}

/// The most USD, up to `max_in`, that buys from the pool without taking
/// its price ([`fine_price`]) above `price_cap`; 0 if the price is above
/// it already. The price after a purchase rises with its size, so a
/// binary search finds it exactly (about 60 steps, once an epoch, and
/// after each sale of tokens while a burn is held back).
pub fn most_usd_in_below(pool: &Pool, price_cap: u128, fee_ppm: u32, max_in: u128) -> u128 {
    let price_after = |usd_in: u128| {
        let out = swap_output(pool.usd.0, pool.token.0, usd_in, fee_ppm);
        fine_price(pool.token.0 - out, pool.usd.0.saturating_add(usd_in))
    };
    if price_after(0) > price_cap {
        return 0;
    }
    let (mut fits, mut too_much) = (0u128, max_in.saturating_add(1));
    while too_much - fits > 1 {
        let mid = fits + (too_much - fits) / 2;
        if price_after(mid) <= price_cap {
            fits = mid;
        } else {
            too_much = mid;
        }
    }
    fits
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tollway_types::{Token, Usd};

    fn pool(token: u128, usd: u128) -> Pool {
        Pool { token: Token(token), usd: Usd(usd), ..Pool::default() }
    }

    proptest! {
        /// The largest purchase under the cap: it stays under, and one base
        /// unit more would not (unless it is all there is to spend).
        #[test]
        fn most_usd_in_below_is_the_largest_under_the_cap(
            token in 1_000_000u128..1_000_000_000_000_000,
            usd in 1_000_000u128..1_000_000_000_000_000,
            premium_ppm in 0u128..200_000,
            max_in in 0u128..1_000_000_000_000_000,
        ) {
            let p = pool(token, usd);
            let cap = mul_div_floor(fine_price(token, usd), PPM + premium_ppm, PPM);
            let fee = 3_000;
            let usd_in = most_usd_in_below(&p, cap, fee, max_in);
            prop_assert!(usd_in <= max_in);
            let price = |x: u128| {
                let out = swap_output(usd, token, x, fee);
                fine_price(token - out, usd + x)
            };
            prop_assert!(price(usd_in) <= cap);
            if usd_in < max_in {
                prop_assert!(price(usd_in + 1) > cap);
            }
        }
    }

    /// The held burn's bound, read in micro-USD per token (the chain's
    /// API shows it so), is the pool's price at that bound, rounded as
    /// the pool's own.
    #[test]
    fn a_held_bound_reads_as_the_pools_price_at_it() {
        for (token, usd) in [(1_000 * UNIT, 1_000 * UNIT), (7 * UNIT, 3), (3 * UNIT, 10_000_000 * UNIT)] {
            let held = crate::state::HeldBurn { price_cap: fine_price(token, usd), ..Default::default() };
            assert_eq!(held.price_cap_usd_micro_per_token(), price_usd_micro_per_token(token, usd));
        }
        assert_eq!(crate::state::HeldBurn::default().price_cap_usd_micro_per_token(), 0);
    }

    #[test]
    fn the_epoch_average_weighs_each_price_by_how_long_it_held() {
        // $1 for 3,000 s, then $4 for 600 s.
        let mut p = pool(1_000 * UNIT, 1_000 * UNIT);
        p.updated_secs = 10_000;
        let before = fine_price(p.token.0, p.usd.0);
        assert!(p.swap(13_000, Amount::Usd(Usd(1_000 * UNIT)), 0, 0).is_ok());
        let after = fine_price(p.token.0, p.usd.0);
        assert_eq!(after, 4 * before);
        let average = p.take_epoch_average(13_600, 10_000);
        assert_eq!(average, (before * 3_000 + after * 600) / 3_600);
        // The next epoch starts afresh, at the price the pool holds.
        assert_eq!(p.take_epoch_average(14_000, 13_600), after);
        // An epoch that took no time has the spot price.
        assert_eq!(p.take_epoch_average(14_000, 14_000), after);
    }
}
