//! TLS with token auth: an in-process learner serving TLS trains on an actor that verifies it with a CA; a
//! plaintext client with the right token, and a TLS client trusting another CA, fail at the transport level
//! before any gRPC status. Certificates come from the `openssl` command line (Debian's openssl).

use learner::config::TrainConfig;
use learner::server::{ServeOptions, spawn};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl must be installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA and a server certificate for `localhost` / 127.0.0.1 signed by it.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=proxima-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("write ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
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
        tls: Some((dir.path().join("server.pem"), dir.path().join("server.key"))),
        ..Default::default()
    };
    let (server, task) = spawn(cfg, opts, "127.0.0.1:0").await.expect("learner starts");

    // Plaintext against the TLS port, with the right token: fails in the transport.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr)).expect("url");
    assert_transport_failure(plain, "plaintext client").await;
    // TLS trusting another CA (a second, unrelated CA with the same subject): the handshake fails.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    make_certs(&other);
    let pem = std::fs::read(other.join("ca.pem")).expect("other CA");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
        .domain_name("localhost");
    let wrong_ca = tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", server.addr.port()))
        .expect("url")
        .tls_config(tls)
        .expect("tls config");
    assert_transport_failure(wrong_ca, "client trusting another CA").await;

    let actor_stop = tokio_util::sync::CancellationToken::new();
    let actor_opts = actor::client::ActorOptions {
        token: Some("s3cret".into()),
        tls_ca: Some(dir.path().join("ca.pem")),
        tls_domain: Some("localhost".into()),
        ..actor::client::ActorOptions::new(format!("https://localhost:{}", server.addr.port()), "CartPole-v1")
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
