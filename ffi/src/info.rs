//! Version and capabilities.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};

use bitnet_backend::{kernels, threads};

use crate::error::guard_or;
use crate::BITNET_API_VERSION;

const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the package version contains a NUL"),
    };

/// Library version, e.g. "0.1.0".
#[no_mangle]
pub extern "C" fn bitnet_version() -> *const c_char {
    VERSION.as_ptr()
}

/// The API version the library was built with.
#[no_mangle]
pub extern "C" fn bitnet_api_version() -> u32 {
    BITNET_API_VERSION
}

/// The text of `bitnet_system_info`.
pub fn system_info() -> String {
    let available: Vec<&str> = kernels::available().iter().map(|k| k.name()).collect();
    format!(
        "kernel = {} | available = {} | threads = {}",
        kernels::selected().name(),
        available.join(" "),
        threads::num_threads()
    )
}

thread_local! {
    static SYSTEM_INFO: RefCell<CString> = RefCell::new(CString::default());
}

/// Kernel selection and threads, valid until the next call on this thread.
#[no_mangle]
pub extern "C" fn bitnet_system_info() -> *const c_char {
    guard_or(c"".as_ptr(), || {
        let text = CString::new(system_info()).unwrap_or_default();
        Ok(SYSTEM_INFO.with(|slot| {
            *slot.borrow_mut() = text;
            slot.borrow().as_ptr()
        }))
    })
}
