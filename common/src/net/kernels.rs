//! The numeric kernels of the flat-buffer network: strided matrix products on `gemm`, the activations and their
//! derivatives, and a vectorisable `tanh`.

use crate::model::Activation;

impl Activation {
    /// Applies the activation in place.
    pub(crate) fn apply(self, xs: &mut [f32]) {
        match self {
            Activation::Tanh => tanh_in_place(xs),
            Activation::Relu => xs.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
    }

    /// Multiplies the gradients `d` w.r.t. the activation's outputs `h` by its derivative, written in terms of
    /// the output: `1 − h²` for tanh, `[h > 0]` for ReLU.
    pub(crate) fn backprop(self, d: &mut [f32], h: &[f32]) {
        match self {
            Activation::Tanh => d.iter_mut().zip(h).for_each(|(d, h)| *d *= 1.0 - h * h),
            // A select, not a branch: about half the units are off, so a branch mispredicts often.
            Activation::Relu => d.iter_mut().zip(h).for_each(|(d, h)| *d = if *h > 0.0 { *d } else { 0.0 }),
        }
    }
}

/// A strided read-only matrix view: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl Mat<'_> {
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// The weight and bias gradients of a layer that computed `y = x · Wᵀ + b` over `rows` rows (a Linear layer, or a
/// recurrent layer's gates): `dW = dYᵀ · x` (`[out, inp]`), `db` = the column sums of `dY` (`[rows, out]`).
pub(crate) fn linear_grads(
    d_y: &[f32],
    x: &[f32],
    (rows, out, inp): (usize, usize, usize),
    dw: &mut [f32],
    db: &mut [f32],
) {
    let sums = |rows: usize, d_y: &[f32], x: &[f32], dw: &mut [f32], db: &mut [f32]| {
        matmul(out, inp, rows, dw, false, Mat { data: d_y, rs: 1, cs: out }, Mat { data: x, rs: inp, cs: 1 });
        db.fill(0.0);
        for row in d_y[..rows * out].chunks_exact(out) {
            db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
        }
    };
    // Many rows into a small gradient (a narrow layer over a large minibatch): `gemm` splits only the output, so
    // each of the pool's two threads sums half of the rows and the halves are added.
    if !split() || rows < SPLIT_ROWS_PER_OUTPUT * out.max(inp) {
        return sums(rows, d_y, x, dw, db);
    }
    let half = rows / 2;
    PARTIAL.with_borrow_mut(|(dw2, db2)| {
        dw2.resize(out * inp, 0.0);
        db2.resize(out, 0.0);
        rayon::join(
            || sums(half, d_y, x, &mut dw[..out * inp], &mut db[..out]),
            || sums(rows - half, &d_y[half * out..], &x[half * inp..], dw2, db2),
        );
        dw.iter_mut().zip(dw2.iter()).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(db2.iter()).for_each(|(a, b)| *a += b);
    });
}

/// [`linear_grads`] splits its rows over two threads from this many rows per output row or column on.
const SPLIT_ROWS_PER_OUTPUT: usize = 8;

thread_local! {
    /// The second half's weight and bias gradients of a split [`linear_grads`].
    static PARTIAL: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

thread_local! {
    /// Set by [`split_products`] on the thread that runs it.
    static SPLIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with its large matrix products split over the current rayon pool's threads (`gemm` decides what is
/// large enough): for work that would otherwise keep one thread of the pool busy and the others idle (the fused
/// backend's shared trunk). Elsewhere each product runs on its caller's thread: separate trunks already train on
/// two threads, where splitting their products measured slower (MinAtar CNN update 38k samples/s unsplit, 33k
/// split), and actor inference shares the machine with the envs.
pub fn split_products<R>(f: impl FnOnce() -> R) -> R {
    let before = SPLIT.with(|s| s.replace(true));
    let out = f();
    SPLIT.with(|s| s.set(before));
    out
}

/// True inside [`split_products`] on a thread of a rayon pool.
pub(crate) fn split() -> bool {
    SPLIT.with(std::cell::Cell::get) && rayon::current_thread_index().is_some()
}

fn parallelism() -> gemm::Parallelism {
    match split() {
        true => gemm::Parallelism::Rayon(0),
        false => gemm::Parallelism::None,
    }
}

/// Calls `f(i, chunk)` for each `size`-wide chunk `i` of `dst` (one per sample: the copies and element-wise passes
/// around the convolutions' products), over the pool's threads inside [`split_products`], in turn elsewhere.
pub(crate) fn for_each_sample(dst: &mut [f32], size: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    use rayon::prelude::*;
    if size == 0 {
        return;
    }
    match split() {
        true => dst.par_chunks_mut(size).enumerate().for_each(|(i, chunk)| f(i, chunk)),
        false => dst.chunks_mut(size).enumerate().for_each(|(i, chunk)| f(i, chunk)),
    }
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`), `a` is `m×k`, `b` is `k×n`, `dst` dense row-major `m×n`;
/// split over the pool's threads inside [`split_products`].
pub(crate) fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, a: Mat, b: Mat) {
    product(parallelism(), (m, n, k), dst, accumulate, a, b);
}

/// [`matmul`] on the calling thread only (for products that are already one of several tasks on the pool).
pub(crate) fn matmul_serial(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, a: Mat, b: Mat) {
    product(gemm::Parallelism::None, (m, n, k), dst, accumulate, a, b);
}

fn product(
    par: gemm::Parallelism,
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    a: Mat,
    b: Mat,
) {
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
            par,
        );
    }
}

/// Whether a Linear layer of `fan_in × fan_out` weights over `rows` rows runs on [`few_rows_linear`] rather than
/// `gemm`: a large weight (at least 128 Ki values, 512 KiB) over an actor's batch of envs (3 or more rows, at most
/// 8 Ki outputs in all). There `gemm` spends most of a call packing the transposed weight with strided scalar
/// loads: the MinAtar CNN's policy (two 1,600 × 128 layers) takes 648 / 583 / 869 µs a call at 8 / 16 / 64 envs on
/// `gemm` and 86 / 150 / 581 µs here. `gemm` is faster for one or two rows (its vector-product path), on small
/// weights (where this kernel's per-output sums across lanes cost more than the packing they save), and beyond
/// about 8 Ki outputs in all (the Nature CNN's 3,136 × 512 layer at 64 envs: 10% slower here).
pub(crate) fn use_few_rows(rows: usize, fan_in: usize, fan_out: usize) -> bool {
    rows >= 3 && rows * fan_out <= 8 * 1024 && fan_in * fan_out >= 128 * 1024
}

/// `dst += x · Wᵀ` for a Linear layer over a few rows: `x` dense `[rows, inp]`, `w` its weight `[out, inp]` in
/// PyTorch layout, `dst` dense `[rows, out]`. Each output's weight row is read once for all the rows (blocks of two
/// outputs by four rows, eight lanes of partial sums each), with AVX2+FMA code where the CPU has it.
pub(crate) fn few_rows_linear(rows: usize, out: usize, inp: usize, x: &[f32], w: &[f32], dst: &mut [f32]) {
    assert!(x.len() >= rows * inp && w.len() >= out * inp && dst.len() >= rows * out, "linear shapes out of bounds");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features `few_rows_linear_avx2` is compiled for (checked just above).
        unsafe { few_rows_linear_avx2(rows, out, inp, x, w, dst) };
        return;
    }
    few_rows_linear_with::<Portable>(rows, out, inp, x, w, dst);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn few_rows_linear_avx2(rows: usize, out: usize, inp: usize, x: &[f32], w: &[f32], dst: &mut [f32]) {
    few_rows_linear_with::<Avx2>(rows, out, inp, x, w, dst);
}

/// Lanes of partial sums per (output, row) pair in [`few_rows_linear`]: one AVX register.
const LANES: usize = 8;

/// The dot products of `O` weight rows with `R` input rows (all of one length), each summed in [`LANES`] lanes
/// that are added pairwise at the end.
trait DotBlock {
    fn dots<const O: usize, const R: usize>(ws: [&[f32]; O], xs: [&[f32]; R]) -> [[f32; R]; O];
}

/// [`DotBlock`] in plain Rust.
struct Portable;

impl DotBlock for Portable {
    #[inline(always)]
    fn dots<const O: usize, const R: usize>(ws: [&[f32]; O], xs: [&[f32]; R]) -> [[f32; R]; O] {
        std::array::from_fn(|i| {
            std::array::from_fn(|j| {
                let mut lanes = [0.0f32; LANES];
                let (w_chunks, w_tail) = ws[i].as_chunks::<LANES>();
                let (x_chunks, x_tail) = xs[j].as_chunks::<LANES>();
                for (wk, xk) in w_chunks.iter().zip(x_chunks) {
                    lanes.iter_mut().zip(wk.iter().zip(xk)).for_each(|(a, (w, x))| *a += w * x);
                }
                w_tail.iter().zip(x_tail).fold(sum_lanes(&lanes), |s, (w, x)| s + w * x)
            })
        })
    }
}

/// [`DotBlock`] on AVX2 registers with fused multiply-adds.
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl DotBlock for Avx2 {
    #[inline(always)]
    fn dots<const O: usize, const R: usize>(ws: [&[f32]; O], xs: [&[f32]; R]) -> [[f32; R]; O] {
        // SAFETY: only reached from `few_rows_linear_avx2`, which runs on CPUs with AVX2 and FMA.
        unsafe { avx2_dots(ws, xs) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn avx2_dots<const O: usize, const R: usize>(ws: [&[f32]; O], xs: [&[f32]; R]) -> [[f32; R]; O] {
    use std::arch::x86_64::{__m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps};
    let len = ws.iter().chain(&xs).map(|v| v.len()).min().unwrap_or(0);
    let full = len - len % LANES;
    let mut acc: [[__m256; R]; O] = [[_mm256_setzero_ps(); R]; O];
    for k in (0..full).step_by(LANES) {
        // SAFETY: `k + LANES <= full <= len`, the length of every row read.
        let wk: [__m256; O] = std::array::from_fn(|i| unsafe { _mm256_loadu_ps(ws[i].as_ptr().add(k)) });
        for (j, x) in xs.iter().enumerate() {
            // SAFETY: as above.
            let xk = unsafe { _mm256_loadu_ps(x.as_ptr().add(k)) };
            for i in 0..O {
                acc[i][j] = _mm256_fmadd_ps(wk[i], xk, acc[i][j]);
            }
        }
    }
    std::array::from_fn(|i| {
        std::array::from_fn(|j| {
            let mut lanes = [0.0f32; LANES];
            // SAFETY: `lanes` holds the register's eight values.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[i][j]) };
            (full..len).fold(sum_lanes(&lanes), |s, k| ws[i][k].mul_add(xs[j][k], s))
        })
    })
}

/// The lanes' total, added pairwise.
#[inline(always)]
fn sum_lanes(a: &[f32; LANES]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// [`few_rows_linear`] with the dot products of `B`: blocks of two outputs by up to four rows.
#[inline(always)]
fn few_rows_linear_with<B: DotBlock>(rows: usize, out: usize, inp: usize, x: &[f32], w: &[f32], dst: &mut [f32]) {
    for o in (0..out).step_by(2) {
        for r in (0..rows).step_by(4) {
            let at = Block { o, r, out, inp };
            match (out - o >= 2, rows - r) {
                (true, 4..) => at.add::<B, 2, 4>(x, w, dst),
                (true, 3) => at.add::<B, 2, 3>(x, w, dst),
                (true, 2) => at.add::<B, 2, 2>(x, w, dst),
                (true, _) => at.add::<B, 2, 1>(x, w, dst),
                (false, 4..) => at.add::<B, 1, 4>(x, w, dst),
                (false, 3) => at.add::<B, 1, 3>(x, w, dst),
                (false, 2) => at.add::<B, 1, 2>(x, w, dst),
                (false, _) => at.add::<B, 1, 1>(x, w, dst),
            }
        }
    }
}

/// Where a block of [`few_rows_linear`] starts (output `o`, row `r`) in a product of `out` outputs of `inp` inputs.
#[derive(Clone, Copy)]
struct Block {
    o: usize,
    r: usize,
    out: usize,
    inp: usize,
}

impl Block {
    /// Adds the block's `O × R` dot products to their `dst` entries.
    #[inline(always)]
    fn add<B: DotBlock, const O: usize, const R: usize>(&self, x: &[f32], w: &[f32], dst: &mut [f32]) {
        let Block { o, r, out, inp } = *self;
        let ws: [&[f32]; O] = std::array::from_fn(|i| &w[(o + i) * inp..(o + i + 1) * inp]);
        let xs: [&[f32]; R] = std::array::from_fn(|j| &x[(r + j) * inp..(r + j + 1) * inp]);
        for (i, sums) in B::dots(ws, xs).iter().enumerate() {
            sums.iter().enumerate().for_each(|(j, s)| dst[(r + j) * out + o + i] += s);
        }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
    fn few_rows_linear_matches_gemm() {
        let value = |i: usize| ((i * 7919 % 1000) as f32 / 500.0) - 1.0;
        for (rows, out, inp) in
            [(1, 1, 1), (2, 3, 9), (3, 5, 8), (4, 2, 13), (5, 7, 67), (7, 2, 16), (9, 4, 1600), (32, 9, 20)]
        {
            let x: Vec<f32> = (0..rows * inp).map(value).collect();
            let w: Vec<f32> = (0..out * inp).map(|i| value(i + 13)).collect();
            let bias: Vec<f32> = (0..rows * out).map(|i| value(i + 5)).collect();
            let mut want = bias.clone();
            let (a, b) = (Mat { data: &x, rs: inp, cs: 1 }, Mat { data: &w, rs: 1, cs: inp });
            matmul(rows, out, inp, &mut want, true, a, b);
            let mut portable = bias.clone();
            few_rows_linear_with::<Portable>(rows, out, inp, &x, &w, &mut portable);
            let mut got = bias;
            few_rows_linear(rows, out, inp, &x, &w, &mut got);
            for (i, ((g, p), w)) in got.iter().zip(&portable).zip(&want).enumerate() {
                let tol = 1e-6 * (inp as f32).sqrt().max(1.0) * w.abs().max(1.0);
                assert!((g - w).abs() <= tol && (p - w).abs() <= tol, "{rows}x{out}x{inp} [{i}]: {g} {p} vs {w}");
            }
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
}
