//! Inputs the simulator builds directly, without signed transactions
//! (issue 3: "where the full transaction path would be too slow, build the
//! epoch inputs directly"). Each function calls the same internal code the
//! transaction handlers call, so every reward, burn and slash rule is still
//! the ledger's alone; what is skipped is only the envelope (signatures,
//! nonces, fees) and, for payments, the channel's receipt bookkeeping.

use crate::apply::{apply_body, claim_vested};
pub use crate::apply::PaymentParts;
use crate::error::TxError;
use crate::event::Event;
use crate::state::{Account, AccountIdx, Ctx, NodeEpoch, NodeIdx, OracleIdx, ReportSlot, State};
use crate::workers::{self, Workers};
use tollway_types::{MeasurementOutcome, Token, TxBody, Usd, PPM};

/// Applies a transaction body as `signer` with no signature, nonce or fee.
pub fn apply_unsigned(state: &mut State, ctx: Ctx, signer: AccountIdx, body: &TxBody) -> Result<Vec<Event>, TxError> {
    let mut events = Vec::new();
    let nonce = state.accounts[signer as usize].nonce;
    apply_body(state, ctx, signer, nonce, body, &mut events)?;
    // Keep channel ids unique for bodies that derive them from the nonce.
    state.accounts[signer as usize].nonce += 1;
    Ok(events)
}

/// `ClaimVested` from each of `accounts`, as [`apply_unsigned`] applies it
/// account by account: returns what each claimed, zero where nothing had
/// vested (which leaves that account as it was). With `accounts` strictly
/// ascending, it runs in parts of consecutive accounts on `workers`: a
/// claim touches its own account alone, so the parts cannot meet and the
/// state is the same bytes on any count.
pub fn claim_vested_each(state: &mut State, ctx: Ctx, accounts: &[AccountIdx], workers: &impl Workers) -> Vec<Token> {
    let vesting_secs = state.params.vesting_secs;
    let claim = |acct: &mut Account| match claim_vested(acct, ctx, vesting_secs) {
        Ok(amount) => {
            acct.nonce += 1;
            amount
        }
        Err(_) => Token::ZERO,
    };
    let mut claimed = vec![Token::ZERO; accounts.len()];
    let ascending = accounts.windows(2).all(|w| w[0] < w[1]);
    let parts = if ascending && !accounts.is_empty() { workers.parts(accounts.len()) } else { 1 };
    if parts < 2 {
        for (out, &a) in claimed.iter_mut().zip(accounts) {
            *out = claim(&mut state.accounts[a as usize]);
        }
        return claimed;
    }
    // Part k owns the accounts from its first claimant's to its last's.
    let ranges = workers::ranges(accounts.len(), parts);
    let bounds: Vec<_> = ranges.iter().map(|&(s, e)| Some((accounts[s] as usize, accounts[e - 1] as usize))).collect();
    let slices = workers::split_at_bounds(&mut state.accounts, &bounds);
    let outs = workers::split_lengths(&mut claimed, ranges.iter().map(|&(s, e)| e - s));
    let work: Vec<_> = slices.into_iter().zip(outs).zip(&ranges).map(|(((slice, base), out), &(s, e))| (slice, base, &accounts[s..e], out)).collect();
    workers.run(work, &|(slice, base, mine, out): (&mut [Account], usize, &[AccountIdx], &mut [Token])| {
        for (o, &a) in out.iter_mut().zip(mine) {
            *o = claim(&mut slice[a as usize - base]);
        }
    });
    claimed
}

/// A consumer pays `amount` for `bytes` served by node `node`: the money
/// leaves the payer's USD balance and is split exactly as a channel
/// settlement splits it.
// `#[inline]` on these two: the simulator calls them per node per day from
// another crate, where a call each was a measurable share of its loops.
#[inline]
pub fn pay_node(state: &mut State, payer: AccountIdx, node: NodeIdx, amount: Usd, bytes: u64) -> Result<(Usd, Usd), TxError> {
    pay_node_in(&mut state.payment_parts().1, payer, node, amount, bytes)
}

/// [`pay_node`] on the parts of the state a payment changes
/// (`State::payment_parts`), so that other threads may read the nodes
/// meanwhile.
#[inline]
pub fn pay_node_in(
    parts: &mut PaymentParts<'_>,
    payer: AccountIdx,
    node: NodeIdx,
    amount: Usd,
    bytes: u64,
) -> Result<(Usd, Usd), TxError> {
    let acct = &mut parts.accounts[payer as usize];
    acct.usd = acct.usd.checked_sub(amount).ok_or(TxError::InsufficientUsd { have: acct.usd, need: amount })?;
    let node_account = parts.nodes[node as usize].account;
    Ok(parts.credit_settlement(node_account, Some(node), amount, bytes))
}

/// Records one oracle's measurement of one node for the current epoch. The
/// caller chooses oracles from `assignment::assigned_oracles`; this checks
/// only what keeps the state sound.
#[inline]
pub fn record_report(
    state: &mut State,
    node: NodeIdx,
    oracle: OracleIdx,
    outcome: MeasurementOutcome,
    uptime_ppm: u32,
) -> Result<(), TxError> {
    record_report_in(&mut state.node_epochs[node as usize], oracle, outcome, uptime_ppm)
}

/// [`record_report`] into the node's own epoch record
/// (`State::node_epochs[node]`): the simulator records the reports of
/// separate ranges of nodes on separate threads.
#[inline]
pub fn record_report_in(
    epoch: &mut NodeEpoch,
    oracle: OracleIdx,
    outcome: MeasurementOutcome,
    uptime_ppm: u32,
) -> Result<(), TxError> {
    let bad = |why: &str| TxError::BadReport { index: 0, why: why.to_string() };
    let slots = &mut epoch.reports;
    if uptime_ppm as u128 > PPM {
        return Err(bad("uptime above 1,000,000 ppm"));
    }
    if slots.iter().any(|s| s.oracle == oracle) || !slots.push(ReportSlot { oracle, outcome, uptime_ppm }) {
        return Err(bad("duplicate or too many reports for this node"));
    }
    Ok(())
}
