//! `epoch`: `end_epoch` over 100,000 registered nodes, each with reports
//! from its 3 assigned oracles. Aim: under 10 ms (about 100 ns per node);
//! 100 ms is the floor.
//!
//! The anchor is the "raw limit": one plain pass over the same nodes'
//! reports doing the least arithmetic an epoch needs (a stake-weighted
//! median and a weight per node into a `Vec<u128>`), in the same run.
//!
//! A second row times the same epoch a vesting period later (`aged`):
//! by then each node's account holds the tranches of a week of hourly
//! rewards, more than fit inline, as a chain's accounts do in steady
//! state; the fresh world's accounts hold one.
//!
//! The world is built through transactions, as a chain would see them:
//! a transfer from a treasury, a stake and a registration per node, oracle
//! registrations, and each oracle's measurement reports on the nodes it is
//! assigned to. The txs are signed, but applied with `apply_verified`:
//! signature checking is the `ledger` benchmark's subject, and checking
//! here would add about 20 s to the setup for 100,000 nodes (300,000
//! single verifications at about 16,000 a second).

use crate::{median, report_line, sig3, Figure, Progress};
use anyhow::{ensure, Context};
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tollway_ledger::assignment::Assigner;
use tollway_ledger::state::{NodeIdx, INLINE_TRANCHES};
use tollway_ledger::testkit::{self, fund, World};
use tollway_ledger::{apply_verified, end_epoch, Ctx, EpochReport, Params, State};
use tollway_types::tx::limits::MAX_MEASUREMENTS_PER_REPORT;
use tollway_types::{
    Amount, Hash32, Measurement, MeasurementOutcome, MeasurementReport, NodeSpec, SigningKey, Token, Tx, TxBody, PPM,
};

const GOAL: Duration = Duration::from_millis(10);
const FLOOR: Duration = Duration::from_millis(100);

/// Countries cycled through, one per macro-region or so, so every
/// regional multiplier has nodes behind it.
const COUNTRIES: [&str; 8] = ["DE", "US", "BR", "NG", "AE", "IN", "JP", "AU"];

struct Config {
    n_nodes: usize,
    n_oracles: usize,
    rounds: usize,
}

impl Config {
    fn new(quick: bool) -> Config {
        Config { n_nodes: if quick { 10_000 } else { 100_000 }, n_oracles: 30, rounds: if quick { 3 } else { 7 } }
    }
}

pub fn run(progress: &Progress, quick: bool) -> anyhow::Result<String> {
    let cfg = Config::new(quick);
    let setup_start = Instant::now();
    let world = prepare(&cfg, progress)?;
    let setup = setup_start.elapsed();
    let state = &world.state;
    // The epoch being timed closes one hour (one default epoch) later.
    let ctx = Ctx { height: world.height + 1, time_secs: world.now_secs + state.params.epoch_secs };
    let seed = Hash32::of(b"tollway epoch bench");

    progress.say("setup: a vesting period of epochs with the same reports, for the aged row");
    let (aged_state, aged_ctx) = aged(state, ctx, seed);
    progress.say(&format!("measuring: 1 warm-up + {} rounds", cfg.rounds));
    let (mut ours, mut anchor, mut ours_aged) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_report = None;
    let mut raw_total = 0u128;
    for round in 0..=cfg.rounds {
        // Alternate which goes first, so that drift in the machine's speed
        // hits both alike.
        let anchor_first = round % 2 == 1;
        if anchor_first {
            let (took, total) = time_raw_limit(state);
            anchor.push(took);
            raw_total = total;
        }
        let (took, report) = time_end_epoch(state, ctx, seed);
        ours.push(took);
        last_report = Some(report);
        ours_aged.push(time_end_epoch(&aged_state, aged_ctx, seed).0);
        if !anchor_first {
            let (took, total) = time_raw_limit(state);
            anchor.push(took);
            raw_total = total;
        }
        if round == 0 {
            ours.clear(); // the warm-up round
            anchor.clear();
            ours_aged.clear();
        }
    }
    let report = last_report.context("no epoch ran")?;
    ensure!(report.epoch == state.epoch, "end_epoch closed epoch {} instead of {}", report.epoch, state.epoch);
    ensure!(raw_total > 0, "the raw pass found no measured weight");

    print_table(&cfg, state, &report, &ours, &anchor, setup);
    print_aged(&cfg, &aged_state, &ours_aged, &anchor);
    let (ours, anchor) = (median(&ours), median(&anchor));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(report_line(
        "epoch",
        Figure { value: ms(ours), unit: "ms" },
        Figure { value: ms(anchor), unit: "ms" },
        &format!(
            "raw limit: one pass over the same {} nodes' reports, stake-weighted median and weight into a Vec<u128>",
            cfg.n_nodes
        ),
        anchor.as_secs_f64() / ours.as_secs_f64(),
    ))
}

