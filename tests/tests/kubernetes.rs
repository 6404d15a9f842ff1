//! The Kubernetes manifests (deploy/kubernetes/: a kustomize base and overlays), checked without a cluster:
//!
//! - `kubectl kustomize` renders the base and every overlay (kubectl's built-in kustomize, no load restrictor
//!   flags: what `kubectl apply -k` does);
//! - `kubernetes-validate` (PyPI, pinned in scripts/test.sh; it bundles the API schemas, so it runs offline)
//!   checks every rendered object against the Kubernetes API schemas of [`KUBERNETES_VERSIONS`], strictly
//!   (unknown fields are errors, and so is an object of a kind it has no schema for);
//! - the objects agree with each other and with the images (deploy/Dockerfile): the Services select the learner's
//!   pod and their ports reach its container ports; the actors' `PROXIMA_LEARNER` is such a Service's name and
//!   gRPC port; the learner's `--config` is a key of the mounted ConfigMap (identical to `configs/`), whose `env`
//!   is the actors' `PROXIMA_ENV`; every `PROXIMA_TOKEN` comes from the same Secret key; the probes use the gRPC
//!   health service on the gRPC port; the listen, metrics and dashboard addresses, container ports and
//!   Prometheus annotations name the same ports; the run directory is the volume claim; non-root as the images'
//!   user with a read-only root file system; resource requests and limits; actors without per-pod state, so
//!   `kubectl scale` works;
//! - the rendered learner and actor containers' arguments and environment run: the real `learner` with them
//!   (paths and ports mapped to a temporary directory and loopback ports) answers the probes' gRPC health check,
//!   a Rust and a Python actor with theirs train against it, and SIGTERM ends it within the pod's grace period
//!   with a final checkpoint.
//!
//! Needs `kubectl` (`PROXIMA_KUBECTL`, else `kubectl` on `PATH`, else `.venv/bin/kubectl`) and the test Python
//! (`PROXIMA_PYTHON`, see `tests::python`) with `kubernetes-validate` (and so PyYAML); scripts/test.sh installs
//! both when missing.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tests::procs::{Proc, free_port, http_get, run_bounded, samples, scrape};

/// The Kubernetes versions whose API schemas every object must satisfy: the oldest the manifests support
/// (native gRPC probes are GA since 1.27) and the newest the pinned validator knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];
/// Every kustomization under deploy/kubernetes/.
const KUSTOMIZATIONS: &[&str] = &["base", "overlays/python-actors"];
/// The gRPC health service name the learner reports (`grpc.health.v1.Health`).
const HEALTH_SERVICE: &str = "ppo.v1.Learner";
/// The images' user and group `proxima` (deploy/Dockerfile).
const IMAGE_UID: i64 = 10001;
/// The images, by name without registry or tag (deploy/Dockerfile's targets learner and actor, deploy/Dockerfile.python).
const LEARNER_IMAGE: &str = "proxima-learner";
const ACTOR_IMAGE: &str = "proxima-actor";
const PYTHON_ACTOR_IMAGE: &str = "proxima-actor-python";
/// Where the images ship `configs/`.
const IMAGE_CONFIGS: &str = "/etc/proxima/configs";
/// Bound on every kubectl and validator run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

fn kubernetes_dir() -> PathBuf {
    tests::workspace_root().join("deploy/kubernetes")
}

/// `$PROXIMA_KUBECTL`, else `kubectl` on `PATH`, else `.venv/bin/kubectl` (scripts/test.sh installs it there
/// when the machine has none).
fn kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("PROXIMA_KUBECTL") {
        return path.into();
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("kubectl")).find(|p| p.is_file()))
        .unwrap_or_default();
    on_path.unwrap_or_else(|| tests::workspace_root().join(".venv/bin/kubectl"))
}

/// One kustomization rendered by `kubectl kustomize`, schema-checked, and parsed.
struct Rendering {
    /// The kustomization, relative to deploy/kubernetes/.
    name: String,
    /// The objects, in rendering order.
    objects: Vec<Value>,
    /// The ConfigMaps' `*.toml` entries, parsed: ConfigMap name -> key -> TOML as JSON.
    toml: BTreeMap<String, BTreeMap<String, Value>>,
    /// The Secrets' data, decoded: Secret name -> key -> text.
    secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// Scratch directory with the rendered YAML (`rendered.yaml`).
    scratch: tempfile::TempDir,
}

impl Rendering {
    /// Renders `deploy/kubernetes/<name>`, parses it, and validates every object (panics with the validator's
    /// output if any object fails).
    fn new(name: &str) -> Self {
        let scratch = tempfile::tempdir().expect("temporary directory");
        let mut cmd = Command::new(kubectl());
        cmd.arg("kustomize").arg(kubernetes_dir().join(name));
        let ran = run_bounded(cmd, COMMAND_TIMEOUT, scratch.path());
        assert!(ran.ok, "kubectl kustomize deploy/kubernetes/{name} failed:\n{}{}", ran.stdout, ran.stderr);
        let yaml = scratch.path().join("rendered.yaml");
        std::fs::write(&yaml, &ran.stdout).expect("write the rendered YAML");
        let parsed = parse_yaml(&yaml, scratch.path());
        let rendering = Self {
            name: name.to_string(),
            objects: parsed["objects"].as_array().expect("objects").clone(),
            toml: serde_json::from_value(parsed["toml"].clone()).expect("toml map"),
            secrets: serde_json::from_value(parsed["secrets"].clone()).expect("secrets map"),
            scratch,
        };
        assert!(!rendering.objects.is_empty(), "deploy/kubernetes/{name} rendered no object");
        let problems = validate(&yaml, &rendering.ids(), rendering.scratch.path());
        assert!(problems.is_empty(), "deploy/kubernetes/{name} does not validate:\n{}", problems.join("\n"));
        rendering
    }

