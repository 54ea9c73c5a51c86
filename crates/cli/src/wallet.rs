//! `tollway wallet`: balances, transfers, staking, nodes and payment
//! channels through a chain node's HTTP API (DESIGN §2, §6).
//!
//! Every transaction command does the same four things: ask `/v1/status`
//! for the chain id and minimum fees, ask `/v1/accounts/{me}` for the next
//! nonce, sign `Tx { chain_id, signer, nonce, fee, body }` with the key
//! file, and POST its canonical bytes with `wait=commit`, so the command
//! returns once the tx's block is durable (or was refused, with the
//! ledger's reason). Human output by default, the API's JSON with `--json`.

use crate::api_client::{Account, ApiClient, ApiError, Channel, NodeEpoch, NodeInfo, NodeSlash, Status, Strike, TxStatus};
use crate::keys;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::PathBuf;
use tollway_ledger::economics::{measure::rho_ppm, slash::over_claim_fraction_ppm};
use tollway_ledger::params::{format_duration, format_span, parse_duration_secs, Params};
use tollway_types::{math::mul_div_floor, PPM};
use tollway_tunnel::session::{
    min_price_usd_micro_per_gib, min_receipt_interval_bytes, DEFAULT_RECEIPT_INTERVAL_BYTES, MIN_PRICE_USD_MICRO_PER_GIB,
};
use tollway_types::keys::parse_hex;
use tollway_types::{
    channel_id, codec, AccountId, Amount, ChannelId, CountryCode, Hash32, MacroRegion, NodeSpec, PublicKey, Receipt,
    SignedReceipt, SigningKey, Token, Tx, TxBody, Usd,
};

/// The API address when neither `--api` nor `$TOLLWAY_API` is given.
pub const DEFAULT_API: &str = "http://127.0.0.1:7070";

/// Receipts are small (chain id ≤ 64 bytes, two ids, two numbers, a
/// signature): anything larger is not one.
const MAX_RECEIPT_BYTES: usize = 4096;

#[derive(clap::Args)]
pub struct WalletArgs {
    /// The chain node's API [default: $TOLLWAY_API, else http://127.0.0.1:7070].
    #[arg(long, global = true, value_name = "URL")]
    api: Option<String>,
    /// The key file that signs [default: $TOLLWAY_KEY, else ./tollway.key].
    #[arg(long, global = true, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Print the API's JSON instead of a sentence (for scripts).
    #[arg(long, global = true)]
    json: bool,
    /// Fee for a transaction, e.g. "0.001 TWY" or '$0.0001' [default: the
    /// chain's minimum, in USD if the account can pay it, else in TWY].
    #[arg(long, global = true, value_name = "AMOUNT")]
    fee: Option<String>,
    /// How long to wait for a transaction's block, e.g. 15s (at most 60s).
    #[arg(long, global = true, value_name = "DURATION", default_value = "15s")]
    wait: String,
    #[command(subcommand)]
    command: WalletCommand,
}

/// Which of the market's active nodes: `wallet nodes` lists them,
/// `connect --pick` chooses among them.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct NodeFilter {
    /// A macro-region, e.g. europe or north-america.
    #[arg(long)]
    pub region: Option<String>,
    /// An ISO 3166 country code, e.g. DE.
    #[arg(long)]
    pub country: Option<String>,
    /// Highest price per GiB in USD, e.g. 0.5.
    #[arg(long, value_name = "USD")]
    pub max_price_usd_per_gib: Option<String>,
    /// Lowest capacity the oracles verified, in bit/s.
    #[arg(long, value_name = "N")]
    pub min_verified_capacity_bps: Option<u64>,
    /// Lowest reputation, in parts per million.
    #[arg(long, value_name = "PPM")]
    pub min_reputation_ppm: Option<u32>,
}

impl NodeFilter {
    /// The chain API's query for it (`GET /v1/nodes?…`); a bad region,
    /// country or price is an error that names the flag.
    pub fn query(&self) -> anyhow::Result<String> {
        let mut query = Vec::new();
        if let Some(r) = &self.region {
            let names: Vec<&str> = MacroRegion::ALL.iter().map(|r| r.name()).collect();
            let region = MacroRegion::from_name(r.trim())
                .with_context(|| format!("--region {r:?} is not a region; use one of {}", names.join(", ")))?;
            query.push(format!("region={}", region.name()));
        }
        if let Some(c) = &self.country {
            query.push(format!("country={}", CountryCode::parse(c).context("--country")?));
        }
        if let Some(p) = &self.max_price_usd_per_gib {
            query.push(format!("max_price_usd_micro_per_gib={}", usd_micro("--max-price-usd-per-gib", p)?));
        }
        if let Some(c) = self.min_verified_capacity_bps {
            query.push(format!("min_verified_capacity_bps={c}"));
        }
        if let Some(r) = self.min_reputation_ppm {
            query.push(format!("min_reputation_ppm={r}"));
        }
        Ok(query.join("&"))
    }

    /// Whether any filter is given.
    pub fn is_set(&self) -> bool {
        self.region.is_some()
            || self.country.is_some()
            || self.max_price_usd_per_gib.is_some()
            || self.min_verified_capacity_bps.is_some()
            || self.min_reputation_ppm.is_some()
    }
}

#[derive(clap::Subcommand)]
pub enum WalletCommand {
    /// Balances, stake, unbonding and nonce of an account [default: own].
    Balance {
        /// An account id (64 hex digits).
        account: Option<String>,
    },
    /// Send TWY or USD: `transfer TO "12.5 TWY"`, `transfer TO '$3'`.
    Transfer {
        /// The receiving account id (64 hex digits).
        to: String,
        /// "12.5 TWY", "3 USD" or '$3'.
        amount: String,
    },
    /// Bond liquid TWY as stake.
    Stake {
        /// TWY to bond, e.g. 1000 or "1000 TWY".
        amount: String,
    },
    /// Start unbonding stake; it stays slashable for the unbonding period.
    Unbond {
        /// TWY to unbond, e.g. 100 or "100 TWY".
        amount: String,
    },
    /// Move every unbonding entry whose period has ended back to the balance.
    Withdraw,
    /// Move the rewards vested so far to the balance (rewards vest linearly
    /// over the chain's vesting period; `balance` shows what is vesting).
    Claim,
    /// List the payment channels an account is client or node of [default: own].
    Channels {
        /// An account id (64 hex digits).
        account: Option<String>,
    },
    /// What a node was paid at each of the last epochs' ends, and why:
    /// measured or not, uptime, reputation, its region's multiplier
    /// [default: own node].
    NodeEpochs {
        /// The node's account id (64 hex digits).
        account: Option<String>,
        /// How many of the last epochs (the chain keeps 720).
        #[arg(long, value_name = "N", default_value_t = 24)]
        limit: u64,
    },
    /// Search active nodes, best verified capacity first.
    Nodes(NodeFilter),
    /// Open a payment channel to a node, escrowing USD.
    OpenChannel {
        /// The node's account id (64 hex digits).
        node: String,
        /// USD to escrow, e.g. 5 or '$5' (the default chain's least is
        /// $0.01).
        escrow_usd: String,
        /// Expiry, counted from the chain's current time: 30m, 1h, 7d (the
        /// default chain allows at most 90d).
        #[arg(long, value_name = "DURATION", default_value = "1h")]
        expires_in: String,
    },
    /// After expiry and grace: close a channel and take back the unspent
    /// escrow (the chain does so itself at the first epoch end from then).
    CloseChannel {
        /// The channel id (64 hex digits).
        channel: String,
    },
    /// Register this account as a node (needs the minimum node stake).
    RegisterNode(RegisterNodeArgs),
    /// Change this node's record: only the fields given, the rest as the
    /// chain has them (e.g. `update-node --tls-pin HEX` after a new TLS key).
    UpdateNode(UpdateNodeArgs),
    /// Take this account's node off the market: clients no longer find it
    /// and its stake may then be unbonded below the node minimum.
    DeregisterNode,
    /// As a channel's client: sign a cumulative receipt for the node and
    /// print it as hex (the node settles it with `settle-channel`).
    SignReceipt {
        /// The channel id (64 hex digits).
        channel: String,
        /// Total USD received on this channel so far, e.g. 0.25.
        #[arg(long, value_name = "AMOUNT")]
        usd: String,
        /// Total bytes received on this channel so far.
        #[arg(long, value_name = "N")]
        bytes: u64,
        /// Sign offline for this chain id instead of asking the API (skips
        /// the channel checks).
        #[arg(long, value_name = "ID")]
        chain_id: Option<String>,
    },
    /// As a channel's node: settle a client-signed receipt (hex).
    SettleChannel {
        /// The receipt as printed by `sign-receipt`.
        receipt_hex: String,
    },
    /// Gateway only: credit USD that entered through the bridge or on-ramp.
    Deposit {
        /// The receiving account id (64 hex digits).
        to: String,
        /// USD, e.g. 100 or '$100'.
        amount_usd: String,
    },
}

/// `wallet register-node`'s flags.
#[derive(clap::Args)]
pub struct RegisterNodeArgs {
    /// ISO 3166 country code, e.g. DE.
    #[arg(long)]
    country: String,
    /// A public address; repeat for several (the first names the subnet).
    #[arg(long = "addr", value_name = "IP", required = true)]
    addrs: Vec<IpAddr>,
    /// Claimed capacity in bit/s (oracles will check it).
    #[arg(long, value_name = "N")]
    capacity_bps: u64,
    /// Price per GiB in USD, e.g. 0.5.
    #[arg(long, value_name = "USD", allow_negative_numbers = true)]
    price_usd_per_gib: String,
    /// Optional price per hour of connection in USD.
    #[arg(long, value_name = "USD", allow_negative_numbers = true)]
    price_usd_per_hour: Option<String>,
    /// Tunnel port or port range, e.g. 4433 or 4433-4440.
    #[arg(long, value_name = "PORTS", default_value = "4433")]
    ports: String,
    /// blake3 of the node's TLS public key (64 hex digits) [default:
    /// all zeros, i.e. none declared yet].
    #[arg(long, value_name = "HEX")]
    tls_pin: Option<String>,
}

