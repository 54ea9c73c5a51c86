//! What a simulation run produces: one row per epoch and a summary. These
//! types are the contract between the engine (`engine.rs`) and the outputs
//! (CSV, JSON, charts, the HTML report). Floats are fine here: they are
//! derived views of integer ledger state, computed in a fixed order, so a
//! run is still byte-for-byte reproducible.

use serde::{Deserialize, Serialize};

pub use crate::report::stats::RunChart;
use crate::spill::{RunStore, SpillError};

/// Macro-region names in `MacroRegion` order, for column headers.
pub const REGIONS: [&str; 8] =
    ["north-america", "latin-america", "europe", "africa", "middle-east", "south-asia", "east-asia", "oceania"];

/// One epoch of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: u64,
    /// Days since genesis at the end of the epoch.
    pub day: f64,
    /// Pool price, USD per token.
    pub price_usd: f64,
    /// Supply outside the pool, stakes, unbonding and vesting, in tokens.
    pub circulating_twy: f64,
    pub total_supply_twy: f64,
    /// Tokens minted into the pools this epoch.
    pub minted_twy: f64,
    /// Tokens burned this epoch: buy-and-burn, slashes and token fees.
    pub burned_twy: f64,
    /// USD paid by consumers this epoch.
    pub paid_usd: f64,
    /// Active nodes at the end of the day, after its departures.
    pub nodes: u32,
    pub nodes_by_region: [u32; 8],
    /// What the nodes online in each region can serve, on average over
    /// the day, Gbit/s: the simulator's own figure, which liquidity is
    /// judged on.
    pub capacity_gbps_by_region: [f64; 8],
    /// What the ledger verified online in each region at the epoch's end,
    /// Gbit/s (`RegionSummary::online_capacity_bps`: measured capacity,
    /// a shared /24 or /48 counted as one node's).
    pub verified_capacity_gbps_by_region: [f64; 8],
    /// Average demand per region, Gbit/s.
    pub demand_gbps_by_region: [f64; 8],
    /// Share of the epoch's hours in which the region's online capacity
    /// covered its demand (1.0 = always).
    pub liquidity_by_region: [f64; 8],
    /// The ledger's regional scarcity multipliers.
    pub multiplier_by_region: [f64; 8],
    /// What consumers paid per GB served, on average.
    pub consumer_price_usd_per_gb: f64,
    pub served_gb: f64,
    pub unserved_gb: f64,
    /// Whole consumers, all regions. A float: a u32 stopped at 4.3 billion
    /// while their demand grew on.
    pub consumers: f64,
    /// Operators' profit this epoch (rewards sold or valued at the pool
    /// price, plus USD income, minus costs), in USD per operator:
    /// 10th, 50th and 90th percentiles over the population's honest
    /// operators active this epoch (not the reward farmers, nor the
    /// attack's nodes, twins or control nodes).
    pub operator_profit_p10_usd: f64,
    pub operator_profit_p50_usd: f64,
    pub operator_profit_p90_usd: f64,
    /// Nodes that joined and left this epoch, an attack's among them (on
    /// its first day, and when they are ejected or it ends): `nodes` is
    /// the day before's plus those joined less those left.
    pub operators_joined: u32,
    pub operators_left: u32,
    /// What the attacks gained, cumulative, in USD at the pool price, over
    /// running the same hardware honestly: the sybil farm's rewards minus
    /// those of one honest node on the same line, the liars' rewards minus
    /// those of their honest twins (each on its liar's line), minus the
    /// stake slashed from nodes that over-claimed and from colluding
    /// oracles, plus what the sandwich trader's USD gained or lost
    /// (`attack.sandwich_usd`). Negative: the attacks did not pay.
    pub attacker_profit_usd: f64,
    pub slashed_twy: f64,
    pub slashes: u32,
}

/// The sustainability metrics of one run (the report's summary table).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub scenario: String,
    pub seed: u64,
    pub epochs: u64,
    /// First epoch from which burn ≥ mint held for 30 consecutive epochs
    /// (`None`: never).
    pub burn_ge_mint_epoch: Option<u64>,
    /// The lowest liquidity any region had over the last 90 epochs.
    pub worst_regional_liquidity: f64,
    /// Share of honest operators active in the first 30 epochs still
    /// active at the end.
    pub operator_retention: f64,
    /// Largest peak-to-trough fall of the token price, 0..1.
    pub price_drawdown: f64,
    pub final_price_usd: f64,
    pub final_nodes: u32,
    pub final_circulating_twy: f64,
    /// The last epoch's `attacker_profit_usd`; `None` when the run had no
    /// attacker (no attack, one with none of its attackers, or one that
    /// starts after the run's last day). Its 0 read as an attack that
    /// broke even, and as the best attacker profit of a comparison.
    pub attacker_profit_usd: Option<f64>,
    /// Tokens slashed from attackers over the run.
    pub attackers_slashed_twy: f64,
    /// Of those, slashed from the colluding oracles.
    pub colluders_slashed_twy: f64,
    /// Colluding oracles slashed at least once, and honest ones.
    pub colluding_oracles_slashed: u32,
    pub honest_oracles_slashed: u32,
    pub total_minted_twy: f64,
    pub total_burned_twy: f64,
    /// What consumers paid per GB served in the last epoch (not a number
    /// when it served nothing).
    pub consumer_price_usd_per_gb: f64,
}

