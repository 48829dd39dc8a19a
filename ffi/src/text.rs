//! Crossing the boundary with pointers: handles, input strings and arrays, output text buffers.

use std::ffi::{c_char, CStr};

use crate::error::{FfiError, FfiResult, BITNET_ERR_BUFFER_TOO_SMALL, BITNET_ERR_INVALID_UTF8};

/// A shared reference to the object behind a handle.
///
/// # Safety
/// `ptr` is NULL or a live handle of type `T` (not freed), valid for `'a`.
pub(crate) unsafe fn handle<'a, T>(ptr: *const T, what: &str) -> FfiResult<&'a T> {
    // SAFETY: non-NULL handles are live objects per the caller's contract.
    unsafe { ptr.as_ref() }.ok_or_else(|| FfiError::null(what))
}

/// A NUL-terminated UTF-8 string.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn c_str<'a>(ptr: *const c_char, what: &str) -> FfiResult<&'a str> {
    if ptr.is_null() {
        return Err(FfiError::null(what));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    utf8(bytes, what)
}

/// `len` bytes of UTF-8 text, or a NUL-terminated string when `len < 0`.
///
/// # Safety
/// `ptr` is NULL, or points to `len` readable bytes (`len >= 0`) or a NUL-terminated string.
pub(crate) unsafe fn text_arg<'a>(ptr: *const c_char, len: i32, what: &str) -> FfiResult<&'a str> {
    if len < 0 {
        // SAFETY: forwarded contract (NUL-terminated).
        return unsafe { c_str(ptr, what) };
    }
    // SAFETY: forwarded contract (`len` readable bytes).
    let bytes = unsafe { slice(ptr.cast::<u8>(), len_arg(len, what)?, what) }?;
    utf8(bytes, what)
}

/// A length argument, which must not be negative.
pub(crate) fn len_arg(len: i32, what: &str) -> FfiResult<usize> {
    usize::try_from(len).map_err(|_| FfiError::invalid(format!("{what}: negative length {len}")))
}

/// An array of `len` elements; NULL is accepted only for an empty array.
///
/// # Safety
/// `ptr` is NULL or points to `len` readable, initialised elements valid for `'a`.
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, len: usize, what: &str) -> FfiResult<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(FfiError::null(what));
    }
    // SAFETY: non-NULL with `len` readable elements per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

fn utf8<'a>(bytes: &'a [u8], what: &str) -> FfiResult<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        FfiError::new(
            BITNET_ERR_INVALID_UTF8,
            format!("{what} is not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })
}

/// Writes `bytes` and a NUL into `buf` (see "TEXT OUTPUT" in bitnet.h).
///
/// # Safety
/// `buf` is NULL or has `buf_size` writable bytes; `n_written` is NULL or writable.
pub(crate) unsafe fn write_text(
    bytes: &[u8],
    buf: *mut c_char,
    buf_size: i32,
    n_written: *mut i32,
) -> FfiResult<()> {
    let len = i32::try_from(bytes.len())
        .map_err(|_| FfiError::invalid(format!("text of {} bytes is too long", bytes.len())))?;
    if buf_size < 0 {
        return Err(FfiError::invalid(format!(
            "negative buffer size {buf_size}"
        )));
    }
    if !n_written.is_null() {
        // SAFETY: non-NULL and writable per the caller's contract.
        unsafe { n_written.write(len) };
    }
    if buf_size <= len {
        return Err(FfiError::new(
            BITNET_ERR_BUFFER_TOO_SMALL,
            format!(
                "the text needs {} bytes (with its NUL), the buffer has {buf_size}",
                len + 1
            ),
        ));
    }
    if buf.is_null() {
        return Err(FfiError::null("the output buffer"));
    }
    // SAFETY: `buf` has buf_size > len writable bytes; the source is a separate Rust slice.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), bytes.len());
        buf.add(bytes.len()).write(0);
    }
    Ok(())
}

/// Stores a result through an out-pointer.
///
/// # Safety
/// `out` is NULL or writable.
pub(crate) unsafe fn put<T>(out: *mut T, value: T, what: &str) -> FfiResult<()> {
    if out.is_null() {
        return Err(FfiError::null(what));
    }
    // SAFETY: non-NULL and writable per the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}
