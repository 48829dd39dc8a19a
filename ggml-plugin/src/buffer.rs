//! The plugin's buffer type, which holds the ternary weights llama.cpp runs on us. Uploaded
//! into it (`set_tensor`), they are repacked once into the kernels' layout and kept only in
//! that form. (The F16 LM head stays in llama.cpp's CPU buffer, see `compute`; mat-mul outputs
//! are allocated in host memory, see `device`.)
//!
//! The buffer reserves `size` bytes of zeroed memory, so every tensor has a stable address
//! (`tensor->data`), but the pages of repacked weights are never touched and never become
//! resident. `is_host` is false: the weight bytes are not in ggml's layout there, and llama.cpp
//! would otherwise read the model file straight into `tensor->data`, bypassing the repack.

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex, MutexGuard};

use bitnet_backend::matmul_q8k::{TqMatrix, TqType};

use crate::host;
use crate::sys;

/// Alignment of tensor data in our buffers (one cache line, as the kernels like).
pub const ALIGNMENT: usize = 64;

/// A ternary weight as the kernels use it.
pub enum Weight {
    /// Repacked with every block scale.
    Packed(Arc<TqMatrix>),
    /// Left in ggml's bytes in the buffer memory because the repacked layout cannot hold it
    /// (TQ2_0 data with code 3); computed by the scalar reference.
    Raw,
    /// Uploaded in pieces: ggml's bytes in the buffer memory, repacked on first use.
    Pending,
}

/// Per-buffer state: the memory and the weights repacked out of it, keyed by `tensor->data`.
pub struct BufferCtx {
    mem: Vec<u8>,
    base: usize,
    weights: Mutex<HashMap<usize, (TqType, Weight)>>,
}

impl BufferCtx {
    fn new(size: usize) -> BufferCtx {
        // Zeroed allocation: large ones are fresh pages that stay unmapped until written.
        let mem = vec![0u8; size + ALIGNMENT];
        let base = mem.as_ptr() as usize;
        let base = base.next_multiple_of(ALIGNMENT);
        BufferCtx {
            mem,
            base,
            weights: Mutex::new(HashMap::new()),
        }
    }

    pub fn weights(&self) -> MutexGuard<'_, HashMap<usize, (TqType, Weight)>> {
        self.weights.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn end(&self) -> usize {
        self.mem.as_ptr() as usize + self.mem.len()
    }
}

/// The ternary type of a tensor, if it is one we repack.
pub fn tq_type(t: &sys::ggml_tensor) -> Option<TqType> {
    match t.type_ {
        sys::GGML_TYPE_TQ2_0 => Some(TqType::Tq2_0),
        sys::GGML_TYPE_TQ1_0 => Some(TqType::Tq1_0),
        _ => None,
    }
}

/// Bytes of a contiguous tensor of `t`'s type and shape.
pub fn nbytes(t: &sys::ggml_tensor) -> Option<usize> {
    let n =
        t.ne.iter()
            .try_fold(1usize, |a, &n| a.checked_mul(usize::try_from(n).ok()?))?;
    let block_bytes = match t.type_ {
        sys::GGML_TYPE_F32 => return n.checked_mul(4),
        sys::GGML_TYPE_F16 => return n.checked_mul(2),
        sys::GGML_TYPE_TQ2_0 => 66,
        sys::GGML_TYPE_TQ1_0 => 54,
        _ => return None,
    };
    (n % 256 == 0).then_some(n / 256 * block_bytes)
}

/// `(rows, cols)` of a contiguous 2-D tensor.
pub fn matrix_shape(t: &sys::ggml_tensor) -> Option<(usize, usize)> {
    if t.ne[2] != 1 || t.ne[3] != 1 || t.ne[0] <= 0 || t.ne[1] <= 0 {
        return None;
    }
    let row_bytes = nbytes(t)? / t.ne[1] as usize;
    (t.nb[1] == row_bytes).then_some((t.ne[1] as usize, t.ne[0] as usize))
}

/// `(rows, cols)` of a 2-D ternary weight (whole 256-weight blocks per row).
pub fn weight_shape(t: &sys::ggml_tensor) -> Option<(usize, usize)> {
    matrix_shape(t).filter(|&(_, cols)| cols % 256 == 0)
}

/// Repacks one weight from its ggml bytes; TQ2_0 data the layout cannot hold stays raw.
fn repack(ty: TqType, t: &sys::ggml_tensor, bytes: &[u8]) -> Weight {
    let Some((rows, cols)) = weight_shape(t) else {
        return Weight::Raw;
    };
    match TqMatrix::new(ty, bytes, rows, cols) {
        Ok(m) => Weight::Packed(Arc::new(m)),
        Err(e) => {
            host::log(
                sys::GGML_LOG_LEVEL_WARN,
                &format!(
                    "{}: {e}; using the (slow) reference kernel for it",
                    tensor_name(t)
                ),
            );
            Weight::Raw
        }
    }
}

