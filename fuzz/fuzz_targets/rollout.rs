//! Fuzz target: bytes -> `pb::Rollout` -> the SubmitRollout handler (harness and invariants: `tests::fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tests::fuzz::fuzz(tests::fuzz::Target::Rollout, data));
