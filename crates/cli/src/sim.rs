//! `tollway sim run|compare`: the simulator's command line. Reads scenario
//! files, runs them across cores with a progress bar, writes per-run CSV,
//! the JSON summary, the charts and the HTML report.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use tollway_sim::montecarlo;
use tollway_sim::output::{RunOutput, RunResult, ScenarioResult};
use tollway_sim::report;
use tollway_sim::scenario::{self, Scenario};
use tollway_sim::spill::{RunStore, CHART_POINTS_FILE, OPERATOR_PROFITS_FILE};

#[derive(clap::Subcommand)]
pub enum SimCommand {
    /// Run one scenario (Monte Carlo over seeds, optionally a sweep).
    Run {
        #[arg(help = scenario_help())]
        scenario: PathBuf,
        #[command(flatten)]
        opts: RunOpts,
        /// Sweep one parameter: `key=v1,v2,…` (a ledger parameter such as
        /// uptime_share_start, uptime_share for a flat uptime share, or a
        /// scenario key such as population.operators). One design per
        /// value, side by side.
        #[arg(long)]
        sweep: Option<String>,
    },
    /// Run several scenarios and put them side by side in one report.
    Compare {
        /// Scenario files or built-in names, as for `run`.
        #[arg(required = true, num_args = 2..)]
        scenarios: Vec<PathBuf>,
        #[command(flatten)]
        opts: RunOpts,
    },
}

#[derive(clap::Args)]
pub struct RunOpts {
    /// Monte Carlo runs per scenario (default: the scenario's own).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    runs: Option<u64>,
    /// Days to simulate (default: the scenario's own).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    days: Option<u64>,
    /// First seed (default: the scenario's own).
    // At most i64::MAX, as in a scenario file (a TOML integer): a larger
    // one was refused with a TOML parse error of a line of our own.
    #[arg(long, value_parser = clap::value_parser!(u64).range(..=i64::MAX as u64))]
    seed: Option<u64>,
    /// Output directory (default: sim-out/<scenario name>; with --sweep,
    /// sim-out/<scenario name>_<key>; for several, their names joined by
    /// -vs-, cut to 200 characters).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Worker threads (default: every core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
    /// No progress bar (it is also off when stderr is not a terminal).
    #[arg(long)]
    quiet: bool,
}

fn scenario_help() -> String {
    format!("A scenario file (TOML), or the name of a built-in one: {}", scenario::built_in_names())
}

/// A scenario's text: the file at `path`, or else the built-in scenario
/// of that name.
fn scenario_text(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        // A directory of that name (an earlier report's, say) does not hide
        // the built-in scenario: `sim compare burn-and-mint hybrid` run
        // beside a `burn-and-mint/` report failed with "Is a directory".
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || path.is_dir() => {
            if let Some(text) = path.to_str().and_then(scenario::built_in) {
                return Ok(text.to_string());
            }
            if path.is_dir() {
                bail!("reading scenario {}: it is a directory, and no built-in scenario has that name", path.display());
            }
            let typed = path.to_string_lossy();
            let near = (scenario::BUILT_IN.iter())
                .map(|(name, _)| (tollway_ledger::params::edit_distance(&typed, name), *name))
                .filter(|(distance, _)| *distance <= 2)
                .min()
                .map(|(_, name)| name);
            let hint = near.map(|name| format!("; did you mean {name}?")).unwrap_or_default();
            bail!(
                "reading scenario {}: no such file, and no built-in scenario of that name (they are: {}){hint}",
                path.display(),
                scenario::built_in_names()
            )
        }
        Err(e) => Err(e).with_context(|| format!("reading scenario {}", path.display())),
    }
}

fn load(path: &Path, opts: &RunOpts) -> anyhow::Result<Scenario> {
    let text = scenario_text(path)?;
    let mut s = Scenario::from_toml(&text).with_context(|| format!("scenario {}", path.display()))?;
    if let Some(r) = opts.runs {
        s = s.with_override("run.runs", &r.to_string())?;
    }
    if let Some(d) = opts.days {
        s = s.with_override("run.days", &d.to_string())?;
    }
    if let Some(seed) = opts.seed {
        s = s.with_override("run.seed", &seed.to_string())?;
    }
    Ok(s)
}

