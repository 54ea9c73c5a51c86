//! Step 4 of the epoch: the emission schedule and its split into the
//! uptime, usage and oracle pools; step 5 (vesting) happens as each reward
//! is paid. Payouts round down; what is not paid (rounding, a pool with no
//! one to pay) is carried into the next epoch's emission, up to one epoch's
//! schedule; the rest is forgone, never minted:
//! `paid + carry_out + forgone == scheduled + carry_in` every epoch.
//!
//! The cap is there because an uncapped carry saves up the emission of
//! every epoch nobody earned in for whoever earns first: at launch, the
//! first nodes measured would take every hour of emission since genesis,
//! and after a network-wide outage the first node back would take the
//! outage's. Rewards pay for service in the epoch it was given.

use super::{ppm_of, vesting, EpochReport};
use crate::params::{Params, YEAR_SECS};
use crate::state::{Account, AccountIdx, Ctx, Node, State};
use crate::workers::{self, Workers};
use tollway_types::{math::mul_div_floor, MacroRegion, Token};

/// The emission scheduled for `epoch` by the schedule alone: year one's
/// emission spread over its epochs, halving every period.
pub fn schedule(p: &Params, epoch: u64) -> Token {
    let start_secs = epoch.saturating_mul(p.epoch_secs);
    let halvings = start_secs / p.halving_period_secs;
    if halvings >= 128 {
        return Token::ZERO;
    }
    let per_epoch = mul_div_floor(p.emission_year_one.0, p.epoch_secs as u128, YEAR_SECS as u128);
    Token(per_epoch >> halvings)
}

/// The uptime pool's share: slides linearly from start to end over the
/// transition, moving rewards from subsidy to usage.
pub fn uptime_share_ppm(p: &Params, epoch: u64) -> u128 {
    let t = epoch.saturating_mul(p.epoch_secs).min(p.uptime_transition_secs) as u128;
    let (start, end) = (p.uptime_share_start_ppm as u128, p.uptime_share_end_ppm as u128);
    let span = p.uptime_transition_secs as u128;
    if end >= start {
        start + mul_div_floor(end - start, t, span)
    } else {
        start - mul_div_floor(start - end, t, span)
    }
}

/// The tokens burned since the last epoch's burn (after sales, and at this
/// epoch's end), and the USD that was queued for them (both 0 when nothing
/// was burned). Part of the queue may wait (ADR 0018): a node's share is of
/// what burned. Also what this epoch's own burn spent and bought.
#[derive(Clone, Copy, Debug, Default)]
pub struct Burned {
    pub token: u128,
    pub queued_usd: u128,
    pub epoch_spent_usd: u128,
    pub epoch_token: u128,
}

impl Burned {
    /// A node's share of the burned tokens, by the USD it routed to the
    /// burn, rounded down; and at most what that USD bought at the epoch's
    /// own burn, when it bought anything. The tokens the held queue bought
    /// after a sale may have come far cheaper (after a crash): shared by
    /// USD, they gave a node that paid itself this epoch a usage reward
    /// above what its dollars burned, and worth more than them.
    fn node_share(&self, burn_usd: u128) -> u128 {
        if burn_usd == 0 || self.queued_usd == 0 {
            return 0;
        }
        let share = mul_div_floor(self.token, burn_usd, self.queued_usd);
        if self.epoch_spent_usd == 0 {
            return share;
        }
        // Without a burn since the last epoch's, the share is below this
        // already (what is queued is at least what is spent).
        share.min(mul_div_floor(self.epoch_token, burn_usd, self.epoch_spent_usd))
    }
}

/// The usage pool's rule: pro rata to settled value, never above the
/// node's burned value × the cap (≤ 1), so paying your own node cannot earn
/// what it burns.
#[derive(Clone, Copy)]
struct Usage {
    pool: u128,
    total_settled: u128,
    burned: Burned,
    cap_ppm: u128,
}

