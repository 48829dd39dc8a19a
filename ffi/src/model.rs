//! `bitnet_model`: loading, freeing and metadata getters.

use std::ffi::{c_char, CStr, CString};
use std::path::PathBuf;

use bitnet_candle::{HeadType, LoadOptions, Model};

use crate::bitnet_token;
use crate::error::{
    bitnet_status, guard, guard_or, FfiError, FfiResult, BITNET_ERR_IO, BITNET_ERR_MODEL,
    BITNET_ERR_TOKEN,
};
use crate::params::{self, Versioned};
use crate::text::{c_str, handle, put};
use bitnet_candle::Pieces;

/// `bitnet_model_params.device`: the CPU; `BITNET_DEVICE_CUDA(n)` is `1 + n`.
pub const BITNET_DEVICE_CPU: u32 = 0;

/// `enum bitnet_head_type` (an enum without negative values: `unsigned int` in C).
pub type bitnet_head_type = std::ffi::c_uint;
pub const BITNET_HEAD_FILE: bitnet_head_type = 0;
pub const BITNET_HEAD_Q8_0: bitnet_head_type = 1;
pub const BITNET_HEAD_Q6_K: bitnet_head_type = 2;
pub const BITNET_HEAD_Q4_0: bitnet_head_type = 3;

/// Options of `bitnet_model_load` (versioned, see params.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bitnet_model_params {
    pub struct_size: usize,
    pub n_threads: i32,
    pub n_ctx_max: u32,
    pub tokenizer_json: *const c_char,
    /// API 2: `BITNET_DEVICE_CPU` (0) or `BITNET_DEVICE_CUDA(n)` = 1 + n.
    pub device: u32,
    /// API 2: a `bitnet_head_type` (a shorter struct gets `BITNET_HEAD_FILE`).
    pub head_type: i32,
}

impl Versioned for bitnet_model_params {
    const NAME: &'static str = "bitnet_model_params";
    const MIN_SIZE: usize =
        std::mem::offset_of!(bitnet_model_params, tokenizer_json) + std::mem::size_of::<usize>();

    fn defaults() -> Self {
        Self {
            struct_size: std::mem::size_of::<Self>(),
            n_threads: 0,
            n_ctx_max: 0,
            tokenizer_json: std::ptr::null(),
            device: 0,
            head_type: BITNET_HEAD_FILE as i32,
        }
    }
}

/// A loaded model and the C strings its getters hand out.
pub struct bitnet_model {
    pub(crate) model: Model,
    pub(crate) pieces: Pieces,
    architecture: CString,
    desc: CString,
    name: Option<CString>,
    chat_template: Option<CString>,
}

impl bitnet_model {
    fn new(model: Model) -> Self {
        Self {
            pieces: Pieces::new(model.tokenizer()),
            architecture: c_string(model.architecture()),
            desc: c_string(&model.description()),
            name: model.name().map(c_string),
            chat_template: model.chat_template().map(c_string),
            model,
        }
    }

    /// Checks a token id from C against the vocabulary.
    pub(crate) fn token(&self, token: bitnet_token, what: &str) -> FfiResult<u32> {
        let n_vocab = self.model.n_vocab();
        match u32::try_from(token) {
            Ok(t) if (t as usize) < n_vocab => Ok(t),
            _ => Err(FfiError::new(
                BITNET_ERR_TOKEN,
                format!("{what} = {token} is outside the vocabulary of {n_vocab} tokens"),
            )),
        }
    }
}

/// Metadata strings may in principle hold NUL; C sees them up to the first one.
fn c_string(s: &str) -> CString {
    let end = s.find('\0').unwrap_or(s.len());
    CString::new(&s[..end]).unwrap_or_default()
}

/// Fills `*params` with the defaults.
///
/// # Safety
/// `params` is NULL or points to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_params_init(
    params: *mut bitnet_model_params,
    struct_size: usize,
) -> bitnet_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { params::init(params, struct_size) })
}

/// Loads a GGUF model.
///
/// # Safety
/// `path` is NULL or NUL-terminated; `params` is NULL or a valid params struct; `model` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_load(
    path: *const c_char,
    params: *const bitnet_model_params,
    model: *mut *mut bitnet_model,
) -> bitnet_status {
    guard(|| {
        if model.is_null() {
            return Err(FfiError::null("model (the output pointer)"));
        }
        // SAFETY: non-NULL and writable per the contract.
        unsafe { model.write(std::ptr::null_mut()) };
        if path.is_null() {
            return Err(FfiError::null("path"));
        }
        // SAFETY: non-NULL and NUL-terminated per the contract.
        let path = path_from_c(unsafe { CStr::from_ptr(path) })?;
        // SAFETY: forwarded contract.
        let p = unsafe { params::read(params) }?;
        let options = load_options(&p)?;
        let loaded = Model::load(&path, &options).map_err(|e| load_error(&path, e))?;
        let handle = Box::into_raw(Box::new(bitnet_model::new(loaded)));
        // SAFETY: checked non-NULL above; writable per the contract.
        unsafe { put(model, handle, "model") }
    })
}

#[cfg(unix)]
fn path_from_c(path: &CStr) -> FfiResult<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(path.to_bytes())))
}

