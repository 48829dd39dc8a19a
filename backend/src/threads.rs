//! The backend's one persistent thread pool.
//!
//! Decoding one token runs ~200 small matmuls of a few tens of microseconds each, so the cost
//! of waking workers matters as much as the kernels. The default pool ([`PoolKind::Spin`]) is a
//! small spin-then-park pool in the style of candle's `barrier_pool()`: the caller publishes a
//! job by bumping an epoch counter; workers spin on it for a short while (`BITNET_SPIN_US`,
//! default 200 µs) before parking on a condvar. Tasks are claimed from a shared counter by every
//! running thread, the caller included, and the caller withdraws the job from workers that have
//! not started by the time all tasks are claimed, so an oversubscribed machine (a worker not
//! scheduled) costs little. [`PoolKind::Rayon`] runs the same jobs on a dedicated rayon pool
//! (`ThreadPool::broadcast`) for comparison, and [`PoolKind::External`] hands them to a pool
//! the application already runs (e.g. candle's `barrier_pool()`, see [`set_external_pool`]), so
//! two pools never compete for the cores.
//!
//! Thread count: `BITNET_NUM_THREADS`, else the number of available CPUs; change it with
//! [`set_num_threads`]. Calls made while the pool is busy (from another thread, or nested from
//! inside a job) run inline on the calling thread, so the pool never deadlocks.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which pool runs [`parallel_for`] jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// The backend's spin-then-park barrier pool (default).
    Spin,
    /// A dedicated rayon pool of the same size.
    Rayon,
    /// The pool installed with [`set_external_pool`] (inline until one is installed).
    External,
}

/// Someone else's thread pool: `run(n_tasks, task)` must call `task(i)` exactly once for
/// every `i` in `0..n_tasks`, on any threads, and return only when all calls have returned.
/// Tasks write disjoint outputs and never block on each other, so any schedule is correct.
pub type ExternalPool = Arc<dyn Fn(usize, &(dyn Fn(usize) + Sync)) + Send + Sync>;

/// Environment variable for the default thread count.
pub const THREADS_ENV: &str = "BITNET_NUM_THREADS";
/// Environment variable for how long idle workers spin before parking, in microseconds.
pub const SPIN_ENV: &str = "BITNET_SPIN_US";
/// Environment variable choosing the pool (`spin` or `rayon`).
pub const POOL_ENV: &str = "BITNET_POOL";

const DEFAULT_SPIN: Duration = Duration::from_micros(200);

struct Global {
    n_threads: usize,
    kind: PoolKind,
    /// Spin time of idle spin-pool workers; `None` = `BITNET_SPIN_US` or the default.
    spin: Option<Duration>,
    pool: Option<Arc<SpinPool>>,
    rayon: Option<Arc<rayon::ThreadPool>>,
    external: Option<ExternalPool>,
}

static GLOBAL: RwLock<Option<Global>> = RwLock::new(None);

fn default_threads() -> usize {
    std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn default_kind() -> PoolKind {
    match std::env::var(POOL_ENV).as_deref().map(str::trim) {
        Ok(v) if v.eq_ignore_ascii_case("rayon") => PoolKind::Rayon,
        _ => PoolKind::Spin,
    }
}

fn spin_duration() -> Duration {
    std::env::var(SPIN_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_SPIN, Duration::from_micros)
}

fn write_global() -> std::sync::RwLockWriteGuard<'static, Option<Global>> {
    GLOBAL.write().unwrap_or_else(|e| e.into_inner())
}

fn with_global<R>(f: impl FnOnce(&mut Global) -> R) -> R {
    let mut g = write_global();
    let g = g.get_or_insert_with(|| Global {
        n_threads: default_threads(),
        kind: default_kind(),
        spin: None,
        pool: None,
        rayon: None,
        external: None,
    });
    f(g)
}

/// Number of threads (including the caller) that [`parallel_for`] uses.
pub fn num_threads() -> usize {
    if let Some(g) = GLOBAL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return g.n_threads;
    }
    with_global(|g| g.n_threads)
}

/// Sets the thread count (0 = the default). Existing workers are stopped and new ones started
/// on the next job.
pub fn set_num_threads(n: usize) {
    let n = if n == 0 { default_threads() } else { n };
    let old = with_global(|g| {
        if g.n_threads == n {
            return (None, None);
        }
        g.n_threads = n;
        (g.pool.take(), g.rayon.take())
    });
    // Dropped outside the lock: joining workers can take a moment.
    drop(old);
}

/// Sets how long idle spin-pool workers spin before parking (overrides `BITNET_SPIN_US`);
/// the spin pool is restarted with the new value on the next job.
pub fn set_spin_duration(spin: Duration) {
    let old = with_global(|g| {
        g.spin = Some(spin);
        g.pool.take()
    });
    drop(old);
}

/// The pool [`parallel_for`] uses.
pub fn pool_kind() -> PoolKind {
    with_global(|g| g.kind)
}

/// Chooses the pool [`parallel_for`] uses (benchmarks compare them).
pub fn set_pool_kind(kind: PoolKind) {
    with_global(|g| g.kind = kind);
}

