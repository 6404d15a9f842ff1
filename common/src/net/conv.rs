//! Convolutions on the flat parameter vector (im2col, then one `gemm` over the whole batch) and the trunk that runs
//! them before its linear layers.
//!
//! Inside the trunk an image is stored channels last, `[n, h, w, c]`: the im2col rows of a batch are then one
//! matrix and its product with the filters is the next layer's input as it is. An im2col row holds a patch in the
//! order its input makes contiguous: `(ky, kx, c)` for a channels-last input (each filter row is one run of `k·c`
//! values), PyTorch's `(c, ky, kx)` for a channels-first observation (runs of `k`). The weight is stored as
//! PyTorch's `[out, c, k, k]`, so a channels-last layer multiplies by a permuted copy and permutes its gradient
//! back; the last layer's output is flattened in PyTorch's `(c, h, w)` order for the linear layers.

use super::kernels::{Mat, for_each_sample, linear_grads, matmul};
use super::mlp::Mlp;
use crate::model::{Activation, ImageDims, ImageLayout};

/// One convolution's geometry and parameter offsets.
#[derive(Debug, Clone)]
pub struct Conv {
    pub(super) input: ImageDims,
    pub(super) output: ImageDims,
    pub(super) kernel: usize,
    pub(super) stride: usize,
    /// The input is channels last: patches in `(ky, kx, c)` order (else PyTorch's `(c, ky, kx)`).
    channels_last: bool,
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
        let channels_last = !matches!(layout, Some(ImageLayout::Chw));
        Self { input, output, kernel, stride, channels_last, weight, bias }
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

    /// Values in one sample's im2col rows (`positions · patch`).
    fn sample_cols(&self) -> usize {
        self.positions() * self.patch()
    }

    /// Values in one contiguous run of a patch: a filter row, `k·c` channels last, `k` channels first.
    fn run_len(&self) -> usize {
        match self.channels_last {
            true => self.kernel * self.input.c,
            false => self.kernel,
        }
    }

