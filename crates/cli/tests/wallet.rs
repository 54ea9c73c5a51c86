//! End-to-end: `tollway keys` and `tollway wallet` through the real binary,
//! the wallet against a real `tollway chain run` process on a loopback port.

mod common;

use common::ChainProcess;
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// What one run of the binary did.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The stdout as JSON; panics with both streams if it is not.
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
    fn expect_ok(self, what: &str) -> Run {
        assert!(self.ok, "{what} failed:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
    fn expect_err(self, what: &str, needle: &str) -> Run {
        assert!(!self.ok, "{what} should have failed:\nstdout:\n{}", self.stdout);
        assert!(self.stderr.starts_with("error: "), "{what}: not an `error:` line: {}", self.stderr);
        assert!(self.stderr.contains(needle), "{what}: expected {needle:?} in:\n{}", self.stderr);
        self
    }
}

/// Runs `tollway ARGS` in `dir` with a clean environment for our variables,
/// optionally feeding `stdin`.
fn tollway(dir: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollway"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("TOLLWAY_KEY")
        .env_remove("TOLLWAY_API")
        .env_remove("RUST_BACKTRACE")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start tollway: {e}"));
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap_or_else(|| panic!("no stdin pipe"));
        pipe.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("writing stdin: {e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("waiting for tollway: {e}"));
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollway-wallet-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sleep_until(t: std::time::Instant) {
    std::thread::sleep(t.saturating_duration_since(std::time::Instant::now()));
}

fn str_field(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_else(|| panic!("no string {key:?} in {v}")).to_string()
}

#[test]
fn keys_are_created_0600_never_overwritten_and_imported_from_stdin() {
    let dir = temp_dir("keys");
    let created = tollway(&dir, &["keys", "new", "--out", "a.key", "--json"], None).expect_ok("keys new").json();
    let public = str_field(&created, "public");
    assert_eq!(public.len(), 64);
    let a = dir.join("a.key");
    assert_eq!(mode_of(&a), 0o600);
    let file: Value = serde_json::from_str(&read(&a)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(str_field(&file, "public"), public);
    let secret = str_field(&file, "secret");
    assert_eq!(secret.len(), 64);

    // No silent overwrite: the old key survives a second `new`.
    let before = read(&a);
    tollway(&dir, &["keys", "new", "--out", "a.key"], None).expect_err("second keys new", "already exists");
    assert_eq!(read(&a), before);

    // `show` prints the account id, never the secret; human and JSON.
    let shown = tollway(&dir, &["keys", "show", "--key", "a.key"], None).expect_ok("keys show");
    assert_eq!(shown.stdout.trim(), public);
    assert!(!shown.stdout.contains(&secret) && !shown.stderr.contains(&secret));
    let shown = tollway(&dir, &["keys", "show", "--key", "a.key", "--json"], None).expect_ok("keys show --json").json();
    assert_eq!(str_field(&shown, "public"), public);
    // The file may be named as `keys new` wrote it, without `--key`
    // (`keys show a.key` was refused as an unexpected argument).
    let shown = tollway(&dir, &["keys", "show", "a.key"], None).expect_ok("keys show FILE");
    assert_eq!(shown.stdout.trim(), public);
    tollway(&dir, &["keys", "show", "a.key", "--key", "a.key"], None).expect_err("keys show FILE --key FILE", "cannot be used with");

    // $TOLLWAY_KEY, then ./tollway.key, are the defaults.
    let out = Command::new(env!("CARGO_BIN_EXE_tollway"))
        .args(["keys", "show"])
        .current_dir(&dir)
        .env("TOLLWAY_KEY", &a)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), public);
    tollway(&dir, &["keys", "show"], None).expect_err("keys show without a key", "tollway.key does not exist");

    // Import: the seed arrives on stdin and gives back the same account.
    let imported = tollway(&dir, &["keys", "import", "--out", "b.key", "--json"], Some(&format!("{secret}\n")))
        .expect_ok("keys import")
        .json();
    assert_eq!(str_field(&imported, "public"), public);
    assert_eq!(mode_of(&dir.join("b.key")), 0o600);
    tollway(&dir, &["keys", "import", "--out", "b.key"], Some(&secret)).expect_err("import over b.key", "already exists");
    let replaced =
        tollway(&dir, &["keys", "import", "--out", "b.key", "--force"], Some(&secret)).expect_ok("import --force");
    assert!(replaced.stdout.contains(&public), "{}", replaced.stdout);

    // Garbage on stdin: refused, not echoed, and no file is left behind.
    for garbage in ["", "hello", &secret[..60], &format!("{secret}ff")] {
        let run = tollway(&dir, &["keys", "import", "--out", "c.key"], Some(garbage)).expect_err("garbage import", "64 hex digits");
        if garbage.len() > 10 {
            assert!(!run.stderr.contains(&garbage[..10]), "the input was echoed: {}", run.stderr);
        }
        assert!(!dir.join("c.key").exists(), "a key file was written from {garbage:?}");
    }

    // A key file others can read still loads, with a warning.
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o644)).unwrap_or_else(|e| panic!("{e}"));
    let loose = tollway(&dir, &["keys", "show", "--key", "a.key"], None).expect_ok("keys show 0644");
    assert!(loose.stderr.contains("readable by others"), "{}", loose.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `tollway wallet --api API --key KEY --json ARGS…` and returns the
/// result.
fn wallet(dir: &Path, api: &str, key: &str, args: &[&str]) -> Run {
    let mut all = vec!["wallet", "--api", api, "--key", key];
    all.extend_from_slice(args);
    tollway(dir, &all, None)
}

fn balance(dir: &Path, api: &str, account: &str) -> Value {
    wallet(dir, api, "alice.key", &["balance", account, "--json"]).expect_ok("balance").json()
}

#[test]
fn wallet_drives_a_real_chain_end_to_end() {
    let dir = temp_dir("chain");
    let mut ids = std::collections::BTreeMap::new();
    for name in ["alice", "bob", "node"] {
        let out = format!("{name}.key");
        let created = tollway(&dir, &["keys", "new", "--out", &out, "--json"], None).expect_ok("keys new").json();
        ids.insert(name, str_field(&created, "public"));
    }
    let (alice, bob, node) = (&ids["alice"], &ids["bob"], &ids["node"]);

    // Unbonding and the channel grace are seconds here so that withdraw and
    // close-channel can succeed within the test; unbonding must last two
    // epochs, so epochs are 2 s.
    let home = dir.join("home");
    let home_str = home.to_str().unwrap_or_else(|| panic!("non-UTF-8 path"));
    let alloc_alice = format!("{alice}=1000TWY,100USD");
    let alloc_node = format!("{node}=2000TWY,10USD");
    let init = tollway(
        &dir,
        &[
            "chain", "init", "--home", home_str, "--chain-id", "tollway-e2e", "--alloc", &alloc_alice, "--alloc",
            &alloc_node, "--param", "epoch=2s", "--param", "unbonding=4s", "--param", "channel_close_grace=1s",
        ],
        None,
    )
    .expect_ok("chain init");
    // The sequencer's key is also the USD gateway (it signs deposits).
    let gateway_key = home.join("node.key");
    assert!(init.stdout.contains(&gateway_key.display().to_string()), "{}", init.stdout);
    assert_eq!(mode_of(&gateway_key), 0o600);
    let gateway_key = gateway_key.to_str().unwrap_or_else(|| panic!("non-UTF-8 path")).to_string();
    let chain = ChainProcess::start(&dir, &home);
    let api = chain.api.as_str();

    // Transfer alice → bob: bob gains exactly the amount; alice pays it
    // plus the fee (in USD: she holds USD, so TWY moves by the amount only).
    let sent = wallet(&dir, api, "alice.key", &["transfer", bob, "12.5 TWY"]).expect_ok("transfer");
    assert!(sent.stdout.starts_with("transferred 12.5 TWY to "), "{}", sent.stdout);
    assert!(sent.stdout.contains("in block "), "{}", sent.stdout);
    let a = balance(&dir, api, alice);
    assert_eq!(str_field(&a, "token"), "987.5");
    assert_eq!(str_field(&a, "usd"), "99.9999");
    assert_eq!(a["nonce"], 1);
    let b = balance(&dir, api, bob);
    assert_eq!(str_field(&b, "token"), "12.5");
    assert_eq!(str_field(&b, "usd"), "0");

    // Too much: a clear error, a non-zero exit, and nothing changed.
    wallet(&dir, api, "bob.key", &["transfer", alice, "1000 TWY"]).expect_err("overdraft", "insufficient");
    let b2 = balance(&dir, api, bob);
    assert_eq!(b2, b, "a refused transfer changed bob's account");
    // An explicit fee is paid as given; one below the chain's minimum is refused.
    wallet(&dir, api, "bob.key", &["transfer", node, "1 TWY", "--fee", "0.002 TWY"]).expect_ok("transfer with --fee");
    assert_eq!(str_field(&balance(&dir, api, bob), "token"), "11.498");
    wallet(&dir, api, "bob.key", &["transfer", node, "1 TWY", "--fee", "0.0001 TWY"]).expect_err("low fee", "below the minimum");
    assert_eq!(str_field(&balance(&dir, api, bob), "token"), "11.498");
    wallet(&dir, api, "bob.key", &["transfer", "not-an-account", "1 TWY"]).expect_err("bad TO", "not an account id");
    wallet(&dir, api, "bob.key", &["transfer", alice, "12.5"]).expect_err("no unit", "needs a unit");

    // An account the chain has never seen is a zero balance, not an error.
    let nobody = "ab".repeat(32);
    let zero = wallet(&dir, api, "alice.key", &["balance", &nobody]).expect_ok("unknown balance");
    assert!(zero.stdout.contains("not on chain yet"), "{}", zero.stdout);

    // Stake and unbond; withdrawing before the period ends says when.
    wallet(&dir, api, "alice.key", &["stake", "100"]).expect_ok("stake");
    let unbond = wallet(&dir, api, "alice.key", &["unbond", "40 TWY", "--json"]).expect_ok("unbond").json();
    // The unbond's block is no later than now: it releases by now + 4 s.
    let unbonded_at = std::time::Instant::now();
    assert_eq!(str_field(&unbond, "status"), "committed");
    wallet(&dir, api, "alice.key", &["withdraw"]).expect_err("early withdraw", "unbonding releases at");
    let a = balance(&dir, api, alice);
    assert_eq!(str_field(&a, "staked"), "60");
    assert_eq!(str_field(&a["unbonding"][0], "amount"), "40");
    assert_eq!(str_field(&a, "token"), "887.5");
    sleep_until(unbonded_at + Duration::from_millis(4500));
    let withdrawn = wallet(&dir, api, "alice.key", &["withdraw"]).expect_ok("withdraw");
    assert!(withdrawn.stdout.starts_with("withdrew 40 TWY"), "{}", withdrawn.stdout);
    let a = balance(&dir, api, alice);
    assert_eq!(str_field(&a, "token"), "927.5");
    assert_eq!(a["unbonding"].as_array().map(Vec::len), Some(0));

    // The node operator stakes the minimum and registers.
    wallet(&dir, api, "node.key", &["stake", "1000 TWY"]).expect_ok("node stake");
    let registered = wallet(
        &dir,
        api,
        "node.key",
        &[
            "register-node", "--country", "DE", "--addr", "203.0.113.7", "--capacity-bps", "100000000",
            "--price-usd-per-gib", "0.5", "--ports", "4433-4440",
        ],
    )
    .expect_ok("register-node");
    assert!(registered.stdout.starts_with("registered node in DE"), "{}", registered.stdout);
    assert_eq!(balance(&dir, api, node)["node"], true);

    // A new TLS key: the operator changes the pin (and, here, the price),
    // and the rest of the record stays as it was.
    wallet(&dir, api, "node.key", &["update-node"]).expect_err("empty update", "nothing to update");
    let pin = "ab".repeat(32);
    let updated = wallet(&dir, api, "node.key", &["update-node", "--tls-pin", &pin, "--price-usd-per-gib", "0.45"])
        .expect_ok("update-node");
    assert!(updated.stdout.starts_with("updated node in DE at 203.0.113.7 (ports 4433-4440, 100 Mbit/s claimed"), "{}", updated.stdout);
    // An hourly price is said back, and listed (it was set, never shown).
    let hourly = wallet(&dir, api, "node.key", &["update-node", "--price-usd-per-hour", "0.02"]).expect_ok("hourly price");
    assert!(hourly.stdout.contains("$0.45 per GiB, $0.02 per hour"), "{}", hourly.stdout);
    let table = wallet(&dir, api, "alice.key", &["nodes"]).expect_ok("nodes with an hourly price");
    assert!(table.stdout.contains("per hour") && table.stdout.contains("$0.02"), "{}", table.stdout);
    let record = wallet(&dir, api, "alice.key", &["nodes", "--json"]).expect_ok("nodes after update").json();
    let record = &record[0];
    assert_eq!(str_field(record, "tls_key_pin"), pin);
    assert_eq!(record["price_usd_micro_per_gib"], 450_000);
    assert_eq!(record["claimed_capacity_bps"], 100_000_000);
    assert_eq!((record["port_first"].clone(), record["port_last"].clone()), (4433.into(), 4440.into()));
    // A price `node run` serves only with receipts asked for less often:
    // allowed, with a warning that says the interval it needs.
    let cheap = wallet(&dir, api, "node.key", &["update-node", "--price-usd-per-gib", "0.0001"]).expect_ok("cheap");
    assert!(cheap.stderr.contains("must ask for receipts at least every 10486 KiB"), "{}", cheap.stderr);
    wallet(&dir, api, "node.key", &["update-node", "--price-usd-per-gib", "0.5"]).expect_ok("price back");
    wallet(&dir, api, "alice.key", &["update-node", "--ports", "5000"]).expect_err("not a node", "is not a registered node");

    // Clients find it by country, region and price.
    let found = wallet(&dir, api, "alice.key", &["nodes", "--country", "de", "--max-price-usd-per-gib", "0.5", "--json"])
        .expect_ok("nodes")
        .json();
    let found = found.as_array().unwrap_or_else(|| panic!("nodes is not an array: {found}"));
    assert_eq!(found.len(), 1);
    assert_eq!(&str_field(&found[0], "id"), node);
    assert_eq!(found[0]["price_usd_micro_per_gib"], 500_000);
    let table = wallet(&dir, api, "alice.key", &["nodes", "--region", "europe"]).expect_ok("nodes table");
    assert!(table.stdout.contains(node.as_str()) && table.stdout.contains("100 Mbit/s"), "{}", table.stdout);
    let cheaper = wallet(&dir, api, "alice.key", &["nodes", "--max-price-usd-per-gib", "0.4"]).expect_ok("nodes cheap");
    assert!(cheaper.stdout.contains("no active node matches"), "{}", cheaper.stdout);
    wallet(&dir, api, "alice.key", &["nodes", "--region", "atlantis"]).expect_err("bad region", "is not a region");

    // The chain's channel limits, said in the flags' terms before a fee
    // is paid.
    wallet(&dir, api, "alice.key", &["open-channel", node, "$5", "--expires-in", "91d"])
        .expect_err("too long", "--expires-in 91d: a channel on this chain may last at most 90d");
    wallet(&dir, api, "alice.key", &["open-channel", node, "$0.001"])
        .expect_err("too small", "escrow $0.001: a channel on this chain holds at least $0.01");
    // Alice opens a channel, signs a receipt, the node settles it.
    let opened =
        wallet(&dir, api, "alice.key", &["open-channel", node, "$5", "--expires-in", "1h", "--json"]).expect_ok("open").json();
    let channel = str_field(&opened, "channel");
    assert_eq!(channel.len(), 64);
    let a = balance(&dir, api, alice);
    assert_eq!(str_field(&a, "usd"), "94.9995", "escrow $5 and five USD fees");
    assert_eq!(a["open_channels"], 1);

    let receipt = wallet(&dir, api, "alice.key", &["sign-receipt", &channel, "--usd", "1.25", "--bytes", "1000000"])
        .expect_ok("sign-receipt");
    let receipt_hex = receipt.stdout.trim().to_string();
    // Only the client signs receipts for its channel.
    wallet(&dir, api, "bob.key", &["sign-receipt", &channel, "--usd", "1", "--bytes", "1"])
        .expect_err("bob signs", "not the client");
    wallet(&dir, api, "alice.key", &["sign-receipt", &channel, "--usd", "6", "--bytes", "1"])
        .expect_err("over escrow", "more than the channel's escrow");

    let settled = wallet(&dir, api, "node.key", &["settle-channel", &receipt_hex]).expect_ok("settle");
    assert!(settled.stdout.starts_with("settled $1.25 on channel "), "{}", settled.stdout);
    // Settling the same receipt again is stale: refused, nothing changed.
    wallet(&dir, api, "node.key", &["settle-channel", &receipt_hex]).expect_err("stale settle", "stale receipt");
    wallet(&dir, api, "node.key", &["settle-channel", "00ff"]).expect_err("garbage receipt", "not a signed receipt");

    let listed = wallet(&dir, api, "alice.key", &["channels", "--json"]).expect_ok("channels").json();
    let list = listed.as_array().unwrap_or_else(|| panic!("channels is not an array: {listed}"));
    assert_eq!(list.len(), 1);
    assert_eq!(str_field(&list[0], "id"), channel);
    assert_eq!(str_field(&list[0], "paid"), "1.25");
    assert_eq!(list[0]["paid_bytes"], 1_000_000);
    assert_eq!(str_field(&list[0], "escrow"), "5");
    let human = wallet(&dir, api, "bob.key", &["channels", node]).expect_ok("node channels");
    assert!(human.stdout.contains(&channel) && human.stdout.contains("node"), "{}", human.stdout);

    // The channel is not closable before expiry and grace.
    wallet(&dir, api, "alice.key", &["close-channel", &channel]).expect_err("early close", "cannot be closed before");

    // Deposits are the gateway's alone.
    wallet(&dir, api, "alice.key", &["deposit", bob, "$10"]).expect_err("deposit by alice", "only the gateway");
    let deposited = wallet(&dir, api, &gateway_key, &["deposit", bob, "10"]).expect_ok("deposit");
    assert!(deposited.stdout.starts_with("deposited $10 to "), "{}", deposited.stdout);
    assert_eq!(str_field(&balance(&dir, api, bob), "usd"), "10");

    // Stopped, the chain's blocks replay to the same roots.
    drop(chain);
    let replayed = tollway(&dir, &["chain", "replay", "--home", home_str], None).expect_ok("chain replay");
    assert!(replayed.stdout.contains("every state root matches"), "{}", replayed.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET {api}{path}` as JSON.
fn get_json(api: &str, path: &str) -> Value {
    let url = format!("{api}{path}");
    let mut response = ureq::get(&url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let text = response.body_mut().read_to_string().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url} is not JSON ({e}): {text}"))
}

fn u64_field(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no integer {key:?} in {v}"))
}

/// Waits (at most two epochs) for the chain's epoch to pass `epoch`; returns
/// the status that shows it.
fn wait_for_epoch_after(api: &str, epoch: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = get_json(api, "/v1/status");
        if u64_field(&status, "epoch") > epoch {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "epoch {epoch} did not end: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The channel's entry in `wallet channels --json`, if listed.
fn listed_channel(dir: &Path, api: &str, channel: &str) -> Option<Value> {
    let listed = wallet(dir, api, "alice.key", &["channels", "--json"]).expect_ok("channels").json();
    let list = listed.as_array().unwrap_or_else(|| panic!("channels is not an array: {listed}"));
    list.iter().find(|c| c["id"] == channel).cloned()
}

/// No tool sent `CloseChannel`: every channel a client forgot stayed on
/// the chain with its unsettled escrow. The chain now closes a channel at
/// the first epoch end past its expiry and grace, with the refund its
/// client's close would have had (ADR 0021); `wallet channels` says when,
/// and `close-channel` still closes it first, from its closable moment.
#[test]
fn an_expired_channel_closes_itself_and_close_channel_refunds_before_it() {
    let dir = temp_dir("expiry");
    let mut ids = std::collections::BTreeMap::new();
    for name in ["alice", "node"] {
        let out = format!("{name}.key");
        let created = tollway(&dir, &["keys", "new", "--out", &out, "--json"], None).expect_ok("keys new").json();
        ids.insert(name, str_field(&created, "public"));
    }
    let (alice, node) = (&ids["alice"], &ids["node"]);
    // Six-second epochs: room, within one, for a channel to expire, pass
    // its one-second grace and be closed by its client before the end.
    let home = dir.join("home");
    let home_str = home.to_str().unwrap_or_else(|| panic!("non-UTF-8 path"));
    let alloc_alice = format!("{alice}=100USD");
    let alloc_node = format!("{node}=2000TWY,10USD");
    let init_args = [
        "chain", "init", "--home", home_str, "--chain-id", "tollway-expiry", "--alloc", &alloc_alice, "--alloc", &alloc_node,
        "--param", "epoch=6s", "--param", "channel_close_grace=1s",
    ];
    tollway(&dir, &init_args, None).expect_ok("chain init");
    let chain = ChainProcess::start(&dir, &home);
    let api = chain.api.as_str();
    wallet(&dir, api, "node.key", &["stake", "1000 TWY"]).expect_ok("node stake");
    let register = [
        "register-node", "--country", "DE", "--addr", "203.0.113.7", "--capacity-bps", "100000000", "--price-usd-per-gib", "0.5",
        "--ports", "4433-4440",
    ];
    wallet(&dir, api, "node.key", &register).expect_ok("register-node");

    // Both channels open early in an epoch, expire two seconds later and
    // may be closed a second after that: before the epoch's end.
    let epoch = u64_field(&get_json(api, "/v1/status"), "epoch");
    let status = wait_for_epoch_after(api, epoch);
    let epoch_end_secs = u64_field(&status, "epoch_start_secs") + u64_field(&status, "epoch_secs");
    let open = |escrow: &str| {
        let opened = wallet(&dir, api, "alice.key", &["open-channel", node, escrow, "--expires-in", "2s", "--json"])
            .expect_ok("open-channel")
            .json();
        str_field(&opened, "channel")
    };
    let closed_by_alice = open("$2");
    let forgotten = open("$3");
    let receipt = wallet(&dir, api, "alice.key", &["sign-receipt", &forgotten, "--usd", "0.5", "--bytes", "1000"])
        .expect_ok("sign-receipt");
    wallet(&dir, api, "node.key", &["settle-channel", receipt.stdout.trim()]).expect_ok("settle");
    let unsettled = wallet(&dir, api, "alice.key", &["sign-receipt", &forgotten, "--usd", "1", "--bytes", "2000"])
        .expect_ok("sign-receipt")
        .stdout;
    let usd_after_opening = str_field(&balance(&dir, api, alice), "usd");
    assert_eq!(usd_after_opening, "94.9998", "two escrows and two USD fees");
    let listed = listed_channel(&dir, api, &closed_by_alice).unwrap_or_else(|| panic!("{closed_by_alice} not listed"));
    let closable_at_secs = u64_field(&listed, "expires_at_secs") + 1;
    assert!(
        closable_at_secs < epoch_end_secs,
        "the test's timing: closable at {closable_at_secs}, the epoch ends at {epoch_end_secs}"
    );

    // Expired, not yet closable: `wallet channels` says when it can be
    // closed, and when the chain closes it.
    let expires_at_secs = closable_at_secs - 1;
    sleep_until_unix_ms(expires_at_secs * 1000 + 100);
    let human = wallet(&dir, api, "alice.key", &["channels"]).expect_ok("channels");
    let line = human.stdout.lines().find(|l| l.starts_with(forgotten.as_str())).unwrap_or_else(|| panic!("{}", human.stdout));
    assert!(line.contains("expired") && line.contains("the chain closes it at an epoch end in "), "{line}");

    // Closable: the client's close refunds the escrow (nothing was paid).
    sleep_until_unix_ms(closable_at_secs * 1000 + 200);
    let closed = wallet(&dir, api, "alice.key", &["close-channel", &closed_by_alice]).expect_ok("close-channel");
    assert!(closed.stdout.contains("refunded $2"), "{}", closed.stdout);
    let a = balance(&dir, api, alice);
    assert_eq!(str_field(&a, "usd"), "96.9997", "the $2 came back; one more fee");
    assert_eq!(a["open_channels"], 1);
    assert!(listed_channel(&dir, api, &closed_by_alice).is_none(), "a closed channel is listed");
    assert!(listed_channel(&dir, api, &forgotten).is_some(), "closed before the epoch's end");

    // The epoch's end closes the forgotten one: $3 less the $0.50 paid
    // comes back with no tx of alice's, and the epoch's report says so.
    let status = wait_for_epoch_after(api, u64_field(&status, "epoch"));
    let a = balance(&dir, api, alice);
    assert_eq!(str_field(&a, "usd"), "99.4997", "$2.50 came back");
    assert_eq!((a["open_channels"].clone(), a["nonce"].clone()), (0.into(), 3.into()));
    assert!(listed_channel(&dir, api, &forgotten).is_none(), "the chain's close left it listed");
    let none = wallet(&dir, api, "alice.key", &["channels"]).expect_ok("channels");
    assert!(none.stdout.contains("no open channels"), "{}", none.stdout);
    let ended = u64_field(&status, "epoch") - 1;
    let record = get_json(api, &format!("/v1/epochs/{ended}"));
    let closed = &record["report"]["channels_closed"];
    assert_eq!(closed.as_array().map(Vec::len), Some(1), "{record}");
    assert_eq!((str_field(&closed[0], "channel"), str_field(&closed[0], "refund")), (forgotten.clone(), "2.5".into()));
    // Its client's close said only that it does not exist (and that the
    // chain may have closed it): it says when the chain did, and the refund.
    let alice_short = &alice[..8];
    wallet(&dir, api, "alice.key", &["close-channel", &forgotten]).expect_err(
        "close after the chain's close",
        &format!("is already closed: the chain closed it at the end of epoch {ended} and refunded $2.5 to {alice_short}…"),
    );
    // The node can settle no more on it, as after a client's close.
    wallet(&dir, api, "node.key", &["settle-channel", unsettled.trim()]).expect_err("settle after the close", "already closed");

    drop(chain);
    let replayed = tollway(&dir, &["chain", "replay", "--home", home_str], None).expect_ok("chain replay");
    assert!(replayed.stdout.contains("every state root matches"), "{}", replayed.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sleeps until this machine's clock, which the chain's runs on, reads
/// `unix_ms`.
fn sleep_until_unix_ms(unix_ms: u64) {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    std::thread::sleep(Duration::from_millis(unix_ms.saturating_sub(now_ms)));
}

/// An operator who leaves: the ledger's refusal to unbond below a node's
/// minimum said "deregister first", and the wallet had no command to
/// deregister (nor one to claim vested rewards); and the unbonding that
/// follows said only the chain time it releases at, not how long that is.
#[test]
fn an_operator_deregisters_unbonds_and_is_told_when_the_stake_comes_back() {
    let dir = temp_dir("leave");
    let created = tollway(&dir, &["keys", "new", "--out", "op.key", "--json"], None).expect_ok("keys new").json();
    let op = str_field(&created, "public");
    let home = dir.join("home");
    let home_str = home.to_str().unwrap_or_else(|| panic!("non-UTF-8 path"));
    let alloc = format!("{op}=2000TWY,10USD");
    tollway(
        &dir,
        &["chain", "init", "--home", home_str, "--alloc", &alloc, "--param", "epoch=2s", "--param", "unbonding=4s"],
        None,
    )
    .expect_ok("chain init");
    let chain = ChainProcess::start(&dir, &home);
    let api = chain.api.as_str();
    let op_wallet = |args: &[&str]| wallet(&dir, api, "op.key", args);

    // Too little stake: the refusal says how much is needed and the command
    // that bonds it.
    let args =
        ["register-node", "--country", "DE", "--addr", "203.0.113.7", "--capacity-bps", "1000000", "--price-usd-per-gib", "1"];
    op_wallet(&args).expect_err("register without stake", "need 1000 TWY (`tollway wallet stake AMOUNT` bonds more)");
    op_wallet(&["stake", "1000"]).expect_ok("stake");
    let init = tollway(&dir, &["node", "init", "--home", "node-home"], None).expect_ok("node init");
    let pin = init.stdout.lines().find_map(|l| l.strip_prefix("tls pin ")).unwrap_or_else(|| panic!("{}", init.stdout));
    op_wallet(&[
        "register-node", "--country", "DE", "--addr", "203.0.113.7", "--capacity-bps", "100000000", "--price-usd-per-gib",
        "0.5", "--tls-pin", pin,
    ])
    .expect_ok("register-node");
    // The operator sees what the oracles made of the node.
    let shown = op_wallet(&["balance"]).expect_ok("balance of a node");
    for said in [
        "  node      active in DE (europe) at 203.0.113.7, $0.5 per GiB",
        "  capacity  100 Mbit/s claimed, 0 bit/s verified: never measured by the oracles, so no uptime reward yet",
        "  quality   reputation 50.0% (",
        "  rewards   0 TWY earned in total (they vest first), 0 TWY slashed",
        " · open channels as a client 0 · node",
    ] {
        assert!(shown.stdout.contains(said), "no {said:?} in:\n{}", shown.stdout);
    }
    // The refusal names the command that lifts it.
    op_wallet(&["unbond", "500"]).expect_err("unbond below the node's minimum", "`tollway wallet deregister-node`");
    // It said "nothing vested to claim yet", as if something vested.
    op_wallet(&["claim"]).expect_err("claim with no rewards", "nothing to claim: no rewards are vesting on this account");

    // A LAN address is taken (devnets run on them), with a warning: an
    // operator behind a home router gave the machine's own address.
    let lan = op_wallet(&["update-node", "--addr", "192.168.1.5"]).expect_ok("update-node to a LAN address");
    let warned = "warning: 192.168.1.5 is a private (LAN) address: clients elsewhere cannot reach it";
    assert!(lan.stderr.contains(warned), "{}", lan.stderr);
    let public = op_wallet(&["update-node", "--addr", "203.0.113.8"]).expect_ok("update-node to a public address");
    assert!(!public.stderr.contains("warning"), "{}", public.stderr);
    let left = op_wallet(&["deregister-node"]).expect_ok("deregister-node");
    assert!(left.stdout.starts_with("deregistered node "), "{}", left.stdout);
    assert!(left.stdout.trim_end().ends_with("its stake may now be unbonded"), "{}", left.stdout);
    // `node run` says what became of the node, and how to bring it back.
    tollway(&dir, &["node", "run", "--home", "node-home", "--key", "op.key", "--api", api], None).expect_err(
        "node run when deregistered",
        "is deregistered: clients no longer find it; `tollway wallet register-node` brings it back",
    );
    let listed = op_wallet(&["nodes"]).expect_ok("nodes");
    assert!(listed.stdout.contains("no active node matches"), "{}", listed.stdout);
    op_wallet(&["deregister-node"]).expect_err("deregister twice", "runs no active node");
    let shown = op_wallet(&["balance"]).expect_ok("balance of a deregistered node");
    assert!(shown.stdout.contains("  node      deregistered (was in DE at 203.0.113.8)"), "{}", shown.stdout);

    // Now the whole stake may go, and the wallet says when it comes back.
    let unbond = op_wallet(&["unbond", "1000"]).expect_ok("unbond all");
    // The period is 4 s from the unbond's block; the wallet's clock may be
    // a second past it.
    assert!(["s (in 4s) in block", "s (in 3s) in block"].iter().any(|t| unbond.stdout.contains(t)), "{}", unbond.stdout);
    let shown = op_wallet(&["balance"]).expect_ok("balance");
    let line = shown.stdout.lines().find(|l| l.contains("unbonding")).unwrap_or_else(|| panic!("{}", shown.stdout));
    assert!(line.contains("(in ") && line.ends_with("s)"), "{line}");
    std::thread::sleep(Duration::from_millis(4500));
    let shown = op_wallet(&["balance"]).expect_ok("balance after the period");
    assert!(shown.stdout.contains("withdrawable now: `tollway wallet withdraw`"), "{}", shown.stdout);
    op_wallet(&["withdraw"]).expect_ok("withdraw");
    drop(chain);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An operator's rewards vest before they can be claimed: `balance` said
/// only "vesting 0.08 TWY", neither how much had vested nor when the rest
/// would (and there was no command to claim it).
#[test]
fn an_operators_usage_reward_says_what_has_vested_and_when_and_is_claimed() {
    let dir = temp_dir("vest");
    let mut ids = std::collections::BTreeMap::new();
    for name in ["alice", "op"] {
        let created = tollway(&dir, &["keys", "new", "--out", &format!("{name}.key"), "--json"], None).expect_ok("keys new");
        ids.insert(name, str_field(&created.json(), "public"));
    }
    let home = dir.join("home");
    let home_str = home.to_str().unwrap_or_else(|| panic!("non-UTF-8 path"));
    let (alloc_alice, alloc_op) = (format!("{}=10TWY,100USD", ids["alice"]), format!("{}=2000TWY,10USD", ids["op"]));
    tollway(
        &dir,
        &[
            "chain", "init", "--home", home_str, "--alloc", &alloc_alice, "--alloc", &alloc_op, "--param", "epoch=2s",
            "--param", "vesting=4s",
        ],
        None,
    )
    .expect_ok("chain init");
    let chain = ChainProcess::start(&dir, &home);
    let api = chain.api.as_str();
    wallet(&dir, api, "op.key", &["stake", "1000"]).expect_ok("stake");
    wallet(
        &dir,
        api,
        "op.key",
        &["register-node", "--country", "DE", "--addr", "203.0.113.7", "--capacity-bps", "100000000", "--price-usd-per-gib", "0.5"],
    )
    .expect_ok("register-node");
    // A client pays the node; the epoch's usage reward goes to vesting.
    let opened = wallet(&dir, api, "alice.key", &["open-channel", &ids["op"], "$5", "--json"]).expect_ok("open").json();
    let channel = str_field(&opened, "channel");
    let receipt = wallet(&dir, api, "alice.key", &["sign-receipt", &channel, "--usd", "2", "--bytes", "4000000000"])
        .expect_ok("sign-receipt");
    wallet(&dir, api, "op.key", &["settle-channel", receipt.stdout.trim()]).expect_ok("settle");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let rewarded = loop {
        let shown = wallet(&dir, api, "op.key", &["balance"]).expect_ok("balance");
        if shown.stdout.contains("  vesting ") {
            break shown.stdout;
        }
        assert!(std::time::Instant::now() < deadline, "no reward vesting after 10 s:\n{}", shown.stdout);
        std::thread::sleep(Duration::from_millis(200));
    };
    let rewarded_at = std::time::Instant::now();
    let line = rewarded.lines().find(|l| l.starts_with("  vesting ")).unwrap_or_default();
    assert!(line.contains(" TWY: ") && line.contains("; the rest vests linearly by chain time "), "{line}");
    assert!(line.ends_with("and a slash can take it until it has"), "{line}");
    // Once the vesting period has passed, all of it may be claimed.
    sleep_until(rewarded_at + Duration::from_millis(4500));
    let shown = wallet(&dir, api, "op.key", &["balance"]).expect_ok("balance once vested");
    assert!(shown.stdout.contains(", all vested: `tollway wallet claim` moves it to the balance"), "{}", shown.stdout);
    let claimed = wallet(&dir, api, "op.key", &["claim"]).expect_ok("claim");
    assert!(claimed.stdout.starts_with("claimed ") && claimed.stdout.contains(" TWY of vested rewards"), "{}", claimed.stdout);
    let shown = wallet(&dir, api, "op.key", &["balance"]).expect_ok("balance after the claim");
    assert!(!shown.stdout.contains("  vesting "), "{}", shown.stdout);
    drop(chain);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A signed tx from the key of `label`, posted to the chain at `api` and
/// waited for: the JSON status (committed, or rejected with why).
fn submit_as(api: &str, label: &str, body: tollway_types::TxBody) -> Value {
    use tollway_types::{Amount, SigningKey, Tx, Usd};
    let key = SigningKey::from_label(label);
    let status = get_json(api, "/v1/status");
    let nonce = get_json(api, &format!("/v1/accounts/{}", key.public()))["nonce"].as_u64().unwrap_or(0);
    let fee_usd = str_field(&status, "min_fee_usd");
    let fee = Amount::Usd(Usd::parse_decimal(&fee_usd).unwrap_or_else(|e| panic!("min_fee_usd {fee_usd}: {e}")));
    let tx = Tx { chain_id: str_field(&status, "chain_id"), signer: key.public(), nonce, fee, body }.sign(&key);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("{api}/v1/txs?wait=commit&timeout_ms=5000");
    let mut answer = agent
        .post(&url)
        .header("Content-Type", "application/octet-stream")
        .send(&tx.encode()[..])
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let text = answer.body_mut().read_to_string().unwrap_or_else(|e| panic!("POST {url}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {url} is not JSON ({e}): {text}"))
}

/// Every oracle reports `node` measured at `throughput_bps` in the current
/// epoch; those not assigned to it are refused, the others committed.
/// Returns the epoch reported on.
fn all_oracles_measure(api: &str, oracles: &[String], node: tollway_types::AccountId, throughput_bps: u64) -> u64 {
    use tollway_types::{Measurement, MeasurementOutcome, MeasurementReport, TxBody};
    let epoch = u64_field(&get_json(api, "/v1/status"), "epoch");
    let mut committed = 0;
    for oracle in oracles {
        let outcome = MeasurementOutcome::Measured { throughput_bps, latency_us: 20_000 };
        let report = MeasurementReport { epoch, measurements: vec![Measurement { node, outcome, uptime_ppm: 1_000_000 }] };
        let done = submit_as(api, oracle, TxBody::Report(report));
        committed += usize::from(done["status"] == "committed");
    }
    assert_eq!(committed, 3, "three oracles are assigned to a node in epoch {epoch}");
    epoch
}

/// A TWY amount as the API gives it ("82.5"), for comparisons within a
/// rounding.
/// A chain of 3 s epochs (home `dir/home`) with an operator key `op.key`
/// (1,100 TWY bonded, so that a 7.5 % slash leaves it above a node's
/// minimum, and 10 USD) and `n_oracles` oracles registered on it (5,000 TWY
/// bonded each; they measure from the epoch after).
struct OracleWorld {
    dir: PathBuf,
    home: PathBuf,
    /// The operator's account id.
    op: String,
    /// The oracles' key labels (`SigningKey::from_label`).
    oracles: Vec<String>,
    chain: ChainProcess,
}

fn oracle_world(name: &str, n_oracles: usize) -> OracleWorld {
    use tollway_types::{SigningKey, TxBody};
    let dir = temp_dir(name);
    let created = tollway(&dir, &["keys", "new", "--out", "op.key", "--json"], None).expect_ok("keys new").json();
    let op = str_field(&created, "public");
    let oracles: Vec<String> = (0..n_oracles).map(|i| format!("{name}-oracle-{i}")).collect();
    let home = dir.join("home");
    let home_str = home.to_str().unwrap_or_else(|| panic!("non-UTF-8 path"));
    let mut init = vec!["chain".to_string(), "init".into(), "--home".into(), home_str.into(), "--param".into(), "epoch=3s".into()];
    init.extend(["--alloc".into(), format!("{op}=stake:1100TWY,10USD")]);
    for o in &oracles {
        init.extend(["--alloc".into(), format!("{}=stake:5000TWY,10USD", SigningKey::from_label(o).public())]);
    }
    let init: Vec<&str> = init.iter().map(String::as_str).collect();
    tollway(&dir, &init, None).expect_ok("chain init");
    let chain = ChainProcess::start(&dir, &home);
    for (i, o) in oracles.iter().enumerate() {
        let addr = format!("198.51.{i}.1").parse().unwrap_or_else(|e| panic!("{e}"));
        let done = submit_as(&chain.api, o, TxBody::RegisterOracle { addr });
        assert_eq!(done["status"], "committed", "{done}");
    }
    OracleWorld { dir, home, op, oracles, chain }
}

fn twy(text: &str) -> f64 {
    text.parse().unwrap_or_else(|e| panic!("{text:?} is not an amount: {e}"))
}

/// Waits (at most 15 s) until the node's record at `api` passes `test`.
fn node_when(api: &str, node: &str, test: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let record = get_json(api, &format!("/v1/nodes/{node}"));
        if test(&record) {
            return record;
        }
        assert!(std::time::Instant::now() < deadline, "the node's record never turned as expected: {record}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An operator whose node was struck for an over-claim heard nothing: the
/// API showed no pending strike and the slashes only as a total, `balance`
/// said neither what was measured nor what comes next, and `node run`
/// printed nothing as its node was struck, slashed and ejected. A liar here
/// (claims 100 Mbit/s, measured at 40) is struck, slashed 7.5 % of its bond,
/// raises its claim (warned what that costs), and is struck, slashed and
/// ejected, with six oracles reporting on a chain of 3 s epochs.
#[test]
fn an_operator_hears_of_a_strike_its_slash_and_the_ejection() {
    let OracleWorld { dir, home, op, oracles, chain } = oracle_world("strike", 6);
    let api = chain.api.as_str();
    let op_wallet = |args: &[&str]| wallet(&dir, api, "op.key", args);
    let node_home = dir.join("node-home");
    let node_home = node_home.to_str().unwrap_or_else(|| panic!("non-UTF-8 path"));
    let init = tollway(&dir, &["node", "init", "--home", node_home], None).expect_ok("node init");
    let pin = init.stdout.lines().find_map(|l| l.strip_prefix("tls pin ")).unwrap_or_else(|| panic!("{}", init.stdout));
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(47_000);
    let port = port.to_string();
    op_wallet(&[
        "register-node", "--country", "DE", "--addr", "127.0.0.1", "--ports", &port, "--capacity-bps", "100000000",
        "--price-usd-per-gib", "0.5", "--tls-pin", pin,
    ])
    .expect_ok("register-node");
    let args = ["node", "run", "--home", node_home, "--key", "op.key", "--api", api, "--listen", "127.0.0.1", "--allow-loopback"];
    let mut node = common::Daemon::start(&dir, &args, "receipts kept in");
    let node_key = tollway_types::PublicKey::from_hex(&op).unwrap_or_else(|e| panic!("{e}"));

    // The oracles start in the epoch after they registered.
    let registered = u64_field(&get_json(api, "/v1/status"), "epoch");
    wait_for_epoch_after(api, registered);
    let struck_epoch = all_oracles_measure(api, &oracles, node_key, 40_000_000);
    let record = node_when(api, &op, |n| !n["strike"].is_null());
    let strike = &record["strike"];
    assert_eq!(u64_field(strike, "epoch"), struck_epoch, "{record}");
    assert_eq!(u64_field(strike, "measured_capacity_bps"), 40_000_000, "{record}");
    assert_eq!(u64_field(strike, "judged_claim_bps"), 100_000_000, "{record}");
    assert_eq!(u64_field(strike, "over_claim_ppm"), 2_500_000, "{record}");
    assert_eq!(u64_field(strike, "clears_at_bps"), 50_000_000, "{record}");
    // 5 % at ρ 2, and 5 % more per unit of ρ above: 7.5 % of the 1,100 TWY
    // bond, and of the rewards the measurement earned it (still vesting).
    assert_eq!(u64_field(strike, "slash_ppm"), 75_000, "{record}");
    let estimate = twy(&str_field(strike, "slash_estimate"));
    let rewards = twy(&str_field(&record, "total_rewards"));
    assert!(rewards > 0.0 && (estimate - (82.5 + 0.075 * rewards)).abs() < 0.001, "{record}");
    let status = get_json(api, "/v1/status");
    let epoch_end = u64_field(&status, "epoch_start_secs") + u64_field(&status, "epoch_secs");
    assert_eq!(u64_field(strike, "decided_at_earliest_secs"), epoch_end, "{record}");
    assert_eq!(record["slashes"], serde_json::json!([]), "{record}");
    let shown = op_wallet(&["balance"]).expect_ok("balance of a struck node");
    let second = format!(
        "below that, about {} TWY (7.5% of the bond and of the unvested rewards) is slashed and the claim reset to what was measured",
        str_field(strike, "slash_estimate")
    );
    let first = format!(
        "  STRIKE    from epoch {struck_epoch}: the oracles measured 40 Mbit/s against 100 Mbit/s claimed (×2.5 over); \
         a measurement of at least 50 Mbit/s clears it"
    );
    for said in [
        first.as_str(),
        second.as_str(),
        "until then the bond is held: neither `deregister-node` nor `withdraw`",
        "lower the claim (`tollway wallet update-node --capacity-bps 40000000`, what was measured): it counts from the next epoch on",
    ] {
        assert!(shown.stdout.contains(said), "no {said:?} in:\n{}", shown.stdout);
    }
    let line = node.wait_for_line("STRIKE", Duration::from_secs(8)).unwrap_or_else(|| panic!("no strike line: {:?}", node.lines));
    assert!(line.starts_with(&format!("STRIKE given from epoch {struck_epoch}: the oracles measured 40 Mbit/s against 100 Mbit/s")), "{line}");

    // Other oracles measure the same: the strike is confirmed.
    let slashed_epoch = all_oracles_measure(api, &oracles, node_key, 40_000_000);
    let record = node_when(api, &op, |n| n["slashes"].as_array().is_some_and(|s| !s.is_empty()));
    assert!(record["strike"].is_null(), "{record}");
    let slash = &record["slashes"][0];
    // As estimated: the slash comes before the epoch's rewards.
    let amount = str_field(slash, "amount");
    assert_eq!(u64_field(slash, "epoch"), slashed_epoch, "{record}");
    assert!((twy(&amount) - (82.5 + 0.075 * rewards)).abs() < 0.001, "{record}");
    assert_eq!((u64_field(slash, "claimed_capacity_bps"), u64_field(slash, "measured_capacity_bps")), (100_000_000, 40_000_000));
    // And the strike's own measurement, which the record no longer holds.
    let struck = &slash["struck"];
    let struck_figures = (u64_field(struck, "epoch"), u64_field(struck, "claimed_capacity_bps"), u64_field(struck, "measured_capacity_bps"));
    assert_eq!(struck_figures, (struck_epoch, 100_000_000, 40_000_000), "{record}");
    assert_eq!((slash["ejected"].as_bool(), record["active"].as_bool()), (Some(false), Some(true)), "{record}");
    let line = node.wait_for_line("SLASHED", Duration::from_secs(8)).unwrap_or_else(|| panic!("no slash line: {:?}", node.lines));
    assert!(line.starts_with(&format!("SLASHED {amount} TWY in epoch {slashed_epoch}: 100 Mbit/s claimed, 40 Mbit/s measured")), "{line}");
    assert!(line.contains(&format!("the strike of epoch {struck_epoch} (40 Mbit/s measured against 100 Mbit/s claimed)")), "{line}");
    let shown = op_wallet(&["balance"]).expect_ok("balance of a slashed node");
    assert!(shown.stdout.contains(&format!("  slashed   {amount} TWY in epoch {slashed_epoch}: ")), "{}", shown.stdout);
    assert!(!shown.stdout.contains("STRIKE"), "{}", shown.stdout);

    // Raising the claim far above the measurement is warned of first.
    let raised = op_wallet(&["update-node", "--capacity-bps", "400000000"]).expect_ok("update-node");
    let warned = "warning: 400 Mbit/s is ×10.0 the 40 Mbit/s the oracles last measured";
    assert!(raised.stderr.contains(warned) && raised.stderr.contains("slashes 45.0% of its bond"), "{}", raised.stderr);
    // Struck and confirmed again, at ρ 10: 45 % leaves less than a node's
    // minimum, and the node is deregistered.
    all_oracles_measure(api, &oracles, node_key, 40_000_000);
    node.wait_for_line("STRIKE given", Duration::from_secs(8)).unwrap_or_else(|| panic!("no second strike: {:?}", node.lines));
    all_oracles_measure(api, &oracles, node_key, 40_000_000);
    let line = node.wait_for_line("DEREGISTERED", Duration::from_secs(8)).unwrap_or_else(|| panic!("no ejection: {:?}", node.lines));
    assert!(line.contains("`tollway wallet register-node` brings it back"), "{line}");
    let second = node.lines.iter().rev().find(|l| l.starts_with("SLASHED")).cloned().unwrap_or_default();
    assert!(second.contains("400 Mbit/s claimed") && second.ends_with("so the node was deregistered"), "{second}");
    // Nothing changed since: no line.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(node.wait_for_line("", Duration::from_millis(100)), None, "{:?}", node.lines);
    drop(node);
    // The ledger keeps a node's slashed total only: a restarted chain
    // lists the slashes again from its store's epochs.
    let listed = get_json(api, &format!("/v1/nodes/{op}"))["slashes"].clone();
    drop(chain);
    let chain = ChainProcess::start(&dir, &home);
    let record = get_json(&chain.api, &format!("/v1/nodes/{op}"));
    assert_eq!(record["slashes"], listed, "{record}");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    drop(chain);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An operator saw the node's figures of now only: after a day of epochs
/// it could not tell which epoch paid what, or why one paid less.
/// `wallet node-epochs` lists the last epochs, each with its reward and
/// why in words (measured or not, uptime, reputation, the region's
/// multiplier), and the total: here the epoch the node registered in
/// (never measured: nothing) and the epoch the oracles measured it, whose
/// reward is the node's `last_reward` at its end.
#[test]
fn an_operator_sees_what_each_epoch_paid_its_node_and_why() {
    use tollway_types::{SigningKey, Token};
    let OracleWorld { dir, op, oracles, chain, .. } = oracle_world("node-epochs", 3);
    let api = chain.api.as_str();
    let op_wallet = |args: &[&str]| wallet(&dir, api, "op.key", args);
    op_wallet(&["register-node", "--country", "DE", "--addr", "127.0.0.1", "--capacity-bps", "100000000", "--price-usd-per-gib", "0.5"])
        .expect_ok("register-node");
    let node_key = tollway_types::PublicKey::from_hex(&op).unwrap_or_else(|e| panic!("{e}"));
    let registered = u64_field(&get_json(api, "/v1/status"), "epoch");
    wait_for_epoch_after(api, registered);
    let measured = all_oracles_measure(api, &oracles, node_key, 100_000_000);
    // The record's last reward is the last epoch's: read while the epoch
    // after the measured one runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let last_reward = loop {
        assert!(std::time::Instant::now() < deadline, "epoch {measured} never ended");
        let before = u64_field(&get_json(api, "/v1/status"), "epoch");
        let record = get_json(api, &format!("/v1/nodes/{op}"));
        if before == measured + 1 && u64_field(&get_json(api, "/v1/status"), "epoch") == before {
            break str_field(&record, "last_reward");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(last_reward, "0", "a measured epoch pays");

    let shown = op_wallet(&["node-epochs", "--limit", "5"]).expect_ok("node-epochs");
    let line_of = |epoch: u64| {
        let start = format!("{epoch:>7}  ");
        shown.stdout.lines().find(|l| l.starts_with(&start)).unwrap_or_else(|| panic!("no epoch {epoch} in:\n{}", shown.stdout)).to_string()
    };
    let paid = line_of(measured);
    assert!(paid.contains(&format!(" {last_reward} TWY  measured at 100 Mbit/s, latency 20.0 ms, uptime 100.0%, reputation ")), "{paid}");
    assert!(paid.contains(", region ×"), "{paid}");
    let unpaid = line_of(registered);
    assert!(unpaid.contains(" 0 TWY  not measured, and never before: no uptime reward, uptime 0.0%"), "{unpaid}");
    // The total is the rewards' sum, over the epochs listed.
    let rows = op_wallet(&["node-epochs", "--limit", "5", "--json"]).expect_ok("node-epochs --json").json();
    let rows = rows.as_array().unwrap_or_else(|| panic!("not a list: {rows}"));
    let total: Token = rows.iter().map(|r| Token::parse_decimal(&str_field(r, "reward")).unwrap_or_else(|e| panic!("{e}"))).sum();
    let total_line = shown.stdout.lines().last().unwrap_or_default();
    let total = total.to_string();
    assert!(total_line.starts_with(&format!("  total  {total:>16}  over {} epoch(s), ", rows.len())), "{total_line}\n{}", shown.stdout);
    // Of an account with no node: said so.
    let stranger = SigningKey::from_label("stranger").public().to_string();
    op_wallet(&["node-epochs", &stranger]).expect_err("node-epochs of no node", "is not a node");
    drop(chain);
    let _ = std::fs::remove_dir_all(&dir);
}
