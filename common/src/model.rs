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

/// The config's `[model]` table: what a user chooses; [`ModelSpec::resolve`] adds what the env decides. In TOML,
/// `preset = "nature_cnn"` (or `"minatar_cnn"`) stands for its [`Preset`]'s `conv`, `hidden_sizes` and `activation`,
/// which the table then may not set itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, try_from = "ModelTable")]
pub struct ModelConfig {
    /// Convolution layers before the MLP, for image observations (empty: the MLP takes the flat observation).
    pub conv: Vec<ConvLayer>,
    /// Where an image's channel axis is.
    pub image_layout: LayoutChoice,
    /// Hidden layer widths of the MLP (after the convolutions, if any).
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
    /// The recurrent core after the encoder (`none`: memoryless): one that feeds both heads on a shared trunk, one
    /// per trunk (the actor's and the critic's) on separate trunks.
    pub core: CoreKind,
    /// Hidden width of the recurrent core.
    pub core_size: usize,
}

/// The `[model] core` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoreKind {
    /// No core: each step's action depends on that step's observation only.
    #[default]
    None,
    /// PyTorch's one-layer `nn.LSTM`.
    Lstm,
    /// PyTorch's one-layer `nn.GRU`.
    Gru,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            conv: Vec::new(),
            image_layout: LayoutChoice::Auto,
            hidden_sizes: vec![64, 64],
            init_log_std: 0.0,
            activation: Activation::Tanh,
            ortho_init: true,
            shared_trunk: false,
            core: CoreKind::None,
            core_size: 128,
        }
    }
}

/// The `[model]` table as written: [`ModelConfig`] with an optional preset that stands for some of its fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelTable {
    preset: Option<Preset>,
    conv: Option<Vec<ConvLayer>>,
    image_layout: Option<LayoutChoice>,
    hidden_sizes: Option<Vec<usize>>,
    init_log_std: Option<f64>,
    activation: Option<Activation>,
    ortho_init: Option<bool>,
    shared_trunk: Option<bool>,
    core: Option<CoreKind>,
    core_size: Option<usize>,
}

impl TryFrom<ModelTable> for ModelConfig {
    type Error = String;

    fn try_from(t: ModelTable) -> Result<Self, String> {
        let d = ModelConfig::default();
        let (conv, hidden_sizes, activation) = match t.preset {
            None => (
                t.conv.unwrap_or(d.conv),
                t.hidden_sizes.unwrap_or(d.hidden_sizes),
                t.activation.unwrap_or(d.activation),
            ),
            Some(preset) => {
                if t.conv.is_some() || t.hidden_sizes.is_some() || t.activation.is_some() {
                    return Err(format!(
                        "preset = \"{}\" sets conv, hidden_sizes and activation; set them without the preset instead",
                        preset.name()
                    ));
                }
                preset.layers()
            }
        };
        Ok(Self {
            conv,
            image_layout: t.image_layout.unwrap_or(d.image_layout),
            hidden_sizes,
            init_log_std: t.init_log_std.unwrap_or(d.init_log_std),
            activation,
            ortho_init: t.ortho_init.unwrap_or(d.ortho_init),
            shared_trunk: t.shared_trunk.unwrap_or(d.shared_trunk),
            core: t.core.unwrap_or(d.core),
            core_size: t.core_size.unwrap_or(d.core_size),
        })
    }
}

/// Published image networks, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// The DQN Nature paper's network as CleanRL's `ppo_atari.py` has it: 32x8/4, 64x4/2, 64x3/1 convolutions, then
    /// 512 units, ReLU.
    NatureCnn,
    /// The MinAtar paper's network: 16x3/1 convolution, then 128 units, ReLU.
    MinatarCnn,
}

