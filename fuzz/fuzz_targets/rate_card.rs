//! Rate card files (src/cli/client/rates_file.rs) through the server's checks.
//! The invariants are in `allot::fuzzing::rate_card` (src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| allot::fuzzing::rate_card(data));
