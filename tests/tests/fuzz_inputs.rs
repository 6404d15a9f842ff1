//! The fuzz harness of `tests::fuzz` on stable Rust, for CI: thousands of seeded random inputs per target
//! (random bytes, byte-level mutations of valid inputs, and structured mutations: extreme floats in tensor
//! fields, wrong shapes and ids, mismatching registrations, corrupted checkpoint headers, state and data). An
//! input that breaks an invariant is saved under `<target tmp>/fuzz_inputs/` (replay it with `cargo fuzz run
//! <target> <file>` from `fuzz/`); the test fails after reporting all of them. Counts per outcome are printed.
//!
//! `cargo test --release -p tests --test fuzz_inputs -- --ignored write_seed_corpus` writes the seed corpus of
//! the cargo-fuzz targets into `fuzz/corpus/<target>/`.

use common::wire::pb;
use prost::Message;
use rand::seq::{IndexedMutRandom, IndexedRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use tests::fuzz::{ENVS, Harness, OWN_INCARNATION, Outcome, SYMBOLIC_ACTORS, Target};

/// f32 values at and beyond every bound and encoding edge.
const EXTREME_F32: [f32; 24] = [
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    3e38,
    -3e38,
    f32::MAX,
    f32::MIN,
    1e30,
    -1e30,
    1e-40,
    -1e-45,
    f32::MIN_POSITIVE,
    -0.0,
    1e4,
    -1e4,
    1e6,
    -1e6,
    1.000_000_1e6,
    1e9,
    1.000_000_1e9,
    -30.0,
    -30.000_002,
    60.0,
    60.000_004,
];

/// f64 values for episode returns.
const EXTREME_F64: [f64; 8] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, -1e300, 1e6, 2e6, -0.0];

/// u32 values for counts and sizes.
const EXTREME_U32: [u32; 8] = [0, 1, 2, 3, 65_536, 65_537, u32::MAX / 4, u32::MAX];

thread_local! {
    /// Set while the harness runs an input: its panics are reported by the test, not by the panic hook.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Installs (once) a panic hook that stays silent for the harness's own panics.
fn quiet_harness_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.get() {
                default(info);
            }
        }));
    });
}

/// An invariant violation: the strategy that produced the input, the panic message, the input.
struct Violation {
    strategy: &'static str,
    message: String,
    input: Vec<u8>,
}

/// A generator of inputs from the seed inputs: the strategy's name and the input.
type Generate = fn(&mut ChaCha8Rng, &[Vec<u8>]) -> (&'static str, Vec<u8>);

/// Runs `count` inputs of `target` from `generate` (plus the seeds, which must all be taken), prints the outcome
/// counts per strategy, saves and reports every violating input, and fails if there is one.
fn fuzz(target: Target, count: usize, seed: u64, generate: Generate) {
    quiet_harness_panics();
    let harness = Harness::new().expect("fuzz harness");
    let seeds: Vec<Vec<u8>> = harness.seeds(target).expect("seed inputs").into_iter().map(|s| s.bytes).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let inputs = seeds.iter().map(|s| ("seed", s.clone())).chain((0..count).map(|_| generate(&mut rng, &seeds)));
    let mut counts: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    let mut violations = Vec::new();
    let started = std::time::Instant::now();
    for (strategy, input) in inputs {
        QUIET.set(true);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| harness.run(target, &input)));
        QUIET.set(false);
        let outcome = match result {
            Ok(outcome) => {
                let expected_refusal = matches!(strategy, "random" | "truncate" | "data-flip");
                if target == Target::Checkpoint && expected_refusal && outcome == Outcome::Loaded {
                    let message = "a corrupt checkpoint loaded".to_string();
                    violations.push(Violation { strategy, message, input });
                }
                outcome.to_string()
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "non-string panic".into());
                violations.push(Violation { strategy, message, input });
                "VIOLATION".into()
            }
        };
        *counts.entry(strategy).or_default().entry(outcome).or_default() += 1;
    }
    println!("{}: {} inputs in {:.1?}", target.name(), seeds.len() + count, started.elapsed());
    for (strategy, outcomes) in &counts {
        println!("  {strategy}: {}", outcomes.values().sum::<usize>());
        for (outcome, n) in outcomes {
            println!("    {n:5}  {outcome}");
        }
    }
    let seeds_taken = counts["seed"].keys().all(|o| matches!(o.as_str(), "accepted" | "registered" | "loaded"));
    assert!(seeds_taken, "{}: a valid seed input was not taken: {:?}", target.name(), counts["seed"]);
    report(target, &violations);
}

