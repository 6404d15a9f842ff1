//! The wire protocol (`proto/ppo/v1/ppo.proto`) and conversions between its messages and our types.

use crate::env::{Dtype, EpisodeStats, Space, SpaceError};
use crate::ids::{ActorId, PolicyVersion};
use crate::obs::ObsBuf;
use crate::policy::PolicySnapshot;
use crate::rollout::{Rollout, RolloutError, RolloutErrorKind};
use bytes::Bytes;

/// Generated protobuf types and gRPC stubs of `ppo.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("ppo.v1");

    /// Encoded `FileDescriptorSet` of `ppo.v1`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ppo_v1_descriptor.bin"));
}

/// TLS settings for a client of the learner: trust the CA certificate(s) in the PEM file `ca`, and verify the
/// learner's certificate for `domain` (by default the host of the URL the client connects to).
pub fn client_tls(ca: &std::path::Path, domain: Option<&str>) -> Result<tonic::transport::ClientTlsConfig, String> {
    let pem = read_pem(ca, "--tls-ca", Pem::Certificate)?;
    let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
    Ok(match domain {
        Some(domain) => tls.domain_name(domain),
        None => tls,
    })
}

/// What a PEM file given for TLS must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pem {
    /// A `CERTIFICATE` block (a certificate or a CA's).
    Certificate,
    /// A private key block of any kind (`PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`).
    PrivateKey,
}

/// Reads the PEM file `path`, given with `flag`, and refuses one without a block of the kind `pem` (a file of
/// something else, or the key where the certificate belongs): TLS itself would only say "transport error" later.
/// The message names the flag and the file.
pub fn read_pem(path: &std::path::Path, flag: &str, pem: Pem) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let found = text.lines().map(str::trim).any(|line| {
        let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) else {
            return false;
        };
        match pem {
            Pem::Certificate => label == "CERTIFICATE",
            Pem::PrivateKey => label.ends_with("PRIVATE KEY"),
        }
    });
    let wanted = match pem {
        Pem::Certificate => "a certificate (-----BEGIN CERTIFICATE-----)",
        Pem::PrivateKey => "a private key (-----BEGIN PRIVATE KEY-----)",
    };
    match found {
        true => Ok(bytes),
        false => Err(format!("{flag} {}: no PEM block of {wanted} in it", path.display())),
    }
}

/// The messages of `error`'s causes that neither its own message nor an earlier cause already holds (a context
/// that quotes its OS error, a transport error whose cause says "Connection refused").
pub fn unsaid_causes(error: &dyn std::error::Error) -> Vec<String> {
    let said = error.to_string();
    let mut causes: Vec<String> = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !said.contains(&text) && !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        source = cause.source();
    }
    causes
}

/// `error` and its [`unsaid_causes`] on one line, `: `-separated (a tonic transport error alone says only
/// "transport error").
pub fn with_causes(error: &dyn std::error::Error) -> String {
    std::iter::once(error.to_string()).chain(unsaid_causes(error)).collect::<Vec<_>>().join(": ")
}

/// Metadata key of a rejection status: its reason, one of [`crate::metrics::reason`] (the label the learner counts
/// it under). Clients branch on this, never on the message text.
pub const REASON_KEY: &str = "proxima-reason";

/// `status` with its rejection `reason` attached under [`REASON_KEY`].
pub fn with_reason(mut status: tonic::Status, reason: &'static str) -> tonic::Status {
    status.metadata_mut().insert(REASON_KEY, tonic::metadata::MetadataValue::from_static(reason));
    status
}

/// The rejection reason a learner attached to `status`, if any.
pub fn rejection_reason(status: &tonic::Status) -> Option<&str> {
    status.metadata().get(REASON_KEY).and_then(|v| v.to_str().ok())
}

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: pb::ProtocolVersion = pb::ProtocolVersion::ProtocolVersion1;

