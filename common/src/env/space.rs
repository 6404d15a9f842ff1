//! Observation and action spaces.

use serde::{Deserialize, Serialize};

/// Why a value is not an element of a space, or a space description is not a space.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpaceError {
    /// A discrete value that is not an integer in `0..n`.
    #[error("discrete action {value} is not an integer in 0..{n}")]
    NotInDiscrete {
        /// The value.
        value: f32,
        /// The number of actions.
        n: usize,
    },
    /// A multi-discrete value whose element `index` is not an integer in `0..n`.
    #[error("multi-discrete element {index} = {value} is not an integer in 0..{n}")]
    NotInMultiDiscrete {
        /// Position in the vector.
        index: usize,
        /// The value.
        value: f32,
        /// Actions of that element.
        n: usize,
    },
    /// A multi-discrete value of another length than `nvec`.
    #[error("multi-discrete value needs {expected} values, got {got}")]
    MultiDiscreteLength {
        /// `len(nvec)`.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A discrete action of more or fewer than one value.
    #[error("discrete action needs 1 value, got {0}")]
    DiscreteLength(usize),
    /// A box element of the wrong number of values.
    #[error("box element needs {expected} values, got {got}")]
    BoxLength {
        /// Values per element.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A box element with NaN or an infinity.
    #[error("box element is not finite")]
    NonFinite,
    /// A box whose bounds do not hold one value per element of its shape.
    #[error("box space bounds do not fit its shape")]
    BoundsLength,
    /// A box with an empty shape or a zero dimension.
    #[error("box shape {0:?} has no values")]
    Shape(Vec<usize>),
    /// A box whose bounds are not bounds of its dtype.
    #[error("box bounds: {0}")]
    Bounds(String),
    /// A space that cannot be an action space.
    #[error("action space {0} is not supported: a Box of actions must be one-dimensional float32")]
    ActionSpace(String),
    /// A multi-discrete space without sub-actions or with one of none.
    #[error("multi-discrete space needs at least one sub-action, each with at least 1 action")]
    Nvec,
    /// A space message without a kind.
    #[error("space is not set")]
    Unset,
}

/// The type of a `Box`'s values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit floats (every action `Box`, vector observations).
    #[default]
    Float32,
    /// Bytes `0..=255` (images); the network sees them multiplied by 1/255.
    Uint8,
}

impl Dtype {
    /// numpy's name: `float32` or `uint8`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Float32 => "float32",
            Dtype::Uint8 => "uint8",
        }
    }

    /// Bytes per value on the wire.
    pub fn size(self) -> usize {
        match self {
            Dtype::Float32 => 4,
            Dtype::Uint8 => 1,
        }
    }
}

/// A gymnasium space: `Discrete(n)`, `MultiDiscrete(nvec)` or a `Box` of any shape with per-value bounds.
#[derive(Debug, Clone, PartialEq)]
pub enum Space {
    /// Integer actions `0..n`.
    Discrete { n: usize },
    /// Arrays of `shape` (row-major, `low.len()` values) with `low[i] <= x[i] <= high[i]` (float bounds may be
    /// infinite). Build it with [`Space::vector`] or [`Space::shaped`], which keep the lengths consistent.
    Box { low: Vec<f32>, high: Vec<f32>, shape: Vec<usize>, dtype: Dtype },
    /// Integer vectors with `0 <= x[i] < nvec[i]`.
    MultiDiscrete { nvec: Vec<usize> },
}

impl Space {
    /// A one-dimensional float32 `Box` with these bounds.
    pub fn vector(low: Vec<f32>, high: Vec<f32>) -> Space {
        let shape = vec![low.len()];
        Space::Box { low, high, shape, dtype: Dtype::Float32 }
    }

    /// A one-dimensional float32 `Box` of `dim` values without bounds (`Box(-inf, inf, (dim,))`).
    pub fn unbounded(dim: usize) -> Space {
        Space::vector(vec![f32::NEG_INFINITY; dim], vec![f32::INFINITY; dim])
    }

