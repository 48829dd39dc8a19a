//! Registry, device and backend objects (one ACCEL device, "BITNET").
//!
//! Two device objects carry that one device. The registered one has our buffer type as its
//! default, which is where llama.cpp places the weights it runs on us (repacked on upload).
//! Our backends report the other, its twin in every respect but one: its default buffer type
//! is ggml's host (CPU) buffer type. llama.cpp's scheduler allocates a backend's outputs in the
//! default buffer type of the backend's device, so our mat-mul results land in host memory,
//! where the CPU backend reads them in place (as with ggml-blas). In our own (non-host) buffer
//! type every result was copied out with `get_tensor`, serially on the scheduler thread.

use std::ffi::{c_char, c_int, c_void, CString};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bitnet_backend::{kernels, threads};

use crate::buffer;
use crate::compute::{self, Path};
use crate::host;
use crate::omp;
use crate::sys;

const NAME: &std::ffi::CStr = c"BITNET";

/// The leaked, address-stable objects ggml holds pointers to.
struct Objects {
    reg: sys::ggml_backend_reg,
    dev: sys::ggml_backend_device,
    /// The device our backends report (see the module documentation).
    compute_dev: sys::ggml_backend_device,
    buft: sys::ggml_backend_buffer_type,
    description: CString,
}

struct ObjectsPtr(*mut Objects);
// SAFETY: the objects are written once before publication and only read afterwards.
unsafe impl Send for ObjectsPtr {}
// SAFETY: as above.
unsafe impl Sync for ObjectsPtr {}

static OBJECTS: OnceLock<ObjectsPtr> = OnceLock::new();

fn objects() -> *mut Objects {
    OBJECTS
        .get_or_init(|| {
            let description = CString::new(format!(
                "bitnet-rs ternary kernels ({})",
                kernels::selected().name()
            ))
            .unwrap_or_default();
            let o = Box::into_raw(Box::new(Objects {
                reg: sys::ggml_backend_reg::default(),
                dev: sys::ggml_backend_device::default(),
                compute_dev: sys::ggml_backend_device::default(),
                buft: sys::ggml_backend_buffer_type::default(),
                description,
            }));
            // SAFETY: `o` was just leaked; nothing else sees it before publication.
            unsafe {
                (*o).reg.api_version = sys::GGML_BACKEND_API_VERSION as c_int;
                (*o).reg.iface = sys::ggml_backend_reg_i {
                    get_name: Some(reg_get_name),
                    get_device_count: Some(reg_device_count),
                    get_device: Some(reg_get_device),
                    get_proc_address: Some(reg_proc_address),
                };
                (*o).dev.iface = device_iface();
                (*o).dev.reg = &mut (*o).reg;
                (*o).compute_dev.iface = sys::ggml_backend_device_i {
                    get_buffer_type: Some(compute_dev_get_buffer_type),
                    ..device_iface()
                };
                (*o).compute_dev.reg = &mut (*o).reg;
                (*o).buft.iface = buffer::buft_iface();
                (*o).buft.device = &mut (*o).dev;
            }
            ObjectsPtr(o)
        })
        .0
}

/// The registry handed to the loader.
pub fn registry() -> sys::ggml_backend_reg_t {
    // SAFETY: the objects live for the rest of the process.
    unsafe { &mut (*objects()).reg }
}

fn our_buft() -> sys::ggml_backend_buffer_type_t {
    // SAFETY: as above.
    unsafe { &mut (*objects()).buft }
}

extern "C" fn reg_get_name(_: sys::ggml_backend_reg_t) -> *const c_char {
    NAME.as_ptr()
}

extern "C" fn reg_device_count(_: sys::ggml_backend_reg_t) -> usize {
    1
}

extern "C" fn reg_get_device(_: sys::ggml_backend_reg_t, index: usize) -> sys::ggml_backend_dev_t {
    if index == 0 {
        // SAFETY: the objects live for the rest of the process.
        unsafe { &mut (*objects()).dev }
    } else {
        std::ptr::null_mut()
    }
}

/// `ggml_backend_set_n_threads`: llama.cpp passes `-t` to every backend that offers it.
extern "C" fn set_n_threads(_: sys::ggml_backend_t, n: c_int) {
    threads::set_num_threads(usize::try_from(n).unwrap_or(0));
}