impl Usage {
    /// Consecutive nodes' usage rewards into `rewards`; returns their sum.
    fn reward(&self, rewards: &mut [u128], settled: &[u128], burn_usd: &[u128], active: &[bool]) -> u128 {
        let mut paid = 0;
        for (((r, &settled), &burn_usd), &active) in rewards.iter_mut().zip(settled).zip(burn_usd).zip(active) {
            if settled == 0 || !active {
                *r = 0; // the vector may hold an earlier epoch's rewards
                continue;
            }
            let pro_rata = mul_div_floor(self.pool, settled, self.total_settled);
            let cap = ppm_of(self.burned.node_share(burn_usd), self.cap_ppm);
            *r = pro_rata.min(cap);
            paid += *r;
        }
        paid
    }
}

/// The uptime pool ("bandwidth mining"), by weight.
#[derive(Clone, Copy)]
struct Uptime {
    pool: u128,
    total_weight: u128,
}

impl Uptime {
    fn reward(&self, weight: u128) -> u128 {
        mul_div_floor(self.pool, weight, self.total_weight)
    }
}

/// What a part of the payout paid from the uptime pool: in all, to how many
/// nodes, and per macro-region.
#[derive(Clone, Copy, Default)]
struct UptimePaid {
    token: u128,
    nodes: u32,
    by_region: [u128; MacroRegion::COUNT],
}

impl UptimePaid {
    fn add(&mut self, other: &UptimePaid) {
        self.token += other.token;
        self.nodes += other.nodes;
        for (a, b) in self.by_region.iter_mut().zip(&other.by_region) {
            *a += b;
        }
    }
}

/// Consecutive nodes' rows of the payout: per node its usage reward, its
/// uptime weight, its region and its account (`node_accounts`).
struct PayRows<'a> {
    usage: &'a [u128],
    weights: &'a [u128],
    regions: &'a [u8],
    node_accounts: &'a [AccountIdx],
}

impl<'a> PayRows<'a> {
    fn range(&self, start: usize, end: usize) -> PayRows<'a> {
        PayRows {
            usage: &self.usage[start..end],
            weights: &self.weights[start..end],
            regions: &self.regions[start..end],
            node_accounts: &self.node_accounts[start..end],
        }
    }

    /// Whether node `n` may be paid: its usage reward or its uptime weight
    /// is not 0.
    fn may_pay(&self, n: usize, uptime: Option<Uptime>) -> bool {
        self.usage[n] != 0 || (uptime.is_some() && self.weights[n] != 0)
    }
}

/// Pays consecutive nodes (`rows` for `nodes`) their usage and uptime
/// rewards: each reward to its node's totals and into its account's
/// vesting, and every node's `last_reward` (0 for one paid nothing).
/// `accounts` holds the accounts of the nodes paid, the first being
/// account `account_base`. No uptime pool when no node has weight.
fn pay_nodes(
    nodes: &mut [Node],
    rows: PayRows,
    uptime: Option<Uptime>,
    (accounts, account_base): (&mut [Account], usize),
    now_secs: u64,
    vesting_secs: u64,
    paid: &mut UptimePaid,
) {
    let rows = rows.usage.iter().zip(rows.weights).zip(rows.regions).zip(rows.node_accounts);
    for (node, (((&usage, &weight), &region), &a)) in nodes.iter_mut().zip(rows) {
        let mut r = usage;
        if let (Some(uptime), true) = (uptime, weight != 0) {
            let up = uptime.reward(weight);
            paid.token += up;
            paid.nodes += 1;
            paid.by_region[region as usize] += up;
            r += up;
        }
        // Every node's: this epoch's reward, 0 if none.
        node.last_reward = Token(r);
        if r == 0 {
            continue;
        }
        debug_assert_eq!(node.account, a, "the aggregation's copy of the node's account");
        node.total_rewards.0 += r;
        vesting::add_reward(&mut accounts[a as usize - account_base], Token(r), now_secs, vesting_secs);
    }
}

/// Per part of the payout (`ranges` of nodes), the lowest and highest
/// account among the nodes it may pay; `None` unless there are several
/// parts and their accounts lie in ascending, separate ranges.
fn account_bounds(ranges: &[(usize, usize)], rows: &PayRows, uptime: Option<Uptime>) -> Option<Vec<Option<(usize, usize)>>> {
    if ranges.len() < 2 {
        return None;
    }
    let bounds: Vec<Option<(usize, usize)>> = ranges
        .iter()
        .map(|&(start, end)| {
            (start..end).filter(|&n| rows.may_pay(n, uptime)).map(|n| rows.node_accounts[n] as usize).fold(None, |b, a| {
                Some(b.map_or((a, a), |(lo, hi): (usize, usize)| (lo.min(a), hi.max(a))))
            })
        })
        .collect();
    let paying: Vec<(usize, usize)> = bounds.iter().flatten().copied().collect();
    paying.windows(2).all(|w| w[0].1 < w[1].0).then_some(bounds)
}

