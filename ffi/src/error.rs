//! Status codes, the thread-local last-error message and the guard every entry point runs in.
//!
//! No Rust panic may unwind into C: each exported function runs its body through [`guard`] (or
//! [`guard_or`] for getters), which catches panics and turns them into `BITNET_ERR_INTERNAL`.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Result code of every fallible call (`bitnet_status` in bitnet.h).
pub type bitnet_status = i32;

pub const BITNET_OK: bitnet_status = 0;
pub const BITNET_ERR_NULL_ARG: bitnet_status = -1;
pub const BITNET_ERR_INVALID_ARG: bitnet_status = -2;
pub const BITNET_ERR_INVALID_UTF8: bitnet_status = -3;
pub const BITNET_ERR_TOKEN: bitnet_status = -4;
pub const BITNET_ERR_POSITION: bitnet_status = -5;
pub const BITNET_ERR_CONTEXT_FULL: bitnet_status = -6;
pub const BITNET_ERR_BUFFER_TOO_SMALL: bitnet_status = -7;
pub const BITNET_ERR_IO: bitnet_status = -8;
pub const BITNET_ERR_MODEL: bitnet_status = -9;
pub const BITNET_ERR_NO_LOGITS: bitnet_status = -10;
pub const BITNET_ERR_BUSY: bitnet_status = -11;
pub const BITNET_ERR_INTERNAL: bitnet_status = -12;
pub const BITNET_ERR_SEQ_ID: bitnet_status = -13;

/// A failure on its way to C: a status code and the message for `bitnet_last_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FfiError {
    pub code: bitnet_status,
    pub message: String,
}

impl FfiError {
    pub fn new(code: bitnet_status, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn null(what: &str) -> Self {
        Self::new(BITNET_ERR_NULL_ARG, format!("{what} is NULL"))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(BITNET_ERR_INVALID_ARG, message)
    }

    /// An error of the model crate from a call other than loading: bad arguments stay
    /// `INVALID_ARG`; anything else is unexpected there.
    pub fn from_candle(e: bitnet_candle::Error) -> Self {
        let code = match e {
            bitnet_candle::Error::InvalidArgument(_) => BITNET_ERR_INVALID_ARG,
            bitnet_candle::Error::ChatTemplate(_) => BITNET_ERR_INVALID_ARG,
            bitnet_candle::Error::KvBudget(_) => BITNET_ERR_CONTEXT_FULL,
            bitnet_candle::Error::Position(_) => BITNET_ERR_POSITION,
            bitnet_candle::Error::UnknownSequence(_) => BITNET_ERR_SEQ_ID,
            _ => BITNET_ERR_INTERNAL,
        };
        Self::new(code, e.to_string())
    }
}

pub type FfiResult<T> = Result<T, FfiError>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error (interior NULs become spaces).
pub fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|slot| *slot.borrow_mut() = c);
}

/// Runs an entry point body: `Ok` becomes `BITNET_OK`; an error or a panic becomes its code,
/// with the message recorded for `bitnet_last_error`.
pub fn guard(body: impl FnOnce() -> FfiResult<()>) -> bitnet_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => BITNET_OK,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.code
        }
        Err(payload) => {
            set_last_error(&panic_message(payload.as_ref()));
            BITNET_ERR_INTERNAL
        }
    }
}

/// Runs a getter body; on an error or a panic records the message and returns `fallback`.
pub fn guard_or<T>(fallback: T, body: impl FnOnce() -> FfiResult<T>) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            fallback
        }
        Err(payload) => {
            set_last_error(&panic_message(payload.as_ref()));
            fallback
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into());
    format!("internal error (Rust panic): {detail}")
}

/// Message of the most recent failed call on this thread ("" if none).
#[no_mangle]
pub extern "C" fn bitnet_last_error() -> *const c_char {
    // Reading a thread-local cannot fail before thread teardown, which C cannot call into.
    guard_or(c"".as_ptr(), || {
        Ok(LAST_ERROR.with(|slot| slot.borrow().as_ptr()))
    })
}

/// Symbolic name of a status code.
#[no_mangle]
pub extern "C" fn bitnet_status_str(status: bitnet_status) -> *const c_char {
    let name = match status {
        BITNET_OK => c"BITNET_OK",
        BITNET_ERR_NULL_ARG => c"BITNET_ERR_NULL_ARG",
        BITNET_ERR_INVALID_ARG => c"BITNET_ERR_INVALID_ARG",
        BITNET_ERR_INVALID_UTF8 => c"BITNET_ERR_INVALID_UTF8",
        BITNET_ERR_TOKEN => c"BITNET_ERR_TOKEN",
        BITNET_ERR_POSITION => c"BITNET_ERR_POSITION",
        BITNET_ERR_CONTEXT_FULL => c"BITNET_ERR_CONTEXT_FULL",
        BITNET_ERR_BUFFER_TOO_SMALL => c"BITNET_ERR_BUFFER_TOO_SMALL",
        BITNET_ERR_IO => c"BITNET_ERR_IO",
        BITNET_ERR_MODEL => c"BITNET_ERR_MODEL",
        BITNET_ERR_NO_LOGITS => c"BITNET_ERR_NO_LOGITS",
        BITNET_ERR_BUSY => c"BITNET_ERR_BUSY",
        BITNET_ERR_INTERNAL => c"BITNET_ERR_INTERNAL",
        BITNET_ERR_SEQ_ID => c"BITNET_ERR_SEQ_ID",
        _ => c"BITNET_ERR_UNKNOWN",
    };
    name.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: bitnet_last_error returns a valid NUL-terminated string owned by this thread.
        unsafe { CStr::from_ptr(bitnet_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn errors_set_the_code_and_message() {
        let code = guard(|| Err(FfiError::new(BITNET_ERR_TOKEN, "token 7 is bad")));
        assert_eq!(code, BITNET_ERR_TOKEN);
        assert_eq!(last(), "token 7 is bad");
        assert_eq!(guard(|| Ok(())), BITNET_OK);
        assert_eq!(
            last(),
            "token 7 is bad",
            "success leaves the last error alone"
        );
    }

    #[test]
    fn panics_become_internal_errors() {
        let code = guard(|| panic!("boom {}", 42));
        assert_eq!(code, BITNET_ERR_INTERNAL);
        assert_eq!(last(), "internal error (Rust panic): boom 42");
        let v: i32 = guard_or(-1, || panic!("static message"));
        assert_eq!(v, -1);
        assert!(last().ends_with("static message"));
    }

    #[test]
    fn last_error_is_per_thread_and_nul_safe() {
        guard(|| Err(FfiError::invalid("a\0b")));
        assert_eq!(last(), "a b");
        std::thread::spawn(|| assert_eq!(last(), ""))
            .join()
            .unwrap();
    }

    #[test]
    fn every_code_has_a_name() {
        for code in -13..=0 {
            // SAFETY: bitnet_status_str returns a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(bitnet_status_str(code)) };
            assert_ne!(name.to_str().unwrap(), "BITNET_ERR_UNKNOWN", "code {code}");
        }
    }
}
