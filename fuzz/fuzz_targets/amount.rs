//! The decimal grammar: amounts, quantities, unit prices (src/domain/amount.rs).
//! The invariants are in `allot::fuzzing::amount` (src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| allot::fuzzing::amount(data));
