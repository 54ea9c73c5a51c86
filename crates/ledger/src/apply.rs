//! `apply(state, ctx, tx)`: every transaction of DESIGN §2.
//!
//! Discipline: the fee is the only thing taken before the body runs, and it
//! is given back if the body fails. Every body handler checks everything
//! first and mutates only after the last check, so a rejected tx changes
//! nothing (a proptest compares state roots).

use crate::assignment::Assigner;
use crate::economics::vesting;
use crate::error::TxError;
use crate::event::Event;
use crate::params::Params;
use serde::{Deserialize, Serialize};
use crate::state::{
    Account, AccountIdx, Channel, Ctx, Node, NodeEpoch, NodeIdx, Oracle, RegionState, ReportSlot, State, SubnetKey, Unbonding,
};
use std::net::IpAddr;
use tollway_types::tx::limits;
use tollway_types::{
    channel_id, AccountId, Amount, ChannelId, MeasurementReport, NodeSpec, SignedReceipt, SignedTx, Token,
    TxBody, Usd, PPM,
};

/// Most unbonding entries an account may hold at once.
pub const MAX_UNBONDINGS: usize = 16;
/// Most channels a client may have open at once.
pub const MAX_OPEN_CHANNELS: u32 = 256;
/// Largest capacity a node may claim: 100 Gbit/s.
pub const MAX_CLAIMED_CAPACITY_BPS: u64 = 100_000_000_000;
/// Highest price a node may ask: $1,000 per GiB or per hour.
pub const MAX_PRICE_USD_MICRO: u64 = 1_000_000_000;

/// Verifies the signature, then applies the tx.
pub fn apply(state: &mut State, ctx: Ctx, stx: &SignedTx) -> Result<Vec<Event>, TxError> {
    stx.verify().map_err(|_| TxError::BadSignature(stx.tx.signer))?;
    apply_verified(state, ctx, stx)
}

/// Applies a tx whose signature the caller has already verified (in a
/// batch). Everything else is checked here.
pub fn apply_verified(state: &mut State, ctx: Ctx, stx: &SignedTx) -> Result<Vec<Event>, TxError> {
    let tx = &stx.tx;
    if tx.chain_id != state.chain_id {
        return Err(TxError::WrongChain { expected: state.chain_id.clone(), found: tx.chain_id.clone() });
    }
    let signer = *state.account_index.get(&tx.signer).ok_or(TxError::UnknownAccount(tx.signer))?;
    let expected = state.accounts[signer as usize].nonce;
    if tx.nonce != expected {
        return Err(TxError::BadNonce { account: tx.signer, expected, found: tx.nonce });
    }
    take_fee(state, signer, tx.fee)?;
    let mut events = vec![Event::FeePaid { account: tx.signer, fee: tx.fee }];
    match apply_body(state, ctx, signer, tx.nonce, &tx.body, &mut events) {
        Ok(()) => {
            state.accounts[signer as usize].nonce += 1;
            Ok(events)
        }
        Err(e) => {
            refund_fee(state, signer, tx.fee);
            Err(with_fee_counted(e, tx.fee))
        }
    }
}

/// A body that ran out of the fee's currency saw the balance after the fee;
/// the signer should hear what they hold and what the whole tx needs.
fn with_fee_counted(e: TxError, fee: Amount) -> TxError {
    match (e, fee) {
        (TxError::InsufficientToken { have, need }, Amount::Token(f)) => {
            TxError::InsufficientToken { have: Token(have.0 + f.0), need: Token(need.0.saturating_add(f.0)) }
        }
        (TxError::InsufficientUsd { have, need }, Amount::Usd(f)) => {
            TxError::InsufficientUsd { have: Usd(have.0 + f.0), need: Usd(need.0.saturating_add(f.0)) }
        }
        (e, _) => e,
    }
}

fn take_fee(state: &mut State, signer: AccountIdx, fee: Amount) -> Result<(), TxError> {
    let p = &state.params;
    let acct = &mut state.accounts[signer as usize];
    match fee {
        Amount::Token(f) => {
            if f < p.min_fee_token {
                return Err(TxError::FeeTooLow { offered: f.to_string(), minimum: p.min_fee_token.to_string() });
            }
            acct.token = acct.token.checked_sub(f).ok_or(TxError::InsufficientToken { have: acct.token, need: f })?;
            // Token fees are burned.
            state.supply.burned_token.0 += f.0;
        }
        Amount::Usd(f) => {
            if f < p.min_fee_usd {
                return Err(TxError::FeeTooLow { offered: f.to_string(), minimum: p.min_fee_usd.to_string() });
            }
            acct.usd = acct.usd.checked_sub(f).ok_or(TxError::InsufficientUsd { have: acct.usd, need: f })?;
            // USD fees join the epoch's buy-and-burn.
            state.burn_queue_usd.0 += f.0;
        }
    }
    Ok(())
}

fn refund_fee(state: &mut State, signer: AccountIdx, fee: Amount) {
    let acct = &mut state.accounts[signer as usize];
    match fee {
        Amount::Token(f) => {
            acct.token.0 += f.0;
            state.supply.burned_token.0 -= f.0;
        }
        Amount::Usd(f) => {
            acct.usd.0 += f.0;
            state.burn_queue_usd.0 -= f.0;
        }
    }
}