/// `wallet update-node`'s flags: each optional, the rest as the chain has it.
#[derive(clap::Args)]
pub struct UpdateNodeArgs {
    /// ISO 3166 country code, e.g. DE.
    #[arg(long)]
    country: Option<String>,
    /// A public address; repeat for several (replaces the list).
    #[arg(long = "addr", value_name = "IP")]
    addrs: Vec<IpAddr>,
    /// Claimed capacity in bit/s (oracles will check it).
    #[arg(long, value_name = "N")]
    capacity_bps: Option<u64>,
    /// Price per GiB in USD, e.g. 0.5.
    #[arg(long, value_name = "USD", allow_negative_numbers = true)]
    price_usd_per_gib: Option<String>,
    /// Price per hour of connection in USD.
    #[arg(long, value_name = "USD", allow_negative_numbers = true)]
    price_usd_per_hour: Option<String>,
    /// Tunnel port or port range, e.g. 4433 or 4433-4440.
    #[arg(long, value_name = "PORTS")]
    ports: Option<String>,
    /// blake3 of the node's TLS public key (64 hex digits), as
    /// `tollway node init` prints it.
    #[arg(long, value_name = "HEX")]
    tls_pin: Option<String>,
}

pub fn run(args: &WalletArgs) -> anyhow::Result<()> {
    let api_url = match &args.api {
        Some(url) => url.clone(),
        None => std::env::var("TOLLWAY_API").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_API.into()),
    };
    let wait_secs = parse_duration_secs(&args.wait).map_err(|e| anyhow::anyhow!("--wait: {e}"))?;
    if !(1..=60).contains(&wait_secs) {
        bail!("--wait must be between 1s and 60s, not {}", args.wait);
    }
    let fee = match &args.fee {
        Some(text) => Some(Amount::parse(text).context("--fee")?),
        None => None,
    };
    let wallet = Wallet {
        api: ApiClient::interactive(&api_url)?,
        key_path: args.key.clone().unwrap_or_else(keys::default_key_path),
        json: args.json,
        fee,
        wait_ms: wait_secs * 1000,
    };
    wallet.run(&args.command)
}

struct Wallet {
    api: ApiClient,
    key_path: PathBuf,
    json: bool,
    fee: Option<Amount>,
    wait_ms: u64,
}

/// A committed transaction.
struct Committed {
    status: TxStatus,
    raw: Value,
    nonce: u64,
    fee: Amount,
}

impl Committed {
    fn at(&self) -> String {
        let height = self.status.height.map_or_else(|| "?".to_string(), |h| h.to_string());
        format!("in block {height} (tx {}…, fee {})", self.status.id.short(), self.fee)
    }

    /// The first event named `kind`, e.g. `UnbondStarted`, as JSON fields.
    fn event(&self, kind: &str) -> Option<&Value> {
        self.status.events.iter().find_map(|e| e.get(kind))
    }
}

impl Wallet {
    fn key(&self) -> anyhow::Result<SigningKey> {
        keys::load_key_file(&self.key_path)
    }

    fn run(&self, command: &WalletCommand) -> anyhow::Result<()> {
        match command {
            WalletCommand::Balance { account } => self.balance(account.as_deref()),
            WalletCommand::Transfer { to, amount } => {
                let to = parse_account("TO", to)?;
                let amount = Amount::parse(amount).context("AMOUNT")?;
                let done = self.submit(TxBody::Transfer { to, amount })?;
                self.report(&done, || format!("transferred {amount} to {}… {}", to.short(), done.at()))
            }
            WalletCommand::Stake { amount } => {
                let amount = parse_token(amount)?;
                let done = self.submit(TxBody::Stake { amount })?;
                self.report(&done, || format!("staked {amount} {}", done.at()))
            }
            WalletCommand::Unbond { amount } => {
                let amount = parse_token(amount)?;
                let done = self.submit(TxBody::BeginUnbond { amount })?;
                let release = done.event("UnbondStarted").and_then(|e| e.get("release_at_secs")).and_then(Value::as_u64);
                let now_secs = self.api.status().ok().map(|s| chain_now_secs_of(&s));
                self.report(&done, || match release {
                    Some(t) => format!("began unbonding {amount}; {} {}", describe_release(t, now_secs), done.at()),
                    None => format!("began unbonding {amount} {}", done.at()),
                })
            }
            WalletCommand::Withdraw => {
                let done = self.submit(TxBody::WithdrawUnbonded)?;
                let amount = done.event("UnbondedWithdrawn").and_then(|e| e.get("amount")).and_then(Value::as_str);
                self.report(&done, || format!("withdrew {} TWY of unbonded stake {}", amount.unwrap_or("?"), done.at()))
            }
            WalletCommand::Claim => {
                let done = self.submit(TxBody::ClaimVested).map_err(|e| self.explain_nothing_vested(e))?;
                let amount = done.event("VestedClaimed").and_then(|e| e.get("amount")).and_then(Value::as_str);
                self.report(&done, || format!("claimed {} TWY of vested rewards {}", amount.unwrap_or("?"), done.at()))
            }
            WalletCommand::DeregisterNode => {
                let done = self.submit(TxBody::DeregisterNode)?;
                let me = self.key()?.public();
                self.report(&done, || {
                    format!(
                        "deregistered node {}… {}: clients no longer find it, and its stake may now be unbonded",
                        me.short(),
                        done.at()
                    )
                })
            }
            WalletCommand::Channels { account } => self.channels(account.as_deref()),
            WalletCommand::Nodes(filter) => self.nodes(&filter.query()?),
            WalletCommand::NodeEpochs { account, limit } => self.node_epochs(account.as_deref(), *limit),
            WalletCommand::OpenChannel { node, escrow_usd, expires_in } => {
                self.open_channel(node, escrow_usd, expires_in)
            }
            WalletCommand::CloseChannel { channel } => {
                let channel = parse_hash("CHANNEL", channel)?;
                let done = self.submit(TxBody::CloseChannel { channel }).map_err(|e| self.explain_closed_channel(e, &channel))?;
                let refund = done.event("ChannelClosed").and_then(|e| e.get("refund")).and_then(Value::as_str);
                self.report(&done, || {
                    format!("closed channel {}…; refunded ${} {}", channel.short(), refund.unwrap_or("?"), done.at())
                })
            }
            WalletCommand::RegisterNode(a) => {
                let RegisterNodeArgs { country, addrs, capacity_bps, price_usd_per_gib, price_usd_per_hour, ports, tls_pin } = a;
                let country = CountryCode::parse(country).context("--country")?;
                let (port_first, port_last) = parse_ports(ports)?;
                let tls_key_pin = match tls_pin {
                    Some(hex) => parse_tls_pin(hex)?,
                    None => [0; 32],
                };
                let price_usd_micro_per_gib = gib_price(price_usd_per_gib)?;
                warn_unreachable_addrs(addrs);
                let price_usd_micro_per_hour = match price_usd_per_hour {
                    Some(p) => Some(usd_micro("--price-usd-per-hour", p)?),
                    None => None,
                };
                let spec = NodeSpec {
                    country,
                    addrs: addrs.clone(),
                    port_first,
                    port_last,
                    tls_key_pin,
                    claimed_capacity_bps: *capacity_bps,
                    price_usd_micro_per_gib,
                    price_usd_micro_per_hour,
                };
                let done = self.submit(TxBody::RegisterNode(spec.clone()))?;
                self.report(&done, || format!("registered node {}) {}", describe_node(&spec), done.at()))
            }
            WalletCommand::UpdateNode(a) => {
                let UpdateNodeArgs { country, addrs, capacity_bps, price_usd_per_gib, price_usd_per_hour, ports, tls_pin } = a;
                let nothing = country.is_none()
                    && addrs.is_empty()
                    && capacity_bps.is_none()
                    && price_usd_per_gib.is_none()
                    && price_usd_per_hour.is_none()
                    && ports.is_none()
                    && tls_pin.is_none();
                if nothing {
                    bail!("nothing to update: give at least one of --country, --addr, --capacity-bps, --price-usd-per-gib, --price-usd-per-hour, --ports, --tls-pin");
                }
                let me = self.key()?.public();
                let (record, _) = self.api.node(&me)?.with_context(|| {
                    format!("account {} is not a registered node: run `tollway wallet register-node` first", me.short())
                })?;
                let mut spec = NodeSpec {
                    country: record.country,
                    addrs: record.addrs.clone(),
                    port_first: record.port_first,
                    port_last: record.port_last,
                    tls_key_pin: record.tls_key_pin,
                    claimed_capacity_bps: record.claimed_capacity_bps,
                    price_usd_micro_per_gib: record.price_usd_micro_per_gib,
                    price_usd_micro_per_hour: record.price_usd_micro_per_hour,
                };
                if let Some(c) = country {
                    spec.country = CountryCode::parse(c).context("--country")?;
                }
                if !addrs.is_empty() {
                    warn_unreachable_addrs(addrs);
                    spec.addrs = addrs.clone();
                }
                if let Some(c) = capacity_bps {
                    spec.claimed_capacity_bps = *c;
                    // Said before the fee is paid, where the operator can
                    // still choose a lower figure.
                    if let Some(warning) = self.api.status().ok().and_then(|st| over_claim_warning(*c, &record, &st)) {
                        eprintln!("{warning}");
                    }
                }
                if let Some(p) = price_usd_per_gib {
                    spec.price_usd_micro_per_gib = gib_price(p)?;
                }
                if let Some(p) = price_usd_per_hour {
                    spec.price_usd_micro_per_hour = Some(usd_micro("--price-usd-per-hour", p)?);
                }
                if let Some(p) = ports {
                    (spec.port_first, spec.port_last) = parse_ports(p)?;
                }
                if let Some(hex) = tls_pin {
                    spec.tls_key_pin = parse_tls_pin(hex)?;
                }
                let done = self.submit(TxBody::UpdateNode(spec.clone()))?;
                self.report(&done, || {
                    let pin = tollway_types::keys::hex(&spec.tls_key_pin[..4]);
                    format!("updated node {}, tls pin {pin}…) {}", describe_node(&spec), done.at())
                })
            }
            WalletCommand::SignReceipt { channel, usd, bytes, chain_id } => self.sign_receipt(channel, usd, *bytes, chain_id),
            WalletCommand::SettleChannel { receipt_hex } => {
                let receipt = decode_receipt(receipt_hex)?;
                let channel = receipt.receipt.channel;
                let done = self.submit(TxBody::SettleChannel { receipt })?;
                let settled = done.event("ChannelSettled");
                let field = |k: &str| settled.and_then(|e| e.get(k)).and_then(Value::as_str).unwrap_or("?").to_string();
                self.report(&done, || {
                    format!(
                        "settled ${} on channel {}… (${} to the node, ${} to the burn; ${} settled in total) {}",
                        field("amount"),
                        channel.short(),
                        field("to_node"),
                        field("to_burn"),
                        field("cumulative"),
                        done.at()
                    )
                })
            }
            WalletCommand::Deposit { to, amount_usd } => {
                let to = parse_account("TO", to)?;
                let amount = parse_usd(amount_usd)?;
                let me = self.key()?.public();
                if let Some(gateway) = self.api.status()?.gateway.filter(|g| *g != me) {
                    bail!("only the gateway account ({}…) can deposit USD; this key is {}…", gateway.short(), me.short());
                }
                let done = self.submit(TxBody::Deposit { to, amount })?;
                self.report(&done, || format!("deposited {amount} to {}… {}", to.short(), done.at()))
            }
        }
    }

