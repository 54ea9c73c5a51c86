//! `ledger`: signed transfers and channel settlements applied per second by
//! the ledger, signature checks included, against the raw ed25519 single
//! verification rate of the same signatures on the same core. Goal: ratio
//! ≥ 0.5, i.e. the state machine costs no more than the signatures it checks.
//!
//! "Ours" is the path a block takes (DESIGN §3): derive each tx's signing
//! bytes, batch-verify the block's tx signatures, then `apply_verified` each
//! tx in order. A settlement also carries a client-signed receipt, which the
//! ledger verifies on its own (single) inside `settle_channel`, so a
//! settlement costs two signature checks where the anchor does one.

use crate::{median, report_line, sig3, Figure, Progress};
use anyhow::{bail, ensure, Context};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tollway_ledger::testkit::{self, fund, World};
use tollway_ledger::{apply_verified, Ctx, Params, State};
use tollway_types::keys::{verify, verify_batch};
use tollway_types::{
    channel_id, AccountId, Amount, ChannelId, Hash32, PublicKey, Receipt, Signature, SignedReceipt, SignedTx,
    SigningKey, Token, Tx, TxBody, Usd,
};

struct Config {
    /// Accounts sending transfers (each sends `block_txs / 2 / n_senders`).
    n_senders: usize,
    n_nodes: usize,
    /// One client per channel; channel `c` pays node `c % n_nodes`.
    n_channels: usize,
    /// Transactions per block: half transfers, half settlements, alternating.
    block_txs: usize,
    rounds: usize,
    /// Half settlements (the `ledger` benchmark) or transfers alone (the
    /// `chain` benchmark's anchor, [`TransferBlock`]).
    mixed: bool,
}

impl Config {
    fn new(quick: bool) -> Config {
        Config {
            n_senders: 1_000,
            n_nodes: 64,
            n_channels: if quick { 256 } else { 1_024 },
            block_txs: if quick { 512 } else { 4_096 },
            rounds: if quick { 3 } else { 7 },
            mixed: true,
        }
    }
    fn n_settlements(&self) -> usize {
        if self.mixed {
            self.block_txs / 2
        } else {
            0
        }
    }
    fn n_transfers(&self) -> usize {
        self.block_txs - self.n_settlements()
    }
}

/// The state a block is applied to, and the block.
struct Prepared {
    state: State,
    ctx: Ctx,
    block: Vec<SignedTx>,
    /// The settlements' receipts with the client key each is checked against.
    receipts: Vec<(SignedReceipt, AccountId)>,
    /// The block's transfers alone, in block order: valid on their own, as
    /// their senders sign nothing else in the block.
    transfers: Vec<SignedTx>,
}

pub fn run(progress: &Progress, quick: bool) -> anyhow::Result<String> {
    let cfg = Config::new(quick);
    progress.say(&format!(
        "setup: {} senders, {} nodes, {} channels; signing a block of {} txs",
        cfg.n_senders, cfg.n_nodes, cfg.n_channels, cfg.block_txs
    ));
    let prep = prepare(&cfg)?;
    let messages: Vec<Vec<u8>> = prep.block.iter().map(|s| s.tx.signing_bytes()).collect();
    let items: Vec<(PublicKey, &[u8], Signature)> =
        prep.block.iter().zip(&messages).map(|(s, m)| (s.tx.signer, m.as_slice(), s.signature)).collect();

    // One untimed warm-up round (caches, allocator, page faults), then the
    // measured rounds. Every path runs once per round, in an order that
    // rotates, so drift in the machine's speed hits all of them alike.
    progress.say(&format!("measuring: 1 warm-up + {} rounds", cfg.rounds));
    let mut samples = Path::ALL.map(|_| Vec::with_capacity(cfg.rounds));
    for round in 0..=cfg.rounds {
        let seed = Hash32::of(format!("ledger bench round {round}").as_bytes()).0;
        for k in 0..Path::ALL.len() {
            let path = Path::ALL[(k + round) % Path::ALL.len()];
            let took = path.run(&prep, &items, seed)?;
            if round > 0 {
                samples[path as usize].push(took);
            }
        }
    }
    let medians = samples.map(|s| median(&s));
    print_table(&cfg, &medians);

    let ours_tps = cfg.block_txs as f64 / medians[Path::Ours as usize].as_secs_f64();
    let anchor_vps = cfg.block_txs as f64 / medians[Path::Anchor as usize].as_secs_f64();
    Ok(report_line(
        "ledger",
        Figure { value: ours_tps, unit: "txs/s" },
        Figure { value: anchor_vps, unit: "verifs/s" },
        "raw ed25519 single verification of the same tx signatures, one core",
        ours_tps / anchor_vps,
    ))
}

