//! The actor-critic network of a [`ModelSpec`] on plain host `f32` buffers: the flat parameter layout (names,
//! shapes, offsets), initialisation, and the forward and backward passes (the CPU fast path). Actor inference, the
//! learner's `fused` and `candle` backends and the snapshot codec all take the layout from here.
//!
//! The trunks (separate actor and critic, or one shared) are `torch.nn.Sequential`s of convolutions and Linear
//! layers, named like a PyTorch `state_dict` (`actor.0.weight`, `critic.4.bias`, `network.7.weight`,
//! `actor_logstd`; `docs/model-spec.md`): layers at even indices, the activations between them.
//!
//! Candle runs a small MLP as a chain of tensor ops, each of which allocates and dispatches; at 64-wide layers that
//! overhead is larger than the arithmetic. Here every parameter lives in one flat vector (entries sorted by name,
//! each in PyTorch layout), the matrix products go to `gemm` with strides (no transposed copies) and the tanh runs
//! in place, so a forward or backward pass allocates nothing once its buffers have grown.

use crate::codec::Tensors;
use crate::env::Space;
use crate::init::orthogonal;
use crate::model::{Core, Encoder, Head, ImageDims, ModelConfig, ModelSpec, SpecError};
use rand::SeedableRng;
use std::ops::Range;

mod body;
mod conv;
mod kernels;
mod mlp;
mod recurrent;

pub use body::{Body, BodyTrace, Branch};
pub use conv::{Conv, Tower, Trace};
pub use kernels::{split_products, tanh};
pub use mlp::Mlp;
pub use recurrent::{Recurrent, SeqTrace};

/// A parameter vector that does not fit the network.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LayoutError {
    /// A named parameter is absent.
    #[error("parameter {0} is missing")]
    Missing(String),
    /// A named parameter has another shape.
    #[error("parameter {name} has shape {got:?}, the model needs {want:?}")]
    Shape {
        /// The parameter.
        name: String,
        /// Its shape in the input.
        got: Vec<usize>,
        /// The shape the network has.
        want: Vec<usize>,
    },
    /// A flat vector of the wrong length.
    #[error("{got} parameter values, the model has {want}")]
    Length {
        /// Values given.
        got: usize,
        /// Values the network has.
        want: usize,
    },
}

/// One named parameter in the flat vector.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamEntry {
    /// PyTorch-style name (`actor.0.weight`).
    pub name: String,
    /// Shape, PyTorch layout.
    pub shape: Vec<usize>,
    /// Offset of the first element.
    pub offset: usize,
}

impl ParamEntry {
    /// Elements in this parameter.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a zero-sized parameter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its span in the flat vector.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// What the initialisation draws for one parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// A weight of `fan_in` inputs per output; orthogonal with `gain`.
    Weight { gain: f64, fan_in: usize },
    /// A bias of a layer with `fan_in` inputs per output.
    Bias { fan_in: usize },
    /// The Gaussian head's log-std.
    LogStd,
    /// A parameter of the recurrent core of `hidden` units: a `[rows, cols]` weight (orthogonal with gain 1, as
    /// CleanRL's `ppo_atari_lstm.py`) or a bias (zero); PyTorch's default draws both uniform in ±1/√hidden.
    Core { weight: bool, rows: usize, cols: usize, hidden: usize },
}

/// The parameters of the recurrent core named `name` (`lstm`, `actor_gru`, ...) on `features` inputs.
fn core_params(spec: &ModelSpec, name: &str, features: usize) -> Vec<(String, Vec<usize>, Role)> {
    let h = spec.core.size();
    let g = h * if matches!(spec.core, Core::Lstm { .. }) { 4 } else { 3 };
    let role = |weight, rows, cols| Role::Core { weight, rows, cols, hidden: h };
    match spec.core {
        Core::None => Vec::new(),
        Core::Lstm { .. } | Core::Gru { .. } => vec![
            (format!("{name}.weight_ih_l0"), vec![g, features], role(true, g, features)),
            (format!("{name}.weight_hh_l0"), vec![g, h], role(true, g, h)),
            (format!("{name}.bias_ih_l0"), vec![g], role(false, g, 1)),
            (format!("{name}.bias_hh_l0"), vec![g], role(false, g, 1)),
        ],
    }
}

