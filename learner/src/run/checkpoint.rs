//! Checkpoints: one safetensors file per checkpoint with the model parameters, Adam's moments
//! (`optim.m.<name>`, `optim.v.<name>`), observation statistics, and in its metadata the trainer state (JSON),
//! the resolved config (TOML) and a CRC-32 of the tensor data. Written atomically; the newest `keep` are kept.
//! A trainer holding NaN or infinity is never written, and a checkpoint holding one is never loaded.

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::run::dir::{FailureLog, write_atomic};
use crate::update::optim::AdamState;
use crate::update::trainer::{Trainer, TrainerState};
use common::codec::{self, CodecError};
use common::normalize::ObsNormalizer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

const FORMAT: &str = "proxima-checkpoint-v1";
const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".safetensors";
/// Name prefix of Adam's first moments.
const OPTIM_M: &str = "optim.m.";
/// Name prefix of Adam's second moments.
const OPTIM_V: &str = "optim.v.";

/// Writes and finds checkpoints in one directory.
pub struct Checkpointer {
    dir: PathBuf,
    keep: usize,
    /// Failures of periodic checkpoints, for the log.
    failures: Mutex<FailureLog>,
}

impl Checkpointer {
    /// Uses (and creates) `dir`, keeping the newest `keep` checkpoints (at least 1). Removes the temporary files
    /// of checkpoint writes a crash interrupted.
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        for tmp in named(&dir, ".tmp")? {
            std::fs::remove_file(&tmp).map_err(Error::io(&tmp))?;
            tracing::warn!(path = %tmp.display(), "removed the temporary file of an interrupted checkpoint write");
        }
        Ok(Self { dir, keep: keep.max(1), failures: Mutex::new(FailureLog::new("periodic checkpoint")) })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Saves the trainer as `checkpoint-<version>.safetensors`, then removes the oldest others so that `keep`
    /// remain. Refuses (an error naming them) a trainer whose parameters, optimiser moments or statistics hold NaN
    /// or infinity; on any failure nothing is written or removed.
    pub fn save(&self, trainer: &Trainer) -> Result<PathBuf> {
        let path = self.dir.join(format!("{PREFIX}{:012}{SUFFIX}", trainer.version()));
        write_atomic(&path, &encode(trainer, &path)?)?;
        // Never the one just written, even when files of higher versions (refused at resume) sort after it.
        let others: Vec<PathBuf> = self.list()?.into_iter().filter(|p| *p != path).collect();
        for old in others.iter().take((others.len() + 1).saturating_sub(self.keep)) {
            std::fs::remove_file(old).map_err(Error::io(old))?;
        }
        tracing::info!(path = %path.display(), version = trainer.version(), "checkpoint written");
        Ok(path)
    }

    /// [`Checkpointer::save`] for a periodic checkpoint, whose failure (disk full, a non-finite trainer) must not
    /// stop training: it is counted in `proxima_learner_checkpoint_failures_total` and logged (the first failure,
    /// each different error, otherwise at most once a minute), and the earlier checkpoints stay as they were.
    pub fn save_periodic(&self, trainer: &Trainer) {
        let saved = self.save(trainer);
        let mut log = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match saved {
            Ok(_) => log.succeeded(),
            Err(e) => {
                metrics::counter!(common::metrics::CHECKPOINT_FAILURES).increment(1);
                log.failed(&e);
            }
        }
    }

    /// Checkpoint files, oldest first.
    pub fn list(&self) -> Result<Vec<PathBuf>> {
        named(&self.dir, SUFFIX)
    }
}

/// Whether `dir` holds a checkpoint file (one that may or may not load); false when it cannot be read.
pub fn any_in(dir: &Path) -> bool {
    named(dir, SUFFIX).is_ok_and(|files| !files.is_empty())
}

