//! Many runs at once: Monte Carlo over seeds and parameter sweeps, spread
//! over worker threads. Results come back in job order whatever the
//! threads' timing, so the output is byte-identical run to run.

use crate::engine::{Sim, SimError};
use crate::output::RunOutput;
use crate::scenario::{Scenario, ScenarioError};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tollway_ledger::params::Params;
use std::sync::Mutex;

/// The most values a sweep takes (the charts' palette).
pub const MAX_SWEEP_VALUES: usize = 10;

/// `key=v1,v2,v3`: one scenario per value.
pub fn sweep(base: &Scenario, spec: &str) -> Result<Vec<Scenario>, ScenarioError> {
    let (key, values) = spec.split_once('=').ok_or_else(|| ScenarioError::Invalid {
        key: spec.to_string(),
        why: "a sweep is key=v1,v2,… such as uptime_share=0.5,0.6,0.7".into(),
    })?;
    let key = key.trim();
    if key.is_empty() {
        return Err(ScenarioError::Invalid {
            key: spec.to_string(),
            why: "no key before the `=`: a sweep is key=v1,v2,… such as uptime_share=0.5,0.6,0.7".into(),
        });
    }
    // One line per value on every chart, each in a colour of its own:
    // beyond ten, lines shared colours and the legend filled the plot.
    let values = sweep_values(values);
    let n = values.len();
    if n > MAX_SWEEP_VALUES {
        return Err(ScenarioError::Invalid {
            key: key.to_string(),
            why: format!("{n} values: a sweep takes at most {MAX_SWEEP_VALUES}, one colour each on the charts"),
        });
    }
    // A value written twice (`0.5,0.50`, `"7d","168h"`) ran the same
    // design twice, as two lines on every chart under two names.
    let mut designs: Vec<(&str, Design)> = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for (i, v) in values.into_iter().map(str::trim).enumerate() {
        // An empty value (`key=`, `key=0.5,,0.7`) reached the TOML parser,
        // whose complaint ("string values must be quoted") named no slip.
        if v.is_empty() {
            return Err(ScenarioError::Invalid {
                key: key.to_string(),
                why: format!("value {} of {n} is empty: a sweep is key=v1,v2,… such as uptime_share=0.5,0.6,0.7", i + 1),
            });
        }
        let mut s = base.with_override(key, v)?;
        let design = design(&s)?;
        if let Some((earlier, _)) = designs.iter().find(|(_, d)| *d == design) {
            return Err(ScenarioError::Invalid {
                key: key.to_string(),
                why: format!("{earlier} and {v} are the same value: a sweep runs each design once; give it once"),
            });
        }
        designs.push((v, design));
        s.name = format!("{} {key}={v}", base.name);
        out.push(s);
    }
    Ok(out)
}

/// What makes a scenario's design: all of it but its name, with its
/// parameters as the ledger reads them (`0.5` and `0.50`, or `7d` and
/// `168h`, are one).
type Design = (toml::Table, Params);

fn design(s: &Scenario) -> Result<Design, ScenarioError> {
    let mut table = toml::Table::try_from(s).map_err(|e| ScenarioError::Toml(e.to_string()))?;
    table.remove("name");
    table.remove("params");
    Ok((table, s.params()?))
}

/// The values of `v1,v2,…`, split at the commas outside lists, tables and
/// strings: a value may be a list (`population.uptime=[0.5, 1.0],[0.9, 1.0]`).
fn sweep_values(values: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut start) = (0usize, None, 0);
    for (i, c) in values.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            (None, ',') if depth == 0 => {
                out.push(&values[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&values[start..]);
    out
}

/// Runs every scenario `scenario.run.runs` times (seeds `seed`, `seed+1`,
/// …) on `threads` threads. `progress(days_done, days_total)` is called
/// from the workers as days complete. Each run's output goes to
/// `finished(scenario index, run index, output)` on its worker as the run
/// ends, in no particular order, and what that returns is kept: per
/// scenario, in run order. The runs' rows need not wait in memory for the
/// last run (5,000 runs of two years held GBs, all lost to an OOM kill or
/// a late crash): `finished` writes them out and keeps what the report
/// needs. A failed run, or a failed `finished`, stops the handing out of
/// runs; the first error in run order is returned.
pub fn run_all<T: Send, E: From<SimError> + Send>(
    scenarios: &[Scenario],
    threads: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
    finished: &(dyn Fn(usize, u64, RunOutput) -> Result<T, E> + Sync),
) -> Result<Vec<Vec<T>>, E> {
    // (scenario index, run index, seed)
    let jobs: Vec<(usize, u64, u64)> = scenarios
        .iter()
        .enumerate()
        .flat_map(|(i, s)| (0..s.run.runs).map(move |k| (i, k, s.run.seed + k)))
        .collect();
    let total_days: u64 = jobs.iter().map(|(i, _, _)| scenarios[*i].run.days).sum();
    let next = AtomicUsize::new(0);
    let days_done = AtomicU64::new(0);
    let results: Mutex<Vec<Option<Result<T, E>>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    // Fewer runs than threads: each run gets the idle ones too.
    let threads_per_run = (threads / jobs.len().max(1)).max(1);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, jobs.len().max(1)) {
            scope.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(i, k, seed)) = jobs.get(j) else { break };
                let tick = |_day: u64| {
                    let done = days_done.fetch_add(1, Ordering::Relaxed) + 1;
                    progress(done, total_days);
                };
                let out = Sim::new(&scenarios[i], seed)
                    .and_then(|sim| sim.with_threads(threads_per_run).run(seed, &tick))
                    .map_err(E::from)
                    .and_then(|run| finished(i, k, run));
                let failed = out.is_err();
                if let Ok(mut r) = results.lock() {
                    r[j] = Some(out);
                }
                if failed {
                    // Stop handing out work; the error is reported below.
                    next.store(jobs.len(), Ordering::Relaxed);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<Vec<T>> = scenarios.iter().map(|_| Vec::new()).collect();
    for (&(i, _, _), r) in jobs.iter().zip(results) {
        match r {
            Some(Ok(run)) => out[i].push(run),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Ok(out)
}
