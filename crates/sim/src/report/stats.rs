//! Statistics over Monte Carlo runs: per-epoch bands (median with the
//! 10th–90th percentile) for the charts, and the per-scenario summary of
//! the sustainability metrics for the table and the JSON summary.
//!
//! Everything here is a pure function of its input, computed in a fixed
//! order, so the report is byte-for-byte reproducible.

use serde::Serialize;

use crate::output::{EpochRow, RunSummary, ScenarioResult, REGIONS};
use crate::spill::{RunStore, SpillError, POINT_BYTES, POINT_VALUES};

/// Charts never draw more points than this per series: longer runs are
/// averaged over buckets of consecutive epochs first (an hourly run over
/// three years has 26,280 epochs; a chart is about 1,000 pixels wide).
pub const MAX_CHART_POINTS: usize = 800;

/// One x position of a band: the median across runs and the spread.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BandPoint {
    pub day: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

/// The 10th, 50th and 90th percentiles of a set of values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

impl Spread {
    /// `None` when no value is finite.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let sorted = sorted_finite(values);
        if sorted.is_empty() {
            return None;
        }
        Some(Spread {
            p10: quantile_sorted(&sorted, 0.10),
            p50: quantile_sorted(&sorted, 0.50),
            p90: quantile_sorted(&sorted, 0.90),
        })
    }

    /// Whether the runs disagree enough for the spread to be worth showing.
    pub fn is_wide(&self) -> bool {
        let scale = self.p10.abs().max(self.p90.abs()).max(f64::MIN_POSITIVE);
        (self.p90 - self.p10) / scale > 1e-9
    }
}

/// The finite values, sorted ascending.
pub fn sorted_finite(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Quantile `q` (0..=1) of ascending `sorted` values, interpolating
/// linearly between order statistics (Hyndman & Fan type 7, what numpy
/// and R use by default). `+inf` entries are allowed ("never").
/// Panics on an empty slice: callers check.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "quantile of no values");
    let at = QuantileAt::of(sorted.len(), q);
    at.between(sorted[at.lo], sorted[at.hi])
}

/// Where quantile `q` of `len` ascending values lies: between the order
/// statistics `lo` and `hi` (0-based ranks), `frac` of the way.
#[derive(Clone, Copy, Debug)]
struct QuantileAt {
    lo: usize,
    hi: usize,
    frac: f64,
}

impl QuantileAt {
    /// `len` ≥ 1.
    fn of(len: usize, q: f64) -> QuantileAt {
        let pos = q.clamp(0.0, 1.0) * (len - 1) as f64;
        let lo = pos.floor() as usize;
        QuantileAt { lo, hi: pos.ceil() as usize, frac: pos - lo as f64 }
    }

    /// The quantile from the values of rank `lo` (`a`) and `hi` (`b`).
    fn between(self, a: f64, b: f64) -> f64 {
        if self.lo == self.hi || self.frac == 0.0 || a == b {
            a
        } else if b.is_infinite() {
            b
        } else {
            a + (b - a) * self.frac
        }
    }
}

/// Values read where they are kept, in memory or in a spill file, as many
/// times as asked: the source of [`quantiles`] and [`histogram`].
pub trait Values {
    /// Calls `f` with every value, in a fixed order.
    fn scan(&self, f: &mut dyn FnMut(f64)) -> Result<(), SpillError>;
}

impl Values for &[f64] {
    fn scan(&self, f: &mut dyn FnMut(f64)) -> Result<(), SpillError> {
        self.iter().for_each(|&v| f(v));
        Ok(())
    }
}

impl Values for RunStore {
    /// The operator profits of the store's runs.
    fn scan(&self, f: &mut dyn FnMut(f64)) -> Result<(), SpillError> {
        self.scan_profits(f)
    }
}

