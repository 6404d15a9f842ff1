//! What candle-nn lacks for PPO: Adam with inspectable state (for checkpoints) and global grad-norm clipping, for
//! candle variables and for the fused backend's flat parameter vector.

use candle_core::{Result, Tensor, Var, backprop::GradStore};

/// Adam (Kingma & Ba 2015) without weight decay, with the moments exposed so checkpoints can save them.
pub struct Adam {
    vars: Vec<(String, Var)>,
    /// First moments, one per var.
    m: Vec<Tensor>,
    /// Second moments, one per var.
    v: Vec<Tensor>,
    step: u64,
    /// Current learning rate.
    pub lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

/// Adam over one flat host parameter vector (the fused CPU backend), with the same update as [`Adam`].
pub struct FlatAdam {
    m: Vec<f32>,
    v: Vec<f32>,
    step: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// Where a step writes its parameters and moments before they are known to be finite.
    spare: [Vec<f32>; 3],
}

impl FlatAdam {
    /// Adam over `len` parameters with betas 0.9/0.999 and the given `eps`.
    pub fn new(len: usize, eps: f64) -> Self {
        let spare = [vec![0.0; len], vec![0.0; len], vec![0.0; len]];
        Self { m: vec![0.0; len], v: vec![0.0; len], step: 0, beta1: 0.9, beta2: 0.999, eps, spare }
    }

