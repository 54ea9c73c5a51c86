//! `tollway demo`: a scripted economy through the real ledger. Every action
//! is a signed transaction applied by `tollway_ledger::apply`, and every
//! epoch is the ledger's own `end_epoch`; the supply invariant is checked
//! after each one. Deterministic: the same flags print the same table.

use anyhow::{bail, Context};
use tollway_ledger::testkit::{fund, id, node_spec, Funding, Rejected, World};
use tollway_ledger::{check_supply, state_root, Params, SlashReason};
use tollway_types::{channel_id, Hash32, Token, TxBody, Usd};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Epochs to run.
    #[arg(long, default_value_t = 24)]
    epochs: u64,
    /// Honest nodes per macro-region (eight regions).
    #[arg(long, default_value_t = 3)]
    nodes_per_region: usize,
    /// Consumers paying for bandwidth (at most 10,000).
    #[arg(long, default_value_t = 16)]
    consumers: usize,
    /// Parameters file (default: the compiled-in params/default.toml).
    #[arg(long)]
    params: Option<std::path::PathBuf>,
}

const MBPS: u64 = 1_000_000;
/// One country per macro-region, in MacroRegion order.
const COUNTRIES: [&str; 8] = ["US", "BR", "DE", "NG", "AE", "IN", "JP", "AU"];
const ORACLES: usize = 6;
/// The oracle that colludes with the liar: it reports the liar's claim.
const COLLUDER: &str = "oracle-5";
const SYBILS: usize = 5;

/// A deterministic number in [0, 1e6) from a label and an epoch: the
/// demo's only "randomness".
fn noise_ppm(label: &str, epoch: u64) -> u64 {
    let h = Hash32::of(format!("{label}/{epoch}").as_bytes());
    u64::from_le_bytes([h.0[0], h.0[1], h.0[2], h.0[3], h.0[4], h.0[5], h.0[6], h.0[7]]) % 1_000_000
}

