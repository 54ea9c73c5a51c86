//! The report (DESIGN §7 outputs): charts as PNG and SVG, the HTML report,
//! the per-epoch CSV and the JSON summary, on synthetic scenario results
//! (2 scenarios × 3 runs × 365 daily epochs of smooth made-up series).
//! The last test opens the report in a real headless Chromium.

// A failed unwrap is a failed test (STYLE.md: no unwrap outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "shared/digest.rs"]
mod digest;

use digest::digest_of_files;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tollway_sim::output::{EpochRow, RunOutput, RunResult, RunSummary, ScenarioResult, REGIONS};
use tollway_sim::spill::{RunStore, CHART_POINTS_FILE, OPERATOR_PROFITS_FILE};
use tollway_sim::report::stats::{band, epochs_per_point, BandPoint, Charted, ScenarioBands, Spread};
use tollway_sim::report::{
    csv_columns, write_report, write_run_csv, write_summary_json, ReportError, CHART_STEMS, INDEX_HTML,
};

const EPOCHS: u64 = 365;
const RUNS: u64 = 3;

/// A deterministic, smooth made-up run. `design` 0 is "high fixed
/// emissions" (mint stays high, burn never catches up), 1 is
/// "burn-and-mint" (mint falls, burn grows past it around day 200).
fn synthetic_run(design: u32, seed: u64) -> RunOutput {
    let wobble = |t: f64, k: f64| (t * k + seed as f64 * 0.7).sin();
    let mut rows = Vec::new();
    let mut circulating = 100e6;
    let mut attacker = 0.0;
    for e in 0..EPOCHS {
        let t = e as f64;
        let s = seed as f64 - 2.0; // -1, 0, 1 across the three runs
        let (minted, burned, price) = if design == 0 {
            (
                400_000.0 * (1.0 + 0.02 * wobble(t, 0.05)),
                60_000.0 + 300.0 * t + 20_000.0 * s,
                (0.40 * (-t / 500.0).exp() + 0.02 * wobble(t, 0.08)) * (1.0 + 0.08 * s),
            )
        } else {
            (
                400_000.0 * (-t / 300.0).exp() + 50_000.0,
                30_000.0 + 900.0 * t * (1.0 + 0.1 * s),
                (0.20 + 0.25 * t / 365.0 + 0.02 * wobble(t, 0.1)) * (1.0 + 0.1 * s),
            )
        };
        circulating += minted - burned;
        attacker += if design == 0 { 120.0 } else { -40.0 } * (1.0 + 0.2 * s);
        let mut row = EpochRow {
            epoch: e,
            day: t + 1.0,
            price_usd: price,
            circulating_twy: circulating,
            total_supply_twy: circulating * 1.4,
            minted_twy: minted,
            burned_twy: burned,
            paid_usd: 10_000.0 + 50.0 * t,
            consumer_price_usd_per_gb: if design == 0 { 0.012 } else { 0.009 } * (1.0 + 0.1 * wobble(t, 0.03)),
            served_gb: 1e6 + 1e3 * t,
            unserved_gb: 1e4 * (1.0 + wobble(t, 0.2)),
            consumers: 5_000.0 + e as f64 * 10.0,
            operator_profit_p10_usd: -20.0 + 0.05 * t,
            operator_profit_p50_usd: 15.0 + 0.1 * t,
            operator_profit_p90_usd: 60.0 + 0.2 * t,
            operators_joined: (e % 7) as u32,
            operators_left: (e % 5) as u32,
            attacker_profit_usd: attacker,
            slashed_twy: if e % 30 == 0 { 1_000.0 } else { 0.0 },
            slashes: u32::from(e % 30 == 0),
            ..EpochRow::default()
        };
        for r in 0..REGIONS.len() {
            let weight = [0.30, 0.08, 0.25, 0.04, 0.05, 0.10, 0.14, 0.04][r];
            let growth = if design == 0 { 1.0 + t / 700.0 } else { 1.0 + t / 400.0 };
            let nodes = 2_000.0 * weight * growth * (1.0 + 0.03 * s) + 10.0 * wobble(t, 0.04 + r as f64 * 0.01);
            row.nodes_by_region[r] = nodes.max(0.0).round() as u32;
            row.capacity_gbps_by_region[r] = nodes * 0.8;
            row.demand_gbps_by_region[r] = 1_000.0 * weight * (1.0 + t / 365.0);
            let dip = if r == 3 {
                0.15 * (1.0 + wobble(t, 0.02)) * 0.5
            } else {
                0.004 * (1.5 + (t * 0.012 + r as f64).sin())
            };
            row.liquidity_by_region[r] =
                (1.0 - dip * if design == 0 { 1.5 } else { 1.0 } * (1.0 + 0.2 * s)).clamp(0.0, 1.0);
            row.multiplier_by_region[r] = 1.0 + 0.5 * dip;
        }
        row.nodes = row.nodes_by_region.iter().sum();
        rows.push(row);
    }
    let last = rows.last().cloned().unwrap_or_default();
    // Operator profits: a spread-out cloud from a small LCG, so the
    // histogram has a shape (some operators below break-even).
    let mut x = 0x2545_f491_4f6c_dd1d_u64 ^ (seed << 8) ^ u64::from(design);
    let mut profits = Vec::new();
    for _ in 0..400 {
        let mut sum = 0.0;
        for _ in 0..4 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            sum += (x >> 11) as f64 / (1u64 << 53) as f64;
        }
        let centre = if design == 0 { 25.0 } else { 60.0 };
        profits.push(centre + (sum - 2.0) * 120.0);
    }
    RunOutput {
        summary: RunSummary {
            scenario: design_name(design).to_string(),
            seed,
            epochs: EPOCHS,
            burn_ge_mint_epoch: if design == 0 { None } else { Some(190 + 10 * seed) },
            worst_regional_liquidity: 0.80 + 0.03 * seed as f64 - if design == 0 { 0.05 } else { 0.0 },
            operator_retention: if design == 0 { 0.62 } else { 0.85 } + 0.02 * seed as f64,
            price_drawdown: if design == 0 { 0.55 } else { 0.21 } + 0.01 * seed as f64,
            final_price_usd: last.price_usd,
            final_nodes: last.nodes,
            final_circulating_twy: last.circulating_twy,
            attacker_profit_usd: Some(last.attacker_profit_usd),
            attackers_slashed_twy: 12_000.0,
            colluders_slashed_twy: 4_000.0,
            colluding_oracles_slashed: 3,
            honest_oracles_slashed: 0,
            total_minted_twy: rows.iter().map(|r| r.minted_twy).sum(),
            total_burned_twy: rows.iter().map(|r| r.burned_twy).sum(),
            consumer_price_usd_per_gb: last.consumer_price_usd_per_gb,
        },
        rows,
        operator_monthly_profit_usd: profits,
    }
}

