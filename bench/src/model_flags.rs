//! The model and space flags that `act` and `update` share: a conv preset by name and an image observation shape.

use common::env::{Dtype, Space};
use common::model::{ModelConfig, Preset};

/// Sets `model`'s convolutions, hidden sizes and activation from the preset named `name` (`nature_cnn` or
/// `minatar_cnn`).
pub fn apply_preset(model: &mut ModelConfig, name: &str) -> anyhow::Result<()> {
    let preset: Preset = serde_json::from_value(serde_json::json!(name))
        .map_err(|_| anyhow::anyhow!("unknown preset {name:?} (nature_cnn or minatar_cnn)"))?;
    (model.conv, model.hidden_sizes, model.activation) = preset.layers();
    Ok(())
}

/// An image of `shape` (uint8, 0..=255), or `dim` unbounded floats when `shape` is empty.
pub fn observation_space(shape: &[usize], dim: usize) -> anyhow::Result<Space> {
    let space = match shape.is_empty() {
        true => Space::unbounded(dim),
        false => Space::shaped(vec![0.0], vec![255.0], shape.to_vec(), Dtype::Uint8)?,
    };
    anyhow::ensure!(space.flat_dim() > 0, "the observation must have at least one value");
    Ok(space)
}