/// The files in `dir` named `checkpoint-*<suffix>`, sorted by name.
fn named(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(suffix))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The checkpoint bytes of `trainer`, to be written to `path`; an error if anything in it is not finite.
fn encode(trainer: &Trainer, path: &Path) -> Result<Vec<u8>> {
    let (net, params, adam) = (trainer.net(), trainer.params()?, trainer.optimizer_state()?);
    let tensors = || net.named("", &params).chain(net.named(OPTIM_M, &adam.m)).chain(net.named(OPTIM_V, &adam.v));
    let obs_norm = trainer.obs_normalizer();
    let state = trainer.state();
    let bad = non_finite(tensors().map(|(name, _, values)| (name, values)), obs_norm, &state);
    if !bad.is_empty() {
        let reason = format!("not written: the trainer holds non-finite values: {}", bad.join(", "));
        return Err(Error::Checkpoint { path: path.to_path_buf(), reason });
    }
    let state = serde_json::to_string(&state).map_err(|e| Error::Internal(e.to_string()))?;
    let config = toml::to_string(trainer.config()).map_err(|e| Error::Internal(e.to_string()))?;
    let mut meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("state".to_string(), state),
        ("config".to_string(), config),
        (common::model::MODEL_KEY.to_string(), net.spec().to_json()),
    ]);
    // The CRC covers the tensor data, which does not change when the header grows by the CRC entry.
    let draft = codec::encode(tensors(), obs_norm, meta.clone())?;
    meta.insert("crc32".into(), data_crc(&draft).map_err(Error::Internal)?.to_string());
    Ok(codec::encode(tensors(), obs_norm, meta)?)
}

/// Names of the tensors (as named in a checkpoint) and trainer statistics that hold NaN or infinity, sorted;
/// empty when everything is finite. Used before writing and after reading a checkpoint.
fn non_finite<'a>(
    tensors: impl IntoIterator<Item = (String, &'a [f32])>,
    obs_norm: Option<&ObsNormalizer>,
    state: &TrainerState,
) -> Vec<String> {
    let mut bad: Vec<String> =
        tensors.into_iter().filter(|(_, xs)| !xs.iter().all(|x| x.is_finite())).map(|(name, _)| name).collect();
    let recent: Vec<f64> = state.recent.iter().map(|(ret, _)| *ret).collect();
    let mut stats = vec![("state.beta", vec![state.beta]), ("state.recent", recent)];
    if let Some(n) = obs_norm {
        let rms = &n.rms;
        stats.extend([("obs_rms.mean", rms.mean.clone()), ("obs_rms.var", rms.var.clone())]);
        stats.push(("obs_rms.count", vec![rms.count]));
    }
    if let Some(rms) = &state.reward_rms {
        stats.extend([("state.reward_rms.mean", rms.mean.clone()), ("state.reward_rms.var", rms.var.clone())]);
        stats.push(("state.reward_rms.count", vec![rms.count]));
    }
    bad.extend(stats.into_iter().filter(|(_, xs)| !xs.iter().all(|x| x.is_finite())).map(|(n, _)| n.to_string()));
    bad.sort();
    bad
}

/// CRC-32 of the data section of a safetensors file.
fn data_crc(bytes: &[u8]) -> std::result::Result<u32, String> {
    let header: [u8; 8] = bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or("file is shorter than its header")?;
    let start = usize::try_from(u64::from_le_bytes(header)).map_err(|_| "bad header length")?.saturating_add(8);
    let data = bytes.get(start..).ok_or("header length exceeds the file")?;
    Ok(crc32fast::hash(data))
}