/// A scenario's directory name: letters, digits, '-' and '_' only. ('.'
/// was kept, and a scenario named ".." wrote its CSVs above `--out`, or
/// the whole report into the working directory.)
fn slug(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

/// `name`'s slug, cut to [`MAX_SLUG_BYTES`] where it is longer: its first
/// part and a hash of the whole, so that two long names still differ.
fn short_slug(name: &str) -> String {
    let s = slug(name);
    if s.len() <= MAX_SLUG_BYTES {
        return s;
    }
    let hash = tollway_types::Hash32::of(s.as_bytes()).to_hex();
    // ASCII: any byte is a character boundary.
    format!("{}-{}", &s[..MAX_SLUG_BYTES - 17], &hash[..16])
}

/// The longest scenario directory name (a slug, ASCII), well inside the
/// 255 bytes of common file systems.
const MAX_SLUG_BYTES: usize = 200;

/// Written into `--out` before anything else of a report: a report whose
/// writing was cut short (Ctrl-C, a full disk) is still known for one, and
/// replaced by the next run rather than refused.
const REPORT_MARKER: &str = ".tollway-sim-report";

/// Written into `--out` as a report's writing begins (after the
/// simulation) and removed once its last file, index.html, is written. A
/// run cut short while writing (Ctrl-C, SIGTERM, a full disk) leaves it
/// beside the partial files, which looked like a report that merely
/// lacked its index.html. Not hidden, as the marker is: it is there to be
/// seen. The same name in [`RUNS_IN_PROGRESS`] says what that holds.
const INCOMPLETE_NOTE: &str = "INCOMPLETE.txt";

/// The directory in `--out` that each run's CSV is written to as the run
/// ends (every run's rows kept to the end held GBs for thousands of runs,
/// and an OOM kill, a crash or a Ctrl-C late on lost every finished run).
/// Its scenarios' directories move into place when the report is
/// written, so an earlier report in `--out` stays whole until then, and a
/// run cut short while it simulates leaves the finished runs' CSVs here.
const RUNS_IN_PROGRESS: &str = "runs-in-progress";

/// Whether `out` holds a report of ours: its marker, or a summary.json in
/// our format (reports written before the marker). Any file named
/// summary.json counted, and the report's own file names (index.html,
/// *.png) beside it were then deleted.
fn holds_our_report(out: &Path) -> bool {
    let summary = std::fs::read(out.join("summary.json")).ok();
    let format = summary.and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok()).and_then(|v| {
        v.get("format").and_then(|f| f.as_str()).map(str::to_string)
    });
    out.join(REPORT_MARKER).is_file() || format.is_some_and(|f| f.starts_with("tollway-sim-summary/"))
}

