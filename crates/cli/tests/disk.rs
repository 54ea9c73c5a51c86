//! End-to-end: the real `tollway` binary on a disk that fills up. Each
//! test runs it in a user and mount namespace of its own (`unshare`, no
//! privilege needed) on a small tmpfs, which goes away with the namespace.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic

mod common;

use common::Daemon;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tollway_types::{Amount, SigningKey, Token, Tx, TxBody, Usd};

const CHAIN: &str = "tollway-disk";

/// `unshare` and its arguments: runs the rest of the command line as `sh -c
/// SCRIPT sh ARGS…` in namespaces of its own, root there and nowhere else.
fn in_own_mount_namespace(script: &str) -> Vec<&str> {
    // In a PID namespace too, whose processes all end with its first (the
    // shell), which ends with `unshare` (`--kill-child`): a test that
    // fails half-way leaves no chain running.
    vec!["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--kill-child", "sh", "-c", script, "sh"]
}

/// Runs `script` to its end in namespaces of its own, with the binary as
/// `$1` and `arg` as `$2`: (success, stdout, stderr). Exit 97 is the
/// script's word that it could not mount.
fn run_in_own_mount_namespace(script: &str, arg: &Path) -> (bool, String, String) {
    let mut args = in_own_mount_namespace(script);
    args.extend([env!("CARGO_BIN_EXE_tollway"), arg.to_str().unwrap()]);
    let out = Command::new(args[0]).args(&args[1..]).env_remove("RUST_BACKTRACE").output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert_ne!(out.status.code(), Some(97), "could not mount in a namespace of its own: {stderr}");
    (out.status.success(), stdout, stderr)
}

/// A temporary directory holding an empty directory `name`, where a test
/// mounts its disk: (the temporary directory, the empty one).
fn temp_dir_with(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join(name);
    std::fs::create_dir(&inner).unwrap();
    (dir, inner)
}

