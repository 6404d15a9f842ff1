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
    fn exp_relative_error() {
        for i in 0..=80_000 {
            let x = -(i as f32) * 1e-3;
            let (got, want) = (exp_nonpositive::<false>(x) as f64, (x as f64).exp());
            assert!(((got - want) / want).abs() < 2e-7, "{x}: {got} vs {want}");
        }
    }
}
