//! KV-cache calls: the whole cache (API 1, sequence 0) and per sequence (API 2, llama.h's
//! `llama_memory_seq_*`). Any change to the cache forgets the last batch's logits.

use bitnet_candle::SeqId;

use crate::context::{bitnet_context, State};
use crate::error::{
    bitnet_status, guard, guard_or, FfiError, FfiResult, BITNET_ERR_POSITION, BITNET_ERR_SEQ_ID,
};
use crate::text::handle;
use crate::{bitnet_pos, bitnet_seq_id};

/// A sequence id from C, checked against the context.
pub(crate) fn seq_arg(st: &State, seq: bitnet_seq_id, what: &str) -> FfiResult<SeqId> {
    let n = st.cache.n_seq_max();
    usize::try_from(seq).ok().filter(|&s| s < n).ok_or_else(|| {
        FfiError::new(
            BITNET_ERR_SEQ_ID,
            format!("{what} = {seq} is not a sequence of this context (0..{n}; see n_seq_max)"),
        )
    })
}

/// Runs `change` on the state, then brings the token lists in line. The last batch's outputs
/// are dropped when a sequence changed (`change` returns `Ok(true)` for a change that keeps
/// the lengths); a call that changes nothing leaves them readable, as in API 1.
fn change_cache(
    ctx: *const bitnet_context,
    change: impl FnOnce(&mut State) -> FfiResult<bool>,
) -> bitnet_status {
    guard(|| {
        // SAFETY: the callers' contract: NULL or a live context handle.
        let c = unsafe { handle(ctx, "ctx") }?;
        let mut st = c.lock()?;
        let lens = |st: &State| -> Vec<usize> {
            (0..st.cache.n_seq_max())
                .map(|s| st.cache.seq_len(s))
                .collect()
        };
        let before = lens(&st);
        let result = change(&mut st);
        st.sync_tokens();
        if result.as_ref().is_ok_and(|&copied| copied) || lens(&st) != before {
            st.forget_outputs();
        }
        result.map(|_| ())
    })
}

/// # Safety
/// `ctx` is NULL or a live context handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_kv_cache_n_tokens(ctx: *const bitnet_context) -> i32 {
    guard_or(-1, || {
        // SAFETY: forwarded contract.
        let c = unsafe { handle(ctx, "ctx") }?;
        Ok(i32::try_from(c.lock()?.cache.seq_len(0)).unwrap_or(i32::MAX))
    })
}

/// # Safety
/// `ctx` is NULL or a live context handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_kv_cache_clear(ctx: *mut bitnet_context) -> bitnet_status {
    change_cache(ctx, |st| {
        st.cache.reset();
        Ok(false)
    })
}

/// # Safety
/// `ctx` is NULL or a live context handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_kv_cache_truncate(
    ctx: *mut bitnet_context,
    n_keep: bitnet_pos,
) -> bitnet_status {
    change_cache(ctx, |st| {
        let n = position(n_keep, "n_keep")?;
        if n < st.cache.seq_len(0) {
            st.cache.seq_truncate(0, n).map_err(FfiError::from_candle)?;
        }
        Ok(false)
    })
}

fn position(p: bitnet_pos, what: &str) -> FfiResult<usize> {
    usize::try_from(p)
        .map_err(|_| FfiError::new(BITNET_ERR_POSITION, format!("{what} must be >= 0, got {p}")))
}

/// Largest position of `seq` (-1 when it is empty or on error).
///
/// # Safety
/// `ctx` is NULL or a live context handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_kv_cache_seq_pos_max(
    ctx: *const bitnet_context,
    seq: bitnet_seq_id,
) -> bitnet_pos {
    guard_or(-1, || {
        // SAFETY: forwarded contract.
        let c = unsafe { handle(ctx, "ctx") }?;
        let st = c.lock()?;
        let s = seq_arg(&st, seq, "seq_id")?;
        Ok(bitnet_pos::try_from(st.cache.seq_len(s)).unwrap_or(bitnet_pos::MAX) - 1)
    })
}

/// Removes positions `[p0, p1)` of `seq` (`seq < 0`: every sequence; `p0 < 0`: from 0;
/// `p1 < 0`: to the end). Positions stay contiguous, so the range must reach the end.
///
/// # Safety
/// `ctx` is NULL or a live context handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_kv_cache_seq_rm(
    ctx: *mut bitnet_context,
    seq: bitnet_seq_id,
    p0: bitnet_pos,
    p1: bitnet_pos,
) -> bitnet_status {
    change_cache(ctx, |st| {
        let seqs: Vec<SeqId> = match seq {
            s if s < 0 => (0..st.cache.n_seq_max()).collect(),
            s => vec![seq_arg(st, s, "seq_id")?],
        };
        let from = usize::try_from(p0).unwrap_or(0);
        let to = usize::try_from(p1).unwrap_or(usize::MAX);
        for &s in &seqs {
            let len = st.cache.seq_len(s);
            if from < len.min(to) && to < len {
                return Err(FfiError::new(
                    BITNET_ERR_POSITION,
                    format!(
                        "cannot remove positions [{p0}, {p1}) of sequence {s}, which holds {len}: \
                         positions stay contiguous, so only a range reaching the end can go"
                    ),
                ));
            }
        }
        for s in seqs {
            if from < st.cache.seq_len(s) && from < to {
                st.cache
                    .seq_truncate(s, from)
                    .map_err(FfiError::from_candle)?;
            }
        }
        Ok(false)
    })
}

/// Makes `dst` hold positions `[0, p1)` of `src` (`p1 < 0`: all of them); what `dst` held is
/// forgotten. The cache pages are shared until either sequence writes into a shared one.
///
/// # Safety
/// `ctx` is NULL or a live context handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_kv_cache_seq_cp(
    ctx: *mut bitnet_context,
    src: bitnet_seq_id,
    dst: bitnet_seq_id,
    p0: bitnet_pos,
    p1: bitnet_pos,
) -> bitnet_status {
    change_cache(ctx, |st| {
        let (s, d) = (seq_arg(st, src, "src")?, seq_arg(st, dst, "dst")?);
        if p0 > 0 {
            return Err(FfiError::new(
                BITNET_ERR_POSITION,
                format!("p0 = {p0}: only a prefix (p0 <= 0) can be copied"),
            ));
        }
        let held = st.cache.seq_len(s);
        let len = usize::try_from(p1).map_or(held, |p| p.min(held));
        if s == d {
            return Ok(false);
        }
        st.cache
            .seq_copy_prefix(s, d, len)
            .map_err(FfiError::from_candle)?;
        let prefix = st.seqs[s][..len].to_vec();
        st.seqs[d] = prefix;
        Ok(true)
    })
}

/// Forgets every sequence but `seq`.
///
/// # Safety
/// `ctx` is NULL or a live context handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_kv_cache_seq_keep(
    ctx: *mut bitnet_context,
    seq: bitnet_seq_id,
) -> bitnet_status {
    change_cache(ctx, |st| {
        let s = seq_arg(st, seq, "seq_id")?;
        st.cache.seq_keep(s).map_err(FfiError::from_candle)?;
        Ok(false)
    })
}
