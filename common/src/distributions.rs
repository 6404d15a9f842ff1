//! The policy distributions on host slices, the one place of their math for actor inference and the learner's
//! fused backend: Categorical over logits (discrete actions), one Categorical per block of logits
//! (multi-discrete actions), and a diagonal Gaussian with a state-independent log-std (continuous actions).
//! [`ActionDist`] picks among them from the model's head. Everything is `f32`, as PyTorch computes it; the learner's
//! candle backend has tensor versions of the same formulas, held to these numbers by the backend-equivalence and
//! golden tests.

use crate::model::Head;
use rand::Rng;
use rand_distr::StandardNormal;

/// `0.5 * ln(2π)` in f64: sampled actions are scored in double precision.
const HALF_LN_2PI_F64: f64 = 0.918_938_533_204_672_7;
/// `0.5 * ln(2π)`.
pub const HALF_LN_2PI: f32 = HALF_LN_2PI_F64 as f32;

/// `ln Σ exp(z)`, computed stably as `max + ln Σ exp(z − max)`; also returns `max` and `Σ exp(z − max)`.
fn log_sum_exp(logits: &[f32]) -> (f32, f32, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&z| (z - max).exp()).sum();
    (max + sum.ln(), max, sum)
}

/// Writes `log softmax(logits)` into `out` (same length).
pub fn log_softmax(logits: &[f32], out: &mut [f32]) {
    let (log_z, _, _) = log_sum_exp(logits);
    out.iter_mut().zip(logits).for_each(|(o, &z)| *o = z - log_z);
}

/// Log-probability of index `a` under Categorical(`logits`).
pub fn categorical_log_prob(logits: &[f32], a: usize) -> f32 {
    logits[a] - log_sum_exp(logits).0
}

/// Entropy `−Σ p log p` of a Categorical given its log-probabilities (a [`log_softmax`] row).
pub fn categorical_entropy(log_p: &[f32]) -> f32 {
    -log_p.iter().map(|&l| l.exp() * l).sum::<f32>()
}

/// Samples an index from Categorical(`logits`) and returns it with its log-probability.
pub fn sample_categorical(logits: &[f32], rng: &mut impl Rng) -> (usize, f32) {
    let (log_z, max, sum) = log_sum_exp(logits);
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

/// Index of the largest logit (the deterministic action).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] {
            best = i;
        }
    }
    best
}

/// Log-density of `action` under N(`mean`, exp(`log_std`)²), summed over the dimensions; `std` is `exp(log_std)`
/// (passed in so that a batch computes it once).
pub fn gaussian_log_prob(mean: &[f32], action: &[f32], log_std: &[f32], std: &[f32]) -> f32 {
    mean.iter()
        .zip(action)
        .zip(log_std.iter().zip(std))
        .map(|((&mu, &a), (&ls, &s))| {
            let z = (a - mu) / s;
            -0.5 * z * z - ls - HALF_LN_2PI
        })
        .sum()
}

/// Entropy of the diagonal Gaussian with `log_std`: `Σ (log σ + ½ + ½ ln 2π)`.
pub fn gaussian_entropy(log_std: &[f32]) -> f32 {
    log_std.iter().map(|&ls| ls + 0.5 + HALF_LN_2PI).sum()
}

/// Samples `mean + std · ε` into `out` and returns the log-density of the (unclipped) sample, computed in f64
/// (the same density as [`gaussian_log_prob`], which works in f32, within float rounding). The sampler has always
/// scored in f64; scoring in f32 instead changes the behaviour log-probs by an ulp or so, which is enough to send
/// Box-env training runs down other (equally valid) trajectories, so the deterministic runs keep f64 here.
pub fn sample_gaussian(mean: &[f32], log_std: &[f32], rng: &mut impl Rng, out: &mut [f32]) -> f32 {
    let mut log_p = 0.0f64;
    for ((o, m), ls) in out.iter_mut().zip(mean).zip(log_std) {
        let eps: f64 = rng.sample(StandardNormal);
        let std = (*ls as f64).exp();
        *o = (*m as f64 + std * eps) as f32;
        let z = (*o as f64 - *m as f64) / std;
        log_p += -0.5 * z * z - *ls as f64 - HALF_LN_2PI_F64;
    }
    log_p as f32
}

