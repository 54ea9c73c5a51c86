//! The node's metrics recorder over a long run. A test binary of its own:
//! the recorder is one per process, and the test reads the process's
//! memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use tollway_chain::metrics::UPKEEP_EVERY;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Every block records two histogram values. Until the recorder drained
/// them only when `/metrics` was scraped, a chain nobody scraped kept them
/// all: about 16 bytes each, near 3 MiB a day at a block a second, for as
/// long as it ran. Here 3 million values, over two weeks of such blocks,
/// go in while nothing scrapes, and the process's memory grows by what
/// one batch between two drains holds (some 8 MiB), not by all of them
/// (some 48 MiB).
#[test]
fn histogram_values_nobody_scrapes_are_drained_not_kept_for_ever() {
    let _handle = tollway_chain::metrics::handle();
    let before_kib = rss_kib();
    for _ in 0..6 {
        for i in 0..500_000u32 {
            metrics::histogram!("tollway_block_txs").record(f64::from(i % 500));
        }
        std::thread::sleep(UPKEEP_EVERY + Duration::from_millis(300));
    }
    let grown_kib = rss_kib().saturating_sub(before_kib);
    assert!(grown_kib < 24 * 1024, "3 M histogram values no one scraped grew the process by {grown_kib} KiB");
}
