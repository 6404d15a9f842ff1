//! The actor-critic of [`common::net::ActorCriticNet`] as candle modules, for the candle backend's autograd: the
//! same layers, names and activation, built from the one description, and the tensor versions of
//! [`common::distributions`]' formulas.

use candle_core::{D, DType, Device, Result, Tensor, Var};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use common::distributions::HALF_LN_2PI;
use common::model::Activation;
use common::net::{ActorCriticNet, LOG_STD};

/// `tanh(x)` computed as `2·sigmoid(2x) − 1`: the same function (to ~2e-7) and about twice as fast on candle's
/// CPU backend, where `tanh` goes through libm's `tanhf`.
fn tanh(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::sigmoid(&x.affine(2.0, 0.0)?)?.affine(2.0, -1.0)
}

/// An MLP: Linear, activation, Linear, activation, ..., Linear.
#[derive(Debug, Clone)]
struct Mlp {
    layers: Vec<Linear>,
    activation: Activation,
}

impl Mlp {
    fn new(net: &common::net::Mlp, vb: VarBuilder) -> Result<Self> {
        let layers = net
            .sizes()
            .windows(2)
            .enumerate()
            .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(2 * i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers, activation: net.activation() })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = match self.activation {
                    Activation::Tanh => tanh(&h)?,
                    Activation::Relu => h.relu()?,
                };
            }
        }
        Ok(h)
    }
}

/// Scores of stored actions under the current policy (the PPO update's question).
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// `[B]` log-probabilities of the given actions.
    pub log_prob: Tensor,
    /// `[B]` policy entropy per row.
    pub entropy: Tensor,
    /// `[B]` state values.
    pub value: Tensor,
}

/// The network's two MLPs and log-std as candle modules.
#[derive(Debug, Clone)]
pub struct ActorCritic {
    actor: Mlp,
    critic: Mlp,
    log_std: Option<Tensor>,
    /// Logits per Categorical block (one block for `Discrete`; empty for a Gaussian head).
    blocks: Vec<usize>,
}

impl ActorCritic {
    /// Builds the layers of `net` from `vb` (a `VarMap` for training, stored tensors otherwise).
    pub fn new(net: &ActorCriticNet, vb: VarBuilder) -> Result<Self> {
        let log_std = match net.log_std() {
            None => None,
            Some(range) => Some(vb.get_with_hints((1, range.len()), LOG_STD, candle_nn::Init::Const(0.0))?),
        };
        let blocks = net.head().categorical_blocks().map_or_else(Vec::new, <[usize]>::to_vec);
        Ok(Self {
            actor: Mlp::new(net.actor(), vb.pp("actor"))?,
            critic: Mlp::new(net.critic(), vb.pp("critic"))?,
            log_std,
            blocks,
        })
    }