/// A recurrent network's input besides the observations: `B` sequences of `steps` rows each (rows time-major,
/// `t·B + b`), their states before the first row, and which rows start an episode (their incoming state is zero).
#[derive(Debug, Clone, Copy)]
pub struct Sequences<'a> {
    /// `T`: rows per sequence.
    pub steps: usize,
    /// `[B, state_dim]` each sequence's state before its first row.
    pub state0: &'a [f32],
    /// `[T·B]` the row starts an episode.
    pub starts: &'a [bool],
}

/// The trunks of a network and where its heads are.
#[derive(Debug, Clone)]
pub enum Trunks {
    /// An actor branch ending in the policy layer and a critic branch ending in the value layer, each on its own
    /// span of the flat vector ([`ActorCriticNet::split`]): memoryless, one tower each (`actor.*`, `critic.*`);
    /// recurrent, a trunk (`actor.*`), a core (`actor_lstm.*` / `actor_gru.*`) and a one-layer head
    /// (`actor_head.*`) each.
    Separate {
        /// Observation to the head's logits or means.
        actor: Branch,
        /// Observation to the value.
        critic: Branch,
    },
    /// One body (trunk `network.*`, then the recurrent core `lstm.*` / `gru.*`, if any) whose features feed a
    /// one-layer policy head (`actor.*`) and a one-layer value head (`critic.*`); every offset is into the whole
    /// flat vector.
    Shared {
        /// Observation to features.
        body: Body,
        /// Features to the head's logits or means (one Linear layer).
        policy: Tower,
        /// Features to the value (one Linear layer).
        value: Tower,
    },
}

/// What [`ActorCriticNet::forward`] computed: the head's output and the values, and every layer's trace.
#[derive(Debug, Clone, Default)]
pub struct NetTrace {
    /// The shared body's trace, or the actor's and the critic's (separate trunks with a core).
    bodies: [BodyTrace; 2],
    /// The policy head's trace (a memoryless separate trunk: the actor's whole tower).
    policy: Trace,
    /// The value head's trace.
    value: Trace,
}

impl NetTrace {
    /// `[n, logits_dim]` logits or Gaussian means.
    pub fn head(&self) -> &[f32] {
        self.policy.output()
    }

    /// `[n]` state values.
    pub fn values(&self) -> &[f32] {
        self.value.output()
    }

    /// Appends the recurrent state after row `row` ([`crate::model::StateLayout`]: each core's state in turn;
    /// nothing for a memoryless network) to `out`.
    pub fn state_after(&self, row: usize, out: &mut Vec<f32>) {
        self.bodies.iter().for_each(|b| b.state_after(row, out));
    }
}

/// The flat-buffer network of a [`ModelSpec`]: its trunks ([`Trunks`]), the policy and value layers, plus the
/// Gaussian head's state-independent log-std; every parameter in one flat vector, entries sorted by name (with
/// separate trunks the actor's, `actor.*` then `actor_logstd`, come before the critic's).
#[derive(Debug, Clone)]
pub struct ActorCriticNet {
    spec: ModelSpec,
    entries: Vec<ParamEntry>,
    /// How each entry is initialised.
    roles: Vec<Role>,
    /// Where the critic's span starts with separate trunks (the actor's is everything before); 0 with a shared one.
    critic_start: usize,
    trunks: Trunks,
    log_std: Option<Range<usize>>,
}

/// Gains of orthogonal init: hidden layers, the policy layer, the value layer (CleanRL's).
const HIDDEN_GAIN: f64 = std::f64::consts::SQRT_2;
const POLICY_GAIN: f64 = 0.01;
const VALUE_GAIN: f64 = 1.0;

