//! `tollway node` (the provider's tunnel server) and `tollway connect` (the
//! consumer's local SOCKS5 / HTTP proxy). Both read what they need
//! from the chain's API (node records, channels) and hand plain parameter
//! structs to `tollway-node` / `tollway-client`.

use crate::api_client::{ApiClient, NodeInfo};
use crate::node_config::{self, NodeSettings};
use crate::wallet::NodeFilter;
use crate::keys;
use anyhow::{bail, Context};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tollway_client::choice::{self, Candidate};
use tollway_client::connect::ConnectOptions;
use tollway_client::{human_bytes, serve_front, ClientConfig, FrontConfig, Hop, Renewal, Route, RoutePool, FIRST_BYTES_WAIT_DEFAULT};
use tollway_net::{ClientOptions, ServerOptions, TlsIdentity, Transport};
use tollway_node::{ChainChannels, NodeServer, ReceiptBook, ServerConfig};
use tollway_socks::Credentials;
use tollway_tunnel::session::{
    check_payment_terms, check_price_terms, Limits, NodeTerms,
};
use tollway_tunnel::ExitPolicy;
use tollway_types::keys::AccountId;
use tollway_types::tx::ChannelId;
use tollway_types::SigningKey;

const DEFAULT_API: &str = "http://127.0.0.1:7070";

fn api_url(flag: &Option<String>) -> String {
    match flag {
        Some(url) => url.clone(),
        None => std::env::var("TOLLWAY_API").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_API.into()),
    }
}

#[derive(clap::Subcommand)]
pub enum NodeCommand {
    /// Create the node's TLS key in HOME and print its pin, for
    /// `tollway wallet register-node --tls-pin`.
    Init {
        #[arg(long, value_name = "DIR")]
        home: PathBuf,
        /// Replace an existing TLS key.
        #[arg(long)]
        force: bool,
    },
    /// Serve tunnels as an exit (and relay) on the ports of the node's
    /// ledger record, over TLS/TCP and QUIC, until Ctrl-C.
    Run(Box<NodeRunArgs>),
    /// The newest receipt held per channel, whether the chain has settled
    /// it, and for each it has not the hex that `tollway wallet
    /// settle-channel` takes.
    Receipts {
        #[arg(long, value_name = "DIR")]
        home: PathBuf,
        /// The chain's API, asked what each channel has settled [default:
        /// node.toml's api, else $TOLLWAY_API, else http://127.0.0.1:7070].
        #[arg(long, value_name = "URL")]
        api: Option<String>,
        /// Print JSON lines instead of sentences.
        #[arg(long)]
        json: bool,
    },
}

/// `node run`'s flags. Each but --home may instead be a key of the home's
/// `node.toml` or a `TOLLWAY_NODE_<KEY>` variable (`node_config`).
#[derive(clap::Args)]
pub struct NodeRunArgs {
    /// The node's home: its TLS key, receipts and node.toml, whose keys
    /// stand in for the flags below (as do TOLLWAY_NODE_<KEY> variables;
    /// a flag beats both).
    #[arg(long, value_name = "DIR")]
    home: PathBuf,
    #[command(flatten)]
    flags: node_config::Flags,
}

impl NodeRunArgs {
    /// The flags over the environment over `node.toml` over the defaults.
    fn settings(&self) -> anyhow::Result<NodeSettings> {
        NodeSettings::resolve(&self.home, self.flags.clone(), node_config::read(&self.home)?)
    }
}

pub fn run_node(command: &NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::Init { home, force } => {
            std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
            let path = home.join("tls.key");
            let key = SigningKey::generate(rand_core::OsRng);
            keys::write_key_file(&path, &key, *force)?;
            let identity = TlsIdentity::from_seed(key.seed_bytes())?;
            outln!("TLS key written to {} (0600)", path.display())?;
            outln!("tls pin {}", tollway_types::keys::hex(&identity.pin()))?;
            outln!(
                "register with: tollway wallet register-node --tls-pin {} ...",
                tollway_types::keys::hex(&identity.pin())
            )?;
            // The operator's settings are theirs: an existing file stays.
            let settings = home.join(node_config::FILE_NAME);
            if !settings.exists() {
                std::fs::write(&settings, node_config::template())
                    .with_context(|| format!("writing {}", settings.display()))?;
                outln!("settings of `node run` in {} (the defaults; uncomment a key to change it)", settings.display())?;
            }
            Ok(())
        }
        NodeCommand::Run(args) => node_run(args),
        NodeCommand::Receipts { home, api, json } => {
            node_home_initialised(home)?;
            let path = home.join("receipts.json");
            if !path.exists() {
                if !*json {
                    outln!("no receipts yet (no paid traffic served)")?;
                }
                return Ok(());
            }
            let book = ReceiptBook::open(path)?;
            let mut all = book.all();
            all.sort_by_key(|r| r.receipt.channel);
            // Every receipt was listed with its settle command, those the
            // chain had settled or closed too: only the chain knows which.
            let url = api_url(&node_config::api_of_home(home, api.clone())?);
            let chain = ApiClient::interactive(&url)?;
            let mut unanswered = None;
            for r in all {
                // A chain that did not answer once is not asked again: a
                // hung one would hold each lookup for its timeout.
                let standing = match unanswered.is_none().then(|| channel_on_chain(&chain, &r.receipt.channel)) {
                    Some(Ok(on_chain)) => Some(receipt_standing(&r.receipt, on_chain.as_ref())),
                    Some(Err(e)) => {
                        unanswered = Some(e);
                        None
                    }
                    None => None,
                };
                let hex = tollway_types::keys::hex(&tollway_types::codec::encode(&r));
                let (channel, bytes, usd) = (r.receipt.channel, r.receipt.cumulative_bytes, r.receipt.cumulative_usd);
                if *json {
                    let (state, unsettled) = match standing {
                        Some(ReceiptStanding::ToSettle { unsettled, .. }) => ("to_settle", Some(unsettled)),
                        Some(ReceiptStanding::Settled { .. }) => ("settled", None),
                        Some(ReceiptStanding::Closed) => ("closed", None),
                        None => ("unknown", None),
                    };
                    let line = serde_json::json!({
                        "channel": channel.to_hex(),
                        "cumulative_bytes": bytes,
                        // A decimal string, as the API and `wallet sign-receipt` give it
                        // (it was "$0.000986" here).
                        "cumulative_usd": usd,
                        "state": state,
                        "unsettled_usd": unsettled,
                        "hex": hex,
                    });
                    outln!("{line}")?;
                    continue;
                }
                match standing {
                    Some(ReceiptStanding::ToSettle { unsettled, .. }) => outln!(
                        "channel {channel}: {bytes} bytes, {usd} ({unsettled} not settled yet); \
                         settle with: tollway wallet settle-channel {hex}"
                    )?,
                    Some(ReceiptStanding::Settled { .. }) => {
                        outln!("channel {channel}: {bytes} bytes, {usd}; settled on the chain, nothing left to settle")?
                    }
                    Some(ReceiptStanding::Closed) => outln!(
                        "channel {channel}: {bytes} bytes, {usd}; the channel is closed on the chain (by its client, \
                         or by the chain past its expiry and grace), so nothing more can be settled on it"
                    )?,
                    None => outln!(
                        "channel {channel}: {bytes} bytes, {usd}; if the chain has not settled it: \
                         tollway wallet settle-channel {hex}"
                    )?,
                }
            }
            if let Some(e) = unanswered {
                eprintln!("warning: which receipts the chain has settled is unknown: {e:#}");
            }
            Ok(())
        }
    }
}

/// Where a receipt the node holds stands against its channel on the chain:
/// the one rule for `node receipts`, the count at a stop and the settling
/// passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReceiptStanding {
    /// Newer than the channel's `paid`: settling it pays `unsettled`.
    ToSettle { unsettled: tollway_types::amount::Usd, expires_at_secs: u64 },
    /// No newer than the channel's `paid`: the chain has settled it.
    Settled { paid: tollway_types::amount::Usd, expires_at_secs: u64 },
    /// The channel is gone from the chain (its client closed it, or the
    /// chain did past its expiry and grace, ADR 0021): nothing can be
    /// settled on it any more.
    Closed,
}

