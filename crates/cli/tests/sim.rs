//! End-to-end: `tollway sim` as a user runs it, on the repository's
//! scenario files at a small scale.

mod common;
#[path = "../../sim/tests/shared/digest.rs"]
mod digest;

use common::tollway;
use digest::digest_of_files;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}


fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tollway-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

/// A copy of a repository scenario at test scale.
fn small_scenario(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(repo().join("scenarios").join(format!("{name}.toml")))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("operators = 2000", "operators = 120")
        .replace("consumers = 20000", "consumers = 3000")
        .replace("farmers = 1500", "farmers = 90");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path.to_string_lossy().into_owned()
}

#[test]
fn compare_writes_a_report_with_every_chart_csv_and_json() {
    let dir = temp_dir("sim-compare");
    let a = small_scenario(&dir, "burn-and-mint");
    let b = small_scenario(&dir, "fixed-emissions");
    let out = dir.join("out");
    let (ok, stdout, stderr) =
        tollway(&["sim", "compare", &a, &b, "--runs", "2", "--days", "40", "--out", out.to_str().unwrap_or_default()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("burn-and-mint") && stdout.contains("fixed-emissions"), "{stdout}");
    let html = std::fs::read_to_string(out.join("index.html")).unwrap_or_else(|e| panic!("{e}"));
    for chart in ["price", "supply", "mint_burn", "nodes", "capacity", "operator_profit", "consumer_price", "liquidity"] {
        for ext in ["png", "svg"] {
            let p = out.join(format!("{chart}.{ext}"));
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            assert!(len > 1000, "{} is missing or nearly empty ({len} bytes)", p.display());
        }
    }
    assert!(html.contains("burn-and-mint") && html.contains("fixed-emissions"));
    for seed in [1, 2] {
        for s in ["burn-and-mint", "fixed-emissions"] {
            let csv = std::fs::read_to_string(out.join(s).join(format!("seed-{seed}.csv"))).unwrap_or_default();
            assert_eq!(csv.lines().count(), 41, "{s} seed {seed}: header + 40 days");
        }
    }
    let json = std::fs::read_to_string(out.join("summary.json")).unwrap_or_default();
    assert!(json.contains("\"burn_ge_mint_epoch\""), "{json}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sweep_runs_one_design_per_value() {
    let dir = temp_dir("sim-sweep");
    let a = small_scenario(&dir, "burn-and-mint");
    let out = dir.join("out");
    let (ok, stdout, stderr) = tollway(&[
        "sim", "run", &a, "--runs", "1", "--days", "20", "--sweep", "uptime_share=0.5,0.7", "--out",
        out.to_str().unwrap_or_default(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("uptime_share=0.5") && stdout.contains("uptime_share=0.7"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_scenarios_get_clear_errors() {
    let dir = temp_dir("sim-bad");
    let good = std::fs::read_to_string(repo().join("scenarios/burn-and-mint.toml")).unwrap_or_default();
    let cases = [
        (good.replace("days = 730", "days = 0"), "scenario `run.days`: must be 1 to 36500"),
        (good.replace("oracles = 30", "oracles = 30\ncolour = 3"), "unknown field `colour`"),
        (good.replace("[params]", "[params]\nusage_reward_cap = 2.0"), "`emission.usage_reward_cap`: 2 is outside [0, 1]"),
        (good.replace("uptime = [0.6, 1.0]", "uptime = [0.9, 0.2]"), "population.uptime"),
        // Infinities ran as garbage, and NaN passed every check.
        (good.replace("gb_per_consumer_per_day = 1.5", "gb_per_consumer_per_day = inf"), "demand.gb_per_consumer_per_day"),
        (good.replace("trader_volume_usd = 2000", "trader_volume_usd = nan"), "market.trader_volume_usd"),
        // Each oracle's address lives in 100.64/10 (a debug build overflowed).
        (good.replace("oracles = 30", "oracles = 50000"), "population.oracles"),
        // A region's price of 0 made its demand infinite; 0 days of churn
        // or of unserved patience emptied the market on day 1; a shock
        // ending the day it starts never came.
        (good.replace("price_usd_per_gb = [0.3, 1.0]", "price_usd_per_gb = [0.0, 0.0]"), "population.price_usd_per_gb"),
        (good.replace("churn_after_days = 30", "churn_after_days = 0"), "population.churn_after_days"),
        (good.replace("leave_after_unserved_days = 7", "leave_after_unserved_days = 0"), "demand.leave_after_unserved_days"),
        (format!("{good}\n[[shocks]]\nkind = \"demand\"\nstart_day = 10\nend_day = 10\nfactor = 0.5\n"), "`shocks[0].end_day`: 10 must be after start_day (10)"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = dir.join(format!("bad{i}.toml"));
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
        let (ok, _, stderr) = tollway(&["sim", "run", p.to_str().unwrap_or_default(), "--quiet"]);
        assert!(!ok);
        assert!(stderr.contains(want), "case {i}: wanted {want:?} in {stderr}");
    }
    let (ok, _, stderr) = tollway(&["sim", "run", "no-such-file.toml"]);
    assert!(!ok && stderr.contains("reading scenario no-such-file.toml: no such file"), "{stderr}");
    assert!(stderr.contains("(they are: fixed-emissions, burn-and-mint,"), "{stderr}");
    let p = dir.join("s.toml");
    std::fs::write(&p, &good).unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, stderr) = tollway(&["sim", "run", p.to_str().unwrap_or_default(), "--sweep", "nonsense"]);
    assert!(!ok && stderr.contains("a sweep is key=v1,v2"), "{stderr}");
    // An output path that cannot be a directory fails before simulating.
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, stderr) = tollway(&["sim", "run", p.to_str().unwrap_or_default(), "--out", file.to_str().unwrap_or_default()]);
    assert!(!ok && stderr.contains("a file of that name is there") && !stderr.contains("simulated in"), "{stderr}");
    // Two designs of the same name, even not side by side, are refused.
    let b = dir.join("b.toml");
    std::fs::write(&b, good.replace("name = \"burn-and-mint\"", "name = \"other\"")).unwrap_or_else(|e| panic!("{e}"));
    let (ps, bs) = (p.to_str().unwrap_or_default(), b.to_str().unwrap_or_default());
    let (ok, _, stderr) = tollway(&["sim", "compare", ps, bs, ps, "--runs", "1", "--days", "2"]);
    assert!(!ok && stderr.contains("two scenarios share a name, \"burn-and-mint\""), "{stderr}");
    // A sweep's value given twice, as written or in another spelling:
    // the error names both.
    let (ok, _, stderr) = tollway(&["sim", "run", ps, "--sweep", "uptime_share=0.5,0.6,0.5", "--runs", "1", "--days", "2"]);
    assert!(!ok && stderr.contains("uptime_share`: 0.5 and 0.5 are the same value"), "{stderr}");
    let (ok, _, stderr) = tollway(&["sim", "run", ps, "--sweep", "uptime_share=0.5,0.6,0.50", "--runs", "1", "--days", "2"]);
    assert!(!ok && stderr.contains("0.5 and 0.50 are the same value"), "{stderr}");
    // A misspelt key names the ones it may have meant, once.
    let (ok, _, stderr) = tollway(&["sim", "run", p.to_str().unwrap_or_default(), "--sweep", "uptime_sahre=0.5,0.6"]);
    assert!(!ok && stderr.contains("did you mean uptime_share, emission.uptime_share"), "{stderr}");
    assert_eq!(stderr.matches("no parameter named").count(), 1, "{stderr}");
    // Shocks and attacks on day 0 never happened, without a word; and an
    // attack the ledger refuses failed only on its first day, deep in a run.
    let shock = std::fs::read_to_string(repo().join("scenarios/demand-shock.toml")).unwrap_or_default();
    let attack = std::fs::read_to_string(repo().join("scenarios/sybil-and-liars.toml")).unwrap_or_default();
    for (i, (text, want)) in [
        (shock.replace("start_day = 180", "start_day = 0"), "`shocks[0].start_day`: 0 is before the run"),
        (attack.replace("start_day = 30", "start_day = 0"), "start_day ≥ 1"),
        (attack.replace("liar_claim_factor = 10.0", "liar_claim_factor = 1000.0"), "attack.liar_claim_factor"),
    ]
    .iter()
    .enumerate()
    {
        let p = dir.join(format!("day{i}.toml"));
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
        let (ok, _, stderr) = tollway(&["sim", "run", p.to_str().unwrap_or_default(), "--quiet"]);
        assert!(!ok && stderr.contains(want), "case {i}: wanted {want:?} in {stderr}");
    }
    let (ok, _, stderr) = tollway(&["sim", "run", p.to_str().unwrap_or_default(), "--sweep", "uptime_share=0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95,1"]);
    assert!(!ok && stderr.contains("11 values: a sweep takes at most 10"), "{stderr}");
    let eleven: Vec<&str> = ["sim", "compare"].into_iter().chain(std::iter::repeat_n(p.to_str().unwrap_or_default(), 11)).collect();
    let (ok, _, stderr) = tollway(&eleven);
    assert!(!ok && stderr.contains("11 scenarios: compare takes at most 10"), "{stderr}");
    // A shock after a shortened run is named, not silently dropped.
    let shock_path = dir.join("shock.toml");
    std::fs::write(&shock_path, &shock).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.join("shock-out");
    let (ok, _, stderr) = tollway(&["sim", "run", shock_path.to_str().unwrap_or_default(), "--days", "3", "--runs", "1", "--quiet", "--out", out.to_str().unwrap_or_default()]);
    assert!(ok && stderr.contains("what happens on day 180 is after the run's 3 days"), "{stderr}");
    // No threads is no way to run.
    let (ok, _, stderr) = tollway(&["sim", "run", p.to_str().unwrap_or_default(), "--threads", "0"]);
    assert!(!ok && stderr.contains("--threads") && !stderr.contains("simulated in"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A built-in scenario runs by name from a directory with no scenario
/// files, and gives the same bytes as its file in the repository.
#[test]
fn a_built_in_scenario_runs_by_name_from_anywhere() {
    let dir = temp_dir("sim-built-in");
    let by_name = dir.join("by-name");
    let by_file = dir.join("by-file");
    let file = repo().join("scenarios/hybrid.toml");
    let common = ["--runs", "1", "--days", "3", "--quiet"];
    let run = |scenario: &str, out: &Path| {
        let mut args = vec!["sim", "run", scenario, "--out", out.to_str().unwrap_or_default()];
        args.extend(common);
        let (ok, stdout, stderr) = common::tollway_in(&dir, &args);
        assert!(ok, "{stdout}{stderr}");
    };
    run("hybrid", &by_name);
    run(file.to_str().unwrap_or_default(), &by_file);
    let csv = |d: &Path| std::fs::read(d.join("hybrid/seed-1.csv")).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    assert_eq!(csv(&by_name), csv(&by_file));
    // A directory of a built-in's name (an earlier report's) does not hide
    // it; one of another name is said to be a directory.
    std::fs::create_dir_all(dir.join("hybrid")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(dir.join("reports")).unwrap_or_else(|e| panic!("{e}"));
    let beside = dir.join("beside-a-directory");
    run("hybrid", &beside);
    assert_eq!(csv(&beside), csv(&by_file));
    let (ok, _, stderr) = common::tollway_in(&dir, &["sim", "run", "reports", "--quiet"]);
    assert!(!ok && stderr.contains("it is a directory"), "{stderr}");
    // A name one slip away from a built-in one gets it offered.
    let (ok, _, stderr) = common::tollway_in(&dir, &["sim", "run", "hybird", "--quiet"]);
    assert!(!ok && stderr.contains("no built-in scenario of that name") && stderr.contains("did you mean hybrid?"), "{stderr}");
    let (ok, _, stderr) = common::tollway_in(&dir, &["sim", "run", "nothing-like-it", "--quiet"]);
    assert!(!ok && !stderr.contains("did you mean"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scenario's name makes its directory: ".." wrote the CSVs above
/// `--out`; and a reused `--out` kept the last report's CSVs beside the
/// new ones. Now names are slugs without dots, and an earlier report's
/// files go (a directory that holds something else is refused).
#[test]
fn outputs_stay_inside_out_and_replace_an_earlier_report() {
    let dir = temp_dir("sim-out");
    let text = std::fs::read_to_string(small_scenario(&dir, "burn-and-mint")).unwrap_or_default();
    let dots = dir.join("dots.toml");
    std::fs::write(&dots, text.replace("name = \"burn-and-mint\"", "name = \"..\"")).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.join("deep").join("out");
    let run = |seed: &str, runs: &str| {
        tollway(&["sim", "run", dots.to_str().unwrap_or_default(), "--out", out.to_str().unwrap_or_default(), "--days", "3", "--runs", runs, "--seed", seed, "--quiet"])
    };
    let (ok, _, stderr) = run("1", "2");
    assert!(ok, "{stderr}");
    assert!(out.join("__").join("seed-1.csv").is_file(), "the CSVs go to out/__/");
    assert!(!dir.join("deep").join("seed-1.csv").exists(), "a CSV escaped --out");
    // Again into the same directory, another seed: only its CSV is left.
    let (ok, _, stderr) = run("5", "1");
    assert!(ok, "{stderr}");
    let csvs: Vec<String> = std::fs::read_dir(out.join("__"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default();
    assert_eq!(csvs, ["seed-5.csv"]);
    // A directory that is not a report is not written into.
    let other = dir.join("notes");
    std::fs::create_dir_all(&other).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(other.join("mine.txt"), b"keep").unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, stderr) = tollway(&["sim", "run", dots.to_str().unwrap_or_default(), "--out", other.to_str().unwrap_or_default(), "--days", "3", "--runs", "1", "--quiet"]);
    assert!(!ok && stderr.contains("holds no earlier report"), "{stderr}");
    assert!(other.join("mine.txt").is_file());
    // Nor is one that has a summary.json of its own: its index.html and
    // images were deleted as the report's.
    let site = dir.join("site");
    std::fs::create_dir_all(&site).unwrap_or_else(|e| panic!("{e}"));
    for (name, text) in [("summary.json", "{}"), ("index.html", "mine"), ("logo.png", "mine")] {
        std::fs::write(site.join(name), text).unwrap_or_else(|e| panic!("{e}"));
    }
    let (ok, _, stderr) = tollway(&["sim", "run", dots.to_str().unwrap_or_default(), "--out", site.to_str().unwrap_or_default(), "--days", "3", "--runs", "1", "--quiet"]);
    assert!(!ok && stderr.contains("holds no earlier report"), "{stderr}");
    assert!(site.join("logo.png").is_file() && site.join("index.html").is_file());
    // A report cut short before its summary.json (Ctrl-C) is one: the
    // next run replaces it.
    std::fs::remove_file(out.join("summary.json")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(out.join("index.html")).unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, stderr) = run("7", "1");
    assert!(ok, "{stderr}");
    assert!(out.join("__").join("seed-7.csv").is_file() && out.join("summary.json").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--seed` above i64::MAX (a u64 by its help) was refused with a TOML
/// parse error of a line of our own (`v = 18446744073709551615`); the
/// flags' ranges are clap's now, and the error names the flag.
#[test]
fn a_seed_days_or_runs_flag_out_of_range_is_refused_by_name() {
    for (flag, value) in [("--seed", "18446744073709551615"), ("--days", "9223372036854775808"), ("--runs", "0")] {
        let (ok, _, stderr) = tollway(&["sim", "run", "hybrid", flag, value, "--quiet"]);
        assert!(!ok && !stderr.contains("TOML"), "{flag} {value}: {stderr}");
        assert!(stderr.contains(&format!("invalid value '{value}' for '{flag}")), "{stderr}");
        assert!(!stderr.contains("simulating"), "{stderr}");
    }
    // The largest seed a scenario file can hold still runs.
    let dir = temp_dir("sim-seed");
    let out = dir.join("out");
    let max = i64::MAX.to_string();
    let args = ["sim", "run", "hybrid", "--seed", &max, "--runs", "1", "--days", "1", "--quiet", "--out", out.to_str().unwrap_or_default()];
    let (ok, _, stderr) = tollway(&args);
    assert!(ok, "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `compare --help` said its report went to sim-out/<scenario name>; it
/// goes to sim-out/<a>-vs-<b> (as does a sweep's).
#[test]
fn compares_help_gives_its_default_output_directory() {
    let (ok, help, _) = tollway(&["sim", "compare", "--help"]);
    assert!(ok && help.contains("joined by -vs-"), "{help}");
    let dir = temp_dir("sim-compare-out");
    let (ok, stdout, stderr) =
        common::tollway_in(&dir, &["sim", "compare", "hybrid", "burn-and-mint", "--runs", "1", "--days", "1", "--quiet"]);
    assert!(ok && stdout.contains("sim-out/hybrid-vs-burn-and-mint/index.html"), "{stdout}{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The progress bar moved every 64 simulated days only: a run of fewer
/// (one run of 60 days, say, at a million operators) drew nothing until
/// it was over, and a long run sat still for 64 of its days at a time.
/// Here stderr is a terminal, as a user's is, and the bar must show a
/// day between the first and the last.
#[test]
fn the_progress_bar_moves_within_a_short_run() {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    use std::io::Read;
    let dir = temp_dir("sim-progress");
    let a = small_scenario(&dir, "hybrid");
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap_or_else(|e| panic!("{e}"));
    grantpt(&master).unwrap_or_else(|e| panic!("{e}"));
    unlockpt(&master).unwrap_or_else(|e| panic!("{e}"));
    let name = ptsname(&master, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_string_lossy().as_ref())
        .unwrap_or_else(|e| panic!("{e}"));
    let out = dir.join("out");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollway"))
        .args(["sim", "run", &a, "--runs", "1", "--days", "40", "--threads", "1", "--out", out.to_str().unwrap_or_default()])
        .stdout(std::process::Stdio::null())
        .stderr(terminal)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // Read the terminal until the child has exited and closed it (EIO).
    let mut screen = Vec::new();
    let mut master = std::fs::File::from(master);
    let mut buf = [0u8; 4096];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        screen.extend_from_slice(&buf[..n]);
    }
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    let screen = String::from_utf8_lossy(&screen);
    assert!(status.success(), "{screen}");
    let days: Vec<u32> = screen
        .split(" days (")
        .filter_map(|before| before.rsplit(' ').next()?.strip_suffix("/40")?.parse().ok())
        .collect();
    assert!(days.iter().any(|&d| d > 0 && d < 40), "the bar showed days {days:?}: {screen}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A figure no run has (the worst liquidity of a market with no demand)
/// is "n/a" in the terminal's summary, as it is in the report and null in
/// summary.json: the terminal printed NaN.
#[test]
fn a_figure_no_run_has_is_not_a_number_in_the_terminal_either() {
    let dir = temp_dir("sim-na");
    let a = small_scenario(&dir, "hybrid");
    let text = std::fs::read_to_string(&a).unwrap_or_else(|e| panic!("{e}")).replace("consumers = 3000", "consumers = 0");
    std::fs::write(&a, text).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.join("out");
    let (ok, stdout, stderr) =
        tollway(&["sim", "run", &a, "--runs", "1", "--days", "3", "--quiet", "--out", out.to_str().unwrap_or_default()]);
    assert!(ok, "{stderr}");
    let row = stdout.lines().nth(1).unwrap_or_default();
    assert!(row.contains(" n/a ") && !row.contains("NaN"), "{stdout}");
    let json = std::fs::read_to_string(out.join("summary.json")).unwrap_or_default();
    assert!(json.contains("\"worst_regional_liquidity\": null"), "{json}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scenario with no attacker says so in the terminal's summary (it
/// printed an attacker profit of 0, an attack that broke even) and has
/// none in summary.json.
#[test]
fn a_scenario_without_attackers_has_no_attacker_profit_in_the_terminal() {
    let dir = temp_dir("sim-no-attacker");
    let a = small_scenario(&dir, "hybrid");
    let out = dir.join("out");
    let (ok, stdout, stderr) =
        tollway(&["sim", "run", &a, "--runs", "1", "--days", "3", "--quiet", "--out", out.to_str().unwrap_or_default()]);
    assert!(ok, "{stderr}");
    let row = stdout.lines().nth(1).unwrap_or_default();
    assert!(row.contains(" no attacker "), "{stdout}");
    let json = std::fs::read_to_string(out.join("summary.json")).unwrap_or_default();
    assert!(json.contains("\"attacker_profit_usd\": null"), "{json}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A report whose writing was cut short (a signal, an error) left partial
/// files without index.html, and nothing said the run had not finished:
/// the CSVs and summary.json looked like a report's. Now INCOMPLETE.txt is
/// there from the moment the writing starts until index.html is written.
/// A run stopped while it simulates leaves the earlier report whole, and
/// the finished runs' CSVs in runs-in-progress/ with a note of its own.
/// The writing is cut short here by a directory where a CSV goes.
#[test]
fn a_report_cut_short_while_written_says_it_is_incomplete() {
    use std::io::Read;
    use std::time::Duration;
    let dir = temp_dir("sim-cut-short");
    let a = small_scenario(&dir, "hybrid");
    let out = dir.join("out");
    let out_arg = out.to_str().unwrap_or_default();
    let note = out.join("INCOMPLETE.txt");
    let args = ["sim", "run", &a, "--runs", "1", "--days", "200", "--seed", "1", "--quiet", "--out", out_arg];
    let spawn = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollway"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    // SIGTERM, which ends the run as Ctrl-C's SIGINT does: a suite started
    // as a background job (`cmd &` in a script) passes SIGINT on ignored,
    // and the run it was sent to then went on for its whole 100 runs of
    // ten years while this test waited. And a run that outlives the
    // signal fails the test within a minute rather than holding it.
    let interrupt = |child: &mut std::process::Child| {
        let sent = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()));
        let started = std::time::Instant::now();
        let status = loop {
            match child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
                Some(status) => break status,
                None if started.elapsed() > Duration::from_secs(60) => {
                    let _ = child.kill();
                    panic!("the run went on for a minute after SIGTERM");
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        assert!(!status.success(), "{stderr}");
    };
    let (ok, _, stderr) = tollway(&args);
    assert!(ok && out.join("index.html").is_file(), "{stderr}");
    assert!(!note.exists(), "a whole report is not incomplete");

    // Stopped while simulating: the earlier report stays whole, and the
    // runs' own directory says what it holds.
    let long = small_scenario(&dir, "burn-and-mint");
    let staged_note = out.join("runs-in-progress").join("INCOMPLETE.txt");
    let earlier = std::fs::read(out.join("index.html")).unwrap_or_default();
    let mut child = spawn(&["sim", "run", &long, "--runs", "100", "--days", "3650", "--quiet", "--out", out_arg]);
    let started = std::time::Instant::now();
    while !staged_note.exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    interrupt(&mut child);
    assert_eq!(std::fs::read(out.join("index.html")).unwrap_or_default(), earlier, "the earlier report stays whole");
    assert!(!note.exists(), "the earlier report is not incomplete");
    let said = std::fs::read_to_string(&staged_note).unwrap_or_else(|e| panic!("no {}: {e}", staged_note.display()));
    assert!(said.contains("cut short") && said.contains("is an earlier run's, whole"), "{said}");
    let (ok, _, stderr) = tollway(&args);
    assert!(ok && out.join("index.html").is_file() && !note.exists(), "{stderr}");
    assert!(!out.join("runs-in-progress").exists(), "moved into the report");

    // Cut short while writing: a directory where a CSV goes (kept by the
    // clearing of the earlier report, as another file beside it is).
    let csv = out.join("hybrid").join("seed-1.csv");
    std::fs::remove_file(&csv).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(csv.join("in-the-way")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(out.join("hybrid").join("notes.txt"), "mine").unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, stderr) = tollway(&args);
    assert!(!ok && stderr.contains("moving") && stderr.contains("is incomplete"), "{stderr}");
    assert!(!out.join("index.html").exists());
    let said = std::fs::read_to_string(&note).unwrap_or_else(|e| panic!("no {}: {e}", note.display()));
    assert!(said.contains("This report is incomplete") && said.contains("cut short"), "{said}");

    // The next run replaces it, and says nothing once it is whole.
    std::fs::remove_dir_all(&csv).unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, stderr) = tollway(&args);
    assert!(ok && out.join("index.html").is_file() && csv.is_file(), "{stderr}");
    assert!(!note.exists(), "{} outlived a whole report", note.display());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every run's rows were kept until the last run ended, and nothing was
/// written before: thousands of runs held GBs, and an OOM kill or a
/// Ctrl-C late on lost every finished run. Now each run's CSV is written
/// as it ends, into runs-in-progress/. Here the second run (a sweep's
/// value) is a century long: the first run's CSV is on disk, whole, while
/// it simulates, and stays there when the run is stopped. And the files
/// are the same bytes on one thread as on two, each what the whole run's
/// rows give.
#[test]
fn the_runs_that_finished_are_on_disk_before_the_last_one_ends() {
    use std::time::Duration;
    let dir = temp_dir("sim-streamed");
    let a = small_scenario(&dir, "hybrid");
    let out = dir.join("out");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollway"))
        .args(["sim", "run", &a, "--runs", "1", "--seed", "3", "--threads", "1", "--quiet"])
        .args(["--sweep", "run.days=10,36500", "--out", out.to_str().unwrap_or_default()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let csv = out.join("runs-in-progress").join("hybrid_run_days_10").join("seed-3.csv");
    let started = std::time::Instant::now();
    let lines = loop {
        let lines = std::fs::read_to_string(&csv).map(|t| t.lines().count()).unwrap_or(0);
        if lines == 11 || started.elapsed() > Duration::from_secs(60) {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let still_running = child.try_wait().unwrap_or_else(|e| panic!("{e}")).is_none();
    let sent = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    assert!(sent.is_ok_and(|s| s.success()));
    assert_eq!(lines, 11, "{}: the first run's header and 10 days, written while the second run simulates", csv.display());
    assert!(still_running, "the century-long run had ended: the test shows nothing");
    assert_eq!(std::fs::read_to_string(&csv).map(|t| t.lines().count()).unwrap_or(0), 11, "kept after the signal");
    let note = std::fs::read_to_string(out.join("runs-in-progress").join("INCOMPLETE.txt")).unwrap_or_default();
    assert!(note.contains("the CSVs of the runs that had finished"), "{note}");

    // The same bytes on one thread and on two, and each CSV the whole
    // run's rows.
    let text = std::fs::read_to_string(&a).unwrap_or_else(|e| panic!("{e}"));
    let scenario = tollway_sim::scenario::Scenario::from_toml(&text)
        .and_then(|s| s.with_override("run.days", "40"))
        .unwrap_or_else(|e| panic!("{e}"));
    let outs = [dir.join("one"), dir.join("two")];
    for (threads, out) in ["1", "2"].iter().zip(&outs) {
        let (ok, _, stderr) = tollway(&[
            "sim", "run", &a, "--runs", "3", "--days", "40", "--seed", "5", "--threads", threads, "--quiet", "--out",
            out.to_str().unwrap_or_default(),
        ]);
        assert!(ok, "{stderr}");
    }
    for seed in 5..8 {
        let run = tollway_sim::engine::Sim::new(&scenario, seed)
            .and_then(|sim| sim.run(seed, &|_| {}))
            .unwrap_or_else(|e| panic!("{e}"));
        let want = tollway_sim::report::run_csv(&run);
        for out in &outs {
            let path = out.join("hybrid").join(format!("seed-{seed}.csv"));
            let got = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(got == want, "{} is not the run's rows", path.display());
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(&outs[0])
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default();
    names.sort();
    assert!(names.iter().any(|n| n == "index.html") && names.iter().any(|n| n == "price.svg"), "{names:?}");
    for name in names.iter().filter(|n| !n.starts_with("hybrid")) {
        let (one, two) = (std::fs::read(outs[0].join(name)).ok(), std::fs::read(outs[1].join(name)).ok());
        assert!(one.is_some() && one == two, "{name} differs between one thread and two");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--out` naming a file, or a path under one, failed with only the
/// system's "File exists" or "Not a directory": it says what is wrong and
/// what to do now, before simulating, and leaves the file alone.
#[test]
fn an_out_that_is_a_file_is_refused_saying_what_to_do() {
    let dir = temp_dir("sim-out-file");
    let file = dir.join("report.txt");
    std::fs::write(&file, "mine").unwrap_or_else(|e| panic!("{e}"));
    let out = file.to_str().unwrap_or_default();
    let (ok, _, stderr) = tollway(&["sim", "run", "hybrid", "--runs", "1", "--days", "1", "--quiet", "--out", out]);
    assert!(!ok && stderr.contains("a file of that name is there") && stderr.contains("give --out a directory"), "{stderr}");
    assert!(!stderr.contains("simulating"), "refused before simulating: {stderr}");
    let under = file.join("out");
    let (ok, _, stderr) =
        tollway(&["sim", "run", "hybrid", "--runs", "1", "--days", "1", "--quiet", "--out", under.to_str().unwrap_or_default()]);
    assert!(!ok && stderr.contains(&format!("{out} is a file")) && stderr.contains("give --out a path"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).ok().as_deref(), Some("mine"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scenario's CSVs go to a directory named after it, and a name longer
/// than a file system's 255 bytes was found unusable only after the
/// whole simulation, the earlier report in `--out` already cleared away:
/// both lost. Refused before simulating, naming the key to shorten.
#[test]
fn a_name_too_long_for_a_directory_is_refused_before_simulating() {
    let dir = temp_dir("sim-long-name");
    let path = small_scenario(&dir, "burn-and-mint");
    let out = dir.join("out");
    let args = |scenario: &str| ["sim", "run", scenario, "--out", out.to_str().unwrap_or_default(), "--days", "2", "--runs", "1", "--quiet"].map(String::from);
    let (ok, _, stderr) = tollway(&args(&path).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let long = dir.join("long.toml");
    let name = "x".repeat(260);
    std::fs::write(&long, text.replace("name = \"burn-and-mint\"", &format!("name = \"{name}\""))).unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, stderr) = tollway(&args(long.to_str().unwrap_or_default()).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && stderr.contains("`name`") && !stderr.contains("simulating"), "{stderr}");
    assert!(out.join("index.html").is_file() && out.join("burn-and-mint").join("seed-1.csv").is_file(), "the earlier report is whole");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The default `--out` joined every scenario's name with `-vs-`, a
/// sweep's values' names too: a sweep of five values of
/// `demand.reference_price_usd_per_gb` made a directory name of 290
/// bytes and failed ("File name too long") whatever was run, as did a
/// comparison of six long names. A sweep's report goes to
/// `sim-out/<scenario>_<key>`, and a comparison's joined names are cut
/// to a length any file system takes.
#[test]
fn the_default_output_directory_fits_a_file_system() {
    let dir = temp_dir("sim-default-out");
    let (ok, _, stderr) = common::tollway_in(
        &dir,
        &["sim", "run", "burn-and-mint", "--days", "1", "--runs", "1", "--quiet", "--sweep", "demand.reference_price_usd_per_gb=0.5,0.6,0.7,0.8,0.9"],
    );
    assert!(ok, "{stderr}");
    assert!(dir.join("sim-out/burn-and-mint_demand_reference_price_usd_per_gb/index.html").is_file(), "{stderr}");
    let text = std::fs::read_to_string(small_scenario(&dir, "hybrid")).unwrap_or_default();
    let files: Vec<String> = (0..6)
        .map(|i| {
            let path = dir.join(format!("long{i}.toml"));
            let name = format!("a design with a long and descriptive name, number {i}");
            std::fs::write(&path, text.replace("name = \"hybrid\"", &format!("name = \"{name}\""))).unwrap_or_else(|e| panic!("{e}"));
            path.to_string_lossy().into_owned()
        })
        .collect();
    let args: Vec<&str> =
        ["sim", "compare", "--days", "1", "--runs", "1", "--quiet"].into_iter().chain(files.iter().map(String::as_str)).collect();
    let (ok, stdout, stderr) = common::tollway_in(&dir, &args);
    assert!(ok, "{stderr}");
    let report = stdout.lines().find_map(|l| l.strip_prefix("report: ")).unwrap_or_default();
    assert!(report.starts_with("sim-out/a_design_with_a_long_and_descriptive_name__number_0-vs-"), "{stdout}");
    assert!(dir.join(report).is_file(), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}


/// A report's every file (the CSVs, summary.json, index.html, each chart's
/// PNG and SVG) is the bytes it was when every run's chart points and
/// operator profits stayed in memory to the end: pinned from that code,
/// for a scenario of several runs on two threads and for a sweep.
#[test]
fn a_reports_files_are_the_pinned_bytes() {
    let dir = temp_dir("sim-pinned");
    let a = small_scenario(&dir, "hybrid");
    let b = small_scenario(&dir, "burn-and-mint");
    let runs = dir.join("runs");
    let (ok, _, stderr) = tollway(&[
        "sim", "run", &a, "--runs", "4", "--days", "30", "--seed", "7", "--threads", "2", "--quiet", "--out",
        runs.to_str().unwrap_or_default(),
    ]);
    assert!(ok, "{stderr}");
    let sweep = dir.join("sweep");
    let (ok, _, stderr) = tollway(&[
        "sim", "run", &b, "--runs", "2", "--days", "25", "--seed", "3", "--threads", "2", "--quiet", "--sweep",
        "population.operators=100,140", "--out", sweep.to_str().unwrap_or_default(),
    ]);
    assert!(ok, "{stderr}");
    let digest = format!("runs:\n{}sweep:\n{}", digest_of_files(&runs), digest_of_files(&sweep));
    let want = "\
        runs:\n\
        .tollway-sim-report bc44bd715fc2e7c8\n\
        capacity.png 45b2f8e851695410\n\
        capacity.svg cdde128781fcf745\n\
        consumer_price.png 3732a0087b44f4fe\n\
        consumer_price.svg 231f99198879cdfd\n\
        hybrid/seed-10.csv 6217179f6cbe8612\n\
        hybrid/seed-7.csv 2c8b72399b47178e\n\
        hybrid/seed-8.csv 988b12566452d783\n\
        hybrid/seed-9.csv de02c3e37bad7c36\n\
        index.html 322fbf6d5075a851\n\
        liquidity.png e8cbdaf09f98b3a6\n\
        liquidity.svg c87eb4d572cdc1fc\n\
        mint_burn.png d6a1013c181ebd99\n\
        mint_burn.svg b5999be8b5aa5d78\n\
        nodes.png ffe3f10c2fb77555\n\
        nodes.svg 19c4e38e54e572b6\n\
        operator_profit.png 3d5b95e0d20e199c\n\
        operator_profit.svg c0adbb457a9c966e\n\
        price.png 11972d77d015b1cd\n\
        price.svg 2912742070ad4129\n\
        summary.json e72f70c7e4818a2d\n\
        supply.png f63ce4e3d6231073\n\
        supply.svg 751bd31778287f1e\n\
        sweep:\n\
        .tollway-sim-report bc44bd715fc2e7c8\n\
        burn-and-mint_population_operators_100/seed-3.csv 6705c1a5c8796e45\n\
        burn-and-mint_population_operators_100/seed-4.csv 4213c50af1c4dc1b\n\
        burn-and-mint_population_operators_140/seed-3.csv 7e4dc15a1577b278\n\
        burn-and-mint_population_operators_140/seed-4.csv b960663ee6115969\n\
        capacity.png 03a01350c77da656\n\
        capacity.svg c94fc425afe8bc7d\n\
        consumer_price.png 8504cf3e22d3ad84\n\
        consumer_price.svg 86e5f85f3991d1f1\n\
        index.html c014ae6ddc29eaaf\n\
        liquidity.png fe7953ef16d0b641\n\
        liquidity.svg bef94ba9af7b90de\n\
        mint_burn.png 4732b670ebbfd485\n\
        mint_burn.svg 5b6f6dd2fa344b26\n\
        nodes.png 47a30eb91234de40\n\
        nodes.svg f42f1cbed8f0b727\n\
        operator_profit.png d84275dd27f643ab\n\
        operator_profit.svg 8db953fb1dfeddbe\n\
        price.png 0d28129972779666\n\
        price.svg 65b89abc08143602\n\
        summary.json e66a429ae50fa903\n\
        supply.png 7b548af6414751e3\n\
        supply.svg 97478981a7f618e3\n\
    ";
    assert!(digest == want, "the report's files changed:\n{digest}");
    let _ = std::fs::remove_dir_all(&dir);
}
