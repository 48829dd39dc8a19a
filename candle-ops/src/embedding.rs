//! Dense weight tables: the token embedding and the LM head (`[n_vocab, n_embd]`).
//!
//! F32, F16, BF16, Q8_0, Q6_K and Q4_0 tables (bitnet.cpp's `--token-embedding-type q6_k`
//! files, and heads quantized at load) stay zero-copy in the GGUF mmap, or in the buffer they
//! were quantized into, and are multiplied by the backend's multithreaded dense kernels
//! (`bitnet_backend::dense`), which stream the table once per step at memory bandwidth. Other
//! ggml quantizations (Q4_1, Q5_0, Q5_1, Q2_K to Q5_K) are handed to Candle's
//! `QTensor`/`QMatMul`.

use std::ops::Range;
use std::sync::Arc;

use bitnet_backend::dense::{self, DenseMatrix, DenseType};
use bitnet_backend::gguf::{GgmlType, GgufFile, TensorInfo};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::{Error, Result};

/// Bytes that can be shared between threads and outlive the loader (an mmap, or a `Vec`).
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

#[derive(Clone)]
enum Storage {
    /// Raw bytes (usually in the GGUF mmap) multiplied by the backend dense kernels.
    Dense {
        bytes: SharedBytes,
        range: Range<usize>,
        ty: DenseType,
    },
    /// A Candle quantized tensor.
    Quantized {
        qtensor: Arc<QTensor>,
        matmul: QMatMul,
    },
}

/// A `[rows, cols]` dense weight table: embedding lookups and `x · Wᵀ` products.
#[derive(Clone)]
pub struct DenseWeights {
    name: String,
    rows: usize,
    cols: usize,
    ggml_type: GgmlType,
    storage: Storage,
}

impl std::fmt::Debug for DenseWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenseWeights")
            .field("name", &self.name)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("type", &self.ggml_type)
            .finish()
    }
}

impl DenseWeights {
    /// Wraps a 2-D GGUF tensor `[ne0 = cols, ne1 = rows]`; the backend's dense types stay in the
    /// mmap.
    pub fn from_gguf(file: &GgufFile, info: &TensorInfo) -> Result<Self> {
        let range = file.tensor_range(info)?;
        let bytes: SharedBytes = file.mmap().clone();
        Self::from_bytes(&info.name, info.ggml_type, &info.dims, bytes, range)
    }

    /// Wraps `bytes[range]` holding a ggml tensor of type `ty` with ggml dims `[cols, rows]`.
    pub fn from_bytes(
        name: &str,
        ty: GgmlType,
        dims: &[u64],
        bytes: SharedBytes,
        range: Range<usize>,
    ) -> Result<Self> {
        let (cols, rows) = match dims {
            [c, r] => (*c as usize, *r as usize),
            _ => {
                return Err(Error::bad_tensor(
                    name,
                    format!("an embedding / output table must be 2-D, got dims {dims:?}"),
                ))
            }
        };
        if rows == 0 || cols == 0 {
            return Err(Error::bad_tensor(
                name,
                format!("empty table, dims {dims:?}"),
            ));
        }
        let data = (*bytes).as_ref().get(range.clone()).ok_or_else(|| {
            Error::bad_tensor(name, format!("byte range {range:?} is outside the data"))
        })?;
        let storage = match DenseType::from_ggml(ty) {
            Some(dt) => {
                DenseMatrix::new(dt, data, rows, cols)
                    .map_err(|e| Error::bad_tensor(name, e.to_string()))?;
                Storage::Dense {
                    bytes,
                    range,
                    ty: dt,
                }
            }
            None => {
                let dtype = candle_dtype(ty).ok_or_else(|| {
                    Error::bad_tensor(
                        name,
                        format!("type {ty:?} is not supported for embeddings / output (use F16, F32, BF16, Q8_0, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1 or a K-quant)"),
                    )
                })?;
                let qtensor = qtensor_from_ggml(dtype, data, vec![rows, cols], &Device::Cpu)
                    .map_err(|e| Error::bad_tensor(name, e.to_string()))?;
                let qtensor = Arc::new(qtensor);
                let matmul = QMatMul::from_arc(qtensor.clone())?;
                Storage::Quantized { qtensor, matmul }
            }
        };
        Ok(Self {
            name: name.to_owned(),
            rows,
            cols,
            ggml_type: ty,
            storage,
        })
    }

    /// Tensor name in the file.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of rows (vocabulary size).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (hidden size).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Storage type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// Bytes read by one full `x · Wᵀ` product.
    pub fn size_in_bytes(&self) -> usize {
        match &self.storage {
            Storage::Dense { range, .. } => range.len(),
            Storage::Quantized { qtensor, .. } => qtensor.storage_size_in_bytes(),
        }
    }

    /// The type and bytes of a table the backend's dense kernels multiply (`None` for a type
    /// only Candle multiplies).
    pub(crate) fn dense_bytes(&self) -> Option<(DenseType, &[u8])> {
        match &self.storage {
            Storage::Dense { bytes, range, ty } => Some((*ty, &(**bytes).as_ref()[range.clone()])),
            Storage::Quantized { .. } => None,
        }
    }

