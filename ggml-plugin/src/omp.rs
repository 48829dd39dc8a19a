//! Runs the plugin's parallel work on the host's OpenMP threads when the host has them.
//!
//! llama.cpp's CPU backend (built with OpenMP, the default) computes each of its graph splits
//! in an OpenMP parallel region; between regions libgomp keeps the team's threads spinning for
//! a while. A pool of our own then competes with those threads for the cores: measured with
//! llama-bench pp128 on 2 threads, the plugin was slower than llama.cpp alone until both pools
//! were told to park (`OMP_WAIT_POLICY=passive`). Opening our own parallel region of the same
//! size from the same (scheduler) thread makes libgomp reuse that team, so there is one set of
//! threads, already awake when our split starts, and nothing extra to contend.
//!
//! libgomp is found with `dlopen(…, RTLD_NOLOAD)`: only a copy the host already loaded is used
//! (ggml-cpu loads it with `RTLD_LOCAL`, so it is not in the global symbol scope). Without it
//! (a host built without OpenMP), the backend's own pool runs the work with its workers
//! parking at once instead of spinning. `BITNET_GGML_OPENMP=0` turns the OpenMP path off.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bitnet_backend::threads;

extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

// glibc's dlopen flags.
const RTLD_NOW: c_int = 2;
const RTLD_NOLOAD: c_int = 4;

/// libgomp's `GOMP_parallel(fn, data, num_threads, flags)`: runs `fn(data)` on a team of
/// `num_threads` threads (the caller is thread 0) and returns when all have finished. It is
/// what GCC emits for `#pragma omp parallel`, so its ABI is fixed.
type GompParallel = unsafe extern "C" fn(
    f: unsafe extern "C" fn(*mut c_void),
    data: *mut c_void,
    num_threads: c_uint,
    flags: c_uint,
);

fn find_gomp() -> Option<GompParallel> {
    if std::env::var("BITNET_GGML_OPENMP").is_ok_and(|v| v.trim() == "0") {
        return None;
    }
    let lib: &CStr = c"libgomp.so.1";
    // SAFETY: NUL-terminated name; RTLD_NOLOAD only returns an already loaded library (whose
    // reference count it increments, so it stays loaded), it never runs initialisers.
    let handle = unsafe { dlopen(lib.as_ptr(), RTLD_NOW | RTLD_NOLOAD) };
    if handle.is_null() {
        return None;
    }
    // SAFETY: a live handle and a NUL-terminated name.
    let p = unsafe { dlsym(handle, c"GOMP_parallel".as_ptr()) };
    // SAFETY: libgomp's GOMP_parallel has exactly this C signature.
    (!p.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, GompParallel>(p) })
}

/// What each team thread runs: claim task indices until none is left.
struct Region<'a> {
    next: AtomicUsize,
    n_tasks: usize,
    task: &'a (dyn Fn(usize) + Sync),
    panicked: AtomicBool,
}

unsafe extern "C" fn region_body(data: *mut c_void) {
    // SAFETY: `data` is the `Region` that `run_on_team` keeps alive until GOMP_parallel has
    // returned, i.e. until every team thread has left this function.
    let r = unsafe { &*(data as *const Region) };
    // A panic must not unwind into C: record it and re-raise it on the caller.
    let ok = panic::catch_unwind(AssertUnwindSafe(|| loop {
        let i = r.next.fetch_add(1, Ordering::Relaxed);
        if i >= r.n_tasks {
            break;
        }
        (r.task)(i);
    }));
    if ok.is_err() {
        r.panicked.store(true, Ordering::Relaxed);
    }
}

fn run_on_team(gomp: GompParallel, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
    let team = threads::num_threads().min(n_tasks);
    if team <= 1 {
        (0..n_tasks).for_each(task);
        return;
    }
    let region = Region {
        next: AtomicUsize::new(0),
        n_tasks,
        task,
        panicked: AtomicBool::new(false),
    };
    // SAFETY: `region` outlives the call, and GOMP_parallel returns only after every team
    // thread has returned from `region_body`; the body only reads `region` and runs `task`,
    // which is Sync.
    unsafe {
        gomp(
            region_body,
            &region as *const Region as *mut c_void,
            c_uint::try_from(team).unwrap_or(1),
            0,
        )
    };
    if region.panicked.load(Ordering::Relaxed) {
        panic!("a ggml-bitnet task panicked on an OpenMP thread");
    }
}

static CONFIGURED: OnceLock<bool> = OnceLock::new();

/// Chooses where the kernels' parallel work runs (once per process): the host's OpenMP team
/// if it has one, else the backend's own pool with workers that park as soon as a job ends.
/// Returns whether the OpenMP team is used.
pub fn configure() -> bool {
    *CONFIGURED.get_or_init(|| match find_gomp() {
        Some(gomp) => {
            threads::set_external_pool(Arc::new(move |n_tasks, task| {
                run_on_team(gomp, n_tasks, task)
            }));
            true
        }
        None => {
            threads::set_spin_duration(Duration::ZERO);
            false
        }
    })
}