pub(crate) fn apply_body(
    state: &mut State,
    ctx: Ctx,
    signer: AccountIdx,
    nonce: u64,
    body: &TxBody,
    events: &mut Vec<Event>,
) -> Result<(), TxError> {
    let me = state.accounts[signer as usize].id;
    match body {
        TxBody::Transfer { to, amount } => transfer(state, signer, *to, *amount, events),
        TxBody::Stake { amount } => {
            nonzero(amount.0)?;
            let acct = &mut state.accounts[signer as usize];
            acct.token = acct.token.checked_sub(*amount).ok_or(TxError::InsufficientToken { have: acct.token, need: *amount })?;
            acct.staked.0 += amount.0;
            events.push(Event::Staked { account: me, amount: *amount });
            Ok(())
        }
        TxBody::BeginUnbond { amount } => begin_unbond(state, ctx, signer, *amount, events),
        TxBody::WithdrawUnbonded => withdraw_unbonded(state, ctx, signer, events),
        TxBody::RegisterNode(spec) => register_node(state, signer, spec, events),
        TxBody::UpdateNode(spec) => update_node(state, signer, spec, events),
        TxBody::DeregisterNode => {
            let n = active_node(state, signer)?;
            // A deregistered node is not measured, so its strike would
            // never be confirmed.
            no_strike_pending(state, signer)?;
            // Should it come back this epoch, the claim it held counts; and
            // its group counts it for the epoch all the same (ADR 0010).
            let node = &state.nodes[n as usize];
            let node_epoch = &mut state.node_epochs[n as usize];
            node_epoch.claim_held_bps = node_epoch.judged_claim_bps(node.spec.claimed_capacity_bps);
            node_epoch.group_left.get_or_insert(node.subnet_group);
            state.nodes[n as usize].active = false;
            events.push(Event::NodeDeregistered { node: me });
            Ok(())
        }
        TxBody::RegisterOracle { addr } => register_oracle(state, signer, *addr, events),
        TxBody::DeregisterOracle => {
            let o = state.accounts[signer as usize]
                .oracle
                .filter(|&o| state.oracles[o as usize].retired_from_epoch.is_none())
                .ok_or(TxError::NotAnOracle(me))?;
            // From the next epoch, as a registration is: the epoch's
            // assignment is drawn from the oracles eligible when it began
            // (DESIGN §5), so its nodes keep their oracles and what it
            // still measures counts. Its stake requirement drops at once;
            // what it unbonds stays slashable for at least two epochs
            // (`time.unbonding`), past this epoch's slashes.
            let retired_from_epoch = state.epoch + 1;
            state.oracles[o as usize].retired_from_epoch = Some(retired_from_epoch);
            events.push(Event::OracleDeregistered { oracle: me, retired_from_epoch });
            Ok(())
        }
        TxBody::OpenChannel { node, escrow, expires_at_secs } => {
            open_channel(state, ctx, signer, nonce, *node, *escrow, *expires_at_secs, events)
        }
        TxBody::SettleChannel { receipt } => settle_channel(state, signer, receipt, events),
        TxBody::CloseChannel { channel } => close_channel(state, ctx, signer, channel, events),
        TxBody::Heartbeat { epoch } => {
            let n = active_node(state, signer)?;
            if *epoch != state.epoch {
                return Err(TxError::WrongEpoch { what: "heartbeat", found: *epoch, current: state.epoch });
            }
            let node_epoch = &mut state.node_epochs[n as usize];
            if node_epoch.heartbeat {
                return Err(TxError::DuplicateHeartbeat(*epoch));
            }
            node_epoch.heartbeat = true;
            events.push(Event::Heartbeat { node: me, epoch: *epoch });
            Ok(())
        }
        TxBody::Report(report) => apply_report(state, signer, report, events),
        TxBody::Swap { sell, min_out } => swap(state, ctx, signer, *sell, *min_out, events),
        TxBody::Deposit { to, amount } => {
            if me != state.gateway {
                return Err(TxError::NotGateway);
            }
            nonzero(amount.0)?;
            // Every sum of USD holdings, and the supply's own total
            // (genesis + deposited − withdrawn), must fit in a u128: the
            // supply check after every block adds them up.
            let s = &state.supply;
            s.genesis_usd.0.checked_add(s.deposited_usd.0).and_then(|t| t.checked_add(amount.0)).ok_or(TxError::Overflow)?;
            let to_idx = state.account_idx_or_create(*to);
            state.accounts[to_idx as usize].usd.0 += amount.0;
            state.supply.deposited_usd.0 += amount.0;
            events.push(Event::Deposited { to: *to, amount: *amount });
            Ok(())
        }
        TxBody::WithdrawUsd { amount, reference } => {
            nonzero(amount.0)?;
            let acct = &mut state.accounts[signer as usize];
            acct.usd = acct.usd.checked_sub(*amount).ok_or(TxError::InsufficientUsd { have: acct.usd, need: *amount })?;
            state.supply.withdrawn_usd.0 += amount.0;
            events.push(Event::UsdWithdrawn { account: me, amount: *amount, reference: reference.clone() });
            Ok(())
        }
        TxBody::ClaimVested => {
            let amount = claim_vested(&mut state.accounts[signer as usize], ctx, state.params.vesting_secs)?;
            events.push(Event::VestedClaimed { account: me, amount });
            Ok(())
        }
    }
}

/// `ClaimVested`'s rule: everything vested by now moves to the balance;
/// with nothing vested, refused (and `release` changed nothing).
pub(crate) fn claim_vested(acct: &mut Account, ctx: Ctx, vesting_secs: u64) -> Result<Token, TxError> {
    let amount = vesting::release(acct, ctx.time_secs, vesting_secs);
    if amount.is_zero() {
        return Err(TxError::NothingVested);
    }
    Ok(amount)
}

fn nonzero(x: u128) -> Result<(), TxError> {
    if x == 0 {
        Err(TxError::ZeroAmount)
    } else {
        Ok(())
    }
}

/// A transfer's or a swap's amount: not zero, and at most what the account
/// holds in that currency.
fn can_send(acct: &Account, amount: Amount) -> Result<(), TxError> {
    match amount {
        Amount::Token(a) => {
            nonzero(a.0)?;
            if acct.token < a {
                return Err(TxError::InsufficientToken { have: acct.token, need: a });
            }
        }
        Amount::Usd(a) => {
            nonzero(a.0)?;
            if acct.usd < a {
                return Err(TxError::InsufficientUsd { have: acct.usd, need: a });
            }
        }
    }
    Ok(())
}

