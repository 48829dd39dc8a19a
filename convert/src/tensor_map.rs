//! The output tensors of a conversion: GGUF name, where the data comes from, and what it is.

/// What a tensor is, which decides how it is read and which type it is written in.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorKind {
    /// `token_embd.weight`: float rows, written in the token-embedding type.
    Embedding,
    /// `output.weight` (untied LM head): float rows, written in the output-tensor type.
    Output,
    /// RMSNorm weights: always F32.
    Norm,
    /// A BitLinear projection: ternary codes and one scale, written in the outtype.
    /// `permute_heads` reorders rows for llama.cpp's interleaved RoPE (q/k of `llama`).
    Ternary { permute_heads: Option<usize> },
    /// Values computed by the converter (Llama-3 `rope_freqs`), written as F32.
    Computed(Vec<f32>),
}

/// One tensor of the output file.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTensor {
    /// GGUF name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Checkpoint (Hugging Face) name; empty for computed tensors.
    pub source: String,
    pub kind: TensorKind,
    /// Shape in Hugging Face (row-major, outermost first) order: `[out_features, in_features]`
    /// for matrices, `[n]` for vectors.
    pub shape: Vec<usize>,
}

impl PlannedTensor {
    pub fn new(
        name: impl Into<String>,
        source: impl Into<String>,
        kind: TensorKind,
        shape: Vec<usize>,
    ) -> Self {
        PlannedTensor {
            name: name.into(),
            source: source.into(),
            kind,
            shape,
        }
    }

    /// Shape in ggml order (`ne0` = innermost = in_features first).
    pub fn ggml_dims(&self) -> Vec<u64> {
        self.shape.iter().rev().map(|&d| d as u64).collect()
    }

    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Length of the contiguous rows (`ne0`).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Number of rows (product of the outer dimensions).
    pub fn n_rows(&self) -> usize {
        self.shape[..self.shape.len().saturating_sub(1)]
            .iter()
            .product()
    }
}

/// Reorders the rows of a q or k projection from Hugging Face's rotate-half RoPE layout to
/// llama.cpp's interleaved (NORM) layout, as llama.cpp's converter `permute` does: within each
/// head, output row `2i + j` takes input row `j * head_dim/2 + i`.
pub fn permute_qk_rows<T: Copy>(w: &[T], rows: usize, cols: usize, n_heads: usize) -> Vec<T> {
    debug_assert_eq!(w.len(), rows * cols);
    let mut out = Vec::with_capacity(w.len());
    for row in 0..rows {
        let src = permuted_source_row(row, rows, n_heads);
        out.extend_from_slice(&w[src * cols..(src + 1) * cols]);
    }
    out
}

/// The Hugging Face row that [`permute_qk_rows`] puts at output row `row`.
pub fn permuted_source_row(row: usize, rows: usize, n_heads: usize) -> usize {
    let head_dim = rows / n_heads;
    let (h, within) = (row / head_dim, row % head_dim);
    h * head_dim + (within % 2) * (head_dim / 2) + within / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_matches_llama_cpp_reshape_swapaxes() {
        // numpy: w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(w.shape)
        // with n_head = 2, hd = 4, cols = 1: rows [0,1,2,3 | 4,5,6,7] -> [0,2,1,3 | 4,6,5,7].
        let w: Vec<u32> = (0..8).collect();
        assert_eq!(permute_qk_rows(&w, 8, 1, 2), vec![0, 2, 1, 3, 4, 6, 5, 7]);
        // cols = 2 moves whole rows.
        let w: Vec<u32> = (0..8).collect();
        assert_eq!(permute_qk_rows(&w, 4, 2, 1), vec![0, 1, 4, 5, 2, 3, 6, 7]);
    }

    #[test]
    fn dims_are_reversed() {
        let t = PlannedTensor::new("x", "y", TensorKind::Norm, vec![3, 5]);
        assert_eq!(t.ggml_dims(), vec![5, 3]);
        assert_eq!((t.n_rows(), t.row_len(), t.n_elements()), (3, 5, 15));
        let v = PlannedTensor::new("v", "w", TensorKind::Norm, vec![7]);
        assert_eq!((v.n_rows(), v.row_len()), (1, 7));
    }
}
