//! `bitnet_context`: sequences on a shared model (one KV cache for `n_seq_max` sequences, their
//! tokens, the last batch's logits).

use std::sync::{Mutex, MutexGuard, TryLockError};

use bitnet_candle::{KvCache, KvDtype, Model, SeqId};

use crate::error::{bitnet_status, guard, guard_or, FfiError, FfiResult, BITNET_ERR_BUSY};
use crate::model::bitnet_model;
use crate::params::{self, Versioned};
use crate::text::{handle, put};

/// `enum bitnet_kv_type` (C gives an enum without negative values the type `unsigned int`).
pub type bitnet_kv_type = std::ffi::c_uint;
pub const BITNET_KV_F32: bitnet_kv_type = 0;
pub const BITNET_KV_F16: bitnet_kv_type = 1;

/// Options of `bitnet_context_init` (versioned, see params.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bitnet_context_params {
    pub struct_size: usize,
    pub n_ctx: u32,
    pub n_threads: i32,
    pub seed: u32,
    pub type_kv: i32,
    pub n_seq_max: u32,
    pub n_batch: u32,
}

impl Versioned for bitnet_context_params {
    const NAME: &'static str = "bitnet_context_params";
    const MIN_SIZE: usize =
        std::mem::offset_of!(bitnet_context_params, type_kv) + std::mem::size_of::<i32>();

    fn defaults() -> Self {
        Self {
            struct_size: std::mem::size_of::<Self>(),
            n_ctx: 0,
            n_threads: 0,
            seed: 0,
            type_kv: BITNET_KV_F32 as i32,
            n_seq_max: 1,
            n_batch: 0,
        }
    }
}

/// A context. Everything mutable sits behind a mutex so that a second thread entering a busy
/// context gets `BITNET_ERR_BUSY` rather than a data race.
pub struct bitnet_context {
    pub(crate) model: Model,
    pub(crate) seed: u32,
    /// Most tokens one decode call may hold, when set (else the context decides: a batch too
    /// long for it is BITNET_ERR_CONTEXT_FULL, as in API 1).
    pub(crate) n_batch: Option<usize>,
    state: Mutex<State>,
}

/// One token of the last batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Output {
    pub(crate) seq: SeqId,
    pub(crate) pos: usize,
    /// Its row in `State::logits`, if it asked for logits.
    pub(crate) row: Option<usize>,
}

/// The sequences and the outputs of the last batch.
pub(crate) struct State {
    pub(crate) cache: KvCache,
    /// Tokens of each sequence at positions 0.. (what the cache holds).
    pub(crate) seqs: Vec<Vec<u32>>,
    /// Every token of the last batch.
    pub(crate) outputs: Vec<Output>,
    /// Logits of the last batch's output tokens, `[n_outputs, n_vocab]`.
    pub(crate) logits: Vec<f32>,
}

impl State {
    /// Makes the token lists agree with the cache after it changed (positions only go away).
    pub(crate) fn sync_tokens(&mut self) {
        for (s, tokens) in self.seqs.iter_mut().enumerate() {
            tokens.truncate(self.cache.seq_len(s));
        }
    }

    /// Forgets the last batch's outputs (its logits can no longer be read).
    pub(crate) fn forget_outputs(&mut self) {
        self.outputs.clear();
        self.logits.clear();
    }

    /// Forgets every sequence and the last batch's outputs.
    pub(crate) fn clear(&mut self) {
        self.cache.reset();
        self.sync_tokens();
        self.forget_outputs();
    }

    /// Index into the last batch (`i < 0` counts from the end), its token and its logits row.
    pub(crate) fn output(&self, i: i32, n_vocab: usize) -> FfiResult<(Output, &[f32])> {
        let n = self.outputs.len();
        if n == 0 {
            return Err(FfiError::new(
                crate::error::BITNET_ERR_NO_LOGITS,
                "no logits: nothing was decoded since the context was created or its KV cache changed",
            ));
        }
        let idx = if i < 0 { n as i64 + i as i64 } else { i as i64 };
        let idx = usize::try_from(idx)
            .ok()
            .filter(|&x| x < n)
            .ok_or_else(|| {
                FfiError::invalid(format!("index {i} is outside the last batch of {n} tokens"))
            })?;
        let out = self.outputs[idx];
        let row = out.row.ok_or_else(|| {
            FfiError::new(
                crate::error::BITNET_ERR_NO_LOGITS,
                format!("token {idx} of the last batch did not request logits (batch.logits[{idx}] = 0)"),
            )
        })?;
        Ok((out, &self.logits[row * n_vocab..(row + 1) * n_vocab]))
    }
}

