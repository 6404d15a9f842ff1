//! Policy snapshots (versioned weights as safetensors bytes) and the inference-side policy actors run.
//!
//! A snapshot's safetensors file holds the model parameters under their PyTorch names, the model spec in the
//! metadata key [`MODEL_KEY`] (JSON, see [`crate::model`]) and, when observation normalisation is on, `obs_rms.mean`, `obs_rms.var` (f64, `[obs_dim]`) and `obs_rms.count` (f64, `[1]`) with
//! the clip value in the metadata key `obs_clip`: everything needed to compute an action from a raw observation.

use crate::codec::{self, CodecError, Decoded};
use crate::distributions::ActionDist;
use crate::model::{ACTIVATION_KEY, Activation, MODEL_KEY, ModelSpec, SpecError};
use crate::net::{ActorCriticNet, LayoutError, NetTrace, Sequences};
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
    /// The metadata's model spec is unreadable, unsupported, or does not fit the env.
    #[error("invalid policy weights: {0}")]
    Spec(#[from] SpecError),
    /// Observations handed to [`Policy::act`] are not whole rows.
    #[error("{values} observation values are not rows of {width}")]
    Rows {
        /// Values given.
        values: usize,
        /// Row width.
        width: usize,
    },
    /// The recurrent state handed to [`Policy::act`] does not have one row per observation.
    #[error("{values} state values for {rows} observations; the model's state has {width} values per env")]
    State {
        /// State values given.
        values: usize,
        /// Observation rows.
        rows: usize,
        /// Values per env.
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
        (MODEL_KEY.to_string(), net.spec().to_json()),
        (ACTIVATION_KEY.to_string(), net.spec().activation().name().to_string()),
    ]);
    Ok(codec::encode(net.named("", params), obs_norm, metadata)?)
}

/// Parses snapshot bytes written by [`encode_weights`].
pub fn decode_weights(bytes: &[u8]) -> Result<Decoded, PolicyError> {
    Ok(codec::decode(bytes)?)
}

/// The model spec of decoded snapshot metadata: the one under [`MODEL_KEY`], or for a snapshot written before
/// specs existed, `legacy` with the activation of [`ACTIVATION_KEY`] (tanh when absent).
pub fn snapshot_spec(metadata: &HashMap<String, String>, legacy: &ModelSpec) -> Result<ModelSpec, PolicyError> {
    if let Some(json) = metadata.get(MODEL_KEY) {
        return Ok(ModelSpec::from_json(json)?);
    }
    let activation = match metadata.get(ACTIVATION_KEY) {
        None => Activation::Tanh,
        Some(name) => Activation::from_name(name).ok_or_else(|| PolicyError::Activation(name.clone()))?,
    };
    let mut spec = legacy.clone();
    match &mut spec.encoder {
        crate::model::Encoder::Mlp { activation: a, .. } | crate::model::Encoder::Conv { activation: a, .. } => {
            *a = activation
        }
    }
    Ok(spec)
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
    dist: ActionDist,
    version: u64,
    /// Normalised observations.
    input: Vec<f32>,
    trace: NetTrace,
    /// `[B]` no row starts an episode inside a one-step call (the caller zeroes a new episode's state).
    starts: Vec<bool>,
    /// `[B, state_dim]` the states after the step, before they replace the caller's.
    next_state: Vec<f32>,
}