/// The quantiles `qs` of the finite values of all `sources` together,
/// exactly as [`quantile_sorted`] of [`sorted_finite`] gives them, to the
/// bit; `None` when no value is finite. At most `COLLECT_MAX_VALUES`
/// (2^19) of them are in memory at once for each order statistic sought
/// (`sources` may be GBs on disk): each is selected by a few passes over
/// them (`select_ranks`).
pub fn quantiles(sources: &[&dyn Values], qs: &[f64]) -> Result<Option<Vec<f64>>, SpillError> {
    quantiles_collecting(sources, qs, COLLECT_MAX_VALUES)
}

fn quantiles_collecting(sources: &[&dyn Values], qs: &[f64], collect_max: u64) -> Result<Option<Vec<f64>>, SpillError> {
    let mut n = 0usize;
    for source in sources {
        source.scan(&mut |v| n += usize::from(v.is_finite()))?;
    }
    if n == 0 {
        return Ok(None);
    }
    let at: Vec<QuantileAt> = qs.iter().map(|&q| QuantileAt::of(n, q)).collect();
    let ranks: Vec<u64> = at.iter().flat_map(|a| [a.lo as u64, a.hi as u64]).collect();
    let selected = select_ranks(sources, n as u64, &ranks, collect_max)?;
    Ok(Some(at.iter().zip(selected.chunks_exact(2)).map(|(a, v)| a.between(v[0], v[1])).collect()))
}

/// Bits of the order key that one counting pass of [`select_ranks`]
/// narrows: 65,536 buckets (512 KiB of counts), four passes at most.
const RADIX_BITS: u32 = 16;

/// The most values [`select_ranks`] collects to sort, per group of ranks
/// (8 bytes each: 4 MiB): a group of more is narrowed by counting first.
const COLLECT_MAX_VALUES: u64 = 1 << 19;

