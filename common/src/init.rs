//! Orthogonal initialisation (Saxe et al. 2014), as PyTorch's `nn.init.orthogonal_`, from a seeded RNG.

use rand::Rng;
use rand_distr::StandardNormal;

/// A `rows x cols` row-major matrix with orthonormal rows (if `rows <= cols`) or columns, times `gain`.
///
/// Draws a Gaussian `max(rows, cols) x min(rows, cols)` matrix, orthonormalises its columns with modified
/// Gram-Schmidt (the Q of a QR decomposition with a positive-diagonal R) and transposes if needed.
pub fn orthogonal(rows: usize, cols: usize, gain: f64, rng: &mut impl Rng) -> Vec<f32> {
    let (tall, wide) = (rows.max(cols), rows.min(cols));
    // Column-major `tall x wide`: column j is q[j * tall..(j + 1) * tall].
    let mut q: Vec<f64> = (0..tall * wide).map(|_| rng.sample::<f64, _>(StandardNormal)).collect();
    for j in 0..wide {
        for k in 0..j {
            let dot: f64 = (0..tall).map(|i| q[k * tall + i] * q[j * tall + i]).sum();
            for i in 0..tall {
                q[j * tall + i] -= dot * q[k * tall + i];
            }
        }
        let norm = (0..tall).map(|i| q[j * tall + i].powi(2)).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
        for i in 0..tall {
            q[j * tall + i] /= norm;
        }
    }
    let mut out = vec![0.0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            // rows >= cols: element (r, c) is q[c][r]; otherwise the transpose, element (r, c) is q[r][c].
            let v = if rows >= cols { q[c * tall + r] } else { q[r * tall + c] };
            out[r * cols + c] = (v * gain) as f32;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// max |A Aᵀ / g² − I| where A is W or Wᵀ, whichever is wide (rows <= cols).
    fn orthogonality_error(w: &[f32], rows: usize, cols: usize, gain: f64) -> f64 {
        let (n, m) = (rows.min(cols), rows.max(cols));
        let at = |i: usize, k: usize| if rows <= cols { w[i * cols + k] } else { w[k * cols + i] } as f64;
        let mut worst = 0.0f64;
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = (0..m).map(|k| at(i, k) * at(j, k)).sum::<f64>() / (gain * gain);
                let expect = if i == j { 1.0 } else { 0.0 };
                worst = worst.max((dot - expect).abs());
            }
        }
        worst
    }

    #[test]
    fn square_wide_and_tall_matrices_are_orthogonal() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for (rows, cols, gain) in [(64, 64, 2f64.sqrt()), (64, 4, 2f64.sqrt()), (2, 64, 0.01), (1, 64, 1.0)] {
            let w = orthogonal(rows, cols, gain, &mut rng);
            let err = orthogonality_error(&w, rows, cols, gain);
            assert!(err < 1e-5, "{rows}x{cols}: error {err}");
        }
    }

    #[test]
    fn seeded_init_is_reproducible_and_gain_scales() {
        let a = orthogonal(8, 3, 1.0, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        let b = orthogonal(8, 3, 2.0, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        assert!(a.iter().zip(&b).all(|(x, y)| (2.0 * x - y).abs() < 1e-6));
    }
}
