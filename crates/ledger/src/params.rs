//! Economic parameters (DESIGN §2). One TOML file (`params/default.toml`)
//! holds every value with its unit and the reason for its default; this
//! module parses it into the plain [`Params`] struct the engine reads, and
//! refuses nonsense with a message that names the key. No value has a
//! silent default in code: a missing key is an error.

use serde::{Deserialize, Serialize};
use tollway_types::{Token, Usd, PPM};

/// The most oracles that can be assigned to one node (fixed-size storage).
pub const MAX_ORACLES_PER_NODE: usize = 7;
/// Days, in seconds, that make a year for emission schedules.
pub const YEAR_SECS: u64 = 365 * 24 * 3600;

/// Every economic parameter, in engine units: amounts in base units, rates
/// in parts per million, durations in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub epoch_secs: u64,
    pub unbonding_secs: u64,
    pub vesting_secs: u64,
    pub channel_close_grace_secs: u64,
    /// The furthest a channel's expiry may be past the time it opens.
    pub channel_max_lifetime_secs: u64,
    /// How old a node's last measurement by a quorum of oracles may be and
    /// still earn in an epoch no quorum measured it (on its heartbeat, or
    /// the oracles' uptime alone); past it the node's uptime counts as 0
    /// until it is measured again (ADR 0016). At least one epoch; in
    /// epochs, `measurement_max_age_epochs`.
    pub measurement_max_age_secs: u64,

    pub min_node_stake: Token,
    pub min_oracle_stake: Token,
    pub stake_saturation: Token,

    pub min_fee_token: Token,
    pub min_fee_usd: Usd,

    /// The least escrow a channel opens with.
    pub min_channel_escrow: Usd,
    /// The least a transfer that creates an account sends, per currency.
    pub min_new_account_token: Token,
    pub min_new_account_usd: Usd,

    pub emission_year_one: Token,
    pub halving_period_secs: u64,
    pub emission_cap: Token,
    pub uptime_share_start_ppm: u32,
    pub uptime_share_end_ppm: u32,
    pub uptime_transition_secs: u64,
    pub oracle_share_ppm: u32,
    pub usage_reward_cap_ppm: u32,
    pub node_usd_share_ppm: u32,
    pub pool_fee_ppm: u32,
    /// The most the epoch's burn pays above the pool's average price over
    /// the epoch (ADR 0018); what it cannot spend waits for the next sale
    /// of tokens under that bound, or the next epoch.
    pub burn_max_premium_ppm: u32,
    /// Of the pool's USD, what the epoch's burn spends whatever the price
    /// (ADR 0018): too little to pay for a sandwich's two pool fees.
    pub burn_floor_ppm: u32,

    pub oracles_per_node: u32,
    pub min_reports: u32,
    pub rho_reward_on_claim_max_ppm: u32,
    pub rho_slash_min_ppm: u32,
    pub slash_base_ppm: u32,
    pub slash_per_rho_ppm: u32,
    pub slash_max_ppm: u32,
    pub slash_reporter_share_ppm: u32,
    pub oracle_deviation_tolerance_ppm: u32,
    pub oracle_deviating_share_max_ppm: u32,
    pub oracle_strikes_to_slash: u32,
    pub oracle_slash_ppm: u32,

    pub reputation_alpha_ppm: u32,
    pub reputation_initial_ppm: u32,
    pub min_uptime_ppm: u32,
    pub latency_tier_max_ms: [u32; 4],
    pub latency_tier_multiplier_ppm: [u32; 5],

    pub region_demand_alpha_ppm: u32,
    pub region_target_headroom_ppm: u32,
    pub region_target_floor_bps: u64,
    pub region_multiplier_min_ppm: u32,
    pub region_multiplier_max_ppm: u32,
    /// The lowest price per GiB a settlement's bytes are counted at toward
    /// its region's demand (`apply::demand_bytes`).
    pub region_demand_price_floor_usd_micro_per_gib: u64,
}

/// The default parameters, compiled in from `params/default.toml`.
pub const DEFAULT_PARAMS_TOML: &str = include_str!("../../../params/default.toml");

impl Params {
    /// The repository's `params/default.toml`.
    pub fn default_params() -> Params {
        // The embedded file is tested to parse; failing here is a build bug.
        Params::from_toml(DEFAULT_PARAMS_TOML).unwrap_or_else(|e| panic!("params/default.toml: {e}"))
    }

    pub fn from_toml(text: &str) -> Result<Params, ParamsError> {
        let file: ParamsFile = toml::from_str(text).map_err(|e| ParamsError::Toml(e.to_string()))?;
        file.resolve()
    }

    /// Sets one parameter by its TOML key from a TOML value string, e.g.
    /// `set("uptime_share_start", "0.6")`: what `--sweep` uses. The result is
    /// validated as a whole.
    ///
    /// `uptime_share` (not a key of its own) sets both ends of the uptime
    /// share's slide, `uptime_share_start` and `uptime_share_end`: a flat
    /// share, the one-number question "how much of the emission pays for
    /// uptime?".
    pub fn with_override(&self, key: &str, value: &str) -> Result<Params, ParamsError> {
        self.with_overrides(&[(key, value)])
    }

