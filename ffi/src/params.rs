//! Versioned parameter structs: each starts with `struct_size` (the host's `sizeof`).
//!
//! Rules (those of Linux's `copy_struct_from_user`): a host built against an older header sends
//! a shorter struct, whose missing fields take their defaults; a host built against a newer
//! header sends a longer one, accepted only when every byte this library does not know is zero.
//! Fields are plain integers, floats and pointers, so any bytes the host wrote are valid values.

use std::mem::size_of;

use crate::error::{FfiError, FfiResult};

/// A parameter struct shared with C.
pub(crate) trait Versioned: Copy {
    /// Name in bitnet.h, for messages.
    const NAME: &'static str;
    /// Size of the first published version (end of its last field): the smallest struct_size
    /// any host can send. Stays fixed when fields are appended.
    const MIN_SIZE: usize;
    /// Every field at its default, `struct_size` set to this library's size.
    fn defaults() -> Self;
}

/// Reads the host's struct at `ptr`; NULL gives the defaults.
///
/// # Safety
/// `ptr` is NULL or points to at least `struct_size` readable bytes, where `struct_size` is
/// the `usize` at its start.
pub(crate) unsafe fn read<T: Versioned>(ptr: *const T) -> FfiResult<T> {
    if ptr.is_null() {
        return Ok(T::defaults());
    }
    // SAFETY: the caller guarantees the struct starts with a readable usize; it may be unaligned.
    let size = unsafe { std::ptr::read_unaligned(ptr.cast::<usize>()) };
    check_size::<T>(size)?;
    let ours = size_of::<T>();
    if size > ours {
        // SAFETY: the caller guarantees `size` readable bytes at `ptr`.
        let tail = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>().add(ours), size - ours) };
        if tail.iter().any(|&b| b != 0) {
            return Err(FfiError::invalid(format!(
                "struct {} of {size} bytes sets fields this library (which knows {ours} bytes) \
                 does not support; upgrade libbitnet",
                T::NAME
            )));
        }
    }
    let mut out = T::defaults();
    // SAFETY: both regions hold at least min(size, ours) bytes and do not overlap; T is
    // plain old data (integers, floats, pointers), so any bytes form a valid value.
    unsafe {
        std::ptr::copy_nonoverlapping(
            ptr.cast::<u8>(),
            (&mut out as *mut T).cast::<u8>(),
            size.min(ours),
        );
    }
    Ok(out)
}

/// Writes the defaults into the host's struct of `struct_size` bytes (unknown trailing bytes
/// are zeroed) and records `struct_size` in it.
///
/// # Safety
/// `ptr` is NULL or points to `struct_size` writable bytes.
pub(crate) unsafe fn init<T: Versioned>(ptr: *mut T, struct_size: usize) -> FfiResult<()> {
    if ptr.is_null() {
        return Err(FfiError::null(T::NAME));
    }
    check_size::<T>(struct_size)?;
    let defaults = T::defaults();
    let ours = size_of::<T>();
    let dst = ptr.cast::<u8>();
    // SAFETY: the caller guarantees `struct_size` writable bytes at `ptr`; the source is a local.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&defaults as *const T).cast::<u8>(),
            dst,
            struct_size.min(ours),
        );
        if struct_size > ours {
            std::ptr::write_bytes(dst.add(ours), 0, struct_size - ours);
        }
        std::ptr::write_unaligned(dst.cast::<usize>(), struct_size);
    }
    Ok(())
}

fn check_size<T: Versioned>(size: usize) -> FfiResult<()> {
    // Far larger than any future version: almost certainly an uninitialised struct.
    const MAX: usize = 4096;
    if size < T::MIN_SIZE || size > MAX {
        return Err(FfiError::invalid(format!(
            "struct {}: struct_size {size} is invalid (at least {}); initialise the struct \
             with its *_default_params() function",
            T::NAME,
            T::MIN_SIZE
        )));
    }
    Ok(())
}
