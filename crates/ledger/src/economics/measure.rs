//! Steps 1–2 of the epoch: aggregate the oracles' reports into verified
//! capacity, latency, uptime and reputation; cap rewards and slash by the
//! over-claim ratio ρ; then weigh nodes for the uptime pool with the
//! regional scarcity multiplier and the /24 and /48 sybil cap.

use super::{ppm_of, slash, EpochReport, RegionSummary, StrikeMeasurement};
use crate::params::{Params, MAX_ORACLES_PER_NODE};
use crate::state::{AccountIdx, Node, NodeEpoch, OracleIdx, ReportSlot, Reports, State, Strike};
use crate::workers::{self, split_lengths, Workers};
use std::sync::atomic::{AtomicBool, Ordering};
use tollway_types::{math::mul_div_floor, MacroRegion, MeasurementOutcome, PPM};

/// What aggregation leaves for the rest of the epoch.
///
/// The per-node vectors are dense copies of what the later steps need, so
/// that after this one pass no step walks the (large) node records again,
/// except to pay the nodes that earned something (ADR 0004).
#[derive(Default)]
pub struct Measured {
    /// Per node: capacity × uptime × reputation × stake factor, before the
    /// regional multiplier and the subnet cap. 0 for nodes that earn none.
    pub base_weight: Vec<u128>,
    /// Per node: USD settled this epoch, and the part routed to the burn.
    pub settled_usd: Vec<u128>,
    pub burn_usd: Vec<u128>,
    /// Per node: its macro-region index, subnet group and account (a
    /// copy the payout bounds its parts by and pays through, so that it
    /// reads no second line of each node record).
    pub region: Vec<u8>,
    pub subnet_group: Vec<u32>,
    pub account: Vec<AccountIdx>,
    /// Per node: still registered after this epoch's slashes.
    pub active: Vec<bool>,
    /// Per node: registered at the epoch's end, before its slashes; and
    /// the subnet group it left during the epoch (`NodeEpoch::group_left`,
    /// `NO_GROUP` if none). Both count it among a group's nodes.
    pub registered: Vec<bool>,
    pub group_left: Vec<u32>,
    /// Per node: online verified capacity (capacity × uptime); 0 for nodes
    /// no longer registered.
    pub online_capacity_bps: Vec<u64>,
    /// Per subnet group (`Node::subnet_group`): the nodes registered in it
    /// at any time in the epoch, which share one node's weight and one
    /// node's online capacity (`share_subnets`).
    pub subnet_nodes: Vec<u32>,
    /// Per macro-region: online verified capacity, each subnet group's
    /// counted once (its nodes' mean).
    pub online_bps: [u128; MacroRegion::COUNT],
    pub active_nodes: [u32; MacroRegion::COUNT],
}

impl Measured {
    /// Rows for `n` nodes, in `kept`'s vectors when given (a caller's
    /// buffers from an earlier epoch, `EpochBuffers`): the pass writes
    /// every row (`Rows::start`), so the old ones need no zeroing.
    fn for_nodes(n: usize, kept: Option<Measured>) -> Measured {
        let mut m = kept.unwrap_or_default();
        m.base_weight.resize(n, 0);
        m.settled_usd.resize(n, 0);
        m.burn_usd.resize(n, 0);
        m.region.resize(n, 0);
        m.subnet_group.resize(n, 0);
        m.account.resize(n, 0);
        m.active.resize(n, false);
        m.registered.resize(n, false);
        m.group_left.resize(n, NO_GROUP);
        m.online_capacity_bps.resize(n, 0);
        m.subnet_nodes.clear();
        m.online_bps = [0; MacroRegion::COUNT];
        m.active_nodes = [0; MacroRegion::COUNT];
        m
    }
}

/// `Measured::group_left` of a node that left no group in the epoch.
pub const NO_GROUP: u32 = u32::MAX;

/// A small fixed-capacity list of (value, stake weight) samples.
struct Samples {
    items: [(u64, u128); MAX_ORACLES_PER_NODE],
    len: usize,
}

impl Samples {
    const EMPTY: Samples = Samples { items: [(0, 0); MAX_ORACLES_PER_NODE], len: 0 };

    fn push(&mut self, value: u64, weight: u128) {
        if self.len < MAX_ORACLES_PER_NODE {
            self.items[self.len] = (value, weight);
            self.len += 1;
        }
    }

    /// The smallest value held (0 when empty).
    fn lowest(&self) -> u64 {
        self.items[..self.len].iter().map(|x| x.0).min().unwrap_or(0)
    }

    /// The stake-weighted (lower) median: the smallest value at which the
    /// cumulative weight reaches half the total.
    fn weighted_median(&mut self) -> u64 {
        if self.len == 3 {
            return self.weighted_median_of_three();
        }
        let items = &mut self.items[..self.len];
        // Ties in value may come in any order: the median value is the same.
        // An insertion sort written out: at most `MAX_ORACLES_PER_NODE`
        // items, three times per node per epoch.
        for i in 1..items.len() {
            let mut j = i;
            while j > 0 && items[j - 1].0 > items[j].0 {
                items.swap(j - 1, j);
                j -= 1;
            }
        }
        let total: u128 = items.iter().map(|x| x.1).sum();
        let mut cumulative = 0u128;
        for &(value, weight) in items.iter() {
            cumulative += weight;
            // `cumulative × 2 ≥ total` without the doubling, which
            // overflowed for stakes summing above 2^127.
            if cumulative >= total - cumulative {
                return value;
            }
        }
        items.last().map_or(0, |x| x.0)
    }
}

impl Samples {
    fn weighted_median_of_three(&self) -> u64 {
        median_of_three([self.items[0], self.items[1], self.items[2]])
    }
}