fn transfer(state: &mut State, signer: AccountIdx, to: AccountId, amount: Amount, events: &mut Vec<Event>) -> Result<(), TxError> {
    let from = state.accounts[signer as usize].id;
    if to == from {
        return Err(TxError::SelfTransfer);
    }
    can_send(&state.accounts[signer as usize], amount)?;
    // An account is never removed (its nonce guards its old txs against
    // replay), and the chain encodes and hashes every one with every
    // block: one that a transfer creates must carry more than dust.
    if !state.account_index.contains_key(&to) {
        let p = &state.params;
        let below = match amount {
            Amount::Token(a) => (a < p.min_new_account_token).then_some(Amount::Token(p.min_new_account_token)),
            Amount::Usd(a) => (a < p.min_new_account_usd).then_some(Amount::Usd(p.min_new_account_usd)),
        };
        if let Some(minimum) = below {
            return Err(TxError::NewAccountTooSmall { amount, minimum });
        }
    }
    let to_idx = state.account_idx_or_create(to) as usize;
    let from_idx = signer as usize;
    match amount {
        Amount::Token(a) => {
            state.accounts[from_idx].token.0 -= a.0;
            state.accounts[to_idx].token.0 += a.0;
        }
        Amount::Usd(a) => {
            state.accounts[from_idx].usd.0 -= a.0;
            state.accounts[to_idx].usd.0 += a.0;
        }
    }
    events.push(Event::Transferred { from, to, amount });
    Ok(())
}

fn begin_unbond(state: &mut State, ctx: Ctx, signer: AccountIdx, amount: Token, events: &mut Vec<Event>) -> Result<(), TxError> {
    nonzero(amount.0)?;
    let acct = &state.accounts[signer as usize];
    let left = acct.staked.checked_sub(amount).ok_or(TxError::InsufficientStake { have: acct.staked, need: amount })?;
    let need = state.required_stake(acct);
    if left < need {
        return Err(TxError::StakeLocked { amount, left, need });
    }
    if acct.unbonding.len() >= MAX_UNBONDINGS {
        return Err(TxError::TooManyUnbondings { limit: MAX_UNBONDINGS });
    }
    let release_at_secs = ctx.time_secs.saturating_add(state.params.unbonding_secs);
    let acct = &mut state.accounts[signer as usize];
    acct.staked = left;
    acct.unbonding.push(Unbonding { amount, release_at_secs });
    events.push(Event::UnbondStarted { account: acct.id, amount, release_at_secs });
    Ok(())
}

/// Refuses while the account's node holds an over-claim strike: until a
/// measurement confirms or clears it, all of the account's bond is what
/// the slash may take (unbonding entries included, `slash::take_stake`).
fn no_strike_pending(state: &State, signer: AccountIdx) -> Result<(), TxError> {
    let strike = state.accounts[signer as usize].node.and_then(|n| state.nodes[n as usize].strike.as_ref());
    match strike {
        Some(s) => Err(TxError::StrikePending { epoch: s.epoch }),
        None => Ok(()),
    }
}

/// Refuses while a strike the account's oracle vouched for waits (ADR
/// 0011), for at most one unbonding period after the strike (ADR 0013):
/// its confirmation slashes the voucher too, so the stake that vouched
/// stays as long as stake that starts unbonding does. Not longer: a node
/// that frames an honest oracle and then stays dark would hold its stake
/// for ever. A scan of the nodes, for a tx that is rare.
fn no_vouch_pending(state: &State, signer: AccountIdx) -> Result<(), TxError> {
    let Some(o) = state.accounts[signer as usize].oracle else { return Ok(()) };
    let hold_epochs = state.params.unbonding_secs.div_ceil(state.params.epoch_secs.max(1));
    let pending = state.nodes.iter().find_map(|n| {
        let s = n.strike.as_ref()?;
        let until_epoch = s.epoch.saturating_add(hold_epochs);
        (state.epoch < until_epoch && s.vouching.contains(&o)).then_some((n.operator, s.epoch, until_epoch))
    });
    match pending {
        Some((node, epoch, until_epoch)) => Err(TxError::VouchPending { node, epoch, until_epoch }),
        None => Ok(()),
    }
}

fn withdraw_unbonded(state: &mut State, ctx: Ctx, signer: AccountIdx, events: &mut Vec<Event>) -> Result<(), TxError> {
    let now = ctx.time_secs;
    let acct = &state.accounts[signer as usize];
    let matured: Token = acct.unbonding.iter().filter(|u| u.release_at_secs <= now).map(|u| u.amount).sum();
    if matured.is_zero() {
        let why = match acct.unbonding.iter().map(|u| u.release_at_secs).min() {
            Some(t) => format!("the next unbonding releases at {t} (in {} s)", t - now),
            None => "no tokens are unbonding".to_string(),
        };
        return Err(TxError::NothingToWithdraw(why));
    }
    // Matured, it stays slashable while a strike waits. Checked after the
    // cheap refusal: a refused tx pays no fee, and the vouch check scans
    // the nodes.
    no_strike_pending(state, signer)?;
    no_vouch_pending(state, signer)?;
    let acct = &mut state.accounts[signer as usize];
    acct.unbonding.retain(|u| u.release_at_secs > now);
    acct.token.0 += matured.0;
    events.push(Event::UnbondedWithdrawn { account: acct.id, amount: matured });
    Ok(())
}