/// A u64 whose order is `f64::total_cmp`'s: a negative value's bits all
/// flipped, a positive one's sign bit set. So -0.0 sorts before 0.0, as
/// in [`sorted_finite`].
fn order_key(v: f64) -> u64 {
    let bits = v.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

fn of_order_key(key: u64) -> f64 {
    if key >> 63 == 1 {
        f64::from_bits(key & !(1 << 63))
    } else {
        f64::from_bits(!key)
    }
}

/// Ranks sought among the values whose order key begins with `prefix`
/// (its top `prefix_bits` bits), `count` of them.
struct RankGroup {
    prefix: u64,
    prefix_bits: u32,
    count: u64,
    /// (where the answer goes, rank within the group)
    wanted: Vec<(usize, u64)>,
}

impl RankGroup {
    fn holds(&self, key: u64) -> bool {
        self.prefix_bits == 0 || key >> (64 - self.prefix_bits) == self.prefix
    }
}

/// What one pass keeps of a group's values.
enum Tally {
    /// Their order keys, to sort: few enough.
    Keys(Vec<u64>),
    /// How many fall in each bucket of the next [`RADIX_BITS`] bits.
    Buckets(Vec<u64>),
}

/// The values of ranks `ranks` (0-based, each < `n`, the number of finite
/// values) in the ascending `total_cmp` order of the finite values of
/// `sources`: an exact selection in a few passes, memory bounded whatever
/// `n`. Each pass, a group of ranks whose values share a key prefix
/// either collects those values (at most `collect_max`) and sorts them, or
/// counts them by the next 16 bits of their key and narrows each rank to
/// its bucket; after four counts the key is whole.
fn select_ranks(sources: &[&dyn Values], n: u64, ranks: &[u64], collect_max: u64) -> Result<Vec<f64>, SpillError> {
    assert!(ranks.iter().all(|&r| r < n), "ranks {ranks:?} of {n} values");
    let mut out = vec![f64::NAN; ranks.len()];
    let mut groups =
        vec![RankGroup { prefix: 0, prefix_bits: 0, count: n, wanted: ranks.iter().copied().enumerate().collect() }];
    while !groups.is_empty() {
        let mut tallies: Vec<Tally> = (groups.iter())
            .map(|g| {
                if g.count <= collect_max {
                    Tally::Keys(Vec::with_capacity(g.count as usize))
                } else {
                    Tally::Buckets(vec![0; 1 << RADIX_BITS])
                }
            })
            .collect();
        for source in sources {
            source.scan(&mut |v| {
                if !v.is_finite() {
                    return;
                }
                let key = order_key(v);
                for (g, tally) in groups.iter().zip(tallies.iter_mut()) {
                    if !g.holds(key) {
                        continue;
                    }
                    match tally {
                        Tally::Keys(keys) => keys.push(key),
                        Tally::Buckets(counts) => {
                            let shift = 64 - g.prefix_bits - RADIX_BITS;
                            counts[((key >> shift) & ((1 << RADIX_BITS) - 1)) as usize] += 1;
                        }
                    }
                }
            })?;
        }
        let mut next: Vec<RankGroup> = Vec::new();
        for (g, tally) in groups.into_iter().zip(tallies) {
            match tally {
                Tally::Keys(mut keys) => {
                    assert_eq!(keys.len() as u64, g.count, "the values changed between passes");
                    keys.sort_unstable();
                    for (slot, rank) in g.wanted {
                        out[slot] = of_order_key(keys[rank as usize]);
                    }
                }
                Tally::Buckets(counts) => {
                    assert_eq!(counts.iter().sum::<u64>(), g.count, "the values changed between passes");
                    let prefix_bits = g.prefix_bits + RADIX_BITS;
                    for (slot, rank) in g.wanted {
                        let (mut bucket, mut below) = (0usize, 0u64);
                        while below + counts[bucket] <= rank {
                            below += counts[bucket];
                            bucket += 1;
                        }
                        let prefix = g.prefix << RADIX_BITS | bucket as u64;
                        if prefix_bits == 64 {
                            // The key is whole: every value of the bucket is this one.
                            out[slot] = of_order_key(prefix);
                        } else if let Some(same) =
                            next.iter_mut().find(|n| n.prefix_bits == prefix_bits && n.prefix == prefix)
                        {
                            same.wanted.push((slot, rank - below));
                        } else {
                            let wanted = vec![(slot, rank - below)];
                            next.push(RankGroup { prefix, prefix_bits, count: counts[bucket], wanted });
                        }
                    }
                }
            }
        }
        groups = next;
    }
    Ok(out)
}

/// How many consecutive epochs one point of a chart averages, for runs
/// of `n_epochs` (the longest run's).
pub fn epochs_per_point(n_epochs: usize) -> usize {
    n_epochs.div_ceil(MAX_CHART_POINTS).max(1)
}

/// A series the charts draw, one number per epoch of a run: what
/// [`RunChart`] keeps, and [`band`] spreads over runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charted {
    PriceUsd,
    CirculatingTwy,
    MintedTwy,
    BurnedTwy,
    ConsumerPriceUsdPerGb,
    /// The lowest liquidity of any region, in percent.
    WorstLiquidityPercent,
    /// Active nodes in a region (its index in `REGIONS`).
    Nodes(usize),
    VerifiedCapacityGbps(usize),
    LiquidityPercent(usize),
}

/// The series a [`RunChart`] keeps per point: the day, then every
/// [`Charted`].
const CHART_SERIES: usize = POINT_VALUES;

impl Charted {
    /// The series' index in a [`RunChart`] point (0 is the day).
    fn index(self) -> usize {
        let n = REGIONS.len();
        match self {
            Charted::PriceUsd => 1,
            Charted::CirculatingTwy => 2,
            Charted::MintedTwy => 3,
            Charted::BurnedTwy => 4,
            Charted::ConsumerPriceUsdPerGb => 5,
            Charted::WorstLiquidityPercent => 6,
            Charted::Nodes(r) => 7 + r.min(n - 1),
            Charted::VerifiedCapacityGbps(r) => 7 + n + r.min(n - 1),
            Charted::LiquidityPercent(r) => 7 + 2 * n + r.min(n - 1),
        }
    }

