//! The run directory: `config.toml` (resolved config), `progress.csv`, `model.safetensors`.

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A created run directory.
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates `runs_dir/<run_name>` and writes the resolved config into it.
    pub fn create(cfg: &TrainConfig) -> Result<Self> {
        let name = cfg.run_name.clone().unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            format!("{}-seed{}-{now}", cfg.env, cfg.seed)
        });
        let path = cfg.runs_dir.join(name);
        std::fs::create_dir_all(&path).map_err(Error::io(&path))?;
        let text = toml::to_string(cfg).map_err(|e| Error::Internal(format!("cannot serialise config: {e}")))?;
        write_atomic(&path.join("config.toml"), text.as_bytes())?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the policy weights to `model.safetensors`.
    pub fn write_model(&self, weights: &[u8]) -> Result<()> {
        write_atomic(&self.path.join("model.safetensors"), weights)
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(Error::io(&tmp))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))?;
    }
    Ok(())
}
