//! The user-facing images, built for real: deploy/Dockerfile's `learner` and `actor` targets, built by
//! `compose build` on deploy/docker-compose.yml (with whichever builder the machine's compose uses; on the test
//! machines the classic one: Docker without buildx and docker-compose v1), on local stand-ins for `rust:1-bookworm`
//! and `debian:bookworm-slim` passed through the Dockerfile's build args (deploy/test/standin-bases.sh: Debian
//! bookworm from debootstrap, the host's Rust toolchain, the crates of Cargo.lock vendored; the images cannot be
//! pulled here). Then they run as the README's compose deployment runs them: the learner becomes healthy (the
//! image's HEALTHCHECK, `learner health`), two actors train it, both run as uid 10001 with the shipped configs; on
//! `compose stop` (SIGTERM) the learner writes a final checkpoint and exits 0, and `up` again resumes from the
//! volume with the actors reconnecting.
//!
//! Needs root (debootstrap, chroot), debootstrap, Debian's mirror (the runtime stage runs apt-get), Docker and
//! compose. Bounded in time; the compose project is taken down with its volumes when the guard drops.

use std::time::{Duration, Instant};

use tests::compose::{
    Learner, Project, clean_command, deploy_dir, last_checkpoint_version, progress, run_bounded, secs,
};
use tests::procs::last_lines;

/// The stand-in base images deploy/test/standin-bases.sh builds.
const RUST_IMAGE: &str = "proxima-standin/rust:1-bookworm";
const RUNTIME_IMAGE: &str = "proxima-standin/debian:bookworm-slim";

#[test]
fn the_real_dockerfile_builds_on_stand_in_bases_and_its_images_train() {
    let started = Instant::now();
    let step = progress(started);
    // docker-compose v1 and its classic builder (Docker without buildx), what Debian's packages give.
    let mut project = Project::new("real", &[]).with_compose("v1");
    // proxima-learner:real and proxima-actor:real, beside the :test images of the other container tests.
    project.env.push(("PROXIMA_IMAGE_TAG".into(), "real".into()));
    project.require_docker();

    step("stand-in base images (deploy/test/standin-bases.sh)");
    let mut bases = clean_command(deploy_dir().join("test/standin-bases.sh"));
    bases.current_dir(tests::workspace_root());
    let built = run_bounded(bases, Duration::from_secs(900), project.scratch.path());
    assert!(built.ok, "standin-bases.sh failed\nstdout:\n{}\nstderr:\n{}", built.stdout, built.stderr);
    print!("{}", built.stdout);

    step("compose build learner actor (deploy/Dockerfile on the stand-ins)");
    let build_at = Instant::now();
    let rust = format!("RUST_IMAGE={RUST_IMAGE}");
    let runtime = format!("RUNTIME_IMAGE={RUNTIME_IMAGE}");
    let args = ["build", "--build-arg", &rust, "--build-arg", &runtime, "learner", "actor"];
    project.compose(&args, Duration::from_secs(1800));
    step(&format!("images built in {}", secs(build_at.elapsed())));
    for image in ["proxima-learner:real", "proxima-actor:real"] {
        let config = project.docker(
            &["image", "inspect", "-f", "{{.Config.User}} {{.Size}} {{json .Config.Entrypoint}}", image],
            Duration::from_secs(30),
        );
        println!("{image}: user, size, entrypoint: {}", config.trim());
        assert!(config.starts_with("10001:10001 "), "{image} does not run as the proxima user: {config}");
    }

    step("compose up: learner and 2 actors");
    let up_at = Instant::now();
    project.compose(&["up", "-d", "--no-build", "learner", "actor"], Duration::from_secs(180));
    let mut learner = Learner { project: &project, id: project.learner(), metrics: None };
    learner.wait_connected(2, Duration::from_secs(120));
    let first = learner.wait_version_above(10, Duration::from_secs(120));
    step(&format!("2 actors connected, policy at v{first}, {} after `up`", secs(up_at.elapsed())));
    let health = project.docker(&["inspect", "-f", "{{.State.Health.Status}}", &learner.id], Duration::from_secs(30));
    assert_eq!(health.trim(), "healthy", "the learner's HEALTHCHECK");
    let whoami = project.docker(&["exec", &learner.id, "id", "-u"], Duration::from_secs(30));
    assert_eq!(whoami.trim(), "10001", "the learner process's uid");
    let configs = project.docker(&["exec", &learner.id, "ls", "/etc/proxima/configs"], Duration::from_secs(30));
    assert!(configs.lines().any(|l| l.trim() == "cartpole.toml"), "shipped configs: {configs}");

    step("compose stop learner (SIGTERM)");
    let before = learner.wait_version_above(first, Duration::from_secs(60));
    project.compose(&["stop", "-t", "45", "learner"], Duration::from_secs(90));
    let exit = project.docker(&["inspect", "-f", "{{.State.ExitCode}}", &learner.id], Duration::from_secs(30));
    let ran = project.try_docker(&["logs", &learner.id], Duration::from_secs(30));
    let log = format!("{}{}", ran.stdout, ran.stderr);
    assert_eq!(exit.trim(), "0", "the learner's exit code after SIGTERM; log tail:\n{}", last_lines(&log, 20));
    let stopped = log.lines().rev().find(|l| l.contains("learner stopped:")).unwrap_or_default().trim().to_string();
    assert!(!stopped.is_empty(), "no `learner stopped` line:\n{}", last_lines(&log, 20));
    // The last checkpoint written is of the policy it stopped with: the final one, not only a periodic one before.
    let stopped_at = stopped.split(" policy v").nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next());
    let stopped_at: Option<u64> = stopped_at.and_then(|v| v.parse().ok());
    let checkpointed = last_checkpoint_version(&log);
    assert!(
        stopped_at.is_some() && checkpointed == stopped_at,
        "last checkpoint v{checkpointed:?}, stopped at v{stopped_at:?}: no final checkpoint\n{}",
        last_lines(&log, 20)
    );
    step(&format!("SIGTERM after v{before}; exit 0, {stopped}"));

    step("compose up again: resume from the volume");
    learner.metrics = None;
    project.compose(&["up", "-d", "--no-build", "learner", "actor"], Duration::from_secs(180));
    learner.id = project.learner();
    let resumed = learner.wait_resumed(Duration::from_secs(120));
    assert!(resumed >= before, "resumed at v{resumed}, but v{before} was published before the SIGTERM");
    learner.wait_connected(2, Duration::from_secs(120));
    let after = learner.wait_version_above(resumed, Duration::from_secs(120));
    step(&format!("resumed at v{resumed}, both actors back, training on at v{after}"));
}