/// `Samples::weighted_median` of three (value, weight) samples (k = 3
/// oracles, the default): the same value, sorted by a network of
/// conditional moves and picked without a branch on the values. Sorting
/// three random values with branches mispredicted about once per median,
/// three medians per node per epoch.
fn median_of_three(samples: [(u64, u128); 3]) -> u64 {
    use std::hint::select_unpredictable as pick;
    let ordered = |a: (u64, u128), b: (u64, u128)| {
        let swap = b.0 < a.0;
        (pick(swap, b, a), pick(swap, a, b))
    };
    let (x0, x1) = ordered(samples[0], samples[1]);
    let (x1, x2) = ordered(x1, samples[2]);
    let (x0, x1) = ordered(x0, x1);
    // Half the total weight reached, as `weighted_median` has it, each
    // side a sum of at most two weights: doubled against the total, the
    // weights overflowed once stakes summed above 2^127 (and one addition
    // fewer).
    let upper = pick(x0.1 + x1.1 >= x2.1, x1.0, x2.0);
    pick(x0.1 >= x1.1 + x2.1, x0.0, upper)
}

/// The uptime, throughput and latency medians of exactly three reports
/// that all measured the node (the common case), straight from the slots:
/// what three-sample `Samples` lists would give, without filling three
/// lists of seven for every node every epoch. `None` otherwise.
fn medians_of_three_measured(reports: &[ReportSlot], weights: &[u128]) -> Option<(u64, u64, u64)> {
    use MeasurementOutcome::Measured;
    let [a, b, c] = reports else { return None };
    let (
        Measured { throughput_bps: t0, latency_us: l0 },
        Measured { throughput_bps: t1, latency_us: l1 },
        Measured { throughput_bps: t2, latency_us: l2 },
    ) = (a.outcome, b.outcome, c.outcome)
    else {
        return None;
    };
    let w = [weights[a.oracle as usize], weights[b.oracle as usize], weights[c.oracle as usize]];
    let uptime = [a.uptime_ppm as u64, b.uptime_ppm as u64, c.uptime_ppm as u64];
    let latency = [flip(l0 as u64), flip(l1 as u64), flip(l2 as u64)];
    Some((
        median_of_three([(uptime[0], w[0]), (uptime[1], w[1]), (uptime[2], w[2])]),
        median_of_three([(t0, w[0]), (t1, w[1]), (t2, w[2])]),
        flip(median_of_three([(latency[0], w[0]), (latency[1], w[1]), (latency[2], w[2])])),
    ))
}

/// Latency as the medians hold it: `u64::MAX − latency`, whose lower
/// median is the latency's upper one. A median rounds toward the protocol
/// (ADR 0001): down for throughput and uptime, which pay more when high,
/// and up for latency, which pays more when low. Rounded down, the
/// median of two was the lower latency, and a node that turned one of
/// its three oracles away (`Unreachable`, never a slash) was judged on
/// the nearest of the other two, not on the median of all three.
#[inline(always)]
fn flip(latency_us: u64) -> u64 {
    u64::MAX - latency_us
}

struct Aggregate {
    throughput_bps: Option<u64>,
    latency_us: u32,
    uptime_ppm: Option<u32>,
    /// Oracles whose measurement counted, sorted: `measuring[..n_measuring]`.
    /// A fixed array, not a Vec: this runs for every node every epoch.
    measuring: [OracleIdx; MAX_ORACLES_PER_NODE],
    n_measuring: usize,
}

/// ρ = claimed / verified in ppm (saturating; a node measured at 0 has an
/// unbounded ρ).
pub fn rho_ppm(claimed_bps: u64, verified_bps: u64) -> u64 {
    if verified_bps == 0 {
        return u64::MAX;
    }
    // Per node per epoch, twice: the hardware division when it fits.
    mul_div_floor(claimed_bps as u128, PPM, verified_bps as u128).min(u64::MAX as u128) as u64
}

/// The latency tier multiplier (after Helium Mobile's speed tiers).
pub fn latency_multiplier_ppm(latency_us: u32, p: &Params) -> u32 {
    let ms = latency_us / 1000;
    // The first tier whose maximum is at least `ms`: with the maxima
    // strictly ascending (`params` validates it), the number of maxima
    // below `ms`. Counted without a branch: latencies are random per node.
    debug_assert!(p.latency_tier_max_ms.windows(2).all(|w| w[0] < w[1]));
    let tier = p.latency_tier_max_ms.iter().map(|&max| (max < ms) as usize).sum::<usize>();
    p.latency_tier_multiplier_ppm[tier]
}

/// The stake factor: linear up to the saturation bond, then flat (Nym).
pub fn stake_factor_ppm(staked: u128, p: &Params) -> u128 {
    let sat = p.stake_saturation.0.max(1);
    mul_div_floor(staked.min(sat), PPM, sat)
}

/// Each oracle's weight in the medians: its account's bonded stake, at
/// least 1. Gathered once per epoch; `aggregate` refreshes an entry when a
/// slash changes that account's stake.
fn oracle_weight(state: &State, o: usize) -> u128 {
    state.accounts[state.oracles[o].account as usize].staked.0.max(1)
}