    /// A trainable model on `device` holding the flat parameters `params` of `net`; returns the `VarMap` that
    /// owns the variables.
    pub fn with_params(net: &ActorCriticNet, params: &[f32], device: &Device) -> Result<(VarMap, Self)> {
        let varmap = VarMap::new();
        let model = Self::new(net, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        set_params(net, &sorted_vars(&varmap)?, params)?;
        Ok((varmap, model))
    }

    /// Policy head output `[B, logits_dim]`: logits (Categorical blocks) or the Gaussian mean.
    pub fn policy_head(&self, obs: &Tensor) -> Result<Tensor> {
        self.actor.forward(obs)
    }

    /// The Gaussian log-std `[1, d]`, `None` for Discrete.
    pub fn log_std(&self) -> Option<&Tensor> {
        self.log_std.as_ref()
    }

    /// State values `[B]`.
    pub fn value(&self, obs: &Tensor) -> Result<Tensor> {
        self.critic.forward(obs)?.squeeze(1)
    }

    /// Log-probability and entropy of stored `actions` (u32 `[B]` for one Categorical, u32 `[B, k]` for `k`
    /// blocks, f32 `[B, d]` for a Gaussian) and the state values. A multi-Categorical's log-probabilities and
    /// entropies are the sums over its blocks.
    pub fn evaluate(&self, obs: &Tensor, actions: &Tensor) -> Result<Evaluation> {
        let head = self.policy_head(obs)?;
        let (log_prob, entropy) = match (&self.log_std, self.blocks.as_slice()) {
            (Some(log_std), _) => {
                (gaussian_log_prob(&head, log_std, actions)?, gaussian_entropy(log_std, obs.dim(0)?)?)
            }
            (None, [_]) => (categorical_log_prob(&head, actions)?, categorical_entropy(&head)?),
            (None, blocks) => {
                let (mut log_probs, mut entropies, mut start) = (Vec::new(), Vec::new(), 0);
                for (i, &n) in blocks.iter().enumerate() {
                    let logits = head.narrow(1, start, n)?;
                    let block_actions = actions.narrow(1, i, 1)?.squeeze(1)?.contiguous()?;
                    log_probs.push(categorical_log_prob(&logits, &block_actions)?);
                    entropies.push(categorical_entropy(&logits)?);
                    start += n;
                }
                (Tensor::stack(&log_probs, 1)?.sum(1)?, Tensor::stack(&entropies, 1)?.sum(1)?)
            }
        };
        Ok(Evaluation { log_prob, entropy, value: self.value(obs)? })
    }
}

/// The variables of `varmap`, sorted by name.
pub fn sorted_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

/// Sets the variables (sorted by name, as the network's entries) to the flat parameters `params` of `net`.
pub fn set_params(net: &ActorCriticNet, vars: &[(String, Var)], params: &[f32]) -> Result<()> {
    net.check_len(params).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    for ((name, var), (want, shape, values)) in vars.iter().zip(net.named("", params)) {
        if *name != want || var.dims() != shape {
            return Err(candle_core::Error::Msg(format!(
                "variable {name} {:?} is not parameter {want} {shape:?}",
                var.dims()
            )));
        }
        var.set(&Tensor::from_slice(values, shape, var.device())?)?;
    }
    Ok(())
}

/// The flat vector of `tensors` (one per network entry, in its order).
pub fn flatten(tensors: &[Tensor]) -> Result<Vec<f32>> {
    let mut flat = Vec::new();
    for t in tensors {
        flat.extend(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
    }
    Ok(flat)
}

/// Log-probability `[B]` of integer `actions` `[B]` (u32) under Categorical(`logits` `[B, n]`).
fn categorical_log_prob(logits: &Tensor, actions: &Tensor) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    log_p.gather(&actions.unsqueeze(1)?, 1)?.squeeze(1)
}

/// Entropy `[B]` of Categorical(`logits` `[B, n]`).
fn categorical_entropy(logits: &Tensor) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    (log_p.exp()? * &log_p)?.sum(1)?.neg()
}

/// Log-density `[B]` of `actions` `[B, d]` under N(`mean` `[B, d]`, exp(`log_std` `[1, d]`)²), summed over d.
fn gaussian_log_prob(mean: &Tensor, log_std: &Tensor, actions: &Tensor) -> Result<Tensor> {
    let log_std = log_std.broadcast_as(mean.shape())?;
    let z = ((actions - mean)? / log_std.exp()?)?;
    ((z.sqr()? * -0.5)? - log_std)?.affine(1.0, -f64::from(HALF_LN_2PI))?.sum(1)
}

