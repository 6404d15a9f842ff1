//! A recurrent core on the flat parameter vector: PyTorch's one-layer `nn.LSTM` or `nn.GRU` run over `B`
//! sequences of `T` steps (rows time-major: row `t·B + b`), with each row able to start a new episode (its
//! incoming state is zero), and its backward pass through time.
//!
//! The input projections of all `T·B` rows are one matrix product, each step adds `h·W_hhᵀ` for its `B` rows, and
//! the backward pass gathers every step's gate gradients so that the weight gradients are again one product each.
//! Gradients stop at each sequence's initial state (it is data, sent with the rollout).

use super::kernels::{Mat, linear_grads, matmul, tanh};
use crate::model::Core;

/// The core's layout: its kind, widths and where its four parameters are in the flat vector.
#[derive(Debug, Clone)]
pub struct Recurrent {
    pub(super) lstm: bool,
    /// Input width (the trunk's features).
    pub(super) input: usize,
    /// Hidden units.
    pub(super) hidden: usize,
    /// Offsets of `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`.
    pub(super) w_ih: usize,
    pub(super) w_hh: usize,
    pub(super) b_ih: usize,
    pub(super) b_hh: usize,
}

/// What one [`Recurrent::forward`] kept for its backward pass.
#[derive(Debug, Clone, Default)]
pub struct SeqTrace {
    steps: usize,
    batch: usize,
    /// `[T·B, G·H]` input projections `x·W_ihᵀ + b_ih`, then (LSTM) the activated gates i, f, g, o; (GRU) r, z, n.
    gates: Vec<f32>,
    /// GRU: `[T·B, H]` the n gate's recurrent term `h·W_hnᵀ + b_hn`.
    gh_n: Vec<f32>,
    /// `[T·B, H]` the hidden state entering each row (zero where the row starts an episode).
    h_in: Vec<f32>,
    /// LSTM: `[T·B, H]` the cell state entering each row.
    c_in: Vec<f32>,
    /// LSTM: `[T·B, H]` the cell state after each row.
    c_out: Vec<f32>,
    /// `[T·B, H]` the core's output, the hidden state after each row.
    out: Vec<f32>,
    /// `[B, G·H]` one step's recurrent products.
    hh: Vec<f32>,
    /// Backward scratch: `[T·B, G·H]` gate gradients w.r.t. the input and the recurrent products.
    d_gi: Vec<f32>,
    d_gh: Vec<f32>,
    /// Backward scratch: `[B, H]` gradients flowing into the previous step.
    d_h: Vec<f32>,
    d_c: Vec<f32>,
}

impl SeqTrace {
    /// `[T·B, H]` the hidden state after each row (the heads' input).
    pub fn output(&self) -> &[f32] {
        &self.out
    }