    fn dense(&self) -> Option<DenseMatrix<'_>> {
        match &self.storage {
            Storage::Dense { bytes, range, ty } => DenseMatrix::new(
                *ty,
                &(**bytes).as_ref()[range.clone()],
                self.rows,
                self.cols,
            )
            .ok(),
            Storage::Quantized { .. } => None,
        }
    }

    /// The table as a tensor `[rows, cols]` on `device`: F16 tables keep their bits, every
    /// other type is widened to f32 (exact for F32, BF16 and the block quantizations).
    pub(crate) fn device_table(&self, device: &Device) -> Result<Tensor> {
        let shape = (self.rows, self.cols);
        if let (Storage::Dense { bytes, range, .. }, GgmlType::F16) =
            (&self.storage, self.ggml_type)
        {
            let data = &(**bytes).as_ref()[range.clone()];
            return Ok(Tensor::from_raw_buffer(
                data,
                DType::F16,
                &[self.rows, self.cols],
                device,
            )?);
        }
        let ids: Vec<u32> = (0..self.rows as u32).collect();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for chunk in ids.chunks(1024) {
            out.extend(self.lookup_rows(chunk)?);
        }
        Ok(Tensor::from_vec(out, shape, device)?)
    }

    /// Embedding lookup: rows `ids` as an f32 tensor `[ids.len(), cols]`.
    pub fn lookup(&self, ids: &[u32]) -> Result<Tensor> {
        match &self.storage {
            Storage::Dense { .. } => {
                let rows = self.lookup_rows(ids)?;
                Ok(Tensor::from_vec(
                    rows,
                    (ids.len(), self.cols),
                    &Device::Cpu,
                )?)
            }
            Storage::Quantized { qtensor, .. } => {
                self.check_ids(ids)?;
                let ids = Tensor::new(ids, &Device::Cpu)?;
                Ok(qtensor.embedding(&ids)?)
            }
        }
    }

    /// Embedding lookup: rows `ids` as f32 values `[ids.len() · cols]`, row-major. Dense
    /// tables fill the vector directly (no tensor to copy out of: the batched forward looks up
    /// 512 rows, 5 MB for 2B4T, per piece).
    pub fn lookup_rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        match &self.storage {
            Storage::Dense { .. } => {
                self.check_ids(ids)?;
                let m = self.dense().expect("validated at construction");
                let mut out = vec![0f32; ids.len() * self.cols];
                for (row, &id) in out.chunks_mut(self.cols).zip(ids) {
                    m.dequantize_row(id as usize, row)?;
                }
                Ok(out)
            }
            Storage::Quantized { .. } => Ok(self.lookup(ids)?.flatten_all()?.to_vec1::<f32>()?),
        }
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| id as usize >= self.rows) {
            Some(&bad) => Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.rows
            ))),
            None => Ok(()),
        }
    }

    /// `x · Wᵀ` for `x` of shape `[m, cols]` (f32): the logits `[m, rows]`.
    pub fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        let (m, k) = x.dims2()?;
        self.check_width(k)?;
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        match &self.storage {
            Storage::Dense { .. } => {
                let y = self.matmul_rows(&x.flatten_all()?.to_vec1::<f32>()?)?;
                Ok(Tensor::from_vec(y, (m, self.rows), &Device::Cpu)?)
            }
            Storage::Quantized { matmul, .. } => Ok(matmul.forward(&x)?),
        }
    }

    /// `x · Wᵀ` for token-major rows `x` (`[m, cols]`, f32): the logits `[m, rows]`.
    pub fn matmul_rows(&self, x: &[f32]) -> Result<Vec<f32>> {
        if self.cols == 0 || !x.len().is_multiple_of(self.cols) {
            return Err(Error::InvalidArgument(format!(
                "`{}`: {} values are not rows of the table width {}",
                self.name,
                x.len(),
                self.cols
            )));
        }
        let m = x.len() / self.cols;
        match &self.storage {
            Storage::Dense { .. } => {
                let w = self.dense().expect("validated at construction");
                let mut y = vec![0f32; m * self.rows];
                dense::matmul(&w, x, m, &mut y)?;
                Ok(y)
            }
            Storage::Quantized { matmul, .. } => {
                let xt = Tensor::from_slice(x, (m, self.cols), &Device::Cpu)?;
                Ok(matmul.forward(&xt)?.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }

    fn check_width(&self, k: usize) -> Result<()> {
        if k != self.cols {
            return Err(Error::InvalidArgument(format!(
                "`{}`: input width {k} differs from the table width {}",
                self.name, self.cols
            )));
        }
        Ok(())
    }
}

/// Candle's dtype for a ggml quantization it implements.
fn candle_dtype(t: GgmlType) -> Option<GgmlDType> {
    Some(match t {
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q2_K => GgmlDType::Q2K,
        GgmlType::Q3_K => GgmlDType::Q3K,
        GgmlType::Q4_K => GgmlDType::Q4K,
        GgmlType::Q5_K => GgmlDType::Q5K,
        _ => return None,
    })
}

/// Decodes a tensor of one of the backend's dense types into f32 values (norm weights,
/// ternary-valued floats).
pub(crate) fn decode_float_row(info: &TensorInfo, data: &[u8]) -> Result<Vec<f32>> {
    let ty = DenseType::from_ggml(info.ggml_type).ok_or_else(|| {
        Error::bad_tensor(
            &info.name,
            format!(
                "expected F32, F16, BF16, Q8_0, Q6_K or Q4_0, got {:?}",
                info.ggml_type
            ),
        )
    })?;
    let n = usize::try_from(info.n_elements())
        .map_err(|_| Error::bad_tensor(&info.name, "too many elements"))?;
    let cols = info.dims.first().copied().unwrap_or(1) as usize;
    if cols == 0 || n % cols != 0 {
        return Err(Error::bad_tensor(
            &info.name,
            format!("bad dims {:?}", info.dims),
        ));
    }
    let m = DenseMatrix::new(ty, data, n / cols, cols)
        .map_err(|e| Error::bad_tensor(&info.name, e.to_string()))?;
    let mut out = vec![0f32; n];
    for (r, row) in out.chunks_mut(cols).enumerate() {
        m.dequantize_row(r, row)?;
    }
    Ok(out)
}
