//! `end_epoch_with`: which passes split into parts, and when they do not.
//! (That a split epoch equals the epoch in one piece is checked after every
//! epoch of every test world: `testkit::World::end_epoch` in debug builds,
//! and the property tests.)

use std::sync::Mutex;
use tollway_ledger::testkit::{fund, Funding, World};
use tollway_ledger::workers::Workers;
use tollway_ledger::{end_epoch, end_epoch_with, state_root, Params};
use tollway_types::Hash32;

const MBPS: u64 = 1_000_000;

/// Runs every pass in four parts on this thread, and notes how many parts
/// each pass it was given had.
#[derive(Default)]
struct Recorder(Mutex<Vec<usize>>);

impl Workers for Recorder {
    fn parts(&self, _items: usize) -> usize {
        4
    }
    fn run<T: Send>(&self, parts: Vec<T>, work: &(dyn Fn(T) + Sync)) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(parts.len());
        parts.into_iter().for_each(work);
    }
}

/// Three oracles and eight honest nodes in four /24s, each with an account
/// of its own, opened in node order (and an account for a liar).
fn world() -> World {
    let mut accounts: Vec<Funding> = (0..3).map(|i| fund(&format!("oracle{i}"), 10, 0, 5_000)).collect();
    accounts.extend((0..8).map(|i| fund(&format!("n{i}"), 10, 0, 2_000)));
    accounts.push(fund("liar", 10, 0, 2_000));
    let mut w = World::new(Params::default_params(), 1_000_000, 1_000_000, accounts);
    for i in 0..3 {
        w.register_oracle(&format!("oracle{i}"), &format!("198.51.{i}.1"));
    }
    w.end_epoch();
    for i in 0..8 {
        w.register_node(&format!("n{i}"), "DE", &format!("203.0.{}.{}", 113 + i / 2, 10 + i), 100 * MBPS);
    }
    w
}

