//! Measures the machine's memory read bandwidth, the roofline for single-token decoding
//! (every weight byte is read once per token).
//!
//! Each thread sums its own contiguous share of a buffer much larger than the last-level
//! cache, with the widest loads the CPU has; one pass is timed between two barriers. The buffer
//! is on 2 MiB pages where the system allows ([`HugePageBuffer`]), as the model's weights are:
//! on 4 KiB pages the same loop reads measurably slower, so that would understate the roofline.

use std::sync::Barrier;
use std::time::Instant;

use crate::huge_pages::HugePageBuffer;
use crate::kernels;

/// Default buffer size: 1 GiB, well beyond any last-level cache.
pub const DEFAULT_BYTES: usize = 1 << 30;
/// Default number of timed passes.
pub const DEFAULT_PASSES: usize = 5;

/// Result of one bandwidth measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct BandwidthReport {
    /// Reading threads.
    pub threads: usize,
    /// Bytes read per pass.
    pub bytes: usize,
    /// GB/s (10^9 bytes per second) of every timed pass, in order.
    pub passes_gb_s: Vec<f64>,
}

impl BandwidthReport {
    /// Median over the passes, in GB/s.
    pub fn median_gb_s(&self) -> f64 {
        let mut v = self.passes_gb_s.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// Fastest pass, in GB/s.
    pub fn max_gb_s(&self) -> f64 {
        self.passes_gb_s.iter().copied().fold(0.0, f64::max)
    }
}

/// Median read bandwidth in GB/s with `threads` threads over a 1 GiB buffer.
pub fn measure_read_bandwidth(threads: usize) -> f64 {
    measure_read_bandwidth_with(threads, DEFAULT_BYTES, DEFAULT_PASSES).median_gb_s()
}

/// Measures with an explicit buffer size and number of timed passes (after one warm-up pass).
/// `threads` and `passes` are raised to at least 1; `bytes` to at least 64 KiB per thread.
pub fn measure_read_bandwidth_with(threads: usize, bytes: usize, passes: usize) -> BandwidthReport {
    let threads = threads.max(1);
    let passes = passes.max(1);
    let share = (bytes / threads).max(64 << 10) / 64 * 64;
    // Non-zero fill: untouched or zero pages could all map one shared physical page.
    let mut buf = HugePageBuffer::zeroed(share * threads).expect("allocate the probe buffer");
    buf.fill(1);
    let barrier = Barrier::new(threads + 1);
    let mut passes_gb_s = Vec::with_capacity(passes);
    std::thread::scope(|scope| {
        for chunk in buf.chunks_exact(share) {
            let barrier = &barrier;
            scope.spawn(move || {
                for _ in 0..=passes {
                    barrier.wait();
                    std::hint::black_box(kernels::read_checksum(chunk));
                    barrier.wait();
                }
            });
        }
        for pass in 0..=passes {
            barrier.wait();
            let start = Instant::now();
            barrier.wait();
            let secs = start.elapsed().as_secs_f64();
            // Pass 0 warms up caches, TLBs and clocks.
            if pass > 0 {
                passes_gb_s.push(buf.len() as f64 / secs.max(1e-9) / 1e9);
            }
        }
    });
    BandwidthReport {
        threads,
        bytes: buf.len(),
        passes_gb_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_positive_passes() {
        let r = measure_read_bandwidth_with(2, 4 << 20, 3);
        assert_eq!(r.passes_gb_s.len(), 3);
        assert_eq!(r.bytes, 4 << 20);
        assert!(r.passes_gb_s.iter().all(|&g| g > 0.0 && g.is_finite()));
        assert!(r.median_gb_s() <= r.max_gb_s());
    }

    #[test]
    fn checksum_is_the_same_on_every_path_and_sees_every_byte() {
        for len in [0usize, 7, 8, 300, 1000, 4096 + 13] {
            let buf: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let a = kernels::read_checksum(&buf);
            assert_eq!(kernels::scalar::read_checksum(&buf), a, "len {len}");
            for i in [0, len / 2, len.saturating_sub(1)] {
                if i < len {
                    let mut changed = buf.clone();
                    changed[i] ^= 1;
                    assert_ne!(kernels::read_checksum(&changed), a, "len {len}, byte {i}");
                }
            }
        }
    }
}
