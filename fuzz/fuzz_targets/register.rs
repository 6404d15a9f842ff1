//! Fuzz target: bytes -> `pb::RegisterRequest` -> the Register handler (harness and invariants: `tests::fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tests::fuzz::fuzz(tests::fuzz::Target::Register, data));