/// Saves every violating input and fails the test with a summary of them.
fn report(target: Target, violations: &[Violation]) {
    if violations.is_empty() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz_inputs");
    std::fs::create_dir_all(&dir).expect("directory for violating inputs");
    let mut summary = BTreeMap::<&str, (usize, String)>::new();
    for (i, v) in violations.iter().enumerate() {
        let path = dir.join(format!("{}-{i}.bin", target.name()));
        std::fs::write(&path, &v.input).expect("save violating input");
        let first =
            format!("{} (input {}, {} bytes, strategy {})", v.message, path.display(), v.input.len(), v.strategy);
        summary.entry(&v.message).or_insert((0, first)).0 += 1;
    }
    for (n, first) in summary.values() {
        println!("VIOLATION x{n}: {first}");
    }
    panic!("{}: {} inputs broke an invariant ({} distinct messages)", target.name(), violations.len(), summary.len());
}

// ---- byte-level strategies shared by every target ------------------------------------------------------------

/// Random bytes, a byte-level mutation of a seed, or (`None`) a structured mutation of the target.
fn byte_level(rng: &mut ChaCha8Rng, seeds: &[Vec<u8>]) -> Option<(&'static str, Vec<u8>)> {
    let seed = seeds.choose(rng).expect("seeds").clone();
    Some(match rng.random_range(0..10) {
        0 => {
            let mut bytes = vec![0; rng.random_range(0..512)];
            rng.fill(&mut bytes[..]);
            ("random", bytes)
        }
        1 => {
            let mut bytes = seed;
            for _ in 0..rng.random_range(1..=8) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
            ("bitflip", bytes)
        }
        2 => {
            let cut = rng.random_range(0..seed.len());
            ("truncate", seed[..cut].to_vec())
        }
        3 => {
            let other = seeds.choose(rng).expect("seeds");
            let (a, b) = (rng.random_range(0..=seed.len()), rng.random_range(0..=other.len()));
            ("splice", [&seed[..a], &other[b..]].concat())
        }
        4 => {
            let mut bytes = seed;
            let at = rng.random_range(0..=bytes.len());
            let mut junk = vec![0; rng.random_range(1..64)];
            rng.fill(&mut junk[..]);
            if rng.random_bool(0.5) {
                bytes.splice(at..at, junk);
            } else {
                let end = (at + junk.len()).min(bytes.len());
                bytes.splice(at..end, junk);
            }
            ("overwrite", bytes)
        }
        _ => return None,
    })
}

// ---- Rollout -------------------------------------------------------------------------------------------------

/// Writes an extreme f32 over 1 to 3 values of a random tensor field.
fn extreme_tensor(rng: &mut ChaCha8Rng, m: &mut pb::Rollout) {
    let mut fields = [
        &mut m.obs,
        &mut m.actions,
        &mut m.log_probs,
        &mut m.values,
        &mut m.rewards,
        &mut m.final_obs,
        &mut m.next_obs,
    ];
    let field = fields.choose_mut(rng).expect("fields");
    let mut bytes = field.to_vec();
    if bytes.len() < 4 {
        return;
    }
    for _ in 0..rng.random_range(1..=3) {
        let i = rng.random_range(0..bytes.len() / 4) * 4;
        bytes[i..i + 4].copy_from_slice(&EXTREME_F32.choose(rng).expect("values").to_le_bytes());
    }
    **field = bytes.into();
}

