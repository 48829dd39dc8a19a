//! Test-only crate: include/bitnet.h against the `bitnet-ffi` exports.
//!
//! The build script runs bindgen on the header and generates checks that fail to compile when
//! the two drift apart: every declared function must exist with the same signature, every
//! constant must have the same value, every struct the same size, alignment, field offsets and
//! field types. `tests/exports.rs` checks the other direction: the shared library exports no
//! `bitnet_` symbol the header does not declare.

#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all)]

use std::mem::{align_of, offset_of, size_of};

/// The header as bindgen sees it.
mod hdr {
    include!(concat!(env!("OUT_DIR"), "/hdr.rs"));
}

/// The header's functions, typed with the crate's own types (the handles are opaque to C).
#[allow(improper_ctypes)]
mod hdr_fns {
    include!(concat!(env!("OUT_DIR"), "/hdr_fns.rs"));
}

include!(concat!(env!("OUT_DIR"), "/checks.rs"));
