//! `tollway chain init|run|replay` (DESIGN §3, §6). A chain home directory
//! holds:
//! - `genesis.json`: allocations, parameters, pool liquidity, validators
//!   (the store keeps a copy, and run and replay refuse a file that differs);
//! - `node.key`: the sequencer's key (mode 0600), also the USD gateway;
//! - `chain.toml`: how to run it (listen address, block interval, idle
//!   heartbeat, limits), each key overridable by a `TOLLWAY_CHAIN_*`
//!   environment variable and then by flags;
//! - `chain.redb`: the store.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tollway_chain::genesis::GenesisFile;
use tollway_chain::node::NodeConfig;
use tollway_ledger::genesis::{Allocation, Genesis};
use tollway_ledger::params::parse_duration_secs;
use tollway_ledger::Params;
use tollway_store::{Store, StoreError};
use tollway_types::{Amount, PublicKey, SigningKey, Token, Usd};

#[derive(Subcommand)]
pub enum ChainCommand {
    /// Create a chain home: genesis file, sequencer key, config and store.
    Init(InitArgs),
    /// Run the sequencer and its HTTP API until stopped.
    Run(RunArgs),
    /// Re-execute every stored block from genesis and check every root.
    Replay {
        #[arg(long, default_value = ".tollway-chain")]
        home: PathBuf,
    },
}

#[derive(Args)]
pub struct InitArgs {
    /// Directory to create (refused if it holds a chain, unless --force).
    #[arg(long, default_value = ".tollway-chain")]
    home: PathBuf,
    #[arg(long, default_value = "tollway-devnet")]
    chain_id: String,
    /// An allocation: ACCOUNT=AMOUNT[,AMOUNT…], amounts like 1000TWY, 50USD
    /// or stake:500TWY (bonded at genesis). Repeatable.
    #[arg(long = "alloc", value_name = "ACCOUNT=AMOUNTS")]
    allocs: Vec<String>,
    /// What the sequencer's own account starts with.
    #[arg(long, default_value = "1000000TWY,100000USD")]
    sequencer_alloc: String,
    /// The token/USD pool's starting liquidity.
    #[arg(long, default_value = "1000000TWY,100000USD")]
    pool: String,
    /// Override an economic parameter, e.g. --param epoch=60s. Repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Genesis time in Unix seconds (default: now; at most 10 minutes
    /// ahead).
    #[arg(long)]
    genesis_time: Option<u64>,
    /// Replace an existing chain home.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct RunArgs {
    #[arg(long, default_value = ".tollway-chain")]
    home: PathBuf,
    /// Listen address (overrides chain.toml and TOLLWAY_CHAIN_LISTEN).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Block interval, e.g. 1s or 250ms (overrides chain.toml).
    #[arg(long)]
    block_interval: Option<String>,
    /// With no tx and no epoch due, a block only this often, e.g. 60s or
    /// 5m (overrides chain.toml): an idle chain stores almost nothing.
    #[arg(long)]
    idle_heartbeat: Option<String>,
}

/// `chain.toml`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainToml {
    listen: SocketAddr,
    block_interval: String,
    /// Absent from the chain.toml of a chain initialised before it.
    #[serde(default = "default_idle_heartbeat")]
    idle_heartbeat: String,
    max_block_txs: usize,
    mempool_max_txs: usize,
    mempool_max_per_account: usize,
}

impl Default for ChainToml {
    fn default() -> ChainToml {
        let d = NodeConfig::default();
        ChainToml {
            listen: d.listen,
            block_interval: "1s".into(),
            idle_heartbeat: default_idle_heartbeat(),
            max_block_txs: d.core.max_block_txs,
            mempool_max_txs: d.core.mempool.max_txs,
            mempool_max_per_account: d.core.mempool.max_per_account,
        }
    }
}

fn default_idle_heartbeat() -> String {
    format!("{}s", NodeConfig::default().idle_heartbeat_ms / 1000)
}

pub fn run(cmd: ChainCommand) -> anyhow::Result<()> {
    match cmd {
        ChainCommand::Init(a) => init(&a),
        ChainCommand::Run(a) => run_node(&a),
        ChainCommand::Replay { home } => replay(&home),
    }
}

fn store_path(home: &Path) -> PathBuf {
    home.join("chain.redb")
}