/// The anchor of the `chain` benchmark: this benchmark's "ours" path
/// (encode signing bytes, batch-verify, `apply_verified` in order) on a
/// block of plain transfers, the kind of tx `chain` submits, so the two
/// compare the same work with and without the chain around it.
pub struct TransferBlock {
    prep: Prepared,
}

impl TransferBlock {
    /// A block of `block_txs` transfers among 1,000 funded senders.
    pub fn prepare(block_txs: usize) -> anyhow::Result<TransferBlock> {
        let cfg = Config { n_senders: 1_000, n_nodes: 0, n_channels: 0, block_txs, rounds: 1, mixed: false };
        Ok(TransferBlock { prep: prepare(&cfg)? })
    }

    pub fn txs(&self) -> usize {
        self.prep.block.len()
    }

    /// One timed pass over the block, on a fresh copy of the state: txs/s.
    pub fn measure(&self, round: usize) -> anyhow::Result<f64> {
        let seed = Hash32::of(format!("chain bench anchor round {round}").as_bytes()).0;
        let took = time_block(&self.prep, seed)?;
        Ok(self.prep.block.len() as f64 / took.as_secs_f64())
    }
}

/// What is timed. Every path runs once per round.
#[derive(Clone, Copy)]
enum Path {
    /// The block path: encode, batch-verify, apply.
    Ours,
    Encode,
    Batch,
    Apply,
    Receipts,
    /// `apply_verified` on the block's transfers alone: the state machine
    /// with no signature check at all.
    ApplyTransfers,
    /// Single verification of every tx signature.
    Anchor,
}

impl Path {
    const ALL: [Path; 7] =
        [Path::Ours, Path::Encode, Path::Batch, Path::Apply, Path::Receipts, Path::ApplyTransfers, Path::Anchor];

    fn run(self, prep: &Prepared, items: &[(PublicKey, &[u8], Signature)], seed: [u8; 32]) -> anyhow::Result<Duration> {
        match self {
            Path::Ours => time_block(prep, seed),
            Path::Encode => Ok(time_encode(&prep.block)),
            Path::Batch => time_batch(items, seed),
            Path::Apply => time_apply(prep, &prep.block),
            Path::Receipts => time_receipts(&prep.receipts),
            Path::ApplyTransfers => time_apply(prep, &prep.transfers),
            Path::Anchor => time_single(items),
        }
    }
}

/// Ours: what a block costs from decoded txs to new state.
fn time_block(prep: &Prepared, seed: [u8; 32]) -> anyhow::Result<Duration> {
    let mut state = prep.state.clone(); // a fresh state each round; not timed
    let start = Instant::now();
    let messages: Vec<Vec<u8>> = prep.block.iter().map(|s| s.tx.signing_bytes()).collect();
    let items: Vec<(PublicKey, &[u8], Signature)> =
        prep.block.iter().zip(&messages).map(|(s, m)| (s.tx.signer, m.as_slice(), s.signature)).collect();
    let verdicts = verify_batch(&items, seed);
    if let Some(bad) = verdicts.iter().position(|ok| !ok) {
        bail!("tx {bad} of the block has a bad signature");
    }
    for (i, stx) in prep.block.iter().enumerate() {
        apply_verified(&mut state, prep.ctx, stx).with_context(|| format!("block tx {i} ({})", stx.tx.body.kind()))?;
    }
    let took = start.elapsed();
    drop(black_box(state));
    Ok(took)
}

/// Deriving the signing bytes alone (postcard encoding of every tx).
fn time_encode(block: &[SignedTx]) -> Duration {
    let start = Instant::now();
    let total: usize = block.iter().map(|s| black_box(s.tx.signing_bytes()).len()).sum();
    let took = start.elapsed();
    black_box(total);
    took
}

/// Batch verification alone, on messages encoded beforehand.
fn time_batch(items: &[(PublicKey, &[u8], Signature)], seed: [u8; 32]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let verdicts = verify_batch(items, seed);
    let took = start.elapsed();
    ensure!(verdicts.iter().all(|ok| *ok), "batch verification rejected a signature");
    Ok(took)
}

