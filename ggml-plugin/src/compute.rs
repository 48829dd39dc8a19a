//! What the backend does with a graph split: ternary mat-muls, the F16 LM head (mat-mul, and
//! the embedding lookup when the head is tied to the embedding), and nothing for view ops.

use bitnet_backend::dense::{self, DenseMatrix, DenseType};
use bitnet_backend::matmul_q8k::{reference, ternary_matmul_q8k};
use half::f16;

use crate::buffer::{self, Weight};
use crate::sys;

/// How a mat-mul was computed.
pub enum Path {
    /// The repacked SIMD (or portable) kernels.
    Kernel,
    /// The scalar transcription of ggml's math (weights the layout cannot hold).
    Reference,
    /// The F16 LM head on the dense kernels.
    Head,
}

/// Names of the LM head's weight: `output.weight`, or the token embedding when the head is tied
/// to it (mainline's `bitnet` architecture always ties).
const HEAD_NAMES: [&str; 2] = ["output.weight", "token_embd.weight"];

/// `(rows, cols)` of the F16 LM head, if `t` is it. Decoding reads the head (657 MB for a
/// 128k vocabulary) once per token; ggml's F16 dot product streams it at about half the
/// bandwidth our dense kernels reach. Other F16 weights stay with the CPU backend.
/// `BITNET_GGML_HEAD=0` leaves the head to the CPU backend, so that the device claims exactly
/// the ternary mat-muls.
pub fn head_shape(t: &sys::ggml_tensor) -> Option<(usize, usize)> {
    if t.type_ != sys::GGML_TYPE_F16
        || !takes_head()
        || !HEAD_NAMES.contains(&buffer::tensor_name(t).as_str())
    {
        return None;
    }
    buffer::matrix_shape(t)
}

/// Whether the plugin takes the F16 head (the default), read once from `BITNET_GGML_HEAD`.
fn takes_head() -> bool {
    static TAKES_HEAD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TAKES_HEAD.get_or_init(|| !std::env::var("BITNET_GGML_HEAD").is_ok_and(|v| v.trim() == "0"))
}

/// The shape of a weight we compute with: ternary, or the F16 LM head.
fn our_weight_shape(w: &sys::ggml_tensor) -> Option<(usize, usize)> {
    match buffer::tq_type(w) {
        Some(_) => buffer::weight_shape(w),
        None => head_shape(w),
    }
}

/// Whether `w` is (or will be) in our buffer: unallocated, or allocated by our buffer type.
///
/// # Safety
/// `w` must be a live tensor.
unsafe fn not_placed_elsewhere(
    w: &sys::ggml_tensor,
    our_buft: sys::ggml_backend_buffer_type_t,
) -> bool {
    // SAFETY: a tensor's buffer is null or live.
    (w.buffer.is_null() || unsafe { buffer::is_ours(w.buffer, our_buft) }) && w.view_src.is_null()
}

/// Ops that only reinterpret memory.
pub fn is_view_op(op: sys::ggml_op) -> bool {
    matches!(
        op,
        sys::GGML_OP_NONE
            | sys::GGML_OP_RESHAPE
            | sys::GGML_OP_VIEW
            | sys::GGML_OP_PERMUTE
            | sys::GGML_OP_TRANSPOSE
    )
}

fn dims(t: &sys::ggml_tensor) -> Option<[usize; 4]> {
    let mut d = [0usize; 4];
    for (o, &n) in d.iter_mut().zip(&t.ne) {
        *o = usize::try_from(n).ok()?;
    }
    Some(d)
}

fn is_contiguous_f32(t: &sys::ggml_tensor) -> bool {
    let Some(ne) = dims(t) else { return false };
    t.type_ == sys::GGML_TYPE_F32
        && t.nb[0] == 4
        && t.nb[1] == 4 * ne[0]
        && t.nb[2] == t.nb[1] * ne[1]
        && t.nb[3] == t.nb[2] * ne[2]
}

