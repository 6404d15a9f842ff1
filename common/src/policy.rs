//! Policy snapshots (versioned weights as safetensors bytes) and the inference-side policy actors run.
//!
//! A snapshot's safetensors file holds the model parameters under their PyTorch names and, when observation
//! normalisation is on, `obs_rms.mean`, `obs_rms.var` (f64, `[obs_dim]`) and `obs_rms.count` (f64, `[1]`) with
//! the clip value in the metadata key `obs_clip`: everything needed to compute an action from a raw observation.

use crate::codec::{self, CodecError, Decoded};
use crate::distributions::{argmax, categorical_log_prob, gaussian_log_prob, sample_categorical, sample_gaussian};
use crate::env::Space;
use crate::net::{ActorCriticNet, LayoutError};
use crate::normalize::ObsNormalizer;
use rand::Rng;
use std::collections::HashMap;

/// Metadata `format` of a policy snapshot.
pub const SNAPSHOT_FORMAT: &str = "proxima-policy-v1";

/// Why a snapshot could not be encoded, decoded or used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The bytes could not be encoded or decoded (not safetensors, a bad type, NaN or infinity).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The tensors do not fit the network.
    #[error("invalid policy weights: {0}")]
    Layout(#[from] LayoutError),
    /// The observation statistics have another width than the env's observations.
    #[error("invalid policy weights: obs_rms has {got} dims, env has {want}")]
    ObsDims {
        /// Width of the statistics.
        got: usize,
        /// Width of the env's observations.
        want: usize,
    },
    /// The metadata names an activation this build does not know.
    #[error("invalid policy weights: unknown activation {0:?} (tanh or relu)")]
    Activation(String),
    /// Observations handed to [`Policy::act`] are not whole rows.
    #[error("{values} observation values are not rows of {width}")]
    Rows {
        /// Values given.
        values: usize,
        /// Row width.
        width: usize,
    },
}

/// A published policy: its version and its weights as safetensors bytes (cheap to clone and share).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySnapshot {
    /// Monotonic policy version (number of updates since the run started).
    pub version: u64,
    /// Safetensors bytes, see the module docs.
    pub weights: bytes::Bytes,
    /// Unix time in seconds when the learner published it (for weight-update latency).
    pub published_at: f64,
    /// Incarnation of the learner process that published it (0 in-process); versions of different
    /// incarnations are not comparable.
    pub incarnation: u64,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The snapshot bytes of the flat parameters `params` of `net` and the observation statistics.
pub fn encode_weights(
    net: &ActorCriticNet,
    params: &[f32],
    obs_norm: Option<&ObsNormalizer>,
) -> Result<Vec<u8>, PolicyError> {
    net.check_len(params)?;
    let metadata = HashMap::from([
        ("format".to_string(), SNAPSHOT_FORMAT.to_string()),
        (crate::net::ACTIVATION_KEY.to_string(), net.activation().name().to_string()),
    ]);
    Ok(codec::encode(net.named("", params), obs_norm, metadata)?)
}

/// Parses snapshot bytes written by [`encode_weights`].
pub fn decode_weights(bytes: &[u8]) -> Result<Decoded, PolicyError> {
    Ok(codec::decode(bytes)?)
}

/// Actions, behaviour log-probs and values for a batch of observations.
#[derive(Debug, Clone, Default)]
pub struct ActOutput {
    /// `[B, action_dim]` sampled (unclipped) actions; Discrete as the index in f32.
    pub actions: Vec<f32>,
    /// `[B]` log-probabilities of the actions.
    pub log_probs: Vec<f32>,
    /// `[B]` value estimates.
    pub values: Vec<f32>,
}

/// A policy ready for inference on raw observations, on the CPU (the flat-buffer network of [`crate::net`]).
pub struct Policy {
    model: ActorCriticNet,
    params: Vec<f32>,
    obs_norm: Option<ObsNormalizer>,
    log_std: Vec<f32>,
    version: u64,
    /// Normalised observations.
    input: Vec<f32>,
    actor_outs: Vec<Vec<f32>>,
    critic_outs: Vec<Vec<f32>>,
}