/// The prepared state a vesting period of epochs later, each epoch with
/// the prepared epoch's reports again (they are not checked again: a
/// chain checks a report when it comes in), and when its next epoch ends.
fn aged(state: &State, ctx: Ctx, seed: Hash32) -> (State, Ctx) {
    let mut s = state.clone();
    let reports: Vec<_> = s.node_epochs.iter().map(|e| e.reports.clone()).collect();
    let epoch_secs = s.params.epoch_secs;
    let next = |c: Ctx| Ctx { height: c.height + 1, time_secs: c.time_secs + epoch_secs };
    let mut ctx = ctx;
    for _ in 0..s.params.vesting_secs / epoch_secs {
        end_epoch(&mut s, ctx, seed);
        for (e, r) in s.node_epochs.iter_mut().zip(&reports) {
            e.reports = r.clone();
        }
        ctx = next(ctx);
    }
    (s, ctx)
}

/// The aged row, and how many tranches its nodes' accounts hold.
fn print_aged(cfg: &Config, aged: &State, ours: &[Duration], anchor: &[Duration]) {
    let tranches: Vec<usize> = aged.nodes.iter().map(|n| aged.accounts[n.account as usize].tranches().count()).collect();
    let on_heap = tranches.iter().filter(|&&t| t > INLINE_TRANCHES).count();
    let mean = tranches.iter().sum::<usize>() as f64 / tranches.len().max(1) as f64;
    let (ours, anchor) = (median(ours), median(anchor));
    println!();
    println!(
        "a vesting period ({} epochs) later: the nodes' accounts hold {:.1} tranches on average, {} of {} past the {} inline (on the heap)",
        aged.params.vesting_secs / aged.params.epoch_secs,
        mean,
        on_heap,
        tranches.len(),
        INLINE_TRANCHES
    );
    println!(
        "{:<56} {:>8} ms {:>9} ns   anchor/ours {:.3}",
        "ours: end_epoch, aged",
        sig3(ours.as_secs_f64() * 1e3),
        sig3(ours.as_secs_f64() * 1e9 / cfg.n_nodes as f64),
        anchor.as_secs_f64() / ours.as_secs_f64()
    );
}

/// Ours: `end_epoch` on a fresh copy of the prepared state (the copy is
/// not timed, nor is dropping it).
fn time_end_epoch(state: &State, ctx: Ctx, seed: Hash32) -> (Duration, EpochReport) {
    let mut s = state.clone();
    let start = Instant::now();
    let report = end_epoch(&mut s, ctx, seed);
    let took = start.elapsed();
    drop(black_box(s));
    (took, report)
}

/// The anchor: the least an epoch must do per node, as one plain loop over
/// the same data: read the node's reports, take the stake-weighted median
/// throughput and uptime, and store capacity × uptime as its weight.
///
/// It reads a fresh copy too, made just before (and not timed), so that
/// both sides see memory laid out and cached alike.
fn time_raw_limit(state: &State) -> (Duration, u128) {
    let copy = state.clone();
    let state = &copy;
    let start = Instant::now();
    let stake: Vec<u128> = state.oracles.iter().map(|o| state.accounts[o.account as usize].staked.0.max(1)).collect();
    let mut weights: Vec<u128> = Vec::with_capacity(state.nodes.len());
    let mut total = 0u128;
    for node_epoch in &state.node_epochs {
        let mut throughput = [(0u64, 0u128); 8];
        let mut uptime = [(0u64, 0u128); 8];
        let (mut n_t, mut n_u) = (0, 0);
        for slot in node_epoch.reports.iter().take(8) {
            let w = stake[slot.oracle as usize];
            if let MeasurementOutcome::Measured { throughput_bps, .. } = slot.outcome {
                throughput[n_t] = (throughput_bps, w);
                n_t += 1;
            }
            uptime[n_u] = (slot.uptime_ppm as u64, w);
            n_u += 1;
        }
        let w = weighted_median(&mut throughput[..n_t]) as u128 * weighted_median(&mut uptime[..n_u]) as u128 / PPM;
        weights.push(w);
        total += w;
    }
    let took = start.elapsed();
    black_box(weights);
    drop(black_box(copy));
    (took, total)
}