/// Ends the world's epoch both ways; returns the recorder's passes.
fn end_both_ways(w: &mut World) -> Vec<usize> {
    w.now_secs += w.state.params.epoch_secs;
    w.height += 1;
    let (ctx, seed) = (w.ctx(), Hash32::of(&w.height.to_le_bytes()));
    let recorder = Recorder::default();
    let mut split = w.state.clone();
    let split_report = end_epoch_with(&mut split, ctx, seed, &recorder);
    let report = end_epoch(&mut w.state, ctx, seed);
    assert_eq!(split_report, report);
    assert_eq!(state_root(&split), state_root(&w.state));
    recorder.0.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn with_no_strike_the_aggregation_and_the_payout_run_in_parts() {
    let mut w = world();
    for i in 0..8 {
        w.measure(&format!("n{i}"), 100 * MBPS, 20, 1_000_000);
    }
    // The strike check, the aggregation, the uptime weights, the payout:
    // four parts each.
    assert_eq!(end_both_ways(&mut w), vec![4, 4, 4, 4]);
    assert!((0..8).all(|i| w.node(&format!("n{i}")).last_reward.0 > 0), "every node was paid");
}

#[test]
fn a_node_with_a_strike_makes_the_aggregation_run_in_node_order() {
    let mut w = world();
    // The liar claims ten times what it delivers: a strike this epoch.
    w.register_node("liar", "DE", "203.0.120.10", 1_000 * MBPS);
    for i in 0..8 {
        w.measure(&format!("n{i}"), 100 * MBPS, 20, 1_000_000);
    }
    w.measure("liar", 100 * MBPS, 20, 1_000_000);
    assert_eq!(end_both_ways(&mut w), vec![4, 4, 4, 4]);
    assert!(w.node("liar").strike.is_some());
    // Next epoch the strike may be confirmed, and a slash changes stakes
    // in the middle of the pass: only the check, the weights and the
    // payout split.
    for i in 0..8 {
        w.measure(&format!("n{i}"), 100 * MBPS, 20, 1_000_000);
    }
    w.measure("liar", 100 * MBPS, 20, 1_000_000);
    assert_eq!(end_both_ways(&mut w), vec![4, 4, 4]);
}

#[test]
fn claims_in_parts_are_the_claims_one_by_one() {
    use tollway_ledger::direct::{apply_unsigned, claim_vested_each, Claimed};
    use tollway_ledger::event::Event;
    use tollway_types::{Token, TxBody};
    let mut w = world();
    // Ten epochs of rewards, then a third of the vesting period later.
    for _ in 0..10 {
        for i in 0..8 {
            w.measure(&format!("n{i}"), 100 * MBPS, 20, 1_000_000);
        }
        w.end_epoch();
    }
    w.now_secs += w.state.params.vesting_secs / 3;
    let ctx = w.ctx();
    let idx = |w: &World, label: &str| *w.state.account_index.get(&tollway_ledger::testkit::id(label)).unwrap_or_else(|| panic!("{label}"));
    // Node accounts with rewards, and an oracle's and the liar's with none
    // vested (refused one by one: claimed as zero, the account untouched).
    let mut claimants: Vec<u32> = ["oracle1", "n0", "n2", "n3", "n5", "n6", "n7", "liar"].iter().map(|l| idx(&w, l)).collect();
    claimants.sort_unstable();
    let mut one_by_one = w.state.clone();
    let expected: Vec<Claimed> = claimants
        .iter()
        .map(|&a| {
            let amount = match apply_unsigned(&mut one_by_one, ctx, a, &TxBody::ClaimVested) {
                Ok(events) => match events.as_slice() {
                    [Event::VestedClaimed { amount, .. }] => *amount,
                    other => panic!("{other:?}"),
                },
                Err(_) => Token::ZERO,
            };
            Claimed { amount, balance: one_by_one.accounts[a as usize].token }
        })
        .collect();
    assert!(expected.iter().filter(|c| !c.amount.is_zero()).count() >= 6, "{expected:?}");
    assert!(expected.iter().any(|c| c.amount.is_zero() && !c.balance.is_zero()), "{expected:?}");

    let recorder = Recorder::default();
    let mut split = w.state.clone();
    assert_eq!(claim_vested_each(&mut split, ctx, &claimants, &recorder), expected);
    assert_eq!(recorder.0.into_inner().unwrap_or_else(|e| e.into_inner()), vec![4]);
    assert_eq!(state_root(&split), state_root(&one_by_one));

    // Not ascending: one part, the same result.
    claimants.reverse();
    let recorder = Recorder::default();
    let mut reversed = w.state.clone();
    let mut claimed = claim_vested_each(&mut reversed, ctx, &claimants, &recorder);
    claimed.reverse();
    assert_eq!(claimed, expected);
    assert!(recorder.0.into_inner().unwrap_or_else(|e| e.into_inner()).is_empty());
    assert_eq!(state_root(&reversed), state_root(&one_by_one));
    // No claimants: nothing to split, nothing changed.
    let before = state_root(&w.state);
    assert!(claim_vested_each(&mut w.state, ctx, &[], &Recorder::default()).is_empty());
    assert_eq!(state_root(&w.state), before);
}

#[test]
fn sales_in_parts_are_the_sales_one_by_one() {
    use tollway_ledger::direct::{apply_unsigned, sell_tokens_each};
    use tollway_ledger::event::Event;
    use tollway_types::{Amount, Token, TxBody, Usd};
    let w = world();
    let ctx = w.ctx();
    let idx = |w: &World, label: &str| *w.state.account_index.get(&tollway_ledger::testkit::id(label)).unwrap_or_else(|| panic!("{label}"));
    // Each node account holds 10 tokens. Sales of 1 to 8 tokens, and three
    // the ledger refuses: nothing, more than the account holds, and so
    // little that the pool pays less than a micro-dollar.
    let amounts = [Token::units(1), Token::ZERO, Token::units(3), Token::units(11), Token(1), Token::units(8), Token::units(2), Token::units(5)];
    let sales: Vec<(u32, Token)> = (0..8).map(|i| (idx(&w, &format!("n{i}")), amounts[i])).collect();
    assert!(sales.windows(2).all(|s| s[0].0 < s[1].0), "the world opens the node accounts in order");
    let one_by_one = |sales: &[(u32, Token)]| {
        let mut state = w.state.clone();
        let bought: Vec<Option<Usd>> = sales
            .iter()
            .map(|&(a, amount)| match apply_unsigned(&mut state, ctx, a, &TxBody::Swap { sell: Amount::Token(amount), min_out: 0 }) {
                Ok(events) => match events.as_slice() {
                    [Event::Swapped { bought: Amount::Usd(out), .. }] => Some(*out),
                    other => panic!("{other:?}"),
                },
                Err(_) => None,
            })
            .collect();
        (state, bought)
    };
    let (expected_state, expected) = one_by_one(&sales);
    assert_eq!(expected.iter().filter(|b| b.is_none()).count(), 3, "{expected:?}");
    // Later sales get less a token: the pool's price falls through them.
    assert!(expected[0].unwrap().0 > expected[6].unwrap().0 / 2, "{expected:?}");

    let recorder = Recorder::default();
    let mut split = w.state.clone();
    assert_eq!(sell_tokens_each(&mut split, ctx, &sales, &recorder), expected);
    // Checked in four parts, then paid in four.
    assert_eq!(recorder.0.into_inner().unwrap_or_else(|e| e.into_inner()), vec![4, 4]);
    assert_eq!(state_root(&split), state_root(&expected_state));
    assert_eq!(split.pool.token, expected_state.pool.token);

    // Not ascending: one by one on this thread, the same result.
    let reversed: Vec<(u32, Token)> = sales.iter().rev().copied().collect();
    let (expected_state, mut expected) = one_by_one(&reversed);
    let recorder = Recorder::default();
    let mut state = w.state.clone();
    assert_eq!(sell_tokens_each(&mut state, ctx, &reversed, &recorder), expected);
    assert!(recorder.0.into_inner().unwrap_or_else(|e| e.into_inner()).is_empty());
    assert_eq!(state_root(&state), state_root(&expected_state));
    // The same account twice: its second sale sees the first's balance.
    let twice = [(sales[0].0, Token::units(6)), (sales[0].0, Token::units(6))];
    (_, expected) = one_by_one(&twice);
    assert!(expected[0].is_some() && expected[1].is_none(), "{expected:?}");
    assert_eq!(sell_tokens_each(&mut w.state.clone(), ctx, &twice, &Recorder::default()), expected);
}
