//! End-to-end test of the per-host compose files for several machines (deploy/hosts/learner/ and
//! deploy/hosts/actor/, with deploy/test/hosts-*.test.yml on top through deploy/test/hosts.sh): one learner host
//! and two actor hosts, each its own compose project on its own default network, so that, as across machines, the
//! actors reach the learner only through the learner host's published gRPC port, and the actor hosts' Prometheus
//! agents reach the central Prometheus only through its published port (remote write).
//!
//! The "machines' network" is a bridge network the test creates and no container joins: the learner host publishes
//! its gRPC (50051) and Prometheus (9090) ports on that network's gateway address, an address of the Docker host
//! that containers of every network can reach, and nothing listens on all interfaces. Two actor hosts (2 and 1
//! actors) join; the test checks that all three actors are connected at the learner, that training proceeds, and
//! that the central Prometheus has `proxima_actor_env_steps_total` from every actor of both hosts, labelled by
//! host. Then one host scales out (its new actor's series arrives), the other is cut off (its actor's network
//! link goes down: the learner drops it and trains on; it rejoins when the link is back), and the learner restarts
//! (the actors of both hosts reconnect through the published port).
//! Needs what tests/tests/compose.rs needs (Docker, compose, `prometheus` on the host for the images). Every wait is
//! bounded; the projects are taken down with their volumes, and the network removed, also when the test fails.
//! This test runs with docker-compose v1, the TLS one with the compose v2 plugin.

use std::time::{Duration, Instant};

use tests::compose::{Learner, Project, progress, prometheus_query, secs, wait_for};

/// The token of the test's learner (the actor hosts present it).
const TOKEN: &str = "hosts-test-token";

/// How long an actor host stays cut off: longer than the learner's HTTP/2 keepalive (10 s + 10 s).
const CUT_FOR: Duration = Duration::from_secs(25);

/// A Docker bridge network the test created (no container joins it); removed when dropped, after the projects
/// (declare it before them).
struct Lan {
    name: String,
    gateway: String,
    project: Project,
}

impl Lan {
    fn create(name: &str, project: Project) -> Self {
        project.docker(&["network", "create", name], Duration::from_secs(60));
        let gateway = project
            .docker(
                &["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", name],
                Duration::from_secs(30),
            )
            .trim()
            .to_string();
        assert!(gateway.parse::<std::net::Ipv4Addr>().is_ok(), "gateway of {name}: {gateway:?}");
        Self { name: name.to_string(), gateway, project }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let rm = self.project.try_docker(&["network", "rm", &self.name], Duration::from_secs(60));
        if !rm.ok {
            eprintln!("docker network rm {} failed: {}{}", self.name, rm.stdout, rm.stderr);
        }
    }
}