/// Runs every later [`parallel_for`] job on `pool` ([`PoolKind::External`]); the backend's own
/// workers are stopped. [`num_threads`] still sets how many chunks a matmul is cut into, so
/// set it to the external pool's thread count.
pub fn set_external_pool(pool: ExternalPool) {
    let old = with_global(|g| {
        g.external = Some(pool);
        g.kind = PoolKind::External;
        (g.pool.take(), g.rayon.take())
    });
    drop(old);
}

enum Runner {
    Inline,
    Spin(Arc<SpinPool>),
    Rayon(Arc<rayon::ThreadPool>),
    External(ExternalPool),
}

fn runner() -> Runner {
    {
        let g = GLOBAL.read().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = g.as_ref() {
            match g.kind {
                _ if g.n_threads <= 1 => return Runner::Inline,
                PoolKind::Spin => {
                    if let Some(p) = &g.pool {
                        return Runner::Spin(Arc::clone(p));
                    }
                }
                PoolKind::Rayon => {
                    if let Some(p) = &g.rayon {
                        return Runner::Rayon(Arc::clone(p));
                    }
                }
                PoolKind::External => {
                    return g.external.clone().map_or(Runner::Inline, Runner::External);
                }
            }
        }
    }
    with_global(|g| match g.kind {
        _ if g.n_threads <= 1 => Runner::Inline,
        PoolKind::Spin => {
            let (n, spin) = (g.n_threads, g.spin.unwrap_or_else(spin_duration));
            Runner::Spin(Arc::clone(
                g.pool
                    .get_or_insert_with(|| Arc::new(SpinPool::new(n, spin))),
            ))
        }
        PoolKind::Rayon => {
            let built = g.rayon.clone().or_else(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(g.n_threads)
                    .thread_name(|i| format!("bitnet-rayon-{i}"))
                    .build()
                    .ok()
                    .map(Arc::new)
            });
            match built {
                Some(p) => {
                    g.rayon = Some(Arc::clone(&p));
                    Runner::Rayon(p)
                }
                // Could not start threads: run on the caller rather than fail.
                None => Runner::Inline,
            }
        }
        PoolKind::External => g.external.clone().map_or(Runner::Inline, Runner::External),
    })
}

/// Runs `f(i)` for every `i` in `0..n_tasks`, spread over the pool; returns when all are done.
///
/// Tasks are claimed one at a time from a shared counter by whichever threads are running
/// (the caller included), so a worker that the OS has not scheduled yet never delays the job:
/// the caller takes its tasks and, once all are claimed, withdraws the offer to workers that
/// have not started. A panic in a task is re-raised on the caller after every started task
/// has finished.
pub fn parallel_for<F: Fn(usize) + Sync>(n_tasks: usize, f: F) {
    if n_tasks == 0 {
        return;
    }
    if n_tasks == 1 {
        f(0);
        return;
    }
    match runner() {
        Runner::Inline => (0..n_tasks).for_each(f),
        Runner::Spin(pool) => pool.run(n_tasks, &f),
        Runner::Rayon(pool) => {
            let next = AtomicUsize::new(0);
            pool.broadcast(|_| claim_tasks(&next, n_tasks, &f));
        }
        Runner::External(pool) => pool(n_tasks, &f),
    }
}

fn claim_tasks(next: &AtomicUsize, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n_tasks {
            return;
        }
        f(i);
    }
}

