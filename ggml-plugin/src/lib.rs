//! `libggml_bitnet.so`: a ggml backend plugin that lets an unmodified llama.cpp (built with
//! `GGML_BACKEND_DL=ON`) run its TQ2_0 / TQ1_0 mat-muls on bitnet-rs kernels.
//!
//! Load it with `GGML_BACKEND_PATH=/path/to/libggml_bitnet.so`. It registers one ACCEL device
//! ("BITNET"), which llama.cpp uses without any flag. Its buffer type takes exactly the weights
//! whose ops it supports (2-D TQ2_0/TQ1_0 mat-muls with F32 activations, repacked on upload);
//! it also runs the F16 LM head (`output.weight` or the tied `token_embd.weight`, left in
//! llama.cpp's CPU buffer) for single tokens; every other op stays on the CPU backend, which
//! reads the plugin's outputs in place. Ternary results equal the CPU backend's bit for bit
//! (ggml's Q8_K activation quantization and block-wise float accumulation, see
//! `bitnet_backend::matmul_q8k`); the head rounds activations to F16 as ggml does and differs
//! only in summation order (about 1e-7 relative).
//!
//! Layouts come from bindgen over the vendored headers of the one ggml version it is built for
//! (vendor/ggml); `ggml_backend_init` returns NULL with a log line on any other host version.
//! `BITNET_GGML_STATS=1` prints the mat-muls it ran to stderr when a backend instance is freed.

mod buffer;
mod compute;
mod device;
mod host;
mod omp;
pub mod sys;

/// Entry point the ggml loader looks up (`dlsym`).
#[no_mangle]
pub extern "C" fn ggml_backend_init() -> sys::ggml_backend_reg_t {
    match host::init() {
        Ok(_) => device::registry(),
        Err(e) => {
            host::log(sys::GGML_LOG_LEVEL_ERROR, &e);
            std::ptr::null_mut()
        }
    }
}

/// Optional score the loader checks before init: usable on every CPU (kernels fall back to
/// portable code), so always 1.
#[no_mangle]
pub extern "C" fn ggml_backend_score() -> std::ffi::c_int {
    1
}

/// The ggml version this library was built against.
pub fn built_for_ggml_version() -> &'static str {
    host::BUILT_FOR
}
