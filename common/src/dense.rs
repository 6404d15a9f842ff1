//! The actor-critic on plain host `f32` buffers: the CPU fast path. Actors run inference with it, and the
//! learner's `fused` backend trains with it.
//!
//! Candle runs a small MLP as a chain of tensor ops, each of which allocates and dispatches; at 64-wide layers that
//! overhead is larger than the arithmetic. Here every parameter lives in one flat vector (entries sorted by name,
//! each in PyTorch layout), the matrix products go to `gemm` with strides (no transposed copies) and the tanh runs
//! in place, so a forward or backward pass allocates nothing once its buffers have grown.

use crate::env::Space;
use crate::model::ModelConfig;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::ops::Range;

/// A strided read-only matrix view: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl Mat<'_> {
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`), `a` is `m×k`, `b` is `k×n`, `dst` dense row-major `m×n`.
fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, a: Mat, b: Mat) {
    assert!(dst.len() >= m * n && a.fits(m, k) && b.fits(k, n), "matmul shapes out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above keep every index gemm touches inside the three slices (`Mat::fits` checks the
    // largest offset of each operand, `dst` is dense m×n); `dst` is borrowed mutably, so it cannot alias `a`/`b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `a · b + c`; one fused instruction with `FMA` (use it only in code compiled for CPUs that have FMA, where it is
/// one instruction; elsewhere `mul_add` is a slow library call).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `e^x` for `x <= 0` (clamped at −87): a range reduction to `2^k · e^r`, `|r| <= ln2/2`, and a degree-7 Taylor
/// polynomial (relative error below 1e-7). Written branch-free so loops over it vectorise.
#[inline(always)]
fn exp_nonpositive<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer
    let x = if x < -87.0 { -87.0 } else { x }; // not f32::max: its NaN rule keeps the loop from vectorising
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = madd::<FMA>(-k, LN2_LO, madd::<FMA>(-k, LN2_HI, x));
    let p = madd::<FMA>(r, 1.0 / 5040.0, 1.0 / 720.0);
    let p = madd::<FMA>(p, r, 1.0 / 120.0);
    let p = madd::<FMA>(p, r, 1.0 / 24.0);
    let p = madd::<FMA>(p, r, 1.0 / 6.0);
    let p = madd::<FMA>(p, r, 0.5);
    let p = madd::<FMA>(p, r, 1.0);
    let p = madd::<FMA>(p, r, 1.0);
    p * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

/// `tanh(x)`, within about 3e-7 of the exact value: `(1 − e^{−2|x|}) / (1 + e^{−2|x|})` with the sign of `x`, and
/// the odd Taylor series below |x| = 1/8, where the quotient would lose digits to cancellation.
#[inline(always)]
fn tanh_with<const FMA: bool>(x: f32) -> f32 {
    let a = x.abs();
    let a = if a > 10.0 { 10.0 } else { a };
    let e = exp_nonpositive::<FMA>(-2.0 * a);
    let quotient = (1.0 - e) / (1.0 + e);
    let a2 = a * a;
    let series = a * madd::<FMA>(a2, madd::<FMA>(a2, madd::<FMA>(a2, -17.0 / 315.0, 2.0 / 15.0), -1.0 / 3.0), 1.0);
    let t = if a < 0.125 { series } else { quotient };
    if x.is_nan() { x } else { t.copysign(x) }
}

/// `tanh(x)` (see `tanh_with`): the portable build, without fused multiply-adds.
pub fn tanh(x: f32) -> f32 {
    tanh_with::<false>(x)
}

/// [`tanh`] over a slice, with AVX2+FMA code where the CPU has it (chosen at run time, so one binary serves every
/// x86-64 machine).
fn tanh_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features `tanh_in_place_avx2` is compiled for (checked just above).
        unsafe { tanh_in_place_avx2(xs) };
        return;
    }
    xs.iter_mut().for_each(|v| *v = tanh(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn tanh_in_place_avx2(xs: &mut [f32]) {
    xs.iter_mut().for_each(|v| *v = tanh_with::<true>(*v));
}

/// One MLP's layers: Linear, tanh, ..., Linear. Its methods take the net's own span of the flat parameter and
/// gradient vectors (see [`DenseActorCritic::split`]), so the two nets can be trained on two threads.
#[derive(Debug, Clone)]
pub struct Mlp {
    sizes: Vec<usize>,
    /// Offsets of each layer's weight and bias inside the net's span.
    weights: Vec<usize>,
    biases: Vec<usize>,
}

impl Mlp {
    fn layers(&self) -> usize {
        self.weights.len()
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.sizes.last().copied().unwrap_or(0)
    }

    /// Runs `n` rows of `x` through the net (`params`: its span); `outs[i]` receives layer `i`'s output (after tanh for hidden
    /// layers), so the last entry is the net's output `[n, out_dim]`.
    pub fn forward(&self, params: &[f32], x: &[f32], n: usize, outs: &mut Vec<Vec<f32>>) {
        outs.resize_with(self.layers(), Vec::new);
        for i in 0..self.layers() {
            let (fan_in, fan_out) = (self.sizes[i], self.sizes[i + 1]);
            let (done, rest) = outs.split_at_mut(i);
            let input = if i == 0 { x } else { &done[i - 1] };
            let out = &mut rest[0];
            let bias = &params[self.biases[i]..self.biases[i] + fan_out];
            out.clear();
            for _ in 0..n {
                out.extend_from_slice(bias);
            }
            let w = &params[self.weights[i]..self.weights[i] + fan_out * fan_in];
            // out += input · Wᵀ: W is [fan_out, fan_in] row-major, so Wᵀ is the same data with swapped strides.
            matmul(
                n,
                fan_out,
                fan_in,
                out,
                true,
                Mat { data: input, rs: fan_in, cs: 1 },
                Mat { data: w, rs: 1, cs: fan_in },
            );
            if i + 1 < self.layers() {
                tanh_in_place(out);
            }
        }
    }

    /// Backpropagates `d_out` (the loss gradient w.r.t. the output of the [`Mlp::forward`] of `x` that filled `outs`;
    /// used as scratch) and writes the parameter gradients into `grads` (the net's span of the gradient vector).
    pub fn backward(
        &self,
        params: &[f32],
        x: &[f32],
        outs: &[Vec<f32>],
        d_out: &mut Vec<f32>,
        grads: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let n = x.len() / self.sizes[0].max(1);
        for i in (0..self.layers()).rev() {
            let (fan_in, fan_out) = (self.sizes[i], self.sizes[i + 1]);
            let input = if i == 0 { x } else { &outs[i - 1] };
            let dz = Mat { data: d_out, rs: fan_out, cs: 1 };
            // dW = dZᵀ · input
            let dw = &mut grads[self.weights[i]..self.weights[i] + fan_out * fan_in];
            matmul(
                fan_out,
                fan_in,
                n,
                dw,
                false,
                Mat { data: d_out, rs: 1, cs: fan_out },
                Mat { data: input, rs: fan_in, cs: 1 },
            );
            let db = &mut grads[self.biases[i]..self.biases[i] + fan_out];
            db.fill(0.0);
            for row in d_out.chunks_exact(fan_out) {
                db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
            }
            if i > 0 {
                // dH = dZ · W, then through tanh: dZ_prev = dH ⊙ (1 − h²).
                let w = &params[self.weights[i]..self.weights[i] + fan_out * fan_in];
                scratch.resize(n * fan_in, 0.0);
                matmul(n, fan_in, fan_out, scratch, false, dz, Mat { data: w, rs: fan_in, cs: 1 });
                scratch.iter_mut().zip(input).for_each(|(d, h)| *d *= 1.0 - h * h);
                std::mem::swap(d_out, scratch);
            }
        }
    }
}

/// One named parameter in the flat vector.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamEntry {
    /// PyTorch-style name (`actor.0.weight`).
    pub name: String,
    /// Shape, PyTorch layout.
    pub shape: Vec<usize>,
    /// Offset of the first element.
    pub offset: usize,
}

impl ParamEntry {
    /// Elements in this parameter.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a zero-sized parameter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its span in the flat vector.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The layout of [`crate::model::ActorCritic`]'s parameters in one flat vector, entries sorted by name: the actor's
/// (`actor.*`, then `actor_logstd`) before the critic's.
#[derive(Debug, Clone)]
pub struct DenseActorCritic {
    entries: Vec<ParamEntry>,
    /// Where the critic's span starts (the actor's is everything before).
    critic_start: usize,
    actor: Mlp,
    critic: Mlp,
    log_std: Option<Range<usize>>,
    action_space: Space,
    obs_dim: usize,
}

impl DenseActorCritic {
    /// The layout for `cfg` on an env with `obs_dim` observations and `action_space`.
    pub fn new(cfg: &ModelConfig, obs_dim: usize, action_space: &Space) -> Self {
        let mut sizes = vec![obs_dim];
        sizes.extend(&cfg.hidden_sizes);
        let mut actor_sizes = sizes.clone();
        actor_sizes.push(action_space.policy_dim());
        let mut critic_sizes = sizes;
        critic_sizes.push(1);
        let mut shapes: Vec<(String, Vec<usize>)> = Vec::new();
        for (net, sizes) in [("actor", &actor_sizes), ("critic", &critic_sizes)] {
            for (i, w) in sizes.windows(2).enumerate() {
                shapes.push((format!("{net}.{}.weight", 2 * i), vec![w[1], w[0]]));
                shapes.push((format!("{net}.{}.bias", 2 * i), vec![w[1]]));
            }
        }
        if let Space::Box { low, .. } = action_space {
            shapes.push(("actor_logstd".into(), vec![1, low.len()]));
        }
        shapes.sort();
        let mut offset = 0;
        let entries: Vec<ParamEntry> = shapes
            .into_iter()
            .map(|(name, shape)| {
                let e = ParamEntry { name, shape, offset };
                offset += e.len();
                e
            })
            .collect();
        let critic_start = entries.iter().find(|e| e.name.starts_with("critic.")).map_or(0, |e| e.offset);
        let find = |name: String| entries.iter().find(|e| e.name == name).map_or(0, |e| e.offset);
        let mlp = |net: &str, sizes: Vec<usize>, start: usize| {
            let layers = sizes.len() - 1;
            Mlp {
                weights: (0..layers).map(|i| find(format!("{net}.{}.weight", 2 * i)) - start).collect(),
                biases: (0..layers).map(|i| find(format!("{net}.{}.bias", 2 * i)) - start).collect(),
                sizes,
            }
        };
        let log_std = entries.iter().find(|e| e.name == "actor_logstd").map(ParamEntry::range);
        Self {
            actor: mlp("actor", actor_sizes, 0),
            critic: mlp("critic", critic_sizes, critic_start),
            critic_start,
            entries,
            log_std,
            action_space: action_space.clone(),
            obs_dim,
        }
    }

    /// The parameters, sorted by name.
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// Length of the flat parameter vector.
    pub fn num_params(&self) -> usize {
        self.entries.last().map_or(0, |e| e.offset + e.len())
    }

    /// The policy net (logits or Gaussian mean).
    pub fn actor(&self) -> &Mlp {
        &self.actor
    }

    /// The value net.
    pub fn critic(&self) -> &Mlp {
        &self.critic
    }

    /// The actor's and the critic's spans of a flat vector.
    pub fn split<'a>(&self, flat: &'a [f32]) -> (&'a [f32], &'a [f32]) {
        flat.split_at(self.critic_start)
    }

    /// The actor's and the critic's spans of a flat vector, mutably.
    pub fn split_mut<'a>(&self, flat: &'a mut [f32]) -> (&'a mut [f32], &'a mut [f32]) {
        flat.split_at_mut(self.critic_start)
    }

    /// Span of the Gaussian log-std in the flat vector and in the actor's span (`None` for Discrete).
    pub fn log_std(&self) -> Option<Range<usize>> {
        self.log_std.clone()
    }

    /// Observation width.
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    /// The action space the policy head was built for.
    pub fn action_space(&self) -> &Space {
        &self.action_space
    }

    /// The flat vector of named tensors; fails naming the first missing or misshapen parameter.
    pub fn flatten(&self, named: &HashMap<String, Tensor>) -> Result<Vec<f32>, String> {
        let mut flat = Vec::with_capacity(self.num_params());
        for e in &self.entries {
            let t = named.get(&e.name).ok_or_else(|| format!("parameter {} is missing", e.name))?;
            if t.dims() != e.shape.as_slice() {
                return Err(format!("parameter {} has shape {:?}, the model needs {:?}", e.name, t.dims(), e.shape));
            }
            let values =
                t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|err| format!("{}: {err}", e.name))?;
            flat.extend(values);
        }
        Ok(flat)
    }

    /// Named tensors (sorted by name) holding the values of `flat`.
    pub fn tensors(&self, flat: &[f32], device: &Device) -> candle_core::Result<Vec<(String, Tensor)>> {
        self.entries
            .iter()
            .map(|e| Ok((e.name.clone(), Tensor::from_slice(&flat[e.range()], e.shape.as_slice(), device)?)))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{ActorCritic, sorted_vars};

    #[test]
    fn tanh_is_accurate_everywhere() {
        for tanh in [tanh_with::<false>, tanh_with::<true>] {
            let mut worst = 0.0f64;
            for i in -200_000..=200_000 {
                let x = i as f32 * 1e-4;
                let err = (tanh(x) as f64 - (x as f64).tanh()).abs();
                worst = worst.max(err);
            }
            assert!(worst < 3e-7, "worst abs error {worst}");
            for x in [1e-30f32, -1e-30, 1e-8, 50.0, -50.0, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY] {
                let want = (x as f64).tanh();
                assert!((tanh(x) as f64 - want).abs() <= 1e-7 * want.abs().max(1e-30), "{x}");
            }
            assert_eq!(tanh(0.0), 0.0);
            assert!(tanh(f32::NAN).is_nan());
        }
        let mut xs: Vec<f32> = (-3000..3000).map(|i| i as f32 * 3e-3).collect();
        let want: Vec<f32> = xs.iter().map(|&x| tanh(x)).collect();
        tanh_in_place(&mut xs);
        for (g, w) in xs.iter().zip(&want) {
            assert!((g - w).abs() <= 2e-7, "{g} vs {w}");
        }
    }

    #[test]
    fn exp_relative_error() {
        for i in 0..=80_000 {
            let x = -(i as f32) * 1e-3;
            let (got, want) = (exp_nonpositive::<false>(x) as f64, (x as f64).exp());
            assert!(((got - want) / want).abs() < 2e-7, "{x}: {got} vs {want}");
        }
    }

    #[test]
    fn layout_matches_the_candle_model_and_forward_agrees() {
        for space in [Space::Discrete { n: 3 }, Space::Box { low: vec![-1.0; 2], high: vec![1.0; 2] }] {
            let cfg = ModelConfig { init_log_std: -0.5, ..ModelConfig::default() };
            let (varmap, model) = ActorCritic::init(&cfg, 5, &space, 3, &Device::Cpu).unwrap();
            let named: HashMap<String, Tensor> =
                sorted_vars(&varmap).unwrap().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
            let dense = DenseActorCritic::new(&cfg, 5, &space);
            let names: Vec<&str> = dense.entries().iter().map(|e| e.name.as_str()).collect();
            let mut want: Vec<&str> = named.keys().map(String::as_str).collect();
            want.sort();
            assert_eq!(names, want);
            let flat = dense.flatten(&named).unwrap();
            assert_eq!(flat.len(), dense.num_params());

            let n = 7;
            let x: Vec<f32> = (0..n * 5).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3).collect();
            let xt = Tensor::from_slice(&x, (n, 5), &Device::Cpu).unwrap();
            let mut outs = Vec::new();
            let (actor, critic) = dense.split(&flat);
            dense.actor().forward(actor, &x, n, &mut outs);
            let want = model.policy_head(&xt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            close(outs.last().unwrap(), &want);
            dense.critic().forward(critic, &x, n, &mut outs);
            close(outs.last().unwrap(), &model.value(&xt).unwrap().to_vec1::<f32>().unwrap());

            // And back: the tensors rebuilt from the flat vector are the originals.
            for (name, t) in dense.tensors(&flat, &Device::Cpu).unwrap() {
                let diff = (&t - &named[&name]).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{name}");
            }
        }
    }

    #[test]
    fn backward_matches_candle_autograd() {
        let space = Space::Discrete { n: 2 };
        let cfg = ModelConfig { hidden_sizes: vec![16, 8], ..ModelConfig::default() };
        let (varmap, model) = ActorCritic::init(&cfg, 4, &space, 9, &Device::Cpu).unwrap();
        let vars = sorted_vars(&varmap).unwrap();
        let named: HashMap<String, Tensor> = vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
        let dense = DenseActorCritic::new(&cfg, 4, &space);
        let flat = dense.flatten(&named).unwrap();
        let n = 5;
        let x: Vec<f32> = (0..n * 4).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.4).collect();
        let w: Vec<f32> = (0..n * 2).map(|i| (i as f32 - 4.0) * 0.25).collect();
        // Loss: Σ w ⊙ logits + Σ value², through both nets.
        let xt = Tensor::from_slice(&x, (n, 4), &Device::Cpu).unwrap();
        let wt = Tensor::from_slice(&w, (n, 2), &Device::Cpu).unwrap();
        let value = model.value(&xt).unwrap();
        let loss = ((model.policy_head(&xt).unwrap() * &wt).unwrap().sum_all().unwrap()
            + value.sqr().unwrap().sum_all().unwrap())
        .unwrap();
        let autograd = loss.backward().unwrap();

        let mut grads = vec![0.0; dense.num_params()];
        let (mut outs, mut scratch) = (Vec::new(), Vec::new());
        let (actor, critic) = dense.split(&flat);
        let (actor_grads, critic_grads) = dense.split_mut(&mut grads);
        dense.actor().forward(actor, &x, n, &mut outs);
        let mut d = w.clone();
        dense.actor().backward(actor, &x, &outs, &mut d, actor_grads, &mut scratch);
        dense.critic().forward(critic, &x, n, &mut outs);
        let mut d: Vec<f32> = outs.last().unwrap().iter().map(|v| 2.0 * v).collect();
        dense.critic().backward(critic, &x, &outs, &mut d, critic_grads, &mut scratch);
        for (e, (name, var)) in dense.entries().iter().zip(&vars) {
            assert_eq!(&e.name, name);
            let want = autograd.get(var).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            close(&grads[e.range()], &want);
        }
    }

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "got {g}, want {w}");
        }
    }
}
