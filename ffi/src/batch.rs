//! Batches, `bitnet_decode` and reading logits.

use std::ffi::c_void;

use crate::context::{bitnet_context, State};
use crate::error::{
    bitnet_status, guard, FfiError, FfiResult, BITNET_ERR_CONTEXT_FULL, BITNET_ERR_POSITION,
};
use crate::text::{handle, put, slice};
use crate::{bitnet_pos, bitnet_token};

/// `struct bitnet_batch`: arrays owned by the caller or by `bitnet_batch_init`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bitnet_batch {
    pub n_tokens: i32,
    pub token: *mut bitnet_token,
    pub pos: *mut bitnet_pos,
    pub logits: *mut i8,
}

// The C allocator, so that the arrays need no hidden capacity to be freed (as llama.cpp).
extern "C" {
    fn calloc(n: usize, size: usize) -> *mut c_void;
    fn free(ptr: *mut c_void);
}

/// Allocates the arrays of a batch of up to `n_tokens_max` tokens.
///
/// # Safety
/// `batch` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn bitnet_batch_init(
    n_tokens_max: i32,
    batch: *mut bitnet_batch,
) -> bitnet_status {
    guard(|| {
        if batch.is_null() {
            return Err(FfiError::null("batch"));
        }
        let n = usize::try_from(n_tokens_max)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                FfiError::invalid(format!("n_tokens_max must be > 0, got {n_tokens_max}"))
            })?;
        // SAFETY: calloc with a nonzero count; results are checked for NULL below.
        let (token, pos, logits) = unsafe {
            (
                calloc(n, std::mem::size_of::<bitnet_token>()),
                calloc(n, std::mem::size_of::<bitnet_pos>()),
                calloc(n, std::mem::size_of::<i8>()),
            )
        };
        if token.is_null() || pos.is_null() || logits.is_null() {
            // SAFETY: free accepts NULL and pointers from calloc.
            unsafe {
                free(token);
                free(pos);
                free(logits);
            }
            return Err(FfiError::invalid(format!(
                "cannot allocate a batch of {n} tokens"
            )));
        }
        let b = bitnet_batch {
            n_tokens: 0,
            token: token.cast(),
            pos: pos.cast(),
            logits: logits.cast(),
        };
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { put(batch, b, "batch") }
    })
}

/// Frees the arrays of a batch from `bitnet_batch_init` (NULL: no-op).
///
/// # Safety
/// `batch` is NULL or a batch filled by `bitnet_batch_init` and not freed since.
#[no_mangle]
pub unsafe extern "C" fn bitnet_batch_free(batch: *mut bitnet_batch) {
    guard(|| {
        // SAFETY: NULL or writable per the contract.
        if let Some(b) = unsafe { batch.as_mut() } {
            // SAFETY: the arrays come from calloc (or are NULL) per the contract.
            unsafe {
                free(b.token.cast());
                free(b.pos.cast());
                free(b.logits.cast());
            }
            *b = bitnet_batch {
                n_tokens: 0,
                token: std::ptr::null_mut(),
                pos: std::ptr::null_mut(),
                logits: std::ptr::null_mut(),
            };
        }
        Ok(())
    });
}

/// What a batch asks for, checked against the context.
struct Plan {
    ids: Vec<u32>,
    start: usize,
    /// Which tokens keep their logits.
    wanted: Vec<bool>,
}

/// Checks a batch; `n_past` is the number of cached positions.
///
/// # Safety
/// The arrays of `batch` hold `n_tokens` readable elements (or are NULL where allowed).
unsafe fn plan(
    c: &bitnet_context,
    batch: &bitnet_batch,
    n_past: usize,
    n_ctx: usize,
) -> FfiResult<Plan> {
    let n = usize::try_from(batch.n_tokens)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            FfiError::invalid(format!(
                "batch.n_tokens must be > 0, got {}",
                batch.n_tokens
            ))
        })?;
    // SAFETY: forwarded contract.
    let tokens = unsafe { slice(batch.token, n, "batch.token") }?;
    let n_vocab = c.model.n_vocab();
    let ids = tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| match u32::try_from(t) {
            Ok(id) if (id as usize) < n_vocab => Ok(id),
            _ => Err(FfiError::new(
                crate::error::BITNET_ERR_TOKEN,
                format!("batch.token[{i}] = {t} is outside the vocabulary of {n_vocab} tokens"),
            )),
        })
        .collect::<FfiResult<Vec<u32>>>()?;
    let start = if batch.pos.is_null() {
        n_past
    } else {
        // SAFETY: forwarded contract.
        let pos = unsafe { slice(batch.pos.cast_const(), n, "batch.pos") }?;
        let p0 = pos[0];
        let start = usize::try_from(p0)
            .ok()
            .filter(|&s| s <= n_past)
            .ok_or_else(|| {
                FfiError::new(
                    BITNET_ERR_POSITION,
                    format!("batch.pos[0] = {p0} must be in 0..={n_past} (the cached positions)"),
                )
            })?;
        if let Some(i) = (1..n).find(|&i| i64::from(pos[i]) != i64::from(p0) + i as i64) {
            return Err(FfiError::new(
                BITNET_ERR_POSITION,
                format!(
                    "batch.pos[{i}] = {} but positions must be consecutive from {p0}",
                    pos[i]
                ),
            ));
        }
        start
    };
    if start + n > n_ctx {
        return Err(FfiError::new(
            BITNET_ERR_CONTEXT_FULL,
            format!("{n} tokens at position {start} do not fit the context of {n_ctx} positions"),
        ));
    }
    let wanted = if batch.logits.is_null() {
        (0..n).map(|i| i == n - 1).collect()
    } else {
        // SAFETY: forwarded contract.
        let flags = unsafe { slice(batch.logits.cast_const(), n, "batch.logits") }?;
        flags.iter().map(|&f| f != 0).collect()
    };
    Ok(Plan { ids, start, wanted })
}

