//! Fuzz target: bytes in a file -> `learner::run::checkpoint::load` (harness and invariants: `tests::fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tests::fuzz::fuzz(tests::fuzz::Target::Checkpoint, data));