impl Preset {
    /// Its name in configs.
    pub fn name(self) -> &'static str {
        match self {
            Preset::NatureCnn => "nature_cnn",
            Preset::MinatarCnn => "minatar_cnn",
        }
    }

    /// The convolutions, hidden sizes and activation it stands for.
    pub fn layers(self) -> (Vec<ConvLayer>, Vec<usize>, Activation) {
        let conv = |out_channels, kernel, stride| ConvLayer { out_channels, kernel, stride };
        match self {
            Preset::NatureCnn => (vec![conv(32, 8, 4), conv(64, 4, 2), conv(64, 3, 1)], vec![512], Activation::Relu),
            Preset::MinatarCnn => (vec![conv(16, 3, 1)], vec![128], Activation::Relu),
        }
    }
}

/// One convolution: `out_channels` filters of `kernel`x`kernel`, moved by `stride`, no padding (PyTorch's
/// `Conv2d(in, out_channels, kernel, stride)`), followed by the activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvLayer {
    /// Filters, the output's channels.
    pub out_channels: usize,
    /// Side of the square filter.
    pub kernel: usize,
    /// Step between filter positions, both axes.
    pub stride: usize,
}

impl ConvLayer {
    /// Output side for an input side of `n` (`None` when the filter does not fit).
    pub fn out_side(&self, n: usize) -> Option<usize> {
        (self.stride > 0 && n >= self.kernel).then(|| (n - self.kernel) / self.stride + 1)
    }
}

/// Where an image observation keeps its channels, as the config chooses it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayoutChoice {
    /// Read from the shape: channels last (`(H, W, C)`, gymnasium's and MinAtar's images) unless the first axis is
    /// shorter than the last (`(C, H, W)`, e.g. 4 stacked 84x84 frames).
    #[default]
    Auto,
    /// `(H, W, C)`.
    Hwc,
    /// `(C, H, W)`.
    Chw,
}

/// Where an image observation keeps its channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageLayout {
    /// `(H, W, C)`: the network permutes it to PyTorch's `(C, H, W)` first.
    Hwc,
    /// `(C, H, W)`, PyTorch's own.
    Chw,
}

impl ImageLayout {
    /// Its name in specs and configs.
    pub fn name(self) -> &'static str {
        match self {
            ImageLayout::Hwc => "hwc",
            ImageLayout::Chw => "chw",
        }
    }
}

/// An image's channels, height and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageDims {
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl ImageDims {
    /// Values in the image.
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// True for an empty image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    /// Convolutions over the image (in `(C, H, W)` order, after permuting an `hwc` observation), each followed by
    /// `activation`, flattened in `(C, H, W)` order, then the linear layers of `hidden_sizes`.
    Conv {
        /// The convolutions, input first.
        layers: Vec<ConvLayer>,
        /// Where the observation keeps its channels.
        layout: ImageLayout,
        /// Widths of the hidden linear layers after the flatten.
        hidden_sizes: Vec<usize>,
        /// The activation after each convolution and hidden layer.
        activation: Activation,
    },
}

impl Encoder {
    /// The hidden linear layers' widths.
    pub fn hidden_sizes(&self) -> &[usize] {
        match self {
            Encoder::Mlp { hidden_sizes, .. } | Encoder::Conv { hidden_sizes, .. } => hidden_sizes,
        }
    }

    /// The activation after every hidden layer.
    pub fn activation(&self) -> Activation {
        match self {
            Encoder::Mlp { activation, .. } | Encoder::Conv { activation, .. } => *activation,
        }
    }

    /// The convolutions (none for an MLP).
    pub fn conv_layers(&self) -> &[ConvLayer] {
        match self {
            Encoder::Mlp { .. } => &[],
            Encoder::Conv { layers, .. } => layers,
        }
    }
}

/// What carries state between steps (after the encoder, before the heads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Core {
    /// Memoryless: the features go straight to the heads.
    None,
    /// A one-layer LSTM of `size` units (PyTorch's gate order i, f, g, o); its state is `[h, c]`.
    Lstm {
        /// Hidden units.
        size: usize,
    },
    /// A one-layer GRU of `size` units (PyTorch's gate order r, z, n); its state is `h`.
    Gru {
        /// Hidden units.
        size: usize,
    },
}

