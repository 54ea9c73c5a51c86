//! Slashing (DESIGN §2 step 2): nodes that over-claim, oracles that keep
//! deviating. Slashed tokens are burned, less a share for the oracles who
//! proved the fault. A slash never takes more than the account holds.

use super::measure::OverClaim;
use super::{ppm_of, vesting, EpochReport, SlashEvent, SlashReason};
use crate::params::Params;
use crate::state::{Account, OracleIdx, State};
use tollway_types::{math::mul_div_floor, Token, PPM};

/// Takes up to `amount` from the account: bonded stake first, then
/// unbonding entries (newest first: they are the ones fleeing), then
/// unvested rewards. Returns what was taken; never underflows.
pub fn take_stake(acct: &mut Account, amount: Token) -> Token {
    let mut left = amount.0;
    let from_stake = acct.staked.0.min(left);
    acct.staked.0 -= from_stake;
    left -= from_stake;
    for u in acct.unbonding.iter_mut().rev() {
        if left == 0 {
            break;
        }
        let take = u.amount.0.min(left);
        u.amount.0 -= take;
        left -= take;
    }
    acct.unbonding.retain(|u| !u.amount.is_zero());
    if left > 0 {
        left -= vesting::slash_unvested(acct, Token(left)).0;
    }
    Token(amount.0 - left)
}

/// What a slash's fraction is of: the bonded stake and the unbonding
/// entries, which stay slashable until they are withdrawn (a fraction of
/// the bonded stake alone let an account shrink its slash by unbonding
/// between the strike and its confirmation).
fn slashable_bond(acct: &Account) -> u128 {
    acct.staked.0 + acct.unbonding_total().0
}

/// The share of stake slashed for ρ above the threshold: base plus
/// per-unit-of-ρ, capped (claims 100, delivers 10: ρ = 10 → 45 % by
/// default).
pub fn over_claim_fraction_ppm(p: &Params, rho_ppm: u64) -> u128 {
    let excess = (rho_ppm as u128).saturating_sub(p.rho_slash_min_ppm as u128);
    let grow = mul_div_floor(p.slash_per_rho_ppm as u128, excess, PPM);
    (p.slash_base_ppm as u128 + grow).min(p.slash_max_ppm as u128)
}

/// Burns `amount` less the reporters' share, which goes to `reporters`'
/// balances in equal parts (the rounding remainder is burned too).
fn burn_and_reward(state: &mut State, amount: Token, reporters: &[OracleIdx]) -> (Token, Token) {
    let mut to_reporters = 0u128;
    if !reporters.is_empty() {
        let share = ppm_of(amount.0, state.params.slash_reporter_share_ppm as u128);
        let each = share / reporters.len() as u128;
        for &o in reporters {
            let acct = state.oracles[o as usize].account as usize;
            state.accounts[acct].token.0 += each;
            state.oracles[o as usize].total_rewards.0 += each;
            to_reporters += each;
        }
    }
    let burned = amount.0 - to_reporters;
    state.supply.burned_token.0 += burned;
    (Token(burned), Token(to_reporters))
}

/// A confirmed over-claim of node `n`, at `now_secs`: slash, reward the
/// confirming oracles, reset the claim to the verified value, and
/// deregister the node if its bond fell below the minimum.
///
/// The fraction is taken from the bond and, alike, from the rewards that
/// have not vested by `now_secs` (ADR 0017): unvested rewards are
/// collateral, as in Filecoin. What has vested is released to the balance
/// first, so the fraction is of what is still unvested alone.
pub(crate) fn slash_node(state: &mut State, n: usize, over_claim: &OverClaim, now_secs: u64, report: &mut EpochReport) {
    let OverClaim { rho_ppm, claimed_bps, struck, ref confirming, .. } = *over_claim;
    let fraction = over_claim_fraction_ppm(&state.params, rho_ppm);
    let vesting_secs = state.params.vesting_secs;
    let node = &state.nodes[n];
    let a = node.account as usize;
    let verified_bps = node.verified_capacity_bps;
    let acct = &mut state.accounts[a];
    vesting::release(acct, now_secs, vesting_secs);
    let (from_bond, from_unvested) = over_claim_parts(acct, fraction);
    // The bond's part never reaches the unvested rewards: a fraction of
    // the bond is at most the bond.
    let taken = Token(take_stake(acct, from_bond).0 + vesting::slash_unvested(acct, from_unvested).0);
    let (burned, to_reporters) = burn_and_reward(state, taken, confirming);
    let ejected = state.accounts[a].staked < state.params.min_node_stake;
    let node = &mut state.nodes[n];
    node.spec.claimed_capacity_bps = verified_bps.max(1);
    node.total_slashed.0 += taken.0;
    if ejected {
        node.active = false;
    }
    let account = node.operator;
    retire_oracle_if_uncovered(state, a);
    report.slashed_burned.0 += burned.0;
    report.slashes.push(SlashEvent {
        account,
        reason: SlashReason::OverClaim { rho_ppm, claimed_bps, verified_bps, struck },
        amount: taken,
        burned,
        to_reporters,
        ejected,
    });
}