impl bitnet_context {
    /// Enters the context for the calling thread.
    pub(crate) fn lock(&self) -> FfiResult<MutexGuard<'_, State>> {
        match self.state.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(FfiError::new(
                BITNET_ERR_BUSY,
                "the context is in use by another thread (use one context per thread)",
            )),
            Err(TryLockError::Poisoned(p)) => {
                // An earlier call failed with an internal error mid-way: the sequences may be
                // inconsistent, so they are forgotten (documented for BITNET_ERR_INTERNAL).
                let mut g = p.into_inner();
                g.clear();
                self.state.clear_poison();
                Ok(g)
            }
        }
    }
}

/// Fills `*params` with the defaults.
///
/// # Safety
/// `params` is NULL or points to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn bitnet_context_params_init(
    params: *mut bitnet_context_params,
    struct_size: usize,
) -> bitnet_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { params::init(params, struct_size) })
}

/// Creates a context on `model`.
///
/// # Safety
/// `model` is NULL or a live model handle; `params` is NULL or a valid params struct; `ctx` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn bitnet_context_init(
    model: *const bitnet_model,
    params: *const bitnet_context_params,
    ctx: *mut *mut bitnet_context,
) -> bitnet_status {
    guard(|| {
        if ctx.is_null() {
            return Err(FfiError::null("ctx (the output pointer)"));
        }
        // SAFETY: non-NULL and writable per the contract.
        unsafe { ctx.write(std::ptr::null_mut()) };
        // SAFETY: forwarded contract.
        let m = unsafe { handle(model, "model") }?;
        // SAFETY: forwarded contract.
        let p = unsafe { params::read(params) }?;
        let kv = match p.type_kv {
            t if t == BITNET_KV_F32 as i32 => KvDtype::F32,
            t if t == BITNET_KV_F16 as i32 => KvDtype::F16,
            t => {
                return Err(FfiError::invalid(format!(
                    "type_kv {t} is not a bitnet_kv_type"
                )))
            }
        };
        let n_threads = usize::try_from(p.n_threads).map_err(|_| {
            FfiError::invalid(format!("n_threads must be >= 0, got {}", p.n_threads))
        })?;
        let n_ctx = match p.n_ctx {
            0 => m.model.weights().max_context(),
            n => n as usize,
        };
        if p.n_seq_max == 0 {
            return Err(FfiError::invalid("n_seq_max must be at least 1"));
        }
        let n_seq_max = p.n_seq_max as usize;
        let n_batch = (p.n_batch > 0).then_some(p.n_batch as usize);
        let cache = m
            .model
            .weights()
            .new_multi_cache(n_ctx, n_seq_max, kv)
            .map_err(FfiError::from_candle)?;
        if n_threads > 0 {
            bitnet_backend::threads::set_num_threads(n_threads);
        }
        let context = bitnet_context {
            model: m.model.clone(),
            seed: p.seed,
            n_batch,
            state: Mutex::new(State {
                cache,
                seqs: vec![Vec::new(); n_seq_max],
                outputs: Vec::new(),
                logits: Vec::new(),
            }),
        };
        // SAFETY: checked non-NULL and writable above.
        unsafe { put(ctx, Box::into_raw(Box::new(context)), "ctx") }
    })
}

/// Frees a context (NULL: no-op).
///
/// # Safety
/// `ctx` is NULL or a live context handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn bitnet_free(ctx: *mut bitnet_context) {
    guard(|| {
        if !ctx.is_null() {
            // SAFETY: a live handle from bitnet_context_init, freed once per the contract.
            drop(unsafe { Box::from_raw(ctx) });
        }
        Ok(())
    });
}

/// # Safety
/// `ctx` is NULL or a live context handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_n_ctx(ctx: *const bitnet_context) -> u32 {
    guard_or(0, || {
        // SAFETY: forwarded contract.
        let c = unsafe { handle(ctx, "ctx") }?;
        Ok(u32::try_from(c.lock()?.cache.capacity()).unwrap_or(u32::MAX))
    })
}

/// # Safety
/// `ctx` is NULL or a live context handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_n_seq_max(ctx: *const bitnet_context) -> u32 {
    guard_or(0, || {
        // SAFETY: forwarded contract.
        let c = unsafe { handle(ctx, "ctx") }?;
        Ok(u32::try_from(c.lock()?.cache.n_seq_max()).unwrap_or(u32::MAX))
    })
}

/// # Safety
/// `ctx` is NULL or a live context handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_n_batch(ctx: *const bitnet_context) -> u32 {
    guard_or(0, || {
        // SAFETY: forwarded contract.
        let c = unsafe { handle(ctx, "ctx") }?;
        let n = c.n_batch.unwrap_or(c.lock()?.cache.capacity());
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    })
}