/// `receipt` against `on_chain`, the chain's record of its channel (`None`
/// once the channel is closed).
fn receipt_standing(receipt: &tollway_types::tx::Receipt, on_chain: Option<&crate::api_client::Channel>) -> ReceiptStanding {
    match on_chain {
        None => ReceiptStanding::Closed,
        Some(c) if receipt.cumulative_usd <= c.paid => ReceiptStanding::Settled { paid: c.paid, expires_at_secs: c.expires_at_secs },
        Some(c) => ReceiptStanding::ToSettle {
            unsettled: tollway_types::amount::Usd(receipt.cumulative_usd.0 - c.paid.0),
            expires_at_secs: c.expires_at_secs,
        },
    }
}

/// The chain's record of `channel`; `None` when the chain has none (closed,
/// or never opened), an error when it did not answer.
fn channel_on_chain(api: &ApiClient, channel: &ChannelId) -> anyhow::Result<Option<crate::api_client::Channel>> {
    match api.channel(channel) {
        Ok((found, _)) => Ok(Some(found)),
        Err(e) if e.downcast_ref::<crate::api_client::ApiError>().is_some_and(|a| a.code == "unknown_channel") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Looks up each of `channels` on the chain, in turn; one the chain did
/// not answer for is left out.
fn channels_on_chain(
    api: &ApiClient,
    channels: &[ChannelId],
) -> std::collections::HashMap<ChannelId, Option<crate::api_client::Channel>> {
    channels.iter().filter_map(|id| channel_on_chain(api, id).ok().map(|found| (*id, found))).collect()
}

/// Of `held`, how many have something left to settle by
/// [`receipt_standing`] against `answered` (the chain's answers for the
/// channels `asked` about), and how many were asked about and not
/// answered. A channel not asked about got its first receipt since: newer
/// than anything settled, so left to settle.
fn count_to_settle(
    held: &[tollway_types::tx::SignedReceipt],
    asked: &std::collections::HashSet<ChannelId>,
    answered: &std::collections::HashMap<ChannelId, Option<crate::api_client::Channel>>,
) -> (usize, usize) {
    held.iter().fold((0, 0), |(to_settle, unknown), r| match answered.get(&r.receipt.channel) {
        Some(found) => match receipt_standing(&r.receipt, found.as_ref()) {
            ReceiptStanding::ToSettle { .. } => (to_settle + 1, unknown),
            ReceiptStanding::Settled { .. } | ReceiptStanding::Closed => (to_settle, unknown),
        },
        None if asked.contains(&r.receipt.channel) => (to_settle, unknown + 1),
        None => (to_settle + 1, unknown),
    })
}

/// How long a stop waits for the chain to say which receipts it has
/// settled, beside the sessions' close: a hung chain must not hold the
/// stop much longer.
const STOP_LOOKUP_FOR: Duration = Duration::from_secs(3);

/// Whether `node init` made `home` (it writes the TLS key first).
fn node_home_initialised(home: &Path) -> anyhow::Result<()> {
    if !home.join("tls.key").exists() {
        bail!("{} has no tls.key: run `tollway node init --home {}` first", home.display(), home.display());
    }
    Ok(())
}

fn load_tls(home: &Path) -> anyhow::Result<TlsIdentity> {
    node_home_initialised(home)?;
    let path = home.join("tls.key");
    let seed = keys::load_key_file(&path)?.seed_bytes();
    Ok(TlsIdentity::from_seed(seed)?)
}

/// An exclusive lock on HOME/node.lock, or why not.
fn lock_home(home: &Path) -> anyhow::Result<std::fs::File> {
    let path = home.join("node.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{} is in use by another `tollway node run` (it holds {}): stop that one first, or give this one a home of its own",
            home.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// The chain's record of node `id`; `advice` says what to do if it has none,
/// which differs for its operator and for a client.
fn node_record(api: &ApiClient, id: &AccountId, advice: &str) -> anyhow::Result<NodeInfo> {
    let (node, _) = api.node(id)?.with_context(|| format!("node {} is not registered on this chain: {advice}", id.short()))?;
    Ok(node)
}

/// `relayed 12.3 MiB down and 1.20 MiB up in 60 s (1.72 and 0.17 Mbit/s)`:
/// what a node read from destinations (for its clients' downloads) and
/// wrote to them, over `over`.
fn relayed_line(down_bytes: u64, up_bytes: u64, over: Duration) -> String {
    let mbps = |bytes: u64| bytes as f64 * 8.0 / over.as_secs_f64().max(1e-3) / 1e6;
    format!(
        "relayed {} down and {} up in {} s ({:.2} and {:.2} Mbit/s)",
        human_bytes(down_bytes),
        human_bytes(up_bytes),
        over.as_secs_f64().round(),
        mbps(down_bytes),
        mbps(up_bytes)
    )
}

/// 1 Mbit/s is 10⁶ bits a second.
const BYTES_PER_SEC_PER_MBPS: u64 = 125_000;

/// What to tell an operator whose cap is below the capacity the node
/// claims: the oracles measure what it delivers, and a node that delivers
/// less than it claims loses stake.
fn cap_below_claim(max_rate_mbps: u64, claimed_capacity_bps: u64) -> Option<String> {
    let cap_bps = max_rate_mbps.saturating_mul(1_000_000);
    (cap_bps < claimed_capacity_bps).then(|| {
        format!(
            "warning: a cap of {max_rate_mbps} Mbit/s is below the {} Mbit/s this node claims; the oracles measure \
             what it delivers, and a node that delivers less than it claims loses stake: lower the claim with \
             `tollway wallet update-node --capacity-bps {cap_bps}`",
            claimed_capacity_bps as f64 / 1e6
        )
    })
}

/// Raises this process's soft limit on open files to its hard limit, as
/// Go programs do at start: a node holds a socket per connection, per
/// path and per destination, and a desktop's soft limit is often 1,024
/// against a hard one of hundreds of thousands. Returns the limit before
/// and after (the same when it could not be raised), `None` when unknown.
fn raise_open_files_limit() -> Option<(u64, u64)> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // The kernel's default ceiling (fs.nr_open): an unlimited hard limit
    // cannot be set as the soft one.
    const CEILING: u64 = 1 << 20;
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(CEILING);
    let target = limit.maximum.unwrap_or(CEILING).min(CEILING);
    if before >= target {
        return Some((before, before));
    }
    match setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum: limit.maximum }) {
        Ok(()) => Some((before, target)),
        Err(_) => Some((before, before)),
    }
}

fn node_run(args: &NodeRunArgs) -> anyhow::Result<()> {
    let a = &args.settings()?;
    let (receipt_interval_bytes, credit_window_bytes) =
        (a.receipt_interval_kib.saturating_mul(1024), a.credit_window_kib.saturating_mul(1024));
    check_payment_terms(receipt_interval_bytes, credit_window_bytes).map_err(|why| {
        anyhow::anyhow!(
            "--receipt-interval-kib {} with --credit-window-kib {}: {why}",
            a.receipt_interval_kib,
            a.credit_window_kib
        )
    })?;
    let identity = load_tls(&a.home)?;
    // Held until the node stops: two nodes on one home would each write
    // their own receipts.json over the other's.
    let _home_lock = lock_home(&a.home)?;
    let key = keys::load_key_file(&a.key)?;
    let url = api_url(&a.api);
    // Its start is a person's wait at a terminal; later reads are the
    // daemon's own.
    let api = ApiClient::interactive(&url)?;
    let status = api.status().with_context(|| format!("asking the chain at {url}"))?;
    let record = node_record(&api, &key.public(), "run `tollway wallet register-node` first")?;
    if record.tls_key_pin != identity.pin() {
        bail!(
            "this node's TLS key (pin {}) is not the one its ledger record pins ({}): \
             update the record with `tollway wallet update-node --tls-pin {}` or use the matching tls.key",
            tollway_types::keys::hex(&identity.pin()),
            tollway_types::keys::hex(&record.tls_key_pin),
            tollway_types::keys::hex(&identity.pin())
        );
    }
    if !record.active {
        bail!(
            "node {} is deregistered: clients no longer find it; `tollway wallet register-node` brings it back",
            record.id.short()
        );
    }
    // Clients would refuse the node's hello (its receipts could not grow):
    // said here, where the operator can change it.
    check_price_terms(record.price_usd_micro_per_gib, receipt_interval_bytes).map_err(|why| {
        anyhow::anyhow!(
            "this node's price on the chain with --receipt-interval-kib {}: {why}; \
             raise it with `tollway wallet update-node --price-usd-per-gib`, or ask for receipts less often",
            a.receipt_interval_kib
        )
    })?;
    let mut terms = NodeTerms::new(status.chain_id.clone(), key.public(), record.price_usd_micro_per_gib);
    terms.receipt_interval_bytes = receipt_interval_bytes;
    terms.credit_window_bytes = credit_window_bytes;
    terms.unpaid_timeout = a.unpaid_timeout;
    let mut config = ServerConfig {
        terms,
        listen_ip: a.listen,
        ports: record.port_first..=record.port_last,
        transports: a.transports.clone(),
        policy: ExitPolicy {
            allow_loopback: a.allow_loopback,
            allow_private: a.allow_private,
            denied_ports: a.deny_ports.clone(),
            own_addrs: (record.addrs.iter().copied())
                .chain(Some(a.listen).filter(|ip| !ip.is_unspecified()))
                .chain(tollway_node::exit::host_ipv6_addrs())
                .collect(),
        },
        server: ServerOptions::default(),
        connect_timeout: Duration::from_secs(10),
        max_sessions: a.max_sessions,
        max_rate_bytes_per_sec: a.max_rate_mbps.map(|mbps| mbps * BYTES_PER_SEC_PER_MBPS),
    };
    // Connections that have sent nothing yet take at most a quarter of the
    // descriptors, so that idle ones from many addresses cannot starve the
    // sessions, their destinations and the receipt book of them.
    let open_files = raise_open_files_limit();
    if let Some((_, limit)) = open_files {
        let quarter = usize::try_from(limit / 4).unwrap_or(usize::MAX).max(64);
        config.server.max_waiting_connections = config.server.max_waiting_connections.min(quarter);
    }
    let receipts = ReceiptBook::open(a.home.join("receipts.json"))?;
    let settle_every = tollway_ledger::params::parse_duration_secs(&a.settle_every)
        .map_err(|e| anyhow::anyhow!("--settle-every: {e}"))?;
    let settle_min = tollway_types::amount::Usd::parse_decimal(&a.settle_min_usd)
        .map_err(|e| anyhow::anyhow!("--settle-min-usd {:?}: {e}", a.settle_min_usd))?;
    let settler = if settle_every > 0 {
        let settler = Arc::new(Settler {
            api: ApiClient::new(&url)?,
            key: key.clone(),
            receipts: receipts.clone(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            pass: std::sync::Mutex::new(()),
        });
        let periodic = settler.clone();
        std::thread::spawn(move || periodic.run(Duration::from_secs(settle_every), settle_min));
        Some(settler)
    } else {
        None
    };
    // Each TCP session on one core's thread (thread-per-core); kept for
    // the life of the process.
    let shards = tollway_net::Shards::per_core()?;
    config.server.shards = Some(shards.handles());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let kept = rt.block_on(async move {
        let channels = Arc::new(ChainChannels::new(&url));
        let config_waiting = config.server.max_waiting_connections;
        let server = NodeServer::start(config, &identity, channels, receipts.clone()).await?;
        // In the wallet's terms ("$0.5 per GiB"), not the ledger's micro-USD.
        outln!(
            "node {} on chain {}: {} per GiB, {} claimed, tls pin {}",
            key.public().short(),
            status.chain_id,
            tollway_types::Usd(u128::from(record.price_usd_micro_per_gib)),
            crate::wallet::format_bps(record.claimed_capacity_bps),
            tollway_types::keys::hex(&identity.pin()[..4])
        )?;
        for (transport, addr) in server.local_addrs() {
            outln!("listening {transport} {addr}")?;
        }
        outln!(
            "a receipt due every {} KiB, a client paused {} KiB past its newest",
            a.receipt_interval_kib, a.credit_window_kib
        )?;
        if let Some(mbps) = a.max_rate_mbps {
            outln!("relaying at most {mbps} Mbit/s each way")?;
            if let Some(warning) = cap_below_claim(mbps, record.claimed_capacity_bps) {
                outln!("{warning}")?;
            }
        }
        if let Some((before, after)) = open_files {
            let raised = if after > before { format!(" (raised from {before})") } else { String::new() };
            outln!(
                "open files: at most {after}{raised}; at most {} connections waiting for a first byte",
                config_waiting
            )?;
        }
        outln!("receipts kept in {}", a.home.join("receipts.json").display())?;
        std::io::stdout().flush()?;
        // The node's own record, twice an epoch: an operator learns of a
        // strike, a slash or an ejection here, where they look. Once an
        // epoch, a read a little late now and then saw two epoch ends, and
        // a strike given at the first and confirmed at the second was told
        // as the slash alone.
        if let Some(line) = pending_strike_line(&record) {
            outln!("{line}")?;
        }
        let epoch_secs = status.epoch_secs.unwrap_or(RECORD_WATCH_DEFAULT_SECS * 2);
        let watch_every = Duration::from_millis((epoch_secs.saturating_mul(500)).clamp(1_000, RECORD_WATCH_MAX_SECS * 1000));
        let watch_api = ApiClient::new(&url)?;
        std::thread::spawn(move || watch_record(&watch_api, record, watch_every));
        // What was relayed since the last status line, and when that was.
        let last_relayed = std::cell::Cell::new((std::time::Instant::now(), server.relayed_bytes()));
        let status = every_when_changed(Duration::from_secs(a.status_secs), || {
            let held = receipts.all();
            let bytes: u64 = held.iter().map(|r| r.receipt.cumulative_bytes).sum();
            let usd: tollway_types::amount::Usd = held.iter().map(|r| r.receipt.cumulative_usd).sum();
            let (now, relayed) = (std::time::Instant::now(), server.relayed_bytes());
            let (then, before) = last_relayed.replace((now, relayed));
            let line = format!(
                "serving {} session(s) on {} connection(s); {}; receipts held for {} and {usd} over {} channel(s)",
                server.n_sessions(),
                server.live_connections(),
                relayed_line(relayed.0 - before.0, relayed.1 - before.1, now.duration_since(then)),
                human_bytes(bytes),
                held.len()
            );
            std::future::ready(Some(line))
        });
        tokio::select! {
            _ = wait_for_stop() => {}
            _ = status => {}
        }
        // It counted every receipt held, those the chain had settled too:
        // the chain is asked, on a thread of its own (a request to a hung
        // chain is left behind as the process ends), while the sessions
        // close; their last receipts are newer than anything settled.
        let n_sessions = server.n_sessions();
        let asked: std::collections::HashSet<ChannelId> = receipts.all().iter().map(|r| r.receipt.channel).collect();
        let (looked_up, on_chain) = std::sync::mpsc::channel();
        let (lookup_api, to_ask) = (ApiClient::new(&url)?, asked.iter().copied().collect::<Vec<_>>());
        std::thread::spawn(move || {
            let _ = looked_up.send(channels_on_chain(&lookup_api, &to_ask));
        });
        let lookup_deadline = tokio::time::Instant::now() + STOP_LOOKUP_FOR;
        server.shutdown();
        // The sessions' last receipts come as they close: the book is
        // written once they have (or a few seconds on). The settling
        // thread holds the book too, so it is not dropped (which would
        // write it) before the process ends.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while server.n_sessions() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let on_chain = loop {
            match on_chain.try_recv() {
                Ok(found) => break Some(found),
                Err(std::sync::mpsc::TryRecvError::Empty) if tokio::time::Instant::now() < lookup_deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => break None,
            }
        };
        let (to_settle, unknown) = count_to_settle(&receipts.all(), &asked, &on_chain.unwrap_or_default());
        let unknown = match unknown {
            0 => String::new(),
            n => format!(" ({n} more the chain did not say within {} s)", STOP_LOOKUP_FOR.as_secs()),
        };
        outln!("stopping: {n_sessions} session(s) closed, {to_settle} channel(s) with receipts to settle{unknown}")?;
        anyhow::Ok(receipts.flush())
    })?;
    // A node stopped may stay down for longer than its channels last, and
    // a channel that expires unsettled goes back to its client whole. So
    // the last pass also settles what expires within a day, whatever its
    // amount; the rest waits for the next start's pass. (It settled
    // nothing at stop.) A book that could not be written (a full disk)
    // holds its receipts in memory alone: the pass settles each one worth
    // more than its fee, as nothing else keeps them. (The failed write
    // ended the stop before its pass, and they were lost.)
    if let Some(settler) = settler {
        let pass = SettlePass {
            min: if kept.is_ok() { settle_min } else { tollway_types::amount::Usd::ZERO },
            expiring_within: Duration::from_secs(settle_every.saturating_mul(2).max(STOP_SETTLES_EXPIRING_WITHIN_SECS)),
            deadline: Some(std::time::Instant::now() + STOP_SETTLING_FOR),
        };
        let (done, left) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(settler.last_pass(&pass));
        });
        // The pass checks its deadline between requests; a request to a
        // chain that does not answer is left behind, as the process ends.
        let left = left.recv_timeout(STOP_SETTLING_FOR + Duration::from_secs(1)).ok();
        match (left, &kept) {
            (Some(0), _) => {}
            (Some(n), Ok(())) => outln!("{n} channel(s) not settled before stopping: the next start settles them")?,
            (None, Ok(())) => outln!("settling at stop took too long: the next start settles what is left")?,
            (Some(_) | None, Err(_)) => outln!("some receipts were neither settled nor written, and are lost")?,
        }
    }
    kept.with_context(|| format!("keeping the receipts in {}", a.home.join("receipts.json").display()))
}