    /// Appends the state after row `row` (`[h, c]` for an LSTM, `h` for a GRU) to `out`.
    pub fn state_after(&self, row: usize, out: &mut Vec<f32>) {
        let h = self.out.len() / (self.steps * self.batch).max(1);
        out.extend_from_slice(&self.out[row * h..(row + 1) * h]);
        if !self.c_out.is_empty() {
            out.extend_from_slice(&self.c_out[row * h..(row + 1) * h]);
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Recurrent {
    /// The core of `core` on `input` features, its parameters at these offsets (relative to the span the methods
    /// are given); `None` for a memoryless core.
    pub(super) fn new(core: &Core, input: usize, offsets: [usize; 4]) -> Option<Self> {
        let lstm = match core {
            Core::None => return None,
            Core::Lstm { .. } => true,
            Core::Gru { .. } => false,
        };
        let [w_ih, w_hh, b_ih, b_hh] = offsets;
        Some(Self { lstm, input, hidden: core.size(), w_ih, w_hh, b_ih, b_hh })
    }

    /// Gates per unit: 4 (LSTM) or 3 (GRU).
    fn gates(&self) -> usize {
        if self.lstm { 4 } else { 3 }
    }

    /// Values of one sequence's state.
    pub fn state_dim(&self) -> usize {
        if self.lstm { 2 * self.hidden } else { self.hidden }
    }

    /// Hidden units (the output width).
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Runs `B = state0.len() / state_dim` sequences of `steps` rows of `x` (`[T·B, input]`, time-major) from
    /// the states `state0` (`[B, state_dim]`); a row whose `starts` flag is set begins from a zero state.
    pub fn forward(&self, params: &[f32], x: &[f32], steps: usize, state0: &[f32], starts: &[bool], t: &mut SeqTrace) {
        let (h, g) = (self.hidden, self.gates() * self.hidden);
        let b = state0.len() / self.state_dim();
        let rows = steps * b;
        t.steps = steps;
        t.batch = b;
        // Input projections for every row at once.
        let b_ih = &params[self.b_ih..self.b_ih + g];
        t.gates.clear();
        (0..rows).for_each(|_| t.gates.extend_from_slice(b_ih));
        let w_ih = Mat { data: &params[self.w_ih..self.w_ih + g * self.input], rs: 1, cs: self.input };
        matmul(rows, g, self.input, &mut t.gates, true, Mat { data: x, rs: self.input, cs: 1 }, w_ih);
        let w_hh = Mat { data: &params[self.w_hh..self.w_hh + g * h], rs: 1, cs: h };
        let b_hh = &params[self.b_hh..self.b_hh + g];
        for buf in [&mut t.h_in, &mut t.out] {
            buf.resize(rows * h, 0.0);
        }
        for buf in [&mut t.c_in, &mut t.c_out] {
            buf.resize(if self.lstm { rows * h } else { 0 }, 0.0);
        }
        t.gh_n.resize(if self.lstm { 0 } else { rows * h }, 0.0);
        t.hh.resize(b * g, 0.0);
        for step in 0..steps {
            let first = step * b;
            // The state entering this step: the previous step's (or `state0`), zero where an episode starts.
            for j in 0..b {
                let row = first + j;
                let dst = row * h..(row + 1) * h;
                if starts[row] {
                    t.h_in[dst.clone()].fill(0.0);
                    if self.lstm {
                        t.c_in[dst].fill(0.0);
                    }
                    continue;
                }
                let s = self.state_dim();
                match step {
                    0 => {
                        t.h_in[dst.clone()].copy_from_slice(&state0[j * s..j * s + h]);
                        if self.lstm {
                            t.c_in[dst].copy_from_slice(&state0[j * s + h..(j + 1) * s]);
                        }
                    }
                    _ => {
                        let prev = (row - b) * h;
                        let (h_in, out) = (&mut t.h_in, &t.out);
                        h_in[dst.clone()].copy_from_slice(&out[prev..prev + h]);
                        if self.lstm {
                            let (c_in, c_out) = (&mut t.c_in, &t.c_out);
                            c_in[dst].copy_from_slice(&c_out[prev..prev + h]);
                        }
                    }
                }
            }
            for row in t.hh.chunks_exact_mut(g) {
                row.copy_from_slice(b_hh);
            }
            let h_in = Mat { data: &t.h_in[first * h..(first + b) * h], rs: h, cs: 1 };
            matmul(b, g, h, &mut t.hh, true, h_in, w_hh);
            for j in 0..b {
                let row = first + j;
                let gates = &mut t.gates[row * g..(row + 1) * g];
                let hh = &t.hh[j * g..(j + 1) * g];
                let (h_in, out) = (&t.h_in[row * h..(row + 1) * h], &mut t.out[row * h..(row + 1) * h]);
                if self.lstm {
                    let (c_in, c_out) = (&t.c_in[row * h..(row + 1) * h], &mut t.c_out[row * h..(row + 1) * h]);
                    for u in 0..h {
                        let i = sigmoid(gates[u] + hh[u]);
                        let f = sigmoid(gates[h + u] + hh[h + u]);
                        let gg = tanh(gates[2 * h + u] + hh[2 * h + u]);
                        let o = sigmoid(gates[3 * h + u] + hh[3 * h + u]);
                        let c = f * c_in[u] + i * gg;
                        c_out[u] = c;
                        out[u] = o * tanh(c);
                        (gates[u], gates[h + u], gates[2 * h + u], gates[3 * h + u]) = (i, f, gg, o);
                    }
                } else {
                    let gh_n = &mut t.gh_n[row * h..(row + 1) * h];
                    for u in 0..h {
                        let r = sigmoid(gates[u] + hh[u]);
                        let z = sigmoid(gates[h + u] + hh[h + u]);
                        gh_n[u] = hh[2 * h + u];
                        let n = tanh(gates[2 * h + u] + r * gh_n[u]);
                        out[u] = (1.0 - z) * n + z * h_in[u];
                        (gates[u], gates[h + u], gates[2 * h + u]) = (r, z, n);
                    }
                }
            }
        }
    }

    /// Backpropagates `d_out` (`[T·B, H]`, the loss gradient w.r.t. [`SeqTrace::output`]) through time: writes the
    /// core's parameter gradients into `grads` and the gradient w.r.t. the input `x` into `d_x` (`[T·B, input]`).
    /// `starts` as given to the forward pass.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        params: &[f32],
        x: &[f32],
        starts: &[bool],
        t: &mut SeqTrace,
        d_out: &[f32],
        grads: &mut [f32],
        d_x: &mut Vec<f32>,
    ) {
        let (h, g, b) = (self.hidden, self.gates() * self.hidden, t.batch);
        let rows = t.steps * b;
        t.d_gi.resize(rows * g, 0.0);
        t.d_gh.resize(if self.lstm { 0 } else { rows * g }, 0.0);
        t.d_h.clear();
        t.d_h.resize(b * h, 0.0);
        t.d_c.clear();
        t.d_c.resize(if self.lstm { b * h } else { 0 }, 0.0);
        let w_hh = &params[self.w_hh..self.w_hh + g * h];
        for step in (0..t.steps).rev() {
            let first = step * b;
            for j in 0..b {
                let row = first + j;
                let gates = &t.gates[row * g..(row + 1) * g];
                let d_h = &mut t.d_h[j * h..(j + 1) * h];
                let d_o = &d_out[row * h..(row + 1) * h];
                let d_gi = &mut t.d_gi[row * g..(row + 1) * g];
                if self.lstm {
                    let (c_in, c_out) = (&t.c_in[row * h..(row + 1) * h], &t.c_out[row * h..(row + 1) * h]);
                    let d_c = &mut t.d_c[j * h..(j + 1) * h];
                    for u in 0..h {
                        let (i, f, gg, o) = (gates[u], gates[h + u], gates[2 * h + u], gates[3 * h + u]);
                        let dh = d_o[u] + d_h[u];
                        let tc = tanh(c_out[u]);
                        let dc = d_c[u] + dh * o * (1.0 - tc * tc);
                        d_gi[u] = dc * gg * i * (1.0 - i);
                        d_gi[h + u] = dc * c_in[u] * f * (1.0 - f);
                        d_gi[2 * h + u] = dc * i * (1.0 - gg * gg);
                        d_gi[3 * h + u] = dh * tc * o * (1.0 - o);
                        d_c[u] = dc * f;
                    }
                } else {
                    let (h_in, gh_n) = (&t.h_in[row * h..(row + 1) * h], &t.gh_n[row * h..(row + 1) * h]);
                    let d_gh = &mut t.d_gh[row * g..(row + 1) * g];
                    for u in 0..h {
                        let (r, z, n) = (gates[u], gates[h + u], gates[2 * h + u]);
                        let dh = d_o[u] + d_h[u];
                        let d_n = dh * (1.0 - z) * (1.0 - n * n);
                        let d_r = d_n * gh_n[u] * r * (1.0 - r);
                        let d_z = dh * (h_in[u] - n) * z * (1.0 - z);
                        (d_gi[u], d_gi[h + u], d_gi[2 * h + u]) = (d_r, d_z, d_n);
                        (d_gh[u], d_gh[h + u], d_gh[2 * h + u]) = (d_r, d_z, d_n * r);
                        d_h[u] = dh * z;
                    }
                }
            }
            // The gradient entering the previous step: through W_hh (and, for a GRU, z's direct path kept above),
            // none across an episode start (that state was zero) or before the first step (the state is data).
            let d_rec = if self.lstm { &t.d_gi } else { &t.d_gh };
            let d_rec = Mat { data: &d_rec[first * g..(first + b) * g], rs: g, cs: 1 };
            matmul(b, h, g, &mut t.d_h, !self.lstm, d_rec, Mat { data: w_hh, rs: h, cs: 1 });
            for j in 0..b {
                if starts[first + j] {
                    t.d_h[j * h..(j + 1) * h].fill(0.0);
                    if self.lstm {
                        t.d_c[j * h..(j + 1) * h].fill(0.0);
                    }
                }
            }
        }
        let d_rec = if self.lstm { &t.d_gi } else { &t.d_gh };
        let (dw, db) = two_mut(grads, (self.w_hh, g * h), (self.b_hh, g));
        linear_grads(d_rec, &t.h_in, (rows, g, h), dw, db);
        let (dw, db) = two_mut(grads, (self.w_ih, g * self.input), (self.b_ih, g));
        linear_grads(&t.d_gi, x, (rows, g, self.input), dw, db);
        d_x.resize(rows * self.input, 0.0);
        let w_ih = Mat { data: &params[self.w_ih..self.w_ih + g * self.input], rs: self.input, cs: 1 };
        matmul(rows, self.input, g, d_x, false, Mat { data: &t.d_gi, rs: g, cs: 1 }, w_ih);
    }
}

/// Two disjoint spans `(offset, len)` of `xs`, mutably.
fn two_mut(xs: &mut [f32], a: (usize, usize), b: (usize, usize)) -> (&mut [f32], &mut [f32]) {
    if a.0 < b.0 {
        let (low, high) = xs.split_at_mut(b.0);
        (&mut low[a.0..a.0 + a.1], &mut high[..b.1])
    } else {
        let (low, high) = xs.split_at_mut(a.0);
        (&mut high[..a.1], &mut low[b.0..b.0 + b.1])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::env::Space;
    use crate::model::{CoreKind, ModelConfig};
    use crate::net::{ActorCriticNet, NetTrace, Sequences};

    fn net(core: CoreKind, shared_trunk: bool) -> ActorCriticNet {
        let cfg = ModelConfig { hidden_sizes: vec![6], shared_trunk, core, core_size: 5, ..ModelConfig::default() };
        ActorCriticNet::for_env(&cfg, &Space::unbounded(3), &Space::Discrete { n: 2 }).unwrap()
    }

    /// Replaying a whole sequence equals stepping it one row at a time with the state carried, and a row that
    /// starts an episode equals a fresh sequence from a zero state; on a shared trunk and on separate ones (whose
    /// state is the actor's core's, then the critic's).
    #[test]
    fn a_sequence_is_its_steps_and_a_start_forgets() {
        for (core, shared) in
            [(CoreKind::Lstm, true), (CoreKind::Gru, true), (CoreKind::Lstm, false), (CoreKind::Gru, false)]
        {
            let net = net(core, shared);
            let params: Vec<f32> = net.init(3).iter().enumerate().map(|(i, p)| p + 0.01 * (i % 7) as f32).collect();
            let (steps, b, s) = (5, 2, net.state_dim());
            let x: Vec<f32> = (0..steps * b * 3).map(|i| ((i * 37 % 11) as f32 - 5.0) / 4.0).collect();
            let state0: Vec<f32> = (0..b * s).map(|i| ((i % 5) as f32 - 2.0) / 5.0).collect();
            let mut starts = vec![false; steps * b];
            starts[3 * b + 1] = true; // env 1 starts an episode at t = 3
            let mut whole = NetTrace::default();
            net.forward_seq(&params, &x, Sequences { steps, state0: &state0, starts: &starts }, &mut whole);
            let (mut state, mut one) = (state0.clone(), NetTrace::default());
            for t in 0..steps {
                for j in (0..b).filter(|j| starts[t * b + j]) {
                    state[j * s..(j + 1) * s].fill(0.0);
                }
                let rows = &x[t * b * 3..(t + 1) * b * 3];
                net.forward_seq(&params, rows, Sequences { steps: 1, state0: &state, starts: &[false; 2] }, &mut one);
                assert_eq!(one.values(), &whole.values()[t * b..(t + 1) * b], "{core:?} step {t}");
                assert_eq!(one.head(), &whole.head()[t * b * 2..(t + 1) * b * 2], "{core:?} step {t}");
                let mut next = Vec::new();
                (0..b).for_each(|row| one.state_after(row, &mut next));
                state = next;
            }
            // Env 1 from t = 3 on is a fresh episode: the same rows run alone from zeros give the same values.
            let tail: Vec<f32> = (3..steps).flat_map(|t| x[(t * b + 1) * 3..(t * b + 2) * 3].to_vec()).collect();
            let mut fresh = NetTrace::default();
            let zeros = vec![0.0; s];
            net.forward_seq(&params, &tail, Sequences { steps: 2, state0: &zeros, starts: &[false; 2] }, &mut fresh);
            assert_eq!(fresh.values(), [whole.values()[3 * b + 1], whole.values()[4 * b + 1]], "{core:?}");
        }
    }

    /// The backward pass through time against central finite differences of a weighted sum of the core's outputs,
    /// for every core parameter and input, across an episode start.
    #[test]
    fn backward_through_time_matches_finite_differences() {
        for core in [CoreKind::Lstm, CoreKind::Gru] {
            let net = net(core, true);
            let crate::net::Trunks::Shared { body: crate::net::Body { core: Some(rec), .. }, .. } = net.trunks() else {
                panic!("no core")
            };
            let params: Vec<f32> = net.init(4).iter().enumerate().map(|(i, p)| p + 0.05 * (i % 5) as f32).collect();
            let (steps, b, f) = (4, 2, 6);
            let x: Vec<f32> = (0..steps * b * f).map(|i| ((i * 13 % 7) as f32 - 3.0) / 3.0).collect();
            let state0: Vec<f32> = (0..b * rec.state_dim()).map(|i| ((i % 3) as f32 - 1.0) / 2.0).collect();
            let mut starts = vec![false; steps * b];
            starts[2 * b] = true;
            let weights: Vec<f32> = (0..steps * b * rec.hidden()).map(|i| ((i % 9) as f32 - 4.0) / 4.0).collect();
            let loss = |p: &[f32], x: &[f32]| -> f64 {
                let mut t = super::SeqTrace::default();
                rec.forward(p, x, steps, &state0, &starts, &mut t);
                t.output().iter().zip(&weights).map(|(o, w)| f64::from(o * w)).sum()
            };
            let mut t = super::SeqTrace::default();
            rec.forward(&params, &x, steps, &state0, &starts, &mut t);
            let (mut grads, mut d_x) = (vec![0.0f32; params.len()], Vec::new());
            rec.backward(&params, &x, &starts, &mut t, &weights, &mut grads, &mut d_x);
            let eps = 1e-2f32;
            let numeric = |v: &mut Vec<f32>, i: usize, f: &dyn Fn(&[f32]) -> f64| {
                let keep = v[i];
                v[i] = keep + eps;
                let up = f(v);
                v[i] = keep - eps;
                let down = f(v);
                v[i] = keep;
                (up - down) / (2.0 * f64::from(eps))
            };
            let core_params = net.entries().iter().filter(|e| e.name.starts_with(core_name(core)));
            for i in core_params.flat_map(|e| e.range()) {
                let mut p = params.clone();
                let want = numeric(&mut p, i, &|p| loss(p, &x));
                assert!((f64::from(grads[i]) - want).abs() < 2e-3, "{core:?} param {i}: {} vs {want}", grads[i]);
            }
            for (i, got) in d_x.iter().enumerate() {
                let mut xs = x.clone();
                let want = numeric(&mut xs, i, &|x| loss(&params, x));
                assert!((f64::from(*got) - want).abs() < 2e-3, "{core:?} input {i}: {got} vs {want}");
            }
        }
    }

    fn core_name(core: CoreKind) -> &'static str {
        match core {
            CoreKind::Lstm => "lstm.",
            _ => "gru.",
        }
    }
}