    /// A `Box` of `shape` and `dtype`; `low` and `high` hold one bound per value, or one for all. Refuses bounds
    /// that do not fit the shape, an empty shape, `low > high`, NaN, and uint8 bounds that are not whole numbers
    /// in `0..=255`.
    pub fn shaped(low: Vec<f32>, high: Vec<f32>, shape: Vec<usize>, dtype: Dtype) -> Result<Space, SpaceError> {
        let n: usize = shape.iter().product();
        if shape.is_empty() || n == 0 {
            return Err(SpaceError::Shape(shape));
        }
        let widen = |b: Vec<f32>| if b.len() == 1 { vec![b[0]; n] } else { b };
        let (low, high) = (widen(low), widen(high));
        if low.len() != n || high.len() != n {
            return Err(SpaceError::BoundsLength);
        }
        if low.iter().zip(&high).any(|(l, h)| l.is_nan() || h.is_nan() || l > h) {
            return Err(SpaceError::Bounds("every low must be at most its high".into()));
        }
        let byte = |x: &f32| x.fract() == 0.0 && (0.0..=255.0).contains(x);
        if dtype == Dtype::Uint8 && !low.iter().chain(&high).all(byte) {
            return Err(SpaceError::Bounds("uint8 bounds must be whole numbers in 0..=255".into()));
        }
        Ok(Space::Box { low, high, shape, dtype })
    }

    /// The dtype of the values: a `Box`'s, float32 for the integer spaces (their actions travel as f32).
    pub fn dtype(&self) -> Dtype {
        match self {
            Space::Box { dtype, .. } => *dtype,
            _ => Dtype::Float32,
        }
    }

    /// What uint8 observation values are multiplied by on their way into a network: `1 / high` (the largest
    /// bound, at least 1), so images (0..=255) and 0/1 planes (MinAtar's `bool` frames) both reach `[0, 1]`; 1 for
    /// float spaces, which are not scaled.
    pub fn input_scale(&self) -> f32 {
        match self {
            Space::Box { high, dtype: Dtype::Uint8, .. } => 1.0 / high.iter().fold(1.0f32, |m, &h| m.max(h)),
            _ => 1.0,
        }
    }