    /// Sets several parameters as [`Params::with_override`] sets one, in
    /// order (a later key wins over an earlier one that sets the same
    /// parameter), and validates the result once, as a whole: one at a
    /// time, each was checked against the others' old values, so a design
    /// that moves two related parameters together (a minimum stake above
    /// the old saturation bond with the bond raised too, an emission cap
    /// below the old first year's emission with that lowered too) was
    /// refused in either order.
    pub fn with_overrides(&self, overrides: &[(&str, &str)]) -> Result<Params, ParamsError> {
        let mut table: toml::Table = toml::from_str(&self.to_toml()).map_err(|e| ParamsError::Toml(e.to_string()))?;
        for &(key, value) in overrides {
            let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .ok_or_else(|| ParamsError::Invalid { key: key.to_string(), why: format!("{value:?} is not a TOML value") })?;
            let keys: Vec<String> = match key.strip_prefix("emission.").unwrap_or(key) {
                UPTIME_SHARE_FLAT => keys_set_by(key).iter().map(|leaf| format!("emission.{leaf}")).collect(),
                _ => vec![key.to_string()],
            };
            for key in &keys {
                let (section, leaf) = find_key(&table, key).ok_or_else(|| unknown_key(&table, key))?;
                if let Some(toml::Value::Table(t)) = table.get_mut(&section) {
                    t.insert(leaf, parsed.clone());
                }
            }
            // A value of the wrong type is this key's error, found as it is
            // set: the TOML error's line and excerpt are of a text nobody
            // wrote.
            let text = toml::to_string(&table).map_err(|e| ParamsError::Toml(e.to_string()))?;
            toml::from_str::<ParamsFile>(&text)
                .map_err(|e| ParamsError::Invalid { key: key.to_string(), why: e.message().trim_end().to_string() })?;
        }
        let text = toml::to_string(&table).map_err(|e| ParamsError::Toml(e.to_string()))?;
        let file: ParamsFile = toml::from_str(&text).map_err(|e| ParamsError::Toml(e.to_string()))?;
        file.resolve()
    }

    /// Whether these parameters are ones a parameters file can give: each
    /// value in its range and the relations between them kept. Parameters
    /// that arrive in another form (a genesis file's JSON holds them in
    /// base units) pass through here, so a value `from_toml` refuses (a
    /// zero-second halving period, more oracles per node than a record
    /// holds) cannot reach the ledger, whose arithmetic relies on them.
    /// Checked in the file's form, by the file's rules. An amount's base
    /// units pass through an `f64` there, and above 2^52 may come back one
    /// off (as through every `with_override`): that is not a refusal, or a
    /// chain set up with such an amount could not start again.
    pub fn check(&self) -> Result<(), ParamsError> {
        ParamsFile::from_params(self).resolve().map(|_| ())
    }

    /// The parameters back as a TOML file in human units.
    pub fn to_toml(&self) -> String {
        toml::to_string(&ParamsFile::from_params(self)).unwrap_or_default()
    }

    pub fn epochs_per_year(&self) -> u64 {
        (YEAR_SECS / self.epoch_secs).max(1)
    }

    /// `measurement_max_age_secs` in whole epochs (at least 1): a
    /// measurement made in epoch m still earns in epoch e if e − m is at
    /// most this.
    pub fn measurement_max_age_epochs(&self) -> u64 {
        self.measurement_max_age_secs / self.epoch_secs.max(1)
    }
}

/// The override key that sets both ends of the uptime share's slide.
pub const UPTIME_SHARE_FLAT: &str = "uptime_share";

/// The keys (leaf names) an override of `key` sets: itself, or for
/// `uptime_share` the two it stands for.
pub fn keys_set_by(key: &str) -> Vec<&str> {
    match key.rsplit('.').next().unwrap_or(key) {
        UPTIME_SHARE_FLAT => vec!["uptime_share_start", "uptime_share_end"],
        leaf => vec![leaf],
    }
}

/// An unknown key, with the parameters whose names share a word with it
/// (`uptime_shar` → `emission.uptime_share_start`, …), so a typo is one
/// look away from its fix.
fn unknown_key(table: &toml::Table, key: &str) -> ParamsError {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let words: Vec<&str> = leaf.split('_').filter(|w| w.len() >= 3).collect();
    let mut near: Vec<String> = table
        .iter()
        .filter_map(|(section, v)| Some((section, v.as_table()?)))
        .flat_map(|(section, t)| t.keys().map(move |k| (section, k)))
        .filter(|(_, k)| k.contains(leaf) || words.iter().any(|w| k.split('_').any(|kw| kw.starts_with(w))))
        .map(|(section, k)| format!("{section}.{k}"))
        .collect();
    if leaf.starts_with("uptime") {
        near.push(UPTIME_SHARE_FLAT.to_string());
    }
    // Nearest first: in the file's order, `node_usd_shar` was offered
    // `dust.min_channel_escrow_usd` before `emission.node_usd_share`.
    near.sort_by_key(|k| edit_distance(leaf, k.rsplit('.').next().unwrap_or(k)));
    near.truncate(8);
    ParamsError::UnknownKey { key: key.to_string(), near }
}