    /// `kind/name` of every object (kind in lower case, as the validator writes it).
    fn ids(&self) -> Vec<String> {
        self.objects.iter().map(|o| format!("{}/{}", text(o, "/kind").to_lowercase(), name_of(o))).collect()
    }

    /// The kinds, sorted.
    fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.objects.iter().map(|o| text(o, "/kind")).collect();
        kinds.sort_unstable();
        kinds
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects.iter().find(|o| o["kind"] == kind && name_of(o) == name)
    }

    /// The Deployments and StatefulSets.
    fn workloads(&self) -> impl Iterator<Item = &Value> {
        self.objects.iter().filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "StatefulSet")))
    }
}

/// The rendered YAML as JSON, through tests/fixtures/kubernetes/manifests.py (PyYAML).
fn parse_yaml(yaml: &Path, scratch: &Path) -> Value {
    let script = tests::workspace_root().join("tests/fixtures/kubernetes/manifests.py");
    let mut cmd = Command::new(tests::python());
    cmd.arg(script).arg(yaml);
    let ran = run_bounded(cmd, COMMAND_TIMEOUT, scratch);
    assert!(ran.ok, "manifests.py failed (is PyYAML in the test Python? scripts/test.sh installs it):\n{}", ran.stderr);
    serde_json::from_str(&ran.stdout).expect("manifests.py prints JSON")
}

/// Runs `kubernetes-validate --strict` on `yaml` for every version of [`KUBERNETES_VERSIONS`]; the problems: a
/// failed run, an ERROR or WARN line (a WARN is an object it has no schema for, which it would let pass), or an
/// object of `ids` (`kind/name`) without its INFO line saying that it passed.
fn validate(yaml: &Path, ids: &[String], scratch: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for version in KUBERNETES_VERSIONS {
        let mut cmd = Command::new(tests::python());
        cmd.args(["-m", "kubernetes_validate", "--strict", "-k", version]).arg(yaml);
        let ran = run_bounded(cmd, COMMAND_TIMEOUT, scratch);
        let output = format!("{}{}", ran.stdout, ran.stderr);
        let bad: Vec<&str> = output
            .lines()
            .filter(|l| l.starts_with("ERROR") || l.starts_with("WARN") || l.starts_with("FATAL"))
            .collect();
        if !ran.ok || !bad.is_empty() {
            problems.push(format!("kubernetes-validate --strict -k {version} (ok: {}):\n{output}", ran.ok));
            continue;
        }
        let minor = version.rsplit_once('.').map_or(*version, |(mm, _)| mm);
        for id in ids {
            let passed = format!("passed for resource {id} against version {minor}");
            if !output.lines().any(|l| l.starts_with("INFO") && l.ends_with(&passed)) {
                problems.push(format!("kubernetes-validate -k {version} did not pass {id}:\n{output}"));
            }
        }
    }
    problems
}

// ---- JSON access ----

fn name_of(o: &Value) -> &str {
    o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<unnamed>")
}

/// The string at `ptr`, or "" when absent.
fn text<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The array at `ptr`, or an empty one when absent.
fn list<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The string map at `ptr` (labels, selectors, annotations).
fn string_map(v: &Value, ptr: &str) -> BTreeMap<String, String> {
    v.pointer(ptr)
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// Whether every pair of `selector` (non-empty) is in `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// An environment variable of a container.
#[derive(Debug, Clone, PartialEq)]
enum EnvVar {
    Literal(String),
    /// `valueFrom.secretKeyRef`: Secret name and key.
    Secret(String, String),
    Other(Value),
}

fn env_of(container: &Value) -> BTreeMap<String, EnvVar> {
    list(container, "/env")
        .iter()
        .map(|e| {
            let value = if let Some(v) = e.get("value") {
                EnvVar::Literal(v.as_str().unwrap_or_default().to_string())
            } else if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
                EnvVar::Secret(text(r, "/name").to_string(), text(r, "/key").to_string())
            } else {
                EnvVar::Other(e.clone())
            };
            (text(e, "/name").to_string(), value)
        })
        .collect()
}

fn literal<'a>(env: &'a BTreeMap<String, EnvVar>, key: &str) -> Option<&'a str> {
    match env.get(key) {
        Some(EnvVar::Literal(v)) => Some(v),
        _ => None,
    }
}

/// `HOST:PORT` -> (host, port).
fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

/// A container port: (name, number, protocol).
fn container_ports(container: &Value) -> Vec<(String, i64, String)> {
    list(container, "/ports")
        .iter()
        .map(|p| {
            let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            (text(p, "/name").to_string(), p["containerPort"].as_i64().unwrap_or(-1), protocol.to_string())
        })
        .collect()
}

fn port_named(container: &Value, name: &str) -> Option<i64> {
    container_ports(container).into_iter().find(|(n, _, _)| n == name).map(|(_, p, _)| p)
}

/// A Kubernetes resource quantity as a number (CPU in cores, memory in bytes); None if unparseable.
fn quantity(q: &Value) -> Option<f64> {
    if let Some(n) = q.as_f64() {
        return Some(n);
    }
    let s = q.as_str()?;
    let units: [(&str, f64); 11] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("n", 1e-9),
        ("u", 1e-6),
    ];
    for (suffix, factor) in units {
        if let Some(number) = s.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    s.parse().ok()
}

