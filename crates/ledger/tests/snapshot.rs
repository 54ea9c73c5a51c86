//! A stored state names its layout (`root::STATE_VERSION`). This pins the
//! encoding of one state that holds an instance of each stored type
//! (accounts with vesting and unbonding, nodes with a strike, oracles and
//! their reports, a channel in its three indexes, the pool, the epoch
//! records, a node's move in the epoch), so a change to
//! any of them fails here until the version is bumped and the pin moved.
//! A change of rules that only changes the values fails here too: then
//! move the pin alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tollway_ledger::root::{decode_state, encode_state, SnapshotError, STATE_VERSION};
use tollway_ledger::testkit::{fund, World};
use tollway_ledger::Params;
use tollway_types::{Token, TxBody, Usd};

const MBPS: u64 = 1_000_000;

/// blake3 of `encode_state` of [`a_state_of_every_kind`], in layout
/// `STATE_VERSION`.
const PINNED: (u8, &str) = (11, "4cf367caeb054c363119277f73b49592f0ae85d295ae0012a5c170eebb8a1b00");

fn a_state_of_every_kind() -> World {
    let mut accounts = vec![fund("honest", 10, 0, 2_000), fund("liar", 10, 0, 10_000), fund("client", 0, 2_000, 0)];
    for i in 0..3 {
        accounts.push(fund(&format!("oracle{i}"), 10, 0, 5_000));
    }
    let mut w = World::new(Params::default_params(), 1_000_000, 1_000_000, accounts);
    for i in 0..3 {
        w.register_oracle(&format!("oracle{i}"), &format!("198.51.{i}.1"));
    }
    w.end_epoch();
    w.register_node("honest", "DE", "203.0.113.10", 100 * MBPS);
    w.register_node("liar", "NG", "203.0.114.10", 1_000 * MBPS);
    let channel = w.open_channel("client", "honest", Usd::units(100), 3_600);
    let receipt = w.receipt("client", channel, Usd::units(10), 1 << 30);
    w.must("honest", TxBody::SettleChannel { receipt });
    w.measure("honest", 100 * MBPS, 20, 1_000_000);
    w.measure("liar", 100 * MBPS, 20, 1_000_000); // a tenth of its claim: a strike
    w.end_epoch();
    w.must("honest", TxBody::BeginUnbond { amount: Token::units(10) });
    // A move to another /24 in the epoch: the epoch's record of it.
    let mut spec = w.node("liar").spec.clone();
    spec.addrs = vec!["203.0.115.10".parse().unwrap()];
    w.must("liar", TxBody::UpdateNode(spec));
    w
}

#[test]
fn the_stored_state_layout_is_the_one_its_version_names() {
    let w = a_state_of_every_kind();
    assert!(w.node("liar").strike.is_some(), "the fixture lost its strike");
    assert!(w.account("honest").unbonding_total() > Token::ZERO);
    assert!(w.state.node_epochs.iter().any(|e| e.group_left.is_some()), "the fixture lost its move");
    let encoded = encode_state(&w.state);
    assert_eq!(encoded[0], STATE_VERSION);
    let hash = blake3::hash(&encoded).to_hex().to_string();
    assert_eq!(
        (STATE_VERSION, hash.as_str()),
        PINNED,
        "the stored state's encoding changed. If a stored type changed, bump STATE_VERSION \
         (tollway_ledger::root) and pin the new hash; if only values changed, pin the new hash alone"
    );
    assert_eq!(decode_state(&encoded).map(|s| encode_state(&s)), Ok(encoded));
}

#[test]
fn a_state_stored_in_another_layout_is_refused_by_name() {
    let mut encoded = encode_state(&a_state_of_every_kind().state);
    encoded[0] = 1; // what the builds before STATE_VERSION wrote: the codec's byte
    let err = decode_state(&encoded).unwrap_err();
    assert_eq!(err, SnapshotError::Version { found: 1 });
    assert!(err.to_string().contains("layout version 1, and this build reads version 11"), "{err}");
}