/// `out`'s entries, refusing a directory that is neither empty nor an
/// earlier report (checked before simulating, so a bad `--out` loses
/// nothing).
fn earlier_report(out: &Path) -> anyhow::Result<Vec<std::fs::DirEntry>> {
    let entries: Vec<std::fs::DirEntry> = std::fs::read_dir(out)
        .with_context(|| format!("reading {}", out.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", out.display()))?;
    if !entries.is_empty() && !holds_our_report(out) {
        bail!("{} is not empty and holds no earlier report of `tollway sim`: choose another --out", out.display());
    }
    Ok(entries)
}

/// Removes what an earlier report left in `out` (once this one is ready
/// to be written), so that its CSVs are not mixed with this one's: the
/// report's own files, and each directory that holds nothing but
/// `seed-*.csv` files. Anything else is left.
fn clear_earlier_report(out: &Path) -> anyhow::Result<()> {
    let entries = earlier_report(out)?;
    let is_seed_csv = |p: &Path| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seed-") && n.ends_with(".csv"))
    };
    for e in entries {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            let files: Vec<PathBuf> = std::fs::read_dir(&path)?.filter_map(|f| f.ok().map(|f| f.path())).collect();
            if files.iter().all(|f| is_seed_csv(f)) {
                std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        } else if name == "index.html" || name == "summary.json" || name.ends_with(".png") || name.ends_with(".svg") {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

pub fn run(cmd: &SimCommand) -> anyhow::Result<()> {
    // `default_out`: the name of the default output directory.
    let (scenarios, opts, title, default_out) = match cmd {
        SimCommand::Run { scenario, opts, sweep } => {
            let base = load(scenario, opts)?;
            let title = format!("Tollway simulation: {}", base.name);
            // A sweep's by its key: its designs' names joined, as a
            // comparison's, ran past a file name's 255 bytes with five
            // values of a long key, and nothing could run.
            let default_out = match sweep.as_deref().and_then(|spec| spec.split_once('=')) {
                Some((key, _)) => format!("{} {}", base.name, key.trim()),
                None => base.name.clone(),
            };
            let list = match sweep {
                Some(spec) => montecarlo::sweep(&base, spec)?,
                None => vec![base],
            };
            (list, opts, title, default_out)
        }
        SimCommand::Compare { scenarios, opts } => {
            let most = tollway_sim::montecarlo::MAX_SWEEP_VALUES;
            if scenarios.len() > most {
                bail!("{} scenarios: compare takes at most {most}, one colour each on the charts", scenarios.len());
            }
            let list = scenarios.iter().map(|p| load(p, opts)).collect::<anyhow::Result<Vec<_>>>()?;
            let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
            let title = format!("Tollway simulation: {}", names.join(" vs "));
            let default_out = names.join("-vs-");
            (list, opts, title, default_out)
        }
    };
    for s in &scenarios {
        for day in s.events_after_the_run() {
            eprintln!("note: {}: what happens on day {day} is after the run's {} days, so it does not happen", s.name, s.run.days);
        }
    }
    // Named: the same file given twice, two copies of one file, or a
    // sweep's value given twice all read the same otherwise.
    let mut names = std::collections::BTreeSet::new();
    if let Some(twice) = scenarios.iter().map(|s| s.name.as_str()).find(|n| !names.insert(*n)) {
        bail!("two scenarios share a name, {twice:?}; names label the charts, so they must differ");
    }
    // Their directories too: "a b" and "a/b" both write to a_b/.
    let mut slugs: Vec<String> = scenarios.iter().map(|s| slug(&s.name)).collect();
    slugs.sort_unstable();
    slugs.dedup();
    if slugs.len() != scenarios.len() {
        bail!("two scenarios' names differ only in characters other than letters, digits and '-'; their CSVs would share a directory");
    }
    // And fit a file system's names (255 bytes): a longer one failed only
    // after the whole simulation, the earlier report already cleared.
    if let Some(s) = scenarios.iter().find(|s| slug(&s.name).len() > MAX_SLUG_BYTES) {
        let start: String = s.name.chars().take(40).collect();
        bail!(
            "scenario name {start:?}… is {} characters (a sweep adds ` key=value`): its CSVs' directory is named after it, \
             which takes at most {MAX_SLUG_BYTES}; shorten the scenario file's `name`",
            s.name.chars().count()
        );
    }
    let out = opts.out.clone().unwrap_or_else(|| PathBuf::from("sim-out").join(short_slug(&default_out)));
    // Before the (possibly long) simulation, so a bad --out loses nothing:
    // the marker too, which is the first file written (a read-only --out
    // failed at it only after the whole simulation).
    // A file where the report's directory goes, or above it, failed with
    // the system's bare "File exists" or "Not a directory".
    if let Some(file) = out.ancestors().find(|p| p.is_file()) {
        if file == out {
            bail!(
                "--out {}: a file of that name is there, and a report is a directory of files; give --out a \
                 directory (new, empty or an earlier report's), or move the file",
                out.display()
            );
        }
        bail!(
            "--out {}: {} is a file, so no directory can be made inside it; give --out a path under directories",
            out.display(),
            file.display()
        );
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating the output directory {}", out.display()))?;
    earlier_report(&out)?;
    write_marker(&out)?;
    let threads = opts.threads.map(|n| n as usize).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let total_days: u64 = scenarios.iter().map(|s| s.run.days * s.run.runs).sum();
    eprintln!(
        "simulating {} scenario(s), {} run(s), {} simulated days on {threads} thread(s)",
        scenarios.len(),
        scenarios.iter().map(|s| s.run.runs).sum::<u64>(),
        total_days
    );
    let bar = if opts.quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(total_days) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} days ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    // Each run's CSV is written as the run ends (`RUNS_IN_PROGRESS`), and
    // its chart points and operator profits are appended to its
    // scenario's store beside the CSVs: what stays in memory is its
    // summary (`RunResult`), so memory does not grow with the runs but by
    // a few hundred bytes each. One CSV per run, as before: the runs may
    // end in any order, and each file's bytes depend on its seed alone,
    // whatever the threads.
    let (staging, dirs) = begin_runs(&out, &scenarios)?;
    let stores = dirs.iter().map(|dir| RunStore::in_dir(dir)).collect::<Result<Vec<_>, _>>()?;
    let epochs_per_point: Vec<usize> =
        scenarios.iter().map(|s| report::stats::epochs_per_point(s.run.days as usize)).collect();
    let finished = |i: usize, k: u64, run: RunOutput| -> anyhow::Result<RunResult> {
        // Under its name only once whole: a run cut short mid-write
        // leaves a `.part`, not a CSV that looks finished.
        let csv = dirs[i].join(format!("seed-{}.csv", run.summary.seed));
        let part = csv.with_extension("csv.part");
        report::write_run_csv(&part, &run)?;
        std::fs::rename(&part, &csv).with_context(|| format!("renaming {} to {}", part.display(), csv.display()))?;
        // After its CSV: a store that cannot be written (a full disk)
        // loses no finished run's rows.
        Ok(RunResult::of(run, epochs_per_point[i], k == 0, &stores[i])?)
    };
    // A step a day (the bar limits its own redraws): moved every 64 days,
    // it showed nothing of a run of fewer days until the run was over. A
    // step, not the count: the workers' counts may arrive out of order.
    let runs = montecarlo::run_all(&scenarios, threads, &|_, _| bar.inc(1), &finished).with_context(|| {
        format!("the runs that finished have their CSVs in {}; the next run with this --out replaces them", staging.display())
    })?;
    bar.finish_and_clear();
    let results: Vec<ScenarioResult> = (scenarios.iter().zip(runs).zip(stores))
        .map(|((s, runs), store)| ScenarioResult { name: s.name.clone(), runs, store })
        .collect();
    eprintln!("simulated in {:.1} s; writing the report into {}", started.elapsed().as_secs_f64(), out.display());
    let note = begin_report(&out)?;
    finish_report(&out, &staging, &scenarios, &title, &results).with_context(|| {
        format!("the report in {} is incomplete ({} says so; the next run with this --out replaces it)", out.display(), note.display())
    })?;
    std::fs::remove_file(&note).with_context(|| format!("removing {} (the report is whole)", note.display()))?;
    print_summary(&results)?;
    outln!("report: {}", out.join("index.html").display())?;
    Ok(())
}

/// Marks `out` as a report's, before anything else of it is written.
fn write_marker(out: &Path) -> anyhow::Result<()> {
    let marker = out.join(REPORT_MARKER);
    std::fs::write(&marker, "a report of `tollway sim`: the next run with this --out replaces it\n")
        .with_context(|| format!("writing {}", marker.display()))
}

/// Makes [`RUNS_IN_PROGRESS`] in `out` anew (what an earlier run cut
/// short left there goes), with its note and a directory for each
/// scenario's CSVs. Returns it and those directories.
fn begin_runs(out: &Path, scenarios: &[Scenario]) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let staging = out.join(RUNS_IN_PROGRESS);
    if let Some(s) = scenarios.iter().find(|s| slug(&s.name) == RUNS_IN_PROGRESS) {
        bail!("a scenario's CSVs cannot go to {RUNS_IN_PROGRESS}/, where runs are written as they end: rename {:?}", s.name);
    }
    if staging.exists() {
        std::fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let note = staging.join(INCOMPLETE_NOTE);
    let text = format!(
        "These are the CSVs of the runs that had finished when `tollway sim` (process {}) last wrote here, one \
         directory a scenario. It moves them into the report once every run has ended.\nIf no `tollway sim` is \
         running, it was cut short (Ctrl-C, SIGTERM, a crash, an error) while it simulated: the report beside \
         this directory, if there is one, is an earlier run's, whole. The next run with this --out replaces both.\nBeside \
         the CSVs, {CHART_POINTS_FILE} and {OPERATOR_PROFITS_FILE} are the finished runs' chart points and operator \
         profits, which the report is drawn from (the simulator's scratch, in docs/sim-outputs.md).\n",
        std::process::id()
    );
    std::fs::write(&note, text).with_context(|| format!("writing {}", note.display()))?;
    Ok((staging.clone(), scenario_dirs(&staging, scenarios)?))
}

/// Begins the report in `out`: [`INCOMPLETE_NOTE`] (there until
/// index.html is written), then the earlier report cleared. Returns the
/// note's path.
fn begin_report(out: &Path) -> anyhow::Result<PathBuf> {
    let note = out.join(INCOMPLETE_NOTE);
    let text = format!(
        "This report is incomplete: `tollway sim` (process {}) began writing it and removes this file once its \
         last file, index.html, is written.\nIf no `tollway sim` is running, it was cut short (Ctrl-C, SIGTERM, a \
         full disk, an error): the files here are partial. The next run with this --out replaces them.\n",
        std::process::id()
    );
    // First: a note that cannot be written (a full disk) fails the run
    // with the earlier report still whole, and is not left half-written.
    if let Err(e) = std::fs::write(&note, text) {
        let _ = std::fs::remove_file(&note);
        return Err(e).with_context(|| format!("writing {}", note.display()));
    }
    // `run` marked `out` before; clearing leaves the marker and the note.
    clear_earlier_report(out).with_context(|| {
        format!("the report in {} is incomplete ({} says so; the next run with this --out replaces it)", out.display(), note.display())
    })?;
    Ok(note)
}

/// Each scenario's directory for its runs' CSVs, created.
fn scenario_dirs(out: &Path, scenarios: &[Scenario]) -> anyhow::Result<Vec<PathBuf>> {
    scenarios
        .iter()
        .map(|s| {
            let dir = out.join(slug(&s.name));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            Ok(dir)
        })
        .collect()
}

/// The rest of the report once every run's CSV is written: the CSVs moved
/// from `staging` into `out` (each scenario's directory, beside what the
/// clearing of the earlier report kept there), summary.json, the charts
/// and, last, index.html; then `staging` removed, with the runs' stores
/// (chart points and operator profits) that the charts were read from.
fn finish_report(
    out: &Path,
    staging: &Path,
    scenarios: &[Scenario],
    title: &str,
    results: &[ScenarioResult],
) -> anyhow::Result<()> {
    for s in scenarios {
        let (from, to) = (staging.join(slug(&s.name)), out.join(slug(&s.name)));
        std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
        for csv in std::fs::read_dir(&from).with_context(|| format!("reading {}", from.display()))? {
            let csv = csv.with_context(|| format!("reading {}", from.display()))?;
            // The stores stay until the charts are drawn from them.
            if csv.file_name() == CHART_POINTS_FILE || csv.file_name() == OPERATOR_PROFITS_FILE {
                continue;
            }
            let into = to.join(csv.file_name());
            std::fs::rename(csv.path(), &into)
                .with_context(|| format!("moving {} to {}", csv.path().display(), into.display()))?;
        }
    }
    report::write_summary_json(&out.join("summary.json"), results)?;
    // Last: it writes index.html after every chart.
    report::write_report(out, title, results)?;
    std::fs::remove_dir_all(staging).with_context(|| format!("removing {}", staging.display()))?;
    Ok(())
}

/// One line per scenario, of the report's own figures
/// (`report::ScenarioStats`, rounded as the report rounds them), so that
/// the terminal and the report never disagree.
fn print_summary(results: &[ScenarioResult]) -> std::io::Result<()> {
    outln!(
        "{:<40} {:>5} {:>14} {:>10} {:>10} {:>10} {:>9} {:>11} {:>9}",
        "scenario (median of runs)", "runs", "burn>=mint day", "worst liq", "retention", "drawdown", "price $", "attacker $", "nodes"
    )?;
    for s in results {
        let stats = report::ScenarioStats::of(s);
        // "n/a" where no run has a finite value, as the report and the
        // JSON's null say: the terminal printed NaN.
        let p50 = |x: Option<report::stats::Spread>, scale: f64, decimals: usize, unit: &str| {
            x.map_or_else(|| "n/a".to_string(), |x| format!("{:.*}{unit}", decimals, x.p50 * scale))
        };
        let burn_day = stats.burn_ge_mint_day_median.map_or_else(|| "never".to_string(), report::human::count);
        outln!(
            "{:<40} {:>5} {:>14} {:>10} {:>10} {:>10} {:>9} {:>11} {:>9}",
            s.name,
            stats.runs,
            burn_day,
            p50(stats.worst_regional_liquidity, 1.0, 2, ""),
            p50(stats.operator_retention, 1.0, 2, ""),
            p50(stats.price_drawdown, 100.0, 0, "%"),
            p50(stats.final_price_usd, 1.0, 3, ""),
            // As the report says it: not "n/a", and not the $0 it was.
            stats.attacker_profit_usd.map_or_else(|| "no attacker".to_string(), |x| format!("{:.0}", x.p50)),
            p50(stats.final_nodes, 1.0, 0, ""),
        )?;
    }
    Ok(())
}
