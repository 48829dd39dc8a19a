//! Timing helpers shared by the backend's benchmarks.

use std::time::{Duration, Instant};

/// Whether `BITNET_BENCH_QUICK` asks for a short smoke run.
pub fn quick() -> bool {
    std::env::var("BITNET_BENCH_QUICK").is_ok_and(|v| v != "0")
}

/// Median seconds per call of `f`, over about `budget` of wall time (after one warm-up call).
pub fn median_secs(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed() < budget && times.len() < 10_000) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