/// How often `node run` reads its record when the chain does not say how
/// long an epoch is (an older chain), and at most (half the default
/// hour-long epoch).
const RECORD_WATCH_DEFAULT_SECS: u64 = 60;
const RECORD_WATCH_MAX_SECS: u64 = 1_800;

/// Reads the node's record every `every` and prints what changed in its
/// strike, slashes and registration (`record_changes`), for as long as the
/// process runs. A failed read is skipped: the next one compares with the
/// last record read.
fn watch_record(api: &ApiClient, mut last: NodeInfo, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Ok(Some((now, _))) = api.node(&last.id) else { continue };
        for line in record_changes(&last, &now) {
            let _ = outln!("{line}");
        }
        last = now;
    }
}

/// A strike pending when the node starts.
fn pending_strike_line(record: &NodeInfo) -> Option<String> {
    let strike = record.strike.as_ref()?;
    Some(format!(
        "STRIKE pending {}; `tollway wallet balance` says what comes next",
        crate::wallet::describe_strike(strike)
    ))
}

/// One line per change an operator must hear of between two reads of the
/// node's record: a strike given, cleared or renewed, a slash (how much),
/// the node deregistered. Nothing when none of them changed.
fn record_changes(before: &NodeInfo, after: &NodeInfo) -> Vec<String> {
    let mut lines = Vec::new();
    let last_slash_epoch = before.slashes.last().map(|s| s.epoch);
    let new_slashes: Vec<_> = after.slashes.iter().filter(|s| last_slash_epoch.is_none_or(|e| s.epoch > e)).collect();
    // A slash confirms a strike. A read delayed past two epoch ends (the
    // chain slow to answer) sees the slash and never the strike, so the
    // slash says there was one; one told before is not told again. A
    // slash of a newer chain names its strike's epoch already.
    let untold_strike = |i: usize, named: bool| match (i == 0 && before.strike.is_some(), named) {
        (true, _) => "",
        (false, true) => "; that strike was given between two reads of the node's record",
        (false, false) => "; it confirmed a strike given at an earlier measurement, between two reads of the node's record",
    };
    for (i, slash) in new_slashes.iter().enumerate() {
        lines.push(format!("SLASHED {}{}", crate::wallet::describe_slash(slash), untold_strike(i, slash.struck.is_some())));
    }
    // A chain that lists no slashes still counts them.
    if new_slashes.is_empty() && after.total_slashed > before.total_slashed {
        let taken = tollway_types::Token(after.total_slashed.0 - before.total_slashed.0);
        lines.push(format!("SLASHED {taken} for an over-claim; the claim was reset to the measurement{}", untold_strike(0, false)));
    }
    match (&before.strike, &after.strike) {
        (None, Some(_)) => lines.extend(pending_strike_line(after).map(|l| l.replacen("STRIKE pending", "STRIKE given", 1))),
        (Some(old), Some(new)) if old.epoch != new.epoch => {
            lines.extend(pending_strike_line(after).map(|l| l.replacen("STRIKE pending", "STRIKE renewed", 1)))
        }
        (Some(_), None) if new_slashes.is_empty() && after.total_slashed == before.total_slashed => lines.push(format!(
            "strike cleared: the oracles measured {} against {} claimed",
            crate::wallet::format_bps(after.verified_capacity_bps),
            crate::wallet::format_bps(after.claimed_capacity_bps)
        )),
        _ => {}
    }
    if before.active && !after.active {
        lines.push(
            "DEREGISTERED: the node left the market, and clients no longer find it; \
             `tollway wallet register-node` brings it back (with at least a node's minimum stake)"
                .to_string(),
        );
    }
    lines
}