/// The smallest value at which the cumulative weight reaches half.
fn weighted_median(samples: &mut [(u64, u128)]) -> u64 {
    samples.sort_unstable();
    let total: u128 = samples.iter().map(|s| s.1).sum();
    let mut cumulative = 0;
    for &(value, weight) in samples.iter() {
        cumulative += weight;
        if cumulative * 2 >= total {
            return value;
        }
    }
    0
}

fn print_table(
    cfg: &Config,
    state: &State,
    report: &EpochReport,
    ours: &[Duration],
    anchor: &[Duration],
    setup: Duration,
) {
    let n_reports: usize = state.node_epochs.iter().map(|x| x.reports.len()).sum();
    let ms = |d: Duration| sig3(d.as_secs_f64() * 1e3);
    let yes_no = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!(
        "epoch: end_epoch over {} nodes ({} subnets), {} oracles, {} reports; one thread; median of {} rounds",
        cfg.n_nodes,
        state.subnet_index.len(),
        cfg.n_oracles,
        n_reports,
        cfg.rounds
    );
    println!(
        "the timed epoch measured {} nodes, rewarded {}, slashed {} (setup took {:.1} s, not timed)",
        report.measured_nodes,
        report.rewarded_nodes,
        report.slashes.len(),
        setup.as_secs_f64()
    );
    println!();
    println!("{:<56} {:>11} {:>12} {:>19}", "path", "per epoch", "per node", "spread (min–max)");
    let row = |what: &str, samples: &[Duration]| {
        let d = median(samples);
        let (min, max) = (samples.iter().min().copied(), samples.iter().max().copied());
        println!(
            "{what:<56} {:>8} ms {:>9} ns {:>16} ms",
            ms(d),
            sig3(d.as_secs_f64() * 1e9 / cfg.n_nodes as f64),
            format!("{}–{}", ms(min.unwrap_or_default()), ms(max.unwrap_or_default())),
        );
    };
    row("ours: end_epoch", ours);
    row("anchor: raw limit (one pass: weighted median, weight)", anchor);
    println!();
    let ours = median(ours);
    println!("goal  (< {} ms, about 100 ns/node): {}", GOAL.as_millis(), yes_no(ours < GOAL));
    println!("floor (< {} ms): {}", FLOOR.as_millis(), yes_no(ours < FLOOR));
}

/// splitmix64's finaliser: deterministic, well-spread per-node variety.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Claims its real capacity.
    Honest,
    /// Claims 1.6× its capacity: rewards follow the measurement (ρ ≤ 2).
    OverClaims,
    /// Claims 4×: a strike in the warm-up epoch, a slash in the timed one
    /// when the new oracle set is disjoint (DESIGN §2 step 2).
    Lies,
    /// Does not answer: every oracle reports it unreachable.
    Offline,
}

/// What node `i` really is, drawn deterministically from its index: 93 %
/// honest, 4 % over-claiming, 2 % lying, 1 % offline.
struct NodeProfile {
    true_bps: u64,
    behaviour: Behaviour,
    stake: Token,
    latency_ms: u32,
}

impl NodeProfile {
    fn of(i: usize) -> NodeProfile {
        let r = mix64(i as u64);
        let behaviour = match (r >> 20) % 100 {
            0..=1 => Behaviour::Lies,
            2..=5 => Behaviour::OverClaims,
            6 => Behaviour::Offline,
            _ => Behaviour::Honest,
        };
        NodeProfile {
            true_bps: (20 + r % 980) * 1_000_000,
            behaviour,
            // Around the stake saturation (2,000 TWY), so stake factors vary.
            stake: Token::units(1_000 + ((r >> 32) % 2_001) as u128),
            latency_ms: 10 + ((r >> 48) % 390) as u32,
        }
    }