    /// The series' value in one epoch.
    pub fn of(self, row: &EpochRow) -> f64 {
        let region = |r: usize| r.min(REGIONS.len() - 1);
        match self {
            Charted::PriceUsd => row.price_usd,
            Charted::CirculatingTwy => row.circulating_twy,
            Charted::MintedTwy => row.minted_twy,
            Charted::BurnedTwy => row.burned_twy,
            Charted::ConsumerPriceUsdPerGb => row.consumer_price_usd_per_gb,
            Charted::WorstLiquidityPercent => worst_region_liquidity(row) * 100.0,
            Charted::Nodes(r) => f64::from(row.nodes_by_region[region(r)]),
            Charted::VerifiedCapacityGbps(r) => row.verified_capacity_gbps_by_region[region(r)],
            Charted::LiquidityPercent(r) => row.liquidity_by_region[region(r)] * 100.0,
        }
    }

    /// Every series, in point order after the day.
    fn all() -> impl Iterator<Item = Charted> {
        let n = REGIONS.len();
        [
            Charted::PriceUsd,
            Charted::CirculatingTwy,
            Charted::MintedTwy,
            Charted::BurnedTwy,
            Charted::ConsumerPriceUsdPerGb,
            Charted::WorstLiquidityPercent,
        ]
        .into_iter()
        .chain((0..n).map(Charted::Nodes))
        .chain((0..n).map(Charted::VerifiedCapacityGbps))
        .chain((0..n).map(Charted::LiquidityPercent))
    }
}

/// What the charts and the summary need of one run's rows, so that the
/// rows themselves need not stay in memory once written (a run of 730
/// epochs held 0.4 MB of rows; 5,000 runs held GBs): per point (a bucket
/// of consecutive epochs), the mean of every [`Charted`] series and of the
/// day over the bucket's finite values (not a number where none is
/// finite). At most [`MAX_CHART_POINTS`] points of 31 f64 each, 250 bytes
/// a point: 0.18 MB for 730 daily epochs, which kept for every run grew
/// with the runs (0.9 GB at 5,000). The percentiles across runs need
/// every run's value at each point (they are exact), so the points go to
/// the scenario's [`RunStore`] (a file beside the runs' CSVs for `tollway
/// sim`), and this keeps where they are: a few dozen bytes a run, and the
/// first run's epoch days.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunChart {
    /// Epochs of the run.
    pub epochs: usize,
    /// Epochs each point averages.
    pub epochs_per_point: usize,
    /// The day at the end of the last epoch.
    pub last_day: Option<f64>,
    /// Every epoch's number and day, where kept (a scenario's first run:
    /// the day burn caught up with mint is read from it).
    pub epoch_days: Option<Vec<(u64, f64)>>,
    /// The index of the run's first point in its store.
    first_point: u64,
    /// Its points.
    n_points: usize,
}

impl RunChart {
    /// `rows` in points of `epochs_per_point` epochs (at least 1), the
    /// points appended to `store`.
    pub fn of(
        rows: &[EpochRow],
        epochs_per_point: usize,
        with_epoch_days: bool,
        store: &RunStore,
    ) -> Result<RunChart, SpillError> {
        let bucket = epochs_per_point.max(1);
        let series: Vec<Charted> = Charted::all().collect();
        debug_assert_eq!(series.len() + 1, CHART_SERIES);
        let points: Vec<[f64; CHART_SERIES]> = rows
            .chunks(bucket)
            .map(|chunk| {
                let mut point = [f64::NAN; CHART_SERIES];
                point[0] = mean_finite(chunk.iter().map(|r| r.day)).unwrap_or(f64::NAN);
                for &s in &series {
                    point[s.index()] = mean_finite(chunk.iter().map(|r| s.of(r))).unwrap_or(f64::NAN);
                }
                point
            })
            .collect();
        let first_point = store.append_points(&points)?;
        Ok(RunChart {
            epochs: rows.len(),
            epochs_per_point: bucket,
            last_day: rows.last().map(|r| r.day),
            epoch_days: with_epoch_days.then(|| rows.iter().map(|r| (r.epoch, r.day)).collect()),
            first_point,
            n_points: points.len(),
        })
    }

