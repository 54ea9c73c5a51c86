//! `tollway-bench`: the benchmarks of DESIGN §9.
//!
//! `cargo run --release -p tollway-bench -- NAME [--quick]`. Each benchmark
//! runs our code and its anchor in the same process, interleaved over
//! several rounds, prints a table of medians, and ends with one line
//! (see [`report_line`]). `all` runs every benchmark and repeats their final
//! lines together at the end. `--quick` is CI's short run: smaller inputs and
//! fewer rounds through exactly the same code.
//!
//! Everything runs on one thread (the figures are per core), except `sim`,
//! which uses every core as the simulator does, and `chain`, which runs the
//! real node with concurrent HTTP clients.

mod chain;
mod epoch;
mod ledger;
mod sim;
mod transport;
mod tunnel;

use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: tollway-bench NAME [--quick]
  NAME     ledger | epoch | sim | sim-large | chain | transport | tunnel | all
  --quick  a short run for CI (a few seconds per benchmark), same code paths";

/// A benchmark: prints its table, returns its final line.
type Benchmark = fn(&Progress, bool) -> anyhow::Result<String>;

/// Every benchmark, in the order `all` runs them.
const BENCHMARKS: &[(&str, Benchmark)] = &[
    ("ledger", ledger::run),
    ("epoch", epoch::run),
    ("sim", sim::run),
    ("sim-large", sim::run_large),
    ("chain", chain::run),
    ("transport", transport::run),
    ("tunnel", tunnel::run),
];

fn main() -> ExitCode {
    let mut name = None;
    let mut quick = false;
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(tunnel::ROLE_ARG) {
        // A role of the `tunnel` benchmark, run as its own process.
        return match tunnel::role(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if std::env::args().any(|a| a == sim::CHILD_FLAG) {
        let quick = std::env::args().any(|a| a == "--quick");
        return match sim::child(quick) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if name.is_none() && !arg.starts_with('-') => name = Some(arg),
            _ => return usage_error(&format!("unexpected argument {arg:?}")),
        }
    }
    let Some(name) = name else {
        return usage_error("which benchmark?");
    };
    let selected: Vec<_> = BENCHMARKS.iter().filter(|(n, _)| name == "all" || *n == name).collect();
    if selected.is_empty() {
        return usage_error(&format!("no benchmark named {name:?}"));
    }

    let mut final_lines = Vec::new();
    for (bench_name, run) in selected {
        let progress = Progress::new(bench_name);
        match run(&progress, quick) {
            Ok(line) => {
                println!("{line}");
                final_lines.push(line);
            }
            Err(e) => {
                eprintln!("error: benchmark {bench_name}: {e:#}");
                return ExitCode::FAILURE;
            }
        }
        progress.say("done");
    }
    if name == "all" {
        println!();
        for line in &final_lines {
            println!("{line}");
        }
    }
    ExitCode::SUCCESS
}

fn usage_error(why: &str) -> ExitCode {
    eprintln!("error: {why}\n{USAGE}");
    ExitCode::from(2)
}

/// A measured figure and its unit, e.g. `12.3 ms` or `41000 txs/s`.
#[derive(Clone, Copy, Debug)]
pub struct Figure {
    pub value: f64,
    pub unit: &'static str,
}

/// The one line every benchmark ends with (DESIGN §9):
/// `NAME: ours=<figure> <unit>; anchor=<figure> <unit> (<what>); ratio=<r>`.
/// `ratio` must already be oriented so that bigger is better (for times,
/// the caller passes anchor / ours).
pub fn report_line(name: &str, ours: Figure, anchor: Figure, anchor_what: &str, ratio: f64) -> String {
    format!(
        "{name}: ours={} {}; anchor={} {} ({anchor_what}); ratio={}",
        sig3(ours.value),
        ours.unit,
        sig3(anchor.value),
        anchor.unit,
        sig3(ratio)
    )
}

/// A number with about three significant digits, never in exponent form:
/// `41234.7` → `41235`, `12.345` → `12.3`, `0.04567` → `0.0457`.
pub fn sig3(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return format!("{x}");
    }
    let digits_before_point = x.abs().log10().floor() as i32 + 1;
    let decimals = (3 - digits_before_point).clamp(0, 12) as usize;
    format!("{x:.decimals$}")
}

/// The median of the samples (the mean of the middle two for an even count).
pub fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    match n {
        0 => Duration::ZERO,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// This machine's cores: the threads a benchmark's work spreads over.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The median of `values` (the mean of the middle two for an even count);
/// zero if none.
pub fn median_f64(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The `q` quantile of the samples (nearest rank); zero if none.
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Progress lines on stderr, stamped with the time since the benchmark
/// started, so stdout stays the table and the final line.
pub struct Progress {
    name: &'static str,
    start: Instant,
}

impl Progress {
    fn new(name: &'static str) -> Progress {
        Progress { name, start: Instant::now() }
    }

    pub fn say(&self, msg: &str) {
        eprintln!("[{} +{:.1}s] {msg}", self.name, self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_line_has_the_design_shape() {
        let line = report_line(
            "epoch",
            Figure { value: 12.345, unit: "ms" },
            Figure { value: 0.4567, unit: "ms" },
            "raw limit",
            0.4567 / 12.345,
        );
        assert_eq!(line, "epoch: ours=12.3 ms; anchor=0.457 ms (raw limit); ratio=0.0370");
    }

    #[test]
    fn three_significant_digits_without_exponents() {
        assert_eq!(sig3(41234.7), "41235");
        assert_eq!(sig3(999.6), "1000");
        assert_eq!(sig3(1.5), "1.50");
        assert_eq!(sig3(0.0004567), "0.000457");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = |x: u64| Duration::from_millis(x);
        assert_eq!(median(&[ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(median(&[ms(4), ms(1), ms(2), ms(3)]), Duration::from_micros(2_500));
        assert_eq!(median(&[]), Duration::ZERO);
        assert_eq!(median_f64(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_f64(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median_f64(&[]), 0.0);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let ms = |x: u64| Duration::from_millis(x);
        let samples: Vec<Duration> = (1..=100).rev().map(ms).collect();
        assert_eq!(quantile(&samples, 0.5), ms(50));
        assert_eq!(quantile(&samples, 0.99), ms(99));
        assert_eq!(quantile(&samples, 1.0), ms(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