fn design_name(design: u32) -> &'static str {
    if design == 0 {
        "high fixed emissions"
    } else {
        "burn-and-mint"
    }
}

fn scenario(design: u32) -> ScenarioResult {
    ScenarioResult::of_runs(design_name(design), (1..=RUNS).map(|s| synthetic_run(design, s)).collect()).unwrap()
}

fn two_scenarios() -> Vec<ScenarioResult> {
    vec![scenario(0), scenario(1)]
}

/// A fresh directory under Cargo's scratch space for integration tests.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-tests").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

struct Decoded {
    width: u32,
    height: u32,
    channels: usize,
    pixels: Vec<u8>,
}

fn decode_png(bytes: &[u8]) -> Decoded {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("PNG header decodes");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size fits in memory")];
    let info = reader.next_frame(&mut buf).expect("PNG image data decodes");
    buf.truncate(info.buffer_size());
    Decoded { width: info.width, height: info.height, channels: info.color_type.samples(), pixels: buf }
}

/// (distinct colours, share of pixels that are not the most common colour).
fn colour_stats(img: &Decoded) -> (usize, f64) {
    let mut counts: BTreeMap<&[u8], usize> = BTreeMap::new();
    for px in img.pixels.chunks_exact(img.channels) {
        *counts.entry(&px[..img.channels.min(3)]).or_default() += 1;
    }
    let total: usize = counts.values().sum();
    let most = counts.values().copied().max().unwrap_or(0);
    (counts.len(), 1.0 - most as f64 / total.max(1) as f64)
}

