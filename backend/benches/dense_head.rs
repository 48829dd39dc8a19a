//! The LM head of BitNet b1.58 2B4T: a 128256 × 2560 dense matrix, the largest single read of a
//! decode step (656 MB in F16, 349 MB in Q8_0, 269 MB in Q6_K, 185 MB in Q4_0).
//!
//! - `dense_head/<type>/{1,2}t`: one token (matrix-vector product), 1 and 2 threads, weights in
//!   a 2 MiB-page buffer as a quantized head is at load; `F16 4k` is the F16 head on 4 KiB pages,
//!   as it is read from the file mapping.
//! - `dense_head/<type>/16tok_2t`: 16 tokens at once (the many-token GEMM: prompt logits,
//!   perplexity), 2 threads.
//!
//! The matrix is far larger than any cache, so every call streams it from memory. A summary
//! table (own timing, medians) puts the effective weight GB/s beside the memory read bandwidth
//! measured in the same run. Environment: `BITNET_BENCH_QUICK=1` shrinks it (smoke test).

use std::hint::black_box;
use std::time::Duration;

use bitnet_backend::bandwidth::measure_read_bandwidth_with;
use bitnet_backend::dense::{self, DenseMatrix, DenseType};
use bitnet_backend::formats::{q4_0, q6_k, q8_0};
use bitnet_backend::huge_pages::HugePageBuffer;
use bitnet_backend::threads;
mod common;

use common::{median_secs, quick};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HIDDEN: usize = 2560;
const VOCAB: usize = 128_256;
const GEMM_TOKENS: usize = 16;

/// The head in `ty`'s layout: random weights quantized by the real quantizers (the quantized
/// kernels' speed does not depend on the values, but their bytes must be valid blocks).
fn head_bytes(ty: DenseType, rows: usize, rng: &mut StdRng) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(ty.row_bytes(HIDDEN).unwrap() * rows);
    let mut row = vec![0f32; HIDDEN];
    for _ in 0..rows {
        row.iter_mut()
            .for_each(|v| *v = rng.random_range(-0.1f32..0.1));
        match ty {
            DenseType::F16 => {
                bytes.extend(row.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()))
            }
            DenseType::Q8_0 => bytes.extend(q8_0::quantize(&row).unwrap()),
            DenseType::Q6K => bytes.extend(q6_k::quantize(&row).unwrap()),
            DenseType::Q4_0 => bytes.extend(q4_0::quantize(&row).unwrap()),
            other => panic!("no generator for {other:?}"),
        }
    }
    bytes
}

/// `bytes` copied into a 2 MiB-page buffer.
fn on_huge_pages(bytes: &[u8]) -> HugePageBuffer {
    let mut b = HugePageBuffer::zeroed(bytes.len()).expect("allocate");
    b.copy_from_slice(bytes);
    b
}

struct Row {
    what: String,
    threads: usize,
    tokens: usize,
    secs: f64,
    bytes: usize,
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
    let x: Vec<f32> = (0..GEMM_TOKENS * HIDDEN)
        .map(|_| rng.random_range(-1f32..1.0))
        .collect();
    let mut y = vec![0f32; GEMM_TOKENS * rows];
    let mut summary = Vec::new();
    let f16_4k = head_bytes(DenseType::F16, rows, &mut rng);
    for (name, ty) in [
        ("F16 4k", DenseType::F16),
        ("F16", DenseType::F16),
        ("Q8_0", DenseType::Q8_0),
        ("Q6_K", DenseType::Q6K),
        ("Q4_0", DenseType::Q4_0),
    ] {
        let huge;
        let bytes: &[u8] = match name {
            "F16 4k" => &f16_4k,
            _ => {
                huge = on_huge_pages(&head_bytes(ty, rows, &mut rng));
                &huge
            }
        };
        let w = DenseMatrix::new(ty, bytes, rows, HIDDEN).expect("valid matrix");
        let mut g = c.benchmark_group(format!("dense_head/{}", name.replace(' ', "_")));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.sample_size(10);
        for (nth, tokens) in [(1usize, 1usize), (2, 1), (2, GEMM_TOKENS)] {
            if tokens > 1 && name == "F16 4k" {
                continue;
            }
            threads::set_num_threads(nth);
            let (x, y) = (&x[..tokens * HIDDEN], &mut y[..tokens * rows]);
            let label = match tokens {
                1 => format!("{nth}t"),
                n => format!("{n}tok_{nth}t"),
            };
            g.bench_function(label, |b| {
                b.iter(|| {
                    dense::matmul(&w, x, tokens, y).unwrap();
                    black_box(&y);
                })
            });
            let secs = median_secs(budget, || dense::matmul(&w, x, tokens, y).unwrap());
            summary.push(Row {
                what: name.to_string(),
                threads: nth,
                tokens,
                secs,
                bytes: bytes.len(),
            });
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
        "{:<8} {:>8} {:>6} {:>3} {:>11} {:>11} {:>8} {:>11}",
        "head", "rows", "tokens", "thr", "median ms", "weight GB/s", "% of BW", "G MAC/s"
    );
    for r in summary {
        let gbs = r.bytes as f64 / r.secs / 1e9;
        let macs = (r.tokens * rows * HIDDEN) as f64 / r.secs / 1e9;
        println!(
            "{:<8} {rows:>8} {:>6} {:>3} {:>11.2} {gbs:>11.1} {:>7.1}% {macs:>11.1}",
            r.what,
            r.tokens,
            r.threads,
            r.secs * 1e3,
            100.0 * gbs / bw[r.threads - 1]
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