/// At stop, channels expiring this soon are settled whatever their amount.
const STOP_SETTLES_EXPIRING_WITHIN_SECS: u64 = 86_400;
/// How long a stop may spend settling: well inside the 90 s a service
/// manager gives a stop before it kills.
const STOP_SETTLING_FOR: Duration = Duration::from_secs(20);

/// What a settling pass settles: channels with at least `min` unsettled,
/// or any unsettled amount if they expire within `expiring_within`; until
/// `deadline`, if any.
struct SettlePass {
    min: tollway_types::amount::Usd,
    expiring_within: Duration,
    deadline: Option<std::time::Instant>,
}

/// Settles the receipt book's channels on the chain: periodically
/// ([`Settler::run`]) and once at stop ([`Settler::last_pass`]), never two
/// passes at once (both sign with the node's key: one of two transactions
/// with the same nonce is refused).
struct Settler {
    api: ApiClient,
    key: SigningKey,
    receipts: Arc<ReceiptBook>,
    /// Set at stop: the periodic pass ends at its next request.
    stopping: std::sync::atomic::AtomicBool,
    /// Held for a pass.
    pass: std::sync::Mutex<()>,
}

impl Settler {
    /// Settles what the receipt book holds beyond the chain's settlement,
    /// at start and then every `every`, for channels with at least `min`
    /// unsettled or about to expire, until stopped; a failure is reported
    /// and retried next period. (It slept first: a node that restarted
    /// waited a whole period, 10 minutes by default, before it settled
    /// what its last run was paid, and a node restarted more often than
    /// that never did.)
    ///
    /// While the receipt book cannot be written (a full disk), the chain is
    /// all that keeps what clients paid: a pass then runs at least every
    /// [`UNWRITTEN_SETTLE_EVERY`] and settles every receipt worth more than
    /// its fee, so a crash loses at most that long of receipts, not all
    /// since the disk filled.
    fn run(&self, every: Duration, min: tollway_types::amount::Usd) {
        let mut last_pass: Option<std::time::Instant> = None;
        let mut said_unwritten = false;
        while !self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            let unwritten = self.receipts.unwritten();
            if unwritten != said_unwritten {
                if unwritten {
                    eprintln!(
                        "settle: the receipt book cannot be written, so every receipt worth more than its fee is \
                         settled on the chain every {} s until it can",
                        every.min(UNWRITTEN_SETTLE_EVERY).as_secs()
                    );
                } else {
                    eprintln!("settle: the receipt book is written again; settling every {} s as before", every.as_secs());
                }
                said_unwritten = unwritten;
            }
            let (period, min) = if unwritten {
                (every.min(UNWRITTEN_SETTLE_EVERY), tollway_types::amount::Usd::ZERO)
            } else {
                (every, min)
            };
            if last_pass.is_none_or(|at| at.elapsed() >= period) {
                let pass = SettlePass { min, expiring_within: every * 2, deadline: None };
                let _pass = self.pass.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                settle_due(self, &pass, &self.stopping);
                last_pass = Some(std::time::Instant::now());
            }
            // Short sleeps: a book that fails is noticed within one.
            std::thread::sleep(period.min(Duration::from_secs(1)));
        }
    }

    /// Stops the periodic passes, waits for one under way to end (up to
    /// `pass`'s deadline), then makes `pass`. How many due channels it
    /// left for lack of time.
    fn last_pass(&self, pass: &SettlePass) -> usize {
        self.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        let _pass = loop {
            match self.pass.try_lock() {
                Ok(guard) => break guard,
                Err(std::sync::TryLockError::Poisoned(e)) => break e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    if pass.deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                        return self.receipts.all().len();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        settle_due(self, pass, &std::sync::atomic::AtomicBool::new(false))
    }
}

/// How often a node settles while its receipt book cannot be written.
const UNWRITTEN_SETTLE_EVERY: Duration = Duration::from_secs(60);

/// How long a settlement waits to be committed.
const SETTLE_WAIT_MS: u64 = 15_000;

/// One pass: looks up each channel the book holds a receipt for, then
/// settles those due, soonest expiry first, each for more than a fee.
/// Stops at `pass`'s deadline or when `interrupted`; returns how many
/// channels it left (all those not yet looked up, or the due ones not yet
/// settled).
fn settle_due(settler: &Settler, pass: &SettlePass, interrupted: &std::sync::atomic::AtomicBool) -> usize {
    let Settler { api, key, receipts, .. } = settler;
    let time_left = || match pass.deadline.map(|d| d.saturating_duration_since(std::time::Instant::now())) {
        _ if interrupted.load(std::sync::atomic::Ordering::Relaxed) => None,
        Some(left) if left.is_zero() => None,
        Some(left) => Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX).min(SETTLE_WAIT_MS)),
        None => Some(SETTLE_WAIT_MS),
    };
    let now_secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // A settlement of no more than the fee would cost what it brings.
    let fee = match api.status() {
        Ok(status) => status.min_fee_usd,
        Err(e) => {
            eprintln!("settle: the chain's status: {e:#}");
            return receipts.all().len();
        }
    };
    let held = receipts.all();
    let mut due = Vec::new();
    for (looked_up, receipt) in held.iter().enumerate() {
        if time_left().is_none() {
            return held.len() - looked_up;
        }
        let r = &receipt.receipt;
        let on_chain = match channel_on_chain(api, &r.channel) {
            Ok(on_chain) => on_chain,
            Err(e) => {
                eprintln!("settle: looking up channel {}: {e:#}", r.channel.short());
                continue;
            }
        };
        match receipt_standing(r, on_chain.as_ref()) {
            // Closed (its escrow went back to the client): nothing can
            // be settled on it any more, and a book that kept every
            // channel ever served would only grow.
            ReceiptStanding::Closed => {
                let _ = outln!("channel {} is closed on the chain: its receipt is dropped", r.channel.short());
                receipts.forget(&r.channel);
            }
            // Settled in full and expired: nothing can be added to it.
            // Kept, it stayed until the client closed the channel, which a
            // client with no refund to take may never do, and the book
            // grew by one receipt for every such channel ever served.
            ReceiptStanding::Settled { paid, expires_at_secs } => {
                if expires_at_secs <= now_secs {
                    let _ = outln!("channel {} expired, settled in full: its receipt is dropped", r.channel.short());
                    receipts.forget_settled(&r.channel, paid);
                }
            }
            ReceiptStanding::ToSettle { unsettled, expires_at_secs } => {
                let expiring = expires_at_secs <= now_secs.saturating_add(pass.expiring_within.as_secs());
                if unsettled > fee && (unsettled >= pass.min || expiring) {
                    due.push((expires_at_secs, receipt));
                }
            }
        }
    }
    due.sort_by_key(|(expires_at_secs, _)| *expires_at_secs);
    for (done, (_, receipt)) in due.iter().enumerate() {
        let r = &receipt.receipt;
        let Some(wait_ms) = time_left() else { return due.len() - done };
        let body = tollway_types::TxBody::SettleChannel { receipt: (*receipt).clone() };
        match crate::wallet::submit_and_wait(api, key, body, wait_ms) {
            // A log line: a closed stdout must not stop the settling
            // (`println!` would panic this thread away).
            Ok(tx) => {
                let _ = outln!(
                    "settled channel {}: {} for {} bytes in total (tx {})",
                    r.channel.short(),
                    r.cumulative_usd,
                    r.cumulative_bytes,
                    tx.short()
                );
            }
            Err(e) => eprintln!("settle: channel {}: {e:#}", r.channel.short()),
        }
        let _ = std::io::stdout().flush();
    }
    0
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[derive(clap::Args)]
pub struct ConnectArgs {
    /// The client's key (the channels' client).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The chain node's API [default: $TOLLWAY_API, else http://127.0.0.1:7070].
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// An exit node's account id; repeat for failover, best first. Each
    /// needs an open channel from this key.
    #[arg(long = "exit", value_name = "NODE", required_unless_present = "pick", conflicts_with = "pick", value_parser = parse_node_id)]
    exits: Vec<AccountId>,
    /// Instead of --exit: pick N exits from the market, best first: the
    /// active nodes that pass the filters below and have a channel from
    /// this key (or get one, --open-channels), scored by price, verified
    /// throughput, reputation and latency from here.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=16))]
    pick: Option<u64>,
    #[command(flatten)]
    filter: NodeFilter,
    /// With --pick: open a channel with this escrow (e.g. '$2'), expiring
    /// in 7 days, to each picked node that has none, and to the --relay if
    /// it has none.
    #[arg(long, value_name = "USD")]
    open_channels: Option<String>,
    /// A relay node in front of every exit (two hops).
    #[arg(long, value_name = "NODE", value_parser = parse_node_id)]
    relay: Option<AccountId>,
    /// Where the SOCKS5 / HTTP proxy listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1080")]
    listen: SocketAddr,
    /// tls (TLS 1.3 over TCP, the default) or quic.
    #[arg(long, value_name = "NAME", default_value = "tls")]
    transport: Transport,
    /// Port hopping: move to another of the node's ports every N seconds.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    hop_secs: Option<u64>,
    /// Require this username (with --password) from local programs
    /// (needed to --listen on an address other than loopback).
    #[arg(long, value_name = "NAME", requires = "password")]
    user: Option<String>,
    /// The password that goes with --user. Better from the environment
    /// variable: a flag shows in every local user's `ps` and in the
    /// shell's history.
    #[arg(long, value_name = "SECRET", requires = "user", env = "TOLLWAY_PROXY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Answer a program's CONNECT only once the exit has reached the
    /// destination, so refusals come back as SOCKS / HTTP error codes
    /// (costs a round trip to the first byte; by default the proxy answers
    /// at once and a refusal closes the connection).
    #[arg(long)]
    wait_for_exit: bool,
    /// After answering at once, wait up to this long for the program's
    /// first bytes so they travel with the open in one record (a program
    /// whose server speaks first, like SMTP, waits this long more for the
    /// banner); 0 never waits.
    #[arg(long, value_name = "MS", default_value_t = FIRST_BYTES_WAIT_DEFAULT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    first_bytes_wait_ms: u64,
    /// Print what the active route has paid (bytes and USD per hop, of
    /// each channel's escrow) every N seconds, when it changed; 0 never.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    status_secs: u64,
}

