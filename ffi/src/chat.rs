//! `bitnet_chat_apply_template`: a conversation to prompt text with the model's template.

use std::ffi::c_char;

use bitnet_candle::ChatMessage;

use crate::error::{bitnet_status, guard, FfiError};
use crate::model::bitnet_model;
use crate::text::{c_str, handle, slice, write_text};

/// One chat turn (`struct bitnet_chat_message`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bitnet_chat_message {
    pub role: *const c_char,
    pub content: *const c_char,
}

/// Formats `messages` with the model's chat template.
///
/// # Safety
/// `messages` has `n_messages` readable entries whose strings are NUL-terminated; `buf` has
/// `buf_size` writable bytes (or is NULL with `buf_size == 0`); `n_written` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn bitnet_chat_apply_template(
    model: *const bitnet_model,
    messages: *const bitnet_chat_message,
    n_messages: usize,
    add_assistant: bool,
    buf: *mut c_char,
    buf_size: i32,
    n_written: *mut i32,
) -> bitnet_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { handle(model, "model") }?;
        // SAFETY: forwarded contract.
        let messages = unsafe { slice(messages, n_messages, "messages") }?;
        let turns = messages
            .iter()
            .enumerate()
            .map(|(i, msg)| {
                // SAFETY: the strings of each entry are NULL or NUL-terminated per the contract.
                let (role, content) = unsafe {
                    (
                        c_str(msg.role, &format!("messages[{i}].role"))?,
                        c_str(msg.content, &format!("messages[{i}].content"))?,
                    )
                };
                Ok(ChatMessage::new(role, content))
            })
            .collect::<Result<Vec<_>, FfiError>>()?;
        let text = m
            .model
            .apply_chat_template(&turns, add_assistant)
            .map_err(FfiError::from_candle)?;
        // SAFETY: forwarded contract.
        unsafe { write_text(text.as_bytes(), buf, buf_size, n_written) }
    })
}
