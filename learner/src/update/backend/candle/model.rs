//! The actor-critic of [`common::net::ActorCriticNet`] as candle modules, for the candle backend's autograd: the
//! same trunks, layers, names and activation, built from the one description, and the tensor versions of
//! [`common::distributions`]' formulas.

use candle_core::{D, DType, Device, Result, Tensor, Var};
use candle_nn::{Conv2d, Conv2dConfig, Linear, Module, VarBuilder, VarMap};
use common::distributions::HALF_LN_2PI;
use common::model::{Activation, Encoder, ImageLayout, ModelSpec};
use common::net::{ActorCriticNet, LOG_STD, Tower};

/// `tanh(x)` computed as `2·sigmoid(2x) − 1`: the same function (to ~2e-7) and about twice as fast on candle's
/// CPU backend, where `tanh` goes through libm's `tanhf`.
fn tanh(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::sigmoid(&x.affine(2.0, 0.0)?)?.affine(2.0, -1.0)
}

/// One trunk of [`common::net::Tower`]: convolutions, the flatten, linear layers, with the activation after each
/// layer but the last (and after the last too for a shared trunk).
#[derive(Debug, Clone)]
struct Trunk {
    /// Each convolution and the rows and columns of its input it reads (`(out − 1)·stride + kernel`).
    convs: Vec<(Conv2d, (usize, usize))>,
    linears: Vec<Linear>,
    activation: Activation,
    activate_last: bool,
    /// How a `[B, obs_dim]` input becomes `[B, C, H, W]` (conv trunks): the observation's shape and whether its
    /// channels are last.
    image: Option<(Vec<usize>, bool)>,
}

impl Trunk {
    fn new(tower: &Tower, spec: &ModelSpec, vb: VarBuilder) -> Result<Self> {
        let convs = tower
            .convs()
            .iter()
            .enumerate()
            .map(|(i, conv)| {
                let ((input, output), (kernel, stride)) = (conv.dims(), conv.kernel_stride());
                let cfg = Conv2dConfig { stride, ..Conv2dConfig::default() };
                let read = |out: usize| (out - 1) * stride + kernel;
                let conv = candle_nn::conv2d(input.c, output.c, kernel, cfg, vb.pp(Tower::conv_index(i)))?;
                Ok((conv, (read(output.h), read(output.w))))
            })
            .collect::<Result<Vec<_>>>()?;
        let linears = tower
            .mlp()
            .sizes()
            .windows(2)
            .enumerate()
            .map(|(j, w)| candle_nn::linear(w[0], w[1], vb.pp(Tower::linear_index(convs.len(), j))))
            .collect::<Result<Vec<_>>>()?;
        let image = match &spec.encoder {
            Encoder::Conv { layout, .. } => Some((spec.obs_shape.clone(), *layout == ImageLayout::Hwc)),
            Encoder::Mlp { .. } => None,
        };
        let mlp = tower.mlp();
        Ok(Self { convs, linears, activation: mlp.activation(), activate_last: mlp.activates_last(), image })
    }

    fn act(&self, x: &Tensor) -> Result<Tensor> {
        match self.activation {
            Activation::Tanh => tanh(x),
            Activation::Relu => x.relu(),
        }
    }
}

impl Module for Trunk {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        if let Some((shape, channels_last)) = &self.image {
            let batch = x.dim(0)?;
            h = match (shape.as_slice(), channels_last) {
                ([hh, ww], _) => h.reshape((batch, 1, *hh, *ww))?,
                ([hh, ww, c], true) => h.reshape((batch, *hh, *ww, *c))?.permute((0, 3, 1, 2))?.contiguous()?,
                ([c, hh, ww], false) => h.reshape((batch, *c, *hh, *ww))?,
                _ => {
                    return Err(candle_core::Error::Msg(format!("a conv trunk cannot take observations of {shape:?}")));
                }
            };
            for (conv, (rows, cols)) in &self.convs {
                // Rows and columns no filter reaches are cut off first: candle's conv2d backward pads its
                // transposed convolution by the rows' remainder only, which fails when the columns' differs.
                if h.dim(2)? != *rows {
                    h = h.narrow(2, 0, *rows)?;
                }
                if h.dim(3)? != *cols {
                    h = h.narrow(3, 0, *cols)?;
                }
                h = self.act(&conv.forward(&h)?)?;
            }
            h = h.flatten_from(1)?;
        }
        for (i, layer) in self.linears.iter().enumerate() {
            h = layer.forward(&h)?;
            if i + 1 < self.linears.len() || self.activate_last {
                h = self.act(&h)?;
            }
        }
        Ok(h)
    }
}