fn validate_spec(spec: &NodeSpec) -> Result<(), TxError> {
    let bad = |s: String| Err(TxError::InvalidNodeSpec(s));
    if spec.country.macro_region().is_none() {
        return bad(format!("{:?} is not an ISO 3166 country code", spec.country.as_str()));
    }
    if spec.addrs.is_empty() {
        return bad("at least one public address is needed".into());
    }
    if spec.addrs.len() > limits::MAX_NODE_ADDRS {
        return bad(format!("at most {} addresses", limits::MAX_NODE_ADDRS));
    }
    if let Some(a) = spec.addrs.iter().find(|a| a.is_unspecified() || a.is_multicast()) {
        return bad(format!("{a} is not a reachable unicast address"));
    }
    if spec.port_first == 0 || spec.port_first > spec.port_last {
        return bad(format!("port range {}-{} is empty or starts at 0", spec.port_first, spec.port_last));
    }
    if spec.claimed_capacity_bps == 0 || spec.claimed_capacity_bps > MAX_CLAIMED_CAPACITY_BPS {
        // In Gbit/s, the unit an operator thinks in (the limit is a whole number of them).
        let max_gbps = MAX_CLAIMED_CAPACITY_BPS / 1_000_000_000;
        return bad(format!("claimed capacity {} bit/s is outside 1 bit/s to {max_gbps} Gbit/s", spec.claimed_capacity_bps));
    }
    let too_dear = spec.price_usd_micro_per_gib > MAX_PRICE_USD_MICRO
        || spec.price_usd_micro_per_hour.is_some_and(|p| p > MAX_PRICE_USD_MICRO);
    if too_dear {
        return bad(format!("price above the limit of {} per GiB (and per hour)", Usd(MAX_PRICE_USD_MICRO as u128)));
    }
    Ok(())
}

fn active_node(state: &State, signer: AccountIdx) -> Result<u32, TxError> {
    let acct = &state.accounts[signer as usize];
    acct.node.filter(|&n| state.nodes[n as usize].active).ok_or(TxError::NotANode(acct.id))
}

fn register_node(state: &mut State, signer: AccountIdx, spec: &NodeSpec, events: &mut Vec<Event>) -> Result<(), TxError> {
    let acct = &state.accounts[signer as usize];
    let me = acct.id;
    if acct.node.is_some_and(|n| state.nodes[n as usize].active) {
        return Err(TxError::NodeAlreadyRegistered(me));
    }
    validate_spec(spec)?;
    let need = Token(state.required_stake(acct).0 + state.params.min_node_stake.0);
    if acct.staked < need {
        return Err(TxError::InsufficientStake { have: acct.staked, need });
    }
    if let Some(n) = state.accounts[signer as usize].node {
        // Re-registration keeps the node's history (reputation, slashes).
        // Back in the epoch it left, it is judged as an update is (ADR
        // 0014); after an epoch away it starts afresh.
        let left_this_epoch = state.node_epochs[n as usize].claim_held_bps > 0;
        respec_node(state, n, spec, left_this_epoch)?;
        state.nodes[n as usize].active = true;
        events.push(Event::NodeRegistered { node: me });
        return Ok(());
    }
    let region = spec.country.macro_region().ok_or_else(|| TxError::InvalidNodeSpec("unknown country".into()))?;
    let subnet_group = state.subnet_group_or_create(SubnetKey::of(&spec.addrs[0]));
    let node = Node {
        account: signer,
        operator: me,
        spec: spec.clone(),
        region,
        subnet_group,
        active: true,
        registered_epoch: state.epoch,
        verified_capacity_bps: 0,
        measured_epoch: None,
        latency_us: 0,
        uptime_ppm: 0,
        reputation_ppm: state.params.reputation_initial_ppm,
        strike: None,
        last_reward: Token::ZERO,
        total_rewards: Token::ZERO,
        total_slashed: Token::ZERO,
    };
    let n = state.nodes.len() as u32;
    state.nodes.push(node);
    state.node_epochs.push(NodeEpoch::default());
    state.node_index.insert(me, n);
    state.accounts[signer as usize].node = Some(n);
    events.push(Event::NodeRegistered { node: me });
    Ok(())
}

fn update_node(state: &mut State, signer: AccountIdx, spec: &NodeSpec, events: &mut Vec<Event>) -> Result<(), TxError> {
    let n = active_node(state, signer)?;
    validate_spec(spec)?;
    respec_node(state, n, spec, true)?;
    events.push(Event::NodeUpdated { node: state.nodes[n as usize].operator });
    Ok(())
}

/// A registered node's new spec (validated), in effect at once. With
/// `same_epoch` (an update, or a return in the epoch the node left), what
/// it held earlier in the epoch still counts (ADR 0014): the epoch is
/// judged against the highest claim it held, and a move to another region
/// or /24 (/48) forfeits the epoch's uptime reward, since the oracles may
/// have measured it where it was; the group it left still counts it for
/// the epoch (ADR 0010).
fn respec_node(state: &mut State, n: NodeIdx, spec: &NodeSpec, same_epoch: bool) -> Result<(), TxError> {
    let region = spec.country.macro_region().ok_or_else(|| TxError::InvalidNodeSpec("unknown country".into()))?;
    let subnet_group = state.subnet_group_or_create(SubnetKey::of(&spec.addrs[0]));
    let node = &mut state.nodes[n as usize];
    if same_epoch {
        let node_epoch = &mut state.node_epochs[n as usize];
        node_epoch.claim_held_bps = node_epoch.judged_claim_bps(node.spec.claimed_capacity_bps);
        node_epoch.moved |= node.region != region || node.subnet_group != subnet_group;
        if node.subnet_group != subnet_group {
            node_epoch.group_left.get_or_insert(node.subnet_group);
        }
    }
    node.spec = spec.clone();
    node.region = region;
    node.subnet_group = subnet_group;
    Ok(())
}

