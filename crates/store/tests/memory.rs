//! What a long-lived store holds in memory. A test binary of its own: it
//! reads the process's memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tollway_ledger::Event;
use tollway_store::testkit::empty_block as block;
use tollway_store::{BlockCommit, Store, CACHE_BYTES};
use tollway_types::{Amount, SigningKey, Token};

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

/// redb kept every page the store wrote in its cache, up to its default
/// of 1 GiB, so a chain's process grew by what it stored: about half a
/// kilobyte a block even with no tx, a gigabyte in the end. Here three
/// caches' worth of blocks go in, and the process grows by less than two.
#[test]
fn the_store_keeps_at_most_its_cache_of_what_it_wrote_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("s.redb"), b"{}", &block(0), b"state").unwrap();
    let (from, to) = (SigningKey::from_label("a").public(), SigningKey::from_label("b").public());
    // About a MiB of results a block.
    let results = vec![vec![Event::Transferred { from, to, amount: Amount::Token(Token(1)) }; 12_000]];
    let block_bytes = tollway_types::codec::encode(&results).len();
    let before = rss_bytes();
    let n_blocks = (3 * CACHE_BYTES).div_ceil(block_bytes) as u64;
    for height in 1..=n_blocks {
        let c = BlockCommit { block: &block(height), tx_ids: &[], results: &results, epochs: &[], node_epochs: &[], state_encoding: None };
        store.commit(&c).unwrap();
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 2 * CACHE_BYTES,
        "{} MiB written grew the process by {} MiB",
        (n_blocks as usize * block_bytes) >> 20,
        grown >> 20
    );
}
