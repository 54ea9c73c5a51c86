//! Linear vesting of rewards (DESIGN §2 step 5). Rewards earned within one
//! bucket (a thirtieth of the vesting period) join one tranche, so an
//! account holds about 31 tranches whatever the epoch length; a reward that
//! joins a tranche late vests at most one bucket early, which is the price
//! of O(1) work per reward.

use crate::state::{Account, InlineTranches, NarrowTranche, SmallTranche, Tranche, TrancheTier, Tranches};
use std::collections::VecDeque;
use tollway_types::{math::mul_div_floor, Token};

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

impl Slot for SmallTranche {
    fn start_secs(&self) -> u64 {
        self.start_secs as u64
    }
    fn amount(&self) -> u128 {
        self.amount as u128
    }
    fn released(&self) -> u128 {
        self.released as u128
    }
    fn set_amount(&mut self, v: u128) {
        debug_assert!(v <= u32::MAX as u128);
        self.amount = v as u32;
    }
    fn set_released(&mut self, v: u128) {
        debug_assert!(v <= u32::MAX as u128);
        self.released = v as u32;
    }
    fn fresh(start_secs: u64, amount: u128) -> SmallTranche {
        debug_assert!(start_secs <= u32::MAX as u64 && amount <= u32::MAX as u128);
        SmallTranche { start_secs: start_secs as u32, amount: amount as u32, released: 0 }
    }
}

/// The vesting period, as a divisor: the same for every tranche of a
/// release, so its reciprocal is worked out once and each tranche's share
/// is a multiply and one correction instead of a hardware divide (most of
/// a claim's time, for an account's 31 tranches).
#[derive(Clone, Copy)]
struct Period {
    secs: u64,
    /// ⌊(2^64 − 1) / secs⌋; 0 for a period of 0 (everything vested).
    reciprocal: u64,
}

impl Period {
    fn new(secs: u64) -> Period {
        Period { secs, reciprocal: u64::MAX.checked_div(secs).unwrap_or(0) }
    }

    /// ⌊n / secs⌋ for `secs` ≥ 1, exactly. With m the reciprocal,
    /// n·m/2^64 lies in (n/secs − 1, n/secs], so the estimate is the
    /// quotient or one less, and the remainder tells which.
    fn div(self, n: u64) -> u64 {
        let q = ((n as u128 * self.reciprocal as u128) >> 64) as u64;
        // q·secs ≤ n: no overflow, no underflow.
        if n - q * self.secs >= self.secs {
            q + 1
        } else {
            q
        }
    }
}

/// Base units of a tranche vested at `now_secs`: its amount's straight
/// line, rounded down, but never less than what it has released. A slash
/// lowers a tranche's amount (by its unreleased part), and the lower
/// line can pass under what was released before; the tranche then
/// releases nothing more until the line is above it again. (Without the
/// floor, a release after such a slash took `released` from less than it:
/// in a release build the difference wrapped back from the balance into
/// the vesting, and a balance smaller than it wrapped to nearly 2^128.)
fn vested<T: Slot>(t: &T, now_secs: u64, period: Period) -> u128 {
    vested_on_line(t, now_secs, period).max(t.released())
}

/// Base units of a tranche's amount vested at `now_secs` on its straight
/// line, rounded down.
fn vested_on_line<T: Slot>(t: &T, now_secs: u64, period: Period) -> u128 {
    if period.secs == 0 {
        return t.amount();
    }
    let elapsed = now_secs.saturating_sub(t.start_secs());
    if elapsed >= period.secs {
        return t.amount(); // amount × v / v, exactly
    }
    let amount = t.amount();
    if amount >> 64 == 0 {
        let product = amount * elapsed as u128; // both below 2^64: cannot overflow
        if product >> 64 == 0 {
            return period.div(product as u64) as u128;
        }
    }
    mul_div_floor(amount, elapsed as u128, period.secs as u128)
}