    /// Prints the committed tx: the API's JSON with `--json`, else a line.
    fn report(&self, done: &Committed, line: impl FnOnce() -> String) -> anyhow::Result<()> {
        if self.json {
            outln!("{}", done.raw)?;
        } else {
            outln!("{}", line())?;
        }
        Ok(())
    }

    /// Signs `body` with the next nonce and waits for its block. A tx the
    /// ledger rejected, or one still pending when the wait ends, is an error
    /// (with `--json` its status is printed first).
    fn submit(&self, body: TxBody) -> anyhow::Result<Committed> {
        let key = self.key()?;
        let (tx, nonce, fee) = sign_next(&self.api, &key, body, self.fee)?;
        let kind = tx.tx.body.kind();
        let (tx_status, raw) = self.api.submit(&tx, self.wait_ms).map_err(|e| describe_refusal(e, kind))?;
        match tx_status.status.as_str() {
            "committed" => Ok(Committed { status: tx_status, raw, nonce, fee }),
            "rejected" => {
                if self.json {
                    outln!("{raw}")?;
                }
                let why = tx_status.error.as_ref().map_or_else(|| "no reason given".to_string(), |e| e.message.clone());
                let code = tx_status.error.as_ref().map_or_else(String::new, |e| e.code.clone());
                let hint = wallet_hint(&code).unwrap_or_default();
                Err(Rejected { kind, code, why: format!("{why}{hint}"), tx: tx_status.id }.into())
            }
            "pending" => {
                if self.json {
                    outln!("{raw}")?;
                }
                bail!(
                    "{kind} tx {} was accepted but not committed within {} ms; it may still be included (GET {}/v1/txs/{})",
                    tx_status.id,
                    self.wait_ms,
                    self.api.base(),
                    tx_status.id
                )
            }
            other => bail!("the API answered with an unknown tx status {other:?} for tx {}", tx_status.id),
        }
    }

    /// A claim refused as "nothing vested to claim yet" (the ledger's
    /// words), said also when nothing vests at all: says which, and when
    /// something vests, when the first of it may be claimed.
    fn explain_nothing_vested(&self, e: anyhow::Error) -> anyhow::Error {
        let Some(rejected) = e.downcast_ref::<Rejected>().filter(|r| r.code == "nothing_vested") else { return e };
        let Ok(me) = self.key().map(|k| k.public()) else { return e };
        let Ok(account) = self.api.account(&me) else { return e };
        let now_secs = self.api.status().ok().map(|s| chain_now_secs_of(&s));
        let why = describe_nothing_vested(account.map(|(a, _)| a).as_ref(), now_secs);
        Rejected { why, ..rejected.clone() }.into()
    }

    /// A close refused because the channel is gone, which the chain's own
    /// close at an epoch end (ADR 0021) makes common: finds that close in
    /// the newest epochs' reports and says when it was and what it
    /// refunded.
    fn explain_closed_channel(&self, e: anyhow::Error, channel: &ChannelId) -> anyhow::Error {
        let Some(rejected) = e.downcast_ref::<Rejected>().filter(|r| r.code == "unknown_channel") else { return e };
        let why = match find_chain_close(&self.api, channel) {
            Ok((Some((epoch, closed)), _)) => format!(
                "channel {}… is already closed: the chain closed it at the end of epoch {epoch} and refunded {} to {}…",
                channel.short(),
                closed.refund,
                closed.client.short()
            ),
            // A young chain has fewer reports than the lookback.
            Ok((None, read)) => format!("{} (the reports of the last {read} epochs do not list it)", rejected.why),
            Err(_) => return e,
        };
        Rejected { why, ..rejected.clone() }.into()
    }

    fn balance(&self, account: Option<&str>) -> anyhow::Result<()> {
        let id = match account {
            Some(hex) => parse_account("ACCOUNT", hex)?,
            None => self.key()?.public(),
        };
        let Some((acct, raw)) = self.api.account(&id)? else {
            if self.json {
                let zero = json!({
                    "id": id.to_hex(), "known": false, "nonce": 0, "token": "0", "usd": "0", "staked": "0",
                    "unbonding": [], "vesting": "0", "node": false, "oracle": false, "open_channels": 0,
                });
                outln!("{zero}")?;
            } else {
                outln!("account {id}")?;
                outln!("  balance   0 TWY, $0 (not on chain yet: it has never received funds)")?;
            }
            return Ok(());
        };
        if self.json {
            outln!("{raw}")?;
            return Ok(());
        }
        let now_secs = self.api.status().ok().map(|s| chain_now_secs_of(&s));
        print_account(&acct, now_secs)?;
        // An operator's money depends on its node's measurements, which
        // the API had and no command showed.
        if acct.node {
            if let Some((node, _)) = self.api.node(&id)? {
                for line in node_lines(&node, now_secs) {
                    outln!("{line}")?;
                }
            }
        }
        Ok(())
    }

    fn channels(&self, account: Option<&str>) -> anyhow::Result<()> {
        let me = match account {
            Some(hex) => parse_account("ACCOUNT", hex)?,
            None => self.key()?.public(),
        };
        let (channels, raw) = self.api.account_channels(&me)?;
        if self.json {
            outln!("{raw}")?;
            return Ok(());
        }
        if channels.is_empty() {
            outln!("no open channels for {}…", me.short())?;
            return Ok(());
        }
        let status = self.api.status().ok();
        outln!("{:<64}  {:<6}  {:<9}  {:>12}  {:>12}  {:>14}  expires", "channel", "role", "with", "escrow", "paid", "bytes")?;
        for ch in &channels {
            let (role, other) = if ch.client == me { ("client", ch.node) } else { ("node", ch.client) };
            outln!(
                "{}  {:<6}  {}…  {:>12}  {:>12}  {:>14}  {}",
                ch.id,
                role,
                other.short(),
                ch.escrow.to_string(),
                ch.paid.to_string(),
                ch.paid_bytes,
                describe_channel_expiry(ch.expires_at_secs, status.as_ref())
            )?;
        }
        Ok(())
    }

    fn nodes(&self, query: &str) -> anyhow::Result<()> {
        let (nodes, raw) = self.api.nodes(query)?;
        if self.json {
            outln!("{raw}")?;
            return Ok(());
        }
        if nodes.is_empty() {
            outln!("no active node matches")?;
            return Ok(());
        }
        outln!(
            "{:<64}  {:<2}  {:<13}  {:<15}  {:>13}  {:>13}  {:>10}  {:>10}  {:>10}",
            "node", "cc", "region", "address", "claimed", "verified", "per GiB", "per hour", "reputation"
        )?;
        for n in &nodes {
            let addr = n.addrs.first().map_or_else(String::new, |a| a.to_string());
            outln!(
                "{}  {:<2}  {:<13}  {:<15}  {:>13}  {:>13}  {:>10}  {:>10}  {:>9.1}%",
                n.id,
                n.country.as_str(),
                n.region,
                addr,
                format_bps(n.claimed_capacity_bps),
                format_bps(n.verified_capacity_bps),
                Usd(n.price_usd_micro_per_gib as u128).to_string(),
                n.price_usd_micro_per_hour.map_or_else(|| "-".to_string(), |h| Usd(u128::from(h)).to_string()),
                n.reputation_ppm as f64 / 10_000.0
            )?;
        }
        Ok(())
    }

