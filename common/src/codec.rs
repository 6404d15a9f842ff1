//! Safetensors encoding and decoding straight from and into flat `f32` slices: the one codec of policy snapshots
//! and checkpoints. No tensor library is involved; the network layout ([`crate::net::ActorCriticNet::named`] and
//! [`crate::net::ActorCriticNet::flatten`]) maps names to spans of the flat parameter vector.
//!
//! Besides `f32` tensors a file may hold the observation statistics `obs_rms.mean`, `obs_rms.var` (`f64`,
//! `[obs_dim]`) and `obs_rms.count` (`f64`, `[1]`) with the clip value in the metadata key `obs_clip`. NaN and
//! infinity are refused both ways: such values are never encoded (published, checkpointed, saved) or decoded.

use crate::normalize::{ObsNormalizer, RunningMeanStd};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;

/// One decoded `f32` tensor in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// The elements.
    pub values: Vec<f32>,
}

impl HostTensor {
    /// A tensor of `shape` holding `values`.
    pub fn new(shape: Vec<usize>, values: Vec<f32>) -> Self {
        Self { shape, values }
    }
}

/// Decoded tensors by name.
pub type Tensors = HashMap<String, HostTensor>;

/// Why bytes could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid safetensors file (or a shape does not fit its data).
    #[error("invalid safetensors data: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// A tensor has an unexpected type, or the observation statistics are incomplete.
    #[error("invalid policy weights: {0}")]
    Invalid(String),
    /// A tensor holds NaN or infinity.
    #[error("non-finite weights: {0}")]
    NonFinite(String),
}

/// Fails naming the tensor and the first NaN or infinite element of `xs`.
fn ensure_finite<T: Copy + Into<f64>>(name: &str, xs: impl IntoIterator<Item = T>) -> Result<(), CodecError> {
    match xs.into_iter().enumerate().find(|(_, x)| !(*x).into().is_finite()) {
        Some((i, x)) => Err(CodecError::NonFinite(format!("{name}[{i}] is {}", x.into()))),
        None => Ok(()),
    }
}

/// The little-endian `f32`s of a tensor's data (checked in place: this runs on every policy an actor receives).
fn f32s(data: &[u8]) -> impl Iterator<Item = f32> + '_ {
    data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// Serialises `(name, shape, values)` tensors, the optional observation statistics and `metadata`.
pub fn encode<'a>(
    tensors: impl IntoIterator<Item = (String, &'a [usize], &'a [f32])>,
    obs_norm: Option<&ObsNormalizer>,
    mut metadata: HashMap<String, String>,
) -> Result<Vec<u8>, CodecError> {
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, shape, values) in tensors {
        ensure_finite(&name, values.iter().copied())?;
        owned.push((name, Dtype::F32, shape.to_vec(), bytemuck::cast_slice(values).to_vec()));
    }
    if let Some(n) = obs_norm {
        ensure_finite("obs_rms.mean", n.rms.mean.iter().copied())?;
        ensure_finite("obs_rms.var", n.rms.var.iter().copied())?;
        ensure_finite("obs_rms.count", [n.rms.count])?;
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

/// What [`decode`] read.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The `f32` tensors by name.
    pub tensors: Tensors,
    /// Observation normaliser, if the file carries one.
    pub obs_norm: Option<ObsNormalizer>,
    /// The file's metadata.
    pub metadata: HashMap<String, String>,
}