/// The flags of an argument list: `--key=value` and `--key value` give `key -> Some(value)`, a lone `--key`
/// `key -> None`; the positional arguments separately.
fn flags(args: &[String]) -> (Vec<String>, BTreeMap<String, Option<String>>) {
    let mut positional = Vec::new();
    let mut flags = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        if let Some(flag) = args[i].strip_prefix("--") {
            match flag.split_once('=') {
                Some((k, v)) => {
                    flags.insert(k.to_string(), Some(v.to_string()));
                }
                None if args.get(i + 1).is_some_and(|next| !next.starts_with("--")) => {
                    flags.insert(flag.to_string(), Some(args[i + 1].clone()));
                    i += 1;
                }
                None => {
                    flags.insert(flag.to_string(), None);
                }
            }
        } else {
            positional.push(args[i].clone());
        }
        i += 1;
    }
    (positional, flags)
}

fn strings(v: &[Value]) -> Vec<String> {
    v.iter().map(|s| s.as_str().unwrap_or_default().to_string()).collect()
}

/// `image` without registry and tag, and whether it has a tag or digest.
fn image_name(image: &str) -> (&str, bool) {
    let (path, digest) = match image.split_once('@') {
        Some((p, _)) => (p, true),
        None => (image, false),
    };
    let last = path.rsplit('/').next().unwrap_or(path);
    match last.split_once(':') {
        Some((name, tag)) => (name, digest || !tag.is_empty()),
        None => (last, digest),
    }
}

// ---- the consistency checks ----