/// `apply_verified` alone: no tx signature checks, but each settlement
/// still verifies its receipt (single) inside the ledger: there is no way
/// to skip that from outside.
fn time_apply(prep: &Prepared, txs: &[SignedTx]) -> anyhow::Result<Duration> {
    let mut state = prep.state.clone();
    let start = Instant::now();
    for (i, stx) in txs.iter().enumerate() {
        apply_verified(&mut state, prep.ctx, stx).with_context(|| format!("block tx {i} ({})", stx.tx.body.kind()))?;
    }
    let took = start.elapsed();
    drop(black_box(state));
    Ok(took)
}

/// The receipt checks `settle_channel` does, alone: the same call
/// (`SignedReceipt::verify`, which encodes the receipt and verifies once).
fn time_receipts(receipts: &[(SignedReceipt, AccountId)]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let ok = receipts.iter().filter(|(r, client)| r.verify(client).is_ok()).count();
    let took = start.elapsed();
    ensure!(ok == receipts.len(), "{} receipts failed to verify", receipts.len() - ok);
    Ok(took)
}

/// The anchor: one single ed25519 verification per tx signature, messages
/// encoded beforehand, one thread.
fn time_single(items: &[(PublicKey, &[u8], Signature)]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let ok = items.iter().filter(|(key, msg, sig)| verify(key, msg, sig).is_ok()).count();
    let took = start.elapsed();
    ensure!(ok == items.len(), "{} signatures failed to verify", items.len() - ok);
    Ok(took)
}

fn print_table(cfg: &Config, medians: &[Duration; Path::ALL.len()]) {
    let m = |path: Path| medians[path as usize];
    let (n_transfers, n_settlements) = (cfg.n_transfers(), cfg.n_settlements());
    println!();
    println!(
        "ledger: a block of {} txs ({n_transfers} transfers + {n_settlements} channel settlements, alternating), \
         {} senders, {} nodes, {} channels; one thread; median of {} rounds",
        cfg.block_txs, cfg.n_senders, cfg.n_nodes, cfg.n_channels, cfg.rounds
    );
    println!(
        "signature checks: a transfer has 1 (its tx signature); a settlement has 2 (its tx signature, \
         and the client's receipt signature that the ledger checks itself, single, inside settle_channel)"
    );
    println!(
        "\"per tx\" is the block's time over its {} txs, so the indented rows add up to the row above them",
        cfg.block_txs
    );
    println!();
    println!("{:<48} {:<38} {:>11} {:>9} {:>13}", "path", "signatures checked", "per block", "per tx", "rate");
    let row = |what: &str, sigs: &str, d: Duration, count: usize, unit: &str| {
        println!(
            "{:<48} {:<38} {:>8} ms {:>6} µs {:>9} {unit}",
            what,
            sigs,
            sig3(d.as_secs_f64() * 1e3),
            sig3(d.as_secs_f64() * 1e6 / cfg.block_txs as f64),
            sig3(count as f64 / d.as_secs_f64()),
        );
    };
    let all = cfg.block_txs;
    row(
        "ours: encode + batch verify + apply_verified",
        "1.5/tx: tx (batch) + receipt (single)",
        m(Path::Ours),
        all,
        "txs/s",
    );
    row("  encode signing bytes only", "0", m(Path::Encode), all, "txs/s");
    row("  batch verify tx signatures only", "1/tx, batched", m(Path::Batch), all, "sigs/s");
    row("  apply_verified only", "0.5/tx: receipt (single)", m(Path::Apply), all, "txs/s");
    row("    receipt verify only (single)", "1/settlement", m(Path::Receipts), n_settlements, "sigs/s");
    row("anchor: single verify of the same tx signatures", "1/tx, single", m(Path::Anchor), all, "sigs/s");
    println!();
    println!(
        "batch verification runs at {}× the single rate on this core",
        sig3(m(Path::Anchor).as_secs_f64() / m(Path::Batch).as_secs_f64())
    );
    // The state machine's own cost, measured directly on the txs that
    // carry no signature inside them.
    let transfers = m(Path::ApplyTransfers);
    println!(
        "the state machine alone: apply_verified on the block's {n_transfers} transfers takes {} ms \
         ({} µs and no signature check per tx, {} txs/s)",
        sig3(transfers.as_secs_f64() * 1e3),
        sig3(transfers.as_secs_f64() * 1e6 / n_transfers as f64),
        sig3(n_transfers as f64 / transfers.as_secs_f64())
    );
}