/// Changes a count, id, flag or episode record.
fn bad_shape(rng: &mut ChaCha8Rng, m: &mut pb::Rollout) {
    let pick = |rng: &mut ChaCha8Rng| *EXTREME_U32.choose(rng).expect("values");
    match rng.random_range(0..9) {
        0 => m.num_steps = pick(rng),
        1 => m.num_envs = pick(rng),
        2 => m.policy_version = [0, 3, 4, 5, 6, u64::MAX][rng.random_range(0..6)],
        3 => m.actor_id = [SYMBOLIC_ACTORS, u64::MAX, 1 << 40][rng.random_range(0..3)],
        4 => m.incarnation = [0, OWN_INCARNATION, 2, u64::MAX][rng.random_range(0..4)],
        5 | 6 => {
            let flags = if rng.random_bool(0.5) { &mut m.terminated } else { &mut m.truncated };
            let mut bytes = flags.to_vec();
            if let Some(b) = bytes.choose_mut(rng) {
                *b = [0, 1, 2, 255][rng.random_range(0..4)];
            }
            *flags = bytes.into();
        }
        _ => {
            let episode = pb::Episode {
                env_index: pick(rng),
                episode_return: *EXTREME_F64.choose(rng).expect("values"),
                length: pick(rng),
            };
            match m.episodes.choose_mut(rng) {
                Some(e) if rng.random_bool(0.5) => *e = episode,
                _ => m.episodes.push(episode),
            }
        }
    }
}

fn rollout_input(rng: &mut ChaCha8Rng, seeds: &[Vec<u8>]) -> (&'static str, Vec<u8>) {
    if let Some(input) = byte_level(rng, seeds) {
        return input;
    }
    let seed = seeds.choose(rng).expect("seeds");
    let mut m = pb::Rollout::decode(&seed[1..]).expect("seeds decode");
    let strategy = if rng.random_bool(0.6) {
        extreme_tensor(rng, &mut m);
        "extreme-float"
    } else {
        bad_shape(rng, &mut m);
        "bad-shape"
    };
    (strategy, [&seed[..1], &m.encode_to_vec()].concat())
}

#[test]
fn rollout_inputs() {
    fuzz(Target::Rollout, 20_000, 1, rollout_input);
}

// ---- RegisterRequest -----------------------------------------------------------------------------------------

fn register_input(rng: &mut ChaCha8Rng, seeds: &[Vec<u8>]) -> (&'static str, Vec<u8>) {
    if let Some(input) = byte_level(rng, seeds) {
        return input;
    }
    let seed = seeds.choose(rng).expect("seeds");
    let mut r = pb::RegisterRequest::decode(&seed[1..]).expect("seeds decode");
    let other = pb::RegisterRequest::decode(&seeds.choose(rng).expect("seeds")[1..]).expect("seeds decode");
    match rng.random_range(0..7) {
        0 => r.actor_name = ["", "é", "x"].choose(rng).expect("names").repeat(rng.random_range(250..260)),
        1 => r.env_id = ["", "Acrobot-v1", "cartpole-v1", ENVS[0], ENVS[1]].choose(rng).expect("ids").to_string(),
        2 => r.protocol_version = [-1, 0, 2, i32::MAX][rng.random_range(0..4)],
        3 => r.num_envs = *EXTREME_U32.choose(rng).expect("values"),
        4 => {
            let space = if rng.random_bool(0.5) { &mut r.observation_space } else { &mut r.action_space };
            *space = [None, other.observation_space, other.action_space].choose(rng).expect("spaces").clone();
        }
        _ => {
            let space = if rng.random_bool(0.5) { &mut r.observation_space } else { &mut r.action_space };
            match space.as_mut().and_then(|s| s.kind.as_mut()) {
                Some(pb::space::Kind::Discrete(d)) => d.n = *EXTREME_U32.choose(rng).expect("values"),
                Some(pb::space::Kind::MultiDiscrete(m)) => match m.nvec.choose_mut(rng) {
                    Some(n) => *n = *EXTREME_U32.choose(rng).expect("values"),
                    None => m.nvec.push(0),
                },
                Some(pb::space::Kind::Box(b)) => {
                    let bounds = if rng.random_bool(0.5) { &mut b.low } else { &mut b.high };
                    match bounds.choose_mut(rng) {
                        Some(x) if rng.random_bool(0.8) => *x = *EXTREME_F32.choose(rng).expect("values"),
                        _ => bounds.push(0.0),
                    }
                }
                None => {}
            }
        }
    }
    ("fields", [&seed[..1], &r.encode_to_vec()].concat())
}