#[test]
fn compare_writes_every_chart_as_png_and_svg_and_an_html_report() {
    let dir = scratch("compare").join("nested/report");
    let scenarios = two_scenarios();
    let written = write_report(&dir, "High emissions vs burn-and-mint", &scenarios).unwrap();

    let mut expected: Vec<PathBuf> =
        CHART_STEMS.iter().flat_map(|s| [dir.join(format!("{s}.png")), dir.join(format!("{s}.svg"))]).collect();
    expected.push(dir.join(INDEX_HTML));
    assert_eq!(written, expected);

    for stem in CHART_STEMS {
        let png_bytes = fs::read(dir.join(format!("{stem}.png"))).unwrap();
        assert!(!png_bytes.is_empty(), "{stem}.png is empty");
        let img = decode_png(&png_bytes);
        assert!(img.width >= 800 && img.height >= 500, "{stem}.png is {}×{}", img.width, img.height);
        let background = &img.pixels[..3];
        assert_eq!(background, [255, 255, 255], "{stem}.png: the corner should be the white background");
        let (colours, drawn_share) = colour_stats(&img);
        assert!(colours > 20, "{stem}.png has only {colours} colours");
        assert!(drawn_share > 0.02, "{stem}.png is almost all background ({:.3} drawn)", drawn_share);

        let svg = fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{stem}.svg does not start with <svg");
        assert!(svg.contains("<polyline") || svg.contains("<path"), "{stem}.svg draws no line");
        assert!(svg.contains("<polygon"), "{stem}.svg draws no band or area");
        assert!(svg.contains("<text"), "{stem}.svg has no text");
        for s in &scenarios {
            assert!(svg.contains(&s.name), "{stem}.svg has no legend entry for {}", s.name);
        }
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    let html = fs::read_to_string(dir.join(INDEX_HTML)).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<title>High emissions vs burn-and-mint</title>"));
    for stem in CHART_STEMS {
        assert!(html.contains(&format!("<figure id=\"chart-{stem}\">")), "the report has no {stem} chart");
    }
    assert_eq!(html.matches("<svg ").count(), CHART_STEMS.len(), "every chart inline, once");
    // Self-contained: no script, no external resource. The only URL is the
    // SVG namespace, which is a name, not something fetched.
    assert!(!html.contains("<script"));
    assert!(!html.contains("<img"));
    let urls = html.matches("http").count();
    assert_eq!(urls, html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(), "an external URL in the report");

    // The summary table: a row per scenario with every metric.
    for (i, s) in scenarios.iter().enumerate() {
        let start =
            html.find(&format!("<tr id=\"summary-{i}\">")).unwrap_or_else(|| panic!("no summary row for {}", s.name));
        let row = &html[start..start + html[start..].find("</tr>").unwrap()];
        assert!(row.contains(&s.name));
        assert_eq!(row.matches("<td").count(), 11, "row {i}: {row}");
        // The run's minted and burned totals, which only summary.json had.
        assert!(row.contains(" TWY"), "row {i}: {row}");
    }
    for head in [
        "Burn ≥ mint from",
        "Worst regional liquidity",
        "Operator retention",
        "Price drawdown",
        "Attacker profit",
        "Honest oracles slashed",
        "Tokens minted",
        "Tokens burned",
        "Final price",
        "Final nodes",
        "Consumer price per GB",
    ] {
        assert!(html.contains(&format!("<th scope=\"col\">{head}</th>")), "no column {head}");
    }
    // Human numbers: burn-and-mint reached burn ≥ mint at epoch 210 (median
    // of 200, 210, 220); high emissions never did; retention as a percentage.
    let row1 = &html[html.find("<tr id=\"summary-1\">").unwrap()..];
    assert!(row1.contains("epoch 210</span><span class=\"r\">day 211</span>"), "{}", &row1[..600]);
    let row0 = &html[html.find("<tr id=\"summary-0\">").unwrap()..];
    assert!(row0.contains("<span class=\"v\">never</span>"));
    assert!(row0.contains("66%"), "retention 0.62 + 0.02×2 should read 66%");
}

#[test]
fn one_scenario_report_draws_regions_as_lines() {
    let dir = scratch("run");
    let scenarios = vec![scenario(1)];
    let written = write_report(&dir, "Burn-and-mint", &scenarios).unwrap();
    assert_eq!(written.len(), CHART_STEMS.len() * 2 + 1);
    let nodes = fs::read_to_string(dir.join("nodes.svg")).unwrap();
    for region in
        ["North America", "Latin America", "Europe", "Africa", "Middle East", "South Asia", "East Asia", "Oceania"]
    {
        assert!(nodes.contains(region), "nodes.svg has no legend entry for {region}");
    }
    let html = fs::read_to_string(dir.join(INDEX_HTML)).unwrap();
    assert!(html.contains("sim run"));
    assert!(html.contains("<tr id=\"summary-0\">") && !html.contains("<tr id=\"summary-1\">"));
}

#[test]
fn the_same_input_gives_the_same_bytes() {
    let scenarios = two_scenarios();
    let dirs = [scratch("determinism-a"), scratch("determinism-b")];
    for dir in &dirs {
        write_report(dir, "Determinism", &scenarios).unwrap();
        write_run_csv(&dir.join("run.csv"), &synthetic_run(1, 1)).unwrap();
        write_summary_json(&dir.join("summary.json"), &scenarios).unwrap();
    }
    let mut names: Vec<String> = CHART_STEMS.iter().flat_map(|s| [format!("{s}.svg"), format!("{s}.png")]).collect();
    names.extend([INDEX_HTML.to_string(), "run.csv".to_string(), "summary.json".to_string()]);
    for name in names {
        let a = fs::read(dirs[0].join(&name)).unwrap();
        let b = fs::read(dirs[1].join(&name)).unwrap();
        assert!(a == b, "{name} differs between two writes of the same input");
    }
}

#[test]
fn run_csv_has_a_column_per_field_and_region_and_reads_back() {
    let dir = scratch("csv");
    let run = synthetic_run(1, 2);
    let path = dir.join("run.csv");
    write_run_csv(&path, &run).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header, csv_columns());

    // Every EpochRow field is there: scalars by name, arrays once per region.
    let fields = serde_json::to_value(EpochRow::default()).unwrap();
    let mut expected = HashSet::new();
    for (name, value) in fields.as_object().unwrap() {
        if value.is_array() {
            let stem = name.strip_suffix("_by_region").unwrap_or(name);
            for region in REGIONS {
                expected.insert(format!("{stem}_{}", region.replace('-', "_")));
            }
        } else {
            expected.insert(name.clone());
        }
    }
    let got: HashSet<String> = header.iter().map(|s| s.to_string()).collect();
    assert_eq!(got, expected);
    assert_eq!(header.len(), 21 + 6 * REGIONS.len(), "no column twice");
    assert!(header.contains(&"liquidity_europe"));
    assert!(header.contains(&"nodes_north_america"));

    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), run.rows.len());
    for (cells, row) in rows.iter().zip(&run.rows) {
        assert_eq!(cells.len(), header.len());
        for cell in cells {
            cell.parse::<f64>().unwrap_or_else(|_| panic!("{cell} is not a number"));
        }
        assert_eq!(cells[col("epoch")].parse::<u64>().unwrap(), row.epoch);
        assert_eq!(cells[col("day")].parse::<f64>().unwrap(), row.day);
        assert_eq!(cells[col("price_usd")].parse::<f64>().unwrap(), row.price_usd);
        assert_eq!(cells[col("circulating_twy")].parse::<f64>().unwrap(), row.circulating_twy);
        assert_eq!(cells[col("liquidity_africa")].parse::<f64>().unwrap(), row.liquidity_by_region[3]);
        assert_eq!(cells[col("nodes_oceania")].parse::<u32>().unwrap(), row.nodes_by_region[7]);
        assert_eq!(cells[col("capacity_gbps_east_asia")].parse::<f64>().unwrap(), row.capacity_gbps_by_region[6]);
        assert_eq!(cells[col("slashes")].parse::<u32>().unwrap(), row.slashes);
    }
}

