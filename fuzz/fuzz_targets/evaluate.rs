//! The ledger's batch evaluator (src/store/ledger/eval.rs).
//! The invariants are in `allot::fuzzing::evaluate` (src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| allot::fuzzing::evaluate(data));
