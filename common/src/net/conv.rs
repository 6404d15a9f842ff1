//! Convolutions on the flat parameter vector (im2col, then `gemm`) and the trunk that runs them before its linear
//! layers.
//!
//! A convolution runs over chunks of a few samples: a chunk's im2col rows (at most [`CHUNK_VALUES`] values) are
//! copied, multiplied and dropped while they are still in the core's L2 cache, and the backward pass copies them
//! again rather than keeping them (a Nature-CNN minibatch of 256 would keep 180 MB, and its filter-gradient
//! products, reading that from memory, ran at half the speed of the forward ones). Inside a
//! [`split_products`](super::split_products) the samples are split in two halves, one per thread of the pool, each
//! with its own buffers and filter-gradient sums (added in a fixed order, so results do not depend on scheduling).
//!
//! Inside the trunk an image is stored channels last, `[n, h, w, c]`: the im2col rows of a batch are then one
//! matrix and its product with the filters is the next layer's input as it is. An im2col row holds a patch in the
//! order its input makes contiguous: `(ky, kx, c)` for a channels-last input (each filter row is one run of `k·c`
//! values), PyTorch's `(c, ky, kx)` for a channels-first observation (runs of `k`). The weight is stored as
//! PyTorch's `[out, c, k, k]`, so a channels-last layer multiplies by a permuted copy and permutes its gradient
//! back; the last layer's output is flattened in PyTorch's `(c, h, w)` order for the linear layers.

use super::kernels::{Mat, for_each_sample, matmul_serial, split};
use super::mlp::Mlp;
use crate::model::{Activation, ImageDims, ImageLayout};

/// At most this many im2col values per chunk (1 MiB: half of a core's L2 cache here), at least one sample.
const CHUNK_VALUES: usize = 256 * 1024;

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

    /// Channels last, writes the filters in this convolution's patch order to `buf` (see [`Conv::weights`]).
    fn permute_filters(&self, params: &[f32], buf: &mut Vec<f32>) {
        if !self.channels_last {
            return;
        }
        let (oc, patch) = (self.output.c, self.patch());
        buf.resize(oc * patch, 0.0);
        let w = &params[self.weight..self.weight + oc * patch];
        for (dst, src) in buf.chunks_exact_mut(patch).zip(w.chunks_exact(patch)) {
            self.for_each_torch_index(|j, t| dst[j] = src[t]);
        }
    }

    /// The filters as the `[out, patch]` matrix of this convolution's patch order: the parameters themselves
    /// channels first, `permuted` (filled by [`Conv::permute_filters`]) channels last.
    fn weights<'a>(&self, params: &'a [f32], permuted: &'a [f32]) -> &'a [f32] {
        match self.channels_last {
            true => permuted,
            false => &params[self.weight..self.weight + self.output.c * self.patch()],
        }
    }

    /// Writes the filter gradient in this convolution's patch order, `src`, to `dw` in PyTorch's order.
    fn unpermute(&self, src: &[f32], dw: &mut [f32]) {
        if !self.channels_last {
            dw.copy_from_slice(src);
            return;
        }
        for (dst, src) in dw.chunks_exact_mut(self.patch()).zip(src.chunks_exact(self.patch())) {
            self.for_each_torch_index(|j, t| dst[t] = src[j]);
        }
    }

    /// Samples per chunk.
    fn chunk(&self) -> usize {
        (CHUNK_VALUES / self.sample_cols().max(1)).max(1)
    }

    /// `cols = im2col(x)` for the samples of `x`, `[samples·positions, patch]`.
    fn im2col(&self, x: &[f32], cols: &mut Vec<f32>) {
        match self.run_len() {
            8 => self.im2col_runs::<8>(x, cols),
            _ => self.im2col_runs::<0>(x, cols),
        }
    }

    /// [`Conv::im2col`] with runs of `LEN` values (0: any length): a run length known at compile time is copied
    /// without a call or a loop (an 8×8 filter on a channels-first input copies 12,800 runs of 8 per sample).
    fn im2col_runs<const LEN: usize>(&self, x: &[f32], cols: &mut Vec<f32>) {
        let (sample, sample_cols) = (self.input.len(), self.sample_cols());
        let len = if LEN == 0 { self.run_len() } else { LEN };
        cols.resize(x.len() / sample * sample_cols, 0.0);
        for (x, cols) in x.chunks_exact(sample).zip(cols.chunks_exact_mut(sample_cols)) {
            self.for_each_run(|run, base| copy_run(&mut cols[run * len..(run + 1) * len], &x[base..base + len]));
        }
    }

    /// `dx = col2im(dcols)`: each patch value's gradient added to the input value it was read from.
    fn col2im(&self, dcols: &[f32], dx: &mut [f32]) {
        let (len, sample, sample_cols) = (self.run_len(), self.input.len(), self.sample_cols());
        dx.fill(0.0);
        for (dx, dcols) in dx.chunks_exact_mut(sample).zip(dcols.chunks_exact(sample_cols)) {
            self.for_each_run(|run, base| {
                let src = &dcols[run * len..(run + 1) * len];
                dx[base..base + len].iter_mut().zip(src).for_each(|(d, g)| *d += g);
            });
        }
    }

    /// `out = activation(im2col(x) · Wᵀ + b)` for the samples of `x`, `[samples, h, w, out_c]`; `w`: the
    /// filters in patch order.
    fn forward(&self, params: &[f32], w: &[f32], x: &[f32], out: &mut [f32], act: Activation, s: &mut ChunkBuffers) {
        let (oc, patch) = (self.output.c, self.patch());
        let bias = &params[self.bias..self.bias + oc];
        self.im2col(x, &mut s.cols);
        let (cols, w) = (Mat { data: &s.cols, rs: patch, cs: 1 }, Mat { data: w, rs: 1, cs: patch });
        matmul_serial(out.len() / oc, oc, patch, out, false, cols, w);
        out.chunks_exact_mut(oc).for_each(|pixel| pixel.iter_mut().zip(bias).for_each(|(v, b)| *v += b));
        act.apply(out);
    }

    /// Backpropagates `d_y` (the gradient w.r.t. this convolution's pre-activation output for the samples of `x`)
    /// into the sums of the filter (patch order) and bias gradients `dw`, `db` and, with `d_x`, the gradient w.r.t.
    /// `x` through the activation `act` that produced `x`; `w`: the filters in patch order.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        w: &[f32],
        x: &[f32],
        d_y: &[f32],
        d_x: Option<(&mut [f32], Activation)>,
        (dw, db): (&mut [f32], &mut [f32]),
        s: &mut ChunkBuffers,
    ) {
        let (oc, patch, rows) = (self.output.c, self.patch(), d_y.len() / self.output.c);
        self.im2col(x, &mut s.cols);
        let (d_yt, cols) = (Mat { data: d_y, rs: 1, cs: oc }, Mat { data: &s.cols, rs: patch, cs: 1 });
        matmul_serial(oc, patch, rows, dw, true, d_yt, cols);
        d_y.chunks_exact(oc).for_each(|row| db.iter_mut().zip(row).for_each(|(d, g)| *d += g));
        let Some((d_x, act)) = d_x else { return };
        // dX = col2im(dY · W), then through the activation that produced X.
        s.d_cols.resize(rows * patch, 0.0);
        let d_y = Mat { data: d_y, rs: oc, cs: 1 };
        matmul_serial(rows, patch, oc, &mut s.d_cols, false, d_y, Mat { data: w, rs: patch, cs: 1 });
        self.col2im(&s.d_cols, d_x);
        act.backprop(d_x, x);
    }
}