#[inline(always)]
fn aggregate_reports(p: &Params, reports: &Reports, oracle_weights: &[u128], sums: &mut Sums) -> Aggregate {
    let (good, bad) = (&mut sums.good, &mut sums.bad);
    let quorum = p.min_reports as usize;
    let mut agg = Aggregate {
        throughput_bps: None,
        latency_us: 0,
        uptime_ppm: None,
        measuring: [0; MAX_ORACLES_PER_NODE],
        n_measuring: 0,
    };
    // (throughput, latency) medians when enough oracles measured the node.
    let measured = if let Some((uptime, throughput, latency)) =
        medians_of_three_measured(reports.as_slice(), oracle_weights)
    {
        // Three samples of each, as the lists below would hold.
        (3 >= quorum).then(|| {
            agg.uptime_ppm = Some(uptime as u32);
            (throughput, latency)
        })
    } else {
        let mut throughput = Samples::EMPTY;
        let mut latency = Samples::EMPTY;
        let mut uptime = Samples::EMPTY;
        let mut turned_away_weight = 0u128;
        for slot in reports {
            let weight = oracle_weights[slot.oracle as usize];
            match slot.outcome {
                MeasurementOutcome::Measured { throughput_bps, latency_us } => {
                    throughput.push(throughput_bps, weight);
                    latency.push(flip(latency_us as u64), weight);
                    uptime.push(slot.uptime_ppm as u64, weight);
                }
                MeasurementOutcome::Unreachable => {
                    uptime.push(slot.uptime_ppm as u64, weight);
                    turned_away_weight += weight;
                }
                MeasurementOutcome::OracleError => {}
            }
        }
        if uptime.len >= quorum {
            agg.uptime_ppm = Some(uptime.weighted_median() as u32);
        }
        (throughput.len >= quorum).then(|| {
            // The oracles a node turned away count, with their stake, as
            // the worst measurement the others made (ADR 0019). Left out,
            // they let the node choose its median: turning an honest
            // oracle away left a heavier colluder's figure as the median
            // of the other two. Counted as nothing, they would let an
            // oracle strike a node by calling it unreachable; as the worst
            // real measurement, an unreachable report is still never a
            // strike alone.
            if turned_away_weight > 0 {
                throughput.push(throughput.lowest(), turned_away_weight);
                latency.push(latency.lowest(), turned_away_weight);
            }
            (throughput.weighted_median(), flip(latency.weighted_median()))
        })
    };
    if let Some((median, latency)) = measured {
        agg.throughput_bps = Some(median);
        agg.latency_us = latency as u32;
        // Oracles far from the median deviate; the others did good work.
        let tolerance = ppm_of(median as u128, p.oracle_deviation_tolerance_ppm as u128);
        for slot in reports {
            if let MeasurementOutcome::Measured { throughput_bps, .. } = slot.outcome {
                let o = slot.oracle as usize;
                if (throughput_bps as u128).abs_diff(median as u128) > tolerance {
                    bad[o] += 1;
                } else {
                    good[o] += 1;
                }
                if agg.n_measuring < MAX_ORACLES_PER_NODE {
                    agg.measuring[agg.n_measuring] = slot.oracle;
                    agg.n_measuring += 1;
                }
            }
        }
        if agg.n_measuring == 3 {
            let three = sorted3([agg.measuring[0], agg.measuring[1], agg.measuring[2]]);
            agg.measuring[..3].copy_from_slice(&three);
        } else {
            agg.measuring[..agg.n_measuring].sort_unstable();
        }
    }
    agg
}

/// Three random oracle indices in order, by min and max: no branch to
/// mispredict (the common case, as for the medians).
fn sorted3([a, b, c]: [OracleIdx; 3]) -> [OracleIdx; 3] {
    let (lo, hi) = (a.min(b), a.max(b));
    [lo.min(c), hi.min(lo.max(c)), hi.max(c)]
}

fn disjoint(a: &[OracleIdx], b: &[OracleIdx]) -> bool {
    !a.iter().any(|x| b.contains(x))
}

/// What a part of the aggregation pass adds up over its nodes (exact
/// integer sums, added in part order).
struct Sums {
    measured_nodes: u32,
    active_nodes: [u32; MacroRegion::COUNT],
    /// Per oracle: its reports this epoch near the median, and far from it.
    good: Vec<u32>,
    bad: Vec<u32>,
}

impl Sums {
    fn new(oracles: usize) -> Sums {
        Sums {
            measured_nodes: 0,
            active_nodes: [0; MacroRegion::COUNT],
            good: vec![0; oracles],
            bad: vec![0; oracles],
        }
    }

    fn add(&mut self, other: &Sums) {
        self.measured_nodes += other.measured_nodes;
        for r in 0..MacroRegion::COUNT {
            self.active_nodes[r] += other.active_nodes[r];
        }
        for (a, b) in self.good.iter_mut().zip(&other.good) {
            *a += b;
        }
        for (a, b) in self.bad.iter_mut().zip(&other.bad) {
            *a += b;
        }
    }
}

/// A confirmed over-claim: ρ, the oracles whose measurement confirmed it,
/// and those that vouched for the false claim in either epoch.
pub(crate) struct OverClaim {
    pub(crate) rho_ppm: u64,
    /// The claim the confirming epoch was judged against.
    pub(crate) claimed_bps: u64,
    pub(crate) struck: StrikeMeasurement,
    pub(crate) confirming: Vec<OracleIdx>,
    vouching: Vec<OracleIdx>,
}

/// The oracles among `reports` that measured more than ρ's slash threshold
/// times `median_bps`: what they reported is the claim the median found
/// false. Honest oracles measure a node at 0.8 of its capacity or more
/// (DESIGN §2), so a majority cannot measure half of what an honest one
/// does unless the node itself throttled them, and then the node pays its
/// own slash for it (ADR 0011).
fn vouching_oracles(reports: &Reports, median_bps: u64, p: &Params) -> Vec<OracleIdx> {
    reports
        .as_slice()
        .iter()
        .filter(|slot| match slot.outcome {
            // Not `rho_ppm`: against a median of 0 it is unbounded for a
            // report of 0 too, and agreeing with the median is no vouch.
            MeasurementOutcome::Measured { throughput_bps, .. } => {
                throughput_bps as u128 * PPM > median_bps as u128 * p.rho_slash_min_ppm as u128
            }
            _ => false,
        })
        .map(|slot| slot.oracle)
        .collect()
}