/// A stored list of tranches, oldest first, inline or on the heap: the
/// rules below are written once for both.
trait List<T: Slot> {
    /// The tranches, oldest first, in two parts (a deque's halves).
    fn halves(&self) -> (&[T], &[T]);
    fn halves_mut(&mut self) -> (&mut [T], &mut [T]);
    fn pop_front(&mut self);
    fn push_back(&mut self, t: T);
    /// Drops the tranches released in full.
    fn drop_finished(&mut self);
}

impl<T: Slot> List<T> for VecDeque<T> {
    fn halves(&self) -> (&[T], &[T]) {
        self.as_slices()
    }
    fn halves_mut(&mut self) -> (&mut [T], &mut [T]) {
        self.as_mut_slices()
    }
    fn pop_front(&mut self) {
        VecDeque::pop_front(self);
    }
    fn push_back(&mut self, t: T) {
        VecDeque::push_back(self, t);
    }
    fn drop_finished(&mut self) {
        self.retain(|t| t.released() < t.amount());
    }
}

impl List<SmallTranche> for InlineTranches {
    fn halves(&self) -> (&[SmallTranche], &[SmallTranche]) {
        InlineTranches::halves(self)
    }
    fn halves_mut(&mut self) -> (&mut [SmallTranche], &mut [SmallTranche]) {
        InlineTranches::halves_mut(self)
    }
    fn pop_front(&mut self) {
        InlineTranches::pop_front(self);
    }
    fn push_back(&mut self, t: SmallTranche) {
        InlineTranches::push_back(self, t);
    }
    fn drop_finished(&mut self) {
        self.retain(|t| t.released() < t.amount());
    }
}

fn releasable_in<T: Slot>(d: &impl List<T>, now_secs: u64, vesting_secs: u64) -> u128 {
    let (a, b) = d.halves();
    let period = Period::new(vesting_secs);
    a.iter().chain(b).map(|t| vested(t, now_secs, period) - t.released()).sum()
}

fn release_in<T: Slot>(d: &mut impl List<T>, now_secs: u64, vesting_secs: u64) -> u128 {
    let mut total = 0u128;
    let period = Period::new(vesting_secs);
    // Each half in a loop of its own: a chained iterator checks which half
    // it is in at every tranche.
    let (a, b) = d.halves_mut();
    for half in [a, b] {
        for t in half.iter_mut() {
            let v = vested(t, now_secs, period);
            total += v - t.released();
            t.set_released(v);
        }
    }
    d.drop_finished();
    total
}

