//! The LM head's storage type: as the file has it, or quantized once at load.
//!
//! BitNet b1.58 2B4T's tied F16 head is 657 MB of the 1.18 GB a decode step reads; decoding is
//! bound by memory bandwidth, so a Q6_K head (269 MB) makes every token about 1.5 times cheaper.
//! The head is quantized from the file's F16/BF16/F32 rows with ggml's reference quantizers
//! (the bytes `llama-quantize --output-tensor-type` would write). The token embedding keeps
//! reading the file's rows from the mapping, so only the rows in use are paged in and a tied
//! head costs no second full copy. The cost in accuracy is the user's choice; the README's
//! fidelity table measures it.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;

use bitnet_backend::dense::quantize::{quantize_matrix, ReadRows};
use bitnet_backend::dense::DenseType;
use bitnet_backend::gguf::{GgmlType, GgufFile, TensorInfo};

use crate::embedding::{DenseWeights, SharedBytes};
use crate::{Error, Result};

/// How the LM head is stored for its matrix product ([`super::LoadOptions::head_type`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HeadType {
    /// As the file stores it (the default; logits exactly as without this option).
    #[default]
    File,
    /// ggml Q8_0, 8.5 bits per weight.
    Q8_0,
    /// ggml Q6_K, 6.56 bits per weight (bitnet.cpp's recommended embedding type).
    Q6K,
    /// ggml Q4_0, 4.5 bits per weight.
    Q4_0,
}

impl HeadType {
    /// Every head type, `file` first.
    pub const ALL: [HeadType; 4] = [
        HeadType::File,
        HeadType::Q8_0,
        HeadType::Q6K,
        HeadType::Q4_0,
    ];

    /// The name used on command lines: `file`, `q8_0`, `q6_k`, `q4_0`.
    pub fn name(self) -> &'static str {
        match self {
            HeadType::File => "file",
            HeadType::Q8_0 => "q8_0",
            HeadType::Q6K => "q6_k",
            HeadType::Q4_0 => "q4_0",
        }
    }

    /// The quantized layout, `None` for [`HeadType::File`].
    pub fn dense_type(self) -> Option<DenseType> {
        match self {
            HeadType::File => None,
            HeadType::Q8_0 => Some(DenseType::Q8_0),
            HeadType::Q6K => Some(DenseType::Q6K),
            HeadType::Q4_0 => Some(DenseType::Q4_0),
        }
    }
}

impl fmt::Display for HeadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HeadType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        HeadType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown head type `{s}` (file, q8_0, q6_k or q4_0)"
                ))
            })
    }
}

/// Quantizes the `[rows, cols]` head tensor `info` of `file` to `target` on the backend pool.
/// `raw` (the file itself, when the model came from a path) lets rows be read with positional
/// reads instead of through the mapping, so the F16 source never becomes resident.
pub(crate) fn quantize_head(
    file: &GgufFile,
    raw: Option<&std::fs::File>,
    info: &TensorInfo,
    rows: usize,
    cols: usize,
    target: DenseType,
) -> Result<DenseWeights> {
    let src = float_source(&info.name, info.ggml_type, target)?;
    let range = file.tensor_range(info)?;
    let row_bytes = src.row_bytes(cols)?;
    let read = |r: Range<usize>, buf: &mut [u8]| -> bitnet_backend::Result<()> {
        let at = range.start + r.start * row_bytes;
        read_rows(file, raw, at, buf).map_err(|e| bitnet_backend::Error::Tensor {
            name: info.name.clone(),
            problem: format!("reading rows {r:?} failed: {e}"),
        })
    };
    quantized(&info.name, src, rows, cols, target, &read)
}

/// Quantizes a float table already in memory (a Hugging Face checkpoint's head or tied
/// embedding) to `target`.
pub(crate) fn quantize_table(table: &DenseWeights, target: DenseType) -> Result<DenseWeights> {
    let src = float_source(table.name(), table.ggml_type(), target)?;
    let bytes = table
        .dense_bytes()
        .map(|(_, bytes)| bytes)
        .ok_or_else(|| Error::bad_tensor(table.name(), "is not held as plain rows"))?;
    let (rows, cols) = (table.rows(), table.cols());
    let row_bytes = src.row_bytes(cols)?;
    let read = |r: Range<usize>, buf: &mut [u8]| -> bitnet_backend::Result<()> {
        buf.copy_from_slice(&bytes[r.start * row_bytes..r.end * row_bytes]);
        Ok(())
    };
    quantized(table.name(), src, rows, cols, target, &read)
}

/// The head's float type, or why a `target` head cannot be made from a `ty` one.
fn float_source(name: &str, ty: GgmlType, target: DenseType) -> Result<DenseType> {
    DenseType::from_ggml(ty)
        .filter(|t| matches!(t, DenseType::F32 | DenseType::F16 | DenseType::BF16))
        .ok_or_else(|| {
            Error::bad_tensor(
                name,
                format!(
                    "a {target:?} head is quantized from F16, BF16 or F32 rows, and this \
                     model's head is {ty:?} (use head type `file`)"
                ),
            )
        })
}

/// The `[rows, cols]` table whose `src` rows `read` gives, quantized to `target`.
fn quantized(
    name: &str,
    src: DenseType,
    rows: usize,
    cols: usize,
    target: DenseType,
    read: &ReadRows<'_>,
) -> Result<DenseWeights> {
    let quantized = quantize_matrix(src, rows, cols, target, read)?;
    let len = quantized.len();
    let bytes: SharedBytes = Arc::new(quantized);
    let dims = [cols as u64, rows as u64];
    DenseWeights::from_bytes(name, target.ggml_type(), &dims, bytes, 0..len)
}

/// `buf.len()` bytes of the file at offset `at`.
fn read_rows(
    file: &GgufFile,
    raw: Option<&std::fs::File>,
    at: usize,
    buf: &mut [u8],
) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(f) = raw {
        use std::os::unix::fs::FileExt;
        return f.read_exact_at(buf, at as u64);
    }
    let _ = raw;
    let src = file
        .mmap()
        .get(at..at + buf.len())
        .ok_or_else(|| std::io::Error::other("rows past the end of the file"))?;
    buf.copy_from_slice(src);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in HeadType::ALL {
            assert_eq!(t.name().parse::<HeadType>().unwrap(), t);
            assert_eq!(t.to_string(), t.name());
        }
        assert_eq!("Q6_K".parse::<HeadType>().unwrap(), HeadType::Q6K);
        let e = "q5_k".parse::<HeadType>().unwrap_err().to_string();
        assert!(e.contains("q5_k") && e.contains("q6_k"), "{e}");
        assert_eq!(HeadType::default(), HeadType::File);
    }
}