impl From<&Space> for pb::Space {
    fn from(s: &Space) -> Self {
        let kind = match s {
            Space::Discrete { n } => pb::space::Kind::Discrete(pb::Discrete { n: *n as u32 }),
            Space::Box { low, high, shape, dtype } => pb::space::Kind::Box(pb::BoxSpace {
                low: low.clone(),
                high: high.clone(),
                shape: shape.iter().map(|&d| d as u32).collect(),
                dtype: match dtype {
                    Dtype::Float32 => pb::Dtype::Float32,
                    Dtype::Uint8 => pb::Dtype::Uint8,
                } as i32,
            }),
            Space::MultiDiscrete { nvec } => {
                pb::space::Kind::MultiDiscrete(pb::MultiDiscrete { nvec: nvec.iter().map(|&n| n as u32).collect() })
            }
        };
        pb::Space { kind: Some(kind) }
    }
}

impl From<pb::PolicyUpdate> for PolicySnapshot {
    fn from(u: pb::PolicyUpdate) -> Self {
        PolicySnapshot {
            version: u.version,
            weights: u.weights,
            published_at: u.published_at,
            incarnation: u.incarnation,
        }
    }
}

/// The message that sends `snapshot` from the learner process `incarnation` (the learner stamps its own
/// incarnation on every policy it sends).
pub fn policy_update(snapshot: &PolicySnapshot, incarnation: u64) -> pb::PolicyUpdate {
    pb::PolicyUpdate {
        version: snapshot.version,
        weights: snapshot.weights.clone(),
        published_at: snapshot.published_at,
        incarnation,
    }
}

impl TryFrom<&pb::Space> for Space {
    type Error = SpaceError;

    fn try_from(s: &pb::Space) -> Result<Self, SpaceError> {
        match &s.kind {
            Some(pb::space::Kind::Discrete(d)) => Ok(Space::Discrete { n: d.n as usize }),
            Some(pb::space::Kind::Box(b)) => {
                let dtype = match pb::Dtype::try_from(b.dtype) {
                    Ok(pb::Dtype::Float32) => Dtype::Float32,
                    Ok(pb::Dtype::Uint8) => Dtype::Uint8,
                    Err(_) => return Err(SpaceError::Bounds(format!("unknown dtype {}", b.dtype))),
                };
                let shape = match b.shape.as_slice() {
                    [] => vec![b.low.len()],
                    dims => dims.iter().map(|&d| d as usize).collect(),
                };
                // One bound per value: a single bound is not broadcast on the wire.
                if b.low.len() != b.high.len() || b.low.len() != shape.iter().product::<usize>() {
                    return Err(SpaceError::BoundsLength);
                }
                Space::shaped(b.low.clone(), b.high.clone(), shape, dtype)
            }
            Some(pb::space::Kind::MultiDiscrete(m)) if !m.nvec.is_empty() && !m.nvec.contains(&0) => {
                Ok(Space::MultiDiscrete { nvec: m.nvec.iter().map(|&n| n as usize).collect() })
            }
            Some(pb::space::Kind::MultiDiscrete(_)) => Err(SpaceError::Nvec),
            None => Err(SpaceError::Unset),
        }
    }
}

fn f32_bytes(xs: &[f32]) -> Bytes {
    Bytes::copy_from_slice(bytemuck::cast_slice(xs))
}

fn bool_bytes(xs: &[bool]) -> Bytes {
    xs.iter().map(|&b| b as u8).collect::<Vec<u8>>().into()
}

