//! End-to-end: the real `tollway` binary, started as a user starts it.

mod common;

use common::tollway;

#[test]
fn demo_runs_the_economy_and_slashes_the_liar() {
    let (ok, stdout, stderr) = tollway(&["demo", "--epochs", "4"]);
    assert!(ok, "demo failed: {stderr}");
    // 45 % of its 2,000 TWY bond, and 45 % of its first epoch's rewards,
    // still vesting (ADR 0017).
    assert!(stdout.contains("SLASH liar 962.050356 TWY (rho 10.0)"), "{stdout}");
    // The oracle that reported the liar's claim shares its 45 % slash.
    assert!(stdout.contains("SLASH oracle-5 2250 TWY (vouched for liar)"), "{stdout}");
    // Which leaves it below the oracle's minimum: it retires.
    assert!(stdout.contains("stake now 2750 TWY, below the 5000 TWY an oracle needs: retired from epoch"), "{stdout}");
    assert!(stdout.contains("checked every epoch"), "{stdout}");
    // The supply line's burn is the summary's and the token fees: two
    // totals of one name, unexplained, read as a bookkeeping error.
    let amount_after = |label: &str| -> f64 {
        let rest = stdout.split(label).nth(1).unwrap_or_default();
        rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no {label:?} in {stdout}"))
    };
    let fees = amount_after("the burn above and ");
    assert!(fees > 0.0, "{stdout}");
    assert!((amount_after(", burned ") + fees - amount_after(" - burned ")).abs() < 1e-6, "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.trim_start().starts_with(char::is_numeric)).count(), 4, "{stdout}");
}

#[test]
fn a_reader_that_stops_early_ends_the_demo_quietly() {
    // `tollway demo | head -1`: the pipe closes while the demo still prints
    // its epochs. It must stop at once, with no panic message.
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollway"))
        .args(["demo", "--epochs", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start tollway: {e}"));
    let mut first = String::new();
    {
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        BufReader::new(stdout).read_line(&mut first).unwrap_or_else(|e| panic!("{e}"));
    } // the reader is dropped here: the pipe is closed
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(first.starts_with("Tollway demo"), "{first}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(141), "the status a shell shows for a closed pipe");
}

#[test]
fn demo_runs_with_one_node_a_region_and_with_the_parameters_it_is_given() {
    // The summary compared the farm with US-1, which one node a region
    // does not have: a panic after the last epoch.
    let (ok, stdout, stderr) = tollway(&["demo", "--epochs", "2", "--nodes-per-region", "1"]);
    assert!(ok && !stderr.contains("panicked"), "{stderr}");
    assert!(stdout.contains("honest US-0"), "{stdout}");
    // Past the epoch its consumers' $500 runs out, a row says so: paid
    // USD fell to 0.00 with no word of why.
    let (ok, stdout, stderr) = tollway(&["demo", "--epochs", "62", "--nodes-per-region", "1", "--consumers", "2"]);
    assert!(ok && stdout.contains("2 of 2 consumers out of USD"), "{stdout}{stderr}");

    let dir = std::env::temp_dir().join(format!("tollway-demo-params-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let (_, defaults, _) = tollway(&["params", "show"]);
    let write = |name: &str, from: &str, to: &str| {
        assert!(defaults.contains(from), "{from}");
        let path = dir.join(name);
        std::fs::write(&path, defaults.replace(from, to)).unwrap_or_else(|e| panic!("{e}"));
        path.to_str().unwrap_or_default().to_string()
    };
    // Stakes above the story's own: its accounts are funded to match.
    let stakes = write("stakes.toml", "min_oracle_stake_twy = 5000", "min_oracle_stake_twy = 6000");
    let (ok, _, stderr) = tollway(&["demo", "--epochs", "2", "--params", &stakes]);
    assert!(ok, "{stderr}");
    // Fees its accounts cannot pay: the ledger's refusal, not a panic.
    let fees = write("fees.toml", "min_fee_twy = 0.001", "min_fee_twy = 20");
    let (ok, _, stderr) = tollway(&["demo", "--epochs", "2", "--params", &fees]);
    assert!(!ok && !stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("register-node rejected: insufficient token balance"), "{stderr}");
    // Channels its consumers cannot open (a fee above the $500 each
    // holds, an escrow below the minimum): it ran with nobody paying.
    for (name, from, to) in [
        ("usd-fee.toml", "min_fee_usd = 0.0001", "min_fee_usd = 1000"),
        ("escrow.toml", "min_channel_escrow_usd = 0.01", "min_channel_escrow_usd = 100"),
    ] {
        let path = write(name, from, to);
        let (ok, stdout, stderr) = tollway(&["demo", "--epochs", "2", "--params", &path]);
        assert!(!ok && stderr.contains("consumer-0: open-channel rejected: "), "{name}: {stdout}{stderr}");
    }
    // A file that is not there is named.
    let (ok, _, stderr) = tollway(&["demo", "--params", "no-such-params.toml"]);
    assert!(!ok && stderr.contains("reading no-such-params.toml"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_is_deterministic() {
    let (_, a, _) = tollway(&["demo", "--epochs", "3", "--nodes-per-region", "2"]);
    let (_, b, _) = tollway(&["demo", "--epochs", "3", "--nodes-per-region", "2"]);
    assert_eq!(a, b);
}

#[test]
fn bad_flags_and_bad_parameter_files_get_clear_errors() {
    let (ok, _, stderr) = tollway(&["demo", "--epochs", "0"]);
    assert!(!ok);
    assert!(stderr.contains("--epochs must be between 1 and 10000, not 0"), "{stderr}");

    let dir = std::env::temp_dir().join(format!("tollway-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let (_, defaults, _) = tollway(&["params", "show"]);
    let good = dir.join("good.toml");
    std::fs::write(&good, &defaults).unwrap_or_else(|e| panic!("{e}"));
    let (ok, stdout, stderr) = tollway(&["params", "check", good.to_str().unwrap_or_default()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ok (epoch 3600 s, 8760 epochs a year"), "{stdout}");

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, defaults.replace("oracle_deviation_tolerance = 0.3", "oracle_deviation_tolerance = 1.5"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, stderr) = tollway(&["params", "check", bad.to_str().unwrap_or_default()]);
    assert!(!ok);
    assert!(stderr.contains("parameter `measurement.oracle_deviation_tolerance`: 1.5 is outside [0, 1]"), "{stderr}");

    let zero = dir.join("zero.toml");
    std::fs::write(&zero, defaults.replace("unbonding = \"7d\"", "unbonding = \"0s\"")).unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, stderr) = tollway(&["params", "check", zero.to_str().unwrap_or_default()]);
    assert!(!ok);
    assert!(stderr.contains("parameter `time.unbonding`"), "{stderr}");

    // A mistyped node id is refused before any chain is asked (none runs).
    let (ok, _, stderr) = tollway(&["connect", "--exit", "abc123", "--api", "http://127.0.0.1:9"]);
    assert!(!ok);
    assert!(stderr.contains("invalid value 'abc123' for '--exit <NODE>': not a node id"), "{stderr}");
    // So are a hop window of no time and a first-bytes wait of more than 10 s.
    let exit = "11".repeat(32);
    for (flag, value) in [("--hop-secs", "0"), ("--first-bytes-wait-ms", "10001")] {
        let (ok, _, stderr) = tollway(&["connect", "--exit", &exit, flag, value, "--api", "http://127.0.0.1:9"]);
        assert!(!ok && stderr.contains(&format!("invalid value '{value}' for '{flag}")), "{stderr}");
    }

    // Payment terms a client would refuse are refused when the node starts.
    let home = dir.join("node");
    let home = home.to_str().unwrap_or_default();
    for (window, interval) in [("512", "1024"), ("2048", "0"), ("2048", "32")] {
        let args = ["node", "run", "--home", home, "--key", home, "--credit-window-kib", window, "--receipt-interval-kib", interval];
        let (ok, _, stderr) = tollway(&args);
        assert!(!ok);
        let want = format!(
            "--receipt-interval-kib {interval} with --credit-window-kib {window}: \
             the receipt interval must be at least 64 KiB and below the credit window"
        );
        assert!(stderr.contains(&want), "{stderr}");
    }
    // So is a price no client can pay a node (its receipts could not
    // grow), before its registration's fee is spent.
    for price in ["0", "0.000016"] {
        let args = ["wallet", "--api", "http://127.0.0.1:9", "register-node", "--country", "DE", "--addr", "203.0.113.7", "--capacity-bps", "1000000", "--price-usd-per-gib", price];
        let (ok, _, stderr) = tollway(&args);
        let want = format!("--price-usd-per-gib {price}: clients cannot pay a node less than $0.000017 per GiB");
        assert!(!ok && stderr.contains(&want) && stderr.contains("the least is $0.001024"), "{stderr}");
    }
    // A negative price reaches the price's parser, which says what is
    // wrong (clap took "-1" for an unknown flag).
    let args = ["wallet", "--api", "http://127.0.0.1:9", "register-node", "--country", "DE", "--addr", "203.0.113.7", "--capacity-bps", "1000000", "--price-usd-per-gib", "-1"];
    let (ok, _, stderr) = tollway(&args);
    assert!(!ok && stderr.contains("--price-usd-per-gib") && stderr.contains("\"-1\" is not an amount of USD"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The proxy's password can come from the environment, out of `ps` and
/// the shell's history.
#[test]
fn the_proxy_password_may_come_from_the_environment() {
    let exit = "11".repeat(32);
    let args = ["connect", "--exit", &exit, "--user", "me", "--listen", "0.0.0.0:1", "--api", "http://127.0.0.1:9"];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollway"))
        .args(args)
        .env("TOLLWAY_PROXY_PASSWORD", "s3cret")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Past the flags and the password check; it stops at the chain, which
    // does not run.
    assert!(!out.status.success() && !stderr.contains("--password") && !stderr.contains("s3cret"), "{stderr}");
    let (ok, _, stderr) = tollway(&args);
    assert!(!ok && stderr.contains("--password"), "{stderr}");
}

#[test]
fn a_node_cannot_be_both_hops_of_a_route() {
    let node = "11".repeat(32);
    let (ok, _, stderr) = tollway(&["connect", "--relay", &node, "--exit", &node]);
    assert!(!ok);
    assert!(stderr.contains("node 11111111 is both the relay and an exit: a route's two hops must be different nodes"), "{stderr}");
}

/// Two `node run`s on one home both started, and each wrote its own
/// receipts.json over the other's.
#[test]
fn a_second_node_run_on_the_same_home_is_refused() {
    let dir = std::env::temp_dir().join(format!("tollway-cli-node-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let home = dir.join("node");
    let home_str = home.to_string_lossy().into_owned();
    let (ok, _, stderr) = tollway(&["node", "init", "--home", &home_str]);
    assert!(ok, "{stderr}");
    let run = ["node", "run", "--home", &home_str, "--key", "/nonexistent.key", "--api", "http://127.0.0.1:1"];
    let held = std::fs::File::create(home.join("node.lock")).unwrap();
    held.try_lock().unwrap();
    let (ok, _, stderr) = tollway(&run);
    assert!(!ok && stderr.contains("is in use by another `tollway node run`"), "{stderr}");
    drop(held);
    // Another test's child forked in the moment before its exec shares
    // the lock's open file (until the exec closes it): wait until the
    // lock is free for anyone.
    let free = (0..200).any(|_| {
        let probe = std::fs::File::open(home.join("node.lock")).unwrap();
        let got = probe.try_lock().is_ok();
        if !got {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        got
    });
    assert!(free, "the lock is still held 2 s after the test dropped it");
    let (ok, _, stderr) = tollway(&run);
    assert!(!ok && !stderr.contains("in use") && stderr.contains("nonexistent.key"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `node receipts` on a node that has served no paid traffic failed
/// ("error: … holds no receipts yet"), and so did a mistyped home, with
/// the same words. Now the first is an empty list and the second names
/// what is missing.
#[test]
fn receipts_of_a_fresh_node_are_an_empty_list_and_a_wrong_home_is_an_error() {
    let dir = std::env::temp_dir().join(format!("tollway-cli-node-receipts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let home = dir.join("node");
    let home_str = home.to_string_lossy().into_owned();
    let (ok, _, stderr) = tollway(&["node", "init", "--home", &home_str]);
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = tollway(&["node", "receipts", "--home", &home_str]);
    assert!(ok && stdout.trim() == "no receipts yet (no paid traffic served)", "{stdout} {stderr}");
    let (ok, stdout, stderr) = tollway(&["node", "receipts", "--home", &home_str, "--json"]);
    assert!(ok && stdout.is_empty(), "{stdout} {stderr}");
    let typo = dir.join("nodee").to_string_lossy().into_owned();
    let (ok, _, stderr) = tollway(&["node", "receipts", "--home", &typo]);
    assert!(!ok && stderr.contains(&format!("{typo} has no tls.key: run `tollway node init --home {typo}` first")), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `node receipts` against a chain that takes connections and never
/// answers waited 75 s on its first lookup, silently. It says within a few
/// seconds what it waits for, and gives up on the chain within
/// `INTERACTIVE_ANSWER_WITHIN` (10 s), listing the receipts with their
/// settle command and naming the request the chain did not answer.
#[test]
fn receipts_against_a_chain_that_never_answers_say_what_they_wait_for() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    use tollway_types::tx::Receipt;
    let dir = std::env::temp_dir().join(format!("tollway-cli-receipts-hung-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let home = dir.join("node").to_string_lossy().into_owned();
    let (ok, _, stderr) = tollway(&["node", "init", "--home", &home]);
    assert!(ok, "{stderr}");
    let client = tollway_types::SigningKey::from_label("client");
    let receipt = Receipt {
        chain_id: "c".into(),
        channel: tollway_types::Hash32([7; 32]),
        cumulative_usd: tollway_types::Usd(5),
        cumulative_bytes: 9,
    };
    let book = serde_json::json!({ "receipts": [receipt.sign(&client)] });
    std::fs::write(dir.join("node").join("receipts.json"), book.to_string()).unwrap_or_else(|e| panic!("{e}"));
    // Takes every connection, reads nothing, answers nothing.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let api = format!("http://{}", hung.local_addr().unwrap_or_else(|e| panic!("{e}")));
    std::thread::spawn(move || {
        let held: Vec<_> = hung.incoming().take(16).collect();
        std::thread::sleep(Duration::from_secs(600));
        drop(held);
    });
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollway"))
        .args(["node", "receipts", "--home", &home, "--api", &api])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start tollway: {e}"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let said: Vec<(Duration, String)> = BufReader::new(stderr).lines().map_while(Result::ok).map(|l| (started.elapsed(), l)).collect();
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && took < Duration::from_secs(20), "{took:?}: {stdout} {said:?}");
    let channel = "07".repeat(32);
    let waiting = format!("waiting for the chain API at {api} to answer GET /v1/channels/{channel}");
    let told = said.iter().find(|(_, l)| l.starts_with(&waiting));
    assert!(told.is_some_and(|(at, _)| *at < Duration::from_secs(5)), "not told within 5 s: {said:?}");
    let gave_up = format!("the chain API at {api} did not answer GET /v1/channels/{channel} within 10 s");
    assert!(said.iter().any(|(_, l)| l.starts_with("warning: which receipts the chain has settled is unknown") && l.contains(&gave_up)), "{said:?}");
    assert!(stdout.contains("if the chain has not settled it: tollway wallet settle-channel "), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `connect --exit N --exit N` made two routes to one node, on one channel
/// that a node serves one session at a time.
#[test]
fn an_exit_given_twice_is_refused() {
    let (node, other) = ("11".repeat(32), "22".repeat(32));
    let (ok, _, stderr) = tollway(&["connect", "--exit", &node, "--exit", &other, "--exit", &node]);
    assert!(!ok);
    assert!(stderr.contains("--exit 11111111 is given twice"), "{stderr}");
}

/// `connect --exit ID`, ID no node, said "account 8fbae2d4 is not a
/// registered node on this chain: run `tollway wallet register-node`
/// first": an operator's advice, to a client who mistyped an exit.
#[test]
fn an_exit_that_is_no_node_is_refused_with_where_to_find_nodes() {
    let (dir, home) = initialised_chain("unknown-exit");
    let chain = common::ChainProcess::start(&dir, std::path::Path::new(&home));
    let key = dir.join("client.key").to_string_lossy().into_owned();
    let (ok, _, stderr) = tollway(&["keys", "new", "--out", &key]);
    assert!(ok, "{stderr}");
    let nobody = "33".repeat(32);
    let (ok, _, stderr) =
        tollway(&["connect", "--key", &key, "--api", &chain.api, "--exit", &nobody, "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    let why = format!("node {} is not registered on this chain: `tollway wallet nodes` lists the active ones", &nobody[..8]);
    assert!(stderr.contains(&why) && !stderr.contains("register-node"), "{stderr}");
    drop(chain);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_node_rate_cap_out_of_range_or_not_a_number_is_refused() {
    for bad in ["0", "2000000", "fast"] {
        let (ok, _, stderr) = tollway(&["node", "run", "--home", "nowhere", "--key", "none.key", "--max-rate-mbps", bad]);
        assert!(!ok);
        assert!(stderr.contains(&format!("invalid value '{bad}' for '--max-rate-mbps <MBPS>'")), "{stderr}");
    }
}

#[test]
fn a_proxy_others_can_reach_needs_a_password() {
    let node = "11".repeat(32);
    for listen in ["0.0.0.0:1080", "192.168.1.20:1080", "[::]:1080"] {
        let (ok, _, stderr) = tollway(&["connect", "--exit", &node, "--listen", listen]);
        assert!(!ok);
        let why = format!("--listen {listen}: anyone who reaches this address could use the proxy and spend your channels");
        assert!(stderr.contains(&why), "{stderr}");
    }
    // With a password it gets past that check (to the key file, here missing).
    let (ok, _, stderr) = tollway(&[
        "connect", "--exit", &node, "--listen", "0.0.0.0:1080", "--user", "u", "--password", "p", "--key", "/nonexistent.key",
    ]);
    assert!(!ok);
    assert!(!stderr.contains("anyone who reaches"), "{stderr}");
    assert!(stderr.contains("nonexistent.key"), "{stderr}");
}

#[test]
fn connect_needs_exits_or_pick_and_filters_only_go_with_pick() {
    let node = "11".repeat(32);
    let (ok, _, stderr) = tollway(&["connect"]);
    assert!(!ok);
    assert!(stderr.contains("--exit <NODE>") && stderr.contains("required"), "{stderr}");
    let (ok, _, stderr) = tollway(&["connect", "--exit", &node, "--pick", "2"]);
    assert!(!ok);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let (ok, _, stderr) = tollway(&["connect", "--exit", &node, "--region", "europe"]);
    assert!(!ok);
    let why = "--region, --country, the other filters and --open-channels choose among the market's nodes for --pick N";
    assert!(stderr.contains(why), "{stderr}");
    let (ok, _, stderr) = tollway(&["connect", "--exit", &node, "--open-channels", "$2"]);
    assert!(!ok);
    assert!(stderr.contains(why), "{stderr}");
}

/// A fresh temporary directory (`tollway-cli-NAME-PID`) with a chain
/// initialised in its `chain/`, and that home's path.
fn initialised_chain(name: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("tollway-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let home = dir.join("chain").to_string_lossy().into_owned();
    let (ok, _, stderr) = tollway(&["chain", "init", "--home", &home]);
    assert!(ok, "{stderr}");
    (dir, home)
}

/// `chain init --force` with a mistyped argument deleted the chain it was
/// to replace before it read the argument; and `chain.toml` values of 0
/// made a chain that takes txs and includes none.
#[test]
fn chain_init_checks_everything_before_replacing_a_chain() {
    let (dir, home) = initialised_chain("init");
    let home = home.as_str();
    let files = ["genesis.json", "node.key", "chain.toml", "chain.redb"];
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(dir.join("chain").join(f)).unwrap_or_default()).collect();
    for bad in [["--alloc", "garbage=1TWY"], ["--param", "nope=1"]] {
        let (ok, _, stderr) = tollway(&["chain", "init", "--home", home, "--force", bad[0], bad[1]]);
        assert!(!ok, "{stderr}");
        let after: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(dir.join("chain").join(f)).unwrap_or_default()).collect();
        assert!(after == before, "{bad:?} changed the chain's files: {stderr}");
    }
    let toml = dir.join("chain").join("chain.toml");
    let text = std::fs::read_to_string(&toml).unwrap_or_default();
    let zero: String = text.lines().map(|l| if l.starts_with("max_block_txs") { "max_block_txs = 0\n".to_string() } else { format!("{l}\n") }).collect();
    std::fs::write(&toml, zero).unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, stderr) = tollway(&["chain", "run", "--home", home]);
    assert!(!ok && stderr.contains("max_block_txs = 0: it must be at least 1"), "{stderr}");
    // A home with only a key of its own is not initialised over, even with
    // --force: `node.key` is also what users call their account's key, and
    // --force replaced it (and lost what it held).
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(dir.join("chain").join("node.key"), other.join("node.key")).unwrap_or_else(|e| panic!("{e}"));
    let key_before = std::fs::read(other.join("node.key")).unwrap_or_default();
    for force in [&[][..], &["--force"][..]] {
        let mut args = vec!["chain", "init", "--home", other.to_str().unwrap_or_default()];
        args.extend_from_slice(force);
        let (ok, _, stderr) = tollway(&args);
        assert!(!ok && stderr.contains("holds a key that is not the sequencer key of a chain there"), "{stderr}");
        assert!(!other.join("genesis.json").exists(), "a half-written home");
        assert_eq!(std::fs::read(other.join("node.key")).unwrap_or_default(), key_before);
    }
    // The chain's own sequencer key is replaced with its chain.
    let (ok, _, stderr) = tollway(&["chain", "init", "--home", home, "--force"]);
    assert!(ok, "{stderr}");
    // Amounts that would have been read wrong, and a genesis time in
    // milliseconds or next week (no epoch would end until then).
    let fresh = dir.join("fresh");
    let fresh = fresh.to_str().unwrap_or_default();
    let now_secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (in_ms, next_week) = ((now_secs * 1000).to_string(), (now_secs + 7 * 86_400).to_string());
    let alloc = format!("{}=1000TWY,100TWY", "11".repeat(32));
    for (flag, value, why) in [
        ("--pool", "1000000TWY", "the pool needs both sides"),
        ("--pool", "1000TWY,10USD,stake:5TWY", "a pool holds TWY and USD, no stake"),
        ("--alloc", alloc.as_str(), "\"100TWY\": this currency given twice"),
        ("--genesis-time", in_ms.as_str(), "it is in Unix seconds"),
        ("--genesis-time", next_week.as_str(), "s ahead of now"),
    ] {
        let (ok, _, stderr) = tollway(&["chain", "init", "--home", fresh, flag, value]);
        assert!(!ok && stderr.contains(why), "{flag} {value}: {stderr}");
        assert!(!std::path::Path::new(fresh).exists(), "{flag} {value} wrote a home");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Ctrl-C on `chain run` panicked in the block loop ("a Tokio 1.x context
/// was found, but it is being shutdown") and left the store for redb to
/// repair at the next open. Now the loop finishes its block, the node says
/// it stopped, and the store closes cleanly.
#[test]
fn ctrl_c_stops_a_chain_cleanly() {
    use std::io::{BufRead, BufReader, Read};
    let (dir, home) = initialised_chain("ctrl-c");
    let home = home.as_str();
    // Ctrl-C, and SIGTERM (`systemctl stop`, `docker stop`): it only
    // heeded Ctrl-C, and SIGTERM ended it without the clean stop.
    for signal in ["-INT", "-TERM"] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollway"))
            // A heartbeat each interval: the signal comes while blocks
            // are made, as on a busy chain.
            .args(["chain", "run", "--home", home, "--listen", "127.0.0.1:0", "--block-interval", "50ms", "--idle-heartbeat", "50ms"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if line.contains("listening on") {
                break;
            }
        }
        // A few blocks, then the signal.
        std::thread::sleep(std::time::Duration::from_millis(400));
        let sent = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()));
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        assert!(status.success() && !stderr.contains("panicked"), "{status:?}: {stderr}");
        assert!(rest.iter().any(|l| l.contains("stopping")), "{rest:?}");
        let (ok, stdout, stderr) = tollway(&["chain", "replay", "--home", home]);
        assert!(ok && stdout.contains("every state root matches"), "{stdout}{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The store keeps its own copy of the genesis: an edited genesis.json (a
/// new chain id) changed nothing, and replay still said every root
/// matched. Now run and replay refuse the home; a file only reformatted
/// passes.
#[test]
fn a_genesis_file_edited_after_init_is_refused() {
    let (dir, home) = initialised_chain("genesis-edit");
    let path = std::path::Path::new(&home).join("genesis.json");
    let original = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let value: serde_json::Value = serde_json::from_str(&original).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&path, value.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let (ok, stdout, stderr) = tollway(&["chain", "replay", "--home", &home]);
    assert!(ok && stdout.contains("every state root matches"), "reformatted: {stdout}{stderr}");
    let chain_id = value["ledger"]["chain_id"].as_str().unwrap_or_else(|| panic!("no chain_id in {original}"));
    std::fs::write(&path, original.replace(chain_id, "another-chain")).unwrap_or_else(|e| panic!("{e}"));
    for command in ["replay", "run"] {
        let (ok, _, stderr) = tollway(&["chain", command, "--home", &home]);
        assert!(!ok && stderr.contains("is not the genesis this chain began with"), "{command}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A home whose node.key is not the chain's sequencer key (an account's
/// key copied over it, another home's) started, listened and took txs,
/// then stopped at its first block with "block production failed: block
/// N: not signed by a validator of this chain", naming no file.
#[test]
fn a_chain_whose_node_key_is_not_its_sequencers_is_refused_at_start() {
    let (dir, home) = initialised_chain("foreign-key");
    let key_path = std::path::Path::new(&home).join("node.key");
    let other = dir.join("account.key");
    let (ok, _, stderr) = tollway(&["keys", "new", "--out", other.to_str().unwrap_or_default()]);
    assert!(ok, "{stderr}");
    std::fs::copy(&other, &key_path).unwrap_or_else(|e| panic!("{e}"));
    let (ok, stdout, stderr) =
        tollway(&["chain", "run", "--home", &home, "--listen", "127.0.0.1:0", "--block-interval", "50ms"]);
    assert!(!ok && !stdout.contains("listening on"), "it started: {stdout}{stderr}");
    let why = format!("{} holds the key of ", key_path.display());
    assert!(stderr.contains(&why) && stderr.contains("which is not this chain's sequencer"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `chain run` with no node.key advised "create one with `tollway keys
/// new --out HOME/node.key`, or pass --key FILE or set TOLLWAY_KEY": chain
/// run takes neither, and a new key is not the chain's sequencer.
#[test]
fn a_chain_whose_node_key_is_missing_is_told_to_put_it_back() {
    let (dir, home) = initialised_chain("missing-key");
    let key_path = std::path::Path::new(&home).join("node.key");
    std::fs::remove_file(&key_path).unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, stderr) = tollway(&["chain", "run", "--home", &home, "--listen", "127.0.0.1:0"]);
    assert!(!ok, "{stderr}");
    let why = format!("{} is missing: it holds this chain's sequencer key", key_path.display());
    assert!(stderr.contains(&why) && !stderr.contains("keys new") && !stderr.contains("--key"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `chain run` makes a block on an idle chain only every idle heartbeat:
/// a flag, a `TOLLWAY_CHAIN_IDLE_HEARTBEAT` and a `chain.toml` key as the
/// block interval has. A chain.toml written before the key existed still
/// runs (with 60 s: `deny_unknown_fields` alone would have refused it as
/// incomplete), and a heartbeat out of bounds is refused by name.
#[test]
fn the_idle_heartbeat_comes_from_the_flag_or_chain_toml_and_an_older_chain_toml_still_runs() {
    let (dir, home) = initialised_chain("heartbeat");
    let toml = std::path::Path::new(&home).join("chain.toml");
    let written = std::fs::read_to_string(&toml).unwrap_or_else(|e| panic!("{e}"));
    assert!(written.contains("idle_heartbeat = \"60s\""), "{written}");
    let older: String = written.lines().filter(|l| !l.starts_with("idle_heartbeat")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&toml, older).unwrap_or_else(|e| panic!("{e}"));
    let heartbeat_line = |extra: &[&str]| {
        let mut args = vec!["chain", "run", "--home", home.as_str(), "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut chain = common::Daemon::start(&dir, &args, "listening on ");
        chain.kill();
        chain.lines.iter().find(|l| l.starts_with("idle heartbeat")).cloned().unwrap_or_default()
    };
    assert!(heartbeat_line(&[]).starts_with("idle heartbeat 60000 ms"));
    assert!(heartbeat_line(&["--idle-heartbeat", "5m"]).starts_with("idle heartbeat 300000 ms"));
    for (bad, why) in [("5ms", "idle heartbeat \"5ms\" must be between 10ms and 1d"), ("2d", "must be between 10ms and 1d"), ("soon", "idle heartbeat \"soon\"")] {
        let (ok, _, stderr) = tollway(&["chain", "run", "--home", &home, "--listen", "127.0.0.1:0", "--idle-heartbeat", bad]);
        assert!(!ok && stderr.contains(why), "{bad}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