/// Everything that does not hold between the objects of `r` and the images; empty when all is consistent.
fn consistency_problems(r: &Rendering) -> Vec<String> {
    let mut p: Vec<String> = Vec::new();
    macro_rules! check {
        ($cond:expr, $($fmt:tt)+) => {{
            let holds: bool = $cond;
            if !holds {
                p.push(format!($($fmt)+));
            }
        }};
    }

    // Names are unique per kind, and every object has a name.
    let mut seen = BTreeSet::new();
    for id in r.ids() {
        check!(seen.insert(id.clone()), "{id} appears twice");
        check!(!id.ends_with("/<unnamed>"), "an object has no name: {id}");
    }

    // ---- the learner ----
    let statefulsets: Vec<&Value> = r.of_kind("StatefulSet").collect();
    check!(statefulsets.len() == 1, "expected one StatefulSet (the learner), found {}", statefulsets.len());
    let Some(sts) = statefulsets.first().copied() else { return p };
    let containers = list(sts, "/spec/template/spec/containers");
    check!(containers.len() == 1, "the learner pod has {} containers, expected 1", containers.len());
    let Some(container) = containers.first() else { return p };
    let Some(grpc_port) = port_named(container, "grpc") else {
        p.push("the learner container has no port named grpc".into());
        return p;
    };
    let learner_labels = string_map(sts, "/spec/template/metadata/labels");
    check!(
        sts.pointer("/spec/replicas").and_then(Value::as_i64) == Some(1),
        "the learner StatefulSet must have replicas: 1"
    );
    let env = env_of(container);

    check!(
        image_name(text(container, "/image")) == (LEARNER_IMAGE, true),
        "learner image {:?} is not {LEARNER_IMAGE}:TAG",
        text(container, "/image")
    );
    let args = strings(list(container, "/args"));
    check!(list(container, "/command").is_empty(), "the learner's command must stay the image's ENTRYPOINT (learner)");
    let (positional, flag) = flags(&args);
    check!(positional == ["serve"], "the learner's args must be `serve` with flags, got {args:?}");

    // --config: a key of the ConfigMap mounted at its directory, identical to the shipped config of that name.
    let mounts = list(container, "/volumeMounts");
    let volumes = list(sts, "/spec/template/spec/volumes");
    let mounted_volume = |path: &str| -> Option<(&Value, String)> {
        let mount = mounts.iter().find(|m| {
            let at = text(m, "/mountPath").trim_end_matches('/');
            path == at || path.starts_with(&format!("{at}/"))
        })?;
        let rest = path[text(mount, "/mountPath").trim_end_matches('/').len()..].trim_start_matches('/').to_string();
        Some((mount, rest))
    };
    let mut config_toml: Option<&Value> = None;
    match flag.get("config").cloned().flatten() {
        None => p.push("the learner has no --config".into()),
        Some(config) => match mounted_volume(&config) {
            None => p.push(format!("--config={config} is in no volume mount of the learner")),
            Some((mount, key)) => {
                let volume = volumes.iter().find(|v| v["name"] == mount["name"]);
                let cm_name = volume.map(|v| text(v, "/configMap/name")).unwrap_or_default();
                match r.find("ConfigMap", cm_name) {
                    None => {
                        p.push(format!("--config={config}: volume {} is no ConfigMap of the rendering", mount["name"]))
                    }
                    Some(cm) => {
                        let data = cm.pointer(&format!("/data/{key}")).and_then(Value::as_str);
                        check!(data.is_some(), "--config={config}: ConfigMap {cm_name} has no key {key:?}");
                        check!(
                            text(mount, "/subPath").is_empty(),
                            "mount the config directory, not a subPath (no updates)"
                        );
                        check!(mount["readOnly"] == true, "mount the ConfigMap read-only");
                        let shipped = tests::workspace_root().join("configs").join(&key);
                        match std::fs::read_to_string(&shipped) {
                            Ok(file) => check!(
                                data == Some(file.as_str()),
                                "ConfigMap {cm_name} key {key} differs from configs/{key}"
                            ),
                            Err(e) => p.push(format!("ConfigMap key {key}: no configs/{key} to compare with: {e}")),
                        }
                        check!(
                            text(mount, "/mountPath").trim_end_matches('/') == IMAGE_CONFIGS,
                            "the config directory should be {IMAGE_CONFIGS}, where the images keep theirs"
                        );
                        config_toml = r.toml.get(cm_name).and_then(|m| m.get(&key));
                    }
                }
            }
        },
    }
    let config_env = config_toml.and_then(|t| t["env"].as_str()).unwrap_or_default().to_string();
    check!(!config_env.is_empty(), "the learner's config names no env");

    // --runs-dir: the volume claim template's mount.
    let claims = list(sts, "/spec/volumeClaimTemplates");
    match flag.get("runs-dir").cloned().flatten() {
        None => p.push("the learner has no --runs-dir".into()),
        Some(dir) => match mounted_volume(&dir) {
            Some((mount, rest)) if rest.is_empty() => {
                let claim = claims.iter().find(|c| c.pointer("/metadata/name") == Some(&mount["name"]));
                check!(claim.is_some(), "--runs-dir={dir} is not a volumeClaimTemplate's mount");
                if let Some(claim) = claim {
                    check!(
                        list(claim, "/spec/accessModes").iter().any(|m| m == "ReadWriteOnce"),
                        "the learner's claim should be ReadWriteOnce"
                    );
                    check!(
                        claim.pointer("/spec/resources/requests/storage").and_then(quantity).is_some_and(|s| s > 0.0),
                        "the learner's claim requests no storage"
                    );
                    check!(
                        claim.pointer("/spec/storageClassName").is_none(),
                        "no storageClassName in a cluster-independent base"
                    );
                }
                check!(dir == "/data", "--runs-dir={dir}: the images' volume is /data");
            }
            _ => p.push(format!("--runs-dir={dir} is not a mount point of the learner")),
        },
    }
    check!(flag.contains_key("resume"), "the learner must --resume (restarts continue the run)");
    check!(
        flag.get("target-return").cloned().flatten().as_deref() == Some("inf"),
        "the learner must train until stopped (--target-return=inf)"
    );
    check!(flag.get("run-name").cloned().flatten().is_some(), "the learner needs a fixed --run-name to resume");

    // Addresses and ports.
    let listen = literal(&env, "PROXIMA_LISTEN")
        .map(str::to_string)
        .or_else(|| config_toml.and_then(|t| t.pointer("/server/listen")).and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "0.0.0.0:50051".into());
    check!(
        split_addr(&listen) == Some(("0.0.0.0", grpc_port as u16)),
        "the learner listens on {listen}, its grpc port is {grpc_port}"
    );
    let addr_port = |var: &str, port_name: &str, p: &mut Vec<String>| {
        let addr = literal(&env, var).unwrap_or_default();
        let port = port_named(container, port_name);
        if split_addr(addr).map(|(h, port)| (h, Some(i64::from(port)))) != Some(("0.0.0.0", port)) {
            p.push(format!("learner {var}={addr:?} does not bind 0.0.0.0 on its {port_name} port {port:?}"));
        }
    };
    addr_port("PROXIMA_METRICS_ADDR", "metrics", &mut p);
    addr_port("PROXIMA_DASHBOARD_ADDR", "dashboard", &mut p);

    // The token.
    let token_ref = match env.get("PROXIMA_TOKEN") {
        Some(EnvVar::Secret(name, key)) => Some((name.clone(), key.clone())),
        other => {
            p.push(format!("the learner's PROXIMA_TOKEN must come from a Secret (secretKeyRef), got {other:?}"));
            None
        }
    };
    if let Some((name, key)) = &token_ref {
        match r.secrets.get(name).and_then(|s| s.get(key)) {
            None => p.push(format!("Secret {name} with key {key} is not in the rendering")),
            Some(token) => check!(
                !token.is_empty() && token.chars().all(|c| c.is_ascii_graphic()),
                "the token of Secret {name} must be printable ASCII, no spaces or newlines (an HTTP header value)"
            ),
        }
    }

    // Probes: the gRPC health service on the gRPC port.
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let grpc = container.pointer(&format!("/{probe}/grpc"));
        check!(grpc.is_some(), "the learner's {probe} is not a gRPC probe");
        if let Some(grpc) = grpc {
            check!(
                grpc["port"].as_i64() == Some(grpc_port),
                "the learner's {probe} probes port {}, not the gRPC port {grpc_port}",
                grpc["port"]
            );
            check!(
                grpc["service"] == HEALTH_SERVICE,
                "the learner's {probe} asks for service {}, not {HEALTH_SERVICE}",
                grpc["service"]
            );
        }
    }

    // Room for the final checkpoint after SIGTERM.
    let grace =
        config_toml.and_then(|t| t.pointer("/server/shutdown_grace_seconds")).and_then(Value::as_f64).unwrap_or(30.0);
    let termination =
        sts.pointer("/spec/template/spec/terminationGracePeriodSeconds").and_then(Value::as_f64).unwrap_or(30.0);
    check!(
        termination >= grace + 10.0,
        "terminationGracePeriodSeconds {termination} leaves no room after the {grace} s shutdown grace"
    );
    check!(
        sts.pointer("/spec/template/spec/securityContext/fsGroup").and_then(Value::as_i64) == Some(IMAGE_UID),
        "the learner's fsGroup must be {IMAGE_UID} (its volume)"
    );

    // The governing Service.
    let service_name = text(sts, "/spec/serviceName");
    match r.find("Service", service_name) {
        None => p.push(format!("the StatefulSet's serviceName {service_name:?} is no Service of the rendering")),
        Some(svc) => check!(
            svc.pointer("/spec/clusterIP") == Some(&Value::from("None")),
            "the StatefulSet's Service {service_name} must be headless"
        ),
    }

    // ---- Services: select a pod template, and their target ports exist there ----
    let templates: Vec<(&Value, BTreeMap<String, String>)> =
        r.workloads().map(|w| (w, string_map(w, "/spec/template/metadata/labels"))).collect();
    let mut learner_services: Vec<&Value> = Vec::new();
    for svc in r.of_kind("Service") {
        let selector = string_map(svc, "/spec/selector");
        let selected: Vec<&Value> = templates.iter().filter(|(_, l)| selects(&selector, l)).map(|(w, _)| *w).collect();
        check!(!selected.is_empty(), "Service {} selects no pod of the rendering", name_of(svc));
        if selects(&selector, &learner_labels) {
            learner_services.push(svc);
        }
        for port in list(svc, "/spec/ports") {
            for w in &selected {
                let ok = list(w, "/spec/template/spec/containers").iter().any(|c| {
                    container_ports(c).iter().any(|(n, num, proto)| {
                        let target = port.get("targetPort").unwrap_or(&port["port"]);
                        (target.as_str() == Some(n.as_str()) || target.as_i64() == Some(*num))
                            && proto == port.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                    })
                });
                check!(ok, "Service {} port {} reaches no container port of {}", name_of(svc), port, name_of(w));
            }
        }
    }
    for (name, _, _) in container_ports(container) {
        check!(
            learner_services.iter().any(|s| s["spec"]["clusterIP"] != "None"
                && list(s, "/spec/ports").iter().any(|sp| sp["targetPort"] == name.as_str())),
            "no ClusterIP Service exposes the learner's {name} port"
        );
    }
    // The Service port that leads to the learner's gRPC port, by Service name.
    let grpc_services: BTreeMap<&str, Vec<i64>> = learner_services
        .iter()
        .map(|s| {
            let ports = list(s, "/spec/ports")
                .iter()
                .filter(|sp| {
                    let target = sp.get("targetPort").unwrap_or(&sp["port"]);
                    target == "grpc" || target.as_i64() == Some(grpc_port)
                })
                .filter_map(|sp| sp["port"].as_i64())
                .collect();
            (name_of(s), ports)
        })
        .collect();

    // ---- the actors ----
    let actors: Vec<&Value> = r.of_kind("Deployment").collect();
    check!(!actors.is_empty(), "no actor Deployment");
    for actor in &actors {
        let name = name_of(actor);
        let containers = list(actor, "/spec/template/spec/containers");
        check!(containers.len() == 1, "actor {name} has {} containers, expected 1", containers.len());
        let Some(c) = containers.first() else { continue };
        let env = env_of(c);
        let (image, tagged) = image_name(text(c, "/image"));
        check!(tagged, "actor {name}'s image has no tag");
        check!(
            image == ACTOR_IMAGE || image == PYTHON_ACTOR_IMAGE,
            "actor {name}'s image {image} is neither {ACTOR_IMAGE} nor {PYTHON_ACTOR_IMAGE}"
        );
        check!(
            list(c, "/command").is_empty() && list(c, "/args").is_empty(),
            "actor {name}: configure by PROXIMA_* variables, keep the image's ENTRYPOINT and no args"
        );
        if image == PYTHON_ACTOR_IMAGE {
            check!(
                env.contains_key("PROXIMA_LOG") && !env.contains_key("RUST_LOG"),
                "Python actor {name} takes PROXIMA_LOG, not RUST_LOG"
            );
        } else {
            check!(env.contains_key("RUST_LOG"), "Rust actor {name} should set RUST_LOG");
        }

        // PROXIMA_LEARNER = http://<Service selecting the learner>:<its gRPC port>
        let url = literal(&env, "PROXIMA_LEARNER").unwrap_or_default();
        let target = url.strip_prefix("http://").and_then(split_addr);
        match target {
            None => p.push(format!("actor {name}: PROXIMA_LEARNER {url:?} is not http://HOST:PORT")),
            Some((host, port)) => {
                let svc = host.split('.').next().unwrap_or(host);
                match grpc_services.get(svc) {
                    None => p.push(format!(
                        "actor {name}: PROXIMA_LEARNER host {host} is no Service selecting the learner ({:?})",
                        grpc_services.keys()
                    )),
                    Some(ports) => check!(
                        ports.contains(&i64::from(port)),
                        "actor {name}: port {port} of Service {svc} does not reach the learner gRPC port ({ports:?})"
                    ),
                }
            }
        }
        check!(
            literal(&env, "PROXIMA_ENV") == Some(config_env.as_str()),
            "actor {name}: PROXIMA_ENV {:?} is not the learner config's env {config_env:?}",
            literal(&env, "PROXIMA_ENV")
        );
        match (&token_ref, env.get("PROXIMA_TOKEN")) {
            (Some((s, k)), Some(EnvVar::Secret(s2, k2))) => {
                check!(s == s2 && k == k2, "actor {name} takes its token from {s2}/{k2}, the learner from {s}/{k}")
            }
            (_, other) => {
                p.push(format!("actor {name}: PROXIMA_TOKEN must come from the learner's Secret, got {other:?}"))
            }
        }
        let metrics = literal(&env, "PROXIMA_METRICS_ADDR").and_then(split_addr);
        let metrics_port = port_named(c, "metrics");
        check!(
            metrics.map(|(h, port)| (h, Some(i64::from(port)))) == Some(("0.0.0.0", metrics_port)),
            "actor {name}: PROXIMA_METRICS_ADDR does not bind 0.0.0.0 on its metrics port {metrics_port:?}"
        );

        // Scalable: nothing per pod.
        let spec = &actor["spec"]["template"]["spec"];
        check!(
            list(c, "/ports").iter().all(|port| port.get("hostPort").is_none()),
            "actor {name} has a hostPort: one pod per node at most"
        );
        check!(spec.get("hostNetwork").is_none_or(|h| h == false), "actor {name} uses the host network");
        check!(spec.get("nodeName").is_none(), "actor {name} is pinned to a node");
        for v in list(spec, "/volumes") {
            check!(
                v.get("emptyDir").is_some() || v.get("configMap").is_some() || v.get("secret").is_some(),
                "actor {name} has a volume with state: {v}"
            );
        }
        check!(
            !env.contains_key("PROXIMA_ACTOR_NAME"),
            "actor {name} sets PROXIMA_ACTOR_NAME: every replica the same name (default: the pod's host name)"
        );
        check!(
            actor.pointer("/spec/replicas").and_then(Value::as_i64).is_some_and(|n| n >= 0),
            "actor {name} has no replica count"
        );
    }

    // ---- every workload: selectors, security, resources, Prometheus ----
    for (w, labels) in &templates {
        let name = name_of(w);
        let selector = string_map(w, "/spec/selector/matchLabels");
        check!(selects(&selector, labels), "{name}'s selector does not select its own pods");
        for (other, other_labels) in &templates {
            if name_of(other) != name {
                check!(
                    !selects(&selector, other_labels),
                    "{name}'s selector also selects the pods of {}",
                    name_of(other)
                );
            }
        }
        let spec = &w["spec"]["template"]["spec"];
        check!(
            spec["enableServiceLinks"] == false,
            "{name}: enableServiceLinks must be false (no PROXIMA_LEARNER_* service variables)"
        );
        check!(
            spec["automountServiceAccountToken"] == false,
            "{name} needs no API access: automountServiceAccountToken: false"
        );
        let annotations = string_map(w, "/spec/template/metadata/annotations");
        check!(
            annotations.get("prometheus.io/scrape").map(String::as_str) == Some("true"),
            "{name}: no prometheus.io/scrape annotation"
        );
        check!(
            annotations.get("prometheus.io/path").map(String::as_str) == Some("/metrics"),
            "{name}: prometheus.io/path must be /metrics"
        );
        for c in list(spec, "/containers") {
            let cname = text(c, "/name");
            let metrics = port_named(c, "metrics");
            check!(
                metrics.is_some() && annotations.get("prometheus.io/port") == metrics.map(|m| m.to_string()).as_ref(),
                "{name}: prometheus.io/port {:?} is not the metrics port {metrics:?}",
                annotations.get("prometheus.io/port")
            );
            let sc = |key: &str| {
                c.pointer(&format!("/securityContext/{key}"))
                    .or_else(|| spec.pointer(&format!("/securityContext/{key}")))
            };
            check!(sc("runAsNonRoot") == Some(&Value::Bool(true)), "{name}/{cname}: runAsNonRoot");
            check!(
                sc("runAsUser").and_then(Value::as_i64) == Some(IMAGE_UID),
                "{name}/{cname}: runAsUser must be the images' {IMAGE_UID}"
            );
            check!(
                sc("runAsGroup").and_then(Value::as_i64) == Some(IMAGE_UID),
                "{name}/{cname}: runAsGroup must be the images' {IMAGE_UID}"
            );
            check!(
                c.pointer("/securityContext/readOnlyRootFilesystem") == Some(&Value::Bool(true)),
                "{name}/{cname}: readOnlyRootFilesystem"
            );
            check!(
                c.pointer("/securityContext/allowPrivilegeEscalation") == Some(&Value::Bool(false)),
                "{name}/{cname}: allowPrivilegeEscalation: false"
            );
            check!(
                list(c, "/securityContext/capabilities/drop").iter().any(|d| d == "ALL"),
                "{name}/{cname}: drop ALL capabilities"
            );
            for resource in ["cpu", "memory"] {
                let request = c.pointer(&format!("/resources/requests/{resource}")).and_then(quantity);
                let limit = c.pointer(&format!("/resources/limits/{resource}")).and_then(quantity);
                check!(
                    matches!((request, limit), (Some(r), Some(l)) if r > 0.0 && r <= l),
                    "{name}/{cname}: {resource} request {request:?} and limit {limit:?}"
                );
            }
        }
    }
    p
}

