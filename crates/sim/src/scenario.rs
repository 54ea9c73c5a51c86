//! Scenario files (TOML): population, demand curve, market, tokenomics
//! parameter overrides, shocks and attacks. Every key is required unless
//! marked optional, and unknown keys are refused, so a typo never runs a
//! different experiment than the one written down.

use serde::{Deserialize, Serialize};
use crate::engine::GIB_PER_GB;
use tollway_ledger::apply::MAX_PRICE_USD_MICRO;
use tollway_ledger::params::{exactly, keys_set_by, ParamsError};
use tollway_ledger::Params;

/// The repository's scenario files, compiled in, so `tollway sim run
/// burn-and-mint` works from any directory (a file of that name, where one
/// exists, comes first).
pub const BUILT_IN: &[(&str, &str)] = &[
    ("fixed-emissions", include_str!("../../../scenarios/fixed-emissions.toml")),
    ("burn-and-mint", include_str!("../../../scenarios/burn-and-mint.toml")),
    ("hybrid", include_str!("../../../scenarios/hybrid.toml")),
    ("sybil-and-liars", include_str!("../../../scenarios/sybil-and-liars.toml")),
    ("demand-shock", include_str!("../../../scenarios/demand-shock.toml")),
    ("thin-supply", include_str!("../../../scenarios/thin-supply.toml")),
];

/// The text of the built-in scenario `name`.
pub fn built_in(name: &str) -> Option<&'static str> {
    BUILT_IN.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}