fn register_oracle(state: &mut State, signer: AccountIdx, addr: IpAddr, events: &mut Vec<Event>) -> Result<(), TxError> {
    let acct = &state.accounts[signer as usize];
    let me = acct.id;
    if acct.oracle.is_some_and(|o| state.oracles[o as usize].retired_from_epoch.is_none()) {
        return Err(TxError::OracleAlreadyRegistered(me));
    }
    if addr.is_unspecified() || addr.is_multicast() {
        return Err(TxError::InvalidNodeSpec(format!("oracle address {addr} is not a reachable unicast address")));
    }
    let need = Token(state.required_stake(acct).0 + state.params.min_oracle_stake.0);
    if acct.staked < need {
        return Err(TxError::InsufficientStake { have: acct.staked, need });
    }
    // Still serving (it deregistered in this epoch): the epoch's
    // assignment was drawn with it at its address (DESIGN §5), and made
    // eligible only from the next epoch it would hand its nodes to others
    // after measuring began. At the same address the retirement is
    // cancelled; a new one waits for the epoch it retires from.
    if let Some(o) = acct.oracle.filter(|&o| state.oracles[o as usize].eligible(state.epoch)) {
        let serving = &mut state.oracles[o as usize];
        if serving.addr != addr {
            let retired_from_epoch = serving.retired_from_epoch.unwrap_or(state.epoch + 1);
            return Err(TxError::OracleRetiring { retired_from_epoch, current: state.epoch });
        }
        serving.retired_from_epoch = None;
        events.push(Event::OracleRegistered { oracle: me, active_from_epoch: serving.active_from_epoch });
        return Ok(());
    }
    let active_from_epoch = state.epoch + 1;
    let oracle = Oracle {
        account: signer,
        operator: me,
        addr,
        subnet: SubnetKey::of(&addr),
        active_from_epoch,
        retired_from_epoch: None,
        deviation_strikes: 0,
        good_reports_epoch: 0,
        total_rewards: Token::ZERO,
        total_slashed: Token::ZERO,
    };
    match state.accounts[signer as usize].oracle {
        Some(o) => {
            let old = &mut state.oracles[o as usize];
            old.addr = addr;
            old.subnet = oracle.subnet;
            old.active_from_epoch = active_from_epoch;
            old.retired_from_epoch = None;
        }
        None => {
            let o = state.oracles.len() as u32;
            state.oracles.push(oracle);
            state.oracle_index.insert(me, o);
            state.accounts[signer as usize].oracle = Some(o);
        }
    }
    events.push(Event::OracleRegistered { oracle: me, active_from_epoch });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn open_channel(
    state: &mut State,
    ctx: Ctx,
    signer: AccountIdx,
    nonce: u64,
    node: AccountId,
    escrow: Usd,
    expires_at_secs: u64,
    events: &mut Vec<Event>,
) -> Result<(), TxError> {
    nonzero(escrow.0)?;
    // A channel stays in the state until its client closes it, or the
    // first epoch end past its expiry and grace does (ADR 0021): its
    // escrow is what keeping it there costs, and its lifetime bounds how
    // long the escrow may be locked away (DESIGN §2; params/default.toml
    // [dust]).
    let p = &state.params;
    if escrow < p.min_channel_escrow {
        return Err(TxError::EscrowTooSmall { escrow, minimum: p.min_channel_escrow });
    }
    if !state.node(&node).is_some_and(|n| n.active) {
        return Err(TxError::NotANode(node));
    }
    if expires_at_secs <= ctx.time_secs {
        return Err(TxError::ExpiryInPast { expires_at_secs, now_secs: ctx.time_secs });
    }
    let max_lifetime_secs = p.channel_max_lifetime_secs;
    if expires_at_secs > ctx.time_secs.saturating_add(max_lifetime_secs) {
        return Err(TxError::ExpiryTooFar { expires_at_secs, now_secs: ctx.time_secs, max_lifetime_secs });
    }
    let acct = &mut state.accounts[signer as usize];
    if acct.open_channels >= MAX_OPEN_CHANNELS {
        return Err(TxError::TooManyChannels { limit: MAX_OPEN_CHANNELS });
    }
    acct.usd = acct.usd.checked_sub(escrow).ok_or(TxError::InsufficientUsd { have: acct.usd, need: escrow })?;
    acct.open_channels += 1;
    let client = acct.id;
    let channel = channel_id(&client, nonce);
    state.channels.insert(channel, Channel::opened(client, node, escrow, expires_at_secs));
    state.channels_by_account.insert((client, channel));
    state.channels_by_account.insert((node, channel));
    state.channels_by_expiry.insert((expires_at_secs, channel));
    events.push(Event::ChannelOpened { channel, client, node, escrow });
    Ok(())
}

fn settle_channel(state: &mut State, signer: AccountIdx, receipt: &SignedReceipt, events: &mut Vec<Event>) -> Result<(), TxError> {
    let r = &receipt.receipt;
    let ch = state.channels.get(&r.channel).ok_or(TxError::UnknownChannel(r.channel))?;
    if state.accounts[signer as usize].id != ch.node {
        return Err(TxError::NotChannelParty { role: "node", expected: ch.node });
    }
    check_receipt(&state.chain_id, ch, receipt)?;
    let amount = Usd(r.cumulative_usd.0 - ch.paid.0);
    let bytes = r.cumulative_bytes - ch.paid_bytes;
    let node = state.node_index.get(&ch.node).copied();
    if let Some(ch) = state.channels.get_mut(&r.channel) {
        ch.paid = r.cumulative_usd;
        ch.paid_bytes = r.cumulative_bytes;
    }
    let (to_node, to_burn) = credit_settlement(state, signer, node, amount, bytes);
    events.push(Event::ChannelSettled { channel: r.channel, amount, to_node, to_burn, cumulative: r.cumulative_usd });
    Ok(())
}

/// Whether `receipt` would settle on `ch` now: the right chain, more than
/// what is settled, within the escrow, bytes not going backwards, signed by
/// the channel's client. The one check for the ledger's settlement and for
/// a node's tunnel, which passes a copy of the channel whose `paid` is the
/// newest receipt it accepted, so a replayed receipt is "stale" there too.
pub fn check_receipt(chain_id: &str, ch: &Channel, receipt: &SignedReceipt) -> Result<(), TxError> {
    let r = &receipt.receipt;
    if r.chain_id != chain_id {
        return Err(TxError::ReceiptWrongChain(r.chain_id.clone()));
    }
    if r.cumulative_usd <= ch.paid {
        return Err(TxError::StaleReceipt { cumulative: r.cumulative_usd, settled: ch.paid });
    }
    if r.cumulative_usd > ch.escrow {
        return Err(TxError::OverEscrow { cumulative: r.cumulative_usd, escrow: ch.escrow });
    }
    if r.cumulative_bytes < ch.paid_bytes {
        return Err(TxError::ReceiptBytesBackwards { bytes: r.cumulative_bytes, settled_bytes: ch.paid_bytes });
    }
    receipt.verify(&ch.client).map_err(|_| TxError::BadReceiptSignature)
}

/// What `bytes` cost at `price_usd_micro_per_gib`, rounded up to the base
/// unit so a receipt never pays a node less than the bytes it carried
/// (a client overpays by under one micro-dollar in total: receipts are
/// cumulative).
pub fn cost_of_bytes(price_usd_micro_per_gib: u64, bytes: u64) -> Usd {
    const GIB: u128 = 1 << 30;
    Usd((u128::from(bytes) * u128::from(price_usd_micro_per_gib)).div_ceil(GIB))
}

/// How many bytes `usd` buys at `price_usd_micro_per_gib`, rounded down:
/// the inverse of [`cost_of_bytes`], so `bytes_bought(p, cost_of_bytes(p,
/// b)) >= b`. Unbounded (`u64::MAX`) at a price of 0.
pub fn bytes_bought(price_usd_micro_per_gib: u64, usd: Usd) -> u64 {
    const GIB: u128 = 1 << 30;
    if price_usd_micro_per_gib == 0 {
        return u64::MAX;
    }
    let bytes = tollway_types::math::mul_div_floor(usd.0, GIB, u128::from(price_usd_micro_per_gib));
    bytes.min(u128::from(u64::MAX)) as u64
}

/// The bytes a settlement of `amount` for `bytes` counts toward its
/// region's demand: at most what `amount` buys at the node's price per
/// GiB, and at no less than the floor price
/// (`regions.demand_price_floor_usd_per_gib`). A receipt's bytes are the
/// client's word and nobody prices them: counted as given, one
/// micro-dollar "for" `u64::MAX` bytes to one's own node pinned the
/// region's scarcity multiplier at its maximum for days. A payment at the
/// node's price (the simulator's, a client's receipts) counts all its
/// bytes. A node priced by the hour is counted at its price per GiB too
/// (the floor if it has none): its demand is its USD, not its bytes.
#[inline]
pub fn demand_bytes(price_usd_micro_per_gib: u64, params: &Params, amount: Usd, bytes: u64) -> u64 {
    let price = price_usd_micro_per_gib.max(params.region_demand_price_floor_usd_micro_per_gib);
    bytes.min(bytes_bought(price, amount))
}

/// Where a payment for bandwidth goes (DESIGN §2 step 3): the hybrid share
/// to the node's account in USD at once, the rest to the epoch's
/// buy-and-burn; the node's and its region's usage counters record it
/// (the region's, only the bytes the USD pays for: `demand_bytes`).
/// The one implementation of the split, for channels and the simulator.
#[inline]
pub(crate) fn credit_settlement(
    state: &mut State,
    node_account: AccountIdx,
    node: Option<u32>,
    amount: Usd,
    bytes: u64,
) -> (Usd, Usd) {
    state.payment_parts().1.credit_settlement(node_account, node, amount, bytes)
}

/// The parts of the state a payment changes, borrowed apart from the node
/// records, which it only reads (`State::payment_parts`): while payments
/// run, other threads may read the nodes (the simulator assigns the day's
/// oracles meanwhile).
pub struct PaymentParts<'a> {
    pub(crate) params: &'a Params,
    pub(crate) nodes: &'a [Node],
    pub(crate) accounts: &'a mut [Account],
    pub(crate) node_epochs: &'a mut [NodeEpoch],
    pub(crate) regions: &'a mut [RegionState],
    pub(crate) burn_queue_usd: &'a mut Usd,
}

