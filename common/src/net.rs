//! The actor-critic network of a [`ModelSpec`] on plain host `f32` buffers: the flat parameter layout (names,
//! shapes, offsets), initialisation, and the forward and backward passes (the CPU fast path). Actor inference, the
//! learner's `fused` and `candle` backends and the snapshot codec all take the layout from here.
//!
//! Two separate MLPs with tanh (or ReLU) hidden layers, named like a PyTorch `state_dict` (`actor.0.weight`,
//! `critic.4.bias`, `actor_logstd`): Linear layers sit at even indices, the activations between them.
//!
//! Candle runs a small MLP as a chain of tensor ops, each of which allocates and dispatches; at 64-wide layers that
//! overhead is larger than the arithmetic. Here every parameter lives in one flat vector (entries sorted by name,
//! each in PyTorch layout), the matrix products go to `gemm` with strides (no transposed copies) and the tanh runs
//! in place, so a forward or backward pass allocates nothing once its buffers have grown.

use crate::codec::Tensors;
use crate::env::Space;
use crate::init::orthogonal;
use crate::model::{Activation, Head, ModelConfig, ModelSpec, SpecError};
use rand::SeedableRng;
use std::ops::Range;

impl Activation {
    /// Applies the activation in place.
    fn apply(self, xs: &mut [f32]) {
        match self {
            Activation::Tanh => tanh_in_place(xs),
            Activation::Relu => xs.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
    }

    /// Multiplies the gradients `d` w.r.t. the activation's outputs `h` by its derivative, written in terms of
    /// the output: `1 − h²` for tanh, `[h > 0]` for ReLU.
    fn backprop(self, d: &mut [f32], h: &[f32]) {
        match self {
            Activation::Tanh => d.iter_mut().zip(h).for_each(|(d, h)| *d *= 1.0 - h * h),
            Activation::Relu => d.iter_mut().zip(h).for_each(|(d, h)| {
                if *h <= 0.0 {
                    *d = 0.0
                }
            }),
        }
    }
}

/// A parameter vector that does not fit the network.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LayoutError {
    /// A named parameter is absent.
    #[error("parameter {0} is missing")]
    Missing(String),
    /// A named parameter has another shape.
    #[error("parameter {name} has shape {got:?}, the model needs {want:?}")]
    Shape {
        /// The parameter.
        name: String,
        /// Its shape in the input.
        got: Vec<usize>,
        /// The shape the network has.
        want: Vec<usize>,
    },
    /// A flat vector of the wrong length.
    #[error("{got} parameter values, the model has {want}")]
    Length {
        /// Values given.
        got: usize,
        /// Values the network has.
        want: usize,
    },
}

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

/// One MLP's layers: Linear, activation, ..., Linear. Its methods take the net's own span of the flat parameter
/// and gradient vectors (see [`ActorCriticNet::split`]), so the two nets can be trained on two threads.
#[derive(Debug, Clone)]
pub struct Mlp {
    sizes: Vec<usize>,
    activation: Activation,
    /// Offsets of each layer's weight and bias inside the net's span.
    weights: Vec<usize>,
    biases: Vec<usize>,
}

impl Mlp {
    fn layers(&self) -> usize {
        self.weights.len()
    }