/// Separate trunks, or one shared trunk with a policy and a value layer.
#[derive(Debug, Clone)]
enum Trunks {
    Separate { actor: Trunk, critic: Trunk },
    Shared { trunk: Trunk, policy: Linear, value: Linear },
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

/// The network's trunks, heads and log-std as candle modules.
#[derive(Debug, Clone)]
pub struct ActorCritic {
    trunks: Trunks,
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
        let spec = net.spec();
        // `backend::check_supported` refuses a recurrent core before a backend is built.
        let unsupported =
            || candle_core::Error::Msg(format!("the candle backend does not run the model {}", spec.describe()));
        let trunks = match net.trunks() {
            common::net::Trunks::Separate { .. } => {
                let (actor, critic) = net.separate().ok_or_else(unsupported)?;
                Trunks::Separate {
                    actor: Trunk::new(actor, spec, vb.pp("actor"))?,
                    critic: Trunk::new(critic, spec, vb.pp("critic"))?,
                }
            }
            common::net::Trunks::Shared { body, policy, value } => {
                if body.core.is_some() {
                    return Err(unsupported());
                }
                let layer = |head: &Tower, name| candle_nn::linear(head.in_dim(), head.out_dim(), vb.pp(name));
                Trunks::Shared {
                    trunk: Trunk::new(&body.trunk, spec, vb.pp("network"))?,
                    policy: layer(policy, "actor")?,
                    value: layer(value, "critic")?,
                }
            }
        };
        Ok(Self { trunks, log_std, blocks })
    }

