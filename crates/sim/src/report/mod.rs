//! The simulator's outputs for people and for other tools (DESIGN §7):
//! charts (each as PNG and SVG), a self-contained HTML report, the
//! per-epoch CSV of a run and the JSON summary of all runs.
//!
//! One scenario is the report of `tollway sim run`; several are
//! `tollway sim compare`, where every chart overlays the scenarios, one
//! colour each. With several Monte Carlo runs per scenario, a chart draws
//! the median across runs per epoch with a shaded 10th–90th percentile
//! band.
//!
//! Everything written is a pure function of the input: the same
//! `ScenarioResult`s give byte-identical SVG, PNG, HTML, CSV and JSON (no
//! timestamps, no paths, no hash-map order, and an embedded font instead
//! of whatever fonts the machine has).

mod canvas;
mod charts;
mod html;
pub mod human;
mod panels;
pub mod stats;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::output::{EpochRow, RunOutput, RunSummary, ScenarioResult, REGIONS};
use crate::spill::SpillError;

pub use stats::ScenarioStats;

/// Why a report could not be written. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("nothing to report into {}: no scenarios were given", dir.display())]
    NoScenarios { dir: PathBuf },
    // The causes are in the messages and are no `#[source]` (a field
    // named `source` is one): `{:#}` printed "No space left on device"
    // twice.
    #[error("cannot create the report directory {}: {io}", path.display())]
    CreateDir { path: PathBuf, io: std::io::Error },
    #[error("cannot write {}: {io}", path.display())]
    Write { path: PathBuf, io: std::io::Error },
    #[error("cannot draw the chart {}: {message}", path.display())]
    Chart { path: PathBuf, message: String },
    #[error("cannot encode the summary {}: {error}", path.display())]
    Json { path: PathBuf, error: serde_json::Error },
    /// The runs' chart points or operator profits could not be read back.
    #[error("{0}")]
    Spill(SpillError),
}

impl From<SpillError> for ReportError {
    fn from(e: SpillError) -> ReportError {
        ReportError::Spill(e)
    }
}

/// The file stems of the chart panels, in report order: each is written
/// as `<stem>.png` and `<stem>.svg`.
pub const CHART_STEMS: [&str; 8] =
    ["price", "supply", "mint_burn", "nodes", "capacity", "operator_profit", "consumer_price", "liquidity"];

/// The HTML report's file name inside the report directory.
pub const INDEX_HTML: &str = "index.html";

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    fs::write(path, bytes).map_err(|io| ReportError::Write { path: path.to_path_buf(), io })
}

/// Writes charts (each panel as both PNG and SVG) and a self-contained
/// `index.html` into `dir` (created if missing) for one or more
/// scenarios. One scenario is the report of `tollway sim run`; several are
/// `tollway sim compare`, which puts designs side by side (each chart
/// overlays the scenarios, one colour per scenario, with a legend).
/// Returns the paths written: `<stem>.png` and `<stem>.svg` for each of
/// [`CHART_STEMS`], then `index.html`.
pub fn write_report(dir: &Path, title: &str, scenarios: &[ScenarioResult]) -> Result<Vec<PathBuf>, ReportError> {
    if scenarios.is_empty() {
        return Err(ReportError::NoScenarios { dir: dir.to_path_buf() });
    }
    fs::create_dir_all(dir).map_err(|io| ReportError::CreateDir { path: dir.to_path_buf(), io })?;
    // Read from the runs' stores once each: a block of points, or of
    // profits, at a time.
    let bands = scenarios.iter().map(stats::ScenarioBands::of).collect::<Result<Vec<_>, _>>()?;
    let profits: Vec<&dyn stats::Values> = scenarios.iter().map(|s| &s.store as &dyn stats::Values).collect();
    let profit_histogram = stats::histogram(&profits, panels::PROFIT_BINS)?;
    let panels = panels::panels(scenarios, &bands, profit_histogram);
    debug_assert_eq!(panels.iter().map(|p| p.chart.stem).collect::<Vec<_>>(), CHART_STEMS);
    let mut written = Vec::with_capacity(panels.len() * 2 + 1);
    let mut svgs = Vec::with_capacity(panels.len());
    for panel in &panels {
        let png_path = dir.join(format!("{}.png", panel.chart.stem));
        let png = charts::render_png(&panel.chart)
            .map_err(|message| ReportError::Chart { path: png_path.clone(), message })?;
        write_file(&png_path, &png)?;
        written.push(png_path);

        let svg_path = dir.join(format!("{}.svg", panel.chart.stem));
        let svg = charts::render_svg(&panel.chart)
            .map_err(|message| ReportError::Chart { path: svg_path.clone(), message })?;
        write_file(&svg_path, svg.as_bytes())?;
        written.push(svg_path);
        svgs.push(svg);
    }
    let stats: Vec<ScenarioStats> = scenarios.iter().map(ScenarioStats::of).collect();
    let page = html::page(title, scenarios, &stats, &panels, &svgs);
    let index = dir.join(INDEX_HTML);
    write_file(&index, page.as_bytes())?;
    written.push(index);
    Ok(written)
}