type Job<'a> = &'a (dyn Fn(usize) + Sync + 'a);

/// A worker's part in the current job.
const IDLE: u8 = 0;
/// Offered the current job, not yet started (the caller may withdraw the offer).
const OFFERED: u8 = 1;
/// Running the current job: the caller must wait for it.
const RUNNING: u8 = 2;

struct Shared {
    /// Bumped once per job; wakes workers.
    epoch: AtomicUsize,
    /// Per worker: IDLE, OFFERED or RUNNING.
    state: Vec<AtomicU8>,
    /// Next unclaimed task of the current job.
    next: AtomicUsize,
    /// The current job: (closure, number of tasks). Read only by a worker in RUNNING state.
    job: Mutex<Option<(Job<'static>, usize)>>,
    /// Workers currently parked on `wake`.
    sleeping: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    panicked: AtomicBool,
    spin: Duration,
}

struct SpinPool {
    shared: Arc<Shared>,
    /// Held while a job is in flight; a second caller runs inline instead of waiting.
    busy: Mutex<()>,
    workers: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SpinPool {
    fn new(n_threads: usize, spin: Duration) -> SpinPool {
        let n_workers = n_threads.saturating_sub(1);
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            state: (0..n_workers).map(|_| AtomicU8::new(IDLE)).collect(),
            next: AtomicUsize::new(0),
            job: Mutex::new(None),
            sleeping: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            spin,
        });
        let mut pool = SpinPool {
            shared,
            busy: Mutex::new(()),
            workers: Vec::with_capacity(n_workers),
        };
        for w in 0..n_workers {
            let s = Arc::clone(&pool.shared);
            let spawned = std::thread::Builder::new()
                .name(format!("bitnet-worker-{}", w + 1))
                .spawn(move || worker_loop(&s, w));
            match spawned {
                Ok(h) => pool.workers.push(h),
                // Tasks are claimed dynamically, so fewer workers only means less help;
                // never-started slots stay IDLE and are skipped.
                Err(_) => break,
            }
        }
        pool
    }

    fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let _busy = match self.busy.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                (0..n_tasks).for_each(f);
                return;
            }
        };
        let s = &*self.shared;
        let workers = &s.state[..self.workers.len()];
        if workers.is_empty() {
            (0..n_tasks).for_each(f);
            return;
        }
        // SAFETY: the erased lifetime is never observed past this call. A worker reads the
        // job only after moving its state OFFERED -> RUNNING, and sets it back to IDLE after
        // its last use. Before returning (or unwinding) this function withdraws every offer
        // still pending and waits until no worker is RUNNING, then clears the slot.
        let job: Job<'static> = unsafe { std::mem::transmute::<Job<'_>, Job<'static>>(f) };
        *lock(&s.job) = Some((job, n_tasks));
        s.next.store(0, Ordering::SeqCst);
        for st in workers {
            st.store(OFFERED, Ordering::SeqCst);
        }
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleeping.load(Ordering::SeqCst) > 0 {
            let _g = lock(&s.park);
            s.wake.notify_all();
        }
        let mine = panic::catch_unwind(AssertUnwindSafe(|| claim_tasks(&s.next, n_tasks, f)));
        // Every task is claimed: workers that have not started are no longer needed.
        for st in workers {
            let _ = st.compare_exchange(OFFERED, IDLE, Ordering::SeqCst, Ordering::SeqCst);
        }
        let start = Instant::now();
        for st in workers {
            while st.load(Ordering::Acquire) == RUNNING {
                if start.elapsed() < s.spin {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        *lock(&s.job) = None;
        if let Err(p) = mine {
            panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("a bitnet-backend worker thread panicked while running a task");
        }
    }

    fn stop_workers(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _g = lock(&s.park);
            s.wake.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

/// Worker `w`: waits for a new epoch (spinning for `spin`, then parked), then joins the job
/// if its offer is still open.
fn worker_loop(s: &Shared, w: usize) {
    let mut seen = 0;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = s.epoch.load(Ordering::Acquire);
            // An open offer is taken even if its epoch was seen before it was published.
            if e != seen || s.state[w].load(Ordering::Acquire) == OFFERED {
                seen = e;
                break;
            }
            if s.shutdown.load(Ordering::Relaxed) {
                return;
            }
            spins = spins.wrapping_add(1);
            // Checking the clock every 64 spins keeps its cost out of the wake-up latency.
            if !spins.is_multiple_of(64) || start.elapsed() < s.spin {
                std::hint::spin_loop();
                continue;
            }
            let mut g = lock(&s.park);
            s.sleeping.fetch_add(1, Ordering::SeqCst);
            while s.epoch.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleeping.fetch_sub(1, Ordering::SeqCst);
        }
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let st = &s.state[w];
        if st
            .compare_exchange(OFFERED, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            continue;
        }
        let job = *lock(&s.job);
        if let Some((f, n_tasks)) = job {
            let r = panic::catch_unwind(AssertUnwindSafe(|| claim_tasks(&s.next, n_tasks, f)));
            if r.is_err() {
                s.panicked.store(true, Ordering::SeqCst);
            }
        }
        st.store(IDLE, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_task_runs_exactly_once() {
        for n in [0usize, 1, 2, 3, 7, 64] {
            let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
            parallel_for(n, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
    }

    #[test]
    fn private_pool_runs_jobs_back_to_back_and_nested() {
        let pool = SpinPool::new(3, DEFAULT_SPIN);
        let total = AtomicU64::new(0);
        for round in 0..200u64 {
            pool.run(5, &|i| {
                total.fetch_add(round * 10 + i as u64, Ordering::Relaxed);
                // A nested call finds the pool busy and runs inline.
                pool.run(2, &|j| {
                    total.fetch_add(j as u64, Ordering::Relaxed);
                });
            });
        }
        let per_round_tasks: u64 = (0..5).sum::<u64>() + 5 * (0..2).sum::<u64>();
        let want: u64 = (0..200u64).map(|r| r * 50 + per_round_tasks).sum();
        assert_eq!(total.load(Ordering::Relaxed), want);
    }

    #[test]
    fn job_published_before_workers_start_is_not_lost() {
        // Regression: a worker that first ran after the epoch bump used to miss the job.
        for _ in 0..50 {
            let pool = SpinPool::new(3, DEFAULT_SPIN);
            let count = AtomicU64::new(0);
            pool.run(3, &|_| {
                count.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(count.load(Ordering::Relaxed), 3);
        }
    }

    #[test]
    fn task_panic_reaches_the_caller_and_pool_survives() {
        let pool = SpinPool::new(2, DEFAULT_SPIN);
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.run(2, &|i| {
                if i == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let count = AtomicU64::new(0);
        pool.run(4, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 4);
    }
}
