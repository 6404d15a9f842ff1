//! Opening the candle device of a config's [`DeviceKind`].

use crate::config::DeviceKind;
use candle_core::Device;

/// Why a device cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
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

/// The candle device of `kind`. CUDA needs the `cuda` cargo feature; without it the error says so.
pub fn open(kind: DeviceKind) -> Result<Device, DeviceError> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda(ordinal) => cuda(ordinal),
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
    fn opens_the_cpu() {
        assert!(matches!(open(DeviceKind::Cpu), Ok(Device::Cpu)));
        #[cfg(not(feature = "cuda"))]
        assert!(matches!(open(DeviceKind::Cuda(0)), Err(DeviceError::NoCuda)));
    }
}
