//! Small pieces the environments share: gymnasium's clipping, action decoding, state and observation plumbing.
//!
//! Actions outside the action space never panic: a discrete action that is not an index into the action table, or
//! a one-dimensional `Box` action of the wrong length, decodes to NaN, so the step produces a NaN state (visible
//! to the caller) instead of a silently valid transition. Callers validate actions with [`Space::check`].

use super::{EnvError, Space};

/// `np.clip(x, lo, hi)` (and gymnasium's `bound`) for `lo <= hi`; a NaN `x` stays NaN.
pub(super) fn clip<T: PartialOrd>(x: T, lo: T, hi: T) -> T {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// The entry of `table` that the discrete `action` selects, or NaN when `action` is not a single integer index
/// into `table`.
pub(super) fn discrete_value(action: &[f32], table: &[f64]) -> f64 {
    match action {
        [a] if a.fract() == 0.0 && *a >= 0.0 => table.get(*a as usize).copied().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

/// The value of a one-dimensional `Box` action, or NaN when `action` does not hold exactly one value.
pub(super) fn scalar_action(action: &[f32]) -> f32 {
    match action {
        [a] => *a,
        _ => f32::NAN,
    }
}

/// `state` as an array of the environment's state length, or [`EnvError::StateLength`].
pub(super) fn state_array<const N: usize>(env: &'static str, state: &[f64]) -> Result<[f64; N], EnvError> {
    state.try_into().map_err(|_| EnvError::StateLength { env, expected: N, got: state.len() })
}

/// Writes `values` cast to f32 (gymnasium's `np.array(..., dtype=np.float32)`) into `obs`.
pub(super) fn write_obs<const N: usize>(obs: &mut [f32], values: [f64; N]) {
    for (o, v) in obs.iter_mut().zip(values) {
        *o = v as f32;
    }
}

/// A float32 `Box` with bounds `-high..=high`.
pub(super) fn symmetric_box(high: &[f32]) -> Space {
    Space::vector(high.iter().map(|h| -h).collect(), high.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_bounds_and_nan() {
        assert_eq!(clip(3.0, -1.0, 1.0), 1.0);
        assert_eq!(clip(-3.0, -1.0, 1.0), -1.0);
        assert_eq!(clip(0.5, -1.0, 1.0), 0.5);
        assert!(clip(f64::NAN, -1.0, 1.0).is_nan());
    }

    #[test]
    fn discrete_value_rejects_non_indices() {
        let table = [-1.0, 0.0, 1.0];
        assert_eq!(discrete_value(&[2.0], &table), 1.0);
        for bad in [&[3.0][..], &[-1.0], &[0.5], &[f32::NAN], &[f32::INFINITY], &[], &[0.0, 1.0]] {
            assert!(discrete_value(bad, &table).is_nan(), "{bad:?}");
        }
    }

    #[test]
    fn scalar_action_needs_one_value() {
        assert_eq!(scalar_action(&[0.25]), 0.25);
        assert!(scalar_action(&[]).is_nan());
        assert!(scalar_action(&[0.25, 0.5]).is_nan());
    }

    #[test]
    fn state_array_checks_length() {
        assert_eq!(state_array::<2>("X", &[1.0, 2.0]).ok(), Some([1.0, 2.0]));
        let err = state_array::<2>("X", &[1.0]).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("X state must have 2 values, got 1"));
    }
}