#[test]
fn summary_json_has_every_run_and_the_spread_over_runs() {
    let dir = scratch("json");
    let scenarios = two_scenarios();
    let path = dir.join("summary.json");
    write_summary_json(&path, &scenarios).unwrap();
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let list = v["scenarios"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["name"], "burn-and-mint");
    // Every run's own summary, field for field. (serde_json writes the
    // shortest exact form, but its default parser may be one ulp off.)
    let runs: Vec<RunSummary> = serde_json::from_value(list[1]["runs"].clone()).unwrap();
    assert_eq!(runs.len(), scenarios[1].runs.len());
    for (got, want) in runs.iter().zip(&scenarios[1].runs) {
        let (got, want) = (serde_json::to_value(got).unwrap(), serde_json::to_value(&want.summary).unwrap());
        for (key, w) in want.as_object().unwrap() {
            let g = &got[key];
            match (g.as_f64(), w.as_f64()) {
                (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "{key}: {g} != {w}"),
                _ => assert_eq!(g, w, "{key}"),
            }
        }
    }
    assert_eq!(list[1]["stats"]["burn_ge_mint_epoch_median"], 210.0);
    assert_eq!(list[0]["stats"]["burn_ge_mint_epoch_median"], serde_json::Value::Null);
    assert_eq!(list[0]["stats"]["burn_ge_mint_never_runs"], 3);
    let retention = &list[1]["stats"]["operator_retention"];
    assert!((retention["p50"].as_f64().unwrap() - 0.89).abs() < 1e-9);
    assert!(retention["p10"].as_f64().unwrap() < retention["p90"].as_f64().unwrap());
}

#[test]
fn errors_name_the_file() {
    let dir = scratch("errors");
    let blocker = dir.join("not-a-dir");
    fs::write(&blocker, b"x").unwrap();
    let e = write_report(&blocker.join("report"), "t", &two_scenarios()).unwrap_err();
    assert!(matches!(e, ReportError::CreateDir { .. }));
    assert!(e.to_string().contains("not-a-dir/report"), "{e}");

    let e = write_run_csv(&blocker.join("run.csv"), &synthetic_run(0, 1)).unwrap_err();
    assert!(e.to_string().contains("not-a-dir/run.csv"), "{e}");

    let e = write_report(&dir, "t", &[]).unwrap_err();
    assert!(matches!(e, ReportError::NoScenarios { .. }), "{e}");
}

// ---------------------------------------------------------------------------
// A real browser.

/// Runs `cmd` with output to files, killing it after `limit`.
fn run_bounded(mut cmd: Command, limit: Duration, logs: &Path, name: &str) -> (Option<i32>, String, String) {
    let out_path = logs.join(format!("{name}.stdout"));
    let err_path = logs.join(format!("{name}.stderr"));
    cmd.stdin(Stdio::null()).stdout(fs::File::create(&out_path).unwrap()).stderr(fs::File::create(&err_path).unwrap());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    match status {
        None => {
            panic!("{name} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}", read(&out_path), read(&err_path))
        }
        Some(status) => (status.code(), read(&out_path), read(&err_path)),
    }
}

fn chromium_version() -> Option<String> {
    let out = Command::new("chromium").arg("--version").stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Debian's Chromium, installed with apt if it is missing (idempotent:
/// nothing happens when it is there). Fails the test, never skips it.
fn ensure_chromium(logs: &Path) -> String {
    if let Some(v) = chromium_version() {
        return v;
    }
    let started = Instant::now();
    let apt = |args: &[&str], name: &str| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run_bounded(cmd, Duration::from_secs(900), logs, name)
    };
    let install = ["install", "-y", "--no-install-recommends", "chromium"];
    let (code, _, _) = apt(&install, "apt-install");
    if code != Some(0) {
        let (code, out, err) = apt(&["update"], "apt-update");
        assert_eq!(code, Some(0), "apt-get update failed, so Chromium cannot be installed:\n{out}\n{err}");
        let (code, out, err) = apt(&install, "apt-install-after-update");
        assert_eq!(code, Some(0), "apt-get install chromium failed:\n{out}\n{err}");
    }
    let version = chromium_version()
        .unwrap_or_else(|| panic!("chromium was installed with apt but `chromium --version` does not run"));
    eprintln!("installed {version} in {:.0?}", started.elapsed());
    version
}

fn chromium(report: &Path, user_data: &Path, extra: &[String]) -> Command {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--enable-logging=stderr",
        "--v=0",
    ]);
    cmd.arg(format!("--user-data-dir={}", user_data.display()));
    cmd.args(extra);
    cmd.arg(format!("file://{}", report.display()));
    cmd
}

/// Lines where Chromium reports something the page itself did wrong: a
/// console message (the page has no script, so any is a problem) or an
/// uncaught error.
fn page_errors(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("CONSOLE") || l.contains("Uncaught")).collect()
}

#[test]
fn the_report_opens_in_headless_chromium() {
    let dir = scratch("chromium");
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).unwrap();
    let version = ensure_chromium(&logs);

    let report_dir = dir.join("report");
    write_report(&report_dir, "High emissions vs burn-and-mint", &two_scenarios()).unwrap();
    let report = report_dir.join(INDEX_HTML).canonicalize().unwrap();

    // The DOM loads whole: the last element is there, and so is every chart.
    let dump = chromium(&report, &dir.join("profile-dom"), &["--dump-dom".to_string()]);
    let (code, dom, err) = run_bounded(dump, Duration::from_secs(60), &logs, "chromium-dump-dom");
    assert_eq!(code, Some(0), "{version} --dump-dom failed:\n{err}");
    assert!(dom.contains("Sustainability summary") && dom.contains("</footer>"), "the DOM did not load:\n{dom}");
    assert_eq!(dom.matches("<svg").count(), CHART_STEMS.len());
    assert!(page_errors(&err).is_empty(), "the page logged errors:\n{}", page_errors(&err).join("\n"));

    // A screenshot that shows something.
    let shot = dir.join("screenshot.png");
    let screenshot = chromium(
        &report,
        &dir.join("profile-shot"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000".to_string(),
            "--hide-scrollbars".to_string(),
        ],
    );
    let (code, _, err) = run_bounded(screenshot, Duration::from_secs(60), &logs, "chromium-screenshot");
    assert_eq!(code, Some(0), "{version} --screenshot failed:\n{err}");
    assert!(page_errors(&err).is_empty(), "the page logged errors:\n{}", page_errors(&err).join("\n"));
    let img = decode_png(&fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display())));
    assert_eq!((img.width, img.height), (1280, 2000));
    let (colours, drawn_share) = colour_stats(&img);
    assert!(colours > 200, "the screenshot has only {colours} colours: blank?");
    assert!(drawn_share > 0.2, "the screenshot is {:.0}% one colour: blank?", (1.0 - drawn_share) * 100.0);
}