struct Provider {
    label: String,
    true_capacity_bps: u64,
    /// Offline in the epochs where `epoch % 8` is in this window (the
    /// region's "3 AM").
    offline_phase: Option<u64>,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    if args.epochs == 0 || args.epochs > 10_000 {
        bail!("--epochs must be between 1 and 10000, not {}", args.epochs);
    }
    if args.nodes_per_region == 0 || args.nodes_per_region > 200 {
        bail!("--nodes-per-region must be between 1 and 200, not {}", args.nodes_per_region);
    }
    if args.consumers > 10_000 {
        bail!("--consumers must be at most 10000, not {}", args.consumers);
    }
    let params = match &args.params {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Params::from_toml(&text).with_context(|| format!("{}", path.display()))?
        }
        None => Params::default_params(),
    };
    // Stakes as the parameters ask, at least the story's own.
    let whole = |t: Token| t.0.div_ceil(1_000_000);
    let (node_stake, oracle_stake) = (whole(params.min_node_stake).max(2_000), whole(params.min_oracle_stake).max(5_000));

    // Cast: honest providers (capacities 50–500 Mbit/s), one liar claiming
    // ten times what it has, a sybil farm in one /24, oracles, consumers.
    let mut providers = Vec::new();
    let mut accounts: Vec<Funding> = Vec::new();
    for (r, country) in COUNTRIES.iter().enumerate() {
        for i in 0..args.nodes_per_region {
            let label = format!("{country}-{i}");
            let true_capacity_bps = (50 + noise_ppm(&label, 0) % 450) * MBPS;
            // The first node of every region sleeps two epochs in eight.
            let offline_phase = (i == 0).then_some(r as u64 % 8);
            providers.push(Provider { label: label.clone(), true_capacity_bps, offline_phase });
            accounts.push(fund(&label, 10, 0, node_stake));
        }
    }
    accounts.push(fund("liar", 10, 0, node_stake));
    for s in 0..SYBILS {
        accounts.push(fund(&format!("sybil-{s}"), 10, 0, node_stake));
    }
    for o in 0..ORACLES {
        accounts.push(fund(&format!("oracle-{o}"), 10, 0, oracle_stake));
    }
    for c in 0..args.consumers {
        accounts.push(fund(&format!("consumer-{c}"), 0, 500, 0));
    }
    let mut w = World::new(params, 10_000_000, 10_000_000, accounts);

    // A parameters file can ask for what the story cannot do (fees above
    // what its accounts hold, say): the ledger's refusal is the error.
    let register = |w: &mut World, label: &str, country: &str, ip: &str, claimed_bps: u64| {
        w.try_must(label, TxBody::RegisterNode(node_spec(country, ip, claimed_bps))).map(drop)
    };
    for (i, p) in providers.iter().enumerate() {
        let country = &p.label[..2];
        register(&mut w, &p.label, country, &format!("203.{}.{}.10", i / 250, i % 250), p.true_capacity_bps)?;
    }
    register(&mut w, "liar", "DE", "198.18.0.10", 1_000 * MBPS)?; // delivers 100
    for s in 0..SYBILS {
        register(&mut w, &format!("sybil-{s}"), "US", &format!("198.19.7.{}", s + 1), 200 * MBPS)?;
    }
    for o in 0..ORACLES {
        w.try_register_oracle(&format!("oracle-{o}"), &format!("192.0.{o}.1"))?;
    }
    w.end_epoch(); // oracles become eligible

    outln!(
        "Tollway demo: {} honest nodes in 8 regions, 1 liar (claims 1000 Mbit/s, delivers 100), \
         a sybil farm of {SYBILS} in one /24, {ORACLES} oracles ({COLLUDER} vouches for the liar's claims), {} consumers.",
        providers.len(),
        args.consumers
    )?;
    outln!("Every row is one epoch of the real ledger: signed txs in, end_epoch out, supply checked.\n")?;
    outln!(
        "{:>5} {:>6} {:>10} {:>12} {:>12} {:>12} {:>12} {:>10} {:>11}  events",
        "epoch", "nodes", "paid USD", "mint uptime", "mint usage", "mint oracle", "burned TWY", "price $", "region mult"
    )?;

    let mut channels: Vec<Option<(tollway_types::ChannelId, String, u128)>> = vec![None; args.consumers];
    let mut totals = (0u128, 0u128);
    let first_epoch = w.state.epoch;
    // Consumers whose $500 is spent: from then on a row's paid USD falls
    // with no word of why.
    let mut out_of_usd = 0;
    for _ in 0..args.epochs {
        let epoch = w.state.epoch;
        let mut refused = 0;
        // Consumers buy bandwidth: demand grows 10 % an epoch from $2.
        let spend = Usd(2_000_000 + 200_000 * epoch as u128);
        for (c, slot) in channels.iter_mut().enumerate() {
            let client = format!("consumer-{c}");
            let provider = &providers[(c * 7 + epoch as usize) % providers.len()].label;
            if slot.is_none() {
                let ch = channel_id(&id(&client), w.nonce(&client));
                let open = TxBody::OpenChannel { node: id(provider), escrow: Usd::units(50), expires_at_secs: w.now_secs + 30 * 86_400 };
                match w.submit_usd_fee(&client, open) {
                    Ok(_) => *slot = Some((ch, provider.clone(), 0)),
                    // A consumer's first channel refused is the parameters'
                    // doing (a fee or a minimum escrow above what it holds):
                    // it ran with nobody paying, without a word. Later
                    // ones are refused when its $500 is spent.
                    Err(error) if epoch == first_epoch => {
                        return Err(Rejected { label: client, kind: "open-channel", error }.into());
                    }
                    Err(_) => refused += 1,
                }
            }
            if let Some((ch, node, paid)) = slot.as_mut() {
                let cumulative = (*paid + spend.0).min(Usd::units(50).0);
                if cumulative > *paid {
                    let bytes = (cumulative / 500) as u64 * 1024 * 1024 * 1024 / 1000; // ~$0.50/GiB
                    let receipt = w.receipt(&client, *ch, Usd(cumulative), bytes);
                    if w.submit(node, TxBody::SettleChannel { receipt }).is_ok() {
                        *paid = cumulative;
                    }
                }
            }
            // A spent channel is left to expire; the next epoch opens a new one.
            if slot.as_ref().is_some_and(|s| s.2 >= Usd::units(50).0) {
                *slot = None;
            }
        }
        // Nodes send heartbeats; oracles measure what each really delivers.
        for p in &providers {
            let online = p.offline_phase.is_none_or(|ph| (epoch % 8) != ph && (epoch % 8) != (ph + 1) % 8);
            if !online || !w.node(&p.label).active {
                continue;
            }
            w.try_must(&p.label, TxBody::Heartbeat { epoch })?;
            // Honest nodes measure between 0.85 and 1.0 of their capacity.
            let measured = p.true_capacity_bps / 1_000_000 * (850_000 + noise_ppm(&p.label, epoch) % 150_000);
            w.try_measure(&p.label, measured, 20 + (noise_ppm(&p.label, epoch) % 120) as u32, 990_000)?;
        }
        if w.node("liar").active {
            // The honest oracles measure the 100 Mbit/s it delivers; the
            // colluder, when assigned, vouches for whatever it claims.
            let claimed_bps = w.node("liar").spec.claimed_capacity_bps;
            w.try_report_each("liar", 990_000, |oracle| {
                let throughput_bps = if oracle == COLLUDER { claimed_bps } else { 100 * MBPS };
                tollway_types::MeasurementOutcome::Measured { throughput_bps, latency_us: 40_000 }
            })?;
        }
        for s in 0..SYBILS {
            w.try_measure(&format!("sybil-{s}"), 200 * MBPS, 30, 990_000)?;
        }

        let r = w.end_epoch();
        check_supply(&w.state).map_err(anyhow::Error::msg)?;
        totals.0 += r.minted().0;
        totals.1 += r.burned_token.0 + r.slashed_burned.0;
        let mut events = Vec::new();
        for s in &r.slashes {
            let who = w.label_of(&s.account);
            match &s.reason {
                SlashReason::OverClaim { rho_ppm, .. } => {
                    events.push(format!("SLASH {who} {} (rho {:.1})", s.amount, *rho_ppm as f64 / 1e6))
                }
                SlashReason::OracleDeviation { .. } => events.push(format!("SLASH oracle {who} {}", s.amount)),
                SlashReason::VouchedForOverClaim { node } => {
                    events.push(format!("SLASH {who} {} (vouched for {})", s.amount, w.label_of(node)))
                }
            }
        }
        if w.node("liar").strike.is_some() {
            events.push("liar has a strike".into());
        }
        if refused != out_of_usd {
            out_of_usd = refused;
            events.push(format!("{refused} of {} consumers out of USD", args.consumers));
        }
        let min_mult = r.regions.iter().map(|x| x.multiplier_ppm).min().unwrap_or(0);
        let max_mult = r.regions.iter().map(|x| x.multiplier_ppm).max().unwrap_or(0);
        outln!(
            "{:>5} {:>6} {:>10.2} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>10.4} {:>11}  {}",
            r.epoch,
            r.regions.iter().map(|x| x.active_nodes).sum::<u32>(),
            r.settled_usd.0 as f64 / 1e6,
            r.minted_uptime.0 as f64 / 1e6,
            r.minted_usage.0 as f64 / 1e6,
            r.minted_oracle.0 as f64 / 1e6,
            r.burned_token.0 as f64 / 1e6,
            r.price_usd_micro_per_token as f64 / 1e6,
            format!("{:.2}-{:.2}", min_mult as f64 / 1e6, max_mult as f64 / 1e6),
            events.join("; ")
        )?;
    }

    // What the story showed.
    let sybil_total: u128 = (0..SYBILS).map(|s| w.node(&format!("sybil-{s}")).total_rewards.0).sum();
    // The farm's honest neighbour in its region: US-1 is never offline
    // (US-0 sleeps two epochs in eight), when there is one.
    let neighbour = if args.nodes_per_region > 1 { "US-1" } else { "US-0" };
    let us_honest = w.node(neighbour).total_rewards.0;
    let liar = w.node("liar");
    outln!()?;
    outln!("Summary after {} epochs:", args.epochs)?;
    outln!("  minted {}, burned {} (burn of settled USD plus slashes)", Token(totals.0), Token(totals.1))?;
    outln!(
        "  liar: slashed {}, claim now {} Mbit/s, rewards {}",
        liar.total_slashed,
        liar.spec.claimed_capacity_bps / MBPS,
        liar.total_rewards
    )?;
    let Some(colluder) = w.account(COLLUDER).oracle.map(|o| &w.state.oracles[o as usize]) else {
        bail!("{COLLUDER} is not an oracle");
    };
    // A slash that leaves an oracle below its minimum stake retires it.
    let retired = colluder.retired_from_epoch.map_or_else(String::new, |epoch| {
        format!(", below the {} an oracle needs: retired from epoch {epoch}", w.state.params.min_oracle_stake)
    });
    outln!(
        "  {COLLUDER}: slashed {} for vouching for the liar, stake now {}{retired}",
        colluder.total_slashed,
        w.account(COLLUDER).staked
    )?;
    outln!(
        "  sybil farm of {SYBILS} (200 Mbit/s each, one /24) earned {} in all; honest {neighbour} ({} Mbit/s) earned {}",
        Token(sybil_total),
        providers.iter().find(|p| p.label == neighbour).map_or(0, |p| p.true_capacity_bps / MBPS),
        Token(us_honest)
    )?;
    let supply = &w.state.supply;
    // More than the summary's burn above (the rows' and the slashes') by
    // the token fees, burned as each tx paid them: two totals with one
    // name read as a bookkeeping error.
    let fees_burned = Token(supply.burned_token.0.saturating_sub(totals.1));
    outln!(
        "  supply: {} = genesis {} + minted {} - burned {} (the burn above and {fees_burned} of token fees; checked every epoch)",
        supply.total_token(),
        supply.genesis_token,
        supply.minted_token,
        supply.burned_token
    )?;
    outln!("  state root {}", state_root(&w.state))?;
    Ok(())
}
