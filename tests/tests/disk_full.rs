//! The disk fills up under a running `learner serve` (real learner and actor processes on loopback, CartPole-v1,
//! the run directory on a small tmpfs): training goes on, failed checkpoints are counted and logged, every
//! checkpoint left on the disk is complete and loads, no temporary file is left; a shutdown on the full disk exits
//! non-zero naming the failed final checkpoint; once there is space again, `--resume` continues from the newest
//! checkpoint, losing nothing that was checkpointed.
//!
//! Needs root (it mounts a tmpfs; CI runs as root): without it the test fails and says so, it never skips.

use learner::config::TrainConfig;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tests::procs::{Learner, checkpoints, free_port, samples, scrape, start_actor, total};

/// Size of the tmpfs: room for the run directory with a few checkpoints (about 110 KB each for CartPole).
const TMPFS_BYTES: u64 = 2 << 20;

/// How long the disk stays full while training runs.
const FULL_FOR: Duration = Duration::from_secs(4);

/// A tmpfs mounted for the test; unmounted (lazily if still busy) when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, bytes: u64) -> Self {
        std::fs::create_dir_all(dir).expect("create the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount(8): {e}; this test needs root and mount(8)"));
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} ({}): {}; this test needs root (CI runs it as root) and is not skipped",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self { dir: dir.to_path_buf() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Appends to `filler` until the filesystem is full; returns the bytes added (0 when it already was full).
fn fill(filler: &mut std::fs::File) -> u64 {
    let chunk = [0xa5u8; 4096];
    let mut added = 0;
    loop {
        match filler.write(&chunk) {
            Ok(0) => return added,
            Ok(n) => added += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return added,
            Err(e) => panic!("writing the filler failed with {e}, not with ENOSPC"),
        }
    }
}

/// Every file below `dir` whose name ends in `.tmp`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(temp_files(&path));
        } else if path.extension().is_some_and(|e| e == "tmp") {
            found.push(path);
        }
    }
    found
}

/// Loads every checkpoint in `dir` with `cfg` (each must), returning their versions.
fn load_all(dir: &Path, cfg: &TrainConfig) -> Vec<u64> {
    checkpoints(dir)
        .into_iter()
        .map(|(version, path)| {
            let trainer = learner::run::checkpoint::load(&path, cfg)
                .unwrap_or_else(|e| panic!("checkpoint {} does not load: {e}", path.display()));
            assert_eq!(trainer.version(), version, "{} holds another version", path.display());
            version
        })
        .collect()
}

/// The TensorBoard event files in `run_dir` and how many records each holds; panics unless every file is whole
/// records (length and data CRCs right, nothing cut off), as TensorBoard needs to read on past a full disk.
fn event_records(run_dir: &Path) -> Vec<(String, usize)> {
    use learner::run::tensorboard::masked_crc32c;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(run_dir).expect("read the run directory").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.contains("tfevents") {
            continue;
        }
        let bytes = std::fs::read(entry.path()).expect("read an event file");
        let (mut rest, mut records) = (bytes.as_slice(), 0);
        while !rest.is_empty() {
            let whole = |n: usize| assert!(rest.len() >= n, "{name}: a record cut off after {records} records");
            whole(12);
            let (len, rest_after) = rest.split_at(8);
            let crc = u32::from_le_bytes(rest_after[..4].try_into().expect("4 bytes"));
            assert_eq!(crc, masked_crc32c(len), "{name}: record {records}: length CRC");
            let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
            whole(16 + len);
            let data = &rest[12..12 + len];
            let crc = u32::from_le_bytes(rest[12 + len..16 + len].try_into().expect("4 bytes"));
            assert_eq!(crc, masked_crc32c(data), "{name}: record {records}: data CRC");
            rest = &rest[16 + len..];
            records += 1;
        }
        files.push((name, records));
    }
    files.sort();
    files
}

/// The `version=` of the learner's `resumed` log line.
fn resumed_version(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("resumed"))?;
    line.split_whitespace().find_map(|f| f.strip_prefix("version="))?.parse().ok()
}