/// The Levenshtein distance between `a` and `b`, in characters: how a
/// typo ranks the names it may have meant.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

fn find_key(table: &toml::Table, key: &str) -> Option<(String, String)> {
    let (want_section, leaf) = match key.split_once('.') {
        Some((s, l)) => (Some(s), l),
        None => (None, key),
    };
    table.iter().find_map(|(section, v)| {
        let t = v.as_table()?;
        let section_ok = want_section.is_none_or(|w| w == section);
        (section_ok && t.contains_key(leaf)).then(|| (section.clone(), leaf.to_string()))
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("parameters file: {0}")]
    Toml(String),
    #[error("parameter `{key}`: {why}")]
    Invalid { key: String, why: String },
    #[error("no parameter named `{key}`{}", did_you_mean(near))]
    UnknownKey { key: String, near: Vec<String> },
}

fn did_you_mean(near: &[String]) -> String {
    if near.is_empty() {
        "; the names are those of params/default.toml".to_string()
    } else {
        format!("; did you mean {}?", near.join(", "))
    }
}

/// The file's shape: human units (whole tokens and dollars, ratios as
/// decimals, durations such as "7d"). Unknown keys are refused so a typo
/// never silently falls back to a default.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamsFile {
    time: TimeSection,
    stake: StakeSection,
    fees: FeeSection,
    emission: EmissionSection,
    measurement: MeasurementSection,
    quality: QualitySection,
    regions: RegionSection,
    dust: DustSection,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeSection {
    epoch: String,
    unbonding: String,
    vesting: String,
    channel_close_grace: String,
    channel_max_lifetime: String,
    measurement_max_age: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StakeSection {
    min_node_stake_twy: f64,
    min_oracle_stake_twy: f64,
    stake_saturation_twy: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeeSection {
    min_fee_twy: f64,
    min_fee_usd: f64,
    pool_fee: f64,
    burn_max_premium: f64,
    burn_floor: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DustSection {
    min_channel_escrow_usd: f64,
    min_new_account_twy: f64,
    min_new_account_usd: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmissionSection {
    year_one_twy: f64,
    halving_period: String,
    cap_twy: f64,
    uptime_share_start: f64,
    uptime_share_end: f64,
    uptime_transition: String,
    oracle_share: f64,
    usage_reward_cap: f64,
    node_usd_share: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeasurementSection {
    oracles_per_node: u32,
    min_reports: u32,
    rho_reward_on_claim_max: f64,
    rho_slash_min: f64,
    slash_base: f64,
    slash_per_rho: f64,
    slash_max: f64,
    slash_reporter_share: f64,
    oracle_deviation_tolerance: f64,
    oracle_deviating_share_max: f64,
    oracle_strikes_to_slash: u32,
    oracle_slash: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct QualitySection {
    reputation_alpha: f64,
    reputation_initial: f64,
    min_uptime: f64,
    #[serde(deserialize_with = "exactly")]
    latency_tier_max_ms: [u32; 4],
    #[serde(deserialize_with = "exactly")]
    latency_tier_multiplier: [f64; 5],
}

/// A fixed-length list read from exactly that many values. The toml crate
/// fills a `[T; N]` from the first `N` values of a longer list and drops
/// the rest without a word, so five latency tiers ran as the first four.
pub fn exactly<'de, D, T, const N: usize>(deserializer: D) -> Result<[T; N], D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let values = Vec::<T>::deserialize(deserializer)?;
    let len = values.len();
    values
        .try_into()
        .map_err(|_| serde::de::Error::invalid_length(len, &format!("an array of {N} values").as_str()))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionSection {
    demand_alpha: f64,
    target_headroom: f64,
    target_floor_mbps: f64,
    multiplier_min: f64,
    multiplier_max: f64,
    demand_price_floor_usd_per_gib: f64,
}

/// Checks a value and converts it, naming the key on failure.
struct Resolver {
    errors: Vec<ParamsError>,
}

impl Resolver {
    fn fail(&mut self, key: &str, why: String) {
        self.errors.push(ParamsError::Invalid { key: key.to_string(), why });
    }

    /// A ratio in [lo, hi] to ppm. Ratios above 1 are allowed only where
    /// `hi` says so (the over-claim thresholds, the regional clamp).
    fn ratio(&mut self, key: &str, x: f64, lo: f64, hi: f64) -> u32 {
        if !x.is_finite() || x < lo || x > hi {
            self.fail(key, format!("{x} is outside [{lo}, {hi}]"));
            return 0;
        }
        (x * PPM as f64).round() as u32
    }

    /// Whole units (up to 6 decimals) to base units.
    fn amount(&mut self, key: &str, x: f64, min: f64) -> u128 {
        // 9e9 whole units keeps x × 1e6 exact in an f64.
        if !x.is_finite() || x < min || x > 9e9 {
            self.fail(key, format!("{x} is outside [{min}, 9e9]"));
            return 0;
        }
        (x * 1e6).round() as u128
    }

    fn duration(&mut self, key: &str, s: &str, min_secs: u64) -> u64 {
        match parse_duration_secs(s) {
            Ok(v) if v >= min_secs => v,
            Ok(v) => {
                self.fail(key, format!("{s:?} is {v} s; it must be at least {min_secs} s"));
                0
            }
            Err(why) => {
                self.fail(key, why);
                0
            }
        }
    }
}

/// "30s", "15m", "1h", "7d", "2y" (365 d) or a bare number of seconds.
pub fn parse_duration_secs(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    // "1.5h" was said to have an unknown unit, and a 20-digit count not
    // to be a duration at all.
    if unit.starts_with('.') && !digits.is_empty() {
        return Err(format!("{s:?}: a duration is a whole number of its unit (90m, not 1.5h)"));
    }
    let n: u64 = digits.parse().map_err(|e: std::num::ParseIntError| match e.kind() {
        std::num::IntErrorKind::PosOverflow => format!("{s:?} is too long"),
        _ => format!("{s:?} is not a duration such as 30s, 15m, 1h, 7d or 2y"),
    })?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "y" => YEAR_SECS,
        _ => return Err(format!("{s:?} has an unknown unit (use s, m, h, d or y)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too long"))
}

/// A span of seconds for people, to its two largest units: "23h 44m",
/// "6d 23h", "45s".
pub fn format_span(secs: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let Some(first) = UNITS.iter().position(|&(_, size)| secs >= size) else { return "0s".into() };
    let (unit, size) = UNITS[first];
    let mut out = format!("{}{unit}", secs / size);
    if let Some(&(next, next_size)) = UNITS.get(first + 1) {
        let rest = secs % size / next_size;
        if rest > 0 {
            out.push_str(&format!(" {rest}{next}"));
        }
    }
    out
}

/// `secs` in the largest unit that divides it: "90d", "1h", "45s".
pub fn format_duration(secs: u64) -> String {
    for (unit, mult) in [("y", YEAR_SECS), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= mult && secs.is_multiple_of(mult) {
            return format!("{}{unit}", secs / mult);
        }
    }
    format!("{secs}s")
}

impl ParamsFile {
    fn resolve(&self) -> Result<Params, ParamsError> {
        let mut r = Resolver { errors: Vec::new() };
        let t = &self.time;
        let epoch_secs = r.duration("time.epoch", &t.epoch, 1);
        let s = &self.stake;
        let f = &self.fees;
        let e = &self.emission;
        let m = &self.measurement;
        let q = &self.quality;
        let g = &self.regions;
        let d = &self.dust;
        let p = Params {
            epoch_secs,
            unbonding_secs: r.duration("time.unbonding", &t.unbonding, 1),
            vesting_secs: r.duration("time.vesting", &t.vesting, 0),
            channel_close_grace_secs: r.duration("time.channel_close_grace", &t.channel_close_grace, 0),
            channel_max_lifetime_secs: r.duration("time.channel_max_lifetime", &t.channel_max_lifetime, 1),
            measurement_max_age_secs: r.duration("time.measurement_max_age", &t.measurement_max_age, 1),
            min_node_stake: Token(r.amount("stake.min_node_stake_twy", s.min_node_stake_twy, 0.000001)),
            min_oracle_stake: Token(r.amount("stake.min_oracle_stake_twy", s.min_oracle_stake_twy, 0.000001)),
            stake_saturation: Token(r.amount("stake.stake_saturation_twy", s.stake_saturation_twy, 0.000001)),
            min_fee_token: Token(r.amount("fees.min_fee_twy", f.min_fee_twy, 0.0)),
            min_fee_usd: Usd(r.amount("fees.min_fee_usd", f.min_fee_usd, 0.0)),
            min_channel_escrow: Usd(r.amount("dust.min_channel_escrow_usd", d.min_channel_escrow_usd, 0.0)),
            min_new_account_token: Token(r.amount("dust.min_new_account_twy", d.min_new_account_twy, 0.0)),
            min_new_account_usd: Usd(r.amount("dust.min_new_account_usd", d.min_new_account_usd, 0.0)),
            pool_fee_ppm: r.ratio("fees.pool_fee", f.pool_fee, 0.0, 0.1),
            burn_max_premium_ppm: r.ratio("fees.burn_max_premium", f.burn_max_premium, 0.0, 100.0),
            burn_floor_ppm: r.ratio("fees.burn_floor", f.burn_floor, 0.0, 1.0),
            emission_year_one: Token(r.amount("emission.year_one_twy", e.year_one_twy, 0.0)),
            halving_period_secs: r.duration("emission.halving_period", &e.halving_period, 1),
            emission_cap: Token(r.amount("emission.cap_twy", e.cap_twy, 0.0)),
            uptime_share_start_ppm: r.ratio("emission.uptime_share_start", e.uptime_share_start, 0.0, 1.0),
            uptime_share_end_ppm: r.ratio("emission.uptime_share_end", e.uptime_share_end, 0.0, 1.0),
            uptime_transition_secs: r.duration("emission.uptime_transition", &e.uptime_transition, 1),
            oracle_share_ppm: r.ratio("emission.oracle_share", e.oracle_share, 0.0, 1.0),
            usage_reward_cap_ppm: r.ratio("emission.usage_reward_cap", e.usage_reward_cap, 0.0, 1.0),
            node_usd_share_ppm: r.ratio("emission.node_usd_share", e.node_usd_share, 0.0, 1.0),
            oracles_per_node: m.oracles_per_node,
            min_reports: m.min_reports,
            rho_reward_on_claim_max_ppm: r.ratio("measurement.rho_reward_on_claim_max", m.rho_reward_on_claim_max, 1.0, 10.0),
            rho_slash_min_ppm: r.ratio("measurement.rho_slash_min", m.rho_slash_min, 1.0, 100.0),
            slash_base_ppm: r.ratio("measurement.slash_base", m.slash_base, 0.0, 1.0),
            slash_per_rho_ppm: r.ratio("measurement.slash_per_rho", m.slash_per_rho, 0.0, 1.0),
            slash_max_ppm: r.ratio("measurement.slash_max", m.slash_max, 0.0, 1.0),
            slash_reporter_share_ppm: r.ratio("measurement.slash_reporter_share", m.slash_reporter_share, 0.0, 1.0),
            oracle_deviation_tolerance_ppm: r.ratio("measurement.oracle_deviation_tolerance", m.oracle_deviation_tolerance, 0.0, 1.0),
            oracle_deviating_share_max_ppm: r.ratio("measurement.oracle_deviating_share_max", m.oracle_deviating_share_max, 0.0, 1.0),
            oracle_strikes_to_slash: m.oracle_strikes_to_slash,
            oracle_slash_ppm: r.ratio("measurement.oracle_slash", m.oracle_slash, 0.0, 1.0),
            reputation_alpha_ppm: r.ratio("quality.reputation_alpha", q.reputation_alpha, 0.0, 1.0),
            reputation_initial_ppm: r.ratio("quality.reputation_initial", q.reputation_initial, 0.0, 1.0),
            min_uptime_ppm: r.ratio("quality.min_uptime", q.min_uptime, 0.0, 1.0),
            latency_tier_max_ms: q.latency_tier_max_ms,
            latency_tier_multiplier_ppm: [0, 1, 2, 3, 4].map(|i| {
                r.ratio(&format!("quality.latency_tier_multiplier[{i}]"), q.latency_tier_multiplier[i], 0.0, 1.0)
            }),
            region_demand_alpha_ppm: r.ratio("regions.demand_alpha", g.demand_alpha, 0.0, 1.0),
            region_target_headroom_ppm: r.ratio("regions.target_headroom", g.target_headroom, 1.0, 10.0),
            region_target_floor_bps: (r.amount("regions.target_floor_mbps", g.target_floor_mbps, 0.0) as u64),
            region_multiplier_min_ppm: r.ratio("regions.multiplier_min", g.multiplier_min, 0.0, 1.0),
            region_multiplier_max_ppm: r.ratio("regions.multiplier_max", g.multiplier_max, 1.0, 100.0),
            // At most 9e15 micro-dollars (`amount`'s bound): fits in u64.
            region_demand_price_floor_usd_micro_per_gib: r.amount(
                "regions.demand_price_floor_usd_per_gib",
                g.demand_price_floor_usd_per_gib,
                0.000001,
            ) as u64,
        };
        // target_floor_mbps was scaled by 1e6 above: that is bit/s.
        check_relations(&p, &mut r);
        match r.errors.into_iter().next() {
            Some(err) => Err(err),
            None => Ok(p),
        }
    }

    fn from_params(p: &Params) -> ParamsFile {
        let whole = |x: u128| x as f64 / 1e6;
        let ratio = |x: u32| x as f64 / 1e6;
        ParamsFile {
            time: TimeSection {
                epoch: format_duration(p.epoch_secs),
                unbonding: format_duration(p.unbonding_secs),
                vesting: format_duration(p.vesting_secs),
                channel_close_grace: format_duration(p.channel_close_grace_secs),
                channel_max_lifetime: format_duration(p.channel_max_lifetime_secs),
                measurement_max_age: format_duration(p.measurement_max_age_secs),
            },
            stake: StakeSection {
                min_node_stake_twy: whole(p.min_node_stake.0),
                min_oracle_stake_twy: whole(p.min_oracle_stake.0),
                stake_saturation_twy: whole(p.stake_saturation.0),
            },
            fees: FeeSection {
                min_fee_twy: whole(p.min_fee_token.0),
                min_fee_usd: whole(p.min_fee_usd.0),
                pool_fee: ratio(p.pool_fee_ppm),
                burn_max_premium: ratio(p.burn_max_premium_ppm),
                burn_floor: ratio(p.burn_floor_ppm),
            },
            emission: EmissionSection {
                year_one_twy: whole(p.emission_year_one.0),
                halving_period: format_duration(p.halving_period_secs),
                cap_twy: whole(p.emission_cap.0),
                uptime_share_start: ratio(p.uptime_share_start_ppm),
                uptime_share_end: ratio(p.uptime_share_end_ppm),
                uptime_transition: format_duration(p.uptime_transition_secs),
                oracle_share: ratio(p.oracle_share_ppm),
                usage_reward_cap: ratio(p.usage_reward_cap_ppm),
                node_usd_share: ratio(p.node_usd_share_ppm),
            },
            measurement: MeasurementSection {
                oracles_per_node: p.oracles_per_node,
                min_reports: p.min_reports,
                rho_reward_on_claim_max: ratio(p.rho_reward_on_claim_max_ppm),
                rho_slash_min: ratio(p.rho_slash_min_ppm),
                slash_base: ratio(p.slash_base_ppm),
                slash_per_rho: ratio(p.slash_per_rho_ppm),
                slash_max: ratio(p.slash_max_ppm),
                slash_reporter_share: ratio(p.slash_reporter_share_ppm),
                oracle_deviation_tolerance: ratio(p.oracle_deviation_tolerance_ppm),
                oracle_deviating_share_max: ratio(p.oracle_deviating_share_max_ppm),
                oracle_strikes_to_slash: p.oracle_strikes_to_slash,
                oracle_slash: ratio(p.oracle_slash_ppm),
            },
            quality: QualitySection {
                reputation_alpha: ratio(p.reputation_alpha_ppm),
                reputation_initial: ratio(p.reputation_initial_ppm),
                min_uptime: ratio(p.min_uptime_ppm),
                latency_tier_max_ms: p.latency_tier_max_ms,
                latency_tier_multiplier: p.latency_tier_multiplier_ppm.map(ratio),
            },
            regions: RegionSection {
                demand_alpha: ratio(p.region_demand_alpha_ppm),
                target_headroom: ratio(p.region_target_headroom_ppm),
                target_floor_mbps: p.region_target_floor_bps as f64 / 1e6,
                multiplier_min: ratio(p.region_multiplier_min_ppm),
                multiplier_max: ratio(p.region_multiplier_max_ppm),
                demand_price_floor_usd_per_gib: whole(p.region_demand_price_floor_usd_micro_per_gib as u128),
            },
            dust: DustSection {
                min_channel_escrow_usd: whole(p.min_channel_escrow.0),
                min_new_account_twy: whole(p.min_new_account_token.0),
                min_new_account_usd: whole(p.min_new_account_usd.0),
            },
        }
    }
}

/// Checks between parameters, beyond each one's own range.
fn check_relations(p: &Params, r: &mut Resolver) {
    if p.oracles_per_node == 0 || p.oracles_per_node as usize > MAX_ORACLES_PER_NODE {
        r.fail("measurement.oracles_per_node", format!("{} is outside [1, {MAX_ORACLES_PER_NODE}]", p.oracles_per_node));
    }
    if p.min_reports == 0 || p.min_reports > p.oracles_per_node {
        r.fail("measurement.min_reports", format!("{} must be in [1, oracles_per_node = {}]", p.min_reports, p.oracles_per_node));
    }
    if p.oracle_strikes_to_slash == 0 {
        r.fail("measurement.oracle_strikes_to_slash", "must be at least 1".into());
    }
    if p.rho_slash_min_ppm < p.rho_reward_on_claim_max_ppm {
        r.fail(
            "measurement.rho_slash_min",
            "must be at least rho_reward_on_claim_max: a claim cannot be slashed before it is capped".into(),
        );
    }
    if p.slash_base_ppm > p.slash_max_ppm {
        r.fail("measurement.slash_base", "must not exceed slash_max".into());
    }
    if p.uptime_share_start_ppm as u64 + p.oracle_share_ppm as u64 > PPM as u64
        || p.uptime_share_end_ppm as u64 + p.oracle_share_ppm as u64 > PPM as u64
    {
        r.fail("emission.oracle_share", "uptime share plus oracle share exceeds 1".into());
    }
    if p.epoch_secs > YEAR_SECS {
        r.fail("time.epoch", "must not exceed a year".into());
    }
    // A stake that starts unbonding during an epoch is slashed at that
    // epoch's end for what it did in it, or an epoch later when its
    // over-claim is confirmed: shorter, and it is withdrawn first.
    if p.unbonding_secs < p.epoch_secs.saturating_mul(2) {
        r.fail(
            "time.unbonding",
            format!(
                "{} is shorter than two epochs ({}): a slash confirmed an epoch later would find the stake withdrawn",
                format_duration(p.unbonding_secs),
                format_duration(p.epoch_secs.saturating_mul(2))
            ),
        );
    }
    // An epoch without a quorum (an oracle down, a report lost) costs an
    // honest node nothing while its last measurement is recent: at least
    // the one before it must still count.
    if p.measurement_max_age_secs < p.epoch_secs {
        r.fail(
            "time.measurement_max_age",
            format!(
                "{} is shorter than one epoch ({}): one epoch without a quorum would cost every node its uptime",
                format_duration(p.measurement_max_age_secs),
                format_duration(p.epoch_secs)
            ),
        );
    }
    if p.halving_period_secs < p.epoch_secs {
        r.fail("emission.halving_period", "must be at least one epoch".into());
    }
    if p.stake_saturation < p.min_node_stake {
        r.fail("stake.stake_saturation_twy", "must be at least min_node_stake_twy".into());
    }
    if p.emission_year_one > p.emission_cap {
        r.fail("emission.year_one_twy", "exceeds the emission cap".into());
    }
    if !p.latency_tier_max_ms.windows(2).all(|w| w[0] < w[1]) {
        r.fail("quality.latency_tier_max_ms", "tiers must be strictly increasing".into());
    }
    if !p.latency_tier_multiplier_ppm.windows(2).all(|w| w[0] >= w[1]) {
        r.fail("quality.latency_tier_multiplier", "multipliers must not increase with latency".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameters given in base units (a genesis file's) were taken as
    /// they were: a zero-second halving period divided by zero at the
    /// first epoch's end.
    #[test]
    fn check_refuses_what_a_parameters_file_would() {
        assert_eq!(Params::default_params().check(), Ok(()));
        let refused = |change: fn(&mut Params)| {
            let mut p = Params::default_params();
            change(&mut p);
            p.check().unwrap_err().to_string()
        };
        // The largest amounts do not survive the file's f64 exactly, and
        // are no less valid for it.
        let mut large = Params::default_params();
        large.emission_cap = Token(4_490_420_677_043_797);
        assert_eq!(large.check(), Ok(()));
        expect_test::expect![[r#"
            [
                "parameter `time.epoch`: \"0s\" is 0 s; it must be at least 1 s",
                "parameter `emission.halving_period`: \"0s\" is 0 s; it must be at least 1 s",
                "parameter `measurement.oracles_per_node`: 8 is outside [1, 7]",
                "parameter `fees.pool_fee`: 1 is outside [0, 0.1]",
                "parameter `stake.min_node_stake_twy`: 10000000000 is outside [0.000001, 9e9]",
            ]
        "#]]
        .assert_debug_eq(&[
            refused(|p| p.epoch_secs = 0),
            refused(|p| p.halving_period_secs = 0),
            refused(|p| p.oracles_per_node = 8),
            refused(|p| p.pool_fee_ppm = 1_000_000),
            refused(|p| p.min_node_stake = Token::units(10_000_000_000)),
        ]);
    }

    #[test]
    fn default_file_parses_and_round_trips() {
        let p = Params::default_params();
        assert_eq!(Params::from_toml(&p.to_toml()).unwrap(), p);
        assert_eq!(p.epoch_secs, 3600);
        assert_eq!(p.unbonding_secs, 7 * 86_400);
        assert_eq!(p.min_node_stake, Token::units(1000));
        assert_eq!(p.measurement_max_age_epochs(), 24);
        // The simulator's daily epochs: one.
        let daily = p.with_override("time.epoch", "\"1d\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(daily.measurement_max_age_epochs(), 1);
    }

    fn with(key: &str, value: &str) -> String {
        match Params::default_params().with_override(key, value) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn nonsense_is_refused_with_the_key_named() {
        expect_test::expect![[r#"
            [
                "ok",
                "parameter `measurement.oracle_deviation_tolerance`: 1.5 is outside [0, 1]",
                "parameter `time.unbonding`: \"0s\" is 0 s; it must be at least 1 s",
                "parameter `time.unbonding`: 1h is shorter than two epochs (2h): a slash confirmed an epoch later would find the stake withdrawn",
                "parameter `time.epoch`: \"1 fortnight\" has an unknown unit (use s, m, h, d or y)",
                "parameter `emission.usage_reward_cap`: 1.2 is outside [0, 1]",
                "parameter `measurement.min_reports`: 4 must be in [1, oracles_per_node = 3]",
                "parameter `emission.oracle_share`: uptime share plus oracle share exceeds 1",
                "no parameter named `no_such_key`; the names are those of params/default.toml",
                "parameter `time.measurement_max_age`: 30m is shorter than one epoch (1h): one epoch without a quorum would cost every node its uptime",
                "parameter `stake.min_node_stake_twy`: -5 is outside [0.000001, 9e9]",
                "parameter `node_usd_share`: invalid type: string \"0.5\", expected f64",
                "parameter `time.epoch`: invalid type: integer `3600`, expected a string",
            ]
        "#]]
        .assert_debug_eq(&[
            with("uptime_share_start", "0.6"),
            with("oracle_deviation_tolerance", "1.5"),
            with("unbonding", "\"0s\""),
            with("unbonding", "\"1h\""),
            with("epoch", "\"1 fortnight\""),
            with("usage_reward_cap", "1.2"),
            with("min_reports", "4"),
            with("oracle_share", "0.5"),
            with("no_such_key", "1"),
            with("measurement_max_age", "\"30m\""),
            with("min_node_stake_twy", "-5"),
            // A value of the wrong type: the TOML error cited a line of
            // the table we had written out, not anything the user wrote.
            with("node_usd_share", "\"0.5\""),
            with("time.epoch", "3600"),
        ]);
    }

    /// `uptime_share` (the issue's sweep example) is a flat share: both
    /// ends of the slide; a near miss names the keys it may have meant.
    #[test]
    fn uptime_share_sets_both_ends_and_a_typo_gets_suggestions() {
        let p = Params::default_params().with_override("uptime_share", "0.6").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.uptime_share_start_ppm, p.uptime_share_end_ppm), (600_000, 600_000));
        let q = Params::default_params().with_override("emission.uptime_share", "0.7").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((q.uptime_share_start_ppm, q.uptime_share_end_ppm), (700_000, 700_000));
        let err = Params::default_params().with_override("uptime_share", "1.5").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("uptime_share_start") && err.contains("outside [0, 1]"), "{err}");
        let err = Params::default_params().with_override("oracle_shar", "0.1").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("no parameter named `oracle_shar`; did you mean "), "{err}");
        assert!(err.contains("emission.oracle_share"), "{err}");
        let err = Params::default_params().with_override("uptime_sahre", "0.5").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("uptime_share, ") && err.contains("emission.uptime_share_start"), "{err}");
        // Nearest first: `dust.min_channel_escrow_usd` came first here.
        let err = Params::default_params().with_override("node_usd_shar", "0.5").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("did you mean emission.node_usd_share, "), "{err}");
        assert_eq!([edit_distance("hybird", "hybrid"), edit_distance("", "abc"), edit_distance("share", "share")], [2, 3, 0]);
    }

    /// Several overrides are validated together: one at a time, a pair
    /// moved together was checked against the other's old value.
    #[test]
    fn overrides_of_related_parameters_are_checked_together() {
        let d = Params::default_params();
        let p = d
            .with_overrides(&[("min_node_stake_twy", "3000"), ("stake_saturation_twy", "5000")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.min_node_stake, p.stake_saturation), (Token::units(3000), Token::units(5000)));
        // A later key wins, and a wrong type names its own key.
        let q = d.with_overrides(&[("uptime_share", "0.5"), ("uptime_share_end", "0.3")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((q.uptime_share_start_ppm, q.uptime_share_end_ppm), (500_000, 300_000));
        let err = d.with_overrides(&[("pool_fee", "0.01"), ("min_reports", "\"2\"")]).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("parameter `min_reports`: invalid type: string \"2\", expected u32"));
        let err = d.with_overrides(&[("min_node_stake_twy", "3000"), ("stake_saturation_twy", "2500")]).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("parameter `stake.stake_saturation_twy`: must be at least min_node_stake_twy"));
    }

    /// A list of more values than the key has places for: the extra ones
    /// were dropped without a word (five latency tiers read as the first
    /// four, a sixth multiplier as nothing).
    #[test]
    fn a_list_of_the_wrong_length_is_refused() {
        let five = DEFAULT_PARAMS_TOML.replace("latency_tier_max_ms = [50, 150, 300, 600]", "latency_tier_max_ms = [50, 150, 300, 600, 900]");
        assert_ne!(five, DEFAULT_PARAMS_TOML);
        let err = Params::from_toml(&five).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("latency_tier_max_ms") && err.contains("invalid length 5, expected an array of 4 values"), "{err}");
        let err = with("latency_tier_multiplier", "[1.0, 0.75, 0.5, 0.25, 0.1, 0.0]");
        assert!(err.contains("latency_tier_multiplier") && err.contains("invalid length 6, expected an array of 5 values"), "{err}");
        assert_eq!(with("latency_tier_max_ms", "[40, 150, 300, 600]"), "ok");
    }

    #[test]
    fn a_missing_or_unknown_key_is_an_error() {
        let text = DEFAULT_PARAMS_TOML.replace("min_reports", "min_reportz");
        let err = Params::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("min_reportz") || err.contains("min_reports"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("30s"), Ok(30));
        assert_eq!(parse_duration_secs("7d"), Ok(604_800));
        assert_eq!(parse_duration_secs("90"), Ok(90));
        assert!(parse_duration_secs("d").is_err());
        // Said as what they are: "1.5h" had "an unknown unit", and a
        // 20-digit count was "not a duration".
        expect_test::expect![[r#"
            [
                Err(
                    "\"1.5h\": a duration is a whole number of its unit (90m, not 1.5h)",
                ),
                Err(
                    "\"99999999999999999999s\" is too long",
                ),
                Err(
                    "\"3w\" has an unknown unit (use s, m, h, d or y)",
                ),
                Err(
                    "\"soon\" is not a duration such as 30s, 15m, 1h, 7d or 2y",
                ),
            ]
        "#]]
        .assert_debug_eq(&["1.5h", "99999999999999999999s", "3w", "soon"].map(parse_duration_secs));
    }
}
