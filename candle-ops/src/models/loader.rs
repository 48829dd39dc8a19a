//! Reads model tensors out of a GGUF file, with errors that name what is missing or wrong.
//!
//! Memory: ternary weights are repacked into the kernels' own layout, so their file bytes are
//! needed only once. When the model comes from a path they are read with plain file reads into a
//! scratch buffer instead of through the mmap, so those pages never count towards the process's
//! resident memory; the F16/F32/Q8_0 embedding and head stay zero-copy in the mmap (a head
//! quantized at load is read the same way, see `head`).

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use bitnet_backend::dense::DenseType;
use bitnet_backend::gguf::{GgufFile, TensorInfo};

use super::rows::RmsNorm;
use super::source::WeightSource;
use crate::bit_linear::BitLinear;
use crate::embedding::{decode_float_row, DenseWeights, SharedBytes};
use crate::{Error, Result};

pub(crate) struct Loader<'a> {
    file: &'a GgufFile,
    raw: Option<File>,
    arch: &'a str,
}

impl<'a> Loader<'a> {
    /// `path` is the file `file` was opened from, if any (enables reads that bypass the mmap).
    pub(crate) fn new(file: &'a GgufFile, path: Option<&Path>, arch: &'a str) -> Result<Self> {
        let raw = match path {
            Some(p) => Some(File::open(p).map_err(|e| Error::io("opening", p, e))?),
            None => None,
        };
        Ok(Self { file, raw, arch })
    }

    pub(crate) fn info(&self, name: &str) -> Result<&'a TensorInfo> {
        self.file.tensor(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_owned(),
            arch: self.arch.to_owned(),
        })
    }

    /// The tensor's bytes, read from the file when possible (see the module docs).
    fn read(&self, info: &TensorInfo) -> Result<Cow<'a, [u8]>> {
        let range = self.file.tensor_range(info)?;
        match &self.raw {
            Some(f) => {
                let mut buf = vec![0u8; range.len()];
                let mut f: &File = f;
                f.seek(SeekFrom::Start(range.start as u64))
                    .and_then(|_| f.read_exact(&mut buf))
                    .map_err(|e| {
                        Error::bad_tensor(&info.name, format!("reading its data failed: {e}"))
                    })?;
                Ok(Cow::Owned(buf))
            }
            None => Ok(Cow::Borrowed(self.file.tensor_data(info)?)),
        }
    }
}

impl WeightSource for Loader<'_> {
    fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    /// A ternary projection `[out_features, in_features]`, checked against the expected shape.
    fn bit_linear(&self, name: &str, out_f: usize, in_f: usize) -> Result<BitLinear> {
        let info = self.info(name)?;
        check_dims(info, &[in_f as u64, out_f as u64])?;
        let bytes = self.read(info)?;
        BitLinear::from_gguf(info, &bytes)
    }

    /// The optional per-projection scale of llama.cpp `bitnet` files (`<proj>.scale`, one value).
    fn optional_scale(&self, name: &str) -> Result<Option<f32>> {
        let Some(info) = self.file.tensor(name) else {
            return Ok(None);
        };
        let values = decode_float_row(info, self.file.tensor_data(info)?)?;
        match values.as_slice() {
            [s] if s.is_finite() => Ok(Some(*s)),
            _ => Err(Error::bad_tensor(
                name,
                format!(
                    "a projection scale must be one finite value, got {} values",
                    values.len()
                ),
            )),
        }
    }

    /// An RMSNorm of width `width`.
    fn rms_norm(&self, name: &str, width: usize, eps: f32) -> Result<RmsNorm> {
        let info = self.info(name)?;
        check_dims(info, &[width as u64])?;
        let values = decode_float_row(info, self.file.tensor_data(info)?)?;
        Ok(RmsNorm::new(values, eps))
    }

    /// The embedding / output table `[rows, cols]`; F32/F16/BF16/Q8_0 stay zero-copy in the mmap.
    fn dense(&self, name: &str, rows: usize, cols: usize) -> Result<DenseWeights> {
        let info = self.info(name)?;
        check_dims(info, &[cols as u64, rows as u64])?;
        if DenseType::from_ggml(info.ggml_type).is_some() {
            return DenseWeights::from_gguf(self.file, info);
        }
        // Quantizations Candle multiplies are copied into Candle's own storage anyway.
        let bytes = self.read(info)?.into_owned();
        let len = bytes.len();
        let shared: SharedBytes = Arc::new(bytes);
        DenseWeights::from_bytes(&info.name, info.ggml_type, &info.dims, shared, 0..len)
    }

    /// The table quantized with positional reads of the file's float rows (see
    /// [`super::head`]), or the file's own bytes when it already has type `ty`.
    fn quantized_dense(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        ty: DenseType,
    ) -> Result<Option<DenseWeights>> {
        let info = self.info(name)?;
        check_dims(info, &[cols as u64, rows as u64])?;
        if info.ggml_type == ty.ggml_type() {
            return self.dense(name, rows, cols).map(Some);
        }
        super::head::quantize_head(self.file, self.raw.as_ref(), info, rows, cols, ty).map(Some)
    }

    /// Factors of the optional `rope_freqs.weight` tensor (llama.cpp Llama-3 rope scaling).
    fn optional_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
        match self.file.tensor(name) {
            None => Ok(None),
            Some(info) => {
                check_dims(info, &[len as u64])?;
                Ok(Some(decode_float_row(info, self.file.tensor_data(info)?)?))
            }
        }
    }
}

fn check_dims(info: &TensorInfo, want: &[u64]) -> Result<()> {
    if info.dims != want {
        return Err(Error::bad_tensor(
            &info.name,
            format!(
                "dims {:?} (ggml order) do not match the model configuration, expected {want:?}",
                info.dims
            ),
        ));
    }
    Ok(())
}