/// The weight, the second source and the dimensions of that source and of the result.
///
/// # Safety
/// `op` and its non-null sources must be live tensors.
unsafe fn operands<'a>(
    op: &sys::ggml_tensor,
) -> Option<(
    &'a sys::ggml_tensor,
    &'a sys::ggml_tensor,
    [usize; 4],
    [usize; 4],
)> {
    let (src0, src1) = (op.src[0], op.src[1]);
    if src0.is_null() || src1.is_null() {
        return None;
    }
    // SAFETY: per the contract, non-null sources are live.
    let (w, b) = unsafe { (&*src0, &*src1) };
    Some((w, b, dims(b)?, dims(op)?))
}

/// Whether we can compute this MUL_MAT: a 2-D TQ2_0/TQ1_0 weight or the F16 LM head (in our
/// buffer, or not yet allocated), F32 activations whose rows are contiguous (any row strides),
/// contiguous F32 output.
///
/// # Safety
/// `op` and its sources must be live tensors.
pub unsafe fn supports_mul_mat(
    op: &sys::ggml_tensor,
    our_buft: sys::ggml_backend_buffer_type_t,
) -> bool {
    // SAFETY: per the contract.
    let Some((w, x, xd, yd)) = (unsafe { operands(op) }) else {
        return false;
    };
    let Some((rows, cols)) = our_weight_shape(w) else {
        return false;
    };
    // SAFETY: `w` is live (contract).
    let ours = unsafe { not_placed_elsewhere(w, our_buft) };
    ours && x.type_ == sys::GGML_TYPE_F32
        && x.nb[0] == 4
        && xd[0] == cols
        && is_contiguous_f32(op)
        && yd[0] == rows
        && yd[1..] == xd[1..]
}

/// Computes one supported MUL_MAT node.
///
/// # Safety
/// `dst` must be a MUL_MAT node accepted by [`supports_mul_mat`] whose tensors are allocated,
/// with the weight in one of our buffers.
pub unsafe fn mul_mat(dst: &sys::ggml_tensor) -> Result<Path, String> {
    // SAFETY: per the contract, the sources are live.
    let (w, x) = unsafe { (&*dst.src[0], &*dst.src[1]) };
    let name = buffer::tensor_name(w);
    let (rows, cols) =
        our_weight_shape(w).ok_or_else(|| format!("{name}: unsupported weight shape"))?;
    let xd = dims(x).ok_or("bad activation shape")?;
    let n_tokens = xd[1] * xd[2] * xd[3];
    let gathered;
    let xs: &[f32] = if is_contiguous_f32(x) {
        // SAFETY: a contiguous F32 tensor of n_tokens × cols values at `data`.
        unsafe { std::slice::from_raw_parts(x.data as *const f32, n_tokens * cols) }
    } else {
        let mut v = Vec::with_capacity(n_tokens * cols);
        for i3 in 0..xd[3] {
            for i2 in 0..xd[2] {
                for i1 in 0..xd[1] {
                    let off = i1 * x.nb[1] + i2 * x.nb[2] + i3 * x.nb[3];
                    // SAFETY: row (i1, i2, i3) starts at this offset and has `cols` contiguous
                    // floats (nb[0] == 4 was required by supports_op).
                    v.extend_from_slice(unsafe {
                        std::slice::from_raw_parts(
                            (x.data as *const u8).add(off) as *const f32,
                            cols,
                        )
                    });
                }
            }
        }
        gathered = v;
        &gathered
    };
    // SAFETY: dst is a contiguous F32 tensor of n_tokens × rows values that nothing else
    // touches while this node runs.
    let ys = unsafe { std::slice::from_raw_parts_mut(dst.data as *mut f32, n_tokens * rows) };
    if w.type_ == sys::GGML_TYPE_F16 {
        // SAFETY: the weight is in one of our buffers (contract).
        let m = unsafe { head_matrix(w, &name) }?;
        // ggml rounds the activations to F16 (the vec_dot type of F16 weights) before its dot
        // products; rounding them the same way leaves only the summation order different.
        let xh: Vec<f32> = xs.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
        dense::matmul(&m, &xh, n_tokens, ys).map_err(|e| format!("{name}: {e}"))?;
        return Ok(Path::Head);
    }
    // SAFETY: the weight is in one of our buffers (contract).
    let (ty, weight) = unsafe { buffer::weight_of(w) }
        .ok_or_else(|| format!("{name}: weight was never uploaded"))?;
    match weight {
        Weight::Packed(m) => {
            ternary_matmul_q8k(&m, xs, n_tokens, ys).map_err(|e| format!("{name}: {e}"))?;
            Ok(Path::Kernel)
        }
        _ => {
            // SAFETY: the weight is in one of our buffers and alive during the graph.
            let bytes = unsafe { buffer::raw_bytes(w) }
                .ok_or_else(|| format!("{name}: weight bytes missing"))?;
            reference::matmul(ty, bytes, rows, cols, xs, n_tokens, ys)
                .map_err(|e| format!("{name}: {e}"))?;
            Ok(Path::Reference)
        }
    }
}

