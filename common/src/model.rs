//! The model spec: the one description of the actor-critic network. It alone decides the parameter names (a PyTorch
//! `state_dict`), their shapes, the initialisation and the forward order; the learner resolves it from the config's
//! `[model]` table and the env's spaces, writes it into every snapshot's metadata (key [`MODEL_KEY`], JSON), and
//! every builder (Rust and Python actors, `eval`, `render`, both learner backends) reads it from there.
//! `docs/model-spec.md` documents the format.

use crate::env::{Dtype, Space};
use serde::{Deserialize, Serialize};

/// Snapshot metadata key holding the spec as JSON.
pub const MODEL_KEY: &str = "model";
/// Snapshot metadata key naming the activation, written before the spec existed (read for old snapshots, still
/// written for actors of earlier releases).
pub const ACTIVATION_KEY: &str = "activation";
/// The spec format this build reads and writes.
pub const SPEC_FORMAT: u32 = 1;

/// The config's `[model]` table: what a user chooses; [`ModelSpec::resolve`] adds what the env decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Hidden layer widths of both MLPs.
    pub hidden_sizes: Vec<usize>,
    /// Initial value of the Gaussian policy's state-independent log-std.
    pub init_log_std: f64,
    /// The hidden layers' activation.
    pub activation: Activation,
    /// Orthogonal initialisation (CleanRL's and the RL Zoo's default); `false`: PyTorch's default for `Linear`
    /// layers, weights and biases uniform in ±1/√fan_in (the Zoo's `ortho_init=False`).
    pub ortho_init: bool,
    /// One trunk for actor and critic (`true`) or one each (`false`, the default).
    pub shared_trunk: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            hidden_sizes: vec![64, 64],
            init_log_std: 0.0,
            activation: Activation::Tanh,
            ortho_init: true,
            shared_trunk: false,
        }
    }
}

/// The activation between linear layers (none after the last).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `tanh(x)`.
    #[default]
    Tanh,
    /// `max(x, 0)`.
    Relu,
}

impl Activation {
    /// Its name in configs and snapshot metadata.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
        }
    }

    /// Parses [`Activation::name`]'s text.
    pub fn from_name(name: &str) -> Option<Self> {
        [Activation::Tanh, Activation::Relu].into_iter().find(|a| a.name() == name)
    }
}

/// What turns an observation into features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Encoder {
    /// Linear layers of `hidden_sizes` widths with `activation` after each.
    Mlp {
        /// Widths of the hidden layers.
        hidden_sizes: Vec<usize>,
        /// The activation after each hidden layer.
        activation: Activation,
    },
}

/// What carries state between steps (after the encoder, before the heads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Core {
    /// Memoryless: the features go straight to the heads.
    None,
}

/// The policy head, decided by the action space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Head {
    /// `n` logits of one Categorical (`Discrete(n)`).
    Categorical {
        /// Number of actions.
        n: usize,
    },
    /// `Σ nvec` logits, one Categorical per block of `nvec[i]` (`MultiDiscrete(nvec)`).
    MultiCategorical {
        /// Actions per sub-action.
        nvec: Vec<usize>,
    },
    /// `dim` means of a diagonal Gaussian with a state-independent log-std (`Box` of `dim` values).
    Gaussian {
        /// Action dimensions.
        dim: usize,
    },
}

impl Head {
    /// The head for `space`.
    pub fn for_space(space: &Space) -> Self {
        match space {
            Space::Discrete { n } => Head::Categorical { n: *n },
            Space::MultiDiscrete { nvec } => Head::MultiCategorical { nvec: nvec.clone() },
            Space::Box { low, .. } => Head::Gaussian { dim: low.len() },
        }
    }

    /// Width of the policy layer's output.
    pub fn logits_dim(&self) -> usize {
        match self {
            Head::Categorical { n } => *n,
            Head::MultiCategorical { nvec } => nvec.iter().sum(),
            Head::Gaussian { dim } => *dim,
        }
    }