fn f32s(field: &'static str, b: &[u8]) -> Result<Vec<f32>, RolloutError> {
    if !b.len().is_multiple_of(4) {
        return Err(RolloutError {
            field,
            reason: format!("{} bytes is not a whole number of f32", b.len()),
            kind: RolloutErrorKind::Shape,
        });
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn bools(field: &'static str, b: &[u8]) -> Result<Vec<bool>, RolloutError> {
    b.iter()
        .enumerate()
        .map(|(i, &x)| match x {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(RolloutError {
                field,
                reason: format!("byte {x} at index {i} is not 0 or 1"),
                kind: RolloutErrorKind::Shape,
            }),
        })
        .collect()
}

impl From<&Rollout> for pb::Rollout {
    fn from(r: &Rollout) -> Self {
        pb::Rollout {
            actor_id: r.actor_id.0,
            policy_version: r.policy_version.0,
            num_steps: r.num_steps as u32,
            num_envs: r.num_envs as u32,
            obs: obs_bytes(&r.obs),
            actions: f32_bytes(&r.actions),
            log_probs: f32_bytes(&r.log_probs),
            values: f32_bytes(&r.values),
            rewards: f32_bytes(&r.rewards),
            terminated: bool_bytes(&r.terminated),
            truncated: bool_bytes(&r.truncated),
            final_obs: obs_bytes(&r.final_obs),
            next_obs: obs_bytes(&r.next_obs),
            episodes: r
                .episodes
                .iter()
                .map(|e| pb::Episode {
                    env_index: e.env_index as u32,
                    episode_return: e.episode_return,
                    length: e.length,
                })
                .collect(),
            incarnation: r.incarnation,
            initial_state: f32_bytes(&r.initial_state),
        }
    }
}

/// Observations as they travel: f32 little-endian or one byte per value.
fn obs_bytes(obs: &ObsBuf) -> Bytes {
    match obs {
        ObsBuf::F32(xs) => f32_bytes(xs),
        ObsBuf::U8(xs) => Bytes::copy_from_slice(xs),
    }
}

fn obs_buf(field: &'static str, dtype: Dtype, b: &[u8]) -> Result<ObsBuf, RolloutError> {
    match dtype {
        Dtype::Float32 => f32s(field, b).map(ObsBuf::F32),
        Dtype::Uint8 => Ok(ObsBuf::U8(b.to_vec())),
    }
}

/// Decodes the packed buffers of `m`, observations in `obs_dtype` (the learner's observation space's); shapes and
/// values are checked afterwards by [`Rollout::validate`].
pub fn rollout(m: &pb::Rollout, obs_dtype: Dtype) -> Result<Rollout, RolloutError> {
    Ok(Rollout {
        actor_id: ActorId(m.actor_id),
        policy_version: PolicyVersion(m.policy_version),
        num_steps: m.num_steps as usize,
        num_envs: m.num_envs as usize,
        obs: obs_buf("obs", obs_dtype, &m.obs)?,
        actions: f32s("actions", &m.actions)?,
        log_probs: f32s("log_probs", &m.log_probs)?,
        values: f32s("values", &m.values)?,
        rewards: f32s("rewards", &m.rewards)?,
        terminated: bools("terminated", &m.terminated)?,
        truncated: bools("truncated", &m.truncated)?,
        final_obs: obs_buf("final_obs", obs_dtype, &m.final_obs)?,
        next_obs: obs_buf("next_obs", obs_dtype, &m.next_obs)?,
        episodes: m
            .episodes
            .iter()
            .map(|e| EpisodeStats {
                env_index: e.env_index as usize,
                episode_return: e.episode_return,
                length: e.length,
            })
            .collect(),
        incarnation: m.incarnation,
        initial_state: f32s("initial_state", &m.initial_state)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A PEM file is taken when it holds the block asked for, and refused naming the flag and the file otherwise.
    #[test]
    fn pem_files_must_hold_what_their_flag_needs() {
        let dir = std::env::temp_dir().join(format!("proxima-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n";
        for (name, text) in [("cert.pem", cert), ("key.pem", key), ("junk.pem", "junk\n")] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        assert!(read_pem(&dir.join("cert.pem"), "--tls-cert", Pem::Certificate).is_ok());
        assert!(read_pem(&dir.join("key.pem"), "--tls-key", Pem::PrivateKey).is_ok());
        for (file, pem, flag) in [
            ("key.pem", Pem::Certificate, "--tls-cert"),
            ("cert.pem", Pem::PrivateKey, "--tls-key"),
            ("junk.pem", Pem::Certificate, "--tls-ca"),
            ("missing.pem", Pem::Certificate, "--tls-ca"),
        ] {
            let err = read_pem(&dir.join(file), flag, pem).unwrap_err();
            assert!(err.starts_with(&format!("{flag} {}", dir.join(file).display())), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Causes are appended once each.
    #[test]
    fn causes_are_said_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(with_causes(&outer), "Connection refused");
        #[derive(Debug)]
        struct Transport(std::io::Error);
        impl std::fmt::Display for Transport {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("transport error")
            }
        }
        impl std::error::Error for Transport {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        assert_eq!(with_causes(&Transport(refused)), "transport error: Connection refused");
    }

    #[test]
    fn rollout_round_trip_and_bad_bytes() {
        let r = Rollout {
            actor_id: ActorId(3),
            policy_version: PolicyVersion(9),
            num_steps: 1,
            num_envs: 2,
            obs: vec![1.0f32, 2.0].into(),
            actions: vec![0.0, 1.0],
            log_probs: vec![-0.5, -0.9],
            values: vec![0.1, 0.2],
            rewards: vec![1.0, 1.0],
            terminated: vec![true, false],
            truncated: vec![false, true],
            final_obs: vec![5.0f32].into(),
            next_obs: vec![3.0f32, 4.0].into(),
            episodes: vec![EpisodeStats { env_index: 1, episode_return: 10.0, length: 10 }],
            incarnation: 77,
            initial_state: vec![0.25, -0.5, 0.0, 1.0],
        };
        let m = pb::Rollout::from(&r);
        assert_eq!(rollout(&m, Dtype::Float32).unwrap(), r);
        let mut bad = m.clone();
        bad.rewards = Bytes::from_static(&[0, 0, 0]);
        assert_eq!(rollout(&bad, Dtype::Float32).unwrap_err().field, "rewards");
        let mut bad = m.clone();
        bad.truncated = Bytes::from_static(&[0, 2]);
        assert_eq!(rollout(&bad, Dtype::Float32).unwrap_err().field, "truncated");
        let mut bad = m.clone();
        bad.initial_state = Bytes::from_static(&[0, 0]);
        assert_eq!(rollout(&bad, Dtype::Float32).unwrap_err().field, "initial_state");
        // Images travel as one byte per value.
        let image =
            Rollout { obs: vec![0u8, 255].into(), final_obs: vec![9u8].into(), next_obs: vec![1u8, 2].into(), ..r };
        let m = pb::Rollout::from(&image);
        assert_eq!((m.obs.len(), m.final_obs.len(), m.next_obs.len()), (2, 1, 2));
        assert_eq!(rollout(&m, Dtype::Uint8).unwrap(), image);
    }

    #[test]
    fn space_round_trip() {
        let image = Space::shaped(vec![0.0], vec![255.0], vec![4, 3, 2], Dtype::Uint8).unwrap();
        for s in [Space::Discrete { n: 3 }, Space::vector(vec![-2.0], vec![2.0]), image] {
            assert_eq!(Space::try_from(&pb::Space::from(&s)).unwrap(), s);
        }
        assert!(Space::try_from(&pb::Space { kind: None }).is_err());
        // An actor from before shaped spaces sends neither shape nor dtype: a float vector.
        let old = pb::BoxSpace { low: vec![0.0; 24], high: vec![255.0; 24], ..Default::default() };
        let old = Space::try_from(&pb::Space { kind: Some(pb::space::Kind::Box(old)) }).unwrap();
        assert_eq!(old, Space::vector(vec![0.0; 24], vec![255.0; 24]));
        let bad = pb::BoxSpace { low: vec![0.0; 24], high: vec![255.0; 24], shape: vec![5, 5], dtype: 1 };
        assert_eq!(
            Space::try_from(&pb::Space { kind: Some(pb::space::Kind::Box(bad)) }),
            Err(SpaceError::BoundsLength)
        );
    }
}