/// Entropy `[B]` of the diagonal Gaussian with `log_std` `[1, d]`, for a batch of `batch` rows.
fn gaussian_entropy(log_std: &Tensor, batch: usize) -> Result<Tensor> {
    let per_row = log_std.affine(1.0, 0.5 + f64::from(HALF_LN_2PI))?.sum(1)?; // [1]
    per_row.broadcast_as(batch)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use common::env::Space;
    use common::model::ModelConfig;

    #[test]
    fn candle_variables_are_the_network_entries_and_forward_agrees() {
        for space in [Space::Discrete { n: 3 }, Space::vector(vec![-1.0; 2], vec![1.0; 2])] {
            let cfg = ModelConfig { init_log_std: -0.5, ..ModelConfig::default() };
            let net = ActorCriticNet::for_env(&cfg, &Space::unbounded(5), &space).unwrap();
            let flat = net.init(3);
            let (varmap, model) = ActorCritic::with_params(&net, &flat, &Device::Cpu).unwrap();
            let vars = sorted_vars(&varmap).unwrap();
            let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
            let want: Vec<&str> = net.entries().iter().map(|e| e.name.as_str()).collect();
            assert_eq!(names, want);
            // And back: the flat vector of the variables is the original, exactly.
            let tensors: Vec<Tensor> = vars.iter().map(|(_, v)| v.as_tensor().clone()).collect();
            assert_eq!(flatten(&tensors).unwrap(), flat);

            let n = 7;
            let x: Vec<f32> = (0..n * 5).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3).collect();
            let xt = Tensor::from_slice(&x, (n, 5), &Device::Cpu).unwrap();
            let mut outs = Vec::new();
            let (actor, critic) = net.split(&flat);
            net.actor().forward(actor, &x, n, &mut outs);
            let want = model.policy_head(&xt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            close(outs.last().unwrap(), &want);
            net.critic().forward(critic, &x, n, &mut outs);
            close(outs.last().unwrap(), &model.value(&xt).unwrap().to_vec1::<f32>().unwrap());
        }
    }

    #[test]
    fn fused_backward_matches_candle_autograd() {
        let space = Space::Discrete { n: 2 };
        let cfg = ModelConfig { hidden_sizes: vec![16, 8], ..ModelConfig::default() };
        let net = ActorCriticNet::for_env(&cfg, &Space::unbounded(4), &space).unwrap();
        let flat = net.init(9);
        let (varmap, model) = ActorCritic::with_params(&net, &flat, &Device::Cpu).unwrap();
        let vars = sorted_vars(&varmap).unwrap();
        let n = 5;
        let x: Vec<f32> = (0..n * 4).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.4).collect();
        let w: Vec<f32> = (0..n * 2).map(|i| (i as f32 - 4.0) * 0.25).collect();
        // Loss: Σ w ⊙ logits + Σ value², through both nets.
        let xt = Tensor::from_slice(&x, (n, 4), &Device::Cpu).unwrap();
        let wt = Tensor::from_slice(&w, (n, 2), &Device::Cpu).unwrap();
        let value = model.value(&xt).unwrap();
        let loss = ((model.policy_head(&xt).unwrap() * &wt).unwrap().sum_all().unwrap()
            + value.sqr().unwrap().sum_all().unwrap())
        .unwrap();
        let autograd = loss.backward().unwrap();

        let mut grads = vec![0.0; net.num_params()];
        let (mut outs, mut scratch) = (Vec::new(), Vec::new());
        let (actor, critic) = net.split(&flat);
        let (actor_grads, critic_grads) = net.split_mut(&mut grads);
        net.actor().forward(actor, &x, n, &mut outs);
        let mut d = w.clone();
        net.actor().backward(actor, &x, &outs, &mut d, actor_grads, &mut scratch);
        net.critic().forward(critic, &x, n, &mut outs);
        let mut d: Vec<f32> = outs.last().unwrap().iter().map(|v| 2.0 * v).collect();
        net.critic().backward(critic, &x, &outs, &mut d, critic_grads, &mut scratch);
        for (e, (name, var)) in net.entries().iter().zip(&vars) {
            assert_eq!(&e.name, name);
            let want = autograd.get(var).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            close(&grads[e.range()], &want);
        }
    }

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "got {g}, want {w}");
        }
    }
}