    /// Logits per Categorical block (`[n]`, or `nvec`); `None` for a Gaussian head.
    pub fn categorical_blocks(&self) -> Option<&[usize]> {
        match self {
            Head::Categorical { n } => Some(std::slice::from_ref(n)),
            Head::MultiCategorical { nvec } => Some(nvec),
            Head::Gaussian { .. } => None,
        }
    }

    /// Values per action in rollouts (1 for Categorical).
    pub fn action_dim(&self) -> usize {
        match self {
            Head::Categorical { .. } => 1,
            Head::MultiCategorical { nvec } => nvec.len(),
            Head::Gaussian { dim } => *dim,
        }
    }
}

/// How fresh parameters are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSpec {
    /// Orthogonal weights (gain √2 hidden, 0.01 policy head, 1 value head) and zero biases; `false`: PyTorch's
    /// `Linear` default.
    pub orthogonal: bool,
    /// The Gaussian head's initial log-std.
    pub log_std: f64,
}

/// The whole network: see the module docs and `docs/model-spec.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// [`SPEC_FORMAT`].
    pub format: u32,
    /// Width of the flattened observation the encoder takes (the product of `obs_shape`).
    pub obs_dim: usize,
    /// Shape of one observation, row-major (`[obs_dim]` for a vector; absent in specs written before shaped
    /// spaces, which read as `[obs_dim]`).
    #[serde(default)]
    pub obs_shape: Vec<usize>,
    /// The observations' dtype: uint8 values are multiplied by 1/255 before the encoder
    /// ([`crate::obs::prepare_input`]); absent reads as float32.
    #[serde(default)]
    pub obs_dtype: Dtype,
    /// Observation to features.
    pub encoder: Encoder,
    /// Features to features, across steps.
    pub core: Core,
    /// Features to the action distribution's parameters.
    pub head: Head,
    /// One trunk for actor and critic, or one each.
    pub shared_trunk: bool,
    /// Initialisation.
    pub init: InitSpec,
}

/// Why a spec cannot be built or read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// The JSON does not parse as a spec.
    #[error("model spec does not parse: {0}")]
    Parse(String),
    /// A format this build does not know.
    #[error("model spec format {0} is not supported (this build reads format {SPEC_FORMAT})")]
    Format(u32),
    /// A field's value cannot describe a network.
    #[error("model spec {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A valid spec that this runner does not run.
    #[error("{runner} does not run the model {spec}")]
    Unsupported {
        /// Who cannot run it (a backend, the flat-buffer network).
        runner: &'static str,
        /// [`ModelSpec::describe`].
        spec: String,
    },
    /// The spec does not fit the env it is used with.
    #[error("the model takes {model}, the env gives {env}")]
    Env {
        /// What the model expects.
        model: String,
        /// What the env has.
        env: String,
    },
}

impl ModelSpec {
    /// The spec of `cfg` for an env with these spaces.
    pub fn resolve(cfg: &ModelConfig, obs_space: &Space, action_space: &Space) -> Result<Self, SpecError> {
        let spec = Self::of(cfg, obs_space, action_space);
        spec.validate()?;
        Ok(spec)
    }

    /// The spec of a snapshot written before specs existed: two MLPs with `hidden_sizes` and `activation`,
    /// separate trunks, the head of `action_space`.
    pub fn legacy(hidden_sizes: &[usize], activation: Activation, obs_space: &Space, action_space: &Space) -> Self {
        let cfg = ModelConfig { hidden_sizes: hidden_sizes.to_vec(), activation, ..ModelConfig::default() };
        Self::of(&cfg, obs_space, action_space)
    }

    /// The spec `cfg` describes on these spaces, not yet validated.
    fn of(cfg: &ModelConfig, obs_space: &Space, action_space: &Space) -> Self {
        Self {
            format: SPEC_FORMAT,
            obs_dim: obs_space.flat_dim(),
            obs_shape: obs_space.shape(),
            obs_dtype: obs_space.dtype(),
            encoder: Encoder::Mlp { hidden_sizes: cfg.hidden_sizes.clone(), activation: cfg.activation },
            core: Core::None,
            head: Head::for_space(action_space),
            shared_trunk: cfg.shared_trunk,
            init: InitSpec { orthogonal: cfg.ortho_init, log_std: cfg.init_log_std },
        }
    }