/// `dst = src` for one patch run, in 8-value moves: a run is often short (8 values for an 8×8 filter on a
/// channels-first input), and `copy_from_slice` calls `memmove` for each run, which took 17% of a Nature-CNN update.
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    const W: usize = 8;
    let len = dst.len().min(src.len());
    if len < W {
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = *s);
        return;
    }
    let mut i = 0;
    while i + W <= len {
        dst[i..i + W].copy_from_slice(&src[i..i + W]);
        i += W;
    }
    // The last partial move overlaps values already copied.
    if i < len {
        dst[len - W..len].copy_from_slice(&src[len - W..len]);
    }
}

/// One thread's buffers for the convolutions: a chunk's buffers, and its sums of each convolution's filter (patch
/// order) and bias gradients.
#[derive(Debug, Clone, Default)]
struct Scratch {
    chunk: ChunkBuffers,
    dw: Vec<Vec<f32>>,
    db: Vec<Vec<f32>>,
}

/// A chunk's im2col rows and their gradient.
#[derive(Debug, Clone, Default)]
struct ChunkBuffers {
    cols: Vec<f32>,
    d_cols: Vec<f32>,
}

/// Runs `f(samples, rows, scratch)` over the samples `0..n`, `rows[i]` the rows of those samples in `bufs[i]`
/// (`widths[i]` values per sample): inside a split in two halves side by side, each with its own scratch (then
/// returns true), elsewhere all at once with the first.
fn in_halves(
    n: usize,
    bufs: &mut [Vec<f32>],
    widths: &[usize],
    [first, second]: &mut [Scratch; 2],
    f: impl Fn(std::ops::Range<usize>, &mut [&mut [f32]], &mut Scratch) + Sync,
) -> bool {
    if !split() || n < 2 {
        f(0..n, &mut bufs.iter_mut().map(|b| &mut b[..]).collect::<Vec<_>>(), first);
        return false;
    }
    let half = n / 2;
    let (mut a, mut b): (Vec<_>, Vec<_>) =
        bufs.iter_mut().zip(widths).map(|(buf, w)| buf.split_at_mut(half * w)).unzip();
    rayon::join(|| f(0..half, &mut a, first), || f(half..n, &mut b, second));
    true
}

