//! The tokenomics engine: `end_epoch` and the rules it applies (DESIGN §2
//! "Epochs", steps 1–5). The chain and the simulator both call this code;
//! there is no second implementation of any reward, burn or slash rule.

pub mod amm;
pub mod emission;
pub mod measure;
pub mod slash;
pub mod vesting;

use crate::apply::ClosedChannel;
use crate::state::{Ctx, Pool, State, Supply};
use crate::workers::{OneThread, Workers};
use serde::{Deserialize, Serialize};
use tollway_types::{math::mul_div_floor, AccountId, Amount, Hash32, Token, Usd, PPM};

/// Why stake was slashed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlashReason {
    /// ρ = claimed / verified above the threshold in two consecutive
    /// epochs, confirmed by disjoint oracle sets. The figures are the
    /// confirming epoch's; `struck` is the first epoch's, which the node's
    /// strike held until this slash cleared it.
    OverClaim { rho_ppm: u64, claimed_bps: u64, verified_bps: u64, struck: StrikeMeasurement },
    /// The oracle's reports kept deviating from the median.
    OracleDeviation { strikes: u32 },
    /// The oracle reported the false claim of `node` (its operator) in an
    /// epoch of that node's confirmed over-claim.
    VouchedForOverClaim { node: AccountId },
}

/// The measurement that gave a node its strike (`state::Strike`): the
/// first of an over-claim's two epochs. Kept in the slash so an operator
/// sees both measurements that cost the stake, after the strike is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrikeMeasurement {
    pub epoch: u64,
    /// The claim that epoch was judged against (`NodeEpoch::judged_claim_bps`).
    pub claimed_bps: u64,
    /// The oracles' median that epoch.
    pub verified_bps: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlashEvent {
    pub account: AccountId,
    pub reason: SlashReason,
    pub amount: Token,
    pub burned: Token,
    pub to_reporters: Token,
    /// The slashed role's bond fell below its minimum: a node was
    /// deregistered at once, an oracle retires from the next epoch.
    pub ejected: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionSummary {
    pub active_nodes: u32,
    pub online_capacity_bps: u64,
    pub target_capacity_bps: u64,
    pub demand_bps: u64,
    pub multiplier_ppm: u32,
    pub uptime_rewards: Token,
}

/// What one epoch did: the simulator's per-epoch row and the chain's
/// epoch summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: u64,
    pub emission_scheduled: Token,
    pub carry_in: Token,
    pub minted_uptime: Token,
    pub minted_usage: Token,
    pub minted_oracle: Token,
    pub carry_out: Token,
    /// Unpaid emission beyond the carry's cap (one epoch's schedule):
    /// never minted.
    pub emission_forgone: Token,
    pub settled_usd: Usd,
    pub burn_usd: Usd,
    pub burned_token: Token,
    pub slashed_burned: Token,
    pub slashes: Vec<SlashEvent>,
    pub rewarded_nodes: u32,
    pub measured_nodes: u32,
    pub price_usd_micro_per_token: u128,
    pub regions: Vec<RegionSummary>,
    /// The channels this epoch's end closed, past their expiry and the
    /// grace, soonest expiry first, with what each refunded to its client
    /// (ADR 0021): each client's USD grew by its refund here, with no tx
    /// of its own to say so.
    pub channels_closed: Vec<ClosedChannel>,
}

impl EpochReport {
    pub fn minted(&self) -> Token {
        Token(self.minted_uptime.0 + self.minted_usage.0 + self.minted_oracle.0)
    }

    /// What the channels this epoch closed refunded, in all.
    pub fn channels_closed_refund(&self) -> Usd {
        Usd(self.channels_closed.iter().map(|c| c.refund.0).sum())
    }
}

/// Closes the current epoch at block time `ctx.time_secs` and opens the
/// next. `seed` is fresh randomness from the chain (the hash of the block
/// that ends the epoch): it keys the next epoch's oracle assignment.
pub fn end_epoch(state: &mut State, ctx: Ctx, seed: Hash32) -> EpochReport {
    end_epoch_with(state, ctx, seed, &OneThread)
}