    fn claimed_bps(&self) -> u64 {
        match self.behaviour {
            Behaviour::Honest | Behaviour::Offline => self.true_bps,
            Behaviour::OverClaims => self.true_bps / 10 * 16,
            Behaviour::Lies => self.true_bps * 4,
        }
    }

    /// What oracle `o` reports on node `n` in `epoch`: 85–100 % of the true
    /// capacity (DESIGN §5: honest nodes measure down to ~0.8), sometimes an
    /// oracle error; oracle 0 is a sloppy measurer that reports 40 %.
    fn measurement(&self, n: usize, o: u32, epoch: u64) -> (MeasurementOutcome, u32) {
        let r = mix64((n as u64) ^ ((o as u64) << 40) ^ (epoch << 56));
        if self.behaviour == Behaviour::Offline {
            return (MeasurementOutcome::Unreachable, 0);
        }
        if r.is_multiple_of(50) {
            return (MeasurementOutcome::OracleError, 0);
        }
        let mut throughput_bps = self.true_bps / 1_000 * (850 + (r >> 8) % 151);
        if o == 0 {
            throughput_bps = throughput_bps / 10 * 4;
        }
        let latency_us = self.latency_ms * 1_000 + ((r >> 24) % 5_000) as u32;
        let uptime_ppm = 900_000 + ((r >> 40) % 100_001) as u32;
        (MeasurementOutcome::Measured { throughput_bps, latency_us }, uptime_ppm)
    }
}

/// Node `i`'s address. 80 % of nodes have a /24 of their own; the rest sit
/// five to a /24 (one household or hosting block), which the sybil cap
/// folds into one node's weight.
fn node_addr(i: usize) -> IpAddr {
    let b = |x: usize| (x & 0xff) as u8;
    if i % 25 < 20 {
        IpAddr::from([20 + b(i >> 16), b(i >> 8), b(i), 1])
    } else {
        let group = i / 25;
        IpAddr::from([100 + b(group >> 16), b(group >> 8), b(group), b(i % 25 - 19)])
    }
}

fn node_spec(i: usize, profile: &NodeProfile) -> NodeSpec {
    let mut spec = testkit::node_spec(COUNTRIES[i % COUNTRIES.len()], "192.0.2.1", profile.claimed_bps());
    spec.addrs = vec![node_addr(i)];
    spec
}

