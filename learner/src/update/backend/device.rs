//! Parsing `--device cpu|cuda[:N]` into a candle device.

use candle_core::Device;

/// Resolves `cpu`, `cuda` or `cuda:N`. CUDA needs the `cuda` cargo feature; without it the error says so.
pub fn parse_device(spec: &str) -> Result<Device, String> {
    match spec.trim() {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().map_err(|_| format!("bad cuda ordinal in device {s:?}"))?,
                None => 0,
            };
            cuda(ordinal)
        }
        other => Err(format!("unknown device {other:?}; expected cpu, cuda or cuda:N")),
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device, String> {
    Device::new_cuda(ordinal).map_err(|e| format!("cannot open cuda:{ordinal}: {e}"))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize) -> Result<Device, String> {
    Err("this binary was built without CUDA; rebuild with `--features cuda`".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_unknown() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        assert!(parse_device("tpu").is_err_and(|e| e.contains("expected cpu")));
        assert!(parse_device("cuda:x").is_err());
    }
}
