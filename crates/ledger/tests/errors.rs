//! Every rejection is a typed error whose message a person can act on, and
//! a rejected tx changes nothing. One table, one `check` helper.

use tollway_ledger::testkit::{fund, id, node_spec, World};
use tollway_ledger::{apply, state_root, Params};
use tollway_types::{
    channel_id, Amount, CountryCode, Measurement, MeasurementOutcome, MeasurementReport, Token, Tx, TxBody, Usd,
};

fn world() -> World {
    let mut w = World::new(
        Params::default_params(),
        1_000,
        1_000,
        vec![
            fund("alice", 100, 50, 2_000),
            fund("bob", 0, 10, 0),
            fund("node", 10, 0, 2_000),
            fund("oracle", 10, 0, 5_000),
        ],
    );
    w.register_node("node", "DE", "203.0.113.1", 100_000_000);
    w.register_oracle("oracle", "198.51.100.1");
    w
}

/// Applies the tx built by `make` and returns the error message, checking
/// that the state root did not move.
fn check(make: impl FnOnce(&mut World) -> tollway_types::SignedTx) -> String {
    let mut w = world();
    let stx = make(&mut w);
    let before = state_root(&w.state);
    let ctx = w.ctx();
    let result = apply(&mut w.state, ctx, &stx);
    assert_eq!(state_root(&w.state), before, "a rejected tx changed the state");
    match result {
        Ok(_) => "accepted".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn rejections_explain_themselves() {
    let tok = |n| Amount::Token(Token::units(n));
    let mut out = Vec::new();
    out.push(check(|w| {
        let mut t = w.tx("alice", TxBody::Stake { amount: Token(1) });
        t.signature.0[0] ^= 1;
        t
    }));
    out.push(check(|w| {
        let k = w.key("alice");
        Tx { chain_id: "other".into(), signer: k.public(), nonce: 0, fee: tok(1), body: TxBody::ClaimVested }.sign(&k)
    }));
    out.push(check(|w| {
        let k = w.key("alice");
        Tx { chain_id: "tollway-test".into(), signer: k.public(), nonce: 7, fee: tok(1), body: TxBody::ClaimVested }.sign(&k)
    }));
    out.push(check(|w| w.tx("stranger", TxBody::ClaimVested)));
    out.push(check(|w| w.tx_with_fee("alice", Amount::Usd(Usd(1)), TxBody::ClaimVested)));
    out.push(check(|w| w.tx("alice", TxBody::Transfer { to: id("bob"), amount: tok(1_000) })));
    out.push(check(|w| w.tx("bob", TxBody::Transfer { to: id("alice"), amount: tok(1) })));
    out.push(check(|w| w.tx("alice", TxBody::Transfer { to: id("bob"), amount: Amount::Usd(Usd(0)) })));
    out.push(check(|w| w.tx("alice", TxBody::BeginUnbond { amount: Token::units(5_000) })));
    out.push(check(|w| {
        let mut spec = node_spec("DE", "203.0.113.9", 1);
        spec.country = CountryCode(*b"XX");
        w.tx("alice", TxBody::RegisterNode(spec))
    }));
    out.push(check(|w| w.tx("alice", TxBody::RegisterNode(node_spec("DE", "0.0.0.0", 1)))));
    out.push(check(|w| w.tx("alice", TxBody::RegisterNode(node_spec("DE", "203.0.113.9", 0)))));
    out.push(check(|w| {
        let mut spec = node_spec("DE", "203.0.113.9", 1);
        spec.price_usd_micro_per_gib = tollway_ledger::apply::MAX_PRICE_USD_MICRO + 1;
        w.tx("alice", TxBody::RegisterNode(spec))
    }));
    out.push(check(|w| w.tx("node", TxBody::RegisterNode(node_spec("DE", "203.0.113.9", 10)))));
    out.push(check(|w| w.tx("alice", TxBody::RegisterOracle { addr: "198.51.100.9".parse().unwrap_or([1, 1, 1, 1].into()) })));
    let later = 2_000_000;
    out.push(check(|w| w.tx("alice", TxBody::OpenChannel { node: id("bob"), escrow: Usd::units(1), expires_at_secs: later })));
    out.push(check(|w| w.tx("alice", TxBody::OpenChannel { node: id("node"), escrow: Usd::units(60), expires_at_secs: later })));
    out.push(check(|w| w.tx("alice", TxBody::OpenChannel { node: id("node"), escrow: Usd::units(1), expires_at_secs: 5 })));
    out.push(check(|w| w.tx("alice", TxBody::OpenChannel { node: id("node"), escrow: Usd(9_999), expires_at_secs: later })));
    out.push(check(|w| {
        let far = w.now_secs + 91 * 86_400;
        w.tx("alice", TxBody::OpenChannel { node: id("node"), escrow: Usd::units(1), expires_at_secs: far })
    }));
    out.push(check(|w| w.tx("alice", TxBody::Transfer { to: id("newcomer"), amount: Amount::Token(Token(999_999)) })));
    out.push(check(|w| w.tx("alice", TxBody::Transfer { to: id("newcomer"), amount: Amount::Usd(Usd(9_999)) })));
    // Channel-state errors: open one first.
    let settle = |cumulative: u128, signer: &'static str, bytes: u64| {
        move |w: &mut World| {
            let ch = channel_id(&id("alice"), w.nonce("alice"));
            w.must("alice", TxBody::OpenChannel { node: id("node"), escrow: Usd::units(10), expires_at_secs: later });
            let first = w.receipt("alice", ch, Usd::units(2), 1_000);
            w.must("node", TxBody::SettleChannel { receipt: first });
            let receipt = w.receipt(signer, ch, Usd(cumulative), bytes);
            w.tx("node", TxBody::SettleChannel { receipt })
        }
    };
    out.push(check(settle(Usd::units(2).0, "alice", 2_000)));
    out.push(check(settle(Usd::units(11).0, "alice", 2_000)));
    out.push(check(settle(Usd::units(3).0, "mallory", 2_000)));
    out.push(check(settle(Usd::units(3).0, "alice", 10)));
    out.push(check(|w| {
        let ch = channel_id(&id("alice"), w.nonce("alice"));
        w.must("alice", TxBody::OpenChannel { node: id("node"), escrow: Usd::units(10), expires_at_secs: later });
        let receipt = w.receipt("alice", ch, Usd::units(3), 10);
        w.tx_with_fee("bob", Amount::Usd(Usd::units(1)), TxBody::SettleChannel { receipt })
    }));
    out.push(check(|w| {
        let ch = channel_id(&id("alice"), w.nonce("alice"));
        w.must("alice", TxBody::OpenChannel { node: id("node"), escrow: Usd::units(10), expires_at_secs: later });
        w.tx("alice", TxBody::CloseChannel { channel: ch })
    }));
    out.push(check(|w| {
        let epoch = w.state.epoch + 1;
        w.tx("node", TxBody::Heartbeat { epoch })
    }));
    out.push(check(|w| {
        // The oracle registered this epoch is not eligible until the next.
        let m = Measurement { node: id("node"), outcome: MeasurementOutcome::Unreachable, uptime_ppm: 0 };
        w.tx("oracle", TxBody::Report(MeasurementReport { epoch: 0, measurements: vec![m] }))
    }));
    out.push(check(|w| {
        w.end_epoch();
        let m = Measurement { node: id("node"), outcome: MeasurementOutcome::Unreachable, uptime_ppm: 2_000_000 };
        w.tx("oracle", TxBody::Report(MeasurementReport { epoch: 1, measurements: vec![m] }))
    }));
    out.push(check(|w| w.tx("alice", TxBody::Swap { sell: tok(1), min_out: u128::MAX })));
    out.push(check(|w| w.tx("alice", TxBody::Deposit { to: id("alice"), amount: Usd::units(5) })));
    out.push(check(|w| {
        w.tx_with_fee("bob", Amount::Usd(Usd::units(1)), TxBody::WithdrawUsd { amount: Usd::units(10), reference: "x".into() })
    }));
    out.push(check(|w| w.tx("alice", TxBody::WithdrawUnbonded)));
    out.push(check(|w| w.tx_with_fee("bob", Amount::Usd(Usd::units(1)), TxBody::DeregisterOracle)));
    expect_test::expect![[r#"
        [
            "bad signature: the tx is not signed by 25ece6095f86da38a2737dede353221782e1b6c519644b8fc21cb6fcbea26b83",
            "wrong chain id \"other\": this chain is \"tollway-test\"",
            "bad nonce 7: account 25ece6095f86da38a2737dede353221782e1b6c519644b8fc21cb6fcbea26b83 expects nonce 0",
            "unknown account f0fd2a0580251b03721ccf0bd50f9ed70839f8a8924370ed7f7e0609b86a3899: it has never received funds",
            "fee $0.000001 is below the minimum of $0.0001",
            "insufficient token balance: have 100 TWY, need 1000.001 TWY",
            "insufficient token balance: have 0 TWY, need 0.001 TWY",
            "amount must be greater than zero",
            "insufficient stake: have 2000 TWY bonded, need 5000 TWY",
            "invalid node spec: \"XX\" is not an ISO 3166 country code",
            "invalid node spec: 0.0.0.0 is not a reachable unicast address",
            "invalid node spec: claimed capacity 0 bit/s is outside 1 bit/s to 100 Gbit/s",
            "invalid node spec: price above the limit of $1000 per GiB (and per hour)",
            "fdf17ade916e030aba35e2ea0da6f1c0679da782f654ecea94a36d5966a7c098 already runs a node: use update-node",
            "insufficient stake: have 2000 TWY bonded, need 5000 TWY",
            "dd7d4e30827b7cb0c7842775ef2ff0764a85c2f8a78897e54fbae5c5c4f57d33 runs no active node",
            "insufficient USD balance: have $50, need $60",
            "channel expiry 5 is not after the current time 1000000",
            "channel escrow $0.009999 is below the minimum of $0.01",
            "channel expiry 8862400 is too far ahead: a channel may last at most 90d, so it must expire by 8776000 (the current time is 1000000)",
            "the receiver has no account yet, and a transfer that creates one must send at least 1 TWY (this sends 0.999999 TWY): accounts stay in the state for good",
            "the receiver has no account yet, and a transfer that creates one must send at least $0.01 (this sends $0.009999): accounts stay in the state for good",
            "stale receipt: cumulative $2 is not above the $2 already settled",
            "receipt for $11 exceeds the channel's escrow of $10",
            "receipt signature is not the channel client's",
            "receipt bytes went backwards: 10 after 1000",
            "only the channel's node (fdf17ade916e030aba35e2ea0da6f1c0679da782f654ecea94a36d5966a7c098) may do this",
            "channel cannot be closed before 2003600 (expiry plus the settlement grace), in 11d 14h; now is 1000000",
            "heartbeat is for epoch 1, but the current epoch is 0",
            "this oracle may report from epoch 1; the current epoch is 0",
            "report entry 0: uptime 2000000 ppm is above 1,000,000",
            "swap output 996006 is below the minimum 340282366920938463463374607431768211455 you accepted",
            "only the gateway may deposit USD",
            "insufficient USD balance: have $10, need $11",
            "nothing to withdraw: no tokens are unbonding",
            "dd7d4e30827b7cb0c7842775ef2ff0764a85c2f8a78897e54fbae5c5c4f57d33 is not an active oracle",
        ]
    "#]]
    .assert_debug_eq(&out);
}

/// Every record a tx creates stays in the state, which the chain encodes
/// and hashes with every block: a transfer of one base unit made an
/// account for good, and a channel of one micro-dollar with any far
/// expiry lived for ever, each for a $0.0001 fee. Refused, saying the
/// minimum; the minimum itself passes.
#[test]
fn a_dust_transfer_to_a_new_account_and_a_dust_or_eternal_channel_are_refused_with_the_minimum() {
    let mut w = world();
    let now = w.now_secs;
    let refused = |w: &mut World, label: &str, body: TxBody| {
        let before = state_root(&w.state);
        let Err(err) = w.submit_usd_fee(label, body) else { panic!("{label}'s dust was accepted") };
        assert_eq!(state_root(&w.state), before, "a rejected tx changed the state");
        (err.code(), err.to_string())
    };
    let (code, msg) = refused(&mut w, "alice", TxBody::Transfer { to: id("dust"), amount: Amount::Token(Token(1)) });
    assert_eq!(code, "new_account_too_small");
    assert!(msg.contains("must send at least 1 TWY"), "{msg}");
    let (code, msg) = refused(&mut w, "alice", TxBody::Transfer { to: id("dust"), amount: Amount::Usd(Usd(1)) });
    assert_eq!(code, "new_account_too_small");
    assert!(msg.contains("must send at least $0.01"), "{msg}");
    w.must("alice", TxBody::Transfer { to: id("dust"), amount: Amount::Token(Token::units(1)) });
    // To an account that exists, any amount.
    w.must("alice", TxBody::Transfer { to: id("dust"), amount: Amount::Usd(Usd(1)) });

    let open = |escrow: Usd, expires_at_secs: u64| TxBody::OpenChannel { node: id("node"), escrow, expires_at_secs };
    let (code, msg) = refused(&mut w, "alice", open(Usd(1), now + 3_600));
    assert_eq!(code, "escrow_too_small");
    assert!(msg.contains("below the minimum of $0.01"), "{msg}");
    let (code, msg) = refused(&mut w, "alice", open(Usd::units(1), u64::MAX));
    assert_eq!(code, "expiry_too_far");
    assert!(msg.contains("a channel may last at most 90d"), "{msg}");
    w.submit_usd_fee("alice", open(Usd(10_000), now + 90 * 86_400)).unwrap_or_else(|e| panic!("{e}"));
}

/// The gateway's deposits are the one way USD enters after genesis, in any
/// amount it signs. One that would take the USD in existence past what a
/// `u128` holds (a mistyped amount) panicked in the ledger, and so in the
/// chain, whose release build would wrap a balance around instead.
/// Refused, changing nothing; up to the limit, accepted.
#[test]
fn a_deposit_beyond_what_the_usd_supply_can_count_is_refused() {
    let mut w = World::new(Params::default_params(), 1_000, 1_000, vec![fund("gateway", 1, 0, 0), fund("bob", 0, 10, 0)]);
    let deposit = |amount: u128| TxBody::Deposit { to: id("bob"), amount: Usd(amount) };
    let room = u128::MAX - w.state.supply.total_usd().0;
    w.must("gateway", deposit(room / 2));
    w.must("gateway", deposit(room - room / 2));
    assert_eq!(w.state.supply.total_usd().0, u128::MAX);
    let full = state_root(&w.state);
    for amount in [1, u128::MAX] {
        let Err(err) = w.submit("gateway", deposit(amount)) else { panic!("a deposit of {amount} past u128::MAX was accepted") };
        assert_eq!((err.code(), state_root(&w.state)), ("overflow", full), "{err}");
    }
    assert!(tollway_ledger::check_supply(&w.state).is_ok());
}