    /// Widths from the input to the output (`[obs_dim, hidden.., out]`).
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// The hidden layers' activation.
    pub fn activation(&self) -> Activation {
        self.activation
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
                self.activation.apply(out);
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
                // dH = dZ · W, then through the activation: dZ_prev = dH ⊙ f'(h).
                let w = &params[self.weights[i]..self.weights[i] + fan_out * fan_in];
                scratch.resize(n * fan_in, 0.0);
                matmul(n, fan_in, fan_out, scratch, false, dz, Mat { data: w, rs: fan_in, cs: 1 });
                self.activation.backprop(scratch, input);
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

/// The flat-buffer network of a [`ModelSpec`]: separate actor and critic MLPs, the actor's last layer the head's
/// logits or means, plus the Gaussian head's state-independent log-std; every parameter in one flat vector,
/// entries sorted by name: the actor's (`actor.*`, then `actor_logstd`) before the critic's.
#[derive(Debug, Clone)]
pub struct ActorCriticNet {
    spec: ModelSpec,
    entries: Vec<ParamEntry>,
    /// Where the critic's span starts (the actor's is everything before).
    critic_start: usize,
    actor: Mlp,
    critic: Mlp,
    log_std: Option<Range<usize>>,
}

impl ActorCriticNet {
    /// The layout `spec` describes; a spec this flat-buffer network cannot run (a shared trunk) is an error.
    pub fn new(spec: &ModelSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        if spec.shared_trunk {
            return Err(SpecError::Unsupported {
                runner: "the flat-buffer network (actor inference, the fused backend)",
                spec: spec.describe(),
            });
        }
        let mut sizes = vec![spec.obs_dim];
        sizes.extend(spec.hidden_sizes());
        let mut actor_sizes = sizes.clone();
        actor_sizes.push(spec.head.logits_dim());
        let mut critic_sizes = sizes;
        critic_sizes.push(1);
        let mut shapes: Vec<(String, Vec<usize>)> = Vec::new();
        for (net, sizes) in [("actor", &actor_sizes), ("critic", &critic_sizes)] {
            for (i, w) in sizes.windows(2).enumerate() {
                shapes.push((format!("{net}.{}.weight", 2 * i), vec![w[1], w[0]]));
                shapes.push((format!("{net}.{}.bias", 2 * i), vec![w[1]]));
            }
        }
        if let Head::Gaussian { dim } = spec.head {
            shapes.push((LOG_STD.into(), vec![1, dim]));
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
                activation: spec.activation(),
            }
        };
        let log_std = entries.iter().find(|e| e.name == LOG_STD).map(ParamEntry::range);
        Ok(Self {
            actor: mlp("actor", actor_sizes, 0),
            critic: mlp("critic", critic_sizes, critic_start),
            critic_start,
            entries,
            log_std,
            spec: spec.clone(),
        })
    }

    /// Freshly initialised parameters: orthogonal weights (gain √2 hidden, 0.01 policy head, 1.0 value head) and
    /// zero biases, or without `init.orthogonal` PyTorch's `Linear` default (weights and biases uniform in
    /// ±1/√fan_in); the log-std at `init.log_std`; drawn from `seed` in a fixed order (the critic's layers, then the
    /// actor's: PyTorch's construction order in CleanRL).
    pub fn init(&self, seed: u64) -> Vec<f32> {
        use rand::Rng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let head = format!(".{}.", 2 * (self.actor.layers() - 1));
        let mut flat = vec![0.0f32; self.num_params()];
        let mut order: Vec<&ParamEntry> = self.entries.iter().collect();
        order.sort_by_key(|e| (!e.name.starts_with("critic"), e.name.clone()));
        // A bias's fan-in is its layer's weight's column count.
        let fan_in = |bias: &str| {
            let weight = bias.replace(".bias", ".weight");
            self.entries.iter().find(|w| w.name == weight).and_then(|w| w.shape.get(1).copied()).unwrap_or(1)
        };
        for e in order {
            match e.shape.as_slice() {
                _ if e.name == LOG_STD => flat[e.range()].fill(self.spec.init.log_std as f32),
                [rows, cols] if e.name.ends_with(".weight") && self.spec.init.orthogonal => {
                    let gain = match (e.name.starts_with("actor."), e.name.contains(&head)) {
                        (true, true) => 0.01,
                        (false, true) => 1.0,
                        _ => std::f64::consts::SQRT_2,
                    };
                    flat[e.range()].copy_from_slice(&orthogonal(*rows, *cols, gain, &mut rng));
                }
                _ if self.spec.init.orthogonal => {} // biases stay zero
                shape => {
                    let cols =
                        if e.name.ends_with(".weight") { shape.get(1).copied().unwrap_or(1) } else { fan_in(&e.name) };
                    let bound = 1.0 / (cols.max(1) as f32).sqrt();
                    flat[e.range()].iter_mut().for_each(|x| *x = rng.random_range(-bound..bound));
                }
            }
        }
        flat
    }

    /// The parameters, sorted by name.
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// Length of the flat parameter vector.
    pub fn num_params(&self) -> usize {
        self.entries.last().map_or(0, |e| e.offset + e.len())
    }

    /// The layout of `cfg` on an env with these spaces ([`ModelSpec::resolve`], then [`ActorCriticNet::new`]).
    pub fn for_env(cfg: &ModelConfig, obs_space: &Space, action_space: &Space) -> Result<Self, SpecError> {
        Self::new(&ModelSpec::resolve(cfg, obs_space, action_space)?)
    }

    /// The spec this layout was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
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
        self.spec.obs_dim
    }

