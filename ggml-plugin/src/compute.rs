//! What the backend does with a graph split: ternary mat-muls, and nothing for view ops.

use bitnet_backend::matmul_q8k::{reference, ternary_matmul_q8k};

use crate::buffer::{self, Weight};
use crate::sys;

/// How a mat-mul was computed.
pub enum Path {
    /// The repacked SIMD (or portable) kernels.
    Kernel,
    /// The scalar transcription of ggml's math (weights the layout cannot hold).
    Reference,
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

/// Whether we can compute this MUL_MAT: a 2-D TQ2_0/TQ1_0 weight (in our buffer, or not yet
/// allocated), F32 activations whose rows are contiguous (any row strides), contiguous F32 output.
///
/// # Safety
/// `op` and its sources must be live tensors.
pub unsafe fn supports_mul_mat(
    op: &sys::ggml_tensor,
    our_buft: sys::ggml_backend_buffer_type_t,
) -> bool {
    let (src0, src1) = (op.src[0], op.src[1]);
    if src0.is_null() || src1.is_null() {
        return false;
    }
    // SAFETY: per the contract, the sources are live.
    let (w, x) = unsafe { (&*src0, &*src1) };
    let Some((rows, cols)) = buffer::tq_type(w).and(buffer::weight_shape(w)) else {
        return false;
    };
    // SAFETY: a tensor's buffer is null or live.
    let placed_elsewhere = !w.buffer.is_null() && !unsafe { buffer::is_ours(w.buffer, our_buft) };
    let (Some(xd), Some(yd)) = (dims(x), dims(op)) else {
        return false;
    };
    !placed_elsewhere
        && w.view_src.is_null()
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
/// `dst` must be a MUL_MAT node accepted by [`supports_mul_mat`] whose tensors are allocated,
/// with the weight in one of our buffers.
pub unsafe fn mul_mat(dst: &sys::ggml_tensor) -> Result<Path, String> {
    // SAFETY: per the contract, the sources are live.
    let (w, x) = unsafe { (&*dst.src[0], &*dst.src[1]) };
    let name = buffer::tensor_name(w);
    let (rows, cols) =
        buffer::weight_shape(w).ok_or_else(|| format!("{name}: unsupported weight shape"))?;
    let xd = dims(x).ok_or("bad activation shape")?;
    let n_tokens = xd[1] * xd[2] * xd[3];
    // SAFETY: the weight is in one of our buffers (contract).
    let (ty, weight) = unsafe { buffer::weight_of(w) }
        .ok_or_else(|| format!("{name}: weight was never uploaded"))?;
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
