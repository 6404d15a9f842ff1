//! Policy snapshots (versioned weights as safetensors bytes) and the inference-side policy actors run.
//!
//! A snapshot's safetensors file holds the model parameters under their PyTorch names and, when observation
//! normalisation is on, `obs_rms.mean`, `obs_rms.var` (f64, `[obs_dim]`) and `obs_rms.count` (f64, `[1]`) with
//! the clip value in the metadata key `obs_clip`: everything needed to compute an action from a raw observation.

use crate::dense::DenseActorCritic;
use crate::distributions::{argmax, sample_categorical, sample_gaussian};
use crate::env::Space;
use crate::model::ModelConfig;
use crate::normalize::{ObsNormalizer, RunningMeanStd};
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;

/// Why a snapshot could not be encoded, decoded or used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A tensor operation failed (e.g. shapes that do not fit the model).
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The bytes are not a valid safetensors file.
    #[error("invalid safetensors data: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// A tensor is missing or has the wrong type or shape.
    #[error("invalid policy weights: {0}")]
    Invalid(String),
    /// A tensor holds NaN or infinity: such weights are never encoded (published, checkpointed, saved) or loaded.
    #[error("non-finite weights: {0}")]
    NonFinite(String),
}

/// Fails naming the tensor and the first NaN or infinite element of `xs`.
fn ensure_finite<T: Copy + Into<f64>>(name: &str, xs: &[T]) -> Result<(), PolicyError> {
    match xs.iter().position(|&x| !x.into().is_finite()) {
        Some(i) => Err(PolicyError::NonFinite(format!("{name}[{i}] is {}", xs[i].into()))),
        None => Ok(()),
    }
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

/// Serialises named f32 tensors and optional observation statistics into safetensors bytes.
pub fn encode_weights(params: &[(String, Tensor)], obs_norm: Option<&ObsNormalizer>) -> Result<Vec<u8>, PolicyError> {
    encode_tensors(params, obs_norm, HashMap::from([("format".to_string(), "proxima-policy-v1".to_string())]))
}

/// Like [`encode_weights`], with caller-chosen metadata (checkpoints add their state there).
pub fn encode_tensors(
    params: &[(String, Tensor)],
    obs_norm: Option<&ObsNormalizer>,
    mut metadata: HashMap<String, String>,
) -> Result<Vec<u8>, PolicyError> {
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(params.len() + 3);
    for (name, t) in params {
        let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        ensure_finite(name, &values)?;
        owned.push((name.clone(), Dtype::F32, t.dims().to_vec(), bytemuck::cast_slice(&values).to_vec()));
    }
    if let Some(n) = obs_norm {
        ensure_finite("obs_rms.mean", &n.rms.mean)?;
        ensure_finite("obs_rms.var", &n.rms.var)?;
        ensure_finite("obs_rms.count", &[n.rms.count])?;
        let f64s = |xs: &[f64]| xs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        owned.push(("obs_rms.mean".into(), Dtype::F64, vec![n.rms.dim()], f64s(&n.rms.mean)));
        owned.push(("obs_rms.var".into(), Dtype::F64, vec![n.rms.dim()], f64s(&n.rms.var)));
        owned.push(("obs_rms.count".into(), Dtype::F64, vec![1], f64s(&[n.rms.count])));
        metadata.insert("obs_clip".into(), n.clip.to_string());
    }
    let views = owned
        .iter()
        .map(|(name, dtype, shape, data)| Ok((name.as_str(), TensorView::new(*dtype, shape.clone(), data)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    Ok(safetensors::serialize(views, Some(metadata))?)
}

/// Model parameters and observation statistics read back from safetensors bytes.
pub struct DecodedWeights {
    /// Parameters by PyTorch name.
    pub params: HashMap<String, Tensor>,
    /// Observation normaliser, if the snapshot carries one.
    pub obs_norm: Option<ObsNormalizer>,
}

/// Parses safetensors bytes written by [`encode_weights`].
pub fn decode_weights(bytes: &[u8], device: &Device) -> Result<DecodedWeights, PolicyError> {
    let st = SafeTensors::deserialize(bytes)?;
    let mut params = HashMap::new();
    let mut rms: HashMap<String, Vec<f64>> = HashMap::new();
    for (name, view) in st.tensors() {
        match (name.strip_prefix("obs_rms."), view.dtype()) {
            (Some(stat), Dtype::F64) => {
                let xs = view.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
                let xs: Vec<f64> = xs.collect();
                ensure_finite(&name, &xs)?;
                rms.insert(stat.to_string(), xs);
            }
            (None, Dtype::F32) => {
                // Checked in place: this runs on every policy an actor receives.
                let xs = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])));
                if let Some((i, x)) = xs.enumerate().find(|(_, x)| !x.is_finite()) {
                    return Err(PolicyError::NonFinite(format!("{name}[{i}] is {x}")));
                }
                let t = Tensor::from_raw_buffer(view.data(), DType::F32, view.shape(), device)?;
                params.insert(name, t);
            }
            (_, dtype) => {
                return Err(PolicyError::Invalid(format!("tensor {name} has unexpected dtype {dtype:?}")));
            }
        }
    }
    let obs_norm = if rms.is_empty() {
        None
    } else {
        let mut take = |k: &str| rms.remove(k).ok_or_else(|| PolicyError::Invalid(format!("missing obs_rms.{k}")));
        let (mean, var, count) = (take("mean")?, take("var")?, take("count")?);
        if mean.len() != var.len() || count.len() != 1 {
            return Err(PolicyError::Invalid("obs_rms tensors have inconsistent shapes".into()));
        }
        let (_, meta) = SafeTensors::read_metadata(bytes)?;
        let clip = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("obs_clip"))
            .and_then(|c| c.parse::<f32>().ok())
            .ok_or_else(|| PolicyError::Invalid("missing or bad obs_clip metadata".into()))?;
        Some(ObsNormalizer { rms: RunningMeanStd { mean, var, count: count[0] }, clip })
    };
    Ok(DecodedWeights { params, obs_norm })
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