impl Policy {
    /// Loads a snapshot; fails if its tensors do not fit the network `model`.
    pub fn from_snapshot(model: &ActorCriticNet, snapshot: &PolicySnapshot) -> Result<Self, PolicyError> {
        let decoded = decode_weights(&snapshot.weights)?;
        if let Some(n) = &decoded.obs_norm
            && n.rms.dim() != model.obs_dim()
        {
            return Err(PolicyError::ObsDims { got: n.rms.dim(), want: model.obs_dim() });
        }
        // The weights say which activation they were trained with (tanh when they do not say).
        let model = match decoded.metadata.get(crate::net::ACTIVATION_KEY) {
            None => model.with_activation(crate::net::Activation::Tanh),
            Some(name) => model.with_activation(
                crate::net::Activation::from_name(name).ok_or_else(|| PolicyError::Activation(name.clone()))?,
            ),
        };
        let params = model.flatten(&decoded.tensors, "")?;
        let log_std = model.log_std().map_or_else(Vec::new, |r| params[r].to_vec());
        Ok(Self {
            model,
            params,
            obs_norm: decoded.obs_norm,
            log_std,
            version: snapshot.version,
            input: Vec::new(),
            actor_outs: Vec::new(),
            critic_outs: Vec::new(),
        })
    }

