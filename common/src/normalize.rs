//! Running mean and variance (Chan et al.'s parallel update, as SB3's `RunningMeanStd`), and the observation and
//! reward normalisers built on it (gymnasium's `NormalizeObservation` and `NormalizeReward`).

use serde::{Deserialize, Serialize};

/// Per-dimension running mean and (population) variance over every sample seen, initial count 1e-4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningMeanStd {
    /// Mean per dimension.
    pub mean: Vec<f64>,
    /// Population variance per dimension.
    pub var: Vec<f64>,
    /// Number of samples (starts at 1e-4 so the first update dominates).
    pub count: f64,
}

impl RunningMeanStd {
    /// Zero mean, unit variance, count 1e-4.
    pub fn new(dim: usize) -> Self {
        Self { mean: vec![0.0; dim], var: vec![1.0; dim], count: 1e-4 }
    }

    /// Number of dimensions.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Merges a batch of `rows` samples given row-major as `[rows, dim]`.
    pub fn update(&mut self, batch: &[f32]) {
        let dim = self.dim();
        if dim == 0 || batch.len() < dim {
            return;
        }
        let rows = batch.len() / dim;
        let mut mean = vec![0.0f64; dim];
        for row in batch.chunks_exact(dim) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += x as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= rows as f64);
        let mut var = vec![0.0f64; dim];
        for row in batch.chunks_exact(dim) {
            for ((v, &x), m) in var.iter_mut().zip(row).zip(&mean) {
                *v += (x as f64 - m).powi(2);
            }
        }
        var.iter_mut().for_each(|v| *v /= rows as f64);
        self.merge(&mean, &var, rows as f64);
    }

    /// Merges batch moments (`mean`, population `var`, `count` samples).
    pub fn merge(&mut self, mean: &[f64], var: &[f64], count: f64) {
        let total = self.count + count;
        for i in 0..self.dim() {
            let delta = mean[i] - self.mean[i];
            let m2 = self.var[i] * self.count + var[i] * count + delta * delta * self.count * count / total;
            self.mean[i] += delta * count / total;
            self.var[i] = m2 / total;
        }
        self.count = total;
    }
}

/// Epsilon inside the square root of both normalisers (gymnasium's default).
pub const NORM_EPS: f64 = 1e-8;

/// Observation normaliser: `clip((obs − mean) / sqrt(var + 1e-8), ±clip)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObsNormalizer {
    /// Running statistics of raw observations.
    pub rms: RunningMeanStd,
    /// Symmetric clip applied after normalising.
    pub clip: f32,
}

impl ObsNormalizer {
    /// Fresh statistics for `dim`-wide observations.
    pub fn new(dim: usize, clip: f32) -> Self {
        Self { rms: RunningMeanStd::new(dim), clip }
    }

    /// Normalises `[rows, dim]` observations in place.
    pub fn normalize(&self, obs: &mut [f32]) {
        let dim = self.rms.dim();
        let scale: Vec<f64> = self.rms.var.iter().map(|v| 1.0 / (v + NORM_EPS).sqrt()).collect();
        for row in obs.chunks_exact_mut(dim) {
            for ((x, m), s) in row.iter_mut().zip(&self.rms.mean).zip(&scale) {
                *x = (((*x as f64 - m) * s) as f32).clamp(-self.clip, self.clip);
            }
        }
    }
}

/// Reward scaler: divides rewards by the running std of the discounted return, per env stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardScaler {
    /// Running statistics of the discounted return.
    pub rms: RunningMeanStd,
    /// Discount of the return accumulator.
    pub gamma: f64,
}

impl RewardScaler {
    /// Fresh statistics with discount `gamma`.
    pub fn new(gamma: f64) -> Self {
        Self { rms: RunningMeanStd::new(1), gamma }
    }

    /// Scales one step of `rewards` for the envs whose return accumulators are `returns`, updating both.
    pub fn scale_step(&mut self, returns: &mut [f64], rewards: &mut [f32], terminated: &[bool]) {
        for ((g, r), &done) in returns.iter_mut().zip(rewards.iter()).zip(terminated) {
            *g = *g * self.gamma * if done { 0.0 } else { 1.0 } + *r as f64;
        }
        let n = returns.len() as f64;
        let mean = returns.iter().sum::<f64>() / n;
        let var = returns.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n;
        self.rms.merge(&[mean], &[var], n);
        let scale = 1.0 / (self.rms.var[0] + NORM_EPS).sqrt();
        rewards.iter_mut().for_each(|r| *r = (*r as f64 * scale) as f32);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn running_moments_match_two_pass_computation() {
        let data: Vec<f32> = (0..600).map(|i| ((i * 37 % 101) as f32 - 40.0) * 0.37 + (i % 3) as f32).collect();
        let mut rms = RunningMeanStd::new(3);
        for chunk in data.chunks(3 * 17) {
            rms.update(chunk);
        }
        for d in 0..3 {
            let col: Vec<f64> = data.iter().skip(d).step_by(3).map(|&x| x as f64).collect();
            let n = col.len() as f64;
            let mean = col.iter().sum::<f64>() / n;
            let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            // The 1e-4 prior count shifts the result by O(1e-4 / n).
            assert!((rms.mean[d] - mean).abs() < 1e-5 * (1.0 + mean.abs()), "mean {d}");
            assert!((rms.var[d] - var).abs() < 1e-5 * (1.0 + var), "var {d}");
        }
        assert!((rms.count - 200.0).abs() < 1e-3);
    }

    #[test]
    fn normalised_observations_are_standardised_and_clipped() {
        let mut n = ObsNormalizer::new(1, 2.0);
        n.rms.update(&[1.0, 3.0]);
        let mut x = [3.0f32, 100.0];
        n.normalize(&mut x);
        assert!((x[0] - 1.0).abs() < 1e-3);
        assert_eq!(x[1], 2.0);
    }

    #[test]
    fn reward_scale_follows_discounted_return_and_resets_on_termination() {
        let mut s = RewardScaler::new(0.5);
        let mut g = [0.0f64];
        let mut r = [1.0f32];
        s.scale_step(&mut g, &mut r, &[false]);
        assert_eq!(g[0], 1.0);
        let mut r2 = [1.0f32];
        s.scale_step(&mut g, &mut r2, &[false]);
        assert_eq!(g[0], 1.5);
        let mut r3 = [1.0f32];
        s.scale_step(&mut g, &mut r3, &[true]);
        assert_eq!(g[0], 1.0);
        let expect = 1.0 / (s.rms.var[0] + NORM_EPS).sqrt();
        assert!((r3[0] as f64 - expect).abs() < 1e-6);
    }
}