/// The parameters of one trunk named `prefix` (`actor`, `critic`, `network`): its convolutions, its hidden
/// layers and, given `head`, a head layer of that many outputs with orthogonal gain (memoryless separate trunks).
fn trunk_params(
    spec: &ModelSpec,
    prefix: &str,
    head: Option<(usize, f64)>,
) -> Result<Vec<(String, Vec<usize>, Role)>, SpecError> {
    let mut params = Vec::new();
    let mut layer = |index: usize, shape: Vec<usize>, gain: f64| {
        let fan_in = shape[1..].iter().product();
        params.push((format!("{prefix}.{index}.weight"), shape.clone(), Role::Weight { gain, fan_in }));
        params.push((format!("{prefix}.{index}.bias"), vec![shape[0]], Role::Bias { fan_in }));
    };
    let dims = spec.conv_dims()?;
    for (i, (l, input)) in spec.encoder.conv_layers().iter().zip(&dims).enumerate() {
        layer(Tower::conv_index(i), vec![l.out_channels, input.c, l.kernel, l.kernel], HIDDEN_GAIN);
    }
    let convs = spec.encoder.conv_layers().len();
    let mut width = dims.last().map_or(spec.obs_dim, ImageDims::len);
    let hidden = spec.hidden_sizes();
    for (j, &h) in hidden.iter().enumerate() {
        layer(Tower::linear_index(convs, j), vec![h, width], HIDDEN_GAIN);
        width = h;
    }
    if let Some((out, gain)) = head {
        layer(Tower::linear_index(convs, hidden.len()), vec![out, width], gain);
    }
    Ok(params)
}