/// A node's account id on the command line: checked before anything
/// else, so a typo is reported even with no chain to ask.
fn parse_node_id(text: &str) -> Result<AccountId, String> {
    AccountId::from_hex(text).map_err(|e| format!("not a node id (its account: 64 hex digits, as `tollway keys show --key NODE.key` prints): {e}"))
}

/// Prints the line `line` makes every `every`, when it differs from the
/// last one printed; never returns (with `every` zero, prints nothing). A
/// daemon's log line: a closed stdout must not stop it.
async fn every_when_changed<F: std::future::Future<Output = Option<String>>>(every: Duration, line: impl Fn() -> F) {
    if every.is_zero() {
        return std::future::pending().await;
    }
    let mut last = None;
    loop {
        tokio::time::sleep(every).await;
        let now = line().await;
        if now.is_some() && now != last {
            if let Some(l) = &now {
                let _ = outln!("{l}");
            }
            last = now;
        }
    }
}

/// A hop on the route: the node's record and this client's newest open
/// channel with it that still has escrow, has not expired by the chain's
/// clock and is not one of `spent` (whose escrow a session used up before
/// the node settled it). An expired channel would only be refused by the
/// node, so it is refused here, with what to do.
fn hop_for(api: &ApiClient, me: &AccountId, id: &AccountId, spent: &[ChannelId]) -> anyhow::Result<Hop> {
    let id = *id;
    let record = node_record(api, &id, "`tollway wallet nodes` lists the active ones")?;
    let addr = *record.addrs.first().context("the node's record has no address")?;
    let (channels, _) = api.account_channels(me)?;
    let now_secs = crate::wallet::chain_now_secs(api)?;
    let with_escrow: Vec<_> =
        channels.into_iter().filter(|c| c.node == id && c.paid < c.escrow && !spent.contains(&c.id)).collect();
    let expired = with_escrow.iter().filter(|c| c.expires_at_secs <= now_secs).count();
    // One whose escrow left pays for a receipt interval at the node's
    // price first (a node refuses the others at the hello), then the
    // latest to expire. The interval: the default, or the least a node at
    // this price can serve with (it must ask for receipts less often).
    let price = record.price_usd_micro_per_gib;
    let interval_bytes =
        tollway_tunnel::session::DEFAULT_RECEIPT_INTERVAL_BYTES.max(tollway_tunnel::session::min_receipt_interval_bytes(price));
    let interval_usd = tollway_ledger::cost_of_bytes(price, interval_bytes);
    let channel = (with_escrow.into_iter().filter(|c| c.expires_at_secs > now_secs))
        .max_by_key(|c| (tollway_types::amount::Usd(c.escrow.0 - c.paid.0) >= interval_usd, c.expires_at_secs));
    let Some(channel) = channel else {
        let why = if expired > 0 {
            format!("{expired} channel(s) from {} to node {} with escrow left, all expired", me.short(), id.short())
        } else {
            format!("no open channel from {} to node {} with escrow left", me.short(), id.short())
        };
        bail!("{why}: open one with `tollway wallet open-channel {} <usd> --expires-in 7d`", id.to_hex());
    };
    Ok(Hop {
        node: id,
        addr,
        port_first: record.port_first,
        port_last: record.port_last,
        tls_key_pin: record.tls_key_pin,
        price_usd_micro_per_gib: record.price_usd_micro_per_gib,
        channel: channel.id,
        escrow: channel.escrow,
        settled_bytes: channel.paid_bytes,
        settled_usd: channel.paid,
    })
}