    fn node_epochs(&self, account: Option<&str>, limit: u64) -> anyhow::Result<()> {
        let id = match account {
            Some(hex) => parse_account("ACCOUNT", hex)?,
            None => self.key()?.public(),
        };
        if !(1..=1000).contains(&limit) {
            bail!("--limit must be between 1 and 1000, not {limit}");
        }
        // The last `limit` epochs that ended: the current one has no row yet.
        let current = self.api.status()?.epoch.unwrap_or(0);
        let from = current.saturating_sub(limit);
        let (rows, raw) = match self.api.node_epochs(&id, from, limit) {
            Ok(found) => found,
            Err(e) if e.downcast_ref::<ApiError>().is_some_and(|a| a.http_status == 404) => {
                bail!("{id} is not a node (`tollway wallet register-node` registers one)")
            }
            Err(e) => return Err(e),
        };
        if self.json {
            outln!("{raw}")?;
            return Ok(());
        }
        if rows.is_empty() {
            outln!("no epoch of node {}… has ended since epoch {from} (the chain keeps its last 720 epochs, so a node gone longer has none)", id.short())?;
            return Ok(());
        }
        outln!("{:>7}  {:>16}  why", "epoch", "reward")?;
        for row in &rows {
            outln!("{:>7}  {:>16}  {}", row.epoch, row.reward.to_string(), describe_node_epoch(row))?;
        }
        let total: Token = rows.iter().map(|r| r.reward).sum();
        let (first, last) = (rows[0].epoch, rows[rows.len() - 1].epoch);
        outln!("{:>7}  {:>16}  over {} epoch(s), {first} to {last} (rewards vest before they can be claimed)", "total", total.to_string(), rows.len())?;
        Ok(())
    }

    fn open_channel(&self, node: &str, escrow_usd: &str, expires_in: &str) -> anyhow::Result<()> {
        let node = parse_account("NODE", node)?;
        let escrow = parse_usd(escrow_usd)?;
        let lifetime_secs = parse_duration_secs(expires_in).map_err(|e| anyhow::anyhow!("--expires-in: {e}"))?;
        if lifetime_secs == 0 {
            bail!("--expires-in must be longer than 0s");
        }
        // The chain's limits, said in the flags' terms before a fee is paid.
        let status = self.api.status()?;
        if let Some(max) = status.channel_max_lifetime_secs.filter(|&max| lifetime_secs > max) {
            bail!("--expires-in {expires_in}: a channel on this chain may last at most {}", format_duration(max));
        }
        if let Some(least) = status.min_channel_escrow_usd.filter(|&least| escrow < least) {
            bail!("escrow {escrow}: a channel on this chain holds at least {least}");
        }
        let expires_at_secs = chain_now_secs_of(&status).saturating_add(lifetime_secs);
        let done = self.submit(TxBody::OpenChannel { node, escrow, expires_at_secs })?;
        let me = self.key()?.public();
        let channel = channel_id(&me, done.nonce);
        if self.json {
            let mut out = done.raw.clone();
            if let Some(obj) = out.as_object_mut() {
                obj.insert("channel".into(), json!(channel.to_hex()));
                obj.insert("expires_at_secs".into(), json!(expires_at_secs));
            }
            outln!("{out}")?;
        } else {
            outln!(
                "opened channel to node {}… with {escrow} escrow, expiring at chain time {expires_at_secs} s (in {expires_in}) {}",
                node.short(),
                done.at()
            )?;
            outln!("channel {channel}")?;
        }
        Ok(())
    }

    fn sign_receipt(&self, channel: &str, usd: &str, bytes: u64, chain_id: &Option<String>) -> anyhow::Result<()> {
        let channel = parse_hash("CHANNEL", channel)?;
        let cumulative_usd = parse_usd(usd).context("--usd")?;
        let key = self.key()?;
        let chain_id = match chain_id {
            Some(id) => id.clone(),
            None => {
                let status = self.api.status()?;
                check_receipt(&self.api.channel(&channel)?.0, &key.public(), cumulative_usd, bytes)?;
                status.chain_id
            }
        };
        let receipt = Receipt { chain_id, channel, cumulative_usd, cumulative_bytes: bytes };
        let signed = receipt.sign(&key);
        let hex = tollway_types::keys::hex(&codec::encode(&signed));
        if self.json {
            let out = json!({
                "receipt_hex": hex, "channel": channel.to_hex(), "chain_id": signed.receipt.chain_id,
                "cumulative_usd": cumulative_usd, "cumulative_bytes": bytes,
            });
            outln!("{out}")?;
        } else {
            outln!("{hex}")?;
        }
        Ok(())
    }
}

/// A tx the ledger rejected (nothing changed), with the ledger's code, for
/// a command that says more of it than the ledger's words.
#[derive(Clone, Debug)]
struct Rejected {
    kind: &'static str,
    code: String,
    why: String,
    tx: tollway_types::tx::TxId,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rejected: {} (tx {}; nothing changed)", self.kind, self.why, self.tx)
    }
}

impl std::error::Error for Rejected {}

/// Why a claim released nothing: nothing vests on `account` at all, or
/// nothing has vested yet, and then when the first of it will have.
fn describe_nothing_vested(account: Option<&Account>, now_secs: Option<u64>) -> String {
    let Some(a) = account.filter(|a| !a.vesting.is_zero()) else {
        return "nothing to claim: no rewards are vesting on this account (a node's rewards vest here before they \
                can be claimed; `tollway wallet balance` shows them)"
            .to_string();
    };
    match (a.first_release_secs, a.vesting_until_secs) {
        (Some(first), _) => format!(
            "nothing vested to claim yet: {} is vesting, the first of it claimable from {}",
            a.vesting,
            describe_chain_time(first, now_secs)
        ),
        (None, Some(until)) => format!(
            "nothing vested to claim yet: {} is vesting, all of it by {}",
            a.vesting,
            describe_chain_time(until, now_secs)
        ),
        (None, None) => format!("nothing vested to claim yet: {} is vesting", a.vesting),
    }
}

/// How many of the newest epochs' reports `close-channel` reads for the
/// chain's own close of a channel, and how many a request: a week of the
/// default hourly epochs, in seven requests.
const CHAIN_CLOSE_LOOKBACK_EPOCHS: u64 = 168;
const EPOCHS_PER_REQUEST: u64 = 24;

/// The epoch whose end closed `channel`, and that close, among the newest
/// [`CHAIN_CLOSE_LOOKBACK_EPOCHS`] ended epochs, newest first; and how many
/// ended epochs that was.
fn find_chain_close(api: &ApiClient, channel: &ChannelId) -> anyhow::Result<(Option<(u64, crate::api_client::ClosedChannel)>, u64)> {
    // Epochs before the current one have ended (a chain too old to say
    // which is current has no epoch reports of closes either).
    let Some(current) = api.status()?.epoch else { return Ok((None, 0)) };
    let oldest = current.saturating_sub(CHAIN_CLOSE_LOOKBACK_EPOCHS);
    let mut end = current;
    while end > oldest {
        let from = end.saturating_sub(EPOCHS_PER_REQUEST).max(oldest);
        let page = api.epochs(from, end - from)?;
        for record in page.into_iter().rev() {
            let epoch = record.report.epoch;
            if let Some(closed) = record.report.channels_closed.into_iter().find(|c| c.channel == *channel) {
                return Ok((Some((epoch, closed)), current - oldest));
            }
        }
        end = from;
    }
    Ok((None, current - oldest))
}

/// Refuse early what the ledger would refuse anyway, with a plainer reason.
/// Signs `body` as `key`'s next transaction (its nonce from the chain),
/// with `fee` or the chain's default fee.
fn sign_next(api: &ApiClient, key: &SigningKey, body: TxBody, fee: Option<Amount>) -> anyhow::Result<(tollway_types::SignedTx, u64, Amount)> {
    let me = key.public();
    let status = api.status()?;
    let account = match api.account(&me)? {
        Some((account, _)) => account,
        None => bail!(
            "account {me} is not on chain yet: it has never received funds, so it cannot pay a fee \
             (ask someone to send it TWY or USD)"
        ),
    };
    let fee = fee.unwrap_or_else(|| default_fee(&status, &account, &body));
    let nonce = account.nonce;
    Ok((Tx { chain_id: status.chain_id.clone(), signer: me, nonce, fee, body }.sign(key), nonce, fee))
}

/// Submits `body` as `key`'s next transaction and waits up to `wait_ms`
/// for its block; `Ok` only once it committed. For daemons that settle on
/// their own (`tollway node run`).
/// Now on the chain's clock, which a channel's expiry is counted on: the
/// time of the block that will include the tx. The tip's time lags it while
/// the chain is idle (no empty blocks), so the later of the tip and the
/// chain node's clock (this machine's for an older chain that does not
/// say: a local clock ahead of the chain's made a channel of the longest
/// lifetime expire too far ahead, and the chain refused it).
pub fn chain_now_secs(api: &ApiClient) -> anyhow::Result<u64> {
    Ok(chain_now_secs_of(&api.status()?))
}

fn chain_now_secs_of(status: &Status) -> u64 {
    let clock_secs = status.now_ms.map(|ms| ms / 1000).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    });
    (status.time_ms / 1000).max(clock_secs)
}

pub fn submit_and_wait(api: &ApiClient, key: &SigningKey, body: TxBody, wait_ms: u64) -> anyhow::Result<tollway_types::tx::TxId> {
    let (tx, _, _) = sign_next(api, key, body, None)?;
    let kind = tx.tx.body.kind();
    let (status, _) = api.submit(&tx, wait_ms).map_err(|e| describe_refusal(e, kind))?;
    match status.status.as_str() {
        "committed" => Ok(status.id),
        other => {
            let why = status.error.as_ref().map_or_else(|| other.to_string(), |e| e.message.clone());
            bail!("{kind} tx {} not committed: {why}", status.id)
        }
    }
}

fn check_receipt(channel: &Channel, me: &PublicKey, cumulative_usd: Usd, bytes: u64) -> anyhow::Result<()> {
    if channel.client != *me {
        bail!(
            "this key ({}…) is not the client of channel {}… (the client is {}…): only the client signs receipts",
            me.short(),
            channel.id.short(),
            channel.client.short()
        );
    }
    if cumulative_usd > channel.escrow {
        bail!("--usd {cumulative_usd} is more than the channel's escrow of {}", channel.escrow);
    }
    if cumulative_usd < channel.paid || bytes < channel.paid_bytes {
        bail!(
            "a receipt is cumulative: the node has already settled {} for {} bytes on this channel",
            channel.paid,
            channel.paid_bytes
        );
    }
    Ok(())
}