/// The CSV header: scalar fields by name; each per-region array expands
/// to one column per region, `<field>_<region>` with the region's hyphens
/// turned into underscores (`liquidity_north_america`).
pub fn csv_columns() -> Vec<String> {
    let mut cols = Vec::new();
    for field in CSV_FIELDS {
        match field.value {
            Value::Regions(_) => {
                for region in REGIONS {
                    cols.push(format!("{}_{}", field.name, region.replace('-', "_")));
                }
            }
            _ => cols.push(field.name.to_string()),
        }
    }
    cols
}

enum Value {
    U64(fn(&EpochRow) -> u64),
    F64(fn(&EpochRow) -> f64),
    Regions(fn(&EpochRow) -> [f64; 8]),
}

struct Field {
    name: &'static str,
    value: Value,
}

fn regions_u32(v: &[u32; 8]) -> [f64; 8] {
    v.map(f64::from)
}

/// Every `EpochRow` field in declaration order (a test checks none is
/// missing). Per-region arrays drop their `_by_region` suffix.
const CSV_FIELDS: [Field; 27] = [
    Field { name: "epoch", value: Value::U64(|r| r.epoch) },
    Field { name: "day", value: Value::F64(|r| r.day) },
    Field { name: "price_usd", value: Value::F64(|r| r.price_usd) },
    Field { name: "circulating_twy", value: Value::F64(|r| r.circulating_twy) },
    Field { name: "total_supply_twy", value: Value::F64(|r| r.total_supply_twy) },
    Field { name: "minted_twy", value: Value::F64(|r| r.minted_twy) },
    Field { name: "burned_twy", value: Value::F64(|r| r.burned_twy) },
    Field { name: "paid_usd", value: Value::F64(|r| r.paid_usd) },
    Field { name: "nodes", value: Value::U64(|r| u64::from(r.nodes)) },
    Field { name: "nodes", value: Value::Regions(|r| regions_u32(&r.nodes_by_region)) },
    Field { name: "capacity_gbps", value: Value::Regions(|r| r.capacity_gbps_by_region) },
    Field { name: "verified_capacity_gbps", value: Value::Regions(|r| r.verified_capacity_gbps_by_region) },
    Field { name: "demand_gbps", value: Value::Regions(|r| r.demand_gbps_by_region) },
    Field { name: "liquidity", value: Value::Regions(|r| r.liquidity_by_region) },
    Field { name: "multiplier", value: Value::Regions(|r| r.multiplier_by_region) },
    Field { name: "consumer_price_usd_per_gb", value: Value::F64(|r| r.consumer_price_usd_per_gb) },
    Field { name: "served_gb", value: Value::F64(|r| r.served_gb) },
    Field { name: "unserved_gb", value: Value::F64(|r| r.unserved_gb) },
    Field { name: "consumers", value: Value::F64(|r| r.consumers) },
    Field { name: "operator_profit_p10_usd", value: Value::F64(|r| r.operator_profit_p10_usd) },
    Field { name: "operator_profit_p50_usd", value: Value::F64(|r| r.operator_profit_p50_usd) },
    Field { name: "operator_profit_p90_usd", value: Value::F64(|r| r.operator_profit_p90_usd) },
    Field { name: "operators_joined", value: Value::U64(|r| u64::from(r.operators_joined)) },
    Field { name: "operators_left", value: Value::U64(|r| u64::from(r.operators_left)) },
    Field { name: "attacker_profit_usd", value: Value::F64(|r| r.attacker_profit_usd) },
    Field { name: "slashed_twy", value: Value::F64(|r| r.slashed_twy) },
    Field { name: "slashes", value: Value::U64(|r| u64::from(r.slashes)) },
];

