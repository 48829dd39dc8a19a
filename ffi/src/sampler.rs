//! `bitnet_sampler`: greedy, temperature, top-k, top-p and repeat penalty with a seeded RNG
//! (the model crate's `Sampler`, so C and Rust choose identical tokens).

use std::sync::{Mutex, TryLockError};

use bitnet_candle::{Sampler, SamplingParams};

use crate::context::bitnet_context;
use crate::error::{bitnet_status, guard, FfiError, FfiResult, BITNET_ERR_BUSY};
use crate::params::{self, Versioned};
use crate::text::{handle, put};
use crate::{bitnet_token, BITNET_DEFAULT_SEED};

/// Options of `bitnet_sampler_init` (versioned, see params.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bitnet_sampler_params {
    pub struct_size: usize,
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: i32,
    pub seed: u32,
}

impl Versioned for bitnet_sampler_params {
    const NAME: &'static str = "bitnet_sampler_params";
    const MIN_SIZE: usize =
        std::mem::offset_of!(bitnet_sampler_params, seed) + std::mem::size_of::<u32>();

    fn defaults() -> Self {
        let d = SamplingParams::default();
        Self {
            struct_size: std::mem::size_of::<Self>(),
            temperature: d.temperature,
            top_k: 0,
            top_p: d.top_p,
            repeat_penalty: d.repeat_penalty,
            repeat_last_n: i32::try_from(d.repeat_last_n).unwrap_or(i32::MAX),
            seed: BITNET_DEFAULT_SEED,
        }
    }
}

/// A sampler: settings plus the RNG, created at the first draw (when the seed may come from
/// the context).
pub struct bitnet_sampler {
    params: SamplingParams,
    /// `None`: take the seed of the context sampled from.
    seed: Option<u32>,
    rng: Mutex<Option<Sampler>>,
}

impl bitnet_sampler {
    fn new(p: &bitnet_sampler_params) -> FfiResult<Self> {
        let repeat_last_n = usize::try_from(p.repeat_last_n).map_err(|_| {
            FfiError::invalid(format!(
                "repeat_last_n must be >= 0, got {}",
                p.repeat_last_n
            ))
        })?;
        let params = SamplingParams {
            temperature: p.temperature,
            top_k: usize::try_from(p.top_k).unwrap_or(0),
            top_p: p.top_p,
            repeat_penalty: p.repeat_penalty,
            repeat_last_n,
            seed: 0,
        };
        params.validate().map_err(FfiError::from_candle)?;
        Ok(Self {
            params,
            seed: (p.seed != BITNET_DEFAULT_SEED).then_some(p.seed),
            rng: Mutex::new(None),
        })
    }

    fn lock(&self) -> FfiResult<std::sync::MutexGuard<'_, Option<Sampler>>> {
        match self.rng.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(FfiError::new(
                BITNET_ERR_BUSY,
                "the sampler is in use by another thread",
            )),
            // A panic mid-draw leaves at worst an advanced RNG: keep going.
            Err(TryLockError::Poisoned(p)) => {
                self.rng.clear_poison();
                Ok(p.into_inner())
            }
        }
    }
}

/// Fills `*params` with the defaults.
///
/// # Safety
/// `params` is NULL or points to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn bitnet_sampler_params_init(
    params: *mut bitnet_sampler_params,
    struct_size: usize,
) -> bitnet_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { params::init(params, struct_size) })
}

/// Creates a sampler.
///
/// # Safety
/// `params` is NULL or a valid params struct; `smpl` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn bitnet_sampler_init(
    params: *const bitnet_sampler_params,
    smpl: *mut *mut bitnet_sampler,
) -> bitnet_status {
    guard(|| {
        if smpl.is_null() {
            return Err(FfiError::null("smpl (the output pointer)"));
        }
        // SAFETY: non-NULL and writable per the contract.
        unsafe { smpl.write(std::ptr::null_mut()) };
        // SAFETY: forwarded contract.
        let p = unsafe { params::read(params) }?;
        let sampler = bitnet_sampler::new(&p)?;
        // SAFETY: checked non-NULL and writable above.
        unsafe { put(smpl, Box::into_raw(Box::new(sampler)), "smpl") }
    })
}

/// Creates a greedy sampler.
///
/// # Safety
/// `smpl` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn bitnet_sampler_init_greedy(
    smpl: *mut *mut bitnet_sampler,
) -> bitnet_status {
    // SAFETY: forwarded contract; NULL params are the (greedy) defaults.
    unsafe { bitnet_sampler_init(std::ptr::null(), smpl) }
}

/// Frees a sampler (NULL: no-op).
///
/// # Safety
/// `smpl` is NULL or a live sampler handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn bitnet_sampler_free(smpl: *mut bitnet_sampler) {
    guard(|| {
        if !smpl.is_null() {
            // SAFETY: a live handle from bitnet_sampler_init, freed once per the contract.
            drop(unsafe { Box::from_raw(smpl) });
        }
        Ok(())
    });
}

/// Restarts the RNG from the seed.
///
/// # Safety
/// `smpl` is NULL or a live sampler handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_sampler_reset(smpl: *mut bitnet_sampler) -> bitnet_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { handle(smpl, "smpl") }?;
        *s.lock()? = None;
        Ok(())
    })
}

/// Chooses a token from the logits of token `i` of the context's last batch.
///
/// # Safety
/// `smpl` and `ctx` are NULL or live handles; `token` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn bitnet_sampler_sample(
    smpl: *mut bitnet_sampler,
    ctx: *mut bitnet_context,
    i: i32,
    token: *mut bitnet_token,
) -> bitnet_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { handle(smpl, "smpl") }?;
        // SAFETY: forwarded contract.
        let c = unsafe { handle(ctx, "ctx") }?;
        if token.is_null() {
            return Err(FfiError::null("token (the output pointer)"));
        }
        let mut rng = s.lock()?;
        let st = c.lock()?;
        let (out, logits) = st.output(i, c.model.n_vocab())?;
        // The sequence up to and including the token (the outputs are forgotten whenever a
        // sequence loses positions, so it holds them).
        let history = st.seqs[out.seq]
            .get(..out.pos + 1)
            .ok_or_else(|| FfiError::new(crate::error::BITNET_ERR_INTERNAL, "stale outputs"))?;
        let sampler = match rng.as_mut() {
            Some(sampler) => sampler,
            None => {
                let seed = s.seed.unwrap_or(c.seed);
                let params = SamplingParams {
                    seed: u64::from(seed),
                    ..s.params.clone()
                };
                rng.insert(Sampler::new(params).map_err(FfiError::from_candle)?)
            }
        };
        let id = sampler
            .sample(logits, history)
            .map_err(FfiError::from_candle)?;
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { put(token, id as bitnet_token, "token") }
    })
}