/// A policy ready for inference on raw observations, on the CPU (the flat-buffer model of [`crate::dense`]).
pub struct Policy {
    model: DenseActorCritic,
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
    /// Loads a snapshot; fails if its tensors do not fit `cfg`, `obs_dim` and `action_space`.
    pub fn from_snapshot(
        cfg: &ModelConfig,
        obs_dim: usize,
        action_space: &Space,
        snapshot: &PolicySnapshot,
    ) -> Result<Self, PolicyError> {
        let decoded = decode_weights(&snapshot.weights, &Device::Cpu)?;
        if let Some(n) = &decoded.obs_norm
            && n.rms.dim() != obs_dim
        {
            return Err(PolicyError::Invalid(format!("obs_rms has {} dims, env has {obs_dim}", n.rms.dim())));
        }
        let model = DenseActorCritic::new(cfg, obs_dim, action_space);
        let params = model.flatten(&decoded.params).map_err(PolicyError::Invalid)?;
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
            return Err(PolicyError::Invalid(format!("{} observation values are not rows of {d}", obs.len())));
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
                        (a, sample_categorical_log_prob(logits, a))
                    } else {
                        sample_categorical(logits, rng)
                    };
                    out.actions.push(a as f32);
                    out.log_probs.push(lp);
                }
            }
            Space::Box { .. } => {
                let d = self.log_std.len();
                for mean in head {
                    let start = out.actions.len();
                    out.actions.resize(start + d, 0.0);
                    let lp = if deterministic {
                        out.actions[start..].copy_from_slice(mean);
                        -self.log_std.iter().map(|ls| ls + 0.918_938_5).sum::<f32>()
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

/// Log-probability of index `a` under Categorical(`logits`).
fn sample_categorical_log_prob(logits: &[f32], a: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_z = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
    logits[a] - log_z
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{ActorCritic, sorted_vars};
    use rand::SeedableRng;

    #[test]
    fn snapshot_round_trip_is_exact_and_policy_acts() {
        let space = Space::Box { low: vec![-2.0], high: vec![2.0] };
        let cfg = ModelConfig::default();
        let (varmap, model) = ActorCritic::init(&cfg, 3, &space, 1, &Device::Cpu).unwrap();
        let params: Vec<(String, Tensor)> =
            sorted_vars(&varmap).unwrap().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
        let mut norm = ObsNormalizer::new(3, 10.0);
        norm.rms.update(&[1.0, 2.0, 3.0, 3.0, 2.0, 1.0]);
        let bytes = encode_weights(&params, Some(&norm)).unwrap();
        let decoded = decode_weights(&bytes, &Device::Cpu).unwrap();
        assert_eq!(decoded.obs_norm.as_ref(), Some(&norm));
        for (name, t) in &params {
            let diff = (t - &decoded.params[name]).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{name}");
        }
        let snapshot = PolicySnapshot { version: 7, weights: bytes.into(), published_at: 0.0, incarnation: 0 };
        let mut policy = Policy::from_snapshot(&cfg, 3, &space, &snapshot).unwrap();
        assert_eq!(policy.version(), 7);
        let obs = [0.5f32, -0.1, 2.0, 1.0, 1.0, 1.0];
        let mut out = ActOutput::default();
        policy.act(&obs, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0), false, &mut out).unwrap();
        assert_eq!((out.actions.len(), out.log_probs.len(), out.values.len()), (2, 2, 2));
        // The values come from the model applied to normalised observations.
        let mut normed = obs.to_vec();
        norm.normalize(&mut normed);
        let x = Tensor::from_slice(&normed, (2, 3), &Device::Cpu).unwrap();
        let v = model.value(&x).unwrap().to_vec1::<f32>().unwrap();
        assert!((v[0] - out.values[0]).abs() < 1e-6);
    }

    #[test]
    fn garbage_bytes_are_an_error_not_a_panic() {
        assert!(decode_weights(b"not safetensors", &Device::Cpu).is_err());
        let snapshot = PolicySnapshot {
            version: 0,
            weights: bytes::Bytes::from_static(b"\x08\0\0\0\0\0\0\0{}      "),
            published_at: 0.0,
            incarnation: 0,
        };
        assert!(Policy::from_snapshot(&ModelConfig::default(), 4, &Space::Discrete { n: 2 }, &snapshot).is_err());
    }

    /// NaN or infinite weights are neither encoded (so never published or saved) nor decoded (an actor or a
    /// checkpoint load refuses them), and the error names the tensor.
    #[test]
    fn non_finite_weights_are_refused_both_ways() {
        let good = Tensor::from_slice(&[1.0f32, 2.0], 2, &Device::Cpu).unwrap();
        let bad = Tensor::from_slice(&[1.0f32, f32::NAN], 2, &Device::Cpu).unwrap();
        let err = encode_weights(&[("actor.0.bias".into(), bad)], None).unwrap_err();
        assert!(matches!(&err, PolicyError::NonFinite(m) if m.contains("actor.0.bias[1]")), "{err}");
        let mut norm = ObsNormalizer::new(2, 10.0);
        norm.rms.var[0] = f64::INFINITY;
        assert!(matches!(encode_weights(&[("a".into(), good.clone())], Some(&norm)), Err(PolicyError::NonFinite(_))));
        // Bytes written by something else: refused on load.
        let data: Vec<u8> = [0.5f32, f32::INFINITY].iter().flat_map(|x| x.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![2], &data).unwrap();
        let bytes = safetensors::serialize([("critic.4.bias", view)], None).unwrap();
        let err = decode_weights(&bytes, &Device::Cpu).err().unwrap();
        assert!(matches!(&err, PolicyError::NonFinite(m) if m.contains("critic.4.bias[1]")), "{err}");
    }
}