/// Whether we can compute this GET_ROWS: rows of the F16 LM head (tied embedding) in our buffer
/// or not yet allocated, picked by a contiguous 1-D I32 index vector, into contiguous F32 rows.
///
/// # Safety
/// `op` and its sources must be live tensors.
pub unsafe fn supports_get_rows(
    op: &sys::ggml_tensor,
    our_buft: sys::ggml_backend_buffer_type_t,
) -> bool {
    // SAFETY: per the contract.
    let Some((w, ids, id, yd)) = (unsafe { operands(op) }) else {
        return false;
    };
    let Some((_, cols)) = head_shape(w) else {
        return false;
    };
    // SAFETY: `w` is live (contract).
    let ours = unsafe { not_placed_elsewhere(w, our_buft) };
    ours && ids.type_ == sys::GGML_TYPE_I32
        && ids.nb[0] == 4
        && id[1..] == [1, 1, 1]
        && is_contiguous_f32(op)
        && yd == [cols, id[0], 1, 1]
}

/// Computes one supported GET_ROWS node: F16 rows widened to F32 (exact, as ggml does).
///
/// # Safety
/// `dst` must be a GET_ROWS node accepted by [`supports_get_rows`] whose tensors are allocated,
/// with the weight in one of our buffers.
pub unsafe fn get_rows(dst: &sys::ggml_tensor) -> Result<Path, String> {
    // SAFETY: per the contract, the sources are live.
    let (w, ids) = unsafe { (&*dst.src[0], &*dst.src[1]) };
    let name = buffer::tensor_name(w);
    // SAFETY: the weight is in one of our buffers (contract).
    let m = unsafe { head_matrix(w, &name) }?;
    let (rows, cols) = (m.rows(), m.cols());
    let n = usize::try_from(ids.ne[0]).map_err(|_| "bad index count")?;
    // SAFETY: a contiguous I32 vector of n values (supports_get_rows).
    let ids = unsafe { std::slice::from_raw_parts(ids.data as *const i32, n) };
    // SAFETY: dst is a contiguous F32 tensor of n × cols values that nothing else touches
    // while this node runs.
    let ys = unsafe { std::slice::from_raw_parts_mut(dst.data as *mut f32, n * cols) };
    for (&id, y) in ids.iter().zip(ys.chunks_exact_mut(cols)) {
        let r = usize::try_from(id)
            .ok()
            .filter(|&r| r < rows)
            .ok_or_else(|| format!("{name}: row index {id} outside 0..{rows}"))?;
        m.dequantize_row(r, y).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(Path::Head)
}

/// The F16 head's bytes in our buffer, as the dense kernels read them.
///
/// # Safety
/// `w` must be the F16 head, allocated in one of our buffers, alive while the matrix is used.
unsafe fn head_matrix<'a>(w: &sys::ggml_tensor, name: &str) -> Result<DenseMatrix<'a>, String> {
    let (rows, cols) = head_shape(w).ok_or_else(|| format!("{name}: unsupported shape"))?;
    // SAFETY: per the contract.
    let bytes =
        unsafe { buffer::raw_bytes(w) }.ok_or_else(|| format!("{name}: weight bytes missing"))?;
    DenseMatrix::new(DenseType::F16, bytes, rows, cols).map_err(|e| format!("{name}: {e}"))
}
