//! libFuzzer target: arbitrary bytes from a local client into the SOCKS5
//! and HTTP proxy parsers (crates/socks), which must never panic, never
//! ask for more bytes past their limits, and accept only what re-encodes
//! consistently. Run via `fuzz/run.sh socks_parse SECONDS`; the property
//! itself lives in the library so it can be replayed without libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollway_fuzz::check_socks_parse(data));
