//! TLS with token auth: an in-process learner serving TLS trains on an actor that verifies it with a CA; a
//! plaintext client gets nothing. Certificates come from the `openssl` command line (Debian's openssl).

use learner::config::TrainConfig;
use learner::serve::{ServeOptions, spawn};
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
        resume: false,
    };
    let (server, task) = spawn(cfg, opts, "127.0.0.1:0").await.expect("learner starts");

    // Plaintext against the TLS port: the call fails, nothing is accepted.
    let plain = common::wire::pb::learner_client::LearnerClient::connect(format!("http://{}", server.addr)).await;
    if let Ok(mut client) = plain {
        let r = client.subscribe_policy(common::wire::pb::SubscribePolicyRequest { actor_id: 1 }).await;
        assert!(r.is_err(), "a plaintext call to the TLS port must fail");
    }

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