    /// The snapshot version this policy was loaded from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Chooses actions for raw observations `[B, obs_dim]`: sampled from `rng`, or the mode if `deterministic`.
    pub fn act(
        &mut self,
        obs: &[f32],
        rng: &mut impl Rng,
        deterministic: bool,
        out: &mut ActOutput,
    ) -> Result<(), PolicyError> {
        let d = self.model.obs_dim();
        if !obs.len().is_multiple_of(d.max(1)) {
            return Err(PolicyError::Rows { values: obs.len(), width: d });
        }
        let n = obs.len() / d.max(1);
        self.input.clear();
        self.input.extend_from_slice(obs);
        if let Some(norm) = &self.obs_norm {
            norm.normalize(&mut self.input);
        }
        let (actor, critic) = self.model.split(&self.params);
        self.model.actor().forward(actor, &self.input, n, &mut self.actor_outs);
        self.model.critic().forward(critic, &self.input, n, &mut self.critic_outs);
        out.values.clear();
        out.values.extend_from_slice(self.critic_outs.last().map_or(&[][..], Vec::as_slice));
        let head = self.actor_outs.last().map_or(&[][..], Vec::as_slice).chunks_exact(self.model.actor().out_dim());
        out.actions.clear();
        out.log_probs.clear();
        match self.model.action_space() {
            Space::Discrete { .. } => {
                for logits in head {
                    let (a, lp) = if deterministic {
                        let a = argmax(logits);
                        (a, categorical_log_prob(logits, a))
                    } else {
                        sample_categorical(logits, rng)
                    };
                    out.actions.push(a as f32);
                    out.log_probs.push(lp);
                }
            }
            Space::Box { .. } => {
                let d = self.log_std.len();
                let std: Vec<f32> = self.log_std.iter().map(|ls| ls.exp()).collect();
                for mean in head {
                    let start = out.actions.len();
                    out.actions.resize(start + d, 0.0);
                    let lp = if deterministic {
                        out.actions[start..].copy_from_slice(mean);
                        gaussian_log_prob(mean, mean, &self.log_std, &std)
                    } else {
                        sample_gaussian(mean, &self.log_std, rng, &mut out.actions[start..])
                    };
                    out.log_probs.push(lp);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::net::ModelConfig;
    use rand::SeedableRng;

    #[test]
    fn snapshot_round_trip_is_exact_and_policy_acts() {
        let space = Space::Box { low: vec![-2.0], high: vec![2.0] };
        let net = ActorCriticNet::new(&ModelConfig::default(), 3, &space);
        let params = net.init(1);
        let mut norm = ObsNormalizer::new(3, 10.0);
        norm.rms.update(&[1.0, 2.0, 3.0, 3.0, 2.0, 1.0]);
        let bytes = encode_weights(&net, &params, Some(&norm)).unwrap();
        let decoded = decode_weights(&bytes).unwrap();
        assert_eq!(decoded.obs_norm.as_ref(), Some(&norm));
        assert_eq!(net.flatten(&decoded.tensors, "").unwrap(), params);
        let snapshot = PolicySnapshot { version: 7, weights: bytes.into(), published_at: 0.0, incarnation: 0 };
        let mut policy = Policy::from_snapshot(&net, &snapshot).unwrap();
        assert_eq!(policy.version(), 7);
        let obs = [0.5f32, -0.1, 2.0, 1.0, 1.0, 1.0];
        let mut out = ActOutput::default();
        policy.act(&obs, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0), false, &mut out).unwrap();
        assert_eq!((out.actions.len(), out.log_probs.len(), out.values.len()), (2, 2, 2));
        // The values come from the critic applied to normalised observations.
        let mut normed = obs.to_vec();
        norm.normalize(&mut normed);
        let (mut outs, (_, critic)) = (Vec::new(), net.split(&params));
        net.critic().forward(critic, &normed, 2, &mut outs);
        assert_eq!(outs.last().unwrap(), &out.values);
        // Deterministic: the mean, scored at the mode.
        policy.act(&obs, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0), true, &mut out).unwrap();
        let want = -(params[net.log_std().unwrap()][0] + crate::distributions::HALF_LN_2PI);
        assert!((out.log_probs[0] - want).abs() < 1e-6);
    }

    /// The activation travels with the weights: a policy built on a tanh layout acts with the ReLU the snapshot
    /// names, and an unknown name is an error.
    #[test]
    fn the_snapshot_names_its_activation() {
        use crate::net::Activation;
        let space = Space::Discrete { n: 3 };
        let relu =
            ActorCriticNet::new(&ModelConfig { activation: Activation::Relu, ..ModelConfig::default() }, 4, &space);
        let params = relu.init(3);
        let bytes = encode_weights(&relu, &params, None).unwrap();
        assert_eq!(decode_weights(&bytes).unwrap().metadata["activation"], "relu");
        let tanh_layout = ActorCriticNet::new(&ModelConfig::default(), 4, &space);
        let snapshot = PolicySnapshot { version: 1, weights: bytes.into(), published_at: 0.0, incarnation: 0 };
        let mut policy = Policy::from_snapshot(&tanh_layout, &snapshot).unwrap();
        let obs = [0.3f32, -1.2, 2.0, 0.7];
        let mut want = Vec::new();
        relu.critic().forward(relu.split(&params).1, &obs, 1, &mut want);
        let mut out = ActOutput::default();
        policy.act(&obs, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1), true, &mut out).unwrap();
        assert_eq!(out.values, want.last().unwrap().clone(), "acted with ReLU");

        let metadata = HashMap::from([("activation".to_string(), "gelu".to_string())]);
        let odd = codec::encode(relu.named("", &params), None, metadata).unwrap();
        let snapshot = PolicySnapshot { version: 1, weights: odd.into(), published_at: 0.0, incarnation: 0 };
        assert!(
            matches!(Policy::from_snapshot(&tanh_layout, &snapshot), Err(PolicyError::Activation(a)) if a == "gelu")
        );
    }

    #[test]
    fn garbage_bytes_and_misfits_are_errors_not_panics() {
        let net = ActorCriticNet::new(&ModelConfig::default(), 4, &Space::Discrete { n: 2 });
        let snapshot = |weights: Vec<u8>| PolicySnapshot {
            version: 0,
            weights: weights.into(),
            published_at: 0.0,
            incarnation: 0,
        };
        assert!(Policy::from_snapshot(&net, &snapshot(b"not safetensors".to_vec())).is_err());
        assert!(Policy::from_snapshot(&net, &snapshot(b"\x08\0\0\0\0\0\0\0{}      ".to_vec())).is_err());
        let other = ActorCriticNet::new(&ModelConfig::default(), 5, &Space::Discrete { n: 2 });
        let bytes = encode_weights(&other, &other.init(0), None).unwrap();
        assert!(matches!(Policy::from_snapshot(&net, &snapshot(bytes)), Err(PolicyError::Layout(_))));
        assert!(matches!(encode_weights(&net, &[0.0; 3], None), Err(PolicyError::Layout(LayoutError::Length { .. }))));
    }
}