/// The usage pass over every node, in parts on `workers`: each node's
/// usage reward, and their sum.
/// Into `rewards`, one per node (an earlier epoch's are written over).
fn usage_rewards(usage: Usage, measured: &super::measure::Measured, workers: &impl Workers, rewards: &mut Vec<u128>) -> u128 {
    let n_nodes = measured.settled_usd.len();
    rewards.resize(n_nodes, 0);
    if usage.total_settled == 0 {
        rewards.fill(0);
        return 0;
    }
    let ranges = workers::ranges(n_nodes, workers.parts(n_nodes));
    let mut sums = vec![0u128; ranges.len()];
    let parts: Vec<_> = workers::split_lengths(rewards, ranges.iter().map(|&(s, e)| e - s))
        .into_iter()
        .zip(sums.iter_mut())
        .zip(&ranges)
        .collect();
    workers.run(parts, &|((rewards, sum), &(start, end)): ((&mut [u128], &mut u128), &(usize, usize))| {
        let m = measured;
        *sum = usage.reward(rewards, &m.settled_usd[start..end], &m.burn_usd[start..end], &m.active[start..end]);
    });
    sums.iter().sum()
}

/// Pays every node its usage and uptime rewards, in parts on `workers`
/// when the parts' nodes have accounts in ascending, separate ranges (each
/// node has an account of its own, so then each part owns the accounts it
/// pays). Returns what the uptime pool paid.
fn pay_all_nodes(state: &mut State, ctx: Ctx, rows: PayRows, uptime: Option<Uptime>, workers: &impl Workers) -> UptimePaid {
    let vesting_secs = state.params.vesting_secs;
    let ranges = workers::ranges(rows.usage.len(), workers.parts(rows.usage.len()));
    let mut paid = UptimePaid::default();
    let Some(bounds) = account_bounds(&ranges, &rows, uptime) else {
        pay_nodes(&mut state.nodes, rows, uptime, (&mut state.accounts, 0), ctx.time_secs, vesting_secs, &mut paid);
        return paid;
    };
    let mut part_paid = vec![UptimePaid::default(); ranges.len()];
    let mut parts = Vec::with_capacity(ranges.len());
    let node_parts = workers::split_lengths(&mut state.nodes, ranges.iter().map(|&(s, e)| e - s));
    let account_parts = workers::split_at_bounds(&mut state.accounts, &bounds);
    for (((nodes, &(start, end)), accounts), paid) in node_parts.into_iter().zip(&ranges).zip(account_parts).zip(part_paid.iter_mut()) {
        parts.push((nodes, rows.range(start, end), accounts, paid));
    }
    workers.run(parts, &|(nodes, rows, accounts, paid)| {
        pay_nodes(nodes, rows, uptime, accounts, ctx.time_secs, vesting_secs, paid);
    });
    for p in &part_paid {
        paid.add(p);
    }
    paid
}

