//! Helpers shared by the workspace's integration tests: where the workspace, its binaries and the reference
//! Python live.

pub mod compose;
pub mod fuzz;
pub mod procs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Serialises the `cargo build` calls of [`bin_path`] within one test process, and names the binaries it has
/// already brought up to date: an up-to-date build leaves a binary's mtime alone, so without this every later
/// call would run cargo again (and wait on its lock while anything else builds).
static BUILD: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The Python interpreter for reference scripts: `$PROXIMA_PYTHON`, else `<root>/.venv/bin/python` if it exists,
/// else `python3` from `PATH`.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("PROXIMA_PYTHON") {
        return python.into();
    }
    let venv = workspace_root().join(".venv/bin/python");
    if venv.exists() { venv } else { PathBuf::from("python3") }
}

/// The workspace binary `name` (`learner`, `actor` or `proxima-bench`) of the profile the running test was built with.
///
/// Cargo builds other packages' binaries only for their own tests, so this runs `$CARGO build -p <package> --bin
/// <name>` for that profile (a quick no-op when up to date) whenever the binary is missing or older than the
/// running test executable, which is rebuilt whenever the libraries it shares with the binary change.
pub fn bin_path(name: &str) -> PathBuf {
    built(Target::Bin, package_of(name), name)
}

/// The example program `name` of `package` (for instance the actor's `grid_world`), built like [`bin_path`].
pub fn example_path(package: &str, name: &str) -> PathBuf {
    built(Target::Example, package, name)
}

/// What kind of target [`built`] brings up to date.
#[derive(Clone, Copy)]
enum Target {
    Bin,
    Example,
}

fn built(target: Target, package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running test executable");
    let profile_dir =
        exe.parent().and_then(Path::parent).expect("test executables live in <target>/<profile>/deps").to_path_buf();
    let (flag, dir) = match target {
        Target::Bin => ("--bin", profile_dir.clone()),
        Target::Example => ("--example", profile_dir.join("examples")),
    };
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let key = format!("{package}/{flag}/{name}");
    let mut built = BUILD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !built.contains(&key) && is_older(&bin, &exe) {
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(profile) => profile,
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(&cargo);
        // `cargo test` runs this test with the `tests` package's CARGO_MANIFEST_DIR, CARGO_PKG_* and friends in
        // its environment. Build scripts that declare `rerun-if-env-changed` on them (ring does) would be rerun by
        // this nested build, and again by the next outer cargo command: ring, rustls, tonic and the workspace
        // crates rebuilt every time. The nested build gets the environment of a plain `cargo build`.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            let per_package = k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_BIN_")
                || matches!(
                    k.as_ref(),
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_MANIFEST_LINKS"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "CARGO_RUSTC_CURRENT_DIR"
                        | "OUT_DIR"
                );
            if per_package {
                build.env_remove(&key);
            }
        }
        // A binary is built with the workspace's feature set, the one `cargo test --workspace` compiled the
        // libraries with: `-p <package>` resolves features for that package alone, and for `proxima-bench` that
        // differs (no `tracing-subscriber` to turn on `log/std`), which recompiled `common`, `learner` and their
        // dependencies (2 min 49 s of CI) for one binary. Examples need their package's dev-dependencies.
        let select: [&str; 2] = match target {
            Target::Bin => ["--workspace", "--locked"],
            Target::Example => ["-p", package],
        };
        let status = build
            .current_dir(workspace_root())
            .args(["build", "--profile", profile])
            .args(select)
            .args([flag, name])
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build {name}: {e}"));
        assert!(status.success(), "cargo build of {name} failed ({status})");
        built.push(key);
    }
    bin
}

/// Writes `dir/<name>.toml`: a run of `total_steps` steps on the env `id` that the learner does not build in,
/// described by its spaces, 8 envs x 32 steps per rollout, learning rate 1e-3; returns its path.
pub fn spec_config(dir: &Path, name: &str, id: &str, spaces: (&str, &str), total_steps: u64) -> PathBuf {
    let (observation, action) = spaces;
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "seed = 1\ntotal_steps = {total_steps}\n[env]\nid = \"{id}\"\nobservation_space = \"{observation}\"\n\
         action_space = \"{action}\"\n[actors]\nnum_envs = 8\nrollout_steps = 32\n[ppo]\nlearning_rate = 1e-3\n"
    );
    std::fs::write(&path, text).expect("write the config");
    path
}

/// The workspace package that builds binary `name`.
fn package_of(name: &str) -> &'static str {
    match name {
        "proxima-bench" => "proxima-bench",
        _ => "proxima-cli",
    }
}

/// True when `path` is missing or was modified before `reference`.
fn is_older(path: &Path, reference: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(path), modified(reference)) {
        (Some(t), Some(reference)) => t < reference,
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// One row of a run's `progress.csv`: the columns the end-to-end tests look at.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressRow {
    /// Env steps trained on so far.
    pub env_steps: u64,
    /// Seconds since the (current) learner process started training.
    pub wall_seconds: f64,
    /// Policy version after this update.
    pub policy_version: u64,
    /// Episodes finished so far.
    pub episodes: u64,
    /// Mean return of the last 100 episodes (none before the first episode ends).
    pub mean_return: Option<f64>,
    /// Rollouts the trainer dropped for policy lag in this update.
    pub stale_rollouts: u64,
}

/// The complete rows of `run_dir/progress.csv`, oldest first; a last line still being written is skipped, and a
/// missing file has no rows. Columns are found by their header names.
pub fn read_progress(run_dir: &Path) -> Vec<ProgressRow> {
    let Ok(text) = std::fs::read_to_string(run_dir.join("progress.csv")) else { return Vec::new() };
    let mut lines = text.split_inclusive('\n').filter(|l| l.ends_with('\n')).map(str::trim_end);
    let Some(header) = lines.next() else { return Vec::new() };
    let names: Vec<&str> = header.split(',').collect();
    let col = |name: &str| {
        names.iter().position(|n| *n == name).unwrap_or_else(|| panic!("progress.csv has no column {name}: {header}"))
    };
    let (steps, wall, version, episodes, ret, stale) = (
        col("env_steps"),
        col("wall_seconds"),
        col("policy_version"),
        col("episodes"),
        col("mean_return"),
        col("stale_rollouts"),
    );
    lines
        .filter(|l| !l.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let get = |i: usize| *fields.get(i).unwrap_or_else(|| panic!("short progress.csv row: {line}"));
            let num = |i: usize| get(i).parse::<f64>().unwrap_or_else(|e| panic!("bad number in {line:?}: {e}"));
            let int = |i: usize| get(i).parse::<u64>().unwrap_or_else(|e| panic!("bad integer in {line:?}: {e}"));
            ProgressRow {
                env_steps: int(steps),
                wall_seconds: num(wall),
                policy_version: int(version),
                episodes: int(episodes),
                mean_return: if get(ret).is_empty() { None } else { Some(num(ret)) },
                stale_rollouts: int(stale),
            }
        })
        .collect()
}
