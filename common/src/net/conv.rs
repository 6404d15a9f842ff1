//! Convolutions on the flat parameter vector (im2col, then one `gemm` over the whole batch) and the trunk that runs
//! them before its linear layers.
//!
//! Inside the trunk an image is stored channels last, `[n, h, w, c]`: the im2col rows of a batch are then one
//! matrix and its product with the filters is the next layer's input as it is. A patch is read in PyTorch's
//! `(c, ky, kx)` order, so the weight `[out, c, k, k]` is the `[out, c·k·k]` matrix it is stored as; the first
//! layer reads the observation through strides (channels last or first), and the last layer's output is flattened
//! in PyTorch's `(c, h, w)` order for the linear layers.

use super::kernels::{Mat, linear_grads, matmul};
use super::mlp::Mlp;
use crate::model::{Activation, ImageDims, ImageLayout};

/// One convolution's geometry and parameter offsets.
#[derive(Debug, Clone)]
pub struct Conv {
    pub(super) input: ImageDims,
    pub(super) output: ImageDims,
    pub(super) kernel: usize,
    pub(super) stride: usize,
    /// Strides of the input's channel, row and column axes inside one sample.
    strides: [usize; 3],
    pub(super) weight: usize,
    pub(super) bias: usize,
}

impl Conv {
    /// A convolution from `input` to `output`; `layout` is the input's (`None`: the trunk's own channels-last).
    pub(super) fn new(
        input: ImageDims,
        output: ImageDims,
        (kernel, stride): (usize, usize),
        layout: Option<ImageLayout>,
        (weight, bias): (usize, usize),
    ) -> Self {
        let strides = match layout {
            Some(ImageLayout::Chw) => [input.h * input.w, input.w, 1],
            Some(ImageLayout::Hwc) | None => [1, input.w * input.c, input.c],
        };
        Self { input, output, kernel, stride, strides, weight, bias }
    }

    /// Input and output image.
    pub fn dims(&self) -> (ImageDims, ImageDims) {
        (self.input, self.output)
    }

    /// Filter side and stride.
    pub fn kernel_stride(&self) -> (usize, usize) {
        (self.kernel, self.stride)
    }

    /// Values in one patch (`c·k·k`).
    fn patch(&self) -> usize {
        self.input.c * self.kernel * self.kernel
    }

    /// Output positions per sample.
    fn positions(&self) -> usize {
        self.output.h * self.output.w
    }

    /// Calls `f(at, input_index)` for every patch value of `n` samples: `at` its index in the row-major
    /// `[n·positions, patch]` im2col matrix (0, 1, 2, ... in call order), `input_index` the input value it reads.
    #[inline(always)]
    fn for_each_tap(&self, n: usize, mut f: impl FnMut(usize, usize)) {
        let [cs, ys, xs] = self.strides;
        let (k, s, sample) = (self.kernel, self.stride, self.input.len());
        let mut at = 0;
        for b in 0..n {
            for oy in 0..self.output.h {
                for ox in 0..self.output.w {
                    for c in 0..self.input.c {
                        for ky in 0..k {
                            let base = b * sample + c * cs + (oy * s + ky) * ys + ox * s * xs;
                            for kx in 0..k {
                                f(at, base + kx * xs);
                                at += 1;
                            }
                        }
                    }
                }
            }
        }
    }

    /// `cols = im2col(x)`, `[n·positions, patch]` (taps come in row-major order, so each is pushed: no fill first).
    fn im2col(&self, x: &[f32], n: usize, cols: &mut Vec<f32>) {
        cols.clear();
        cols.reserve(n * self.positions() * self.patch());
        self.for_each_tap(n, |_, i| cols.push(x[i]));
    }

    /// `dx += col2im(dcols)`: each patch value's gradient added to the input value it was read from.
    fn col2im_add(&self, dcols: &[f32], n: usize, dx: &mut [f32]) {
        self.for_each_tap(n, |at, i| dx[i] += dcols[at]);
    }

    /// `out = activation(im2col(x) · Wᵀ + b)`, `[n, h, w, out_c]`.
    fn forward(&self, params: &[f32], x: &[f32], n: usize, act: Activation, cols: &mut Vec<f32>, out: &mut Vec<f32>) {
        self.im2col(x, n, cols);
        let (rows, oc, patch) = (n * self.positions(), self.output.c, self.patch());
        let bias = &params[self.bias..self.bias + oc];
        out.clear();
        for _ in 0..rows {
            out.extend_from_slice(bias);
        }
        let w = &params[self.weight..self.weight + oc * patch];
        matmul(rows, oc, patch, out, true, Mat { data: cols, rs: patch, cs: 1 }, Mat { data: w, rs: 1, cs: patch });
        act.apply(out);
    }
}

/// What a [`Tower::forward`] keeps for its backward pass, and the backward pass's buffers.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Each convolution's im2col matrix.
    cols: Vec<Vec<f32>>,
    /// Each convolution's output, channels last.
    convs: Vec<Vec<f32>>,
    /// The last convolution's output in `(c, h, w)` order: the linear layers' input.
    flat: Vec<f32>,
    /// Each linear layer's output.
    mlp: Vec<Vec<f32>>,
    /// Backward-pass buffers.
    d_cols: Vec<f32>,
    d_image: Vec<f32>,
}

