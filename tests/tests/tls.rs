//! TLS with token auth: an in-process learner serving TLS trains on an actor that verifies it with a CA; a
//! plaintext client with the right token, and a TLS client trusting another CA, fail at the transport level
//! before any gRPC status; the health check (`learner health`'s function) passes over TLS with the CA and fails
//! without it. Certificates come from deploy/hosts/make-certs.sh (Debian's openssl).

use learner::config::TrainConfig;
use learner::server::{ServeOptions, spawn};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A CA and a learner certificate for `localhost` / 127.0.0.1 signed by it, made by deploy/hosts/make-certs.sh
/// (the script the README gives users): `ca.pem`, `learner.pem`, `learner-key.pem`.
fn make_certs(dir: &Path) {
    let script = tests::workspace_root().join("deploy/hosts/make-certs.sh");
    let out = Command::new(&script).arg(dir).arg("localhost").output().expect("run make-certs.sh");
    assert!(out.status.success(), "make-certs.sh: {}", String::from_utf8_lossy(&out.stderr));
}

/// A valid registration carrying the right token.
fn register_with_token() -> tonic::Request<common::wire::pb::RegisterRequest> {
    let env = common::env::make("CartPole-v1").expect("CartPole");
    let mut request = tonic::Request::new(common::wire::pb::RegisterRequest {
        actor_name: "tls-test".into(),
        env_id: "CartPole-v1".into(),
        observation_space: Some((&env.observation_space()).into()),
        action_space: Some((&env.action_space()).into()),
        num_envs: 1,
        protocol_version: common::wire::PROTOCOL_VERSION as i32,
        learner_num_envs: false,
    });
    request.metadata_mut().insert("authorization", "Bearer s3cret".parse().expect("metadata"));
    request
}

/// Asserts that `endpoint` cannot get a valid, authenticated Register through: the connection or the call fails
/// in the transport (a status made on the client side from a transport error, which it carries as its source),
/// never with a gRPC status that only a learner that understood the request could send.
async fn assert_transport_failure(endpoint: tonic::transport::Endpoint, what: &str) {
    let endpoint = endpoint.connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(10));
    let channel = match endpoint.connect().await {
        Err(e) => {
            println!("{what}: connect failed: {e}");
            return;
        }
        Ok(channel) => channel,
    };
    let r = common::wire::pb::learner_client::LearnerClient::new(channel).register(register_with_token()).await;
    let status = r.expect_err(&format!("{what}: a valid, authenticated Register must not get through"));
    let transport = std::error::Error::source(&status).is_some_and(|e| e.is::<tonic::transport::Error>());
    assert!(transport, "{what}: expected a transport failure, got {status:?}");
    println!("{what}: call failed in the transport: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_trains_over_tls_with_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    let overrides = [
        "total_steps=2048".to_string(),
        format!("runs_dir={:?}", dir.path().join("runs").display().to_string()),
        "run_name=\"tls\"".into(),
    ];
    let cfg =
        TrainConfig::load(Some(&tests::workspace_root().join("configs/cartpole.toml")), &overrides).expect("config");
    let opts = ServeOptions {
        token: Some("s3cret".into()),
        tls: Some((dir.path().join("learner.pem"), dir.path().join("learner-key.pem"))),
        ..Default::default()
    };
    let (server, task) = spawn(cfg, opts, "127.0.0.1:0").await.expect("learner starts");

    // The health check over TLS, as the learner host's container runs it (`learner health --addr
    // https://127.0.0.1:PORT --tls-ca ca.pem --tls-domain localhost`): serving; in plaintext: an error.
    let https = format!("https://127.0.0.1:{}", server.addr.port());
    let tls = common::wire::client_tls(&dir.path().join("ca.pem"), Some("localhost")).expect("client TLS");
    learner::server::check_health(&https, Some(tls), Duration::from_secs(5)).await.expect("healthy over TLS");
    let http = format!("http://{}", server.addr);
    let plain_health = learner::server::check_health(&http, None, Duration::from_secs(5)).await;
    assert!(plain_health.is_err(), "a plaintext health check of a TLS learner must fail");

    // Plaintext against the TLS port, with the right token: fails in the transport.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr)).expect("url");
    assert_transport_failure(plain, "plaintext client").await;
    // TLS trusting another CA (a second, unrelated CA with the same subject): the handshake fails.
    let other = dir.path().join("other");
    make_certs(&other);
    let pem = std::fs::read(other.join("ca.pem")).expect("other CA");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
        .domain_name("localhost");
    let wrong_ca = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{}", server.addr.port()))
        .expect("url")
        .tls_config(tls)
        .expect("tls config");
    assert_transport_failure(wrong_ca, "client trusting another CA").await;

    let actor_stop = tokio_util::sync::CancellationToken::new();
    let actor_opts = actor::client::ActorOptions {
        token: Some("s3cret".into()),
        tls_ca: Some(dir.path().join("ca.pem")),
        tls_domain: Some("localhost".into()),
        ..actor::client::ActorOptions::new(format!("https://127.0.0.1:{}", server.addr.port()), "CartPole-v1")
    };
    let actor = tokio::spawn(actor::client::run(actor_opts, actor_stop.clone()));
    let outcome = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("training over TLS finishes")
        .expect("learner task")
        .expect("learner result");
    actor_stop.cancel();
    actor.await.expect("actor task").expect("actor ends cleanly");
    println!("trained over TLS: {} env steps, policy v{}", outcome.env_steps, outcome.policy_version);
    assert!(outcome.env_steps >= 2048 && outcome.policy_version >= 8, "{outcome:?}");
}