/// What a confirmed over-claim slash at `fraction` asks of `acct`, once
/// what has vested is released: from its bond, and from its unvested
/// rewards (ADR 0017).
fn over_claim_parts(acct: &Account, fraction: u128) -> (Token, Token) {
    (Token(ppm_of(slashable_bond(acct), fraction)), Token(ppm_of(acct.vesting_unreleased.0, fraction)))
}

/// What [`slash_node`] would ask of `acct` at `now_secs` for an over-claim
/// of `rho_ppm`: for an operator told of a pending strike (the chain's
/// API), with no second copy of the rule.
pub fn over_claim_slash_estimate(p: &Params, acct: &Account, rho_ppm: u64, now_secs: u64) -> Token {
    let mut after = acct.clone();
    vesting::release(&mut after, now_secs, p.vesting_secs);
    let (from_bond, from_unvested) = over_claim_parts(&after, over_claim_fraction_ppm(p, rho_ppm));
    Token(from_bond.0 + from_unvested.0)
}

/// Oracles whose share of deviating reports exceeds the maximum collect a
/// strike; enough strikes in a row cost `oracle_slash` of their stake.
/// Records each oracle's good reports for the oracle pool.
pub fn oracle_deviation(state: &mut State, good: &[u32], bad: &[u32], report: &mut EpochReport) {
    let p = state.params.clone();
    for o in 0..state.oracles.len() {
        let (g, b) = (good[o] as u128, bad[o] as u128);
        state.oracles[o].good_reports_epoch = good[o];
        if g + b == 0 {
            continue;
        }
        if b * PPM > (g + b) * p.oracle_deviating_share_max_ppm as u128 {
            state.oracles[o].deviation_strikes += 1;
        } else {
            state.oracles[o].deviation_strikes = 0;
            continue;
        }
        let strikes = state.oracles[o].deviation_strikes;
        if strikes < p.oracle_strikes_to_slash {
            continue;
        }
        state.oracles[o].deviation_strikes = 0;
        slash_oracle(state, o, p.oracle_slash_ppm as u128, SlashReason::OracleDeviation { strikes }, report);
    }
}

/// An oracle that reported node `n`'s false claim in an epoch of its
/// confirmed over-claim (`measure::vouching_oracles`) shares the node's
/// fate: it loses the same fraction of its stake as the node
/// (`over_claim_fraction_ppm` of the confirmed ρ), at once. Two disjoint
/// oracle sets proved the claim false. Without this an oracle colluding
/// with a few liars stays far below the deviating share and is never
/// slashed. The same fraction for both keeps framing dear (ADR 0011): a
/// node that serves one honest oracle in full and throttles the others
/// makes that oracle a voucher, but pays its own slash to do it.
pub fn slash_vouching_oracle(state: &mut State, o: usize, n: usize, rho_ppm: u64, report: &mut EpochReport) {
    let node = state.nodes[n].operator;
    let fraction = over_claim_fraction_ppm(&state.params, rho_ppm);
    slash_oracle(state, o, fraction, SlashReason::VouchedForOverClaim { node }, report);
}

/// Takes `fraction_ppm` of the oracle's bond (`slashable_bond`) and burns
/// it.
fn slash_oracle(state: &mut State, o: usize, fraction_ppm: u128, reason: SlashReason, report: &mut EpochReport) {
    let a = state.oracles[o].account as usize;
    let amount = Token(ppm_of(slashable_bond(&state.accounts[a]), fraction_ppm));
    let taken = take_stake(&mut state.accounts[a], amount);
    let (burned, to_reporters) = burn_and_reward(state, taken, &[]);
    state.oracles[o].total_slashed.0 += taken.0;
    let ejected = retire_oracle_if_uncovered(state, a);
    report.slashed_burned.0 += burned.0;
    report.slashes.push(SlashEvent {
        account: state.oracles[o].operator,
        reason,
        amount: taken,
        burned,
        to_reporters,
        ejected,
    });
}

/// After a slash of account `a`: if its bond no longer covers the roles it
/// holds (`State::required_stake`, the node's minimum counted only while
/// the node stays active), its oracle retires from the next epoch, as a
/// `DeregisterOracle` would retire it. Registering takes the minimum
/// stake; without this, an oracle slashed below it (or an account whose
/// node and oracle together needed more than the slash left) kept
/// measuring and earning. Returns whether it retired the oracle.
fn retire_oracle_if_uncovered(state: &mut State, a: usize) -> bool {
    let acct = &state.accounts[a];
    let Some(o) = acct.oracle.filter(|&o| state.oracles[o as usize].retired_from_epoch.is_none()) else {
        return false;
    };
    if acct.staked >= state.required_stake(acct) {
        return false;
    }
    state.oracles[o as usize].retired_from_epoch = Some(state.epoch + 1);
    true
}