impl Trace {
    /// The trunk's output `[n, out_dim]`.
    pub fn output(&self) -> &[f32] {
        self.mlp.last().map_or(&[][..], Vec::as_slice)
    }
}

/// A trunk: convolutions (none for an MLP), the flatten, then the linear layers; every parameter offset relative
/// to its span of the flat vector.
#[derive(Debug, Clone)]
pub struct Tower {
    pub(super) convs: Vec<Conv>,
    pub(super) mlp: Mlp,
}

impl Tower {
    /// PyTorch's `Sequential` index of convolution `i`.
    pub fn conv_index(i: usize) -> usize {
        2 * i
    }

    /// PyTorch's `Sequential` index of linear layer `j` behind `convs` convolutions (after the `Flatten` at
    /// `2·convs` when there are any).
    pub fn linear_index(convs: usize, j: usize) -> usize {
        if convs == 0 { 2 * j } else { 2 * convs + 1 + 2 * j }
    }

    /// The convolutions.
    pub fn convs(&self) -> &[Conv] {
        &self.convs
    }

    /// The linear layers.
    pub fn mlp(&self) -> &Mlp {
        &self.mlp
    }

    /// Input width (the flattened observation).
    pub fn in_dim(&self) -> usize {
        self.convs.first().map_or(self.mlp.in_dim(), |c| c.input.len())
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.mlp.out_dim()
    }

    /// Runs `n` rows of `x` through the trunk (`params`: its span), keeping what the backward pass needs in `t`.
    pub fn forward(&self, params: &[f32], x: &[f32], n: usize, t: &mut Trace) {
        let Some(last) = self.convs.last() else {
            self.mlp.forward(params, x, n, &mut t.mlp);
            return;
        };
        t.cols.resize_with(self.convs.len(), Vec::new);
        t.convs.resize_with(self.convs.len(), Vec::new);
        for (i, conv) in self.convs.iter().enumerate() {
            let (done, rest) = t.convs.split_at_mut(i);
            let input = if i == 0 { x } else { &done[i - 1] };
            conv.forward(params, input, n, self.mlp.activation, &mut t.cols[i], &mut rest[0]);
        }
        let (positions, oc) = (last.positions(), last.output.c);
        let image = &t.convs[self.convs.len() - 1];
        t.flat.clear();
        t.flat.reserve(image.len());
        for sample in image.chunks_exact(positions * oc) {
            for c in 0..oc {
                t.flat.extend(sample.iter().skip(c).step_by(oc));
            }
        }
        self.mlp.forward(params, &t.flat, n, &mut t.mlp);
    }

    /// Backpropagates `d_out` (the loss gradient w.r.t. the output of the [`Tower::forward`] of `x` that filled
    /// `t`) into the parameter gradients `grads` (the span of the gradient vector). With `input_grad` (trunks
    /// without convolutions only) `d_out` ends holding the gradient w.r.t. `x`; otherwise it is scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        params: &[f32],
        x: &[f32],
        t: &mut Trace,
        d_out: &mut Vec<f32>,
        grads: &mut [f32],
        scratch: &mut Vec<f32>,
        input_grad: bool,
    ) {
        let Some(last) = self.convs.last() else {
            self.mlp.backward(params, x, &t.mlp, d_out, grads, scratch, input_grad);
            return;
        };
        self.mlp.backward(params, &t.flat, &t.mlp, d_out, grads, scratch, true);
        // d_out is now ∂loss/∂flat, (c, h, w) order: back to channels last, then through the activation.
        let (positions, oc) = (last.positions(), last.output.c);
        scratch.clear();
        scratch.reserve(d_out.len());
        for sample in d_out.chunks_exact(positions * oc) {
            for p in 0..positions {
                scratch.extend(sample.iter().skip(p).step_by(positions));
            }
        }
        std::mem::swap(d_out, scratch);
        let act = self.mlp.activation;
        act.backprop(d_out, &t.convs[self.convs.len() - 1]);
        let n = x.len() / self.in_dim().max(1);
        for (i, conv) in self.convs.iter().enumerate().rev() {
            let (rows, oc, patch) = (n * conv.positions(), conv.output.c, conv.patch());
            let (weights, rest) = grads.split_at_mut(conv.bias.max(conv.weight));
            let (dw, db) = match conv.weight < conv.bias {
                true => (&mut weights[conv.weight..conv.weight + oc * patch], &mut rest[..oc]),
                false => (&mut rest[..oc * patch], &mut weights[conv.bias..conv.bias + oc]),
            };
            linear_grads(d_out, &t.cols[i], (rows, oc, patch), dw, db);
            if i == 0 {
                break;
            }
            // dX = col2im(dY · W), then through the previous layer's activation.
            let w = &params[conv.weight..conv.weight + oc * patch];
            t.d_cols.resize(rows * patch, 0.0);
            matmul(
                rows,
                patch,
                oc,
                &mut t.d_cols,
                false,
                Mat { data: d_out, rs: oc, cs: 1 },
                Mat { data: w, rs: patch, cs: 1 },
            );
            t.d_image.clear();
            t.d_image.resize(n * conv.input.len(), 0.0);
            conv.col2im_add(&t.d_cols, n, &mut t.d_image);
            act.backprop(&mut t.d_image, &t.convs[i - 1]);
            std::mem::swap(d_out, &mut t.d_image);
        }
    }
}