    /// One update of `params` with `grads` at learning rate `lr`. The new parameters and moments are written
    /// beside the old ones and swapped in only when every one is finite (no copy either way); otherwise nothing
    /// changes, the step count included, and it returns false.
    pub fn step(&mut self, params: &mut Vec<f32>, grads: &[f32], lr: f64) -> bool {
        let t = self.step + 1;
        let bc1 = 1.0 - self.beta1.powi(t as i32);
        let bc2 = 1.0 - self.beta2.powi(t as i32);
        let (b1, b2, eps) = (self.beta1 as f32, self.beta2 as f32, self.eps as f32);
        let (step_size, inv_bc2) = ((lr / bc1) as f32, (1.0 / bc2) as f32);
        let [p_new, m_new, v_new] = &mut self.spare;
        let n = params.len();
        debug_assert!(grads.len() == n && self.m.len() == n, "one gradient and moment per parameter");
        for buf in [&mut *p_new, &mut *m_new, &mut *v_new] {
            buf.resize(n, 0.0);
        }
        let mut finite = true;
        let old = params.iter().zip(grads).zip(self.m.iter().zip(&self.v));
        let new = p_new.iter_mut().zip(m_new.iter_mut().zip(v_new.iter_mut()));
        for (((&p, &g), (&m, &v)), (pn, (mn, vn))) in old.zip(new) {
            *mn = m * b1 + g * (1.0 - b1);
            *vn = v * b2 + g * g * (1.0 - b2);
            *pn = p - *mn * step_size / ((*vn * inv_bc2).sqrt() + eps);
            finite &= pn.is_finite() & mn.is_finite() & vn.is_finite();
        }
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

    /// First and second moments, in parameter order.
    pub fn moments(&self) -> (&[f32], &[f32]) {
        (&self.m, &self.v)
    }

    /// Restores a saved state; the moments must have one entry per parameter.
    pub fn load(&mut self, step: u64, m: Vec<f32>, v: Vec<f32>) -> std::result::Result<(), String> {
        if m.len() != self.m.len() || v.len() != self.v.len() {
            return Err(format!("optimiser state has {} moments, the model has {} parameters", m.len(), self.m.len()));
        }
        (self.step, self.m, self.v) = (step, m, v);
        Ok(())
    }
}

/// [`clip_grad_norm`] for a flat gradient vector. Returns the norm before clipping.
pub fn clip_grad_norm_flat(grads: &mut [f32], max_norm: f64) -> f64 {
    let total = grads.iter().map(|&g| g as f64 * g as f64).sum::<f64>().sqrt();
    let scale = max_norm / (total + 1e-6);
    if scale < 1.0 {
        grads.iter_mut().for_each(|g| *g = (*g as f64 * scale) as f32);
    }
    total
}

/// Adam's state for a checkpoint: step count and the moments by parameter name.
pub struct AdamState {
    /// Steps taken.
    pub step: u64,
    /// `(name, m, v)` per parameter.
    pub moments: Vec<(String, Tensor, Tensor)>,
}

impl Adam {
    /// Adam over `vars` with betas 0.9/0.999 and the given `eps` (PPO uses 1e-5).
    pub fn new(vars: Vec<(String, Var)>, lr: f64, eps: f64) -> Result<Self> {
        let m = vars.iter().map(|(_, v)| v.zeros_like()).collect::<Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self { vars, m, v, step: 0, lr, beta1: 0.9, beta2: 0.999, eps })
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The parameters, sorted by name.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// One update with `grads`; parameters without a gradient are left alone. The new parameters and moments
    /// are computed first and applied only when every value is finite (one scalar read back per step);
    /// otherwise nothing changes, the step count included, and it returns false.
    pub fn step(&mut self, grads: &GradStore) -> Result<bool> {
        let t = self.step + 1;
        let bc1 = 1.0 - self.beta1.powi(t as i32);
        let bc2 = 1.0 - self.beta2.powi(t as i32);
        let mut updates = Vec::with_capacity(self.vars.len());
        let mut probes = Vec::with_capacity(3 * self.vars.len());
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var) else { continue };
            let m = ((&self.m[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let denom = ((&v / bc2)?.sqrt()? + self.eps)?;
            let p = (var.as_tensor() - ((&m * (self.lr / bc1))? / denom)?)?;
            // `x * 0` sums to 0 when every element is finite and to NaN otherwise (a plain sum could overflow).
            for x in [&p, &m, &v] {
                probes.push((x * 0.0)?.sum_all()?);
            }
            updates.push((i, p, m, v));
        }
        if !probes.is_empty() {
            let probe = Tensor::stack(&probes, 0)?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            if !probe.is_finite() {
                return Ok(false);
            }
        }
        for (i, p, m, v) in updates {
            self.vars[i].1.set(&p)?;
            (self.m[i], self.v[i]) = (m, v);
        }
        self.step = t;
        Ok(true)
    }

    /// Snapshot of the optimiser state.
    pub fn state(&self) -> AdamState {
        let moments = self
            .vars
            .iter()
            .zip(self.m.iter().zip(&self.v))
            .map(|((name, _), (m, v))| (name.clone(), m.clone(), v.clone()))
            .collect();
        AdamState { step: self.step, moments }
    }

    /// Restores a saved state; every parameter must be present with its shape.
    pub fn load_state(&mut self, state: AdamState) -> Result<()> {
        let mut by_name: std::collections::HashMap<String, (Tensor, Tensor)> =
            state.moments.into_iter().map(|(n, m, v)| (n, (m, v))).collect();
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let (m, v) =
                by_name.remove(name).ok_or_else(|| candle_core::Error::Msg(format!("optimiser state lacks {name}")))?;
            if m.dims() != var.dims() || v.dims() != var.dims() {
                return Err(candle_core::Error::Msg(format!("optimiser state for {name} has the wrong shape")));
            }
            self.m[i] = m.to_device(var.device())?;
            self.v[i] = v.to_device(var.device())?;
        }
        self.step = state.step;
        Ok(())
    }
}

/// Scales all gradients so their global L2 norm is at most `max_norm` (PyTorch's `clip_grad_norm_`, factor
/// `max_norm / (norm + 1e-6)`). Returns the norm before clipping.
pub fn clip_grad_norm(vars: &[(String, Var)], grads: &mut GradStore, max_norm: f64) -> Result<f64> {
    let squares =
        vars.iter().filter_map(|(_, v)| grads.get(v)).map(|g| g.sqr()?.sum_all()).collect::<Result<Vec<_>>>()?;
    if squares.is_empty() {
        return Ok(0.0);
    }
    let total = Tensor::stack(&squares, 0)?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?.sqrt();
    let scale = max_norm / (total + 1e-6);
    if scale < 1.0 {
        for (_, v) in vars {
            if let Some(g) = grads.remove(v) {
                grads.insert(v, (g * scale)?);
            }
        }
    }
    Ok(total)
}
