//! Choosing where a model runs: `cpu`, `cuda` or `cuda:N`, as the CLI's `--device` and the C
//! API's `device` field name them.

use candle_core::Device;

use crate::{Error, Result};

/// The device `cpu`, `cuda` (GPU 0) or `cuda:N` names. A CUDA device needs the `cuda` feature and
/// a GPU; otherwise the error says which is missing.
pub fn parse_device(name: &str) -> Result<Device> {
    match name.trim() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda_device(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => cuda_device(n),
            _ => Err(Error::InvalidArgument(format!(
                "unknown device `{other}` (expected cpu, cuda or cuda:N)"
            ))),
        },
    }
}

/// CUDA device `ordinal`, or a clear error when this build has no CUDA support or the GPU
/// cannot be opened.
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    if !cfg!(feature = "cuda") {
        return Err(Error::InvalidArgument(
            "this build has no CUDA support: rebuild with the `cuda` feature (cargo build --features cuda)".into(),
        ));
    }
    Device::new_cuda(ordinal)
        .map_err(|e| Error::InvalidArgument(format!("cannot open CUDA device {ordinal}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        let err = parse_device("gpu").unwrap_err().to_string();
        assert!(err.contains("unknown device `gpu`"), "{err}");
        assert!(parse_device("cuda:x").is_err());
        if !cfg!(feature = "cuda") {
            let err = parse_device("cuda:1").unwrap_err().to_string();
            assert!(err.contains("no CUDA support"), "{err}");
        }
    }
}
