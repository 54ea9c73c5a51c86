//! libFuzzer target: arbitrary bytes from a node into a client session
//! (crates/tunnel), which must never panic, transmit only valid frames
//! and sign only receipts for its channel, within its escrow and never
//! below an earlier one. Run via `fuzz/run.sh client_session SECONDS`;
//! the property itself lives in the library so it can be replayed without
//! libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollway_fuzz::check_client_session(data));