#[test]
fn degenerate_inputs_still_give_a_report() {
    // A scenario without runs, one with a single one-epoch run full of
    // NaN, and one run whose operators are all missing.
    let mut nan_row = EpochRow { epoch: 0, day: 1.0, price_usd: f64::NAN, ..EpochRow::default() };
    nan_row.liquidity_by_region = [f64::NAN; 8];
    let nan_run = RunOutput {
        rows: vec![nan_row],
        summary: RunSummary { final_price_usd: f64::NAN, ..RunSummary::default() },
        operator_monthly_profit_usd: vec![f64::NAN, f64::INFINITY],
    };
    let flat_run = RunOutput { rows: vec![EpochRow::default(); 3], ..RunOutput::default() };
    let scenarios = vec![
        ScenarioResult::of_runs("no runs", Vec::new()).unwrap(),
        ScenarioResult::of_runs("nan <&> \"quoted\"", vec![nan_run]).unwrap(),
        ScenarioResult::of_runs("flat", vec![flat_run]).unwrap(),
    ];
    let dir = scratch("degenerate");
    let written = write_report(&dir, "Degenerate <inputs>", &scenarios).unwrap();
    assert_eq!(written.len(), CHART_STEMS.len() * 2 + 1);
    let html = fs::read_to_string(dir.join(INDEX_HTML)).unwrap();
    assert!(html.contains("<title>Degenerate &lt;inputs&gt;</title>"));
    assert!(html.contains("nan &lt;&amp;&gt; &quot;quoted&quot;"));
    assert!(html.contains("no runs</td>"));
    write_summary_json(&dir.join("summary.json"), &scenarios).unwrap();
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(v["scenarios"][0]["stats"]["runs"], 0);
}

/// The text of the report's `<figcaption>` for the chart `stem`.
fn caption_of<'a>(html: &'a str, stem: &str) -> &'a str {
    let figure = &html[html.find(&format!("<figure id=\"chart-{stem}\">")).unwrap()..];
    let start = figure.find("<figcaption>").unwrap() + "<figcaption>".len();
    &figure[start..start + figure[start..].find("</figcaption>").unwrap()]
}

/// What the report's glossary says `term` means.
fn glossary_meaning<'a>(html: &'a str, term: &str) -> &'a str {
    let dt = format!("<dt>{term}</dt><dd>");
    let start = html.find(&dt).unwrap_or_else(|| panic!("no {term} in the glossary")) + dt.len();
    &html[start..start + html[start..].find("</dd>").unwrap()]
}

#[test]
fn liquidity_is_defined_on_the_nodes_capacity_not_the_verified_one() {
    // The caption said "online verified capacity", but liquidity is judged
    // on the nodes' own capacity, at most 80 % of it used
    // (`EpochRow::capacity_gbps_by_region`), and the summary's worst
    // liquidity is one epoch's, which the glossary did not say.
    for (name, scenarios) in [("liquidity-run", vec![scenario(1)]), ("liquidity-compare", two_scenarios())] {
        let dir = scratch(name);
        write_report(&dir, "Liquidity", &scenarios).unwrap();
        let html = fs::read_to_string(dir.join(INDEX_HTML)).unwrap();
        let caption = caption_of(&html, "liquidity");
        assert!(caption.contains("at most 80% of its capacity"), "{caption}");
        assert!(caption.contains("not the verified capacity"), "{caption}");
        let worst = "<dt>Worst regional liquidity</dt><dd>The lowest liquidity of any region with demand in any one \
                     of the last 90 epochs";
        assert!(html.contains(worst), "the glossary does not say the worst liquidity is one epoch's");
    }
}

#[test]
fn the_summary_consumer_price_is_said_to_be_the_last_epochs() {
    // The glossary said "What consumers paid per GB served": over the run,
    // a reader would take it; it is `RunSummary`'s, the last epoch's.
    let dir = scratch("consumer-price");
    write_report(&dir, "Consumer price", &[scenario(1)]).unwrap();
    let html = fs::read_to_string(dir.join(INDEX_HTML)).unwrap();
    let meaning = glossary_meaning(&html, "Consumer price per GB");
    assert!(meaning.contains("last epoch"), "{meaning}");
}

/// The cell of column `col` (0-based, after the scenario's name) in the
/// summary table's row `row`, with its opening tag.
fn summary_cell(html: &str, row: usize, col: usize) -> &str {
    let start = html.find(&format!("<tr id=\"summary-{row}\">")).unwrap();
    let tr = &html[start..start + html[start..].find("</tr>").unwrap()];
    let td = tr.match_indices("<td").nth(col).unwrap().0;
    &tr[td..td + tr[td..].find("</td>").unwrap()]
}