    /// Heap bytes this holds: the epoch days, where kept.
    pub fn bytes_held(&self) -> usize {
        self.epoch_days.as_ref().map_or(0, |d| d.capacity() * std::mem::size_of::<(u64, f64)>())
    }
}

/// Bytes of chart points [`ScenarioBands::of`] reads at a time: a block
/// of consecutive points of every run, so the memory the bands take is
/// bounded whatever the number of runs (at least one point of every run:
/// 2.5 MB at the 10,000 runs a scenario may have).
pub const BAND_BLOCK_BYTES: usize = 16 << 20;

/// The points of every run [`ScenarioBands::within`] reads at a time, for
/// `runs` runs in `budget_bytes`: at least one.
pub fn points_per_block(runs: usize, budget_bytes: usize) -> usize {
    (budget_bytes / (runs.max(1) * POINT_BYTES)).max(1)
}

/// The band of every [`Charted`] series of one scenario, read from its
/// store once (the report draws each several times).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScenarioBands {
    /// By [`Charted::index`] less one.
    bands: Vec<Vec<BandPoint>>,
}

impl ScenarioBands {
    /// The bands of `scenario`, its points read [`BAND_BLOCK_BYTES`] at a
    /// time.
    pub fn of(scenario: &ScenarioResult) -> Result<ScenarioBands, SpillError> {
        ScenarioBands::within(scenario, BAND_BLOCK_BYTES)
    }

    /// Per-epoch band of every series across the scenario's runs: for each
    /// bucket of consecutive epochs, each run's mean over the bucket, then
    /// the percentiles of those means across runs. Runs may differ in
    /// length; non-finite values are left out. The runs' charts share
    /// their bucket ([`crate::output::ScenarioResult::of_runs`] sees to
    /// it). The points are read in blocks of [`points_per_block`] points
    /// of every run, `budget_bytes` at most (but one point of every run).
    pub fn within(scenario: &ScenarioResult, budget_bytes: usize) -> Result<ScenarioBands, SpillError> {
        let runs = &scenario.runs;
        let mut bands: Vec<Vec<BandPoint>> = vec![Vec::new(); CHART_SERIES - 1];
        // The x positions come from the longest run (the first one on a tie).
        let Some((longest, longest_run)) = runs.iter().enumerate().rev().max_by_key(|(_, r)| r.chart.epochs) else {
            return Ok(ScenarioBands { bands });
        };
        debug_assert!(runs.iter().all(|r| r.chart.epochs_per_point == longest_run.chart.epochs_per_point));
        let n_points = longest_run.chart.n_points;
        let block = points_per_block(runs.len(), budget_bytes).min(n_points.max(1));
        // Per run, its points of the block (`block` slots each) and how
        // many of them it has.
        let mut points = vec![[f64::NAN; CHART_SERIES]; runs.len() * block];
        let mut in_block = vec![0usize; runs.len()];
        let mut bytes = Vec::new();
        let mut per_run = Vec::with_capacity(runs.len());
        for start in (0..n_points).step_by(block) {
            for ((run, slots), n) in runs.iter().zip(points.chunks_exact_mut(block)).zip(in_block.iter_mut()) {
                *n = run.chart.n_points.min(start + block).saturating_sub(start);
                if *n > 0 {
                    scenario.store.read_points(run.chart.first_point + start as u64, &mut slots[..*n], &mut bytes)?;
                }
            }
            for k in 0..block.min(n_points - start) {
                // Not a number: no finite day in the bucket.
                let day = points[longest * block + k][0];
                if day.is_nan() {
                    continue;
                }
                for (index, band) in bands.iter_mut().enumerate().map(|(i, b)| (i + 1, b)) {
                    per_run.clear();
                    // In run order, those that reach point k.
                    let of_runs = points.chunks_exact(block).zip(&in_block).filter(|(_, n)| k < **n);
                    per_run.extend(of_runs.map(|(slots, _)| slots[k][index]));
                    if let Some(s) = Spread::of(per_run.iter().copied()) {
                        band.push(BandPoint { day, p10: s.p10, p50: s.p50, p90: s.p90 });
                    }
                }
            }
        }
        Ok(ScenarioBands { bands })
    }