impl Core {
    /// The core of a `[model]` choice.
    pub fn of(kind: CoreKind, size: usize) -> Self {
        match kind {
            CoreKind::None => Core::None,
            CoreKind::Lstm => Core::Lstm { size },
            CoreKind::Gru => Core::Gru { size },
        }
    }

    /// Values of one core's state between steps (0: memoryless); an env carries one per core
    /// ([`StateLayout::dim`]).
    pub fn state_dim(&self) -> usize {
        match self {
            Core::None => 0,
            Core::Lstm { size } => 2 * size,
            Core::Gru { size } => *size,
        }
    }

    /// Hidden units (0: memoryless).
    pub fn size(&self) -> usize {
        match self {
            Core::None => 0,
            Core::Lstm { size } | Core::Gru { size } => *size,
        }
    }

    /// True for a recurrent core.
    pub fn is_recurrent(&self) -> bool {
        !matches!(self, Core::None)
    }

    /// Its name in configs and parameter names (`none`, `lstm`, `gru`).
    pub fn name(&self) -> &'static str {
        match self {
            Core::None => "none",
            Core::Lstm { .. } => "lstm",
            Core::Gru { .. } => "gru",
        }
    }
}

/// The recurrent state one env carries between steps: its core's state once (a shared trunk: one core feeds
/// both heads) or twice (separate trunks: the actor's core's state, then the critic's), each `[h, c]` for an LSTM
/// and `h` for a GRU.
#[derive(Debug, Clone, PartialEq)]
pub struct StateLayout {
    /// The core whose state is carried.
    pub core: Core,
    /// How many cores (1 shared, 2 separate; 0 memoryless).
    pub cores: usize,
}

impl StateLayout {
    /// The state of a model with `core` on a shared trunk or on separate ones.
    pub fn of(core: Core, shared_trunk: bool) -> Self {
        let cores = match (core.is_recurrent(), shared_trunk) {
            (false, _) => 0,
            (true, true) => 1,
            (true, false) => 2,
        };
        Self { core, cores }
    }

    /// Values of one env's state (0: memoryless).
    pub fn dim(&self) -> usize {
        self.cores * self.core.state_dim()
    }

    /// True for a recurrent model.
    pub fn is_recurrent(&self) -> bool {
        self.dim() > 0
    }

    /// True when value `i` of an env's state is an LSTM cell state (else a hidden state, bounded by tanh).
    pub fn is_cell(&self, i: usize) -> bool {
        matches!(self.core, Core::Lstm { .. }) && i % self.core.state_dim().max(1) >= self.core.size()
    }

