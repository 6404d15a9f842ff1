//! Parsing `--device cpu|cuda[:N]` into a candle device.

use candle_core::Device;

/// Why a `--device` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Not `cpu`, `cuda` or `cuda:N`.
    #[error("unknown device {0:?}; expected cpu, cuda or cuda:N")]
    Unknown(String),
    /// `cuda:` followed by something that is not a number.
    #[error("bad cuda ordinal in device {0:?}")]
    Ordinal(String),
    /// The CUDA device could not be opened.
    #[error("cannot open cuda:{ordinal}: {source}")]
    Open {
        /// The device ordinal.
        ordinal: usize,
        /// candle's error.
        source: candle_core::Error,
    },
    /// This binary was built without the `cuda` feature.
    #[error("this binary was built without CUDA; rebuild with `--features cuda`")]
    NoCuda,
}

/// Resolves `cpu`, `cuda` or `cuda:N`. CUDA needs the `cuda` cargo feature; without it the error says so.
pub fn parse_device(spec: &str) -> Result<Device, DeviceError> {
    match spec.trim() {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().map_err(|_| DeviceError::Ordinal(s.into()))?,
                None => 0,
            };
            cuda(ordinal)
        }
        other => Err(DeviceError::Unknown(other.into())),
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device, DeviceError> {
    Device::new_cuda(ordinal).map_err(|source| DeviceError::Open { ordinal, source })
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize) -> Result<Device, DeviceError> {
    Err(DeviceError::NoCuda)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_unknown() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        assert!(parse_device("tpu").is_err_and(|e| e.to_string().contains("expected cpu")));
        assert!(parse_device("cuda:x").is_err());
    }
}
