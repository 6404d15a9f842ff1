//! Observations in their space's dtype, and the one place they become network input.
//!
//! Envs write observations as f32 values (a uint8 image's values are whole numbers in `0..=255`); rollouts keep
//! them in the dtype of the observation space, so an image travels and waits in the learner's queue as one byte
//! per value. The network sees [`prepare_input`]'s result: uint8 values times the model spec's `obs_scale` (1/255
//! for images, 1 for 0/1 planes), float values normalised by the running statistics when the run normalises
//! observations.

use crate::env::Dtype;
use crate::normalize::ObsNormalizer;

/// What uint8 images (0..=255) are multiplied by before the network (an f32 constant: Python multiplies by
/// `np.float32(1) / np.float32(255)`, so both give the same bits).
pub const UINT8_SCALE: f32 = 1.0 / 255.0;

/// A value an env wrote that its uint8 observation space cannot hold.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("observation value {value} at index {index} is not a uint8 (a whole number in 0..=255)")]
pub struct NotUint8 {
    /// The value.
    pub value: f32,
    /// Its index among the values appended.
    pub index: usize,
}

/// Packed observations (`[rows, obs_dim]`, row-major) in the observation space's dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum ObsBuf {
    /// float32 observations.
    F32(Vec<f32>),
    /// uint8 observations (images), one byte per value.
    U8(Vec<u8>),
}

impl Default for ObsBuf {
    fn default() -> Self {
        ObsBuf::F32(Vec::new())
    }
}

impl From<Vec<f32>> for ObsBuf {
    fn from(xs: Vec<f32>) -> Self {
        ObsBuf::F32(xs)
    }
}

impl From<Vec<u8>> for ObsBuf {
    fn from(xs: Vec<u8>) -> Self {
        ObsBuf::U8(xs)
    }
}

impl ObsBuf {
    /// An empty buffer of `dtype`.
    pub fn new(dtype: Dtype) -> Self {
        match dtype {
            Dtype::Float32 => ObsBuf::F32(Vec::new()),
            Dtype::Uint8 => ObsBuf::U8(Vec::new()),
        }
    }

    /// The dtype of the values.
    pub fn dtype(&self) -> Dtype {
        match self {
            ObsBuf::F32(_) => Dtype::Float32,
            ObsBuf::U8(_) => Dtype::Uint8,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            ObsBuf::F32(xs) => xs.len(),
            ObsBuf::U8(xs) => xs.len(),
        }
    }

    /// True when it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the values take (on the wire and in memory).
    pub fn byte_len(&self) -> usize {
        self.len() * self.dtype().size()
    }

    /// The float32 values, `None` for uint8.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            ObsBuf::F32(xs) => Some(xs),
            ObsBuf::U8(_) => None,
        }
    }

    /// Appends values an env wrote; into a uint8 buffer only whole numbers in `0..=255` (else nothing is
    /// appended).
    pub fn extend_raw(&mut self, xs: &[f32]) -> Result<(), NotUint8> {
        match self {
            ObsBuf::F32(buf) => buf.extend_from_slice(xs),
            ObsBuf::U8(buf) => {
                let byte = |x: &f32| x.fract() == 0.0 && (0.0..=255.0).contains(x);
                if let Some(index) = xs.iter().position(|x| !byte(x)) {
                    return Err(NotUint8 { value: xs[index], index });
                }
                buf.extend(xs.iter().map(|&x| x as u8));
            }
        }
        Ok(())
    }

    /// Appends the values `range` (indices of values, not rows) as raw f32: the env's numbers, not yet input.
    pub fn raw_into(&self, range: std::ops::Range<usize>, out: &mut Vec<f32>) {
        match self {
            ObsBuf::F32(xs) => out.extend_from_slice(&xs[range]),
            ObsBuf::U8(xs) => out.extend(xs[range].iter().map(|&x| f32::from(x))),
        }
    }

    /// Appends every value to `out` as network input ([`prepare_input`] with `uint8_scale` and `norm`).
    pub fn input_into(&self, uint8_scale: f32, norm: Option<&ObsNormalizer>, out: &mut Vec<f32>) {
        let start = out.len();
        self.raw_into(0..self.len(), out);
        prepare_input(self.dtype(), uint8_scale, norm, &mut out[start..]);
    }
}

/// Turns raw observation values of `dtype` into network input, in place: uint8 values times `uint8_scale` (the model
/// spec's `obs_scale`: [`UINT8_SCALE`] for images); float values normalised by `norm` when the run normalises
/// observations (`norm` is ignored for uint8: the config refuses observation normalisation for them).
pub fn prepare_input(dtype: Dtype, uint8_scale: f32, norm: Option<&ObsNormalizer>, xs: &mut [f32]) {
    match (dtype, norm) {
        (Dtype::Uint8, _) => xs.iter_mut().for_each(|x| *x *= uint8_scale),
        (Dtype::Float32, Some(norm)) => norm.normalize(xs),
        (Dtype::Float32, None) => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn uint8_buffers_take_only_bytes_and_scale_to_unit() {
        let mut buf = ObsBuf::new(Dtype::Uint8);
        buf.extend_raw(&[0.0, 17.0, 255.0]).unwrap();
        assert_eq!(buf, ObsBuf::U8(vec![0, 17, 255]));
        assert_eq!((buf.len(), buf.byte_len()), (3, 3));
        assert_eq!(buf.extend_raw(&[3.0, 255.5]), Err(NotUint8 { value: 255.5, index: 1 }));
        assert_eq!(buf.extend_raw(&[-1.0]), Err(NotUint8 { value: -1.0, index: 0 }));
        assert_eq!(buf.extend_raw(&[f32::NAN]).unwrap_err().index, 0);
        assert_eq!(buf.len(), 3, "a refused append adds nothing");
        let mut input = vec![9.0];
        buf.input_into(UINT8_SCALE, None, &mut input);
        assert_eq!(input, vec![9.0, 0.0, 17.0 * UINT8_SCALE, 1.0]);
        let mut planes = Vec::new();
        ObsBuf::U8(vec![0, 1]).input_into(1.0, None, &mut planes);
        assert_eq!(planes, vec![0.0, 1.0]);
    }

    #[test]
    fn float_buffers_are_normalised_when_asked() {
        let buf = ObsBuf::from(vec![2.0f32, -4.0]);
        let mut plain = Vec::new();
        buf.input_into(1.0, None, &mut plain);
        assert_eq!(plain, vec![2.0, -4.0]);
        let mut norm = ObsNormalizer::new(2, 10.0);
        norm.rms.update(&[1.0, 1.0, 3.0, -3.0]);
        let mut normed = Vec::new();
        buf.input_into(1.0, Some(&norm), &mut normed);
        let mut want = vec![2.0, -4.0];
        norm.normalize(&mut want);
        assert_eq!(normed, want);
        assert_eq!(buf.byte_len(), 8);
    }
}
