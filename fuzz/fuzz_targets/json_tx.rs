//! libFuzzer target: arbitrary text into the JSON face of a transaction
//! (the chain API's `{"tx": …}`) and the amount, country and duration
//! parsers, which must never panic and must read back what they print.
//! Run via `fuzz/run.sh json_tx SECONDS`; the property itself lives in
//! the library so it can be replayed without libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollway_fuzz::check_json_tx(data));