    /// Calls `f(run, base)` for every run of one sample's patches, in im2col order: the run is
    /// `cols[run·len..(run + 1)·len]` of the sample's `[positions, patch]` rows and reads the sample's input at
    /// `base..base + len` (`len`: [`Conv::run_len`]).
    #[inline(always)]
    fn for_each_run(&self, mut f: impl FnMut(usize, usize)) {
        let (ImageDims { h, w, c }, k, s) = (self.input, self.kernel, self.stride);
        let mut run = 0;
        for oy in 0..self.output.h {
            for ox in 0..self.output.w {
                match self.channels_last {
                    true => {
                        for ky in 0..k {
                            f(run, ((oy * s + ky) * w + ox * s) * c);
                            run += 1;
                        }
                    }
                    false => {
                        for ch in 0..c {
                            for ky in 0..k {
                                f(run, (ch * h + oy * s + ky) * w + ox * s);
                                run += 1;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Calls `f(j, t)` for every value `j` of a channels-last patch (`(ky, kx, c)` order) with `t` its index in
    /// PyTorch's `(c, ky, kx)` order (nested loops: this runs on every forward pass, inference included).
    #[inline(always)]
    fn for_each_torch_index(&self, mut f: impl FnMut(usize, usize)) {
        let (c, k) = (self.input.c, self.kernel);
        let mut j = 0;
        for tap in 0..k * k {
            for ch in 0..c {
                f(j, ch * k * k + tap);
                j += 1;
            }
        }
    }

    /// The filters as the `[out, patch]` matrix of this convolution's patch order: the parameters themselves
    /// channels first, a permuted copy (in `buf`) channels last.
    fn filters<'a>(&self, params: &'a [f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
        let (oc, patch) = (self.output.c, self.patch());
        let w = &params[self.weight..self.weight + oc * patch];
        if !self.channels_last {
            return w;
        }
        buf.resize(oc * patch, 0.0);
        for (dst, src) in buf.chunks_exact_mut(patch).zip(w.chunks_exact(patch)) {
            self.for_each_torch_index(|j, t| dst[j] = src[t]);
        }
        buf
    }

    /// The filter gradient `dw` (PyTorch's order) and the bias gradient `db` from `d_y` (`[n·positions, out]`)
    /// and the forward's im2col matrix; channels last, `buf` holds the filter gradient in this patch order.
    fn param_grads(&self, d_y: &[f32], cols: &[f32], n: usize, dw: &mut [f32], db: &mut [f32], buf: &mut Vec<f32>) {
        let dims = (n * self.positions(), self.output.c, self.patch());
        if !self.channels_last {
            linear_grads(d_y, cols, dims, dw, db);
            return;
        }
        buf.resize(dw.len(), 0.0);
        linear_grads(d_y, cols, dims, buf, db);
        for (dst, src) in dw.chunks_exact_mut(dims.2).zip(buf.chunks_exact(dims.2)) {
            self.for_each_torch_index(|j, t| dst[t] = src[j]);
        }
    }

    /// `cols = im2col(x)`, `[n·positions, patch]`, one sample per task (on the pool's threads in a split).
    fn im2col(&self, x: &[f32], n: usize, cols: &mut Vec<f32>) {
        let (sample, len) = (self.input.len(), self.run_len());
        cols.resize(n * self.sample_cols(), 0.0);
        for_each_sample(cols, self.sample_cols(), |b, cols| {
            let x = &x[b * sample..(b + 1) * sample];
            self.for_each_run(|run, base| cols[run * len..(run + 1) * len].copy_from_slice(&x[base..base + len]));
        });
    }

    /// `dx += col2im(dcols)`: each patch value's gradient added to the input value it was read from, one sample
    /// per task.
    fn col2im_add(&self, dcols: &[f32], dx: &mut [f32]) {
        let (len, sample_cols) = (self.run_len(), self.sample_cols());
        for_each_sample(dx, self.input.len(), |b, dx| {
            let dcols = &dcols[b * sample_cols..(b + 1) * sample_cols];
            self.for_each_run(|run, base| {
                let src = &dcols[run * len..(run + 1) * len];
                dx[base..base + len].iter_mut().zip(src).for_each(|(d, g)| *d += g);
            });
        });
    }

    /// `out = activation(im2col(x) · Wᵀ + b)`, `[n, h, w, out_c]`; `filters`: the permuted weight's buffer.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        params: &[f32],
        x: &[f32],
        n: usize,
        act: Activation,
        cols: &mut Vec<f32>,
        filters: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) {
        self.im2col(x, n, cols);
        let (rows, oc, patch) = (n * self.positions(), self.output.c, self.patch());
        out.resize(rows * oc, 0.0);
        let w = self.filters(params, filters);
        matmul(rows, oc, patch, out, false, Mat { data: cols, rs: patch, cs: 1 }, Mat { data: w, rs: 1, cs: patch });
        let bias = &params[self.bias..self.bias + oc];
        for_each_sample(out, self.positions() * oc, |_, image| {
            image.chunks_exact_mut(oc).for_each(|pixel| pixel.iter_mut().zip(bias).for_each(|(v, b)| *v += b));
            act.apply(image);
        });
    }
}

/// What a [`Tower::forward`] keeps for its backward pass, and the backward pass's buffers.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Each convolution's im2col matrix.
    cols: Vec<Vec<f32>>,
    /// Each channels-last convolution's filters in its patch order.
    filters: Vec<Vec<f32>>,
    /// Each convolution's output, channels last.
    convs: Vec<Vec<f32>>,
    /// The last convolution's output in `(c, h, w)` order: the linear layers' input.
    flat: Vec<f32>,
    /// Each linear layer's output.
    mlp: Vec<Vec<f32>>,
    /// Backward-pass buffers.
    d_cols: Vec<f32>,
    /// The gradient w.r.t. each convolution's output, channels last (kept per layer: their sizes differ).
    d_images: Vec<Vec<f32>>,
    d_filters: Vec<f32>,
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
        t.filters.resize_with(self.convs.len(), Vec::new);
        t.convs.resize_with(self.convs.len(), Vec::new);
        for (i, conv) in self.convs.iter().enumerate() {
            let (done, rest) = t.convs.split_at_mut(i);
            let input = if i == 0 { x } else { &done[i - 1] };
            conv.forward(params, input, n, self.mlp.activation, &mut t.cols[i], &mut t.filters[i], &mut rest[0]);
        }
        let (positions, oc) = (last.positions(), last.output.c);
        let image = &t.convs[self.convs.len() - 1];
        t.flat.resize(image.len(), 0.0);
        for_each_sample(&mut t.flat, positions * oc, |b, flat| {
            let image = &image[b * positions * oc..(b + 1) * positions * oc];
            flat.chunks_exact_mut(positions).enumerate().for_each(|(c, channel)| {
                channel.iter_mut().zip(image.iter().skip(c).step_by(oc)).for_each(|(f, v)| *f = *v);
            });
        });
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
        let act = self.mlp.activation;
        let (image, convs) = (&t.convs[self.convs.len() - 1], self.convs.len());
        t.d_images.resize_with(convs, Vec::new);
        let d_last = &mut t.d_images[convs - 1];
        d_last.resize(d_out.len(), 0.0);
        for_each_sample(d_last, positions * oc, |b, d_image| {
            let d_flat = &d_out[b * positions * oc..(b + 1) * positions * oc];
            d_image.chunks_exact_mut(oc).enumerate().for_each(|(p, pixel)| {
                pixel.iter_mut().zip(d_flat.iter().skip(p).step_by(positions)).for_each(|(d, g)| *d = *g);
            });
            act.backprop(d_image, &image[b * positions * oc..(b + 1) * positions * oc]);
        });
        let n = x.len() / self.in_dim().max(1);
        for (i, conv) in self.convs.iter().enumerate().rev() {
            let (rows, oc, patch) = (n * conv.positions(), conv.output.c, conv.patch());
            let (weights, rest) = grads.split_at_mut(conv.bias.max(conv.weight));
            let (dw, db) = match conv.weight < conv.bias {
                true => (&mut weights[conv.weight..conv.weight + oc * patch], &mut rest[..oc]),
                false => (&mut rest[..oc * patch], &mut weights[conv.bias..conv.bias + oc]),
            };
            let (below, d_y) = t.d_images.split_at_mut(i);
            let d_y = &d_y[0];
            conv.param_grads(d_y, &t.cols[i], n, dw, db, &mut t.d_filters);
            if i == 0 {
                break;
            }
            // dX = col2im(dY · W), then through the previous layer's activation (W: the forward's filters).
            let w = match conv.channels_last {
                true => &t.filters[i][..],
                false => &params[conv.weight..conv.weight + oc * patch],
            };
            t.d_cols.resize(rows * patch, 0.0);
            matmul(
                rows,
                patch,
                oc,
                &mut t.d_cols,
                false,
                Mat { data: d_y, rs: oc, cs: 1 },
                Mat { data: w, rs: patch, cs: 1 },
            );
            let d_x = &mut below[i - 1];
            d_x.clear();
            d_x.resize(n * conv.input.len(), 0.0);
            conv.col2im_add(&t.d_cols, d_x);
            let (image, sample) = (&t.convs[i - 1], conv.input.len());
            for_each_sample(d_x, sample, |b, d| act.backprop(d, &image[b * sample..(b + 1) * sample]));
        }
    }
}