/// Everything one run produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunOutput {
    pub rows: Vec<EpochRow>,
    pub summary: RunSummary,
    /// Every honest operator's average monthly profit in USD over the time
    /// it was active: the operator profit distribution.
    pub operator_monthly_profit_usd: Vec<f64>,
}

/// What the report keeps in memory of a run once its rows are on disk
/// (its CSV, written as the run finishes): the summary, how many of its
/// operators were counted, and where its chart is. A `RunOutput` holds
/// every epoch's row (about 0.5 kB an epoch) and every honest operator's
/// profit (8 bytes each); the charted series (31 numbers a point, at most
/// `report::stats::MAX_CHART_POINTS` points: 0.2 MB) and the profits go
/// to the scenario's [`RunStore`] (for `tollway sim`, files beside the
/// runs' CSVs), so what stays is a few hundred bytes a run whatever its
/// length and its operators ([`RunResult::bytes_held`]), and the first
/// run's epoch days.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunResult {
    pub summary: RunSummary,
    /// Honest operators with a finite average monthly profit
    /// ([`RunOutput::operator_monthly_profit_usd`]), and of them those
    /// below zero.
    pub operators_counted: usize,
    pub operators_unprofitable: usize,
    pub chart: RunChart,
}

impl RunResult {
    /// What the report keeps of `run`, its charted series averaged over
    /// buckets of `epochs_per_point` epochs (the same for every run of a
    /// scenario: `report::stats::epochs_per_point` of its longest run's
    /// epochs) and its operator profits appended to `store`.
    /// `with_epoch_days`: keep each epoch's day too, which the report
    /// reads from a scenario's first run only.
    pub fn of(
        run: RunOutput,
        epochs_per_point: usize,
        with_epoch_days: bool,
        store: &RunStore,
    ) -> Result<RunResult, SpillError> {
        let chart = RunChart::of(&run.rows, epochs_per_point, with_epoch_days, store)?;
        store.append_profits(&run.operator_monthly_profit_usd)?;
        let (operators_counted, operators_unprofitable) = (run.operator_monthly_profit_usd.iter())
            .filter(|p| p.is_finite())
            .fold((0usize, 0usize), |(n, below), &p| (n + 1, below + usize::from(p < 0.0)));
        Ok(RunResult { summary: run.summary, operators_counted, operators_unprofitable, chart })
    }

    /// Bytes the report holds in memory for this run: the same for a run
    /// of any length and any number of operators (but a scenario's first
    /// run, which keeps its epoch days).
    pub fn bytes_held(&self) -> usize {
        std::mem::size_of::<RunResult>() + self.summary.scenario.capacity() + self.chart.bytes_held()
    }
}

/// All runs of one scenario (one per Monte Carlo seed, or per sweep value).
#[derive(Debug, Default)]
pub struct ScenarioResult {
    /// The scenario's name, with the sweep setting if any
    /// (`burn-and-mint uptime_share_start=0.6`).
    pub name: String,
    /// In run order (seed order).
    pub runs: Vec<RunResult>,
    /// The runs' chart points and operator profits.
    pub store: RunStore,
}

impl ScenarioResult {
    /// A scenario's result from its runs' whole outputs, in run order,
    /// their points and profits kept in memory ([`RunStore::in_memory`]:
    /// the same code as over files).
    pub fn of_runs(name: impl Into<String>, runs: Vec<RunOutput>) -> Result<ScenarioResult, SpillError> {
        let longest = runs.iter().map(|r| r.rows.len()).max().unwrap_or(0);
        let bucket = crate::report::stats::epochs_per_point(longest);
        let store = RunStore::in_memory();
        let runs = (runs.into_iter().enumerate())
            .map(|(k, run)| RunResult::of(run, bucket, k == 0, &store))
            .collect::<Result<_, _>>()?;
        Ok(ScenarioResult { name: name.into(), runs, store })
    }

    /// Bytes this result holds in memory: its runs' ([`RunResult::bytes_held`])
    /// and its store's (none for files).
    pub fn bytes_held(&self) -> usize {
        self.name.capacity()
            + (self.runs.capacity() - self.runs.len()) * std::mem::size_of::<RunResult>()
            + self.runs.iter().map(RunResult::bytes_held).sum::<usize>()
            + self.store.bytes_held()
    }
}
