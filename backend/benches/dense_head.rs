//! The LM head of BitNet b1.58 2B4T: one token against a 128256 × 2560 dense matrix, the largest
//! single read of a decode step (656 MB in F16, 349 MB in Q8_0).
//!
//! - `dense_head/<type>/{1,2}t`: one matrix-vector product, 1 and 2 threads.
//!
//! The matrix is far larger than any cache, so every call streams it from memory. A summary
//! table (own timing, medians) puts the effective weight GB/s beside the memory read bandwidth
//! measured in the same run. Environment: `BITNET_BENCH_QUICK=1` shrinks it (smoke test).

use std::hint::black_box;
use std::time::Duration;

use bitnet_backend::bandwidth::measure_read_bandwidth_with;
use bitnet_backend::dense::{self, DenseMatrix, DenseType};
use bitnet_backend::threads;
mod common;

use common::{median_secs, quick};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HIDDEN: usize = 2560;
const VOCAB: usize = 128_256;

/// Random weights in `ty`'s byte layout (Q8_0 blocks get a fixed scale: only the bytes matter).
fn random_bytes(ty: DenseType, rows: usize, rng: &mut StdRng) -> Vec<u8> {
    let n = rows * HIDDEN;
    match ty {
        DenseType::F16 => (0..n)
            .flat_map(|_| f16::from_f32(rng.random_range(-0.1f32..0.1)).to_le_bytes())
            .collect(),
        DenseType::Q8_0 => (0..n / 32)
            .flat_map(|_| {
                let mut block = f16::from_f32(0.001).to_le_bytes().to_vec();
                block.extend((0..32).map(|_| rng.random::<u8>()));
                block
            })
            .collect(),
        other => panic!("no generator for {other:?}"),
    }
}

fn benches(c: &mut Criterion) {
    let quick = quick();
    let mut rng = StdRng::seed_from_u64(0x5DEE_CE66_D1CE_4E5B);
    let rows = if quick { VOCAB / 16 } else { VOCAB };
    let bw_bytes = if quick { 64 << 20 } else { 1 << 30 };
    let bw = [
        measure_read_bandwidth_with(1, bw_bytes, 5).median_gb_s(),
        measure_read_bandwidth_with(2, bw_bytes, 5).median_gb_s(),
    ];
    let budget = Duration::from_millis(if quick { 100 } else { 3000 });
    let x: Vec<f32> = (0..HIDDEN).map(|_| rng.random_range(-1f32..1.0)).collect();
    let mut y = vec![0f32; rows];
    let mut summary = Vec::new();
    for ty in [DenseType::F16, DenseType::Q8_0] {
        let bytes = random_bytes(ty, rows, &mut rng);
        let w = DenseMatrix::new(ty, &bytes, rows, HIDDEN).expect("valid matrix");
        let mut g = c.benchmark_group(format!("dense_head/{ty:?}"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.sample_size(10);
        for nth in [1usize, 2] {
            threads::set_num_threads(nth);
            g.bench_function(format!("{nth}t"), |b| {
                b.iter(|| {
                    dense::matmul(&w, &x, 1, &mut y).unwrap();
                    black_box(&y);
                })
            });
            let secs = median_secs(budget, || dense::matmul(&w, &x, 1, &mut y).unwrap());
            summary.push((format!("{ty:?} [{rows}, {HIDDEN}]"), nth, secs, bytes.len()));
        }
        g.finish();
    }
    println!();
    println!(
        "read bandwidth (median of 5 passes over {} MiB): 1 thread {:.1} GB/s, 2 threads {:.1} GB/s",
        bw_bytes >> 20,
        bw[0],
        bw[1]
    );
    println!(
        "{:<28} {:>3} {:>11} {:>11} {:>8}",
        "head", "thr", "median ms", "weight GB/s", "% of BW"
    );
    for (what, nth, secs, bytes) in summary {
        let gbs = bytes as f64 / secs / 1e9;
        println!(
            "{what:<28} {nth:>3} {:>11.2} {gbs:>11.1} {:>7.1}%",
            secs * 1e3,
            100.0 * gbs / bw[nth - 1]
        );
    }
    println!();
}

fn config() -> Criterion {
    let quick = quick();
    Criterion::default()
        .warm_up_time(Duration::from_millis(if quick { 100 } else { 1000 }))
        .measurement_time(Duration::from_millis(if quick { 300 } else { 3000 }))
}

criterion_group! {
    name = dense_head;
    config = config();
    targets = benches
}
criterion_main!(dense_head);