/// Builds the binaries if they are out of date (every process start would); returns how long that took, which
/// the test's time bound leaves out.
fn build_binaries() -> Duration {
    let started = Instant::now();
    tests::bin_path("learner");
    tests::bin_path("actor");
    started.elapsed()
}

#[test]
fn disk_full_keeps_training_and_every_checkpoint_intact() {
    build_binaries();
    let started = Instant::now();
    let mut building = Duration::ZERO;
    let dir = tempfile::tempdir().expect("temp dir");
    let fs = Tmpfs::mount(&dir.path().join("fs"), TMPFS_BYTES);
    let runs = fs.dir.join("runs");
    let port = free_port();
    let overrides = ["server.checkpoint_every=1", "total_steps=100000000", "target_return=1000000.0"];
    let owned: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let cfg = TrainConfig::load(Some(&tests::workspace_root().join("configs/cartpole.toml")), &owned)
        .expect("the test's config");
    let timeout = Duration::from_secs(20);

    let mut learner = Learner::start(dir.path(), "learner-1", &runs, "full", port, &overrides, false);
    let ck_dir = learner.run_dir.join("checkpoints");
    let mut actor = start_actor(dir.path(), "actor-0", port, &[]);
    learner.proc.wait_for("3 checkpoints", timeout, |_| (checkpoints(&ck_dir).len() >= 3).then_some(()));
    let (_, first) = checkpoints(&ck_dir).into_iter().next().expect("a checkpoint");
    let checkpoint_bytes = std::fs::metadata(&first).map(|m| m.len()).unwrap_or(0);

    // Fill the disk, and keep it full while training goes on: failed writes free what they took, and the filler
    // takes it again.
    let filler_path = fs.dir.join("filler");
    let mut filler = std::fs::File::create(&filler_path).expect("create the filler");
    let newest_before = checkpoints(&ck_dir).last().map_or(0, |(v, _)| *v);
    let filled = fill(&mut filler);
    let version_full = total(&learner.metrics_now(), "proxima_learner_policy_version");
    let full_since = Instant::now();
    while full_since.elapsed() < FULL_FOR {
        fill(&mut filler);
        if let Some(status) = learner.proc.exited() {
            panic!("the learner exited ({status}) on the full disk\n{}", learner.proc.tail(40));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = learner.metrics_now();
    let version_later = total(&metrics, "proxima_learner_policy_version");
    let failures = total(&metrics, "proxima_learner_checkpoint_failures_total");
    let row_failures = total(&metrics, "proxima_learner_progress_write_failures_total");
    let event_failures = total(&metrics, "proxima_learner_tensorboard_write_failures_total");
    assert!(event_failures > 0.0, "no TensorBoard write failure counted on the full disk");
    assert!(
        version_later > version_full,
        "training stopped on the full disk: policy v{version_full} -> v{version_later}\n{}",
        learner.proc.tail(40)
    );
    assert!(failures > 0.0, "no checkpoint failure counted on the full disk: {:?}", {
        samples(&metrics, "proxima_learner_checkpoint_failures_total")
    });
    let log = learner.proc.log();
    assert!(
        log.contains("periodic checkpoint: write failed") && log.contains("No space left on device"),
        "the checkpoint failure is not in the log\n{}",
        learner.proc.tail(40)
    );
    let logged = log.lines().filter(|l| l.contains("periodic checkpoint: write failed")).count();
    let errors: Vec<String> = log.lines().filter(|l| l.contains(" ERROR ")).map(str::to_string).collect();

    // Stop training (no actor, no updates, no writes) and look at what is on the still full disk.
    actor.kill();
    let (metrics_port, mut last) = (learner.metrics_port, version_later);
    learner.proc.wait_for("the policy version to settle", timeout, |_| {
        std::thread::sleep(Duration::from_millis(400));
        let now = scrape(metrics_port).map(|m| total(&m, "proxima_learner_policy_version"));
        let settled = now == Some(last);
        last = now.unwrap_or(last);
        settled.then_some(())
    });
    assert_eq!(fill(&mut filler), 0, "the disk was not full until the end");
    assert!(temp_files(&runs).is_empty(), "temporary files left: {:?}", temp_files(&runs));
    let intact = load_all(&ck_dir, &cfg);
    let newest_intact = *intact.last().expect("checkpoints survive the full disk");
    assert!(newest_intact >= newest_before, "checkpoint v{newest_before} vanished: {intact:?}");
    let rows = learner.progress();
    assert!(rows.windows(2).all(|w| w[0].policy_version < w[1].policy_version), "progress.csv rows out of order");

    // Shutting down on the full disk: the final checkpoint fails, which the exit status and the log say.
    let status_full = learner.terminate(timeout);
    assert!(!status_full.success(), "the learner exited successfully though its final checkpoint failed");
    let log = learner.proc.log();
    assert!(log.contains("final checkpoint failed"), "no final checkpoint error\n{}", learner.proc.tail(20));
    let exit_message = log.lines().find(|l| l.starts_with("Error:")).unwrap_or_default().to_string();
    assert!(temp_files(&runs).is_empty(), "temporary files left: {:?}", temp_files(&runs));
    assert_eq!(load_all(&ck_dir, &cfg).last(), Some(&newest_intact), "the failed final checkpoint changed them");

    // Space again: resume from the newest checkpoint, train on, and stop cleanly with a final checkpoint.
    drop(filler);
    std::fs::remove_file(&filler_path).expect("remove the filler");
    building += build_binaries();
    let mut learner = Learner::start(dir.path(), "learner-2", &runs, "full", port, &overrides, true);
    let resumed = learner.proc.wait_for("a resume", timeout, |p| resumed_version(&p.log()));
    assert_eq!(resumed, newest_intact, "did not resume from the newest checkpoint\n{}", learner.proc.tail(20));
    assert!(!learner.proc.log().contains("refused"), "a checkpoint was refused\n{}", learner.proc.tail(20));
    building += build_binaries();
    let _actor = start_actor(dir.path(), "actor-1", port, &[]);
    let run_dir = learner.run_dir.clone();
    let trained = learner.proc.wait_for("progress after the resume", timeout, |_| {
        tests::read_progress(&run_dir).last().map(|r| r.policy_version).filter(|v| *v > resumed)
    });
    let status = learner.terminate(timeout);
    assert!(status.success(), "the resumed learner exited with {status}\n{}", learner.proc.tail(20));
    let final_versions = load_all(&ck_dir, &cfg);
    let final_version = *final_versions.last().expect("checkpoints");
    assert!(final_version >= trained, "final checkpoint v{final_version} is older than trained v{trained}");
    assert!(temp_files(&runs).is_empty(), "temporary files left: {:?}", temp_files(&runs));
    let events = event_records(&run_dir);
    assert_eq!(events.len(), 2, "one TensorBoard event file per learner process: {events:?}");

    let elapsed = started.elapsed().saturating_sub(building);
    println!(
        "[disk full] tmpfs {TMPFS_BYTES} B; checkpoint {checkpoint_bytes} B; filler took {filled} B; newest \
         checkpoint before the disk filled v{newest_before}; on the full disk for {FULL_FOR:?} training went \
         v{version_full} -> v{version_later}, {failures} checkpoint failures counted ({logged} logged), \
         {row_failures} progress rows and {event_failures} TensorBoard events not written (event files, whole \
         records: {events:?}); intact checkpoints {intact:?}; resumed from v{resumed}, trained \
         to v{trained}, final checkpoint v{final_version}; {:.1} s (and {:.1} s rebuilding binaries)",
        elapsed.as_secs_f64(),
        building.as_secs_f64()
    );
    println!("[disk full] errors logged on the full disk:\n{}", errors.join("\n"));
    println!("[disk full] the learner's last line after SIGTERM on the full disk ({status_full}): {exit_message}");
}