/// Refuses a home whose `genesis.json` is not the genesis its store began
/// with. The store keeps its own copy, which every run and replay uses: an
/// edit of the file (a new chain id, another allocation) changed nothing,
/// without a word, while replay still said every root matched. Compared as
/// JSON, so a file only reformatted still passes.
fn genesis_file_matches_store(home: &Path, store: &Store) -> anyhow::Result<()> {
    let path = home.join("genesis.json");
    let Ok(file) = std::fs::read(&path) else {
        return Ok(());
    };
    let stored = store.genesis_file()?;
    let same = match (serde_json::from_slice::<serde_json::Value>(&file), serde_json::from_slice::<serde_json::Value>(&stored)) {
        (Ok(a), Ok(b)) => a == b,
        _ => file == stored,
    };
    if !same {
        bail!(
            "{} is not the genesis this chain began with: {} keeps its own copy, which the chain runs on, so an edit \
             of the file changes nothing. Put the file back as it was, or start a new chain with `tollway chain init --force`",
            path.display(),
            store_path(home).display()
        );
    }
    Ok(())
}

/// Refuses a `node.key` that is not the chain's sequencer key (another
/// home's, an account's): the node started, listened and took txs, then
/// stopped at its first block with "not signed by a validator of this
/// chain", naming no file.
fn key_is_the_sequencers(home: &Path, key: &SigningKey, store: &Store) -> anyhow::Result<()> {
    let genesis = GenesisFile::from_json(&store.genesis_file()?)
        .map_err(|e| anyhow::anyhow!("the genesis kept in {}: {e}", store_path(home).display()))?;
    if !genesis.validators.contains(&key.public()) {
        let sequencers: Vec<String> = genesis.validators.iter().map(PublicKey::to_hex).collect();
        bail!(
            "{} holds the key of {}, which is not this chain's sequencer ({}): put back the node.key \
             that `tollway chain init` wrote in this home",
            home.join("node.key").display(),
            key.public(),
            sequencers.join(", ")
        );
    }
    Ok(())
}

/// "1000TWY,50USD,stake:500TWY": each kind at most once (a second one
/// replaced the first: `1000TWY,100TWY`, meant as 100 USD, gave 100 TWY
/// and no USD).
fn parse_amounts(text: &str) -> anyhow::Result<(Token, Usd, Token)> {
    let (mut token, mut usd, mut stake) = (None, None, None);
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some(s) = part.strip_prefix("stake:") {
            match Amount::parse(s)? {
                Amount::Token(t) => set_once(&mut stake, t, part, "stake")?,
                Amount::Usd(_) => bail!("{part:?}: stake is in TWY"),
            }
            continue;
        }
        match Amount::parse(part)? {
            Amount::Token(t) => set_once(&mut token, t, part, "this currency")?,
            Amount::Usd(u) => set_once(&mut usd, u, part, "this currency")?,
        }
    }
    Ok((token.unwrap_or(Token::ZERO), usd.unwrap_or(Usd::ZERO), stake.unwrap_or(Token::ZERO)))
}

/// `slot = Some(value)`, refusing a second one: `part` gave `what` twice.
fn set_once<T>(slot: &mut Option<T>, value: T, part: &str, what: &str) -> anyhow::Result<()> {
    if slot.replace(value).is_some() {
        bail!("{part:?}: {what} given twice");
    }
    Ok(())
}

/// The pool's two sides: both needed, no stake (a pool with no USD never
/// burns, and its price reads 0, for the chain's whole life).
fn parse_pool(text: &str) -> anyhow::Result<(Token, Usd)> {
    let (token, usd, stake) = parse_amounts(text)?;
    if !stake.is_zero() {
        bail!("{text:?}: a pool holds TWY and USD, no stake");
    }
    if token.is_zero() || usd.is_zero() {
        bail!("{text:?}: the pool needs both sides, e.g. 1000000TWY,100000USD (with no USD nothing is ever burned)");
    }
    Ok((token, usd))
}

/// A genesis time more than this far ahead of now is refused: block times
/// only move 1 ms past the tip until the clock reaches it, so no epoch
/// would end meanwhile (and a time in milliseconds is 1,000 times too far).
const MAX_GENESIS_AHEAD_SECS: u64 = 600;

/// What `chain init` writes in a home.
const HOME_FILES: [&str; 4] = ["genesis.json", "node.key", "chain.toml", "chain.redb"];

