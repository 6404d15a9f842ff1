//! Adam and global grad-norm clipping on the flat parameter vector (the fused backend), and the optimiser state
//! both backends save and restore in that layout. The candle backend's tensor versions are in
//! `backend::candle::optim`, with the same constants.

/// Adam's first-moment decay.
pub const BETA1: f64 = 0.9;
/// Adam's second-moment decay.
pub const BETA2: f64 = 0.999;
/// Adam's ε (PPO's 1e-5, not PyTorch's default 1e-8).
pub const EPS: f64 = 1e-5;
/// PyTorch's `clip_grad_norm_` adds this to the norm before dividing.
pub const CLIP_NORM_EPS: f64 = 1e-6;

/// Adam's state for a checkpoint: the step count and both moments in the network's flat layout.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamState {
    /// Steps taken.
    pub step: u64,
    /// First moments, one per parameter.
    pub m: Vec<f32>,
    /// Second moments, one per parameter.
    pub v: Vec<f32>,
}

/// From this many parameters on, an Adam step inside a rayon pool runs in two halves side by side.
const PARALLEL_MIN_PARAMS: usize = 1 << 16;

/// Adam (Kingma & Ba 2015, no weight decay) over one flat host parameter vector (the fused CPU backend).
pub struct FlatAdam {
    m: Vec<f32>,
    v: Vec<f32>,
    step: u64,
    /// Where a step writes its parameters and moments before they are known to be finite.
    spare: [Vec<f32>; 3],
}

impl FlatAdam {
    /// Adam over `len` parameters ([`BETA1`], [`BETA2`], [`EPS`]).
    pub fn new(len: usize) -> Self {
        let spare = [vec![0.0; len], vec![0.0; len], vec![0.0; len]];
        Self { m: vec![0.0; len], v: vec![0.0; len], step: 0, spare }
    }

    /// One update of `params` with `grads` at learning rate `lr`. The new parameters and moments are written
    /// beside the old ones and swapped in only when every one is finite (no copy either way); otherwise nothing
    /// changes, the step count included, and it returns false.
    pub fn step(&mut self, params: &mut Vec<f32>, grads: &[f32], lr: f64) -> bool {
        let t = self.step + 1;
        let bc1 = 1.0 - BETA1.powi(t as i32);
        let bc2 = 1.0 - BETA2.powi(t as i32);
        let (b1, b2, eps) = (BETA1 as f32, BETA2 as f32, EPS as f32);
        let (step_size, inv_bc2) = ((lr / bc1) as f32, (1.0 / bc2) as f32);
        let [p_new, m_new, v_new] = &mut self.spare;
        let n = params.len();
        debug_assert!(grads.len() == n && self.m.len() == n, "one gradient and moment per parameter");
        for buf in [&mut *p_new, &mut *m_new, &mut *v_new] {
            buf.resize(n, 0.0);
        }
        let (m, v) = (&self.m[..], &self.v[..]);
        let update = |at: std::ops::Range<usize>, p_new: &mut [f32], m_new: &mut [f32], v_new: &mut [f32]| {
            let mut finite = true;
            let old = params[at.clone()].iter().zip(&grads[at.clone()]).zip(m[at.clone()].iter().zip(&v[at]));
            let new = p_new.iter_mut().zip(m_new.iter_mut().zip(v_new.iter_mut()));
            for (((&p, &g), (&m, &v)), (pn, (mn, vn))) in old.zip(new) {
                *mn = m * b1 + g * (1.0 - b1);
                *vn = v * b2 + g * g * (1.0 - b2);
                *pn = p - *mn * step_size / ((*vn * inv_bc2).sqrt() + eps);
                finite &= pn.is_finite() & mn.is_finite() & vn.is_finite();
            }
            finite
        };
        // A large model's step (1.7M parameters for the Nature CNN) in two halves on a pool's two threads.
        let finite = if n >= PARALLEL_MIN_PARAMS && rayon::current_thread_index().is_some() {
            let half = n / 2;
            let (p1, p2) = p_new.split_at_mut(half);
            let (m1, m2) = m_new.split_at_mut(half);
            let (v1, v2) = v_new.split_at_mut(half);
            let (a, b) = rayon::join(|| update(0..half, p1, m1, v1), || update(half..n, p2, m2, v2));
            a & b
        } else {
            update(0..n, p_new, m_new, v_new)
        };
        if finite {
            std::mem::swap(params, p_new);
            std::mem::swap(&mut self.m, m_new);
            std::mem::swap(&mut self.v, v_new);
            self.step = t;
        }
        finite
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The state for a checkpoint.
    pub fn state(&self) -> AdamState {
        AdamState { step: self.step, m: self.m.clone(), v: self.v.clone() }
    }

    /// Restores a saved state; the moments must have one entry per parameter.
    pub fn load(&mut self, state: AdamState) -> Result<(), common::net::LayoutError> {
        for moments in [&state.m, &state.v] {
            if moments.len() != self.m.len() {
                return Err(common::net::LayoutError::Length { got: moments.len(), want: self.m.len() });
            }
        }
        (self.step, self.m, self.v) = (state.step, state.m, state.v);
        Ok(())
    }
}

/// Scales the gradient so its global L2 norm is at most `max_norm` (PyTorch's `clip_grad_norm_`, factor
/// `max_norm / (norm + 1e-6)`). Returns the norm before clipping.
pub fn clip_grad_norm_flat(grads: &mut [f32], max_norm: f64) -> f64 {
    let total = grads.iter().map(|&g| g as f64 * g as f64).sum::<f64>().sqrt();
    let scale = max_norm / (total + CLIP_NORM_EPS);
    if scale < 1.0 {
        grads.iter_mut().for_each(|g| *g = (*g as f64 * scale) as f32);
    }
    total
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A large step inside a pool (two halves side by side) leaves the same parameters and moments as the same
    /// step on one thread, and a non-finite value in either half still refuses the whole step.
    #[test]
    fn a_step_in_two_halves_equals_one_on_one_thread() {
        let n = 3 * PARALLEL_MIN_PARAMS + 5;
        let grads: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1e-3).collect();
        let params: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 0.01).collect();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let (mut one, mut two) = (FlatAdam::new(n), FlatAdam::new(n));
        let (mut p1, mut p2) = (params.clone(), params);
        for _ in 0..3 {
            assert!(one.step(&mut p1, &grads, 1e-3));
            assert!(pool.install(|| two.step(&mut p2, &grads, 1e-3)));
        }
        assert_eq!(p1, p2);
        assert_eq!(one.state(), two.state());
        let mut bad = grads.clone();
        bad[n - 1] = f32::NAN;
        let before = p2.clone();
        assert!(!pool.install(|| two.step(&mut p2, &bad, 1e-3)));
        assert_eq!(p2, before);
        assert_eq!(two.steps(), 3);
    }
}
