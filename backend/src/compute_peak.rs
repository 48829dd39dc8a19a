//! Measures the machine's int8 dot-product throughput, the compute roofline for the
//! many-token ternary GEMM (whose inner loop is one `vpdpbusd` per 64 multiply-adds).
//!
//! Each thread runs a fixed number of rounds of independent `vpdpbusd` on registers; one pass
//! is timed between two barriers, as in [`crate::bandwidth`].

use std::sync::Barrier;
use std::time::Instant;

use crate::kernels;

/// Rounds per thread and pass: 2^22 rounds = 4.3 G multiply-adds, about 15 ms on one core.
const ROUNDS: usize = 1 << 22;

/// Median G multiply-adds/s of `vpdpbusd` with `threads` threads over `passes` timed passes
/// (after one warm-up pass; both raised to at least 1), or `None` where the CPU has no
/// AVX-512 VNNI.
pub fn measure_int8_dot_peak(threads: usize, passes: usize) -> Option<f64> {
    kernels::dot_peak_rounds(1)?;
    let (threads, passes) = (threads.max(1), passes.max(1));
    let barrier = Barrier::new(threads + 1);
    let mut rates = Vec::with_capacity(passes);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let barrier = &barrier;
            scope.spawn(move || {
                for _ in 0..=passes {
                    barrier.wait();
                    std::hint::black_box(kernels::dot_peak_rounds(ROUNDS));
                    barrier.wait();
                }
            });
        }
        for pass in 0..=passes {
            barrier.wait();
            let start = Instant::now();
            barrier.wait();
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            if pass > 0 {
                let macs = (threads * ROUNDS * kernels::DOT_PEAK_MACS_PER_ROUND) as f64;
                rates.push(macs / secs / 1e9);
            }
        }
    });
    rates.sort_by(f64::total_cmp);
    Some(rates[rates.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_does_all_its_multiply_adds() {
        // Every multiply-add is 1 · 1: the checksum counts them.
        if let Some(sum) = kernels::dot_peak_rounds(10) {
            assert_eq!(sum as usize, 10 * kernels::DOT_PEAK_MACS_PER_ROUND);
            let rate = measure_int8_dot_peak(2, 1).expect("VNNI present");
            assert!(rate.is_finite() && rate > 0.0);
        } else {
            assert!(measure_int8_dot_peak(1, 1).is_none());
        }
    }
}