impl State {
    /// The node records, and the parts of the state a payment changes.
    pub fn payment_parts(&mut self) -> (&[Node], PaymentParts<'_>) {
        let parts = PaymentParts {
            params: &self.params,
            nodes: &self.nodes,
            accounts: &mut self.accounts,
            node_epochs: &mut self.node_epochs,
            regions: &mut self.regions,
            burn_queue_usd: &mut self.burn_queue_usd,
        };
        (parts.nodes, parts)
    }
}

impl PaymentParts<'_> {
    /// A settlement of `amount` for `bytes`: the node's share to its
    /// account, the rest queued for the burn, and the node's epoch and
    /// region accumulators. Returns (to the node, to the burn).
    pub(crate) fn credit_settlement(
        &mut self,
        node_account: AccountIdx,
        node: Option<u32>,
        amount: Usd,
        bytes: u64,
    ) -> (Usd, Usd) {
        let to_node = amount.mul_ppm_floor(self.params.node_usd_share_ppm);
        let to_burn = Usd(amount.0 - to_node.0);
        self.accounts[node_account as usize].usd.0 += to_node.0;
        self.burn_queue_usd.0 += to_burn.0;
        if let Some(n) = node {
            let node_epoch = &mut self.node_epochs[n as usize];
            node_epoch.settled_usd.0 += amount.0;
            node_epoch.burn_usd.0 += to_burn.0;
            let node = &self.nodes[n as usize];
            let counted = demand_bytes(node.spec.price_usd_micro_per_gib, self.params, amount, bytes);
            let region = &mut self.regions[node.region.index()];
            region.settled_bytes_epoch = region.settled_bytes_epoch.saturating_add(counted);
        }
        (to_node, to_burn)
    }
}

fn close_channel(state: &mut State, ctx: Ctx, signer: AccountIdx, channel: &ChannelId, events: &mut Vec<Event>) -> Result<(), TxError> {
    let ch = state.channels.get(channel).ok_or(TxError::UnknownChannel(*channel))?;
    if state.accounts[signer as usize].id != ch.client {
        return Err(TxError::NotChannelParty { role: "client", expected: ch.client });
    }
    let closable_at_secs = ch.expires_at_secs.saturating_add(state.params.channel_close_grace_secs);
    if ctx.time_secs < closable_at_secs {
        return Err(TxError::ChannelNotExpired { closable_at_secs, now_secs: ctx.time_secs });
    }
    if let Some(closed) = remove_channel(state, channel) {
        events.push(Event::ChannelClosed { channel: *channel, refund: closed.refund });
    }
    Ok(())
}