/// The chain's minimum fee, in USD if the account can pay it on top of what
/// the body spends in USD, else in TWY if it can pay that; if neither, the
/// currency it holds more of, so the ledger's refusal names a real shortfall.
fn default_fee(status: &Status, account: &Account, body: &TxBody) -> Amount {
    let (spend_token, spend_usd) = match body {
        TxBody::Transfer { amount: Amount::Token(t), .. } => (*t, Usd::ZERO),
        TxBody::Transfer { amount: Amount::Usd(u), .. } => (Token::ZERO, *u),
        TxBody::Stake { amount } => (*amount, Usd::ZERO),
        TxBody::OpenChannel { escrow, .. } => (Token::ZERO, *escrow),
        _ => (Token::ZERO, Usd::ZERO),
    };
    let can_pay_usd = spend_usd.checked_add(status.min_fee_usd).is_some_and(|need| account.usd >= need);
    let can_pay_token = spend_token.checked_add(status.min_fee_token).is_some_and(|need| account.token >= need);
    if can_pay_usd && !account.usd.is_zero() {
        Amount::Usd(status.min_fee_usd)
    } else if can_pay_token || account.usd.is_zero() {
        Amount::Token(status.min_fee_token)
    } else {
        Amount::Usd(status.min_fee_usd)
    }
}

/// A refusal at submission (bad signature, replayed nonce, flood, …) named
/// with the tx kind; transport errors pass through unchanged.
fn describe_refusal(e: anyhow::Error, kind: &str) -> anyhow::Error {
    match e.downcast_ref::<ApiError>() {
        Some(api) => anyhow::anyhow!("{kind} refused by the chain: {api}"),
        None => e,
    }
}

/// The wallet command that acts on a ledger refusal whose message names
/// the action only (the ledger knows no command names), after its code.
fn wallet_hint(code: &str) -> Option<&'static str> {
    match code {
        "stake_locked" => Some(" (`tollway wallet deregister-node`)"),
        "insufficient_stake" => Some(" (`tollway wallet stake AMOUNT` bonds more)"),
        _ => None,
    }
}

/// When an unbonding entry may be withdrawn, against the chain's now
/// (`chain_now_secs_of`): the chain time alone told an operator nothing.
fn describe_release(release_at_secs: u64, now_secs: Option<u64>) -> String {
    match now_secs {
        Some(now) if release_at_secs <= now => "withdrawable now: `tollway wallet withdraw`".to_string(),
        _ => format!("withdrawable from {}", describe_chain_time(release_at_secs, now_secs)),
    }
}

/// A future chain time, and how long until it when the chain's now is
/// known: "chain time 1000 s (in 10m)".
fn describe_chain_time(secs: u64, now_secs: Option<u64>) -> String {
    match now_secs {
        Some(now) if secs > now => format!("chain time {secs} s (in {})", format_span(secs - now)),
        _ => format!("chain time {secs} s"),
    }
}

/// Rewards not yet claimed: how much has vested and may be claimed, and
/// when the rest will have (a bare total told an operator neither).
fn describe_vesting(acct: &Account, now_secs: Option<u64>) -> String {
    const CLAIM: &str = "`tollway wallet claim` moves it to the balance";
    if acct.vested >= acct.vesting {
        return format!("{}, all vested: {CLAIM}", acct.vesting);
    }
    let Some(until) = acct.vesting_until_secs else { return acct.vesting.to_string() };
    let when = describe_chain_time(until, now_secs);
    let vested = if acct.vested.is_zero() {
        // When the first of it may be claimed, where the chain says.
        match acct.first_release_secs {
            Some(first) => format!("none vested yet, the first from {}", describe_chain_time(first, now_secs)),
            None => "none vested yet".to_string(),
        }
    } else {
        format!("{} vested ({CLAIM})", acct.vested)
    };
    format!("{}: {vested}; the rest vests linearly by {when}, and a slash can take it until it has", acct.vesting)
}

fn print_account(acct: &Account, now_secs: Option<u64>) -> std::io::Result<()> {
    outln!("account   {}", acct.id)?;
    outln!("  balance   {} · {}", acct.token, acct.usd)?;
    outln!("  staked    {}", acct.staked)?;
    for u in &acct.unbonding {
        outln!("  unbonding {}, {}", u.amount, describe_release(u.release_at_secs, now_secs))?;
    }
    if !acct.vesting.is_zero() {
        outln!("  vesting   {}", describe_vesting(acct, now_secs))?;
    }
    let roles: Vec<&str> = [("node", acct.node), ("oracle", acct.oracle)].iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
    outln!(
        // The ledger counts the channels an account opened, as a client: a
        // node's operator read "open channels 0" while serving several.
        "  nonce {} · open channels as a client {}{}",
        acct.nonce,
        acct.open_channels,
        if roles.is_empty() { String::new() } else { format!(" · {}", roles.join(", ")) }
    )?;
    Ok(())
}

/// What `balance` says of the account's node: where it stands on the
/// market, what the oracles measured of it, and what it earned and lost.
fn node_lines(n: &NodeInfo, now_secs: Option<u64>) -> Vec<String> {
    let addr = n.addrs.first().map_or_else(String::new, |a| a.to_string());
    let (country, price) = (n.country.as_str(), Usd(n.price_usd_micro_per_gib as u128));
    let mut lines = vec![if n.active {
        format!("  node      active in {country} ({}) at {addr}, {price} per GiB", n.region)
    } else {
        format!("  node      deregistered (was in {country} at {addr}): `tollway wallet register-node` brings it back")
    }];
    let capacity = format!(
        "  capacity  {} claimed, {} verified",
        format_bps(n.claimed_capacity_bps),
        format_bps(n.verified_capacity_bps)
    );
    let percent = |ppm: u32| percent_of_ppm(u64::from(ppm));
    match n.measured_epoch {
        None => lines.push(format!("{capacity}: never measured by the oracles, so no uptime reward yet")),
        Some(epoch) => {
            lines.push(capacity);
            lines.push(format!(
                "  measured  last in epoch {epoch}: latency {:.1} ms; uptime credited last epoch {}",
                f64::from(n.latency_us) / 1000.0,
                percent(n.uptime_ppm)
            ));
        }
    }
    lines.push(format!(
        "  quality   reputation {} (a running average of each measured epoch's latency score; \
         it scales the uptime reward)",
        percent(n.reputation_ppm)
    ));
    lines.push(format!("  rewards   {} earned in total (they vest first), {} slashed", n.total_rewards, n.total_slashed));
    // The last few; the API lists them all.
    const SLASHES_SHOWN: usize = 5;
    for slash in n.slashes.iter().rev().take(SLASHES_SHOWN).rev() {
        lines.push(format!("  slashed   {}", describe_slash(slash)));
    }
    if let Some(strike) = &n.strike {
        lines.extend(strike_lines(strike, n.claimed_capacity_bps, now_secs));
    }
    lines
}

/// Why an epoch paid what it did, in an operator's words: whether the
/// oracles measured the node, and the figures its reward came from.
fn describe_node_epoch(row: &NodeEpoch) -> String {
    let percent = |ppm: u32| percent_of_ppm(u64::from(ppm));
    let mut why = vec![match (row.measured, row.verified_capacity_bps) {
        (true, bps) => format!("measured at {}, latency {:.1} ms", format_bps(bps), f64::from(row.latency_us) / 1000.0),
        (false, 0) => "not measured, and never before: no uptime reward".to_string(),
        (false, bps) => format!("not measured (last measured at {})", format_bps(bps)),
    }];
    why.push(format!("uptime {}", percent(row.uptime_ppm)));
    why.push(format!("reputation {}", percent(row.reputation_ppm)));
    // Two places: a multiplier's step is often a quarter.
    why.push(format!("region ×{:.2}", f64::from(row.region_multiplier_ppm) / 1e6));
    if !row.settled_usd.is_zero() {
        why.push(format!("{} settled on its channels", row.settled_usd));
    }
    why.join(", ")
}

/// A ratio in ppm as "×2.5".
fn times(ppm: u64) -> String {
    format!("×{:.1}", ppm as f64 / 1e6)
}

/// A share in ppm as "7.5%".
fn percent_of_ppm(ppm: u64) -> String {
    format!("{:.1}%", ppm as f64 / 10_000.0)
}

/// One over-claim slash, for `balance` and `node run`.
pub fn describe_slash(s: &NodeSlash) -> String {
    let ejected = if s.ejected { "; the bond fell below a node's minimum, so the node was deregistered" } else { "" };
    let confirmed = match s.struck {
        Some(struck) => format!(
            "confirming, with a second set of oracles, the strike of epoch {} ({} measured against {} claimed)",
            struck.epoch,
            format_bps(struck.measured_capacity_bps),
            format_bps(struck.claimed_capacity_bps)
        ),
        None => "confirmed by a second set of oracles".to_string(),
    };
    format!(
        "{} in epoch {}: {} claimed, {} measured ({} over), {confirmed}; the claim was reset to the measurement{ejected}",
        s.amount,
        s.epoch,
        format_bps(s.claimed_capacity_bps),
        format_bps(s.measured_capacity_bps),
        times(s.over_claim_ppm)
    )
}

/// The first line of a pending strike, for `balance` and `node run`.
pub fn describe_strike(s: &Strike) -> String {
    let clears = match s.next_judged_claim_bps {
        Some(claim_bps) => format!(
            "the next measurement is judged against {} claimed now, and at least {} clears it",
            format_bps(claim_bps),
            format_bps(s.clears_at_bps)
        ),
        None => format!("a measurement of at least {} clears it", format_bps(s.clears_at_bps)),
    };
    format!(
        "from epoch {}: the oracles measured {} against {} claimed ({} over); {clears}",
        s.epoch,
        format_bps(s.measured_capacity_bps),
        format_bps(s.judged_claim_bps),
        times(s.over_claim_ppm),
    )
}