/// Runs the model on the planned batch and records its outputs.
fn run(c: &bitnet_context, st: &mut State, plan: Plan) -> FfiResult<()> {
    let Plan { ids, start, wanted } = plan;
    st.truncate(start);
    let n_vocab = c.model.n_vocab();
    let only_last = wanted
        .iter()
        .enumerate()
        .all(|(i, &w)| !w || i == ids.len() - 1);
    let logits = if only_last {
        c.model
            .forward(&mut st.cache, &ids, start)
            .and_then(|t| Ok(t.to_vec1::<f32>()?))
    } else {
        c.model
            .forward_all(&mut st.cache, &ids, start)
            .and_then(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))
    };
    let logits = match logits {
        Ok(l) => l,
        Err(e) => {
            st.truncate(start);
            return Err(FfiError::from_candle(e));
        }
    };
    st.tokens.extend_from_slice(&ids);
    st.batch_start = start;
    let mut next_row = 0;
    st.rows = wanted
        .iter()
        .map(|&w| {
            w.then(|| {
                next_row += 1;
                next_row - 1
            })
        })
        .collect();
    st.logits = if only_last {
        if wanted[ids.len() - 1] {
            logits
        } else {
            Vec::new()
        }
    } else {
        wanted
            .iter()
            .enumerate()
            .filter(|&(_, &w)| w)
            .flat_map(|(i, _)| logits[i * n_vocab..(i + 1) * n_vocab].iter().copied())
            .collect()
    };
    Ok(())
}

/// Decodes a batch.
///
/// # Safety
/// `ctx` is NULL or a live context handle; `batch` is NULL or a batch whose arrays hold
/// `n_tokens` readable elements (pos and logits may be NULL).
#[no_mangle]
pub unsafe extern "C" fn bitnet_decode(
    ctx: *mut bitnet_context,
    batch: *const bitnet_batch,
) -> bitnet_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let c = unsafe { handle(ctx, "ctx") }?;
        // SAFETY: forwarded contract.
        let batch = unsafe { handle(batch, "batch") }?;
        let mut st = c.lock()?;
        let n_past = st.tokens.len();
        let n_ctx = st.cache.capacity();
        // SAFETY: forwarded contract.
        let plan = unsafe { plan(c, batch, n_past, n_ctx) };
        // As documented: after a failed decode the sequence keeps only the positions before
        // the batch (a rejected plan changed nothing; a failed run cut the cache back to the
        // batch start) and the previous batch's logits are gone (no stale rows for the host).
        let result = plan.and_then(|plan| run(c, &mut st, plan));
        if result.is_err() {
            st.forget_outputs();
        }
        result
    })
}

/// Logits of the last token of the last batch.
///
/// # Safety
/// `ctx` is NULL or a live context handle; `logits` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn bitnet_get_logits(
    ctx: *mut bitnet_context,
    logits: *mut *const f32,
) -> bitnet_status {
    // SAFETY: forwarded contract.
    unsafe { bitnet_get_logits_ith(ctx, -1, logits) }
}

/// Logits of token `i` of the last batch.
///
/// # Safety
/// `ctx` is NULL or a live context handle; `logits` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn bitnet_get_logits_ith(
    ctx: *mut bitnet_context,
    i: i32,
    logits: *mut *const f32,
) -> bitnet_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let c = unsafe { handle(ctx, "ctx") }?;
        if logits.is_null() {
            return Err(FfiError::null("logits (the output pointer)"));
        }
        let st = c.lock()?;
        let (_, row) = st.output(i, c.model.n_vocab())?;
        // The pointer stays valid after the lock is released: the buffer changes only on the
        // next decode or KV-cache call, as documented.
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { put(logits, row.as_ptr(), "logits") }
    })
}