#[test]
fn a_scenario_without_attackers_shows_no_attacker_profit_and_is_never_the_best() {
    // A scenario with no attacker read "$0" (as an attack that broke
    // even), and as the lowest attacker profit beside an attack that paid
    // it took the column's green mark: a missing value shown as good.
    let no_attack = |design| {
        let mut s = scenario(design);
        s.name = format!("{} without attackers", s.name);
        for run in &mut s.runs {
            run.summary.attacker_profit_usd = None;
        }
        s
    };
    // Design 0's attackers gain, design 1's lose.
    let scenarios = [scenario(0), no_attack(1), scenario(1), no_attack(0)];
    let dir = scratch("attacker-profit");
    write_report(&dir, "Attacker profit", &scenarios).unwrap();
    let html = fs::read_to_string(dir.join(INDEX_HTML)).unwrap();
    let attacker_profit = 4;
    assert!(html.contains("<th scope=\"col\">Attacker profit</th>"));
    for row in [1, 3] {
        let cell = summary_cell(&html, row, attacker_profit);
        assert_eq!(cell, "<td><span class=\"v\">no attacker</span>", "row {row}");
    }
    // Among the scenarios with attackers, the attack that lost is what is
    // good for the network: it is marked, the one that paid is not.
    let lost = summary_cell(&html, 2, attacker_profit);
    assert!(lost.starts_with("<td class=\"best\">") && lost.contains("-$"), "{lost}");
    let paid = summary_cell(&html, 0, attacker_profit);
    assert!(paid.starts_with("<td>") && !paid.contains("-$"), "{paid}");
    let meaning = glossary_meaning(&html, "Attacker profit");
    assert!(meaning.contains("&quot;no attacker&quot; where the scenario has none"), "{meaning}");
    // The sandwich trader's gain is the attackers' too; the glossary
    // named only the sybil farm, the liars and the colluders.
    assert!(meaning.contains("sandwich trader"), "{meaning}");

    // Beside scenarios without attackers, an attack is compared with
    // nothing: neither its loss nor their missing value is the best.
    for design in [0, 1] {
        write_report(&dir, "Attacker profit", &[no_attack(design), scenario(design)]).unwrap();
        let html = fs::read_to_string(dir.join(INDEX_HTML)).unwrap();
        for row in [0, 1] {
            let cell = summary_cell(&html, row, attacker_profit);
            assert!(cell.starts_with("<td>"), "design {design}, row {row}: {cell}");
        }
    }

    // summary.json says null, as for any figure no run has.
    write_summary_json(&dir.join("summary.json"), &[no_attack(1)]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert!(v["scenarios"][0]["stats"]["attacker_profit_usd"].is_null(), "{v}");
    assert!(v["scenarios"][0]["runs"][0]["attacker_profit_usd"].is_null(), "{v}");
}

#[test]
fn every_csv_column_and_summary_field_is_documented() {
    // Neither the CSV's columns nor summary.json's fields had a meaning or
    // a unit written anywhere but the source.
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/sim-outputs.md")).unwrap();
    let documented = |name: &str| doc.contains(&format!("`{name}`"));
    for column in csv_columns() {
        let per_region = REGIONS
            .iter()
            .find_map(|r| column.strip_suffix(&format!("_{}", r.replace('-', "_"))))
            .map(|stem| format!("{stem}_<region>"));
        let name = per_region.unwrap_or_else(|| column.clone());
        assert!(documented(&name), "docs/sim-outputs.md does not document the CSV column {name}");
    }
    let dir = scratch("documented");
    write_summary_json(&dir.join("summary.json"), &two_scenarios()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let scenario = &v["scenarios"][0];
    let fields = [&v, scenario, &scenario["stats"], &scenario["runs"][0]]
        .into_iter()
        .flat_map(|o| o.as_object().unwrap().keys().cloned().collect::<Vec<_>>());
    for field in fields {
        assert!(documented(&field), "docs/sim-outputs.md does not document the summary.json field {field}");
    }
}

/// A run of more epochs than a chart has points (800) is drawn in
/// buckets of consecutive epochs, each point their mean: a day of no
/// liquidity among two showed as 50 %, among the 46 of a century-long
/// run as 98 %, and nothing on the chart said a point was not an epoch.
#[test]
fn a_chart_of_bucketed_epochs_says_each_point_is_a_mean() {
    let mut run = synthetic_run(1, 1);
    let one_year = run.rows.clone();
    run.rows = (0..3).flat_map(|_| one_year.iter().cloned()).collect();
    for (i, row) in run.rows.iter_mut().enumerate() {
        (row.epoch, row.day) = (i as u64, i as f64 + 1.0);
    }
    let scenarios = vec![ScenarioResult::of_runs("long", vec![run]).unwrap()];
    let dir = scratch("bucketed");
    write_report(&dir, "Bucketed", &scenarios).unwrap();
    let svg = fs::read_to_string(dir.join("liquidity.svg")).unwrap();
    assert!(svg.contains("each point the mean of 2 epochs"), "{}", &svg[..svg.len().min(2000)]);
    // A year is drawn epoch by epoch, and says nothing of it.
    let dir = scratch("one-year");
    write_report(&dir, "One year", &two_scenarios()).unwrap();
    assert!(!fs::read_to_string(dir.join("liquidity.svg")).unwrap().contains("each point the mean"));
}

/// The band as it was drawn from every run's rows, before the report kept
/// only each run's compact chart (`RunChart`): the reference the compact
/// one must match bit for bit.
fn band_from_rows(runs: &[RunOutput], value: impl Fn(&EpochRow) -> f64) -> Vec<BandPoint> {
    let mean_finite = |values: &mut dyn Iterator<Item = f64>| {
        let (sum, n) = values.filter(|v| v.is_finite()).fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
        (n > 0).then(|| sum / n as f64)
    };
    let Some(longest) = runs.iter().rev().max_by_key(|r| r.rows.len()) else {
        return Vec::new();
    };
    let n_epochs = longest.rows.len();
    let bucket = epochs_per_point(n_epochs);
    let mut out = Vec::new();
    for start in (0..n_epochs).step_by(bucket) {
        let end = (start + bucket).min(n_epochs);
        let Some(day) = mean_finite(&mut longest.rows[start..end].iter().map(|r| r.day)) else {
            continue;
        };
        let per_run: Vec<f64> = runs
            .iter()
            .filter_map(|run| mean_finite(&mut run.rows.get(start..end.min(run.rows.len())).unwrap_or(&[]).iter().map(&value)))
            .collect();
        if let Some(s) = Spread::of(per_run) {
            out.push(BandPoint { day, p10: s.p10, p50: s.p50, p90: s.p90 });
        }
    }
    out
}

/// The report keeps of each run only its charted series, bucket means
/// per point, so that thousands of runs fit in memory: the bands are the
/// same to the bit as from the rows, for runs of different lengths, with
/// values that are not numbers, bucketed or not.
#[test]
fn the_compact_charts_band_as_the_rows_did() {
    let bits = |band: &[BandPoint]| -> Vec<[u64; 4]> {
        band.iter().map(|p| [p.day.to_bits(), p.p10.to_bits(), p.p50.to_bits(), p.p90.to_bits()]).collect()
    };
    for years in [1, 3] {
        let mut runs: Vec<RunOutput> = (1..=4).map(|seed| synthetic_run(1, seed)).collect();
        for run in &mut runs {
            let year = run.rows.clone();
            run.rows = (0..years).flat_map(|_| year.iter().cloned()).collect();
            for (i, row) in run.rows.iter_mut().enumerate() {
                (row.epoch, row.day) = (i as u64, i as f64 + 1.0);
            }
        }
        // One run shorter, by a part of a bucket; a price that is not a
        // number; a region without liquidity.
        let cut = runs[2].rows.len() - 7;
        runs[2].rows.truncate(cut);
        runs[1].rows[5].price_usd = f64::NAN;
        runs[3].rows[9].liquidity_by_region[4] = f64::NAN;
        let scenario = ScenarioResult::of_runs("x", runs.clone()).unwrap();
        let series = [Charted::PriceUsd, Charted::CirculatingTwy, Charted::MintedTwy, Charted::BurnedTwy]
            .into_iter()
            .chain([Charted::ConsumerPriceUsdPerGb, Charted::WorstLiquidityPercent])
            .chain((0..REGIONS.len()).flat_map(|r| {
                [Charted::Nodes(r), Charted::VerifiedCapacityGbps(r), Charted::LiquidityPercent(r)]
            }));
        for s in series {
            let want = band_from_rows(&runs, |row| s.of(row));
            assert!(!want.is_empty());
            assert_eq!(bits(&band(&scenario, s).unwrap()), bits(&want), "{s:?} over {years} year(s)");
            // Read a point of every run at a time, as with thousands of
            // runs, the same to the bit.
            let one_point = ScenarioBands::within(&scenario, 1).unwrap();
            assert_eq!(bits(one_point.band(s)), bits(&want), "{s:?} over {years} year(s), point by point");
        }
    }
}


/// The report's files (charts, HTML, summary.json) are the bytes they
/// were when every run's chart points and operator profits stayed in
/// memory: pinned from that code, for a comparison of two scenarios of
/// three runs, one scenario alone, and the degenerate inputs (no runs,
/// nothing finite, no operators).
#[test]
fn the_reports_bytes_are_pinned() {
    let nan_run = RunOutput {
        rows: vec![EpochRow { epoch: 0, day: 1.0, price_usd: f64::NAN, ..EpochRow::default() }],
        summary: RunSummary { final_price_usd: f64::NAN, ..RunSummary::default() },
        operator_monthly_profit_usd: vec![f64::NAN, f64::INFINITY, -0.0, 0.0],
    };
    let flat_run = RunOutput { rows: vec![EpochRow::default(); 3], ..RunOutput::default() };
    let cases: [(&str, Vec<ScenarioResult>); 3] = [
        ("compare", two_scenarios()),
        ("run", vec![scenario(1)]),
        (
            "degenerate",
            vec![
                ScenarioResult::of_runs("no runs", Vec::new()).unwrap(),
                ScenarioResult::of_runs("nan", vec![nan_run]).unwrap(),
                ScenarioResult::of_runs("flat", vec![flat_run]).unwrap(),
            ],
        ),
    ];
    let mut digest = String::new();
    for (name, scenarios) in &cases {
        let dir = scratch(&format!("pinned-{name}"));
        write_report(&dir, name, scenarios).unwrap();
        write_summary_json(&dir.join("summary.json"), scenarios).unwrap();
        digest.push_str(&format!("{name}:\n{}", digest_of_files(&dir)));
    }
    expect_test::expect![[r#"
        compare:
        capacity.png e251137abde68316
        capacity.svg 581eb39a9c39e1ba
        consumer_price.png 046294d31476932d
        consumer_price.svg ffbfff22167b97ab
        index.html e0c86627c87ef0f1
        liquidity.png 23574b9d608c6a53
        liquidity.svg 98ea8b84e28931d1
        mint_burn.png 8398eb4002692a77
        mint_burn.svg f498a0b369bb2331
        nodes.png 0cc3ba4c10954b9b
        nodes.svg f03b78f78a221833
        operator_profit.png 32e719442be8061a
        operator_profit.svg ad28aa96fc1f1a0f
        price.png 0f3924a64808fe7e
        price.svg 1cd531780fc22611
        summary.json 62bf9ab1993fb56c
        supply.png dadfd26417d30648
        supply.svg 2f268a0d7628ef15
        run:
        capacity.png d0821bf42bb44f92
        capacity.svg a3d77d1b663bd7a3
        consumer_price.png ef21113350487d99
        consumer_price.svg 0a20b716ee8deca3
        index.html 477a9f9952ebb275
        liquidity.png 67c97ddd1a6b4f7f
        liquidity.svg 74a6958c95f7e984
        mint_burn.png d66a9c7b04255507
        mint_burn.svg aab048f4e4195a2a
        nodes.png 64f6292d3624d058
        nodes.svg 5c272853cf365ae7
        operator_profit.png 08d5de92b50f790e
        operator_profit.svg f546a61fbb63b6eb
        price.png b2b2a2843ed6f7e5
        price.svg 463dff5d1c480070
        summary.json f7e448ebfcb679f6
        supply.png 1138bce5d4cf3282
        supply.svg 3caf6348e4b64467
        degenerate:
        capacity.png be00ae9dd928adbe
        capacity.svg 56569915792f9aa6
        consumer_price.png 31731c8ed837190e
        consumer_price.svg b8000b6bc520ad0f
        index.html 2eb7c50699e60d8f
        liquidity.png cd3867d505e85297
        liquidity.svg f48af1508f4a0b96
        mint_burn.png 8cf8161d8ca89937
        mint_burn.svg 8f6c4bfe4638edeb
        nodes.png 2146b9660179230a
        nodes.svg a25d5af50daf0f63
        operator_profit.png 9fb6f9ddb200b421
        operator_profit.svg b06b2aa9e8fddade
        price.png d637914d1a605ffb
        price.svg 2991e408b478773e
        summary.json 66f98451fab5cb3c
        supply.png 0fcb8a582027f65a
        supply.svg 70a8dbbc7e71ce1c
    "#]].assert_eq(&digest);
}

/// What the report holds in memory per run does not grow with the run's
/// epochs or operators: a run's chart points and profits go to disk.
#[test]
fn the_report_holds_a_few_hundred_bytes_a_run_whatever_its_size() {
    let scenario = ScenarioResult::of_runs("x", vec![synthetic_run(1, 1), synthetic_run(1, 2), big_run()]).unwrap();
    let held: Vec<usize> = scenario.runs.iter().skip(1).map(|r| r.bytes_held()).collect();
    assert!(held.iter().all(|&b| b <= 512), "{held:?} bytes a run");
    assert_eq!(held[0], held[1], "a run of three times the epochs and 250 times the operators holds as much");

    // In files, as `tollway sim` keeps them, the store holds none of it,
    // and the report is the same bytes as from memory.
    let dir = scratch("held-in-files");
    let store = RunStore::in_dir(&dir).unwrap();
    let runs: Vec<RunResult> = [synthetic_run(1, 1), synthetic_run(1, 2), big_run()]
        .into_iter()
        .enumerate()
        .map(|(k, run)| RunResult::of(run, epochs_per_point(3 * EPOCHS as usize), k == 0, &store).unwrap())
        .collect();
    let in_files = ScenarioResult { name: "x".to_string(), runs, store };
    assert_eq!(in_files.store.bytes_held(), 0);
    assert!(fs::metadata(dir.join(CHART_POINTS_FILE)).unwrap().len() > 100_000);
    assert!(fs::metadata(dir.join(OPERATOR_PROFITS_FILE)).unwrap().len() >= 800_000);
    let in_memory = ScenarioResult::of_runs("x", vec![synthetic_run(1, 1), synthetic_run(1, 2), big_run()]).unwrap();
    assert!(in_memory.store.bytes_held() > 900_000, "the same bytes, in memory");
    let runs_held = |s: &ScenarioResult| s.runs.iter().map(RunResult::bytes_held).sum::<usize>();
    assert_eq!(runs_held(&in_files), runs_held(&in_memory));
    let (a, b) = (scratch("held-report-files"), scratch("held-report-memory"));
    write_report(&a, "x", std::slice::from_ref(&in_files)).unwrap();
    write_report(&b, "x", std::slice::from_ref(&in_memory)).unwrap();
    assert_eq!(digest_of_files(&a), digest_of_files(&b));
}

/// Three years of a run with 100,000 operators.
fn big_run() -> RunOutput {
    let mut big = synthetic_run(1, 3);
    let year = big.rows.clone();
    big.rows = (0..3).flat_map(|_| year.iter().cloned()).collect();
    for (i, row) in big.rows.iter_mut().enumerate() {
        (row.epoch, row.day) = (i as u64, i as f64 + 1.0);
    }
    big.operator_monthly_profit_usd = (0..100_000).map(|i| f64::from(i) - 5_000.0).collect();
    big
}

/// A store that cannot be written (a full disk: /dev/full) or read back
/// (its file cut short under it) fails with the file's name and why.
#[test]
fn a_store_that_cannot_be_written_or_read_names_its_file() {
    let full = scratch("store-full");
    std::os::unix::fs::symlink("/dev/full", full.join(CHART_POINTS_FILE)).unwrap();
    let store = RunStore::in_dir(&full).unwrap();
    let err = RunResult::of(synthetic_run(1, 1), 1, true, &store).unwrap_err().to_string();
    assert!(err.contains(CHART_POINTS_FILE) && err.contains("cannot write") && err.contains("No space left"), "{err}");

    let dir = scratch("store-cut-short");
    let store = RunStore::in_dir(&dir).unwrap();
    let runs = (1..=2).map(|seed| RunResult::of(synthetic_run(1, seed), 1, seed == 1, &store).unwrap()).collect();
    let scenario = ScenarioResult { name: "x".to_string(), runs, store };
    fs::OpenOptions::new().write(true).open(dir.join(CHART_POINTS_FILE)).unwrap().set_len(1000).unwrap();
    let err = write_report(&scratch("store-cut-short-report"), "x", &[scenario]).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ReportError::Spill(_)), "{message}");
    let path = dir.join(CHART_POINTS_FILE).display().to_string();
    assert!(message.contains(&path) && message.contains("cannot read"), "{message}");
}