/// How long a picked node may take to accept a TCP connection before it
/// counts as not answering.
const PICK_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The life of a channel `connect --open-channels` opens.
const PICKED_CHANNEL_SECS: u64 = 7 * 24 * 3600;

/// `connect --pick N`: the market's active nodes that pass the filter and
/// have (or, with --open-channels, get) a channel from this key, ranked by
/// `tollway_client::choice`, best first; tells the user what it picked and
/// why, and opens the missing channels.
fn pick_exits(api: &ApiClient, key: &SigningKey, a: &ConnectArgs, n: usize) -> anyhow::Result<Vec<AccountId>> {
    let me = key.public();
    let (market, _) = api.nodes(&a.filter.query()?)?;
    let (channels, _) = api.account_channels(&me)?;
    let now_secs = crate::wallet::chain_now_secs(api)?;
    let has_channel =
        |id: &AccountId| channels.iter().any(|c| c.node == *id && c.paid < c.escrow && c.expires_at_secs > now_secs);
    let matching: Vec<&NodeInfo> =
        market.iter().filter(|n| n.active && !n.addrs.is_empty() && Some(n.id) != a.relay && n.id != me).collect();
    if matching.is_empty() {
        bail!("no active node matches the filters; `tollway wallet nodes` with the same filters lists the market");
    }
    let open_escrow = a.open_channels.as_deref().map(crate::wallet::parse_usd).transpose()?;
    // The relay in front of the picked exits needs a channel as they do:
    // without one it refused every route. Checked before any channel is
    // opened.
    let relay_to_open = match (a.relay, open_escrow) {
        (Some(relay), Some(_)) if !has_channel(&relay) => Some(relay_answering(api, &me, &relay)?),
        _ => None,
    };
    let eligible: Vec<&NodeInfo> =
        matching.iter().copied().filter(|n| open_escrow.is_some() || has_channel(&n.id)).collect();
    if eligible.is_empty() {
        bail!(
            "{} node(s) match, but none has an open channel from {} with escrow left: \
             add --open-channels '$2' to open one to each picked node, or open one with \
             `tollway wallet open-channel <node> <usd> --expires-in 7d`",
            matching.len(),
            me.short()
        );
    }
    // Latency from here: a TCP connect to each node's first port, all at once.
    let rtts: Vec<Option<Duration>> = std::thread::scope(|scope| {
        let tries: Vec<_> = eligible
            .iter()
            .map(|node| {
                let addr = SocketAddr::new(node.addrs[0], node.port_first);
                scope.spawn(move || {
                    let started = std::time::Instant::now();
                    std::net::TcpStream::connect_timeout(&addr, PICK_CONNECT_TIMEOUT).ok().map(|_| started.elapsed())
                })
            })
            .collect();
        tries.into_iter().map(|t| t.join().ok().flatten()).collect()
    });
    let candidates: Vec<Candidate> = eligible
        .iter()
        .zip(&rtts)
        .map(|(node, rtt)| Candidate {
            node: node.id,
            price_usd_micro_per_gib: node.price_usd_micro_per_gib,
            verified_capacity_bps: node.verified_capacity_bps,
            reputation_ppm: node.reputation_ppm,
            rtt: *rtt,
        })
        .collect();
    let mut picked = Vec::new();
    // A channel is opened only to a node that answered: escrow sent to one
    // that is down stays locked until the channel expires, a week on. (A
    // node without an answer loses only the latency part of its score, so
    // a cheap, well-measured node that is off ranked first.)
    let ranked = choice::rank(&candidates, &me);
    let answered_or_paid = |&(i, _): &(usize, f64)| rtts[i].is_some() || has_channel(&eligible[i].id);
    let ranked: Vec<(usize, f64)> = ranked.into_iter().filter(answered_or_paid).take(n).collect();
    if ranked.is_empty() {
        bail!(
            "none of the {} matching node(s) answered a TCP connect within {} s, and none has a channel from {}: \
             no channel was opened",
            eligible.len(),
            PICK_CONNECT_TIMEOUT.as_secs(),
            me.short()
        );
    }
    // Only once there are exits to ride it to; with the exits' escrow and
    // life.
    if let (Some(relay), Some(escrow)) = (relay_to_open, open_escrow) {
        open_picked_channel(api, key, relay, escrow, now_secs)?;
        outln!("opened a channel to relay {} with {escrow} escrow, for 7 days", relay.short())?;
    }
    for (i, score) in ranked {
        let node = eligible[i];
        let rtt = rtts[i].map_or_else(|| "no answer".to_string(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3));
        outln!(
            "picked exit {} ({} {}, {}/GiB, {} verified, reputation {:.1}%, {rtt}): score {score:.2}",
            node.id.short(),
            node.country.as_str(),
            node.region,
            tollway_types::amount::Usd(node.price_usd_micro_per_gib as u128),
            crate::wallet::format_bps(node.verified_capacity_bps),
            node.reputation_ppm as f64 / 10_000.0
        )?;
        if let (Some(escrow), false) = (open_escrow, has_channel(&node.id)) {
            open_picked_channel(api, key, node.id, escrow, now_secs)?;
            outln!("opened a channel to node {} with {escrow} escrow, for 7 days", node.id.short())?;
        }
        picked.push(node.id);
    }
    Ok(picked)
}

