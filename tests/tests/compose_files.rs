//! Every compose file set the README and the tests use is read by both compose generations: docker-compose v1
//! (Debian's) and the v2 plugin (`docker compose`). Each set must pass `config` with both, and both must see the
//! same services (with the profiles on). The container tests then run deployments with each: compose.rs (v2 for
//! the Rust actors, v1 for the Python ones), hosts.rs (v1; its TLS test v2), real_images.rs (v1).

use std::path::Path;
use std::time::Duration;

use tests::compose::{clean_command, deploy_dir, run_bounded};

/// One compose file set: the directory under deploy/ it is run in, its files, and the settings it requires.
struct FileSet {
    dir: &'static str,
    files: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

/// What an actor host's files require (deploy/hosts/actor/.env.example), and with TLS.
const ACTOR_HOST_ENV: &[(&str, &str)] =
    &[("LEARNER_HOST", "192.0.2.10"), ("CENTRAL_PROMETHEUS_IP", "192.0.2.10"), ("ACTOR_HOST_NAME", "host-1")];
const ACTOR_HOST_TLS_ENV: &[(&str, &str)] = &[
    ("LEARNER_HOST", "192.0.2.10"),
    ("CENTRAL_PROMETHEUS_IP", "192.0.2.10"),
    ("ACTOR_HOST_NAME", "host-1"),
    ("LEARNER_SCHEME", "https"),
    ("PROXIMA_TLS_DIR", "/etc/proxima/tls"),
];

const SETS: &[FileSet] = &[
    FileSet { dir: ".", files: &["docker-compose.yml"], env: &[] },
    FileSet { dir: ".", files: &["docker-compose.yml", "test/docker-compose.test.yml"], env: &[] },
    FileSet { dir: "hosts/learner", files: &["docker-compose.yml"], env: &[] },
    FileSet {
        dir: "hosts/learner",
        files: &["docker-compose.yml", "docker-compose.tls.yml"],
        env: &[("PROXIMA_TLS_DIR", "/etc/proxima/tls")],
    },
    FileSet { dir: "hosts/learner", files: &["docker-compose.yml", "../../test/hosts-learner.test.yml"], env: &[] },
    FileSet { dir: "hosts/actor", files: &["docker-compose.yml"], env: ACTOR_HOST_ENV },
    FileSet { dir: "hosts/actor", files: &["docker-compose.yml", "docker-compose.tls.yml"], env: ACTOR_HOST_TLS_ENV },
    FileSet {
        dir: "hosts/actor",
        files: &["docker-compose.yml", "../../test/hosts-actor.test.yml"],
        env: ACTOR_HOST_ENV,
    },
];

/// `compose -f FILE... --profile python --profile grafana ARGS` of `version` (`v1`, `v2`) in `dir`; the output, or
/// why it failed.
fn compose(version: &str, dir: &Path, set: &FileSet, args: &[&str]) -> Result<String, String> {
    let mut cmd = match version {
        "v1" => clean_command("docker-compose"),
        _ => {
            let mut c = clean_command("docker");
            c.arg("compose");
            c
        }
    };
    for f in set.files {
        cmd.args(["-f", f]);
    }
    cmd.args(["--profile", "python", "--profile", "grafana"]).args(args).current_dir(dir);
    cmd.envs(set.env.iter().copied());
    let scratch = tempfile::tempdir().expect("temp dir");
    let ran = run_bounded(cmd, Duration::from_secs(60), scratch.path());
    if ran.ok { Ok(ran.stdout) } else { Err(format!("{}{}", ran.stdout, ran.stderr)) }
}

#[test]
fn both_compose_generations_read_every_file_set_alike() {
    let v1 = clean_command("docker-compose").arg("version").output().expect("docker-compose (v1) must be installed");
    let v2 = clean_command("docker").args(["compose", "version"]).output().expect("docker must be installed");
    assert!(v1.status.success(), "docker-compose v1 is not installed (scripts/test.sh installs it)");
    assert!(v2.status.success(), "the docker compose v2 plugin is not installed (scripts/test.sh installs it)");
    println!("{}", String::from_utf8_lossy(&v1.stdout).lines().next().unwrap_or(""));
    println!("{}", String::from_utf8_lossy(&v2.stdout).trim());

    for set in SETS {
        let dir = deploy_dir().join(set.dir);
        let what = format!("deploy/{} -f {}", set.dir, set.files.join(" -f "));
        let mut services = Vec::new();
        for version in ["v1", "v2"] {
            compose(version, &dir, set, &["config", "-q"]).unwrap_or_else(|e| panic!("{what}: {version} config: {e}"));
            let out = compose(version, &dir, set, &["config", "--services"])
                .unwrap_or_else(|e| panic!("{what}: {version} config --services: {e}"));
            let mut names: Vec<String> =
                out.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
            names.sort();
            services.push(names);
        }
        assert_eq!(services[0], services[1], "{what}: v1 and v2 see different services");
        println!("{what}: v1 and v2 agree: {}", services[0].join(", "));
    }
}