/// The epoch's end at `now_secs` closes every channel past its expiry and
/// the grace (`channel_close_grace_secs`, read now: params may have
/// changed it since the channel opened), soonest expiry first, exactly as
/// its client's `CloseChannel` would have (ADR 0021): a client that is
/// gone never closes, and its channel stayed in the state, its escrow
/// locked, for ever.
pub(crate) fn close_expired_channels(state: &mut State, now_secs: u64) -> Vec<ClosedChannel> {
    let grace_secs = state.params.channel_close_grace_secs;
    let mut closed = Vec::new();
    while let Some(&(expires_at_secs, channel)) = state.channels_by_expiry.first() {
        if expires_at_secs.saturating_add(grace_secs) > now_secs {
            break;
        }
        // `remove_channel` takes the entry out of the index. One it cannot
        // close (a broken state) is taken out here, so the loop goes on
        // rather than spinning on it.
        match remove_channel(state, &channel) {
            Some(c) => closed.push(c),
            None => {
                state.channels_by_expiry.pop_first();
            }
        }
    }
    closed
}

/// A channel closed at its expiry plus the grace: by its client's
/// `CloseChannel`, or by the epoch's end (ADR 0021).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedChannel {
    pub channel: ChannelId,
    pub client: AccountId,
    pub node: AccountId,
    /// What its client got back: the escrow less what was settled.
    pub refund: Usd,
}

/// Takes the channel out of the state and its indexes and gives its
/// client back what was not settled: the one close, for the client's
/// `CloseChannel` and the epoch's sweep. `None` if there is no such
/// channel. The caller has checked that it may close.
fn remove_channel(state: &mut State, channel: &ChannelId) -> Option<ClosedChannel> {
    // The client opened it, so its account exists; on a broken state
    // where it does not, the channel stays, its escrow still counted,
    // rather than be refunded to nobody.
    let client = *state.account_index.get(&state.channels.get(channel)?.client)?;
    let ch = state.channels.remove(channel)?;
    state.channels_by_account.remove(&(ch.client, *channel));
    state.channels_by_account.remove(&(ch.node, *channel));
    state.channels_by_expiry.remove(&(ch.expires_at_secs, *channel));
    let refund = Usd(ch.escrow.0 - ch.paid.0);
    let acct = &mut state.accounts[client as usize];
    acct.usd.0 += refund.0;
    acct.open_channels -= 1;
    Some(ClosedChannel { channel: *channel, client: ch.client, node: ch.node, refund })
}

fn apply_report(state: &mut State, signer: AccountIdx, report: &MeasurementReport, events: &mut Vec<Event>) -> Result<(), TxError> {
    let me = state.accounts[signer as usize].id;
    let o = state.accounts[signer as usize].oracle.ok_or(TxError::NotAnOracle(me))?;
    let oracle = &state.oracles[o as usize];
    if !oracle.eligible(state.epoch) {
        if oracle.retired_from_epoch.is_none() && oracle.active_from_epoch > state.epoch {
            return Err(TxError::OracleNotYetActive { active_from_epoch: oracle.active_from_epoch, current: state.epoch });
        }
        return Err(TxError::NotAnOracle(me));
    }
    if report.epoch != state.epoch {
        return Err(TxError::WrongEpoch { what: "report", found: report.epoch, current: state.epoch });
    }
    // Check every entry before storing any.
    let assigner = Assigner::new(state);
    let mut targets = Vec::with_capacity(report.measurements.len());
    for (index, m) in report.measurements.iter().enumerate() {
        let bad = |why: String| TxError::BadReport { index, why };
        let n = *state.node_index.get(&m.node).ok_or_else(|| bad(format!("{} runs no node", m.node)))?;
        let node = &state.nodes[n as usize];
        if !node.active {
            return Err(bad(format!("node {} is deregistered", m.node)));
        }
        if m.uptime_ppm as u128 > PPM {
            return Err(bad(format!("uptime {} ppm is above 1,000,000", m.uptime_ppm)));
        }
        if !assigner.assign(state, n).contains(o) {
            return Err(bad(format!("this oracle is not assigned to node {} in epoch {}", m.node, state.epoch)));
        }
        let reports = &state.node_epochs[n as usize].reports;
        if reports.iter().any(|s| s.oracle == o) || targets.contains(&n) {
            return Err(bad(format!("node {} already has this oracle's report for this epoch", m.node)));
        }
        if reports.is_full() {
            return Err(bad(format!("node {} has all the reports it can hold this epoch", m.node)));
        }
        targets.push(n);
    }
    for (m, &n) in report.measurements.iter().zip(&targets) {
        state.node_epochs[n as usize].reports.push(ReportSlot { oracle: o, outcome: m.outcome, uptime_ppm: m.uptime_ppm });
    }
    events.push(Event::Reported { oracle: me, epoch: report.epoch, measurements: targets.len() as u32 });
    Ok(())
}

