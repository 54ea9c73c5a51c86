//! libFuzzer target: arbitrary bytes from a peer into the tunnel's frame
//! decoder (crates/tunnel), which must never panic, say `Incomplete` only
//! for a short input and accept only frames that re-encode to exactly the
//! bytes it consumed; and into a node session, which must never panic and
//! transmit only valid frames. Run via `fuzz/run.sh frame_decode SECONDS`;
//! the property itself lives in the library so it can be replayed without
//! libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollway_fuzz::check_frame_decode(data));
