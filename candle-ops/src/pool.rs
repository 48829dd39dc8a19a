//! Which threads run the ternary kernels inside a Candle application.
//!
//! By default the backend runs its own spin-then-park pool. An application whose other ops run
//! on candle's `barrier_pool()` (candle's quantized matmuls, CPU flash-attention) can route the
//! kernels onto that same pool, so that one set of workers, not two, spins on the cores.

use std::sync::Arc;

use bitnet_backend::threads;

/// Runs the ternary kernels on `candle_core::utils::barrier_pool()` from now on; the backend's
/// own workers are stopped. The matmuls are cut into as many chunks per thread as before, for
/// `barrier_pool().n_workers() + 1` threads (the caller works too).
pub fn use_candle_barrier_pool() {
    let pool = candle_core::utils::barrier_pool();
    threads::set_num_threads(pool.n_workers() + 1);
    threads::set_external_pool(Arc::new(|n_tasks, task| {
        candle_core::utils::barrier_pool().execute_chunked(n_tasks, |range| range.for_each(task));
    }));
}

/// Goes back to the backend's own pool ([`threads::PoolKind::Spin`]).
pub fn use_backend_pool() {
    threads::set_pool_kind(threads::PoolKind::Spin);
}