/// `chain init` on a disk with room for the small files but not the store
/// said "store: I/O error: No space left on device (os error 28)", naming
/// no file, and left genesis.json, node.key, chain.toml and an empty
/// chain.redb behind: `chain run` then called the store corrupt ("no
/// tip"), and `chain init` refused the home as one that already held a
/// chain.
#[test]
fn chain_init_on_a_full_disk_names_the_store_and_leaves_no_half_chain() {
    let (_dir, disk) = temp_dir_with("disk");
    let script = r#"
        mount -t tmpfs -o size=48k tmpfs "$2" || exit 97
        "$1" chain init --home "$2/chain" >/dev/null
        echo "first init: exit $?"
        ls -A "$2/chain" 2>/dev/null | sed 's/^/left behind: /'
        mount -o remount,size=8m "$2" || exit 97
        "$1" chain init --home "$2/chain" && "$1" chain replay --home "$2/chain"
    "#;
    let (ok, stdout, stderr) = run_in_own_mount_namespace(script, &disk);
    assert!(stdout.contains("first init: exit 1"), "{stdout}{stderr}");
    let store = disk.join("chain").join("chain.redb");
    assert!(stderr.contains(&format!("{}: ", store.display())) && stderr.contains("No space left on device"), "{stderr}");
    assert!(!stdout.contains("left behind"), "a half-written home: {stdout}");
    // With room again, the same command makes the chain.
    assert!(ok && stdout.contains("every state root matches"), "{stdout}{stderr}");
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_recv_response(Some(Duration::from_secs(10)))
        .timeout_recv_body(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Transfers of 1 TWY from `key` to fresh accounts (each grows the stored
/// state), `n` in one batch from `nonce` on, waiting for their block.
/// Returns the committed ones with their heights, or `None` when the node
/// did not answer.
fn send_batch(agent: &ureq::Agent, api: &str, key: &SigningKey, nonce: u64, n: u64) -> Option<Vec<(String, u64)>> {
    let mut body = Vec::new();
    for i in nonce..nonce + n {
        let to = SigningKey::from_label(&format!("disk-receiver-{i}")).public();
        let stx = Tx {
            chain_id: CHAIN.into(),
            signer: key.public(),
            nonce: i,
            fee: Amount::Usd(Usd(100)),
            body: TxBody::Transfer { to, amount: Amount::Token(Token::units(1)) },
        }
        .sign(key);
        let bytes = stx.encode();
        body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        body.extend_from_slice(&bytes);
    }
    let mut r = agent
        .post(&format!("{api}/v1/txs/batch?wait=commit&timeout_ms=5000"))
        .header("Content-Type", "application/octet-stream")
        .send(&body[..])
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
    let results = v["results"].as_array()?;
    let committed = results
        .iter()
        .filter(|r| r["status"] == "committed")
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["height"].as_u64().unwrap()))
        .collect();
    Some(committed)
}

fn api_of(line: &str) -> String {
    line.split("listening on ").nth(1).unwrap_or("").trim().to_string()
}

/// The chain's disk fills up while it takes txs: it stops with an error
/// that names its store, every tx it acknowledged is there when it runs
/// again with room, and it goes on from its tip.
#[test]
fn a_chain_whose_disk_fills_stops_naming_its_store_and_loses_no_acknowledged_tx() {
    let (dir, disk) = temp_dir_with("disk");
    let sender = SigningKey::from_label("disk-sender");
    let alloc = format!("{}=1000000TWY,1000USD", sender.public());
    let script = r#"
        mount -t tmpfs -o size=1536k tmpfs "$1" || exit 97
        "$0" chain init --home "$1/chain" --chain-id tollway-disk --alloc "$2" >/dev/null || exit 98
        "$0" chain run --home "$1/chain" --listen 127.0.0.1:0 --block-interval 20ms 2>&1
        echo "first run: exit $?"
        mount -o remount,size=64m "$1" || exit 97
        exec "$0" chain run --home "$1/chain" --listen 127.0.0.1:0 --block-interval 20ms
    "#;
    // `start_under` puts the binary first: it is the script's $0.
    let mut wrapper = in_own_mount_namespace(script);
    wrapper.pop();
    let mut node = Daemon::start_under(&wrapper, dir.path(), &[disk.to_str().unwrap(), &alloc], "listening on ");
    let api = api_of(node.lines.last().unwrap());

    let agent = agent();
    let started = Instant::now();
    let (mut nonce, mut acked) = (0, Vec::new());
    while started.elapsed() < Duration::from_secs(60) {
        let Some(committed) = send_batch(&agent, &api, &sender, nonce, 200) else { break };
        if committed.is_empty() {
            break;
        }
        nonce += committed.len() as u64;
        acked.extend(committed);
    }
    let ended = node.wait_for_line("first run: exit", Duration::from_secs(20));
    assert_eq!(ended.as_deref(), Some("first run: exit 1"), "{:?}", node.lines);
    assert!(acked.len() >= 1_000, "only {} txs before the disk was full", acked.len());
    let error = node.lines.iter().find(|l| l.starts_with("error: ")).cloned().unwrap_or_default();
    let store = disk.join("chain").join("chain.redb");
    assert!(error.contains(&store.display().to_string()) && error.contains("No space left on device"), "{:?}", node.lines);

    let again = node.wait_for_line("listening on ", Duration::from_secs(30)).expect("no second start");
    let api = api_of(&again);
    for (id, height) in &acked {
        let mut r = agent.get(&format!("{api}/v1/txs/{id}")).call().unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(v["height"].as_u64(), Some(*height), "acknowledged tx {id} at {height}: {v}");
    }
    // It takes txs again, from where it stopped (a tx committed whose
    // answer the stop cut off moved the nonce on too).
    let mut r = agent.get(&format!("{api}/v1/accounts/{}", sender.public())).call().unwrap();
    let account: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let nonce = account["nonce"].as_u64().unwrap();
    assert!(nonce >= acked.len() as u64, "{account}");
    let more = send_batch(&agent, &api, &sender, nonce, 10).unwrap_or_default();
    assert_eq!(more.len(), 10, "no block after the restart");
}

/// `sim run --out DIR` on a read-only filesystem simulated to the end
/// ("simulated in …") and only then failed, writing its first file:
/// the whole run lost. The marker that says a directory holds a report
/// is now written before the simulation, so the run fails at once.
#[test]
fn a_sim_whose_out_is_read_only_fails_before_it_simulates() {
    let (_dir, out) = temp_dir_with("out");
    let script = r#"
        mount --bind "$2" "$2" && mount -o remount,ro,bind "$2" || exit 97
        exec "$1" sim run hybrid --days 5 --runs 1 --quiet --out "$2"
    "#;
    let (ok, stdout, stderr) = run_in_own_mount_namespace(script, &out);
    assert!(!ok, "{stdout}{stderr}");
    assert!(stderr.contains(".tollway-sim-report") && stderr.contains("Read-only file system"), "{stderr}");
    assert!(!stderr.contains("simulated in"), "it simulated first: {stderr}");
}

/// `sim run` whose disk filled while it wrote its report failed naming
/// the file, and left CSVs, summary.json and some charts without
/// index.html: nothing there said the report was partial. Now the error
/// says the report is incomplete, and so does INCOMPLETE.txt beside it.
#[test]
fn a_sim_whose_disk_fills_while_it_writes_leaves_a_report_that_says_it_is_incomplete() {
    let (_dir, disk) = temp_dir_with("disk");
    // Room for the CSV and summary.json (30 kB), not for every chart
    // (400 kB in all).
    let script = r#"
        mount -t tmpfs -o size=128k tmpfs "$2" || exit 97
        "$1" sim run hybrid --days 30 --runs 1 --quiet --out "$2/out" >/dev/null
        echo "exit $?"
        ls -A "$2/out" | sed 's/^/left: /'
        cat "$2/out/INCOMPLETE.txt"
    "#;
    let (_, stdout, stderr) = run_in_own_mount_namespace(script, &disk);
    assert!(stdout.contains("exit 1") && stderr.contains("No space left on device"), "{stdout}{stderr}");
    // Once: the report's error gave its cause in its message and again as
    // its source.
    assert_eq!(stderr.matches("No space left on device").count(), 1, "{stderr}");
    let out = disk.join("out");
    assert!(stderr.contains(&format!("the report in {} is incomplete", out.display())), "{stderr}");
    assert!(stdout.contains("left: summary.json") && !stdout.contains("left: index.html"), "{stdout}");
    assert!(stdout.contains("left: INCOMPLETE.txt") && stdout.contains("This report is incomplete"), "{stdout}");
}

/// `chain replay` opened the store to write, so a chain on a read-only
/// filesystem (a backup, a snapshot mounted to check) could not be
/// replayed: "cannot open the store at …: Read-only file system". It only
/// reads, and now opens the store so. A store its chain did not close (a
/// SIGKILL) must be repaired, which writes: on the read-only mount that is
/// said, with what to do; writable again, replay repairs it and goes on.
#[test]
fn chain_replay_reads_a_store_on_a_read_only_mount() {
    let (_dir, disk) = temp_dir_with("disk");
    let script = r#"
        mount -t tmpfs -o size=8m tmpfs "$2" || exit 97
        "$1" chain init --home "$2/chain" >/dev/null || exit 1
        "$1" chain init --home "$2/killed" >/dev/null || exit 1
        "$1" chain run --home "$2/killed" --listen 127.0.0.1:0 --block-interval 50ms >/dev/null 2>&1 &
        sleep 2
        kill -KILL $! && wait
        mount -o remount,ro "$2" || exit 97
        echo "== read-only"
        "$1" chain replay --home "$2/chain" 2>&1
        echo "== killed, read-only"
        "$1" chain replay --home "$2/killed" 2>&1
        mount -o remount,rw "$2" || exit 97
        echo "== killed, writable"
        "$1" chain replay --home "$2/killed" 2>&1
    "#;
    let (_, stdout, stderr) = run_in_own_mount_namespace(script, &disk);
    let part = |name: &str| stdout.split(&format!("== {name}\n")).nth(1).and_then(|s| s.split("== ").next()).unwrap_or("").to_string();
    let read_only = part("read-only");
    assert!(read_only.contains("every state root matches"), "{stdout}{stderr}");
    let killed = part("killed, read-only");
    let store = disk.join("killed").join("chain.redb");
    assert!(killed.contains(&format!("store at {} was not closed cleanly", store.display())), "{stdout}{stderr}");
    assert!(killed.contains("where it can be written") && killed.contains("Read-only file system"), "{killed}");
    let repaired = part("killed, writable");
    assert!(repaired.contains("repairing it") && repaired.contains("every state root matches"), "{stdout}{stderr}");
}