/// A pending strike in an operator's words: what struck the node, what
/// its next measurement does, and what the operator can do (ADR 0013:
/// nothing but a measurement decides it; ADR 0014: a lower claim counts
/// from the next epoch, not this one).
fn strike_lines(s: &Strike, claimed_bps: u64, now_secs: Option<u64>) -> Vec<String> {
    let next_judged_claim_bps = s.next_judged_claim_bps.unwrap_or(s.judged_claim_bps);
    let lower = if claimed_bps < next_judged_claim_bps {
        format!(
            "            the claim was lowered to {}: that counts from the next epoch on, as an epoch is judged on the \
             highest claim it held, so it cannot stop a slash at this epoch's end, only a later one",
            format_bps(claimed_bps)
        )
    } else if claimed_bps < s.judged_claim_bps {
        format!(
            "            the claim was lowered to {} since the strike, and the next measurement is judged against it",
            format_bps(claimed_bps)
        )
    } else {
        format!(
            "            if the line is slower than claimed, lower the claim (`tollway wallet update-node --capacity-bps {}`, \
             what was measured): it counts from the next epoch on, as an epoch is judged on the highest claim it held, \
             so it cannot stop a slash at this epoch's end, only a later one",
            s.measured_capacity_bps
        )
    };
    vec![
        format!("  STRIKE    {}", describe_strike(s)),
        format!(
            "            the next measurement by other oracles decides it, at the earliest when this epoch ends at {}: \
             below that, about {} ({} of the bond and of the unvested rewards) is slashed and the claim reset \
             to what was measured",
            describe_chain_time(s.decided_at_earliest_secs, now_secs),
            s.slash_estimate,
            percent_of_ppm(s.slash_ppm)
        ),
        "            until then the bond is held: neither `deregister-node` nor `withdraw`; keep the node running, \
         so that it is measured"
            .to_string(),
        lower,
    ]
}

/// Bit/s for people: "100 Mbit/s", "1.5 Gbit/s".
pub fn format_bps(bps: u64) -> String {
    for (unit, scale) in [("Gbit/s", 1_000_000_000u64), ("Mbit/s", 1_000_000), ("kbit/s", 1_000)] {
        if bps >= scale {
            let tenths = bps / (scale / 10);
            return match tenths % 10 {
                0 => format!("{} {unit}", tenths / 10),
                d => format!("{}.{d} {unit}", tenths / 10),
            };
        }
    }
    format!("{bps} bit/s")
}

/// A channel's expiry against the chain's now (`chain_now_secs_of`): the
/// tip's time alone lags by up to the idle heartbeat (a minute) on an
/// idle chain, and a channel that had expired was listed as open.
/// An expired channel also says when `close-channel` can close it, and
/// when the chain closes it itself: the first epoch end from its expiry
/// plus the grace (ADR 0021).
fn describe_channel_expiry(expires_at_secs: u64, status: Option<&Status>) -> String {
    let now_secs = status.map(chain_now_secs_of);
    let expiry = describe_expiry(expires_at_secs, now_secs);
    let (Some(now_secs), Some(status)) = (now_secs, status) else { return expiry };
    let Some(grace_secs) = status.channel_close_grace_secs.filter(|_| expires_at_secs <= now_secs) else { return expiry };
    let closable_at_secs = expires_at_secs.saturating_add(grace_secs);
    let close_channel = match closable_at_secs.checked_sub(now_secs).filter(|&left| left > 0) {
        Some(left) => format!("close-channel can close it in {}", format_span(left)),
        None => "close-channel can close it now".to_string(),
    };
    let closes_itself = match first_epoch_end_from(closable_at_secs, status) {
        Some(end_secs) if end_secs > now_secs => {
            format!("the chain closes it at an epoch end in {}", format_span(end_secs - now_secs))
        }
        Some(_) => "the chain closes it in its next block".to_string(),
        None => "the chain closes it at the first epoch end from then".to_string(),
    };
    format!("{expiry}; {close_channel}, {closes_itself}")
}

/// The first epoch end at or after `secs`, on the chain's epoch clock:
/// epochs end every `epoch_secs` from the current one's start (an epoch
/// ends on time, idle chain or not, ADR 0020). `None` from a chain that
/// does not say.
fn first_epoch_end_from(secs: u64, status: &Status) -> Option<u64> {
    let epoch_secs = status.epoch_secs.filter(|&e| e > 0)?;
    let end_secs = status.epoch_start_secs?.saturating_add(epoch_secs);
    let epochs_more = secs.saturating_sub(end_secs).div_ceil(epoch_secs);
    Some(end_secs.saturating_add(epochs_more.saturating_mul(epoch_secs)))
}

fn describe_expiry(expires_at_secs: u64, now_secs: Option<u64>) -> String {
    match now_secs {
        Some(now) if expires_at_secs > now => format!("{expires_at_secs} (in {})", format_span(expires_at_secs - now)),
        Some(now) => format!("{expires_at_secs} (expired {} ago)", format_span(now - expires_at_secs)),
        None => expires_at_secs.to_string(),
    }
}

fn parse_account(what: &str, text: &str) -> anyhow::Result<AccountId> {
    PublicKey::from_hex(text)
        .map_err(|_| anyhow::anyhow!("{what} {text:?} is not an account id: expected 64 hex digits (see `tollway keys show`)"))
}

fn parse_hash(what: &str, text: &str) -> anyhow::Result<ChannelId> {
    Hash32::from_hex(text).with_context(|| format!("{what} {text:?} is not a channel id: expected 64 hex digits"))
}

/// TWY as `1000`, `1000 TWY` or `1000TWY`; a USD amount is an error.
fn parse_token(text: &str) -> anyhow::Result<Token> {
    match Amount::parse(text) {
        Ok(Amount::Token(t)) => Ok(t),
        Ok(Amount::Usd(_)) => bail!("{text:?} is USD; stake is in TWY, e.g. \"1000 TWY\""),
        Err(_) => Token::parse_decimal(text).with_context(|| format!("{text:?} is not an amount of TWY such as 1000 or \"12.5 TWY\"")),
    }
}

/// USD as `5`, `$5`, `5 USD`; a TWY amount is an error.
pub fn parse_usd(text: &str) -> anyhow::Result<Usd> {
    match Amount::parse(text) {
        Ok(Amount::Usd(u)) => Ok(u),
        Ok(Amount::Token(_)) => bail!("{text:?} is TWY; this amount is in USD, e.g. '$5' or 5"),
        Err(_) => Usd::parse_decimal(text).with_context(|| format!("{text:?} is not an amount of USD such as 5 or '$0.25'")),
    }
}

/// `--tls-pin`: blake3 of the node's TLS key, 64 hex digits.
fn parse_tls_pin(hex: &str) -> anyhow::Result<[u8; 32]> {
    tollway_types::keys::parse_hex32(hex).with_context(|| format!("--tls-pin {hex:?} is not 64 hex digits"))
}

/// A node record as register-node and update-node report it, up to the
/// closing parenthesis each command adds to: `in DE at 203.0.113.7 (ports
/// 4433-4440, 100 Mbit/s claimed, $0.50 per GiB`.
fn describe_node(spec: &NodeSpec) -> String {
    format!(
        "in {} at {} (ports {}-{}, {} claimed, {} per GiB{}",
        spec.country,
        spec.addrs[0],
        spec.port_first,
        spec.port_last,
        format_bps(spec.claimed_capacity_bps),
        Usd(spec.price_usd_micro_per_gib as u128),
        // The hourly price was set but never said back.
        spec.price_usd_micro_per_hour.map(|h| format!(", {} per hour", Usd(u128::from(h)))).unwrap_or_default()
    )
}

/// A USD price in micro-dollars, as node specs hold it.
fn usd_micro(flag: &str, text: &str) -> anyhow::Result<u64> {
    let usd = parse_usd(text).with_context(|| flag.to_string())?;
    u64::try_from(usd.base()).with_context(|| format!("{flag} {text:?} is too large"))
}

/// `--price-usd-per-gib` in micro-USD, refused below the least price any
/// node can be paid at: there no receipt interval costs a micro-dollar, so
/// a client's receipts could not grow and `node run` refuses to serve (a
/// record at such a price would have its fee paid for nothing).
fn gib_price(text: &str) -> anyhow::Result<u64> {
    let price = usd_micro("--price-usd-per-gib", text)?;
    let least = MIN_PRICE_USD_MICRO_PER_GIB;
    if price < least {
        let usd = |micro: u64| Usd(u128::from(micro));
        bail!(
            "--price-usd-per-gib {text}: clients cannot pay a node less than {} per GiB (receipts could not grow); \
             at the default receipt interval of 1 MiB the least is {}",
            usd(least),
            usd(min_price_usd_micro_per_gib(DEFAULT_RECEIPT_INTERVAL_BYTES))
        );
    }
    let at_default_interval = min_price_usd_micro_per_gib(DEFAULT_RECEIPT_INTERVAL_BYTES);
    if price < at_default_interval {
        // Allowed (a node may ask for receipts less often), but `node run`
        // refuses to serve at the default interval: said before the fee.
        let usd = |micro: u64| Usd(u128::from(micro));
        let kib = min_receipt_interval_bytes(price).div_ceil(1024);
        eprintln!(
            "warning: at {} per GiB the node must ask for receipts at least every {kib} KiB \
             (`node run --receipt-interval-kib {kib}`); the default of 1 MiB needs {} per GiB",
            usd(price),
            usd(at_default_interval)
        );
    }
    Ok(price)
}