impl Policy {
    /// Loads a snapshot for an env whose observations and actions `env` describes: the network is the snapshot's
    /// own spec (or, for a snapshot without one, `env` with the snapshot's activation), and it must take the env's
    /// observations and produce its actions.
    pub fn from_snapshot(env: &ModelSpec, snapshot: &PolicySnapshot) -> Result<Self, PolicyError> {
        let decoded = decode_weights(&snapshot.weights)?;
        let spec = snapshot_spec(&decoded.metadata, env)?;
        spec.check_env_of(env)?;
        let model = ActorCriticNet::new(&spec)?;
        if let Some(n) = &decoded.obs_norm
            && n.rms.dim() != model.obs_dim()
        {
            return Err(PolicyError::ObsDims { got: n.rms.dim(), want: model.obs_dim() });
        }
        let params = model.flatten(&decoded.tensors, "")?;
        let log_std = model.log_std().map_or(&[][..], |r| &params[r]);
        let dist = ActionDist::new(model.head(), log_std);
        Ok(Self {
            model,
            params,
            obs_norm: decoded.obs_norm,
            dist,
            version: snapshot.version,
            input: Vec::new(),
            trace: NetTrace::default(),
            starts: Vec::new(),
            next_state: Vec::new(),
        })
    }

    /// Values of one env's recurrent state (0: memoryless); a new episode's state is zeros.
    pub fn state_dim(&self) -> usize {
        self.model.state_dim()
    }

    /// The snapshot version this policy was loaded from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The network the snapshot describes.
    pub fn spec(&self) -> &ModelSpec {
        self.model.spec()
    }