/// Steps 4–5: mints the epoch's emission and pays it out by the three
/// pools' rules, vesting each reward.
pub fn distribute(
    state: &mut State,
    ctx: Ctx,
    measured: &super::measure::Measured,
    burned: Burned,
    report: &mut EpochReport,
    workers: &impl Workers,
    buffers: &mut super::EpochBuffers,
) {
    // The uptime weights (`measure::capped_weights`), and room for the
    // usage rewards.
    let super::EpochBuffers { weights, usage_rewards: usage_rewards_buffer, .. } = buffers;
    let weights = &weights[..];
    let p = state.params.clone();
    let cap_left = p.emission_cap.0.saturating_sub(state.supply.scheduled_token.0);
    let scheduled = schedule(&p, state.epoch).0.min(cap_left);
    state.supply.scheduled_token.0 += scheduled;
    let carry_in = state.emission_carry.0;
    let available = scheduled + carry_in;
    report.emission_scheduled = Token(scheduled);
    report.carry_in = Token(carry_in);

    let oracle_pool = ppm_of(available, p.oracle_share_ppm as u128);
    let uptime_share = uptime_share_ppm(&p, state.epoch);
    let mut uptime_pool = ppm_of(available, uptime_share);
    let usage_pool = available - oracle_pool - uptime_pool;

    // Usage first: what it could not absorb subsidises uptime this same
    // epoch. Each node's two rewards are then paid as one, in one pass:
    // one vesting update per node (two rewards at the same time join the
    // same tranche, so paying the sum is paying both).
    let usage = Usage {
        pool: usage_pool,
        total_settled: report.settled_usd.0, // summed over every node by `burn`
        burned,
        cap_ppm: p.usage_reward_cap_ppm as u128,
    };
    let paid_usage = usage_rewards(usage, measured, workers, usage_rewards_buffer);
    let usage_rewards = &*usage_rewards_buffer;
    uptime_pool += usage_pool - paid_usage;
    let total_weight: u128 = weights.iter().sum();
    let uptime = (total_weight > 0).then_some(Uptime { pool: uptime_pool, total_weight });
    let rows = PayRows { usage: usage_rewards, weights, regions: &measured.region, node_accounts: &measured.account };
    let uptime_paid = pay_all_nodes(state, ctx, rows, uptime, workers);
    for (summary, &paid) in report.regions.iter_mut().zip(&uptime_paid.by_region) {
        summary.uptime_rewards.0 += paid;
    }
    let paid_uptime = uptime_paid.token;

    // Oracles: by reports that agreed with the median.
    let total_good: u128 = state.oracles.iter().map(|o| o.good_reports_epoch as u128).sum();
    let mut paid_oracle = 0u128;
    if total_good > 0 {
        for o in 0..state.oracles.len() {
            let good = state.oracles[o].good_reports_epoch as u128;
            if good == 0 {
                continue;
            }
            let r = mul_div_floor(oracle_pool, good, total_good);
            state.oracles[o].total_rewards.0 += r;
            let a = state.oracles[o].account as usize;
            vesting::add_reward(&mut state.accounts[a], Token(r), ctx.time_secs, p.vesting_secs);
            paid_oracle += r;
        }
    }

    let paid = paid_usage + paid_uptime + paid_oracle;
    debug_assert!(paid <= available);
    state.supply.minted_token.0 += paid;
    let unpaid = available - paid;
    let carry = unpaid.min(scheduled);
    state.emission_carry = Token(carry);
    report.emission_forgone = Token(unpaid - carry);
    report.minted_usage = Token(paid_usage);
    report.minted_uptime = Token(paid_uptime);
    report.minted_oracle = Token(paid_oracle);
    report.carry_out = state.emission_carry;
    report.rewarded_nodes = uptime_paid.nodes;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emission_halves_every_period_and_the_uptime_share_slides_to_usage() {
        let p = Params::default_params(); // hourly epochs, halving yearly
        let per_year = p.epochs_per_year();
        let year = |y: u64| schedule(&p, y * per_year);
        assert_eq!(year(0).0, 50_000_000_000_000 * 3600 / YEAR_SECS as u128);
        assert_eq!(year(1).0, year(0).0 / 2);
        assert_eq!(year(2).0, year(0).0 / 4);
        assert_eq!(schedule(&p, u64::MAX / 4), Token::ZERO);
        // 0.8 at genesis, 0.6 after one of three transition years, 0.2 from
        // the end of the transition on.
        assert_eq!(uptime_share_ppm(&p, 0), 800_000);
        assert_eq!(uptime_share_ppm(&p, per_year), 600_000);
        assert_eq!(uptime_share_ppm(&p, 3 * per_year), 200_000);
        assert_eq!(uptime_share_ppm(&p, 10 * per_year), 200_000);
    }

    #[test]
    fn total_scheduled_emission_stays_under_the_cap() {
        let p = Params::default_params().with_override("epoch", "\"1d\"").unwrap_or_else(|e| panic!("{e}"));
        let total: u128 = (0..365 * 40).map(|e| schedule(&p, e).0).sum();
        // A yearly-halving series sums to twice year one, less rounding.
        assert!(total <= p.emission_cap.0, "{total}");
        assert!(p.emission_cap.0 - total < p.emission_cap.0 / 1000, "{total}");
    }
}