fn swap(state: &mut State, ctx: Ctx, signer: AccountIdx, sell: Amount, min_out: u128, events: &mut Vec<Event>) -> Result<(), TxError> {
    let pool = &state.pool;
    if pool.token.is_zero() || pool.usd.is_zero() {
        return Err(TxError::EmptyPool);
    }
    let acct = &state.accounts[signer as usize];
    let me = acct.id;
    can_send(acct, sell)?;
    let out = crate::economics::trade(state, ctx.time_secs, sell, min_out)
        .map_err(|out| TxError::Slippage { out, min_out: min_out.max(1) })?;
    let acct = &mut state.accounts[signer as usize];
    let bought = match sell {
        Amount::Token(a) => {
            acct.token.0 -= a.0;
            acct.usd.0 += out;
            Amount::Usd(Usd(out))
        }
        Amount::Usd(a) => {
            acct.usd.0 -= a.0;
            acct.token.0 += out;
            Amount::Token(Token(out))
        }
    };
    events.push(Event::Swapped { account: me, sold: sell, bought });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the simulator and a client's receipts pay for bytes,
    /// `cost_of_bytes` at the node's price, counts every byte toward
    /// demand; a receipt's bytes beyond what its USD buys do not count,
    /// and a node priced at 0 counts at the floor.
    #[test]
    fn a_payment_at_the_nodes_price_counts_all_its_bytes_and_no_more() {
        let p = Params::default_params();
        let floor = p.region_demand_price_floor_usd_micro_per_gib;
        let mut z = 3u64;
        let mut next = |m: u64| {
            z = z.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (z >> 11) % m
        };
        for _ in 0..20_000 {
            let price = floor + next(MAX_PRICE_USD_MICRO);
            let bytes = next(1 << 52) >> next(52);
            let paid = cost_of_bytes(price, bytes);
            assert_eq!(demand_bytes(price, &p, paid, bytes), bytes, "{bytes} bytes at {price}");
            // Beyond them, at most what the round-up's micro-dollar buys.
            let most = bytes + (1 << 30) / price + 1;
            assert!(demand_bytes(price, &p, paid, u64::MAX) <= most, "{bytes} bytes at {price}");
        }
        // $0.01 buys 1 GiB at the $0.01 floor, and 2 MiB at $5/GiB.
        assert_eq!(floor, 10_000);
        assert_eq!(demand_bytes(0, &p, Usd(10_000), u64::MAX), 1 << 30);
        assert_eq!(demand_bytes(5_000_000, &p, Usd(10_000), u64::MAX), 2_147_483);
        assert_eq!(bytes_bought(0, Usd(1)), u64::MAX);
    }

    /// A client with $100 and an active node, a channel from one to the
    /// other each way the test needs.
    fn a_client_and_a_node() -> crate::testkit::World {
        use crate::testkit::{fund, World};
        let accounts = vec![fund("client", 0, 100, 0), fund("node", 10, 0, 2_000)];
        let mut w = World::new(Params::default_params(), 1_000_000, 1_000_000, accounts);
        w.register_node("node", "DE", "203.0.113.10", 100_000_000);
        w
    }

    fn is_indexed(state: &State, channel: &ChannelId) -> bool {
        state.channels.contains_key(channel)
            || state.channels_by_account.iter().any(|(_, c)| c == channel)
            || state.channels_by_expiry.iter().any(|(_, c)| c == channel)
    }

    /// No tool sends `CloseChannel`, so every channel ever opened stayed
    /// in the state with its unsettled escrow, and a client reached
    /// `MAX_OPEN_CHANNELS` for good. The epoch's end closes a channel from
    /// the moment its client could (expiry plus grace), refunding what
    /// was not settled as the client's close would; one second earlier it
    /// stays, and the client's close is refused too (ADR 0021).
    #[test]
    fn an_expired_channel_closes_itself_at_the_first_epoch_end_past_its_grace() {
        use crate::testkit::id;
        let mut w = a_client_and_a_node();
        let p = w.state.params.clone();
        assert_eq!((p.epoch_secs, p.channel_close_grace_secs), (3_600, 3_600), "the times below count on these");
        let due = w.open_channel("client", "node", Usd::units(10), 10);
        let one_second_early = w.open_channel("client", "node", Usd::units(5), 11);
        let receipt = w.receipt("client", due, Usd::units(3), 1 << 30);
        w.must("node", TxBody::SettleChannel { receipt });
        let usd_before = w.account("client").usd;
        assert_eq!(w.account("client").open_channels, 2);

        // The epoch ends at open + 10 s + 3,600 s: `due`'s expiry plus the
        // grace, to the second; `one_second_early`'s is a second later.
        w.now_secs += 10;
        let report = w.end_epoch(); // checks the supply invariant
        let closed = ClosedChannel { channel: due, client: id("client"), node: id("node"), refund: Usd::units(7) };
        assert_eq!(report.channels_closed, vec![closed]);
        assert_eq!(report.channels_closed_refund(), Usd::units(7));
        assert!(!is_indexed(&w.state, &due), "a closed channel is still in the state");
        assert_eq!(w.account("client").usd, Usd(usd_before.0 + Usd::units(7).0), "escrow less paid came back");
        assert_eq!(w.account("client").open_channels, 1);
        let receipt = w.receipt("client", due, Usd::units(4), 2 << 30);
        let late = w.submit("node", TxBody::SettleChannel { receipt });
        assert_eq!(late, Err(TxError::UnknownChannel(due)), "closed by the chain as by its client");

        // A second early: it stays, and its client may not close it yet.
        assert!(w.state.channels.contains_key(&one_second_early));
        let early = w.submit_usd_fee("client", TxBody::CloseChannel { channel: one_second_early });
        assert!(matches!(early, Err(TxError::ChannelNotExpired { .. })), "{early:?}");
        let report = w.end_epoch();
        assert_eq!(report.channels_closed.len(), 1);
        assert_eq!((report.channels_closed[0].channel, report.channels_closed[0].refund), (one_second_early, Usd::units(5)));
        assert_eq!(w.account("client").open_channels, 0);
        assert!(!is_indexed(&w.state, &one_second_early));
        assert!(w.end_epoch().channels_closed.is_empty(), "closed once");
    }

    /// The grace is the one in force at the epoch's end, not the one the
    /// channel opened under: params may change it, and the index is
    /// keyed by expiry alone.
    #[test]
    fn the_epoch_closes_channels_by_the_grace_in_force_at_its_end() {
        let mut w = a_client_and_a_node();
        let channel = w.open_channel("client", "node", Usd::units(10), 10);
        w.now_secs += 10;
        w.state.params.channel_close_grace_secs = 3_601;
        assert!(w.end_epoch().channels_closed.is_empty(), "a longer grace keeps it");
        w.state.params.channel_close_grace_secs = 0;
        let closed = w.end_epoch().channels_closed;
        assert_eq!(closed.iter().map(|c| c.channel).collect::<Vec<_>>(), vec![channel]);
    }
}