/// What the reward step needs of a node's measurement.
#[derive(Clone, Copy)]
struct Judged {
    /// ρ of this measurement (for the reward cap, one division per node
    /// fewer), unless a slash comes first.
    rho_measured: Option<u64>,
    /// The claim the epoch is judged against (`NodeEpoch::judged_claim_bps`).
    claim_bps: u64,
    /// It moved region or /24 (/48) in the epoch: no uptime reward.
    moved: bool,
}

/// Whether a node last measured by a quorum in `measured_epoch` may still
/// earn on that measurement in `epoch`, without one: it is at most
/// `measurement_max_age_secs` old. Never measured: no. Without the bound a
/// node's own heartbeat paid it its full uptime reward, every epoch, on a
/// capacity measured months before, however it kept the oracles from
/// measuring it again (ADR 0016).
fn measurement_is_recent(p: &Params, measured_epoch: Option<u64>, epoch: u64) -> bool {
    measured_epoch.is_some_and(|m| epoch.saturating_sub(m).saturating_mul(p.epoch_secs) <= p.measurement_max_age_secs)
}

/// Step 1 and the strike of step 2 for one node that is active, or left
/// during the epoch after its oracles reported (leaving before the end
/// does not dodge a strike; ADR 0014): aggregates its
/// reports, resets its epoch accumulators (everything this epoch's steps
/// need from them is read by then: one pass), and updates its uptime,
/// measurement, reputation and strike. Returns the over-claim to slash if
/// this measurement confirms one, and what the reward step needs.
// Inlined into both passes: the per-node steps are most of the pass.
#[inline(always)]
fn measure_node(
    p: &Params,
    epoch: u64,
    node: &mut Node,
    node_epoch: &mut NodeEpoch,
    oracle_weights: &[u128],
    sums: &mut Sums,
) -> (Option<OverClaim>, Judged) {
    let agg = aggregate_reports(p, &node_epoch.reports, oracle_weights, sums);
    let claim_bps = node_epoch.judged_claim_bps(node.spec.claimed_capacity_bps);
    let mut judged = Judged { rho_measured: None, claim_bps, moved: node_epoch.moved };
    let measured = agg.throughput_bps.map(|t| (t, rho_ppm(claim_bps, t)));
    // Only above the slash threshold (rare) are the reports read again.
    let vouching = match measured {
        Some((t, rho)) if rho > p.rho_slash_min_ppm as u64 => vouching_oracles(&node_epoch.reports, t, p),
        _ => Vec::new(),
    };
    let heartbeat = node_epoch.heartbeat;
    node_epoch.reset();
    // Unmeasured, the node earns on its last measurement while that is
    // recent (ADR 0016); past it, its capacity is only its own word.
    let recent = measured.is_some() || measurement_is_recent(p, node.measured_epoch, epoch);
    node.uptime_ppm = match agg.uptime_ppm {
        _ if !recent => 0,
        Some(u) => u,
        // Unmeasured: the heartbeat speaks for the node (a failed
        // measurement is never a slash by itself).
        None if heartbeat => PPM as u32,
        None => 0,
    };
    let Some((t, rho)) = measured else { return (None, judged) };
    sums.measured_nodes += 1;
    node.verified_capacity_bps = t;
    node.measured_epoch = Some(epoch);
    node.latency_us = agg.latency_us;
    let score = latency_multiplier_ppm(agg.latency_us, p) as u128;
    let alpha = p.reputation_alpha_ppm as u128;
    node.reputation_ppm = mul_div_floor(node.reputation_ppm as u128 * (PPM - alpha) + score * alpha, 1, PPM) as u32;
    if rho <= p.rho_slash_min_ppm as u64 {
        node.strike = None;
        judged.rho_measured = Some(rho);
        return (None, judged);
    }
    let measuring = &agg.measuring[..agg.n_measuring];
    match node.strike.take() {
        Some(strike) if strike.epoch < epoch && disjoint(&strike.oracles, measuring) => {
            let confirming = measuring.iter().copied().filter(|o| !vouching.contains(o)).collect();
            // The two sets are disjoint, so no oracle is counted twice.
            let mut all_vouching = strike.vouching;
            all_vouching.extend(vouching);
            let struck = StrikeMeasurement {
                epoch: strike.epoch,
                claimed_bps: strike.judged_claim_bps,
                verified_bps: strike.measured_capacity_bps,
            };
            (Some(OverClaim { rho_ppm: rho, claimed_bps: claim_bps, struck, confirming, vouching: all_vouching }), judged)
        }
        _ => {
            node.strike = Some(Box::new(Strike {
                epoch,
                oracles: measuring.to_vec(),
                vouching,
                judged_claim_bps: claim_bps,
                measured_capacity_bps: t,
            }));
            judged.rho_measured = Some(rho);
            (None, judged)
        }
    }
}

/// The rest of step 2 for a node still registered after any slash: its
/// region's counts, and its base weight (0 below the minimum uptime).
/// `staked` is its account's bonded stake.
#[inline(always)]
fn weigh_node(p: &Params, node: &Node, staked: u128, judged: Judged, sums: &mut Sums) -> u128 {
    let r = node.region.index();
    sums.active_nodes[r] += 1;
    if node.uptime_ppm < p.min_uptime_ppm || judged.moved {
        return 0;
    }
    let verified = node.verified_capacity_bps;
    let (claimed, rho_measured) = (judged.claim_bps, judged.rho_measured);
    // ρ ≤ 1.25: rewards follow the claim; above: the measurement.
    let capacity = if verified == 0 {
        0
    } else if rho_measured.unwrap_or_else(|| rho_ppm(claimed, verified)) <= p.rho_reward_on_claim_max_ppm as u64 {
        claimed
    } else {
        verified
    };
    let w = ppm_of(capacity as u128, node.uptime_ppm as u128);
    let w = ppm_of(w, node.reputation_ppm as u128);
    ppm_of(w, stake_factor_ppm(staked, p))
}

