//! Benchmark `sim` (issue 3): the simulator at the scale of 10,000 nodes,
//! 1,000 consumers, 8 regions, 365 daily epochs and 10 Monte Carlo runs on
//! every core: wall time and peak memory. The anchor is the same
//! population simulated without the ledger, in the simplest loop we can
//! write (the same agents' arithmetic in floats, no transactions, no
//! integer money, no invariant checks), in the same run. The ratio
//! (anchor time / ours) is what running the real ledger costs.
//!
//! `sim-large` is the other figure: one run of 100,000 nodes over
//! three years of daily epochs (goal: under 30 s).

use crate::{cores, median_f64, report_line, sig3, Figure, Progress};
use std::time::Instant;
use tollway_sim::engine::SimError;
use tollway_sim::montecarlo;
use tollway_sim::output::RunOutput;
use tollway_sim::rng::Rng;
use tollway_sim::scenario::{self, Scenario};

/// The benchmark's population: the burn-and-mint scenario with a fixed
/// population (no joins, no churn) at the scale.
fn scenario(nodes: u32, consumers: u32, days: u64, runs: u64) -> anyhow::Result<Scenario> {
    let base = scenario::built_in("burn-and-mint").ok_or_else(|| anyhow::anyhow!("no built-in burn-and-mint scenario"))?;
    let mut s = Scenario::from_toml(base)?;
    for (k, v) in [
        ("population.operators", nodes.to_string()),
        ("population.consumers", consumers.to_string()),
        ("population.max_joins_per_day", "0".into()),
        ("population.churn_after_days", "1000000".into()),
        ("run.days", days.to_string()),
        ("run.runs", runs.to_string()),
    ] {
        s = s.with_override(k, &v)?;
    }
    Ok(s)
}

/// Peak resident memory of this process so far (Linux `VmHWM`), MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The anchor: one run of the same population in plain floats.
fn raw_run(s: &Scenario, seed: u64) -> f64 {
    let p = &s.population;
    let mut rng = Rng::new(seed);
    struct N {
        region: usize,
        cap: f64,
        mask: u32,
        price: f64,
        cost: f64,
        profit: f64,
    }
    let mut nodes: Vec<N> = (0..p.operators)
        .map(|_| {
            let region = rng.weighted(&p.region_weights);
            let up = rng.range(p.uptime[0], p.uptime[1]);
            let off = ((1.0 - up) * 24.0) as u32;
            let start = rng.below(24) as u32;
            let mask = (0..off).fold((1u32 << 24) - 1, |m, k| m & !(1 << ((start + k) % 24)));
            N {
                region,
                cap: rng.log_range(p.capacity_mbps[0], p.capacity_mbps[1]) * 1e6,
                mask,
                price: rng.range(p.price_usd_per_gb[0], p.price_usd_per_gb[1]),
                cost: rng.range(p.monthly_cost_usd[0], p.monthly_cost_usd[1]) / 30.0,
                profit: 0.0,
            }
        })
        .collect();
    let d = &s.demand;
    let wsum: f64 = d.region_weights.iter().sum();
    let mut consumers: Vec<f64> = d.region_weights.iter().map(|w| p.consumers as f64 * w / wsum).collect();
    let mut price = s.market.pool_usd / s.market.pool_twy;
    let emission = 50_000_000.0 / 365.0;
    let mut checksum = 0.0;
    for _day in 0..s.run.days {
        let mut cap = [[0f64; 24]; 8];
        let mut weight = [0f64; 8];
        let mut total_w = 0.0;
        for n in &nodes {
            for (h, c) in cap[n.region].iter_mut().enumerate() {
                if n.mask & (1 << h) != 0 {
                    *c += n.cap;
                }
            }
            let w = n.cap * n.mask.count_ones() as f64;
            weight[n.region] += w;
            total_w += w;
        }
        let mut served = [0f64; 8];
        for r in 0..8 {
            let gb = consumers[r] * d.gb_per_consumer_per_day;
            served[r] = cap[r].iter().map(|c| (gb / 24.0 * 8e9 / 3600.0).min(0.8 * c) * 3600.0 / 8e9).sum();
            consumers[r] *= 1.0 + d.growth_per_year / 365.0;
        }
        let mut burned_usd = 0.0;
        for n in nodes.iter_mut() {
            // Three oracle measurements, as the real run draws them.
            let measured = (0..3).map(|_| n.cap * rng.range(0.85, 1.0)).fold(0.0, f64::max);
            let w = n.cap * n.mask.count_ones() as f64;
            let revenue = served[n.region] * w / weight[n.region].max(1.0) * n.price;
            let reward = emission * w / total_w.max(1.0) * (measured / n.cap);
            burned_usd += revenue;
            n.profit += reward * price + revenue * 0.0 - n.cost;
        }
        price *= 1.0 + (burned_usd / s.market.pool_usd - emission * price / s.market.pool_usd) * 0.01;
        checksum += price;
    }
    checksum + nodes.iter().map(|n| n.profit).sum::<f64>()
}