pub fn tensor_name(t: &sys::ggml_tensor) -> String {
    let bytes: Vec<u8> = t
        .name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// # Safety
/// `buffer` must be one of ours (created by [`alloc_buffer`]).
unsafe fn ctx<'a>(buffer: sys::ggml_backend_buffer_t) -> &'a BufferCtx {
    // SAFETY: our buffers' context is a leaked `Box<BufferCtx>` until `free_buffer`.
    unsafe { &*((*buffer).context as *const BufferCtx) }
}

/// Checks that `[data + offset, + size)` lies in the buffer; returns the start address.
fn range(c: &BufferCtx, t: &sys::ggml_tensor, offset: usize, size: usize) -> Option<usize> {
    let start = (t.data as usize).checked_add(offset)?;
    let end = start.checked_add(size)?;
    (start >= c.base && end <= c.end()).then_some(start)
}

extern "C" fn free_buffer(buffer: sys::ggml_backend_buffer_t) {
    // SAFETY: ggml calls this once per buffer; the context came from `Box::into_raw`.
    unsafe { drop(Box::from_raw((*buffer).context as *mut BufferCtx)) };
}

extern "C" fn get_base(buffer: sys::ggml_backend_buffer_t) -> *mut c_void {
    // SAFETY: ggml passes one of our buffers.
    unsafe { ctx(buffer) }.base as *mut c_void
}

extern "C" fn memset_tensor(
    buffer: sys::ggml_backend_buffer_t,
    t: *mut sys::ggml_tensor,
    value: u8,
    offset: usize,
    size: usize,
) {
    // SAFETY: ggml passes one of our buffers and a live tensor allocated in it.
    let (c, t) = unsafe { (ctx(buffer), &*t) };
    c.weights().remove(&(t.data as usize));
    if let Some(start) = range(c, t, offset, size) {
        // SAFETY: the range was checked to lie inside the buffer's memory.
        unsafe { std::ptr::write_bytes(start as *mut u8, value, size) };
    }
}

extern "C" fn set_tensor(
    buffer: sys::ggml_backend_buffer_t,
    t: *mut sys::ggml_tensor,
    data: *const c_void,
    offset: usize,
    size: usize,
) {
    // SAFETY: ggml passes one of our buffers and a live tensor allocated in it.
    let (c, t) = unsafe { (ctx(buffer), &*t) };
    let key = t.data as usize;
    if let Some(ty) = tq_type(t) {
        if offset == 0 && Some(size) == nbytes(t) {
            // SAFETY: ggml passes `size` readable bytes at `data`.
            let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, size) };
            let w = repack(ty, t, bytes);
            if matches!(w, Weight::Raw) {
                copy_in(c, t, data, offset, size);
            }
            c.weights().insert(key, (ty, w));
            return;
        }
        // A partial upload: keep the bytes; the weight is repacked on first use.
        c.weights().insert(key, (ty, Weight::Pending));
    }
    copy_in(c, t, data, offset, size);
}

fn copy_in(c: &BufferCtx, t: &sys::ggml_tensor, data: *const c_void, offset: usize, size: usize) {
    if let Some(start) = range(c, t, offset, size) {
        // SAFETY: destination checked inside the buffer; ggml passes `size` readable bytes.
        unsafe { std::ptr::copy_nonoverlapping(data as *const u8, start as *mut u8, size) };
    }
}

extern "C" fn get_tensor(
    buffer: sys::ggml_backend_buffer_t,
    t: *const sys::ggml_tensor,
    data: *mut c_void,
    offset: usize,
    size: usize,
) {
    // SAFETY: ggml passes one of our buffers and a live tensor allocated in it.
    let (c, t) = unsafe { (ctx(buffer), &*t) };
    let packed = match c.weights().get(&(t.data as usize)) {
        Some((ty, Weight::Packed(m))) => Some((*ty, Arc::clone(m))),
        _ => None,
    };
    if let Some((ty, m)) = packed {
        // Weights are only read back by tools that dump them; rebuild ggml's bytes exactly.
        if let Ok(bytes) = m.to_bytes(ty) {
            if let Some(src) = bytes.get(offset..offset.saturating_add(size)) {
                // SAFETY: ggml passes `size` writable bytes at `data`.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), data as *mut u8, size) };
            }
        }
        return;
    }
    if let Some(start) = range(c, t, offset, size) {
        // SAFETY: source checked inside the buffer; ggml passes `size` writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(start as *const u8, data as *mut u8, size) };
    }
}

extern "C" fn clear(buffer: sys::ggml_backend_buffer_t, value: u8) {
    // SAFETY: ggml passes one of our buffers; nothing else uses it during a clear.
    let c = unsafe { ctx(buffer) };
    c.weights().clear();
    let len = c.end() - c.base;
    // SAFETY: `[base, end)` is the buffer's own memory.
    unsafe { std::ptr::write_bytes(c.base as *mut u8, value, len) };
}

fn buffer_iface() -> sys::ggml_backend_buffer_i {
    sys::ggml_backend_buffer_i {
        free_buffer: Some(free_buffer),
        get_base: Some(get_base),
        init_tensor: None,
        memset_tensor: Some(memset_tensor),
        set_tensor: Some(set_tensor),
        get_tensor: Some(get_tensor),
        set_tensor_2d: None,
        get_tensor_2d: None,
        cpy_tensor: None,
        clear: Some(clear),
        reset: None,
    }
}

