//! End-to-end tests of the container deployment (deploy/docker-compose.yml with deploy/test/docker-compose.test.yml
//! on top): locally built scratch images (deploy/test/build-images.sh), a learner, scaled actors and Prometheus on
//! a compose network. Needs Docker and compose (the v2 plugin or docker-compose v1.28+), `prometheus` on the host
//! (Debian: `apt-get install prometheus`) to package into the Prometheus test image, and the test Python
//! (`PROXIMA_PYTHON`, see `tests::python`) with pip and access to its package index (or a cache) for the Python
//! actor image.
//!
//! The Rust actors' test runs sequentially to keep the time down: start with 3 actors, scale to 5 and to 2, kill
//! and restart the learner (it resumes from its volume, the actors reconnect), cut one actor off the network and
//! plug it back (the learner notices the silent peer through HTTP/2 keepalive; the actor rejoins), and check that
//! Prometheus scrapes the learner and every actor. The Python actors' test runs the `python` profile instead of
//! the Rust actors: two Python actors train, and Prometheus scrapes their env steps. Every step is bounded in
//! time; each test has its own compose project, taken down with its volumes when the guard drops, also when the
//! test fails. Both print their timings and the image sizes.

use std::time::{Duration, Instant};

use tests::compose::{Learner, Project, progress, prometheus_query, prometheus_up, secs, wait_for};

/// `server.checkpoint_every` of the test override (deploy/test/docker-compose.test.yml).
const CHECKPOINT_EVERY: u64 = 5;

#[test]
fn compose_deployment_scales_recovers_and_is_scraped() {
    let started = Instant::now();
    let step = progress(started);
    let project = Project::new("rust", &[]).with_compose("v2");
    project.require_docker();
    step("building the test images");
    project.build_images();

    // 3 actors: all connect, the policy advances.
    step("compose up with 3 actors");
    let up_at = Instant::now();
    project.compose(&["up", "-d", "--no-build", "--scale", "actor=3"], Duration::from_secs(180));
    let mut learner = Learner { project: &project, id: project.learner(), metrics: None };
    let first_version = learner.wait_version_above(0, Duration::from_secs(120));
    let first_update = up_at.elapsed();
    step(&format!("first policy update (v{first_version}) {} after `up`", secs(first_update)));
    learner.wait_connected(3, Duration::from_secs(60));
    let v = learner.wait_version_above(first_version, Duration::from_secs(60));
    step(&format!("3 actors connected, policy at v{v}"));

    // Scale out and in.
    project.compose(&["up", "-d", "--no-build", "--scale", "actor=5"], Duration::from_secs(180));
    learner.wait_connected(5, Duration::from_secs(90));
    step("scaled to 5: 5 actors connected");
    project.compose(&["up", "-d", "--no-build", "--scale", "actor=2"], Duration::from_secs(180));
    learner.wait_connected(2, Duration::from_secs(90));
    assert_eq!(project.containers("actor").len(), 2, "scaled to 2 actor containers");
    step("scaled to 2: 2 actors connected");

    // Kill the learner (SIGKILL, no final checkpoint) and start it again: it resumes from the volume's newest
    // checkpoint, and both actors reconnect by themselves.
    let before = learner.wait_version_above(0, Duration::from_secs(30));
    project.docker(&["kill", &learner.id], Duration::from_secs(60));
    let killed_at = Instant::now();
    wait_for("the killed learner to stop", Duration::from_secs(60), || {
        let state = project.docker(&["inspect", "-f", "{{.State.Running}}", &learner.id], Duration::from_secs(30));
        if state.trim() == "false" { Ok(()) } else { Err(format!("running: {}", state.trim())) }
    });
    step(&format!("learner killed at v{before}; starting it again"));
    learner.metrics = None;
    project.docker(&["start", &learner.id], Duration::from_secs(60));
    let resumed = learner.wait_resumed(Duration::from_secs(60));
    assert!(resumed > 0, "the restarted learner started from scratch");
    assert!(
        resumed + CHECKPOINT_EVERY >= before,
        "resumed at v{resumed}, but v{before} was published before the kill and checkpoints come every \
         {CHECKPOINT_EVERY} updates"
    );
    let after = learner.wait_version_above(resumed, Duration::from_secs(120));
    learner.wait_connected(2, Duration::from_secs(120));
    let recovery = killed_at.elapsed();
    step(&format!(
        "learner resumed at v{resumed} (v{before} before the kill), trains on (v{after}), 2 actors reconnected: \
         recovered {} after the kill",
        secs(recovery)
    ));

    // Cut one actor off the network for at least 20 s: the learner notices the silent peer (HTTP/2 keepalive)
    // and drops its stream; plugged back in, the actor registers again.
    let actors = project.containers("actor");
    let cut = actors[0].clone();
    let (network, _) = project.network_of(&cut);
    project.docker(&["network", "disconnect", &network, &cut], Duration::from_secs(60));
    let cut_at = Instant::now();
    step(&format!("actor {} disconnected from {network}", &cut[..12]));
    wait_for(
        "the learner to drop the cut-off actor (HTTP/2 keepalive on the server side)",
        Duration::from_secs(60),
        || match learner.state() {
            Some(s) if s.connected == 1 => Ok(()),
            other => Err(format!("learner metrics: {other:?}")),
        },
    );
    let detected = cut_at.elapsed();
    step(&format!("the learner dropped the silent actor {} after the cut", secs(detected)));
    if let Some(rest) = Duration::from_secs(20).checked_sub(cut_at.elapsed()) {
        std::thread::sleep(rest);
    }
    let still = learner.current_state().connected;
    assert_eq!(still, 1, "one actor connected while the other is cut off");
    project.docker(&["network", "connect", "--alias", "actor", &network, &cut], Duration::from_secs(60));
    let reconnected_at = Instant::now();
    learner.wait_connected(2, Duration::from_secs(60));
    let rejoin = reconnected_at.elapsed();
    step(&format!(
        "the actor rejoined {} after reconnecting the network (cut for {})",
        secs(rejoin),
        secs(reconnected_at - cut_at)
    ));

    // Prometheus scrapes the learner and exactly the two running actors (found through the service's DNS name).
    let addr = project.prometheus_addr();
    let want = project.metrics_targets("actor");
    let targets = wait_for("Prometheus to scrape the learner and both actors", Duration::from_secs(90), || {
        let up = prometheus_up(&addr)?;
        let learner_up = up.iter().any(|(job, inst, v)| job == "learner" && inst == "learner:9000" && *v == 1.0);
        let mut actors_up: Vec<String> =
            up.iter().filter(|(job, _, v)| job == "actor" && *v == 1.0).map(|(_, inst, _)| inst.clone()).collect();
        actors_up.sort();
        if learner_up && actors_up == want { Ok(up) } else { Err(format!("up: {up:?}; want actors {want:?}")) }
    });
    step(&format!("Prometheus targets up: {targets:?}"));

    let sizes = project.image_sizes();
    eprintln!("== compose test timings");
    eprintln!("time to first policy update after `up` (3 actors): {}", secs(first_update));
    eprintln!("recovery after killing the learner (resumed v{resumed}, 2 actors connected): {}", secs(recovery));
    eprintln!("silent actor dropped by the learner after the network cut: {}", secs(detected));
    eprintln!("actor rejoin after the network came back: {}", secs(rejoin));
    eprintln!("total test time: {}", secs(started.elapsed()));
    eprintln!("== test images\n{sizes}");
}