/// Opens a channel from `key` to `node` with `escrow`, for
/// `PICKED_CHANNEL_SECS` from the chain's `now_secs`, and waits for it.
fn open_picked_channel(
    api: &ApiClient,
    key: &SigningKey,
    node: AccountId,
    escrow: tollway_types::amount::Usd,
    now_secs: u64,
) -> anyhow::Result<()> {
    let expires_at_secs = now_secs.saturating_add(PICKED_CHANNEL_SECS);
    let body = tollway_types::tx::TxBody::OpenChannel { node, escrow, expires_at_secs };
    crate::wallet::submit_and_wait(api, key, body, 15_000)?;
    Ok(())
}

/// `relay`, which `me` has no channel with, if it may get one: registered,
/// with an address, and answering a TCP connect, as a picked exit must
/// (escrow sent to a node that is down stays locked for a week).
fn relay_answering(api: &ApiClient, me: &AccountId, relay: &AccountId) -> anyhow::Result<AccountId> {
    let context = || format!("--relay {}", relay.short());
    let record = node_record(api, relay, "`tollway wallet nodes` lists the active ones").with_context(context)?;
    let addr = record.addrs.first().map(|ip| SocketAddr::new(*ip, record.port_first));
    let addr = addr.context("the node's record has no address").with_context(context)?;
    if std::net::TcpStream::connect_timeout(&addr, PICK_CONNECT_TIMEOUT).is_err() {
        bail!(
            "--relay {}: no open channel from {} with escrow left, and the node did not answer a TCP connect to {addr} \
             within {} s: no channel was opened",
            relay.short(),
            me.short(),
            PICK_CONNECT_TIMEOUT.as_secs()
        );
    }
    Ok(*relay)
}