// ---- the tests ----

#[test]
fn the_base_renders_validates_and_is_consistent() {
    let r = Rendering::new("base");
    println!("{}: {}", r.name, r.ids().join(", "));
    assert_eq!(r.kinds(), ["ConfigMap", "Deployment", "Secret", "Service", "Service", "StatefulSet"]);
    for o in &r.objects {
        assert!(o.pointer("/metadata/namespace").is_none(), "the base sets a namespace on {}", name_of(o));
    }
    let problems = consistency_problems(&r);
    assert!(problems.is_empty(), "deploy/kubernetes/base:\n- {}", problems.join("\n- "));
    let actor = r.find("Deployment", "proxima-actor").expect("Deployment proxima-actor");
    assert_eq!(actor["spec"]["replicas"], 2);
    // The ConfigMap and Secret names carry kustomize's content hash, so a change rolls the pods.
    for kind in ["ConfigMap", "Secret"] {
        let o = r.of_kind(kind).next().expect(kind);
        assert!(name_of(o).len() > "proxima-config-".len(), "{kind} {} has no content hash", name_of(o));
    }
}

#[test]
fn the_python_actors_overlay_renders_validates_and_is_consistent() {
    let r = Rendering::new("overlays/python-actors");
    println!("{}: {}", r.name, r.ids().join(", "));
    let problems = consistency_problems(&r);
    assert!(problems.is_empty(), "deploy/kubernetes/{}:\n- {}", r.name, problems.join("\n- "));
    let rust = r.find("Deployment", "proxima-actor").expect("Deployment proxima-actor");
    assert_eq!(rust["spec"]["replicas"], 0, "the overlay scales the Rust actors to 0");
    let python = r.find("Deployment", "proxima-actor-python").expect("Deployment proxima-actor-python");
    assert!(python["spec"]["replicas"].as_i64().is_some_and(|n| n >= 1));
    let image = text(python, "/spec/template/spec/containers/0/image");
    assert_eq!(image_name(image), (PYTHON_ACTOR_IMAGE, true), "{image}");
}