#[test]
fn python_actors_join_a_compose_deployment() {
    let started = Instant::now();
    let step = progress(started);
    let project = Project::new("python", &["python"]).with_compose("v1");
    project.require_docker();
    step("building the test images");
    project.build_images();

    // The `python` profile with two Python actors and no Rust one: both connect, the policy advances.
    step("compose up with 2 Python actors and no Rust actor");
    let up_at = Instant::now();
    project.compose(
        &["up", "-d", "--no-build", "--scale", "actor=0", "--scale", "actor-python=2"],
        Duration::from_secs(180),
    );
    assert_eq!(project.containers("actor"), Vec::<String>::new(), "no Rust actor container");
    assert_eq!(project.containers("actor-python").len(), 2, "two Python actor containers");
    let mut learner = Learner { project: &project, id: project.learner(), metrics: None };
    learner.wait_connected(2, Duration::from_secs(120));
    let connected = up_at.elapsed();
    step(&format!("2 Python actors connected {} after `up`", secs(connected)));
    let first_version = learner.wait_version_above(0, Duration::from_secs(120));
    let later_version = learner.wait_version_above(first_version, Duration::from_secs(60));
    let trains = up_at.elapsed();
    step(&format!("the policy advances: v{first_version}, then v{later_version}"));

    // Prometheus finds both through the `actor-python` DNS name (job `actor`) and has their env steps.
    let addr = project.prometheus_addr();
    let want = project.metrics_targets("actor-python");
    let scraped = wait_for("Prometheus to scrape env steps from both Python actors", Duration::from_secs(90), || {
        let samples = prometheus_query(&addr, "proxima_actor_env_steps_total")?;
        let mut stepping: Vec<(String, f64)> = samples
            .iter()
            .filter(|s| s.label("job") == "actor" && s.value > 0.0)
            .map(|s| (s.label("instance"), s.value))
            .collect();
        stepping.sort_by(|a, b| a.0.cmp(&b.0));
        let instances: Vec<String> = stepping.iter().map(|(instance, _)| instance.clone()).collect();
        if instances == want {
            Ok(stepping)
        } else {
            Err(format!("env steps by instance: {stepping:?}; want {want:?}"))
        }
    });
    step(&format!("Prometheus has env steps of both Python actors: {scraped:?}"));

    let sizes = project.image_sizes();
    eprintln!("== compose test timings (Python actors)");
    eprintln!("2 Python actors connected after `up`: {}", secs(connected));
    eprintln!("policy advancing (v{later_version}) after `up`: {}", secs(trains));
    eprintln!("total test time: {}", secs(started.elapsed()));
    eprintln!("== test images\n{sizes}");
}