impl ActorCriticNet {
    /// The layout `spec` describes.
    pub fn new(spec: &ModelSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        let logits = spec.head.logits_dim();
        let mut params = Vec::new();
        let features = spec.hidden_sizes().last().copied().unwrap_or(spec.obs_dim);
        let recurrent = spec.core.is_recurrent();
        // The heads' input: the core's output, or the trunk's features.
        let head_in = if recurrent { spec.core.size() } else { features };
        let head_params = |name: String, out: usize, gain: f64| {
            let fan_in = head_in;
            [
                (format!("{name}.weight"), vec![out, head_in], Role::Weight { gain, fan_in }),
                (format!("{name}.bias"), vec![out], Role::Bias { fan_in }),
            ]
        };
        let heads = [("actor", logits, POLICY_GAIN), ("critic", 1, VALUE_GAIN)];
        match (spec.shared_trunk, recurrent) {
            (true, _) => {
                params.extend(trunk_params(spec, "network", None)?);
                params.extend(core_params(spec, spec.core.name(), features));
                for (name, out, gain) in heads {
                    params.extend(head_params(name.to_string(), out, gain));
                }
            }
            (false, false) => {
                for (name, out, gain) in heads {
                    params.extend(trunk_params(spec, name, Some((out, gain)))?);
                }
            }
            (false, true) => {
                for (name, out, gain) in heads {
                    params.extend(trunk_params(spec, name, None)?);
                    params.extend(core_params(spec, &format!("{name}_{}", spec.core.name()), features));
                    params.extend(head_params(format!("{name}_head"), out, gain));
                }
            }
        }
        if let Head::Gaussian { dim } = spec.head {
            params.push((LOG_STD.into(), vec![1, dim], Role::LogStd));
        }
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let mut offset = 0;
        let (mut entries, mut roles) = (Vec::new(), Vec::new());
        for (name, shape, role) in params {
            let e = ParamEntry { name, shape, offset };
            offset += e.len();
            entries.push(e);
            roles.push(role);
        }
        let critic_start = match spec.shared_trunk {
            true => 0,
            false => entries.iter().find(|e| e.name.starts_with("critic.")).map_or(0, |e| e.offset),
        };
        let find = |name: String| entries.iter().find(|e| e.name == name).map_or(0, |e| e.offset);
        let dims = spec.conv_dims()?;
        let activation = spec.activation();
        let tower = |prefix: &str, mut sizes: Vec<usize>, start: usize, activate_last: bool| {
            let convs: Vec<Conv> = spec
                .encoder
                .conv_layers()
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let at = |part: &str| find(format!("{prefix}.{}.{part}", Tower::conv_index(i))) - start;
                    let layout = match (i, &spec.encoder) {
                        (0, Encoder::Conv { layout, .. }) => Some(*layout),
                        _ => None,
                    };
                    Conv::new(dims[i], dims[i + 1], (l.kernel, l.stride), layout, (at("weight"), at("bias")))
                })
                .collect();
            sizes.insert(0, dims.last().map_or(spec.obs_dim, ImageDims::len));
            let layers = sizes.len() - 1;
            let at =
                |j: usize, part: &str| find(format!("{prefix}.{}.{part}", Tower::linear_index(convs.len(), j))) - start;
            let mlp = Mlp {
                weights: (0..layers).map(|j| at(j, "weight")).collect(),
                biases: (0..layers).map(|j| at(j, "bias")).collect(),
                sizes,
                activation,
                activate_last,
            };
            Tower { convs, mlp }
        };
        let head_layer = |name: &str, out: usize, start: usize| Tower {
            convs: Vec::new(),
            mlp: Mlp {
                sizes: vec![head_in, out],
                activation,
                activate_last: false,
                weights: vec![find(format!("{name}.weight")) - start],
                biases: vec![find(format!("{name}.bias")) - start],
            },
        };
        let hidden = spec.hidden_sizes().to_vec();
        let with = |out: usize| hidden.iter().copied().chain([out]).collect::<Vec<_>>();
        // The trunk `prefix` and the core `core_name` after it, offsets relative to `start`.
        let body = |prefix: &str, core_name: &str, start: usize| Body {
            trunk: tower(prefix, hidden.clone(), start, true),
            core: {
                let at = |part: &str| find(format!("{core_name}.{part}")) - start;
                let offsets = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"].map(at);
                Recurrent::new(&spec.core, features, offsets)
            },
        };
        let branch = |name: &str, out: usize, start: usize| match recurrent {
            false => Branch { body: None, head: tower(name, with(out), start, false) },
            true => Branch {
                body: Some(body(name, &format!("{name}_{}", spec.core.name()), start)),
                head: head_layer(&format!("{name}_head"), out, start),
            },
        };
        let trunks = match spec.shared_trunk {
            true => Trunks::Shared {
                body: body("network", spec.core.name(), 0),
                policy: head_layer("actor", logits, 0),
                value: head_layer("critic", 1, 0),
            },
            false => Trunks::Separate { actor: branch("actor", logits, 0), critic: branch("critic", 1, critic_start) },
        };
        let log_std = entries.iter().find(|e| e.name == LOG_STD).map(ParamEntry::range);
        Ok(Self { spec: spec.clone(), entries, roles, critic_start, trunks, log_std })
    }

    /// Freshly initialised parameters: orthogonal weights (gain √2 hidden and convolutions, 0.01 policy layer, 1.0
    /// value layer) and zero biases, or without `init.orthogonal` PyTorch's `Linear`/`Conv2d` default (weights and
    /// biases uniform in ±1/√fan_in); the log-std at `init.log_std`; drawn from `seed` in a fixed order (separate
    /// trunks: the critic's parameters, then the actor's, as PyTorch constructs CleanRL's agent; a shared trunk: the
    /// trunk's and its core's, the policy layer's, the value layer's; by name within each group).
    pub fn init(&self, seed: u64) -> Vec<f32> {
        use rand::Rng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut flat = vec![0.0f32; self.num_params()];
        let group = |name: &str| match name.split(['.', '_']).next() {
            Some("network" | "lstm" | "gru") => 0,
            Some("critic") if !self.spec.shared_trunk => 0,
            Some("actor") => 1,
            _ => 2,
        };
        let mut order: Vec<(&ParamEntry, Role)> = self.entries.iter().zip(self.roles.iter().copied()).collect();
        order.sort_by_key(|(e, _)| (group(&e.name), e.name.clone()));
        for (e, role) in order {
            let values = &mut flat[e.range()];
            match role {
                Role::LogStd => values.fill(self.spec.init.log_std as f32),
                Role::Core { weight: true, rows, cols, .. } if self.spec.init.orthogonal => {
                    values.copy_from_slice(&orthogonal(rows, cols, 1.0, &mut rng));
                }
                Role::Weight { gain, fan_in } if self.spec.init.orthogonal => {
                    values.copy_from_slice(&orthogonal(e.shape[0], fan_in, gain, &mut rng));
                }
                _ if self.spec.init.orthogonal => {} // biases stay zero
                Role::Core { hidden, .. } => {
                    let bound = 1.0 / (hidden.max(1) as f32).sqrt();
                    values.iter_mut().for_each(|x| *x = rng.random_range(-bound..bound));
                }
                Role::Weight { fan_in, .. } | Role::Bias { fan_in } => {
                    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
                    values.iter_mut().for_each(|x| *x = rng.random_range(-bound..bound));
                }
            }
        }
        flat
    }

    /// Runs `n` rows of the network input `x` (prepared observations, [`crate::obs::prepare_input`]) through the
    /// whole network; `t.head()` and `t.values()` hold the results. A recurrent network takes each row as the
    /// first step of an episode (zero state); [`ActorCriticNet::forward_seq`] carries a state.
    pub fn forward(&self, params: &[f32], x: &[f32], n: usize, t: &mut NetTrace) {
        match self.state_dim() {
            0 => self.run(params, x, n, None, t),
            s => {
                let (state0, starts) = (vec![0.0; n * s], vec![false; n]);
                self.run(params, x, n, Some(Sequences { steps: 1, state0: &state0, starts: &starts }), t);
            }
        }
    }

    /// Runs the rows of `x` (time-major sequences, see [`Sequences`]) through the whole network, carrying the
    /// recurrent state along each sequence; `t.head()`, `t.values()` and `t.state_after(..)` hold the results. A
    /// memoryless network ignores the sequence structure.
    pub fn forward_seq(&self, params: &[f32], x: &[f32], seq: Sequences, t: &mut NetTrace) {
        self.run(params, x, seq.starts.len(), Some(seq), t);
    }

    /// [`ActorCriticNet::forward_seq`] on `n` rows; a recurrent core needs `seq`.
    fn run(&self, params: &[f32], x: &[f32], n: usize, seq: Option<Sequences>, t: &mut NetTrace) {
        let [first, second] = &mut t.bodies;
        match &self.trunks {
            Trunks::Separate { actor, critic } => {
                let (a, c) = self.split(params);
                actor.forward(a, x, n, seq, 0, first, &mut t.policy);
                critic.forward(c, x, n, seq, 1, second, &mut t.value);
            }
            Trunks::Shared { body, policy, value } => {
                body.forward(params, x, n, seq, 0, first);
                second.idle();
                policy.forward(params, first.output(), n, &mut t.policy);
                value.forward(params, first.output(), n, &mut t.value);
            }
        }
    }

    /// The trunks.
    pub fn trunks(&self) -> &Trunks {
        &self.trunks
    }

    /// The actor's and the critic's towers of memoryless separate trunks (each from the observation to its
    /// output).
    pub fn separate(&self) -> Option<(&Tower, &Tower)> {
        match &self.trunks {
            Trunks::Separate { actor: Branch { body: None, head: a }, critic: Branch { body: None, head: c } } => {
                Some((a, c))
            }
            _ => None,
        }
    }

    /// Values of one env's recurrent state (0: memoryless; [`crate::model::StateLayout`]).
    pub fn state_dim(&self) -> usize {
        self.spec.state_layout().dim()
    }

    /// The parameters, sorted by name.
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// Length of the flat parameter vector.
    pub fn num_params(&self) -> usize {
        self.entries.last().map_or(0, |e| e.offset + e.len())
    }

    /// The layout of `cfg` on an env with these spaces ([`ModelSpec::resolve`], then [`ActorCriticNet::new`]).
    pub fn for_env(cfg: &ModelConfig, obs_space: &Space, action_space: &Space) -> Result<Self, SpecError> {
        Self::new(&ModelSpec::resolve(cfg, obs_space, action_space)?)
    }

    /// The spec this layout was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The actor's and the critic's spans of a flat vector (with a shared trunk: nothing and everything).
    pub fn split<'a>(&self, flat: &'a [f32]) -> (&'a [f32], &'a [f32]) {
        flat.split_at(self.critic_start)
    }

    /// The actor's and the critic's spans of a flat vector, mutably.
    pub fn split_mut<'a>(&self, flat: &'a mut [f32]) -> (&'a mut [f32], &'a mut [f32]) {
        flat.split_at_mut(self.critic_start)
    }

    /// Span of the Gaussian log-std in the flat vector and in the actor's span (`None` for Discrete).
    pub fn log_std(&self) -> Option<Range<usize>> {
        self.log_std.clone()
    }

    /// Observation width.
    pub fn obs_dim(&self) -> usize {
        self.spec.obs_dim
    }

    /// The policy head.
    pub fn head(&self) -> &Head {
        &self.spec.head
    }

    /// Checks that `flat` has this network's length.
    pub fn check_len(&self, flat: &[f32]) -> Result<(), LayoutError> {
        match flat.len() == self.num_params() {
            true => Ok(()),
            false => Err(LayoutError::Length { got: flat.len(), want: self.num_params() }),
        }
    }

    /// `(name, shape, values)` of every parameter of `flat` (sorted by name), each name after `prefix`.
    pub fn named<'a>(
        &'a self,
        prefix: &'a str,
        flat: &'a [f32],
    ) -> impl Iterator<Item = (String, &'a [usize], &'a [f32])> + 'a {
        self.entries.iter().map(move |e| (format!("{prefix}{}", e.name), e.shape.as_slice(), &flat[e.range()]))
    }

    /// The flat vector of the tensors named `prefix` + parameter name in `tensors`; fails naming the first
    /// missing or misshapen parameter.
    pub fn flatten(&self, tensors: &Tensors, prefix: &str) -> Result<Vec<f32>, LayoutError> {
        let mut flat = Vec::with_capacity(self.num_params());
        for e in &self.entries {
            let name = format!("{prefix}{}", e.name);
            let t = tensors.get(&name).ok_or_else(|| LayoutError::Missing(name.clone()))?;
            if t.shape != e.shape {
                return Err(LayoutError::Shape { name, got: t.shape.clone(), want: e.shape.clone() });
            }
            flat.extend_from_slice(&t.values);
        }
        Ok(flat)
    }
}