    /// The band of `series`.
    pub fn band(&self, series: Charted) -> &[BandPoint] {
        self.bands.get(series.index() - 1).map_or(&[], Vec::as_slice)
    }
}

/// Per-epoch band of `series` across the runs of `scenario`
/// ([`ScenarioBands::within`]).
pub fn band(scenario: &ScenarioResult, series: Charted) -> Result<Vec<BandPoint>, SpillError> {
    Ok(ScenarioBands::of(scenario)?.band(series).to_vec())
}

/// The mean of the finite values, `None` if there are none.
fn mean_finite(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.filter(|v| v.is_finite()).fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The lowest liquidity of any region in one epoch.
pub fn worst_region_liquidity(row: &EpochRow) -> f64 {
    row.liquidity_by_region.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The sustainability metrics of one scenario over its runs: what the
/// report's table shows and what the JSON summary carries.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScenarioStats {
    pub name: String,
    pub runs: usize,
    pub seeds: Vec<u64>,
    /// Epochs of the longest run.
    pub epochs: u64,
    /// Days covered by the longest run.
    pub days: f64,
    /// Median over runs of the first epoch from which burn ≥ mint held,
    /// counting a run where it never held as "never" (`None` when the
    /// median run never got there).
    pub burn_ge_mint_epoch_median: Option<f64>,
    /// The day of that epoch, from the first run's rows.
    pub burn_ge_mint_day_median: Option<f64>,
    /// Runs in which burn never caught up with mint.
    pub burn_ge_mint_never_runs: usize,
    pub worst_regional_liquidity: Option<Spread>,
    pub operator_retention: Option<Spread>,
    pub price_drawdown: Option<Spread>,
    /// Over the runs that had an attacker: `None` when none had.
    pub attacker_profit_usd: Option<Spread>,
    pub attackers_slashed_twy: Option<Spread>,
    /// Of those, the colluding oracles' (vouching for liars' claims).
    pub colluders_slashed_twy: Option<Spread>,
    /// Honest oracles slashed at least once in a run: a rule's false
    /// positives.
    pub honest_oracles_slashed: Option<Spread>,
    pub final_price_usd: Option<Spread>,
    pub final_nodes: Option<Spread>,
    pub final_circulating_twy: Option<Spread>,
    pub total_minted_twy: Option<Spread>,
    pub total_burned_twy: Option<Spread>,
    pub consumer_price_usd_per_gb: Option<Spread>,
    /// Share of operators (pooled over runs) whose average monthly profit
    /// was below zero.
    pub operators_unprofitable_share: Option<f64>,
    /// Operators in the pooled profit distribution.
    pub operators_counted: usize,
}

impl ScenarioStats {
    pub fn of(scenario: &ScenarioResult) -> ScenarioStats {
        let runs = &scenario.runs;
        let summaries: Vec<&RunSummary> = runs.iter().map(|r| &r.summary).collect();
        let spread = |f: fn(&RunSummary) -> f64| Spread::of(summaries.iter().map(|s| f(s)));

        let mut burn_epochs: Vec<f64> =
            summaries.iter().map(|s| s.burn_ge_mint_epoch.map_or(f64::INFINITY, |e| e as f64)).collect();
        burn_epochs.sort_by(f64::total_cmp);
        let burn_ge_mint_epoch_median = if burn_epochs.is_empty() {
            None
        } else {
            Some(quantile_sorted(&burn_epochs, 0.5)).filter(|e| e.is_finite())
        };
        let burn_ge_mint_day_median =
            burn_ge_mint_epoch_median.and_then(|e| runs.first().and_then(|r| day_of_epoch(r.chart.epoch_days.as_deref()?, e)));

        // Counted as each run ended: the profits themselves are in the
        // scenario's store.
        let (operators_counted, unprofitable) = operator_counts(scenario);
        let operators_unprofitable_share =
            (operators_counted > 0).then(|| unprofitable as f64 / operators_counted as f64);

        ScenarioStats {
            name: scenario.name.clone(),
            runs: runs.len(),
            seeds: summaries.iter().map(|s| s.seed).collect(),
            epochs: runs.iter().map(|r| r.chart.epochs as u64).max().unwrap_or(0),
            days: runs
                .iter()
                .filter_map(|r| r.chart.last_day)
                .filter(|d| d.is_finite())
                .fold(0.0, f64::max),
            burn_ge_mint_epoch_median,
            burn_ge_mint_day_median,
            burn_ge_mint_never_runs: summaries.iter().filter(|s| s.burn_ge_mint_epoch.is_none()).count(),
            worst_regional_liquidity: spread(|s| s.worst_regional_liquidity),
            operator_retention: spread(|s| s.operator_retention),
            price_drawdown: spread(|s| s.price_drawdown),
            attacker_profit_usd: spread(|s| s.attacker_profit_usd.unwrap_or(f64::NAN)),
            attackers_slashed_twy: spread(|s| s.attackers_slashed_twy),
            colluders_slashed_twy: spread(|s| s.colluders_slashed_twy),
            honest_oracles_slashed: spread(|s| f64::from(s.honest_oracles_slashed)),
            final_price_usd: spread(|s| s.final_price_usd),
            final_nodes: spread(|s| f64::from(s.final_nodes)),
            final_circulating_twy: spread(|s| s.final_circulating_twy),
            total_minted_twy: spread(|s| s.total_minted_twy),
            total_burned_twy: spread(|s| s.total_burned_twy),
            consumer_price_usd_per_gb: spread(|s| s.consumer_price_usd_per_gb),
            operators_unprofitable_share,
            operators_counted,
        }
    }
}

/// The day of (possibly fractional) epoch `epoch`, from the first row at
/// or after it.
fn day_of_epoch(epoch_days: &[(u64, f64)], epoch: f64) -> Option<f64> {
    epoch_days.iter().find(|(e, _)| *e as f64 >= epoch.round()).map(|(_, day)| *day)
}

/// A histogram over shared bins, so several scenarios can be drawn on one
/// axis. Values outside the range land in the end bins.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// `bins + 1` ascending edges.
    pub edges: Vec<f64>,
    /// Per series, the share (0..1) of its values in each bin.
    pub shares: Vec<Vec<f64>>,
}