    /// Checks that the spec describes a network.
    pub fn validate(&self) -> Result<(), SpecError> {
        let invalid = |field, reason: &str| Err(SpecError::Invalid { field, reason: reason.to_string() });
        if self.format != SPEC_FORMAT {
            return Err(SpecError::Format(self.format));
        }
        if self.obs_dim == 0 {
            return invalid("obs_dim", "must be at least 1");
        }
        if self.obs_shape.iter().product::<usize>() != self.obs_dim {
            return invalid(
                "obs_shape",
                &format!("{:?} does not hold obs_dim = {} values", self.obs_shape, self.obs_dim),
            );
        }
        let Encoder::Mlp { hidden_sizes, .. } = &self.encoder;
        if hidden_sizes.is_empty() || hidden_sizes.contains(&0) {
            return invalid("encoder.hidden_sizes", "needs at least one layer, every width at least 1");
        }
        match &self.head {
            Head::Categorical { n } if *n == 0 => invalid("head.n", "must be at least 1"),
            Head::MultiCategorical { nvec } if nvec.is_empty() || nvec.contains(&0) => {
                invalid("head.nvec", "needs at least one sub-action, each with at least 1 action")
            }
            Head::Gaussian { dim } if *dim == 0 => invalid("head.dim", "must be at least 1"),
            _ => Ok(()),
        }
    }

    /// The spec as snapshot metadata (JSON).
    pub fn to_json(&self) -> String {
        // A struct of plain fields always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses and validates [`ModelSpec::to_json`]'s text.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        #[derive(Deserialize)]
        struct Versioned {
            format: u32,
        }
        let format = serde_json::from_str::<Versioned>(text).map_err(|e| SpecError::Parse(e.to_string()))?.format;
        if format != SPEC_FORMAT {
            return Err(SpecError::Format(format));
        }
        let mut spec: Self = serde_json::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        if spec.obs_shape.is_empty() {
            spec.obs_shape = vec![spec.obs_dim];
        }
        spec.validate()?;
        Ok(spec)
    }

    /// The hidden activation of the encoder.
    pub fn activation(&self) -> Activation {
        let Encoder::Mlp { activation, .. } = &self.encoder;
        *activation
    }

    /// The encoder's hidden layer widths.
    pub fn hidden_sizes(&self) -> &[usize] {
        let Encoder::Mlp { hidden_sizes, .. } = &self.encoder;
        hidden_sizes
    }

    /// Checks that this spec (a snapshot's) takes the observations and produces the actions of `env` (the spec
    /// an actor or evaluator resolved for its env).
    pub fn check_env_of(&self, env: &ModelSpec) -> Result<(), SpecError> {
        if self.obs_dim != env.obs_dim || self.obs_dtype != env.obs_dtype || self.head != env.head {
            let side = |s: &ModelSpec| {
                format!("{} {} observation values with a {:?} head", s.obs_dim, s.obs_dtype.name(), s.head)
            };
            return Err(SpecError::Env { model: side(self), env: side(env) });
        }
        Ok(())
    }