/// Why clients elsewhere cannot reach `ip`, if they cannot: the chain
/// takes loopback and LAN addresses (devnets run on them), and an operator
/// behind a home router who gave the machine's own address was listed but
/// never reached.
fn unreachable_why(ip: &IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_private() {
                Some("a private (LAN) address")
            } else if v4.is_link_local() {
                Some("a link-local address")
            } else if a == 100 && (64..128).contains(&b) {
                Some("a carrier-grade NAT address (100.64.0.0/10)")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("a loopback address")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a unique local (LAN) address")
            } else if first & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else {
                None
            }
        }
    }
}

/// Said before the fee is paid; allowed all the same (devnets, tests).
fn warn_unreachable_addrs(addrs: &[IpAddr]) {
    for ip in addrs {
        if let Some(why) = unreachable_why(ip) {
            eprintln!(
                "warning: {ip} is {why}: clients elsewhere cannot reach it; behind a home router give the router's \
                 public address (and forward the node's ports to this machine)"
            );
        }
    }
}

/// What a claim raised to `claim_bps`, above what the oracles last
/// measured, costs by the chain's rules (DESIGN §2 step 2): none when the
/// claim is not raised, the node was never measured, or the chain does not
/// say its thresholds.
fn over_claim_warning(claim_bps: u64, node: &NodeInfo, status: &Status) -> Option<String> {
    let verified_bps = node.verified_capacity_bps;
    if claim_bps <= node.claimed_capacity_bps || claim_bps <= verified_bps || node.measured_epoch.is_none() || verified_bps == 0 {
        return None;
    }
    let (reward_max, slash_min) = (status.rho_reward_on_claim_max_ppm?, status.rho_slash_min_ppm?);
    let (base, per_rho, most) = (status.slash_base_ppm?, status.slash_per_rho_ppm?, status.slash_max_ppm?);
    // The ledger's own ρ and slash share, under the chain's thresholds.
    let ppm = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    let params = Params {
        rho_reward_on_claim_max_ppm: ppm(reward_max),
        rho_slash_min_ppm: ppm(slash_min),
        slash_base_ppm: ppm(base),
        slash_per_rho_ppm: ppm(per_rho),
        slash_max_ppm: ppm(most),
        ..Params::default_params()
    };
    let rho = rho_ppm(claim_bps, verified_bps);
    let share = |rho: u64| u64::try_from(over_claim_fraction_ppm(&params, rho)).unwrap_or(u64::MAX);
    let struck_above_bps = u64::try_from(mul_div_floor(u128::from(verified_bps), u128::from(slash_min), PPM)).unwrap_or(u64::MAX);
    let cost = if rho > slash_min {
        format!(
            "measured as last time, the node is struck at its next measurement (its bond held until decided), and \
             a second by other oracles slashes {} of its bond and unvested rewards and resets the claim to the measurement",
            percent_of_ppm(share(rho))
        )
    } else {
        format!(
            "above {} ({} the measurement) a measurement strikes the node, and a second by other oracles slashes \
             at least {} of its bond and unvested rewards",
            format_bps(struck_above_bps),
            times(slash_min),
            percent_of_ppm(base)
        )
    };
    let rewards = if rho > reward_max { "rewards follow the measurement, not the claim; " } else { "" };
    Some(format!(
        "warning: {} is {} the {} the oracles last measured (epoch {}): {rewards}{cost}",
        format_bps(claim_bps),
        times(rho),
        format_bps(verified_bps),
        node.measured_epoch.unwrap_or_default()
    ))
}

