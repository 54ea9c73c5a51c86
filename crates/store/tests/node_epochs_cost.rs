//! What the nodes' epoch rows cost: bytes of the file per row and the time
//! an epoch's rows add to its block's commit, at 10,000 nodes. A
//! measurement to read, not a check (no figure is asserted):
//! `cargo test --release -p tollway-store --test node_epochs_cost -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use tollway_store::testkit::empty_block as block;
use tollway_store::{BlockCommit, NodeEpochRow, Store, NODE_EPOCHS_KEPT};
use tollway_ledger::state::NodeIdx;
use tollway_types::{Token, Usd};

const NODES: u64 = 10_000;
const EPOCHS: u64 = 50;

/// Figures of the sizes a busy node has: a reward of some TWY, 50 Mbit/s.
fn rows(nodes: &[NodeIdx], epoch: u64) -> Vec<(NodeIdx, NodeEpochRow)> {
    let row = |i: u64| NodeEpochRow {
        epoch,
        reward: Token(3_000_000 + u128::from(i * 7919 % 1_000_000)),
        verified_capacity_bps: 50_000_000 + i,
        measured: !i.is_multiple_of(3),
        uptime_ppm: 990_000 + (i % 10_000) as u32,
        reputation_ppm: 900_000 + (i % 1000) as u32,
        latency_us: 20_000 + (i % 5000) as u32,
        settled_usd: Usd(u128::from(i * 13 % 2_000_000)),
        region_multiplier_ppm: 1_250_000,
    };
    nodes.iter().zip(0..).map(|(n, i)| (*n, row(i))).collect()
}

fn commit(store: &Store, height: u64, node_epochs: &[(NodeIdx, NodeEpochRow)]) -> Duration {
    let b = block(height);
    let start = Instant::now();
    store.commit(&BlockCommit { block: &b, tx_ids: &[], results: &[], epochs: &[], node_epochs, state_encoding: None }).unwrap();
    start.elapsed()
}

#[test]
#[ignore = "a measurement: run it in release and read what it prints"]
fn node_epoch_rows_cost_this_much_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = Store::create(&path, b"{}", &block(0), b"state").unwrap();
    let nodes: Vec<NodeIdx> = (0..NODES as NodeIdx).collect();
    let size = || std::fs::metadata(&path).unwrap().len();
    let mut height = 0;
    let mut next = || {
        height += 1;
        height
    };
    let empty: Duration = (0..EPOCHS).map(|_| commit(&store, next(), &[])).sum::<Duration>() / EPOCHS as u32;
    let before = size();
    let mut filling = Duration::ZERO;
    for epoch in 0..EPOCHS {
        filling += commit(&store, next(), &rows(&nodes, epoch));
    }
    let after = size();
    // Past the window: each node's row of the epoch prunes the oldest.
    let mut pruning = Duration::ZERO;
    for epoch in NODE_EPOCHS_KEPT..NODE_EPOCHS_KEPT + EPOCHS {
        pruning += commit(&store, next(), &rows(&nodes, epoch));
    }
    let steady = size();
    let encoded = tollway_types::codec::encode(&rows(&nodes, 0)[0].1).len();
    println!("empty block commit: {empty:?}");
    println!("commit with {NODES} rows, growing: {:?} per epoch", filling / EPOCHS as u32);
    println!("commit with {NODES} rows, each pruning one: {:?} per epoch", pruning / EPOCHS as u32);
    println!("value {encoded} bytes + key 12 bytes; file {} bytes per row", (after - before) / (NODES * EPOCHS));
    println!("file after pruning as many as written: {} -> {} bytes", after, steady);
}