    /// A trainable model on `device` holding the flat parameters `params` of `net`; returns the `VarMap` that
    /// owns the variables.
    pub fn with_params(net: &ActorCriticNet, params: &[f32], device: &Device) -> Result<(VarMap, Self)> {
        let varmap = VarMap::new();
        let model = Self::new(net, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        set_params(net, &sorted_vars(&varmap)?, params)?;
        Ok((varmap, model))
    }

    /// Policy head output `[B, logits_dim]` (logits of the Categorical blocks, or the Gaussian mean) and the
    /// state values `[B]`; a shared trunk runs once for both.
    pub fn forward(&self, obs: &Tensor) -> Result<(Tensor, Tensor)> {
        let (head, value) = match &self.trunks {
            Trunks::Separate { actor, critic } => (actor.forward(obs)?, critic.forward(obs)?),
            Trunks::Shared { trunk, policy, value } => {
                let features = trunk.forward(obs)?;
                (policy.forward(&features)?, value.forward(&features)?)
            }
        };
        Ok((head, value.squeeze(1)?))
    }

    /// The Gaussian log-std `[1, d]`, `None` for Discrete.
    pub fn log_std(&self) -> Option<&Tensor> {
        self.log_std.as_ref()
    }

    /// State values `[B]`.
    pub fn value(&self, obs: &Tensor) -> Result<Tensor> {
        match &self.trunks {
            Trunks::Separate { critic, .. } => critic.forward(obs)?.squeeze(1),
            Trunks::Shared { .. } => Ok(self.forward(obs)?.1),
        }
    }

    /// Log-probability and entropy of stored `actions` (u32 `[B]` for one Categorical, u32 `[B, k]` for `k`
    /// blocks, f32 `[B, d]` for a Gaussian) and the state values. A multi-Categorical's log-probabilities and
    /// entropies are the sums over its blocks.
    pub fn evaluate(&self, obs: &Tensor, actions: &Tensor) -> Result<Evaluation> {
        let (head, value) = self.forward(obs)?;
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
        Ok(Evaluation { log_prob, entropy, value })
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
    use common::env::{Dtype, Space};
    use common::model::{ConvLayer, LayoutChoice, ModelConfig};
    use common::net::{NetTrace, Trace};

    fn image(shape: &[usize]) -> Space {
        Space::shaped(vec![0.0], vec![255.0], shape.to_vec(), Dtype::Uint8).unwrap()
    }

    fn conv(out_channels: usize, kernel: usize, stride: usize) -> ConvLayer {
        ConvLayer { out_channels, kernel, stride }
    }

    /// Networks of every trunk kind: MLPs, conv stacks on channels-last, channels-first and one-channel images,
    /// separate and shared.
    fn networks() -> Vec<ActorCriticNet> {
        let two = vec![conv(4, 3, 2), conv(5, 2, 1)];
        let convs = |conv: Vec<ConvLayer>, layout, shared_trunk| ModelConfig {
            conv,
            image_layout: layout,
            hidden_sizes: vec![6],
            activation: Activation::Relu,
            shared_trunk,
            ..ModelConfig::default()
        };
        let gaussian = Space::vector(vec![-1.0; 2], vec![1.0; 2]);
        let discrete = Space::Discrete { n: 3 };
        let cases: Vec<(ModelConfig, Space, &Space)> = vec![
            (ModelConfig { init_log_std: -0.5, ..ModelConfig::default() }, Space::unbounded(5), &discrete),
            (ModelConfig { init_log_std: -0.5, ..ModelConfig::default() }, Space::unbounded(5), &gaussian),
            (ModelConfig { shared_trunk: true, ..ModelConfig::default() }, Space::unbounded(5), &gaussian),
            (convs(two.clone(), LayoutChoice::Auto, false), image(&[7, 6, 2]), &discrete),
            (convs(two.clone(), LayoutChoice::Chw, false), image(&[2, 7, 6]), &gaussian),
            (convs(vec![conv(3, 2, 1)], LayoutChoice::Auto, false), image(&[4, 5]), &discrete),
            (convs(two, LayoutChoice::Auto, true), image(&[7, 6, 3]), &discrete),
        ];
        cases.into_iter().map(|(cfg, obs, act)| ActorCriticNet::for_env(&cfg, &obs, act).unwrap()).collect()
    }

    fn input(net: &ActorCriticNet, n: usize) -> (Vec<f32>, Tensor) {
        let d = net.obs_dim();
        let x: Vec<f32> = (0..n * d).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3).collect();
        let xt = Tensor::from_slice(&x, (n, d), &Device::Cpu).unwrap();
        (x, xt)
    }

    #[test]
    fn candle_variables_are_the_network_entries_and_forward_agrees() {
        for net in networks() {
            let flat = net.init(3);
            let (varmap, model) = ActorCritic::with_params(&net, &flat, &Device::Cpu).unwrap();
            let vars = sorted_vars(&varmap).unwrap();
            let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
            let want: Vec<&str> = net.entries().iter().map(|e| e.name.as_str()).collect();
            assert_eq!(names, want, "{}", net.spec().describe());
            // And back: the flat vector of the variables is the original, exactly.
            let tensors: Vec<Tensor> = vars.iter().map(|(_, v)| v.as_tensor().clone()).collect();
            assert_eq!(flatten(&tensors).unwrap(), flat);

            let n = 7;
            let (x, xt) = input(&net, n);
            let mut trace = NetTrace::default();
            net.forward(&flat, &x, n, &mut trace);
            let (head, value) = model.forward(&xt).unwrap();
            close(trace.head(), &head.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            close(trace.values(), &value.to_vec1::<f32>().unwrap());
            close(trace.values(), &model.value(&xt).unwrap().to_vec1::<f32>().unwrap());
        }
    }

    #[test]
    fn fused_backward_matches_candle_autograd() {
        for net in networks() {
            let Some((actor, critic)) = net.separate() else { continue };
            let flat = net.init(9);
            let (varmap, model) = ActorCritic::with_params(&net, &flat, &Device::Cpu).unwrap();
            let vars = sorted_vars(&varmap).unwrap();
            let n = 5;
            let (x, xt) = input(&net, n);
            let logits = net.head().logits_dim();
            let w: Vec<f32> = (0..n * logits).map(|i| (i as f32 - 4.0) * 0.25).collect();
            // Loss: Σ w ⊙ head + Σ value² (+ Σ log-std, whose gradient is 1), through both trunks.
            let wt = Tensor::from_slice(&w, (n, logits), &Device::Cpu).unwrap();
            let (head, value) = model.forward(&xt).unwrap();
            let mut loss =
                ((head * &wt).unwrap().sum_all().unwrap() + value.sqr().unwrap().sum_all().unwrap()).unwrap();
            if let Some(log_std) = model.log_std() {
                loss = (loss + log_std.sum_all().unwrap()).unwrap();
            }
            let autograd = loss.backward().unwrap();

            let mut grads = vec![0.0; net.num_params()];
            let (mut trace, mut scratch) = (Trace::default(), Vec::new());
            let (actor_params, critic_params) = net.split(&flat);
            let (actor_grads, critic_grads) = net.split_mut(&mut grads);
            actor.forward(actor_params, &x, n, &mut trace);
            let mut d = w.clone();
            actor.backward(actor_params, &x, &mut trace, &mut d, actor_grads, &mut scratch, false);
            if let Some(range) = net.log_std() {
                actor_grads[range].fill(1.0);
            }
            critic.forward(critic_params, &x, n, &mut trace);
            let mut d: Vec<f32> = trace.output().iter().map(|v| 2.0 * v).collect();
            critic.backward(critic_params, &x, &mut trace, &mut d, critic_grads, &mut scratch, false);
            for (e, (name, var)) in net.entries().iter().zip(&vars) {
                assert_eq!(&e.name, name);
                let want = autograd.get(var).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                close(&grads[e.range()], &want);
            }
        }
    }

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "got {g}, want {w}");
        }
    }
}
