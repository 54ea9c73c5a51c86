//! Opening a store: what the node checks before it builds on the tip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tollway_chain::core::{init_store, Core, CoreConfig};
use tollway_chain::genesis::GenesisFile;
use tollway_ledger::genesis::{Allocation, Genesis};
use tollway_ledger::Params;
use tollway_store::{BlockCommit, Store};
use tollway_types::{SigningKey, Token, Usd};

/// The state's root covers the state, not the tip block's txs: a stored tx
/// damaged after the fact (a flipped bit) was served as it was, and the
/// next block built on it. A tip whose txs do not match its header's tx
/// root or count is refused.
#[test]
fn a_tip_whose_txs_do_not_match_its_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let seq = SigningKey::from_label("sequencer");
    let file = GenesisFile {
        ledger: Genesis {
            chain_id: "tollway-open-test".into(),
            genesis_time_secs: 1_700_000_000,
            gateway: seq.public(),
            params: Params::default_params(),
            allocations: vec![Allocation { account: seq.public(), token: Token::units(10), usd: Usd::units(1), staked: Token::ZERO }],
            pool_token: Token::units(1_000),
            pool_usd: Usd::units(100),
        },
        validators: vec![seq.public()],
    };
    let path = dir.path().join("chain.redb");
    init_store(&path, &file.to_json(), &seq).unwrap();
    let store = Store::open(&path).unwrap();
    let (tip, _) = store.tip().unwrap();
    // Block 1: no state change, and a header that names one tx it does
    // not hold.
    let mut block = tip.clone();
    block.header.height = 1;
    block.header.parent = tip.header.hash();
    block.header.time_ms += 1_000;
    block.header.n_txs = 1;
    store.commit(&BlockCommit { block: &block, tx_ids: &[], results: &[], epochs: &[], state_encoding: None }).unwrap();
    let err = Core::open(store, seq.public(), CoreConfig::default()).err().expect("a damaged tip is refused");
    assert!(err.to_string().contains("does not match its header's tx root or count"), "{err}");
}