    /// The policy head.
    pub fn head(&self) -> &Head {
        &self.spec.head
    }

    /// Checks that `flat` has this network's length.
    pub fn check_len(&self, flat: &[f32]) -> Result<(), LayoutError> {
        match flat.len() == self.num_params() {
            true => Ok(()),
            false => Err(LayoutError::Length { got: flat.len(), want: self.num_params() }),
        }
    }

    /// `(name, shape, values)` of every parameter of `flat` (sorted by name), each name after `prefix`.
    pub fn named<'a>(
        &'a self,
        prefix: &'a str,
        flat: &'a [f32],
    ) -> impl Iterator<Item = (String, &'a [usize], &'a [f32])> + 'a {
        self.entries.iter().map(move |e| (format!("{prefix}{}", e.name), e.shape.as_slice(), &flat[e.range()]))
    }

    /// The flat vector of the tensors named `prefix` + parameter name in `tensors`; fails naming the first
    /// missing or misshapen parameter.
    pub fn flatten(&self, tensors: &Tensors, prefix: &str) -> Result<Vec<f32>, LayoutError> {
        let mut flat = Vec::with_capacity(self.num_params());
        for e in &self.entries {
            let name = format!("{prefix}{}", e.name);
            let t = tensors.get(&name).ok_or_else(|| LayoutError::Missing(name.clone()))?;
            if t.shape != e.shape {
                return Err(LayoutError::Shape { name, got: t.shape.clone(), want: e.shape.clone() });
            }
            flat.extend_from_slice(&t.values);
        }
        Ok(flat)
    }
}

