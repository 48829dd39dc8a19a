//! What a conversion produced, printed by `bitnet convert`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use bitnet_backend::gguf::GgmlType;

use crate::options::OutType;

/// Tensors of one ggml type.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeCount {
    pub ggml_type: GgmlType,
    pub count: usize,
    /// Data bytes (without alignment padding).
    pub bytes: u64,
}

/// The result of [`crate::convert`].
#[derive(Clone, Debug)]
pub struct ConvertSummary {
    pub output: PathBuf,
    /// GGUF `general.architecture`.
    pub architecture: String,
    pub outtype: OutType,
    /// Tensor counts and sizes per type, in order of first appearance.
    pub by_type: Vec<TypeCount>,
    pub n_tensors: usize,
    /// Total elements of all tensors.
    pub n_params: u64,
    pub file_size: u64,
    pub elapsed: Duration,
}

impl ConvertSummary {
    /// Count of tensors of `ty`.
    pub fn count(&self, ty: GgmlType) -> usize {
        self.by_type
            .iter()
            .find(|c| c.ggml_type == ty)
            .map_or(0, |c| c.count)
    }
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

impl fmt::Display for ConvertSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params = if self.n_params >= 1_000_000_000 {
            format!("{:.2} B", self.n_params as f64 / 1e9)
        } else {
            format!("{:.2} M", self.n_params as f64 / 1e6)
        };
        writeln!(
            f,
            "wrote {} ({}, {}, {params} params) in {:.1} s",
            self.output.display(),
            self.architecture,
            size(self.file_size),
            self.elapsed.as_secs_f64()
        )?;
        let parts: Vec<String> = self
            .by_type
            .iter()
            .map(|c| {
                format!(
                    "{}: {} ({})",
                    c.ggml_type.name().to_lowercase(),
                    c.count,
                    size(c.bytes)
                )
            })
            .collect();
        write!(f, "  {} tensors — {}", self.n_tensors, parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lists_types() {
        let s = ConvertSummary {
            output: PathBuf::from("/m/ggml-model-i2_s.gguf"),
            architecture: "bitnet-b1.58".into(),
            outtype: OutType::I2S,
            by_type: vec![
                TypeCount {
                    ggml_type: GgmlType::F16,
                    count: 1,
                    bytes: 2048,
                },
                TypeCount {
                    ggml_type: GgmlType::I2S,
                    count: 210,
                    bytes: 3 << 20,
                },
            ],
            n_tensors: 211,
            n_params: 2_410_000_000,
            file_size: 5 << 30,
            elapsed: Duration::from_millis(1500),
        };
        let text = s.to_string();
        assert!(
            text.contains("bitnet-b1.58, 5.00 GiB, 2.41 B params) in 1.5 s"),
            "{text}"
        );
        assert!(
            text.contains("211 tensors — f16: 1 (2.00 KiB), i2_s: 210 (3.00 MiB)"),
            "{text}"
        );
        assert_eq!(s.count(GgmlType::I2S), 210);
    }
}
