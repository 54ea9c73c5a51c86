//! Statistics over Monte Carlo runs: per-epoch bands (median with the
//! 10th–90th percentile) for the charts, and the per-scenario summary of
//! the sustainability metrics for the table and the JSON summary.
//!
//! Everything here is a pure function of its input, computed in a fixed
//! order, so the report is byte-for-byte reproducible.

use serde::Serialize;

use crate::output::{EpochRow, RunResult, RunSummary, ScenarioResult, REGIONS};

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
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    if lo == hi || frac == 0.0 || a == b {
        a
    } else if b.is_infinite() {
        b
    } else {
        a + (b - a) * frac
    }
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
const CHART_SERIES: usize = 7 + 3 * REGIONS.len();

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
/// finite). At most [`MAX_CHART_POINTS`] points of 31 f64 each: 250 bytes
/// a point, 0.18 MB for 730 daily epochs, 0.2 MB at most whatever the
/// length. The percentiles across runs need every run's value at each
/// point (they are exact, as before), hence a point per run rather than a
/// running aggregate.
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
    points: Vec<[f64; CHART_SERIES]>,
}

impl RunChart {
    /// `rows` in points of `epochs_per_point` epochs (at least 1).
    pub fn of(rows: &[EpochRow], epochs_per_point: usize, with_epoch_days: bool) -> RunChart {
        let bucket = epochs_per_point.max(1);
        let series: Vec<Charted> = Charted::all().collect();
        debug_assert_eq!(series.len() + 1, CHART_SERIES);
        let points = rows
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
        RunChart {
            epochs: rows.len(),
            epochs_per_point: bucket,
            last_day: rows.last().map(|r| r.day),
            epoch_days: with_epoch_days.then(|| rows.iter().map(|r| (r.epoch, r.day)).collect()),
            points,
        }
    }
}

/// Per-epoch band of `series` across `runs`: for each bucket of
/// consecutive epochs, each run's mean over the bucket, then the
/// percentiles of those means across runs. Runs may differ in length;
/// non-finite values are left out. The runs' charts share their
/// bucket ([`crate::output::ScenarioResult::of_runs`] sees to it).
pub fn band(runs: &[RunResult], series: Charted) -> Vec<BandPoint> {
    // The x positions come from the longest run (the first one on a tie).
    let Some(longest) = runs.iter().rev().max_by_key(|r| r.chart.epochs) else {
        return Vec::new();
    };
    debug_assert!(runs.iter().all(|r| r.chart.epochs_per_point == longest.chart.epochs_per_point));
    let index = series.index();
    let mut out = Vec::with_capacity(longest.chart.points.len());
    let mut per_run = Vec::with_capacity(runs.len());
    for (k, point) in longest.chart.points.iter().enumerate() {
        // Not a number: no finite day in the bucket.
        let day = point[0];
        if day.is_nan() {
            continue;
        }
        per_run.clear();
        per_run.extend(runs.iter().filter_map(|r| r.chart.points.get(k)).map(|p| p[index]));
        if let Some(s) = Spread::of(per_run.iter().copied()) {
            out.push(BandPoint { day, p10: s.p10, p50: s.p50, p90: s.p90 });
        }
    }
    out
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

        // Counted where they are: a pooled copy of every run's operators
        // was the largest thing in memory at the end of many runs.
        let (operators_counted, unprofitable) = (runs.iter())
            .flat_map(|r| r.operator_monthly_profit_usd.iter().filter(|p| p.is_finite()))
            .fold((0usize, 0usize), |(n, below), &p| (n + 1, below + usize::from(p < 0.0)));
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
/// series is its values in parts (a scenario's, one part per run), read
/// where they are: only the sorted finite values of all are copied.
pub fn histogram(series: &[Vec<&[f64]>], bins: usize) -> Option<Histogram> {
    let all = sorted_finite(series.iter().flatten().flat_map(|part| part.iter()).copied());
    if all.is_empty() || bins == 0 {
        return None;
    }
    let mut lo = quantile_sorted(&all, 0.01).min(0.0);
    let mut hi = quantile_sorted(&all, 0.99).max(0.0);
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        lo -= 1.0;
        hi += 1.0;
    }
    let width = (hi - lo) / bins as f64;
    let edges: Vec<f64> = (0..=bins).map(|i| lo + width * i as f64).collect();
    let shares = series
        .iter()
        .map(|values| {
            let mut counts = vec![0usize; bins];
            let mut n = 0usize;
            for &v in values.iter().flat_map(|part| part.iter()).filter(|v| v.is_finite()) {
                let i = (((v - lo) / width).floor().max(0.0) as usize).min(bins - 1);
                counts[i] += 1;
                n += 1;
            }
            counts.iter().map(|&c| if n == 0 { 0.0 } else { c as f64 / n as f64 }).collect()
        })
        .collect();
    Some(Histogram { edges, shares })
}

/// The pooled operator profit distribution of one scenario: each run's
/// part, not copied.
pub fn pooled_operator_profits(scenario: &ScenarioResult) -> Vec<&[f64]> {
    scenario.runs.iter().map(|r| r.operator_monthly_profit_usd.as_slice()).collect()
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