/// The names of the Docker networks `container` is on.
fn networks(project: &Project, container: &str) -> Vec<String> {
    let out = project.docker(
        &["inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}\n{{end}}", container],
        Duration::from_secs(30),
    );
    out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// The learner host project `name`, publishing gRPC (50051) and Prometheus (9090) on `gateway`, and with `tls`: its
/// docker-compose.tls.yml with the certificate, key and CA in that directory.
fn learner_host(name: &str, gateway: &str, tls: Option<&str>) -> Project {
    let (grpc_port, prometheus_port) = (format!("{gateway}:50051"), format!("{gateway}:9090"));
    let mut env =
        vec![("PROXIMA_TOKEN", TOKEN), ("PROXIMA_GRPC_PORT", &grpc_port), ("PROMETHEUS_PORT", &prometheus_port)];
    let mut args = vec!["learner"];
    if let Some(dir) = tls {
        args.push("--tls");
        env.push(("PROXIMA_TLS_DIR", dir));
    }
    Project::with_script(name, "test/hosts.sh", &args, &env)
}

/// The actor host project `name` with `replicas` actors, its series labelled `host=<label>`.
fn actor_host(name: &str, label: &str, replicas: &str, gateway: &str) -> Project {
    actor_host_with(name, label, replicas, gateway, TOKEN, None)
}

/// [`actor_host`] presenting `token`, and with `tls`: its docker-compose.tls.yml, https and the CA in that
/// directory.
fn actor_host_with(name: &str, label: &str, replicas: &str, gateway: &str, token: &str, tls: Option<&str>) -> Project {
    let mut env = vec![
        ("LEARNER_HOST", gateway),
        ("LEARNER_PORT", "50051"),
        ("CENTRAL_PROMETHEUS_IP", gateway),
        ("ACTOR_HOST_NAME", label),
        ("ACTOR_REPLICAS", replicas),
        ("PROXIMA_TOKEN", token),
    ];
    let mut args = vec!["actor"];
    if let Some(dir) = tls {
        args.push("--tls");
        env.extend([("LEARNER_SCHEME", "https"), ("PROXIMA_TLS_DIR", dir)]);
    }
    Project::with_script(name, "test/hosts.sh", &args, &env)
}

/// Env steps per actor in the central Prometheus: (host label, instance, value) of every series with steps.
fn env_steps_by_host(prometheus: &str) -> Result<Vec<(String, String, f64)>, String> {
    let mut steps: Vec<(String, String, f64)> = prometheus_query(prometheus, "proxima_actor_env_steps_total")?
        .iter()
        .filter(|s| s.label("job") == "actor" && s.value > 0.0)
        .map(|s| (s.label("host"), s.label("instance"), s.value))
        .collect();
    steps.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    Ok(steps)
}

/// How many series of `steps` carry host label `host`.
fn count(steps: &[(String, String, f64)], host: &str) -> usize {
    steps.iter().filter(|(h, _, _)| h == host).count()
}

#[test]
fn actor_hosts_join_a_learner_host_through_its_published_port() {
    let started = Instant::now();
    let step = progress(started);
    let base = format!("proxima-test-{}-hosts", std::process::id());
    let (label_a, label_b) = (format!("{base}-a"), format!("{base}-b"));

    let tools = Project::new("hosts-tools", &[]);
    tools.require_docker();
    step("building the test images");
    tools.build_images();

    // The machines' network: only its gateway address is used, to publish the learner host's ports on.
    let lan = Lan::create(&format!("{base}-lan"), Project::new("hosts-lan", &[]));
    let gateway = lan.gateway.clone();
    let grpc_port = format!("{gateway}:50051");
    let prometheus_port = format!("{gateway}:9090");
    let learner_host = learner_host(&format!("{base}-learner"), &gateway, None).with_compose("v1");
    let host_a = actor_host(&format!("{base}-host-a"), &label_a, "2", &gateway).with_compose("v1");
    let host_b = actor_host(&format!("{base}-host-b"), &label_b, "1", &gateway).with_compose("v1");

    step(&format!("learner host up, publishing gRPC on {grpc_port} and Prometheus on {prometheus_port}"));
    let up_at = Instant::now();
    learner_host.compose(&["up", "-d", "--no-build"], Duration::from_secs(180));
    step("actor hosts up: host-a with 2 actors, host-b with 1");
    host_a.compose(&["up", "-d", "--no-build"], Duration::from_secs(180));
    host_b.compose(&["up", "-d", "--no-build"], Duration::from_secs(180));

    // No shared network: every actor is on its own host's network only.
    let learner_id = learner_host.learner();
    let learner_nets = networks(&learner_host, &learner_id);
    for host in [&host_a, &host_b] {
        for id in host.containers("actor") {
            let nets = networks(host, &id);
            assert_eq!(nets, vec![format!("{}_default", host.name)], "actor {id} must be on its host's network only");
            assert!(!nets.iter().any(|n| learner_nets.contains(n)), "actor {id} shares a network with the learner");
        }
    }

    let mut learner = Learner { project: &learner_host, id: learner_id, metrics: None };
    learner.wait_connected(3, Duration::from_secs(120));
    let connected = up_at.elapsed();
    step(&format!("3 actors of 2 hosts connected {} after `up`", secs(connected)));
    let first = learner.wait_version_above(0, Duration::from_secs(120));
    let later = learner.wait_version_above(first, Duration::from_secs(60));
    step(&format!("training proceeds: v{first}, then v{later}"));

    // The central Prometheus has every actor's env steps, pushed by both hosts' agents and labelled by host.
    let steps = wait_for("env steps of both hosts' actors in the central Prometheus", Duration::from_secs(90), || {
        let steps = env_steps_by_host(&prometheus_port)?;
        if count(&steps, &label_a) == 2 && count(&steps, &label_b) == 1 {
            Ok(steps)
        } else {
            Err(format!("env steps by host: {steps:?}"))
        }
    });
    let metrics_seen = up_at.elapsed();
    step(&format!("central Prometheus has env steps of both hosts: {steps:?}"));

    // host-a scales out to 3 actors: 4 connected, and the new one's series arrives labelled host-a.
    host_a.compose(&["up", "-d", "--no-build", "--scale", "actor=3"], Duration::from_secs(180));
    learner.wait_connected(4, Duration::from_secs(90));
    wait_for("the third actor of host-a in the central Prometheus", Duration::from_secs(90), || {
        let steps = env_steps_by_host(&prometheus_port)?;
        if count(&steps, &label_a) == 3 { Ok(()) } else { Err(format!("env steps by host: {steps:?}")) }
    });
    step("host-a scaled to 3 actors: 4 connected, 3 series labelled host-a");

    // host-b is cut off (its actor's network link goes down) for longer than the learner's HTTP/2 keepalive (10 s
    // interval + 10 s timeout): the learner drops the actor and trains on with host-a's 3; when the link is back,
    // the actor rejoins by itself.
    let cut = host_b.containers("actor").remove(0);
    let (network, _) = host_b.network_of(&cut);
    host_b.docker(&["network", "disconnect", &network, &cut], Duration::from_secs(60));
    let cut_at = Instant::now();
    let state = learner.wait_connected(3, Duration::from_secs(90));
    let detected = cut_at.elapsed();
    std::thread::sleep(CUT_FOR.saturating_sub(cut_at.elapsed()));
    let v = learner.wait_version_above(state.version.unwrap_or(0), Duration::from_secs(60));
    assert_eq!(learner.current_state().connected, 3, "connected actors while host-b is cut off");
    step(&format!(
        "host-b cut off for {}: dropped after {}, 3 actors connected, training goes on (v{v})",
        secs(cut_at.elapsed()),
        secs(detected)
    ));
    host_b.docker(&["network", "connect", "--alias", "actor", &network, &cut], Duration::from_secs(60));
    let back_at = Instant::now();
    learner.wait_connected(4, Duration::from_secs(90));
    let rejoined = back_at.elapsed();
    step(&format!("host-b back: its actor rejoined after {}", secs(rejoined)));

    // The learner restarts (stopped and started again, resuming from its volume): the actors of both hosts
    // reconnect through the published port, and training proceeds.
    // SIGTERM makes it write a final checkpoint, so it resumes at the version it had, and goes on from there.
    let before = learner.wait_version_above(0, Duration::from_secs(30));
    let restarted_at = Instant::now();
    learner_host.compose(&["restart", "-t", "45", "learner"], Duration::from_secs(180));
    learner.metrics = None;
    let resumed = learner.wait_resumed(Duration::from_secs(120));
    assert!(resumed >= before, "resumed at v{resumed}, but v{before} was published before the SIGTERM");
    learner.wait_connected(4, Duration::from_secs(120));
    let after = learner.wait_version_above(resumed, Duration::from_secs(120));
    let recovered = restarted_at.elapsed();
    step(&format!(
        "learner restarted (v{before} before), resumed at v{resumed}: 4 actors of 2 hosts reconnected, training at \
         v{after}, {} after",
        secs(recovered)
    ));

    eprintln!("== hosts test timings");
    eprintln!("3 actors of 2 hosts connected after `up`: {}", secs(connected));
    eprintln!("both hosts' env steps in the central Prometheus after `up`: {}", secs(metrics_seen));
    eprintln!("cut-off actor of host-b dropped by the learner: {}", secs(detected));
    eprintln!("host-b's actor rejoined after the link came back: {}", secs(rejoined));
    eprintln!("4 actors reconnected and training after the learner's restart: {}", secs(recovered));
    eprintln!("total test time: {}", secs(started.elapsed()));
}

/// How many registrations the learner refused for a wrong or missing token, from its `/metrics` text.
fn unauthenticated(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("proxima_learner_rejected_total{") && l.contains("reason=\"unauthenticated\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// TLS and the token across hosts, set up as the README says: deploy/hosts/make-certs.sh makes a CA and a learner
/// certificate for the address the actor hosts use (the machines' network's gateway here); the learner host runs
/// with its docker-compose.tls.yml (certificate and key mounted) and its health check, now over TLS, turns
/// healthy; an actor host with its docker-compose.tls.yml (the CA mounted, `LEARNER_SCHEME=https`) joins and
/// trains. An actor host speaking plaintext to the TLS port, and one with TLS but the wrong token, never connect;
/// the second is counted as unauthenticated.
#[test]
fn tls_and_the_token_work_across_hosts() {
    let started = Instant::now();
    let step = progress(started);
    let base = format!("proxima-test-{}-tls", std::process::id());

    let tools = Project::new("tls-tools", &[]);
    tools.require_docker();
    step("building the test images");
    tools.build_images();
    let lan = Lan::create(&format!("{base}-lan"), Project::new("tls-lan", &[]));
    let gateway = lan.gateway.clone();

    let certs = tools.scratch.path().join("tls");
    let made = std::process::Command::new(tests::workspace_root().join("deploy/hosts/make-certs.sh"))
        .arg(&certs)
        .arg(&gateway)
        .output()
        .expect("run make-certs.sh");
    assert!(made.status.success(), "make-certs.sh: {}", String::from_utf8_lossy(&made.stderr));
    step(&format!("certificates for {gateway}: {}", String::from_utf8_lossy(&made.stdout).trim()));
    let certs = certs.display().to_string();

    let learner_host = learner_host(&format!("{base}-learner"), &gateway, Some(&certs)).with_compose("v2");
    let host = |name: &str, replicas: &str, token: &str, tls: Option<&str>| {
        actor_host_with(&format!("{base}-host-{name}"), name, replicas, &gateway, token, tls).with_compose("v2")
    };
    let tls_host = host("tls", "2", TOKEN, Some(&certs));
    let plain_host = host("plain", "1", TOKEN, None);
    let wrong_token = host("token", "1", "wrong", Some(&certs));

    learner_host.compose(&["up", "-d", "--no-build"], Duration::from_secs(180));
    let learner_id = learner_host.learner();
    let healthy_at = wait_for("the TLS learner's health check", Duration::from_secs(90), || {
        let health =
            learner_host.docker(&["inspect", "-f", "{{.State.Health.Status}}", &learner_id], Duration::from_secs(30));
        if health.trim() == "healthy" { Ok(started.elapsed()) } else { Err(format!("health: {}", health.trim())) }
    });
    step(&format!("learner host up with TLS, healthy (health check over TLS) at {}", secs(healthy_at)));

    for host in [&tls_host, &plain_host, &wrong_token] {
        host.compose(&["up", "-d", "--no-build"], Duration::from_secs(180));
    }
    let mut learner = Learner { project: &learner_host, id: learner_id, metrics: None };
    learner.wait_connected(2, Duration::from_secs(120));
    let first = learner.wait_version_above(0, Duration::from_secs(120));
    let later = learner.wait_version_above(first, Duration::from_secs(60));
    step(&format!("the TLS actor host's 2 actors connected and train: v{first}, then v{later}"));

    let refused = wait_for("the wrong token to be refused", Duration::from_secs(60), || {
        let metrics = learner.metrics.clone().ok_or("no metrics address")?;
        let text = tests::compose::http_get(&metrics, "/metrics").ok_or("no /metrics")?;
        let n = unauthenticated(&text);
        if n >= 1.0 { Ok(n) } else { Err(format!("unauthenticated rejections: {n}")) }
    });
    let state = learner.current_state();
    assert_eq!(state.connected, 2, "only the TLS host's actors may be connected: {state:?}");
    let plain = plain_host.containers("actor").remove(0);
    let ran = plain_host.try_docker(&["logs", &plain], Duration::from_secs(30));
    let log = format!("{}{}", ran.stdout, ran.stderr);
    assert!(!log.contains("connected to learner"), "the plaintext actor connected:\n{log}");
    step(&format!(
        "plaintext actor never connected (its log: {:?}); wrong token refused {refused} times; 2 connected",
        log.lines().rev().find(|l| l.contains("WARN") || l.contains("ERROR")).unwrap_or("").trim()
    ));
    eprintln!("total test time: {}", secs(started.elapsed()));
}