pub extern "C" fn buft_get_name(_: sys::ggml_backend_buffer_type_t) -> *const c_char {
    c"BITNET".as_ptr()
}

extern "C" fn alloc_buffer(
    buft: sys::ggml_backend_buffer_type_t,
    size: usize,
) -> sys::ggml_backend_buffer_t {
    let Some(h) = host::get() else {
        return std::ptr::null_mut();
    };
    let c = Box::into_raw(Box::new(BufferCtx::new(size)));
    // SAFETY: host function of the checked ggml version; the iface and context stay valid
    // until ggml calls `free_buffer`.
    let buf = unsafe { (h.buffer_init)(buft, buffer_iface(), c as *mut c_void, size) };
    if buf.is_null() {
        // SAFETY: ggml did not take ownership of the context.
        unsafe { drop(Box::from_raw(c)) };
    }
    buf
}

extern "C" fn get_alignment(_: sys::ggml_backend_buffer_type_t) -> usize {
    ALIGNMENT
}

extern "C" fn is_host(_: sys::ggml_backend_buffer_type_t) -> bool {
    false
}

pub fn buft_iface() -> sys::ggml_backend_buffer_type_i {
    sys::ggml_backend_buffer_type_i {
        get_name: Some(buft_get_name),
        alloc_buffer: Some(alloc_buffer),
        alloc_buffer_n: None,
        get_alignment: Some(get_alignment),
        get_max_size: None,
        get_alloc_size: None,
        get_alloc_size_n: None,
        is_host: Some(is_host),
    }
}

/// Whether `buffer` holds its tensors in host memory in ggml's layout (the buffer type says so).
///
/// # Safety
/// `buffer` must be a live ggml buffer.
pub unsafe fn holds_host_memory(buffer: sys::ggml_backend_buffer_t) -> bool {
    // SAFETY: per the contract; a live buffer's type is live.
    unsafe { buft_is_host((*buffer).buft) }
}

/// Whether buffers of type `buft` hold tensors in host memory in ggml's layout.
///
/// # Safety
/// `buft` must be a live ggml buffer type.
pub unsafe fn buft_is_host(buft: sys::ggml_backend_buffer_type_t) -> bool {
    // SAFETY: per the contract.
    unsafe { (*buft).iface.is_host.is_some_and(|f| f(buft)) }
}

/// The bytes of a contiguous tensor in host memory (see [`holds_host_memory`]).
///
/// # Safety
/// `t` must be allocated in a host buffer and stay alive while the slice is used.
pub unsafe fn host_bytes<'a>(t: &sys::ggml_tensor) -> Option<&'a [u8]> {
    let n = nbytes(t)?;
    // SAFETY: per the contract, `n` bytes of the tensor's data are readable host memory.
    (!t.data.is_null()).then(|| unsafe { std::slice::from_raw_parts(t.data as *const u8, n) })
}

/// Whether `buffer` was made by our buffer type.
///
/// # Safety
/// `buffer` must be null or a live ggml buffer.
pub unsafe fn is_ours(
    buffer: sys::ggml_backend_buffer_t,
    buft: sys::ggml_backend_buffer_type_t,
) -> bool {
    // SAFETY: per the contract, a non-null buffer is live.
    !buffer.is_null() && unsafe { (*buffer).buft } == buft
}

/// The weight stored for `t`, repacking a pending one now.
///
/// # Safety
/// `t.buffer` must be one of our buffers.
pub unsafe fn weight_of(t: &sys::ggml_tensor) -> Option<(TqType, Weight)> {
    // SAFETY: per the contract.
    let c = unsafe { ctx(t.buffer) };
    let mut map = c.weights();
    let key = t.data as usize;
    let (ty, w) = map.get(&key)?;
    let ty = *ty;
    match w {
        Weight::Packed(m) => return Some((ty, Weight::Packed(Arc::clone(m)))),
        Weight::Raw => return Some((ty, Weight::Raw)),
        Weight::Pending => {}
    }
    let n = nbytes(t)?;
    let start = range(c, t, 0, n)?;
    // SAFETY: the range lies inside the buffer memory, which holds the uploaded bytes.
    let bytes = unsafe { std::slice::from_raw_parts(start as *const u8, n) };
    let w = repack(ty, t, bytes);
    let out = match &w {
        Weight::Packed(m) => Weight::Packed(Arc::clone(m)),
        _ => Weight::Raw,
    };
    map.insert(key, (ty, w));
    Some((ty, out))
}

/// ggml's bytes of a weight kept raw in our buffer memory.
///
/// # Safety
/// `t.buffer` must be one of our buffers and `t` must stay alive while the slice is used.
pub unsafe fn raw_bytes<'a>(t: &sys::ggml_tensor) -> Option<&'a [u8]> {
    // SAFETY: per the contract.
    let c = unsafe { ctx(t.buffer) };
    let n = nbytes(t)?;
    let start = range(c, t, 0, n)?;
    // SAFETY: the range lies inside the buffer memory, which outlives the tensor.
    Some(unsafe { std::slice::from_raw_parts(start as *const u8, n) })
}
