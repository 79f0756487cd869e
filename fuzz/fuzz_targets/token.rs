//! Bearer token validation (src/auth/verifier.rs): HS256 secret and JWKS keys.
//! The invariants are in `allot::fuzzing::token` (src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| allot::fuzzing::token(data));