/// Runs `runs` raw runs on every core; returns the wall time in seconds.
fn raw_all(s: &Scenario) -> f64 {
    let start = Instant::now();
    let next = std::sync::atomic::AtomicU64::new(0);
    let sink = std::sync::Mutex::new(0.0);
    std::thread::scope(|scope| {
        for _ in 0..cores() {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if k >= s.run.runs {
                    break;
                }
                let x = raw_run(s, s.run.seed + k);
                if let Ok(mut t) = sink.lock() {
                    *t += x;
                }
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    // Keep the result alive so the loop cannot be optimised away.
    std::hint::black_box(sink.lock().map(|x| *x).unwrap_or_default());
    elapsed
}

/// The hidden flag that makes the benchmark binary the simulator child.
pub const CHILD_FLAG: &str = "--sim-child";

fn scale(quick: bool) -> (u32, u64, u64) {
    if quick {
        (1_000, 30, 2)
    } else {
        (10_000, 365, 10)
    }
}

/// Profiling at another scale (e.g. under cachegrind, where the full run
/// would take an hour): `TOLLWAY_SIM_CHILD_SCALE=nodes,days,runs`.
const SCALE_ENV: &str = "TOLLWAY_SIM_CHILD_SCALE";

fn scale_override() -> anyhow::Result<Option<(u32, u64, u64)>> {
    let Ok(text) = std::env::var(SCALE_ENV) else { return Ok(None) };
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    match parts[..] {
        [n, d, r] => Ok(Some((n.parse()?, d.parse()?, r.parse()?))),
        _ => anyhow::bail!("{SCALE_ENV} is nodes,days,runs, not {text:?}"),
    }
}

/// What [`montecarlo::run_all`] keeps of each run here: all of it.
fn keep_whole_run(_: usize, _: u64, run: RunOutput) -> Result<RunOutput, SimError> {
    Ok(run)
}

/// The child: runs the Monte Carlo and prints its wall time and peak RSS.
pub fn child(quick: bool) -> anyhow::Result<()> {
    let (nodes, days, runs) = scale_override()?.unwrap_or(scale(quick));
    let s = scenario(nodes, 1_000, days, runs)?;
    let rss_before = peak_rss_mib();
    let start = Instant::now();
    // Every run's whole output kept, rows and all, as the figures here
    // always measured (`tollway sim` writes each run out as it ends).
    let results = montecarlo::run_all(std::slice::from_ref(&s), cores(), &|_, _| {}, &keep_whole_run)?;
    let wall = start.elapsed().as_secs_f64();
    let rows: usize = results.iter().flatten().map(|r| r.rows.len()).sum();
    anyhow::ensure!(rows as u64 == days * runs, "expected {} epoch rows, got {rows}", days * runs);
    println!("wall_s={wall}");
    println!("peak_rss_mib={}", peak_rss_mib());
    println!("rss_before_mib={rss_before}");
    Ok(())
}

/// Rounds of ours and the anchor, alternating: the host's speed drifts
/// within minutes, so each figure is the median of its rounds and the
/// spread is printed beside it.
fn rounds(quick: bool) -> usize {
    if quick {
        1
    } else {
        3
    }
}

/// `median s (min–max)` of wall times in seconds.
fn with_spread(xs: &[f64], decimals: usize) -> String {
    let (lo, hi) = xs.iter().fold((f64::INFINITY, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    if xs.len() < 2 {
        format!("{:.decimals$} s", median_f64(xs))
    } else {
        format!("{:.decimals$} s ({lo:.decimals$}–{hi:.decimals$})", median_f64(xs))
    }
}

/// One Monte Carlo in a child process of its own, so its peak memory is
/// the simulator's alone, not what earlier benchmarks in this process left
/// behind. Returns (wall s, peak RSS MiB, RSS at its start MiB).
fn child_run(quick: bool) -> anyhow::Result<(f64, f64, f64)> {
    let mut child = std::process::Command::new(std::env::current_exe()?);
    child.arg(CHILD_FLAG);
    if quick {
        child.arg("--quick");
    }
    let out = child.output()?;
    if !out.status.success() {
        anyhow::bail!("the simulator child failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> anyhow::Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("the simulator child printed no {key}: {text}"))
    };
    Ok((field("wall_s=")?, field("peak_rss_mib=")?, field("rss_before_mib=")?))
}

pub fn run(progress: &Progress, quick: bool) -> anyhow::Result<String> {
    let (nodes, days, runs) = scale(quick);
    let s = scenario(nodes, 1_000, days, runs)?;
    let rounds = rounds(quick);
    progress.say(&format!(
        "{runs} runs of {nodes} nodes x {days} days on {} threads, in a child process; {rounds} round(s), alternating with the anchor",
        cores()
    ));
    let (mut ours, mut anchors, mut rss, mut rss_before) = (Vec::new(), Vec::new(), 0f64, 0f64);
    for round in 1..=rounds {
        let (wall, peak, before) = child_run(quick)?;
        (rss, rss_before) = (rss.max(peak), before);
        ours.push(wall);
        anchors.push(raw_all(&s));
        progress.say(&format!("round {round}/{rounds}: ours {wall:.2} s, anchor {:.3} s", anchors[round - 1]));
    }
    let (ours_s, anchor_s) = (median_f64(&ours), median_f64(&anchors));
    let node_epochs = nodes as f64 * days as f64 * runs as f64;
    println!();
    println!("sim: {runs} runs x {nodes} nodes x {days} daily epochs, 1000 consumers, 8 regions, {} threads", cores());
    println!("{:<58} {:>22} {:>16}", "path", format!("wall, median of {rounds}"), "per node-epoch");
    println!("{:<58} {:>22} {:>13.0} ns", "ours: agents + the ledger (end_epoch, payments, reports)", with_spread(&ours, 2), ours_s * 1e9 / node_epochs);
    println!("{:<58} {:>22} {:>13.1} ns", "anchor: the same population in plain floats, no ledger", with_spread(&anchors, 3), anchor_s * 1e9 / node_epochs);
    println!("peak RSS of the simulator's process: {} MiB (at its start: {} MiB)", sig3(rss), sig3(rss_before));
    if !quick {
        println!("goal (< 2 s and < 500 MiB): time {}, memory {}", if ours_s < 2.0 { "met" } else { "NOT met" }, if rss < 500.0 { "met" } else { "NOT met" });
    }
    Ok(report_line(
        "sim",
        Figure { value: ours_s, unit: "s" },
        Figure { value: anchor_s, unit: "s" },
        ANCHOR_WHAT,
        anchor_s / ours_s,
    ))
}

/// What the anchor of `sim` and `sim-large` is, in their final lines.
const ANCHOR_WHAT: &str = "the same population in a plain float loop without the ledger";

/// One run of 100,000 nodes over three years (quick: 10,000 nodes, 30 days).
pub fn run_large(progress: &Progress, quick: bool) -> anyhow::Result<String> {
    let (nodes, days) = if quick { (10_000, 30) } else { (100_000, 3 * 365) };
    let s = scenario(nodes, 10_000, days, 1)?;
    let rounds = rounds(quick);
    progress.say(&format!(
        "one run of {nodes} nodes x {days} days on {} threads; {rounds} round(s), alternating with the anchor",
        cores()
    ));
    let (mut ours, mut anchors) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let start = Instant::now();
        let last_report = std::sync::Mutex::new(Instant::now());
        // One run, every core: the run computes its day's oracle assignment
        // on the threads the Monte Carlo does not need while it pays, and
        // lends them to the epoch's passes and the supply check (same bytes
        // as on one).
        montecarlo::run_all(std::slice::from_ref(&s), cores(), &|done, total| {
            if let Ok(mut t) = last_report.lock() {
                if t.elapsed().as_secs() >= 10 {
                    *t = Instant::now();
                    progress.say(&format!("round {round}/{rounds}: day {done}/{total}"));
                }
            }
        }, &keep_whole_run)?;
        ours.push(start.elapsed().as_secs_f64());
        anchors.push(raw_all(&s));
        progress.say(&format!("round {round}/{rounds}: ours {:.1} s, anchor {:.2} s", ours[round - 1], anchors[round - 1]));
    }
    let (ours_s, anchor_s) = (median_f64(&ours), median_f64(&anchors));
    println!();
    println!("sim-large: one run, {nodes} nodes x {days} daily epochs, {} threads, median of {rounds} round(s)", cores());
    println!(
        "ours: {}; anchor (plain float loop): {}; goal < 30 s: {}",
        with_spread(&ours, 1),
        with_spread(&anchors, 2),
        if ours_s < 30.0 { "met" } else { "NOT met" }
    );
    Ok(report_line(
        "sim-large",
        Figure { value: ours_s, unit: "s" },
        Figure { value: anchor_s, unit: "s" },
        ANCHOR_WHAT,
        anchor_s / ours_s,
    ))
}