/// Returns what a fully vested front tranche released on the way.
fn add_in<T: Slot>(d: &mut impl List<T>, amount: u128, now_secs: u64, vesting_secs: u64) -> u128 {
    let bucket_secs = (vesting_secs / BUCKETS_PER_PERIOD).max(1);
    let (a, b) = d.halves_mut();
    match b.last_mut().or(a.last_mut()) {
        Some(last) if now_secs < last.start_secs().saturating_add(bucket_secs) => {
            last.set_amount(last.amount() + amount);
            0
        }
        _ => {
            // Keep the list short: a fully vested front tranche is released
            // before a new one is pushed (O(1): only that tranche).
            let mut rest = 0;
            let (a, b) = d.halves();
            if let Some(front) = a.first().or(b.first()) {
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

fn slash_in<T: Slot>(d: &mut impl List<T>, amount: u128) -> u128 {
    let mut left = amount;
    let (a, b) = d.halves_mut();
    for t in a.iter_mut().chain(b.iter_mut()).rev() {
        let take = (t.amount() - t.released()).min(left);
        t.set_amount(t.amount() - take);
        left -= take;
        if left == 0 {
            break;
        }
    }
    d.drop_finished();
    amount - left
}

/// Tokens vested but not yet released.
pub fn releasable(acct: &Account, now_secs: u64, vesting_secs: u64) -> Token {
    Token(match &acct.vesting {
        Tranches::Small(d) => releasable_in(d, now_secs, vesting_secs),
        Tranches::Narrow(d) => releasable_in(d, now_secs, vesting_secs),
        Tranches::Wide(d) => releasable_in(d, now_secs, vesting_secs),
    })
}

/// When nothing has vested by `now_secs` (a claim is refused), the chain
/// time from which a claim releases something: the soonest a tranche's
/// line passes what it released. `None` when something has vested, or
/// nothing vests. (A wallet told "nothing vested yet" could not tell
/// when to try again.)
pub fn first_release_secs(acct: &Account, now_secs: u64, vesting_secs: u64) -> Option<u64> {
    if !releasable(acct, now_secs, vesting_secs).is_zero() {
        return None;
    }
    acct.tranches()
        .filter(|t| t.released < t.amount)
        .map(|t| {
            // The least elapsed e with ⌊amount·e / period⌋ > released:
            // amount·e ≥ (released + 1)·period. released + 1 ≤ amount, so
            // e ≤ period, which fits.
            let (amount, next) = (t.amount.0, t.released.0 + 1);
            let period = u128::from(vesting_secs);
            let floor = mul_div_floor(next, period, amount);
            let elapsed = if mul_div_floor(amount, floor, period.max(1)) >= next { floor } else { floor + 1 };
            t.start_secs.saturating_add(u64::try_from(elapsed.min(period)).unwrap_or(vesting_secs))
        })
        .min()
}

/// Releases everything vested to the balance; drops finished tranches.
pub fn release(acct: &mut Account, now_secs: u64, vesting_secs: u64) -> Token {
    let total = match &mut acct.vesting {
        Tranches::Small(d) => release_in(d, now_secs, vesting_secs),
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
    // The storage holds the result only if the reward, added to the newest
    // tranche, fits its tier (and, for the smallest, so does the start).
    let newest = match &acct.vesting {
        Tranches::Small(d) => d.back().map_or(0, |t| t.amount as u128),
        Tranches::Narrow(d) => d.back().map_or(0, |t| t.amount as u128),
        Tranches::Wide(_) => 0, // holds anything
    };
    acct.vesting.widen_to(TrancheTier::holding(now_secs, newest.saturating_add(amount.0)));
    // A full inline list moves to the heap before it could need a slot.
    if matches!(&acct.vesting, Tranches::Small(d) if d.is_full()) {
        acct.vesting.widen_to(TrancheTier::Narrow);
    }
    let rest = match &mut acct.vesting {
        Tranches::Small(d) => add_in(d, amount.0, now_secs, vesting_secs),
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
        Tranches::Small(d) => slash_in(d, amount.0),
        Tranches::Narrow(d) => slash_in(d, amount.0),
        Tranches::Wide(d) => slash_in(d, amount.0),
    };
    acct.vesting_unreleased.0 -= taken;
    Token(taken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollway_types::{codec, PublicKey};

    const DAY: u64 = 86_400;
    const PERIOD: u64 = 30 * DAY;

    proptest::proptest! {
        #[test]
        fn dividing_by_the_period_is_exact(n: u64, secs in 1u64.., small_secs in 1u64..100_000_000) {
            for d in [secs, small_secs, 1, 2, 3, PERIOD, u64::MAX, u64::MAX - 1, 1 << 63] {
                let period = Period::new(d);
                for x in [n, n % d, d - 1, d, d.saturating_add(1), u64::MAX, 0, n / d * d, (n / d * d).saturating_sub(1)] {
                    proptest::prop_assert_eq!(period.div(x), x / d, "{} / {}", x, d);
                }
            }
        }
    }

    /// One history of rewards, claims and a slash, with amounts that pass
    /// 64 bits part-way.
    fn history(acct: &mut Account) -> Vec<Token> {
        let mut out = Vec::new();
        add_reward(acct, Token(u64::MAX as u128 - 5), 0, PERIOD);
        add_reward(acct, Token(3), DAY / 2, PERIOD);
        out.push(release(acct, 3 * DAY, PERIOD));
        add_reward(acct, Token(10), 3 * DAY, PERIOD); // the newest passes 64 bits
        add_reward(acct, Token(7), 4 * DAY, PERIOD);
        out.push(slash_unvested(acct, Token(1_000)));
        out.push(releasable(acct, 20 * DAY, PERIOD));
        add_reward(acct, Token(9), 31 * DAY, PERIOD); // pops the vested front
        out.push(release(acct, 40 * DAY, PERIOD));
        out
    }

    /// A claim with nothing vested was refused with no word of when it
    /// would not be: the first release is the soonest a tranche's line
    /// passes a base unit more than it released.
    #[test]
    fn the_first_release_is_when_a_tranches_line_first_passes_what_it_released() {
        let mut acct = Account::new(PublicKey([3; 32]));
        assert_eq!(first_release_secs(&acct, 0, PERIOD), None, "nothing vests");
        // 3 base units over 30 days: one vests each 10 days.
        add_reward(&mut acct, Token(3), 1_000, PERIOD);
        assert_eq!(first_release_secs(&acct, 1_000, PERIOD), Some(1_000 + 10 * DAY));
        assert_eq!(releasable(&acct, 1_000 + 10 * DAY - 1, PERIOD), Token::ZERO);
        assert_eq!(releasable(&acct, 1_000 + 10 * DAY, PERIOD), Token(1));
        assert_eq!(first_release_secs(&acct, 1_000 + 10 * DAY, PERIOD), None, "one is vested");
        assert_eq!(release(&mut acct, 1_000 + 10 * DAY, PERIOD), Token(1));
        assert_eq!(first_release_secs(&acct, 1_000 + 10 * DAY, PERIOD), Some(1_000 + 20 * DAY));
        // 7 units over 30 days: the first at ⌈30/7⌉ days' seconds.
        let mut odd = Account::new(PublicKey([4; 32]));
        add_reward(&mut odd, Token(7), 0, PERIOD);
        let first = first_release_secs(&odd, 0, PERIOD).unwrap_or(0);
        assert_eq!(first, PERIOD.div_ceil(7));
        assert_eq!((releasable(&odd, first - 1, PERIOD), releasable(&odd, first, PERIOD)), (Token::ZERO, Token(1)));
        // The soonest of two tranches.
        add_reward(&mut odd, Token(1_000_000), PERIOD / 2, PERIOD);
        assert_eq!(first_release_secs(&odd, 0, PERIOD), Some(PERIOD.div_ceil(7)));
        assert_eq!(first_release_secs(&odd, PERIOD / 2, PERIOD), None, "the first is vested");
    }

    #[test]
    fn tranches_move_up_a_tier_when_a_value_would_not_fit_and_match_wide_storage_in_value_and_encoding() {
        let mut narrow = Account::new(PublicKey([1; 32]));
        let mut wide = Account::new(PublicKey([1; 32]));
        wide.vesting.widen();
        assert!(matches!(narrow.vesting, Tranches::Small(_)));
        let (a, b) = (history(&mut narrow), history(&mut wide));
        assert!(matches!(narrow.vesting, Tranches::Wide(_)), "the reward past 64 bits widens");
        assert_eq!(a, b);
        assert_eq!(narrow, wide);
        assert!(narrow.vesting_cache_is_consistent());
        assert_eq!(codec::encode(&narrow), codec::encode(&wide));

        // Rewards that fit stay in their tier: 32 bits (small), past 32 bits
        // in amount or start (narrow). Every storage encodes and decodes to
        // the same account, in the smallest tier that holds it.
        type Case = (u128, u64, fn(&Tranches) -> bool);
        let cases: [Case; 3] = [
            (1_000_000, 0, |t| matches!(t, Tranches::Small(_))),
            (u32::MAX as u128 - 20, 0, |t| matches!(t, Tranches::Narrow(_))), // joins pass 32 bits
            (1_000_000, u32::MAX as u64, |t| matches!(t, Tranches::Narrow(_))), // starts pass 32 bits
        ];
        for (i, (base, t0, tier_ok)) in cases.into_iter().enumerate() {
            let mut acct = Account::new(PublicKey([2; 32]));
            let mut acct_wide = Account::new(PublicKey([2; 32]));
            acct_wide.vesting.widen();
            for day in 0..40u64 {
                // Two rewards every fifth day, half a day apart: the second
                // joins the first's tranche, and at most 7 tranches are
                // unreleased at a time, so the smallest tier stays inline.
                for half in (0..2).filter(|_| day % 5 == 0) {
                    let now = t0 + day * DAY + half * DAY / 2;
                    add_reward(&mut acct, Token(base + day as u128), now, PERIOD);
                    add_reward(&mut acct_wide, Token(base + day as u128), now, PERIOD);
                }
                if day % 7 == 3 {
                    assert_eq!(release(&mut acct, t0 + day * DAY, PERIOD), release(&mut acct_wide, t0 + day * DAY, PERIOD));
                }
                if day == 20 {
                    assert_eq!(slash_unvested(&mut acct, Token(base)), slash_unvested(&mut acct_wide, Token(base)));
                }
            }
            assert!(tier_ok(&acct.vesting), "case {i}: {:?}", acct.vesting.tier());
            assert_eq!(acct, acct_wide, "case {i}");
            assert!(acct.vesting_cache_is_consistent());
            assert_eq!(acct.vesting_in_tranches(), acct_wide.vesting_in_tranches());
            let bytes = codec::encode(&acct_wide);
            assert_eq!(bytes, codec::encode(&acct));
            let back: Account = codec::decode(&bytes, 1 << 20).unwrap_or_else(|e| panic!("{e}"));
            assert!(tier_ok(&back.vesting), "case {i}: decoded into {:?}", back.vesting.tier());
            assert_eq!(back, acct);
        }
    }

    /// A reward half released, then slashed by two thirds of its
    /// unreleased half: its line is now two thirds as steep, and below
    /// what it released until the period ends. A release meanwhile
    /// releases nothing (it underflowed); at the end, the rest.
    #[test]
    fn a_release_after_a_slash_releases_nothing_its_line_has_not_passed() {
        let mut acct = Account::new(PublicKey([5; 32]));
        add_reward(&mut acct, Token(3_000), 0, PERIOD);
        assert_eq!(release(&mut acct, PERIOD / 2, PERIOD), Token(1_500));
        assert_eq!(slash_unvested(&mut acct, Token(1_000)), Token(1_000));
        // The line: 2,000 × 2/3 = 1,333, under the 1,500 released.
        assert_eq!(releasable(&acct, PERIOD * 2 / 3, PERIOD), Token::ZERO);
        assert_eq!(release(&mut acct, PERIOD * 2 / 3, PERIOD), Token::ZERO);
        assert_eq!(acct.token, Token(1_500));
        assert!(acct.vesting_cache_is_consistent());
        assert_eq!(release(&mut acct, PERIOD, PERIOD), Token(500));
        assert_eq!(acct.token, Token(2_000));
        assert_eq!(acct.vesting.len(), 0, "a tranche released in full is dropped");
    }

    proptest::proptest! {
        /// Whatever the rewards, gaps, releases and slashes, the inline
        /// tier holds what wide storage holds, after every step and in its
        /// encoding, and nothing is minted on the way.
        #[test]
        fn inline_tranches_match_wide_storage_through_any_history(
            steps in proptest::collection::vec((0u64..3 * DAY, 0u8..10, 1u32..1_000_000), 1..200)
        ) {
            let mut inline = Account::new(PublicKey([4; 32]));
            let mut wide = Account::new(PublicKey([4; 32]));
            wide.vesting.widen();
            let (mut now, mut rewarded, mut slashed) = (0, 0u128, 0u128);
            // The inline tier moves to the heap for good when a reward
            // finds it full (up to 31 tranches over a period).
            let mut found_full = false;
            for (gap, op, amount) in steps {
                now += gap;
                let amount = Token(amount as u128);
                match op {
                    0 => proptest::prop_assert_eq!(release(&mut inline, now, PERIOD), release(&mut wide, now, PERIOD)),
                    1 => {
                        let taken = slash_unvested(&mut inline, amount);
                        proptest::prop_assert_eq!(taken, slash_unvested(&mut wide, amount));
                        slashed += taken.0;
                    }
                    _ => {
                        found_full |= wide.vesting.len() == crate::state::INLINE_TRANCHES;
                        add_reward(&mut inline, amount, now, PERIOD);
                        add_reward(&mut wide, amount, now, PERIOD);
                        rewarded += amount.0;
                    }
                }
                proptest::prop_assert_eq!(matches!(inline.vesting, Tranches::Small(_)), !found_full);
                proptest::prop_assert_eq!(&inline, &wide);
                proptest::prop_assert!(inline.vesting_cache_is_consistent());
                proptest::prop_assert_eq!(inline.token.0 + inline.vesting_unreleased.0 + slashed, rewarded);
            }
            proptest::prop_assert_eq!(codec::encode(&inline), codec::encode(&wide));
        }
    }

    /// Daily rewards over the default week of vesting (the simulator's
    /// epochs) keep at most 7 tranches, so the account's stay inline
    /// (`INLINE_TRANCHES`), whether a release comes between them or not.
    #[test]
    fn daily_rewards_over_a_week_of_vesting_stay_inline() {
        const WEEK: u64 = 7 * DAY;
        let mut acct = Account::new(PublicKey([6; 32]));
        for day in 1..=120u64 {
            add_reward(&mut acct, Token(1_000_000 + day as u128), day * DAY, WEEK);
            assert!(acct.vesting.len() <= 7, "day {day}: {} tranches", acct.vesting.len());
            if day % 7 == 3 {
                release(&mut acct, day * DAY, WEEK);
            }
        }
        assert!(matches!(acct.vesting, Tranches::Small(_)), "{:?}", acct.vesting.tier());
        assert!(acct.vesting_cache_is_consistent());
    }

    /// A vesting period of 59 s has 1 s buckets, so rewards every second
    /// keep 59 tranches: more than fit inline. The account moves to the
    /// heap tier and stays equal, in value and encoding, to wide storage.
    #[test]
    fn more_tranches_than_fit_inline_move_to_the_heap_with_the_same_values() {
        const SHORT: u64 = 59;
        let mut acct = Account::new(PublicKey([3; 32]));
        let mut acct_wide = Account::new(PublicKey([3; 32]));
        acct_wide.vesting.widen();
        for now in 0..200u64 {
            add_reward(&mut acct, Token(1_000 + now as u128), now, SHORT);
            add_reward(&mut acct_wide, Token(1_000 + now as u128), now, SHORT);
            if now == 6 {
                assert!(matches!(acct.vesting, Tranches::Small(_)), "7 tranches fit inline");
            }
            if now % 37 == 5 {
                assert_eq!(release(&mut acct, now, SHORT), release(&mut acct_wide, now, SHORT));
            }
            if now == 150 {
                assert_eq!(slash_unvested(&mut acct, Token(5_000)), slash_unvested(&mut acct_wide, Token(5_000)));
            }
        }
        assert!(matches!(acct.vesting, Tranches::Narrow(_)), "{:?}", acct.vesting.tier());
        assert!(acct.vesting.len() > crate::state::INLINE_TRANCHES);
        assert_eq!(acct, acct_wide);
        assert!(acct.vesting_cache_is_consistent());
        let bytes = codec::encode(&acct);
        assert_eq!(bytes, codec::encode(&acct_wide));
        let back: Account = codec::decode(&bytes, 1 << 20).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(back.vesting, Tranches::Narrow(_)));
        assert_eq!(back, acct);
    }
}