/// Refuses a `node.key` in `home` that is not the sequencer key of the
/// chain there: `node.key` is also what users call their own account's
/// key, and `--force` replaced it (and lost what it held) as part of the
/// chain.
fn no_foreign_key(home: &Path) -> anyhow::Result<()> {
    let key_path = home.join("node.key");
    if !key_path.exists() {
        return Ok(());
    }
    let validators = std::fs::read(home.join("genesis.json"))
        .ok()
        .and_then(|bytes| GenesisFile::from_json(&bytes).ok())
        .map(|g| g.validators)
        .unwrap_or_default();
    let sequencer = crate::keys::load_key_file(&key_path).is_ok_and(|k| validators.contains(&k.public()));
    if !sequencer {
        bail!(
            "{} holds a key that is not the sequencer key of a chain there (an account's key?): \
             chain init never replaces it; move it, or choose another --home",
            key_path.display()
        );
    }
    Ok(())
}

fn init(a: &InitArgs) -> anyhow::Result<()> {
    let genesis_path = a.home.join("genesis.json");
    no_foreign_key(&a.home)?;
    let existing: Vec<&str> = HOME_FILES.iter().copied().filter(|f| a.home.join(f).exists()).collect();
    if !existing.is_empty() && !a.force {
        bail!(
            "{} already holds a chain (or part of one: {}); pass --force to replace it",
            a.home.display(),
            existing.join(", ")
        );
    }
    let existing = !existing.is_empty();
    // Everything is checked before anything is removed: a mistyped
    // argument to `--force` had deleted the chain it was meant to replace.
    let mut params = Params::default_params();
    for p in &a.params {
        let (k, v) = p.split_once('=').with_context(|| format!("--param {p:?}: use KEY=VALUE"))?;
        let v = v.trim();
        // Numbers and booleans as they are; anything else ("60s") as a string.
        let value = if v.parse::<f64>().is_ok() || v == "true" || v == "false" { v.to_string() } else { format!("{v:?}") };
        params = params.with_override(k.trim(), &value).with_context(|| format!("--param {p:?}"))?;
    }
    let key = SigningKey::generate(rand_core::OsRng);
    let me = key.public();
    let mut allocations = Vec::new();
    let (token, usd, staked) = parse_amounts(&a.sequencer_alloc).context("--sequencer-alloc")?;
    allocations.push(Allocation { account: me, token, usd, staked });
    for spec in &a.allocs {
        let (who, amounts) = spec.split_once('=').with_context(|| format!("--alloc {spec:?}: use ACCOUNT=AMOUNTS"))?;
        let account = PublicKey::from_hex(who).with_context(|| format!("--alloc {spec:?}"))?;
        let (token, usd, staked) = parse_amounts(amounts).with_context(|| format!("--alloc {spec:?}"))?;
        allocations.push(Allocation { account, token, usd, staked });
    }
    let (pool_token, pool_usd) = parse_pool(&a.pool).context("--pool")?;
    let now_secs = tollway_chain::node::now_ms() / 1000;
    let genesis_time_secs = a.genesis_time.unwrap_or(now_secs);
    if genesis_time_secs > now_secs + MAX_GENESIS_AHEAD_SECS {
        bail!(
            "--genesis-time {genesis_time_secs} is {} s ahead of now ({now_secs}): it is in Unix seconds, \
             and at most {MAX_GENESIS_AHEAD_SECS} s ahead (until the clock reaches it no epoch ends)",
            genesis_time_secs - now_secs
        );
    }
    let file = GenesisFile {
        ledger: Genesis {
            chain_id: a.chain_id.clone(),
            genesis_time_secs,
            gateway: me,
            params,
            allocations,
            pool_token,
            pool_usd,
        },
        validators: vec![me],
    };
    // Build once here so a bad genesis is refused before anything is written.
    file.ledger.build().map_err(|e| anyhow::anyhow!("genesis: {e}"))?;
    if existing {
        let store = store_path(&a.home);
        if store.exists() {
            // A running node holds its store: replacing the files under it
            // lost what it acknowledged afterwards.
            if let Err(tollway_store::StoreError::InUse(_)) = tollway_store::Store::open(&store) {
                bail!("{} is in use by a running chain; stop it before replacing it", store.display());
            }
        }
        for f in HOME_FILES {
            let p = a.home.join(f);
            if p.exists() {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
    }
    std::fs::create_dir_all(&a.home).with_context(|| format!("creating {}", a.home.display()))?;
    let bytes = file.to_json();
    let key_path = a.home.join("node.key");
    let toml_path = a.home.join("chain.toml");
    let written = (|| -> anyhow::Result<tollway_types::Hash32> {
        std::fs::write(&genesis_path, &bytes).with_context(|| format!("writing {}", genesis_path.display()))?;
        crate::keys::write_key_file(&key_path, &key, false)?;
        std::fs::write(&toml_path, toml::to_string(&ChainToml::default())?)
            .with_context(|| format!("writing {}", toml_path.display()))?;
        let store = store_path(&a.home);
        tollway_chain::core::init_store(&store, &bytes, &key).with_context(|| format!("{}", store.display()))
    })();
    let root = match written {
        Ok(root) => root,
        Err(e) => {
            // Every home file is this run's by now (the old ones were
            // removed above): a half-written home (a full disk) was taken
            // for a damaged chain by `chain run`, and refused by the next
            // `chain init`.
            for f in HOME_FILES {
                let _ = std::fs::remove_file(a.home.join(f));
            }
            return Err(e.context(format!("no chain written to {}", a.home.display())));
        }
    };
    outln!("chain {} initialised in {}", a.chain_id, a.home.display())?;
    outln!("  genesis      {} (time {genesis_time_secs})", genesis_path.display())?;
    outln!("  sequencer    {} (key {}, also the USD gateway)", me, key_path.display())?;
    outln!("  config       {}", toml_path.display())?;
    outln!("  store        {} (block 0, state root {})", store_path(&a.home).display(), root.short())?;
    outln!("next: tollway chain run --home {}", a.home.display())?;
    Ok(())
}

fn node_config(home: &Path, a: &RunArgs) -> anyhow::Result<NodeConfig> {
    let path = home.join("chain.toml");
    let file: ChainToml = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
        // Only a missing file means the defaults.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ChainToml::default(),
        Err(e) => bail!("reading {}: {e}", path.display()),
    };
    let env = |k: &str| std::env::var(format!("TOLLWAY_CHAIN_{k}")).ok();
    let listen = match (a.listen, env("LISTEN")) {
        (Some(l), _) => l,
        (None, Some(e)) => e.parse().with_context(|| format!("TOLLWAY_CHAIN_LISTEN={e:?}"))?,
        (None, None) => file.listen,
    };
    let interval = a.block_interval.clone().or_else(|| env("BLOCK_INTERVAL")).unwrap_or(file.block_interval);
    let block_interval = parse_interval("block interval", &interval, Duration::from_secs(3600))?;
    let heartbeat = a.idle_heartbeat.clone().or_else(|| env("IDLE_HEARTBEAT")).unwrap_or(file.idle_heartbeat);
    let idle_heartbeat = parse_interval("idle heartbeat", &heartbeat, Duration::from_secs(86_400))?;
    for (key, value) in [
        ("max_block_txs", file.max_block_txs),
        ("mempool_max_txs", file.mempool_max_txs),
        ("mempool_max_per_account", file.mempool_max_per_account),
    ] {
        // 0 made a chain that takes txs and never includes one.
        if value == 0 {
            bail!("{}: {key} = 0: it must be at least 1", path.display());
        }
    }
    let idle_heartbeat_ms = idle_heartbeat.as_millis() as u64;
    let mut c = NodeConfig { listen, block_interval, idle_heartbeat_ms, ..NodeConfig::default() };
    c.core.max_block_txs = file.max_block_txs;
    c.core.mempool.max_txs = file.mempool_max_txs;
    c.core.mempool.max_per_account = file.mempool_max_per_account;
    Ok(c)
}

/// "1s", "250ms", "2m": the block interval (at most 1 hour) or the idle
/// heartbeat (at most a day), at least 10 ms.
fn parse_interval(what: &str, s: &str, max: Duration) -> anyhow::Result<Duration> {
    let d = if let Some(ms) = s.trim().strip_suffix("ms") {
        Duration::from_millis(ms.trim().parse().with_context(|| format!("{what} {s:?}"))?)
    } else {
        Duration::from_secs(parse_duration_secs(s).map_err(|e| anyhow::anyhow!("{what} {s:?}: {e}"))?)
    };
    if d < Duration::from_millis(10) || d > max {
        let max = tollway_ledger::params::format_duration(max.as_secs());
        bail!("{what} {s:?} must be between 10ms and {max}");
    }
    Ok(d)
}

fn run_node(a: &RunArgs) -> anyhow::Result<()> {
    if !a.home.join("genesis.json").exists() {
        bail!("{} is not a chain home (no genesis.json): run `tollway chain init --home {}` first", a.home.display(), a.home.display());
    }
    let config = node_config(&a.home, a)?;
    let key_path = a.home.join("node.key");
    // The key files' own advice (`tollway keys new`, --key, TOLLWAY_KEY)
    // is wrong here: chain run takes neither, and a new key is not the
    // sequencer's.
    if !key_path.exists() {
        bail!(
            "{} is missing: it holds this chain's sequencer key, which `tollway chain init` wrote; \
             put it back from a backup (a new key cannot sign this chain's blocks)",
            key_path.display()
        );
    }
    let key = crate::keys::load_key_file(&key_path)?;
    let store = Store::open(&store_path(&a.home))?;
    genesis_file_matches_store(&a.home, &store)?;
    key_is_the_sequencers(&a.home, &key, &store)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let (node, joined) = tollway_chain::node::start(store, key, config.clone()).await?;
        {
            let core = node.shared.core();
            outln!(
                "chain {} at height {} (state root {}), solo sequencer {}",
                core.state().chain_id,
                core.tip().height,
                core.tip().state_root.short(),
                core.tip().proposer.short()
            )?;
        }
        outln!("block interval {} ms", config.block_interval.as_millis())?;
        outln!("idle heartbeat {} ms (with no tx and no epoch due, a block only this often)", config.idle_heartbeat_ms)?;
        outln!("listening on http://{}", node.addr)?;
        std::io::stdout().flush()?;
        let mut joined = joined;
        // A failed commit (a full disk) stops the node; the store keeps
        // every block it acknowledged.
        let stopped = || {
            format!(
                "the chain stopped ({} keeps every block and tx it acknowledged: run `tollway chain run` again \
                 once this is fixed)",
                store_path(&a.home).display()
            )
        };
        tokio::select! {
            r = &mut joined => r?.with_context(stopped),
            // Ctrl-C, or SIGTERM (`systemctl stop`, `docker stop`).
            _ = crate::dataplane::wait_for_stop() => {
                // Blocks are durable when committed; stopping loses only
                // unacknowledged mempool txs. The block loop finishes its
                // block, so that the store closes cleanly.
                let _ = outln!("stopping");
                node.stop();
                match tokio::time::timeout(Duration::from_secs(30), joined).await {
                    Ok(r) => r??,
                    Err(_) => bail!("the block loop did not stop within 30 s"),
                }
                Ok(())
            }
        }
    })
}