#[test]
fn register_inputs() {
    fuzz(Target::Register, 20_000, 2, register_input);
}

// ---- checkpoint ----------------------------------------------------------------------------------------------

/// A safetensors file split into its JSON header and its data section.
fn split_checkpoint(bytes: &[u8]) -> (Value, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).expect("header JSON"), &bytes[8 + n..])
}

fn join_checkpoint(header: &Value, data: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(header).expect("header JSON");
    [&(header.len() as u64).to_le_bytes()[..], &header, data].concat()
}

/// CRC-32 (IEEE), as the checkpoint's `crc32` metadata holds it for the data section.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Replaces a random node of `v` (or removes an object key) with a value that is wrong in an interesting way.
fn mutate_json(rng: &mut ChaCha8Rng, v: &mut Value) {
    let descend = rng.random_bool(0.75);
    match v {
        Value::Object(map) if descend && !map.is_empty() => {
            let key = map.keys().nth(rng.random_range(0..map.len())).expect("key").clone();
            if rng.random_bool(0.1) {
                map.remove(&key);
            } else if let Some(child) = map.get_mut(&key) {
                mutate_json(rng, child);
            }
        }
        Value::Array(items) if descend && !items.is_empty() => {
            let i = rng.random_range(0..items.len());
            mutate_json(rng, &mut items[i]);
        }
        _ => {
            let replacements = [
                Value::Null,
                json!(true),
                json!(0),
                json!(-1),
                json!(1),
                json!(u64::MAX),
                json!(i64::MIN),
                json!(1e308),
                json!(-1.5),
                json!(""),
                json!("x"),
                json!("F64"),
                json!("I64"),
                json!("BF16"),
                json!([]),
                json!([0]),
                json!([u32::MAX, u32::MAX]),
                json!({}),
                json!("NaN"),
                json!("inf"),
            ];
            *v = replacements.choose(rng).expect("replacements").clone();
        }
    }
}

fn checkpoint_input(rng: &mut ChaCha8Rng, seeds: &[Vec<u8>]) -> (&'static str, Vec<u8>) {
    if let Some(input) = byte_level(rng, seeds) {
        return input;
    }
    let seed = seeds.choose(rng).expect("seeds");
    let (mut header, data) = split_checkpoint(seed);
    let mut data = data.to_vec();
    let strategy = match rng.random_range(0..4) {
        0 => {
            mutate_json(rng, &mut header);
            "header"
        }
        1 => {
            let state = &mut header["__metadata__"]["state"];
            let mut parsed: Value = serde_json::from_str(state.as_str().expect("state string")).expect("state JSON");
            mutate_json(rng, &mut parsed);
            *state = Value::String(parsed.to_string());
            "state"
        }
        2 => {
            for _ in 0..rng.random_range(1..=3) {
                let i = rng.random_range(0..data.len() / 4) * 4;
                data[i..i + 4].copy_from_slice(&EXTREME_F32.choose(rng).expect("values").to_le_bytes());
            }
            header["__metadata__"]["crc32"] = Value::String(crc32(&data).to_string());
            "data+crc"
        }
        _ => {
            let i = rng.random_range(0..data.len());
            data[i] ^= 1 << rng.random_range(0..8);
            "data-flip"
        }
    };
    (strategy, join_checkpoint(&header, &data))
}

#[test]
fn checkpoint_inputs() {
    fuzz(Target::Checkpoint, 2000, 3, checkpoint_input);
}

/// Writes the seed corpus of the cargo-fuzz targets into `fuzz/corpus/<target>/`.
#[test]
#[ignore = "writes files into fuzz/corpus; run on purpose before fuzzing"]
fn write_seed_corpus() {
    let harness = Harness::new().expect("fuzz harness");
    for target in Target::ALL {
        let dir = tests::workspace_root().join("fuzz/corpus").join(target.name());
        std::fs::create_dir_all(&dir).expect("corpus directory");
        for seed in harness.seeds(target).expect("seed inputs") {
            std::fs::write(dir.join(&seed.name), &seed.bytes).expect("write seed");
            println!("{}/{}: {} bytes", target.name(), seed.name, seed.bytes.len());
        }
    }
}