    /// `lstm(64)`, `2 x gru(32)` or `none`.
    pub fn describe(&self) -> String {
        match (self.cores, &self.core) {
            (_, Core::None) | (0, _) => "none".to_string(),
            (1, core) => format!("{}({})", core.name(), core.size()),
            (n, core) => format!("{n} x {}({})", core.name(), core.size()),
        }
    }
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
    /// Orthogonal weights (gain √2 hidden, 0.01 policy head, 1 value head; a convolution's weight as the matrix
    /// `[out, in·k·k]`) and zero biases; `false`: PyTorch's `Linear` and `Conv2d` default (uniform in ±1/√fan_in).
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
    /// What uint8 observation values are multiplied by ([`Space::input_scale`]: 1/255 for images, 1 for 0/1
    /// planes; 1 and unused for float32 observations). Absent in specs written before it, which read as 1/255
    /// for uint8 (every uint8 space then was an image) and 1 for float32.
    #[serde(default = "one")]
    pub obs_scale: f32,
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

/// `1.0`, for serde defaults.
fn one() -> f32 {
    1.0
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
        let obs_shape = obs_space.shape();
        let (hidden_sizes, activation) = (cfg.hidden_sizes.clone(), cfg.activation);
        let encoder = match cfg.conv.is_empty() {
            true => Encoder::Mlp { hidden_sizes, activation },
            false => {
                let layout = match (cfg.image_layout, obs_shape.as_slice()) {
                    (LayoutChoice::Hwc, _) => ImageLayout::Hwc,
                    (LayoutChoice::Chw, _) => ImageLayout::Chw,
                    (LayoutChoice::Auto, [first, _, last]) if first < last => ImageLayout::Chw,
                    (LayoutChoice::Auto, _) => ImageLayout::Hwc,
                };
                Encoder::Conv { layers: cfg.conv.clone(), layout, hidden_sizes, activation }
            }
        };
        Self {
            format: SPEC_FORMAT,
            obs_dim: obs_space.flat_dim(),
            obs_shape,
            obs_dtype: obs_space.dtype(),
            obs_scale: obs_space.input_scale(),
            encoder,
            core: Core::of(cfg.core, cfg.core_size),
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
        if !(self.obs_scale.is_finite() && self.obs_scale > 0.0) {
            return invalid("obs_scale", &format!("{} is not a positive number", self.obs_scale));
        }
        if self.obs_shape.iter().product::<usize>() != self.obs_dim {
            return invalid(
                "obs_shape",
                &format!("{:?} does not hold obs_dim = {} values", self.obs_shape, self.obs_dim),
            );
        }
        let hidden_sizes = self.encoder.hidden_sizes();
        if hidden_sizes.is_empty() || hidden_sizes.contains(&0) {
            return invalid("encoder.hidden_sizes", "needs at least one layer, every width at least 1");
        }
        if let Encoder::Conv { layers, .. } = &self.encoder {
            if layers.is_empty() {
                return invalid("encoder.layers", "needs at least one convolution");
            }
            if layers.iter().any(|l| l.out_channels == 0 || l.kernel == 0 || l.stride == 0) {
                return invalid("encoder.layers", "out_channels, kernel and stride must each be at least 1");
            }
            self.conv_dims()?;
        }
        if self.core.is_recurrent() && self.core.size() == 0 {
            return invalid("core.size", "must be at least 1");
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
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        let scaled = value.get("obs_scale").is_some();
        let mut spec: Self = serde_json::from_value(value).map_err(|e| SpecError::Parse(e.to_string()))?;
        if spec.obs_shape.is_empty() {
            spec.obs_shape = vec![spec.obs_dim];
        }
        if !scaled && spec.obs_dtype == Dtype::Uint8 {
            spec.obs_scale = crate::obs::UINT8_SCALE;
        }
        spec.validate()?;
        Ok(spec)
    }

    /// The hidden activation of the encoder.
    pub fn activation(&self) -> Activation {
        self.encoder.activation()
    }

    /// The encoder's hidden linear layer widths.
    pub fn hidden_sizes(&self) -> &[usize] {
        self.encoder.hidden_sizes()
    }

    /// The recurrent state an env carries: one core's with a shared trunk, the actor's and the critic's with
    /// separate trunks.
    pub fn state_layout(&self) -> StateLayout {
        StateLayout::of(self.core.clone(), self.shared_trunk)
    }

    /// The image a conv encoder takes (`(H, W)` observations have one channel) and each convolution's output, in
    /// order; empty for an MLP encoder. Fails when the observation is not an image or a filter does not fit.
    pub fn conv_dims(&self) -> Result<Vec<ImageDims>, SpecError> {
        let Encoder::Conv { layers, layout, .. } = &self.encoder else {
            return Ok(Vec::new());
        };
        let input = match (self.obs_shape.as_slice(), layout) {
            ([h, w], _) => ImageDims { c: 1, h: *h, w: *w },
            ([h, w, c], ImageLayout::Hwc) | ([c, h, w], ImageLayout::Chw) => ImageDims { c: *c, h: *h, w: *w },
            (shape, _) => {
                return Err(SpecError::Invalid {
                    field: "obs_shape",
                    reason: format!("a conv encoder takes images of 2 or 3 axes, not {shape:?}"),
                });
            }
        };
        let mut dims = vec![input];
        for (i, layer) in layers.iter().enumerate() {
            let last = dims[dims.len() - 1];
            let (Some(h), Some(w)) = (layer.out_side(last.h), layer.out_side(last.w)) else {
                return Err(SpecError::Invalid {
                    field: "encoder.layers",
                    reason: format!(
                        "convolution {i} ({}x{} filter) does not fit its {}x{} input",
                        layer.kernel, layer.kernel, last.h, last.w
                    ),
                });
            };
            dims.push(ImageDims { c: layer.out_channels, h, w });
        }
        Ok(dims)
    }

    /// Checks that this spec (a snapshot's) takes the observations and produces the actions of `env` (the spec
    /// an actor or evaluator resolved for its env).
    pub fn check_env_of(&self, env: &ModelSpec) -> Result<(), SpecError> {
        // A conv encoder reads the image's axes; an MLP only the flattened width.
        let conv = matches!(self.encoder, Encoder::Conv { .. });
        if self.obs_dim != env.obs_dim
            || self.obs_dtype != env.obs_dtype
            || self.head != env.head
            || (conv && self.obs_shape != env.obs_shape)
        {
            let side = |s: &ModelSpec| {
                format!("{:?} {} observations with a {:?} head", s.obs_shape, s.obs_dtype.name(), s.head)
            };
            return Err(SpecError::Env { model: side(self), env: side(env) });
        }
        Ok(())
    }

    /// Short human form, for errors and logs, e.g. `mlp[64, 64] tanh, core none, categorical(2), separate trunks`
    /// or `conv[16x3/1] hwc, mlp[128] relu, ...`.
    pub fn describe(&self) -> String {
        let (hidden_sizes, activation) = (self.hidden_sizes(), self.activation());
        let conv = match &self.encoder {
            Encoder::Mlp { .. } => String::new(),
            Encoder::Conv { layers, layout, .. } => {
                let layers: Vec<String> =
                    layers.iter().map(|l| format!("{}x{}/{}", l.out_channels, l.kernel, l.stride)).collect();
                format!("conv[{}] {}, ", layers.join(", "), layout.name())
            }
        };
        let core = match self.core {
            Core::None => "none".to_string(),
            Core::Lstm { size } | Core::Gru { size } => format!("{}({size})", self.core.name()),
        };
        let head = match &self.head {
            Head::Categorical { n } => format!("categorical({n})"),
            Head::MultiCategorical { nvec } => format!("multi_categorical({nvec:?})"),
            Head::Gaussian { dim } => format!("gaussian({dim})"),
        };
        let trunks = if self.shared_trunk { "a shared trunk" } else { "separate trunks" };
        format!("{conv}mlp{hidden_sizes:?} {}, core {core}, {head}, {trunks}", activation.name())
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
            r#"{"format":1,"obs_dim":4,"obs_shape":[4],"obs_dtype":"float32","obs_scale":1.0,"encoder":{"kind":"mlp","hidden_sizes":[64,64],"activation":"tanh"},"core":{"kind":"none"},"head":{"kind":"categorical","n":2},"shared_trunk":false,"init":{"orthogonal":true,"log_std":0.0}}"#
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
        assert_eq!(spec.obs_scale, crate::obs::UINT8_SCALE, "0..=255 images reach [0, 1]");
        let planes = Space::shaped(vec![0.0], vec![1.0], vec![10, 10, 4], Dtype::Uint8).unwrap();
        let spec = ModelSpec::resolve(&ModelConfig::default(), &planes, &Space::Discrete { n: 4 }).unwrap();
        assert_eq!(spec.obs_scale, 1.0, "0/1 planes stay 0/1");
        let json = spec.to_json().replace(r#""obs_scale":1.0,"#, "");
        assert_eq!(ModelSpec::from_json(&json).unwrap().obs_scale, crate::obs::UINT8_SCALE, "absent: an image");
        let json =
            ModelSpec::resolve(&ModelConfig::default(), &vector(4), &Space::Discrete { n: 2 }).unwrap().to_json();
        let old = json.replace(r#""obs_shape":[4],"obs_dtype":"float32","obs_scale":1.0,"#, "");
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

    #[test]
    fn conv_specs_resolve_their_layout_and_name_what_does_not_fit() {
        let image = |shape: &[usize]| Space::shaped(vec![0.0], vec![255.0], shape.to_vec(), Dtype::Uint8).unwrap();
        let (conv, hidden_sizes, activation) = Preset::MinatarCnn.layers();
        let cfg = ModelConfig { conv, hidden_sizes, activation, ..ModelConfig::default() };
        let act = Space::Discrete { n: 6 };
        let layout = |shape: &[usize]| match ModelSpec::resolve(&cfg, &image(shape), &act).unwrap().encoder {
            Encoder::Conv { layout, .. } => layout,
            Encoder::Mlp { .. } => panic!("not a conv encoder"),
        };
        // Channels last unless the first axis is the shorter.
        assert_eq!(layout(&[10, 10, 4]), ImageLayout::Hwc);
        assert_eq!(layout(&[10, 10, 10]), ImageLayout::Hwc);
        assert_eq!(layout(&[4, 10, 10]), ImageLayout::Chw);
        let spec = ModelSpec::resolve(&cfg, &image(&[10, 10, 4]), &act).unwrap();
        let dims = spec.conv_dims().unwrap();
        assert_eq!(dims, [ImageDims { c: 4, h: 10, w: 10 }, ImageDims { c: 16, h: 8, w: 8 }]);
        assert_eq!(spec.describe(), "conv[16x3/1] hwc, mlp[128] relu, core none, categorical(6), separate trunks");
        assert_eq!(ModelSpec::from_json(&spec.to_json()).unwrap(), spec);
        assert!(spec.to_json().contains(
            r#""encoder":{"kind":"conv","layers":[{"out_channels":16,"kernel":3,"stride":1}],"layout":"hwc","hidden_sizes":[128],"activation":"relu"}"#
        ));
        let chw = ModelConfig { image_layout: LayoutChoice::Chw, ..cfg.clone() };
        let spec = ModelSpec::resolve(&chw, &image(&[10, 10, 4]), &act).unwrap();
        assert_eq!(spec.conv_dims().unwrap()[0], ImageDims { c: 10, h: 10, w: 4 }, "the config's layout wins");
        // A filter larger than its input, a vector observation: errors that name the field.
        let err = ModelSpec::resolve(&cfg, &image(&[2, 2, 1]), &act).unwrap_err();
        assert!(
            matches!(&err, SpecError::Invalid { field: "encoder.layers", reason } if reason.contains("2x2")),
            "{err}"
        );
        let err = ModelSpec::resolve(&cfg, &Space::unbounded(100), &act).unwrap_err();
        assert!(matches!(err, SpecError::Invalid { field: "obs_shape", .. }), "{err}");
        let zero = ModelConfig { conv: vec![ConvLayer { out_channels: 0, kernel: 3, stride: 1 }], ..cfg.clone() };
        assert!(matches!(
            ModelSpec::resolve(&zero, &image(&[10, 10, 4]), &act),
            Err(SpecError::Invalid { field: "encoder.layers", .. })
        ));
        // The image's axes matter to a conv spec, only the width to an MLP.
        let a = ModelSpec::resolve(&cfg, &image(&[10, 10, 4]), &act).unwrap();
        let b = ModelSpec::resolve(&cfg, &image(&[10, 20, 2]), &act).unwrap();
        assert!(matches!(a.check_env_of(&b), Err(SpecError::Env { .. })));
        let mlp = ModelSpec::resolve(&ModelConfig::default(), &image(&[10, 10, 4]), &act).unwrap();
        let flat = ModelSpec::resolve(&ModelConfig::default(), &image(&[10, 20, 2]), &act).unwrap();
        assert!(mlp.check_env_of(&flat).is_ok());
    }

    #[test]
    fn presets_stand_for_their_layers_and_refuse_company() {
        let table = |text: &str| toml::from_str::<ModelConfig>(text);
        let nature = table("preset = \"nature_cnn\"\nshared_trunk = true").unwrap();
        assert_eq!(nature.hidden_sizes, [512]);
        assert_eq!(nature.activation, Activation::Relu);
        assert_eq!(
            nature.conv.iter().map(|l| (l.out_channels, l.kernel, l.stride)).collect::<Vec<_>>(),
            [(32, 8, 4), (64, 4, 2), (64, 3, 1)]
        );
        assert!(nature.shared_trunk);
        let err = table("preset = \"minatar_cnn\"\nhidden_sizes = [64]").unwrap_err().to_string();
        assert!(err.contains("sets conv, hidden_sizes and activation"), "{err}");
        let written = table("conv = [{ out_channels = 16, kernel = 3, stride = 1 }]\nhidden_sizes = [128]").unwrap();
        assert_eq!(written.conv, Preset::MinatarCnn.layers().0);
        assert_eq!(table("").unwrap(), ModelConfig::default());
        assert!(table("preset = \"resnet\"").is_err());
        assert!(table("hidden = [64]").is_err(), "unknown keys are refused");
    }

    #[test]
    fn recurrent_cores_travel_in_the_spec_with_their_state_layout() {
        let table = |text: &str| toml::from_str::<ModelConfig>(text).unwrap();
        let (obs, act) = (Space::unbounded(2), Space::Discrete { n: 2 });
        let lstm = table("core = \"lstm\"\ncore_size = 64\nshared_trunk = true\nhidden_sizes = [32]");
        let spec = ModelSpec::resolve(&lstm, &obs, &act).unwrap();
        assert_eq!(spec.core, Core::Lstm { size: 64 });
        assert_eq!((spec.core.state_dim(), Core::Gru { size: 64 }.state_dim()), (128, 64));
        assert_eq!(spec.describe(), "mlp[32] tanh, core lstm(64), categorical(2), a shared trunk");
        assert!(spec.to_json().contains(r#""core":{"kind":"lstm","size":64}"#), "{}", spec.to_json());
        assert_eq!(ModelSpec::from_json(&spec.to_json()).unwrap(), spec);
        let layout = spec.state_layout();
        assert_eq!((layout.dim(), layout.describe()), (128, "lstm(64)".to_string()));
        assert!(!layout.is_cell(63) && layout.is_cell(64) && layout.is_cell(127));
        // Separate trunks carry the actor's core's state, then the critic's.
        let separate = ModelSpec::resolve(&table("core = \"lstm\"\ncore_size = 4"), &obs, &act).unwrap();
        let layout = separate.state_layout();
        assert_eq!((layout.dim(), layout.describe()), (16, "2 x lstm(4)".to_string()));
        let cells: Vec<usize> = (0..16).filter(|&i| layout.is_cell(i)).collect();
        assert_eq!(cells, [4, 5, 6, 7, 12, 13, 14, 15]);
        let gru = ModelSpec::resolve(&table("core = \"gru\"\ncore_size = 3"), &obs, &act).unwrap().state_layout();
        assert_eq!((gru.dim(), (0..6).any(|i| gru.is_cell(i))), (6, false));
        assert_eq!(ModelSpec::resolve(&table(""), &obs, &act).unwrap().state_layout().dim(), 0);
        let empty = table("core = \"gru\"\ncore_size = 0\nshared_trunk = true");
        assert!(ModelSpec::resolve(&empty, &obs, &act).is_err());
        assert_eq!(table("").core, CoreKind::None);
    }
}