/// Rust's shortest round-trip form: `1.5`, `0.1`, `1e-7`, `NaN`, `inf`.
/// It reads back to the same f64 with `str::parse`.
fn push_f64(line: &mut String, x: f64) {
    let _ = write!(line, "{x}");
}

/// The per-epoch CSV of one run as a string (header + one row per epoch).
pub fn run_csv(run: &RunOutput) -> String {
    let mut out = csv_columns().join(",");
    out.push('\n');
    for row in &run.rows {
        let mut first = true;
        for field in &CSV_FIELDS {
            let mut sep = |out: &mut String| {
                if !first {
                    out.push(',');
                }
                first = false;
            };
            match &field.value {
                Value::U64(f) => {
                    sep(&mut out);
                    let _ = write!(out, "{}", f(row));
                }
                Value::F64(f) => {
                    sep(&mut out);
                    push_f64(&mut out, f(row));
                }
                Value::Regions(f) => {
                    for v in f(row) {
                        sep(&mut out);
                        push_f64(&mut out, v);
                    }
                }
            }
        }
        out.push('\n');
    }
    out
}

/// Writes the per-epoch CSV of one run: a header row and one row per
/// epoch; per-region arrays expand to one column per region (e.g.
/// `liquidity_europe`). See [`csv_columns`].
pub fn write_run_csv(path: &Path, run: &RunOutput) -> Result<(), ReportError> {
    write_file(path, run_csv(run).as_bytes())
}

/// The JSON summary file.
#[derive(Serialize)]
struct SummaryFile<'a> {
    /// Bumped when the layout changes.
    format: &'static str,
    scenarios: Vec<ScenarioSummary<'a>>,
}

#[derive(Serialize)]
struct ScenarioSummary<'a> {
    name: &'a str,
    /// Median and 10th/90th percentiles over runs.
    stats: ScenarioStats,
    /// Every run's own summary.
    runs: Vec<&'a RunSummary>,
}

/// The JSON summary of all runs, as a string: per scenario, the metrics
/// over runs (median, p10, p90) and every run's own summary.
pub fn summary_json(scenarios: &[ScenarioResult]) -> Result<String, serde_json::Error> {
    let file = SummaryFile {
        format: "tollway-sim-summary/1",
        scenarios: scenarios
            .iter()
            .map(|s| ScenarioSummary {
                name: &s.name,
                stats: ScenarioStats::of(s),
                runs: s.runs.iter().map(|r| &r.summary).collect(),
            })
            .collect(),
    };
    let mut json = serde_json::to_string_pretty(&file)?;
    json.push('\n');
    Ok(json)
}

/// Writes the JSON summary of all runs of all scenarios.
pub fn write_summary_json(path: &Path, scenarios: &[ScenarioResult]) -> Result<(), ReportError> {
    let json = summary_json(scenarios).map_err(|error| ReportError::Json { path: path.to_path_buf(), error })?;
    write_file(path, json.as_bytes())
}
