//! A stack of linear layers on the flat parameter vector: forward and backward passes on `gemm`.

use super::kernels::{Mat, few_rows_linear, linear_grads, matmul, use_few_rows};
use crate::model::Activation;

/// Linear layers with the activation between them (and after the last one when `activate_last`). Its methods
/// take the span of the flat parameter and gradient vectors its offsets are relative to (see
/// [`super::ActorCriticNet::split`]), so two trunks can be trained on two threads.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub(super) sizes: Vec<usize>,
    pub(super) activation: Activation,
    /// The activation follows the last layer too (a shared trunk's features).
    pub(super) activate_last: bool,
    /// Offsets of each layer's weight and bias inside the span.
    pub(super) weights: Vec<usize>,
    pub(super) biases: Vec<usize>,
}

impl Mlp {
    fn layers(&self) -> usize {
        self.weights.len()
    }

    fn activated(&self, layer: usize) -> bool {
        layer + 1 < self.layers() || self.activate_last
    }

    /// Widths from the input to the output (`[in, hidden.., out]`).
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// The hidden layers' activation.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// True when the activation follows the last layer too.
    pub fn activates_last(&self) -> bool {
        self.activate_last
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.sizes.first().copied().unwrap_or(0)
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.sizes.last().copied().unwrap_or(0)
    }

    /// Runs `n` rows of `x` through the layers (`params`: the span); `outs[i]` receives layer `i`'s output (after
    /// the activation where one follows), so the last entry is the output `[n, out_dim]`.
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
            match use_few_rows(n, fan_in, fan_out) {
                true => few_rows_linear(n, fan_out, fan_in, input, w, out),
                false => matmul(
                    n,
                    fan_out,
                    fan_in,
                    out,
                    true,
                    Mat { data: input, rs: fan_in, cs: 1 },
                    Mat { data: w, rs: 1, cs: fan_in },
                ),
            }
            if self.activated(i) {
                self.activation.apply(out);
            }
        }
    }

    /// Backpropagates `d_out` (the loss gradient w.r.t. the output of the [`Mlp::forward`] of `x` that filled
    /// `outs`) and writes the parameter gradients into `grads` (the span of the gradient vector). With
    /// `input_grad`, `d_out` ends holding the gradient w.r.t. `x`; otherwise it is scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        params: &[f32],
        x: &[f32],
        outs: &[Vec<f32>],
        d_out: &mut Vec<f32>,
        grads: &mut [f32],
        scratch: &mut Vec<f32>,
        input_grad: bool,
    ) {
        let n = x.len() / self.sizes[0].max(1);
        let last = self.layers() - 1;
        if self.activate_last {
            self.activation.backprop(d_out, &outs[last]);
        }
        for i in (0..self.layers()).rev() {
            let (fan_in, fan_out) = (self.sizes[i], self.sizes[i + 1]);
            let input = if i == 0 { x } else { &outs[i - 1] };
            let dz = Mat { data: d_out, rs: fan_out, cs: 1 };
            let (w_at, b_at) = (self.weights[i], self.biases[i]);
            let (low, high) = grads.split_at_mut(w_at.max(b_at));
            let (dw, db) = match w_at < b_at {
                true => (&mut low[w_at..w_at + fan_out * fan_in], &mut high[..fan_out]),
                false => (&mut high[..fan_out * fan_in], &mut low[b_at..b_at + fan_out]),
            };
            linear_grads(d_out, input, (n, fan_out, fan_in), dw, db);
            if i > 0 || input_grad {
                // dH = dZ · W, then (below the first layer) through the activation: dZ_prev = dH ⊙ f'(h).
                let w = &params[self.weights[i]..self.weights[i] + fan_out * fan_in];
                scratch.resize(n * fan_in, 0.0);
                matmul(n, fan_in, fan_out, scratch, false, dz, Mat { data: w, rs: fan_in, cs: 1 });
                if i > 0 {
                    self.activation.backprop(scratch, input);
                }
                std::mem::swap(d_out, scratch);
            }
        }
    }
}