/// The chunks of `samples` (at most `chunk` samples each), as offsets `(lo, hi)` from `samples.start`.
fn chunks(samples: std::ops::Range<usize>, chunk: usize) -> impl Iterator<Item = (usize, usize)> {
    let start = samples.start;
    samples.clone().step_by(chunk.max(1)).map(move |lo| (lo - start, (lo + chunk).min(samples.end) - start))
}

/// What a [`Tower::forward`] keeps for its backward pass, and the backward pass's buffers.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Each channels-last convolution's filters in its patch order.
    filters: Vec<Vec<f32>>,
    /// Each convolution's output, channels last.
    convs: Vec<Vec<f32>>,
    /// The last convolution's output in `(c, h, w)` order: the linear layers' input.
    flat: Vec<f32>,
    /// Each linear layer's output.
    mlp: Vec<Vec<f32>>,
    /// The gradient w.r.t. each convolution's output, channels last (kept per layer: their sizes differ).
    d_images: Vec<Vec<f32>>,
    /// The convolutions' buffers, one set per half of the samples.
    halves: [Scratch; 2],
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
        t.filters.resize_with(self.convs.len(), Vec::new);
        t.convs.resize_with(self.convs.len(), Vec::new);
        for ((conv, filters), out) in self.convs.iter().zip(&mut t.filters).zip(&mut t.convs) {
            conv.permute_filters(params, filters);
            out.resize(n * conv.output.len(), 0.0);
        }
        let widths: Vec<usize> = self.convs.iter().map(|c| c.output.len()).collect();
        let (act, filters) = (self.mlp.activation, &t.filters);
        // Layer by layer, each over its chunks of samples (every layer on one chunk before the next chunk measured
        // no faster: ~1,830 against ~1,910 samples/s for the Nature CNN on one thread).
        in_halves(n, &mut t.convs, &widths, &mut t.halves, |samples, outs, s| {
            let start = samples.start;
            for (i, conv) in self.convs.iter().enumerate() {
                for (lo, hi) in chunks(samples.clone(), conv.chunk()) {
                    let (done, rest) = outs.split_at_mut(i);
                    let input = match i {
                        0 => &x[(start + lo) * conv.input.len()..(start + hi) * conv.input.len()],
                        _ => &done[i - 1][lo * widths[i - 1]..hi * widths[i - 1]],
                    };
                    let w = conv.weights(params, &filters[i]);
                    let out = &mut rest[0][lo * widths[i]..hi * widths[i]];
                    conv.forward(params, w, input, out, act, &mut s.chunk);
                }
            }
        });
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
        let widths: Vec<usize> = self.convs.iter().map(|c| c.output.len()).collect();
        for (d, w) in t.d_images.iter_mut().zip(&widths) {
            d.resize(n * w, 0.0);
        }
        let (filters, images) = (&t.filters, &t.convs);
        // Layer by layer from the last, each over its chunks of samples, as the forward pass.
        let two = in_halves(n, &mut t.d_images, &widths, &mut t.halves, |samples, d, s| {
            s.dw.resize_with(self.convs.len(), Vec::new);
            s.db.resize_with(self.convs.len(), Vec::new);
            for ((dw, db), conv) in s.dw.iter_mut().zip(&mut s.db).zip(&self.convs) {
                dw.clear();
                dw.resize(conv.output.c * conv.patch(), 0.0);
                db.clear();
                db.resize(conv.output.c, 0.0);
            }
            let start = samples.start;
            for (i, conv) in self.convs.iter().enumerate().rev() {
                for (lo, hi) in chunks(samples.clone(), conv.chunk()) {
                    let (below, above) = d.split_at_mut(i);
                    let d_y = &above[0][lo * widths[i]..hi * widths[i]];
                    let (input, d_x) = match i {
                        0 => (&x[(start + lo) * conv.input.len()..(start + hi) * conv.input.len()], None),
                        _ => {
                            let rows = lo * widths[i - 1]..hi * widths[i - 1];
                            let input = &images[i - 1][(start * widths[i - 1])..][rows.clone()];
                            (input, Some((&mut below[i - 1][rows], act)))
                        }
                    };
                    let w = conv.weights(params, &filters[i]);
                    conv.backward(w, input, d_y, d_x, (&mut s.dw[i], &mut s.db[i]), &mut s.chunk);
                }
            }
        });
        for (i, conv) in self.convs.iter().enumerate() {
            let [first, second] = &mut t.halves;
            if two {
                first.dw[i].iter_mut().zip(&second.dw[i]).for_each(|(a, b)| *a += b);
                first.db[i].iter_mut().zip(&second.db[i]).for_each(|(a, b)| *a += b);
            }
            let (oc, patch) = (conv.output.c, conv.patch());
            conv.unpermute(&first.dw[i], &mut grads[conv.weight..conv.weight + oc * patch]);
            grads[conv.bias..conv.bias + oc].copy_from_slice(&first.db[i]);
        }
    }
}