/// The action distribution of a policy head, given the head's output row (logits or means) per observation.
/// Actions are f32: the index for a Categorical, one index per block for a multi-Categorical, the unclipped sample
/// for a Gaussian; log-probabilities and entropies of a multi-Categorical are the sums over its blocks.
#[derive(Debug, Clone)]
pub enum ActionDist {
    /// One Categorical per block of logits (a single block: `Discrete`).
    Categorical {
        /// Logits per block.
        blocks: Vec<usize>,
    },
    /// Diagonal Gaussian around the row, with the state-independent `log_std`.
    Gaussian {
        /// Log standard deviation per dimension.
        log_std: Vec<f32>,
        /// `exp(log_std)`.
        std: Vec<f32>,
    },
}

impl ActionDist {
    /// The distribution of `head`; `log_std` is the Gaussian head's parameter (ignored otherwise).
    pub fn new(head: &Head, log_std: &[f32]) -> Self {
        match head.categorical_blocks() {
            Some(blocks) => ActionDist::Categorical { blocks: blocks.to_vec() },
            None => ActionDist::Gaussian { log_std: log_std.to_vec(), std: log_std.iter().map(|l| l.exp()).collect() },
        }
    }

    /// Values per action.
    pub fn action_dim(&self) -> usize {
        match self {
            ActionDist::Categorical { blocks } => blocks.len(),
            ActionDist::Gaussian { log_std, .. } => log_std.len(),
        }
    }

    /// Values per head row.
    pub fn row_dim(&self) -> usize {
        match self {
            ActionDist::Categorical { blocks } => blocks.iter().sum(),
            ActionDist::Gaussian { log_std, .. } => log_std.len(),
        }
    }

    /// Draws an action for head row `row` into `out` (`action_dim` values), or writes the mode if
    /// `deterministic`; returns the action's log-probability.
    pub fn act(&self, row: &[f32], rng: &mut impl Rng, deterministic: bool, out: &mut [f32]) -> f32 {
        match self {
            ActionDist::Categorical { blocks } => {
                let mut log_p = 0.0;
                for (logits, o) in split_blocks(row, blocks).zip(out.iter_mut()) {
                    let (a, lp) = if deterministic {
                        let a = argmax(logits);
                        (a, categorical_log_prob(logits, a))
                    } else {
                        sample_categorical(logits, rng)
                    };
                    *o = a as f32;
                    log_p += lp;
                }
                log_p
            }
            ActionDist::Gaussian { log_std, std } => {
                if deterministic {
                    out.copy_from_slice(row);
                    gaussian_log_prob(row, row, log_std, std)
                } else {
                    sample_gaussian(row, log_std, rng, out)
                }
            }
        }
    }

    /// Log-probability of `action` under head row `row` (a Categorical index is clamped into its block).
    pub fn log_prob(&self, row: &[f32], action: &[f32]) -> f32 {
        match self {
            ActionDist::Categorical { blocks } => split_blocks(row, blocks)
                .zip(action)
                .map(|(logits, &a)| categorical_log_prob(logits, (a as usize).min(logits.len() - 1)))
                .fold(0.0, |acc, lp| acc + lp),
            ActionDist::Gaussian { log_std, std } => gaussian_log_prob(row, action, log_std, std),
        }
    }