#[cfg(not(unix))]
fn path_from_c(path: &CStr) -> FfiResult<PathBuf> {
    // SAFETY: `path` is a valid C string.
    unsafe { c_str(path.as_ptr(), "path") }.map(PathBuf::from)
}

fn load_options(p: &bitnet_model_params) -> FfiResult<LoadOptions> {
    let n_threads = usize::try_from(p.n_threads)
        .map_err(|_| FfiError::invalid(format!("n_threads must be >= 0, got {}", p.n_threads)))?;
    let tokenizer_json = match p.tokenizer_json.is_null() {
        true => None,
        // SAFETY: a non-NULL tokenizer_json is NUL-terminated per the header.
        false => Some(PathBuf::from(unsafe {
            c_str(p.tokenizer_json, "tokenizer_json")
        }?)),
    };
    let device = match p.device {
        BITNET_DEVICE_CPU => bitnet_candle::Device::Cpu,
        n => bitnet_candle::cuda_device(n as usize - 1)
            .map_err(|e| FfiError::invalid(e.to_string()))?,
    };
    let head_type = match u32::try_from(p.head_type) {
        Ok(BITNET_HEAD_FILE) => HeadType::File,
        Ok(BITNET_HEAD_Q8_0) => HeadType::Q8_0,
        Ok(BITNET_HEAD_Q6_K) => HeadType::Q6K,
        Ok(BITNET_HEAD_Q4_0) => HeadType::Q4_0,
        _ => {
            return Err(FfiError::invalid(format!(
                "head_type {} is not a bitnet_head_type",
                p.head_type
            )))
        }
    };
    Ok(LoadOptions {
        device,
        n_threads: (n_threads > 0).then_some(n_threads),
        max_context: (p.n_ctx_max > 0).then_some(p.n_ctx_max as usize),
        tokenizer_json,
        head_type,
        ..LoadOptions::default()
    })
}

fn load_error(path: &std::path::Path, e: bitnet_candle::Error) -> FfiError {
    use bitnet_backend::Error as B;
    use bitnet_candle::Error as C;
    let code = match &e {
        C::Io { .. } | C::Backend(B::Io { .. }) | C::Backend(B::RawIo(_)) => BITNET_ERR_IO,
        C::InvalidArgument(_) => crate::error::BITNET_ERR_INVALID_ARG,
        _ => BITNET_ERR_MODEL,
    };
    FfiError::new(code, format!("loading `{}`: {e}", path.display()))
}

/// Frees a model (NULL: no-op). Contexts created from it stay usable.
///
/// # Safety
/// `model` is NULL or a live model handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_free(model: *mut bitnet_model) {
    guard(|| {
        if !model.is_null() {
            // SAFETY: a live handle from bitnet_model_load, freed once per the contract.
            drop(unsafe { Box::from_raw(model) });
        }
        Ok(())
    });
}

/// Runs a getter on a model handle; NULL gives `fallback`.
///
/// # Safety
/// `model` is NULL or a live model handle.
unsafe fn get<T>(model: *const bitnet_model, fallback: T, f: impl FnOnce(&bitnet_model) -> T) -> T {
    // SAFETY: forwarded contract.
    guard_or(fallback, || Ok(f(unsafe { handle(model, "model") }?)))
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_architecture(model: *const bitnet_model) -> *const c_char {
    // SAFETY: forwarded contract.
    unsafe { get(model, std::ptr::null(), |m| m.architecture.as_ptr()) }
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_desc(model: *const bitnet_model) -> *const c_char {
    // SAFETY: forwarded contract.
    unsafe { get(model, std::ptr::null(), |m| m.desc.as_ptr()) }
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_name(model: *const bitnet_model) -> *const c_char {
    // SAFETY: forwarded contract.
    unsafe {
        get(model, std::ptr::null(), |m| {
            m.name.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
        })
    }
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_chat_template(model: *const bitnet_model) -> *const c_char {
    // SAFETY: forwarded contract.
    unsafe {
        get(model, std::ptr::null(), |m| {
            m.chat_template
                .as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr())
        })
    }
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_n_vocab(model: *const bitnet_model) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { get(model, -1, |m| count(m.model.n_vocab())) }
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_n_ctx_train(model: *const bitnet_model) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { get(model, -1, |m| count(m.model.n_ctx_train())) }
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_n_embd(model: *const bitnet_model) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { get(model, -1, |m| count(m.model.n_embd())) }
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_n_layer(model: *const bitnet_model) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { get(model, -1, |m| count(m.model.config().n_layer)) }
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_n_head(model: *const bitnet_model) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { get(model, -1, |m| count(m.model.config().n_head)) }
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_n_head_kv(model: *const bitnet_model) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { get(model, -1, |m| count(m.model.config().n_head_kv)) }
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_n_params(model: *const bitnet_model) -> u64 {
    // SAFETY: forwarded contract.
    unsafe { get(model, 0, |m| m.model.weights().n_params()) }
}

/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn bitnet_model_size(model: *const bitnet_model) -> u64 {
    // SAFETY: forwarded contract.
    unsafe { get(model, 0, |m| m.model.file_size()) }
}
