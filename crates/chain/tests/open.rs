//! Opening a store: what the node checks before it builds on the tip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tollway_chain::core::{init_store, Core, CoreConfig};
use tollway_chain::genesis::GenesisFile;
use tollway_ledger::genesis::{Allocation, Genesis};
use tollway_ledger::root::{state_root_of_encoding, STATE_VERSION};
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
    let (store, seq) = genesis_store(dir.path());
    let (tip, _) = store.tip().unwrap();
    // Block 1: no state change, and a header that names one tx it does
    // not hold.
    let mut block = next_block(&tip);
    block.header.n_txs = 1;
    store.commit(&BlockCommit { block: &block, tx_ids: &[], results: &[], epochs: &[], node_epochs: &[], state_encoding: None }).unwrap();
    let err = Core::open(store, seq.public(), CoreConfig::default()).err().expect("a damaged tip is refused");
    assert!(err.to_string().contains("does not match its header's tx root or count"), "{err}");
}

/// A state stored by a build with another state layout (before
/// `STATE_VERSION`, the codec's byte 1 came first) is refused by name, not
/// as a malformed encoding.
#[test]
fn a_state_stored_in_another_layout_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (store, seq) = genesis_store(dir.path());
    let (tip, mut encoding) = store.tip().unwrap();
    encoding[0] = 1;
    let mut block = next_block(&tip);
    block.header.state_root = state_root_of_encoding(&encoding);
    let commit = BlockCommit { block: &block, tx_ids: &[], results: &[], epochs: &[], node_epochs: &[], state_encoding: Some(&encoding) };
    store.commit(&commit).unwrap();
    let err = Core::open(store, seq.public(), CoreConfig::default()).err().expect("another layout is refused");
    let names = format!("stored in layout version 1, and this build reads version {STATE_VERSION}");
    assert!(err.to_string().contains(&names), "{err}");
}

/// `chain replay` of such a store said the replayed state differed from
/// the stored one, or failed at a block's root: now it names the layout,
/// and what to do, as `chain run` does.
#[test]
fn replay_names_a_state_stored_in_another_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = genesis_store(dir.path());
    let (tip, mut encoding) = store.tip().unwrap();
    encoding[0] = STATE_VERSION + 1;
    let mut block = next_block(&tip);
    block.header.state_root = state_root_of_encoding(&encoding);
    let commit = BlockCommit { block: &block, tx_ids: &[], results: &[], epochs: &[], node_epochs: &[], state_encoding: Some(&encoding) };
    store.commit(&commit).unwrap();
    let err = tollway_chain::replay::replay(&store, |_, _| {}).expect_err("another layout is refused");
    let names = format!("stored in layout version {}, and this build reads version {STATE_VERSION}", STATE_VERSION + 1);
    assert!(err.to_string().contains(&names) && err.to_string().contains("run the build that wrote it"), "{err}");
}

/// A store holding only the genesis block, and the sequencer's key.
fn genesis_store(dir: &std::path::Path) -> (Store, SigningKey) {
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
    let path = dir.join("chain.redb");
    init_store(&path, &file.to_json(), &seq).unwrap();
    (Store::open(&path).unwrap(), seq)
}

/// Block 1 on `tip`, empty, one second later.
fn next_block(tip: &tollway_types::block::Block) -> tollway_types::block::Block {
    let mut block = tip.clone();
    block.header.height = 1;
    block.header.parent = tip.header.hash();
    block.header.time_ms += 1_000;
    block
}
