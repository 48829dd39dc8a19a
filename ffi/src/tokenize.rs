//! Text ⇄ tokens and the special tokens of the vocabulary.

use std::ffi::c_char;

use crate::error::{bitnet_status, guard, guard_or, FfiError, BITNET_ERR_BUFFER_TOO_SMALL};
use crate::model::bitnet_model;
use crate::text::{handle, len_arg, slice, text_arg, write_text};
use crate::{bitnet_token, BITNET_TOKEN_NULL};

impl bitnet_model {
    /// Token ids of `text`; see `bitnet_tokenize` for the flags.
    fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, FfiError> {
        self.model
            .tokenizer()
            .encode_with(text, add_special, parse_special)
            .map_err(FfiError::from_candle)
    }
}

/// Text to token ids.
///
/// # Safety
/// Pointers as documented in bitnet.h: `text` has `text_len` bytes (or is NUL-terminated when
/// `text_len < 0`), `tokens` has room for `n_tokens_max` ids, `n_tokens` is NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn bitnet_tokenize(
    model: *const bitnet_model,
    text: *const c_char,
    text_len: i32,
    tokens: *mut bitnet_token,
    n_tokens_max: i32,
    add_special: bool,
    parse_special: bool,
    n_tokens: *mut i32,
) -> bitnet_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { handle(model, "model") }?;
        // SAFETY: forwarded contract.
        let text = unsafe { text_arg(text, text_len, "text") }?;
        let max = len_arg(n_tokens_max, "n_tokens_max")?;
        let ids = m.encode(text, add_special, parse_special)?;
        let n = i32::try_from(ids.len()).map_err(|_| {
            FfiError::invalid(format!("{} tokens do not fit an int32_t", ids.len()))
        })?;
        if !n_tokens.is_null() {
            // SAFETY: non-NULL and writable per the contract.
            unsafe { n_tokens.write(n) };
        }
        if ids.len() > max {
            return Err(FfiError::new(
                BITNET_ERR_BUFFER_TOO_SMALL,
                format!("the text has {} tokens, the buffer holds {max}", ids.len()),
            ));
        }
        if tokens.is_null() && !ids.is_empty() {
            return Err(FfiError::null("tokens"));
        }
        for (i, &id) in ids.iter().enumerate() {
            // SAFETY: i < ids.len() <= n_tokens_max elements of room per the contract.
            unsafe { tokens.add(i).write(id as bitnet_token) };
        }
        Ok(())
    })
}

/// The bytes of one token.
///
/// # Safety
/// `buf` has `buf_size` writable bytes (or is NULL with `buf_size == 0`); `n_written` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn bitnet_token_to_piece(
    model: *const bitnet_model,
    token: bitnet_token,
    buf: *mut c_char,
    buf_size: i32,
    special: bool,
    n_written: *mut i32,
) -> bitnet_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { handle(model, "model") }?;
        let id = m.token(token, "token")?;
        let bytes = m
            .pieces
            .bytes(m.model.tokenizer(), id, special)
            .map_err(FfiError::from_candle)?;
        // SAFETY: forwarded contract.
        unsafe { write_text(&bytes, buf, buf_size, n_written) }
    })
}

/// Token ids to text.
///
/// # Safety
/// `tokens` has `n_tokens` readable ids; `buf` has `buf_size` writable bytes (or is NULL with
/// `buf_size == 0`); `n_written` is NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn bitnet_detokenize(
    model: *const bitnet_model,
    tokens: *const bitnet_token,
    n_tokens: i32,
    buf: *mut c_char,
    buf_size: i32,
    remove_special: bool,
    unparse_special: bool,
    n_written: *mut i32,
) -> bitnet_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { handle(model, "model") }?;
        // SAFETY: forwarded contract.
        let tokens = unsafe { slice(tokens, len_arg(n_tokens, "n_tokens")?, "tokens") }?;
        let mut ids = tokens
            .iter()
            .enumerate()
            .map(|(i, &t)| m.token(t, &format!("tokens[{i}]")))
            .collect::<Result<Vec<u32>, _>>()?;
        let tok = m.model.tokenizer();
        if remove_special && tok.bos().is_some() && ids.first().copied() == tok.bos() {
            ids.remove(0);
        }
        let text = tok
            .decode(&ids, !unparse_special)
            .map_err(FfiError::from_candle)?;
        // SAFETY: forwarded contract.
        unsafe { write_text(text.as_bytes(), buf, buf_size, n_written) }
    })
}

/// # Safety
/// `model` is NULL or a live model handle.
unsafe fn special(
    model: *const bitnet_model,
    pick: impl FnOnce(&bitnet_candle::Model) -> Option<u32>,
) -> bitnet_token {
    guard_or(BITNET_TOKEN_NULL, || {
        // SAFETY: forwarded contract.
        let m = unsafe { handle(model, "model") }?;
        Ok(pick(&m.model).map_or(BITNET_TOKEN_NULL, |t| t as bitnet_token))
    })
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_token_bos(model: *const bitnet_model) -> bitnet_token {
    // SAFETY: forwarded contract.
    unsafe { special(model, |m| m.bos()) }
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_token_eos(model: *const bitnet_model) -> bitnet_token {
    // SAFETY: forwarded contract.
    unsafe { special(model, |m| m.eos()) }
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_token_eot(model: *const bitnet_model) -> bitnet_token {
    // SAFETY: forwarded contract.
    unsafe { special(model, |m| m.eot()) }
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_token_is_eog(
    model: *const bitnet_model,
    token: bitnet_token,
) -> bool {
    guard_or(false, || {
        // SAFETY: forwarded contract.
        let m = unsafe { handle(model, "model") }?;
        Ok(u32::try_from(token).is_ok_and(|t| m.model.token_is_eog(t)))
    })
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_add_bos(model: *const bitnet_model) -> bool {
    guard_or(false, || {
        // SAFETY: forwarded contract.
        let m = unsafe { handle(model, "model") }?;
        Ok(m.model.tokenizer().adds_bos())
    })
}