/// Bins spanning the 1st–99th percentile of all values together (so one
/// outlier does not squash the picture), widened to include zero. Each
/// series is read where it is (a scenario's operator profits: its store),
/// a few times ([`quantiles`]), never copied whole.
pub fn histogram(series: &[&dyn Values], bins: usize) -> Result<Option<Histogram>, SpillError> {
    if bins == 0 {
        return Ok(None);
    }
    let Some(&[p01, p99]) = quantiles(series, &[0.01, 0.99])?.as_deref() else {
        return Ok(None);
    };
    let mut lo = p01.min(0.0);
    let mut hi = p99.max(0.0);
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        lo -= 1.0;
        hi += 1.0;
    }
    let width = (hi - lo) / bins as f64;
    let edges: Vec<f64> = (0..=bins).map(|i| lo + width * i as f64).collect();
    let mut shares = Vec::with_capacity(series.len());
    for values in series {
        let mut counts = vec![0usize; bins];
        let mut n = 0usize;
        values.scan(&mut |v| {
            if v.is_finite() {
                let i = (((v - lo) / width).floor().max(0.0) as usize).min(bins - 1);
                counts[i] += 1;
                n += 1;
            }
        })?;
        shares.push(counts.iter().map(|&c| if n == 0 { 0.0 } else { c as f64 / n as f64 }).collect());
    }
    Ok(Some(Histogram { edges, shares }))
}