    /// Entropy of the distribution at head row `row`.
    pub fn entropy(&self, row: &[f32]) -> f32 {
        match self {
            ActionDist::Categorical { blocks } => {
                let mut ls = vec![0.0; row.len()];
                let mut h = 0.0;
                for (logits, out) in split_blocks(row, blocks).zip(split_blocks_mut(&mut ls, blocks)) {
                    log_softmax(logits, out);
                    h += categorical_entropy(out);
                }
                h
            }
            ActionDist::Gaussian { log_std, .. } => gaussian_entropy(log_std),
        }
    }
}

/// `row` cut into consecutive blocks of `blocks[i]` values.
pub fn split_blocks<'a>(row: &'a [f32], blocks: &'a [usize]) -> impl Iterator<Item = &'a [f32]> + 'a {
    blocks.iter().scan(0, move |start, &n| {
        let block = row.get(*start..*start + n)?;
        *start += n;
        Some(block)
    })
}

/// `row` cut into consecutive mutable blocks of `blocks[i]` values.
pub fn split_blocks_mut<'a>(row: &'a mut [f32], blocks: &'a [usize]) -> impl Iterator<Item = &'a mut [f32]> + 'a {
    let mut rest = row;
    blocks.iter().map_while(move |&n| {
        if rest.len() < n {
            return None;
        }
        let (block, tail) = std::mem::take(&mut rest).split_at_mut(n);
        rest = tail;
        Some(block)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn close(a: f32, b: f64, tol: f64) {
        assert!((a as f64 - b).abs() < tol, "{a} vs {b}");
    }

    #[test]
    fn categorical_matches_closed_form() {
        let logits = [0.0f32, 1.0, 2.0];
        let z = (1.0f64 + 1f64.exp() + 2f64.exp()).ln();
        close(categorical_log_prob(&logits, 2), 2.0 - z, 1e-6);
        close(categorical_log_prob(&[3.0, 3.0, 3.0], 0), -(3f64.ln()), 1e-6);
        let mut ls = [0.0f32; 3];
        log_softmax(&logits, &mut ls);
        let p: Vec<f64> = [0.0f64, 1.0, 2.0].iter().map(|l| (l - z).exp()).collect();
        close(categorical_entropy(&ls), -p.iter().map(|p| p * p.ln()).sum::<f64>(), 1e-6);
        log_softmax(&[3.0, 3.0, 3.0], &mut ls);
        close(categorical_entropy(&ls), 3f64.ln(), 1e-6);
        // Stable for large logits.
        close(categorical_log_prob(&[1000.0, 0.0], 0), 0.0, 1e-6);
    }

    #[test]
    fn gaussian_matches_closed_form() {
        let (mean, log_std, a) = ([0.5f32, -1.0], [0.3f32, -0.7], [1.0f32, 0.0]);
        let std: Vec<f32> = log_std.iter().map(|l| l.exp()).collect();
        let normal = |x: f64, m: f64, ls: f64| {
            let s = ls.exp();
            -(x - m).powi(2) / (2.0 * s * s) - s.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
        };
        close(gaussian_log_prob(&mean, &a, &log_std, &std), normal(1.0, 0.5, 0.3) + normal(0.0, -1.0, -0.7), 1e-5);
        let h = |ls: f64| 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln() + ls;
        close(gaussian_entropy(&log_std), h(0.3) + h(-0.7), 1e-5);
        close(HALF_LN_2PI, 0.5 * (2.0 * std::f64::consts::PI).ln(), 1e-7);
    }

    #[test]
    fn samplers_draw_from_the_distribution_they_score() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let logits = [0.2f32, -1.0, 0.7];
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            let (a, lp) = sample_categorical(&logits, &mut rng);
            counts[a] += 1;
            close(lp, categorical_log_prob(&logits, a) as f64, 1e-6);
        }
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        for i in 0..3 {
            close(counts[i] as f32 / 30_000.0, (logits[i] as f64).exp() / z, 0.01);
        }
        let (mean, log_std) = ([0.1f32, 0.2], [0.0f32, -1.0]);
        let std: Vec<f32> = log_std.iter().map(|l| l.exp()).collect();
        let (mut out, mut sum, n) = ([0.0f32; 2], [0.0f64; 2], 20_000);
        for _ in 0..n {
            let lp = sample_gaussian(&mean, &log_std, &mut rng, &mut out);
            // The sampler scores in f64, gaussian_log_prob in f32: equal up to f32 rounding.
            close(lp, gaussian_log_prob(&mean, &out, &log_std, &std) as f64, 1e-5);
            sum.iter_mut().zip(&out).for_each(|(s, o)| *s += *o as f64);
        }
        close(mean[0], sum[0] / n as f64, 0.03);
        close(mean[1], sum[1] / n as f64, 0.01);
        assert_eq!(argmax(&logits), 2);
    }

    #[test]
    fn multi_categorical_is_the_sum_of_its_blocks() {
        let head = Head::MultiCategorical { nvec: vec![3, 2] };
        let dist = ActionDist::new(&head, &[]);
        let row = [0.2f32, -1.0, 0.7, 1.5, -0.3];
        assert_eq!((dist.action_dim(), dist.row_dim()), (2, 5));
        let lp = dist.log_prob(&row, &[2.0, 0.0]);
        close(lp, (categorical_log_prob(&row[..3], 2) + categorical_log_prob(&row[3..], 0)) as f64, 1e-6);
        let (mut a, mut b) = ([0.0f32; 3], [0.0f32; 2]);
        log_softmax(&row[..3], &mut a);
        log_softmax(&row[3..], &mut b);
        close(dist.entropy(&row), (categorical_entropy(&a) + categorical_entropy(&b)) as f64, 1e-6);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let mut out = [0.0f32; 2];
        let mode_lp = dist.act(&row, &mut rng, true, &mut out);
        assert_eq!(out, [2.0, 0.0]);
        assert_eq!(mode_lp, lp);
        let mut counts = [[0usize; 3]; 2];
        for _ in 0..20_000 {
            let lp = dist.act(&row, &mut rng, false, &mut out);
            close(lp, dist.log_prob(&row, &out) as f64, 1e-6);
            counts[0][out[0] as usize] += 1;
            counts[1][out[1] as usize] += 1;
        }
        for (k, &l) in a.iter().enumerate() {
            close(counts[0][k] as f32 / 20_000.0, (l as f64).exp(), 0.015);
        }
        for (k, &l) in b.iter().enumerate() {
            close(counts[1][k] as f32 / 20_000.0, (l as f64).exp(), 0.015);
        }
    }

    /// A single-block Categorical and a Gaussian act exactly as the plain functions do (the numbers of every
    /// earlier run are kept).
    #[test]
    fn single_heads_match_the_plain_functions() {
        let logits = [0.3f32, -0.2, 1.1];
        let dist = ActionDist::new(&Head::Categorical { n: 3 }, &[]);
        let (mut r1, mut r2) = (rand_chacha::ChaCha8Rng::seed_from_u64(9), rand_chacha::ChaCha8Rng::seed_from_u64(9));
        let mut out = [0.0f32];
        for _ in 0..100 {
            let lp = dist.act(&logits, &mut r1, false, &mut out);
            let (a, want) = sample_categorical(&logits, &mut r2);
            assert_eq!((out[0], lp.to_bits()), (a as f32, want.to_bits()));
        }
        let log_std = [0.1f32, -0.4];
        let dist = ActionDist::new(&Head::Gaussian { dim: 2 }, &log_std);
        let mean = [0.5f32, -0.5];
        let (mut a, mut b) = ([0.0f32; 2], [0.0f32; 2]);
        let lp = dist.act(&mean, &mut r1, false, &mut a);
        let want = sample_gaussian(&mean, &log_std, &mut r2, &mut b);
        assert_eq!((a, lp.to_bits()), (b, want.to_bits()));
    }
}