/// [`end_epoch`], with its passes over every node split over `workers`
/// where the parts are independent: the same state and report, to the
/// byte, on any number of threads.
pub fn end_epoch_with(state: &mut State, ctx: Ctx, seed: Hash32, workers: &impl Workers) -> EpochReport {
    end_epoch_reusing(state, ctx, seed, workers, &mut EpochBuffers::default())
}

/// What an epoch's passes fill for every node (the aggregation's rows, the
/// uptime weights, the usage rewards), kept for the next epoch by a caller
/// that ends many ([`end_epoch_reusing`]: the simulator). Every pass writes
/// every row, so a kept buffer needs no zeroing: at 100,000 nodes, about
/// 10 MB an epoch that the simulator's main thread allocated zeroed and
/// freed. Nothing in them carries from one epoch to the next.
#[derive(Default)]
pub struct EpochBuffers {
    measured: Option<measure::Measured>,
    weights: Vec<u128>,
    usage_rewards: Vec<u128>,
}

/// [`end_epoch_with`], its per-node rows written into `buffers`, which
/// keeps them for the caller's next epoch: the same state and report.
pub fn end_epoch_reusing(
    state: &mut State,
    ctx: Ctx,
    seed: Hash32,
    workers: &impl Workers,
    buffers: &mut EpochBuffers,
) -> EpochReport {
    let epoch = state.epoch;
    let mut report = EpochReport { epoch, ..EpochReport::default() };

    // Steps 1–2: aggregate measurements, update verified capacity and
    // reputation, cap and slash; the result is each node's base weight.
    let measured = measure::aggregate(state, ctx.time_secs, &mut report, workers, buffers.measured.take());

    // Regional scarcity multipliers from online capacity against demand.
    report.regions = measure::regional_multipliers(state, &measured);

    // Uptime weights: base × regional multiplier, then the /24 and /48 cap.
    measure::capped_weights(state, &measured, &report.regions, &mut buffers.weights, workers);

    // Step 3: buy and burn the settled USD through the pool.
    let burned = burn(state, ctx, &measured, &mut report);

    // Step 4: mint the emission into the three pools.
    emission::distribute(state, ctx, &measured, burned, &mut report, workers, buffers);
    // The epoch's groups are read (through `measured`'s copies) for the
    // last time above.
    state.drop_empty_subnet_groups(&measured.subnet_group);
    buffers.measured = Some(measured);

    report.price_usd_micro_per_token = state.pool.price_usd_micro_per_token();

    // Channels past their expiry and grace close as their clients'
    // `CloseChannel` would (ADR 0021). Apart from the steps above: a
    // refund is the client's USD, which no step reads.
    report.channels_closed = crate::apply::close_expired_channels(state, ctx.time_secs);

    // Reset the remaining per-epoch accumulators (the nodes' were reset by
    // `aggregate`) and open the next epoch.
    for o in state.oracles.iter_mut() {
        o.good_reports_epoch = 0;
    }
    for r in state.regions.iter_mut() {
        r.settled_bytes_epoch = 0;
    }
    state.epoch += 1;
    state.epoch_start_secs = ctx.time_secs;
    let mut h = blake3::Hasher::new();
    h.update(b"tollway-epoch-seed\0");
    h.update(&seed.0);
    h.update(&state.epoch.to_le_bytes());
    state.epoch_seed = Hash32(*h.finalize().as_bytes());
    report
}

/// Whether the epoch that started at `epoch_start_secs` is over at `now`.
pub fn epoch_due(state: &State, now_secs: u64) -> bool {
    now_secs >= state.epoch_start_secs.saturating_add(state.params.epoch_secs)
}

