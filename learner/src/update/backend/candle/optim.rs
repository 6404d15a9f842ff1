//! Adam and global grad-norm clipping on candle variables, with the constants and the flat state layout of
//! [`crate::update::optim`].

use super::model::flatten;
use crate::update::optim::{AdamState, BETA1, BETA2, CLIP_NORM_EPS, EPS};
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
}

impl Adam {
    /// Adam over `vars` (sorted by name, as the network's entries) at learning rate `lr`.
    pub fn new(vars: Vec<(String, Var)>, lr: f64) -> Result<Self> {
        let m = vars.iter().map(|(_, v)| v.zeros_like()).collect::<Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self { vars, m, v, step: 0, lr })
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
        let bc1 = 1.0 - BETA1.powi(t as i32);
        let bc2 = 1.0 - BETA2.powi(t as i32);
        let mut updates = Vec::with_capacity(self.vars.len());
        let mut probes = Vec::with_capacity(3 * self.vars.len());
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var) else { continue };
            let m = ((&self.m[i] * BETA1)? + (g * (1.0 - BETA1))?)?;
            let v = ((&self.v[i] * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
            let denom = ((&v / bc2)?.sqrt()? + EPS)?;
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

    /// The state for a checkpoint, in the network's flat layout.
    pub fn state(&self) -> Result<AdamState> {
        Ok(AdamState { step: self.step, m: flatten(&self.m)?, v: flatten(&self.v)? })
    }

    /// Restores a saved state; the moments must have one entry per parameter.
    pub fn load_state(&mut self, state: AdamState) -> Result<()> {
        let want: usize = self.vars.iter().map(|(_, v)| v.elem_count()).sum();
        if state.m.len() != want || state.v.len() != want {
            let msg = format!("optimiser state has {} moments, the model has {want} parameters", state.m.len());
            return Err(candle_core::Error::Msg(msg));
        }
        let mut offset = 0;
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let span = offset..offset + var.elem_count();
            self.m[i] = Tensor::from_slice(&state.m[span.clone()], var.dims(), var.device())?;
            self.v[i] = Tensor::from_slice(&state.v[span], var.dims(), var.device())?;
            offset += var.elem_count();
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
    let scale = max_norm / (total + CLIP_NORM_EPS);
    if scale < 1.0 {
        for (_, v) in vars {
            if let Some(g) = grads.remove(v) {
                grads.insert(v, (g * scale)?);
            }
        }
    }
    Ok(total)
}