    /// Short human form, for errors and logs, e.g. `mlp[64, 64] tanh, core none, categorical(2), separate trunks`.
    pub fn describe(&self) -> String {
        let Encoder::Mlp { hidden_sizes, activation } = &self.encoder;
        let core = match self.core {
            Core::None => "none",
        };
        let head = match &self.head {
            Head::Categorical { n } => format!("categorical({n})"),
            Head::MultiCategorical { nvec } => format!("multi_categorical({nvec:?})"),
            Head::Gaussian { dim } => format!("gaussian({dim})"),
        };
        let trunks = if self.shared_trunk { "a shared trunk" } else { "separate trunks" };
        format!("mlp{hidden_sizes:?} {}, core {core}, {head}, {trunks}", activation.name())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_the_documented_form() {
        let spec = ModelSpec::resolve(&ModelConfig::default(), &vector(4), &Space::Discrete { n: 2 }).unwrap();
        let json = spec.to_json();
        assert_eq!(
            json,
            r#"{"format":1,"obs_dim":4,"obs_shape":[4],"obs_dtype":"float32","encoder":{"kind":"mlp","hidden_sizes":[64,64],"activation":"tanh"},"core":{"kind":"none"},"head":{"kind":"categorical","n":2},"shared_trunk":false,"init":{"orthogonal":true,"log_std":0.0}}"#
        );
        assert_eq!(ModelSpec::from_json(&json).unwrap(), spec);
        let multi = Space::MultiDiscrete { nvec: vec![3, 3, 2] };
        let spec = ModelSpec::resolve(&ModelConfig::default(), &vector(7), &multi).unwrap();
        assert_eq!(ModelSpec::from_json(&spec.to_json()).unwrap().head, Head::MultiCategorical { nvec: vec![3, 3, 2] });
        assert_eq!((spec.head.logits_dim(), spec.head.action_dim()), (8, 3));
        // Images keep their shape and dtype; specs written before shaped spaces read as float vectors.
        let image = Space::shaped(vec![0.0], vec![255.0], vec![6, 6, 1], Dtype::Uint8).unwrap();
        let spec = ModelSpec::resolve(&ModelConfig::default(), &image, &Space::Discrete { n: 4 }).unwrap();
        assert_eq!((spec.obs_dim, spec.obs_shape.as_slice(), spec.obs_dtype), (36, &[6, 6, 1][..], Dtype::Uint8));
        assert_eq!(ModelSpec::from_json(&spec.to_json()).unwrap(), spec);
        let old = json.replace(r#""obs_shape":[4],"obs_dtype":"float32","#, "");
        assert_eq!(ModelSpec::from_json(&old).unwrap(), ModelSpec::from_json(&json).unwrap());
    }

    fn vector(dim: usize) -> Space {
        Space::vector(vec![-1.0; dim], vec![1.0; dim])
    }

    #[test]
    fn bad_specs_name_what_is_wrong() {
        let ok = ModelSpec::resolve(&ModelConfig::default(), &vector(4), &Space::Discrete { n: 2 }).unwrap().to_json();
        assert_eq!(ModelSpec::from_json(&ok.replace(r#""format":1"#, r#""format":2"#)), Err(SpecError::Format(2)));
        assert!(matches!(ModelSpec::from_json(&ok.replace("mlp", "conv")), Err(SpecError::Parse(_))));
        assert!(matches!(ModelSpec::from_json(&ok.replace(r#""none""#, r#""lstm""#)), Err(SpecError::Parse(_))));
        assert!(matches!(
            ModelSpec::from_json(&ok.replace("[64,64]", "[64,0]")),
            Err(SpecError::Invalid { field: "encoder.hidden_sizes", .. })
        ));
        assert!(matches!(ModelSpec::from_json("{}"), Err(SpecError::Parse(_))));
        assert!(matches!(ModelSpec::from_json("not json"), Err(SpecError::Parse(_))));
        let spec = ModelSpec::from_json(&ok).unwrap();
        let env = |d, n| ModelSpec::legacy(&[8], Activation::Relu, &vector(d), &Space::Discrete { n });
        assert!(spec.check_env_of(&env(4, 2)).is_ok(), "hidden sizes and activation are the snapshot's own");
        assert!(matches!(spec.check_env_of(&env(5, 2)), Err(SpecError::Env { .. })));
        assert!(matches!(spec.check_env_of(&env(4, 3)), Err(SpecError::Env { .. })));
        let bytes = Space::shaped(vec![0.0], vec![255.0], vec![2, 2], Dtype::Uint8).unwrap();
        let image = ModelSpec::legacy(&[8], Activation::Relu, &bytes, &Space::Discrete { n: 2 });
        assert!(matches!(spec.check_env_of(&image), Err(SpecError::Env { .. })), "same width, other dtype");
        assert!(matches!(
            ModelSpec::from_json(&ok.replace(r#""obs_shape":[4]"#, r#""obs_shape":[2,3]"#)),
            Err(SpecError::Invalid { field: "obs_shape", .. })
        ));
    }
}