extern "C" fn reg_proc_address(_: sys::ggml_backend_reg_t, name: *const c_char) -> *mut c_void {
    if name.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: ggml passes a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(name) };
    if name == c"ggml_backend_set_n_threads" {
        let f: extern "C" fn(sys::ggml_backend_t, c_int) = set_n_threads;
        return f as *mut c_void;
    }
    std::ptr::null_mut()
}

extern "C" fn dev_get_name(_: sys::ggml_backend_dev_t) -> *const c_char {
    NAME.as_ptr()
}

extern "C" fn dev_get_description(_: sys::ggml_backend_dev_t) -> *const c_char {
    // SAFETY: the objects live for the rest of the process.
    unsafe { (*objects()).description.as_ptr() }
}

extern "C" fn dev_get_memory(_: sys::ggml_backend_dev_t, free: *mut usize, total: *mut usize) {
    // Host memory, shared with the CPU backend: nothing of our own to report.
    // SAFETY: ggml passes valid out-pointers.
    unsafe {
        *free = 0;
        *total = 0;
    }
}

extern "C" fn dev_get_type(_: sys::ggml_backend_dev_t) -> sys::ggml_backend_dev_type {
    sys::GGML_BACKEND_DEVICE_TYPE_ACCEL
}

extern "C" fn dev_get_props(dev: sys::ggml_backend_dev_t, props: *mut sys::ggml_backend_dev_props) {
    // SAFETY: ggml passes a valid out-pointer.
    let p = unsafe { &mut *props };
    p.name = dev_get_name(dev);
    p.description = dev_get_description(dev);
    p.memory_free = 0;
    p.memory_total = 0;
    p.type_ = dev_get_type(dev);
    p.device_id = std::ptr::null();
    p.caps = sys::ggml_backend_dev_caps::default();
}

extern "C" fn dev_get_buffer_type(_: sys::ggml_backend_dev_t) -> sys::ggml_backend_buffer_type_t {
    our_buft()
}

/// Default buffer type of the device our backends report: host memory (ggml's CPU buffer
/// type), where the scheduler then allocates our outputs.
extern "C" fn compute_dev_get_buffer_type(
    _: sys::ggml_backend_dev_t,
) -> sys::ggml_backend_buffer_type_t {
    match host::get() {
        // SAFETY: ggml-base's `ggml_backend_cpu_buffer_type`, resolved at init; it returns a
        // static object.
        Some(h) => unsafe { (h.cpu_buffer_type)() },
        // Unreachable: without a host there is no registry, hence no backend.
        None => our_buft(),
    }
}

extern "C" fn dev_supports_op(_: sys::ggml_backend_dev_t, op: *const sys::ggml_tensor) -> bool {
    // SAFETY: ggml passes a live tensor.
    let op = unsafe { &*op };
    match op.op {
        o if compute::is_view_op(o) => true,
        // SAFETY: the op's sources are live tensors.
        sys::GGML_OP_MUL_MAT => unsafe { compute::supports_mul_mat(op, our_buft()) },
        _ => false,
    }
}

extern "C" fn dev_supports_buft(
    _: sys::ggml_backend_dev_t,
    buft: sys::ggml_backend_buffer_type_t,
) -> bool {
    if buft == our_buft() {
        return true;
    }
    // Activations (and the F16 head) in host buffers are read in place.
    // SAFETY: ggml passes a live buffer type.
    unsafe { buffer::buft_is_host(buft) }
}

fn device_iface() -> sys::ggml_backend_device_i {
    sys::ggml_backend_device_i {
        get_name: Some(dev_get_name),
        get_description: Some(dev_get_description),
        get_memory: Some(dev_get_memory),
        get_type: Some(dev_get_type),
        get_props: Some(dev_get_props),
        init_backend: Some(dev_init_backend),
        get_buffer_type: Some(dev_get_buffer_type),
        get_host_buffer_type: None,
        buffer_from_host_ptr: None,
        supports_op: Some(dev_supports_op),
        supports_buft: Some(dev_supports_buft),
        offload_op: None,
        event_new: None,
        event_free: None,
        event_synchronize: None,
    }
}

/// Per-backend counters (`BITNET_GGML_STATS=1` prints them when the backend is freed).
#[derive(Default)]
struct Stats {
    mul_mat: AtomicU64,
    tokens: AtomicU64,
    reference: AtomicU64,
    head: AtomicU64,
}

