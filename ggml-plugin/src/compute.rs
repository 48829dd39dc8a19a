//! What the backend does with a graph split: ternary mat-muls, the F16 LM head for one token,
//! and nothing for view ops.

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
/// 128k vocabulary) once per token; ggml's F16 dot product streams it more slowly than our
/// dense kernels do. Other F16 weights stay with the CPU backend. `BITNET_GGML_HEAD=0` leaves
/// the head to the CPU backend, so that the device claims exactly the ternary mat-muls.
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

/// Whether `w` lives in host memory in ggml's layout (a CPU buffer, memory-mapped or not).
///
/// # Safety
/// `w` must be a live tensor.
unsafe fn in_host_memory(w: &sys::ggml_tensor) -> bool {
    // SAFETY: a tensor's buffer is null or live, and so is a live buffer's type.
    !w.buffer.is_null() && w.view_src.is_null() && unsafe { buffer::holds_host_memory(w.buffer) }
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

/// Whether we can compute this MUL_MAT: a 2-D TQ2_0/TQ1_0 weight in our buffer (or not yet
/// allocated), or the F16 LM head in host memory for a single token; F32 activations whose rows
/// are contiguous (any row strides); contiguous F32 output.
///
/// The head is left where llama.cpp puts it (its CPU buffer, memory-mapped from the file) and
/// taken for one token only: decoding streams the head once per token, which our GEMV does
/// faster than ggml's F16 dot product, while several tokens (a batch of parallel sequences)
/// make it a GEMM, which llama.cpp's own register-blocked F16 GEMM does faster than our
/// per-token GEMV. (Measured, 2B4T shape, 2 threads, 8 sequences: S_TG 60 tok/s with the head
/// on the plugin, 68 with it on the CPU backend; one sequence: 18.4 against 16.7.) Answering per
/// shape works because the scheduler asks for every graph, and a weight in host memory may be
/// used by either backend.
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
    // SAFETY (both): `w` is live (contract).
    let placed = if buffer::tq_type(w).is_some() {
        unsafe { not_placed_elsewhere(w, our_buft) }
    } else {
        xd[1..] == [1, 1, 1] && unsafe { in_host_memory(w) }
    };
    placed
        && x.type_ == sys::GGML_TYPE_F32
        && x.nb[0] == 4
        && xd[0] == cols
        && is_contiguous_f32(op)
        && yd[0] == rows
        && yd[1..] == xd[1..]
}

/// Computes one supported MUL_MAT node.
///
/// # Safety
/// `dst` must be a MUL_MAT node accepted by [`supports_mul_mat`] whose tensors are allocated.
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
        // SAFETY: the head is in host memory (contract) and alive while the node runs.
        let bytes = unsafe { buffer::host_bytes(w) }
            .ok_or_else(|| format!("{name}: weight bytes missing"))?;
        let m = DenseMatrix::new(DenseType::F16, bytes, rows, cols)
            .map_err(|e| format!("{name}: {e}"))?;
        // ggml rounds the activations to F16 (the vec_dot type of F16 weights) before its dot
        // products; rounding them the same way leaves only the summation order different.
        let xh: Vec<f32> = xs.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
        dense::matmul(&m, &xh, n_tokens, ys).map_err(|e| format!("{name}: {e}"))?;
        return Ok(Path::Head);
    }
    // SAFETY: a ternary weight accepted by supports_mul_mat is in one of our buffers.
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
