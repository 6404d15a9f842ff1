//! Several actors on one host, started without any metrics flag (as the README's distributed section starts them):
//! each serves `/metrics` on the first free port of 9001-9099 and logs its URL, none exits, and the learner counts
//! every one of them. An address given explicitly that is taken stays an error. Three Rust actors and one Python
//! actor (the package installed in the test Python, as for `python_actor.rs`).
//!
//! Other tests may hold ports of the range at the same time: nothing here assumes which port an actor gets; each
//! port is read from the actor's log.

use std::path::Path;
use std::time::Duration;
use tests::procs::{Learner, Proc, free_port, samples, scrape, total};

/// How long an actor may take to start and connect (the Python one imports gymnasium and numpy).
const START: Duration = Duration::from_secs(90);

/// The port of the URL in an actor's `serving Prometheus metrics url=http://HOST:PORT/metrics` log line.
fn served_port(log: &str) -> Option<u16> {
    log.lines().filter(|l| l.contains("serving Prometheus metrics")).find_map(|l| {
        let url = l.split("url=http://").nth(1)?;
        let authority = url.split("/metrics").next()?;
        authority.rsplit_once(':')?.1.parse().ok()
    })
}

/// The learner URL and a small actor: 2 envs, reconnect backoff at most 1 s, no name (the default).
fn common_args(port: u16) -> Vec<String> {
    let url = format!("http://127.0.0.1:{port}");
    ["--learner", &url, "--env", "CartPole-v1", "--num-envs", "2", "--max-backoff-seconds", "1"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// An `actor` process with no metrics flag (and, as every [`Proc`], no `PROXIMA_*` variable) unless `env` sets one.
fn rust_actor(dir: &Path, name: &str, port: u16, env: &[(&str, String)]) -> Proc {
    Proc::spawn(name, &tests::bin_path("actor"), &common_args(port), env, dir)
}

/// A `python -m proxima_actor` process with `extra` arguments.
fn python_actor(dir: &Path, name: &str, port: u16, extra: &[&str]) -> Proc {
    let mut args: Vec<String> = vec!["-m".into(), "proxima_actor".into()];
    args.extend(common_args(port));
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(name, &tests::python(), &args, &[], dir)
}

/// Three Rust actors and a Python actor on this host without metrics flags all serve `/metrics` on ports of their
/// own within 9001-9099 (the ones they log), stay up, and the learner counts all four as connected and registered.
/// An actor asked for a port that one of them holds exits with an error naming the address.
#[test]
fn actors_on_one_host_need_no_metrics_flags() {
    tests::bin_path("learner");
    tests::bin_path("actor");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let runs = dir.path().join("runs");
    // Far more steps than the test lasts and an unreachable target: the learner keeps serving (four actors solve
    // CartPole in about 2 s, and a learner that reached its target stopped before the test looked again).
    let overrides = ["total_steps=100000000", "target_return=inf"];
    let mut learner = Learner::start(dir.path(), "learner", &runs, "host", port, &overrides, false);
    let mut actors: Vec<Proc> = (0..3).map(|i| rust_actor(dir.path(), &format!("actor-{i}"), port, &[])).collect();
    actors.push(python_actor(dir.path(), "py-actor", port, &[]));

    let mut ports = Vec::new();
    for actor in &mut actors {
        let served = actor.wait_for("the metrics URL in its log", START, |p| served_port(&p.log()));
        println!("{} serves its metrics on port {served}", actor.name);
        assert!((9001..=9099).contains(&served), "{} serves on {served}, outside 9001-9099", actor.name);
        assert!(!ports.contains(&served), "two actors logged port {served}: {ports:?}");
        ports.push(served);
    }
    for (actor, &served) in actors.iter_mut().zip(&ports) {
        let text = actor.wait_for("its /metrics to show it connected", START, |_| {
            scrape(served).filter(|t| total(t, "proxima_actor_connected") == 1.0)
        });
        let connected = samples(&text, "proxima_actor_connected");
        assert!(
            connected.iter().all(|(labels, _)| labels.contains("role=\"actor\"") && labels.contains("CartPole-v1")),
            "port {served} does not serve this actor's metrics: {connected:?}"
        );
    }

    let metrics_port = learner.metrics_port;
    let learner_text = learner.proc.wait_for("4 connected actors in the learner's metrics", START, |_| {
        scrape(metrics_port).filter(|t| total(t, "proxima_learner_connected_actors") == 4.0)
    });
    assert_eq!(total(&learner_text, "proxima_learner_registered_actors"), 4.0, "registered actors");
    let registered = learner.proc.log().matches("actor registered").count();
    assert!(registered >= 4, "{registered} registrations in the learner's log");

    // Still up a while later, and still counted.
    std::thread::sleep(Duration::from_secs(2));
    for actor in &mut actors {
        assert!(actor.exited().is_none(), "{} exited\n{}", actor.name, actor.tail(30));
    }
    let later = learner.metrics_now();
    assert_eq!(total(&later, "proxima_learner_connected_actors"), 4.0, "connected actors a while later");

    // An explicit address is what the user asked for: taken, it is an error (Rust via the environment variable,
    // Python via the flag).
    let taken = ports[0];
    let mut explicit =
        rust_actor(dir.path(), "actor-explicit", port, &[("PROXIMA_METRICS_ADDR", format!("127.0.0.1:{taken}"))]);
    let status = explicit.wait_exit(Duration::from_secs(30), || {});
    assert!(!status.success(), "an actor asked for taken port {taken} kept running\n{}", explicit.tail(20));
    let log = explicit.log();
    assert!(log.contains(&format!("cannot serve metrics on 127.0.0.1:{taken}")), "{log}");
    let mut explicit_py =
        python_actor(dir.path(), "py-explicit", port, &["--metrics-addr", &format!("0.0.0.0:{taken}")]);
    let status = explicit_py.wait_exit(Duration::from_secs(60), || {});
    assert!(!status.success(), "a Python actor asked for taken port {taken} kept running\n{}", explicit_py.tail(20));
    let log = explicit_py.log();
    assert!(log.contains(&format!("cannot serve metrics on 0.0.0.0:{taken}")), "{log}");
    for actor in &mut actors {
        assert!(actor.exited().is_none(), "{} exited\n{}", actor.name, actor.tail(30));
    }
    println!("learner counted 4 connected actors; ports {ports:?}");
}