    /// Chooses actions for raw observations `[B, obs_dim]` (as the env wrote them; uint8 values unscaled): sampled
    /// from `rng`, or the mode if `deterministic`. `state` is `[B, state_dim]` (empty for a memoryless model): each
    /// env's recurrent state before this step, replaced by the state after it.
    pub fn act(
        &mut self,
        obs: &[f32],
        state: &mut [f32],
        rng: &mut impl Rng,
        deterministic: bool,
        out: &mut ActOutput,
    ) -> Result<(), PolicyError> {
        let d = self.model.obs_dim();
        if !obs.len().is_multiple_of(d.max(1)) {
            return Err(PolicyError::Rows { values: obs.len(), width: d });
        }
        let n = obs.len() / d.max(1);
        let width = self.state_dim();
        if state.len() != n * width {
            return Err(PolicyError::State { values: state.len(), rows: n, width });
        }
        self.input.clear();
        self.input.extend_from_slice(obs);
        let spec = self.model.spec();
        crate::obs::prepare_input(spec.obs_dtype, spec.obs_scale, self.obs_norm.as_ref(), &mut self.input);
        self.starts.resize(n, false);
        let step = Sequences { steps: 1, state0: state, starts: &self.starts };
        self.model.forward_seq(&self.params, &self.input, step, &mut self.trace);
        if width > 0 {
            self.next_state.clear();
            (0..n).for_each(|row| self.trace.state_after(row, &mut self.next_state));
            state.copy_from_slice(&self.next_state);
        }
        out.values.clear();
        out.values.extend_from_slice(self.trace.values());
        let head = self.trace.head();
        let action_dim = self.dist.action_dim();
        out.actions.clear();
        out.actions.resize(n * action_dim, 0.0);
        out.log_probs.clear();
        for (row, action) in head.chunks_exact(self.dist.row_dim()).zip(out.actions.chunks_exact_mut(action_dim)) {
            out.log_probs.push(self.dist.act(row, rng, deterministic, action));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::env::Space;
    use crate::model::ModelConfig;
    use rand::SeedableRng;

    fn net(cfg: &ModelConfig, obs_dim: usize, space: &Space) -> ActorCriticNet {
        ActorCriticNet::for_env(cfg, &Space::unbounded(obs_dim), space).unwrap()
    }

    fn snapshot(weights: Vec<u8>) -> PolicySnapshot {
        PolicySnapshot { version: 1, weights: weights.into(), published_at: 0.0, incarnation: 0 }
    }

    #[test]
    fn snapshot_round_trip_is_exact_and_policy_acts() {
        let space = Space::vector(vec![-2.0], vec![2.0]);
        let net = net(&ModelConfig::default(), 3, &space);
        let params = net.init(1);
        let mut norm = ObsNormalizer::new(3, 10.0);
        norm.rms.update(&[1.0, 2.0, 3.0, 3.0, 2.0, 1.0]);
        let bytes = encode_weights(&net, &params, Some(&norm)).unwrap();
        let decoded = decode_weights(&bytes).unwrap();
        assert_eq!(decoded.obs_norm.as_ref(), Some(&norm));
        assert_eq!(net.flatten(&decoded.tensors, "").unwrap(), params);
        assert_eq!(ModelSpec::from_json(&decoded.metadata[MODEL_KEY]).unwrap(), *net.spec());
        let snapshot = PolicySnapshot { version: 7, weights: bytes.into(), published_at: 0.0, incarnation: 0 };
        let mut policy = Policy::from_snapshot(net.spec(), &snapshot).unwrap();
        assert_eq!(policy.version(), 7);
        let obs = [0.5f32, -0.1, 2.0, 1.0, 1.0, 1.0];
        let mut out = ActOutput::default();
        policy.act(&obs, &mut [], &mut rand_chacha::ChaCha8Rng::seed_from_u64(0), false, &mut out).unwrap();
        assert_eq!((out.actions.len(), out.log_probs.len(), out.values.len()), (2, 2, 2));
        // The values come from the critic applied to normalised observations.
        let mut normed = obs.to_vec();
        norm.normalize(&mut normed);
        let mut trace = crate::net::NetTrace::default();
        net.forward(&params, &normed, 2, &mut trace);
        assert_eq!(trace.values(), &out.values);
        // Deterministic: the mean, scored at the mode.
        policy.act(&obs, &mut [], &mut rand_chacha::ChaCha8Rng::seed_from_u64(0), true, &mut out).unwrap();
        let want = -(params[net.log_std().unwrap()][0] + crate::distributions::HALF_LN_2PI);
        assert!((out.log_probs[0] - want).abs() < 1e-6);
    }

    /// The network is the snapshot's own: a policy loaded for an env whose resolved spec has other hidden sizes
    /// and another activation acts with the snapshot's ReLU 16-wide layers.
    #[test]
    fn the_snapshot_carries_its_model() {
        let space = Space::Discrete { n: 3 };
        let cfg = ModelConfig { activation: Activation::Relu, hidden_sizes: vec![16], ..ModelConfig::default() };
        let relu = net(&cfg, 4, &space);
        let params = relu.init(3);
        let bytes = encode_weights(&relu, &params, None).unwrap();
        assert_eq!(decode_weights(&bytes).unwrap().metadata[ACTIVATION_KEY], "relu");
        let env = ModelSpec::resolve(&ModelConfig::default(), &Space::unbounded(4), &space).unwrap();
        let mut policy = Policy::from_snapshot(&env, &snapshot(bytes)).unwrap();
        assert_eq!(policy.spec(), relu.spec());
        let obs = [0.3f32, -1.2, 2.0, 0.7];
        let mut want = crate::net::NetTrace::default();
        relu.forward(&params, &obs, 1, &mut want);
        let mut out = ActOutput::default();
        policy.act(&obs, &mut [], &mut rand_chacha::ChaCha8Rng::seed_from_u64(1), true, &mut out).unwrap();
        assert_eq!(out.values, want.values(), "acted with the snapshot's network");

        // A snapshot for another env is refused, naming both sides.
        let other = ModelSpec::resolve(&ModelConfig::default(), &Space::unbounded(5), &space).unwrap();
        let bytes = encode_weights(&relu, &params, None).unwrap();
        let err = Policy::from_snapshot(&other, &snapshot(bytes)).err().unwrap();
        assert!(matches!(err, PolicyError::Spec(SpecError::Env { .. })), "{err}");
    }

    /// Snapshots written before the spec existed (no `model` key) load as the env's spec with the activation the
    /// metadata names; an unknown activation or an unreadable spec is an error.
    #[test]
    fn snapshots_without_a_spec_still_load() {
        let space = Space::Discrete { n: 3 };
        let cfg = ModelConfig { activation: Activation::Relu, ..ModelConfig::default() };
        let relu = net(&cfg, 4, &space);
        let params = relu.init(3);
        let old = |activation: Option<&str>| {
            let metadata = activation.map(|a| (ACTIVATION_KEY.to_string(), a.to_string())).into_iter().collect();
            snapshot(codec::encode(relu.named("", &params), None, metadata).unwrap())
        };
        let env = ModelSpec::resolve(&ModelConfig::default(), &Space::unbounded(4), &space).unwrap();
        assert_eq!(Policy::from_snapshot(&env, &old(Some("relu"))).unwrap().spec(), relu.spec());
        assert_eq!(Policy::from_snapshot(&env, &old(None)).unwrap().spec().activation(), Activation::Tanh);
        let err = Policy::from_snapshot(&env, &old(Some("gelu"))).err().unwrap();
        assert!(matches!(err, PolicyError::Activation(ref a) if a == "gelu"), "{err}");

        let metadata = HashMap::from([(MODEL_KEY.to_string(), "{\"format\": 9}".to_string())]);
        let bytes = codec::encode(relu.named("", &params), None, metadata).unwrap();
        let err = Policy::from_snapshot(&env, &snapshot(bytes)).err().unwrap();
        assert!(matches!(err, PolicyError::Spec(SpecError::Format(9))), "{err}");
    }

    #[test]
    fn multi_discrete_policies_act_per_block() {
        let space = Space::MultiDiscrete { nvec: vec![3, 2, 4] };
        let net = net(&ModelConfig::default(), 5, &space);
        let params = net.init(2);
        let bytes = encode_weights(&net, &params, None).unwrap();
        let mut policy = Policy::from_snapshot(net.spec(), &snapshot(bytes)).unwrap();
        let obs: Vec<f32> = (0..15).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut out = ActOutput::default();
        policy.act(&obs, &mut [], &mut rand_chacha::ChaCha8Rng::seed_from_u64(5), false, &mut out).unwrap();
        assert_eq!((out.actions.len(), out.log_probs.len(), out.values.len()), (9, 3, 3));
        for action in out.actions.chunks_exact(3) {
            assert!(space.check(action).is_ok(), "{action:?}");
        }
        let mut trace = crate::net::NetTrace::default();
        net.forward(&params, &obs, 3, &mut trace);
        let dist = ActionDist::new(net.head(), &[]);
        for ((row, action), lp) in trace.head().chunks_exact(9).zip(out.actions.chunks_exact(3)).zip(&out.log_probs) {
            assert_eq!(dist.log_prob(row, action), *lp);
        }
    }

    #[test]
    fn garbage_bytes_and_misfits_are_errors_not_panics() {
        let net = net(&ModelConfig::default(), 4, &Space::Discrete { n: 2 });
        assert!(Policy::from_snapshot(net.spec(), &snapshot(b"not safetensors".to_vec())).is_err());
        assert!(Policy::from_snapshot(net.spec(), &snapshot(b"\x08\0\0\0\0\0\0\0{}      ".to_vec())).is_err());
        let other =
            ActorCriticNet::for_env(&ModelConfig::default(), &Space::unbounded(5), &Space::Discrete { n: 2 }).unwrap();
        let bytes = encode_weights(&other, &other.init(0), None).unwrap();
        assert!(matches!(Policy::from_snapshot(net.spec(), &snapshot(bytes)), Err(PolicyError::Spec(_))));
        // Tensors that do not fit the spec they travel with.
        let metadata = HashMap::from([(MODEL_KEY.to_string(), net.spec().to_json())]);
        let bytes = codec::encode(other.named("", &other.init(0)), None, metadata).unwrap();
        assert!(matches!(Policy::from_snapshot(net.spec(), &snapshot(bytes)), Err(PolicyError::Layout(_))));
        assert!(matches!(encode_weights(&net, &[0.0; 3], None), Err(PolicyError::Layout(LayoutError::Length { .. }))));
    }
}