static GUID: [u8; 16] = *b"bitnet-rs-ternry";

extern "C" fn dev_init_backend(
    _: sys::ggml_backend_dev_t,
    _params: *const c_char,
) -> sys::ggml_backend_t {
    // By now the host has loaded its CPU backend (and with it libgomp, if it uses OpenMP).
    let on_openmp = omp::configure();
    host::log(
        sys::GGML_LOG_LEVEL_DEBUG,
        if on_openmp {
            "mat-muls run on the host's OpenMP threads"
        } else {
            "mat-muls run on bitnet-rs's thread pool"
        },
    );
    let backend = sys::ggml_backend {
        guid: GUID.as_ptr() as *mut _,
        iface: sys::ggml_backend_i {
            get_name: Some(backend_get_name),
            free: Some(backend_free),
            graph_compute: Some(graph_compute),
            ..Default::default()
        },
        // SAFETY: the objects live for the rest of the process.
        device: unsafe { &mut (*objects()).compute_dev },
        context: Box::into_raw(Box::<Stats>::default()) as *mut c_void,
    };
    Box::into_raw(Box::new(backend))
}

extern "C" fn backend_get_name(_: sys::ggml_backend_t) -> *const c_char {
    NAME.as_ptr()
}

extern "C" fn backend_free(backend: sys::ggml_backend_t) {
    // SAFETY: ggml frees each backend once; both boxes came from `dev_init_backend`.
    let (b, stats) = unsafe {
        let b = Box::from_raw(backend);
        let stats = Box::from_raw(b.context as *mut Stats);
        (b, stats)
    };
    drop(b);
    if std::env::var("BITNET_GGML_STATS").is_ok_and(|v| v == "1") {
        // Straight to stderr in one write, not through the host's logger: llama.cpp's tools
        // log through an asynchronous logger that they do not flush at exit (when backends are
        // freed), and whose thread may be writing to stderr at the same moment.
        let line = format!(
            "ggml-bitnet: stats: {} ternary mat-muls ({} token rows), {} on the reference kernel; {} F16 head mat-muls\n",
            stats.mul_mat.load(Ordering::Relaxed),
            stats.tokens.load(Ordering::Relaxed),
            stats.reference.load(Ordering::Relaxed),
            stats.head.load(Ordering::Relaxed)
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

extern "C" fn graph_compute(
    backend: sys::ggml_backend_t,
    cgraph: *mut sys::ggml_cgraph,
) -> sys::ggml_status {
    let Some(h) = host::get() else {
        return sys::GGML_STATUS_FAILED;
    };
    // SAFETY: ggml passes one of our live backends.
    let stats = unsafe { &*((*backend).context as *const Stats) };
    // SAFETY: host functions of the checked ggml version on ggml's own graph.
    let n = unsafe { (h.graph_n_nodes)(cgraph) };
    for i in 0..n {
        // SAFETY: 0 <= i < n_nodes.
        let node = unsafe { &*(h.graph_node)(cgraph, i) };
        if node.flags & sys::GGML_TENSOR_FLAG_COMPUTE as i32 == 0 || compute::is_view_op(node.op) {
            continue;
        }
        // SAFETY: the scheduler only gives us nodes supports_op accepted, allocated, with
        // their weight in our buffer (a weight elsewhere is rejected by supports_op).
        let result = unsafe {
            match node.op {
                sys::GGML_OP_MUL_MAT => compute::mul_mat(node),
                op => Err(format!("unsupported op {op} scheduled on BITNET")),
            }
        };
        match result {
            Ok(Path::Head) => {
                stats.head.fetch_add(1, Ordering::Relaxed);
            }
            Ok(path) => {
                stats.mul_mat.fetch_add(1, Ordering::Relaxed);
                let tokens = (node.ne[1] * node.ne[2] * node.ne[3]) as u64;
                stats.tokens.fetch_add(tokens, Ordering::Relaxed);
                if matches!(path, Path::Reference) {
                    stats.reference.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                host::log(sys::GGML_LOG_LEVEL_ERROR, &e);
                return sys::GGML_STATUS_FAILED;
            }
        }
    }
    sys::GGML_STATUS_SUCCESS
}
