//! The two policy distributions: Categorical over logits (discrete actions) and a diagonal Gaussian with a
//! state-independent log-std (continuous actions). Tensor versions score batches for the PPO update; slice
//! versions sample and score single rows for actors.

use candle_core::{D, Result, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;

/// `0.5 * ln(2π)`.
const HALF_LN_2PI: f64 = 0.918_938_533_204_672_7;

/// Log-probability `[B]` of integer `actions` `[B]` (u32) under Categorical(`logits` `[B, n]`).
pub fn categorical_log_prob(logits: &Tensor, actions: &Tensor) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    log_p.gather(&actions.unsqueeze(1)?, 1)?.squeeze(1)
}

/// Entropy `[B]` of Categorical(`logits` `[B, n]`).
pub fn categorical_entropy(logits: &Tensor) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    (log_p.exp()? * &log_p)?.sum(1)?.neg()
}

/// Log-density `[B]` of `actions` `[B, d]` under N(`mean` `[B, d]`, exp(`log_std` `[1, d]`)²), summed over d.
pub fn gaussian_log_prob(mean: &Tensor, log_std: &Tensor, actions: &Tensor) -> Result<Tensor> {
    let log_std = log_std.broadcast_as(mean.shape())?;
    let z = ((actions - mean)? / log_std.exp()?)?;
    ((z.sqr()? * -0.5)? - log_std)?.affine(1.0, -HALF_LN_2PI)?.sum(1)
}

/// Entropy `[B]` of the diagonal Gaussian with `log_std` `[1, d]`, for a batch of `batch` rows.
pub fn gaussian_entropy(log_std: &Tensor, batch: usize) -> Result<Tensor> {
    let per_row = log_std.affine(1.0, 0.5 + HALF_LN_2PI)?.sum(1)?; // [1]
    per_row.broadcast_as(batch)
}

/// Samples an index from `logits` and returns it with its log-probability.
pub fn sample_categorical(logits: &[f32], rng: &mut impl Rng) -> (usize, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    let log_z = max + sum.ln();
    let u: f32 = rng.random::<f32>() * sum;
    let mut acc = 0.0;
    let mut choice = logits.len() - 1;
    for (i, l) in logits.iter().enumerate() {
        acc += (l - max).exp();
        if u < acc {
            choice = i;
            break;
        }
    }
    (choice, logits[choice] - log_z)
}

/// Index of the largest logit (deterministic action).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] {
            best = i;
        }
    }
    best
}

/// Samples `mean + std * ε` into `out` and returns the summed log-density of the (unclipped) sample.
pub fn sample_gaussian(mean: &[f32], log_std: &[f32], rng: &mut impl Rng, out: &mut [f32]) -> f32 {
    let mut log_p = 0.0f64;
    for ((o, m), ls) in out.iter_mut().zip(mean).zip(log_std) {
        let eps: f64 = rng.sample(StandardNormal);
        *o = (*m as f64 + (*ls as f64).exp() * eps) as f32;
        let z = (*o as f64 - *m as f64) / (*ls as f64).exp();
        log_p += -0.5 * z * z - *ls as f64 - HALF_LN_2PI;
    }
    log_p as f32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;

    fn close(a: f32, b: f64, tol: f64) {
        assert!((a as f64 - b).abs() < tol, "{a} vs {b}");
    }

    #[test]
    fn categorical_matches_closed_form() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[0.0f32, 1.0, 2.0], [3.0, 3.0, 3.0]], &dev).unwrap();
        let actions = Tensor::new(&[2u32, 0], &dev).unwrap();
        let lp = categorical_log_prob(&logits, &actions).unwrap().to_vec1::<f32>().unwrap();
        let z = (1.0f64 + 1f64.exp() + 2f64.exp()).ln();
        close(lp[0], 2.0 - z, 1e-6);
        close(lp[1], -(3f64.ln()), 1e-6);
        let ent = categorical_entropy(&logits).unwrap().to_vec1::<f32>().unwrap();
        let p: Vec<f64> = [0.0f64, 1.0, 2.0].iter().map(|l| (l - z).exp()).collect();
        close(ent[0], -p.iter().map(|p| p * p.ln()).sum::<f64>(), 1e-6);
        close(ent[1], 3f64.ln(), 1e-6);
    }

    #[test]
    fn gaussian_matches_closed_form() {
        let dev = Device::Cpu;
        let mean = Tensor::new(&[[0.5f32, -1.0]], &dev).unwrap();
        let log_std = Tensor::new(&[[0.3f32, -0.7]], &dev).unwrap();
        let a = Tensor::new(&[[1.0f32, 0.0]], &dev).unwrap();
        let lp = gaussian_log_prob(&mean, &log_std, &a).unwrap().to_vec1::<f32>().unwrap();
        let normal = |x: f64, m: f64, ls: f64| {
            let s = ls.exp();
            -(x - m).powi(2) / (2.0 * s * s) - s.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
        };
        close(lp[0], normal(1.0, 0.5, 0.3) + normal(0.0, -1.0, -0.7), 1e-5);
        let ent = gaussian_entropy(&log_std, 3).unwrap().to_vec1::<f32>().unwrap();
        let h = |ls: f64| 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln() + ls;
        assert_eq!(ent.len(), 3);
        close(ent[2], h(0.3) + h(-0.7), 1e-5);
    }

    #[test]
    fn samplers_agree_with_tensor_scoring() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let logits = [0.2f32, -1.0, 0.7];
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            let (a, lp) = sample_categorical(&logits, &mut rng);
            counts[a] += 1;
            let t = Tensor::new(&[logits], &Device::Cpu).unwrap();
            if counts.iter().sum::<usize>() < 5 {
                let idx = Tensor::new(&[a as u32], &Device::Cpu).unwrap();
                let ref_lp = categorical_log_prob(&t, &idx).unwrap().to_vec1::<f32>().unwrap()[0];
                close(lp, ref_lp as f64, 1e-6);
            }
        }
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        for i in 0..3 {
            let p = (logits[i] as f64).exp() / z;
            close(counts[i] as f32 / 30_000.0, p, 0.01);
        }
        let mut out = [0.0f32; 2];
        let lp = sample_gaussian(&[0.1, 0.2], &[0.0, -1.0], &mut rng, &mut out);
        let t = |v: &[f32]| Tensor::new(&[[v[0], v[1]]], &Device::Cpu).unwrap();
        let ref_lp = gaussian_log_prob(&t(&[0.1, 0.2]), &t(&[0.0, -1.0]), &t(&out)).unwrap().to_vec1::<f32>().unwrap();
        close(lp, ref_lp[0] as f64, 1e-5);
        assert_eq!(argmax(&logits), 2);
    }
}