/// Name of the Gaussian policy's log-std parameter.
pub const LOG_STD: &str = "actor_logstd";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::HostTensor;

    #[test]
    fn parameter_names_follow_pytorch_state_dict() {
        let space = Space::vector(vec![-2.0], vec![2.0]);
        let net = ActorCriticNet::for_env(&ModelConfig::default(), &Space::unbounded(3), &space).unwrap();
        let names: Vec<(&str, &[usize])> =
            net.entries().iter().map(|e| (e.name.as_str(), e.shape.as_slice())).collect();
        let expect: [(&str, &[usize]); 13] = [
            ("actor.0.bias", &[64]),
            ("actor.0.weight", &[64, 3]),
            ("actor.2.bias", &[64]),
            ("actor.2.weight", &[64, 64]),
            ("actor.4.bias", &[1]),
            ("actor.4.weight", &[1, 64]),
            ("actor_logstd", &[1, 1]),
            ("critic.0.bias", &[64]),
            ("critic.0.weight", &[64, 3]),
            ("critic.2.bias", &[64]),
            ("critic.2.weight", &[64, 64]),
            ("critic.4.bias", &[1]),
            ("critic.4.weight", &[1, 64]),
        ];
        assert_eq!(names, expect);
    }

    #[test]
    fn pytorch_default_init_without_ortho_init() {
        let space = Space::vector(vec![-1.0; 6], vec![1.0; 6]);
        let cfg =
            ModelConfig { ortho_init: false, init_log_std: -2.0, hidden_sizes: vec![256, 256], ..Default::default() };
        let net = ActorCriticNet::for_env(&cfg, &Space::unbounded(17), &space).unwrap();
        let flat = net.init(5);
        assert_eq!(flat, net.init(5), "seeded init is reproducible");
        for e in net.entries() {
            let w = &flat[e.range()];
            if e.name == LOG_STD {
                assert!(w.iter().all(|&x| x == -2.0));
                continue;
            }
            let layer = e.name.replace(".bias", ".weight");
            let fan_in = net.entries().iter().find(|x| x.name == layer).unwrap().shape[1];
            let bound = 1.0 / (fan_in as f32).sqrt();
            assert!(w.iter().all(|x| x.abs() <= bound), "{} outside ±{bound}", e.name);
            // Uniform: the variance is bound²/3 (loosely, for the small bias vectors too).
            let var = w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32;
            let want = bound * bound / 3.0;
            let tol = if w.len() > 100 { 0.2 } else { 0.8 };
            assert!((var - want).abs() <= tol * want, "{}: variance {var}, uniform gives {want}", e.name);
        }
    }

    #[test]
    fn init_gains_zero_biases_and_log_std() {
        let space = Space::vector(vec![-1.0; 2], vec![1.0; 2]);
        let net = ActorCriticNet::for_env(
            &ModelConfig { init_log_std: -0.5, ..ModelConfig::default() },
            &Space::unbounded(4),
            &space,
        )
        .unwrap();
        let flat = net.init(5);
        assert_eq!(flat, net.init(5), "seeded init is reproducible");
        for e in net.entries() {
            let w = &flat[e.range()];
            match e.shape.as_slice() {
                _ if e.name == LOG_STD => assert!(w.iter().all(|&x| x == -0.5)),
                [rows, cols] => {
                    // Each row of a wide matrix (or column of a tall one) has norm = gain.
                    let gain = match e.name.as_str() {
                        "actor.4.weight" => 0.01,
                        "critic.4.weight" => 1.0,
                        _ => std::f32::consts::SQRT_2,
                    };
                    let (outer, inner) = if rows <= cols { (*rows, *cols) } else { (*cols, *rows) };
                    for o in 0..outer {
                        let at = |i: usize| if rows <= cols { w[o * cols + i] } else { w[i * cols + o] };
                        let norm = (0..inner).map(|i| at(i) * at(i)).sum::<f32>().sqrt();
                        assert!((norm - gain).abs() < 1e-4 * gain.max(1.0), "{}: {norm}", e.name);
                    }
                }
                _ => assert!(w.iter().all(|&x| x == 0.0), "{}", e.name),
            }
        }
    }

    #[test]
    fn flatten_inverts_named_and_names_what_does_not_fit() {
        let net =
            ActorCriticNet::for_env(&ModelConfig::default(), &Space::unbounded(4), &Space::Discrete { n: 2 }).unwrap();
        let flat = net.init(1);
        let tensors: Tensors =
            net.named("p.", &flat).map(|(n, s, v)| (n, HostTensor::new(s.to_vec(), v.to_vec()))).collect();
        assert_eq!(net.flatten(&tensors, "p.").unwrap(), flat);
        assert_eq!(net.flatten(&tensors, "").unwrap_err(), LayoutError::Missing("actor.0.bias".into()));
        let mut bad = tensors.clone();
        bad.insert("p.critic.4.bias".into(), HostTensor::new(vec![2], vec![0.0; 2]));
        assert!(matches!(net.flatten(&bad, "p."), Err(LayoutError::Shape { name, .. }) if name == "p.critic.4.bias"));
        assert!(net.check_len(&flat[1..]).is_err());
    }

    #[test]
    fn separate_cores_are_named_per_branch_and_split_at_the_critic() {
        let cfg = ModelConfig {
            hidden_sizes: vec![8],
            core: crate::model::CoreKind::Gru,
            core_size: 4,
            ..Default::default()
        };
        let net = ActorCriticNet::for_env(&cfg, &Space::unbounded(3), &Space::vector(vec![-1.0], vec![1.0])).unwrap();
        let names: Vec<(&str, &[usize])> =
            net.entries().iter().map(|e| (e.name.as_str(), e.shape.as_slice())).collect();
        let expect: [(&str, &[usize]); 17] = [
            ("actor.0.bias", &[8]),
            ("actor.0.weight", &[8, 3]),
            ("actor_gru.bias_hh_l0", &[12]),
            ("actor_gru.bias_ih_l0", &[12]),
            ("actor_gru.weight_hh_l0", &[12, 4]),
            ("actor_gru.weight_ih_l0", &[12, 8]),
            ("actor_head.bias", &[1]),
            ("actor_head.weight", &[1, 4]),
            ("actor_logstd", &[1, 1]),
            ("critic.0.bias", &[8]),
            ("critic.0.weight", &[8, 3]),
            ("critic_gru.bias_hh_l0", &[12]),
            ("critic_gru.bias_ih_l0", &[12]),
            ("critic_gru.weight_hh_l0", &[12, 4]),
            ("critic_gru.weight_ih_l0", &[12, 8]),
            ("critic_head.bias", &[1]),
            ("critic_head.weight", &[1, 4]),
        ];
        assert_eq!(names, expect);
        assert_eq!(net.state_dim(), 8, "the actor's GRU state, then the critic's");
        assert!(net.separate().is_none(), "a recurrent branch is not one tower");
        let flat = net.init(3);
        let critic_first = net.entries().iter().find(|e| e.name == "critic.0.bias").unwrap().offset;
        assert_eq!(net.split(&flat).0.len(), critic_first);
        let gain = |name: &str| {
            let e = net.entries().iter().find(|e| e.name == name).unwrap();
            flat[e.range()].iter().map(|x| x * x).sum::<f32>().sqrt()
        };
        assert!((gain("actor_head.weight") - 0.01).abs() < 1e-5 && (gain("critic_head.weight") - 1.0).abs() < 1e-5);
    }

    #[test]
    fn conv_and_shared_trunk_names_follow_pytorch_state_dict_and_init() {
        use crate::env::Dtype;
        use crate::model::Preset;
        let frames = Space::shaped(vec![0.0], vec![255.0], vec![4, 84, 84], Dtype::Uint8).unwrap();
        let (conv, hidden_sizes, activation) = Preset::NatureCnn.layers();
        let cfg = ModelConfig { conv, hidden_sizes, activation, shared_trunk: true, ..ModelConfig::default() };
        let net = ActorCriticNet::for_env(&cfg, &frames, &Space::Discrete { n: 6 }).unwrap();
        let names: Vec<(&str, &[usize])> =
            net.entries().iter().map(|e| (e.name.as_str(), e.shape.as_slice())).collect();
        // CleanRL's ppo_atari.py Agent, exactly.
        let expect: [(&str, &[usize]); 12] = [
            ("actor.bias", &[6]),
            ("actor.weight", &[6, 512]),
            ("critic.bias", &[1]),
            ("critic.weight", &[1, 512]),
            ("network.0.bias", &[32]),
            ("network.0.weight", &[32, 4, 8, 8]),
            ("network.2.bias", &[64]),
            ("network.2.weight", &[64, 32, 4, 4]),
            ("network.4.bias", &[64]),
            ("network.4.weight", &[64, 64, 3, 3]),
            ("network.7.bias", &[512]),
            ("network.7.weight", &[512, 3136]),
        ];
        assert_eq!(names, expect);
        assert_eq!(net.num_params(), 1_687_719);
        let flat = net.init(2);
        let norm_rows = |name: &str| {
            let e = net.entries().iter().find(|e| e.name == name).unwrap();
            let cols: usize = e.shape[1..].iter().product();
            flat[e.range()].chunks_exact(cols).map(|r| r.iter().map(|x| x * x).sum::<f32>().sqrt()).collect::<Vec<_>>()
        };
        // Wide matrices ([out, in·k·k] with out <= in·k·k) have orthonormal rows times the gain.
        for (name, gain) in [("network.0.weight", 2f32.sqrt()), ("actor.weight", 0.01), ("critic.weight", 1.0)] {
            assert!(norm_rows(name).iter().all(|n| (n - gain).abs() < 1e-4 * gain.max(1.0)), "{name}");
        }
        // Separate conv trunks: the head is the Linear after the flatten and the hidden layer.
        let minatar = Space::shaped(vec![0.0], vec![1.0], vec![10, 10, 4], Dtype::Uint8).unwrap();
        let (conv, hidden_sizes, activation) = Preset::MinatarCnn.layers();
        let cfg = ModelConfig { conv, hidden_sizes, activation, ortho_init: false, ..ModelConfig::default() };
        let net = ActorCriticNet::for_env(&cfg, &minatar, &Space::Discrete { n: 3 }).unwrap();
        let names: Vec<&str> = net.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "actor.0.bias",
                "actor.0.weight",
                "actor.3.bias",
                "actor.3.weight",
                "actor.5.bias",
                "actor.5.weight",
                "critic.0.bias",
                "critic.0.weight",
                "critic.3.bias",
                "critic.3.weight",
                "critic.5.bias",
                "critic.5.weight"
            ]
        );
        let flat = net.init(1);
        // PyTorch's Conv2d default: uniform in ±1/√(c·k·k) for the weight and the bias alike.
        for name in ["actor.0.weight", "actor.0.bias"] {
            let e = net.entries().iter().find(|e| e.name == name).unwrap();
            let bound = 1.0 / 36f32.sqrt();
            let w = &flat[e.range()];
            assert!(w.iter().all(|x| x.abs() <= bound) && w.iter().any(|x| x.abs() > bound / 2.0), "{name}");
        }
        let e = net.entries().iter().find(|e| e.name == "actor.3.weight").unwrap();
        assert_eq!(e.shape, [128, 16 * 8 * 8]);
    }
}