/// A world with funded senders, registered nodes and one open channel per
/// client, plus a block of pre-signed txs valid against it.
fn prepare(cfg: &Config) -> anyhow::Result<Prepared> {
    let senders: Vec<String> = (0..cfg.n_senders).map(|i| format!("sender-{i}")).collect();
    let nodes: Vec<String> = (0..cfg.n_nodes).map(|i| format!("node-{i}")).collect();
    let clients: Vec<String> = (0..cfg.n_channels).map(|i| format!("client-{i}")).collect();
    let mut funded = Vec::new();
    funded.extend(senders.iter().map(|l| fund(l, 1_000_000, 0, 0)));
    funded.extend(nodes.iter().map(|l| fund(l, 1_000, 0, 1_000)));
    funded.extend(clients.iter().map(|l| fund(l, 1_000, 1_000_000, 0)));
    let mut world = World::new(Params::default_params(), 10_000_000, 10_000_000, funded);

    const COUNTRIES: [&str; 8] = ["DE", "US", "BR", "NG", "AE", "IN", "JP", "AU"];
    for (i, label) in nodes.iter().enumerate() {
        let ip = format!("20.0.{i}.1");
        world
            .submit(label, TxBody::RegisterNode(testkit::node_spec(COUNTRIES[i % 8], &ip, 100_000_000)))
            .with_context(|| format!("registering {label}"))?;
    }
    let node_ids: Vec<AccountId> = nodes.iter().map(|l| testkit::id(l)).collect();
    let client_keys: Vec<SigningKey> = clients.iter().map(|l| testkit::key(l)).collect();
    let expires_at_secs = world.now_secs + 30 * 24 * 3600;
    let mut channels: Vec<ChannelId> = Vec::with_capacity(cfg.n_channels);
    for (c, label) in clients.iter().enumerate() {
        let nonce = world.nonce(label);
        let body = TxBody::OpenChannel { node: node_ids[c % cfg.n_nodes], escrow: Usd::units(10_000), expires_at_secs };
        world.submit(label, body).with_context(|| format!("opening the channel of {label}"))?;
        channels.push(channel_id(&client_keys[c].public(), nonce));
    }

    // Txs for one account are pre-signed with consecutive nonces, so the
    // block is built by hand rather than through `World::tx` (which reads
    // the nonce from state).
    let fee = Amount::Token(world.state.params.min_fee_token);
    let sender_keys: Vec<SigningKey> = senders.iter().map(|l| testkit::key(l)).collect();
    let node_keys: Vec<SigningKey> = nodes.iter().map(|l| testkit::key(l)).collect();
    let mut sender_nonces: Vec<u64> = senders.iter().map(|l| world.nonce(l)).collect();
    let mut node_nonces: Vec<u64> = nodes.iter().map(|l| world.nonce(l)).collect();
    let sign = |key: &SigningKey, nonce: &mut u64, body: TxBody| {
        let tx = Tx { chain_id: testkit::CHAIN_ID.into(), signer: key.public(), nonce: *nonce, fee, body };
        *nonce += 1;
        tx.sign(key)
    };
    let mut block = Vec::with_capacity(cfg.block_txs);
    let mut receipts = Vec::with_capacity(cfg.n_settlements());
    for k in 0..cfg.block_txs {
        let (j, transfer) = if cfg.mixed { (k / 2, k % 2 == 0) } else { (k, true) };
        if transfer {
            // Transfer j: sender j mod n pays the next sender 1 TWY.
            let s = j % cfg.n_senders;
            let to = sender_keys[(s + 1) % cfg.n_senders].public();
            let body = TxBody::Transfer { to, amount: Amount::Token(Token::units(1)) };
            block.push(sign(&sender_keys[s], &mut sender_nonces[s], body));
        } else {
            // Settlement j: the (j / n_channels + 1)-th settlement of its
            // channel in this block, each receipt $1 and 1 MiB above the last.
            let c = j % cfg.n_channels;
            let nth = (j / cfg.n_channels + 1) as u128;
            let receipt = Receipt {
                chain_id: testkit::CHAIN_ID.into(),
                channel: channels[c],
                cumulative_usd: Usd::units(nth),
                cumulative_bytes: nth as u64 * (1 << 20),
            }
            .sign(&client_keys[c]);
            receipts.push((receipt.clone(), client_keys[c].public()));
            let n = c % cfg.n_nodes;
            block.push(sign(&node_keys[n], &mut node_nonces[n], TxBody::SettleChannel { receipt }));
        }
    }
    let transfers = block.iter().filter(|s| matches!(s.tx.body, TxBody::Transfer { .. })).cloned().collect();
    Ok(Prepared { ctx: world.ctx(), state: world.state, block, receipts, transfers })
}