/// The store, opened to read only: replay only reads, so it reads a
/// store on a read-only filesystem (it opened it to write, and could not),
/// and one another replay is reading. Not beside a running chain: redb's
/// lock refuses either to open while the other has the file. A store its
/// chain did not close (killed, crashed) is repaired first, which writes.
fn open_to_replay(path: &Path) -> anyhow::Result<Store> {
    match Store::open_read_only(path) {
        Err(StoreError::NeedsRepair(shown)) => {
            eprintln!("{shown} was not closed cleanly (the chain was killed or crashed): repairing it before the replay");
            Store::open(path).map_err(|e| match e {
                // The repair's write refused (a read-only filesystem):
                // what the repair needs, then why it could not.
                StoreError::CannotOpen(..) => anyhow::anyhow!("{}: {e}", StoreError::NeedsRepair(shown)),
                e => e.into(),
            })
        }
        opened => Ok(opened?),
    }
}

fn replay(home: &Path) -> anyhow::Result<()> {
    let store = open_to_replay(&store_path(home))?;
    genesis_file_matches_store(home, &store)?;
    let started = Instant::now();
    let tip = store.tip_height()?;
    let bar = indicatif::ProgressBar::new(tip);
    bar.set_style(
        indicatif::ProgressStyle::with_template("replaying {bar:40} {pos}/{len} blocks ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if std::env::var_os("CI").is_some() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let report = tollway_chain::replay::replay(&store, |h, _| bar.set_position(h))?;
    bar.finish_and_clear();
    outln!(
        "replayed {} blocks ({} txs, {} epochs) in {:.2} s: every state root matches; tip {} root {}",
        report.blocks,
        report.txs,
        report.epochs,
        started.elapsed().as_secs_f64(),
        report.tip_height,
        report.tip_root
    )?;
    Ok(())
}
