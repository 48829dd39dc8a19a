//! The few ggml-base functions the plugin calls, resolved from the host process at init
//! (`dlsym(RTLD_DEFAULT, …)`), so the library has no link-time dependency on libggml and is
//! refused cleanly by a host whose ggml differs from the headers it was built against.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

use crate::sys;

/// ggml version of the vendored headers (vendor/ggml/VERSION).
pub const BUILT_FOR: &str = env!("BITNET_GGML_VERSION");

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

/// glibc's `RTLD_DEFAULT`: search the global scope of the process.
const RTLD_DEFAULT: *mut c_void = std::ptr::null_mut();

type VersionFn = unsafe extern "C" fn() -> *const c_char;
type BufferInitFn = unsafe extern "C" fn(
    sys::ggml_backend_buffer_type_t,
    sys::ggml_backend_buffer_i,
    *mut c_void,
    usize,
) -> sys::ggml_backend_buffer_t;
type GraphNNodesFn = unsafe extern "C" fn(*mut sys::ggml_cgraph) -> c_int;
type GraphNodeFn = unsafe extern "C" fn(*mut sys::ggml_cgraph, c_int) -> *mut sys::ggml_tensor;
type LogGetFn = unsafe extern "C" fn(*mut sys::ggml_log_callback, *mut *mut c_void);
type CpuBufferTypeFn = unsafe extern "C" fn() -> sys::ggml_backend_buffer_type_t;

/// Host entry points.
pub struct Host {
    pub buffer_init: BufferInitFn,
    pub graph_n_nodes: GraphNNodesFn,
    pub graph_node: GraphNodeFn,
    /// ggml's host-memory buffer type (the CPU backend's default).
    pub cpu_buffer_type: CpuBufferTypeFn,
    log_get: Option<LogGetFn>,
}

static HOST: OnceLock<Host> = OnceLock::new();

fn lookup(name: &CStr) -> *mut c_void {
    // SAFETY: `name` is NUL-terminated; dlsym only reads it.
    unsafe { dlsym(RTLD_DEFAULT, name.as_ptr()) }
}

/// Resolves every host function and checks `ggml_version()`; on failure says why.
pub fn init() -> Result<&'static Host, String> {
    if let Some(h) = HOST.get() {
        return Ok(h);
    }
    let version = lookup(c"ggml_version");
    if version.is_null() {
        return Err(
            "the host exports no ggml_version (not a ggml host, or ggml older than 0.0.2309)"
                .into(),
        );
    }
    // SAFETY: the symbol is ggml's `const char * ggml_version(void)`.
    let version: VersionFn = unsafe { std::mem::transmute::<*mut c_void, VersionFn>(version) };
    // SAFETY: ggml_version returns a static NUL-terminated string.
    let got = unsafe { CStr::from_ptr(version()) }
        .to_string_lossy()
        .into_owned();
    if got != BUILT_FOR {
        return Err(format!(
            "host ggml version {got} differs from {BUILT_FOR}, the version this plugin was built for; refusing to load"
        ));
    }
    let need = |name: &CStr| {
        let p = lookup(name);
        if p.is_null() {
            Err(format!(
                "the host does not export {}",
                name.to_string_lossy()
            ))
        } else {
            Ok(p)
        }
    };
    let buffer_init = need(c"ggml_backend_buffer_init")?;
    let graph_n_nodes = need(c"ggml_graph_n_nodes")?;
    let graph_node = need(c"ggml_graph_node")?;
    let cpu_buffer_type = need(c"ggml_backend_cpu_buffer_type")?;
    let log_get = lookup(c"ggml_log_get");
    // SAFETY: each pointer is the named ggml-base function, whose C signature the type spells
    // out exactly as in the vendored headers of this very ggml version (checked above).
    let host = unsafe {
        Host {
            buffer_init: std::mem::transmute::<*mut c_void, BufferInitFn>(buffer_init),
            graph_n_nodes: std::mem::transmute::<*mut c_void, GraphNNodesFn>(graph_n_nodes),
            graph_node: std::mem::transmute::<*mut c_void, GraphNodeFn>(graph_node),
            cpu_buffer_type: std::mem::transmute::<*mut c_void, CpuBufferTypeFn>(cpu_buffer_type),
            log_get: (!log_get.is_null())
                .then(|| std::mem::transmute::<*mut c_void, LogGetFn>(log_get)),
        }
    };
    Ok(HOST.get_or_init(|| host))
}

/// The host functions; `None` before a successful [`init`].
pub fn get() -> Option<&'static Host> {
    HOST.get()
}

/// Logs one line through ggml's log callback (as the host's own messages are), else stderr.
pub fn log(level: sys::ggml_log_level, msg: &str) {
    let line = format!("ggml-bitnet: {msg}\n");
    let log_get = HOST.get().and_then(|h| h.log_get).or_else(|| {
        let p = lookup(c"ggml_log_get");
        // SAFETY: the symbol, when present, is ggml's `ggml_log_get` of this signature.
        (!p.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, LogGetFn>(p) })
    });
    if let (Some(get), Ok(text)) = (log_get, CString::new(line.clone())) {
        let mut cb: sys::ggml_log_callback = None;
        let mut user: *mut c_void = std::ptr::null_mut();
        // SAFETY: both out-pointers are valid for writes.
        unsafe { get(&mut cb, &mut user) };
        if let Some(cb) = cb {
            // SAFETY: the host's callback takes (level, NUL-terminated text, its user data).
            unsafe { cb(level, text.as_ptr(), user) };
            return;
        }
    }
    eprint!("{line}");
}