    /// The shape of one element: a `Box`'s, `[flat_dim]` otherwise.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Space::Box { shape, .. } => shape.clone(),
            _ => vec![self.flat_dim()],
        }
    }

    /// Number of f32 values one element takes in packed buffers (1 for `Discrete`).
    pub fn flat_dim(&self) -> usize {
        match self {
            Space::Discrete { .. } => 1,
            Space::Box { low, .. } => low.len(),
            Space::MultiDiscrete { nvec } => nvec.len(),
        }
    }

    /// True for the integer spaces, `Discrete` and `MultiDiscrete` (their log-probabilities are at most 0).
    pub fn is_discrete(&self) -> bool {
        matches!(self, Space::Discrete { .. } | Space::MultiDiscrete { .. })
    }

    /// Checks that `x` is an element of this space; the error says why not.
    pub fn check(&self, x: &[f32]) -> Result<(), SpaceError> {
        match self {
            Space::Discrete { n } => match x {
                [a] if is_index(*a, *n) => Ok(()),
                [a] => Err(SpaceError::NotInDiscrete { value: *a, n: *n }),
                _ => Err(SpaceError::DiscreteLength(x.len())),
            },
            Space::Box { low, .. } if x.len() != low.len() => {
                Err(SpaceError::BoxLength { expected: low.len(), got: x.len() })
            }
            Space::Box { .. } if x.iter().any(|v| !v.is_finite()) => Err(SpaceError::NonFinite),
            Space::Box { .. } => Ok(()),
            Space::MultiDiscrete { nvec } if x.len() != nvec.len() => {
                Err(SpaceError::MultiDiscreteLength { expected: nvec.len(), got: x.len() })
            }
            Space::MultiDiscrete { nvec } => match x.iter().zip(nvec).position(|(a, &n)| !is_index(*a, n)) {
                Some(index) => Err(SpaceError::NotInMultiDiscrete { index, value: x[index], n: nvec[index] }),
                None => Ok(()),
            },
        }
    }

    /// Copies `actions` (`[B, flat_dim]`) into `out`, clipped to the bounds of a `Box` space: what the env is
    /// given, while rollouts keep the sampled actions whose log-probabilities the learner re-scores.
    pub fn clip_into(&self, actions: &[f32], out: &mut Vec<f32>) {
        out.clear();
        out.extend_from_slice(actions);
        if let Space::Box { low, high, .. } = self {
            for (i, x) in out.iter_mut().enumerate() {
                let j = i % low.len();
                *x = x.clamp(low[j], high[j]);
            }
        }
    }

    /// Refuses a space that cannot hold actions: a `Box` of more than one dimension or not of float32.
    pub fn check_action_space(&self) -> Result<(), SpaceError> {
        match self {
            Space::Box { shape, dtype, .. } if shape.len() != 1 || *dtype != Dtype::Float32 => {
                Err(SpaceError::ActionSpace(self.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// Short human form, e.g. `Discrete(2)`, `Box(3)` or `Box((84, 84, 4), uint8)`.
    pub fn describe(&self) -> String {
        match self {
            Space::Discrete { n } => format!("Discrete({n})"),
            Space::Box { low, shape, dtype: Dtype::Float32, .. } if shape.len() == 1 => format!("Box({})", low.len()),
            Space::Box { shape, dtype, .. } => format!("Box({}, {})", super::notation::tuple(shape), dtype.name()),
            Space::MultiDiscrete { nvec } => format!("MultiDiscrete({nvec:?})"),
        }
    }

    /// How `self` (`ours`) differs from `theirs`, naming the first differing bound and both values; `None` when
    /// they are equal.
    pub fn difference(&self, theirs: &Space) -> Option<String> {
        match (self, theirs) {
            (a, b) if a == b => None,
            (
                Space::Box { low: l1, high: h1, shape: s1, dtype: d1 },
                Space::Box { low: l2, high: h2, shape: s2, dtype: d2 },
            ) if s1 == s2 && d1 == d2 => {
                let bounds = [("low", l1, l2), ("high", h1, h2)];
                bounds.into_iter().find_map(|(which, ours, other)| {
                    let i = ours.iter().zip(other).position(|(a, b)| a.to_bits() != b.to_bits())?;
                    Some(format!("{} {which}[{i}]: actor has {}, learner has {}", self.describe(), other[i], ours[i]))
                })
            }
            (ours, other) => Some(format!("actor has {}, learner has {}", other.describe(), ours.describe())),
        }
    }
}

/// True when `a` is an integer in `0..n`.
fn is_index(a: f32, n: usize) -> bool {
    a.fract() == 0.0 && a >= 0.0 && (a as usize) < n
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod difference_tests {
    use super::*;

    #[test]
    fn names_the_first_differing_bound() {
        let ours = Space::vector(vec![-1.0, -2.0], vec![1.0, 2.0]);
        let theirs = Space::vector(vec![-1.0, -2.0], vec![1.0, 3.0]);
        assert_eq!(ours.difference(&ours.clone()), None);
        assert_eq!(ours.difference(&theirs).unwrap(), "Box(2) high[1]: actor has 3, learner has 2");
        let d = ours.difference(&Space::Discrete { n: 2 }).unwrap();
        assert_eq!(d, "actor has Discrete(2), learner has Box(2)");
        let multi = Space::MultiDiscrete { nvec: vec![3, 2] };
        let d = multi.difference(&Space::MultiDiscrete { nvec: vec![3, 3] }).unwrap();
        assert_eq!(d, "actor has MultiDiscrete([3, 3]), learner has MultiDiscrete([3, 2])");
        // An actor from before shaped spaces flattens an image into a float vector: refused, both sides named.
        let image = Space::shaped(vec![0.0], vec![255.0], vec![6, 6, 1], Dtype::Uint8).unwrap();
        let old = Space::vector(vec![0.0; 36], vec![255.0; 36]);
        assert_eq!(image.difference(&old).unwrap(), "actor has Box(36), learner has Box((6, 6, 1), uint8)");
        let other = Space::shaped(vec![0.0], vec![1.0], vec![6, 6, 1], Dtype::Uint8).unwrap();
        assert_eq!(image.difference(&other).unwrap(), "Box((6, 6, 1), uint8) high[0]: actor has 1, learner has 255");
        assert!(image.check_action_space().is_err() && old.check_action_space().is_ok());
    }

    #[test]
    fn multi_discrete_elements() {
        let space = Space::MultiDiscrete { nvec: vec![3, 2] };
        assert_eq!(space.flat_dim(), 2);
        assert!(space.check(&[2.0, 1.0]).is_ok());
        assert_eq!(space.check(&[2.0, 2.0]), Err(SpaceError::NotInMultiDiscrete { index: 1, value: 2.0, n: 2 }));
        assert!(matches!(space.check(&[0.5, 0.0]), Err(SpaceError::NotInMultiDiscrete { index: 0, .. })));
        assert!(matches!(space.check(&[-1.0, 0.0]), Err(SpaceError::NotInMultiDiscrete { index: 0, .. })));
        assert!(matches!(space.check(&[f32::NAN, 0.0]), Err(SpaceError::NotInMultiDiscrete { index: 0, .. })));
        assert_eq!(space.check(&[1.0]), Err(SpaceError::MultiDiscreteLength { expected: 2, got: 1 }));
    }
}