/// Name of the Gaussian policy's log-std parameter.
pub const LOG_STD: &str = "actor_logstd";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::HostTensor;

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
    fn parameter_names_follow_pytorch_state_dict() {
        let space = Space::vector(vec![-2.0], vec![2.0]);
        let net = ActorCriticNet::for_env(&ModelConfig::default(), &Space::unbounded(3), &space).unwrap();
        let names: Vec<(&str, &[usize])> =
            net.entries().iter().map(|e| (e.name.as_str(), e.shape.as_slice())).collect();
        let expect: [(&str, &[usize]); 13] = [
            ("actor.0.bias", &[64]),
            ("actor.0.weight", &[64, 3]),
            ("actor.2.bias", &[64]),
            ("actor.2.weight", &[64, 64]),
            ("actor.4.bias", &[1]),
            ("actor.4.weight", &[1, 64]),
            ("actor_logstd", &[1, 1]),
            ("critic.0.bias", &[64]),
            ("critic.0.weight", &[64, 3]),
            ("critic.2.bias", &[64]),
            ("critic.2.weight", &[64, 64]),
            ("critic.4.bias", &[1]),
            ("critic.4.weight", &[1, 64]),
        ];
        assert_eq!(names, expect);
    }

    #[test]
    fn pytorch_default_init_without_ortho_init() {
        let space = Space::vector(vec![-1.0; 6], vec![1.0; 6]);
        let cfg =
            ModelConfig { ortho_init: false, init_log_std: -2.0, hidden_sizes: vec![256, 256], ..Default::default() };
        let net = ActorCriticNet::for_env(&cfg, &Space::unbounded(17), &space).unwrap();
        let flat = net.init(5);
        assert_eq!(flat, net.init(5), "seeded init is reproducible");
        for e in net.entries() {
            let w = &flat[e.range()];
            if e.name == LOG_STD {
                assert!(w.iter().all(|&x| x == -2.0));
                continue;
            }
            let layer = e.name.replace(".bias", ".weight");
            let fan_in = net.entries().iter().find(|x| x.name == layer).unwrap().shape[1];
            let bound = 1.0 / (fan_in as f32).sqrt();
            assert!(w.iter().all(|x| x.abs() <= bound), "{} outside ±{bound}", e.name);
            // Uniform: the variance is bound²/3 (loosely, for the small bias vectors too).
            let var = w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32;
            let want = bound * bound / 3.0;
            let tol = if w.len() > 100 { 0.2 } else { 0.8 };
            assert!((var - want).abs() <= tol * want, "{}: variance {var}, uniform gives {want}", e.name);
        }
    }

    #[test]
    fn init_gains_zero_biases_and_log_std() {
        let space = Space::vector(vec![-1.0; 2], vec![1.0; 2]);
        let net = ActorCriticNet::for_env(
            &ModelConfig { init_log_std: -0.5, ..ModelConfig::default() },
            &Space::unbounded(4),
            &space,
        )
        .unwrap();
        let flat = net.init(5);
        assert_eq!(flat, net.init(5), "seeded init is reproducible");
        for e in net.entries() {
            let w = &flat[e.range()];
            match e.shape.as_slice() {
                _ if e.name == LOG_STD => assert!(w.iter().all(|&x| x == -0.5)),
                [rows, cols] => {
                    // Each row of a wide matrix (or column of a tall one) has norm = gain.
                    let gain = match e.name.as_str() {
                        "actor.4.weight" => 0.01,
                        "critic.4.weight" => 1.0,
                        _ => std::f32::consts::SQRT_2,
                    };
                    let (outer, inner) = if rows <= cols { (*rows, *cols) } else { (*cols, *rows) };
                    for o in 0..outer {
                        let at = |i: usize| if rows <= cols { w[o * cols + i] } else { w[i * cols + o] };
                        let norm = (0..inner).map(|i| at(i) * at(i)).sum::<f32>().sqrt();
                        assert!((norm - gain).abs() < 1e-4 * gain.max(1.0), "{}: {norm}", e.name);
                    }
                }
                _ => assert!(w.iter().all(|&x| x == 0.0), "{}", e.name),
            }
        }
    }

    #[test]
    fn flatten_inverts_named_and_names_what_does_not_fit() {
        let net =
            ActorCriticNet::for_env(&ModelConfig::default(), &Space::unbounded(4), &Space::Discrete { n: 2 }).unwrap();
        let flat = net.init(1);
        let tensors: Tensors =
            net.named("p.", &flat).map(|(n, s, v)| (n, HostTensor::new(s.to_vec(), v.to_vec()))).collect();
        assert_eq!(net.flatten(&tensors, "p.").unwrap(), flat);
        assert_eq!(net.flatten(&tensors, "").unwrap_err(), LayoutError::Missing("actor.0.bias".into()));
        let mut bad = tensors.clone();
        bad.insert("p.critic.4.bias".into(), HostTensor::new(vec![2], vec![0.0; 2]));
        assert!(matches!(net.flatten(&bad, "p."), Err(LayoutError::Shape { name, .. }) if name == "p.critic.4.bias"));
        assert!(net.check_len(&flat[1..]).is_err());
    }
}
