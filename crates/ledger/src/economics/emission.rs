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
use tollway_types::{math::mul_div_floor, Token};

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

/// Pays consecutive nodes their rewards (`rewards[i]` to `nodes[i]`, whose
/// account is `node_accounts[i]`): each reward to its node's totals and
/// into its account's vesting. `accounts` holds the accounts of the nodes
/// paid, the first being account `account_base`.
fn pay_nodes(
    nodes: &mut [Node],
    node_accounts: &[AccountIdx],
    rewards: &[u128],
    accounts: &mut [Account],
    account_base: usize,
    now_secs: u64,
    vesting_secs: u64,
) {
    for ((node, &a), &r) in nodes.iter_mut().zip(node_accounts).zip(rewards) {
        if r == 0 {
            continue;
        }
        debug_assert_eq!(node.account, a, "the aggregation's copy of the node's account");
        node.last_reward.0 += r;
        node.total_rewards.0 += r;
        vesting::add_reward(&mut accounts[a as usize - account_base], Token(r), now_secs, vesting_secs);
    }
}

/// Per part of the payout (`ranges` of nodes), the lowest and highest
/// account among the nodes it pays; `None` unless there are several parts
/// and their accounts lie in ascending, separate ranges.
fn account_bounds(ranges: &[(usize, usize)], rewards: &[u128], node_accounts: &[AccountIdx]) -> Option<Vec<Option<(usize, usize)>>> {
    if ranges.len() < 2 {
        return None;
    }
    let bounds: Vec<Option<(usize, usize)>> = ranges
        .iter()
        .map(|&(start, end)| {
            (start..end).filter(|&n| rewards[n] != 0).map(|n| node_accounts[n] as usize).fold(None, |b, a| {
                Some(b.map_or((a, a), |(lo, hi): (usize, usize)| (lo.min(a), hi.max(a))))
            })
        })
        .collect();
    let paying: Vec<(usize, usize)> = bounds.iter().flatten().copied().collect();
    paying.windows(2).all(|w| w[0].1 < w[1].0).then_some(bounds)
}

/// Pays every node its reward, in parts on `workers` when the parts' nodes
/// have accounts in ascending, separate ranges (each node has an account
/// of its own, so then each part owns the accounts it pays).
fn pay_all_nodes(state: &mut State, ctx: Ctx, rewards: &[u128], node_accounts: &[AccountIdx], workers: &impl Workers) {
    let vesting_secs = state.params.vesting_secs;
    let ranges = workers::ranges(rewards.len(), workers.parts(rewards.len()));
    let Some(bounds) = account_bounds(&ranges, rewards, node_accounts) else {
        pay_nodes(&mut state.nodes, node_accounts, rewards, &mut state.accounts, 0, ctx.time_secs, vesting_secs);
        return;
    };
    let mut accounts: &mut [Account] = &mut state.accounts;
    let mut base = 0;
    let mut parts = Vec::with_capacity(ranges.len());
    let node_parts = workers::split_lengths(&mut state.nodes, ranges.iter().map(|&(s, e)| e - s));
    for ((nodes, &(start, end)), bound) in node_parts.into_iter().zip(&ranges).zip(&bounds) {
        let mine: &mut [Account] = match *bound {
            None => &mut [],
            Some((lo, hi)) => {
                let (_, from_lo) = std::mem::take(&mut accounts).split_at_mut(lo - base);
                let (mine, rest) = from_lo.split_at_mut(hi + 1 - lo);
                accounts = rest;
                base = hi + 1;
                mine
            }
        };
        let first = bound.map_or(0, |(lo, _)| lo);
        parts.push((nodes, &node_accounts[start..end], &rewards[start..end], mine, first));
    }
    workers.run(parts, &|(nodes, node_accounts, rewards, accounts, first)| {
        pay_nodes(nodes, node_accounts, rewards, accounts, first, ctx.time_secs, vesting_secs);
    });
}

pub fn distribute(
    state: &mut State,
    ctx: Ctx,
    weights: &[u128],
    measured: &super::measure::Measured,
    node_burned: &[Token],
    report: &mut EpochReport,
    workers: &impl Workers,
) {
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

    // Each node's reward this epoch, from both pools, is summed first and
    // paid in one pass below: one vesting update per node, in a short loop
    // (two rewards at the same time join the same tranche, so paying the
    // sum is paying both).
    let mut node_reward = vec![0u128; state.nodes.len()];

    // Usage: pro rata to settled value, never above the burned value ×
    // the cap (≤ 1), so paying your own node cannot earn what it burns.
    let total_settled = report.settled_usd.0; // summed over every node by `burn`
    let mut paid_usage = 0u128;
    if total_settled > 0 {
        for (n, &settled) in measured.settled_usd.iter().enumerate() {
            if settled == 0 || !measured.active[n] {
                continue;
            }
            let pro_rata = mul_div_floor(usage_pool, settled, total_settled);
            let cap = ppm_of(node_burned[n].0, p.usage_reward_cap_ppm as u128);
            let r = pro_rata.min(cap);
            node_reward[n] += r;
            paid_usage += r;
        }
    }
    // What usage could not absorb subsidises uptime this same epoch.
    uptime_pool += usage_pool - paid_usage;

    // Uptime ("bandwidth mining"): by weight.
    let total_weight: u128 = weights.iter().sum();
    let mut paid_uptime = 0u128;
    let mut rewarded = 0u32;
    if total_weight > 0 {
        for (n, &w) in weights.iter().enumerate() {
            if w == 0 {
                continue;
            }
            let r = mul_div_floor(uptime_pool, w, total_weight);
            node_reward[n] += r;
            if let Some(s) = report.regions.get_mut(measured.region[n] as usize) {
                s.uptime_rewards.0 += r;
            }
            paid_uptime += r;
            rewarded += 1;
        }
    }
    pay_all_nodes(state, ctx, &node_reward, &measured.account, workers);

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
    report.rewarded_nodes = rewarded;
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