#[test]
fn every_kustomization_is_checked() {
    // A new overlay needs a test here: each directory with a kustomization.yaml is in KUSTOMIZATIONS.
    let mut found = Vec::new();
    let mut dirs = vec![kubernetes_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read deploy/kubernetes").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml" || n == "kustomization.yml") {
                found.push(dir.strip_prefix(kubernetes_dir()).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    let mut expected: Vec<String> = KUSTOMIZATIONS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(found, expected);
}

#[test]
fn the_base_config_is_the_shipped_config() {
    // kustomize reads files only inside the kustomization's directory: the base keeps a copy.
    let copy =
        std::fs::read(kubernetes_dir().join("base/cartpole.toml")).expect("deploy/kubernetes/base/cartpole.toml");
    let shipped = std::fs::read(tests::workspace_root().join("configs/cartpole.toml")).expect("configs/cartpole.toml");
    assert!(copy == shipped, "deploy/kubernetes/base/cartpole.toml differs from configs/cartpole.toml: copy it again");
}

#[test]
fn the_validator_rejects_what_a_cluster_would() {
    // Guards the check itself: an unknown field, a wrong type and a kind without a schema each fail it.
    let r = Rendering::new("base");
    let mut objects = r.objects.clone();
    let sts = objects.iter_mut().find(|o| o["kind"] == "StatefulSet").expect("StatefulSet");
    sts["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSecond"] = 20.into();
    let actor = objects.iter_mut().find(|o| o["kind"] == "Deployment").expect("Deployment");
    actor["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9001".into();
    objects.push(serde_json::json!({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "proxima"},
        "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "proxima"}}}
    }));
    // JSON documents are YAML documents.
    let yaml = r.scratch.path().join("broken.yaml");
    let docs: Vec<String> = objects.iter().map(|o| serde_json::to_string_pretty(o).unwrap()).collect();
    std::fs::write(&yaml, docs.join("\n---\n")).unwrap();
    let ids: Vec<String> =
        objects.iter().map(|o| format!("{}/{}", text(o, "/kind").to_lowercase(), name_of(o))).collect();
    let problems = validate(&yaml, &ids, r.scratch.path()).join("\n");
    for expected in ["'periodSecond' was unexpected", "'9001' is not of type 'integer'", "PodMonitor"] {
        assert!(problems.contains(expected), "the validator did not report {expected:?}:\n{problems}");
    }
}

/// A container of a rendered workload, run here: its environment with `PROXIMA_*` bind addresses moved to
/// loopback ports, and the container ports that they now are.
struct Mapped {
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// container port -> loopback port
    ports: BTreeMap<i64, u16>,
}

/// Maps `container` of rendering `r` to this machine: every container port to a free loopback port (the
/// `0.0.0.0:PORT` variables with it), Secret references to their values, and paths under the mounts of
/// `paths` (mount path -> local directory) to those directories.
fn map_container(r: &Rendering, container: &Value, paths: &[(String, PathBuf)]) -> Mapped {
    let ports: BTreeMap<i64, u16> = container_ports(container).into_iter().map(|(_, p, _)| (p, free_port())).collect();
    let map_path = |v: &str| -> String {
        for (at, local) in paths {
            if v == at {
                return local.display().to_string();
            }
            if let Some(rest) = v.strip_prefix(&format!("{at}/")) {
                return local.join(rest).display().to_string();
            }
        }
        v.to_string()
    };
    let map_arg = |a: &str| match a.split_once('=') {
        Some((flag, v)) if flag.starts_with("--") => format!("{flag}={}", map_path(v)),
        _ => map_path(a),
    };
    let args = strings(list(container, "/args")).iter().map(|a| map_arg(a)).collect();
    let env = env_of(container)
        .into_iter()
        .map(|(k, v)| {
            let value = match v {
                EnvVar::Literal(v) => match split_addr(&v) {
                    Some(("0.0.0.0", port)) if ports.contains_key(&i64::from(port)) => {
                        format!("127.0.0.1:{}", ports[&i64::from(port)])
                    }
                    _ => map_path(&v),
                },
                EnvVar::Secret(name, key) => r.secrets[&name][&key].clone(),
                EnvVar::Other(v) => panic!("{k}: cannot run a value of {v}"),
            };
            (k, value)
        })
        .collect();
    Mapped { args, env, ports }
}

/// The gRPC health check the kubelet's probes make: `grpc.health.v1.Health/Check` for `service`.
fn probe(port: u16, service: &str) -> Result<(), String> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        let check = async {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let resp = HealthClient::new(channel)
                .check(HealthCheckRequest { service: service.into() })
                .await
                .map_err(|e| e.to_string())?;
            match resp.into_inner().status() {
                ServingStatus::Serving => Ok(()),
                other => Err(format!("{other:?}")),
            }
        };
        tokio::time::timeout(Duration::from_secs(5), check).await.map_err(|_| "timed out".to_string())?
    })
}

