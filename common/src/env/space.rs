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
    /// A box whose bounds differ in length.
    #[error("box space has different low and high lengths")]
    BoundsLength,
    /// A multi-discrete space without sub-actions or with one of none.
    #[error("multi-discrete space needs at least one sub-action, each with at least 1 action")]
    Nvec,
    /// A space message without a kind.
    #[error("space is not set")]
    Unset,
}

/// A gymnasium space: `Discrete(n)`, `MultiDiscrete(nvec)` or a float `Box` with per-dimension bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Space {
    /// Integer actions `0..n`.
    Discrete { n: usize },
    /// Real vectors with `low[i] <= x[i] <= high[i]` (bounds may be infinite).
    Box { low: Vec<f32>, high: Vec<f32> },
    /// Integer vectors with `0 <= x[i] < nvec[i]`.
    MultiDiscrete { nvec: Vec<usize> },
}

impl Space {
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
        if let Space::Box { low, high } = self {
            for (i, x) in out.iter_mut().enumerate() {
                let j = i % low.len();
                *x = x.clamp(low[j], high[j]);
            }
        }
    }

    /// Short human form, e.g. `Discrete(2)` or `Box(3)`.
    pub fn describe(&self) -> String {
        match self {
            Space::Discrete { n } => format!("Discrete({n})"),
            Space::Box { low, .. } => format!("Box({})", low.len()),
            Space::MultiDiscrete { nvec } => format!("MultiDiscrete({nvec:?})"),
        }
    }

    /// How `self` (`ours`) differs from `theirs`, naming the first differing bound and both values; `None` when
    /// they are equal.
    pub fn difference(&self, theirs: &Space) -> Option<String> {
        match (self, theirs) {
            (a, b) if a == b => None,
            (Space::Box { low: l1, high: h1 }, Space::Box { low: l2, high: h2 }) if l1.len() == l2.len() => {
                let bounds = [("low", l1, l2), ("high", h1, h2)];
                bounds.into_iter().find_map(|(which, ours, other)| {
                    let i = ours.iter().zip(other).position(|(a, b)| a.to_bits() != b.to_bits())?;
                    Some(format!("Box({}) {which}[{i}]: actor has {}, learner has {}", l1.len(), other[i], ours[i]))
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
        let ours = Space::Box { low: vec![-1.0, -2.0], high: vec![1.0, 2.0] };
        let theirs = Space::Box { low: vec![-1.0, -2.0], high: vec![1.0, 3.0] };
        assert_eq!(ours.difference(&ours.clone()), None);
        assert_eq!(ours.difference(&theirs).unwrap(), "Box(2) high[1]: actor has 3, learner has 2");
        let d = ours.difference(&Space::Discrete { n: 2 }).unwrap();
        assert_eq!(d, "actor has Discrete(2), learner has Box(2)");
        let multi = Space::MultiDiscrete { nvec: vec![3, 2] };
        let d = multi.difference(&Space::MultiDiscrete { nvec: vec![3, 3] }).unwrap();
        assert_eq!(d, "actor has MultiDiscrete([3, 3]), learner has MultiDiscrete([3, 2])");
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