/// The built-in scenarios' names, comma-separated, for help and errors.
pub fn built_in_names() -> String {
    BUILT_IN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub run: RunSection,
    pub population: PopulationSection,
    pub demand: DemandSection,
    pub market: MarketSection,
    /// Overrides of `params/default.toml` keys (`key = value`), e.g.
    /// `node_usd_share = 0.5`, or in their sections as that file has them
    /// (`[params.emission]`).
    #[serde(default)]
    pub params: toml::Table,
    #[serde(default)]
    pub shocks: Vec<Shock>,
    #[serde(default)]
    pub attack: Option<AttackSection>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Daily epochs to simulate.
    pub days: u64,
    /// Monte Carlo runs (seeds seed, seed+1, …).
    pub runs: u64,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopulationSection {
    /// Honest operators (one node each) at genesis.
    pub operators: u32,
    /// Share of operators and consumers per macro-region, in the order
    /// north-america, latin-america, europe, africa, middle-east,
    /// south-asia, east-asia, oceania.
    #[serde(deserialize_with = "exactly")]
    pub region_weights: [f64; 8],
    /// Node capacity, Mbit/s, log-uniform between the two.
    #[serde(deserialize_with = "exactly")]
    pub capacity_mbps: [f64; 2],
    /// What running a node costs its operator, USD per month.
    #[serde(deserialize_with = "exactly")]
    pub monthly_cost_usd: [f64; 2],
    /// Share of the day a node is online (its offline hours fall at night,
    /// local time).
    #[serde(deserialize_with = "exactly")]
    pub uptime: [f64; 2],
    /// Share of vested rewards the operator sells each week.
    #[serde(deserialize_with = "exactly")]
    pub sell_share: [f64; 2],
    /// Price the node asks, USD per GB.
    #[serde(deserialize_with = "exactly")]
    pub price_usd_per_gb: [f64; 2],
    /// An operator unprofitable this many days in a row leaves.
    pub churn_after_days: u32,
    /// At most this many new operators join per day, when the expected
    /// profit in their region is positive.
    pub max_joins_per_day: u32,
    /// Consumers at genesis.
    pub consumers: u32,
    /// Oracles (fixed set).
    pub oracles: u32,
    /// "Farm and dump" farmers at genesis: sell every reward, leave as soon
    /// as rewards stop covering costs, dump their stake.
    pub farmers: u32,
    /// The stake each honest genesis operator bonds, TWY, uniform between
    /// the two (farmers and joiners bond the minimum). A number of the
    /// scenario, not the ledger's saturation bond: when it was read from
    /// `stake_saturation_twy`, a sweep of that parameter also handed the
    /// genesis operators more stake, and the retention it seemed to buy
    /// was the gift's. A stake below the ledger's minimum is raised to it,
    /// so that a sweep of `min_node_stake_twy` runs.
    #[serde(default = "default_genesis_stake_twy")]
    #[serde(deserialize_with = "exactly")]
    pub genesis_stake_twy: [f64; 2],
}

/// DESIGN's minimum node stake and saturation bond.
fn default_genesis_stake_twy() -> [f64; 2] {
    [1_000.0, 2_000.0]
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemandSection {
    /// Share of consumers per macro-region (same order as the operators').
    #[serde(deserialize_with = "exactly")]
    pub region_weights: [f64; 8],
    pub gb_per_consumer_per_day: f64,
    /// Growth of the consumer base per year (1.0 = doubles).
    pub growth_per_year: f64,
    /// Peak-to-mean swing of demand over the local day (0 = flat).
    pub diurnal_amplitude: f64,
    /// Demand ∝ (price / reference)^(−elasticity).
    pub price_elasticity: f64,
    pub reference_price_usd_per_gb: f64,
    /// Consumers leave a region whose liquidity stays below one half this
    /// many days in a row (a tenth of them a day).
    pub leave_after_unserved_days: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketSection {
    /// Initial pool liquidity.
    pub pool_twy: f64,
    pub pool_usd: f64,
    /// Traders swapping on the pool each day.
    pub traders: u32,
    /// Each trader's typical daily trade, USD.
    pub trader_volume_usd: f64,
    /// A value investor prices the token at this multiple of the yearly
    /// USD that the burn spends, over the total supply…
    pub valuation_multiple: f64,
    /// …and each day trades up to this share of the pool's USD side toward
    /// that value (0 = no value investor): it anchors the price to what the
    /// network earns.
    pub value_trader_daily_share: f64,
    /// Tokens a holder keeps idle from genesis; the run's price crashes
    /// sell from them (it holds at least what they sell). 0: what they
    /// sell. A crash's seller holds its tokens from genesis, in the supply
    /// (and the value investor's anchor) from day 1: the same scenario
    /// without the crash and with this figure is its twin, the same until
    /// the crash.
    #[serde(default)]
    pub whale_twy: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Shock {
    /// Demand times `factor` from `start_day` to `end_day`.
    Demand { start_day: u64, end_day: u64, factor: f64 },
    /// A holder dumps `sell_twy` tokens on the pool on `day`: tokens it
    /// held from genesis (`MarketSection::whale_twy`).
    PriceCrash { day: u64, sell_twy: f64 },
    /// A share of honest operators leaves on `day`.
    Exodus { day: u64, share: f64 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackSection {
    pub start_day: u64,
    pub end_day: u64,
    /// Nodes of one sybil farm, all in one /24, each claiming the farm's
    /// whole line (measured one at a time, each delivers it).
    pub sybil_nodes: u32,
    pub sybil_line_mbps: f64,
    /// Nodes claiming `liar_claim_factor` × what they deliver.
    pub liars: u32,
    pub liar_claim_factor: f64,
    /// Days each liar claims the truth before it over-claims (0: from its
    /// first day). A long con: the rewards of its honest days vest, and
    /// what has not vested at its slash is slashed with its bond; without
    /// vesting they are already its own.
    #[serde(default)]
    pub liar_honest_days: u64,
    /// Oracles that report the liars' claims instead of what they saw.
    pub colluding_oracles: u32,
    /// A trader with this much USD who buys tokens just before each epoch's
    /// burn and sells them right after it, while the attack runs (a
    /// "sandwich"; ADR 0018 bounds what the burn pays). 0: none.
    #[serde(default)]
    pub sandwich_usd: f64,
}

impl AttackSection {
    /// Whether it has any attacker: a sweep or an override may set every
    /// one of them to 0.
    pub fn has_attackers(&self) -> bool {
        self.sybil_nodes > 0 || self.liars > 0 || self.colluding_oracles > 0 || self.sandwich_usd > 0.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario file: {0}")]
    Toml(String),
    #[error("scenario `{key}`: {why}")]
    Invalid { key: String, why: String },
    // Not `#[from]`: that would make the parameter error this one's source
    // too, and error chains would print its message twice.
    #[error("scenario parameter: {0}")]
    Params(tollway_ledger::params::ParamsError),
}

impl From<tollway_ledger::params::ParamsError> for ScenarioError {
    fn from(e: tollway_ledger::params::ParamsError) -> ScenarioError {
        ScenarioError::Params(e)
    }
}

fn invalid(key: &str, why: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid { key: key.into(), why: why.into() }
}

impl Scenario {
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Toml(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// The ledger parameters: the defaults, daily epochs, then this
    /// scenario's overrides (validated by the ledger's own rules).
    /// The days of shocks, and of the attack's start, that fall after the
    /// run's last day (a run shortened with `--days` drops them): a caller
    /// says so, as they do not happen.
    pub fn events_after_the_run(&self) -> Vec<u64> {
        let shocks = self.shocks.iter().map(|s| match s {
            Shock::Demand { start_day, .. } => *start_day,
            Shock::PriceCrash { day, .. } | Shock::Exodus { day, .. } => *day,
        });
        let attack = self.attack.as_ref().map(|a| a.start_day);
        shocks.chain(attack).filter(|&d| d > self.run.days).collect()
    }

    pub fn params(&self) -> Result<Params, ScenarioError> {
        // A section (`[params.emission]`, `emission.year_one_twy = …`,
        // as params/default.toml lays them out) gives its keys by their
        // section: it was refused as "no parameter named `emission`".
        let values: Vec<(String, String)> = self
            .params
            .iter()
            .flat_map(|(key, value)| match value.as_table() {
                Some(section) => section.iter().map(|(leaf, v)| (format!("{key}.{leaf}"), v.to_string())).collect(),
                None => vec![(key.clone(), value.to_string())],
            })
            .collect();
        let overrides: Vec<(&str, &str)> = values.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
        // Together, not one by one against the defaults of the rest: a
        // pair moved together (a minimum stake above the default bond,
        // with the bond raised too) was refused in either order.
        let p = Params::default_params().with_override("time.epoch", "\"1d\"")?.with_overrides(&overrides)?;
        if p.epoch_secs != 86_400 {
            return Err(invalid("params.epoch", "the simulator runs daily epochs; remove the override"));
        }
        Ok(p)
    }

    /// Sets `key` (a scenario key such as `population.operators`, or a
    /// ledger parameter such as `uptime_share_start`) to `value` (TOML).
    pub fn with_override(&self, key: &str, value: &str) -> Result<Scenario, ScenarioError> {
        let mut table = toml::Table::try_from(self).map_err(|e| ScenarioError::Toml(e.to_string()))?;
        let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .map_err(|e| invalid(key, format!("{value:?} is not a TOML value: {e}")))?
            .remove("v")
            .ok_or_else(|| invalid(key, "no value"))?;
        match key.split_once('.') {
            Some((section, leaf)) if section != "params" && table.get(section).is_some_and(|v| v.is_table()) => {
                let t = table.get_mut(section).and_then(|v| v.as_table_mut()).ok_or_else(|| invalid(key, "not a section"))?;
                if !t.contains_key(leaf) {
                    let keys: Vec<&str> = t.keys().map(String::as_str).collect();
                    return Err(invalid(key, format!("no such key in the scenario; [{section}] has {}", keys.join(", "))));
                }
                t.insert(leaf.to_string(), parsed);
            }
            Some(("attack", _)) => {
                // The one optional table: absent, its keys are not
                // parameters either.
                return Err(invalid(key, "this scenario has no [attack] table to sweep; add one (see sybil-and-liars)"));
            }
            _ => {
                let leaf = key.strip_prefix("params.").unwrap_or(key);
                // Checked against this scenario's parameters (daily
                // epochs, its own [params]) before running: against the
                // ledger's defaults, fixed-emissions could not sweep its
                // first year's emission above the default cap, and a
                // too-short unbonding was measured in hourly epochs. A
                // scenario key without its section (`operators`) is not
                // one of them: say which it may be.
                self.params()?.with_override(leaf, value).map_err(|e| {
                    let sections: Vec<String> = table
                        .iter()
                        .filter(|(section, v)| *section != "params" && v.as_table().is_some_and(|t| t.contains_key(leaf)))
                        .map(|(section, _)| format!("{section}.{leaf}"))
                        .collect();
                    match e {
                        ParamsError::UnknownKey { .. } if !sections.is_empty() => {
                            invalid(key, format!("a scenario key is named with its section: {}", sections.join(" or ")))
                        }
                        e => e.into(),
                    }
                })?;
                let params = table.entry("params").or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let Some(t) = params.as_table_mut() {
                    // The override wins over the file's own setting of the
                    // same parameters, however the file names them (a
                    // sweep of `uptime_share` over a file that sets
                    // `uptime_share_start` must not be undone by it).
                    let set = keys_set_by(leaf);
                    let replaced: Vec<(String, toml::Value)> = t
                        .iter()
                        .filter(|(k, _)| set.iter().any(|s| keys_set_by(k).contains(s)))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    t.retain(|k, _| !set.iter().any(|s| keys_set_by(k).contains(s)));
                    // What a replaced key set beyond the override keeps
                    // the file's value: a sweep of `uptime_share_start`
                    // over the file's flat `uptime_share` dropped its end
                    // to the ledger's default.
                    for (k, v) in replaced {
                        for kept in keys_set_by(&k).into_iter().filter(|k| !set.contains(k)) {
                            if !t.keys().any(|other| keys_set_by(other).contains(&kept)) {
                                t.insert(kept.to_string(), v.clone());
                            }
                        }
                    }
                    t.insert(leaf.to_string(), parsed);
                }
            }
        }
        let text = toml::to_string(&table).map_err(|e| ScenarioError::Toml(e.to_string()))?;
        // A value of the wrong type is this key's error: the TOML error's
        // line and excerpt are of the text above, which nobody wrote.
        let s: Scenario = toml::from_str(&text).map_err(|e| invalid(key, e.message().trim_end()))?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let p = &self.population;
        let range = |key: &str, r: [f64; 2], lo: f64, hi: f64| {
            if !(r[0].is_finite() && r[1].is_finite() && lo <= r[0] && r[0] <= r[1] && r[1] <= hi) {
                Err(invalid(key, format!("{r:?} must be [low, high] within [{lo}, {hi}]")))
            } else {
                Ok(())
            }
        };
        if self.run.days == 0 || self.run.days > 36_500 {
            return Err(invalid("run.days", "must be 1 to 36500"));
        }
        if self.run.runs == 0 || self.run.runs > 10_000 {
            return Err(invalid("run.runs", "must be 1 to 10000"));
        }
        if p.operators == 0 || p.operators > 1_000_000 {
            return Err(invalid("population.operators", "must be 1 to 1000000"));
        }
        if p.region_weights.iter().any(|w| !w.is_finite() || *w < 0.0) || p.region_weights.iter().sum::<f64>() <= 0.0 {
            return Err(invalid("population.region_weights", "weights must be non-negative with a positive sum"));
        }
        range("population.capacity_mbps", p.capacity_mbps, 0.1, 100_000.0)?;
        range("population.monthly_cost_usd", p.monthly_cost_usd, 0.0, 1e6)?;
        range("population.uptime", p.uptime, 0.0, 1.0)?;
        range("population.sell_share", p.sell_share, 0.0, 1.0)?;
        // Above 0: a region's price of 0 raised to the elasticity's minus
        // power made its demand infinite (`inf` in the CSV from day 2).
        // At most the ledger's highest price, which is per GiB: up to $1000
        // per GB was accepted, and a run of such nodes failed in its setup
        // with the ledger's per-GiB limit, naming no key of the file.
        let max_price_usd_per_gb = (MAX_PRICE_USD_MICRO as f64 / 1e6 / GIB_PER_GB * 100.0).floor() / 100.0;
        if p.price_usd_per_gb[1] > max_price_usd_per_gb {
            return Err(invalid(
                "population.price_usd_per_gb",
                format!(
                    "{} is above {max_price_usd_per_gb}: the ledger's highest price is {} per GiB",
                    p.price_usd_per_gb[1],
                    tollway_types::Usd(MAX_PRICE_USD_MICRO.into())
                ),
            ));
        }
        range("population.price_usd_per_gb", p.price_usd_per_gb, 0.001, max_price_usd_per_gb)?;
        // 0 days made every honest operator leave on day 1 and consumers
        // shrink every day, whatever happened.
        if p.churn_after_days == 0 {
            return Err(invalid("population.churn_after_days", "must be at least 1"));
        }
        if p.oracles < 3 || p.oracles > 16_384 {
            // 16,384: each oracle gets an address of its own in 100.64/10.
            return Err(invalid("population.oracles", "3 to 16384 (the default assigns 3 per node)"));
        }
        // Counts whose every unit costs memory or time each day.
        if u64::from(p.operators) + u64::from(p.farmers) > 1_000_000 {
            return Err(invalid("population.farmers", "operators and farmers together at most 1000000"));
        }
        if p.max_joins_per_day > 100_000 {
            return Err(invalid("population.max_joins_per_day", "at most 100000"));
        }
        if self.market.traders > 10_000 {
            return Err(invalid("market.traders", "at most 10000"));
        }
        let d = &self.demand;
        if d.region_weights.iter().any(|w| !w.is_finite() || *w < 0.0) || d.region_weights.iter().sum::<f64>() <= 0.0 {
            return Err(invalid("demand.region_weights", "weights must be non-negative with a positive sum"));
        }
        // Every number below must be finite: infinities ran as garbage,
        // and NaN passes any comparison written the other way round. And
        // within bounds no real scenario comes near, so that what a run
        // computes from them stays finite too: 1e300 was accepted for each
        // of these.
        let bounded = |key: &str, x: f64, lo: f64, hi: f64, why: &str| {
            if x.is_finite() && (lo..=hi).contains(&x) {
                Ok(())
            } else {
                Err(invalid(key, format!("{x:?} must be at least {lo} and at most {hi} ({why})")))
            }
        };
        // A line of 10 Gbit/s, busy all day: 10e9 / 8 × 86,400 bytes.
        bounded("demand.gb_per_consumer_per_day", d.gb_per_consumer_per_day, 0.0, 108_000.0, "a 10 Gbit/s line all day")?;
        // Demand is (price / reference)^(-elasticity): past these bounds
        // it overflowed to infinity once a region's price fell under the
        // reference.
        if !(d.price_elasticity.is_finite() && (0.0..=10.0).contains(&d.price_elasticity)) {
            return Err(invalid("demand.price_elasticity", format!("{:?} must be ≥ 0 and at most 10", d.price_elasticity)));
        }
        // Ten-fold a year at most: the most consumers (4.3e9) grown so for
        // the longest run (100 years), at the most GB each, stay below
        // 1e115 GB a day, far inside an f64; 1e300 grew consumers and
        // demand to inf in the CSV within a year.
        if !(d.growth_per_year.is_finite() && d.growth_per_year > -1.0 && d.growth_per_year <= 9.0) {
            return Err(invalid(
                "demand.growth_per_year",
                format!("{:?} must be above -1 and at most 9 (ten-fold a year)", d.growth_per_year),
            ));
        }
        if !(0.0..=1.0).contains(&d.diurnal_amplitude) {
            return Err(invalid("demand.diurnal_amplitude", format!("{} must be in [0, 1]", d.diurnal_amplitude)));
        }
        if !(d.reference_price_usd_per_gb > 0.0 && d.reference_price_usd_per_gb <= max_price_usd_per_gb) {
            return Err(invalid(
                "demand.reference_price_usd_per_gb",
                format!("{:?} must be above 0 and at most {max_price_usd_per_gb}, a node's highest price", d.reference_price_usd_per_gb),
            ));
        }
        if d.leave_after_unserved_days == 0 {
            return Err(invalid("demand.leave_after_unserved_days", "must be at least 1"));
        }
        let m = &self.market;
        // A price of a thousand years of what the burn spends: stock
        // markets' price-to-earnings ratios stay in the tens to hundreds.
        bounded("market.valuation_multiple", m.valuation_multiple, 0.0, 1_000.0, "a thousand years of the burn")?;
        // The largest pool's USD side (market.pool_usd): a trader holds a
        // 200th of the pool, so a larger typical trade only empties its
        // account.
        bounded("market.trader_volume_usd", m.trader_volume_usd, 0.0, 9e9, "the largest pool's USD side")?;
        // Given at genesis, as a crash's tokens are: its bound.
        bounded("market.whale_twy", m.whale_twy, 0.0, 1e12, "a price crash's largest sale")?;
        if !(0.0..=0.5).contains(&m.value_trader_daily_share) {
            return Err(invalid("market.value_trader_daily_share", "a daily share in [0, 0.5]"));
        }
        // Each side named on its own: a pool_usd of 0 was reported as
        // `market.pool_twy`.
        for (key, x) in [("market.pool_twy", m.pool_twy), ("market.pool_usd", m.pool_usd)] {
            if !(1.0..=9e9).contains(&x) {
                return Err(invalid(key, format!("{x}: pool liquidity must be between 1 and 9e9 on each side")));
            }
        }
        // Day 1 is the first simulated day: a shock or an attack on day 0
        // never happened, without a word.
        // Each named by its place among the file's [[shocks]] (from 0) and
        // its key, with its value: all were `shocks`, and an exodus's day
        // and share shared one message.
        for (i, s) in self.shocks.iter().enumerate() {
            let key = |leaf: &str| format!("shocks[{i}].{leaf}");
            let first_day = |leaf: &str, day: u64| {
                if day == 0 {
                    Err(invalid(&key(leaf), "0 is before the run: day 1 is the first simulated day"))
                } else {
                    Ok(())
                }
            };
            match s {
                Shock::Demand { start_day, end_day, factor } => {
                    first_day("start_day", *start_day)?;
                    // `end_day` is the first day back to normal: a shock
                    // with start_day = end_day was accepted and never came.
                    if start_day >= end_day {
                        return Err(invalid(
                            &key("end_day"),
                            format!("{end_day} must be after start_day ({start_day}): the first day back to normal"),
                        ));
                    }
                    // It multiplies a day's demand as the growth does:
                    // a thousand-fold surge is past any real one, and 1e300
                    // made the day's demand inf.
                    bounded(&key("factor"), *factor, 0.0, 1_000.0, "a thousand-fold surge")?;
                }
                Shock::PriceCrash { day, sell_twy } => {
                    first_day("day", *day)?;
                    // The whale is given it at genesis: 1e300 overflowed
                    // the genesis amounts, an error that named no key.
                    if !(sell_twy.is_finite() && (0.0..=1e12).contains(sell_twy)) {
                        return Err(invalid(&key("sell_twy"), format!("{sell_twy:?} must be between 0 and 1e12")));
                    }
                }
                Shock::Exodus { day, share } => {
                    first_day("day", *day)?;
                    bounded(&key("share"), *share, 0.0, 1.0, "a share of the honest operators")?;
                }
            }
        }
        if let Some(a) = &self.attack {
            // Each liar joins with an honest twin: two nodes, counted with
            // the operators (4e9 liars grew memory without end on day 1).
            if u64::from(p.operators) + u64::from(p.farmers) + 2 * u64::from(a.liars) > 1_000_000 {
                return Err(invalid("attack.liars", "operators, farmers and twice the liars (each has an honest twin) together at most 1000000"));
            }
            if a.liar_honest_days > 36_500 {
                return Err(invalid("attack.liar_honest_days", "at most 36500"));
            }
            if !(a.sandwich_usd.is_finite() && (0.0..=1e12).contains(&a.sandwich_usd)) {
                return Err(invalid("attack.sandwich_usd", "must be between 0 and 1e12"));
            }
            if a.sybil_nodes > 250 || a.colluding_oracles >= self.population.oracles || a.start_day == 0 {
                return Err(invalid("attack", "sybil_nodes ≤ 250 (one /24), colluding_oracles < oracles, start_day ≥ 1"));
            }
            // An end before the start meant "never ends" to the colluders
            // and "never" to the sandwich trader.
            if a.end_day <= a.start_day {
                return Err(invalid(
                    "attack.end_day",
                    format!("{} must be after start_day ({}): the first day the attack is over; past the run's days, it never ends", a.end_day, a.start_day),
                ));
            }
            // What the ledger accepts as a claim (100 Gbit/s), checked here
            // rather than at the attack's first day, deep into a run.
            if !(a.sybil_line_mbps.is_finite() && a.sybil_line_mbps > 0.0 && a.sybil_line_mbps <= 100_000.0) {
                return Err(invalid("attack.sybil_line_mbps", "must be above 0 and at most 100000 (the ledger's largest claim)"));
            }
            let largest_claim_mbps = p.capacity_mbps[1] * a.liar_claim_factor;
            if !(a.liar_claim_factor.is_finite() && a.liar_claim_factor >= 1.0 && largest_claim_mbps <= 100_000.0) {
                return Err(invalid(
                    "attack.liar_claim_factor",
                    "must be ≥ 1, and times the largest capacity at most 100000 Mbit/s (the ledger's largest claim)",
                ));
            }
        }
        self.params()?;
        // At most the pool's scale, so amounts stay far from overflow.
        // (Below the ledger's minimum stake, a stake is raised to it.)
        range("population.genesis_stake_twy", p.genesis_stake_twy, 0.0, 1e9)?;
        Ok(())
    }
}
