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
use tollway_types::{Amount, MeasurementOutcome, Token, TxBody, Usd, PPM};

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
/// vested (which leaves that account as it was), and its liquid tokens
/// after. With `accounts` strictly ascending, it runs in parts of
/// consecutive accounts on `workers`: a claim touches its own account
/// alone, so the parts cannot meet and the state is the same bytes on any
/// count.
pub fn claim_vested_each(state: &mut State, ctx: Ctx, accounts: &[AccountIdx], workers: &impl Workers) -> Vec<Claimed> {
    let vesting_secs = state.params.vesting_secs;
    each_account(state, accounts, workers, &|_, acct: &mut Account| {
        let amount = match claim_vested(acct, ctx, vesting_secs) {
            Ok(amount) => {
                acct.nonce += 1;
                amount
            }
            Err(_) => Token::ZERO,
        };
        Claimed { amount, balance: acct.token }
    })
}

/// What [`claim_vested_each`] did to one account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Claimed {
    /// Moved from vesting to the balance (zero: nothing had vested).
    pub amount: Token,
    /// The account's liquid tokens after the claim.
    pub balance: Token,
}

/// `Swap { sell: Amount::Token(amount), min_out: 0 }` by each of `sales`
/// (account, amount), in order, as [`apply_unsigned`] applies them one
/// after another: returns the USD each got, `None` where the swap was
/// refused (which leaves the account and the pool as they were). The pool
/// goes through the sales in order on this thread, and with the accounts
/// strictly ascending they are checked and paid in parts of consecutive
/// accounts on `workers` (a sale checks and changes its own account alone,
/// and the pool reads no account): the simulator's weekly sales read 256
/// bytes of account each on its main thread.
pub fn sell_tokens_each(state: &mut State, ctx: Ctx, sales: &[(AccountIdx, Token)], workers: &impl Workers) -> Vec<Option<Usd>> {
    let accounts: Vec<AccountIdx> = sales.iter().map(|&(a, _)| a).collect();
    if !strictly_ascending(&accounts) {
        return sales.iter().map(|&(a, amount)| sell_one(state, ctx, a, amount)).collect();
    }
    let covered = each_account(state, &accounts, workers, &|k, acct: &mut Account| {
        let amount = sales[k].1;
        !amount.is_zero() && acct.token >= amount
    });
    let bought: Vec<Option<Usd>> = sales
        .iter()
        .zip(&covered)
        .map(|(&(_, amount), &covered)| {
            if !covered || state.pool.token.is_zero() || state.pool.usd.is_zero() {
                return None;
            }
            // Refused below the least output, 1 (`Slippage`).
            crate::economics::trade(state, ctx.time_secs, Amount::Token(amount), 0).ok().map(Usd)
        })
        .collect();
    each_account(state, &accounts, workers, &|k, acct: &mut Account| {
        if let Some(out) = bought[k] {
            acct.token.0 -= sales[k].1 .0;
            acct.usd.0 += out.0;
            acct.nonce += 1;
        }
    });
    bought
}

/// One sale of [`sell_tokens_each`] through [`apply_unsigned`].
fn sell_one(state: &mut State, ctx: Ctx, account: AccountIdx, amount: Token) -> Option<Usd> {
    let body = TxBody::Swap { sell: Amount::Token(amount), min_out: 0 };
    match apply_unsigned(state, ctx, account, &body).ok()?.as_slice() {
        [Event::Swapped { bought: Amount::Usd(out), .. }] => Some(*out),
        _ => None,
    }
}

fn strictly_ascending(accounts: &[AccountIdx]) -> bool {
    accounts.windows(2).all(|w| w[0] < w[1])
}

/// `f(k, account)` for each `accounts[k]`, in order, with the results in
/// that order. With `accounts` strictly ascending, in parts of
/// consecutive accounts on `workers`: part k owns the accounts from its
/// first one's to its last's, so the parts cannot meet and the state is
/// the same bytes on any count (as long as `f` changes its account alone).
fn each_account<T: Send + Default + Clone>(
    state: &mut State,
    accounts: &[AccountIdx],
    workers: &impl Workers,
    f: &(dyn Fn(usize, &mut Account) -> T + Sync),
) -> Vec<T> {
    let mut out = vec![T::default(); accounts.len()];
    let parts = if strictly_ascending(accounts) && !accounts.is_empty() { workers.parts(accounts.len()) } else { 1 };
    if parts < 2 {
        for (k, (o, &a)) in out.iter_mut().zip(accounts).enumerate() {
            *o = f(k, &mut state.accounts[a as usize]);
        }
        return out;
    }
    let ranges = workers::ranges(accounts.len(), parts);
    let bounds: Vec<_> = ranges.iter().map(|&(s, e)| Some((accounts[s] as usize, accounts[e - 1] as usize))).collect();
    let slices = workers::split_at_bounds(&mut state.accounts, &bounds);
    let outs = workers::split_lengths(&mut out, ranges.iter().map(|&(s, e)| e - s));
    let work: Vec<_> = slices.into_iter().zip(outs).zip(&ranges).map(|(((slice, base), out), &(s, e))| (slice, base, s, &accounts[s..e], out)).collect();
    workers.run(work, &|(slice, base, first, mine, out): (&mut [Account], usize, usize, &[AccountIdx], &mut [T])| {
        for (k, (o, &a)) in out.iter_mut().zip(mine).enumerate() {
            *o = f(first + k, &mut slice[a as usize - base]);
        }
    });
    out
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
