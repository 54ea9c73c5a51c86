//! libFuzzer target: arbitrary bytes into the signed-tx decoder, which must
//! never panic and must accept only canonical encodings. Run via
//! `fuzz/run.sh tx_decode SECONDS`; the property itself lives in the
//! library so it can be replayed without libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollway_fuzz::check_tx_decode(data));
