//! Checkpoints: one safetensors file per checkpoint with the model parameters, Adam's moments
//! (`optim.m.<name>`, `optim.v.<name>`), observation statistics, and in its metadata the trainer state (JSON),
//! the resolved config (TOML) and a CRC-32 of the tensor data. Written atomically; the newest `keep` are kept.

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::optim::AdamState;
use crate::run_dir::write_atomic;
use crate::trainer::{Trainer, TrainerState};
use candle_core::Device;
use common::policy::{decode_weights, encode_tensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const FORMAT: &str = "proxima-checkpoint-v1";
const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".safetensors";

/// Writes and finds checkpoints in one directory.
pub struct Checkpointer {
    dir: PathBuf,
    keep: usize,
}

impl Checkpointer {
    /// Uses (and creates) `dir`, keeping the newest `keep` checkpoints (at least 1).
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        Ok(Self { dir, keep: keep.max(1) })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Saves the trainer as `checkpoint-<version>.safetensors` and removes all but the newest `keep`.
    pub fn save(&self, trainer: &Trainer) -> Result<PathBuf> {
        let path = self.dir.join(format!("{PREFIX}{:012}{SUFFIX}", trainer.version()));
        write_atomic(&path, &encode(trainer)?)?;
        let all = self.list()?;
        for old in all.iter().take(all.len().saturating_sub(self.keep)) {
            std::fs::remove_file(old).map_err(Error::io(old))?;
        }
        tracing::info!(path = %path.display(), version = trainer.version(), "checkpoint written");
        Ok(path)
    }

    /// Checkpoint files, oldest first.
    pub fn list(&self) -> Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(Error::io(&self.dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// The newest checkpoint, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.list()?.pop())
    }
}

fn encode(trainer: &Trainer) -> Result<Vec<u8>> {
    let mut tensors = trainer.params()?;
    let obs_norm = trainer.obs_normalizer();
    for (name, m, v) in trainer.optimizer_state()?.moments {
        tensors.push((format!("optim.m.{name}"), m));
        tensors.push((format!("optim.v.{name}"), v));
    }
    let state = serde_json::to_string(&trainer.state()).map_err(|e| Error::Internal(e.to_string()))?;
    let config = toml::to_string(trainer.config()).map_err(|e| Error::Internal(e.to_string()))?;
    let mut meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("state".to_string(), state),
        ("config".to_string(), config),
    ]);
    // The CRC covers the tensor data, which does not change when the header grows by the CRC entry.
    let draft = encode_tensors(&tensors, obs_norm, meta.clone())?;
    meta.insert("crc32".into(), data_crc(&draft).map_err(Error::Internal)?.to_string());
    Ok(encode_tensors(&tensors, obs_norm, meta)?)
}

/// CRC-32 of the data section of a safetensors file.
fn data_crc(bytes: &[u8]) -> std::result::Result<u32, String> {
    let header: [u8; 8] = bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or("file is shorter than its header")?;
    let start = usize::try_from(u64::from_le_bytes(header)).map_err(|_| "bad header length")?.saturating_add(8);
    let data = bytes.get(start..).ok_or("header length exceeds the file")?;
    Ok(crc32fast::hash(data))
}