/// Parses safetensors bytes written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Decoded, CodecError> {
    let st = SafeTensors::deserialize(bytes)?;
    let mut tensors = Tensors::new();
    let mut rms: HashMap<String, Vec<f64>> = HashMap::new();
    for (name, view) in st.tensors() {
        match (name.strip_prefix("obs_rms."), view.dtype()) {
            (Some(stat), Dtype::F64) => {
                let xs: Vec<f64> = view
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect();
                ensure_finite(&name, xs.iter().copied())?;
                rms.insert(stat.to_string(), xs);
            }
            (None, Dtype::F32) => {
                ensure_finite(&name, f32s(view.data()))?;
                tensors.insert(name, HostTensor::new(view.shape().to_vec(), f32s(view.data()).collect()));
            }
            (_, dtype) => return Err(CodecError::Invalid(format!("tensor {name} has unexpected dtype {dtype:?}"))),
        }
    }
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let obs_norm = if rms.is_empty() {
        None
    } else {
        let mut take = |k: &str| rms.remove(k).ok_or_else(|| CodecError::Invalid(format!("missing obs_rms.{k}")));
        let (mean, var, count) = (take("mean")?, take("var")?, take("count")?);
        if mean.len() != var.len() || count.len() != 1 {
            return Err(CodecError::Invalid("obs_rms tensors have inconsistent shapes".into()));
        }
        let clip = metadata
            .get("obs_clip")
            .and_then(|c| c.parse::<f32>().ok())
            .ok_or_else(|| CodecError::Invalid("missing or bad obs_clip metadata".into()))?;
        Some(ObsNormalizer { rms: RunningMeanStd { mean, var, count: count[0] }, clip })
    };
    Ok(Decoded { tensors, obs_norm, metadata })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_exact() {
        let (a, b) = ([1.5f32, -2.0, 3.25, 0.0, 1e-30, -7.0], [0.5f32]);
        let mut norm = ObsNormalizer::new(3, 10.0);
        norm.rms.update(&[1.0, 2.0, 3.0, 3.0, 2.0, 1.0]);
        let tensors = [("w".to_string(), &[2usize, 3][..], &a[..]), ("b".to_string(), &[1usize][..], &b[..])];
        let meta = HashMap::from([("format".to_string(), "test".to_string())]);
        let decoded = decode(&encode(tensors, Some(&norm), meta).unwrap()).unwrap();
        assert_eq!(decoded.tensors["w"], HostTensor::new(vec![2, 3], a.to_vec()));
        assert_eq!(decoded.tensors["b"], HostTensor::new(vec![1], b.to_vec()));
        assert_eq!(decoded.obs_norm.as_ref(), Some(&norm));
        assert_eq!(decoded.metadata["format"], "test");
    }

    /// NaN or infinite values are neither encoded (so never published or saved) nor decoded (an actor or a
    /// checkpoint load refuses them), and the error names the tensor and the element.
    #[test]
    fn non_finite_values_are_refused_both_ways() {
        let bad = [1.0f32, f32::NAN];
        let err = encode([("actor.0.bias".to_string(), &[2usize][..], &bad[..])], None, HashMap::new()).unwrap_err();
        assert!(matches!(&err, CodecError::NonFinite(m) if m.contains("actor.0.bias[1]")), "{err}");
        let mut norm = ObsNormalizer::new(2, 10.0);
        norm.rms.var[0] = f64::INFINITY;
        let good = [1.0f32, 2.0];
        let err = encode([("a".to_string(), &[2usize][..], &good[..])], Some(&norm), HashMap::new()).unwrap_err();
        assert!(matches!(err, CodecError::NonFinite(_)));
        // Bytes written by something else: refused on load.
        let data: Vec<u8> = [0.5f32, f32::INFINITY].iter().flat_map(|x| x.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![2], &data).unwrap();
        let bytes = safetensors::serialize([("critic.4.bias", view)], None).unwrap();
        let err = decode(&bytes).unwrap_err();
        assert!(matches!(&err, CodecError::NonFinite(m) if m.contains("critic.4.bias[1]")), "{err}");
    }

    #[test]
    fn garbage_and_wrong_dtypes_are_errors_not_panics() {
        assert!(decode(b"not safetensors").is_err());
        let data = [1u8, 2, 3, 4];
        let view = TensorView::new(Dtype::U8, vec![4], &data).unwrap();
        let bytes = safetensors::serialize([("actor.0.bias", view)], None).unwrap();
        assert!(matches!(decode(&bytes), Err(CodecError::Invalid(m)) if m.contains("dtype")));
    }
}