/// `4433` or `4433-4440`.
fn parse_ports(text: &str) -> anyhow::Result<(u16, u16)> {
    let bad = || anyhow::anyhow!("--ports {text:?} is not a port or a range such as 4433-4440");
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (a.trim().parse::<u16>().map_err(|_| bad())?, b.trim().parse::<u16>().map_err(|_| bad())?),
        None => {
            let p = text.trim().parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if first == 0 || first > last {
        return Err(bad());
    }
    // A node listens on at most this many ports: a record with more is one
    // `node run` refuses to serve, after its fee was paid.
    let count = usize::from(last - first) + 1;
    if count > tollway_net::MAX_LISTEN_PORTS {
        bail!("--ports {text:?} is {count} ports; a node listens on at most {}", tollway_net::MAX_LISTEN_PORTS);
    }
    Ok((first, last))
}

fn decode_receipt(text: &str) -> anyhow::Result<SignedReceipt> {
    let bytes = parse_hex(text).with_context(|| "RECEIPT_HEX is not hex (expected the output of `tollway wallet sign-receipt`)")?;
    codec::decode::<SignedReceipt>(&bytes, MAX_RECEIPT_BYTES)
        .map_err(|e| anyhow::anyhow!("RECEIPT_HEX is not a signed receipt: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::err_of;

    /// A chain's status with nothing but what every chain has said.
    fn status_of_older_chain() -> Status {
        Status {
            chain_id: "c".into(),
            time_ms: 0,
            min_fee_token: Token(1000),
            min_fee_usd: Usd(100),
            gateway: None,
            now_ms: None,
            min_channel_escrow_usd: None,
            channel_max_lifetime_secs: None,
            channel_close_grace_secs: None,
            epoch_start_secs: None,
            epoch_secs: None,
            epoch: None,
            rho_reward_on_claim_max_ppm: None,
            rho_slash_min_ppm: None,
            slash_base_ppm: None,
            slash_per_rho_ppm: None,
            slash_max_ppm: None,
        }
    }

    #[test]
    fn amounts_ports_and_receipts_parse_or_say_why() {
        assert_eq!(parse_token("1000").unwrap_or_default(), Token::units(1000));
        assert_eq!(parse_token("12.5 TWY").unwrap_or_default(), Token(12_500_000));
        assert!(err_of(parse_token("$5")).contains("is USD"));
        assert_eq!(parse_ports("4433-4688").unwrap_or_default(), (4433, 4688));
        assert!(err_of(parse_ports("4433-5000")).contains("is 568 ports; a node listens on at most 256"));
        assert_eq!(parse_usd("$0.25").unwrap_or_default(), Usd(250_000));
        assert_eq!(parse_usd("5").unwrap_or_default(), Usd::units(5));
        assert!(err_of(parse_usd("5 TWY")).contains("is TWY"));
        assert_eq!(format_bps(100_000_000), "100 Mbit/s");
        assert_eq!(format_bps(1_500_000_000), "1.5 Gbit/s");
        assert_eq!(format_bps(999), "999 bit/s");
        let spans = [0, 45, 60, 3_661, 85_471, 86_400, 604_799].map(format_span);
        assert_eq!(spans, ["0s", "45s", "1m", "1h 1m", "23h 44m", "1d", "6d 23h"]);
        assert_eq!(describe_expiry(1_000, Some(400)), "1000 (in 10m)");
        assert_eq!(describe_expiry(1_000, Some(1_090)), "1000 (expired 1m 30s ago)");
        assert_eq!(describe_release(1_000, Some(400)), "withdrawable from chain time 1000 s (in 10m)");
        assert_eq!(describe_release(1_000, Some(1_000)), "withdrawable now: `tollway wallet withdraw`");
        assert_eq!(describe_release(1_000, None), "withdrawable from chain time 1000 s");
        let why = |ip: &str| unreachable_why(&ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}")));
        assert_eq!(why("192.168.1.5"), Some("a private (LAN) address"));
        assert_eq!(why("100.100.1.1"), Some("a carrier-grade NAT address (100.64.0.0/10)"));
        assert_eq!(why("127.0.0.1"), Some("a loopback address"));
        assert_eq!(why("fd00::1"), Some("a unique local (LAN) address"));
        assert_eq!(why("fe80::1"), Some("a link-local address"));
        for public in ["203.0.113.7", "100.128.0.1", "2001:db8::1", "8.8.8.8"] {
            assert_eq!(why(public), None, "{public}");
        }
        let rewarded = |vesting: u128, vested: u128| Account {
            id: SigningKey::from_label("a").public(),
            nonce: 0,
            token: Token::ZERO,
            usd: Usd(0),
            staked: Token::ZERO,
            unbonding: Vec::new(),
            vesting: Token(vesting),
            vested: Token(vested),
            vesting_until_secs: Some(1_000),
            first_release_secs: None,
            node: true,
            oracle: false,
            open_channels: 0,
        };
        assert_eq!(
            describe_vesting(&rewarded(3_000_000, 1_000_000), Some(400)),
            "3 TWY: 1 TWY vested (`tollway wallet claim` moves it to the balance); the rest vests linearly by \
             chain time 1000 s (in 10m), and a slash can take it until it has"
        );
        assert!(describe_vesting(&rewarded(3_000_000, 0), Some(400)).starts_with("3 TWY: none vested yet; the rest"));
        // It said "none vested yet" and not when the first would have.
        let first_at_430 = Account { first_release_secs: Some(430), ..rewarded(3_000_000, 0) };
        assert!(
            describe_vesting(&first_at_430, Some(400)).starts_with("3 TWY: none vested yet, the first from chain time 430 s (in 30s); the rest"),
            "{}",
            describe_vesting(&first_at_430, Some(400))
        );
        assert_eq!(
            describe_vesting(&rewarded(3_000_000, 3_000_000), Some(1_000)),
            "3 TWY, all vested: `tollway wallet claim` moves it to the balance"
        );
        // A claim refused for nothing vested said so whether anything
        // vested or not, and never when to try again.
        assert_eq!(
            describe_nothing_vested(Some(&rewarded(0, 0)), Some(400)),
            "nothing to claim: no rewards are vesting on this account (a node's rewards vest here before they can be \
             claimed; `tollway wallet balance` shows them)"
        );
        assert_eq!(describe_nothing_vested(None, Some(400)), describe_nothing_vested(Some(&rewarded(0, 0)), Some(400)));
        assert_eq!(
            describe_nothing_vested(Some(&first_at_430), Some(400)),
            "nothing vested to claim yet: 3 TWY is vesting, the first of it claimable from chain time 430 s (in 30s)"
        );
        // From a chain that does not say when the first vests: when all has.
        assert_eq!(
            describe_nothing_vested(Some(&rewarded(3_000_000, 0)), Some(400)),
            "nothing vested to claim yet: 3 TWY is vesting, all of it by chain time 1000 s (in 10m)"
        );

        let measured = NodeInfo {
            id: SigningKey::from_label("n").public(),
            country: CountryCode::parse("DE").unwrap_or_else(|e| panic!("{e}")),
            region: "europe".into(),
            addrs: vec![IpAddr::from([203, 0, 113, 7])],
            port_first: 4433,
            port_last: 4433,
            tls_key_pin: [0; 32],
            active: true,
            claimed_capacity_bps: 100_000_000,
            verified_capacity_bps: 82_500_000,
            price_usd_micro_per_gib: 500_000,
            price_usd_micro_per_hour: None,
            reputation_ppm: 612_345,
            measured_epoch: Some(41),
            uptime_ppm: 999_000,
            latency_us: 23_400,
            total_rewards: Token(12_500_000),
            total_slashed: Token::ZERO,
            strike: None,
            slashes: Vec::new(),
        };
        let lines = node_lines(&measured, None);
        assert_eq!(lines[0], "  node      active in DE (europe) at 203.0.113.7, $0.5 per GiB");
        assert_eq!(lines[1], "  capacity  100 Mbit/s claimed, 82.5 Mbit/s verified");
        assert_eq!(lines[2], "  measured  last in epoch 41: latency 23.4 ms; uptime credited last epoch 99.9%");
        assert!(lines[3].starts_with("  quality   reputation 61.2% (a running average"), "{}", lines[3]);
        assert_eq!(lines[4], "  rewards   12.5 TWY earned in total (they vest first), 0 TWY slashed");
        // What a raised claim costs, by the chain's thresholds.
        let rules = Status {
            rho_reward_on_claim_max_ppm: Some(1_250_000),
            rho_slash_min_ppm: Some(2_000_000),
            slash_base_ppm: Some(50_000),
            slash_per_rho_ppm: Some(50_000),
            slash_max_ppm: Some(500_000),
            ..status_of_older_chain()
        };
        assert_eq!(
            over_claim_warning(150_000_000, &measured, &rules).as_deref(),
            Some(
                "warning: 150 Mbit/s is ×1.8 the 82.5 Mbit/s the oracles last measured (epoch 41): rewards follow the \
                 measurement, not the claim; above 165 Mbit/s (×2.0 the measurement) a measurement strikes the node, \
                 and a second by other oracles slashes at least 5.0% of its bond and unvested rewards"
            )
        );
        let far = over_claim_warning(825_000_000, &measured, &rules).unwrap_or_default();
        assert!(far.contains("×10.0 the 82.5") && far.contains("slashes 45.0% of its bond"), "{far}");
        assert_eq!(over_claim_warning(90_000_000, &measured, &rules), None, "lowered: nothing to warn of");
        assert_eq!(over_claim_warning(150_000_000, &measured, &status_of_older_chain()), None, "no thresholds: no guess");
        let never = NodeInfo { measured_epoch: None, verified_capacity_bps: 0, ..measured.clone() };
        assert_eq!(over_claim_warning(150_000_000, &never, &rules), None, "never measured: nothing to compare");
        // A pending strike: what struck it, what comes next, what to do.
        let strike = Strike {
            epoch: 41,
            measured_capacity_bps: 40_000_000,
            judged_claim_bps: 100_000_000,
            over_claim_ppm: 2_500_000,
            next_judged_claim_bps: None,
            clears_at_bps: 50_000_000,
            slash_ppm: 75_000,
            slash_estimate: Token(82_500_000),
            decided_at_earliest_secs: 1_000,
        };
        let struck = NodeInfo { verified_capacity_bps: 40_000_000, strike: Some(strike), ..measured.clone() };
        let lines = node_lines(&struck, Some(400));
        let said = lines[5..].join("\n");
        assert!(said.starts_with("  STRIKE    from epoch 41: the oracles measured 40 Mbit/s against 100 Mbit/s claimed (×2.5 over); a measurement of at least 50 Mbit/s clears it\n"), "{said}");
        assert!(said.contains("at the earliest when this epoch ends at chain time 1000 s (in 10m): below that, about 82.5 TWY (7.5% of"), "{said}");
        assert!(said.contains("lower the claim (`tollway wallet update-node --capacity-bps 40000000`"), "{said}");
        let lowered = NodeInfo { claimed_capacity_bps: 40_000_000, ..struck.clone() };
        let said = node_lines(&lowered, Some(400)).join("\n");
        assert!(said.contains("the claim was lowered to 40 Mbit/s: that counts from the next epoch on") && !said.contains("update-node"), "{said}");
        // An epoch later the lowered claim is what the next measurement is
        // judged against; the strike still says what it was given for.
        let strike_then = struck.strike.clone().map(|s| Strike { next_judged_claim_bps: Some(40_000_000), clears_at_bps: 20_000_000, ..s });
        let judged_lower = NodeInfo { strike: strike_then, ..lowered };
        let said = node_lines(&judged_lower, Some(400))[5..].join("\n");
        assert!(
            said.starts_with(
                "  STRIKE    from epoch 41: the oracles measured 40 Mbit/s against 100 Mbit/s claimed (×2.5 over); the next \
                 measurement is judged against 40 Mbit/s claimed now, and at least 20 Mbit/s clears it\n"
            ),
            "{said}"
        );
        assert!(said.ends_with("the claim was lowered to 40 Mbit/s since the strike, and the next measurement is judged against it"), "{said}");
        let new = NodeInfo { measured_epoch: None, verified_capacity_bps: 0, active: false, ..measured };
        let lines = node_lines(&new, None);
        assert!(lines[0].contains("deregistered (was in DE at 203.0.113.7)"), "{}", lines[0]);
        assert!(lines[1].ends_with("0 bit/s verified: never measured by the oracles, so no uptime reward yet"), "{}", lines[1]);
        // An idle chain: the tip is a minute old, the node's clock is now.
        let idle = Status { time_ms: 1_000_000, now_ms: Some(1_060_000), ..status_of_older_chain() };
        assert_eq!(describe_channel_expiry(1_030, Some(&idle)), "1030 (expired 30s ago)");
        assert_eq!(describe_channel_expiry(1_030, None), "1030");
        // With the grace and the epochs: when close-channel can close it,
        // and when the chain closes it itself (an epoch end from then).
        let hourly = Status { channel_close_grace_secs: Some(3_600), epoch_start_secs: Some(0), epoch_secs: Some(3_600), ..idle.clone() };
        assert_eq!(
            describe_channel_expiry(1_030, Some(&hourly)),
            "1030 (expired 30s ago); close-channel can close it in 59m 30s, the chain closes it at an epoch end in 1h 42m"
        );
        assert_eq!(describe_channel_expiry(1_100, Some(&hourly)), "1100 (in 40s)", "not expired: no close yet");
        let later = Status { now_ms: Some(5_000_000), ..hourly.clone() };
        assert_eq!(
            describe_channel_expiry(1_030, Some(&later)),
            "1030 (expired 1h 6m ago); close-channel can close it now, the chain closes it at an epoch end in 36m 40s"
        );
        let due = Status { now_ms: Some(7_300_000), ..hourly.clone() };
        assert!(describe_channel_expiry(1_030, Some(&due)).ends_with("now, the chain closes it in its next block"));
        let no_epochs = Status { epoch_secs: None, ..hourly };
        assert!(describe_channel_expiry(1_030, Some(&no_epochs)).ends_with("the chain closes it at the first epoch end from then"));
        assert_eq!(parse_ports("4433-4440").unwrap_or_default(), (4433, 4440));
        assert_eq!(parse_ports("4433").unwrap_or_default(), (4433, 4433));
        for bad in ["0", "10-5", "x", "1-70000"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }

        let status = status_of_older_chain();
        let account = |token: u128, usd: u128| Account {
            id: SigningKey::from_label("a").public(),
            nonce: 0,
            token: Token(token),
            usd: Usd(usd),
            staked: Token::ZERO,
            unbonding: Vec::new(),
            vesting: Token::ZERO,
            vested: Token::ZERO,
            vesting_until_secs: None,
            first_release_secs: None,
            node: false,
            oracle: false,
            open_channels: 0,
        };
        let to = SigningKey::from_label("b").public();
        let send_usd = TxBody::Transfer { to, amount: Amount::Usd(Usd(500)) };
        let send_token = TxBody::Transfer { to, amount: Amount::Token(Token(5000)) };
        // USD when it covers the fee on top of what the body spends in USD.
        assert_eq!(default_fee(&status, &account(0, 600), &send_usd), Amount::Usd(Usd(100)));
        assert_eq!(default_fee(&status, &account(1000, 550), &send_usd), Amount::Token(Token(1000)));
        // No USD at all: TWY, even if short (the ledger then names the shortfall).
        assert_eq!(default_fee(&status, &account(5500, 0), &send_token), Amount::Token(Token(1000)));
        assert_eq!(default_fee(&status, &account(5500, 100), &send_token), Amount::Usd(Usd(100)));

        let key = SigningKey::from_label("client");
        let signed = Receipt { chain_id: "c".into(), channel: Hash32([1; 32]), cumulative_usd: Usd(5), cumulative_bytes: 9 }.sign(&key);
        let hex = tollway_types::keys::hex(&codec::encode(&signed));
        assert_eq!(decode_receipt(&hex).unwrap_or_else(|e| panic!("{e:#}")), signed);
        assert!(err_of(decode_receipt("zz")).contains("not hex"));
        assert!(err_of(decode_receipt("0102")).contains("not a signed receipt"));
    }
}
