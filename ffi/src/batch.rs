//! Batches (API 1: one sequence; API 2: a sequence per token), decoding and reading logits.

use std::ffi::c_void;

use bitnet_candle::Batch;

use crate::context::{bitnet_context, Output, State};
use crate::error::{bitnet_status, guard, FfiError, FfiResult, BITNET_ERR_POSITION};
use crate::kv_cache::seq_arg;
use crate::text::{handle, put, slice};
use crate::{bitnet_pos, bitnet_seq_id, bitnet_token};

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

/// A batch capacity from C.
fn capacity(n_tokens_max: i32) -> FfiResult<usize> {
    usize::try_from(n_tokens_max)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| FfiError::invalid(format!("n_tokens_max must be > 0, got {n_tokens_max}")))
}

/// Zeroed arrays of `n` elements of each size, from the C allocator (all or none).
fn alloc_arrays<const K: usize>(n: usize, sizes: [usize; K]) -> FfiResult<[*mut c_void; K]> {
    // SAFETY: calloc with nonzero counts; results are checked for NULL below.
    let arrays = sizes.map(|size| unsafe { calloc(n, size) });
    if arrays.iter().any(|p| p.is_null()) {
        for p in arrays {
            // SAFETY: free accepts NULL and pointers from calloc.
            unsafe { free(p) };
        }
        return Err(FfiError::invalid(format!(
            "cannot allocate a batch of {n} tokens"
        )));
    }
    Ok(arrays)
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
        let n = capacity(n_tokens_max)?;
        let [token, pos, logits] = alloc_arrays(
            n,
            [
                std::mem::size_of::<bitnet_token>(),
                std::mem::size_of::<bitnet_pos>(),
                std::mem::size_of::<i8>(),
            ],
        )?;
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

/// `struct bitnet_seq_batch` (API 2): arrays owned by the caller or by `bitnet_seq_batch_init`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bitnet_seq_batch {
    pub n_tokens: i32,
    pub token: *mut bitnet_token,
    pub pos: *mut bitnet_pos,
    pub seq_id: *mut bitnet_seq_id,
    pub logits: *mut i8,
}

/// Allocates the arrays of a sequence batch of up to `n_tokens_max` tokens.
///
/// # Safety
/// `batch` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn bitnet_seq_batch_init(
    n_tokens_max: i32,
    batch: *mut bitnet_seq_batch,
) -> bitnet_status {
    guard(|| {
        if batch.is_null() {
            return Err(FfiError::null("batch"));
        }
        let n = capacity(n_tokens_max)?;
        let [token, pos, seq_id, logits] = alloc_arrays(
            n,
            [
                std::mem::size_of::<bitnet_token>(),
                std::mem::size_of::<bitnet_pos>(),
                std::mem::size_of::<bitnet_seq_id>(),
                std::mem::size_of::<i8>(),
            ],
        )?;
        let b = bitnet_seq_batch {
            n_tokens: 0,
            token: token.cast(),
            pos: pos.cast(),
            seq_id: seq_id.cast(),
            logits: logits.cast(),
        };
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { put(batch, b, "batch") }
    })
}

/// Frees the arrays of a sequence batch from `bitnet_seq_batch_init` (NULL: no-op).
///
/// # Safety
/// `batch` is NULL or a batch filled by `bitnet_seq_batch_init` and not freed since.
#[no_mangle]
pub unsafe extern "C" fn bitnet_seq_batch_free(batch: *mut bitnet_seq_batch) {
    guard(|| {
        // SAFETY: NULL or writable per the contract.
        if let Some(b) = unsafe { batch.as_mut() } {
            // SAFETY: the arrays come from calloc (or are NULL) per the contract.
            unsafe {
                free(b.token.cast());
                free(b.pos.cast());
                free(b.seq_id.cast());
                free(b.logits.cast());
            }
            *b = bitnet_seq_batch {
                n_tokens: 0,
                token: std::ptr::null_mut(),
                pos: std::ptr::null_mut(),
                seq_id: std::ptr::null_mut(),
                logits: std::ptr::null_mut(),
            };
        }
        Ok(())
    });
}

/// Converts C token ids, checking each against the vocabulary.
fn token_ids(tokens: &[bitnet_token], n_vocab: usize, what: &str) -> FfiResult<Vec<u32>> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| match u32::try_from(t) {
            Ok(id) if (id as usize) < n_vocab => Ok(id),
            _ => Err(FfiError::new(
                crate::error::BITNET_ERR_TOKEN,
                format!("{what}.token[{i}] = {t} is outside the vocabulary of {n_vocab} tokens"),
            )),
        })
        .collect()
}

/// The token count of a batch, checked against the context's `n_batch`.
fn batch_len(c: &bitnet_context, n_tokens: i32, what: &str) -> FfiResult<usize> {
    let n = usize::try_from(n_tokens)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| FfiError::invalid(format!("{what}.n_tokens must be > 0, got {n_tokens}")))?;
    if let Some(limit) = c.n_batch.filter(|&limit| n > limit) {
        return Err(FfiError::invalid(format!(
            "{what}.n_tokens = {n} exceeds the context's n_batch of {limit} (raise \
             bitnet_context_params.n_batch or split the batch)"
        )));
    }
    Ok(n)
}

fn position(p: bitnet_pos, i: usize, what: &str) -> FfiResult<usize> {
    usize::try_from(p).map_err(|_| {
        FfiError::new(
            BITNET_ERR_POSITION,
            format!("{what}.pos[{i}] = {p} is negative"),
        )
    })
}