#[test]
fn the_rendered_learner_and_actors_run_and_train() {
    // The overlay holds both actor Deployments (the Rust one at 0 replicas) and the base's learner.
    let r = Rendering::new("overlays/python-actors");
    let dir = tempfile::tempdir().expect("temporary directory");
    let (configs, data) = (dir.path().join("configs"), dir.path().join("data"));
    std::fs::create_dir_all(&data).unwrap();

    // The learner: its ConfigMap's files in place of the config mount, a directory for the volume.
    let sts = r.of_kind("StatefulSet").next().expect("StatefulSet");
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    let volumes = list(sts, "/spec/template/spec/volumes");
    let mut paths = Vec::new();
    for mount in list(container, "/volumeMounts") {
        let at = text(mount, "/mountPath").to_string();
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]);
        match volume.and_then(|v| v.pointer("/configMap/name")).and_then(Value::as_str) {
            Some(cm) => {
                std::fs::create_dir_all(&configs).unwrap();
                let cm = r.find("ConfigMap", cm).expect("the mounted ConfigMap");
                for (key, value) in cm["data"].as_object().expect("ConfigMap data") {
                    std::fs::write(configs.join(key), value.as_str().unwrap()).unwrap();
                }
                paths.push((at, configs.clone()));
            }
            None => paths.push((at, data.clone())),
        }
    }
    let learner_map = map_container(&r, container, &paths);
    let grpc = learner_map.ports[&port_named(container, "grpc").expect("grpc port")];
    let metrics = learner_map.ports[&port_named(container, "metrics").expect("metrics port")];
    let dashboard = learner_map.ports[&port_named(container, "dashboard").expect("dashboard port")];
    let env: Vec<(&str, String)> = learner_map.env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    println!(
        "learner {} with {:?}",
        learner_map.args.join(" "),
        learner_map.env.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let mut learner = Proc::spawn("learner", &tests::bin_path("learner"), &learner_map.args, &env, dir.path());
    let service = text(container, "/readinessProbe/grpc/service").to_string();
    let started = Instant::now();
    learner
        .wait_for("the readiness probe's gRPC health check", Duration::from_secs(60), |_| probe(grpc, &service).ok());
    println!("learner serving after {:.1?}", started.elapsed());

    // One actor of each Deployment, its PROXIMA_LEARNER host (the Service) resolved to the learner here.
    let mut actors = Vec::new();
    for deployment in r.of_kind("Deployment") {
        let name = name_of(deployment).to_string();
        let c = &deployment["spec"]["template"]["spec"]["containers"][0];
        let mut mapped = map_container(&r, c, &[]);
        for (k, v) in mapped.env.iter_mut() {
            if k == "PROXIMA_LEARNER" {
                *v = format!("http://127.0.0.1:{grpc}");
            }
        }
        // What the pod's host name would give each replica.
        mapped.env.push(("PROXIMA_ACTOR_NAME".into(), format!("{name}-0")));
        let env: Vec<(&str, String)> = mapped.env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let (bin, args) = match image_name(text(c, "/image")).0 {
            PYTHON_ACTOR_IMAGE => (tests::python(), vec!["-m".to_string(), "proxima_actor".to_string()]),
            _ => (tests::bin_path("actor"), Vec::new()),
        };
        let metrics_port = mapped.ports[&port_named(c, "metrics").expect("metrics port")];
        actors.push((Proc::spawn(&name, &bin, &args, &env, dir.path()), metrics_port));
    }

    // Every actor's rollouts are accepted (the token, env and URL fit), and the learner updates.
    for (actor, metrics_port) in actors.iter_mut() {
        let port = *metrics_port;
        let name = actor.name.clone();
        actor.wait_for(&format!("accepted rollouts of {name}"), Duration::from_secs(120), |_| {
            let text = scrape(port)?;
            let accepted: f64 = samples(&text, "proxima_actor_rollouts_total")
                .iter()
                .filter(|(labels, _)| labels.contains("outcome=\"accepted\""))
                .map(|(_, v)| v)
                .sum();
            (accepted >= 2.0).then_some(accepted)
        });
        println!("{name}: rollouts accepted");
    }
    let run_dir = data.join(flags(&learner_map.args).1["run-name"].clone().expect("--run-name"));
    learner.wait_for("two updates in progress.csv", Duration::from_secs(120), |_| {
        (tests::read_progress(&run_dir).len() >= 2).then_some(())
    });
    // Each read is retried for a while: one slow answer on a loaded machine is not a failure.
    let text =
        learner.wait_for("the learner's /metrics on its metrics port", Duration::from_secs(10), |_| scrape(metrics));
    assert!(text.contains("proxima_learner_connected_actors"), "learner metrics lack connected_actors");
    learner.wait_for("the dashboard on its port", Duration::from_secs(10), |_| http_get(dashboard, "/api/state"));

    // SIGTERM, as the kubelet sends it: the learner ends within the grace period with a final checkpoint.
    let grace = sts.pointer("/spec/template/spec/terminationGracePeriodSeconds").and_then(Value::as_u64).unwrap_or(30);
    let stopping = Instant::now();
    learner.signal("TERM");
    let status = learner.wait_exit(Duration::from_secs(grace), || {});
    println!("learner exited ({status}) {:.1?} after SIGTERM (grace {grace} s)", stopping.elapsed());
    assert!(status.success(), "the learner did not exit cleanly on SIGTERM: {status}\n{}", learner.tail(30));
    let saved = tests::procs::checkpoints(&run_dir.join("checkpoints"));
    assert!(!saved.is_empty(), "no checkpoint in {}", run_dir.display());
    assert!(run_dir.join("model.safetensors").is_file(), "no model.safetensors after SIGTERM");
}