/// `Measured`'s per-node vectors, or a range of them.
struct Rows<'a> {
    base_weight: &'a mut [u128],
    settled_usd: &'a mut [u128],
    burn_usd: &'a mut [u128],
    region: &'a mut [u8],
    subnet_group: &'a mut [u32],
    account: &'a mut [AccountIdx],
    active: &'a mut [bool],
    registered: &'a mut [bool],
    group_left: &'a mut [u32],
    online_capacity_bps: &'a mut [u64],
}

impl<'a> Rows<'a> {
    fn of(out: &'a mut Measured) -> Rows<'a> {
        Rows {
            base_weight: &mut out.base_weight,
            settled_usd: &mut out.settled_usd,
            burn_usd: &mut out.burn_usd,
            region: &mut out.region,
            subnet_group: &mut out.subnet_group,
            account: &mut out.account,
            active: &mut out.active,
            registered: &mut out.registered,
            group_left: &mut out.group_left,
            online_capacity_bps: &mut out.online_capacity_bps,
        }
    }

    /// The rows of nodes `..n` and `n..`.
    fn split_at(self, n: usize) -> (Rows<'a>, Rows<'a>) {
        let (base_weight, base_weight_rest) = self.base_weight.split_at_mut(n);
        let (settled_usd, settled_usd_rest) = self.settled_usd.split_at_mut(n);
        let (burn_usd, burn_usd_rest) = self.burn_usd.split_at_mut(n);
        let (region, region_rest) = self.region.split_at_mut(n);
        let (subnet_group, subnet_group_rest) = self.subnet_group.split_at_mut(n);
        let (account, account_rest) = self.account.split_at_mut(n);
        let (active, active_rest) = self.active.split_at_mut(n);
        let (registered, registered_rest) = self.registered.split_at_mut(n);
        let (group_left, group_left_rest) = self.group_left.split_at_mut(n);
        let (online_capacity_bps, online_capacity_bps_rest) = self.online_capacity_bps.split_at_mut(n);
        (
            Rows {
                base_weight,
                settled_usd,
                burn_usd,
                region,
                subnet_group,
                account,
                active,
                registered,
                group_left,
                online_capacity_bps,
            },
            Rows {
                base_weight: base_weight_rest,
                settled_usd: settled_usd_rest,
                burn_usd: burn_usd_rest,
                region: region_rest,
                subnet_group: subnet_group_rest,
                account: account_rest,
                active: active_rest,
                registered: registered_rest,
                group_left: group_left_rest,
                online_capacity_bps: online_capacity_bps_rest,
            },
        )
    }

    /// What every node's row holds, active or not: its epoch's settlements,
    /// region and subnet group, and the groups that count it this epoch;
    /// inactive and weightless until `weigh` says otherwise (every field of
    /// the row is written: the vectors may hold an earlier epoch's rows).
    /// (Its last reward is set by the payout, for every node: clearing it
    /// here was a line of every node record this pass does not otherwise
    /// read.)
    #[inline(always)]
    fn start(&mut self, i: usize, node: &Node, node_epoch: &NodeEpoch) {
        self.base_weight[i] = 0;
        self.active[i] = false;
        self.online_capacity_bps[i] = 0;
        self.settled_usd[i] = node_epoch.settled_usd.0;
        self.burn_usd[i] = node_epoch.burn_usd.0;
        self.region[i] = node.region.index() as u8;
        self.subnet_group[i] = node.subnet_group;
        self.account[i] = node.account;
        self.registered[i] = node.active;
        self.group_left[i] = node_epoch.group_left.unwrap_or(NO_GROUP);
    }

    /// The row of a node still registered after this epoch's slashes.
    #[inline(always)]
    fn weigh(&mut self, i: usize, params: &Params, node: &Node, staked: u128, judged: Judged, sums: &mut Sums) {
        self.active[i] = true;
        // At most the verified capacity: fits 64 bits.
        self.online_capacity_bps[i] = ppm_of(node.verified_capacity_bps as u128, node.uptime_ppm as u128) as u64;
        self.base_weight[i] = weigh_node(params, node, staked, judged, sums);
    }
}

/// Steps 1–2 over every node, at the epoch's end `now_secs` (what a slash
/// counts as vested); the parts of the pass run on `workers` when no slash
/// can happen in it (see `aggregate_in_parts`).
/// `kept`: the rows of an earlier epoch to write over (`EpochBuffers`).
pub fn aggregate(
    state: &mut State,
    now_secs: u64,
    report: &mut EpochReport,
    workers: &impl Workers,
    kept: Option<Measured>,
) -> Measured {
    let mut out = Measured::for_nodes(state.nodes.len(), kept);
    let oracle_weights: Vec<u128> = (0..state.oracles.len()).map(|o| oracle_weight(state, o)).collect();
    let sums = match aggregate_in_parts(state, &mut out, &oracle_weights, workers) {
        Some(sums) => sums,
        None => aggregate_in_order(state, &mut out, oracle_weights, now_secs, report),
    };
    report.measured_nodes += sums.measured_nodes;
    out.active_nodes = sums.active_nodes;
    share_subnets(&mut out, state.subnet_index.len());
    slash::oracle_deviation(state, &sums.good, &sums.bad, report);
    out
}

/// Counts each subnet group's nodes, and sums each region's online
/// capacity with a group's nodes sharing one node's: the group's mean, as
/// in `capped_weights`. Counted once per node, fifty identities of one farm
/// on one line would otherwise show fifty lines of supply, and lower their
/// region's scarcity multiplier for every honest node there.
///
/// A group's nodes are all those registered in it at any time in the
/// epoch: those registered at its end (an ejection by this epoch's slash
/// included) and those that left it during the epoch, by deregistering or
/// moving to another /24 (/48) (ADR 0010). Counting only the nodes still
/// there at the end, a farm deregistered the identities whose measurement
/// went badly before the end, and its lucky ones shared their weight
/// among themselves alone (the next epoch they registered again).
fn share_subnets(out: &mut Measured, n_groups: usize) {
    let mut subnet_nodes = vec![0u32; n_groups];
    for ((&g, &registered), &left) in out.subnet_group.iter().zip(&out.registered).zip(&out.group_left) {
        subnet_nodes[g as usize] += registered as u32;
        // A node back in the group it left is counted there once.
        if left != NO_GROUP && !(registered && left == g) {
            subnet_nodes[left as usize] += 1;
        }
    }
    let mut online_bps = [0u128; MacroRegion::COUNT];
    for ((&online, &g), &r) in out.online_capacity_bps.iter().zip(&out.subnet_group).zip(&out.region) {
        if online > 0 {
            online_bps[r as usize] += member_share(online as u128, subnet_nodes[g as usize]);
        }
    }
    (out.subnet_nodes, out.online_bps) = (subnet_nodes, online_bps);
}

/// A node's share of what its subnet group of `members` registered nodes
/// shares: its own `value` over `members`, rounded down. Most nodes are
/// alone in their subnet: no division at all.
fn member_share(value: u128, members: u32) -> u128 {
    if members > 1 {
        mul_div_floor(value, 1, members as u128)
    } else {
        value
    }
}

/// The pass in node order on this thread: a slash takes effect at once
/// (the slashed account's oracle, if it has one, weighs less for the nodes
/// after it).
fn aggregate_in_order(
    state: &mut State,
    out: &mut Measured,
    mut oracle_weights: Vec<u128>,
    now_secs: u64,
    report: &mut EpochReport,
) -> Sums {
    let epoch = state.epoch;
    let mut sums = Sums::new(state.oracles.len());
    let mut rows = Rows::of(out);
    for n in 0..state.nodes.len() {
        let (node, node_epoch) = (&mut state.nodes[n], &mut state.node_epochs[n]);
        rows.start(n, node, node_epoch);
        if !node.active && node_epoch.reports.is_empty() {
            node_epoch.reset();
            continue;
        }
        let (over_claim, mut judged) =
            measure_node(&state.params, epoch, node, node_epoch, &oracle_weights, &mut sums);
        if let Some(over_claim) = over_claim {
            slash::slash_node(state, n, &over_claim, now_secs, report);
            // Rewarded on the claim the slash reset to the verified one.
            judged.rho_measured = None;
            judged.claim_bps = state.nodes[n].spec.claimed_capacity_bps;
            let mut slashed = vec![state.nodes[n].account];
            for &o in &over_claim.vouching {
                slash::slash_vouching_oracle(state, o as usize, n, over_claim.rho_ppm, report);
                slashed.push(state.oracles[o as usize].account);
            }
            // The slashes took stake from these accounts: an oracle of one
            // of them weighs less from now on.
            for (o, w) in oracle_weights.iter_mut().enumerate() {
                if slashed.contains(&state.oracles[o].account) {
                    *w = oracle_weight(state, o);
                }
            }
        }
        let node = &state.nodes[n];
        if !node.active {
            continue; // left in the epoch (judged, not rewarded), or ejected by the slash
        }
        let staked = state.accounts[node.account as usize].staked.0;
        rows.weigh(n, &state.params, node, staked, judged, &mut sums);
    }
    sums
}

/// The pass split into parts of consecutive nodes on `workers`, when it
/// has more than one part and no node holds a strike (only a node with a
/// strike from an earlier epoch can be slashed now, and a slash is what
/// would make one node's result depend on another's). `None`, having
/// changed nothing, otherwise. Same result as `aggregate_in_order`.
fn aggregate_in_parts(
    state: &mut State,
    out: &mut Measured,
    oracle_weights: &[u128],
    workers: &impl Workers,
) -> Option<Sums> {
    let ranges = workers::ranges(state.nodes.len(), workers.parts(state.nodes.len()));
    if ranges.len() < 2 {
        return None;
    }
    let struck: Vec<AtomicBool> = ranges.iter().map(|_| AtomicBool::new(false)).collect();
    let nodes = &state.nodes;
    workers.run((0..ranges.len()).collect(), &|i| {
        let (start, end) = ranges[i];
        let any = nodes[start..end].iter().any(|n| n.active && n.strike.is_some());
        struck[i].store(any, Ordering::Relaxed);
    });
    if struck.iter().any(|s| s.load(Ordering::Relaxed)) {
        return None;
    }
    let lengths = || ranges.iter().map(|&(s, e)| e - s);
    let mut sums: Vec<Sums> = ranges.iter().map(|_| Sums::new(oracle_weights.len())).collect();
    let State { params, epoch, nodes, node_epochs, accounts, .. } = state;
    let (params, epoch, accounts) = (&*params, *epoch, &*accounts);
    let mut rows = Vec::with_capacity(ranges.len());
    let mut rest = Rows::of(out);
    for n in lengths() {
        let (part, after) = rest.split_at(n);
        rows.push(part);
        rest = after;
    }
    let parts: Vec<_> = split_lengths(nodes, lengths())
        .into_iter()
        .zip(split_lengths(node_epochs, lengths()))
        .zip(rows)
        .zip(sums.iter_mut())
        .map(|(((nodes, node_epochs), rows), sums)| (nodes, node_epochs, rows, sums))
        .collect();
    workers.run(parts, &|(nodes, node_epochs, mut rows, sums)| {
        for (i, (node, node_epoch)) in nodes.iter_mut().zip(node_epochs.iter_mut()).enumerate() {
            rows.start(i, node, node_epoch);
            if !node.active && node_epoch.reports.is_empty() {
                node_epoch.reset();
                continue;
            }
            let (over_claim, judged) = measure_node(params, epoch, node, node_epoch, oracle_weights, sums);
            // A node that left in the epoch had no strike (DeregisterNode
            // refuses one), so it cannot be confirmed either.
            assert!(over_claim.is_none(), "a slash confirmed for a node without a strike");
            if !node.active {
                continue; // left in the epoch: judged, not rewarded
            }
            let staked = accounts[node.account as usize].staked.0;
            rows.weigh(i, params, node, staked, judged, sums);
        }
    });
    let mut total = Sums::new(oracle_weights.len());
    for s in &sums {
        total.add(s);
    }
    Some(total)
}

/// The regional scarcity multiplier per macro-region: target capacity
/// (recent demand × headroom, at least the floor) over online capacity,
/// clamped. Recomputed every epoch, so the hour a region thins out is the
/// hour its uptime pays most.
pub fn regional_multipliers(state: &mut State, measured: &Measured) -> Vec<RegionSummary> {
    let p = state.params.clone();
    let mut out = Vec::with_capacity(MacroRegion::COUNT);
    for (r, region) in state.regions.iter_mut().enumerate() {
        let sample_bps = mul_div_floor(region.settled_bytes_epoch as u128, 8, p.epoch_secs as u128);
        let alpha = p.region_demand_alpha_ppm as u128;
        let demand = (region.demand_bps as u128 * (PPM - alpha) + sample_bps * alpha) / PPM;
        region.demand_bps = demand.min(u64::MAX as u128) as u64;
        let target = ppm_of(demand, p.region_target_headroom_ppm as u128).max(p.region_target_floor_bps as u128);
        let online = measured.online_bps[r];
        let multiplier = if online == 0 {
            p.region_multiplier_max_ppm as u128
        } else {
            mul_div_floor(target, PPM, online)
                .clamp(p.region_multiplier_min_ppm as u128, p.region_multiplier_max_ppm as u128)
        };
        region.multiplier_ppm = multiplier as u32;
        region.online_capacity_bps = online.min(u64::MAX as u128) as u64;
        region.target_capacity_bps = target.min(u64::MAX as u128) as u64;
        out.push(RegionSummary {
            active_nodes: measured.active_nodes[r],
            online_capacity_bps: region.online_capacity_bps,
            target_capacity_bps: region.target_capacity_bps,
            demand_bps: region.demand_bps,
            multiplier_ppm: region.multiplier_ppm,
            uptime_rewards: tollway_types::Token::ZERO,
        });
    }
    out
}

/// Final uptime weights: base × regional multiplier; then the nodes of one
/// /24 or /48 share one node's weight, the group's mean: each node's weight
/// divided by the number of the group's registered nodes.
///
/// The mean, not the largest: identities of one farm on one line are
/// measured alike, so the largest of fifty noisy measurements beats what
/// one honest node on the same kind of line is measured at (in the
/// simulator's attack the farm earned 5–10 % more than such a node, on
/// each of eight seeds), while the mean of n identically measured
/// identities is, in expectation, exactly one node's weight. The
/// divisor counts the nodes registered in the group at any time in the
/// epoch (`share_subnets`), not only those that earned something this
/// epoch, nor only those still there at its end: otherwise a farm could
/// take an identity whose measurement went badly offline, or out of the
/// group, for the rest of the epoch and share only its best identities'
/// weights.
/// Into `weights`, one per node (an earlier epoch's are written over), in
/// parts of consecutive nodes on `workers`.
pub fn capped_weights(
    state: &State,
    measured: &Measured,
    regions: &[RegionSummary],
    weights: &mut Vec<u128>,
    workers: &impl Workers,
) {
    let n_nodes = state.nodes.len();
    weights.resize(n_nodes, 0);
    let ranges = workers::ranges(n_nodes, workers.parts(n_nodes));
    let parts: Vec<_> = split_lengths(weights, ranges.iter().map(|&(s, e)| e - s)).into_iter().zip(&ranges).collect();
    workers.run(parts, &|(weights, &(start, _)): (&mut [u128], &(usize, usize))| {
        for (n, weight) in (start..).zip(weights.iter_mut()) {
            let base = measured.base_weight[n];
            *weight = if base == 0 {
                0
            } else {
                let w = ppm_of(base, regions[measured.region[n] as usize].multiplier_ppm as u128);
                member_share(w, measured.subnet_nodes[measured.subnet_group[n] as usize])
            };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted3_sorts_and_latency_tiers_count_as_the_first_tier_that_holds() {
        for a in 0..5 {
            for b in 0..5 {
                for c in 0..5 {
                    let mut want = [a, b, c];
                    want.sort_unstable();
                    assert_eq!(sorted3([a, b, c]), want);
                }
            }
        }
        let p = Params::default_params();
        for latency_us in (0..2_000_000).step_by(500) {
            let ms = latency_us / 1000;
            let tier = p.latency_tier_max_ms.iter().position(|&max| ms <= max).unwrap_or(4);
            assert_eq!(latency_multiplier_ppm(latency_us, &p), p.latency_tier_multiplier_ppm[tier], "{latency_us}");
        }
    }

    /// Three measurements: the medians from the slots are those of the
    /// sample lists; any other mix of reports takes the lists.
    #[test]
    fn medians_of_three_measurements_are_the_sample_lists_medians() {
        let weights: Vec<u128> = vec![1, 2, 3, 5, 8, 1 << 70];
        let mut z = 11u64;
        let mut next = |m: u64| {
            z = z.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (z >> 33) % m
        };
        for _ in 0..5_000 {
            let slots: Vec<ReportSlot> = (0..3)
                .map(|_| ReportSlot {
                    oracle: next(weights.len() as u64) as OracleIdx,
                    outcome: MeasurementOutcome::Measured { throughput_bps: next(5), latency_us: next(4) as u32 },
                    uptime_ppm: next(3) as u32,
                })
                .collect();
            let (mut t, mut l, mut u) = (Samples::EMPTY, Samples::EMPTY, Samples::EMPTY);
            for s in &slots {
                let w = weights[s.oracle as usize];
                if let MeasurementOutcome::Measured { throughput_bps, latency_us } = s.outcome {
                    t.push(throughput_bps, w);
                    l.push(flip(latency_us as u64), w);
                }
                u.push(s.uptime_ppm as u64, w);
            }
            let want = (u.weighted_median(), t.weighted_median(), flip(l.weighted_median()));
            assert_eq!(medians_of_three_measured(&slots, &weights), Some(want), "{slots:?}");
        }
        let unreachable = ReportSlot { oracle: 0, outcome: MeasurementOutcome::Unreachable, uptime_ppm: 0 };
        let measured = ReportSlot { outcome: MeasurementOutcome::Measured { throughput_bps: 1, latency_us: 1 }, ..unreachable };
        assert_eq!(medians_of_three_measured(&[measured, measured, unreachable], &weights), None);
        assert_eq!(medians_of_three_measured(&[measured, measured], &weights), None);
    }

    /// Oracles whose stakes sum above 2^127: the rule doubled a
    /// cumulative weight to compare it with the total, which overflowed
    /// (a panic in debug builds, a wrapped sum and a wrong median in
    /// release ones). The rule does not depend on the weights' scale, so
    /// scaled up to near 2^128 in all they pick what the small weights do.
    #[test]
    fn medians_of_stakes_summing_above_2_pow_127_are_those_of_the_same_stakes_scaled_down() {
        let mut z = 5u64;
        let mut next = |m: u64| {
            z = z.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (z >> 33) % m
        };
        let max_weight = 7u64;
        for len in 1..=MAX_ORACLES_PER_NODE {
            let scale = u128::MAX / (len as u128 * max_weight as u128);
            for _ in 0..2_000 {
                let (mut small, mut large) = (Samples::EMPTY, Samples::EMPTY);
                for _ in 0..len {
                    let (value, weight) = (next(5), 1 + next(max_weight) as u128);
                    small.push(value, weight);
                    large.push(value, weight * scale);
                }
                let items = small.items;
                assert_eq!(large.weighted_median(), small.weighted_median(), "{:?}", &items[..len]);
            }
        }
    }

    /// ADR 0019 over random mixes of reports: with the oracles a node
    /// turned away counted as the worst measurement, its throughput median
    /// is never above the median of the measurements alone (turning an
    /// oracle away never pays) and never below their lowest (an
    /// unreachable report is never a strike alone); latency the same way
    /// round.
    #[test]
    fn a_turned_away_oracle_lowers_the_median_at_most_to_the_worst_measurement() {
        let p = Params::default_params();
        let weights: Vec<u128> = vec![1, 2, 3, 5, 8, 13, 1 << 70];
        let mut z = 13u64;
        let mut next = |m: u64| {
            z = z.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (z >> 33) % m
        };
        let mut lowered = 0;
        for _ in 0..20_000 {
            let mut reports = Reports::default();
            let len = 1 + next(MAX_ORACLES_PER_NODE as u64) as usize;
            let (mut throughput, mut latency) = (Samples::EMPTY, Samples::EMPTY);
            for (oracle, &weight) in weights.iter().enumerate().take(len) {
                let outcome = match next(4) {
                    0 => MeasurementOutcome::Unreachable,
                    1 => MeasurementOutcome::OracleError,
                    _ => MeasurementOutcome::Measured { throughput_bps: next(6), latency_us: next(5) as u32 },
                };
                if let MeasurementOutcome::Measured { throughput_bps, latency_us } = outcome {
                    throughput.push(throughput_bps, weight);
                    latency.push(flip(latency_us as u64), weight);
                }
                assert!(reports.push(ReportSlot { oracle: oracle as OracleIdx, outcome, uptime_ppm: 1_000_000 }));
            }
            let agg = aggregate_reports(&p, &reports, &weights, &mut Sums::new(weights.len()));
            let Some(median) = agg.throughput_bps else {
                assert!(throughput.len < p.min_reports as usize);
                continue;
            };
            let slots = reports.as_slice();
            let (measured_only, lowest) = (throughput.weighted_median(), throughput.lowest());
            assert!((lowest..=measured_only).contains(&median), "{slots:?}");
            let (latency_measured_only, worst) = (flip(latency.weighted_median()), flip(latency.lowest()));
            assert!((latency_measured_only..=worst).contains(&(agg.latency_us as u64)), "{slots:?}");
            lowered += usize::from(median < measured_only);
        }
        assert!(lowered > 100, "the rule lowered only {lowered} medians: the cases miss it");
    }

    /// The branch-free median of three is the rule's, ties included.
    #[test]
    fn the_median_of_three_is_the_sorted_walks() {
        let mut z = 7u64;
        let mut next = |m: u64| {
            z = z.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (z >> 33) % m
        };
        for case in 0..20_000 {
            let mut s = Samples::EMPTY;
            // Few distinct values and weights: many ties and exact halves.
            let (values, weights) = if case % 2 == 0 { (4, 3) } else { (1 << 40, 1 << 50) };
            for _ in 0..3 {
                s.push(next(values), 1 + next(weights) as u128);
            }
            let three = s.weighted_median_of_three();
            // The rule the obvious way: sort, walk the cumulative weight.
            let mut sorted = s.items[..3].to_vec();
            sorted.sort_by_key(|x| x.0);
            let total: u128 = sorted.iter().map(|x| x.1).sum();
            let mut cumulative = 0;
            let want = sorted
                .iter()
                .find(|x| {
                    cumulative += x.1;
                    cumulative * 2 >= total
                })
                .map_or(0, |x| x.0);
            assert_eq!(three, want, "{:?}", &s.items[..3]);
        }
    }
}