/// Loads a checkpoint and rebuilds the trainer for `cfg`. Corrupt files and checkpoints of another env or model
/// shape are errors that name the file and the problem.
pub fn load(path: &Path, cfg: &TrainConfig) -> Result<Trainer> {
    let fail = |reason: String| Error::Checkpoint { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| fail(format!("not a safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(fail(format!("format is {:?}, expected {FORMAT}", meta.get("format"))));
    }
    let want_crc = meta.get("crc32").and_then(|c| c.parse::<u32>().ok()).ok_or_else(|| fail("no crc32".into()))?;
    let got_crc = data_crc(&bytes).map_err(&fail)?;
    if want_crc != got_crc {
        return Err(fail(format!("corrupt: data CRC-32 is {got_crc}, header says {want_crc}")));
    }
    let state: TrainerState = meta
        .get("state")
        .ok_or_else(|| fail("no trainer state".into()))
        .and_then(|s| serde_json::from_str(s).map_err(|e| fail(format!("bad trainer state: {e}"))))?;
    let decoded = decode_weights(&bytes, &Device::Cpu).map_err(|e| fail(e.to_string()))?;
    let mut params = decoded.params;
    let mut moments = Vec::new();
    let names: Vec<String> = params.keys().filter(|k| !k.starts_with("optim.")).cloned().collect();
    for name in names {
        let m = params.remove(&format!("optim.m.{name}"));
        let v = params.remove(&format!("optim.v.{name}"));
        if let (Some(m), Some(v)) = (m, v) {
            moments.push((name, m, v));
        }
    }
    let adam = AdamState { step: state.adam_step, moments };
    Trainer::restore(cfg, state, &params, adam, decoded.obs_norm)
        .map_err(|reason| fail(format!("does not fit: {reason}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use actor::{Sampler, run_sampler};
    use common::policy_cell::PolicyCell;
    use std::sync::atomic::AtomicBool;

    /// A trainer after two real updates on Pendulum (observation and reward normalisation on).
    fn trained(dir: &Path) -> (TrainConfig, Trainer) {
        let overrides = [
            "env=\"Pendulum-v1\"".to_string(),
            "normalize.observations=true".into(),
            "normalize.rewards=true".into(),
            "actors.num_envs=2".into(),
            "actors.rollout_steps=64".into(),
            "ppo.minibatch_size=64".into(),
            format!("runs_dir={:?}", dir.display().to_string()),
        ];
        let cfg = TrainConfig::load(None, &overrides).unwrap();
        let mut trainer = Trainer::new(&cfg).unwrap();
        let (obs_dim, space) = trainer.spaces();
        let (obs_dim, space) = (obs_dim, space.clone());
        for _ in 0..2 {
            let cell = PolicyCell::new(trainer.snapshot().unwrap());
            let sampler = Sampler::new(&cfg.env, &cfg.actors.sampler(), 3).unwrap();
            let (tx, rx) = crossbeam_channel::bounded(1);
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| run_sampler(sampler, &cfg.model, 0, &cell, &tx, &stop));
                let r = rx.recv().unwrap();
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                drop(rx);
                assert_eq!(r.obs.len(), 2 * 64 * obs_dim);
                assert!(!space.is_discrete());
                trainer.update(vec![r]).unwrap();
            });
        }
        (cfg, trainer)
    }

    #[test]
    fn round_trip_restores_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, trainer) = trained(dir.path());
        let ck = Checkpointer::new(dir.path().join("ck"), 2).unwrap();
        let path = ck.save(&trainer).unwrap();
        let restored = load(&path, &cfg).unwrap();
        assert_eq!(restored.state(), trainer.state());
        let (a, b) = (restored.weights().unwrap(), trainer.weights().unwrap());
        let (a, b) = (decode_weights(&a, &Device::Cpu).unwrap(), decode_weights(&b, &Device::Cpu).unwrap());
        assert_eq!(a.obs_norm, b.obs_norm);
        assert!(a.obs_norm.is_some());
        for (name, t) in &a.params {
            let same = t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == b.params[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(same, "{name} differs after restore");
        }
        let (a, b) = (restored.optimizer_state().unwrap(), trainer.optimizer_state().unwrap());
        assert_eq!(a.step, b.step);
        for ((na, ma, va), (nb, mb, vb)) in a.moments.iter().zip(&b.moments) {
            assert_eq!(na, nb);
            assert_eq!(
                ma.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                mb.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
            assert_eq!(
                va.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                vb.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
    }

    #[test]
    fn keeps_the_newest_and_rejects_corrupt_or_mismatched_files() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, trainer) = trained(dir.path());
        let ck = Checkpointer::new(dir.path().join("ck"), 1).unwrap();
        let path = ck.save(&trainer).unwrap();
        assert_eq!(ck.list().unwrap(), vec![path.clone()]);

        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        let corrupt = dir.path().join("corrupt.safetensors");
        std::fs::write(&corrupt, &bytes).unwrap();
        let err = load(&corrupt, &cfg).err().expect("corrupt file must not load").to_string();
        assert!(err.contains("corrupt"), "{err}");

        std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
        assert!(load(&corrupt, &cfg).is_err());

        let other_env = TrainConfig { env: "CartPole-v1".into(), ..cfg.clone() };
        let err = load(&path, &other_env).err().expect("env mismatch").to_string();
        assert!(err.contains("Pendulum-v1") && err.contains("CartPole-v1"), "{err}");

        let mut bigger = cfg.clone();
        bigger.model.hidden_sizes = vec![32, 32];
        let err = load(&path, &bigger).err().expect("shape mismatch").to_string();
        assert!(err.contains("shape"), "{err}");
    }
}
