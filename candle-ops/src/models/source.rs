//! Where a model's tensors come from: a GGUF file ([`super::loader::Loader`]) or a Hugging Face
//! checkpoint through a `VarBuilder` ([`super::hf::HfWeights`]). Tensors are asked for by their
//! GGUF names, so the model is built by one code path whatever the source.

use bitnet_backend::dense::DenseType;

use super::rows::RmsNorm;
use crate::bit_linear::BitLinear;
use crate::embedding::DenseWeights;
use crate::Result;

pub(crate) trait WeightSource {
    /// Whether the model has the tensor `name`.
    fn has(&self, name: &str) -> bool;
    /// A ternary projection `[out_features, in_features]`.
    fn bit_linear(&self, name: &str, out_f: usize, in_f: usize) -> Result<BitLinear>;
    /// The optional per-projection scale of llama.cpp `bitnet` files (`<proj>.scale`).
    fn optional_scale(&self, name: &str) -> Result<Option<f32>>;
    /// An RMSNorm of width `width`.
    fn rms_norm(&self, name: &str, width: usize, eps: f32) -> Result<RmsNorm>;
    /// The embedding / output table `[rows, cols]`.
    fn dense(&self, name: &str, rows: usize, cols: usize) -> Result<DenseWeights>;
    /// An optional vector of `len` values (`rope_freqs.weight`).
    fn optional_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>>;
    /// The table `[rows, cols]` quantized to `ty` straight from the source's rows, or `None`
    /// when the source cannot stream rows (the caller then quantizes the table it loaded, see
    /// [`super::head::quantize_table`]).
    fn quantized_dense(
        &self,
        _name: &str,
        _rows: usize,
        _cols: usize,
        _ty: DenseType,
    ) -> Result<Option<DenseWeights>> {
        Ok(None)
    }
}