pub fn run_connect(a: &ConnectArgs) -> anyhow::Result<()> {
    // Each local program's connection is a descriptor, and a stream's.
    let _ = raise_open_files_limit();
    // One node as both hops would see the client's address and where it
    // goes, the very thing two hops keep apart; and it serves a channel
    // one session at a time, so the exit's session would close the
    // relay's it rides on.
    if let Some(r) = a.relay.as_ref().filter(|r| a.exits.contains(r)) {
        anyhow::bail!("node {} is both the relay and an exit: a route's two hops must be different nodes", r.short());
    }
    // A node serves a channel one session at a time: a second route to it
    // would take the first's over, never stand in for it.
    for (i, exit) in a.exits.iter().enumerate() {
        if let Some(first) = a.exits.iter().take(i).position(|e| e == exit) {
            bail!("--exit {} is given twice (exits {} and {}): each exit must be a different node", exit.short(), first + 1, i + 1);
        }
    }
    // A proxy others can reach spends this key's channels for them, under
    // this key's name: only with a password.
    if !a.listen.ip().is_loopback() && a.user.is_none() {
        anyhow::bail!(
            "--listen {}: anyone who reaches this address could use the proxy and spend your channels; \
             give --user and --password, or listen on a loopback address (the default, 127.0.0.1:1080)",
            a.listen
        );
    }
    if (a.filter.is_set() || a.open_channels.is_some()) && a.pick.is_none() {
        bail!("--region, --country, the other filters and --open-channels choose among the market's nodes for --pick N");
    }
    let key = keys::load_key_file(&a.key.clone().unwrap_or_else(keys::default_key_path))?;
    // Bound before the chain is asked anything: on a port already in use
    // (a second `connect` on the default one) `--open-channels` opened its
    // channels, a fee and 7 days of escrow each, and only then failed.
    let rt = tollway_client::runtime()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(a.listen))
        .with_context(|| format!("listening on {} for the proxy", a.listen))?;
    let url = api_url(&a.api);
    // Its start is a person's wait at a terminal; a route's renewal
    // later is the daemon's own.
    let api = ApiClient::interactive(&url)?;
    let status = api.status().with_context(|| format!("asking the chain at {url}"))?;
    let me = key.public();
    // Named as the relay: the node's short id alone did not say which hop
    // lacked a channel.
    let relay_hop = || {
        (a.relay.as_ref())
            .map(|r| hop_for(&api, &me, r, &[]).with_context(|| format!("--relay {}", r.short())))
            .transpose()
    };
    // Before the exits are picked, so that a relay with no channel stops
    // the proxy before it opens theirs; with --open-channels the pick opens
    // the relay's too, so after.
    let relay_first = if a.open_channels.is_none() { relay_hop()? } else { None };
    let exits = match a.pick {
        Some(n) => pick_exits(&api, &key, a, n as usize)?,
        None => a.exits.clone(),
    };
    let relay = if a.open_channels.is_none() { relay_first } else { relay_hop()? };
    let mut routes = Vec::new();
    for exit in &exits {
        routes.push(Route { relay: relay.clone(), exit: hop_for(&api, &me, exit, &[])? });
    }
    // A retired route's hops are looked up again on the chain, so a channel
    // opened after its escrow ran out serves without a restart; so are a
    // down route's, so a node that moved (a home line's new address, after
    // `tollway wallet update-node`) is tried where its record now says.
    let renewal = Renewal(Arc::new(move |route: Route, spent: Vec<ChannelId>| {
        let url = url.clone();
        Box::pin(async move {
            let found = tokio::task::spawn_blocking(move || -> anyhow::Result<Route> {
                let api = ApiClient::new(&url)?;
                let relay = route.relay.as_ref().map(|r| hop_for(&api, &me, &r.node, &spent)).transpose()?;
                Ok(Route { relay, exit: hop_for(&api, &me, &route.exit.node, &spent)? })
            })
            .await;
            match found {
                Ok(found) => found.map_err(|e| format!("{e:#}")),
                Err(e) => Err(e.to_string()),
            }
        })
    }));
    let credentials = match (&a.user, &a.password) {
        (Some(u), Some(p)) => {
            Some(Credentials::new(u.clone(), p.clone()).map_err(|e| anyhow::anyhow!("--user/--password: {e}"))?)
        }
        _ => None,
    };
    let connect = ConnectOptions {
        chain_id: status.chain_id.clone(),
        key,
        transport: a.transport,
        net: ClientOptions::default(),
        limits: Limits::default(),
        hop_window: a.hop_secs.map(Duration::from_secs),
    };
    let names: Vec<String> = routes.iter().map(Route::name).collect();
    rt.block_on(async move {
        // Daemon log lines: a closed stdout must not stop it.
        let config = ClientConfig {
            on_event: Some(|line| {
                let _ = outln!("{line}");
            }),
            renewal: Some(renewal),
            ..ClientConfig::new(connect, routes)
        };
        let pool = RoutePool::start(config);
        outln!("SOCKS5 and HTTP proxy on {} over {}", listener.local_addr()?, a.transport)?;
        outln!("routes, best first: {}", names.join(", "))?;
        std::io::stdout().flush()?;
        let front = FrontConfig {
            credentials,
            wait_for_exit: a.wait_for_exit,
            first_bytes_wait: Duration::from_millis(a.first_bytes_wait_ms),
            // A daemon's log line: a closed stdout must not stop it.
            on_refusal: Some(|line| {
                let _ = outln!("{line}");
            }),
            ..FrontConfig::default()
        };
        let watched = pool.clone();
        let status = every_when_changed(Duration::from_secs(a.status_secs), || watched.usage_line());
        tokio::select! {
            _ = serve_front(listener, pool, front) => {}
            _ = status => {}
            _ = wait_for_stop() => {
                let _ = outln!("stopping");
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `node run` said nothing of its own record after it started: the
    /// lines it now prints as the record changes, and none when it did not.
    #[test]
    fn a_node_says_when_it_is_struck_slashed_cleared_or_deregistered_and_nothing_else() {
        use crate::api_client::{NodeSlash, StrikeFigures, Strike};
        let json = serde_json::json!({
            "id": tollway_types::SigningKey::from_label("n").public(), "country": "DE", "region": "europe",
            "addrs": ["203.0.113.7"], "active": true, "claimed_capacity_bps": 100_000_000,
            "verified_capacity_bps": 90_000_000, "price_usd_micro_per_gib": 500_000, "reputation_ppm": 500_000,
            "measured_epoch": 3,
        });
        let honest: NodeInfo = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(record_changes(&honest, &honest.clone()), Vec::<String>::new());
        let strike = Strike {
            epoch: 4,
            measured_capacity_bps: 10_000_000,
            judged_claim_bps: 100_000_000,
            over_claim_ppm: 10_000_000,
            next_judged_claim_bps: None,
            clears_at_bps: 50_000_000,
            slash_ppm: 450_000,
            slash_estimate: tollway_types::Token::units(450),
            decided_at_earliest_secs: 1_000,
        };
        let struck = NodeInfo { verified_capacity_bps: 10_000_000, strike: Some(strike.clone()), ..honest.clone() };
        assert_eq!(
            record_changes(&honest, &struck),
            ["STRIKE given from epoch 4: the oracles measured 10 Mbit/s against 100 Mbit/s claimed (×10.0 over); \
              a measurement of at least 50 Mbit/s clears it; `tollway wallet balance` says what comes next"]
        );
        assert_eq!(record_changes(&struck, &struck.clone()), Vec::<String>::new(), "still pending: no line");
        let renewed = NodeInfo { strike: Some(Strike { epoch: 5, ..strike }), ..struck.clone() };
        assert!(record_changes(&struck, &renewed)[0].starts_with("STRIKE renewed from epoch 5"));
        let cleared = NodeInfo { verified_capacity_bps: 80_000_000, strike: None, ..struck.clone() };
        assert_eq!(record_changes(&struck, &cleared), ["strike cleared: the oracles measured 80 Mbit/s against 100 Mbit/s claimed"]);
        let slash = NodeSlash {
            epoch: 5,
            amount: tollway_types::Token::units(450),
            claimed_capacity_bps: 100_000_000,
            measured_capacity_bps: 10_000_000,
            over_claim_ppm: 10_000_000,
            struck: Some(StrikeFigures { epoch: 4, claimed_capacity_bps: 100_000_000, measured_capacity_bps: 10_000_000 }),
            ejected: true,
        };
        let ejected = NodeInfo {
            active: false,
            strike: None,
            total_slashed: tollway_types::Token::units(450),
            slashes: vec![slash],
            ..struck.clone()
        };
        let lines = record_changes(&struck, &ejected);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with(
                "SLASHED 450 TWY in epoch 5: 100 Mbit/s claimed, 10 Mbit/s measured (×10.0 over), confirming, with a second \
                 set of oracles, the strike of epoch 4 (10 Mbit/s measured against 100 Mbit/s claimed); the claim was reset"
            ),
            "{}",
            lines[0]
        );
        assert!(lines[1].starts_with("DEREGISTERED: the node left the market"), "{}", lines[1]);
        assert_eq!(record_changes(&ejected, &ejected.clone()), Vec::<String>::new());
        assert!(!lines[0].contains("it confirmed a strike"), "the strike was told: {}", lines[0]);
        // Read late (the chain slow to answer), the strike given and
        // confirmed between two reads: the slash line says there was one.
        let lines = record_changes(&honest, &ejected);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("SLASHED 450 TWY in epoch 5: 100 Mbit/s claimed, 10 Mbit/s measured (×10.0 over)"), "{}", lines[0]);
        assert!(lines[0].ends_with("; that strike was given between two reads of the node's record"), "{}", lines[0]);
        // A slash from a chain that does not name its strike says there was one.
        let unnamed = NodeInfo { slashes: vec![NodeSlash { struck: None, ..ejected.slashes[0].clone() }], ..ejected.clone() };
        let lines = record_changes(&honest, &unnamed);
        assert!(lines[0].contains("(×10.0 over), confirmed by a second set of oracles; the claim was reset"), "{}", lines[0]);
        assert!(
            lines[0].ends_with("; it confirmed a strike given at an earlier measurement, between two reads of the node's record"),
            "{}",
            lines[0]
        );
        // A chain that lists no slashes: the total says how much.
        let older = NodeInfo { slashes: Vec::new(), ..ejected };
        assert_eq!(record_changes(&struck, &older)[0], "SLASHED 450 TWY for an over-claim; the claim was reset to the measurement");
        assert!(record_changes(&honest, &older)[0].ends_with("it confirmed a strike given at an earlier measurement, between two reads of the node's record"));
    }

    #[test]
    fn a_node_status_says_what_it_relayed_and_how_fast() {
        let line = relayed_line(15 << 20, 1 << 20, Duration::from_secs(60));
        assert_eq!(line, "relayed 15.0 MiB down and 1.00 MiB up in 60 s (2.10 and 0.14 Mbit/s)");
        assert_eq!(relayed_line(0, 0, Duration::ZERO), "relayed 0 B down and 0 B up in 0 s (0.00 and 0.00 Mbit/s)");
    }

    #[test]
    fn a_cap_below_the_claim_is_told_with_the_claim_to_register() {
        assert_eq!(cap_below_claim(100, 100_000_000), None);
        let warning = cap_below_claim(16, 100_000_000).unwrap_or_default();
        assert!(warning.starts_with("warning: a cap of 16 Mbit/s is below the 100 Mbit/s this node claims"), "{warning}");
        assert!(warning.ends_with("`tollway wallet update-node --capacity-bps 16000000`"), "{warning}");
    }

    /// A stop counted every receipt held as one to settle, those the chain
    /// had settled or closed too.
    #[test]
    fn a_stop_counts_only_the_receipts_that_still_pay() {
        use crate::api_client::Channel;
        use tollway_types::amount::Usd;
        let client = SigningKey::from_seed([1; 32]);
        let node = SigningKey::from_seed([2; 32]).public();
        let receipt = |nonce: u64, usd: u128| tollway_types::tx::SignedReceipt {
            receipt: tollway_types::tx::Receipt {
                chain_id: "test".into(),
                channel: tollway_types::tx::channel_id(&client.public(), nonce),
                cumulative_usd: Usd(usd),
                cumulative_bytes: 1 << 20,
            },
            signature: client.sign(b"not checked here"),
        };
        let on_chain = |r: &tollway_types::tx::SignedReceipt, paid: u128| Channel {
            id: r.receipt.channel,
            client: client.public(),
            node,
            escrow: Usd(1_000_000),
            paid: Usd(paid),
            paid_bytes: 0,
            expires_at_secs: 1_000,
        };
        let (newer, settled, closed, unanswered, unasked) =
            (receipt(0, 500), receipt(1, 500), receipt(2, 500), receipt(3, 500), receipt(4, 500));
        assert_eq!(
            receipt_standing(&newer.receipt, Some(&on_chain(&newer, 200))),
            ReceiptStanding::ToSettle { unsettled: Usd(300), expires_at_secs: 1_000 }
        );
        assert_eq!(
            receipt_standing(&settled.receipt, Some(&on_chain(&settled, 500))),
            ReceiptStanding::Settled { paid: Usd(500), expires_at_secs: 1_000 }
        );
        assert_eq!(receipt_standing(&closed.receipt, None), ReceiptStanding::Closed);
        let answered = [
            (newer.receipt.channel, Some(on_chain(&newer, 200))),
            (settled.receipt.channel, Some(on_chain(&settled, 500))),
            (closed.receipt.channel, None),
        ]
        .into_iter()
        .collect();
        let asked = [&newer, &settled, &closed, &unanswered].iter().map(|r| r.receipt.channel).collect();
        // The one not asked about got its first receipt since: to settle.
        assert_eq!(count_to_settle(&[newer, settled, closed, unanswered, unasked], &asked, &answered), (2, 1));
    }
}