/// Builds the world: nodes registered, oracles eligible, one measured
/// warm-up epoch closed, and the current epoch's reports in.
///
/// The warm-up epoch makes the timed one a steady-state epoch rather than
/// the network's first: nodes already hold a vesting tranche that this
/// epoch's reward joins, reputations have moved, and liars carry a strike.
fn prepare(cfg: &Config, progress: &Progress) -> anyhow::Result<World> {
    let oracle_labels: Vec<String> = (0..cfg.n_oracles).map(|o| format!("oracle-{o}")).collect();
    let mut funded = vec![fund("treasury", cfg.n_nodes as u128 * 3_100, 0, 0)];
    funded.extend(oracle_labels.iter().map(|l| fund(l, 1_000, 0, 5_000)));
    let mut world = World::new(Params::default_params(), 10_000_000, 10_000_000, funded);

    for (o, label) in oracle_labels.iter().enumerate() {
        let addr = IpAddr::from([198, 51, o as u8, 1]);
        world.submit(label, TxBody::RegisterOracle { addr }).with_context(|| format!("registering {label}"))?;
    }
    let oracle_keys: Vec<SigningKey> = oracle_labels.iter().map(|l| testkit::key(l)).collect();
    for (o, key) in oracle_keys.iter().enumerate() {
        ensure!(world.state.oracle_index.get(&key.public()) == Some(&(o as u32)), "oracle {o} has another index");
    }

    progress.say(&format!("setup: registering {} nodes through txs (transfer, stake, register)", cfg.n_nodes));
    let fee = Amount::Token(world.state.params.min_fee_token);
    let treasury = testkit::key("treasury");
    let treasury_nonce = world.nonce("treasury");
    let profiles: Vec<NodeProfile> = (0..cfg.n_nodes).map(NodeProfile::of).collect();
    let ctx = world.ctx();
    for (i, profile) in profiles.iter().enumerate() {
        let key = testkit::key(&format!("node-{i}"));
        let txs = [
            // Its stake plus 1 TWY for the fees.
            Tx {
                chain_id: testkit::CHAIN_ID.into(),
                signer: treasury.public(),
                nonce: treasury_nonce + i as u64,
                fee,
                body: TxBody::Transfer {
                    to: key.public(),
                    amount: Amount::Token(Token(profile.stake.0 + Token::units(1).0)),
                },
            }
            .sign(&treasury),
            Tx {
                chain_id: testkit::CHAIN_ID.into(),
                signer: key.public(),
                nonce: 0,
                fee,
                body: TxBody::Stake { amount: profile.stake },
            }
            .sign(&key),
            Tx {
                chain_id: testkit::CHAIN_ID.into(),
                signer: key.public(),
                nonce: 1,
                fee,
                body: TxBody::RegisterNode(node_spec(i, profile)),
            }
            .sign(&key),
        ];
        for stx in &txs {
            apply_verified(&mut world.state, ctx, stx).with_context(|| format!("node {i}: {}", stx.tx.body.kind()))?;
        }
        ensure!(world.state.node_index.get(&key.public()) == Some(&(i as NodeIdx)), "node {i} has another index");
        if (i + 1) % 20_000 == 0 {
            progress.say(&format!("setup: {} nodes registered", i + 1));
        }
    }

    progress.say("setup: closing epoch 0 (oracles become eligible)");
    world.end_epoch();
    let n_reports = submit_reports(&mut world, &oracle_keys, &profiles)?;
    progress.say(&format!("setup: {n_reports} report txs in; closing the measured warm-up epoch"));
    let warm_up = Instant::now();
    world.end_epoch();
    progress
        .say(&format!("setup: warm-up epoch took {:.1} ms (with check_supply)", warm_up.elapsed().as_secs_f64() * 1e3));
    let n_reports = submit_reports(&mut world, &oracle_keys, &profiles)?;
    progress.say(&format!("setup: {n_reports} report txs in for the timed epoch"));
    Ok(world)
}

/// Every node's assigned oracles report on it for the current epoch, each
/// oracle in as few report txs as the per-report limit allows. Returns the
/// number of report txs.
fn submit_reports(world: &mut World, oracle_keys: &[SigningKey], profiles: &[NodeProfile]) -> anyhow::Result<usize> {
    let epoch = world.state.epoch;
    let mut per_oracle: Vec<Vec<Measurement>> = vec![Vec::new(); oracle_keys.len()];
    // One assigner for the epoch (the same assignment as
    // `assigned_oracles`, without gathering the oracles again per node).
    let assigner = Assigner::new(&world.state);
    for (n, profile) in profiles.iter().enumerate() {
        let node = world.state.nodes[n].operator;
        for &o in assigner.assign(&world.state, n as NodeIdx).as_slice() {
            let (outcome, uptime_ppm) = profile.measurement(n, o, epoch);
            per_oracle[o as usize].push(Measurement { node, outcome, uptime_ppm });
        }
    }
    let fee = Amount::Token(world.state.params.min_fee_token);
    let ctx = world.ctx();
    let mut n_txs = 0;
    for (key, measurements) in oracle_keys.iter().zip(&per_oracle) {
        let first_nonce = world.state.account(&key.public()).map_or(0, |a| a.nonce);
        for (nonce, chunk) in (first_nonce..).zip(measurements.chunks(MAX_MEASUREMENTS_PER_REPORT)) {
            let body = TxBody::Report(MeasurementReport { epoch, measurements: chunk.to_vec() });
            let stx = Tx { chain_id: testkit::CHAIN_ID.into(), signer: key.public(), nonce, fee, body }.sign(key);
            apply_verified(&mut world.state, ctx, &stx).context("a measurement report")?;
            n_txs += 1;
        }
    }
    Ok(n_txs)
}