/// Step 3: the queued USD buys tokens from the pool, which are burned, as
/// far as it can without paying more than `burn_max_premium` above the
/// epoch's average price (ADR 0018); the rest waits in the queue, for the
/// first sale of tokens that leaves the price under that bound
/// ([`burn_held_back`]).
/// Returns what was burned since the last epoch's burn and the USD queued
/// for it: each node's share of the burned tokens (by the USD it routed
/// to the burn) caps its usage reward, and is worked out where the reward
/// is (`emission::distribute`).
fn burn(state: &mut State, ctx: Ctx, measured: &measure::Measured, report: &mut EpochReport) -> emission::Burned {
    report.settled_usd = Usd(measured.settled_usd.iter().sum());
    let average = state.pool.take_epoch_average(ctx.time_secs, state.epoch_start_secs);
    let since = std::mem::take(&mut state.held_burn);
    let queue = state.burn_queue_usd;
    let (spend, out) = if queue.is_zero() || state.pool.token.is_zero() || state.pool.usd.is_zero() {
        // Nothing to burn, or no pool yet: the queue waits for liquidity.
        (0, 0)
    } else {
        let p = &state.params;
        let price_cap = ppm_of(average, PPM + p.burn_max_premium_ppm as u128);
        let floor = ppm_of(amm::usd_reserve_at(&state.pool, average), p.burn_floor_ppm as u128).min(queue.0);
        let spend = amm::most_usd_in_below(&state.pool, price_cap, p.pool_fee_ppm, queue.0).max(floor);
        let fee_ppm = p.pool_fee_ppm;
        let (spend, out) =
            buy_and_burn(&mut state.pool, &mut state.burn_queue_usd, &mut state.supply, ctx.time_secs, fee_ppm, spend);
        if !state.burn_queue_usd.is_zero() {
            state.held_burn.price_cap = price_cap;
        }
        (spend, out)
    };
    report.burn_usd = Usd(since.burned_usd.0 + spend);
    report.burned_token = Token(since.burned_token.0 + out);
    emission::Burned {
        token: report.burned_token.0,
        queued_usd: since.burned_usd.0 + queue.0,
        epoch_spent_usd: spend,
        epoch_token: out,
    }
}

/// An account's trade with the pool ([`amm`]'s `Pool::swap`, at the pool's
/// fee): what it bought, or below `min_out` the output as the error. After
/// a sale of tokens the queue the last epoch's burn held back follows it
/// ([`burn_held_back`]); the transaction and the simulator's batch of
/// sales both trade through here.
pub(crate) fn trade(state: &mut State, now_secs: u64, sell: Amount, min_out: u128) -> Result<u128, u128> {
    let out = state.pool.swap(now_secs, sell, state.params.pool_fee_ppm, min_out)?;
    if matches!(sell, Amount::Token(_)) {
        burn_held_back(state, now_secs);
    }
    Ok(out)
}

/// After a sale of tokens: the queue the last epoch's burn held back for
/// its price buys and burns as much as it can without taking the pool's
/// price above that burn's bound (ADR 0018), at once. A trader who lifted
/// the price past the bound before the burn held the burn back only until
/// its own sale. (Not after a purchase: a burn right after one is what a
/// sandwich sells into.)
fn burn_held_back(state: &mut State, now_secs: u64) {
    let State { pool, burn_queue_usd, held_burn, supply, params, .. } = state;
    if held_burn.price_cap == 0 || burn_queue_usd.is_zero() || pool.token.is_zero() || pool.usd.is_zero() {
        return;
    }
    let spend = amm::most_usd_in_below(pool, held_burn.price_cap, params.pool_fee_ppm, burn_queue_usd.0);
    let (spend, out) = buy_and_burn(pool, burn_queue_usd, supply, now_secs, params.pool_fee_ppm, spend);
    held_burn.burned_usd.0 += spend;
    held_burn.burned_token.0 += out;
    if burn_queue_usd.is_zero() {
        held_burn.price_cap = 0;
    }
}

/// `spend` of the queue buys tokens from the pool, which are burned:
/// returns what was spent and burned, both 0 below one token base unit of
/// output (dust, or a price already above the bound), when nothing trades
/// and the queue waits.
fn buy_and_burn(pool: &mut Pool, queue: &mut Usd, supply: &mut Supply, now_secs: u64, fee_ppm: u32, spend: u128) -> (u128, u128) {
    let Ok(out) = pool.swap(now_secs, Amount::Usd(Usd(spend)), fee_ppm, 0) else {
        return (0, 0);
    };
    supply.burned_token.0 += out;
    queue.0 -= spend;
    (spend, out)
}

/// `x × ppm / 1e6`, floor, on u128.
#[inline]
pub(crate) fn ppm_of(x: u128, ppm: u128) -> u128 {
    mul_div_floor(x, ppm, PPM)
}