/// Of the pooled operator profit distribution of one scenario, the
/// operators with a finite profit and those of them below zero (counted
/// as each run ended).
pub fn operator_counts(scenario: &ScenarioResult) -> (usize, usize) {
    (scenario.runs.iter()).fold((0, 0), |(n, below), r| (n + r.operators_counted, below + r.operators_unprofitable))
}

/// Region index → display name ("north-america" → "North America").
pub fn region_title(i: usize) -> String {
    REGIONS.get(i).map_or_else(String::new, |name| {
        name.split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next().map_or_else(String::new, |f| f.to_uppercase().collect::<String>() + c.as_str())
            })
            .collect::<Vec<_>>()
            .join(" ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference: every finite value sorted, then [`quantile_sorted`].
    fn sorted_quantiles(values: &[f64], qs: &[f64]) -> Option<Vec<u64>> {
        let sorted = sorted_finite(values.iter().copied());
        (!sorted.is_empty()).then(|| qs.iter().map(|&q| quantile_sorted(&sorted, q).to_bits()).collect())
    }

    /// Values with what sorting must get right: not-a-numbers, infinities,
    /// both zeros, subnormals, duplicates, any bits at all.
    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            prop::sample::select(vec![
                f64::NAN,
                -f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                0.0,
                -0.0,
                f64::MIN_POSITIVE,
                -f64::MIN_POSITIVE,
                5e-324,
                f64::MAX,
                f64::MIN,
                1.0,
                -1.0,
            ]),
            (-1e6..1e6f64),
            (-3i32..3).prop_map(f64::from),
        ]
    }

    proptest! {
        /// The selection over passes gives every quantile to the bit as the
        /// sort does, whether it collects at once or narrows by counting
        /// down to the whole key (`collect_max` 0), over one source or
        /// several.
        #[test]
        fn selected_quantiles_are_the_sorted_ones(
            values in prop::collection::vec(value(), 0..400),
            qs in prop::collection::vec(prop_oneof![Just(0.01), Just(0.99), Just(0.0), Just(1.0), 0.0..=1.0f64], 1..5),
            collect_max in prop::sample::select(vec![0u64, 1, 3, 64, 1 << 19]),
            split in 0usize..400,
        ) {
            let (a, b) = values.split_at(split.min(values.len()));
            let sources: [&dyn Values; 2] = [&a, &b];
            let got = quantiles_collecting(&sources, &qs, collect_max).unwrap();
            let got = got.map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            prop_assert_eq!(got, sorted_quantiles(&values, &qs));
        }

        /// The order key sorts as `f64::total_cmp` and gives the value back.
        #[test]
        fn the_order_key_sorts_as_total_cmp(a in value(), b in value()) {
            prop_assert_eq!(order_key(a).cmp(&order_key(b)), a.total_cmp(&b));
            prop_assert_eq!(of_order_key(order_key(a)).to_bits(), a.to_bits());
        }
    }

    /// Many copies of few values, more than are collected at once: the
    /// counting passes narrow a rank to a bucket of equal keys.
    #[test]
    fn duplicates_past_the_collecting_limit_select_exactly() {
        let values: Vec<f64> = (0..10_000).map(|i| [-0.0, 0.0, 2.5, -7.0, f64::NAN][i % 5]).collect();
        let qs = [0.0, 0.01, 0.3, 0.5, 0.99, 1.0];
        let sources: [&dyn Values; 1] = [&values.as_slice()];
        for collect_max in [0, 100, 1 << 19] {
            let got = quantiles_collecting(&sources, &qs, collect_max).unwrap();
            let got = got.map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            assert_eq!(got, sorted_quantiles(&values, &qs), "collecting at most {collect_max}");
        }
    }
}