/// Loads a checkpoint and rebuilds the trainer for `cfg`. Corrupt files, files holding NaN or infinity, and
/// checkpoints of another env or model shape are errors that name the file and the problem.
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
    let decoded = codec::decode(&bytes).map_err(|e| match e {
        CodecError::NonFinite(what) => fail(format!("holds non-finite values: {what}")),
        e => fail(e.to_string()),
    })?;
    let tensors = decoded.tensors.iter().map(|(name, t)| (name.clone(), t.values.as_slice()));
    let bad = non_finite(tensors, decoded.obs_norm.as_ref(), &state);
    if !bad.is_empty() {
        return Err(fail(format!("holds non-finite values: {}", bad.join(", "))));
    }
    let mismatch = |reason: &dyn std::fmt::Display| Error::CheckpointMismatch {
        path: path.to_path_buf(),
        reason: format!("does not fit: {reason}"),
    };
    state.check_env(cfg).map_err(|e| mismatch(&e))?;
    let mut trainer = Trainer::new(cfg)?;
    let net = trainer.net();
    // The network itself (checkpoints written before the spec was stored are checked by their tensors only): a
    // model whose tensors happen to fit, such as the heads of a recurrent model without its core, is refused.
    if let Some(json) = meta.get(common::model::MODEL_KEY) {
        let saved = common::model::ModelSpec::from_json(json).map_err(|e| fail(e.to_string()))?;
        let spec = net.spec();
        let same = (&saved.encoder, &saved.core, &saved.head, saved.shared_trunk)
            == (&spec.encoder, &spec.core, &spec.head, spec.shared_trunk);
        if !same {
            let reason = format!("its model is {}, the config's is {}", saved.describe(), spec.describe());
            return Err(mismatch(&reason));
        }
    }
    let flat = |prefix: &str| net.flatten(&decoded.tensors, prefix).map_err(|e| mismatch(&e));
    let (params, m, v) = (flat("")?, flat(OPTIM_M)?, flat(OPTIM_V)?);
    let adam = AdamState { step: state.adam_step, m, v };
    trainer.restore(state, &params, adam, decoded.obs_norm).map_err(|e| mismatch(&e))?;
    Ok(trainer)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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
            let r = crate::test_support::collect(&trainer, &mut crate::test_support::sampler(&cfg, 3));
            assert_eq!(r.obs.len(), 2 * 64 * obs_dim);
            assert!(!space.is_discrete());
            trainer.update(vec![r]).unwrap();
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
        let (a, b) = (codec::decode(&a).unwrap(), codec::decode(&b).unwrap());
        assert_eq!(a.obs_norm, b.obs_norm);
        assert!(a.obs_norm.is_some());
        assert_eq!(restored.params().unwrap(), trainer.params().unwrap());
        assert_eq!(restored.optimizer_state().unwrap(), trainer.optimizer_state().unwrap());
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

        let other_env = TrainConfig { env: crate::config::EnvConfig::builtin("CartPole-v1"), ..cfg.clone() };
        let err = load(&path, &other_env).err().expect("env mismatch").to_string();
        assert!(err.contains("Pendulum-v1") && err.contains("CartPole-v1"), "{err}");

        let mut bigger = cfg.clone();
        bigger.model.hidden_sizes = vec![32, 32];
        let err = load(&path, &bigger).err().expect("shape mismatch").to_string();
        assert!(err.contains("its model is mlp[64, 64]") && err.contains("the config's is mlp[32, 32]"), "{err}");
        // A model whose tensors would partly fit (a core added) is refused by its spec, not loaded half.
        let mut recurrent = cfg.clone();
        (recurrent.model.shared_trunk, recurrent.model.core) = (true, common::model::CoreKind::Gru);
        let err = load(&path, &recurrent).err().expect("model mismatch").to_string();
        assert!(err.contains("core gru(128)"), "{err}");
    }

    /// The checkpoint at `path` rewritten with a NaN in tensor `poison` (CRC fixed, so only the values are wrong),
    /// as `checkpoint-<version>.safetensors` in the same directory.
    fn poisoned_copy(path: &Path, poison: &str, version: u64) -> PathBuf {
        use safetensors::tensor::TensorView;
        let bytes = std::fs::read(path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut owned: Vec<_> =
            st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
        let (_, _, _, data) = owned.iter_mut().find(|t| t.0 == poison).expect("tensor to poison");
        data[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
        let serialize = |meta: &HashMap<String, String>| {
            let views = owned.iter().map(|(n, d, s, b)| (n.as_str(), TensorView::new(*d, s.clone(), b).unwrap()));
            safetensors::serialize(views, Some(meta.clone())).unwrap()
        };
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        meta.insert("crc32".into(), data_crc(&serialize(&meta)).unwrap().to_string());
        let out = path.with_file_name(format!("{PREFIX}{version:012}{SUFFIX}"));
        std::fs::write(&out, serialize(&meta)).unwrap();
        out
    }

    #[test]
    fn non_finite_values_are_neither_written_nor_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, trainer) = trained(dir.path());
        let ck = Checkpointer::new(dir.path().join("ck"), 3).unwrap();
        let good = ck.save(&trainer).unwrap();

        // A NaN in an Adam moment (valid CRC): refused, naming the tensor.
        let bad = poisoned_copy(&good, "optim.v.critic.2.weight", 7);
        let err = load(&bad, &cfg).err().expect("a NaN moment must not load").to_string();
        assert!(err.contains("non-finite") && err.contains("optim.v.critic.2.weight"), "{err}");
        std::fs::remove_file(&bad).unwrap();

        // A trainer with a NaN parameter, or NaN observation statistics, is not written; nothing else changes.
        let restore = |state: TrainerState, params: &[f32], obs: Option<ObsNormalizer>| {
            let mut t = Trainer::new(&cfg).unwrap();
            t.restore(state, params, trainer.optimizer_state().unwrap(), obs).unwrap();
            t
        };
        let mut params = trainer.params().unwrap();
        let first = trainer.net().entries().iter().find(|e| e.name == "actor.0.weight").unwrap().offset;
        params[first] = f32::NAN;
        let mut state = trainer.state();
        state.version += 1;
        let obs = trainer.obs_normalizer().cloned();
        let nan_params = restore(state.clone(), &params, obs.clone());
        let err = ck.save(&nan_params).expect_err("NaN params must not be written").to_string();
        assert!(err.contains("non-finite values: actor.0.weight"), "{err}");

        let mut obs = obs.unwrap();
        obs.rms.var[0] = f64::INFINITY;
        let params = trainer.params().unwrap();
        let inf_stats = restore(state.clone(), &params, Some(obs));
        let err = ck.save(&inf_stats).expect_err("infinite statistics must not be written").to_string();
        assert!(err.contains("non-finite values: obs_rms.var"), "{err}");

        // JSON would write a NaN state number as null, a checkpoint that could never be loaded again.
        let nan_beta = TrainerState { beta: f64::NAN, ..state };
        let nan_beta = restore(nan_beta, &params, trainer.obs_normalizer().cloned());
        let err = ck.save(&nan_beta).expect_err("a NaN state must not be written").to_string();
        assert!(err.contains("non-finite values: state.beta"), "{err}");

        let names: Vec<String> =
            std::fs::read_dir(ck.dir()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names, vec![good.file_name().unwrap().to_string_lossy().to_string()]);

        // The temporary file of a write a crash interrupted is removed when the directory is next used.
        let stale = ck.dir().join(format!("{PREFIX}{:012}.tmp", 9));
        std::fs::write(&stale, b"half a checkpoint").unwrap();
        Checkpointer::new(ck.dir(), 3).unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn resume_falls_back_to_the_newest_checkpoint_that_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, trainer) = trained(dir.path());
        let ck = Checkpointer::new(dir.path().join("ck"), 1).unwrap();
        let good = ck.save(&trainer).unwrap();
        let v = trainer.version();
        poisoned_copy(&good, "actor.2.bias", v + 1);
        let bytes = std::fs::read(&good).unwrap();
        let truncated = ck.dir().join(format!("{PREFIX}{:012}{SUFFIX}", v + 2));
        std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();

        let resumed = crate::session::initial_trainer(&cfg, &ck, true).unwrap();
        assert_eq!(resumed.state(), trainer.state());
        let err = crate::session::initial_trainer(&cfg, &ck, false).err().expect("checkpoints without --resume");
        assert!(err.to_string().contains("--resume"), "{err}");

        // Saving after the fall-back never removes the checkpoint just written, though newer names sort after it.
        assert_eq!(ck.save(&resumed).unwrap(), good);
        assert_eq!(ck.list().unwrap(), vec![good.clone()]);

        // None loads: the error names the newest and gives every reason.
        let nan = poisoned_copy(&good, "actor.2.bias", v + 1);
        std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
        std::fs::remove_file(&good).unwrap();
        let err = crate::session::initial_trainer(&cfg, &ck, true).err().expect("nothing loads").to_string();
        assert!(err.contains(&truncated.display().to_string()), "{err}");
        assert!(err.contains("non-finite") && err.contains(&nan.display().to_string()), "{err}");
        assert!(err.contains("2 checkpoints"), "{err}");
    }

    /// A sound checkpoint of another model is not passed over for an older one (that would fork the run's
    /// history): resuming stops with an error naming the mismatch.
    #[test]
    fn resume_stops_at_a_checkpoint_of_another_model() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, trainer) = trained(dir.path());
        let ck = Checkpointer::new(dir.path().join("ck"), 3).unwrap();
        ck.save(&trainer).unwrap();
        let mut bigger = cfg.clone();
        bigger.model.hidden_sizes = vec![32, 32];
        let err = crate::session::initial_trainer(&bigger, &ck, true).err().expect("another model shape");
        assert!(matches!(err, Error::CheckpointMismatch { .. }), "{err}");
        assert!(err.to_string().contains("does not fit"), "{err}");
    }
}