/// Which tokens keep their logits: `flags[i] != 0`, or only the last token when NULL.
///
/// # Safety
/// `flags` is NULL or holds `n` readable elements.
unsafe fn wanted(flags: *const i8, n: usize, what: &str) -> FfiResult<Vec<bool>> {
    if flags.is_null() {
        return Ok((0..n).map(|i| i == n - 1).collect());
    }
    // SAFETY: forwarded contract.
    let flags = unsafe { slice(flags, n, &format!("{what}.logits")) }?;
    Ok(flags.iter().map(|&f| f != 0).collect())
}

/// An API 1 batch: every token in sequence 0.
///
/// # Safety
/// The arrays of `batch` hold `n_tokens` readable elements (or are NULL where allowed).
unsafe fn plan_v1(c: &bitnet_context, st: &State, batch: &bitnet_batch) -> FfiResult<Batch> {
    let n = batch_len(c, batch.n_tokens, "batch")?;
    // SAFETY: forwarded contract.
    let tokens = unsafe { slice(batch.token, n, "batch.token") }?;
    let ids = token_ids(tokens, c.model.n_vocab(), "batch")?;
    let start = if batch.pos.is_null() {
        st.cache.seq_len(0)
    } else {
        // SAFETY: forwarded contract.
        let pos = unsafe { slice(batch.pos.cast_const(), n, "batch.pos") }?;
        let start = position(pos[0], 0, "batch")?;
        if let Some(i) = (1..n).find(|&i| i64::from(pos[i]) != i64::from(pos[0]) + i as i64) {
            return Err(FfiError::new(
                BITNET_ERR_POSITION,
                format!(
                    "batch.pos[{i}] = {} but positions must be consecutive from {}",
                    pos[i], pos[0]
                ),
            ));
        }
        start
    };
    // SAFETY: forwarded contract.
    let wanted = unsafe { wanted(batch.logits.cast_const(), n, "batch") }?;
    let mut b = Batch::new();
    for (i, (&id, &w)) in ids.iter().zip(&wanted).enumerate() {
        b.add(id, start + i, 0, w);
    }
    Ok(b)
}

/// An API 2 batch: a sequence per token.
///
/// # Safety
/// The arrays of `batch` hold `n_tokens` readable elements (logits may be NULL).
unsafe fn plan_seqs(c: &bitnet_context, st: &State, batch: &bitnet_seq_batch) -> FfiResult<Batch> {
    let n = batch_len(c, batch.n_tokens, "batch")?;
    // SAFETY (three calls): forwarded contract.
    let tokens = unsafe { slice(batch.token, n, "batch.token") }?;
    let pos = unsafe { slice(batch.pos.cast_const(), n, "batch.pos") }?;
    let seqs = unsafe { slice(batch.seq_id.cast_const(), n, "batch.seq_id") }?;
    let ids = token_ids(tokens, c.model.n_vocab(), "batch")?;
    // SAFETY: forwarded contract.
    let wanted = unsafe { wanted(batch.logits.cast_const(), n, "batch") }?;
    let mut b = Batch::new();
    for i in 0..n {
        let seq = seq_arg(st, seqs[i], &format!("batch.seq_id[{i}]"))?;
        b.add(ids[i], position(pos[i], i, "batch")?, seq, wanted[i]);
    }
    Ok(b)
}

/// Runs the model on a batch and records its outputs. On failure the last batch's outputs are
/// gone and every sequence of the batch keeps at most the positions before its first token in it.
fn run(c: &bitnet_context, st: &mut State, batch: FfiResult<Batch>) -> FfiResult<()> {
    st.forget_outputs();
    let batch = batch?;
    let result = c.model.weights().decode(&mut st.cache, &batch);
    st.sync_tokens();
    let logits = result.map_err(FfiError::from_candle)?;
    let mut next_row = 0;
    for i in 0..batch.len() {
        let (seq, pos) = (batch.seqs()[i], batch.positions()[i]);
        let tokens = &mut st.seqs[seq];
        tokens.truncate(pos);
        tokens.push(batch.tokens()[i]);
        let row = batch.logits()[i].then(|| {
            next_row += 1;
            next_row - 1
        });
        st.outputs.push(Output { seq, pos, row });
    }
    st.logits = logits.into_values();
    Ok(())
}

/// Decodes a batch (API 1: every token in sequence 0).
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
        // SAFETY: forwarded contract.
        let planned = unsafe { plan_v1(c, &st, batch) };
        run(c, &mut st, planned)
    })
}

/// Decodes a batch of tokens of any sequences (API 2).
///
/// # Safety
/// `ctx` is NULL or a live context handle; `batch` is NULL or a batch whose arrays hold
/// `n_tokens` readable elements (logits may be NULL).
#[no_mangle]
pub unsafe extern "C" fn bitnet_decode_seqs(
    ctx: *mut bitnet_context,
    batch: *const bitnet_seq_batch,
) -> bitnet_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let c = unsafe { handle(ctx, "ctx") }?;
        // SAFETY: forwarded contract.
        let batch = unsafe { handle(batch, "batch") }?;
        let mut st = c.lock()?;
        // SAFETY: forwarded contract.
        let planned = unsafe { plan_seqs(c, &st, batch) };
        run(c, &mut st, planned)
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
